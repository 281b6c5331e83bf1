/* The relay: bytes received on one socket into provided buffers are queued
 * on the other side and sent from the same buffers (no copy in user space).
 * Each direction holds at most ZR_RELAY_HIGH_WATER queued bytes before its
 * receive is cancelled, so a slow reader stalls its writer instead of
 * growing memory; reading resumes below ZR_RELAY_LOW_WATER. (One
 * io_uring_enter may finish a few batches of up to 32 multishot receives
 * before the cancel lands, so a direction may briefly hold about 2 MiB; the
 * worker's fixed buffer pool is the hard limit for all connections.) EOF becomes
 * shutdown(SHUT_WR) on the other socket once its queue is flushed; a reset or
 * a failed send closes both sockets with RST. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/conn.h"
#include "core/worker.h"
#include "io/io.h"
#include "io/log.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static zr_relay_side_t *other_side(zr_relay_side_t *s)
{
	zr_conn_t *c = s->conn;
	return s == &c->down ? &c->up : &c->down;
}

void zr_relay_arm_recv(zr_relay_side_t *s)
{
	zr_conn_t *c = s->conn;
	if (s->recv_armed || s->recv_eof || s->recv_paused || s->starved || c->state == ZR_CONN_CLOSING)
		return;
	if (zr_io_recv(c->w->io, &s->recv_op, s->fd) < 0) {
		zr_conn_close(c, true);
		return;
	}
	s->recv_armed = true;
	c->inflight++;
}

static void watch_errors(zr_relay_side_t *s);

static void err_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_relay_side_t *s = container_of(op, zr_relay_side_t, err_op);
	zr_conn_t *c = s->conn;
	s->err_armed = false;
	c->inflight--;
	/* POLLHUP alone (the peer's FIN after ours) leaves unread data to
	 * deliver and would fire again at once: only an error ends things. */
	if (res > 0 && (res & POLLERR) && c->state != ZR_CONN_CLOSING) {
		zr_debug("relay", "conn %llu: reset while paused", (unsigned long long)c->id);
		zr_conn_close(c, true);
	} else if (res == -ECANCELED && (s->recv_paused || s->starved)) {
		/* Cancelled by a resume, but paused again since. */
		watch_errors(s);
	}
	zr_worker_conn_maybe_free(c);
}

/* Nothing reads s while it is paused or starved of buffers; a reset would
 * go unseen until the other side drains, which may be never. */
static void watch_errors(zr_relay_side_t *s)
{
	zr_conn_t *c = s->conn;
	if (!s->err_armed && c->state != ZR_CONN_CLOSING &&
	    zr_io_poll_once(c->w->io, &s->err_op, s->fd, POLLERR) == 0) {
		s->err_armed = true;
		c->inflight++;
	}
}

void zr_relay_pause(zr_relay_side_t *s)
{
	zr_conn_t *c = s->conn;
	zr_worker_t *w = c->w;
	s->recv_paused = true;
	zr_counter_add(&w->stats.backpressure_pauses, 1);
	if (s->recv_armed && zr_io_cancel(w->io, &s->recv_op) < 0) {
		zr_conn_close(c, true);
		return;
	}
	watch_errors(s);
}

void zr_relay_resume(zr_relay_side_t *s)
{
	zr_conn_t *c = s->conn;
	s->recv_paused = false;
	if (s->err_armed)
		zr_io_cancel(c->w->io, &s->err_op);
	zr_relay_arm_recv(s);
}

void zr_relay_shut_wr(zr_relay_side_t *s)
{
	if (s->shut_wr || s->fd < 0)
		return;
	s->shut_wr = true;
	shutdown(s->fd, SHUT_WR);
}

static void check_done(zr_conn_t *c)
{
	if (c->state != ZR_CONN_RELAY)
		return;
	if (c->down.recv_eof && c->up.recv_eof && !c->down.send_busy && !c->up.send_busy && c->down.q_bytes == 0 &&
	    c->up.q_bytes == 0)
		zr_conn_close(c, false);
}

static void send_next(zr_relay_side_t *dst)
{
	zr_conn_t *c = dst->conn;
	zr_worker_t *w = c->w;
	if (dst->send_busy || dst->q_head == ZR_BUF_NONE || c->state == ZR_CONN_CLOSING)
		return;
	unsigned bid = dst->q_head;
	const uint8_t *p = (const uint8_t *)zr_io_buf_addr(w->io, bid) + dst->q_off;
	if (zr_io_send(w->io, &dst->send_op, dst->fd, p, w->bufmeta[bid].len - dst->q_off) < 0) {
		zr_conn_close(c, true);
		return;
	}
	dst->send_busy = true;
	c->inflight++;
}

void zr_relay_queue_append(zr_worker_t *w, uint16_t *head, uint16_t *tail, unsigned bid, uint32_t len)
{
	/* A small receive is copied behind the last queued one when it fits, and
	 * its buffer goes straight back: a trickle of tiny segments must not pin
	 * one whole buffer each (the pause threshold counts bytes). Bytes
	 * appended behind a send in flight are sent by the next send. */
	if (*head != ZR_BUF_NONE && len <= ZR_BUF_SIZE / 4 && w->bufmeta[*tail].len + len <= ZR_BUF_SIZE) {
		uint8_t *to = (uint8_t *)zr_io_buf_addr(w->io, *tail) + w->bufmeta[*tail].len;
		memcpy(to, zr_io_buf_addr(w->io, bid), len);
		w->bufmeta[*tail].len += len;
		zr_worker_buf_release(w, bid);
		return;
	}
	w->bufmeta[bid].len = len;
	w->bufmeta[bid].next = ZR_BUF_NONE;
	if (*head == ZR_BUF_NONE)
		*head = (uint16_t)bid;
	else
		w->bufmeta[*tail].next = (uint16_t)bid;
	*tail = (uint16_t)bid;
}

static void enqueue(zr_relay_side_t *dst, unsigned bid, uint32_t len)
{
	zr_relay_queue_append(dst->conn->w, &dst->q_head, &dst->q_tail, bid, len);
	dst->q_bytes += len;
}

static void count_bytes(zr_conn_t *c, zr_relay_side_t *src, uint32_t n)
{
	zr_worker_stats_t *st = &c->w->stats;
	src->bytes_in += n;
	if (src == &c->down) {
		zr_counter_add(&st->relay_bytes_up, n);
		if (c->metrics)
			zr_counter_add(&c->metrics->received_bytes, n);
	} else {
		zr_counter_add(&st->relay_bytes_down, n);
		if (c->metrics)
			zr_counter_add(&c->metrics->sent_bytes, n);
	}
}

static void recv_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_relay_side_t *s = container_of(op, zr_relay_side_t, recv_op);
	zr_conn_t *c = s->conn;
	zr_worker_t *w = c->w;
	zr_relay_side_t *dst = other_side(s);
	bool final = !(flags & ZR_IO_F_MORE);

	if (final) {
		s->recv_armed = false;
		c->inflight--;
	}
	if (res > 0) {
		unsigned bid = zr_io_buf_id(flags);
		w->bufs_in_use++;
		if (c->state == ZR_CONN_CLOSING) {
			zr_worker_buf_release(w, bid);
		} else {
			count_bytes(c, s, (uint32_t)res);
			enqueue(dst, bid, (uint32_t)res);
			send_next(dst);
			zr_relay_after_data(s, dst->q_bytes, final);
		}
	} else if (res == 0) {
		s->recv_eof = true;
		if (dst->q_bytes == 0 && !dst->send_busy)
			zr_relay_shut_wr(dst);
		check_done(c);
	} else {
		zr_relay_recv_failed(s, res);
	}
	zr_worker_conn_maybe_free(c);
}

void zr_relay_recv_failed(zr_relay_side_t *s, int res)
{
	zr_conn_t *c = s->conn;
	zr_worker_t *w = c->w;
	if (res == -ENOBUFS) {
		zr_counter_add(&w->stats.recv_nobufs, 1);
		if (!s->starved && c->state != ZR_CONN_CLOSING) {
			s->starved = true;
			s->starved_next = w->starved;
			w->starved = s;
			watch_errors(s);
		}
	} else if (res == -ECANCELED) {
		/* Our backpressure cancel (or a close). Resume if the queue has
		 * drained in the meantime. */
		zr_relay_arm_recv(s);
	} else if (c->state != ZR_CONN_CLOSING) {
		zr_debug("relay", "conn %llu: recv: %s", (unsigned long long)c->id, strerror(-res));
		zr_conn_close(c, true);
	}
}

void zr_relay_after_data(zr_relay_side_t *s, uint32_t queued, bool final)
{
	if (queued >= ZR_RELAY_HIGH_WATER && !s->recv_paused) {
		zr_relay_pause(s);
	} else if (s->recv_paused && s->recv_armed) {
		/* The receive was running when the cancel arrived (-EALREADY):
		 * ask again until it stops. */
		if (zr_io_cancel(s->conn->w->io, &s->recv_op) < 0)
			zr_conn_close(s->conn, true);
	} else if (final) {
		zr_relay_arm_recv(s);
	}
}

static void send_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_relay_side_t *dst = container_of(op, zr_relay_side_t, send_op);
	zr_conn_t *c = dst->conn;
	zr_worker_t *w = c->w;
	zr_relay_side_t *src = other_side(dst);

	dst->send_busy = false;
	c->inflight--;
	if (c->state == ZR_CONN_CLOSING) {
		zr_worker_conn_maybe_free(c);
		return;
	}
	if (res <= 0) {
		zr_debug("relay", "conn %llu: send: %s", (unsigned long long)c->id, strerror(res ? -res : EPIPE));
		zr_conn_close(c, true);
		zr_worker_conn_maybe_free(c);
		return;
	}
	uint32_t left = (uint32_t)res;
	dst->q_bytes -= left;
	while (left && dst->q_head != ZR_BUF_NONE) {
		unsigned bid = dst->q_head;
		uint32_t avail = w->bufmeta[bid].len - dst->q_off;
		if (left < avail) {
			dst->q_off += left;
			break;
		}
		left -= avail;
		dst->q_off = 0;
		dst->q_head = w->bufmeta[bid].next;
		zr_worker_buf_release(w, bid);
	}
	if (src->recv_paused && dst->q_bytes <= ZR_RELAY_LOW_WATER)
		zr_relay_resume(src);
	if (dst->q_head != ZR_BUF_NONE)
		send_next(dst);
	else if (src->recv_eof)
		zr_relay_shut_wr(dst);
	check_done(c);
	zr_worker_conn_maybe_free(c);
}

void zr_relay_init_side(zr_conn_t *c, zr_relay_side_t *s, int fd)
{
	s->recv_op.cb = recv_cb;
	s->send_op.cb = send_cb;
	s->err_op.cb = err_cb;
	s->err_armed = false;
	s->conn = c;
	s->fd = fd;
	s->q_head = s->q_tail = ZR_BUF_NONE;
	s->q_off = s->q_bytes = 0;
	s->recv_armed = s->recv_paused = s->recv_eof = s->send_busy = s->shut_wr = s->starved = false;
	s->bytes_in = 0;
	s->starved_next = NULL;
}

void zr_relay_start(zr_conn_t *c)
{
	c->state = ZR_CONN_RELAY;
	zr_relay_arm_recv(&c->down);
	zr_relay_arm_recv(&c->up);
}

void zr_relay_release_queues(zr_conn_t *c)
{
	zr_relay_side_t *sides[2] = {&c->down, &c->up};
	for (int i = 0; i < 2; i++) {
		zr_relay_side_t *s = sides[i];
		while (s->q_head != ZR_BUF_NONE) {
			unsigned bid = s->q_head;
			s->q_head = c->w->bufmeta[bid].next;
			zr_worker_buf_release(c->w, bid);
		}
		s->q_bytes = 0;
		s->q_off = 0;
	}
}

void zr_relay_feed_starved(zr_worker_t *w)
{
	/* Only worth trying when buffers came back; a side that starves again
	 * re-queues itself. */
	if (!w->starved || w->bufs_in_use + 8 > ZR_BUF_COUNT)
		return;
	zr_relay_side_t *list = w->starved;
	w->starved = NULL;
	while (list) {
		zr_relay_side_t *s = list;
		list = s->starved_next;
		s->starved = false;
		s->starved_next = NULL;
		if (s->err_armed && !s->recv_paused)
			zr_io_cancel(w->io, &s->err_op);
		zr_relay_arm_recv(s);
	}
}
