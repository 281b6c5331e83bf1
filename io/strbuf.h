/* A growable byte string for building text (HTTP responses, JSON, labels)
 * off the data path. Owned by whoever declared it; free with zr_strbuf_free. */
#ifndef ZR_IO_STRBUF_H
#define ZR_IO_STRBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zr_strbuf {
	char *data; /* NUL-terminated when len > 0 or after any append */
	size_t len, cap;
	bool oom; /* an allocation failed: contents are truncated */
} zr_strbuf_t;

#define ZR_STRBUF_INIT \
	{              \
		0      \
	}

void zr_strbuf_append(zr_strbuf_t *b, const void *data, size_t len);
void zr_strbuf_puts(zr_strbuf_t *b, const char *s);
void zr_strbuf_printf(zr_strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `s` as a JSON string literal, quotes included. NULL becomes null. */
void zr_strbuf_json_str(zr_strbuf_t *b, const char *s);
void zr_strbuf_reset(zr_strbuf_t *b);
/* FNV-1a hash of a NUL-terminated string (lookup tables). */
uint32_t zr_str_hash(const char *s);
void zr_strbuf_free(zr_strbuf_t *b);

#endif
