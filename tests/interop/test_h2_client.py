#!/usr/bin/python3
"""Interop: an independent HBONE client (Python ssl + h2, certificate `client`)
against zring node B (127.0.0.43) on its workload address 127.0.5.2:15008.
Checks TLS 1.3 + ALPN h2 + the server's SPIFFE identity (chain verified against
root-cert.pem), the HTTP/2 settings of the SPEC, CONNECT 200 with a 64 MiB echo
both ways byte-exact under flow control, END_STREAM as TCP half-close, several
streams on one connection, and the error statuses: 400 (not a local workload,
no :authority), 401 (denied by policy), 503 (upstream refused)."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
import zrtest as z  # noqa: E402

BIG = int(os.environ.get('ZRTEST_H2_BIG', 64 * z.MiB))
CLIENT = '127.0.4.2'
SERVER = '127.0.5.2'
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')
ADDR = (SERVER, 15008)


def main(t):
    why = z.have_h2()
    if why:
        t.skip_all(why)
    certs = z.make_certs()
    z.EchoServer(SERVER, 8080)

    def half_close_client_first(c, peer):
        data = z.recv_all(c)
        time.sleep(0.2)
        c.sendall(b'after-eof:' + data)
        c.shutdown(socket.SHUT_WR)
        return data
    z.ScriptServer(SERVER, 7001, half_close_client_first)
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE'),
        z.workload('server', SERVER, node='node-b', protocol='HBONE'),
    ]
    pols = [{'name': 'deny-7777', 'namespace': 'default', 'scope': 'Namespace', 'action': 'Deny',
             'rules': [[[{'destinationPorts': [7777]}]]]}]
    b = z.hbone_node(t, 'node-b', z.HB_B_IP, certs, [(SERVER_ID, 'server')], wls, policies=pols)
    if not b.start():
        return

    def tls():
        c = z.H2Client(certs, ADDR, src=CLIENT)
        t.is_(c.sock.version(), 'TLSv1.3', 'TLS 1.3 negotiated')
        t.is_(c.sock.selected_alpn_protocol(), 'h2', 'ALPN h2 negotiated')
        t.is_(z.peer_uri_sans(c.sock), [SERVER_ID], 'server certificate (chain verified) carries the SPIFFE URI of sa/server')
        c.wait(lambda: c.conn.remote_settings.initial_window_size != 65535, 3)
        rs = c.conn.remote_settings
        t.is_(rs.initial_window_size, 4 * z.MiB, 'server SETTINGS_INITIAL_WINDOW_SIZE 4 MiB')
        t.is_(rs.max_concurrent_streams, 100, 'server SETTINGS_MAX_CONCURRENT_STREAMS 100')
        t.ok(c.wait(lambda: c.conn.outbound_flow_control_window >= 16 * z.MiB - 65535, 3),
             'server opens the connection window to ~16 MiB', 'window %d' % c.conn.outbound_flow_control_window)
        c.close()

    def bulk():
        c = z.H2Client(certs, ADDR, src=CLIENT)
        sid = c.connect('%s:8080' % SERVER, extra=[('forwarded', 'for="%s:12345"' % CLIENT),
                                                   ('baggage', 'k8s.namespace.name=default'),
                                                   ('traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')])
        t.is_(c.response(sid), 200, 'CONNECT %s:8080 answered 200' % SERVER)
        t0 = time.monotonic()
        sent, n, got, ended = c.transfer(sid, BIG, seed=51, timeout=240)
        dt = time.monotonic() - t0
        t.ok(n == BIG and got == sent, '%d MiB echoed both ways byte-exact (sha256)' % (BIG // z.MiB),
             'sent %d %s, received %d %s' % (BIG, sent, n, got))
        t.ok(ended, 'after our END_STREAM the echo server\'s EOF comes back as END_STREAM')
        t.diag('echo: %s each way' % z.rate_str(BIG, dt))
        t.ok(c.st(sid)['reset'] is None, 'stream was not reset')
        # several streams on the one connection
        sids = [c.connect('%s:8080' % SERVER) for _ in range(10)]
        codes = [c.response(s) for s in sids]
        t.is_(codes, [200] * 10, '10 more CONNECT streams on the same connection answered 200')
        for i, s in enumerate(sids):
            c.send(s, b'stream-%d' % i, end_stream=True)
        c.wait(lambda: all(c.st(s)['ended'] for s in sids), 10)
        t.ok(all(bytes(c.st(s)['data']) == b'stream-%d' % i for i, s in enumerate(sids)),
             'each stream echoes its own data and ends', repr([bytes(c.st(s)['data'])[:12] for s in sids]))
        c.close()

    def half_close():
        c = z.H2Client(certs, ADDR, src=CLIENT)
        sid = c.connect('%s:7001' % SERVER)
        t.is_(c.response(sid), 200, 'CONNECT to the half-close server answered 200')
        c.send(sid, b'question', end_stream=True)
        c.wait(lambda: c.st(sid)['ended'] or c.st(sid)['reset'] is not None, 10)
        t.is_(bytes(c.st(sid)['data']), b'after-eof:question',
              'END_STREAM reaches the server as EOF; it can still answer; then END_STREAM')
        t.ok(c.st(sid)['ended'] and c.st(sid)['reset'] is None, 'stream ended cleanly (no reset)',
             repr(c.st(sid)))
        c.close()

    def errors():
        c = z.H2Client(certs, ADDR, src=CLIENT)
        for authority, want, what in (
                ('%s:8080' % CLIENT, 400, 'a workload of another node'),
                ('127.0.9.9:8080', 400, 'an address that is no workload'),
                ('not-an-address', 400, 'an authority that is no IP:port'),
                ('%s:7777' % SERVER, 401, 'a port denied by policy'),
                ('%s:9' % SERVER, 503, 'a local workload port nobody listens on')):
            sid = c.connect(authority)
            r = c.response(sid)
            t.is_(r, want, 'CONNECT to %s (%s) answered %d' % (authority, what, want))
        sid = c.connect('%s:8080' % SERVER)
        t.is_(c.response(sid), 200, 'the connection still serves CONNECT after the errors')
        c.close()
        c = z.H2Client(certs, ADDR, src=CLIENT)
        sid = c.connect(None)
        r = c.response(sid)
        t.ok(r == 400 or (isinstance(r, tuple) and r[0] in ('reset', 'goaway')),
             'CONNECT without :authority: 400 or stream reset', 'got %r' % (r,))
        t.diag('no :authority -> %r' % (r,))
        c.close()
        c = z.H2Client(certs, ADDR, src=CLIENT)
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(':method', 'GET'), (':scheme', 'https'), (':path', '/'),
                                  (':authority', '%s:8080' % SERVER)], end_stream=True)
        c.flush()
        r = c.response(sid)
        t.ok(r in (400, 405) or (isinstance(r, tuple) and r[0] in ('reset', 'goaway')),
             'GET instead of CONNECT: 4xx or stream reset', 'got %r' % (r,))
        t.diag('GET -> %r' % (r,))
        c.close()
        t.ok(b.alive(), 'zring B alive')

    def metrics():
        ms = b.metrics()
        lab = dict(reporter='destination', connection_security_policy='mutual_tls', source_principal=CLIENT_ID,
                   destination_principal=SERVER_ID)
        t.cmp(z.msum(ms, 'istio_tcp_received_bytes_total', **lab), '>=', BIG,
              'B: istio_tcp_received_bytes_total (mutual_tls, both principals) >= %d' % BIG)
        t.cmp(z.msum(ms, 'istio_tcp_sent_bytes_total', **lab), '>=', BIG,
              'B: istio_tcp_sent_bytes_total >= %d' % BIG)
        t.cmp(z.msum(ms, 'istio_tcp_connections_failed_total', reporter='destination', response_flags='DENY'),
              '>=', 1, 'B: the 401 counted with response_flags="DENY"')
        t.ok(z.wait_until(lambda: b.metric('zring_hbone_streams_active') == 0, 5, 0.1),
             'B: zring_hbone_streams_active back to 0')
        t.ok(z.wait_until(lambda: b.metric('zring_hbone_connections', role='server') == 0, 5, 0.1),
             'B: zring_hbone_connections{role="server"} back to 0 after the clients closed')
        t.ok(b.wait_idle(5), 'B: zring_worker_connections_active back to 0 (refused streams released too)',
             b.active_diag())

    def keepalive():
        """SPEC: PING every 10 s (of silence), dead after 20 s. A raw peer that never acks."""
        c = z.H2Client(certs, ADDR, src=CLIENT)
        t0 = time.monotonic()
        frames, end = z.h2_read_frames(c.sock, 15, until=lambda fs: any(f[0] == 6 and not f[1] & 1 for f in fs))
        dt = time.monotonic() - t0
        ping = [f for f in frames if f[0] == 6 and not f[1] & 1]
        t.ok(ping and 9 <= dt <= 12.5, 'zring PINGs an idle HBONE connection after ~10 s', 'after %.2f s: end %r, frames %r'
             % (dt, end, [f[0] for f in frames]))
        # never answer: the connection is dead 20 s after the last thing we sent
        frames, end = z.h2_read_frames(c.sock, 15)
        dt2 = time.monotonic() - t0
        t.ok(end in ('eof', 'reset') and 19 <= dt2 <= 23,
             'an unanswered PING: zring closes the connection ~20 s after the peer went silent',
             'end %r after %.2f s' % (end, dt2))
        t.diag('PING after %.2f s, closed (%s) after %.2f s' % (dt, end, dt2))
        c.close()
        # answering PINGs keeps an idle connection open
        c = z.H2Client(certs, ADDR, src=CLIENT)
        sid = c.connect('%s:8080' % SERVER)
        t.is_(c.response(sid), 200, 'CONNECT on a fresh connection')
        c.wait(lambda: False, 23)   # h2 acknowledges zring's PINGs while pumping
        c.send(sid, b'still here', end_stream=True)
        c.wait(lambda: c.st(sid)['ended'] or c.st(sid)['reset'] is not None, 5)
        t.is_(bytes(c.st(sid)['data']), b'still here', 'a peer that answers PINGs keeps an idle stream alive past 20 s')
        c.close()

    t.subtest('TLS and settings', tls)
    t.subtest('64 MiB echo', bulk)
    t.subtest('half-close', half_close)
    t.subtest('error statuses', errors)
    t.subtest('metrics', metrics)
    t.subtest('keepalive PING', keepalive)
    t.ok(b.alive(), 'zring B still running at the end')


z.Tap('h2-client', timeout=300).run(main)
