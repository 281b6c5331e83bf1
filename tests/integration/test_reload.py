#!/usr/bin/python3
"""SIGHUP reloads the config file and localXdsPath without dropping live
connections: a new service becomes reachable, a removed one unreachable for new
connections, a live connection keeps echoing throughout; a broken state file or
config file on SIGHUP keeps the old config (error logged) and zring keeps serving."""

import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.1.2'


def main(t):
    z.EchoServer('127.0.2.3', 8080)
    z.EchoServer('127.0.2.6', 8080)
    wl_echo = z.workload('echo', '127.0.2.3', node='node-b', services={z.svc_key('echo'): {80: 8080}})
    wl_echo2 = z.workload('echo2', '127.0.2.6', node='node-b', services={z.svc_key('echo2'): {80: 8080}})
    node = z.Node(t, state_in_file=True,
                  workloads=[z.workload('client', CLIENT), wl_echo],
                  services=[z.service('echo', '127.10.0.1', {80: 8080})])
    if not node.start():
        return
    px = node.socks5
    live = z.socks5_connect(px, '127.10.0.1', 80, src=CLIENT, timeout=5)
    counter = [0]

    def ping_live(label):
        counter[0] += 1
        msg = b'live-%d' % counter[0]
        try:
            live.sendall(msg)
            got = z.recv_exact(live, len(msg))
        except Exception as e:
            got = repr(e)
        return t.is_(got, msg, 'live connection still echoes %s' % label)

    def reachable(host, port):
        code, s = z.socks5_try(px, host, port, src=CLIENT, timeout=5)
        if code != 0:
            return code
        try:
            s.sendall(b'hi')
            return 0 if z.recv_exact(s, 2) == b'hi' else 'bad echo'
        except Exception as e:
            return repr(e)
        finally:
            s.close()

    def wait_reachable(host, port, want_ok, timeout=5):
        def check():
            r = reachable(host, port)
            return (r == 0) == want_ok and (r,)
        return z.wait_until(check, timeout, 0.1)

    def epoch():
        return node.metric('zring_worker_config_epoch')

    def add_service():
        t.ok(ping_live('before reload'), 'live connection works before reload')
        t.ok(reachable('127.10.0.5', 80) != 0, 'echo2 VIP not reachable before it is configured')
        e0 = epoch()
        node.state['workloads'].append(wl_echo2)
        node.state['services'].append(z.service('echo2', '127.10.0.5', {80: 8080}))
        node.write_state()
        node.reload()
        r = wait_reachable('127.10.0.5', 80, True)
        t.ok(r, 'new service reachable after SIGHUP (within 5 s)', 'last %r' % (r,))
        ping_live('after adding a service')
        r = wait_reachable(z.hostname('echo2'), 80, True, 2)
        t.ok(r, 'new service reachable by hostname after SIGHUP')
        t.ok(node.alive(), 'zring alive after reload')
        t.diag('zring_worker_config_epoch %r -> %r' % (e0, epoch()))
        dump = node.config_dump()
        names = [w.get('name') for w in dump.get('workloads', [])]
        t.ok('echo2' in names, '/config_dump shows the new workload', 'workloads %r' % names)

    def remove_service():
        node.state['services'] = [s for s in node.state['services'] if s['name'] != 'echo2']
        node.state['workloads'] = [w for w in node.state['workloads'] if w['name'] != 'echo2']
        node.write_state()
        keep = z.socks5_connect(px, '127.10.0.5', 80, src=CLIENT)
        node.reload()
        r = wait_reachable('127.10.0.5', 80, False)
        t.ok(r, 'removed service no longer reachable for new connections', 'last %r' % (r,))
        ping_live('after removing a service')
        try:
            keep.sendall(b'kept')
            got = z.recv_exact(keep, 4)
        except Exception as e:
            got = repr(e)
        keep.close()
        t.is_(got, b'kept', 'a live connection to the removed service is not dropped')

    def broken_state():
        node.state['workloads'].append(wl_echo2)
        node.state['services'].append(z.service('echo2', '127.10.0.5', {80: 8080}))
        node.write_state()
        node.reload()
        t.ok(wait_reachable('127.10.0.5', 80, True), 'service back after another reload')
        off = node.log_size()
        node.write_state('workloads:\n- name: [unterminated\n  uid: x\n')
        node.reload()
        time.sleep(1.0)
        t.ok(node.alive(), 'zring survives SIGHUP with a broken state file')
        recs = node.log_records(off)
        errs = [r for r in recs if str(r.get('level', r.get('lvl', ''))).lower() in ('error', 'warn', 'warning')
                or 'error' in r.get('_raw', '').lower()]
        t.ok(errs, 'the broken state file is logged as an error/warning',
             'log since reload: %r' % recs[-5:])
        if errs:
            t.diag('logged: %s' % str(errs[0])[:300])
        raw = [r['_raw'] for r in recs if '_raw' in r]
        t.ok(not raw, 'every log line after the broken reload is a JSON object (logs are JSON lines)',
             'non-JSON lines: %r' % raw[:3])
        ping_live('after a broken reload')
        t.is_(reachable('127.10.0.5', 80), 0, 'old config kept: echo2 still reachable')
        t.is_(reachable('127.10.0.1', 80), 0, 'old config kept: echo still reachable')
        st, body = node.http('readiness', 'GET', '/healthz/ready')
        t.is_(st, 200, 'still ready after a broken reload')

    def broken_config():
        node.write_state()  # state good again
        off = node.log_size()
        with open(node.config_path) as f:
            good = f.read()
        node.write_config(good + 'noSuchKey: 1\n')
        node.reload()
        time.sleep(1.0)
        t.ok(node.alive(), 'zring survives SIGHUP with an invalid config file (unknown key)')
        t.ok('noSuchKey' in node.log_since(off), 'the log names the offending key',
             node.log_since(off)[-500:])
        ping_live('after an invalid config file')
        t.is_(reachable('127.10.0.1', 80), 0, 'still serving after the invalid config file')
        node.write_config(good)
        node.write_state()
        node.reload()
        time.sleep(0.5)
        t.is_(reachable('127.10.0.5', 80), 0, 'good config applies again after fixing the file')

    def many_reloads():
        # reload storm while the live connection keeps echoing
        for i in range(20):
            node.signal(signal.SIGHUP)
            time.sleep(0.02)
            if i % 5 == 0:
                ping_live('during a reload storm (%d)' % i)
        time.sleep(0.5)
        t.ok(node.alive(), 'zring alive after 20 quick SIGHUPs')
        ping_live('after a reload storm')
        t.is_(reachable('127.10.0.1', 80), 0, 'echo reachable after the reload storm')

    t.subtest('add service', add_service)
    t.subtest('remove service', remove_service)
    t.subtest('broken state file', broken_state)
    t.subtest('broken config file', broken_config)
    t.subtest('reload storm', many_reloads)
    try:
        live.shutdown(socket.SHUT_WR)
        t.is_(z.outcome(live, 5), 'eof', 'live connection closes cleanly at the end')
    except OSError as e:
        t.ok(False, 'live connection closes cleanly at the end', repr(e))
    live.close()
    t.ok(node.alive(), 'zring still running at the end')


z.Tap('reload', timeout=150).run(main)
