/* Connection flows: what happens between accept and relay.
 *   outbound (captured): SO_ORIGINAL_DST -> source check -> resolve -> connect
 *   socks5:              greeting/request -> source check -> resolve -> connect -> reply
 *   inbound plaintext:   SO_ORIGINAL_DST -> must be a local workload -> connect
 * Destinations: a service VIP:port goes to one of the service's endpoints at
 * the target port (round-robin per worker); a workload IP goes to that
 * workload; anything else passes through unchanged (as ztunnel does). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/authz.h"
#include "core/conn.h"
#include "core/hbone-int.h"
#include "core/hbone.h"
#include "core/socks5.h"
#include "core/worker.h"
#include "ctl/config.h"
#include "io/io.h"
#include "io/log.h"
#include "io/strbuf.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define ZR_SO_MARK			1337
/* From linux/netfilter_ipv4.h and ip6_tables.h, which clash with netinet/in.h. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#define SOCKS5_HANDSHAKE_TIMEOUT_NS (10ull * 1000000000ull)

uint64_t zr_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void zr_flow_socks5_reply(zr_conn_t *c, uint8_t code, const zr_sockaddr_t *bound)
{
	uint8_t out[32];
	size_t n = zr_socks5_reply(out, code, bound);
	/* The socket's send buffer is empty at this point: a 10- or 22-byte
	 * reply cannot block. */
	ssize_t w = send(c->down.fd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
}

static uint8_t socks5_code_for(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return ZR_SOCKS5_CONN_REFUSED;
	case ENETUNREACH:
		return ZR_SOCKS5_NET_UNREACHABLE;
	case EHOSTUNREACH:
		return ZR_SOCKS5_HOST_UNREACHABLE;
	case ETIMEDOUT:
	case ECANCELED:
		return ZR_SOCKS5_TTL_EXPIRED;
	default:
		return ZR_SOCKS5_GENERAL_FAILURE;
	}
}

/* Refuses c before relaying: counts it, answers SOCKS5 clients with `code`. */
void zr_flow_refuse(zr_conn_t *c, zr_refuse_reason_t reason, uint8_t socks_code)
{
	zr_counter_add(&c->w->stats.refused[reason], 1);
	c->refused = (uint8_t)(reason + 1);
	if (c->kind == ZR_LISTENER_SOCKS5 && socks_code)
		zr_flow_socks5_reply(c, socks_code, NULL);
	zr_conn_close(c, false);
}

static const zr_config_t *cfg_of(const zr_conn_t *c)
{
	return c->snap->cfg;
}

static void connect_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_conn_t *c = container_of(op, zr_conn_t, connect_op);
	char a[ZR_ADDR_STRLEN];
	c->inflight--;
	if (c->state == ZR_CONN_CLOSING) {
		zr_worker_conn_maybe_free(c);
		return;
	}
	if (c->inbound_hbone) {
		zr_hbone_upstream_connected(c, res);
		zr_worker_conn_maybe_free(c);
		return;
	}
	if (res < 0) {
		bool timeout = res == -ECANCELED || res == -ETIMEDOUT;
		zr_info("flow", "conn %llu: connect to %s failed: %s", (unsigned long long)c->id,
			zr_sockaddr_str(&c->upstream, a), timeout ? "connect timeout" : strerror(-res));
		zr_tcp_metrics_fail(c, "CONNECT");
		zr_flow_refuse(c, timeout ? ZR_REFUSE_CONNECT_TIMEOUT : ZR_REFUSE_CONNECT_FAILED,
			       socks5_code_for(-res));
		zr_worker_conn_maybe_free(c);
		return;
	}
	if (c->metrics)
		zr_counter_add(&c->metrics->opened, 1);
	if (c->kind == ZR_LISTENER_SOCKS5) {
		zr_sockaddr_t bound = {.len = sizeof(bound.ss)};
		if (getsockname(c->up.fd, &bound.sa, &bound.len) < 0)
			bound.len = 0;
		zr_flow_socks5_reply(c, ZR_SOCKS5_OK, bound.len ? &bound : NULL);
		if (c->hs_len) {
			/* The client sent data right behind its request: forward
			 * it before relaying. */
			c->state = ZR_CONN_REPLYING;
			if (zr_io_send(c->w->io, &c->reply_op, c->up.fd, c->hs, c->hs_len) < 0) {
				zr_conn_close(c, true);
				zr_worker_conn_maybe_free(c);
				return;
			}
			c->inflight++;
			return;
		}
	}
	zr_relay_start(c);
	zr_worker_conn_maybe_free(c);
}

static void early_data_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_conn_t *c = container_of(op, zr_conn_t, reply_op);
	c->inflight--;
	if (c->state == ZR_CONN_CLOSING) {
		zr_worker_conn_maybe_free(c);
		return;
	}
	if (res < 0) {
		zr_conn_close(c, true);
		zr_worker_conn_maybe_free(c);
		return;
	}
	zr_counter_add(&c->w->stats.relay_bytes_up, (uint64_t)res);
	if (c->metrics)
		zr_counter_add(&c->metrics->received_bytes, (uint64_t)res);
	c->down.bytes_in += (uint64_t)res;
	c->hs_len = 0;
	zr_relay_start(c);
	zr_worker_conn_maybe_free(c);
}

static bool is_loopback(const zr_ip_t *ip)
{
	static const uint8_t v6_loopback[16] = {[15] = 1};
	return ip->family == AF_INET ? ip->bytes[0] == 127 : memcmp(ip->bytes, v6_loopback, 16) == 0;
}

/* An outbound connection leaves from the source workload's own address, so
 * that the destination, which authorizes and labels metrics by the
 * connection's peer address (never by `forwarded`), sees that workload.
 * IP_BIND_ADDRESS_NO_PORT: the port is picked at connect() per 4-tuple, not
 * reserved per address at bind(), so binding does not shrink the ephemeral
 * range. This works where the workload's address is one of this host's
 * (host-network pods; the tests' 127.x workloads, towards loopback
 * destinations). Where it is not (node-wide capture of pods in their own
 * network namespaces), the connection leaves unbound, from the node's
 * address, counted and warned about once a minute per worker, as ztunnel's
 * freebind_connect falls back: failing would cut all of such a node's
 * traffic, and IP_TRANSPARENT would need routing that brings the replies to
 * the pod's address back to this host, which zring does not install (without
 * it the SYN-ACK goes to the pod and the connect hangs until connectTimeout).
 * The destination then sees the node's address: a sourceIps ALLOW naming the
 * pod denies, a DENY naming it does not match. */
void zr_flow_bind_source(zr_worker_t *w, int fd, const zr_sockaddr_t *src, const zr_sockaddr_t *dst)
{
	zr_ip_t ip, dst_ip;
	zr_sockaddr_t local;
	int one = 1;
	const char *why = "address family differs from the destination's";
	zr_sockaddr_to_ip(src, &ip, NULL);
	zr_sockaddr_to_ip(dst, &dst_ip, NULL);
	zr_sockaddr_from_ip(&local, &ip, 0);
	/* The kernel refuses (EINVAL at connect) to route from a loopback
	 * address to a non-loopback one. */
	if (local.sa.sa_family == dst->sa.sa_family && is_loopback(&ip) && !is_loopback(&dst_ip)) {
		why = "a loopback address cannot reach this destination";
	} else if (local.sa.sa_family == dst->sa.sa_family) {
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, &local.sa, local.len) == 0)
			return;
		why = strerror(errno);
	}
	zr_counter_add(&w->stats.source_bind_failures, 1);
	uint64_t now = zr_now_ns();
	if (w->bind_warn_ns && now - w->bind_warn_ns < 60ull * 1000000000ull) {
		w->bind_warn_missed++;
		return;
	}
	char a[ZR_ADDR_STRLEN], b[ZR_ADDR_STRLEN];
	zr_warn("flow",
		"cannot bind to the source workload's address %s for %s (%s): connecting from the node's address, "
		"destinations' sourceIps rules will not see the workload (%llu more since the last warning)",
		zr_ip_str(&ip, a), zr_sockaddr_str(dst, b), why, (unsigned long long)w->bind_warn_missed);
	w->bind_warn_ns = now;
	w->bind_warn_missed = 0;
}

static void wait_watch_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_conn_t *c = container_of(op, zr_conn_t, hs_op);
	c->inflight--;
	c->wait_watch = false;
	if (c->state == ZR_CONN_CONNECTING && res > 0) {
		int pending = 0;
		bool err = res & (POLLERR | POLLHUP);
		/* A FIN behind bytes is a half-close: they and the EOF go to the
		 * upstream once it is there (connectTimeout still bounds that). */
		if (err || (!c->early_data && (ioctl(c->down.fd, FIONREAD, &pending) < 0 || pending == 0))) {
			char a[ZR_ADDR_STRLEN];
			zr_debug("flow", "conn %llu: client %s %s while connecting", (unsigned long long)c->id,
				 zr_sockaddr_str(&c->peer, a), err ? "reset" : "went away");
			zr_conn_close(c, err);
		}
	}
	zr_worker_conn_maybe_free(c);
}

void zr_flow_wait_watch(zr_conn_t *c)
{
	if (c->state != ZR_CONN_CONNECTING || c->wait_watch || c->down.fd < 0)
		return;
	c->hs_op.cb = wait_watch_cb;
	if (zr_io_poll_once(c->w->io, &c->hs_op, c->down.fd, POLLRDHUP) < 0)
		return; /* unwatched: connectTimeout still bounds the wait */
	c->wait_watch = true;
	c->inflight++;
}

void zr_flow_wait_response(zr_conn_t *c)
{
	c->wait_until_ns = zr_now_ns() + cfg_of(c)->connect_timeout_ms * 1000000ull;
}

void zr_flow_wait_expired(zr_conn_t *c)
{
	char a[ZR_ADDR_STRLEN];
	zr_info("flow", "conn %llu: no answer to CONNECT %s within connectTimeout", (unsigned long long)c->id,
		zr_sockaddr_str(&c->upstream, a));
	zr_tcp_metrics_fail(c, "CONNECT");
	zr_flow_refuse(c, ZR_REFUSE_CONNECT_TIMEOUT, ZR_SOCKS5_TTL_EXPIRED);
}

void zr_flow_connect_upstream(zr_conn_t *c)
{
	zr_worker_t *w = c->w;
	int fd = socket(c->upstream.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		zr_warn("flow", "socket: %s", strerror(errno));
		if (c->inbound_hbone)
			zr_hbone_upstream_connected(c, -errno);
		else
			zr_flow_refuse(c, ZR_REFUSE_OVERLOAD, ZR_SOCKS5_GENERAL_FAILURE);
		return;
	}
	int mark = ZR_SO_MARK, one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0 && !w->mark_warned) {
		w->mark_warned = 1;
		zr_warn("flow",
			"SO_MARK %d refused (%s): capture rules can't exempt zring's own traffic "
			"(needs CAP_NET_ADMIN)",
			mark, strerror(errno));
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->kind == ZR_LISTENER_OUTBOUND || c->kind == ZR_LISTENER_SOCKS5)
		zr_flow_bind_source(w, fd, &c->peer, &c->upstream);
	if (c->inbound_hbone) {
		c->up.fd = fd;
		c->connect_op.cb = connect_cb;
	} else {
		zr_relay_init_side(c, &c->up, fd);
		c->state = ZR_CONN_CONNECTING;
	}
	uint64_t timeout_ns = cfg_of(c)->connect_timeout_ms * 1000000ull;
	if (zr_io_connect(w->io, &c->connect_op, fd, &c->upstream, timeout_ns) < 0) {
		if (c->inbound_hbone)
			zr_hbone_upstream_connected(c, -EBUSY);
		else
			zr_flow_refuse(c, ZR_REFUSE_OVERLOAD, ZR_SOCKS5_GENERAL_FAILURE);
		return;
	}
	c->inflight++;
}

/* Picks the upstream for (dst ip, port) or a service by name; fills c->svc,
 * c->dst_wl and c->upstream. Returns 0 or a refuse reason + 1. */
static int resolve(zr_conn_t *c, const zr_ip_t *ip, const char *hostname, uint16_t port)
{
	const zr_state_t *st = &cfg_of(c)->state;
	const zr_service_t *svc =
		hostname ? zr_state_service_by_hostname(st, hostname) : zr_state_service_by_vip(st, ip);
	if (hostname && !svc)
		return ZR_REFUSE_NO_ROUTE + 1;
	if (svc) {
		c->svc = svc;
		if (svc->n_endpoints == 0)
			return ZR_REFUSE_NO_ENDPOINT + 1;
		/* Round-robin over the endpoints that serve this port. */
		for (size_t tries = 0; tries < svc->n_endpoints; tries++) {
			size_t i = c->w->rr_counter++ % svc->n_endpoints;
			const zr_workload_t *ep = &st->workloads[svc->endpoints[i]];
			uint16_t target = zr_service_target_port(svc, ep, port);
			if (!target || ep->n_ips == 0)
				continue;
			c->dst_wl = ep;
			zr_sockaddr_from_ip(&c->upstream, &ep->ips[0], target);
			return 0;
		}
		return ZR_REFUSE_NO_ROUTE + 1;
	}
	const zr_workload_t *wl = zr_state_workload_by_ip(st, ip);
	c->dst_wl = wl;
	zr_sockaddr_from_ip(&c->upstream, ip, port);
	return 0;
}

static void route_outbound(zr_conn_t *c, const zr_ip_t *dst_ip, const char *hostname, uint16_t port)
{
	char a[ZR_ADDR_STRLEN];
	zr_ip_t src_ip;
	zr_sockaddr_to_ip(&c->peer, &src_ip, NULL);
	c->src_wl = zr_state_workload_by_ip(&cfg_of(c)->state, &src_ip);
	if (!c->src_wl || !c->src_wl->local) {
		zr_info("flow", "conn %llu: refused: source %s is no local workload", (unsigned long long)c->id,
			zr_sockaddr_str(&c->peer, a));
		zr_flow_refuse(c, ZR_REFUSE_UNKNOWN_SOURCE, ZR_SOCKS5_NOT_ALLOWED);
		return;
	}
	if (ZR_LOG_ENABLED(ZR_LOG_DEBUG)) {
		char b[ZR_ADDR_STRLEN];
		zr_debug("flow", "conn %llu: %s from %s (%s) to %s:%u", (unsigned long long)c->id,
			 c->kind == ZR_LISTENER_SOCKS5 ? "socks5" : "outbound", zr_sockaddr_str(&c->peer, a),
			 c->src_wl->name, hostname ? hostname : zr_ip_str(dst_ip, b), port);
	}
	int r = resolve(c, dst_ip, hostname, port);
	if (r) {
		zr_info("flow", "conn %llu: refused: no route to %s:%u", (unsigned long long)c->id,
			hostname ? hostname : zr_ip_str(dst_ip, a), port);
		zr_flow_refuse(c, (zr_refuse_reason_t)(r - 1), ZR_SOCKS5_HOST_UNREACHABLE);
		return;
	}
	bool hbone = c->dst_wl && c->dst_wl->protocol == ZR_PROTO_HBONE;
	c->early_data = c->hs_len > 0; /* HBONE may send them at once */
	/* What goes over HBONE to another node is that node's to check. */
	if ((!hbone || c->dst_wl->local) && (r = zr_flow_forbidden_dest(c, &c->upstream))) {
		zr_flow_refuse(c, (zr_refuse_reason_t)(r - 1), ZR_SOCKS5_NOT_ALLOWED);
		return;
	}
	c->metrics = zr_tcp_metrics_for(c->w, c, "source", "-", hbone);
	if (hbone)
		zr_hbone_connect(c);
	else
		zr_flow_connect_upstream(c);
	zr_flow_wait_watch(c);
}

static void route_inbound(zr_conn_t *c)
{
	char a[ZR_ADDR_STRLEN];
	zr_ip_t src_ip, dst_ip;
	uint16_t port;
	const zr_state_t *st = &cfg_of(c)->state;
	zr_sockaddr_to_ip(&c->peer, &src_ip, NULL);
	zr_sockaddr_to_ip(&c->orig_dst, &dst_ip, &port);
	c->src_wl = zr_state_workload_by_ip(st, &src_ip);
	c->dst_wl = zr_state_workload_by_ip(st, &dst_ip);
	if (ZR_LOG_ENABLED(ZR_LOG_DEBUG)) {
		char b[ZR_ADDR_STRLEN];
		zr_debug("flow", "conn %llu: inbound plaintext from %s to %s", (unsigned long long)c->id,
			 zr_sockaddr_str(&c->peer, a), zr_sockaddr_str(&c->orig_dst, b));
	}
	if (!c->dst_wl || !c->dst_wl->local) {
		zr_info("flow", "conn %llu: inbound refused: %s is no local workload", (unsigned long long)c->id,
			zr_sockaddr_str(&c->orig_dst, a));
		zr_flow_refuse(c, ZR_REFUSE_NOT_LOCAL, 0);
		return;
	}
	int r = zr_flow_forbidden_dest(c, &c->orig_dst);
	if (r) {
		zr_flow_refuse(c, (zr_refuse_reason_t)(r - 1), 0);
		return;
	}
	c->upstream = c->orig_dst;
	c->authz_src_ip = src_ip;
	c->svc = zr_flow_inbound_service(st, c->dst_wl, port);
	if (!zr_flow_authorize(c, st, c->dst_wl, "plaintext")) {
		c->metrics = zr_tcp_metrics_for(c->w, c, "destination", "-", false);
		zr_tcp_metrics_fail(c, "DENY");
		zr_flow_refuse(c, ZR_REFUSE_DENIED, 0);
		return;
	}
	c->metrics = zr_tcp_metrics_for(c->w, c, "destination", "-", false);
	zr_flow_connect_upstream(c);
	zr_flow_wait_watch(c);
}

const zr_service_t *zr_flow_inbound_service(const zr_state_t *st, const zr_workload_t *wl, uint16_t port)
{
	/* Inbound traffic names a workload and a port, not a service: like
	 * ztunnel, report the service of that workload that targets the port. */
	for (size_t i = 0; i < wl->n_services; i++) {
		const zr_workload_service_t *ws = &wl->services[i];
		const char *slash = strchr(ws->key, '/');
		const zr_service_t *svc = slash ? zr_state_service_by_hostname(st, slash + 1) : NULL;
		if (!svc)
			continue;
		for (size_t j = 0; j < svc->n_ports; j++)
			if (zr_service_target_port(svc, wl, svc->ports[j].port) == port)
				return svc;
	}
	return NULL;
}

bool zr_flow_authorize(const zr_conn_t *c, const zr_state_t *st, const zr_workload_t *dst, const char *who)
{
	char ns[256], sa[256], a[ZR_ADDR_STRLEN];
	const char *principal = NULL;
	zr_authz_request_t req = {.dst = dst, .src_ip = c->authz_src_ip};
	if (c->peer_id) {
		principal = strncmp(c->peer_id, "spiffe://", 9) == 0 ? c->peer_id + 9 : c->peer_id;
		if (zr_authz_principal_split(principal, ns, sizeof(ns), sa, sizeof(sa)) == 0) {
			req.src_namespace = ns;
			req.src_service_account = sa;
		}
	}
	req.src_principal = principal;
	zr_sockaddr_to_ip(&c->upstream, &req.dst_ip, &req.dst_port);
	zr_authz_result_t res;
	zr_authz_check(st, NULL, &req, &res);
	if (res.dry_run_would_deny)
		zr_info("authz", "%s: dry-run policy %s/%s would deny %s from %s", who,
			res.dry_run_policy ? res.dry_run_policy->namespace_ : "-",
			res.dry_run_policy ? res.dry_run_policy->name : "(no ALLOW matched)", dst->name,
			principal ? principal : zr_ip_str(&c->authz_src_ip, a));
	if (res.allowed)
		return true;
	if (res.policy)
		zr_info("authz", "%s: denied %s -> %s:%u by policy %s/%s", who,
			principal ? principal : zr_ip_str(&c->authz_src_ip, a), dst->name, req.dst_port,
			res.policy->namespace_, res.policy->name);
	else
		zr_info("authz", "%s: denied %s -> %s:%u: no ALLOW policy matched", who,
			principal ? principal : zr_ip_str(&c->authz_src_ip, a), dst->name, req.dst_port);
	return false;
}

static void socks5_fail(zr_conn_t *c, int err)
{
	uint8_t code = err == -ENOTSUP	    ? ZR_SOCKS5_CMD_UNSUPPORTED :
		       err == -EAFNOSUPPORT ? ZR_SOCKS5_ATYP_UNSUPPORTED :
					      0;
	if (err == -EACCES) {
		uint8_t no_method[2] = {5, 0xff};
		ssize_t w = send(c->down.fd, no_method, 2, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)w;
	}
	zr_debug("socks5", "conn %llu: protocol error: %s", (unsigned long long)c->id, strerror(-err));
	zr_flow_refuse(c, ZR_REFUSE_SOCKS5_PROTOCOL, code);
}

static void socks5_read(zr_conn_t *c);

static void socks5_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_conn_t *c = container_of(op, zr_conn_t, hs_op);
	c->inflight--;
	if (c->state == ZR_CONN_CLOSING) {
		zr_worker_conn_maybe_free(c);
		return;
	}
	if (res <= 0) {
		/* EOF, error or the handshake timeout. */
		zr_counter_add(&c->w->stats.refused[ZR_REFUSE_SOCKS5_PROTOCOL], 1);
		zr_conn_close(c, false);
		zr_worker_conn_maybe_free(c);
		return;
	}
	c->hs_len = (uint16_t)(c->hs_len + res);
	for (;;) {
		if (c->reply_len == 0) { /* greeting not yet answered */
			int n = zr_socks5_parse_greeting(c->hs, c->hs_len);
			if (n < 0) {
				socks5_fail(c, n);
				break;
			}
			if (n == 0) {
				socks5_read(c);
				break;
			}
			uint8_t ok[2] = {5, 0};
			if (send(c->down.fd, ok, 2, MSG_NOSIGNAL | MSG_DONTWAIT) != 2) {
				zr_conn_close(c, false);
				break;
			}
			c->reply_len = 2;
			memmove(c->hs, c->hs + n, c->hs_len - (size_t)n);
			c->hs_len = (uint16_t)(c->hs_len - n);
			continue;
		}
		zr_socks5_request_t req;
		int n = zr_socks5_parse_request(c->hs, c->hs_len, &req);
		if (n < 0) {
			socks5_fail(c, n);
			break;
		}
		if (n == 0) {
			socks5_read(c);
			break;
		}
		memmove(c->hs, c->hs + n, c->hs_len - (size_t)n);
		c->hs_len = (uint16_t)(c->hs_len - n);
		c->orig_dst.len = 0;
		if (req.atyp == ZR_SOCKS5_ATYP_DOMAIN) {
			/* A literal address written as a name is still an address. */
			zr_ip_t ip;
			if (zr_ip_parse(req.host, &ip) == 0)
				route_outbound(c, &ip, NULL, req.port);
			else
				route_outbound(c, NULL, req.host, req.port);
		} else {
			zr_sockaddr_from_ip(&c->orig_dst, &req.ip, req.port);
			route_outbound(c, &req.ip, NULL, req.port);
		}
		break;
	}
	zr_worker_conn_maybe_free(c);
}

static void socks5_read(zr_conn_t *c)
{
	if (c->hs_len >= sizeof(c->hs)) {
		socks5_fail(c, -EPROTO);
		return;
	}
	if (zr_io_recv_into(c->w->io, &c->hs_op, c->down.fd, c->hs + c->hs_len, sizeof(c->hs) - c->hs_len,
			    SOCKS5_HANDSHAKE_TIMEOUT_NS) < 0) {
		zr_conn_close(c, false);
		return;
	}
	c->inflight++;
}

static int original_dst(int fd, zr_sockaddr_t *out)
{
	out->len = sizeof(out->ss);
	if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &out->ss, &out->len) == 0)
		return 0;
	out->len = sizeof(out->ss);
	if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &out->ss, &out->len) == 0)
		return 0;
	return -errno;
}

void zr_conn_accepted(zr_listener_t *l, int fd)
{
	zr_worker_t *w = l->worker;
	zr_counter_add(&w->stats.accepted, 1);
	zr_conn_t *c = zr_worker_conn_alloc(w);
	if (!c) {
		zr_counter_add(&w->stats.refused[ZR_REFUSE_OVERLOAD], 1);
		close(fd);
		return;
	}
	c->kind = l->kind;
	c->sock_open = l->kind == ZR_LISTENER_INBOUND_PLAINTEXT ? 2 : 1;
	zr_counter_add(&w->stats.sockets_open[c->sock_open - 1], 1);
	c->hs_op.cb = socks5_cb;
	c->connect_op.cb = connect_cb;
	c->reply_op.cb = early_data_cb;
	zr_relay_init_side(c, &c->down, fd);
	zr_relay_init_side(c, &c->up, -1);
	c->peer.len = sizeof(c->peer.ss);
	if (getpeername(fd, &c->peer.sa, &c->peer.len) < 0) {
		zr_conn_close(c, false);
		zr_worker_conn_maybe_free(c);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	switch (l->kind) {
	case ZR_LISTENER_SOCKS5:
		c->state = ZR_CONN_HANDSHAKE;
		socks5_read(c);
		break;
	case ZR_LISTENER_OUTBOUND:
	case ZR_LISTENER_INBOUND_PLAINTEXT: {
		zr_sockaddr_t local = {.len = sizeof(local.ss)};
		getsockname(fd, &local.sa, &local.len);
		if (original_dst(fd, &c->orig_dst) < 0 ||
		    (local.len == c->orig_dst.len && memcmp(&local.ss, &c->orig_dst.ss, local.len) == 0)) {
			/* Not redirected: nothing says where this was going. */
			zr_flow_refuse(c, ZR_REFUSE_NO_ORIGINAL_DST, 0);
			break;
		}
		if (l->kind == ZR_LISTENER_OUTBOUND) {
			zr_ip_t ip;
			uint16_t port;
			zr_sockaddr_to_ip(&c->orig_dst, &ip, &port);
			route_outbound(c, &ip, NULL, port);
		} else {
			route_inbound(c);
		}
		break;
	}
	default:
		zr_conn_close(c, false);
		break;
	}
	zr_worker_conn_maybe_free(c);
}

void zr_conn_close(zr_conn_t *c, bool reset)
{
	if (c->state == ZR_CONN_CLOSING || c->state == ZR_CONN_FREE)
		return;
	bool was_open = c->state == ZR_CONN_RELAY || c->state == ZR_CONN_REPLYING;
	c->state = ZR_CONN_CLOSING;
	c->reset = reset;
	if (was_open && c->metrics)
		zr_counter_add(&c->metrics->closed, 1);
	if (c->metrics)
		zr_access_log(c, was_open);
	if (c->h2)
		zr_hbone_conn_closing(c);
	/* Pending operations hold the sockets open; cancel them all and close
	 * once the last one has completed (zr_worker_conn_maybe_free). */
	if (c->inflight) {
		if (c->down.fd >= 0)
			zr_io_cancel_fd(c->w->io, c->down.fd);
		if (c->up.fd >= 0)
			zr_io_cancel_fd(c->w->io, c->up.fd);
	}
}

static const char *state_name(zr_conn_state_t s)
{
	static const char *const names[] = {"handshake", "connecting", "replying", "relay", "closing", "free"};
	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

void zr_conn_dump(const zr_conn_t *c, zr_strbuf_t *out)
{
	char a[ZR_ADDR_STRLEN], b[ZR_ADDR_STRLEN];
	static const char *const kinds[ZR_LISTENER__COUNT] = {"outbound", "socks5", "inbound_plaintext", "hbone"};
	zr_strbuf_printf(out, "{\"id\":%llu,\"worker\":%u,\"listener\":\"%s\",\"src\":\"%s\",\"dst\":\"%s\",",
			 (unsigned long long)c->id, c->w->index, kinds[c->kind], zr_sockaddr_str(&c->peer, a),
			 c->upstream.len ? zr_sockaddr_str(&c->upstream, b) : "");
	zr_strbuf_puts(out, "\"srcWorkload\":");
	zr_strbuf_json_str(out, c->src_wl ? c->src_wl->name : NULL);
	zr_strbuf_puts(out, ",\"dstWorkload\":");
	zr_strbuf_json_str(out, c->dst_wl ? c->dst_wl->name : NULL);
	zr_strbuf_puts(out, ",\"dstService\":");
	zr_strbuf_json_str(out, c->svc ? c->svc->hostname : NULL);
	zr_strbuf_printf(out, ",\"state\":\"%s\",\"bytesUp\":%llu,\"bytesDown\":%llu,\"ageMs\":%llu}",
			 state_name(c->state), (unsigned long long)c->down.bytes_in, (unsigned long long)c->up.bytes_in,
			 (unsigned long long)((zr_now_ns() - c->start_ns) / 1000000ull));
}

/* One line for /config_dump's workloadState: the local workload's uid (a
 * JSON string, so no tab or newline in it), "in" or "out", and ztunnel's
 * connection object {src, originalDst, actualDst, protocol}. */
void zr_conn_dump_workload(const zr_conn_t *c, zr_strbuf_t *out)
{
	char a[ZR_ADDR_STRLEN], b[ZR_ADDR_STRLEN];
	bool inbound = c->kind == ZR_LISTENER_INBOUND_PLAINTEXT || c->kind == ZR_LISTENER_HBONE;
	const zr_workload_t *local = inbound ? c->dst_wl : c->src_wl;
	if (!local || !local->uid)
		return;
	zr_strbuf_json_str(out, local->uid);
	zr_strbuf_printf(out, "\t%s\t{\"src\":\"%s\",\"originalDst\":", inbound ? "in" : "out",
			 zr_sockaddr_str(&c->peer, a));
	if (inbound)
		zr_strbuf_json_str(out, c->svc ? c->svc->hostname : "");
	else
		zr_strbuf_printf(out, "\"%s\"", c->orig_dst.len ? zr_sockaddr_str(&c->orig_dst, b) : "");
	/* outbound HBONE: where the tunnel goes (port 15008), as ztunnel says */
	const zr_sockaddr_t *actual = !inbound && c->h2 && c->h2->peer.len ? &c->h2->peer : &c->upstream;
	zr_strbuf_printf(out, ",\"actualDst\":\"%s\",\"protocol\":\"%s\"}\n",
			 actual->len ? zr_sockaddr_str(actual, b) : "",
			 (inbound ? c->kind == ZR_LISTENER_HBONE : c->h2 != NULL) ? "HBONE" : "TCP");
}
