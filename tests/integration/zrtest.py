"""Shared helpers for zring's integration tests.

Stdlib only (plus PyYAML for writing configs), run with Debian's /usr/bin/python3.
Every test script puts this folder on sys.path and does:

    t = zrtest.Tap('socks5', timeout=240)
    t.run(main)            # main(t) calls t.subtest(...) / t.ok(...)

What lives here: TAP output; a watchdog so a test never hangs; a Node class that
writes a config, runs `zring --config FILE` and always cleans it up; echo, bulk
(sink/source) and black-hole servers; a SOCKS5 client; checksummed bulk
transfers; Prometheus text parsing; network namespaces, veth pairs and
iptables rules that are always removed again.

Conventions (see DESIGN.md "Test topology on one machine"): node A listens on
127.0.0.2, its workloads are 127.0.1.x, remote workloads (node-b) 127.0.2.x,
service VIPs 127.10.0.x; namespaces use 198.18.0.0/15 only.
"""

import atexit
import ctypes
import errno
import glob
import hashlib
import http.client
import json
import os
import random
import resource
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import yaml  # python3-yaml
except ImportError:  # pragma: no cover - configs are then written as JSON
    yaml = None

MiB = 1 << 20
GiB = 1 << 30

NODE_IP = '127.0.0.2'


# --------------------------------------------------------------------------
# zring binary
# --------------------------------------------------------------------------

def zring_path():
    p = os.environ.get('ZRING')
    if p:
        return p
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
    # The plain build first (make test's), then any other build folder.
    for cand in [os.path.join(root, 'build', 'zring')] + sorted(glob.glob(os.path.join(root, 'build*', 'zring'))):
        if os.access(cand, os.X_OK):
            return cand
    return 'zring'


ZRING = zring_path()


# --------------------------------------------------------------------------
# cleanup registry: LIFO, run at exit, on SIGTERM and on the watchdog
# --------------------------------------------------------------------------

_cleanups = []
_cleanup_lock = threading.Lock()


def on_cleanup(fn, *args):
    """Registers fn(*args) to run once at exit (LIFO). Returns a handle for forget()."""
    entry = [fn, args, False]
    with _cleanup_lock:
        _cleanups.append(entry)
    return entry


def run_cleanup(entry):
    """Runs one registered cleanup now (once)."""
    with _cleanup_lock:
        if entry[2]:
            return
        entry[2] = True
    try:
        entry[0](*entry[1])
    except Exception as e:  # cleanup must never raise
        _print('# cleanup %s failed: %r' % (getattr(entry[0], '__name__', entry[0]), e))


def cleanup_all():
    while True:
        with _cleanup_lock:
            pending = [e for e in _cleanups if not e[2]]
        if not pending:
            return
        run_cleanup(pending[-1])


atexit.register(cleanup_all)

_print_lock = threading.Lock()


def _print(line):
    with _print_lock:
        sys.stdout.write(line + '\n')
        sys.stdout.flush()


# --------------------------------------------------------------------------
# TAP
# --------------------------------------------------------------------------

class TestTimeout(BaseException):
    """Raised in the main thread by the per-test alarm."""


class Tap:
    """TAP 13 producer with a per-test alarm and a hard watchdog.

    Exit status: 0 when run under meson (ZRTEST_MESON=1: meson's TAP parser
    decides pass/fail from the ok/not ok lines, and a skip-all plan is a
    SKIP); otherwise 1 if anything failed and 77 for a skip-all.
    """

    def __init__(self, name, timeout=300):
        self.name = name
        self.n = 0
        self.failed = 0
        self.nodes = []
        self.timeout = timeout
        self.t0 = time.monotonic()
        _print('TAP version 13')
        _print('# %s: zring = %s' % (name, ZRING))
        if env_tls():
            _print('# %s: tls settings from the environment: %s' % (name, env_tls()))
        signal.signal(signal.SIGALRM, self._alarm)
        signal.signal(signal.SIGTERM, self._sigterm)
        signal.alarm(timeout)
        wd = threading.Thread(target=self._watchdog, daemon=True)
        wd.start()

    # -- timeouts
    def _alarm(self, signum, frame):
        raise TestTimeout('test exceeded its %d s alarm' % self.timeout)

    def _sigterm(self, signum, frame):
        _print('Bail out! killed by SIGTERM (harness timeout?)')
        cleanup_all()
        os._exit(1)

    def _watchdog(self):
        time.sleep(self.timeout + 30)
        _print('Bail out! hard watchdog: test still running %d s after its alarm' % 30)
        cleanup_all()
        os._exit(1)

    # -- results
    def ok(self, cond, desc, diag=None, todo=None):
        """todo: a reason; the check is then reported as TODO (a known gap, not a failure)."""
        self.n += 1
        desc = desc.replace('#', 'No.').replace('\n', ' ')
        if todo:
            _print('%s %d - %s # TODO %s' % ('ok' if cond else 'not ok', self.n, desc, todo))
            if not cond and diag:
                self.diag(diag)
            return bool(cond)
        if cond:
            _print('ok %d - %s' % (self.n, desc))
        else:
            self.failed += 1
            _print('not ok %d - %s' % (self.n, desc))
            if diag:
                self.diag(diag)
        return bool(cond)

    def is_(self, got, want, desc):
        return self.ok(got == want, desc, 'got:  %r\nwant: %r' % (got, want))

    def cmp(self, got, op, want, desc):
        ops = {'>=': lambda a, b: a >= b, '<=': lambda a, b: a <= b,
               '>': lambda a, b: a > b, '<': lambda a, b: a < b,
               '==': lambda a, b: a == b, '!=': lambda a, b: a != b}
        return self.ok(got is not None and ops[op](got, want), desc,
                       'got %r, want %s %r' % (got, op, want))

    def skip(self, desc, reason):
        self.n += 1
        _print('ok %d - %s # SKIP %s' % (self.n, desc.replace('#', 'No.'), reason))

    def diag(self, msg):
        for line in str(msg).splitlines() or ['']:
            _print('# ' + line)

    def skip_all(self, reason):
        _print('1..0 # SKIP %s' % reason)
        cleanup_all()
        sys.stdout.flush()
        os._exit(0 if os.environ.get('ZRTEST_MESON') else 77)

    def require_root(self):
        if os.geteuid() != 0:
            self.skip_all('needs root (network namespaces, iptables)')
        for tool in ('ip', 'iptables'):
            if not shutil.which(tool):
                self.skip_all('needs %s' % tool)

    # -- structure
    def subtest(self, name, fn, *args, **kw):
        """Runs fn(*args); an exception becomes a 'not ok'. Checks nodes stay alive."""
        self.diag('--- %s' % name)
        t0 = time.monotonic()
        try:
            fn(*args, **kw)
        except TestTimeout:
            self.ok(False, '%s: finished before the test alarm' % name)
            raise
        except Exception as e:
            self.ok(False, '%s: raised %s: %s' % (name, type(e).__name__, e),
                    traceback.format_exc())
        self.diag('    (%s took %.2f s)' % (name, time.monotonic() - t0))
        for node in self.nodes:
            if node.expect_running and node.proc is not None and node.proc.poll() is not None:
                self.ok(False, 'zring (%s) still running after "%s"' % (node.name, name),
                        'exit status %s' % node.proc.returncode)
                node.expect_running = False

    def run(self, main):
        try:
            main(self)
        except TestTimeout as e:
            self.ok(False, str(e), traceback.format_exc())
        except Exception as e:
            self.ok(False, 'unexpected %s: %s' % (type(e).__name__, e), traceback.format_exc())
        finally:
            signal.alarm(0)
            if self.failed:
                for node in self.nodes:
                    node.dump_log(self)
            cleanup_all()
        _print('1..%d' % self.n)
        _print('# %s: %d/%d passed in %.1f s' % (self.name, self.n - self.failed, self.n,
                                                 time.monotonic() - self.t0))
        sys.stdout.flush()
        if os.environ.get('ZRTEST_MESON'):
            os._exit(0)
        os._exit(1 if self.failed else 0)


def raise_nofile(n=16384):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_until(fn, timeout, interval=0.05):
    """Polls fn() until truthy or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------
# config building
# --------------------------------------------------------------------------

def workload(name, ip, node='node-a', protocol='TCP', services=None, namespace='default',
             sa=None, **extra):
    """A local-state workload (ztunnel LOCAL_XDS shape). services: {"ns/host": {80: 8080}}."""
    ips = ip if isinstance(ip, list) else [ip]
    w = {
        'uid': 'cluster1//v1/Pod/%s/%s' % (namespace, name),
        'name': name,
        'namespace': namespace,
        'serviceAccount': sa or name,
        'workloadIps': ips,
        'protocol': protocol,
        'node': node,
        'network': '',
        'canonicalName': name,
        'canonicalRevision': 'v1',
    }
    if services:
        w['services'] = services
    w.update(extra)
    return w


def service(name, vip, ports, namespace='default', sans=None):
    """A local-state service; vip may be a list. ports: {80: 8080}."""
    vips = vip if isinstance(vip, list) else [vip]
    return {
        'name': name,
        'namespace': namespace,
        'hostname': hostname(name, namespace),
        'vips': ['/' + v for v in vips],
        'ports': ports,
        'subjectAltNames': sans or [],
    }


def hostname(name, namespace='default'):
    return '%s.%s.svc.cluster.local' % (name, namespace)


def svc_key(name, namespace='default'):
    return '%s/%s' % (namespace, hostname(name, namespace))


def dump_yaml(obj):
    if yaml is None:
        return json.dumps(obj, indent=2)
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def env_tls():
    """tls: keys every generated config gets from the environment, so that the
    'backends' suite runs the same tests on each record-crypto backend and
    record layer: ZRTEST_RECORD_CRYPTO -> recordCrypto, ZRTEST_RECORD_LAYER ->
    recordLayer, ZRTEST_OPENSSL_PROVIDER -> opensslProvider (handshakes in
    OpenSSL's async mode). A test that sets one of these itself keeps its own
    value."""
    out = {}
    for env, key in (('ZRTEST_RECORD_CRYPTO', 'recordCrypto'), ('ZRTEST_RECORD_LAYER', 'recordLayer'),
                     ('ZRTEST_OPENSSL_PROVIDER', 'opensslProvider')):
        if os.environ.get(env):
            out[key] = os.environ[env]
    return out


def default_listeners(ip=NODE_IP):
    return {
        'outbound': '%s:15001' % ip,
        'inboundPlaintext': '%s:15006' % ip,
        'hbone': None,
        'socks5': '%s:15080' % ip,
        'admin': '%s:15000' % ip,
        'metrics': '%s:15020' % ip,
        'readiness': '%s:15021' % ip,
    }


def parse_addr(s):
    if s.startswith('['):
        host, _, port = s[1:].partition(']:')
        return host, int(port)
    host, _, port = s.rpartition(':')
    return host, int(port)


# --------------------------------------------------------------------------
# HTTP (raw, small)
# --------------------------------------------------------------------------

def http_request(addr, method, path, body=None, timeout=5, headers=None):
    """Returns (status, body bytes). Raises OSError / http.client errors."""
    host, port = addr
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# --------------------------------------------------------------------------
# Prometheus text
# --------------------------------------------------------------------------

def _parse_labels(s, i):
    """Parses {a="b",...} starting at s[i] == '{'; returns (dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        while i < len(s) and s[i] in ' ,':
            i += 1
        if s[i] == '}':
            return labels, i + 1
        j = s.index('=', i)
        key = s[i:j].strip()
        i = j + 1
        assert s[i] == '"', 'label value must be quoted: %r' % s
        i += 1
        val = []
        while s[i] != '"':
            if s[i] == '\\':
                nxt = s[i + 1]
                val.append({'n': '\n', '\\': '\\', '"': '"'}.get(nxt, '\\' + nxt))
                i += 2
            else:
                val.append(s[i])
                i += 1
        labels[key] = ''.join(val)
        i += 1


def parse_prom(text):
    """Returns [(name, labels dict, float value)] of every sample."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        i = 0
        while i < len(line) and line[i] not in '{ \t':
            i += 1
        name = line[:i]
        labels = {}
        if i < len(line) and line[i] == '{':
            labels, i = _parse_labels(line, i)
        rest = line[i:].split()
        out.append((name, labels, float(rest[0])))
    return out


def msum(samples, name, **labels):
    """Sum of samples named `name` whose labels include all of `labels`."""
    total = 0.0
    for n, l, v in samples:
        if n == name and all(l.get(k) == want for k, want in labels.items()):
            total += v
    return total


def mfind(samples, name, **labels):
    return [(l, v) for n, l, v in samples
            if n == name and all(l.get(k) == want for k, want in labels.items())]


def promtool_check(text):
    """Returns (rc, output) of `promtool check metrics`, or (None, why) without promtool."""
    tool = shutil.which('promtool') or ('/usr/bin/promtool' if os.path.exists('/usr/bin/promtool') else None)
    if not tool:
        return None, 'promtool not installed'
    p = subprocess.run([tool, 'check', 'metrics'], input=text.encode(), capture_output=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode(errors='replace')


# --------------------------------------------------------------------------
# Node: one zring process
# --------------------------------------------------------------------------

class Node:
    """A zring node: writes config.yaml (and state.yaml with state_in_file) into a
    temp dir, runs `zring --config`, waits for readiness, always cleans up."""

    def __init__(self, tap, name='node-a', ip=NODE_IP, workloads=(), services=(), policies=(),
                 listeners=None, extra=None, state_in_file=False, workers=2, log_level='info'):
        self.tap = tap
        self.name = name
        self.ip = ip
        self.state = {'workloads': list(workloads), 'services': list(services),
                      'policies': list(policies)}
        self.listeners = default_listeners(ip)
        if listeners:
            self.listeners.update(listeners)
        self.extra = dict(extra or {})
        self.state_in_file = state_in_file
        self.workers = workers
        self.log_level = log_level
        self.dir = tempfile.mkdtemp(prefix='zrtest-%s-' % name)
        self.config_path = os.path.join(self.dir, 'config.yaml')
        self.state_path = os.path.join(self.dir, 'state.yaml')
        self.log_path = os.path.join(self.dir, 'zring.log')
        self.proc = None
        self.expect_running = False
        self._log_dumped = False
        self._cleanup = on_cleanup(self._destroy)
        tap.nodes.append(self)
        self.write_config()

    # -- files
    def config_dict(self):
        cfg = {'node': self.name, 'workers': self.workers, 'listeners': self.listeners,
               'drainTimeout': '5s', 'connectTimeout': '2s', 'logLevel': self.log_level}
        if self.state_in_file:
            cfg['localXdsPath'] = 'state.yaml'
        else:
            cfg['localXds'] = self.state
        cfg.update(self.extra)
        forced = env_tls()
        if forced:
            tls = dict(cfg.get('tls') or {})
            for k, v in forced.items():
                tls.setdefault(k, v)
            cfg['tls'] = tls
        return cfg

    def write_config(self, text=None):
        """Writes config.yaml (from the model, or raw text) and state.yaml."""
        if self.state_in_file:
            self.write_state()
        self._raw_config = text is not None
        self._atomic_write(self.config_path, text if text is not None else dump_yaml(self.config_dict()))

    def write_state(self, text=None):
        self._atomic_write(self.state_path, text if text is not None else dump_yaml(self.state))

    @staticmethod
    def _atomic_write(path, text):
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text)
        os.rename(tmp, path)

    # -- addresses
    def addr(self, listener):
        return parse_addr(self.listeners[listener])

    @property
    def socks5(self):
        return self.addr('socks5')

    # -- process
    def start(self, wait_ready=True, ready_timeout=10.0, args=None, nofile=None):
        """Starts zring. With wait_ready, returns True once /healthz/ready is 200
        (records a 'not ok' with the log tail otherwise). nofile: RLIMIT_NOFILE
        (soft and hard) for the process."""
        self.log = open(self.log_path, 'ab')
        cmd = [ZRING] + (args if args is not None else ['--config', self.config_path])
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.dir, preexec_fn=limit)
        self.expect_running = True
        if not wait_ready:
            return True
        ok, why = self.wait_ready(ready_timeout)
        if not ok:
            self.tap.ok(False, 'zring (%s) ready within %.0f s' % (self.name, ready_timeout), why)
            self.dump_log(self.tap)
            self.expect_running = False
        elif env_tls() and not self._raw_config and self.listeners.get('metrics'):
            self._check_forced_tls()
        return ok

    def _check_forced_tls(self):
        """With ZRTEST_RECORD_CRYPTO / ZRTEST_RECORD_LAYER set, proves that the
        run really uses them: zring_crypto_backend_info names that backend and
        record layer."""
        tls = self.config_dict().get('tls') or {}
        layer = tls.get('recordLayer', 'zring')
        crypto = tls.get('recordCrypto', 'auto')
        want = {'record_layer': layer}
        if layer == 'openssl':
            want['backend'] = 'openssl'
        elif crypto != 'auto':
            want['backend'] = crypto
        got = [l for n, l, v in self.metrics() if n == 'zring_crypto_backend_info']
        self.tap.ok(len(got) == 1 and all(got[0].get(k) == v for k, v in want.items()),
                    'zring (%s) runs recordCrypto %s in the %s record layer' % (self.name, crypto, layer),
                    'zring_crypto_backend_info: %r, want %r' % (got, want))
        if tls.get('opensslProvider'):
            c = self.config_dump().get('crypto') or {}
            self.tap.is_(c.get('opensslProvider'), tls['opensslProvider'],
                         'zring (%s) loaded OpenSSL provider %s' % (self.name, tls['opensslProvider']))

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = 'no answer'
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, 'zring exited with status %d before ready' % self.proc.returncode
            try:
                st, body = http_request(self.addr('readiness'), 'GET', '/healthz/ready', timeout=1)
                if st == 200:
                    return True, ''
                last = '%d %r' % (st, body[:200])
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.05)
        return False, 'readiness not 200 after %.0f s: %s' % (timeout, last)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self.expect_running = False
        if self.alive():
            self.proc.send_signal(sig)

    def reload(self):
        self.signal(signal.SIGHUP)

    def wait_exit(self, timeout):
        """Returns the exit status, or None if still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status."""
        self.expect_running = False
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.wait_exit(timeout)
            if rc is None:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self):
        self.expect_running = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def _destroy(self):
        self.kill()
        if getattr(self, 'log', None):
            self.log.close()
        if os.environ.get('ZRTEST_KEEP'):
            _print('# kept %s' % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def rss_kb(self):
        with open('/proc/%d/status' % self.proc.pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
        return None

    def fd_count(self):
        try:
            return len(os.listdir('/proc/%d/fd' % self.proc.pid))
        except OSError:
            return None

    # -- logs
    def log_text(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(offset)
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def log_records(self, offset=0):
        """Parsed JSON log lines since offset (non-JSON lines are returned as {'_raw': line})."""
        recs = []
        for line in self.log_since(offset).splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
                recs.append(r if isinstance(r, dict) else {'_raw': line})
            except ValueError:
                recs.append({'_raw': line})
        return recs

    def dump_log(self, tap, n=50):
        if self._log_dumped:
            return
        self._log_dumped = True
        lines = self.log_text().splitlines()[-n:]
        tap.diag('last %d lines of zring (%s) log %s:' % (len(lines), self.name, self.log_path))
        for line in lines:
            tap.diag('  ' + line[:2000])

    # -- admin / metrics
    def http(self, listener, method, path, body=None, timeout=5):
        return http_request(self.addr(listener), method, path, body=body, timeout=timeout)

    def metrics_text(self, path='/metrics'):
        st, body = self.http('metrics', 'GET', path)
        if st != 200:
            raise RuntimeError('GET %s: %d %r' % (path, st, body[:200]))
        return body.decode()

    def metrics(self):
        return parse_prom(self.metrics_text())

    def metric(self, name, **labels):
        return msum(self.metrics(), name, **labels)

    def active_diag(self):
        """zring_worker_connections_active and the live connections from /config_dump, for diagnostics."""
        try:
            conns = self.config_dump().get('connections')
        except Exception as e:
            conns = repr(e)
        return 'zring_worker_connections_active %r; /config_dump connections: %s' % (
            self.metric('zring_worker_connections_active'), json.dumps(conns)[:1500])

    def active(self):
        return self.metric('zring_worker_connections_active')

    def wait_active(self, n, timeout=10):
        """Waits for zring_worker_connections_active <= n; returns True or False."""
        return bool(wait_until(lambda: self.metric('zring_worker_connections_active') <= n, timeout, 0.1))

    def wait_idle(self, timeout=10):
        """Waits for zring_worker_connections_active == 0; returns True or False."""
        return bool(wait_until(lambda: self.metric('zring_worker_connections_active') == 0, timeout, 0.1))

    def refused(self, reason):
        return self.metric('zring_connections_refused_total', reason=reason)

    def config_dump(self):
        st, body = self.http('admin', 'GET', '/config_dump')
        if st != 200:
            raise RuntimeError('GET /config_dump: %d %r' % (st, body[:200]))
        return json.loads(body)

    def ctl(self, *args, timeout=10):
        p = subprocess.run([ZRING, 'ctl'] + list(args) + ['--admin', self.listeners['admin']],
                           capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode(errors='replace'), p.stderr.decode(errors='replace')


def run_zring(args, timeout=10, cwd=None):
    """Runs zring with args to completion: (rc, stdout, stderr); rc None on timeout."""
    try:
        p = subprocess.run([ZRING] + list(args), capture_output=True, timeout=timeout, cwd=cwd,
                           stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout.decode(errors='replace'), p.stderr.decode(errors='replace')
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b'').decode(errors='replace'), (e.stderr or b'').decode(errors='replace')


# --------------------------------------------------------------------------
# sockets
# --------------------------------------------------------------------------

def family_of(ip):
    return socket.AF_INET6 if ':' in ip else socket.AF_INET


def listen_socket(ip, port, backlog=1024, netns=None, reuse=True):
    def make():
        s = socket.socket(family_of(ip), socket.SOCK_STREAM)
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(backlog)
        return s
    return in_netns(netns, make) if netns else make()


class Sock(socket.socket):
    """A socket that can carry attributes (e.g. .bnd from a SOCKS5 reply)."""
    bnd = None


def connect(ip, port, src=None, timeout=5, netns=None):
    def make():
        s = Sock(family_of(ip), socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            if src:
                s.bind((src, 0))
            s.connect((ip, port))
        except BaseException:
            s.close()
            raise
        return s
    return in_netns(netns, make) if netns else make()


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError('connection closed after %d of %d bytes' % (len(buf), n))
        buf += chunk
    return bytes(buf)


def recv_all(s, limit=64 * MiB):
    """Reads until EOF (or limit). Raises socket.timeout on timeout."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_line(s, limit=4096):
    buf = bytearray()
    while not buf.endswith(b'\n'):
        c = s.recv(1)
        if not c:
            raise EOFError('connection closed inside a line: %r' % bytes(buf))
        buf += c
        if len(buf) > limit:
            raise ValueError('line too long')
    return bytes(buf[:-1])


def outcome(s, timeout=5.0):
    """Waits for what a peer does next: 'eof', 'reset', 'timeout', or ('data', bytes)."""
    s.settimeout(timeout)
    try:
        d = s.recv(65536)
    except socket.timeout:
        return 'timeout'
    except ConnectionResetError:
        return 'reset'
    except OSError as e:
        return 'error:%s' % errno.errorcode.get(e.errno, e.errno)
    if not d:
        return 'eof'
    return ('data', d)


def set_linger_rst(s):
    """close() will then send an RST."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))


# --------------------------------------------------------------------------
# SOCKS5 client (RFC 1928, no auth, CONNECT)
# --------------------------------------------------------------------------

SOCKS5_REPLIES = {
    0: 'succeeded', 1: 'general failure', 2: 'not allowed by ruleset', 3: 'network unreachable',
    4: 'host unreachable', 5: 'connection refused', 6: 'TTL expired', 7: 'command not supported',
    8: 'address type not supported',
}


class Socks5Error(Exception):
    """code: the reply code, or None when the proxy closed/reset/timed out before replying
    (then `how` says which)."""

    def __init__(self, code, how=None):
        self.code = code
        self.how = how
        if code is not None:
            msg = 'SOCKS5 reply 0x%02x (%s)' % (code, SOCKS5_REPLIES.get(code, '?'))
        else:
            msg = 'SOCKS5 proxy gave no reply: %s' % how
        super().__init__(msg)


def socks5_request(host, port, cmd=1):
    try:
        return struct.pack('!BBBB', 5, cmd, 0, 1) + socket.inet_pton(socket.AF_INET, host) + struct.pack('!H', port)
    except OSError:
        pass
    try:
        return struct.pack('!BBBB', 5, cmd, 0, 4) + socket.inet_pton(socket.AF_INET6, host) + struct.pack('!H', port)
    except OSError:
        pass
    name = host.encode('idna') if not isinstance(host, bytes) else host
    return struct.pack('!BBBBB', 5, cmd, 0, 3, len(name)) + name + struct.pack('!H', port)


def socks5_read_reply(s):
    """Reads a SOCKS5 reply; returns (code, (bnd_host, bnd_port))."""
    hdr = recv_exact(s, 4)
    ver, rep, _, atyp = hdr
    if ver != 5:
        raise Socks5Error(None, 'bad reply version %d' % ver)
    if atyp == 1:
        host = socket.inet_ntop(socket.AF_INET, recv_exact(s, 4))
    elif atyp == 4:
        host = socket.inet_ntop(socket.AF_INET6, recv_exact(s, 16))
    elif atyp == 3:
        host = recv_exact(s, recv_exact(s, 1)[0]).decode(errors='replace')
    else:
        raise Socks5Error(None, 'bad reply address type %d' % atyp)
    port = struct.unpack('!H', recv_exact(s, 2))[0]
    return rep, (host, port)


def socks5_connect(proxy, host, port, src=None, timeout=5.0, cmd=1, netns=None):
    """SOCKS5 CONNECT through proxy (ip, port) from source IP src. Returns the connected
    socket (timeout set) with .bnd = (host, port). Raises Socks5Error on refusal."""
    s = connect(proxy[0], proxy[1], src=src, timeout=timeout, netns=netns)
    try:
        s.sendall(b'\x05\x01\x00')
        m = recv_exact(s, 2)
        if m != b'\x05\x00':
            raise Socks5Error(None, 'method selection answered %r' % m)
        s.sendall(socks5_request(host, port, cmd))
        rep, bnd = socks5_read_reply(s)
        if rep != 0:
            raise Socks5Error(rep)
    except socket.timeout:
        s.close()
        raise Socks5Error(None, 'timeout')
    except ConnectionResetError:
        s.close()
        raise Socks5Error(None, 'reset')
    except EOFError as e:
        s.close()
        raise Socks5Error(None, 'closed (%s)' % e)
    except BaseException:
        s.close()
        raise
    s.bnd = bnd
    return s


def socks5_try(proxy, host, port, src=None, timeout=5.0, cmd=1):
    """Like socks5_connect but returns (code, sock_or_None); code is the reply code
    or 'closed'/'reset'/'timeout'/'refused' when there was no reply."""
    try:
        s = socks5_connect(proxy, host, port, src=src, timeout=timeout, cmd=cmd)
        return 0, s
    except Socks5Error as e:
        return (e.code if e.code is not None else e.how.split(' ')[0]), None
    except ConnectionRefusedError:
        return 'refused', None


# --------------------------------------------------------------------------
# bulk data: deterministic pseudo-random blocks, cheap to generate
# --------------------------------------------------------------------------

_POOL_SIZE = 4 * MiB
_BLOCK = 1 * MiB
_pool = random.Random(0x5EED2).randbytes(_POOL_SIZE)
_POOL = memoryview(_pool + _pool[:_BLOCK])



def socks5_echo_probe(proxy, host, port, src=None, timeout=10.0):
    """SOCKS5 CONNECT through `proxy` to an echo service, then 'probe' there and
    back: 0 when the echo came back, else the SOCKS5 reply code (or why not)."""
    code, s = socks5_try(proxy, host, port, src=src, timeout=timeout)
    if s:
        try:
            s.sendall(b'probe')
            if recv_exact(s, 5) != b'probe':
                code = 'bad echo'
        except (OSError, EOFError) as e:
            code = 'echo failed: %r' % e
        s.close()
    return code

def gen_blocks(total, seed=0, block=_BLOCK):
    """Yields memoryviews (<= block bytes) totalling `total` bytes; each block is a
    different window of a random pool, so lost/duplicated/reordered data changes the hash."""
    i = 0
    left = total
    while left > 0:
        n = min(block, left)
        off = (seed * 7919 + i * 40503 * 67 + i * 13) % _POOL_SIZE
        yield _POOL[off:off + n]
        left -= n
        i += 1


def data_digest(total, seed=0):
    h = hashlib.sha256()
    for b in gen_blocks(total, seed):
        h.update(b)
    return h.hexdigest()


def send_data(s, total, seed=0, rate=None):
    """Sends gen_blocks(total, seed); rate (bytes/s) paces it. Returns sha256 hex."""
    h = hashlib.sha256()
    t0 = time.monotonic()
    sent = 0
    blk = _BLOCK if rate is None else min(_BLOCK, 256 * 1024)
    for b in gen_blocks(total, seed, blk):
        s.sendall(b)
        h.update(b)
        sent += len(b)
        if rate:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    return h.hexdigest()


def recv_hash(s, limit=None):
    """Reads until EOF; returns (count, sha256 hex)."""
    h = hashlib.sha256()
    buf = bytearray(_BLOCK)
    mv = memoryview(buf)
    n = 0
    while limit is None or n < limit:
        k = s.recv_into(mv)
        if not k:
            break
        h.update(mv[:k])
        n += k
    return n, h.hexdigest()


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------

class _Server:
    """Accept loop in a thread; handle(conn, peer) in a thread per connection."""

    def __init__(self, ip, port, netns=None, backlog=1024):
        self.ip, self.port = ip, port
        self.lsock = listen_socket(ip, port, backlog=backlog, netns=netns)
        self.lsock.settimeout(0.2)
        self.accepted = 0
        self.peers = []
        self.errors = []
        self._stop = False
        self._conns = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        on_cleanup(self.close)

    def _loop(self):
        while not self._stop:
            try:
                c, peer = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop:
                    return
                time.sleep(0.05)
                continue
            with self._lock:
                self.accepted += 1
                self.peers.append(peer)
                self._conns.add(c)
            threading.Thread(target=self._run, args=(c, peer), daemon=True).start()

    def _run(self, c, peer):
        try:
            c.settimeout(60)
            self.handle(c, peer)
        except Exception as e:
            with self._lock:
                self.errors.append('%s: %r' % (peer, e))
        finally:
            with self._lock:
                self._conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def handle(self, c, peer):
        raise NotImplementedError

    def close(self):
        self._stop = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EchoServer:
    """Echoes everything back; on the peer's EOF, flushes and half-closes. One
    selector thread, so it holds thousands of connections. Counts accepts and peers."""

    def __init__(self, ip, port, netns=None, backlog=4096, max_buffer=4 * MiB):
        self.ip, self.port = ip, port
        self.lsock = listen_socket(ip, port, backlog=backlog, netns=netns)
        self.lsock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.accepted = 0
        self.peers = []
        self.max_buffer = max_buffer
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        on_cleanup(self.close)

    def _loop(self):
        while not self._stop:
            try:
                events = self.sel.select(0.2)
            except OSError:
                return
            for key, mask in events:
                if key.data is None:
                    self._accept()
                else:
                    self._serve(key.fileobj, key.data, mask)

    def _accept(self):
        while True:
            try:
                c, peer = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            c.setblocking(False)
            self.accepted += 1
            self.peers.append(peer)
            self.sel.register(c, selectors.EVENT_READ, {'buf': bytearray(), 'eof': False})

    def _finish(self, c):
        try:
            self.sel.unregister(c)
        except (KeyError, ValueError):
            pass
        c.close()

    def _serve(self, c, st, mask):
        try:
            if mask & selectors.EVENT_READ and not st['eof']:
                d = c.recv(256 * 1024)
                if d:
                    st['buf'] += d
                else:
                    st['eof'] = True
            if st['buf']:
                n = c.send(st['buf'])
                del st['buf'][:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._finish(c)
            return
        if st['eof'] and not st['buf']:
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._finish(c)
            return
        want = 0
        if not st['eof'] and len(st['buf']) < self.max_buffer:
            want |= selectors.EVENT_READ
        if st['buf']:
            want |= selectors.EVENT_WRITE
        self.sel.modify(c, want, st)

    def close(self):
        self._stop = True
        self._thread.join(2)
        for key in list(self.sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
        self.sel.close()


class BulkServer(_Server):
    """Line protocol, one command per connection:
      b'UP\\n' + data...EOF   -> replies b'<count> <sha256>\\n', then closes
      b'DOWN <n> <seed> [rate]\\n' -> sends n bytes of gen_blocks(n, seed), half-closes,
                                 records (count, sha256) in .sent[seed], then waits for EOF.
    """

    def __init__(self, ip, port, netns=None):
        self.sent = {}
        self.received = []
        super().__init__(ip, port, netns=netns)

    def handle(self, c, peer):
        c.settimeout(120)
        line = recv_line(c).decode()
        parts = line.split()
        if parts[0] == 'UP':
            n, digest = recv_hash(c)
            self.received.append((n, digest))
            c.sendall(b'%d %s\n' % (n, digest.encode()))
            c.shutdown(socket.SHUT_WR)
            recv_all(c, limit=1 << 16)
        elif parts[0] == 'DOWN':
            n, seed = int(parts[1]), int(parts[2])
            rate = float(parts[3]) if len(parts) > 3 else None
            digest = send_data(c, n, seed, rate)
            self.sent[seed] = (n, digest)
            c.shutdown(socket.SHUT_WR)
            recv_all(c, limit=1 << 16)


SinkServer = BulkServer
SourceServer = BulkServer


class ScriptServer(_Server):
    """Runs fn(conn, peer) for every connection (tests with special behaviour)."""

    def __init__(self, ip, port, fn, netns=None):
        self.fn = fn
        self.results = []
        super().__init__(ip, port, netns=netns)

    def handle(self, c, peer):
        r = self.fn(c, peer)
        with self._lock:
            self.results.append(r)


class BlackholeServer(_Server):
    """Accepts and never reads until release() is called; then drains each
    connection, recording (count, sha256) of what it got in .drained."""

    def __init__(self, ip, port, netns=None, rcvbuf=None):
        self.release_ev = threading.Event()
        self.drained = []
        self.rcvbuf = rcvbuf
        self.conns = []
        super().__init__(ip, port, netns=netns)
        if rcvbuf:
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    def handle(self, c, peer):
        with self._lock:
            self.conns.append(c)
        while not self.release_ev.wait(0.1):
            if self._stop:
                return
        c.settimeout(60)
        r = recv_hash(c)
        with self._lock:
            self.drained.append(r)

    def release(self):
        self.release_ev.set()


# --------------------------------------------------------------------------
# bulk transfer clients
# --------------------------------------------------------------------------

def bulk_upload(s, total, seed=1, rate=None, timeout=120):
    """Over a connected socket to a BulkServer: sends total bytes, half-closes, reads the
    server's count and hash. Returns (ok, detail, seconds)."""
    s.settimeout(timeout)
    t0 = time.monotonic()
    s.sendall(b'UP\n')
    digest = send_data(s, total, seed, rate)
    s.shutdown(socket.SHUT_WR)
    reply = recv_line(s).decode().split()
    dt = time.monotonic() - t0
    got_n, got_d = int(reply[0]), reply[1]
    ok = got_n == total and got_d == digest
    return ok, 'server got %d bytes sha256 %s; sent %d sha256 %s' % (got_n, got_d, total, digest), dt


def bulk_download(s, server, total, seed=2, rate=None, timeout=120):
    """Asks a BulkServer for total bytes; checks count and sha256 against what it sent."""
    s.settimeout(timeout)
    t0 = time.monotonic()
    cmd = 'DOWN %d %d' % (total, seed) + (' %f' % rate if rate else '')
    s.sendall(cmd.encode() + b'\n')
    n, digest = recv_hash(s)
    s.shutdown(socket.SHUT_WR)
    dt = time.monotonic() - t0
    sent = wait_until(lambda: server.sent.get(seed), 5)
    ok = sent == (n, digest) and n == total
    return ok, 'client got %d bytes sha256 %s; server sent %r' % (n, digest, sent), dt


def rate_str(nbytes, dt):
    return '%.0f MiB in %.2f s = %.0f MiB/s' % (nbytes / MiB, dt, nbytes / MiB / max(dt, 1e-9))


# --------------------------------------------------------------------------
# network namespaces, veth pairs, iptables
# --------------------------------------------------------------------------

def sh(*cmd, check=True, timeout=20):
    p = subprocess.run(list(cmd), capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError('%s: exit %d: %s' % (' '.join(cmd), p.returncode,
                                               (p.stderr or p.stdout).decode(errors='replace').strip()))
    return p


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name, fn, timeout=30):
    """Runs fn() in a new thread that has joined netns `name`; returns its result.
    Sockets keep the namespace they were created in, so they can be used from any thread."""
    box = {}

    def runner():
        try:
            fd = os.open('/var/run/netns/%s' % name, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, 'setns(%s): %s' % (name, os.strerror(e)))
            finally:
                os.close(fd)
            box['v'] = fn()
        except BaseException as e:
            box['e'] = e

    th = threading.Thread(target=runner, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise TimeoutError('in_netns(%s) took over %d s' % (name, timeout))
    if 'e' in box:
        raise box['e']
    return box['v']


class NetNS:
    def __init__(self, name):
        self.name = name
        sh('ip', 'netns', 'add', name)
        on_cleanup(self.delete)
        sh('ip', '-n', name, 'link', 'set', 'lo', 'up')

    def sh(self, *cmd, check=True):
        return sh('ip', 'netns', 'exec', self.name, *cmd, check=check)

    def call(self, fn):
        return in_netns(self.name, fn)

    def delete(self):
        sh('ip', 'netns', 'del', self.name, check=False)


def veth(root_if, ns, ns_if, root_cidr, ns_cidr, gateway=None):
    """Creates a veth pair root_if (root ns, root_cidr) <-> ns_if (in ns, ns_cidr);
    the namespace's default route goes via `gateway` when given."""
    sh('ip', 'link', 'add', root_if, 'type', 'veth', 'peer', 'name', ns_if, 'netns', ns.name)
    on_cleanup(lambda: sh('ip', 'link', 'del', root_if, check=False))
    sh('ip', 'addr', 'add', root_cidr, 'dev', root_if)
    sh('ip', 'link', 'set', root_if, 'up')
    sh('ip', '-n', ns.name, 'addr', 'add', ns_cidr, 'dev', ns_if)
    sh('ip', '-n', ns.name, 'link', 'set', ns_if, 'up')
    if gateway:
        sh('ip', '-n', ns.name, 'route', 'add', 'default', 'via', gateway)


class Iptables:
    """Rules added through here are removed (in reverse) at cleanup. ns: a NetNS or None."""

    def __init__(self, ns=None):
        self.ns = ns
        self.undo = []
        on_cleanup(self.cleanup)

    def _run(self, *args, check=True):
        cmd = ['iptables', '-w', '5'] + list(args)
        if self.ns:
            cmd = ['ip', 'netns', 'exec', self.ns.name] + cmd
        return sh(*cmd, check=check)

    def new_chain(self, table, chain):
        self._run('-t', table, '-N', chain)
        self.undo.append(('-t', table, '-X', chain))
        self.undo.append(('-t', table, '-F', chain))

    def append(self, table, chain, *spec):
        self._run('-t', table, '-A', chain, *spec)
        self.undo.append(('-t', table, '-D', chain) + spec)

    def insert(self, table, chain, *spec):
        self._run('-t', table, '-I', chain, *spec)
        self.undo.append(('-t', table, '-D', chain) + spec)

    def packets(self, table, chain, match):
        """Sum of packet counters of rules in chain whose text contains `match`."""
        out = self._run('-t', table, '-L', chain, '-n', '-v', '-x').stdout.decode()
        total = 0
        for line in out.splitlines()[2:]:
            if match in line:
                total += int(line.split()[0])
        return total

    def cleanup(self):
        while self.undo:
            self._run(*self.undo.pop(), check=False)


def sysctl_set(key, value):
    """Sets a sysctl and restores the old value at cleanup."""
    path = '/proc/sys/' + key.replace('.', '/')
    with open(path) as f:
        old = f.read().strip()
    with open(path, 'w') as f:
        f.write(str(value))

    def restore():
        with open(path, 'w') as f:
            f.write(old)
    on_cleanup(restore)
    return old


def uniq(prefix):
    """A short unique name (interface names are limited to 15 characters)."""
    return '%s%d' % (prefix, os.getpid() % 1000000)


# --------------------------------------------------------------------------
# HBONE: test PKI and two-node meshes (node A 127.0.0.42, workloads 127.0.4.x;
# node B 127.0.0.43, workloads 127.0.5.x; VIPs 127.10.4.x)
# --------------------------------------------------------------------------

HB_A_IP = '127.0.0.42'
HB_B_IP = '127.0.0.43'
CERTS_GEN = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', 'certs', 'gen.sh'))


def have_h2():
    """Returns None when python3-h2 is importable, else the reason to skip."""
    try:
        import h2.connection  # noqa: F401
        import h2.config  # noqa: F401
        return None
    except ImportError as e:
        return 'python3-h2 not installed (%s)' % e


def spiffe(sa, ns='default', td='cluster.local'):
    return 'spiffe://%s/ns/%s/sa/%s' % (td, ns, sa)


def make_certs():
    """Runs tests/certs/gen.sh into a fresh temp dir (removed at cleanup); returns the dir."""
    d = tempfile.mkdtemp(prefix='zrtest-certs-')
    on_cleanup(shutil.rmtree, d, True)
    sh('bash', CERTS_GEN, d, timeout=60)
    return d


def issue_leaf(certdir, name, uri, ca='root', days=3650):
    """Issues NAME.pem/NAME.key in certdir for URI SAN `uri`, signed by CA `ca`
    (ca-cert.pem/ca-key.pem in certdir; 'root' = gen.sh's main CA)."""
    key = os.path.join(certdir, name + '.key')
    csr = os.path.join(certdir, name + '.csr')
    ext = os.path.join(certdir, name + '.ext')
    sh('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key)
    with open(ext, 'w') as f:
        f.write('basicConstraints=critical,CA:FALSE\n'
                'keyUsage=critical,digitalSignature,keyEncipherment\n'
                'extendedKeyUsage=serverAuth,clientAuth\n'
                'subjectAltName=critical,URI:%s\n'
                'authorityKeyIdentifier=keyid\n' % uri)
    sh('openssl', 'req', '-new', '-key', key, '-subj', '/O=zring-test/CN=%s' % name, '-out', csr)
    sh('openssl', 'x509', '-req', '-in', csr, '-CA', os.path.join(certdir, ca + '-cert.pem'),
       '-CAkey', os.path.join(certdir, ca + '-key.pem'), '-set_serial', '0x%x' % random.getrandbits(63),
       '-sha256', '-days', str(days), '-extfile', ext, '-out', os.path.join(certdir, name + '.pem'))
    return os.path.join(certdir, name + '.pem'), key


def cert_serial(path):
    p = sh('openssl', 'x509', '-in', path, '-noout', '-serial')
    return p.stdout.decode().strip().split('=', 1)[-1].lower()


def identity_cfg(certdir, certs, ca='root-cert.pem'):
    """identity: section. certs: [(identity URI, NAME)] -> NAME.pem / NAME.key in certdir."""
    return {
        'caCertificates': os.path.join(certdir, ca),
        'certificates': [{'identity': ident, 'cert': os.path.join(certdir, n + '.pem'),
                          'key': os.path.join(certdir, n + '.key')} for ident, n in certs],
    }


def hbone_listeners(ip, plaintext=False, outbound=None):
    return {
        'outbound': outbound,
        'inboundPlaintext': '%s:15006' % ip if plaintext else None,
        'hbone': '%s:15008' % ip,
        'socks5': '%s:15080' % ip,
        'admin': '%s:15000' % ip,
        'metrics': '%s:15020' % ip,
        'readiness': '%s:15021' % ip,
    }


def hbone_node(tap, name, ip, certdir, certs, workloads, services=(), policies=(), extra=None,
               workers=2, plaintext=False, log_level='info', trust_domain=None, outbound=None):
    """A Node on `ip` with HBONE listeners, file identities and its state in state.yaml
    (so that tests can edit it and SIGHUP)."""
    ex = {'identity': identity_cfg(certdir, certs)}
    if trust_domain:
        ex['trustDomain'] = trust_domain
    ex.update(extra or {})
    return Node(tap, name=name, ip=ip, workloads=workloads, services=services, policies=policies,
                listeners=hbone_listeners(ip, plaintext, outbound), extra=ex, state_in_file=True,
                workers=workers, log_level=log_level)


def hbone_gauge(node, role):
    """zring_hbone_connections{role=...} summed over workers."""
    return node.metric('zring_hbone_connections', role=role)


def tls_failures(node, reason=None):
    if reason is None:
        return node.metric('zring_tls_handshake_failures_total')
    return node.metric('zring_tls_handshake_failures_total', reason=reason)


class HboneTestServer:
    """Base of the tests' own HBONE servers (Python ssl + h2): a TLS 1.3 server
    context with certdir's NAME.pem/.key and client certificates required
    (ALPN h2), an accept loop in a thread, and _serve(raw_socket, peer) in a
    thread per connection (subclasses write it). Set the subclass's own fields
    before calling __init__: connections may arrive at once."""

    def __init__(self, certdir, ip, port=15008, cert='server'):
        import ssl
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(os.path.join(certdir, cert + '.pem'), os.path.join(certdir, cert + '.key'))
        self.ctx.load_verify_locations(os.path.join(certdir, 'root-cert.pem'))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.set_alpn_protocols(['h2'])
        self.lsock = listen_socket(ip, port)
        self.lsock.settimeout(0.2)
        self._stop = False
        threading.Thread(target=self._loop, daemon=True).start()
        on_cleanup(self.close)

    def close(self):
        self._stop = True
        try:
            self.lsock.close()
        except OSError:
            pass

    def _loop(self):
        while not self._stop:
            try:
                c, peer = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, peer), daemon=True).start()

    def _serve(self, raw, peer):
        raise NotImplementedError


def hbone_tls_context(certdir, cert='client', ca='root-cert.pem', verify=True):
    """A TLS 1.3 client context for HBONE: ALPN h2, client certificate NAME.pem/.key
    (None: none), server chain verified against certdir/ca (no hostname check)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    if verify:
        ctx.load_verify_locations(os.path.join(certdir, ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(os.path.join(certdir, cert + '.pem'), os.path.join(certdir, cert + '.key'))
    ctx.set_alpn_protocols(['h2'])
    return ctx


def peer_uri_sans(ssock):
    """URI SANs of the peer certificate of a verified ssl socket."""
    cert = ssock.getpeercert() or {}
    return [v for k, v in cert.get('subjectAltName', ()) if k == 'URI']


class H2Client:
    """An independent HBONE client: TLS 1.3 + python h2 (client side).
    Stream helpers drive the connection from the calling thread."""

    def __init__(self, certdir, addr, cert='client', src=None, timeout=10, window=4 * MiB,
                 verify=True, send_preface=True):
        import h2.config
        import h2.connection
        import h2.settings
        raw = socket.create_connection(addr, timeout=timeout, source_address=(src, 0) if src else None)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = hbone_tls_context(certdir, cert, verify=verify).wrap_socket(raw)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding='utf-8', validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.window = window
        self.closed = False
        self.goaway = None
        self.streams = {}   # sid -> dict(status, headers, data, ended, reset)
        if send_preface:
            self.conn.initiate_connection()
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.conn.increment_flow_control_window(16 * MiB - 65535)
            self.flush()

    def flush(self):
        d = self.conn.data_to_send()
        if d:
            self.sock.sendall(d)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def st(self, sid):
        return self.streams.setdefault(sid, {'status': None, 'headers': None, 'data': bytearray(),
                                             'ended': False, 'reset': None, 'hash': None, 'count': 0})

    def connect(self, authority, extra=(), end_stream=False):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(':method', 'CONNECT')]
        if authority is not None:
            hdrs.append((':authority', authority))
        hdrs += list(extra)
        self.conn.send_headers(sid, hdrs, end_stream=end_stream)
        self.flush()
        self.st(sid)
        return sid

    def pump(self, timeout=1.0):
        """Reads once (up to timeout) and processes the events. Returns False on EOF."""
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        except (OSError,) as e:
            self.closed = 'error: %r' % e
            return False
        if not d:
            self.closed = 'eof'
            return False
        self._feed(d)
        if self.closed:
            return False
        try:
            self.flush()
        except OSError:
            pass
        return True

    def wait(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return bool(pred())
            self.pump(min(left, 0.5))
        return True

    def response(self, sid, timeout=10.0):
        """Waits for the response; returns the status, ('reset', code), or ('closed', why)."""
        s = self.st(sid)
        self.wait(lambda: s['status'] is not None or s['reset'] is not None or self.goaway is not None, timeout)
        if s['status'] is not None:
            return s['status']
        if s['reset'] is not None:
            return ('reset', s['reset'])
        if self.goaway is not None:
            return ('goaway', self.goaway)
        return ('closed', self.closed or 'timeout')

    def send(self, sid, data, end_stream=False, timeout=30.0):
        """Sends data honouring flow control (pumping the socket while blocked)."""
        mv = memoryview(data)
        deadline = time.monotonic() + timeout
        while len(mv):
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(mv))
            if n <= 0:
                if time.monotonic() > deadline or self.closed or self.st(sid)['reset'] is not None:
                    raise TimeoutError('flow control window stayed closed')
                self.pump(0.2)
                continue
            self.conn.send_data(sid, mv[:n].tobytes())
            mv = mv[n:]
            self.flush()
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def transfer(self, sid, total, seed=0, timeout=120.0, end=True):
        """Sends `total` bytes of gen_blocks(total, seed) (then END_STREAM when end) while
        reading the stream's data (hashed, flow control acknowledged); returns
        (sent sha256, received count, received sha256, stream ended?) once the peer
        ended or reset the stream (or, with end=False, once everything is sent)."""
        s = self.st(sid)
        s['hash'] = hashlib.sha256()
        s['count'] = 0
        sent = hashlib.sha256()
        deadline = time.monotonic() + timeout
        blocks = gen_blocks(total, seed, 256 * 1024)
        cur = memoryview(b'')
        out = bytearray()
        ended = False
        self.sock.setblocking(False)
        try:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError('transfer timed out: received %d of %d' % (s['count'], total))
                while not ended and len(out) < (1 << 20) and s['reset'] is None:
                    if not len(cur):
                        nb = next(blocks, None)
                        if nb is None:
                            if end:
                                self.conn.end_stream(sid)
                            ended = True
                            break
                        cur = nb
                        sent.update(nb)
                    n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(cur))
                    if n <= 0:
                        break
                    self.conn.send_data(sid, cur[:n].tobytes())
                    cur = cur[n:]
                    out += self.conn.data_to_send()
                out += self.conn.data_to_send()
                if not out and (s['ended'] or s['reset'] is not None or self.closed or (ended and not end)):
                    break
                if self.sock.pending():
                    r, w = [self.sock], []
                else:
                    r, w, _ = select.select([self.sock], [self.sock] if out else [], [], 0.5)
                if w and out:
                    try:
                        k = self.sock.send(out[:65536])
                        del out[:k]
                    except ssl_want_errors():
                        pass
                if r:
                    self._pump_nb()
                    if self.closed:
                        break
        finally:
            self.sock.setblocking(True)
        return sent.hexdigest(), s['count'], s['hash'].hexdigest(), s['ended']

    def _pump_nb(self):
        for _ in range(64):
            try:
                d = self.sock.recv(1 << 20)
            except ssl_want_errors():
                return
            except OSError as e:
                self.closed = 'error: %r' % e
                return
            if not d:
                self.closed = 'eof'
                return
            self._feed(d)
            if not self.sock.pending():
                return

    def _feed(self, d):
        import h2.events
        import h2.exceptions
        try:
            events = self.conn.receive_data(d)
        except h2.exceptions.ProtocolError as e:
            self.closed = 'protocol error: %r' % e
            return
        for ev in events:
            sid = getattr(ev, 'stream_id', None)
            if isinstance(ev, h2.events.DataReceived):
                s = self.st(sid)
                if s['hash'] is not None:
                    s['hash'].update(ev.data)
                else:
                    s['data'] += ev.data
                s['count'] += len(ev.data)
                if ev.flow_controlled_length:
                    try:
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    except h2.exceptions.StreamClosedError:
                        pass
            elif isinstance(ev, h2.events.ResponseReceived):
                s = self.st(sid)
                s['headers'] = ev.headers
                s['status'] = int(dict(ev.headers).get(':status', 0))
            elif isinstance(ev, h2.events.StreamEnded):
                self.st(sid)['ended'] = True
            elif isinstance(ev, h2.events.StreamReset):
                self.st(sid)['reset'] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code


def ssl_want_errors():
    import ssl
    return (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError)


# raw HTTP/2 frames (for peers that misbehave on purpose)

def h2_frame(ftype, flags, sid, payload=b''):
    return struct.pack('!I', len(payload))[1:] + struct.pack('!BBI', ftype, flags, sid) + payload


def h2_read_frames(sock, timeout=5.0, until=None):
    """Reads frames until EOF, reset, timeout, or until(frames) is true.
    Returns (frames [(type, flags, sid, payload)], end: 'eof'|'reset'|'timeout'|'until'|'error:...')."""
    buf = bytearray()
    frames = []
    deadline = time.monotonic() + timeout
    end = 'timeout'
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            d = sock.recv(1 << 16)
        except socket.timeout:
            break
        except ConnectionResetError:
            end = 'reset'
            break
        except OSError as e:
            end = 'error:%r' % e
            break
        if not d:
            end = 'eof'
            break
        buf += d
        while len(buf) >= 9:
            ln = int.from_bytes(buf[0:3], 'big')
            if len(buf) < 9 + ln:
                break
            frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], 'big') & 0x7fffffff, bytes(buf[9:9 + ln])))
            del buf[:9 + ln]
        if until and until(frames):
            end = 'until'
            break
    return frames, end
