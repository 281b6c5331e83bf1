/* TLS 1.3 connections over memory: a custom BIO reads the fed ciphertext
 * from a byte queue and writes records into a chain of fixed-size chunks, so
 * OpenSSL's output lands once in memory the caller can send from without
 * another copy. Peer checks (chain, SPIFFE ID, policy, ALPN) run inside the
 * handshake so that OpenSSL answers a refused peer with an alert. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "crypto/tls-int.h"

/* A few records per chunk; a record may straddle two chunks. */
#define CHUNK_SIZE	(64 * 1024)
#define FREE_CHUNKS_MAX 8
#define IN_MIN		(17 * 1024) /* one full record */
#define PEER_ID_MAX	2048	    /* SPIFFE's limit on an ID */

struct chunk {
	struct chunk *next;
	size_t head, tail; /* sent up to head, written up to tail */
	unsigned char data[CHUNK_SIZE];
};

enum state {
	HANDSHAKING,
	ESTABLISHED,
	FAILED
};

struct zr_tls {
	SSL *ssl;
	bool server, oom;
	enum state state;
	int fail_rc;

	unsigned char *in; /* fed ciphertext not yet read by OpenSSL: in[in_head..in_tail) */
	size_t in_head, in_tail, in_cap;
	const unsigned char *lent; /* zr_tls_lend: read after `in`, until zr_tls_unlend */
	size_t lent_len;
	struct chunk *out_first, *out_last;
	size_t out_len;

	char **allowed_ids; /* client policy (one allocation with the strings) */
	size_t n_allowed_ids;
	char trust_domain[256]; /* server policy */

	char alpn[16];
	char peer_id[PEER_ID_MAX + 1];
	char error[PEER_ID_MAX + 256];
};

/* Chunks freed by connections of this (worker) thread, for the next one. */
static __thread struct chunk *free_chunks;
static __thread unsigned n_free_chunks;

static struct chunk *chunk_get(void)
{
	struct chunk *c = free_chunks;
	if (c) {
		free_chunks = c->next;
		n_free_chunks--;
	} else if (!(c = malloc(sizeof(*c)))) {
		return NULL;
	}
	c->next = NULL;
	c->head = c->tail = 0;
	return c;
}

static void chunk_put(struct chunk *c)
{
	if (n_free_chunks >= FREE_CHUNKS_MAX) {
		free(c);
		return;
	}
	c->next = free_chunks;
	free_chunks = c;
	n_free_chunks++;
}

void zr_tls_thread_cleanup(void)
{
	while (free_chunks) {
		struct chunk *c = free_chunks;
		free_chunks = c->next;
		free(c);
	}
	n_free_chunks = 0;
}

static int out_append(zr_tls_t *tls, const void *data, size_t len)
{
	const unsigned char *p = data;
	while (len) {
		struct chunk *c = tls->out_last;
		if (!c || c->tail == CHUNK_SIZE) {
			if (!(c = chunk_get()))
				return -ENOMEM;
			if (tls->out_last)
				tls->out_last->next = c;
			else
				tls->out_first = c;
			tls->out_last = c;
		}
		size_t n = CHUNK_SIZE - c->tail < len ? CHUNK_SIZE - c->tail : len;
		memcpy(c->data + c->tail, p, n);
		c->tail += n;
		tls->out_len += n;
		p += n;
		len -= n;
	}
	return 0;
}

size_t zr_tls_out_peek(zr_tls_t *tls, const void **data)
{
	struct chunk *c = tls->out_first;
	if (!c) {
		*data = NULL;
		return 0;
	}
	*data = c->data + c->head;
	return c->tail - c->head;
}

void zr_tls_out_consume(zr_tls_t *tls, size_t len)
{
	while (len && tls->out_first) {
		struct chunk *c = tls->out_first;
		size_t n = c->tail - c->head < len ? c->tail - c->head : len;
		c->head += n;
		tls->out_len -= n;
		len -= n;
		/* Everything in it was sent, so no send can still point into it. */
		if (c->head == c->tail) {
			tls->out_first = c->next;
			if (!tls->out_first)
				tls->out_last = NULL;
			chunk_put(c);
		}
	}
}

size_t zr_tls_out_pending(const zr_tls_t *tls)
{
	return tls->out_len;
}

int zr_tls_feed(zr_tls_t *tls, const void *data, size_t len)
{
	size_t used = tls->in_tail - tls->in_head;
	if (tls->in_tail + len > tls->in_cap) {
		if (used && tls->in_head)
			memmove(tls->in, tls->in + tls->in_head, used);
		tls->in_head = 0;
		tls->in_tail = used;
		if (used + len > tls->in_cap) {
			size_t cap = tls->in_cap ? tls->in_cap * 2 : IN_MIN;
			while (cap < used + len)
				cap *= 2;
			unsigned char *p = realloc(tls->in, cap);
			if (!p)
				return -ENOMEM;
			tls->in = p;
			tls->in_cap = cap;
		}
	}
	memcpy(tls->in + tls->in_tail, data, len);
	tls->in_tail += len;
	return 0;
}

void zr_tls_lend(zr_tls_t *tls, const void *data, size_t len)
{
	tls->lent = data;
	tls->lent_len = len;
}

int zr_tls_unlend(zr_tls_t *tls)
{
	const void *rest = tls->lent;
	size_t n = tls->lent_len;
	tls->lent = NULL;
	tls->lent_len = 0;
	return n ? zr_tls_feed(tls, rest, n) : 0;
}

/* The BIO: both directions of one connection, BIO data = the zr_tls_t.
 * Input is the owned queue first (older bytes), then the lent region. */
static int bio_read(BIO *b, char *buf, size_t len, size_t *done)
{
	zr_tls_t *tls = BIO_get_data(b);
	size_t avail = tls->in_tail - tls->in_head;
	BIO_clear_retry_flags(b);
	if (!avail && !tls->lent_len) {
		BIO_set_retry_read(b);
		*done = 0;
		return 0;
	}
	size_t n = 0;
	if (avail) {
		n = avail < len ? avail : len;
		memcpy(buf, tls->in + tls->in_head, n);
		tls->in_head += n;
		if (tls->in_head == tls->in_tail)
			tls->in_head = tls->in_tail = 0;
	}
	if (n < len && tls->lent_len) {
		size_t m = tls->lent_len < len - n ? tls->lent_len : len - n;
		memcpy(buf + n, tls->lent, m);
		tls->lent += m;
		tls->lent_len -= m;
		n += m;
	}
	*done = n;
	return 1;
}

static int bio_write(BIO *b, const char *buf, size_t len, size_t *done)
{
	zr_tls_t *tls = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (out_append(tls, buf, len)) {
		tls->oom = true;
		*done = 0;
		return 0;
	}
	*done = len;
	return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	zr_tls_t *tls = BIO_get_data(b);
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_PENDING:
		return (long)(tls->in_tail - tls->in_head + tls->lent_len);
	case BIO_CTRL_WPENDING:
		return (long)tls->out_len;
	default: /* EOF, KTLS, DGRAM, ...: no */
		return 0;
	}
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
	int type = BIO_get_new_index();
	BIO_METHOD *m = type < 0 ? NULL : BIO_meth_new(type | BIO_TYPE_SOURCE_SINK, "zring tls memory");
	if (!m)
		return;
	BIO_meth_set_read_ex(m, bio_read);
	BIO_meth_set_write_ex(m, bio_write);
	BIO_meth_set_ctrl(m, bio_ctrl);
	BIO_meth_set_create(m, bio_create);
	bio_method = m;
}

static int set_error(zr_tls_t *tls, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_error(zr_tls_t *tls, int rc, const char *fmt, ...)
{
	/* The first reason is the cause; what OpenSSL reports after it is
	 * consequence ("certificate verify failed"). */
	if (!tls->error[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(tls->error, sizeof(tls->error), fmt, ap);
		va_end(ap);
		tls->fail_rc = rc;
	}
	return rc;
}

static zr_tls_t *tls_of(SSL *ssl)
{
	return ssl ? SSL_get_app_data(ssl) : NULL;
}

static int check_peer(zr_tls_t *tls, X509 *leaf)
{
	char uri[PEER_ID_MAX + 1];
	zr_spiffe_id_t id;
	int rc = zr_cert_spiffe_uri(leaf, uri, sizeof(uri));
	if (rc == -ENOENT)
		return set_error(tls, -EACCES, "no SPIFFE identity");
	if (rc == -EEXIST)
		return set_error(tls, -EACCES, "more than one SPIFFE identity");
	if (rc || zr_spiffe_parse(uri, &id))
		return set_error(tls, -EACCES, "bad SPIFFE identity");
	if (tls->server) {
		if (strcmp(id.trust_domain, tls->trust_domain))
			return set_error(tls, -EACCES, "trust domain %s != %s", id.trust_domain, tls->trust_domain);
	} else {
		bool allowed = false;
		for (size_t i = 0; !allowed && i < tls->n_allowed_ids; i++)
			allowed = !strcmp(uri, tls->allowed_ids[i]);
		if (!allowed)
			return set_error(tls, -EACCES, "peer identity %s not allowed", uri);
	}
	memcpy(tls->peer_id, uri, strlen(uri) + 1);
	return 0;
}

/* Runs per certificate of the peer's chain, root first; OpenSSL has done
 * its own checks of that certificate (`ok`). */
static int verify_cb(int ok, X509_STORE_CTX *sc)
{
	zr_tls_t *tls = tls_of(X509_STORE_CTX_get_ex_data(sc, SSL_get_ex_data_X509_STORE_CTX_idx()));
	if (!tls)
		return 0;
	int depth = X509_STORE_CTX_get_error_depth(sc);
	if (!ok) {
		int e = X509_STORE_CTX_get_error(sc);
		if (e == X509_V_ERR_CERT_HAS_EXPIRED)
			set_error(tls, -EACCES, depth ? "CA certificate expired" : "certificate expired");
		else
			set_error(tls, -EACCES, "bad certificate: %s", X509_verify_cert_error_string(e));
		return 0;
	}
	if (depth || !check_peer(tls, X509_STORE_CTX_get_current_cert(sc)))
		return 1;
	X509_STORE_CTX_set_error(sc, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

static const unsigned char alpn_h2[] = {2, 'h', '2'};

/* Without any ALPN extension the select callback never runs. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	const unsigned char *ext;
	size_t len;
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len))
		return SSL_CLIENT_HELLO_SUCCESS;
	set_error(tls_of(ssl), -EPROTO, "peer did not offer ALPN h2");
	*alert = SSL_AD_NO_APPLICATION_PROTOCOL;
	return SSL_CLIENT_HELLO_ERROR;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
			  unsigned inlen, void *arg)
{
	unsigned char *sel;
	unsigned char sel_len;
	if (SSL_select_next_proto(&sel, &sel_len, alpn_h2, sizeof(alpn_h2), in, inlen) == OPENSSL_NPN_NEGOTIATED) {
		*out = sel;
		*outlen = sel_len;
		return SSL_TLSEXT_ERR_OK;
	}
	set_error(tls_of(ssl), -EPROTO, "peer did not offer ALPN h2");
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int zr_tls_ctx_setup(SSL_CTX *ctx, bool server, const char *suites)
{
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
		return -EINVAL;
	if (suites && !SSL_CTX_set_ciphersuites(ctx, suites))
		return -EINVAL;
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* Releasing buffers between records costs a malloc per record. */
	SSL_CTX_clear_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* Send the chain as configured (like ztunnel), not one OpenSSL builds
	 * from the trust anchors: the peer has the root already. */
	SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), verify_cb);
	if (server) {
		SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
	} else if (SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2))) { /* 0 = success */
		return -EINVAL;
	}
	return 0;
}

static int copy_policy(zr_tls_t *tls, const zr_tls_peer_policy_t *policy, char *err, size_t cap)
{
	if (tls->server) {
		if (!policy || !policy->trust_domain || !*policy->trust_domain ||
		    strlen(policy->trust_domain) >= sizeof(tls->trust_domain)) {
			snprintf(err, cap, "server policy needs a trust domain");
			return -EINVAL;
		}
		strcpy(tls->trust_domain, policy->trust_domain);
		return 0;
	}
	/* An empty list would accept nobody: say so now rather than at the peer. */
	if (!policy || !policy->n_allowed_ids) {
		snprintf(err, cap, "client policy allows no peer identity");
		return -EINVAL;
	}
	size_t size = policy->n_allowed_ids * sizeof(char *);
	for (size_t i = 0; i < policy->n_allowed_ids; i++)
		size += strlen(policy->allowed_ids[i]) + 1;
	if (!(tls->allowed_ids = malloc(size))) {
		snprintf(err, cap, "out of memory");
		return -ENOMEM;
	}
	char *s = (char *)(tls->allowed_ids + policy->n_allowed_ids);
	for (size_t i = 0; i < policy->n_allowed_ids; i++) {
		size_t len = strlen(policy->allowed_ids[i]) + 1;
		tls->allowed_ids[i] = memcpy(s, policy->allowed_ids[i], len);
		s += len;
	}
	tls->n_allowed_ids = policy->n_allowed_ids;
	return 0;
}

zr_tls_t *zr_tls_new(zr_identity_store_t *st, const char *identity, bool server, const zr_tls_peer_policy_t *policy,
		     char *err, size_t cap)
{
	SSL_CTX *ctx = zr_identity_store_ctx(st, identity, server);
	if (!ctx) {
		snprintf(err, cap, "identity %s has no usable certificate", identity ? identity : "(none)");
		return NULL;
	}
	pthread_once(&bio_once, bio_method_init);
	zr_tls_t *tls = calloc(1, sizeof(*tls));
	if (!tls || !bio_method) {
		free(tls);
		snprintf(err, cap, "out of memory");
		return NULL;
	}
	tls->server = server;
	if (copy_policy(tls, policy, err, cap)) {
		zr_tls_free(tls);
		return NULL;
	}
	BIO *bio = NULL;
	if (!(tls->ssl = SSL_new(ctx)) || !(bio = BIO_new(bio_method))) {
		ERR_clear_error();
		zr_tls_free(tls);
		snprintf(err, cap, "out of memory");
		return NULL;
	}
	BIO_set_data(bio, tls);
	SSL_set_bio(tls->ssl, bio, bio); /* one reference for both directions */
	SSL_set_app_data(tls->ssl, tls);
	if (server)
		SSL_set_accept_state(tls->ssl);
	else
		SSL_set_connect_state(tls->ssl);
	return tls;
}

void zr_tls_free(zr_tls_t *tls)
{
	if (!tls)
		return;
	SSL_free(tls->ssl);
	zr_tls_out_consume(tls, tls->out_len);
	free(tls->in);
	free(tls->allowed_ids);
	free(tls);
}

/* After SSL_ERROR_SSL/SYSCALL: the reason, the errno, and no stale errors
 * left on this thread's queue. Whatever alert OpenSSL sent is already in the
 * output. */
static int fail_openssl(zr_tls_t *tls, const char *op, int ssl_err)
{
	char why[512];
	tls->state = FAILED;
	if (tls->oom) {
		ERR_clear_error();
		return set_error(tls, -ENOMEM, "%s: out of memory", op);
	}
	if (tls->error[0]) {
		ERR_clear_error();
		return tls->fail_rc;
	}
	unsigned long e = ERR_peek_error();
	/* Reasons from SSL_AD_REASON_OFFSET up are alerts the peer sent. */
	int rc = ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET ? -ECONNRESET : -EPROTO;
	if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
		rc = -EACCES; /* an identity failure, like a refused certificate */
	if (ssl_err == SSL_ERROR_SYSCALL && !e)
		return set_error(tls, -EPROTO, "%s: unexpected end of stream", op);
	return set_error(tls, rc, "%s: %s", op, zr_openssl_reason(why, sizeof(why)));
}

int zr_tls_handshake(zr_tls_t *tls)
{
	if (tls->state != HANDSHAKING)
		return tls->state == ESTABLISHED ? 1 : tls->fail_rc;
	ERR_clear_error();
	int r = SSL_do_handshake(tls->ssl);
	if (r != 1) {
		int e = SSL_get_error(tls->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return 0;
		return fail_openssl(tls, "handshake", e);
	}
	const unsigned char *alpn;
	unsigned alpn_len;
	SSL_get0_alpn_selected(tls->ssl, &alpn, &alpn_len);
	tls->state = FAILED;
	if (alpn_len != 2 || memcmp(alpn, "h2", 2))
		return set_error(tls, -EPROTO, "peer did not negotiate ALPN h2");
	/* verify_cb decides; this guards against a path that skipped it. */
	if (SSL_get_verify_result(tls->ssl) != X509_V_OK || !tls->peer_id[0] || !SSL_get0_peer_certificate(tls->ssl))
		return set_error(tls, -EACCES, "peer not verified");
	memcpy(tls->alpn, "h2", 3);
	tls->state = ESTABLISHED;
	return 1;
}

const char *zr_tls_error(const zr_tls_t *tls)
{
	return tls->error;
}

const char *zr_tls_peer_id(const zr_tls_t *tls)
{
	return tls->state == ESTABLISHED ? tls->peer_id : "";
}

const char *zr_tls_alpn(const zr_tls_t *tls)
{
	return tls->alpn;
}

ssize_t zr_tls_read(zr_tls_t *tls, void *buf, size_t cap)
{
	if (tls->state != ESTABLISHED)
		return tls->state == FAILED ? tls->fail_rc : -ENOTCONN;
	if (!cap)
		return -EINVAL;
	size_t n;
	ERR_clear_error();
	if (SSL_read_ex(tls->ssl, buf, cap, &n))
		return (ssize_t)n;
	int e = SSL_get_error(tls->ssl, 0);
	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		return fail_openssl(tls, "read", e);
	}
}

int zr_tls_write(zr_tls_t *tls, const void *data, size_t len)
{
	if (tls->state != ESTABLISHED)
		return tls->state == FAILED ? tls->fail_rc : -ENOTCONN;
	const unsigned char *p = data;
	while (len) {
		size_t n;
		ERR_clear_error();
		if (!SSL_write_ex(tls->ssl, p, len, &n)) {
			int e = SSL_get_error(tls->ssl, 0);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return -EAGAIN;
			return fail_openssl(tls, "write", e);
		}
		p += n;
		len -= n;
	}
	return 0;
}

void zr_tls_close_notify(zr_tls_t *tls)
{
	if (tls->state == ESTABLISHED)
		SSL_shutdown(tls->ssl);
	ERR_clear_error();
}
