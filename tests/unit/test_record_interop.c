/* zring's record layer against OpenSSL's own, both ways, over memory: a
 * zr_tls_t (handshake by OpenSSL, records by zring) talks to a plain
 * OpenSSL SSL object with certificates from tests/certs/gen.sh. Bulk data,
 * KeyUpdate either way, close_notify, truncation and tampering, on every
 * TLS 1.3 cipher suite and every usable AEAD backend. Runs from the
 * repository root (meson workdir) or tests/unit. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "crypto/record.h"
#include "crypto/tls-int.h"
#include "io/log.h"
#include "tap.h"
#include "tls_poll.h"
#include "certs_fixture.h"
#include "raw_tls.h"

#define SA "spiffe://cluster.local/ns/default/sa/"

static zr_identity_store_t *load_store(const char *suite)
{
	static zr_identity_cert_t certs[2];
	static char strs[2][3][4300], ca[4300];
	static const char *names[2] = {"client", "server"};
	zr_config_t cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.trust_domain = (char *)"cluster.local";
	snprintf(ca, sizeof(ca), "%s", path("root-cert.pem"));
	cfg.identity.ca_certificates = ca;
	cfg.identity.certificates = certs;
	for (size_t i = 0; i < 2; i++) {
		snprintf(strs[i][0], sizeof(strs[i][0]), SA "%s", names[i]);
		snprintf(strs[i][1], sizeof(strs[i][1]), "%s.pem", path(names[i]));
		snprintf(strs[i][2], sizeof(strs[i][2]), "%s.key", path(names[i]));
		certs[i] = (zr_identity_cert_t){strs[i][0], strs[i][1], strs[i][2]};
	}
	cfg.identity.n_certificates = 2;
	char *suites_cfg[1] = {(char *)suite};
	if (suite) {
		cfg.tls.cipher_suites = suites_cfg;
		cfg.tls.n_cipher_suites = 1;
	}
	zr_identity_store_t *st = NULL;
	char err[1024];
	if (zr_identity_store_load(&cfg, &st, err, sizeof(err)))
		diag("store: %s", err);
	return st;
}

static void raw_init(raw_t *r, bool server, const char *suite)
{
	char p[4300];
	r->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	SSL_CTX_set_min_proto_version(r->ctx, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(r->ctx, suite);
	snprintf(p, sizeof(p), "%s.pem", path(server ? "server" : "client"));
	if (SSL_CTX_use_certificate_chain_file(r->ctx, p) != 1)
		diag("raw: cannot load %s", p);
	snprintf(p, sizeof(p), "%s.key", path(server ? "server" : "client"));
	if (SSL_CTX_use_PrivateKey_file(r->ctx, p, SSL_FILETYPE_PEM) != 1)
		diag("raw: cannot load %s", p);
	SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, raw_accept_any);
	if (server) /* and OpenSSL's default two session tickets, which we skip */
		SSL_CTX_set_alpn_select_cb(r->ctx, raw_alpn, NULL);
	else
		SSL_CTX_set_alpn_protos(r->ctx, (const unsigned char *)"\x02h2", 3);
	r->ssl = SSL_new(r->ctx);
	r->in = BIO_new(BIO_s_mem());
	r->out = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(r->in, -1); /* empty = want more, until told EOF */
	SSL_set_bio(r->ssl, r->in, r->out);
	if (server)
		SSL_set_accept_state(r->ssl);
	else
		SSL_set_connect_state(r->ssl);
}

/* raw's output into t, in pieces of `piece` bytes. */
static size_t to_zr(raw_t *r, zr_tls_t *t, size_t piece)
{
	static char buf[65536];
	size_t moved = 0;
	int n;
	piece = piece < sizeof(buf) ? piece : sizeof(buf);
	while ((n = BIO_read(r->out, buf, (int)piece)) > 0) {
		if (zr_tls_feed(t, buf, (size_t)n))
			break;
		moved += (size_t)n;
	}
	return moved;
}

static size_t to_raw(zr_tls_t *t, raw_t *r)
{
	const void *p;
	size_t n, moved = 0;
	while ((n = tls_peek(t, &p))) {
		BIO_write(r->in, p, (int)n);
		zr_tls_out_consume(t, n);
		moved += n;
	}
	return moved;
}

/* Handshake; when `early` the raw client writes data right after its
 * Finished, and both reach t in one feed. */
static int handshake(raw_t *r, zr_tls_t *t, bool t_server, bool early)
{
	int rc = 0;
	for (int round = 0; round < 20 && rc == 0; round++) {
		if (t_server || round) {
			if (SSL_do_handshake(r->ssl) == 1 && early && t_server) {
				size_t n;
				if (!SSL_write_ex(r->ssl, "early bird", 10, &n))
					diag("early write failed");
				early = false;
			}
			to_zr(r, t, 100000);
		}
		rc = zr_tls_handshake(t);
		to_raw(t, r);
	}
	if (!t_server)
		SSL_do_handshake(r->ssl);
	return rc;
}

/* Bytes one way with random write sizes on the sender and random read
 * sizes on the receiver; the raw peer may do a KeyUpdate on the way. */
static bool zr_to_raw(zr_tls_t *t, raw_t *r, size_t total, unsigned seed)
{
	uint8_t *tx = malloc(total), *rx = malloc(total);
	srand(seed);
	for (size_t i = 0; i < total; i++)
		tx[i] = (uint8_t)rand();
	size_t sent = 0, got = 0;
	bool good = true;
	while (good && got < total) {
		if (sent < total) {
			size_t n = rand() % 3 ? (size_t)rand() % 200 + 1 : (size_t)rand() % 100000 + 1;
			n = n < total - sent ? n : total - sent;
			good = !zr_tls_write(t, tx + sent, n);
			sent += n;
		}
		if (sent == total || rand() % 3 == 0)
			to_raw(t, r);
		size_t n;
		size_t cap = (size_t)rand() % 40000 + 1;
		while (got < total && SSL_read_ex(r->ssl, rx + got, cap < total - got ? cap : total - got, &n))
			got += n;
		int e = SSL_get_error(r->ssl, 0);
		if (e != SSL_ERROR_WANT_READ && got < total) {
			diag("raw read: %d %s", e, ERR_reason_error_string(ERR_peek_error()));
			good = false;
		}
		if (sent == total && got < total && !zr_tls_out_pending(t))
			good = false;
	}
	good = good && got == total && !memcmp(tx, rx, total);
	free(tx);
	free(rx);
	return good;
}

static bool raw_to_zr(raw_t *r, zr_tls_t *t, size_t total, unsigned seed, bool key_update)
{
	uint8_t *tx = malloc(total), *rx = malloc(total);
	srand(seed);
	for (size_t i = 0; i < total; i++)
		tx[i] = (uint8_t)rand();
	size_t sent = 0, got = 0;
	bool good = true;
	while (good && got < total) {
		if (sent < total) {
			size_t n = rand() % 3 ? (size_t)rand() % 200 + 1 : (size_t)rand() % 100000 + 1, w;
			n = n < total - sent ? n : total - sent;
			if (key_update && sent >= total / 2) {
				good = SSL_key_update(r->ssl, SSL_KEY_UPDATE_REQUESTED) == 1;
				key_update = false;
			}
			good = good && SSL_write_ex(r->ssl, tx + sent, n, &w) && w == n;
			sent += n;
		}
		if (sent == total || rand() % 3 == 0)
			to_zr(r, t, (size_t)rand() % 30000 + 1);
		good = good && tls_read_random(t, rx, &got, total);
		if (sent == total && got < total && !BIO_ctrl_pending(r->out))
			good = false;
	}
	good = good && got == total && !memcmp(tx, rx, total);
	free(tx);
	free(rx);
	return good;
}

static bool raw_alert_seen(raw_t *r, const char *what)
{
	uint8_t buf[256];
	size_t n;
	ERR_clear_error();
	if (SSL_read_ex(r->ssl, buf, sizeof(buf), &n))
		return false;
	const char *reason = ERR_reason_error_string(ERR_peek_error());
	bool seen = reason && strstr(reason, what);
	if (!seen)
		diag("raw saw: %s", reason ? reason : "(no error)");
	ERR_clear_error();
	return seen;
}

static const char *const suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
				     "TLS_CHACHA20_POLY1305_SHA256"};

static zr_tls_t *new_tls(zr_identity_store_t *st, bool server)
{
	char err[256];
	const char *ids[] = {SA "server"};
	zr_tls_peer_policy_t pol = {.allowed_ids = ids, .n_allowed_ids = 1, .trust_domain = "cluster.local"};
	zr_tls_t *t = zr_tls_new(st, server ? SA "server" : SA "client", server, &pol, err, sizeof(err));
	if (!t)
		diag("zr_tls_new: %s", err);
	return t;
}

static void test_suite(zr_identity_store_t *st, const char *bname, const char *suite)
{
	for (int server = 0; server < 2; server++) {
		const char *role = server ? "zring server / OpenSSL client" : "zring client / OpenSSL server";
		raw_t r;
		raw_init(&r, !server, suite);
		zr_tls_t *t = new_tls(st, server);
		int rc = t ? handshake(&r, t, server, true) : -1;
		const SSL_CIPHER *c = SSL_get_current_cipher(r.ssl);
		if (!ok(rc == 1 && zr_tls_own_records(t) && c && !strcmp(SSL_CIPHER_get_name(c), suite),
			"%s %s %s: handshake, records on zring's layer", bname, suite, role)) {
			diag("%d %s", rc, t ? zr_tls_error(t) : "");
			zr_tls_free(t);
			raw_free(&r);
			continue;
		}
		if (server) {
			uint8_t buf[64];
			ssize_t n = tls_read(t, buf, sizeof(buf));
			ok(n == 10 && !memcmp(buf, "early bird", 10),
			   "%s %s %s: data in the same segment as the client's Finished read", bname, suite, role);
		}
		ok(zr_to_raw(t, &r, 4 << 20, 1) && raw_to_zr(&r, t, 4 << 20, 2, false),
		   "%s %s %s: 4 MiB each way, random sizes", bname, suite, role);
		uint64_t wseq = t->rec.wr.seq;
		bool answered = raw_to_zr(&r, t, 1 << 20, 3, true) && wseq > 0 && t->rec.wr.seq == 0;
		ok(answered && zr_to_raw(t, &r, 1 << 20, 4),
		   "%s %s %s: OpenSSL's KeyUpdate(update_requested) answered, data flows both ways", bname, suite,
		   role);
		zr_tls_set_key_update_interval(t, 7);
		ok(zr_to_raw(t, &r, 1 << 20, 5) && raw_to_zr(&r, t, 1 << 20, 6, false) && t->rec.wr.seq < 7,
		   "%s %s %s: our KeyUpdate every 7 records accepted by OpenSSL", bname, suite, role);

		/* close_notify both ways, each side still writing after the
		 * other's (half-close). */
		uint8_t buf[64];
		size_t n;
		zr_tls_close_notify(t);
		to_raw(t, &r);
		ok(!SSL_read_ex(r.ssl, buf, sizeof(buf), &n) && SSL_get_error(r.ssl, 0) == SSL_ERROR_ZERO_RETURN,
		   "%s %s %s: our close_notify: OpenSSL reads end of stream", bname, suite, role);
		ok(SSL_write_ex(r.ssl, "tail", 4, &n) && to_zr(&r, t, 1000) && tls_read(t, buf, sizeof(buf)) == 4,
		   "%s %s %s: OpenSSL still writes to us", bname, suite, role);
		SSL_shutdown(r.ssl);
		to_zr(&r, t, 1000);
		is(tls_read(t, buf, sizeof(buf)), 0, "%s %s %s: OpenSSL's close_notify reads as 0", bname, suite, role);
		zr_tls_free(t);
		raw_free(&r);
	}
}

/* Failures: each fails its own connection; a second one carries on. */
static void test_failures(zr_identity_store_t *st, const char *bname)
{
	const char *suite = suites[0];
	raw_t r, r2;
	raw_init(&r, true, suite);
	raw_init(&r2, true, suite);
	zr_tls_t *t = new_tls(st, false), *t2 = new_tls(st, false);
	if (!ok(t && t2 && handshake(&r, t, false, false) == 1 && handshake(&r2, t2, false, false) == 1,
		"%s: two connections up", bname)) {
		zr_tls_free(t);
		zr_tls_free(t2);
		raw_free(&r);
		raw_free(&r2);
		return;
	}
	/* A flipped bit in OpenSSL's record. */
	uint8_t rec[256], buf[256];
	size_t n;
	SSL_write_ex(r.ssl, "tamper me", 9, &n);
	to_zr(&r, t, 100000); /* the session tickets */
	tls_read(t, buf, sizeof(buf));
	SSL_write_ex(r.ssl, "tamper me", 9, &n);
	int len = BIO_read(r.out, rec, sizeof(rec));
	rec[len - 3] ^= 0x10;
	ssize_t got = zr_tls_feed(t, rec, (size_t)len) ? 1 : tls_read(t, buf, sizeof(buf));
	ok(got == -EBADMSG && strstr(zr_tls_error(t), "bad record mac"), "%s: flipped bit: -EBADMSG (%s)", bname,
	   zr_tls_error(t));
	to_raw(t, &r);
	ok(raw_alert_seen(&r, "bad record mac"), "%s: OpenSSL receives our bad_record_mac alert", bname);
	ok(zr_to_raw(t2, &r2, 300000, 7) && raw_to_zr(&r2, t2, 300000, 8, false),
	   "%s: the other connection keeps working", bname);
	zr_tls_free(t);
	raw_free(&r);

	/* A flipped bit in ours: OpenSSL refuses it. */
	raw_init(&r, true, suite);
	t = new_tls(st, false);
	if (handshake(&r, t, false, false) == 1 && !zr_tls_write(t, "tamper me", 9)) {
		const void *p;
		size_t plen = tls_peek(t, &p);
		memcpy(rec, p, plen);
		zr_tls_out_consume(t, plen);
		rec[7] ^= 0x01;
		BIO_write(r.in, rec, (int)plen);
		ok(raw_alert_seen(&r, "decryption failed or bad record mac") || raw_alert_seen(&r, "bad record mac"),
		   "%s: OpenSSL refuses our record with a flipped bit", bname);
		uint8_t out[64];
		to_zr(&r, t, 100000);
		got = tls_read(t, out, sizeof(out));
		ok(got == -ECONNRESET && strstr(zr_tls_error(t), "bad record mac"), "%s: and we read its alert: %s",
		   bname, zr_tls_error(t));
	} else {
		ok(false, "%s: third connection", bname);
	}
	zr_tls_free(t);
	raw_free(&r);

	/* Our record cut short, then the connection ends: OpenSSL errors and
	 * delivers nothing. OpenSSL's record cut short: we deliver nothing. */
	raw_init(&r, true, suite);
	t = new_tls(st, false);
	if (handshake(&r, t, false, false) == 1 && !zr_tls_write(t, "truncated", 9)) {
		SSL_write_ex(r.ssl, "truncated", 9, &n);
		to_zr(&r, t, 100000); /* the session tickets */
		tls_read(t, buf, sizeof(buf));
		SSL_write_ex(r.ssl, "truncated", 9, &n);
		len = BIO_read(r.out, rec, sizeof(rec));
		got = len < 2 || zr_tls_feed(t, rec, (size_t)len - 1) ? 1 : tls_read(t, buf, sizeof(buf));
		is(got, -EAGAIN, "%s: OpenSSL's record without its last byte: nothing delivered", bname);
		const void *p;
		size_t plen = tls_peek(t, &p);
		BIO_write(r.in, p, (int)plen - 4);
		zr_tls_out_consume(t, plen);
		BIO_set_mem_eof_return(r.in, 0);
		ok(!SSL_read_ex(r.ssl, buf, sizeof(buf), &n) && SSL_get_error(r.ssl, 0) != SSL_ERROR_WANT_READ,
		   "%s: our truncated record then EOF: OpenSSL reports an error", bname);
	} else {
		ok(false, "%s: fourth connection", bname);
	}
	zr_tls_free(t);
	raw_free(&r);
	ok(zr_to_raw(t2, &r2, 100000, 9), "%s: the other connection still works", bname);
	zr_tls_free(t2);
	raw_free(&r2);
}

/* OpenSSL's record layer chosen (tls.recordLayer: openssl), and async
 * handshakes (as with an offload provider, though none is loaded here: jobs
 * finish at once and no fd is ever waited on). */
static void test_modes(zr_identity_store_t *st, const zr_aead_backend_t *b)
{
	raw_t r;
	zr_tls_set_record_layer(b, false);
	raw_init(&r, true, suites[0]);
	zr_tls_t *t = new_tls(st, false);
	int rc = t ? handshake(&r, t, false, false) : -1;
	ok(rc == 1 && !zr_tls_own_records(t) && zr_to_raw(t, &r, 1 << 20, 10) && raw_to_zr(&r, t, 1 << 20, 11, true),
	   "OpenSSL's record layer when chosen: 1 MiB each way, KeyUpdate");
	zr_tls_free(t);
	raw_free(&r);

	zr_tls_set_record_layer(b, true);
	zr_tls_set_async(true);
	for (int server = 0; server < 2; server++) {
		raw_init(&r, !server, suites[0]);
		t = new_tls(st, server);
		int fds[4];
		rc = t ? handshake(&r, t, server, false) : -1;
		ok(rc == 1 && zr_tls_own_records(t) && zr_tls_async_fds(t, fds, 4) == 0 &&
			   zr_to_raw(t, &r, 100000, 12) && raw_to_zr(&r, t, 100000, 13, false),
		   "async mode (%s): handshake completes without a device, no fd to wait on, data flows",
		   server ? "server" : "client");
		zr_tls_free(t);
		raw_free(&r);
	}
	zr_tls_set_async(false);

	/* A suite no backend does (AES-128-CCM): the connection keeps
	 * OpenSSL's record layer. */
	zr_identity_store_t *ccm = load_store("TLS_AES_128_CCM_SHA256");
	raw_init(&r, true, "TLS_AES_128_CCM_SHA256");
	t = ccm ? new_tls(ccm, false) : NULL;
	rc = t ? handshake(&r, t, false, false) : -1;
	ok(rc == 1 && !zr_tls_own_records(t) && zr_to_raw(t, &r, 300000, 14) && raw_to_zr(&r, t, 300000, 15, true),
	   "AES-128-CCM negotiated: OpenSSL's record layer kept for that connection, data flows");
	zr_tls_free(t);
	raw_free(&r);
	if (ccm)
		zr_identity_store_unref(ccm);
}

static zr_record_crypto_t choice_of(const char *name)
{
	if (!strcmp(name, "ipsec-mb"))
		return ZR_RECORD_CRYPTO_IPSEC_MB;
	if (!strcmp(name, "dpdk"))
		return ZR_RECORD_CRYPTO_DPDK;
	return ZR_RECORD_CRYPTO_OPENSSL;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	zr_log_set_level(ZR_LOG_ERROR);
	certs_setup("zring-record");
	zr_identity_store_t *st = load_store(NULL);
	if (!ok(st != NULL, "identity store loads")) {
		certs_cleanup();
		return done_testing();
	}
	for (size_t i = 0; zr_aead_backends[i]; i++) {
		const zr_aead_backend_t *b = NULL;
		char err[256];
		if (zr_aead_select(choice_of(zr_aead_backends[i]->name), NULL, &b, err, sizeof(err)) || !b) {
			skip(err);
			continue;
		}
		zr_tls_set_record_layer(b, true);
		for (size_t s = 0; s < sizeof(suites) / sizeof(suites[0]); s++)
			if (b->supports(ZR_AEAD_AES_128_GCM + (zr_aead_alg_t)s))
				test_suite(st, b->name, suites[s]);
		test_failures(st, b->name);
		if (!zr_aead_backends[i + 1])
			test_modes(st, b);
	}
	zr_identity_store_unref(st);
	zr_aead_thread_cleanup();
	zr_tls_thread_cleanup();
	certs_cleanup();
	return done_testing();
}
