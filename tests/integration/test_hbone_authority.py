#!/usr/bin/python3
"""What an HBONE CONNECT may name, and on which policies it is decided. Node B
(127.49.0.2, one identity `server`) serves the local workloads w1 127.49.2.2,
w2 127.49.2.3 and `hole` 127.49.2.9 (a listener whose accept queue is full, so
connects to it hang); a Python TLS + h2 client with the `client` certificate
plays a workload of node A at 127.49.1.2.

- `:authority` must name the address the connection came to (ztunnel's
  validate_destination): a connection to w1's 15008 cannot reach w2 (a network
  policy that admits w1:15008 and not w2 would be bypassed), nor can one to the
  node's own address reach a workload; nor may a stream reach a workload whose
  identity is no longer the one its connection presented (after a reload):
  400, reason="bad_request";
- a stream whose header block spans a reload (HEADERS, then CONTINUATION after
  a DENY-all policy came) is decided on the new policies: 401;
- a stream (or an inbound plaintext connection, with root: iptables DNAT to
  15006) still connecting upstream when a DENY-all policy comes is refused
  (reset), never answered 200 or relayed once the connect completes;
- a header block that never ends is bounded: the stream is reset after
  connectTimeout, counted as reason="headers_timeout", and the connection
  keeps serving."""

import copy
import os
import socket
import ssl
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

B_IP = '127.49.0.2'
CLIENT = '127.49.1.2'
W1 = '127.49.2.2'
W2 = '127.49.2.3'
HOLE = '127.49.2.9'
CLIENT_ID, SERVER_ID = z.spiffe('client'), z.spiffe('server')
DENY_ALL = [{'name': 'deny-all', 'namespace': 'default', 'scope': 'Namespace', 'action': 'Deny',
             'rules': [[[{'sourceIps': ['0.0.0.0/0']}]]]}]


def frame(ftype, flags, sid, payload):
    return struct.pack('>I', len(payload))[1:] + bytes([ftype, flags]) + struct.pack('>I', sid) + payload


def hp(name, value):
    """HPACK literal without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    return b'\x00' + bytes([len(n)]) + n + bytes([len(v)]) + v


class RawH2:
    """HTTP/2 over TLS by hand, for header blocks split over CONTINUATION."""

    def __init__(self, certs, dst):
        import hpack
        raw = socket.socket()
        raw.bind((CLIENT, 0))
        raw.settimeout(10)
        raw.connect((dst, 15008))
        self.s = z.hbone_tls_context(certs, 'client').wrap_socket(raw)
        self.s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + frame(4, 0, 0, b''))
        self.buf = b''
        self.dec = hpack.Decoder()
        self.data = {}
        # ack the server's SETTINGS now: no other frame may go between a
        # HEADERS and its CONTINUATION
        while True:
            f = self.read_frame(10)
            if f is None or (f[0] == 4 and not f[1] & 1):
                break

    def read_frame(self, timeout):
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], 'big')
                if len(self.buf) >= 9 + n:
                    break
            d = self.s.recv(65536)
            if not d:
                return None
            self.buf += d
        t, fl = self.buf[3], self.buf[4]
        sid = int.from_bytes(self.buf[5:9], 'big') & 0x7fffffff
        p, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        if t == 4 and not fl & 1:
            self.s.sendall(frame(4, 1, 0, b''))
        if t == 6 and not fl & 1:
            self.s.sendall(frame(6, 1, 0, p))
        return t, fl, sid, p

    def event(self, sid, timeout=10):
        """The stream's response status (int), 'rst', 'goaway', 'closed' or 'timeout';
        DATA on the stream is kept in self.data."""
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                f = self.read_frame(max(0.05, end - time.monotonic()))
                if f is None:
                    return 'closed'
                t, fl, s, p = f
                if t == 1:
                    if fl & 0x8:
                        p = p[1:len(p) - p[0]]
                    if fl & 0x20:
                        p = p[5:]
                    hdrs = dict(self.dec.decode(p))
                    if s == sid:
                        return int(hdrs.get(':status', 0))
                elif t == 0:
                    self.data[s] = self.data.get(s, b'') + p
                elif t == 3 and s == sid:
                    return 'rst'
                elif t == 7:
                    return 'goaway'
        except (socket.timeout, ssl.SSLError):
            pass
        except OSError:
            return 'closed'
        return 'timeout'

    def echo(self, sid, payload, timeout=5):
        self.s.sendall(frame(0, 0, sid, payload))
        end = time.monotonic() + timeout
        while len(self.data.get(sid, b'')) < len(payload) and time.monotonic() < end:
            if self.event(sid, 0.2) in ('rst', 'closed', 'goaway'):
                break
        return self.data.get(sid, b'')

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def main(t):
    why = z.have_h2()
    if why:
        t.skip_all(why)
        return
    certs = z.make_certs()
    z.EchoServer(W1, 8080)
    z.EchoServer(W2, 8080)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('w1', W1, node='node-b', protocol='HBONE', sa='server'),
        z.workload('w2', W2, node='node-b', protocol='HBONE', sa='server'),
        z.workload('hole', HOLE, node='node-b', protocol='HBONE', sa='server'),
    ]
    b = z.hbone_node(t, 'node-b', B_IP, certs, [(SERVER_ID, 'server')], wls, workers=1, plaintext=True,
                     extra={'connectTimeout': '5s'})
    if not b.start():
        return
    base_state = copy.deepcopy(b.state)

    def set_state(state, what):
        before = max([v for n, _, v in b.metrics() if n == 'zring_worker_config_epoch'] or [0])
        b.state = state
        b.write_state()
        b.reload()
        ok = z.wait_until(lambda: min([v for n, _, v in b.metrics() if n == 'zring_worker_config_epoch']
                                      or [0]) > before, 5, 0.05)
        t.ok(ok, 'B runs ' + what)

    def set_policies(pols):
        state = copy.deepcopy(base_state)
        state['policies'] = pols
        set_state(state, 'the new policies %r' % [p['name'] for p in pols])

    def h2(dst):
        return z.H2Client(certs, (dst, 15008), cert='client', src=CLIENT)

    def authority():
        before = b.refused('bad_request')
        c = h2(W1)
        sid = c.connect('%s:8080' % W2)
        t.is_(c.response(sid), 400, 'connection to %s:15008, CONNECT %s:8080 (another local workload): 400' % (W1, W2))
        sid = c.connect('%s:8080' % W1)
        t.is_(c.response(sid), 200, 'the same connection, CONNECT %s:8080 (its own address): 200' % W1)
        c.send(sid, b'own-w1')
        c.wait(lambda: len(c.st(sid)['data']) >= 6, 5)
        t.is_(bytes(c.st(sid)['data']), b'own-w1', 'and relays to w1')
        c.close()
        c = h2(B_IP)
        sid = c.connect('%s:8080' % W1)
        t.is_(c.response(sid), 400, 'connection to the node\'s own %s:15008, CONNECT %s:8080: 400' % (B_IP, W1))
        c.close()
        t.is_(b.refused('bad_request') - before, 2, 'both counted as reason="bad_request"')
        # every failed connection carries a flag; a refused CONNECT is CONNECT
        m = b.metric('istio_tcp_connections_failed_total', reporter='destination', response_flags='CONNECT')
        t.ok(m >= 2, 'and as istio_tcp_connections_failed_total{response_flags="CONNECT"}', 'got %r' % m)
        # the identity a connection presented must stay the destination's
        c = h2(W1)
        sid = c.connect('%s:8080' % W1)
        t.is_(c.response(sid), 200, 'a connection to w1 presenting %s: 200' % SERVER_ID)
        state = copy.deepcopy(base_state)
        for w in state['workloads']:
            if w['name'] == 'w1':
                w['serviceAccount'] = 'other'
        set_state(state, 'w1 with service account `other`')
        sid = c.connect('%s:8080' % W1)
        t.is_(c.response(sid), 400, 'a new stream on that connection, now that w1 is sa/other: 400')
        c.close()
        set_policies([])

    def headers_timeout():
        before = b.refused('headers_timeout')
        r = RawH2(certs, W1)
        r.s.sendall(frame(1, 0, 1, hp(':method', 'CONNECT')))   # no END_HEADERS
        t0 = time.monotonic()
        ev = r.event(1, 9)
        dt = time.monotonic() - t0
        t.ok(ev == 'rst' and 3 < dt < 9, 'a header block that does not end: stream reset after connectTimeout (5 s)',
             'got %r after %.1f s' % (ev, dt))
        t.is_(b.refused('headers_timeout') - before, 1, 'counted as reason="headers_timeout"')
        # the peer may still finish the block; the connection then serves on
        r.s.sendall(frame(9, 4, 1, hp(':authority', '%s:8080' % W1)))
        r.s.sendall(frame(1, 4, 3, hp(':method', 'CONNECT') + hp(':authority', '%s:8080' % W1)))
        t.is_(r.event(3), 200, 'a later stream on the same connection: 200')
        t.is_(r.echo(3, b'after-rst'), b'after-rst', 'and relays')
        r.close()

    class Hole:
        """A listener on HOLE:port whose accept queue is full, so that a connect to
        it waits for a SYN retransmit; open() makes room (and echoes), so that
        the connect then completes."""

        def __init__(self, port):
            self.lsock = z.listen_socket(HOLE, port, backlog=0)
            self.socks = []
            for _ in range(3):
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex((HOLE, port))
                self.socks.append(f)
            self.stop = False
            self.th = None
            time.sleep(0.2)

        def open(self):
            def echo(s):
                s.settimeout(5)
                try:
                    d = s.recv(100)
                    if d:
                        s.sendall(d)
                except OSError:
                    pass

            def drain():
                self.lsock.settimeout(0.2)
                while not self.stop:
                    try:
                        s = self.lsock.accept()[0]
                    except OSError:
                        continue
                    self.socks.append(s)
                    threading.Thread(target=echo, args=(s,), daemon=True).start()
            self.th = threading.Thread(target=drain, daemon=True)
            self.th.start()

        def close(self):
            self.stop = True
            if self.th:
                self.th.join()
            for s in self.socks:
                s.close()
            self.lsock.close()

    def connecting_across_reload():
        hole = Hole(8080)
        before = b.refused('denied')
        c = h2(HOLE)
        try:
            sid = c.connect('%s:8080' % HOLE)
            r = c.response(sid, 0.5)
            t.is_(r, ('closed', 'timeout'), 'CONNECT %s:8080: B is connecting (no answer yet)' % HOLE)
            set_policies(DENY_ALL)
            hole.open()   # B's connect would now complete on its next SYN retransmit
            r = c.response(sid, 8)
            t.ok(isinstance(r, tuple) and r[0] == 'reset',
                 'a DENY-all policy that comes while B connects: the stream is reset, never answered 200',
                 'got %r' % (r,))
            t.is_(b.refused('denied') - before, 1, 'counted as reason="denied"')
        finally:
            c.close()
            hole.close()
            set_policies([])

    def plaintext_connecting_across_reload():
        """Inbound plaintext: CLIENT -> HOLE:8081 is DNATed to B's HOLE:15006."""
        if os.geteuid() != 0 or not z.shutil.which('iptables'):
            t.skip('inbound plaintext connecting across a reload', 'needs root and iptables')
            return
        ipt = z.Iptables()
        ipt.append('nat', 'OUTPUT', '-s', '%s/32' % CLIENT, '-d', '%s/32' % HOLE, '-p', 'tcp', '--dport', '8081',
                   '-m', 'mark', '!', '--mark', '0x539', '-j', 'DNAT', '--to-destination', '%s:15006' % HOLE)
        hole = Hole(8081)
        s = None
        try:
            before = b.refused('denied')
            s = z.connect(HOLE, 8081, src=CLIENT, timeout=5)
            s.sendall(b'plain')
            t.ok(z.wait_until(lambda: b.active() >= 1, 3), 'plaintext to %s:8081: B is connecting' % HOLE)
            set_policies(DENY_ALL)
            hole.open()
            r = z.outcome(s, 8)
            t.ok(r in ('eof', 'reset'),
                 'plaintext: a DENY-all policy that comes while B connects closes the connection, nothing relayed',
                 'got %r' % (r,))
            t.is_(b.refused('denied') - before, 1, 'counted as reason="denied"')
        finally:
            if s:
                s.close()
            ipt.cleanup()
            hole.close()
            set_policies([])

    def continuation_across_reload():
        before = b.refused('denied')
        r = RawH2(certs, W1)
        r.s.sendall(frame(1, 0, 1, hp(':method', 'CONNECT')))   # no END_HEADERS
        time.sleep(0.3)
        set_policies(DENY_ALL)
        c = h2(W1)
        sid = c.connect('%s:8080' % W1)
        t.is_(c.response(sid), 401, 'control: a new stream after the reload: 401')
        c.close()
        r.s.sendall(frame(9, 4, 1, hp(':authority', '%s:8080' % W1)))   # CONTINUATION, END_HEADERS
        ev = r.event(1)
        t.is_(ev, 401, 'HEADERS before the DENY-all reload, CONTINUATION after: 401')
        if ev == 200:
            t.diag('echo: %r' % r.echo(1, b'leak'))
        r.close()
        t.is_(b.refused('denied') - before, 2, 'both counted as reason="denied"')
        set_policies([])

    t.subtest(':authority must be the address the connection came to', authority)
    t.subtest('request headers bounded by connectTimeout', headers_timeout)
    t.subtest('upstream connect spanning a policy change', connecting_across_reload)
    t.subtest('plaintext upstream connect spanning a policy change', plaintext_connecting_across_reload)
    t.subtest('header block spanning a policy change', continuation_across_reload)
    t.ok(b.alive(), 'node B still running')
    b.stop()


if __name__ == '__main__':
    z.Tap('hbone_authority', timeout=120).run(main)
