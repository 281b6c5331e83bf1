/* The io_uring backend: multishot receive into provided buffers, buffer
 * exhaustion (-ENOBUFS) and recovery once buffers are released, multishot
 * accept, connect timeout, cancellation, and the discarding receive. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"
#include "tap.h"

typedef struct rec {
	zr_io_op_t op;
	int res[64];
	unsigned flags[64];
	int n;
} rec_t;

static void record(zr_io_op_t *op, int res, unsigned flags)
{
	rec_t *r = (rec_t *)op;
	if (r->n < 64) {
		r->res[r->n] = res;
		r->flags[r->n] = flags;
	}
	r->n++;
}

int main(void)
{
	char why[256];
	if (zr_io_uring_probe(why, sizeof(why)) < 0)
		skip_all(why);
	zr_io_t *io;
	zr_io_params_t p = {.entries = 64, .buf_count = 4, .buf_size = 16, .reserve_count = 2, .numa_node = -1};
	is(zr_io_uring_ops.setup(&p, &io), 0, "ring with 4 provided buffers of 16 bytes and a reserve of 2");

	int sv[2];
	socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
	rec_t rx = {.op.cb = record};
	is(zr_io_recv(io, &rx.op, sv[0]), 0, "multishot recv armed");
	for (int i = 0; i < 4; i++) {
		ssize_t w = write(sv[1], "0123456789abcdef", 16);
		(void)w;
		zr_io_run(io, 10000000ull);
	}
	is(rx.n, 4, "four completions for four writes");
	bool all_buf = true, more = true;
	for (int i = 0; i < 4 && i < rx.n; i++) {
		all_buf &= rx.res[i] == 16 && (rx.flags[i] & ZR_IO_F_BUFFER);
		more &= (rx.flags[i] & ZR_IO_F_MORE) != 0;
	}
	ok(all_buf, "each carries 16 bytes in a provided buffer");
	ok(more, "the multishot receive stays armed");
	ok(memcmp(zr_io_buf_addr(io, zr_io_buf_id(rx.flags[0])), "0123456789abcdef", 16) == 0,
	   "the buffer holds the bytes");

	ssize_t w = write(sv[1], "more", 4);
	(void)w;
	zr_io_run(io, 10000000ull);
	ok(rx.n == 5 && rx.res[4] == -ENOBUFS && !(rx.flags[4] & ZR_IO_F_MORE),
	   "with every buffer held, the receive ends with -ENOBUFS");
	/* The reserve is apart: a reserved receive still gets the bytes. */
	rec_t rsv = {.op.cb = record};
	is(zr_io_recv_reserved(io, &rsv.op, sv[0]), 0, "a receive from the reserve armed");
	for (int i = 0; i < 5 && rsv.n == 0; i++)
		zr_io_run(io, 10000000ull);
	ok(rsv.n == 1 && rsv.res[0] == 4 && (rsv.flags[0] & ZR_IO_F_BUFFER) &&
		   zr_io_buf_reserved(io, zr_io_buf_id(rsv.flags[0])) &&
		   !memcmp(zr_io_buf_addr(io, zr_io_buf_id(rsv.flags[0])), "more", 4),
	   "with the main pool held, it receives into a reserve buffer");
	ok(!zr_io_buf_reserved(io, zr_io_buf_id(rx.flags[0])), "main-pool buffers are not the reserve's");
	zr_io_buf_release(io, zr_io_buf_id(rsv.flags[0]));
	zr_io_cancel(io, &rsv.op);
	for (int i = 0; i < 5 && rsv.n < 2; i++)
		zr_io_run(io, 10000000ull);
	w = write(sv[1], "more", 4); /* again, for the main pool below */
	(void)w;
	for (int i = 0; i < 4; i++)
		zr_io_buf_release(io, zr_io_buf_id(rx.flags[i]));
	zr_io_recv(io, &rx.op, sv[0]);
	zr_io_run(io, 10000000ull);
	ok(rx.n == 6 && rx.res[5] == 4, "after releasing buffers the re-armed receive gets the waiting bytes");

	zr_io_cancel(io, &rx.op);
	/* The cancel request completes first; the receive's -ECANCELED follows
	 * as task work on a later wait. */
	for (int i = 0; i < 5 && rx.n < 7; i++)
		zr_io_run(io, 10000000ull);
	ok(rx.n == 7 && rx.res[6] == -ECANCELED, "cancel ends the multishot receive with -ECANCELED");

	close(sv[1]);
	zr_io_buf_release(io, zr_io_buf_id(rx.flags[5]));
	zr_io_recv(io, &rx.op, sv[0]);
	zr_io_run(io, 10000000ull);
	ok(rx.n == 8 && rx.res[7] == 0, "EOF is a zero-length completion");
	close(sv[0]);

	/* Multishot accept. */
	int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	bind(l, (struct sockaddr *)&sa, sizeof(sa));
	listen(l, 16);
	getsockname(l, (struct sockaddr *)&sa, &len);
	rec_t acc = {.op.cb = record};
	zr_io_accept(io, &acc.op, l);
	int cl[3];
	for (int i = 0; i < 3; i++) {
		cl[i] = socket(AF_INET, SOCK_STREAM, 0);
		connect(cl[i], (struct sockaddr *)&sa, sizeof(sa));
	}
	for (int i = 0; i < 5 && acc.n < 3; i++)
		zr_io_run(io, 10000000ull);
	ok(acc.n == 3 && acc.res[0] >= 0 && acc.res[2] >= 0 && (acc.flags[2] & ZR_IO_F_MORE),
	   "one multishot accept takes three connections and stays armed");
	for (int i = 0; i < acc.n && i < 3; i++)
		close(acc.res[i]);
	for (int i = 0; i < 3; i++)
		close(cl[i]);
	zr_io_cancel(io, &acc.op);
	zr_io_run(io, 10000000ull);
	close(l);

	/* Connect refused and connect timeout (SYN to a listener with a full
	 * backlog is never answered). */
	rec_t con = {.op.cb = record};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	zr_sockaddr_t dst;
	if (zr_addr_parse("127.0.0.1:1", &dst) != 0)
		return 1;
	zr_io_connect(io, &con.op, fd, &dst, 2000000000ull);
	for (int i = 0; i < 10 && con.n == 0; i++)
		zr_io_run(io, 100000000ull);
	ok(con.n == 1 && con.res[0] == -ECONNREFUSED, "connect to a closed port: -ECONNREFUSED");
	close(fd);

	l = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_port = 0;
	bind(l, (struct sockaddr *)&sa, sizeof(sa));
	listen(l, 0);
	len = sizeof(sa);
	getsockname(l, (struct sockaddr *)&sa, &len);
	int filler[4];
	for (int i = 0; i < 4; i++) {
		filler[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		connect(filler[i], (struct sockaddr *)&sa, sizeof(sa));
	}
	usleep(100000);
	con.n = 0;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	memcpy(&dst.in4, &sa, sizeof(sa));
	dst.len = sizeof(sa);
	zr_io_connect(io, &con.op, fd, &dst, 300000000ull);
	for (int i = 0; i < 30 && con.n == 0; i++)
		zr_io_run(io, 100000000ull);
	ok(con.n == 1 && con.res[0] == -ECANCELED, "an unanswered connect ends at its timeout (-ECANCELED, got %d)",
	   con.n ? con.res[0] : 0);
	close(fd);
	for (int i = 0; i < 4; i++)
		close(filler[i]);
	close(l);

	/* recv_discard: TCP bytes are taken and counted, never copied. */
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t lalen = sizeof(la);
	int tcp_ok = bind(ls, (struct sockaddr *)&la, sizeof(la)) == 0 && listen(ls, 1) == 0 &&
		     getsockname(ls, (struct sockaddr *)&la, &lalen) == 0;
	int cs = socket(AF_INET, SOCK_STREAM, 0);
	tcp_ok = tcp_ok && connect(cs, (struct sockaddr *)&la, sizeof(la)) == 0;
	int ss = tcp_ok ? accept(ls, NULL, NULL) : -1;
	static char scratch[4096], data[3000];
	memset(scratch, 'S', sizeof(scratch));
	memset(data, 'x', sizeof(data));
	ok(ss >= 0 && write(cs, data, sizeof(data)) == (ssize_t)sizeof(data), "a TCP connection with 3000 bytes sent");
	rec_t dis = {.op.cb = record};
	size_t got = 0;
	for (int i = 0; i < 10 && got < sizeof(data); i++) {
		int n0 = dis.n;
		is(zr_io_recv_discard(io, &dis.op, ss, scratch, sizeof(scratch)), 0, "discarding receive armed");
		while (dis.n == n0)
			zr_io_run(io, 10000000ull);
		if (dis.res[n0] <= 0)
			break;
		got += (size_t)dis.res[n0];
	}
	is(got, sizeof(data), "recv_discard counts every byte sent");
	bool untouched = true;
	for (size_t i = 0; i < sizeof(scratch); i++)
		untouched &= scratch[i] == 'S';
	ok(untouched, "and copies none of them into the scratch range");
	close(cs);
	int n0 = dis.n;
	is(zr_io_recv_discard(io, &dis.op, ss, scratch, sizeof(scratch)), 0,
	   "discarding receive armed after the peer closed");
	while (dis.n == n0)
		zr_io_run(io, 10000000ull);
	is(dis.res[n0], 0, "EOF is a zero-length completion");
	close(ss);
	close(ls);

	/* send_some: one send, as much as the socket takes now (no MSG_WAITALL,
	 * which kernel TLS sockets refuse). The receiver does not read, so 8 MiB
	 * cannot all go at once. */
	ls = socket(AF_INET, SOCK_STREAM, 0);
	lalen = sizeof(la);
	la.sin_port = 0;
	tcp_ok = bind(ls, (struct sockaddr *)&la, sizeof(la)) == 0 && listen(ls, 1) == 0 &&
		 getsockname(ls, (struct sockaddr *)&la, &lalen) == 0;
	cs = socket(AF_INET, SOCK_STREAM, 0);
	tcp_ok = tcp_ok && connect(cs, (struct sockaddr *)&la, sizeof(la)) == 0;
	ss = tcp_ok ? accept(ls, NULL, NULL) : -1;
	size_t big = 8u << 20;
	char *out = malloc(big), *in = malloc(big);
	for (size_t i = 0; out && i < big; i++)
		out[i] = (char)(i * 7 + 3);
	rec_t snd = {.op.cb = record};
	ok(ss >= 0 && out && in && zr_io_send_some(io, &snd.op, cs, out, big) == 0, "send_some of 8 MiB armed");
	for (int i = 0; i < 100 && snd.n == 0; i++)
		zr_io_run(io, 10000000ull);
	ssize_t sent = snd.n ? snd.res[0] : -1;
	ok(sent > 0 && (size_t)sent < big, "it completes with what the socket took: %zd bytes", sent);
	size_t rcvd = 0;
	while (sent > 0 && rcvd < (size_t)sent) {
		ssize_t k = recv(ss, in + rcvd, (size_t)sent - rcvd, 0);
		if (k <= 0)
			break;
		rcvd += (size_t)k;
	}
	ok(sent > 0 && rcvd == (size_t)sent && !memcmp(in, out, rcvd), "and those are the first bytes, in order");
	free(out);
	free(in);
	close(cs);
	if (ss >= 0)
		close(ss);
	close(ls);

	io->ops->destroy(io);
	return done_testing();
}
