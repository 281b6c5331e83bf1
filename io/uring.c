/* io_uring backend: one ring per worker (SINGLE_ISSUER | DEFER_TASKRUN), a
 * provided buffer ring for multishot receives, linked timeouts for connect
 * and bounded reads. Each SQE's user_data is the zr_io_op_t to complete;
 * SQEs whose completion nobody needs (cancel requests, linked timeouts) carry
 * user_data 0 and are skipped. */
#include "io/io.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "io/log.h"

_Static_assert(ZR_IO_F_BUFFER == IORING_CQE_F_BUFFER, "flag values follow io_uring");
_Static_assert(ZR_IO_F_MORE == IORING_CQE_F_MORE, "flag values follow io_uring");
_Static_assert(ZR_IO_BUF_SHIFT == IORING_CQE_BUFFER_SHIFT, "flag values follow io_uring");

/* Provided buffers: group 0 (ids 0..buf_count-1) for recv, group 1 (ids
 * buf_count..buf_count+reserve_count-1) for recv_reserved; one address
 * range for both. */
#define BUF_GROUPS 2

typedef struct buf_group {
	struct io_uring_buf_ring *br;
	size_t br_bytes;
	unsigned first, count, mask;
	unsigned returned; /* added to the ring but not yet published */
} buf_group_t;

typedef struct uring_io {
	zr_io_t super;
	struct io_uring ring;
	buf_group_t grp[BUF_GROUPS];
	unsigned char *bufs;
	size_t bufs_bytes;
	unsigned buf_size, total_bufs;
} uring_io_t;

static struct io_uring_sqe *get_sqe(uring_io_t *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (sqe)
		return sqe;
	/* SQ full: push what is queued to the kernel and try again. */
	io_uring_submit(&u->ring);
	return io_uring_get_sqe(&u->ring);
}

int zr_io_uring_probe(char *why, size_t cap)
{
	static const struct {
		int op;
		const char *name;
	} needed[] = {
		{IORING_OP_ACCEPT, "ACCEPT"},
		{IORING_OP_RECV, "RECV"},
		{IORING_OP_SEND, "SEND"},
		{IORING_OP_CONNECT, "CONNECT"},
		{IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
		{IORING_OP_TIMEOUT, "TIMEOUT"},
		{IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
		{IORING_OP_POLL_ADD, "POLL_ADD"},
		{IORING_OP_PROVIDE_BUFFERS, "PROVIDE_BUFFERS"},
	};
	struct io_uring ring;
	struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
	int ret = io_uring_queue_init_params(8, &ring, &p);
	if (ret == -EINVAL) {
		snprintf(why, cap, "io_uring lacks IORING_SETUP_SINGLE_ISSUER/DEFER_TASKRUN (needs Linux >= 6.1)");
		return ret;
	}
	if (ret < 0) {
		snprintf(why, cap,
			 "io_uring_setup refused: %s (seccomp, container policy or "
			 "kernel.io_uring_disabled?)",
			 strerror(-ret));
		return ret;
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
	if (!probe) {
		io_uring_queue_exit(&ring);
		snprintf(why, cap, "io_uring opcode probe failed");
		return -ENOSYS;
	}
	ret = 0;
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (!io_uring_opcode_supported(probe, needed[i].op)) {
			snprintf(why, cap, "io_uring lacks opcode %s", needed[i].name);
			ret = -ENOSYS;
			break;
		}
	}
	io_uring_free_probe(probe);
	if (ret == 0 && !(p.features & IORING_FEAT_FAST_POLL)) {
		snprintf(why, cap, "io_uring lacks IORING_FEAT_FAST_POLL (needs Linux >= 5.7)");
		ret = -ENOSYS;
	}
	if (ret == 0) {
		/* Provided buffer rings (5.19) come with multishot recv (6.0) in
		 * the kernels that also have DEFER_TASKRUN (6.1). */
		struct io_uring_buf_reg reg = {0};
		void *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED) {
			ret = -errno;
		} else {
			reg.ring_addr = (unsigned long)mem;
			reg.ring_entries = 8;
			reg.bgid = 0;
			ret = io_uring_register_buf_ring(&ring, &reg, 0);
			if (ret < 0)
				snprintf(why, cap, "io_uring lacks provided buffer rings (needs Linux >= 5.19): %s",
					 strerror(-ret));
			munmap(mem, 4096);
		}
	}
	io_uring_queue_exit(&ring);
	return ret;
}

static int uring_setup(const zr_io_params_t *params, zr_io_t **out)
{
	uring_io_t *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->super.ops = &zr_io_uring_ops;
	struct io_uring_params p = {
		.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
			 IORING_SETUP_CQSIZE,
		.cq_entries = params->entries * 8,
	};
	int ret = io_uring_queue_init_params(params->entries, &u->ring, &p);
	if (ret < 0) {
		zr_err("io", "io_uring_queue_init: %s", strerror(-ret));
		free(u);
		return ret;
	}

	u->buf_size = params->buf_size;
	u->total_bufs = params->buf_count + params->reserve_count;
	u->bufs_bytes = (size_t)u->total_bufs * u->buf_size;
	/* Pages are placed on first touch, by this (pinned, NUMA-local) thread or
	 * the kernel receiving on its behalf. */
	u->bufs = mmap(NULL, u->bufs_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (u->bufs == MAP_FAILED) {
		u->bufs = NULL;
		ret = -ENOMEM;
		goto fail;
	}
	const unsigned counts[BUF_GROUPS] = {params->buf_count, params->reserve_count};
	for (unsigned g = 0, first = 0; g < BUF_GROUPS; first += counts[g], g++) {
		buf_group_t *bg = &u->grp[g];
		if (!counts[g])
			continue;
		bg->first = first;
		bg->count = counts[g];
		bg->mask = (unsigned)io_uring_buf_ring_mask(bg->count);
		bg->br_bytes = bg->count * sizeof(struct io_uring_buf);
		bg->br = mmap(NULL, bg->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (bg->br == MAP_FAILED) {
			bg->br = NULL;
			ret = -ENOMEM;
			goto fail;
		}
		struct io_uring_buf_reg reg = {
			.ring_addr = (unsigned long)bg->br,
			.ring_entries = bg->count,
			.bgid = (unsigned short)g,
		};
		ret = io_uring_register_buf_ring(&u->ring, &reg, 0);
		if (ret < 0) {
			zr_err("io", "io_uring_register_buf_ring: %s", strerror(-ret));
			goto fail;
		}
		io_uring_buf_ring_init(bg->br);
		for (unsigned i = 0; i < bg->count; i++)
			io_uring_buf_ring_add(bg->br, u->bufs + (size_t)(first + i) * u->buf_size, u->buf_size,
					      (unsigned short)(first + i), (int)bg->mask, (int)i);
		io_uring_buf_ring_advance(bg->br, (int)bg->count);
	}
	*out = &u->super;
	return 0;
fail:
	io_uring_queue_exit(&u->ring);
	for (unsigned g = 0; g < BUF_GROUPS; g++)
		if (u->grp[g].br)
			munmap(u->grp[g].br, u->grp[g].br_bytes);
	if (u->bufs)
		munmap(u->bufs, u->bufs_bytes);
	free(u);
	return ret;
}

static void uring_destroy(zr_io_t *io)
{
	uring_io_t *u = (uring_io_t *)io;
	io_uring_queue_exit(&u->ring);
	for (unsigned g = 0; g < BUF_GROUPS; g++)
		if (u->grp[g].br)
			munmap(u->grp[g].br, u->grp[g].br_bytes);
	munmap(u->bufs, u->bufs_bytes);
	free(u);
}

#define PREP(u, sqe)                           \
	struct io_uring_sqe *sqe = get_sqe(u); \
	if (!sqe)                              \
		return -EBUSY;

static int uring_accept(zr_io_t *io, zr_io_op_t *op, int fd)
{
	uring_io_t *u = (uring_io_t *)io;
	PREP(u, sqe);
	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

static int recv_group(uring_io_t *u, zr_io_op_t *op, int fd, unsigned g)
{
	if (!u->grp[g].count)
		return -EINVAL;
	PREP(u, sqe);
	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (unsigned short)g;
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

static int uring_recv(zr_io_t *io, zr_io_op_t *op, int fd)
{
	return recv_group((uring_io_t *)io, op, fd, 0);
}

static int uring_recv_reserved(zr_io_t *io, zr_io_op_t *op, int fd)
{
	return recv_group((uring_io_t *)io, op, fd, 1);
}

static int link_timeout(uring_io_t *u, struct io_uring_sqe *sqe, uint64_t timeout_ns, struct __kernel_timespec *ts)
{
	if (!timeout_ns)
		return 0;
	sqe->flags |= IOSQE_IO_LINK;
	struct io_uring_sqe *t = get_sqe(u);
	if (!t) {
		/* The request is queued already: make it a harmless no-op so
		 * no completion reaches an op its caller considers unsubmitted. */
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data(sqe, NULL);
		sqe->flags = 0;
		return -EBUSY;
	}
	ts->tv_sec = (long long)(timeout_ns / 1000000000ull);
	ts->tv_nsec = (long long)(timeout_ns % 1000000000ull);
	io_uring_prep_link_timeout(t, ts, 0);
	io_uring_sqe_set_data(t, NULL);
	return 0;
}

static int uring_recv_into(zr_io_t *io, zr_io_op_t *op, int fd, void *buf, size_t len, uint64_t timeout_ns)
{
	uring_io_t *u = (uring_io_t *)io;
	struct __kernel_timespec ts;
	/* Ensure the linked pair lands in one submission batch. */
	if (io_uring_sq_space_left(&u->ring) < 2)
		io_uring_submit(&u->ring);
	PREP(u, sqe);
	io_uring_prep_recv(sqe, fd, buf, len, 0);
	io_uring_sqe_set_data(sqe, op);
	/* The timespec is copied at prep time by liburing? No: the kernel reads it
	 * at submit, so submit before it goes out of scope. */
	int ret = link_timeout(u, sqe, timeout_ns, &ts);
	if (ret == 0 && timeout_ns)
		io_uring_submit(&u->ring);
	return ret;
}

static int uring_recv_discard(zr_io_t *io, zr_io_op_t *op, int fd, void *scratch, size_t len)
{
	uring_io_t *u = (uring_io_t *)io;
	PREP(u, sqe);
	io_uring_prep_recv(sqe, fd, scratch, len, MSG_TRUNC);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

static int uring_send(zr_io_t *io, zr_io_op_t *op, int fd, const void *buf, size_t len)
{
	uring_io_t *u = (uring_io_t *)io;
	PREP(u, sqe);
	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL | MSG_WAITALL);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

static int uring_send_some(zr_io_t *io, zr_io_op_t *op, int fd, const void *buf, size_t len)
{
	uring_io_t *u = (uring_io_t *)io;
	PREP(u, sqe);
	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

static int uring_connect(zr_io_t *io, zr_io_op_t *op, int fd, const zr_sockaddr_t *addr, uint64_t timeout_ns)
{
	uring_io_t *u = (uring_io_t *)io;
	struct __kernel_timespec ts;
	if (io_uring_sq_space_left(&u->ring) < 2)
		io_uring_submit(&u->ring);
	PREP(u, sqe);
	io_uring_prep_connect(sqe, fd, &addr->sa, addr->len);
	io_uring_sqe_set_data(sqe, op);
	int ret = link_timeout(u, sqe, timeout_ns, &ts);
	/* The connect SQE points at addr and the timeout at ts: submit now so the
	 * kernel has copied both before they may change. */
	if (ret == 0)
		io_uring_submit(&u->ring);
	return ret;
}

static int uring_timeout(zr_io_t *io, zr_io_op_t *op, uint64_t ns)
{
	uring_io_t *u = (uring_io_t *)io;
	struct __kernel_timespec ts = {.tv_sec = (long long)(ns / 1000000000ull),
				       .tv_nsec = (long long)(ns % 1000000000ull)};
	PREP(u, sqe);
	io_uring_prep_timeout(sqe, &ts, 0, 0);
	io_uring_sqe_set_data(sqe, op);
	io_uring_submit(&u->ring);
	return 0;
}

static int uring_poll(zr_io_t *io, zr_io_op_t *op, int fd, unsigned events)
{
	uring_io_t *u = (uring_io_t *)io;
	PREP(u, sqe);
	io_uring_prep_poll_multishot(sqe, fd, events);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

static int uring_poll_once(zr_io_t *io, zr_io_op_t *op, int fd, unsigned events)
{
	uring_io_t *u = (uring_io_t *)io;
	PREP(u, sqe);
	io_uring_prep_poll_add(sqe, fd, events);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

/* Cancellations are submitted at once: left in the queue, one could run
 * after its target completed by itself and was recycled (a new connection
 * on the same fd number, or a new object at the same address) and cancel
 * the wrong operation. */
static int uring_cancel(zr_io_t *io, zr_io_op_t *op)
{
	uring_io_t *u = (uring_io_t *)io;
	PREP(u, sqe);
	io_uring_prep_cancel(sqe, op, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data(sqe, NULL);
	io_uring_submit(&u->ring);
	return 0;
}

static int uring_cancel_fd(zr_io_t *io, int fd)
{
	uring_io_t *u = (uring_io_t *)io;
	PREP(u, sqe);
	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data(sqe, NULL);
	io_uring_submit(&u->ring);
	return 0;
}

static void *uring_buf_addr(zr_io_t *io, unsigned bid)
{
	uring_io_t *u = (uring_io_t *)io;
	return u->bufs + (size_t)bid * u->buf_size;
}

static void uring_buf_release(zr_io_t *io, unsigned bid)
{
	uring_io_t *u = (uring_io_t *)io;
	buf_group_t *bg = &u->grp[bid >= u->grp[0].count ? 1 : 0];
	io_uring_buf_ring_add(bg->br, u->bufs + (size_t)bid * u->buf_size, u->buf_size, (unsigned short)bid,
			      (int)bg->mask, (int)bg->returned);
	bg->returned++;
}

static bool uring_buf_reserved(zr_io_t *io, unsigned bid)
{
	uring_io_t *u = (uring_io_t *)io;
	return bid >= u->grp[0].count;
}

static void publish_bufs(uring_io_t *u)
{
	for (unsigned g = 0; g < BUF_GROUPS; g++) {
		buf_group_t *bg = &u->grp[g];
		if (bg->returned) {
			io_uring_buf_ring_advance(bg->br, (int)bg->returned);
			bg->returned = 0;
		}
	}
}

static int uring_run(zr_io_t *io, uint64_t timeout_ns)
{
	uring_io_t *u = (uring_io_t *)io;
	struct io_uring_cqe *cqe;
	int ret;

	publish_bufs(u);
	if (timeout_ns) {
		struct __kernel_timespec ts = {.tv_sec = (long long)(timeout_ns / 1000000000ull),
					       .tv_nsec = (long long)(timeout_ns % 1000000000ull)};
		ret = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
	} else {
		ret = io_uring_submit(&u->ring);
		if (ret >= 0)
			ret = io_uring_get_events(&u->ring);
	}
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
		return ret;

	int total = 0;
	/* Callbacks may queue SQEs and return buffers; completions that arrive
	 * meanwhile are picked up by the same loop. */
	for (;;) {
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&u->ring, head, cqe) {
			zr_io_op_t *op = io_uring_cqe_get_data(cqe);
			int res = cqe->res;
			unsigned flags = cqe->flags;
			seen++;
			if (op)
				op->cb(op, res, flags);
			if (seen >= 256)
				break;
		}
		if (!seen)
			break;
		io_uring_cq_advance(&u->ring, seen);
		total += (int)seen;
		publish_bufs(u);
	}
	return total;
}

const zr_io_ops_t zr_io_uring_ops = {
	.name = "io_uring",
	.setup = uring_setup,
	.destroy = uring_destroy,
	.accept = uring_accept,
	.recv = uring_recv,
	.recv_reserved = uring_recv_reserved,
	.recv_into = uring_recv_into,
	.recv_discard = uring_recv_discard,
	.send = uring_send,
	.send_some = uring_send_some,
	.connect = uring_connect,
	.timeout = uring_timeout,
	.poll = uring_poll,
	.poll_once = uring_poll_once,
	.cancel = uring_cancel,
	.cancel_fd = uring_cancel_fd,
	.buf_addr = uring_buf_addr,
	.buf_release = uring_buf_release,
	.buf_reserved = uring_buf_reserved,
	.run = uring_run,
};
