/* Structured logging: one JSON object per line on stderr.
 * Thread-safe (each line is written with one write(2)); the level is a
 * process-wide atomic that the admin API may change at any time. */
#ifndef ZR_IO_LOG_H
#define ZR_IO_LOG_H

#include <stdarg.h>

typedef enum zr_log_level {
	ZR_LOG_ERROR = 0,
	ZR_LOG_WARN = 1,
	ZR_LOG_INFO = 2,
	ZR_LOG_DEBUG = 3,
} zr_log_level_t;

/* Sets the process-wide level. Any thread. */
void zr_log_set_level(zr_log_level_t level);
zr_log_level_t zr_log_get_level(void);

/* Parses "error|warn|info|debug"; returns 0 or -EINVAL. */
int zr_log_parse_level(const char *s, zr_log_level_t *out) __attribute__((warn_unused_result));
const char *zr_log_level_name(zr_log_level_t level);

/* Writes {"ts":..,"level":..,"scope":..,"msg":..} plus optional extra
 * key/value fields given as a printf-formatted JSON fragment in `fields`
 * (already escaped, without leading comma), or NULL. Any thread. */
void zr_log_write(zr_log_level_t level, const char *scope, const char *fields, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Escapes `s` for inclusion in a JSON string into `out` (always NUL
 * terminated, truncated to `cap`). Returns `out`. */
char *zr_json_escape(const char *s, char *out, unsigned cap);

#define ZR_LOG_ENABLED(lvl) ((lvl) <= zr_log_get_level())
#define zr_log(lvl, scope, ...)                                          \
	do {                                                             \
		if (ZR_LOG_ENABLED(lvl))                                 \
			zr_log_write((lvl), (scope), NULL, __VA_ARGS__); \
	} while (0)
#define zr_err(scope, ...)   zr_log(ZR_LOG_ERROR, scope, __VA_ARGS__)
#define zr_warn(scope, ...)  zr_log(ZR_LOG_WARN, scope, __VA_ARGS__)
#define zr_info(scope, ...)  zr_log(ZR_LOG_INFO, scope, __VA_ARGS__)
#define zr_debug(scope, ...) zr_log(ZR_LOG_DEBUG, scope, __VA_ARGS__)

#endif
