/* A proxied connection: the downstream socket (the client that zring
 * accepted), the upstream socket (the workload zring connected to), the
 * relay between them, and what was resolved for it. Owned by one worker for
 * life; every function here runs on that worker's thread. */
#ifndef ZR_CORE_CONN_H
#define ZR_CORE_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/worker-t.h"
#include "ctl/config-t.h"

typedef enum zr_conn_state {
	ZR_CONN_HANDSHAKE = 0, /* SOCKS5 greeting/request being read */
	ZR_CONN_CONNECTING,    /* upstream connect (or HBONE CONNECT) in flight */
	ZR_CONN_REPLYING,      /* SOCKS5 success reply being sent */
	ZR_CONN_RELAY,
	ZR_CONN_CLOSING,
	ZR_CONN_FREE, /* back on the free list */
} zr_conn_state_t;

/* One direction's endpoint. Bytes received on `fd` are queued on the other
 * side and sent to the other side's fd. */
typedef struct zr_relay_side {
	zr_io_op_t recv_op;
	zr_io_op_t send_op;
	zr_io_op_t err_op; /* while paused: notices a reset nobody reads */
	zr_conn_t *conn;
	struct zr_relay_side *starved_next;
	int fd;
	uint16_t q_head, q_tail; /* buffers queued to be sent to fd */
	uint32_t q_off;		 /* bytes of q_head already sent */
	uint32_t q_bytes;	 /* bytes queued, q_off excluded */
	bool recv_armed;	 /* multishot recv outstanding */
	bool recv_paused;	 /* backpressure: cancel requested, don't re-arm */
	bool recv_eof;		 /* peer half-closed its sending side */
	bool send_busy;
	bool shut_wr; /* we half-closed fd */
	bool starved; /* on the worker's starved list */
	bool err_armed;
	uint64_t bytes_in;
} zr_relay_side_t;

/* Decrypted HBONE bytes: TLS records are decrypted into a block, nghttp2
 * parses them there, and each stream keeps slices of the block (no copy)
 * until its TCP socket has taken them. A block lives while a slice or the
 * worker's decryption cursor refers to it. */
#define ZR_PBLOCK_SIZE (96u * 1024u)
typedef struct zr_pblock {
	struct zr_pblock *next_free;
	uint32_t refs, used;
	uint8_t data[ZR_PBLOCK_SIZE];
} zr_pblock_t;

typedef struct zr_slice {
	struct zr_slice *next;
	zr_pblock_t *blk;
	const uint8_t *p;
	uint32_t len, off;
} zr_slice_t;

struct zr_h2conn;

struct zr_conn {
	zr_conn_t *prev, *next;
	zr_worker_t *w;
	uint64_t id;
	zr_listener_kind_t kind;
	zr_conn_state_t state;
	unsigned inflight; /* ops whose final completion is pending */
	bool reset;	   /* close with RST */
	bool wait_watch;   /* hs_op: the downstream watched while connecting */
	bool early_data;   /* SOCKS5: bytes came right behind the request */
	uint8_t sock_open; /* 1 + index in stats.sockets_open of the accepted socket; 0 none */
	zr_relay_side_t down, up;
	zr_io_op_t hs_op, connect_op, reply_op;
	zr_sockaddr_t peer, orig_dst, upstream;
	zr_snapshot_t *snap;
	const zr_workload_t *src_wl, *dst_wl;
	const zr_service_t *svc;
	zr_tcp_metrics_t *metrics;
	uint64_t start_ns;
	uint64_t wait_until_ns; /* HBONE client: CONNECT response due by then */
	uint16_t hs_len;
	uint8_t reply_len;
	uint8_t hs[520];
	uint8_t reply[32];

	/* HBONE: the TCP side (&down outbound, &up inbound) is bridged to
	 * stream `stream_id` of h2 instead of to another socket. */
	struct zr_h2conn *h2;
	zr_conn_t *h2_prev, *h2_next; /* streams (or pending requests) of h2 */
	zr_relay_side_t *tcp;
	int32_t stream_id;
	uint16_t status;	     /* HTTP status sent or received */
	uint16_t h2q_head, h2q_tail; /* TCP bytes (buffer ids) for DATA frames */
	uint32_t h2q_off, h2q_bytes;
	zr_slice_t *txq_head, *txq_tail; /* stream bytes for the TCP socket */
	uint32_t txq_bytes;
	bool h2_eof_in;	  /* END_STREAM received */
	bool h2_deferred; /* the data provider is waiting for TCP bytes */
	bool inbound_hbone;
	bool req_connect;     /* server: :method was CONNECT */
	bool req_bad;	      /* server: a header was unacceptable */
	char *peer_id;	      /* verified SPIFFE ID of the HBONE peer (owned) */
	zr_ip_t authz_src_ip; /* source address used for authorization: the peer's */
	zr_ip_t fwd_ip;	      /* server: what `forwarded: for=` claimed (not trusted) */
	bool has_forwarded;   /* server: fwd_ip is set */
	char authority[64];   /* server: the CONNECT target as received */
	uint8_t refused;      /* zr_refuse_reason_t + 1 once refused (access log) */
};

/* Connections are allocated by blocks and recycled through a free list. */
#define ZR_CONN_BLOCK 64
typedef struct zr_conn_block {
	struct zr_conn_block *next;
	zr_conn_t conns[ZR_CONN_BLOCK];
} zr_conn_block_t;

/* Handles a freshly accepted socket of listener `l`. Takes the fd. */
void zr_conn_accepted(zr_listener_t *l, int fd);

/* flow.c, shared with hbone.c */
void zr_flow_refuse(zr_conn_t *c, zr_refuse_reason_t reason, uint8_t socks_code);
void zr_flow_socks5_reply(zr_conn_t *c, uint8_t code, const zr_sockaddr_t *bound);
/* Binds the unconnected socket fd, about to connect to `dst`, to the IP of
 * `src`, the source workload's address, port chosen at connect; where that
 * cannot work the socket stays unbound (counted, warned about at most once a
 * minute). Worker thread. */
void zr_flow_bind_source(zr_worker_t *w, int fd, const zr_sockaddr_t *src, const zr_sockaddr_t *dst);
/* The service of local workload wl whose target port is `port`, or NULL. */
const zr_service_t *zr_flow_inbound_service(const zr_state_t *st, const zr_workload_t *wl, uint16_t port);
/* Opens c->up towards c->upstream (SO_MARK, connectTimeout). */
void zr_flow_connect_upstream(zr_conn_t *c);
/* Authorizes an inbound connection (principal NULL for plaintext) against
 * `st`. Returns true when allowed; logs the deciding policy otherwise. */
bool zr_flow_authorize(const zr_conn_t *c, const zr_state_t *st, const zr_workload_t *dst, const char *who);
/* While c waits for its upstream (state CONNECTING), watch the downstream
 * socket: a client that closes (with nothing sent) or resets cancels the
 * attempt at once. The watch stays armed afterwards (ignored, no cancel). */
void zr_flow_wait_watch(zr_conn_t *c);
/* HBONE client: the CONNECT request went out; the response is due within
 * connectTimeout (checked by the worker's tick, zr_flow_wait_expired). */
void zr_flow_wait_response(zr_conn_t *c);
/* The response did not come in time: SOCKS5 0x06, counted as connect_timeout. */
void zr_flow_wait_expired(zr_conn_t *c);

/* selfdest.c: whether dst, where c would be proxied to, is one of zring's
 * own listeners or the node's loopback (SPEC "HBONE"). Returns 0, or a
 * refuse reason + 1 (ZR_REFUSE_SELF / ZR_REFUSE_LOOPBACK), logged. */
int zr_flow_forbidden_dest(zr_conn_t *c, const zr_sockaddr_t *dst);

/* relay.c, shared with the HBONE bridge */
void zr_relay_arm_recv(zr_relay_side_t *s);
void zr_relay_shut_wr(zr_relay_side_t *s);
/* After a receive on s queued bytes (now `queued` waiting): pause at the
 * high-water mark, re-arm a receive that ended (`final`). */
void zr_relay_after_data(zr_relay_side_t *s, uint32_t queued, bool final);
/* Appends receive buffer bid (len bytes) to a queue of buffers, or copies
 * it behind the queue's last buffer when small (and releases it). */
void zr_relay_queue_append(zr_worker_t *w, uint16_t *head, uint16_t *tail, unsigned bid, uint32_t len);
/* A receive on s ended with res < 0: wait for buffers, resume, or reset. */
void zr_relay_recv_failed(zr_relay_side_t *s, int res);

/* Starts relaying between down.fd and up.fd. */
void zr_relay_start(zr_conn_t *c);

/* Backpressure on side s: stop reading it (and watch it for errors), or
 * start again. */
void zr_relay_pause(zr_relay_side_t *s);
void zr_relay_resume(zr_relay_side_t *s);

/* Re-arms receives that stopped for lack of buffers. */
void zr_relay_feed_starved(zr_worker_t *w);

/* Closes a connection (RST to both peers when reset), counts it, and frees
 * it once its last operation completes. Idempotent. */
void zr_conn_close(zr_conn_t *c, bool reset);

/* Appends a JSON object describing c to out (for /config_dump). */
struct zr_strbuf;
void zr_conn_dump(const zr_conn_t *c, struct zr_strbuf *out);
/* Appends c's line for /config_dump's workloadState (zr_ctl_hooks_t
 * dump_connections), or nothing when c has no local workload. */
void zr_conn_dump_workload(const zr_conn_t *c, struct zr_strbuf *out);

uint64_t zr_now_ns(void);

/* Writes the connection's access log line (core/accesslog.c); zr_conn_close
 * calls it once for a connection that has a reporter. */
void zr_access_log(const zr_conn_t *c, bool was_open);

#endif
