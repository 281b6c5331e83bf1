/* Config model: the parsed YAML of SPEC.md (settings + local state), and the
 * lookup indexes built over it. A zr_config_t is immutable once loaded: it is
 * published to workers as part of a snapshot and read without locks. */
#ifndef ZR_CTL_CONFIG_T_H
#define ZR_CTL_CONFIG_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"

typedef enum zr_protocol {
	ZR_PROTO_TCP = 0,
	ZR_PROTO_HBONE = 1,
} zr_protocol_t;

typedef enum zr_io_backend_kind {
	ZR_IO_BACKEND_AUTO = 0,
	ZR_IO_BACKEND_URING,
	ZR_IO_BACKEND_EPOLL,
} zr_io_backend_kind_t;

typedef enum zr_record_crypto {
	ZR_RECORD_CRYPTO_AUTO = 0,
	ZR_RECORD_CRYPTO_IPSEC_MB,
	ZR_RECORD_CRYPTO_OPENSSL,
	ZR_RECORD_CRYPTO_DPDK,
	ZR_RECORD_CRYPTO_KTLS,
} zr_record_crypto_t;

/* Who frames and protects TLS records after the handshake: zring's own
 * record layer on the recordCrypto backend, or OpenSSL's (for comparison,
 * and as a fallback). */
typedef enum zr_record_layer {
	ZR_RECORD_LAYER_ZRING = 0,
	ZR_RECORD_LAYER_OPENSSL,
} zr_record_layer_t;

typedef struct zr_listener_cfg {
	bool enabled; /* false when set to null */
	zr_sockaddr_t addr;
} zr_listener_cfg_t;

typedef struct zr_port_map {
	uint16_t port;	 /* service port */
	uint16_t target; /* target (workload) port */
} zr_port_map_t;

/* ztunnel's HealthStatus. */
typedef enum zr_health {
	ZR_HEALTHY = 0,
	ZR_UNHEALTHY,
} zr_health_t;

/* A workload's membership in a service: key "namespace/hostname". status is
 * the one an inline service endpoint gives it (Healthy otherwise). */
typedef struct zr_workload_service {
	char *key;
	zr_port_map_t *ports;
	size_t n_ports;
	zr_health_t status;
} zr_workload_service_t;

typedef struct zr_locality {
	char *region, *zone, *subzone; /* never NULL once loaded */
} zr_locality_t;

/* ztunnel's GatewayAddress (waypoint, networkGateway): destination is an
 * address "network/ip" or a service "namespace/hostname". */
typedef struct zr_gateway {
	bool set;
	bool is_service;
	char *network;		     /* address form */
	zr_ip_t ip;		     /* address form */
	char *namespace_, *hostname; /* service form */
	uint16_t hbone_mtls_port;
} zr_gateway_t;

typedef enum zr_app_tunnel_protocol {
	ZR_APP_TUNNEL_NONE = 0,
	ZR_APP_TUNNEL_PROXY,
} zr_app_tunnel_protocol_t;

typedef struct zr_app_tunnel {
	bool set;
	zr_app_tunnel_protocol_t protocol;
	uint16_t port; /* 0 = unset */
} zr_app_tunnel_t;

typedef enum zr_network_mode {
	ZR_NETWORK_STANDARD = 0,
	ZR_NETWORK_HOST,
} zr_network_mode_t;

/* Strings are never NULL once loaded ("" where the file has none). */
typedef struct zr_workload {
	char *uid, *name, *namespace_, *service_account, *node, *network;
	char *canonical_name, *canonical_revision, *cluster_id; /* cluster_id: config's clusterId unless set */
	char *trust_domain;					/* config's trustDomain unless set */
	zr_ip_t *ips;
	size_t n_ips;
	zr_protocol_t protocol;
	zr_workload_service_t *services;
	size_t n_services;
	char **authorization_policies; /* "namespace/name" of WorkloadSelector policies */
	size_t n_authorization_policies;
	/* Kept and shown in /config_dump; of these only status and capacity 0
	 * change what zring does (no load balancing to the workload). */
	char *workload_name, *workload_type, *hostname;
	zr_health_t status;
	uint32_t capacity; /* default 1 */
	zr_locality_t locality;
	zr_network_mode_t network_mode;
	bool native_tunnel;
	zr_gateway_t waypoint, network_gateway;
	zr_app_tunnel_t application_tunnel;
	bool local;	/* node == config node */
	char *identity; /* "spiffe://<td>/ns/<ns>/sa/<sa>", derived */
} zr_workload_t;

typedef struct zr_vip {
	char *network;
	zr_ip_t ip;
} zr_vip_t;

typedef struct zr_cidr_vip {
	char *network;
	zr_ip_t ip;
	uint8_t prefix_len;
} zr_cidr_vip_t;

typedef struct zr_weighted_waypoint {
	zr_gateway_t destination;
	uint32_t weight;
} zr_weighted_waypoint_t;

typedef enum zr_lb_mode {
	ZR_LB_STANDARD = 0,
	ZR_LB_STRICT,
	ZR_LB_FAILOVER,
	ZR_LB_PASSTHROUGH,
} zr_lb_mode_t;

typedef enum zr_lb_health_policy {
	ZR_LB_ONLY_HEALTHY = 0,
	ZR_LB_ALLOW_ALL,
} zr_lb_health_policy_t;

/* ztunnel's LoadBalancerScopes. */
typedef enum zr_lb_scope {
	ZR_LB_REGION = 0,
	ZR_LB_ZONE,
	ZR_LB_SUBZONE,
	ZR_LB_NODE,
	ZR_LB_CLUSTER,
	ZR_LB_NETWORK,
} zr_lb_scope_t;

typedef struct zr_load_balancer {
	bool set;
	zr_lb_mode_t mode;
	zr_lb_health_policy_t health_policy;
	zr_lb_scope_t *routing_preferences;
	size_t n_routing_preferences;
} zr_load_balancer_t;

typedef enum zr_ip_families {
	ZR_IP_FAMILIES_UNSET = 0, /* ztunnel's None (Automatic) */
	ZR_IP_FAMILIES_DUAL,
	ZR_IP_FAMILIES_IPV4,
	ZR_IP_FAMILIES_IPV6,
} zr_ip_families_t;

typedef enum zr_visibility {
	ZR_VISIBILITY_PUBLIC = 0,
	ZR_VISIBILITY_NAMESPACE,
} zr_visibility_t;

typedef struct zr_service {
	char *name, *namespace_, *hostname;
	char *key; /* "namespace/hostname", derived */
	zr_vip_t *vips;
	size_t n_vips;
	zr_port_map_t *ports;
	size_t n_ports;
	char **subject_alt_names;
	size_t n_subject_alt_names;
	/* Kept and shown in /config_dump; only loadBalancer.healthPolicy changes
	 * what zring does (AllowAll: unhealthy endpoints stay in `endpoints`). */
	zr_cidr_vip_t *cidr_vips;
	size_t n_cidr_vips;
	zr_gateway_t waypoint;
	zr_weighted_waypoint_t *weighted_waypoints;
	size_t n_weighted_waypoints;
	zr_load_balancer_t load_balancer;
	zr_ip_families_t ip_families;
	bool canonical;
	zr_visibility_t visibility;
	/* derived: indexes into state.workloads of the endpoints load balancing
	 * may pick (workloads whose services map names this service, less the
	 * Unhealthy ones unless healthPolicy is AllowAll, less capacity 0), in
	 * file order */
	size_t *endpoints;
	size_t n_endpoints;
} zr_service_t;

typedef enum zr_policy_scope {
	ZR_SCOPE_GLOBAL = 0,
	ZR_SCOPE_NAMESPACE,
	ZR_SCOPE_WORKLOAD_SELECTOR,
} zr_policy_scope_t;

typedef enum zr_policy_action {
	ZR_ACTION_ALLOW = 0,
	ZR_ACTION_DENY,
} zr_policy_action_t;

typedef struct zr_cidr {
	zr_ip_t ip;
	uint8_t prefix_len;
} zr_cidr_t;

/* ztunnel's StringMatch. The kind is decided once, when the policy is read
 * (a tagged value keeps its tag's kind, a plain string gets the CRD shorthand
 * of SPEC "Local state"); `value` is then literal: a '*' in it is just a
 * character. */
typedef enum zr_string_match_kind {
	ZR_STRING_EXACT = 0,
	ZR_STRING_PREFIX,
	ZR_STRING_SUFFIX,
	ZR_STRING_PRESENCE, /* any non-empty value */
} zr_string_match_kind_t;

typedef struct zr_string_match {
	zr_string_match_kind_t kind;
	char *value; /* never NULL ("" for Presence) */
	size_t len;
} zr_string_match_t;

/* One match: each list is OR'd inside; set lists are AND'd with each other.
 * Service accounts are "namespace/serviceAccount", compared exactly. */
typedef struct zr_policy_match {
	zr_string_match_t *namespaces, *not_namespaces, *principals, *not_principals;
	char **service_accounts, **not_service_accounts;
	size_t n_namespaces, n_not_namespaces, n_principals, n_not_principals;
	size_t n_service_accounts, n_not_service_accounts;
	zr_cidr_t *source_ips, *not_source_ips, *destination_ips, *not_destination_ips;
	size_t n_source_ips, n_not_source_ips, n_destination_ips, n_not_destination_ips;
	uint16_t *destination_ports, *not_destination_ports;
	size_t n_destination_ports, n_not_destination_ports;
} zr_policy_match_t;

/* rules: [rule][clause][match]: rules OR'd, clauses AND'd, matches OR'd. */
typedef struct zr_policy_clause {
	zr_policy_match_t *matches;
	size_t n_matches;
} zr_policy_clause_t;

typedef struct zr_policy_rule {
	zr_policy_clause_t *clauses;
	size_t n_clauses;
} zr_policy_rule_t;

typedef struct zr_policy {
	char *name, *namespace_;
	zr_policy_scope_t scope;
	zr_policy_action_t action;
	bool dry_run;
	zr_policy_rule_t *rules;
	size_t n_rules;
	/* WorkloadSelector policies apply to the workloads whose
	 * `authorizationPolicies` list names "namespace/name" (ztunnel's model). */
} zr_policy_t;

/* Local state in ztunnel's LOCAL_XDS format, plus lookup indexes. */
typedef struct zr_state {
	zr_workload_t *workloads;
	size_t n_workloads;
	zr_service_t *services;
	size_t n_services;
	zr_policy_t *policies;
	size_t n_policies;
	void *index; /* private: hash tables owned by config.c */
} zr_state_t;

typedef struct zr_identity_cert {
	char *identity; /* spiffe URI */
	char *cert;	/* absolute path */
	char *key;	/* absolute path */
} zr_identity_cert_t;

typedef struct zr_config {
	char *path; /* absolute path of the config file */
	char *node;
	char *trust_domain;
	char *cluster_id;
	unsigned workers;   /* 0 = auto */
	char *cpus;	    /* CPU list string as written, or NULL */
	unsigned *cpu_list; /* parsed CPU list (NULL = cpuset) */
	size_t n_cpu_list;
	zr_io_backend_kind_t io_backend;
	struct {
		zr_listener_cfg_t outbound, inbound_plaintext, hbone, socks5, admin, metrics, readiness;
	} listeners;
	struct {
		char **cipher_suites;
		size_t n_cipher_suites;
		zr_record_crypto_t record_crypto;
		zr_record_layer_t record_layer;
		char *openssl_provider; /* NULL = none */
	} tls;
	struct {
		char *ca_certificates; /* absolute path or NULL */
		zr_identity_cert_t *certificates;
		size_t n_certificates;
		char *ca_address;
	} identity;
	struct {
		char *address, *root_cert, *token_file;
	} xds;
	char *local_xds_path; /* absolute path or NULL */
	zr_state_t state;     /* from localXds (inline) or localXdsPath */
	uint64_t drain_timeout_ms;
	uint32_t pool_max_streams_per_connection;
	uint64_t pool_idle_timeout_ms;
	uint64_t connect_timeout_ms;
	int log_level; /* zr_log_level_t */
} zr_config_t;

/* Error from loading: "file:line:col: key: message". */
typedef struct zr_config_error {
	char file[512];
	unsigned line, column;
	char key[256]; /* dotted path, e.g. "listeners.outbound" or "workloads[0].workloadIps[1]" */
	char message[512];
} zr_config_error_t;

#endif
