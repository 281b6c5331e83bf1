/* Config loader: every key and default, the ztunnel LOCAL_XDS format, and
 * errors that name the right file, line and key. Runs with the working
 * directory at tests/unit (meson workdir) or at the repository root. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl/config.h"
#include "io/log.h"
#include "tap.h"

static char root[4096]; /* repository root, absolute */

static void find_root(void)
{
	const char *cands[] = {"../..", ".", ".."};
	for (size_t i = 0; i < 3; i++) {
		char p[4200];
		snprintf(p, sizeof(p), "%s/examples/zring.yaml", cands[i]);
		if (access(p, R_OK) == 0 && realpath(cands[i], root))
			return;
	}
	skip_all("cannot find the repository root (examples/zring.yaml)");
}

static const char *src(const char *rel)
{
	static char buf[4][4400];
	static int n;
	char *b = buf[n++ % 4];
	snprintf(b, sizeof(buf[0]), "%s/%s", root, rel);
	return b;
}

/* Loads yaml as if it were the file `name` (default: tests/unit/data/t.yaml). */
static zr_config_t *load(const char *yaml, zr_config_error_t *err, int *rc_out)
{
	zr_config_t *cfg = NULL;
	int rc = zr_config_load_string(yaml, strlen(yaml), src("tests/unit/data/t.yaml"), &cfg, err);
	if (rc_out)
		*rc_out = rc;
	if (rc != 0) {
		char buf[1400];
		diag("load: %s", zr_config_error_str(err, buf, sizeof(buf)));
	}
	return cfg;
}

static bool listener_is(const zr_listener_cfg_t *l, const char *addr)
{
	char buf[ZR_ADDR_STRLEN];
	if (!addr)
		return !l->enabled;
	return l->enabled && !strcmp(zr_sockaddr_str(&l->addr, buf), addr);
}

/* Expects a load error at line `line` with key `key` and a message holding `msg`. */
static void expect_err(const char *yaml, unsigned line, const char *key, const char *msg, const char *what)
{
	zr_config_error_t err;
	int rc = 0;
	zr_config_t *cfg = load(yaml, &err, &rc);
	bool good = !cfg && rc == -1 && err.line == line && !strcmp(err.key, key) && strstr(err.message, msg);
	if (!ok(good, "error: %s", what)) {
		char buf[1400];
		diag("  got rc %d: %s", rc, zr_config_error_str(&err, buf, sizeof(buf)));
		diag("  expected line %u key '%s' message ~ '%s'", line, key, msg);
	}
	zr_config_free(cfg);
}

static void test_defaults(void)
{
	zr_config_error_t err;
	zr_config_t *cfg = load("node: n1\n", &err, NULL);
	if (!ok(cfg != NULL, "minimal config loads"))
		return;
	is_str(cfg->node, "n1", "node");
	is_str(cfg->trust_domain, "cluster.local", "trustDomain default");
	is_str(cfg->cluster_id, "Kubernetes", "clusterId default");
	is(cfg->workers, 0, "workers default auto");
	ok(cfg->cpus == NULL && cfg->cpu_list == NULL, "cpus default: cpuset");
	is(cfg->io_backend, ZR_IO_BACKEND_AUTO, "ioBackend default");
	ok(listener_is(&cfg->listeners.outbound, "127.0.0.1:15001"), "outbound default");
	ok(listener_is(&cfg->listeners.inbound_plaintext, "0.0.0.0:15006"), "inboundPlaintext default");
	ok(listener_is(&cfg->listeners.hbone, "0.0.0.0:15008"), "hbone default");
	ok(listener_is(&cfg->listeners.socks5, NULL), "socks5 default disabled");
	ok(listener_is(&cfg->listeners.admin, "127.0.0.1:15000"), "admin default");
	ok(listener_is(&cfg->listeners.metrics, "0.0.0.0:15020"), "metrics default");
	ok(listener_is(&cfg->listeners.readiness, "0.0.0.0:15021"), "readiness default");
	ok(cfg->tls.n_cipher_suites == 2 && !strcmp(cfg->tls.cipher_suites[0], "TLS_AES_128_GCM_SHA256") &&
		   !strcmp(cfg->tls.cipher_suites[1], "TLS_AES_256_GCM_SHA384"),
	   "cipherSuites default");
	is(cfg->tls.record_crypto, ZR_RECORD_CRYPTO_AUTO, "recordCrypto default");
	is(cfg->tls.record_layer, ZR_RECORD_LAYER_ZRING, "recordLayer default zring");
	ok(!cfg->tls.openssl_provider && !cfg->identity.ca_certificates && !cfg->identity.n_certificates &&
		   !cfg->identity.ca_address && !cfg->xds.address && !cfg->xds.root_cert && !cfg->xds.token_file &&
		   !cfg->local_xds_path,
	   "optional strings unset");
	is(cfg->drain_timeout_ms, 30000, "drainTimeout default");
	is(cfg->pool_max_streams_per_connection, 100, "poolMaxStreamsPerConnection default");
	is(cfg->pool_idle_timeout_ms, 300000, "poolIdleTimeout default");
	is(cfg->connect_timeout_ms, 10000, "connectTimeout default");
	is(cfg->log_level, ZR_LOG_INFO, "logLevel default");
	ok(cfg->state.n_workloads == 0 && cfg->state.n_services == 0 && cfg->state.n_policies == 0, "empty state");
	is_str(cfg->path, src("tests/unit/data/t.yaml"), "path absolute");
	zr_config_free(cfg);
}

static void test_explicit(void)
{
	static const char yaml[] = "node: node-x\n"
				   "trustDomain: example.org\n"
				   "clusterId: c2\n"
				   "workers: 3\n"
				   "cpus: \"0-3,6,8-9\"\n"
				   "ioBackend: epoll\n"
				   "listeners:\n"
				   "  outbound: 127.0.0.5:1\n"
				   "  inboundPlaintext: null\n"
				   "  hbone: '[::1]:15008'\n"
				   "  socks5: 127.0.0.2:15080\n"
				   "  admin: '[::1]:15000'\n"
				   "  metrics: ~\n"
				   "  readiness: 10.0.0.1:15021\n"
				   "tls:\n"
				   "  cipherSuites: [TLS_CHACHA20_POLY1305_SHA256]\n"
				   "  recordCrypto: ipsec-mb\n"
				   "  recordLayer: openssl\n"
				   "  opensslProvider: qatprovider\n"
				   "identity:\n"
				   "  caCertificates: certs/root.pem\n"
				   "  certificates:\n"
				   "  - identity: spiffe://example.org/ns/a/sa/b\n"
				   "    cert: /abs/b.pem\n"
				   "    key: ../b.key\n"
				   "  caAddress: https://istiod:15012\n"
				   "xds:\n"
				   "  address: https://istiod:15012\n"
				   "  rootCert: xds/root.pem\n"
				   "  tokenFile: /var/run/token\n"
				   "localXds: null\n"
				   "localXdsPath: null\n"
				   "drainTimeout: 1m30s\n"
				   "poolMaxStreamsPerConnection: 7\n"
				   "poolIdleTimeout: 500ms\n"
				   "connectTimeout: 2\n"
				   "logLevel: debug\n";
	zr_config_error_t err;
	zr_config_t *cfg = load(yaml, &err, NULL);
	if (!ok(cfg != NULL, "explicit config loads"))
		return;
	is_str(cfg->trust_domain, "example.org", "trustDomain");
	is_str(cfg->cluster_id, "c2", "clusterId");
	is(cfg->workers, 3, "workers 3");
	is_str(cfg->cpus, "0-3,6,8-9", "cpus as written");
	static const unsigned want[] = {0, 1, 2, 3, 6, 8, 9};
	ok(cfg->n_cpu_list == 7 && !memcmp(cfg->cpu_list, want, sizeof(want)), "cpu_list 0-3,6,8-9");
	is(cfg->io_backend, ZR_IO_BACKEND_EPOLL, "ioBackend epoll");
	ok(listener_is(&cfg->listeners.outbound, "127.0.0.5:1"), "outbound");
	ok(listener_is(&cfg->listeners.inbound_plaintext, NULL), "inboundPlaintext null disables");
	ok(listener_is(&cfg->listeners.hbone, "[::1]:15008"), "hbone v6");
	ok(listener_is(&cfg->listeners.socks5, "127.0.0.2:15080"), "socks5 enabled");
	ok(listener_is(&cfg->listeners.admin, "[::1]:15000"), "admin ::1");
	ok(listener_is(&cfg->listeners.metrics, NULL), "metrics ~ disables");
	ok(listener_is(&cfg->listeners.readiness, "10.0.0.1:15021"), "readiness");
	ok(cfg->tls.n_cipher_suites == 1 && !strcmp(cfg->tls.cipher_suites[0], "TLS_CHACHA20_POLY1305_SHA256"),
	   "cipherSuites chacha");
	is(cfg->tls.record_crypto, ZR_RECORD_CRYPTO_IPSEC_MB, "recordCrypto ipsec-mb");
	is(cfg->tls.record_layer, ZR_RECORD_LAYER_OPENSSL, "recordLayer openssl");
	is_str(cfg->tls.openssl_provider, "qatprovider", "opensslProvider");
	is_str(cfg->identity.ca_certificates, src("tests/unit/data/certs/root.pem"), "caCertificates made absolute");
	ok(cfg->identity.n_certificates == 1, "one certificate");
	if (cfg->identity.n_certificates == 1) {
		is_str(cfg->identity.certificates[0].identity, "spiffe://example.org/ns/a/sa/b",
		       "certificate identity");
		is_str(cfg->identity.certificates[0].cert, "/abs/b.pem", "absolute cert path kept");
		is_str(cfg->identity.certificates[0].key, src("tests/unit/data/../b.key"), "relative key path");
	}
	is_str(cfg->identity.ca_address, "https://istiod:15012", "caAddress");
	is_str(cfg->xds.address, "https://istiod:15012", "xds.address");
	is_str(cfg->xds.root_cert, src("tests/unit/data/xds/root.pem"), "xds.rootCert absolute");
	is_str(cfg->xds.token_file, "/var/run/token", "xds.tokenFile");
	is(cfg->drain_timeout_ms, 90000, "drainTimeout 1m30s");
	is(cfg->pool_max_streams_per_connection, 7, "poolMaxStreamsPerConnection");
	is(cfg->pool_idle_timeout_ms, 500, "poolIdleTimeout 500ms");
	is(cfg->connect_timeout_ms, 2000, "connectTimeout bare seconds");
	is(cfg->log_level, ZR_LOG_DEBUG, "logLevel debug");
	zr_config_free(cfg);
}

static void test_durations(void)
{
	static const struct {
		const char *text;
		long long ms; /* -1: error */
	} cases[] = {
		{"500ms", 500},	  {"10s", 10000},
		{"5m", 300000},	  {"1h", 3600000},
		{"1m30s", 90000}, {"1h2m3s4ms", 3723004},
		{"0", 0},	  {"45", 45000},
		{"'10'", 10000},  {"10x", -1},
		{"s", -1},	  {"-1s", -1},
		{"1.5s", -1},	  {"10 s", -1},
		{"\"\"", -1},	  {"99999999999999999999s", -1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char yaml[200];
		snprintf(yaml, sizeof(yaml), "node: n\ndrainTimeout: %s\n", cases[i].text);
		zr_config_error_t err;
		zr_config_t *cfg = NULL;
		int rc = zr_config_load_string(yaml, strlen(yaml), "d.yaml", &cfg, &err);
		if (cases[i].ms < 0)
			ok(rc == -1 && err.line == 2 && !strcmp(err.key, "drainTimeout") &&
				   strstr(err.message, "duration"),
			   "duration %s rejected", cases[i].text);
		else
			ok(rc == 0 && cfg->drain_timeout_ms == (uint64_t)cases[i].ms, "duration %s = %lld ms",
			   cases[i].text, cases[i].ms);
		zr_config_free(cfg);
	}
}

static void test_workers_cpus(void)
{
	zr_config_error_t err;
	zr_config_t *cfg = load("node: n\nworkers: auto\ncpus: 5\n", &err, NULL);
	ok(cfg && cfg->workers == 0 && cfg->n_cpu_list == 1 && cfg->cpu_list[0] == 5, "workers auto, cpus 5");
	zr_config_free(cfg);
	expect_err("node: n\nworkers: 0\n", 2, "workers", "out of range", "workers 0");
	expect_err("node: n\nworkers: abc\n", 2, "workers", "auto or a positive integer", "workers abc");
	expect_err("node: n\ncpus: 3-1\n", 2, "cpus", "bad CPU list", "cpus 3-1");
	expect_err("node: n\ncpus: \"1,,2\"\n", 2, "cpus", "bad CPU list", "cpus 1,,2");
}

static void test_errors(void)
{
	expect_err("node: n\nlisteners:\n  outbound: 127.0.0.1:1\n  outbund: 1.2.3.4:5\n", 4, "listeners.outbund",
		   "unknown key", "unknown key");
	expect_err("node: n\nfoo: 1\n", 2, "foo", "unknown key", "unknown top-level key");
	expect_err("node: n\ntrustDomain:\n  a: b\n", 3, "trustDomain", "expected a string, got a map",
		   "map where a string is expected");
	expect_err("node: n\npoolMaxStreamsPerConnection: many\n", 2, "poolMaxStreamsPerConnection",
		   "expected an integer", "string where an int is expected");
	expect_err("node: n\nlisteners:\n  hbone: 0.0.0.0:abc\n", 3, "listeners.hbone", "bad address", "port abc");
	expect_err("node: n\nlisteners:\n  outbound: 300.1.1.1:80\n", 3, "listeners.outbound", "bad address",
		   "bad address");
	expect_err("node: n\nlisteners:\n  admin: 0.0.0.0:15000\n", 3, "listeners.admin", "loopback",
		   "admin not on loopback");
	expect_err("node: n\nconnectTimeout: 10 seconds\n", 2, "connectTimeout", "bad duration", "bad duration");
	expect_err("node: n\nioBackend: kqueue\n", 2, "ioBackend", "unknown io backend", "bad enum ioBackend");
	expect_err("node: n\ntls:\n  recordCrypto: qat\n", 3, "tls.recordCrypto", "unknown record crypto",
		   "bad enum recordCrypto");
	expect_err("node: n\ntls:\n  cipherSuites: [TLS_AES_128_GCM_SHA256]\n  recordLayer: kernel\n", 4,
		   "tls.recordLayer", "unknown record layer \"kernel\" (want zring | openssl)", "bad enum recordLayer");
	expect_err("node: n\ntls:\n  recordLayer: [zring]\n", 3, "tls.recordLayer",
		   "expected a record layer, got a list", "list for recordLayer");
	expect_err("node: n\ntls:\n  opensslProvider: \"\"\n", 3, "tls.opensslProvider", "provider name",
		   "empty opensslProvider");
	expect_err("node: n\ntls:\n  cipherSuites:\n  - TLS_AES_128_GCM_SHA256\n  - ECDHE-RSA-AES128-GCM-SHA256\n", 5,
		   "tls.cipherSuites[1]", "TLS 1.3 cipher suite", "TLS 1.2 suite rejected");
	expect_err("node: n\nlogLevel: verbose\n", 2, "logLevel", "unknown log level", "bad log level");
	expect_err("node: n\nlisteners: [a]\n", 2, "listeners", "expected a map, got a list", "list for a map");
	expect_err("node: n\nlisteners:\n  admin: [127.0.0.1:1\n", 4, "", "YAML syntax error",
		   "YAML syntax error (unclosed flow list)");
	expect_err("node: n\nfoo: bar: baz\n", 2, "", "YAML syntax error", "YAML syntax error (mapping in value)");
	expect_err("trustDomain: x\nworkers: 2\n", 1, "node", "missing required key", "missing node");
	expect_err("", 1, "node", "missing required key", "empty file");
	expect_err("node: n\nnode: m\n", 2, "node", "duplicate key", "duplicate key");
	expect_err("node: n\nidentity:\n  certificates:\n  - identity: spiffe://td/ns/a/sa/b\n    cert: c.pem\n", 4,
		   "identity.certificates[0].key", "missing required key", "certificate without key");
	expect_err("node: n\nlocalXds: {}\nlocalXdsPath: x.yaml\n", 3, "localXdsPath", "may not both be set",
		   "localXds and localXdsPath together");
	expect_err("node: n\nlocalXdsPath: does-not-exist.yaml\n", 2, "localXdsPath", "cannot read",
		   "missing localXdsPath file");
	expect_err("- a\n- b\n", 1, "", "expected a map at the top level", "top level list");
}

static const char inline_state[] =
	"node: node-a\n"								  /* 1 */
	"trustDomain: td.local\n"							  /* 2 */
	"localXds:\n"									  /* 3 */
	"  workloads:\n"								  /* 4 */
	"  - uid: u1\n"									  /* 5 */
	"    name: client\n"								  /* 6 */
	"    namespace: default\n"							  /* 7 */
	"    workloadIps: [127.0.1.1]\n"						  /* 8 */
	"    node: node-a\n"								  /* 9 */
	"    protocol: HBONE\n"								  /* 10 */
	"    services: {}\n"								  /* 11 */
	"  - uid: u2\n"									  /* 12 */
	"    name: echo\n"								  /* 13 */
	"    namespace: default\n"							  /* 14 */
	"    serviceAccount: echo\n"							  /* 15 */
	"    workloadIps: [\"127.0.2.1\", \"fd00::2\"]\n"				  /* 16 */
	"    node: node-b\n"								  /* 17 */
	"    protocol: TCP\n"								  /* 18 */
	"    clusterId: other\n"							  /* 19 */
	"    authorizationPolicies: [default/p2]\n"					  /* 20 */
	"    services: {\"default/echo.default.svc.cluster.local\": {80: 9090}}\n"	  /* 21 */
	"  - uid: u3\n"									  /* 22 */
	"    namespace: default\n"							  /* 23 */
	"    workloadIps: [127.0.2.2]\n"						  /* 24 */
	"    services:\n"								  /* 25 */
	"      default/echo.default.svc.cluster.local:\n"				  /* 26 */
	"        \"81\": 8081\n"							  /* 27 */
	"  services:\n"									  /* 28 */
	"  - name: echo\n"								  /* 29 */
	"    namespace: default\n"							  /* 30 */
	"    hostname: echo.default.svc.cluster.local\n"				  /* 31 */
	"    vips: [\"/127.10.0.1\", \"net1/fd10::1\"]\n"				  /* 32 */
	"    ports: {80: 8080, 81: 0}\n"						  /* 33 */
	"    subjectAltNames: [spiffe://td.local/ns/default/sa/echo]\n"			  /* 34 */
	"  policies:\n"									  /* 35 */
	"  - name: p1\n"								  /* 36 */
	"    namespace: default\n"							  /* 37 */
	"    scope: Namespace\n"							  /* 38 */
	"    action: Allow\n"								  /* 39 */
	"    rules: [[[{principals: [\"td.local/ns/default/sa/client\", \"*\"],\n"	  /* 40 */
	"               sourceIps: [10.0.0.0/8, 127.0.1.1],\n"				  /* 41 */
	"               destinationPorts: [8080], notDestinationPorts: [\"9999\"]}]]]\n"; /* 42 */

static void test_inline_state(void)
{
	zr_config_error_t err;
	zr_config_t *cfg = load(inline_state, &err, NULL);
	if (!ok(cfg != NULL, "inline localXds loads"))
		return;
	zr_state_t *st = &cfg->state;
	is(st->n_workloads, 3, "3 workloads");
	is(st->n_services, 1, "1 service");
	is(st->n_policies, 1, "1 policy");
	if (st->n_workloads != 3 || st->n_services != 1 || st->n_policies != 1)
		goto out;
	zr_workload_t *c = &st->workloads[0], *e = &st->workloads[1], *u3 = &st->workloads[2];
	ok(c->local && !e->local && !u3->local, "local = node matches config node");
	is_str(c->identity, "spiffe://td.local/ns/default/sa/default", "identity with default SA and config td");
	is_str(e->identity, "spiffe://td.local/ns/default/sa/echo", "identity with SA");
	is_str(c->cluster_id, "Kubernetes", "clusterId defaults to config's");
	is_str(e->cluster_id, "other", "clusterId explicit");
	is(c->protocol, ZR_PROTO_HBONE, "protocol HBONE");
	is(e->protocol, ZR_PROTO_TCP, "protocol TCP");
	is(u3->protocol, ZR_PROTO_TCP, "protocol default TCP (ztunnel's default)");
	ok(e->n_ips == 2 && e->ips[1].family == AF_INET6, "two IPs, second v6");
	ok(e->n_authorization_policies == 1 && !strcmp(e->authorization_policies[0], "default/p2"),
	   "authorizationPolicies");
	ok(u3->name && !strcmp(u3->name, "") && u3->node && !strcmp(u3->network, ""), "absent strings are \"\"");

	zr_service_t *s = &st->services[0];
	is_str(s->key, "default/echo.default.svc.cluster.local", "service key");
	ok(s->n_vips == 2 && !strcmp(s->vips[0].network, "") && !strcmp(s->vips[1].network, "net1") &&
		   s->vips[1].ip.family == AF_INET6,
	   "VIPs network/ip");
	ok(s->n_endpoints == 2 && s->endpoints[0] == 1 && s->endpoints[1] == 2, "endpoints in file order");
	ok(s->n_subject_alt_names == 1, "subjectAltNames");

	zr_ip_t ip;
	ok(zr_ip_parse("127.0.2.1", &ip) == 0 && zr_state_workload_by_ip(st, &ip) == e, "workload by IPv4");
	ok(zr_ip_parse("fd00::2", &ip) == 0 && zr_state_workload_by_ip(st, &ip) == e, "workload by IPv6");
	ok(zr_ip_parse("127.0.9.9", &ip) == 0 && zr_state_workload_by_ip(st, &ip) == NULL, "unknown IP: NULL");
	ok(zr_ip_parse("127.10.0.1", &ip) == 0 && zr_state_service_by_vip(st, &ip) == s, "service by VIP");
	ok(zr_ip_parse("fd10::1", &ip) == 0 && zr_state_service_by_vip(st, &ip) == s, "service by VIP, other network");
	ok(zr_ip_parse("127.10.0.2", &ip) == 0 && zr_state_service_by_vip(st, &ip) == NULL, "unknown VIP: NULL");
	ok(zr_state_service_by_hostname(st, "echo.default.svc.cluster.local") == s, "service by hostname");
	ok(zr_state_service_by_hostname(st, "nope") == NULL, "unknown hostname: NULL");

	is(zr_service_target_port(s, e, 80), 9090, "workload's own port map overrides");
	is(zr_service_target_port(s, u3, 80), 8080, "service port map when the workload's lacks the port");
	is(zr_service_target_port(s, u3, 81), 8081, "quoted port key in workload map");
	is(zr_service_target_port(s, c, 81), 0, "target 0 stays 0 (no mapping)");
	is(zr_service_target_port(s, NULL, 80), 8080, "no endpoint: service map");
	is(zr_service_target_port(s, e, 443), 0, "unknown port: 0");

	zr_policy_t *p = &st->policies[0];
	is_str(p->name, "p1", "policy name");
	ok(p->scope == ZR_SCOPE_NAMESPACE && p->action == ZR_ACTION_ALLOW && !p->dry_run, "scope/action/dryRun");
	ok(p->n_rules == 1 && p->rules[0].n_clauses == 1 && p->rules[0].clauses[0].n_matches == 1, "rules shape");
	if (p->n_rules == 1 && p->rules[0].n_clauses == 1 && p->rules[0].clauses[0].n_matches == 1) {
		zr_policy_match_t *m = &p->rules[0].clauses[0].matches[0];
		ok(m->n_principals == 2 && m->principals[1].kind == ZR_STRING_PRESENCE, "principals");
		ok(m->n_source_ips == 2 && m->source_ips[0].prefix_len == 8 && m->source_ips[1].prefix_len == 32,
		   "sourceIps CIDRs");
		ok(m->n_destination_ports == 1 && m->destination_ports[0] == 8080 && m->n_not_destination_ports == 1 &&
			   m->not_destination_ports[0] == 9999,
		   "ports");
	}
out:
	zr_config_free(cfg);
}

static void test_state_errors(void)
{
	static const char head[] = "node: n\nlocalXds:\n  workloads:\n";
	char y[2048];
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - {uid: a, namespace: d, workloadIps: [10.0.0.1]}\n"
		 "  - uid: b\n"
		 "    namespace: d\n"
		 "    workloadIps: [10.0.0.2, 10.0.0.1]\n");
	expect_err(y, 7, "localXds.workloads[1].workloadIps[1]", "duplicate workload IP", "duplicate workload IP");
	snprintf(y, sizeof(y), "%s%s", head, "  - {namespace: d, workloadIps: [10.0.0.1, 10.0.0.256]}\n");
	expect_err(y, 4, "localXds.workloads[0].workloadIps[1]", "bad IP address", "bad workload IP");
	snprintf(y, sizeof(y), "%s%s", head, "  - {namespace: d, workloadIps: [], protocol: HTTP}\n");
	expect_err(y, 4, "localXds.workloads[0].protocol", "unknown protocol", "unknown protocol");
	snprintf(y, sizeof(y), "%s%s", head, "  - {namespace: d, workloadIps: [], services: {a/b: {80: 70000}}}\n");
	expect_err(y, 4, "localXds.workloads[0].services.a/b.80", "bad port", "bad target port");
	snprintf(y, sizeof(y), "%s%s", head, "  - {namespace: d, workloadIps: [], services: {a/b: {http: 80}}}\n");
	expect_err(y, 4, "localXds.workloads[0].services.a/b.http", "bad port", "bad port key");
	snprintf(y, sizeof(y), "%s%s", head, "  - {namespace: d, workloadIPs: []}\n");
	expect_err(y, 4, "localXds.workloads[0].workloadIPs", "unknown key", "unknown workload key");
	snprintf(y, sizeof(y), "%s%s", head, "  - {name: x, workloadIps: []}\n");
	expect_err(y, 4, "localXds.workloads[0].namespace", "missing required key", "workload without namespace");
	expect_err("node: n\nlocalXds:\n  policies:\n  - {name: p, namespace: d, scope: Cluster, action: Allow}\n", 4,
		   "localXds.policies[0].scope", "unknown scope", "unknown scope");
	expect_err("node: n\nlocalXds:\n  policies:\n  - {name: p, namespace: d, scope: Global, action: Audit}\n", 4,
		   "localXds.policies[0].action", "unknown action", "unknown action");
	expect_err("node: n\nlocalXds:\n  policies:\n  - {name: p, namespace: d, scope: Global}\n", 4,
		   "localXds.policies[0].action", "missing required key", "policy without action");
	expect_err("node: n\nlocalXds:\n  policies:\n  - name: p\n    scope: Global\n    action: Deny\n"
		   "    rules: [[[{sourceIp: [1.2.3.4]}]]]\n",
		   7, "localXds.policies[0].rules[0][0][0].sourceIp", "unknown key", "unknown match key");
	expect_err("node: n\nlocalXds:\n  policies:\n  - name: p\n    scope: Global\n    action: Deny\n"
		   "    rules: [[[{sourceIps: [1.2.3.4/40]}]]]\n",
		   7, "localXds.policies[0].rules[0][0][0].sourceIps[0]", "bad CIDR", "bad CIDR");
	expect_err("node: n\nlocalXds:\n  policies:\n  - name: p\n    scope: Global\n    action: Deny\n"
		   "    rules: [[[{principals: [{Regex: a.*}]}]]]\n",
		   7, "localXds.policies[0].rules[0][0][0].principals[0]", "unknown string match",
		   "unknown StringMatch");
	expect_err("node: n\nlocalXds:\n  services:\n  - {name: s, namespace: d, hostname: h, vips: [/10.9.9.300]}\n",
		   4, "localXds.services[0].vips[0]", "bad VIP", "bad VIP");
	expect_err(
		"node: n\nlocalXds:\n  services:\n  - {name: s, namespace: d, hostname: h, vips: [], ports: {80: x}}\n",
		4, "localXds.services[0].ports.80", "bad port", "bad service target port");
	expect_err("node: n\nlocalXds:\n  services:\n  - {name: s, namespace: d, vips: []}\n", 4,
		   "localXds.services[0].hostname", "missing required key", "service without hostname");
	expect_err("node: n\nlocalXds:\n  services:\n  - {name: s, namespace: d, hostname: h, vips: [/1.1.1.1]}\n"
		   "  - {name: t, namespace: d, hostname: i, vips: [/1.1.1.1]}\n",
		   5, "localXds.services[1].vips[0]", "VIP already used", "duplicate VIP");

	/* An error inside the localXdsPath file names that file and its line. */
	zr_config_error_t err;
	zr_config_t *cfg = NULL;
	const char *cy = "node: n\nlocalXdsPath: bad-state.yaml\n";
	int rc = zr_config_load_string(cy, strlen(cy), src("tests/unit/data/t.yaml"), &cfg, &err);
	bool good = rc == -1 && !strcmp(err.file, src("tests/unit/data/bad-state.yaml")) && err.line == 7 &&
		    !strcmp(err.key, "workloads[1].workloadIps[0]") && strstr(err.message, "bad IP");
	if (!ok(good, "error inside localXdsPath names that file, line and key")) {
		char buf[1400];
		diag("  got rc %d: %s", rc, zr_config_error_str(&err, buf, sizeof(buf)));
	}
	zr_config_free(cfg);
	cy = "node: n\nlocalXdsPath: bad-syntax.yaml\n";
	rc = zr_config_load_string(cy, strlen(cy), src("tests/unit/data/t.yaml"), &cfg, &err);
	ok(rc == -1 && !strcmp(err.file, src("tests/unit/data/bad-syntax.yaml")) && err.line == 4 &&
		   strstr(err.message, "started at line 3") && strstr(err.message, "YAML syntax error"),
	   "syntax error inside localXdsPath names that file and line");
	zr_config_free(cfg);
}

#define POL(extra) \
	"  - {name: p, namespace: d, scope: Namespace, action: Deny, rules: [[[{destinationPorts: [22]}]]]" extra "}\n"

/* The policy map itself, as ztunnel reads it (rbac.rs Authorization: every
 * key but dryRun required, deny_unknown_fields), and what ztunnel would
 * resolve differently from zring. */
static void test_policy_errors(void)
{
	static const char head[] = "node: n\nlocalXds:\n  policies:\n";
	char y[2048];
	/* No namespace: ztunnel refuses it, whatever the scope (a Global policy
	 * lives in the root namespace); it defaulted to "" here. */
	snprintf(y, sizeof(y), "%s%s", head, "  - {name: p, scope: Namespace, action: Allow, rules: []}\n");
	expect_err(y, 4, "localXds.policies[0].namespace", "missing required key", "policy without namespace");
	snprintf(y, sizeof(y), "%s%s", head, "  - name: p\n    scope: Global\n    action: Deny\n    rules: [[]]\n");
	expect_err(y, 4, "localXds.policies[0].namespace", "missing required key", "Global policy without namespace");
	snprintf(y, sizeof(y), "%s%s", head, "  - {name: p, namespace: ~, scope: Global, action: Deny, rules: [[]]}\n");
	expect_err(y, 4, "localXds.policies[0].namespace", "expected a string, got null", "policy with namespace: ~");
	snprintf(y, sizeof(y), "%s%s", head, "  - {name: p, namespace: d, scope: Global, action: Deny}\n");
	expect_err(y, 4, "localXds.policies[0].rules", "missing required key", "policy without rules");
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - {name: p, namespace: \"\", scope: Global, action: Deny, rules: []}\n");
	zr_config_error_t err;
	zr_config_t *cfg = load(y, &err, NULL);
	ok(cfg && !strcmp(cfg->state.policies[0].namespace_, ""),
	   "namespace: \"\" written out loads (ztunnel: a string)");
	zr_config_free(cfg);

	/* Two policies of one namespace/name: ztunnel keeps only the last one
	 * (its store is keyed by it), zring applied both. */
	snprintf(y, sizeof(y), "%s%s%s%s", head, POL(""),
		 "  - {name: p, namespace: e, scope: Global, action: Deny, rules: []}\n",
		 "  - name: p\n    namespace: d\n    scope: Namespace\n    action: Allow\n    rules: [[]]\n");
	expect_err(y, 6, "localXds.policies[2]", "duplicate policy d/p: first at ", "duplicate namespace/name");
	cfg = load(y, &err, NULL);
	ok(!cfg && strstr(err.message, "tests/unit/data/t.yaml:4 "), "  ... naming the line of the first one");
	if (!cfg)
		diag("  %s", err.message);
	zr_config_free(cfg);
	snprintf(y, sizeof(y), "%s%s%s", head, POL(""),
		 "  - {name: p, namespace: e, scope: Namespace, action: Deny, rules: []}\n");
	cfg = load(y, &err, NULL);
	ok(cfg && cfg->state.n_policies == 2, "one name in two namespaces loads");
	zr_config_free(cfg);

	/* A state file that never ends is an error, not an endless read. */
	{
		const char *z = "node: n\nlocalXdsPath: /dev/zero\n";
		zr_config_t *c0 = NULL;
		int r0 = zr_config_load_string(z, strlen(z), src("tests/unit/data/t.yaml"), &c0, &err);
		ok(r0 == -1 && !c0 && !strcmp(err.key, "localXdsPath") && strstr(err.message, "too large"),
		   "localXdsPath: /dev/zero: an error naming the key (%s)", err.message);
		zr_config_free(c0);
	}

	/* A null top-level list: `policies: ~` would have meant "no policies",
	 * which allows everything. */
	expect_err("node: n\nlocalXds:\n  policies: ~\n", 3, "localXds.policies", "expected a list, got null",
		   "policies: ~");
	expect_err("node: n\nlocalXds:\n  workloads:\n", 3, "localXds.workloads", "expected a list, got null",
		   "workloads: (empty)");
	cfg = load("node: n\nlocalXds:\n  policies: []\n", &err, NULL);
	ok(cfg && cfg->state.n_policies == 0, "policies: [] loads (no policies)");
	zr_config_free(cfg);

	/* Tags: meaningless on the policy and its fields (`action: !Deny Allow`). */
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - !Exact {name: p, namespace: d, scope: Namespace, action: Allow, rules: []}\n");
	expect_err(y, 4, "localXds.policies[0]", "a policy takes no tag, got !Exact", "tagged policy");
	snprintf(y, sizeof(y), "%s%s", head, POL(", dryRun: !Exact true"));
	expect_err(y, 4, "localXds.policies[0].dryRun", "dryRun takes no tag, got !Exact", "tagged dryRun");
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - {name: p, namespace: d, scope: Namespace, action: !Exact Allow, rules: []}\n");
	expect_err(y, 4, "localXds.policies[0].action", "action takes no tag, got !Exact", "action: !Exact Allow");
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - {name: p, namespace: d, scope: Namespace, action: !Deny Allow, rules: []}\n");
	expect_err(y, 4, "localXds.policies[0].action", "action takes no tag, got !Deny", "action: !Deny Allow");
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - {name: p, namespace: d, scope: !!int Global, action: Allow, rules: []}\n");
	expect_err(y, 4, "localXds.policies[0].scope", "scope takes no tag", "scope: !!int Global");
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - {name: !Prefix p, namespace: d, scope: Global, action: Allow, rules: []}\n");
	expect_err(y, 4, "localXds.policies[0].name", "name takes no tag, got !Prefix", "name: !Prefix p");
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - {name: p, namespace: !Exact d, scope: Global, action: Allow, rules: []}\n");
	expect_err(y, 4, "localXds.policies[0].namespace", "namespace takes no tag", "namespace: !Exact d");
	snprintf(y, sizeof(y), "%s%s", head,
		 "  - !!map {name: !!str p, namespace: d, scope: Namespace, action: Deny, dryRun: !!bool true,"
		 " rules: !!seq []}\n");
	cfg = load(y, &err, NULL);
	ok(cfg && cfg->state.policies[0].dry_run, "YAML's own tags (!!map, !!str, !!bool, !!seq) load");
	zr_config_free(cfg);
}

static void test_ztunnel_file(void)
{
	zr_config_error_t err;
	zr_config_t *cfg = NULL;
	const char *cy = "node: local\nlocalXdsPath: ztunnel-local.yaml\n";
	int rc = zr_config_load_string(cy, strlen(cy), src("tests/unit/data/t.yaml"), &cfg, &err);
	if (!ok(rc == 0, "ztunnel-format local state file loads")) {
		char buf[1400];
		diag("  %s", zr_config_error_str(&err, buf, sizeof(buf)));
		return;
	}
	zr_state_t *st = &cfg->state;
	is_str(cfg->local_xds_path, src("tests/unit/data/ztunnel-local.yaml"), "localXdsPath made absolute");
	ok(st->n_workloads == 3 && st->n_services == 2 && st->n_policies == 2, "3 workloads, 2 services, 2 policies");
	if (st->n_workloads != 3 || st->n_services != 2 || st->n_policies != 2)
		goto out;
	ok(st->workloads[0].local && st->workloads[1].local && !st->workloads[2].local, "local workloads");
	is_str(st->workloads[2].identity, "spiffe://example.org/ns/other/sa/default", "workload trustDomain used");
	const zr_service_t *local = zr_state_service_by_hostname(st, "example.com");
	const zr_service_t *remote = zr_state_service_by_hostname(st, "example2.com");
	ok(local && local->n_endpoints == 2, "example.com has both local workloads");
	ok(remote && remote->n_endpoints == 3 && remote->endpoints[2] == 2,
	   "service endpoints map adds the remote workload");
	if (local && remote) {
		is(zr_service_target_port(local, &st->workloads[1], 80), 9090, "ztunnel per-workload port");
		is(zr_service_target_port(remote, &st->workloads[2], 80), 8181, "endpoint port from service endpoints");
		is_str(remote->vips[0].network, "remote", "VIP network");
	}
	zr_policy_t *deny = &st->policies[1];
	ok(deny->scope == ZR_SCOPE_WORKLOAD_SELECTOR && deny->action == ZR_ACTION_DENY && deny->dry_run,
	   "WorkloadSelector deny dryRun");
	if (deny->n_rules == 1 && deny->rules[0].n_clauses == 1 && deny->rules[0].clauses[0].n_matches == 2) {
		zr_policy_match_t *m = &deny->rules[0].clauses[0].matches[0];
		ok(m->n_principals == 2 && m->principals[0].kind == ZR_STRING_PREFIX &&
			   !strcmp(m->principals[0].value, "cluster.local/ns/bad/") &&
			   m->principals[1].kind == ZR_STRING_EXACT &&
			   !strcmp(m->principals[1].value, "cluster.local/ns/x/sa/y"),
		   "!Prefix and !Exact kept");
		ok(m->n_not_namespaces == 1 && m->not_namespaces[0].kind == ZR_STRING_SUFFIX &&
			   !strcmp(m->not_namespaces[0].value, "-system"),
		   "{Suffix: x} kept");
		ok(m->n_service_accounts == 1 && !strcmp(m->service_accounts[0], "default/evil"),
		   "ServiceAccountMatch as ns/sa");
		zr_policy_match_t *m2 = &deny->rules[0].clauses[0].matches[1];
		ok(m2->n_namespaces == 1 && m2->namespaces[0].kind == ZR_STRING_PRESENCE, "!Presence kept");
	} else {
		ok(false, "deny rule shape");
	}
	zr_policy_t *allow = &st->policies[0];
	ok(allow->n_rules == 1 && allow->rules[0].clauses[0].matches[0].n_not_destination_ports == 1,
	   "notDestinationPorts");
out:
	zr_config_free(cfg);
}

static void test_example(void)
{
	zr_config_error_t err;
	zr_config_t *cfg = NULL;
	int rc = zr_config_load(src("examples/zring.yaml"), &cfg, &err);
	if (!ok(rc == 0, "examples/zring.yaml loads")) {
		char buf[1400];
		diag("  %s", zr_config_error_str(&err, buf, sizeof(buf)));
		return;
	}
	ok(listener_is(&cfg->listeners.socks5, "127.0.0.2:15080"), "example socks5");
	zr_ip_t ip;
	const zr_service_t *echo =
		zr_ip_parse("127.10.0.1", &ip) == 0 ? zr_state_service_by_vip(&cfg->state, &ip) : NULL;
	ok(echo && echo->n_endpoints == 1 &&
		   zr_service_target_port(echo, &cfg->state.workloads[echo->endpoints[0]], 80) == 8080 &&
		   cfg->state.workloads[echo->endpoints[0]].protocol == ZR_PROTO_TCP,
	   "example echo VIP 127.10.0.1:80 -> TCP endpoint :8080");
	ok(zr_ip_parse("127.0.1.1", &ip) == 0 && zr_state_workload_by_ip(&cfg->state, &ip) &&
		   zr_state_workload_by_ip(&cfg->state, &ip)->local,
	   "example client is local");
	zr_config_free(cfg);

	rc = zr_config_load(src("tests/unit/data/no-such-file.yaml"), &cfg, &err);
	ok(rc == -ENOENT && cfg == NULL && strstr(err.message, "cannot read") && strstr(err.file, "no-such-file"),
	   "unreadable file: -ENOENT and message");
}

static void test_json(void)
{
	static const char json[] =
		"{\"node\": \"n\", \"workers\": 2, \"listeners\": {\"socks5\": \"127.0.0.1:1080\", \"metrics\": null},\n"
		" \"drainTimeout\": \"5s\",\n"
		" \"localXds\": {\"workloads\": [{\"uid\": \"u\", \"namespace\": \"d\", \"workloadIps\": [\"10.0.0.1\"],\n"
		"   \"protocol\": \"HBONE\", \"services\": {\"d/h\": {\"80\": 8080}}}],\n"
		"  \"services\": [{\"name\": \"h\", \"namespace\": \"d\", \"hostname\": \"h\", \"vips\": [\"/10.1.0.1\"],\n"
		"   \"ports\": {\"80\": 81}}]}}\n";
	zr_config_error_t err;
	zr_config_t *cfg = load(json, &err, NULL);
	if (!ok(cfg != NULL, "JSON config loads"))
		return;
	ok(cfg->workers == 2 && listener_is(&cfg->listeners.socks5, "127.0.0.1:1080") &&
		   listener_is(&cfg->listeners.metrics, NULL) && cfg->drain_timeout_ms == 5000,
	   "JSON settings");
	ok(cfg->state.n_services == 1 && cfg->state.services[0].n_endpoints == 1 &&
		   zr_service_target_port(&cfg->state.services[0], &cfg->state.workloads[0], 80) == 8080,
	   "JSON quoted port keys");
	zr_config_free(cfg);
	expect_err("{\"node\": \"n\",\n \"workers\": {\"a\": 1}}\n", 2, "workers", "expected an integer",
		   "JSON map where an int is expected");
}

static void test_error_str(void)
{
	zr_config_error_t err = {.line = 3, .column = 5};
	char buf[1400];
	snprintf(err.file, sizeof(err.file), "a.yaml");
	snprintf(err.key, sizeof(err.key), "listeners.admin");
	snprintf(err.message, sizeof(err.message), "bad");
	is_str(zr_config_error_str(&err, buf, sizeof(buf)), "a.yaml:3:5: listeners.admin: bad", "error format");
	err.line = 0;
	err.key[0] = '\0';
	is_str(zr_config_error_str(&err, buf, sizeof(buf)), "a.yaml: bad", "error format without position");
}

int main(void)
{
	find_root();
	test_defaults();
	test_explicit();
	test_durations();
	test_workers_cpus();
	test_errors();
	test_inline_state();
	test_state_errors();
	test_policy_errors();
	test_ztunnel_file();
	test_example();
	test_json();
	test_error_str();
	return done_testing();
}
