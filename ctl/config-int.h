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

/* policy.c: one entry of `policies` into ((zr_state_t *)ctx)->policies[i]. */
int zr_state_policy_item(zr_yaml_walk_t *w, size_t i, yaml_node_t *item, void *ctx);
void zr_state_policy_free(zr_policy_t *pol);

#endif
