/* A plain OpenSSL endpoint over memory BIOs (OpenSSL's own record layer),
 * the independent peer of zr_tls in unit tests. Header-only; each test
 * builds its SSL_CTX its own way (raw_init) with these pieces. */
#ifndef ZR_TESTS_RAW_TLS_H
#define ZR_TESTS_RAW_TLS_H

#include <openssl/err.h>
#include <openssl/ssl.h>

typedef struct raw {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *in, *out; /* what it reads, what it wrote */
} raw_t;

/* Server side ALPN: h2 or refuse. */
static int raw_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned inlen,
		    void *arg)
{
	static const unsigned char h2[] = {2, 'h', '2'};
	unsigned char *sel;
	if (SSL_select_next_proto(&sel, outlen, h2, sizeof(h2), in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* Asks for the peer's certificate but accepts any: the tests check zring's
 * side of the verification, not OpenSSL's. */
static int raw_accept_any(int ok, X509_STORE_CTX *sc)
{
	return 1;
}

static void raw_free(raw_t *r)
{
	SSL_free(r->ssl);
	SSL_CTX_free(r->ctx);
	ERR_clear_error();
}

#endif
