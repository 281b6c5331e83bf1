/* Opening a generator connection: socket, --bind, connect with a timeout and,
 * with --via-socks5, the SOCKS5 handshake (RFC 1928, no authentication). The
 * greeting and the CONNECT request go out in one write, which RFC 1928
 * servers accept (zring does), so the proxy costs one round trip, not two. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"
#include "perf/engine-int.h"

enum {
	STEP_CONNECT = 1,
	STEP_SOCKS5_SEND,
	STEP_SOCKS5_REPLY,
	STEP_OPEN
};

int zr_gen_socks5_request(const char *target_text, uint8_t *buf, size_t cap)
{
	char host[256];
	const char *colon = strrchr(target_text, ':');
	if (!colon || colon == target_text)
		return -EINVAL;
	size_t hl = (size_t)(colon - target_text);
	const char *h = target_text;
	if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']')
		h++, hl -= 2;
	if (hl == 0 || hl >= sizeof(host) || cap < 3 + 4 + 255 + 2)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || port == 0 || port > 65535)
		return -EINVAL;

	size_t n = 0;
	buf[n++] = 5, buf[n++] = 1, buf[n++] = 0; /* greeting: no authentication */
	buf[n++] = 5, buf[n++] = 1, buf[n++] = 0; /* CONNECT */
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, host, &a4) == 1) {
		buf[n++] = 1;
		memcpy(buf + n, &a4, 4), n += 4;
	} else if (inet_pton(AF_INET6, host, &a6) == 1) {
		buf[n++] = 4;
		memcpy(buf + n, &a6, 16), n += 16;
	} else {
		buf[n++] = 3;
		buf[n++] = (uint8_t)hl;
		memcpy(buf + n, host, hl), n += hl;
	}
	buf[n++] = (uint8_t)(port >> 8);
	buf[n++] = (uint8_t)port;
	return (int)n;
}

zr_bench_error_t zr_gen_errno_kind(int neg_errno)
{
	switch (-neg_errno) {
	case ECONNREFUSED:
	case ENETUNREACH:
	case EHOSTUNREACH:
	case ETIMEDOUT:
	case ECANCELED: /* the connect's linked timeout fired */
	case EADDRNOTAVAIL:
	case EADDRINUSE:
		return ZR_BENCH_ERR_CONNECT;
	case ECONNRESET:
	case EPIPE:
	case ECONNABORTED:
		return ZR_BENCH_ERR_RESET;
	default:
		return ZR_BENCH_ERR_OTHER;
	}
}

void zr_gen_error(zr_gen_thread_t *th, zr_bench_error_t e)
{
	th->r.errors[e]++;
	zr_gen_pub_add(&th->pub_errors, 1);
}

void zr_gen_conn_close(zr_gen_conn_t *c)
{
	if (!c->closing) {
		c->closing = true;
		c->open = false;
		c->deadline = 0;
		if (c->fd >= 0) {
			/* Cancel first: an op in flight holds the file, so closing
			 * alone would leave a receive armed forever. */
			if (c->pending)
				(void)zr_io_cancel_fd(c->th->io, c->fd);
			close(c->fd);
			c->fd = -1;
		}
	}
	if (c->pending == 0) {
		c->closing = false;
		c->released(c);
	}
}

bool zr_gen_conn_done_op(zr_gen_conn_t *c, bool terminal)
{
	if (terminal)
		c->pending--;
	if (!c->closing)
		return false;
	if (terminal && c->pending == 0) {
		c->closing = false;
		c->released(c);
	}
	return true;
}

static void fail(zr_gen_conn_t *c, zr_bench_error_t e)
{
	c->last_error = (int)e;
	zr_gen_error(c->th, e);
	zr_gen_conn_close(c);
}

void zr_gen_conn_check(zr_gen_conn_t *c, uint64_t now)
{
	if (!c->open && !c->closing && c->fd >= 0 && c->deadline && now > c->deadline)
		fail(c, c->step == STEP_CONNECT ? ZR_BENCH_ERR_CONNECT : ZR_BENCH_ERR_SOCKS5);
}

/* How long the SOCKS5 reply is, once enough of it is here to tell: the
 * method answer (2 bytes), then VER REP RSV ATYP BND.ADDR BND.PORT. */
static unsigned socks5_reply_len(const uint8_t *b, unsigned have)
{
	if (have < 2 + 5)
		return 0;
	switch (b[5]) {
	case 1:
		return 2 + 4 + 4 + 2;
	case 4:
		return 2 + 4 + 16 + 2;
	case 3:
		return 2 + 4 + 1 + b[6] + 2;
	default:
		return 0;
	}
}

/* Fails c and leaves the completion handler (it may have been released). */
#define FAIL(c, e)              \
	do {                    \
		fail((c), (e)); \
		return;         \
	} while (0)

static void read_reply(zr_gen_conn_t *c)
{
	/* Our servers never speak first, so nothing but the reply can arrive
	 * before we send: a read as large as the buffer swallows no data. */
	c->pending++;
	if (zr_io_recv_into(c->th->io, &c->ctl_op, c->fd, c->hs + c->hs_len, sizeof(c->hs) - c->hs_len, 0) < 0) {
		c->pending--;
		fail(c, ZR_BENCH_ERR_OTHER);
	}
}

static void ctl_done(zr_io_op_t *op, int res, unsigned flags)
{
	zr_gen_conn_t *c = (zr_gen_conn_t *)((char *)op - offsetof(zr_gen_conn_t, ctl_op));
	zr_gen_thread_t *th = c->th;
	if (zr_gen_conn_done_op(c, true))
		return;
	switch (c->step) {
	case STEP_CONNECT:
		if (res < 0)
			FAIL(c, ZR_BENCH_ERR_CONNECT);
		if (!th->o->via_socks5)
			break;
		c->step = STEP_SOCKS5_SEND;
		c->pending++;
		if (zr_io_send(th->io, &c->ctl_op, c->fd, th->socks5_req, th->socks5_req_len) < 0) {
			c->pending--;
			FAIL(c, ZR_BENCH_ERR_OTHER);
		}
		return;
	case STEP_SOCKS5_SEND:
		if (res < 0)
			FAIL(c, ZR_BENCH_ERR_SOCKS5);
		c->step = STEP_SOCKS5_REPLY;
		c->hs_len = 0;
		{
			read_reply(c);
			return;
		}
	case STEP_SOCKS5_REPLY: {
		if (res <= 0)
			FAIL(c, ZR_BENCH_ERR_SOCKS5); /* closed or reset by the proxy */
		c->hs_len += (unsigned)res;
		if (c->hs_len >= 2 && (c->hs[0] != 5 || c->hs[1] != 0))
			FAIL(c, ZR_BENCH_ERR_SOCKS5); /* no acceptable method */
		if (c->hs_len >= 4 && (c->hs[2] != 5 || c->hs[3] != 0))
			FAIL(c, ZR_BENCH_ERR_SOCKS5); /* CONNECT refused (REP != 0) */
		unsigned want = socks5_reply_len(c->hs, c->hs_len);
		if (c->hs_len >= 7 && !want)
			FAIL(c, ZR_BENCH_ERR_SOCKS5); /* unknown address type */
		if (want && c->hs_len > want)
			FAIL(c, ZR_BENCH_ERR_SOCKS5); /* bytes before we sent any */
		if (!want || c->hs_len < want) {
			read_reply(c);
			return;
		}
		break;
	}
	default:
		FAIL(c, ZR_BENCH_ERR_OTHER);
	}
	c->step = STEP_OPEN;
	c->open = true;
	c->deadline = 0;
	c->last_error = -1;
	c->opened(c);
}

void zr_gen_conn_open(zr_gen_conn_t *c, bool nodelay)
{
	zr_gen_thread_t *th = c->th;
	const zr_sockaddr_t *to = th->o->via_socks5 ? &th->socks5 : &th->target;
	c->closing = false;
	c->open = false;
	c->last_error = -1;
	c->hs_len = 0;
	c->fd = socket(to->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		fail(c, ZR_BENCH_ERR_OTHER); /* out of file descriptors, typically */
		return;
	}
	int one = 1;
	if (nodelay)
		(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (th->o->has_bind) {
		/* Defer the port choice to connect(): many connections from one
		 * source address then share ports across destinations. */
		(void)setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(c->fd, &th->bind.sa, th->bind.len) < 0) {
			fail(c, ZR_BENCH_ERR_CONNECT);
			return;
		}
	}
	c->step = STEP_CONNECT;
	c->ctl_op.cb = ctl_done;
	uint64_t timeout_ns = (uint64_t)(th->o->timeout_s * 1e9);
	c->deadline = zr_gen_now() + timeout_ns + timeout_ns; /* connect has its own timer; this bounds SOCKS5 */
	c->pending++;
	if (zr_io_connect(th->io, &c->ctl_op, c->fd, to, timeout_ns) < 0) {
		c->pending--;
		fail(c, ZR_BENCH_ERR_OTHER);
	}
}
