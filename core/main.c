/* zring: the node proxy daemon's entry point. The main thread is the control
 * thread: it loads the config, starts the workers and the ctl servers, then
 * waits for signals (SIGHUP reloads, SIGTERM/SIGINT drain) and retires old
 * config snapshots. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/provider.h>

#include "core/conn.h"
#include "core/runtime-t.h"
#include "core/worker.h"
#include "crypto/aead.h"
#include "crypto/tls.h"
#include "ctl/config.h"
#include "ctl/server.h"
#include "io/io.h"
#include "io/log.h"

#define EXIT_BAD_CONFIG 1
#define EXIT_RUNTIME	2

static void usage(FILE *f)
{
	fprintf(f, "usage: zring --config FILE [--log-level error|warn|info|debug]\n"
		   "       zring check-config FILE\n"
		   "       zring ctl workloads|services|policies|certs|connections|stats [--admin HOST:PORT] [--json]\n"
		   "       zring --version\n");
}

/* Loads a config; errors go to stderr as plain text for the command line,
 * or as a log line once the daemon runs. */
static int load(const char *path, zr_config_t **cfg, bool as_log)
{
	zr_config_error_t err;
	char msg[2048];
	int ret = zr_config_load(path, cfg, &err);
	if (ret < 0) {
		zr_config_error_str(&err, msg, sizeof(msg));
		if (as_log)
			zr_err("main", "%s", msg);
		else
			fprintf(stderr, "zring: %s\n", msg);
		return ret;
	}
	return 0;
}

static int check_config(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "zring: check-config needs exactly one FILE\n");
		usage(stderr);
		return EXIT_BAD_CONFIG;
	}
	zr_config_t *cfg;
	if (load(argv[1], &cfg, false) < 0)
		return EXIT_BAD_CONFIG;
	printf("%s: ok (node %s, %zu workloads, %zu services, %zu policies)\n", argv[1], cfg->node,
	       cfg->state.n_workloads, cfg->state.n_services, cfg->state.n_policies);
	zr_config_free(cfg);
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Loads the trust anchors and certificates of cfg (NULL store when none is
 * configured). */
static int load_identities(const zr_config_t *cfg, zr_identity_store_t **ids, bool as_log)
{
	char err[1024];
	*ids = NULL;
	if (!cfg->identity.ca_certificates && cfg->identity.n_certificates == 0)
		return 0;
	int ret = zr_identity_store_load(cfg, ids, err, sizeof(err));
	if (ret < 0) {
		if (as_log)
			zr_err("main", "certificates: %s", err);
		else
			fprintf(stderr, "zring: certificates: %s\n", err);
		return ret;
	}
	for (size_t i = 0; i < zr_identity_store_count(*ids); i++) {
		const zr_cert_info_t *ci = zr_identity_store_info(*ids, i);
		char until[32];
		struct tm tm;
		gmtime_r(&ci->not_after, &tm);
		strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
		zr_info_unlimited("main", "certificate for %s valid until %s%s", ci->identity, until,
				  ci->expired ? " (EXPIRED: not presented)" : "");
	}
	return 0;
}

/* The first (root-cause) error of OpenSSL's queue, with its detail; the
 * queue is emptied. */
static void openssl_reason(char *out, size_t cap)
{
	const char *data;
	int flags;
	unsigned long e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags);
	if (!e) {
		snprintf(out, cap, "no reason given by OpenSSL");
		return;
	}
	char one[256];
	ERR_error_string_n(e, one, sizeof(one));
	if ((flags & ERR_TXT_STRING) && data && data[0])
		snprintf(out, cap, "%s (%s)", one, data);
	else
		snprintf(out, cap, "%s", one);
	ERR_clear_error();
}

/* The start-up record-crypto choice; /metrics and /config_dump show it for
 * the life of the process. */
static zr_crypto_info_t crypto_info;

static const char *const record_crypto_names[] = {
	[ZR_RECORD_CRYPTO_AUTO] = "auto",	[ZR_RECORD_CRYPTO_IPSEC_MB] = "ipsec-mb",
	[ZR_RECORD_CRYPTO_OPENSSL] = "openssl", [ZR_RECORD_CRYPTO_DPDK] = "dpdk",
	[ZR_RECORD_CRYPTO_KTLS] = "ktls",
};

/* Providers this process loaded, released at exit so that OpenSSL's own
 * clean-up frees them (leak checkers otherwise report them). */
static OSSL_PROVIDER *providers[2];

static void unload_providers(void)
{
	for (size_t i = 0; i < 2; i++)
		if (providers[i])
			OSSL_PROVIDER_unload(providers[i]);
}

/* Loads tls.opensslProvider and picks the record-crypto backend, before
 * any SSL_CTX exists so that handshakes use the provider. Errors are logged;
 * returns 0 or -1. Control thread, once. */
static int setup_crypto(const zr_config_t *cfg)
{
	char why[1024];
	const char *provider = cfg->tls.openssl_provider;
	if (provider) {
		/* Loading a provider by name turns off the implicit "default"
		 * one: keep it for what the provider does not implement. */
		if (!(providers[0] = OSSL_PROVIDER_try_load(NULL, provider, 1))) {
			openssl_reason(why, sizeof(why));
			zr_err("main", "tls.opensslProvider: OpenSSL provider '%s' could not be loaded: %s", provider,
			       why);
			return -1;
		}
		if (!(providers[1] = OSSL_PROVIDER_try_load(NULL, "default", 1))) {
			openssl_reason(why, sizeof(why));
			zr_err("main", "OpenSSL provider 'default' could not be loaded: %s", why);
			return -1;
		}
		/* Registered once OpenSSL is initialised, so after its own atexit
		 * handler: runs before it. */
		atexit(unload_providers);
		zr_tls_set_async(true);
	}
	bool own = cfg->tls.record_layer == ZR_RECORD_LAYER_ZRING;
	zr_record_crypto_t want = cfg->tls.record_crypto;
	if (!own) {
		/* OpenSSL's record layer does its own crypto (EVP, through the
		 * provider when one is loaded). */
		if (want != ZR_RECORD_CRYPTO_AUTO && want != ZR_RECORD_CRYPTO_OPENSSL)
			zr_warn("main",
				"tls.recordCrypto: %s is not used with tls.recordLayer: openssl; records go "
				"through OpenSSL's record layer",
				record_crypto_names[want]);
		want = ZR_RECORD_CRYPTO_OPENSSL;
	}
	const zr_aead_backend_t *b = NULL;
	if (zr_aead_select(want, provider, &b, why, sizeof(why)) < 0) {
		zr_err("main", "tls.recordCrypto: %s: %s", record_crypto_names[cfg->tls.record_crypto], why);
		return -1;
	}
	bool ktls = !b;
	if (ktls) {
		/* ktls: the tls ULP is there. Connections start on zring's
		 * record layer (the records between the handshake and the
		 * hand-off) on the backend auto picks. */
		if (zr_aead_select(ZR_RECORD_CRYPTO_AUTO, provider, &b, why, sizeof(why)) < 0 || !b) {
			zr_err("main", "tls.recordCrypto: ktls: %s", why);
			return -1;
		}
		zr_tls_set_ktls(true);
	}
	zr_tls_set_record_layer(b, own);

	/* Copies: the config is freed when a reload replaces it. */
	static char description[256], provider_name[256];
	if (ktls) {
		struct utsname u;
		snprintf(description, sizeof(description),
			 "kernel TLS (tls ULP, Linux %s); records before the hand-off: %s (%s)",
			 uname(&u) == 0 ? u.release : "?", b->name, b->describe ? b->describe() : b->name);
	} else {
		snprintf(description, sizeof(description), "%s", b->describe ? b->describe() : b->name);
	}
	if (provider)
		snprintf(provider_name, sizeof(provider_name), "%s", provider);
	crypto_info = (zr_crypto_info_t){
		.backend = ktls ? "ktls" : b->name,
		.description = description,
		.record_layer = own ? "zring" : "openssl",
		.openssl_provider = provider ? provider_name : NULL,
	};
	char e_backend[64], e_desc[512], e_prov[256];
	char fields[1024];
	snprintf(fields, sizeof(fields), "\"backend\":\"%s\",\"description\":\"%s\",\"recordLayer\":\"%s\"%s%s%s",
		 zr_json_escape(crypto_info.backend, e_backend, sizeof(e_backend)),
		 zr_json_escape(description, e_desc, sizeof(e_desc)), crypto_info.record_layer,
		 provider ? ",\"opensslProvider\":\"" : "",
		 provider ? zr_json_escape(provider, e_prov, sizeof(e_prov)) : "", provider ? "\"" : "");
	zr_log_write(ZR_LOG_INFO, "main", fields, "TLS record crypto: %s (%s) in %s's record layer%s%s",
		     crypto_info.backend, description, crypto_info.record_layer, provider ? ", OpenSSL provider " : "",
		     provider ? provider : "");
	return 0;
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_listener(const zr_listener_cfg_t *a, const zr_listener_cfg_t *b)
{
	return a->enabled == b->enabled &&
	       (!a->enabled || (a->addr.len == b->addr.len && memcmp(&a->addr.ss, &b->addr.ss, a->addr.len) == 0));
}

static void reload(zr_runtime_t *rt, const char *path, bool log_level_fixed)
{
	zr_config_t *cfg;
	zr_info("main", "SIGHUP: reloading %s", path);
	if (load(path, &cfg, true) < 0) {
		zr_err("main", "reload failed; keeping the running config");
		return;
	}
	const zr_config_t *cur = zr_runtime_config(rt);
	if (!same_listener(&cur->listeners.outbound, &cfg->listeners.outbound) ||
	    !same_listener(&cur->listeners.socks5, &cfg->listeners.socks5) ||
	    !same_listener(&cur->listeners.inbound_plaintext, &cfg->listeners.inbound_plaintext) ||
	    !same_listener(&cur->listeners.admin, &cfg->listeners.admin) ||
	    !same_listener(&cur->listeners.metrics, &cfg->listeners.metrics) ||
	    !same_listener(&cur->listeners.readiness, &cfg->listeners.readiness) || cur->workers != cfg->workers)
		zr_warn("main", "listener addresses and worker count take effect at the next restart");
	if (cur->tls.record_crypto != cfg->tls.record_crypto || cur->tls.record_layer != cfg->tls.record_layer ||
	    !same_str(cur->tls.openssl_provider, cfg->tls.openssl_provider))
		zr_warn("main",
			"tls.recordCrypto, tls.recordLayer and tls.opensslProvider take effect at the next "
			"restart; still using %s in %s's record layer",
			crypto_info.backend, crypto_info.record_layer);
	zr_identity_store_t *ids = NULL;
	if (load_identities(cfg, &ids, true) < 0) {
		zr_err("main", "reload failed: certificates unusable; keeping the running config and certificates");
		zr_config_free(cfg);
		return;
	}
	if (!log_level_fixed)
		zr_log_set_default_level((zr_log_level_t)cfg->log_level);
	size_t nw = cfg->state.n_workloads, ns = cfg->state.n_services, np = cfg->state.n_policies;
	zr_runtime_publish(rt, cfg, ids);
	zr_info("main", "config reloaded: %zu workloads, %zu services, %zu policies", nw, ns, np);
}

static int run(const char *path, const char *log_level)
{
	zr_config_t *cfg;
	if (load(path, &cfg, false) < 0)
		return EXIT_BAD_CONFIG;
	zr_log_level_t lvl = (zr_log_level_t)cfg->log_level;
	if (log_level && zr_log_parse_level(log_level, &lvl) < 0) {
		fprintf(stderr, "zring: --log-level: unknown level '%s'\n", log_level);
		zr_config_free(cfg);
		return EXIT_BAD_CONFIG;
	}
	zr_log_set_default_level(lvl);

	char why[256];
	if (cfg->io_backend == ZR_IO_BACKEND_EPOLL) {
		zr_err("main", "ioBackend: epoll is not built yet (the ops table in io/io-t.h is ready for it); "
			       "use auto or uring");
		zr_config_free(cfg);
		return EXIT_RUNTIME;
	}
	if (zr_io_uring_probe(why, sizeof(why)) < 0) {
		zr_err("main", "io backend unavailable: %s (no epoll fallback in this build)", why);
		zr_config_free(cfg);
		return EXIT_RUNTIME;
	}
	raise_nofile();
	/* Blocked before any thread exists, so that every thread inherits the
	 * mask: a crypto backend's own threads (DPDK's EAL starts several)
	 * would otherwise take a SIGHUP with its default action, exit. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (setup_crypto(cfg) < 0) {
		zr_config_free(cfg);
		return EXIT_RUNTIME;
	}
	zr_identity_store_t *ids;
	if (load_identities(cfg, &ids, true) < 0) {
		zr_config_free(cfg);
		return EXIT_RUNTIME;
	}

	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	int quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sfd < 0 || quit_fd < 0) {
		zr_err("main", "signalfd/eventfd: %s", strerror(errno));
		zr_config_free(cfg);
		return EXIT_RUNTIME;
	}

	zr_runtime_t *rt = NULL;
	int ret = zr_runtime_start(cfg, ids, &rt);
	if (ret < 0) {
		if (ret != -1)
			zr_err("main", "start failed: %s", strerror(-ret));
		if (rt) {
			zr_runtime_stop(rt);
			zr_runtime_free(rt);
		}
		return EXIT_RUNTIME;
	}
	rt->crypto = &crypto_info;
	zr_ctl_hooks_t hooks;
	zr_runtime_hooks(rt, &hooks, quit_fd);
	zr_ctl_servers_t *srv = NULL;
	ret = zr_ctl_servers_start(zr_runtime_config(rt), &hooks, &srv);
	if (ret < 0) {
		zr_err("main", "control servers failed to start: %s", strerror(-ret));
		zr_runtime_stop(rt);
		zr_runtime_free(rt);
		return EXIT_RUNTIME;
	}
	const zr_config_t *c = zr_runtime_config(rt);
	zr_info("main", "zring %s started: node %s, %u workers on %s, %zu workloads, %zu services", ZR_VERSION, c->node,
		rt->n_workers, zr_io_uring_ops.name, c->state.n_workloads, c->state.n_services);

	bool draining = false;
	uint64_t drain_deadline = 0, next_log_flush = 0;
	for (;;) {
		struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN}, {.fd = quit_fd, .events = POLLIN}};
		poll(pfd, 2, 200);
		zr_runtime_reap(rt);
		if (zr_now_ns() >= next_log_flush) {
			/* Say how many lines the log rate limit dropped, also for
			 * call sites that have gone quiet since. */
			zr_log_flush_suppressed();
			next_log_flush = zr_now_ns() + 1000ull * 1000000ull;
		}
		bool quit = false;
		if (pfd[1].revents & POLLIN) {
			uint64_t v;
			ssize_t r = read(quit_fd, &v, sizeof(v));
			(void)r;
			zr_info("main", "quit requested through the admin API");
			quit = true;
		}
		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGHUP) {
				reload(rt, path, log_level != NULL);
			} else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
				if (draining) {
					zr_info("main", "second signal: stopping now");
					drain_deadline = zr_now_ns();
				}
				quit = true;
			}
		}
		if (quit && !draining) {
			draining = true;
			drain_deadline = zr_now_ns() + zr_runtime_config(rt)->drain_timeout_ms * 1000000ull;
			atomic_store(&rt->ready, false);
			zr_info("main", "draining: no new connections; live ones have up to %llu ms",
				(unsigned long long)zr_runtime_config(rt)->drain_timeout_ms);
			zr_runtime_drain(rt);
		}
		if (draining && zr_runtime_exited(rt))
			break;
		if (draining && zr_now_ns() >= drain_deadline) {
			zr_info("main", "drain timeout: closing the remaining connections");
			zr_runtime_stop(rt);
			uint64_t hard = zr_now_ns() + 5000ull * 1000000ull;
			while (!zr_runtime_exited(rt) && zr_now_ns() < hard)
				usleep(10000);
			break;
		}
	}
	zr_ctl_servers_stop(srv);
	zr_runtime_free(rt);
	close(sfd);
	close(quit_fd);
	zr_log_flush_suppressed();
	zr_info("main", "exited cleanly");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "check-config") == 0)
		return check_config(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
		return zr_ctl_cli_main(argc - 2, argv + 2);

	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"log-level", required_argument, NULL, 'l'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{0, 0, 0, 0},
	};
	const char *path = NULL, *log_level = NULL;
	int opt;
	while ((opt = getopt_long(argc, argv, "c:l:Vh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'l':
			log_level = optarg;
			break;
		case 'V':
			printf("zring %s\n", ZR_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_BAD_CONFIG;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "zring: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return EXIT_BAD_CONFIG;
	}
	if (!path) {
		fprintf(stderr, "zring: --config FILE is required\n");
		usage(stderr);
		return EXIT_BAD_CONFIG;
	}
	return run(path, log_level);
}
