/* The control thread's HTTP servers: metrics (15020), readiness (15021) and
 * admin (127.0.0.1:15000). They run on their own thread with a poll loop and
 * reach the runtime only through the hooks below. */
#ifndef ZR_CTL_SERVER_H
#define ZR_CTL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/stats-t.h"
#include "ctl/config-t.h"
#include "io/strbuf.h"

/* The record-crypto choice made at start-up (fixed for the process's life),
 * as /metrics and /config_dump show it. */
typedef struct zr_crypto_info {
	const char *backend;	      /* AEAD backend doing record crypto: "ipsec-mb", "openssl", "dpdk" */
	const char *description;      /* the backend's own description ("intel-ipsec-mb 1.3, VAES/AVX-512") */
	const char *record_layer;     /* "zring" (zring's record layer) or "openssl" (OpenSSL's) */
	const char *openssl_provider; /* provider loaded for handshakes, or NULL */
} zr_crypto_info_t;

typedef struct zr_ctl_hooks {
	void *ctx;
	/* Current config; valid until the matching release. Never NULL after start. */
	const zr_config_t *(*config_acquire)(void *ctx);
	void (*config_release)(void *ctx, const zr_config_t *cfg);
	/* Workers' counters (stable pointers for the life of the process). */
	size_t (*n_workers)(void *ctx);
	const zr_worker_stats_t *(*worker_stats)(void *ctx, size_t i);
	/* Appends a JSON array of live connections (objects with worker, src, dst,
	 * srcWorkload, dstWorkload, dstService, state, bytesUp, bytesDown, ageMs)
	 * to out and, when by_workload is not NULL, one line per connection with
	 * a local workload to it: `"<uid>"\t<in|out>\t{src, originalDst,
	 * actualDst, protocol}\n` (JSON strings and object, ztunnel's names). */
	void (*dump_connections)(void *ctx, zr_strbuf_t *out, zr_strbuf_t *by_workload);
	/* True when ready; otherwise fills `pending`, a comma-separated list
	 * ("workers", "certificate for spiffe://..."). */
	bool (*ready)(void *ctx, char *pending, size_t cap);
	/* Calls fn with each loaded certificate's identity and notAfter (seconds
	 * since the epoch), under the config lock; NULL (or no hook): none. */
	void (*certificates)(void *ctx, void (*fn)(void *arg, const char *identity, int64_t not_after), void *arg);
	/* Begins a drain and exit (as SIGTERM). */
	void (*quit)(void *ctx);
	/* The record-crypto choice; NULL (or no hook) when none was made. */
	const zr_crypto_info_t *(*crypto)(void *ctx);
} zr_ctl_hooks_t;

typedef struct zr_ctl_servers zr_ctl_servers_t;

/* Binds the enabled listeners of `cfg` (admin must be a loopback address:
 * anything else is refused with -EPERM) and starts the server thread.
 * Returns 0, or a negative errno (bind failure: message logged). `hooks` is
 * copied. Call from the main thread. */
int zr_ctl_servers_start(const zr_config_t *cfg, const zr_ctl_hooks_t *hooks, zr_ctl_servers_t **out)
	__attribute__((warn_unused_result));

/* Stops the thread, closes the sockets, frees. */
void zr_ctl_servers_stop(zr_ctl_servers_t *srv);

/* The server thread normally takes a descriptor table of its own, so that
 * workers using every descriptor the process may have cannot starve the
 * probes. Tests: true keeps the process's (as where unshare is refused), for
 * servers started after the call. */
void zr_ctl_servers_share_fd_table(bool shared);

typedef enum zr_ctl_listener {
	ZR_CTL_METRICS = 0,
	ZR_CTL_READINESS,
	ZR_CTL_ADMIN,
	ZR_CTL__COUNT
} zr_ctl_listener_t;

/* Port a listener is bound to (useful when configured with port 0), or 0 when
 * it is disabled. Any thread, between start and stop. */
unsigned zr_ctl_servers_port(const zr_ctl_servers_t *srv, zr_ctl_listener_t which);

/* Renders the Prometheus text exposition (format 0.0.4) into out: istio_build,
 * istio_tcp_* summed over workers by label set, and zring_* metrics. Pure;
 * any thread. Exposed for tests. */
void zr_metrics_render(zr_strbuf_t *out, const zr_ctl_hooks_t *hooks);

/* Appends the /config_dump JSON document. Exposed for tests. */
void zr_config_dump(zr_strbuf_t *out, const zr_ctl_hooks_t *hooks);

/* `zring ctl SUBCOMMAND [--admin ADDR]`: argv after "ctl". Returns exit code. */
int zr_ctl_cli_main(int argc, char **argv);

#endif
