/* I/O backends and thin inline wrappers over their ops table. Every function
 * here is for the thread that owns `io`. */
#ifndef ZR_IO_IO_H
#define ZR_IO_IO_H

#include "io/io-t.h"

extern const zr_io_ops_t zr_io_uring_ops;

/* Checks that the kernel offers what the io_uring backend needs (ring flags,
 * opcodes, provided buffer rings). Returns 0, or -errno with a description
 * of what is missing in `why`. Any thread. */
int zr_io_uring_probe(char *why, size_t cap) __attribute__((warn_unused_result));

#define ZR_IO_CALL(io, fn, ...) ((io)->ops->fn((io), __VA_ARGS__))

static inline int zr_io_accept(zr_io_t *io, zr_io_op_t *op, int fd)
{
	return ZR_IO_CALL(io, accept, op, fd);
}
static inline int zr_io_recv(zr_io_t *io, zr_io_op_t *op, int fd)
{
	return ZR_IO_CALL(io, recv, op, fd);
}
static inline int zr_io_recv_reserved(zr_io_t *io, zr_io_op_t *op, int fd)
{
	return ZR_IO_CALL(io, recv_reserved, op, fd);
}
static inline int zr_io_recv_into(zr_io_t *io, zr_io_op_t *op, int fd, void *buf, size_t len, uint64_t timeout_ns)
{
	return ZR_IO_CALL(io, recv_into, op, fd, buf, len, timeout_ns);
}
static inline int zr_io_recv_discard(zr_io_t *io, zr_io_op_t *op, int fd, void *scratch, size_t len)
{
	return ZR_IO_CALL(io, recv_discard, op, fd, scratch, len);
}
static inline int zr_io_send(zr_io_t *io, zr_io_op_t *op, int fd, const void *buf, size_t len)
{
	return ZR_IO_CALL(io, send, op, fd, buf, len);
}

static inline int zr_io_send_some(zr_io_t *io, zr_io_op_t *op, int fd, const void *buf, size_t len)
{
	return ZR_IO_CALL(io, send_some, op, fd, buf, len);
}
static inline int zr_io_connect(zr_io_t *io, zr_io_op_t *op, int fd, const zr_sockaddr_t *addr, uint64_t timeout_ns)
{
	return ZR_IO_CALL(io, connect, op, fd, addr, timeout_ns);
}
static inline int zr_io_timeout(zr_io_t *io, zr_io_op_t *op, uint64_t ns)
{
	return ZR_IO_CALL(io, timeout, op, ns);
}
static inline int zr_io_poll(zr_io_t *io, zr_io_op_t *op, int fd, unsigned events)
{
	return ZR_IO_CALL(io, poll, op, fd, events);
}
static inline int zr_io_poll_once(zr_io_t *io, zr_io_op_t *op, int fd, unsigned events)
{
	return ZR_IO_CALL(io, poll_once, op, fd, events);
}
static inline int zr_io_cancel(zr_io_t *io, zr_io_op_t *op)
{
	return ZR_IO_CALL(io, cancel, op);
}
static inline int zr_io_cancel_fd(zr_io_t *io, int fd)
{
	return ZR_IO_CALL(io, cancel_fd, fd);
}
static inline void *zr_io_buf_addr(zr_io_t *io, unsigned bid)
{
	return io->ops->buf_addr(io, bid);
}
static inline void zr_io_buf_release(zr_io_t *io, unsigned bid)
{
	io->ops->buf_release(io, bid);
}
static inline bool zr_io_buf_reserved(zr_io_t *io, unsigned bid)
{
	return ZR_IO_CALL(io, buf_reserved, bid);
}
static inline int zr_io_run(zr_io_t *io, uint64_t timeout_ns)
{
	return io->ops->run(io, timeout_ns);
}

#endif
