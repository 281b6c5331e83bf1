#!/usr/bin/python3
"""Who the source of an HBONE stream is, on the destination (node B 127.44.0.2).

The `forwarded: for=` request header is the peer's claim, not a fact: B must
authorize on the TLS connection's own peer address and take the source
workload of its istio_tcp_* metrics from it (ztunnel trusts `forwarded` only
from the destination's waypoint; zring has no waypoints, so from nobody).
A python h2 client holding a valid workload certificate ("client") connects to
B's 15008 from one address and claims another in `forwarded`.

So that `sourceIps` rules still mean the source workload, node A (127.44.0.1)
opens its HBONE connections from the source workload's own address (bound,
127.44.1.x here), and its pool keys on that address: two workloads with the
same service account get one HBONE connection each, and each stream is
authorized (and re-checked on a policy change) with its own workload's IP."""

import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

A_IP = '127.44.0.1'
B_IP = '127.44.0.2'
CLIENT = '127.44.1.2'     # workload "client" (sa client) on node A
CLIENT2 = '127.44.1.3'    # workload "client2" (sa client too) on node A
STRANGER = '127.44.3.9'   # no workload: where the python client connects from
SERVER = '127.44.2.2'     # workload "server" on node B, echo on 8080
VIP = '127.44.10.2'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')


def policy(name, action, rules):
    return {'name': name, 'namespace': 'default', 'scope': 'Namespace', 'action': action, 'rules': rules}


def src_ips(action, *ips):
    # a name per content: set_policies knows a reload has applied by the names
    name = '%s-%s' % (action.lower(), '-'.join(ip.replace('.', '-') for ip in ips))
    return policy(name, action, [[[{'sourceIps': ['%s/32' % ip for ip in ips]}]]])


def main(t):
    why = z.have_h2()
    if why:
        t.skip_all(why)
    certs = z.make_certs()
    z.EchoServer(SERVER, 8080)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('client2', CLIENT2, node='node-a', protocol='HBONE', sa='client'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE', services={z.svc_key('fw-echo'): {80: 8080}}),
    ]
    svcs = [z.service('fw-echo', VIP, {80: 8080}, sans=[SERVER_ID])]
    b = z.hbone_node(t, 'node-b', B_IP, certs, [(SERVER_ID, 'server')], wls, svcs)
    # one worker on A: one pool, so that sharing a pooled connection is deterministic
    a = z.hbone_node(t, 'node-a', A_IP, certs, [(CLIENT_ID, 'client')], wls, svcs, workers=1)
    if not b.start() or not a.start():
        return
    base_state = copy.deepcopy(b.state)
    px = a.socks5

    def set_policies(pols):
        b.state = copy.deepcopy(base_state)
        b.state['policies'] = pols
        b.write_state()
        b.reload()
        names = sorted(p['name'] for p in pols)

        def applied():
            got = b.config_dump().get('policies') or []
            return sorted(p.get('name') for p in got if isinstance(p, dict)) == names
        t.ok(z.wait_until(applied, 5, 0.1), 'B applied policies %r' % names)

        def workers_caught_up():
            eps = [v for name, _, v in b.metrics() if name == 'zring_worker_config_epoch']
            return bool(eps) and min(eps) == max(eps)
        z.wait_until(workers_caught_up, 5, 0.05)

    def h2_connect(src, forwarded, data=None):
        """CONNECT SERVER:8080 on a fresh TLS connection from `src` with a
        `forwarded` header; returns the status (then the echo of `data`)."""
        c = z.H2Client(certs, (SERVER, 15008), cert='client', src=src)
        try:
            extra = [('forwarded', forwarded)] if forwarded else []
            sid = c.connect('%s:8080' % SERVER, extra=extra)
            st = c.response(sid)
            if st != 200 or data is None:
                return st
            c.send(sid, data)
            c.wait(lambda: len(c.st(sid)['data']) >= len(data), 5)
            return st, bytes(c.st(sid)['data'])
        finally:
            c.close()

    def probe(src):
        return z.socks5_echo_probe(px, VIP, 80, src=src)

    def hbone_streams():
        """B's inbound HBONE streams to the server: [(source ip, source port)]."""
        out = []
        for c in b.config_dump().get('connections') or []:
            if c.get('listener') == 'hbone' and c.get('dst', '').startswith(SERVER + ':'):
                ip, _, port = c.get('src', '').rpartition(':')
                out.append((ip, int(port or 0)))
        return sorted(out)

    def opened(**labels):
        return b.metric('istio_tcp_connections_opened_total', reporter='destination', **labels)

    fwd = 'for="%s:34567"' % CLIENT

    def forwarded_ignored():
        set_policies([])
        t.is_(h2_connect(STRANGER, fwd), 200, 'no policy: CONNECT from %s claiming for=%s: 200' % (STRANGER, CLIENT))
        set_policies([src_ips('Deny', STRANGER)])
        t.is_(h2_connect(STRANGER, fwd), 401,
              'DENY sourceIps [%s]: a peer at that address claiming for="%s" is still denied (401)' % (STRANGER, CLIENT))
        t.is_(h2_connect(STRANGER, 'for=%s;proto=https, for="%s"' % (CLIENT, CLIENT)), 401,
              '  ... whatever the form of the header')
        set_policies([src_ips('Allow', CLIENT)])
        t.is_(h2_connect(STRANGER, fwd), 401,
              'ALLOW sourceIps [%s] only: a peer at %s claiming for="%s" is denied (401)' % (CLIENT, STRANGER, CLIENT))
        set_policies([src_ips('Deny', CLIENT)])
        t.is_(h2_connect(STRANGER, fwd), 200,
              'DENY sourceIps [%s]: a peer at %s claiming to be it is not blocked (200)' % (CLIENT, STRANGER))
        t.is_(h2_connect(CLIENT, None), 401, '  ... while a peer at %s itself is denied (401)' % CLIENT)
        set_policies([])

    def metrics_from_peer():
        lab = dict(source_workload='client2', destination_workload='server')
        n2, n1 = opened(**lab), opened(source_workload='client', destination_workload='server')
        got = h2_connect(CLIENT2, fwd, b'fwd-metrics')
        t.is_(got, (200, b'fwd-metrics'), 'CONNECT from %s (client2) claiming for=%s: echo works' % (CLIENT2, CLIENT))
        t.ok(z.wait_until(lambda: opened(**lab) > n2, 3, 0.1),
             'B counts it with source_workload="client2" (the peer address\'s workload)',
             'client2 %r -> %r' % (n2, opened(**lab)))
        t.is_(opened(source_workload='client', destination_workload='server'), n1,
              '  ... and not as the workload the header names')
        full = z.mfind(b.metrics(), 'istio_tcp_connections_opened_total', reporter='destination',
                       source_workload='client2')
        t.ok(full and full[0][0].get('source_principal') == CLIENT_ID,
             '  ... source_principal from the certificate (%s)' % CLIENT_ID, repr(full[:1]))

    def through_node_a():
        t.is_(probe(CLIENT), 0, 'no policy: %s -> A -> B works' % CLIENT)
        streams = []
        s = z.socks5_connect(px, VIP, 80, src=CLIENT)
        s.sendall(b'x')
        z.recv_exact(s, 1)
        streams = hbone_streams()
        s.close()
        t.ok([ip for ip, _ in streams] == [CLIENT],
             'B sees the HBONE connection from the source workload\'s address %s (A binds it)' % CLIENT, repr(streams))
        set_policies([src_ips('Deny', CLIENT)])
        t.is_(probe(CLIENT), 2, 'B: DENY sourceIps [%s]: %s via A denied (SOCKS5 0x02)' % (CLIENT, CLIENT))
        t.is_(probe(CLIENT2), 0, '  ... %s (same service account) allowed' % CLIENT2)
        set_policies([src_ips('Deny', '127.0.0.1', A_IP)])
        t.is_(probe(CLIENT), 0, 'B: DENY sourceIps of node A\'s own addresses does not hit %s' % CLIENT)
        set_policies([src_ips('Allow', CLIENT)])
        t.is_(probe(CLIENT), 0, 'B: ALLOW sourceIps [%s] only: %s allowed' % (CLIENT, CLIENT))
        t.is_(probe(CLIENT2), 2, '  ... %s denied' % CLIENT2)
        set_policies([])
        t.cmp(opened(source_workload='client', source_principal=CLIENT_ID, destination_workload='server'), '>=', 1,
              'B\'s destination metrics name source_workload="client" with its principal')
        binds = z.mfind(a.metrics(), 'zring_source_bind_failures_total')
        t.ok(binds and sum(v for _, v in binds) == 0, 'A: zring_source_bind_failures_total is 0 (every bind worked)',
             repr(binds))

    def pool_per_source():
        set_policies([])
        socks = {}
        for name, src in (('c1', CLIENT), ('c2', CLIENT2), ('c1b', CLIENT)):
            s = z.socks5_connect(px, VIP, 80, src=src)
            s.sendall(name.encode())
            z.recv_exact(s, len(name))
            socks[name] = s
        streams = hbone_streams()
        ips = sorted(set(ip for ip, _ in streams))
        t.is_(ips, sorted([CLIENT, CLIENT2]), 'B: the streams come from both workloads\' own addresses')
        by_ip = {}
        for ip, port in streams:
            by_ip.setdefault(ip, set()).add(port)
        t.ok(len(by_ip.get(CLIENT, ())) == 1 and len(streams) == 3,
             'the two streams of %s share one pooled HBONE connection; %s has its own' % (CLIENT, CLIENT2),
             repr(streams))
        set_policies([src_ips('Deny', CLIENT2)])
        r = z.outcome(socks['c2'], 5)
        t.ok(r in ('eof', 'reset'), 'DENY sourceIps [%s] closes the live stream of %s' % (CLIENT2, CLIENT2),
             'saw %r' % (r,))
        for name in ('c1', 'c1b'):
            try:
                socks[name].sendall(b'still')
                got = z.recv_exact(socks[name], 5)
            except (OSError, EOFError) as e:
                got = repr(e)
            t.is_(got, b'still', '  ... the stream %s of %s (same identity) keeps working' % (name, CLIENT))
        for s in socks.values():
            s.close()
        set_policies([])

    def pool_keyed_on_accepted_identities():
        """A connection verified against a service's subjectAltNames must not
        carry a stream that accepts only the workload's own identity: the pool
        key holds every identity the client accepts (ztunnel's WorkloadKey).
        Node B2 presents sa/other for W; node A2 knows W as sa/server, and
        service pk-echo lists sa/other among its subjectAltNames."""
        a2_ip, b2_ip, cl, w, vip = '127.44.5.1', '127.44.5.2', '127.44.4.2', '127.44.6.2', '127.44.10.3'
        z.EchoServer(w, 8080)
        svc = [z.service('pk-echo', vip, {80: 8080}, sans=[z.spiffe('other')])]
        on_a = [z.workload('client', cl, node='node-a2', protocol='HBONE'),
                z.workload('w', w, node='node-b2', protocol='HBONE', sa='server',
                           services={z.svc_key('pk-echo'): {80: 8080}})]
        on_b = [on_a[0], z.workload('w', w, node='node-b2', protocol='HBONE', sa='other',
                                    services={z.svc_key('pk-echo'): {80: 8080}})]
        b2 = z.hbone_node(t, 'node-b2', b2_ip, certs, [(z.spiffe('other'), 'other')], on_b, svc)
        a2 = z.hbone_node(t, 'node-a2', a2_ip, certs, [(CLIENT_ID, 'client')], on_a, svc, workers=1)
        if not b2.start() or not a2.start():
            return
        code, s = z.socks5_try(a2.socks5, w, 8080, src=cl, timeout=10)
        t.is_(code, 4, 'direct to W, which presents sa/other instead of sa/server: refused (0x04)')
        if s:
            s.close()
        code, via_vip = z.socks5_try(a2.socks5, vip, 80, src=cl, timeout=10)
        t.is_(code, 0, 'through the VIP, whose subjectAltNames name sa/other: connected')
        code, s = z.socks5_try(a2.socks5, w, 8080, src=cl, timeout=10)
        t.is_(code, 4, 'direct to W again while that connection is pooled: still refused, not carried on it')
        for x in (s, via_vip):
            if x:
                x.close()
        a2.stop()
        b2.stop()

    t.subtest('forwarded is ignored for policy', forwarded_ignored)
    t.subtest('metrics labels from the peer address', metrics_from_peer)
    t.subtest('sourceIps through node A', through_node_a)
    t.subtest('pool keyed on the source address', pool_per_source)
    t.subtest('pool keyed on the accepted server identities', pool_keyed_on_accepted_identities)
    t.ok(a.alive() and b.alive(), 'both zring nodes still running at the end')


z.Tap('forwarded', timeout=120).run(main)
