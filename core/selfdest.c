/* Destinations zring never proxies to through a workload's connection
 * (SPEC "HBONE"): its own listeners and the node's loopback. Without this
 * check a workload could reach the admin API (POST /quitquitquit) through
 * SOCKS5, capture or an HBONE CONNECT, as ztunnel refuses its own ports.
 *
 * Own listeners: every listeners.* address, the per-workload binds of hbone
 * and inboundPlaintext (port on each local workload IP), and for a wildcard
 * listener (0.0.0.0:P, [::]:P) port P on any address of this host: loopback
 * and the interface addresses, which each worker reads with getifaddrs at
 * most once a second and only when a destination port is such a P.
 * Node loopback: 127.0.0.0/8, ::1 and the unspecified addresses (a connect
 * to 0.0.0.0 reaches the host), unless the address is a workload IP or a
 * service VIP (one host may run workloads on loopback addresses). */
#include <ifaddrs.h>
#include <stdlib.h>
#include <string.h>

#include "core/conn.h"
#include "ctl/config.h"
#include "io/log.h"

#define HOST_IPS_TTL_NS (1000ull * 1000000ull)

static bool ip_unspecified(const zr_ip_t *ip)
{
	static const uint8_t zero[16];
	return memcmp(ip->bytes, zero, ip->family == AF_INET ? 4 : 16) == 0;
}

static bool ip_loopback(const zr_ip_t *ip)
{
	static const uint8_t one6[16] = {[15] = 1};
	if (ip->family == AF_INET)
		return ip->bytes[0] == 127;
	return memcmp(ip->bytes, one6, 16) == 0;
}

static void refresh_host_ips(zr_worker_t *w)
{
	struct ifaddrs *ifs, *ifa;
	w->host_ips_ns = zr_now_ns();
	if (getifaddrs(&ifs) < 0)
		return; /* keep the last list */
	size_t n = 0;
	for (ifa = ifs; ifa; ifa = ifa->ifa_next)
		if (ifa->ifa_addr && (ifa->ifa_addr->sa_family == AF_INET || ifa->ifa_addr->sa_family == AF_INET6))
			n++;
	zr_ip_t *ips = n ? malloc(n * sizeof(*ips)) : NULL;
	if (n && !ips) {
		freeifaddrs(ifs);
		return;
	}
	n = 0;
	for (ifa = ifs; ifa; ifa = ifa->ifa_next) {
		if (!ifa->ifa_addr || (ifa->ifa_addr->sa_family != AF_INET && ifa->ifa_addr->sa_family != AF_INET6))
			continue;
		zr_sockaddr_t sa = {.len = ifa->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) :
										 sizeof(struct sockaddr_in6)};
		memcpy(&sa.ss, ifa->ifa_addr, sa.len);
		zr_sockaddr_to_ip(&sa, &ips[n++], NULL);
	}
	freeifaddrs(ifs);
	free(w->host_ips);
	w->host_ips = ips;
	w->n_host_ips = n;
}

/* Whether ip is an address of this host (what a wildcard listener gets). */
static bool host_ip(zr_worker_t *w, const zr_ip_t *ip)
{
	if (ip_loopback(ip) || ip_unspecified(ip))
		return true;
	if (!w->host_ips_ns || zr_now_ns() - w->host_ips_ns > HOST_IPS_TTL_NS)
		refresh_host_ips(w);
	for (size_t i = 0; i < w->n_host_ips; i++)
		if (zr_ip_equal(&w->host_ips[i], ip))
			return true;
	return false;
}

static const char *own_listener(zr_worker_t *w, const zr_config_t *cfg, const zr_ip_t *ip, uint16_t port)
{
	const struct {
		const zr_listener_cfg_t *lc;
		const char *name;
		bool per_workload; /* also bound on each local workload IP */
	} ls[] = {
		{&cfg->listeners.outbound, "outbound", false},
		{&cfg->listeners.inbound_plaintext, "inboundPlaintext", true},
		{&cfg->listeners.hbone, "hbone", true},
		{&cfg->listeners.socks5, "socks5", false},
		{&cfg->listeners.admin, "admin", false},
		{&cfg->listeners.metrics, "metrics", false},
		{&cfg->listeners.readiness, "readiness", false},
	};
	for (size_t i = 0; i < sizeof(ls) / sizeof(ls[0]); i++) {
		zr_ip_t lip;
		uint16_t lport;
		if (!ls[i].lc->enabled)
			continue;
		zr_sockaddr_to_ip(&ls[i].lc->addr, &lip, &lport);
		if (lport != port)
			continue;
		if (zr_ip_equal(&lip, ip) || (ip_unspecified(&lip) && host_ip(w, ip)))
			return ls[i].name;
		if (ls[i].per_workload) {
			const zr_workload_t *wl = zr_state_workload_by_ip(&cfg->state, ip);
			if (wl && wl->local)
				return ls[i].name;
		}
	}
	return NULL;
}

int zr_flow_forbidden_dest(zr_conn_t *c, const zr_sockaddr_t *dst)
{
	const zr_config_t *cfg = c->snap->cfg;
	char a[ZR_ADDR_STRLEN], b[ZR_ADDR_STRLEN];
	zr_ip_t ip;
	uint16_t port;
	zr_sockaddr_to_ip(dst, &ip, &port);
	const char *which = own_listener(c->w, cfg, &ip, port);
	if (which) {
		zr_warn("flow", "conn %llu: refused: %s from %s is zring's own %s listener", (unsigned long long)c->id,
			zr_sockaddr_str(dst, a), zr_sockaddr_str(&c->peer, b), which);
		return ZR_REFUSE_SELF + 1;
	}
	if ((ip_loopback(&ip) || ip_unspecified(&ip)) && !zr_state_workload_by_ip(&cfg->state, &ip) &&
	    !zr_state_service_by_vip(&cfg->state, &ip)) {
		zr_warn("flow", "conn %llu: refused: %s from %s is the node's loopback (no workload, no service)",
			(unsigned long long)c->id, zr_sockaddr_str(dst, a), zr_sockaddr_str(&c->peer, b));
		return ZR_REFUSE_LOOPBACK + 1;
	}
	return 0;
}
