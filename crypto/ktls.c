/* Kernel TLS: whether the `tls` ULP exists, and the crypto info the kernel
 * takes for it. The record layer hands keys to the kernel with these; no
 * record crypto happens here. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto/aead.h"

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool probe_ok;
static char probe_reason[160];

/* The ULP can only be attached to an established connection, so the probe
 * needs a real one: a listener and a client on 127.0.0.1, ephemeral port. */
static void probe(void)
{
	int lfd = -1, cfd = -1, afd = -1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t salen = sizeof(sa);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
		snprintf(probe_reason, sizeof(probe_reason), "could not probe for the tls ULP: loopback listener: %s",
			 strerror(errno));
		goto out;
	}
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    (afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
		snprintf(probe_reason, sizeof(probe_reason), "could not probe for the tls ULP: loopback connection: %s",
			 strerror(errno));
		goto out;
	}
	if (setsockopt(cfd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0) {
		probe_ok = true;
	} else if (errno == ENOENT || errno == ENOPROTOOPT) {
		snprintf(probe_reason, sizeof(probe_reason), "the tls ULP is not available (modprobe tls)");
	} else {
		snprintf(probe_reason, sizeof(probe_reason), "the tls ULP could not be attached: %s", strerror(errno));
	}
out:
	if (afd >= 0)
		close(afd);
	if (cfd >= 0)
		close(cfd);
	if (lfd >= 0)
		close(lfd);
}

bool zr_ktls_available(char *reason, size_t cap)
{
	pthread_once(&probe_once, probe);
	if (!probe_ok && reason && cap)
		snprintf(reason, cap, "%s", probe_reason);
	return probe_ok;
}

static void put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

/* TLS 1.3's per-record nonce is iv XOR seq; the kernel takes the iv split
 * into a salt (first 4 bytes, AES-GCM) and an explicit part, plus seq. */
#define FILL(info_t, salt_len)                                 \
	do {                                                   \
		info_t *ci = info;                             \
		if (cap < sizeof(*ci))                         \
			return -EINVAL;                        \
		memset(ci, 0, sizeof(*ci));                    \
		ci->info.version = TLS_1_3_VERSION;            \
		ci->info.cipher_type = cipher;                 \
		memcpy(ci->salt, iv, salt_len);                \
		memcpy(ci->iv, iv + salt_len, sizeof(ci->iv)); \
		memcpy(ci->key, key, sizeof(ci->key));         \
		put_be64(ci->rec_seq, seq);                    \
		return (int)sizeof(*ci);                       \
	} while (0)

int zr_ktls_crypto_info(zr_aead_alg_t alg, const uint8_t *key, const uint8_t iv[ZR_AEAD_IV_LEN], uint64_t seq,
			void *info, size_t cap)
{
	switch (alg) {
	case ZR_AEAD_AES_128_GCM: {
		const unsigned short cipher = TLS_CIPHER_AES_GCM_128;
		FILL(struct tls12_crypto_info_aes_gcm_128, TLS_CIPHER_AES_GCM_128_SALT_SIZE);
	}
	case ZR_AEAD_AES_256_GCM: {
		const unsigned short cipher = TLS_CIPHER_AES_GCM_256;
		FILL(struct tls12_crypto_info_aes_gcm_256, TLS_CIPHER_AES_GCM_256_SALT_SIZE);
	}
	case ZR_AEAD_CHACHA20_POLY1305: {
		const unsigned short cipher = TLS_CIPHER_CHACHA20_POLY1305;
		FILL(struct tls12_crypto_info_chacha20_poly1305, TLS_CIPHER_CHACHA20_POLY1305_SALT_SIZE);
	}
	case ZR_AEAD_ALG_COUNT:
		break;
	}
	return -EINVAL;
}
