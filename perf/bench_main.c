/* zring-bench: the benchmarking CLI. This is the command-line skeleton: it
 * knows the planned modes and says so when one is asked for before it is
 * built, so scripts and docs can name them today. */
#include <stdio.h>
#include <string.h>

#ifndef ZR_VERSION
#define ZR_VERSION "unknown"
#endif

struct mode {
	const char *name;
	const char *summary;
};

static const struct mode modes[] = {
	{"stream", "bulk throughput over N connections (Gbit/s, CPU per GB)"},
	{"rr", "request/response latency on persistent connections (p50/p99/p999)"},
	{"crr", "connect/request/response/close rate"},
	{"echo", "run an echo server"},
	{"sink", "run a discard server (counts bytes)"},
	{"suite", "the standard comparison suite: direct, zring, HAProxy; table, JSON and SVG reports"},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: zring-bench MODE [OPTIONS]\n"
		     "       zring-bench --help | --version\n"
		     "\n"
		     "modes:\n");
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		fprintf(out, "  %-8s %s\n", modes[i].name, modes[i].summary);
	fprintf(out, "\n"
		     "options:\n"
		     "  -h, --help     show this help and exit\n"
		     "  -V, --version  print the version and exit\n");
}

static const struct mode *find_mode(const char *name)
{
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (strcmp(modes[i].name, name) == 0)
			return &modes[i];
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 1;
	}
	const char *arg = argv[1];
	if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
		printf("zring-bench %s\n", ZR_VERSION);
		return 0;
	}
	const struct mode *mode = find_mode(arg);
	if (!mode) {
		fprintf(stderr, "zring-bench: unknown argument '%s'\n\n", arg);
		usage(stderr);
		return 1;
	}
	fprintf(stderr, "zring-bench: mode '%s' is not built yet (see issue 'zring-bench')\n", mode->name);
	return 1;
}
