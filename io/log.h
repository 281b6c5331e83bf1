/* Structured logging: one JSON object per line on stderr.
 * Thread-safe (each line is written with one write(2)); the level is a
 * process-wide atomic that the admin API may change at any time. */
#ifndef ZR_IO_LOG_H
#define ZR_IO_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

/* ztunnel's levels. OFF is a threshold only: no line is written at it. */
typedef enum zr_log_level {
	ZR_LOG_OFF = -1,
	ZR_LOG_ERROR = 0,
	ZR_LOG_WARN = 1,
	ZR_LOG_INFO = 2,
	ZR_LOG_DEBUG = 3,
	ZR_LOG_TRACE = 4,
} zr_log_level_t;

/* Sets the process-wide (default scope) level. Any thread. */
void zr_log_set_level(zr_log_level_t level);
zr_log_level_t zr_log_get_level(void);

/* Parses "error|warn|info|debug|trace|off" ("warning" too); 0 or -EINVAL. */
int zr_log_parse_level(const char *s, zr_log_level_t *out) __attribute__((warn_unused_result));
const char *zr_log_level_name(zr_log_level_t level);

/* Per-scope levels, ztunnel's filter forms: a comma-separated list of
 * clauses, each a level (the default for every scope) or scope=level
 * ("access=warn,info"). Scope names: 1..31 of [A-Za-z0-9_.:-]; at most
 * ZR_LOG_MAX_SCOPES distinct ones over the process's life. Control thread
 * only (the setters); the checks below are lock-free on any thread and cost
 * one extra relaxed load while no scope has a level of its own. */
#define ZR_LOG_MAX_SCOPES 16

/* Checks `spec` without changing anything: 0, or -EINVAL (bad clause) /
 * -ENOSPC (too many scopes) with the offending clause in `err`. */
int zr_log_check_filter(const char *spec, char *err, unsigned errcap) __attribute__((warn_unused_result));

/* Applies `spec` over the current filter (later clauses win); with `reset`
 * first goes back to the start-up filter (zr_log_set_default_level, no scope
 * levels). All or nothing: on error nothing changes. */
int zr_log_apply_filter(const char *spec, bool reset, char *err, unsigned errcap) __attribute__((warn_unused_result));

/* The start-up level that reset goes back to; also sets the level. */
void zr_log_set_default_level(zr_log_level_t level);

/* The filter in ztunnel's form: scope levels first, the default last
 * ("access=warn,info"). */
void zr_log_filter_str(char *out, unsigned cap);

/* Whether a line of `level` in `scope` passes (scope levels included). */
bool zr_log_scope_enabled(zr_log_level_t level, const char *scope);

/* Internal, for the macros: the most verbose level any scope has, and
 * whether any scope has a level of its own. */
extern _Atomic int zr_log_gate_;
extern _Atomic int zr_log_have_scopes_;

/* Writes {"ts":..,"level":..,"scope":..,"msg":..} plus optional extra
 * key/value fields given as a printf-formatted JSON fragment in `fields`
 * (already escaped, without leading comma), or NULL. Any thread. */
void zr_log_write(zr_log_level_t level, const char *scope, const char *fields, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Escapes `s` for inclusion in a JSON string into `out` (always NUL
 * terminated, truncated to `cap`). Returns `out`. */
char *zr_json_escape(const char *s, char *out, unsigned cap);

/* Per-call-site rate limit. Every zr_log() call site owns a token bucket
 * (a static zr_log_site_t declared by the macro): ZR_LOG_BURST lines at
 * once, then one line per ZR_LOG_REFILL_MS. Lines over the limit are
 * dropped and counted (per site, and process-wide for
 * zring_log_suppressed_total); the site's next line that passes is
 * preceded by one summary line naming the site and the count, and
 * zr_log_flush_suppressed() writes the summaries of sites that went quiet.
 * Lock-free (relaxed atomics): any thread. Sizing: 50 lines keep a burst of
 * distinct events at start-up or around an incident whole; 5 lines/s keep a
 * site someone keeps hitting visible while bounding it to ~20 KB/s (lines
 * are at most 4 KiB, usually under 300 bytes), whatever a peer does. */
#define ZR_LOG_BURST	 50u
#define ZR_LOG_REFILL_MS 200u

typedef struct zr_log_site {
	_Atomic unsigned long long bucket;     /* refill time (ms) << 8 | tokens; 0 = full */
	_Atomic unsigned long long suppressed; /* dropped since the last summary */
	struct zr_log_site *_Atomic next;      /* registry of sites that dropped lines */
	_Atomic int listed;
	int level, line;
	const char *scope, *file;
} zr_log_site_t;

/* Takes a token from `site` at `now_ms` (a monotonic clock in ms, > 0);
 * returns false when the site is over its limit. Only counts tokens: see
 * zr_log_admit. */
bool zr_log_site_take(zr_log_site_t *site, unsigned long long now_ms);

/* The macros' gate: takes a token now; on refusal counts the line as
 * suppressed and returns false; on success first writes the site's pending
 * summary, if any, and returns true. */
bool zr_log_admit(zr_log_site_t *site, zr_log_level_t level, const char *scope, const char *file, int line);

/* Writes a summary line for every site with suppressed lines pending. The
 * control thread calls it about once a second. Any thread. */
void zr_log_flush_suppressed(void);

/* Lines dropped by the rate limit since start (zring_log_suppressed_total). */
unsigned long long zr_log_suppressed_total(void);

/* True when some scope may write at `lvl` (the cheap gate: a debug-only
 * computation guarded by it is skipped unless some scope is at debug). */
#define ZR_LOG_ENABLED(lvl) ((int)(lvl) <= atomic_load_explicit(&zr_log_gate_, memory_order_relaxed))
/* True when `scope` writes at `lvl`. */
#define ZR_LOG_ON(lvl, scope)   \
	(ZR_LOG_ENABLED(lvl) && \
	 (!atomic_load_explicit(&zr_log_have_scopes_, memory_order_relaxed) || zr_log_scope_enabled((lvl), (scope))))
#define zr_log(lvl, scope, ...)                                                              \
	do {                                                                                 \
		if (ZR_LOG_ON(lvl, scope)) {                                                 \
			static zr_log_site_t zr_log_site_;                                   \
			if (zr_log_admit(&zr_log_site_, (lvl), (scope), __FILE__, __LINE__)) \
				zr_log_write((lvl), (scope), NULL, __VA_ARGS__);             \
		}                                                                            \
	} while (0)
#define zr_err(scope, ...)   zr_log(ZR_LOG_ERROR, scope, __VA_ARGS__)
#define zr_warn(scope, ...)  zr_log(ZR_LOG_WARN, scope, __VA_ARGS__)
#define zr_info(scope, ...)  zr_log(ZR_LOG_INFO, scope, __VA_ARGS__)
#define zr_debug(scope, ...) zr_log(ZR_LOG_DEBUG, scope, __VA_ARGS__)
#define zr_trace(scope, ...) zr_log(ZR_LOG_TRACE, scope, __VA_ARGS__)

/* Without the rate limit: only for lines whose number the configuration
 * bounds, written at start-up or reload on the control thread (one line per
 * certificate, per listener). Never on a path a peer can drive. */
#define zr_log_unlimited(lvl, scope, ...)                                \
	do {                                                             \
		if (ZR_LOG_ON(lvl, scope))                               \
			zr_log_write((lvl), (scope), NULL, __VA_ARGS__); \
	} while (0)
#define zr_warn_unlimited(scope, ...) zr_log_unlimited(ZR_LOG_WARN, scope, __VA_ARGS__)
#define zr_info_unlimited(scope, ...) zr_log_unlimited(ZR_LOG_INFO, scope, __VA_ARGS__)

#endif
