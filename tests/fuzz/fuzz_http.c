/* libFuzzer target for the control servers' request-head parser (admin,
 * metrics and readiness: ctl/http.c), its query-parameter lookup, and the
 * /logging filter parser that takes the `level` parameter (io/log.c). It must
 * never crash or read past the bytes received; every input is a complete
 * head (0), a need for more bytes (-EAGAIN) or an HTTP status to answer. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/http-int.h"
#include "io/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int started;
	if (!started) {
		zr_log_set_default_level(ZR_LOG_ERROR);
		started = 1;
	}
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
		char out[256], err[256], now[512];
		(void)zr_http_query_param(req.query, "reset", out, sizeof(out));
		if (zr_http_query_param(req.query, "level", out, sizeof(out))) {
			/* Check and apply as POST /logging does, then back to the
			 * start-up filter so that inputs stay independent. */
			int checked = zr_log_check_filter(out, err, sizeof(err));
			int applied = zr_log_apply_filter(out, false, err, sizeof(err));
			/* an empty spec is no change to apply, and no filter to check */
			if (out[0] && (checked == 0) != (applied == 0))
				abort();
			zr_log_filter_str(now, sizeof(now));
			if (zr_log_apply_filter("", true, err, sizeof(err)) != 0)
				abort();
		}
	} else if (rc != -EAGAIN && (rc < 400 || rc > 599)) {
		abort();
	}
	free(buf);
	return 0;
}
