#!/usr/bin/python3
"""SOCKS5 entry (listeners.socks5): byte-exact bulk both ways by service VIP, by
service hostname and by workload IP; half-close both ways; reset propagation;
refusals (unknown source, HBONE destination, unknown names, passthrough, upstream
refused) with their reply codes and zring_connections_refused_total reasons;
round-robin over a service's endpoints."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

BIG = int(os.environ.get('ZRTEST_BIG', z.GiB))
MID = 64 * z.MiB
CLIENT = '127.0.1.2'


def main(t):
    # servers (remote workloads on node-b, plain TCP)
    echo1 = z.EchoServer('127.0.2.3', 8080)
    echo2 = z.EchoServer('127.0.2.4', 8080)
    bulk = z.BulkServer('127.0.2.5', 9000)
    hbone_echo = z.EchoServer('127.0.2.9', 8080)       # must never be reached in plaintext
    stranger = z.EchoServer('127.0.3.1', 8080)         # node loopback, no workload: never reached
    # passthrough needs a destination that is no loopback: with root, an
    # address of our own on lo (198.18.45.1, fd45::1)
    far = None
    if os.geteuid() == 0:
        for fam, cidr in (('-4', '198.18.45.1/32'), ('-6', 'fd45::1/128')):
            z.sh('ip', fam, 'addr', 'add', cidr, 'dev', 'lo', *(('nodad',) if fam == '-6' else ()), check=False)
            z.on_cleanup(lambda fam=fam, cidr=cidr: z.sh('ip', fam, 'addr', 'del', cidr, 'dev', 'lo', check=False))
        far = z.EchoServer('198.18.45.1', 8080)

    special = {}

    def half_close_client_first(c, peer):
        # read to EOF, then (still allowed to send) answer with what we got
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

    z.ScriptServer('127.0.2.6', 7001, half_close_client_first)
    z.ScriptServer('127.0.2.6', 7002, half_close_server_first)
    z.ScriptServer('127.0.2.6', 7003, reset_by_server)
    z.ScriptServer('127.0.2.6', 7004, observe_client_reset)

    node = z.Node(t, workloads=[
        z.workload('client', CLIENT),
        z.workload('echo-1', '127.0.2.3', node='node-b', services={z.svc_key('echo'): {80: 8080}}),
        z.workload('echo-2', '127.0.2.4', node='node-b', services={z.svc_key('echo'): {80: 8080}}),
        z.workload('bulk', '127.0.2.5', node='node-b', services={z.svc_key('bulk'): {80: 9000}}),
        z.workload('special', '127.0.2.6', node='node-b'),
        z.workload('secure', '127.0.2.9', node='node-b', protocol='HBONE',
                   services={z.svc_key('secure'): {80: 8080}}),
    ], services=[
        z.service('echo', '127.10.0.1', {80: 8080}),
        z.service('bulk', '127.10.0.2', {80: 9000}),
        z.service('secure', '127.10.0.9', {80: 8080}),
    ])
    if not node.start():
        return
    px = node.socks5

    def upload_vip():
        s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
        ok, detail, dt = z.bulk_upload(s, BIG, seed=11)
        s.close()
        t.ok(ok, 'upload %d MiB via service VIP byte-exact' % (BIG // z.MiB), detail)
        t.diag('upload: ' + z.rate_str(BIG, dt))

    def download_vip():
        s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
        ok, detail, dt = z.bulk_download(s, bulk, BIG, seed=12)
        s.close()
        t.ok(ok, 'download %d MiB via service VIP byte-exact' % (BIG // z.MiB), detail)
        t.diag('download: ' + z.rate_str(BIG, dt))

    def by_domain():
        s = z.socks5_connect(px, z.hostname('bulk'), 80, src=CLIENT)
        ok, detail, _ = z.bulk_upload(s, MID, seed=13)
        s.close()
        t.ok(ok, 'upload 64 MiB via service hostname (SOCKS5 domain) byte-exact', detail)
        s = z.socks5_connect(px, z.hostname('echo'), 80, src=CLIENT)
        s.sendall(b'by-name')
        t.is_(z.recv_exact(s, 7), b'by-name', 'echo via service hostname')
        s.close()

    def by_workload_ip():
        s = z.socks5_connect(px, '127.0.2.5', 9000, src=CLIENT)
        ok, detail, _ = z.bulk_upload(s, MID, seed=14)
        s.close()
        t.ok(ok, 'upload 64 MiB via workload IP byte-exact', detail)
        s = z.socks5_connect(px, '127.0.2.5', 9000, src=CLIENT)
        ok, detail, _ = z.bulk_download(s, bulk, MID, seed=15)
        s.close()
        t.ok(ok, 'download 64 MiB via workload IP byte-exact', detail)

    def bnd_address():
        before = len(echo1.peers) + len(echo2.peers)
        s = z.socks5_connect(px, '127.0.2.3', 8080, src=CLIENT)
        s.sendall(b'x')
        z.recv_exact(s, 1)
        peers = echo1.peers[:]
        s.close()
        t.ok(tuple(s.bnd) in [tuple(p) for p in peers],
             'SOCKS5 reply BND.ADDR:PORT is zring\'s local address of the upstream socket',
             'bnd %r, upstream peers seen by the server %r' % (s.bnd, peers[-3:]))
        del before

    def round_robin():
        a0, b0 = echo1.accepted, echo2.accepted
        for i in range(12):
            s = z.socks5_connect(px, '127.10.0.1', 80, src=CLIENT)
            msg = b'rr-%d' % i
            s.sendall(msg)
            got = z.recv_exact(s, len(msg))
            s.close()
            if got != msg:
                t.ok(False, 'round-robin echo %d' % i, repr(got))
                return
        da, db = echo1.accepted - a0, echo2.accepted - b0
        t.ok(da >= 1 and db >= 1 and da + db == 12,
             'service VIP spreads 12 connections over both endpoints', 'echo-1 %d, echo-2 %d' % (da, db))
        t.diag('round robin: echo-1 %d, echo-2 %d' % (da, db))

    def half_close():
        s = z.socks5_connect(px, '127.0.2.6', 7001, src=CLIENT)
        s.sendall(b'question')
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        try:
            got = z.recv_all(s)
        except socket.timeout:
            got = 'timeout'
        s.close()
        t.is_(got, b'after-eof:question',
              'client half-close reaches the server, which can still answer; then EOF')

        s = z.socks5_connect(px, '127.0.2.6', 7002, src=CLIENT)
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
        s = z.socks5_connect(px, '127.0.2.6', 7003, src=CLIENT)
        s.sendall(b'hello')
        t0 = time.monotonic()
        r = z.outcome(s, 10)
        dt = time.monotonic() - t0
        s.close()
        t.ok(r in ('reset', 'eof') and dt < 5,
             'server RST reaches the client (reset or EOF) quickly', 'client saw %r after %.2f s' % (r, dt))
        t.diag('server reset seen by client as %r after %.3f s' % (r, dt))

        s = z.socks5_connect(px, '127.0.2.6', 7004, src=CLIENT)
        z.recv_exact(s, 5)
        z.set_linger_rst(s)
        s.close()
        z.wait_until(lambda: 'client_reset_seen' in special, 12)
        r, dt = special.get('client_reset_seen', ('nothing', 99))
        t.ok(r in ('reset', 'eof') and dt < 5, 'client RST reaches the server quickly',
             'server saw %r after %.2f s' % (r, dt))

    def refusals():
        before = node.metrics()

        def try_(*a, **kw):
            code, sock = z.socks5_try(*a, **kw)
            if sock:
                sock.close()
            return code, None

        code, s = try_(px, '127.10.0.1', 80, src='127.0.1.99')
        t.is_(code, 2, 'source 127.0.1.99 (no local workload) refused with 0x02')
        code, s = try_(px, '127.10.0.1', 80, src='127.0.2.3')
        t.is_(code, 2, 'source 127.0.2.3 (a remote workload) refused with 0x02')

        h0 = hbone_echo.accepted
        code, s = try_(px, '127.0.2.9', 8080, src=CLIENT)
        t.ok(code != 0, 'HBONE destination refused: node A has no certificate for the client', 'reply %r' % (code,))
        code2, s = try_(px, '127.10.0.9', 80, src=CLIENT)
        t.ok(code2 != 0, 'service whose endpoint is HBONE refused', 'reply %r' % (code2,))
        time.sleep(0.3)  # a connection zring made would be accepted by now
        t.is_(hbone_echo.accepted - h0, 0, 'no plaintext connection was made to the HBONE workload')
        t.diag('HBONE refusal replies: %r %r' % (code, code2))

        # ztunnel passes traffic to addresses that are neither a service VIP
        # nor a workload straight through as plain TCP; so does zring, but
        # never to the node's loopback.
        s0 = stranger.accepted
        code, s = try_(px, '127.0.3.1', 8080, src=CLIENT)
        t.is_(code, 2, 'node loopback 127.0.3.1 (no workload, no VIP) refused with 0x02')
        time.sleep(0.3)
        t.is_(stranger.accepted - s0, 0, 'and never reached')
        if far:
            s0 = far.accepted
            code, s = try_(px, '198.18.45.1', 8080, src=CLIENT)
            t.is_(code, 0, 'unknown destination IP is passed through (reply 0x00)')
            time.sleep(0.3)
            t.is_(far.accepted - s0, 1, 'the passthrough connection reached the unknown destination')
        else:
            t.skip('passthrough to a non-loopback address', 'needs root')
        code, s = try_(px, 'nosuch.default.svc.cluster.local', 80, src=CLIENT)
        t.ok(code not in (0, 'timeout'), 'unknown hostname refused with a reply', 'reply %r' % (code,))
        code, s = try_(px, '127.10.0.1', 81, src=CLIENT)
        t.ok(code not in (0, 'timeout'), 'service VIP on a port the service lacks refused',
             'reply %r' % (code,))
        code, s = try_(px, '::1', 8080, src=CLIENT)
        t.is_(code, 2, 'IPv6 node loopback ::1 refused with 0x02')
        if far:
            code, s = try_(px, 'fd45::1', 8080, src=CLIENT)
            t.is_(code, 5, 'IPv6 passthrough to a closed port: upstream refused (0x05)')

        code, s = try_(px, '127.0.2.3', 9999, src=CLIENT)
        t.is_(code, 5, 'upstream refusing (workload port closed) gives reply 0x05')

        after = node.metrics()

        def delta(reason):
            return (z.msum(after, 'zring_connections_refused_total', reason=reason) -
                    z.msum(before, 'zring_connections_refused_total', reason=reason))
        t.cmp(delta('unknown_source'), '>=', 2, 'zring_connections_refused_total{reason="unknown_source"} +2')
        t.cmp(delta('no_identity'), '>=', 1,
              'zring_connections_refused_total{reason="no_identity"} increased')
        total = (z.msum(after, 'zring_connections_refused_total') -
                 z.msum(before, 'zring_connections_refused_total'))
        t.cmp(total, '>=', 8, 'zring_connections_refused_total counts all 8 refusals')
        reasons = {}
        for labels, v in z.mfind(after, 'zring_connections_refused_total'):
            r = labels.get('reason')
            if r not in reasons:
                reasons[r] = delta(r)
        reasons = {k: v for k, v in reasons.items() if v}
        t.diag('refusal deltas by reason: %r' % reasons)

    def concurrent_bulk():
        # upload and download at the same time on different connections
        res = {}

        def up():
            try:
                s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
                res['up'] = z.bulk_upload(s, 128 * z.MiB, seed=21)
                s.close()
            except Exception as e:
                res['up'] = (False, repr(e))

        def down():
            try:
                s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
                res['down'] = z.bulk_download(s, bulk, 128 * z.MiB, seed=22)
                s.close()
            except Exception as e:
                res['down'] = (False, repr(e))
        ths = [threading.Thread(target=f) for f in (up, down)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(120)
        t.ok(res.get('up', (False,))[0], 'simultaneous 128 MiB upload byte-exact', repr(res.get('up')))
        t.ok(res.get('down', (False,))[0], 'simultaneous 128 MiB download byte-exact', repr(res.get('down')))

    def drained_to_zero():
        v = z.wait_until(lambda: node.metric('zring_worker_connections_active') == 0, 10, 0.2)
        t.ok(v, 'zring_worker_connections_active back to 0 after all connections closed',
             node.active_diag())

    t.subtest('upload via VIP', upload_vip)
    t.subtest('download via VIP', download_vip)
    t.subtest('by domain name', by_domain)
    t.subtest('by workload IP', by_workload_ip)
    t.subtest('BND address', bnd_address)
    t.subtest('round robin', round_robin)
    t.subtest('half-close', half_close)
    t.subtest('resets', resets)
    t.subtest('refusals', refusals)
    t.subtest('concurrent bulk', concurrent_bulk)
    t.subtest('connections drained', drained_to_zero)
    t.ok(node.alive(), 'zring still running at the end')
    if bulk.errors:
        t.diag('bulk server errors: %r' % bulk.errors[:5])


z.Tap('socks5', timeout=300).run(main)
