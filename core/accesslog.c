/* The access log: one line per connection once it is closed, on the
 * reporter that opened it (source: the outbound node, destination: the
 * inbound one), with ztunnel's scope ("access"), message ("connection
 * complete") and keys, so that pipelines reading ztunnel's lines read these:
 * src.addr, src.workload, src.namespace, src.identity, dst.addr,
 * dst.hbone_addr, dst.service, dst.workload, dst.namespace, dst.identity,
 * direction, bytes_sent, bytes_recv, duration ("12ms"); zring adds
 * response_flags (the istio_tcp_* label: "-", DENY, CONNECT, ...). Every
 * line is at info (SPEC), a refused or failed connection's with an `error`
 * key (ztunnel writes those at error). bytes_sent is what the node's own workload
 * sent (the client on the source side, the server on the destination side).
 *
 * Not under the per-call-site limit of the other lines (a node closes
 * thousands of connections a second and each one is its line), but under
 * one of its own, ZR_ACCESS_LOG_PER_S lines a second, process-wide, so that
 * whoever opens connections cannot make the log grow without bound; what
 * goes over it is counted and said in a summary line. Silenced by the level
 * (logLevel: warn, or POST /logging?level=access=warn). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/conn.h"
#include "core/worker.h"
#include "io/log.h"
#include "io/strbuf.h"

#define ZR_ACCESS_LOG_PER_S 20000u

static _Atomic unsigned long long window; /* second << 32 | lines written in it */
static _Atomic unsigned long long dropped;

static bool admit(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	unsigned long long sec = (unsigned long long)ts.tv_sec & 0xffffffffull;
	unsigned long long old = atomic_load_explicit(&window, memory_order_relaxed), upd;
	do {
		unsigned long long n = (old >> 32) == sec ? (old & 0xffffffffull) : 0;
		if (n >= ZR_ACCESS_LOG_PER_S) {
			atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
			return false;
		}
		upd = sec << 32 | (n + 1);
	} while (
		!atomic_compare_exchange_weak_explicit(&window, &old, upd, memory_order_relaxed, memory_order_relaxed));
	if ((upd & 0xffffffffull) == 1 && atomic_load_explicit(&dropped, memory_order_relaxed)) {
		unsigned long long n = atomic_exchange_explicit(&dropped, 0, memory_order_relaxed);
		if (n) {
			char f[64];
			snprintf(f, sizeof(f), "\"suppressed\":%llu", n);
			zr_log_write(ZR_LOG_WARN, "access", f, "%llu access log lines over %u/s suppressed", n,
				     ZR_ACCESS_LOG_PER_S);
		}
	}
	return true;
}

static void kv(zr_strbuf_t *b, const char *key, const char *value)
{
	if (!value || !*value)
		return; /* ztunnel leaves out what it does not know */
	if (b->len)
		zr_strbuf_append(b, ",", 1);
	zr_strbuf_json_str(b, key);
	zr_strbuf_append(b, ":", 1);
	zr_strbuf_json_str(b, value);
}

static void kv_addr(zr_strbuf_t *b, const char *key, const zr_sockaddr_t *sa)
{
	char a[ZR_ADDR_STRLEN];
	if (sa && sa->len)
		kv(b, key, zr_sockaddr_str(sa, a));
}

static const char *flag_of(zr_refuse_reason_t r)
{
	switch (r) {
	case ZR_REFUSE_DENIED:
		return "DENY";
	case ZR_REFUSE_NO_IDENTITY:
		return "IDENTITY_ERROR";
	default:
		return "CONNECT";
	}
}

void zr_access_log(const zr_conn_t *c, bool was_open)
{
	/* SPEC: every line at info, failed connections too (with an `error`
	 * key), so that logLevel: warn silences the access log as a whole;
	 * ztunnel writes its failures at error, which warn would let through. */
	bool failed = !was_open || c->refused;
	zr_log_level_t level = ZR_LOG_INFO;
	if (!ZR_LOG_ON(level, "access") || !admit())
		return;
	bool outbound = c->kind == ZR_LISTENER_OUTBOUND || c->kind == ZR_LISTENER_SOCKS5;
	bool mtls = outbound ? (c->dst_wl && c->dst_wl->protocol == ZR_PROTO_HBONE) : c->inbound_hbone;
	zr_strbuf_t b = ZR_STRBUF_INIT;

	kv_addr(&b, "src.addr", &c->peer);
	kv(&b, "src.workload", c->src_wl ? c->src_wl->name : NULL);
	kv(&b, "src.namespace", c->src_wl ? c->src_wl->namespace_ : NULL);
	if (mtls)
		kv(&b, "src.identity", outbound ? (c->src_wl ? c->src_wl->identity : NULL) : c->peer_id);
	if (outbound && mtls && c->dst_wl->n_ips) {
		zr_sockaddr_t node;
		zr_sockaddr_from_ip(&node, &c->dst_wl->ips[0], 15008);
		kv_addr(&b, "dst.addr", &node);
		kv_addr(&b, "dst.hbone_addr", &c->upstream);
	} else {
		kv_addr(&b, "dst.addr", c->upstream.len ? &c->upstream : &c->orig_dst);
	}
	kv(&b, "dst.service", c->svc ? c->svc->hostname : NULL);
	kv(&b, "dst.workload", c->dst_wl ? c->dst_wl->name : NULL);
	kv(&b, "dst.namespace", c->dst_wl ? c->dst_wl->namespace_ : NULL);
	if (mtls)
		kv(&b, "dst.identity", c->dst_wl ? c->dst_wl->identity : NULL);
	kv(&b, "direction", outbound ? "outbound" : "inbound");
	/* down: the client's bytes, up: the server's (relay and HBONE alike) */
	unsigned long long req = c->down.bytes_in, resp = c->up.bytes_in;
	uint64_t now = zr_now_ns();
	zr_strbuf_printf(&b, ",\"bytes_sent\":%llu,\"bytes_recv\":%llu,\"duration\":\"%llums\"", outbound ? req : resp,
			 outbound ? resp : req,
			 (unsigned long long)(now > c->start_ns ? (now - c->start_ns) / 1000000ull : 0));
	const char *flags = "-";
	if (c->refused)
		flags = flag_of((zr_refuse_reason_t)(c->refused - 1));
	else if (failed)
		flags = "CONNECT";
	kv(&b, "response_flags", flags);
	if (failed)
		kv(&b, "error",
		   !c->refused			      ? "connection closed before it was established" :
		   c->refused - 1 == ZR_REFUSE_DENIED ? "connection denied by authorization policy" :
							zr_refuse_reason_names[c->refused - 1]);
	if (!b.oom)
		zr_log_write(level, "access", b.data, "connection complete");
	zr_strbuf_free(&b);
}
