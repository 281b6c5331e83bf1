/* Immutable config snapshots published by the control thread to workers.
 * The control thread swaps one pointer; a worker notes the epoch it has seen
 * at the top of each loop turn; the control thread drops its reference to an
 * old snapshot only once every worker has moved past it. Connections hold a
 * reference (one atomic increment per connection, none per packet). */
#ifndef ZR_CORE_SNAPSHOT_H
#define ZR_CORE_SNAPSHOT_H

#include <stdatomic.h>
#include <stdint.h>

#include "ctl/config-t.h"

struct zr_identity_store;

typedef struct zr_snapshot {
	zr_config_t *cfg;	       /* owned */
	struct zr_identity_store *ids; /* referenced; NULL when no identity is configured */
	uint64_t epoch;
	_Atomic unsigned refs;
} zr_snapshot_t;

/* Takes ownership of cfg and of one reference to ids (may be NULL);
 * refs = 1 (the creator's). */
zr_snapshot_t *zr_snapshot_new(zr_config_t *cfg, struct zr_identity_store *ids, uint64_t epoch);
void zr_snapshot_ref(zr_snapshot_t *s);
/* Frees the snapshot and its config when the last reference goes. Any thread. */
void zr_snapshot_unref(zr_snapshot_t *s);

#endif
