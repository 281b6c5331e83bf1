/* The test PKI for unit tests that need real certificates: finds
 * tests/certs/gen.sh from the source root, the build dir or a test's
 * workdir, generates a throwaway CA and workload certificates into a fresh
 * temporary directory, and removes it at the end. Header-only (static
 * functions); include it once per test program, after tap.h. */
#ifndef ZR_TESTS_CERTS_FIXTURE_H
#define ZR_TESTS_CERTS_FIXTURE_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char certs_root[4096], certs_dir[4096];

/* The path of gen.sh's file `name` in the generated directory (a rotating
 * static buffer: up to 8 results may be in use at once). */
static const char *path(const char *name)
{
	static char buf[8][4200];
	static int n;
	char *b = buf[n++ % 8];
	snprintf(b, sizeof(buf[0]), "%s/%s", certs_dir, name);
	return b;
}

/* Generates the certificates into $TMPDIR/<prefix>.XXXXXX, or skips the whole
 * test (TAP skip_all, exit 77) when the script or openssl is missing. */
static void certs_setup(const char *prefix)
{
	const char *cands[] = {".", "../..", ".."};
	char cmd[9000];
	for (size_t i = 0; i < 3 && !certs_root[0]; i++) {
		snprintf(cmd, sizeof(cmd), "%s/tests/certs/gen.sh", cands[i]);
		if (access(cmd, R_OK) == 0 && !realpath(cands[i], certs_root))
			certs_root[0] = '\0';
	}
	if (!certs_root[0])
		skip_all("cannot find tests/certs/gen.sh");
	if (system("openssl version >/dev/null 2>&1") != 0)
		skip_all("no openssl command");
	snprintf(certs_dir, sizeof(certs_dir), "%s/%s.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", prefix);
	if (!mkdtemp(certs_dir))
		skip_all("mkdtemp failed");
	snprintf(cmd, sizeof(cmd), "bash %s/tests/certs/gen.sh %s", certs_root, certs_dir);
	if (system(cmd) != 0)
		skip_all("tests/certs/gen.sh failed");
}

static void certs_cleanup(void)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", certs_dir);
	if (system(cmd) != 0)
		diag("could not remove %s", certs_dir);
}

#endif
