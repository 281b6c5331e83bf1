/* Authorization: ztunnel's L4 policy semantics over configs loaded from YAML
 * in its local-state format. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/authz.h"
#include "ctl/config.h"
#include "tap.h"

#define CLIENT "cluster.local/ns/default/sa/client"

/* Workloads: 0 server (default, lists default/ws), 1 other (namespace
 * other), 2 db (default, lists nothing). */
static const char base_state[] = "node: n\n"
				 "localXds:\n"
				 "  workloads:\n"
				 "  - uid: u-server\n"
				 "    name: server\n"
				 "    namespace: default\n"
				 "    serviceAccount: server\n"
				 "    workloadIps: [\"10.0.0.1\", \"fd00::1\"]\n"
				 "    protocol: HBONE\n"
				 "    node: n\n"
				 "    authorizationPolicies: [default/ws]\n"
				 "  - uid: u-other\n"
				 "    name: other\n"
				 "    namespace: other\n"
				 "    workloadIps: [\"10.0.0.2\"]\n"
				 "    protocol: HBONE\n"
				 "    node: n\n"
				 "  - uid: u-db\n"
				 "    name: db\n"
				 "    namespace: default\n"
				 "    workloadIps: [\"10.0.0.3\"]\n"
				 "    protocol: HBONE\n"
				 "    node: n\n";

enum {
	SERVER,
	OTHER,
	DB
};

/* policies: the YAML list (flow or block, indented under localXds). */
static zr_config_t *load(const char *policies)
{
	char yaml[8192];
	zr_config_error_t err;
	zr_config_t *cfg = NULL;
	snprintf(yaml, sizeof(yaml), "%s  policies:\n%s\n", base_state, policies ? policies : "    []");
	if (zr_config_load_string(yaml, strlen(yaml), "authz.yaml", &cfg, &err) != 0) {
		char buf[1400];
		diag("load: %s", zr_config_error_str(&err, buf, sizeof(buf)));
		return NULL;
	}
	return cfg;
}

static void parse_ip(const char *s, zr_ip_t *ip)
{
	if (zr_ip_parse(s, ip) != 0) {
		diag("bad test IP %s", s);
		memset(ip, 0, sizeof(*ip));
	}
}

/* A connection from `principal` (NULL: plaintext) at src to dst:port on
 * workload `wl`. */
static zr_authz_result_t check_full(const zr_config_t *cfg, int wl, const char *principal, const char *src,
				    const char *dst, uint16_t port)
{
	char ns[64], sa[64];
	zr_authz_request_t req = {.dst = &cfg->state.workloads[wl], .src_principal = principal, .dst_port = port};
	zr_authz_result_t res;
	if (principal) {
		if (zr_authz_principal_split(principal, ns, sizeof(ns), sa, sizeof(sa)) != 0)
			diag("bad test principal %s", principal);
		req.src_namespace = ns;
		req.src_service_account = sa;
	}
	parse_ip(src, &req.src_ip);
	parse_ip(dst, &req.dst_ip);
	zr_authz_check(&cfg->state, "istio-system", &req, &res);
	return res;
}

static bool allowed_full(const zr_config_t *cfg, int wl, const char *principal, const char *src, const char *dst,
			 uint16_t port)
{
	return check_full(cfg, wl, principal, src, dst, port).allowed;
}

static bool allowed(const zr_config_t *cfg, int wl, const char *principal)
{
	static const char *const dst[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
	return allowed_full(cfg, wl, principal, "10.1.0.1", dst[wl], 8080);
}

static void test_no_policies(void)
{
	zr_config_t *cfg = load(NULL);
	if (!ok(cfg != NULL, "config without policies loads"))
		return;
	zr_authz_result_t r = check_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 80);
	ok(r.allowed && !r.policy && !r.dry_run_would_deny && !r.dry_run_policy, "no policies: mTLS allowed");
	ok(allowed(cfg, SERVER, NULL), "no policies: plaintext allowed");
	zr_config_free(cfg);
}

static void test_principals(void)
{
	static const struct {
		const char *pattern, *principal;
		bool want;
	} cases[] = {
		{CLIENT, CLIENT, true},
		{CLIENT, "cluster.local/ns/default/sa/client2", false},
		{CLIENT, NULL, false},
		{"cluster.local/ns/default/*", CLIENT, true},
		{"cluster.local/ns/default/*", "cluster.local/ns/prod/sa/client", false},
		{"*/sa/client", CLIENT, true},
		{"*/sa/client", "other.td/ns/x/sa/client", true},
		{"*/sa/client", "cluster.local/ns/default/sa/client2", false},
		{"*", CLIENT, true},
		{"*", NULL, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char pol[512];
		snprintf(pol, sizeof(pol),
			 "  - {name: p, namespace: default, scope: Namespace, action: Allow,"
			 " rules: [[[{principals: [\"%s\"]}]]]}",
			 cases[i].pattern);
		zr_config_t *cfg = load(pol);
		if (!cfg) {
			ok(false, "principals \"%s\" loads", cases[i].pattern);
			continue;
		}
		zr_authz_result_t r = check_full(cfg, SERVER, cases[i].principal, "10.1.0.1", "10.0.0.1", 80);
		ok(r.allowed == cases[i].want && r.policy == (cases[i].want ? &cfg->state.policies[0] : NULL),
		   "principals [\"%s\"] %s %s", cases[i].pattern, cases[i].want ? "allows" : "denies",
		   cases[i].principal ? cases[i].principal : "plaintext");
		zr_config_free(cfg);
	}
}

static void test_namespaces_service_accounts(void)
{
	zr_config_t *cfg = load("  - {name: ns, namespace: default, scope: Namespace, action: Allow,"
				" rules: [[[{namespaces: [\"team-*\", prod]}]]]}");
	if (ok(cfg != NULL, "namespaces policy loads")) {
		ok(allowed(cfg, SERVER, "cluster.local/ns/prod/sa/a"), "namespaces: exact match allowed");
		ok(allowed(cfg, SERVER, "cluster.local/ns/team-x/sa/a"), "namespaces: prefix match allowed");
		ok(!allowed(cfg, SERVER, CLIENT), "namespaces: other namespace denied");
		ok(!allowed(cfg, SERVER, NULL), "namespaces: plaintext denied");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: ns, namespace: default, scope: Namespace, action: Allow,"
		   " rules: [[[{namespaces: [\"*\"]}]]]}");
	if (ok(cfg != NULL, "namespaces presence policy loads")) {
		ok(allowed(cfg, SERVER, CLIENT), "namespaces [*]: mTLS allowed");
		ok(!allowed(cfg, SERVER, NULL), "namespaces [*]: plaintext has no namespace, denied");
	}
	zr_config_free(cfg);

	/* Both of ztunnel's forms: {namespace, serviceAccount} and "ns/sa". */
	cfg = load("  - {name: sa, namespace: default, scope: Namespace, action: Allow,"
		   " rules: [[[{serviceAccounts: [{namespace: default, serviceAccount: client}, prod/api]}]]]}");
	if (ok(cfg != NULL, "serviceAccounts policy loads")) {
		ok(allowed(cfg, SERVER, CLIENT), "serviceAccounts: default/client allowed");
		ok(allowed(cfg, SERVER, "cluster.local/ns/prod/sa/api"), "serviceAccounts: prod/api allowed");
		ok(allowed(cfg, SERVER, "other.td/ns/default/sa/client"), "serviceAccounts: trust domain ignored");
		ok(!allowed(cfg, SERVER, "cluster.local/ns/default/sa/api"), "serviceAccounts: default/api denied");
		ok(!allowed(cfg, SERVER, "cluster.local/ns/prod/sa/client"), "serviceAccounts: prod/client denied");
		ok(!allowed(cfg, SERVER, "cluster.local/ns/default/sa/clientx"), "serviceAccounts: no prefix match");
		ok(!allowed(cfg, SERVER, NULL), "serviceAccounts: plaintext denied");
	}
	zr_config_free(cfg);
}

static void test_ips_ports(void)
{
	zr_config_t *cfg = load("  - {name: ip, namespace: default, scope: Namespace, action: Allow,"
				" rules: [[[{sourceIps: [192.168.0.0/16, \"fd00:1::/32\", 172.16.0.7]}]]]}");
	if (ok(cfg != NULL, "sourceIps policy loads")) {
		ok(allowed_full(cfg, SERVER, NULL, "192.168.3.4", "10.0.0.1", 80), "sourceIps: v4 in CIDR allowed");
		ok(!allowed_full(cfg, SERVER, NULL, "192.169.0.1", "10.0.0.1", 80), "sourceIps: v4 outside denied");
		ok(allowed_full(cfg, SERVER, NULL, "172.16.0.7", "10.0.0.1", 80), "sourceIps: plain address allowed");
		ok(!allowed_full(cfg, SERVER, NULL, "172.16.0.8", "10.0.0.1", 80), "sourceIps: next address denied");
		ok(allowed_full(cfg, SERVER, CLIENT, "fd00:1:ab::5", "fd00::1", 80), "sourceIps: v6 in CIDR allowed");
		ok(!allowed_full(cfg, SERVER, CLIENT, "fd00:2::5", "fd00::1", 80), "sourceIps: v6 outside denied");
		ok(allowed_full(cfg, SERVER, CLIENT, "::ffff:192.168.1.1", "10.0.0.1", 80),
		   "sourceIps: v4-mapped source matches the v4 CIDR");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: dst, namespace: default, scope: Namespace, action: Allow,"
		   " rules: [[[{destinationIps: [10.0.0.1/32], destinationPorts: [8080, 9090]}]]]}");
	if (ok(cfg != NULL, "destinationIps/Ports policy loads")) {
		ok(allowed_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 8080), "destination IP and port allowed");
		ok(allowed_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 9090), "second destination port allowed");
		ok(!allowed_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 8081), "other destination port denied");
		ok(!allowed_full(cfg, SERVER, NULL, "10.1.0.1", "fd00::1", 8080),
		   "other destination IP (v6 of the same workload) denied");
	}
	zr_config_free(cfg);
}

static void test_not_lists(void)
{
	zr_config_t *cfg = load("  - {name: n, namespace: default, scope: Namespace, action: Allow,"
				" rules: [[[{notNamespaces: [bad], notPrincipals: [\"*/sa/evil\"],"
				" notServiceAccounts: [default/mallory], notSourceIps: [10.66.0.0/16],"
				" notDestinationIps: [\"fd00::1\"], notDestinationPorts: [22]}]]]}");
	if (ok(cfg != NULL, "not* policy loads")) {
		ok(allowed(cfg, SERVER, CLIENT), "not*: unlisted peer allowed");
		ok(allowed(cfg, SERVER, NULL), "not*: plaintext is in no not* list, allowed");
		ok(!allowed(cfg, SERVER, "cluster.local/ns/bad/sa/client"), "notNamespaces excludes");
		ok(!allowed(cfg, SERVER, "cluster.local/ns/default/sa/evil"), "notPrincipals excludes");
		ok(!allowed(cfg, SERVER, "cluster.local/ns/default/sa/mallory"), "notServiceAccounts excludes");
		ok(!allowed_full(cfg, SERVER, CLIENT, "10.66.1.1", "10.0.0.1", 80), "notSourceIps excludes");
		ok(!allowed_full(cfg, SERVER, CLIENT, "fd00::9", "fd00::1", 80), "notDestinationIps excludes");
		ok(!allowed_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 22), "notDestinationPorts excludes");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: n, namespace: default, scope: Namespace, action: Allow,"
		   " rules: [[[{notPrincipals: [\"*\"]}]]]}");
	if (ok(cfg != NULL, "notPrincipals presence policy loads")) {
		ok(allowed(cfg, SERVER, NULL), "notPrincipals [*]: plaintext allowed");
		ok(!allowed(cfg, SERVER, CLIENT), "notPrincipals [*]: mTLS denied");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: n, namespace: default, scope: Namespace, action: Allow,"
		   " rules: [[[{principals: [\"cluster.local/ns/default/*\"], notPrincipals: [\"" CLIENT "\"]}]]]}");
	if (ok(cfg != NULL, "principals with notPrincipals loads")) {
		ok(allowed(cfg, SERVER, "cluster.local/ns/default/sa/api"), "positive and not excluded: allowed");
		ok(!allowed(cfg, SERVER, CLIENT), "positive but excluded: denied");
	}
	zr_config_free(cfg);
}

static void test_deny_allow(void)
{
	zr_config_t *cfg = load("  - {name: all, namespace: default, scope: Namespace, action: Allow,"
				" rules: [[[{principals: [\"*\"]}]]]}\n"
				"  - {name: block, namespace: default, scope: Namespace, action: Deny,"
				" rules: [[[{sourceIps: [1.2.3.4]}]]]}");
	if (ok(cfg != NULL, "allow + deny loads")) {
		zr_authz_result_t r = check_full(cfg, SERVER, CLIENT, "1.2.3.4", "10.0.0.1", 80);
		ok(!r.allowed && r.policy == &cfg->state.policies[1], "deny beats allow, deny policy reported");
		r = check_full(cfg, SERVER, CLIENT, "1.2.3.5", "10.0.0.1", 80);
		ok(r.allowed && r.policy == &cfg->state.policies[0], "deny not matching: allow policy decides");
		r = check_full(cfg, SERVER, NULL, "1.2.3.5", "10.0.0.1", 80);
		ok(!r.allowed && !r.policy, "allow present but not matching: denied, no policy");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: block, namespace: default, scope: Namespace, action: Deny,"
		   " rules: [[[{destinationPorts: [9999]}]]]}");
	if (ok(cfg != NULL, "deny-only loads")) {
		zr_authz_result_t r = check_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 80);
		ok(r.allowed && !r.policy, "deny-only, not matching: allowed (no ALLOW policy)");
		ok(!allowed_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 9999), "deny-only, matching: denied");
	}
	zr_config_free(cfg);
}

static void test_scopes(void)
{
	zr_config_t *cfg = load("  - {name: only-x, namespace: other, scope: Namespace, action: Allow,"
				" rules: [[[{principals: [cluster.local/ns/x/sa/x]}]]]}");
	if (ok(cfg != NULL, "namespace-scoped policy loads")) {
		ok(allowed(cfg, SERVER, CLIENT), "Namespace scope: workload of another namespace unaffected");
		ok(!allowed(cfg, OTHER, CLIENT), "Namespace scope: workload of its namespace restricted");
		ok(allowed(cfg, OTHER, "cluster.local/ns/x/sa/x"), "Namespace scope: match allowed");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: no-ssh, namespace: istio-system, scope: Global, action: Deny,"
		   " rules: [[[{destinationPorts: [22]}]]]}\n"
		   "  - {name: no-telnet, namespace: elsewhere, scope: Global, action: Deny,"
		   " rules: [[[{destinationPorts: [23]}]]]}\n"
		   "  - {name: ns-only, namespace: istio-system, scope: Namespace, action: Deny,"
		   " rules: [[[{destinationPorts: [24]}]]]}");
	if (ok(cfg != NULL, "global policies load")) {
		ok(!allowed_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 22), "Global scope applies in default");
		ok(!allowed_full(cfg, OTHER, CLIENT, "10.1.0.1", "10.0.0.2", 22), "Global scope applies in other");
		ok(!allowed_full(cfg, OTHER, CLIENT, "10.1.0.1", "10.0.0.2", 23),
		   "Global scope applies whatever the policy's namespace");
		ok(allowed_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 24),
		   "Namespace scope in the root namespace does not apply elsewhere");
		ok(allowed_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 80), "other ports allowed");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: ws, namespace: default, scope: WorkloadSelector, action: Allow,"
		   " rules: [[[{principals: [\"" CLIENT "\"]}]]]}\n"
		   "  - {name: ws, namespace: other, scope: WorkloadSelector, action: Deny,"
		   " rules: [[[{principals: [\"*\"]}]]]}");
	if (ok(cfg != NULL, "workload-selector policies load")) {
		ok(allowed(cfg, SERVER, CLIENT), "WorkloadSelector: listing workload, match allowed");
		ok(!allowed(cfg, SERVER, "cluster.local/ns/default/sa/api"),
		   "WorkloadSelector: listing workload restricted");
		ok(allowed(cfg, DB, "cluster.local/ns/default/sa/api"),
		   "WorkloadSelector: same namespace, not listing: unaffected");
		ok(allowed(cfg, OTHER, CLIENT), "WorkloadSelector: other/ws listed by no one: unaffected");
	}
	zr_config_free(cfg);
}

static void test_dry_run(void)
{
	zr_config_t *cfg = load("  - {name: dry-deny, namespace: default, scope: Namespace, action: Deny, dryRun: true,"
				" rules: [[[{destinationPorts: [22]}]]]}");
	if (ok(cfg != NULL, "dryRun deny loads")) {
		zr_authz_result_t r = check_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 22);
		ok(r.allowed && !r.policy, "dryRun deny matching: still allowed");
		ok(r.dry_run_would_deny && r.dry_run_policy == &cfg->state.policies[0],
		   "  ... reported with the policy");
		r = check_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 80);
		ok(r.allowed && !r.dry_run_would_deny && !r.dry_run_policy,
		   "dryRun deny not matching: nothing reported");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: dry-allow, namespace: default, scope: Namespace, action: Allow, dryRun: true,"
		   " rules: [[[{principals: [\"" CLIENT "\"]}]]]}");
	if (ok(cfg != NULL, "dryRun allow loads")) {
		zr_authz_result_t r =
			check_full(cfg, SERVER, "cluster.local/ns/default/sa/api", "10.1.0.1", "10.0.0.1", 80);
		ok(r.allowed && r.dry_run_would_deny && !r.dry_run_policy,
		   "dryRun allow not matching: allowed, would deny (no allow matched)");
		r = check_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 80);
		ok(r.allowed && !r.dry_run_would_deny, "dryRun allow matching: nothing reported");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: real, namespace: default, scope: Namespace, action: Allow,"
		   " rules: [[[{principals: [\"*\"]}]]]}\n"
		   "  - {name: dry-allow, namespace: default, scope: Namespace, action: Allow, dryRun: true,"
		   " rules: [[[{principals: [\"" CLIENT "\"]}]]]}\n"
		   "  - {name: dry-deny, namespace: default, scope: Namespace, action: Deny, dryRun: true,"
		   " rules: [[[{destinationPorts: [22]}]]]}\n"
		   "  - {name: real-deny, namespace: default, scope: Namespace, action: Deny,"
		   " rules: [[[{destinationPorts: [22]}]]]}");
	if (ok(cfg != NULL, "real + dryRun policies load")) {
		zr_authz_result_t r =
			check_full(cfg, SERVER, "cluster.local/ns/default/sa/api", "10.1.0.1", "10.0.0.1", 80);
		ok(r.allowed && r.policy == &cfg->state.policies[0] && !r.dry_run_would_deny,
		   "a real allow matching outweighs a non-matching dryRun allow");
		ok(!allowed(cfg, SERVER, NULL), "dryRun allow does not allow what the real allow denies");
		r = check_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 22);
		ok(!r.allowed && r.policy == &cfg->state.policies[3] && !r.dry_run_would_deny,
		   "real deny decides; dry-run verdict only for allowed connections");
	}
	zr_config_free(cfg);
}

static void test_rule_structure(void)
{
	/* One rule, two clauses (AND). */
	zr_config_t *cfg = load("  - {name: and, namespace: default, scope: Namespace, action: Allow,"
				" rules: [[[{principals: [\"" CLIENT "\"]}], [{destinationPorts: [8080]}]]]}");
	if (ok(cfg != NULL, "two-clause rule loads")) {
		ok(allowed_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 8080), "clauses AND: both match");
		ok(!allowed_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 80), "clauses AND: port fails");
		ok(!allowed_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 8080), "clauses AND: principal fails");
	}
	zr_config_free(cfg);

	/* Two rules (OR). */
	cfg = load("  - {name: or, namespace: default, scope: Namespace, action: Allow,"
		   " rules: [[[{principals: [\"" CLIENT "\"]}]], [[{destinationPorts: [9090]}]]]}");
	if (ok(cfg != NULL, "two rules load")) {
		ok(allowed_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 80), "rules OR: first rule");
		ok(allowed_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 9090), "rules OR: second rule");
		ok(!allowed_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 80), "rules OR: neither");
	}
	zr_config_free(cfg);

	/* One clause, two matches (OR), each with two fields (AND). */
	cfg = load("  - {name: m, namespace: default, scope: Namespace, action: Allow,"
		   " rules: [[[{principals: [\"" CLIENT "\"], sourceIps: [10.1.0.0/16]},"
		   " {destinationPorts: [9090], sourceIps: [10.2.0.0/16]}]]]}");
	if (ok(cfg != NULL, "two-match clause loads")) {
		ok(allowed_full(cfg, SERVER, CLIENT, "10.1.0.1", "10.0.0.1", 80), "matches OR: first match");
		ok(allowed_full(cfg, SERVER, NULL, "10.2.0.1", "10.0.0.1", 9090), "matches OR: second match");
		ok(!allowed_full(cfg, SERVER, CLIENT, "10.2.0.1", "10.0.0.1", 80),
		   "fields AND inside a match: principal of one, source of the other");
		ok(!allowed_full(cfg, SERVER, NULL, "10.1.0.1", "10.0.0.1", 9090),
		   "fields AND inside a match: port of one, source of the other");
	}
	zr_config_free(cfg);

	/* ztunnel: no rules match nothing; an empty rule or clause matches
	 * everything; an empty match is skipped. */
	cfg = load("  - {name: allow-none, namespace: other, scope: Namespace, action: Allow, rules: []}\n"
		   "  - {name: deny-none, namespace: default, scope: Namespace, action: Deny, rules: []}\n"
		   "  - {name: deny-empty-match, namespace: default, scope: Namespace, action: Deny, rules: [[[{}]]]}");
	if (ok(cfg != NULL, "policies without rules load")) {
		ok(!allowed(cfg, OTHER, CLIENT), "ALLOW without rules denies everything");
		ok(allowed(cfg, SERVER, CLIENT), "DENY without rules, or with an empty match, denies nothing");
	}
	zr_config_free(cfg);

	cfg = load("  - {name: deny-all, namespace: other, scope: Namespace, action: Deny, rules: [[]]}\n"
		   "  - {name: deny-all2, namespace: default, scope: Namespace, action: Deny, rules: [[[]]]}\n"
		   "  - {name: allow-all, namespace: default, scope: Namespace, action: Allow, rules: [[]]}");
	if (ok(cfg != NULL, "empty rule / empty clause load")) {
		ok(!allowed(cfg, OTHER, NULL), "a rule without clauses matches everything (deny all)");
		ok(!allowed(cfg, SERVER, CLIENT), "a clause without matches matches everything (deny all)");
	}
	zr_config_free(cfg);
}

static void test_principal_split(void)
{
	char ns[16], sa[16];
	ok(zr_authz_principal_split("cluster.local/ns/default/sa/client", ns, sizeof(ns), sa, sizeof(sa)) == 0 &&
		   !strcmp(ns, "default") && !strcmp(sa, "client"),
	   "split td/ns/NS/sa/SA");
	ok(zr_authz_principal_split("spiffe://td/ns/a/sa/b", ns, sizeof(ns), sa, sizeof(sa)) == 0 && !strcmp(ns, "a") &&
		   !strcmp(sa, "b"),
	   "split accepts spiffe://");
	static const char *const bad[] = {
		"td/ns/a/sa", "td/ns/a/sa/b/c", "td/xx/a/sa/b", "td/ns/a/xx/b", "", "td/ns/a/sa/this-is-far-too-long"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is(zr_authz_principal_split(bad[i], ns, sizeof(ns), sa, sizeof(sa)), -EINVAL, "split rejects \"%s\"",
		   bad[i]);
}

int main(void)
{
	test_no_policies();
	test_principals();
	test_namespaces_service_accounts();
	test_ips_ports();
	test_not_lists();
	test_deny_allow();
	test_scopes();
	test_dry_run();
	test_rule_structure();
	test_principal_split();
	return done_testing();
}
