/* The load generator's insides, shared by engine.c (threads, timing, CPU
 * accounting, results) and the modes (gen_stream.c, gen_rr.c) and the
 * connection opener (gen_conn.c). Not part of bench.h: the suite and the
 * reports see only zr_bench_opts_t / zr_bench_result_t. */
#ifndef ZR_PERF_ENGINE_INT_H
#define ZR_PERF_ENGINE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "io/io-t.h"
#include "perf/bench-t.h"

#define ZR_GEN_NS 1000000000ull

/* CLOCK_MONOTONIC in ns: every timestamp of the generator. */
static inline uint64_t zr_gen_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * ZR_GEN_NS + (uint64_t)ts.tv_nsec;
}

/* Counters that the main thread reads while the worker runs (progress line,
 * throughput series): written only by the owning worker with relaxed stores
 * (plain moves, no locked instruction), read with relaxed loads. */
static inline void zr_gen_pub_add(uint64_t *counter, uint64_t n)
{
	__atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

typedef struct zr_gen_thread zr_gen_thread_t;
typedef struct zr_gen_conn zr_gen_conn_t;

/* Called when a connection is open and ready for the mode's traffic. */
typedef void (*zr_gen_opened_cb)(zr_gen_conn_t *c);

/* One connection of a generator thread. The mode embeds it first in its own
 * connection type. Each op in flight is counted in `pending` so the object is
 * reused only once every completion has come back. */
struct zr_gen_conn {
	zr_gen_thread_t *th;
	unsigned id; /* global connection index (0..connections-1) */
	int fd;
	unsigned pending;		    /* ops in flight */
	bool closing;			    /* fd closed; waiting for pending to reach 0 */
	bool open;			    /* connected (and through SOCKS5): traffic may flow */
	uint64_t deadline;		    /* connect / SOCKS5 / response deadline (ns), 0 = none */
	zr_io_op_t ctl_op;		    /* connect and SOCKS5 steps */
	zr_gen_opened_cb opened;	    /* open and ready (only on success) */
	void (*released)(zr_gen_conn_t *c); /* closed and no op left in flight */
	int last_error;			    /* kind of the failure that closed it, -1 none */
	uint8_t hs[272];		    /* the SOCKS5 reply as it arrives */
	unsigned hs_len;
	uint8_t step;
};

/* One generator thread: its ring, its share of the connections and what it
 * measured. Created and read by engine.c; driven by one mode's loop. */
struct zr_gen_thread {
	const zr_bench_opts_t *o;
	unsigned index, nthreads;
	zr_io_t *io;
	pid_t tid;
	zr_sockaddr_t target, socks5, bind;
	uint8_t socks5_req[300]; /* greeting + CONNECT request, sent in one write */
	unsigned socks5_req_len;
	/* the timeline (CLOCK_MONOTONIC ns), fixed before any traffic */
	uint64_t t0, measure_start, measure_end;
	const int *abort; /* set by the main thread: stop now (setup failed elsewhere) */
	void *mode;	  /* the running mode's own state */

	uint64_t pub_bytes;  /* bytes moved (sent + received), whole run: series, progress */
	uint64_t pub_done;   /* responses / completed connections, whole run: progress */
	uint64_t pub_errors; /* progress */

	zr_bench_result_t r;  /* this thread's share; merged by engine.c */
	uint64_t *conn_bytes; /* per local connection, measured part */
	int fatal;	      /* -errno: the thread could not run */
	char why[160];
};

/* Counts an error of kind e (always, warm-up included: an error is never
 * dropped) and publishes it for the progress line. */
void zr_gen_error(zr_gen_thread_t *th, zr_bench_error_t e);

/* Maps a socket error to the error kind the reports use. */
zr_bench_error_t zr_gen_errno_kind(int neg_errno);

/* True when t (ns) is inside the measured part. */
static inline bool zr_gen_in_window(const zr_gen_thread_t *th, uint64_t t)
{
	return t >= th->measure_start && t < th->measure_end;
}

/* --- gen_conn.c */
/* Builds the SOCKS5 greeting and CONNECT request for target_text ("HOST:PORT",
 * "[v6]:PORT"): IPv4 / IPv6 address, else a domain name. Returns the length,
 * or -EINVAL. */
int zr_gen_socks5_request(const char *target_text, uint8_t *buf, size_t cap) __attribute__((warn_unused_result));
/* Opens c towards the target: socket (bound to --bind), non-blocking connect
 * with the timeout, then the SOCKS5 handshake when --via-socks5. On success
 * calls c->opened from a completion (never synchronously). On failure the
 * error is counted, c->last_error set, the socket closed, and c->released
 * called once nothing is in flight, which may be before this returns: so
 * there is nothing to return, and the caller must not touch c afterwards. */
void zr_gen_conn_open(zr_gen_conn_t *c, bool nodelay);
/* Closes c's socket and cancels its ops. c->released runs once every op has
 * completed, synchronously when none is in flight: the caller must not touch
 * c after this call. Safe to call twice. */
void zr_gen_conn_close(zr_gen_conn_t *c);
/* Accounts one completion of c's ops (terminal: the op is over, not a
 * multishot completion with more to come). Returns true when c is closing:
 * then the caller must return at once (c may have been released and reused). */
bool zr_gen_conn_done_op(zr_gen_conn_t *c, bool terminal);
/* Fails c when its connect / SOCKS5 deadline has passed (called from the
 * modes' periodic scan). */
void zr_gen_conn_check(zr_gen_conn_t *c, uint64_t now);

/* --- the modes: each runs one thread's loop until its share is done.
 * Returns 0, or -errno (with th->why) when the thread could not run. */
int zr_gen_stream_run(zr_gen_thread_t *th) __attribute__((warn_unused_result));
int zr_gen_rr_run(zr_gen_thread_t *th) __attribute__((warn_unused_result)); /* rr and crr */

#endif
