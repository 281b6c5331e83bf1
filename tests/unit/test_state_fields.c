/* The local-state fields beyond addressing (ztunnel's Workload and Service):
 * each is kept with its value, shown in /config_dump under ztunnel's name,
 * a bad value is an error naming file:line:col and key, an Unhealthy (or
 * capacity 0) workload leaves load balancing, and a field zring keeps but
 * does not act on (waypoint, networkGateway, applicationTunnel, ...) is named
 * in one warning per object at load. Runs with the working directory at
 * tests/unit (meson workdir). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "ctl/config.h"
#include "ctl/server.h"
#include "io/log.h"
#include "tap.h"

static char root[4096];

static const char *src(const char *rel)
{
	static char buf[4][4400];
	static int n;
	char *b = buf[n++ % 4];
	snprintf(b, sizeof(buf[0]), "%s/%s", root, rel);
	return b;
}

/* Loads yaml as tests/unit/data/t.yaml; stderr (the log) is captured into
 * `log` when given. */
static zr_config_t *load(const char *yaml, zr_config_error_t *err, char *log, size_t cap)
{
	zr_config_t *cfg = NULL;
	char path[] = "/tmp/zr-test-state-fields-XXXXXX";
	int fd = log ? mkstemp(path) : -1, saved = -1;
	if (fd >= 0) {
		fflush(stderr);
		saved = dup(2);
		dup2(fd, 2);
	}
	int rc = zr_config_load_string(yaml, strlen(yaml), src("tests/unit/data/t.yaml"), &cfg, err);
	if (fd >= 0) {
		fflush(stderr);
		dup2(saved, 2);
		close(saved);
		ssize_t n = pread(fd, log, cap - 1, 0);
		log[n > 0 ? n : 0] = '\0';
		close(fd);
		unlink(path);
	}
	if (rc != 0) {
		char buf[1400];
		diag("load: %s", zr_config_error_str(err, buf, sizeof(buf)));
	}
	return rc == 0 ? cfg : NULL;
}

static const zr_config_t *acquire(void *ctx)
{
	return ctx;
}

static void release(void *ctx, const zr_config_t *cfg)
{
}

static size_t no_workers(void *ctx)
{
	return 0;
}

/* The /config_dump body for cfg (caller frees). */
static char *dump(const zr_config_t *cfg)
{
	zr_ctl_hooks_t hooks = {
		.ctx = (void *)cfg, .config_acquire = acquire, .config_release = release, .n_workers = no_workers};
	zr_strbuf_t o = ZR_STRBUF_INIT;
	zr_config_dump(&o, &hooks);
	char *s = strdup(o.data ? o.data : "");
	zr_strbuf_free(&o);
	return s;
}

static void has(const char *hay, const char *needle, const char *what)
{
	if (!ok(hay && strstr(hay, needle), "dump: %s", what))
		diag("  no %s in the dump", needle);
}

static void test_ztunnel_fields(void)
{
	zr_config_error_t err;
	const char *cy = "node: local\nlocalXdsPath: ztunnel-local.yaml\n";
	zr_config_t *cfg = load(cy, &err, NULL, 0);
	if (!ok(cfg != NULL, "ztunnel-local.yaml loads"))
		return;
	zr_state_t *st = &cfg->state;
	const zr_workload_t *r = st->n_workloads == 3 ? &st->workloads[2] : NULL;
	const zr_service_t *svc = zr_state_service_by_hostname(st, "example2.com");
	if (!ok(r && svc, "remote workload and example2.com service"))
		goto out;
	is_str(r->workload_name, "remote", "workloadName kept");
	is_str(r->workload_type, "deployment", "workloadType kept");
	is_str(r->hostname, "", "hostname kept (empty)");
	ok(r->status == ZR_HEALTHY && r->capacity == 1 && r->network_mode == ZR_NETWORK_STANDARD && !r->native_tunnel,
	   "status, capacity, networkMode, nativeTunnel kept");
	ok(!strcmp(r->locality.region, "us-east1") && !strcmp(r->locality.zone, "us-east1-b") &&
		   !strcmp(r->locality.subzone, ""),
	   "locality kept");
	char ip[ZR_ADDR_STRLEN];
	ok(r->waypoint.set && !r->waypoint.is_service && !strcmp(r->waypoint.network, "") &&
		   !strcmp(zr_ip_str(&r->waypoint.ip, ip), "10.0.0.50") && r->waypoint.hbone_mtls_port == 15008,
	   "workload waypoint /10.0.0.50 at 15008");
	ok(r->network_gateway.set && !strcmp(r->network_gateway.network, "remote") &&
		   r->network_gateway.hbone_mtls_port == 15009,
	   "networkGateway remote/10.0.0.60 at 15009");
	ok(r->application_tunnel.set && r->application_tunnel.protocol == ZR_APP_TUNNEL_PROXY &&
		   r->application_tunnel.port == 15088,
	   "applicationTunnel PROXY 15088");
	ok(r->n_authorization_policies == 1 && !strcmp(r->authorization_policies[0], "other/deny-9999"),
	   "authorizationPolicies kept");
	ok(svc->waypoint.set && svc->waypoint.is_service && !strcmp(svc->waypoint.namespace_, "default") &&
		   !strcmp(svc->waypoint.hostname, "waypoint.default.svc.cluster.local"),
	   "service waypoint as namespace/hostname");
	ok(svc->load_balancer.set && svc->load_balancer.mode == ZR_LB_FAILOVER &&
		   svc->load_balancer.health_policy == ZR_LB_ALLOW_ALL &&
		   svc->load_balancer.n_routing_preferences == 2 &&
		   svc->load_balancer.routing_preferences[0] == ZR_LB_NETWORK &&
		   svc->load_balancer.routing_preferences[1] == ZR_LB_REGION,
	   "loadBalancer kept");
	ok(svc->ip_families == ZR_IP_FAMILIES_IPV4 && svc->canonical && svc->visibility == ZR_VISIBILITY_PUBLIC,
	   "ipFamilies, canonical, visibility kept");
	ok(svc->n_cidr_vips == 1 && !strcmp(svc->cidr_vips[0].network, "remote") && svc->cidr_vips[0].prefix_len == 24,
	   "cidrVips kept");

	char *d = dump(cfg);
	has(d, "\"workloadName\":\"remote\",\"workloadType\":\"deployment\",\"status\":\"Healthy\"",
	    "workloadName, workloadType, status");
	has(d,
	    "\"networkMode\":\"Standard\",\"capacity\":1,"
	    "\"locality\":{\"region\":\"us-east1\",\"zone\":\"us-east1-b\",\"subzone\":\"\"}",
	    "networkMode, capacity, locality");
	has(d, "\"waypoint\":{\"destination\":\"/10.0.0.50\",\"hboneMtlsPort\":15008}", "workload waypoint");
	has(d, "\"networkGateway\":{\"destination\":\"remote/10.0.0.60\",\"hboneMtlsPort\":15009}", "networkGateway");
	has(d, "\"applicationTunnel\":{\"protocol\":\"PROXY\",\"port\":15088}", "applicationTunnel");
	has(d, "\"authorizationPolicies\":[\"other/deny-9999\"]", "authorizationPolicies");
	has(d, "\"cidrVips\":[{\"network\":\"remote\",\"cidr\":\"127.10.1.0/24\"}]", "cidrVips");
	has(d, "\"waypoint\":{\"destination\":\"default/waypoint.default.svc.cluster.local\",\"hboneMtlsPort\":15008}",
	    "service waypoint");
	has(d,
	    "\"loadBalancer\":{\"routingPreferences\":[\"Network\",\"Region\"],\"mode\":\"Failover\","
	    "\"healthPolicy\":\"AllowAll\"},\"ipFamilies\":\"IPv4\",\"canonical\":true,\"visibility\":\"Public\"",
	    "loadBalancer, ipFamilies, canonical, visibility");
	ok(d && !strstr(d, "\"workloadName\":\"\""), "dump: empty strings left out as ztunnel does");
	free(d);
out:
	zr_config_free(cfg);
}

/* A service of four endpoints: healthy, Unhealthy, capacity 0, and one whose
 * inline service endpoint says Unhealthy. */
static const char lb_yaml[] =
	"node: n\n"
	"localXds:\n"
	"  workloads:\n"
	"  - {uid: a, name: a, namespace: d, workloadIps: [10.0.0.1], services: {d/h: {80: 8080}}}\n"
	"  - {uid: b, name: b, namespace: d, workloadIps: [10.0.0.2], services: {d/h: {80: 8080}},"
	" status: Unhealthy}\n"
	"  - {uid: c, name: c, namespace: d, workloadIps: [10.0.0.3], services: {d/h: {80: 8080}}, capacity: 0}\n"
	"  - {uid: e, name: e, namespace: d, workloadIps: [10.0.0.4]}\n"
	"  services:\n"
	"  - name: h\n"
	"    namespace: d\n"
	"    hostname: h\n"
	"    vips: [/10.1.0.1]\n"
	"    ports: {80: 8080}\n"
	"    endpoints: {e: {workloadUid: e, port: {80: 8080}, status: Unhealthy}}\n"
	"%s";

static void test_load_balancing(void)
{
	char y[2048];
	zr_config_error_t err;
	snprintf(y, sizeof(y), lb_yaml, "");
	zr_config_t *cfg = load(y, &err, NULL, 0);
	if (!ok(cfg && cfg->state.n_services == 1, "state with unhealthy endpoints loads"))
		goto out;
	const zr_state_t *st = &cfg->state;
	const zr_service_t *svc = &st->services[0];
	ok(svc->n_endpoints == 1 && svc->endpoints[0] == 0,
	   "only the healthy, capacity>0 workload is a load-balancing endpoint (got %zu)", svc->n_endpoints);
	zr_ip_t ip;
	const zr_workload_t *b = zr_ip_parse("10.0.0.2", &ip) == 0 ? zr_state_workload_by_ip(st, &ip) : NULL;
	ok(b && b->status == ZR_UNHEALTHY, "the Unhealthy workload is still found by its own IP");
	char *d = dump(cfg);
	has(d,
	    "\"endpoints\":{\"a\":{\"workloadUid\":\"a\",\"service\":\"d/h\",\"address\":\"/10.0.0.1\","
	    "\"port\":{\"80\":8080},\"status\":\"Healthy\"},\"b\":{\"workloadUid\":\"b\"",
	    "service endpoints: a map by workload uid, every member (as ztunnel's EndpointSet)");
	has(d,
	    "\"c\":{\"workloadUid\":\"c\",\"service\":\"d/h\",\"address\":\"/10.0.0.3\",\"port\":{\"80\":8080},"
	    "\"status\":\"Healthy\"}",
	    "capacity 0 member: Healthy in endpoints");
	has(d,
	    "\"e\":{\"workloadUid\":\"e\",\"service\":\"d/h\",\"address\":\"/10.0.0.4\",\"port\":{\"80\":8080},"
	    "\"status\":\"Unhealthy\"}",
	    "an inline Unhealthy endpoint keeps its status");
	has(d, "\"name\":\"b\"", "the Unhealthy workload is listed");
	has(d, "\"status\":\"Unhealthy\"", "its status");
	has(d, "\"capacity\":0", "capacity 0");
	free(d);
	zr_config_free(cfg);

	snprintf(y, sizeof(y), lb_yaml,
		 "    loadBalancer: {mode: Standard, routingPreferences: [], healthPolicy: AllowAll}\n");
	cfg = load(y, &err, NULL, 0);
	if (!ok(cfg && cfg->state.n_services == 1, "state with healthPolicy AllowAll loads"))
		goto out;
	svc = &cfg->state.services[0];
	ok(svc->n_endpoints == 3 && svc->endpoints[0] == 0 && svc->endpoints[1] == 1 && svc->endpoints[2] == 3,
	   "AllowAll keeps the unhealthy endpoints, not the capacity-0 one (got %zu)", svc->n_endpoints);
out:
	zr_config_free(cfg);
}

static void test_warnings(void)
{
	static const char y[] =
		"node: n\n"
		"localXds:\n"
		"  workloads:\n"
		"  - uid: u1\n"
		"    name: server\n"
		"    namespace: default\n"
		"    workloadIps: [10.0.0.1]\n"
		"    waypoint: {destination: default/wp.default.svc.cluster.local, hboneMtlsPort: 15008}\n"
		"    networkGateway: {destination: net2/10.9.0.1, hboneMtlsPort: 15008}\n"
		"    applicationTunnel: {protocol: PROXY}\n"
		"  - {uid: u2, name: plain, namespace: default, workloadIps: [10.0.0.2], status: Healthy,\n"
		"     locality: {region: r, zone: z, subzone: s}, applicationTunnel: {protocol: NONE}}\n"
		"  services:\n"
		"  - name: echo\n"
		"    namespace: default\n"
		"    hostname: echo.default.svc.cluster.local\n"
		"    vips: [/10.1.0.1]\n"
		"    waypoint: {destination: /10.0.0.50, hboneMtlsPort: 15008}\n"
		"    loadBalancer: {mode: Strict, routingPreferences: [Zone], healthPolicy: OnlyHealthy}\n"
		"  - {name: other, namespace: default, hostname: other.default.svc.cluster.local, vips: [],\n"
		"     ipFamilies: Dual, visibility: Public}\n";
	char log[32768];
	zr_config_error_t err;
	zr_log_set_level(ZR_LOG_INFO);
	zr_config_t *cfg = load(y, &err, log, sizeof(log));
	if (!ok(cfg != NULL, "state with waypoints loads"))
		return;
	const char *want[] = {
		"workload default/server sets waypoint, which this version does not implement: its traffic goes "
		"directly to it, not through the waypoint",
		"workload default/server sets networkGateway, which this version does not implement",
		"workload default/server sets applicationTunnel, which this version does not implement",
		"service default/echo.default.svc.cluster.local sets waypoint, which this version does not implement",
		"service default/echo.default.svc.cluster.local sets loadBalancer.mode Strict",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!ok(strstr(log, want[i]) != NULL, "warning: %.60s...", want[i]))
			diag("  log: %s", log);
	size_t lines = 0;
	for (const char *p = log; (p = strstr(p, "\"level\":\"warn\"")); p++)
		lines++;
	is(lines, (size_t)5,
	   "one warning per field and object, none for the fields zring honours or that "
	   "change nothing");
	zr_config_free(cfg);
	/* Bounded: 40 workloads with a waypoint give 32 lines and a count. */
	char big[16384];
	size_t len = (size_t)snprintf(big, sizeof(big), "node: n\nlocalXds:\n  workloads:\n");
	for (int i = 0; i < 40; i++)
		len += (size_t)snprintf(big + len, sizeof(big) - len,
					"  - {uid: w%d, name: w%d, namespace: d, workloadIps: [10.2.0.%d],"
					" waypoint: {destination: /10.0.0.50, hboneMtlsPort: 15008}}\n",
					i, i, i + 1);
	zr_config_t *many = load(big, &err, log, sizeof(log));
	lines = 0;
	for (const char *p = log; (p = strstr(p, "\"level\":\"warn\"")); p++)
		lines++;
	ok(many && lines == 33 && strstr(log, "8 more settings that this version does not implement, not listed"),
	   "warnings are bounded: 32 named, then a count (got %zu lines)", lines);
	zr_config_free(many);
	/* A reload (another load) warns again. */
	cfg = load(y, &err, log, sizeof(log));
	ok(cfg && strstr(log, "workload default/server sets waypoint"), "each load warns again");
	zr_config_free(cfg);
}

/* Expects an error at line:col naming key, with a message holding msg. */
static void expect_err(const char *state, unsigned line, unsigned col, const char *key, const char *msg)
{
	char y[2048];
	zr_config_error_t err;
	zr_config_t *cfg = NULL;
	snprintf(y, sizeof(y), "node: n\nlocalXds:\n%s", state);
	int rc = zr_config_load_string(y, strlen(y), src("tests/unit/data/t.yaml"), &cfg, &err);
	char buf[1400];
	zr_config_error_str(&err, buf, sizeof(buf));
	bool good = rc == -1 && !cfg && err.line == line && err.column == col && !strcmp(err.key, key) &&
		    strstr(err.message, msg) && strstr(buf, "tests/unit/data/t.yaml:");
	if (!ok(good, "error: %s at %s", msg, key)) {
		diag("  got rc %d: %s", rc, buf);
		diag("  expected %u:%u key '%s' message ~ '%s'", line, col, key, msg);
	}
	zr_config_free(cfg);
}

static void test_errors(void)
{
#define WL  "  workloads:\n  - uid: a\n    namespace: d\n"
#define SVC "  services:\n  - name: s\n    namespace: d\n    hostname: h\n"
	expect_err(WL "    status: Bogus\n", 6, 13, "localXds.workloads[0].status",
		   "unknown health status \"Bogus\" (want Healthy | Unhealthy)");
	expect_err(WL "    status: healthy\n", 6, 13, "localXds.workloads[0].status", "unknown health status");
	expect_err(WL "    status: [Healthy]\n", 6, 13, "localXds.workloads[0].status", "expected a health status");
	expect_err(WL "    capacity: -1\n", 6, 15, "localXds.workloads[0].capacity", "expected an integer");
	expect_err(WL "    networkMode: Host\n", 6, 18, "localXds.workloads[0].networkMode", "unknown network mode");
	expect_err(WL "    locality: {region: r, city: c}\n", 6, 27, "localXds.workloads[0].locality.city",
		   "unknown key");
	expect_err(WL "    waypoint: {destination: nowhere, hboneMtlsPort: 15008}\n", 6, 29,
		   "localXds.workloads[0].waypoint.destination", "bad destination \"nowhere\"");
	expect_err(WL "    waypoint: {hboneMtlsPort: 15008}\n", 6, 15, "localXds.workloads[0].waypoint.destination",
		   "missing required key");
	expect_err(WL "    networkGateway: {destination: /1.2.3.4, hboneMtlsPort: 99999}\n", 6, 60,
		   "localXds.workloads[0].networkGateway.hboneMtlsPort", "bad port");
	expect_err(WL "    applicationTunnel: {protocol: HTTP}\n", 6, 35,
		   "localXds.workloads[0].applicationTunnel.protocol", "unknown application tunnel protocol");
	expect_err(WL "    nativeTunnel: maybe\n", 6, 19, "localXds.workloads[0].nativeTunnel",
		   "expected true or false");
	expect_err(SVC "    loadBalancer: {mode: Random}\n", 7, 26, "localXds.services[0].loadBalancer.mode",
		   "unknown load balancer mode");
	expect_err(SVC "    loadBalancer: {routingPreferences: [Zone, Planet]}\n", 7, 47,
		   "localXds.services[0].loadBalancer.routingPreferences[1]", "unknown routing preference");
	expect_err(SVC "    loadBalancer: {healthPolicy: Any}\n", 7, 34,
		   "localXds.services[0].loadBalancer.healthPolicy", "unknown health policy");
	expect_err(SVC "    ipFamilies: IPv5\n", 7, 17, "localXds.services[0].ipFamilies", "unknown IP family");
	expect_err(SVC "    visibility: Private\n", 7, 17, "localXds.services[0].visibility", "unknown visibility");
	expect_err(SVC "    cidrVips: [{network: '', cidr: 10.0.0.0/33}]\n", 7, 36,
		   "localXds.services[0].cidrVips[0].cidr", "bad CIDR");
	expect_err(SVC "    cidrVips: [{network: ''}]\n", 7, 16, "localXds.services[0].cidrVips[0].cidr",
		   "missing required key");
	expect_err(SVC "    endpoints: {a: {workloadUid: a, port: {}, status: Sick}}\n", 7, 55,
		   "localXds.services[0].endpoints.a.status", "unknown health status \"Sick\"");
#undef WL
#undef SVC
}

/* examples/local-state.yaml must be a file ztunnel's local mode loads:
 * serde_yaml 0.9 reads a StringMatch only as a tag (!Exact x), neither as a
 * plain string (zring's CRD shorthand) nor as a map {Exact: x} (serde_json's
 * form). Every item of a string-match list in it must carry such a tag. */
static void test_example_strict(void)
{
	static const char *const keys[] = {"principals", "notPrincipals", "namespaces", "notNamespaces"};
	FILE *f = fopen(src("examples/local-state.yaml"), "rb");
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!ok(f != NULL, "examples/local-state.yaml readable"))
		return;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	if (!ok(yaml_parser_load(&parser, &doc), "examples/local-state.yaml parses")) {
		yaml_parser_delete(&parser);
		fclose(f);
		return;
	}
	size_t lists = 0, untagged = 0;
	for (yaml_node_t *n = doc.nodes.start; n < doc.nodes.top; n++) {
		if (n->type != YAML_MAPPING_NODE)
			continue;
		for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
			yaml_node_t *k = yaml_document_get_node(&doc, pr->key);
			yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
			bool match_key = false;
			for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && k && k->type == YAML_SCALAR_NODE; i++)
				match_key |= !strcmp((const char *)k->data.scalar.value, keys[i]);
			if (!match_key || !v || v->type != YAML_SEQUENCE_NODE)
				continue;
			lists++;
			for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
			     it++) {
				yaml_node_t *item = yaml_document_get_node(&doc, *it);
				const char *tag = item ? (const char *)item->tag : NULL;
				if (!tag || tag[0] != '!' || tag[1] == '!' || !tag[1] || !strncmp(tag, "tag:", 4)) {
					untagged++;
					diag("  untagged string match at line %lu",
					     item ? (unsigned long)item->start_mark.line + 1 : 0);
				}
			}
		}
	}
	ok(lists > 0 && untagged == 0,
	   "examples/local-state.yaml spells every string match as ztunnel does (!Exact ...)");
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	fclose(f);

	zr_config_error_t err;
	zr_config_t *cfg = NULL;
	int rc = zr_config_load(src("examples/zring.yaml"), &cfg, &err);
	const zr_policy_t *pol = rc == 0 && cfg->state.n_policies == 1 ? &cfg->state.policies[0] : NULL;
	const zr_policy_match_t *m =
		pol && pol->n_rules == 1 && pol->rules[0].n_clauses == 1 && pol->rules[0].clauses[0].n_matches == 1 ?
			&pol->rules[0].clauses[0].matches[0] :
			NULL;
	ok(m && m->n_principals == 1 && m->principals[0].kind == ZR_STRING_EXACT &&
		   !strcmp(m->principals[0].value, "cluster.local/ns/default/sa/client"),
	   "the example's allow-client policy: principal !Exact cluster.local/ns/default/sa/client");
	ok(rc == 0 && cfg->state.n_workloads == 3 && cfg->state.workloads[0].status == ZR_HEALTHY &&
		   !strcmp(cfg->state.workloads[0].workload_type, "deployment"),
	   "the example's client workload: workloadType and status kept");
	zr_config_free(cfg);
}

int main(void)
{
	if (!realpath("../..", root))
		skip_all("cannot find the repository root");
	test_ztunnel_fields();
	test_load_balancing();
	test_warnings();
	test_errors();
	test_example_strict();
	return done_testing();
}
