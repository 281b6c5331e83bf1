/* zring-bench types: what a run is asked to do (zr_bench_opts_t) and what
 * it measured (zr_bench_result_t). Shared by the modes (engine.c, server.c),
 * the reports (report.c, svg.c, json.c) and the suite (suite.c), so that the
 * suite runs the same code in-process that a user runs from the command line.
 * Types and constants only. */
#ifndef ZR_PERF_BENCH_T_H
#define ZR_PERF_BENCH_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "perf/hist-t.h"

typedef enum zr_bench_mode {
	ZR_BENCH_STREAM,
	ZR_BENCH_RR,
	ZR_BENCH_CRR,
	ZR_BENCH_ECHO,
	ZR_BENCH_SINK,
} zr_bench_mode_t;

typedef enum zr_bench_direction {
	ZR_BENCH_UP,   /* client sends, server (sink) counts */
	ZR_BENCH_DOWN, /* server sends, client counts */
	ZR_BENCH_BOTH,
} zr_bench_direction_t;

/* The echo server's framing (rr and crr): the client sends an 8-byte header
 * { u32 request_len, u32 response_len } (network byte order) followed by
 * request_len bytes; the server answers with exactly response_len bytes.
 * The sink reads a 1-byte command first: 'U' (upload: discard everything),
 * 'D' (download: send until the client closes) or 'B' (both). */
#define ZR_BENCH_RR_HEADER 8
#define ZR_BENCH_MAX_MSG   (64u << 20)

typedef struct zr_bench_opts {
	zr_bench_mode_t mode;
	struct sockaddr_storage target; /* client modes: where to connect */
	socklen_t target_len;
	char target_text[256];		/* as given: "HOST:PORT" (also what SOCKS5 asks for) */
	struct sockaddr_storage socks5; /* --via-socks5 (valid when via_socks5) */
	socklen_t socks5_len;
	bool via_socks5;
	struct sockaddr_storage listen; /* echo/sink: --listen */
	socklen_t listen_len;
	struct sockaddr_storage bind; /* --bind: client source address (port 0); valid when has_bind */
	socklen_t bind_len;
	bool has_bind;

	unsigned connections; /* default 1 (stream), 16 (rr), 1 (crr) */
	unsigned threads;     /* generator threads, one io_uring each; default min(connections, cores) */
	double duration_s;    /* measured part; default 10 */
	double warmup_s;      /* excluded from every figure; default 1 (0 allowed) */
	uint32_t size;	      /* stream: bytes per send; default 128 KiB */
	zr_bench_direction_t direction;
	double rate;	       /* rr: required; crr: 0 = as fast as possible. Requests per second, all connections */
	uint32_t request_len;  /* rr/crr: default 1024 (rr), 64 (crr) */
	uint32_t response_len; /* rr/crr: default 1024 (rr), 64 (crr) */
	double timeout_s;      /* connect and response timeout; default 5 */

	const char *json_path; /* NULL: no JSON */
	const char *svg_path;  /* NULL: no SVG */
	bool progress;	       /* live progress line (only when stdout is a TTY) */
	bool quiet;	       /* no table on stdout (the suite prints its own) */
	char command_line[1024];
} zr_bench_opts_t;

/* Errors are counted by kind and always reported. */
typedef enum zr_bench_error {
	ZR_BENCH_ERR_CONNECT,  /* connect refused / unreachable / timed out */
	ZR_BENCH_ERR_SOCKS5,   /* the SOCKS5 proxy refused or broke the protocol */
	ZR_BENCH_ERR_RESET,    /* connection reset or closed early */
	ZR_BENCH_ERR_TIMEOUT,  /* no response within timeout_s */
	ZR_BENCH_ERR_PROTOCOL, /* response longer/shorter than asked */
	ZR_BENCH_ERR_OTHER,
	ZR_BENCH_ERR_COUNT,
} zr_bench_error_t;

#define ZR_BENCH_SERIES_MAX 4096 /* throughput-over-time points (100 ms each) */

typedef struct zr_bench_result {
	zr_bench_mode_t mode;
	double elapsed_s; /* measured wall time (warm-up excluded) */

	/* totals over the measured part */
	uint64_t bytes_sent, bytes_received;
	uint64_t requests_sent, responses_received; /* rr, crr */
	uint64_t connections_opened, connections_completed;
	uint64_t errors[ZR_BENCH_ERR_COUNT];

	/* per connection (stream): bytes moved in the measured part */
	uint64_t *per_conn_bytes; /* malloc'd, n_conns entries; freed by zr_bench_result_free */
	unsigned n_conns;

	/* latency (rr, crr): ns from each request's intended send time to the
	 * last byte of its response (coordinated-omission corrected) */
	zr_hist_t latency;

	/* stream: bytes per 100 ms interval over the measured part */
	double series_gbps[ZR_BENCH_SERIES_MAX];
	unsigned n_series;

	/* the generator itself: CPU seconds (user, system) of this process's
	 * generator threads during the measured part, and whether any thread
	 * was busy > 90% of the time (then the figures measure the generator) */
	double cpu_user_s, cpu_sys_s;
	double busiest_thread_util; /* 0..1 */
	bool saturated;
	unsigned threads;
} zr_bench_result_t;

/* What every report says about where it ran. */
typedef struct zr_bench_env {
	char version[64];	/* zring-bench version */
	char cpu_model[128];	/* /proc/cpuinfo "model name" */
	unsigned cores;		/* online CPUs */
	char kernel[128];	/* uname -r */
	char command_line[1024];
	char started_at[32];	/* UTC, ISO 8601 */
} zr_bench_env_t;

#endif
