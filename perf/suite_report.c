/* The suite's reports: the table on stdout, report.md (for people),
 * report.json (schema "zring-bench-suite/1", for tools: every scenario with
 * the engine's full per-mode reports, the proxies' CPU and RSS, and the
 * ratios) and three SVGs. Figures a scenario did not produce are NaN here,
 * "-" in the tables and null in the JSON, never 0. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "perf/suite-int.h"

int zr_suite_path_join(char *out, const char *dir, const char *file)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, file);
	return n > 0 && n < PATH_MAX ? 0 : -ENAMETOOLONG;
}

FILE *zr_suite_file_create(const char *path, char *err, size_t cap)
{
	FILE *f = fopen(path, "we");
	if (!f)
		snprintf(err, cap, "cannot create %.900s: %s", path, strerror(errno));
	return f;
}

int zr_suite_file_close(FILE *f, const char *path, char *err, size_t cap)
{
	if (ferror(f) | (fclose(f) != 0)) {
		snprintf(err, cap, "cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static uint64_t errors_total(const zr_bench_result_t *r)
{
	uint64_t n = 0;
	for (int i = 0; i < ZR_BENCH_ERR_COUNT; i++)
		n += r->errors[i];
	return n;
}

/* ------------------------------------------------------------------ */
/* figures */

static double part_elapsed(const zr_suite_part_t *p)
{
	return p->ran && p->res->elapsed_s > 0 ? p->res->elapsed_s : NAN;
}

static double moved_bytes(const zr_suite_part_t *p)
{
	return p->ran ? (double)(p->res->bytes_sent + p->res->bytes_received) : NAN;
}

static double gbps(const zr_suite_scenario_t *sc)
{
	const zr_suite_part_t *p = &sc->parts[ZR_PART_STREAM];
	return moved_bytes(p) * 8 / part_elapsed(p) / 1e9;
}

static double cpu_per_gb(const zr_suite_scenario_t *sc)
{
	const zr_suite_part_t *p = &sc->parts[ZR_PART_STREAM];
	if (!sc->n_procs || !p->ran)
		return NAN;
	return p->proxy_cpu_total / (moved_bytes(p) / 1e9);
}

static double cpu_per_1k(const zr_suite_scenario_t *sc, int mode)
{
	const zr_suite_part_t *p = &sc->parts[mode];
	if (!sc->n_procs || !p->ran || !p->res->responses_received)
		return NAN;
	return p->proxy_cpu_total / ((double)p->res->responses_received / 1000);
}

static double req_per_s(const zr_suite_scenario_t *sc, int mode)
{
	const zr_suite_part_t *p = &sc->parts[mode];
	return p->ran ? (double)p->res->responses_received / part_elapsed(p) : NAN;
}

static double conn_per_s(const zr_suite_scenario_t *sc)
{
	const zr_suite_part_t *p = &sc->parts[ZR_PART_CRR];
	return p->ran ? (double)p->res->connections_completed / part_elapsed(p) : NAN;
}

static double latency_us(const zr_suite_scenario_t *sc, double pct)
{
	const zr_suite_part_t *p = &sc->parts[ZR_PART_RR];
	if (!p->ran || !p->res->latency.count)
		return NAN;
	return (double)zr_hist_percentile(&p->res->latency, pct) / 1e3;
}

static double rss_mib(const zr_suite_scenario_t *sc)
{
	double kb = 0;
	for (unsigned i = 0; i < sc->n_procs; i++)
		if (sc->hwm_kb[i] > 0)
			kb += (double)sc->hwm_kb[i];
	return sc->n_procs && kb > 0 ? kb / 1024 : NAN;
}

static uint64_t scenario_errors(const zr_suite_scenario_t *sc)
{
	uint64_t n = 0;
	for (int m = 0; m < ZR_PART_COUNT; m++)
		if (sc->parts[m].ran)
			n += errors_total(sc->parts[m].res);
	return n;
}

static const char *status_of(const zr_suite_scenario_t *sc)
{
	return sc->skipped[0] ? "skipped" : sc->failed[0] ? "failed" : "ok";
}

static const struct ratio_def {
	const char *key;
	int num, den;
	const char *figure; /* "cpu_per_gb", "rr_p99", "crr_rate" */
} ratio_defs[] = {
	{"zring/haproxy CPU-s per GB", ZR_SC_ZRING, ZR_SC_HAPROXY, "cpu_per_gb"},
	{"zring/haproxy rr p99", ZR_SC_ZRING, ZR_SC_HAPROXY, "rr_p99"},
	{"zring/haproxy crr rate", ZR_SC_ZRING, ZR_SC_HAPROXY, "crr_rate"},
	{"zring-hbone/haproxy-mtls CPU-s per GB", ZR_SC_HBONE, ZR_SC_HAPROXY_MTLS, "cpu_per_gb"},
	{"zring-hbone/haproxy-mtls rr p99", ZR_SC_HBONE, ZR_SC_HAPROXY_MTLS, "rr_p99"},
	{"zring-hbone/haproxy-mtls crr rate", ZR_SC_HBONE, ZR_SC_HAPROXY_MTLS, "crr_rate"},
	{"zring-hbone/zring-hbone-openssl CPU-s per GB", ZR_SC_HBONE, ZR_SC_HBONE_OPENSSL, "cpu_per_gb"},
	{"zring-hbone-dpdk/zring-hbone CPU-s per GB", ZR_SC_HBONE_DPDK, ZR_SC_HBONE, "cpu_per_gb"},
};
#define N_RATIOS (sizeof(ratio_defs) / sizeof(ratio_defs[0]))

static double figure(const zr_suite_scenario_t *sc, const char *which)
{
	if (!sc->ran || sc->failed[0])
		return NAN;
	if (strcmp(which, "cpu_per_gb") == 0)
		return cpu_per_gb(sc);
	if (strcmp(which, "rr_p99") == 0)
		return latency_us(sc, 99);
	return conn_per_s(sc);
}

static double ratio(const zr_suite_t *s, const struct ratio_def *r)
{
	double a = figure(&s->sc[r->num], r->figure), b = figure(&s->sc[r->den], r->figure);
	return isfinite(a) && isfinite(b) && b > 0 ? a / b : NAN;
}

/* ------------------------------------------------------------------ */
/* reports */

static const char *num(char *buf, size_t cap, double v, int decimals)
{
	if (!isfinite(v))
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%.*f", decimals, v);
	return buf;
}

#define N_COLS 11
static const char *const col_names[N_COLS] = {
	"Gbit/s",      "CPU-s/GB",   "rr req/s",     "p50 us",	     "p99 us", "p99.9 us",
	"rr CPU-s/1k", "crr conn/s", "crr CPU-s/1k", "peak RSS MiB", "errors",
};

static void row_cells(const zr_suite_scenario_t *sc, char cells[N_COLS][32])
{
	num(cells[0], 32, gbps(sc), 2);
	num(cells[1], 32, cpu_per_gb(sc), 3);
	num(cells[2], 32, req_per_s(sc, ZR_PART_RR), 0);
	num(cells[3], 32, latency_us(sc, 50), 1);
	num(cells[4], 32, latency_us(sc, 99), 1);
	num(cells[5], 32, latency_us(sc, 99.9), 1);
	num(cells[6], 32, cpu_per_1k(sc, ZR_PART_RR), 4);
	num(cells[7], 32, conn_per_s(sc), 0);
	num(cells[8], 32, cpu_per_1k(sc, ZR_PART_CRR), 4);
	num(cells[9], 32, rss_mib(sc), 1);
	snprintf(cells[10], 32, "%llu", (unsigned long long)scenario_errors(sc));
}

void zr_suite_report_print(const zr_suite_t *s, FILE *f)
{
	fprintf(f, "%-20s", "scenario");
	for (int c = 0; c < N_COLS; c++)
		fprintf(f, " %12s", col_names[c]);
	fputc('\n', f);
	for (int i = 0; i < ZR_SC_COUNT; i++) {
		const zr_suite_scenario_t *sc = &s->sc[i];
		if (!s->o.want[i])
			continue;
		fprintf(f, "%-20s", sc->def->name);
		if (sc->skipped[0]) {
			fprintf(f, " skipped: %s\n", sc->skipped);
			continue;
		}
		char cells[N_COLS][32];
		row_cells(sc, cells);
		for (int c = 0; c < N_COLS; c++)
			fprintf(f, " %12s", cells[c]);
		if (sc->failed[0])
			fprintf(f, "  FAILED: %s", sc->failed);
		fputc('\n', f);
	}
	for (size_t r = 0; r < N_RATIOS; r++) {
		double v = ratio(s, &ratio_defs[r]);
		if (isfinite(v))
			fprintf(f, "%s: %.2fx\n", ratio_defs[r].key, v);
	}
	for (unsigned w = 0; w < s->n_warnings; w++)
		fprintf(f, "warning: %s\n", s->warnings[w]);
}

static void md_text(FILE *f, const char *text)
{
	for (; *text; text++) {
		if (*text == '|' || *text == '\\' || *text == '`' || *text == '*' || *text == '_')
			fputc('\\', f);
		fputc(*text == '\n' ? ' ' : *text, f);
	}
}

static int write_markdown(const zr_suite_t *s, const char *path, char *err, size_t cap)
{
	FILE *f = zr_suite_file_create(path, err, cap);
	if (!f)
		return -1;
	fprintf(f, "# zring-bench suite\n\n| scenario |");
	for (int c = 0; c < N_COLS; c++)
		fprintf(f, " %s |", col_names[c]);
	fprintf(f, "\n|---|");
	for (int c = 0; c < N_COLS; c++)
		fprintf(f, "---:|");
	fputc('\n', f);
	for (int i = 0; i < ZR_SC_COUNT; i++) {
		const zr_suite_scenario_t *sc = &s->sc[i];
		if (!s->o.want[i])
			continue;
		fprintf(f, "| %s |", sc->def->name);
		if (sc->skipped[0]) {
			fprintf(f, " skipped: ");
			md_text(f, sc->skipped);
			fprintf(f, " |");
			for (int c = 1; c < N_COLS; c++)
				fprintf(f, " |");
			fputc('\n', f);
			continue;
		}
		char cells[N_COLS][32];
		row_cells(sc, cells);
		for (int c = 0; c < N_COLS; c++)
			fprintf(f, " %s |", cells[c]);
		fputc('\n', f);
	}
	fprintf(f, "\nCPU-s: utime + stime of the scenario's proxy processes (summed) during the measured part only; "
		   "per GB moved (stream) and per 1,000 completed requests (rr, crr). Peak RSS: VmHWM summed over the "
		   "proxy processes. Latency: from each request's intended send time to its response's last byte.\n");
	fprintf(f,
		"\n## Per proxy process\n\n| scenario | process | stream CPU-s/GB | rr CPU-s/1k | crr CPU-s/1k | peak RSS MiB "
		"|\n|---|---|---:|---:|---:|---:|\n");
	for (int i = 0; i < ZR_SC_COUNT; i++) {
		const zr_suite_scenario_t *sc = &s->sc[i];
		for (unsigned k = 0; s->o.want[i] && !sc->failed[0] && k < sc->n_procs; k++) {
			const zr_suite_part_t *st = &sc->parts[ZR_PART_STREAM], *rr = &sc->parts[ZR_PART_RR],
					      *crr = &sc->parts[ZR_PART_CRR];
			char a[32], b[32], c[32], d[32];
			fprintf(f, "| %s | %s | %s | %s | %s | %s |\n", sc->def->name, sc->procs[k].name,
				num(a, sizeof(a), st->ran ? st->proxy_cpu[k] / (moved_bytes(st) / 1e9) : NAN, 3),
				num(b, sizeof(b),
				    rr->ran && rr->res->responses_received ?
					    rr->proxy_cpu[k] / ((double)rr->res->responses_received / 1000) :
					    NAN,
				    4),
				num(c, sizeof(c),
				    crr->ran && crr->res->responses_received ?
					    crr->proxy_cpu[k] / ((double)crr->res->responses_received / 1000) :
					    NAN,
				    4),
				num(d, sizeof(d), sc->hwm_kb[k] > 0 ? (double)sc->hwm_kb[k] / 1024 : NAN, 1));
		}
	}
	bool any_failed = false;
	for (int i = 0; i < ZR_SC_COUNT; i++)
		any_failed |= s->sc[i].failed[0] != '\0';
	if (any_failed) {
		fprintf(f, "\n## Failures\n\n");
		for (int i = 0; i < ZR_SC_COUNT; i++)
			if (s->sc[i].failed[0]) {
				fprintf(f, "- %s: ", s->sc[i].def->name);
				md_text(f, s->sc[i].failed);
				fputc('\n', f);
			}
	}
	fprintf(f, "\n## Ratios (in the same run)\n\n| ratio | value |\n|---|---:|\n");
	for (size_t r = 0; r < N_RATIOS; r++) {
		char v[32];
		fprintf(f, "| %s | %s |\n", ratio_defs[r].key, num(v, sizeof(v), ratio(s, &ratio_defs[r]), 2));
	}
	fprintf(f, "\nLower is better for CPU and p99, higher for the crr rate. crr through the zring HBONE pair "
		   "opens a new HTTP/2 stream on a pooled mTLS connection; through the HAProxy mTLS pair every "
		   "connection is a new TLS handshake (HAProxy does not pool connections between its frontends), so "
		   "that ratio compares the two designs, not the same work.\n");
	if (s->n_warnings) {
		fprintf(f, "\n## Warnings\n\n");
		for (unsigned w = 0; w < s->n_warnings; w++) {
			fprintf(f, "- ");
			md_text(f, s->warnings[w]);
			fputc('\n', f);
		}
	}
	fprintf(f, "\n## What was run\n\n");
	fprintf(f, "- command: `%s`\n", s->env.command_line);
	fprintf(f, "- date: %s\n", s->env.started_at);
	fprintf(f, "- zring-bench: %s\n", s->env.version);
	fprintf(f, "- zring: %s (`%s`)\n", s->zring_version[0] ? s->zring_version : "-", s->zring[0] ? s->zring : "-");
	fprintf(f, "- haproxy: %s\n", s->haproxy_version[0] ? s->haproxy_version : "not installed");
	fprintf(f, "- CPU: %s, %u online CPUs\n", s->env.cpu_model, s->env.cores);
	fprintf(f, "- kernel: %s\n", s->env.kernel);
	fprintf(f,
		"- stream: %g s, 1 connection, 128 KiB sends, up; rr: %g s at %g req/s over %u connections, 1 KiB "
		"each way; crr: %g s, %u connections in flight, 64 B each way; warm-up %g s before each (excluded)\n",
		s->o.stream_s, s->o.rr_s, s->o.rr_rate, s->o.rr_conns, s->o.crr_s, s->o.crr_conns, s->o.warmup_s);
	fprintf(f, "- proxies: zring `workers: 1` per node, HAProxy `nbthread 1`; HBONE and HAProxy mTLS use TLS 1.3 "
		   "with " ZR_SUITE_CIPHER ", ECDSA P-256 certificates made for this run\n");
	fprintf(f, "- scenarios:\n");
	for (int i = 0; i < ZR_SC_COUNT; i++)
		if (s->o.want[i])
			fprintf(f, "  - %s: %s\n", zr_suite_defs[i].name, zr_suite_defs[i].what);
	fprintf(f, "\nPlots: latency.svg (rr latency spectrum), throughput.svg (stream over time), cpu-per-gb.svg. "
		   "Logs and configurations: logs/.\n");
	return zr_suite_file_close(f, path, err, cap);
}

static void json_part(const zr_suite_t *s, zr_json_t *j, const zr_suite_scenario_t *sc, int mode)
{
	const zr_suite_part_t *p = &sc->parts[mode];
	if (!p->ran)
		return;
	const zr_bench_result_t *r = p->res;
	zr_json_object_begin(j, zr_suite_mode_keys[mode]);
	zr_json_num(j, "elapsed_s", r->elapsed_s);
	zr_json_uint(j, "errors", errors_total(r));
	zr_json_bool(j, "saturated", r->saturated);
	if (mode == ZR_PART_STREAM) {
		zr_json_num(j, "gbps", gbps(sc));
		zr_json_uint(j, "bytes", r->bytes_sent + r->bytes_received);
		zr_json_uint(j, "server_bytes", p->server_bytes);
	} else {
		zr_json_num(j, "requests_per_s", req_per_s(sc, mode));
		zr_json_uint(j, "requests", r->responses_received);
		zr_json_uint(j, "server_requests", p->server_requests);
		if (mode == ZR_PART_CRR)
			zr_json_num(j, "connections_per_s", conn_per_s(sc));
		zr_json_object_begin(j, "latency_us");
		static const struct {
			const char *key;
			double pct;
		} pcts[] = {{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p99_9", 99.9}, {"max", 100}};
		for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
			zr_json_num(j, pcts[i].key,
				    r->latency.count ? (double)zr_hist_percentile(&r->latency, pcts[i].pct) / 1e3 :
						       NAN);
		zr_json_object_end(j);
	}
	if (sc->n_procs) {
		zr_json_num(j, "proxy_cpu_s", p->proxy_cpu_total);
		if (mode == ZR_PART_STREAM)
			zr_json_num(j, "proxy_cpu_s_per_gb", cpu_per_gb(sc));
		else
			zr_json_num(j, "proxy_cpu_s_per_1000_requests", cpu_per_1k(sc, mode));
	}
	zr_bench_report_json(j, "report", &p->opts, r, &s->env);
	zr_json_object_end(j);
}

static int write_json(const zr_suite_t *s, const char *path, char *err, size_t cap)
{
	FILE *f = zr_suite_file_create(path, err, cap);
	if (!f)
		return -1;
	zr_json_t j;
	zr_json_init(&j, f);
	zr_json_object_begin(&j, NULL);
	zr_json_str(&j, "schema", "zring-bench-suite/1");
	zr_json_object_begin(&j, "env");
	zr_json_str(&j, "version", s->env.version);
	zr_json_str(&j, "cpu_model", s->env.cpu_model);
	zr_json_uint(&j, "cores", s->env.cores);
	zr_json_str(&j, "kernel", s->env.kernel);
	zr_json_str(&j, "command_line", s->env.command_line);
	zr_json_str(&j, "started_at", s->env.started_at);
	zr_json_str(&j, "zring", s->zring[0] ? s->zring : NULL);
	zr_json_str(&j, "zring_version", s->zring_version[0] ? s->zring_version : NULL);
	zr_json_str(&j, "haproxy", s->haproxy[0] ? s->haproxy : NULL);
	zr_json_str(&j, "haproxy_version", s->haproxy_version[0] ? s->haproxy_version : NULL);
	zr_json_object_end(&j);
	zr_json_object_begin(&j, "options");
	zr_json_bool(&j, "quick", s->o.quick);
	zr_json_num(&j, "stream_s", s->o.stream_s);
	zr_json_num(&j, "rr_s", s->o.rr_s);
	zr_json_num(&j, "crr_s", s->o.crr_s);
	zr_json_num(&j, "warmup_s", s->o.warmup_s);
	zr_json_num(&j, "rr_rate", s->o.rr_rate);
	zr_json_uint(&j, "rr_connections", s->o.rr_conns);
	zr_json_uint(&j, "crr_connections", s->o.crr_conns);
	zr_json_object_end(&j);
	zr_json_object_begin(&j, "scenarios");
	for (int i = 0; i < ZR_SC_COUNT; i++) {
		const zr_suite_scenario_t *sc = &s->sc[i];
		if (!s->o.want[i])
			continue;
		zr_json_object_begin(&j, sc->def->name);
		zr_json_str(&j, "description", sc->def->what);
		zr_json_str(&j, "status", status_of(sc));
		zr_json_str(&j, "skipped", sc->skipped[0] ? sc->skipped : NULL);
		zr_json_str(&j, "failed", sc->failed[0] ? sc->failed : NULL);
		zr_json_array_begin(&j, "proxies");
		for (unsigned k = 0; k < sc->n_procs; k++) {
			zr_json_object_begin(&j, NULL);
			zr_json_str(&j, "name", sc->procs[k].name);
			zr_json_num(&j, "rss_peak_kb", sc->hwm_kb[k] > 0 ? (double)sc->hwm_kb[k] : NAN);
			zr_json_object_begin(&j, "cpu_s");
			for (int m = 0; m < ZR_PART_COUNT; m++)
				if (sc->parts[m].ran)
					zr_json_num(&j, zr_suite_mode_keys[m], sc->parts[m].proxy_cpu[k]);
			zr_json_object_end(&j);
			zr_json_object_end(&j);
		}
		zr_json_array_end(&j);
		for (int m = 0; m < ZR_PART_COUNT; m++)
			json_part(s, &j, sc, m);
		zr_json_object_end(&j);
	}
	zr_json_object_end(&j);
	zr_json_object_begin(&j, "ratios");
	for (size_t r = 0; r < N_RATIOS; r++)
		zr_json_num(&j, ratio_defs[r].key, ratio(s, &ratio_defs[r]));
	zr_json_object_end(&j);
	zr_json_array_begin(&j, "warnings");
	for (unsigned w = 0; w < s->n_warnings; w++)
		zr_json_str(&j, NULL, s->warnings[w]);
	zr_json_array_end(&j);
	zr_json_object_end(&j);
	fputc('\n', f);
	return zr_suite_file_close(f, path, err, cap);
}

static int write_svgs(const zr_suite_t *s, char *err, size_t cap)
{
	zr_svg_series_t lat[ZR_SC_COUNT], tput[ZR_SC_COUNT];
	const char *labels[ZR_SC_COUNT];
	double bars[ZR_SC_COUNT];
	unsigned n_lat = 0, n_tput = 0, n_bars = 0;
	for (int i = 0; i < ZR_SC_COUNT; i++) {
		const zr_suite_scenario_t *sc = &s->sc[i];
		const zr_suite_part_t *rr = &sc->parts[ZR_PART_RR], *st = &sc->parts[ZR_PART_STREAM];
		if (rr->ran && rr->res->latency.count)
			lat[n_lat++] = (zr_svg_series_t){.name = sc->def->name, .hist = &rr->res->latency};
		if (st->ran && st->res->n_series)
			tput[n_tput++] = (zr_svg_series_t){.name = sc->def->name,
							   .values = st->res->series_gbps,
							   .n_values = st->res->n_series,
							   .interval_s = 0.1};
		if (isfinite(cpu_per_gb(sc))) {
			labels[n_bars] = sc->def->name;
			bars[n_bars++] = cpu_per_gb(sc);
		}
	}
	char path[PATH_MAX];
	int rc;
	if (zr_suite_path_join(path, s->out_dir, "latency.svg") ||
	    (rc = zr_svg_latency_spectrum(path, "rr latency by percentile (1 KiB each way, fixed rate)", lat, n_lat)))
		goto fail;
	if (zr_suite_path_join(path, s->out_dir, "throughput.svg") ||
	    (rc = zr_svg_time_series(path, "stream throughput (1 connection)", "Gbit/s", tput, n_tput)))
		goto fail;
	if (zr_suite_path_join(path, s->out_dir, "cpu-per-gb.svg") ||
	    (rc = zr_svg_bars(path, "proxy CPU-seconds per GB moved (stream)", "CPU-s/GB", labels, bars, n_bars)))
		goto fail;
	return 0;
fail:
	snprintf(err, cap, "cannot write %.900s: %s", path, strerror(errno ? errno : EIO));
	return -1;
}

int zr_suite_report_write(const zr_suite_t *s, char *err, size_t cap)
{
	char path[PATH_MAX];
	if (zr_suite_path_join(path, s->out_dir, "report.md") || write_markdown(s, path, err, cap) ||
	    zr_suite_path_join(path, s->out_dir, "report.json") || write_json(s, path, err, cap) ||
	    write_svgs(s, err, cap))
		return -1;
	return 0;
}
