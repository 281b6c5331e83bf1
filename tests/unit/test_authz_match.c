/* Every policy match key, each way SPEC "Local state" lets it be written, in
 * both directions (a value that must match, one that must not), through the
 * real loader and zr_authz_check: a tagged string match is literal ({Exact:
 * "a*"} matches only "a*"), the CRD shorthand (x*, *x, *) applies to plain
 * strings only, and a not* key excludes what its positive form would match.
 * Also the config errors for tags where they have no meaning. */
#include <stdio.h>
#include <string.h>

#include "core/authz.h"
#include "ctl/config.h"
#include "tap.h"

#define CLIENT "cluster.local/ns/default/sa/client"

#define POLICY_HEAD                                      \
	"node: n\n"                                      \
	"localXds:\n"                                    \
	"  workloads:\n"                                 \
	"  - uid: u-server\n"                            \
	"    name: server\n"                             \
	"    namespace: default\n"                       \
	"    workloadIps: [\"10.0.0.1\", \"fd00::1\"]\n" \
	"    protocol: HBONE\n"                          \
	"    node: n\n"                                  \
	"  policies:\n"                                  \
	"  - name: p\n"                                  \
	"    namespace: default\n"                       \
	"    scope: Namespace\n"                         \
	"    action: Allow\n" /* line 14: `rules` and what follows from line 15 on */

static const char head[] = POLICY_HEAD "    rules:\n"
				       "    - - - "; /* line 16: "KEY: [ITEM]" follows */

#define MATCH_LINE 16
#define MATCH_KEY  "localXds.policies[0].rules[0][0][0]."

static zr_config_t *load_match(const char *key, const char *item, zr_config_error_t *err)
{
	char yaml[4096];
	zr_config_t *cfg = NULL;
	snprintf(yaml, sizeof(yaml), "%s%s: [%s]\n", head, key, item);
	if (zr_config_load_string(yaml, strlen(yaml), "match.yaml", &cfg, err) != 0)
		return NULL;
	return cfg;
}

/* Whether the ALLOW policy lets a connection in. principal NULL: plaintext. */
static bool allowed(const zr_config_t *cfg, const char *principal, const char *src, const char *dst, uint16_t port)
{
	char ns[128], sa[128];
	zr_authz_request_t req = {.dst = &cfg->state.workloads[0], .src_principal = principal, .dst_port = port};
	zr_authz_result_t res;
	if (principal && zr_authz_principal_split(principal, ns, sizeof(ns), sa, sizeof(sa)) == 0) {
		req.src_namespace = ns;
		req.src_service_account = sa;
	}
	if (zr_ip_parse(src, &req.src_ip) != 0 || zr_ip_parse(dst, &req.dst_ip) != 0)
		diag("bad test address %s or %s", src, dst);
	zr_authz_check(&cfg->state, NULL, &req, &res);
	return res.allowed;
}

struct scase {
	const char *item;    /* one list entry as written in YAML */
	const char *subject; /* principal, or namespace; NULL: plaintext */
	bool match;	     /* the positive key matches it */
};

/* principals and notPrincipals: the pattern applies to the identity without
 * "spiffe://"; with no identity nothing matches. */
static const struct scase principal_cases[] = {
	/* plain strings: the CRD shorthand */
	{"\"" CLIENT "\"", CLIENT, true},
	{"\"" CLIENT "\"", CLIENT "2", false},
	{"\"" CLIENT "\"", NULL, false},
	{"\"cluster.local/ns/default/sa/clien*\"", CLIENT, true},
	{"\"cluster.local/ns/default/sa/clien*\"", "cluster.local/ns/default/sa/other", false},
	{"\"*/sa/client\"", "other.td/ns/x/sa/client", true},
	{"\"*/sa/client\"", CLIENT "2", false},
	{"\"*\"", CLIENT, true},
	{"\"*\"", NULL, false},
	{"!!str \"cluster.local/ns/default/sa/clien*\"", CLIENT, true},
	/* {Exact: s}: literal, '*' included */
	{"{Exact: \"" CLIENT "\"}", CLIENT, true},
	{"{Exact: \"" CLIENT "\"}", CLIENT "2", false},
	{"{Exact: \"cluster.local/ns/default/sa/clien*\"}", CLIENT, false},
	{"{Exact: \"cluster.local/ns/default/sa/clien*\"}", "cluster.local/ns/default/sa/clien*", true},
	{"{Exact: \"*\"}", CLIENT, false},
	{"{Exact: \"*\"}", "*", true},
	{"{Exact: \"*/sa/client\"}", CLIENT, false},
	{"{Exact: \"\"}", CLIENT, false},
	/* {Prefix: s} */
	{"{Prefix: cluster.local/ns/default/}", CLIENT, true},
	{"{Prefix: cluster.local/ns/default/}", "cluster.local/ns/prod/sa/client", false},
	{"{Prefix: cluster.local/ns/default/}", NULL, false},
	{"{Prefix: \"cluster.local/ns/def*\"}", CLIENT, false},
	{"{Prefix: \"cluster.local/ns/def*\"}", "cluster.local/ns/def*/sa/x", true},
	{"{Prefix: \"*\"}", CLIENT, false},
	{"{Prefix: \"*\"}", "*td/ns/a/sa/b", true},
	{"{Prefix: \"\"}", CLIENT, true},
	{"{Prefix: \"\"}", NULL, false},
	/* {Suffix: s} */
	{"{Suffix: /sa/client}", CLIENT, true},
	{"{Suffix: /sa/client}", CLIENT "2", false},
	{"{Suffix: \"*/sa/client\"}", CLIENT, false},
	{"{Suffix: \"*/sa/client\"}", "td/ns/*/sa/client", true},
	{"{Suffix: \"*\"}", CLIENT, false},
	{"{Suffix: \"*\"}", "td/ns/a/sa/b*", true},
	/* {Presence: ...} */
	{"{Presence: []}", CLIENT, true},
	{"{Presence: []}", NULL, false},
	{"{Presence: null}", CLIENT, true},
	{"{Presence: {}}", NULL, false},
	/* serde_yaml's tags */
	{"!Exact \"" CLIENT "\"", CLIENT, true},
	{"!Exact \"" CLIENT "\"", CLIENT "2", false},
	{"!Exact \"cluster.local/ns/default/sa/clien*\"", CLIENT, false},
	{"!Exact \"cluster.local/ns/default/sa/clien*\"", "cluster.local/ns/default/sa/clien*", true},
	{"!Exact \"*\"", CLIENT, false},
	{"!Exact cluster.local/ns/default/sa/clien*", CLIENT, false},
	{"!Prefix cluster.local/ns/default/", CLIENT, true},
	{"!Prefix cluster.local/ns/default/", "cluster.local/ns/prod/sa/client", false},
	{"!Prefix \"cluster.local/ns/default/sa/clien*\"", CLIENT, false},
	{"!Prefix \"cluster.local/ns/default/sa/clien*\"", "cluster.local/ns/default/sa/clien*t", true},
	{"!Suffix /sa/client", CLIENT, true},
	{"!Suffix /sa/client", CLIENT "2", false},
	{"!Suffix \"*client\"", CLIENT, false},
	{"!Suffix \"*client\"", "td/ns/a/sa/*client", true},
	{"!Presence []", CLIENT, true},
	{"!Presence []", NULL, false},
};

/* namespaces and notNamespaces: the identity's namespace; "" for a plaintext
 * connection, which Exact("") and Prefix("") therefore match (ztunnel). */
static const struct scase namespace_cases[] = {
	{"default", "default", true},
	{"default", "prod", false},
	{"default", NULL, false},
	{"\"team-*\"", "team-a", true},
	{"\"team-*\"", "teamx", false},
	{"\"*-system\"", "istio-system", true},
	{"\"*-system\"", "system", false},
	{"\"*\"", "default", true},
	{"\"*\"", NULL, false},
	{"{Exact: default}", "default", true},
	{"{Exact: default}", "default2", false},
	{"{Exact: \"team-*\"}", "team-a", false},
	{"{Exact: \"team-*\"}", "team-*", true},
	{"{Exact: \"*\"}", "default", false},
	{"{Exact: \"*\"}", "*", true},
	{"{Exact: \"\"}", NULL, true},
	{"{Exact: \"\"}", "default", false},
	{"{Prefix: team-}", "team-a", true},
	{"{Prefix: team-}", "xteam-a", false},
	{"{Prefix: \"team-*\"}", "team-a", false},
	{"{Prefix: \"team-*\"}", "team-*x", true},
	{"{Prefix: \"\"}", NULL, true},
	{"{Suffix: -system}", "istio-system", true},
	{"{Suffix: -system}", "system-x", false},
	{"{Suffix: \"*-system\"}", "istio-system", false},
	{"{Suffix: \"*-system\"}", "a*-system", true},
	{"{Presence: []}", "default", true},
	{"{Presence: []}", NULL, false},
	{"!Exact default", "default", true},
	{"!Exact default", "prod", false},
	{"!Exact \"team-*\"", "team-a", false},
	{"!Exact \"team-*\"", "team-*", true},
	{"!Exact \"*\"", "default", false},
	{"!Prefix team-", "team-a", true},
	{"!Prefix team-", "a-team-", false},
	{"!Prefix \"team*\"", "team-a", false},
	{"!Suffix -system", "kube-system", true},
	{"!Suffix -system", "kube-systemx", false},
	{"!Suffix \"*system\"", "kube-system", false},
	{"!Presence []", "default", true},
	{"!Presence []", NULL, false},
};

static void run_string_cases(const char *key, const char *not_key, const struct scase *cases, size_t n, bool principal)
{
	for (size_t i = 0; i < n; i++) {
		char who[256];
		if (!cases[i].subject)
			snprintf(who, sizeof(who), "plaintext");
		else if (principal)
			snprintf(who, sizeof(who), "%s", cases[i].subject);
		else
			snprintf(who, sizeof(who), "cluster.local/ns/%s/sa/x", cases[i].subject);
		const char *p = cases[i].subject ? who : NULL;
		for (int neg = 0; neg < 2; neg++) {
			const char *k = neg ? not_key : key;
			zr_config_error_t err;
			zr_config_t *cfg = load_match(k, cases[i].item, &err);
			if (!cfg) {
				char buf[1400];
				ok(false, "%s: [%s] loads", k, cases[i].item);
				diag("  %s", zr_config_error_str(&err, buf, sizeof(buf)));
				continue;
			}
			bool want = neg ? !cases[i].match : cases[i].match;
			ok(allowed(cfg, p, "10.1.0.1", "10.0.0.1", 80) == want, "ALLOW %s: [%s] %s %s", k,
			   cases[i].item, want ? "allows" : "denies", who);
			zr_config_free(cfg);
		}
	}
}

/* serviceAccounts / notServiceAccounts: namespace and name exactly, trust
 * domain ignored, never a plaintext connection. */
static void test_service_accounts(void)
{
	static const struct scase cases[] = {
		{"{namespace: default, serviceAccount: client}", CLIENT, true},
		{"{namespace: default, serviceAccount: client}", "other.td/ns/default/sa/client", true},
		{"{namespace: default, serviceAccount: client}", CLIENT "2", false},
		{"{namespace: default, serviceAccount: client}", "cluster.local/ns/prod/sa/client", false},
		{"{namespace: default, serviceAccount: client}", NULL, false},
		{"default/client", CLIENT, true},
		{"default/client", "cluster.local/ns/default/sa/clientx", false},
		{"default/client", NULL, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int neg = 0; neg < 2; neg++) {
			const char *k = neg ? "notServiceAccounts" : "serviceAccounts";
			zr_config_error_t err;
			zr_config_t *cfg = load_match(k, cases[i].item, &err);
			if (!ok(cfg != NULL, "%s: [%s] loads", k, cases[i].item))
				continue;
			bool want = neg ? !cases[i].match : cases[i].match;
			const char *who = cases[i].subject ? cases[i].subject : "plaintext";
			ok(allowed(cfg, cases[i].subject, "10.1.0.1", "10.0.0.1", 80) == want, "ALLOW %s: [%s] %s %s",
			   k, cases[i].item, want ? "allows" : "denies", who);
			zr_config_free(cfg);
		}
	}
}

/* IP and port keys: one address/port inside, one outside, for mTLS and
 * plaintext alike (they need no identity). */
static void test_ips_ports(void)
{
	static const struct {
		const char *key, *item, *src, *dst;
		uint16_t port;
		bool match;
	} cases[] = {
		{"sourceIps", "10.1.0.0/16", "10.1.2.3", "10.0.0.1", 80, true},
		{"sourceIps", "10.1.0.0/16", "10.2.0.1", "10.0.0.1", 80, false},
		{"sourceIps", "10.1.0.1", "10.1.0.1", "10.0.0.1", 80, true},
		{"sourceIps", "10.1.0.1", "10.1.0.2", "10.0.0.1", 80, false},
		{"sourceIps", "\"fd00:1::/32\"", "fd00:1::9", "fd00::1", 80, true},
		{"sourceIps", "\"fd00:1::/32\"", "fd00:2::9", "fd00::1", 80, false},
		{"destinationIps", "10.0.0.1/32", "10.1.0.1", "10.0.0.1", 80, true},
		{"destinationIps", "10.0.0.1/32", "10.1.0.1", "fd00::1", 80, false},
		{"destinationIps", "\"fd00::/64\"", "fd00:1::9", "fd00::1", 80, true},
		{"destinationIps", "\"fd00::/64\"", "10.1.0.1", "10.0.0.1", 80, false},
		{"sourceIps", "\"::ffff:10.1.0.0/112\"", "10.1.2.3", "10.0.0.1", 80, true},
		{"sourceIps", "\"::ffff:10.1.0.0/112\"", "10.2.0.1", "10.0.0.1", 80, false},
		{"destinationIps", "\"::ffff:10.0.0.1/128\"", "10.1.0.1", "10.0.0.1", 80, true},
		{"destinationIps", "\"::ffff:10.0.0.1/128\"", "10.1.0.1", "10.0.0.2", 80, false},
		{"destinationPorts", "80", "10.1.0.1", "10.0.0.1", 80, true},
		{"destinationPorts", "80", "10.1.0.1", "10.0.0.1", 81, false},
		{"destinationPorts", "\"8080\"", "10.1.0.1", "10.0.0.1", 8080, true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int neg = 0; neg < 2; neg++) {
			char k[64];
			snprintf(k, sizeof(k), "%s%c%s", neg ? "not" : "",
				 neg ? cases[i].key[0] - 'a' + 'A' : cases[i].key[0], cases[i].key + 1);
			zr_config_error_t err;
			zr_config_t *cfg = load_match(k, cases[i].item, &err);
			if (!ok(cfg != NULL, "%s: [%s] loads", k, cases[i].item))
				continue;
			bool want = neg ? !cases[i].match : cases[i].match;
			for (int tls = 0; tls < 2; tls++)
				ok(allowed(cfg, tls ? CLIENT : NULL, cases[i].src, cases[i].dst, cases[i].port) == want,
				   "ALLOW %s: [%s] %s %s %s -> %s:%u", k, cases[i].item, want ? "allows" : "denies",
				   tls ? "mTLS" : "plaintext", cases[i].src, cases[i].dst, cases[i].port);
			zr_config_free(cfg);
		}
	}
}

static void expect_err(const char *key, const char *item, const char *at, const char *msg)
{
	char want_key[256];
	zr_config_error_t err;
	memset(&err, 0, sizeof(err));
	zr_config_t *cfg = load_match(key, item, &err);
	snprintf(want_key, sizeof(want_key), MATCH_KEY "%s%s", key, at);
	bool good = !cfg && !strcmp(err.file, "match.yaml") && err.line == MATCH_LINE && !strcmp(err.key, want_key) &&
		    strstr(err.message, msg);
	if (!ok(good, "%s: [%s] is an error at match.yaml:%d %s: %s", key, item, MATCH_LINE, want_key, msg)) {
		char buf[1400];
		diag("  got: %s", cfg ? "(loaded)" : zr_config_error_str(&err, buf, sizeof(buf)));
	}
	zr_config_free(cfg);
}

static void test_errors(void)
{
	expect_err("principals", "!Regex \"a.*\"", "[0]", "unknown string match !Regex");
	expect_err("principals", "{Regex: a}", "[0]", "unknown string match \"Regex\"");
	expect_err("principals", "{exact: a}", "[0]", "unknown string match \"exact\"");
	expect_err("principals", "{Exact: a, Prefix: b}", "[0]", "only key");
	expect_err("namespaces", "!Exact [a]", "[0]", "!Exact takes a string, got a list");
	expect_err("namespaces", "!Prefix {a: b}", "[0]", "!Prefix takes a string, got a map");
	expect_err("notNamespaces", "{Exact: [a]}", "[0]", "\"Exact\" takes a string, got a list");
	expect_err("notPrincipals", "{Suffix: {a: b}}", "[0]", "\"Suffix\" takes a string, got a map");
	expect_err("principals", "{Exact: !Prefix a}", "[0]", "takes a plain string, got one tagged !Prefix");
	expect_err("principals", "{Exact: }", "[0]", "\"Exact\" takes a string, got nothing");
	expect_err("principals", "!Exact ", "[0]", "!Exact takes a string, got nothing");
	expect_err("principals", "{Exact: null}", "[0]", "\"Exact\" takes a string, got null");
	expect_err("principals", "!Suffix ~", "[0]", "!Suffix takes a string, got null");
	expect_err("namespaces", "{Presence: x}", "[0]", "takes no value");
	expect_err("namespaces", "!Presence [a]", "[0]", "takes no value");
	expect_err("namespaces", "!!int 5", "[0]", "unsupported tag");
	expect_err("namespaces", "[a]", "[0]", "expected a string, got a list");
	expect_err("sourceIps", "!Exact 10.0.0.0/8", "[0]", "sourceIps takes CIDRs; !Exact is a string match");
	/* "/-0" was /0: a DENY on one address denied all of IPv4 */
	expect_err("sourceIps", "10.1.2.3/-0", "[0]", "bad CIDR \"10.1.2.3/-0\"");
	expect_err("notSourceIps", "\"10.0.0.0/+8\"", "[0]", "bad CIDR");
	expect_err("destinationIps", "\"::ffff:10.9.9.9/24\"", "[0]", "bad CIDR");
	expect_err("notDestinationIps", "!Prefix 10.0.0.1", "[0]", "takes CIDRs");
	expect_err("destinationPorts", "!Exact 80", "[0]", "destinationPorts takes port numbers");
	expect_err("notDestinationPorts", "!Presence []", "[0]", "takes port numbers");
	expect_err("serviceAccounts", "!Exact default/client", "[0]", "matched exactly; !Exact is a string match");
	expect_err("notServiceAccounts", "\"default/clien*\"", "[0]", "no wildcards");
	expect_err("serviceAccounts", "client", "[0]", "want \"namespace/serviceAccount\"");
	expect_err("serviceAccounts", "{namespace: !Prefix def, serviceAccount: x}", "[0].namespace",
		   "!Prefix is a string match");
	/* The map form as strictly as "ns/sa": no '*' (no wildcard), no '/'
	 * (it would re-split), no empty name (no identity has one). */
	expect_err("serviceAccounts", "{namespace: default, serviceAccount: \"*\"}", "[0].serviceAccount",
		   "bad name \"*\"");
	expect_err("notServiceAccounts", "{namespace: \"*\", serviceAccount: client}", "[0].namespace", "no wildcards");
	expect_err("serviceAccounts", "{namespace: default, serviceAccount: \"clien*\"}", "[0].serviceAccount",
		   "without '*' or '/'");
	expect_err("serviceAccounts", "{namespace: \"a/b\", serviceAccount: c}", "[0].namespace", "bad name \"a/b\"");
	expect_err("notServiceAccounts", "{namespace: a, serviceAccount: b/c}", "[0].serviceAccount",
		   "without '*' or '/'");
	expect_err("serviceAccounts", "{namespace: \"\", serviceAccount: c}", "[0].namespace", "non-empty");
	expect_err("serviceAccounts", "{namespace: a, serviceAccount: !!int 5}", "[0].serviceAccount",
		   "takes no tag, got tag:yaml.org,2002:int");
	/* A principal with "spiffe://" never matches (principals are compared
	 * without it, in ztunnel too): a DENY that denies nothing. */
	expect_err("principals", "{Exact: \"spiffe://" CLIENT "\"}", "[0]",
		   "\"spiffe://" CLIENT "\" can never match: principals are compared without \"spiffe://\" "
		   "(write \"" CLIENT "\")");
	expect_err("notPrincipals", "\"spiffe://" CLIENT "\"", "[0]", "can never match");
	expect_err("principals", "\"spiffe://cluster.local/ns/default/*\"", "[0]", "can never match");
	expect_err("principals", "{Prefix: \"spiffe://cluster.local/\"}", "[0]", "can never match");
	expect_err("notPrincipals", "!Prefix spiffe://", "[0]", "can never match");
	expect_err("principals", "!Exact SPIFFE://" CLIENT, "[0]", "can never match");
}

/* Everything after line 14 of POLICY_HEAD (an ALLOW policy). */
static zr_config_t *load_rules(const char *rules, zr_config_error_t *err)
{
	char yaml[4096];
	zr_config_t *cfg = NULL;
	snprintf(yaml, sizeof(yaml), "%s%s", POLICY_HEAD, rules);
	if (zr_config_load_string(yaml, strlen(yaml), "match.yaml", &cfg, err) != 0)
		return NULL;
	return cfg;
}

static void expect_rules_err(const char *rules, unsigned line, const char *key, const char *msg)
{
	char want_key[256];
	zr_config_error_t err;
	memset(&err, 0, sizeof(err));
	zr_config_t *cfg = load_rules(rules, &err);
	snprintf(want_key, sizeof(want_key), "localXds.policies[0]%s", key);
	bool good = !cfg && !strcmp(err.file, "match.yaml") && err.line == line && !strcmp(err.key, want_key) &&
		    strstr(err.message, msg);
	if (!ok(good, "%.*s is an error at match.yaml:%u %s: %s", (int)strcspn(rules + 4, "\n"), rules + 4, line,
		want_key, msg)) {
		char buf[1400];
		diag("  got: %s", cfg ? "(loaded)" : zr_config_error_str(&err, buf, sizeof(buf)));
	}
	zr_config_free(cfg);
}

/* A null rule, clause or match list is an error, not the empty list: as an
 * empty list, a null rule or clause matched everything (an ALLOW admitting
 * everyone) and a null match key constrained nothing. ztunnel's parser
 * refuses null there too. [] keeps ztunnel's meaning. */
static void test_null_lists(void)
{
	static const char *const keys[] = {"namespaces",	"notNamespaces",    "principals",
					   "notPrincipals",	"serviceAccounts",  "notServiceAccounts",
					   "sourceIps",		"notSourceIps",	    "destinationIps",
					   "notDestinationIps", "destinationPorts", "notDestinationPorts"};
	expect_rules_err("    rules: [~]\n", 15, ".rules[0]", "expected a rule (a list of clauses), got null");
	expect_rules_err("    rules: [null]\n", 15, ".rules[0]", "[] is a rule that matches everything");
	expect_rules_err("    rules:\n    -\n    - [[{principals: [x]}]]\n", 16, ".rules[0]",
			 "expected a rule (a list of clauses), got null");
	expect_rules_err("    rules: [[~]]\n", 15, ".rules[0][0]", "expected a clause (a list of matches), got null");
	expect_rules_err("    rules: [[[{principals: [x]}], null]]\n", 15, ".rules[0][1]",
			 "[] is a clause that matches everything");
	expect_rules_err("    rules:\n    - -\n      - [{principals: [x]}]\n", 16, ".rules[0][0]", "expected a clause");
	expect_rules_err("    rules: [[[~]]]\n", 15, ".rules[0][0][0]", "expected a map, got null");
	expect_rules_err("    rules: ~\n", 15, ".rules", "expected a list of rules, got null");
	expect_rules_err("    rules: [[7]]\n", 15, ".rules[0][0]",
			 "expected a clause (a list of matches), got a scalar");
	expect_rules_err("    dryRun: false\n", 11, ".rules", "missing required key");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char rules[256], key[64];
		snprintf(key, sizeof(key), ".rules[0][0][0].%s", keys[i]);
		snprintf(rules, sizeof(rules), "    rules: [[[{%s: ~}]]]\n", keys[i]);
		expect_rules_err(rules, 15, key, "expected a list, got null (write [] for no constraint)");
		snprintf(rules, sizeof(rules), "    rules: [[[{%s, %s: }]]]\n",
			 strcmp(keys[i], "sourceIps") ? "sourceIps: [10.0.0.0/8]" : "destinationPorts: [80]", keys[i]);
		expect_rules_err(rules, 15, key, "got null");
		snprintf(rules, sizeof(rules), "    rules:\n    - - - %s:\n", keys[i]);
		expect_rules_err(rules, 16, key, "got null");
	}
	/* JSON (a JSON file is YAML) */
	expect_rules_err("    \"rules\": [[null]]\n", 15, ".rules[0][0]", "got null");
	expect_rules_err("    \"rules\": [[[{\"principals\": null}]]]\n", 15, ".rules[0][0][0].principals", "got null");

	/* []: what it means in ztunnel (rbac.rs Authorization::matches) */
	static const struct {
		const char *rules;
		bool client_80, plaintext_81;
		const char *what;
	} empty[] = {
		{"    rules: []\n", false, false, "rules: [] matches nothing (the ALLOW denies all)"},
		{"    rules: [[]]\n", true, true, "a rule [] matches everything"},
		{"    rules: [[[]]]\n", true, true, "a clause [] matches everything"},
		{"    rules: [[[{}]]]\n", false, false, "a match {} is skipped"},
		{"    rules: [[[{principals: [], destinationPorts: [80]}]]]\n", true, false,
		 "a match key [] is no constraint"},
		{"    rules: [[[{principals: !!seq [\"*\"]}]]]\n", true, false, "!!seq is a list's own tag"},
	};
	for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
		zr_config_error_t err;
		zr_config_t *cfg = load_rules(empty[i].rules, &err);
		if (!ok(cfg != NULL, "%s: loads", empty[i].what)) {
			char buf[1400];
			diag("  %s", zr_config_error_str(&err, buf, sizeof(buf)));
			continue;
		}
		ok(allowed(cfg, CLIENT, "10.1.0.1", "10.0.0.1", 80) == empty[i].client_80 &&
			   allowed(cfg, NULL, "10.1.0.1", "10.0.0.1", 81) == empty[i].plaintext_81,
		   "%s", empty[i].what);
		zr_config_free(cfg);
	}
}

/* A tag on a match key's list, a match map or a rules level was ignored,
 * so that `principals: !Exact ["ns/evil/x*"]` was a Prefix match. */
static void test_list_tags(void)
{
	expect_rules_err("    rules: [[[{principals: !Exact [\"cluster.local/ns/evil/*\"]}]]]\n", 15,
			 ".rules[0][0][0].principals",
			 "principals takes no tag, got !Exact (tag each item instead: principals: [!Exact x])");
	expect_rules_err("    rules: [[[{notNamespaces: !Prefix [team-]}]]]\n", 15, ".rules[0][0][0].notNamespaces",
			 "takes no tag, got !Prefix");
	expect_rules_err("    rules: [[[{serviceAccounts: !Exact [a/b]}]]]\n", 15, ".rules[0][0][0].serviceAccounts",
			 "serviceAccounts takes no tag, got !Exact");
	expect_rules_err("    rules: [[[{sourceIps: !Exact [10.0.0.0/8]}]]]\n", 15, ".rules[0][0][0].sourceIps",
			 "sourceIps takes no tag, got !Exact");
	expect_rules_err("    rules: [[[{destinationPorts: !!set [80]}]]]\n", 15, ".rules[0][0][0].destinationPorts",
			 "destinationPorts takes no tag, got tag:yaml.org,2002:set");
	expect_rules_err("    rules: [[[!Exact {principals: [\"cluster.local/ns/evil/*\"]}]]]\n", 15, ".rules[0][0][0]",
			 "a match takes no tag, got !Exact");
	expect_rules_err("    rules: [[!Exact [{principals: [a]}]]]\n", 15, ".rules[0][0]",
			 "a clause (a list of matches) takes no tag, got !Exact");
	expect_rules_err("    rules: [!Exact [[{principals: [a]}]]]\n", 15, ".rules[0]",
			 "a rule (a list of clauses) takes no tag, got !Exact");
	expect_rules_err("    rules: !Exact [[[{principals: [a]}]]]\n", 15, ".rules",
			 "a list of rules takes no tag, got !Exact");
	expect_rules_err("    rules: !!omap [[[{principals: [a]}]]]\n", 15, ".rules", "takes no tag");
}

int main(void)
{
	run_string_cases("principals", "notPrincipals", principal_cases,
			 sizeof(principal_cases) / sizeof(principal_cases[0]), true);
	run_string_cases("namespaces", "notNamespaces", namespace_cases,
			 sizeof(namespace_cases) / sizeof(namespace_cases[0]), false);
	test_service_accounts();
	test_ips_ports();
	test_errors();
	test_null_lists();
	test_list_tags();
	return done_testing();
}
