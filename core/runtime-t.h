#ifndef ZR_CORE_RUNTIME_T_H
#define ZR_CORE_RUNTIME_T_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/snapshot.h"
#include "core/worker-t.h"

typedef struct zr_old_snapshot {
	zr_snapshot_t *snap;
	uint64_t replaced_by; /* epoch that replaced it */
	struct zr_old_snapshot *next;
} zr_old_snapshot_t;

struct zr_runtime {
	_Atomic(zr_snapshot_t *) current;
	zr_snapshot_t *owned;	    /* the control thread's reference to current */
	zr_old_snapshot_t *retired; /* waiting for workers to move past */
	uint64_t epoch;
	pthread_mutex_t cfg_lock;  /* control-side: reload vs. admin readers */
	pthread_mutex_t post_lock; /* control-side: mailbox producers */
	zr_worker_t **workers;
	unsigned n_workers;
	int quit_fd;
	_Atomic bool ready;
	const struct zr_crypto_info *crypto; /* start-up's record-crypto choice (main's, static) */
};

int zr_listener_socket(const zr_sockaddr_t *addr, bool freebind, int *out_fd);
zr_listener_t *zr_listener_add(zr_worker_t *w, zr_listener_kind_t kind, int fd, const zr_sockaddr_t *addr,
			       bool per_workload);
int zr_worker_start(zr_worker_t *w);
void zr_worker_post(zr_worker_t *w, zr_msg_type_t type, void *arg);

#endif
