/* Worker threads and the process runtime that owns them. */
#ifndef ZR_CORE_WORKER_H
#define ZR_CORE_WORKER_H

#include <stdbool.h>

#include "core/conn.h"
#include "core/worker-t.h"
#include "ctl/server.h"

typedef struct zr_runtime zr_runtime_t;

/* --- worker-thread side (called on the worker's own thread) --- */

/* Frees the worker's connection blocks and HBONE memory once it has
 * exited (nothing may be live). */
void zr_worker_free_memory(zr_worker_t *w);

/* Gives a provided buffer back to the ring. */
void zr_worker_buf_release(zr_worker_t *w, unsigned bid);
/* A connection object from the worker's free list (zeroed, linked live),
 * or NULL when allocation fails. */
zr_conn_t *zr_worker_conn_alloc(zr_worker_t *w);
/* Frees c if it is closing and has no operation in flight. */
void zr_worker_conn_maybe_free(zr_conn_t *c);

/* relay.c internals shared with conn/worker */
void zr_relay_init_side(zr_conn_t *c, zr_relay_side_t *s, int fd);
void zr_relay_release_queues(zr_conn_t *c);

/* tcpmetrics.c: the istio_tcp_* series for c's labels (created on first
 * use); NULL on allocation failure. */
zr_tcp_metrics_t *zr_tcp_metrics_for(zr_worker_t *w, const zr_conn_t *c, const char *reporter,
				     const char *response_flags, bool mtls);
/* c failed before relaying (c->metrics, if any, has response_flags "-"):
 * counts it as ztunnel does, opened with "-", closed and failed with
 * `response_flags` (DENY, CONNECT, TLS_FAILURE, ...; CONNECT if none). */
void zr_tcp_metrics_fail(zr_conn_t *c, const char *response_flags);

/* --- runtime (main/control thread) --- */

/* Creates workers per cfg (count, CPUs, NUMA arenas), binds every worker's
 * listeners (SO_REUSEPORT) and starts the threads. Takes ownership of cfg
 * and of the reference to ids (NULL: no identity configured).
 * Returns 0, -1 when a listener can't be bound (exit 2), other -errno. */
struct zr_identity_store;
int zr_runtime_start(zr_config_t *cfg, struct zr_identity_store *ids, zr_runtime_t **out)
	__attribute__((warn_unused_result));
/* Publishes a new config and identity store (may be NULL) to workers;
 * takes ownership of both. */
void zr_runtime_publish(zr_runtime_t *rt, zr_config_t *cfg, struct zr_identity_store *ids);
/* Frees snapshots that every worker has moved past. */
void zr_runtime_reap(zr_runtime_t *rt);
/* Asks workers to stop accepting and exit when idle. */
void zr_runtime_drain(zr_runtime_t *rt);
/* Asks workers to close everything now. */
void zr_runtime_stop(zr_runtime_t *rt);
/* True once every worker thread has exited. */
bool zr_runtime_exited(const zr_runtime_t *rt);
/* Joins the threads and frees everything. */
void zr_runtime_free(zr_runtime_t *rt);
/* Current config (control-thread use). */
const zr_config_t *zr_runtime_config(const zr_runtime_t *rt);
/* Hooks for the ctl servers; quit_fd is written when /quitquitquit is hit. */
void zr_runtime_hooks(zr_runtime_t *rt, zr_ctl_hooks_t *hooks, int quit_fd);

#endif
