/* stream: bulk throughput against a sink. Each connection sends its command
 * byte ('U', 'D' or 'B'), then keeps one large send in flight (upload) and/or
 * a multishot receive into the ring's provided buffers (download). A send's
 * bytes count in the measured part when the send was issued in it, so with
 * --warmup 0 the bytes reported sent are exactly the bytes the sink got;
 * received bytes count by when they arrived. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "io/io.h"
#include "perf/engine-int.h"

typedef struct stream_conn {
	zr_gen_conn_t c; /* first: the opener's callbacks cast back */
	zr_io_op_t send_op, recv_op;
	unsigned local;
	bool sending, receiving;
	bool send_counts; /* the send in flight was issued in the measured part */
	bool started;	  /* command byte sent */
	bool draining;	  /* both: our side is shut, reading until the sink closes */
	uint64_t retry_at;
	unsigned backoff_ms;
} stream_conn_t;

typedef struct stream_thread {
	zr_gen_thread_t *th;
	stream_conn_t *conns;
	unsigned n;
	unsigned live; /* connections not yet released for good */
	bool stopping;
	uint8_t *buf;
	uint8_t cmd;
} stream_thread_t;

#define CONN(c) ((stream_conn_t *)(c))

static stream_thread_t *owner(const zr_gen_conn_t *c)
{
	return c->th->mode;
}

static void start_send(stream_thread_t *st, stream_conn_t *s, uint64_t now)
{
	s->send_counts = zr_gen_in_window(st->th, now);
	s->sending = true;
	s->c.pending++;
	if (zr_io_send(st->th->io, &s->send_op, s->c.fd, st->buf, st->th->o->size) < 0) {
		s->c.pending--;
		s->sending = false;
		zr_gen_error(st->th, ZR_BENCH_ERR_OTHER);
		zr_gen_conn_close(&s->c);
	}
}

static void start_recv(stream_thread_t *st, stream_conn_t *s)
{
	s->receiving = true;
	s->c.pending++;
	if (zr_io_recv(st->th->io, &s->recv_op, s->c.fd) < 0) {
		s->c.pending--;
		s->receiving = false;
		zr_gen_error(st->th, ZR_BENCH_ERR_OTHER);
		zr_gen_conn_close(&s->c);
	}
}

/* The end of a connection. With both directions, closing outright while
 * the sink's data is still arriving would reset the connection and could
 * discard our own last bytes on their way (through a proxy, say): shut our
 * side instead and read until the sink, having seen everything, closes. */
static void finish(stream_thread_t *st, stream_conn_t *s)
{
	if (s->draining)
		return; /* finished once already (by its last send or by the stop) */
	if (st->th->o->direction == ZR_BENCH_BOTH && s->started && !s->draining && s->c.fd >= 0) {
		s->draining = true;
		if (shutdown(s->c.fd, SHUT_WR) == 0) {
			/* The receive may have ended while stopping (the kernel
			 * ended the multishot): closing with unread bytes would
			 * reset the connection, so read on to the end. */
			if (!s->receiving)
				start_recv(st, s);
			return;
		}
	}
	zr_gen_conn_close(&s->c);
}

static void on_send(zr_io_op_t *op, int res, unsigned flags)
{
	stream_conn_t *s = (stream_conn_t *)((char *)op - offsetof(stream_conn_t, send_op));
	stream_thread_t *st = owner(&s->c);
	zr_gen_thread_t *th = st->th;
	s->sending = false;
	if (res > 0 && s->started) {
		zr_gen_pub_add(&th->pub_bytes, (uint64_t)res);
		if (s->send_counts) {
			th->r.bytes_sent += (uint64_t)res;
			th->conn_bytes[s->local] += (uint64_t)res;
		}
	}
	if (zr_gen_conn_done_op(&s->c, true))
		return;
	if (res < 0) {
		zr_gen_error(th, zr_gen_errno_kind(res) == ZR_BENCH_ERR_CONNECT ? ZR_BENCH_ERR_RESET :
										  zr_gen_errno_kind(res));
		zr_gen_conn_close(&s->c);
		return;
	}
	uint64_t now = zr_gen_now();
	if (!s->started) {
		s->started = true;
		if (th->o->direction != ZR_BENCH_UP)
			start_recv(st, s);
		if (s->c.closing || th->o->direction == ZR_BENCH_DOWN)
			return;
	}
	if (st->stopping || now >= th->measure_end) {
		finish(st, s);
		return;
	}
	start_send(st, s, now);
}

static void on_recv(zr_io_op_t *op, int res, unsigned flags)
{
	stream_conn_t *s = (stream_conn_t *)((char *)op - offsetof(stream_conn_t, recv_op));
	stream_thread_t *st = owner(&s->c);
	zr_gen_thread_t *th = st->th;
	bool more = flags & ZR_IO_F_MORE;
	if (flags & ZR_IO_F_BUFFER)
		zr_io_buf_release(th->io, zr_io_buf_id(flags));
	if (!more)
		s->receiving = false;
	if (res > 0) {
		zr_gen_pub_add(&th->pub_bytes, (uint64_t)res);
		if (zr_gen_in_window(th, zr_gen_now())) {
			th->r.bytes_received += (uint64_t)res;
			th->conn_bytes[s->local] += (uint64_t)res;
		}
	}
	if (zr_gen_conn_done_op(&s->c, !more))
		return;
	if (res == 0 && s->draining) {
		zr_gen_conn_close(&s->c); /* the sink has seen our end and closed */
		return;
	}
	if (res == 0 || (res < 0 && res != -ENOBUFS)) {
		/* The sink sends until we close: an end before that is a failure. */
		zr_gen_error(th, res == 0 ? ZR_BENCH_ERR_RESET : zr_gen_errno_kind(res));
		zr_gen_conn_close(&s->c);
		return;
	}
	if (!more && (!st->stopping || s->draining))
		start_recv(st, s); /* out of buffers for a moment, or the kernel ended the multishot */
}

static void opened(zr_gen_conn_t *c)
{
	stream_thread_t *st = owner(c);
	stream_conn_t *s = CONN(c);
	s->backoff_ms = 0;
	s->started = false;
	s->draining = false;
	c->th->r.connections_opened++; /* persistent connections: counted over the whole run */
	/* The command byte rides the send op; its completion starts the data. */
	s->sending = true;
	c->pending++;
	if (zr_io_send(c->th->io, &s->send_op, c->fd, &st->cmd, 1) < 0) {
		c->pending--;
		s->sending = false;
		zr_gen_error(c->th, ZR_BENCH_ERR_OTHER);
		zr_gen_conn_close(c);
	}
}

static void released(zr_gen_conn_t *c)
{
	stream_thread_t *st = owner(c);
	stream_conn_t *s = CONN(c);
	s->sending = s->receiving = false;
	if (st->stopping) {
		st->live--;
		return;
	}
	/* A failed connection is opened again after a back-off, so a run
	 * against a refusing target counts a few errors a second, not millions. */
	s->backoff_ms = s->backoff_ms ? (s->backoff_ms * 2 > 1000 ? 1000 : s->backoff_ms * 2) : 50;
	s->retry_at = zr_gen_now() + (uint64_t)s->backoff_ms * 1000000ull;
}

static void reopen(stream_conn_t *s)
{
	s->retry_at = 0;
	zr_gen_conn_open(&s->c, false); /* a failure is counted and comes back through released() */
}

int zr_gen_stream_run(zr_gen_thread_t *th)
{
	const zr_bench_opts_t *o = th->o;
	stream_thread_t st = {.th = th};
	st.n = (o->connections - th->index + th->nthreads - 1) / th->nthreads;
	st.conns = calloc(st.n, sizeof(*st.conns));
	st.buf = malloc(o->size);
	if (!st.conns || !st.buf) {
		free(st.conns);
		free(st.buf);
		return -ENOMEM;
	}
	memset(st.buf, 'z', o->size);
	st.cmd = o->direction == ZR_BENCH_UP ? 'U' : o->direction == ZR_BENCH_DOWN ? 'D' : 'B';
	th->mode = &st;
	st.live = st.n;
	for (unsigned i = 0; i < st.n; i++) {
		stream_conn_t *s = &st.conns[i];
		s->local = i;
		s->c.th = th;
		s->c.fd = -1;
		s->c.id = th->index + i * th->nthreads;
		s->c.opened = opened;
		s->c.released = released;
		s->send_op.cb = on_send;
		s->recv_op.cb = on_recv;
		reopen(s);
	}

	uint64_t next_scan = 0, hard_end = th->measure_end + (uint64_t)(o->timeout_s * 1e9);
	for (;;) {
		uint64_t now = zr_gen_now();
		if (*th->abort && !st.stopping)
			hard_end = now;
		if ((now >= th->measure_end || *th->abort) && !st.stopping) {
			st.stopping = true;
			/* Receivers stop now; a sender finishes its send in flight
			 * (counted: it was issued in the measured part) and closes
			 * in its completion. */
			for (unsigned i = 0; i < st.n; i++) {
				stream_conn_t *s = &st.conns[i];
				if (s->c.fd < 0 && s->c.pending == 0)
					st.live--;
				else if (now >= hard_end)
					zr_gen_conn_close(&s->c);
				else if (!s->sending)
					finish(&st, s);
			}
		}
		if (st.stopping && st.live == 0)
			break;
		if (st.stopping && now >= hard_end) {
			for (unsigned i = 0; i < st.n; i++)
				if (st.conns[i].c.fd >= 0)
					zr_gen_conn_close(&st.conns[i].c);
			hard_end = UINT64_MAX; /* once */
		}
		if (now >= next_scan) {
			next_scan = now + 10000000ull;
			for (unsigned i = 0; i < st.n && !st.stopping; i++) {
				stream_conn_t *s = &st.conns[i];
				zr_gen_conn_check(&s->c, now);
				if (s->retry_at && now >= s->retry_at && s->c.pending == 0 && s->c.fd < 0)
					reopen(s);
			}
		}
		uint64_t wake = next_scan;
		if (!st.stopping && th->measure_end < wake)
			wake = th->measure_end;
		int ret = zr_io_run(th->io, wake > now ? wake - now : 1);
		if (ret < 0) {
			snprintf(th->why, sizeof(th->why), "io_uring: %s", strerror(-ret));
			th->fatal = ret;
			break;
		}
	}
	th->mode = NULL;
	free(st.conns);
	free(st.buf);
	return th->fatal;
}
