/* Authorization policies in ztunnel's serde form (src/rbac.rs
 * Authorization / RbacMatch). A string match keeps its kind explicitly
 * (zr_string_match_t): ztunnel's StringMatch enum, which serde_yaml writes
 * `!Exact x` and also reads as `{Exact: x}`, is literal; only a plain string
 * gets the AuthorizationPolicy CRD's shorthand (SPEC "Local state"). Service
 * accounts are stored as "namespace/serviceAccount".
 *
 * Whatever could widen a policy unseen is an error: null where a list is
 * expected (never the empty list, whose meaning is ztunnel's), a tag
 * anywhere but on a string match, a principal that can never match, and a
 * second policy of one namespace/name (ztunnel would keep only the last). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl/config-int.h"

#define WANT_MATCH "want a string, {Exact|Prefix|Suffix: string}, {Presence: []} or !Exact|!Prefix|!Suffix string"

/* serde_yaml's tag for an enum variant ("!Exact"): a local tag, not the
 * non-specific "!" alone. */
static const char *local_tag(const yaml_node_t *n)
{
	const char *tag = n ? (const char *)n->tag : NULL;
	return tag && tag[0] == '!' && tag[1] ? tag : NULL;
}

/* A tag that is neither absent, the default of its node kind, "!" nor a
 * local one ("!!int 5", "!!binary ..."): not a string, whatever its text. */
static bool foreign_tag(const yaml_node_t *n)
{
	const char *tag = (const char *)n->tag;
	if (!tag || local_tag(n) || !strcmp(tag, "!"))
		return false;
	const char *def = n->type == YAML_MAPPING_NODE	? YAML_MAP_TAG :
			  n->type == YAML_SEQUENCE_NODE ? YAML_SEQ_TAG :
							  YAML_STR_TAG;
	return strcmp(tag, def) != 0;
}

/* Nothing written: null, "", ~, an empty list or map (Presence's value). */
static bool no_value(const yaml_node_t *n)
{
	if (!n)
		return true;
	if (n->type == YAML_SCALAR_NODE) {
		const char *v = (const char *)n->data.scalar.value;
		return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		       (!*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL"));
	}
	return zr_yaml_len(n) == 0;
}

/* Nowhere but on a string match does a local tag mean something, and no
 * foreign one does (serde_yaml ignores a tag on a list or map: the CRD
 * shorthand would then still apply to the strings inside). `also` (NULL:
 * none) is one more YAML type tag allowed besides the node kind's own. */
static int untagged(zr_yaml_walk_t *w, const yaml_node_t *n, const char *what, const char *also)
{
	if (!n || (!local_tag(n) && !foreign_tag(n)) || (also && !strcmp((const char *)n->tag, also)))
		return 0;
	return zr_yaml_fail(w, n, "%s takes no tag, got %s", what, (const char *)n->tag);
}

static int set_match(zr_yaml_walk_t *w, yaml_node_t *n, zr_string_match_t *out, zr_string_match_kind_t kind,
		     const char *s, size_t len)
{
	char *v = strndup(s, len);
	if (!v)
		return zr_yaml_fail(w, n, "out of memory");
	free(out->value);
	*out = (zr_string_match_t){.kind = kind, .value = v, .len = len};
	return 0;
}

/* The CRD's rules for a plain string (istio's StringMatcherWithPrefix):
 * "*" presence, "*x" suffix, "x*" prefix, anything else exact. */
static int plain_match(zr_yaml_walk_t *w, yaml_node_t *n, zr_string_match_t *out)
{
	if (zr_yaml_is_null(n))
		return zr_yaml_fail(w, n, "expected a string, got null (" WANT_MATCH ")");
	if (n->type != YAML_SCALAR_NODE)
		return zr_yaml_fail(w, n, "expected a string, got %s (" WANT_MATCH ")", zr_yaml_kind(n));
	const char *s = zr_yaml_text(w, n);
	if (!s)
		return -1;
	size_t len = strlen(s);
	if (len == 1 && s[0] == '*')
		return set_match(w, n, out, ZR_STRING_PRESENCE, "", 0);
	if (len && s[0] == '*')
		return set_match(w, n, out, ZR_STRING_SUFFIX, s + 1, len - 1);
	if (len && s[len - 1] == '*')
		return set_match(w, n, out, ZR_STRING_PREFIX, s, len - 1);
	return set_match(w, n, out, ZR_STRING_EXACT, s, len);
}

/* One tagged match: `kind` from the map key or the tag (named `how` in
 * messages), `val` its value. The value is taken as it is written. */
static int tagged_match(zr_yaml_walk_t *w, yaml_node_t *n, const char *how, const char *kind, yaml_node_t *val,
			zr_string_match_t *out)
{
	static const struct {
		const char *name;
		zr_string_match_kind_t kind;
	} kinds[] = {{"Exact", ZR_STRING_EXACT},
		     {"Prefix", ZR_STRING_PREFIX},
		     {"Suffix", ZR_STRING_SUFFIX},
		     {"Presence", ZR_STRING_PRESENCE}};
	size_t k = 0;
	while (k < sizeof(kinds) / sizeof(kinds[0]) && strcmp(kind, kinds[k].name))
		k++;
	if (k == sizeof(kinds) / sizeof(kinds[0]))
		return zr_yaml_fail(w, n, "unknown string match %s (want Exact | Prefix | Suffix | Presence)", how);
	if (kinds[k].kind == ZR_STRING_PRESENCE) {
		if (!no_value(val))
			return zr_yaml_fail(w, val, "%s takes no value (write {Presence: []} or !Presence [])", how);
		return set_match(w, n, out, ZR_STRING_PRESENCE, "", 0);
	}
	if (!val || val->type != YAML_SCALAR_NODE)
		return zr_yaml_fail(w, val ? val : n, "%s takes a string, got %s", how, zr_yaml_kind(val));
	if (val != n && (local_tag(val) || foreign_tag(val)))
		return zr_yaml_fail(w, val, "%s takes a plain string, got one tagged %s", how, (const char *)val->tag);
	if (no_value(val))
		return zr_yaml_fail(w, val,
				    "%s takes a string, got %s (quote it for the string itself: \"\", \"null\")", how,
				    val->data.scalar.length ? "null" : "nothing");
	const char *s = zr_yaml_text(w, val);
	if (!s)
		return -1;
	return set_match(w, n, out, kinds[k].kind, s, strlen(s));
}

static int string_match(zr_yaml_walk_t *w, yaml_node_t *n, zr_string_match_t *out)
{
	char how[80];
	if (n && foreign_tag(n))
		return zr_yaml_fail(w, n, "unsupported tag %s (" WANT_MATCH ")", (const char *)n->tag);
	if (n && n->type == YAML_MAPPING_NODE) {
		const char *tag = local_tag(n);
		if (tag)
			return zr_yaml_fail(w, n, "%s takes a string, got a map", tag);
		if (zr_yaml_len(n) != 1)
			return zr_yaml_fail(
				w, n,
				"expected one of Exact, Prefix, Suffix, Presence as the only key (" WANT_MATCH ")");
		yaml_node_t *k = zr_yaml_node(w, n->data.mapping.pairs.start[0].key);
		if (!k || k->type != YAML_SCALAR_NODE)
			return zr_yaml_fail(
				w, n,
				"expected one of Exact, Prefix, Suffix, Presence as the only key (" WANT_MATCH ")");
		const char *kind = (const char *)k->data.scalar.value;
		snprintf(how, sizeof(how), "\"%s\"", kind);
		return tagged_match(w, n, how, kind, zr_yaml_node(w, n->data.mapping.pairs.start[0].value), out);
	}
	const char *tag = local_tag(n);
	if (!tag)
		return plain_match(w, n, out);
	snprintf(how, sizeof(how), "%s", tag);
	return tagged_match(w, n, how, tag + 1, n, out);
}

/* No string matches here: ztunnel's ServiceAccountMatch compares both names
 * exactly, so a tag or a '*' would only read as a wildcard that is none. */
static int sa_no_tag(zr_yaml_walk_t *w, yaml_node_t *n)
{
	if (n && local_tag(n))
		return zr_yaml_fail(w, n,
				    "serviceAccounts take {namespace: NS, serviceAccount: SA} or \"NS/SA\", "
				    "matched exactly; %s is a string match (use principals or namespaces)",
				    (const char *)n->tag);
	return 0;
}

struct sa_ctx {
	char *ns, *sa;
};

/* One name of the map form, as strictly as the "ns/sa" form: a '*' would
 * read as a wildcard that is none, a '/' would re-split "ns/sa" elsewhere
 * (/config_dump, the shorthand), and an empty name matches no identity. */
static int sa_name(zr_yaml_walk_t *w, yaml_node_t *v, char **out)
{
	if (sa_no_tag(w, v) != 0 || untagged(w, v, "a service account name", NULL) != 0 || zr_yaml_str(w, v, out) != 0)
		return -1;
	if (**out && !strpbrk(*out, "*/"))
		return 0;
	return zr_yaml_fail(w, v,
			    "bad name \"%s\" (want a non-empty name without '*' or '/', matched exactly: no wildcards)",
			    *out);
}

static int sa_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct sa_ctx *c = ctx;
	if (!strcmp(key, "namespace"))
		return sa_name(w, v, &c->ns);
	if (!strcmp(key, "serviceAccount"))
		return sa_name(w, v, &c->sa);
	return 1;
}

/* ztunnel's ServiceAccountMatch {namespace, serviceAccount}, or "ns/sa". */
static int sa_match(zr_yaml_walk_t *w, yaml_node_t *n, char **out)
{
	if (sa_no_tag(w, n) != 0)
		return -1;
	if (!n || n->type != YAML_MAPPING_NODE) {
		if (zr_yaml_str(w, n, out) != 0)
			return -1;
		/* zring's own shorthand: exactly "namespace/serviceAccount". A
		 * '*' is refused rather than read literally: in a plain string
		 * elsewhere it would be a wildcard. */
		const char *slash = strchr(*out, '/');
		if (slash && slash != *out && slash[1] && !strchr(slash + 1, '/') && !strchr(*out, '*'))
			return 0;
		zr_yaml_fail(
			w, n,
			"bad service account \"%s\" (want \"namespace/serviceAccount\", matched exactly: no wildcards)",
			*out);
		free(*out);
		*out = NULL;
		return -1;
	}
	struct sa_ctx c = {0};
	if (untagged(w, n, "a service account", NULL) != 0)
		return -1;
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
	const char *key;
	int kind; /* 0 string match, 1 service account, 2 cidr, 3 port */
	bool principal;
	void *v;
	size_t *n;
};

static int list_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	struct list_ctx *c = ctx;
	int rc;
	if (c->kind >= 2 && local_tag(item))
		return zr_yaml_fail(w, item, "%s takes %s; %s is a string match", c->key,
				    c->kind == 2 ? "CIDRs" : "port numbers", (const char *)item->tag);
	switch (c->kind) {
	case 0: {
		zr_string_match_t *m = &((zr_string_match_t *)c->v)[i];
		rc = string_match(w, item, m);
		/* ztunnel compares principals without "spiffe://" (and so does
		 * zring): with it, a DENY would deny nothing, a notPrincipals
		 * exclude no one. */
		if (rc == 0 && c->principal && m->kind != ZR_STRING_PRESENCE &&
		    !strncasecmp(m->value, "spiffe://", 9)) {
			rc = zr_yaml_fail(w, item,
					  "principal \"%s\" can never match: principals are compared without "
					  "\"spiffe://\" (write \"%s\")",
					  m->value, m->value + 9);
			/* not counted in *c->n: freed here */
			free(m->value);
			m->value = NULL;
		}
		break;
	}
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

static int parse_list(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, int kind, size_t elem, void **out,
		      size_t *n_out)
{
	/* `principals: ~` (a template that rendered nothing) must not read as
	 * "no constraint"; a tag on the list would not reach its items. */
	if (zr_yaml_is_null(v))
		return zr_yaml_fail(w, v, "expected a list, got null (write [] for no constraint)");
	if (local_tag(v) && kind == 0)
		return zr_yaml_fail(w, v, "%s takes no tag, got %s (tag each item instead: %s: [%s x])", key,
				    (const char *)v->tag, key, (const char *)v->tag);
	if (untagged(w, v, key, NULL) != 0)
		return -1;
	size_t len = v->type == YAML_SEQUENCE_NODE ? zr_yaml_len(v) : 0;
	struct list_ctx c = {.key = key,
			     .kind = kind,
			     .principal = !strcmp(key, "principals") || !strcmp(key, "notPrincipals"),
			     .n = n_out};
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
	static const size_t elem[] = {sizeof(zr_string_match_t), sizeof(char *), sizeof(zr_cidr_t), sizeof(uint16_t)};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (strcmp(key, fields[i].name))
			continue;
		return parse_list(w, key, v, fields[i].kind, elem[fields[i].kind], (void **)((char *)m + fields[i].off),
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
	if (untagged(w, item, "a match", NULL) != 0)
		return -1;
	return zr_yaml_map(w, item, match_field, &cl->matches[i]);
}

/* A list level of `rules` (the rules, a rule's clauses, a clause's
 * matches): null is an error, not the empty list, whose meaning
 * (ztunnel's) is spelled out in the message: no rules match nothing, an
 * empty rule or clause matches everything. */
static int rules_level(zr_yaml_walk_t *w, yaml_node_t *n, const char *what, const char *empty, size_t elem, void **out)
{
	if (zr_yaml_is_null(n))
		return zr_yaml_fail(w, n, "expected %s, got null (%s)", what, empty);
	if (!n || n->type != YAML_SEQUENCE_NODE)
		return zr_yaml_fail(w, n, "expected %s, got %s", what, zr_yaml_kind(n));
	if (untagged(w, n, what, NULL) != 0)
		return -1;
	size_t len = zr_yaml_len(n);
	if (len && !(*out = calloc(len, elem)))
		return zr_yaml_fail(w, n, "out of memory");
	return 0;
}

static int clause_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_policy_rule_t *r = ctx;
	zr_policy_clause_t *cl = &r->clauses[i];
	r->n_clauses = i + 1;
	if (rules_level(w, item, "a clause (a list of matches)", "[] is a clause that matches everything",
			sizeof(*cl->matches), (void **)&cl->matches) != 0)
		return -1;
	return zr_yaml_seq(w, item, match_item, cl);
}

static int rule_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_policy_t *pol = ctx;
	zr_policy_rule_t *r = &pol->rules[i];
	pol->n_rules = i + 1;
	if (rules_level(w, item, "a rule (a list of clauses)", "[] is a rule that matches everything",
			sizeof(*r->clauses), (void **)&r->clauses) != 0)
		return -1;
	return zr_yaml_seq(w, item, clause_item, r);
}

struct pol_ctx {
	zr_policy_t *pol;
	bool scope, action, rules;
};

static int policy_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	static const char *const scopes[] = {"Global", "Namespace", "WorkloadSelector", NULL};
	static const char *const actions[] = {"Allow", "Deny", NULL};
	struct pol_ctx *c = ctx;
	zr_policy_t *pol = c->pol;
	int idx;
	/* `action: !Deny Allow` has no one meaning: no tag anywhere here. */
	if (strcmp(key, "rules") && untagged(w, v, key, !strcmp(key, "dryRun") ? YAML_BOOL_TAG : NULL) != 0)
		return -1;
	if (!strcmp(key, "name"))
		return zr_yaml_str(w, v, &pol->name);
	if (!strcmp(key, "namespace"))
		return zr_yaml_str(w, v, &pol->namespace_);
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
		c->rules = true;
		if (rules_level(w, v, "a list of rules", "[] is no rules: the policy matches nothing",
				sizeof(*pol->rules), (void **)&pol->rules) != 0)
			return -1;
		return zr_yaml_seq(w, v, rule_item, pol);
	}
	return 1;
}

/* The node of item i of the list that holds `item` (the `policies` list):
 * looked for only to name the first of two duplicates. */
static const yaml_node_t *sibling(zr_yaml_walk_t *w, const yaml_node_t *item, size_t i, size_t j)
{
	yaml_node_item_t id = (yaml_node_item_t)(item - w->doc->nodes.start) + 1;
	for (yaml_node_t *n = w->doc->nodes.start; n < w->doc->nodes.top; n++)
		if (n->type == YAML_SEQUENCE_NODE && zr_yaml_len(n) > i && n->data.sequence.items.start[i] == id)
			return zr_yaml_node(w, n->data.sequence.items.start[j]);
	return NULL;
}

int zr_state_policy_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_state_t *st = ctx;
	struct pol_ctx c = {.pol = &st->policies[i]};
	st->n_policies = i + 1;
	if (!item || item->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(w, item, "expected a map, got %s", zr_yaml_kind(item));
	if (untagged(w, item, "a policy", NULL) != 0 || zr_yaml_map(w, item, policy_field, &c) != 0)
		return -1;
	/* A policy whose effect is unknown must not load as a default. All of
	 * these are required by ztunnel too (a Global policy has a namespace as
	 * well, the root namespace, which only names it). */
	const char *missing = !c.pol->name	 ? "name" :
			      !c.pol->namespace_ ? "namespace" :
			      !c.scope		 ? "scope" :
			      !c.action		 ? "action" :
			      !c.rules		 ? "rules" :
						   NULL;
	if (missing) {
		zr_yaml_push_key(w, missing);
		return zr_yaml_fail(w, item, "missing required key");
	}
	/* ztunnel keys policies by namespace/name and keeps the last one of a
	 * name; zring would apply both. Neither is what was meant. */
	for (size_t j = 0; j < i; j++) {
		const zr_policy_t *o = &st->policies[j];
		if (strcmp(o->name, c.pol->name) || strcmp(o->namespace_, c.pol->namespace_))
			continue;
		const yaml_node_t *first = sibling(w, item, i, j);
		return zr_yaml_fail(w, item,
				    "duplicate policy %s/%s: first at %s:%u (a name may be used once per namespace)",
				    c.pol->namespace_, c.pol->name, w->file ? w->file : "",
				    first ? (unsigned)first->start_mark.line + 1 : 0);
	}
	return 0;
}

static void free_string_matches(zr_string_match_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].value);
	free(v);
}

static void free_match(zr_policy_match_t *m)
{
	free_string_matches(m->namespaces, m->n_namespaces);
	free_string_matches(m->not_namespaces, m->n_not_namespaces);
	free_string_matches(m->principals, m->n_principals);
	free_string_matches(m->not_principals, m->n_not_principals);
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
