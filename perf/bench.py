#!/usr/bin/env python3
"""make bench: one-stream iperf3 throughput and proxy CPU cost, plus HBONE and new-connection rates.

  direct   iperf3 client (bound to 127.0.1.2) -> iperf3 server 127.0.1.3:5201
  zring    the same connection captured by an iptables REDIRECT in the OUTPUT
           chain to zring's outbound listener 127.0.0.1:15001; zring reads
           SO_ORIGINAL_DST (127.0.1.3:5201) and connects there with SO_MARK
           1337, which the rule exempts. Needs root (skipped otherwise).
  haproxy  HAProxy (nbthread 1, mode tcp) frontend 127.0.0.4:5201 -> backend
           127.0.1.3:5201, when haproxy is installed.

  hbone    two zring nodes (1 worker each) on loopback addresses: iperf3
           client 127.0.8.2 -> iptables REDIRECT to node A's outbound listener
           127.0.0.1:15041 -> HBONE (mTLS HTTP/2 CONNECT) -> node B
           (127.0.0.63, and 127.0.9.2:15008) -> iperf3 server 127.0.9.2:5301.
           CPU per GB of A, of B and of the pair. Needs root.
  haproxy-mtls  the same hop as an HAProxy mTLS pair in one process
           (nbthread 1): 127.0.0.64:5301 -> TLS 1.3, verify required both
           ways, same certificates and cipher suites as zring ->
           127.0.0.65:15411 -> 127.0.9.2:5301.
  crr      new HBONE streams on a pooled connection: perf/crr.py clients
           from 127.0.8.2 connect to the service VIP 127.10.8.1:80 (captured
           to node A), send 64 bytes, read them back from an echo server
           behind node B (127.0.9.2:5302), close, repeat; completed
           connections per second and per CPU-second of zring (A + B).

For each stream scenario: Gbit/s from iperf3 --json, and the proxy
processes' CPU seconds (utime + stime from /proc/PID/stat) per GB moved.
Prints a table, the zring/HAProxy ratios, and writes JSON to bench-out/.
Throw-away certificates come from tests/certs/gen.sh. iptables chains the
bench adds (ZRBENCH, ZRBENCHHB) are removed whatever happens.
"""
import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

CLIENT_IP = "127.0.1.2"
SERVER_IP = "127.0.1.3"
PORT = 5201
HAPROXY_FRONTEND = "127.0.0.4"
ZRING_NODE_IP = "127.0.0.6"  # admin / metrics / readiness of the bench node
ZRING_OUTBOUND = ("127.0.0.1", 15001)  # REDIRECT in OUTPUT delivers to 127.0.0.1
CHAIN = "ZRBENCH"
MARK = "1337"
CLK_TCK = os.sysconf("SC_CLK_TCK")

OUTPUT_RULE = ["OUTPUT", "-p", "tcp", "-s", CLIENT_IP, "-d", SERVER_IP, "--dport", str(PORT),
               "-m", "mark", "!", "--mark", MARK, "-j", CHAIN]

# HBONE scenarios: addresses no test suite uses (they use 127.0.0.2/.3/.42/.43,
# 127.0.1.x, 127.0.2.x; the demo 127.0.0.51-53, 127.0.5-7.x).
HB_CLIENT_IP = "127.0.8.2"        # client workload, local to node A
HB_SERVER_IP = "127.0.9.2"        # server workload (protocol HBONE), local to node B
HB_NODE_A = "127.0.0.62"          # node A: admin / metrics / readiness / hbone
HB_NODE_B = "127.0.0.63"          # node B
HB_OUTBOUND = ("127.0.0.1", 15041)  # node A's capture listener
HB_IPERF_PORT = 5301
HB_ECHO_PORT = 5302
HB_VIP = "127.10.8.1"             # service crr.default: 80 -> 5302
HB_VIP_PORT = 80
HB_CHAIN = "ZRBENCHHB"
HAP_CLIENT_SIDE = ("127.0.0.64", HB_IPERF_PORT)
HAP_SERVER_SIDE = ("127.0.0.65", 15411)
CIPHER_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"  # zring's default tls.cipherSuites
HB_IPERF_RULE = ["OUTPUT", "-p", "tcp", "-s", HB_CLIENT_IP, "-d", HB_SERVER_IP, "--dport", str(HB_IPERF_PORT),
                 "-m", "mark", "!", "--mark", MARK, "-j", HB_CHAIN]
HB_CRR_RULE = ["OUTPUT", "-p", "tcp", "-s", HB_CLIENT_IP, "-d", HB_VIP, "--dport", str(HB_VIP_PORT),
               "-m", "mark", "!", "--mark", MARK, "-j", HB_CHAIN]
HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Skip(Exception):
    pass


def cpu_seconds(pid):
    """utime + stime of a whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def wait_port(host, port, seconds, proc=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {seconds} s")


def port_free(host, port):
    """True when nothing listens there (TIME-WAIT leftovers do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def need_free(*addrs):
    """Fails naming the busy ones; waits 2 s and looks again once first (a test's leftovers)."""
    busy = [a for a in addrs if not port_free(*a)]
    if busy:
        log(f"busy: {' '.join(f'{h}:{p}' for h, p in busy)}; retrying in 2 s")
        time.sleep(2)
        busy = [a for a in busy if not port_free(*a)]
    if busy:
        raise RuntimeError(f"already in use: {' '.join(f'{h}:{p}' for h, p in busy)}")


class Procs:
    """Background processes, stopped in reverse order whatever happens."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)
        return p.returncode

    def stop_all(self):
        for p in reversed(list(self.procs)):
            self.stop(p)


def iperf3_client(host, args, bind=CLIENT_IP, port=PORT):
    argv = ["iperf3", "-c", host, "-p", str(port), "-B", bind, "-t", str(args.duration),
            "-J", "--connect-timeout", "5000"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"iperf3 client to {host}:{port} did not finish in {args.duration + 30} s")
    try:
        out = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"iperf3 client failed (exit {r.returncode}): {r.stderr.strip() or r.stdout[:300]}")
    if "error" in out:
        raise RuntimeError(f"iperf3: {out['error']}")
    recv = out["end"]["sum_received"]
    return {
        "bytes": recv["bytes"],
        "seconds": recv["seconds"],
        "gbit_per_s": recv["bits_per_second"] / 1e9,
        "retransmits": out["end"]["sum_sent"].get("retransmits"),
        "iperf3_cpu_percent": out["end"].get("cpu_utilization_percent"),
    }


def measure(host, args, proxy_pid=None, bind=CLIENT_IP, port=PORT, pids=None):
    """pids: {name: pid} of several proxy processes, reported one by one and summed."""
    pids = dict(pids or {})
    if proxy_pid:
        pids["proxy"] = proxy_pid
    cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
    res = iperf3_client(host, args, bind=bind, port=port)
    if pids:
        gb = res["bytes"] / 1e9
        total = 0.0
        for k, v in pids.items():
            cpu = cpu_seconds(v) - cpu0[k]
            total += cpu
            if len(pids) > 1:
                res[f"{k}_cpu_s"] = cpu
                res[f"{k}_cpu_s_per_gb"] = cpu / gb
        res["proxy_cpu_s"] = total
        res["proxy_cpu_s_per_gb"] = total / gb
    return res


def retry_once(fn):
    try:
        return fn()
    except RuntimeError as e:
        log(f"run failed ({e}); retrying once")
        time.sleep(1)
        res = fn()
        res["retried_after"] = str(e)  # kept in the JSON: a flaky proxy shows
        return res


def best_of(fn, repeat):
    runs = [retry_once(fn) for _ in range(repeat)]
    best = max(runs, key=lambda r: r["gbit_per_s"])
    best = dict(best)
    if repeat > 1:
        best["runs"] = runs
    return best


# ---- zring -----------------------------------------------------------------

def find_zring(build_dir):
    for cand in ("zring", "core/zring"):
        path = os.path.join(build_dir, cand)
        if os.access(path, os.X_OK):
            return path
    return None


def zring_config(workers):
    return f"""node: bench
workers: {workers}
drainTimeout: 1s
logLevel: warn
listeners:
  outbound: {ZRING_OUTBOUND[0]}:{ZRING_OUTBOUND[1]}
  inboundPlaintext: null
  hbone: null
  socks5: null
  admin: {ZRING_NODE_IP}:15000
  metrics: {ZRING_NODE_IP}:15020
  readiness: {ZRING_NODE_IP}:15021
localXds:
  workloads:
  - uid: bench//v1/Pod/default/client
    name: client
    namespace: default
    serviceAccount: client
    workloadIps: ["{CLIENT_IP}"]
    protocol: TCP
    node: bench
  - uid: bench//v1/Pod/default/server
    name: server
    namespace: default
    serviceAccount: server
    workloadIps: ["{SERVER_IP}"]
    protocol: TCP
    node: elsewhere
"""


def wait_ready(url, seconds, proc):
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"zring exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = f"{e.code} {e.read().decode(errors='replace').strip()}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"zring not ready after {seconds} s: {last}")


def iptables(*argv, check=True):
    return subprocess.run(["iptables", "-w", "5", "-t", "nat", *argv], capture_output=True, text=True,
                          check=check, timeout=30)


def capture_remove(chain=CHAIN, rules=(OUTPUT_RULE,)):
    for rule in rules:
        while iptables("-C", *rule, check=False).returncode == 0:
            iptables("-D", *rule)
    if iptables("-L", chain, "-n", check=False).returncode == 0:
        iptables("-F", chain)
        iptables("-X", chain)


def capture_install(chain=CHAIN, rules=(OUTPUT_RULE,), to_port=ZRING_OUTBOUND[1]):
    capture_remove(chain, rules)  # a chain left by an interrupted run
    iptables("-N", chain)
    for rule in rules:
        iptables("-A", *rule)
    iptables("-A", chain, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(to_port))


def hb_capture_remove():
    capture_remove(HB_CHAIN, (HB_IPERF_RULE, HB_CRR_RULE))


@contextlib.contextmanager
def hb_capture(rule):
    capture_install(HB_CHAIN, (rule,), HB_OUTBOUND[1])
    try:
        yield
    finally:
        hb_capture_remove()


def need_root_iptables():
    if os.geteuid() != 0:
        raise Skip("needs root for the iptables REDIRECT rule")
    if not shutil.which("iptables"):
        raise Skip("iptables is not installed")


def run_zring(args, procs, tmp):
    need_root_iptables()
    zring = find_zring(args.build_dir)
    if not zring:
        raise Skip(f"no zring binary in {args.build_dir} (run 'make build')")
    need_free(ZRING_OUTBOUND)
    cfg = os.path.join(tmp, "zring.yaml")
    with open(cfg, "w") as f:
        f.write(zring_config(args.workers))
    zlog = open(os.path.join(tmp, "zring.log"), "w")
    p = procs.start([zring, "--config", cfg], stdout=zlog, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://{ZRING_NODE_IP}:15021/healthz/ready", 20, p)
        capture_install()
        try:
            res = best_of(lambda: measure(SERVER_IP, args, p.pid), args.repeat)
        finally:
            capture_remove()
        try:
            with urllib.request.urlopen(f"http://{ZRING_NODE_IP}:15020/metrics", timeout=2) as r:
                res["metrics"] = [ln for ln in r.read().decode().splitlines()
                                  if ln.startswith(("istio_tcp_", "zring_")) and not ln.endswith(" 0")]
        except OSError:
            pass
    except Exception:
        zlog.flush()
        with open(zlog.name) as f:
            tail = f.read().splitlines()[-10:]
        for ln in tail:
            log(f"zring: {ln}")
        raise
    finally:
        rc = procs.stop(p)
        zlog.close()
    res["zring_exit"] = rc
    res["zring"] = zring
    res["workers"] = args.workers
    return res


# ---- HAProxy ---------------------------------------------------------------

def run_haproxy(args, procs, tmp):
    haproxy = shutil.which("haproxy")
    if not haproxy:
        raise Skip("haproxy is not installed")
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind {HAPROXY_FRONTEND}:{PORT}
    default_backend iperf3
backend iperf3
    server s1 {SERVER_IP}:{PORT}
""")
    check = subprocess.run([haproxy, "-c", "-f", cfg], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy config: {check.stderr.strip() or check.stdout.strip()}")
    hlog = open(os.path.join(tmp, "haproxy.log"), "w")
    p = procs.start([haproxy, "-db", "-f", cfg], stdout=hlog, stderr=subprocess.STDOUT)
    try:
        wait_port(HAPROXY_FRONTEND, PORT, 10, p)
        res = best_of(lambda: measure(HAPROXY_FRONTEND, args, p.pid), args.repeat)
    finally:
        procs.stop(p)
        hlog.close()
    res["version"] = version
    return res


# ---- HBONE pair (hbone, crr) and HAProxy mTLS pair -------------------------

def certs(tmp):
    """Throw-away CA and workload certificates (tests/certs/gen.sh), made once per run."""
    out = os.path.join(tmp, "certs")
    if not os.path.exists(os.path.join(out, "server.key")):
        if not shutil.which("openssl"):
            raise Skip("the openssl CLI is not installed (tests/certs/gen.sh needs it)")
        r = subprocess.run(["bash", os.path.join(TOP, "tests", "certs", "gen.sh"), out],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"tests/certs/gen.sh failed: {r.stderr.strip()[-300:]}")
    return out


def hb_state():
    return f"""workloads:
- uid: bench//v1/Pod/default/client
  name: client
  namespace: default
  serviceAccount: client
  workloadIps: ["{HB_CLIENT_IP}"]
  protocol: HBONE
  node: hb-a
  canonicalName: client
- uid: bench//v1/Pod/default/server
  name: server
  namespace: default
  serviceAccount: server
  workloadIps: ["{HB_SERVER_IP}"]
  protocol: HBONE
  node: hb-b
  canonicalName: server
  services: {{"default/crr.default.svc.cluster.local": {{{HB_VIP_PORT}: {HB_ECHO_PORT}}}}}
services:
- name: crr
  namespace: default
  hostname: crr.default.svc.cluster.local
  vips: ["/{HB_VIP}"]
  ports: {{{HB_VIP_PORT}: {HB_ECHO_PORT}}}
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/server"]
"""


def hb_node_config(node, ip, sa, certdir, outbound, workers):
    return f"""node: {node}
workers: {workers}
drainTimeout: 1s
logLevel: warn
listeners:
  outbound: {outbound}
  inboundPlaintext: null
  hbone: {ip}:15008
  socks5: null
  admin: {ip}:15000
  metrics: {ip}:15020
  readiness: {ip}:15021
identity:
  caCertificates: {certdir}/root-cert.pem
  certificates:
  - identity: spiffe://cluster.local/ns/default/sa/{sa}
    cert: {certdir}/{sa}.pem
    key: {certdir}/{sa}.key
localXdsPath: state.yaml
"""


def scrape(ip, prefixes=("istio_tcp_", "zring_hbone_", "zring_tls_")):
    try:
        with urllib.request.urlopen(f"http://{ip}:15020/metrics", timeout=2) as r:
            return [ln for ln in r.read().decode().splitlines()
                    if ln.startswith(prefixes) and not ln.endswith(" 0")]
    except OSError as e:
        return [f"# scrape failed: {e}"]


@contextlib.contextmanager
def zring_pair(args, procs, tmp, tag):
    """Nodes A (client side, capture listener) and B (server side), 1 worker each by default."""
    need_root_iptables()
    zring = find_zring(args.build_dir)
    if not zring:
        raise Skip(f"no zring binary in {args.build_dir} (run 'make build')")
    certdir = certs(tmp)
    need_free(HB_OUTBOUND, *[(ip, p) for ip in (HB_NODE_A, HB_NODE_B) for p in (15000, 15008, 15020, 15021)],
              (HB_CLIENT_IP, 15008), (HB_SERVER_IP, 15008))
    d = os.path.join(tmp, tag)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "state.yaml"), "w") as f:
        f.write(hb_state())
    nodes = {}
    logs = []
    try:
        for name, node, ip, sa, outbound in (("a", "hb-a", HB_NODE_A, "client", f"{HB_OUTBOUND[0]}:{HB_OUTBOUND[1]}"),
                                             ("b", "hb-b", HB_NODE_B, "server", "null")):
            cfg = os.path.join(d, f"node-{name}.yaml")
            with open(cfg, "w") as f:
                f.write(hb_node_config(node, ip, sa, certdir, outbound, args.workers))
            lf = open(os.path.join(d, f"node-{name}.log"), "w")
            logs.append(lf)
            nodes[name] = procs.start([zring, "--config", cfg], stdout=lf, stderr=subprocess.STDOUT)
        for name, ip in (("a", HB_NODE_A), ("b", HB_NODE_B)):
            wait_ready(f"http://{ip}:15021/healthz/ready", 20, nodes[name])
        yield nodes
    except Exception:
        for lf in logs:
            lf.flush()
            with open(lf.name) as f:
                for ln in f.read().splitlines()[-10:]:
                    log(f"{os.path.basename(lf.name)}: {ln}")
        raise
    finally:
        for p in nodes.values():
            rc = procs.stop(p)
            if rc not in (0, None):
                log(f"zring pid {p.pid} exited with status {rc}")
        for lf in logs:
            lf.close()


def run_hbone(args, procs, tmp):
    with zring_pair(args, procs, tmp, "hbone") as nodes:
        with hb_capture(HB_IPERF_RULE):
            res = best_of(lambda: measure(HB_SERVER_IP, args, bind=HB_CLIENT_IP, port=HB_IPERF_PORT,
                                          pids={"a": nodes["a"].pid, "b": nodes["b"].pid}), args.repeat)
        res["metrics_a"] = scrape(HB_NODE_A)
        res["metrics_b"] = scrape(HB_NODE_B)
    res["workers"] = args.workers
    return res


def run_haproxy_mtls(args, procs, tmp):
    haproxy = shutil.which("haproxy")
    if not haproxy:
        raise Skip("haproxy is not installed")
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    certdir = certs(tmp)
    pems = {}
    for sa in ("client", "server"):  # HAProxy's crt: certificate and key in one file
        pems[sa] = os.path.join(tmp, f"haproxy-{sa}.pem")
        with open(pems[sa], "w") as out:
            for ext in ("pem", "key"):
                with open(os.path.join(certdir, f"{sa}.{ext}")) as f:
                    out.write(f.read())
    root = os.path.join(certdir, "root-cert.pem")
    need_free(HAP_CLIENT_SIDE, HAP_SERVER_SIDE)
    cfg = os.path.join(tmp, "haproxy-mtls.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn 1000
    ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
    ssl-default-server-options ssl-min-ver TLSv1.3 no-tls-tickets
    ssl-default-bind-ciphersuites {CIPHER_SUITES}
    ssl-default-server-ciphersuites {CIPHER_SUITES}
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen client_side
    bind {HAP_CLIENT_SIDE[0]}:{HAP_CLIENT_SIDE[1]}
    server b {HAP_SERVER_SIDE[0]}:{HAP_SERVER_SIDE[1]} ssl crt {pems['client']} ca-file {root} verify required alpn h2
listen server_side
    bind {HAP_SERVER_SIDE[0]}:{HAP_SERVER_SIDE[1]} ssl crt {pems['server']} ca-file {root} verify required alpn h2
    server s {HB_SERVER_IP}:{HB_IPERF_PORT}
""")
    check = subprocess.run([haproxy, "-c", "-f", cfg], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy config: {check.stderr.strip() or check.stdout.strip()}")
    hlog = open(os.path.join(tmp, "haproxy-mtls.log"), "w")
    p = procs.start([haproxy, "-db", "-f", cfg], stdout=hlog, stderr=subprocess.STDOUT)
    try:
        wait_port(*HAP_CLIENT_SIDE, 10, p)
        res = best_of(lambda: measure(HAP_CLIENT_SIDE[0], args, p.pid, bind=HB_CLIENT_IP,
                                      port=HAP_CLIENT_SIDE[1]), args.repeat)
    finally:
        procs.stop(p)
        hlog.close()
    res["version"] = version
    res["cipher_suites"] = CIPHER_SUITES
    return res


def run_crr(args, procs, tmp):
    need_free((HB_SERVER_IP, HB_ECHO_PORT))
    with zring_pair(args, procs, tmp, "crr") as nodes:
        echo = procs.start([sys.executable, os.path.join(HERE, "crr.py"), "serve", HB_SERVER_IP,
                            str(HB_ECHO_PORT), "--procs", str(args.crr_echo_procs)])
        try:
            wait_port(HB_SERVER_IP, HB_ECHO_PORT, 10, echo)
            with hb_capture(HB_CRR_RULE):
                runs = [crr_once(args, procs, nodes, echo) for _ in range(args.repeat)]
            res = dict(max(runs, key=lambda r: r["zring_conn_per_cpu_s"] or 0))
            if len(runs) > 1:
                res["runs"] = runs
            res["metrics_a"] = scrape(HB_NODE_A, ("zring_hbone_", "zring_tls_", "zring_connections_refused",
                                                  "istio_tcp_connections_failed"))
            res["metrics_b"] = scrape(HB_NODE_B, ("zring_hbone_", "zring_tls_", "zring_connections_refused",
                                                  "istio_tcp_connections_failed"))
        finally:
            procs.stop(echo)
    return res


def crr_once(args, procs, nodes, echo):
    warm = 1.0
    start = time.monotonic() + 0.5
    argv = [sys.executable, os.path.join(HERE, "crr.py"), "client", "--dst", f"{HB_VIP}:{HB_VIP_PORT}",
            "--src", HB_CLIENT_IP, "--procs", str(args.crr_procs), "--conns", str(args.crr_conns),
            "--size", "64", "--start", repr(start), "--warmup", str(warm), "--seconds", str(args.crr_seconds)]
    if args.crr_rst:
        argv.append("--rst")
    cl = procs.start(argv, stdout=subprocess.PIPE, text=True)
    pids = {"a": nodes["a"].pid, "b": nodes["b"].pid, "echo": echo.pid}
    time.sleep(max(0.0, start + warm - time.monotonic()))
    cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
    t0 = time.monotonic()
    time.sleep(max(0.0, start + warm + args.crr_seconds - time.monotonic()))
    cpu1 = {k: cpu_seconds(v) for k, v in pids.items()}
    t1 = time.monotonic()
    try:
        out, _ = cl.communicate(timeout=args.crr_seconds + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError("crr client did not finish")
    finally:
        procs.stop(cl)
    if cl.returncode != 0:
        raise RuntimeError(f"crr client exited with status {cl.returncode}")
    res = json.loads(out)
    cpu = {k: cpu1[k] - cpu0[k] for k in pids}
    zcpu = cpu["a"] + cpu["b"]
    res.update({
        "sample_window_s": t1 - t0,
        "zring_a_cpu_s": cpu["a"], "zring_b_cpu_s": cpu["b"], "zring_cpu_s": zcpu, "echo_cpu_s": cpu["echo"],
        "zring_conn_per_cpu_s": res["completed"] / zcpu if zcpu > 0 else None,
        "zring_a_us_per_conn": cpu["a"] / res["completed"] * 1e6 if res["completed"] else None,
        "zring_b_us_per_conn": cpu["b"] / res["completed"] * 1e6 if res["completed"] else None,
    })
    return res


# ---- report ----------------------------------------------------------------

def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def report(results, skipped):
    rows = [("scenario", "Gbit/s", "GB moved", "proxy CPU s", "CPU s/GB")]
    for name, r in results.items():
        if "gbit_per_s" not in r:
            continue
        rows.append((name, fmt(r["gbit_per_s"], ".2f"), fmt(r["bytes"] / 1e9, ".2f"),
                     fmt(r.get("proxy_cpu_s"), ".2f"), fmt(r.get("proxy_cpu_s_per_gb"), ".3f")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if len(rows) > 1:
        for row in rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    hb = results.get("hbone")
    if hb:
        print(f"hbone: node A {fmt(hb.get('a_cpu_s_per_gb'), '.3f')} CPU s/GB, node B "
              f"{fmt(hb.get('b_cpu_s_per_gb'), '.3f')}, pair {fmt(hb.get('proxy_cpu_s_per_gb'), '.3f')} "
              f"(1 worker each)")
    c = results.get("crr")
    if c:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(c["errors"].items())) or "none"
        print(f"crr: {c['conn_per_s']:.0f} connections/s over {c['seconds']:.0f} s "
              f"({c['procs']} client processes x {c['conns_per_proc']} in flight, {c['size']} B echoed, "
              f"{c['close']} close; errors: {errs})")
        print(f"crr: zring CPU {c['zring_cpu_s']:.2f} s (A {c['zring_a_cpu_s']:.2f}, B {c['zring_b_cpu_s']:.2f}) -> "
              f"{fmt(c['zring_conn_per_cpu_s'], '.0f')} connections per zring CPU-second "
              f"(A {fmt(c['zring_a_us_per_conn'], '.1f')} us + B {fmt(c['zring_b_us_per_conn'], '.1f')} us "
              f"per connection; goal >= 20000/s per core)")
        print(f"crr: client {fmt(c['client_conn_per_cpu_s'], '.0f')} connections per client CPU-second "
              f"({c['client_cpu_s']:.2f} CPU s); echo server {c['echo_cpu_s']:.2f} CPU s")
    for name, why in skipped.items():
        print(f"{name}: skipped: {why}")
    ratios = {}
    z, h = results.get("zring"), results.get("haproxy")
    if z and h:
        ratios["throughput_zring_over_haproxy"] = z["gbit_per_s"] / h["gbit_per_s"]
        ratios["cpu_per_gb_zring_over_haproxy"] = z["proxy_cpu_s_per_gb"] / h["proxy_cpu_s_per_gb"]
        print(f"zring/HAProxy: throughput {ratios['throughput_zring_over_haproxy']:.2f}x, "
              f"CPU per GB {ratios['cpu_per_gb_zring_over_haproxy']:.2f}x (lower is better)")
    hm = results.get("haproxy-mtls")
    if hb and hm:
        ratios["throughput_hbone_over_haproxy_mtls"] = hb["gbit_per_s"] / hm["gbit_per_s"]
        ratios["cpu_per_gb_hbone_over_haproxy_mtls"] = hb["proxy_cpu_s_per_gb"] / hm["proxy_cpu_s_per_gb"]
        print(f"zring HBONE pair / HAProxy mTLS pair: throughput {ratios['throughput_hbone_over_haproxy_mtls']:.2f}x, "
              f"CPU per GB {ratios['cpu_per_gb_hbone_over_haproxy_mtls']:.2f}x (goal <= 0.6)")
    d = results.get("direct")
    if d:
        for name in ("zring", "haproxy"):
            if name in results:
                ratios[f"throughput_{name}_over_direct"] = results[name]["gbit_per_s"] / d["gbit_per_s"]
    return ratios


SCENARIOS = [  # name, function (None: direct iperf3), iperf3 server it needs
    ("direct", None, (SERVER_IP, PORT)),
    ("zring", run_zring, (SERVER_IP, PORT)),
    ("haproxy", run_haproxy, (SERVER_IP, PORT)),
    ("hbone", run_hbone, (HB_SERVER_IP, HB_IPERF_PORT)),
    ("haproxy-mtls", run_haproxy_mtls, (HB_SERVER_IP, HB_IPERF_PORT)),
    ("crr", run_crr, None),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--duration", type=int, default=10, help="seconds per iperf3 run (default 10)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per scenario, best kept (default 1)")
    ap.add_argument("--workers", type=int, default=1, help="zring workers (default 1)")
    ap.add_argument("--only", action="append", choices=[n for n, _, _ in SCENARIOS],
                    help="run only these scenarios (repeatable)")
    ap.add_argument("--crr-seconds", type=float, default=5.0, help="crr: measured seconds (default 5)")
    ap.add_argument("--crr-procs", type=int, default=max(2, min(8, os.cpu_count() or 2)),
                    help="crr: client processes (default: CPUs, 2..8)")
    ap.add_argument("--crr-conns", type=int, default=0,
                    help="crr: connections in flight per client process (default: 64 in all, which "
                         "stays under poolMaxStreamsPerConnection so every stream shares one HBONE connection)")
    ap.add_argument("--crr-echo-procs", type=int, default=1, help="crr: echo server processes (default 1)")
    ap.add_argument("--crr-rst", action="store_true", help="crr: clients close with RST (SO_LINGER 0) instead of FIN")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    if args.crr_conns <= 0:
        args.crr_conns = max(1, 64 // args.crr_procs)
    if not shutil.which("iperf3"):
        log("iperf3 is not installed (deploy/install-deps.sh installs it)")
        return 1

    # SIGTERM/SIGHUP unwind through the finally blocks like Ctrl-C does.
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    wanted = set(args.only or [s for s, _, _ in SCENARIOS])
    results, skipped, failed = {}, {}, {}
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="zring-bench.")
    try:
        for name, fn, iperf_server in SCENARIOS:
            if name not in wanted:
                continue
            if name == "crr":
                log(f"{name}: {args.crr_seconds:g} s x {args.repeat}")
            else:
                log(f"{name}: {args.duration} s x {args.repeat}")
            server = None
            try:
                if iperf_server:
                    # A fresh iperf3 server per scenario: one left "busy" by an
                    # aborted test cannot spoil the next.
                    need_free(iperf_server)
                    server = procs.start(["iperf3", "-s", "-B", iperf_server[0], "-p", str(iperf_server[1])],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    wait_port(*iperf_server, 10, server)
                if fn is None:
                    results[name] = best_of(lambda: measure(SERVER_IP, args), args.repeat)
                else:
                    results[name] = fn(args, procs, tmp)
                r = results[name]
                if "gbit_per_s" in r:
                    log(f"{name}: {r['gbit_per_s']:.2f} Gbit/s, {r.get('proxy_cpu_s_per_gb', 0):.3f} CPU s/GB")
                else:
                    log(f"{name}: {r['conn_per_s']:.0f} conn/s, {r['zring_conn_per_cpu_s'] or 0:.0f} per zring CPU-s")
            except Skip as e:
                skipped[name] = str(e)
                log(f"{name}: skipped: {e}")
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                failed[name] = str(e)
                log(f"{name}: FAILED: {e}")
            finally:
                if server:
                    procs.stop(server)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except RuntimeError as e:
        log(str(e))
        return 1
    finally:
        procs.stop_all()
        if os.geteuid() == 0 and shutil.which("iptables"):
            capture_remove()
            hb_capture_remove()
        shutil.rmtree(tmp, ignore_errors=True)

    ratios = report(results, skipped)
    for name, why in failed.items():
        print(f"{name}: FAILED: {why}")

    doc = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "machine": platform.machine()},
        "test": {"tool": "iperf3", "streams": 1, "duration_s": args.duration, "repeat": args.repeat,
                 "client": CLIENT_IP, "server": f"{SERVER_IP}:{PORT}",
                 "hbone": {"client": HB_CLIENT_IP, "server": f"{HB_SERVER_IP}:{HB_IPERF_PORT}",
                           "node_a": HB_NODE_A, "node_b": HB_NODE_B, "vip": f"{HB_VIP}:{HB_VIP_PORT}",
                           "crr_echo": f"{HB_SERVER_IP}:{HB_ECHO_PORT}"}},
        "results": results, "skipped": skipped, "failed": failed, "ratios": ratios,
    }
    zring = find_zring(args.build_dir)
    if zring:
        with open(zring, "rb") as f:
            doc["zring_binary"] = {"path": zring, "sha256": hashlib.sha256(f.read()).hexdigest(),
                                   "mtime": datetime.datetime.fromtimestamp(os.path.getmtime(zring)).isoformat()}
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"bench-{stamp}.json")
    for p in (path, os.path.join(args.out, "latest.json")):
        with open(p, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    print(f"results: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
