#!/usr/bin/python3
"""Interop: an independent HBONE server (Python ssl + h2, certificate `server`,
client certificates required from root-cert.pem, ALPN h2, TLS 1.3) plays node B
on 127.0.5.2:15008; zring node A (127.0.0.42) sends SOCKS5 traffic from its
workload 127.0.4.2 to it. Checks what zring puts on the wire (TLS 1.3, ALPN h2,
client SPIFFE identity, CONNECT with :authority = 127.0.5.2:8080 and
forwarded: for="<client ip:port>"), a 64 MiB echo byte-exact with the Python side
honouring flow control (WINDOW_UPDATE only once echoed), END_STREAM -> EOF both
ways, RST_STREAM -> reset, and non-200 statuses -> SOCKS5 refusals."""

import os
import select
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
import zrtest as z  # noqa: E402

BIG = int(os.environ.get('ZRTEST_H2_BIG', 64 * z.MiB))
CLIENT = '127.0.4.2'
SERVER = '127.0.5.2'
VIP = '127.10.4.2'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')


class H2EchoServer(z.HboneTestServer):
    """HBONE server: answers CONNECT with 200 and echoes DATA, honouring flow control.
    Authorities with special ports: 7003 -> RST_STREAM(CANCEL) after the first data,
    7777 -> 401, 9 -> 503."""

    def __init__(self, certdir, ip, port=15008):
        self.requests = []     # (peer, headers dict)
        self.conns = []        # dicts: version, alpn, sans, peer
        self.errors = []
        self.resets_seen = []
        z.HboneTestServer.__init__(self, certdir, ip, port)

    def _serve(self, raw, peer):
        import h2.config
        import h2.connection
        import h2.errors
        import h2.events
        import h2.exceptions
        import h2.settings
        try:
            raw.settimeout(10)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.errors.append('handshake %s: %r' % (peer, e))
            raw.close()
            return
        self.conns.append({'peer': peer, 'version': s.version(), 'alpn': s.selected_alpn_protocol(),
                           'sans': z.peer_uri_sans(s)})
        # h2 4.1 insists on :path/:scheme in every request; a plain CONNECT (RFC 9113 8.5) has neither
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding='utf-8', validate_inbound_headers=False))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 * z.MiB})
        streams = {}   # sid -> {'buf': bytearray, 'in_end': bool, 'out_end': bool, 'mode': str}
        out = bytearray(conn.data_to_send())
        s.setblocking(False)
        try:
            while not self._stop:
                # echo what the windows allow; acknowledge only what was echoed
                for sid, st in list(streams.items()):
                    while st['buf'] and not st['out_end']:
                        try:
                            n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(st['buf']))
                        except h2.exceptions.StreamClosedError:
                            st['out_end'] = True
                            break
                        if n <= 0:
                            break
                        conn.send_data(sid, bytes(st['buf'][:n]))
                        del st['buf'][:n]
                        conn.acknowledge_received_data(n, sid)
                    if st['in_end'] and not st['buf'] and not st['out_end']:
                        try:
                            conn.end_stream(sid)
                        except h2.exceptions.StreamClosedError:
                            pass
                        st['out_end'] = True
                out += conn.data_to_send()
                if s.pending():
                    r, w = [s], []
                else:
                    r, w, _ = select.select([s], [s] if out else [], [], 0.5)
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
                        hd = dict(ev.headers)
                        self.requests.append((peer, hd))
                        port = hd.get(':authority', ':').rpartition(':')[2]
                        mode = 'echo'
                        if hd.get(':method') != 'CONNECT':
                            conn.send_headers(ev.stream_id, [(':status', '400')], end_stream=True)
                            continue
                        if port == '7777':
                            conn.send_headers(ev.stream_id, [(':status', '401')], end_stream=True)
                            continue
                        if port == '9':
                            conn.send_headers(ev.stream_id, [(':status', '503')], end_stream=True)
                            continue
                        if port == '7003':
                            mode = 'reset'
                        streams[ev.stream_id] = {'buf': bytearray(), 'in_end': False, 'out_end': False, 'mode': mode}
                        conn.send_headers(ev.stream_id, [(':status', '200')])
                    elif isinstance(ev, h2.events.DataReceived):
                        st = streams.get(ev.stream_id)
                        if st is None:
                            continue
                        if st['mode'] == 'reset':
                            conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.CANCEL)
                            st['out_end'] = True
                            continue
                        st['buf'] += ev.data
                        pad = ev.flow_controlled_length - len(ev.data)
                        if pad > 0:
                            conn.acknowledge_received_data(pad, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if ev.stream_id in streams:
                            streams[ev.stream_id]['in_end'] = True
                    elif isinstance(ev, h2.events.StreamReset):
                        self.resets_seen.append((ev.stream_id, ev.error_code, time.monotonic()))
                        streams.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return
        except Exception as e:
            self.errors.append('serve %s: %r' % (peer, e))
        finally:
            s.close()


def main(t):
    why = z.have_h2()
    if why:
        t.skip_all(why)
    certs = z.make_certs()
    srv = H2EchoServer(certs, SERVER)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE',
                   services={z.svc_key('hb-echo'): {80: 8080}}),
    ]
    svcs = [z.service('hb-echo', VIP, {80: 8080}, sans=[SERVER_ID])]
    a = z.hbone_node(t, 'node-a', z.HB_A_IP, certs, [(CLIENT_ID, 'client')], wls, svcs)
    if not a.start():
        return
    px = a.socks5

    def wire():
        s = z.socks5_connect(px, SERVER, 8080, src=CLIENT)
        s.sendall(b'hello')
        t.is_(z.recv_exact(s, 5), b'hello', 'echo through zring A -> Python HBONE server')
        me = s.getsockname()
        s.close()
        t.ok(srv.conns, 'Python server accepted a TLS connection from zring', repr(srv.errors[:3]))
        if srv.conns:
            c = srv.conns[0]
            t.is_(c['version'], 'TLSv1.3', 'zring negotiates TLS 1.3')
            t.is_(c['alpn'], 'h2', 'zring offers ALPN h2')
            t.is_(c['sans'], [CLIENT_ID], 'zring presents the client workload\'s SPIFFE identity')
            t.is_(c['peer'][0], CLIENT, 'the TCP connection comes from the client workload\'s address (bound)')
        t.ok(srv.requests, 'a request arrived')
        if srv.requests:
            hd = srv.requests[-1][1]
            t.diag('CONNECT headers: %r' % hd)
            t.is_(hd.get(':method'), 'CONNECT', ':method CONNECT')
            t.is_(hd.get(':authority'), '%s:8080' % SERVER, ':authority is the destination workload IP:port')
            t.ok(':path' not in hd and ':scheme' not in hd, 'no :path / :scheme on a plain CONNECT')
            fwd = hd.get('forwarded', '')
            t.ok(('for="%s:%d"' % me) in fwd or ('for=%s' % me[0]) in fwd,
                 'forwarded header names the original client %s:%d' % me, 'forwarded: %r' % fwd)
        s = z.socks5_connect(px, VIP, 80, src=CLIENT)
        s.sendall(b'via-vip')
        t.is_(z.recv_exact(s, 7), b'via-vip', 'service VIP 127.10.4.2:80 -> CONNECT 127.0.5.2:8080')
        s.close()
        t.is_(srv.requests[-1][1].get(':authority') if srv.requests else None, '%s:8080' % SERVER,
              ':authority for the VIP is the endpoint workload IP and target port')

    def bulk():
        s = z.socks5_connect(px, SERVER, 8080, src=CLIENT)
        s.settimeout(120)
        res = {}

        def rd():
            try:
                res['got'] = z.recv_hash(s)
            except Exception as e:
                res['got'] = (-1, repr(e))
        th = threading.Thread(target=rd)
        th.start()
        t0 = time.monotonic()
        digest = z.send_data(s, BIG, seed=61)
        s.shutdown(socket.SHUT_WR)
        th.join(180)
        dt = time.monotonic() - t0
        s.close()
        n, got = res.get('got', (-1, 'no result'))
        t.ok(n == BIG and got == digest, '%d MiB echoed byte-exact through zring A and the Python server' % (BIG // z.MiB),
             'sent %d %s, received %d %s' % (BIG, digest, n, got))
        t.ok(n == BIG, 'our half-close went out as END_STREAM and came back as EOF (recv_hash ended)')
        t.diag('echo: %s each way' % z.rate_str(BIG, dt))

    def reset():
        s = z.socks5_connect(px, SERVER, 7003, src=CLIENT)
        s.sendall(b'boom')
        t0 = time.monotonic()
        r = z.outcome(s, 10)
        dt = time.monotonic() - t0
        s.close()
        t.ok(r in ('reset', 'eof') and dt < 3, 'server RST_STREAM reaches the SOCKS5 client as reset/EOF promptly',
             'saw %r after %.2f s' % (r, dt))
        t.diag('RST_STREAM -> %r after %.3f s' % (r, dt))
        n0 = len(srv.resets_seen)
        s = z.socks5_connect(px, SERVER, 8080, src=CLIENT)
        s.sendall(b'x')
        z.recv_exact(s, 1)
        z.set_linger_rst(s)
        s.close()
        ok = z.wait_until(lambda: len(srv.resets_seen) > n0, 5, 0.05)
        t.ok(ok, 'a client TCP RST reaches the Python server as RST_STREAM')
        if ok:
            t.diag('RST_STREAM error code from zring: %r' % (srv.resets_seen[-1][1],))

    def statuses():
        for port, what in ((7777, '401'), (9, '503')):
            code, s = z.socks5_try(px, SERVER, port, src=CLIENT, timeout=10)
            t.ok(code not in (0, 'timeout'), 'HBONE %s answer becomes a SOCKS5 refusal' % what, 'reply %r' % (code,))
            if what == '401':
                t.is_(code, 2, '401 maps to SOCKS5 0x02 (not allowed)')
            if s:
                s.close()
        s = z.socks5_connect(px, SERVER, 8080, src=CLIENT)
        s.sendall(b'after')
        t.is_(z.recv_exact(s, 5), b'after', 'the pooled connection still works after refused streams')
        s.close()

    def metrics():
        ms = a.metrics()
        lab = dict(reporter='source', connection_security_policy='mutual_tls', source_principal=CLIENT_ID,
                   destination_principal=SERVER_ID)
        t.cmp(z.msum(ms, 'istio_tcp_received_bytes_total', **lab), '>=', BIG, 'A: istio_tcp_received_bytes_total >= %d' % BIG)
        t.cmp(z.msum(ms, 'istio_tcp_sent_bytes_total', **lab), '>=', BIG, 'A: istio_tcp_sent_bytes_total >= %d' % BIG)
        t.ok(z.wait_until(lambda: a.metric('zring_hbone_streams_active') == 0, 5, 0.1),
             'A: zring_hbone_streams_active back to 0')
        t.is_(srv.errors, [], 'no errors in the Python server')

    t.subtest('wire format', wire)
    t.subtest('64 MiB echo', bulk)
    t.subtest('resets', reset)
    t.subtest('error statuses', statuses)
    t.subtest('metrics', metrics)
    t.ok(a.alive(), 'zring A still running at the end')


z.Tap('h2-server', timeout=300).run(main)
