/* The relay on real loopback TCP sockets driven by a real io_uring ring:
 * byte-exact transfer, backpressure (a reader that stops reading bounds the
 * buffers held), half-close in both directions, and reset propagation. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/conn.h"
#include "core/worker.h"
#include "ctl/config.h"
#include "io/io.h"
#include "tap.h"

static zr_worker_t *w;

static void tcp_pair(int *a, int *b)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&sa, &len))
		abort();
	*a = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(*a, (struct sockaddr *)&sa, sizeof(sa)))
		abort();
	*b = accept4(l, NULL, NULL, SOCK_NONBLOCK);
	close(l);
	fcntl(*a, F_SETFL, O_NONBLOCK);
}

/* client <-> [down | zring relay | up] <-> server */
static zr_conn_t *make_relay(int *client, int *server)
{
	int down, up;
	tcp_pair(client, &down);
	tcp_pair(&up, server);
	fcntl(up, F_SETFL, O_NONBLOCK);
	zr_conn_t *c = zr_worker_conn_alloc(w);
	zr_relay_init_side(c, &c->down, down);
	zr_relay_init_side(c, &c->up, up);
	zr_relay_start(c);
	return c;
}

static void pump(int ms)
{
	for (int i = 0; i < ms; i++)
		zr_io_run(w->io, 1000000ull);
}

static uint8_t pattern(uint64_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13);
}

/* Moves `total` bytes client->server while pumping the ring; verifies them. */
static bool transfer(int from, int to, uint64_t total)
{
	uint8_t buf[65536];
	uint64_t sent = 0, got = 0;
	bool exact = true;
	for (int rounds = 0; got < total && rounds < 200000; rounds++) {
		if (sent < total) {
			size_t n = total - sent < sizeof(buf) ? (size_t)(total - sent) : sizeof(buf);
			for (size_t i = 0; i < n; i++)
				buf[i] = pattern(sent + i);
			ssize_t r = send(from, buf, n, MSG_DONTWAIT);
			if (r > 0)
				sent += (uint64_t)r;
		}
		zr_io_run(w->io, 0);
		ssize_t r = recv(to, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0) {
			for (ssize_t i = 0; i < r; i++)
				if (buf[i] != pattern(got + (uint64_t)i))
					exact = false;
			got += (uint64_t)r;
		}
		if (r <= 0 && sent >= total)
			zr_io_run(w->io, 1000000ull);
	}
	return exact && got == total;
}

int main(void)
{
	char why[256];
	if (zr_io_uring_probe(why, sizeof(why)) < 0)
		skip_all(why);

	zr_config_t *cfg;
	zr_config_error_t err;
	const char *yaml = "node: n\n";
	if (zr_config_load_string(yaml, strlen(yaml), "test.yaml", &cfg, &err) < 0)
		return 1;
	if (posix_memalign((void **)&w, 64, sizeof(*w)))
		return 1;
	memset(w, 0, sizeof(*w));
	w->snap = zr_snapshot_new(cfg, NULL, 1);
	zr_io_params_t p = {.entries = 256, .buf_count = ZR_BUF_COUNT, .buf_size = ZR_BUF_SIZE, .numa_node = -1};
	if (zr_io_uring_ops.setup(&p, &w->io) < 0)
		return 1;

	int client, server;
	make_relay(&client, &server);
	ok(transfer(client, server, 32u << 20), "32 MiB client->server arrive byte-exact");
	ok(transfer(server, client, 32u << 20), "32 MiB server->client arrive byte-exact");

	/* Backpressure: the server stops reading. */
	uint8_t buf[65536];
	memset(buf, 'x', sizeof(buf));
	uint64_t written = 0;
	int stalls = 0;
	for (int i = 0; i < 3000 && stalls < 200; i++) {
		ssize_t r = send(client, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0)
			written += (uint64_t)r;
		else
			stalls++;
		zr_io_run(w->io, r > 0 ? 0 : 1000000ull);
	}
	ok(stalls >= 200, "the client's writes stall when the server does not read (%llu bytes accepted)",
	   (unsigned long long)written);
	unsigned held = w->bufs_in_use;
	/* One io_uring_enter may complete a few batches of up to 32 multishot
	 * receives before the cancel lands, so the bound is the high-water mark
	 * plus those batches (~2 MiB); without backpressure zring would keep
	 * reading until its whole pool (ZR_BUF_COUNT buffers) is held. */
	ok(held < ZR_BUF_COUNT / 8, "zring stops reading: it holds %u buffers (%u KiB) of a pool of %u", held,
	   held * ZR_BUF_SIZE / 1024, ZR_BUF_COUNT);
	ok(w->stats.backpressure_pauses > 0, "a backpressure pause was counted");
	uint64_t drained = 0;
	for (int i = 0; i < 20000 && drained < written; i++) {
		ssize_t r = recv(server, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0)
			drained += (uint64_t)r;
		zr_io_run(w->io, r > 0 ? 0 : 1000000ull);
	}
	is(drained, written, "once the server reads again, every stalled byte arrives");

	/* Half-close: client -> EOF -> server still answers. */
	shutdown(client, SHUT_WR);
	pump(50);
	ssize_t r = recv(server, buf, sizeof(buf), MSG_DONTWAIT);
	is(r, 0, "the client's half-close reaches the server as EOF");
	is(send(server, "bye", 3, 0), 3, "server still sends after the client's half-close");
	pump(50);
	r = recv(client, buf, sizeof(buf), MSG_DONTWAIT);
	ok(r == 3 && memcmp(buf, "bye", 3) == 0, "the client reads the reply after half-closing");
	is(w->n_conns, 1, "the connection is still open while one direction is");
	shutdown(server, SHUT_WR);
	pump(50);
	is(recv(client, buf, sizeof(buf), MSG_DONTWAIT), 0, "the server's half-close reaches the client");
	is(w->n_conns, 0, "both directions closed: the connection is freed");
	is(w->bufs_in_use, 0, "every buffer is back in the ring");
	close(client);
	close(server);

	/* Reset: the server aborts; the client sees a reset, not a hang. */
	make_relay(&client, &server);
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(server, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(server);
	pump(100);
	r = recv(client, buf, sizeof(buf), MSG_DONTWAIT);
	ok(r < 0 && errno == ECONNRESET, "a peer reset reaches the client as ECONNRESET (r=%zd errno=%d)", r, errno);
	is(w->n_conns, 0, "the reset connection is freed");
	close(client);

	/* A failed send (peer gone) closes the pair and releases buffers. */
	make_relay(&client, &server);
	close(server);
	for (int i = 0; i < 50; i++) {
		send(client, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL);
		pump(2);
	}
	is(w->n_conns, 0, "writing towards a closed server closes the connection");
	is(w->bufs_in_use, 0, "and returns its buffers");
	close(client);

	/* A trickle of tiny segments towards a server that does not read must
	 * not pin one receive buffer per segment. */
	zr_conn_t *tc = make_relay(&client, &server);
	int one = 1, small = 4096;
	setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Small kernel buffers towards the server, so zring's queue fills. */
	setsockopt(server, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(tc->up.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	unsigned most = 0;
	uint64_t trickled = 0;
	for (int i = 0; i < 3000; i++) {
		if (send(client, buf, 100, MSG_DONTWAIT) != 100)
			break;
		trickled += 100;
		zr_io_run(w->io, 0);
		if (w->bufs_in_use > most)
			most = w->bufs_in_use;
	}
	pump(20);
	ok(tc->up.q_bytes > 100000 && most < 64,
	   "3000 segments of 100 bytes: %u bytes queued in at most %u receive buffers (pool %u)", tc->up.q_bytes, most,
	   ZR_BUF_COUNT);
	uint64_t got = 0;
	for (int i = 0; i < 20000 && got < trickled; i++) {
		r = recv(server, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0)
			got += (uint64_t)r;
		zr_io_run(w->io, r > 0 ? 0 : 1000000ull);
	}
	ok(got == trickled, "and every one of the %llu bytes arrives (%llu)", (unsigned long long)trickled,
	   (unsigned long long)got);
	close(client);
	close(server);
	pump(50);

	/* A client that resets while zring is not reading it (backpressure) is
	 * still noticed, and the server sees the reset. */
	make_relay(&client, &server);
	memset(buf, 'y', sizeof(buf));
	stalls = 0;
	for (int i = 0; i < 3000 && stalls < 200; i++) {
		ssize_t n = send(client, buf, sizeof(buf), MSG_DONTWAIT);
		if (n <= 0)
			stalls++;
		zr_io_run(w->io, n > 0 ? 0 : 1000000ull);
	}
	ok(w->n_conns == 1 && stalls >= 200, "the relay is paused on a server that does not read");
	setsockopt(client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(client);
	pump(100);
	is(w->n_conns, 0, "a reset from the paused client closes the connection");
	for (int i = 0; i < 1000; i++) {
		r = recv(server, buf, sizeof(buf), MSG_DONTWAIT);
		if (r <= 0)
			break;
	}
	ok(r < 0 && errno == ECONNRESET, "and reaches the server as a reset (r=%zd errno=%d)", r, errno);
	is(w->bufs_in_use, 0, "its buffers are back in the ring");
	close(server);

	w->io->ops->destroy(w->io);
	zr_worker_free_memory(w);
	zr_snapshot_unref(w->snap);
	free(w);
	return done_testing();
}
