/* Per-worker allocation: jemalloc arena of the worker's NUMA node when
 * built with jemalloc (not under sanitizers), else malloc. Only for objects
 * recycled through free lists; nothing is freed one by one on the data path. */
#ifndef ZR_CORE_MEM_H
#define ZR_CORE_MEM_H

#include <stdlib.h>

#include "core/worker-t.h"

#ifdef ZR_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
static inline void *zr_mem_alloc(zr_worker_t *w, size_t n)
{
	return mallocx(n, MALLOCX_ARENA(w->arena) | MALLOCX_TCACHE_NONE);
}
static inline void zr_mem_free(zr_worker_t *w, void *p)
{
	(void)w;
	dallocx(p, MALLOCX_TCACHE_NONE);
}
/* Creates a jemalloc arena; returns its index or 0 (the default arena). */
static inline unsigned zr_mem_arena_create(void)
{
	unsigned a = 0;
	size_t sz = sizeof(a);
	if (mallctl("arenas.create", &a, &sz, NULL, 0) != 0)
		return 0;
	return a;
}
#else
static inline void *zr_mem_alloc(zr_worker_t *w, size_t n)
{
	(void)w;
	return malloc(n);
}
static inline void zr_mem_free(zr_worker_t *w, void *p)
{
	(void)w;
	free(p);
}
static inline unsigned zr_mem_arena_create(void)
{
	return 0;
}
#endif

#endif
