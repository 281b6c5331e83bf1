/* The metrics, readiness and admin servers over real sockets: routes, status
 * codes, and that garbage, oversized, truncated and idle clients never stop
 * the server from answering the next request. Also drives `zring ctl`. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ctl/server.h"
#include "io/log.h"
#include "tap.h"

struct fake {
	zr_config_t cfg;
	zr_worker_stats_t stats[1];
	atomic_bool ready;
	atomic_int quits;
};

static const zr_config_t *cfg_acquire(void *ctx)
{
	return &((struct fake *)ctx)->cfg;
}

static void cfg_release(void *ctx, const zr_config_t *cfg)
{
}

static size_t n_workers(void *ctx)
{
	return 1;
}

static const zr_worker_stats_t *worker_stats(void *ctx, size_t i)
{
	return &((struct fake *)ctx)->stats[i];
}

static void dump_connections(void *ctx, zr_strbuf_t *out, zr_strbuf_t *by_workload)
{
	zr_strbuf_puts(out,
		       "[{\"worker\":0,\"src\":\"127.0.1.1:5000\",\"dst\":\"127.0.1.3:80\",\"srcWorkload\":\"client\","
		       "\"dstWorkload\":\"server\",\"dstService\":null,\"state\":\"relaying\",\"bytesUp\":10,"
		       "\"bytesDown\":20,\"ageMs\":1500}]");
	zr_strbuf_puts(by_workload,
		       "\"cluster1//v1/Pod/default/server\"\tin\t{\"src\":\"127.0.1.1:5000\",\"originalDst\":\"\","
		       "\"actualDst\":\"127.0.1.3:80\",\"protocol\":\"HBONE\"}\n"
		       "\"elsewhere\"\tout\t{\"src\":\"127.0.1.9:6000\",\"originalDst\":\"127.10.0.1:80\","
		       "\"actualDst\":\"127.0.1.3:15008\",\"protocol\":\"HBONE\"}\n");
}

static bool ready(void *ctx, char *pending, size_t cap)
{
	snprintf(pending, cap, "certificates");
	return atomic_load(&((struct fake *)ctx)->ready);
}

static void certificates(void *ctx, void (*fn)(void *arg, const char *identity, int64_t not_after), void *arg)
{
	fn(arg, "spiffe://cluster.local/ns/default/sa/client", (int64_t)time(NULL) + 3600);
	fn(arg, "spiffe://cluster.local/ns/default/sa/server", (int64_t)time(NULL) + 7200);
	fn(arg, "spiffe://cluster.local/ns/default/sa/\"old\"", (int64_t)time(NULL) - 60);
}

static void quit(void *ctx)
{
	atomic_fetch_add(&((struct fake *)ctx)->quits, 1);
}

static const zr_crypto_info_t *crypto(void *ctx)
{
	static const zr_crypto_info_t ci = {.backend = "openssl",
					    .description = "OpenSSL \"3\" EVP",
					    .record_layer = "zring",
					    .openssl_provider = "legacy"};
	return &ci;
}

/* Sends `len` bytes (stopping quietly if the server closes early) and reads
 * the whole response. Returns the HTTP status, 0 when the server closed
 * without a status line, or -1 if the connection failed. */
static int exchange(unsigned port, const char *req, size_t len, char *resp, size_t cap)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {
		.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = 3};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	for (size_t off = 0; off < len;) {
		ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	size_t got = 0;
	ssize_t n;
	while (got + 1 < cap && (n = recv(fd, resp + got, cap - 1 - got, 0)) > 0)
		got += (size_t)n;
	resp[got] = '\0';
	close(fd);
	int status = 0;
	return sscanf(resp, "HTTP/1.1 %d", &status) == 1 ? status : 0;
}

static char resp[1 << 20];

static int get(unsigned port, const char *method, const char *path)
{
	char req[512];
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n", method, path);
	return exchange(port, req, (size_t)n, resp, sizeof(resp));
}

static const char *body(void)
{
	const char *b = strstr(resp, "\r\n\r\n");
	return b ? b + 4 : "";
}

static bool valid_yaml(const char *text)
{
	yaml_parser_t p;
	yaml_document_t d;
	yaml_parser_initialize(&p);
	yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
	bool ok_ = yaml_parser_load(&p, &d) && yaml_document_get_root_node(&d);
	if (ok_)
		yaml_document_delete(&d);
	yaml_parser_delete(&p);
	return ok_;
}

static void write_cert(const char *path)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	BIGNUM *serial = NULL;
	BN_hex2bn(&serial, "e5dfb59150b2ba7f108d93dcec5aa613");
	BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x));
	BN_free(serial);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	ASN1_TIME_set_string(X509_getm_notAfter(x), "20350102030405Z");
	X509_set_pubkey(x, k);
	X509_sign(x, k, EVP_sha256());
	FILE *f = fopen(path, "w");
	PEM_write_X509(f, x);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

/* Runs `zring ctl` with stdout and stderr in a file whose text lands in resp. */
static int cli(int argc, char **argv)
{
	fflush(stdout);
	char path[] = "/tmp/zr-test-cli-XXXXXX";
	int fd = mkstemp(path), out = dup(1), err = dup(2);
	dup2(fd, 1);
	dup2(fd, 2);
	int rc = zr_ctl_cli_main(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(out, 1);
	dup2(err, 2);
	close(out);
	close(err);
	ssize_t n = pread(fd, resp, sizeof(resp) - 1, 0);
	resp[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return rc;
}

static void build_config(struct fake *f, const char *cert_path)
{
	static zr_ip_t ips[1];
	static zr_port_map_t ports[] = {{80, 8080}};
	static zr_workload_service_t wsvc[] = {{"default/echo.default.svc.cluster.local", ports, 1, ZR_HEALTHY}};
	static zr_workload_t wl[1];
	static zr_vip_t vips[1] = {{"", {0}}};
	static size_t eps[] = {0};
	static char *sans[] = {"spiffe://cluster.local/ns/default/sa/server"};
	static zr_service_t svc[1];
	static zr_string_match_t principals[] = {{ZR_STRING_EXACT, "cluster.local/ns/default/sa/\"client\"", 36},
						 {ZR_STRING_PRESENCE, "", 0},
						 {ZR_STRING_PREFIX, "cluster.local/ns/default/sa/clien*", 34}};
	static char *sas[] = {"default/client"};
	static zr_cidr_t cidrs[1];
	static uint16_t dports[] = {80, 443};
	static zr_policy_match_t match = {.principals = principals,
					  .n_principals = 3,
					  .not_service_accounts = sas,
					  .n_not_service_accounts = 1,
					  .source_ips = cidrs,
					  .n_source_ips = 1,
					  .destination_ports = dports,
					  .n_destination_ports = 2};
	static zr_policy_clause_t clause = {&match, 1};
	static zr_policy_rule_t rule = {&clause, 1};
	static zr_policy_t pol[1];
	static zr_identity_cert_t certs[4];
	zr_config_t *c = &f->cfg;
	if (zr_ip_parse("127.0.1.3", &ips[0]) || zr_ip_parse("127.10.0.1", &vips[0].ip) ||
	    zr_cidr_parse("10.0.0.0/8", &cidrs[0].ip, &cidrs[0].prefix_len))
		abort();
	wl[0] = (zr_workload_t){.uid = "cluster1//v1/Pod/default/server",
				.name = "server",
				.namespace_ = "default",
				.service_account = "server",
				.node = "node-a",
				.network = "",
				.canonical_name = "server",
				.canonical_revision = "v1",
				.cluster_id = "Kubernetes",
				.trust_domain = "cluster.local",
				.ips = ips,
				.n_ips = 1,
				.protocol = ZR_PROTO_HBONE,
				.services = wsvc,
				.n_services = 1,
				.local = true,
				.identity = "spiffe://cluster.local/ns/default/sa/server",
				.waypoint = {.set = true, .network = "", .ip = vips[0].ip, .hbone_mtls_port = 15008}};
	svc[0] = (zr_service_t){.name = "echo",
				.namespace_ = "default",
				.hostname = "echo.default.svc.cluster.local",
				.key = "default/echo.default.svc.cluster.local",
				.vips = vips,
				.n_vips = 1,
				.ports = ports,
				.n_ports = 1,
				.subject_alt_names = sans,
				.n_subject_alt_names = 1,
				.endpoints = eps,
				.n_endpoints = 1,
				.waypoint = {.set = true,
					     .is_service = true,
					     .namespace_ = "default",
					     .hostname = "echo.default.svc.cluster.local",
					     .hbone_mtls_port = 15008}};
	pol[0] = (zr_policy_t){.name = "allow-client",
			       .namespace_ = "default",
			       .scope = ZR_SCOPE_NAMESPACE,
			       .action = ZR_ACTION_ALLOW,
			       .rules = &rule,
			       .n_rules = 1};
	certs[0] = (zr_identity_cert_t){"spiffe://cluster.local/ns/default/sa/server", (char *)cert_path, "/x.key"};
	certs[1] = (zr_identity_cert_t){"spiffe://cluster.local/ns/default/sa/gone", "/nonexistent/cert.pem", "/x"};
	certs[2] = (zr_identity_cert_t){"spiffe://cluster.local/ns/default/sa/\"old\"", (char *)cert_path, "/x.key"};
	certs[3] = (zr_identity_cert_t){"spiffe://cluster.local/ns/default/sa/unloaded", (char *)cert_path, "/x.key"};
	c->node = "node-a";
	c->trust_domain = "cluster.local";
	c->cluster_id = "Kubernetes";
	c->state = (zr_state_t){
		.workloads = wl, .n_workloads = 1, .services = svc, .n_services = 1, .policies = pol, .n_policies = 1};
	c->identity.certificates = certs;
	c->identity.n_certificates = 4;
	c->listeners.metrics.enabled = c->listeners.readiness.enabled = c->listeners.admin.enabled = true;
	if (zr_addr_parse("127.0.0.1:0", &c->listeners.metrics.addr) ||
	    zr_addr_parse("127.0.0.1:0", &c->listeners.readiness.addr) ||
	    zr_addr_parse("127.0.0.1:0", &c->listeners.admin.addr) ||
	    zr_addr_parse("127.0.0.1:15001", &c->listeners.outbound.addr))
		abort();
	c->listeners.outbound.enabled = true;
}

static void test_routes(unsigned mport, unsigned rport, unsigned aport, struct fake *f)
{
	is(get(mport, "GET", "/metrics"), 200, "GET /metrics");
	ok(strstr(resp, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != NULL,
	   "metrics content type");
	ok(strstr(resp, "\r\nContent-Length: ") != NULL && strstr(body(), "istio_build{") != NULL, "metrics body");
	long secs = 0;
	const char *exp =
		strstr(body(),
		       "\nzring_certificate_expiry_seconds{identity=\"spiffe://cluster.local/ns/default/sa/client\"} ");
	ok(exp && sscanf(strchr(exp, '}') + 1, "%ld", &secs) == 1 && secs > 3590 && secs <= 3600,
	   "certificate expiry in seconds (%ld)", secs);
	ok(strstr(body(), "# TYPE zring_certificate_expiry_seconds gauge\n") &&
		   strstr(body(),
			  "zring_certificate_expiry_seconds{identity=\"spiffe://cluster.local/ns/default/sa/\\\"old\\\"\"} -6"),
	   "expired certificate: negative, label escaped");
	is(get(mport, "GET", "/stats/prometheus"), 200, "GET /stats/prometheus");
	is(get(mport, "POST", "/metrics"), 405, "POST /metrics is 405");
	is(get(mport, "GET", "/config_dump"), 404, "admin routes absent on the metrics port");

	is(get(rport, "GET", "/healthz/ready"), 500, "not ready: 500");
	is_str(body(), "not ready, pending: certificates\n", "pending named");
	atomic_store(&f->ready, true);
	is(get(rport, "GET", "/healthz/ready"), 200, "ready: 200");
	is_str(body(), "ready\n", "ready body");

	is(get(aport, "GET", "/"), 200, "admin index");
	ok(strstr(body(), "/config_dump") && strstr(body(), "/quitquitquit"), "index lists endpoints");
	is(get(aport, "GET", "/stats"), 200, "admin /stats");
	is(get(aport, "GET", "/config_dump"), 200, "GET /config_dump");
	ok(strstr(resp, "Content-Type: application/json\r\n") != NULL, "config_dump is JSON");
	ok(valid_yaml(body()), "config_dump parses (libyaml)");
	ok(strstr(body(), "\"state\":\"Available\",\"certChain\":[{\"pem\":\"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t") &&
		   strstr(body(), "\"serialNumber\":\"305554775863395697262503895661564044819\",\"validFrom\":\"20") &&
		   strstr(body(), "\"expirationTime\":\"2035-01-02T03:04:05Z\"}],\"rootCerts\":[]"),
	   "certificate as ztunnel's CertsDump: base64 PEM, decimal serial, RFC 3339");
	ok(strstr(body(), "\"state\":\"Unavailable: No such file or directory\",\"certChain\":[]") != NULL,
	   "unreadable certificate reported");
	ok(strstr(body(), "sa/\\\"old\\\"\",\"state\":\"Unavailable: certificate expired\",\"certChain\":[{") != NULL,
	   "a loaded certificate past its notAfter: Unavailable");
	ok(strstr(body(), "sa/unloaded\",\"state\":\"Unavailable: not loaded\",\"certChain\":[{") != NULL,
	   "a certificate the node has not loaded: Unavailable");
	ok(strstr(body(), "\"vips\":[\"/127.10.0.1\"]") && strstr(body(), "\"ports\":{\"80\":8080}") &&
		   strstr(body(),
			  "\"endpoints\":{\"cluster1//v1/Pod/default/server\":{\"workloadUid\":"
			  "\"cluster1//v1/Pod/default/server\",\"service\":\"default/echo.default.svc.cluster.local\","
			  "\"address\":\"/127.0.1.3\",\"port\":{\"80\":8080},\"status\":\"Healthy\"}}"),
	   "service rendered, endpoints a map keyed by workload uid");
	ok(strstr(body(),
		  "\"workloadState\":{\"cluster1//v1/Pod/default/server\":{\"state\":\"Up\",\"info\":{"
		  "\"name\":\"server\",\"namespace\":\"default\",\"trustDomain\":\"cluster.local\","
		  "\"serviceAccount\":\"server\"},\"connections\":{\"inbound\":[{\"src\":\"127.0.1.1:5000\","
		  "\"originalDst\":\"\",\"actualDst\":\"127.0.1.3:80\",\"protocol\":\"HBONE\"}],\"outbound\":[]}},"
		  "\"elsewhere\":{\"state\":\"Up\",\"info\":{\"name\":\"\",") &&
		   strstr(body(), "\"outbound\":[{\"src\":\"127.0.1.9:6000\",\"originalDst\":\"127.10.0.1:80\""),
	   "workloadState: each workload's connections by direction");
	ok(strstr(body(), "\"rules\":[[[{\"principals\":[{\"Exact\":\"cluster.local/ns/default/sa/\\\"client\\\"\"},"
			  "{\"Presence\":[]},{\"Prefix\":\"cluster.local/ns/default/sa/clien*\"}],"
			  "\"notServiceAccounts\":[{\"namespace\":\"default\",\"serviceAccount\":\"client\"}],"
			  "\"sourceIps\":[\"10.0.0.0/8\"],\"destinationPorts\":[80,443]}]]]") != NULL,
	   "policy rules rendered as ztunnel's tagged StringMatch / ServiceAccountMatch, escaped");
	ok(strstr(body(), "\"listeners\":{\"outbound\":\"127.0.0.1:15001\",\"inboundPlaintext\":null") != NULL,
	   "listeners rendered");
	ok(strstr(body(), "\"crypto\":{\"backend\":\"openssl\",\"description\":\"OpenSSL \\\"3\\\" EVP\","
			  "\"recordLayer\":\"zring\",\"opensslProvider\":\"legacy\"}") != NULL,
	   "crypto choice rendered and escaped");
	if (access("/usr/bin/python3", X_OK) == 0) {
		FILE *p = popen("/usr/bin/python3 -c 'import json,sys; json.load(sys.stdin)'", "w");
		fputs(body(), p);
		is(pclose(p), 0, "config_dump is strict JSON (python json)");
	} else {
		skip("no python3");
	}

	is(get(aport, "POST", "/logging?level=debug"), 200, "POST /logging?level=debug");
	is(zr_log_get_level(), ZR_LOG_DEBUG, "log level changed");
	is(get(aport, "GET", "/logging"), 200, "GET /logging");
	ok(strstr(body(), "debug") != NULL, "GET /logging shows the level");
	is(get(aport, "POST", "/logging?level=loud"), 400, "bad level: 400");
	is(zr_log_get_level(), ZR_LOG_DEBUG, "bad level leaves the level");
	/* ztunnel's forms: scope=level lists over the current filter, reset */
	zr_log_set_default_level(ZR_LOG_ERROR);
	is(get(aport, "POST", "/logging?level=access%3Dwarn,info"), 200, "POST level=access%%3Dwarn,info");
	ok(strstr(body(), "current log level is access=warn,info\n") != NULL, "answers the filter");
	ok(!zr_log_scope_enabled(ZR_LOG_INFO, "access") && zr_log_scope_enabled(ZR_LOG_INFO, "flow"),
	   "access at warn, the rest at info");
	is(get(aport, "POST", "/logging?level=hbone=trace"), 200, "POST level=hbone=trace (unescaped)");
	ok(strstr(body(), "current log level is access=warn,hbone=trace,info\n") != NULL,
	   "merged over the current filter");
	is(get(aport, "POST", "/logging?level=access=debug,bogus"), 400, "one bad clause: 400");
	ok(strstr(body(), "Invalid level provided: bogus") != NULL && strstr(body(), "trace|off") != NULL,
	   "400 names the clause and the levels");
	ok(!zr_log_scope_enabled(ZR_LOG_INFO, "access"), "  ... and changes nothing");
	is(get(aport, "POST", "/logging?level=off"), 200, "level=off");
	is(zr_log_get_level(), ZR_LOG_OFF, "default level off");
	is(get(aport, "POST", "/logging?reset"), 200, "reset");
	ok(strstr(body(), "current log level is error\n") != NULL, "reset: back to the start-up level, no scopes");
	is(get(aport, "POST", "/logging?reset&level=trace"), 200, "reset&level=trace");
	ok(strstr(body(), "current log level is trace\n") != NULL, "reset then trace");
	is(get(aport, "POST", "/logging"), 200, "POST /logging alone lists");
	ok(strstr(body(), "current log level is trace\n") != NULL, "  ... the filter");
	zr_log_set_default_level(ZR_LOG_ERROR);
	is(get(aport, "GET", "/nope"), 404, "unknown path: 404");
	is(get(aport, "GET", "/quitquitquit"), 405, "GET /quitquitquit: 405");
	ok(strstr(resp, "\r\nAllow: POST\r\n") != NULL, "405 names the allowed method");
	is(atomic_load(&f->quits), 0, "no quit yet");
	is(get(aport, "POST", "/quitquitquit"), 200, "POST /quitquitquit");
	is(atomic_load(&f->quits), 1, "quit hook called once the answer is out");
}

static void test_abuse(unsigned mport)
{
	static const char garbage[] = "\x00\x01\xff\xfegarbage\r\n\r\n";
	is(exchange(mport, garbage, sizeof(garbage) - 1, resp, sizeof(resp)), 400, "binary garbage: 400");
	is(get(mport, "GET", "/metrics"), 200, "still serving after garbage");
	is(exchange(mport, "HELLO\r\n\r\n", 9, resp, sizeof(resp)), 400, "malformed request line: 400");
	is(exchange(mport, "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 35, resp, sizeof(resp)), 400,
	   "malformed header: 400");
	is(exchange(mport, "GET /metrics HTTP/2.0\r\n\r\n", 25, resp, sizeof(resp)), 400, "bad version: 400");

	size_t big = 100 * 1024;
	char *req = malloc(big + 64);
	int n = snprintf(req, 64, "GET /metrics HTTP/1.1\r\nX-Big: ");
	memset(req + n, 'a', big);
	memcpy(req + n + big, "\r\n\r\n", 4);
	int st = exchange(mport, req, (size_t)n + big + 4, resp, sizeof(resp));
	ok(st == 431 || st == 0, "100 KiB header: 431 or closed (got %d)", st);
	free(req);
	is(get(mport, "GET", "/metrics"), 200, "still serving after an oversized header");

	is(exchange(mport, "GET /metr", 9, resp, 1) /* server waits; we close */, 0, "truncated request then close");
	int idle = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {
		.sin_family = AF_INET, .sin_port = htons((uint16_t)mport), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ok(connect(idle, (struct sockaddr *)&sa, sizeof(sa)) == 0 && send(idle, "GET /met", 8, 0) == 8,
	   "a slow client holds a half request");
	is(get(mport, "GET", "/metrics"), 200, "others are served meanwhile");
	close(idle);

	int fds[300], closed = 0;
	for (int i = 0; i < 300; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
			fds[i] = (close(fds[i]), -1);
	}
	usleep(200 * 1000);
	for (int i = 0; i < 300; i++) {
		char c;
		if (fds[i] >= 0 && recv(fds[i], &c, 1, MSG_DONTWAIT) == 0)
			closed++;
	}
	ok(closed >= 300 - 256 - 1, "clients beyond the limit are closed (%d closed)", closed);
	for (int i = 0; i < 300; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	usleep(100 * 1000);
	is(get(mport, "GET", "/metrics"), 200, "still serving after the flood");
}

static int connect_to(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {
		.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		fd = (close(fd), -1);
	return fd;
}

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct flood {
	unsigned port;
	atomic_bool stop;
	int opened;
};

/* Keeps connecting and sending half a request head, holding the last 200. */
static void *flooder(void *arg)
{
	struct flood *fl = arg;
	int ring[200];
	for (size_t i = 0; i < 200; i++)
		ring[i] = -1;
	for (size_t i = 0; !atomic_load(&fl->stop); i = (i + 1) % 200) {
		if (ring[i] >= 0)
			close(ring[i]);
		ring[i] = connect_to(fl->port);
		if (ring[i] >= 0 && send(ring[i], "GET /hea", 8, MSG_NOSIGNAL) == 8)
			fl->opened++;
	}
	for (size_t i = 0; i < 200; i++)
		if (ring[i] >= 0)
			close(ring[i]);
	return NULL;
}

/* Slow clients on the metrics port take no slot from readiness or admin, the
 * newest connection wins over the oldest incomplete one, and a request head
 * must be complete within the head timeout. */
static void test_limits(unsigned mport, unsigned rport, unsigned aport)
{
	enum {
		N = 300
	};
	int fds[N], closed = 0;
	for (int i = 0; i < N; i++) {
		fds[i] = connect_to(mport);
		if (fds[i] >= 0 && send(fds[i], "GET /met", 8, MSG_NOSIGNAL) != 8)
			fds[i] = (close(fds[i]), -1);
	}
	usleep(300 * 1000);
	double t0 = mono();
	is(get(rport, "GET", "/healthz/ready"), 200, "readiness answers while %d slow clients hold metrics", N);
	is(get(aport, "GET", "/"), 200, "admin answers too");
	ok(mono() - t0 < 2.0, "both within 2 s (%.2f s)", mono() - t0);
	for (int i = 0; i < N; i++) {
		char c;
		if (fds[i] < 0 || recv(fds[i], &c, 1, MSG_DONTWAIT) == 0 || errno == ECONNRESET)
			closed++;
	}
	ok(closed >= N - 64 && closed < N, "the oldest slow clients were evicted (%d of %d closed)", closed, N);
	int last = fds[N - 1];
	ok(last >= 0 && send(last, "rics HTTP/1.1\r\n\r\n", 17, MSG_NOSIGNAL) == 17,
	   "the newest one finishes its head");
	struct timeval tv = {.tv_sec = 3};
	setsockopt(last, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ssize_t n = last >= 0 ? recv(last, resp, 64, MSG_WAITALL) : -1;
	ok(n > 12 && memcmp(resp, "HTTP/1.1 200", 12) == 0, "and is answered 200");
	for (int i = 0; i < N; i++)
		if (fds[i] >= 0)
			close(fds[i]);

	/* The same on the readiness port itself: the probe's complete head wins. */
	for (int i = 0; i < N; i++) {
		fds[i] = connect_to(rport);
		if (fds[i] >= 0 && send(fds[i], "GET /hea", 8, MSG_NOSIGNAL) != 8)
			fds[i] = (close(fds[i]), -1);
	}
	struct flood fl = {.port = rport};
	pthread_t th;
	pthread_create(&th, NULL, flooder, &fl);
	usleep(100 * 1000);
	int answered = 0;
	for (int i = 0; i < 20; i++)
		answered += get(rport, "GET", "/healthz/ready") == 200;
	atomic_store(&fl.stop, true);
	pthread_join(th, NULL);
	is(answered, 20, "readiness answers its probes among %d slow clients of its own and a flood of new ones (%d)",
	   N, fl.opened);
	for (int i = 0; i < N; i++)
		if (fds[i] >= 0)
			close(fds[i]);

	int slow = connect_to(mport);
	ok(slow >= 0 && send(slow, "GET /met", 8, MSG_NOSIGNAL) == 8, "a client stalls in its request head");
	tv.tv_sec = 8;
	setsockopt(slow, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	t0 = mono();
	char c;
	n = recv(slow, &c, 1, 0);
	double dt = mono() - t0;
	ok(n <= 0 && dt > 1.0 && dt < 4.0, "closed after the 2 s head timeout (%.2f s, recv %zd)", dt, n);
	close(slow);
}

/* With every descriptor of the process in use, each server still answers:
 * from its own descriptor table, or (shared table) by giving up its spare
 * descriptor for the accept and taking it back. */
static void test_emfile(unsigned mport, unsigned rport, unsigned aport, const char *how)
{
	diag("out of descriptors, %s", how);
	struct rlimit old, low;
	getrlimit(RLIMIT_NOFILE, &old);
	low = old;
	low.rlim_cur = 128;
	if (!ok(setrlimit(RLIMIT_NOFILE, &low) == 0, "RLIMIT_NOFILE lowered to 128"))
		return;
	int hog[128], n = 0;
	while (n < 128 && (hog[n] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
		n++;
	ok(n > 0 && n < 128 && errno == EMFILE, "descriptors exhausted (%d opened)", n);
	close(hog[--n]); /* one for our own client socket */
	for (int i = 0; i < 3; i++) {
		is(get(rport, "GET", "/healthz/ready"), 200, "out of descriptors: readiness answers (%d)", i + 1);
		usleep(50 * 1000); /* the server takes its spare back after closing */
	}
	is(get(mport, "GET", "/metrics"), 200, "out of descriptors: metrics answers");
	usleep(50 * 1000);
	is(get(aport, "GET", "/"), 200, "out of descriptors: admin answers");
	while (n > 0)
		close(hog[--n]);
	setrlimit(RLIMIT_NOFILE, &old);
	usleep(50 * 1000);
	is(get(rport, "GET", "/healthz/ready"), 200, "readiness answers with descriptors back");
}

static void test_cli(unsigned aport)
{
	char admin[64];
	snprintf(admin, sizeof(admin), "127.0.0.1:%u", aport);
	static const struct {
		const char *cmd, *want;
	} cases[] = {
		{"workloads", "NAMESPACE   POD-NAME   ADDRESS     NODE     WAYPOINT   PROTOCOL\n"
			      "default     server     127.0.1.3   node-a   echo       HBONE\n"},
		{"services", "echo           127.10.0.1    echo       1/1"},
		{"policies", "default     allow-client   Allow    Namespace"},
		{"certs",
		 "Leaf   Available                                e5dfb59150b2ba7f108d93dcec5aa613   2035-01-02T03:04:05Z"},
		{"connections", "0        127.0.1.1:5000   127.0.1.3:80   relaying   10         20           1.5s"},
		{"stats", "zring_workers"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[] = {(char *)cases[i].cmd, "--admin", admin};
		is(cli(3, argv), 0, "zring ctl %s", cases[i].cmd);
		if (!ok(strstr(resp, cases[i].want) != NULL, "zring ctl %s output", cases[i].cmd))
			diag("%s", resp);
	}
	char *json[] = {"services", "--json", "--admin", admin};
	is(cli(4, json), 0, "zring ctl services --json");
	ok(valid_yaml(resp) && strstr(resp, "\"hostname\": \"echo.default.svc.cluster.local\""), "--json section");
	char *bad[] = {"frobnicate"};
	is(cli(1, bad), 1, "unknown subcommand: exit 1");
	ok(strstr(resp, "usage:") != NULL, "usage printed");
}

int main(void)
{
	static struct fake f;
	char cert[] = "/tmp/zr-test-cert-XXXXXX";
	close(mkstemp(cert));
	write_cert(cert);
	build_config(&f, cert);
	zr_log_set_level(ZR_LOG_ERROR);
	zr_ctl_hooks_t hooks = {.ctx = &f,
				.config_acquire = cfg_acquire,
				.config_release = cfg_release,
				.n_workers = n_workers,
				.worker_stats = worker_stats,
				.dump_connections = dump_connections,
				.ready = ready,
				.certificates = certificates,
				.quit = quit,
				.crypto = crypto};
	zr_ctl_servers_t *srv = NULL;
	if (!ok(zr_ctl_servers_start(&f.cfg, &hooks, &srv) == 0, "servers start"))
		return 1;
	unsigned mport = zr_ctl_servers_port(srv, ZR_CTL_METRICS), rport = zr_ctl_servers_port(srv, ZR_CTL_READINESS),
		 aport = zr_ctl_servers_port(srv, ZR_CTL_ADMIN);
	ok(mport && rport && aport && mport != rport && rport != aport, "ephemeral ports reported");

	test_routes(mport, rport, aport, &f);
	test_abuse(mport);
	test_limits(mport, rport, aport);
	test_emfile(mport, rport, aport, "the servers' own descriptor table");
	zr_ctl_servers_t *shared = NULL;
	zr_ctl_servers_share_fd_table(true);
	if (ok(zr_ctl_servers_start(&f.cfg, &hooks, &shared) == 0, "servers on the process's descriptor table start")) {
		test_emfile(zr_ctl_servers_port(shared, ZR_CTL_METRICS), zr_ctl_servers_port(shared, ZR_CTL_READINESS),
			    zr_ctl_servers_port(shared, ZR_CTL_ADMIN), "spare descriptors");
		zr_ctl_servers_stop(shared);
	}
	zr_ctl_servers_share_fd_table(false);
	test_cli(aport);

	zr_config_t other = f.cfg;
	zr_ctl_servers_t *srv2 = NULL;
	other.listeners.admin.enabled = false;
	zr_sockaddr_from_ip(&other.listeners.metrics.addr, &(zr_ip_t){.family = AF_INET, .bytes = {127, 0, 0, 1}},
			    (uint16_t)mport);
	is(zr_ctl_servers_start(&other, &hooks, &srv2), -EADDRINUSE, "port in use: -EADDRINUSE");
	zr_ctl_servers_stop(srv);

	char admin[64];
	snprintf(admin, sizeof(admin), "127.0.0.1:%u", aport);
	char *argv[] = {"workloads", "--admin", admin};
	is(cli(3, argv), 2, "admin unreachable: exit 2");
	ok(strstr(resp, "cannot reach") != NULL, "unreachable admin explained");

	other = f.cfg;
	if (zr_addr_parse("0.0.0.0:0", &other.listeners.admin.addr))
		abort();
	is(zr_ctl_servers_start(&other, &hooks, &srv2), -EPERM, "non-loopback admin refused");
	other.listeners.admin.enabled = false;
	other.listeners.readiness.enabled = false;
	ok(zr_ctl_servers_start(&other, &hooks, &srv2) == 0, "metrics alone starts");
	is(zr_ctl_servers_port(srv2, ZR_CTL_ADMIN), 0, "disabled listener has no port");
	zr_ctl_servers_stop(srv2);
	unlink(cert);
	return done_testing();
}
