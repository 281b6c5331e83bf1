/* HBONE: HTTP/2 CONNECT over mutual TLS 1.3 between nodes (SPEC "HBONE").
 *
 * A zr_h2conn_t is one TLS connection with an nghttp2 session on it, owned by
 * one worker: a client connection from the worker's pool (keyed by source
 * identity, destination identity and destination address), or a server
 * connection accepted on port 15008. Each CONNECT stream is bridged to the TCP
 * socket of a zr_conn_t: bytes received on the socket (provided buffers) are
 * written straight into DATA frames (nghttp2 NO_COPY) and encrypted from the
 * receive buffer; bytes of the stream are queued per stream and sent to the
 * socket, the stream's flow-control window reopening only as the socket
 * takes them, so a slow reader stalls its own stream and nothing else. */
#ifndef ZR_CORE_HBONE_H
#define ZR_CORE_HBONE_H

#include "core/conn.h"
#include "core/worker-t.h"

typedef struct zr_h2conn zr_h2conn_t;

/* Outbound: sends c (resolved: c->src_wl, c->dst_wl, c->svc, c->upstream =
 * workload IP:target port) over a pooled HBONE connection. On success the
 * stream is bridged to c->down; on failure c is refused/closed. */
void zr_hbone_connect(zr_conn_t *c);

/* Inbound: a socket accepted on an HBONE listener. Takes the fd. */
void zr_hbone_accepted(zr_listener_t *l, int fd);

/* Inbound: the upstream connect of c finished (res 0 or -errno): answer
 * the CONNECT with 200 and relay, or 503. */
void zr_hbone_upstream_connected(zr_conn_t *c, int res);

/* Frees what a stream-bridged connection still holds (queued chunks and
 * buffers, peer identity). */
void zr_hbone_conn_free_queues(zr_conn_t *c);

/* Re-arms HBONE receives that stopped for lack of buffers. */
void zr_hbone_feed_starved(zr_worker_t *w);

/* Called by zr_conn_close for a connection bridged to a stream: resets the
 * stream (when reset or not finished) and detaches it. */
void zr_hbone_conn_closing(zr_conn_t *c);

/* Once a second: handshake deadlines, PINGs (every 10 s, dead after 20 s),
 * idle pooled connections (poolIdleTimeout). */
void zr_hbone_tick(zr_worker_t *w, uint64_t now_ns);

/* Frees the worker's HBONE caches (decryption blocks, slices, pool table)
 * once no HBONE connection is left. */
void zr_hbone_free_memory(zr_worker_t *w);

/* Closes every HBONE connection now (stop / drain end). */
void zr_hbone_close_all(zr_worker_t *w);

/* Drain: tells peers (GOAWAY) that no new stream is accepted and stops
 * pooling new streams on client connections. */
void zr_hbone_drain(zr_worker_t *w);

/* Re-checks inbound streams and plaintext connections against the current
 * policies; closes those now denied. */
void zr_hbone_recheck_policies(zr_worker_t *w);

#endif
