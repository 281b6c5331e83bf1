#!/usr/bin/python3
"""zring-bench's modes against its own servers, as real processes on 127.0.30.x:
stream up/down/both (the generator's byte counts against the sink's), rr at a
fixed rate (every request answered, latency percentiles present), crr back to
back and paced; then the same through a real zring node's SOCKS5 listener
(node on 127.0.0.30, client workload 127.0.30.2); SOCKS5 refusals and refused
connections counted by kind with exit status 3; usage errors naming the
argument; the --json schema; the progress line only on a TTY.

usage: test_modes.py PATH-TO-ZRING-BENCH   (zring from $ZRING, as the integration tests)
"""

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
import zrtest as z  # noqa: E402

BENCH = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else 'zring-bench'
SERVER_IP = '127.0.30.1'
CLIENT_IP = '127.0.30.2'
STRANGER_IP = '127.0.30.9'  # no workload of the node: zring refuses it
NODE_IP = '127.0.0.30'
TMP = tempfile.mkdtemp(prefix='zrbench-modes-')


class Server:
    """`zring-bench echo|sink --listen IP:0` as a process; totals from its --json at exit."""

    def __init__(self, mode, ip=SERVER_IP, port=0):
        self.mode = mode
        self.json = os.path.join(TMP, '%s-%d.json' % (mode, time.monotonic_ns()))
        self.proc = subprocess.Popen([BENCH, mode, '--listen', '%s:%d' % (ip, port), '--threads', '1',
                                      '--json', self.json],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._cleanup = z.on_cleanup(self._kill)
        line = self.proc.stdout.readline()
        m = re.search(r'listening on (\S+):(\d+)', line)
        if not m:
            raise RuntimeError('%s did not start: %r' % (mode, line + self.proc.stdout.read()))
        self.addr = '%s:%s' % (m.group(1), m.group(2))

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, settle=1.0):
        """SIGTERM after `settle` s (so the last bytes in socket buffers get read); returns totals."""
        time.sleep(settle)
        self.proc.send_signal(signal.SIGTERM)
        out = self.proc.communicate(timeout=10)[0]
        z.run_cleanup(self._cleanup)
        self.rc = self.proc.returncode
        self.out = out
        with open(self.json) as f:
            return json.load(f)


def bench(*args, timeout=60):
    """Runs zring-bench with a --json report; returns (rc, stdout, stderr, report or None)."""
    path = os.path.join(TMP, 'r-%d.json' % time.monotonic_ns())
    p = subprocess.run([BENCH, *args, '--json', path], capture_output=True, text=True, timeout=timeout)
    rep = None
    if os.path.exists(path):
        with open(path) as f:
            rep = json.load(f)
    return p.returncode, p.stdout, p.stderr, rep


def errors_total(rep):
    return rep['errors']['total'] if rep else None


def check_stream(t, label, extra, direction, connections=1):
    sink = Server('sink')
    rc, out, err, rep = bench('stream', '--target', sink.addr, '--direction', direction,
                              '--connections', str(connections), '--duration', '1.5', '--warmup', '0',
                              *extra)
    tot = sink.stop()
    if not t.ok(rc == 0 and rep, '%s stream %s: exit 0 with a report' % (label, direction),
                'rc %d\n%s%s' % (rc, out, err)):
        return
    t.is_(errors_total(rep), 0, '%s stream %s: no errors' % (label, direction))
    if direction in ('up', 'both'):
        t.cmp(rep['bytes_sent'], '>', 10 * z.MiB, '%s stream %s: more than 10 MiB sent' % (label, direction))
        t.is_(rep['bytes_sent'], tot['bytes_in'],
              '%s stream %s: bytes the generator sent == bytes the sink received' % (label, direction))
    else:
        t.is_(rep['bytes_sent'], 0, '%s stream down: the generator sent no data' % label)
    if direction in ('down', 'both'):
        t.ok(0 < rep['bytes_received'] <= tot['bytes_out'],
             '%s stream %s: received > 0 and <= what the sink sent' % (label, direction),
             'received %r, sink sent %r' % (rep['bytes_received'], tot['bytes_out']))
    t.is_(len(rep['per_connection_bytes']), connections,
          '%s stream %s: one per-connection figure per connection' % (label, direction))
    t.ok(len(rep['series_gbps']) >= 12 and rep['gbps'] > 0,
         '%s stream %s: a 100 ms throughput series over the run (%d points, %.2f Gbit/s)'
         % (label, direction, len(rep['series_gbps']), rep['gbps']))


def check_rr(t, label, extra, rate=2000, duration=2.0):
    echo = Server('echo')
    rc, out, err, rep = bench('rr', '--target', echo.addr, '--rate', str(rate), '--connections', '4',
                              '--duration', str(duration), '--warmup', '0.5', *extra)
    tot = echo.stop(settle=0.2)
    if not t.ok(rc == 0 and rep, '%s rr: exit 0 with a report' % label, 'rc %d\n%s%s' % (rc, out, err)):
        return
    want = rate * duration
    t.is_(errors_total(rep), 0, '%s rr: no errors' % label)
    t.is_(rep['responses_received'], rep['requests_sent'], '%s rr: every request answered' % label)
    t.ok(abs(rep['responses_received'] - want) <= want * 0.02,
         '%s rr: %d responses for %d req/s over %.1f s' % (label, rep['responses_received'], rate, duration))
    lat = rep['latency_us']
    t.ok(all(lat[k] and lat[k] > 0 for k in ('p50', 'p90', 'p99', 'p99_9', 'max'))
         and lat['p50'] <= lat['p99'] <= lat['max'],
         '%s rr: latency percentiles present, > 0 and ordered (p50 %.0f us, p99 %.0f us)'
         % (label, lat['p50'] or 0, lat['p99'] or 0))
    t.is_(lat['count'], rep['responses_received'], '%s rr: one latency sample per response' % label)
    t.cmp(tot['requests'], '>=', rep['responses_received'],
          '%s rr: the echo server saw at least as many requests' % label)


def check_crr(t, label, extra, rate=None):
    echo = Server('echo')
    args = ['crr', '--target', echo.addr, '--connections', '2', '--duration', '1.5', '--warmup', '0.3']
    if rate:
        args += ['--rate', str(rate)]
    rc, out, err, rep = bench(*args, *extra)
    tot = echo.stop(settle=0.2)
    what = '%s crr%s' % (label, ' at %d/s' % rate if rate else '')
    if not t.ok(rc == 0 and rep, '%s: exit 0 with a report' % what, 'rc %d\n%s%s' % (rc, out, err)):
        return
    t.is_(errors_total(rep), 0, '%s: no errors' % what)
    t.ok(rep['responses_received'] > 0 and rep['connections_completed'] == rep['responses_received']
         == rep['requests_sent'], '%s: %d cycles, each one connection, one request, one response'
         % (what, rep['responses_received']))
    if rate:
        want = rate * 1.5
        t.ok(abs(rep['responses_received'] - want) <= want * 0.05,
             '%s: paced (%d cycles, %d expected)' % (what, rep['responses_received'], want))
    t.cmp(tot['connections'], '>=', rep['connections_completed'], '%s: the server accepted them all' % what)
    t.ok((rep['latency_us']['p50'] or 0) > 0, '%s: latency from the intended start recorded' % what)


def check_crr_overload(t):
    # Paced past what the echo can do, the run ends at its timeout with cycles
    # still closing: a cycle answered (or failed) just before is not counted
    # again as a timeout. Every due cycle is answered or an error, once.
    echo = Server('echo')
    sums = []
    for _ in range(4):
        rc, out, err, rep = bench('crr', '--target', echo.addr, '--connections', '2', '--rate', '40000',
                                  '--duration', '0.3', '--warmup', '0', '--timeout', '0.2')
        sums.append(rep and rep['responses_received'] + errors_total(rep))
    echo.stop(settle=0)
    t.ok(sums == [12000] * 4, 'crr overloaded to its timeout: answered + errors == the 12000 due, no double count',
         repr(sums))


def check_usage(t):
    cases = [
        (['rr', '--target', '127.0.30.1:1'], '--rate: required for rr'),
        (['stream', '--connections', 'abc', '--target', '127.0.30.1:1'], "--connections: 'abc' is not a number"),
        (['stream', '--target', '127.0.30.1:1', '--frobnicate'], "unknown option '--frobnicate'"),
        (['crr'], '--target: required for crr'),
        (['stream', '--target', '127.0.30.1:1', '--duration', 'soon'], "--duration: 'soon' is not a duration"),
        (['stream', '--target', '127.0.30.1:1', '--direction', 'sideways'], "--direction: 'sideways'"),
        (['stream', '--target', 'nocolon'], "--target: 'nocolon' is not HOST:PORT"),
        (['stream', '--target', '127.0.30.1:1', '--rate', '5'], '--rate: not an option of stream'),
        (['echo'], '--listen: required for echo'),
        (['rr', '--target', '127.0.30.1:1', '--rate'], '--rate: needs a value'),
    ]
    for args, msg in cases:
        p = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=10)
        t.ok(p.returncode == 1 and msg in p.stderr and p.stdout == '',
             'usage error, exit 1: zring-bench %s' % ' '.join(args), 'rc %d stderr %r' % (p.returncode, p.stderr))
    p = subprocess.run([BENCH, 'echo', '--listen', '192.0.2.1:5000', '--threads', '1'],
                       capture_output=True, text=True, timeout=10)
    t.ok(p.returncode == 2 and '--listen: cannot listen on 192.0.2.1:5000' in p.stderr,
         'a server that cannot listen (address not on this host) exits 2 naming --listen', p.stderr)
    p = subprocess.run([BENCH, 'stream', '--target', '127.0.30.1:9', '--bind', '192.0.2.77',
                        '--duration', '0.2', '--warmup', '0'], capture_output=True, text=True, timeout=10)
    t.ok(p.returncode == 2 and '--bind' in p.stderr, 'a --bind address the host lacks: exit 2 naming --bind',
         'rc %d %r' % (p.returncode, p.stderr))


def check_refused(t):
    # A port nobody listens on: the run completes, errors counted, exit 3.
    rc, out, err, rep = bench('rr', '--target', '127.0.30.1:9', '--rate', '100', '--connections', '2',
                              '--duration', '0.5', '--warmup', '0', '--timeout', '0.3')
    t.ok(rc == 3 and rep and rep['errors']['connect'] > 0,
         'connection refused: exit 3, counted as connect errors (%r)' % (rep and rep['errors']),
         'rc %d %s' % (rc, err))
    t.ok(rep and rep['errors']['timeout'] > 0 and rep['responses_received'] == 0,
         'the requests scheduled meanwhile are counted as failed, not dropped')
    t.ok('errors during the run' in err, 'stderr says why the status is 3')


def check_json_and_tty(t):
    echo = Server('echo')
    rc, out, err, rep = bench('rr', '--target', echo.addr, '--rate', '500', '--duration', '1', '--warmup', '0')
    keys = ['schema', 'mode', 'env', 'options', 'elapsed_s', 'bytes_sent', 'bytes_received', 'requests_sent',
            'responses_received', 'latency_us', 'errors', 'per_connection_bytes', 'generator']
    t.ok(rep and all(k in rep for k in keys), '--json: the report has its keys',
         'missing %r' % [k for k in keys if not rep or k not in rep])
    t.ok(rep and rep['env'].get('command_line', '').startswith('zring-bench rr --target')
         and rep['env'].get('cores', 0) >= 1, '--json: env with the command line')
    g = (rep or {}).get('generator', {})
    t.ok(all(k in g for k in ('cpu_user_s', 'cpu_sys_s', 'busiest_thread_util', 'saturated')),
         '--json: the generator\'s own CPU and saturation')
    t.ok('\r' not in out and 'latency' in out, 'stdout not a TTY: the table, and no \\r progress line')

    # On a TTY: the progress line is drawn with \r and cleared at the end.
    master, slave = pty.openpty()
    p = subprocess.Popen([BENCH, 'rr', '--target', echo.addr, '--rate', '500', '--duration', '1.2',
                          '--warmup', '0'], stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    buf = b''
    while True:
        r, _, _ = select.select([master], [], [], 10)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    p.wait(timeout=10)
    os.close(master)
    text = buf.decode(errors='replace')
    t.ok(text.count('\r') >= 3 and 'req/s' in text and '\r\x1b[K' in text,
         'stdout a TTY: a live progress line redrawn with \\r, cleared at the end', repr(text[:300]))
    echo.stop(settle=0)


SERVICE_PORT = 5399  # the echo behind the service VIP / hostname: a fixed port, named in the config


def check_hostname(t, px):
    # The target as a service hostname: sent to the proxy as a SOCKS5 domain name.
    echo = Server('echo', port=SERVICE_PORT)
    host = '%s:80' % z.hostname('bench-echo')
    rc, out, err, rep = bench('rr', '--target', host, '--rate', '500', '--connections', '2', '--duration', '1',
                              '--warmup', '0.3', '--via-socks5', px, '--bind', CLIENT_IP)
    tot = echo.stop(settle=0.2)
    t.ok(rc == 0 and rep and rep['errors']['total'] == 0 and rep['responses_received'] == 500,
         'rr via zring to a service hostname (SOCKS5 domain name): 500 answered, no errors',
         'rc %d %s %r' % (rc, err, rep and rep['errors']))
    t.cmp(tot['requests'], '>=', 500, 'the echo behind the service got them')


def via_zring(t):
    node = z.Node(t, name='node-a', ip=NODE_IP, workloads=[
        z.workload('bench-client', CLIENT_IP),
        z.workload('bench-server', SERVER_IP, node='node-b',
                   services={z.svc_key('bench-echo'): {80: SERVICE_PORT}}),
    ], services=[z.service('bench-echo', '127.10.30.1', {80: SERVICE_PORT})])
    if not node.start():
        return
    px = '%s:%d' % node.socks5
    via = ['--via-socks5', px, '--bind', CLIENT_IP]
    t.subtest('stream up via zring', check_stream, t, 'via zring', via, 'up')
    t.subtest('stream both via zring', check_stream, t, 'via zring', via, 'both', connections=2)
    t.subtest('rr via zring', check_rr, t, 'via zring', via, 1000, 1.5)
    t.subtest('crr via zring', check_crr, t, 'via zring', via, 200)
    t.subtest('rr via zring by hostname', check_hostname, t, px)

    # A source that is no workload of the node: zring refuses the SOCKS5 request.
    echo = Server('echo')
    rc, out, err, rep = bench('rr', '--target', echo.addr, '--rate', '50', '--connections', '1',
                              '--duration', '0.5', '--warmup', '0', '--via-socks5', px, '--bind', STRANGER_IP)
    echo.stop(settle=0)
    t.ok(rc == 3 and rep and rep['errors']['socks5'] > 0 and rep['responses_received'] == 0,
         'a SOCKS5 refusal is counted as a socks5 error, exit 3 (%r)' % (rep and rep['errors']),
         'rc %d %s' % (rc, err))
    t.ok(node.alive(), 'the zring node is still running')


def main(t):
    if not os.access(BENCH, os.X_OK):
        t.ok(False, 'zring-bench at %s' % BENCH)
        return
    for d in ('up', 'down', 'both'):
        t.subtest('stream ' + d, check_stream, t, 'direct', [], d, 2 if d == 'both' else 1)
    t.subtest('rr', check_rr, t, 'direct', [])
    t.subtest('crr', check_crr, t, 'direct', [])
    t.subtest('crr paced', check_crr, t, 'direct', [], 400)
    t.subtest('crr overloaded', check_crr_overload, t)
    t.subtest('usage errors', check_usage, t)
    t.subtest('refused', check_refused, t)
    t.subtest('json and tty', check_json_and_tty, t)
    if os.access(z.ZRING, os.X_OK):
        via_zring(t)
    else:
        t.skip('via a zring node', 'no zring binary at %s' % z.ZRING)


z.Tap('perf-modes', timeout=240).run(main)
