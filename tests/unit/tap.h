/* Minimal TAP producer for the unit tests: one test program per module, one
 * translation unit each, so the counters can be file-static. */
#ifndef ZR_TESTS_TAP_H
#define ZR_TESTS_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned tap_run, tap_failed, tap_planned;

/* Announces `n` tests; 0 = no plan up front (call done_testing()). */
static inline void plan(unsigned n)
{
	tap_planned = n;
	if (n)
		printf("1..%u\n", n);
}

static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("# ", stdout);
	vprintf(fmt, ap);
	fputs("\n", stdout);
	va_end(ap);
}

static inline bool tap_vok(bool cond, const char *fmt, va_list ap)
{
	tap_run++;
	if (!cond)
		tap_failed++;
	printf("%sok %u - ", cond ? "" : "not ", tap_run);
	vprintf(fmt, ap);
	fputs("\n", stdout);
	fflush(stdout);
	return cond;
}

static inline bool ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool ok(bool cond, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok(cond, fmt, ap);
	va_end(ap);
	return r;
}

#define is(got, expected, ...)                                                       \
	do {                                                                         \
		long long tap_g_ = (long long)(got), tap_e_ = (long long)(expected); \
		if (!ok(tap_g_ == tap_e_, __VA_ARGS__))                              \
			diag("  got: %lld, expected: %lld", tap_g_, tap_e_);         \
	} while (0)

#define is_str(got, expected, ...)                                                                                   \
	do {                                                                                                         \
		const char *tap_g_ = (got), *tap_e_ = (expected);                                                    \
		if (!ok(tap_g_ && tap_e_ && strcmp(tap_g_, tap_e_) == 0, __VA_ARGS__))                               \
			diag("  got: '%s', expected: '%s'", tap_g_ ? tap_g_ : "(null)", tap_e_ ? tap_e_ : "(null)"); \
	} while (0)

/* Records a passing test that was not run, with the reason. */
static inline void skip(const char *why)
{
	tap_run++;
	printf("ok %u # SKIP %s\n", tap_run, why);
}

/* Skips the whole program (exit 77: meson's "skipped"). */
static inline void skip_all(const char *why)
{
	printf("1..0 # SKIP %s\n", why);
	exit(77);
}

/* Prints the trailing plan if none was given; returns the exit status. */
static inline int done_testing(void)
{
	if (!tap_planned)
		printf("1..%u\n", tap_run);
	return tap_failed || (tap_planned && tap_planned != tap_run) ? 1 : 0;
}

#endif
