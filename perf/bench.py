#!/usr/bin/env python3
"""make bench: one-stream iperf3 throughput and proxy CPU cost, three ways.

  direct   iperf3 client (bound to 127.0.1.2) -> iperf3 server 127.0.1.3:5201
  zring    the same connection captured by an iptables REDIRECT in the OUTPUT
           chain to zring's outbound listener 127.0.0.1:15001; zring reads
           SO_ORIGINAL_DST (127.0.1.3:5201) and connects there with SO_MARK
           1337, which the rule exempts. Needs root (skipped otherwise).
  haproxy  HAProxy (nbthread 1, mode tcp) frontend 127.0.0.4:5201 -> backend
           127.0.1.3:5201, when haproxy is installed.

For each: Gbit/s from iperf3 --json, and the proxy process's CPU seconds
(utime + stime from /proc/PID/stat) per GB moved. Prints a table and the
zring/HAProxy ratios, and writes JSON to bench-out/.
"""
import argparse
import datetime
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


def iperf3_client(host, args, bind=CLIENT_IP):
    argv = ["iperf3", "-c", host, "-p", str(PORT), "-B", bind, "-t", str(args.duration),
            "-J", "--connect-timeout", "5000"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"iperf3 client to {host}:{PORT} did not finish in {args.duration + 30} s")
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


def measure(host, args, proxy_pid=None):
    cpu0 = cpu_seconds(proxy_pid) if proxy_pid else None
    res = iperf3_client(host, args)
    if proxy_pid:
        cpu = cpu_seconds(proxy_pid) - cpu0
        res["proxy_cpu_s"] = cpu
        res["proxy_cpu_s_per_gb"] = cpu / (res["bytes"] / 1e9)
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


def capture_remove():
    while iptables("-C", *OUTPUT_RULE, check=False).returncode == 0:
        iptables("-D", *OUTPUT_RULE)
    if iptables("-L", CHAIN, "-n", check=False).returncode == 0:
        iptables("-F", CHAIN)
        iptables("-X", CHAIN)


def capture_install():
    capture_remove()  # a chain left by an interrupted run
    iptables("-N", CHAIN)
    iptables("-A", *OUTPUT_RULE)
    iptables("-A", CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(ZRING_OUTBOUND[1]))


def run_zring(args, procs, tmp):
    if os.geteuid() != 0:
        raise Skip("needs root for the iptables REDIRECT rule")
    if not shutil.which("iptables"):
        raise Skip("iptables is not installed")
    zring = find_zring(args.build_dir)
    if not zring:
        raise Skip(f"no zring binary in {args.build_dir} (run 'make build')")
    if not port_free(*ZRING_OUTBOUND):
        raise RuntimeError(f"{ZRING_OUTBOUND[0]}:{ZRING_OUTBOUND[1]} is already in use")
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


# ---- report ----------------------------------------------------------------

def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def report(results, skipped):
    rows = [("scenario", "Gbit/s", "GB moved", "proxy CPU s", "CPU s/GB")]
    for name, r in results.items():
        rows.append((name, fmt(r["gbit_per_s"], ".2f"), fmt(r["bytes"] / 1e9, ".2f"),
                     fmt(r.get("proxy_cpu_s"), ".2f"), fmt(r.get("proxy_cpu_s_per_gb"), ".3f")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    for name, why in skipped.items():
        print(f"{name}: skipped: {why}")
    ratios = {}
    z, h = results.get("zring"), results.get("haproxy")
    if z and h:
        ratios["throughput_zring_over_haproxy"] = z["gbit_per_s"] / h["gbit_per_s"]
        ratios["cpu_per_gb_zring_over_haproxy"] = z["proxy_cpu_s_per_gb"] / h["proxy_cpu_s_per_gb"]
        print(f"zring/HAProxy: throughput {ratios['throughput_zring_over_haproxy']:.2f}x, "
              f"CPU per GB {ratios['cpu_per_gb_zring_over_haproxy']:.2f}x (lower is better)")
    d = results.get("direct")
    if d:
        for name in ("zring", "haproxy"):
            if name in results:
                ratios[f"throughput_{name}_over_direct"] = results[name]["gbit_per_s"] / d["gbit_per_s"]
    return ratios


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--duration", type=int, default=10, help="seconds per iperf3 run (default 10)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per scenario, best kept (default 1)")
    ap.add_argument("--workers", type=int, default=1, help="zring workers (default 1)")
    ap.add_argument("--only", action="append", choices=["direct", "zring", "haproxy"],
                    help="run only these scenarios (repeatable)")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    if not shutil.which("iperf3"):
        log("iperf3 is not installed (deploy/install-deps.sh installs it)")
        return 1

    # SIGTERM/SIGHUP unwind through the finally blocks like Ctrl-C does.
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    scenarios = [("direct", None), ("zring", run_zring), ("haproxy", run_haproxy)]
    wanted = set(args.only or [s for s, _ in scenarios])
    results, skipped, failed = {}, {}, {}
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="zring-bench.")
    try:
        for name, fn in scenarios:
            if name not in wanted:
                continue
            log(f"{name}: {args.duration} s x {args.repeat}")
            # A fresh iperf3 server per scenario: one left "busy" by an
            # aborted test cannot spoil the next.
            if not port_free(SERVER_IP, PORT):
                raise RuntimeError(f"{SERVER_IP}:{PORT} is already in use")
            server = procs.start(["iperf3", "-s", "-B", SERVER_IP, "-p", str(PORT)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_port(SERVER_IP, PORT, 10, server)
                if fn is None:
                    results[name] = best_of(lambda: measure(SERVER_IP, args), args.repeat)
                else:
                    results[name] = fn(args, procs, tmp)
                log(f"{name}: {results[name]['gbit_per_s']:.2f} Gbit/s")
            except Skip as e:
                skipped[name] = str(e)
                log(f"{name}: skipped: {e}")
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                failed[name] = str(e)
                log(f"{name}: FAILED: {e}")
            finally:
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
        shutil.rmtree(tmp, ignore_errors=True)

    ratios = report(results, skipped)
    for name, why in failed.items():
        print(f"{name}: FAILED: {why}")

    doc = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "machine": platform.machine()},
        "test": {"tool": "iperf3", "streams": 1, "duration_s": args.duration, "repeat": args.repeat,
                 "client": CLIENT_IP, "server": f"{SERVER_IP}:{PORT}"},
        "results": results, "skipped": skipped, "failed": failed, "ratios": ratios,
    }
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
