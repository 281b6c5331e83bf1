/* AEAD backends for the TLS 1.3 record layer, behind one ops table.
 *
 * A backend is a const descriptor (zr_aead_backend_t) with designated
 * initialisers, as picotls does it; its private key context embeds the public
 * zr_aead_key_t as `super` (first member). Backends:
 *   ipsec-mb  intel-ipsec-mb (AES-NI / VAES / AVX-512), AES-GCM + ChaCha20-Poly1305
 *   openssl   EVP (portable; with an OpenSSL provider loaded, e.g. qatprovider,
 *             its ciphers are used)
 *   dpdk      rte_cryptodev (QAT PMD, or the aesni_gcm / openssl virtual
 *             devices); only in builds with -Ddpdk=enabled
 *   ktls      not an AEAD: keys go to the kernel; see zr_ktls_* below
 *
 * Records are sealed and opened in batches: one call takes many records so
 * that multi-buffer and device backends can work on them together. The
 * synchronous entry points (zr_aead_seal / zr_aead_open) return when every
 * record of the batch is done; asynchronous devices are driven through
 * submit/poll underneath (zr_aead_submit + zr_aead_poll, completion callback).
 *
 * Threads: zr_aead_select and zr_aead_setup run once on the control thread at
 * start-up; keys are created, used and freed by one worker thread (backends
 * keep per-thread state: an IMB_MGR, a DPDK queue pair);
 * zr_aead_thread_cleanup frees it when a worker exits. */
#ifndef ZR_CRYPTO_AEAD_H
#define ZR_CRYPTO_AEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl/config-t.h"

typedef enum zr_aead_alg {
	ZR_AEAD_AES_128_GCM,	   /* TLS_AES_128_GCM_SHA256 */
	ZR_AEAD_AES_256_GCM,	   /* TLS_AES_256_GCM_SHA384 */
	ZR_AEAD_CHACHA20_POLY1305, /* TLS_CHACHA20_POLY1305_SHA256 */
	ZR_AEAD_ALG_COUNT,
} zr_aead_alg_t;

#define ZR_AEAD_TAG_LEN	  16
#define ZR_AEAD_IV_LEN	  12
#define ZR_AEAD_KEY_MAX	  32
#define ZR_AEAD_BATCH_MAX 64 /* records per call */

/* One record to seal or open. in and out may be equal (in place) or not
 * overlap at all.
 *
 * Sealing may take its plaintext in two runs, in[0..len) then in2[0..len2),
 * as if they were one: out gets len + len2 bytes and the tag covers both.
 * The record layer seals content || type this way straight from the
 * caller's bytes. Only where the key's backend says so
 * (zr_aead_two_segments); then in2 does not overlap out. Opening takes one
 * run: len2 must be 0 there (a record with len2 != 0 fails with -EINVAL).
 * Records built with a designated initialiser or zeroed get in2 = NULL,
 * len2 = 0: one run, as before. */
typedef struct zr_aead_rec {
	const uint8_t *in; /* seal: plaintext; open: ciphertext without the tag */
	uint8_t *out;	   /* len + len2 bytes of output */
	size_t len;
	const uint8_t *in2; /* seal: the second run of plaintext, or NULL */
	size_t len2;
	const uint8_t *aad; /* the 5-byte record header */
	size_t aad_len;
	uint8_t nonce[ZR_AEAD_IV_LEN];
	uint8_t *tag; /* seal: 16 bytes written here; open: the tag to check (not modified) */
	int status;   /* after the call: 0, or -EBADMSG (open: authentication failed) */
} zr_aead_rec_t;

typedef struct zr_aead_backend zr_aead_backend_t;

/* A key in one direction of one connection. */
typedef struct zr_aead_key {
	const zr_aead_backend_t *backend;
	zr_aead_alg_t alg;
} zr_aead_key_t;

/* Called once per submitted batch when every record is done; status
 * fields are set. May run inside zr_aead_submit (synchronous backends) or
 * inside zr_aead_poll (devices), on the submitting thread. */
typedef void (*zr_aead_done_cb)(void *arg, zr_aead_rec_t *recs, size_t n);

struct zr_aead_backend {
	const char *name; /* "ipsec-mb", "openssl", "dpdk" */
	bool async;	  /* completes in poll, not in submit */
	/* Bit (1u << alg) set: seal takes in2/len2 for alg. */
	uint32_t two_segments;
	/* Process-wide set-up (load libraries, probe CPU/device, EAL init).
	 * Returns 0 or a negative errno with the reason in err. */
	int (*setup)(const char *openssl_provider, char *err, size_t cap);
	/* Which algorithms this backend does here. */
	bool (*supports)(zr_aead_alg_t alg);
	int (*key_new)(zr_aead_alg_t alg, const uint8_t *key, zr_aead_key_t **out);
	void (*key_free)(zr_aead_key_t *key);
	/* Seal (encrypt = true) or open n <= ZR_AEAD_BATCH_MAX records. Returns
	 * 0 (cb called or to be called from poll) or -EAGAIN (device queue full:
	 * nothing was taken), -ENOMEM. An asynchronous backend reads in, in2,
	 * aad, nonce and (open) tag before submit returns, so those bytes may
	 * change afterwards; it writes out, tag (seal) and status before cb, so
	 * recs[] and the out buffers must stay until then. */
	int (*submit)(zr_aead_key_t *key, bool encrypt, zr_aead_rec_t *recs, size_t n, zr_aead_done_cb cb, void *arg);
	/* Drives completions of this thread's outstanding batches; returns the
	 * number of batches completed. NULL for synchronous backends. */
	int (*poll)(void);
	void (*thread_cleanup)(void);
	/* Short description for logs and /config_dump ("intel-ipsec-mb 1.3, VAES/AVX-512") */
	const char *(*describe)(void);
	/* Optional (devices): memory the device can read and write in place
	 * (DMA-able). Records sealed or opened in place inside it go to the
	 * device without a copy; elsewhere the backend copies. mem_alloc
	 * returns NULL when none is left (the caller then uses malloc). Any
	 * thread. */
	void *(*mem_alloc)(size_t size);
	void (*mem_free)(void *p);
	/* Optional (devices): records this thread submitted so far that the
	 * device worked on in place, and that had to be copied to it. */
	void (*counts)(uint64_t *in_place, uint64_t *copied);
};

/* The backends built into this binary, NULL-terminated. */
extern const zr_aead_backend_t *const zr_aead_backends[];
const zr_aead_backend_t *zr_aead_backend_find(const char *name);

/* Resolves the config's recordCrypto choice to a backend and sets it up:
 * auto = ipsec-mb when the CPU has AES-NI (and the library is usable), else
 * openssl; a named backend that is not built in or not usable is an error
 * naming it and why ("record crypto backend 'dpdk' is not built in: rebuild
 * with -Ddpdk=enabled"). ktls yields *out = NULL and is checked with
 * zr_ktls_available. Control thread, start-up. */
int zr_aead_select(zr_record_crypto_t want, const char *openssl_provider, const zr_aead_backend_t **out, char *err,
		   size_t cap) __attribute__((warn_unused_result));

/* Convenience wrappers over the ops table (worker thread). */
int zr_aead_key_new(const zr_aead_backend_t *b, zr_aead_alg_t alg, const uint8_t *key, zr_aead_key_t **out)
	__attribute__((warn_unused_result));
void zr_aead_key_free(zr_aead_key_t *key);
/* Synchronous batches of any size: submitted in chunks of
 * ZR_AEAD_BATCH_MAX, polled until done. Return 0 when every record
 * succeeded, else -EBADMSG (open: see each record's status) or -errno. */
int zr_aead_seal(zr_aead_key_t *key, zr_aead_rec_t *recs, size_t n) __attribute__((warn_unused_result));
int zr_aead_open(zr_aead_key_t *key, zr_aead_rec_t *recs, size_t n) __attribute__((warn_unused_result));
void zr_aead_thread_cleanup(void);

/* Whether seals with this key may use in2/len2 (see zr_aead_rec_t). */
bool zr_aead_two_segments(const zr_aead_key_t *key);

size_t zr_aead_key_len(zr_aead_alg_t alg); /* 16 or 32 */
const char *zr_aead_alg_name(zr_aead_alg_t alg);

/* Kernel TLS: true when the kernel offers the `tls` ULP (probed once on a
 * loopback TCP connection); reason says why not. */
bool zr_ktls_available(char *reason, size_t cap);

/* Fills the kernel's TLS 1.3 crypto info for setsockopt(SOL_TLS, TLS_TX or
 * TLS_RX): struct tls12_crypto_info_aes_gcm_128 / _aes_gcm_256 /
 * _chacha20_poly1305 from <linux/tls.h>, from the traffic key, the 12-byte
 * static iv and the next record's sequence number. info is caller-owned, cap
 * its size. Returns the struct's size (the setsockopt length) or -EINVAL
 * (unknown alg, cap too small). Any thread. The struct holds key material:
 * the caller wipes it (OPENSSL_cleanse) after the setsockopt. */
int zr_ktls_crypto_info(zr_aead_alg_t alg, const uint8_t *key, const uint8_t iv[ZR_AEAD_IV_LEN], uint64_t seq,
			void *info, size_t cap) __attribute__((warn_unused_result));

#endif
