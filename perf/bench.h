/* zring-bench's functions. Each group is implemented by one module:
 *   hist.c    the histogram           engine.c  client modes, argument parsing
 *   report.c  table, JSON, env        server.c  echo and sink servers
 *   svg.c     SVG plots               suite.c   the comparison suite
 *   json.c    a small JSON writer     crypto_bench.c  AEAD microbenchmark
 * Unless said otherwise a function is called from the main thread. */
#ifndef ZR_PERF_BENCH_H
#define ZR_PERF_BENCH_H

#include <stdio.h>

#include "perf/bench-t.h"

/* --- hist.c: not thread-safe; one histogram per thread, merged at the end */
void zr_hist_init(zr_hist_t *h);
void zr_hist_record(zr_hist_t *h, uint64_t value);
void zr_hist_record_n(zr_hist_t *h, uint64_t value, uint64_t n);
void zr_hist_merge(zr_hist_t *into, const zr_hist_t *from);
/* The value at percentile p (0 < p <= 100): the smallest recorded bucket's
 * representative value v such that at least p% of values are <= v; within
 * 0.8% of the exact order statistic. 0 when empty. p = 100 gives max. */
uint64_t zr_hist_percentile(const zr_hist_t *h, double p);
double zr_hist_mean(const zr_hist_t *h);

/* --- json.c: a streaming JSON writer with correct escaping and commas */
typedef struct zr_json {
	FILE *out;
	int depth;
	unsigned char need_comma[32];
	int pretty;
} zr_json_t;
void zr_json_init(zr_json_t *j, FILE *out);
void zr_json_object_begin(zr_json_t *j, const char *key); /* key NULL inside arrays / at top */
void zr_json_object_end(zr_json_t *j);
void zr_json_array_begin(zr_json_t *j, const char *key);
void zr_json_array_end(zr_json_t *j);
void zr_json_str(zr_json_t *j, const char *key, const char *value); /* NULL value -> null */
void zr_json_num(zr_json_t *j, const char *key, double value);	    /* non-finite -> null */
void zr_json_uint(zr_json_t *j, const char *key, uint64_t value);
void zr_json_bool(zr_json_t *j, const char *key, int value);

/* --- report.c */
void zr_bench_env_fill(zr_bench_env_t *env, const char *command_line);
const char *zr_bench_mode_name(zr_bench_mode_t m);
const char *zr_bench_error_name(zr_bench_error_t e);
/* The human table (what was run, results, errors, generator CPU and the
 * saturation warning). */
void zr_bench_report_table(FILE *out, const zr_bench_opts_t *o, const zr_bench_result_t *r,
			   const zr_bench_env_t *env);
/* Every figure as one JSON object (schema in README): env, options, totals,
 * rates, errors, latency percentiles, per-connection bytes, series. Writes
 * into j (so the suite can embed it) */
void zr_bench_report_json(zr_json_t *j, const char *key, const zr_bench_opts_t *o, const zr_bench_result_t *r,
			  const zr_bench_env_t *env);
/* Writes the JSON report to path. Returns 0 or -errno. */
int zr_bench_report_json_file(const char *path, const zr_bench_opts_t *o, const zr_bench_result_t *r,
			      const zr_bench_env_t *env) __attribute__((warn_unused_result));

/* --- svg.c: self-contained SVG 1.1 files (no scripts, no external fonts) */
typedef struct zr_svg_series {
	const char *name;
	const zr_hist_t *hist; /* latency spectrum */
	const double *values;  /* time series (throughput) */
	unsigned n_values;
	double interval_s;
} zr_svg_series_t;
/* Latency by percentile on a log "1/(1-p)" axis (50, 90, 99, 99.9, 99.99)
 * with one line per series, as HdrHistogram's plots. Returns 0 or -errno. */
int zr_svg_latency_spectrum(const char *path, const char *title, const zr_svg_series_t *s, unsigned n)
	__attribute__((warn_unused_result));
/* Values over time, one line per series (Gbit/s). */
int zr_svg_time_series(const char *path, const char *title, const char *unit, const zr_svg_series_t *s,
		       unsigned n) __attribute__((warn_unused_result));
/* Horizontal bars, one per label (e.g. CPU-s per GB per scenario). */
int zr_svg_bars(const char *path, const char *title, const char *unit, const char *const *labels,
		const double *values, unsigned n) __attribute__((warn_unused_result));
/* The plot for one client run: spectrum for rr/crr, throughput for stream. */
int zr_bench_report_svg(const char *path, const zr_bench_opts_t *o, const zr_bench_result_t *r)
	__attribute__((warn_unused_result));

/* --- engine.c */
/* Parses `zring-bench MODE [OPTIONS]` (argv[1] is the mode) into o with the
 * defaults above. Returns 0, or -EINVAL with a message naming the argument
 * in err ("--rate: required for rr", "--connections: 'x' is not a number"). */
int zr_bench_parse_args(int argc, char **argv, zr_bench_opts_t *o, char *err, size_t cap)
	__attribute__((warn_unused_result));
/* Runs a client mode (stream, rr, crr) to completion (warm-up, then
 * duration_s) on o->threads threads, one io_uring each. Returns 0 (errors
 * during the run are counted in r, not returned) or a negative errno when it
 * could not run at all (reason in err). Shows progress when o->progress. */
int zr_bench_run(const zr_bench_opts_t *o, zr_bench_result_t *r, char *err, size_t cap)
	__attribute__((warn_unused_result));
void zr_bench_result_free(zr_bench_result_t *r);

/* --- server.c: echo and sink servers on their own threads (one io_uring
 * each), for the CLI modes and the suite. */
typedef struct zr_bench_server zr_bench_server_t;
/* Starts an echo (o->mode == ZR_BENCH_ECHO) or sink server on o->listen
 * (port 0 picks one). Returns 0 or -errno (reason in err). */
int zr_bench_server_start(const zr_bench_opts_t *o, zr_bench_server_t **out, char *err, size_t cap)
	__attribute__((warn_unused_result));
unsigned short zr_bench_server_port(const zr_bench_server_t *s);
/* Totals so far (any thread may call; approximate while running). */
void zr_bench_server_totals(const zr_bench_server_t *s, uint64_t *bytes_in, uint64_t *bytes_out,
			    uint64_t *requests, uint64_t *connections);
void zr_bench_server_stop(zr_bench_server_t *s); /* joins its threads, frees */

/* --- suite.c and crypto_bench.c: whole subcommands */
int zr_bench_suite_main(int argc, char **argv);	 /* argv[0] = "suite" */
int zr_bench_crypto_main(int argc, char **argv); /* argv[0] = "crypto" */

#endif
