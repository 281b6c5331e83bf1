/* The latency histogram's type. Log-linear buckets (as HdrHistogram): values
 * below 2^ZR_HIST_SUB_BITS are exact; each power-of-two range above is split
 * into 2^ZR_HIST_SUB_BITS linear buckets, so a reported value is within
 * 2^-ZR_HIST_SUB_BITS (0.8%) of the true one. Values are nanoseconds, up to
 * 2^ZR_HIST_MAX_EXP (about 18 minutes); larger ones are clamped and counted. */
#ifndef ZR_PERF_HIST_T_H
#define ZR_PERF_HIST_T_H

#include <stdint.h>

#define ZR_HIST_SUB_BITS 7
#define ZR_HIST_MAX_EXP	 40
#define ZR_HIST_BUCKETS	 ((ZR_HIST_MAX_EXP - ZR_HIST_SUB_BITS + 1) << ZR_HIST_SUB_BITS)

typedef struct zr_hist {
	uint64_t count;
	uint64_t min, max; /* exact */
	uint64_t clamped;  /* values above the range, counted at the top bucket */
	double sum;	   /* for the mean */
	uint64_t buckets[ZR_HIST_BUCKETS];
} zr_hist_t;

#endif
