#include "ctl/yamlwalk.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Enough for any real state file; stops alias bombs ("billion laughs") whose
 * document is small but whose walk is exponential. */
#define WALK_BUDGET (4u << 20)

void zr_yaml_walk_init(zr_yaml_walk_t *w, yaml_document_t *doc, const char *file, zr_config_error_t *err)
{
	memset(w, 0, sizeof(*w));
	w->doc = doc;
	w->file = file;
	w->err = err;
	w->budget = WALK_BUDGET;
}

int zr_yaml_fail(zr_yaml_walk_t *w, const yaml_node_t *n, const char *fmt, ...)
{
	zr_config_error_t *e = w->err;
	snprintf(e->file, sizeof(e->file), "%s", w->file ? w->file : "");
	e->line = n ? (unsigned)n->start_mark.line + 1 : 0;
	e->column = n ? (unsigned)n->start_mark.column + 1 : 0;
	snprintf(e->key, sizeof(e->key), "%s", w->key);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return -1;
}

static size_t push(zr_yaml_walk_t *w, const char *fmt, const char *s, size_t i)
{
	size_t old = w->key_len;
	size_t room = sizeof(w->key) - old;
	int n = s ? snprintf(w->key + old, room, fmt, s) : snprintf(w->key + old, room, fmt, i);
	/* A truncated path still names the start of the way to the error. */
	w->key_len = n < 0 ? old : ((size_t)n >= room ? sizeof(w->key) - 1 : old + (size_t)n);
	return old;
}

size_t zr_yaml_push_key(zr_yaml_walk_t *w, const char *key)
{
	return push(w, w->key_len ? ".%s" : "%s", key, 0);
}

size_t zr_yaml_push_index(zr_yaml_walk_t *w, size_t i)
{
	return push(w, "[%zu]", NULL, i);
}

void zr_yaml_pop(zr_yaml_walk_t *w, size_t len)
{
	w->key_len = len;
	w->key[len] = '\0';
}

yaml_node_t *zr_yaml_node(zr_yaml_walk_t *w, yaml_node_item_t id)
{
	return yaml_document_get_node(w->doc, id);
}

static bool is_str_tag(const yaml_node_t *n)
{
	const char *tag = (const char *)n->tag;
	return !tag || strcmp(tag, YAML_STR_TAG) == 0 || strcmp(tag, "!") == 0;
}

bool zr_yaml_is_null(const yaml_node_t *n)
{
	if (!n)
		return true;
	if (n->type != YAML_SCALAR_NODE)
		return false;
	if (n->tag && strcmp((const char *)n->tag, YAML_NULL_TAG) == 0)
		return true;
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || !is_str_tag(n))
		return false;
	const char *v = (const char *)n->data.scalar.value;
	return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

const char *zr_yaml_kind(const yaml_node_t *n)
{
	if (zr_yaml_is_null(n))
		return "null";
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "a map";
	case YAML_SEQUENCE_NODE:
		return "a list";
	default:
		return "a scalar";
	}
}

size_t zr_yaml_len(const yaml_node_t *n)
{
	if (!n)
		return 0;
	if (n->type == YAML_SEQUENCE_NODE)
		return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (n->type == YAML_MAPPING_NODE)
		return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	return 0;
}

const char *zr_yaml_text(zr_yaml_walk_t *w, yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE) {
		zr_yaml_fail(w, n, "expected a string, got %s", zr_yaml_kind(n));
		return NULL;
	}
	if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length) {
		zr_yaml_fail(w, n, "string contains a NUL character");
		return NULL;
	}
	return (const char *)n->data.scalar.value;
}

int zr_yaml_str(zr_yaml_walk_t *w, yaml_node_t *n, char **out)
{
	if (zr_yaml_is_null(n))
		return zr_yaml_fail(w, n, "expected a string, got null");
	const char *s = zr_yaml_text(w, n);
	if (!s)
		return -1;
	char *copy = strdup(s);
	if (!copy)
		return zr_yaml_fail(w, n, "out of memory");
	free(*out);
	*out = copy;
	return 0;
}

int zr_yaml_str_opt(zr_yaml_walk_t *w, yaml_node_t *n, char **out)
{
	if (zr_yaml_is_null(n)) {
		free(*out);
		*out = NULL;
		return 0;
	}
	return zr_yaml_str(w, n, out);
}

int zr_yaml_uint(zr_yaml_walk_t *w, yaml_node_t *n, uint64_t min, uint64_t max, uint64_t *out)
{
	if (!n || n->type != YAML_SCALAR_NODE || zr_yaml_is_null(n))
		return zr_yaml_fail(w, n, "expected an integer, got %s", zr_yaml_kind(n));
	const char *s = (const char *)n->data.scalar.value;
	uint64_t v = 0;
	if (!*s)
		return zr_yaml_fail(w, n, "expected an integer, got \"\"");
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return zr_yaml_fail(w, n, "expected an integer, got \"%s\"", s);
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return zr_yaml_fail(w, n, "integer %s out of range", s);
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v < min || v > max)
		return zr_yaml_fail(w, n, "%s out of range (%llu..%llu)", s, (unsigned long long)min,
				    (unsigned long long)max);
	*out = v;
	return 0;
}

int zr_yaml_port(zr_yaml_walk_t *w, yaml_node_t *n, bool allow_zero, uint16_t *out)
{
	uint64_t v = 0;
	if (!n || n->type != YAML_SCALAR_NODE || zr_yaml_is_null(n))
		return zr_yaml_fail(w, n, "expected a port, got %s", zr_yaml_kind(n));
	const char *s = (const char *)n->data.scalar.value;
	size_t len = strlen(s);
	if (!len || len > 5 || strspn(s, "0123456789") != len || (v = strtoull(s, NULL, 10)) > 65535 ||
	    (!v && !allow_zero))
		return zr_yaml_fail(w, n, "bad port \"%s\" (want %u..65535)", s, allow_zero ? 0 : 1);
	*out = (uint16_t)v;
	return 0;
}

int zr_yaml_bool(zr_yaml_walk_t *w, yaml_node_t *n, bool *out)
{
	const char *s = n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
	if (s && (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")))
		*out = true;
	else if (s && (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")))
		*out = false;
	else if (s)
		return zr_yaml_fail(w, n, "expected true or false, got \"%s\"", s);
	else
		return zr_yaml_fail(w, n, "expected true or false, got %s", zr_yaml_kind(n));
	return 0;
}

int zr_yaml_enum(zr_yaml_walk_t *w, yaml_node_t *n, const char *what, const char *const *names, int *out)
{
	if (zr_yaml_is_null(n) || n->type != YAML_SCALAR_NODE)
		return zr_yaml_fail(w, n, "expected a %s, got %s", what, zr_yaml_kind(n));
	const char *s = (const char *)n->data.scalar.value;
	char allowed[256] = "";
	size_t len = 0;
	for (int i = 0; names[i]; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return 0;
		}
		int k = snprintf(allowed + len, sizeof(allowed) - len, "%s%s", i ? " | " : "", names[i]);
		if (k > 0 && (size_t)k < sizeof(allowed) - len)
			len += (size_t)k;
	}
	return zr_yaml_fail(w, n, "unknown %s \"%s\" (want %s)", what, s, allowed);
}

/* One "<digits><unit>" after another; overflow is an error, not a wrap. */
int zr_yaml_duration(zr_yaml_walk_t *w, yaml_node_t *n, uint64_t *ms)
{
	if (zr_yaml_is_null(n) || n->type != YAML_SCALAR_NODE)
		return zr_yaml_fail(w, n, "expected a duration such as 10s, got %s", zr_yaml_kind(n));
	const char *s = (const char *)n->data.scalar.value;
	const char *p = s;
	uint64_t total = 0;
	if (*p && strspn(p, "0123456789") == strlen(p)) {
		uint64_t secs;
		if (zr_yaml_uint(w, n, 0, UINT64_MAX / 1000, &secs) != 0)
			return -1;
		*ms = secs * 1000;
		return 0;
	}
	if (!*p)
		goto bad;
	while (*p) {
		if (*p < '0' || *p > '9')
			goto bad;
		uint64_t v = 0;
		while (*p >= '0' && *p <= '9') {
			if (v > UINT64_MAX / 10 - 1)
				goto bad;
			v = v * 10 + (uint64_t)(*p++ - '0');
		}
		uint64_t unit;
		if (!strncmp(p, "ms", 2)) {
			unit = 1;
			p += 2;
		} else if (*p == 's') {
			unit = 1000;
			p++;
		} else if (*p == 'm') {
			unit = 60 * 1000;
			p++;
		} else if (*p == 'h') {
			unit = 3600 * 1000;
			p++;
		} else {
			goto bad;
		}
		if (v > (UINT64_MAX - total) / unit)
			goto bad;
		total += v * unit;
	}
	*ms = total;
	return 0;
bad:
	return zr_yaml_fail(w, n, "bad duration \"%s\" (e.g. 500ms, 10s, 5m, 1h, 1m30s)", s);
}

static int spend(zr_yaml_walk_t *w, const yaml_node_t *n, size_t count)
{
	if (count > w->budget)
		return zr_yaml_fail(w, n, "document too large (alias expansion?)");
	w->budget -= count;
	return 0;
}

int zr_yaml_map(zr_yaml_walk_t *w, yaml_node_t *n, zr_yaml_field_fn fn, void *ctx)
{
	if (zr_yaml_is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(w, n, "expected a map, got %s", zr_yaml_kind(n));
	yaml_node_pair_t *start = n->data.mapping.pairs.start, *top = n->data.mapping.pairs.top;
	if (spend(w, n, (size_t)(top - start)) != 0)
		return -1;
	for (yaml_node_pair_t *p = start; p < top; p++) {
		yaml_node_t *k = zr_yaml_node(w, p->key);
		if (!k || k->type != YAML_SCALAR_NODE)
			return zr_yaml_fail(w, k, "map key must be a string, got %s", zr_yaml_kind(k));
		const char *key = (const char *)k->data.scalar.value;
		for (yaml_node_pair_t *q = start; q < p; q++) {
			yaml_node_t *k2 = zr_yaml_node(w, q->key);
			if (!strcmp((const char *)k2->data.scalar.value, key)) {
				size_t old = zr_yaml_push_key(w, key);
				zr_yaml_fail(w, k, "duplicate key");
				zr_yaml_pop(w, old);
				return -1;
			}
		}
		size_t old = zr_yaml_push_key(w, key);
		int rc = fn(w, key, zr_yaml_node(w, p->value), ctx);
		if (rc > 0)
			rc = zr_yaml_fail(w, k, "unknown key \"%s\"", key);
		if (rc != 0)
			return -1;
		zr_yaml_pop(w, old);
	}
	return 0;
}

int zr_yaml_seq(zr_yaml_walk_t *w, yaml_node_t *n, zr_yaml_item_fn fn, void *ctx)
{
	if (zr_yaml_is_null(n))
		return 0;
	if (n->type != YAML_SEQUENCE_NODE)
		return zr_yaml_fail(w, n, "expected a list, got %s", zr_yaml_kind(n));
	size_t len = zr_yaml_len(n);
	if (spend(w, n, len) != 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		size_t old = zr_yaml_push_index(w, i);
		if (fn(w, i, zr_yaml_node(w, n->data.sequence.items.start[i]), ctx) != 0)
			return -1;
		zr_yaml_pop(w, old);
	}
	return 0;
}

struct strv {
	char **v;
	size_t n;
};

static int str_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	struct strv *sv = ctx;
	if (zr_yaml_str(w, item, &sv->v[i]) != 0)
		return -1;
	sv->n = i + 1;
	return 0;
}

void zr_yaml_free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int zr_yaml_str_list(zr_yaml_walk_t *w, yaml_node_t *n, char ***out, size_t *n_out)
{
	struct strv sv = {0};
	size_t len = zr_yaml_len(n);
	if (len && !(sv.v = calloc(len, sizeof(*sv.v))))
		return zr_yaml_fail(w, n, "out of memory");
	if (zr_yaml_seq(w, n, str_item, &sv) != 0) {
		zr_yaml_free_strv(sv.v, sv.n);
		return -1;
	}
	zr_yaml_free_strv(*out, *n_out);
	*out = sv.v;
	*n_out = sv.n;
	return 0;
}

struct port_map_ctx {
	zr_yaml_walk_t *w;
	yaml_node_t *map;
	zr_port_map_t *v;
	size_t n;
};

static int port_pair(zr_yaml_walk_t *w, const char *key, yaml_node_t *value, void *ctx)
{
	struct port_map_ctx *c = ctx;
	yaml_node_t *k = zr_yaml_node(w, c->map->data.mapping.pairs.start[c->n].key);
	zr_port_map_t *pm = &c->v[c->n];
	if (zr_yaml_port(w, k, false, &pm->port) != 0 || zr_yaml_port(w, value, true, &pm->target) != 0)
		return -1;
	c->n++;
	return 0;
}

int zr_yaml_port_map(zr_yaml_walk_t *w, yaml_node_t *n, zr_port_map_t **out, size_t *n_out)
{
	struct port_map_ctx c = {.w = w, .map = n};
	size_t len = n && n->type == YAML_MAPPING_NODE ? zr_yaml_len(n) : 0;
	if (len && !(c.v = calloc(len, sizeof(*c.v))))
		return zr_yaml_fail(w, n, "out of memory");
	if (zr_yaml_map(w, n, port_pair, &c) != 0) {
		free(c.v);
		return -1;
	}
	free(*out);
	*out = c.v;
	*n_out = c.n;
	return 0;
}
