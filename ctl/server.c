/* The control thread's HTTP servers (metrics, readiness, admin): one thread,
 * one poll() loop, non-blocking sockets, one request per connection. The
 * clients are operators and scrapers, not the data path, so simplicity and
 * robustness against garbage beat throughput here.
 *
 * Each server has its own pool of client slots, so that a flood on one (the
 * metrics port listens on every address) never takes a slot from another;
 * readiness is handled first in every loop turn. When a pool is full, the
 * connection that has been waiting longest without a complete request head
 * makes room for the new one: a slow client can delay nobody but other slow
 * clients. The thread has a descriptor table of its own, so that workers
 * holding every descriptor the process may have cannot starve it; where that
 * is refused, each server keeps a spare descriptor, given up for one accept
 * when the process is out of descriptors, so that the probes still answer. */
#include "ctl/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl/http-int.h"
#include "io/log.h"

#define METRICS_CLIENTS	  64 /* scrapers: a handful; the port is open to the node network */
#define READINESS_CLIENTS 16 /* the kubelet's probe, one at a time */
#define ADMIN_CLIENTS	  16 /* loopback only: operators and `zring ctl` */
#define MAX_POOL	  METRICS_CLIENTS
#define MAX_CLIENTS	  (METRICS_CLIENTS + READINESS_CLIENTS + ADMIN_CLIENTS)
/* The whole request head, from accept. Probes, scrapers and `zring ctl` send
 * theirs in one segment right after connecting; 2 s is far beyond any
 * loopback or node-network delay and frees a stalled slot quickly. */
#define HEAD_TIMEOUT_MS	  2000
#define WRITE_TIMEOUT_MS  5000 /* idle time while writing the response */
#define LINGER_TIMEOUT_MS 1000 /* discard unread input after the response */
#define LINGER_MAX	  (1u << 20)
#define ACCEPT_BATCH	  32	/* per listener and loop turn: no listener starves the others */
#define WARN_INTERVAL_MS  10000 /* at most one eviction / descriptor warning per server */

enum client_state {
	READING,
	WRITING,
	LINGERING
};

struct client {
	int fd;
	zr_ctl_listener_t kind;
	enum client_state state;
	bool quit_after; /* call hooks.quit once the response is out */
	size_t in_len, out_off, discarded;
	int64_t accepted_ms, deadline_ms;
	zr_strbuf_t out;
	char in[REQ_MAX];
};

struct zr_ctl_servers {
	zr_ctl_hooks_t hooks;
	pthread_t thread;
	int wake[2];
	int lfd[ZR_CTL__COUNT];
	unsigned port[ZR_CTL__COUNT];
	int reserve[ZR_CTL__COUNT]; /* spare descriptor (/dev/null), -1 while spent */
	int null_fd;		    /* /dev/null, the source of dup3 refills */
	sem_t started;		    /* posted once the thread has its descriptors */
	int64_t accept_paused_until[ZR_CTL__COUNT];
	int64_t warned_ms[ZR_CTL__COUNT];
	unsigned long evicted[ZR_CTL__COUNT], refused[ZR_CTL__COUNT]; /* since the last warning */
	struct pool {
		struct client *c[MAX_POOL];
		size_t n;
	} pool[ZR_CTL__COUNT];
};

static const size_t pool_cap[ZR_CTL__COUNT] = {
	[ZR_CTL_METRICS] = METRICS_CLIENTS, [ZR_CTL_READINESS] = READINESS_CLIENTS, [ZR_CTL_ADMIN] = ADMIN_CLIENTS};

/* Readiness first: the kubelet's probe must not wait behind a scrape. */
static const zr_ctl_listener_t serve_order[ZR_CTL__COUNT] = {ZR_CTL_READINESS, ZR_CTL_ADMIN, ZR_CTL_METRICS};

static const char *const listener_names[ZR_CTL__COUNT] = {"metrics", "readiness", "admin"};

static const char *const prom_type = "text/plain; version=0.0.4; charset=utf-8";

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	default:
		return "Error";
	}
}

static void respond(struct client *c, int status, const char *ctype, const char *extra, const char *body, size_t len)
{
	zr_strbuf_reset(&c->out);
	zr_strbuf_printf(&c->out,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
			 status, reason(status), ctype, len, extra ? extra : "");
	zr_strbuf_append(&c->out, body, len);
	c->state = WRITING;
	c->out_off = 0;
	c->deadline_ms = now_ms() + WRITE_TIMEOUT_MS;
}

static void respond_text(struct client *c, int status, const char *extra, const char *body)
{
	respond(c, status, "text/plain; charset=utf-8", extra, body, strlen(body));
}

/* Sends a rendered body, or a 500 if rendering ran out of memory. */
static void respond_buf(struct client *c, const char *ctype, zr_strbuf_t *body)
{
	if (body->oom)
		respond_text(c, 500, NULL, "out of memory\n");
	else
		respond(c, 200, ctype, NULL, body->data ? body->data : "", body->len);
	zr_strbuf_free(body);
}

/* Percent-decodes `in` (and '+' as a space, as a form does) into out;
 * false when it does not fit or an escape is broken. */
static bool url_decode(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *p = in; *p; p++) {
		char ch = *p;
		if (ch == '%') {
			char hex[3] = {p[1], p[1] ? p[2] : 0, 0};
			char *end;
			if (!hex[0] || !hex[1])
				return false;
			long v = strtol(hex, &end, 16);
			if (*end || v <= 0)
				return false;
			ch = (char)v;
			p += 2;
		} else if (ch == '+') {
			ch = ' ';
		}
		if (o + 1 >= cap)
			return false;
		out[o++] = ch;
	}
	out[o] = '\0';
	return true;
}

/* Whether the query has `key`, with or without a value. */
static bool query_has(const char *query, const char *key)
{
	size_t klen = strlen(key);
	for (const char *p = query; *p;) {
		size_t n = strcspn(p, "&");
		if (n >= klen && strncmp(p, key, klen) == 0 && (n == klen || p[klen] == '='))
			return true;
		p += n;
		if (*p)
			p++;
	}
	return false;
}

static const char logging_help[] =
	"usage: POST /logging\t\t\t\t\t(to list the current level)\n"
	"usage: POST /logging?level=<level>\t\t\t(to change the default level)\n"
	"usage: POST /logging?level=<scope>=<level>,...\t(to change scopes' levels, e.g. access=warn)\n"
	"usage: POST /logging?reset[&level=...]\t\t(back to the start-up level first)\n"
	"\n"
	"hint: level:\terror|warn|info|debug|trace|off\n"
	"hint: scope:\tthe scope of a line, e.g. access, flow, hbone, ctl\n";

/* ztunnel's forms: level=<level>|<scope>=<level>[,...] is applied over the
 * current filter, reset first goes back to the start-up level; the answer is
 * the resulting filter. A bad level changes nothing (400). */
static void serve_logging(struct client *c, const struct request *req)
{
	char raw[256], level[256], err[80], filter[ZR_LOG_MAX_SCOPES * 48 + 16], body[sizeof(filter) + 64];
	bool post = strcmp(req->method, "POST") == 0;
	bool has_level = post && query_has(req->query, "level");
	bool reset = post && query_has(req->query, "reset");
	if (has_level || reset) {
		level[0] = '\0';
		if (has_level && (!zr_http_query_param(req->query, "level", raw, sizeof(raw)) ||
				  !url_decode(raw, level, sizeof(level)))) {
			respond_text(c, 400, NULL, "Invalid level provided\n");
			return;
		}
		int r = zr_log_apply_filter(level, reset, err, sizeof(err));
		if (r) {
			zr_strbuf_t b = ZR_STRBUF_INIT;
			zr_strbuf_printf(&b, "%s: %s\n%s",
					 r == -ENOSPC ? "Too many scopes with a level" : "Invalid level provided", err,
					 logging_help);
			if (b.oom)
				respond_text(c, 400, NULL, "Invalid level provided\n");
			else
				respond_text(c, 400, NULL, b.data);
			zr_strbuf_free(&b);
			return;
		}
		zr_log_filter_str(filter, sizeof(filter));
		zr_info("ctl", "new log filter is %s", filter);
	}
	zr_log_filter_str(filter, sizeof(filter));
	snprintf(body, sizeof(body), "current log level is %s\n", filter);
	respond_text(c, 200, NULL, body);
}

static const char admin_index[] = "zring admin\n"
				  "  GET  /                  this index\n"
				  "  GET  /config_dump       config, state, certificates, connections (JSON)\n"
				  "  GET  /stats             metrics (Prometheus text)\n"
				  "  GET  /logging           current log level\n"
				  "  POST /logging?level=L   set the log level (error|warn|info|debug|trace|off,\n"
				  "                          scope=level lists, reset)\n"
				  "  POST /quitquitquit      drain and exit\n";

struct route {
	zr_ctl_listener_t kind;
	const char *path, *method;
	int id;
};

enum {
	R_METRICS,
	R_READY,
	R_INDEX,
	R_DUMP,
	R_LOGGING,
	R_QUIT
};

static const struct route routes[] = {
	{ZR_CTL_METRICS, "/metrics", "GET", R_METRICS},
	{ZR_CTL_METRICS, "/stats/prometheus", "GET", R_METRICS},
	{ZR_CTL_READINESS, "/healthz/ready", "GET", R_READY},
	{ZR_CTL_ADMIN, "/", "GET", R_INDEX},
	{ZR_CTL_ADMIN, "/config_dump", "GET", R_DUMP},
	{ZR_CTL_ADMIN, "/stats", "GET", R_METRICS},
	{ZR_CTL_ADMIN, "/stats/prometheus", "GET", R_METRICS},
	{ZR_CTL_ADMIN, "/logging", NULL, R_LOGGING}, /* GET and POST */
	{ZR_CTL_ADMIN, "/quitquitquit", "POST", R_QUIT},
};

static void serve(struct zr_ctl_servers *srv, struct client *c, const struct request *req)
{
	const struct route *r = NULL;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (routes[i].kind == c->kind && strcmp(routes[i].path, req->path) == 0)
			r = &routes[i];
	if (!r) {
		respond_text(c, 404, NULL, "not found\n");
		return;
	}
	bool method_ok = r->method ? strcmp(req->method, r->method) == 0 :
				     strcmp(req->method, "GET") == 0 || strcmp(req->method, "POST") == 0;
	if (!method_ok) {
		char allow[64];
		snprintf(allow, sizeof(allow), "Allow: %s\r\n", r->method ? r->method : "GET, POST");
		respond_text(c, 405, allow, "method not allowed\n");
		return;
	}
	zr_strbuf_t body = ZR_STRBUF_INIT;
	switch (r->id) {
	case R_METRICS:
		zr_metrics_render(&body, &srv->hooks);
		respond_buf(c, prom_type, &body);
		break;
	case R_READY: {
		char pending[1024] = "";
		if (srv->hooks.ready(srv->hooks.ctx, pending, sizeof(pending))) {
			respond_text(c, 200, NULL, "ready\n");
		} else {
			zr_strbuf_printf(&body, "not ready, pending: %s\n", pending[0] ? pending : "unknown");
			if (!body.oom)
				respond(c, 500, "text/plain; charset=utf-8", NULL, body.data, body.len);
			else
				respond_text(c, 500, NULL, "not ready\n");
			zr_strbuf_free(&body);
		}
		break;
	}
	case R_INDEX:
		respond_text(c, 200, NULL, admin_index);
		break;
	case R_DUMP:
		zr_config_dump(&body, &srv->hooks);
		respond_buf(c, "application/json", &body);
		break;
	case R_LOGGING:
		serve_logging(c, req);
		break;
	case R_QUIT:
		zr_info("ctl", "quit requested on the admin endpoint");
		respond_text(c, 200, NULL, "OK\n");
		c->quit_after = true;
		break;
	}
}

static int open_reserve(void)
{
	return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Closes a client. While a server's spare descriptor is spent, the client's
 * descriptor becomes the new spare instead (dup3 replaces the socket with
 * /dev/null in one step): closing it would hand the slot to a worker
 * retrying accept, and the spare would stay lost while they hold the rest. */
static void client_close(struct zr_ctl_servers *srv, zr_ctl_listener_t kind, size_t i)
{
	struct pool *p = &srv->pool[kind];
	struct client *c = p->c[i];
	int spent = -1;
	for (int o = 0; o < ZR_CTL__COUNT && spent < 0; o++)
		if (srv->lfd[serve_order[o]] >= 0 && srv->reserve[serve_order[o]] < 0)
			spent = serve_order[o];
	if (spent >= 0 && srv->null_fd >= 0 && dup3(srv->null_fd, c->fd, O_CLOEXEC) == c->fd)
		srv->reserve[spent] = c->fd;
	else
		close(c->fd);
	zr_strbuf_free(&c->out);
	free(c);
	p->c[i] = p->c[--p->n];
}

/* Returns false when the client is finished and must be closed. */
static bool client_read(struct zr_ctl_servers *srv, struct client *c)
{
	for (;;) {
		char sink[4096];
		char *dst = c->state == READING ? c->in + c->in_len : sink;
		size_t cap = c->state == READING ? REQ_MAX - c->in_len : sizeof(sink);
		if (cap == 0)
			break;
		ssize_t n = recv(c->fd, dst, cap, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK;
		if (n == 0)
			return false; /* peer closed: a truncated request gets no answer */
		if (c->state == LINGERING) {
			c->discarded += (size_t)n;
			if (c->discarded > LINGER_MAX)
				return false;
			continue;
		}
		c->in_len += (size_t)n;
		struct request req;
		int rc = zr_http_parse_request(c->in, c->in_len, &req);
		if (rc == -EAGAIN)
			continue;
		if (rc == 0)
			serve(srv, c, &req);
		else
			respond_text(c, rc, NULL, rc == 431 ? "request header too large\n" : "bad request\n");
		return true;
	}
	return true;
}

static bool client_write(struct zr_ctl_servers *srv, struct client *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK;
		c->out_off += (size_t)n;
		c->deadline_ms = now_ms() + WRITE_TIMEOUT_MS;
	}
	if (c->quit_after) {
		c->quit_after = false;
		srv->hooks.quit(srv->hooks.ctx);
	}
	/* Half-close, then discard what the peer still sends: closing with unread
	 * input would reset the connection and could destroy our response. */
	shutdown(c->fd, SHUT_WR);
	c->state = LINGERING;
	c->deadline_ms = now_ms() + LINGER_TIMEOUT_MS;
	return client_read(srv, c);
}

/* Takes back the spare descriptors given up at EMFILE, as soon as the
 * process has one again. */
static void refill_reserves(struct zr_ctl_servers *srv)
{
	for (int k = 0; k < ZR_CTL__COUNT; k++)
		if (srv->lfd[k] >= 0 && srv->reserve[k] < 0)
			srv->reserve[k] = open_reserve();
}

/* One warning per server per WARN_INTERVAL_MS, with what happened since. */
static void warn_pressure(struct zr_ctl_servers *srv, zr_ctl_listener_t kind, const char *why)
{
	int64_t now = now_ms();
	if (srv->warned_ms[kind] && now - srv->warned_ms[kind] < WARN_INTERVAL_MS)
		return;
	srv->warned_ms[kind] = now;
	zr_warn("ctl",
		"%s: %s (%zu clients, limit %zu; %lu slow clients evicted, %lu connections refused since the last "
		"warning)",
		listener_names[kind], why, srv->pool[kind].n, pool_cap[kind], srv->evicted[kind], srv->refused[kind]);
	srv->evicted[kind] = srv->refused[kind] = 0;
}

/* Makes room in a full pool: closes the oldest client that has not sent a
 * complete request head (or is only lingering after its response). Returns
 * false when every slot is writing a response. */
static bool evict_one(struct zr_ctl_servers *srv, zr_ctl_listener_t kind)
{
	struct pool *p = &srv->pool[kind];
	size_t victim = SIZE_MAX;
	for (size_t i = 0; i < p->n; i++)
		if (p->c[i]->state != WRITING &&
		    (victim == SIZE_MAX || p->c[i]->accepted_ms < p->c[victim]->accepted_ms))
			victim = i;
	if (victim == SIZE_MAX)
		return false;
	client_close(srv, kind, victim);
	srv->evicted[kind]++;
	warn_pressure(srv, kind, "client limit reached, evicting the oldest incomplete requests");
	return true;
}

/* At most half a pool per turn, so that a client accepted in this turn is
 * never evicted before the next turn has read what it sent. */
static void accept_clients(struct zr_ctl_servers *srv, zr_ctl_listener_t kind)
{
	size_t batch_max = pool_cap[kind] / 2 < ACCEPT_BATCH ? pool_cap[kind] / 2 : ACCEPT_BATCH;
	for (size_t batch = 0; batch < batch_max; batch++) {
		int fd = accept4(srv->lfd[kind], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EMFILE || errno == ENFILE) && srv->reserve[kind] >= 0) {
			/* Out of descriptors (workers hold them all): give up the
			 * spare for this client; client_close (or refill_reserves)
			 * takes it back. */
			close(srv->reserve[kind]);
			srv->reserve[kind] = -1;
			fd = accept4(srv->lfd[kind], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd >= 0)
				warn_pressure(srv, kind, "out of file descriptors, serving on the spare one");
		}
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Leave the connection queued and look again shortly,
				 * rather than spinning on a listener that stays readable. */
				warn_pressure(srv, kind, strerror(errno));
				srv->accept_paused_until[kind] = now_ms() + 100;
			}
			return;
		}
		struct pool *p = &srv->pool[kind];
		if (p->n >= pool_cap[kind] && !evict_one(srv, kind)) {
			srv->refused[kind]++;
			warn_pressure(srv, kind, "client limit reached, every client is being answered");
			close(fd);
			continue;
		}
		struct client *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->kind = kind;
		c->state = READING;
		c->accepted_ms = now_ms();
		c->deadline_ms = c->accepted_ms + HEAD_TIMEOUT_MS;
		p->c[p->n++] = c;
		/* A probe sends its head right after connecting: it is often
		 * here already, and then answered before any eviction. */
		if (!client_read(srv, c) || (c->state == WRITING && !client_write(srv, c)))
			client_close(srv, kind, p->n - 1);
	}
}

static void handle_clients(struct zr_ctl_servers *srv, zr_ctl_listener_t kind, const struct pollfd *pfd, bool polled)
{
	struct pool *p = &srv->pool[kind];
	/* Backwards, so that removing by swapping in the last client only
	 * moves clients already handled this turn. */
	for (size_t i = p->n; i-- > 0;) {
		struct client *c = p->c[i];
		short rev = polled ? pfd[i].revents : 0;
		bool keep = true;
		if (rev & POLLNVAL)
			keep = false;
		else if (rev && c->state != WRITING)
			keep = client_read(srv, c);
		if (keep && c->state == WRITING)
			keep = client_write(srv, c);
		if (keep && now_ms() >= c->deadline_ms)
			keep = false;
		if (!keep)
			client_close(srv, kind, i);
	}
}

static bool shared_fd_table; /* tests: as where unshare is refused */

void zr_ctl_servers_share_fd_table(bool shared)
{
	shared_fd_table = shared;
}

static bool is_own_fd(const struct zr_ctl_servers *srv, int fd)
{
	for (int k = 0; k < ZR_CTL__COUNT; k++)
		if (srv->lfd[k] == fd)
			return true;
	return fd == srv->wake[0] || fd == srv->wake[1];
}

/* Gives this thread a descriptor table of its own: a copy of the process's,
 * less the sockets and io_uring rings that belong to others (a copy would
 * keep a closed listener or connection alive). The workers can then fill the
 * process's table up to RLIMIT_NOFILE and the servers still find descriptors
 * here. Where unshare is refused (seccomp), the spares are all there is. */
static void drop_foreign(const struct zr_ctl_servers *srv, int fd)
{
	char path[64], link[64] = "";
	struct stat st;
	if (fd <= 2 || is_own_fd(srv, fd) || fstat(fd, &st) < 0)
		return;
	snprintf(path, sizeof(path), "/proc/thread-self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = '\0';
	if (S_ISSOCK(st.st_mode) || strcmp(link, "anon_inode:[io_uring]") == 0)
		close(fd);
}

static void own_fd_table(struct zr_ctl_servers *srv)
{
	if (shared_fd_table)
		return;
	if (unshare(CLONE_FILES) < 0) {
		zr_info("ctl", "unshare(CLONE_FILES): %s; the servers share the workers' descriptors, with spares",
			strerror(errno));
		return;
	}
	DIR *d = opendir("/proc/thread-self/fd");
	for (struct dirent *e; d && (e = readdir(d));) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (end != e->d_name && !*end && fd != dirfd(d))
			drop_foreign(srv, (int)fd);
	}
	for (int fd = 3; !d && fd < 65536; fd++) /* no /proc: the copies are low-numbered */
		drop_foreign(srv, fd);
	if (d)
		closedir(d);
}

/* The thread's own descriptors: its table may be private, so they are
 * opened and closed here, never on the main thread. */
static void thread_fds_open(struct zr_ctl_servers *srv)
{
	srv->null_fd = open_reserve();
	refill_reserves(srv);
	if (srv->null_fd < 0)
		zr_warn("ctl", "/dev/null: %s; no spare descriptors", strerror(errno));
}

static void *thread_fds_close(struct zr_ctl_servers *srv)
{
	for (int k = 0; k < ZR_CTL__COUNT; k++)
		while (srv->pool[k].n)
			client_close(srv, (zr_ctl_listener_t)k, srv->pool[k].n - 1);
	for (int k = 0; k < ZR_CTL__COUNT; k++)
		if (srv->reserve[k] >= 0)
			close(srv->reserve[k]);
	if (srv->null_fd >= 0)
		close(srv->null_fd);
	return NULL;
}

static void *server_thread(void *arg)
{
	struct zr_ctl_servers *srv = arg;
	struct pollfd pfd[1 + ZR_CTL__COUNT + MAX_CLIENTS];
	size_t lidx[ZR_CTL__COUNT], cidx[ZR_CTL__COUNT];
	own_fd_table(srv);
	thread_fds_open(srv);
	sem_post(&srv->started);
	for (;;) {
		int64_t now = now_ms();
		size_t n = 0;
		int64_t next = now + 1000;
		pfd[n++] = (struct pollfd){.fd = srv->wake[0], .events = POLLIN};
		for (int o = 0; o < ZR_CTL__COUNT; o++) {
			zr_ctl_listener_t k = serve_order[o];
			bool accepting = now >= srv->accept_paused_until[k];
			if (!accepting && srv->accept_paused_until[k] < next)
				next = srv->accept_paused_until[k];
			lidx[k] = n;
			pfd[n++] = (struct pollfd){.fd = accepting ? srv->lfd[k] : -1, .events = POLLIN};
			cidx[k] = n;
			for (size_t i = 0; i < srv->pool[k].n; i++) {
				struct client *c = srv->pool[k].c[i];
				pfd[n++] =
					(struct pollfd){.fd = c->fd, .events = c->state == WRITING ? POLLOUT : POLLIN};
				if (c->deadline_ms < next)
					next = c->deadline_ms;
			}
		}
		int rc = poll(pfd, n, next > now ? (int)(next - now) : 0);
		if (rc < 0 && errno != EINTR) {
			zr_err("ctl", "poll: %s", strerror(errno));
			return thread_fds_close(srv);
		}
		if (rc > 0 && pfd[0].revents)
			return thread_fds_close(srv);
		for (int o = 0; o < ZR_CTL__COUNT; o++) {
			zr_ctl_listener_t k = serve_order[o];
			handle_clients(srv, k, &pfd[cidx[k]], rc > 0);
			if (rc > 0 && (pfd[lidx[k]].revents & POLLIN))
				accept_clients(srv, k);
		}
		refill_reserves(srv);
	}
}

static bool is_loopback(const zr_sockaddr_t *a)
{
	if (a->sa.sa_family == AF_INET)
		return (ntohl(a->in4.sin_addr.s_addr) >> 24) == 127;
	if (a->sa.sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&a->in6.sin6_addr) ||
		       (IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr) && a->in6.sin6_addr.s6_addr[12] == 127);
	return false;
}

static int listen_on(const zr_sockaddr_t *addr, const char *name, int *fd_out, unsigned *port_out)
{
	char str[ZR_ADDR_STRLEN];
	int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	int one = 1;
	zr_sockaddr_t bound = {0};
	bound.len = sizeof(bound.ss);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 || bind(fd, &addr->sa, addr->len) < 0 ||
	    listen(fd, 128) < 0 || getsockname(fd, &bound.sa, &bound.len) < 0)
		goto fail;
	*fd_out = fd;
	*port_out = zr_sockaddr_port(&bound);
	zr_info("ctl", "%s listening on %s", name, zr_sockaddr_str(&bound, str));
	return 0;
fail:;
	int err = errno;
	zr_err("ctl", "%s listener on %s: %s", name, zr_sockaddr_str(addr, str), strerror(err));
	if (fd >= 0)
		close(fd);
	return -err;
}

static void release(struct zr_ctl_servers *srv)
{
	for (int k = 0; k < ZR_CTL__COUNT; k++)
		if (srv->lfd[k] >= 0)
			close(srv->lfd[k]);
	for (int i = 0; i < 2; i++)
		if (srv->wake[i] >= 0)
			close(srv->wake[i]);
	free(srv); /* clients and spares: closed by the thread (thread_fds_close) */
}

int zr_ctl_servers_start(const zr_config_t *cfg, const zr_ctl_hooks_t *hooks, zr_ctl_servers_t **out)
{
	const zr_listener_cfg_t *lc[ZR_CTL__COUNT] = {&cfg->listeners.metrics, &cfg->listeners.readiness,
						      &cfg->listeners.admin};
	char str[ZR_ADDR_STRLEN];
	if (lc[ZR_CTL_ADMIN]->enabled && !is_loopback(&lc[ZR_CTL_ADMIN]->addr)) {
		zr_err("ctl", "admin listener %s refused: it must be a loopback address",
		       zr_sockaddr_str(&lc[ZR_CTL_ADMIN]->addr, str));
		return -EPERM;
	}
	struct zr_ctl_servers *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->hooks = *hooks;
	srv->wake[0] = srv->wake[1] = -1;
	for (int k = 0; k < ZR_CTL__COUNT; k++)
		srv->lfd[k] = srv->reserve[k] = -1;
	srv->null_fd = -1;
	int rc = 0;
	for (int k = 0; k < ZR_CTL__COUNT && rc == 0; k++)
		if (lc[k]->enabled)
			rc = listen_on(&lc[k]->addr, listener_names[k], &srv->lfd[k], &srv->port[k]);
	if (rc == 0 && pipe2(srv->wake, O_NONBLOCK | O_CLOEXEC) < 0)
		rc = -errno;
	if (rc == 0) {
		/* Signals belong to the main thread: start ours with all blocked. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		sem_init(&srv->started, 0, 0);
		rc = -pthread_create(&srv->thread, NULL, server_thread, srv);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		/* Its spares exist before anyone can use up the descriptors. */
		while (rc == 0 && sem_wait(&srv->started) < 0 && errno == EINTR)
			;
	}
	if (rc != 0) {
		release(srv);
		return rc;
	}
	*out = srv;
	return 0;
}

void zr_ctl_servers_stop(zr_ctl_servers_t *srv)
{
	if (!srv)
		return;
	ssize_t n;
	do
		n = write(srv->wake[1], "x", 1);
	while (n < 0 && errno == EINTR);
	pthread_join(srv->thread, NULL);
	release(srv);
}

unsigned zr_ctl_servers_port(const zr_ctl_servers_t *srv, zr_ctl_listener_t which)
{
	return (unsigned)which < ZR_CTL__COUNT ? srv->port[which] : 0;
}
