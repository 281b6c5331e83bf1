/* Private to ctl/: walking a libyaml document with the dotted key path and
 * source position kept for error messages (zr_config_error_t). Control
 * thread only. */
#ifndef ZR_CTL_YAMLWALK_H
#define ZR_CTL_YAMLWALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "ctl/config-t.h"

typedef struct zr_yaml_walk {
	yaml_document_t *doc;
	const char *file;
	zr_config_error_t *err;
	char key[256]; /* dotted path of the node being read */
	size_t key_len;
	size_t budget; /* nodes left to visit: aliases could otherwise blow up a walk */
} zr_yaml_walk_t;

void zr_yaml_walk_init(zr_yaml_walk_t *w, yaml_document_t *doc, const char *file, zr_config_error_t *err);

/* Fills w->err at node n (file, line, column, current key) and returns -1. */
int zr_yaml_fail(zr_yaml_walk_t *w, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Key path: push returns the length to restore with zr_yaml_pop. */
size_t zr_yaml_push_key(zr_yaml_walk_t *w, const char *key);
size_t zr_yaml_push_index(zr_yaml_walk_t *w, size_t i);
void zr_yaml_pop(zr_yaml_walk_t *w, size_t len);

yaml_node_t *zr_yaml_node(zr_yaml_walk_t *w, yaml_node_item_t id);
bool zr_yaml_is_null(const yaml_node_t *n);
/* "a map", "a list", "a string": for "expected X, got Y" messages. */
const char *zr_yaml_kind(const yaml_node_t *n);
/* Number of items of a list or pairs of a map (0 for a null). */
size_t zr_yaml_len(const yaml_node_t *n);

/* Scalars. The *_opt forms take null as "unset" (NULL / untouched). Strings
 * replace (and free) what *out held, so defaults may be preset. */
int zr_yaml_str(zr_yaml_walk_t *w, yaml_node_t *n, char **out) __attribute__((warn_unused_result));
int zr_yaml_str_opt(zr_yaml_walk_t *w, yaml_node_t *n, char **out) __attribute__((warn_unused_result));
/* Scalar text of n (NUL-terminated, owned by the document), or NULL after
 * an error when n is no plain string. */
const char *zr_yaml_text(zr_yaml_walk_t *w, yaml_node_t *n);
int zr_yaml_uint(zr_yaml_walk_t *w, yaml_node_t *n, uint64_t min, uint64_t max, uint64_t *out)
	__attribute__((warn_unused_result));
int zr_yaml_port(zr_yaml_walk_t *w, yaml_node_t *n, bool allow_zero, uint16_t *out) __attribute__((warn_unused_result));
int zr_yaml_bool(zr_yaml_walk_t *w, yaml_node_t *n, bool *out) __attribute__((warn_unused_result));
/* names: NULL-terminated; *out = index of the matching name. */
int zr_yaml_enum(zr_yaml_walk_t *w, yaml_node_t *n, const char *what, const char *const *names, int *out)
	__attribute__((warn_unused_result));
/* Duration "500ms", "10s", "5m", "1h", "1m30s" or bare seconds. */
int zr_yaml_duration(zr_yaml_walk_t *w, yaml_node_t *n, uint64_t *ms) __attribute__((warn_unused_result));

/* Map walk: checks n is a map (null = empty) with scalar, unique keys, and
 * calls fn per pair with the key pushed on the path. fn returns 0, -1 (error
 * already filled) or 1 (unknown key: reported here). */
typedef int (*zr_yaml_field_fn)(zr_yaml_walk_t *w, const char *key, yaml_node_t *value, void *ctx);
int zr_yaml_map(zr_yaml_walk_t *w, yaml_node_t *n, zr_yaml_field_fn fn, void *ctx) __attribute__((warn_unused_result));

/* List walk (null = empty): fn per item with "[i]" pushed. */
typedef int (*zr_yaml_item_fn)(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx);
int zr_yaml_seq(zr_yaml_walk_t *w, yaml_node_t *n, zr_yaml_item_fn fn, void *ctx) __attribute__((warn_unused_result));

/* A list of strings into a fresh NULL-free array (null = empty). */
int zr_yaml_str_list(zr_yaml_walk_t *w, yaml_node_t *n, char ***out, size_t *n_out) __attribute__((warn_unused_result));
/* A port map {port: targetPort} (keys may be quoted, as JSON writes them). */
int zr_yaml_port_map(zr_yaml_walk_t *w, yaml_node_t *n, zr_port_map_t **out, size_t *n_out)
	__attribute__((warn_unused_result));

void zr_yaml_free_strv(char **v, size_t n);

#endif
