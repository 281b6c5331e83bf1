/* L4 authorization of inbound connections (SPEC "Authorization"): ztunnel's
 * semantics (src/state.rs assert_rbac, src/rbac.rs Authorization::matches)
 * over the policies of an immutable zr_state_t. Pure functions, any thread,
 * no allocation. */
#ifndef ZR_CORE_AUTHZ_H
#define ZR_CORE_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl/config-t.h"
#include "io/addr.h"

typedef struct zr_authz_request {
	const zr_workload_t *dst; /* destination workload (local); never NULL */
	/* Peer identity without "spiffe://" ("cluster.local/ns/default/sa/client"),
	 * or NULL for a plaintext connection (no identity). */
	const char *src_principal;
	/* The principal's namespace and service account (zr_authz_principal_split),
	 * or NULL; only read when src_principal is set. */
	const char *src_namespace;
	const char *src_service_account;
	zr_ip_t src_ip;
	zr_ip_t dst_ip;
	uint16_t dst_port;
} zr_authz_request_t;

typedef struct zr_authz_result {
	bool allowed;
	/* The matching DENY policy when denied by one, the matching ALLOW policy
	 * when allowed by one; NULL when the outcome comes from the absence of
	 * ALLOW policies (allow) or from none of them matching (deny). */
	const zr_policy_t *policy;
	/* Only when `allowed`: enforcing the dryRun policies too would deny.
	 * dry_run_policy is the dryRun DENY policy that matched, or NULL when it
	 * is because dryRun ALLOW policies exist and none matched. */
	bool dry_run_would_deny;
	const zr_policy_t *dry_run_policy;
} zr_authz_result_t;

/* Decides whether `req` may reach req->dst under st's policies and fills
 * `out` (pointers into `st`, valid while it lives). The policies that apply
 * are every Global one, the Namespace ones of dst's namespace, and those dst's
 * `authorizationPolicies` names ("namespace/name"). root_namespace is not
 * consulted (may be NULL): ztunnel keys Global policies under "" and applies
 * them to every workload, istiod having already given scope Global only to
 * root-namespace policies. */
void zr_authz_check(const zr_state_t *st, const char *root_namespace, const zr_authz_request_t *req,
		    zr_authz_result_t *out);

/* Splits a principal "td/ns/NS/sa/SA" (a leading "spiffe://" is accepted)
 * into NUL-terminated copies of NS and SA in the buffers given. Returns 0, or
 * -EINVAL when it has not exactly that shape (ztunnel's Identity::from_str)
 * or a part does not fit its buffer. */
int zr_authz_principal_split(const char *principal, char *ns, size_t ns_cap, char *sa, size_t sa_cap)
	__attribute__((warn_unused_result));

#endif
