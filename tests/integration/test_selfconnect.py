#!/usr/bin/python3
"""zring never proxies a workload's connection to its own listeners or to the
node's loopback (SPEC "HBONE"): such a destination is refused (SOCKS5 0x02,
HBONE 503 as ztunnel's SelfCall), counted as
zring_connections_refused_total{reason="self"|"loopback"} and logged, so that
no workload can reach the admin API (POST /quitquitquit) through zring.
Destinations that are workloads on loopback addresses, and service VIPs, still work.

Node A 127.45.0.2 (its workloads 127.45.1.x, VIP 127.45.10.1); for HBONE node A
127.45.0.12 (workload 127.45.4.2) and node B 127.45.0.13 (workload 127.45.5.2)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

A_IP = '127.45.0.2'
CLIENT = '127.45.1.2'
WEB = '127.45.1.5'
VIP = '127.45.10.1'
WILD_PORT = 45020            # node A's metrics on 0.0.0.0:45020
HA_IP, HB_IP = '127.45.0.12', '127.45.0.13'
HCLIENT, HSERVER = '127.45.4.2', '127.45.5.2'
HB_WILD_PORT = 45021         # node B's metrics on 0.0.0.0:45021
CLIENT_ID, SERVER_ID = z.spiffe('client'), z.spiffe('server')


def host_address():
    """A non-loopback IPv4 address of this host, or None."""
    try:
        p = z.sh('ip', '-o', '-4', 'addr', 'show', check=False)
    except Exception:
        return None
    for line in p.stdout.decode().splitlines():
        parts = line.split()
        if 'inet' in parts:
            ip = parts[parts.index('inet') + 1].split('/')[0]
            if not ip.startswith('127.'):
                return ip
    return None


def plain(t):
    echo = z.EchoServer(WEB, 8080)
    node = z.Node(t, ip=A_IP, workloads=[
        z.workload('client', CLIENT),
        z.workload('web', WEB, services={z.svc_key('web'): {80: 8080}}),
    ], services=[z.service('web', VIP, {80: 8080})],
        listeners={'metrics': '0.0.0.0:%d' % WILD_PORT})
    if not node.start():
        return
    px = node.socks5
    # a node-loopback port where nobody listens: without the check the connect
    # itself fails with 0x05; the refusal must come from zring's rule (0x02)
    free = z.listen_socket('127.0.0.1', 0)
    free_port = free.getsockname()[1]
    free.close()

    def own_ports():
        before = node.refused('self')
        n = 0
        for name in ('admin', 'readiness', 'socks5', 'outbound', 'inboundPlaintext'):
            host, port = node.addr(name)
            code, s = z.socks5_try(px, host, port, src=CLIENT)
            t.is_(code, 2, 'SOCKS5 CONNECT to zring\'s own %s listener %s:%d refused with 0x02' % (name, host, port))
            n += 1
            if s:
                s.close()
        # the wildcard metrics listener: its port on loopback, on a local
        # workload's IP and on the host's own address
        targets = ['127.0.0.1', WEB]
        hip = host_address()
        if hip:
            targets.append(hip)
        for host in targets:
            code, s = z.socks5_try(px, host, WILD_PORT, src=CLIENT)
            t.is_(code, 2, 'SOCKS5 CONNECT to %s:%d (metrics on 0.0.0.0:%d) refused with 0x02'
                  % (host, WILD_PORT, WILD_PORT))
            n += 1
            if s:
                s.close()
        got = z.wait_until(lambda: node.refused('self') - before >= n, 3) and node.refused('self')
        t.is_((got or node.refused('self')) - before, n, 'zring_connections_refused_total{reason="self"} counted each')

    def loopback():
        before = node.refused('loopback')
        for host, port in (('127.0.0.1', free_port), ('127.45.0.9', free_port), ('0.0.0.0', free_port)):
            code, s = z.socks5_try(px, host, port, src=CLIENT)
            t.is_(code, 2, 'SOCKS5 CONNECT to node loopback %s:%d refused by policy (0x02, not 0x05)' % (host, port))
            if s:
                s.close()
        # by name, as SOCKS5 clients with remote DNS send it
        code, s = z.socks5_try(px, 'localhost', free_port, src=CLIENT)
        t.ok(code != 0, 'SOCKS5 CONNECT to "localhost" refused', 'reply %r' % (code,))
        got = z.wait_until(lambda: node.refused('loopback') - before >= 3, 3) and node.refused('loopback')
        t.cmp((got or node.refused('loopback')) - before, '>=', 3,
              'zring_connections_refused_total{reason="loopback"} counted')
        recs = [r for r in node.log_records() if 'node\'s loopback' in str(r.get('msg', r))]
        t.ok(recs, 'a log line says the destination is the node\'s loopback')

    def quit_through_socks5():
        host, port = node.addr('admin')
        code, s = z.socks5_try(px, host, port, src=CLIENT)
        if s:
            s.sendall(b'POST /quitquitquit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n')
            z.outcome(s, 2)
            s.close()
        time.sleep(0.5)
        t.ok(node.alive(), 'POST /quitquitquit through SOCKS5 did not reach the admin API: zring runs',
             'reply %r' % (code,))
        st, _ = node.http('readiness', 'GET', '/healthz/ready')
        t.is_(st, 200, 'and is still ready')

    def legit():
        for host, port in ((WEB, 8080), (VIP, 80)):
            s = z.socks5_connect(px, host, port, src=CLIENT)
            s.sendall(b'loop-ok')
            t.is_(z.recv_exact(s, 7), b'loop-ok',
                  'a local workload on a loopback address still works (%s:%d)' % (host, port))
            s.close()

    t.subtest('own listeners', own_ports)
    t.subtest('node loopback', loopback)
    t.subtest('quitquitquit', quit_through_socks5)
    t.subtest('legit loopback workloads', legit)
    t.ok(node.alive(), 'node A still running')
    node.stop()


def hbone(t):
    why = z.have_h2()
    if why:
        t.skip('HBONE', why)
        return
    certs = z.make_certs()
    echo = z.EchoServer(HSERVER, 8080)
    wls = [
        z.workload('client', HCLIENT, node='node-a', protocol='HBONE'),
        z.workload('server', HSERVER, node='node-b', protocol='HBONE'),
    ]
    a = z.hbone_node(t, 'node-a', HA_IP, certs, [(CLIENT_ID, 'client')], wls)
    b = z.hbone_node(t, 'node-b', HB_IP, certs, [(SERVER_ID, 'server')], wls)
    b.listeners['metrics'] = '0.0.0.0:%d' % HB_WILD_PORT
    b.write_config()
    if not a.start() or not b.start():
        return

    def direct():
        before = b.refused('self')
        for port, what in ((15008, 'its per-workload hbone listener'), (HB_WILD_PORT, 'its wildcard metrics listener')):
            h = z.H2Client(certs, (HSERVER, 15008), cert='client', src=HCLIENT)
            sid = h.connect('%s:%d' % (HSERVER, port))
            r = h.response(sid, 10)
            t.is_(r, 503, 'node B answers CONNECT %s:%d (%s) with 503' % (HSERVER, port, what))
            h.close()
        t.is_(b.refused('self') - before, 2, 'node B counts both as reason="self"')
        h = z.H2Client(certs, (HSERVER, 15008), cert='client', src=HCLIENT)
        sid = h.connect('%s:8080' % HSERVER)
        t.is_(h.response(sid, 10), 200, 'CONNECT to the workload\'s own port 8080 still 200')
        h.close()

    def through_a():
        before = b.refused('self')
        code, s = z.socks5_try(a.socks5, HSERVER, 15008, src=HCLIENT, timeout=10)
        t.ok(code not in (0, 'timeout'), 'SOCKS5 via node A to the remote workload\'s port 15008 refused',
             'reply %r' % (code,))
        if s:
            s.close()
        t.ok(z.wait_until(lambda: b.refused('self') > before, 3), 'refused by node B (its own listener)')
        s = z.socks5_connect(a.socks5, HSERVER, 8080, src=HCLIENT, timeout=10)
        s.sendall(b'hb-ok')
        t.is_(z.recv_exact(s, 5), b'hb-ok', 'HBONE to the workload\'s port 8080 still works')
        s.close()

    t.subtest('HBONE CONNECT to B\'s own ports', direct)
    t.subtest('SOCKS5 via A to B\'s port 15008', through_a)
    t.ok(a.alive() and b.alive(), 'both nodes still running')


def main(t):
    plain(t)
    hbone(t)


z.Tap('selfconnect', timeout=120).run(main)
