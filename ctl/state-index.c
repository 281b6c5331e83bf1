#include "ctl/state-index.h"
#include "io/strbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Keeps the load factor at or below 1/2 so probe chains stay short. */
static int ip_grow(struct zr_ip_table *t)
{
	if ((t->n + 1) * 2 <= t->cap)
		return 0;
	size_t cap = t->cap ? t->cap * 2 : 64;
	struct zr_ip_entry *e = calloc(cap, sizeof(*e));
	if (!e)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		if (!t->e[i].used)
			continue;
		size_t j = zr_ip_hash(&t->e[i].ip) & (cap - 1);
		while (e[j].used)
			j = (j + 1) & (cap - 1);
		e[j] = t->e[i];
	}
	free(t->e);
	t->e = e;
	t->cap = cap;
	return 0;
}

int zr_state_index_ip_add(struct zr_ip_table *t, const zr_ip_t *ip, const char *network, uint32_t val)
{
	if (ip_grow(t) != 0)
		return -ENOMEM;
	size_t j = zr_ip_hash(ip) & (t->cap - 1);
	while (t->e[j].used)
		j = (j + 1) & (t->cap - 1);
	t->e[j] = (struct zr_ip_entry){.ip = *ip, .network = network, .val = val, .used = true};
	t->n++;
	return 0;
}

bool zr_state_index_ip_find(const struct zr_ip_table *t, const zr_ip_t *ip, const char *network, size_t *val)
{
	bool found = false;
	if (!t->cap)
		return false;
	for (size_t j = zr_ip_hash(ip) & (t->cap - 1); t->e[j].used; j = (j + 1) & (t->cap - 1)) {
		const struct zr_ip_entry *e = &t->e[j];
		if (!zr_ip_equal(&e->ip, ip) || (network && strcmp(network, e->network ? e->network : "")))
			continue;
		if (!found || e->val < *val)
			*val = e->val;
		found = true;
	}
	return found;
}

static int str_grow(struct zr_str_table *t)
{
	if ((t->n + 1) * 2 <= t->cap)
		return 0;
	size_t cap = t->cap ? t->cap * 2 : 64;
	struct zr_str_entry *e = calloc(cap, sizeof(*e));
	if (!e)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		if (!t->e[i].s)
			continue;
		size_t j = t->e[i].hash & (cap - 1);
		while (e[j].s)
			j = (j + 1) & (cap - 1);
		e[j] = t->e[i];
	}
	free(t->e);
	t->e = e;
	t->cap = cap;
	return 0;
}

int zr_state_index_str_add(struct zr_str_table *t, const char *s, uint32_t val)
{
	if (str_grow(t) != 0)
		return -ENOMEM;
	uint32_t h = zr_str_hash(s);
	size_t j = h & (t->cap - 1);
	while (t->e[j].s)
		j = (j + 1) & (t->cap - 1);
	t->e[j] = (struct zr_str_entry){.s = s, .hash = h, .val = val};
	t->n++;
	return 0;
}

bool zr_state_index_str_find(const struct zr_str_table *t, const char *s, size_t *val)
{
	bool found = false;
	if (!t->cap)
		return false;
	uint32_t h = zr_str_hash(s);
	for (size_t j = h & (t->cap - 1); t->e[j].s; j = (j + 1) & (t->cap - 1)) {
		const struct zr_str_entry *e = &t->e[j];
		if (e->hash != h || strcmp(e->s, s))
			continue;
		if (!found || e->val < *val)
			*val = e->val;
		found = true;
	}
	return found;
}

void zr_state_index_free(void *index)
{
	struct zr_state_index *idx = index;
	if (!idx)
		return;
	free(idx->wl_by_ip.e);
	free(idx->svc_by_vip.e);
	free(idx->svc_by_key.e);
	free(idx->svc_by_host.e);
	free(idx);
}
