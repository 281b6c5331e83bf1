/* The AEAD backend registry, the choice of backend at start-up, and the
 * synchronous wrappers over submit/poll. */
#include "crypto/aead.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "crypto/aead-int.h"

const zr_aead_backend_t *const zr_aead_backends[] = {
#ifdef ZR_HAVE_IPSECMB
	&zr_aead_ipsecmb,
#endif
	&zr_aead_openssl,
#ifdef ZR_HAVE_DPDK
	&zr_aead_dpdk,
#endif
	NULL,
};

#define NBACKENDS (sizeof(zr_aead_backends) / sizeof(zr_aead_backends[0]) - 1)

/* Which backends went through setup(): their per-thread state is what
 * zr_aead_thread_cleanup has to free. Written on the control thread before
 * workers start, read by workers afterwards. */
static bool set_up[NBACKENDS ? NBACKENDS : 1];

const zr_aead_backend_t *zr_aead_backend_find(const char *name)
{
	for (size_t i = 0; zr_aead_backends[i]; i++)
		if (strcmp(zr_aead_backends[i]->name, name) == 0)
			return zr_aead_backends[i];
	return NULL;
}

static int setup_backend(const zr_aead_backend_t *b, const char *openssl_provider, char *err, size_t cap)
{
	char why[512] = "";
	int rc = b->setup(openssl_provider, why, sizeof(why));
	if (rc < 0) {
		snprintf(err, cap, "record crypto backend '%s' is not usable: %s", b->name,
			 why[0] ? why : strerror(-rc));
		return rc;
	}
	for (size_t i = 0; zr_aead_backends[i]; i++)
		if (zr_aead_backends[i] == b)
			set_up[i] = true;
	return 0;
}

static int select_named(const char *name, const char *rebuild, const char *openssl_provider,
			const zr_aead_backend_t **out, char *err, size_t cap)
{
	const zr_aead_backend_t *b = zr_aead_backend_find(name);
	if (!b) {
		snprintf(err, cap, "record crypto backend '%s' is not built in: %s", name, rebuild);
		return -ENOTSUP;
	}
	int rc = setup_backend(b, openssl_provider, err, cap);
	if (rc < 0)
		return rc;
	*out = b;
	return 0;
}

int zr_aead_select(zr_record_crypto_t want, const char *openssl_provider, const zr_aead_backend_t **out, char *err,
		   size_t cap)
{
	*out = NULL;
	switch (want) {
	case ZR_RECORD_CRYPTO_AUTO: {
		/* ipsec-mb's setup fails without AES-NI, and then openssl (which
		 * has its own fallbacks) is the fastest thing left. */
		const zr_aead_backend_t *ipsecmb = zr_aead_backend_find("ipsec-mb");
		char ignored[256];
		if (ipsecmb && setup_backend(ipsecmb, openssl_provider, ignored, sizeof(ignored)) == 0) {
			*out = ipsecmb;
			return 0;
		}
		return select_named("openssl", "", openssl_provider, out, err, cap);
	}
	case ZR_RECORD_CRYPTO_IPSEC_MB:
		return select_named("ipsec-mb", "rebuild with libipsec-mb-dev installed (x86-64 only)",
				    openssl_provider, out, err, cap);
	case ZR_RECORD_CRYPTO_OPENSSL:
		return select_named("openssl", "", openssl_provider, out, err, cap);
	case ZR_RECORD_CRYPTO_DPDK:
		return select_named("dpdk", "rebuild with -Ddpdk=enabled", openssl_provider, out, err, cap);
	case ZR_RECORD_CRYPTO_KTLS: {
		char why[200];
		if (!zr_ktls_available(why, sizeof(why))) {
			snprintf(err, cap, "kernel TLS: %s", why);
			return -ENOTSUP;
		}
		return 0;
	}
	}
	snprintf(err, cap, "record crypto: unknown choice %d", (int)want);
	return -EINVAL;
}

int zr_aead_key_new(const zr_aead_backend_t *b, zr_aead_alg_t alg, const uint8_t *key, zr_aead_key_t **out)
{
	*out = NULL;
	if ((unsigned)alg >= ZR_AEAD_ALG_COUNT || !b->supports(alg))
		return -ENOTSUP;
	return b->key_new(alg, key, out);
}

void zr_aead_key_free(zr_aead_key_t *key)
{
	if (key)
		key->backend->key_free(key);
}

/* What zr_aead_seal/open wait for: the batches still out and the first
 * record that failed. */
typedef struct sync_wait {
	size_t pending;
	int status;
} sync_wait_t;

static void sync_done(void *arg, zr_aead_rec_t *recs, size_t n)
{
	sync_wait_t *w = arg;
	for (size_t i = 0; i < n; i++)
		if (recs[i].status && !w->status)
			w->status = recs[i].status;
	w->pending--;
}

/* Submits every chunk the backend takes, polling when a device queue is
 * full, then polls until the last batch is back: device backends overlap the
 * chunks, synchronous ones finish each inside submit. */
static int run_sync(zr_aead_key_t *key, bool encrypt, zr_aead_rec_t *recs, size_t n)
{
	const zr_aead_backend_t *b = key->backend;
	sync_wait_t w = {0};
	int rc = 0;
	for (size_t done = 0; done < n;) {
		size_t chunk = n - done < ZR_AEAD_BATCH_MAX ? n - done : ZR_AEAD_BATCH_MAX;
		w.pending++;
		rc = b->submit(key, encrypt, recs + done, chunk, sync_done, &w);
		if (rc == -EAGAIN && b->poll) {
			w.pending--;
			if (b->poll() < 0)
				break;
			continue;
		}
		if (rc < 0) {
			w.pending--;
			break;
		}
		done += chunk;
	}
	while (w.pending && b->poll)
		if (b->poll() < 0 && !rc)
			rc = -EIO;
	if (rc < 0)
		return rc;
	return w.status;
}

int zr_aead_seal(zr_aead_key_t *key, zr_aead_rec_t *recs, size_t n)
{
	return run_sync(key, true, recs, n);
}

int zr_aead_open(zr_aead_key_t *key, zr_aead_rec_t *recs, size_t n)
{
	return run_sync(key, false, recs, n);
}

void zr_aead_thread_cleanup(void)
{
	for (size_t i = 0; zr_aead_backends[i]; i++)
		if (set_up[i] && zr_aead_backends[i]->thread_cleanup)
			zr_aead_backends[i]->thread_cleanup();
}

bool zr_aead_two_segments(const zr_aead_key_t *key)
{
	return key && (unsigned)key->alg < ZR_AEAD_ALG_COUNT && (key->backend->two_segments >> key->alg & 1u);
}

size_t zr_aead_key_len(zr_aead_alg_t alg)
{
	return alg == ZR_AEAD_AES_128_GCM ? 16 : 32;
}

const char *zr_aead_alg_name(zr_aead_alg_t alg)
{
	switch (alg) {
	case ZR_AEAD_AES_128_GCM:
		return "AES-128-GCM";
	case ZR_AEAD_AES_256_GCM:
		return "AES-256-GCM";
	case ZR_AEAD_CHACHA20_POLY1305:
		return "ChaCha20-Poly1305";
	case ZR_AEAD_ALG_COUNT:
		break;
	}
	return "unknown";
}
