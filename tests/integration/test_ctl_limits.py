#!/usr/bin/python3
"""The control servers under abuse, and readiness telling the truth about
certificates (one node on 127.43.0.2, another on 127.43.0.3):
- 1,000 connections to the metrics port each dripping one byte per second
  (reconnecting when closed) for 10 s: readiness and admin /config_dump keep
  answering, each within 2 s; the slow connections are closed; metrics answers
  once they stop;
- a node with RLIMIT_NOFILE 256 whose descriptors are all held by plain TCP
  connections to its SOCKS5 listener still answers /healthz/ready, /metrics and
  the admin index;
- a node whose only certificate is expired is not ready (`not ready, pending:
  certificate for spiffe://...`); SIGHUP to a valid certificate makes it ready,
  SIGHUP back to the expired one not ready again; a certificate that expires
  while the node runs makes it not ready once it expires;
  zring_certificate_expiry_seconds{identity} follows each certificate's
  notAfter (negative once expired)."""

import calendar
import os
import selectors
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

NODE = '127.43.0.2'
CERT_NODE = '127.43.0.3'
WL = '127.43.1.3'
SERVER_ID = z.spiffe('server')
SLOW = 1000


def timed_get(addr, path):
    """(status or exception text, body, seconds)."""
    t0 = time.monotonic()
    try:
        st, body = z.http_request(addr, 'GET', path, timeout=5)
    except Exception as e:  # noqa: BLE001 - any failure is a finding
        st, body = repr(e), b''
    return st, body, time.monotonic() - t0


def slowloris(t):
    z.raise_nofile(4 * SLOW + 1024)
    node = z.Node(t, name='node-a', ip=NODE, workloads=[z.workload('client', '127.43.1.2')])
    if not node.start():
        return
    maddr = node.addr('metrics')
    sel = selectors.DefaultSelector()
    socks = set()
    stats = {'opened': 0, 'closed': 0, 'connect_failed': 0}

    def open_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(maddr)
        except BlockingIOError:
            pass
        except OSError:
            stats['connect_failed'] += 1
            s.close()
            return
        socks.add(s)
        sel.register(s, selectors.EVENT_READ)
        stats['opened'] += 1

    def drop(s):
        socks.discard(s)
        sel.unregister(s)
        s.close()
        stats['closed'] += 1

    probes = []
    stop = threading.Event()

    def prober():
        while not stop.is_set():
            probes.append(('readiness',) + timed_get(node.addr('readiness'), '/healthz/ready'))
            probes.append(('admin',) + timed_get(node.addr('admin'), '/config_dump'))
            time.sleep(0.2)

    for _ in range(SLOW):
        open_one()
    th = threading.Thread(target=prober, daemon=True)
    th.start()
    # Drip one byte per second on each connection, for 10 s; a closed one is
    # replaced, so 1,000 stay in flight.
    t_end = time.monotonic() + 10
    request = b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'
    sent = {}
    while time.monotonic() < t_end:
        tick = time.monotonic() + 1
        for s in list(socks):
            i = sent.get(s, 0)
            try:
                s.send(request[i % len(request):i % len(request) + 1])
                sent[s] = i + 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                sent.pop(s, None)
                drop(s)
        while time.monotonic() < tick:
            for key, _ in sel.select(timeout=max(0, tick - time.monotonic())):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b''
                if not data:
                    sent.pop(s, None)
                    drop(s)
        for _ in range(SLOW - len(socks)):
            open_one()
    stop.set()
    th.join(10)
    for s in list(socks):
        sel.unregister(s)
        s.close()
    ready = [p for p in probes if p[0] == 'readiness']
    admin = [p for p in probes if p[0] == 'admin']
    bad_ready = [p for p in ready if p[1] != 200 or p[3] >= 2.0]
    bad_admin = [p for p in admin if p[1] != 200 or p[3] >= 2.0]
    t.cmp(len(ready), '>=', 10, 'readiness probed throughout (%d probes)' % len(ready))
    t.ok(not bad_ready, 'every readiness probe 200 within 2 s while %d slow clients hold the metrics port' % SLOW,
         repr(bad_ready[:5]))
    t.ok(not bad_admin, 'every admin /config_dump 200 within 2 s (%d requests)' % len(admin), repr(bad_admin[:5]))
    slowest = max([p[3] for p in probes] or [0])
    t.diag('opened %d slow connections, %d closed by zring, %d connect failures; slowest probe %.3f s' %
           (stats['opened'], stats['closed'], stats['connect_failed'], slowest))
    t.cmp(stats['closed'], '>=', SLOW, 'zring closed the slow connections (%d of %d)' % (stats['closed'],
                                                                                        stats['opened']))
    st, body, dt = timed_get(maddr, '/metrics')
    t.ok(st == 200 and b'istio_build' in body, 'metrics answers once they stop (%s, %.2f s)' % (st, dt))
    t.ok(node.alive(), 'zring alive')
    node.stop()


def fd_exhaustion(t):
    z.raise_nofile(4096)
    nofile = 256
    node = z.Node(t, name='node-a', ip=NODE, workloads=[z.workload('client', '127.43.1.2')])
    if not node.start(nofile=nofile):
        return
    base = node.fd_count()
    held = []
    for _ in range(nofile + 64):
        try:
            held.append(z.connect(*node.socks5, timeout=2))
        except OSError:
            break
    # Workers accept until only their reserve is left (an eighth of the
    # limit, at most 64: core/worker.c), then pause; the ctl servers answer
    # from a descriptor table of their own (or their spares).
    reserve = min(nofile // 8, 64)
    full = z.wait_until(lambda: (node.fd_count() or 0) >= nofile - reserve - 1, 5)
    t.ok(full, 'zring holds every descriptor but the workers\' reserve (%s of %d, reserve %d, %d at start, '
         '%d connections)' % (node.fd_count(), nofile, reserve, base, len(held)))
    for name, listener, path in (('readiness', 'readiness', '/healthz/ready'), ('metrics', 'metrics', '/metrics'),
                                 ('admin', 'admin', '/'), ('readiness again', 'readiness', '/healthz/ready')):
        st, _, dt = timed_get(node.addr(listener), path)
        t.ok(st == 200 and dt < 2.0, 'out of descriptors: %s answers 200 (%s, %.2f s)' % (name, st, dt))
    for s in held:
        s.close()
    st, _, dt = timed_get(node.addr('readiness'), '/healthz/ready')
    t.ok(st == 200, 'readiness answers after the connections close (%s)' % st)
    t.ok(node.alive(), 'zring alive')
    node.stop()


def issue_dated(certdir, name, uri, not_before, not_after):
    """NAME.pem/NAME.key for URI SAN `uri` from gen.sh's root, valid over
    [not_before, not_after] (Unix seconds): `openssl ca` takes explicit dates."""
    fmt = '%Y%m%d%H%M%SZ'
    key = os.path.join(certdir, name + '.key')
    csr = os.path.join(certdir, name + '.csr')
    cadir = os.path.join(certdir, 'ca-' + name)
    os.makedirs(cadir, exist_ok=True)
    open(os.path.join(cadir, 'index.txt'), 'w').close()
    with open(os.path.join(cadir, 'serial'), 'w') as f:
        f.write('%x\n' % (0x3000 + int(time.time()) % 0x1000))
    cnf = os.path.join(cadir, 'ca.cnf')
    with open(cnf, 'w') as f:
        f.write('[ca]\ndefault_ca = c\n[c]\ndir = %s\ndatabase = %s/index.txt\nnew_certs_dir = %s\n'
                'serial = %s/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n'
                '[any]\norganizationName = optional\ncommonName = supplied\n'
                '[leaf]\nbasicConstraints = critical,CA:FALSE\n'
                'keyUsage = critical,digitalSignature,keyEncipherment\n'
                'extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = critical,URI:%s\n'
                'authorityKeyIdentifier = keyid\n' % (cadir, cadir, cadir, cadir, uri))
    z.sh('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key)
    z.sh('openssl', 'req', '-new', '-key', key, '-subj', '/O=zring-test/CN=%s' % name, '-out', csr)
    z.sh('openssl', 'ca', '-batch', '-notext', '-config', cnf, '-cert', os.path.join(certdir, 'root-cert.pem'),
         '-keyfile', os.path.join(certdir, 'root-key.pem'), '-extensions', 'leaf',
         '-startdate', time.strftime(fmt, time.gmtime(not_before)),
         '-enddate', time.strftime(fmt, time.gmtime(not_after)), '-in', csr,
         '-out', os.path.join(certdir, name + '.pem'))


def not_after(path):
    out = z.sh('openssl', 'x509', '-in', path, '-noout', '-enddate').stdout.decode().strip()
    return calendar.timegm(time.strptime(out.split('=', 1)[1], '%b %d %H:%M:%S %Y %Z'))


def certificates(t):
    certs = z.make_certs()
    wls = [z.workload('server', WL, node='node-c', protocol='HBONE', sa='server')]
    node = z.hbone_node(t, 'node-c', CERT_NODE, certs, [(SERVER_ID, 'expired')], wls)
    raddr = node.addr('readiness')
    want = b'not ready, pending: certificate for %s\n' % SERVER_ID.encode()

    def readiness():
        try:
            return z.http_request(raddr, 'GET', '/healthz/ready', timeout=2)
        except Exception as e:  # noqa: BLE001
            return repr(e), b''

    def expiry():
        """The gauge's value, or None when zring exports no such sample."""
        found = z.mfind(node.metrics(), 'zring_certificate_expiry_seconds', identity=SERVER_ID)
        return found[0][1] if len(found) == 1 else None

    def use(name):
        node.extra['identity'] = z.identity_cfg(certs, [(SERVER_ID, name)])
        node.write_config()
        node.reload()

    node.start(wait_ready=False)
    got = z.wait_until(lambda: readiness()[0] == 500, 10)
    st, body = readiness()
    t.ok(got and body == want, 'only certificate expired at start: readiness 500 naming it', '%r %r' % (st, body))
    t.ok(node.alive(), 'zring runs (an expired certificate is not a start-up error)')
    v = expiry()
    t.ok(v is not None and abs(v - (not_after(os.path.join(certs, 'expired.pem')) - time.time())) < 10,
         'zring_certificate_expiry_seconds negative: %s s' % v)

    use('server')
    t.ok(z.wait_until(lambda: readiness()[0] == 200, 10), 'SIGHUP to a valid certificate: ready 200',
         repr(readiness()))
    v = expiry()
    left = not_after(os.path.join(certs, 'server.pem')) - time.time()
    t.ok(v is not None and abs(v - left) < 10, 'expiry metric %s s, notAfter - now = %.0f s' % (v, left))
    text = node.metrics_text()
    rc, why = z.promtool_check(text)
    if rc is None:
        t.skip('promtool check metrics', why)
    else:
        t.ok(rc == 0, 'promtool check metrics accepts the exposition', why)

    use('expired')
    t.ok(z.wait_until(lambda: readiness() == (500, want), 10), 'SIGHUP back to the expired one: 500 again',
         repr(readiness()))

    # A certificate with 8 s left: ready now, not ready once it expires.
    now = int(time.time())
    issue_dated(certs, 'short', SERVER_ID, now - 60, now + 8)
    use('short')
    t.ok(z.wait_until(lambda: readiness()[0] == 200, 5), 'short-lived certificate: ready 200', repr(readiness()))
    v = expiry()
    t.ok(v is not None and 0 < v <= 8, 'its expiry metric counts down (%s s)' % v)
    t.ok(z.wait_until(lambda: readiness() == (500, want), 15), 'once it expires while running: 500 naming it',
         repr(readiness()))
    v = expiry()
    t.ok(v is not None and v <= 0, 'expiry metric now %s s' % v)
    t.ok(node.alive(), 'zring alive')
    node.stop()


def main(t):
    t.subtest('1,000 slow connections on the metrics port', slowloris, t)
    t.subtest('descriptors exhausted', fd_exhaustion, t)
    t.subtest('readiness and certificates', certificates, t)


z.Tap('ctl-limits', timeout=120).run(main)
