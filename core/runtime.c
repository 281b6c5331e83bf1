/* The process runtime on the control side: creates the workers (count, CPU
 * pinning, NUMA arenas), binds their listeners, publishes config snapshots
 * and retires old ones, and answers the ctl servers' hooks. */
#include <errno.h>
#include <numa.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/mem.h"
#include "core/runtime-t.h"
#include "core/worker.h"
#include "crypto/tls.h"
#include "ctl/config.h"
#include "io/log.h"

static unsigned cpus_of_process(unsigned *list, unsigned cap)
{
	cpu_set_t set;
	unsigned n = 0;
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 0;
	for (unsigned i = 0; i < CPU_SETSIZE && n < cap; i++)
		if (CPU_ISSET(i, &set))
			list[n++] = i;
	return n;
}

static int bind_listeners(zr_runtime_t *rt, const zr_config_t *cfg)
{
	const struct {
		const zr_listener_cfg_t *cfg;
		zr_listener_kind_t kind;
		const char *name;
	} wanted[] = {
		{&cfg->listeners.outbound, ZR_LISTENER_OUTBOUND, "outbound"},
		{&cfg->listeners.socks5, ZR_LISTENER_SOCKS5, "socks5"},
		{&cfg->listeners.inbound_plaintext, ZR_LISTENER_INBOUND_PLAINTEXT, "inboundPlaintext"},
		{&cfg->listeners.hbone, ZR_LISTENER_HBONE, "hbone"},
	};
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
		if (!wanted[i].cfg->enabled)
			continue;
		/* SO_REUSEPORT would let us silently share a port with another
		 * process of the same user (a second zring): bind once without it
		 * first, so that "in use" is reported as such. */
		int probe = socket(wanted[i].cfg->addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int one = 1;
		setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (probe >= 0 && bind(probe, &wanted[i].cfg->addr.sa, wanted[i].cfg->addr.len) < 0) {
			char a[ZR_ADDR_STRLEN];
			zr_err("runtime", "can't listen on %s (listeners.%s): %s",
			       zr_sockaddr_str(&wanted[i].cfg->addr, a), wanted[i].name, strerror(errno));
			close(probe);
			return -1;
		}
		if (probe >= 0)
			close(probe);
		for (unsigned k = 0; k < rt->n_workers; k++) {
			int fd, ret = zr_listener_socket(&wanted[i].cfg->addr, false, &fd);
			char a[ZR_ADDR_STRLEN];
			if (ret < 0) {
				zr_err("runtime", "can't listen on %s (listeners.%s): %s",
				       zr_sockaddr_str(&wanted[i].cfg->addr, a), wanted[i].name, strerror(-ret));
				return -1;
			}
			if (!zr_listener_add(rt->workers[k], wanted[i].kind, fd, &wanted[i].cfg->addr, false)) {
				close(fd);
				return -ENOMEM;
			}
		}
	}
	return 0;
}

int zr_runtime_start(zr_config_t *cfg, zr_identity_store_t *ids, zr_runtime_t **out)
{
	zr_runtime_t *rt = calloc(1, sizeof(*rt));
	if (!rt) {
		zr_config_free(cfg);
		if (ids)
			zr_identity_store_unref(ids);
		return -ENOMEM;
	}
	pthread_mutex_init(&rt->cfg_lock, NULL);
	pthread_mutex_init(&rt->post_lock, NULL);
	rt->epoch = 1;
	rt->owned = zr_snapshot_new(cfg, ids, rt->epoch);
	if (!rt->owned) {
		zr_config_free(cfg);
		if (ids)
			zr_identity_store_unref(ids);
		free(rt);
		return -ENOMEM;
	}
	atomic_store(&rt->current, rt->owned);
	rt->quit_fd = -1;

	unsigned cpus[CPU_SETSIZE];
	unsigned n_cpus;
	if (cfg->n_cpu_list) {
		n_cpus = (unsigned)(cfg->n_cpu_list < CPU_SETSIZE ? cfg->n_cpu_list : CPU_SETSIZE);
		for (unsigned i = 0; i < n_cpus; i++)
			cpus[i] = cfg->cpu_list[i];
	} else {
		n_cpus = cpus_of_process(cpus, CPU_SETSIZE);
	}
	rt->n_workers = cfg->workers ? cfg->workers : (n_cpus ? n_cpus : 1);
	rt->workers = calloc(rt->n_workers, sizeof(*rt->workers));
	if (!rt->workers)
		goto nomem;

	bool numa = numa_available() >= 0;
	unsigned arena_of_node[64];
	memset(arena_of_node, 0xff, sizeof(arena_of_node));
	for (unsigned i = 0; i < rt->n_workers; i++) {
		zr_worker_t *w;
		if (posix_memalign((void **)&w, 64, sizeof(*w)) != 0)
			goto nomem;
		memset(w, 0, sizeof(*w));
		rt->workers[i] = w;
		w->index = i;
		w->rt = rt;
		w->cpu = n_cpus ? (int)cpus[i % n_cpus] : -1;
		w->numa_node = numa && w->cpu >= 0 ? numa_node_of_cpu(w->cpu) : 0;
		if (w->numa_node < 0 || w->numa_node >= 64)
			w->numa_node = 0;
		if (arena_of_node[w->numa_node] == 0xffffffffu)
			arena_of_node[w->numa_node] = zr_mem_arena_create();
		w->arena = arena_of_node[w->numa_node];
		w->snap = rt->owned;
		zr_snapshot_ref(w->snap);
		atomic_store(&w->seen_epoch, rt->epoch);
		w->mailbox.eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->mailbox.eventfd < 0)
			goto nomem;
	}
	*out = rt;

	int ret = bind_listeners(rt, cfg);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < rt->n_workers; i++) {
		ret = zr_worker_start(rt->workers[i]);
		if (ret < 0) {
			zr_err("runtime", "can't start worker %u: %s", i, strerror(-ret));
			return ret;
		}
	}
	/* Wait for every worker's ring and listeners. */
	for (unsigned i = 0; i < rt->n_workers; i++) {
		int r;
		while ((r = atomic_load_explicit(&rt->workers[i]->start_result, memory_order_acquire)) == 0)
			usleep(1000);
		if (r < 0)
			return r;
	}
	atomic_store(&rt->ready, true);
	return 0;
nomem:
	*out = rt;
	return -ENOMEM;
}

const zr_config_t *zr_runtime_config(const zr_runtime_t *rt)
{
	return rt->owned->cfg;
}

void zr_runtime_publish(zr_runtime_t *rt, zr_config_t *cfg, zr_identity_store_t *ids)
{
	zr_snapshot_t *s = zr_snapshot_new(cfg, ids, rt->epoch + 1);
	if (!s) {
		zr_err("runtime", "out of memory publishing config");
		zr_config_free(cfg);
		if (ids)
			zr_identity_store_unref(ids);
		return;
	}
	zr_old_snapshot_t *old = malloc(sizeof(*old));
	if (!old) {
		zr_snapshot_unref(s);
		return;
	}
	pthread_mutex_lock(&rt->cfg_lock);
	rt->epoch++;
	old->snap = rt->owned;
	old->replaced_by = rt->epoch;
	old->next = rt->retired;
	rt->retired = old;
	rt->owned = s;
	atomic_store_explicit(&rt->current, s, memory_order_release);
	pthread_mutex_unlock(&rt->cfg_lock);
	for (unsigned i = 0; i < rt->n_workers; i++)
		zr_worker_post(rt->workers[i], ZR_MSG_WAKE, NULL);
}

void zr_runtime_reap(zr_runtime_t *rt)
{
	uint64_t min_seen = UINT64_MAX;
	for (unsigned i = 0; i < rt->n_workers; i++) {
		zr_worker_t *w = rt->workers[i];
		if (atomic_load_explicit(&w->exited, memory_order_acquire))
			continue;
		uint64_t e = atomic_load_explicit(&w->seen_epoch, memory_order_acquire);
		if (e < min_seen)
			min_seen = e;
	}
	for (zr_old_snapshot_t **pp = &rt->retired; *pp;) {
		zr_old_snapshot_t *o = *pp;
		if (o->replaced_by <= min_seen) {
			*pp = o->next;
			zr_snapshot_unref(o->snap);
			free(o);
		} else {
			pp = &o->next;
		}
	}
}

void zr_runtime_drain(zr_runtime_t *rt)
{
	for (unsigned i = 0; i < rt->n_workers; i++)
		zr_worker_post(rt->workers[i], ZR_MSG_DRAIN, NULL);
}

void zr_runtime_stop(zr_runtime_t *rt)
{
	for (unsigned i = 0; i < rt->n_workers; i++)
		zr_worker_post(rt->workers[i], ZR_MSG_STOP, NULL);
}

bool zr_runtime_exited(const zr_runtime_t *rt)
{
	for (unsigned i = 0; i < rt->n_workers; i++)
		if (!atomic_load_explicit(&rt->workers[i]->exited, memory_order_acquire))
			return false;
	return true;
}

void zr_runtime_free(zr_runtime_t *rt)
{
	if (!rt)
		return;
	for (unsigned i = 0; i < rt->n_workers; i++) {
		zr_worker_t *w = rt->workers[i];
		if (!w)
			continue;
		if (w->thread)
			pthread_join(w->thread, NULL);
		for (zr_listener_t *l = w->listeners, *next; l; l = next) {
			next = l->next;
			close(l->fd);
			free(l);
		}
		zr_tcp_metrics_t *m = atomic_load(&w->stats.tcp_head);
		while (m) {
			zr_tcp_metrics_t *next = m->next;
			free(m->labels);
			free(m);
			m = next;
		}
		free(w->tcp_hash);
		zr_worker_free_memory(w);
		zr_snapshot_unref(w->snap);
		if (w->mailbox.eventfd > 0)
			close(w->mailbox.eventfd);
		free(w);
	}
	free(rt->workers);
	while (rt->retired) {
		zr_old_snapshot_t *o = rt->retired;
		rt->retired = o->next;
		zr_snapshot_unref(o->snap);
		free(o);
	}
	zr_snapshot_unref(rt->owned);
	free(rt);
}

/* --- hooks for the ctl servers (their thread) --- */

static const zr_config_t *hook_config_acquire(void *ctx)
{
	zr_runtime_t *rt = ctx;
	pthread_mutex_lock(&rt->cfg_lock);
	return rt->owned->cfg;
}

static void hook_config_release(void *ctx, const zr_config_t *cfg)
{
	zr_runtime_t *rt = ctx;
	(void)cfg;
	pthread_mutex_unlock(&rt->cfg_lock);
}

static size_t hook_n_workers(void *ctx)
{
	return ((zr_runtime_t *)ctx)->n_workers;
}

static const zr_worker_stats_t *hook_worker_stats(void *ctx, size_t i)
{
	return &((zr_runtime_t *)ctx)->workers[i]->stats;
}

static void hook_dump_connections(void *ctx, zr_strbuf_t *out, zr_strbuf_t *by_workload)
{
	zr_runtime_t *rt = ctx;
	zr_strbuf_append(out, "[", 1);
	bool first = true;
	for (unsigned i = 0; i < rt->n_workers; i++) {
		zr_worker_t *w = rt->workers[i];
		if (atomic_load_explicit(&w->exited, memory_order_acquire))
			continue;
		zr_dump_req_t *req = calloc(1, sizeof(*req));
		zr_strbuf_t *part = calloc(2, sizeof(*part)); /* [1]: by_workload */
		if (!req || !part) {
			free(req);
			free(part);
			continue;
		}
		req->out = part;
		req->by_workload = &part[1];
		req->first = true;
		zr_worker_post(w, ZR_MSG_DUMP, req);
		int waited = 0;
		while (!atomic_load_explicit(&req->done, memory_order_acquire) && waited < 3000) {
			usleep(1000);
			waited++;
		}
		if (!atomic_load_explicit(&req->done, memory_order_acquire)) {
			/* The worker may still write into it: leave it to it. */
			zr_warn("runtime", "worker %u did not answer a connection dump", i);
			continue;
		}
		if (part->len) {
			if (!first)
				zr_strbuf_append(out, ",", 1);
			zr_strbuf_append(out, part->data, part->len);
			first = false;
		}
		if (by_workload && part[1].len)
			zr_strbuf_append(by_workload, part[1].data, part[1].len);
		zr_strbuf_free(&part[1]);
		zr_strbuf_free(part);
		free(part);
		free(req);
	}
	zr_strbuf_append(out, "]", 1);
}

/* A node with a certificate source (identity.certificates or a CA) needs a
 * usable certificate for every local workload's identity: without one, every
 * HBONE stream from or to that workload fails. A node with none configured is
 * plaintext only and waits for nothing. */
static bool wants_certificates(const zr_config_t *cfg)
{
	return cfg->identity.n_certificates > 0 || cfg->identity.ca_address;
}

/* Appends ", " (unless first) and the item to pending; "..." once full. */
static void pending_add(char *pending, size_t cap, size_t *len, const char *what, const char *arg)
{
	if (*len >= cap)
		return;
	int n = snprintf(pending + *len, cap - *len, "%s%s%s", *len ? ", " : "", what, arg);
	if (n < 0 || (size_t)n >= cap - *len) {
		/* Truncated: end with ", ..." where it fits, and add nothing more. */
		static const char more[] = ", ...";
		if (cap > sizeof(more) && *len + sizeof(more) <= cap)
			memcpy(pending + *len, more, sizeof(more));
		*len = cap;
		return;
	}
	*len += (size_t)n;
}

static bool hook_ready(void *ctx, char *pending, size_t cap)
{
	zr_runtime_t *rt = ctx;
	size_t len = 0;
	if (cap)
		pending[0] = '\0';
	if (!atomic_load(&rt->ready)) {
		pending_add(pending, cap, &len, "workers", "");
		return false;
	}
	pthread_mutex_lock(&rt->cfg_lock);
	const zr_snapshot_t *s = rt->owned;
	const zr_config_t *cfg = s->cfg;
	bool ready = true;
	for (size_t i = 0; wants_certificates(cfg) && i < cfg->state.n_workloads; i++) {
		const zr_workload_t *w = &cfg->state.workloads[i];
		if (!w->local || !w->identity || zr_identity_store_has(s->ids, w->identity))
			continue;
		bool listed = false;
		for (size_t j = 0; j < i && !listed; j++)
			listed = cfg->state.workloads[j].local && cfg->state.workloads[j].identity &&
				 strcmp(cfg->state.workloads[j].identity, w->identity) == 0;
		if (!listed)
			pending_add(pending, cap, &len, "certificate for ", w->identity);
		ready = false;
	}
	pthread_mutex_unlock(&rt->cfg_lock);
	return ready;
}

static void hook_certificates(void *ctx, void (*fn)(void *arg, const char *identity, int64_t not_after), void *arg)
{
	zr_runtime_t *rt = ctx;
	pthread_mutex_lock(&rt->cfg_lock);
	const zr_identity_store_t *ids = rt->owned->ids;
	for (size_t i = 0; i < zr_identity_store_count(ids); i++) {
		const zr_cert_info_t *ci = zr_identity_store_info(ids, i);
		fn(arg, ci->identity, (int64_t)ci->not_after);
	}
	pthread_mutex_unlock(&rt->cfg_lock);
}

static void hook_quit(void *ctx)
{
	zr_runtime_t *rt = ctx;
	uint64_t one = 1;
	ssize_t r = write(rt->quit_fd, &one, sizeof(one));
	(void)r;
}

static const zr_crypto_info_t *hook_crypto(void *ctx)
{
	return ((zr_runtime_t *)ctx)->crypto;
}

void zr_runtime_hooks(zr_runtime_t *rt, zr_ctl_hooks_t *hooks, int quit_fd)
{
	rt->quit_fd = quit_fd;
	*hooks = (zr_ctl_hooks_t){
		.ctx = rt,
		.config_acquire = hook_config_acquire,
		.config_release = hook_config_release,
		.n_workers = hook_n_workers,
		.worker_stats = hook_worker_stats,
		.dump_connections = hook_dump_connections,
		.ready = hook_ready,
		.certificates = hook_certificates,
		.quit = hook_quit,
		.crypto = hook_crypto,
	};
}
