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

/* ztunnel's CommonTrafficLabels, in its order: *_workload is the
 * workloadName (the pod name where that is empty), *_app and
 * *_canonical_service the canonicalName, *_version and
 * *_canonical_revision the canonicalRevision; "unknown" for what is not
 * known. The principal is given: only a verified identity is one. */
static void workload_labels(zr_strbuf_t *b, const char *side, const zr_workload_t *wl, const char *principal)
{
	char key[64];
	const char *wname = wl ? (wl->workload_name && *wl->workload_name ? wl->workload_name : wl->name) : NULL;
	const char *cname = wl ? wl->canonical_name : NULL, *crev = wl ? wl->canonical_revision : NULL;
	snprintf(key, sizeof(key), "%s_workload", side);
	label(b, key, wname);
	snprintf(key, sizeof(key), "%s_canonical_service", side);
	label(b, key, cname);
	snprintf(key, sizeof(key), "%s_canonical_revision", side);
	label(b, key, crev);
	snprintf(key, sizeof(key), "%s_workload_namespace", side);
	label(b, key, wl ? wl->namespace_ : NULL);
	snprintf(key, sizeof(key), "%s_principal", side);
	label(b, key, principal);
	snprintf(key, sizeof(key), "%s_app", side);
	label(b, key, cname);
	snprintf(key, sizeof(key), "%s_version", side);
	label(b, key, crev);
	snprintf(key, sizeof(key), "%s_cluster", side);
	label(b, key, wl ? wl->cluster_id : NULL);
}

zr_tcp_metrics_t *zr_tcp_metrics_for(zr_worker_t *w, const zr_conn_t *c, const char *reporter,
				     const char *response_flags, bool mtls)
{
	zr_strbuf_t b = ZR_STRBUF_INIT;
	bool source = strcmp(reporter, "source") == 0;
	label(&b, "reporter", reporter);
	/* source_principal is a verified identity or unknown: on the source
	 * reporter the certificate zring presents over mTLS (none in
	 * plaintext), on the destination the peer's verified certificate.
	 * destination_principal is the destination workload's identity. */
	const char *src_principal = source ? (mtls && c->src_wl ? c->src_wl->identity : NULL) : c->peer_id;
	workload_labels(&b, "source", c->src_wl, src_principal);
	label(&b, "destination_service", c->svc ? c->svc->hostname : NULL);
	label(&b, "destination_service_namespace", c->svc ? c->svc->namespace_ : NULL);
	label(&b, "destination_service_name", c->svc ? c->svc->name : NULL);
	workload_labels(&b, "destination", c->dst_wl, c->dst_wl ? c->dst_wl->identity : NULL);
	label(&b, "request_protocol", "tcp");
	label(&b, "response_flags", response_flags);
	label(&b, "connection_security_policy", mtls ? "mutual_tls" : "unknown");
	label(&b, "source_region", c->src_wl ? c->src_wl->locality.region : NULL);
	label(&b, "source_zone", c->src_wl ? c->src_wl->locality.zone : NULL);
	label(&b, "destination_region", c->dst_wl ? c->dst_wl->locality.region : NULL);
	label(&b, "destination_zone", c->dst_wl ? c->dst_wl->locality.zone : NULL);
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
	m->destination = !source;
	m->mtls = mtls;
	m->hash_next = w->tcp_hash[h & w->tcp_hash_mask];
	w->tcp_hash[h & w->tcp_hash_mask] = m;
	m->next = atomic_load_explicit(&w->stats.tcp_head, memory_order_relaxed);
	atomic_store_explicit(&w->stats.tcp_head, m, memory_order_release);
	return m;
}

void zr_tcp_metrics_fail(zr_conn_t *c, const char *response_flags)
{
	zr_tcp_metrics_t *m = c->metrics;
	if (!m)
		return;
	if (!response_flags || !*response_flags || strcmp(response_flags, "-") == 0)
		response_flags = "CONNECT"; /* ztunnel's default for a failure */
	zr_counter_add(&m->opened, 1);
	zr_tcp_metrics_t *f =
		zr_tcp_metrics_for(c->w, c, m->destination ? "destination" : "source", response_flags, m->mtls);
	if (!f)
		return;
	zr_counter_add(&f->closed, 1);
	zr_counter_add(&f->failed, 1);
}
