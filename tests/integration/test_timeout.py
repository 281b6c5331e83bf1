#!/usr/bin/python3
"""connectTimeout bounds the upstream connect. The destination workload lives in
a network namespace whose iptables drops every SYN, so the connect never
completes; zring must answer the SOCKS5 client (0x06 timeout, or close) after about
connectTimeout and count zring_connections_refused_total{reason="connect_timeout"}.
Other connections keep working meanwhile. Needs root."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.1.2'
BLACKHOLE = '198.18.2.2'


def main(t):
    t.require_root()
    ns = z.NetNS(z.uniq('zt-bh-'))
    root_if = z.uniq('ztb')
    z.veth(root_if, ns, 'eth0', '198.18.2.1/24', '198.18.2.2/24', gateway='198.18.2.1')
    ipt = z.Iptables(ns)
    ipt.append('filter', 'INPUT', '-p', 'tcp', '--syn', '-j', 'DROP')
    # a listener behind the DROP so that, without the rule, connects would succeed
    z.EchoServer(BLACKHOLE, 8080, netns=ns.name)
    echo = z.EchoServer('127.0.2.3', 8080)

    node = z.Node(t, workloads=[
        z.workload('client', CLIENT),
        z.workload('echo', '127.0.2.3', node='node-b', services={z.svc_key('echo'): {80: 8080}}),
        z.workload('blackhole', BLACKHOLE, node='node-b', services={z.svc_key('slow'): {80: 8080}}),
    ], services=[
        z.service('echo', '127.10.0.1', {80: 8080}),
        z.service('slow', '127.10.0.7', {80: 8080}),
    ], extra={'connectTimeout': '1s'})
    if not node.start():
        return
    px = node.socks5

    def one(dst, port, label):
        before = node.refused('connect_timeout')
        t0 = time.monotonic()
        code, s = z.socks5_try(px, dst, port, src=CLIENT, timeout=15)
        dt = time.monotonic() - t0
        t.ok(code in (6, 'closed', 'reset'), '%s: refused (0x06 or close) when the connect times out' % label,
             'reply %r after %.2f s' % (code, dt))
        t.ok(0.7 <= dt <= 3.5, '%s: answered after about connectTimeout=1s' % label, 'took %.2f s' % dt)
        t.diag('%s: reply %r after %.2f s' % (label, code, dt))
        after = z.wait_until(lambda: node.refused('connect_timeout') > before, 3) and node.refused('connect_timeout')
        t.cmp((after or before) - before, '>=', 1,
              '%s: zring_connections_refused_total{reason="connect_timeout"} increased' % label)

    def meanwhile():
        # a timing-out connect must not block other connections on the same worker
        res = {}

        def slow():
            t0 = time.monotonic()
            res['slow'] = (z.socks5_try(px, BLACKHOLE, 8080, src=CLIENT, timeout=15)[0],
                           time.monotonic() - t0)
        ths = [threading.Thread(target=slow) for _ in range(8)]
        for th in ths:
            th.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        good = 0
        for i in range(20):
            s = z.socks5_connect(px, '127.10.0.1', 80, src=CLIENT, timeout=5)
            s.sendall(b'ping')
            if z.recv_exact(s, 4) == b'ping':
                good += 1
            s.close()
        dt = time.monotonic() - t0
        t.is_(good, 20, 'connections to a live service work while 8 connects hang')
        t.ok(dt < 0.9, 'and are not delayed by them', '20 echoes took %.2f s' % dt)
        for th in ths:
            th.join(15)
        t.ok(res.get('slow', (None,))[0] in (6, 'closed', 'reset'), 'the hanging connects are then refused',
             repr(res.get('slow')))

    t.subtest('workload IP', one, BLACKHOLE, 8080, 'workload IP')
    t.subtest('service VIP', one, '127.10.0.7', 80, 'service VIP')
    t.subtest('meanwhile', meanwhile)
    v = z.wait_until(lambda: node.metric('zring_worker_connections_active') == 0, 5, 0.2)
    t.ok(v, 'no connection left active', node.active_diag())
    t.ok(node.alive(), 'zring still running at the end')


z.Tap('timeout', timeout=120).run(main)
