/* Internals of `zring-bench suite`, split by responsibility:
 *   suite.c        arguments, configurations, scenarios, measuring
 *   suite_report.c the table, report.md, report.json, SVGs (suite-int.h)
 *   suite_certs.c  the throw-away PKI (CA, SPIFFE leaves, HAProxy bundles)
 *   suite_procs.c  child processes (zring, haproxy), readiness, /proc figures
 * Everything here runs on the suite's main thread. */
#ifndef ZR_PERF_SUITE_H
#define ZR_PERF_SUITE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* --- suite_certs.c */
typedef struct zr_suite_certs {
	char ca[PATH_MAX]; /* the CA certificate (trust anchor, PEM) */
	char client_cert[PATH_MAX], client_key[PATH_MAX];
	char server_cert[PATH_MAX], server_key[PATH_MAX];
	/* certificate then key in one file, as HAProxy's `crt` wants */
	char haproxy_client[PATH_MAX], haproxy_server[PATH_MAX];
} zr_suite_certs_t;

/* Generates a CA and two ECDSA P-256 leaves whose URI SANs are client_uri and
 * server_uri into dir (which must exist), keys mode 0600. Fills out with the
 * paths. Returns 0 or -1 with the reason in err (never key material). */
int zr_suite_certs_make(const char *dir, const char *client_uri, const char *server_uri, zr_suite_certs_t *out,
			char *err, size_t cap) __attribute__((warn_unused_result));

/* --- suite_procs.c */
typedef struct zr_suite_proc {
	pid_t pid; /* 0 when not running */
	char name[32];
	char log_path[PATH_MAX];
	int status; /* wait status once it has exited */
	bool exited;
} zr_suite_proc_t;

/* Makes SIGINT and SIGTERM stop every child this module started (SIGTERM to
 * each, then the suite exits 130), so an interrupted suite leaves nothing
 * behind; children also get SIGTERM if the suite dies. Call once, early. */
void zr_suite_procs_install_signals(void);

/* Files (at most 8) and then their folder that the SIGINT/SIGTERM handler
 * removes after stopping the children: the run's private keys. Copies the
 * paths; call again with n = 0 once they are gone. */
void zr_suite_procs_remove_on_signal(const char *const files[], unsigned n, const char *dir);

/* Starts argv[0] (a path) with stdin from /dev/null and stdout and stderr
 * appended to log_path, in its own process group. Returns 0 or -errno (reason
 * in err). */
int zr_suite_proc_start(zr_suite_proc_t *p, const char *name, char *const argv[], const char *log_path, char *err,
			size_t cap) __attribute__((warn_unused_result));
/* Whether p is still running (reaps it when it has exited). */
bool zr_suite_proc_alive(zr_suite_proc_t *p);
/* SIGTERM, waits up to timeout_s, then SIGKILL to its process group. Returns
 * the exit status (128 + signal when killed), or -1 when p was not started. */
int zr_suite_proc_stop(zr_suite_proc_t *p, double timeout_s);
/* Why p is gone, for a message: "exited with status 1: <log tail>". */
void zr_suite_proc_why(zr_suite_proc_t *p, char *out, size_t cap);

/* Runs argv to completion (at most timeout_s, then killed), its stdout and
 * stderr together into out (NUL-terminated, truncated to cap). Returns the
 * exit status, or -errno when it could not run. */
int zr_suite_run_capture(char *const argv[], double timeout_s, char *out, size_t cap)
	__attribute__((warn_unused_result));

/* Polls GET http://ip:port/healthz/ready until it answers 200, p exits, or
 * timeout_s passes. Returns 0 or -1 with the reason in err. */
int zr_suite_wait_ready(zr_suite_proc_t *p, const char *ip, unsigned short port, double timeout_s, char *err,
			size_t cap) __attribute__((warn_unused_result));
/* Polls until a TCP connect to ip:port succeeds, p exits, or timeout_s passes.
 * Returns 0 or -1 with the reason in err. */
int zr_suite_wait_listen(zr_suite_proc_t *p, const char *ip, unsigned short port, double timeout_s, char *err,
			 size_t cap) __attribute__((warn_unused_result));

/* utime + stime of process pid (all its threads) in seconds, from
 * /proc/PID/stat; negative when it cannot be read. */
double zr_suite_proc_cpu_s(pid_t pid);
/* Peak resident set (VmHWM from /proc/PID/status) in KiB; -1 when unknown. */
long zr_suite_proc_hwm_kb(pid_t pid);

/* The last max_lines lines of the file at path, joined with " | ". */
void zr_suite_file_tail(const char *path, unsigned max_lines, char *out, size_t cap);

#endif
