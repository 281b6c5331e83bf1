#!/usr/bin/python3
"""iptables capture, as istio-cni sets it up on a node (needs root).

  pod netns  198.18.0.2 (local workload "pod" of node A) --veth-- 198.18.0.1 root ns
  srv netns  198.18.1.2 (TCP workload "server" on node-b) --veth-- 198.18.1.1 root ns

Outbound: nat PREROUTING -i <pod veth> -p tcp -> REDIRECT :15001 (zring's outbound
listener on 198.18.0.1). The pod connects to the server's workload IP and to the
service VIP 198.18.10.1:80 (-> 8080) and moves data byte-exact each way.
Inbound plaintext: nat PREROUTING -i <srv veth> -d 198.18.0.2 -> REDIRECT :15006;
the server netns connects to the pod's port 9000 and zring delivers it.
Also: zring's upstream SYNs carry SO_MARK 1337; metrics reporter=source/destination;
captured connections to zring's own listeners are refused (reason="self")."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

BIG = int(os.environ.get('ZRTEST_BIG', z.GiB))
INB = min(BIG, 256 * z.MiB)
POD, POD_GW = '198.18.0.2', '198.18.0.1'
SRV, SRV_GW = '198.18.1.2', '198.18.1.1'
VIP = '198.18.10.1'


def main(t):
    t.require_root()
    pod = z.NetNS(z.uniq('zc-pod-'))
    srv = z.NetNS(z.uniq('zc-srv-'))
    pod_if, srv_if = z.uniq('zcp'), z.uniq('zcs')
    z.veth(pod_if, pod, 'eth0', POD_GW + '/24', POD + '/24', gateway=POD_GW)
    z.veth(srv_if, srv, 'eth0', SRV_GW + '/24', SRV + '/24', gateway=SRV_GW)
    ipt = z.Iptables()
    chain = 'ZRC%d' % os.getpid()
    ipt.new_chain('nat', chain + 'O')
    ipt.append('nat', chain + 'O', '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', '15001')
    ipt.append('nat', 'PREROUTING', '-i', pod_if, '-p', 'tcp', '-j', chain + 'O')
    ipt.new_chain('nat', chain + 'I')
    ipt.append('nat', chain + 'I', '-p', 'tcp', '-d', POD, '-j', 'REDIRECT', '--to-ports', '15006')
    ipt.append('nat', 'PREROUTING', '-i', srv_if, '-p', 'tcp', '-j', chain + 'I')
    # count zring's upstream SYNs into the namespaces, marked and not
    ipt.new_chain('filter', chain + 'M')
    ipt.append('filter', chain + 'M', '-p', 'tcp', '--syn', '-m', 'mark', '--mark', '1337', '-j', 'RETURN')
    ipt.append('filter', chain + 'M', '-p', 'tcp', '--syn', '-j', 'RETURN')
    ipt.append('filter', 'OUTPUT', '-d', '198.18.0.0/23', '-j', chain + 'M')

    up_srv = z.BulkServer(SRV, 8080, netns=srv.name)
    pod_srv = z.BulkServer(POD, 9000, netns=pod.name)

    node = z.Node(t, workloads=[
        z.workload('pod', POD),
        z.workload('server', SRV, node='node-b', services={z.svc_key('bulk'): {80: 8080}}),
    ], services=[z.service('bulk', VIP, {80: 8080})], listeners={
        'outbound': POD_GW + ':15001', 'inboundPlaintext': SRV_GW + ':15006', 'socks5': None})
    if not node.start():
        return

    def from_pod(ip, port):
        return z.connect(ip, port, timeout=10, netns=pod.name)

    def outbound(dst, port, label, seed):
        s = from_pod(dst, port)
        ok, detail, dt = z.bulk_upload(s, BIG, seed=seed)
        s.close()
        t.ok(ok, 'captured outbound to %s: %d MiB upload byte-exact' % (label, BIG // z.MiB), detail)
        t.diag('upload to %s: %s' % (label, z.rate_str(BIG, dt)))
        s = from_pod(dst, port)
        ok, detail, dt = z.bulk_download(s, up_srv, BIG, seed=seed + 1)
        s.close()
        t.ok(ok, 'captured outbound to %s: %d MiB download byte-exact' % (label, BIG // z.MiB), detail)
        t.diag('download from %s: %s' % (label, z.rate_str(BIG, dt)))

    def small_things():
        # peer of the server is zring (root ns side), not the pod: proof that it went through zring
        n0 = len(up_srv.peers)
        s = from_pod(SRV, 8080)
        ok, detail, _ = z.bulk_upload(s, 1 * z.MiB, seed=3)
        s.close()
        t.ok(ok, 'small captured upload', detail)
        peer = up_srv.peers[n0] if len(up_srv.peers) > n0 else None
        t.ok(peer and peer[0] == SRV_GW, 'the server sees zring (198.18.1.1) as its peer', repr(peer))
        # The pod's address lives in its own netns, not on this host: zring cannot
        # bind its upstream socket to it and connects from its own (counted).
        t.cmp(node.metric('zring_source_bind_failures_total'), '>=', 1,
              'zring_source_bind_failures_total counts the upstream connect it could not bind to the pod\'s address')
        # closed port at a known workload: the captured client sees a reset/EOF, quickly
        before = node.metric('zring_connections_refused_total')
        s = from_pod(SRV, 9999)
        t0 = time.monotonic()
        r = z.outcome(s, 8)
        s.close()
        t.ok(r in ('eof', 'reset'), 'captured connect to a closed port: client gets RST/EOF',
             'got %r after %.2f s' % (r, time.monotonic() - t0))
        after = z.wait_until(lambda: node.metric('zring_connections_refused_total') > before, 3)
        t.ok(after, 'zring_connections_refused_total counts it')
        # concurrency through capture
        res = []

        def one(i):
            try:
                s = from_pod(VIP, 80)
                res.append(z.bulk_upload(s, 4 * z.MiB, seed=100 + i)[0])
                s.close()
            except Exception as e:
                res.append(repr(e))
        ths = [threading.Thread(target=one, args=(i,)) for i in range(32)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(60)
        t.is_(res.count(True), 32, '32 concurrent captured connections byte-exact')
        warns = [ln for ln in node.log_text().splitlines() if 'cannot bind to the source workload' in ln]
        t.ok(1 <= len(warns) <= node.workers and node.metric('zring_source_bind_failures_total') >= 33,
             'the bind failures are warned about at most once a minute per worker, not per connection',
             '%d warnings for %r failures: %r' % (len(warns), node.metric('zring_source_bind_failures_total'),
                                                  warns[:3]))

    def half_close():
        s = from_pod(VIP, 80)
        s.sendall(b'UP\nabc')
        s.shutdown(socket.SHUT_WR)
        try:
            line = z.recv_line(s)
            r = z.outcome(s, 5)
        except Exception as e:
            line, r = repr(e), None
        s.close()
        t.ok(line.startswith(b'3 ') and r == 'eof', 'half-close through capture: reply then EOF',
             '%r %r' % (line, r))

    def inbound():
        def from_srv():
            return z.connect(POD, 9000, timeout=10, netns=srv.name)
        m0 = node.metrics()
        s = from_srv()
        ok, detail, dt = z.bulk_upload(s, INB, seed=7)
        s.close()
        t.ok(ok, 'inbound plaintext (REDIRECT to 15006): %d MiB upload byte-exact' % (INB // z.MiB), detail)
        t.diag('inbound upload: ' + z.rate_str(INB, dt))
        s = from_srv()
        ok, detail, dt = z.bulk_download(s, pod_srv, INB, seed=8)
        s.close()
        t.ok(ok, 'inbound plaintext: %d MiB download byte-exact' % (INB // z.MiB), detail)
        peer = pod_srv.peers[-1] if pod_srv.peers else None
        t.ok(peer and peer[0] == POD_GW, 'the pod sees zring (198.18.0.1) as its peer', repr(peer))
        z.wait_until(lambda: node.metric('zring_worker_connections_active') == 0, 5, 0.1)
        m = node.metrics()
        sel = dict(reporter='destination', destination_workload='pod')
        d = (z.msum(m, 'istio_tcp_connections_opened_total', **sel) -
             z.msum(m0, 'istio_tcp_connections_opened_total', **sel))
        t.cmp(d, '>=', 2, 'istio_tcp_connections_opened_total{reporter="destination",destination_workload="pod"} +2')
        rb = (z.msum(m, 'istio_tcp_received_bytes_total', **sel) + z.msum(m, 'istio_tcp_sent_bytes_total', **sel) -
              z.msum(m0, 'istio_tcp_received_bytes_total', **sel) - z.msum(m0, 'istio_tcp_sent_bytes_total', **sel))
        t.cmp(rb, '>=', 2 * INB, 'inbound byte counters cover both transfers')
        ser = z.mfind(m, 'istio_tcp_connections_opened_total', **sel)
        if ser:
            t.diag('inbound labels: %r' % ser[0][0])

    def source_metrics():
        m = node.metrics()
        sel = dict(reporter='source', source_workload='pod')
        opened = z.msum(m, 'istio_tcp_connections_opened_total', **sel)
        t.cmp(opened, '>=', 4 + 32, 'istio_tcp_connections_opened_total{reporter="source",source_workload="pod"}')
        vip = z.msum(m, 'istio_tcp_connections_opened_total', destination_service=z.hostname('bulk'), **sel)
        t.cmp(vip, '>=', 2 + 32, '... with destination_service="%s" for the VIP connections' % z.hostname('bulk'))
        byt = z.msum(m, 'istio_tcp_received_bytes_total', **sel) + z.msum(m, 'istio_tcp_sent_bytes_total', **sel)
        t.cmp(byt, '>=', 4 * BIG, 'outbound byte counters cover the bulk transfers')
        rc, out = z.promtool_check(node.metrics_text())
        t.ok(rc in (0, None), 'promtool accepts the metrics', out[:500])

    def own_listeners():
        # zring never proxies to itself: the pod's captured connection to
        # zring's inboundPlaintext listener (198.18.1.1:15006), and the
        # server's to the pod's port 15006 (zring binds it on each local
        # workload IP), are refused and counted as reason="self"
        for label, make in (('captured outbound to %s:15006' % SRV_GW, lambda: from_pod(SRV_GW, 15006)),
                            ('inbound plaintext to %s:15006' % POD,
                             lambda: z.connect(POD, 15006, timeout=10, netns=srv.name))):
            before = node.refused('self')
            s = make()
            s.sendall(b'GET / HTTP/1.0\r\n\r\n')
            r = z.outcome(s, 5)
            s.close()
            t.ok(r in ('eof', 'reset'), '%s: refused' % label, 'got %r' % (r,))
            t.ok(z.wait_until(lambda: node.refused('self') > before, 3),
                 '%s: counted as zring_connections_refused_total{reason="self"}' % label)

    def marks():
        marked = ipt.packets('filter', chain + 'M', 'mark match 0x539')
        total = ipt.packets('filter', chain + 'M', 'RETURN')
        t.diag('SYNs from the root ns into the namespaces: %d marked 1337, %d total' % (marked, total))
        t.cmp(marked, '>=', 8, 'zring\'s upstream connects carry SO_MARK 1337')
        t.is_(total - marked, 0, 'no upstream connect without the mark')

    t.subtest('small things', small_things)
    t.subtest('outbound to workload IP', outbound, SRV, 8080, 'workload IP %s:8080' % SRV, 10)
    t.subtest('outbound to service VIP', outbound, VIP, 80, 'service VIP %s:80' % VIP, 20)
    t.subtest('half-close', half_close)
    t.subtest('inbound plaintext', inbound)
    t.subtest('source metrics', source_metrics)
    t.subtest('own listeners', own_listeners)
    t.subtest('SO_MARK', marks)
    v = z.wait_until(lambda: node.metric('zring_worker_connections_active') == 0, 5, 0.2)
    t.ok(v, 'no connection left active', node.active_diag())
    t.ok(node.alive(), 'zring still running at the end')


z.Tap('capture', timeout=300).run(main)
