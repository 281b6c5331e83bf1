/* Per-worker counters. Each counter has exactly one writer (its worker),
 * which updates it with a relaxed load + relaxed store (a plain add on x86, no
 * atomic read-modify-write); the control thread reads them with relaxed loads
 * at scrape time and sums over workers. */
#ifndef ZR_CORE_STATS_T_H
#define ZR_CORE_STATS_T_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t zr_counter_t;

#define zr_counter_add(c, n)                                                                        \
	atomic_store_explicit((c), atomic_load_explicit((c), memory_order_relaxed) + (uint64_t)(n), \
			      memory_order_relaxed)
#define zr_counter_sub(c, n)                                                                        \
	atomic_store_explicit((c), atomic_load_explicit((c), memory_order_relaxed) - (uint64_t)(n), \
			      memory_order_relaxed)
#define zr_counter_get(c) atomic_load_explicit((c), memory_order_relaxed)

/* ztunnel's istio_tcp_* series for one label set, on one worker. Entries are
 * created by the worker on the first connection with a new label set and
 * pushed on the worker's list with a release store; they are never removed
 * while the process runs, so the control thread may walk the list at any time
 * (acquire load of the head). */
typedef struct zr_tcp_metrics {
	struct zr_tcp_metrics *next;	  /* published list (immutable once published) */
	struct zr_tcp_metrics *hash_next; /* worker-private lookup chain */
	uint32_t hash;
	char *labels;		/* Prometheus label body, escaped: reporter="source",source_workload="a",... */
	bool destination, mtls; /* reporter="destination"; connection_security_policy="mutual_tls" */
	zr_counter_t opened, closed, received_bytes, sent_bytes, failed;
} zr_tcp_metrics_t;

/* Reasons a connection was refused or failed before relaying; they become
 * zring_connections_refused_total{reason="..."}. */
typedef enum zr_refuse_reason {
	ZR_REFUSE_UNKNOWN_SOURCE = 0, /* source IP is no local workload */
	ZR_REFUSE_NO_ROUTE,	      /* destination neither a service VIP:port nor a workload */
	ZR_REFUSE_NO_ENDPOINT,	      /* service has no endpoints */
	ZR_REFUSE_NO_IDENTITY,	      /* HBONE: no usable certificate for the source */
	ZR_REFUSE_CONNECT_FAILED,     /* upstream connect refused/failed */
	ZR_REFUSE_CONNECT_TIMEOUT,    /* upstream connect exceeded connectTimeout */
	ZR_REFUSE_SOCKS5_PROTOCOL,    /* malformed / unsupported SOCKS5 request */
	ZR_REFUSE_NO_ORIGINAL_DST,    /* captured connection without SO_ORIGINAL_DST */
	ZR_REFUSE_NOT_LOCAL,	      /* inbound destination is no local workload */
	ZR_REFUSE_OVERLOAD,	      /* connection limit or allocation failure */
	ZR_REFUSE_BAD_REQUEST,	      /* HBONE: malformed CONNECT (400) */
	ZR_REFUSE_DENIED,	      /* authorization policy (401) */
	ZR_REFUSE_SELF,		      /* destination is one of zring's own listeners */
	ZR_REFUSE_LOOPBACK,	      /* destination is the node's loopback (no workload, no VIP) */
	ZR_REFUSE_HEADERS_TIMEOUT,    /* HBONE: request headers not complete within connectTimeout */
	ZR_REFUSE__COUNT
} zr_refuse_reason_t;

/* Names used in the reason label, indexed by zr_refuse_reason_t. */
extern const char *const zr_refuse_reason_names[ZR_REFUSE__COUNT];

/* Why TLS handshakes failed: zring_tls_handshake_failures_total{reason}. */
typedef enum zr_tls_failure {
	ZR_TLS_FAIL_CERTIFICATE = 0, /* peer certificate did not verify */
	ZR_TLS_FAIL_EXPIRED,	     /* peer certificate expired */
	ZR_TLS_FAIL_IDENTITY,	     /* server identity not the expected one */
	ZR_TLS_FAIL_TRUST_DOMAIN,    /* client from another trust domain */
	ZR_TLS_FAIL_PROTOCOL,	     /* TLS or ALPN protocol error */
	ZR_TLS_FAIL_TIMEOUT,	     /* handshake not done in time */
	ZR_TLS_FAIL_NO_IDENTITY,     /* no local certificate to present */
	ZR_TLS_FAIL__COUNT
} zr_tls_failure_t;

extern const char *const zr_tls_failure_names[ZR_TLS_FAIL__COUNT];

/* Why a listener stopped accepting for a while:
 * zring_worker_accept_paused_total{reason}. */
typedef enum zr_accept_pause {
	ZR_ACCEPT_PAUSE_FD_LIMIT = 0, /* EMFILE / ENFILE: out of file descriptors */
	ZR_ACCEPT_PAUSE_MEMORY,	      /* ENOMEM / ENOBUFS */
	ZR_ACCEPT_PAUSE_ERROR,	      /* any other error, twice in a row, or the accept could not be queued */
	ZR_ACCEPT_PAUSE__COUNT
} zr_accept_pause_t;

extern const char *const zr_accept_pause_names[ZR_ACCEPT_PAUSE__COUNT];

typedef struct zr_worker_stats {
	_Atomic(zr_tcp_metrics_t *) tcp_head;
	zr_counter_t loop_turns;	  /* zring_worker_loop_iterations_total */
	zr_counter_t completions;	  /* zring_worker_completions_total */
	zr_counter_t accepted;		  /* zring_worker_accepted_total */
	zr_counter_t connections_active;  /* gauge: zring_worker_connections_active */
	zr_counter_t relay_bytes_up;	  /* zring_worker_relay_bytes_total{direction="upstream"} */
	zr_counter_t relay_bytes_down;	  /* ...{direction="downstream"} */
	zr_counter_t buffers_in_use;	  /* gauge: zring_worker_buffers_in_use */
	zr_counter_t buffers_total;	  /* gauge: zring_worker_buffers_registered */
	zr_counter_t recv_nobufs;	  /* zring_worker_recv_buffer_exhausted_total */
	zr_counter_t backpressure_pauses; /* zring_worker_backpressure_pauses_total */
	zr_counter_t refused[ZR_REFUSE__COUNT];
	zr_counter_t config_epoch;	   /* gauge: zring_worker_config_epoch */
	zr_counter_t hbone_client_conns;   /* gauge: zring_hbone_connections{role="client"} */
	zr_counter_t hbone_server_conns;   /* gauge: zring_hbone_connections{role="server"} */
	zr_counter_t hbone_streams_active; /* gauge: zring_hbone_streams_active */
	zr_counter_t hbone_pool_reused;	   /* zring_hbone_pool_reused_total */
	zr_counter_t source_bind_failures; /* zring_source_bind_failures_total */
	zr_counter_t tls_failures[ZR_TLS_FAIL__COUNT];
	zr_counter_t accept_paused[ZR_ACCEPT_PAUSE__COUNT];
	/* gauge: istio_tcp_sockets_open{reporter}: accepted sockets open, [0]
	 * source (outbound, SOCKS5), [1] destination (inbound plaintext; HBONE
	 * connections are hbone_server_conns) */
	zr_counter_t sockets_open[2];
} zr_worker_stats_t;

#endif
