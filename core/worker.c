/* A worker: one pinned thread, one io_uring ring, its own SO_REUSEPORT
 * listeners, connections, buffers and counters. The loop: pick up a newer
 * config snapshot, run the ring (submit, wait, dispatch completions), feed
 * receives that starved for buffers, and leave once drained or stopped. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <numa.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <poll.h>
#include <netinet/in.h>

#include "core/hbone.h"
#include "crypto/tls.h"
#include "core/mem.h"
#include "core/runtime-t.h"
#include "core/worker.h"
#include "ctl/config.h"
#include "io/io.h"
#include "io/log.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define LOOP_WAIT_NS			(1000ull * 1000000ull)

void zr_worker_free_memory(zr_worker_t *w)
{
	while (w->conn_blocks) {
		zr_conn_block_t *blk = w->conn_blocks;
		w->conn_blocks = blk->next;
		zr_mem_free(w, blk);
	}
	w->free_conns = NULL;
	free(w->host_ips);
	w->host_ips = NULL;
	zr_hbone_free_memory(w);
}

void zr_worker_buf_release(zr_worker_t *w, unsigned bid)
{
	zr_io_buf_release(w->io, bid);
	w->bufs_in_use--;
}

zr_conn_t *zr_worker_conn_alloc(zr_worker_t *w)
{
	if (!w->free_conns) {
		/* Grow by a block from the worker's NUMA-node arena; objects are
		 * recycled through the free list, never returned one by one, and
		 * the blocks go when the worker does. */
		zr_conn_block_t *blk = zr_mem_alloc(w, sizeof(*blk));
		if (!blk)
			return NULL;
		blk->next = w->conn_blocks;
		w->conn_blocks = blk;
		for (int i = 0; i < ZR_CONN_BLOCK; i++) {
			blk->conns[i].next = w->free_conns;
			w->free_conns = &blk->conns[i];
		}
	}
	zr_conn_t *c = w->free_conns;
	w->free_conns = c->next;
	memset(c, 0, sizeof(*c));
	c->w = w;
	c->id = ++w->next_conn_id;
	c->start_ns = zr_now_ns();
	c->snap = w->snap;
	zr_snapshot_ref(c->snap);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	zr_counter_add(&w->stats.connections_active, 1);
	return c;
}

static void unlink_starved(zr_worker_t *w, zr_relay_side_t *s)
{
	if (!s->starved)
		return;
	for (zr_relay_side_t **pp = &w->starved; *pp; pp = &(*pp)->starved_next) {
		if (*pp == s) {
			*pp = s->starved_next;
			break;
		}
	}
	s->starved = false;
}

void zr_worker_conn_maybe_free(zr_conn_t *c)
{
	if (c->state != ZR_CONN_CLOSING || c->inflight)
		return;
	zr_worker_t *w = c->w;
	zr_relay_release_queues(c);
	zr_hbone_conn_free_queues(c);
	unlink_starved(w, &c->down);
	unlink_starved(w, &c->up);
	int fds[2] = {c->down.fd, c->up.fd};
	for (int i = 0; i < 2; i++) {
		if (fds[i] < 0)
			continue;
		if (c->reset) {
			struct linger lg = {.l_onoff = 1, .l_linger = 0};
			setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(fds[i]);
	}
	c->down.fd = c->up.fd = -1;
	zr_snapshot_unref(c->snap);
	c->snap = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_conns--;
	zr_counter_sub(&w->stats.connections_active, 1);
	if (c->sock_open)
		zr_counter_sub(&w->stats.sockets_open[c->sock_open - 1], 1);
	c->state = ZR_CONN_FREE;
	c->next = w->free_conns;
	w->free_conns = c;
}

/* --- listeners --- */

static void accept_cb(zr_io_op_t *op, int res, unsigned flags);

static void listener_free(zr_worker_t *w, zr_listener_t *l);

/* --- accept pause ---
 *
 * An accept that fails for lack of file descriptors (EMFILE, ENFILE) or
 * memory (ENOMEM, ENOBUFS) fails again at once: io_uring takes the fd before
 * it looks at the queue. Re-arming right away spins a core and floods the log
 * while the connections wait in the backlog. Instead the listener is paused:
 * it is re-armed when a connection or HBONE connection of this worker goes
 * (an fd is free again), or by the retry timer after a backoff of 100 ms,
 * doubling to 1 s, once an fd below the reserve (see below) is free. The
 * same pause follows an accepted fd that falls in the reserve. A pause episode is logged when it starts and when a retry
 * period passes without a pause; every pause is counted in
 * zring_worker_accept_paused_total{reason}. */
#define ACCEPT_BACKOFF_MIN_MS 100u
#define ACCEPT_BACKOFF_MAX_MS 1000u

/* The last file descriptors below RLIMIT_NOFILE (an eighth of it, at most
 * 64) are not spent on accepted connections: they stay for the admin,
 * metrics and readiness servers, the upstream sockets of connections already
 * accepted, and the control plane. fds are allocated lowest first, so an
 * accepted fd numbered fd_reserve_at or more means only the reserve is
 * left: the connection is closed at once and the listener paused. */
#define FD_RESERVE_MAX 64u

static unsigned fd_reserve_at(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT_MAX)
		return INT_MAX;
	unsigned limit = (unsigned)rl.rlim_cur, reserve = limit / 8;
	if (reserve > FD_RESERVE_MAX)
		reserve = FD_RESERVE_MAX;
	return limit - reserve;
}

/* Whether an fd below the reserve is free now (the lowest free fd number). */
static bool fd_headroom(zr_worker_t *w)
{
	int probe = fcntl(w->mailbox.eventfd, F_DUPFD_CLOEXEC, 0);
	if (probe < 0)
		return false;
	close(probe);
	return (unsigned)probe < w->fd_reserve_at;
}

static void listener_pause(zr_listener_t *l, int err);

static void listener_arm(zr_listener_t *l)
{
	int ret = zr_io_accept(l->worker->io, &l->accept_op, l->fd);
	if (ret < 0)
		listener_pause(l, ret); /* the SQ is full: try again with the timer */
	else
		l->armed = true;
}

static unsigned worker_owned(zr_worker_t *w)
{
	return w->n_conns + (unsigned)zr_counter_get(&w->stats.hbone_server_conns) +
	       (unsigned)zr_counter_get(&w->stats.hbone_client_conns);
}

static zr_accept_pause_t pause_reason(int err)
{
	if (err == -EMFILE || err == -ENFILE)
		return ZR_ACCEPT_PAUSE_FD_LIMIT;
	if (err == -ENOMEM || err == -ENOBUFS)
		return ZR_ACCEPT_PAUSE_MEMORY;
	return ZR_ACCEPT_PAUSE_ERROR;
}

static void arm_accept_retry(zr_worker_t *w)
{
	if (w->accept_retry_armed || w->stopping)
		return;
	if (zr_io_timeout(w->io, &w->accept_retry_op, (uint64_t)w->accept_backoff_ms * 1000000ull) == 0)
		w->accept_retry_armed = true;
}

static void listener_pause(zr_listener_t *l, int err)
{
	zr_worker_t *w = l->worker;
	zr_accept_pause_t why = pause_reason(err);
	if (!l->paused) {
		l->paused = true;
		w->accept_paused++;
	}
	zr_counter_add(&w->stats.accept_paused[why], 1);
	w->accept_pause_recent = true;
	w->accept_owned_mark = worker_owned(w);
	w->accept_pauses++;
	if (!w->accept_episode) {
		char a[ZR_ADDR_STRLEN], lim[64] = "";
		struct rlimit rl;
		w->accept_episode = true;
		w->accept_episode_ns = zr_now_ns();
		w->accept_pauses = 1;
		w->accept_backoff_ms = ACCEPT_BACKOFF_MIN_MS;
		if (why == ZR_ACCEPT_PAUSE_FD_LIMIT && getrlimit(RLIMIT_NOFILE, &rl) == 0)
			snprintf(lim, sizeof(lim), " (open file limit %llu, %llu kept in reserve)",
				 (unsigned long long)rl.rlim_cur,
				 (unsigned long long)rl.rlim_cur - (unsigned long long)w->fd_reserve_at);
		zr_warn("worker",
			"worker %u: accept paused on %s: %s%s; %u connections held; retrying when one closes, or "
			"within %u ms",
			w->index, zr_sockaddr_str(&l->addr, a), strerror(-err), lim, worker_owned(w),
			w->accept_backoff_ms);
	}
	arm_accept_retry(w);
}

/* Re-arms every paused listener, if an fd below the reserve is free. */
static void accept_resume(zr_worker_t *w)
{
	if (!fd_headroom(w))
		return;
	for (zr_listener_t *l = w->listeners; l && w->accept_paused; l = l->next) {
		if (!l->paused)
			continue;
		l->paused = false;
		w->accept_paused--;
		if (!l->closing)
			listener_arm(l);
	}
}

static void accept_retry_cb(zr_io_op_t *op, int res, unsigned flags)
{
	(void)res;
	(void)flags;
	zr_worker_t *w = container_of(op, zr_worker_t, accept_retry_op);
	w->accept_retry_armed = false;
	if (w->stopping || !w->io)
		return;
	if (!w->accept_paused && !w->accept_pause_recent) {
		if (w->accept_episode)
			zr_info("worker", "worker %u: accepting again after %llu ms (%u pauses)", w->index,
				(unsigned long long)((zr_now_ns() - w->accept_episode_ns) / 1000000ull),
				w->accept_pauses);
		w->accept_episode = false;
		return;
	}
	w->accept_pause_recent = false;
	w->accept_backoff_ms *= 2;
	if (w->accept_backoff_ms > ACCEPT_BACKOFF_MAX_MS)
		w->accept_backoff_ms = ACCEPT_BACKOFF_MAX_MS;
	/* Armed first: a resumed accept that fails again finds it running. */
	arm_accept_retry(w);
	accept_resume(w);
}

/* Stops a listener; it is freed at its accept's final completion, or now
 * when no accept is outstanding. The caller must not use l afterwards. */
static void listener_close(zr_listener_t *l)
{
	if (l->closing)
		return;
	l->closing = true;
	if (l->armed)
		zr_io_cancel(l->worker->io, &l->accept_op);
	else
		listener_free(l->worker, l);
}

static void listener_free(zr_worker_t *w, zr_listener_t *l)
{
	for (zr_listener_t **pp = &w->listeners; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	if (l->paused)
		w->accept_paused--;
	close(l->fd);
	free(l);
}

static void accept_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_listener_t *l = container_of(op, zr_listener_t, accept_op);
	zr_worker_t *w = l->worker;
	if (res >= 0) {
		l->errors = 0;
		if (l->closing || w->draining) {
			close(res);
		} else if (l->pause_asked || (unsigned)res >= w->fd_reserve_at) {
			/* Only the reserve is left: refuse, and pause accepting. */
			close(res);
			zr_counter_add(&w->stats.refused[ZR_REFUSE_OVERLOAD], 1);
			if (!l->pause_asked && (!(flags & ZR_IO_F_MORE) || zr_io_cancel(w->io, &l->accept_op) == 0))
				l->pause_asked = true;
		} else if (l->kind == ZR_LISTENER_HBONE)
			zr_hbone_accepted(l, res);
		else
			zr_conn_accepted(l, res);
	} else if (res != -ECANCELED && !l->closing && pause_reason(res) == ZR_ACCEPT_PAUSE_ERROR) {
		char a[ZR_ADDR_STRLEN];
		zr_warn("worker", "worker %u: accept on %s: %s", w->index, zr_sockaddr_str(&l->addr, a),
			strerror(-res));
	}
	if (flags & ZR_IO_F_MORE)
		return;
	l->armed = false;
	if (l->closing) {
		listener_free(w, l);
		return;
	}
	if (l->pause_asked) {
		l->pause_asked = false;
		listener_pause(l, -EMFILE);
		return;
	}
	/* The multishot accept ended. Out of fds or memory: pause (re-arming
	 * would fail at once, forever). Another error: re-arm once, pause if
	 * it comes back. */
	if (res < 0 && res != -ECANCELED && (pause_reason(res) != ZR_ACCEPT_PAUSE_ERROR || ++l->errors > 1))
		listener_pause(l, res);
	else
		listener_arm(l);
}

int zr_listener_socket(const zr_sockaddr_t *addr, bool freebind, int *out_fd)
{
	int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (freebind)
		setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one));
	if (addr->sa.sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, &addr->sa, addr->len) < 0 || listen(fd, 4096) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	*out_fd = fd;
	return 0;
}

zr_listener_t *zr_listener_add(zr_worker_t *w, zr_listener_kind_t kind, int fd, const zr_sockaddr_t *addr,
			       bool per_workload)
{
	zr_listener_t *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->accept_op.cb = accept_cb;
	l->worker = w;
	l->kind = kind;
	l->fd = fd;
	l->addr = *addr;
	l->per_workload = per_workload;
	l->next = w->listeners;
	w->listeners = l;
	return l;
}

/* Binds plaintext inbound and HBONE on every local workload IP (following
 * reloads), so that nodes sharing one host, and in-pod mode, receive on
 * their own IPs. */
static void sync_workload_listeners(zr_worker_t *w)
{
	const zr_config_t *cfg = w->snap->cfg;
	const struct {
		const zr_listener_cfg_t *lc;
		zr_listener_kind_t kind;
	} kinds[] = {
		{&cfg->listeners.inbound_plaintext, ZR_LISTENER_INBOUND_PLAINTEXT},
		{&cfg->listeners.hbone, ZR_LISTENER_HBONE},
	};

	for (zr_listener_t *l = w->listeners, *next; l; l = next) {
		next = l->next;
		if (!l->per_workload || l->closing)
			continue;
		zr_ip_t ip;
		uint16_t lport;
		zr_sockaddr_to_ip(&l->addr, &ip, &lport);
		const zr_workload_t *wl = zr_state_workload_by_ip(&cfg->state, &ip);
		const zr_listener_cfg_t *lc = kinds[l->kind == ZR_LISTENER_HBONE].lc;
		if (w->draining || !lc->enabled || !wl || !wl->local || lport != zr_sockaddr_port(&lc->addr))
			listener_close(l);
	}
	if (w->draining)
		return;
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		if (!kinds[k].lc->enabled)
			continue;
		uint16_t port = zr_sockaddr_port(&kinds[k].lc->addr);
		for (size_t i = 0; i < cfg->state.n_workloads; i++) {
			const zr_workload_t *wl = &cfg->state.workloads[i];
			if (!wl->local)
				continue;
			for (size_t j = 0; j < wl->n_ips; j++) {
				zr_sockaddr_t sa;
				zr_sockaddr_from_ip(&sa, &wl->ips[j], port);
				if (sa.len == kinds[k].lc->addr.len &&
				    memcmp(&sa.ss, &kinds[k].lc->addr.ss, sa.len) == 0)
					continue;
				bool have = false;
				for (zr_listener_t *l = w->listeners; l; l = l->next)
					if (l->per_workload && !l->closing && l->addr.len == sa.len &&
					    memcmp(&l->addr.ss, &sa.ss, sa.len) == 0)
						have = true;
				if (have)
					continue;
				int fd, ret = zr_listener_socket(&sa, true, &fd);
				char a[ZR_ADDR_STRLEN];
				if (ret < 0) {
					if (w->index == 0)
						zr_warn("worker", "can't listen on workload address %s: %s",
							zr_sockaddr_str(&sa, a), strerror(-ret));
					continue;
				}
				zr_listener_t *l = zr_listener_add(w, kinds[k].kind, fd, &sa, true);
				if (!l) {
					close(fd);
					continue;
				}
				listener_arm(l);
			}
		}
	}
}

/* --- mailbox --- */

static void handle_msg(zr_worker_t *w, zr_msg_t *m)
{
	switch (m->type) {
	case ZR_MSG_WAKE:
		break;
	case ZR_MSG_DRAIN:
		if (!w->draining) {
			w->draining = true;
			for (zr_listener_t *l = w->listeners, *next; l; l = next) {
				next = l->next;
				listener_close(l);
			}
			zr_hbone_drain(w);
		}
		break;
	case ZR_MSG_STOP:
		w->stopping = true;
		break;
	case ZR_MSG_DUMP: {
		zr_dump_req_t *req = m->arg;
		for (zr_conn_t *c = w->conns; c; c = c->next) {
			if (c->state == ZR_CONN_CLOSING)
				continue;
			if (!req->first)
				zr_strbuf_append(req->out, ",", 1);
			req->first = false;
			zr_conn_dump(c, req->out);
			zr_conn_dump_workload(c, req->by_workload);
		}
		atomic_store_explicit(&req->done, true, memory_order_release);
		break;
	}
	}
}

static void mailbox_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_worker_t *w = container_of(op, zr_worker_t, mailbox_op);
	uint64_t v;
	ssize_t r = read(w->mailbox.eventfd, &v, sizeof(v));
	(void)r;
	zr_mailbox_t *mb = &w->mailbox;
	unsigned head = atomic_load_explicit(&mb->head, memory_order_relaxed);
	unsigned tail = atomic_load_explicit(&mb->tail, memory_order_acquire);
	while (head != tail) {
		zr_msg_t m = mb->slots[head % ZR_MAILBOX_SIZE];
		head++;
		atomic_store_explicit(&mb->head, head, memory_order_release);
		handle_msg(w, &m);
	}
	if (!(flags & ZR_IO_F_MORE) && !w->stopping)
		zr_io_poll(w->io, &w->mailbox_op, w->mailbox.eventfd, POLLIN);
}

/* --- loop --- */

static void check_snapshot(zr_worker_t *w)
{
	zr_snapshot_t *s = atomic_load_explicit(&w->rt->current, memory_order_acquire);
	if (s == w->snap)
		return;
	/* The control thread keeps its reference to s until every worker's
	 * seen_epoch has passed s, so taking ours here is safe. */
	zr_snapshot_ref(s);
	zr_snapshot_t *old = w->snap;
	w->snap = s;
	zr_snapshot_unref(old);
	atomic_store_explicit(&w->seen_epoch, s->epoch, memory_order_release);
	atomic_store_explicit(&w->stats.config_epoch, s->epoch, memory_order_relaxed);
	sync_workload_listeners(w);
	zr_hbone_recheck_policies(w);
}

static void tick_cb(zr_io_op_t *op, int res, unsigned flags)
{
	zr_worker_t *w = container_of(op, zr_worker_t, hbone_tick_op);
	w->hbone_tick_armed = false;
	if (w->stopping || !w->io)
		return;
	zr_hbone_tick(w, zr_now_ns());
	if (zr_io_timeout(w->io, &w->hbone_tick_op, 1000000000ull) == 0)
		w->hbone_tick_armed = true;
}

static void close_everything(zr_worker_t *w)
{
	w->stopping = true; /* timers and mailbox stay disarmed from here on */
	for (zr_listener_t *l = w->listeners, *next; l; l = next) {
		next = l->next;
		listener_close(l);
	}
	zr_hbone_close_all(w);
	if (w->hbone_tick_armed)
		zr_io_cancel(w->io, &w->hbone_tick_op);
	if (w->accept_retry_armed)
		zr_io_cancel(w->io, &w->accept_retry_op);
	for (zr_conn_t *c = w->conns, *next; c; c = next) {
		next = c->next;
		zr_conn_close(c, false);
		zr_worker_conn_maybe_free(c);
	}
	zr_io_cancel(w->io, &w->mailbox_op);
	/* Let cancellations complete so every socket is really closed. */
	uint64_t deadline = zr_now_ns() + 2000ull * 1000000ull;
	while ((w->conns || w->listeners || w->h2conns || w->hbone_tick_armed || w->accept_retry_armed) &&
	       zr_now_ns() < deadline)
		zr_io_run(w->io, 50ull * 1000000ull);
}

static void *worker_main(void *arg)
{
	zr_worker_t *w = arg;
	if (w->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
			zr_warn("worker", "worker %u: can't pin to CPU %d", w->index, w->cpu);
	}
	/* Pages this thread touches (buffers, connections) come from its node. */
	if (numa_available() >= 0)
		numa_set_localalloc();

	zr_io_params_t params = {.entries = 1024,
				 .buf_count = ZR_BUF_COUNT,
				 .buf_size = ZR_BUF_SIZE,
				 .reserve_count = ZR_BUF_RESERVE,
				 .numa_node = w->numa_node};
	int ret = zr_io_uring_ops.setup(&params, &w->io);
	if (ret < 0) {
		zr_err("worker", "worker %u: io backend setup failed: %s", w->index, strerror(-ret));
		atomic_store_explicit(&w->start_result, ret, memory_order_release);
		atomic_store_explicit(&w->exited, true, memory_order_release);
		return NULL;
	}
	zr_counter_add(&w->stats.buffers_total, ZR_BUF_COUNT);
	atomic_store_explicit(&w->stats.config_epoch, w->snap->epoch, memory_order_relaxed);
	w->mailbox_op.cb = mailbox_cb;
	w->hbone_tick_op.cb = tick_cb;
	w->accept_retry_op.cb = accept_retry_cb;
	w->fd_reserve_at = fd_reserve_at();
	w->prng = zr_now_ns() ^ ((uint64_t)w->index << 32) ^ 0x9e3779b97f4a7c15ull;
	if (zr_io_timeout(w->io, &w->hbone_tick_op, 1000000000ull) == 0)
		w->hbone_tick_armed = true;
	zr_io_poll(w->io, &w->mailbox_op, w->mailbox.eventfd, POLLIN);
	for (zr_listener_t *l = w->listeners; l; l = l->next)
		listener_arm(l);
	sync_workload_listeners(w);
	atomic_store_explicit(&w->start_result, 1, memory_order_release);

	unsigned crypto_inflight = 0;
	while (!w->stopping) {
		check_snapshot(w);
		/* Records on a crypto device complete when polled: no sleeping
		 * while any are out. */
		int n = zr_io_run(w->io, crypto_inflight ? 0 : LOOP_WAIT_NS);
		if (n < 0 && n != -EINTR) {
			zr_err("worker", "worker %u: io run: %s", w->index, strerror(-n));
			break;
		}
		zr_counter_add(&w->stats.loop_turns, 1);
		if (n > 0)
			zr_counter_add(&w->stats.completions, n);
		crypto_inflight = zr_tls_crypto_poll();
		zr_relay_feed_starved(w);
		if (w->h2_starved)
			zr_hbone_feed_starved(w);
		atomic_store_explicit(&w->stats.buffers_in_use, w->bufs_in_use, memory_order_relaxed);
		/* A connection of ours went: its fds are free for the paused
		 * accepts. (HBONE streams open upstream connections while the
		 * accepts are paused: only a drop since the last turn counts.) */
		if (w->accept_paused) {
			unsigned owned = worker_owned(w);
			if (owned < w->accept_owned_mark)
				accept_resume(w);
			w->accept_owned_mark = owned;
		}
		if (w->draining && w->n_conns == 0)
			break;
	}
	close_everything(w);
	zr_io_t *io = w->io;
	w->io = NULL;
	io->ops->destroy(io);
	zr_tls_thread_cleanup();
	atomic_store_explicit(&w->exited, true, memory_order_release);
	return NULL;
}

int zr_worker_start(zr_worker_t *w)
{
	return -pthread_create(&w->thread, NULL, worker_main, w);
}

void zr_worker_post(zr_worker_t *w, zr_msg_type_t type, void *arg)
{
	zr_mailbox_t *mb = &w->mailbox;
	pthread_mutex_lock(&w->rt->post_lock);
	unsigned tail = atomic_load_explicit(&mb->tail, memory_order_relaxed);
	/* The worker drains every loop turn; a full box means it is stuck or
	 * gone, and waiting briefly is the control thread's cost, not the data
	 * path's. */
	for (int i = 0; i < 1000 && tail - atomic_load_explicit(&mb->head, memory_order_acquire) >= ZR_MAILBOX_SIZE;
	     i++)
		usleep(1000);
	if (tail - atomic_load_explicit(&mb->head, memory_order_acquire) < ZR_MAILBOX_SIZE) {
		mb->slots[tail % ZR_MAILBOX_SIZE] = (zr_msg_t){.type = type, .arg = arg};
		atomic_store_explicit(&mb->tail, tail + 1, memory_order_release);
	}
	pthread_mutex_unlock(&w->rt->post_lock);
	uint64_t one = 1;
	ssize_t r = write(mb->eventfd, &one, sizeof(one));
	(void)r;
}
