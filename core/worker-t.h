/* Per-worker state: one thread, one ring, its listeners, connections,
 * buffers and counters. Everything here is owned by the worker thread except
 * the mailbox (SPSC from the control thread) and the stats (read by the
 * control thread with relaxed loads). */
#ifndef ZR_CORE_WORKER_T_H
#define ZR_CORE_WORKER_T_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/snapshot.h"
#include "core/stats-t.h"
#include "io/io-t.h"

/* Receive buffers per worker and per-direction backpressure thresholds. */
#define ZR_BUF_SIZE  (32u * 1024u)
#define ZR_BUF_COUNT 1024u
/* Buffers kept for HBONE connections (io recv_reserved): their reading is what
 * frees the relays' buffers (WINDOW_UPDATE, the peer's data), so the relays
 * must not be able to take them all. HBONE gives each back at once. */
#define ZR_BUF_RESERVE	    64u
#define ZR_RELAY_HIGH_WATER (256u * 1024u) /* stop reading the source side */
#define ZR_RELAY_LOW_WATER  (64u * 1024u)  /* resume reading */
#define ZR_BUF_NONE	    0xffffu

typedef struct zr_worker zr_worker_t;
typedef struct zr_conn zr_conn_t;

typedef enum zr_listener_kind {
	ZR_LISTENER_OUTBOUND = 0, /* captured: SO_ORIGINAL_DST */
	ZR_LISTENER_SOCKS5,
	ZR_LISTENER_INBOUND_PLAINTEXT,
	ZR_LISTENER_HBONE, /* mTLS HTTP/2 CONNECT from other nodes */
	ZR_LISTENER__COUNT
} zr_listener_kind_t;

typedef struct zr_listener {
	zr_io_op_t accept_op;
	zr_worker_t *worker;
	struct zr_listener *next;
	zr_listener_kind_t kind;
	int fd;
	bool per_workload; /* bound on a local workload IP (follows config reloads) */
	bool closing;	   /* accept cancelled; freed at its final completion */
	bool armed;	   /* a multishot accept is outstanding */
	bool paused;	   /* accept stopped (fd limit, memory, errors): the worker re-arms it */
	bool pause_asked;  /* accept cancelled to pause it (the fd reserve was reached) */
	unsigned errors;   /* accept errors in a row */
	zr_sockaddr_t addr;
} zr_listener_t;

typedef enum zr_msg_type {
	ZR_MSG_WAKE = 0, /* a new snapshot is published */
	ZR_MSG_DRAIN,	 /* stop accepting; exit when no connection is left */
	ZR_MSG_STOP,	 /* close everything now and exit */
	ZR_MSG_DUMP,	 /* fill a zr_dump_req_t */
} zr_msg_type_t;

typedef struct zr_msg {
	zr_msg_type_t type;
	void *arg;
} zr_msg_t;

#define ZR_MAILBOX_SIZE 64

/* Single-producer (control thread) single-consumer (worker) queue. */
typedef struct zr_mailbox {
	_Alignas(64) _Atomic unsigned head; /* written by the consumer */
	_Alignas(64) _Atomic unsigned tail; /* written by the producer */
	zr_msg_t slots[ZR_MAILBOX_SIZE];
	int eventfd;
} zr_mailbox_t;

/* Per-buffer metadata: queued bytes chain through `next`. */
typedef struct zr_bufmeta {
	uint32_t len;
	uint16_t next;
} zr_bufmeta_t;

struct zr_worker {
	/* hot, worker-private */
	_Alignas(64) zr_io_t *io;
	zr_snapshot_t *snap; /* current, referenced */
	zr_bufmeta_t bufmeta[ZR_BUF_COUNT];
	unsigned bufs_in_use;
	zr_conn_t *conns;		   /* live connections (doubly linked) */
	zr_conn_t *free_conns;		   /* free list */
	struct zr_conn_block *conn_blocks; /* every block connections came from */
	struct zr_relay_side *starved;	   /* relay sides waiting for receive buffers */
	unsigned n_conns;
	uint64_t next_conn_id;
	uint32_t rr_counter; /* round-robin over service endpoints */
	zr_listener_t *listeners;
	struct zr_h2conn *h2conns;    /* every HBONE connection (client and server) */
	struct zr_h2conn *h2_starved; /* HBONE connections waiting for receive buffers */
	zr_io_op_t hbone_tick_op;
	bool hbone_tick_armed;
	struct zr_h2conn **pool; /* client connections by pool key hash */
	unsigned pool_mask;
	struct zr_slice *free_slices;
	struct zr_pblock *free_pblocks;
	struct zr_pblock *pblock; /* where the next TLS record is decrypted */
	uint64_t prng;		  /* traceparent ids */
	uint64_t last_tick_ns;
	bool draining, stopping;
	/* Accepting paused (see listener_pause in worker.c): paused listeners,
	 * the retry timer, its backoff, and what the pause episode looks like. */
	unsigned accept_paused;
	zr_io_op_t accept_retry_op;
	bool accept_retry_armed;
	bool accept_episode;	  /* pauses seen, not yet a quiet retry period */
	bool accept_pause_recent; /* a pause since the retry timer last fired */
	unsigned accept_backoff_ms;
	unsigned accept_owned_mark; /* conns + HBONE conns at the last loop turn */
	unsigned fd_reserve_at;	    /* accepted fd numbers from here on are the reserve's */
	unsigned accept_pauses;	    /* in this episode */
	uint64_t accept_episode_ns;
	zr_io_op_t mailbox_op;
	uint64_t mailbox_val;
	zr_io_op_t tick_op;
	bool tick_armed;
	/* tcp metrics lookup (worker-private hash over stats.tcp_head entries) */
	struct zr_tcp_metrics **tcp_hash;
	unsigned tcp_hash_mask;
	unsigned mark_warned;
	uint64_t bind_warn_ns;	   /* last source-bind failure warning */
	uint64_t bind_warn_missed; /* failures not warned about since */
	/* this host's addresses (selfdest.c), read at most once a second */
	zr_ip_t *host_ips;
	size_t n_host_ips;
	uint64_t host_ips_ns;

	/* identity */
	unsigned index;
	int cpu; /* pinned CPU, -1 if not pinned */
	int numa_node;
	unsigned arena; /* jemalloc arena of the node */
	pthread_t thread;
	struct zr_runtime *rt;

	/* published to the control thread */
	_Alignas(64) _Atomic uint64_t seen_epoch;
	_Atomic bool exited;
	_Atomic int start_result; /* 0 starting, 1 running, <0 failed */
	_Alignas(64) zr_worker_stats_t stats;
	_Alignas(64) zr_mailbox_t mailbox;
};

/* A request for the live connection list: filled by the worker, which then
 * sets done (release); the control thread waits for it. */
typedef struct zr_dump_req {
	struct zr_strbuf *out; /* JSON objects appended, comma-separated */
	struct zr_strbuf *by_workload; /* zr_conn_dump_workload lines */
	bool first;
	_Atomic bool done;
} zr_dump_req_t;

#endif
