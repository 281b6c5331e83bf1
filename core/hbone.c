/* HBONE connections: the TLS connection and its I/O, the handshake, the
 * per-worker pool, the client and server sides, timers and drain. The HTTP/2
 * session and its streams are in hbone_stream.c. See hbone.h.
 *
 * Re-entrancy: nghttp2 forbids nghttp2_session_send/mem_recv from inside its
 * own callbacks, while callbacks may close connections (which submits
 * RST_STREAM). hc->depth counts nghttp2 calls on the stack; a flush asked for
 * inside one is done when the outermost call returns. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/authz.h"
#include "core/hbone.h"
#include "core/socks5.h"
#include "core/worker.h"
#include "crypto/tls.h"
#include "ctl/config.h"
#include "io/io.h"
#include "io/log.h"

#include "core/hbone-int.h"
#include "io/strbuf.h"

static void hc_maybe_free(zr_h2conn_t *hc);
static void hc_arm_recv(zr_h2conn_t *hc);
static void pool_remove(zr_h2conn_t *hc);

/* --- h2conn I/O --- */

static void hc_start_send(zr_h2conn_t *hc)
{
	if (hc->send_busy || hc->fd < 0 || hc->closing || !hc->tls)
		return;
	const void *p;
	size_t len = zr_tls_out_peek(hc->tls, &p);
	if (!len)
		return;
	/* kernel TLS refuses MSG_WAITALL: short sends are taken as they come */
	int rc = zr_tls_ktls_tx(hc->tls) ? zr_io_send_some(hc->w->io, &hc->send_op, hc->fd, p, len) :
					   zr_io_send(hc->w->io, &hc->send_op, hc->fd, p, len);
	if (rc < 0) {
		zr_hbone_close_conn(hc, "send");
		return;
	}
	hc->send_busy = true;
	hc->inflight++;
}

/* Best effort on a connection that is about to close: writes what the TLS
 * output holds (an alert, a GOAWAY, close_notify) without waiting, and
 * consumes what the socket took so that nothing is ever written twice.
 * Skipped while an io_uring send is in flight (the bytes would interleave). */
static void hc_send_now(zr_h2conn_t *hc)
{
	const void *p;
	size_t len;
	if (hc->send_busy || hc->fd < 0 || !hc->tls)
		return;
	while ((len = zr_tls_out_peek(hc->tls, &p))) {
		ssize_t k = send(hc->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (k <= 0)
			return;
		zr_tls_out_consume(hc->tls, (size_t)k);
	}
	zr_tls_ktls_send_control(hc->tls); /* close_notify on kernel TLS */
}

/* Closes once what is in flight and what the TLS output holds (an alert, a
 * GOAWAY, close_notify) have gone out, so that a failure still reaches the
 * peer behind a send that waits on it; at most HBONE_LINGER_NS. Nothing is
 * read or written meanwhile. why NULL: an orderly close. */
static void hc_close_after_output(zr_h2conn_t *hc, const char *why)
{
	if (hc->closing || hc->close_after_send)
		return;
	if (!hc->send_busy) {
		hc_send_now(hc);
		zr_hbone_close_conn(hc, why);
		return;
	}
	hc->close_after_send = true;
	hc->close_after_ns = zr_now_ns();
	hc->close_why = why ? strdup(why) : NULL;
	if (why && !hc->close_why) {
		zr_hbone_close_conn(hc, why); /* out of memory: at once */
		return;
	}
	pool_remove(hc);
}

/* A send completed on a connection closing after its output. */
static void hc_output_gone(zr_h2conn_t *hc)
{
	const void *p;
	if (zr_tls_out_peek(hc->tls, &p)) {
		hc_start_send(hc);
		if (hc->send_busy)
			return;
	}
	zr_tls_ktls_send_control(hc->tls); /* an alert on kernel TLS */
	/* close_why NULL: orderly, close_notify follows the GOAWAY */
	zr_hbone_close_conn(hc, hc->close_why);
}

/* Ends the session (GOAWAY) and closes once that has gone out. */
static void hc_terminate(zr_h2conn_t *hc)
{
	nghttp2_session_terminate_session(hc->h2, NGHTTP2_NO_ERROR);
	zr_hbone_flush(hc);
	hc_close_after_output(hc, NULL);
}

void zr_hbone_flush(zr_h2conn_t *hc)
{
	if (hc->closing || hc->close_after_send)
		return;
	if (hc->depth) {
		hc->want_flush = true;
		return;
	}
	if (hc->h2) {
		hc->depth++;
		int rv = nghttp2_session_send(hc->h2);
		hc->depth--;
		hc->want_flush = false;
		if (rv != 0) {
			zr_hbone_close_conn(hc, nghttp2_strerror(rv));
			return;
		}
	}
	hc_start_send(hc);
	if (hc->h2 && !nghttp2_session_want_read(hc->h2) && !nghttp2_session_want_write(hc->h2) &&
	    !zr_tls_out_pending(hc->tls))
		zr_hbone_close_conn(hc, NULL);
}

static void hc_send_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_h2conn_t *hc = container_of(op, zr_h2conn_t, send_op);
	hc->send_busy = false;
	hc->inflight--;
	if (hc->closing) {
		hc_maybe_free(hc);
		return;
	}
	if (res <= 0) {
		zr_hbone_close_conn(hc, res ? strerror(-res) : "send");
		hc_maybe_free(hc);
		return;
	}
	zr_tls_out_consume(hc->tls, (size_t)res);
	if (hc->close_after_send)
		hc_output_gone(hc);
	else
		zr_hbone_flush(hc);
	hc_maybe_free(hc);
}

static void tls_failed(zr_h2conn_t *hc, int err)
{
	const char *why = zr_tls_error(hc->tls);
	zr_tls_failure_t kind = ZR_TLS_FAIL_PROTOCOL;
	if (strstr(why, "expired"))
		kind = ZR_TLS_FAIL_EXPIRED;
	else if (strstr(why, "not allowed"))
		kind = ZR_TLS_FAIL_IDENTITY;
	else if (strstr(why, "trust domain"))
		kind = ZR_TLS_FAIL_TRUST_DOMAIN;
	else if (strstr(why, "certificate") || strstr(why, "verify"))
		kind = ZR_TLS_FAIL_CERTIFICATE;
	zr_counter_add(&hc->w->stats.tls_failures[kind], 1);
	char a[ZR_ADDR_STRLEN];
	zr_warn("hbone", "TLS handshake with %s failed (%s): %s", zr_sockaddr_str(&hc->peer, a),
		hc->server ? "server" : "client", why);
	/* Let the alert go out before the socket closes. */
	hc_close_after_output(hc, "handshake failed");
}

static void hc_process_input(zr_h2conn_t *hc);

/* --- handshake offload: a paused async job waits on a device's fds --- */

static void hc_async_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_hbone_async_wait_t *a = container_of(op, zr_hbone_async_wait_t, op);
	zr_h2conn_t *hc = a->hc;
	a->armed = false;
	hc->async_armed--;
	hc->inflight--;
	if (hc->closing) {
		hc_maybe_free(hc);
		return;
	}
	if (res < 0 && res != -ECANCELED) {
		zr_hbone_close_conn(hc, "waiting for the crypto device failed");
		hc_maybe_free(hc);
		return;
	}
	if (res >= 0 && hc->async_waiting) {
		/* The job can go on: stop the other polls, and resume once their
		 * completions are back (the slots are reused by the next wait). */
		hc->async_waiting = false;
		hc->async_resume = true;
		for (size_t i = 0; i < HBONE_ASYNC_FDS; i++)
			if (hc->async[i].armed)
				zr_io_cancel(hc->w->io, &hc->async[i].op);
	}
	if (hc->async_waiting && hc->async_armed == 0) {
		/* Every poll ended without an event: asking the job again is
		 * harmless (it pauses again and we wait again). */
		hc->async_waiting = false;
		hc->async_resume = true;
	}
	if (hc->async_resume && hc->async_armed == 0) {
		hc->async_resume = false;
		hc_process_input(hc);
	}
	hc_maybe_free(hc);
}

/* zr_tls_handshake returned 2: arm a one-shot poll on each fd the job waits
 * on. The handshake timeout still bounds a device that never answers. */
static void hc_wait_async(zr_h2conn_t *hc)
{
	int fds[HBONE_ASYNC_FDS];
	size_t n = zr_tls_async_fds(hc->tls, fds, HBONE_ASYNC_FDS);
	if (n == 0 || n > HBONE_ASYNC_FDS) {
		zr_hbone_close_conn(hc, "async handshake job: no (or too many) file descriptors to wait on");
		return;
	}
	hc->async_waiting = true;
	for (size_t i = 0; i < n; i++) {
		zr_hbone_async_wait_t *a = &hc->async[i];
		a->hc = hc;
		a->op.cb = hc_async_cb;
		if (zr_io_poll_once(hc->w->io, &a->op, fds[i], POLLIN) < 0) {
			zr_hbone_close_conn(hc, "can't wait for the crypto device");
			return;
		}
		a->armed = true;
		hc->async_armed++;
		hc->inflight++;
	}
}

static void hc_cancel_async(zr_h2conn_t *hc)
{
	hc->async_waiting = hc->async_resume = false;
	for (size_t i = 0; i < HBONE_ASYNC_FDS; i++)
		if (hc->async[i].armed)
			zr_io_cancel(hc->w->io, &hc->async[i].op);
}

/* --- kernel TLS --- */

static void hc_ktls_rx_step(zr_h2conn_t *hc);

static void hc_ktls_recv_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_h2conn_t *hc = container_of(op, zr_h2conn_t, ktls_op);
	hc->inflight--;
	hc->ktls_reading = false;
	if (hc->closing) {
		hc_maybe_free(hc);
		return;
	}
	if (res <= 0) {
		zr_hbone_close_conn(hc, res ? strerror(-res) : NULL);
		hc_maybe_free(hc);
		return;
	}
	hc->last_rx_ns = zr_now_ns();
	if (zr_tls_feed(hc->tls, hc->ktls_buf, (size_t)res) < 0) {
		zr_hbone_close_conn(hc, "out of memory");
	} else {
		hc_process_input(hc);
		if (!hc->closing)
			hc_ktls_rx_step(hc);
	}
	hc_maybe_free(hc);
}

/* Our multishot receive has stopped: read up to the end of the record
 * the input ends in, then hand receiving to the kernel and receive again. */
static void hc_ktls_rx_step(zr_h2conn_t *hc)
{
	char a[ZR_ADDR_STRLEN];
	if (hc->ktls_reading || hc->closing)
		return;
	size_t need = zr_tls_ktls_rx_gap(hc->tls);
	if (need) {
		if (!hc->ktls_buf && !(hc->ktls_buf = malloc(ZR_KTLS_BUF))) {
			zr_hbone_close_conn(hc, "out of memory");
			return;
		}
		hc->ktls_op.cb = hc_ktls_recv_cb;
		if (zr_io_recv_into(hc->w->io, &hc->ktls_op, hc->fd, hc->ktls_buf,
				    need < ZR_KTLS_BUF ? need : ZR_KTLS_BUF, 0) < 0) {
			zr_hbone_close_conn(hc, "recv");
			return;
		}
		hc->inflight++;
		hc->ktls_reading = true;
		return;
	}
	hc->ktls_rx_pending = false;
	free(hc->ktls_buf);
	hc->ktls_buf = NULL;
	int rc = zr_tls_ktls_start_rx(hc->tls);
	if (rc < 0)
		zr_info("hbone", "connection %s %s: receiving stays on zring's record layer: kernel TLS: %s",
			hc->server ? "from" : "to", zr_sockaddr_str(&hc->peer, a), strerror(-rc));
	hc_arm_recv(hc);
}

/* The handshake is done and recordCrypto is ktls: what the handshake left
 * to send goes now, then the kernel takes the write key; receiving follows
 * once our multishot receive has stopped. A connection the kernel does not
 * take stays on zring's record layer. */
static void hc_ktls_begin(zr_h2conn_t *hc)
{
	char a[ZR_ADDR_STRLEN];
	int rc = -EBUSY;
	if (!hc->send_busy) {
		hc_send_now(hc);
		rc = zr_tls_ktls_begin(hc->tls, hc->fd);
	}
	if (rc < 0) {
		zr_info("hbone", "connection %s %s stays on zring's record layer: kernel TLS: %s",
			hc->server ? "from" : "to", zr_sockaddr_str(&hc->peer, a), strerror(-rc));
		return;
	}
	hc->ktls_rx_pending = true;
	if (hc->recv_armed)
		zr_io_cancel(hc->w->io, &hc->recv_op); /* hc_recv_cb goes on when it ends */
}

static void hc_process_input(zr_h2conn_t *hc)
{
	zr_worker_t *w = hc->w;
	if (hc->close_after_send)
		return;
	if (hc->handshaking) {
		/* Input that arrives while a job is paused stays buffered in TLS
		 * until the device answers. */
		if (hc->async_waiting || hc->async_resume)
			return;
		int r = zr_tls_handshake(hc->tls);
		if (r < 0) {
			tls_failed(hc, r);
			return;
		}
		if (r == 2) {
			hc_start_send(hc);
			hc_wait_async(hc);
			return;
		}
		if (r == 0) {
			hc_start_send(hc);
			return;
		}
		hc->handshaking = false;
		if (strcmp(zr_tls_alpn(hc->tls), "h2") != 0) {
			zr_counter_add(&w->stats.tls_failures[ZR_TLS_FAIL_PROTOCOL], 1);
			zr_hbone_close_conn(hc, "peer did not agree on ALPN h2");
			return;
		}
		hc->peer_id = strdup(zr_tls_peer_id(hc->tls));
		if (zr_tls_ktls_wanted(hc->tls))
			hc_ktls_begin(hc);
		if (!hc->peer_id || zr_hbone_start_session(hc) < 0) {
			zr_hbone_close_conn(hc, "out of memory");
			return;
		}
		for (zr_conn_t *c = hc->streams, *next; c; c = next) {
			next = c->h2_next; /* a failed submit unlinks c */
			if (c->stream_id == 0)
				zr_hbone_submit_request(hc, c);
		}
	}
	for (;;) {
		zr_pblock_t *b = zr_hbone_decrypt_block(w);
		if (!b) {
			zr_hbone_close_conn(hc, "out of memory");
			return;
		}
		uint8_t *dst = b->data + b->used;
		ssize_t n = zr_tls_read(hc->tls, dst, ZR_PBLOCK_SIZE - b->used);
		if (n == -EAGAIN)
			break;
		if (n == 0) {
			zr_hbone_close_conn(hc, NULL); /* close_notify */
			return;
		}
		if (n < 0) {
			/* A record that failed to open queued an alert
			 * (bad_record_mac, ...): let it go out first. */
			if (n != -ECONNRESET)
				hc_close_after_output(hc, zr_tls_error(hc->tls));
			else
				zr_hbone_close_conn(hc, zr_tls_error(hc->tls));
			return;
		}
		hc->depth++;
		b->used += (uint32_t)n;
		ssize_t rv = nghttp2_session_mem_recv(hc->h2, dst, (size_t)n);
		hc->depth--;
		if (rv < 0) {
			char a[ZR_ADDR_STRLEN];
			zr_info("hbone", "HTTP/2 from %s: %s", zr_sockaddr_str(&hc->peer, a),
				nghttp2_strerror((int)rv));
			/* nghttp2 queued a GOAWAY with the error: send it, then close. */
			hc->depth++;
			nghttp2_session_send(hc->h2);
			hc->depth--;
			hc_close_after_output(hc, NULL);
			return;
		}
		if (hc->closing)
			return;
	}
	zr_hbone_flush(hc);
}

static void hc_recv_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_h2conn_t *hc = container_of(op, zr_h2conn_t, recv_op);
	zr_worker_t *w = hc->w;
	bool final = !(flags & ZR_IO_F_MORE);
	if (final) {
		hc->recv_armed = false;
		hc->inflight--;
	}
	if (res > 0) {
		unsigned bid = zr_io_buf_id(flags);
		hc->last_rx_ns = zr_now_ns();
		if (!hc->closing) {
			/* Decrypt straight from the receive buffer; only an
			 * incomplete record's tail is copied before it goes back. */
			zr_tls_lend(hc->tls, zr_io_buf_addr(w->io, bid), (size_t)res);
			hc_process_input(hc);
			if (zr_tls_unlend(hc->tls) < 0)
				zr_hbone_close_conn(hc, "out of memory");
		}
		zr_io_buf_release(w->io, bid);
		if (final && !hc->closing)
			hc_arm_recv(hc);
	} else if (res == 0) {
		zr_hbone_close_conn(hc, hc->handshaking ? "peer closed during the handshake" : NULL);
	} else if (res == -ENOBUFS) {
		zr_counter_add(&w->stats.recv_nobufs, 1);
		if (!hc->starved && !hc->closing) {
			hc->starved = true;
			hc->starved_next = w->h2_starved;
			w->h2_starved = hc;
		}
	} else if (zr_tls_ktls_rx(hc->tls) && !hc->closing && (res == -EBADMSG || res == -EMSGSIZE)) {
		/* kernel TLS refused a record: the alert goes after our output */
		zr_tls_ktls_fail(hc->tls, res);
		hc_close_after_output(hc, zr_tls_error(hc->tls));
	} else if (res == -EIO && zr_tls_ktls_rx(hc->tls) && !hc->closing) {
		/* kernel TLS: a record that is not data (alert, ticket) */
		zr_tls_ktls_recv_control(hc->tls);
		hc_process_input(hc);
		if (final && !hc->closing)
			hc_arm_recv(hc);
	} else if (res != -ECANCELED) {
		zr_hbone_close_conn(hc, strerror(-res));
	}
	/* the receive cancelled for kernel TLS has ended */
	if (final && !hc->closing && hc->ktls_rx_pending && !hc->recv_armed && !hc->starved)
		hc_ktls_rx_step(hc);
	hc_maybe_free(hc);
}

/* The record crypto device finished some of this connection's records
 * (zr_tls_crypto_poll, at the top of the loop): read what was opened, send
 * what was sealed. */
static void hc_crypto_wake(void *arg)
{
	zr_h2conn_t *hc = arg;
	if (hc->closing || hc->handshaking)
		return;
	hc_process_input(hc);
	hc_maybe_free(hc);
}

static void hc_arm_recv(zr_h2conn_t *hc)
{
	if (hc->recv_armed || hc->closing || hc->starved)
		return;
	if (hc->ktls_rx_pending) {
		hc_ktls_rx_step(hc);
		return;
	}
	/* from the reserve: relays holding every other buffer wait on us */
	if (zr_io_recv_reserved(hc->w->io, &hc->recv_op, hc->fd) < 0) {
		zr_hbone_close_conn(hc, "recv");
		return;
	}
	hc->recv_armed = true;
	hc->inflight++;
}

void zr_hbone_feed_starved(zr_worker_t *w)
{
	/* HBONE receives into the reserve and gives each buffer back before
	 * its callback returns: by the next loop turn the reserve is free. */
	zr_h2conn_t *list = w->h2_starved;
	w->h2_starved = NULL;
	while (list) {
		zr_h2conn_t *hc = list;
		list = hc->starved_next;
		hc->starved = false;
		hc_arm_recv(hc);
	}
}

/* --- lifecycle --- */

static zr_h2conn_t *hc_new(zr_worker_t *w, bool server, int fd)
{
	zr_h2conn_t *hc = calloc(1, sizeof(*hc));
	if (!hc)
		return NULL;
	hc->w = w;
	hc->server = server;
	hc->fd = fd;
	hc->recv_op.cb = hc_recv_cb;
	hc->send_op.cb = hc_send_cb;
	hc->created_ns = hc->last_rx_ns = hc->idle_since_ns = zr_now_ns();
	hc->snap = w->snap;
	zr_snapshot_ref(hc->snap);
	hc->next = w->h2conns;
	if (w->h2conns)
		w->h2conns->prev = hc;
	w->h2conns = hc;
	zr_counter_add(server ? &w->stats.hbone_server_conns : &w->stats.hbone_client_conns, 1);
	return hc;
}

static void pool_remove(zr_h2conn_t *hc)
{
	if (!hc->in_pool)
		return;
	zr_worker_t *w = hc->w;
	for (zr_h2conn_t **pp = &w->pool[hc->pool_hash & w->pool_mask]; *pp; pp = &(*pp)->pool_next) {
		if (*pp == hc) {
			*pp = hc->pool_next;
			break;
		}
	}
	hc->in_pool = false;
}

void zr_hbone_close_conn(zr_h2conn_t *hc, const char *why)
{
	if (hc->closing)
		return;
	char a[ZR_ADDR_STRLEN];
	if (why)
		zr_info("hbone", "connection %s %s closed: %s", hc->server ? "from" : "to",
			zr_sockaddr_str(&hc->peer, a), why);
	hc->closing = true;
	pool_remove(hc);
	/* An orderly close says so (RFC 8446 §6.1), as far as the socket takes
	 * it at once: the connection is going away and waits for nothing. */
	if (!why && hc->tls && !hc->connecting && !hc->handshaking && hc->fd >= 0 && !hc->send_busy) {
		zr_tls_close_notify(hc->tls);
		hc_send_now(hc);
	}
	/* Every stream of a dead connection fails; nothing else does. The
	 * response flag says where the connection was: TCP connect (a timeout
	 * there is ztunnel's NETWORK_POLICY), TLS handshake, or HTTP/2. */
	const char *fail_flags =
		hc->connecting ?
			(why && (strstr(why, "timeout") || strstr(why, "timed out")) ? "NETWORK_POLICY" : "CONNECT") :
		hc->handshaking ? "TLS_FAILURE" :
				  "H2_HANDSHAKE_FAILURE";
	while (hc->streams) {
		zr_conn_t *c = hc->streams;
		zr_hbone_stream_unlink(c);
		if (c->state == ZR_CONN_CONNECTING && !c->inbound_hbone) {
			zr_tcp_metrics_fail(c, fail_flags);
			zr_flow_refuse(c, ZR_REFUSE_CONNECT_FAILED, ZR_SOCKS5_HOST_UNREACHABLE);
		} else {
			zr_conn_close(c, true);
		}
		zr_worker_conn_maybe_free(c);
	}
	if (hc->fd >= 0 && hc->inflight)
		zr_io_cancel_fd(hc->w->io, hc->fd);
	/* The device's fds are not ours to close: cancel the polls on them,
	 * and the connection is freed once their completions are back. */
	if (hc->async_armed)
		hc_cancel_async(hc);
}

static void hc_maybe_free(zr_h2conn_t *hc)
{
	if (!hc->closing || hc->inflight || hc->depth)
		return;
	zr_worker_t *w = hc->w;
	if (hc->starved) {
		for (zr_h2conn_t **pp = &w->h2_starved; *pp; pp = &(*pp)->starved_next)
			if (*pp == hc) {
				*pp = hc->starved_next;
				break;
			}
	}
	if (hc->prev)
		hc->prev->next = hc->next;
	else
		w->h2conns = hc->next;
	if (hc->next)
		hc->next->prev = hc->prev;
	zr_counter_sub(hc->server ? &w->stats.hbone_server_conns : &w->stats.hbone_client_conns, 1);
	if (hc->h2)
		nghttp2_session_del(hc->h2);
	if (hc->tls)
		zr_tls_free(hc->tls);
	if (hc->fd >= 0)
		close(hc->fd);
	zr_snapshot_unref(hc->snap);
	for (size_t i = 0; i < hc->n_allowed; i++)
		free(hc->allowed[i]);
	free(hc->close_why);
	free(hc->ktls_buf);
	free(hc->identity);
	free(hc->peer_id);
	free(hc->pool_key);
	free(hc);
}

static void hc_connect_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_h2conn_t *hc = container_of(op, zr_h2conn_t, connect_op);
	hc->inflight--;
	if (hc->closing) {
		hc_maybe_free(hc);
		return;
	}
	if (res < 0) {
		zr_hbone_close_conn(hc, res == -ECANCELED ? "connect timeout" : strerror(-res));
		hc_maybe_free(hc);
		return;
	}
	hc->connecting = false;
	hc->handshaking = true;
	char err[256];
	const char *allowed[ZR_HBONE_MAX_ALLOWED];
	for (size_t i = 0; i < hc->n_allowed; i++)
		allowed[i] = hc->allowed[i];
	zr_tls_peer_policy_t pol = {.allowed_ids = allowed, .n_allowed_ids = hc->n_allowed};
	hc->tls = zr_tls_new(hc->snap->ids, hc->identity, false, &pol, err, sizeof(err));
	if (!hc->tls) {
		zr_counter_add(&hc->w->stats.tls_failures[ZR_TLS_FAIL_NO_IDENTITY], 1);
		zr_hbone_close_conn(hc, err);
		hc_maybe_free(hc);
		return;
	}
	zr_tls_set_wake(hc->tls, hc_crypto_wake, hc);
	hc_arm_recv(hc);
	hc_process_input(hc); /* ClientHello */
	hc_maybe_free(hc);
}

static unsigned hc_capacity(const zr_h2conn_t *hc)
{
	unsigned max = hc_cfg(hc)->pool_max_streams_per_connection;
	if (hc->h2) {
		uint32_t remote = nghttp2_session_get_remote_settings(hc->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
		if (remote < max)
			max = remote;
	}
	return max;
}

/* The identities the client accepts from the destination's server: the
 * destination workload's own, then the service's subjectAltNames, in that
 * order (the same list goes into the pool key and into the TLS check). */
static size_t accepted_ids(const zr_conn_t *c, const char *ids[ZR_HBONE_MAX_ALLOWED])
{
	size_t n = 0;
	ids[n++] = c->dst_wl->identity;
	if (c->svc)
		for (size_t i = 0; i < c->svc->n_subject_alt_names && n < ZR_HBONE_MAX_ALLOWED; i++)
			ids[n++] = c->svc->subject_alt_names[i];
	return n;
}

static zr_h2conn_t *pool_get(zr_conn_t *c, const char *key, uint32_t h)
{
	zr_worker_t *w = c->w;
	if (!w->pool) {
		w->pool_mask = 255;
		w->pool = calloc(w->pool_mask + 1, sizeof(*w->pool));
		if (!w->pool)
			return NULL;
	}
	for (zr_h2conn_t *hc = w->pool[h & w->pool_mask]; hc; hc = hc->pool_next) {
		if (hc->pool_hash == h && !hc->closing && !hc->goaway && hc->snap == w->snap &&
		    strcmp(hc->pool_key, key) == 0 && hc->n_streams < hc_capacity(hc)) {
			zr_counter_add(&w->stats.hbone_pool_reused, 1);
			return hc;
		}
	}
	/* A new connection to dstIP:15008. */
	zr_sockaddr_t dst;
	zr_sockaddr_from_ip(&dst, &c->dst_wl->ips[0], HBONE_PORT);
	int fd = socket(dst.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	int mark = 1337, one = 1;
	setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	zr_flow_bind_source(w, fd, &c->peer, &dst);
	zr_h2conn_t *hc = hc_new(w, false, fd);
	if (!hc) {
		close(fd);
		return NULL;
	}
	hc->peer = dst;
	hc->connect_op.cb = hc_connect_cb;
	hc->connecting = true;
	hc->identity = strdup(c->src_wl->identity);
	hc->pool_key = strdup(key);
	hc->pool_hash = h;
	const char *ids[ZR_HBONE_MAX_ALLOWED];
	size_t n_ids = accepted_ids(c, ids);
	bool oom = false;
	for (size_t i = 0; i < n_ids; i++)
		oom |= !(hc->allowed[hc->n_allowed++] = strdup(ids[i]));
	if (!hc->identity || !hc->pool_key || oom) {
		zr_hbone_close_conn(hc, "out of memory");
		hc_maybe_free(hc);
		return NULL;
	}
	hc->pool_next = w->pool[h & w->pool_mask];
	w->pool[h & w->pool_mask] = hc;
	hc->in_pool = true;
	if (zr_io_connect(w->io, &hc->connect_op, fd, &dst, hc_cfg(hc)->connect_timeout_ms * 1000000ull) < 0) {
		zr_hbone_close_conn(hc, "connect");
		hc_maybe_free(hc);
		return NULL;
	}
	hc->inflight++;
	return hc;
}

void zr_hbone_connect(zr_conn_t *c)
{
	char key[4096], a[ZR_ADDR_STRLEN], b[ZR_ADDR_STRLEN];
	zr_ip_t ip, src_ip;
	zr_sockaddr_to_ip(&c->upstream, &ip, NULL);
	zr_sockaddr_to_ip(&c->peer, &src_ip, NULL);
	if (!c->snap->ids || !zr_identity_store_has(c->snap->ids, c->src_wl->identity)) {
		zr_warn("hbone", "conn %llu: no usable certificate for %s", (unsigned long long)c->id,
			c->src_wl->identity);
		zr_tcp_metrics_fail(c, "IDENTITY_ERROR");
		zr_flow_refuse(c, ZR_REFUSE_NO_IDENTITY, ZR_SOCKS5_GENERAL_FAILURE);
		return;
	}
	/* The source address is part of the key: the connection is bound to it
	 * (zr_flow_bind_source), and the destination authorizes every stream on
	 * it by the connection's peer address. So is every identity the client
	 * accepts from the server: a connection verified against a service's
	 * subjectAltNames must not carry a stream that accepts only the
	 * workload's own identity (ztunnel's WorkloadKey keeps the list too). */
	const char *ids[ZR_HBONE_MAX_ALLOWED];
	size_t n_ids = accepted_ids(c, ids);
	int n = snprintf(key, sizeof(key), "%s|%s|%s|", c->src_wl->identity, zr_ip_str(&src_ip, b), zr_ip_str(&ip, a));
	for (size_t i = 0; i < n_ids && n >= 0 && (size_t)n < sizeof(key); i++)
		n += snprintf(key + n, sizeof(key) - (size_t)n, "%s%s", i ? "," : "", ids[i]);
	if (n < 0 || (size_t)n >= sizeof(key)) {
		zr_warn("hbone", "conn %llu: identities of %s too long for a pool key", (unsigned long long)c->id, a);
		zr_tcp_metrics_fail(c, "CONNECT");
		zr_flow_refuse(c, ZR_REFUSE_OVERLOAD, ZR_SOCKS5_GENERAL_FAILURE);
		return;
	}
	zr_h2conn_t *hc = pool_get(c, key, zr_str_hash(key));
	if (!hc) {
		zr_tcp_metrics_fail(c, "CONNECT");
		zr_flow_refuse(c, ZR_REFUSE_OVERLOAD, ZR_SOCKS5_GENERAL_FAILURE);
		return;
	}
	c->state = ZR_CONN_CONNECTING;
	zr_hbone_bridge(c, &c->down);
	c->stream_id = 0;
	zr_hbone_stream_link(hc, c);
	if (hc->h2) {
		zr_hbone_submit_request(hc, c);
		zr_hbone_flush(hc);
	}
}

/* --- server side --- */

void zr_hbone_accepted(zr_listener_t *l, int fd)
{
	zr_worker_t *w = l->worker;
	char err[256], a[ZR_ADDR_STRLEN];
	zr_counter_add(&w->stats.accepted, 1);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	zr_h2conn_t *hc = hc_new(w, true, fd);
	if (!hc) {
		close(fd);
		return;
	}
	hc->peer.len = sizeof(hc->peer.ss);
	hc->local.len = sizeof(hc->local.ss);
	getpeername(fd, &hc->peer.sa, &hc->peer.len);
	getsockname(fd, &hc->local.sa, &hc->local.len);
	/* Present the identity of the local workload this connection came to. */
	zr_ip_t ip;
	zr_sockaddr_to_ip(&hc->local, &ip, NULL);
	const zr_workload_t *wl = zr_state_workload_by_ip(&hc_cfg(hc)->state, &ip);
	const char *identity = wl && wl->local ? wl->identity : NULL;
	if (!identity && hc->snap->ids && zr_identity_store_count(hc->snap->ids) == 1)
		identity = zr_identity_store_info(hc->snap->ids, 0)->identity;
	if (!identity || !hc->snap->ids) {
		zr_counter_add(&w->stats.tls_failures[ZR_TLS_FAIL_NO_IDENTITY], 1);
		zr_hbone_close_conn(hc, "no local workload identity for this address");
		hc_maybe_free(hc);
		return;
	}
	hc->identity = strdup(identity);
	zr_tls_peer_policy_t pol = {.trust_domain = hc_cfg(hc)->trust_domain};
	hc->tls = hc->identity ? zr_tls_new(hc->snap->ids, hc->identity, true, &pol, err, sizeof(err)) : NULL;
	if (!hc->tls) {
		zr_counter_add(&w->stats.tls_failures[ZR_TLS_FAIL_NO_IDENTITY], 1);
		zr_warn("hbone", "connection from %s: %s", zr_sockaddr_str(&hc->peer, a), err);
		zr_hbone_close_conn(hc, NULL);
		hc_maybe_free(hc);
		return;
	}
	zr_tls_set_wake(hc->tls, hc_crypto_wake, hc);
	hc->handshaking = true;
	hc_arm_recv(hc);
}

/* --- timers, drain, policy --- */

void zr_hbone_tick(zr_worker_t *w, uint64_t now)
{
	for (zr_h2conn_t *hc = w->h2conns, *next; hc; hc = next) {
		next = hc->next;
		if (hc->closing) {
			/* closed outside any completion: nothing else frees it */
			hc_maybe_free(hc);
			continue;
		}
		if (hc->close_after_send) {
			if (now - hc->close_after_ns > HBONE_LINGER_NS)
				zr_hbone_close_conn(hc,
						    hc->close_why ? hc->close_why : "peer did not take our last bytes");
		} else if ((hc->connecting || hc->handshaking) && now - hc->created_ns > HANDSHAKE_TIMEOUT_NS) {
			zr_counter_add(&w->stats.tls_failures[ZR_TLS_FAIL_TIMEOUT], 1);
			zr_hbone_close_conn(hc, "handshake timeout");
		} else if (hc->h2 && zr_tls_ktls_rekey_due(hc->tls) && (!hc->goaway || hc->n_streams == 0)) {
			/* The kernel cannot update keys: no new streams here, and
			 * the connection goes once its streams have. */
			pool_remove(hc);
			if (hc->n_streams == 0) {
				hc_terminate(hc);
			} else {
				hc->goaway = true;
				nghttp2_submit_goaway(hc->h2, NGHTTP2_FLAG_NONE,
						      nghttp2_session_get_last_proc_stream_id(hc->h2), NGHTTP2_NO_ERROR,
						      NULL, 0);
				zr_hbone_flush(hc);
			}
		} else if (hc->h2 && hc->ping_sent_ns && now - hc->last_rx_ns > PING_DEAD_NS) {
			zr_hbone_close_conn(hc, "no answer to PING for 20 s");
		} else if (hc->h2 && !hc->ping_sent_ns && now - hc->last_rx_ns > PING_IDLE_NS) {
			nghttp2_submit_ping(hc->h2, NGHTTP2_FLAG_NONE, NULL);
			hc->ping_sent_ns = now;
			zr_hbone_flush(hc);
		} else if (!hc->server && hc->h2 && hc->n_streams == 0 &&
			   now - hc->idle_since_ns > hc_cfg(hc)->pool_idle_timeout_ms * 1000000ull) {
			hc_terminate(hc);
		}
		/* last: unlinking a stream moves idle_since_ns past `now` */
		if (hc->n_streams)
			zr_hbone_expire_requests(hc, now);
		hc_maybe_free(hc);
	}
}

void zr_hbone_drain(zr_worker_t *w)
{
	for (zr_h2conn_t *hc = w->h2conns; hc; hc = hc->next) {
		if (hc->closing)
			continue;
		hc->goaway = true;
		pool_remove(hc);
		if (hc->server && hc->h2) {
			nghttp2_submit_shutdown_notice(hc->h2);
			zr_hbone_flush(hc);
		}
	}
}

void zr_hbone_free_memory(zr_worker_t *w)
{
	zr_hbone_free_blocks(w);
	free(w->pool);
	w->pool = NULL;
}

void zr_hbone_close_all(zr_worker_t *w)
{
	for (zr_h2conn_t *hc = w->h2conns, *next; hc; hc = next) {
		next = hc->next;
		zr_hbone_close_conn(hc, NULL);
		hc_maybe_free(hc);
	}
}

void zr_hbone_recheck_policies(zr_worker_t *w)
{
	const zr_state_t *st = &w->snap->cfg->state;
	/* Closing one connection may flush its HBONE connection and free
	 * others (the saved next among them): start over after each close.
	 * Closed ones are neither relaying nor connecting, so this ends.
	 * Those still connecting upstream were authorized on the old policies
	 * too: they are checked as well, and a denied one is refused (its
	 * client gets a reset, never the 200). Streams whose headers are not
	 * complete are authorized when they are, on the policies then. */
again:
	for (zr_conn_t *c = w->conns; c; c = c->next) {
		if ((c->state != ZR_CONN_RELAY && c->state != ZR_CONN_CONNECTING) ||
		    (!c->inbound_hbone && c->kind != ZR_LISTENER_INBOUND_PLAINTEXT))
			continue;
		zr_ip_t ip;
		zr_sockaddr_to_ip(&c->upstream, &ip, NULL);
		const zr_workload_t *dst = zr_state_workload_by_ip(st, &ip);
		if (dst && zr_flow_authorize(c, st, dst, "policy change"))
			continue;
		if (c->state == ZR_CONN_CONNECTING) {
			zr_counter_add(&w->stats.refused[dst ? ZR_REFUSE_DENIED : ZR_REFUSE_NOT_LOCAL], 1);
			if (c->metrics)
				zr_counter_add(&c->metrics->failed, 1);
		}
		zr_conn_close(c, true);
		zr_worker_conn_maybe_free(c);
		goto again;
	}
}
