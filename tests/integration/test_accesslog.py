#!/usr/bin/python3
"""The access log (scope "access", one JSON line per closed connection, ztunnel's
keys) and ztunnel's /logging forms, on two HBONE nodes: A (127.50.0.1, the
client workloads, source reporter) and B (127.50.0.2, the server, destination
reporter). A SOCKS5 connection from "client" to the service goes A -> mTLS ->
B -> server; once it has closed each node has written exactly one line for it,
with its addresses, workloads, SPIFFE principals, the bytes each way, its
duration and response flags "-". A connection B denies (client2's address) is
logged with DENY, at error, by both. logLevel: warn (config reload), or
/logging?level=warn or access=off, silence the lines; a bad level is a 400
that changes nothing; reset comes back to the configured level."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

A_IP = '127.50.0.1'
B_IP = '127.50.0.2'
CLIENT = '127.50.1.2'     # workload "client" (sa client) on node A
CLIENT2 = '127.50.1.3'    # workload "client2" (sa client too) on node A: denied by B
SERVER = '127.50.2.2'     # workload "server" on node B, port 8080
VIP = '127.50.10.2'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')
UP, DOWN = 1000, 3000     # bytes the client sends, bytes the server answers


def serve(c, peer):
    """Reads UP bytes, answers DOWN, waits for the client to close."""
    try:
        c.settimeout(10)
        z.recv_exact(c, UP)
        c.sendall(b'd' * DOWN)
        while c.recv(4096):
            pass
    except (OSError, EOFError):
        pass
    return True


def access_lines(node, off):
    return [r for r in node.log_records(off) if r.get('scope') == 'access']


def main(t):
    certs = z.make_certs()
    z.ScriptServer(SERVER, 8080, serve)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('client2', CLIENT2, node='node-a', protocol='HBONE', sa='client'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE', services={z.svc_key('al-echo'): {80: 8080}}),
    ]
    svcs = [z.service('al-echo', VIP, {80: 8080}, sans=[SERVER_ID])]
    deny = {'name': 'deny-client2', 'namespace': 'default', 'scope': 'Namespace', 'action': 'Deny',
            'rules': [[[{'sourceIps': ['%s/32' % CLIENT2]}]]]}
    b = z.hbone_node(t, 'node-b', B_IP, certs, [(SERVER_ID, 'server')], wls, svcs, policies=[deny])
    a = z.hbone_node(t, 'node-a', A_IP, certs, [(CLIENT_ID, 'client')], wls, svcs)
    if not b.start() or not a.start():
        return
    px = a.socks5

    def one_connection(src=CLIENT):
        """A connection through both nodes: sends UP, reads DOWN, closes.
        Returns the client's local address 'ip:port' (or None if refused)."""
        s = z.socks5_connect(px, VIP, 80, src=src)
        local = '%s:%d' % s.getsockname()[:2]
        time.sleep(0.2)  # a duration of some milliseconds
        s.sendall(b'u' * UP)
        got = z.recv_exact(s, DOWN)
        s.shutdown(socket.SHUT_WR)
        s.close()
        t.is_(len(got), DOWN, 'from %s: %d bytes up, %d back' % (src, UP, DOWN))
        return local

    def lines_after(off_a, off_b, want_a, want_b, timeout=5):
        z.wait_until(lambda: len(access_lines(a, off_a)) >= want_a and len(access_lines(b, off_b)) >= want_b,
                     timeout, 0.05)
        time.sleep(0.3)  # nothing more comes
        return access_lines(a, off_a), access_lines(b, off_b)

    def check_fields(rec, want, who):
        bad = {k: (rec.get(k), v) for k, v in want.items() if rec.get(k) != v}
        t.ok(not bad, '%s: %s' % (who, ', '.join(sorted(want))), 'got vs want: %r' % bad)

    def duration_ms(rec):
        d = str(rec.get('duration', ''))
        return int(d[:-2]) if d.endswith('ms') and d[:-2].isdigit() else -1

    # -- an mTLS connection through both nodes
    off_a, off_b = a.log_size(), b.log_size()
    local = one_connection()
    la, lb = lines_after(off_a, off_b, 1, 1)
    t.is_(len(la), 1, 'A wrote one access line for the connection')
    t.is_(len(lb), 1, 'B wrote one access line for it')
    if la:
        r = la[0]
        check_fields(r, {'level': 'info', 'msg': 'connection complete', 'direction': 'outbound',
                         'src.addr': local, 'src.workload': 'client', 'src.namespace': 'default',
                         'src.identity': CLIENT_ID, 'dst.addr': '%s:15008' % SERVER,
                         'dst.hbone_addr': '%s:8080' % SERVER, 'dst.workload': 'server',
                         'dst.namespace': 'default', 'dst.service': z.hostname('al-echo'),
                         'dst.identity': SERVER_ID, 'bytes_sent': UP, 'bytes_recv': DOWN,
                         'response_flags': '-'}, 'A (source)')
        t.ok(duration_ms(r) >= 150, 'A: duration "%s" covers the connection' % r.get('duration'))
        t.ok('error' not in r, 'A: no error key')
    if lb:
        r = lb[0]
        check_fields(r, {'level': 'info', 'msg': 'connection complete', 'direction': 'inbound',
                         'src.workload': 'client', 'src.namespace': 'default', 'src.identity': CLIENT_ID,
                         'dst.addr': '%s:8080' % SERVER, 'dst.workload': 'server',
                         'dst.namespace': 'default', 'dst.service': z.hostname('al-echo'),
                         'dst.identity': SERVER_ID, 'bytes_sent': DOWN, 'bytes_recv': UP,
                         'response_flags': '-'}, 'B (destination)')
        t.ok(str(r.get('src.addr', '')).startswith(CLIENT + ':'),
             'B: src.addr is the peer from the client\'s address (%s)' % r.get('src.addr'))
        t.ok(duration_ms(r) > 0, 'B: duration "%s" > 0' % r.get('duration'))

    # -- a denied one
    off_a, off_b = a.log_size(), b.log_size()
    code, s = z.socks5_try(px, VIP, 80, src=CLIENT2)
    if s:
        s.close()
    t.is_(code, 2, 'client2 is refused (SOCKS5 "not allowed": B denied it)')
    la, lb = lines_after(off_a, off_b, 1, 1)
    t.is_(len(la), 1, 'A wrote one access line for the denied connection')
    t.is_(len(lb), 1, 'B wrote one')
    if la:
        check_fields(la[0], {'level': 'info', 'direction': 'outbound', 'src.workload': 'client2',
                             'response_flags': 'DENY', 'bytes_sent': 0, 'bytes_recv': 0}, 'A denied')
        t.ok(la[0].get('error'), 'A: with an error key (%r)' % la[0].get('error'))
    if lb:
        check_fields(lb[0], {'level': 'info', 'direction': 'inbound', 'src.workload': 'client2',
                             'src.identity': CLIENT_ID, 'dst.workload': 'server', 'response_flags': 'DENY'},
                     'B denied')

    # -- /logging
    def logging(node, query=''):
        st, body = node.http('admin', 'POST', '/logging' + query)
        return st, body.decode(errors='replace')

    def quiet(desc, node_a=True, node_b=True):
        off_a, off_b = a.log_size(), b.log_size()
        one_connection()
        time.sleep(0.5)
        n_a, n_b = len(access_lines(a, off_a)), len(access_lines(b, off_b))
        t.ok((n_a == 0) == node_a and (n_b == 0) == node_b, desc, 'access lines: A %d, B %d' % (n_a, n_b))

    t.is_(logging(a, '?level=warn'), (200, 'current log level is warn\n'), 'A: level=warn')
    t.is_(logging(b, '?level=access%3Dwarn'), (200, 'current log level is access=warn,info\n'),
          'B: level=access=warn (percent-encoded): ztunnel\'s answer')
    quiet('no access line on either node')
    off_a, off_b = a.log_size(), b.log_size()
    code, s = z.socks5_try(px, VIP, 80, src=CLIENT2)
    if s:
        s.close()
    time.sleep(0.5)
    t.ok(code == 2 and not access_lines(a, off_a) and not access_lines(b, off_b),
         'a denied connection writes no access line either (every access line is at info)')
    t.is_(logging(a, '?reset'), (200, 'current log level is info\n'), 'A: reset: the configured level')
    t.is_(logging(b, '?level=access=info,flow=debug'), (200, 'current log level is access=info,flow=debug,info\n'),
          'B: a list, merged over the current filter')
    quiet('the lines are back on both', node_a=False, node_b=False)
    t.is_(logging(b, '?level=access=off'), (200, 'current log level is access=off,flow=debug,info\n'),
          'B: access=off')
    quiet('B silent, A still writes', node_a=False, node_b=True)
    for lvl in ('debug', 'trace', 'error', 'off'):
        t.is_(logging(b, '?reset&level=' + lvl), (200, 'current log level is %s\n' % lvl), 'B: reset&level=%s' % lvl)
    st, body = logging(b, '?level=bogus')
    t.is_(st, 400, 'B: level=bogus is a 400')
    t.ok('Invalid level provided: bogus' in body and 'trace|off' in body, '  ... naming it and the levels', body)
    t.is_(logging(b), (200, 'current log level is off\n'), '  ... and the level is unchanged (POST lists it)')
    t.is_(logging(b, '?reset'), (200, 'current log level is info\n'), 'B: reset')
    st, _ = b.http('admin', 'GET', '/logging')
    t.is_(st, 200, 'GET /logging answers too')

    # -- logLevel: warn in the config (reload)
    b.log_level = 'warn'
    b.write_config()
    b.reload()
    t.ok(z.wait_until(lambda: logging(b) == (200, 'current log level is warn\n'), 5, 0.1),
         'B reloaded with logLevel: warn')
    quiet('logLevel: warn silences B\'s access lines', node_a=False, node_b=True)
    t.is_(logging(b, '?level=info'), (200, 'current log level is info\n'), 'B: level=info')
    t.is_(logging(b, '?reset'), (200, 'current log level is warn\n'), 'B: reset goes back to the reloaded level')
    t.ok(a.alive() and b.alive(), 'both nodes still running')


if __name__ == '__main__':
    z.Tap('accesslog', timeout=120).run(main)
