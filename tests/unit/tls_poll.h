/* zr_tls_read and zr_tls_out_peek as a worker's loop sees them. On an
 * asynchronous record crypto backend (dpdk) records complete only when the
 * device is polled (zr_tls_crypto_poll): these poll until the connection's
 * records are back, so that a test reads the same on every backend. On the
 * others they are the plain calls. Header-only, for the record tests. */
#ifndef ZR_TESTS_TLS_POLL_H
#define ZR_TESTS_TLS_POLL_H

#include <errno.h>
#include <stdlib.h>

#include "crypto/tls-int.h"

/* Polls until nothing is in flight on this thread. */
static inline void tls_settle(void)
{
	while (zr_tls_crypto_poll())
		;
}

/* A read that returns -EAGAIN only when the connection really needs more
 * input: every batch it submits is polled back and the read retried. */
static inline ssize_t tls_read(zr_tls_t *t, void *buf, size_t cap)
{
	for (int i = 0;; i++) {
		ssize_t r = zr_tls_read(t, buf, cap);
		if (r != -EAGAIN || !t->rec.as || i == 1000)
			return r;
		tls_settle();
	}
}

/* Reads what t gives now into rx[*got..total), in pieces of random sizes
 * (some smaller than a record: staging). False when a read fails. */
static inline bool tls_read_random(zr_tls_t *t, uint8_t *rx, size_t *got, size_t total)
{
	for (;;) {
		size_t cap = rand() % 2 ? (size_t)rand() % 100 + 1 : (size_t)rand() % 100000 + 1;
		cap = cap < total - *got ? cap : total - *got;
		if (!cap)
			return true;
		ssize_t r = tls_read(t, rx + *got, cap);
		if (r == -EAGAIN)
			return true;
		if (r <= 0) {
			diag("read: %zd %s", r, zr_tls_error(t));
			return false;
		}
		*got += (size_t)r;
	}
}

/* The whole first run of output, every record in it sealed. */
static inline size_t tls_peek(zr_tls_t *t, const void **p)
{
	if (t->rec.as) {
		(void)zr_tls_out_peek(t, p); /* submits what was written */
		tls_settle();
	}
	return zr_tls_out_peek(t, p);
}

#endif
