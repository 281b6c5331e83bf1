#!/usr/bin/python3
"""L4 authorization on the destination zring (node B 127.0.0.43) for HBONE
traffic from node A (127.0.0.42): ztunnel-format policies in B's local state,
changed by editing the state file and SIGHUP. Allow/deny by principal,
namespace, source IP (B authorizes on the connection's peer address, which A
binds to the original client's IP; `forwarded` is not trusted, see
test_forwarded.py) and destination port;
a denial is a 401 on the CONNECT, which A answers as SOCKS5 0x02, and B counts
istio_tcp_connections_failed_total{response_flags="DENY"}; a policy change
closes live connections that are now denied while allowed ones keep working."""

import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.4.2'
CLIENT2 = '127.0.4.3'
SERVER = '127.0.5.2'
VIP = '127.10.4.2'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')


def policy(name, action, rules, scope='Namespace', namespace='default'):
    return {'name': name, 'namespace': namespace, 'scope': scope, 'action': action, 'rules': rules}


def main(t):
    certs = z.make_certs()
    z.EchoServer(SERVER, 8080)
    z.EchoServer(SERVER, 9000)
    z.EchoServer(SERVER, 8081)   # reached in plaintext through B's 15006 (iptables DNAT)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('client2', CLIENT2, node='node-a', protocol='HBONE', sa='client'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE',
                   services={z.svc_key('hb-echo'): {80: 8080, 90: 9000}}),
    ]
    svcs = [z.service('hb-echo', VIP, {80: 8080, 90: 9000}, sans=[SERVER_ID])]
    b = z.hbone_node(t, 'node-b', z.HB_B_IP, certs, [(SERVER_ID, 'server')], wls, svcs, plaintext=True)
    a = z.hbone_node(t, 'node-a', z.HB_A_IP, certs, [(CLIENT_ID, 'client')], wls, svcs)
    if not b.start() or not a.start():
        return
    base_state = copy.deepcopy(b.state)
    px = a.socks5

    def epochs():
        try:
            return [v for name, _, v in b.metrics() if name == 'zring_worker_config_epoch']
        except Exception:
            return []

    def set_policies(pols):
        # Policy names repeat across steps with other contents, so "the dump
        # shows these names" can be true before the reload: wait instead until
        # every worker runs a snapshot newer than the one before the reload.
        before = max(epochs() or [0])
        b.state = copy.deepcopy(base_state)
        b.state['policies'] = pols
        b.write_state()
        b.reload()

        def workers_caught_up():
            eps = epochs()
            return bool(eps) and min(eps) > before
        if not z.wait_until(workers_caught_up, 5, 0.05):
            time.sleep(1.0)  # no usable metrics: give the reload a moment

    def probe(src=CLIENT, port=80, dst=VIP):
        return z.socks5_echo_probe(px, dst, port, src=src)

    def deny_metrics():
        ms = b.metrics()
        return (z.msum(ms, 'istio_tcp_connections_failed_total', reporter='destination', response_flags='DENY'),
                z.msum(ms, 'zring_connections_refused_total', reason='denied'))

    def expect(desc, want, **kw):
        d0 = deny_metrics()
        got = probe(**kw)
        t.is_(got, want, desc)
        if want == 2:
            d1 = z.wait_until(lambda: deny_metrics()[0] > d0[0] and deny_metrics(), 3, 0.1) or deny_metrics()
            t.ok(d1[0] > d0[0], '  ... B counts istio_tcp_connections_failed_total{response_flags="DENY"}',
                 'before %r after %r' % (d0, d1))
            t.ok(d1[1] > d0[1], '  ... B counts zring_connections_refused_total{reason="denied"}',
                 'before %r after %r' % (d0, d1))

    def no_policy():
        expect('no policy: allowed', 0)

    def principals():
        set_policies([policy('allow-client', 'Allow', [[[{'principals': ['cluster.local/ns/default/sa/client']}]]])])
        expect('ALLOW principals [sa/client]: allowed', 0)
        set_policies([policy('allow-nobody', 'Allow', [[[{'principals': ['cluster.local/ns/default/sa/nobody']}]]])])
        expect('ALLOW principals [sa/nobody]: client denied, SOCKS5 0x02', 2)
        set_policies([policy('deny-client', 'Deny', [[[{'principals': ['cluster.local/ns/default/sa/client']}]]])])
        expect('DENY principals [sa/client]: denied', 2)
        set_policies([policy('deny-prefix', 'Deny', [[[{'principals': ['cluster.local/ns/default/*']}]]])])
        expect('DENY principals prefix cluster.local/ns/default/*: denied', 2)
        set_policies([policy('deny-not', 'Deny', [[[{'notPrincipals': ['cluster.local/ns/default/sa/client']}]]])])
        expect('DENY notPrincipals [sa/client]: allowed', 0)
        set_policies([policy('deny-spiffe', 'Deny', [[[{'principals': ['spiffe://cluster.local/ns/default/sa/client']}]]])])
        expect('principals are compared without spiffe:// (a spiffe:// pattern does not match)', 0)

    def namespaces():
        set_policies([policy('deny-ns', 'Deny', [[[{'namespaces': ['default']}]]])])
        expect('DENY namespaces [default]: denied', 2)
        set_policies([policy('allow-ns-prod', 'Allow', [[[{'namespaces': ['prod']}]]])])
        expect('ALLOW namespaces [prod] only: denied', 2)
        set_policies([policy('allow-ns-default', 'Allow', [[[{'namespaces': ['default']}]]])])
        expect('ALLOW namespaces [default]: allowed', 0)
        set_policies([policy('other-ns', 'Deny', [[[{'namespaces': ['default']}]]], namespace='prod')])
        expect('a DENY policy of another namespace does not apply', 0)
        set_policies([policy('global', 'Deny', [[[{'namespaces': ['default']}]]], scope='Global',
                             namespace='istio-system')])
        expect('a Global DENY policy in the root namespace applies', 2)

    def source_ips():
        set_policies([policy('deny-src', 'Deny', [[[{'sourceIps': ['%s/32' % CLIENT]}]]])])
        expect('DENY sourceIps [%s/32] (the original client, A binds its address): denied' % CLIENT, 2)
        expect('  ... another client workload (%s) of node A is allowed' % CLIENT2, 0, src=CLIENT2)
        set_policies([policy('deny-lo', 'Deny', [[[{'sourceIps': ['127.0.0.1/32', '%s/32' % z.HB_A_IP]}]]])])
        expect('DENY sourceIps of node A\'s own addresses does not hit the client (A binds the client\'s)', 0)
        set_policies([policy('allow-src', 'Allow', [[[{'sourceIps': ['127.0.4.0/24']}]]])])
        expect('ALLOW sourceIps [127.0.4.0/24]: allowed', 0)
        set_policies([policy('allow-not-src', 'Allow', [[[{'notSourceIps': ['%s/32' % CLIENT2]}]]])])
        expect('ALLOW notSourceIps [%s]: %s allowed' % (CLIENT2, CLIENT), 0)
        expect('ALLOW notSourceIps [%s]: %s denied' % (CLIENT2, CLIENT2), 2, src=CLIENT2)

    def dest_ports():
        set_policies([policy('deny-9000', 'Deny', [[[{'destinationPorts': [9000]}]]])])
        expect('DENY destinationPorts [9000]: service port 80 (-> 8080) allowed', 0)
        expect('DENY destinationPorts [9000]: service port 90 (-> 9000) denied', 2, port=90)
        expect('DENY destinationPorts [9000]: workload IP port 9000 denied', 2, dst=SERVER, port=9000)
        set_policies([policy('allow-8080', 'Allow', [[[{'destinationPorts': [8080]}],
                                                       [{'principals': ['cluster.local/ns/default/sa/client']}]]])])
        expect('ALLOW port 8080 AND principal: allowed on 8080', 0)
        expect('ALLOW port 8080 AND principal: denied on 9000', 2, port=90)

    def live_recheck():
        set_policies([])
        keep = z.socks5_connect(px, VIP, 80, src=CLIENT)
        doomed = z.socks5_connect(px, VIP, 90, src=CLIENT)
        doomed2 = z.socks5_connect(px, VIP, 90, src=CLIENT2)
        for s in (keep, doomed, doomed2):
            s.sendall(b'hello')
            z.recv_exact(s, 5)
        streams0 = b.metric('zring_hbone_streams_active')
        set_policies([policy('deny-9000', 'Deny', [[[{'destinationPorts': [9000]}]]])])
        t0 = time.monotonic()
        r = z.outcome(doomed, 5)
        dt = time.monotonic() - t0
        t.ok(r in ('reset', 'eof') and dt < 3,
             'policy change: a live connection now denied is closed (client sees reset/EOF)',
             'client saw %r after %.2f s' % (r, dt))
        t.diag('denied live connection: %r after %.2f s' % (r, dt))
        r2 = z.outcome(doomed2, 3)
        t.ok(r2 in ('reset', 'eof'), '  ... and the second now-denied connection too', 'saw %r' % (r2,))
        try:
            keep.sendall(b'still')
            got = z.recv_exact(keep, 5)
        except (OSError, EOFError) as e:
            got = repr(e)
        t.is_(got, b'still', 'the allowed live connection keeps working')
        t.ok(z.wait_until(lambda: b.metric('zring_hbone_streams_active') <= streams0 - 2, 3, 0.1),
             'B closed the denied streams (zring_hbone_streams_active dropped by 2)',
             'before %r now %r' % (streams0, b.metric('zring_hbone_streams_active')))
        keep.close()
        for s in (doomed, doomed2):
            s.close()
        expect('a new connection to port 9000 is denied', 2, port=90)
        set_policies([])
        expect('policies removed: port 9000 allowed again', 0, port=90)

    def plaintext():
        """Inbound plaintext (15006): connections to 127.0.5.2:8081 are DNATed to B's
        127.0.5.2:15006 (SO_ORIGINAL_DST); no principal, source IP = the TCP peer."""
        if os.geteuid() != 0 or not z.shutil.which('iptables'):
            t.skip('inbound plaintext authorization', 'needs root and iptables')
            return
        ipt = z.Iptables()
        ipt.append('nat', 'OUTPUT', '-s', '127.0.4.0/24', '-d', '%s/32' % SERVER, '-p', 'tcp', '--dport', '8081',
                   '-m', 'mark', '!', '--mark', '0x539', '-j', 'DNAT', '--to-destination', '%s:15006' % SERVER)

        def pt(src=CLIENT):
            try:
                s = z.connect(SERVER, 8081, src=src, timeout=5)
            except OSError as e:
                return 'connect: %r' % e
            try:
                s.sendall(b'plain')
                r = z.outcome(s, 5)
            except OSError as e:
                r = repr(e)
            s.close()
            return 'echo' if r == ('data', b'plain') else r

        try:
            set_policies([])
            t.is_(pt(), 'echo', 'plaintext inbound via 15006 with no policy: echo works')
            d0 = b.refused('denied')
            set_policies([policy('deny-src', 'Deny', [[[{'sourceIps': ['%s/32' % CLIENT]}]]])])
            r = pt()
            t.ok(r in ('eof', 'reset'), 'plaintext: DENY sourceIps [%s] closes the connection' % CLIENT, 'saw %r' % (r,))
            t.is_(pt(CLIENT2), 'echo', 'plaintext: another source IP is still allowed')
            set_policies([policy('allow-client', 'Allow', [[[{'principals': ['cluster.local/ns/default/sa/client']}]]])])
            r = pt()
            t.ok(r in ('eof', 'reset'), 'plaintext: ALLOW by principal denies a connection without a principal',
                 'saw %r' % (r,))
            t.cmp(b.refused('denied') - d0, '>=', 2, 'plaintext denials counted in zring_connections_refused_total{reason="denied"}')
            lab = z.mfind(b.metrics(), 'istio_tcp_connections_failed_total', reporter='destination',
                          response_flags='DENY', connection_security_policy='unknown')
            t.ok(lab, 'plaintext denial counted with connection_security_policy="unknown"')
        finally:
            ipt.cleanup()
            set_policies([])

    t.subtest('no policy', no_policy)
    t.subtest('principals', principals)
    t.subtest('namespaces', namespaces)
    t.subtest('source IPs', source_ips)
    t.subtest('destination ports', dest_ports)
    t.subtest('live re-check on policy change', live_recheck)
    t.subtest('inbound plaintext', plaintext)
    t.cmp(z.tls_failures(a) + z.tls_failures(b), '==', 0, 'no TLS handshake failures (denials are HTTP 401)')
    t.ok(a.alive() and b.alive(), 'both zring nodes still running at the end')


z.Tap('hbone-authz', timeout=300).run(main)
