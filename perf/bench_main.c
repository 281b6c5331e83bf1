/* zring-bench: the benchmarking CLI. Dispatches `zring-bench MODE ...`: the
 * client modes (stream, rr, crr) run the generator and print the report;
 * echo and sink serve until SIGINT/SIGTERM and print their totals; suite and
 * crypto are whole subcommands of their own.
 * Exit status: 0 ok; 1 bad command line; 2 could not run (io_uring refused,
 * address in use, report unwritable); 3 the run completed but counted
 * errors (scripts notice; the report says which). */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "io/addr.h"
#include "perf/bench.h"

#ifndef ZR_VERSION
#define ZR_VERSION "unknown"
#endif

struct mode {
	const char *name;
	const char *summary;
	const char *usage; /* NULL: the mode prints its own help */
};

#define CLIENT_COMMON                                                                                     \
	"  --connections N      concurrent connections (spread over the threads)\n"                       \
	"  --duration D         measured time (10, 10s, 500ms, 2m; default 10s)\n"                        \
	"  --warmup D           time before measuring, excluded from every figure (default 1s)\n"         \
	"  --threads N          generator threads, one io_uring each (default min(connections, cores))\n" \
	"  --timeout D          connect and response timeout (default 5s)\n"                              \
	"  --via-socks5 ADDR    reach the target through a SOCKS5 proxy (e.g. a zring node's :15080)\n"   \
	"  --bind IP            source address of the connections\n"                                      \
	"  --json FILE          write the full report as JSON\n"                                          \
	"  --svg FILE           write a plot (latency spectrum, or throughput over time)\n"               \
	"  --quiet              no table on stdout\n"

static const struct mode modes[] = {
	{"stream", "bulk throughput over N connections (Gbit/s, per connection, generator CPU)",
	 "usage: zring-bench stream --target HOST:PORT [OPTIONS]\n"
	 "Bulk throughput against `zring-bench sink` (iperf3's job), total and per connection.\n\n"
	 "  --target HOST:PORT   the sink (required)\n"
	 "  --size B             bytes per send (default 128K)\n"
	 "  --direction up|down|both  who sends (default up: the client)\n" CLIENT_COMMON},
	{"rr", "open-loop request/response latency at a fixed rate (p50/p99/p99.9)",
	 "usage: zring-bench rr --target HOST:PORT --rate R [OPTIONS]\n"
	 "Requests at R per second in total on persistent connections to `zring-bench echo`.\n"
	 "Latency runs from each request's intended send time to the last byte of its response\n"
	 "(a request due while its connection still waits queues behind it: coordinated omission\n"
	 "is corrected as wrk2 does).\n\n"
	 "  --target HOST:PORT   the echo server (required)\n"
	 "  --rate R             requests per second over all connections (required; 50000 or 50k)\n"
	 "  --request B          request body bytes (default 1024)\n"
	 "  --response B         response bytes (default 1024)\n" CLIENT_COMMON "  (default connections: 16)\n"},
	{"crr", "connect/request/response/close rate and latency",
	 "usage: zring-bench crr --target HOST:PORT [OPTIONS]\n"
	 "Connect, request, response, close, back to back on each connection slot, or paced at\n"
	 "--rate; latency from each cycle's intended start (connect included).\n\n"
	 "  --target HOST:PORT   the echo server (required)\n"
	 "  --rate R             cycles per second over all slots (default 0: as fast as possible)\n"
	 "  --request B          request body bytes (default 64)\n"
	 "  --response B         response bytes (default 64)\n" CLIENT_COMMON},
	{"echo", "run an echo server (answers rr/crr requests)",
	 "usage: zring-bench echo --listen ADDR [--threads N] [--json FILE] [--quiet]\n"
	 "Serves until SIGINT/SIGTERM, then prints its totals (and writes them to --json).\n"
	 "A request is an 8-byte header { u32 request_len, u32 response_len } (network byte\n"
	 "order) and request_len bytes; the answer is exactly response_len bytes.\n\n"
	 "  --listen ADDR        IP:PORT to listen on (port 0 picks one and prints it)\n"
	 "  --threads N          server threads, one io_uring and SO_REUSEPORT listener each (default cores)\n"},
	{"sink", "run a discard/source server (stream's peer)",
	 "usage: zring-bench sink --listen ADDR [--threads N] [--size B] [--json FILE] [--quiet]\n"
	 "Serves until SIGINT/SIGTERM, then prints its totals (and writes them to --json).\n"
	 "A connection starts with one command byte: 'U' the client uploads (the sink counts and\n"
	 "discards), 'D' the sink sends until the client closes, 'B' both. bytes_in excludes it.\n\n"
	 "  --listen ADDR        IP:PORT to listen on (port 0 picks one and prints it)\n"
	 "  --size B             bytes per send for 'D'/'B' (default 128K, at most 1M per send)\n"
	 "  --threads N          server threads (default cores)\n"},
	{"suite", "the standard comparison suite: direct, zring, HAProxy; table, JSON and SVG reports", NULL},
	{"crypto", "AEAD record-crypto microbenchmark (per backend, per size)", NULL},
};

#define N_MODES (sizeof(modes) / sizeof(modes[0]))

static void usage(FILE *out)
{
	fprintf(out, "usage: zring-bench MODE [OPTIONS]\n"
		     "       zring-bench MODE --help\n"
		     "       zring-bench --help | --version\n"
		     "\n"
		     "modes:\n");
	for (size_t i = 0; i < N_MODES; i++)
		fprintf(out, "  %-8s %s\n", modes[i].name, modes[i].summary);
	fprintf(out, "\n"
		     "options:\n"
		     "  -h, --help     show this help and exit\n"
		     "  -V, --version  print the version and exit\n"
		     "\n"
		     "exit status: 0 ok, 1 bad command line, 2 could not run, 3 the run counted errors\n");
}

static const struct mode *find_mode(const char *name)
{
	for (size_t i = 0; i < N_MODES; i++)
		if (strcmp(modes[i].name, name) == 0)
			return &modes[i];
	return NULL;
}

static int run_client(const zr_bench_opts_t *o)
{
	zr_bench_result_t r;
	char err[256] = "";
	int ret = zr_bench_run(o, &r, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "zring-bench: %s: %s\n", zr_bench_mode_name(o->mode), err);
		zr_bench_result_free(&r);
		return 2;
	}
	static zr_bench_env_t env;
	zr_bench_env_fill(&env, o->command_line);
	if (!o->quiet)
		zr_bench_report_table(stdout, o, &r, &env);
	int status = 0;
	if (o->json_path && (ret = zr_bench_report_json_file(o->json_path, o, &r, &env)) < 0) {
		fprintf(stderr, "zring-bench: --json: cannot write %s: %s\n", o->json_path, strerror(-ret));
		status = 2;
	}
	if (o->svg_path && (ret = zr_bench_report_svg(o->svg_path, o, &r)) < 0) {
		fprintf(stderr, "zring-bench: --svg: cannot write %s: %s\n", o->svg_path, strerror(-ret));
		status = 2;
	}
	uint64_t errors = 0;
	for (int e = 0; e < ZR_BENCH_ERR_COUNT; e++)
		errors += r.errors[e];
	if (errors && !status) {
		fprintf(stderr, "zring-bench: %s: %llu errors during the run (exit status 3)\n",
			zr_bench_mode_name(o->mode), (unsigned long long)errors);
		status = 3;
	}
	zr_bench_result_free(&r);
	return status;
}

static int run_server(const zr_bench_opts_t *o)
{
	/* Block the stop signals before any thread starts, so that they all
	 * inherit the mask and sigwait() below is the only taker. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	zr_bench_server_t *s;
	char err[256] = "";
	const char *name = zr_bench_mode_name(o->mode);
	int ret = zr_bench_server_start(o, &s, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "zring-bench: %s: %s\n", name, err);
		return 2;
	}
	zr_sockaddr_t sa = {.len = o->listen_len};
	memcpy(&sa.ss, &o->listen, sizeof(o->listen));
	if (sa.sa.sa_family == AF_INET6)
		sa.in6.sin6_port = htons(zr_bench_server_port(s));
	else
		sa.in4.sin_port = htons(zr_bench_server_port(s));
	char addr[ZR_ADDR_STRLEN];
	printf("zring-bench %s: listening on %s (%u threads)\n", name, zr_sockaddr_str(&sa, addr), o->threads);
	fflush(stdout);
	int sig = 0;
	sigwait(&set, &sig);
	uint64_t in, out, requests, conns;
	zr_bench_server_totals(s, &in, &out, &requests, &conns);
	zr_bench_server_stop(s);
	if (!o->quiet)
		printf("zring-bench %s: totals: connections=%llu bytes_in=%llu bytes_out=%llu requests=%llu\n", name,
		       (unsigned long long)conns, (unsigned long long)in, (unsigned long long)out,
		       (unsigned long long)requests);
	if (o->json_path) {
		FILE *f = fopen(o->json_path, "w");
		if (!f) {
			fprintf(stderr, "zring-bench: --json: cannot write %s: %s\n", o->json_path, strerror(errno));
			return 2;
		}
		zr_json_t j;
		zr_json_init(&j, f);
		zr_json_object_begin(&j, NULL);
		zr_json_str(&j, "mode", name);
		zr_json_str(&j, "listen", addr);
		zr_json_uint(&j, "connections", conns);
		zr_json_uint(&j, "bytes_in", in);
		zr_json_uint(&j, "bytes_out", out);
		zr_json_uint(&j, "requests", requests);
		zr_json_object_end(&j);
		fputc('\n', f);
		if (fclose(f) != 0) {
			fprintf(stderr, "zring-bench: --json: cannot write %s: %s\n", o->json_path, strerror(errno));
			return 2;
		}
	}
	return 0;
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
	if (strcmp(mode->name, "suite") == 0)
		return zr_bench_suite_main(argc - 1, argv + 1);
	if (strcmp(mode->name, "crypto") == 0)
		return zr_bench_crypto_main(argc - 1, argv + 1);
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(mode->usage, stdout);
			return 0;
		}

	static zr_bench_opts_t o;
	char err[256] = "";
	if (zr_bench_parse_args(argc, argv, &o, err, sizeof(err)) < 0) {
		fprintf(stderr, "zring-bench: %s\ntry 'zring-bench %s --help'\n", err, mode->name);
		return 1;
	}
	if (o.mode == ZR_BENCH_ECHO || o.mode == ZR_BENCH_SINK)
		return run_server(&o);
	signal(SIGPIPE, SIG_IGN);
	/* The live line is for a person watching: never into a file or pipe. */
	o.progress = !o.quiet && isatty(STDOUT_FILENO);
	return run_client(&o);
}
