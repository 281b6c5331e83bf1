/* The echo and sink servers: one thread per --threads, each with its own
 * io_uring and its own SO_REUSEPORT listener on the same address, multishot
 * accept and multishot receives into provided buffers. Responses and
 * downloads are sent from one shared zero-filled block: their content
 * carries no meaning, only their length. Framing: bench-t.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"
#include "perf/bench.h"
#include "perf/engine-int.h"

#define CHUNK (1u << 20)
static const uint8_t zeros[CHUNK];

typedef struct server_thread server_thread_t;

typedef struct srv_conn {
	server_thread_t *t;
	struct srv_conn *prev, *next;
	int fd;
	unsigned pending;
	bool closing, sending;
	zr_io_op_t recv_op, send_op;
	/* echo: parser state */
	uint8_t hdr[ZR_BENCH_RR_HEADER];
	unsigned hdr_have;
	uint32_t resp_len;
	uint64_t req_left; /* request body still to read */
	uint64_t owed;	   /* response bytes not yet sent */
	/* sink: the command byte, 0 until it arrives */
	uint8_t cmd;
} srv_conn_t;

struct server_thread {
	zr_bench_server_t *s;
	pthread_t id;
	int lfd;
	zr_io_t *io;
	zr_io_op_t accept_op;
	srv_conn_t *conns; /* live connections */
	/* totals, read by any thread (relaxed) */
	uint64_t bytes_in, bytes_out, requests, connections;
	int err;
};

struct zr_bench_server {
	zr_bench_opts_t o;
	server_thread_t *threads;
	unsigned n, started;
	unsigned short port;
	int stop;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned ready;
};

static void conn_free(srv_conn_t *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		c->t->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

static void conn_close(srv_conn_t *c)
{
	if (!c->closing) {
		c->closing = true;
		if (c->pending)
			(void)zr_io_cancel_fd(c->t->io, c->fd);
		close(c->fd);
	}
	if (!c->pending)
		conn_free(c);
}

/* Accounts a completion; true when the connection is going away (the
 * handler must return: c may be freed). */
static bool conn_done(srv_conn_t *c, bool terminal)
{
	if (terminal)
		c->pending--;
	if (!c->closing)
		return false;
	if (!c->pending)
		conn_free(c);
	return true;
}

static void send_more(srv_conn_t *c)
{
	zr_bench_mode_t mode = c->t->s->o.mode;
	size_t n;
	if (mode == ZR_BENCH_ECHO)
		n = c->owed < CHUNK ? (size_t)c->owed : CHUNK;
	else
		n = c->t->s->o.size < CHUNK ? c->t->s->o.size : CHUNK;
	if (n == 0 || c->sending)
		return;
	c->sending = true;
	c->pending++;
	if (zr_io_send(c->t->io, &c->send_op, c->fd, zeros, n) < 0) {
		c->pending--;
		c->sending = false;
		conn_close(c);
	}
}

static void on_send(zr_io_op_t *op, int res, unsigned flags)
{
	srv_conn_t *c = (srv_conn_t *)((char *)op - offsetof(srv_conn_t, send_op));
	c->sending = false;
	if (res > 0) {
		zr_gen_pub_add(&c->t->bytes_out, (uint64_t)res);
		if (c->t->s->o.mode == ZR_BENCH_ECHO)
			c->owed -= (uint64_t)res;
	}
	if (conn_done(c, true))
		return;
	if (res <= 0) {
		conn_close(c); /* the client went away */
		return;
	}
	send_more(c);
}

/* Echo: consumes request bytes; returns false on a malformed header. */
static bool echo_input(srv_conn_t *c, const uint8_t *p, size_t len)
{
	while (len) {
		if (c->req_left) {
			size_t n = c->req_left < len ? (size_t)c->req_left : len;
			c->req_left -= n, p += n, len -= n;
			if (c->req_left == 0) {
				c->owed += c->resp_len;
				zr_gen_pub_add(&c->t->requests, 1);
			}
			continue;
		}
		size_t n = ZR_BENCH_RR_HEADER - c->hdr_have < len ? ZR_BENCH_RR_HEADER - c->hdr_have : len;
		memcpy(c->hdr + c->hdr_have, p, n);
		c->hdr_have += (unsigned)n, p += n, len -= n;
		if (c->hdr_have < ZR_BENCH_RR_HEADER)
			break;
		c->hdr_have = 0;
		uint32_t req, resp;
		memcpy(&req, c->hdr, 4);
		memcpy(&resp, c->hdr + 4, 4);
		req = ntohl(req), resp = ntohl(resp);
		if (req > ZR_BENCH_MAX_MSG || resp > ZR_BENCH_MAX_MSG)
			return false;
		c->resp_len = resp;
		c->req_left = req;
		if (req == 0) {
			c->owed += resp;
			zr_gen_pub_add(&c->t->requests, 1);
		}
	}
	return true;
}

/* Sink: the command byte, then bytes to count. */
static bool sink_input(srv_conn_t *c, const uint8_t *p, size_t len)
{
	if (!c->cmd) {
		c->cmd = p[0];
		if (c->cmd != 'U' && c->cmd != 'D' && c->cmd != 'B')
			return false;
		zr_gen_pub_add(&c->t->bytes_in, (uint64_t)len - 1);
		if (c->cmd != 'U')
			send_more(c);
		return true;
	}
	zr_gen_pub_add(&c->t->bytes_in, (uint64_t)len);
	return true;
}

/* The sink takes its bytes with recv_discard (MSG_TRUNC): counted, never
 * copied to user space, so that the sink costs less than the generator
 * feeding it. The scratch range is never written. */
#define DISCARD_CHUNK (64u * 1024u) /* measured: larger takes longer bites and ran slower */
static uint8_t discard_scratch[DISCARD_CHUNK];

static void sink_discard(srv_conn_t *c)
{
	c->pending++;
	if (zr_io_recv_discard(c->t->io, &c->recv_op, c->fd, discard_scratch, DISCARD_CHUNK) < 0) {
		c->pending--;
		conn_close(c);
	}
}

static void on_sink_data(zr_io_op_t *op, int res, unsigned flags)
{
	srv_conn_t *c = (srv_conn_t *)((char *)op - offsetof(srv_conn_t, recv_op));
	if (res > 0 && !c->closing)
		zr_gen_pub_add(&c->t->bytes_in, (uint64_t)res);
	if (conn_done(c, true))
		return;
	if (res <= 0) {
		conn_close(c); /* the client's end, or an error */
		return;
	}
	sink_discard(c);
}

static void on_sink_cmd(zr_io_op_t *op, int res, unsigned flags)
{
	srv_conn_t *c = (srv_conn_t *)((char *)op - offsetof(srv_conn_t, recv_op));
	if (conn_done(c, true))
		return;
	if (res <= 0 || (c->cmd != 'U' && c->cmd != 'D' && c->cmd != 'B')) {
		conn_close(c);
		return;
	}
	c->recv_op.cb = on_sink_data;
	sink_discard(c);
	if (!c->closing && c->cmd != 'U')
		send_more(c);
}

static void on_recv(zr_io_op_t *op, int res, unsigned flags)
{
	srv_conn_t *c = (srv_conn_t *)((char *)op - offsetof(srv_conn_t, recv_op));
	server_thread_t *t = c->t;
	bool more = flags & ZR_IO_F_MORE;
	bool ok = true;
	if (res > 0 && (flags & ZR_IO_F_BUFFER) && !c->closing) {
		const uint8_t *p = zr_io_buf_addr(t->io, zr_io_buf_id(flags));
		if (t->s->o.mode == ZR_BENCH_ECHO) {
			zr_gen_pub_add(&t->bytes_in, (uint64_t)res);
			ok = echo_input(c, p, (size_t)res);
		} else {
			ok = sink_input(c, p, (size_t)res);
		}
	}
	if (flags & ZR_IO_F_BUFFER)
		zr_io_buf_release(t->io, zr_io_buf_id(flags));
	if (conn_done(c, !more))
		return;
	if (!ok || res == 0 || (res < 0 && res != -ENOBUFS)) {
		conn_close(c); /* end of stream, error, or a malformed request */
		return;
	}
	if (t->s->o.mode == ZR_BENCH_ECHO)
		send_more(c);
	if (!more) {
		c->pending++;
		if (zr_io_recv(t->io, &c->recv_op, c->fd) < 0) {
			c->pending--;
			conn_close(c);
		}
	}
}

static void on_accept(zr_io_op_t *op, int res, unsigned flags)
{
	server_thread_t *t = (server_thread_t *)((char *)op - offsetof(server_thread_t, accept_op));
	if (res >= 0) {
		srv_conn_t *c = calloc(1, sizeof(*c));
		if (!c) {
			close(res);
		} else {
			int one = 1;
			(void)setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			c->t = t;
			c->fd = res;
			c->recv_op.cb = on_recv;
			c->send_op.cb = on_send;
			c->next = t->conns;
			if (t->conns)
				t->conns->prev = c;
			t->conns = c;
			zr_gen_pub_add(&t->connections, 1);
			c->pending++;
			int rc;
			if (t->s->o.mode == ZR_BENCH_SINK) {
				c->recv_op.cb = on_sink_cmd;
				rc = zr_io_recv_into(t->io, &c->recv_op, c->fd, &c->cmd, 1, 0);
			} else {
				rc = zr_io_recv(t->io, &c->recv_op, c->fd);
			}
			if (rc < 0) {
				c->pending--;
				conn_close(c);
			}
		}
	}
	if (!(flags & ZR_IO_F_MORE) && t->lfd >= 0 && !__atomic_load_n(&t->s->stop, __ATOMIC_RELAXED))
		(void)zr_io_accept(t->io, &t->accept_op, t->lfd); /* the kernel ended the multishot: re-arm */
}

static void *server_main(void *p)
{
	server_thread_t *t = p;
	zr_bench_server_t *s = t->s;
	zr_io_params_t params = {
		.entries = 256,
		.buf_count = s->o.mode == ZR_BENCH_SINK ? 128 : 256,
		.buf_size = s->o.mode == ZR_BENCH_SINK ? 128 * 1024 : 16 * 1024,
		.numa_node = -1,
	};
	t->err = zr_io_uring_ops.setup(&params, &t->io);
	if (t->err == 0) {
		t->accept_op.cb = on_accept;
		t->err = zr_io_accept(t->io, &t->accept_op, t->lfd);
	}
	pthread_mutex_lock(&s->lock);
	s->ready++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	if (t->err)
		goto out;
	while (!__atomic_load_n(&s->stop, __ATOMIC_RELAXED))
		if (zr_io_run(t->io, 100000000ull) < 0)
			break;
	/* Stop: no new connections, close the live ones, and wait (briefly)
	 * for their cancelled ops so nothing completes into freed memory. */
	(void)zr_io_cancel_fd(t->io, t->lfd);
	close(t->lfd);
	t->lfd = -1;
	for (srv_conn_t *c = t->conns, *next; c; c = next) {
		next = c->next;
		conn_close(c);
	}
	uint64_t until = zr_gen_now() + ZR_GEN_NS;
	while (t->conns && zr_gen_now() < until)
		(void)zr_io_run(t->io, 10000000ull);
	(void)zr_io_run(t->io, 0);
out:
	if (t->io)
		t->io->ops->destroy(t->io);
	t->io = NULL;
	return NULL;
}

static int listen_socket(const zr_bench_opts_t *o, unsigned short port, unsigned short *bound)
{
	struct sockaddr_storage ss = o->listen;
	((struct sockaddr_in *)&ss)->sin_port = htons(port); /* same offset for v4 and v6 */
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	socklen_t len = sizeof(ss);
	if (bind(fd, (struct sockaddr *)&ss, o->listen_len) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	*bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

int zr_bench_server_start(const zr_bench_opts_t *o, zr_bench_server_t **out, char *err, size_t cap)
{
	if (o->mode != ZR_BENCH_ECHO && o->mode != ZR_BENCH_SINK) {
		snprintf(err, cap, "%s is not a server mode", zr_bench_mode_name(o->mode));
		return -EINVAL;
	}
	char why[160];
	int ret = zr_io_uring_probe(why, sizeof(why));
	if (ret < 0) {
		snprintf(err, cap, "%s", why);
		return ret;
	}
	zr_bench_server_t *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->n = o->threads ? o->threads : 1;
	s->threads = calloc(s->n, sizeof(*s->threads));
	if (!s->threads) {
		free(s);
		return -ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	unsigned short port = ntohs(((const struct sockaddr_in *)&o->listen)->sin_port);
	for (unsigned i = 0; i < s->n; i++) {
		s->threads[i].s = s;
		s->threads[i].lfd = -1;
		/* the first socket picks the port (when 0); the others share it */
		ret = listen_socket(o, i ? s->port : port, &s->port);
		if (ret < 0) {
			char addr[ZR_ADDR_STRLEN];
			zr_sockaddr_t sa = {.len = o->listen_len};
			memcpy(&sa.ss, &o->listen, sizeof(o->listen));
			snprintf(err, cap, "--listen: cannot listen on %s: %s", zr_sockaddr_str(&sa, addr),
				 strerror(-ret));
			goto fail;
		}
		s->threads[i].lfd = ret;
	}
	for (; s->started < s->n; s->started++) {
		ret = -pthread_create(&s->threads[s->started].id, NULL, server_main, &s->threads[s->started]);
		if (ret < 0) {
			snprintf(err, cap, "cannot start server threads: %s", strerror(-ret));
			goto fail;
		}
	}
	pthread_mutex_lock(&s->lock);
	while (s->ready < s->started)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->n; i++)
		if (s->threads[i].err) {
			ret = s->threads[i].err;
			snprintf(err, cap, "server thread: io_uring: %s", strerror(-ret));
			goto fail;
		}
	*out = s;
	return 0;
fail:
	zr_bench_server_stop(s);
	return ret;
}

unsigned short zr_bench_server_port(const zr_bench_server_t *s)
{
	return s->port;
}

void zr_bench_server_totals(const zr_bench_server_t *s, uint64_t *bytes_in, uint64_t *bytes_out, uint64_t *requests,
			    uint64_t *connections)
{
	uint64_t in = 0, o = 0, rq = 0, cn = 0;
	for (unsigned i = 0; i < s->n; i++) {
		const server_thread_t *t = &s->threads[i];
		in += __atomic_load_n(&t->bytes_in, __ATOMIC_RELAXED);
		o += __atomic_load_n(&t->bytes_out, __ATOMIC_RELAXED);
		rq += __atomic_load_n(&t->requests, __ATOMIC_RELAXED);
		cn += __atomic_load_n(&t->connections, __ATOMIC_RELAXED);
	}
	if (bytes_in)
		*bytes_in = in;
	if (bytes_out)
		*bytes_out = o;
	if (requests)
		*requests = rq;
	if (connections)
		*connections = cn;
}

void zr_bench_server_stop(zr_bench_server_t *s)
{
	if (!s)
		return;
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < s->started; i++)
		pthread_join(s->threads[i].id, NULL);
	for (unsigned i = s->started; i < s->n; i++)
		if (s->threads[i].lfd >= 0)
			close(s->threads[i].lfd);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s->threads);
	free(s);
}
