/* Identities and TLS 1.3 for HBONE, on OpenSSL 3.
 *
 * zr_identity_store_t: the trust anchors and every local identity's
 * certificate chain and key, loaded from the config's `identity` section, with
 * one server SSL_CTX and one client SSL_CTX per identity. Built on the control
 * thread, reference counted, swapped on SIGHUP (live connections keep their
 * SSL objects, which hold their own SSL_CTX references).
 *
 * zr_tls_t: one TLS connection driven over memory buffers, so that no thread
 * ever blocks on a socket or a handshake: received ciphertext is fed in,
 * ciphertext to send is taken out, plaintext goes through read/write. Owned
 * by one worker thread. */
#ifndef ZR_CRYPTO_TLS_H
#define ZR_CRYPTO_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "crypto/aead.h"
#include "ctl/config-t.h"

typedef struct zr_identity_store zr_identity_store_t;
typedef struct zr_tls zr_tls_t;

/* A parsed SPIFFE ID: spiffe://<trust_domain>/ns/<ns>/sa/<sa>. */
typedef struct zr_spiffe_id {
	char trust_domain[256];
	char ns[256];
	char sa[256];
} zr_spiffe_id_t;

/* Parses a SPIFFE URI of the Istio form above. Returns 0 or -EINVAL. */
int zr_spiffe_parse(const char *uri, zr_spiffe_id_t *out) __attribute__((warn_unused_result));

/* Certificate facts for /config_dump and `zring ctl certs`. */
typedef struct zr_cert_info {
	const char *identity; /* owned by the store */
	const char *cert_path;
	time_t not_before, not_after;
	bool expired;
} zr_cert_info_t;

/* Loads trust anchors and identities of `cfg` (cfg->identity.*). Every
 * certificate must carry a URI SAN equal to its configured identity, chain to
 * the trust anchors and match its key; an expired certificate loads (so that
 * rotation can replace it) but is reported and never presented. On failure
 * returns a negative errno and writes the reason (file and what) into err.
 * Control thread. */
int zr_identity_store_load(const zr_config_t *cfg, zr_identity_store_t **out, char *err, size_t cap)
	__attribute__((warn_unused_result));
void zr_identity_store_ref(zr_identity_store_t *st);
void zr_identity_store_unref(zr_identity_store_t *st); /* any thread */
size_t zr_identity_store_count(const zr_identity_store_t *st);
const zr_cert_info_t *zr_identity_store_info(const zr_identity_store_t *st, size_t i);
/* True when `identity` has a usable (unexpired) certificate. */
bool zr_identity_store_has(const zr_identity_store_t *st, const char *identity);

/* What a new TLS connection must verify about its peer. */
typedef struct zr_tls_peer_policy {
	/* client: the server's SPIFFE ID must equal one of these */
	const char *const *allowed_ids;
	size_t n_allowed_ids;
	/* server: the client's trust domain must equal this */
	const char *trust_domain;
} zr_tls_peer_policy_t;

/* Creates a client (server = false) or server connection presenting
 * `identity` (must be in the store). The policy strings are copied.
 * Returns NULL (reason in err) on failure. Worker thread. */
zr_tls_t *zr_tls_new(zr_identity_store_t *st, const char *identity, bool server, const zr_tls_peer_policy_t *policy,
		     char *err, size_t cap);
/* Frees the connection; on an asynchronous backend it first waits (at most
 * 2 s) for its records in flight. */
void zr_tls_free(zr_tls_t *tls);

/* Received ciphertext: appended to the connection's input. Returns 0 or
 * -ENOMEM. */
int zr_tls_feed(zr_tls_t *tls, const void *data, size_t len) __attribute__((warn_unused_result));

/* Lends `len` bytes of received ciphertext without copying them: they are
 * read (after anything fed before) until zr_tls_unlend, which copies what
 * OpenSSL has not consumed into the connection's own input. Lets a caller
 * process a receive buffer in place and give it back right after. */
void zr_tls_lend(zr_tls_t *tls, const void *data, size_t len);
int zr_tls_unlend(zr_tls_t *tls) __attribute__((warn_unused_result));

/* How established connections protect records: zring's record layer on
 * backend b (own = true) or OpenSSL's (own = false, b ignored; also when b is
 * NULL, as for ktls). Applies to connections created afterwards. Control
 * thread, before any zr_tls_new. Default before any call: zring's record
 * layer on the backend zr_aead_select(ZR_RECORD_CRYPTO_AUTO) picks (resolved
 * at the first zr_tls_new), or OpenSSL's when none is usable. A connection
 * whose suite the backend lacks keeps OpenSSL's record layer. */
void zr_tls_set_record_layer(const zr_aead_backend_t *b, bool own);

/* Handshakes in OpenSSL's async mode (SSL_MODE_ASYNC), for a provider that
 * offloads them to a device (qatprovider): zr_tls_handshake may then return
 * 2 and zr_tls_async_fds names what to poll. Control thread, before any
 * zr_tls_new. */
void zr_tls_set_async(bool on);
/* The fds of the async jobs this connection waits on (readable = call
 * zr_tls_handshake again); returns how many were written to fds (0 if more
 * than cap). Worker thread. */
size_t zr_tls_async_fds(zr_tls_t *tls, int *fds, size_t cap);

/* Advances the handshake with what has been fed. Returns 1 when complete
 * (peer verified against the policy), 0 when it needs more input (and maybe
 * has output to send), 2 when an async job waits on a device (async mode
 * only: poll zr_tls_async_fds, then call again), or a negative errno on
 * failure with a short reason
 * available from zr_tls_error() ("bad certificate", "peer identity
 * spiffe://... not allowed", "trust domain x != y", "certificate expired",
 * "handshake: <openssl reason>"). */
int zr_tls_handshake(zr_tls_t *tls) __attribute__((warn_unused_result));
const char *zr_tls_error(const zr_tls_t *tls);

/* After the handshake: the peer's verified SPIFFE URI (NUL-terminated). */
const char *zr_tls_peer_id(const zr_tls_t *tls);
/* The ALPN protocol agreed ("h2"), or "" if none. */
const char *zr_tls_alpn(const zr_tls_t *tls);

/* Decrypts into buf. Returns bytes (> 0), 0 on close_notify, -EAGAIN when
 * more input is needed, -ENOTCONN before the handshake completed, or another
 * negative errno on a fatal error (-ECONNRESET: the peer sent an alert,
 * e.g. it refused our certificate; -EBADMSG: a record failed to
 * authenticate; -EPROTO: a malformed or unexpected record), after which an
 * alert waits in the output and the connection must be closed.
 * Post-handshake messages (KeyUpdate) may queue output: flush after reading. */
ssize_t zr_tls_read(zr_tls_t *tls, void *buf, size_t cap);

/* Encrypts `len` bytes into the output. Small writes are gathered into one
 * record, sealed when the output is peeked. Returns 0 or a negative errno
 * (-EPIPE after zr_tls_close_notify). */
int zr_tls_write(zr_tls_t *tls, const void *data, size_t len) __attribute__((warn_unused_result));

/* Queues a close_notify alert on the output. */
void zr_tls_close_notify(zr_tls_t *tls);

/* Ciphertext waiting to be sent: a pointer to the first contiguous run and
 * its length (0 when nothing waits). The output is a chain of fixed-size
 * chunks, so the run stays valid and unmoved until it is consumed, whatever
 * is written meanwhile (an io_uring send may be in flight on it). */
size_t zr_tls_out_peek(zr_tls_t *tls, const void **data);
void zr_tls_out_consume(zr_tls_t *tls, size_t len);
size_t zr_tls_out_pending(const zr_tls_t *tls);

/* Asynchronous record crypto (recordCrypto: dpdk): records are sealed and
 * opened by a device, and the work completes later. zr_tls_read may then
 * return -EAGAIN although whole records were fed (they are being opened),
 * and zr_tls_out_peek offers output only up to the first record still being
 * sealed. The worker's loop calls zr_tls_crypto_poll on every turn: it polls
 * the device and calls `wake(arg)` of each connection whose records
 * completed (from the top of the loop, never inside another zr_tls_* call),
 * which should read and send again. Returns the batches still in flight on
 * this thread: while it is not 0, the loop should not sleep. On synchronous
 * backends nothing is ever in flight and wake is never called. Worker
 * thread. */
void zr_tls_set_wake(zr_tls_t *tls, void (*wake)(void *arg), void *arg);
unsigned zr_tls_crypto_poll(void);

/* Kernel TLS (recordCrypto: ktls). zr_tls_set_ktls(true) (control
 * thread, before any zr_tls_new) makes established connections on zring's
 * record layer candidates: the caller (hbone) sends what the handshake left
 * in the output, then zr_tls_ktls_begin attaches the socket's `tls` ULP and
 * gives it the write key: from then on zr_tls_write queues plaintext and
 * the kernel seals it. Receiving moves once the caller has stopped reading
 * the socket and the input ends on a record boundary (zr_tls_ktls_rx_gap
 * says how many bytes are missing to one): zr_tls_ktls_start_rx gives the
 * kernel the read key and sequence number, after which zr_tls_read returns
 * received bytes as they are. A receive that fails with -EIO is a record
 * that is not application data: zr_tls_ktls_recv_control takes it (alert,
 * NewSessionTicket; a KeyUpdate fails the connection: no rekeying).
 * zr_tls_close_notify then leaves close_notify (and zr_tls_ktls_fail an
 * alert) for zr_tls_ktls_send_control, which the caller runs once the output
 * is sent.
 * Each returns 0 or a negative errno; a failed begin or start_rx leaves the
 * connection working on zring's record layer (that direction). */
void zr_tls_set_ktls(bool on);
bool zr_tls_ktls_wanted(const zr_tls_t *tls);
int zr_tls_ktls_begin(zr_tls_t *tls, int fd) __attribute__((warn_unused_result));
size_t zr_tls_ktls_rx_gap(const zr_tls_t *tls);
int zr_tls_ktls_start_rx(zr_tls_t *tls) __attribute__((warn_unused_result));
int zr_tls_ktls_recv_control(zr_tls_t *tls);
/* A receive on a kernel TLS socket failed with err (-EBADMSG: a record
 * failed to authenticate; -EMSGSIZE: too long; others): the connection
 * fails and the matching alert waits for zr_tls_ktls_send_control. Returns
 * the connection's error. */
int zr_tls_ktls_fail(zr_tls_t *tls, int err);
void zr_tls_ktls_send_control(zr_tls_t *tls);
bool zr_tls_ktls_tx(const zr_tls_t *tls);
bool zr_tls_ktls_rx(const zr_tls_t *tls);
/* The kernel may have sealed close to the AEAD's record limit under one key
 * (it cannot update keys): the connection should be closed in an orderly
 * way and a new one opened. */
bool zr_tls_ktls_rekey_due(const zr_tls_t *tls);

/* Frees the output chunks the calling thread keeps for reuse (up to 24 of
 * 64 KiB) and the record layer's per-thread AEAD state
 * (zr_aead_thread_cleanup). Call from a worker thread before it exits. */
void zr_tls_thread_cleanup(void);

#endif
