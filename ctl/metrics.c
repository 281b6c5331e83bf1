/* Prometheus text exposition (format 0.0.4). Workers keep plain per-worker
 * counters; this sums them at scrape time, so the data path pays nothing for
 * a scrape. istio_tcp_* series are merged across workers by their label body
 * (workers escape and format labels identically, so equal strings are equal
 * label sets). */
#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "ctl/server.h"
#include "io/log.h"

const char *const zr_refuse_reason_names[ZR_REFUSE__COUNT] = {
	"unknown_source", "no_route",	     "no_endpoint",	"no_identity",
	"connect_failed", "connect_timeout", "socks5_protocol", "no_original_dst",
	"not_local",	  "overload",	     "bad_request",	"denied",
	"self",		  "loopback",	     "headers_timeout",
};

const char *const zr_tls_failure_names[ZR_TLS_FAIL__COUNT] = {
	"bad_certificate", "expired", "identity_not_allowed", "trust_domain", "protocol", "timeout", "no_identity",
};

#ifndef ZR_VERSION
#define ZR_VERSION "unknown"
#endif

static void family(zr_strbuf_t *out, const char *name, const char *type, const char *help)
{
	zr_strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Escapes a label value per the text format: backslash, quote, newline. */
static void label_value(zr_strbuf_t *out, const char *s)
{
	for (; s && *s; s++) {
		if (*s == '\\' || *s == '"')
			zr_strbuf_printf(out, "\\%c", *s);
		else if (*s == '\n')
			zr_strbuf_puts(out, "\\n");
		else
			zr_strbuf_append(out, s, 1);
	}
}

static int cmp_labels(const void *a, const void *b)
{
	const zr_tcp_metrics_t *x = *(const zr_tcp_metrics_t *const *)a, *y = *(const zr_tcp_metrics_t *const *)b;
	return strcmp(x->labels, y->labels);
}

static const struct {
	const char *name, *help;
	size_t off;
} tcp_families[] = {
	{"istio_tcp_connections_opened_total", "The total number of TCP connections opened",
	 offsetof(zr_tcp_metrics_t, opened)},
	{"istio_tcp_connections_closed_total", "The total number of TCP connections closed",
	 offsetof(zr_tcp_metrics_t, closed)},
	{"istio_tcp_received_bytes_total",
	 "The size of total bytes received during request in case of a TCP connection",
	 offsetof(zr_tcp_metrics_t, received_bytes)},
	{"istio_tcp_sent_bytes_total", "The size of total bytes sent during response in case of TCP connection",
	 offsetof(zr_tcp_metrics_t, sent_bytes)},
	{"istio_tcp_connections_failed_total", "The total number of TCP connections that failed",
	 offsetof(zr_tcp_metrics_t, failed)},
};

static uint64_t tcp_counter(const zr_tcp_metrics_t *m, size_t off)
{
	return zr_counter_get((const zr_counter_t *)((const char *)m + off));
}

static void render_tcp(zr_strbuf_t *out, const zr_ctl_hooks_t *hooks, size_t n_workers)
{
	/* Lists only grow at the head, so a second walk may see more entries than
	 * the count: those are left for the next scrape. */
	size_t n = 0, cap = 0;
	for (size_t w = 0; w < n_workers; w++)
		for (zr_tcp_metrics_t *m =
			     atomic_load_explicit(&hooks->worker_stats(hooks->ctx, w)->tcp_head, memory_order_acquire);
		     m; m = m->next)
			cap++;
	zr_tcp_metrics_t **all = cap ? malloc(cap * sizeof(*all)) : NULL;
	if (cap && !all) {
		out->oom = true;
		return;
	}
	for (size_t w = 0; w < n_workers; w++)
		for (zr_tcp_metrics_t *m =
			     atomic_load_explicit(&hooks->worker_stats(hooks->ctx, w)->tcp_head, memory_order_acquire);
		     m && n < cap; m = m->next)
			if (m->labels)
				all[n++] = m;
	if (n)
		qsort(all, n, sizeof(*all), cmp_labels);
	for (size_t f = 0; f < sizeof(tcp_families) / sizeof(tcp_families[0]); f++) {
		family(out, tcp_families[f].name, "counter", tcp_families[f].help);
		for (size_t i = 0; i < n;) {
			uint64_t sum = 0;
			size_t j = i;
			for (; j < n && strcmp(all[j]->labels, all[i]->labels) == 0; j++)
				sum += tcp_counter(all[j], tcp_families[f].off);
			if (all[i]->labels[0])
				zr_strbuf_printf(out, "%s{%s} %llu\n", tcp_families[f].name, all[i]->labels,
						 (unsigned long long)sum);
			else
				zr_strbuf_printf(out, "%s %llu\n", tcp_families[f].name, (unsigned long long)sum);
			i = j;
		}
	}
	free(all);
	/* Accepted sockets open: outbound and SOCKS5 as source, inbound
	 * plaintext and HBONE connections as destination (ztunnel's gauge). */
	uint64_t open_src = 0, open_dst = 0;
	for (size_t w = 0; w < n_workers; w++) {
		const zr_worker_stats_t *s = hooks->worker_stats(hooks->ctx, w);
		open_src += zr_counter_get(&s->sockets_open[0]);
		open_dst += zr_counter_get(&s->sockets_open[1]) + zr_counter_get(&s->hbone_server_conns);
	}
	family(out, "istio_tcp_sockets_open", "gauge", "The current number of open TCP sockets");
	zr_strbuf_printf(out, "istio_tcp_sockets_open{reporter=\"source\"} %llu\n", (unsigned long long)open_src);
	zr_strbuf_printf(out, "istio_tcp_sockets_open{reporter=\"destination\"} %llu\n", (unsigned long long)open_dst);
}

/* The process's descriptors: /proc/self/fd (the main thread's table, which
 * the workers share; this control thread may have a table of its own, which
 * /proc/thread-self/fd would list) and RLIMIT_NOFILE. */
static void render_process(zr_strbuf_t *out)
{
	long n = -1;
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		struct stat mine, there;
		char own[32];
		snprintf(own, sizeof(own), "%d", dirfd(d));
		bool shared = fstat(dirfd(d), &mine) == 0 && fstatat(dirfd(d), own, &there, 0) == 0 &&
			      mine.st_dev == there.st_dev && mine.st_ino == there.st_ino;
		n = 0;
		for (struct dirent *e; (e = readdir(d));)
			if (e->d_name[0] != '.')
				n++;
		closedir(d);
		if (shared)
			n--; /* the descriptor of d itself is in the table */
	}
	if (n >= 0) {
		family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
		zr_strbuf_printf(out, "process_open_fds %ld\n", n);
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
		zr_strbuf_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
	}
}

static const struct {
	const char *name, *type, *help;
	size_t off;
} worker_families[] = {
	{"zring_worker_loop_iterations_total", "counter", "Event loop turns of the worker",
	 offsetof(zr_worker_stats_t, loop_turns)},
	{"zring_worker_completions_total", "counter", "I/O completions handled by the worker",
	 offsetof(zr_worker_stats_t, completions)},
	{"zring_worker_accepted_total", "counter", "Connections accepted by the worker",
	 offsetof(zr_worker_stats_t, accepted)},
	{"zring_worker_connections_active", "gauge", "Connections currently owned by the worker",
	 offsetof(zr_worker_stats_t, connections_active)},
	{"zring_worker_buffers_in_use", "gauge", "I/O buffers of the worker currently in use",
	 offsetof(zr_worker_stats_t, buffers_in_use)},
	/* Not "..._buffers_total": promtool's lint forbids _total on a gauge. */
	{"zring_worker_buffers_registered", "gauge", "I/O buffers registered by the worker",
	 offsetof(zr_worker_stats_t, buffers_total)},
	{"zring_worker_recv_buffer_exhausted_total", "counter", "Receives that found no free provided buffer",
	 offsetof(zr_worker_stats_t, recv_nobufs)},
	{"zring_worker_backpressure_pauses_total", "counter", "Times a relay stopped reading because its peer was full",
	 offsetof(zr_worker_stats_t, backpressure_pauses)},
	{"zring_worker_config_epoch", "gauge", "Epoch of the config snapshot the worker has seen",
	 offsetof(zr_worker_stats_t, config_epoch)},
	{"zring_hbone_streams_active", "gauge", "HBONE CONNECT streams open on the worker",
	 offsetof(zr_worker_stats_t, hbone_streams_active)},
	{"zring_hbone_pool_reused_total", "counter", "Outbound streams placed on an already pooled HBONE connection",
	 offsetof(zr_worker_stats_t, hbone_pool_reused)},
	{"zring_source_bind_failures_total", "counter",
	 "Outbound connections that could not leave from the source workload's address (left from the node's)",
	 offsetof(zr_worker_stats_t, source_bind_failures)},
};

static uint64_t worker_counter(const zr_worker_stats_t *s, size_t off)
{
	return zr_counter_get((const zr_counter_t *)((const char *)s + off));
}

static void render_workers(zr_strbuf_t *out, const zr_ctl_hooks_t *hooks, size_t n_workers)
{
	for (size_t f = 0; f < sizeof(worker_families) / sizeof(worker_families[0]); f++) {
		family(out, worker_families[f].name, worker_families[f].type, worker_families[f].help);
		for (size_t w = 0; w < n_workers; w++)
			zr_strbuf_printf(out, "%s{worker=\"%zu\"} %llu\n", worker_families[f].name, w,
					 (unsigned long long)worker_counter(hooks->worker_stats(hooks->ctx, w),
									    worker_families[f].off));
	}
	family(out, "zring_worker_relay_bytes_total", "counter", "Bytes relayed by the worker, by direction");
	for (size_t w = 0; w < n_workers; w++) {
		const zr_worker_stats_t *s = hooks->worker_stats(hooks->ctx, w);
		zr_strbuf_printf(out, "zring_worker_relay_bytes_total{worker=\"%zu\",direction=\"upstream\"} %llu\n", w,
				 (unsigned long long)zr_counter_get(&s->relay_bytes_up));
		zr_strbuf_printf(out, "zring_worker_relay_bytes_total{worker=\"%zu\",direction=\"downstream\"} %llu\n",
				 w, (unsigned long long)zr_counter_get(&s->relay_bytes_down));
	}
	family(out, "zring_hbone_connections", "gauge", "HBONE (mTLS HTTP/2) connections open, by role");
	for (size_t w = 0; w < n_workers; w++) {
		const zr_worker_stats_t *s = hooks->worker_stats(hooks->ctx, w);
		zr_strbuf_printf(out, "zring_hbone_connections{worker=\"%zu\",role=\"client\"} %llu\n", w,
				 (unsigned long long)zr_counter_get(&s->hbone_client_conns));
		zr_strbuf_printf(out, "zring_hbone_connections{worker=\"%zu\",role=\"server\"} %llu\n", w,
				 (unsigned long long)zr_counter_get(&s->hbone_server_conns));
	}
	family(out, "zring_tls_handshake_failures_total", "counter", "TLS handshakes that failed, by reason");
	for (size_t w = 0; w < n_workers; w++) {
		const zr_worker_stats_t *s = hooks->worker_stats(hooks->ctx, w);
		for (int r = 0; r < ZR_TLS_FAIL__COUNT; r++)
			zr_strbuf_printf(out, "zring_tls_handshake_failures_total{worker=\"%zu\",reason=\"%s\"} %llu\n",
					 w, zr_tls_failure_names[r],
					 (unsigned long long)zr_counter_get(&s->tls_failures[r]));
	}
	family(out, "zring_connections_refused_total", "counter",
	       "Connections refused or failed before relaying, by worker and reason");
	for (size_t w = 0; w < n_workers; w++) {
		const zr_worker_stats_t *s = hooks->worker_stats(hooks->ctx, w);
		for (int r = 0; r < ZR_REFUSE__COUNT; r++)
			zr_strbuf_printf(out, "zring_connections_refused_total{worker=\"%zu\",reason=\"%s\"} %llu\n", w,
					 zr_refuse_reason_names[r], (unsigned long long)zr_counter_get(&s->refused[r]));
	}
}

const char *const zr_accept_pause_names[ZR_ACCEPT_PAUSE__COUNT] = {"fd_limit", "memory", "error"};

/* What bounds zring under floods: accepts paused at the fd limit, log lines
 * dropped by the per-call-site rate limit (io/log.h). */
static void render_limits(zr_strbuf_t *out, const zr_ctl_hooks_t *hooks, size_t n_workers)
{
	family(out, "zring_worker_accept_paused_total", "counter",
	       "Times a listener stopped accepting for a while (out of file descriptors or memory), by reason");
	for (size_t w = 0; w < n_workers; w++) {
		const zr_worker_stats_t *s = hooks->worker_stats(hooks->ctx, w);
		for (int r = 0; r < ZR_ACCEPT_PAUSE__COUNT; r++)
			zr_strbuf_printf(out, "zring_worker_accept_paused_total{worker=\"%zu\",reason=\"%s\"} %llu\n",
					 w, zr_accept_pause_names[r],
					 (unsigned long long)zr_counter_get(&s->accept_paused[r]));
	}
	family(out, "zring_log_suppressed_total", "counter", "Log lines dropped by the per-call-site rate limit");
	zr_strbuf_printf(out, "zring_log_suppressed_total %llu\n", zr_log_suppressed_total());
}

struct cert_expiry_ctx {
	zr_strbuf_t *out;
	int64_t now;
};

static void cert_expiry_line(void *arg, const char *identity, int64_t not_after)
{
	struct cert_expiry_ctx *x = arg;
	zr_strbuf_puts(x->out, "zring_certificate_expiry_seconds{identity=\"");
	label_value(x->out, identity);
	zr_strbuf_printf(x->out, "\"} %lld\n", (long long)(not_after - x->now));
}

/* Seconds from now to each loaded certificate's notAfter; negative once it
 * has expired (then it is no longer presented, and readiness says so). */
static void render_cert_expiry(zr_strbuf_t *out, const zr_ctl_hooks_t *hooks)
{
	family(out, "zring_certificate_expiry_seconds", "gauge",
	       "Seconds until the certificate of each local identity expires (negative: expired)");
	if (!hooks->certificates)
		return;
	struct cert_expiry_ctx x = {out, (int64_t)time(NULL)};
	hooks->certificates(hooks->ctx, cert_expiry_line, &x);
}

void zr_metrics_render(zr_strbuf_t *out, const zr_ctl_hooks_t *hooks)
{
	size_t n_workers = hooks->n_workers(hooks->ctx);
	family(out, "istio_build", "gauge", "Istio component build info");
	zr_strbuf_puts(out, "istio_build{component=\"zring\",tag=\"");
	label_value(out, ZR_VERSION);
	zr_strbuf_puts(out, "\"} 1\n");
	render_tcp(out, hooks, n_workers);
	render_process(out);
	family(out, "zring_workers", "gauge", "Number of worker threads");
	zr_strbuf_printf(out, "zring_workers %zu\n", n_workers);
	const zr_crypto_info_t *ci = hooks->crypto ? hooks->crypto(hooks->ctx) : NULL;
	family(out, "zring_crypto_backend_info", "gauge", "TLS record-crypto backend and record layer in use");
	zr_strbuf_puts(out, "zring_crypto_backend_info{backend=\"");
	label_value(out, ci && ci->backend ? ci->backend : "none");
	zr_strbuf_puts(out, "\",record_layer=\"");
	label_value(out, ci && ci->record_layer ? ci->record_layer : "none");
	zr_strbuf_puts(out, "\"} 1\n");
	render_workers(out, hooks, n_workers);
	render_limits(out, hooks, n_workers);
	render_cert_expiry(out, hooks);
}
