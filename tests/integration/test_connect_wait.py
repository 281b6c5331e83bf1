#!/usr/bin/python3
"""The wait for an HBONE CONNECT response. A fake HBONE peer (Python ssl + h2,
certificate `server`) plays node B's workload 127.45.5.2:15008 and, by
authority port: 7001 never answers, 7002 answers 200 after 0.5 s then echoes,
8080 answers 200 at once and echoes. Node A (127.45.0.22, workload 127.45.4.2):

- connectTimeout bounds the wait: the SOCKS5 client gets 0x06 after about
  connectTimeout, counted as reason="connect_timeout", the peer sees RST_STREAM,
  and the pooled HBONE connection keeps serving other streams;
- clients that give up while waiting are noticed at once: 150 SOCKS5 clients
  that close leave no connection, stream or fd behind on node A, and the peer
  sees a RST_STREAM for each; likewise 20 clients whose plain TCP connect hangs
  (a listener with a full accept queue drops SYNs);
- bytes a client sends before the reply are delivered byte-exact after the 200."""

import os
import select
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

A_IP = '127.45.0.22'
CLIENT = '127.45.4.2'
SERVER = '127.45.5.2'
HOLE = '127.45.5.9'          # plain TCP workload whose accept queue is full: connects hang
CLIENT_ID, SERVER_ID = z.spiffe('client'), z.spiffe('server')


class SlowH2Server(z.HboneTestServer):
    """HBONE peer that answers CONNECT according to the authority's port."""

    def __init__(self, certdir, ip, port=15008):
        self.requests = 0
        self.conns = 0
        self.resets = []      # (stream id, error code)
        self.errors = []
        z.HboneTestServer.__init__(self, certdir, ip, port)

    def _serve(self, raw, peer):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        import h2.settings
        try:
            raw.settimeout(10)
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.errors.append('handshake %s: %r' % (peer, e))
            raw.close()
            return
        self.conns += 1
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding='utf-8', validate_inbound_headers=False))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        streams = {}   # sid -> {'buf', 'ok' (200 sent), 'due' (time to send 200 or None)}
        out = bytearray(conn.data_to_send())
        s.setblocking(False)
        try:
            while not self._stop:
                now = time.monotonic()
                for sid, st in list(streams.items()):
                    try:
                        if not st['ok'] and st['due'] is not None and now >= st['due']:
                            conn.send_headers(sid, [(':status', '200')])
                            st['ok'] = True
                        while st['ok'] and st['buf']:
                            n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(st['buf']))
                            if n <= 0:
                                break
                            conn.send_data(sid, bytes(st['buf'][:n]))
                            conn.acknowledge_received_data(n, sid)
                            del st['buf'][:n]
                        if st['ok'] and st['end'] and not st['buf']:
                            conn.end_stream(sid)
                            del streams[sid]
                    except h2.exceptions.StreamClosedError:
                        streams.pop(sid, None)
                out += conn.data_to_send()
                if s.pending():
                    r, w = [s], []
                else:
                    r, w, _ = select.select([s], [s] if out else [], [], 0.05)
                if w and out:
                    try:
                        k = s.send(out[:65536])
                        del out[:k]
                    except z.ssl_want_errors():
                        pass
                if not r:
                    continue
                try:
                    d = s.recv(1 << 20)
                except z.ssl_want_errors():
                    continue
                if not d:
                    break
                for ev in conn.receive_data(d):
                    if isinstance(ev, h2.events.RequestReceived):
                        self.requests += 1
                        port = dict(ev.headers).get(':authority', ':').rpartition(':')[2]
                        due = None if port == '7001' else (time.monotonic() + 0.5 if port == '7002' else 0)
                        streams[ev.stream_id] = {'buf': bytearray(), 'ok': False, 'due': due, 'end': False}
                    elif isinstance(ev, h2.events.DataReceived):
                        st = streams.get(ev.stream_id)
                        if st is not None:
                            st['buf'] += ev.data
                        pad = ev.flow_controlled_length - len(ev.data)
                        if st is None:
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        elif pad > 0:
                            conn.acknowledge_received_data(pad, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if ev.stream_id in streams:
                            streams[ev.stream_id]['end'] = True
                    elif isinstance(ev, h2.events.StreamReset):
                        self.resets.append((ev.stream_id, ev.error_code))
                        streams.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return
        except Exception as e:
            self.errors.append('serve %s: %r' % (peer, e))
        finally:
            s.close()


def socks5_send_request(px, host, port, extra=b''):
    """Greeting and request (and extra bytes) without waiting for the reply."""
    s = z.connect(px[0], px[1], src=CLIENT, timeout=10)
    s.sendall(b'\x05\x01\x00' + z.socks5_request(host, port) + extra)
    return s


def main(t):
    why = z.have_h2()
    if why:
        t.skip_all(why)
    z.raise_nofile(4096)
    certs = z.make_certs()
    srv = SlowH2Server(certs, SERVER)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE'),
        z.workload('hole', HOLE, node='node-b'),
    ]

    def timeout():
        a = z.hbone_node(t, 'node-a', A_IP, certs, [(CLIENT_ID, 'client')], wls, extra={'connectTimeout': '2s'},
                         workers=1)  # one worker: one pool
        if not a.start():
            return
        # warm the pool: one stream answered at once
        s = z.socks5_connect(a.socks5, SERVER, 8080, src=CLIENT, timeout=10)
        s.sendall(b'warm')
        t.is_(z.recv_exact(s, 4), b'warm', 'echo through the fake HBONE peer')
        s.close()
        before = a.refused('connect_timeout')
        r0 = len(srv.resets)
        t0 = time.monotonic()
        code, s = z.socks5_try(a.socks5, SERVER, 7001, src=CLIENT, timeout=12)
        dt = time.monotonic() - t0
        t.is_(code, 6, 'a CONNECT never answered gets SOCKS5 0x06 (timeout)')
        t.ok(1.5 <= dt <= 5, 'after about connectTimeout=2s', 'took %.2f s' % dt)
        if s:
            s.close()
        t.ok(z.wait_until(lambda: a.refused('connect_timeout') > before, 3),
             'counted as zring_connections_refused_total{reason="connect_timeout"}')
        t.ok(z.wait_until(lambda: len(srv.resets) > r0, 3), 'the peer saw RST_STREAM for the stream',
             'resets %r' % (srv.resets[r0:],))
        conns = srv.conns
        s = z.socks5_connect(a.socks5, SERVER, 8080, src=CLIENT, timeout=10)
        s.sendall(b'again')
        t.is_(z.recv_exact(s, 5), b'again', 'the pooled HBONE connection still serves new streams')
        s.close()
        t.is_(srv.conns, conns, 'on the same HBONE connection (no new one)')
        t.ok(a.alive(), 'node A still running')
        a.stop()

    def abandoned():
        a = z.hbone_node(t, 'node-a', A_IP, certs, [(CLIENT_ID, 'client')], wls, extra={'connectTimeout': '60s'})
        if not a.start():
            return
        s = z.socks5_connect(a.socks5, SERVER, 8080, src=CLIENT, timeout=10)
        s.close()
        t.ok(a.wait_idle(5), 'idle after a warm-up connection')
        fd0 = a.fd_count()
        r0, q0 = len(srv.resets), srv.requests
        n = 150
        socks = [socks5_send_request(a.socks5, SERVER, 7001) for _ in range(n)]
        ok = z.wait_until(lambda: srv.requests - q0 >= n, 10)
        t.ok(ok, 'the peer got all %d CONNECTs' % n, 'got %d' % (srv.requests - q0))
        t.cmp(a.metric('zring_hbone_streams_active'), '>=', n, 'node A holds %d waiting streams' % n)
        t0 = time.monotonic()
        for s in socks:
            s.close()
        gone = z.wait_until(lambda: a.metric('zring_hbone_streams_active') == 0 and a.active() == 0, 10, 0.1)
        dt = time.monotonic() - t0
        t.ok(gone and dt < 5, 'clients that give up free their streams and connections at once',
             'after %.2f s: %s, streams %r' % (dt, a.active_diag(), a.metric('zring_hbone_streams_active')))
        fd1 = a.fd_count()
        t.ok(fd1 is not None and fd1 <= fd0 + 4, 'and their fds (%s before, %s after)' % (fd0, fd1))
        t.ok(z.wait_until(lambda: len(srv.resets) - r0 >= n, 5), 'the peer saw a RST_STREAM for each',
             '%d resets' % (len(srv.resets) - r0))
        # the same for plain TCP connects that hang (a listener whose accept
        # queue is full drops SYNs): connectTimeout is 60 s here
        hole = z.listen_socket(HOLE, 8080, backlog=0)
        fill = []
        for _ in range(3):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex((HOLE, 8080))
            fill.append(f)
        time.sleep(0.2)
        socks = [socks5_send_request(a.socks5, HOLE, 8080) for _ in range(20)]
        t.ok(z.wait_until(lambda: a.active() >= 20, 5), '20 connects to %s:8080 hang' % HOLE, a.active_diag())
        t0 = time.monotonic()
        for s in socks:
            s.close()
        gone = z.wait_until(lambda: a.active() == 0, 10, 0.1)
        t.ok(gone and time.monotonic() - t0 < 5, 'clients that give up during a TCP connect are freed at once',
             a.active_diag())
        for f in fill:
            f.close()
        hole.close()
        t.ok(a.alive(), 'node A still running')
        a.stop()

    def early():
        a = z.hbone_node(t, 'node-a', A_IP, certs, [(CLIENT_ID, 'client')], wls, extra={'connectTimeout': '5s'})
        if not a.start():
            return
        data = os.urandom(3000)
        # with the request, and right behind it in a second write
        for label, together in (('in the request\'s segment', True), ('in a later write', False)):
            s = socks5_send_request(a.socks5, SERVER, 7002, data[:100] if together else b'')
            if not together:
                time.sleep(0.05)
                s.sendall(data[:100])
            s.sendall(data[100:])
            t0 = time.monotonic()
            try:
                z.recv_exact(s, 2)
                rep, _ = z.socks5_read_reply(s)
                t.is_(rep, 0, 'early data %s: reply 0x00 once the peer answered' % label)
                t.cmp(time.monotonic() - t0, '>=', 0.3, 'after the peer\'s 0.5 s')
                got = z.recv_exact(s, len(data))
                t.ok(got == data, 'early data %s delivered byte-exact (%d bytes)' % (label, len(data)))
            except (OSError, EOFError) as e:
                t.ok(False, 'early data %s' % label, repr(e))
            s.close()
        # a client that sends its data and half-closes is no client that gave up
        s = socks5_send_request(a.socks5, SERVER, 7002, b'half-closed')
        s.shutdown(socket.SHUT_WR)
        try:
            z.recv_exact(s, 2)
            rep, _ = z.socks5_read_reply(s)
            t.is_(rep, 0, 'half-close behind early data: still connected')
            t.is_(z.recv_all(s), b'half-closed', 'its bytes echoed, then EOF')
        except (OSError, EOFError) as e:
            t.ok(False, 'half-close behind early data', repr(e))
        s.close()
        t.ok(a.alive(), 'node A still running')
        a.stop()

    t.subtest('CONNECT never answered', timeout)
    t.subtest('150 clients give up', abandoned)
    t.subtest('early data', early)
    t.is_(srv.errors, [], 'no errors in the fake peer')


z.Tap('connect-wait', timeout=120).run(main)
