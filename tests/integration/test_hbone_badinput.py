#!/usr/bin/python3
"""Hostile HBONE peers against zring node B's 127.0.5.2:15008: TLS garbage,
handshakes that never finish (closed after ~10 s, reason timeout), a bad HTTP/2
client preface, an oversized header block, CONNECT without :authority, DATA on
closed and idle streams, SETTINGS / PING floods without reading, a RST_STREAM
("rapid reset") flood. zring must close or refuse each cleanly, never crash,
release what the peer held, and afterwards still carry A -> B traffic."""

import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.4.2'
SERVER = '127.0.5.2'
VIP = '127.10.4.2'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')
ADDR = (SERVER, 15008)

PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


frame = z.h2_frame
read_frames = z.h2_read_frames


def goaway_code(frames):
    for ft, fl, sid, p in frames:
        if ft == GOAWAY and len(p) >= 8:
            return struct.unpack('!I', p[4:8])[0]
    return None


def rst_codes(frames, sid=None):
    return [struct.unpack('!I', p[:4])[0] for ft, fl, s, p in frames if ft == RST_STREAM and (sid is None or s == sid)]


def hpack_connect(authority=None, extra=()):
    import hpack
    hdrs = [(':method', 'CONNECT')]
    if authority:
        hdrs.append((':authority', authority))
    hdrs += list(extra)
    return hpack.Encoder().encode(hdrs)


def main(t):
    why = z.have_h2()
    if why:
        t.skip_all(why)
    z.raise_nofile()
    certs = z.make_certs()
    echo = z.EchoServer(SERVER, 8080)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE', services={z.svc_key('hb-echo'): {80: 8080}}),
    ]
    svcs = [z.service('hb-echo', VIP, {80: 8080}, sans=[SERVER_ID])]
    b = z.hbone_node(t, 'node-b', z.HB_B_IP, certs, [(SERVER_ID, 'server')], wls, svcs)
    a = z.hbone_node(t, 'node-a', z.HB_A_IP, certs, [(CLIENT_ID, 'client')], wls, svcs)
    if not b.start() or not a.start():
        return
    rss0 = b.rss_kb()

    def tls_conn(preface=True):
        c = z.H2Client(certs, ADDR, src=CLIENT, send_preface=False)
        if preface:
            c.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        return c

    # --- started first, judged last: a TCP connection that never handshakes
    idle = {}

    def idle_handshake():
        t0 = time.monotonic()
        s = socket.create_connection(ADDR, timeout=20, source_address=(CLIENT, 0))
        p = socket.create_connection(ADDR, timeout=20, source_address=(CLIENT, 0))
        p.sendall(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03')  # the start of a ClientHello, then silence
        for name, sock in (('silent', s), ('partial', p)):
            r = z.outcome(sock, 20 - (time.monotonic() - t0))
            idle[name] = (r, time.monotonic() - t0)
            sock.close()
    timeouts0 = z.tls_failures(b, 'timeout')
    idle_th = threading.Thread(target=idle_handshake, daemon=True)
    idle_th.start()

    def garbage():
        f0 = z.tls_failures(b)
        for junk in (b'\x00' * 64, os.urandom(4096), b'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
                     b'\x16\x03\x01\xff\xff' + os.urandom(300)):
            s = socket.create_connection(ADDR, timeout=5, source_address=(CLIENT, 0))
            try:
                s.sendall(junk)
            except OSError:
                pass
            r = z.outcome(s, 5)
            s.close()
            t.ok(r in ('eof', 'reset') or (isinstance(r, tuple) and r[0] == 'data'),
                 'TLS garbage (%r...): zring answers or closes within 5 s' % junk[:8], 'saw %r' % (r,))
        ok = z.wait_until(lambda: z.tls_failures(b) - f0 >= 4, 3, 0.1)
        fails = [(l.get('reason'), v) for l, v in z.mfind(b.metrics(), 'zring_tls_handshake_failures_total') if v]
        t.ok(ok, 'the 4 garbage handshakes are counted in zring_tls_handshake_failures_total', repr(fails))
        t.diag('handshake failures by reason: %r' % fails)
        t.cmp(z.tls_failures(b, 'protocol'), '>=', 4, 'counted with reason="protocol"')
        t.ok(b.alive(), 'B alive')

    def bad_preface():
        c = tls_conn(preface=False)
        c.sock.sendall(b'GET / HTTP/1.1\r\nHost: 127.0.5.2\r\n\r\n')
        frames, end = read_frames(c.sock, 5)
        c.close()
        t.ok(end in ('eof', 'reset'), 'HTTP/1.1 instead of the HTTP/2 preface: connection closed',
             'end %r, frames %r' % (end, [f[0] for f in frames]))
        t.diag('bad preface: GOAWAY code %r, end %r' % (goaway_code(frames), end))
        c = tls_conn(preface=False)
        c.sock.sendall(b'PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n' + frame(SETTINGS, 0, 0))
        frames, end = read_frames(c.sock, 5)
        c.close()
        t.ok(end in ('eof', 'reset'), 'corrupted preface: connection closed', 'end %r' % end)
        c = tls_conn(preface=False)
        c.sock.sendall(PREFACE + frame(PING, 0, 0, b'\x00' * 8))   # first frame must be SETTINGS
        frames, end = read_frames(c.sock, 5)
        c.close()
        t.ok(end in ('eof', 'reset') and goaway_code(frames) is not None,
             'PING before SETTINGS: GOAWAY and close', 'end %r goaway %r' % (end, goaway_code(frames)))

    def oversized_headers():
        c = tls_conn()
        block = hpack_connect('%s:8080' % SERVER, [('x-big', 'a' * (100 * 1024))])
        out = bytearray()
        first = True
        while block or first:
            chunk, block = block[:16384], block[16384:]
            ft = HEADERS if first else CONTINUATION
            out += frame(ft, END_HEADERS if not block else 0, 1, chunk)
            first = False
        try:
            c.sock.sendall(bytes(out))
        except OSError:
            pass
        frames, end = read_frames(c.sock, 5, until=lambda fs: any(f[0] in (GOAWAY, RST_STREAM, HEADERS) for f in fs))
        types = [f[0] for f in frames]
        hdr = [f for f in frames if f[0] == HEADERS]
        t.ok(not hdr or b'200' not in hdr[0][3], 'a 100 KiB header block is not answered 200')
        t.ok(goaway_code(frames) is not None or rst_codes(frames, 1) or hdr or end in ('eof', 'reset'),
             'a 100 KiB header block gets a stream or connection error (or a 4xx)',
             'frames %r end %r' % (types, end))
        t.diag('100 KiB headers: frames %r, goaway %r, rst %r, end %r' % (types, goaway_code(frames), rst_codes(frames), end))
        c.close()
        t.ok(b.alive(), 'B alive')

    def no_authority():
        active0 = b.active()
        c = tls_conn()
        c.sock.sendall(frame(HEADERS, END_HEADERS, 1, hpack_connect(None)))
        frames, end = read_frames(c.sock, 5, until=lambda fs: any(f[0] in (GOAWAY, RST_STREAM, HEADERS) for f in fs))
        hdr = [f for f in frames if f[0] == HEADERS and f[2] == 1]
        t.ok(rst_codes(frames, 1) or goaway_code(frames) is not None or hdr,
             'CONNECT without :authority: 400, stream reset or GOAWAY',
             'frames %r end %r' % ([f[0] for f in frames], end))
        c.close()
        t.ok(z.wait_until(lambda: b.active() <= active0, 5, 0.1),
             'B releases the refused stream (zring_worker_connections_active back to %d)' % active0, b.active_diag())

    def data_on_closed_stream():
        c = z.H2Client(certs, ADDR, src=CLIENT)
        sid = c.connect('%s:8080' % SERVER)
        t.is_(c.response(sid), 200, 'CONNECT answered 200')
        c.send(sid, b'bye', end_stream=True)
        c.wait(lambda: c.st(sid)['ended'], 5)
        t.ok(c.st(sid)['ended'], 'stream closed both ways')
        time.sleep(0.2)
        c.sock.sendall(frame(DATA, 0, sid, b'zombie data'))
        frames, end = read_frames(c.sock, 5, until=lambda fs: any(f[0] == GOAWAY for f in fs))
        gc = goaway_code(frames)
        t.ok(gc is not None or rst_codes(frames, sid), 'DATA on a closed stream: GOAWAY (STREAM_CLOSED) or RST_STREAM',
             'frames %r end %r' % ([f[0] for f in frames], end))
        t.diag('DATA on closed stream: goaway %r rst %r' % (gc, rst_codes(frames)))
        c.close()
        c = tls_conn()
        c.sock.sendall(frame(DATA, 0, 99, b'idle stream data'))
        frames, end = read_frames(c.sock, 5, until=lambda fs: any(f[0] == GOAWAY for f in fs))
        t.is_(goaway_code(frames), 1, 'DATA on an idle stream: GOAWAY PROTOCOL_ERROR')
        c.close()
        t.ok(b.alive(), 'B alive')

    def flood(name, make_frame, count=100000):
        c = tls_conn()
        fr = make_frame()
        batch = fr * 1000
        sent = 0
        err = None
        t0 = time.monotonic()
        c.sock.settimeout(10)
        try:
            while sent < count:
                c.sock.sendall(batch)
                sent += 1000
        except (OSError, socket.timeout) as e:
            err = repr(e)
        # now read: zring must have closed the connection (flood protection)
        frames, end = read_frames(c.sock, 10)
        dt = time.monotonic() - t0
        c.close()
        closed = err is not None or end in ('eof', 'reset')
        t.ok(closed, '%s flood (%d frames, never reading): zring closes the connection' % (name, count),
             'sent %d, send error %r, read end %r, %d frames read' % (sent, err, end, len(frames)))
        t.diag('%s flood: sent %d frames in %.2f s, send error %r, read end %r, GOAWAY %r' %
               (name, sent, dt, err, end, goaway_code(frames)))
        t.ok(b.alive(), 'B alive after the %s flood' % name)

    def floods():
        flood('PING', lambda: frame(PING, 0, 0, b'12345678'))
        flood('SETTINGS', lambda: frame(SETTINGS, 0, 0, struct.pack('!HI', 4, 65535)))

    def rapid_reset():
        acc0 = echo.accepted
        active0 = b.active()
        c = tls_conn()
        out = bytearray()
        n = 5000
        import hpack
        enc = hpack.Encoder()
        for i in range(n):
            sid = 1 + 2 * i
            out += frame(HEADERS, END_HEADERS, sid, enc.encode([(':method', 'CONNECT'), (':authority', '%s:8080' % SERVER)]))
            out += frame(RST_STREAM, 0, sid, struct.pack('!I', 8))
        err = None
        try:
            c.sock.settimeout(10)
            c.sock.sendall(bytes(out))
        except OSError as e:
            err = repr(e)
        frames, end = read_frames(c.sock, 5)
        c.close()
        t.diag('rapid reset: %d HEADERS+RST pairs; send error %r; GOAWAY %r; read end %r; upstream accepts %d' %
               (n, err, goaway_code(frames), end, echo.accepted - acc0))
        t.ok(b.alive(), 'B survives a rapid-reset flood of %d streams' % n)
        t.ok(z.wait_until(lambda: b.metric('zring_hbone_streams_active') == 0, 10, 0.2),
             'B: zring_hbone_streams_active back to 0', repr(b.metric('zring_hbone_streams_active')))
        t.ok(b.wait_active(active0, 15), 'B: every upstream connection opened for the reset streams is released',
             b.active_diag())

    def handshake_timeout():
        idle_th.join(25)
        for name in ('silent', 'partial'):
            r, dt = idle.get(name, ('nothing', 99))
            t.ok(r in ('eof', 'reset') and 8 <= dt <= 13,
                 'a TCP connection that %s never completes the TLS handshake is closed after ~10 s' %
                 ('sends nothing' if name == 'silent' else 'sends half a ClientHello'),
                 'saw %r after %.2f s' % (r, dt))
            t.diag('%s handshake: %r after %.2f s' % (name, r, dt))
        t.cmp(z.tls_failures(b, 'timeout') - timeouts0, '>=', 2,
              'zring_tls_handshake_failures_total{reason="timeout"} counts them')
        t.ok(z.wait_until(lambda: b.metric('zring_hbone_connections', role='server') == 0, 5, 0.1),
             'every abusive connection released (zring_hbone_connections{role="server"} back to 0)',
             'gauge %r' % b.metric('zring_hbone_connections', role='server'))

    def still_works():
        s = z.socks5_connect(a.socks5, VIP, 80, src=CLIENT)
        s.sendall(b'after-the-abuse')
        t.is_(z.recv_exact(s, 15), b'after-the-abuse', 'A -> HBONE -> B echo still works')
        s.close()
        c = z.H2Client(certs, ADDR, src=CLIENT)
        sid = c.connect('%s:8080' % SERVER)
        r = c.response(sid)
        if r == 200:
            sent, n, got, ended = c.transfer(sid, 16 * z.MiB, seed=72)
            t.ok(n == 16 * z.MiB and sent == got, 'a well-behaved HBONE client still gets a byte-exact 16 MiB echo')
        else:
            t.ok(False, 'a well-behaved HBONE client still gets 200', repr(r))
        c.close()
        rss = b.rss_kb()
        t.cmp(rss, '<=', rss0 + 256 * 1024, 'B RSS grew by < 256 MiB (%s -> %s kB)' % (rss0, rss))
        t.ok(b.alive() and a.alive(), 'both zring nodes alive at the end')

    def sub(name, fn):
        t.subtest(name, fn)
        try:
            t.diag('    B after "%s": zring_worker_connections_active %r, zring_hbone_streams_active %r' % (
                name, b.active(), b.metric('zring_hbone_streams_active')))
        except Exception as e:
            t.diag('    B metrics unavailable: %r' % e)

    sub('TLS garbage', garbage)
    sub('bad client preface', bad_preface)
    sub('oversized header block', oversized_headers)
    sub('CONNECT without :authority', no_authority)
    sub('DATA on closed/idle streams', data_on_closed_stream)
    sub('SETTINGS / PING floods', floods)
    sub('RST_STREAM flood', rapid_reset)
    sub('handshake timeout', handshake_timeout)
    sub('still works', still_works)


z.Tap('hbone-badinput', timeout=300).run(main)
