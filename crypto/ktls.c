/* Kernel TLS: whether the `tls` ULP exists, the crypto info the kernel
 * takes for it, and a connection's hand-off to it (tls.h: zr_tls_ktls_*):
 * the traffic keys and sequence numbers of zring's record layer go to the
 * socket, after which the kernel seals what we send and opens what we
 * receive. */
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

#include <openssl/crypto.h>

#include "crypto/aead.h"
#include "crypto/record.h"
#include "crypto/tls-int.h"

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

/* --- a connection handed to the kernel (tls.h: zr_tls_ktls_*) --- */

static bool ktls_wanted;

void zr_tls_set_ktls(bool on)
{
	ktls_wanted = on;
}

bool zr_tls_ktls_wanted(const zr_tls_t *tls)
{
	return ktls_wanted && tls->own && tls->state == ZR_TLS_ESTABLISHED && !tls->ktls_on && !tls->rec.as &&
	       !tls->rec.write_closed;
}

bool zr_tls_ktls_tx(const zr_tls_t *tls)
{
	return tls->ktls_on;
}

bool zr_tls_ktls_rx(const zr_tls_t *tls)
{
	return tls->ktls_rx;
}

bool zr_tls_ktls_rekey_due(const zr_tls_t *tls)
{
	return tls->ktls_on && tls->ktls_records >= ZR_RECORD_KEY_UPDATE_DEFAULT - (1u << 20);
}

/* One direction's key, IV and next sequence number to the socket. */
static int set_dir(int fd, int optname, const zr_record_dir_t *d)
{
	union {
		struct tls12_crypto_info_aes_gcm_128 a128;
		struct tls12_crypto_info_aes_gcm_256 a256;
		struct tls12_crypto_info_chacha20_poly1305 chacha;
	} info;
	uint8_t key[ZR_AEAD_KEY_MAX];
	int len = zr_record_dir_key(d, key);
	if (!len)
		len = zr_ktls_crypto_info(d->alg, key, d->iv, d->seq, &info, sizeof(info));
	OPENSSL_cleanse(key, sizeof(key));
	int rc = len < 0 ? len : setsockopt(fd, SOL_TLS, optname, &info, (socklen_t)len) ? -errno : 0;
	OPENSSL_cleanse(&info, sizeof(info));
	return rc;
}

int zr_tls_ktls_begin(zr_tls_t *tls, int fd)
{
	if (!zr_tls_ktls_wanted(tls))
		return -EINVAL;
	/* what is queued is sealed already, by us or by OpenSSL */
	if (tls->out_len || tls->rec.pend_hdr || tls->rec.n_unsealed)
		return -EBUSY;
	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0)
		return -errno;
	/* A ULP without keys leaves the socket plain TCP: on failure the
	 * connection goes on as it was. */
	int rc = set_dir(fd, TLS_TX, &tls->rec.wr);
	if (rc)
		return rc;
	tls->ktls_on = true;
	tls->ktls_fd = fd;
	tls->ktls_records = 0;
	return 0;
}

size_t zr_tls_ktls_rx_gap(const zr_tls_t *tls)
{
	size_t have = tls->in_tail - tls->in_head;
	if (!tls->ktls_on || tls->ktls_rx || !have || tls->lent_len)
		return 0;
	if (have < ZR_RECORD_HEADER_LEN)
		return ZR_RECORD_HEADER_LEN - have;
	const uint8_t *p = tls->in + tls->in_head;
	size_t len = (size_t)p[3] << 8 | p[4];
	if (len > ZR_RECORD_CIPHER_MAX)
		return 0; /* refused when read */
	return ZR_RECORD_HEADER_LEN + len > have ? ZR_RECORD_HEADER_LEN + len - have : 0;
}

int zr_tls_ktls_start_rx(zr_tls_t *tls)
{
	const zr_record_t *r = &tls->rec;
	if (!tls->ktls_on || tls->ktls_rx)
		return -EINVAL;
	if (tls->state != ZR_TLS_ESTABLISHED)
		return tls->fail_rc;
	/* The kernel starts at a record boundary, after everything we read. */
	if (tls->in_tail != tls->in_head || tls->lent_len || r->stage_len || r->hs_have || r->hs_left || r->read_closed)
		return -EBUSY;
	int rc = set_dir(tls->ktls_fd, TLS_RX, &r->rd);
	if (!rc)
		tls->ktls_rx = true;
	return rc;
}

ssize_t zr_ktls_read(zr_tls_t *tls, void *buf, size_t cap)
{
	size_t got = zr_tls_take_input(tls, buf, cap);
	if (got)
		return (ssize_t)got;
	return tls->rec.read_closed ? 0 : -EAGAIN;
}

int zr_tls_ktls_recv_control(zr_tls_t *tls)
{
	uint8_t data[ZR_RECORD_PLAIN_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(unsigned char))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf)};
	if (!tls->ktls_rx)
		return -EINVAL;
	ssize_t n = recvmsg(tls->ktls_fd, &msg, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (n < 0) {
		int rc = -errno;
		tls->state = ZR_TLS_FAILED;
		return zr_tls_set_error(tls, rc == -EBADMSG ? -EBADMSG : -EPROTO, "read: kernel TLS: %s",
					strerror(-rc));
	}
	unsigned char type = ZR_TLS_CT_APPLICATION_DATA;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
			type = *CMSG_DATA(c);
	switch (type) {
	case ZR_TLS_CT_APPLICATION_DATA: /* data after all: keep it */
		return zr_tls_feed(tls, data, (size_t)n);
	case ZR_TLS_CT_ALERT:
		if (n == 2 && data[1] == ZR_TLS_ALERT_CLOSE_NOTIFY) {
			tls->rec.read_closed = true;
			return 0;
		}
		if (n == 2 && data[1] == ZR_TLS_ALERT_USER_CANCELED)
			return 0;
		tls->state = ZR_TLS_FAILED;
		return zr_tls_set_error(tls, -ECONNRESET, "read: peer sent alert %u", n == 2 ? data[1] : 0u);
	case ZR_TLS_CT_HANDSHAKE:
		/* NewSessionTicket (to a client) is of no use; a KeyUpdate
		 * would need keys the kernel cannot take after the first ones */
		if (n >= 4 && data[0] == 4 && !tls->server)
			return 0;
		tls->state = ZR_TLS_FAILED;
		return zr_tls_set_error(tls, -EPROTO, "read: %s on a kernel TLS connection",
					n >= 1 && data[0] == 24 ? "peer sent a KeyUpdate" :
								  "unexpected handshake message");
	default:
		tls->state = ZR_TLS_FAILED;
		return zr_tls_set_error(tls, -EPROTO, "read: unexpected record type %u on a kernel TLS connection",
					type);
	}
}

void zr_ktls_queue_alert(zr_tls_t *tls, uint8_t level, uint8_t desc)
{
	if (!tls->ktls_on || tls->rec.write_closed || tls->ktls_alert_pending)
		return;
	tls->ktls_alert[0] = level;
	tls->ktls_alert[1] = desc;
	tls->ktls_alert_pending = true;
}

int zr_tls_ktls_fail(zr_tls_t *tls, int err)
{
	uint8_t alert = err == -EMSGSIZE ? ZR_TLS_ALERT_RECORD_OVERFLOW :
			err == -EBADMSG	 ? ZR_TLS_ALERT_BAD_RECORD_MAC :
					   ZR_TLS_ALERT_DECODE_ERROR;
	if (tls->state == ZR_TLS_FAILED)
		return tls->fail_rc;
	zr_ktls_queue_alert(tls, 2, alert);
	tls->state = ZR_TLS_FAILED;
	return zr_tls_set_error(tls, err == -EBADMSG ? -EBADMSG : -EPROTO, "read: kernel TLS: %s (sending alert %u)",
				strerror(-err), alert);
}

void zr_tls_ktls_send_control(zr_tls_t *tls)
{
	union {
		char buf[CMSG_SPACE(sizeof(unsigned char))];
		struct cmsghdr align;
	} cbuf;
	if (!tls->ktls_on || !tls->ktls_alert_pending || tls->out_len)
		return;
	memset(&cbuf, 0, sizeof(cbuf));
	struct iovec iov = {.iov_base = tls->ktls_alert, .iov_len = sizeof(tls->ktls_alert)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_TLS;
	c->cmsg_type = TLS_SET_RECORD_TYPE;
	c->cmsg_len = CMSG_LEN(sizeof(unsigned char));
	*CMSG_DATA(c) = ZR_TLS_CT_ALERT;
	(void)!sendmsg(tls->ktls_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	tls->ktls_alert_pending = false;
	tls->rec.write_closed = true;
}
