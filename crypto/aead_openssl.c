/* The openssl AEAD backend: EVP, one EVP_CIPHER_CTX per key direction with
 * the key schedule done once, only the nonce set per record. Ciphers are
 * fetched (EVP_CIPHER_fetch) preferring the configured provider, so a
 * hardware provider (qatprovider) does the records when it implements them. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include "crypto/aead-int.h"

typedef struct openssl_key {
	zr_aead_key_t super;
	EVP_CIPHER_CTX *ctx;
} openssl_key_t;

/* Set up on the control thread before workers exist; read-only after. */
static EVP_CIPHER *ciphers[ZR_AEAD_ALG_COUNT];
static char description[160];

static const char *const cipher_names[ZR_AEAD_ALG_COUNT] = {
	[ZR_AEAD_AES_128_GCM] = "AES-128-GCM",
	[ZR_AEAD_AES_256_GCM] = "AES-256-GCM",
	[ZR_AEAD_CHACHA20_POLY1305] = "ChaCha20-Poly1305",
};

/* The first error OpenSSL queued (the cause; later ones only say who called),
 * with the text attached to it: for a provider that failed to load, dlopen's
 * message naming the file it looked for. Empties the queue. */
static void openssl_reason(char *buf, size_t cap)
{
	const char *data = NULL;
	int flags = 0;
	unsigned long e;
	bool have = false;
	snprintf(buf, cap, "no reason given");
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags))) {
		if (have)
			continue;
		const char *reason = ERR_reason_error_string(e);
		const char *text = (flags & ERR_TXT_STRING) && data ? data : "";
		if (reason && text[0])
			snprintf(buf, cap, "%s: %s", reason, text);
		else if (reason)
			snprintf(buf, cap, "%s", reason);
		else
			ERR_error_string_n(e, buf, cap);
		have = true;
	}
}

/* At exit, before OpenSSL's own cleanup (atexit runs in reverse order and
 * OpenSSL registered first): dropping the fetched ciphers releases the
 * providers, so leak checkers see nothing held. */
static void free_ciphers(void)
{
	for (int a = 0; a < ZR_AEAD_ALG_COUNT; a++) {
		EVP_CIPHER_free(ciphers[a]);
		ciphers[a] = NULL;
	}
}

static int openssl_setup(const char *provider, char *err, size_t cap)
{
	static bool registered;
	if (!registered) {
		OPENSSL_init_crypto(0, NULL); /* so that its atexit comes first */
		atexit(free_ciphers);
		registered = true;
	}
	char props[96] = "";
	if (provider && provider[0]) {
		/* Loading any provider explicitly stops the default one from
		 * being loaded implicitly: load it too, for what the named
		 * provider does not implement. Loaded providers stay for the
		 * life of the process. */
		if (!OSSL_PROVIDER_load(NULL, "default")) {
			char why[160];
			openssl_reason(why, sizeof(why));
			snprintf(err, cap, "OpenSSL provider 'default' could not be loaded: %s", why);
			return -ENOENT;
		}
		if (!OSSL_PROVIDER_load(NULL, provider)) {
			char why[160];
			openssl_reason(why, sizeof(why));
			snprintf(err, cap, "OpenSSL provider '%s' could not be loaded: %s", provider, why);
			return -ENOENT;
		}
		/* '?': prefer the provider's implementation, fall back to any. */
		snprintf(props, sizeof(props), "?provider=%s", provider);
	}
	for (int a = 0; a < ZR_AEAD_ALG_COUNT; a++) {
		EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, cipher_names[a], props[0] ? props : NULL);
		if (!c) {
			/* ChaCha20 may be missing (FIPS); the backend then does the
			 * AES suites only, which supports() says. */
			ERR_clear_error();
			continue;
		}
		EVP_CIPHER_free(ciphers[a]);
		ciphers[a] = c;
	}
	if (!ciphers[ZR_AEAD_AES_128_GCM]) {
		snprintf(err, cap, "OpenSSL has no AES-128-GCM");
		return -ENOTSUP;
	}
	const OSSL_PROVIDER *p = EVP_CIPHER_get0_provider(ciphers[ZR_AEAD_AES_128_GCM]);
	snprintf(description, sizeof(description), "%s, provider %s", OpenSSL_version(OPENSSL_VERSION),
		 p ? OSSL_PROVIDER_get0_name(p) : "?");
	return 0;
}

static bool openssl_supports(zr_aead_alg_t alg)
{
	return (unsigned)alg < ZR_AEAD_ALG_COUNT && ciphers[alg];
}

static int openssl_key_new(zr_aead_alg_t alg, const uint8_t *key, zr_aead_key_t **out)
{
	openssl_key_t *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->super.backend = &zr_aead_openssl;
	k->super.alg = alg;
	k->ctx = EVP_CIPHER_CTX_new();
	/* Direction 1 for now; each record re-initialises with its own. For
	 * both AEADs the key schedule does not depend on the direction. */
	if (!k->ctx || !EVP_CipherInit_ex(k->ctx, ciphers[alg], NULL, key, NULL, 1)) {
		ERR_clear_error();
		EVP_CIPHER_CTX_free(k->ctx);
		free(k);
		return -ENOMEM;
	}
	*out = &k->super;
	return 0;
}

static void openssl_key_free(zr_aead_key_t *key)
{
	openssl_key_t *k = (openssl_key_t *)key;
	EVP_CIPHER_CTX_free(k->ctx); /* cleanses the key schedule */
	free(k);
}

/* Two runs of plaintext are two updates; each output goes where the last
 * left off (a provider may hold bytes back until the final call). */
static int seal_one(EVP_CIPHER_CTX *ctx, zr_aead_rec_t *r)
{
	int aadl = 0, outl = 0, outl2 = 0, finl = 0;
	if (!EVP_CipherInit_ex(ctx, NULL, NULL, NULL, r->nonce, 1) ||
	    (r->aad_len && !EVP_CipherUpdate(ctx, NULL, &aadl, r->aad, (int)r->aad_len)) ||
	    (r->len && !EVP_CipherUpdate(ctx, r->out, &outl, r->in, (int)r->len)) ||
	    (r->len2 && !EVP_CipherUpdate(ctx, r->out + outl, &outl2, r->in2, (int)r->len2)) ||
	    !EVP_CipherFinal_ex(ctx, r->out + outl + outl2, &finl) ||
	    (size_t)outl + (size_t)outl2 + (size_t)finl != r->len + r->len2 ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, ZR_AEAD_TAG_LEN, r->tag)) {
		ERR_clear_error();
		return -EIO;
	}
	return 0;
}

static int open_one(EVP_CIPHER_CTX *ctx, zr_aead_rec_t *r)
{
	uint8_t tag[ZR_AEAD_TAG_LEN];
	int outl = 0, finl = 0;
	memcpy(tag, r->tag, sizeof(tag)); /* the ctrl takes a non-const pointer */
	if (!EVP_CipherInit_ex(ctx, NULL, NULL, NULL, r->nonce, 0) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, ZR_AEAD_TAG_LEN, tag) ||
	    (r->aad_len && !EVP_CipherUpdate(ctx, NULL, &outl, r->aad, (int)r->aad_len)) ||
	    (r->len && !EVP_CipherUpdate(ctx, r->out, &outl, r->in, (int)r->len)) ||
	    EVP_CipherFinal_ex(ctx, r->out + outl, &finl) <= 0) {
		ERR_clear_error();
		/* EVP wrote the plaintext before it checked the tag: leave no
		 * unauthenticated bytes behind. */
		OPENSSL_cleanse(r->out, r->len);
		return -EBADMSG;
	}
	return 0;
}

static int openssl_submit(zr_aead_key_t *key, bool encrypt, zr_aead_rec_t *recs, size_t n, zr_aead_done_cb cb,
			  void *arg)
{
	openssl_key_t *k = (openssl_key_t *)key;
	for (size_t i = 0; i < n; i++)
		if (recs[i].len > INT_MAX || recs[i].aad_len > INT_MAX || recs[i].len2 > INT_MAX ||
		    (recs[i].len2 && !encrypt))
			return -EINVAL;
	for (size_t i = 0; i < n; i++)
		recs[i].status = encrypt ? seal_one(k->ctx, &recs[i]) : open_one(k->ctx, &recs[i]);
	cb(arg, recs, n);
	return 0;
}

static void openssl_thread_cleanup(void)
{
	/* EVP keeps per-thread error queues; nothing else is per thread. */
	OPENSSL_thread_stop();
}

static const char *openssl_describe(void)
{
	return description[0] ? description : OpenSSL_version(OPENSSL_VERSION);
}

const zr_aead_backend_t zr_aead_openssl = {
	.name = "openssl",
	.async = false,
	.two_segments = 1u << ZR_AEAD_AES_128_GCM | 1u << ZR_AEAD_AES_256_GCM | 1u << ZR_AEAD_CHACHA20_POLY1305,
	.setup = openssl_setup,
	.supports = openssl_supports,
	.key_new = openssl_key_new,
	.key_free = openssl_key_free,
	.submit = openssl_submit,
	.poll = NULL,
	.thread_cleanup = openssl_thread_cleanup,
	.describe = openssl_describe,
};
