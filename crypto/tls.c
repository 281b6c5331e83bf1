/* TLS 1.3 connections over memory: a custom BIO reads the fed ciphertext
 * from a byte queue and writes records into a chain of fixed-size chunks, so
 * OpenSSL's output lands once in memory the caller can send from without
 * another copy. Peer checks (chain, SPIFFE ID, policy, ALPN) run inside the
 * handshake so that OpenSSL answers a refused peer with an alert.
 *
 * Once the handshake is done, records go through zring's own record layer
 * (crypto/record.c) when it is chosen: OpenSSL hands over the application
 * traffic secrets through its keylog callback, and is not asked to read or
 * write a record again. Read-ahead stays off so that OpenSSL never takes
 * bytes past the handshake's last record, and the server sends no tickets,
 * so both directions start at sequence number 0 under our keys. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "crypto/tls-int.h"
#include "io/log.h"

#define CHUNK_SIZE	ZR_TLS_CHUNK_SIZE
#define FREE_CHUNKS_MAX 24	    /* a connection at hbone's 1 MiB high-water mark, and some */
#define IN_MIN		(17 * 1024) /* one full record */
#define PEER_ID_MAX	ZR_TLS_PEER_ID_MAX

#define HANDSHAKING ZR_TLS_HANDSHAKING
#define ESTABLISHED ZR_TLS_ESTABLISHED
#define FAILED	    ZR_TLS_FAILED

/* How established connections protect records (zr_tls_set_record_layer).
 * Written by the control thread before workers start, read-only after. */
static const zr_aead_backend_t *record_backend;
static bool record_own, record_chosen, async_mode;
static pthread_once_t record_once = PTHREAD_ONCE_INIT;

/* Chunks freed by connections of this (worker) thread, for the next one:
 * plain heap chunks, and chunks in a record crypto device's memory. */
static __thread struct zr_tls_chunk *free_chunks[2];
static __thread unsigned n_free_chunks[2];

/* A connection whose records a device seals takes its chunks from the
 * device's memory, so that they are sealed there in place. */
static const zr_aead_backend_t *chunk_mem(const zr_tls_t *tls)
{
	return tls && tls->own && tls->backend && tls->backend->mem_alloc ? tls->backend : NULL;
}

static struct zr_tls_chunk *chunk_get(const zr_tls_t *tls)
{
	const zr_aead_backend_t *mem = chunk_mem(tls);
	int kind = mem != NULL;
	struct zr_tls_chunk *c = free_chunks[kind];
	if (c && c->mem == mem) {
		free_chunks[kind] = c->next;
		n_free_chunks[kind]--;
	} else {
		c = mem ? mem->mem_alloc(sizeof(*c)) : NULL;
		if (!c)
			mem = NULL;
		if (!c && !(c = malloc(sizeof(*c))))
			return NULL;
		c->mem = mem;
	}
	c->next = NULL;
	c->head = c->tail = 0;
	return c;
}

static void chunk_free(struct zr_tls_chunk *c)
{
	if (c->mem)
		c->mem->mem_free(c);
	else
		free(c);
}

static void chunk_put(struct zr_tls_chunk *c)
{
	int kind = c->mem != NULL;
	if (n_free_chunks[kind] >= FREE_CHUNKS_MAX) {
		chunk_free(c);
		return;
	}
	c->next = free_chunks[kind];
	free_chunks[kind] = c;
	n_free_chunks[kind]++;
}

void zr_tls_thread_cleanup(void)
{
	for (int kind = 0; kind < 2; kind++) {
		while (free_chunks[kind]) {
			struct zr_tls_chunk *c = free_chunks[kind];
			free_chunks[kind] = c->next;
			chunk_free(c);
		}
		n_free_chunks[kind] = 0;
	}
	zr_aead_thread_cleanup(); /* the record layer's per-thread AEAD state */
}

static struct zr_tls_chunk *chunk_push(zr_tls_t *tls)
{
	struct zr_tls_chunk *c = chunk_get(tls);
	if (!c)
		return NULL;
	if (tls->out_last)
		tls->out_last->next = c;
	else
		tls->out_first = c;
	tls->out_last = c;
	return c;
}

struct zr_tls_chunk *zr_tls_out_room(zr_tls_t *tls, size_t need)
{
	struct zr_tls_chunk *c = tls->out_last;
	if (c && CHUNK_SIZE - c->tail >= need)
		return c;
	return chunk_push(tls);
}

int zr_tls_out_append(zr_tls_t *tls, const void *data, size_t len)
{
	const unsigned char *p = data;
	while (len) {
		struct zr_tls_chunk *c = tls->out_last;
		if (!c || c->tail == CHUNK_SIZE) {
			if (!(c = chunk_get(tls)))
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
	/* Gathered records are sealed now, when someone is about to send. A
	 * failure fails the connection; what is already sealed still goes. */
	if (tls->own && tls->state == ESTABLISHED && zr_record_flush(tls) < 0)
		tls->state = FAILED;
	struct zr_tls_chunk *c = tls->out_first;
	if (!c) {
		*data = NULL;
		return 0;
	}
	*data = c->data + c->head;
	/* On a device, records still being sealed wait, and all after them. */
	const uint8_t *limit = tls->own ? zr_record_out_limit(tls) : NULL;
	uintptr_t lim = (uintptr_t)limit, from = (uintptr_t)(c->data + c->head), to = (uintptr_t)(c->data + c->tail);
	if (limit && lim >= from && lim <= to)
		return lim - from;
	return c->tail - c->head;
}

void zr_tls_out_consume(zr_tls_t *tls, size_t len)
{
	/* each send makes at most this many records in the kernel */
	if (tls->ktls_on && len)
		tls->ktls_records += len / ZR_RECORD_PLAIN_MAX + 1;
	/* Only what was peeked (so sealed) should be consumed; should more go,
	 * no chunk may be freed under records still waiting to be sealed. */
	if (tls->own && tls->state == ESTABLISHED && (tls->rec.n_unsealed || tls->rec.pend_hdr) &&
	    zr_record_flush(tls) < 0)
		tls->state = FAILED;
	while (len && tls->out_first) {
		struct zr_tls_chunk *c = tls->out_first;
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
	if (!len)
		return 0;
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
size_t zr_tls_take_input(zr_tls_t *tls, void *buf, size_t len)
{
	uint8_t *out = buf;
	size_t avail = tls->in_tail - tls->in_head, n = 0;
	if (avail) {
		n = avail < len ? avail : len;
		memcpy(out, tls->in + tls->in_head, n);
		tls->in_head += n;
		if (tls->in_head == tls->in_tail)
			tls->in_head = tls->in_tail = 0;
	}
	if (n < len && tls->lent_len) {
		size_t m = tls->lent_len < len - n ? tls->lent_len : len - n;
		memcpy(out + n, tls->lent, m);
		tls->lent += m;
		tls->lent_len -= m;
		n += m;
	}
	return n;
}

static int bio_read(BIO *b, char *buf, size_t len, size_t *done)
{
	zr_tls_t *tls = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	*done = zr_tls_take_input(tls, buf, len);
	if (!*done) {
		BIO_set_retry_read(b);
		return 0;
	}
	return 1;
}

static int bio_write(BIO *b, const char *buf, size_t len, size_t *done)
{
	zr_tls_t *tls = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (zr_tls_out_append(tls, buf, len)) {
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

int zr_tls_set_error(zr_tls_t *tls, int rc, const char *fmt, ...)
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
		return zr_tls_set_error(tls, -EACCES, "no SPIFFE identity");
	if (rc == -EEXIST)
		return zr_tls_set_error(tls, -EACCES, "more than one SPIFFE identity");
	if (rc || zr_spiffe_parse(uri, &id))
		return zr_tls_set_error(tls, -EACCES, "bad SPIFFE identity");
	if (tls->server) {
		if (strcmp(id.trust_domain, tls->trust_domain))
			return zr_tls_set_error(tls, -EACCES, "trust domain %s != %s", id.trust_domain,
						tls->trust_domain);
	} else {
		bool allowed = false;
		for (size_t i = 0; !allowed && i < tls->n_allowed_ids; i++)
			allowed = !strcmp(uri, tls->allowed_ids[i]);
		if (!allowed)
			return zr_tls_set_error(tls, -EACCES, "peer identity %s not allowed", uri);
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
			zr_tls_set_error(tls, -EACCES, depth ? "CA certificate expired" : "certificate expired");
		else
			zr_tls_set_error(tls, -EACCES, "bad certificate: %s", X509_verify_cert_error_string(e));
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
	zr_tls_set_error(tls_of(ssl), -EPROTO, "peer did not offer ALPN h2");
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
	zr_tls_set_error(tls_of(ssl), -EPROTO, "peer did not offer ALPN h2");
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* OpenSSL's only way to give out traffic secrets: NSS key log lines,
 * "LABEL <client random> <secret>" in hex. The two application secrets are
 * kept (binary) for zr_record_start; the line is never logged or stored. */
static void keylog_cb(const SSL *ssl, const char *line)
{
	zr_tls_t *tls = SSL_get_app_data(ssl);
	if (!tls || !tls->own)
		return;
	uint8_t *dst;
	size_t *dst_len;
	size_t skip;
	if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24)) {
		dst = tls->secret_client, dst_len = &tls->secret_client_len, skip = 24;
	} else if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24)) {
		dst = tls->secret_server, dst_len = &tls->secret_server_len, skip = 24;
	} else {
		return;
	}
	const char *p = strchr(line + skip, ' ');
	if (!p)
		return;
	p++;
	size_t n = 0;
	while (p[0] && p[1] && n < ZR_RECORD_SECRET_MAX) {
		int hi = unhex(p[0]), lo = unhex(p[1]);
		if (hi < 0 || lo < 0)
			break;
		dst[n++] = (uint8_t)(hi << 4 | lo);
		p += 2;
	}
	*dst_len = *p ? 0 : n; /* a line we do not understand gives no secret */
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
	/* OpenSSL must read the handshake's records exactly, never past them:
	 * what follows belongs to our record layer. */
	SSL_CTX_set_read_ahead(ctx, 0);
	SSL_CTX_set_keylog_callback(ctx, keylog_cb);
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

void zr_tls_set_record_layer(const zr_aead_backend_t *b, bool own)
{
	record_backend = b;
	record_own = own && b;
	record_chosen = true;
}

static void record_default(void)
{
	if (record_chosen)
		return;
	const zr_aead_backend_t *b = NULL;
	char err[256];
	record_own = zr_aead_select(ZR_RECORD_CRYPTO_AUTO, NULL, &b, err, sizeof(err)) == 0 && b;
	record_backend = record_own ? b : NULL;
}

void zr_tls_set_async(bool on)
{
	async_mode = on;
}

size_t zr_tls_async_fds(zr_tls_t *tls, int *fds, size_t cap)
{
	size_t n = 0;
	if (!tls->ssl || !SSL_get_all_async_fds(tls->ssl, NULL, &n))
		return 0;
	if (n > cap) /* OpenSSL fills all or nothing */
		return 0;
	if (!SSL_get_all_async_fds(tls->ssl, (OSSL_ASYNC_FD *)fds, &n))
		return 0;
	return n;
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
	pthread_once(&record_once, record_default);
	tls->own = record_own;
	tls->backend = record_backend;
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
	if (async_mode)
		SSL_set_mode(tls->ssl, SSL_MODE_ASYNC);
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
	tls->own = false; /* nothing left to seal: the output goes as it is */
	bool released = zr_record_free(tls);
	OPENSSL_cleanse(tls->secret_client, sizeof(tls->secret_client));
	OPENSSL_cleanse(tls->secret_server, sizeof(tls->secret_server));
	if (released)
		zr_tls_out_consume(tls, tls->out_len);
	else
		zr_err("tls", "record crypto device did not complete a connection's records in time: "
			      "its buffers are left to it");
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
		return zr_tls_set_error(tls, -ENOMEM, "%s: out of memory", op);
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
		return zr_tls_set_error(tls, -EPROTO, "%s: unexpected end of stream", op);
	return zr_tls_set_error(tls, rc, "%s: %s", op, zr_openssl_reason(why, sizeof(why)));
}

static bool suite_alg(const SSL *ssl, zr_aead_alg_t *alg)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	switch (c ? SSL_CIPHER_get_id(c) : 0) {
	case TLS1_3_CK_AES_128_GCM_SHA256:
		*alg = ZR_AEAD_AES_128_GCM;
		return true;
	case TLS1_3_CK_AES_256_GCM_SHA384:
		*alg = ZR_AEAD_AES_256_GCM;
		return true;
	case TLS1_3_CK_CHACHA20_POLY1305_SHA256:
		*alg = ZR_AEAD_CHACHA20_POLY1305;
		return true;
	default:
		return false;
	}
}

/* The handshake is done: records from here on are ours, unless this
 * connection cannot be handed over, in which case OpenSSL keeps them (a
 * suite the backend lacks, secrets not seen, or bytes OpenSSL already
 * buffered, which would put our sequence numbers off). */
static int take_over_records(zr_tls_t *tls)
{
	zr_aead_alg_t alg;
	size_t hash_len = 0;
	bool ok = suite_alg(tls->ssl, &alg) && tls->backend->supports(alg);
	if (ok)
		hash_len = zr_record_hash_len(alg);
	ok = ok && tls->secret_client_len == hash_len && tls->secret_server_len == hash_len &&
	     !SSL_has_pending(tls->ssl);
	int rc = 0;
	if (ok) {
		const uint8_t *rd = tls->server ? tls->secret_client : tls->secret_server;
		const uint8_t *wr = tls->server ? tls->secret_server : tls->secret_client;
		rc = zr_record_start(tls, tls->backend, alg, rd, wr);
	}
	tls->own = ok && !rc;
	OPENSSL_cleanse(tls->secret_client, sizeof(tls->secret_client));
	OPENSSL_cleanse(tls->secret_server, sizeof(tls->secret_server));
	tls->secret_client_len = tls->secret_server_len = 0;
	return rc;
}

void zr_tls_set_wake(zr_tls_t *tls, void (*wake)(void *arg), void *arg)
{
	tls->wake = wake;
	tls->wake_arg = arg;
}

unsigned zr_tls_crypto_poll(void)
{
	return zr_record_async_poll();
}

bool zr_tls_own_records(const zr_tls_t *tls)
{
	return tls->own && tls->state == ESTABLISHED;
}

zr_tls_t *zr_tls_new_established(bool server, const zr_aead_backend_t *b, zr_aead_alg_t alg, const uint8_t *read_secret,
				 const uint8_t *write_secret)
{
	zr_tls_t *tls = calloc(1, sizeof(*tls));
	if (!tls)
		return NULL;
	tls->server = server;
	tls->own = true;
	tls->backend = b;
	if (zr_record_start(tls, b, alg, read_secret, write_secret) < 0) {
		zr_tls_free(tls);
		return NULL;
	}
	tls->state = ESTABLISHED;
	return tls;
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
		if (e == SSL_ERROR_WANT_ASYNC)
			return 2;
		return fail_openssl(tls, "handshake", e);
	}
	const unsigned char *alpn;
	unsigned alpn_len;
	SSL_get0_alpn_selected(tls->ssl, &alpn, &alpn_len);
	tls->state = FAILED;
	if (alpn_len != 2 || memcmp(alpn, "h2", 2))
		return zr_tls_set_error(tls, -EPROTO, "peer did not negotiate ALPN h2");
	/* verify_cb decides; this guards against a path that skipped it. */
	if (SSL_get_verify_result(tls->ssl) != X509_V_OK || !tls->peer_id[0] || !SSL_get0_peer_certificate(tls->ssl))
		return zr_tls_set_error(tls, -EACCES, "peer not verified");
	memcpy(tls->alpn, "h2", 3);
	/* Async jobs are for the handshake's public-key work: records that
	 * OpenSSL keeps protecting must not come back as WANT_ASYNC, which the
	 * read and write paths have no fd to wait on for. */
	SSL_clear_mode(tls->ssl, SSL_MODE_ASYNC);
	int rc = tls->own ? take_over_records(tls) : 0;
	if (rc < 0)
		return zr_tls_set_error(tls, rc, "handshake: record layer: %s", strerror(-rc));
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
	if (tls->ktls_rx)
		return zr_ktls_read(tls, buf, cap);
	if (tls->own)
		return zr_record_read(tls, buf, cap);
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
	if (tls->ktls_on)
		return tls->rec.write_closed ? -EPIPE : zr_tls_out_append(tls, data, len);
	if (tls->own)
		return zr_record_write(tls, data, len);
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
	if (tls->state == ESTABLISHED && tls->ktls_on)
		zr_ktls_queue_alert(tls, 1, ZR_TLS_ALERT_CLOSE_NOTIFY);
	else if (tls->state == ESTABLISHED && tls->own)
		zr_record_close_notify(tls);
	else if (tls->state == ESTABLISHED)
		SSL_shutdown(tls->ssl);
	ERR_clear_error();
}
