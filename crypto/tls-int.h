/* Between identity.c (which builds the SSL_CTXs) and tls.c (which owns
 * the per-connection policy the SSL_CTX callbacks enforce). Not for other
 * modules. */
#ifndef ZR_CRYPTO_TLS_INT_H
#define ZR_CRYPTO_TLS_INT_H

#include <stdbool.h>
#include <openssl/ssl.h>

#include "crypto/record.h"
#include "crypto/tls.h"

/* The output: a chain of fixed-size chunks. A few records per chunk; an
 * OpenSSL record may straddle two chunks, one of ours never does. */
#define ZR_TLS_CHUNK_SIZE  (64 * 1024)
#define ZR_TLS_PEER_ID_MAX 2048 /* SPIFFE's limit on an ID */

struct zr_tls_chunk {
	struct zr_tls_chunk *next;
	size_t head, tail;	      /* sent up to head, written up to tail */
	const zr_aead_backend_t *mem; /* whose mem_alloc it came from; NULL: malloc */
	unsigned char data[ZR_TLS_CHUNK_SIZE];
};

enum zr_tls_state {
	ZR_TLS_HANDSHAKING,
	ZR_TLS_ESTABLISHED,
	ZR_TLS_FAILED
};

struct zr_tls {
	SSL *ssl; /* NULL for zr_tls_new_established */
	bool server, oom;
	bool own; /* records through zr_record (decided at zr_tls_new, kept if possible) */
	enum zr_tls_state state;
	int fail_rc;

	unsigned char *in; /* fed ciphertext not yet read: in[in_head..in_tail) */
	size_t in_head, in_tail, in_cap;
	const unsigned char *lent; /* zr_tls_lend: read after `in`, until zr_tls_unlend */
	size_t lent_len;
	struct zr_tls_chunk *out_first, *out_last;
	size_t out_len;

	char **allowed_ids; /* client policy (one allocation with the strings) */
	size_t n_allowed_ids;
	char trust_domain[256]; /* server policy */

	const zr_aead_backend_t *backend; /* own record layer's backend */
	/* Application traffic secrets from OpenSSL's keylog callback, until
	 * zr_record_start takes them (then wiped). */
	uint8_t secret_client[ZR_RECORD_SECRET_MAX], secret_server[ZR_RECORD_SECRET_MAX];
	size_t secret_client_len, secret_server_len;
	zr_record_t rec;
	/* Kernel TLS (ktls.c): ktls_on from zr_tls_ktls_begin (the kernel seals
	 * what we write), ktls_rx once it opens what we read too. */
	bool ktls_on, ktls_rx, ktls_alert_pending;
	uint8_t ktls_alert[2]; /* level, description: sent once the output is */
	int ktls_fd;
	uint64_t ktls_records; /* records the kernel sealed, at most */
	/* zr_tls_set_wake: called when asynchronous record crypto completed */
	void (*wake)(void *arg);
	void *wake_arg;

	char alpn[16];
	char peer_id[ZR_TLS_PEER_ID_MAX + 1];
	char error[ZR_TLS_PEER_ID_MAX + 256];
};

/* Appends to the output (OpenSSL's BIO and zr_record). Returns 0 or -ENOMEM. */
int zr_tls_out_append(zr_tls_t *tls, const void *data, size_t len) __attribute__((warn_unused_result));
/* The last output chunk when it has `need` free bytes after its tail, else
 * a new chunk put at the end of the chain; NULL when out of memory. */
struct zr_tls_chunk *zr_tls_out_room(zr_tls_t *tls, size_t need);
/* Records the first failure's reason and errno; returns rc. */
int zr_tls_set_error(zr_tls_t *tls, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Copies up to len received bytes out of the input (the fed queue, then the
 * lent region) and consumes them; returns how many. */
size_t zr_tls_take_input(zr_tls_t *tls, void *buf, size_t len);

/* ktls.c: zr_tls_read on a connection whose kernel opens the records, and
 * an alert for zr_tls_ktls_send_control to send. */
ssize_t zr_ktls_read(zr_tls_t *tls, void *buf, size_t cap);
void zr_ktls_queue_alert(zr_tls_t *tls, uint8_t level, uint8_t desc);

/* Applies HBONE's TLS settings to a fresh SSL_CTX: TLS 1.3 only, the cipher
 * suites `suites` (OpenSSL's ':' list; NULL = OpenSSL's default), no tickets,
 * mutual verification through the per-connection policy, ALPN h2. Returns 0
 * or -EINVAL. */
int zr_tls_ctx_setup(SSL_CTX *ctx, bool server, const char *suites) __attribute__((warn_unused_result));

/* The SSL_CTX that presents `identity`, or NULL when the store has no such
 * identity or its certificate is not valid now. Borrowed from the store. */
SSL_CTX *zr_identity_store_ctx(const zr_identity_store_t *st, const char *identity, bool server);

/* Copies the one spiffe:// URI SAN of `cert` into out. Returns 0, -ENOENT
 * (none), -EEXIST (more than one) or -ENAMETOOLONG (does not fit, or holds a
 * NUL). */
int zr_cert_spiffe_uri(X509 *cert, char *out, size_t cap) __attribute__((warn_unused_result));

/* The first error on this thread's OpenSSL error queue as "reason (detail)",
 * then clears the queue. */
const char *zr_openssl_reason(char *buf, size_t cap);

#endif
