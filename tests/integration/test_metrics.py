#!/usr/bin/python3
"""Observability: istio_tcp_* counters reflect known transfers (ztunnel labels),
promtool accepts /metrics and /stats/prometheus, readiness, /config_dump JSON,
`zring ctl workloads|services`, POST /logging?level=debug."""

import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.1.2'
UP = 10 * z.MiB
DOWN = 3 * z.MiB
CONNS = 3
SVC_HOST = z.hostname('bulk')


def main(t):
    bulk = z.BulkServer('127.0.2.5', 9000)
    z.EchoServer('127.0.2.3', 8080)
    node = z.Node(t, workloads=[
        z.workload('client', CLIENT),
        z.workload('other', '127.0.1.3'),
        z.workload('bulk-server', '127.0.2.5', node='node-b', services={z.svc_key('bulk'): {80: 9000}}),
        z.workload('echo-server', '127.0.2.3', node='node-b', services={z.svc_key('echo'): {80: 8080}}),
    ], services=[
        z.service('bulk', '127.10.0.2', {80: 9000}),
        z.service('echo', '127.10.0.1', {80: 8080}),
    ])
    if not node.start():
        return
    px = node.socks5

    def readiness():
        st, body = node.http('readiness', 'GET', '/healthz/ready')
        t.is_(st, 200, 'GET /healthz/ready: 200')
        t.ok(body.strip() == b'ready', 'readiness body is "ready"', repr(body[:100]))

    def counters():
        m0 = node.metrics()
        sel = dict(reporter='source', source_workload='client', destination_service=SVC_HOST)
        base = {k: z.msum(m0, 'istio_tcp_%s' % k, **sel) for k in
                ('connections_opened_total', 'connections_closed_total', 'received_bytes_total',
                 'sent_bytes_total')}
        for i in range(CONNS):
            s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
            ok, detail, _ = z.bulk_upload(s, UP, seed=40 + i)
            s.close()
            t.ok(ok, 'upload %d byte-exact' % i, detail)
            s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
            ok, detail, _ = z.bulk_download(s, bulk, DOWN, seed=50 + i)
            s.close()
            t.ok(ok, 'download %d byte-exact' % i, detail)
        z.wait_until(lambda: node.metric('zring_worker_connections_active') == 0, 5, 0.1)
        m = node.metrics()

        def d(k):
            return z.msum(m, 'istio_tcp_%s' % k, **sel) - base[k]
        opened, closed = d('connections_opened_total'), d('connections_closed_total')
        recv, sent = d('received_bytes_total'), d('sent_bytes_total')
        t.diag('deltas: opened %d closed %d received_bytes %d sent_bytes %d (client sent %d, received %d)' %
               (opened, closed, recv, sent, CONNS * UP, CONNS * DOWN))
        n = 2 * CONNS
        t.is_(opened, n, 'istio_tcp_connections_opened_total{reporter="source",source_workload="client",'
              'destination_service="%s"} +%d' % (SVC_HOST, n))
        t.is_(closed, n, 'istio_tcp_connections_closed_total +%d' % n)
        # client->upstream: UP per upload (+3 header bytes) and the DOWN command line;
        # upstream->client: DOWN per download (+ the hash reply line)
        to_up = CONNS * UP
        to_client = CONNS * DOWN
        t.cmp(recv + sent, '>=', to_up + to_client, 'received+sent bytes cover both directions')
        t.cmp(max(recv, sent), '>=', to_up, 'one byte counter covers the %d MiB uploaded' % (to_up // z.MiB))
        t.cmp(min(recv, sent), '>=', to_client, 'the other covers the %d MiB downloaded' % (to_client // z.MiB))
        t.cmp(recv + sent, '<=', to_up + to_client + 64 * 1024 * CONNS, 'and not much more')
        t.diag('direction: received_bytes_total %s the upload (ztunnel: bytes received from the client)' %
               ('counts' if recv >= to_up else 'does NOT count'))
        # label set
        series = z.mfind(m, 'istio_tcp_connections_opened_total', **sel)
        t.ok(series, 'an istio_tcp_connections_opened_total series with reporter="source"')
        if series:
            labels = series[0][0]
            t.diag('labels: %s' % json.dumps(labels, sort_keys=True))
            for k, want in [('request_protocol', 'tcp'), ('connection_security_policy', 'unknown'),
                            ('source_workload_namespace', 'default'),
                            ('destination_service_namespace', 'default'),
                            ('destination_service_name', 'bulk'),
                            ('destination_workload', 'bulk-server'),
                            # plaintext: no verified certificate, so no source principal
                            # (ztunnel); the destination's is its workload's identity
                            ('source_principal', 'unknown'),
                            ('destination_principal', 'spiffe://cluster.local/ns/default/sa/bulk-server')]:
                t.is_(labels.get(k), want, 'label %s="%s"' % (k, want))
            for k in ('source_principal', 'source_app', 'source_version', 'source_cluster',
                      'destination_workload_namespace', 'destination_principal', 'destination_app',
                      'destination_version', 'destination_cluster', 'response_flags'):
                t.ok(k in labels, 'label %s present' % k, 'labels %r' % labels)
        b = z.mfind(m, 'istio_build', component='zring')
        t.ok(b and b[0][0].get('tag'), 'istio_build{component="zring",tag=...} present', repr(b))
        for name in ('zring_worker_connections_active', 'zring_connections_refused_total'):
            t.ok(z.mfind(m, name), '%s present' % name)

    def failed_counter():
        m0 = node.metrics()
        code, s = z.socks5_try(px, '127.0.2.3', 9999, src=CLIENT)
        t.is_(code, 5, 'connect to a closed port refused (0x05)')
        time.sleep(0.2)
        m = node.metrics()
        d = (z.msum(m, 'istio_tcp_connections_failed_total', reporter='source', source_workload='client') -
             z.msum(m0, 'istio_tcp_connections_failed_total', reporter='source', source_workload='client'))
        t.cmp(d, '>=', 1, 'istio_tcp_connections_failed_total{reporter="source"} counts the failed connect')

    def promtool():
        for path in ('/metrics', '/stats/prometheus'):
            st, body = node.http('metrics', 'GET', path)
            t.is_(st, 200, 'GET %s: 200' % path)
            rc, out = z.promtool_check(body.decode(errors='replace'))
            if rc is None:
                t.skip('promtool check metrics %s' % path, out)
            else:
                t.is_(rc, 0, 'promtool check metrics accepts %s' % path)
                if rc:
                    t.diag(out[:2000])
        c = http.client.HTTPConnection(*node.addr('metrics'), timeout=5)
        c.request('GET', '/metrics')
        r = c.getresponse()
        ctype = r.getheader('Content-Type') or ''
        r.read()
        c.close()
        t.ok(ctype.startswith('text/plain') and '0.0.4' in ctype,
             'Content-Type text/plain; version=0.0.4', repr(ctype))

    def config_dump():
        try:
            dump = node.config_dump()
        except Exception as e:
            t.ok(False, '/config_dump is JSON', repr(e))
            return
        t.ok(isinstance(dump, dict), '/config_dump is a JSON object')
        for k in ('workloads', 'services', 'policies', 'connections'):
            t.ok(k in dump, '/config_dump has "%s"' % k, 'keys %r' % list(dump))
        names = sorted(w.get('name') for w in dump.get('workloads', []) if isinstance(w, dict))
        t.is_(names, ['bulk-server', 'client', 'echo-server', 'other'], '/config_dump lists the workloads')
        hosts = sorted(s.get('hostname') for s in dump.get('services', []) if isinstance(s, dict))
        t.is_(hosts, [z.hostname('bulk'), z.hostname('echo')], '/config_dump lists the services')
        # a live connection shows up
        s = z.socks5_connect(px, '127.10.0.1', 80, src=CLIENT)
        s.sendall(b'x')
        z.recv_exact(s, 1)
        conns = node.config_dump().get('connections', [])
        t.ok(len(conns) >= 1, '/config_dump lists a live connection', repr(conns)[:500])
        if conns:
            t.diag('connection entry: %s' % json.dumps(conns[0])[:400])
        s.close()
        st, body = node.http('admin', 'GET', '/')
        t.is_(st, 200, 'admin GET / (index): 200')
        st, body = node.http('admin', 'GET', '/no/such/page')
        t.is_(st, 404, 'admin unknown path: 404')

    def ctl():
        for sub, want in (('workloads', ['client', 'other', 'bulk-server', 'echo-server']),
                          ('services', ['bulk', 'echo', '127.10.0.2', '127.10.0.1']),
                          ('connections', []), ('stats', []), ('policies', [])):
            rc, out, err = node.ctl(sub)
            t.is_(rc, 0, '`zring ctl %s` exits 0' % sub)
            missing = [w for w in want if w not in out]
            if want:
                t.ok(not missing, '`zring ctl %s` output names %s' % (sub, ', '.join(want)),
                     'missing %r in:\n%s%s' % (missing, out[:1500], err[:500]))
        rc, out, err = z.run_zring(['ctl', 'workloads', '--admin', '127.0.0.2:1'], timeout=10)
        t.ok(rc not in (0, None), '`zring ctl` against a closed admin port fails (non-zero)',
             'rc %r' % rc)

    def logging():
        off = node.log_size()
        st, body = node.http('admin', 'POST', '/logging?level=debug')
        t.is_(st, 200, 'POST /logging?level=debug: 200')
        s = z.socks5_connect(px, '127.10.0.1', 80, src=CLIENT)
        s.sendall(b'x')
        z.recv_exact(s, 1)
        s.close()
        time.sleep(0.5)
        recs = node.log_records(off)
        dbg = [r for r in recs if str(r.get('level', '')).lower() == 'debug']
        t.ok(dbg, 'debug lines appear after switching to debug (a SOCKS5 connection was made)',
             'log since: %r' % recs[-5:])
        bad = [r for r in recs if '_raw' in r]
        t.ok(not bad, 'every log line is a JSON object', repr(bad[:3]))
        st, body = node.http('admin', 'POST', '/logging?level=info')
        t.is_(st, 200, 'POST /logging?level=info: 200')
        st, body = node.http('admin', 'POST', '/logging?level=bogus')
        t.ok(st == 400, 'POST /logging?level=bogus: 400', 'got %r' % st)

    t.subtest('readiness', readiness)
    t.subtest('counters', counters)
    t.subtest('failed counter', failed_counter)
    t.subtest('promtool', promtool)
    t.subtest('config_dump', config_dump)
    t.subtest('ctl', ctl)
    t.subtest('logging', logging)
    t.ok(node.alive(), 'zring still running at the end')


z.Tap('metrics', timeout=120).run(main)
