/* zring-bench's command line for the modes (stream, rr, crr, echo, sink):
 * every value is checked here, so the modes can trust zr_bench_opts_t, and
 * every complaint names the option it is about. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/addr.h"
#include "perf/bench.h"

enum {
	M_STREAM = 1 << ZR_BENCH_STREAM,
	M_RR = 1 << ZR_BENCH_RR,
	M_CRR = 1 << ZR_BENCH_CRR,
	M_ECHO = 1 << ZR_BENCH_ECHO,
	M_SINK = 1 << ZR_BENCH_SINK,
	M_CLIENT = M_STREAM | M_RR | M_CRR,
	M_SERVER = M_ECHO | M_SINK,
};

enum opt_id {
	O_TARGET,
	O_CONNECTIONS,
	O_DURATION,
	O_WARMUP,
	O_THREADS,
	O_SIZE,
	O_DIRECTION,
	O_RATE,
	O_REQUEST,
	O_RESPONSE,
	O_TIMEOUT,
	O_JSON,
	O_SVG,
	O_VIA_SOCKS5,
	O_BIND,
	O_LISTEN,
	O_QUIET,
};

static const struct opt {
	const char *name;
	enum opt_id id;
	unsigned modes;
	bool flag; /* takes no value */
} opts[] = {
	{"--target", O_TARGET, M_CLIENT, false},
	{"--connections", O_CONNECTIONS, M_CLIENT, false},
	{"--duration", O_DURATION, M_CLIENT, false},
	{"--warmup", O_WARMUP, M_CLIENT, false},
	{"--threads", O_THREADS, M_CLIENT | M_SERVER, false},
	{"--size", O_SIZE, M_STREAM | M_SINK, false},
	{"--direction", O_DIRECTION, M_STREAM, false},
	{"--rate", O_RATE, M_RR | M_CRR, false},
	{"--request", O_REQUEST, M_RR | M_CRR, false},
	{"--response", O_RESPONSE, M_RR | M_CRR, false},
	{"--timeout", O_TIMEOUT, M_CLIENT, false},
	{"--json", O_JSON, M_CLIENT | M_SERVER, false},
	{"--svg", O_SVG, M_CLIENT, false},
	{"--via-socks5", O_VIA_SOCKS5, M_CLIENT, false},
	{"--bind", O_BIND, M_CLIENT, false},
	{"--listen", O_LISTEN, M_SERVER, false},
	{"--quiet", O_QUIET, M_CLIENT | M_SERVER, true},
};

static int complain(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int complain(char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int parse_uint(const char *name, const char *s, unsigned long lo, unsigned long hi, unsigned long *out,
		      char *err, size_t cap)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || s[0] == '-' || errno)
		return complain(err, cap, "%s: '%s' is not a number", name, s);
	if (v < lo || v > hi)
		return complain(err, cap, "%s: %lu is out of range (%lu..%lu)", name, v, lo, hi);
	*out = v;
	return 0;
}

/* Bytes: 1024, 64K, 128KiB, 1M, 4MiB, 1G (binary multiples). */
static int parse_bytes(const char *name, const char *s, uint64_t lo, uint64_t hi, uint32_t *out, char *err, size_t cap)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || s[0] == '-' || end == s || errno)
		return complain(err, cap, "%s: '%s' is not a size (e.g. 1024, 64K, 1MiB)", name, s);
	static const struct {
		const char *suffix;
		unsigned shift;
	} units[] = {{"", 0},	{"B", 0},    {"K", 10}, {"KiB", 10}, {"k", 10},
		     {"M", 20}, {"MiB", 20}, {"G", 30}, {"GiB", 30}};
	size_t i = 0;
	for (; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(end, units[i].suffix) == 0)
			break;
	if (i == sizeof(units) / sizeof(units[0]))
		return complain(err, cap, "%s: '%s' is not a size (e.g. 1024, 64K, 1MiB)", name, s);
	v <<= units[i].shift;
	if (v < lo || v > hi)
		return complain(err, cap, "%s: %s is out of range (%llu..%llu bytes)", name, s, (unsigned long long)lo,
				(unsigned long long)hi);
	*out = (uint32_t)v;
	return 0;
}

/* Seconds: "10", "10s", "1.5s", "500ms", "2m". */
static int parse_duration(const char *name, const char *s, double *out, char *err, size_t cap)
{
	char *end;
	double v = strtod(s, &end);
	double unit = 1;
	if (end == s || !isfinite(v) || v < 0)
		goto bad;
	if (strcmp(end, "ms") == 0)
		unit = 1e-3;
	else if (strcmp(end, "us") == 0)
		unit = 1e-6;
	else if (strcmp(end, "m") == 0)
		unit = 60;
	else if (strcmp(end, "h") == 0)
		unit = 3600;
	else if (*end && strcmp(end, "s") != 0)
		goto bad;
	*out = v * unit;
	return 0;
bad:
	return complain(err, cap, "%s: '%s' is not a duration (e.g. 10, 10s, 500ms, 2m)", name, s);
}

/* "HOST:PORT" or "[v6]:PORT"; a name is resolved unless `keep_name` (SOCKS5
 * sends it to the proxy as it is). Port 0 only when allow_port0. */
static int parse_hostport(const char *name, const char *s, struct sockaddr_storage *ss, socklen_t *len, bool keep_name,
			  bool allow_port0, char *err, size_t cap)
{
	zr_sockaddr_t sa;
	if (zr_addr_parse(s, &sa) == 0) {
		if (!allow_port0 && zr_sockaddr_port(&sa) == 0)
			return complain(err, cap, "%s: '%s' needs a port other than 0", name, s);
		memcpy(ss, &sa.ss, sizeof(*ss));
		*len = sa.len;
		return 0;
	}
	const char *colon = strrchr(s, ':');
	char host[256];
	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host) || !colon[1])
		return complain(err, cap, "%s: '%s' is not HOST:PORT", name, s);
	unsigned long port;
	if (parse_uint(name, colon + 1, allow_port0 ? 0 : 1, 65535, &port, err, cap) < 0)
		return complain(err, cap, "%s: '%s' is not HOST:PORT (bad port)", name, s);
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	if (keep_name) {
		*len = 0;
		return 0;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int gai = getaddrinfo(host, NULL, &hints, &res);
	if (gai != 0 || !res)
		return complain(err, cap, "%s: cannot resolve '%s': %s", name, host, gai_strerror(gai));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port); /* same offset for v4 and v6 */
	freeaddrinfo(res);
	return 0;
}

static void set_command_line(zr_bench_opts_t *o, int argc, char **argv)
{
	size_t n = (size_t)snprintf(o->command_line, sizeof(o->command_line), "zring-bench");
	for (int i = 1; i < argc && n < sizeof(o->command_line); i++) {
		bool quote = strpbrk(argv[i], " \t'\"$") != NULL || !argv[i][0];
		n += (size_t)snprintf(o->command_line + n, sizeof(o->command_line) - n, quote ? " '%s'" : " %s",
				      argv[i]);
	}
}

static int mode_from(const char *s, zr_bench_mode_t *m)
{
	static const char *const names[] = {"stream", "rr", "crr", "echo", "sink"};
	for (unsigned i = 0; i < 5; i++)
		if (strcmp(s, names[i]) == 0) {
			*m = (zr_bench_mode_t)i;
			return 0;
		}
	return -EINVAL;
}

static void defaults(zr_bench_opts_t *o, zr_bench_mode_t m)
{
	memset(o, 0, sizeof(*o));
	o->mode = m;
	o->connections = m == ZR_BENCH_RR ? 16 : 1;
	o->duration_s = 10;
	o->warmup_s = 1;
	o->size = 128 * 1024;
	o->direction = ZR_BENCH_UP;
	o->request_len = m == ZR_BENCH_CRR ? 64 : 1024;
	o->response_len = m == ZR_BENCH_CRR ? 64 : 1024;
	o->timeout_s = 5;
}

int zr_bench_parse_args(int argc, char **argv, zr_bench_opts_t *o, char *err, size_t cap)
{
	zr_bench_mode_t m;
	if (argc < 2 || mode_from(argv[1], &m) < 0)
		return complain(err, cap, "unknown mode '%s'", argc < 2 ? "" : argv[1]);
	defaults(o, m);
	set_command_line(o, argc, argv);
	const char *target = NULL, *listen_at = NULL, *socks5 = NULL, *bind_to = NULL;
	bool have_rate = false, have_threads = false;
	for (int i = 2; i < argc; i++) {
		const char *arg = argv[i], *val = NULL;
		char name[64];
		const char *eq = strchr(arg, '=');
		size_t nl = eq ? (size_t)(eq - arg) : strlen(arg);
		if (nl >= sizeof(name))
			nl = sizeof(name) - 1;
		memcpy(name, arg, nl);
		name[nl] = 0;
		const struct opt *op = NULL;
		for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++)
			if (strcmp(opts[k].name, name) == 0)
				op = &opts[k];
		if (!op)
			return complain(err, cap, "unknown option '%s'", arg);
		if (!(op->modes & (1u << m)))
			return complain(err, cap, "%s: not an option of %s", op->name, argv[1]);
		if (op->flag) {
			if (eq)
				return complain(err, cap, "%s: takes no value", op->name);
		} else if (eq) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			return complain(err, cap, "%s: needs a value", op->name);
		}
		unsigned long u;
		int r = 0;
		switch (op->id) {
		case O_TARGET:
			target = val;
			break;
		case O_LISTEN:
			listen_at = val;
			break;
		case O_VIA_SOCKS5:
			socks5 = val;
			break;
		case O_BIND:
			bind_to = val;
			break;
		case O_CONNECTIONS:
			r = parse_uint(op->name, val, 1, 100000, &u, err, cap);
			o->connections = (unsigned)u;
			break;
		case O_THREADS:
			r = parse_uint(op->name, val, 1, 1024, &u, err, cap);
			o->threads = (unsigned)u;
			have_threads = true;
			break;
		case O_DURATION:
			r = parse_duration(op->name, val, &o->duration_s, err, cap);
			if (r == 0 && (o->duration_s < 0.1 || o->duration_s > 86400))
				r = complain(err, cap, "%s: '%s' is out of range (100ms..24h)", op->name, val);
			break;
		case O_WARMUP:
			r = parse_duration(op->name, val, &o->warmup_s, err, cap);
			if (r == 0 && o->warmup_s > 3600)
				r = complain(err, cap, "%s: '%s' is out of range (0..1h)", op->name, val);
			break;
		case O_TIMEOUT:
			r = parse_duration(op->name, val, &o->timeout_s, err, cap);
			if (r == 0 && (o->timeout_s < 0.001 || o->timeout_s > 3600))
				r = complain(err, cap, "%s: '%s' is out of range (1ms..1h)", op->name, val);
			break;
		case O_SIZE:
			r = parse_bytes(op->name, val, 1, ZR_BENCH_MAX_MSG, &o->size, err, cap);
			break;
		case O_REQUEST:
			r = parse_bytes(op->name, val, 0, ZR_BENCH_MAX_MSG, &o->request_len, err, cap);
			break;
		case O_RESPONSE:
			r = parse_bytes(op->name, val, 1, ZR_BENCH_MAX_MSG, &o->response_len, err, cap);
			break;
		case O_DIRECTION:
			if (strcmp(val, "up") == 0)
				o->direction = ZR_BENCH_UP;
			else if (strcmp(val, "down") == 0)
				o->direction = ZR_BENCH_DOWN;
			else if (strcmp(val, "both") == 0)
				o->direction = ZR_BENCH_BOTH;
			else
				r = complain(err, cap, "%s: '%s' is not up, down or both", op->name, val);
			break;
		case O_RATE: {
			char *end;
			o->rate = strtod(val, &end);
			if (end != val && (*end == 'k' || *end == 'K'))
				o->rate *= 1000, end++;
			if (end == val || *end || !isfinite(o->rate))
				r = complain(err, cap, "%s: '%s' is not a number", op->name, val);
			else if (o->rate < (m == ZR_BENCH_CRR ? 0 : 1e-3) || o->rate > 1e8)
				r = complain(err, cap, "%s: '%s' is out of range", op->name, val);
			have_rate = true;
			break;
		}
		case O_JSON:
			o->json_path = val;
			break;
		case O_SVG:
			o->svg_path = val;
			break;
		case O_QUIET:
			o->quiet = true;
			break;
		}
		if (r < 0)
			return r;
	}

	if (m == ZR_BENCH_ECHO || m == ZR_BENCH_SINK) {
		if (!listen_at)
			return complain(err, cap, "--listen: required for %s", argv[1]);
		if (parse_hostport("--listen", listen_at, &o->listen, &o->listen_len, false, true, err, cap) < 0)
			return -EINVAL;
		if (!have_threads) {
			long cores = sysconf(_SC_NPROCESSORS_ONLN);
			o->threads = cores > 0 ? (unsigned)cores : 1;
		}
		return 0;
	}
	if (m == ZR_BENCH_RR && !have_rate)
		return complain(err, cap, "--rate: required for rr");
	if (!target)
		return complain(err, cap, "--target: required for %s", argv[1]);
	if (strlen(target) >= sizeof(o->target_text))
		return complain(err, cap, "--target: too long");
	snprintf(o->target_text, sizeof(o->target_text), "%s", target);
	if (socks5) {
		if (parse_hostport("--via-socks5", socks5, &o->socks5, &o->socks5_len, false, false, err, cap) < 0)
			return -EINVAL;
		o->via_socks5 = true;
	}
	if (parse_hostport("--target", target, &o->target, &o->target_len, o->via_socks5, false, err, cap) < 0)
		return -EINVAL;
	if (bind_to) {
		zr_ip_t ip;
		zr_sockaddr_t sa;
		if (zr_ip_parse(bind_to, &ip) == 0)
			zr_sockaddr_from_ip(&sa, &ip, 0);
		else if (zr_addr_parse(bind_to, &sa) < 0)
			return complain(err, cap, "--bind: '%s' is not an IP address", bind_to);
		memcpy(&o->bind, &sa.ss, sizeof(o->bind));
		o->bind_len = sa.len;
		o->has_bind = true;
		int to_family = o->via_socks5 ? o->socks5.ss_family : o->target.ss_family;
		if (o->target_len || o->via_socks5)
			if (o->bind.ss_family != to_family)
				return complain(err, cap, "--bind: '%s' is not of the destination's address family",
						bind_to);
	}
	if (!have_threads) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);
		o->threads = cores > 0 ? (unsigned)cores : 1;
	}
	if (o->threads > o->connections)
		o->threads = o->connections;
	return 0;
}
