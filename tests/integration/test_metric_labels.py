#!/usr/bin/python3
"""istio_tcp_* label values as ztunnel fills them, on both reporters of two
real HBONE nodes (A 127.51.0.2, B 127.51.0.3; workloads 127.51.1.x on A,
127.51.2.x on B, VIP 127.51.10.2):
- *_workload is the workloadName (the pod name when that is empty), *_app and
  *_canonical_service the canonicalName, *_version and *_canonical_revision
  the canonicalRevision, the four locality labels from locality, principals
  are full SPIFFE URIs, destination_service on B from the workload's services;
- failures: opened with response_flags "-", closed and failed with the flag:
  a policy deny (B: DENY; A: CONNECT, as ztunnel's source reporter says for a
  401), a refused upstream (CONNECT on both), a server presenting the wrong
  identity (A: TLS_FAILURE; B: nothing);
- istio_tcp_sockets_open{reporter} rises and falls, process_open_fds and
  process_max_fds match the process; promtool check metrics is clean."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

A_IP, B_IP = '127.51.0.2', '127.51.0.3'
CLIENT = '127.51.1.2'
SERVER = '127.51.2.2'
DENIED = '127.51.2.3'
CLOSED = '127.51.2.4'
WRONG = '127.51.2.5'
VIP = '127.51.10.2'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')
DENIED_ID = z.spiffe('denied', ns='locked')
WRONG_ID = z.spiffe('server2')

TCP = ('istio_tcp_connections_opened_total', 'istio_tcp_connections_closed_total',
       'istio_tcp_connections_failed_total', 'istio_tcp_received_bytes_total', 'istio_tcp_sent_bytes_total')


def state(wrong_sa):
    loc = {'region': 'us-east1', 'zone': 'us-east1-b', 'subzone': 'rack1'}
    wls = [
        z.workload('client-7d9f-x2x', CLIENT, node='node-a', protocol='HBONE', sa='client',
                   workloadName='client', canonicalName='client-app', canonicalRevision='v2', locality=loc),
        # no workloadName: the pod name stands in
        z.workload('server-pod-0', SERVER, node='node-b', protocol='HBONE', sa='server',
                   canonicalName='server-app', canonicalRevision='v3',
                   locality={'region': 'eu-west1', 'zone': 'eu-west1-c'},
                   services={z.svc_key('lbl-echo'): {80: 8080}}),
        z.workload('denied-pod-0', DENIED, node='node-b', protocol='HBONE', sa='denied', namespace='locked',
                   workloadName='denied', canonicalName='denied-app', canonicalRevision='v1'),
        z.workload('closed-pod-0', CLOSED, node='node-b', protocol='HBONE', sa='server',
                   workloadName='closed', canonicalName='', canonicalRevision=''),
        z.workload('wrong-pod-0', WRONG, node='node-b', protocol='HBONE', sa=wrong_sa, workloadName='wrong'),
    ]
    svcs = [z.service('lbl-echo', VIP, {80: 8080})]
    pols = [{'name': 'deny-all', 'namespace': 'locked', 'scope': 'Namespace', 'action': 'Deny',
             'rules': [[[{'principals': ['cluster.local/ns/default/sa/client']}]]]}]
    return wls, svcs, pols


def labels_of(node, **sel):
    out = {}
    for name in TCP:
        for lab, v in z.mfind(node.metrics(), name, **sel):
            out.setdefault(tuple(sorted(lab.items())), {})[name] = v
    return out


def main(t):
    certs = z.make_certs()
    z.issue_leaf(certs, 'denied', DENIED_ID)
    z.EchoServer(SERVER, 8080)
    z.EchoServer(DENIED, 8080)
    z.EchoServer(WRONG, 8080)
    b = z.hbone_node(t, 'node-b', B_IP, certs, [(SERVER_ID, 'server'), (DENIED_ID, 'denied')], *state('server'))
    # A believes the wrong-pod runs as sa/server2; B presents sa/server for it
    a = z.hbone_node(t, 'node-a', A_IP, certs, [(CLIENT_ID, 'client')], *state('server2'))
    if not (b.start() and a.start()):
        return

    def sockets(n, reporter):
        return n.metric('istio_tcp_sockets_open', reporter=reporter)

    s0 = sockets(a, 'source')
    code, s = z.socks5_try(a.socks5, VIP, 80, src=CLIENT, timeout=10)
    t.is_(code, 0, 'mTLS connection A -> B through the service VIP')
    if s:
        s.sendall(b'hello')
        t.is_(z.recv_exact(s, 5), b'hello', 'echo over HBONE')
        t.cmp(sockets(a, 'source') - s0, '>=', 1, 'A: istio_tcp_sockets_open{reporter="source"} rises while open')
        t.cmp(sockets(b, 'destination'), '>=', 1, 'B: istio_tcp_sockets_open{reporter="destination"} >= 1 while open')
        s.close()
        t.ok(z.wait_until(lambda: sockets(a, 'source') == s0, 5),
             'A: istio_tcp_sockets_open{reporter="source"} falls back once closed', repr(sockets(a, 'source')))
    for ip in (DENIED, CLOSED, WRONG):
        code, x = z.socks5_try(a.socks5, ip, 8080, src=CLIENT, timeout=10)
        t.ok(code not in (0, 'timeout'), 'A -> %s:8080 refused (SOCKS5 reply %r)' % (ip, code))
        if x:
            x.close()

    cluster = 'Kubernetes'
    src = dict(source_workload='client', source_canonical_service='client-app', source_canonical_revision='v2',
               source_workload_namespace='default', source_app='client-app', source_version='v2',
               source_cluster=cluster, source_region='us-east1', source_zone='us-east1-b',
               request_protocol='tcp', connection_security_policy='mutual_tls')
    no_svc = dict(destination_service='unknown', destination_service_namespace='unknown',
                  destination_service_name='unknown')
    dst = {
        'server': dict(destination_service=z.hostname('lbl-echo'), destination_service_namespace='default',
                       destination_service_name='lbl-echo', destination_workload='server-pod-0',
                       destination_canonical_service='server-app', destination_canonical_revision='v3',
                       destination_workload_namespace='default', destination_principal=SERVER_ID,
                       destination_app='server-app', destination_version='v3', destination_cluster=cluster,
                       destination_region='eu-west1', destination_zone='eu-west1-c'),
        'denied': dict(no_svc, destination_workload='denied', destination_canonical_service='denied-app',
                       destination_canonical_revision='v1', destination_workload_namespace='locked',
                       destination_principal=DENIED_ID, destination_app='denied-app', destination_version='v1',
                       destination_cluster=cluster, destination_region='unknown', destination_zone='unknown'),
        'closed': dict(no_svc, destination_workload='closed', destination_canonical_service='unknown',
                       destination_canonical_revision='unknown', destination_workload_namespace='default',
                       destination_principal=SERVER_ID, destination_app='unknown', destination_version='unknown',
                       destination_cluster=cluster, destination_region='unknown', destination_zone='unknown'),
        'wrong': dict(no_svc, destination_workload='wrong', destination_canonical_service='wrong-pod-0',
                      destination_canonical_revision='v1', destination_workload_namespace='default',
                      destination_principal=WRONG_ID, destination_app='wrong-pod-0', destination_version='v1',
                      destination_cluster=cluster, destination_region='unknown', destination_zone='unknown'),
    }
    # (destination, reporter) -> the flag of the failure (None: success)
    cases = [('server', 'source', None), ('server', 'destination', None),
             ('denied', 'source', 'CONNECT'), ('denied', 'destination', 'DENY'),
             ('closed', 'source', 'CONNECT'), ('closed', 'destination', 'CONNECT'),
             ('wrong', 'source', 'TLS_FAILURE')]

    def want_series(d, reporter, flag):
        base = dict(src, reporter=reporter, source_principal=CLIENT_ID, **dst[d])
        if flag is None:
            return {tuple(sorted(dict(base, response_flags='-').items())): {
                TCP[0]: 1, TCP[1]: 1, TCP[2]: 0}}
        return {tuple(sorted(dict(base, response_flags='-').items())): {TCP[0]: 1, TCP[1]: 0, TCP[2]: 0},
                tuple(sorted(dict(base, response_flags=flag).items())): {TCP[0]: 0, TCP[1]: 1, TCP[2]: 1}}

    def check(d, reporter, flag):
        node = a if reporter == 'source' else b
        wl = dst[d]['destination_workload']
        want = want_series(d, reporter, flag)
        got = {}
        for _ in range(50):
            got = labels_of(node, reporter=reporter, destination_workload=wl)
            if all(k in got and all(got[k].get(n, 0) == v for n, v in c.items()) for k, c in want.items()):
                break
            time.sleep(0.1)
        what = '%s reporter for %s (%s)' % (reporter, d, flag or 'success')
        t.is_(sorted(got), sorted(want), 'every label value of the istio_tcp_* series, %s' % what)
        for k, c in want.items():
            flags = dict(k)['response_flags']
            t.is_({n: got.get(k, {}).get(n, 0) for n in c}, c,
                  '  ... opened/closed/failed with response_flags="%s", %s' % (flags, what))
        if flag is None:
            k = next(iter(want))
            t.cmp(got.get(k, {}).get(TCP[3], 0), '>=', 5, '  ... received bytes counted, %s' % what)

    for d, reporter, flag in cases:
        check(d, reporter, flag)
    t.is_(labels_of(b, destination_workload='wrong'), {}, 'B: no istio_tcp_* series for the failed handshake')

    for n in (a, b):
        m = n.metrics()
        fds, maxfds = z.msum(m, 'process_open_fds'), z.msum(m, 'process_max_fds')
        real = n.fd_count()
        t.ok(abs(fds - real) <= 3, '%s: process_open_fds %s ~ the process\'s %s' % (n.name, fds, real))
        soft = None
        with open('/proc/%d/limits' % n.pid) as f:
            for line in f:
                if line.startswith('Max open files'):
                    soft = int(line.split()[3])
        t.is_(maxfds, soft, '%s: process_max_fds is RLIMIT_NOFILE (soft)' % n.name)
        rc, out = z.promtool_check(n.metrics_text())
        if rc is None:
            t.skip('%s: promtool check metrics' % n.name, out)
        else:
            t.is_(rc, 0, '%s: promtool check metrics clean' % n.name)
            if rc:
                t.diag(out[:2000])
    a.stop()
    b.stop()


if __name__ == '__main__':
    z.Tap('test_metric_labels', timeout=120).run(main)
