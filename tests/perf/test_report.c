/* zring-bench's reports as their readers see them: the JSON writer's output
 * exactly (escaping, commas, numbers) and as Python's json module parses it,
 * the run report's documented keys and values, SVG files that an XML parser
 * accepts with one line per series, and the table's errors and saturation
 * lines. */
#include <errno.h>
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <unistd.h>

#include "perf/bench.h"
#include "tap.h"

static char dir[] = "/tmp/zr-test-report.XXXXXX";

/* Runs a Python snippet with argv[1] = path; true when it exits 0. The
 * snippets use only double quotes so they can sit inside single quotes. */
static bool py(const char *code, const char *path)
{
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c '%s' '%s'", code, path);
	return system(cmd) == 0;
}

static char *path_of(const char *name)
{
	static char buf[4][256];
	static unsigned next;
	char *p = buf[next++ % 4];
	snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
	return p;
}

/* Writes one compact document with the writer and returns the text. */
static char *compact(void (*write)(zr_json_t *))
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	zr_json_t j;
	zr_json_init(&j, f);
	j.pretty = 0;
	write(&j);
	fclose(f);
	return text;
}

static void doc_escapes(zr_json_t *j)
{
	zr_json_object_begin(j, NULL);
	zr_json_str(j, "q\"b\\s/", "line\nfeed\ttab\r\x01\x1f caf\xc3\xa9 \xe2\x82\xac");
	zr_json_str(j, "bad utf-8",
		    "a\xff"
		    "b\xc0\xaf"
		    "c");
	zr_json_str(j, "null", NULL);
	zr_json_object_end(j);
}

static void doc_numbers(zr_json_t *j)
{
	zr_json_array_begin(j, NULL);
	zr_json_uint(j, NULL, UINT64_MAX);
	zr_json_num(j, NULL, 0.1);
	zr_json_num(j, NULL, 1.0 / 3);
	zr_json_num(j, NULL, 2.5e-7);
	zr_json_num(j, NULL, 42);
	zr_json_num(j, NULL, NAN);
	zr_json_num(j, NULL, -INFINITY);
	zr_json_bool(j, NULL, 1);
	zr_json_bool(j, NULL, 0);
	zr_json_object_begin(j, NULL);
	zr_json_object_end(j);
	zr_json_array_begin(j, NULL);
	zr_json_array_end(j);
	zr_json_array_end(j);
}

static void doc_nested(zr_json_t *j)
{
	zr_json_object_begin(j, NULL);
	zr_json_uint(j, "a", 1);
	zr_json_array_begin(j, "b");
	zr_json_uint(j, NULL, 2);
	zr_json_object_begin(j, NULL);
	zr_json_str(j, "c", "d");
	zr_json_object_end(j);
	zr_json_array_end(j);
	zr_json_object_end(j);
}

static void test_json_writer(void)
{
	char *s = compact(doc_escapes);
	is_str(s,
	       "{\"q\\\"b\\\\s/\":\"line\\nfeed\\ttab\\r\\u0001\\u001f caf\xc3\xa9 \xe2\x82\xac\","
	       "\"bad utf-8\":\"a\\ufffdb\\ufffd\\ufffdc\",\"null\":null}",
	       "strings: quotes, backslash and control characters escaped, UTF-8 kept, invalid bytes U+FFFD");
	free(s);
	s = compact(doc_numbers);
	is_str(s, "[18446744073709551615,0.1,0.33333333333333331,2.5e-07,42,null,null,true,false,{},[]]",
	       "numbers: uint64 exact, shortest round-trip doubles, non-finite is null; empty containers");
	free(s);

	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	zr_json_t j;
	zr_json_init(&j, f);
	doc_nested(&j);
	fclose(f);
	is_str(text, "{\n  \"a\": 1,\n  \"b\": [\n    2,\n    {\n      \"c\": \"d\"\n    }\n  ]\n}\n",
	       "pretty output: 2-space indents, one member per line, trailing newline");
	free(text);

	f = fopen(path_of("writer.json"), "w");
	zr_json_init(&j, f);
	zr_json_array_begin(&j, NULL);
	doc_escapes(&j);
	doc_numbers(&j);
	doc_nested(&j);
	zr_json_array_end(&j);
	fclose(f);
	ok(py("import json,sys; d=json.load(open(sys.argv[1],encoding=\"utf-8\"));"
	      "assert d[0][\"q\\\"b\\\\s/\"]==\"line\\nfeed\\ttab\\r\\x01\\x1f caf\\u00e9 \\u20ac\", d[0];"
	      "assert d[1][0]==2**64-1 and d[1][1]==0.1 and d[1][2]==1/3 and d[1][5] is None, d[1];"
	      "assert d[2]=={\"a\":1,\"b\":[2,{\"c\":\"d\"}]}, d[2]",
	      path_of("writer.json")),
	   "Python's json module reads back the same strings and numbers");
}

static zr_bench_result_t *synthetic(zr_bench_mode_t mode, zr_bench_opts_t *o)
{
	zr_bench_result_t *r = calloc(1, sizeof(*r));
	memset(o, 0, sizeof(*o));
	o->mode = r->mode = mode;
	snprintf(o->target_text, sizeof(o->target_text), "127.0.0.1:9<&>");
	snprintf(o->command_line, sizeof(o->command_line), "zring-bench %s --target '127.0.0.1:9<&>'",
		 zr_bench_mode_name(mode));
	o->connections = 4;
	o->threads = 2;
	o->duration_s = 10;
	o->warmup_s = 1;
	o->size = 131072;
	o->rate = mode == ZR_BENCH_RR ? 20000 : 0;
	o->request_len = o->response_len = 1024;
	o->timeout_s = 5;
	if (mode == ZR_BENCH_RR) {
		struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&o->socks5;
		sa->sin6_family = AF_INET6;
		sa->sin6_port = htons(1080);
		inet_pton(AF_INET6, "::1", &sa->sin6_addr);
		o->socks5_len = sizeof(*sa);
		o->via_socks5 = true;
	}
	r->elapsed_s = 10;
	r->threads = 2;
	r->cpu_user_s = 1.5;
	r->cpu_sys_s = 2.5;
	r->busiest_thread_util = 0.42;
	zr_hist_init(&r->latency);
	if (mode == ZR_BENCH_STREAM) {
		r->bytes_sent = 12500000000ull; /* 10 Gbit/s over 10 s */
		r->n_conns = 4;
		r->per_conn_bytes = calloc(4, sizeof(uint64_t));
		for (unsigned i = 0; i < 4; i++)
			r->per_conn_bytes[i] = 2000000000ull + i * 250000000ull;
		r->n_series = 100;
		for (unsigned i = 0; i < 100; i++)
			r->series_gbps[i] = 9.5 + (i % 10) * 0.1;
	} else {
		r->requests_sent = 200000;
		r->responses_received = 199990;
		r->bytes_sent = r->bytes_received = 199990ull * 1024;
		for (uint64_t i = 1; i <= 199990; i++)
			zr_hist_record(&r->latency, 20000 + i % 1000 * 30 + (i % 1000 == 0 ? 5000000 : 0));
	}
	return r;
}

static void test_report_json(const zr_bench_env_t *env)
{
	zr_bench_opts_t o;
	zr_bench_result_t *r = synthetic(ZR_BENCH_RR, &o);
	r->errors[ZR_BENCH_ERR_TIMEOUT] = 10;
	is(zr_bench_report_json_file(path_of("rr.json"), &o, r, env), 0, "rr JSON report written");
	char code[4096];
	snprintf(
		code, sizeof(code),
		"import json,sys; d=json.load(open(sys.argv[1]));"
		"assert d[\"schema\"]==\"zring-bench/1\" and d[\"mode\"]==\"rr\", d[\"schema\"];"
		"assert set(d[\"env\"])=={\"version\",\"cpu_model\",\"cores\",\"kernel\",\"command_line\",\"started_at\"};"
		"o=d[\"options\"]; assert o[\"target\"]==\"127.0.0.1:9<&>\" and o[\"connections\"]==4 and o[\"rate\"]==20000;"
		"assert o[\"json_path\"] is None and o[\"direction\"]==\"up\" and o[\"socks5\"]==\"[::1]:1080\", o;"
		"assert o[\"bind\"] is None and o[\"listen\"] is None, o;"
		"assert abs(d[\"requests_per_s\"]-19999)<1e-6 and d[\"responses_received\"]==199990;"
		"l=d[\"latency_us\"]; assert all(k in l for k in (\"p50\",\"p90\",\"p99\",\"p99_9\",\"p99_99\",\"max\",\"mean\"));"
		"assert abs(l[\"p50\"]-35.0)<0.35 and l[\"max\"]==5020.0 and abs(l[\"p99_99\"]-5020)<50, l;"
		"assert d[\"errors\"]=={\"connect\":0,\"socks5\":0,\"reset\":0,\"timeout\":10,\"protocol\":0,\"other\":0,\"total\":10};"
		"g=d[\"generator\"]; assert g[\"saturated\"] is False and abs(g[\"cpu_s_per_1000_requests\"]-4/199.99)<1e-9, g;"
		"assert d[\"per_connection_bytes\"]==[] and d[\"series_gbps\"]==[]");
	ok(py(code, path_of("rr.json")),
	   "rr JSON: schema, env, options, rate, latency in us, errors by name, generator");
	free(r);

	r = synthetic(ZR_BENCH_STREAM, &o);
	is(zr_bench_report_json_file(path_of("stream.json"), &o, r, env), 0, "stream JSON report written");
	ok(py("import json,sys; d=json.load(open(sys.argv[1]));"
	      "assert d[\"mode\"]==\"stream\" and abs(d[\"gbps\"]-10)<1e-9 and abs(d[\"megabytes_per_s\"]-1250)<1e-9, d;"
	      "assert d[\"per_connection_bytes\"]==[2000000000,2250000000,2500000000,2750000000];"
	      "assert len(d[\"series_gbps\"])==100 and abs(d[\"series_gbps\"][3]-9.8)<1e-12 and d[\"series_interval_s\"]==0.1;"
	      "assert d[\"latency_us\"][\"p50\"] is None and d[\"errors\"][\"total\"]==0;"
	      "assert abs(d[\"generator\"][\"cpu_s_per_gb\"]-0.32)<1e-9",
	      path_of("stream.json")),
	   "stream JSON: gbps, MB/s, per-connection bytes, series, null latency, CPU per GB");
	is(zr_bench_report_json_file("/nonexistent-dir/x.json", &o, r, env), -ENOENT,
	   "a JSON path in a missing directory is -ENOENT");
	free(r->per_conn_bytes);
	free(r);
}

static const char *svg_check =
	"import sys,xml.dom.minidom as m; d=m.parse(sys.argv[1]); s=d.documentElement;"
	"assert s.tagName==\"svg\" and s.getAttribute(\"viewBox\") and s.getAttribute(\"xmlns\");"
	"assert d.getElementsByTagName(\"title\")[0].firstChild.data.startswith(sys.argv[2]);"
	"n=len(d.getElementsByTagName(\"polyline\")); assert n==int(sys.argv[3]), n;"
	"assert not d.getElementsByTagName(\"script\")";

static bool svg_check_quiet(const char *path, const char *title_start, int polylines, bool quiet)
{
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c '%s' '%s' '%s' %d%s", svg_check, path, title_start, polylines,
		 quiet ? " 2>/dev/null" : "");
	return system(cmd) == 0;
}

static bool svg_ok(const char *path, const char *title_start, int polylines)
{
	return svg_check_quiet(path, title_start, polylines, false);
}

static void test_svg(void)
{
	zr_hist_t *h = malloc(3 * sizeof(*h));
	for (int k = 0; k < 3; k++) {
		zr_hist_init(&h[k]);
		for (uint64_t i = 1; i <= 100000; i++)
			zr_hist_record(&h[k], (uint64_t)(20000 * (k + 1) + i % 997 * 40 * (k + 1)));
	}
	zr_hist_init(&h[2]); /* an empty series still gets its (empty) line */
	zr_svg_series_t s[3] = {{.name = "direct", .hist = &h[0]},
				{.name = "zring <plain & \"fast\">", .hist = &h[1]},
				{.name = "bad \xff utf-8", .hist = &h[2]}};
	is(zr_svg_latency_spectrum(path_of("spectrum.svg"), "rr: A & B", s, 3), 0, "spectrum written");
	ok(svg_ok(path_of("spectrum.svg"), "rr: A & B", 3),
	   "spectrum: well-formed SVG, title, one polyline per series");

	double v1[50], v2[30];
	for (int i = 0; i < 50; i++)
		v1[i] = 9 + sin(i) * 0.5;
	for (int i = 0; i < 30; i++)
		v2[i] = i == 7 ? NAN : 4;
	zr_svg_series_t t[2] = {{.name = "one", .values = v1, .n_values = 50, .interval_s = 0.1},
				{.name = "two", .values = v2, .n_values = 30, .interval_s = 0.1}};
	is(zr_svg_time_series(path_of("series.svg"), "stream <1>", "Gbit/s", t, 2), 0, "time series written");
	ok(svg_ok(path_of("series.svg"), "stream <1>", 2), "time series: well-formed SVG, one polyline per series");
	ok(!svg_check_quiet(path_of("series.svg"), "stream <1>", 3, true),
	   "the SVG check itself rejects a wrong line count");

	const char *labels[] = {"direct", "zring (1 worker)", "haproxy"};
	double values[] = {0.8, 2.25, NAN};
	is(zr_svg_bars(path_of("bars.svg"), "CPU-s per GB", "CPU-s per GB", labels, values, 3), 0, "bars written");
	ok(svg_ok(path_of("bars.svg"), "CPU-s per GB", 0), "bars: well-formed SVG");
	is(zr_svg_bars("/nonexistent-dir/b.svg", "x", "y", labels, values, 3), -ENOENT, "bars: missing dir is -ENOENT");

	zr_bench_opts_t o;
	zr_bench_result_t *r = synthetic(ZR_BENCH_RR, &o);
	is(zr_bench_report_svg(path_of("rr.svg"), &o, r), 0, "rr run plot written");
	ok(svg_ok(path_of("rr.svg"), "zring-bench rr: latency", 1), "rr run plot is a latency spectrum");
	free(r);
	r = synthetic(ZR_BENCH_STREAM, &o);
	is(zr_bench_report_svg(path_of("stream.svg"), &o, r), 0, "stream run plot written");
	ok(svg_ok(path_of("stream.svg"), "zring-bench stream: throughput", 1), "stream run plot is a time series");
	free(r->per_conn_bytes);
	free(r);
	free(h);
}

static char *table(const zr_bench_opts_t *o, const zr_bench_result_t *r, const zr_bench_env_t *env)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	zr_bench_report_table(f, o, r, env);
	fclose(f);
	return text;
}

static void test_table(const zr_bench_env_t *env)
{
	zr_bench_opts_t o;
	zr_bench_result_t *r = synthetic(ZR_BENCH_RR, &o);
	char *t = table(&o, r, env);
	ok(strstr(t, "errors: none\n") != NULL, "rr table without errors says 'errors: none'");
	ok(strstr(t, "127.0.0.1:9<&> via SOCKS5 [::1]:1080") && strstr(t, "4 connections on 2 threads") &&
		   strstr(t, env->cpu_model),
	   "rr table says what was run and where");
	ok(strstr(t, "19999.0 responses/s achieved of 20000.0 requested") && strstr(t, "p99.9 "),
	   "rr table: achieved vs requested rate and latency percentiles");
	ok(!strstr(t, "WARNING"), "no saturation warning when the generator had headroom");
	free(t);
	r->saturated = true;
	r->busiest_thread_util = 0.97;
	r->errors[ZR_BENCH_ERR_RESET] = 3;
	t = table(&o, r, env);
	ok(strstr(t, "WARNING: generator saturated a core (busiest thread 97% busy)") != NULL,
	   "a saturated generator gets a WARNING line");
	ok(strstr(t, "errors: 3\n") && strstr(t, "reset") && !strstr(t, "errors: none"), "errors are listed by kind");
	for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n"))
		diag("%s", line); /* for a person reviewing the layout */
	free(t);
	free(r);

	r = synthetic(ZR_BENCH_STREAM, &o);
	t = table(&o, r, env);
	ok(strstr(t, "10.00 Gbit/s (1250.0 MB/s)") && strstr(t, "min 1.60  mean 1.90  max 2.20 Gbit/s"),
	   "stream table: total and per-connection Gbit/s");
	ok(strstr(t, "0.32 CPU-s per GB") != NULL, "stream table: generator CPU per GB");
	free(t);
	free(r->per_conn_bytes);
	free(r);
}

int main(void)
{
	if (!mkdtemp(dir))
		skip_all("no temporary directory");
	zr_bench_env_t env;
	zr_bench_env_fill(&env, "zring-bench test");
	is_str(env.version, ZR_VERSION, "env: version is the build's");
	ok(env.cores >= 1 && env.kernel[0] && env.cpu_model[0], "env: cores, kernel and CPU model filled");
	ok(strlen(env.started_at) == 20 && env.started_at[10] == 'T' && env.started_at[19] == 'Z',
	   "env: start time is UTC ISO 8601 (%s)", env.started_at);
	is_str(zr_bench_mode_name(ZR_BENCH_CRR), "crr", "mode names");
	is_str(zr_bench_error_name(ZR_BENCH_ERR_SOCKS5), "socks5", "error names");

	test_json_writer();
	test_report_json(&env);
	test_svg();
	test_table(&env);

	char cmd[128];
	if (getenv("ZR_KEEP_TEST_OUTPUT")) /* to look at the plots */
		return done_testing();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		diag("could not remove %s", dir);
	return done_testing();
}
