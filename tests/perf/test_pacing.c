/* Open-loop pacing (perf/pacing.c): when requests are intended, how many are
 * due at a time, spreading over threads, and coordinated-omission-corrected
 * latency when the server falls behind. Pure functions: no sockets, no clock. */
#include "perf/pacing.h"

#include <errno.h>

#include "tests/unit/tap.h"

#define MS 1000000ull

static void test_schedule(void)
{
	/* 1000 req/s over 4 connections: one request per ms overall, each
	 * connection every 4 ms, staggered by 1 ms. */
	is(zr_pace_intended_ns(1000, 4, 0, 0), 0, "connection 0's first request is at the start");
	is(zr_pace_intended_ns(1000, 4, 1, 0), 1 * MS, "connection 1's first request is 1 ms later");
	is(zr_pace_intended_ns(1000, 4, 3, 2), 11 * MS, "request 2 of connection 3 is at 11 ms");
	is(zr_pace_intended_ns(50000, 1, 0, 50000), 1000 * MS, "50k req/s on one connection: request 50000 at 1 s");

	is(zr_pace_due_count(1000, 4, 0, 0), 1, "at t=0 connection 0 has one request due");
	is(zr_pace_due_count(1000, 4, 1, 0), 0, "at t=0 connection 1 has none");
	is(zr_pace_due_count(1000, 4, 1, 1 * MS - 1), 0, "1 ns before its time it still has none");
	is(zr_pace_due_count(1000, 4, 1, 1 * MS), 1, "at its intended time it has one");
	is(zr_pace_due_count(1000, 4, 2, 1000 * MS), 250, "after 1 s each of 4 connections had 250 due");
	uint64_t total = 0;
	for (unsigned c = 0; c < 7; c++)
		total += zr_pace_due_count(3000, 7, c, 2000 * MS - 1);
	is(total, 6000, "3000 req/s over 7 connections: 6000 due in the first 2 s, whatever the split");

	/* due_count agrees with intended_ns at every boundary (the engine mixes them) */
	bool agree = true;
	for (unsigned c = 0; c < 3 && agree; c++)
		for (uint64_t k = 0; k < 2000 && agree; k++) {
			uint64_t t = zr_pace_intended_ns(777.7, 3, c, k);
			agree = zr_pace_due_count(777.7, 3, c, t) == k + 1 &&
				(t == 0 || zr_pace_due_count(777.7, 3, c, t - 1) == k);
		}
	ok(agree, "due_count(t) counts exactly the requests with intended time <= t (odd rate 777.7/s)");
}

static void test_cursor(void)
{
	zr_pace_t p;
	is(zr_pace_init(&p, 0, 4, 0, 1), -EINVAL, "rate 0 is refused");
	is(zr_pace_init(&p, 100, 4, 4, 1), -EINVAL, "a first connection beyond the count is refused");

	/* Two threads share 5 connections (0,2,4 and 1,3): together they pop
	 * every request due in the first 100 ms exactly once, evenly spaced. */
	zr_pace_t a, b;
	if (zr_pace_init(&a, 1000, 5, 0, 2) || zr_pace_init(&b, 1000, 5, 1, 2))
		return;
	is(a.n_local, 3, "thread 0 owns 3 of 5 connections");
	is(b.n_local, 2, "thread 1 owns 2 of 5 connections");
	unsigned seen[5] = {0}, popped = 0, local;
	uint64_t k, last = 0;
	bool ordered = true, spaced = true;
	for (uint64_t t = 0; t < 100 * MS; t += MS / 2) {
		while (zr_pace_pop(&a, t, &local, &k)) {
			unsigned c = 0 + local * 2;
			uint64_t when = zr_pace_intended_ns(1000, 5, c, k);
			ordered &= when <= t && k == seen[c];
			seen[c]++, popped++;
		}
		while (zr_pace_pop(&b, t, &local, &k)) {
			unsigned c = 1 + local * 2;
			uint64_t when = zr_pace_intended_ns(1000, 5, c, k);
			ordered &= when <= t && k == seen[c];
			seen[c]++, popped++;
		}
	}
	is(popped, 100, "100 requests fell due in 100 ms at 1000/s");
	ok(ordered, "each connection's requests come in order, none before its time");
	for (unsigned c = 0; c < 5; c++)
		spaced &= seen[c] == 20;
	ok(spaced, "every connection got 20 of them");
	/* the merged schedule is evenly spaced: gaps of exactly 1 ms */
	for (uint64_t g = 1; g < 100; g++) {
		uint64_t t = zr_pace_intended_ns(1000, 5, (unsigned)(g % 5), g / 5);
		spaced &= t - last == MS || g == 1;
		last = t;
	}
	ok(spaced, "the requests of all connections together are 1 ms apart");
	is(zr_pace_next_ns(&a), 100 * MS, "thread 0's next request is the one at 100 ms");
}

/* One connection at 1000 req/s (one every 1 ms) against a server that takes
 * `service` per request: the engine's loop, with time stepped by events. */
static void simulate(uint64_t service, unsigned n, uint64_t *lat, uint64_t *naive)
{
	zr_pace_t p;
	zr_pace_queue_t q = {0};
	if (zr_pace_init(&p, 1000, 1, 0, 1))
		return;
	uint64_t now = 0, done_at = UINT64_MAX, sent_at = 0, inflight_k = 0;
	unsigned completed = 0, local;
	uint64_t k;
	while (completed < n) {
		uint64_t next_due = zr_pace_next_ns(&p);
		now = next_due < done_at ? next_due : done_at;
		if (now == done_at) {
			lat[completed] = zr_pace_latency_ns(zr_pace_intended_ns(1000, 1, 0, inflight_k), now);
			naive[completed] = now - sent_at;
			completed++;
			done_at = UINT64_MAX;
			if (zr_pace_queue_done(&q)) {
				inflight_k = zr_pace_queue_send(&q);
				sent_at = now;
				done_at = now + service;
			}
		}
		while (zr_pace_pop(&p, now, &local, &k)) {
			if (zr_pace_queue_due(&q)) {
				inflight_k = zr_pace_queue_send(&q);
				sent_at = now;
				done_at = now + service;
			}
		}
	}
}

static void test_latency(void)
{
	uint64_t lat[50], naive[50];
	simulate(MS / 4, 50, lat, naive);
	bool flat = true;
	for (int i = 0; i < 50; i++)
		flat &= lat[i] == MS / 4;
	ok(flat, "a server faster than the rate: every latency is the service time (250 us)");

	/* The server needs 2 ms, requests are due every 1 ms: each request
	 * waits behind the previous one and keeps its intended time, so the
	 * latency of request k is (k+1)*2 ms - k*1 ms = (k+2) ms. */
	simulate(2 * MS, 50, lat, naive);
	bool grows = true, exact = true, naive_flat = true;
	for (int i = 0; i < 50; i++) {
		exact &= lat[i] == (uint64_t)(i + 2) * MS;
		grows &= i == 0 || lat[i] > lat[i - 1];
		naive_flat &= naive[i] == 2 * MS;
	}
	ok(exact, "behind schedule: request k's latency is (k+2) ms, measured from its intended time");
	if (!exact)
		diag("  latency[0]=%llu latency[49]=%llu", (unsigned long long)lat[0], (unsigned long long)lat[49]);
	ok(grows, "behind schedule: latency grows with every request (queued requests are not skipped)");
	ok(naive_flat, "while the time from actual send would hide it (2 ms each: coordinated omission)");

	zr_pace_queue_t q = {0};
	ok(zr_pace_queue_due(&q), "an idle connection may send a due request at once");
	is(zr_pace_queue_send(&q), 0, "the first request sent is k=0");
	ok(!zr_pace_queue_due(&q), "a request falling due while one is in flight waits");
	ok(!zr_pace_queue_due(&q), "so does a third");
	ok(zr_pace_queue_done(&q), "after the response, a queued request is ready");
	is(zr_pace_queue_send(&q), 1, "it is k=1 (in order, none skipped)");
	is(zr_pace_latency_ns(5 * MS, 3 * MS), 0, "a completion before its intended time counts as 0");
}

int main(void)
{
	test_schedule();
	test_cursor();
	test_latency();
	return done_testing();
}
