/* Private to ctl/config.c and ctl/state.c: local state parsing. */
#ifndef ZR_CTL_CONFIG_INT_H
#define ZR_CTL_CONFIG_INT_H

#include "ctl/config-t.h"
#include "ctl/yamlwalk.h"

/* Parses ztunnel LOCAL_XDS state at `root` (null = empty) into st, derives
 * identities, endpoints and builds the lookup indexes. cfg supplies node,
 * trustDomain and clusterId. On error st holds partial data: free it. */
int zr_state_parse(zr_yaml_walk_t *w, yaml_node_t *root, const zr_config_t *cfg, zr_state_t *st)
	__attribute__((warn_unused_result));
void zr_state_free(zr_state_t *st);

/* state-fields.c: the workload / service keys beyond addressing (returns
 * 0, -1 or 1 for a key it does not know, as a zr_yaml_field_fn). */
int zr_state_fields_defaults(zr_yaml_walk_t *w, zr_workload_t *wl) __attribute__((warn_unused_result));
int zr_state_workload_extra(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, zr_workload_t *wl);
int zr_state_service_extra(zr_yaml_walk_t *w, const char *key, yaml_node_t *v, zr_service_t *svc);
int zr_state_health(zr_yaml_walk_t *w, yaml_node_t *v, zr_health_t *out) __attribute__((warn_unused_result));
void zr_state_workload_extra_free(zr_workload_t *wl);
void zr_state_service_extra_free(zr_service_t *svc);
/* Whether load balancing to svc may pick wl (ws: wl's membership in svc). */
bool zr_state_lb_candidate(const zr_service_t *svc, const zr_workload_t *wl, const zr_workload_service_t *ws);
/* One warning per object that sets a field zring keeps but does not act on
 * (waypoint, networkGateway, applicationTunnel, ...), at most 32 and a count. */
void zr_state_warn_unimplemented(const zr_state_t *st);

/* policy.c: one entry of `policies` into ((zr_state_t *)ctx)->policies[i]. */
int zr_state_policy_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx);
void zr_state_policy_free(zr_policy_t *pol);

#endif
