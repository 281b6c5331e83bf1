/* What a run reports: the table a person reads, the JSON a script reads, and
 * the environment both carry so a figure is never separated from the machine
 * and command that produced it. Figures are decimal (1 GB = 10^9 bytes,
 * 1 Gbit/s = 10^9 bit/s), as iperf3 and the README's tables use. */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "perf/bench.h"

#ifndef ZR_VERSION
#define ZR_VERSION "unknown"
#endif

#define SERIES_INTERVAL_S 0.1

static void copy(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

void zr_bench_env_fill(zr_bench_env_t *env, const char *command_line)
{
	memset(env, 0, sizeof(*env));
	copy(env->version, sizeof(env->version), ZR_VERSION);
	copy(env->command_line, sizeof(env->command_line), command_line);
	copy(env->cpu_model, sizeof(env->cpu_model), "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f) {
		char line[512];
		while (fgets(line, sizeof(line), f)) {
			char *colon = strchr(line, ':');
			if (strncmp(line, "model name", 10) != 0 || !colon)
				continue;
			colon += 1 + strspn(colon + 1, " \t");
			colon[strcspn(colon, "\n")] = 0;
			copy(env->cpu_model, sizeof(env->cpu_model), colon);
			break;
		}
		fclose(f);
	}
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	env->cores = cores > 0 ? (unsigned)cores : 1;
	struct utsname u;
	copy(env->kernel, sizeof(env->kernel), uname(&u) == 0 ? u.release : "unknown");
	time_t now = time(NULL);
	struct tm tm;
	if (gmtime_r(&now, &tm))
		strftime(env->started_at, sizeof(env->started_at), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

const char *zr_bench_mode_name(zr_bench_mode_t m)
{
	static const char *const names[] = {"stream", "rr", "crr", "echo", "sink"};
	return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "unknown";
}

const char *zr_bench_error_name(zr_bench_error_t e)
{
	static const char *const names[ZR_BENCH_ERR_COUNT] = {"connect", "socks5",   "reset",
							      "timeout", "protocol", "other"};
	return (unsigned)e < ZR_BENCH_ERR_COUNT ? names[e] : "unknown";
}

static const char *direction_name(zr_bench_direction_t d)
{
	return d == ZR_BENCH_UP ? "up" : d == ZR_BENCH_DOWN ? "down" : d == ZR_BENCH_BOTH ? "both" : "unknown";
}

/* Bytes the stream figures count: what crossed the target either way. */
static uint64_t moved(const zr_bench_result_t *r)
{
	return r->bytes_sent + r->bytes_received;
}

static double per_s(double x, double elapsed)
{
	return elapsed > 0 ? x / elapsed : 0;
}

static uint64_t errors_total(const zr_bench_result_t *r)
{
	uint64_t n = 0;
	for (int e = 0; e < ZR_BENCH_ERR_COUNT; e++)
		n += r->errors[e];
	return n;
}

/* ns in the unit that keeps 3-4 significant digits readable */
static const char *fmt_ns(char *buf, size_t cap, double ns)
{
	if (ns < 1e3)
		snprintf(buf, cap, "%.0f ns", ns);
	else if (ns < 1e6)
		snprintf(buf, cap, "%.1f \xc2\xb5s", ns / 1e3);
	else if (ns < 1e9)
		snprintf(buf, cap, "%.2f ms", ns / 1e6);
	else
		snprintf(buf, cap, "%.2f s", ns / 1e9);
	return buf;
}

/* "ip:port" ("[ip6]:port"), or `unset` when the address is not set */
static const char *addr_text(char *buf, size_t cap, const struct sockaddr_storage *ss, socklen_t len, const char *unset)
{
	char host[NI_MAXHOST], port[NI_MAXSERV];
	if (!len || getnameinfo((const struct sockaddr *)ss, len, host, sizeof(host), port, sizeof(port),
				NI_NUMERICHOST | NI_NUMERICSERV))
		return unset;
	snprintf(buf, cap, ss->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
	return buf;
}

static void table_what(FILE *out, const zr_bench_opts_t *o, const zr_bench_env_t *env)
{
	fprintf(out, "zring-bench %s: %s\n", env->version, zr_bench_mode_name(o->mode));
	fprintf(out, "  command      %s\n", o->command_line[0] ? o->command_line : env->command_line);
	char via[NI_MAXHOST + 16];
	if (o->mode == ZR_BENCH_ECHO || o->mode == ZR_BENCH_SINK)
		fprintf(out, "  listen       %s\n", addr_text(via, sizeof(via), &o->listen, o->listen_len, "?"));
	else if (o->via_socks5)
		fprintf(out, "  target       %s via SOCKS5 %s\n", o->target_text,
			addr_text(via, sizeof(via), &o->socks5, o->socks5_len, "?"));
	else
		fprintf(out, "  target       %s\n", o->target_text);
	fprintf(out, "  load         %u connection%s on %u thread%s", o->connections, o->connections == 1 ? "" : "s",
		o->threads, o->threads == 1 ? "" : "s");
	if (o->mode == ZR_BENCH_STREAM)
		fprintf(out, ", %u B sends, direction %s\n", o->size, direction_name(o->direction));
	else if (o->mode == ZR_BENCH_CRR && !(o->rate > 0))
		fprintf(out, ", as fast as possible, request %u B, response %u B\n", o->request_len, o->response_len);
	else
		fprintf(out, ", %.0f req/s, request %u B, response %u B\n", o->rate, o->request_len, o->response_len);
	fprintf(out, "  duration     %.1f s measured after %.1f s warm-up\n", o->duration_s, o->warmup_s);
	fprintf(out, "  host         %s, %u cores, Linux %s\n", env->cpu_model, env->cores, env->kernel);
	fprintf(out, "  started      %s\n", env->started_at);
}

static void table_stream(FILE *out, const zr_bench_result_t *r)
{
	double bytes = (double)moved(r);
	fprintf(out, "  throughput   %.2f Gbit/s (%.1f MB/s)\n", per_s(bytes * 8 / 1e9, r->elapsed_s),
		per_s(bytes / 1e6, r->elapsed_s));
	fprintf(out, "  bytes        %llu sent, %llu received in %.2f s\n", (unsigned long long)r->bytes_sent,
		(unsigned long long)r->bytes_received, r->elapsed_s);
	if (!r->n_conns || !r->per_conn_bytes)
		return;
	double min = INFINITY, max = 0, sum = 0;
	for (unsigned i = 0; i < r->n_conns; i++) {
		double g = per_s((double)r->per_conn_bytes[i] * 8 / 1e9, r->elapsed_s);
		min = fmin(min, g);
		max = fmax(max, g);
		sum += g;
	}
	fprintf(out, "  per conn     min %.2f  mean %.2f  max %.2f Gbit/s over %u connections\n", min, sum / r->n_conns,
		max, r->n_conns);
}

static void table_rr(FILE *out, const zr_bench_opts_t *o, const zr_bench_result_t *r)
{
	double achieved = per_s((double)r->responses_received, r->elapsed_s);
	if (o->rate > 0)
		fprintf(out, "  rate         %.1f responses/s achieved of %.1f requested (%.1f%%)\n", achieved, o->rate,
			100 * achieved / o->rate);
	else
		fprintf(out, "  rate         %.1f responses/s (as fast as possible)\n", achieved);
	fprintf(out, "  requests     %llu sent, %llu responses in %.2f s\n", (unsigned long long)r->requests_sent,
		(unsigned long long)r->responses_received, r->elapsed_s);
	if (o->mode == ZR_BENCH_CRR)
		fprintf(out, "  connections  %llu opened, %llu completed\n", (unsigned long long)r->connections_opened,
			(unsigned long long)r->connections_completed);
	if (!r->latency.count) {
		fprintf(out, "  latency      no responses\n");
		return;
	}
	static const double ps[] = {50, 90, 99, 99.9};
	char buf[32];
	fprintf(out, "  latency     ");
	for (unsigned i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
		fprintf(out, " p%g %s ", ps[i],
			fmt_ns(buf, sizeof(buf), (double)zr_hist_percentile(&r->latency, ps[i])));
	fprintf(out, " max %s\n", fmt_ns(buf, sizeof(buf), (double)r->latency.max));
	fprintf(out, "               (from each request's scheduled send time, so queueing behind a slow response "
		     "counts)\n");
}

void zr_bench_report_table(FILE *out, const zr_bench_opts_t *o, const zr_bench_result_t *r, const zr_bench_env_t *env)
{
	table_what(out, o, env);
	fprintf(out, "results\n");
	if (r->mode == ZR_BENCH_STREAM)
		table_stream(out, r);
	else if (r->mode == ZR_BENCH_RR || r->mode == ZR_BENCH_CRR)
		table_rr(out, o, r);
	uint64_t errors = errors_total(r);
	if (!errors) {
		fprintf(out, "errors: none\n");
	} else {
		fprintf(out, "errors: %llu\n", (unsigned long long)errors);
		for (int e = 0; e < ZR_BENCH_ERR_COUNT; e++)
			fprintf(out, "  %-12s %llu\n", zr_bench_error_name(e), (unsigned long long)r->errors[e]);
	}
	double cpu = r->cpu_user_s + r->cpu_sys_s;
	fprintf(out, "generator: %u thread%s, CPU %.2f s user + %.2f s sys", r->threads, r->threads == 1 ? "" : "s",
		r->cpu_user_s, r->cpu_sys_s);
	if (r->mode == ZR_BENCH_STREAM && moved(r))
		fprintf(out, " = %.2f CPU-s per GB", cpu / ((double)moved(r) / 1e9));
	else if (r->responses_received)
		fprintf(out, " = %.3f CPU-s per 1000 requests", cpu / ((double)r->responses_received / 1000));
	fprintf(out, "; busiest thread %.0f%% busy\n", 100 * r->busiest_thread_util);
	if (r->saturated)
		fprintf(out,
			"WARNING: generator saturated a core (busiest thread %.0f%% busy): figures measure the "
			"generator, not the target; add --threads or connections\n",
			100 * r->busiest_thread_util);
}

static void json_env(zr_json_t *j, const zr_bench_env_t *env)
{
	zr_json_object_begin(j, "env");
	zr_json_str(j, "version", env->version);
	zr_json_str(j, "cpu_model", env->cpu_model);
	zr_json_uint(j, "cores", env->cores);
	zr_json_str(j, "kernel", env->kernel);
	zr_json_str(j, "command_line", env->command_line);
	zr_json_str(j, "started_at", env->started_at);
	zr_json_object_end(j);
}

static void json_options(zr_json_t *j, const zr_bench_opts_t *o)
{
	zr_json_object_begin(j, "options");
	zr_json_str(j, "mode", zr_bench_mode_name(o->mode));
	zr_json_str(j, "target", o->target_text);
	char buf[NI_MAXHOST + 16];
	zr_json_bool(j, "via_socks5", o->via_socks5);
	zr_json_str(j, "socks5", o->via_socks5 ? addr_text(buf, sizeof(buf), &o->socks5, o->socks5_len, NULL) : NULL);
	zr_json_str(j, "bind", o->has_bind ? addr_text(buf, sizeof(buf), &o->bind, o->bind_len, NULL) : NULL);
	zr_json_str(j, "listen", addr_text(buf, sizeof(buf), &o->listen, o->listen_len, NULL));
	zr_json_uint(j, "connections", o->connections);
	zr_json_uint(j, "threads", o->threads);
	zr_json_num(j, "duration_s", o->duration_s);
	zr_json_num(j, "warmup_s", o->warmup_s);
	zr_json_uint(j, "size", o->size);
	zr_json_str(j, "direction", direction_name(o->direction));
	zr_json_num(j, "rate", o->rate);
	zr_json_uint(j, "request_len", o->request_len);
	zr_json_uint(j, "response_len", o->response_len);
	zr_json_num(j, "timeout_s", o->timeout_s);
	zr_json_str(j, "json_path", o->json_path);
	zr_json_str(j, "svg_path", o->svg_path);
	zr_json_bool(j, "progress", o->progress);
	zr_json_bool(j, "quiet", o->quiet);
	zr_json_str(j, "command_line", o->command_line);
	zr_json_object_end(j);
}

static void json_latency(zr_json_t *j, const zr_hist_t *h)
{
	static const struct {
		const char *key;
		double p;
	} ps[] = {{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p99_9", 99.9}, {"p99_99", 99.99}};
	zr_json_object_begin(j, "latency_us");
	zr_json_uint(j, "count", h->count);
	zr_json_uint(j, "clamped", h->clamped);
	for (unsigned i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
		zr_json_num(j, ps[i].key, h->count ? (double)zr_hist_percentile(h, ps[i].p) / 1e3 : NAN);
	zr_json_num(j, "min", h->count ? (double)h->min / 1e3 : NAN);
	zr_json_num(j, "max", h->count ? (double)h->max / 1e3 : NAN);
	zr_json_num(j, "mean", h->count ? zr_hist_mean(h) / 1e3 : NAN);
	zr_json_object_end(j);
}

void zr_bench_report_json(zr_json_t *j, const char *key, const zr_bench_opts_t *o, const zr_bench_result_t *r,
			  const zr_bench_env_t *env)
{
	double cpu = r->cpu_user_s + r->cpu_sys_s, bytes = (double)moved(r);
	zr_json_object_begin(j, key);
	zr_json_str(j, "schema", "zring-bench/1");
	zr_json_str(j, "mode", zr_bench_mode_name(r->mode));
	json_env(j, env);
	json_options(j, o);
	zr_json_num(j, "elapsed_s", r->elapsed_s);
	zr_json_uint(j, "bytes_sent", r->bytes_sent);
	zr_json_uint(j, "bytes_received", r->bytes_received);
	zr_json_uint(j, "requests_sent", r->requests_sent);
	zr_json_uint(j, "responses_received", r->responses_received);
	zr_json_uint(j, "connections_opened", r->connections_opened);
	zr_json_uint(j, "connections_completed", r->connections_completed);
	zr_json_num(j, "gbps", per_s(bytes * 8 / 1e9, r->elapsed_s));
	zr_json_num(j, "megabytes_per_s", per_s(bytes / 1e6, r->elapsed_s));
	zr_json_num(j, "requests_per_s", per_s((double)r->responses_received, r->elapsed_s));
	json_latency(j, &r->latency);
	zr_json_object_begin(j, "errors");
	for (int e = 0; e < ZR_BENCH_ERR_COUNT; e++)
		zr_json_uint(j, zr_bench_error_name(e), r->errors[e]);
	zr_json_uint(j, "total", errors_total(r));
	zr_json_object_end(j);
	zr_json_array_begin(j, "per_connection_bytes");
	for (unsigned i = 0; r->per_conn_bytes && i < r->n_conns; i++)
		zr_json_uint(j, NULL, r->per_conn_bytes[i]);
	zr_json_array_end(j);
	zr_json_num(j, "series_interval_s", SERIES_INTERVAL_S);
	zr_json_array_begin(j, "series_gbps");
	for (unsigned i = 0; i < r->n_series && i < ZR_BENCH_SERIES_MAX; i++)
		zr_json_num(j, NULL, r->series_gbps[i]);
	zr_json_array_end(j);
	zr_json_object_begin(j, "generator");
	zr_json_uint(j, "threads", r->threads);
	zr_json_num(j, "cpu_user_s", r->cpu_user_s);
	zr_json_num(j, "cpu_sys_s", r->cpu_sys_s);
	zr_json_num(j, "cpu_s_per_gb", bytes > 0 ? cpu / (bytes / 1e9) : NAN);
	zr_json_num(j, "cpu_s_per_1000_requests",
		    r->responses_received ? cpu / ((double)r->responses_received / 1000) : NAN);
	zr_json_num(j, "busiest_thread_util", r->busiest_thread_util);
	zr_json_bool(j, "saturated", r->saturated);
	zr_json_object_end(j);
	zr_json_object_end(j);
}

int zr_bench_report_json_file(const char *path, const zr_bench_opts_t *o, const zr_bench_result_t *r,
			      const zr_bench_env_t *env)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	zr_json_t j;
	zr_json_init(&j, f);
	zr_bench_report_json(&j, NULL, o, r, env);
	int err = ferror(f) ? -EIO : 0;
	if (fclose(f) && !err)
		err = errno ? -errno : -EIO;
	return err;
}
