/* Kernel TLS hand-off (crypto/ktls.c, tls.h zr_tls_ktls_*) on real loopback
 * TCP connections. One end starts on zring's record layer and hands its
 * keys to the socket's `tls` ULP; the other end is zring's record layer in
 * userspace, so every byte the kernel seals or opens is checked by an
 * independent implementation.
 *
 * Where the kernel has no `tls` ULP (this project's machines) the test
 * checks detection and that a refused hand-off leaves the connection
 * working on zring's record layer. Where it has one (tests/uml/run.sh runs
 * this inside User-Mode Linux 6.1 with ZRTEST_EXPECT_KTLS=1) it checks the
 * kernel path: sending and receiving per cipher suite, the receive hand-off
 * after records were read in part, close_notify both ways, and what a
 * KeyUpdate or a forged record does. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "crypto/aead.h"
#include "crypto/record.h"
#include "crypto/tls-int.h"
#include "io/log.h"
#include "tap.h"

/* A connected loopback pair, blocking, 5 s receive timeout. */
static bool tcp_pair(int fd[2])
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	fd[0] = fd[1] = -1;
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&sa, &len))
		goto fail;
	fd[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (fd[0] < 0 || connect(fd[0], (struct sockaddr *)&sa, sizeof(sa)) || (fd[1] = accept(l, NULL, NULL)) < 0)
		goto fail;
	close(l);
	struct timeval tv = {.tv_sec = 5};
	for (int i = 0; i < 2; i++)
		setsockopt(fd[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return true;
fail:
	if (l >= 0)
		close(l);
	if (fd[0] >= 0)
		close(fd[0]);
	return false;
}

/* Sends everything t has queued on fd. */
static bool send_out(zr_tls_t *t, int fd)
{
	const void *p;
	size_t n;
	while ((n = zr_tls_out_peek(t, &p))) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k <= 0)
			return false;
		zr_tls_out_consume(t, (size_t)k);
	}
	return true;
}

/* Reads from fd into t until want plaintext bytes came out of zr_tls_read
 * (or it failed); returns how many did. At most `chunk` bytes per recv. */
static size_t recv_plain(zr_tls_t *t, int fd, uint8_t *out, size_t want, size_t chunk, int *err)
{
	static uint8_t buf[70000];
	size_t got = 0;
	*err = 0;
	while (got < want) {
		ssize_t r = zr_tls_read(t, out + got, want - got);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r != -EAGAIN) {
			*err = (int)r;
			break;
		}
		ssize_t k = recv(fd, buf, chunk < sizeof(buf) ? chunk : sizeof(buf), 0);
		if (k <= 0) {
			*err = k < 0 ? -errno : 0;
			break;
		}
		if (zr_tls_feed(t, buf, (size_t)k))
			break;
	}
	return got;
}

typedef struct conn {
	int fd[2];
	zr_tls_t *k; /* fd[0]: handed to the kernel */
	zr_tls_t *u; /* fd[1]: zring's record layer in userspace */
} conn_t;

static bool conn_new(conn_t *c, const zr_aead_backend_t *b, zr_aead_alg_t alg)
{
	uint8_t s1[48], s2[48];
	RAND_bytes(s1, sizeof(s1));
	RAND_bytes(s2, sizeof(s2));
	memset(c, 0, sizeof(*c));
	bool good = tcp_pair(c->fd);
	c->k = zr_tls_new_established(false, b, alg, s1, s2);
	c->u = zr_tls_new_established(true, b, alg, s2, s1);
	OPENSSL_cleanse(s1, sizeof(s1));
	OPENSSL_cleanse(s2, sizeof(s2));
	return good && c->k && c->u;
}

static void conn_free(conn_t *c)
{
	zr_tls_free(c->k);
	zr_tls_free(c->u);
	for (int i = 0; i < 2; i++)
		if (c->fd[i] >= 0)
			close(c->fd[i]);
}

static uint8_t msg[300000], got[300000];

/* Where the kernel refuses: the connection stays on zring's record layer. */
static void test_refused(const zr_aead_backend_t *b)
{
	conn_t c;
	int err;
	bool good = conn_new(&c, b, ZR_AEAD_AES_128_GCM);
	ok(good && zr_tls_ktls_wanted(c.k), "a connection on zring's record layer is a kernel TLS candidate");
	int rc = good ? zr_tls_ktls_begin(c.k, c.fd[0]) : -1;
	ok(rc == -ENOENT || rc == -ENOPROTOOPT, "without the tls ULP the hand-off is refused (%s)", strerror(-rc));
	ok(!zr_tls_ktls_tx(c.k) && !zr_tls_ktls_rx(c.k), "and nothing was handed over");
	good = good && !zr_tls_write(c.k, msg, 100000) && send_out(c.k, c.fd[0]) &&
	       recv_plain(c.u, c.fd[1], got, 100000, 65536, &err) == 100000 && !memcmp(got, msg, 100000);
	good = good && !zr_tls_write(c.u, msg + 7, 50000) && send_out(c.u, c.fd[1]) &&
	       recv_plain(c.k, c.fd[0], got, 50000, 65536, &err) == 50000 && !memcmp(got, msg + 7, 50000);
	ok(good, "the connection goes on, sealed by zring both ways");
	conn_free(&c);
}

static void test_kernel(const zr_aead_backend_t *b, zr_aead_alg_t alg)
{
	const char *an = zr_aead_alg_name(alg);
	conn_t c;
	int err = 0;
	if (!ok(conn_new(&c, b, alg), "%s: loopback connection and both ends", an)) {
		conn_free(&c);
		return;
	}
	/* Records before the hand-off go through zring: sequence numbers
	 * must carry over into the kernel. */
	bool good = !zr_tls_write(c.k, "before", 6) && send_out(c.k, c.fd[0]) &&
		    recv_plain(c.u, c.fd[1], got, 6, 65536, &err) == 6;
	int rc = zr_tls_ktls_begin(c.k, c.fd[0]);
	ok(good && rc == 0 && zr_tls_ktls_tx(c.k), "%s: write key handed to the kernel after a record of ours (%s)", an,
	   strerror(-rc));
	if (rc) {
		conn_free(&c);
		return;
	}
	const void *p;
	good = !zr_tls_write(c.k, msg, 3000) && zr_tls_out_peek(c.k, &p) == 3000 && !memcmp(p, msg, 3000);
	ok(good, "%s: what we write is queued as plaintext", an);
	good = !zr_tls_write(c.k, msg + 3000, sizeof(msg) - 3000) && send_out(c.k, c.fd[0]) &&
	       recv_plain(c.u, c.fd[1], got, sizeof(msg), 65536, &err) == sizeof(msg) && !memcmp(got, msg, sizeof(msg));
	ok(good, "%s: 300000 bytes sealed by the kernel open in zring's record layer (%s)", an, zr_tls_error(c.u));

	/* The peer's records: two before the receive hand-off, read so that
	 * the input ends inside the second one's header, then its rest. */
	uint8_t wire[40000];
	size_t wlen = 0, n;
	good = !zr_tls_write(c.u, "first", 5) && zr_tls_out_peek(c.u, &p) > 0;
	good = good && !zr_tls_write(c.u, msg, 20000);
	while (good && (n = zr_tls_out_peek(c.u, &p)) && wlen + n <= sizeof(wire)) {
		memcpy(wire + wlen, p, n);
		wlen += n;
		zr_tls_out_consume(c.u, n);
	}
	size_t first = 5 + 5 + 1 + 16; /* the "first" record */
	good = good && send(c.fd[1], wire, wlen, MSG_NOSIGNAL) == (ssize_t)wlen;
	uint8_t in[40000];
	good = good && recv(c.fd[0], in, first + 3, MSG_WAITALL) == (ssize_t)(first + 3) &&
	       !zr_tls_feed(c.k, in, first + 3);
	ssize_t r = zr_tls_read(c.k, got, sizeof(got));
	size_t gap = zr_tls_ktls_rx_gap(c.k);
	ok(good && r == 5 && !memcmp(got, "first", 5) && gap == 2,
	   "%s: before the receive hand-off zring opens; the input ends 2 bytes into a header (gap %zu)", an, gap);
	good = recv(c.fd[0], in, gap, MSG_WAITALL) == (ssize_t)gap && !zr_tls_feed(c.k, in, gap);
	gap = zr_tls_ktls_rx_gap(c.k);
	size_t rest = gap;
	good = good && gap > 16000 && recv(c.fd[0], in, gap, MSG_WAITALL) == (ssize_t)gap && !zr_tls_feed(c.k, in, gap);
	size_t have = 0;
	while (good && (r = zr_tls_read(c.k, got + have, sizeof(got) - have)) > 0)
		have += (size_t)r;
	ok(good && have == 16384 && !memcmp(got, msg, have) && zr_tls_ktls_rx_gap(c.k) == 0,
	   "%s: then the rest of that record (%zu bytes) completes it: at a record boundary", an, rest);
	rc = zr_tls_ktls_start_rx(c.k);
	ok(rc == 0 && zr_tls_ktls_rx(c.k), "%s: read key handed to the kernel (%s)", an, strerror(-rc));
	have += recv_plain(c.k, c.fd[0], got + have, 20000 - have, 65536, &err);
	ok(have == 20000 && !memcmp(got, msg, 20000), "%s: the records after it come out of the socket opened (%zu)",
	   an, have);
	good = !zr_tls_write(c.u, msg, sizeof(msg)) && send_out(c.u, c.fd[1]) &&
	       recv_plain(c.k, c.fd[0], got, sizeof(msg), 65536, &err) == sizeof(msg) && !memcmp(got, msg, sizeof(msg));
	ok(good, "%s: 300000 bytes from zring's record layer opened by the kernel (%d)", an, err);

	/* close_notify both ways */
	zr_tls_close_notify(c.u);
	good = send_out(c.u, c.fd[1]);
	r = recv(c.fd[0], in, sizeof(in), 0);
	int e = r < 0 ? errno : 0;
	rc = e == EIO ? zr_tls_ktls_recv_control(c.k) : -1;
	r = zr_tls_read(c.k, got, sizeof(got));
	ok(good && e == EIO && rc == 0 && r == 0,
	   "%s: the peer's close_notify: recv fails with EIO, the record is taken apart, read returns 0", an);
	zr_tls_close_notify(c.k);
	zr_tls_ktls_send_control(c.k);
	r = recv_plain(c.u, c.fd[1], got, 1, 65536, &err);
	ok(r == 0 && err == 0 && zr_tls_read(c.u, got, 1) == 0,
	   "%s: our close_notify, sent by the kernel, reads as 0 (%s)", an, zr_tls_error(c.u));
	conn_free(&c);
}

/* A KeyUpdate or a forged record from the peer, once the kernel receives. */
static void test_kernel_refusals(const zr_aead_backend_t *b)
{
	for (int kind = 0; kind < 2; kind++) {
		conn_t c;
		int err;
		uint8_t rec[100], in[100];
		bool good = conn_new(&c, b, ZR_AEAD_AES_128_GCM) && !zr_tls_ktls_begin(c.k, c.fd[0]) &&
			    !zr_tls_ktls_start_rx(c.k);
		ssize_t n;
		if (kind == 0)
			n = zr_record_seal1(&c.u->rec.wr, ZR_TLS_CT_HANDSHAKE, (const uint8_t *)"\x18\x00\x00\x01\x00",
					    5, rec, sizeof(rec));
		else
			n = zr_record_seal1(&c.u->rec.wr, ZR_TLS_CT_APPLICATION_DATA, (const uint8_t *)"forged", 6, rec,
					    sizeof(rec));
		if (kind == 1 && n > 8)
			rec[8] ^= 0x40;
		good = good && n > 0 && send(c.fd[1], rec, (size_t)n, MSG_NOSIGNAL) == n;
		ssize_t r = recv(c.fd[0], in, sizeof(in), 0);
		int e = r < 0 ? errno : 0;
		if (kind == 0) {
			int rc = e == EIO ? zr_tls_ktls_recv_control(c.k) : 0;
			ok(good && e == EIO && rc < 0 && strstr(zr_tls_error(c.k), "KeyUpdate"),
			   "a KeyUpdate on a kernel TLS connection fails it clearly (%s)", zr_tls_error(c.k));
		} else {
			int rc = zr_tls_ktls_fail(c.k, -e);
			ok(good && e == EBADMSG && rc == -EBADMSG && strstr(zr_tls_error(c.k), "alert 20"),
			   "a forged record: the kernel's recv fails with EBADMSG, the connection with bad_record_mac "
			   "(%s)",
			   zr_tls_error(c.k));
		}
		(void)err;
		conn_free(&c);
	}
}

int main(void)
{
	zr_log_set_level(ZR_LOG_ERROR);
	const zr_aead_backend_t *b = NULL;
	char why[256] = "";
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 131 + 7);
	if (zr_aead_select(ZR_RECORD_CRYPTO_AUTO, NULL, &b, why, sizeof(why)) || !b) {
		skip_all(why);
		return 0;
	}
	zr_tls_set_ktls(true);
	bool have = zr_ktls_available(why, sizeof(why));
	diag("kernel TLS %s%s%s", have ? "available" : "not available: ", have ? "" : why, "");
	if (getenv("ZRTEST_EXPECT_KTLS"))
		ok(have, "this kernel has the tls ULP%s%s", have ? "" : ": ", have ? "" : why);
	if (!have) {
		ok(strstr(why, "tls ULP") != NULL, "detection says why kernel TLS is missing: %s", why);
		test_refused(b);
		return done_testing();
	}
	for (zr_aead_alg_t alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++)
		test_kernel(b, alg);
	test_kernel_refusals(b);
	zr_tls_thread_cleanup();
	return done_testing();
}
