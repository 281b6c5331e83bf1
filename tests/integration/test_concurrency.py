#!/usr/bin/python3
"""1,000 connections open at once through SOCKS5, each echoing a distinct
payload byte-exact; afterwards zring_worker_connections_active returns to 0 and
istio_tcp_connections_opened/closed_total count them all."""

import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

N = int(os.environ.get('ZRTEST_CONNS', 1000))
CLIENT = '127.0.1.2'
PAYLOAD = 4096


def payload(i):
    head = b'conn-%06d:' % i
    body = z._POOL[(i * 4093) % (z._POOL_SIZE - PAYLOAD):][:PAYLOAD - len(head)]
    return head + bytes(body)


def main(t):
    limit = z.raise_nofile(16384)
    t.diag('RLIMIT_NOFILE = %d' % limit)
    echos = [z.EchoServer('127.0.2.3', 8080, backlog=4096), z.EchoServer('127.0.2.4', 8080, backlog=4096)]
    node = z.Node(t, workloads=[
        z.workload('client', CLIENT),
        z.workload('echo-1', '127.0.2.3', node='node-b', services={z.svc_key('echo'): {80: 8080}}),
        z.workload('echo-2', '127.0.2.4', node='node-b', services={z.svc_key('echo'): {80: 8080}}),
    ], services=[z.service('echo', '127.10.0.1', {80: 8080})])
    if not node.start():
        return
    px = node.socks5
    m0 = node.metrics()
    labels = dict(reporter='source', source_workload='client')
    opened0 = z.msum(m0, 'istio_tcp_connections_opened_total', **labels)
    closed0 = z.msum(m0, 'istio_tcp_connections_closed_total', **labels)
    socks = []

    def open_all():
        t0 = time.monotonic()
        failures = []
        for i in range(N):
            try:
                socks.append(z.socks5_connect(px, '127.10.0.1', 80, src=CLIENT, timeout=10))
            except Exception as e:
                failures.append((i, repr(e)))
                if len(failures) > 20:
                    break
        t.ok(not failures and len(socks) == N, '%d SOCKS5 connections open at once' % N,
             'opened %d; first failures: %r' % (len(socks), failures[:5]))
        t.diag('opened %d connections in %.2f s' % (len(socks), time.monotonic() - t0))
        active = node.metric('zring_worker_connections_active')
        t.cmp(active, '>=', len(socks), 'zring_worker_connections_active counts the open connections')
        per = [e.accepted for e in echos]
        t.diag('echo servers accepted: %r' % per)

    def echo_all():
        # send all payloads, then collect all echoes with a selector (all connections live)
        sel = selectors.DefaultSelector()
        want = {}
        for i, s in enumerate(socks):
            s.settimeout(10)
            s.sendall(payload(i))
        for i, s in enumerate(socks):
            s.setblocking(False)
            want[s] = [i, bytearray()]
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        pending = len(socks)
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                s = key.fileobj
                i, buf = want[s]
                try:
                    d = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    d = b''
                if d:
                    buf += d
                if not d or len(buf) >= PAYLOAD:
                    sel.unregister(s)
                    pending -= 1
        sel.close()
        bad = [i for s, (i, buf) in want.items() if bytes(buf) != payload(i)]
        t.ok(not bad and pending == 0, 'all %d connections echo their own payload byte-exact' % len(socks),
             '%d wrong, %d without answer; e.g. %r' % (len(bad), pending, bad[:10]))
        # close: half-close first, expect EOF, then close
        eofs = 0
        for s in socks:
            s.setblocking(True)
            s.settimeout(10)
            try:
                s.shutdown(socket.SHUT_WR)
                if s.recv(100) == b'':
                    eofs += 1
            except OSError:
                pass
            s.close()
        t.is_(eofs, len(socks), 'every connection ends with EOF after the client half-closes')

    def back_to_zero():
        active = z.wait_until(lambda: node.metric('zring_worker_connections_active') == 0, 15, 0.2)
        t.ok(active, 'zring_worker_connections_active returns to 0',
             node.active_diag())
        m = node.metrics()
        opened = z.msum(m, 'istio_tcp_connections_opened_total', **labels) - opened0
        closed = z.msum(m, 'istio_tcp_connections_closed_total', **labels) - closed0
        t.cmp(opened, '>=', N, 'istio_tcp_connections_opened_total{reporter="source",source_workload="client"} +%d' % N)
        t.cmp(closed, '>=', N, 'istio_tcp_connections_closed_total{reporter="source",source_workload="client"} +%d' % N)
        fds = node.fd_count()
        t.diag('zring open fds now: %r' % fds)
        t.cmp(fds, '<', 200, 'zring released the connections\' file descriptors')

    def second_wave():
        # the same again with a different pattern: open/close churn, 2 x N sequential short connections
        t0 = time.monotonic()
        bad = 0
        for i in range(N):
            try:
                s = z.socks5_connect(px, '127.10.0.1', 80, src=CLIENT, timeout=10)
                s.sendall(b'%d' % i)
                s.shutdown(socket.SHUT_WR)
                if z.recv_all(s) != b'%d' % i:
                    bad += 1
                s.close()
            except Exception:
                bad += 1
        t.is_(bad, 0, '%d sequential short connections all echo correctly' % N)
        t.diag('%d short connections in %.2f s' % (N, time.monotonic() - t0))
        active = z.wait_until(lambda: node.metric('zring_worker_connections_active') == 0, 15, 0.2)
        t.ok(active, 'zring_worker_connections_active returns to 0 after churn', node.active_diag() + '; fds %r' % node.fd_count())

    t.subtest('open all', open_all)
    if socks:
        t.subtest('echo all', echo_all)
    t.subtest('back to zero', back_to_zero)
    t.subtest('churn', second_wave)
    t.ok(node.alive(), 'zring still running at the end')


z.Tap('concurrency', timeout=240).run(main)
