/* The per-call-site log rate limit (io/log.h): the token bucket itself at
 * chosen times, then the macros end to end with stderr captured in a file:
 * a flood from one site is cut to the burst plus a summary whose count is
 * right, sites are independent, the window re-opens, threads hammering one
 * site lose no count, the unlimited variant is not limited; then ztunnel's
 * levels (trace, off) and scope=level filters, reset included. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/log.h"
#include "tap.h"

/* --- stderr capture --- */

static FILE *cap_file;
static int saved_stderr = -1;

static void capture_start(void)
{
	fflush(stderr);
	cap_file = tmpfile();
	saved_stderr = dup(STDERR_FILENO);
	dup2(fileno(cap_file), STDERR_FILENO);
}

/* Stops capturing; returns what was written (malloc'd, NUL terminated). */
static char *capture_end(void)
{
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	off_t n = lseek(fileno(cap_file), 0, SEEK_END);
	char *buf = calloc(1, (size_t)n + 1);
	if (buf && n > 0 && pread(fileno(cap_file), buf, (size_t)n, 0) != (ssize_t)n)
		buf[0] = '\0';
	fclose(cap_file);
	return buf;
}

static unsigned count(const char *text, const char *needle)
{
	unsigned n = 0;
	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* Sum of "suppressed":N over summary lines naming `site` ("file:line"). */
static unsigned long long suppressed_in(const char *text, const char *site)
{
	unsigned long long sum = 0;
	char key[128];
	snprintf(key, sizeof(key), "\"site\":\"%s\"", site);
	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char buf[4096];
		if (len < sizeof(buf)) {
			memcpy(buf, line, len);
			buf[len] = '\0';
			const char *s = strstr(buf, "\"suppressed\":");
			if (s && strstr(buf, key))
				sum += strtoull(s + 13, NULL, 10);
		}
		line = end ? end + 1 : NULL;
	}
	return sum;
}

/* --- call sites (one each) --- */

static int line_a, line_b, line_c;
static void site_a(int i)
{
	line_a = __LINE__ + 1;
	zr_warn("test-a", "flood line a %d", i);
}
static void site_b(int i)
{
	line_b = __LINE__ + 1;
	zr_info("test-b", "quiet line b %d", i);
}
static void site_c(int i)
{
	line_c = __LINE__ + 1;
	zr_warn("test-c", "threaded line c %d", i);
}
static void site_unlimited(int i)
{
	zr_info_unlimited("test-u", "start-up line %d", i);
}

#define THREADS	   4
#define PER_THREAD 20000

static void *hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER_THREAD; i++)
		site_c(i);
	return NULL;
}

static void test_bucket(void)
{
	zr_log_site_t s = {0};
	unsigned long long t0 = 1000000;
	unsigned taken = 0;
	for (unsigned i = 0; i < ZR_LOG_BURST; i++)
		taken += zr_log_site_take(&s, t0);
	is(taken, ZR_LOG_BURST, "a fresh site passes a burst of %u lines", ZR_LOG_BURST);
	ok(!zr_log_site_take(&s, t0), "the next line is refused");
	ok(!zr_log_site_take(&s, t0 + ZR_LOG_REFILL_MS - 1), "still refused just before a refill period");
	ok(zr_log_site_take(&s, t0 + ZR_LOG_REFILL_MS), "one line passes after %u ms", ZR_LOG_REFILL_MS);
	ok(!zr_log_site_take(&s, t0 + ZR_LOG_REFILL_MS), "and only one");
	/* Partial periods are kept: 1.5 periods later, then half a period more. */
	ok(zr_log_site_take(&s, t0 + 2 * ZR_LOG_REFILL_MS + ZR_LOG_REFILL_MS / 2), "one more after another period");
	ok(zr_log_site_take(&s, t0 + 3 * ZR_LOG_REFILL_MS), "the half period already waited counts");
	taken = 0;
	for (unsigned i = 0; i < 1000; i++)
		taken += zr_log_site_take(&s, t0 + 3600000);
	is(taken, ZR_LOG_BURST, "an hour later the bucket holds a burst again, not more");
	taken = 0;
	for (unsigned long long t = t0 + 3600000; t <= t0 + 3600000 + 10000; t++)
		taken += zr_log_site_take(&s, t);
	is(taken, 10000 / ZR_LOG_REFILL_MS, "a sustained flood passes one line per %u ms", ZR_LOG_REFILL_MS);
}

static void test_macros(void)
{
	char site[64];
	zr_log_set_level(ZR_LOG_INFO);
	unsigned long long before = zr_log_suppressed_total();

	capture_start();
	for (int i = 0; i < 1000; i++)
		site_a(i);
	for (int i = 0; i < 10; i++)
		site_b(i);
	zr_log_flush_suppressed();
	char *out = capture_end();
	unsigned lines_a = count(out, "flood line a"), lines_b = count(out, "quiet line b");
	snprintf(site, sizeof(site), "tests/unit/test_log.c:%d", line_a);
	unsigned long long sup_a = suppressed_in(out, site);
	diag("site a: %u lines, %llu suppressed", lines_a, sup_a);
	ok(lines_a >= ZR_LOG_BURST && lines_a <= ZR_LOG_BURST + 2, "1000 lines from one site: the burst (%u) passes",
	   lines_a);
	is(lines_a + sup_a, 1000, "the summaries count exactly the lines dropped");
	ok(strstr(out, "\"scope\":\"test-a\",\"msg\":\"") && count(out, "similar lines suppressed") >= 1,
	   "the summary line has the site's scope and says what happened");
	ok(strstr(out, site) != NULL, "it names the call site %s", site);
	is(lines_b, 10, "another site is not limited by the first");
	is(zr_log_suppressed_total() - before, sup_a, "zr_log_suppressed_total counts the dropped lines");
	free(out);

	/* The window re-opens: the next line passes, preceded by the summary. */
	capture_start();
	for (int i = 0; i < 100; i++)
		site_a(i);
	usleep((ZR_LOG_REFILL_MS + 50) * 1000);
	site_a(-1);
	out = capture_end();
	const char *summary = strstr(out, "similar lines suppressed"), *last = strstr(out, "flood line a -1");
	ok(last != NULL, "after %u ms the site logs again", ZR_LOG_REFILL_MS + 50);
	ok(summary && last && summary < last, "its pending summary comes first");
	is(count(out, "flood line a") + suppressed_in(out, site), 101, "with the right count");
	free(out);

	/* Several threads on one site: lock-free counting loses nothing. */
	capture_start();
	pthread_t th[THREADS];
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, hammer, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	zr_log_flush_suppressed();
	out = capture_end();
	snprintf(site, sizeof(site), "tests/unit/test_log.c:%d", line_c);
	unsigned lines_c = count(out, "threaded line c");
	diag("site c: %u lines, %llu suppressed", lines_c, suppressed_in(out, site));
	ok(lines_c <= ZR_LOG_BURST + 10, "%d threads x %d lines on one site: at most the burst and a few passes",
	   THREADS, PER_THREAD);
	is(lines_c + suppressed_in(out, site), THREADS * PER_THREAD, "every line is written or counted");
	free(out);

	capture_start();
	zr_log_flush_suppressed();
	out = capture_end();
	is(strlen(out), 0, "nothing pending: the flush writes nothing");
	free(out);

	capture_start();
	for (int i = 0; i < 300; i++)
		site_unlimited(i);
	out = capture_end();
	is(count(out, "start-up line"), 300, "the unlimited variant writes every line");
	free(out);

	zr_log_set_level(ZR_LOG_WARN);
	capture_start();
	for (int i = 0; i < 100; i++)
		site_b(i);
	out = capture_end();
	is(strlen(out), 0, "a disabled level writes nothing");
	free(out);
}

/* ztunnel's levels and filter forms (io/log.h zr_log_apply_filter). */
static void test_levels(void)
{
	char f[512], err[80];
	zr_log_level_t l;
	static const char *const names[] = {"error", "warn", "info", "debug", "trace", "off"};
	for (unsigned i = 0; i < 6; i++)
		ok(zr_log_parse_level(names[i], &l) == 0 && strcmp(zr_log_level_name(l), names[i]) == 0,
		   "level %s parses and names itself", names[i]);
	ok(zr_log_parse_level("loud", &l) != 0, "an unknown level is refused");

	zr_log_set_default_level(ZR_LOG_INFO);
	zr_log_filter_str(f, sizeof(f));
	is_str(f, "info", "the filter is the default level");
	is(zr_log_apply_filter("trace", false, err, sizeof(err)), 0, "trace");
	capture_start();
	zr_trace("test-t", "a trace line");
	zr_debug("test-t", "a debug line");
	char *out = capture_end();
	ok(count(out, "\"level\":\"trace\"") == 1 && count(out, "a debug line") == 1, "trace writes trace and debug");
	free(out);

	is(zr_log_apply_filter("off", false, err, sizeof(err)), 0, "off");
	ok(!ZR_LOG_ENABLED(ZR_LOG_ERROR), "off: not even error lines pass the gate");
	capture_start();
	zr_err("test-t", "an error line");
	out = capture_end();
	is(strlen(out), 0, "off writes nothing");
	free(out);

	is(zr_log_apply_filter("access=warn,info", false, err, sizeof(err)), 0, "access=warn,info");
	zr_log_filter_str(f, sizeof(f));
	is_str(f, "access=warn,info", "scope levels first, the default last (ztunnel's form)");
	ok(!ZR_LOG_ON(ZR_LOG_INFO, "access") && ZR_LOG_ON(ZR_LOG_WARN, "access"), "access at warn");
	ok(ZR_LOG_ON(ZR_LOG_INFO, "flow") && !ZR_LOG_ON(ZR_LOG_DEBUG, "flow"), "other scopes at the default");
	is(zr_log_apply_filter("hbone=debug", false, err, sizeof(err)), 0, "hbone=debug over it");
	ok(ZR_LOG_ENABLED(ZR_LOG_DEBUG), "the gate opens to the most verbose scope");
	capture_start();
	zr_debug("hbone", "hbone debug");
	zr_debug("flow", "flow debug");
	zr_info("access", "access info");
	zr_warn("access", "access warn");
	out = capture_end();
	ok(count(out, "hbone debug") == 1 && !count(out, "flow debug"), "a scope at debug writes debug, others do not");
	ok(!count(out, "access info") && count(out, "access warn") == 1, "a scope at warn drops info");
	free(out);
	zr_log_filter_str(f, sizeof(f));
	is_str(f, "access=warn,hbone=debug,info", "both scopes kept");

	static const char *const bad[] = {
		"bogus", "info,", "", "access=", "=info", "access=loud", "a b=info", "access=warn,,info"};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ok(zr_log_apply_filter(bad[i], false, err, sizeof(err)) == -EINVAL || !*bad[i], "'%s' refused", bad[i]);
		zr_log_filter_str(f, sizeof(f));
		is_str(f, "access=warn,hbone=debug,info", "  ... and nothing changed");
	}
	is(zr_log_apply_filter("access=debug,bogus", false, err, sizeof(err)), -EINVAL,
	   "a bad clause after a good one");
	is_str(err, "bogus", "  ... is named");
	ok(!ZR_LOG_ON(ZR_LOG_INFO, "access"), "  ... and the good one was not applied");

	is(zr_log_apply_filter("", true, err, sizeof(err)), 0, "reset");
	zr_log_filter_str(f, sizeof(f));
	is_str(f, "info", "reset: the start-up level, no scope levels");
	ok(!ZR_LOG_ENABLED(ZR_LOG_DEBUG), "  ... and the gate closes again");
	is(zr_log_apply_filter("access=off", true, err, sizeof(err)), 0, "reset with a filter");
	ok(!ZR_LOG_ON(ZR_LOG_ERROR, "access") && ZR_LOG_ON(ZR_LOG_INFO, "ctl"), "access off, the rest at info");

	char spec[64];
	int r = 0;
	for (unsigned i = 0; i < ZR_LOG_MAX_SCOPES + 2 && !r; i++) {
		snprintf(spec, sizeof(spec), "scope%u=debug", i);
		r = zr_log_apply_filter(spec, false, err, sizeof(err));
	}
	is(r, -ENOSPC, "the scope table is bounded (%u)", ZR_LOG_MAX_SCOPES);
	is(zr_log_apply_filter("access=info", false, err, sizeof(err)), 0, "a known scope still takes a level");
	ok(zr_log_apply_filter("", true, NULL, 0) == 0, "reset at the end");
	zr_log_set_default_level(ZR_LOG_INFO);
}

int main(void)
{
	plan(0);
	test_bucket();
	test_macros();
	test_levels();
	(void)line_b;
	return done_testing();
}
