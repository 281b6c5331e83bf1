/* zring's TLS 1.3 record layer (RFC 8446 sections 5 and 7): once OpenSSL
 * has finished a handshake, records of that connection are protected here,
 * in batches, on an AEAD backend of crypto/aead.h.
 *
 * Two levels:
 *   - the key schedule pieces (HKDF-Expand-Label, one direction's key, IV and
 *     sequence number, KeyUpdate's next secret) and single-record seal/open,
 *     which the tests check against RFC 8448;
 *   - the zr_tls_t side (zr_record_*): reading and writing records through a
 *     connection's input queue and output chunks, post-handshake messages,
 *     alerts. crypto/tls.c calls these; nothing else should.
 *
 * Threads: everything here runs on the worker thread that owns the
 * connection, except zr_tls13_hkdf_expand_label (any thread). */
#ifndef ZR_CRYPTO_RECORD_H
#define ZR_CRYPTO_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "crypto/aead.h"
#include "crypto/tls.h"

#define ZR_RECORD_HEADER_LEN 5
#define ZR_RECORD_PLAIN_MAX  16384			 /* 2^14: content of one record */
#define ZR_RECORD_INNER_MAX  (ZR_RECORD_PLAIN_MAX + 1)	 /* content + type */
#define ZR_RECORD_CIPHER_MAX (ZR_RECORD_PLAIN_MAX + 256) /* what a peer may send */
#define ZR_RECORD_SECRET_MAX 48				 /* SHA-384 */
#define ZR_RECORD_OVERHEAD   (ZR_RECORD_HEADER_LEN + 1 + ZR_AEAD_TAG_LEN)

/* Content types and the alerts the record layer sends or names. */
enum {
	ZR_TLS_CT_ALERT = 21,
	ZR_TLS_CT_HANDSHAKE = 22,
	ZR_TLS_CT_APPLICATION_DATA = 23,
};
enum {
	ZR_TLS_ALERT_CLOSE_NOTIFY = 0,
	ZR_TLS_ALERT_UNEXPECTED_MESSAGE = 10,
	ZR_TLS_ALERT_BAD_RECORD_MAC = 20,
	ZR_TLS_ALERT_RECORD_OVERFLOW = 22,
	ZR_TLS_ALERT_ILLEGAL_PARAMETER = 47,
	ZR_TLS_ALERT_DECODE_ERROR = 50,
	ZR_TLS_ALERT_INTERNAL_ERROR = 80,
	ZR_TLS_ALERT_USER_CANCELED = 90,
};

/* RFC 8446 5.5: AES-GCM keys are good for 2^24.5 full records; we update
 * the write key well before. */
#define ZR_RECORD_KEY_UPDATE_DEFAULT (1ull << 24)

/* One direction of one connection: its traffic secret, the AEAD key and IV
 * derived from it, and the sequence number of the next record. */
typedef struct zr_record_dir {
	zr_aead_key_t *key;
	const zr_aead_backend_t *backend;
	zr_aead_alg_t alg;
	size_t secret_len; /* the suite's hash length: 32 or 48 */
	uint8_t secret[ZR_RECORD_SECRET_MAX];
	uint8_t iv[ZR_AEAD_IV_LEN];
	uint64_t seq;
} zr_record_dir_t;

/* The suite's hash ("SHA256" or "SHA384") and its length. */
const char *zr_record_hash_name(zr_aead_alg_t alg);
size_t zr_record_hash_len(zr_aead_alg_t alg);

/* HKDF-Expand-Label(secret, label, context, out_len) of RFC 8446 7.1 with
 * the hash `digest` ("SHA256", "SHA384"); `label` without "tls13 ". Returns
 * 0 or -EINVAL / -ENOMEM. Any thread. */
int zr_tls13_hkdf_expand_label(const char *digest, const uint8_t *secret, size_t secret_len, const char *label,
			       const uint8_t *context, size_t context_len, uint8_t *out, size_t out_len)
	__attribute__((warn_unused_result));

/* Derives key and IV from `secret` (hash length of alg) and makes the AEAD
 * key on backend b; the sequence number starts at 0. The secret is copied
 * (for KeyUpdate); wipe the caller's copy. Returns 0 or a negative errno. */
int zr_record_dir_init(zr_record_dir_t *d, const zr_aead_backend_t *b, zr_aead_alg_t alg, const uint8_t *secret)
	__attribute__((warn_unused_result));
/* KeyUpdate: secret = HKDF-Expand-Label(secret, "traffic upd", "", Hash.len),
 * new key and IV, sequence number back to 0. */
int zr_record_dir_update(zr_record_dir_t *d) __attribute__((warn_unused_result));
/* The traffic key of d (zr_aead_key_len bytes) into key, for kernel TLS;
 * the caller wipes it. Returns 0 or a negative errno. */
int zr_record_dir_key(const zr_record_dir_t *d, uint8_t *key) __attribute__((warn_unused_result));
/* Frees the key and wipes the secrets. Safe on a zeroed or cleared d. */
void zr_record_dir_clear(zr_record_dir_t *d);
/* The per-record nonce: IV XOR the 64-bit sequence number, big-endian,
 * left-padded to the IV's length. */
void zr_record_nonce(const zr_record_dir_t *d, uint64_t seq, uint8_t nonce[ZR_AEAD_IV_LEN]);

/* Seals one record: out gets header, encrypted content || type, tag
 * (len + ZR_RECORD_OVERHEAD bytes); uses and advances d->seq. Returns the
 * record's length or a negative errno. */
ssize_t zr_record_seal1(zr_record_dir_t *d, uint8_t type, const uint8_t *content, size_t len, uint8_t *out, size_t cap);
/* Seals `len` bytes given as the whole inner plaintext (content, type and
 * any padding, as is): for tests that need records a sender would not make. */
ssize_t zr_record_seal_inner(zr_record_dir_t *d, const uint8_t *inner, size_t len, uint8_t *out, size_t cap);
/* Opens one complete record (header included) into out (cap >= record
 * length - header - tag); on success *type and *len are the content type
 * and content length (padding removed) and d->seq advances. Returns 0 or
 * the alert the record calls for (ZR_TLS_ALERT_*, > 0). */
int zr_record_open1(zr_record_dir_t *d, const uint8_t *rec, size_t rec_len, uint8_t *out, size_t cap, uint8_t *type,
		    size_t *len);

/* --- the zr_tls_t side (crypto/tls.c) --- */

/* Batches in flight on an asynchronous backend (record.c); NULL on the
 * others. */
typedef struct zr_record_async zr_record_async_t;

/* Per-connection record layer state, inside zr_tls_t. */
typedef struct zr_record {
	zr_record_dir_t rd, wr;
	uint64_t key_update_after; /* records under one write key before we update it */
	/* The application data record being gathered at the end of the output:
	 * its header at pend_hdr, pend_len bytes of content so far, room for
	 * pend_cap; NULL when none. */
	uint8_t *pend_hdr;
	size_t pend_len, pend_cap;
	/* Records written into the output, waiting to be sealed in one batch. */
	struct {
		uint8_t *hdr;
		uint8_t type;
		uint32_t len; /* content length */
	} unsealed[ZR_AEAD_BATCH_MAX];
	size_t n_unsealed;
	/* Plaintext of a record larger than the reader's buffer. */
	uint8_t *stage;
	size_t stage_head, stage_len;
	/* A post-handshake message spread over records: header bytes seen, and
	 * the bytes of its body still to come. */
	uint8_t hs_hdr[4];
	uint8_t hs_have;
	uint8_t hs_body; /* KeyUpdate's request_update */
	uint32_t hs_left;
	/* KeyUpdates received since the peer's last application data, and
	 * whether we answered a request and have sent no data since (then
	 * further requests need no answer: RFC 8446 4.6.3). */
	uint8_t ku_in_row;
	uint8_t empty_in_row; /* empty data records and user_canceled alerts since data */
	bool ku_answered;
	bool read_closed, write_closed;
	zr_record_async_t *as;
} zr_record_t;

/* Takes the connection over after the handshake: keys from the two traffic
 * secrets (which the caller then wipes). Returns 0 or a negative errno. */
int zr_record_start(zr_tls_t *tls, const zr_aead_backend_t *b, zr_aead_alg_t alg, const uint8_t *read_secret,
		    const uint8_t *write_secret) __attribute__((warn_unused_result));
/* Frees the keys and buffers; on an asynchronous backend first waits for
 * the connection's batches in flight. Returns false when the device did not
 * give them back in time: the caller must then leave the output chunks
 * allocated (the device may still write into them). */
bool zr_record_free(zr_tls_t *tls);
/* zr_tls_read / zr_tls_write / zr_tls_close_notify on the own record layer. */
ssize_t zr_record_read(zr_tls_t *tls, void *buf, size_t cap);
int zr_record_write(zr_tls_t *tls, const void *data, size_t len) __attribute__((warn_unused_result));
void zr_record_close_notify(zr_tls_t *tls);
/* Seals everything written so far (before the output is peeked); on an
 * asynchronous backend, submits it. */
int zr_record_flush(zr_tls_t *tls) __attribute__((warn_unused_result));
/* Asynchronous backend: the first output byte that is not sealed yet (the
 * oldest batch in flight), or NULL when everything written is sealed or
 * the backend is synchronous. Output before it may be sent. */
const uint8_t *zr_record_out_limit(zr_tls_t *tls);
/* Asynchronous backends: polls this thread's device and calls the wake
 * callback of each connection whose batches completed; returns the batches
 * still in flight on this thread (see zr_tls_crypto_poll). */
unsigned zr_record_async_poll(void);

/* Tests: our own KeyUpdate after `records` records under one write key
 * (default ZR_RECORD_KEY_UPDATE_DEFAULT). Established own-layer connection. */
void zr_tls_set_key_update_interval(zr_tls_t *tls, uint64_t records);
/* Tests and fuzzing: a connection already established on the own record
 * layer with the given traffic secrets, no handshake and no peer. */
zr_tls_t *zr_tls_new_established(bool server, const zr_aead_backend_t *b, zr_aead_alg_t alg, const uint8_t *read_secret,
				 const uint8_t *write_secret);
/* Whether the connection's records go through zring's record layer. */
bool zr_tls_own_records(const zr_tls_t *tls);

#endif
