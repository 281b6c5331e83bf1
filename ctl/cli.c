/* `zring ctl`: asks a running zring's admin endpoint for /config_dump (or
 * /stats) and prints it as tables in the style of `istioctl ztunnel-config`.
 * JSON is YAML flow syntax, so libyaml (already a dependency) parses it. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <yaml.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>

#include "ctl/server.h"

#define TIMEOUT_MS   5000
#define RESPONSE_MAX (256u << 20)

static const char usage[] = "usage: zring ctl workloads|services|policies|certs|connections|stats"
			    " [--admin HOST:PORT] [--json]\n"
			    "  --admin  admin endpoint (default $ZRING_ADMIN, else 127.0.0.1:15000)\n"
			    "  --json   print the raw section as JSON\n";

static int connect_timeout(const struct addrinfo *ai)
{
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int err = 0;
	socklen_t len = sizeof(err);
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		if (errno != EINPROGRESS)
			err = errno;
		else if (poll(&p, 1, TIMEOUT_MS) <= 0)
			err = ETIMEDOUT;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
	}
	struct timeval tv = {.tv_sec = TIMEOUT_MS / 1000};
	if (!err && (fcntl(fd, F_SETFL, 0) < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
		     setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0))
		err = errno;
	if (err) {
		close(fd);
		return -err;
	}
	return fd;
}

/* GETs `path` from `admin` ("host:port", "[v6]:port"). Returns the HTTP
 * status with the body in `body`, or a negative errno. */
static int http_get(const char *admin, const char *path, zr_strbuf_t *body)
{
	char host[256];
	const char *colon = strrchr(admin, ':');
	if (!colon || (size_t)(colon - admin) >= sizeof(host))
		return -EINVAL;
	const char *h = admin;
	size_t hlen = (size_t)(colon - admin);
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		return -EHOSTUNREACH;
	int fd = -EHOSTUNREACH;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
		fd = connect_timeout(ai);
	freeaddrinfo(res);
	if (fd < 0)
		return fd;
	zr_strbuf_t resp = ZR_STRBUF_INIT;
	zr_strbuf_printf(&resp, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, admin);
	int rc = send(fd, resp.data, resp.len, MSG_NOSIGNAL) == (ssize_t)resp.len ? 0 : -EIO;
	zr_strbuf_reset(&resp);
	char buf[16384];
	ssize_t n;
	while (rc == 0 && (n = recv(fd, buf, sizeof(buf), 0)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || resp.len + (size_t)n > RESPONSE_MAX)
			rc = n < 0 ? -(errno == EAGAIN ? ETIMEDOUT : errno) : -EFBIG;
		else
			zr_strbuf_append(&resp, buf, (size_t)n);
	}
	close(fd);
	int status = 0;
	const char *sep = resp.data ? strstr(resp.data, "\r\n\r\n") : NULL;
	if (rc == 0 && (resp.oom || !sep || sscanf(resp.data, "HTTP/1.%*[01] %d", &status) != 1))
		rc = -EPROTO;
	if (rc == 0) {
		zr_strbuf_append(body, sep + 4, resp.len - (size_t)(sep + 4 - resp.data));
		rc = status;
	}
	zr_strbuf_free(&resp);
	return rc;
}

/* Tables: cells are copied; columns padded to the widest cell plus 3. */
struct table {
	size_t ncols, ncells, cap;
	char **cells;
};

static void cell(struct table *t, const char *s)
{
	if (t->ncells == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		char **c = realloc(t->cells, cap * sizeof(*c));
		if (!c)
			return;
		t->cells = c;
		t->cap = cap;
	}
	t->cells[t->ncells++] = strdup(s && *s ? s : "-");
}

static void table_print(struct table *t)
{
	size_t w[16] = {0};
	for (size_t i = 0; i < t->ncells; i++)
		if (t->cells[i] && strlen(t->cells[i]) > w[i % t->ncols])
			w[i % t->ncols] = strlen(t->cells[i]);
	for (size_t i = 0; i < t->ncells; i++) {
		size_t col = i % t->ncols;
		const char *s = t->cells[i] ? t->cells[i] : "?";
		if (col + 1 == t->ncols)
			printf("%s\n", s);
		else
			printf("%-*s   ", (int)w[col], s);
		free(t->cells[i]);
	}
	free(t->cells);
}

static yaml_node_t *member(yaml_document_t *d, yaml_node_t *map, const char *k)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *kn = yaml_document_get_node(d, p->key);
		if (kn && kn->type == YAML_SCALAR_NODE && strcmp((char *)kn->data.scalar.value, k) == 0)
			return yaml_document_get_node(d, p->value);
	}
	return NULL;
}

static bool is_null(const yaml_node_t *n)
{
	return !n || (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		      strcmp((char *)n->data.scalar.value, "null") == 0);
}

static const char *text(yaml_document_t *d, yaml_node_t *map, const char *k)
{
	yaml_node_t *n = member(d, map, k);
	return !is_null(n) && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : "";
}

static size_t seq_len(const yaml_node_t *n)
{
	return n && n->type == YAML_SEQUENCE_NODE ?
		       (size_t)(n->data.sequence.items.top - n->data.sequence.items.start) :
		       0;
}

static yaml_node_t *seq_at(yaml_document_t *d, yaml_node_t *n, size_t i)
{
	return yaml_document_get_node(d, n->data.sequence.items.start[i]);
}

/* Scalars of a sequence joined by ",", after `strip` (for "network/ip"). */
static void join(yaml_document_t *d, yaml_node_t *seq, bool strip_network, zr_strbuf_t *out)
{
	zr_strbuf_reset(out);
	for (size_t i = 0; i < seq_len(seq); i++) {
		yaml_node_t *n = seq_at(d, seq, i);
		if (n->type != YAML_SCALAR_NODE)
			continue;
		const char *s = (const char *)n->data.scalar.value, *slash = strchr(s, '/');
		zr_strbuf_printf(out, "%s%s", out->len ? "," : "", strip_network && slash ? slash + 1 : s);
	}
}

static size_t map_len(const yaml_node_t *n)
{
	return n && n->type == YAML_MAPPING_NODE ? (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start) :
						   0;
}

static yaml_node_t *map_value_at(yaml_document_t *d, yaml_node_t *n, size_t i)
{
	return yaml_document_get_node(d, n->data.mapping.pairs.start[i].value);
}

/* istioctl's waypoint column: the name of the service the `waypoint`
 * destination ("<ns>/<hostname>" or a VIP "<network>/<ip>") names, "NA"
 * when no service does, "None" without a waypoint. */
static const char *waypoint_name(yaml_document_t *d, yaml_node_t *e, yaml_node_t *services, zr_strbuf_t *tmp)
{
	yaml_node_t *wp = member(d, e, "waypoint");
	if (is_null(wp))
		return "None";
	const char *dest = text(d, wp, "destination");
	for (size_t i = 0; i < seq_len(services); i++) {
		yaml_node_t *s = seq_at(d, services, i);
		zr_strbuf_reset(tmp);
		zr_strbuf_printf(tmp, "%s/%s", text(d, s, "namespace"), text(d, s, "hostname"));
		bool hit = strcmp(tmp->data, dest) == 0;
		yaml_node_t *vips = member(d, s, "vips");
		for (size_t j = 0; !hit && j < seq_len(vips); j++) {
			yaml_node_t *v = seq_at(d, vips, j);
			hit = v->type == YAML_SCALAR_NODE && strcmp((const char *)v->data.scalar.value, dest) == 0;
		}
		if (hit)
			return text(d, s, "name");
	}
	return "NA";
}

/* A decimal serial number in hex, as istioctl shows it. */
static void serial_hex(const char *dec, char *out, size_t cap)
{
	BIGNUM *bn = NULL;
	char *hex = *dec && BN_dec2bn(&bn, dec) ? BN_bn2hex(bn) : NULL;
	snprintf(out, cap, "%s", hex ? hex : "");
	for (char *p = out; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
	OPENSSL_free(hex);
	BN_free(bn);
}

static void cert_rows(yaml_document_t *d, yaml_node_t *e, struct table *t)
{
	yaml_node_t *chain = member(d, e, "certChain"), *roots = member(d, e, "rootCerts");
	char serial[128];
	if (!seq_len(chain)) {
		const char *row[] = {text(d, e, "identity"), "", text(d, e, "state"), "", "", ""};
		for (size_t c = 0; c < 6; c++)
			cell(t, row[c]);
		return;
	}
	for (size_t i = 0; i < seq_len(chain) + seq_len(roots); i++) {
		bool root = i >= seq_len(chain);
		yaml_node_t *x = root ? seq_at(d, roots, i - seq_len(chain)) : seq_at(d, chain, i);
		serial_hex(text(d, x, "serialNumber"), serial, sizeof(serial));
		const char *row[] = {text(d, e, "identity"),	   root ? "Root" : i ? "Intermediate" : "Leaf",
				     text(d, e, "state"),	   serial,
				     text(d, x, "expirationTime"), text(d, x, "validFrom")};
		for (size_t c = 0; c < 6; c++)
			cell(t, row[c]);
	}
}

static void emit_json(yaml_document_t *d, yaml_node_t *n, zr_strbuf_t *o, int indent)
{
	if (n->type == YAML_SCALAR_NODE) {
		if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
			zr_strbuf_puts(o, (const char *)n->data.scalar.value);
		else
			zr_strbuf_json_str(o, (const char *)n->data.scalar.value);
		return;
	}
	bool map = n->type == YAML_MAPPING_NODE;
	size_t count = map ? (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start) : seq_len(n);
	zr_strbuf_puts(o, map ? "{" : "[");
	for (size_t i = 0; i < count; i++) {
		zr_strbuf_printf(o, "%s\n%*s", i ? "," : "", indent + 2, "");
		if (map) {
			yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
			yaml_node_t *k = yaml_document_get_node(d, p->key);
			zr_strbuf_json_str(o, k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?");
			zr_strbuf_puts(o, ": ");
			emit_json(d, yaml_document_get_node(d, p->value), o, indent + 2);
		} else {
			emit_json(d, seq_at(d, n, i), o, indent + 2);
		}
	}
	if (count)
		zr_strbuf_printf(o, "\n%*s", indent, "");
	zr_strbuf_puts(o, map ? "}" : "]");
}

static void age(const char *ms_text, char *out, size_t cap)
{
	unsigned long long ms = strtoull(ms_text, NULL, 10), s = ms / 1000;
	if (s < 60)
		snprintf(out, cap, "%llu.%llus", s, (ms % 1000) / 100);
	else if (s < 3600)
		snprintf(out, cap, "%llum%llus", s / 60, s % 60);
	else
		snprintf(out, cap, "%lluh%llum", s / 3600, (s % 3600) / 60);
}

static void print_rows(yaml_document_t *d, const char *cmd, yaml_node_t *sec, yaml_node_t *services)
{
	static const char *const heads[][8] = {
		{"workloads", "NAMESPACE", "POD-NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"},
		{"services", "NAMESPACE", "SERVICE-NAME", "SERVICE-VIP", "WAYPOINT", "ENDPOINTS"},
		{"policies", "NAMESPACE", "POLICY-NAME", "ACTION", "SCOPE"},
		{"certificates", "IDENTITY", "TYPE", "STATUS", "SERIAL-NUMBER", "NOT-AFTER", "NOT-BEFORE"},
		{"connections", "WORKER", "SOURCE", "DESTINATION", "STATE", "BYTES-UP", "BYTES-DOWN", "AGE"},
	};
	size_t h = 0;
	while (strcmp(heads[h][0], cmd) != 0)
		h++;
	struct table t = {0};
	while (t.ncols < 7 && heads[h][t.ncols + 1])
		cell(&t, heads[h][++t.ncols]);
	zr_strbuf_t tmp = ZR_STRBUF_INIT;
	char buf[64];
	for (size_t i = 0; i < seq_len(sec); i++) {
		yaml_node_t *e = seq_at(d, sec, i);
		if (h == 0) {
			join(d, member(d, e, "workloadIps"), false, &tmp);
			const char *row[] = {
				text(d, e, "namespace"), text(d, e, "name"), tmp.data, text(d, e, "node"), "",
				text(d, e, "protocol")};
			zr_strbuf_t wp = ZR_STRBUF_INIT;
			row[4] = waypoint_name(d, e, services, &wp);
			for (size_t c = 0; c < 6; c++)
				cell(&t, row[c]);
			zr_strbuf_free(&wp);
		} else if (h == 1) {
			yaml_node_t *eps = member(d, e, "endpoints");
			size_t healthy = 0;
			for (size_t j = 0; j < map_len(eps); j++)
				healthy += strcmp(text(d, map_value_at(d, eps, j), "status"), "Healthy") == 0;
			snprintf(buf, sizeof(buf), "%zu/%zu", healthy, map_len(eps));
			join(d, member(d, e, "vips"), true, &tmp);
			zr_strbuf_t wp = ZR_STRBUF_INIT;
			const char *row[] = {text(d, e, "namespace"), text(d, e, "name"), tmp.data,
					     waypoint_name(d, e, services, &wp), buf};
			for (size_t c = 0; c < 5; c++)
				cell(&t, row[c]);
			zr_strbuf_free(&wp);
		} else if (h == 2) {
			const char *row[] = {text(d, e, "namespace"), text(d, e, "name"), text(d, e, "action"),
					     text(d, e, "scope")};
			for (size_t c = 0; c < 4; c++)
				cell(&t, row[c]);
		} else if (h == 3) {
			cert_rows(d, e, &t);
		} else {
			age(text(d, e, "ageMs"), buf, sizeof(buf));
			const char *row[] = {text(d, e, "worker"),
					     text(d, e, "src"),
					     text(d, e, "dst"),
					     text(d, e, "state"),
					     text(d, e, "bytesUp"),
					     text(d, e, "bytesDown"),
					     buf};
			for (size_t c = 0; c < 7; c++)
				cell(&t, row[c]);
		}
	}
	zr_strbuf_free(&tmp);
	table_print(&t);
}

static int show_dump(const char *cmd, const char *body, size_t len, bool json)
{
	yaml_parser_t p;
	yaml_document_t d;
	if (!yaml_parser_initialize(&p))
		return 2;
	yaml_parser_set_input_string(&p, (const unsigned char *)body, len);
	if (!yaml_parser_load(&p, &d)) {
		fprintf(stderr, "zring ctl: bad /config_dump: %s\n", p.problem ? p.problem : "parse error");
		yaml_parser_delete(&p);
		return 2;
	}
	yaml_parser_delete(&p);
	int rc = 0;
	yaml_node_t *sec = member(&d, yaml_document_get_root_node(&d), cmd);
	if (!sec) {
		fprintf(stderr, "zring ctl: /config_dump has no \"%s\"\n", cmd);
		rc = 2;
	} else if (json) {
		zr_strbuf_t o = ZR_STRBUF_INIT;
		emit_json(&d, sec, &o, 0);
		printf("%s\n", o.data ? o.data : "");
		zr_strbuf_free(&o);
	} else {
		print_rows(&d, cmd, sec, member(&d, yaml_document_get_root_node(&d), "services"));
	}
	yaml_document_delete(&d);
	return rc;
}

/* Prometheus text → NAME LABELS VALUE, our own and istio_* series only. */
static int show_stats(char *body, bool json)
{
	struct table t = {.ncols = 3};
	bool first = true;
	if (json) {
		printf("[");
	} else {
		cell(&t, "NAME");
		cell(&t, "LABELS");
		cell(&t, "VALUE");
	}
	for (char *save = NULL, *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "zring_", 6) != 0 && strncmp(line, "istio_", 6) != 0)
			continue;
		char *value = strrchr(line, ' '), *brace = strchr(line, '{'), *close = strrchr(line, '}');
		if (!value)
			continue;
		*value++ = '\0';
		const char *labels = "";
		if (brace && close && close > brace) {
			*brace = '\0';
			*close = '\0';
			labels = brace + 1;
		}
		if (json) {
			printf("%s\n  {\"name\": \"%s\", \"labels\": ", first ? "" : ",", line);
			zr_strbuf_t l = ZR_STRBUF_INIT;
			zr_strbuf_json_str(&l, labels);
			printf("%s, \"value\": %s}", l.data ? l.data : "\"\"", value);
			zr_strbuf_free(&l);
			first = false;
		} else {
			cell(&t, line);
			cell(&t, labels);
			cell(&t, value);
		}
	}
	if (json)
		printf("\n]\n");
	else
		table_print(&t);
	return 0;
}

int zr_ctl_cli_main(int argc, char **argv)
{
	const char *admin = getenv("ZRING_ADMIN"), *cmd = NULL;
	bool json = false;
	if (!admin || !*admin)
		admin = "127.0.0.1:15000";
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc)
			admin = argv[++i];
		else if (strncmp(argv[i], "--admin=", 8) == 0)
			admin = argv[i] + 8;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		} else if (i == 0 && strcmp(argv[i], "ctl") == 0) {
			continue; /* tolerate being handed argv from "ctl" on */
		} else if (!cmd && argv[i][0] != '-')
			cmd = argv[i];
		else
			cmd = "";
	}
	static const char *const cmds[] = {"workloads", "services", "policies", "certs", "connections", "stats"};
	size_t c = 0;
	while (cmd && c < 6 && strcmp(cmd, cmds[c]) != 0)
		c++;
	if (!cmd || c == 6) {
		fputs(usage, stderr);
		return 1;
	}
	zr_strbuf_t body = ZR_STRBUF_INIT;
	const char *path = c == 5 ? "/stats" : "/config_dump";
	int status = http_get(admin, path, &body), rc;
	if (status < 0) {
		fprintf(stderr, "zring ctl: cannot reach the admin endpoint at %s: %s\n", admin, strerror(-status));
		rc = 2;
	} else if (status != 200 || body.oom) {
		fprintf(stderr, "zring ctl: %s%s answered HTTP %d\n", admin, path, status);
		rc = 2;
	} else if (c == 5) {
		rc = show_stats(body.data ? body.data : (char[]){""}, json);
	} else {
		rc = show_dump(c == 3 ? "certificates" : cmd, body.data ? body.data : "", body.len, json);
	}
	zr_strbuf_free(&body);
	return rc;
}
