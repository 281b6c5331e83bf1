/* The local-state fields beyond addressing (ztunnel's Workload and Service
 * of src/state/workload.rs and service.rs): health, capacity, locality,
 * gateways, application tunnel, load balancer, CIDR VIPs, visibility. All
 * are kept in the state and shown in /config_dump; the ones that would change
 * where traffic goes and that zring does not act on yet are named in one
 * warning per object at each load (zr_state_warn_unimplemented), so that no
 * waypoint or gateway the user configured is bypassed silently. */
#include <stdlib.h>
#include <string.h>

#include "ctl/config-int.h"
#include "io/log.h"

static const char *const health_names[] = {"Healthy", "Unhealthy", NULL};

int zr_state_health(zr_yaml_walk_t *w, yaml_node_t *v, zr_health_t *out)
{
	int idx;
	if (zr_yaml_enum(w, v, "health status", health_names, &idx) != 0)
		return -1;
	*out = idx ? ZR_UNHEALTHY : ZR_HEALTHY;
	return 0;
}

static int set_str(zr_yaml_walk_t *w, yaml_node_t *v, char **out)
{
	/* null keeps "" (set by zr_state_fields_defaults) */
	return zr_yaml_is_null(v) ? 0 : zr_yaml_str(w, v, out);
}

/* --- GatewayAddress -------------------------------------------------------- */

static void gateway_free(zr_gateway_t *g)
{
	free(g->network);
	free(g->namespace_);
	free(g->hostname);
	memset(g, 0, sizeof(*g));
}

static int gateway_service_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	zr_gateway_t *g = ctx;
	if (!strcmp(key, "namespace"))
		return zr_yaml_str(w, v, &g->namespace_);
	if (!strcmp(key, "hostname"))
		return zr_yaml_str(w, v, &g->hostname);
	return 1;
}

/* ztunnel's untagged Destination: "network/ip" when the part after the first
 * '/' is an IP, else "namespace/hostname". Also a {namespace, hostname} map. */
static int gateway_destination(zr_yaml_walk_t *w, yaml_node_t *v, zr_gateway_t *g)
{
	if (v && v->type == YAML_MAPPING_NODE) {
		g->is_service = true;
		if (zr_yaml_map(w, v, gateway_service_field, g) != 0)
			return -1;
		if (!g->namespace_ || !g->hostname || !g->hostname[0])
			return zr_yaml_fail(w, v, "want {namespace: ..., hostname: ...}");
		return 0;
	}
	const char *s = zr_yaml_is_null(v) ? NULL : zr_yaml_text(w, v);
	if (!s)
		return w->err->message[0] ? -1 : zr_yaml_fail(w, v, "expected a string, got null");
	const char *slash = strchr(s, '/');
	if (!slash || !slash[1])
		return zr_yaml_fail(w, v, "bad destination \"%s\" (want \"network/ip\" or \"namespace/hostname\")", s);
	char *left = strndup(s, (size_t)(slash - s)), *right = strdup(slash + 1);
	if (!left || !right) {
		free(left);
		free(right);
		return zr_yaml_fail(w, v, "out of memory");
	}
	if (zr_ip_parse(right, &g->ip) == 0) {
		g->network = left;
		free(right);
	} else {
		g->is_service = true;
		g->namespace_ = left;
		g->hostname = right;
	}
	return 0;
}

static int gateway_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	zr_gateway_t *g = ctx;
	if (!strcmp(key, "destination"))
		return gateway_destination(w, v, g);
	if (!strcmp(key, "hboneMtlsPort"))
		return zr_yaml_port(w, v, true, &g->hbone_mtls_port);
	return 1;
}

/* null = unset; hboneMtlsPort defaults to 15008 where a file leaves it out. */
static int gateway(zr_yaml_walk_t *w, yaml_node_t *v, zr_gateway_t *g)
{
	gateway_free(g);
	if (zr_yaml_is_null(v))
		return 0;
	if (v->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(w, v, "expected a map {destination, hboneMtlsPort}, got %s", zr_yaml_kind(v));
	g->hbone_mtls_port = 15008;
	if (zr_yaml_map(w, v, gateway_field, g) != 0)
		return -1;
	if (!g->network && !g->namespace_) {
		size_t old = zr_yaml_push_key(w, "destination");
		zr_yaml_fail(w, v, "missing required key");
		zr_yaml_pop(w, old);
		return -1;
	}
	g->set = true;
	return 0;
}

/* --- workload fields --------------------------------------------------------- */

static int locality_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	zr_locality_t *l = ctx;
	if (!strcmp(key, "region"))
		return set_str(w, v, &l->region);
	if (!strcmp(key, "zone"))
		return set_str(w, v, &l->zone);
	if (!strcmp(key, "subzone"))
		return set_str(w, v, &l->subzone);
	return 1;
}

static int app_tunnel_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	static const char *const protos[] = {"NONE", "PROXY", NULL};
	zr_app_tunnel_t *t = ctx;
	int idx;
	if (!strcmp(key, "protocol")) {
		if (zr_yaml_enum(w, v, "application tunnel protocol", protos, &idx) != 0)
			return -1;
		t->protocol = idx ? ZR_APP_TUNNEL_PROXY : ZR_APP_TUNNEL_NONE;
		return 0;
	}
	if (!strcmp(key, "port"))
		return zr_yaml_is_null(v) ? 0 : zr_yaml_port(w, v, true, &t->port);
	return 1;
}

static int app_tunnel(zr_yaml_walk_t *w, yaml_node_t *v, zr_app_tunnel_t *t)
{
	memset(t, 0, sizeof(*t));
	if (zr_yaml_is_null(v))
		return 0;
	if (zr_yaml_map(w, v, app_tunnel_field, t) != 0)
		return -1;
	t->set = true;
	return 0;
}

int zr_state_fields_defaults(zr_yaml_walk_t *w, zr_workload_t *wl)
{
	char **strs[] = {&wl->workload_name,   &wl->workload_type, &wl->hostname,
			 &wl->locality.region, &wl->locality.zone, &wl->locality.subzone};
	wl->capacity = 1;
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		if (!(*strs[i] = strdup("")))
			return zr_yaml_fail(w, NULL, "out of memory");
	return 0;
}

int zr_state_workload_extra(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, zr_workload_t *wl)
{
	static const char *const network_modes[] = {"Standard", "HostNetwork", NULL};
	int idx;
	uint64_t u;
	if (!strcmp(key, "workloadName"))
		return set_str(w, v, &wl->workload_name);
	/* A free string in ztunnel's local mode (xDS gives deployment, cronjob,
	 * pod or job): kept as written. */
	if (!strcmp(key, "workloadType"))
		return set_str(w, v, &wl->workload_type);
	if (!strcmp(key, "hostname"))
		return set_str(w, v, &wl->hostname);
	if (!strcmp(key, "status"))
		return zr_state_health(w, v, &wl->status);
	if (!strcmp(key, "capacity")) {
		if (zr_yaml_uint(w, v, 0, UINT32_MAX, &u) != 0)
			return -1;
		wl->capacity = (uint32_t)u;
		return 0;
	}
	if (!strcmp(key, "locality"))
		return zr_yaml_map(w, v, locality_field, &wl->locality);
	if (!strcmp(key, "networkMode")) {
		if (zr_yaml_enum(w, v, "network mode", network_modes, &idx) != 0)
			return -1;
		wl->network_mode = idx ? ZR_NETWORK_HOST : ZR_NETWORK_STANDARD;
		return 0;
	}
	if (!strcmp(key, "nativeTunnel"))
		return zr_yaml_bool(w, v, &wl->native_tunnel);
	if (!strcmp(key, "waypoint"))
		return gateway(w, v, &wl->waypoint);
	if (!strcmp(key, "networkGateway"))
		return gateway(w, v, &wl->network_gateway);
	if (!strcmp(key, "applicationTunnel"))
		return app_tunnel(w, v, &wl->application_tunnel);
	return 1;
}

void zr_state_workload_extra_free(zr_workload_t *wl)
{
	free(wl->workload_name);
	free(wl->workload_type);
	free(wl->hostname);
	free(wl->locality.region);
	free(wl->locality.zone);
	free(wl->locality.subzone);
	gateway_free(&wl->waypoint);
	gateway_free(&wl->network_gateway);
}

/* --- service fields ------------------------------------------------------------ */

struct cidr_ctx {
	zr_cidr_vip_t *c;
	bool have_cidr;
};

static int cidr_vip_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	struct cidr_ctx *c = ctx;
	if (!strcmp(key, "network"))
		return zr_yaml_is_null(v) ? 0 : zr_yaml_str(w, v, &c->c->network);
	if (!strcmp(key, "cidr")) {
		const char *s = zr_yaml_text(w, v);
		if (!s)
			return -1;
		if (zr_cidr_parse(s, &c->c->ip, &c->c->prefix_len) != 0)
			return zr_yaml_fail(w, v, "bad CIDR \"%s\"", s);
		c->have_cidr = true;
		return 0;
	}
	return 1;
}

static int cidr_vip_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_service_t *svc = ctx;
	struct cidr_ctx c = {.c = &svc->cidr_vips[i]};
	svc->n_cidr_vips = i + 1;
	if (!item || item->type != YAML_MAPPING_NODE)
		return zr_yaml_fail(w, item, "expected a map {network, cidr}, got %s", zr_yaml_kind(item));
	if (zr_yaml_map(w, item, cidr_vip_field, &c) != 0)
		return -1;
	if (!c.have_cidr) {
		zr_yaml_push_key(w, "cidr");
		return zr_yaml_fail(w, item, "missing required key");
	}
	if (!c.c->network && !(c.c->network = strdup("")))
		return zr_yaml_fail(w, item, "out of memory");
	return 0;
}

static int weighted_waypoint_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	zr_weighted_waypoint_t *ww = ctx;
	uint64_t u;
	if (!strcmp(key, "destination"))
		return gateway(w, v, &ww->destination);
	if (!strcmp(key, "weight")) {
		if (zr_yaml_uint(w, v, 0, UINT32_MAX, &u) != 0)
			return -1;
		ww->weight = (uint32_t)u;
		return 0;
	}
	return 1;
}

static int weighted_waypoint_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx)
{
	zr_service_t *svc = ctx;
	svc->n_weighted_waypoints = i + 1;
	return zr_yaml_map(w, item, weighted_waypoint_field, &svc->weighted_waypoints[i]);
}

static int lb_field(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, void *ctx)
{
	static const char *const modes[] = {"Standard", "Strict", "Failover", "Passthrough", NULL};
	static const char *const health[] = {"OnlyHealthy", "AllowAll", NULL};
	static const char *const scopes[] = {"Region", "Zone", "Subzone", "Node", "Cluster", "Network", NULL};
	zr_load_balancer_t *lb = ctx;
	int idx;
	if (!strcmp(key, "mode")) {
		if (zr_yaml_enum(w, v, "load balancer mode", modes, &idx) != 0)
			return -1;
		lb->mode = (zr_lb_mode_t)idx;
		return 0;
	}
	if (!strcmp(key, "healthPolicy")) {
		if (zr_yaml_enum(w, v, "health policy", health, &idx) != 0)
			return -1;
		lb->health_policy = (zr_lb_health_policy_t)idx;
		return 0;
	}
	if (!strcmp(key, "routingPreferences")) {
		if (!zr_yaml_is_null(v) && v->type != YAML_SEQUENCE_NODE)
			return zr_yaml_fail(w, v, "expected a list, got %s", zr_yaml_kind(v));
		size_t n = zr_yaml_len(v);
		free(lb->routing_preferences);
		lb->n_routing_preferences = 0;
		if (n && !(lb->routing_preferences = calloc(n, sizeof(*lb->routing_preferences))))
			return zr_yaml_fail(w, v, "out of memory");
		for (size_t i = 0; i < n; i++) {
			size_t old = zr_yaml_push_index(w, i);
			if (zr_yaml_enum(w, zr_yaml_node(w, v->data.sequence.items.start[i]), "routing preference",
					 scopes, &idx) != 0)
				return -1;
			zr_yaml_pop(w, old);
			lb->routing_preferences[lb->n_routing_preferences++] = (zr_lb_scope_t)idx;
		}
		return 0;
	}
	return 1;
}

int zr_state_service_extra(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, zr_service_t *svc)
{
	static const char *const families[] = {"Dual", "IPv4", "IPv6", NULL};
	static const char *const visibility[] = {"Public", "Namespace", NULL};
	int idx;
	if (!strcmp(key, "cidrVips") || !strcmp(key, "weightedWaypoints")) {
		bool cidr = key[0] == 'c';
		size_t n = v && v->type == YAML_SEQUENCE_NODE ? zr_yaml_len(v) : 0;
		void **arr = cidr ? (void **)&svc->cidr_vips : (void **)&svc->weighted_waypoints;
		if (n && !(*arr = calloc(n, cidr ? sizeof(zr_cidr_vip_t) : sizeof(zr_weighted_waypoint_t))))
			return zr_yaml_fail(w, v, "out of memory");
		return zr_yaml_seq(w, v, cidr ? cidr_vip_item : weighted_waypoint_item, svc);
	}
	if (!strcmp(key, "waypoint"))
		return gateway(w, v, &svc->waypoint);
	if (!strcmp(key, "loadBalancer")) {
		if (zr_yaml_is_null(v))
			return 0;
		if (zr_yaml_map(w, v, lb_field, &svc->load_balancer) != 0)
			return -1;
		svc->load_balancer.set = true;
		return 0;
	}
	if (!strcmp(key, "ipFamilies")) {
		if (zr_yaml_is_null(v))
			return 0;
		if (zr_yaml_enum(w, v, "IP family", families, &idx) != 0)
			return -1;
		svc->ip_families = (zr_ip_families_t)(idx + 1);
		return 0;
	}
	if (!strcmp(key, "canonical"))
		return zr_yaml_bool(w, v, &svc->canonical);
	if (!strcmp(key, "visibility")) {
		if (zr_yaml_enum(w, v, "visibility", visibility, &idx) != 0)
			return -1;
		svc->visibility = idx ? ZR_VISIBILITY_NAMESPACE : ZR_VISIBILITY_PUBLIC;
		return 0;
	}
	return 1;
}

void zr_state_service_extra_free(zr_service_t *svc)
{
	for (size_t i = 0; i < svc->n_cidr_vips; i++)
		free(svc->cidr_vips[i].network);
	free(svc->cidr_vips);
	for (size_t i = 0; i < svc->n_weighted_waypoints; i++)
		gateway_free(&svc->weighted_waypoints[i].destination);
	free(svc->weighted_waypoints);
	gateway_free(&svc->waypoint);
	free(svc->load_balancer.routing_preferences);
}

/* --- what the fields change ------------------------------------------------------- */

bool zr_state_lb_candidate(const zr_service_t *svc, const zr_workload_t *wl, const zr_workload_service_t *ws)
{
	/* ztunnel: an Unhealthy endpoint is left out of the service unless its
	 * healthPolicy is AllowAll; a capacity-0 one has weight 0 and is never
	 * picked. A direct connection to the workload's IP is no load balancing
	 * and still reaches it. */
	bool healthy = wl->status == ZR_HEALTHY && (!ws || ws->status == ZR_HEALTHY);
	if (!healthy && !(svc->load_balancer.set && svc->load_balancer.health_policy == ZR_LB_ALLOW_ALL))
		return false;
	return wl->capacity > 0;
}

#define MAX_WARNINGS 32

struct warn {
	size_t n;
};

static void warn(struct warn *ws, const char *what, const char *obj, const char *field, const char *effect)
{
	if (ws->n++ < MAX_WARNINGS)
		zr_warn("state", "%s %s sets %s, which this version does not implement: %s", what, obj, field, effect);
}

void zr_state_warn_unimplemented(const zr_state_t *st)
{
	struct warn ws = {0};
	for (size_t i = 0; i < st->n_workloads; i++) {
		const zr_workload_t *wl = &st->workloads[i];
		char obj[512];
		snprintf(obj, sizeof(obj), "%s/%s", wl->namespace_, wl->name[0] ? wl->name : wl->uid);
		if (wl->waypoint.set)
			warn(&ws, "workload", obj, "waypoint",
			     "its traffic goes directly to it, not through the waypoint");
		if (wl->network_gateway.set)
			warn(&ws, "workload", obj, "networkGateway", "it is dialled directly, not through the gateway");
		if (wl->application_tunnel.set && wl->application_tunnel.protocol != ZR_APP_TUNNEL_NONE)
			warn(&ws, "workload", obj, "applicationTunnel",
			     "inbound traffic is delivered to it without the tunnel protocol");
	}
	for (size_t i = 0; i < st->n_services; i++) {
		const zr_service_t *svc = &st->services[i];
		const zr_load_balancer_t *lb = &svc->load_balancer;
		if (svc->waypoint.set || svc->n_weighted_waypoints)
			warn(&ws, "service", svc->key, svc->waypoint.set ? "waypoint" : "weightedWaypoints",
			     "its traffic goes directly to its endpoints, not through the waypoint");
		if (lb->set && (lb->mode == ZR_LB_STRICT || lb->mode == ZR_LB_FAILOVER))
			warn(&ws, "service", svc->key,
			     lb->mode == ZR_LB_STRICT ? "loadBalancer.mode Strict" : "loadBalancer.mode Failover",
			     "endpoints are picked round-robin, without routingPreferences");
		if (lb->set && lb->mode == ZR_LB_PASSTHROUGH)
			warn(&ws, "service", svc->key, "loadBalancer.mode Passthrough",
			     "connections go to an endpoint, not to the address the client dialled");
		if (svc->n_cidr_vips)
			warn(&ws, "service", svc->key, "cidrVips", "addresses in its CIDR VIPs do not reach it");
		if (svc->visibility == ZR_VISIBILITY_NAMESPACE)
			warn(&ws, "service", svc->key, "visibility Namespace", "clients of every namespace reach it");
	}
	if (ws.n > MAX_WARNINGS)
		zr_warn("state", "%zu more settings that this version does not implement, not listed",
			ws.n - MAX_WARNINGS);
}
