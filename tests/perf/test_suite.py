#!/usr/bin/python3
"""`zring-bench suite` end to end, as a user runs it (TAP output).

usage: test_suite.py PATH-TO-ZRING-BENCH

Runs `zring-bench suite --quick --duration 1 --out TMP` (which starts its own
zring nodes, HAProxy and echo/sink servers on 127.0.0.70-76, 127.0.44-46.x)
and checks what it leaves behind: exit 0; report.json against the schema
below (per scenario the figures a reader compares are present, finite and
positive; the client's bytes and requests match what the servers saw; no
errors through zring); each SVG is XML; report.md has a row per scenario; no
private key survives the run. Also that bad arguments are usage errors that
name the argument. Skipped scenarios are accepted only for a missing haproxy,
for zring-hbone-openssl (a zring that refuses tls.recordLayer: openssl) and
for zring-hbone-dpdk (a zring built without DPDK).
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

SCENARIOS = ["direct", "zring", "haproxy", "zring-hbone", "haproxy-mtls", "zring-hbone-openssl", "zring-hbone-dpdk"]
PROXIED = {"zring": 1, "haproxy": 1, "zring-hbone": 2, "haproxy-mtls": 1, "zring-hbone-openssl": 2,
           "zring-hbone-dpdk": 2}
MUST_BE_CLEAN = {"direct", "zring", "zring-hbone", "zring-hbone-openssl", "zring-hbone-dpdk"}
RATIOS = [
    "zring/haproxy CPU-s per GB", "zring/haproxy rr p99", "zring/haproxy crr rate",
    "zring-hbone/haproxy-mtls CPU-s per GB", "zring-hbone/haproxy-mtls rr p99", "zring-hbone/haproxy-mtls crr rate",
    "zring-hbone/zring-hbone-openssl CPU-s per GB", "zring-hbone-dpdk/zring-hbone CPU-s per GB",
]


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0
        print("TAP version 13", flush=True)

    def ok(self, cond, desc, diag=None):
        self.n += 1
        print(f"{'ok' if cond else 'not ok'} {self.n} - {desc.replace('#', 'No.')}", flush=True)
        if not cond:
            self.failed += 1
            if diag:
                for line in str(diag).splitlines()[:40]:
                    print(f"# {line}", flush=True)
        return bool(cond)

    def diag(self, msg):
        for line in str(msg).splitlines():
            print(f"# {line}", flush=True)

    def done(self):
        print(f"1..{self.n}", flush=True)
        return 1 if self.failed else 0


def positive(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def nonneg(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def check_keys(t, obj, spec, where):
    """spec: {key: predicate}; one TAP line per object, naming every bad key."""
    bad = []
    for key, pred in spec.items():
        if not isinstance(obj, dict) or key not in obj:
            bad.append(f"{key}: missing")
        elif not pred(obj[key]):
            bad.append(f"{key}: {obj[key]!r}")
    return t.ok(not bad, f"{where}: {', '.join(spec)} present and valid", "; ".join(bad))


def is_str(v):
    return isinstance(v, str) and v != ""


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_scenario(t, name, sc, rate):
    status = sc.get("status")
    if status == "skipped":
        reason = sc.get("skipped")
        allowed = (name in ("haproxy", "haproxy-mtls") and shutil.which("haproxy") is None) or \
            name == "zring-hbone-openssl" or \
            (name == "zring-hbone-dpdk" and "not built in" in (reason or ""))
        t.ok(allowed and is_str(reason), f"{name}: skipped only where allowed, with a reason", repr(reason))
        t.diag(f"{name} skipped: {reason}")
        return
    t.ok(status == "ok" and sc.get("failed") is None and sc.get("skipped") is None,
         f"{name}: ran without failure", f"status {status!r}: {sc.get('failed')!r}")
    proxied = name in PROXIED
    stream, rr, crr = sc.get("stream"), sc.get("rr"), sc.get("crr")
    for mode, part in (("stream", stream), ("rr", rr), ("crr", crr)):
        if not t.ok(isinstance(part, dict), f"{name}: has {mode} figures", repr(part)[:200]):
            return
        t.ok(isinstance(part.get("report"), dict) and part["report"],
             f"{name} {mode}: carries the engine's full report", repr(part.get("report"))[:200])
    spec = {"gbps": positive, "bytes": positive, "server_bytes": is_int, "elapsed_s": positive, "errors": is_int}
    if proxied:
        spec.update(proxy_cpu_s=positive, proxy_cpu_s_per_gb=positive)
    check_keys(t, stream, spec, f"{name} stream")
    spec = {"requests_per_s": positive, "requests": positive, "server_requests": is_int, "errors": is_int,
            "latency_us": lambda v: isinstance(v, dict) and all(positive(v.get(k)) for k in
                                                                 ("p50", "p90", "p99", "p99_9", "max"))}
    if proxied:
        spec.update(proxy_cpu_s=nonneg, proxy_cpu_s_per_1000_requests=nonneg)
    check_keys(t, rr, spec, f"{name} rr")
    check_keys(t, crr, dict(spec, connections_per_s=positive), f"{name} crr")

    if isinstance(stream.get("bytes"), int) and isinstance(stream.get("server_bytes"), int):
        b, sb = stream["bytes"], stream["server_bytes"]
        t.ok(abs(sb - b) <= 0.02 * b + (1 << 20), f"{name} stream: the sink received what the client sent",
             f"client {b} bytes, sink {sb}")
    lat = rr.get("latency_us") or {}
    if all(positive(lat.get(k)) for k in ("p50", "p99", "p99_9", "max")):
        t.ok(lat["p50"] <= lat["p99"] <= lat["p99_9"] <= lat["max"], f"{name} rr: percentiles are ordered",
             repr(lat))
    if positive(rr.get("requests_per_s")):
        t.ok(rr["requests_per_s"] >= 0.5 * rate, f"{name} rr: keeps near the asked rate ({rate:g}/s)",
             f"{rr['requests_per_s']:.0f}/s")
    for mode, part in (("rr", rr), ("crr", crr)):
        if is_int(part.get("requests")) and is_int(part.get("server_requests")):
            t.ok(part["requests"] <= part["server_requests"] <= part["requests"] + 64,
                 f"{name} {mode}: the echo server answered every request the client counted",
                 f"client {part['requests']}, server {part['server_requests']}")
    if name in MUST_BE_CLEAN:
        errs = {m: p.get("errors") for m, p in (("stream", stream), ("rr", rr), ("crr", crr))}
        t.ok(all(e == 0 for e in errs.values()), f"{name}: no errors in any mode", repr(errs))
    proxies = sc.get("proxies")
    if proxied:
        ok = isinstance(proxies, list) and len(proxies) == PROXIED[name] and all(
            isinstance(p, dict) and is_str(p.get("name")) and positive(p.get("rss_peak_kb")) and
            isinstance(p.get("cpu_s"), dict) for p in proxies)
        t.ok(ok, f"{name}: {PROXIED[name]} proxy process(es), each with its peak RSS and CPU", repr(proxies))
    else:
        t.ok(proxies == [], f"{name}: no proxy processes", repr(proxies))


def main():
    exe = os.path.abspath(sys.argv[1])
    t = Tap()

    p = subprocess.run([exe, "suite", "--bogus"], capture_output=True, text=True, timeout=30)
    t.ok(p.returncode == 1 and "--bogus" in p.stderr and "usage:" in p.stderr,
         "suite --bogus: usage error naming --bogus, exit 1", f"rc {p.returncode}: {p.stderr[:300]}")
    p = subprocess.run([exe, "suite", "--scenarios", "direct,nope"], capture_output=True, text=True, timeout=30)
    t.ok(p.returncode == 1 and "'nope'" in p.stderr, "suite --scenarios with an unknown name: exit 1 naming it",
         f"rc {p.returncode}: {p.stderr[:300]}")
    p = subprocess.run([exe, "suite", "--duration", "x"], capture_output=True, text=True, timeout=30)
    t.ok(p.returncode == 1 and "--duration" in p.stderr, "suite --duration x: exit 1 naming --duration",
         f"rc {p.returncode}: {p.stderr[:300]}")

    out = tempfile.mkdtemp(prefix="zring-suite-test-")
    try:
        try:
            p = subprocess.run([exe, "suite", "--quick", "--duration", "1", "--out", out],
                               capture_output=True, text=True, timeout=270)
        except subprocess.TimeoutExpired as e:
            t.ok(False, "suite --quick finishes", f"timed out; stderr: {(e.stderr or b'')[-2000:]!r}")
            return t.done()
        t.diag(p.stdout)
        if not t.ok(p.returncode == 0, "suite --quick --duration 1 exits 0", f"rc {p.returncode}\n{p.stderr[-3000:]}"):
            t.diag(p.stderr[-3000:])
        try:
            with open(os.path.join(out, "report.json")) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            t.ok(False, "report.json is JSON", repr(e))
            return t.done()
        t.ok(doc.get("schema") == "zring-bench-suite/1", "report.json: schema zring-bench-suite/1", doc.get("schema"))
        check_keys(t, doc.get("env"), {"version": is_str, "cpu_model": is_str, "cores": positive, "kernel": is_str,
                                       "command_line": is_str, "started_at": is_str, "zring_version": is_str},
                   "report.json env")
        rate = (doc.get("options") or {}).get("rr_rate") or 1000
        scs = doc.get("scenarios") or {}
        t.ok(list(scs) == SCENARIOS, "report.json: every scenario, in order", repr(list(scs)))
        for name in SCENARIOS:
            if name in scs:
                check_scenario(t, name, scs[name], rate)
        ratios = doc.get("ratios") or {}
        t.ok(all(k in ratios and (ratios[k] is None or positive(ratios[k])) for k in RATIOS),
             "report.json: every ratio, a positive number or null", repr(ratios))
        if all(scs.get(n, {}).get("status") == "ok" for n in ("zring", "haproxy")):
            t.ok(positive(ratios.get("zring/haproxy CPU-s per GB")),
                 "zring/haproxy CPU per GB is computed when both ran", repr(ratios))
        if all(scs.get(n, {}).get("status") == "ok" for n in ("zring-hbone", "haproxy-mtls")):
            t.ok(positive(ratios.get("zring-hbone/haproxy-mtls CPU-s per GB")),
                 "zring-hbone/haproxy-mtls CPU per GB is computed when both ran", repr(ratios))
        t.diag("ratios: " + json.dumps(ratios))

        for svg in ("latency.svg", "throughput.svg", "cpu-per-gb.svg"):
            path = os.path.join(out, svg)
            try:
                root = ET.parse(path).getroot()
                t.ok(root.tag.endswith("svg"), f"{svg} parses as SVG", root.tag)
            except (OSError, ET.ParseError) as e:
                t.ok(False, f"{svg} parses as SVG", repr(e))
        try:
            with open(os.path.join(out, "report.md")) as f:
                md = f.read()
        except OSError as e:
            md = ""
            t.ok(False, "report.md exists", repr(e))
        missing = [n for n in SCENARIOS if not any(ln.startswith(f"| {n} |") for ln in md.splitlines())]
        t.ok(not missing, "report.md: a table row per scenario", f"missing {missing}")
        t.ok("haproxy" in md and "kernel" in md and "CPU" in md, "report.md says what was run (versions, CPU, kernel)")
        keys = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".key")]
        t.ok(not keys, "no private key is left in --out after the run", repr(keys))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
