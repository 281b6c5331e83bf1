/* The config file of SPEC.md ("Config file"): settings here, local state in
 * state.c. Every key has a handler; anything else is an error that names
 * file, line and dotted key. */
#include "ctl/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl/config-int.h"
#include "ctl/yamlwalk.h"
#include "io/log.h"

struct loader {
	zr_config_t *cfg;
	char *dir; /* folder of the config file: base of relative paths */
	yaml_node_t *local_xds, *local_xds_path_key;
	bool local_xds_set, local_xds_path_set;
	bool have_node;
};

static const char *const io_backend_names[] = {"auto", "uring", "epoll", NULL};
static const char *const record_crypto_names[] = {"auto", "ipsec-mb", "openssl", "dpdk", "ktls", NULL};
static const char *const record_layer_names[] = {"zring", "openssl", NULL};
/* TLS 1.3 is the only version HBONE speaks, so only its suites make sense. */
static const char *const tls13_suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
					   "TLS_CHACHA20_POLY1305_SHA256", NULL};

static char *abs_path(const char *dir, const char *path)
{
	char *out;
	if (path[0] == '/')
		return strdup(path);
	if (asprintf(&out, "%s/%s", dir, path) < 0)
		return NULL;
	return out;
}

static int path_field(zr_yaml_walk_t *w, struct loader *ld, yaml_node_t *n, char **out)
{
	char *raw = NULL;
	if (zr_yaml_str_opt(w, n, &raw) != 0)
		return -1;
	free(*out);
	*out = NULL;
	if (!raw)
		return 0;
	if (!*raw) {
		free(raw);
		return zr_yaml_fail(w, n, "empty path");
	}
	*out = abs_path(ld->dir, raw);
	free(raw);
	return *out ? 0 : zr_yaml_fail(w, n, "out of memory");
}

/* "0-3,6,8-9": ranges ascending; CPU numbers below 4096 (CONFIG_NR_CPUS). */
static int parse_cpus(zr_yaml_walk_t *w, yaml_node_t *n, zr_config_t *cfg)
{
	if (zr_yaml_str_opt(w, n, &cfg->cpus) != 0)
		return -1;
	free(cfg->cpu_list);
	cfg->cpu_list = NULL;
	cfg->n_cpu_list = 0;
	if (!cfg->cpus)
		return 0;
	size_t cap = 0;
	const char *p = cfg->cpus;
	for (;;) {
		char *end;
		if (*p < '0' || *p > '9')
			goto bad;
		unsigned long lo = strtoul(p, &end, 10), hi = lo;
		p = end;
		if (*p == '-') {
			p++;
			if (*p < '0' || *p > '9')
				goto bad;
			hi = strtoul(p, &end, 10);
			p = end;
		}
		if (hi < lo || hi >= 4096)
			goto bad;
		for (unsigned long c = lo; c <= hi; c++) {
			bool seen = false;
			for (size_t i = 0; i < cfg->n_cpu_list; i++)
				seen |= cfg->cpu_list[i] == c;
			if (seen)
				continue;
			if (cfg->n_cpu_list == cap) {
				cap = cap ? cap * 2 : 16;
				unsigned *nl = realloc(cfg->cpu_list, cap * sizeof(*nl));
				if (!nl)
					return zr_yaml_fail(w, n, "out of memory");
				cfg->cpu_list = nl;
			}
			cfg->cpu_list[cfg->n_cpu_list++] = (unsigned)c;
		}
		if (!*p)
			break;
		if (*p != ',')
			goto bad;
		p++;
	}
	return 0;
bad:
	return zr_yaml_fail(w, n, "bad CPU list \"%s\" (e.g. \"0-3,6,8-9\")", cfg->cpus);
}

static int parse_workers(zr_yaml_walk_t *w, yaml_node_t *n, zr_config_t *cfg)
{
	uint64_t v;
	if (n && n->type == YAML_SCALAR_NODE && !strcmp((const char *)n->data.scalar.value, "auto")) {
		cfg->workers = 0;
		return 0;
	}
	if (n && n->type == YAML_SCALAR_NODE && !zr_yaml_is_null(n) &&
	    strspn((const char *)n->data.scalar.value, "0123456789") != n->data.scalar.length)
		return zr_yaml_fail(w, n, "expected auto or a positive integer, got \"%s\"", n->data.scalar.value);
	if (zr_yaml_uint(w, n, 1, 4096, &v) != 0)
		return -1;
	cfg->workers = (unsigned)v;
	return 0;
}

static bool is_loopback(const zr_sockaddr_t *sa)
{
	static const uint8_t v6_loopback[16] = {[15] = 1};
	zr_ip_t ip;
	uint16_t port;
	zr_sockaddr_to_ip(sa, &ip, &port);
	if (ip.family == AF_INET)
		return ip.bytes[0] == 127;
	return !memcmp(ip.bytes, v6_loopback, 16);
}

static int listener_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	zr_config_t *cfg = ctx;
	static const struct {
		const char *name;
		size_t off;
	} names[] = {
		{"outbound", offsetof(zr_config_t, listeners.outbound)},
		{"inboundPlaintext", offsetof(zr_config_t, listeners.inbound_plaintext)},
		{"hbone", offsetof(zr_config_t, listeners.hbone)},
		{"socks5", offsetof(zr_config_t, listeners.socks5)},
		{"admin", offsetof(zr_config_t, listeners.admin)},
		{"metrics", offsetof(zr_config_t, listeners.metrics)},
		{"readiness", offsetof(zr_config_t, listeners.readiness)},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(key, names[i].name))
			continue;
		zr_listener_cfg_t *l = (zr_listener_cfg_t *)((char *)cfg + names[i].off);
		if (zr_yaml_is_null(v)) {
			l->enabled = false;
			return 0;
		}
		const char *s = zr_yaml_text(w, v);
		if (!s)
			return -1;
		if (zr_addr_parse(s, &l->addr) != 0)
			return zr_yaml_fail(w, v, "bad address \"%s\" (want ip:port or [ip6]:port)", s);
		/* The admin API can stop the proxy: never expose it off-host. */
		if (l == &cfg->listeners.admin && !is_loopback(&l->addr))
			return zr_yaml_fail(w, v, "admin listener must be on a loopback address, got \"%s\"", s);
		l->enabled = true;
		return 0;
	}
	return 1;
}

static int suite_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	int idx;
	if (zr_yaml_enum(w, item, "TLS 1.3 cipher suite", tls13_suites, &idx) != 0)
		return -1;
	return 0;
}

static int tls_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	zr_config_t *cfg = ctx;
	int idx;
	if (!strcmp(key, "cipherSuites")) {
		if (zr_yaml_seq(w, v, suite_item, NULL) != 0)
			return -1;
		if (zr_yaml_is_null(v) || zr_yaml_len(v) == 0)
			return zr_yaml_fail(w, v, "at least one cipher suite is needed");
		return zr_yaml_str_list(w, v, &cfg->tls.cipher_suites, &cfg->tls.n_cipher_suites);
	}
	if (!strcmp(key, "recordCrypto")) {
		if (zr_yaml_enum(w, v, "record crypto backend", record_crypto_names, &idx) != 0)
			return -1;
		cfg->tls.record_crypto = (zr_record_crypto_t)idx;
		return 0;
	}
	if (!strcmp(key, "recordLayer")) {
		if (zr_yaml_enum(w, v, "record layer", record_layer_names, &idx) != 0)
			return -1;
		cfg->tls.record_layer = (zr_record_layer_t)idx;
		return 0;
	}
	if (!strcmp(key, "opensslProvider")) {
		if (zr_yaml_str_opt(w, v, &cfg->tls.openssl_provider) != 0)
			return -1;
		if (cfg->tls.openssl_provider && !cfg->tls.openssl_provider[0])
			return zr_yaml_fail(w, v, "expected a provider name (or null for none)");
		return 0;
	}
	return 1;
}

struct cert_ctx {
	struct loader *ld;
	zr_identity_cert_t *c;
};

static int cert_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct cert_ctx *cc = ctx;
	if (!strcmp(key, "identity")) {
		if (zr_yaml_str(w, v, &cc->c->identity) != 0)
			return -1;
		if (strncmp(cc->c->identity, "spiffe://", 9) != 0)
			return zr_yaml_fail(w, v, "identity must be a spiffe:// URI");
		return 0;
	}
	if (!strcmp(key, "cert"))
		return path_field(w, cc->ld, v, &cc->c->cert);
	if (!strcmp(key, "key"))
		return path_field(w, cc->ld, v, &cc->c->key);
	return 1;
}

static int cert_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	struct loader *ld = ctx;
	struct cert_ctx cc = {ld, &ld->cfg->identity.certificates[i]};
	ld->cfg->identity.n_certificates = i + 1;
	if (zr_yaml_map(w, item, cert_field, &cc) != 0)
		return -1;
	if (zr_yaml_is_null(item))
		return zr_yaml_fail(w, item, "expected a map, got null");
	const char *missing = !cc.c->identity ? "identity" : !cc.c->cert ? "cert" : !cc.c->key ? "key" : NULL;
	if (missing) {
		zr_yaml_push_key(w, missing);
		return zr_yaml_fail(w, item, "missing required key");
	}
	return 0;
}

static void free_certs(zr_config_t *cfg)
{
	for (size_t i = 0; i < cfg->identity.n_certificates; i++) {
		zr_identity_cert_t *c = &cfg->identity.certificates[i];
		free(c->identity);
		free(c->cert);
		free(c->key);
	}
	free(cfg->identity.certificates);
	cfg->identity.certificates = NULL;
	cfg->identity.n_certificates = 0;
}

static int identity_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct loader *ld = ctx;
	zr_config_t *cfg = ld->cfg;
	if (!strcmp(key, "caCertificates"))
		return path_field(w, ld, v, &cfg->identity.ca_certificates);
	if (!strcmp(key, "caAddress"))
		return zr_yaml_str_opt(w, v, &cfg->identity.ca_address);
	if (!strcmp(key, "certificates")) {
		free_certs(cfg);
		size_t n = v && v->type == YAML_SEQUENCE_NODE ? zr_yaml_len(v) : 0;
		if (n && !(cfg->identity.certificates = calloc(n, sizeof(zr_identity_cert_t))))
			return zr_yaml_fail(w, v, "out of memory");
		return zr_yaml_seq(w, v, cert_item, ld);
	}
	return 1;
}

static int xds_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct loader *ld = ctx;
	if (!strcmp(key, "address"))
		return zr_yaml_str_opt(w, v, &ld->cfg->xds.address);
	if (!strcmp(key, "rootCert"))
		return path_field(w, ld, v, &ld->cfg->xds.root_cert);
	if (!strcmp(key, "tokenFile"))
		return path_field(w, ld, v, &ld->cfg->xds.token_file);
	return 1;
}

static int top_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct loader *ld = ctx;
	zr_config_t *cfg = ld->cfg;
	uint64_t u;
	int idx;

	if (!strcmp(key, "node")) {
		if (zr_yaml_str(w, v, &cfg->node) != 0)
			return -1;
		if (!*cfg->node)
			return zr_yaml_fail(w, v, "node must not be empty");
		ld->have_node = true;
		return 0;
	}
	if (!strcmp(key, "trustDomain") || !strcmp(key, "clusterId")) {
		char **dst = key[0] == 't' ? &cfg->trust_domain : &cfg->cluster_id;
		if (zr_yaml_str(w, v, dst) != 0)
			return -1;
		return **dst ? 0 : zr_yaml_fail(w, v, "must not be empty");
	}
	if (!strcmp(key, "workers"))
		return parse_workers(w, v, cfg);
	if (!strcmp(key, "cpus"))
		return parse_cpus(w, v, cfg);
	if (!strcmp(key, "ioBackend")) {
		if (zr_yaml_enum(w, v, "io backend", io_backend_names, &idx) != 0)
			return -1;
		cfg->io_backend = (zr_io_backend_kind_t)idx;
		return 0;
	}
	if (!strcmp(key, "listeners"))
		return zr_yaml_map(w, v, listener_field, cfg);
	if (!strcmp(key, "tls"))
		return zr_yaml_map(w, v, tls_field, cfg);
	if (!strcmp(key, "identity"))
		return zr_yaml_map(w, v, identity_field, ld);
	if (!strcmp(key, "xds"))
		return zr_yaml_map(w, v, xds_field, ld);
	if (!strcmp(key, "localXds")) {
		if (!zr_yaml_is_null(v) && v->type != YAML_MAPPING_NODE)
			return zr_yaml_fail(w, v, "expected a map, got %s", zr_yaml_kind(v));
		ld->local_xds = zr_yaml_is_null(v) ? NULL : v;
		ld->local_xds_set = ld->local_xds != NULL;
		if (ld->local_xds_set && ld->local_xds_path_set)
			return zr_yaml_fail(w, v, "localXds and localXdsPath may not both be set");
		return 0;
	}
	if (!strcmp(key, "localXdsPath")) {
		if (path_field(w, ld, v, &cfg->local_xds_path) != 0)
			return -1;
		ld->local_xds_path_set = cfg->local_xds_path != NULL;
		ld->local_xds_path_key = v;
		if (ld->local_xds_set && ld->local_xds_path_set)
			return zr_yaml_fail(w, v, "localXds and localXdsPath may not both be set");
		return 0;
	}
	if (!strcmp(key, "drainTimeout"))
		return zr_yaml_duration(w, v, &cfg->drain_timeout_ms);
	if (!strcmp(key, "poolIdleTimeout"))
		return zr_yaml_duration(w, v, &cfg->pool_idle_timeout_ms);
	if (!strcmp(key, "connectTimeout"))
		return zr_yaml_duration(w, v, &cfg->connect_timeout_ms);
	if (!strcmp(key, "poolMaxStreamsPerConnection")) {
		if (zr_yaml_uint(w, v, 1, INT32_MAX, &u) != 0)
			return -1;
		cfg->pool_max_streams_per_connection = (uint32_t)u;
		return 0;
	}
	if (!strcmp(key, "logLevel")) {
		zr_log_level_t lvl;
		const char *s = zr_yaml_is_null(v) ? NULL : zr_yaml_text(w, v);
		if (!s && zr_yaml_is_null(v))
			return zr_yaml_fail(w, v, "expected a log level, got null");
		if (!s)
			return -1;
		if (zr_log_parse_level(s, &lvl) != 0)
			return zr_yaml_fail(
				w, v, "unknown log level \"%s\" (want error | warn | info | debug | trace | off)", s);
		cfg->log_level = (int)lvl;
		return 0;
	}
	return 1;
}

static int set_listener(zr_listener_cfg_t *l, const char *addr)
{
	l->enabled = addr != NULL;
	return addr ? zr_addr_parse(addr, &l->addr) : 0;
}

static int set_defaults(zr_config_t *cfg)
{
	static const char *const suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"};
	cfg->trust_domain = strdup("cluster.local");
	cfg->cluster_id = strdup("Kubernetes");
	cfg->tls.cipher_suites = calloc(2, sizeof(char *));
	if (!cfg->trust_domain || !cfg->cluster_id || !cfg->tls.cipher_suites)
		return -ENOMEM;
	for (size_t i = 0; i < 2; i++) {
		if (!(cfg->tls.cipher_suites[i] = strdup(suites[i])))
			return -ENOMEM;
		cfg->tls.n_cipher_suites = i + 1;
	}
	cfg->workers = 0;
	cfg->io_backend = ZR_IO_BACKEND_AUTO;
	cfg->tls.record_crypto = ZR_RECORD_CRYPTO_AUTO;
	cfg->tls.record_layer = ZR_RECORD_LAYER_ZRING;
	cfg->drain_timeout_ms = 30 * 1000;
	cfg->pool_max_streams_per_connection = 100;
	cfg->pool_idle_timeout_ms = 5 * 60 * 1000;
	cfg->connect_timeout_ms = 10 * 1000;
	cfg->log_level = ZR_LOG_INFO;
	if (set_listener(&cfg->listeners.outbound, "127.0.0.1:15001") ||
	    set_listener(&cfg->listeners.inbound_plaintext, "0.0.0.0:15006") ||
	    set_listener(&cfg->listeners.hbone, "0.0.0.0:15008") || set_listener(&cfg->listeners.socks5, NULL) ||
	    set_listener(&cfg->listeners.admin, "127.0.0.1:15000") ||
	    set_listener(&cfg->listeners.metrics, "0.0.0.0:15020") ||
	    set_listener(&cfg->listeners.readiness, "0.0.0.0:15021"))
		return -EINVAL;
	return 0;
}

static void set_error(zr_config_error_t *err, const char *file, unsigned line, unsigned col, const char *key,
		      const char *msg, const char *detail)
{
	snprintf(err->file, sizeof(err->file), "%s", file ? file : "");
	err->line = line;
	err->column = col;
	snprintf(err->key, sizeof(err->key), "%s", key ? key : "");
	snprintf(err->message, sizeof(err->message), "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
}

/* Loads the first YAML document of buf; on a syntax error fills err. */
static int load_doc(const char *buf, size_t len, const char *file, yaml_document_t *doc, zr_config_error_t *err)
{
	yaml_parser_t parser;
	if (!yaml_parser_initialize(&parser)) {
		set_error(err, file, 0, 0, NULL, "out of memory", NULL);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, doc)) {
		char msg[400];
		char ctx[200] = "";
		/* The problem is often found far from its cause (an unclosed
		 * bracket at end of file): name where the construct began. */
		if (parser.context)
			snprintf(ctx, sizeof(ctx), " %s started at line %zu", parser.context,
				 parser.context_mark.line + 1);
		snprintf(msg, sizeof(msg), "YAML syntax error: %s%s", parser.problem ? parser.problem : "unknown", ctx);
		set_error(err, file, (unsigned)parser.problem_mark.line + 1, (unsigned)parser.problem_mark.column + 1,
			  NULL, msg, NULL);
		yaml_parser_delete(&parser);
		return -1;
	}
	yaml_parser_delete(&parser);
	return 0;
}

/* Config and state files are read whole, up to this (a path to /dev/zero
 * or a runaway file is an error, not an endless read). */
#define MAX_CONFIG_FILE (64u << 20)

static int read_file(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	errno = 0;
	while (buf) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (n < cap)
			break;
		if (cap >= MAX_CONFIG_FILE) {
			free(buf);
			fclose(f);
			return -EFBIG;
		}
		char *nb = realloc(buf, cap * 2);
		if (!nb) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = nb;
		cap *= 2;
	}
	int rc = !buf ? -ENOMEM : ferror(f) ? -(errno ? errno : EIO) : 0;
	fclose(f);
	if (rc) {
		free(buf);
		return rc;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* The separate state file: errors inside it name that file. */
static int load_state_file(struct loader *ld, zr_yaml_walk_t *cw, zr_config_error_t *err)
{
	zr_config_t *cfg = ld->cfg;
	char *buf;
	size_t len;
	int rc = read_file(cfg->local_xds_path, &buf, &len);
	if (rc < 0) {
		zr_yaml_push_key(cw, "localXdsPath");
		return zr_yaml_fail(cw, ld->local_xds_path_key, "cannot read %s: %s", cfg->local_xds_path,
				    strerror(-rc));
	}
	yaml_document_t doc;
	if (load_doc(buf, len, cfg->local_xds_path, &doc, err) != 0) {
		free(buf);
		return -1;
	}
	zr_yaml_walk_t w;
	zr_yaml_walk_init(&w, &doc, cfg->local_xds_path, err);
	rc = zr_state_parse(&w, yaml_document_get_root_node(&doc), cfg, &cfg->state);
	yaml_document_delete(&doc);
	free(buf);
	return rc;
}

static int load(struct loader *ld, yaml_document_t *doc, const char *file, zr_config_error_t *err)
{
	zr_yaml_walk_t w;
	zr_yaml_walk_init(&w, doc, file, err);
	yaml_node_t *root = yaml_document_get_root_node(doc);
	if (!root || zr_yaml_is_null(root)) {
		set_error(err, file, 1, 1, "node", "missing required key (the file is empty)", NULL);
		return -1;
	}
	if (root->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(&w, root, "expected a map at the top level, got %s", zr_yaml_kind(root));
	if (zr_yaml_map(&w, root, top_field, ld) != 0)
		return -1;
	if (!ld->have_node) {
		zr_yaml_push_key(&w, "node");
		return zr_yaml_fail(&w, root, "missing required key");
	}
	if (ld->local_xds) {
		zr_yaml_push_key(&w, "localXds");
		return zr_state_parse(&w, ld->local_xds, ld->cfg, &ld->cfg->state);
	}
	if (ld->cfg->local_xds_path)
		return load_state_file(ld, &w, err);
	return zr_state_parse(&w, NULL, ld->cfg, &ld->cfg->state);
}

static char *make_abs(const char *name)
{
	char cwd[4096];
	char *out;
	if (name[0] == '/')
		return strdup(name);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	if (asprintf(&out, "%s/%s", cwd, name[0] == '.' && name[1] == '/' ? name + 2 : name) < 0)
		return NULL;
	return out;
}

int zr_config_load_string(const char *yaml, size_t len, const char *name, zr_config_t **out, zr_config_error_t *err)
{
	struct loader ld = {0};
	yaml_document_t doc;
	int rc = -ENOMEM;

	memset(err, 0, sizeof(*err));
	*out = NULL;
	if (!name)
		name = "<string>";
	ld.cfg = calloc(1, sizeof(*ld.cfg));
	if (!ld.cfg || !(ld.cfg->path = make_abs(name)) || !(ld.dir = strdup(ld.cfg->path)))
		goto fail_oom;
	*strrchr(ld.dir, '/') = '\0';
	if (!ld.dir[0]) {
		free(ld.dir);
		if (!(ld.dir = strdup("")))
			goto fail_oom;
	}
	if (set_defaults(ld.cfg) != 0)
		goto fail_oom;
	if (load_doc(yaml, len, name, &doc, err) != 0) {
		rc = -1;
		goto fail;
	}
	rc = load(&ld, &doc, name, err);
	yaml_document_delete(&doc);
	if (rc != 0)
		goto fail;
	free(ld.dir);
	*out = ld.cfg;
	return 0;
fail_oom:
	set_error(err, name, 0, 0, NULL, "out of memory", NULL);
fail:
	free(ld.dir);
	zr_config_free(ld.cfg);
	return rc;
}

int zr_config_load(const char *path, zr_config_t **out, zr_config_error_t *err)
{
	char *buf;
	size_t len;
	memset(err, 0, sizeof(*err));
	*out = NULL;
	int rc = read_file(path, &buf, &len);
	if (rc < 0) {
		set_error(err, path, 0, 0, NULL, "cannot read config file", strerror(-rc));
		return rc;
	}
	rc = zr_config_load_string(buf, len, path, out, err);
	free(buf);
	return rc;
}

void zr_config_free(zr_config_t *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	free(cfg->node);
	free(cfg->trust_domain);
	free(cfg->cluster_id);
	free(cfg->cpus);
	free(cfg->cpu_list);
	zr_yaml_free_strv(cfg->tls.cipher_suites, cfg->tls.n_cipher_suites);
	free(cfg->tls.openssl_provider);
	free(cfg->identity.ca_certificates);
	free_certs(cfg);
	free(cfg->identity.ca_address);
	free(cfg->xds.address);
	free(cfg->xds.root_cert);
	free(cfg->xds.token_file);
	free(cfg->local_xds_path);
	zr_state_free(&cfg->state);
	free(cfg);
}

const char *zr_config_error_str(const zr_config_error_t *err, char *buf, size_t cap)
{
	char pos[32] = "";
	if (err->line)
		snprintf(pos, sizeof(pos), ":%u:%u", err->line, err->column);
	snprintf(buf, cap, "%s%s: %s%s%s", err->file, pos, err->key, err->key[0] ? ": " : "", err->message);
	return buf;
}
