#!/usr/bin/python3
"""Hostile input. SOCKS5: wrong version, zero methods, 255 methods, truncated
requests, 255-byte garbage domain, unsupported commands and address types,
slow-loris. HTTP listeners (metrics, readiness, admin): random bytes, a 100 KiB
header line, truncated requests, stalls. Each gets an error reply or a close
and never hurts anyone else; afterwards a normal transfer and a scrape work.
Invalid configs: `zring check-config` exit 1 naming file:line and the key;
`zring --config bad.yaml` exit 1; a listener port already in use: exit 2."""

import os
import random
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.1.2'
rnd = random.Random(1234)


def garbage(n):
    return bytes(rnd.getrandbits(8) for _ in range(n))


def poke(addr, data, close_write=False, timeout=5.0, src=CLIENT):
    """Sends data; returns (outcome, seconds) where outcome is 'eof', 'reset', 'timeout'
    or ('data', first bytes)."""
    s = z.connect(addr[0], addr[1], src=src, timeout=timeout)
    try:
        if data:
            s.sendall(data)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        r = z.outcome(s, timeout)
        # after data, the peer should then close
        if isinstance(r, tuple):
            rest = z.outcome(s, timeout)
            while isinstance(rest, tuple) and len(r[1]) < 1 << 20:
                r = ('data', r[1] + rest[1])
                rest = z.outcome(s, timeout)
            r = ('data', r[1], rest)
        return r, time.monotonic() - t0
    except (ConnectionResetError, BrokenPipeError):
        return 'reset', 0.0
    finally:
        s.close()


def closed_or_error_reply(r, allowed_prefixes):
    """r from poke: ok when the peer closed/reset, or replied with one of the prefixes then closed."""
    if r in ('eof', 'reset'):
        return True
    if isinstance(r, tuple):
        data, then = r[1], r[2]
        return any(data.startswith(p) for p in allowed_prefixes) and then in ('eof', 'reset')
    return False


def main(t):
    echo = z.EchoServer('127.0.2.3', 8080)
    bulk = z.BulkServer('127.0.2.5', 9000)
    node = z.Node(t, workloads=[
        z.workload('client', CLIENT),
        z.workload('echo', '127.0.2.3', node='node-b', services={z.svc_key('echo'): {80: 8080}}),
        z.workload('bulk', '127.0.2.5', node='node-b', services={z.svc_key('bulk'): {80: 9000}}),
    ], services=[
        z.service('echo', '127.10.0.1', {80: 8080}),
        z.service('bulk', '127.10.0.2', {80: 9000}),
    ])
    if not node.start():
        return
    px = node.socks5
    proto0 = node.refused('socks5_protocol')
    stalled = []

    def socks5_garbage():
        greet = b'\x05\x01\x00'
        req_ok = z.socks5_request('127.10.0.1', 80)
        cases = [
            ('wrong version byte (SOCKS4 CONNECT)', b'\x04\x01\x00\x50\x7f\x0a\x00\x01user\x00', False),
            ('wrong version byte 0x00', b'\x00\x01\x00', False),
            ('HTTP request on the SOCKS5 port', b'GET / HTTP/1.1\r\nHost: x\r\n\r\n', False),
            ('zero methods', b'\x05\x00', False),
            ('255 methods, none acceptable', b'\x05\xff' + bytes(range(1, 256)), False),
            ('255 methods announced, 10 sent, then close', b'\x05\xff' + bytes(10), True),
            ('greeting then truncated request, then close', greet + req_ok[:5], True),
            ('greeting then request with bad version', greet + b'\x04' + req_ok[1:], False),
            ('greeting then non-zero reserved byte', greet + req_ok[:2] + b'\x01' + req_ok[3:], False),
            ('domain length 255 of garbage', greet + b'\x05\x01\x00\x03\xff' + garbage(255) + b'\x00\x50', False),
            ('domain length 0', greet + b'\x05\x01\x00\x03\x00\x00\x50', False),
            ('domain with NUL bytes', greet + b'\x05\x01\x00\x03\x09echo\x00.svc\x00\x50', False),
            ('BIND command', greet + z.socks5_request('127.10.0.1', 80, cmd=2), False),
            ('UDP ASSOCIATE command', greet + z.socks5_request('127.10.0.1', 80, cmd=3), False),
            ('command 0x7f', greet + z.socks5_request('127.10.0.1', 80, cmd=0x7f), False),
            ('address type 0x05', greet + b'\x05\x01\x00\x05\x7f\x0a\x00\x01\x00\x50', False),
            ('port 0', greet + z.socks5_request('127.10.0.1', 0), False),
            ('64 KiB of random bytes', garbage(1024) * 64, False),
            ('4 KiB of 0x05', b'\x05' * 4096, False),
        ]
        for name, data, close_write in cases:
            r, dt = poke(px, data, close_write)
            ok = closed_or_error_reply(r, [b'\x05\xff', b'\x05\x00\x05', b'\x05\x00'])
            # a SOCKS5 error reply (after method selection): 05 00 | 05 rep!=0 ...
            if isinstance(r, tuple) and r[1].startswith(b'\x05\x00\x05\x00'):
                ok = False  # a success reply to garbage
            t.ok(ok, 'SOCKS5 %s: error reply or close' % name, 'got %r after %.2f s' % (r, dt))
        t.ok(node.alive(), 'zring alive after SOCKS5 garbage')

    def socks5_codes():
        greet = b'\x05\x01\x00'
        for name, req, want in [
            ('BIND', z.socks5_request('127.10.0.1', 80, cmd=2), 7),
            ('UDP ASSOCIATE', z.socks5_request('127.10.0.1', 80, cmd=3), 7),
            ('address type 0x05', b'\x05\x01\x00\x05\x7f\x0a\x00\x01\x00\x50', 8),
        ]:
            s = z.connect(px[0], px[1], src=CLIENT, timeout=5)
            try:
                s.sendall(greet)
                m = z.recv_exact(s, 2)
                s.sendall(req)
                rep, _ = z.socks5_read_reply(s)
                r = (m, rep)
            except Exception as e:
                r = repr(e)
            s.close()
            t.is_(r, (b'\x05\x00', want), 'SOCKS5 %s: reply 0x%02x' % (name, want))
        s = z.connect(px[0], px[1], src=CLIENT, timeout=5)
        s.sendall(b'\x05\x01\x02')  # only username/password offered
        try:
            m = z.recv_exact(s, 2)
        except Exception as e:
            m = repr(e)
        s.close()
        t.is_(m, b'\x05\xff', 'SOCKS5 without the no-auth method: 05 FF (no acceptable method)')

    def slowloris():
        # 50 connections that send one byte and stall; others must be served meanwhile
        for i in range(50):
            s = z.connect(px[0], px[1], src=CLIENT, timeout=5)
            s.sendall(b'\x05')
            stalled.append(s)
        for i in range(10):
            s = z.connect(px[0], px[1], src=CLIENT, timeout=5)
            s.sendall(b'\x05\x01\x00' + z.socks5_request('127.10.0.1', 80)[:3])
            stalled.append(s)
        t0 = time.monotonic()
        s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
        ok, detail, dt = z.bulk_upload(s, 32 * z.MiB, seed=61)
        s.close()
        t.ok(ok, 'a 32 MiB transfer works while 60 slow-loris connections stall', detail)
        t.ok(time.monotonic() - t0 < 10, 'and is not slowed down much', '%.2f s' % (time.monotonic() - t0))

    def http_garbage():
        for listener in ('metrics', 'readiness', 'admin'):
            addr = node.addr(listener)
            cases = [
                ('random bytes', garbage(4096), False),
                ('100 KiB header line', b'GET /metrics HTTP/1.1\r\nX-Long: ' + b'a' * (100 * 1024) + b'\r\n\r\n', False),
                ('100 KiB request line', b'GET /' + b'a' * (100 * 1024) + b' HTTP/1.1\r\n\r\n', False),
                ('truncated request, then close', b'GET /metr', True),
                ('request without blank line, then close', b'GET /metrics HTTP/1.1\r\nHost: x\r\n', True),
                ('NUL bytes', b'\x00' * 1000 + b'\r\n\r\n', False),
                ('huge Content-Length', b'POST /logging?level=debug HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n', False),
                ('negative Content-Length', b'POST /logging?level=debug HTTP/1.1\r\nContent-Length: -5\r\n\r\n', False),
                ('20000 headers', b'GET /metrics HTTP/1.1\r\n' + b'A: b\r\n' * 20000 + b'\r\n', False),
            ]
            for name, data, close_write in cases:
                try:
                    r, dt = poke(addr, data, close_write, src=None)
                except (BrokenPipeError, ConnectionResetError):
                    r, dt = 'reset', 0
                ok = closed_or_error_reply(r, [b'HTTP/1.1 4', b'HTTP/1.0 4', b'HTTP/1.1 5', b'HTTP/1.0 5'])
                t.ok(ok, '%s port, %s: 4xx/5xx or close' % (listener, name), 'got %r' % (r if not isinstance(r, tuple) else (r[1][:120], r[2]),))
            # stalled partial request must not block the single-threaded server
            s = z.connect(addr[0], addr[1], timeout=5)
            s.sendall(b'GET /healthz/re')
            stalled.append(s)
            t0 = time.monotonic()
            try:
                st, _ = z.http_request(addr, 'GET', '/healthz/ready' if listener == 'readiness' else
                                       ('/metrics' if listener == 'metrics' else '/config_dump'), timeout=5)
            except Exception as e:
                st = repr(e)
            t.is_(st, 200, '%s port serves while a partial request stalls' % listener)
            t.ok(time.monotonic() - t0 < 2, '%s port answers promptly despite the stall' % listener)
        # many idle connections on the metrics port
        for i in range(200):
            try:
                stalled.append(z.connect(*node.addr('metrics'), timeout=5))
            except OSError:
                break
        st, _ = node.http('metrics', 'GET', '/metrics')
        t.is_(st, 200, 'metrics served with 200 idle connections open on its port')
        st, _ = node.http('metrics', 'GET', '/nope')
        t.is_(st, 404, 'metrics port unknown path: 404')

    def afterwards():
        s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
        ok, detail, _ = z.bulk_upload(s, 64 * z.MiB, seed=62)
        s.close()
        t.ok(ok, 'after all that, a normal 64 MiB SOCKS5 transfer is byte-exact', detail)
        s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
        ok, detail, _ = z.bulk_download(s, bulk, 64 * z.MiB, seed=63)
        s.close()
        t.ok(ok, 'and a 64 MiB download', detail)
        text = node.metrics_text()
        rc, out = z.promtool_check(text)
        t.ok(rc in (0, None), 'metrics scrape still valid', out[:500])
        d = node.refused('socks5_protocol') - proto0
        t.cmp(d, '>=', 10, 'zring_connections_refused_total{reason="socks5_protocol"} increased')
        t.diag('socks5_protocol refusals: +%d' % d)
        for s in stalled:
            s.close()
        stalled.clear()
        v = z.wait_until(lambda: node.metric('zring_worker_connections_active') == 0, 10, 0.2)
        t.ok(v, 'no connection left active once the slow-loris clients closed',
             node.active_diag())
        t.ok(node.alive(), 'zring alive')
        t.diag('echo server accepted %d' % echo.accepted)

    t.subtest('SOCKS5 garbage', socks5_garbage)
    t.subtest('SOCKS5 reply codes', socks5_codes)
    t.subtest('slow-loris', slowloris)
    t.subtest('HTTP garbage', http_garbage)
    t.subtest('afterwards', afterwards)
    node.stop()

    # ---------------- configs
    tmp = tempfile.mkdtemp(prefix='zrtest-cfg-')
    z.on_cleanup(shutil.rmtree, tmp, True)
    good = z.dump_yaml(dict(node.config_dict(), localXds={'workloads': [z.workload('client', CLIENT)]}))

    def check_config(name, text, want_line, want_key):
        path = os.path.join(tmp, name + '.yaml')
        with open(path, 'w') as f:
            f.write(text)
        rc, out, err = z.run_zring(['check-config', path])
        t.is_(rc, 1, 'check-config %s: exit 1' % name)
        msg = err.strip().splitlines()
        first = msg[0] if msg else ''
        t.ok(('%s:%d:' % (path, want_line)) in err or ('%s.yaml:%d:' % (name, want_line)) in err,
             'check-config %s: message names file and line %d' % (name, want_line), 'stderr: %r' % err[:500])
        if want_key:
            t.ok(want_key in err, 'check-config %s: message names "%s"' % (name, want_key), 'stderr: %r' % err[:500])
        t.diag('%s: %s' % (name, first[:300]))
        rc2, _, err2 = z.run_zring(['--config', path], timeout=10)
        t.is_(rc2, 1, 'zring --config %s: exit 1' % name)
        return path

    def configs():
        path = os.path.join(tmp, 'good.yaml')
        with open(path, 'w') as f:
            f.write(good)
        rc, out, err = z.run_zring(['check-config', path])
        t.is_(rc, 0, 'check-config of a good config: exit 0')
        if rc:
            t.diag(err[:500])
        lines = good.splitlines()

        def with_line(idx, line):
            ls = lines[:idx] + [line] + lines[idx:]
            return '\n'.join(ls) + '\n', idx + 1

        text, ln = with_line(1, 'bogusTopLevelKey: 1')
        check_config('unknown-key', text, ln, 'bogusTopLevelKey')
        text, ln = with_line(1, 'node: {a: 1}')
        text = text.replace('node: node-a\n', '', 1)
        check_config('map-for-string', text, 1, 'node')
        li = [i for i, l in enumerate(lines) if l.startswith('workers:')][0]
        text = '\n'.join(lines[:li] + ['workers: lots'] + lines[li + 1:]) + '\n'
        check_config('string-for-int', text, li + 1, 'workers')
        text = '\n'.join(lines[:li] + ['poolMaxStreamsPerConnection: many'] + lines[li:]) + '\n'
        check_config('string-for-int-2', text, li + 1, 'poolMaxStreamsPerConnection')
        lo = [i for i, l in enumerate(lines) if l.strip().startswith('socks5:')][0]
        indent = lines[lo][:len(lines[lo]) - len(lines[lo].lstrip())]
        for nm, bad in (('bad-address', 'not-an-address'), ('bad-port', '127.0.0.2:99999'),
                        ('bad-ip', '127.0.0.300:15080')):
            text = '\n'.join(lines[:lo] + [indent + 'socks5: ' + bad] + lines[lo + 1:]) + '\n'
            check_config(nm, text, lo + 1, 'socks5')
        text = '\n'.join(lines[:3] + ['listeners: [unclosed'] + lines[3:]) + '\n'
        path = os.path.join(tmp, 'syntax.yaml')
        with open(path, 'w') as f:
            f.write(text)
        rc, out, err = z.run_zring(['check-config', path])
        t.is_(rc, 1, 'check-config YAML syntax error: exit 1')
        t.ok(path in err or 'syntax.yaml' in err, 'YAML syntax error message names the file', err[:300])
        t.ok(':4:' in err or ':5:' in err, 'YAML syntax error message names a line near the error (4)', err[:300])
        rc, _, err = z.run_zring(['--config', path])
        t.is_(rc, 1, 'zring --config with a YAML syntax error: exit 1')
        wi = [i for i, l in enumerate(lines) if l.strip().startswith('workloadIps')]
        if wi:
            text = '\n'.join(lines[:wi[0] + 1] + [lines[wi[0] + 1].replace('127.0.1.2', '127.0.1.x')] +
                             lines[wi[0] + 2:]) + '\n'
            check_config('bad-workload-ip', text, wi[0] + 2, 'workloadIps')
        rc, out, err = z.run_zring(['check-config', os.path.join(tmp, 'does-not-exist.yaml')])
        t.is_(rc, 1, 'check-config of a missing file: exit 1')
        rc, out, err = z.run_zring(['--config', os.path.join(tmp, 'does-not-exist.yaml')])
        t.is_(rc, 1, 'zring --config missing file: exit 1')
        rc, out, err = z.run_zring(['--no-such-flag'])
        t.is_(rc, 1, 'unknown command-line flag: exit 1')
        rc, out, err = z.run_zring(['--version'])
        t.ok(rc == 0 and out.strip(), 'zring --version: exit 0 and prints a version', '%r %r' % (rc, out))
        t.diag('version: %s' % out.strip())

    def port_in_use():
        blocker = z.listen_socket('127.0.0.2', 15080)
        z.on_cleanup(blocker.close)
        n2 = z.Node(t, workloads=[z.workload('client', CLIENT)])
        n2.start(wait_ready=False)
        rc = n2.wait_exit(10)
        t.is_(rc, 2, 'SOCKS5 port already in use: exit 2')
        txt = n2.log_text()
        t.ok('15080' in txt, 'the message names the address in use', txt[-500:])
        blocker.close()
        n2.expect_running = False
        n3 = z.Node(t, workloads=[z.workload('client', CLIENT)])
        b2 = z.listen_socket('127.0.0.2', 15020)
        z.on_cleanup(b2.close)
        n3.start(wait_ready=False)
        t.is_(n3.wait_exit(10), 2, 'metrics port already in use: exit 2')
        n3.expect_running = False
        b2.close()
        n4 = z.Node(t, workloads=[z.workload('client', CLIENT)], listeners={'admin': '198.18.99.1:15000'})
        n4.start(wait_ready=False)
        t.ok(n4.wait_exit(10) in (1, 2), 'admin on a non-loopback address refused (exit 1 or 2)')
        n4.expect_running = False

    t.subtest('configs', configs)
    t.subtest('port in use', port_in_use)


z.Tap('badinput', timeout=200).run(main)
