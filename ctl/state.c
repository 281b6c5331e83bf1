/* Local state in ztunnel's LOCAL_XDS format (src/xds.rs LocalConfig:
 * workloads with a `services` map, services, policies — camelCase keys as
 * serde writes them), its derived fields and the lookup indexes. Every key
 * ztunnel's structs know is accepted and kept; the fields beyond addressing
 * are parsed in state-fields.c. */
#include <stdlib.h>
#include <string.h>

#include "ctl/config-int.h"
#include "ctl/config.h"
#include "ctl/state-index.h"

/* Service endpoints written inline in a service (ztunnel's EndpointSet),
 * applied to the named workloads once all of them are known. */
struct pending_ep {
	size_t svc;
	char *uid;
	zr_port_map_t *ports;
	size_t n_ports;
	zr_health_t status;
};

struct parse {
	zr_yaml_walk_t *w;
	const zr_config_t *cfg;
	zr_state_t *st;
	struct zr_state_index *idx;
	struct pending_ep *eps;
	size_t n_eps, cap_eps;
	yaml_node_t *wl_ips; /* current workload's workloadIps node */
	size_t cur;	     /* index of the workload / service being parsed */
};

/* --- shared pieces ---------------------------------------------------- */

/* "network/ip" (ztunnel's NetworkAddress) or a bare ip (network ""). */
static int network_ip(zr_yaml_walk_t *w, yaml_node_t *v, char **network, zr_ip_t *ip, const char *what)
{
	const char *s = zr_yaml_text(w, v);
	if (!s)
		return -1;
	const char *slash = strchr(s, '/');
	const char *addr = slash ? slash + 1 : s;
	if (zr_ip_parse(addr, ip) != 0)
		return zr_yaml_fail(w, v, "bad %s \"%s\"", what, s);
	if (network) {
		*network = strndup(s, slash ? (size_t)(slash - s) : 0);
		if (!*network)
			return zr_yaml_fail(w, v, "out of memory");
	}
	return 0;
}

static int set_default(zr_yaml_walk_t *w, char **field, const char *def)
{
	if (*field && **field)
		return 0;
	free(*field);
	*field = strdup(def ? def : "");
	return *field ? 0 : zr_yaml_fail(w, NULL, "out of memory");
}

/* --- workloads ---------------------------------------------------------- */

static int wl_ip_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_workload_t *wl = ctx;
	if (network_ip(w, item, NULL, &wl->ips[i], "IP address") != 0)
		return -1;
	const char *s = (const char *)item->data.scalar.value;
	if (strchr(s, '/'))
		return zr_yaml_fail(w, item, "bad IP address \"%s\"", s);
	wl->n_ips = i + 1;
	return 0;
}

static int wl_service_pair(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	zr_workload_t *wl = ctx;
	zr_workload_service_t *ws = &wl->services[wl->n_services];
	if (!strchr(key, '/'))
		return zr_yaml_fail(w, v, "service key must be \"namespace/hostname\"");
	if (!(ws->key = strdup(key)))
		return zr_yaml_fail(w, v, "out of memory");
	wl->n_services++;
	return zr_yaml_port_map(w, v, &ws->ports, &ws->n_ports);
}

static int workload_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	static const char *const protocols[] = {"TCP", "HBONE", NULL};
	/* xDS's TunnelProtocol spelling: NONE is plain TCP. */
	static const char *const tunnel_protocols[] = {"NONE", "HBONE", NULL};
	struct parse *p = ctx;
	zr_workload_t *wl = &p->st->workloads[p->cur];
	int idx;
	static const struct {
		const char *name;
		size_t off;
	} strs[] = {
		{"uid", offsetof(zr_workload_t, uid)},
		{"name", offsetof(zr_workload_t, name)},
		{"namespace", offsetof(zr_workload_t, namespace_)},
		{"serviceAccount", offsetof(zr_workload_t, service_account)},
		{"node", offsetof(zr_workload_t, node)},
		{"network", offsetof(zr_workload_t, network)},
		{"canonicalName", offsetof(zr_workload_t, canonical_name)},
		{"canonicalRevision", offsetof(zr_workload_t, canonical_revision)},
		{"clusterId", offsetof(zr_workload_t, cluster_id)},
		{"trustDomain", offsetof(zr_workload_t, trust_domain)},
	};
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		if (!strcmp(key, strs[i].name))
			return zr_yaml_str_opt(w, v, (char **)((char *)wl + strs[i].off));

	if (!strcmp(key, "workloadIps")) {
		size_t n = v && v->type == YAML_SEQUENCE_NODE ? zr_yaml_len(v) : 0;
		free(wl->ips);
		wl->n_ips = 0;
		if (n && !(wl->ips = calloc(n, sizeof(*wl->ips))))
			return zr_yaml_fail(w, v, "out of memory");
		p->wl_ips = v;
		return zr_yaml_seq(w, v, wl_ip_item, wl);
	}
	if (!strcmp(key, "protocol")) {
		if (zr_yaml_enum(w, v, "protocol", protocols, &idx) != 0)
			return -1;
		wl->protocol = idx ? ZR_PROTO_HBONE : ZR_PROTO_TCP;
		return 0;
	}
	if (!strcmp(key, "tunnelProtocol")) {
		if (zr_yaml_enum(w, v, "protocol", tunnel_protocols, &idx) != 0)
			return -1;
		wl->protocol = idx ? ZR_PROTO_HBONE : ZR_PROTO_TCP;
		return 0;
	}
	if (!strcmp(key, "services")) {
		size_t n = v && v->type == YAML_MAPPING_NODE ? zr_yaml_len(v) : 0;
		if (wl->n_services)
			return zr_yaml_fail(w, v, "duplicate key");
		if (n && !(wl->services = calloc(n, sizeof(*wl->services))))
			return zr_yaml_fail(w, v, "out of memory");
		return zr_yaml_map(w, v, wl_service_pair, wl);
	}
	if (!strcmp(key, "authorizationPolicies"))
		return zr_yaml_str_list(w, v, &wl->authorization_policies, &wl->n_authorization_policies);
	return zr_state_workload_extra(w, key, v, wl);
}

static int derive_workload(zr_yaml_walk_t *w, struct parse *p, zr_workload_t *wl, yaml_node_t *item)
{
	const zr_config_t *cfg = p->cfg;
	if (!wl->namespace_) {
		size_t old = zr_yaml_push_key(w, "namespace");
		zr_yaml_fail(w, item, "missing required key");
		zr_yaml_pop(w, old);
		return -1;
	}
	if (set_default(w, &wl->trust_domain, cfg->trust_domain) || set_default(w, &wl->cluster_id, cfg->cluster_id) ||
	    set_default(w, &wl->service_account, "default") || set_default(w, &wl->uid, NULL) ||
	    set_default(w, &wl->name, NULL) || set_default(w, &wl->node, NULL) || set_default(w, &wl->network, NULL) ||
	    set_default(w, &wl->canonical_name, NULL) || set_default(w, &wl->canonical_revision, NULL))
		return -1;
	wl->local = wl->node[0] && cfg->node && !strcmp(wl->node, cfg->node);
	if (asprintf(&wl->identity, "spiffe://%s/ns/%s/sa/%s", wl->trust_domain, wl->namespace_, wl->service_account) <
	    0) {
		wl->identity = NULL;
		return zr_yaml_fail(w, item, "out of memory");
	}
	/* Same IP twice on one network is ambiguous; ztunnel keys by network/ip. */
	for (size_t i = 0; i < wl->n_ips; i++) {
		size_t other;
		if (zr_state_index_ip_find(&p->idx->wl_by_ip, &wl->ips[i], wl->network, &other)) {
			size_t old = zr_yaml_push_key(w, "workloadIps");
			zr_yaml_push_index(w, i);
			zr_yaml_fail(w, zr_yaml_node(w, p->wl_ips->data.sequence.items.start[i]),
				     "duplicate workload IP (also workloads[%zu])", other);
			zr_yaml_pop(w, old);
			return -1;
		}
		if (zr_state_index_ip_add(&p->idx->wl_by_ip, &wl->ips[i], wl->network, (uint32_t)p->cur) != 0)
			return zr_yaml_fail(w, item, "out of memory");
	}
	return 0;
}

static int workload_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	struct parse *p = ctx;
	p->cur = i;
	p->wl_ips = NULL;
	p->st->n_workloads = i + 1;
	if (!item || item->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(w, item, "expected a map, got %s", zr_yaml_kind(item));
	if (zr_state_fields_defaults(w, &p->st->workloads[i]) != 0 || zr_yaml_map(w, item, workload_field, p) != 0)
		return -1;
	return derive_workload(w, p, &p->st->workloads[i], item);
}

/* --- services ----------------------------------------------------------- */

static int vip_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_service_t *svc = ctx;
	zr_vip_t *vip = &svc->vips[i];
	if (network_ip(w, item, &vip->network, &vip->ip, "VIP") != 0)
		return -1;
	svc->n_vips = i + 1;
	return 0;
}

struct ep_ctx {
	struct parse *p;
	struct pending_ep ep;
};

static int endpoint_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct ep_ctx *c = ctx;
	if (!strcmp(key, "workloadUid"))
		return zr_yaml_str(w, v, &c->ep.uid);
	if (!strcmp(key, "port"))
		return zr_yaml_port_map(w, v, &c->ep.ports, &c->ep.n_ports);
	if (!strcmp(key, "status"))
		return zr_state_health(w, v, &c->ep.status);
	return 1;
}

static int endpoint_pair(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct parse *p = ctx;
	struct ep_ctx c = {.p = p, .ep = {.svc = p->cur}};
	if (zr_yaml_map(w, v, endpoint_field, &c) != 0)
		goto fail;
	if (!c.ep.uid && !(c.ep.uid = strdup(key)))
		goto fail;
	if (p->n_eps == p->cap_eps) {
		size_t cap = p->cap_eps ? p->cap_eps * 2 : 16;
		struct pending_ep *n = realloc(p->eps, cap * sizeof(*n));
		if (!n)
			goto fail;
		p->eps = n;
		p->cap_eps = cap;
	}
	p->eps[p->n_eps++] = c.ep;
	return 0;
fail:
	free(c.ep.uid);
	free(c.ep.ports);
	return w->err->message[0] ? -1 : zr_yaml_fail(w, v, "out of memory");
}

static int service_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct parse *p = ctx;
	zr_service_t *svc = &p->st->services[p->cur];
	if (!strcmp(key, "name"))
		return zr_yaml_str_opt(w, v, &svc->name);
	if (!strcmp(key, "namespace"))
		return zr_yaml_str(w, v, &svc->namespace_);
	if (!strcmp(key, "hostname"))
		return zr_yaml_str(w, v, &svc->hostname);
	if (!strcmp(key, "vips")) {
		size_t n = v && v->type == YAML_SEQUENCE_NODE ? zr_yaml_len(v) : 0;
		if (n && !(svc->vips = calloc(n, sizeof(*svc->vips))))
			return zr_yaml_fail(w, v, "out of memory");
		return zr_yaml_seq(w, v, vip_item, svc);
	}
	if (!strcmp(key, "ports"))
		return zr_yaml_port_map(w, v, &svc->ports, &svc->n_ports);
	if (!strcmp(key, "subjectAltNames"))
		return zr_yaml_str_list(w, v, &svc->subject_alt_names, &svc->n_subject_alt_names);
	if (!strcmp(key, "endpoints"))
		return zr_yaml_map(w, v, endpoint_pair, p);
	return zr_state_service_extra(w, key, v, svc);
}

static int service_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	struct parse *p = ctx;
	zr_service_t *svc = &p->st->services[i];
	p->cur = i;
	p->st->n_services = i + 1;
	if (!item || item->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(w, item, "expected a map, got %s", zr_yaml_kind(item));
	if (zr_yaml_map(w, item, service_field, p) != 0)
		return -1;
	const char *missing = !svc->namespace_ ? "namespace" : !svc->hostname ? "hostname" : NULL;
	if (missing) {
		zr_yaml_push_key(w, missing);
		return zr_yaml_fail(w, item, "missing required key");
	}
	if (set_default(w, &svc->name, NULL) != 0)
		return -1;
	if (asprintf(&svc->key, "%s/%s", svc->namespace_, svc->hostname) < 0) {
		svc->key = NULL;
		return zr_yaml_fail(w, item, "out of memory");
	}
	size_t other;
	if (zr_state_index_str_find(&p->idx->svc_by_key, svc->key, &other))
		return zr_yaml_fail(w, item, "duplicate service %s (also services[%zu])", svc->key, other);
	if (zr_state_index_str_add(&p->idx->svc_by_key, svc->key, (uint32_t)i) != 0 ||
	    (!zr_state_index_str_find(&p->idx->svc_by_host, svc->hostname, &other) &&
	     zr_state_index_str_add(&p->idx->svc_by_host, svc->hostname, (uint32_t)i) != 0))
		return zr_yaml_fail(w, item, "out of memory");
	for (size_t v = 0; v < svc->n_vips; v++) {
		/* Same network/ip twice is ambiguous; across networks the lookup by
		 * VIP returns the first. */
		if (zr_state_index_ip_find(&p->idx->svc_by_vip, &svc->vips[v].ip, svc->vips[v].network, &other)) {
			zr_yaml_push_key(w, "vips");
			zr_yaml_push_index(w, v);
			return zr_yaml_fail(w, item, "VIP already used by services[%zu]", other);
		}
		if (zr_state_index_ip_add(&p->idx->svc_by_vip, &svc->vips[v].ip, svc->vips[v].network, (uint32_t)i) !=
		    0)
			return zr_yaml_fail(w, item, "out of memory");
	}
	return 0;
}

/* Endpoints: workloads naming a service in their `services` map, plus the
 * service's own `endpoints` (folded into the workload's map first so that
 * zr_service_target_port sees their port overrides too). */
static int derive_endpoints(zr_yaml_walk_t *w, struct parse *p)
{
	zr_state_t *st = p->st;
	for (size_t e = 0; e < p->n_eps; e++) {
		struct pending_ep *ep = &p->eps[e];
		zr_service_t *svc = &st->services[ep->svc];
		for (size_t i = 0; i < st->n_workloads; i++) {
			zr_workload_t *wl = &st->workloads[i];
			if (strcmp(wl->uid, ep->uid))
				continue;
			bool listed = false;
			for (size_t s = 0; s < wl->n_services; s++) {
				if (strcmp(wl->services[s].key, svc->key))
					continue;
				listed = true;
				if (ep->status == ZR_UNHEALTHY)
					wl->services[s].status = ZR_UNHEALTHY;
			}
			if (listed)
				break;
			zr_workload_service_t *ns = realloc(wl->services, (wl->n_services + 1) * sizeof(*ns));
			if (!ns)
				return zr_yaml_fail(w, NULL, "out of memory");
			wl->services = ns;
			ns[wl->n_services] = (zr_workload_service_t){.key = strdup(svc->key),
								     .ports = ep->ports,
								     .n_ports = ep->n_ports,
								     .status = ep->status};
			ep->ports = NULL;
			if (!ns[wl->n_services++].key)
				return zr_yaml_fail(w, NULL, "out of memory");
			break;
		}
	}
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < st->n_workloads; i++) {
			zr_workload_t *wl = &st->workloads[i];
			for (size_t s = 0; s < wl->n_services; s++) {
				size_t si;
				if (!zr_state_index_str_find(&p->idx->svc_by_key, wl->services[s].key, &si))
					continue;
				zr_service_t *svc = &st->services[si];
				if (!zr_state_lb_candidate(svc, wl, &wl->services[s]))
					continue;
				if (pass == 0)
					svc->n_endpoints++;
				else
					svc->endpoints[svc->n_endpoints++] = i;
			}
		}
		if (pass == 1)
			break;
		for (size_t si = 0; si < st->n_services; si++) {
			zr_service_t *svc = &st->services[si];
			if (svc->n_endpoints && !(svc->endpoints = calloc(svc->n_endpoints, sizeof(size_t))))
				return zr_yaml_fail(w, NULL, "out of memory");
			svc->n_endpoints = 0;
		}
	}
	return 0;
}

/* --- top level ------------------------------------------------------------ */

static int state_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct parse *p = ctx;
	zr_state_t *st = p->st;
	size_t n = v && v->type == YAML_SEQUENCE_NODE ? zr_yaml_len(v) : 0;
	/* `policies: ~` (a template that rendered nothing) must not read as "no
	 * policies", which allows everything; ztunnel refuses a null list too. */
	if ((!strcmp(key, "workloads") || !strcmp(key, "services") || !strcmp(key, "policies")) && zr_yaml_is_null(v))
		return zr_yaml_fail(w, v, "expected a list, got null (write [] for none)");
	if (!strcmp(key, "workloads")) {
		if (n && !(st->workloads = calloc(n, sizeof(*st->workloads))))
			return zr_yaml_fail(w, v, "out of memory");
		return zr_yaml_seq(w, v, workload_item, p);
	}
	if (!strcmp(key, "services")) {
		if (n && !(st->services = calloc(n, sizeof(*st->services))))
			return zr_yaml_fail(w, v, "out of memory");
		return zr_yaml_seq(w, v, service_item, p);
	}
	if (!strcmp(key, "policies")) {
		if (n && !(st->policies = calloc(n, sizeof(*st->policies))))
			return zr_yaml_fail(w, v, "out of memory");
		return zr_yaml_seq(w, v, zr_state_policy_item, st);
	}
	return 1;
}

int zr_state_parse(zr_yaml_walk_t *w, yaml_node_t *root, const zr_config_t *cfg, zr_state_t *st)
{
	struct parse p = {.w = w, .cfg = cfg, .st = st};
	int rc;
	if (!(st->index = p.idx = calloc(1, sizeof(*p.idx))))
		return zr_yaml_fail(w, root, "out of memory");
	if (root && !zr_yaml_is_null(root) && root->type != YAML_MAPPING_NODE)
		rc = zr_yaml_fail(w, root, "expected a map of workloads, services and policies, got %s",
				  zr_yaml_kind(root));
	else
		rc = zr_yaml_map(w, root, state_field, &p);
	if (rc == 0)
		rc = derive_endpoints(w, &p);
	if (rc == 0)
		zr_state_warn_unimplemented(st);
	for (size_t i = 0; i < p.n_eps; i++) {
		free(p.eps[i].uid);
		free(p.eps[i].ports);
	}
	free(p.eps);
	return rc;
}

static void free_workload(zr_workload_t *wl)
{
	free(wl->uid);
	free(wl->name);
	free(wl->namespace_);
	free(wl->service_account);
	free(wl->node);
	free(wl->network);
	free(wl->canonical_name);
	free(wl->canonical_revision);
	free(wl->cluster_id);
	free(wl->trust_domain);
	free(wl->ips);
	for (size_t i = 0; i < wl->n_services; i++) {
		free(wl->services[i].key);
		free(wl->services[i].ports);
	}
	free(wl->services);
	zr_yaml_free_strv(wl->authorization_policies, wl->n_authorization_policies);
	zr_state_workload_extra_free(wl);
	free(wl->identity);
}

static void free_service(zr_service_t *svc)
{
	free(svc->name);
	free(svc->namespace_);
	free(svc->hostname);
	free(svc->key);
	for (size_t i = 0; i < svc->n_vips; i++)
		free(svc->vips[i].network);
	free(svc->vips);
	free(svc->ports);
	zr_yaml_free_strv(svc->subject_alt_names, svc->n_subject_alt_names);
	zr_state_service_extra_free(svc);
	free(svc->endpoints);
}

void zr_state_free(zr_state_t *st)
{
	for (size_t i = 0; i < st->n_workloads; i++)
		free_workload(&st->workloads[i]);
	free(st->workloads);
	for (size_t i = 0; i < st->n_services; i++)
		free_service(&st->services[i]);
	free(st->services);
	for (size_t i = 0; i < st->n_policies; i++)
		zr_state_policy_free(&st->policies[i]);
	free(st->policies);
	zr_state_index_free(st->index);
	memset(st, 0, sizeof(*st));
}

/* --- lookups ---------------------------------------------------------------- */

const zr_workload_t *zr_state_workload_by_ip(const zr_state_t *st, const zr_ip_t *ip)
{
	const struct zr_state_index *idx = st->index;
	size_t i;
	if (!idx || !zr_state_index_ip_find(&idx->wl_by_ip, ip, NULL, &i))
		return NULL;
	return &st->workloads[i];
}

const zr_service_t *zr_state_service_by_vip(const zr_state_t *st, const zr_ip_t *ip)
{
	const struct zr_state_index *idx = st->index;
	size_t i;
	if (!idx || !zr_state_index_ip_find(&idx->svc_by_vip, ip, NULL, &i))
		return NULL;
	return &st->services[i];
}

const zr_service_t *zr_state_service_by_hostname(const zr_state_t *st, const char *hostname)
{
	const struct zr_state_index *idx = st->index;
	size_t i;
	if (!idx || !hostname || !zr_state_index_str_find(&idx->svc_by_host, hostname, &i))
		return NULL;
	return &st->services[i];
}

uint16_t zr_service_target_port(const zr_service_t *svc, const zr_workload_t *endpoint, uint16_t port)
{
	/* ztunnel (state.rs): the endpoint's own mapping first, then the service's. */
	for (size_t s = 0; endpoint && s < endpoint->n_services; s++) {
		const zr_workload_service_t *ws = &endpoint->services[s];
		if (strcmp(ws->key, svc->key))
			continue;
		for (size_t i = 0; i < ws->n_ports; i++)
			if (ws->ports[i].port == port && ws->ports[i].target)
				return ws->ports[i].target;
		break;
	}
	for (size_t i = 0; i < svc->n_ports; i++)
		if (svc->ports[i].port == port)
			return svc->ports[i].target;
	return 0;
}
