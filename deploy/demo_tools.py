#!/usr/bin/python3
"""Small stdlib-only helpers for deploy/demo.sh.

  demo_tools.py serve HOST PORT
      echo server; a connection that starts with b"SINK" is a sink instead:
      it reads to EOF and answers the byte count (8 bytes, big endian).
  demo_tools.py free HOST:PORT...
      fails, naming them, when any of these addresses has a listener.
  demo_tools.py wait-listen HOST:PORT SECONDS PID
      waits until HOST:PORT accepts connections; fails early when PID exits.
  demo_tools.py wait-ready URL SECONDS PID
      polls URL until it answers 200; fails early when PID has exited.
  demo_tools.py scrape URL FILE
      saves the metrics text at URL into FILE.
  demo_tools.py moved BEFORE AFTER
      prints istio_tcp_* and zring_* series that are nonzero and changed.
  demo_tools.py mtls FILE
      prints the istio_tcp_* series with connection_security_policy="mutual_tls"
      (reporter, workloads and SPIFFE principals shown) and the nonzero
      zring_hbone_* / zring_tls_* series; fails when no mutual_tls connection
      was counted.
  demo_tools.py push --socks HOST:PORT --src IP --dst IP:PORT --bytes N
      SOCKS5 CONNECT from IP through zring, says hello (echo), then sends N
      bytes to the sink and prints bytes and throughput.
"""
import argparse
import os
import socket
import socketserver
import struct
import sys
import time
import urllib.error
import urllib.request


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = recv_exact(sock, 4)
        if first == b"SINK":
            total = 0
            buf = bytearray(1 << 20)
            while True:
                n = sock.recv_into(buf)
                if n == 0:
                    break
                total += n
            sock.sendall(struct.pack("!Q", total))
            return
        data = first
        while data:
            sock.sendall(data)
            data = sock.recv(1 << 16)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(host, port):
    with Server((host, port), Handler) as srv:
        srv.serve_forever()


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode(errors="replace")


def wait_ready(url, seconds, pid):
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if pid and not os.path.exists(f"/proc/{pid}"):
            print(f"demo: zring (pid {pid}) exited before it was ready", file=sys.stderr)
            return 1
        try:
            status, body = http_get(url, 1.0)
            if status == 200:
                return 0
            last = f"{status} {body.strip()}"
        except urllib.error.HTTPError as e:
            last = f"{e.code} {e.read().decode(errors='replace').strip()}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    print(f"demo: {url} not ready after {seconds} s: {last}", file=sys.stderr)
    return 1


def free(addrs):
    busy = []
    for a in addrs:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(hostport(a))
            except OSError:
                busy.append(a)
    if busy:
        print(f"demo: already in use: {' '.join(busy)} (another zring or a test run?)", file=sys.stderr)
        return 1
    return 0


def wait_listen(addr, seconds, pid):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pid and not os.path.exists(f"/proc/{pid}"):
            print(f"demo: pid {pid} exited before listening on {addr}", file=sys.stderr)
            return 1
        try:
            with socket.create_connection(hostport(addr), timeout=0.5):
                return 0
        except OSError:
            time.sleep(0.05)
    print(f"demo: nothing listening on {addr} after {seconds} s", file=sys.stderr)
    return 1


def scrape(url, path):
    _, body = http_get(url, 5.0)
    with open(path, "w") as f:
        f.write(body)
    return 0


def parse_metrics(path):
    series = {}
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            name, _, value = line.rstrip("\n").rpartition(" ")
            try:
                series[name] = float(value)
            except ValueError:
                pass
    return series


# Labels worth a glance in the demo; the full series are at /metrics.
SHOWN_LABELS = ("reporter", "source_workload", "destination_service", "destination_workload", "worker",
                "direction", "reason")


def short_series(series):
    name, brace, labels = series.partition("{")
    if not brace:
        return series
    kept = []
    for pair in labels.rstrip("}").split('",'):
        key = pair.partition("=")[0]
        if key in SHOWN_LABELS:
            kept.append(pair if pair.endswith('"') else pair + '"')
    return f"{name}{{{','.join(kept)}}}" if kept else name


def moved(before_path, after_path):
    before = parse_metrics(before_path)
    after = parse_metrics(after_path)
    for name, value in after.items():
        if not (name.startswith("istio_tcp_") or name.startswith("zring_")):
            continue
        if value != 0 and before.get(name) != value:
            was = before.get(name, 0)
            print(f"  {short_series(name)} {value:.0f}  (+{value - was:.0f})")
    return 0


MTLS_LABELS = ("reporter", "source_workload", "source_principal", "destination_service", "destination_workload",
               "destination_principal", "connection_security_policy")


def labels_of(series):
    name, _, rest = series.partition("{")
    out = {}
    rest = rest.rstrip("}")
    while rest:
        key, _, rest = rest.partition('="')
        val, _, rest = rest.partition('"')
        out[key.lstrip(",")] = val
    return name, out


def mtls(path):
    series = parse_metrics(path)
    seen = False
    for s, value in series.items():
        name, labels = labels_of(s)
        if name.startswith("istio_tcp_") and labels.get("connection_security_policy") == "mutual_tls":
            if name == "istio_tcp_connections_opened_total" and value > 0:
                seen = True
            shown = ",".join(f'{k}="{labels[k]}"' for k in MTLS_LABELS if k in labels)
            print(f"  {name}{{{shown}}} {value:.0f}")
    for s, value in series.items():
        if s.startswith(("zring_hbone_", "zring_tls_")) and value != 0:
            print(f"  {s} {value:.0f}")
    if not seen:
        print(f"demo: no istio_tcp_connections_opened_total with connection_security_policy=\"mutual_tls\" "
              f"in {path}", file=sys.stderr)
        return 1
    return 0


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def recv_exact(sock, n):
    """n bytes, or fewer at EOF (MSG_WAITALL is unreliable on sockets with a timeout)."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def socks5_connect(proxy, src, dst, timeout):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((src, 0))
    sock.connect(proxy)
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2) != b"\x05\x00":
        raise OSError("SOCKS5: no-auth method refused")
    host, port = dst
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack("!H", port))
    reply = recv_exact(sock, 10)
    if len(reply) < 2 or reply[1] != 0:
        raise OSError(f"SOCKS5: CONNECT {host}:{port} refused (reply {reply.hex() or 'empty'})")
    return sock


def push(args):
    proxy = hostport(args.socks)
    dst = hostport(args.dst)

    with socks5_connect(proxy, args.src, dst, args.timeout) as s:
        hello = b"hello through zring"
        s.sendall(hello)
        got = recv_exact(s, len(hello))
        print(f"echo: sent {hello!r}, got back {got!r}")
        if got != hello:
            print("demo: echo mismatch", file=sys.stderr)
            return 1

    chunk = memoryview(bytearray(os.urandom(1 << 16) * 16))  # 1 MiB
    total = args.bytes
    with socks5_connect(proxy, args.src, dst, args.timeout) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        t0 = time.monotonic()
        s.sendall(b"SINK")
        left = total
        while left > 0:
            n = min(left, len(chunk))
            s.sendall(chunk[:n])
            left -= n
        s.shutdown(socket.SHUT_WR)
        reply = recv_exact(s, 8)
        elapsed = time.monotonic() - t0
    if len(reply) != 8:
        print("demo: sink closed without a byte count", file=sys.stderr)
        return 1
    counted = struct.unpack("!Q", reply)[0]
    gbits = total * 8 / elapsed / 1e9
    print(f"sink: sent {total} bytes ({total / (1 << 30):.2f} GiB), sink counted {counted} bytes, "
          f"{elapsed:.2f} s, {gbits:.2f} Gbit/s")
    if counted != total:
        print("demo: the sink counted a different number of bytes", file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p = sub.add_parser("free")
    p.add_argument("addrs", nargs="+")
    p = sub.add_parser("wait-listen")
    p.add_argument("addr")
    p.add_argument("seconds", type=float)
    p.add_argument("pid", type=int, nargs="?", default=0)
    p = sub.add_parser("wait-ready")
    p.add_argument("url")
    p.add_argument("seconds", type=float)
    p.add_argument("pid", type=int, nargs="?", default=0)
    p = sub.add_parser("scrape")
    p.add_argument("url")
    p.add_argument("file")
    p = sub.add_parser("moved")
    p.add_argument("before")
    p.add_argument("after")
    p = sub.add_parser("mtls")
    p.add_argument("file")
    p = sub.add_parser("push")
    p.add_argument("--socks", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--bytes", type=int, default=1 << 30)
    p.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    try:
        if a.cmd == "serve":
            return serve(a.host, a.port)
        if a.cmd == "free":
            return free(a.addrs)
        if a.cmd == "wait-listen":
            return wait_listen(a.addr, a.seconds, a.pid)
        if a.cmd == "wait-ready":
            return wait_ready(a.url, a.seconds, a.pid)
        if a.cmd == "scrape":
            return scrape(a.url, a.file)
        if a.cmd == "moved":
            return moved(a.before, a.after)
        if a.cmd == "mtls":
            return mtls(a.file)
        return push(a)
    except (OSError, urllib.error.URLError) as e:
        print(f"demo: {a.cmd}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
