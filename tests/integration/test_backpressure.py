#!/usr/bin/python3
"""Bounded memory per connection. A server that never reads (upload) and a client
that never reads (download): zring must stop reading the fast side, so its RSS
grows by less than 64 MiB while the writer keeps trying for 3 s, and the writer
gets stuck after a bounded amount; once the slow side reads, every byte arrives
in order. Meanwhile another connection keeps flowing at full speed."""

import hashlib
import os
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.1.2'
RSS_LIMIT_KB = 64 * 1024
# kernel socket buffers on the path (client sndbuf, zring rcvbuf/sndbuf, server rcvbuf)
# are at most tcp_wmem[2]/tcp_rmem[2] each; anything far above that is zring buffering
SENT_LIMIT = 128 * z.MiB


def push_until_blocked(s, seconds):
    """Non-blocking writes for `seconds`; returns (bytes accepted, sha256 of them)."""
    h = hashlib.sha256()
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + seconds
    gen = z.gen_blocks(1 << 40, seed=77, block=256 * 1024)
    pending = memoryview(b'')
    while time.monotonic() < deadline:
        if not pending:
            pending = next(gen)
        _, w, _ = select.select([], [s], [], 0.1)
        if not w:
            continue
        try:
            n = s.send(pending)
        except (BlockingIOError, InterruptedError):
            continue
        h.update(pending[:n])
        pending = pending[n:]
        sent += n
    s.setblocking(True)
    return sent, h.hexdigest()


def main(t):
    hole = z.BlackholeServer('127.0.2.7', 8080)
    hole2 = z.BlackholeServer('127.0.2.8', 8080)
    bulk = z.BulkServer('127.0.2.5', 9000)
    node = z.Node(t, workloads=[
        z.workload('client', CLIENT),
        z.workload('hole', '127.0.2.7', node='node-b'),
        z.workload('hole2', '127.0.2.8', node='node-b'),
        z.workload('bulk', '127.0.2.5', node='node-b', services={z.svc_key('bulk'): {80: 9000}}),
    ], services=[z.service('bulk', '127.10.0.2', {80: 9000})])
    if not node.start():
        return
    px = node.socks5

    def warm_up():
        # touch the workers' buffer pools first, so RSS growth below is per-connection state
        for i in range(4):
            s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
            ok, detail, _ = z.bulk_upload(s, 64 * z.MiB, seed=70 + i)
            s.close()
            t.ok(ok, 'warm-up transfer %d byte-exact' % i, detail)

    def slow_server():
        rss0 = node.rss_kb()
        fast = {}

        def fast_flow():
            s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
            fast['r'] = z.bulk_upload(s, 512 * z.MiB, seed=78)
            s.close()
        s = z.socks5_connect(px, '127.0.2.7', 8080, src=CLIENT)
        th = threading.Thread(target=fast_flow)
        th.start()
        sent, digest = push_until_blocked(s, 3.0)
        rss1 = node.rss_kb()
        th.join(60)
        t.diag('server never reads: client got %.1f MiB accepted in 3 s; zring RSS %d -> %d KiB' %
               (sent / z.MiB, rss0, rss1))
        t.cmp(rss1 - rss0, '<', RSS_LIMIT_KB, 'zring RSS grows < 64 MiB while the upstream never reads')
        t.cmp(sent, '<', SENT_LIMIT, 'the client is stopped after a bounded amount (backpressure)')
        r = fast.get('r')
        t.ok(r and r[0], 'another connection meanwhile moves 512 MiB byte-exact', repr(r))
        if r:
            t.diag('fast connection meanwhile: ' + z.rate_str(512 * z.MiB, r[2]))
            t.ok(r[2] < 30, 'at a reasonable rate')
        pauses = node.metric('zring_worker_backpressure_pauses_total')
        t.diag('zring_worker_backpressure_pauses_total = %r' % pauses)
        # release: everything must arrive, in order
        s.shutdown(socket.SHUT_WR)
        hole.release()
        got = z.wait_until(lambda: hole.drained, 30, 0.1)
        t.ok(got and got[0] == (sent, digest), 'once the server reads, it gets every byte in order',
             'server %r, client sent %r' % (got and got[0], (sent, digest)))
        s.close()

    def slow_client():
        # download: the client never reads; the server pushes as fast as it can
        rss0 = node.rss_kb()
        a0 = node.active()
        s = z.socks5_connect(px, '127.10.0.2', 80, src=CLIENT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b'DOWN %d 79\n' % (4 * z.GiB))
        time.sleep(3.0)
        rss1 = node.rss_kb()
        t.diag('client never reads: zring RSS %d -> %d KiB' % (rss0, rss1))
        t.cmp(rss1 - rss0, '<', RSS_LIMIT_KB, 'zring RSS grows < 64 MiB while the client never reads')
        # read for a while: data must be the right stream from the start
        s.settimeout(10)
        want = z.gen_blocks(64 * z.MiB, seed=79)
        h1, h2 = hashlib.sha256(), hashlib.sha256()
        n = 0
        while n < 64 * z.MiB:
            d = s.recv(min(1 << 20, 64 * z.MiB - n))
            if not d:
                break
            h1.update(d)
            n += len(d)
        for b in want:
            h2.update(b)
        t.ok(n == 64 * z.MiB and h1.hexdigest() == h2.hexdigest(),
             'after the stall the first 64 MiB arrive byte-exact', 'got %d bytes' % n)
        z.set_linger_rst(s)
        s.close()
        v = node.wait_active(a0, 10)
        t.ok(v, 'client reset tears the stalled download down (active back to %d)' % a0,
             node.active_diag())

    def many_slow():
        # 16 stalled uploads at once: memory stays bounded overall
        rss0 = node.rss_kb()
        a0 = node.active()
        socks = [z.socks5_connect(px, '127.0.2.8', 8080, src=CLIENT) for _ in range(16)]
        total = [0]

        def push(s):
            n, _ = push_until_blocked(s, 3.0)
            total[0] += n
        ths = [threading.Thread(target=push, args=(s,)) for s in socks]
        for th in ths:
            th.start()
        for th in ths:
            th.join(20)
        rss1 = node.rss_kb()
        t.diag('16 stalled uploads: %.1f MiB accepted; zring RSS %d -> %d KiB' % (total[0] / z.MiB, rss0, rss1))
        t.cmp(rss1 - rss0, '<', 4 * RSS_LIMIT_KB, 'zring RSS grows < 256 MiB with 16 stalled connections')
        for s in socks:
            z.set_linger_rst(s)
            s.close()
        v = node.wait_active(a0, 10)
        t.ok(v, 'connections whose upstream is stalled are torn down when the client resets '
             '(active back to %d)' % a0,
             node.active_diag())

    t.subtest('warm-up', warm_up)
    t.subtest('upstream never reads', slow_server)
    t.subtest('client never reads', slow_client)
    t.subtest('16 stalled uploads', many_slow)
    t.ok(node.alive(), 'zring still running at the end')


z.Tap('backpressure', timeout=150).run(main)
