/* Open-loop pacing (see pacing.h). The schedule is global (one request every
 * 1/rate over all connections, round-robin by connection) so that spreading
 * connections over threads changes nothing about when requests are due. */
#include "perf/pacing.h"

#include <errno.h>
#include <math.h>

uint64_t zr_pace_intended_ns(double rate, unsigned conns, unsigned conn, uint64_t k)
{
	double g = (double)k * (double)conns + (double)conn;
	return (uint64_t)(g * 1e9 / rate);
}

uint64_t zr_pace_due_count(double rate, unsigned conns, unsigned conn, uint64_t t_ns)
{
	double g = (double)t_ns * rate / 1e9; /* global requests due, fractional */
	if (g < (double)conn)
		return zr_pace_intended_ns(rate, conns, conn, 0) <= t_ns ? 1 : 0;
	uint64_t n = (uint64_t)floor((g - (double)conn) / (double)conns) + 1;
	/* Floating point may put the estimate one off at exact boundaries: the
	 * answer must agree with zr_pace_intended_ns, which the engine uses. */
	while (n > 0 && zr_pace_intended_ns(rate, conns, conn, n - 1) > t_ns)
		n--;
	while (zr_pace_intended_ns(rate, conns, conn, n) <= t_ns)
		n++;
	return n;
}

int zr_pace_init(zr_pace_t *p, double rate, unsigned conns, unsigned first, unsigned stride)
{
	if (!(rate > 0) || !isfinite(rate) || conns == 0 || first >= conns || stride == 0)
		return -EINVAL;
	*p = (zr_pace_t){
		.rate = rate,
		.conns = conns,
		.first = first,
		.stride = stride,
		.n_local = (conns - first + stride - 1) / stride,
	};
	return 0;
}

uint64_t zr_pace_next_ns(const zr_pace_t *p)
{
	return zr_pace_intended_ns(p->rate, p->conns, p->first + p->next * p->stride, p->round);
}

bool zr_pace_pop(zr_pace_t *p, uint64_t t_ns, unsigned *local, uint64_t *k)
{
	if (zr_pace_next_ns(p) > t_ns)
		return false;
	*local = p->next;
	*k = p->round;
	if (++p->next == p->n_local) {
		p->next = 0;
		p->round++;
	}
	return true;
}

bool zr_pace_queue_due(zr_pace_queue_t *q)
{
	q->due++;
	return !q->busy;
}

uint64_t zr_pace_queue_send(zr_pace_queue_t *q)
{
	q->busy = true;
	return q->sent++;
}

bool zr_pace_queue_done(zr_pace_queue_t *q)
{
	q->busy = false;
	return q->due > q->sent;
}

uint64_t zr_pace_latency_ns(uint64_t intended_ns, uint64_t completed_ns)
{
	return completed_ns > intended_ns ? completed_ns - intended_ns : 0;
}
