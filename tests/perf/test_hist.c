/* The latency histogram against exact order statistics: for known
 * distributions every reported percentile must be within 1% of the value a
 * sort of the same samples gives, p100 the exact max, the mean within 0.1%,
 * and a merge must equal recording everything in one histogram. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "perf/bench.h"
#include "tap.h"

static const double pcts[] = {1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 99.999, 100};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	/* xorshift64*: deterministic, so a failure reproduces */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static double rng_unit(void)
{
	return (double)(rng() >> 11) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The exact answer to "smallest v with at least p% of values <= v". */
static uint64_t exact(const uint64_t *sorted, size_t n, double p)
{
	size_t rank = (size_t)ceil(p / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	return sorted[rank - 1];
}

/* Records v[0..n) and checks every percentile, p100 and the mean. */
static void check(const char *name, uint64_t *v, size_t n)
{
	zr_hist_t *h = malloc(sizeof(*h));
	zr_hist_init(h);
	double sum = 0;
	for (size_t i = 0; i < n; i++) {
		zr_hist_record(h, v[i]);
		sum += (double)v[i];
	}
	qsort(v, n, sizeof(*v), cmp_u64);
	is(h->count, n, "%s: count", name);
	double worst = 0;
	double worst_p = 0;
	for (size_t k = 0; k < sizeof(pcts) / sizeof(pcts[0]); k++) {
		uint64_t want = exact(v, n, pcts[k]), got = zr_hist_percentile(h, pcts[k]);
		double err = want ? fabs((double)got - (double)want) / (double)want : (double)(got != want);
		if (err > worst)
			worst = err, worst_p = pcts[k];
		if (got < v[0])
			worst = 1; /* never below the exact min */
	}
	ok(worst <= 0.01, "%s: every percentile within 1%% of the exact one (worst %.4f%% at p%g)", name, worst * 100,
	   worst_p);
	is(zr_hist_percentile(h, 100), v[n - 1], "%s: p100 is the exact max", name);
	double mean = sum / (double)n;
	ok(fabs(zr_hist_mean(h) - mean) <= mean * 0.001, "%s: mean %.3f within 0.1%% of %.3f", name, zr_hist_mean(h),
	   mean);
	free(h);
}

int main(void)
{
	enum {
		N = 200000
	};
	uint64_t *v = malloc(N * sizeof(*v));
	zr_hist_t *h = malloc(sizeof(*h)), *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));

	for (size_t i = 0; i < N; i++)
		v[i] = 1 + rng() % 1000000;
	check("uniform 1..1e6", v, N);

	for (size_t i = 0; i < N; i++)
		v[i] = 1 + (uint64_t)(-log(1.0 - rng_unit()) * 50000.0); /* mean 50 us */
	check("exponential", v, N);

	for (size_t i = 0; i < N; i++)
		v[i] = rng() % 10 ? 20000 + rng() % 2000 : 5000000 + rng() % 500000;
	check("bimodal (90% ~20us, 10% ~5ms)", v, N);

	for (size_t i = 0; i < N; i++)
		v[i] = (1ull << 30) - 1; /* the top of its bucket: below the midpoint */
	check("constant", v, N);

	/* Small values are exact: every percentile equals the order statistic. */
	zr_hist_init(h);
	for (uint64_t x = 0; x < 128; x++)
		zr_hist_record_n(h, x, x + 1);
	int exact_small = 1;
	uint64_t total = 128 * 129 / 2, seen = 0;
	for (uint64_t x = 0; x < 128; x++) {
		seen += x + 1;
		if (zr_hist_percentile(h, 100.0 * (double)seen / (double)total) != x)
			exact_small = 0;
	}
	ok(exact_small, "values below 128 are reported exactly");
	is(zr_hist_percentile(h, 0.0001), 0, "the lowest percentile is the min (0)");

	/* Values above 2^40 ns are counted, clamped to the top bucket, and the
	 * reported max stays the exact value. */
	zr_hist_init(h);
	zr_hist_record(h, 1000);
	zr_hist_record_n(h, 1ull << 50, 3);
	is(h->clamped, 3, "values above 2^40 are counted as clamped");
	is(zr_hist_percentile(h, 100), 1ull << 50, "p100 of clamped values is the exact max");
	uint64_t p50 = zr_hist_percentile(h, 50);
	ok(p50 >= (1ull << 40) - (1ull << 33) && p50 <= (1ull << 50), "p50 of clamped values sits at the top (%llu)",
	   (unsigned long long)p50);
	uint64_t p10 = zr_hist_percentile(h, 10);
	ok(p10 >= 1000 && p10 <= 1010, "p10 is the one small value (%llu)", (unsigned long long)p10);

	zr_hist_init(h);
	is(zr_hist_percentile(h, 50), 0, "empty: p50 is 0");
	is(zr_hist_percentile(h, 100), 0, "empty: p100 is 0");
	ok(zr_hist_mean(h) == 0.0, "empty: mean is 0");
	zr_hist_record_n(h, 77, 0);
	is(h->count, 0, "recording zero copies records nothing");

	/* merge(a, b) == one histogram of everything, bucket for bucket */
	zr_hist_init(h);
	zr_hist_init(a);
	zr_hist_init(b);
	for (size_t i = 0; i < N; i++) {
		uint64_t x = rng() % 3000000000ull;
		zr_hist_record(h, x);
		zr_hist_record(i % 3 ? a : b, x);
	}
	zr_hist_t *empty = malloc(sizeof(*empty));
	zr_hist_init(empty);
	zr_hist_merge(a, empty);
	zr_hist_merge(a, b);
	ok(memcmp(a->buckets, h->buckets, sizeof(h->buckets)) == 0, "merge: same buckets as recording all");
	ok(a->count == h->count && a->min == h->min && a->max == h->max && a->clamped == h->clamped,
	   "merge: same count, min, max and clamped");
	ok(fabs(zr_hist_mean(a) - zr_hist_mean(h)) <= 1e-6 * zr_hist_mean(h), "merge: same mean");
	int same = 1;
	for (size_t k = 0; k < sizeof(pcts) / sizeof(pcts[0]); k++)
		same &= zr_hist_percentile(a, pcts[k]) == zr_hist_percentile(h, pcts[k]);
	ok(same, "merge: same percentiles");
	zr_hist_merge(empty, a);
	is(empty->min, a->min, "merge into an empty histogram takes the min");

	free(v);
	free(h);
	free(a);
	free(b);
	free(empty);
	return done_testing();
}
