/* TLS 1.3 record protection after the handshake (RFC 8446 5, 7).
 *
 * Writes: records are built where they will be sent, in the connection's
 * output chunks. Where the backend seals two runs of plaintext as one
 * (zr_aead_two_segments), the whole records in a write are sealed out of
 * place straight from the caller's bytes, content then type byte, in
 * batches, before the write returns (write_direct): no copy. The rest, and
 * everything on a backend without two runs, is copied in once and sealed
 * in place later: small writes are gathered into one open record; full
 * records wait in a batch that is sealed with one zr_aead_seal call when it
 * fills or when the output is peeked. Both ways cut records at the same
 * places (at most 2^14 bytes, and a record ends where its chunk does).
 *
 * Reads: every complete record whose plaintext fits the caller's buffer is
 * opened out of place from the received ciphertext (fed or lent) straight
 * into the caller's buffer, in two zr_aead_open calls (even and odd records,
 * see open_overlapped) so that the contents land back to back without a
 * copy; only padded records (never sent by OpenSSL or us) and post-handshake
 * messages make the rest move. A record that does not fit goes through a
 * staging buffer.
 *
 * Post-handshake messages: KeyUpdate is honoured (and answered when asked),
 * NewSessionTicket skipped, anything else refused with an alert.
 *
 * Asynchronous backends (a device: dpdk) complete batches later, in
 * zr_record_async_poll, which the worker's loop calls. Records are then
 * built and sealed in place in the output as above, without write_direct;
 * up to SEAL_SLOTS batches per connection are in flight and the output is
 * sendable up to the oldest of them (zr_record_out_limit). Received records
 * are copied, a batch at a time, into the connection's own buffer (`plain`),
 * opened there in place and handed out from there, since the reader's
 * buffer does not outlive the read. Output chunks and `plain` come from the
 * device's memory where it has some (mem_alloc), so it works on them in
 * place. The ciphertext stays in the input until its record is handed out,
 * so records after a KeyUpdate are opened again under the new key.
 * Completions only mark their batch and queue the connection; the wake
 * callbacks (hbone: read and send) run from zr_record_async_poll at the top
 * of the loop, so waiting on the device inside a connection's call (a full
 * device queue, a control record) never re-enters another connection.
 * Alerts, close_notify and KeyUpdate wait for every earlier seal: they go
 * out at once, and no key is freed under a batch in flight. */
#include "crypto/record.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "crypto/tls-int.h"

/* An open record starts a new chunk when less room than this is left. */
#define PEND_MIN 1024

#define HS_NEW_SESSION_TICKET 4
#define HS_KEY_UPDATE	      24
/* KeyUpdates in a row without application data between them: more is a
 * flood (OpenSSL's and BoringSSL's limit). */
#define KEY_UPDATES_MAX 32
/* Empty application data records and user_canceled warnings in a row: they
 * carry nothing and change nothing, so a long run of them is a CPU flood
 * (OpenSSL stops at 32 empty records and 5 warnings). */
#define EMPTY_RECORDS_MAX 32

/* Asynchronous backends: seal batches in flight per connection, the bytes
 * of plaintext one open batch may produce, and how long a connection waits
 * for the device before it gives up. */
#define SEAL_SLOTS     4
#define OPEN_PLAIN_MAX (64 * 1024)
#define ASYNC_WAIT_NS  (2ull * 1000000000ull)

static EVP_KDF *hkdf;
static pthread_once_t hkdf_once = PTHREAD_ONCE_INIT;

static void hkdf_init(void)
{
	hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
}

const char *zr_record_hash_name(zr_aead_alg_t alg)
{
	return alg == ZR_AEAD_AES_256_GCM ? "SHA384" : "SHA256";
}

size_t zr_record_hash_len(zr_aead_alg_t alg)
{
	return alg == ZR_AEAD_AES_256_GCM ? 48 : 32;
}

int zr_tls13_hkdf_expand_label(const char *digest, const uint8_t *secret, size_t secret_len, const char *label,
			       const uint8_t *context, size_t context_len, uint8_t *out, size_t out_len)
{
	/* struct { uint16 length; opaque label<7..255>; opaque context<0..255>; } */
	uint8_t info[2 + 1 + 255 + 1 + 255];
	size_t label_len = strlen(label), n = 0;
	if (label_len > 255 - 6 || context_len > 255 || out_len > 0xffff || !secret_len)
		return -EINVAL;
	info[n++] = (uint8_t)(out_len >> 8);
	info[n++] = (uint8_t)out_len;
	info[n++] = (uint8_t)(6 + label_len);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, label_len);
	n += label_len;
	info[n++] = (uint8_t)context_len;
	if (context_len)
		memcpy(info + n, context, context_len);
	n += context_len;

	pthread_once(&hkdf_once, hkdf_init);
	EVP_KDF_CTX *kctx = hkdf ? EVP_KDF_CTX_new(hkdf) : NULL;
	if (!kctx)
		return -ENOMEM;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n),
		OSSL_PARAM_construct_end(),
	};
	int ok = EVP_KDF_derive(kctx, out, out_len, params);
	EVP_KDF_CTX_free(kctx);
	if (ok != 1) {
		ERR_clear_error();
		return -EINVAL;
	}
	return 0;
}

/* Key and IV from d->secret; the sequence number starts again. */
static int dir_keys(zr_record_dir_t *d)
{
	uint8_t key[ZR_AEAD_KEY_MAX];
	zr_aead_key_t *k = NULL;
	int rc = zr_record_dir_key(d, key);
	if (!rc)
		rc = zr_tls13_hkdf_expand_label(zr_record_hash_name(d->alg), d->secret, d->secret_len, "iv", NULL, 0,
						d->iv, ZR_AEAD_IV_LEN);
	if (!rc)
		rc = zr_aead_key_new(d->backend, d->alg, key, &k);
	OPENSSL_cleanse(key, sizeof(key));
	if (rc)
		return rc;
	zr_aead_key_free(d->key);
	d->key = k;
	d->seq = 0;
	return 0;
}

int zr_record_dir_init(zr_record_dir_t *d, const zr_aead_backend_t *b, zr_aead_alg_t alg, const uint8_t *secret)
{
	zr_record_dir_clear(d);
	if (!b || (unsigned)alg >= ZR_AEAD_ALG_COUNT)
		return -EINVAL;
	d->backend = b;
	d->alg = alg;
	d->secret_len = zr_record_hash_len(alg);
	memcpy(d->secret, secret, d->secret_len);
	int rc = dir_keys(d);
	if (rc)
		zr_record_dir_clear(d);
	return rc;
}

int zr_record_dir_update(zr_record_dir_t *d)
{
	uint8_t next[ZR_RECORD_SECRET_MAX];
	int rc = zr_tls13_hkdf_expand_label(zr_record_hash_name(d->alg), d->secret, d->secret_len, "traffic upd", NULL,
					    0, next, d->secret_len);
	if (!rc) {
		memcpy(d->secret, next, d->secret_len);
		rc = dir_keys(d);
	}
	OPENSSL_cleanse(next, sizeof(next));
	return rc;
}

int zr_record_dir_key(const zr_record_dir_t *d, uint8_t *key)
{
	if (!d->secret_len)
		return -EINVAL;
	return zr_tls13_hkdf_expand_label(zr_record_hash_name(d->alg), d->secret, d->secret_len, "key", NULL, 0, key,
					  zr_aead_key_len(d->alg));
}

void zr_record_dir_clear(zr_record_dir_t *d)
{
	zr_aead_key_free(d->key);
	OPENSSL_cleanse(d, sizeof(*d));
}

void zr_record_nonce(const zr_record_dir_t *d, uint64_t seq, uint8_t nonce[ZR_AEAD_IV_LEN])
{
	memcpy(nonce, d->iv, ZR_AEAD_IV_LEN);
	for (int i = 0; i < 8; i++)
		nonce[ZR_AEAD_IV_LEN - 1 - i] ^= (uint8_t)(seq >> (8 * i));
}

static void header(uint8_t *hdr, size_t inner_len)
{
	size_t len = inner_len + ZR_AEAD_TAG_LEN;
	hdr[0] = ZR_TLS_CT_APPLICATION_DATA;
	hdr[1] = 3;
	hdr[2] = 3;
	hdr[3] = (uint8_t)(len >> 8);
	hdr[4] = (uint8_t)len;
}

/* A record seals or opens its inner plaintext in the `len` bytes after its
 * header, the tag right behind; in and out differ when opening. */
static void rec_init(zr_aead_rec_t *rec, const zr_record_dir_t *d, uint64_t seq, const uint8_t *hdr, uint8_t *out,
		     size_t inner_len)
{
	rec->in = hdr + ZR_RECORD_HEADER_LEN;
	rec->out = out;
	rec->len = inner_len;
	rec->in2 = NULL;
	rec->len2 = 0;
	rec->aad = hdr;
	rec->aad_len = ZR_RECORD_HEADER_LEN;
	rec->tag = (uint8_t *)hdr + ZR_RECORD_HEADER_LEN + inner_len;
	rec->status = 0;
	zr_record_nonce(d, seq, rec->nonce);
}

ssize_t zr_record_seal_inner(zr_record_dir_t *d, const uint8_t *inner, size_t len, uint8_t *out, size_t cap)
{
	if (len + ZR_AEAD_TAG_LEN > 0xffff || cap < ZR_RECORD_HEADER_LEN + len + ZR_AEAD_TAG_LEN)
		return -EMSGSIZE;
	header(out, len);
	memmove(out + ZR_RECORD_HEADER_LEN, inner, len);
	zr_aead_rec_t rec;
	rec_init(&rec, d, d->seq, out, out + ZR_RECORD_HEADER_LEN, len);
	int rc = zr_aead_seal(d->key, &rec, 1);
	if (rc)
		return rc < 0 ? rc : -EIO;
	d->seq++;
	return (ssize_t)(ZR_RECORD_HEADER_LEN + len + ZR_AEAD_TAG_LEN);
}

ssize_t zr_record_seal1(zr_record_dir_t *d, uint8_t type, const uint8_t *content, size_t len, uint8_t *out, size_t cap)
{
	if (len > ZR_RECORD_PLAIN_MAX || cap < len + ZR_RECORD_OVERHEAD)
		return -EMSGSIZE;
	memmove(out + ZR_RECORD_HEADER_LEN, content, len);
	out[ZR_RECORD_HEADER_LEN + len] = type;
	return zr_record_seal_inner(d, out + ZR_RECORD_HEADER_LEN, len + 1, out, cap);
}

/* What can be told from a header alone (RFC 8446 5.2): only protected
 * records after the handshake, and none longer than 2^14 + 256. */
static int check_header(const uint8_t *hdr, size_t *len)
{
	*len = (size_t)hdr[3] << 8 | hdr[4];
	if (hdr[0] != ZR_TLS_CT_APPLICATION_DATA)
		return ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
	if (*len > ZR_RECORD_CIPHER_MAX)
		return ZR_TLS_ALERT_RECORD_OVERFLOW;
	if (*len < ZR_AEAD_TAG_LEN)
		return ZR_TLS_ALERT_BAD_RECORD_MAC;
	return 0;
}

/* TLSInnerPlaintext: content || type || zeros. */
static int inner_type(const uint8_t *p, size_t inner_len, uint8_t *type, size_t *len)
{
	if (inner_len > ZR_RECORD_INNER_MAX)
		return ZR_TLS_ALERT_RECORD_OVERFLOW;
	while (inner_len && !p[inner_len - 1])
		inner_len--;
	if (!inner_len)
		return ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
	*type = p[inner_len - 1];
	*len = inner_len - 1;
	return 0;
}

int zr_record_open1(zr_record_dir_t *d, const uint8_t *rec, size_t rec_len, uint8_t *out, size_t cap, uint8_t *type,
		    size_t *len)
{
	size_t ct_len;
	if (rec_len < ZR_RECORD_HEADER_LEN)
		return ZR_TLS_ALERT_DECODE_ERROR;
	int alert = check_header(rec, &ct_len);
	if (alert)
		return alert;
	if (rec_len != ZR_RECORD_HEADER_LEN + ct_len)
		return ZR_TLS_ALERT_DECODE_ERROR;
	size_t inner_len = ct_len - ZR_AEAD_TAG_LEN;
	if (cap < inner_len)
		return ZR_TLS_ALERT_INTERNAL_ERROR;
	zr_aead_rec_t r;
	rec_init(&r, d, d->seq, rec, out, inner_len);
	if (zr_aead_open(d->key, &r, 1))
		return ZR_TLS_ALERT_BAD_RECORD_MAC;
	d->seq++;
	return inner_type(out, inner_len, type, len);
}

static const char *alert_name(unsigned desc)
{
	switch (desc) {
	case 0:
		return "close notify";
	case 10:
		return "unexpected message";
	case 20:
		return "bad record mac";
	case 22:
		return "record overflow";
	case 40:
		return "handshake failure";
	case 42:
		return "bad certificate";
	case 43:
		return "unsupported certificate";
	case 44:
		return "certificate revoked";
	case 45:
		return "certificate expired";
	case 46:
		return "certificate unknown";
	case 47:
		return "illegal parameter";
	case 48:
		return "unknown ca";
	case 49:
		return "access denied";
	case 50:
		return "decode error";
	case 51:
		return "decrypt error";
	case 70:
		return "protocol version";
	case 71:
		return "insufficient security";
	case 80:
		return "internal error";
	case 86:
		return "inappropriate fallback";
	case 90:
		return "user canceled";
	case 109:
		return "missing extension";
	case 110:
		return "unsupported extension";
	case 112:
		return "unrecognized name";
	case 116:
		return "certificate required";
	case 120:
		return "no application protocol";
	default:
		return "unknown alert";
	}
}

/* --- the connection's records --- */

void zr_tls_set_key_update_interval(zr_tls_t *tls, uint64_t records)
{
	tls->rec.key_update_after = records ? records : 1;
}

/* A failure on the write side: plaintext not sealed must never be sent,
 * so the records not sealed yet are zeroed, headers written, and the peer
 * sees records that fail to authenticate. */
static int write_fail(zr_tls_t *tls, int rc, const char *what)
{
	zr_record_t *r = &tls->rec;
	for (size_t i = 0; i < r->n_unsealed; i++) {
		header(r->unsealed[i].hdr, r->unsealed[i].len + 1);
		memset(r->unsealed[i].hdr + ZR_RECORD_HEADER_LEN, 0, r->unsealed[i].len + 1 + ZR_AEAD_TAG_LEN);
	}
	if (r->pend_hdr) {
		header(r->pend_hdr, r->pend_len + 1);
		memset(r->pend_hdr + ZR_RECORD_HEADER_LEN, 0, r->pend_len + 1 + ZR_AEAD_TAG_LEN);
		tls->out_last->tail += 1 + ZR_AEAD_TAG_LEN;
		tls->out_len += 1 + ZR_AEAD_TAG_LEN;
	}
	r->n_unsealed = 0;
	r->pend_hdr = NULL;
	r->write_closed = true;
	tls->state = ZR_TLS_FAILED;
	return zr_tls_set_error(tls, rc, "write: %s", what);
}

/* The records written and not sealed yet, as a batch to seal in place:
 * headers and type bytes written, nonces from the next sequence numbers. */
static void unsealed_recs(zr_record_t *r, zr_aead_rec_t *recs)
{
	for (size_t i = 0; i < r->n_unsealed; i++) {
		uint8_t *hdr = r->unsealed[i].hdr;
		size_t inner_len = r->unsealed[i].len + 1;
		header(hdr, inner_len);
		hdr[ZR_RECORD_HEADER_LEN + inner_len - 1] = r->unsealed[i].type;
		rec_init(&recs[i], &r->wr, r->wr.seq + i, hdr, hdr + ZR_RECORD_HEADER_LEN, inner_len);
	}
}

/* --- asynchronous backends: batches in flight --- */

typedef struct seal_slot {
	zr_record_async_t *as;
	zr_aead_rec_t recs[ZR_AEAD_BATCH_MAX];
	size_t n;
	int status; /* the first record's failure */
	bool done;
} seal_slot_t;

struct zr_record_async {
	zr_tls_t *tls;
	/* Seal batches in submission order: seal_count from seal_head, done
	 * ones reaped from the head. */
	seal_slot_t seal[SEAL_SLOTS];
	unsigned seal_head, seal_count;
	/* The open batch: submitted (open_busy), completed (open_ready), then
	 * handed out record by record: open_next, whose type and content
	 * length are taken (open_taken) and open_off bytes of it given. */
	zr_aead_rec_t open[ZR_AEAD_BATCH_MAX];
	size_t open_n, open_next, open_off, open_len;
	bool open_busy, open_ready, open_taken;
	uint8_t *plain;			    /* OPEN_PLAIN_MAX bytes, on first read */
	const zr_aead_backend_t *plain_mem; /* whose mem_alloc; NULL: malloc */
	zr_record_async_t *ready_next;
	bool queued;
};

/* Per worker thread: connections with completed batches, to wake, and the
 * batches in flight. */
static __thread struct {
	zr_record_async_t *head, *tail;
	unsigned inflight;
	int (*poll)(void);
} thr;

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* For a loop that polls the device: true once ASYNC_WAIT_NS have passed
 * since its first turn (the clock is read every 256 turns). */
static bool waited_too_long(unsigned spin, uint64_t *deadline)
{
	if (spin % 256)
		return false;
	uint64_t now = mono_ns();
	if (!*deadline)
		*deadline = now + ASYNC_WAIT_NS;
	return now > *deadline;
}

static void ready_push(zr_record_async_t *as)
{
	if (as->queued || !as->tls)
		return;
	as->queued = true;
	as->ready_next = NULL;
	if (thr.tail)
		thr.tail->ready_next = as;
	else
		thr.head = as;
	thr.tail = as;
}

static void ready_unlink(zr_record_async_t *as)
{
	zr_record_async_t *prev = NULL;
	for (zr_record_async_t *x = thr.head; x; prev = x, x = x->ready_next) {
		if (x != as)
			continue;
		if (prev)
			prev->ready_next = x->ready_next;
		else
			thr.head = x->ready_next;
		if (thr.tail == x)
			thr.tail = prev;
		break;
	}
	as->queued = false;
}

static void seal_done(void *arg, zr_aead_rec_t *recs, size_t n)
{
	seal_slot_t *s = arg;
	for (size_t i = 0; i < n && !s->status; i++)
		s->status = recs[i].status;
	s->done = true;
	thr.inflight--;
	ready_push(s->as);
}

static void open_done(void *arg, zr_aead_rec_t *recs, size_t n)
{
	zr_record_async_t *as = arg;
	(void)recs;
	(void)n;
	as->open_busy = false;
	as->open_ready = true;
	thr.inflight--;
	ready_push(as);
}

/* Submits a batch to the device, polling while its queue is full.
 * Returns 0, -ETIMEDOUT, or the backend's error. */
static int async_submit(zr_aead_key_t *key, bool encrypt, zr_aead_rec_t *recs, size_t n, zr_aead_done_cb cb, void *arg)
{
	const zr_aead_backend_t *b = key->backend;
	uint64_t deadline = 0;
	thr.poll = b->poll;
	for (unsigned spin = 0;; spin++) {
		thr.inflight++;
		int rc = b->submit(key, encrypt, recs, n, cb, arg);
		if (rc != -EAGAIN) {
			if (rc)
				thr.inflight--;
			return rc;
		}
		thr.inflight--;
		if (!b->poll)
			return rc;
		if (waited_too_long(spin, &deadline))
			return -ETIMEDOUT;
		b->poll();
	}
}

static bool seals_idle(const zr_record_async_t *as)
{
	for (unsigned i = 0; i < as->seal_count; i++)
		if (!as->seal[(as->seal_head + i) % SEAL_SLOTS].done)
			return false;
	return true;
}

static bool seal_slot_free(const zr_record_async_t *as)
{
	return as->seal_count < SEAL_SLOTS || as->seal[as->seal_head].done;
}

static bool async_idle(const zr_record_async_t *as)
{
	return !as->open_busy && seals_idle(as);
}

/* Polls the device until cond(as) holds. Completions of other connections
 * only queue them. Returns 0 or -ETIMEDOUT. */
static int async_wait(zr_tls_t *tls, bool (*cond)(const zr_record_async_t *))
{
	zr_record_async_t *as = tls->rec.as;
	int (*poll)(void) = tls->rec.wr.backend ? tls->rec.wr.backend->poll : NULL;
	uint64_t deadline = 0;
	for (unsigned spin = 0; !cond(as); spin++) {
		if (!poll)
			return -ETIMEDOUT;
		if (waited_too_long(spin, &deadline))
			return -ETIMEDOUT;
		poll();
	}
	return 0;
}

static void wipe_direct(zr_aead_rec_t *recs, size_t n);

/* Completed seal batches leave the head; one that failed is wiped (its
 * records fail to authenticate at the peer) and fails the connection. */
static void seal_reap(zr_tls_t *tls)
{
	zr_record_async_t *as = tls->rec.as;
	while (as->seal_count && as->seal[as->seal_head].done) {
		seal_slot_t *s = &as->seal[as->seal_head];
		as->seal_head = (as->seal_head + 1) % SEAL_SLOTS;
		as->seal_count--;
		s->done = false;
		if (s->status) {
			wipe_direct(s->recs, s->n);
			write_fail(tls, -EIO, "sealing records failed");
		}
	}
}

const uint8_t *zr_record_out_limit(zr_tls_t *tls)
{
	zr_record_async_t *as = tls->rec.as;
	if (!as)
		return NULL;
	seal_reap(tls);
	return as->seal_count ? as->seal[as->seal_head].recs[0].aad : NULL;
}

unsigned zr_record_async_poll(void)
{
	if (thr.inflight && thr.poll)
		thr.poll();
	/* A wake may submit, wait, and queue others: until none is left. */
	while (thr.head) {
		zr_record_async_t *as = thr.head;
		thr.head = as->ready_next;
		if (!thr.head)
			thr.tail = NULL;
		as->queued = false;
		zr_tls_t *tls = as->tls;
		if (tls && tls->wake)
			tls->wake(tls->wake_arg);
	}
	return thr.inflight;
}

/* The records written and not sealed go to the device as one batch. */
static int seal_submit(zr_tls_t *tls)
{
	zr_record_t *r = &tls->rec;
	zr_record_async_t *as = r->as;
	size_t n = r->n_unsealed;
	if (!n)
		return 0;
	seal_reap(tls);
	if (!seal_slot_free(as) && async_wait(tls, seal_slot_free))
		return write_fail(tls, -ETIMEDOUT, "the crypto device did not answer");
	seal_reap(tls);
	if (tls->state != ZR_TLS_ESTABLISHED)
		return tls->fail_rc;
	seal_slot_t *s = &as->seal[(as->seal_head + as->seal_count) % SEAL_SLOTS];
	s->as = as;
	s->n = n;
	s->status = 0;
	s->done = false;
	unsealed_recs(r, s->recs);
	as->seal_count++;
	int rc = async_submit(r->wr.key, true, s->recs, n, seal_done, s);
	if (rc) {
		as->seal_count--;
		return write_fail(tls, rc,
				  rc == -ETIMEDOUT ? "the crypto device did not answer" : "sealing records failed");
	}
	r->wr.seq += n;
	r->n_unsealed = 0;
	return 0;
}

int zr_record_start(zr_tls_t *tls, const zr_aead_backend_t *b, zr_aead_alg_t alg, const uint8_t *read_secret,
		    const uint8_t *write_secret)
{
	zr_record_t *r = &tls->rec;
	int rc = zr_record_dir_init(&r->rd, b, alg, read_secret);
	if (!rc)
		rc = zr_record_dir_init(&r->wr, b, alg, write_secret);
	if (rc) {
		zr_record_dir_clear(&r->rd);
		zr_record_dir_clear(&r->wr);
		return rc;
	}
	r->key_update_after = ZR_RECORD_KEY_UPDATE_DEFAULT;
	if (b->async) {
		if (!(r->as = calloc(1, sizeof(*r->as)))) {
			zr_record_dir_clear(&r->rd);
			zr_record_dir_clear(&r->wr);
			return -ENOMEM;
		}
		r->as->tls = tls;
	}
	return 0;
}

bool zr_record_free(zr_tls_t *tls)
{
	zr_record_t *r = &tls->rec;
	zr_record_async_t *as = r->as;
	bool released = true;
	if (as) {
		/* The device holds pointers into our output and `plain`. */
		released = !async_wait(tls, async_idle);
		/* Completions (those waited for too) may have queued us. */
		ready_unlink(as);
		as->tls = NULL;
		if (released) {
			if (as->plain_mem)
				as->plain_mem->mem_free(as->plain);
			else
				free(as->plain);
			free(as);
		} else {
			/* It never answered: its buffers and keys are left to it. */
			r->rd.key = r->wr.key = NULL;
		}
		r->as = NULL;
	}
	zr_record_dir_clear(&r->rd);
	zr_record_dir_clear(&r->wr);
	free(r->stage);
	r->stage = NULL;
	return released;
}

static int seal_batch(zr_tls_t *tls)
{
	zr_record_t *r = &tls->rec;
	if (r->as)
		return seal_submit(tls);
	zr_aead_rec_t recs[ZR_AEAD_BATCH_MAX];
	size_t n = r->n_unsealed;
	if (!n)
		return 0;
	unsealed_recs(r, recs);
	if (zr_aead_seal(r->wr.key, recs, n))
		return write_fail(tls, -EIO, "sealing records failed");
	r->wr.seq += n;
	r->n_unsealed = 0;
	return 0;
}

/* A record of content `data` sealed at once at the end of the output. */
static int append_control(zr_tls_t *tls, uint8_t type, const uint8_t *data, size_t len);

static int send_key_update(zr_tls_t *tls, bool request)
{
	const uint8_t msg[5] = {HS_KEY_UPDATE, 0, 0, 1, request};
	int rc = append_control(tls, ZR_TLS_CT_HANDSHAKE, msg, sizeof(msg));
	if (!rc && zr_record_dir_update(&tls->rec.wr))
		rc = write_fail(tls, -EIO, "key update failed");
	return rc;
}

/* A written record joins the batch; a full batch is sealed, and the write
 * key is updated before it has protected key_update_after records. */
static int queue(zr_tls_t *tls, uint8_t *hdr, uint8_t type, size_t len)
{
	zr_record_t *r = &tls->rec;
	r->unsealed[r->n_unsealed].hdr = hdr;
	r->unsealed[r->n_unsealed].type = type;
	r->unsealed[r->n_unsealed].len = (uint32_t)len;
	r->n_unsealed++;
	bool update = r->wr.seq + r->n_unsealed + 1 >= r->key_update_after;
	if (r->n_unsealed < ZR_AEAD_BATCH_MAX && !update)
		return 0;
	int rc = seal_batch(tls);
	if (!rc && update)
		rc = send_key_update(tls, false);
	return rc;
}

static int close_pending(zr_tls_t *tls)
{
	zr_record_t *r = &tls->rec;
	uint8_t *hdr = r->pend_hdr;
	if (!hdr)
		return 0;
	r->pend_hdr = NULL;
	/* The open record is always the last thing in the last chunk, and its
	 * chunk kept room for the type byte and the tag. */
	tls->out_last->tail += 1 + ZR_AEAD_TAG_LEN;
	tls->out_len += 1 + ZR_AEAD_TAG_LEN;
	return queue(tls, hdr, ZR_TLS_CT_APPLICATION_DATA, r->pend_len);
}

static int append_control(zr_tls_t *tls, uint8_t type, const uint8_t *data, size_t len)
{
	zr_record_t *r = &tls->rec;
	/* Handed to kernel TLS: our records are the kernel's to write. */
	if (tls->ktls_on) {
		r->write_closed = true;
		return -EOPNOTSUPP;
	}
	int rc = close_pending(tls);
	if (!rc)
		rc = seal_batch(tls);
	if (rc)
		return rc;
	struct zr_tls_chunk *c = zr_tls_out_room(tls, len + ZR_RECORD_OVERHEAD);
	if (!c)
		return write_fail(tls, -ENOMEM, "out of memory");
	uint8_t *hdr = c->data + c->tail;
	memcpy(hdr + ZR_RECORD_HEADER_LEN, data, len);
	c->tail += len + ZR_RECORD_OVERHEAD;
	tls->out_len += len + ZR_RECORD_OVERHEAD;
	r->unsealed[r->n_unsealed].hdr = hdr;
	r->unsealed[r->n_unsealed].type = type;
	r->unsealed[r->n_unsealed].len = (uint32_t)len;
	r->n_unsealed++;
	rc = seal_batch(tls);
	if (rc || !r->as)
		return rc;
	/* A control record goes out now, and a KeyUpdate changes the key
	 * next: nothing of ours may be left in flight. */
	if (async_wait(tls, seals_idle))
		return write_fail(tls, -ETIMEDOUT, "the crypto device did not answer");
	seal_reap(tls);
	return tls->state == ZR_TLS_ESTABLISHED ? 0 : tls->fail_rc;
}

/* Records laid out by write_direct that were not sealed: zeroed, so that
 * whatever the chunk held before never goes out; the peer sees records that
 * fail to authenticate. */
static void wipe_direct(zr_aead_rec_t *recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		memset(recs[i].out, 0, recs[i].len + recs[i].len2 + ZR_AEAD_TAG_LEN);
}

/* Seals whole records of p[0..len) (len >= ZR_RECORD_PLAIN_MAX) straight
 * into the output, the type byte as the AEAD's second run, and returns the
 * bytes taken (the rest is less than a record), or a negative errno with
 * the connection failed. Records are cut where gathering would cut them,
 * and every one is sealed before this returns: the caller's bytes are only
 * ours until then. The pending record must be closed. */
static ssize_t write_direct(zr_tls_t *tls, const uint8_t *p, size_t len)
{
	static const uint8_t app_type = ZR_TLS_CT_APPLICATION_DATA;
	zr_record_t *r = &tls->rec;
	zr_aead_rec_t recs[ZR_AEAD_BATCH_MAX];
	size_t done = 0;
	/* Records queued earlier come first in the output, so they take the
	 * sequence numbers before ours. */
	int rc = seal_batch(tls);
	if (rc)
		return rc;
	while (len - done >= ZR_RECORD_PLAIN_MAX) {
		size_t n = 0;
		bool update = false, oom = false;
		while (n < ZR_AEAD_BATCH_MAX && len - done >= ZR_RECORD_PLAIN_MAX && !update) {
			struct zr_tls_chunk *c = zr_tls_out_room(tls, ZR_RECORD_OVERHEAD + PEND_MIN);
			if (!c) {
				oom = true;
				break;
			}
			size_t room = ZR_TLS_CHUNK_SIZE - c->tail - ZR_RECORD_OVERHEAD;
			size_t clen = room < ZR_RECORD_PLAIN_MAX ? room : ZR_RECORD_PLAIN_MAX;
			uint8_t *hdr = c->data + c->tail;
			header(hdr, clen + 1);
			rec_init(&recs[n], &r->wr, r->wr.seq + n, hdr, hdr + ZR_RECORD_HEADER_LEN, clen + 1);
			recs[n].in = p + done;
			recs[n].len = clen;
			recs[n].in2 = &app_type;
			recs[n].len2 = 1;
			c->tail += clen + ZR_RECORD_OVERHEAD;
			tls->out_len += clen + ZR_RECORD_OVERHEAD;
			done += clen;
			n++;
			/* the same rule as queue() */
			update = r->wr.seq + n + 1 >= r->key_update_after;
		}
		if (n && zr_aead_seal(r->wr.key, recs, n)) {
			wipe_direct(recs, n);
			return write_fail(tls, -EIO, "sealing records failed");
		}
		r->wr.seq += n;
		if (oom)
			return write_fail(tls, -ENOMEM, "out of memory");
		if (update && (rc = send_key_update(tls, false)))
			return rc;
	}
	return (ssize_t)done;
}

int zr_record_write(zr_tls_t *tls, const void *data, size_t len)
{
	zr_record_t *r = &tls->rec;
	const uint8_t *p = data;
	if (r->write_closed)
		return -EPIPE;
	if (len)
		r->ku_answered = false;
	while (len) {
		if (!r->pend_hdr && len >= ZR_RECORD_PLAIN_MAX && !r->as && zr_aead_two_segments(r->wr.key)) {
			ssize_t n = write_direct(tls, p, len);
			if (n < 0)
				return (int)n;
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (!r->pend_hdr) {
			struct zr_tls_chunk *c = zr_tls_out_room(tls, ZR_RECORD_OVERHEAD + PEND_MIN);
			if (!c)
				return write_fail(tls, -ENOMEM, "out of memory");
			size_t room = ZR_TLS_CHUNK_SIZE - c->tail - ZR_RECORD_OVERHEAD;
			r->pend_hdr = c->data + c->tail;
			r->pend_cap = room < ZR_RECORD_PLAIN_MAX ? room : ZR_RECORD_PLAIN_MAX;
			r->pend_len = 0;
			c->tail += ZR_RECORD_HEADER_LEN;
			tls->out_len += ZR_RECORD_HEADER_LEN;
		}
		size_t n = r->pend_cap - r->pend_len < len ? r->pend_cap - r->pend_len : len;
		memcpy(r->pend_hdr + ZR_RECORD_HEADER_LEN + r->pend_len, p, n);
		r->pend_len += n;
		tls->out_last->tail += n;
		tls->out_len += n;
		p += n;
		len -= n;
		if (r->pend_len == r->pend_cap) {
			int rc = close_pending(tls);
			if (rc)
				return rc;
		}
	}
	return 0;
}

int zr_record_flush(zr_tls_t *tls)
{
	int rc = close_pending(tls);
	return rc ? rc : seal_batch(tls);
}

void zr_record_close_notify(zr_tls_t *tls)
{
	static const uint8_t close_notify[2] = {1, ZR_TLS_ALERT_CLOSE_NOTIFY};
	if (tls->rec.write_closed)
		return;
	if (!append_control(tls, ZR_TLS_CT_ALERT, close_notify, sizeof(close_notify)))
		tls->rec.write_closed = true;
}

/* We refuse what the peer sent: a fatal alert goes out and the connection
 * fails (only this one). */
static int read_fail(zr_tls_t *tls, int alert, const char *why)
{
	zr_record_t *r = &tls->rec;
	int rc = alert == ZR_TLS_ALERT_BAD_RECORD_MAC ? -EBADMSG : -EPROTO;
	if (tls->state != ZR_TLS_ESTABLISHED)
		return tls->fail_rc;
	if (!r->write_closed) {
		const uint8_t msg[2] = {2, (uint8_t)alert};
		if (!append_control(tls, ZR_TLS_CT_ALERT, msg, sizeof(msg)))
			r->write_closed = true;
	}
	zr_tls_set_error(tls, rc, "read: %s (sent alert %s)", why, alert_name((unsigned)alert));
	tls->state = ZR_TLS_FAILED;
	return rc;
}

static int alert_why(zr_tls_t *tls, int alert)
{
	switch (alert) {
	case ZR_TLS_ALERT_BAD_RECORD_MAC:
		return read_fail(tls, alert, "record failed to authenticate");
	case ZR_TLS_ALERT_RECORD_OVERFLOW:
		return read_fail(tls, alert, "record too long");
	case ZR_TLS_ALERT_UNEXPECTED_MESSAGE:
		return read_fail(tls, alert, "unexpected record or message");
	case ZR_TLS_ALERT_ILLEGAL_PARAMETER:
		return read_fail(tls, alert, "bad KeyUpdate");
	case ZR_TLS_ALERT_DECODE_ERROR:
		return read_fail(tls, alert, "malformed message");
	default:
		return read_fail(tls, ZR_TLS_ALERT_INTERNAL_ERROR, "internal error");
	}
}

/* The post-handshake messages in one record's content; a message may span
 * records. *updated: a KeyUpdate ended the record, the read key changed. */
static int handshake_msgs(zr_tls_t *tls, const uint8_t *p, size_t n, bool *updated)
{
	zr_record_t *r = &tls->rec;
	while (n) {
		if (r->hs_have < 4) {
			size_t take = 4u - r->hs_have < n ? 4u - r->hs_have : n;
			memcpy(r->hs_hdr + r->hs_have, p, take);
			r->hs_have = (uint8_t)(r->hs_have + take);
			p += take;
			n -= take;
			if (r->hs_have < 4)
				break;
			r->hs_left = (uint32_t)r->hs_hdr[1] << 16 | (uint32_t)r->hs_hdr[2] << 8 | r->hs_hdr[3];
			switch (r->hs_hdr[0]) {
			case HS_KEY_UPDATE:
				if (r->hs_left != 1)
					return ZR_TLS_ALERT_DECODE_ERROR;
				break;
			case HS_NEW_SESSION_TICKET: /* tickets are of no use to us */
				if (tls->server)
					return ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
				break;
			default: /* renegotiation, post-handshake auth we never offered, ... */
				return ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
			}
		}
		size_t take = r->hs_left < n ? r->hs_left : n;
		if (take && r->hs_hdr[0] == HS_KEY_UPDATE)
			r->hs_body = p[0];
		p += take;
		n -= take;
		r->hs_left -= (uint32_t)take;
		if (r->hs_left)
			break;
		r->hs_have = 0;
		if (r->hs_hdr[0] != HS_KEY_UPDATE)
			continue;
		/* RFC 8446 5.1: a key change ends its record. */
		if (n)
			return ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
		if (r->hs_body > 1)
			return ZR_TLS_ALERT_ILLEGAL_PARAMETER;
		if (++r->ku_in_row > KEY_UPDATES_MAX)
			return ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
		if (zr_record_dir_update(&r->rd))
			return ZR_TLS_ALERT_INTERNAL_ERROR;
		*updated = true;
		if (r->hs_body == 1 && tls->ktls_on) {
			/* our writes are the kernel's now, and it cannot answer */
			zr_tls_set_error(tls, -EPROTO, "read: peer asked for a KeyUpdate on a kernel TLS connection");
			return ZR_TLS_ALERT_INTERNAL_ERROR;
		}
		if (r->hs_body == 1 && !r->write_closed && !r->ku_answered) {
			int rc = close_pending(tls);
			if (!rc)
				rc = seal_batch(tls);
			if (!rc)
				rc = send_key_update(tls, false);
			if (rc)
				return ZR_TLS_ALERT_INTERNAL_ERROR;
			r->ku_answered = true;
		}
	}
	return 0;
}

/* Takes n received bytes: the fed queue first, then the lent region. */
static void consume_input(zr_tls_t *tls, size_t n)
{
	if (tls->in_tail > tls->in_head) {
		tls->in_head += n;
		if (tls->in_head == tls->in_tail)
			tls->in_head = tls->in_tail = 0;
	} else {
		tls->lent += n;
		tls->lent_len -= n;
	}
}

static size_t record_len(const uint8_t *hdr)
{
	return ZR_RECORD_HEADER_LEN + ((size_t)hdr[3] << 8 | hdr[4]);
}

/* Records never straddle the fed queue and the lent region: a record cut
 * between them is completed in the queue from the lent bytes. */
static int join_cut_record(zr_tls_t *tls)
{
	size_t off = tls->in_head, end = tls->in_tail;
	if (!tls->lent_len || off == end)
		return 0;
	while (end - off >= ZR_RECORD_HEADER_LEN && end - off >= record_len(tls->in + off))
		off += record_len(tls->in + off);
	if (off == end)
		return 0;
	size_t rel = off - tls->in_head;
	for (int step = 0; step < 2 && tls->lent_len; step++) {
		size_t have = tls->in_tail - tls->in_head - rel, need;
		if (have < ZR_RECORD_HEADER_LEN)
			need = ZR_RECORD_HEADER_LEN - have;
		else if (record_len(tls->in + tls->in_head + rel) > ZR_RECORD_HEADER_LEN + ZR_RECORD_CIPHER_MAX)
			return 0; /* refused from its header anyway */
		else
			need = record_len(tls->in + tls->in_head + rel) - have;
		size_t take = need < tls->lent_len ? need : tls->lent_len;
		const uint8_t *src = tls->lent;
		tls->lent += take;
		tls->lent_len -= take;
		if (zr_tls_feed(tls, src, take))
			return -ENOMEM;
	}
	return 0;
}

/* A walk over the complete records at the head of the input: the fed
 * queue, then the lent region (join_cut_record first, so that no record
 * straddles the two). */
typedef struct in_walk {
	const uint8_t *src;
	size_t avail;
	bool lent;
} in_walk_t;

static bool walk_start(zr_tls_t *tls, in_walk_t *w)
{
	if (join_cut_record(tls)) {
		read_fail(tls, ZR_TLS_ALERT_INTERNAL_ERROR, "out of memory");
		return false;
	}
	w->src = tls->in ? tls->in + tls->in_head : NULL;
	w->avail = tls->in_tail - tls->in_head;
	w->lent = false;
	return true;
}

/* Whether a whole record is at w->src (*ct_len: its length after the
 * header). A header to refuse ends the walk, and fails the connection when
 * it is the first record (else the records before it go first). */
static bool walk_next(zr_tls_t *tls, in_walk_t *w, size_t *ct_len, bool first)
{
	if (!w->avail && !w->lent && tls->lent_len) {
		w->src = tls->lent;
		w->avail = tls->lent_len;
		w->lent = true;
	}
	if (w->avail < ZR_RECORD_HEADER_LEN)
		return false;
	int alert = check_header(w->src, ct_len);
	if (alert && first)
		alert_why(tls, alert);
	return !alert && w->avail >= ZR_RECORD_HEADER_LEN + *ct_len;
}

static void walk_skip(in_walk_t *w, size_t ct_len)
{
	w->src += ZR_RECORD_HEADER_LEN + ct_len;
	w->avail -= ZR_RECORD_HEADER_LEN + ct_len;
}

/* zr_aead_open on half a batch. A batch the backend did not take (submit
 * failed: -ENOMEM, -EINVAL, ...) sets no record's status: every record of
 * it is marked failed, never taken as opened. */
static void open_half(zr_record_dir_t *d, zr_aead_rec_t *half, size_t m)
{
	int rc = zr_aead_open(d->key, half, m);
	if (rc && rc != -EBADMSG)
		for (size_t i = 0; i < m; i++)
			if (!half[i].status)
				half[i].status = rc < 0 ? rc : -EIO;
}

/* Opens a batch whose outputs overlap: each record's last byte (its content
 * type, unless padded) lands on the next record's first byte, so that the
 * contents come out back to back with nothing to squeeze out. Neighbours
 * never open in the same call: the even records first, their overlapping
 * bytes kept, then the odd ones, then the even records' first bytes put
 * back. last[i] gets record i's last byte. Records are >= 2 bytes long when
 * n > 1. */
static void open_overlapped(zr_record_dir_t *d, zr_aead_rec_t *recs, size_t n, uint8_t *last)
{
	zr_aead_rec_t half[ZR_AEAD_BATCH_MAX / 2 + 1];
	uint8_t first[ZR_AEAD_BATCH_MAX];
	size_t m = 0;
	for (size_t i = 0; i < n; i += 2)
		half[m++] = recs[i];
	/* Statuses are checked record by record by the caller, in order. */
	open_half(d, half, m);
	for (size_t i = 0; i < n; i += 2) {
		recs[i].status = half[i / 2].status;
		first[i] = recs[i].len ? recs[i].out[0] : 0;
		last[i] = recs[i].len ? recs[i].out[recs[i].len - 1] : 0;
	}
	if (n < 2)
		return;
	m = 0;
	for (size_t i = 1; i < n; i += 2)
		half[m++] = recs[i];
	open_half(d, half, m);
	for (size_t i = 1; i < n; i += 2) {
		recs[i].status = half[i / 2].status;
		last[i] = recs[i].out[recs[i].len - 1];
	}
	for (size_t i = 0; i < n; i += 2)
		recs[i].out[0] = first[i]; /* n > 1: every record has >= 2 bytes */
}

/* The type of an inner plaintext whose last byte is kept apart. */
static int inner_type_split(const uint8_t *p, size_t inner_len, uint8_t last, uint8_t *type, size_t *len)
{
	if (inner_len > ZR_RECORD_INNER_MAX)
		return ZR_TLS_ALERT_RECORD_OVERFLOW;
	if (!inner_len)
		return ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
	if (last) {
		*type = last;
		*len = inner_len - 1;
		return 0;
	}
	return inner_type(p, inner_len - 1, type, len);
}

/* An application data record of len bytes: data ends runs of KeyUpdates
 * and of empty records; an empty record adds to its run, which past
 * EMPTY_RECORDS_MAX fails the connection. Returns 1 then, else 0. */
static int data_record(zr_tls_t *tls, size_t len)
{
	zr_record_t *r = &tls->rec;
	if (len) {
		r->ku_in_row = 0;
		r->empty_in_row = 0;
		return 0;
	}
	if (++r->empty_in_row <= EMPTY_RECORDS_MAX)
		return 0;
	alert_why(tls, ZR_TLS_ALERT_UNEXPECTED_MESSAGE);
	return 1;
}

/* A record that is not application data. Returns 0 to go on with the
 * records after it, or 1 to stop: close_notify came (what follows is
 * ignored, RFC 8446 6.1), the read key changed (the records after it must be
 * opened again), or the connection failed. */
static int control_record(zr_tls_t *tls, uint8_t type, const uint8_t *content, size_t len)
{
	bool updated = false;
	int alert;
	switch (type) {
	case ZR_TLS_CT_ALERT:
		if (len != 2) {
			alert_why(tls, ZR_TLS_ALERT_DECODE_ERROR);
			return 1;
		}
		if (content[1] == ZR_TLS_ALERT_CLOSE_NOTIFY) {
			tls->rec.read_closed = true;
			return 1;
		}
		if (content[1] == ZR_TLS_ALERT_USER_CANCELED) {
			if (++tls->rec.empty_in_row <= EMPTY_RECORDS_MAX)
				return 0;
			alert_why(tls, ZR_TLS_ALERT_UNEXPECTED_MESSAGE);
			return 1;
		}
		zr_tls_set_error(tls, -ECONNRESET, "read: peer sent alert %s (%u)", alert_name(content[1]), content[1]);
		/* Nothing seals the output once the connection has failed:
		 * what was written goes sealed (or zeroed), never plain. */
		(void)!zr_record_flush(tls);
		tls->state = ZR_TLS_FAILED;
		return 1;
	case ZR_TLS_CT_HANDSHAKE:
		alert = len ? handshake_msgs(tls, content, len, &updated) : ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
		if (alert) {
			alert_why(tls, alert);
			return 1;
		}
		return updated;
	default:
		alert_why(tls, ZR_TLS_ALERT_UNEXPECTED_MESSAGE);
		return 1;
	}
}

/* Opens a batch of the complete records at the head of the input that fit
 * out[0..cap) (or the first one into the staging buffer when `stage` and it
 * does not fit). Returns the application bytes now at out[0..), and sets
 * *records to the number of records consumed; on failure the connection is
 * FAILED. */
static size_t read_batch(zr_tls_t *tls, uint8_t *out, size_t cap, bool stage, size_t *records)
{
	zr_record_t *r = &tls->rec;
	zr_aead_rec_t recs[ZR_AEAD_BATCH_MAX];
	uint8_t last[ZR_AEAD_BATCH_MAX];
	size_t n = 0, pos = 0, delivered = 0;
	bool staged = false;
	*records = 0;
	in_walk_t wk;
	size_t ct_len;
	if (!walk_start(tls, &wk))
		return 0;
	while (n < ZR_AEAD_BATCH_MAX && walk_next(tls, &wk, &ct_len, n == 0)) {
		size_t inner_len = ct_len - ZR_AEAD_TAG_LEN;
		uint8_t *dst = out + pos;
		if (inner_len < 2 && n) /* a record of < 2 bytes overlaps too much: alone */
			break;
		if (pos + inner_len > cap) {
			if (n || !stage)
				break;
			if (!r->stage && !(r->stage = malloc(ZR_RECORD_CIPHER_MAX))) {
				read_fail(tls, ZR_TLS_ALERT_INTERNAL_ERROR, "out of memory");
				return 0;
			}
			dst = r->stage;
			staged = true;
		}
		rec_init(&recs[n], &r->rd, r->rd.seq + n, wk.src, dst, inner_len);
		n++;
		pos += inner_len ? inner_len - 1 : 0;
		walk_skip(&wk, ct_len);
		if (staged || inner_len < 2)
			break;
	}
	if (!n)
		return 0;
	open_overlapped(&r->rd, recs, n, last);
	for (size_t i = 0; i < n; i++) {
		if (recs[i].status) {
			alert_why(tls, recs[i].status == -EBADMSG ? ZR_TLS_ALERT_BAD_RECORD_MAC :
								    ZR_TLS_ALERT_INTERNAL_ERROR);
			return delivered;
		}
		consume_input(tls, ZR_RECORD_HEADER_LEN + recs[i].len + ZR_AEAD_TAG_LEN);
		r->rd.seq++;
		(*records)++;
		uint8_t type;
		size_t len;
		int alert = inner_type_split(recs[i].out, recs[i].len, last[i], &type, &len);
		if (!alert && (r->hs_have || r->hs_left) && type != ZR_TLS_CT_HANDSHAKE)
			alert = ZR_TLS_ALERT_UNEXPECTED_MESSAGE; /* a message cut by another type */
		if (alert) {
			alert_why(tls, alert);
			return delivered;
		}
		const uint8_t *content = recs[i].out;
		if (type != ZR_TLS_CT_APPLICATION_DATA) {
			/* After a KeyUpdate, the rest of the batch was opened with
			 * the old key: it stays in the input for the next batch. */
			if (control_record(tls, type, content, len))
				return delivered;
			continue;
		}
		if (data_record(tls, len))
			return delivered;
		if (staged) {
			size_t take = len < cap ? len : cap;
			memcpy(out, content, take);
			r->stage_head = take;
			r->stage_len = len - take;
			return take;
		}
		if (content != out + delivered)
			memmove(out + delivered, content, len);
		delivered += len;
	}
	return delivered;
}

/* --- asynchronous backends: opening --- */

/* Submits the complete records at the head of the input (as many as fit
 * OPEN_PLAIN_MAX) to be opened in as->plain: each is copied there and
 * opened in place. The input keeps them until each is handed out (after a
 * KeyUpdate the rest are opened again). Returns true when a batch went to
 * the device. */
static bool open_submit(zr_tls_t *tls)
{
	zr_record_t *r = &tls->rec;
	zr_record_async_t *as = r->as;
	size_t n = 0, pos = 0;
	in_walk_t wk;
	size_t ct_len;
	if (!walk_start(tls, &wk))
		return false;
	while (n < ZR_AEAD_BATCH_MAX && walk_next(tls, &wk, &ct_len, n == 0)) {
		size_t rec_len = ZR_RECORD_HEADER_LEN + ct_len;
		if (pos + rec_len > OPEN_PLAIN_MAX)
			break;
		/* A copy, opened in place: the device's memory on a device
		 * that has some, and the input may move meanwhile. */
		uint8_t *copy = as->plain + pos;
		memcpy(copy, wk.src, rec_len);
		rec_init(&as->open[n], &r->rd, r->rd.seq + n, copy, copy + ZR_RECORD_HEADER_LEN,
			 ct_len - ZR_AEAD_TAG_LEN);
		n++;
		pos += rec_len;
		walk_skip(&wk, ct_len);
	}
	if (!n)
		return false;
	as->open_n = n;
	as->open_next = 0;
	as->open_taken = false;
	as->open_busy = true;
	int rc = async_submit(r->rd.key, false, as->open, n, open_done, as);
	if (rc) {
		as->open_busy = false;
		read_fail(tls, ZR_TLS_ALERT_INTERNAL_ERROR,
			  rc == -ETIMEDOUT ? "the crypto device did not answer" : "opening records failed");
		return false;
	}
	return true;
}

/* Hands out the opened batch's records in order: application data into
 * out[0..cap), the others processed. Returns the bytes given; the batch is
 * done (open_ready false) when every record is, or one stopped it. */
static size_t open_deliver(zr_tls_t *tls, uint8_t *out, size_t cap)
{
	zr_record_t *r = &tls->rec;
	zr_record_async_t *as = r->as;
	size_t got = 0;
	while (as->open_next < as->open_n) {
		zr_aead_rec_t *rec = &as->open[as->open_next];
		if (!as->open_taken) {
			int alert = 0;
			uint8_t type = 0;
			size_t len = 0;
			if (rec->status)
				alert = rec->status == -EBADMSG ? ZR_TLS_ALERT_BAD_RECORD_MAC :
								  ZR_TLS_ALERT_INTERNAL_ERROR;
			else
				alert = inner_type(rec->out, rec->len, &type, &len);
			if (!rec->status) {
				consume_input(tls, ZR_RECORD_HEADER_LEN + rec->len + ZR_AEAD_TAG_LEN);
				r->rd.seq++;
			}
			if (!alert && (r->hs_have || r->hs_left) && type != ZR_TLS_CT_HANDSHAKE)
				alert = ZR_TLS_ALERT_UNEXPECTED_MESSAGE;
			if (alert) {
				as->open_ready = false;
				alert_why(tls, alert);
				return got;
			}
			if (type != ZR_TLS_CT_APPLICATION_DATA) {
				as->open_next++;
				if (control_record(tls, type, rec->out, len)) {
					as->open_ready = false;
					return got;
				}
				continue;
			}
			if (data_record(tls, len)) {
				as->open_ready = false;
				return got;
			}
			as->open_taken = true;
			as->open_len = len;
			as->open_off = 0;
		}
		size_t take = as->open_len - as->open_off < cap - got ? as->open_len - as->open_off : cap - got;
		memcpy(out + got, rec->out + as->open_off, take);
		got += take;
		as->open_off += take;
		if (as->open_off < as->open_len)
			return got; /* the reader's buffer is full */
		as->open_taken = false;
		as->open_next++;
	}
	as->open_ready = false;
	return got;
}

/* What a read returns: the bytes it got, else the failure, 0 after
 * close_notify, or -EAGAIN. */
static ssize_t read_result(const zr_tls_t *tls, size_t got)
{
	if (got)
		return (ssize_t)got;
	if (tls->state == ZR_TLS_FAILED)
		return tls->fail_rc;
	return tls->rec.read_closed ? 0 : -EAGAIN;
}

static ssize_t async_read(zr_tls_t *tls, uint8_t *out, size_t cap)
{
	zr_record_t *r = &tls->rec;
	zr_record_async_t *as = r->as;
	size_t got = 0;
	if (!as->plain) {
		const zr_aead_backend_t *b = r->rd.backend;
		as->plain_mem = b->mem_alloc ? b : NULL;
		as->plain = as->plain_mem ? b->mem_alloc(OPEN_PLAIN_MAX) : NULL;
		if (!as->plain) {
			as->plain_mem = NULL;
			as->plain = malloc(OPEN_PLAIN_MAX);
		}
		if (!as->plain)
			return read_fail(tls, ZR_TLS_ALERT_INTERNAL_ERROR, "out of memory");
	}
	while (got < cap && !r->read_closed && tls->state == ZR_TLS_ESTABLISHED) {
		if (as->open_ready) {
			got += open_deliver(tls, out + got, cap - got);
			continue;
		}
		/* The next batch goes to the device; it completes in the loop. */
		if (!as->open_busy)
			open_submit(tls);
		break;
	}
	return read_result(tls, got);
}

ssize_t zr_record_read(zr_tls_t *tls, void *buf, size_t cap)
{
	zr_record_t *r = &tls->rec;
	uint8_t *out = buf;
	if (r->as)
		return async_read(tls, out, cap);
	if (r->stage_len) {
		size_t take = r->stage_len < cap ? r->stage_len : cap;
		memcpy(out, r->stage + r->stage_head, take);
		r->stage_head += take;
		r->stage_len -= take;
		return (ssize_t)take;
	}
	size_t got = 0, records;
	while (!r->read_closed && tls->state == ZR_TLS_ESTABLISHED && got < cap && !r->stage_len) {
		got += read_batch(tls, out + got, cap - got, got == 0, &records);
		if (!records)
			break;
	}
	return read_result(tls, got);
}
