/* Private to ctl/: the hash tables behind zr_state_t.index. Open addressing
 * with linear probing, no deletion (a state is immutable once built). An IP
 * may be present several times (different networks); lookups return the
 * entry with the lowest value, i.e. the first in file order. */
#ifndef ZR_CTL_STATE_INDEX_H
#define ZR_CTL_STATE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"

struct zr_ip_entry {
	zr_ip_t ip;
	const char *network; /* owned by the state */
	uint32_t val;
	bool used;
};

struct zr_ip_table {
	struct zr_ip_entry *e;
	size_t cap, n;
};

struct zr_str_entry {
	const char *s; /* owned by the state; NULL = empty slot */
	uint32_t hash, val;
};

struct zr_str_table {
	struct zr_str_entry *e;
	size_t cap, n;
};

struct zr_state_index {
	struct zr_ip_table wl_by_ip, svc_by_vip;
	struct zr_str_table svc_by_key, svc_by_host;
};

int zr_state_index_ip_add(struct zr_ip_table *t, const zr_ip_t *ip, const char *network, uint32_t val)
	__attribute__((warn_unused_result));
/* network NULL: any network. */
bool zr_state_index_ip_find(const struct zr_ip_table *t, const zr_ip_t *ip, const char *network, size_t *val);
int zr_state_index_str_add(struct zr_str_table *t, const char *s, uint32_t val) __attribute__((warn_unused_result));
bool zr_state_index_str_find(const struct zr_str_table *t, const char *s, size_t *val);
void zr_state_index_free(void *index);

#endif
