#include "io/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>

static _Atomic int current_level = ZR_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void zr_log_set_level(zr_log_level_t level)
{
	atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
}

zr_log_level_t zr_log_get_level(void)
{
	return (zr_log_level_t)atomic_load_explicit(&current_level, memory_order_relaxed);
}

int zr_log_parse_level(const char *s, zr_log_level_t *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (zr_log_level_t)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = ZR_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

const char *zr_log_level_name(zr_log_level_t level)
{
	if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
		return "unknown";
	return level_names[level];
}

char *zr_json_escape(const char *s, char *out, unsigned cap)
{
	unsigned o = 0;
	if (cap == 0)
		return out;
	for (; s && *s && o + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c < 0x20 || c == 0x7f) {
			o += (unsigned)snprintf(out + o, cap - o, "\\u%04x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	return out;
}

void zr_log_write(zr_log_level_t level, const char *scope, const char *fields, const char *fmt, ...)
{
	char msg[1024], esc[2100], line[4096];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	zr_json_escape(msg, esc, sizeof(esc));

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line),
			 "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"level\":\"%s\",\"scope\":\"%s\","
			 "\"msg\":\"%s\"%s%s}\n",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 ts.tv_nsec / 1000, zr_log_level_name(level), scope ? scope : "zring", esc, fields ? "," : "",
			 fields ? fields : "");
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 2] = '}';
		line[n - 1] = '\n';
	}
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

/* --- per-call-site rate limit --- */

#define TOKEN_BITS 8u
#define TOKEN_MASK ((1ull << TOKEN_BITS) - 1)
_Static_assert(ZR_LOG_BURST <= TOKEN_MASK, "tokens fit their field");

static _Atomic unsigned long long suppressed_total;
static zr_log_site_t *_Atomic sites; /* sites that ever dropped a line */

bool zr_log_site_take(zr_log_site_t *site, unsigned long long now_ms)
{
	unsigned long long old = atomic_load_explicit(&site->bucket, memory_order_relaxed), upd;
	bool taken;
	do {
		unsigned long long t = old >> TOKEN_BITS, tokens = old & TOKEN_MASK;
		if (old == 0) {
			t = now_ms;
			tokens = ZR_LOG_BURST;
		} else if (now_ms > t) {
			unsigned long long add = (now_ms - t) / ZR_LOG_REFILL_MS;
			if (add >= ZR_LOG_BURST - tokens) {
				tokens = ZR_LOG_BURST;
				t = now_ms;
			} else {
				tokens += add;
				t += add * ZR_LOG_REFILL_MS; /* keeps the part of a period already waited */
			}
		}
		taken = tokens > 0;
		if (taken)
			tokens--;
		upd = t << TOKEN_BITS | tokens;
		if (upd == 0)
			upd = 1ull << TOKEN_BITS; /* 0 means "never used" */
		if (upd == old)
			break;
	} while (!atomic_compare_exchange_weak_explicit(&site->bucket, &old, upd, memory_order_relaxed,
							memory_order_relaxed));
	return taken;
}

static const char *short_path(const char *file)
{
	while (file && strncmp(file, "../", 3) == 0)
		file += 3;
	return file ? file : "?";
}

static void write_summary(zr_log_level_t level, const char *scope, const char *file, int line, unsigned long long n)
{
	char fields[600], esc[520];
	snprintf(fields, sizeof(fields), "\"suppressed\":%llu,\"site\":\"%s:%d\"", n,
		 zr_json_escape(short_path(file), esc, sizeof(esc)), line);
	zr_log_write(level, scope, fields, "%llu similar lines suppressed by the log rate limit (%s:%d)", n,
		     short_path(file), line);
}

bool zr_log_admit(zr_log_site_t *site, zr_log_level_t level, const char *scope, const char *file, int line)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	unsigned long long now_ms =
		(unsigned long long)ts.tv_sec * 1000ull + (unsigned long long)ts.tv_nsec / 1000000ull;
	if (now_ms == 0)
		now_ms = 1;
	if (!zr_log_site_take(site, now_ms)) {
		atomic_fetch_add_explicit(&site->suppressed, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&suppressed_total, 1, memory_order_relaxed);
		if (!atomic_exchange_explicit(&site->listed, 1, memory_order_relaxed)) {
			/* Described before it is published (release) to the flusher. */
			site->level = (int)level;
			site->scope = scope;
			site->file = file;
			site->line = line;
			zr_log_site_t *head = atomic_load_explicit(&sites, memory_order_relaxed);
			do
				atomic_store_explicit(&site->next, head, memory_order_relaxed);
			while (!atomic_compare_exchange_weak_explicit(&sites, &head, site, memory_order_release,
								      memory_order_relaxed));
		}
		return false;
	}
	if (atomic_load_explicit(&site->suppressed, memory_order_relaxed)) {
		unsigned long long n = atomic_exchange_explicit(&site->suppressed, 0, memory_order_relaxed);
		if (n)
			write_summary(level, scope, file, line, n);
	}
	return true;
}

void zr_log_flush_suppressed(void)
{
	for (zr_log_site_t *s = atomic_load_explicit(&sites, memory_order_acquire); s;
	     s = atomic_load_explicit(&s->next, memory_order_relaxed)) {
		if (!atomic_load_explicit(&s->suppressed, memory_order_relaxed))
			continue;
		unsigned long long n = atomic_exchange_explicit(&s->suppressed, 0, memory_order_relaxed);
		if (n)
			write_summary((zr_log_level_t)s->level, s->scope, s->file, s->line, n);
	}
}

unsigned long long zr_log_suppressed_total(void)
{
	return atomic_load_explicit(&suppressed_total, memory_order_relaxed);
}
