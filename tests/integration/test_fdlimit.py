#!/usr/bin/python3
"""File-descriptor exhaustion without credentials: zring (node B, 127.42.0.2, local
HBONE workload server 127.42.1.2) runs under RLIMIT_NOFILE 256 and a client opens 300
plain TCP connections to 127.42.1.2:15008 and holds them (no TLS, nothing sent). At
its fd limit zring must pause accepting instead of spinning: little CPU, a bounded
log, zring_worker_accept_paused_total counted, and its last fds kept in reserve so
that /metrics and readiness still answer. Once the connections are released it
accepts again and carries a real HBONE CONNECT to an echo server."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

NODE = '127.42.0.2'
SERVER = '127.42.1.2'
CLIENT = '127.42.2.2'
SERVER_ID = z.spiffe('server')
ADDR = (SERVER, 15008)
NOFILE = 256
HOLD = 300
RESERVE = NOFILE // 8  # fds zring keeps from accepted connections (core/worker.c)
WINDOW = 3.0  # seconds measured at the limit


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open('/proc/%d/stat' % pid) as f:
        rest = f.read().rsplit(')', 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf('SC_CLK_TCK')


def main(t):
    why = z.have_h2()
    if why:
        t.skip_all(why)
    z.raise_nofile()
    certs = z.make_certs()
    z.EchoServer(SERVER, 8080)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE'),
    ]
    b = z.hbone_node(t, 'node-b', NODE, certs, [(SERVER_ID, 'server')], wls)
    if not b.start(nofile=NOFILE):
        return
    t.diag('zring fds at start: %s (limit %d)' % (b.fd_count(), NOFILE))
    held = []

    def exhaust():
        # The kernel completes these handshakes from the listen backlog whether or
        # not zring can accept them.
        for _ in range(HOLD):
            held.append(socket.create_connection(ADDR, timeout=5, source_address=(CLIENT, 0)))
        paused = lambda: b.log_text().count('accept paused') >= 2  # noqa: E731
        t.ok(z.wait_until(paused, 5, 0.1), 'both workers pause accepting with %d held connections' % HOLD,
             'fds %s of %d' % (b.fd_count(), NOFILE))
        time.sleep(0.5)
        t.cmp(b.fd_count(), '>=', NOFILE - RESERVE - 8, 'zring used its fds up to the reserve (%d)' % RESERVE)
        cpu0, log0, w0 = cpu_seconds(b.pid), b.log_size(), time.monotonic()
        time.sleep(WINDOW)
        cpu1, log1, w1 = cpu_seconds(b.pid), b.log_size(), time.monotonic()
        frac = (cpu1 - cpu0) / (w1 - w0)
        t.diag('at the fd limit: %.1f%% of one core, %d log bytes in %.1f s, fds %s' %
               (100 * frac, log1 - log0, w1 - w0, b.fd_count()))
        t.cmp(frac, '<', 0.3, 'at its fd limit zring does not spin (CPU time < 30% of one core)')
        t.cmp(log1 - log0, '<', 100 * 1024, 'at its fd limit the log grows by less than 100 KB in %.0f s' % WINDOW)
        t.ok(b.alive(), 'zring alive at its fd limit')
        t.ok(_scrape(b), 'the metrics endpoint answers at the fd limit (the reserve)')
        st = None
        try:
            st, _ = z.http_request(b.addr('readiness'), 'GET', '/healthz/ready', timeout=2)
        except (OSError, z.http.client.HTTPException) as e:
            st = repr(e)
        t.is_(st, 200, 'readiness answers 200 at the fd limit')

    def release():
        for s in held:
            s.close()
        held.clear()
        ok = z.wait_until(lambda: _scrape(b), 15, 0.2)
        t.ok(ok, 'the metrics endpoint answers once the connections are released')
        if not ok:
            return
        samples = b.metrics()
        paused = [(l, v) for n, l, v in samples if n == 'zring_worker_accept_paused_total' and v]
        t.diag('zring_worker_accept_paused_total: %r' % paused)
        t.cmp(z.msum(samples, 'zring_worker_accept_paused_total', reason='fd_limit'), '>', 0,
              'the pauses are counted in zring_worker_accept_paused_total{reason="fd_limit"}')
        t.diag('zring_log_suppressed_total %r' % z.msum(samples, 'zring_log_suppressed_total'))
        pauses = [r for r in b.log_records() if 'accept paused' in str(r.get('msg', ''))]
        t.ok(pauses, 'the pause is logged', 'no "accept paused" line in the log')
        if pauses:
            t.diag('e.g. %s' % pauses[0])

    def works_again():
        c = z.H2Client(certs, ADDR, src=CLIENT)
        try:
            sid = c.connect('%s:8080' % SERVER)
            t.is_(c.response(sid), 200, 'after the release a new HBONE CONNECT is answered 200')
            c.send(sid, b'still here', end_stream=True)
            c.wait(lambda: c.st(sid)['ended'], 5)
            t.is_(bytes(c.st(sid)['data']), b'still here', 'and relays to the echo server and back')
        finally:
            c.close()
        t.ok(b.wait_idle(10), 'zring releases every connection', b.active_diag())
        t.is_(b.stop(), 0, 'zring exits cleanly (SIGTERM) with its accept retry timer still running')

    t.subtest('exhaust', exhaust)
    t.subtest('release', release)
    t.subtest('works again', works_again)
    t.diag('log size %d bytes' % b.log_size())


def _scrape(node):
    try:
        node.metrics_text()
        return True
    except (OSError, RuntimeError, z.http.client.HTTPException):
        return False


if __name__ == '__main__':
    z.Tap('fdlimit', timeout=120).run(main)
