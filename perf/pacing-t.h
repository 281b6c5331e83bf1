/* Open-loop pacing types: the schedule of intended send times (wrk2's model)
 * and the per-connection queue of requests that have fallen due. Types only. */
#ifndef ZR_PERF_PACING_T_H
#define ZR_PERF_PACING_T_H

#include <stdbool.h>
#include <stdint.h>

/* One thread's view of the schedule. Request k of connection c (global
 * index c over all threads) is intended at (k * conns + c) / rate seconds
 * after the schedule's start, so that the requests of all connections
 * together are evenly spaced at 1/rate. A thread owns the connections
 * first, first + stride, ...; the cursor walks its requests in time order. */
typedef struct zr_pace {
	double rate;	  /* requests per second over all connections (> 0) */
	unsigned conns;	  /* connections over all threads */
	unsigned first;	  /* this thread's first connection */
	unsigned stride;  /* distance between this thread's connections */
	unsigned n_local; /* how many connections this thread owns */
	unsigned next;	  /* cursor: local index of the next request to fall due */
	uint64_t round;	  /* cursor: its k */
} zr_pace_t;

/* One connection's requests: a request that falls due while the previous one
 * is still waiting for its response queues behind it and keeps its intended
 * time (it is never skipped), so a stall shows in every later latency. */
typedef struct zr_pace_queue {
	uint64_t due;  /* requests whose intended time has come */
	uint64_t sent; /* requests sent so far; the one in flight is sent - 1 */
	bool busy;     /* a request is waiting for its response */
} zr_pace_queue_t;

#endif
