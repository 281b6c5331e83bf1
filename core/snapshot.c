#include "core/snapshot.h"

#include <stdlib.h>

#include "crypto/tls.h"
#include "ctl/config.h"

zr_snapshot_t *zr_snapshot_new(zr_config_t *cfg, struct zr_identity_store *ids, uint64_t epoch)
{
	zr_snapshot_t *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->cfg = cfg;
	s->ids = ids;
	s->epoch = epoch;
	atomic_init(&s->refs, 1);
	return s;
}

void zr_snapshot_ref(zr_snapshot_t *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void zr_snapshot_unref(zr_snapshot_t *s)
{
	if (!s)
		return;
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
		zr_config_free(s->cfg);
		if (s->ids)
			zr_identity_store_unref(s->ids);
		free(s);
	}
}
