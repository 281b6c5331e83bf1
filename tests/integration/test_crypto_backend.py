#!/usr/bin/python3
"""The TLS record-crypto choice as a user sees it: zring started with
tls.recordCrypto openssl, ipsec-mb and auto (ipsec-mb on a CPU with AES-NI)
shows the backend it uses in zring_crypto_backend_info{backend,record_layer},
in /config_dump's "crypto" and in one start-up log line; recordLayer: openssl
is OpenSSL's own record layer; a backend that can't run here (ktls without
the kernel's tls ULP, dpdk in a build without it) and an OpenSSL provider that
does not exist stop zring at start with exit 2 and a message naming them;
opensslProvider: legacy starts; a SIGHUP that changes the choice is logged as
taking effect at restart while the running choice stays.

ZRTEST_HAVE_DPDK / ZRTEST_HAVE_IPSECMB (set by meson) say what the build has."""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zrtest as z  # noqa: E402

HAVE_DPDK = os.environ.get('ZRTEST_HAVE_DPDK') == '1'
HAVE_IPSECMB = os.environ.get('ZRTEST_HAVE_IPSECMB', '1') == '1'


def cpu_has_aesni():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return 'aes' in line.split(':', 1)[1].split()
    except OSError:
        pass
    return False


def kernel_has_tls_ulp():
    try:
        with open('/proc/sys/net/ipv4/tcp_available_ulp') as f:
            return 'tls' in f.read().split()
    except OSError:
        return False


def node_with(t, tls):
    # The test names its own backend: the environment's (backends suite) must not override it.
    return z.Node(t, workers=1, extra={'tls': dict(tls)})


def crypto_log(node):
    """The start-up log record that names the record-crypto choice, or None."""
    for r in node.log_records():
        if 'backend' in r and 'recordLayer' in r:
            return r
    return None


def runs_with(t, tls, backend, layer='zring', provider=None, desc_has=None):
    what = ', '.join('%s: %s' % kv for kv in tls.items())
    node = node_with(t, tls)
    if not node.start():
        return None
    m = node.metrics()
    series = [(labels, v) for name, labels, v in m if name == 'zring_crypto_backend_info']
    t.is_(series, [({'backend': backend, 'record_layer': layer}, 1.0)],
          '%s: zring_crypto_backend_info{backend="%s",record_layer="%s"} 1 is the only series' % (what, backend, layer))
    rc, why = z.promtool_check(node.metrics_text())
    if rc is None:
        t.skip('%s: promtool accepts /metrics' % what, why)
    else:
        t.is_(rc, 0, '%s: promtool accepts /metrics' % what)
    dump = node.config_dump()
    c = dump.get('crypto') or {}
    t.is_((c.get('backend'), c.get('recordLayer'), c.get('opensslProvider')), (backend, layer, provider),
          '%s: /config_dump crypto names backend, record layer and provider' % what)
    desc = c.get('description') or ''
    t.ok(desc and (desc_has is None or desc_has.lower() in desc.lower()),
         '%s: /config_dump crypto.description describes it%s' % (what, ' (%s)' % desc_has if desc_has else ''),
         repr(c))
    rec = crypto_log(node)
    t.ok(rec is not None and rec.get('backend') == backend and rec.get('recordLayer') == layer
         and rec.get('description') == desc,
         '%s: one start-up log line names the backend, description and record layer' % what, repr(rec))
    return node


def refused(t, tls, must_name, what):
    node = node_with(t, tls)
    node.start(wait_ready=False)
    node.expect_running = False
    rc = node.wait_exit(15)
    log = node.log_text()
    t.is_(rc, 2, '%s: zring exits 2 at start' % what)
    names = must_name if isinstance(must_name, (list, tuple)) else [must_name]
    t.ok(all(n in log for n in names), '%s: the message names %s' % (what, ' and '.join(repr(n) for n in names)),
         log[-1500:])
    if rc is None:
        node.kill()


def main(t):
    aesni = cpu_has_aesni()
    t.diag('AES-NI: %s; build has ipsec-mb: %s, dpdk: %s; kernel tls ULP: %s' % (
        aesni, HAVE_IPSECMB, HAVE_DPDK, kernel_has_tls_ulp()))

    def openssl():
        n = runs_with(t, {'recordCrypto': 'openssl'}, 'openssl', desc_has='OpenSSL')
        if n:
            n.stop()

    def ipsec_mb():
        if not (aesni and HAVE_IPSECMB):
            refused(t, {'recordCrypto': 'ipsec-mb'}, 'ipsec-mb', 'recordCrypto: ipsec-mb without AES-NI or library')
            return
        n = runs_with(t, {'recordCrypto': 'ipsec-mb'}, 'ipsec-mb', desc_has='ipsec-mb')
        if n:
            n.stop()

    def auto():
        want = 'ipsec-mb' if aesni and HAVE_IPSECMB else 'openssl'
        n = runs_with(t, {'recordCrypto': 'auto'}, want)
        if n:
            n.stop()

    def openssl_layer():
        n = runs_with(t, {'recordLayer': 'openssl'}, 'openssl', layer='openssl')
        if n:
            n.stop()

    def ktls():
        if kernel_has_tls_ulp():
            t.skip('recordCrypto: ktls refused without the tls ULP', 'this kernel has the tls ULP')
            return
        refused(t, {'recordCrypto': 'ktls'}, ['ktls', 'tls ULP'], 'recordCrypto: ktls without the tls ULP')

    def dpdk():
        if HAVE_DPDK:
            # DPDK's EAL needs root (and runs with --no-huge here).
            if os.geteuid() != 0:
                t.skip('recordCrypto: dpdk starts', 'needs root')
                return
            n = runs_with(t, {'recordCrypto': 'dpdk'}, 'dpdk')
            if n:
                # DPDK starts threads of its own: a SIGHUP must still reload, not kill.
                off = n.log_size()
                n.reload()
                reloaded = z.wait_until(lambda: 'config reloaded' in n.log_since(off), 5)
                t.ok(reloaded and n.alive(), 'recordCrypto: dpdk: SIGHUP reloads and zring keeps running',
                     'exit status %r; log: %s' % (n.proc.poll(), n.log_since(off)[-800:]))
                t.is_(n.stop(), 0, 'recordCrypto: dpdk: SIGTERM drains and exits 0')
        else:
            refused(t, {'recordCrypto': 'dpdk'}, ['dpdk', '-Ddpdk=enabled'], 'recordCrypto: dpdk in a build without it')

    def bad_provider():
        refused(t, {'opensslProvider': 'no-such-provider'}, ['opensslProvider', 'no-such-provider'],
                'opensslProvider: no-such-provider')

    def legacy_provider():
        n = runs_with(t, {'recordCrypto': 'openssl', 'opensslProvider': 'legacy'}, 'openssl', provider='legacy')
        if n:
            n.stop()

    def check_config_bad_layer():
        node = node_with(t, {'recordLayer': 'kernel'})
        rc, out, err = z.run_zring(['check-config', node.config_path])
        t.is_(rc, 1, 'check-config with recordLayer: kernel: exit 1')
        t.ok(node.config_path in err and 'tls.recordLayer' in err and 'zring | openssl' in err,
             'check-config names the file, tls.recordLayer and the allowed values', err[:500])

    def reload_keeps_choice():
        node = node_with(t, {'recordCrypto': 'openssl'})
        if not node.start():
            return
        off = node.log_size()
        node.extra['tls'] = {'recordCrypto': 'auto', 'recordLayer': 'openssl'}
        node.write_config()
        node.reload()
        ok = z.wait_until(lambda: 'take effect at the next restart' in node.log_since(off), 5)
        t.ok(ok, 'SIGHUP changing recordCrypto/recordLayer: warned that it takes effect at restart',
             node.log_since(off)[-1000:])
        t.ok(node.alive(), 'zring keeps running after that reload')
        t.is_(node.metric('zring_crypto_backend_info', backend='openssl', record_layer='zring'), 1.0,
              'after the reload the metric still shows the running choice')
        t.is_((node.config_dump().get('crypto') or {}).get('recordLayer'), 'zring',
              'after the reload /config_dump still shows the running record layer')
        node.stop()

    t.subtest('recordCrypto: openssl', openssl)
    t.subtest('recordCrypto: ipsec-mb', ipsec_mb)
    t.subtest('recordCrypto: auto', auto)
    t.subtest('recordLayer: openssl', openssl_layer)
    t.subtest('recordCrypto: ktls', ktls)
    t.subtest('recordCrypto: dpdk', dpdk)
    t.subtest('opensslProvider: no-such-provider', bad_provider)
    t.subtest('opensslProvider: legacy', legacy_provider)
    t.subtest('check-config: bad recordLayer', check_config_bad_layer)
    t.subtest('SIGHUP keeps the start-up choice', reload_keeps_choice)


if __name__ == '__main__':
    z.Tap('crypto_backend', timeout=240).run(main)
