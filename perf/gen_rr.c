/* rr and crr: open-loop requests against the echo server.
 * rr: persistent connections; requests fall due on the global schedule
 * (pacing.c) and a request due while its connection waits for a response
 * queues behind it with its intended time kept (wrk2's coordinated-omission
 * correction). crr: each request is a whole connect / request / response /
 * close cycle on a connection slot, paced the same way with --rate, or
 * back to back without. One wait per loop turn (io_uring's own timed wait)
 * paces a thread: no timer per request. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "perf/bench.h"
#include "perf/engine-int.h"
#include "perf/pacing.h"

typedef struct rr_conn {
	zr_gen_conn_t c; /* first: the opener's callbacks cast back */
	zr_io_op_t send_op, recv_op;
	zr_pace_queue_t q; /* busy: a request (crr: a cycle) is in flight */
	unsigned local;
	bool counts;	   /* the request in flight was intended in the measured part */
	bool cycle_ok;	   /* crr: the response arrived, the close is the cycle's end */
	uint64_t intended; /* absolute ns: when the request in flight was meant to go */
	uint32_t got;	   /* response bytes so far */
	uint64_t retry_at;
	unsigned backoff_ms;
} rr_conn_t;

typedef struct rr_thread {
	zr_gen_thread_t *th;
	rr_conn_t *conns;
	unsigned n;
	zr_pace_t pace;
	bool paced, crr, stopping;
	bool starting; /* in crr_start: a synchronous failure must not recurse */
	uint8_t *req;
	size_t req_len;
	uint64_t timeout_ns;
} rr_thread_t;

static uint64_t intended_abs(const rr_thread_t *rt, const rr_conn_t *r, uint64_t k)
{
	return rt->th->t0 + zr_pace_intended_ns(rt->pace.rate, rt->pace.conns, r->c.id, k);
}

static void fail(rr_conn_t *r, zr_bench_error_t e)
{
	zr_gen_error(r->c.th, e);
	r->c.last_error = (int)e;
	zr_gen_conn_close(&r->c);
}

/* A broken socket while a request is in flight is a reset, whatever errno. */
static zr_bench_error_t io_error(int res)
{
	zr_bench_error_t e = zr_gen_errno_kind(res);
	return e == ZR_BENCH_ERR_CONNECT ? ZR_BENCH_ERR_RESET : e;
}

static void send_request(rr_thread_t *rt, rr_conn_t *r, uint64_t now)
{
	zr_gen_thread_t *th = rt->th;
	r->got = 0;
	r->c.deadline = now + rt->timeout_ns;
	if (r->counts) {
		th->r.requests_sent++;
		th->r.bytes_sent += rt->req_len;
		th->conn_bytes[r->local] += rt->req_len;
	}
	r->c.pending++;
	if (zr_io_send(th->io, &r->send_op, r->c.fd, rt->req, rt->req_len) < 0) {
		r->c.pending--;
		fail(r, ZR_BENCH_ERR_OTHER);
	}
}

/* rr: sends the oldest due request if the connection is free. */
static void rr_try_send(rr_thread_t *rt, rr_conn_t *r, uint64_t now)
{
	if (!r->c.open || r->q.busy || r->q.due <= r->q.sent)
		return;
	uint64_t k = zr_pace_queue_send(&r->q);
	r->intended = intended_abs(rt, r, k);
	r->counts = zr_gen_in_window(rt->th, r->intended);
	send_request(rt, r, now);
}

/* crr: starts the next cycle on a free slot (paced: the oldest due one). */
static void crr_start(rr_thread_t *rt, rr_conn_t *r, uint64_t now)
{
	if (r->q.busy || r->c.fd >= 0 || r->c.pending)
		return;
	if (rt->starting) { /* the scan starts it */
		r->retry_at = now + 1000000ull;
		return;
	}
	if (rt->paced) {
		if (r->q.due <= r->q.sent)
			return;
		r->intended = intended_abs(rt, r, zr_pace_queue_send(&r->q));
	} else {
		if (rt->stopping || now >= rt->th->measure_end)
			return;
		zr_pace_queue_due(&r->q);
		zr_pace_queue_send(&r->q);
		r->intended = now; /* back to back: the cycle is meant to start now */
	}
	r->counts = zr_gen_in_window(rt->th, r->intended);
	r->cycle_ok = false;
	r->retry_at = 0;
	rt->starting = true;
	zr_gen_conn_open(&r->c, true); /* a failure comes back through released() */
	rt->starting = false;
}

static void on_send(zr_io_op_t *op, int res, unsigned flags)
{
	rr_conn_t *r = (rr_conn_t *)((char *)op - offsetof(rr_conn_t, send_op));
	if (zr_gen_conn_done_op(&r->c, true))
		return;
	if (res < 0)
		fail(r, io_error(res));
}

static void complete(rr_thread_t *rt, rr_conn_t *r)
{
	zr_gen_thread_t *th = rt->th;
	uint64_t now = zr_gen_now();
	r->c.deadline = 0;
	zr_gen_pub_add(&th->pub_done, 1);
	if (r->counts) {
		zr_hist_record(&th->r.latency, zr_pace_latency_ns(r->intended, now));
		th->r.responses_received++;
		th->r.bytes_received += th->o->response_len;
		th->conn_bytes[r->local] += th->o->response_len;
	}
	if (rt->crr) {
		r->cycle_ok = true;
		if (r->counts)
			th->r.connections_completed++;
		zr_gen_conn_close(&r->c);
		return;
	}
	if (zr_pace_queue_done(&r->q))
		rr_try_send(rt, r, now);
}

static void on_recv(zr_io_op_t *op, int res, unsigned flags)
{
	rr_conn_t *r = (rr_conn_t *)((char *)op - offsetof(rr_conn_t, recv_op));
	rr_thread_t *rt = r->c.th->mode;
	bool more = flags & ZR_IO_F_MORE;
	if (flags & ZR_IO_F_BUFFER)
		zr_io_buf_release(rt->th->io, zr_io_buf_id(flags));
	if (res > 0)
		zr_gen_pub_add(&rt->th->pub_bytes, (uint64_t)res);
	if (zr_gen_conn_done_op(&r->c, !more))
		return;
	if (res == 0) {
		fail(r, ZR_BENCH_ERR_RESET); /* the server closed: early for any mode */
		return;
	}
	if (res < 0 && res != -ENOBUFS) {
		fail(r, io_error(res));
		return;
	}
	if (res > 0) {
		if (!r->q.busy || r->got + (uint64_t)res > rt->th->o->response_len) {
			fail(r, ZR_BENCH_ERR_PROTOCOL); /* more than was asked for */
			return;
		}
		r->got += (uint32_t)res;
		if (r->got == rt->th->o->response_len) {
			complete(rt, r);
			if (rt->crr)
				return; /* closed: r may be reused already */
		}
	}
	if (!more && r->c.open) {
		r->c.pending++;
		if (zr_io_recv(rt->th->io, &r->recv_op, r->c.fd) < 0) {
			r->c.pending--;
			fail(r, ZR_BENCH_ERR_OTHER);
		}
	}
}

static void opened(zr_gen_conn_t *c)
{
	rr_conn_t *r = (rr_conn_t *)c;
	rr_thread_t *rt = c->th->mode;
	zr_gen_thread_t *th = rt->th;
	r->backoff_ms = 0;
	if (!rt->crr || r->counts)
		th->r.connections_opened++; /* rr: over the whole run; crr: cycles of the measured part */
	c->pending++;
	if (zr_io_recv(th->io, &r->recv_op, c->fd) < 0) {
		c->pending--;
		fail(r, ZR_BENCH_ERR_OTHER);
		return;
	}
	uint64_t now = zr_gen_now();
	if (rt->crr)
		send_request(rt, r, now);
	else
		rr_try_send(rt, r, now);
}

static void released(zr_gen_conn_t *c)
{
	rr_conn_t *r = (rr_conn_t *)c;
	rr_thread_t *rt = c->th->mode;
	uint64_t now = zr_gen_now();
	bool failed = !rt->crr || !r->cycle_ok;
	/* The request in flight (if any) is over: answered (crr), or failed
	 * with its error counted when the connection broke. */
	r->q.busy = false;
	if (failed) {
		r->backoff_ms = r->backoff_ms ? (r->backoff_ms * 2 > 1000 ? 1000 : r->backoff_ms * 2) : 10;
		r->retry_at = now + (uint64_t)r->backoff_ms * 1000000ull;
	}
	if (rt->crr && (rt->paced || !failed))
		crr_start(rt, r, now); /* paced: due requests wait for nobody */
}

/* Requests of the measured part that never got an answer are failures. */
static void count_unfinished(rr_thread_t *rt)
{
	for (unsigned i = 0; i < rt->n; i++) {
		rr_conn_t *r = &rt->conns[i];
		/* A closing connection's request is accounted for already:
		 * answered (crr closes after the response) or failed. */
		if (r->q.busy && r->counts && !r->c.closing)
			zr_gen_error(rt->th, ZR_BENCH_ERR_TIMEOUT);
		r->q.busy = false;
		for (uint64_t k = r->q.sent; rt->paced && k < r->q.due; k++)
			if (zr_gen_in_window(rt->th, intended_abs(rt, r, k)))
				zr_gen_error(rt->th, ZR_BENCH_ERR_TIMEOUT);
		r->q.sent = r->q.due;
	}
}

static bool all_done(const rr_thread_t *rt)
{
	for (unsigned i = 0; i < rt->n; i++) {
		const rr_conn_t *r = &rt->conns[i];
		if (r->q.busy)
			return false;
		/* rr: a backlog waits for its connection, unless that is broken
		 * (then it is counted unfinished); crr: a paced backlog still
		 * starts, one cycle after another. */
		if (rt->paced && r->q.due > r->q.sent && (rt->crr || r->c.open))
			return false;
	}
	return true;
}

static void scan(rr_thread_t *rt, uint64_t now)
{
	for (unsigned i = 0; i < rt->n; i++) {
		rr_conn_t *r = &rt->conns[i];
		if (r->c.open && r->q.busy && r->c.deadline && now > r->c.deadline) {
			fail(r, ZR_BENCH_ERR_TIMEOUT);
			continue;
		}
		zr_gen_conn_check(&r->c, now);
		if (rt->stopping || !r->retry_at || now < r->retry_at || r->c.fd >= 0 || r->c.pending)
			continue;
		r->retry_at = 0;
		if (rt->crr)
			crr_start(rt, r, now);
		else
			zr_gen_conn_open(&r->c, true);
	}
}

static int setup(rr_thread_t *rt, zr_gen_thread_t *th)
{
	const zr_bench_opts_t *o = th->o;
	rt->th = th;
	rt->crr = o->mode == ZR_BENCH_CRR;
	rt->paced = o->rate > 0;
	rt->timeout_ns = (uint64_t)(o->timeout_s * 1e9);
	rt->n = (o->connections - th->index + th->nthreads - 1) / th->nthreads;
	if (rt->paced && zr_pace_init(&rt->pace, o->rate, o->connections, th->index, th->nthreads) < 0)
		return -EINVAL;
	rt->pace.conns = o->connections; /* unpaced crr still needs it for intended_abs's arguments */
	rt->req_len = ZR_BENCH_RR_HEADER + (size_t)o->request_len;
	rt->req = malloc(rt->req_len);
	rt->conns = calloc(rt->n, sizeof(*rt->conns));
	if (!rt->req || !rt->conns)
		return -ENOMEM;
	uint32_t hdr[2] = {htonl(o->request_len), htonl(o->response_len)};
	memcpy(rt->req, hdr, sizeof(hdr));
	memset(rt->req + ZR_BENCH_RR_HEADER, 'r', o->request_len);
	for (unsigned i = 0; i < rt->n; i++) {
		rr_conn_t *r = &rt->conns[i];
		r->local = i;
		r->c.th = th;
		r->c.fd = -1;
		r->c.id = th->index + i * th->nthreads;
		r->c.opened = opened;
		r->c.released = released;
		r->send_op.cb = on_send;
		r->recv_op.cb = on_recv;
	}
	return 0;
}

int zr_gen_rr_run(zr_gen_thread_t *th)
{
	rr_thread_t rt = {0};
	int ret = setup(&rt, th);
	if (ret < 0) {
		free(rt.req);
		free(rt.conns);
		snprintf(th->why, sizeof(th->why), "set-up: %s", strerror(-ret));
		return ret;
	}
	th->mode = &rt;
	uint64_t now = zr_gen_now();
	for (unsigned i = 0; i < rt.n; i++) {
		if (rt.crr)
			crr_start(&rt, &rt.conns[i], now);
		else
			zr_gen_conn_open(&rt.conns[i].c, true);
	}

	uint64_t next_scan = 0, hard_end = th->measure_end + rt.timeout_ns, closed_at = 0;
	for (;;) {
		now = zr_gen_now();
		if (!rt.stopping && (now >= th->measure_end || *th->abort)) {
			rt.stopping = true;
			if (*th->abort)
				hard_end = now;
		}
		if (rt.paced) {
			/* Every request intended up to now (none from after the end)
			 * falls due; a free connection sends it in this turn. */
			uint64_t upto = (now < th->measure_end ? now : th->measure_end - 1) - th->t0;
			unsigned local;
			uint64_t k;
			while (!*th->abort && zr_pace_pop(&rt.pace, upto, &local, &k)) {
				rr_conn_t *r = &rt.conns[local];
				zr_pace_queue_due(&r->q);
				if (rt.crr)
					crr_start(&rt, r, now);
				else
					rr_try_send(&rt, r, now);
			}
		}
		if (rt.stopping && !closed_at && (all_done(&rt) || now >= hard_end)) {
			count_unfinished(&rt);
			for (unsigned i = 0; i < rt.n; i++)
				if (rt.conns[i].c.fd >= 0)
					zr_gen_conn_close(&rt.conns[i].c);
			closed_at = now;
		}
		if (closed_at) {
			bool idle = true;
			for (unsigned i = 0; i < rt.n && idle; i++)
				idle = rt.conns[i].c.pending == 0;
			if (idle || now > closed_at + ZR_GEN_NS)
				break;
		}
		if (now >= next_scan) {
			next_scan = now + 5000000ull;
			scan(&rt, now);
		}
		uint64_t wake = next_scan;
		if (rt.paced && !rt.stopping) {
			uint64_t due = th->t0 + zr_pace_next_ns(&rt.pace);
			if (due < wake)
				wake = due;
		}
		if (!rt.stopping && th->measure_end < wake)
			wake = th->measure_end;
		ret = zr_io_run(th->io, wake > now ? wake - now : 1);
		if (ret < 0) {
			snprintf(th->why, sizeof(th->why), "io_uring: %s", strerror(-ret));
			th->fatal = ret;
			break;
		}
	}
	th->mode = NULL;
	free(rt.req);
	free(rt.conns);
	return th->fatal;
}
