/* libFuzzer target for the control servers' request-head parser (admin,
 * metrics and readiness: ctl/http.c) and its query-parameter lookup. It must
 * never crash or read past the bytes received; every input is a complete
 * head (0), a need for more bytes (-EAGAIN) or an HTTP status to answer. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/http-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > REQ_MAX)
		return 0;
	/* An exact-size copy, so that ASan sees any read past the end. */
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	struct request req;
	int rc = zr_http_parse_request(buf, size, &req);
	if (rc == 0) {
		if (!memchr(req.method, '\0', sizeof(req.method)) || !memchr(req.path, '\0', sizeof(req.path)) ||
		    !memchr(req.query, '\0', sizeof(req.query)))
			abort();
		char out[256];
		(void)zr_http_query_param(req.query, "level", out, sizeof(out));
		(void)zr_http_query_param(req.query, "reset", out, sizeof(out));
	} else if (rc != -EAGAIN && (rc < 400 || rc > 599)) {
		abort();
	}
	free(buf);
	return 0;
}
