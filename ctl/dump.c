/* /config_dump: the effective config, local state, certificates and live
 * connections as one JSON document, for operators and `zring ctl`. Runs on
 * the control thread, off the data path. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ctl/server.h"
#include "io/log.h"

/* Starts member `name` of the current object; `first` tracks the comma. */
static void key(zr_strbuf_t *o, bool *first, const char *name)
{
	if (!*first)
		zr_strbuf_puts(o, ",");
	*first = false;
	zr_strbuf_json_str(o, name);
	zr_strbuf_puts(o, ":");
}

static void kv_str(zr_strbuf_t *o, bool *first, const char *name, const char *value)
{
	key(o, first, name);
	zr_strbuf_json_str(o, value);
}

static void str_array(zr_strbuf_t *o, char *const *a, size_t n)
{
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			zr_strbuf_puts(o, ",");
		zr_strbuf_json_str(o, a[i]);
	}
	zr_strbuf_puts(o, "]");
}

static void ip_array(zr_strbuf_t *o, const zr_ip_t *ips, size_t n)
{
	char buf[ZR_ADDR_STRLEN];
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			zr_strbuf_puts(o, ",");
		zr_strbuf_json_str(o, zr_ip_str(&ips[i], buf));
	}
	zr_strbuf_puts(o, "]");
}

static void cidr_array(zr_strbuf_t *o, const zr_cidr_t *c, size_t n)
{
	char buf[ZR_ADDR_STRLEN];
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < n; i++)
		zr_strbuf_printf(o, "%s\"%s/%u\"", i ? "," : "", zr_ip_str(&c[i].ip, buf), c[i].prefix_len);
	zr_strbuf_puts(o, "]");
}

static void port_array(zr_strbuf_t *o, const uint16_t *p, size_t n)
{
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < n; i++)
		zr_strbuf_printf(o, "%s%u", i ? "," : "", p[i]);
	zr_strbuf_puts(o, "]");
}

/* {"80":8080}: JSON keys are strings, as in the config files. */
static void port_map(zr_strbuf_t *o, const zr_port_map_t *p, size_t n)
{
	zr_strbuf_puts(o, "{");
	for (size_t i = 0; i < n; i++)
		zr_strbuf_printf(o, "%s\"%u\":%u", i ? "," : "", p[i].port, p[i].target);
	zr_strbuf_puts(o, "}");
}

static void dump_listeners(zr_strbuf_t *o, const zr_config_t *cfg)
{
	const struct {
		const char *name;
		const zr_listener_cfg_t *l;
	} ls[] = {
		{"outbound", &cfg->listeners.outbound},	  {"inboundPlaintext", &cfg->listeners.inbound_plaintext},
		{"hbone", &cfg->listeners.hbone},	  {"socks5", &cfg->listeners.socks5},
		{"admin", &cfg->listeners.admin},	  {"metrics", &cfg->listeners.metrics},
		{"readiness", &cfg->listeners.readiness},
	};
	char buf[ZR_ADDR_STRLEN];
	bool first = true;
	zr_strbuf_puts(o, "{");
	for (size_t i = 0; i < sizeof(ls) / sizeof(ls[0]); i++)
		kv_str(o, &first, ls[i].name, ls[i].l->enabled ? zr_sockaddr_str(&ls[i].l->addr, buf) : NULL);
	zr_strbuf_puts(o, "}");
}

/* ztunnel's GatewayAddress: {"destination":"network/ip" or
 * "namespace/hostname","hboneMtlsPort":N}. */
static void gateway(zr_strbuf_t *o, bool *first, const char *name, const zr_gateway_t *g)
{
	char buf[ZR_ADDR_STRLEN];
	if (!g->set)
		return;
	key(o, first, name);
	zr_strbuf_t d = ZR_STRBUF_INIT;
	if (g->is_service)
		zr_strbuf_printf(&d, "%s/%s", g->namespace_, g->hostname);
	else
		zr_strbuf_printf(&d, "%s/%s", g->network ? g->network : "", zr_ip_str(&g->ip, buf));
	zr_strbuf_puts(o, "{\"destination\":");
	zr_strbuf_json_str(o, d.data);
	zr_strbuf_printf(o, ",\"hboneMtlsPort\":%u}", g->hbone_mtls_port);
	zr_strbuf_free(&d);
}

/* Strings ztunnel leaves out when empty (skip_serializing_if is_default). */
static void kv_str_nonempty(zr_strbuf_t *o, bool *first, const char *name, const char *value)
{
	if (value && value[0])
		kv_str(o, first, name, value);
}

static void dump_workload_fields(zr_strbuf_t *o, bool *first, const zr_workload_t *w)
{
	kv_str_nonempty(o, first, "workloadName", w->workload_name);
	kv_str_nonempty(o, first, "workloadType", w->workload_type);
	kv_str_nonempty(o, first, "hostname", w->hostname);
	kv_str(o, first, "status", w->status == ZR_UNHEALTHY ? "Unhealthy" : "Healthy");
	kv_str(o, first, "networkMode", w->network_mode == ZR_NETWORK_HOST ? "HostNetwork" : "Standard");
	key(o, first, "capacity");
	zr_strbuf_printf(o, "%u", w->capacity);
	const zr_locality_t *l = &w->locality;
	if ((l->region && l->region[0]) || (l->zone && l->zone[0]) || (l->subzone && l->subzone[0])) {
		bool f = true;
		key(o, first, "locality");
		zr_strbuf_puts(o, "{");
		kv_str(o, &f, "region", l->region);
		kv_str(o, &f, "zone", l->zone);
		kv_str(o, &f, "subzone", l->subzone);
		zr_strbuf_puts(o, "}");
	}
	if (w->native_tunnel) {
		key(o, first, "nativeTunnel");
		zr_strbuf_puts(o, "true");
	}
	gateway(o, first, "waypoint", &w->waypoint);
	gateway(o, first, "networkGateway", &w->network_gateway);
	if (w->application_tunnel.set) {
		key(o, first, "applicationTunnel");
		zr_strbuf_printf(o, "{\"protocol\":\"%s\",\"port\":",
				 w->application_tunnel.protocol == ZR_APP_TUNNEL_PROXY ? "PROXY" : "NONE");
		if (w->application_tunnel.port)
			zr_strbuf_printf(o, "%u}", w->application_tunnel.port);
		else
			zr_strbuf_puts(o, "null}");
	}
}

static void dump_service_fields(zr_strbuf_t *o, bool *first, const zr_service_t *s)
{
	static const char *const modes[] = {"Standard", "Strict", "Failover", "Passthrough"};
	static const char *const scopes[] = {"Region", "Zone", "Subzone", "Node", "Cluster", "Network"};
	static const char *const families[] = {NULL, "Dual", "IPv4", "IPv6"};
	char buf[ZR_ADDR_STRLEN];
	if (s->n_cidr_vips) {
		key(o, first, "cidrVips");
		zr_strbuf_puts(o, "[");
		for (size_t i = 0; i < s->n_cidr_vips; i++) {
			zr_strbuf_puts(o, i ? ",{\"network\":" : "{\"network\":");
			zr_strbuf_json_str(o, s->cidr_vips[i].network);
			zr_strbuf_printf(o, ",\"cidr\":\"%s/%u\"}", zr_ip_str(&s->cidr_vips[i].ip, buf),
					 s->cidr_vips[i].prefix_len);
		}
		zr_strbuf_puts(o, "]");
	}
	gateway(o, first, "waypoint", &s->waypoint);
	if (s->n_weighted_waypoints) {
		key(o, first, "weightedWaypoints");
		zr_strbuf_puts(o, "[");
		for (size_t i = 0; i < s->n_weighted_waypoints; i++) {
			bool f = true;
			zr_strbuf_puts(o, i ? ",{" : "{");
			gateway(o, &f, "destination", &s->weighted_waypoints[i].destination);
			key(o, &f, "weight");
			zr_strbuf_printf(o, "%u}", s->weighted_waypoints[i].weight);
		}
		zr_strbuf_puts(o, "]");
	}
	const zr_load_balancer_t *lb = &s->load_balancer;
	if (lb->set) {
		key(o, first, "loadBalancer");
		zr_strbuf_puts(o, "{\"routingPreferences\":[");
		for (size_t i = 0; i < lb->n_routing_preferences; i++)
			zr_strbuf_printf(o, "%s\"%s\"", i ? "," : "",
					 (unsigned)lb->routing_preferences[i] < 6 ? scopes[lb->routing_preferences[i]] :
										    "");
		zr_strbuf_printf(o, "],\"mode\":\"%s\",\"healthPolicy\":\"%s\"}",
				 (unsigned)lb->mode < 4 ? modes[lb->mode] : "",
				 lb->health_policy == ZR_LB_ALLOW_ALL ? "AllowAll" : "OnlyHealthy");
	}
	if (s->ip_families != ZR_IP_FAMILIES_UNSET && (unsigned)s->ip_families < 4)
		kv_str(o, first, "ipFamilies", families[s->ip_families]);
	key(o, first, "canonical");
	zr_strbuf_puts(o, s->canonical ? "true" : "false");
	kv_str(o, first, "visibility", s->visibility == ZR_VISIBILITY_NAMESPACE ? "Namespace" : "Public");
}

static void dump_workload(zr_strbuf_t *o, const zr_workload_t *w)
{
	bool first = true;
	zr_strbuf_puts(o, "{");
	kv_str(o, &first, "uid", w->uid);
	kv_str(o, &first, "name", w->name);
	kv_str(o, &first, "namespace", w->namespace_);
	kv_str(o, &first, "serviceAccount", w->service_account);
	kv_str(o, &first, "node", w->node);
	kv_str(o, &first, "network", w->network);
	kv_str(o, &first, "protocol", w->protocol == ZR_PROTO_HBONE ? "HBONE" : "TCP");
	key(o, &first, "workloadIps");
	ip_array(o, w->ips, w->n_ips);
	kv_str(o, &first, "canonicalName", w->canonical_name);
	kv_str(o, &first, "canonicalRevision", w->canonical_revision);
	kv_str(o, &first, "clusterId", w->cluster_id);
	kv_str(o, &first, "trustDomain", w->trust_domain);
	key(o, &first, "local");
	zr_strbuf_puts(o, w->local ? "true" : "false");
	kv_str(o, &first, "identity", w->identity);
	key(o, &first, "services");
	zr_strbuf_puts(o, "{");
	for (size_t i = 0; i < w->n_services; i++) {
		bool f = i == 0;
		key(o, &f, w->services[i].key);
		port_map(o, w->services[i].ports, w->services[i].n_ports);
	}
	zr_strbuf_puts(o, "}");
	key(o, &first, "authorizationPolicies");
	str_array(o, w->authorization_policies, w->n_authorization_policies);
	dump_workload_fields(o, &first, w);
	zr_strbuf_puts(o, "}");
}

/* ztunnel's EndpointSet: every workload whose services map names s (load
 * balancing leaves out the Unhealthy and capacity 0 ones; this does not),
 * keyed by workload uid: {"workloadUid", "service": "<ns>/<hostname>",
 * "address": "<network>/<ip>", "port": {"<servicePort>": <targetPort>},
 * "status"}. */
static void dump_endpoints(zr_strbuf_t *o, const zr_service_t *s, const zr_state_t *st)
{
	char buf[ZR_ADDR_STRLEN];
	size_t n = 0;
	zr_strbuf_puts(o, "{");
	for (size_t i = 0; i < st->n_workloads; i++) {
		const zr_workload_t *w = &st->workloads[i];
		for (size_t j = 0; j < w->n_services; j++) {
			const zr_workload_service_t *m = &w->services[j];
			if (!s->key || !m->key || strcmp(m->key, s->key) != 0)
				continue;
			zr_strbuf_puts(o, n++ ? "," : "");
			zr_strbuf_json_str(o, w->uid);
			zr_strbuf_puts(o, ":{\"workloadUid\":");
			zr_strbuf_json_str(o, w->uid);
			zr_strbuf_puts(o, ",\"service\":");
			zr_strbuf_json_str(o, s->key);
			if (w->n_ips) {
				zr_strbuf_t a = ZR_STRBUF_INIT;
				zr_strbuf_printf(&a, "%s/%s", w->network ? w->network : "", zr_ip_str(&w->ips[0], buf));
				zr_strbuf_puts(o, ",\"address\":");
				zr_strbuf_json_str(o, a.data);
				zr_strbuf_free(&a);
			}
			zr_strbuf_puts(o, ",\"port\":");
			if (m->n_ports)
				port_map(o, m->ports, m->n_ports);
			else
				port_map(o, s->ports, s->n_ports);
			zr_strbuf_printf(o, ",\"status\":\"%s\"}",
					 w->status == ZR_UNHEALTHY || m->status == ZR_UNHEALTHY ? "Unhealthy" :
												  "Healthy");
			break;
		}
	}
	zr_strbuf_puts(o, "}");
}

static void dump_service(zr_strbuf_t *o, const zr_service_t *s, const zr_state_t *st)
{
	char buf[ZR_ADDR_STRLEN];
	bool first = true;
	zr_strbuf_puts(o, "{");
	kv_str(o, &first, "name", s->name);
	kv_str(o, &first, "namespace", s->namespace_);
	kv_str(o, &first, "hostname", s->hostname);
	key(o, &first, "vips");
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < s->n_vips; i++) {
		zr_strbuf_puts(o, i ? "," : "");
		zr_strbuf_t vip = ZR_STRBUF_INIT; /* "network/ip", as in the config */
		zr_strbuf_printf(&vip, "%s/%s", s->vips[i].network ? s->vips[i].network : "",
				 zr_ip_str(&s->vips[i].ip, buf));
		zr_strbuf_json_str(o, vip.data);
		zr_strbuf_free(&vip);
	}
	zr_strbuf_puts(o, "]");
	key(o, &first, "ports");
	port_map(o, s->ports, s->n_ports);
	key(o, &first, "subjectAltNames");
	str_array(o, s->subject_alt_names, s->n_subject_alt_names);
	dump_service_fields(o, &first, s);
	key(o, &first, "endpoints");
	dump_endpoints(o, s, st);
	zr_strbuf_puts(o, "}");
}

/* ztunnel's serde_json of StringMatch: {"Exact":"x"}, {"Presence":[]}. */
static void string_match_array(zr_strbuf_t *o, const zr_string_match_t *a, size_t n)
{
	static const char *const kinds[] = {"Exact", "Prefix", "Suffix", "Presence"};
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < n; i++) {
		const char *kind = (unsigned)a[i].kind < 4 ? kinds[a[i].kind] : "Unknown";
		zr_strbuf_puts(o, i ? ",{\"" : "{\"");
		zr_strbuf_puts(o, kind);
		zr_strbuf_puts(o, "\":");
		if (a[i].kind == ZR_STRING_PRESENCE)
			zr_strbuf_puts(o, "[]");
		else
			zr_strbuf_json_str(o, a[i].value);
		zr_strbuf_puts(o, "}");
	}
	zr_strbuf_puts(o, "]");
}

/* ztunnel's ServiceAccountMatch: {"namespace":..., "serviceAccount":...}. */
static void sa_array(zr_strbuf_t *o, char *const *a, size_t n)
{
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < n; i++) {
		const char *slash = strchr(a[i], '/');
		char *ns = strndup(a[i], slash ? (size_t)(slash - a[i]) : 0);
		zr_strbuf_puts(o, i ? ",{\"namespace\":" : "{\"namespace\":");
		zr_strbuf_json_str(o, ns ? ns : "");
		free(ns);
		zr_strbuf_puts(o, ",\"serviceAccount\":");
		zr_strbuf_json_str(o, slash ? slash + 1 : a[i]);
		zr_strbuf_puts(o, "}");
	}
	zr_strbuf_puts(o, "]");
}

static void dump_match(zr_strbuf_t *o, const zr_policy_match_t *m)
{
	bool first = true;
	zr_strbuf_puts(o, "{");
#define STRS(name, field)                                      \
	if (m->n_##field) {                                    \
		key(o, &first, name);                          \
		string_match_array(o, m->field, m->n_##field); \
	}
#define SAS(name, field)                             \
	if (m->n_##field) {                          \
		key(o, &first, name);                \
		sa_array(o, m->field, m->n_##field); \
	}
#define CIDRS(name, field)                             \
	if (m->n_##field) {                            \
		key(o, &first, name);                  \
		cidr_array(o, m->field, m->n_##field); \
	}
#define PORTS(name, field)                             \
	if (m->n_##field) {                            \
		key(o, &first, name);                  \
		port_array(o, m->field, m->n_##field); \
	}
	STRS("namespaces", namespaces)
	STRS("notNamespaces", not_namespaces)
	STRS("principals", principals)
	STRS("notPrincipals", not_principals)
	SAS("serviceAccounts", service_accounts)
	SAS("notServiceAccounts", not_service_accounts)
	CIDRS("sourceIps", source_ips)
	CIDRS("notSourceIps", not_source_ips)
	CIDRS("destinationIps", destination_ips)
	CIDRS("notDestinationIps", not_destination_ips)
	PORTS("destinationPorts", destination_ports)
	PORTS("notDestinationPorts", not_destination_ports)
#undef STRS
#undef SAS
#undef CIDRS
#undef PORTS
	zr_strbuf_puts(o, "}");
}

static void dump_policy(zr_strbuf_t *o, const zr_policy_t *p)
{
	static const char *const scopes[] = {"Global", "Namespace", "WorkloadSelector"};
	bool first = true;
	zr_strbuf_puts(o, "{");
	kv_str(o, &first, "name", p->name);
	kv_str(o, &first, "namespace", p->namespace_);
	kv_str(o, &first, "scope", (unsigned)p->scope < 3 ? scopes[p->scope] : "unknown");
	kv_str(o, &first, "action", p->action == ZR_ACTION_DENY ? "Deny" : "Allow");
	key(o, &first, "dryRun");
	zr_strbuf_puts(o, p->dry_run ? "true" : "false");
	key(o, &first, "rules");
	zr_strbuf_puts(o, "[");
	for (size_t r = 0; r < p->n_rules; r++) {
		zr_strbuf_puts(o, r ? ",[" : "[");
		for (size_t c = 0; c < p->rules[r].n_clauses; c++) {
			const zr_policy_clause_t *cl = &p->rules[r].clauses[c];
			zr_strbuf_puts(o, c ? ",[" : "[");
			for (size_t m = 0; m < cl->n_matches; m++) {
				zr_strbuf_puts(o, m ? "," : "");
				dump_match(o, &cl->matches[m]);
			}
			zr_strbuf_puts(o, "]");
		}
		zr_strbuf_puts(o, "]");
	}
	zr_strbuf_puts(o, "]}");
}

static void rfc3339(zr_strbuf_t *o, const char *name, const ASN1_TIME *t)
{
	struct tm tm;
	char buf[32];
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1 || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		buf[0] = '\0';
	zr_strbuf_printf(o, ",\"%s\":\"%s\"", name, buf);
}

/* ztunnel's CertDump: the PEM text base64-encoded, the serial in decimal,
 * validity in RFC 3339 (seconds, Z). */
static void dump_cert(zr_strbuf_t *o, X509 *x)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *pem = NULL;
	long len = mem && PEM_write_bio_X509(mem, x) == 1 ? BIO_get_mem_data(mem, &pem) : 0;
	unsigned char *b64 = len > 0 ? malloc(4 * ((size_t)len / 3 + 1) + 1) : NULL;
	if (b64)
		EVP_EncodeBlock(b64, (const unsigned char *)pem, (int)len);
	zr_strbuf_puts(o, "{\"pem\":");
	zr_strbuf_json_str(o, b64 ? (const char *)b64 : "");
	free(b64);
	BIO_free(mem);
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *dec = bn ? BN_bn2dec(bn) : NULL;
	zr_strbuf_puts(o, ",\"serialNumber\":");
	zr_strbuf_json_str(o, dec ? dec : "");
	OPENSSL_free(dec);
	BN_free(bn);
	rfc3339(o, "validFrom", X509_get0_notBefore(x));
	rfc3339(o, "expirationTime", X509_get0_notAfter(x));
	zr_strbuf_puts(o, "}");
}

/* Appends a JSON array of the certificates in PEM file `path`; returns how
 * many, or sets *err. */
static size_t cert_file(zr_strbuf_t *o, const char *path, const char **err)
{
	FILE *f = path ? fopen(path, "r") : NULL;
	size_t n = 0;
	zr_strbuf_puts(o, "[");
	if (!f) {
		*err = path ? strerror(errno) : "no certificate path";
	} else {
		X509 *x;
		while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
			zr_strbuf_puts(o, n++ ? "," : "");
			dump_cert(o, x);
			X509_free(x);
		}
		ERR_clear_error(); /* the end of the file reads as an error */
		fclose(f);
		if (!n)
			*err = "no PEM certificate in file";
	}
	zr_strbuf_puts(o, "]");
	return n;
}

/* ztunnel's CertsDump, one per configured certificate: {"identity", "state":
 * "Available" or "Unavailable: <why>" (the file unreadable, the identity
 * not loaded, the certificate expired), "certChain": leaf then
 * intermediates, "rootCerts": identity.caCertificates}, plus zring's "cert"
 * and "key" paths. The files are read as they are now. */
/* The identities the node has loaded (the certificates hook), taken before
 * the config lock: the hook takes a lock of its own. */
struct loaded {
	bool known; /* a hook answered */
	size_t n, cap;
	struct loaded_id {
		char *identity;
		int64_t not_after;
	} * ids;
};

static void loaded_add(void *arg, const char *identity, int64_t not_after)
{
	struct loaded *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		struct loaded_id *ids = realloc(l->ids, cap * sizeof(*ids));
		if (!ids)
			return;
		l->ids = ids;
		l->cap = cap;
	}
	char *dup = strdup(identity ? identity : "");
	if (dup)
		l->ids[l->n++] = (struct loaded_id){dup, not_after};
}

/* ztunnel's CertState as text: what of the file is in use. */
static void cert_state(zr_strbuf_t *o, const struct loaded *l, const char *identity, const char *file_err)
{
	const struct loaded_id *id = NULL;
	for (size_t i = 0; l->known && i < l->n && !id; i++)
		if (identity && strcmp(l->ids[i].identity, identity) == 0)
			id = &l->ids[i];
	if (file_err)
		zr_strbuf_printf(o, "Unavailable: %s", file_err);
	else if (l->known && !id)
		zr_strbuf_puts(o, "Unavailable: not loaded");
	else if (id && id->not_after <= (int64_t)time(NULL))
		zr_strbuf_puts(o, "Unavailable: certificate expired");
	else
		zr_strbuf_puts(o, "Available");
}

static void dump_certificates(zr_strbuf_t *o, const zr_config_t *cfg, const struct loaded *loaded)
{
	zr_strbuf_t roots = ZR_STRBUF_INIT;
	const char *root_err = NULL;
	if (cfg->identity.ca_certificates)
		cert_file(&roots, cfg->identity.ca_certificates, &root_err);
	else
		zr_strbuf_puts(&roots, "[]");
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < cfg->identity.n_certificates; i++) {
		const zr_identity_cert_t *c = &cfg->identity.certificates[i];
		const char *err = NULL;
		zr_strbuf_t chain = ZR_STRBUF_INIT;
		cert_file(&chain, c->cert, &err);
		bool first = true;
		zr_strbuf_puts(o, i ? ",{" : "{");
		kv_str(o, &first, "identity", c->identity);
		zr_strbuf_t state = ZR_STRBUF_INIT;
		cert_state(&state, loaded, c->identity, err);
		kv_str(o, &first, "state", state.data);
		zr_strbuf_free(&state);
		key(o, &first, "certChain");
		zr_strbuf_puts(o, err ? "[]" : chain.data);
		key(o, &first, "rootCerts");
		zr_strbuf_puts(o, err ? "[]" : roots.data);
		kv_str(o, &first, "cert", c->cert);
		kv_str(o, &first, "key", c->key);
		zr_strbuf_puts(o, "}");
		zr_strbuf_free(&chain);
	}
	zr_strbuf_puts(o, "]");
	zr_strbuf_free(&roots);
}

/* A line of the dump_connections hook's by_workload text. */
struct ws_line {
	const char *uid, *obj; /* uid: a JSON string literal */
	size_t uid_len, obj_len, seq;
	bool in;
};

static int ws_cmp(const void *pa, const void *pb)
{
	const struct ws_line *a = pa, *b = pb;
	size_t n = a->uid_len < b->uid_len ? a->uid_len : b->uid_len;
	int r = memcmp(a->uid, b->uid, n);
	if (r == 0 && a->uid_len != b->uid_len)
		r = a->uid_len < b->uid_len ? -1 : 1;
	return r ? r : (a->seq > b->seq) - (a->seq < b->seq);
}

static size_t ws_parse(char *text, size_t len, struct ws_line **out)
{
	size_t n = 0, cap = 0;
	struct ws_line *l = NULL;
	for (char *p = text, *end = text + len; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), *t1 = memchr(p, '\t', (size_t)(end - p));
		char *t2 = t1 ? memchr(t1 + 1, '\t', (size_t)(end - t1 - 1)) : NULL;
		if (!nl)
			break;
		if (t1 && t2 && t2 < nl) {
			if (n == cap) {
				struct ws_line *g = realloc(l, (cap = cap ? 2 * cap : 64) * sizeof(*l));
				if (!g)
					break;
				l = g;
			}
			l[n] = (struct ws_line){.uid = p,
						.uid_len = (size_t)(t1 - p),
						.in = t1[1] == 'i',
						.obj = t2 + 1,
						.obj_len = (size_t)(nl - t2 - 1),
						.seq = n};
			n++;
		}
		p = nl + 1;
	}
	if (n)
		qsort(l, n, sizeof(*l), ws_cmp);
	*out = l;
	return n;
}

static void ws_entry(zr_strbuf_t *o, const char *uid_json, size_t uid_len, const zr_workload_t *w,
		     const struct ws_line *l, size_t n)
{
	zr_strbuf_append(o, uid_json, uid_len);
	zr_strbuf_puts(o, ":{\"state\":\"Up\",\"info\":{");
	bool first = true;
	kv_str(o, &first, "name", w ? w->name : "");
	kv_str(o, &first, "namespace", w ? w->namespace_ : "");
	kv_str(o, &first, "trustDomain", w ? w->trust_domain : "");
	kv_str(o, &first, "serviceAccount", w ? w->service_account : "");
	zr_strbuf_puts(o, "},\"connections\":{");
	for (int dir = 0; dir < 2; dir++) {
		zr_strbuf_puts(o, dir ? "],\"outbound\":[" : "\"inbound\":[");
		for (size_t i = 0, k = 0; i < n; i++) {
			if (l[i].in != (dir == 0))
				continue;
			zr_strbuf_puts(o, k++ ? "," : "");
			zr_strbuf_append(o, l[i].obj, l[i].obj_len);
		}
	}
	zr_strbuf_puts(o, "]}}");
}

/* ztunnel's workloadState: each local workload (and any other a connection
 * is attributed to), keyed by workload uid, with its live connections. */
static void dump_workload_state(zr_strbuf_t *o, const zr_state_t *st, zr_strbuf_t *lines)
{
	struct ws_line *l = NULL;
	size_t n = lines->data ? ws_parse(lines->data, lines->len, &l) : 0, k = 0;
	bool *done = n ? calloc(n, sizeof(*done)) : NULL;
	zr_strbuf_t uid = ZR_STRBUF_INIT;
	zr_strbuf_puts(o, "{");
	for (size_t i = 0; i < st->n_workloads; i++) {
		const zr_workload_t *w = &st->workloads[i];
		zr_strbuf_reset(&uid);
		zr_strbuf_json_str(&uid, w->uid);
		size_t a = 0;
		struct ws_line probe = {.uid = uid.data, .uid_len = uid.len};
		while (a < n && ws_cmp(&l[a], &probe) < 0)
			a++;
		size_t b = a;
		while (b < n && l[b].uid_len == uid.len && memcmp(l[b].uid, uid.data, uid.len) == 0)
			b++;
		if (!w->local && a == b)
			continue;
		if (a < b && done && done[a])
			continue; /* a uid twice in the state: its first workload */
		zr_strbuf_puts(o, k++ ? "," : "");
		ws_entry(o, uid.data, uid.len, w, l + a, b - a);
		if (a < b && done)
			done[a] = true;
	}
	for (size_t a = 0, b; a < n; a = b) {
		for (b = a + 1; b < n && l[b].uid_len == l[a].uid_len && memcmp(l[b].uid, l[a].uid, l[a].uid_len) == 0;)
			b++;
		if (done[a])
			continue;
		zr_strbuf_puts(o, k++ ? "," : "");
		ws_entry(o, l[a].uid, l[a].uid_len, NULL, l + a, b - a);
	}
	zr_strbuf_puts(o, "}");
	zr_strbuf_free(&uid);
	free(done);
	free(l);
}

/* The start-up choice, not the file's current text: a reload that changes
 * tls.recordCrypto waits for a restart, and this shows what runs. */
static void dump_crypto(zr_strbuf_t *o, const zr_crypto_info_t *ci)
{
	bool first = true;
	zr_strbuf_puts(o, "{");
	kv_str(o, &first, "backend", ci && ci->backend ? ci->backend : "none");
	kv_str(o, &first, "description", ci && ci->description ? ci->description : "");
	kv_str(o, &first, "recordLayer", ci && ci->record_layer ? ci->record_layer : "none");
	key(o, &first, "opensslProvider");
	if (ci && ci->openssl_provider)
		zr_strbuf_json_str(o, ci->openssl_provider);
	else
		zr_strbuf_puts(o, "null");
	zr_strbuf_puts(o, "}");
}

void zr_config_dump(zr_strbuf_t *o, const zr_ctl_hooks_t *hooks)
{
	/* Asked first: the workers answer while the config is not held. */
	zr_strbuf_t conns = ZR_STRBUF_INIT, by_workload = ZR_STRBUF_INIT;
	if (hooks->dump_connections)
		hooks->dump_connections(hooks->ctx, &conns, &by_workload);
	struct loaded loaded = {.known = hooks->certificates != NULL};
	if (hooks->certificates)
		hooks->certificates(hooks->ctx, loaded_add, &loaded);
	const zr_config_t *cfg = hooks->config_acquire(hooks->ctx);
	const zr_state_t *st = &cfg->state;
	bool first = true;
	zr_strbuf_puts(o, "{");
	kv_str(o, &first, "node", cfg->node);
	kv_str(o, &first, "trustDomain", cfg->trust_domain);
	kv_str(o, &first, "clusterId", cfg->cluster_id);
	key(o, &first, "workers");
	zr_strbuf_printf(o, "%zu", hooks->n_workers(hooks->ctx));
	key(o, &first, "listeners");
	dump_listeners(o, cfg);
	key(o, &first, "workloads");
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < st->n_workloads; i++) {
		zr_strbuf_puts(o, i ? "," : "");
		dump_workload(o, &st->workloads[i]);
	}
	zr_strbuf_puts(o, "]");
	key(o, &first, "services");
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < st->n_services; i++) {
		zr_strbuf_puts(o, i ? "," : "");
		dump_service(o, &st->services[i], st);
	}
	zr_strbuf_puts(o, "]");
	key(o, &first, "policies");
	zr_strbuf_puts(o, "[");
	for (size_t i = 0; i < st->n_policies; i++) {
		zr_strbuf_puts(o, i ? "," : "");
		dump_policy(o, &st->policies[i]);
	}
	zr_strbuf_puts(o, "]");
	key(o, &first, "certificates");
	dump_certificates(o, cfg, &loaded);
	key(o, &first, "workloadState");
	dump_workload_state(o, st, &by_workload);
	hooks->config_release(hooks->ctx, cfg);
	key(o, &first, "connections");
	zr_strbuf_append(o, conns.data ? conns.data : "[]", conns.data ? conns.len : 2);
	zr_strbuf_free(&conns);
	zr_strbuf_free(&by_workload);
	for (size_t i = 0; i < loaded.n; i++)
		free(loaded.ids[i].identity);
	free(loaded.ids);
	key(o, &first, "crypto");
	dump_crypto(o, hooks->crypto ? hooks->crypto(hooks->ctx) : NULL);
	kv_str(o, &first, "logLevel", zr_log_level_name(zr_log_get_level()));
	zr_strbuf_puts(o, "}\n");
}
