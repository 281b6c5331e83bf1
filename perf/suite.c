/* `zring-bench suite`: the standard comparison, in one run that starts and
 * stops everything itself. Scenarios (each optional with --scenarios):
 *   direct               client -> sink/echo, no proxy
 *   zring                one plain zring hop (SOCKS5 in, plain TCP out)
 *   haproxy              one HAProxy hop (nbthread 1, mode tcp)
 *   zring-hbone          two zring nodes: SOCKS5 into A -> mTLS HTTP/2 CONNECT -> B
 *   haproxy-mtls         an HAProxy mTLS pair in one process (TLS 1.3, verify both ways)
 *   zring-hbone-openssl  the HBONE pair with `tls.recordLayer: openssl`
 *   zring-hbone-dpdk     the HBONE pair with `recordCrypto: dpdk` (the
 *                        crypto_aesni_gcm virtual device without QAT)
 * Each runs stream (throughput), rr (latency at a fixed rate) and crr (new
 * connections) with the same in-process engine the CLI modes use, and
 * samples the proxies' CPU around each measured part only (warm-up runs
 * first, separately). Addresses: workloads 127.0.44.x / 127.0.45.x, zring
 * nodes 127.0.0.70-76, HAProxy frontends 127.0.46.x. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "perf/suite-int.h"

const zr_suite_def_t zr_suite_defs[ZR_SC_COUNT] = {
	[ZR_SC_DIRECT] = {"direct", "client -> server, no proxy", false, false, false},
	[ZR_SC_ZRING] = {"zring", "one plain zring hop: SOCKS5 into the node, plain TCP to the server", true, false,
			 false},
	[ZR_SC_HAPROXY] = {"haproxy", "one HAProxy hop: nbthread 1, mode tcp", false, true, false},
	[ZR_SC_HBONE] = {"zring-hbone", "zring HBONE pair: SOCKS5 into node A, mTLS HTTP/2 CONNECT to node B", true,
			 false, true},
	[ZR_SC_HAPROXY_MTLS] =
		{"haproxy-mtls",
		 "HAProxy mTLS pair in one process: TLS 1.3 TLS_AES_128_GCM_SHA256, verify required both "
		 "ways, nbthread 1",
		 false, true, true},
	[ZR_SC_HBONE_OPENSSL] = {"zring-hbone-openssl", "the zring HBONE pair with OpenSSL's TLS record layer", true,
				 false, true},
	[ZR_SC_HBONE_DPDK] = {"zring-hbone-dpdk",
			      "the zring HBONE pair with record crypto on a DPDK cryptodev (the crypto_aesni_gcm "
			      "virtual device unless a QAT device is configured)",
			      true, false, true},
};

const char *const zr_suite_mode_keys[ZR_PART_COUNT] = {"stream", "rr", "crr"};

/* Addresses (see the file comment). */
#define CLIENT_PLAIN  "127.0.44.2"
#define SERVER_PLAIN  "127.0.44.3"
#define CLIENT_HBONE  "127.0.45.2"
#define SERVER_HBONE  "127.0.45.3"
#define NODE_PLAIN    "127.0.0.70"
#define NODE_A	      "127.0.0.71"
#define NODE_B	      "127.0.0.72"
#define NODE_A_OSSL   "127.0.0.73"
#define NODE_B_OSSL   "127.0.0.74"
#define NODE_A_DPDK   "127.0.0.75"
#define NODE_B_DPDK   "127.0.0.76"
#define HAP_PLAIN     "127.0.46.1"
#define HAP_CLIENT    "127.0.46.2"
#define HAP_SERVER    "127.0.46.3"
#define SINK_PORT     5201
#define ECHO_PORT     5202
#define HAP_TLS_SINK  15411
#define HAP_TLS_ECHO  15412
#define SOCKS5_PORT   15080
#define READY_PORT    15021
#define SPIFFE_CLIENT "spiffe://cluster.local/ns/bench/sa/client"
#define SPIFFE_SERVER "spiffe://cluster.local/ns/bench/sa/server"

/* Where the client goes for one scenario. */
struct endpoint {
	const char *bind_ip;
	const char *target_ip;
	unsigned short sink_port, echo_port;
	const char *socks5_ip; /* NULL: connect directly */
};

/* ------------------------------------------------------------------ */
/* arguments */

#define USAGE                                                                                \
	"usage: zring-bench suite [--out DIR] [--quick] [--duration S] [--scenarios LIST]\n" \
	"                         [--rate N] [--zring PATH] [--haproxy PATH]\n"

static void usage(FILE *f)
{
	fprintf(f, USAGE "\n"
			 "Runs the standard comparison: for each scenario stream throughput (1 connection, up),\n"
			 "rr latency at a fixed rate (1 KiB each way, 8 connections) and crr (connect, 64 B\n"
			 "request/response, close), with the proxies' CPU-seconds and peak RSS. Writes report.md,\n"
			 "report.json and SVG plots into DIR.\n"
			 "\n"
			 "  --out DIR        where reports and logs go (default ./bench-out)\n"
			 "  --quick          short runs (2 s each, 0.5 s warm-up): under 2 minutes\n"
			 "  --duration S     seconds of every measured part (default 10 stream, 10 rr, 5 crr)\n"
			 "  --scenarios LIST comma-separated subset of: direct, zring, haproxy, zring-hbone,\n"
			 "                   haproxy-mtls, zring-hbone-openssl,\n"
			 "                   zring-hbone-dpdk (default all)\n"
			 "  --rate N         rr requests per second, all connections together (default 1000)\n"
			 "  --zring PATH     the zring binary (default: next to zring-bench)\n"
			 "  --haproxy PATH   the haproxy binary (default: from PATH; its scenarios are skipped\n"
			 "                   when there is none)\n"
			 "  -h, --help       this help\n");
}

static int bad_arg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_arg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "zring-bench suite: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n" USAGE "(zring-bench suite --help says more)\n");
	va_end(ap);
	return -EINVAL;
}

static int parse_positive(const char *name, const char *text, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || *end || !isfinite(v) || v <= 0 || v > max)
		return bad_arg("%s: '%s' is not a positive number in range", name, text);
	*out = v;
	return 0;
}

static int parse_scenarios(zr_suite_opts_t *o, const char *list)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", list);
	memset(o->want, 0, sizeof(o->want));
	bool any = false;
	char *save;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int found = -1;
		for (int i = 0; i < ZR_SC_COUNT; i++)
			if (strcmp(zr_suite_defs[i].name, tok) == 0)
				found = i;
		if (found < 0)
			return bad_arg("--scenarios: unknown scenario '%s' (known: direct, zring, haproxy, "
				       "zring-hbone, haproxy-mtls, zring-hbone-openssl, zring-hbone-dpdk)",
				       tok);
		o->want[found] = true;
		any = true;
	}
	if (!any)
		return bad_arg("--scenarios: '%s' names no scenario", list);
	return 0;
}

/* Returns 0, 1 for --help (exit 0), or -EINVAL after printing the usage. */
static int parse_args(int argc, char **argv, zr_suite_opts_t *o)
{
	double duration = 0;
	o->out = "bench-out";
	o->rr_rate = 1000;
	o->rr_conns = 8;
	o->crr_conns = 8;
	for (int i = 0; i < ZR_SC_COUNT; i++)
		o->want[i] = true;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = strcmp(a, "--out") == 0 || strcmp(a, "--duration") == 0 || strcmp(a, "--scenarios") == 0 ||
			     strcmp(a, "--rate") == 0 || strcmp(a, "--zring") == 0 || strcmp(a, "--haproxy") == 0;
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 1;
		}
		if (strcmp(a, "--quick") == 0) {
			o->quick = true;
			continue;
		}
		if (!takes)
			return bad_arg("unknown argument '%s'", a);
		if (!v || !*v)
			return bad_arg("%s: needs a value", a);
		i++;
		if (strcmp(a, "--out") == 0)
			o->out = v;
		else if (strcmp(a, "--zring") == 0)
			o->zring = v;
		else if (strcmp(a, "--haproxy") == 0)
			o->haproxy = v;
		else if (strcmp(a, "--duration") == 0) {
			if (parse_positive(a, v, 3600, &duration))
				return -EINVAL;
		} else if (strcmp(a, "--rate") == 0) {
			if (parse_positive(a, v, 1e7, &o->rr_rate))
				return -EINVAL;
		} else if (parse_scenarios(o, v))
			return -EINVAL;
	}
	o->stream_s = o->quick ? 2 : 10;
	o->rr_s = o->quick ? 2 : 10;
	o->crr_s = o->quick ? 2 : 5;
	o->warmup_s = o->quick ? 0.5 : 1;
	if (duration > 0) {
		o->stream_s = o->rr_s = o->crr_s = duration;
		if (o->warmup_s > duration)
			o->warmup_s = duration;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* small helpers */

static void sleep_s(double s)
{
	struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void set_addr(struct sockaddr_storage *ss, socklen_t *len, const char *ip, unsigned short port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	memset(ss, 0, sizeof(*ss));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1)
		abort(); /* only the constants above come here */
	*len = sizeof(*sin);
}

static void warn(zr_suite_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(zr_suite_t *s, const char *fmt, ...)
{
	if (s->n_warnings == sizeof(s->warnings) / sizeof(s->warnings[0]))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->warnings[s->n_warnings++], sizeof(s->warnings[0]), fmt, ap);
	va_end(ap);
	fprintf(stderr, "zring-bench suite: warning: %s\n", s->warnings[s->n_warnings - 1]);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "zring-bench suite: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int find_in_path(const char *prog, char *out)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	while (*path) {
		size_t len = strcspn(path, ":");
		if (len && snprintf(out, PATH_MAX, "%.*s/%s", (int)len, path, prog) < PATH_MAX &&
		    access(out, X_OK) == 0)
			return 0;
		path += len + (path[len] == ':');
	}
	out[0] = '\0';
	return -ENOENT;
}

/* The first line of `argv` (a version banner), or "" when it cannot run. */
static void first_line(char *const argv[], char *out, size_t cap)
{
	char buf[1024];
	int rc = zr_suite_run_capture(argv, 10, buf, sizeof(buf));
	if (rc < 0)
		buf[0] = '\0';
	snprintf(out, cap, "%.*s", (int)strcspn(buf, "\r\n"), buf);
}

/* YAML double-quoted scalar (paths under --out may hold anything). */
static void yaml_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

/* ------------------------------------------------------------------ */
/* zring and HAProxy configurations */

struct node_cfg {
	const char *node;	/* node name */
	const char *ip;		/* its listeners */
	const char *identity;	/* NULL: no HBONE */
	const char *cert, *key; /* of identity */
	bool openssl_records;
	bool dpdk;
};

static void write_workload(FILE *f, const char *sa, const char *ip, const char *protocol, const char *node)
{
	fprintf(f,
		"  - uid: bench//v1/Pod/bench/%s\n"
		"    name: %s\n"
		"    namespace: bench\n"
		"    serviceAccount: %s\n"
		"    workloadIps: [\"%s\"]\n"
		"    protocol: %s\n"
		"    node: %s\n",
		sa, sa, sa, ip, protocol, node);
}

static int write_zring_config(zr_suite_t *s, const char *path, const struct node_cfg *n, char *err, size_t cap)
{
	FILE *f = zr_suite_file_create(path, err, cap);
	if (!f)
		return -1;
	/* One worker, as HAProxy gets nbthread 1: the figures compare code
	 * paths per core, not how many cores each one grabs. */
	fprintf(f,
		"# written by zring-bench suite\n"
		"node: %s\n"
		"workers: 1\n"
		"drainTimeout: 1s\n"
		"connectTimeout: 5s\n"
		"logLevel: warn\n"
		"listeners:\n"
		"  outbound: null\n"
		"  inboundPlaintext: null\n",
		n->node);
	if (n->identity)
		fprintf(f, "  hbone: %s:15008\n", n->ip);
	else
		fprintf(f, "  hbone: null\n");
	fprintf(f,
		"  socks5: %s:%d\n"
		"  admin: %s:15000\n"
		"  metrics: %s:15020\n"
		"  readiness: %s:%d\n",
		n->ip, SOCKS5_PORT, n->ip, n->ip, n->ip, READY_PORT);
	if (n->identity) {
		fprintf(f, "tls:\n  cipherSuites: [" ZR_SUITE_CIPHER "]\n");
		if (n->openssl_records)
			fprintf(f, "  recordLayer: openssl\n");
		if (n->dpdk)
			fprintf(f, "  recordCrypto: dpdk\n");
		fprintf(f, "identity:\n  caCertificates: ");
		yaml_str(f, s->certs.ca);
		fprintf(f, "\n  certificates:\n  - identity: %s\n    cert: ", n->identity);
		yaml_str(f, n->cert);
		fprintf(f, "\n    key: ");
		yaml_str(f, n->key);
		fprintf(f, "\n");
	}
	fprintf(f, "localXds:\n  workloads:\n");
	if (n->identity) {
		write_workload(f, "client", CLIENT_HBONE, "HBONE", "node-a");
		write_workload(f, "server", SERVER_HBONE, "HBONE", "node-b");
	} else {
		/* The server is another node's plain workload: one hop only. */
		write_workload(f, "client", CLIENT_PLAIN, "TCP", n->node);
		write_workload(f, "server", SERVER_PLAIN, "TCP", "elsewhere");
	}
	return zr_suite_file_close(f, path, err, cap);
}

static int write_haproxy_config(zr_suite_t *s, const char *path, bool mtls, char *err, size_t cap)
{
	FILE *f = zr_suite_file_create(path, err, cap);
	if (!f)
		return -1;
	fprintf(f, "# written by zring-bench suite\n"
		   "global\n"
		   "    nbthread 1\n"
		   "    maxconn 2000\n");
	if (mtls)
		fprintf(f, "    ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets\n"
			   "    ssl-default-server-options ssl-min-ver TLSv1.3 no-tls-tickets\n"
			   "    ssl-default-bind-ciphersuites " ZR_SUITE_CIPHER "\n"
			   "    ssl-default-server-ciphersuites " ZR_SUITE_CIPHER "\n");
	fprintf(f, "defaults\n"
		   "    mode tcp\n"
		   "    timeout connect 5s\n"
		   "    timeout client 60s\n"
		   "    timeout server 60s\n");
	const struct {
		const char *name;
		unsigned short port, tls_port;
	} svc[] = {{"sink", SINK_PORT, HAP_TLS_SINK}, {"echo", ECHO_PORT, HAP_TLS_ECHO}};
	for (int i = 0; i < 2; i++) {
		if (!mtls) {
			fprintf(f, "listen %s\n    bind %s:%u\n    server s %s:%u\n", svc[i].name, HAP_PLAIN,
				svc[i].port, SERVER_PLAIN, svc[i].port);
			continue;
		}
		fprintf(f,
			"listen %s_client_side\n    bind %s:%u\n    server b %s:%u ssl crt \"%s\" ca-file \"%s\" verify required alpn h2\n",
			svc[i].name, HAP_CLIENT, svc[i].port, HAP_SERVER, svc[i].tls_port, s->certs.haproxy_client,
			s->certs.ca);
		fprintf(f,
			"listen %s_server_side\n    bind %s:%u ssl crt \"%s\" ca-file \"%s\" verify required alpn h2\n    server s %s:%u\n",
			svc[i].name, HAP_SERVER, svc[i].tls_port, s->certs.haproxy_server, s->certs.ca, SERVER_HBONE,
			svc[i].port);
	}
	return zr_suite_file_close(f, path, err, cap);
}

/* ------------------------------------------------------------------ */
/* starting a scenario's proxies */

static int ensure_certs(zr_suite_t *s, char *err, size_t cap)
{
	if (s->have_certs)
		return 0;
	/* also after a failure: some files may have been written */
	const char *files[] = {
		s->certs.ca,	     s->certs.client_cert,    s->certs.client_key,    s->certs.server_cert,
		s->certs.server_key, s->certs.haproxy_client, s->certs.haproxy_server};
	int rc = zr_suite_certs_make(s->work_dir, SPIFFE_CLIENT, SPIFFE_SERVER, &s->certs, err, cap);
	zr_suite_procs_remove_on_signal(files, sizeof(files) / sizeof(files[0]), s->work_dir);
	if (rc)
		return -1;
	s->have_certs = true;
	return 0;
}

/* Runs `zring check-config`, so that a refused config is reported with
 * zring's own words instead of a node that never gets ready. */
static int check_zring_config(zr_suite_t *s, const char *path, char *err, size_t cap)
{
	char *argv[] = {s->zring, "check-config", (char *)path, NULL};
	char out[1024];
	int rc = zr_suite_run_capture(argv, 20, out, sizeof(out));
	if (rc == 0)
		return 0;
	size_t n = strlen(out);
	while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
	for (char *c = out; *c; c++)
		if (*c == '\n')
			*c = ' ';
	if (rc < 0)
		snprintf(err, cap, "cannot run %.900s: %s", s->zring, strerror(-rc));
	else
		snprintf(err, cap, "zring check-config %.200s failed (status %d): %.700s", path, rc, out);
	return -1;
}

static int start_zring(zr_suite_t *s, zr_suite_scenario_t *sc, const struct node_cfg *n, char *err, size_t cap)
{
	char cfg[PATH_MAX], log[PATH_MAX], file[128];
	snprintf(file, sizeof(file), "%s-%s.yaml", sc->def->name, n->node);
	if (zr_suite_path_join(cfg, s->log_dir, file))
		return -1;
	snprintf(file, sizeof(file), "%s-%s.log", sc->def->name, n->node);
	if (zr_suite_path_join(log, s->log_dir, file))
		return -1;
	if (write_zring_config(s, cfg, n, err, cap) || check_zring_config(s, cfg, err, cap))
		return -1;
	char *argv[] = {s->zring, "--config", cfg, NULL};
	zr_suite_proc_t *p = &sc->procs[sc->n_procs];
	if (zr_suite_proc_start(p, n->node, argv, log, err, cap))
		return -1;
	sc->n_procs++;
	return zr_suite_wait_ready(p, n->ip, READY_PORT, 20, err, cap);
}

static int start_haproxy(zr_suite_t *s, zr_suite_scenario_t *sc, bool mtls, char *err, size_t cap)
{
	char cfg[PATH_MAX], log[PATH_MAX], file[128];
	snprintf(file, sizeof(file), "%s.cfg", sc->def->name);
	if (zr_suite_path_join(cfg, s->log_dir, file))
		return -1;
	snprintf(file, sizeof(file), "%s.log", sc->def->name);
	if (zr_suite_path_join(log, s->log_dir, file))
		return -1;
	if (write_haproxy_config(s, cfg, mtls, err, cap))
		return -1;
	char out[1024];
	char *check[] = {s->haproxy, "-c", "-q", "-f", cfg, NULL};
	int rc = zr_suite_run_capture(check, 20, out, sizeof(out));
	if (rc != 0) {
		snprintf(err, cap, "haproxy -c -f %.200s failed (status %d): %.700s", cfg, rc, out);
		return -1;
	}
	char *argv[] = {s->haproxy, "-db", "-f", cfg, NULL};
	zr_suite_proc_t *p = &sc->procs[sc->n_procs];
	if (zr_suite_proc_start(p, "haproxy", argv, log, err, cap))
		return -1;
	sc->n_procs++;
	const char *ip = mtls ? HAP_CLIENT : HAP_PLAIN;
	if (zr_suite_wait_listen(p, ip, SINK_PORT, 10, err, cap) ||
	    zr_suite_wait_listen(p, ip, ECHO_PORT, 10, err, cap))
		return -1;
	return 0;
}

/* Starts what scenario sc needs and says where the client goes. Returns 0;
 * or -1 with sc->failed (or sc->skipped) filled. */
static int setup(zr_suite_t *s, zr_suite_scenario_t *sc, struct endpoint *ep)
{
	char err[1024] = "";
	int id = (int)(sc->def - zr_suite_defs);
	*ep = (struct endpoint){
		.bind_ip = CLIENT_PLAIN, .target_ip = SERVER_PLAIN, .sink_port = SINK_PORT, .echo_port = ECHO_PORT};
	if (sc->def->needs_haproxy && !s->haproxy[0]) {
		snprintf(sc->skipped, sizeof(sc->skipped),
			 "haproxy is not installed (not in PATH; use --haproxy PATH)");
		return -1;
	}
	if (sc->def->needs_certs && ensure_certs(s, err, sizeof(err)))
		goto fail;
	switch (id) {
	case ZR_SC_DIRECT:
		return 0;
	case ZR_SC_ZRING: {
		const struct node_cfg n = {.node = "zr-plain", .ip = NODE_PLAIN};
		ep->socks5_ip = NODE_PLAIN;
		if (start_zring(s, sc, &n, err, sizeof(err)))
			goto fail;
		return 0;
	}
	case ZR_SC_HAPROXY:
		ep->target_ip = HAP_PLAIN;
		if (start_haproxy(s, sc, false, err, sizeof(err)))
			goto fail;
		return 0;
	case ZR_SC_HBONE:
	case ZR_SC_HBONE_OPENSSL:
	case ZR_SC_HBONE_DPDK: {
		/* node A and node B addresses of each pair */
		static const char *const ips[][2] = {[ZR_SC_HBONE] = {NODE_A, NODE_B},
						     [ZR_SC_HBONE_OPENSSL] = {NODE_A_OSSL, NODE_B_OSSL},
						     [ZR_SC_HBONE_DPDK] = {NODE_A_DPDK, NODE_B_DPDK}};
		bool ossl = id == ZR_SC_HBONE_OPENSSL, dpdk = id == ZR_SC_HBONE_DPDK;
		const struct node_cfg b = {.node = "node-b",
					   .ip = ips[id][1],
					   .identity = SPIFFE_SERVER,
					   .cert = s->certs.server_cert,
					   .key = s->certs.server_key,
					   .openssl_records = ossl,
					   .dpdk = dpdk};
		const struct node_cfg a = {.node = "node-a",
					   .ip = ips[id][0],
					   .identity = SPIFFE_CLIENT,
					   .cert = s->certs.client_cert,
					   .key = s->certs.client_key,
					   .openssl_records = ossl,
					   .dpdk = dpdk};
		ep->bind_ip = CLIENT_HBONE;
		ep->target_ip = SERVER_HBONE;
		ep->socks5_ip = a.ip;
		if (start_zring(s, sc, &b, err, sizeof(err)) || start_zring(s, sc, &a, err, sizeof(err))) {
			/* The OpenSSL record layer and a DPDK device are
			 * comparison points that a zring build or host may not
			 * offer: a refusal is a skip. */
			if (ossl || dpdk) {
				snprintf(sc->skipped, sizeof(sc->skipped), "zring refused %s: %s",
					 ossl ? "tls.recordLayer: openssl" : "recordCrypto: dpdk", err);
				return -1;
			}
			goto fail;
		}
		return 0;
	}
	case ZR_SC_HAPROXY_MTLS:
		ep->bind_ip = CLIENT_HBONE;
		ep->target_ip = HAP_CLIENT;
		if (start_haproxy(s, sc, true, err, sizeof(err)))
			goto fail;
		return 0;
	}
fail:
	snprintf(sc->failed, sizeof(sc->failed), "%s", err[0] ? err : "set-up failed");
	return -1;
}

/* ------------------------------------------------------------------ */
/* measuring */

static void fill_opts(const zr_suite_t *s, zr_bench_opts_t *o, int mode, const struct endpoint *ep)
{
	memset(o, 0, sizeof(*o));
	unsigned short port = mode == ZR_PART_STREAM ? ep->sink_port : ep->echo_port;
	set_addr(&o->target, &o->target_len, ep->target_ip, port);
	snprintf(o->target_text, sizeof(o->target_text), "%s:%u", ep->target_ip, port);
	if (ep->socks5_ip) {
		set_addr(&o->socks5, &o->socks5_len, ep->socks5_ip, SOCKS5_PORT);
		o->via_socks5 = true;
	}
	set_addr(&o->bind, &o->bind_len, ep->bind_ip, 0);
	o->has_bind = true;
	o->direction = ZR_BENCH_UP;
	o->timeout_s = 5;
	o->quiet = true;
	unsigned cores = s->env.cores ? s->env.cores : 1;
	switch (mode) {
	case ZR_PART_STREAM:
		o->mode = ZR_BENCH_STREAM;
		o->connections = 1;
		o->size = 128 << 10;
		o->duration_s = s->o.stream_s;
		break;
	case ZR_PART_RR:
		o->mode = ZR_BENCH_RR;
		o->connections = s->o.rr_conns;
		o->rate = s->o.rr_rate;
		o->request_len = o->response_len = 1024;
		o->duration_s = s->o.rr_s;
		break;
	default:
		o->mode = ZR_BENCH_CRR;
		o->connections = s->o.crr_conns;
		o->rate = 0;
		o->request_len = o->response_len = 64;
		o->duration_s = s->o.crr_s;
		break;
	}
	o->threads = o->connections < cores ? o->connections : cores;
	o->warmup_s = 0;
	snprintf(o->command_line, sizeof(o->command_line), "zring-bench suite (%s via %s)", zr_suite_mode_keys[mode],
		 ep->socks5_ip ? "SOCKS5" : "TCP");
}

static zr_bench_server_t *server_for(zr_suite_t *s, const struct endpoint *ep, int mode)
{
	int which = strcmp(ep->bind_ip, CLIENT_HBONE) == 0;
	return mode == ZR_PART_STREAM ? s->sink[which] : s->echo[which];
}

static bool procs_alive(zr_suite_scenario_t *sc, char *err, size_t cap)
{
	for (unsigned i = 0; i < sc->n_procs; i++)
		if (!zr_suite_proc_alive(&sc->procs[i])) {
			zr_suite_proc_why(&sc->procs[i], err, cap);
			return false;
		}
	return true;
}

/* One mode: a warm-up run (discarded), then the measured run with the
 * proxies' CPU sampled right around it, so neither connection set-up of the
 * warm-up nor the suite's own idle time counts. */
static int measure(zr_suite_t *s, zr_suite_scenario_t *sc, int mode, const struct endpoint *ep)
{
	zr_suite_part_t *p = &sc->parts[mode];
	char err[1024] = "";
	fill_opts(s, &p->opts, mode, ep);
	p->res = calloc(1, sizeof(*p->res));
	if (!p->res) {
		snprintf(sc->failed, sizeof(sc->failed), "out of memory");
		return -1;
	}
	if (s->o.warmup_s > 0) {
		zr_bench_opts_t warm = p->opts;
		warm.duration_s = s->o.warmup_s;
		zr_bench_result_t *wr = calloc(1, sizeof(*wr));
		if (!wr) {
			snprintf(sc->failed, sizeof(sc->failed), "out of memory");
			return -1;
		}
		int rc = zr_bench_run(&warm, wr, err, sizeof(err));
		zr_bench_result_free(wr);
		free(wr);
		if (rc) {
			snprintf(sc->failed, sizeof(sc->failed), "%s warm-up could not run: %s",
				 zr_suite_mode_keys[mode], err);
			return -1;
		}
		sleep_s(0.1);
	}
	zr_bench_server_t *srv = server_for(s, ep, mode);
	uint64_t in0, out0, req0, conn0, in1, out1, req1, conn1;
	double cpu0[ZR_SUITE_MAX_PROCS];
	zr_bench_server_totals(srv, &in0, &out0, &req0, &conn0);
	for (unsigned i = 0; i < sc->n_procs; i++)
		cpu0[i] = zr_suite_proc_cpu_s(sc->procs[i].pid);
	int rc = zr_bench_run(&p->opts, p->res, err, sizeof(err));
	/* the tail still in the proxies' buffers reaches the server */
	sleep_s(0.1);
	for (unsigned i = 0; i < sc->n_procs; i++) {
		p->proxy_cpu[i] = zr_suite_proc_cpu_s(sc->procs[i].pid) - cpu0[i];
		p->proxy_cpu_total += p->proxy_cpu[i];
	}
	zr_bench_server_totals(srv, &in1, &out1, &req1, &conn1);
	p->server_bytes = in1 - in0;
	p->server_requests = req1 - req0;
	if (rc) {
		snprintf(sc->failed, sizeof(sc->failed), "%s could not run: %s", zr_suite_mode_keys[mode], err);
		return -1;
	}
	p->ran = true;
	if (p->res->saturated) {
		warn(s,
		     "%s %s: the load generator was saturated (busiest thread %.0f%% busy): its figures measure the "
		     "generator",
		     sc->def->name, zr_suite_mode_keys[mode], p->res->busiest_thread_util * 100);
	}
	if (!procs_alive(sc, err, sizeof(err))) {
		snprintf(sc->failed, sizeof(sc->failed), "during %s: %s", zr_suite_mode_keys[mode], err);
		return -1;
	}
	return 0;
}

static void run_scenario(zr_suite_t *s, zr_suite_scenario_t *sc)
{
	struct endpoint ep;
	say("%s: %s", sc->def->name, sc->def->what);
	if (setup(s, sc, &ep) == 0) {
		for (int m = 0; m < ZR_PART_COUNT; m++)
			if (measure(s, sc, m, &ep))
				break;
	}
	for (unsigned i = 0; i < sc->n_procs; i++)
		sc->hwm_kb[i] = zr_suite_proc_hwm_kb(sc->procs[i].pid);
	/* Reverse order: node A (the client side) drains before node B. */
	for (unsigned i = sc->n_procs; i-- > 0;) {
		zr_suite_proc_t *p = &sc->procs[i];
		bool was_alive = zr_suite_proc_alive(p);
		int rc = zr_suite_proc_stop(p, 10);
		/* HAProxy's -db mode stops at once on SIGTERM, by the signal:
		 * that is its clean stop, as exit 0 after draining is zring's. */
		if (was_alive && rc != 0 && rc != 128 + SIGTERM && !sc->failed[0] && !sc->skipped[0]) {
			char why[768];
			zr_suite_proc_why(p, why, sizeof(why));
			snprintf(sc->failed, sizeof(sc->failed), "on SIGTERM %s", why);
		}
	}
	sc->ran = !sc->skipped[0];
	if (sc->skipped[0])
		say("%s: skipped: %s", sc->def->name, sc->skipped);
	else if (sc->failed[0])
		say("%s: FAILED: %s", sc->def->name, sc->failed);
}

/* ------------------------------------------------------------------ */
/* set-up and tear-down of the run */

static int make_dirs(zr_suite_t *s, char *err, size_t cap)
{
	if (mkdir(s->o.out, 0755) != 0 && errno != EEXIST) {
		snprintf(err, cap, "--out: cannot create %s: %s", s->o.out, strerror(errno));
		return -1;
	}
	if (!realpath(s->o.out, s->out_dir)) {
		snprintf(err, cap, "--out: %s: %s", s->o.out, strerror(errno));
		return -1;
	}
	if (zr_suite_path_join(s->log_dir, s->out_dir, "logs") ||
	    zr_suite_path_join(s->work_dir, s->out_dir, "work.XXXXXX")) {
		snprintf(err, cap, "--out: path too long: %.900s", s->out_dir);
		return -1;
	}
	if ((mkdir(s->log_dir, 0755) != 0 && errno != EEXIST) || !mkdtemp(s->work_dir)) {
		snprintf(err, cap, "cannot create folders in %.900s: %s", s->out_dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* The keys are throw-away, but nothing should keep them past the run. */
static void remove_work(zr_suite_t *s)
{
	/* unconditional: a failed generation may have left some files */
	const char *files[] = {
		s->certs.ca,	     s->certs.client_cert,    s->certs.client_key,    s->certs.server_cert,
		s->certs.server_key, s->certs.haproxy_client, s->certs.haproxy_server};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (files[i][0])
			unlink(files[i]);
	rmdir(s->work_dir);
	zr_suite_procs_remove_on_signal(NULL, 0, NULL);
}

static int find_programs(zr_suite_t *s, char *err, size_t cap)
{
	bool need_zring = false;
	for (int i = 0; i < ZR_SC_COUNT; i++)
		need_zring |= s->o.want[i] && zr_suite_defs[i].needs_zring;
	if (s->o.zring) {
		snprintf(s->zring, sizeof(s->zring), "%s", s->o.zring);
	} else {
		char self[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n > 0) {
			self[n] = '\0';
			char *slash = strrchr(self, '/');
			if (slash)
				*slash = '\0';
			snprintf(s->zring, sizeof(s->zring), "%.*s/zring", PATH_MAX - 7, self);
		}
	}
	if (access(s->zring, X_OK) != 0) {
		if (need_zring) {
			snprintf(err, cap, "%s %.900s: %s",
				 s->o.zring ? "--zring" : "no zring next to zring-bench:", s->zring, strerror(errno));
			return s->o.zring ? -EINVAL : -1;
		}
		s->zring[0] = '\0';
	} else {
		char *argv[] = {s->zring, "--version", NULL};
		first_line(argv, s->zring_version, sizeof(s->zring_version));
	}
	if (s->o.haproxy) {
		if (access(s->o.haproxy, X_OK) != 0) {
			snprintf(err, cap, "--haproxy %s: %s", s->o.haproxy, strerror(errno));
			return -EINVAL;
		}
		snprintf(s->haproxy, sizeof(s->haproxy), "%s", s->o.haproxy);
	} else if (find_in_path("haproxy", s->haproxy) != 0) {
		s->haproxy[0] = '\0';
	}
	if (s->haproxy[0]) {
		char *argv[] = {s->haproxy, "-v", NULL};
		first_line(argv, s->haproxy_version, sizeof(s->haproxy_version));
	}
	return 0;
}

static int start_servers(zr_suite_t *s, char *err, size_t cap)
{
	const char *ips[2] = {SERVER_PLAIN, SERVER_HBONE};
	for (int i = 0; i < 2; i++) {
		zr_bench_opts_t o;
		memset(&o, 0, sizeof(o));
		o.threads = 1;
		o.quiet = true;
		o.timeout_s = 5;
		o.mode = ZR_BENCH_SINK;
		set_addr(&o.listen, &o.listen_len, ips[i], SINK_PORT);
		if (zr_bench_server_start(&o, &s->sink[i], err, cap))
			return -1;
		o.mode = ZR_BENCH_ECHO;
		set_addr(&o.listen, &o.listen_len, ips[i], ECHO_PORT);
		if (zr_bench_server_start(&o, &s->echo[i], err, cap))
			return -1;
	}
	return 0;
}

static void stop_servers(zr_suite_t *s)
{
	for (int i = 0; i < 2; i++) {
		if (s->sink[i])
			zr_bench_server_stop(s->sink[i]);
		if (s->echo[i])
			zr_bench_server_stop(s->echo[i]);
		s->sink[i] = s->echo[i] = NULL;
	}
}

static void free_suite(zr_suite_t *s)
{
	for (int i = 0; i < ZR_SC_COUNT; i++)
		for (int m = 0; m < ZR_PART_COUNT; m++)
			if (s->sc[i].parts[m].res) {
				zr_bench_result_free(s->sc[i].parts[m].res);
				free(s->sc[i].parts[m].res);
			}
	free(s);
}

int zr_bench_suite_main(int argc, char **argv)
{
	zr_suite_t *s = calloc(1, sizeof(*s));
	if (!s) {
		fprintf(stderr, "zring-bench suite: out of memory\n");
		return 2;
	}
	int prc = parse_args(argc, argv, &s->o);
	if (prc) {
		free(s);
		return prc > 0 ? 0 : 1;
	}
	char cmd[1024] = "zring-bench";
	size_t len = strlen(cmd);
	for (int i = 0; i < argc && len < sizeof(cmd) - 1; i++)
		len += (size_t)snprintf(cmd + len, sizeof(cmd) - len, " %s", argv[i]);
	zr_bench_env_fill(&s->env, cmd);
	for (int i = 0; i < ZR_SC_COUNT; i++)
		s->sc[i].def = &zr_suite_defs[i];

	/* The engine writes to sockets the proxies may close first. */
	signal(SIGPIPE, SIG_IGN);
	zr_suite_procs_install_signals();

	char err[1024];
	int rc = 0;
	int frc = find_programs(s, err, sizeof(err));
	if (frc || make_dirs(s, err, sizeof(err))) {
		fprintf(stderr, "zring-bench suite: %s\n", err);
		free_suite(s);
		return frc == -EINVAL ? 1 : 2;
	}
	if (start_servers(s, err, sizeof(err))) {
		fprintf(stderr, "zring-bench suite: echo/sink servers: %s\n", err);
		stop_servers(s);
		remove_work(s);
		free_suite(s);
		return 2;
	}
	for (int i = 0; i < ZR_SC_COUNT; i++)
		if (s->o.want[i])
			run_scenario(s, &s->sc[i]);
	stop_servers(s);
	remove_work(s);

	zr_suite_report_print(s, stdout);
	if (zr_suite_report_write(s, err, sizeof(err))) {
		fprintf(stderr, "zring-bench suite: %s\n", err);
		rc = 2;
	} else {
		printf("reports: %s/report.md, report.json, latency.svg, throughput.svg, cpu-per-gb.svg\n", s->out_dir);
	}
	for (int i = 0; i < ZR_SC_COUNT; i++)
		if (s->o.want[i] && s->sc[i].failed[0])
			rc = 2;
	free_suite(s);
	return rc;
}
