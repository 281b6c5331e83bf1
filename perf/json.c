/* A streaming JSON writer: the caller describes the document in order and
 * the writer supplies commas, indentation and escaping, so reports cannot
 * produce malformed JSON whatever the strings they carry (command lines,
 * CPU model names). Numbers are printed deterministically: integers exactly,
 * doubles in the shortest of %.15g / %.17g that reads back to the same value.
 * need_comma[] tracks 32 levels; deeper ones share the last slot, so their
 * commas could be wrong, which no report (at most 4 levels) runs into.
 * zr_json_init turns pretty-printing on (2-space indents); set pretty = 0
 * for one line. */
#include <math.h>
#include <stdlib.h>

#include "perf/bench.h"

#define MAX_DEPTH ((int)sizeof(((zr_json_t *)0)->need_comma))

void zr_json_init(zr_json_t *j, FILE *out)
{
	j->out = out;
	j->depth = 0;
	for (int i = 0; i < MAX_DEPTH; i++)
		j->need_comma[i] = 0;
	j->pretty = 1;
}

/* Length of the valid UTF-8 sequence at s, or 0 when it is not one
 * (overlong forms, surrogates and code points above U+10FFFF included). */
static int utf8_len(const unsigned char *s)
{
	unsigned c = s[0];
	int n;
	unsigned cp, min;
	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0)
		n = 2, cp = c & 0x1f, min = 0x80;
	else if ((c & 0xf0) == 0xe0)
		n = 3, cp = c & 0x0f, min = 0x800;
	else if ((c & 0xf8) == 0xf0)
		n = 4, cp = c & 0x07, min = 0x10000;
	else
		return 0;
	for (int i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* Writes s as a JSON string. Invalid UTF-8 bytes become U+FFFD so that the
 * document stays valid for strict parsers. */
static void write_string(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	fputc('"', f);
	while (*s) {
		unsigned c = *s;
		int n;
		switch (c) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\b':
			fputs("\\b", f);
			break;
		case '\f':
			fputs("\\f", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (c < 0x20) {
				fprintf(f, "\\u%04x", c);
				break;
			}
			n = utf8_len(s);
			if (!n) {
				fputs("\\ufffd", f);
				break;
			}
			fwrite(s, 1, (size_t)n, f);
			s += n - 1;
		}
		s++;
	}
	fputc('"', f);
}

static void newline_indent(zr_json_t *j, int depth)
{
	if (!j->pretty)
		return;
	fputc('\n', j->out);
	for (int i = 0; i < depth; i++)
		fputs("  ", j->out);
}

/* Everything a value needs before it: a comma after its sibling, the
 * indentation, and its key inside objects. */
static void begin_value(zr_json_t *j, const char *key)
{
	if (j->depth > 0) {
		int d = j->depth < MAX_DEPTH ? j->depth : MAX_DEPTH - 1;
		if (j->need_comma[d])
			fputc(',', j->out);
		j->need_comma[d] = 1;
		newline_indent(j, j->depth);
	}
	if (key) {
		write_string(j->out, key);
		fputs(j->pretty ? ": " : ":", j->out);
	}
}

/* A value finished at the top level ends the document's line. */
static void end_value(zr_json_t *j)
{
	if (j->depth == 0 && j->pretty)
		fputc('\n', j->out);
}

static void container_begin(zr_json_t *j, const char *key, char c)
{
	begin_value(j, key);
	fputc(c, j->out);
	j->depth++;
	if (j->depth < MAX_DEPTH)
		j->need_comma[j->depth] = 0;
}

static void container_end(zr_json_t *j, char c)
{
	int d = j->depth < MAX_DEPTH ? j->depth : MAX_DEPTH - 1;
	int had_members = j->need_comma[d];
	if (j->depth > 0)
		j->depth--;
	if (had_members)
		newline_indent(j, j->depth);
	fputc(c, j->out);
	end_value(j);
}

void zr_json_object_begin(zr_json_t *j, const char *key)
{
	container_begin(j, key, '{');
}

void zr_json_object_end(zr_json_t *j)
{
	container_end(j, '}');
}

void zr_json_array_begin(zr_json_t *j, const char *key)
{
	container_begin(j, key, '[');
}

void zr_json_array_end(zr_json_t *j)
{
	container_end(j, ']');
}

void zr_json_str(zr_json_t *j, const char *key, const char *value)
{
	begin_value(j, key);
	if (value)
		write_string(j->out, value);
	else
		fputs("null", j->out);
	end_value(j);
}

void zr_json_num(zr_json_t *j, const char *key, double value)
{
	begin_value(j, key);
	if (!isfinite(value)) {
		fputs("null", j->out);
	} else {
		char buf[40];
		snprintf(buf, sizeof(buf), "%.15g", value);
		if (strtod(buf, NULL) != value)
			snprintf(buf, sizeof(buf), "%.17g", value);
		fputs(buf, j->out);
	}
	end_value(j);
}

void zr_json_uint(zr_json_t *j, const char *key, uint64_t value)
{
	begin_value(j, key);
	fprintf(j->out, "%llu", (unsigned long long)value);
	end_value(j);
}

void zr_json_bool(zr_json_t *j, const char *key, int value)
{
	begin_value(j, key);
	fputs(value ? "true" : "false", j->out);
	end_value(j);
}
