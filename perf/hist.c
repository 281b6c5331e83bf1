/* The log-linear latency histogram. Bucket i < 2^SUB_BITS holds the value i;
 * above, the range [2^e, 2^(e+1)) is split into 2^SUB_BITS buckets of width
 * 2^(e - SUB_BITS). A bucket is reported as its midpoint, so the reported
 * value is within half a bucket (2^-(SUB_BITS+1), 0.4%) of any value in it,
 * and then clamped into [min, max] so no report leaves the recorded range. */
#include <string.h>

#include "perf/bench.h"

#define SUB_COUNT (1u << ZR_HIST_SUB_BITS)

static unsigned bucket_of(uint64_t v)
{
	if (v < SUB_COUNT)
		return (unsigned)v;
	if (v >> ZR_HIST_MAX_EXP)
		return ZR_HIST_BUCKETS - 1;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = e - ZR_HIST_SUB_BITS;
	/* (v >> shift) is in [SUB_COUNT, 2 * SUB_COUNT): its low bits pick the
	 * sub-bucket, and exponent e starts at group (e - SUB_BITS + 1). */
	return ((shift + 1) << ZR_HIST_SUB_BITS) + (unsigned)((v >> shift) - SUB_COUNT);
}

/* The lowest value of bucket i and its width. */
static void bucket_range(unsigned i, uint64_t *low, uint64_t *width)
{
	if (i < SUB_COUNT) {
		*low = i;
		*width = 1;
		return;
	}
	unsigned shift = (i >> ZR_HIST_SUB_BITS) - 1;
	uint64_t sub = i & (SUB_COUNT - 1);
	*low = (SUB_COUNT + sub) << shift;
	*width = 1ull << shift;
}

void zr_hist_init(zr_hist_t *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void zr_hist_record_n(zr_hist_t *h, uint64_t value, uint64_t n)
{
	if (!n)
		return;
	if (value >> ZR_HIST_MAX_EXP)
		h->clamped += n;
	h->buckets[bucket_of(value)] += n;
	h->count += n;
	h->sum += (double)value * (double)n;
	if (value < h->min)
		h->min = value;
	if (value > h->max)
		h->max = value;
}

void zr_hist_record(zr_hist_t *h, uint64_t value)
{
	zr_hist_record_n(h, value, 1);
}

void zr_hist_merge(zr_hist_t *into, const zr_hist_t *from)
{
	if (!from->count)
		return;
	for (unsigned i = 0; i < ZR_HIST_BUCKETS; i++)
		into->buckets[i] += from->buckets[i];
	into->count += from->count;
	into->clamped += from->clamped;
	into->sum += from->sum;
	if (from->min < into->min)
		into->min = from->min;
	if (from->max > into->max)
		into->max = from->max;
}

uint64_t zr_hist_percentile(const zr_hist_t *h, double p)
{
	if (!h->count)
		return 0;
	if (!(p < 100.0))
		return h->max;
	if (!(p > 0.0))
		return h->min;
	/* rank: how many values must be <= the answer (at least one). The
	 * tolerance keeps p = 100 * k / count from landing on rank k + 1
	 * through rounding. */
	double want = p / 100.0 * (double)h->count;
	uint64_t rank = (uint64_t)want;
	if ((double)rank < want * (1.0 - 1e-12))
		rank++;
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < ZR_HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen < rank)
			continue;
		uint64_t low, width, v;
		bucket_range(i, &low, &width);
		v = low + width / 2;
		if (v < h->min)
			v = h->min;
		if (v > h->max)
			v = h->max;
		return v;
	}
	return h->max;
}

double zr_hist_mean(const zr_hist_t *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}
