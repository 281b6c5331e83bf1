/* Authorization policies in ztunnel's serde form (src/rbac.rs
 * Authorization / RbacMatch). String matches are stored in SPEC's plain
 * convention: "exact", "prefix*", "*suffix", "*" (presence); ztunnel's
 * StringMatch enum (serde_yaml writes `!Exact x`, and also reads
 * `{Exact: x}`) is converted to it. Service accounts are stored as
 * "namespace/serviceAccount". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/config-int.h"

static int string_match(zr_yaml_walk_t *w, yaml_node_t *n, char **out)
{
	const char *kind = NULL;
	yaml_node_t *val = n;
	const char *tag = n ? (const char *)n->tag : NULL;

	if (n && n->type == YAML_MAPPING_NODE) {
		if (zr_yaml_len(n) != 1)
			return zr_yaml_fail(w, n, "expected a string or one of Exact, Prefix, Suffix, Presence");
		yaml_node_t *k = zr_yaml_node(w, n->data.mapping.pairs.start[0].key);
		if (!k || k->type != YAML_SCALAR_NODE)
			return zr_yaml_fail(w, n, "expected a string or one of Exact, Prefix, Suffix, Presence");
		kind = (const char *)k->data.scalar.value;
		val = zr_yaml_node(w, n->data.mapping.pairs.start[0].value);
	} else if (tag && tag[0] == '!' && tag[1]) {
		kind = tag + 1; /* serde_yaml's own form: a local tag per variant */
	}
	if (!kind)
		return zr_yaml_str(w, n, out);
	if (!strcmp(kind, "Presence")) {
		free(*out);
		*out = strdup("*");
		return *out ? 0 : zr_yaml_fail(w, n, "out of memory");
	}
	const char *pre = "", *post = "";
	if (!strcmp(kind, "Prefix"))
		post = "*";
	else if (!strcmp(kind, "Suffix"))
		pre = "*";
	else if (strcmp(kind, "Exact"))
		return zr_yaml_fail(w, n, "unknown string match \"%s\" (want Exact | Prefix | Suffix | Presence)",
				    kind);
	if (zr_yaml_is_null(val))
		return zr_yaml_fail(w, val ? val : n, "expected a string, got null");
	const char *s = zr_yaml_text(w, val);
	if (!s)
		return -1;
	free(*out);
	if (asprintf(out, "%s%s%s", pre, s, post) < 0) {
		*out = NULL;
		return zr_yaml_fail(w, n, "out of memory");
	}
	return 0;
}

struct sa_ctx {
	char *ns, *sa;
};

static int sa_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct sa_ctx *c = ctx;
	if (!strcmp(key, "namespace"))
		return zr_yaml_str(w, v, &c->ns);
	if (!strcmp(key, "serviceAccount"))
		return zr_yaml_str(w, v, &c->sa);
	return 1;
}

/* ztunnel's ServiceAccountMatch {namespace, serviceAccount}, or "ns/sa". */
static int sa_match(zr_yaml_walk_t *w, yaml_node_t *n, char **out)
{
	if (!n || n->type != YAML_MAPPING_NODE)
		return zr_yaml_str(w, n, out);
	struct sa_ctx c = {0};
	int rc = zr_yaml_map(w, n, sa_field, &c);
	if (rc == 0 && (!c.ns || !c.sa)) {
		zr_yaml_push_key(w, c.ns ? "serviceAccount" : "namespace");
		rc = zr_yaml_fail(w, n, "missing required key");
	}
	if (rc == 0 && asprintf(out, "%s/%s", c.ns, c.sa) < 0) {
		*out = NULL;
		rc = zr_yaml_fail(w, n, "out of memory");
	}
	free(c.ns);
	free(c.sa);
	return rc;
}

struct list_ctx {
	int kind; /* 0 string match, 1 service account, 2 cidr, 3 port */
	void *v;
	size_t *n;
};

static int list_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	struct list_ctx *c = ctx;
	int rc;
	switch (c->kind) {
	case 0:
		rc = string_match(w, item, &((char **)c->v)[i]);
		break;
	case 1:
		rc = sa_match(w, item, &((char **)c->v)[i]);
		break;
	case 2: {
		zr_cidr_t *cidr = &((zr_cidr_t *)c->v)[i];
		const char *s = zr_yaml_text(w, item);
		if (!s)
			return -1;
		rc = zr_cidr_parse(s, &cidr->ip, &cidr->prefix_len) == 0 ? 0 :
									   zr_yaml_fail(w, item, "bad CIDR \"%s\"", s);
		break;
	}
	default:
		rc = zr_yaml_port(w, item, true, &((uint16_t *)c->v)[i]);
		break;
	}
	if (rc == 0)
		*c->n = i + 1;
	return rc;
}

static int parse_list(zr_yaml_walk_t *w, yaml_node_t *v, int kind, size_t elem, void **out, size_t *n_out)
{
	size_t len = v && v->type == YAML_SEQUENCE_NODE ? zr_yaml_len(v) : 0;
	struct list_ctx c = {.kind = kind, .n = n_out};
	if (len && !(c.v = calloc(len, elem)))
		return zr_yaml_fail(w, v, "out of memory");
	*out = c.v;
	return zr_yaml_seq(w, v, list_item, &c);
}

static int match_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	zr_policy_match_t *m = ctx;
	static const struct {
		const char *name;
		int kind;
		size_t off, n_off;
	} fields[] = {
#define F(name, kind, field) {name, kind, offsetof(zr_policy_match_t, field), offsetof(zr_policy_match_t, n_##field)}
		F("namespaces", 0, namespaces),
		F("notNamespaces", 0, not_namespaces),
		F("principals", 0, principals),
		F("notPrincipals", 0, not_principals),
		F("serviceAccounts", 1, service_accounts),
		F("notServiceAccounts", 1, not_service_accounts),
		F("sourceIps", 2, source_ips),
		F("notSourceIps", 2, not_source_ips),
		F("destinationIps", 2, destination_ips),
		F("notDestinationIps", 2, not_destination_ips),
		F("destinationPorts", 3, destination_ports),
		F("notDestinationPorts", 3, not_destination_ports),
#undef F
	};
	static const size_t elem[] = {sizeof(char *), sizeof(char *), sizeof(zr_cidr_t), sizeof(uint16_t)};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (strcmp(key, fields[i].name))
			continue;
		return parse_list(w, v, fields[i].kind, elem[fields[i].kind], (void **)((char *)m + fields[i].off),
				  (size_t *)((char *)m + fields[i].n_off));
	}
	/* ztunnel ignores unknown match keys; a typo here would silently widen
	 * or narrow a policy, so it is an error (SPEC: unknown keys are). */
	return 1;
}

static int match_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_policy_clause_t *cl = ctx;
	cl->n_matches = i + 1;
	if (!item || item->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(w, item, "expected a map, got %s", zr_yaml_kind(item));
	return zr_yaml_map(w, item, match_field, &cl->matches[i]);
}

static int clause_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_policy_rule_t *r = ctx;
	zr_policy_clause_t *cl = &r->clauses[i];
	size_t n = item && item->type == YAML_SEQUENCE_NODE ? zr_yaml_len(item) : 0;
	r->n_clauses = i + 1;
	if (n && !(cl->matches = calloc(n, sizeof(*cl->matches))))
		return zr_yaml_fail(w, item, "out of memory");
	return zr_yaml_seq(w, item, match_item, cl);
}

static int rule_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_policy_t *pol = ctx;
	zr_policy_rule_t *r = &pol->rules[i];
	size_t n = item && item->type == YAML_SEQUENCE_NODE ? zr_yaml_len(item) : 0;
	pol->n_rules = i + 1;
	if (n && !(r->clauses = calloc(n, sizeof(*r->clauses))))
		return zr_yaml_fail(w, item, "out of memory");
	return zr_yaml_seq(w, item, clause_item, r);
}

struct pol_ctx {
	zr_policy_t *pol;
	bool scope, action;
};

static int policy_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	static const char *const scopes[] = {"Global", "Namespace", "WorkloadSelector", NULL};
	static const char *const actions[] = {"Allow", "Deny", NULL};
	struct pol_ctx *c = ctx;
	zr_policy_t *pol = c->pol;
	int idx;
	if (!strcmp(key, "name"))
		return zr_yaml_str(w, v, &pol->name);
	if (!strcmp(key, "namespace"))
		return zr_yaml_str_opt(w, v, &pol->namespace_);
	if (!strcmp(key, "scope")) {
		if (zr_yaml_enum(w, v, "scope", scopes, &idx) != 0)
			return -1;
		pol->scope = (zr_policy_scope_t)idx;
		c->scope = true;
		return 0;
	}
	if (!strcmp(key, "action")) {
		if (zr_yaml_enum(w, v, "action", actions, &idx) != 0)
			return -1;
		pol->action = (zr_policy_action_t)idx;
		c->action = true;
		return 0;
	}
	if (!strcmp(key, "dryRun"))
		return zr_yaml_bool(w, v, &pol->dry_run);
	if (!strcmp(key, "rules")) {
		size_t n = v && v->type == YAML_SEQUENCE_NODE ? zr_yaml_len(v) : 0;
		if (n && !(pol->rules = calloc(n, sizeof(*pol->rules))))
			return zr_yaml_fail(w, v, "out of memory");
		return zr_yaml_seq(w, v, rule_item, pol);
	}
	return 1;
}

int zr_state_policy_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_state_t *st = ctx;
	struct pol_ctx c = {.pol = &st->policies[i]};
	st->n_policies = i + 1;
	if (!item || item->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(w, item, "expected a map, got %s", zr_yaml_kind(item));
	if (zr_yaml_map(w, item, policy_field, &c) != 0)
		return -1;
	/* A policy whose effect is unknown must not load as a default. */
	const char *missing = !c.pol->name ? "name" : !c.scope ? "scope" : !c.action ? "action" : NULL;
	if (missing) {
		zr_yaml_push_key(w, missing);
		return zr_yaml_fail(w, item, "missing required key");
	}
	if (!c.pol->namespace_ && !(c.pol->namespace_ = strdup("")))
		return zr_yaml_fail(w, item, "out of memory");
	return 0;
}

static void free_match(zr_policy_match_t *m)
{
	zr_yaml_free_strv(m->namespaces, m->n_namespaces);
	zr_yaml_free_strv(m->not_namespaces, m->n_not_namespaces);
	zr_yaml_free_strv(m->principals, m->n_principals);
	zr_yaml_free_strv(m->not_principals, m->n_not_principals);
	zr_yaml_free_strv(m->service_accounts, m->n_service_accounts);
	zr_yaml_free_strv(m->not_service_accounts, m->n_not_service_accounts);
	free(m->source_ips);
	free(m->not_source_ips);
	free(m->destination_ips);
	free(m->not_destination_ips);
	free(m->destination_ports);
	free(m->not_destination_ports);
}

void zr_state_policy_free(zr_policy_t *pol)
{
	for (size_t r = 0; r < pol->n_rules; r++) {
		zr_policy_rule_t *rule = &pol->rules[r];
		for (size_t c = 0; c < rule->n_clauses; c++) {
			for (size_t m = 0; m < rule->clauses[c].n_matches; m++)
				free_match(&rule->clauses[c].matches[m]);
			free(rule->clauses[c].matches);
		}
		free(rule->clauses);
	}
	free(pol->rules);
	free(pol->name);
	free(pol->namespace_);
}
