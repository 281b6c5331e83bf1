#!/usr/bin/python3
"""A workload with `status: Unhealthy` gets no new connections from service
load balancing (ztunnel: state/service.rs should_include_endpoint), while a
connection to its own IP still reaches it; a SIGHUP that makes it Healthy
brings it back; a SIGHUP with `status: Bogus` keeps the running state (error
logged with file:line:col and key, connections keep flowing). A waypoint
zring does not implement yet is named in a warning at load. Node on
127.46.0.2; client 127.46.1.1; endpoints A 127.46.2.1 and B 127.46.2.2
(plain TCP); VIP 127.46.10.1."""

import copy
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

NODE = '127.46.0.2'
CLIENT = '127.46.1.1'
EP_A = '127.46.2.1'
EP_B = '127.46.2.2'
VIP = '127.46.10.1'
N = 24


def name_server(name):
    """Answers every connection with its name, then echoes."""
    def fn(c, peer):
        c.sendall(name)
        while True:
            d = c.recv(4096)
            if not d:
                return
            c.sendall(d)
    return fn


def main(t):
    z.ScriptServer(EP_A, 8080, name_server(b'A'))
    z.ScriptServer(EP_B, 8080, name_server(b'B'))
    key = z.svc_key('lb')
    wl_b = z.workload('b', EP_B, node='node-b', services={key: {80: 8080}}, status='Unhealthy')
    node = z.Node(t, ip=NODE, state_in_file=True,
                  workloads=[z.workload('client', CLIENT),
                             z.workload('a', EP_A, node='node-b', services={key: {80: 8080}}, status='Healthy'),
                             wl_b],
                  services=[z.service('lb', VIP, {80: 8080})])
    if not node.start():
        return
    px = node.socks5

    def who(host, port):
        code, s = z.socks5_try(px, host, port, src=CLIENT, timeout=5)
        if code != 0:
            return 'refused %r' % (code,)
        try:
            got = z.recv_exact(s, 1)
            s.sendall(b'ping')
            return got.decode() if z.recv_exact(s, 4) == b'ping' else 'bad echo'
        except Exception as e:
            return repr(e)
        finally:
            s.close()

    def spread():
        seen = {}
        for _ in range(N):
            r = who(VIP, 80)
            seen[r] = seen.get(r, 0) + 1
        return seen

    def dump_status(name):
        for w in node.config_dump().get('workloads', []):
            if w.get('name') == name:
                return w.get('status')
        return None

    def unhealthy():
        seen = spread()
        t.is_(seen, {'A': N}, 'all %d connections to the VIP reach the healthy endpoint' % N)
        t.is_(who(EP_B, 8080), 'B', 'a connection to the Unhealthy workload\'s own IP still reaches it')
        d = node.config_dump()
        svc = [s for s in d.get('services', []) if s.get('name') == 'lb']
        eps = svc[0].get('endpoints') if svc else None
        t.is_(dump_status('b'), 'Unhealthy', '/config_dump: workload b status Unhealthy')
        status = {k: (v or {}).get('status') for k, v in eps.items()} if isinstance(eps, dict) else eps
        t.is_(status, {'cluster1//v1/Pod/default/a': 'Healthy', 'cluster1//v1/Pod/default/b': 'Unhealthy'},
              '/config_dump: the service\'s endpoints (as ztunnel: all, with their status)')

    def healthy_again():
        off = node.log_size()
        wl_b['status'] = 'Healthy'
        node.state['services'][0]['waypoint'] = {
            'destination': 'default/waypoint.default.svc.cluster.local', 'hboneMtlsPort': 15008}
        node.write_state()
        node.reload()
        t.ok(z.wait_until(lambda: dump_status('b') == 'Healthy', 5, 0.1), 'reload applied: b is Healthy')
        seen = spread()
        t.ok(seen.get('A', 0) > 0 and seen.get('B', 0) > 0 and seen.get('A') + seen.get('B') == N,
             'after SIGHUP making both healthy, both get connections', 'seen %r' % seen)
        warns = [r for r in node.log_records(off) if r.get('level') == 'warn'
                 and 'service %s sets waypoint' % key in r.get('msg', '')]
        t.is_(len(warns), 1, 'one warning names the service and its waypoint',)
        if warns:
            t.diag('warning: %s' % warns[0]['msg'])

    def bogus():
        off = node.log_size()
        bad = copy.deepcopy(node.state)
        bad['workloads'][1]['status'] = 'Bogus'
        text = z.dump_yaml(bad)
        node.write_state(text)
        node.reload()
        want_line = next(i for i, ln in enumerate(text.splitlines(), 1) if 'Bogus' in ln)
        pat = re.compile(r'state\.yaml:%d:\d+: workloads\[1\]\.status: unknown health status "Bogus"' % want_line)
        errs = z.wait_until(lambda: [r for r in node.log_records(off) if r.get('level') == 'error'
                                     and pat.search(r.get('msg', ''))], 5, 0.1)
        t.ok(errs, 'the bad status is logged with file:line:col and key',
             'log since reload: %r' % node.log_records(off)[-5:])
        t.ok(node.alive(), 'zring survives SIGHUP with status: Bogus')
        t.is_(dump_status('a'), 'Healthy', 'running state kept (a still Healthy)')
        seen = spread()
        t.ok(seen.get('A', 0) > 0 and seen.get('B', 0) > 0 and seen.get('A') + seen.get('B') == N,
             'connections keep flowing to both endpoints of the running state', 'seen %r' % seen)
        rc, out, err = z.run_zring(['check-config', node.config_path])
        t.is_(rc, 1, 'check-config on the bad state: exit 1')
        t.ok(re.search(r'state\.yaml:%d:\d+: workloads\[1\]\.status' % want_line, err),
             'check-config names file:line:col and key', 'stderr %r' % err[:300])

    def bad_tags():
        """Tagged matches zring rejects (ctl/policy.c): the reload fails, the
        running state stays."""
        base = copy.deepcopy(node.state)
        del base['policies']
        for what, match, msg in (
                ('unknown tag', 'principals: [!Regex "a.*"]', 'unknown string match !Regex'),
                ('tag on a non-string', 'destinationPorts: [!Exact 80]', 'destinationPorts takes port numbers')):
            off = node.log_size()
            text = z.dump_yaml(base) + (
                'policies:\n- name: deny-all\n  namespace: default\n  scope: Global\n  action: Deny\n'
                '  dryRun: false\n  rules: [[[{%s}]]]\n' % match)
            node.write_state(text)
            node.reload()
            line = len(text.splitlines())
            pat = re.compile(r'state\.yaml:%d:\d+: policies\[0\]\.rules\[0\]\[0\]\[0\]\.\w+\[0\]: .*%s'
                             % (line, re.escape(msg)))
            errs = z.wait_until(lambda: [r for r in node.log_records(off) if r.get('level') == 'error'
                                         and pat.search(r.get('msg', ''))], 5, 0.1)
            t.ok(errs, '%s: SIGHUP logs file:line:col, key and "%s"' % (what, msg),
                 'log since reload: %r' % node.log_records(off)[-5:])
            t.is_(node.config_dump().get('policies'), [], '%s: running state kept (no policy)' % what)
            seen = spread()
            t.is_(sum(seen.get(k, 0) for k in 'AB'), N, '%s: connections keep flowing' % what)
        node.write_state(z.dump_yaml(node.state))

    t.subtest('unhealthy endpoint', unhealthy)
    t.subtest('healthy again after SIGHUP', healthy_again)
    t.subtest('bad status on SIGHUP', bogus)
    t.subtest('bad tagged matches on SIGHUP', bad_tags)
    t.ok(node.alive(), 'zring still running at the end')


z.Tap('unhealthy', timeout=120).run(main)
