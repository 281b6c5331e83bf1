#include "io/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(zr_strbuf_t *b, size_t extra)
{
	if (b->oom)
		return false;
	if (b->len + extra + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->data = p;
	b->cap = cap;
	return true;
}

void zr_strbuf_append(zr_strbuf_t *b, const void *data, size_t len)
{
	if (!reserve(b, len))
		return;
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void zr_strbuf_puts(zr_strbuf_t *b, const char *s)
{
	zr_strbuf_append(b, s, strlen(s));
}

void zr_strbuf_printf(zr_strbuf_t *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void zr_strbuf_json_str(zr_strbuf_t *b, const char *s)
{
	if (!s) {
		zr_strbuf_puts(b, "null");
		return;
	}
	zr_strbuf_append(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			zr_strbuf_append(b, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			zr_strbuf_printf(b, "\\u%04x", c);
		} else {
			zr_strbuf_append(b, s, 1);
		}
	}
	zr_strbuf_append(b, "\"", 1);
}

void zr_strbuf_reset(zr_strbuf_t *b)
{
	b->len = 0;
	b->oom = false;
	if (b->data)
		b->data[0] = '\0';
}

void zr_strbuf_free(zr_strbuf_t *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->oom = false;
}

uint32_t zr_str_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}
