/* Request-head parsing for the control servers (ctl/server.c). Internal. */
#ifndef ZR_CTL_HTTP_INT_H
#define ZR_CTL_HTTP_INT_H

#include <stddef.h>

#define REQ_MAX 8192 /* request line + headers */

struct request {
	char method[16];
	char path[1024];
	char query[1024];
};

/* Returns 0 when `buf` holds a complete, well-formed request head, -EAGAIN
 * when more bytes are needed, else the HTTP status to answer with. Rejects
 * as early as possible so garbage never waits for the timeout. */
int zr_http_parse_request(const char *buf, size_t len, struct request *req);

/* Value of `key` in an application/x-www-form-urlencoded query, or NULL. */
const char *zr_http_query_param(const char *query, const char *key, char *out, size_t cap);

#endif
