/* istio_tcp_* label sets: one entry per distinct label body per worker,
 * found through a worker-private hash table and published on the worker's
 * list for the control thread to sum at scrape time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/worker.h"
#include "io/strbuf.h"

static void label(zr_strbuf_t *b, const char *name, const char *value)
{
	if (b->len)
		zr_strbuf_append(b, ",", 1);
	zr_strbuf_puts(b, name);
	zr_strbuf_append(b, "=\"", 2);
	if (!value || !*value)
		value = "unknown";
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"')
			zr_strbuf_append(b, "\\", 1);
		if (*p == '\n') {
			zr_strbuf_append(b, "\\n", 2);
			continue;
		}
		zr_strbuf_append(b, p, 1);
	}
	zr_strbuf_append(b, "\"", 1);
}

static void workload_labels(zr_strbuf_t *b, const char *side, const zr_workload_t *wl, const char *principal)
{
	char key[64];
	snprintf(key, sizeof(key), "%s_workload", side);
	label(b, key, wl ? wl->name : NULL);
	snprintf(key, sizeof(key), "%s_workload_namespace", side);
	label(b, key, wl ? wl->namespace_ : NULL);
	snprintf(key, sizeof(key), "%s_principal", side);
	label(b, key, principal);
	snprintf(key, sizeof(key), "%s_app", side);
	label(b, key, wl ? (wl->canonical_name ? wl->canonical_name : wl->name) : NULL);
	snprintf(key, sizeof(key), "%s_version", side);
	label(b, key, wl ? wl->canonical_revision : NULL);
	snprintf(key, sizeof(key), "%s_cluster", side);
	label(b, key, wl ? wl->cluster_id : NULL);
}

zr_tcp_metrics_t *zr_tcp_metrics_for(zr_worker_t *w, const zr_conn_t *c, const char *reporter,
				     const char *response_flags, bool mtls)
{
	zr_strbuf_t b = ZR_STRBUF_INIT;
	bool source = strcmp(reporter, "source") == 0;
	label(&b, "reporter", reporter);
	/* The source reporter knows its own workload's identity; inbound HBONE
	 * has the verified peer's; inbound plaintext has none. The destination
	 * principal of outbound HBONE is the identity the TLS client demands. */
	const char *src_principal = source ? (c->src_wl ? c->src_wl->identity : NULL) : c->peer_id;
	workload_labels(&b, "source", c->src_wl, src_principal);
	label(&b, "destination_service", c->svc ? c->svc->hostname : NULL);
	label(&b, "destination_service_namespace", c->svc ? c->svc->namespace_ : NULL);
	label(&b, "destination_service_name", c->svc ? c->svc->name : NULL);
	workload_labels(&b, "destination", c->dst_wl, c->dst_wl ? c->dst_wl->identity : NULL);
	label(&b, "request_protocol", "tcp");
	label(&b, "response_flags", response_flags);
	label(&b, "connection_security_policy", mtls ? "mutual_tls" : "unknown");
	if (b.oom) {
		zr_strbuf_free(&b);
		return NULL;
	}

	if (!w->tcp_hash) {
		w->tcp_hash_mask = 255;
		w->tcp_hash = calloc(w->tcp_hash_mask + 1, sizeof(*w->tcp_hash));
		if (!w->tcp_hash) {
			zr_strbuf_free(&b);
			return NULL;
		}
	}
	uint32_t h = zr_str_hash(b.data);
	for (zr_tcp_metrics_t *m = w->tcp_hash[h & w->tcp_hash_mask]; m; m = m->hash_next) {
		if (m->hash == h && strcmp(m->labels, b.data) == 0) {
			zr_strbuf_free(&b);
			return m;
		}
	}
	zr_tcp_metrics_t *m = calloc(1, sizeof(*m));
	if (!m) {
		zr_strbuf_free(&b);
		return NULL;
	}
	m->labels = b.data; /* ownership moves to the entry */
	m->hash = h;
	m->hash_next = w->tcp_hash[h & w->tcp_hash_mask];
	w->tcp_hash[h & w->tcp_hash_mask] = m;
	m->next = atomic_load_explicit(&w->stats.tcp_head, memory_order_relaxed);
	atomic_store_explicit(&w->stats.tcp_head, m, memory_order_release);
	return m;
}
