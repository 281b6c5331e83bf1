/* Config loading (libyaml) and state lookups. Loading runs on the control
 * thread; the lookup functions are pure reads of an immutable config and may
 * be called from any thread. */
#ifndef ZR_CTL_CONFIG_H
#define ZR_CTL_CONFIG_H

#include "ctl/config-t.h"

/* Loads and validates `path`. On success returns 0 and a config the caller
 * owns (free with zr_config_free). On failure returns -1 (bad config; `err`
 * names file, line and key) — any other negative errno means the file could
 * not be read (also described in `err`). localXdsPath is read too. */
int zr_config_load(const char *path, zr_config_t **out, zr_config_error_t *err) __attribute__((warn_unused_result));

/* Same, from a string (file name used for messages and relative paths). */
int zr_config_load_string(const char *yaml, size_t len, const char *name, zr_config_t **out, zr_config_error_t *err)
	__attribute__((warn_unused_result));

void zr_config_free(zr_config_t *cfg);

/* Formats `err` as "file:line:col: key: message" into buf. */
const char *zr_config_error_str(const zr_config_error_t *err, char *buf, size_t cap);

/* Lookups (O(1) average; pure reads). */
const zr_workload_t *zr_state_workload_by_ip(const zr_state_t *st, const zr_ip_t *ip);
/* Service with a VIP equal to ip (any network); NULL if none. */
const zr_service_t *zr_state_service_by_vip(const zr_state_t *st, const zr_ip_t *ip);
const zr_service_t *zr_state_service_by_hostname(const zr_state_t *st, const char *hostname);
/* Target port of service port `port`, or 0 if the service has no such port.
 * A workload's own services map (if it lists the service) overrides. */
uint16_t zr_service_target_port(const zr_service_t *svc, const zr_workload_t *endpoint, uint16_t port);

#endif
