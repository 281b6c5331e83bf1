#!/usr/bin/python3
"""Interop: hostile TLS 1.3 records against zring's record layer (crypto/record.c;
README "Record crypto"). An independent HBONE client (Python ssl driven through
ssl.MemoryBIO + SSLContext.wrap_bio, certificate `client`, ALPN h2, python3-h2)
talks to one zring node (127.0.0.46, local workload 127.0.12.2 with an echo
server on 127.0.12.2:8080) on 127.0.12.2:15008. Driving the socket itself, the
client can change the ciphertext after the handshake:

  1. a clean CONNECT stream echoes byte-exact; a second connection B stays open;
  2. one flipped bit in an application-data record: zring answers with an
     encrypted bad_record_mac alert (decrypted by our SSLObject) and closes;
     also while zring's send to us is stuck behind a full receive buffer: the
     alert then follows the data in flight;
  3. a record cut short, then TCP half-close: zring closes, keeps serving;
  4. a forged record header of 18000 bytes (> 2^14 + 256): zring closes;
  5. connection B and a new connection still echo: only the bad ones died;
  6. close_notify from the client after a stream: zring closes cleanly, its
     metrics answer and count no handshake failure.

Passes on either record layer (ZRTEST_RECORD_LAYER=openssl: OpenSSL's own),
and with ZRTEST_RECORD_CRYPTO=ktls inside a kernel with the tls ULP, where a
bad record resets the connection without an alert (the kernel aborts it)."""

import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
import zrtest as z  # noqa: E402

NODE_IP = '127.0.0.46'
SERVER = '127.0.12.2'          # zring's local workload (echo server on :8080)
CLIENT = '127.0.12.3'          # our source address (a workload of another node)
PORT = 8080
ADDR = (SERVER, 15008)
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')
CIPHER_MAX = (1 << 14) + 256   # RFC 8446 5.2: TLSCiphertext.length limit
# recordCrypto: ktls (run inside the UML kernel): the kernel opens the records,
# and on one that fails it aborts the socket (tls_err_abort): the connection
# resets with no alert, and what zring had in flight is lost with it.
KTLS = os.environ.get('ZRTEST_RECORD_CRYPTO') == 'ktls'


class BioConn:
    """HBONE client over ssl.SSLObject: every byte on the wire passes through here,
    so a test can send sealed records as they are, altered, or cut short."""

    def __init__(self, certs, addr=ADDR, src=CLIENT, timeout=5.0, rcvbuf=None):
        import h2.config
        import h2.connection
        import h2.settings
        if rcvbuf:
            # set before connect, so that the window TCP offers stays small
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.bind((src, 0))
            self.sock.connect(addr)
        else:
            self.sock = socket.create_connection(addr, timeout=timeout, source_address=(src, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.tls = z.hbone_tls_context(certs, 'client').wrap_bio(self.inc, self.out, server_side=False)
        self.end = None          # 'eof' | 'reset' | 'error:...' once the TCP stream ended
        self.tls_error = None    # ssl.SSLError from decrypting what zring sent
        self.close_notify = False
        self.streams = {}
        self.goaway = None
        self.rx = 0              # raw bytes received
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self.send_raw(self.out.read())
            if not self.recv_raw(deadline - time.monotonic()):
                raise ConnectionError('handshake: %s' % (self.end or 'timeout'))
        self.send_raw(self.out.read())   # our Certificate, CertificateVerify, Finished
        self.h2 = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding='utf-8', validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.flush()

    # -- raw TCP
    def send_raw(self, data):
        if data:
            self.sock.sendall(data)

    def recv_raw(self, timeout):
        """One recv into the incoming BIO. False on timeout or end of the TCP stream."""
        if self.end:
            return False
        self.sock.settimeout(max(0.01, timeout))
        try:
            d = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except ConnectionResetError:
            self.end = 'reset'
            return False
        except OSError as e:
            self.end = 'error:%r' % e
            return False
        if not d:
            self.end = 'eof'
            return False
        self.inc.write(d)
        self.rx += len(d)
        return True

    # -- TLS
    def seal(self, plain):
        """The records our SSLObject makes of `plain` (not sent)."""
        self.tls.write(plain)
        return self.out.read()

    def open_tls(self):
        """Decrypts what is buffered; returns the plaintext. Sets tls_error / close_notify."""
        got = bytearray()
        while self.tls_error is None and not self.close_notify:
            try:
                d = self.tls.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.close_notify = True
                break
            except ssl.SSLError as e:
                self.tls_error = e
                break
            if not d:
                break
            got += d
        return bytes(got)

    # -- HTTP/2
    def flush(self):
        d = self.h2.data_to_send()
        if d:
            self.send_raw(self.seal(d))

    def st(self, sid):
        return self.streams.setdefault(sid, {'status': None, 'data': bytearray(), 'ended': False, 'reset': None})

    def _feed(self, plain):
        import h2.events
        import h2.exceptions
        if not plain:
            return
        for ev in self.h2.receive_data(plain):
            sid = getattr(ev, 'stream_id', None)
            if isinstance(ev, h2.events.ResponseReceived):
                self.st(sid)['status'] = int(dict(ev.headers).get(':status', 0))
            elif isinstance(ev, h2.events.DataReceived):
                self.st(sid)['data'] += ev.data
                if ev.flow_controlled_length:
                    try:
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                    except h2.exceptions.StreamClosedError:
                        pass
            elif isinstance(ev, h2.events.StreamEnded):
                self.st(sid)['ended'] = True
            elif isinstance(ev, h2.events.StreamReset):
                self.st(sid)['reset'] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code

    def pump(self, timeout):
        """Reads, decrypts and processes once; answers what h2 wants answered."""
        self.recv_raw(timeout)
        self._feed(self.open_tls())
        if self.tls_error is None and not self.end:
            try:
                self.flush()
            except OSError:
                pass

    def wait(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0 or self.end or self.tls_error is not None or self.close_notify:
                return bool(pred())
            self.pump(min(left, 0.5))
        return True

    def connect(self, authority):
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(':method', 'CONNECT'), (':authority', authority)])
        self.flush()
        self.st(sid)
        return sid

    def response(self, sid, timeout=5.0):
        s = self.st(sid)
        self.wait(lambda: s['status'] is not None or s['reset'] is not None or self.goaway is not None, timeout)
        return s['status'] if s['status'] is not None else (s['reset'], self.goaway, self.end, self.tls_error)

    def echo(self, sid, data, timeout=5.0):
        """Sends data on the stream and waits until as much came back; returns what came back."""
        s = self.st(sid)
        start = len(s['data'])
        self.h2.send_data(sid, data)
        self.flush()
        self.wait(lambda: len(s['data']) - start >= len(data) or s['reset'] is not None or s['ended'], timeout)
        return bytes(s['data'][start:])

    def until_closed(self, timeout=5.0):
        """Reads (and decrypts) until the TCP stream ends or timeout. Returns (end, seconds)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while not self.end and time.monotonic() < deadline:
            self.recv_raw(deadline - time.monotonic())
            plain = self.open_tls()
            if self.tls_error is None and not self.close_notify:
                try:
                    self._feed(plain)
                except Exception:
                    pass
        return self.end or 'timeout', time.monotonic() - t0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def split_records(buf):
    """[(type, body bytes)] of the complete TLS records in buf."""
    out, i = [], 0
    while i + 5 <= len(buf):
        n = int.from_bytes(buf[i + 3:i + 5], 'big')
        out.append((buf[i], buf[i + 5:i + 5 + n]))
        i += 5 + n
    return out


def alert_text(e):
    return '%s %s' % (getattr(e, 'reason', None), e) if e is not None else 'no TLS error'


def main(t):
    why = z.have_h2()
    if why:
        t.skip_all(why)
    certs = z.make_certs()
    echo = z.EchoServer(SERVER, PORT)
    wls = [
        z.workload('client', CLIENT, node='node-x', protocol='HBONE'),
        z.workload('server', SERVER, node='node-tamper', protocol='HBONE'),
    ]
    node = z.hbone_node(t, 'node-tamper', NODE_IP, certs, [(SERVER_ID, 'server')], wls)
    if not node.start():
        return
    layer = os.environ.get('ZRTEST_RECORD_LAYER') or 'zring'
    info = [l for n, l, v in node.metrics() if n == 'zring_crypto_backend_info']
    t.ok(len(info) == 1 and info[0].get('record_layer') == layer,
         'zring runs the %s record layer' % layer, 'zring_crypto_backend_info: %r' % info)
    authority = '%s:%d' % (SERVER, PORT)
    conns = {}

    def clean():
        a = BioConn(certs)
        conns['a'] = a
        t.diag('cipher %r, version %s' % (a.tls.cipher(), a.tls.version()))
        t.ok(a.tls.version() == 'TLSv1.3' and a.tls.selected_alpn_protocol() == 'h2',
             'A: TLS 1.3 with ALPN h2 over MemoryBIO', '%s %s' % (a.tls.version(), a.tls.selected_alpn_protocol()))
        sid = a.connect(authority)
        t.is_(a.response(sid), 200, 'A: CONNECT %s answered 200' % authority)
        payload = os.urandom(48 * 1024)   # several records each way
        t.ok(a.echo(sid, payload) == payload, 'A: 48 KiB echoed back intact through the record layer')
        conns['a_sid'] = sid
        b = BioConn(certs)
        conns['b'] = b
        bsid = b.connect(authority)
        conns['b_sid'] = bsid
        t.ok(b.response(bsid) == 200 and b.echo(bsid, b'B-before') == b'B-before',
             'B: a second, long-lived connection: CONNECT 200 and echo')

    def flipped_bit():
        a, sid = conns['a'], conns['a_sid']
        a.wait(lambda: False, 0.2)        # anything zring still had to say (WINDOW_UPDATE, ...)
        a.h2.send_data(sid, b'this record will not authenticate')
        recs = a.seal(a.h2.data_to_send())
        parsed = split_records(recs)
        t.ok(len(parsed) == 1 and parsed[0][0] == 0x17 and len(recs) == 5 + len(parsed[0][1]),
             'A: our SSLObject sealed the DATA frame into one application-data record',
             repr([(ty, len(b)) for ty, b in parsed]))
        bad = bytearray(recs)
        bad[5 + len(parsed[0][1]) // 2] ^= 0x10
        a.send_raw(bytes(bad))
        end, dt = a.until_closed(5)
        t.ok((KTLS and end == 'reset') or
             a.tls_error is not None and ('BAD_RECORD_MAC' in str(getattr(a.tls_error, 'reason', ''))
                                          or 'bad record mac' in str(a.tls_error).lower()),
             'A: flipped bit -> zring\'s encrypted alert decrypts to bad_record_mac (20)',
             'TLS: %s; close_notify %s; end %s' % (alert_text(a.tls_error), a.close_notify, end))
        t.ok(end in ('eof', 'reset'), 'A: zring then closes the TCP connection',
             'end %s after %.2f s' % (end, dt))
        t.diag('flipped bit: %s; TCP %s after %.2f s' % (alert_text(a.tls_error), end, dt))
        a.close()
        # the bad record in the middle of a batch: 3 records in one send, a bit of
        # the second one's tag flipped
        a2 = BioConn(certs)
        sid = a2.connect(authority)
        t.is_(a2.response(sid), 200, 'A2: CONNECT 200 on a fresh connection')
        recs = []
        for i in range(3):
            a2.h2.send_data(sid, b'record %d ' % i * 100)
            recs.append(bytearray(a2.seal(a2.h2.data_to_send())))
        recs[1][-1] ^= 0x01
        a2.send_raw(b''.join(recs))
        end, dt = a2.until_closed(5)
        t.ok((KTLS and end == 'reset') or
             a2.tls_error is not None and 'BAD_RECORD_MAC' in str(getattr(a2.tls_error, 'reason', '')),
             'A2: a bad tag on the 2nd of 3 records sent together -> bad_record_mac', alert_text(a2.tls_error))
        t.ok(end in ('eof', 'reset'), 'A2: zring then closes the TCP connection', 'end %s after %.2f s' % (end, dt))
        a2.close()

    def flipped_bit_while_sending():
        # zring's send to us is stuck (a small receive buffer we do not read,
        # ~4 MiB of echo on its way back) when the bad record comes: the alert
        # must still follow the data, not be dropped with it.
        import h2.settings
        a3 = BioConn(certs, rcvbuf=4096)
        a3.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 8 << 20})
        a3.h2.increment_flow_control_window(15 << 20)
        a3.flush()
        sid = a3.connect(authority)
        t.is_(a3.response(sid), 200, 'A3: CONNECT 200 on a connection with a 4 KiB receive buffer')
        # within zring's 4 MiB stream window; more than the ~3 MB a loopback
        # socket buffers toward a receiver that does not read
        total = (4 << 20) - (64 << 10)
        for off in range(0, total, 16384):
            a3.h2.send_data(sid, os.urandom(16384))
            a3.flush()
        time.sleep(0.5)                   # echo comes back; zring's send fills our buffer and waits
        a3.h2.send_data(sid, b'this record will not authenticate')
        bad = bytearray(a3.seal(a3.h2.data_to_send()))
        bad[len(bad) // 2] ^= 0x10
        a3.send_raw(bytes(bad))
        time.sleep(0.3)                   # zring finds it while its send still waits
        end, dt = a3.until_closed(20)
        got = len(a3.st(sid)['data'])
        t.ok((KTLS and end == 'reset') or
             a3.tls_error is not None and 'BAD_RECORD_MAC' in str(getattr(a3.tls_error, 'reason', '')),
             'A3: with a send of zring\'s stuck behind us, the bad_record_mac alert still comes after it',
             'TLS: %s; %d echo bytes before; end %s after %.2f s' % (alert_text(a3.tls_error), got, end, dt))
        t.ok(end in ('eof', 'reset') and (KTLS or got > 3 << 20),
             'A3: the echo data zring had in flight came first, then zring closed',
             '%d echo bytes, end %s after %.2f s' % (got, end, dt))
        t.diag('stuck send: %d echo bytes, then %s; TCP %s after %.2f s' % (got, alert_text(a3.tls_error), end, dt))
        a3.close()

    def truncated():
        c = BioConn(certs)
        sid = c.connect(authority)
        t.is_(c.response(sid), 200, 'C: CONNECT 200 on a fresh connection')
        c.h2.send_data(sid, os.urandom(3000))
        recs = c.seal(c.h2.data_to_send())
        c.send_raw(recs[:len(recs) // 2])
        time.sleep(0.1)
        c.sock.shutdown(socket.SHUT_WR)
        end, dt = c.until_closed(5)
        t.ok(end in ('eof', 'reset') and dt < 5, 'C: half a record, then our FIN: zring closes the connection',
             'end %s after %.2f s' % (end, dt))
        t.diag('truncated record: TCP %s after %.2f s; TLS %s; close_notify %s'
               % (end, dt, alert_text(c.tls_error), c.close_notify))
        c.close()
        # cut inside the 5-byte header, right after the handshake and preface
        c = BioConn(certs)
        c.wait(lambda: False, 0.2)
        c.send_raw(c.seal(b'\0\0\0\x04\x01\0\0\0\0')[:3])   # SETTINGS ACK, 3 bytes of its header
        c.sock.shutdown(socket.SHUT_WR)
        end, dt = c.until_closed(5)
        t.ok(end in ('eof', 'reset') and dt < 5, 'C2: 3 bytes of a record header, then FIN: zring closes',
             'end %s after %.2f s' % (end, dt))
        c.close()
        t.ok(node.alive() and node.wait_ready(3)[0], 'zring alive and ready after the truncated records')

    def overflow():
        d = BioConn(certs)
        d.wait(lambda: False, 0.2)
        forged = b'\x17\x03\x03' + (18000).to_bytes(2, 'big')
        assert 18000 > CIPHER_MAX
        sent_all = True
        try:
            d.send_raw(forged + os.urandom(18000))
        except OSError as e:
            sent_all = 'send: %r' % e
        end, dt = d.until_closed(5)
        t.ok(end in ('eof', 'reset') and dt < 5,
             'D: a record header of length 18000 (> 2^14 + 256): zring closes the connection',
             'end %s after %.2f s' % (end, dt))
        t.diag('oversized record: TCP %s after %.2f s (all sent: %s); TLS: %s'
               % (end, dt, sent_all, alert_text(d.tls_error)))
        if d.tls_error is not None:
            t.ok('RECORD_OVERFLOW' in str(getattr(d.tls_error, 'reason', '')) or 'overflow' in str(d.tls_error).lower(),
                 'D: the alert zring sent is record_overflow (22)', alert_text(d.tls_error))
        d.close()

    def others():
        b, bsid = conns['b'], conns['b_sid']
        payload = os.urandom(20000)
        got = b.echo(bsid, payload)
        t.ok(got == payload and b.tls_error is None and not b.end,
             'B (open all along): still echoes intact after the tampered connections',
             'got %d bytes, TLS %s, end %s' % (len(got), alert_text(b.tls_error), b.end))
        e = BioConn(certs)
        conns['e'] = e
        sid = e.connect(authority)
        t.ok(e.response(sid) == 200 and e.echo(sid, b'brand new') == b'brand new',
             'E: a brand-new connection: CONNECT 200 and echo')
        conns['e_sid'] = sid

    def close_notify():
        fails0 = z.tls_failures(node)
        e, sid = conns['e'], conns['e_sid']
        e.h2.end_stream(sid)
        e.flush()
        e.wait(lambda: e.st(sid)['ended'] or e.st(sid)['reset'] is not None, 5)
        t.ok(e.st(sid)['ended'] and e.st(sid)['reset'] is None, 'E: stream ended both ways (END_STREAM)')
        try:
            e.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        e.send_raw(e.out.read())
        rx0 = e.rx
        end, dt = e.until_closed(5)
        t.ok(end in ('eof', 'reset') and dt < 5 and e.tls_error is None,
             'E: after our close_notify zring closes cleanly (no alert)',
             'end %s after %.2f s, TLS %s, zring close_notify %s' % (end, dt, alert_text(e.tls_error), e.close_notify))
        t.ok(e.close_notify, 'E: zring answers close_notify with its own before closing (RFC 8446 6.1)',
             '%d bytes after ours, TCP %s after %.2f s' % (e.rx - rx0, end, dt))
        e.close()
        b = conns['b']
        b.close()
        t.ok(z.wait_until(lambda: z.hbone_gauge(node, 'server') == 0, 5, 0.1),
             'zring_hbone_connections{role="server"} back to 0 (every connection released)')
        t.ok(z.wait_until(lambda: node.metric('zring_hbone_streams_active') == 0, 5, 0.1),
             'zring_hbone_streams_active back to 0')
        t.is_(z.tls_failures(node) - fails0, 0,
              'close_notify counted no zring_tls_handshake_failures_total')
        t.is_(z.tls_failures(node), 0, 'record errors are not counted as handshake failures')
        t.ok(node.wait_idle(5), 'zring_worker_connections_active back to 0', node.active_diag())

    t.subtest('1. clean stream + long-lived B', clean)
    t.subtest('2. flipped bit -> bad_record_mac', flipped_bit)
    t.subtest('2b. flipped bit while zring\'s send waits', flipped_bit_while_sending)
    t.subtest('3. truncated record', truncated)
    t.subtest('4. oversized record', overflow)
    t.subtest('5. other connections unaffected', others)
    t.subtest('6. close_notify', close_notify)
    t.ok(node.alive(), 'zring still running at the end')
    t.ok(echo.accepted >= 3, 'the echo server saw the streams (%d accepted)' % echo.accepted)


z.Tap('record-tamper', timeout=60).run(main)
