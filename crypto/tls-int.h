/* Between identity.c (which builds the SSL_CTXs) and tls.c (which owns
 * the per-connection policy the SSL_CTX callbacks enforce). Not for other
 * modules. */
#ifndef ZR_CRYPTO_TLS_INT_H
#define ZR_CRYPTO_TLS_INT_H

#include <stdbool.h>
#include <openssl/ssl.h>

#include "crypto/tls.h"

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
