/* Identity store and TLS engine: two zr_tls_t (or one and a plain OpenSSL
 * peer) talk through memory; certificates come from tests/certs/gen.sh.
 * Runs from the repository root (meson workdir) or tests/unit. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "crypto/record.h"
#include "crypto/tls.h"
#include "io/log.h"
#include "tap.h"
#include "certs_fixture.h"
#include "raw_tls.h"

#define SA "spiffe://cluster.local/ns/default/sa/"

/* A config naming certificates by gen.sh's NAME; identity given or sa/NAME. */
typedef struct cfgb {
	zr_config_t cfg;
	zr_identity_cert_t certs[8];
	char strs[8][3][4300];
	char ca[4300];
	char *suites[4];
} cfgb_t;

static void cfg_init(cfgb_t *b, const char *ca)
{
	memset(b, 0, sizeof(*b));
	b->cfg.trust_domain = (char *)"cluster.local";
	if (ca) {
		snprintf(b->ca, sizeof(b->ca), "%s", path(ca));
		b->cfg.identity.ca_certificates = b->ca;
	}
	b->cfg.identity.certificates = b->certs;
}

static void cfg_add(cfgb_t *b, const char *identity, const char *cert, const char *key)
{
	size_t i = b->cfg.identity.n_certificates++;
	snprintf(b->strs[i][0], sizeof(b->strs[i][0]), "%s", identity);
	snprintf(b->strs[i][1], sizeof(b->strs[i][1]), "%s.pem", path(cert));
	snprintf(b->strs[i][2], sizeof(b->strs[i][2]), "%s.key", path(key));
	b->certs[i] = (zr_identity_cert_t){b->strs[i][0], b->strs[i][1], b->strs[i][2]};
}

static zr_identity_store_t *load(cfgb_t *b, int *rc, char *err, size_t cap)
{
	zr_identity_store_t *st = NULL;
	*rc = zr_identity_store_load(&b->cfg, &st, err, cap);
	return st;
}

/* Moves whatever `from` has to send into `to`, in odd-sized pieces so that
 * chunk boundaries and partial consumption are exercised. */
static size_t shuttle(zr_tls_t *from, zr_tls_t *to)
{
	size_t moved = 0;
	const void *p;
	size_t n;
	while ((n = zr_tls_out_peek(from, &p))) {
		if (n > 7777)
			n = 7777;
		if (zr_tls_feed(to, p, n))
			return moved;
		zr_tls_out_consume(from, n);
		moved += n;
	}
	return moved;
}

static void handshake(zr_tls_t *c, zr_tls_t *s, int *rc_c, int *rc_s)
{
	*rc_c = *rc_s = 0;
	for (int round = 0; round < 20; round++) {
		if (*rc_c == 0)
			*rc_c = zr_tls_handshake(c);
		size_t moved = shuttle(c, s);
		if (*rc_s == 0)
			*rc_s = zr_tls_handshake(s);
		moved += shuttle(s, c);
		if ((*rc_c && *rc_s) || (!moved && round))
			break;
	}
}

static zr_tls_t *client_of(zr_identity_store_t *st, const char *identity, const char *allowed)
{
	char err[512];
	const char *ids[] = {allowed};
	zr_tls_peer_policy_t pol = {.allowed_ids = ids, .n_allowed_ids = 1};
	zr_tls_t *t = zr_tls_new(st, identity, false, &pol, err, sizeof(err));
	if (!t)
		diag("zr_tls_new client %s: %s", identity, err);
	return t;
}

static zr_tls_t *server_of(zr_identity_store_t *st, const char *identity)
{
	char err[512];
	zr_tls_peer_policy_t pol = {.trust_domain = "cluster.local"};
	zr_tls_t *t = zr_tls_new(st, identity, true, &pol, err, sizeof(err));
	if (!t)
		diag("zr_tls_new server %s: %s", identity, err);
	return t;
}

static bool has(const char *s, const char *sub)
{
	return s && strstr(s, sub);
}

/* Reads until `want` bytes, pumping `from` into `to` as needed. */
static size_t drain(zr_tls_t *from, zr_tls_t *to, unsigned char *buf, size_t want)
{
	size_t got = 0;
	while (got < want) {
		ssize_t n = zr_tls_read(to, buf + got, want - got);
		if (n > 0) {
			got += (size_t)n;
		} else if (n == -EAGAIN) {
			if (!shuttle(from, to))
				break;
		} else {
			diag("read: %zd %s", n, zr_tls_error(to));
			break;
		}
	}
	return got;
}

static void test_spiffe(void)
{
	zr_spiffe_id_t id;
	ok(!zr_spiffe_parse(SA "client", &id) && !strcmp(id.trust_domain, "cluster.local") &&
		   !strcmp(id.ns, "default") && !strcmp(id.sa, "client"),
	   "spiffe parse");
	is(zr_spiffe_parse("spiffe://cluster.local/ns/default/sa/", &id), -EINVAL, "empty sa refused");
	is(zr_spiffe_parse("spiffe://Cluster.local/ns/a/sa/b", &id), -EINVAL, "uppercase trust domain refused");
	is(zr_spiffe_parse("spiffe://td/ns/a/sa/b/c", &id), -EINVAL, "extra path refused");
	is(zr_spiffe_parse("spiffe://td/ns/../sa/b", &id), -EINVAL, "dot segment refused");
	is(zr_spiffe_parse("https://td/ns/a/sa/b", &id), -EINVAL, "other scheme refused");
}

static void test_load_errors(void)
{
	cfgb_t b;
	char err[1024];
	int rc;
	zr_identity_store_t *st;

	cfg_init(&b, NULL);
	st = load(&b, &rc, err, sizeof(err));
	ok(rc == 0 && st && zr_identity_store_count(st) == 0 && !zr_identity_store_has(st, SA "client"),
	   "no identity config: empty store");
	zr_identity_store_unref(st);

	cfg_init(&b, "missing-root.pem");
	cfg_add(&b, SA "client", "client", "client");
	st = load(&b, &rc, err, sizeof(err));
	ok(rc == -ENOENT && !st && has(err, "missing-root.pem") && has(err, "No such file"),
	   "missing CA file named: %s", err);

	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, SA "client", "nope", "client");
	st = load(&b, &rc, err, sizeof(err));
	ok(rc == -ENOENT && has(err, "nope.pem"), "missing cert file named: %s", err);

	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, SA "client", "server", "server");
	st = load(&b, &rc, err, sizeof(err));
	ok(rc < 0 && has(err, "server.pem") && has(err, SA "server") && has(err, "differs"),
	   "SAN differing from identity refused: %s", err);

	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, SA "client", "client", "server");
	st = load(&b, &rc, err, sizeof(err));
	ok(rc < 0 && has(err, "server.key") && has(err, "does not match"), "key mismatch refused: %s", err);

	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, "spiffe://other.local/ns/default/sa/client", "other-ca", "other-ca");
	st = load(&b, &rc, err, sizeof(err));
	ok(rc < 0 && has(err, "other-ca.pem") && has(err, "does not chain"), "cert from another CA refused: %s", err);

	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, SA "nospiffe", "nospiffe", "nospiffe");
	st = load(&b, &rc, err, sizeof(err));
	ok(rc < 0 && has(err, "nospiffe.pem") && has(err, "no spiffe"), "cert without SPIFFE SAN refused: %s", err);

	cfg_init(&b, NULL);
	cfg_add(&b, SA "client", "client", "client");
	st = load(&b, &rc, err, sizeof(err));
	ok(rc < 0 && has(err, "caCertificates"), "certificates without CA refused: %s", err);

	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, SA "client", "client", "client");
	b.cfg.tls.openssl_provider = (char *)"zring-no-such-provider";
	st = load(&b, &rc, err, sizeof(err));
	ok(rc < 0 && has(err, "openssl provider 'zring-no-such-provider' could not be loaded: "),
	   "unknown provider refused: %s", err);

	cfg_init(&b, "root-cert.pem");
	b.suites[0] = (char *)"TLS_AES_128_GCM_SHA256";
	b.suites[1] = (char *)"TLS_RSA_WITH_NULL_SHA";
	b.cfg.tls.cipher_suites = b.suites;
	b.cfg.tls.n_cipher_suites = 2;
	st = load(&b, &rc, err, sizeof(err));
	ok(rc == -EINVAL && has(err, "TLS_RSA_WITH_NULL_SHA"), "unknown cipher suite refused: %s", err);

	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, SA "server", "expired", "expired");
	st = load(&b, &rc, err, sizeof(err));
	const zr_cert_info_t *info = st ? zr_identity_store_info(st, 0) : NULL;
	ok(rc == 0 && info && info->expired && info->not_after == 1577923200 && !zr_identity_store_has(st, SA "server"),
	   "expired certificate loads, reported, not usable");
	ok(st && !server_of(st, SA "server"), "expired identity is never presented");
	zr_identity_store_unref(st);
}

static void test_happy(zr_identity_store_t *st)
{
	int rc_c, rc_s;
	zr_tls_t *c = client_of(st, SA "client", SA "server"), *s = server_of(st, SA "server");
	if (!ok(c && s, "client and server created"))
		return;
	handshake(c, s, &rc_c, &rc_s);
	ok(rc_c == 1 && rc_s == 1, "handshake completes (%d %s / %d %s)", rc_c, zr_tls_error(c), rc_s, zr_tls_error(s));
	is_str(zr_tls_alpn(c), "h2", "client ALPN h2");
	is_str(zr_tls_alpn(s), "h2", "server ALPN h2");
	is_str(zr_tls_peer_id(c), SA "server", "client sees the server's identity");
	is_str(zr_tls_peer_id(s), SA "client", "server sees the client's identity");
	ok(zr_tls_own_records(c) && zr_tls_own_records(s), "records on zring's own record layer (the default)");

	size_t mib = 1 << 20;
	unsigned char *tx = malloc(mib), *rx = malloc(mib);
	for (size_t i = 0; i < mib; i++)
		tx[i] = (unsigned char)(i * 131 + (i >> 11));
	const void *first;
	ok(zr_tls_write(c, tx, mib) == 0 && zr_tls_out_pending(c) > mib, "1 MiB written by the client");
	size_t run = zr_tls_out_peek(c, &first);
	unsigned char *copy = malloc(run);
	memcpy(copy, first, run);
	ok(zr_tls_write(c, tx, 4096) == 0, "more written while a run is peeked");
	const void *again;
	ok(zr_tls_out_peek(c, &again) >= run && again == first && !memcmp(first, copy, run),
	   "peeked run unmoved and unchanged by later writes");
	free(copy);
	ok(drain(c, s, rx, mib) == mib && !memcmp(tx, rx, mib), "1 MiB client->server byte-exact");
	ok(drain(c, s, rx, 4096) == 4096 && !memcmp(tx, rx, 4096), "and the extra 4 KiB");

	for (size_t i = 0; i < mib; i++)
		tx[i] = (unsigned char)(i * 7 + 3);
	int wrc = 0;
	for (size_t off = 0; off < mib && !wrc; off += 100000)
		wrc = zr_tls_write(s, tx + off, mib - off < 100000 ? mib - off : 100000);
	ok(!wrc && drain(s, c, rx, mib) == mib && !memcmp(tx, rx, mib), "1 MiB server->client byte-exact");
	unsigned char byte;
	is(zr_tls_read(c, &byte, 1), -EAGAIN, "nothing more: -EAGAIN");

	zr_tls_close_notify(c);
	shuttle(c, s);
	is(zr_tls_read(s, rx, 100), 0, "close_notify reads as 0 on the server");
	ok(zr_tls_write(s, "bye", 3) == 0 && drain(s, c, rx, 3) == 3 && !memcmp(rx, "bye", 3),
	   "server still writes after the client's close_notify (half-close)");
	zr_tls_close_notify(s);
	shuttle(s, c);
	is(zr_tls_read(c, rx, 100), 0, "close_notify reads as 0 on the client");
	zr_tls_free(c);
	zr_tls_free(s);
	free(tx);
	free(rx);
}

static void test_refusals(zr_identity_store_t *st, zr_identity_store_t *foreign)
{
	int rc_c, rc_s;
	unsigned char buf[64];

	zr_tls_t *c = client_of(st, SA "client", SA "server"), *s = server_of(st, SA "other");
	handshake(c, s, &rc_c, &rc_s);
	ok(rc_c == -EACCES && has(zr_tls_error(c), "peer identity " SA "other not allowed"),
	   "client refuses a server with another identity: %s", zr_tls_error(c));
	ok(rc_s < 0 && has(zr_tls_error(s), "alert"), "server sees the client's alert: %s", zr_tls_error(s));
	is_str(zr_tls_peer_id(c), "", "no peer id after a refusal");
	zr_tls_free(c);
	zr_tls_free(s);

	c = client_of(st, "spiffe://other.local/ns/default/sa/client", SA "server");
	s = server_of(st, SA "server");
	handshake(c, s, &rc_c, &rc_s);
	ok(rc_s == -EACCES && has(zr_tls_error(s), "trust domain other.local != cluster.local"),
	   "server refuses a client of trust domain other.local: %s", zr_tls_error(s));
	/* TLS 1.3: the client is done before the server has checked it. */
	ssize_t n = rc_c == 1 ? zr_tls_read(c, buf, sizeof(buf)) : rc_c;
	ok(n == -ECONNRESET && has(zr_tls_error(c), "alert"), "client learns of it on read: %s", zr_tls_error(c));
	zr_tls_free(c);
	zr_tls_free(s);

	c = client_of(foreign, "spiffe://other.local/ns/default/sa/client", SA "server");
	s = server_of(st, SA "server");
	handshake(c, s, &rc_c, &rc_s);
	ok(rc_s == -EACCES && has(zr_tls_error(s), "bad certificate"), "server refuses a client of an unknown CA: %s",
	   zr_tls_error(s));
	n = rc_c == 1 ? zr_tls_read(c, buf, sizeof(buf)) : rc_c;
	ok(n == -ECONNRESET && has(zr_tls_error(c), "unknown ca"), "... which the client reads as an alert: %s",
	   zr_tls_error(c));
	zr_tls_free(c);
	zr_tls_free(s);

	c = client_of(st, SA "chained", SA "server");
	s = server_of(st, SA "server");
	handshake(c, s, &rc_c, &rc_s);
	ok(rc_c == 1 && rc_s == 1 && !strcmp(zr_tls_peer_id(s), SA "chained"),
	   "client with an intermediate in its chain accepted");
	zr_tls_free(c);
	zr_tls_free(s);

	s = server_of(st, SA "server");
	unsigned char junk[1000];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)(i * 37 + 11);
	int rc = zr_tls_feed(s, junk, sizeof(junk));
	rc = rc ? rc : zr_tls_handshake(s);
	ok(rc < 0 && zr_tls_error(s)[0], "garbage into a server fails cleanly: %d %s", rc, zr_tls_error(s));
	is(zr_tls_handshake(s), rc, "and stays failed");
	zr_tls_free(s);

	c = client_of(st, SA "client", SA "server");
	s = server_of(st, SA "server");
	handshake(c, s, &rc_c, &rc_s);
	junk[0] = 23, junk[1] = 3, junk[2] = 3, junk[3] = 0, junk[4] = 200; /* app data record, bad tag */
	ok(!zr_tls_feed(s, junk, 205) && zr_tls_read(s, buf, sizeof(buf)) < 0 && zr_tls_error(s)[0],
	   "forged record after the handshake fails the read: %s", zr_tls_error(s));
	zr_tls_free(c);
	zr_tls_free(s);

	char err[256];
	zr_tls_peer_policy_t none = {0};
	ok(!zr_tls_new(st, SA "client", false, &none, err, sizeof(err)), "client policy without ids refused: %s", err);
	ok(!zr_tls_new(st, SA "server", true, &none, err, sizeof(err)), "server policy without trust domain refused");
	ok(!server_of(st, SA "nobody"), "unknown identity refused");
}

static void raw_init(raw_t *r, bool server, const char *cert, const char *alpn, size_t alpn_len)
{
	r->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	SSL_CTX_set_min_proto_version(r->ctx, TLS1_3_VERSION);
	if (cert) {
		char p[4300];
		snprintf(p, sizeof(p), "%s.pem", path(cert));
		if (SSL_CTX_use_certificate_chain_file(r->ctx, p) != 1)
			diag("raw: cannot load %s", p);
		snprintf(p, sizeof(p), "%s.key", path(cert));
		if (SSL_CTX_use_PrivateKey_file(r->ctx, p, SSL_FILETYPE_PEM) != 1)
			diag("raw: cannot load %s", p);
	}
	if (server) {
		SSL_CTX_set_alpn_select_cb(r->ctx, raw_alpn, NULL);
		SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, raw_accept_any);
	} else if (alpn && SSL_CTX_set_alpn_protos(r->ctx, (const unsigned char *)alpn, (unsigned)alpn_len))
		diag("raw: alpn");
	r->ssl = SSL_new(r->ctx);
	r->in = BIO_new(BIO_s_mem());
	r->out = BIO_new(BIO_s_mem());
	SSL_set_bio(r->ssl, r->in, r->out);
	if (server)
		SSL_set_accept_state(r->ssl);
	else
		SSL_set_connect_state(r->ssl);
}

/* Handshake between a raw endpoint and t; returns t's result. */
static int raw_handshake(raw_t *r, zr_tls_t *t, bool t_first)
{
	int rc = 0;
	for (int round = 0; round < 20 && rc == 0; round++) {
		if (!t_first || round) {
			SSL_do_handshake(r->ssl);
			char buf[16384];
			int n;
			while ((n = BIO_read(r->out, buf, sizeof(buf))) > 0)
				if (zr_tls_feed(t, buf, (size_t)n))
					return -ENOMEM;
		}
		rc = zr_tls_handshake(t);
		const void *p;
		size_t n;
		while ((n = zr_tls_out_peek(t, &p))) {
			BIO_write(r->in, p, (int)n);
			zr_tls_out_consume(t, n);
		}
	}
	SSL_do_handshake(r->ssl); /* takes in t's alert, if any */
	return rc;
}

static void test_raw_peers(zr_identity_store_t *st)
{
	raw_t r;
	zr_tls_t *t;
	int rc;

	raw_init(&r, true, "expired", NULL, 0);
	t = client_of(st, SA "client", SA "server");
	rc = raw_handshake(&r, t, true);
	ok(rc == -EACCES && has(zr_tls_error(t), "expired"), "client refuses an expired server certificate: %s",
	   zr_tls_error(t));
	zr_tls_free(t);
	raw_free(&r);

	raw_init(&r, false, "client", NULL, 0);
	t = server_of(st, SA "server");
	rc = raw_handshake(&r, t, false);
	ok(rc == -EPROTO && has(zr_tls_error(t), "ALPN"), "server refuses a client offering no ALPN: %s",
	   zr_tls_error(t));
	unsigned long e = ERR_peek_error();
	ok(e && has(ERR_reason_error_string(e), "no application protocol"),
	   "... with the no_application_protocol alert");
	zr_tls_free(t);
	raw_free(&r);

	raw_init(&r, false, "client", "\x08http/1.1", 9);
	t = server_of(st, SA "server");
	rc = raw_handshake(&r, t, false);
	ok(rc == -EPROTO && has(zr_tls_error(t), "ALPN"), "server refuses a client offering only http/1.1: %s",
	   zr_tls_error(t));
	zr_tls_free(t);
	raw_free(&r);

	raw_init(&r, false, NULL, "\x02h2", 3);
	t = server_of(st, SA "server");
	rc = raw_handshake(&r, t, false);
	ok(rc == -EACCES && has(zr_tls_error(t), "certificate"), "server refuses a client without certificate: %s",
	   zr_tls_error(t));
	zr_tls_free(t);
	raw_free(&r);

	raw_init(&r, false, "nospiffe", "\x02h2", 3);
	t = server_of(st, SA "server");
	rc = raw_handshake(&r, t, false);
	ok(rc == -EACCES && has(zr_tls_error(t), "no SPIFFE identity"), "server refuses a client without SPIFFE ID: %s",
	   zr_tls_error(t));
	zr_tls_free(t);
	raw_free(&r);

	raw_init(&r, true, "server", NULL, 0);
	t = client_of(st, SA "client", SA "server");
	rc = raw_handshake(&r, t, true);
	ok(rc == 1 && SSL_version(r.ssl) == TLS1_3_VERSION, "client against a plain OpenSSL server: TLS 1.3");
	ok(SSL_get0_peer_certificate(r.ssl) != NULL, "client presented its certificate");
	/* KeyUpdate (update requested): OpenSSL sends its own before our next
	 * record, as RFC 8446 4.6.3 asks. */
	unsigned char buf[64];
	size_t n;
	int ku = SSL_key_update(r.ssl, SSL_KEY_UPDATE_REQUESTED) && SSL_write_ex(r.ssl, "after update", 12, &n);
	char rec[16384];
	int m;
	while ((m = BIO_read(r.out, rec, sizeof(rec))) > 0)
		ku = ku && !zr_tls_feed(t, rec, (size_t)m);
	ssize_t got = zr_tls_read(t, buf, sizeof(buf));
	ok(ku && got == 12 && !memcmp(buf, "after update", 12), "data after the peer's KeyUpdate read");
	const void *p;
	while ((n = zr_tls_out_peek(t, &p))) {
		BIO_write(r.in, p, (int)n);
		zr_tls_out_consume(t, n);
	}
	ku = zr_tls_write(t, "new keys", 8) == 0;
	while ((n = zr_tls_out_peek(t, &p))) {
		BIO_write(r.in, p, (int)n);
		zr_tls_out_consume(t, n);
	}
	ok(ku && SSL_read_ex(r.ssl, buf, sizeof(buf), &n) && n == 8 && !memcmp(buf, "new keys", 8),
	   "our KeyUpdate and data after it reach the peer");
	zr_tls_free(t);
	raw_free(&r);
}

static void test_suites(void)
{
	cfgb_t b;
	char err[1024];
	int rc;
	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, SA "server", "server", "server");
	b.suites[0] = (char *)"TLS_CHACHA20_POLY1305_SHA256";
	b.cfg.tls.cipher_suites = b.suites;
	b.cfg.tls.n_cipher_suites = 1;
	b.cfg.tls.openssl_provider = (char *)"default";
	zr_identity_store_t *st = load(&b, &rc, err, sizeof(err));
	if (!ok(rc == 0, "store with one cipher suite and provider 'default' loads: %s", err))
		return;
	raw_t r;
	raw_init(&r, false, "client", "\x02h2", 3);
	zr_tls_t *t = server_of(st, SA "server");
	rc = raw_handshake(&r, t, false);
	ok(rc == 1 && !strcmp(SSL_CIPHER_get_name(SSL_get_current_cipher(r.ssl)), "TLS_CHACHA20_POLY1305_SHA256"),
	   "configured cipher suite negotiated");
	zr_tls_free(t);
	raw_free(&r);
	zr_identity_store_unref(st);
}

/* Python's ssl module as the server, over a socketpair: a second TLS driver. */
static void test_python(zr_identity_store_t *st)
{
	if (access("/usr/bin/python3", X_OK)) {
		skip("no /usr/bin/python3");
		return;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
		skip("socketpair");
		return;
	}
	char script[16384];
	snprintf(script, sizeof(script),
		 "import socket, ssl\n"
		 "c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
		 "c.minimum_version = ssl.TLSVersion.TLSv1_3\n"
		 "c.load_cert_chain('%s', '%s')\n"
		 "c.load_verify_locations('%s')\n"
		 "c.verify_mode = ssl.CERT_REQUIRED\n"
		 "c.set_alpn_protocols(['h2'])\n"
		 "s = c.wrap_socket(socket.socket(fileno=3), server_side=True)\n"
		 "uri = [v for k, v in s.getpeercert()['subjectAltName'] if k == 'URI'][0]\n"
		 "data = b''\n"
		 "while not data.endswith(b'\\n'):\n"
		 "    data += s.recv(4096)\n"
		 "s.sendall(('%%s %%s ' %% (s.selected_alpn_protocol(), uri)).encode() + data.upper())\n"
		 "s.unwrap()\n",
		 path("server.pem"), path("server.key"), path("root-cert.pem"));
	pid_t pid = fork();
	if (pid == 0) {
		dup2(sv[1], 3);
		execl("/usr/bin/python3", "python3", "-c", script, (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	struct timeval tv = {.tv_sec = 20}; /* a stuck python fails the test, not the run */
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	zr_tls_t *t = client_of(st, SA "client", SA "server");
	char got[256] = "";
	size_t len = 0;
	int rc = 0;
	bool sent = false, closed = false;
	while (!closed) {
		const void *p;
		size_t n;
		while ((n = zr_tls_out_peek(t, &p))) {
			ssize_t w = write(sv[0], p, n);
			if (w <= 0)
				break;
			zr_tls_out_consume(t, (size_t)w);
		}
		if (rc == 0) {
			rc = zr_tls_handshake(t);
			if (rc < 0)
				break;
			if (rc || zr_tls_out_pending(t))
				continue;
		}
		if (rc == 1 && !sent) {
			sent = !zr_tls_write(t, "hello over tls\n", 15);
			continue;
		}
		ssize_t r = -EAGAIN;
		while (rc == 1 && (r = zr_tls_read(t, got + len, sizeof(got) - 1 - len)) > 0)
			len += (size_t)r;
		if (rc == 1 && r != -EAGAIN) {
			closed = true;
			continue;
		}
		char buf[16384];
		ssize_t m = read(sv[0], buf, sizeof(buf));
		if (m <= 0 || zr_tls_feed(t, buf, (size_t)m))
			break;
	}
	got[len] = '\0';
	ok(rc == 1 && !strcmp(zr_tls_peer_id(t), SA "server"), "python server: handshake, peer %s", zr_tls_peer_id(t));
	is_str(got, "h2 " SA "client HELLO OVER TLS\n", "python server saw h2 and our identity, echoed");
	ok(closed, "python's close_notify seen");
	zr_tls_free(t);
	close(sv[0]);
	if (!closed)
		kill(pid, SIGKILL);
	int status;
	waitpid(pid, &status, 0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "python server exited cleanly");
}

/* zr_tls_lend: records read in place from a lent buffer, the unread tail
 * (an incomplete record) copied on unlend, the stream byte-exact. */
static void test_lend(zr_identity_store_t *st)
{
	zr_tls_t *c = client_of(st, SA "client", SA "server");
	zr_tls_t *s = server_of(st, SA "server");
	int rc_c, rc_s;
	handshake(c, s, &rc_c, &rc_s);
	if (!ok(rc_c == 1 && rc_s == 1, "lend: handshake")) {
		zr_tls_free(c);
		zr_tls_free(s);
		return;
	}
	static unsigned char msg[100000], wire[200000], got[100000];
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (unsigned char)(i * 7 + 3);
	ok(zr_tls_write(c, msg, sizeof(msg)) == 0, "lend: 100000 bytes written");
	size_t wlen = 0, n;
	const void *p;
	while ((n = zr_tls_out_peek(c, &p)) && wlen + n <= sizeof(wire)) {
		memcpy(wire + wlen, p, n);
		zr_tls_out_consume(c, n);
		wlen += n;
	}
	/* Lend it in pieces that end mid-record, scribbling over each piece
	 * after unlend as a receive buffer handed back would be. */
	size_t off = 0, have = 0;
	bool exact = true;
	while (off < wlen) {
		size_t piece = wlen - off < 12345 ? wlen - off : 12345;
		static unsigned char buf[12345];
		memcpy(buf, wire + off, piece);
		zr_tls_lend(s, buf, piece);
		ssize_t r = -EAGAIN;
		while (have < sizeof(got) && (r = zr_tls_read(s, got + have, sizeof(got) - have)) > 0)
			have += (size_t)r;
		exact &= r == -EAGAIN || (r > 0 && have == sizeof(got));
		exact &= zr_tls_unlend(s) == 0;
		memset(buf, 0xee, sizeof(buf));
		off += piece;
	}
	ok(exact && have == sizeof(msg) && memcmp(got, msg, sizeof(msg)) == 0,
	   "lend: %zu bytes read back byte-exact from lent pieces", have);
	zr_tls_free(c);
	zr_tls_free(s);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	zr_log_set_level(ZR_LOG_WARN); /* the expired-certificate warning shows in the log */
	certs_setup("zring-tls");
	test_spiffe();
	test_load_errors();

	cfgb_t b, fb;
	char err[1024];
	int rc;
	cfg_init(&b, "root-cert.pem");
	cfg_add(&b, SA "client", "client", "client");
	cfg_add(&b, SA "server", "server", "server");
	cfg_add(&b, SA "other", "other", "other");
	cfg_add(&b, SA "chained", "chained", "chained");
	cfg_add(&b, "spiffe://other.local/ns/default/sa/client", "other-td", "other-td");
	zr_identity_store_t *st = load(&b, &rc, err, sizeof(err));
	if (!ok(rc == 0 && st, "identity store loads: %s", err)) {
		certs_cleanup();
		return done_testing();
	}
	is(zr_identity_store_count(st), 5, "5 identities");
	const zr_cert_info_t *info = zr_identity_store_info(st, 1);
	ok(info && !strcmp(info->identity, SA "server") && has(info->cert_path, "server.pem") && !info->expired &&
		   info->not_before <= time(NULL) && info->not_after > time(NULL) + 86400 * 365,
	   "cert info of server");
	ok(zr_identity_store_has(st, SA "client") && !zr_identity_store_has(st, SA "nobody"), "has()");

	/* Trusts both CAs, so that only the server's check can refuse. */
	char both[9000];
	snprintf(both, sizeof(both), "cat %s %s > %s", path("root-cert.pem"), path("other-root-cert.pem"),
		 path("both-roots.pem"));
	if (system(both))
		diag("cannot write both-roots.pem");
	cfg_init(&fb, "both-roots.pem");
	cfg_add(&fb, "spiffe://other.local/ns/default/sa/client", "other-ca", "other-ca");
	zr_identity_store_t *foreign = load(&fb, &rc, err, sizeof(err));
	ok(rc == 0, "store of the other CA loads: %s", err);

	zr_identity_store_ref(st);
	test_happy(st);
	test_lend(st);
	test_refusals(st, foreign);
	test_raw_peers(st);
	test_suites();
	test_python(st);
	zr_identity_store_unref(st);
	zr_identity_store_unref(st);
	zr_identity_store_unref(foreign);
	zr_tls_thread_cleanup();
	certs_cleanup();
	return done_testing();
}
