#!/usr/bin/python3
"""Drain: SIGTERM during a live paced transfer lets it finish byte-exact while
new connections are refused, then zring exits 0; with a short drainTimeout an
idle stuck connection does not hold the process past drainTimeout (+2 s);
POST /quitquitquit and SIGINT drain the same way."""

import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.1.2'
SIZE = 200 * z.MiB
RATE = 80 * z.MiB   # bytes/s: ~2.5 s transfer


def make_node(t, drain):
    return z.Node(t, workloads=[
        z.workload('client', CLIENT),
        z.workload('bulk', '127.0.2.5', node='node-b', services={z.svc_key('bulk'): {80: 9000}}),
        z.workload('echo', '127.0.2.3', node='node-b', services={z.svc_key('echo'): {80: 8080}}),
    ], services=[
        z.service('bulk', '127.10.0.2', {80: 9000}),
        z.service('echo', '127.10.0.1', {80: 8080}),
    ], extra={'drainTimeout': drain})


def new_connection_refused(node):
    """True-ish when a new SOCKS5 connection is refused (RST/refused/EOF before any reply)."""
    code, s = z.socks5_try(node.socks5, '127.10.0.1', 80, src=CLIENT, timeout=3)
    if s:
        s.close()
    return code


def main(t):
    bulk = z.BulkServer('127.0.2.5', 9000)
    z.EchoServer('127.0.2.3', 8080)

    def drain_live_transfer():
        node = make_node(t, '10s')
        if not node.start():
            return
        res = {}
        s_up = z.socks5_connect(node.socks5, '127.10.0.2', 80, src=CLIENT)
        s_down = z.socks5_connect(node.socks5, '127.10.0.2', 80, src=CLIENT)

        def up():
            try:
                res['up'] = z.bulk_upload(s_up, SIZE, seed=31, rate=RATE)
            except Exception as e:
                res['up'] = (False, repr(e), 0)
            res['up_end'] = time.monotonic()

        def down():
            try:
                res['down'] = z.bulk_download(s_down, bulk, SIZE, seed=32, rate=RATE)
            except Exception as e:
                res['down'] = (False, repr(e), 0)
            res['down_end'] = time.monotonic()
        ths = [threading.Thread(target=up), threading.Thread(target=down)]
        for th in ths:
            th.start()
        time.sleep(0.7)
        t_term = time.monotonic()
        node.signal(signal.SIGTERM)
        time.sleep(0.3)
        code = new_connection_refused(node)
        t.ok(code in ('refused', 'reset', 'closed'), 'new connections refused during drain',
             'SOCKS5 attempt during drain gave %r' % (code,))
        try:
            st, _ = node.http('readiness', 'GET', '/healthz/ready', timeout=2)
        except OSError as e:
            st = repr(e)
        t.diag('readiness during drain: %r' % (st,))
        for th in ths:
            th.join(30)
        s_up.close()
        s_down.close()
        t.ok(res.get('up', (False,))[0], 'paced 200 MiB upload across SIGTERM finishes byte-exact',
             repr(res.get('up')))
        t.ok(res.get('down', (False,))[0], 'paced 200 MiB download across SIGTERM finishes byte-exact',
             repr(res.get('down')))
        ended = max(res.get('up_end', 0), res.get('down_end', 0))
        t.ok(ended - t_term > 0.5, 'the transfers really were live during the drain',
             'ended %.2f s after SIGTERM' % (ended - t_term))
        rc = node.wait_exit(12)
        t_exit = time.monotonic()
        t.is_(rc, 0, 'zring exits 0 after draining')
        t.diag('exited %.2f s after SIGTERM, %.2f s after the last transfer ended' %
               (t_exit - t_term, t_exit - ended))
        t.ok(t_exit - ended < 3, 'exits soon after the last live connection ended (not at drainTimeout=10s)',
             '%.2f s after' % (t_exit - ended))

    def drain_timeout_idle():
        node = make_node(t, '2s')
        if not node.start():
            return
        s = z.socks5_connect(node.socks5, '127.10.0.1', 80, src=CLIENT)
        s.sendall(b'x')
        z.recv_exact(s, 1)
        t0 = time.monotonic()
        node.signal(signal.SIGTERM)
        rc = node.wait_exit(10)
        dt = time.monotonic() - t0
        t.is_(rc, 0, 'exit status 0 after drainTimeout with a stuck idle connection')
        t.ok(rc is not None and 1.5 <= dt <= 4.0, 'exits about drainTimeout=2s after SIGTERM (<= +2 s)',
             'took %.2f s' % dt)
        r = z.outcome(s, 3)
        t.ok(r in ('eof', 'reset'), 'the stuck connection is closed at exit', 'client saw %r' % (r,))
        s.close()

    def quitquitquit():
        node = make_node(t, '5s')
        if not node.start():
            return
        s = z.socks5_connect(node.socks5, '127.10.0.1', 80, src=CLIENT)
        t0 = time.monotonic()
        try:
            st, body = node.http('admin', 'POST', '/quitquitquit')
        except OSError as e:
            st, body = repr(e), b''
        node.expect_running = False
        t.is_(st, 200, 'POST /quitquitquit answers 200')
        time.sleep(0.3)
        t.ok(new_connection_refused(node) in ('refused', 'reset', 'closed'),
             'new connections refused after /quitquitquit')
        s.sendall(b'still')
        try:
            got = z.recv_exact(s, 5)
        except Exception as e:
            got = repr(e)
        t.is_(got, b'still', 'live connection still works while draining after /quitquitquit')
        s.shutdown(socket.SHUT_WR)
        z.outcome(s, 3)
        s.close()
        rc = node.wait_exit(8)
        t.is_(rc, 0, 'zring exits 0 after /quitquitquit once the connection ended')
        t.diag('exited %.2f s after /quitquitquit' % (time.monotonic() - t0))

    def sigint():
        node = make_node(t, '5s')
        if not node.start():
            return
        t0 = time.monotonic()
        node.signal(signal.SIGINT)
        rc = node.wait_exit(8)
        t.is_(rc, 0, 'SIGINT with no connections: exit 0')
        t.ok(rc is not None and time.monotonic() - t0 < 2, 'promptly (no live connections to wait for)',
             'took %.2f s' % (time.monotonic() - t0))

    def restart_same_ports():
        # ports must be immediately reusable after a clean exit (SO_REUSEADDR)
        node = make_node(t, '5s')
        ok = node.start()
        t.ok(ok, 'a new zring binds the same listeners right after the previous one exited')
        if ok:
            s = z.socks5_connect(node.socks5, '127.10.0.1', 80, src=CLIENT)
            s.sendall(b'ok')
            t.is_(z.recv_exact(s, 2), b'ok', 'and serves')
            s.close()
            t.is_(node.stop(), 0, 'SIGTERM with no connections: exit 0')

    t.subtest('drain a live transfer', drain_live_transfer)
    t.subtest('drainTimeout with a stuck connection', drain_timeout_idle)
    t.subtest('POST /quitquitquit', quitquitquit)
    t.subtest('SIGINT', sigint)
    t.subtest('restart on the same ports', restart_same_ports)


z.Tap('drain', timeout=150).run(main)
