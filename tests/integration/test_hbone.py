#!/usr/bin/python3
"""HBONE between two real zring nodes (A 127.0.0.42 with local workload client
127.0.4.2; B 127.0.0.43 with local HBONE workload server 127.0.5.2): SOCKS5 at A
-> mTLS HTTP/2 CONNECT to 127.0.5.2:15008 -> B -> the server. Byte-exact bulk
upload and download (ZRTEST_BIG, default 1 GiB) by service VIP and by workload
IP; half-close both ways; reset propagation both ways; istio_tcp_* metrics with
connection_security_policy="mutual_tls" and both principals on both nodes;
zring_hbone_connections gauges."""

import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

BIG = int(os.environ.get('ZRTEST_BIG', z.GiB))
MID = 64 * z.MiB
CLIENT = '127.0.4.2'
SERVER = '127.0.5.2'
VIP_ECHO = '127.10.4.2'
VIP_BULK = '127.10.4.3'
CLIENT_ID = z.spiffe('client')
CAPTURE_PORT = 15051  # node A's outbound (capture) listener; iptables REDIRECT in OUTPUT lands on 127.0.0.1
SERVER_ID = z.spiffe('server')


def mesh_state():
    workloads = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE',
                   services={z.svc_key('hb-echo'): {80: 8080}, z.svc_key('hb-bulk'): {80: 9000}}),
    ]
    services = [
        z.service('hb-echo', VIP_ECHO, {80: 8080}, sans=[SERVER_ID]),
        z.service('hb-bulk', VIP_BULK, {80: 9000}, sans=[SERVER_ID]),
    ]
    return workloads, services


def main(t):
    z.raise_nofile()
    certs = z.make_certs()
    echo = z.EchoServer(SERVER, 8080)
    bulk = z.BulkServer(SERVER, 9000)
    special = {}

    def half_close_client_first(c, peer):
        data = z.recv_all(c)
        time.sleep(0.2)
        c.sendall(b'after-eof:' + data)
        c.shutdown(socket.SHUT_WR)
        return data

    def half_close_server_first(c, peer):
        c.sendall(b'greeting')
        c.shutdown(socket.SHUT_WR)
        data = z.recv_all(c)
        special['server_first_got'] = data
        return data

    def reset_by_server(c, peer):
        c.recv(100)
        z.set_linger_rst(c)
        c.close()

    def observe_client_reset(c, peer):
        c.settimeout(10)
        c.sendall(b'ready')
        t0 = time.monotonic()
        r = z.outcome(c, 10)
        special['client_reset_seen'] = (r, time.monotonic() - t0)

    z.ScriptServer(SERVER, 7001, half_close_client_first)
    z.ScriptServer(SERVER, 7002, half_close_server_first)
    z.ScriptServer(SERVER, 7003, reset_by_server)
    z.ScriptServer(SERVER, 7004, observe_client_reset)

    wls, svcs = mesh_state()
    b = z.hbone_node(t, 'node-b', z.HB_B_IP, certs, [(SERVER_ID, 'server')], wls, svcs)
    a = z.hbone_node(t, 'node-a', z.HB_A_IP, certs, [(CLIENT_ID, 'client')], wls, svcs,
                     outbound='127.0.0.1:%d' % CAPTURE_PORT)
    if not b.start() or not a.start():
        return
    px = a.socks5
    fd_base = {n.name: n.fd_count() for n in (a, b)}
    moved = {'up': 0, 'down': 0}

    def smoke():
        s = z.socks5_connect(px, VIP_ECHO, 80, src=CLIENT)
        s.sendall(b'hello hbone')
        t.is_(z.recv_exact(s, 11), b'hello hbone', 'echo through A -> HBONE -> B via service VIP')
        t.cmp(z.hbone_gauge(a, 'client'), '>=', 1, 'node A: zring_hbone_connections{role="client"} >= 1 while open')
        t.cmp(z.hbone_gauge(b, 'server'), '>=', 1, 'node B: zring_hbone_connections{role="server"} >= 1 while open')
        t.cmp(a.metric('zring_hbone_streams_active'), '>=', 1, 'node A: zring_hbone_streams_active >= 1 while open')
        t.cmp(b.metric('zring_hbone_streams_active'), '>=', 1, 'node B: zring_hbone_streams_active >= 1 while open')
        for n in (a, b):
            try:
                conns = n.config_dump().get('connections')
                t.ok(isinstance(conns, list) and len(conns) >= 1,
                     '%s: /config_dump lists the live HBONE connection' % n.name, repr(conns)[:500])
                kinds = [c.get('listener') for c in conns or [] if isinstance(c, dict)]
                t.ok(kinds and all(isinstance(k, str) and k and k != '(null)' for k in kinds),
                     '%s: /config_dump names the listener of every connection' % n.name, repr(kinds))
                t.diag('%s /config_dump connections: %s' % (n.name, repr(conns)[:300]))
            except Exception as e:
                t.ok(False, '%s: /config_dump answers while an HBONE stream is live' % n.name, repr(e))
        t.ok(a.alive() and b.alive(), 'both nodes alive after /config_dump with live HBONE streams')
        s.close()
        t.diag('server saw the upstream connection from %r' % (echo.peers[-1:],))

    def upload(dst, port, seed, size, what):
        s = z.socks5_connect(px, dst, port, src=CLIENT)
        ok, detail, dt = z.bulk_upload(s, size, seed=seed, timeout=300)
        s.close()
        t.ok(ok, 'upload %d MiB %s byte-exact (sha256)' % (size // z.MiB, what), detail)
        t.diag('upload %s: %s' % (what, z.rate_str(size, dt)))
        if ok:
            moved['up'] += size

    def download(dst, port, seed, size, what):
        s = z.socks5_connect(px, dst, port, src=CLIENT)
        ok, detail, dt = z.bulk_download(s, bulk, size, seed=seed, timeout=300)
        s.close()
        t.ok(ok, 'download %d MiB %s byte-exact (sha256)' % (size // z.MiB, what), detail)
        t.diag('download %s: %s' % (what, z.rate_str(size, dt)))
        if ok:
            moved['down'] += size

    def by_vip():
        upload(VIP_BULK, 80, 31, BIG, 'via service VIP')
        download(VIP_BULK, 80, 32, BIG, 'via service VIP')

    def by_workload_ip():
        upload(SERVER, 9000, 33, BIG, 'via workload IP')
        download(SERVER, 9000, 34, BIG, 'via workload IP')
        s = z.socks5_connect(px, SERVER, 8080, src=CLIENT)
        s.sendall(b'by-ip')
        t.is_(z.recv_exact(s, 5), b'by-ip', 'echo via workload IP 127.0.5.2:8080')
        s.close()

    def concurrent_both():
        res = {}

        def up():
            try:
                s = z.socks5_connect(px, VIP_BULK, 80, src=CLIENT)
                res['up'] = z.bulk_upload(s, MID, seed=41, timeout=120)
                s.close()
            except Exception as e:
                res['up'] = (False, repr(e))

        def down():
            try:
                s = z.socks5_connect(px, VIP_BULK, 80, src=CLIENT)
                res['down'] = z.bulk_download(s, bulk, MID, seed=42, timeout=120)
                s.close()
            except Exception as e:
                res['down'] = (False, repr(e))
        ths = [threading.Thread(target=f) for f in (up, down)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(150)
        t.ok(res.get('up', (False,))[0], 'simultaneous 64 MiB upload byte-exact', repr(res.get('up')))
        t.ok(res.get('down', (False,))[0], 'simultaneous 64 MiB download byte-exact', repr(res.get('down')))

    def half_close():
        s = z.socks5_connect(px, SERVER, 7001, src=CLIENT)
        s.sendall(b'question')
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        try:
            got = z.recv_all(s)
        except socket.timeout:
            got = 'timeout'
        s.close()
        t.is_(got, b'after-eof:question',
              'client half-close crosses HBONE (END_STREAM) and the server can still answer; then EOF')

        s = z.socks5_connect(px, SERVER, 7002, src=CLIENT)
        s.settimeout(10)
        try:
            got = z.recv_all(s)
        except socket.timeout:
            got = 'timeout'
        t.is_(got, b'greeting', 'server half-close reaches the client as EOF')
        try:
            s.sendall(b'still talking')
            s.shutdown(socket.SHUT_WR)
            r = z.outcome(s, 10)
        except OSError as e:
            r = repr(e)
        s.close()
        z.wait_until(lambda: 'server_first_got' in special, 5)
        t.is_(special.get('server_first_got'), b'still talking',
              'client can still send after the server half-closed')
        t.ok(r == 'eof', 'connection then closes cleanly', 'client saw %r' % (r,))

    def resets():
        s = z.socks5_connect(px, SERVER, 7003, src=CLIENT)
        s.sendall(b'hello')
        t0 = time.monotonic()
        r = z.outcome(s, 10)
        dt = time.monotonic() - t0
        s.close()
        t.ok(r in ('reset', 'eof') and dt < 3,
             'server RST crosses HBONE (RST_STREAM) and reaches the client promptly',
             'client saw %r after %.2f s' % (r, dt))
        t.diag('server reset seen by client as %r after %.3f s' % (r, dt))

        s = z.socks5_connect(px, SERVER, 7004, src=CLIENT)
        z.recv_exact(s, 5)
        z.set_linger_rst(s)
        s.close()
        z.wait_until(lambda: 'client_reset_seen' in special, 12)
        r, dt = special.get('client_reset_seen', ('nothing', 99))
        t.ok(r in ('reset', 'eof') and dt < 3, 'client RST crosses HBONE and reaches the server promptly',
             'server saw %r after %.2f s' % (r, dt))
        t.diag('client reset seen by server as %r after %.3f s' % (r, dt))
        # the pooled HBONE connection survives a stream reset
        s = z.socks5_connect(px, VIP_ECHO, 80, src=CLIENT)
        s.sendall(b'after-reset')
        t.is_(z.recv_exact(s, 11), b'after-reset', 'HBONE still works after stream resets')
        s.close()

    def metrics():
        z.wait_until(lambda: a.metric('zring_hbone_streams_active') == 0 and
                     b.metric('zring_hbone_streams_active') == 0, 10, 0.1)
        ma, mb = a.metrics(), b.metrics()
        src = dict(reporter='source', connection_security_policy='mutual_tls',
                   source_principal=CLIENT_ID, destination_principal=SERVER_ID)
        dst = dict(reporter='destination', connection_security_policy='mutual_tls',
                   source_principal=CLIENT_ID, destination_principal=SERVER_ID)
        up, down = moved['up'], moved['down']
        t.diag('bytes moved byte-exact: up %d, down %d' % (up, down))
        for node, ms, lab, side in ((a, ma, src, 'A (reporter=source)'), (b, mb, dst, 'B (reporter=destination)')):
            opened = z.msum(ms, 'istio_tcp_connections_opened_total', **lab)
            closed = z.msum(ms, 'istio_tcp_connections_closed_total', **lab)
            sent = z.msum(ms, 'istio_tcp_sent_bytes_total', **lab)
            recv = z.msum(ms, 'istio_tcp_received_bytes_total', **lab)
            t.cmp(opened, '>=', 10, 'node %s: istio_tcp_connections_opened_total mutual_tls with both principals' % side)
            t.cmp(closed, '>=', 10, 'node %s: istio_tcp_connections_closed_total mutual_tls with both principals' % side)
            # received = client -> server direction, sent = server -> client (ztunnel's convention)
            t.cmp(recv, '>=', up, 'node %s: istio_tcp_received_bytes_total >= bytes uploaded' % side)
            t.cmp(sent, '>=', down, 'node %s: istio_tcp_sent_bytes_total >= bytes downloaded' % side)
            wrong = [l for l, v in z.mfind(ms, 'istio_tcp_connections_opened_total', destination_principal=SERVER_ID)
                     if l.get('connection_security_policy') != 'mutual_tls' and v > 0]
            t.ok(not wrong, 'node %s: no HBONE connection counted without mutual_tls' % side, repr(wrong[:2]))
        svc = z.mfind(ma, 'istio_tcp_connections_opened_total', reporter='source',
                      destination_service=z.hostname('hb-bulk'))
        t.ok(svc and svc[0][0].get('destination_workload') == 'server' and
             svc[0][0].get('source_workload') == 'client',
             'node A: destination_service / destination_workload / source_workload labels',
             repr(svc[:1]))
        svc = z.mfind(mb, 'istio_tcp_connections_opened_total', reporter='destination',
                      destination_workload='server', source_principal=CLIENT_ID)
        t.ok(svc and svc[0][0].get('source_workload') == 'client' and
             svc[0][0].get('source_workload_namespace') == 'default',
             'node B: source_workload labels from the verified peer identity', repr(svc[:1]))
        svc = z.mfind(mb, 'istio_tcp_connections_opened_total', reporter='destination',
                      destination_service=z.hostname('hb-bulk'))
        t.ok(bool(svc), 'node B: destination_service guessed from the target port (ztunnel does)',
             repr([l.get('destination_service') for l, v in
                   z.mfind(mb, 'istio_tcp_connections_opened_total', reporter='destination')]))
        t.cmp(z.msum(ma, 'zring_hbone_connections', role='client'), '>=', 1,
              'node A keeps a pooled client connection (zring_hbone_connections{role="client"})')
        t.cmp(z.msum(mb, 'zring_hbone_connections', role='server'), '>=', 1,
              'node B: zring_hbone_connections{role="server"} >= 1')
        t.cmp(z.msum(ma, 'zring_hbone_connections', role='server'), '==', 0,
              'node A: no server-role HBONE connections')
        t.cmp(z.msum(mb, 'zring_hbone_connections', role='client'), '==', 0,
              'node B: no client-role HBONE connections')
        t.cmp(z.msum(ma, 'zring_hbone_pool_reused_total'), '>=', 1, 'node A: zring_hbone_pool_reused_total > 0')
        t.cmp(z.msum(ma, 'zring_tls_handshake_failures_total') + z.msum(mb, 'zring_tls_handshake_failures_total'),
              '==', 0, 'no TLS handshake failures on either node')
        gauges = [(l.get('worker'), l.get('role'), v) for l, v in z.mfind(ma + mb, 'zring_hbone_connections')]
        t.diag('zring_hbone_connections samples (A then B): %r' % gauges)
        rc, out = z.promtool_check(z.Node.metrics_text(a))
        if rc is None:
            t.skip('promtool accepts node A metrics', out)
        else:
            t.is_(rc, 0, 'promtool check metrics accepts node A metrics')

    def idle():
        for n in (a, b):
            t.ok(z.wait_until(lambda: n.metric('zring_hbone_streams_active') == 0, 10, 0.1),
                 '%s: zring_hbone_streams_active back to 0' % n.name, n.active_diag())
            t.ok(n.wait_idle(10), '%s: zring_worker_connections_active back to 0 (no relay connection leaked)'
                 % n.name, n.active_diag())
            fds = n.fd_count()
            # pooled HBONE connections: at most one per worker and peer here
            t.cmp(fds, '<=', fd_base[n.name] + 2 * n.workers + 2,
                  '%s: open fds back near the baseline of %d (no socket leaked)' % (n.name, fd_base[n.name]))

    def captured():
        """The captured outbound path (iptables REDIRECT -> 15001-style listener ->
        SO_ORIGINAL_DST) into HBONE, as pods' traffic takes it."""
        if os.geteuid() != 0:
            t.skip('captured outbound through HBONE', 'needs root (iptables)')
            return
        chain = 'ZRTHB%d' % os.getpid()
        rule = ['OUTPUT', '-p', 'tcp', '-s', CLIENT, '-d', SERVER, '--dport', '8080',
                '-m', 'mark', '!', '--mark', '1337', '-j', chain]
        def ipt(*args):
            try:
                return subprocess.run(['iptables', '-t', 'nat'] + list(args), check=False, timeout=10,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            except OSError:
                return 127
        try:
            ipt('-N', chain)
            ipt('-A', chain, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', str(CAPTURE_PORT))
            if ipt('-A', *rule) != 0:
                # e.g. a kernel without the nat table (the UML kernel of the kTLS runs)
                t.skip('captured outbound through HBONE', 'iptables -t nat REDIRECT could not be set up')
                return
            before = a.metric('istio_tcp_connections_opened_total', reporter='source',
                              connection_security_policy='mutual_tls')
            s = socket.socket()
            s.settimeout(10)
            s.bind((CLIENT, 0))
            s.connect((SERVER, 8080))
            s.sendall(b'captured hello')
            t.is_(z.recv_exact(s, 14), b'captured hello',
                  'a connection captured by iptables REDIRECT reaches the server through HBONE')
            s.close()
            after = a.metric('istio_tcp_connections_opened_total', reporter='source',
                             connection_security_policy='mutual_tls')
            t.cmp(after - before, '>=', 1, 'node A counts the captured connection as mutual_tls (reporter=source)')
        finally:
            ipt('-D', *rule)
            ipt('-F', chain)
            ipt('-X', chain)

    t.subtest('smoke', smoke)
    t.subtest('captured outbound', captured)
    t.subtest('bulk via VIP', by_vip)
    t.subtest('by workload IP', by_workload_ip)
    t.subtest('concurrent up and down', concurrent_both)
    t.subtest('half-close', half_close)
    t.subtest('resets', resets)
    t.subtest('metrics', metrics)
    t.subtest('idle', idle)
    t.ok(a.alive() and b.alive(), 'both zring nodes still running at the end')
    if bulk.errors:
        t.diag('bulk server errors: %r' % bulk.errors[:5])


z.Tap('hbone', timeout=540).run(main)
