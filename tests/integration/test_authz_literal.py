#!/usr/bin/python3
"""Policy string matches are literal when tagged, on real HBONE between two
zring nodes (A 127.41.0.1, B 127.41.0.2; client workloads 127.41.1.x on A,
server 127.41.2.2 on B): an ALLOW {Exact: "cluster.local/ns/default/sa/clien*"}
(or !Exact ...) is meant for a principal spelled with a '*' and denies
sa/client (0.3 read it as a prefix and let sa/client in), while the plain
string "cluster.local/ns/default/sa/clien*" is the CRD shorthand for a prefix
and allows it. /config_dump shows the match as ztunnel does ({"Exact": ...}).

Then inbound plaintext (B's 15006, reached through an iptables DNAT; root):
a plaintext connection has no identity, so, as in ztunnel (src/rbac.rs), a
DENY on sourceIps naming the connecting address stops it, a DENY on
principals, namespaces or serviceAccounts does not (those never match
without an identity) while the same DENY stops sa/client over HBONE, and a
DENY on notPrincipals / notNamespaces does stop it (its empty identity is in
no list, so the not* match holds)."""

import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

A_IP = '127.41.0.1'
B_IP = '127.41.0.2'
CLIENT = '127.41.1.2'
CLIENT2 = '127.41.1.3'
SERVER = '127.41.2.2'
VIP = '127.41.10.1'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')
CLIEN_STAR = 'cluster.local/ns/default/sa/clien*'


def policy_yaml(name, action, match_flow):
    """One policy as YAML text; match_flow is the match map in flow style, so
    that it may carry serde_yaml's tags (!Exact ...), which a dict cannot."""
    return ('- name: %s\n  namespace: default\n  scope: Namespace\n  action: %s\n'
            '  rules: [[[%s]]]\n' % (name, action, match_flow))


def main(t):
    certs = z.make_certs()
    z.EchoServer(SERVER, 8080)
    z.EchoServer(SERVER, 8081)   # reached in plaintext through B's 15006
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('other', CLIENT2, node='node-a', protocol='HBONE'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE',
                   services={z.svc_key('lit-echo'): {80: 8080}}),
    ]
    svcs = [z.service('lit-echo', VIP, {80: 8080}, sans=[SERVER_ID])]
    b = z.hbone_node(t, 'node-b', B_IP, certs, [(SERVER_ID, 'server')], wls, svcs, plaintext=True)
    a = z.hbone_node(t, 'node-a', A_IP, certs, [(CLIENT_ID, 'client'), (z.spiffe('other'), 'other')], wls, svcs)
    if not b.start() or not a.start():
        return
    base_state = copy.deepcopy(b.state)
    del base_state['policies']
    base_text = z.dump_yaml(base_state)

    def set_policies(pols):
        """pols: [(name, action, match_flow)]; waits until B and its workers run them."""
        text = base_text + 'policies:' + (' []\n' if not pols else '\n' + ''.join(policy_yaml(*p) for p in pols))
        epoch0 = max([v for name, _, v in b.metrics() if name == 'zring_worker_config_epoch'] or [0])
        b.write_state(text)
        b.reload()
        names = sorted(p[0] for p in pols)

        def applied():
            try:
                got = b.config_dump().get('policies') or []
                return sorted(p.get('name') for p in got if isinstance(p, dict)) == names
            except Exception:
                return False
        if not t.ok(z.wait_until(applied, 5, 0.1), 'B runs policies %r' % names):
            b.dump_log(t)

        # ... and every worker runs the new config (a config epoch past the old one)
        def workers_caught_up():
            eps = [v for name, _, v in b.metrics() if name == 'zring_worker_config_epoch']
            return bool(eps) and min(eps) > epoch0
        t.ok(z.wait_until(workers_caught_up, 5, 0.05), '  ... on every worker')

    def hbone(src=CLIENT):
        """SOCKS5 on A -> HBONE -> B -> echo: 0 (echo works) or the SOCKS5 reply code."""
        return z.socks5_echo_probe(a.socks5, VIP, 80, src=src)

    def literal():
        set_policies([])
        t.is_(hbone(), 0, 'no policy: sa/client reaches the server over HBONE')
        d0 = b.refused('denied')
        set_policies([('allow-literal', 'Allow', '{principals: [{Exact: "%s"}]}' % CLIEN_STAR)])
        t.is_(hbone(), 2, 'ALLOW principals [{Exact: "%s"}]: sa/client denied (literal, no prefix), '
              'SOCKS5 0x02' % CLIEN_STAR)
        t.cmp(b.refused('denied') - d0, '>=', 1, '  ... B counts zring_connections_refused_total{reason="denied"}')
        got = (b.config_dump().get('policies') or [{}])[0]
        t.is_((got.get('rules') or [[[{}]]])[0][0][0].get('principals'), [{'Exact': CLIEN_STAR}],
              '  ... /config_dump shows the match as ztunnel does, {"Exact": ...}')
        set_policies([('allow-literal-tag', 'Allow', '{principals: [!Exact "%s"]}' % CLIEN_STAR)])
        t.is_(hbone(), 2, 'ALLOW principals [!Exact "%s"] (serde_yaml tag): sa/client denied' % CLIEN_STAR)
        set_policies([('allow-shorthand', 'Allow', '{principals: ["%s"]}' % CLIEN_STAR)])
        t.is_(hbone(), 0, 'ALLOW principals ["%s"] (plain string: CRD prefix shorthand): sa/client allowed'
              % CLIEN_STAR)
        t.is_(hbone(CLIENT2), 2, '  ... and sa/other, which the prefix does not cover, denied')
        set_policies([('allow-prefix', 'Allow', '{principals: [{Prefix: "cluster.local/ns/default/sa/clien"}]}')])
        t.is_(hbone(), 0, 'ALLOW principals [{Prefix: ".../sa/clien"}]: sa/client allowed')
        set_policies([('deny-literal', 'Deny', '{namespaces: [!Exact "defaul*"]}')])
        t.is_(hbone(), 0, 'DENY namespaces [!Exact "defaul*"]: namespace default is not denied')
        set_policies([('deny-shorthand', 'Deny', '{namespaces: ["defaul*"]}')])
        t.is_(hbone(), 2, 'DENY namespaces ["defaul*"] (shorthand prefix): namespace default denied')
        set_policies([])

    def plaintext():
        """Connections from 127.41.1.x to SERVER:8081 are DNATed to B's SERVER:15006
        (SO_ORIGINAL_DST); no identity, source IP = the TCP peer."""
        if os.geteuid() != 0 or not z.shutil.which('iptables'):
            t.skip('inbound plaintext authorization', 'needs root and iptables')
            return
        ipt = z.Iptables()
        ipt.append('nat', 'OUTPUT', '-s', '127.41.1.0/24', '-d', '%s/32' % SERVER, '-p', 'tcp', '--dport', '8081',
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

        def stopped(r):
            return r in ('eof', 'reset')

        try:
            set_policies([])
            t.is_(pt(), 'echo', 'plaintext via 15006, no policy: echo works')
            d0 = b.refused('denied')
            set_policies([('deny-src', 'Deny', '{sourceIps: [%s/32]}' % CLIENT)])
            r = pt()
            t.ok(stopped(r), 'plaintext: DENY sourceIps [%s/32] (the connecting address) stops it' % CLIENT,
                 'saw %r' % (r,))
            t.cmp(b.refused('denied') - d0, '>=', 1, '  ... counted in zring_connections_refused_total{reason="denied"}')
            t.is_(pt(CLIENT2), 'echo', '  ... a connection from %s is not stopped' % CLIENT2)
            set_policies([('deny-not-src', 'Deny', '{notSourceIps: [%s/32]}' % CLIENT2)])
            t.ok(stopped(pt()), 'plaintext: DENY notSourceIps [%s] stops %s' % (CLIENT2, CLIENT))
            t.is_(pt(CLIENT2), 'echo', '  ... and lets %s through' % CLIENT2)

            # Identity keys never match a connection without an identity.
            identity_denies = (
                ('{principals: ["cluster.local/ns/default/sa/client"]}', 'principals [sa/client]'),
                ('{principals: ["*"]}', 'principals ["*"] (presence)'),
                ('{namespaces: [default]}', 'namespaces [default]'),
                ('{namespaces: [!Presence []]}', 'namespaces [!Presence []]'),
                ('{serviceAccounts: [{namespace: default, serviceAccount: client}]}',
                 'serviceAccounts [default/client]'),
            )
            for i, (flow, what) in enumerate(identity_denies):
                set_policies([('deny-id-%d' % i, 'Deny', flow)])
                t.is_(pt(), 'echo', 'plaintext: DENY %s does not stop it (no identity to match)' % what)
                t.is_(hbone(), 2, '  ... while the same DENY stops sa/client over HBONE')

            # ... so their not* forms always do (ztunnel: the connection's
            # empty principal/namespace is in no not* list).
            not_identity_denies = (
                ('{notPrincipals: ["cluster.local/ns/default/sa/client"]}', 'notPrincipals [sa/client]'),
                ('{notNamespaces: [default]}', 'notNamespaces [default]'),
                ('{notServiceAccounts: [default/client]}', 'notServiceAccounts [default/client]'),
            )
            for i, (flow, what) in enumerate(not_identity_denies):
                set_policies([('deny-not-id-%d' % i, 'Deny', flow)])
                t.ok(stopped(pt()), 'plaintext: DENY %s stops it (an absent identity is not in the list)' % what)
                t.is_(hbone(), 0, '  ... while sa/client over HBONE is allowed')

            set_policies([('deny-id-and-src', 'Deny', '{principals: ["*"], sourceIps: [%s/32]}' % CLIENT)])
            t.is_(pt(), 'echo', 'plaintext: DENY principals ["*"] AND sourceIps: the principal half never '
                  'matches, not stopped')
        finally:
            ipt.cleanup()
            set_policies([])

    t.subtest('tagged matches are literal (HBONE)', literal)
    t.subtest('inbound plaintext: what a connection without identity matches', plaintext)
    t.cmp(z.tls_failures(a) + z.tls_failures(b), '==', 0, 'no TLS handshake failures (denials are HTTP 401)')
    t.ok(a.alive() and b.alive(), 'both zring nodes still running at the end')


z.Tap('authz-literal', timeout=120).run(main)
