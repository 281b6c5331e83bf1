#!/usr/bin/env python3
"""Connect / request / response / close load for perf/bench.py's `crr` scenario (stdlib only).

  crr.py serve HOST PORT [--procs N]
      epoll echo server (SO_REUSEPORT, N processes): echoes what it reads,
      closes when the peer does.
  crr.py client --dst IP:PORT --src IP [--procs P] [--conns C] [--size 64]
                [--start T] [--warmup W] [--seconds S]
      P processes, each keeping C connections in flight on one epoll loop:
      connect (non-blocking, IP_BIND_ADDRESS_NO_PORT), send SIZE bytes, read
      SIZE bytes back, close (a normal FIN close; --rst closes with
      SO_LINGER 0 instead), start the next. Counts only the connections that
      complete inside [T + W, T + W + S] (T: time.monotonic(), which is
      system-wide on Linux, so a parent can sample other processes' CPU over
      the same window). Prints one JSON object: completed, errors by kind,
      rate, and the clients' own CPU seconds in the window.
"""
import argparse
import errno
import json
import multiprocessing
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

IP_BIND_ADDRESS_NO_PORT = 24
STALL_S = 5.0  # a connection with no progress for this long counts as an error


def serve(host, port, procs):
    def one():
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        ls.bind((host, port))
        ls.listen(4096)
        ls.setblocking(False)
        ep = select.epoll()
        lfd = ls.fileno()
        ep.register(lfd, select.EPOLLIN)
        conns = {}
        accept, recv, send = ls.accept, socket.socket.recv, socket.socket.send
        while True:
            for fd, ev in ep.poll(-1, 512):
                if fd == lfd:
                    while True:
                        try:
                            c, _ = accept()
                        except BlockingIOError:
                            break
                        except OSError:
                            break
                        c.setblocking(False)
                        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conns[c.fileno()] = c
                        ep.register(c.fileno(), select.EPOLLIN)
                    continue
                c = conns.get(fd)
                if c is None:
                    continue
                try:
                    data = recv(c, 65536)
                    if data:
                        send(c, data)  # small echoes: the socket buffer takes them whole
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                ep.unregister(fd)
                del conns[fd]
                c.close()

    kids = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the finally below (kids inherit it)
    for _ in range(procs - 1):
        pid = os.fork()
        if pid == 0:
            try:
                one()
            finally:
                os._exit(0)
        kids.append(pid)
    try:
        one()
    finally:
        for pid in kids:
            try:
                os.kill(pid, 15)
            except OSError:
                pass


def client_proc(dst, src, conns, size, start, warmup, seconds, rst, out):
    w0, w1 = start + warmup, start + warmup + seconds
    payload = b"x" * size
    ep = select.epoll()
    state = {}  # fd -> [sock, phase (0 connecting, 1 reading), got, t_last]
    done = 0
    total_done = 0
    errors = {}
    linger0 = struct.pack("ii", 1, 0)
    AF, ST = socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    EPOLLOUT, EPOLLIN = select.EPOLLOUT, select.EPOLLIN
    mono = time.monotonic

    def err(kind):
        errors[kind] = errors.get(kind, 0) + 1

    def open_one(now):
        s = socket.socket(AF, ST)
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        s.bind((src, 0))
        rc = s.connect_ex(dst)
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            err(f"connect:{errno.errorcode.get(rc, rc)}")
            return False
        fd = s.fileno()
        state[fd] = [s, 0, 0, now]
        ep.register(fd, EPOLLOUT)
        return True

    def close_one(fd):
        st = state.pop(fd)
        ep.unregister(fd)
        st[0].close()

    while mono() < start:
        time.sleep(0.001)
    now = mono()
    for _ in range(conns):
        open_one(now)
    r0 = None
    last_sweep = now
    while True:
        now = mono()
        if r0 is None and now >= w0:
            r0 = resource.getrusage(resource.RUSAGE_SELF)
        if now >= w1:
            break
        for fd, ev in ep.poll(0.2, 256):
            st = state.get(fd)
            if st is None:
                continue
            s = st[0]
            if st[1] == 0:
                e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    err(f"connect:{errno.errorcode.get(e, e)}")
                    close_one(fd)
                    open_one(now)
                    continue
                try:
                    s.send(payload)
                except OSError as ex:
                    err(f"send:{errno.errorcode.get(ex.errno, ex.errno)}")
                    close_one(fd)
                    open_one(now)
                    continue
                st[1] = 1
                st[3] = now
                ep.modify(fd, EPOLLIN)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as ex:
                err(f"recv:{errno.errorcode.get(ex.errno, ex.errno)}")
                close_one(fd)
                open_one(now)
                continue
            if not data:
                err("eof_before_reply" if st[2] == 0 else "short_reply")
                close_one(fd)
                open_one(now)
                continue
            st[2] += len(data)
            st[3] = now
            if st[2] < size:
                continue
            close_one(fd)
            total_done += 1
            if w0 <= now < w1:
                done += 1
            open_one(now)
        if now - last_sweep > 1.0:
            last_sweep = now
            for fd in [fd for fd, st in state.items() if now - st[3] > STALL_S]:
                err("stalled_5s")
                close_one(fd)
                open_one(now)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    if r0 is None:
        r0 = r1
    for fd in list(state):
        close_one(fd)
    out.put({"completed": done, "completed_all": total_done, "errors": errors,
             "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)})


def client(a):
    host, _, port = a.dst.rpartition(":")
    dst = (host, int(port))
    start = a.start if a.start else time.monotonic() + 0.3
    q = multiprocessing.Queue()
    ps = [multiprocessing.Process(target=client_proc,
                                  args=(dst, a.src, a.conns, a.size, start, a.warmup, a.seconds, a.rst, q))
          for _ in range(a.procs)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ok = False
    try:
        for p in ps:
            p.start()
        res = [q.get(timeout=start - time.monotonic() + a.warmup + a.seconds + 60) for _ in ps]
        ok = True
    finally:
        for p in ps:
            if p.pid is None:
                continue
            if not ok:
                p.terminate()
            p.join()
    errors = {}
    for r in res:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    completed = sum(r["completed"] for r in res)
    cpu = sum(r["cpu_s"] for r in res)
    doc = {"completed": completed, "completed_all": sum(r["completed_all"] for r in res),
           "seconds": a.seconds, "conn_per_s": completed / a.seconds, "errors": errors,
           "procs": a.procs, "conns_per_proc": a.conns, "size": a.size, "close": "rst" if a.rst else "fin",
           "client_cpu_s": cpu, "client_conn_per_cpu_s": completed / cpu if cpu > 0 else None}
    print(json.dumps(doc))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--procs", type=int, default=1)
    p = sub.add_parser("client")
    p.add_argument("--dst", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--conns", type=int, default=16, help="connections in flight per process")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--start", type=float, default=0.0, help="time.monotonic() to start at")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rst", action="store_true", help="close with SO_LINGER 0 (RST, no TIME-WAIT)")
    a = ap.parse_args()
    try:
        if a.cmd == "serve":
            serve(a.host, a.port, a.procs)
            return 0
        return client(a)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
