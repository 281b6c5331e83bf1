/* Internal to hbone.c and hbone_stream.c: the HBONE connection object and
 * the functions the two files share. Worker thread only. */
#ifndef ZR_CORE_HBONE_INT_H
#define ZR_CORE_HBONE_INT_H

#include <nghttp2/nghttp2.h>

#include "core/hbone.h"
#include "crypto/tls.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define HBONE_PORT			15008
#define TLS_OUT_HIGH			(1u << 20)
#define STREAM_WINDOW			(4u << 20)
#define CONN_WINDOW			(16u << 20)
#define HANDSHAKE_TIMEOUT_NS		(10ull * 1000000000ull)
#define PING_IDLE_NS			(10ull * 1000000000ull)
#define PING_DEAD_NS			(20ull * 1000000000ull)
#define MAX_FRAME			(256 * 1024)
#define HBONE_ASYNC_FDS			4		       /* fds of one paused async crypto job we wait on */
#define HBONE_LINGER_NS			(2ull * 1000000000ull) /* close_after_send at most */
#define ZR_KTLS_BUF			(5 + 16384 + 256)      /* one TLS record at most */
#define ZR_HBONE_MAX_ALLOWED		8 /* server identities a client accepts: workload + 7 SANs */

/* A one-shot poll on an fd that a paused async handshake job (an OpenSSL
 * provider on a crypto device) waits on. */
typedef struct zr_hbone_async_wait {
	zr_io_op_t op;
	zr_h2conn_t *hc;
	bool armed;
} zr_hbone_async_wait_t;

struct zr_h2conn {
	zr_io_op_t recv_op, send_op, connect_op;
	zr_worker_t *w;
	zr_h2conn_t *prev, *next; /* worker's list */
	zr_h2conn_t *pool_next;	  /* pool bucket (client) */
	zr_h2conn_t *starved_next;
	char *pool_key;
	uint32_t pool_hash;
	int fd;
	bool server, connecting, handshaking, closing, goaway, in_pool;
	bool recv_armed, send_busy, starved, want_flush;
	/* Kernel TLS: receiving moves to the kernel once our multishot
	 * receive has stopped and the input ends on a record boundary; until
	 * then ktls_op reads the missing bytes of a record into ktls_buf. */
	bool ktls_rx_pending, ktls_reading;
	zr_io_op_t ktls_op;
	uint8_t *ktls_buf;
	/* Closing once the output has gone (hc_close_after_output): an alert or
	 * GOAWAY queued behind a send in flight. close_why NULL: orderly. */
	bool close_after_send;
	char *close_why;
	uint64_t close_after_ns;
	unsigned depth;	   /* nghttp2 calls on the stack */
	unsigned inflight; /* io operations */
	zr_tls_t *tls;
	nghttp2_session *h2;
	zr_conn_t *streams; /* requested or established streams, and pending ones */
	unsigned n_streams;
	uint64_t created_ns, last_rx_ns, idle_since_ns, ping_sent_ns;
	zr_sockaddr_t peer, local;
	zr_snapshot_t *snap;
	char *identity; /* ours */
	char *peer_id;
	char *allowed[ZR_HBONE_MAX_ALLOWED]; /* client: acceptable server identities */
	size_t n_allowed;
	/* Handshake offload: zr_tls_handshake returned 2 and these polls wait
	 * for the device; async_resume: one fired, resume once none is armed. */
	zr_hbone_async_wait_t async[HBONE_ASYNC_FDS];
	unsigned async_armed;
	bool async_waiting, async_resume;
};

static inline const zr_config_t *hc_cfg(const zr_h2conn_t *hc)
{
	return hc->snap->cfg;
}

/* hbone.c */
/* Runs nghttp2_session_send (or defers it while inside nghttp2) and sends
 * what TLS has produced. */
void zr_hbone_flush(zr_h2conn_t *hc);
/* Closes the connection: every stream on it fails; freed when idle. */
void zr_hbone_close_conn(zr_h2conn_t *hc, const char *why);

/* hbone_stream.c */
int zr_hbone_start_session(zr_h2conn_t *hc) __attribute__((warn_unused_result));
void zr_hbone_stream_link(zr_h2conn_t *hc, zr_conn_t *c);
void zr_hbone_stream_unlink(zr_conn_t *c);
/* Makes c's TCP side `tcp` talk to its stream rather than to a socket. */
void zr_hbone_bridge(zr_conn_t *c, zr_relay_side_t *tcp);
/* Sends c's CONNECT request on hc (refuses c when it can't). */
void zr_hbone_submit_request(zr_h2conn_t *hc, zr_conn_t *c);
/* Client: fails the streams whose CONNECT response is overdue; server:
 * resets those whose request headers are not complete in connectTimeout
 * (tick). */
void zr_hbone_expire_requests(zr_h2conn_t *hc, uint64_t now);
/* The block the next TLS record is decrypted into; NULL when out of memory. */
zr_pblock_t *zr_hbone_decrypt_block(zr_worker_t *w);
void zr_hbone_free_blocks(zr_worker_t *w);

#endif
