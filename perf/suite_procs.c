/* The suite's child processes (zring nodes, haproxy, version probes), their
 * readiness, and what /proc says they cost. Children run in their own process
 * group so that a terminal's Ctrl-C reaches only the suite, which then stops
 * them in order; PR_SET_PDEATHSIG covers a suite that dies without that. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "perf/suite.h"

#define MAX_CHILDREN 16

/* Children to stop from the signal handler: written only by the main thread
 * while the handler can run, read by the handler, hence sig_atomic_t. */
static volatile sig_atomic_t children[MAX_CHILDREN];

static void remember(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == 0) {
			children[i] = pid;
			return;
		}
}

static void forget(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

#define MAX_REMOVE 8
static char remove_paths[MAX_REMOVE + 1][PATH_MAX];
static volatile sig_atomic_t n_remove;

void zr_suite_procs_remove_on_signal(const char *const files[], unsigned n, const char *dir)
{
	n_remove = 0;
	if (n > MAX_REMOVE)
		n = MAX_REMOVE;
	for (unsigned i = 0; i < n; i++)
		snprintf(remove_paths[i], PATH_MAX, "%s", files[i]);
	if (n)
		snprintf(remove_paths[n], PATH_MAX, "%s", dir);
	n_remove = n ? (sig_atomic_t)n + 1 : 0;
}

static void on_signal(int sig)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] > 0)
			kill(children[i], SIGTERM);
	for (sig_atomic_t i = 0; i < n_remove; i++)
		if (unlink(remove_paths[i]) != 0)
			rmdir(remove_paths[i]);
	static const char msg[] = "zring-bench suite: interrupted; stopped its child processes\n";
	ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)n;
	_exit(128 + sig);
}

void zr_suite_procs_install_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static void exec_child(char *const argv[], int out_fd)
{
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	int null_fd = open("/dev/null", O_RDONLY);
	if (null_fd >= 0)
		dup2(null_fd, STDIN_FILENO);
	dup2(out_fd, STDOUT_FILENO);
	dup2(out_fd, STDERR_FILENO);
	signal(SIGPIPE, SIG_DFL);
	execv(argv[0], argv);
	static const char msg[] = "zring-bench suite: exec failed\n";
	ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)n;
	_exit(127);
}

int zr_suite_proc_start(zr_suite_proc_t *p, const char *name, char *const argv[], const char *log_path, char *err,
			size_t cap)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->log_path, sizeof(p->log_path), "%s", log_path);
	int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		int e = errno;
		snprintf(err, cap, "%s: cannot open log %s: %s", name, log_path, strerror(e));
		return -e;
	}
	if (access(argv[0], X_OK) != 0) {
		int e = errno;
		close(fd);
		snprintf(err, cap, "%s: cannot run %s: %s", name, argv[0], strerror(e));
		return -e;
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(fd);
		snprintf(err, cap, "%s: fork: %s", name, strerror(e));
		return -e;
	}
	if (pid == 0)
		exec_child(argv, fd);
	close(fd);
	setpgid(pid, pid); /* also here: a stop may come before the child runs */
	p->pid = pid;
	remember(pid);
	return 0;
}

static void reaped(zr_suite_proc_t *p, int status)
{
	p->status = status;
	p->exited = true;
	forget(p->pid);
}

bool zr_suite_proc_alive(zr_suite_proc_t *p)
{
	if (p->pid <= 0 || p->exited)
		return false;
	int status;
	pid_t r = waitpid(p->pid, &status, WNOHANG);
	if (r == p->pid) {
		reaped(p, status);
		return false;
	}
	return true;
}

static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

int zr_suite_proc_stop(zr_suite_proc_t *p, double timeout_s)
{
	if (p->pid <= 0)
		return -1;
	if (zr_suite_proc_alive(p)) {
		kill(p->pid, SIGTERM);
		double deadline = now_s() + timeout_s;
		while (zr_suite_proc_alive(p) && now_s() < deadline)
			sleep_s(0.02);
		if (!p->exited) {
			kill(-p->pid, SIGKILL);
			int status;
			if (waitpid(p->pid, &status, 0) == p->pid)
				reaped(p, status);
		}
	}
	return p->exited ? exit_code(p->status) : -1;
}

void zr_suite_proc_why(zr_suite_proc_t *p, char *out, size_t cap)
{
	char tail[768];
	zr_suite_file_tail(p->log_path, 4, tail, sizeof(tail));
	if (zr_suite_proc_alive(p))
		snprintf(out, cap, "%s is running; log: %s", p->name, tail);
	else if (WIFSIGNALED(p->status))
		snprintf(out, cap, "%s was killed by signal %d; log: %s", p->name, WTERMSIG(p->status), tail);
	else
		snprintf(out, cap, "%s exited with status %d: %s", p->name, exit_code(p->status), tail);
}

int zr_suite_run_capture(char *const argv[], double timeout_s, char *out, size_t cap)
{
	int fds[2];
	if (cap)
		out[0] = '\0';
	if (access(argv[0], X_OK) != 0 || pipe2(fds, O_CLOEXEC) != 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(fds[0]);
		close(fds[1]);
		return -e;
	}
	if (pid == 0)
		exec_child(argv, fds[1]);
	close(fds[1]);
	setpgid(pid, pid);
	remember(pid);
	size_t len = 0;
	double deadline = now_s() + timeout_s;
	for (;;) {
		double left = deadline - now_s();
		if (left <= 0) {
			kill(-pid, SIGKILL);
			break;
		}
		struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
		int n = poll(&pfd, 1, (int)(left * 1000) + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			continue;
		char buf[4096];
		ssize_t got = read(fds[0], buf, sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		size_t take = (size_t)got;
		if (cap && len + take > cap - 1)
			take = cap - 1 - len;
		memcpy(out + len, buf, take);
		len += take;
	}
	close(fds[0]);
	if (cap)
		out[len] = '\0';
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	forget(pid);
	return exit_code(status);
}

static int connect_to(const char *ip, unsigned short port, double timeout_s)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = {.tv_sec = (time_t)timeout_s, .tv_usec = (long)((timeout_s - (time_t)timeout_s) * 1e6)};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* One blocking HTTP/1.1 GET. Returns the status code (body's first line in
 * body), or -errno. */
static int http_get(const char *ip, unsigned short port, const char *path, char *body, size_t cap)
{
	int fd = connect_to(ip, port, 1.0);
	if (fd < 0)
		return fd;
	char req[256];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%u\r\nConnection: close\r\n\r\n", path, ip,
			 port);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		int e = errno ? errno : EIO;
		close(fd);
		return -e;
	}
	char resp[2048];
	size_t len = 0;
	for (;;) {
		ssize_t got = recv(fd, resp + len, sizeof(resp) - 1 - len, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0 || (len += (size_t)got) == sizeof(resp) - 1)
			break;
	}
	close(fd);
	resp[len] = '\0';
	int code = 0;
	if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
		return -EPROTO;
	const char *b = strstr(resp, "\r\n\r\n");
	snprintf(body, cap, "%.*s", b ? (int)strcspn(b + 4, "\r\n") : 0, b ? b + 4 : "");
	return code;
}

int zr_suite_wait_ready(zr_suite_proc_t *p, const char *ip, unsigned short port, double timeout_s, char *err,
			size_t cap)
{
	double deadline = now_s() + timeout_s;
	char last[256] = "no answer";
	while (now_s() < deadline) {
		if (!zr_suite_proc_alive(p)) {
			zr_suite_proc_why(p, err, cap);
			return -1;
		}
		char body[256];
		int code = http_get(ip, port, "/healthz/ready", body, sizeof(body));
		if (code == 200)
			return 0;
		if (code > 0)
			snprintf(last, sizeof(last), "%d %.200s", code, body);
		else
			snprintf(last, sizeof(last), "%s", strerror(-code));
		sleep_s(0.05);
	}
	snprintf(err, cap, "%s not ready at http://%s:%u/healthz/ready after %.0f s: %s", p->name, ip, port, timeout_s,
		 last);
	return -1;
}

int zr_suite_wait_listen(zr_suite_proc_t *p, const char *ip, unsigned short port, double timeout_s, char *err,
			 size_t cap)
{
	double deadline = now_s() + timeout_s;
	int last = ECONNREFUSED;
	while (now_s() < deadline) {
		if (!zr_suite_proc_alive(p)) {
			zr_suite_proc_why(p, err, cap);
			return -1;
		}
		int fd = connect_to(ip, port, 0.5);
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		last = -fd;
		sleep_s(0.05);
	}
	snprintf(err, cap, "%s: nothing listening on %s:%u after %.0f s (%s)", p->name, ip, port, timeout_s,
		 strerror(last));
	return -1;
}

double zr_suite_proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields start after
	 * the last ')'. utime and stime are fields 14 and 15 of proc(5). */
	const char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long long utime, stime;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
		return -1;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

long zr_suite_proc_hwm_kb(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	long kb = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

void zr_suite_file_tail(const char *path, unsigned max_lines, char *out, size_t cap)
{
	if (cap)
		out[0] = '\0';
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	char buf[8192];
	if (fseek(f, 0, SEEK_END) == 0) {
		long size = ftell(f);
		fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	}
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	buf[n] = '\0';
	char *start = buf + n;
	for (unsigned lines = 0; start > buf; start--)
		if (start[-1] == '\n' && ++lines == max_lines)
			break;
	size_t len = 0;
	for (char *line = strtok(start, "\n"); line && len + 1 < cap; line = strtok(NULL, "\n")) {
		int w = snprintf(out + len, cap - len, "%s%s", len ? " | " : "", line);
		if (w < 0)
			break;
		len += (size_t)w;
	}
}
