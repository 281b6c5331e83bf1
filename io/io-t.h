/* I/O backend types. A backend is a const descriptor (zr_io_ops_t) whose
 * setup() returns a context embedding zr_io_t as its first member. Every
 * operation carries a zr_io_op_t that its owner embeds in its own object; the
 * completion calls op->cb(op, res, flags) on the worker thread that owns the
 * ring, never synchronously from the submitting call. */
#ifndef ZR_IO_IO_T_H
#define ZR_IO_IO_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"

/* Completion flags (same bit values as io_uring's CQE flags). */
#define ZR_IO_F_BUFFER	    (1u << 0) /* a provided buffer is attached: zr_io_buf_id(flags) */
#define ZR_IO_F_MORE	    (1u << 1) /* the multishot op stays armed: more completions follow */
#define ZR_IO_BUF_SHIFT	    16
#define zr_io_buf_id(flags) ((unsigned)((flags) >> ZR_IO_BUF_SHIFT))

typedef struct zr_io_op zr_io_op_t;
typedef void (*zr_io_cb_t)(zr_io_op_t *op, int res, unsigned flags);

struct zr_io_op {
	zr_io_cb_t cb;
};

typedef struct zr_io_ops zr_io_ops_t;

typedef struct zr_io {
	const zr_io_ops_t *ops;
} zr_io_t;

typedef struct zr_io_params {
	unsigned entries;   /* submission queue size */
	unsigned buf_count; /* provided receive buffers (power of two, <= 32768) */
	unsigned buf_size;  /* bytes per receive buffer */
	/* Provided buffers kept apart for recv_reserved (power of two; 0 =
	 * none; buf_count + reserve_count <= 65536). */
	unsigned reserve_count;
	int numa_node; /* node to place buffers on, -1 = local */
} zr_io_params_t;

struct zr_io_ops {
	const char *name;
	/* Creates a ring/loop owned by the calling thread (it must be the only
	 * thread that ever uses it). Returns 0 or -errno with a message logged. */
	int (*setup)(const zr_io_params_t *params, zr_io_t **out);
	void (*destroy)(zr_io_t *io);
	/* Multishot accept on a listening socket: res = new fd (non-blocking,
	 * close-on-exec) or -errno; without ZR_IO_F_MORE the op is disarmed. */
	int (*accept)(zr_io_t *io, zr_io_op_t *op, int fd);
	/* Multishot receive into provided buffers: res = bytes (buffer id in
	 * flags), 0 = EOF, -ENOBUFS = no free buffer (disarmed), other -errno. */
	int (*recv)(zr_io_t *io, zr_io_op_t *op, int fd);
	/* recv from the reserve (params.reserve_count): for connections whose
	 * reading frees the main pool (HBONE: its WINDOW_UPDATEs let the
	 * streams that hold main-pool buffers drain), so that they never
	 * starve when other receives have taken every main-pool buffer.
	 * -EINVAL without a reserve. */
	int (*recv_reserved)(zr_io_t *io, zr_io_op_t *op, int fd);
	/* One receive into the caller's buffer; timeout_ns 0 = none (-ECANCELED
	 * when the timeout fired). */
	int (*recv_into)(zr_io_t *io, zr_io_op_t *op, int fd, void *buf, size_t len, uint64_t timeout_ns);
	/* Receives and discards up to len bytes without copying them
	 * (MSG_TRUNC on TCP): res = bytes dropped, 0 = EOF, or -errno. scratch
	 * must span len bytes of the caller's memory but is never written. */
	int (*recv_discard)(zr_io_t *io, zr_io_op_t *op, int fd, void *scratch, size_t len);
	/* Sends all of buf (the backend retries short writes); res = bytes or -errno. */
	int (*send)(zr_io_t *io, zr_io_op_t *op, int fd, const void *buf, size_t len);
	/* One send that may take fewer bytes than len (res = bytes or -errno):
	 * for sockets that refuse MSG_WAITALL, such as kernel TLS ones. */
	int (*send_some)(zr_io_t *io, zr_io_op_t *op, int fd, const void *buf, size_t len);
	/* Connects with a timeout (0 = none); res 0, -errno, or -ECANCELED on timeout. */
	int (*connect)(zr_io_t *io, zr_io_op_t *op, int fd, const zr_sockaddr_t *addr, uint64_t timeout_ns);
	/* One-shot timer: res -ETIME when it fires, -ECANCELED when cancelled. */
	int (*timeout)(zr_io_t *io, zr_io_op_t *op, uint64_t ns);
	/* Multishot readiness poll (POLLIN etc.). */
	int (*poll)(zr_io_t *io, zr_io_op_t *op, int fd, unsigned events);
	/* One-shot readiness poll: res = the events that fired, or -errno. */
	int (*poll_once)(zr_io_t *io, zr_io_op_t *op, int fd, unsigned events);
	/* Cancels every pending op of `op` (its callback sees -ECANCELED). */
	int (*cancel)(zr_io_t *io, zr_io_op_t *op);
	/* Cancels every pending op on `fd`. */
	int (*cancel_fd)(zr_io_t *io, int fd);
	/* Provided buffers: address of buffer `bid`, and giving it back. */
	void *(*buf_addr)(zr_io_t *io, unsigned bid);
	void (*buf_release)(zr_io_t *io, unsigned bid);
	/* Whether buffer `bid` is one of the reserve's. */
	bool (*buf_reserved)(zr_io_t *io, unsigned bid);
	/* Submits what is queued, waits up to timeout_ns (0 = don't wait) for at
	 * least one completion, then dispatches all available completions.
	 * Returns the number dispatched or -errno. */
	int (*run)(zr_io_t *io, uint64_t timeout_ns);
};

#endif
