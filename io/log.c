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
