/* zr_metrics_render: istio_tcp_* summed over workers by label set, the
 * per-worker zring_* series, and output that promtool accepts. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl/server.h"
#include "tap.h"

#ifndef ZR_VERSION
#define ZR_VERSION "unknown"
#endif

#define LABELS_A "reporter=\"source\",source_workload=\"client\",connection_security_policy=\"unknown\""
#define LABELS_B "reporter=\"destination\",source_workload=\"client\",connection_security_policy=\"mutual_tls\""

struct fake {
	zr_config_t cfg;
	zr_worker_stats_t stats[2];
	size_t n_workers;
	zr_crypto_info_t crypto;
};

static const zr_config_t *cfg_acquire(void *ctx)
{
	return &((struct fake *)ctx)->cfg;
}

static void cfg_release(void *ctx, const zr_config_t *cfg)
{
}

static size_t n_workers(void *ctx)
{
	return ((struct fake *)ctx)->n_workers;
}

static const zr_worker_stats_t *worker_stats(void *ctx, size_t i)
{
	return &((struct fake *)ctx)->stats[i];
}

static const zr_crypto_info_t *crypto(void *ctx)
{
	return &((struct fake *)ctx)->crypto;
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* Runs `promtool check metrics` on `text`; returns its exit status, or -1. */
static int promtool(const char *text, size_t len)
{
	char path[] = "/tmp/zr-test-metrics-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len)
		return -1;
	close(fd);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < %s 1>&2", path);
	int st = system(cmd);
	unlink(path);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void)
{
	static struct fake f = {
		.n_workers = 2,
		.crypto = {.backend = "ipsec-mb", .description = "intel-ipsec-mb", .record_layer = "zring"}};
	zr_ctl_hooks_t hooks = {.ctx = &f,
				.config_acquire = cfg_acquire,
				.config_release = cfg_release,
				.n_workers = n_workers,
				.worker_stats = worker_stats,
				.crypto = crypto};
	zr_tcp_metrics_t a0 = {.labels = LABELS_A}, b0 = {.labels = LABELS_B}, a1 = {.labels = LABELS_A};
	zr_counter_add(&a0.opened, 3);
	zr_counter_add(&a1.opened, 2);
	zr_counter_add(&a0.sent_bytes, 1000);
	zr_counter_add(&a1.sent_bytes, 24);
	zr_counter_add(&a1.failed, 1);
	zr_counter_add(&b0.opened, 7);
	zr_counter_add(&b0.received_bytes, 9);
	a0.next = &b0;
	atomic_store_explicit(&f.stats[0].tcp_head, &a0, memory_order_release);
	atomic_store_explicit(&f.stats[1].tcp_head, &a1, memory_order_release);
	zr_counter_add(&f.stats[0].accepted, 11);
	zr_counter_add(&f.stats[1].accepted, 13);
	zr_counter_add(&f.stats[1].refused[ZR_REFUSE_NO_ROUTE], 4);
	zr_counter_add(&f.stats[0].relay_bytes_up, 5);
	zr_counter_add(&f.stats[1].connections_active, 6);
	zr_counter_add(&f.stats[1].accept_paused[ZR_ACCEPT_PAUSE_FD_LIMIT], 3);
	zr_counter_add(&f.stats[0].sockets_open[0], 2);
	zr_counter_add(&f.stats[1].sockets_open[0], 1);
	zr_counter_add(&f.stats[0].sockets_open[1], 4);
	zr_counter_add(&f.stats[1].hbone_server_conns, 5);

	zr_strbuf_t out = ZR_STRBUF_INIT;
	zr_metrics_render(&out, &hooks);
	const char *t = out.data;
	ok(t && !out.oom, "rendered");
	ok(strstr(t, "istio_build{component=\"zring\",tag=\"" ZR_VERSION "\"} 1\n") != NULL, "istio_build line");
	ok(strstr(t, "# TYPE istio_build gauge\n") != NULL, "istio_build is a gauge");
	ok(strstr(t, "\nistio_tcp_connections_opened_total{" LABELS_A "} 5\n") != NULL, "opened summed over workers");
	ok(strstr(t, "\nistio_tcp_connections_opened_total{" LABELS_B "} 7\n") != NULL, "second label set kept apart");
	ok(strstr(t, "\nistio_tcp_sent_bytes_total{" LABELS_A "} 1024\n") != NULL, "sent bytes summed");
	ok(strstr(t, "\nistio_tcp_received_bytes_total{" LABELS_B "} 9\n") != NULL, "received bytes");
	ok(strstr(t, "\nistio_tcp_connections_failed_total{" LABELS_A "} 1\n") != NULL, "failed summed");
	ok(strstr(t, "\nistio_tcp_connections_closed_total{" LABELS_A "} 0\n") != NULL, "closed present at 0");
	is(count(t, "istio_tcp_connections_opened_total{" LABELS_A "}"), 1, "one series per label body");
	is(count(t, "# TYPE istio_tcp_connections_opened_total counter\n"), 1, "opened TYPE once");
	ok(strstr(t, "\nzring_workers 2\n") != NULL, "zring_workers");
	ok(strstr(t, "# TYPE zring_crypto_backend_info gauge\n"
		     "zring_crypto_backend_info{backend=\"ipsec-mb\",record_layer=\"zring\"} 1\n") != NULL,
	   "crypto backend info names the backend and the record layer");
	is(count(t, "zring_crypto_backend_info{"), 1, "one crypto backend series");
	ok(strstr(t, "zring_worker_accepted_total{worker=\"0\"} 11\n") != NULL &&
		   strstr(t, "zring_worker_accepted_total{worker=\"1\"} 13\n") != NULL,
	   "accepted per worker");
	ok(strstr(t, "zring_connections_refused_total{worker=\"1\",reason=\"no_route\"} 4\n") != NULL,
	   "refused by worker and reason");
	ok(strstr(t, "zring_worker_relay_bytes_total{worker=\"0\",direction=\"upstream\"} 5\n") != NULL,
	   "relay bytes by direction");
	ok(strstr(t, "# TYPE zring_worker_connections_active gauge\nzring_worker_connections_active{worker=\"0\"} 0\n"
		     "zring_worker_connections_active{worker=\"1\"} 6\n") != NULL,
	   "active connections gauge");
	is(count(t, "zring_connections_refused_total{worker=\"0\","), ZR_REFUSE__COUNT, "every reason listed");
	ok(strstr(t, "zring_worker_accept_paused_total{worker=\"1\",reason=\"fd_limit\"} 3\n") != NULL,
	   "accept pauses by worker and reason");
	ok(strstr(t, "# TYPE zring_log_suppressed_total counter\nzring_log_suppressed_total 0\n") != NULL,
	   "log lines dropped by the rate limit");
	ok(strstr(t, "# TYPE istio_tcp_sockets_open gauge\nistio_tcp_sockets_open{reporter=\"source\"} 3\n"
		     "istio_tcp_sockets_open{reporter=\"destination\"} 9\n") != NULL,
	   "istio_tcp_sockets_open: accepted sockets summed, HBONE connections on the destination side");
	{
		struct rlimit rl;
		char want[64];
		getrlimit(RLIMIT_NOFILE, &rl);
		snprintf(want, sizeof(want), "\nprocess_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
		ok(strstr(t, want) != NULL, "process_max_fds is the RLIMIT_NOFILE soft limit");
		const char *p = strstr(t, "\nprocess_open_fds ");
		long n = p ? strtol(p + strlen("\nprocess_open_fds "), NULL, 10) : -1,
		     real = -1; /* less the directory's own */
		DIR *d = opendir("/proc/self/fd");
		for (struct dirent *e; d && (e = readdir(d));)
			real += e->d_name[0] != '.';
		if (d)
			closedir(d);
		is(n, real, "process_open_fds counts the descriptors of the process");
	}

	bool have_promtool = access("/usr/bin/promtool", X_OK) == 0;
	if (have_promtool)
		is(promtool(t, out.len), 0, "promtool check metrics accepts the output");
	else
		skip("no /usr/bin/promtool");

	/* No workers, no tcp series, a backend name that needs escaping. */
	f.n_workers = 0;
	f.crypto.backend = "q\"a\\t";
	f.crypto.record_layer = "openssl";
	zr_strbuf_reset(&out);
	zr_metrics_render(&out, &hooks);
	ok(strstr(out.data, "zring_crypto_backend_info{backend=\"q\\\"a\\\\t\",record_layer=\"openssl\"} 1\n") != NULL,
	   "label value escaped");
	if (have_promtool)
		is(promtool(out.data, out.len), 0, "promtool accepts the empty exposition");
	else
		skip("no /usr/bin/promtool");

	/* Without a choice (no hook): still one well-formed series. */
	hooks.crypto = NULL;
	zr_strbuf_reset(&out);
	zr_metrics_render(&out, &hooks);
	ok(strstr(out.data, "zring_crypto_backend_info{backend=\"none\",record_layer=\"none\"} 1\n") != NULL,
	   "no crypto hook: backend none");
	if (have_promtool)
		is(promtool(out.data, out.len), 0, "promtool accepts the empty exposition");
	else
		skip("no /usr/bin/promtool");
	zr_strbuf_free(&out);
	return done_testing();
}
