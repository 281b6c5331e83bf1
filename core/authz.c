/* ztunnel's L4 authorization, line for line where it matters: the policy
 * selection and DENY/ALLOW order of src/state.rs assert_rbac, and the
 * rule/clause/match walk of src/rbac.rs Authorization::matches. */
#include <errno.h>
#include <string.h>

#include "core/authz.h"

/* ztunnel's StringMatch::matches. The kind was fixed when the policy was
 * read; the value is literal ('*' is a character like any other). */
static bool string_matches(const zr_string_match_t *m, const char *s)
{
	size_t slen = strlen(s);
	switch (m->kind) {
	case ZR_STRING_EXACT:
		return slen == m->len && !memcmp(s, m->value, slen);
	case ZR_STRING_PREFIX:
		return slen >= m->len && !memcmp(s, m->value, m->len);
	case ZR_STRING_SUFFIX:
		return slen >= m->len && !memcmp(s + slen - m->len, m->value, m->len);
	case ZR_STRING_PRESENCE:
		return slen > 0; /* an empty value is absent */
	}
	return false;
}

/* matches_principal(): the peer's identity without "spiffe://" (as the
 * request carries it; a Prefix or Suffix applies to that form). With no
 * identity there is nothing to strip and it fails for every kind, Presence
 * and Exact("") included. */
static bool principal_matches(const zr_string_match_t *m, const zr_authz_request_t *req)
{
	return req->src_principal && string_matches(m, req->src_principal);
}

/* ztunnel matches namespaces against the identity's namespace, "" when the
 * connection has none. */
static const char *src_namespace(const zr_authz_request_t *req)
{
	return req->src_principal && req->src_namespace ? req->src_namespace : "";
}

/* ServiceAccountMatch compares namespace and service account exactly (no
 * wildcards, trust domain ignored) and never matches without an identity. */
static bool service_account_matches(const char *ns_sa, const zr_authz_request_t *req)
{
	if (!req->src_principal)
		return false;
	const char *ns = src_namespace(req);
	const char *sa = req->src_service_account ? req->src_service_account : "";
	size_t ns_len = strlen(ns);
	return !strncmp(ns_sa, ns, ns_len) && ns_sa[ns_len] == '/' && !strcmp(ns_sa + ns_len + 1, sa);
}

static bool cidr_list_matches(const zr_cidr_t *cidrs, size_t n, const zr_ip_t *ip)
{
	for (size_t i = 0; i < n; i++)
		if (zr_ip_in_cidr(ip, &cidrs[i].ip, cidrs[i].prefix_len))
			return true;
	return false;
}

static bool port_list_matches(const uint16_t *ports, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (ports[i] == port)
			return true;
	return false;
}

static bool string_list_matches(const zr_string_match_t *list, size_t n, bool principal, const zr_authz_request_t *req)
{
	for (size_t i = 0; i < n; i++)
		if (principal ? principal_matches(&list[i], req) : string_matches(&list[i], src_namespace(req)))
			return true;
	return false;
}

static bool sa_list_matches(char *const *list, size_t n, const zr_authz_request_t *req)
{
	for (size_t i = 0; i < n; i++)
		if (service_account_matches(list[i], req))
			return true;
	return false;
}

/* matches_internal(): an empty positive list accepts anything, an empty
 * negative list excludes nothing. */
#define LIST_OK(n_pos, pos_hit, n_neg, neg_hit) (((n_pos) == 0 || (pos_hit)) && ((n_neg) == 0 || !(neg_hit)))

static bool match_is_empty(const zr_policy_match_t *m)
{
	return !(m->n_namespaces || m->n_not_namespaces || m->n_principals || m->n_not_principals ||
		 m->n_service_accounts || m->n_not_service_accounts || m->n_source_ips || m->n_not_source_ips ||
		 m->n_destination_ips || m->n_not_destination_ips || m->n_destination_ports ||
		 m->n_not_destination_ports);
}

static bool match_matches(const zr_policy_match_t *m, const zr_authz_request_t *req)
{
	/* ztunnel skips an empty match (`if mg.is_empty() { continue }`)
	 * instead of letting it match everything: a match all of whose entries
	 * were dropped as unparseable must not widen the policy. */
	if (match_is_empty(m))
		return false;
	return LIST_OK(m->n_destination_ips, cidr_list_matches(m->destination_ips, m->n_destination_ips, &req->dst_ip),
		       m->n_not_destination_ips,
		       cidr_list_matches(m->not_destination_ips, m->n_not_destination_ips, &req->dst_ip)) &&
	       LIST_OK(m->n_source_ips, cidr_list_matches(m->source_ips, m->n_source_ips, &req->src_ip),
		       m->n_not_source_ips, cidr_list_matches(m->not_source_ips, m->n_not_source_ips, &req->src_ip)) &&
	       LIST_OK(m->n_destination_ports,
		       port_list_matches(m->destination_ports, m->n_destination_ports, req->dst_port),
		       m->n_not_destination_ports,
		       port_list_matches(m->not_destination_ports, m->n_not_destination_ports, req->dst_port)) &&
	       LIST_OK(m->n_service_accounts, sa_list_matches(m->service_accounts, m->n_service_accounts, req),
		       m->n_not_service_accounts,
		       sa_list_matches(m->not_service_accounts, m->n_not_service_accounts, req)) &&
	       LIST_OK(m->n_principals, string_list_matches(m->principals, m->n_principals, true, req),
		       m->n_not_principals, string_list_matches(m->not_principals, m->n_not_principals, true, req)) &&
	       LIST_OK(m->n_namespaces, string_list_matches(m->namespaces, m->n_namespaces, false, req),
		       m->n_not_namespaces, string_list_matches(m->not_namespaces, m->n_not_namespaces, false, req));
}

static bool policy_matches(const zr_policy_t *pol, const zr_authz_request_t *req)
{
	/* No rules matches nothing: an ALLOW without rules denies all, a DENY
	 * without rules denies nothing. A rule without clauses, and a clause
	 * without matches, on the other hand match everything. */
	for (size_t r = 0; r < pol->n_rules; r++) {
		const zr_policy_rule_t *rule = &pol->rules[r];
		bool rule_match = true;
		for (size_t c = 0; c < rule->n_clauses && rule_match; c++) {
			const zr_policy_clause_t *cl = &rule->clauses[c];
			bool clause_match = cl->n_matches == 0;
			for (size_t i = 0; i < cl->n_matches && !clause_match; i++)
				clause_match = match_matches(&cl->matches[i], req);
			rule_match = clause_match;
		}
		if (rule_match)
			return true;
	}
	return false;
}

static bool names_policy(const char *key, const zr_policy_t *pol)
{
	size_t ns_len = strlen(pol->namespace_);
	return !strncmp(key, pol->namespace_, ns_len) && key[ns_len] == '/' && !strcmp(key + ns_len + 1, pol->name);
}

/* assert_rbac's selection: policies_by_namespace[""] (Global, whatever the
 * policy's own namespace), policies_by_namespace[wl.namespace] (Namespace),
 * and every policy keyed "namespace/name" in wl.authorization_policies —
 * looked up by key whatever its scope. */
static bool policy_applies(const zr_policy_t *pol, const zr_workload_t *wl)
{
	if (pol->scope == ZR_SCOPE_GLOBAL)
		return true;
	if (pol->scope == ZR_SCOPE_NAMESPACE && !strcmp(pol->namespace_, wl->namespace_))
		return true;
	for (size_t i = 0; i < wl->n_authorization_policies; i++)
		if (names_policy(wl->authorization_policies[i], pol))
			return true;
	return false;
}

void zr_authz_check(const zr_state_t *st, const char *root_namespace, const zr_authz_request_t *req,
		    zr_authz_result_t *out)
{
	const zr_policy_t *deny = NULL, *allow = NULL, *dry_deny = NULL;
	size_t n_allow = 0, n_dry_allow = 0;
	bool dry_allow_matched = false;

	(void)root_namespace;
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < st->n_policies; i++) {
		const zr_policy_t *pol = &st->policies[i];
		if (!policy_applies(pol, req->dst))
			continue;
		if (pol->action == ZR_ACTION_DENY && !pol->dry_run) {
			if (policy_matches(pol, req)) {
				/* Denied: nothing left could change the outcome, and
				 * dry-run verdicts are only reported for allowed
				 * connections. */
				deny = pol;
				break;
			}
		} else if (pol->action == ZR_ACTION_DENY) {
			if (!dry_deny && policy_matches(pol, req))
				dry_deny = pol;
		} else if (!pol->dry_run) {
			n_allow++;
			if (!allow && policy_matches(pol, req))
				allow = pol;
		} else {
			n_dry_allow++;
			if (!dry_allow_matched)
				dry_allow_matched = policy_matches(pol, req);
		}
	}

	if (deny) {
		out->policy = deny;
		return;
	}
	/* "If there are no ALLOW policies for the workload, allow the request";
	 * "if any of the ALLOW policies match the request, allow the request." */
	out->allowed = n_allow == 0 || allow;
	out->policy = allow;
	if (!out->allowed)
		return;
	if (dry_deny) {
		out->dry_run_would_deny = true;
		out->dry_run_policy = dry_deny;
	} else if (n_allow == 0 && n_dry_allow > 0 && !dry_allow_matched) {
		out->dry_run_would_deny = true; /* ztunnel: "dry-run: no allow policies match" */
	}
}

int zr_authz_principal_split(const char *principal, char *ns, size_t ns_cap, char *sa, size_t sa_cap)
{
	static const char spiffe[] = "spiffe://";
	const char *part[5];
	size_t len[5];
	size_t n = 0;

	if (!principal)
		return -EINVAL;
	if (!strncmp(principal, spiffe, sizeof(spiffe) - 1))
		principal += sizeof(spiffe) - 1;
	/* Exactly five '/'-separated parts, as ztunnel's Identity::from_str. */
	for (const char *p = principal;; p++) {
		const char *slash = strchr(p, '/');
		if (n == 5)
			return -EINVAL;
		part[n] = p;
		len[n] = slash ? (size_t)(slash - p) : strlen(p);
		n++;
		if (!slash)
			break;
		p = slash;
	}
	if (n != 5 || len[1] != 2 || memcmp(part[1], "ns", 2) || len[3] != 2 || memcmp(part[3], "sa", 2))
		return -EINVAL;
	if (len[2] >= ns_cap || len[4] >= sa_cap)
		return -EINVAL;
	memcpy(ns, part[2], len[2]);
	ns[len[2]] = '\0';
	memcpy(sa, part[4], len[4]);
	sa[len[4]] = '\0';
	return 0;
}
