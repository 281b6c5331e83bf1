#!/usr/bin/python3
"""/config_dump as `istioctl ztunnel-config` reads it: decoded the way
istioctl's ConfigWriter.Prime does (Go encoding/json rules, godecode.py)
into the types of istioctl's api.go (istioctl_dump.py), on two real nodes
with workloads, services with endpoints (one Unhealthy), waypoints, a policy
with every match kind, certificates (a leaf, a leaf with its intermediate)
and live connections both ways; and the same decoder on istioctl's own test
fixture, data/istioctl-ztunnel-dump.json (a copy of istio/istio
istioctl/pkg/writer/ztunnel/configdump/testdata/dump.json at commit
86c9f01fd735fb01d8192f5bcaf0d424afb7f14c, Apache-2.0 test data). `zring ctl`
reads the same shape. Nodes A 127.52.0.1, B 127.52.0.2; workloads
127.52.1.x (A) and 127.52.2.x (B); VIPs 127.52.10.x."""

import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import godecode as g  # noqa: E402
import istioctl_dump as istioctl  # noqa: E402
import zrtest as z  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
A_IP, B_IP = '127.52.0.1', '127.52.0.2'
CLIENT_A, SERVER_A, IDLE_A = '127.52.1.2', '127.52.1.3', '127.52.1.4'
CLIENT_B, SERVER_B, SICK_B = '127.52.2.2', '127.52.2.3', '127.52.2.4'
VIP_A, VIP_B, VIP_WP, VIP_IDLE = '127.52.10.1', '127.52.10.2', '127.52.10.9', '127.52.10.3'
CLIENT_ID, SERVER_ID, CHAINED_ID = z.spiffe('client'), z.spiffe('server'), z.spiffe('chained')

EVERY_MATCH = {
    'namespaces': [{'Exact': 'nowhere'}],
    'notNamespaces': [{'Prefix': 'kube-'}],
    'principals': [{'Suffix': '/sa/nobody'}, {'Presence': []}],
    'notPrincipals': ['cluster.local/ns/default/sa/client'],
    'sourceIps': ['10.0.0.0/8'],
    'notSourceIps': ['10.1.0.0/16'],
    'destinationIps': ['192.0.2.1/32'],
    'notDestinationIps': ['192.0.2.2/32'],
    'destinationPorts': [9999],
    'notDestinationPorts': [9998],
    'serviceAccounts': [{'namespace': 'nowhere', 'serviceAccount': 'nobody'}],
    'notServiceAccounts': [{'namespace': 'default', 'serviceAccount': 'client'}],
}


def rfc3339(s):
    return datetime.datetime.strptime(s, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.timezone.utc)


def fixture(t):
    with open(os.path.join(HERE, 'data', 'istioctl-ztunnel-dump.json')) as f:
        text = f.read()
    try:
        d = istioctl.prime(text)
    except g.DecodeError as e:
        t.ok(False, "istioctl's fixture decodes", str(e))
        return
    t.ok(len(d['Workloads']) > 0 and len(d['Services']) > 0 and len(d['Certificates']) > 0
         and len(d['WorkloadState']) > 0, "istioctl's fixture decodes (maps of workloads and services)")
    ep = next(iter(next(s for s in d['Services'] if s['Endpoints'])['Endpoints'].values()))
    t.ok(ep['WorkloadUID'] and ep['Port'] and all(isinstance(k, int) for k in ep['Port']),
         'fixture: an endpoint with a workloadUid and a uint16 port map')
    # the decoder refuses what istioctl refuses: the shapes zring had before
    bad = [
        ('endpoints a list of uids', {'services': [{'name': 's', 'endpoints': ['uid']}]}),
        ('a port map keyed by name', {'services': [{'endpoints': {'u': {'port': {'http': 80}}}}]}),
        ('a principal as a plain string', {'policies': [{'rules': [[[{'principals': ['x']}]]]}]}),
        ('a destination port as a string', {'policies': [{'rules': [[[{'destinationPorts': ['80']}]]]}]}),
        ('certChain a string', {'certificates': [{'identity': 'x', 'certChain': 'pem'}]}),
        ('capacity negative', {'workloads': [{'uid': 'u', 'capacity': -1}]}),
        ('workloadState a list', {'workloadState': []}),
    ]
    for what, doc in bad:
        try:
            istioctl.prime(json.dumps(doc))
            t.ok(False, 'decoder refuses %s' % what)
        except g.DecodeError as e:
            t.ok(True, 'decoder refuses %s (%s)' % (what, e))
    d = istioctl.prime(json.dumps({'services': [{'NAME': 'x', 'unknown': {'a': [1]}, 'ports': None}]}))
    t.is_(d['Services'][0]['Name'], 'x', 'decoder: keys match ignoring case, unknown keys ignored')


def prime_node(t, node, what):
    st, body = node.http('admin', 'GET', '/config_dump')
    t.is_(st, 200, '%s: GET /config_dump' % what)
    try:
        d = istioctl.prime(body.decode() if isinstance(body, bytes) else body)
    except g.DecodeError as e:
        t.ok(False, '%s: /config_dump decodes as istioctl decodes it' % what, str(e))
        return None, None
    t.ok(True, '%s: /config_dump decodes as istioctl decodes it' % what)
    return d, json.loads(body)


def main(t):
    fixture(t)
    certs = z.make_certs()
    for ip in (SERVER_A, SERVER_B, SICK_B):
        z.EchoServer(ip, 8080)
    wp = {'destination': '/' + VIP_WP, 'hboneMtlsPort': 15008}
    wls = [
        z.workload('client-a', CLIENT_A, node='node-a', protocol='HBONE', sa='client'),
        z.workload('server-a', SERVER_A, node='node-a', protocol='HBONE', sa='server',
                   services={z.svc_key('echo-a'): {80: 8080}}),
        z.workload('idle-a', IDLE_A, node='node-a', protocol='HBONE', sa='server', waypoint=wp),
        z.workload('client-b', CLIENT_B, node='node-b', protocol='HBONE', sa='client'),
        z.workload('server-b', SERVER_B, node='node-b', protocol='HBONE', sa='chained',
                   services={z.svc_key('echo-b'): {80: 8080}}),
        z.workload('sick-b', SICK_B, node='node-b', protocol='HBONE', sa='chained', status='Unhealthy',
                   services={z.svc_key('echo-b'): {80: 8080}}),
    ]
    idle = z.service('echo-idle', VIP_IDLE, {80: 8080})
    idle['waypoint'] = {'destination': z.svc_key('waypoint'), 'hboneMtlsPort': 15008}
    svcs = [z.service('echo-a', VIP_A, {80: 8080}, sans=[SERVER_ID]),
            z.service('echo-b', VIP_B, {80: 8080}, sans=[CHAINED_ID]),
            z.service('waypoint', VIP_WP, {15008: 15008}), idle]
    pols = [{'name': 'deny-every-kind', 'namespace': 'default', 'scope': 'Namespace', 'action': 'Deny',
             'rules': [[[EVERY_MATCH]]]}]
    a = z.hbone_node(t, 'node-a', A_IP, certs, [(CLIENT_ID, 'client'), (SERVER_ID, 'server')], wls, svcs, pols)
    b = z.hbone_node(t, 'node-b', B_IP, certs, [(CLIENT_ID, 'client'), (CHAINED_ID, 'chained')], wls, svcs, pols)
    if not a.start() or not b.start():
        return
    held = []
    try:
        # client-a -> server-b (A outbound, B inbound); client-b -> echo-a (B outbound, A inbound)
        for px, src, dst in ((a.socks5, CLIENT_A, SERVER_B), (b.socks5, CLIENT_B, VIP_A)):
            s = z.socks5_connect(px, dst, 8080 if dst == SERVER_B else 80, src=src)
            s.sendall(b'ping')
            t.is_(z.recv_exact(s, 4), b'ping', 'echo %s -> %s' % (src, dst))
            held.append(s)
        for node, what in ((a, 'A'), (b, 'B')):
            def both(node=node):
                st = node.config_dump().get('workloadState') or {}
                return sum(len(v['connections']['inbound']) + len(v['connections']['outbound'])
                           for v in st.values()) >= 2
            z.wait_until(both, 5, 0.1)
        check_a(t, a)
        check_b(t, b)
        check_ctl(t, a, b)
    finally:
        for s in held:
            s.close()


def conns(d, name, direction):
    for ws in d['WorkloadState'].values():
        if ws['Info']['Name'] == name:
            return ws['Connections'][direction.capitalize()] or []
    return None


def check_a(t, a):
    d, raw = prime_node(t, a, 'A')
    if not d:
        return
    t.is_(sorted(w['Name'] for w in d['Workloads']),
          ['client-a', 'client-b', 'idle-a', 'server-a', 'server-b', 'sick-b'], 'A: workloads')
    idle = next(w for w in d['Workloads'] if w['Name'] == 'idle-a')
    t.is_((idle['Waypoint'] or {}).get('Destination'), '/' + VIP_WP, 'A: workload waypoint destination')
    pol = d['Policies'][0]
    m = pol['Rules'][0][0][0]
    t.ok(m['Namespaces'][0]['Exact'] == 'nowhere' and m['NotNamespaces'][0]['Prefix'] == 'kube-'
         and m['Principals'][0]['Suffix'] == '/sa/nobody' and m['Principals'][1]['Presence'] == []
         and m['NotPrincipals'][0]['Exact'] == 'cluster.local/ns/default/sa/client'
         and m['SourceIps'] == ['10.0.0.0/8'] and m['NotSourceIps'] == ['10.1.0.0/16']
         and m['DestinationIps'] == ['192.0.2.1/32'] and m['NotDestinationIps'] == ['192.0.2.2/32']
         and m['DestinationPorts'] == [9999] and m['NotDestinationPorts'] == [9998]
         and m['ServiceAccounts'] == [{'Namespace': 'nowhere', 'ServiceAccount': 'nobody'}]
         and m['NotServiceAccounts'] == [{'Namespace': 'default', 'ServiceAccount': 'client'}],
         'A: every match kind, as istioctl reads it', json.dumps(m))
    certs = {c['Identity']: c for c in d['Certificates']}
    c = certs.get(SERVER_ID) or {}
    now = datetime.datetime.now(datetime.timezone.utc)
    chain = c.get('CertChain') or []
    t.ok(c.get('State') == 'Available' and len(chain) == 1 and len(c.get('RootCert') or []) == 1
         and chain[0]['SerialNumber'].isdigit()
         and rfc3339(chain[0]['ValidFrom']) < now < rfc3339(chain[0]['ExpirationTime']),
         'A: server certificate Available, a leaf (decimal serial, RFC 3339 validity) and a root', json.dumps(c))
    out = conns(d, 'client-a', 'outbound') or []
    t.ok(len(out) == 1 and out[0]['Src'].startswith(CLIENT_A + ':') and out[0]['Protocol'] == 'HBONE'
         and out[0]['OriginalDst'] == SERVER_B + ':8080' and out[0]['ActualDst'].endswith(':15008'),
         'A: workloadState client-a has its outbound HBONE connection (actualDst the tunnel\'s)', json.dumps(out))
    inb = conns(d, 'server-a', 'inbound') or []
    t.ok(len(inb) == 1 and inb[0]['ActualDst'] == SERVER_A + ':8080' and inb[0]['Protocol'] == 'HBONE'
         and inb[0]['OriginalDst'] == z.hostname('echo-a'),
         'A: workloadState server-a has its inbound HBONE connection', json.dumps(inb))
    t.ok(isinstance(raw.get('crypto'), dict) and isinstance(raw.get('listeners'), dict)
         and isinstance(raw.get('workers'), int) and isinstance(raw.get('connections'), list),
         "A: zring's own keys (crypto, listeners, workers, connections) kept")


def check_b(t, b):
    d, raw = prime_node(t, b, 'B')
    if not d:
        return
    svc = next(s for s in d['Services'] if s['Name'] == 'echo-b')
    eps = svc['Endpoints'] or {}
    t.is_(sorted(e['WorkloadUID'] for e in eps.values()),
          ['cluster1//v1/Pod/default/server-b', 'cluster1//v1/Pod/default/sick-b'],
          'B: echo-b endpoints keyed by workload, the Unhealthy one too')
    e = eps.get('cluster1//v1/Pod/default/server-b') or {}
    t.ok(e.get('Service') == z.svc_key('echo-b') and e.get('Address') == '/' + SERVER_B
         and e.get('Port') == {80: 8080}, 'B: endpoint service, address, port map', json.dumps(e))
    st = {k: v.get('status') for k, v in (raw['services'][[s['name'] for s in raw['services']].index('echo-b')]
                                        ['endpoints']).items()}
    t.is_(st.get('cluster1//v1/Pod/default/sick-b'), 'Unhealthy', 'B: endpoint status Unhealthy')
    c = {c['Identity']: c for c in d['Certificates']}.get(CHAINED_ID) or {}
    t.ok(c.get('State') == 'Available' and len(c.get('CertChain') or []) == 2,
         'B: chained certificate: leaf and intermediate in certChain', json.dumps(c)[:300])
    out = conns(d, 'client-b', 'outbound') or []
    t.ok(len(out) == 1 and out[0]['OriginalDst'] == VIP_A + ':80' and out[0]['Protocol'] == 'HBONE',
         'B: workloadState client-b has its outbound connection to the VIP', json.dumps(out))
    inb = conns(d, 'server-b', 'inbound') or []
    t.ok(len(inb) == 1 and inb[0]['ActualDst'] == SERVER_B + ':8080',
         'B: workloadState server-b has its inbound connection', json.dumps(inb))


def check_ctl(t, a, b):
    rc, out, err = a.ctl('workloads')
    row = [ln.split() for ln in out.splitlines() if 'idle-a' in ln]
    t.ok(rc == 0 and row and row[0][4] == 'waypoint', 'zring ctl workloads: the waypoint column names it',
         out + err)
    rc, out, err = a.ctl('services')
    rows = {ln.split()[1]: ln.split() for ln in out.splitlines()[1:] if ln.strip()}
    t.ok(rc == 0 and rows.get('echo-idle', [''] * 5)[3] == 'waypoint' and rows.get('echo-b', [''] * 5)[4] == '1/2'
         and rows.get('echo-a', [''] * 5)[3] == 'None',
         'zring ctl services: waypoint column, healthy/all endpoints', out + err)
    rc, out, err = b.ctl('certs')
    types = sorted(ln.split()[1] for ln in out.splitlines() if ln.startswith(CHAINED_ID))
    t.is_(types, ['Intermediate', 'Leaf', 'Root'], 'zring ctl certs: a row per certificate of the chain')
    rc, out, err = b.ctl('connections')
    t.ok(rc == 0 and CLIENT_B in out, 'zring ctl connections still lists them', out + err)


z.Tap('ztunnel-dump', timeout=120).run(main)
