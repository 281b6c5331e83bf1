/* HBONE streams: the HTTP/2 session on an HBONE connection (nghttp2
 * callbacks), CONNECT requests and responses, and the bridge between each
 * stream and its TCP socket (DATA written from receive buffers without a
 * copy, received DATA kept as slices of the block it was decrypted into). */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

static void tcp_send_next(zr_conn_t *c);

/* --- decrypted blocks and stream slices --- */

static void pblock_unref(zr_worker_t *w, zr_pblock_t *b)
{
	if (--b->refs)
		return;
	b->next_free = w->free_pblocks;
	w->free_pblocks = b;
}

/* The block the next record is decrypted into, with room for a whole
 * record; NULL when out of memory. */
zr_pblock_t *zr_hbone_decrypt_block(zr_worker_t *w)
{
	zr_pblock_t *b = w->pblock;
	if (b && ZR_PBLOCK_SIZE - b->used >= SSL3_RT_MAX_PLAIN_LENGTH)
		return b;
	if (b) {
		w->pblock = NULL;
		pblock_unref(w, b);
	}
	b = w->free_pblocks;
	if (b)
		w->free_pblocks = b->next_free;
	else if (!(b = malloc(sizeof(*b))))
		return NULL;
	b->refs = 1; /* the cursor's */
	b->used = 0;
	w->pblock = b;
	return b;
}

static zr_slice_t *slice_get(zr_worker_t *w)
{
	zr_slice_t *sl = w->free_slices;
	if (sl)
		w->free_slices = sl->next;
	else if (!(sl = malloc(sizeof(*sl))))
		return NULL;
	sl->next = NULL;
	return sl;
}

static void slice_put(zr_worker_t *w, zr_slice_t *sl)
{
	pblock_unref(w, sl->blk);
	sl->next = w->free_slices;
	w->free_slices = sl;
}

void zr_hbone_conn_free_queues(zr_conn_t *c)
{
	while (c->txq_head) {
		zr_slice_t *sl = c->txq_head;
		c->txq_head = sl->next;
		slice_put(c->w, sl);
	}
	c->txq_tail = NULL;
	c->txq_bytes = 0;
	while (c->tcp && c->h2q_head != ZR_BUF_NONE) {
		unsigned bid = c->h2q_head;
		c->h2q_head = c->w->bufmeta[bid].next;
		zr_worker_buf_release(c->w, bid);
	}
	c->h2q_bytes = 0;
	free(c->peer_id);
	c->peer_id = NULL;
}

/* --- streams <-> h2conn --- */

void zr_hbone_stream_link(zr_h2conn_t *hc, zr_conn_t *c)
{
	c->h2 = hc;
	c->h2_prev = NULL;
	c->h2_next = hc->streams;
	if (hc->streams)
		hc->streams->h2_prev = c;
	hc->streams = c;
	hc->n_streams++;
	zr_counter_add(&hc->w->stats.hbone_streams_active, 1);
}

void zr_hbone_stream_unlink(zr_conn_t *c)
{
	zr_h2conn_t *hc = c->h2;
	if (!hc)
		return;
	if (c->h2_prev)
		c->h2_prev->h2_next = c->h2_next;
	else
		hc->streams = c->h2_next;
	if (c->h2_next)
		c->h2_next->h2_prev = c->h2_prev;
	c->h2_prev = c->h2_next = NULL;
	if (c->stream_id > 0 && hc->h2)
		nghttp2_session_set_stream_user_data(hc->h2, c->stream_id, NULL);
	c->h2 = NULL;
	hc->n_streams--;
	zr_counter_sub(&hc->w->stats.hbone_streams_active, 1);
	if (hc->n_streams == 0)
		hc->idle_since_ns = zr_now_ns();
}

void zr_hbone_conn_closing(zr_conn_t *c)
{
	zr_h2conn_t *hc = c->h2;
	if (!hc)
		return;
	if (c->stream_id > 0 && hc->h2 && !hc->closing) {
		nghttp2_submit_rst_stream(hc->h2, NGHTTP2_FLAG_NONE, c->stream_id,
					  c->reset ? NGHTTP2_CONNECT_ERROR : NGHTTP2_CANCEL);
		zr_hbone_stream_unlink(c);
		zr_hbone_flush(hc);
	} else {
		zr_hbone_stream_unlink(c);
	}
}

/* --- the TCP side of a stream --- */

static void tcp_recv_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_relay_side_t *s = container_of(op, zr_relay_side_t, recv_op);
	zr_conn_t *c = s->conn;
	zr_worker_t *w = c->w;
	bool final = !(flags & ZR_IO_F_MORE);

	if (final) {
		s->recv_armed = false;
		c->inflight--;
	}
	if (res > 0) {
		unsigned bid = zr_io_buf_id(flags);
		w->bufs_in_use++;
		if (c->state == ZR_CONN_CLOSING || !c->h2) {
			/* The stream is gone: these bytes can go nowhere. */
			zr_worker_buf_release(w, bid);
			if (c->state != ZR_CONN_CLOSING && !c->txq_head)
				zr_conn_close(c, true);
		} else {
			s->bytes_in += (uint64_t)res;
			if (c->metrics)
				zr_counter_add(c->inbound_hbone ? &c->metrics->sent_bytes : &c->metrics->received_bytes,
					       (uint64_t)res);
			zr_counter_add(c->inbound_hbone ? &w->stats.relay_bytes_down : &w->stats.relay_bytes_up,
				       (uint64_t)res);
			zr_relay_queue_append(w, &c->h2q_head, &c->h2q_tail, bid, (uint32_t)res);
			c->h2q_bytes += (uint32_t)res;
			zr_relay_after_data(s, c->h2q_bytes, final);
			if (!c->h2 || c->state == ZR_CONN_CLOSING) {
				/* after_data failed and closed c */
			} else {
				if (c->h2_deferred) {
					c->h2_deferred = false;
					nghttp2_session_resume_data(c->h2->h2, c->stream_id);
				}
				zr_hbone_flush(c->h2);
			}
		}
	} else if (res == 0) {
		s->recv_eof = true;
		if (c->h2 && c->h2_deferred) {
			c->h2_deferred = false;
			nghttp2_session_resume_data(c->h2->h2, c->stream_id);
			zr_hbone_flush(c->h2);
		}
	} else {
		zr_relay_recv_failed(s, res);
	}
	zr_worker_conn_maybe_free(c);
}

static void tcp_send_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_relay_side_t *s = container_of(op, zr_relay_side_t, send_op);
	zr_conn_t *c = s->conn;
	zr_worker_t *w = c->w;
	s->send_busy = false;
	c->inflight--;
	if (c->state == ZR_CONN_CLOSING) {
		zr_worker_conn_maybe_free(c);
		return;
	}
	if (res <= 0) {
		zr_conn_close(c, true);
		zr_worker_conn_maybe_free(c);
		return;
	}
	uint32_t left = (uint32_t)res;
	/* the stream's bytes, counted on the side that has no socket */
	(s == &c->down ? &c->up : &c->down)->bytes_in += (uint64_t)res;
	c->txq_bytes -= left;
	while (left && c->txq_head) {
		zr_slice_t *sl = c->txq_head;
		uint32_t avail = sl->len - sl->off;
		if (left < avail) {
			sl->off += left;
			break;
		}
		left -= avail;
		c->txq_head = sl->next;
		if (!c->txq_head)
			c->txq_tail = NULL;
		slice_put(w, sl);
	}
	if (c->metrics)
		zr_counter_add(c->inbound_hbone ? &c->metrics->received_bytes : &c->metrics->sent_bytes, (uint64_t)res);
	zr_counter_add(c->inbound_hbone ? &w->stats.relay_bytes_up : &w->stats.relay_bytes_down, (uint64_t)res);
	if (c->h2 && c->stream_id > 0) {
		/* The socket took the bytes: reopen the stream's window. */
		nghttp2_session_consume_stream(c->h2->h2, c->stream_id, (size_t)res);
		zr_hbone_flush(c->h2);
	}
	if (c->txq_head) {
		tcp_send_next(c);
	} else if (c->h2_eof_in) {
		zr_relay_shut_wr(s);
		if (!c->h2)
			zr_conn_close(c, false);
	}
	zr_worker_conn_maybe_free(c);
}

static void tcp_send_next(zr_conn_t *c)
{
	zr_relay_side_t *s = c->tcp;
	if (s->send_busy || !c->txq_head || s->fd < 0 || c->state == ZR_CONN_CLOSING)
		return;
	if (c->inbound_hbone && c->state == ZR_CONN_CONNECTING)
		return; /* upstream not connected yet: keep queueing */
	zr_slice_t *sl = c->txq_head;
	if (zr_io_send(c->w->io, &s->send_op, s->fd, sl->p + sl->off, sl->len - sl->off) < 0) {
		zr_conn_close(c, true);
		return;
	}
	s->send_busy = true;
	c->inflight++;
}

/* Makes c's TCP side talk to its stream rather than to another socket. */
void zr_hbone_bridge(zr_conn_t *c, zr_relay_side_t *tcp)
{
	c->tcp = tcp;
	tcp->recv_op.cb = tcp_recv_cb;
	tcp->send_op.cb = tcp_send_cb;
	c->h2q_head = c->h2q_tail = ZR_BUF_NONE;
}

/* --- nghttp2 callbacks --- */

static ssize_t send_cb(nghttp2_session *session, const uint8_t *data, size_t len, int flags, void *user_data)
{
	zr_h2conn_t *hc = user_data;
	if (zr_tls_out_pending(hc->tls) >= TLS_OUT_HIGH)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (zr_tls_write(hc->tls, data, len) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)len;
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
			    uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	zr_conn_t *c = source->ptr;
	/* c may have closed (and its object been reused) while nghttp2 still
	 * held this provider: only the stream it was made for may read. */
	if (!c || c->state == ZR_CONN_CLOSING || c->h2 != user_data || c->stream_id != stream_id)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	size_t avail = (size_t)c->hs_len + c->h2q_bytes;
	bool eof = c->tcp->recv_eof;
	if (avail == 0) {
		if (eof && c->state == ZR_CONN_RELAY) {
			*data_flags |= NGHTTP2_DATA_FLAG_EOF;
			return 0;
		}
		c->h2_deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	size_t n = avail < length ? avail : length;
	*data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (n == avail && eof)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* Writes a DATA frame: its 9-byte header, then the payload straight from
 * the receive buffers into TLS (no intermediate copy). */
static int send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
			nghttp2_data_source *source, void *user_data)
{
	zr_h2conn_t *hc = user_data;
	zr_conn_t *c = source->ptr;
	zr_worker_t *w = hc->w;
	/* A frame kept back by WOULDBLOCK is retried without data_read_cb: the
	 * connection may have closed (and been recycled) since. */
	if (!c || c->state == ZR_CONN_CLOSING || c->state == ZR_CONN_FREE || c->h2 != hc ||
	    c->stream_id != frame->hd.stream_id || (size_t)c->hs_len + c->h2q_bytes < length)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (zr_tls_out_pending(hc->tls) >= TLS_OUT_HIGH)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (zr_tls_write(hc->tls, framehd, 9) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	size_t left = length;
	if (c->hs_len && left) {
		size_t n = c->hs_len < left ? c->hs_len : left;
		if (zr_tls_write(hc->tls, c->hs, n) < 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		memmove(c->hs, c->hs + n, c->hs_len - n);
		c->hs_len = (uint16_t)(c->hs_len - n);
		left -= n;
	}
	c->h2q_bytes -= (uint32_t)left;
	while (left) {
		unsigned bid = c->h2q_head;
		uint32_t avail = w->bufmeta[bid].len - c->h2q_off;
		uint32_t take = left < avail ? (uint32_t)left : avail;
		const uint8_t *p = (const uint8_t *)zr_io_buf_addr(w->io, bid) + c->h2q_off;
		if (zr_tls_write(hc->tls, p, take) < 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		left -= take;
		if (take == avail) {
			c->h2q_head = w->bufmeta[bid].next;
			c->h2q_off = 0;
			zr_worker_buf_release(w, bid);
		} else {
			c->h2q_off += take;
		}
	}
	if (c->h2q_head == ZR_BUF_NONE)
		c->h2q_tail = ZR_BUF_NONE;
	if (c->tcp->recv_paused && c->h2q_bytes <= ZR_RELAY_LOW_WATER)
		zr_relay_resume(c->tcp);
	return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	zr_h2conn_t *hc = user_data;
	if (!hc->server || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	zr_worker_t *w = hc->w;
	if (w->draining) {
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	zr_conn_t *c = zr_worker_conn_alloc(w);
	if (!c) {
		zr_counter_add(&w->stats.refused[ZR_REFUSE_OVERLOAD], 1);
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	zr_counter_add(&w->stats.accepted, 1);
	c->kind = ZR_LISTENER_HBONE;
	c->inbound_hbone = true;
	c->state = ZR_CONN_HANDSHAKE;
	c->connect_op.cb = NULL; /* set by zr_flow_connect_upstream */
	zr_relay_init_side(c, &c->down, -1);
	zr_relay_init_side(c, &c->up, -1);
	zr_hbone_bridge(c, &c->up);
	c->peer = hc->peer;
	c->stream_id = frame->hd.stream_id;
	c->peer_id = hc->peer_id ? strdup(hc->peer_id) : NULL;
	zr_sockaddr_to_ip(&hc->peer, &c->authz_src_ip, NULL);
	zr_hbone_stream_link(hc, c);
	nghttp2_session_set_stream_user_data(session, c->stream_id, c);
	return 0;
}

/* `forwarded: for="1.2.3.4:5678"` or for=1.2.3.4 or for="[::1]:5". */
static bool parse_forwarded(const uint8_t *v, size_t n, zr_ip_t *ip)
{
	char buf[128];
	if (n >= sizeof(buf))
		return false;
	memcpy(buf, v, n);
	buf[n] = '\0';
	char *p = strcasestr(buf, "for=");
	if (!p)
		return false;
	p += 4;
	if (*p == '"')
		p++;
	char *end = p + strcspn(p, "\";,");
	*end = '\0';
	if (*p == '[') {
		char *close = strchr(p, ']');
		if (!close)
			return false;
		*close = '\0';
		p++;
	} else if (strchr(p, ':') == strrchr(p, ':') && strchr(p, ':')) {
		*strchr(p, ':') = '\0';
	}
	return zr_ip_parse(p, ip) == 0;
}

/* `forwarded: for=` is the peer's claim about where a stream comes from,
 * not a fact. Only the destination's waypoint, which relays other workloads'
 * connections, may make it (ztunnel's rule); any other peer could name an
 * address that a `sourceIps` rule allows, or that a DENY does not name, and
 * pose as another workload in the metrics. zring implements no waypoints yet,
 * so no peer qualifies: streams are authorized and labelled by the TLS
 * connection's own peer address, which zring clients bind to the source
 * workload's IP (zr_flow_bind_source). The place to add the waypoint check. */
static bool forwarded_trusted(const zr_h2conn_t *hc, const zr_workload_t *dst)
{
	(void)hc;
	(void)dst;
	return false;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
		     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
	zr_h2conn_t *hc = user_data;
	zr_conn_t *c = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (!c || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (hc->server) {
		if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
			c->req_connect = valuelen == 7 && memcmp(value, "CONNECT", 7) == 0;
		} else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
			if (valuelen >= sizeof(c->authority)) {
				c->req_bad = true;
			} else {
				memcpy(c->authority, value, valuelen);
				c->authority[valuelen] = '\0';
			}
		} else if (namelen == 9 && memcmp(name, "forwarded", 9) == 0) {
			/* Kept aside: see forwarded_trusted. */
			c->has_forwarded = parse_forwarded(value, valuelen, &c->fwd_ip);
		}
	} else if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		unsigned st = 0;
		for (size_t i = 0; i < valuelen && i < 3; i++)
			st = st * 10 + (unsigned)(value[i] - '0');
		c->status = (uint16_t)st;
	}
	return 0;
}

static void respond_ok(zr_h2conn_t *hc, zr_conn_t *c)
{
	nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE}};
	nghttp2_data_provider prd = {.source.ptr = c, .read_callback = data_read_cb};
	c->status = 200;
	nghttp2_submit_response(hc->h2, c->stream_id, nv, 1, &prd);
	zr_hbone_flush(hc);
}

/* An error status: HEADERS with END_STREAM; on_frame_send then resets the
 * request side (a RST queued now would overtake the HEADERS). Touches no
 * connection object: the caller has already let go of it. */
static void respond_error(zr_h2conn_t *hc, int32_t stream_id, unsigned status)
{
	char code[4];
	snprintf(code, sizeof(code), "%u", status);
	nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE}};
	nghttp2_submit_response(hc->h2, stream_id, nv, 1, NULL);
	zr_hbone_flush(hc);
}

static void refuse_inbound(zr_h2conn_t *hc, zr_conn_t *c, unsigned status, zr_refuse_reason_t reason, const char *flags)
{
	zr_counter_add(&hc->w->stats.refused[reason], 1);
	c->refused = (uint8_t)(reason + 1);
	if (!c->metrics)
		c->metrics = zr_tcp_metrics_for(hc->w, c, "destination", "-", true);
	zr_tcp_metrics_fail(c, flags);
	int32_t id = c->stream_id;
	c->status = (uint16_t)status;
	zr_hbone_stream_unlink(c);
	zr_conn_close(c, false);
	zr_worker_conn_maybe_free(c);
	respond_error(hc, id, status);
}

static void handle_connect(zr_h2conn_t *hc, zr_conn_t *c)
{
	char a[ZR_ADDR_STRLEN];
	zr_ip_t ip, local_ip;
	uint16_t port;
	/* The stream took the worker's snapshot when its first header frame
	 * came; a header block can span a reload (HEADERS, then CONTINUATION
	 * later). Decide on the state and policies in force now. Nothing of
	 * the stream points into the old snapshot yet. */
	if (c->snap != hc->w->snap) {
		zr_snapshot_ref(hc->w->snap);
		zr_snapshot_unref(c->snap);
		c->snap = hc->w->snap;
	}
	const zr_state_t *st = &c->snap->cfg->state;
	if (!c->req_connect || c->req_bad || zr_addr_parse(c->authority, &c->upstream) < 0) {
		zr_info("hbone", "stream %d from %s: malformed request (authority '%s')", c->stream_id,
			zr_sockaddr_str(&hc->peer, a), c->authority);
		refuse_inbound(hc, c, 400, ZR_REFUSE_BAD_REQUEST, "-");
		return;
	}
	zr_sockaddr_to_ip(&c->upstream, &ip, &port);
	c->dst_wl = zr_state_workload_by_ip(st, &ip);
	if (c->has_forwarded && !zr_ip_equal(&c->fwd_ip, &c->authz_src_ip)) {
		if (forwarded_trusted(hc, c->dst_wl)) {
			c->authz_src_ip = c->fwd_ip;
		} else if (ZR_LOG_ENABLED(ZR_LOG_DEBUG)) {
			char b[ZR_ADDR_STRLEN];
			zr_debug("hbone", "stream %d from %s: forwarded for=%s ignored (peer is no waypoint)",
				 c->stream_id, zr_sockaddr_str(&hc->peer, a), zr_ip_str(&c->fwd_ip, b));
		}
	}
	c->src_wl = zr_state_workload_by_ip(st, &c->authz_src_ip);
	/* ztunnel's validate_destination: the authority must name the address
	 * the connection came to, whose identity the server presented (and
	 * which network policy let through); only a waypoint may name another
	 * one, and zring implements none. A connection to an address that is
	 * no workload's (the node's, on a wildcard listener) names no workload
	 * that way either. */
	zr_sockaddr_to_ip(&hc->local, &local_ip, NULL);
	if (!zr_ip_equal(&ip, &local_ip)) {
		char b[ZR_ADDR_STRLEN];
		zr_info("hbone", "stream %d from %s: authority %s is not the address the connection came to (%s)",
			c->stream_id, zr_sockaddr_str(&hc->peer, a), c->authority, zr_ip_str(&local_ip, b));
		refuse_inbound(hc, c, 400, ZR_REFUSE_BAD_REQUEST, "-");
		return;
	}
	if (!c->dst_wl || !c->dst_wl->local) {
		zr_info("hbone", "stream %d: %s is no local workload", c->stream_id, c->authority);
		refuse_inbound(hc, c, 400, ZR_REFUSE_NOT_LOCAL, "-");
		return;
	}
	/* The identity this connection presented must be the destination's
	 * (it may no longer be after a reload changed the workload's). */
	if (!hc->identity || !c->dst_wl->identity || strcmp(hc->identity, c->dst_wl->identity) != 0) {
		zr_info("hbone", "stream %d: %s is %s, this connection presented %s", c->stream_id, c->authority,
			c->dst_wl->identity ? c->dst_wl->identity : "-", hc->identity ? hc->identity : "-");
		refuse_inbound(hc, c, 400, ZR_REFUSE_BAD_REQUEST, "-");
		return;
	}
	/* ztunnel's SelfCall: 503, response flag CONNECT */
	int r = zr_flow_forbidden_dest(c, &c->upstream);
	if (r) {
		refuse_inbound(hc, c, 503, (zr_refuse_reason_t)(r - 1), "CONNECT");
		return;
	}
	c->svc = zr_flow_inbound_service(st, c->dst_wl, port);
	if (!zr_flow_authorize(c, st, c->dst_wl, "hbone")) {
		refuse_inbound(hc, c, 401, ZR_REFUSE_DENIED, "DENY");
		return;
	}
	c->metrics = zr_tcp_metrics_for(hc->w, c, "destination", "-", true);
	c->state = ZR_CONN_CONNECTING;
	zr_flow_connect_upstream(c);
}

void zr_hbone_upstream_connected(zr_conn_t *c, int res)
{
	zr_h2conn_t *hc = c->h2;
	if (!hc) {
		zr_conn_close(c, true);
		return;
	}
	if (res < 0) {
		char a[ZR_ADDR_STRLEN];
		bool timeout = res == -ECANCELED || res == -ETIMEDOUT;
		zr_info("hbone", "stream %d: connect to %s failed: %s", c->stream_id, zr_sockaddr_str(&c->upstream, a),
			timeout ? "connect timeout" : strerror(-res));
		refuse_inbound(hc, c, 503, timeout ? ZR_REFUSE_CONNECT_TIMEOUT : ZR_REFUSE_CONNECT_FAILED, "CONNECT");
		return;
	}
	if (c->metrics)
		zr_counter_add(&c->metrics->opened, 1);
	c->state = ZR_CONN_RELAY;
	c->up.recv_op.cb = tcp_recv_cb;
	c->up.send_op.cb = tcp_send_cb;
	respond_ok(hc, c);
	zr_relay_arm_recv(&c->up);
	tcp_send_next(c);
	if (c->h2_eof_in && !c->txq_head && c->state == ZR_CONN_RELAY)
		zr_relay_shut_wr(c->tcp); /* END_STREAM came while connecting */
}

static void handle_response(zr_h2conn_t *hc, zr_conn_t *c)
{
	if (c->state != ZR_CONN_CONNECTING)
		return;
	if (c->status == 200) {
		c->state = ZR_CONN_RELAY;
		if (c->metrics)
			zr_counter_add(&c->metrics->opened, 1);
		if (c->kind == ZR_LISTENER_SOCKS5)
			zr_flow_socks5_reply(c, ZR_SOCKS5_OK, NULL);
		zr_relay_arm_recv(c->tcp);
		if (c->hs_len && c->h2_deferred) {
			c->h2_deferred = false;
			nghttp2_session_resume_data(hc->h2, c->stream_id);
		}
		tcp_send_next(c);
		zr_worker_conn_maybe_free(c);
		return;
	}
	zr_info("hbone", "conn %llu: CONNECT %s answered %u by %s", (unsigned long long)c->id, c->authority, c->status,
		hc->peer_id ? hc->peer_id : "?");
	/* ztunnel's source reporter says CONNECT for any status, 401 included */
	zr_tcp_metrics_fail(c, "CONNECT");
	zr_flow_refuse(c, c->status == 401 ? ZR_REFUSE_DENIED : ZR_REFUSE_CONNECT_FAILED,
		       c->status == 401 ? ZR_SOCKS5_NOT_ALLOWED :
		       c->status == 503 ? ZR_SOCKS5_HOST_UNREACHABLE :
					  ZR_SOCKS5_GENERAL_FAILURE);
	zr_worker_conn_maybe_free(c);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	zr_h2conn_t *hc = user_data;
	zr_conn_t *c = frame->hd.stream_id ? nghttp2_session_get_stream_user_data(session, frame->hd.stream_id) : NULL;
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (!c)
			break;
		if (hc->server && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
		    (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS) && c->state == ZR_CONN_HANDSHAKE)
			handle_connect(hc, c);
		else if (!hc->server && frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
			handle_response(hc, c);
		if (c && c->h2 && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
			c->h2_eof_in = true;
			if (!c->txq_head && c->state == ZR_CONN_RELAY)
				zr_relay_shut_wr(c->tcp);
		}
		break;
	case NGHTTP2_DATA:
		if (c && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
			c->h2_eof_in = true;
			if (!c->txq_head && c->state == ZR_CONN_RELAY)
				zr_relay_shut_wr(c->tcp);
		}
		break;
	case NGHTTP2_GOAWAY:
		hc->goaway = true;
		break;
	case NGHTTP2_PING:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			hc->ping_sent_ns = 0;
		break;
	default:
		break;
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
			 void *user_data)
{
	zr_h2conn_t *hc = user_data;
	/* The connection window reopens at once; only the stream's waits for
	 * its socket, so one slow reader cannot stall the others. */
	nghttp2_session_consume_connection(session, len);
	zr_conn_t *c = nghttp2_session_get_stream_user_data(session, stream_id);
	if (!c || c->state == ZR_CONN_CLOSING)
		return 0;
	zr_worker_t *w = hc->w;
	zr_pblock_t *b = w->pblock;
	/* nghttp2 hands DATA payloads out of the buffer given to mem_recv,
	 * which is the decryption block: keep a slice of it, growing the
	 * last slice when the bytes follow on. */
	if (!b || data < b->data || data + len > b->data + ZR_PBLOCK_SIZE) {
		zr_conn_close(c, true);
		zr_worker_conn_maybe_free(c);
		return 0;
	}
	zr_slice_t *last = c->txq_tail;
	if (last && last->blk == b && last->p + last->len == data) {
		last->len += (uint32_t)len;
	} else {
		zr_slice_t *sl = slice_get(w);
		if (!sl) {
			zr_conn_close(c, true);
			zr_worker_conn_maybe_free(c);
			return 0;
		}
		sl->blk = b;
		b->refs++;
		sl->p = data;
		sl->len = (uint32_t)len;
		sl->off = 0;
		if (last)
			last->next = sl;
		else
			c->txq_head = sl;
		c->txq_tail = sl;
	}
	c->txq_bytes += (uint32_t)len;
	tcp_send_next(c);
	zr_worker_conn_maybe_free(c);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
	zr_conn_t *c = nghttp2_session_get_stream_user_data(session, stream_id);
	if (!c)
		return 0;
	zr_hbone_stream_unlink(c);
	if (error_code != NGHTTP2_NO_ERROR || c->state != ZR_CONN_RELAY) {
		if (c->state == ZR_CONN_CONNECTING && c->kind == ZR_LISTENER_SOCKS5)
			zr_flow_socks5_reply(c, ZR_SOCKS5_GENERAL_FAILURE, NULL);
		if (c->state == ZR_CONN_CONNECTING)
			zr_tcp_metrics_fail(c, c->inbound_hbone ? "CONNECT" : "H2_HANDSHAKE_FAILURE");
		zr_conn_close(c, true);
	} else if (!c->txq_head) {
		zr_conn_close(c, false);
	} else {
		/* Ended cleanly with bytes still on their way to the socket:
		 * tcp_send_cb half-closes and closes once they are out. */
		c->h2_eof_in = true;
	}
	zr_worker_conn_maybe_free(c);
	return 0;
}

/* DATA frames as large as the peer allows (up to MAX_FRAME): fewer frames,
 * fewer 9-byte header records, less per-frame work on both sides. A peer
 * that keeps the default 16 KiB gets 16 KiB frames. */
static ssize_t read_length_cb(nghttp2_session *session, uint8_t frame_type, int32_t stream_id, int32_t session_window,
			      int32_t stream_window, uint32_t remote_max_frame_size, void *user_data)
{
	ssize_t n = remote_max_frame_size < MAX_FRAME ? (ssize_t)remote_max_frame_size : MAX_FRAME;
	if (n > session_window)
		n = session_window;
	if (n > stream_window)
		n = stream_window;
	return n > 0 ? n : 1;
}

/* A refusal (response HEADERS ending the stream) has gone out: end the
 * request side too, whatever the client still sends. */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	zr_h2conn_t *hc = user_data;
	if (hc->server && frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0)
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
	return 0;
}

static nghttp2_session_callbacks *shared_callbacks;

static void init_callbacks(void)
{
	nghttp2_session_callbacks *cbs;
	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return;
	nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
	nghttp2_session_callbacks_set_send_data_callback(cbs, send_data_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, read_length_cb);
	shared_callbacks = cbs;
}

int zr_hbone_start_session(zr_h2conn_t *hc)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, init_callbacks);
	if (!shared_callbacks)
		return -ENOMEM;
	nghttp2_option *opt;
	if (nghttp2_option_new(&opt) != 0)
		return -ENOMEM;
	/* Windows reopen as sockets take the bytes (on_data_chunk,
	 * tcp_send_cb), not when nghttp2 has parsed them. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	/* nghttp2 tears a connection down past 1000 incoming RST_STREAMs plus
	 * 33/s (the rapid-reset defence). An HBONE peer is an authenticated node
	 * relaying many pods, whose clients legitimately reset thousands of
	 * connections a second; keep the defence, at a rate such a node can
	 * reach. */
	nghttp2_option_set_stream_reset_rate_limit(opt, 20000, 20000);
	int rv = hc->server ? nghttp2_session_server_new2(&hc->h2, shared_callbacks, hc, opt) :
			      nghttp2_session_client_new2(&hc->h2, shared_callbacks, hc, opt);
	nghttp2_option_del(opt);
	if (rv != 0)
		return -ENOMEM;
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, hc_cfg(hc)->pool_max_streams_per_connection},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
		{NGHTTP2_SETTINGS_MAX_FRAME_SIZE, MAX_FRAME},
		{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
	};
	nghttp2_submit_settings(hc->h2, NGHTTP2_FLAG_NONE, iv, hc->server ? 3 : 4);
	nghttp2_session_set_local_window_size(hc->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
	return 0;
}

static void b64url_hex(uint64_t *state, char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		*state ^= *state << 13;
		*state ^= *state >> 7;
		*state ^= *state << 17;
		out[i] = hex[*state & 15];
	}
	out[n] = '\0';
}

void zr_hbone_submit_request(zr_h2conn_t *hc, zr_conn_t *c)
{
	char fwd[96], baggage[512], trace[64], a[ZR_ADDR_STRLEN];
	zr_sockaddr_str(&c->upstream, c->authority);
	snprintf(fwd, sizeof(fwd), "for=\"%s\"", zr_sockaddr_str(&c->peer, a));
	const zr_workload_t *s = c->src_wl;
	snprintf(baggage, sizeof(baggage),
		 "k8s.cluster.name=%s,k8s.namespace.name=%s,k8s.pod.name=%s,service.name=%s,service.version=%s",
		 s->cluster_id, s->namespace_, s->name, *s->canonical_name ? s->canonical_name : s->name,
		 *s->canonical_revision ? s->canonical_revision : "latest");
	char tid[33], sid[17];
	b64url_hex(&hc->w->prng, tid, 32);
	b64url_hex(&hc->w->prng, sid, 16);
	snprintf(trace, sizeof(trace), "00-%s-%s-01", tid, sid);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
	nghttp2_nv nv[] = {
		NV(":method", "CONNECT"), NV(":authority", c->authority), NV("forwarded", fwd),
		NV("baggage", baggage),	  NV("traceparent", trace),
	};
#undef NV
	nghttp2_data_provider prd = {.source.ptr = c, .read_callback = data_read_cb};
	int32_t id = nghttp2_submit_request(hc->h2, NULL, nv, sizeof(nv) / sizeof(nv[0]), &prd, c);
	if (id < 0) {
		zr_hbone_stream_unlink(c);
		zr_tcp_metrics_fail(c, "H2_HANDSHAKE_FAILURE");
		zr_flow_refuse(c, ZR_REFUSE_CONNECT_FAILED, ZR_SOCKS5_GENERAL_FAILURE);
		zr_worker_conn_maybe_free(c);
		return;
	}
	c->stream_id = id;
	zr_flow_wait_response(c);
}

void zr_hbone_expire_requests(zr_h2conn_t *hc, uint64_t now)
{
	hc->depth++; /* one flush for all the RST_STREAMs, after the walk */
	uint64_t headers_ms = hc->w->snap->cfg->connect_timeout_ms;
	uint64_t headers_ns = (headers_ms ? headers_ms : 10000) * 1000000ull;
	for (zr_conn_t *c = hc->streams, *next; c && !hc->closing; c = next) {
		next = c->h2_next;
		if (hc->server) {
			/* A server stream is in HANDSHAKE from its first header
			 * frame until END_HEADERS; nghttp2 would wait forever for
			 * the CONTINUATION. connectTimeout (10 s when 0) bounds it. */
			if (c->state != ZR_CONN_HANDSHAKE || now - c->start_ns < headers_ns)
				continue;
			char a[ZR_ADDR_STRLEN];
			zr_info("hbone", "stream %d from %s: request headers not complete within connectTimeout",
				c->stream_id, zr_sockaddr_str(&hc->peer, a));
			zr_counter_add(&hc->w->stats.refused[ZR_REFUSE_HEADERS_TIMEOUT], 1);
			zr_conn_close(c, false); /* RST_STREAM CANCEL */
			zr_worker_conn_maybe_free(c);
			continue;
		}
		if (c->state != ZR_CONN_CONNECTING || !c->wait_until_ns || now < c->wait_until_ns)
			continue;
		zr_flow_wait_expired(c);
		zr_worker_conn_maybe_free(c);
	}
	hc->depth--;
	if (hc->want_flush)
		zr_hbone_flush(hc);
}

void zr_hbone_free_blocks(zr_worker_t *w)
{
	if (w->pblock) {
		pblock_unref(w, w->pblock);
		w->pblock = NULL;
	}
	while (w->free_pblocks) {
		zr_pblock_t *b = w->free_pblocks;
		w->free_pblocks = b->next_free;
		free(b);
	}
	while (w->free_slices) {
		zr_slice_t *sl = w->free_slices;
		w->free_slices = sl->next;
		free(sl);
	}
}
