#!/usr/bin/python3
"""HBONE identities and certificates between two zring nodes (A 127.0.0.42,
B 127.0.0.43) and with a raw Python TLS client against B's 127.0.5.2:15008:
- the client refuses a server whose SPIFFE identity is neither the destination
  workload's nor one of the service's subjectAltNames (identity_not_allowed),
  and accepts it when a subjectAltName names it;
- the server refuses a client certificate from another trust domain
  (trust_domain), from an untrusted CA (bad_certificate), without a SPIFFE URI,
  expired (expired), or no client certificate at all;
- a node whose only certificate is expired presents nothing: handshakes fail
  cleanly (no_identity), the peer's SOCKS5 request is answered, zring stays up
  and answers readiness 500 `not ready, pending: certificate for <identity>`;
- certificate rotation: new cert files + SIGHUP -> new handshakes present the new
  certificate while a live HBONE connection keeps working."""

import os
import shutil
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

CLIENT = '127.0.4.2'
SERVER = '127.0.5.2'
VIP = '127.10.4.2'        # SANs: server
VIP_OTHER = '127.10.4.3'  # SANs: server and other
CLIENT_ID = z.spiffe('client')
SERVER_ID = z.spiffe('server')
OTHER_ID = z.spiffe('other')


def state(server_sa='server', server_td=None, client_sa='client'):
    extra = {'trustDomain': server_td} if server_td else {}
    wls = [
        z.workload('client', CLIENT, node='node-a', protocol='HBONE', sa=client_sa),
        z.workload('server', SERVER, node='node-b', protocol='HBONE', sa=server_sa,
                   services={z.svc_key('hb-echo'): {80: 8080}, z.svc_key('hb-echo2'): {80: 8080}}, **extra),
    ]
    svcs = [z.service('hb-echo', VIP, {80: 8080}, sans=[SERVER_ID]),
            z.service('hb-echo2', VIP_OTHER, {80: 8080}, sans=[SERVER_ID, OTHER_ID])]
    return wls, svcs


def tls_client(certs, cert=None, verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    if verify:
        ctx.load_verify_locations(os.path.join(certs, 'root-cert.pem'))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(os.path.join(certs, cert + '.pem'), os.path.join(certs, cert + '.key'))
    ctx.set_alpn_protocols(['h2'])
    return ctx


H2_PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
SETTINGS_EMPTY = b'\x00\x00\x00\x04\x00\x00\x00\x00\x00'


def tls_attempt(certs, cert, addr=(SERVER, 15008), timeout=5):
    """Handshakes with B as a TLS client presenting `cert` (None: no certificate),
    then sends the HTTP/2 preface and waits for the server's first frame.
    Returns ('accepted', peer DER) when the server answers with HTTP/2 frames,
    else ('refused', why)."""
    s = socket.create_connection(addr, timeout=timeout, source_address=(CLIENT, 0))
    try:
        ss = tls_client(certs, cert).wrap_socket(s)
    except (ssl.SSLError, OSError) as e:
        s.close()
        return 'refused', 'handshake: %r' % e
    try:
        der = ss.getpeercert(True)
        # TLS 1.3: the server judges our certificate after our Finished; a
        # refusal shows up as an alert or a close on the first read.
        ss.sendall(H2_PREFACE + SETTINGS_EMPTY)
        d = ss.recv(9)
        if len(d) >= 9 and d[3] == 4:
            return 'accepted', der
        return 'refused', 'first read %r' % d
    except (ssl.SSLError, OSError) as e:
        return 'refused', 'after handshake: %r' % e
    finally:
        ss.close()


def main(t):
    certs = z.make_certs()
    z.issue_leaf(certs, 'server2', SERVER_ID)  # same root, new key and serial
    z.EchoServer(SERVER, 8080)

    def start_unready(n, identity):
        """Starts a node whose local workload has no usable certificate: it
        serves, but readiness says what it waits for."""
        n.start(wait_ready=False)
        want = b'not ready, pending: certificate for %s\n' % identity.encode()

        def probe():
            try:
                return z.http_request(n.addr('readiness'), 'GET', '/healthz/ready', timeout=1)
            except (OSError, z.http.client.HTTPException) as e:
                return repr(e), b''
        return t.ok(z.wait_until(lambda: probe() == (500, want), 10),
                    'zring (%s) not ready, pending its certificate for %s' % (n.name, identity), repr(probe()))

    def pair(b_certs, a_certs, b_state=None, a_state=None, a_td=None, b_td=None, a_extra=None, unready=None):
        """unready: (node name, identity) of the node expected not ready."""
        b_state = b_state or state()
        a_state = a_state or state()
        b = z.hbone_node(t, 'node-b', z.HB_B_IP, certs, b_certs, *b_state, trust_domain=b_td)
        a = z.hbone_node(t, 'node-a', z.HB_A_IP, certs, a_certs, *a_state, trust_domain=a_td, extra=a_extra)
        unready_name, unready_id = unready or (None, None)
        okb = start_unready(b, unready_id) if unready_name == 'node-b' else b.start()
        oka = okb and (start_unready(a, unready_id) if unready_name == 'node-a' else a.start())
        return a, b, (oka and okb)

    def stop(*nodes):
        for n in nodes:
            n.stop()

    def baseline():
        a, b, ok = pair([(SERVER_ID, 'server')], [(CLIENT_ID, 'client')])
        if not ok:
            return stop(a, b)
        s = z.socks5_connect(a.socks5, VIP, 80, src=CLIENT)
        s.sendall(b'ok')
        t.is_(z.recv_exact(s, 2), b'ok', 'baseline: matching identities work')
        s.close()
        r, der = tls_attempt(certs, 'client')
        t.ok(r == 'accepted', 'raw TLS client with the client cert is accepted by B', der if r != 'accepted' else None)
        if r == 'accepted':
            want = ssl.PEM_cert_to_DER_cert(open(os.path.join(certs, 'server.pem')).read())
            t.ok(der == want, 'B presents the server certificate on 127.0.5.2:15008')
        f0 = z.tls_failures(b)
        for cert, reason, what in (
                ('other-td', 'trust_domain', 'foreign trust domain (trusted CA)'),
                ('other-ca', 'bad_certificate', 'untrusted CA'),
                ('nospiffe', None, 'no SPIFFE URI SAN'),
                ('expired', 'expired', 'expired'),
                (None, None, 'no client certificate')):
            before = z.tls_failures(b, reason) if reason else z.tls_failures(b)
            r, why = tls_attempt(certs, cert)
            t.is_(r, 'refused', 'B refuses a client certificate: %s' % what)
            t.diag('  %s: %s' % (what, why if r == 'refused' else 'accepted'))
            if reason:
                ok_ = z.wait_until(lambda: z.tls_failures(b, reason) > before, 3, 0.1)
                t.ok(ok_, 'B counts it as zring_tls_handshake_failures_total{reason="%s"}' % reason,
                     repr([(l.get('reason'), v) for l, v in z.mfind(b.metrics(), 'zring_tls_handshake_failures_total') if v]))
        t.cmp(z.tls_failures(b) - f0, '>=', 5, 'B counted all 5 refused client handshakes')
        t.ok(b.alive(), 'B alive after the refused handshakes')
        s = z.socks5_connect(a.socks5, VIP, 80, src=CLIENT)
        s.sendall(b'ok')
        t.is_(z.recv_exact(s, 2), b'ok', 'A -> B still works')
        s.close()
        stop(a, b)

    def server_identity_mismatch():
        # A thinks 127.0.5.2 runs as sa/server; B runs it as sa/other and holds only that cert
        a, b, ok = pair([(OTHER_ID, 'other')], [(CLIENT_ID, 'client')], b_state=state(server_sa='other'))
        if not ok:
            return stop(a, b)
        f0 = z.tls_failures(a, 'identity_not_allowed')
        t0 = time.monotonic()
        code, s = z.socks5_try(a.socks5, SERVER, 8080, src=CLIENT, timeout=15)
        dt = time.monotonic() - t0
        t.ok(code not in (0, 'timeout'), 'A refuses B presenting sa/other for a sa/server workload (by IP)',
             'reply %r after %.2f s' % (code, dt))
        t.diag('reply %r after %.2f s' % (code, dt))
        code, s2 = z.socks5_try(a.socks5, VIP, 80, src=CLIENT, timeout=15)
        t.ok(code not in (0, 'timeout'), 'A refuses it via a service whose SANs name only sa/server',
             'reply %r' % (code,))
        t.cmp(z.tls_failures(a, 'identity_not_allowed') - f0, '>=', 2,
              'A: zring_tls_handshake_failures_total{reason="identity_not_allowed"} +2')
        # a service whose subjectAltNames include sa/other: accepted
        code, s3 = z.socks5_try(a.socks5, VIP_OTHER, 80, src=CLIENT, timeout=15)
        t.is_(code, 0, 'A accepts sa/other via a service whose subjectAltNames list it')
        if s3:
            s3.sendall(b'san')
            t.is_(z.recv_exact(s3, 3), b'san', 'echo over the subjectAltName-accepted connection')
            s3.close()
        for x in (s, s2):
            if x:
                x.close()
        t.ok(a.alive() and b.alive(), 'both nodes alive')
        stop(a, b)

    def client_trust_domain():
        # A lives in trust domain other.local (cert other-td, same CA); B in cluster.local
        a_id = z.spiffe('client', td='other.local')
        a, b, ok = pair([(SERVER_ID, 'server')], [(a_id, 'other-td')],
                        a_state=state(server_td='cluster.local'), a_td='other.local')
        if not ok:
            return stop(a, b)
        f0 = z.tls_failures(b, 'trust_domain')
        code, s = z.socks5_try(a.socks5, SERVER, 8080, src=CLIENT, timeout=15)
        t.ok(code not in (0, 'timeout'), 'B refuses a client from trust domain other.local (SOCKS5 reply at A)',
             'reply %r' % (code,))
        if s:
            s.close()
        ok_ = z.wait_until(lambda: z.tls_failures(b, 'trust_domain') > f0, 3, 0.1)
        t.ok(ok_, 'B: zring_tls_handshake_failures_total{reason="trust_domain"} increased',
             repr([(l.get('reason'), v) for l, v in z.mfind(b.metrics(), 'zring_tls_handshake_failures_total') if v]))
        t.cmp(b.metric('istio_tcp_connections_opened_total', reporter='destination'), '==', 0,
              'B opened no connection for it')
        t.ok(a.alive() and b.alive(), 'both nodes alive')
        stop(a, b)

    def expired_server():
        # B's only certificate is expired: it cannot present anything
        a, b, ok = pair([(SERVER_ID, 'expired')], [(CLIENT_ID, 'client')], unready=('node-b', SERVER_ID))
        if not ok:
            return stop(a, b)
        f0 = z.tls_failures(b, 'no_identity')
        t0 = time.monotonic()
        code, s = z.socks5_try(a.socks5, SERVER, 8080, src=CLIENT, timeout=15)
        dt = time.monotonic() - t0
        t.ok(code not in (0, 'timeout') and dt < 5,
             'A gets a prompt SOCKS5 refusal when B has only an expired certificate',
             'reply %r after %.2f s' % (code, dt))
        if s:
            s.close()
        ok_ = z.wait_until(lambda: z.tls_failures(b, 'no_identity') > f0, 3, 0.1)
        t.ok(ok_, 'B: zring_tls_handshake_failures_total{reason="no_identity"} increased',
             'B: %r; A: %r' % ([(l.get('reason'), v) for l, v in z.mfind(b.metrics(), 'zring_tls_handshake_failures_total') if v],
                               [(l.get('reason'), v) for l, v in z.mfind(a.metrics(), 'zring_tls_handshake_failures_total') if v]))
        r, why = tls_attempt(certs, 'client')
        t.is_(r, 'refused', 'raw TLS client: B presents no certificate (handshake fails)')
        t.ok(a.alive() and b.alive(), 'both nodes alive')
        # the failed connection is released once its last completions are in
        z.wait_until(lambda: a.metric('zring_hbone_connections') == 0, 3, 0.05)
        t.cmp(a.metric('zring_hbone_connections'), '==', 0, 'A keeps no HBONE connection to B')
        stop(a, b)

    def expired_client():
        # A's only certificate (for its workload's identity) is expired: nothing to present
        a, b, ok = pair([(SERVER_ID, 'server')], [(SERVER_ID, 'expired')],
                        a_state=state(client_sa='server'), b_state=state(client_sa='server'),
                        unready=('node-a', SERVER_ID))
        if not ok:
            return stop(a, b)
        f0 = z.tls_failures(a, 'no_identity')
        r0 = a.refused('no_identity')
        a0 = b.metric('zring_hbone_connections', role='server')
        t0 = time.monotonic()
        code, s = z.socks5_try(a.socks5, SERVER, 8080, src=CLIENT, timeout=15)
        dt = time.monotonic() - t0
        t.ok(code not in (0, 'timeout') and dt < 5,
             'A refuses promptly when its workload\'s only certificate is expired', 'reply %r after %.2f s' % (code, dt))
        if s:
            s.close()
        ok_ = z.wait_until(lambda: z.tls_failures(a, 'no_identity') > f0 or a.refused('no_identity') > r0, 3, 0.1)
        t.ok(ok_, 'A counts it as no_identity (zring_tls_handshake_failures_total or zring_connections_refused_total)',
             'reply %r; A failures %r; A refusals %r' % (
                 code, [(l.get('reason'), v) for l, v in z.mfind(a.metrics(), 'zring_tls_handshake_failures_total') if v],
                 [(l.get('reason'), v) for l, v in z.mfind(a.metrics(), 'zring_connections_refused_total') if v]))
        t.cmp(b.metric('zring_hbone_connections', role='server'), '==', a0, 'B got no HBONE connection')
        t.ok(a.alive() and b.alive(), 'both nodes alive')
        stop(a, b)

    def rotation():
        bdir = os.path.join(certs, 'b')
        os.makedirs(bdir, exist_ok=True)
        for f in ('server.pem', 'server.key', 'root-cert.pem'):
            shutil.copy(os.path.join(certs, f), os.path.join(bdir, f))
        b = z.hbone_node(t, 'node-b', z.HB_B_IP, bdir, [(SERVER_ID, 'server')], *state())
        a = z.hbone_node(t, 'node-a', z.HB_A_IP, certs, [(CLIENT_ID, 'client')], *state())
        if not b.start() or not a.start():
            return stop(a, b)
        old = ssl.PEM_cert_to_DER_cert(open(os.path.join(certs, 'server.pem')).read())
        new = ssl.PEM_cert_to_DER_cert(open(os.path.join(certs, 'server2.pem')).read())
        live = z.socks5_connect(a.socks5, VIP, 80, src=CLIENT)
        live.sendall(b'before')
        t.is_(z.recv_exact(live, 6), b'before', 'live connection established')
        r, der = tls_attempt(certs, 'client')
        t.ok(r == 'accepted' and der == old, 'before rotation B presents the old certificate')
        # rotate: replace the files, then SIGHUP
        for ext in ('pem', 'key'):
            tmp = os.path.join(bdir, 'server.%s.tmp' % ext)
            shutil.copy(os.path.join(certs, 'server2.' + ext), tmp)
            os.rename(tmp, os.path.join(bdir, 'server.' + ext))
        off = b.log_size()
        b.reload()
        presented = {}

        def check_new():
            r, der = tls_attempt(certs, 'client')
            presented['r'] = (r, der == new, der == old)
            return r == 'accepted' and der == new
        ok_ = z.wait_until(check_new, 5, 0.2)
        t.ok(ok_, 'after SIGHUP new handshakes present the new certificate',
             'last attempt: %r (new?, old?)' % (presented.get('r'),))
        errs = [r for r in b.log_records(off) if r.get('level') in ('error', 'warn')]
        t.ok(not errs, 'no error or warning logged by the reload', repr(errs[:3]))
        try:
            live.sendall(b'after')
            got = z.recv_exact(live, 5)
        except OSError as e:
            got = repr(e)
        t.is_(got, b'after', 'the live connection survives the certificate reload')
        live.close()
        s = z.socks5_connect(a.socks5, VIP, 80, src=CLIENT)
        s.sendall(b'fresh')
        t.is_(z.recv_exact(s, 5), b'fresh', 'new A -> B connections work after the reload')
        s.close()
        # a fresh A (no pooled connection) must handshake with the new certificate
        a.stop()
        a2 = z.hbone_node(t, 'node-a', z.HB_A_IP, certs, [(CLIENT_ID, 'client')], *state())
        if a2.start():
            s = z.socks5_connect(a2.socks5, VIP, 80, src=CLIENT)
            s.sendall(b'rotated')
            t.is_(z.recv_exact(s, 7), b'rotated', 'a fresh HBONE connection handshakes with the rotated certificate')
            s.close()
            t.cmp(z.tls_failures(a2) + z.tls_failures(b), '==', 0, 'no handshake failures after the rotation')
        t.ok(b.alive(), 'B alive after the rotation')
        stop(a2, b)

    started = []
    orig_hbone_node = z.hbone_node

    def tracked(*a, **kw):
        n = orig_hbone_node(*a, **kw)
        started.append(n)
        return n
    z.hbone_node = tracked

    def run(name, fn):
        try:
            t.subtest(name, fn)
        finally:
            while started:
                started.pop().stop()

    run('baseline and client certificate refusals', baseline)
    run('server identity mismatch', server_identity_mismatch)
    run('client trust domain', client_trust_domain)
    run('expired server certificate', expired_server)
    run('expired client certificate', expired_client)
    run('certificate rotation', rotation)


z.Tap('hbone-identity', timeout=300).run(main)
