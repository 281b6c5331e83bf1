#include "io/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>

static _Atomic int current_level = ZR_LOG_INFO; /* the default scope's */
static _Atomic int default_level = ZR_LOG_INFO; /* what reset goes back to */
_Atomic int zr_log_gate_ = ZR_LOG_INFO;
_Atomic int zr_log_have_scopes_;
/* Indexed by level + 1. */
static const char *const level_names[] = {"off", "error", "warn", "info", "debug", "trace"};
#define N_LEVELS (sizeof(level_names) / sizeof(level_names[0]))

/* Scopes that ever had a level: a name, once published (n_scopes, release),
 * never changes, so readers on any thread may compare it without a lock;
 * only the level (UNSET: the default's) changes. */
#define UNSET	       (-2)
#define SCOPE_NAME_MAX 31
struct scope_level {
	char name[SCOPE_NAME_MAX + 1];
	_Atomic int level;
};
static struct scope_level scopes[ZR_LOG_MAX_SCOPES];
static _Atomic unsigned n_scopes;

static void recompute_gate(void)
{
	int gate = atomic_load_explicit(&current_level, memory_order_relaxed), any = 0;
	unsigned n = atomic_load_explicit(&n_scopes, memory_order_acquire);
	for (unsigned i = 0; i < n; i++) {
		int l = atomic_load_explicit(&scopes[i].level, memory_order_relaxed);
		if (l == UNSET)
			continue;
		any = 1;
		if (l > gate)
			gate = l;
	}
	atomic_store_explicit(&zr_log_have_scopes_, any, memory_order_relaxed);
	atomic_store_explicit(&zr_log_gate_, gate, memory_order_relaxed);
}

void zr_log_set_level(zr_log_level_t level)
{
	atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
	recompute_gate();
}

void zr_log_set_default_level(zr_log_level_t level)
{
	atomic_store_explicit(&default_level, (int)level, memory_order_relaxed);
	zr_log_set_level(level);
}

zr_log_level_t zr_log_get_level(void)
{
	return (zr_log_level_t)atomic_load_explicit(&current_level, memory_order_relaxed);
}

int zr_log_parse_level(const char *s, zr_log_level_t *out)
{
	for (unsigned i = 0; i < N_LEVELS; i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (zr_log_level_t)((int)i - 1);
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
	unsigned i = (unsigned)((int)level + 1);
	if (i >= N_LEVELS)
		return "unknown";
	return level_names[i];
}

bool zr_log_scope_enabled(zr_log_level_t level, const char *scope)
{
	if (!scope)
		scope = "zring";
	unsigned n = atomic_load_explicit(&n_scopes, memory_order_acquire);
	for (unsigned i = 0; i < n; i++) {
		if (strcmp(scopes[i].name, scope) != 0)
			continue;
		int l = atomic_load_explicit(&scopes[i].level, memory_order_relaxed);
		if (l != UNSET)
			return (int)level <= l;
		break;
	}
	return (int)level <= atomic_load_explicit(&current_level, memory_order_relaxed);
}

static int find_scope(const char *name, size_t len)
{
	unsigned n = atomic_load_explicit(&n_scopes, memory_order_acquire);
	for (unsigned i = 0; i < n; i++)
		if (strlen(scopes[i].name) == len && memcmp(scopes[i].name, name, len) == 0)
			return (int)i;
	return -1;
}

static bool scope_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > SCOPE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '.' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* Walks the clauses of `spec`; with `apply` sets them. Returns 0, -EINVAL
 * or -ENOSPC with the clause in err. */
static int walk_filter(const char *spec, bool apply, char *err, unsigned errcap)
{
	unsigned fresh = 0; /* scope names the table lacks (checking) */
	char fresh_names[ZR_LOG_MAX_SCOPES][SCOPE_NAME_MAX + 1];
	for (const char *p = spec;;) {
		size_t n = strcspn(p, ",");
		char clause[64];
		if (n >= sizeof(clause))
			n = sizeof(clause) - 1; /* too long for any valid clause: stays invalid */
		memcpy(clause, p, n);
		clause[n] = '\0';
		if (err && errcap)
			snprintf(err, errcap, "%s", clause);
		char *eq = strchr(clause, '=');
		zr_log_level_t lvl;
		if (zr_log_parse_level(eq ? eq + 1 : clause, &lvl) != 0 ||
		    (eq && !scope_name_ok(clause, (size_t)(eq - clause))))
			return -EINVAL;
		if (!eq) {
			if (apply)
				atomic_store_explicit(&current_level, (int)lvl, memory_order_relaxed);
		} else {
			size_t len = (size_t)(eq - clause);
			int i = find_scope(clause, len);
			if (apply) {
				if (i < 0) {
					unsigned k = atomic_load_explicit(&n_scopes, memory_order_relaxed);
					if (k >= ZR_LOG_MAX_SCOPES)
						return -ENOSPC; /* checked before: not reached */
					memcpy(scopes[k].name, clause, len);
					scopes[k].name[len] = '\0';
					atomic_store_explicit(&scopes[k].level, (int)lvl, memory_order_relaxed);
					atomic_store_explicit(&n_scopes, k + 1, memory_order_release);
				} else {
					atomic_store_explicit(&scopes[i].level, (int)lvl, memory_order_relaxed);
				}
			} else if (i < 0) {
				bool seen = false;
				for (unsigned j = 0; j < fresh && !seen; j++)
					seen = strlen(fresh_names[j]) == len &&
					       memcmp(fresh_names[j], clause, len) == 0;
				if (!seen) {
					if (atomic_load_explicit(&n_scopes, memory_order_relaxed) + fresh >=
					    ZR_LOG_MAX_SCOPES)
						return -ENOSPC;
					memcpy(fresh_names[fresh], clause, len);
					fresh_names[fresh++][len] = '\0';
				}
			}
		}
		p += strcspn(p, ",");
		if (!*p)
			break;
		p++;
	}
	return 0;
}

int zr_log_check_filter(const char *spec, char *err, unsigned errcap)
{
	return walk_filter(spec, false, err, errcap);
}

int zr_log_apply_filter(const char *spec, bool reset, char *err, unsigned errcap)
{
	bool empty = !spec || !*spec;
	if (!empty) {
		int r = walk_filter(spec, false, err, errcap);
		if (r)
			return r;
	}
	if (reset) {
		unsigned n = atomic_load_explicit(&n_scopes, memory_order_acquire);
		for (unsigned i = 0; i < n; i++)
			atomic_store_explicit(&scopes[i].level, UNSET, memory_order_relaxed);
		atomic_store_explicit(&current_level, atomic_load_explicit(&default_level, memory_order_relaxed),
				      memory_order_relaxed);
	}
	if (!empty && walk_filter(spec, true, NULL, 0) != 0) {
		recompute_gate(); /* not reached: checked above */
		return -EINVAL;
	}
	recompute_gate();
	return 0;
}

void zr_log_filter_str(char *out, unsigned cap)
{
	size_t o = 0;
	if (!cap)
		return;
	out[0] = '\0';
	unsigned n = atomic_load_explicit(&n_scopes, memory_order_acquire);
	for (unsigned i = 0; i < n; i++) {
		int l = atomic_load_explicit(&scopes[i].level, memory_order_relaxed);
		if (l == UNSET)
			continue;
		int w = snprintf(out + o, cap - o, "%s=%s,", scopes[i].name, zr_log_level_name((zr_log_level_t)l));
		if (w < 0 || (size_t)w >= cap - o)
			return;
		o += (size_t)w;
	}
	snprintf(out + o, cap - o, "%s", zr_log_level_name(zr_log_get_level()));
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
