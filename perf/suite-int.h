/* What suite.c (set-up, scenarios, measuring) and suite_report.c (the
 * table, report.md, report.json and the SVGs) share: the scenarios and what
 * each one measured. Main thread only. */
#ifndef ZR_PERF_SUITE_INT_H
#define ZR_PERF_SUITE_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "perf/bench.h"
#include "perf/suite.h"

enum {
	ZR_SC_DIRECT,
	ZR_SC_ZRING,
	ZR_SC_HAPROXY,
	ZR_SC_HBONE,
	ZR_SC_HAPROXY_MTLS,
	ZR_SC_HBONE_OPENSSL,
	ZR_SC_HBONE_DPDK,
	ZR_SC_COUNT
};
/* the measured parts of a scenario */
enum {
	ZR_PART_STREAM,
	ZR_PART_RR,
	ZR_PART_CRR,
	ZR_PART_COUNT
};
#define ZR_SUITE_MAX_PROCS 2 /* proxy processes per scenario */

#define ZR_SUITE_CIPHER "TLS_AES_128_GCM_SHA256" /* both zring's and HAProxy's mTLS */

typedef struct zr_suite_def {
	const char *name;
	const char *what;
	bool needs_zring, needs_haproxy, needs_certs;
} zr_suite_def_t;
extern const zr_suite_def_t zr_suite_defs[ZR_SC_COUNT];
extern const char *const zr_suite_mode_keys[ZR_PART_COUNT]; /* "stream", "rr", "crr" */

typedef struct zr_suite_opts {
	const char *out;
	const char *zring;   /* NULL: next to this executable */
	const char *haproxy; /* NULL: from PATH */
	bool quick;
	double stream_s, rr_s, crr_s, warmup_s;
	double rr_rate;
	unsigned rr_conns, crr_conns;
	bool want[ZR_SC_COUNT];
} zr_suite_opts_t;

/* One measured part of one scenario. */
typedef struct zr_suite_part {
	bool ran;
	zr_bench_opts_t opts;
	zr_bench_result_t *res;
	double proxy_cpu[ZR_SUITE_MAX_PROCS];
	double proxy_cpu_total;
	uint64_t server_bytes, server_requests; /* what the sink / echo server saw */
} zr_suite_part_t;

typedef struct zr_suite_scenario {
	const zr_suite_def_t *def;
	bool ran;
	char skipped[1024];
	char failed[1024];
	zr_suite_proc_t procs[ZR_SUITE_MAX_PROCS];
	unsigned n_procs;
	long hwm_kb[ZR_SUITE_MAX_PROCS];
	zr_suite_part_t parts[ZR_PART_COUNT];
} zr_suite_scenario_t;

typedef struct zr_suite {
	zr_suite_opts_t o;
	zr_bench_env_t env;
	char out_dir[PATH_MAX];
	char log_dir[PATH_MAX];
	char work_dir[PATH_MAX]; /* certificates: removed at the end */
	char zring[PATH_MAX];
	char haproxy[PATH_MAX];
	char zring_version[128];
	char haproxy_version[256];
	bool have_certs;
	zr_suite_certs_t certs;
	zr_bench_server_t *sink[2], *echo[2]; /* [0] plain server, [1] HBONE server */
	zr_suite_scenario_t sc[ZR_SC_COUNT];
	char warnings[8][512];
	unsigned n_warnings;
} zr_suite_t;

/* Prints the results table, the ratios and the warnings (stdout's summary). */
void zr_suite_report_print(const zr_suite_t *s, FILE *f);
/* Writes report.md, report.json, latency.svg, throughput.svg and
 * cpu-per-gb.svg into s->out_dir. Returns 0 or -1 with the reason in err. */
int zr_suite_report_write(const zr_suite_t *s, char *err, size_t cap) __attribute__((warn_unused_result));

/* out = dir/file; -ENAMETOOLONG when it does not fit PATH_MAX. */
int zr_suite_path_join(char *out, const char *dir, const char *file) __attribute__((warn_unused_result));
/* fopen(path, "w"), with a message in err when it fails. */
FILE *zr_suite_file_create(const char *path, char *err, size_t cap);
/* fclose(f), 0 or -1 with a message naming path when anything failed to
 * reach the file. */
int zr_suite_file_close(FILE *f, const char *path, char *err, size_t cap) __attribute__((warn_unused_result));

#endif
