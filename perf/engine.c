/* The client modes' driver: one generator thread per --threads, each with
 * its own io_uring, connections spread round-robin (connection c on thread
 * c % threads); the main thread keeps the clock: it fixes the timeline
 * (warm-up, measured part) before any traffic, samples the throughput series
 * and the progress line, snapshots each thread's CPU at the start and end of
 * the measured part, then merges what the threads measured. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io/io.h"
#include "perf/bench.h"
#include "perf/engine-int.h"

typedef struct cpu_sample {
	double user_s, sys_s; /* /proc/self/task/TID/stat: the user/system split */
	uint64_t total_ns;    /* the thread's CPU clock: precise total */
} cpu_sample_t;

typedef struct run {
	const zr_bench_opts_t *o;
	zr_gen_thread_t *threads;
	pthread_t *ids;
	unsigned n;
	/* start-up gate: threads report ready, then wait for the timeline */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned ready;
	bool go;
	bool sampled; /* the end-of-run CPU snapshot is taken: threads may exit */
	int abort;
} run_t;

typedef struct thread_arg {
	run_t *run;
	zr_gen_thread_t *th;
} thread_arg_t;

static void sample_cpu(pid_t tid, pthread_t id, cpu_sample_t *s)
{
	memset(s, 0, sizeof(*s));
	clockid_t clk;
	struct timespec ts;
	if (pthread_getcpuclockid(id, &clk) == 0 && clock_gettime(clk, &ts) == 0)
		s->total_ns = (uint64_t)ts.tv_sec * ZR_GEN_NS + (uint64_t)ts.tv_nsec;
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* Fields after the command name (which may hold spaces): state is
	 * field 3, utime 14, stime 15. */
	char *p = strrchr(buf, ')');
	unsigned long long ut = 0, st = 0;
	if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2) {
		double hz = (double)sysconf(_SC_CLK_TCK);
		s->user_s = (double)ut / hz;
		s->sys_s = (double)st / hz;
	}
}

static void *thread_main(void *p)
{
	thread_arg_t *a = p;
	zr_gen_thread_t *th = a->th;
	run_t *run = a->run;
	th->tid = (pid_t)syscall(SYS_gettid);
	zr_io_params_t params = {
		.entries = 256,
		/* stream receives big chunks; rr/crr many small responses */
		.buf_count = th->o->mode == ZR_BENCH_STREAM ? 128 : 512,
		.buf_size = th->o->mode == ZR_BENCH_STREAM ? 128 * 1024 : 16 * 1024,
		.numa_node = -1,
	};
	int ret = zr_io_uring_ops.setup(&params, &th->io);
	if (ret < 0) {
		th->fatal = ret;
		snprintf(th->why, sizeof(th->why), "io_uring set-up failed: %s", strerror(-ret));
	}
	pthread_mutex_lock(&run->lock);
	run->ready++;
	pthread_cond_broadcast(&run->cond);
	while (!run->go) /* until the main thread has fixed the timeline */
		pthread_cond_wait(&run->cond, &run->lock);
	pthread_mutex_unlock(&run->lock);
	if (th->io && !run->abort) {
		ret = th->o->mode == ZR_BENCH_STREAM ? zr_gen_stream_run(th) : zr_gen_rr_run(th);
		if (ret < 0 && !th->fatal) {
			th->fatal = ret;
			if (!th->why[0])
				snprintf(th->why, sizeof(th->why), "%s", strerror(-ret));
		}
	}
	/* A thread that has exited has no CPU clock left to read: stay until
	 * the main thread has taken its end-of-run snapshot. */
	pthread_mutex_lock(&run->lock);
	while (!run->sampled)
		pthread_cond_wait(&run->cond, &run->lock);
	pthread_mutex_unlock(&run->lock);
	if (th->io)
		th->io->ops->destroy(th->io);
	th->io = NULL;
	return NULL;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = {.tv_sec = (time_t)(t / ZR_GEN_NS), .tv_nsec = (long)(t % ZR_GEN_NS)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static uint64_t sum_pub(const run_t *run, size_t offset)
{
	uint64_t total = 0;
	for (unsigned i = 0; i < run->n; i++)
		total += __atomic_load_n((const uint64_t *)((const char *)&run->threads[i] + offset), __ATOMIC_RELAXED);
	return total;
}

static void progress(const run_t *run, uint64_t now, uint64_t *last_t, uint64_t *last_v, bool final)
{
	const zr_bench_opts_t *o = run->o;
	if (final) {
		fputs("\r\033[K", stdout);
		fflush(stdout);
		return;
	}
	const zr_gen_thread_t *th = &run->threads[0];
	bool stream = o->mode == ZR_BENCH_STREAM;
	uint64_t v = sum_pub(run, stream ? offsetof(zr_gen_thread_t, pub_bytes) : offsetof(zr_gen_thread_t, pub_done));
	double dt = (double)(now - *last_t) / 1e9;
	double rate = dt > 0 ? (double)(v - *last_v) / dt : 0;
	*last_t = now, *last_v = v;
	double total = o->warmup_s + o->duration_s;
	double at = (double)(now - th->t0) / 1e9;
	const char *phase = now < th->measure_start ? " (warm-up)" : "";
	if (stream)
		printf("\r  %.1f/%.1f s%s  %.2f Gbit/s  errors %" PRIu64 "\033[K", at, total, phase, rate * 8 / 1e9,
		       sum_pub(run, offsetof(zr_gen_thread_t, pub_errors)));
	else
		printf("\r  %.1f/%.1f s%s  %.0f %s/s  errors %" PRIu64 "\033[K", at, total, phase, rate,
		       o->mode == ZR_BENCH_CRR ? "conn" : "req", sum_pub(run, offsetof(zr_gen_thread_t, pub_errors)));
	fflush(stdout);
}

/* The main thread's part while the generators run: warm-up, CPU snapshot,
 * 100 ms series samples and 250 ms progress redraws, CPU snapshot at the end. */
static void supervise(run_t *run, zr_bench_result_t *r, cpu_sample_t *cpu0, cpu_sample_t *cpu1)
{
	const zr_gen_thread_t *th = &run->threads[0];
	const uint64_t tick = 100000000ull;
	uint64_t last_bytes = 0, last_t = 0, prog_t = th->t0, prog_v = 0, next_prog = th->t0;
	uint64_t next_sample = th->measure_start;
	bool started = false;
	for (;;) {
		uint64_t wake = next_sample;
		if (run->o->progress && next_prog < wake)
			wake = next_prog;
		if (wake > th->measure_end)
			wake = th->measure_end;
		sleep_until(wake);
		uint64_t now = zr_gen_now();
		if (!started && now >= th->measure_start) {
			started = true;
			for (unsigned i = 0; i < run->n; i++)
				sample_cpu(run->threads[i].tid, run->ids[i], &cpu0[i]);
			last_bytes = sum_pub(run, offsetof(zr_gen_thread_t, pub_bytes));
			last_t = now;
			next_sample = th->measure_start + tick;
		} else if (started && now >= next_sample) {
			/* Divide by the time that really passed: a late wake-up
			 * must not show as a burst. */
			uint64_t b = sum_pub(run, offsetof(zr_gen_thread_t, pub_bytes));
			if (r->n_series < ZR_BENCH_SERIES_MAX && now > last_t)
				r->series_gbps[r->n_series++] = (double)(b - last_bytes) * 8 / (double)(now - last_t);
			last_bytes = b;
			last_t = now;
			next_sample += tick;
		}
		if (run->o->progress && now >= next_prog) {
			progress(run, now, &prog_t, &prog_v, false);
			next_prog = now + 250000000ull;
		}
		if (now >= th->measure_end)
			break;
	}
	for (unsigned i = 0; i < run->n; i++)
		sample_cpu(run->threads[i].tid, run->ids[i], &cpu1[i]);
	if (r->mode != ZR_BENCH_STREAM)
		r->n_series = 0; /* the series is stream's figure */
}

static void merge(run_t *run, zr_bench_result_t *r, const cpu_sample_t *cpu0, const cpu_sample_t *cpu1)
{
	const zr_bench_opts_t *o = run->o;
	double window_s = o->duration_s;
	r->elapsed_s = window_s;
	r->threads = run->n;
	for (unsigned i = 0; i < run->n; i++) {
		zr_gen_thread_t *th = &run->threads[i];
		r->bytes_sent += th->r.bytes_sent;
		r->bytes_received += th->r.bytes_received;
		r->requests_sent += th->r.requests_sent;
		r->responses_received += th->r.responses_received;
		r->connections_opened += th->r.connections_opened;
		r->connections_completed += th->r.connections_completed;
		for (int e = 0; e < ZR_BENCH_ERR_COUNT; e++)
			r->errors[e] += th->r.errors[e];
		zr_hist_merge(&r->latency, &th->r.latency);
		for (unsigned l = 0; th->conn_bytes && i + l * run->n < r->n_conns; l++)
			r->per_conn_bytes[i + l * run->n] = th->conn_bytes[l];
		r->cpu_user_s += cpu1[i].user_s - cpu0[i].user_s;
		r->cpu_sys_s += cpu1[i].sys_s - cpu0[i].sys_s;
		double util = (double)(cpu1[i].total_ns - cpu0[i].total_ns) / 1e9 / window_s;
		if (util > r->busiest_thread_util)
			r->busiest_thread_util = util > 1 ? 1 : util;
	}
	r->saturated = r->busiest_thread_util > 0.9;
}

int zr_bench_run(const zr_bench_opts_t *o, zr_bench_result_t *r, char *err, size_t cap)
{
	memset(r, 0, sizeof(*r));
	r->mode = o->mode;
	zr_hist_init(&r->latency);
	if (o->mode != ZR_BENCH_STREAM && o->mode != ZR_BENCH_RR && o->mode != ZR_BENCH_CRR) {
		snprintf(err, cap, "%s is not a client mode", zr_bench_mode_name(o->mode));
		return -EINVAL;
	}
	char why[160];
	int ret = zr_io_uring_probe(why, sizeof(why));
	if (ret < 0) {
		snprintf(err, cap, "%s", why);
		return ret;
	}
	uint8_t socks5_req[300];
	int socks5_len = 0;
	if (o->via_socks5 && (socks5_len = zr_gen_socks5_request(o->target_text, socks5_req, sizeof(socks5_req))) < 0) {
		snprintf(err, cap, "--target: '%s' cannot be sent to a SOCKS5 proxy", o->target_text);
		return -EINVAL;
	}
	if (o->has_bind) {
		/* A source address this host doesn't have fails every connect:
		 * say so once, up front, rather than as a wall of errors. */
		int fd = socket(o->bind.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ret = fd < 0 ? -errno : bind(fd, (const struct sockaddr *)&o->bind, o->bind_len) < 0 ? -errno : 0;
		if (fd >= 0)
			close(fd);
		if (ret < 0) {
			snprintf(err, cap, "--bind: cannot bind: %s", strerror(-ret));
			return ret;
		}
	}

	/* Many connections need many descriptors: take what the hard limit allows. */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < (rlim_t)o->connections + 256) {
		nofile.rlim_cur =
			nofile.rlim_max < (rlim_t)o->connections + 256 ? nofile.rlim_max : (rlim_t)o->connections + 256;
		(void)setrlimit(RLIMIT_NOFILE, &nofile);
	}

	run_t run = {.o = o, .n = o->threads ? o->threads : 1};
	if (run.n > o->connections)
		run.n = o->connections;
	run.threads = calloc(run.n, sizeof(*run.threads));
	run.ids = calloc(run.n, sizeof(*run.ids));
	thread_arg_t *args = calloc(run.n, sizeof(*args));
	cpu_sample_t *cpu = calloc(2 * (size_t)run.n, sizeof(*cpu));
	r->n_conns = o->connections;
	r->per_conn_bytes = calloc(o->connections, sizeof(uint64_t));
	ret = run.threads && run.ids && args && cpu && r->per_conn_bytes ? 0 : -ENOMEM;
	for (unsigned i = 0; ret == 0 && i < run.n; i++) {
		zr_gen_thread_t *th = &run.threads[i];
		th->o = o;
		th->index = i;
		th->nthreads = run.n;
		th->abort = &run.abort;
		memcpy(&th->target.ss, &o->target, sizeof(o->target));
		th->target.len = o->target_len;
		memcpy(&th->socks5.ss, &o->socks5, sizeof(o->socks5));
		th->socks5.len = o->socks5_len;
		memcpy(&th->bind.ss, &o->bind, sizeof(o->bind));
		th->bind.len = o->bind_len;
		memcpy(th->socks5_req, socks5_req, (size_t)socks5_len);
		th->socks5_req_len = (unsigned)socks5_len;
		zr_hist_init(&th->r.latency);
		th->conn_bytes = calloc((o->connections - i + run.n - 1) / run.n, sizeof(uint64_t));
		if (!th->conn_bytes)
			ret = -ENOMEM;
	}
	if (ret < 0) {
		snprintf(err, cap, "out of memory");
		goto out;
	}
	pthread_mutex_init(&run.lock, NULL);
	pthread_cond_init(&run.cond, NULL);
	unsigned started = 0;
	for (; started < run.n; started++) {
		args[started] = (thread_arg_t){.run = &run, .th = &run.threads[started]};
		if ((ret = -pthread_create(&run.ids[started], NULL, thread_main, &args[started])) < 0) {
			snprintf(err, cap, "cannot start generator threads: %s", strerror(-ret));
			break;
		}
	}
	pthread_mutex_lock(&run.lock);
	while (run.ready < started)
		pthread_cond_wait(&run.cond, &run.lock);
	for (unsigned i = 0; i < started && ret == 0; i++)
		if (run.threads[i].fatal) {
			snprintf(err, cap, "%s", run.threads[i].why);
			ret = run.threads[i].fatal;
		}
	run.abort = ret < 0;
	uint64_t t0 = zr_gen_now();
	for (unsigned i = 0; i < run.n; i++) {
		zr_gen_thread_t *th = &run.threads[i];
		th->t0 = t0;
		th->measure_start = t0 + (uint64_t)(o->warmup_s * 1e9);
		th->measure_end = th->measure_start + (uint64_t)(o->duration_s * 1e9);
	}
	run.go = true;
	pthread_cond_broadcast(&run.cond);
	pthread_mutex_unlock(&run.lock);
	if (!run.abort)
		supervise(&run, r, cpu, cpu + run.n);
	pthread_mutex_lock(&run.lock);
	run.sampled = true;
	pthread_cond_broadcast(&run.cond);
	pthread_mutex_unlock(&run.lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(run.ids[i], NULL);
	if (o->progress && !run.abort)
		progress(&run, 0, NULL, NULL, true);
	for (unsigned i = 0; i < run.n && ret == 0; i++)
		if (run.threads[i].fatal) {
			snprintf(err, cap, "generator thread %u: %s", i, run.threads[i].why);
			ret = run.threads[i].fatal;
		}
	if (ret == 0)
		merge(&run, r, cpu, cpu + run.n);
	pthread_mutex_destroy(&run.lock);
	pthread_cond_destroy(&run.cond);
out:
	for (unsigned i = 0; run.threads && i < run.n; i++)
		free(run.threads[i].conn_bytes);
	free(run.threads);
	free(run.ids);
	free(args);
	free(cpu);
	return ret;
}

void zr_bench_result_free(zr_bench_result_t *r)
{
	free(r->per_conn_bytes);
	r->per_conn_bytes = NULL;
	r->n_conns = 0;
}
