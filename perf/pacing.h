/* Open-loop pacing: pure functions over the schedule (no clock, no sockets),
 * so the engine's timing rules can be tested on their own. Times are ns
 * relative to the schedule's start. Any thread; nothing here blocks. */
#ifndef ZR_PERF_PACING_H
#define ZR_PERF_PACING_H

#include "perf/pacing-t.h"

/* The intended send time of request k of connection conn (0 <= conn < conns)
 * at `rate` requests per second over all connections. */
uint64_t zr_pace_intended_ns(double rate, unsigned conns, unsigned conn, uint64_t k);

/* How many requests of connection conn are due at time t: those whose
 * intended time is <= t. */
uint64_t zr_pace_due_count(double rate, unsigned conns, unsigned conn, uint64_t t_ns);

/* Sets up a thread's cursor over the connections first, first + stride, ...
 * below conns. Returns 0, or -EINVAL when rate <= 0 or first >= conns. */
int zr_pace_init(zr_pace_t *p, double rate, unsigned conns, unsigned first, unsigned stride)
	__attribute__((warn_unused_result));

/* The intended time of the next request to fall due on this thread. */
uint64_t zr_pace_next_ns(const zr_pace_t *p);

/* When the next request's intended time is <= t: returns true with its local
 * connection index (0..n_local-1) and k, and moves the cursor on. Called in a
 * loop it yields every request due by t, in intended-time order. */
bool zr_pace_pop(zr_pace_t *p, uint64_t t_ns, unsigned *local, uint64_t *k);

/* A request of this connection fell due. Returns true when it may be sent at
 * once (nothing in flight): then call zr_pace_queue_send. */
bool zr_pace_queue_due(zr_pace_queue_t *q);

/* Marks the oldest unsent due request as sent and returns its k (its
 * intended time is zr_pace_intended_ns(..., k)). Only when !busy && due > sent. */
uint64_t zr_pace_queue_send(zr_pace_queue_t *q);

/* The response to the request in flight arrived. Returns true when another
 * request is already due (send it now, with its own intended time). */
bool zr_pace_queue_done(zr_pace_queue_t *q);

/* Latency as wrk2 counts it: from the intended send time to completion, not
 * from when the request could actually be sent. 0 if completion precedes it. */
uint64_t zr_pace_latency_ns(uint64_t intended_ns, uint64_t completed_ns);

#endif
