#!/usr/bin/python3
"""HBONE connection pool: 1,000 concurrent SOCKS5 connections from node A
(127.0.0.42) to an HBONE service on node B (127.0.0.43), each echoing a distinct
payload byte-exact. The pool must multiplex them: at most
poolMaxStreamsPerConnection (100) streams per HBONE connection, so between
ceil(1000/100) and workers * ceil(1000/100) + slack client connections;
zring_hbone_pool_reused_total grows by >= 900; streams_active returns to 0.
Then poolIdleTimeout (2s here): idle pooled connections close on both sides,
and the next connection dials a fresh one."""

import os
import selectors
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

N = int(os.environ.get('ZRTEST_POOL_N', 1000))
MAX_STREAMS = 100
PAYLOAD = 8192
CLIENT = '127.0.4.2'
SERVER = '127.0.5.2'
VIP = '127.10.4.2'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')


def payload(i):
    head = b'conn-%06d:' % i
    body = z._POOL[(i * 7919) % (4 * z.MiB):(i * 7919) % (4 * z.MiB) + PAYLOAD - len(head)]
    return head + bytes(body)


def main(t):
    nofile = z.raise_nofile(65536)
    if nofile < 3 * N + 200:
        t.skip_all('RLIMIT_NOFILE %d too low for %d connections' % (nofile, N))
    certs = z.make_certs()
    z.EchoServer(SERVER, 8080)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE',
                   services={z.svc_key('hb-echo'): {80: 8080}}),
    ]
    svcs = [z.service('hb-echo', VIP, {80: 8080}, sans=[SERVER_ID])]
    b = z.hbone_node(t, 'node-b', z.HB_B_IP, certs, [(SERVER_ID, 'server')], wls, svcs)
    a = z.hbone_node(t, 'node-a', z.HB_A_IP, certs, [(CLIENT_ID, 'client')], wls, svcs,
                     extra={'poolIdleTimeout': '2s', 'poolMaxStreamsPerConnection': MAX_STREAMS})
    if not b.start() or not a.start():
        return
    px = a.socks5
    socks = [None] * N
    errors = []

    def opener(idx):
        for i in idx:
            try:
                socks[i] = z.socks5_connect(px, VIP, 80, src=CLIENT, timeout=20)
            except Exception as e:
                errors.append('%d: %r' % (i, e))

    def concurrent():
        reused0 = a.metric('zring_hbone_pool_reused_total')
        t0 = time.monotonic()
        nthreads = 25
        ths = [threading.Thread(target=opener, args=(range(k, N, nthreads),)) for k in range(nthreads)]
        for th in ths:
            th.start()
        peak = {'client': 0.0}

        def sample():
            while any(th.is_alive() for th in ths):
                try:
                    peak['client'] = max(peak['client'], z.hbone_gauge(a, 'client'))
                except Exception:
                    pass
                time.sleep(0.1)
        smp = threading.Thread(target=sample)
        smp.start()
        for th in ths:
            th.join(120)
        smp.join(5)
        opened = sum(1 for s in socks if s is not None)
        t.diag('opened %d SOCKS5 connections in %.2f s' % (opened, time.monotonic() - t0))
        t.is_(opened, N, '%d concurrent SOCKS5 CONNECTs to the HBONE service succeed' % N)
        if errors:
            t.diag('first errors: %r' % errors[:5])

        # all open at once: echo a distinct payload on each, byte-exact
        sel = selectors.DefaultSelector()
        got = {}
        for i, s in enumerate(socks):
            if s is None:
                continue
            s.settimeout(30)
            s.sendall(payload(i))
            s.setblocking(False)
            got[i] = bytearray()
            sel.register(s, selectors.EVENT_READ, i)
        deadline = time.monotonic() + 60
        pending = len(got)
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                i = key.data
                try:
                    d = key.fileobj.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    d = b''
                if d:
                    got[i] += d
                if not d or len(got[i]) >= PAYLOAD:
                    sel.unregister(key.fileobj)
                    pending -= 1
        sel.close()
        good = sum(1 for i, g in got.items() if bytes(g) == payload(i))
        bad = [i for i, g in got.items() if bytes(g) != payload(i)]
        t.is_(good, N, 'every connection echoed its own %d-byte payload byte-exact' % PAYLOAD)
        if bad:
            t.diag('mismatched connections (first 5): %r' % [(i, len(got[i]), bytes(got[i][:16])) for i in bad[:5]])

        ma, mb = a.metrics(), b.metrics()
        cl = z.msum(ma, 'zring_hbone_connections', role='client')
        per = [(l.get('worker'), v) for l, v in z.mfind(ma, 'zring_hbone_connections', role='client')]
        peak['client'] = max(peak['client'], cl)
        limit = a.workers * -(-N // MAX_STREAMS) + 4
        t.diag('client HBONE connections while %d streams open: %r (peak %d), limit %d' % (N, per, peak['client'], limit))
        t.cmp(peak['client'], '<=', limit, 'pool: node A zring_hbone_connections{role="client"} stays small')
        t.cmp(cl, '>=', -(-N // MAX_STREAMS),
              'pool: at least ceil(N / poolMaxStreamsPerConnection) client connections (stream limit honoured)')
        t.cmp(z.msum(mb, 'zring_hbone_connections', role='server'), '==', cl,
              'node B has as many server HBONE connections as A has client ones')
        t.cmp(z.msum(ma, 'zring_hbone_streams_active'), '==', N, 'node A: zring_hbone_streams_active == %d' % N)
        t.cmp(z.msum(mb, 'zring_hbone_streams_active'), '==', N, 'node B: zring_hbone_streams_active == %d' % N)
        reused = z.msum(ma, 'zring_hbone_pool_reused_total') - reused0
        t.cmp(reused, '>=', N - 100, 'zring_hbone_pool_reused_total grew by >= %d' % (N - 100))
        t.cmp(reused + cl, '==', N, 'reused streams + new connections == streams opened',)
        t.cmp(z.tls_failures(a) + z.tls_failures(b), '==', 0, 'no TLS handshake failures')

        for s in socks:
            if s is not None:
                s.close()
        ok = z.wait_until(lambda: a.metric('zring_hbone_streams_active') == 0 and
                          b.metric('zring_hbone_streams_active') == 0, 15, 0.2)
        t.ok(ok, 'zring_hbone_streams_active back to 0 on both nodes after closing',
             'A %r B %r' % (a.metric('zring_hbone_streams_active'), b.metric('zring_hbone_streams_active')))
        t.ok(b.wait_idle(10), 'node B: zring_worker_connections_active back to 0', b.active_diag())
        t.ok(a.wait_idle(10), 'node A: zring_worker_connections_active back to 0', a.active_diag())
        socks[:] = [None] * N

    def idle_timeout():
        # the pooled connections of the burst went idle at most a few seconds ago
        t0 = time.monotonic()
        v = z.wait_until(lambda: z.hbone_gauge(a, 'client') == 0, 8, 0.1)
        dt = time.monotonic() - t0
        t.ok(v, 'poolIdleTimeout 2s: idle client HBONE connections closed', 'still %r after %.1f s'
             % (z.hbone_gauge(a, 'client'), dt))
        v = z.wait_until(lambda: z.hbone_gauge(b, 'server') == 0, 5, 0.1)
        t.ok(v, 'node B closes its side when the pool connection goes away',
             'zring_hbone_connections{role="server"} %r' % z.hbone_gauge(b, 'server'))

        # one stream, then idle: connection stays for ~2 s, closes by ~3.5 s
        s = z.socks5_connect(px, VIP, 80, src=CLIENT)
        s.sendall(b'ping')
        t.is_(z.recv_exact(s, 4), b'ping', 'a new connection after the idle close works (fresh dial)')
        s.close()
        closed_at = time.monotonic()
        time.sleep(1.0)
        t.cmp(z.hbone_gauge(a, 'client'), '>=', 1, '1 s after the last stream the pooled connection is still open')
        # pools are per worker: of k sequential streams, at most one per other worker dials anew
        r0 = a.metric('zring_hbone_pool_reused_total')
        g0 = z.hbone_gauge(a, 'client')
        k = 6
        for i in range(k):
            s = z.socks5_connect(px, VIP, 80, src=CLIENT)
            s.sendall(b'pong')
            z.recv_exact(s, 4)
            s.close()
        closed_at = time.monotonic()
        reused = a.metric('zring_hbone_pool_reused_total') - r0
        g1 = z.hbone_gauge(a, 'client')
        t.ok(reused >= k - (a.workers - 1) and g1 <= a.workers and reused + (g1 - g0) == k,
             'streams within poolIdleTimeout reuse the pooled connection(s)',
             'reused %d of %d; client connections %d -> %d' % (reused, k, g0, g1))
        v = z.wait_until(lambda: z.hbone_gauge(a, 'client') == 0, 6, 0.1)
        dt = time.monotonic() - closed_at
        t.ok(v and dt <= 4.0, 'client HBONE connection closed 2-4 s after its last stream (poolIdleTimeout 2s)',
             'gauge %r after %.2f s' % (z.hbone_gauge(a, 'client'), dt))
        t.ok(dt >= 1.8, 'not closed before poolIdleTimeout', 'closed after %.2f s' % dt)
        t.diag('idle close after %.2f s' % dt)

    t.subtest('1000 concurrent', concurrent)
    t.subtest('idle timeout', idle_timeout)
    t.ok(a.alive() and b.alive(), 'both zring nodes still running at the end')


z.Tap('hbone-pool', timeout=300).run(main)
