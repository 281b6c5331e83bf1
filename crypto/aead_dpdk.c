/* The dpdk AEAD backend: rte_cryptodev, asynchronous. On QAT hosts the QAT
 * PMD does the work; elsewhere a virtual device (crypto_aesni_gcm0 on
 * intel-ipsec-mb, or crypto_openssl0) does, which is slower than calling
 * those libraries directly and is here to exercise the device path.
 *
 * Records that are sealed or opened in place in memory from mem_alloc
 * (rte_malloc: what the device can reach by IOVA), their tag right behind,
 * go to the device as they are: the op's mbuf is attached to the record
 * (rte_pktmbuf_attach_extbuf), no copy. The record layer's output chunks
 * and its open buffer come from there on this backend. Anything else (a
 * record in heap memory, a seal's second run of plaintext, a record across
 * two memory segments in IOVA-as-PA mode) is copied into the mbuf and back.
 *
 * Limits:
 *  - EAL runs with --no-huge --no-shconf -m 256 --no-pci (22.11 refuses
 *    --in-memory with --no-huge, which implies legacy memory). --no-pci
 *    because EAL would otherwise probe every PCI device, NICs included, and
 *    take any bound to vfio/uio. On QAT hosts give the whole argument list in
 *    ZRING_DPDK_EAL_ARGS (hugepages, -a <QAT VF address>); the first device
 *    that does AES-GCM is used. ZRING_DPDK_VDEV names a virtual device instead
 *    of crypto_aesni_gcm0 (e.g. crypto_openssl0, which also does ChaCha20).
 *    EAL starts once per process; its lcore pinning is undone so that zring's
 *    own threads keep their CPU affinity.
 *  - One queue pair per worker thread, taken on first use, at most
 *    MAX_QPS or the device's maximum; further threads get -ENOSPC.
 *  - A session per key, direction and AAD length, created on first use;
 *    SESSIONS sessions in all. A key must not be freed while it has batches
 *    in flight.
 *  - Records up to REC_MAX bytes, AAD up to AAD_MAX bytes. A seal's two runs
 *    of plaintext (in, in2) are copied into the one mbuf back to back. */
#define ALLOW_EXPERIMENTAL_API /* rte_cryptodev_sym_session_pool_create */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cryptodev.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_memory.h>
#include <rte_version.h>

#include <openssl/crypto.h>

#include "crypto/aead-int.h"

#define MAX_QPS	     16
#define QP_DEPTH     512	   /* descriptors per queue pair */
#define BATCHES	     256	   /* batches in flight per thread */
#define REC_MAX	     (16384 + 256) /* TLSCiphertext's largest fragment */
#define AAD_MAX	     64
#define SESSIONS     16384
#define SESS_PER_KEY 4

typedef struct dpdk_batch {
	zr_aead_rec_t *recs;
	size_t n, left;
	zr_aead_done_cb cb;
	void *arg;
	bool encrypt, busy;
} dpdk_batch_t;

/* The op's private area, after the sym op: the IV the device reads (at
 * IV_OFFSET), the AAD (device-reachable, so not the caller's pointer), and
 * where the result goes. */
typedef struct op_priv {
	uint8_t iv[16];
	uint8_t aad[AAD_MAX];
	dpdk_batch_t *batch;
	uint32_t idx;
	bool in_place; /* the mbuf is the record itself (attached), no copy */
	struct rte_mbuf_ext_shared_info shinfo;
} op_priv_t;

#define PRIV_OFFSET (sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op))
#define IV_OFFSET   (PRIV_OFFSET + offsetof(op_priv_t, iv))

typedef struct dpdk_key {
	zr_aead_key_t super;
	uint8_t key[32]; /* sessions are made on first use per direction */
	struct {
		void *sess;
		uint16_t aad_len;
		bool encrypt;
	} sess[SESS_PER_KEY];
} dpdk_key_t;

typedef struct dpdk_thread {
	uint16_t qp;
	unsigned ops_out; /* enqueued, not yet dequeued */
	dpdk_batch_t batch[BATCHES];
	uint16_t free_batch[BATCHES]; /* indexes of the slots not busy */
	unsigned n_free;
	uint64_t in_place, copied; /* records submitted each way */
} dpdk_thread_t;

static __thread dpdk_thread_t *thread_state;

/* From setup (control thread), read-only afterwards. */
static bool ready;
static int setup_rc;
static char setup_err[256];
static uint8_t dev;
static uint16_t nb_qps;
static bool alg_ok[ZR_AEAD_ALG_COUNT];
static struct rte_mempool *op_pool, *mbuf_pool, *sess_pool;
static char description[192];
static atomic_uint next_qp;

static const enum rte_crypto_aead_algorithm algos[ZR_AEAD_ALG_COUNT] = {
	[ZR_AEAD_AES_128_GCM] = RTE_CRYPTO_AEAD_AES_GCM,
	[ZR_AEAD_AES_256_GCM] = RTE_CRYPTO_AEAD_AES_GCM,
	[ZR_AEAD_CHACHA20_POLY1305] = RTE_CRYPTO_AEAD_CHACHA20_POLY1305,
};

static bool dev_does(uint8_t id, zr_aead_alg_t alg)
{
	struct rte_cryptodev_sym_capability_idx idx = {.type = RTE_CRYPTO_SYM_XFORM_AEAD};
	idx.algo.aead = algos[alg];
	const struct rte_cryptodev_symmetric_capability *cap = rte_cryptodev_sym_capability_get(id, &idx);
	return cap && rte_cryptodev_sym_capability_check_aead(cap, (uint16_t)zr_aead_key_len(alg), ZR_AEAD_TAG_LEN, 5,
							      ZR_AEAD_IV_LEN) == 0;
}

/* The first crypto device that does AES-128-GCM, or -1. */
static int find_device(void)
{
	for (uint8_t i = 0; i < rte_cryptodev_count(); i++)
		if (dev_does(i, ZR_AEAD_AES_128_GCM))
			return i;
	return -1;
}

static int eal_init(char *err, size_t cap)
{
	char args[512];
	const char *env = getenv("ZRING_DPDK_EAL_ARGS");
	const char *vdev = getenv("ZRING_DPDK_VDEV");
	cpu_set_t cpus;
	int first_cpu = 0;
	if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0)
		while (first_cpu < CPU_SETSIZE - 1 && !CPU_ISSET(first_cpu, &cpus))
			first_cpu++;
	if (env)
		snprintf(args, sizeof(args), "zring %s", env);
	else
		/* one lcore (the caller's first CPU): no EAL worker threads */
		snprintf(args, sizeof(args),
			 "zring --no-huge --no-shconf -m 256 --no-pci --no-telemetry --log-level=4 -l %d%s%s",
			 first_cpu, vdev ? " --vdev " : "", vdev ? vdev : "");
	char *argv[32];
	int argc = 0;
	for (char *save, *tok = strtok_r(args, " ", &save); tok && argc < 31; tok = strtok_r(NULL, " ", &save))
		argv[argc++] = tok;
	argv[argc] = NULL;

	pthread_t self = pthread_self();
	cpu_set_t before;
	bool have_before = pthread_getaffinity_np(self, sizeof(before), &before) == 0;
	int rc = rte_eal_init(argc, argv);
	if (have_before)
		pthread_setaffinity_np(self, sizeof(before), &before);
	if (rc < 0) {
		snprintf(err, cap, "DPDK EAL could not start: %s", rte_strerror(rte_errno));
		return -ENODEV;
	}
	if (find_device() < 0 && !vdev) {
		/* no crypto hardware: the ipsec-mb based virtual device */
		if (rte_eal_hotplug_add("vdev", "crypto_aesni_gcm0", "") < 0) {
			snprintf(err, cap, "no DPDK crypto device, and crypto_aesni_gcm0 could not be created: %s",
				 rte_strerror(rte_errno));
			return -ENODEV;
		}
	}
	return 0;
}

static int dpdk_setup_once(char *err, size_t cap)
{
	int rc = eal_init(err, cap);
	if (rc < 0)
		return rc;
	int id = find_device();
	if (id < 0) {
		snprintf(err, cap, "no DPDK crypto device does AES-128-GCM");
		return -ENODEV;
	}
	dev = (uint8_t)id;
	struct rte_cryptodev_info info;
	rte_cryptodev_info_get(dev, &info);
	nb_qps = (uint16_t)(info.max_nb_queue_pairs < MAX_QPS ? info.max_nb_queue_pairs : MAX_QPS);
	for (int a = 0; a < ZR_AEAD_ALG_COUNT; a++)
		alg_ok[a] = dev_does(dev, a);

	int socket = rte_cryptodev_socket_id(dev);
	if (socket < 0)
		socket = SOCKET_ID_ANY;
	unsigned nops = nb_qps * QP_DEPTH;
	sess_pool = rte_cryptodev_sym_session_pool_create(
		"zr_aead_sess", SESSIONS, rte_cryptodev_sym_get_private_session_size(dev), 0, 0, socket);
	op_pool = rte_crypto_op_pool_create("zr_aead_ops", RTE_CRYPTO_OP_TYPE_SYMMETRIC, nops, 0, sizeof(op_priv_t),
					    socket);
	mbuf_pool = rte_pktmbuf_pool_create("zr_aead_mbufs", nops, 0, 0,
					    RTE_PKTMBUF_HEADROOM + REC_MAX + ZR_AEAD_TAG_LEN, socket);
	if (!sess_pool || !op_pool || !mbuf_pool) {
		snprintf(err, cap, "DPDK pools (%u ops of %d bytes): %s", nops, REC_MAX, rte_strerror(rte_errno));
		return -ENOMEM;
	}
	struct rte_cryptodev_config conf = {
		.socket_id = socket,
		.nb_queue_pairs = nb_qps,
		.ff_disable = RTE_CRYPTODEV_FF_ASYMMETRIC_CRYPTO | RTE_CRYPTODEV_FF_SECURITY,
	};
	if ((rc = rte_cryptodev_configure(dev, &conf)) < 0) {
		snprintf(err, cap, "DPDK device %s could not be configured: %s", info.driver_name, strerror(-rc));
		return -ENODEV;
	}
	struct rte_cryptodev_qp_conf qp = {.nb_descriptors = QP_DEPTH, .mp_session = sess_pool};
	for (uint16_t q = 0; q < nb_qps; q++)
		if ((rc = rte_cryptodev_queue_pair_setup(dev, q, &qp, socket)) < 0) {
			snprintf(err, cap, "DPDK queue pair %u: %s", q, strerror(-rc));
			return -ENODEV;
		}
	if ((rc = rte_cryptodev_start(dev)) < 0) {
		snprintf(err, cap, "DPDK device %s could not start: %s", info.driver_name, strerror(-rc));
		return -ENODEV;
	}
	snprintf(description, sizeof(description),
		 "%s, device %s (%s), %u queue pairs, records in place in DPDK memory", rte_version(),
		 rte_cryptodev_name_get(dev), info.driver_name, nb_qps);
	return 0;
}

static int dpdk_setup(const char *openssl_provider, char *err, size_t cap)
{
	/* EAL cannot start twice: the first outcome stands. */
	if (!ready && !setup_rc) {
		setup_rc = dpdk_setup_once(setup_err, sizeof(setup_err));
		if (setup_rc == 0)
			ready = true;
	}
	if (setup_rc < 0)
		snprintf(err, cap, "%s", setup_err);
	return setup_rc;
}

static bool dpdk_supports(zr_aead_alg_t alg)
{
	return ready && (unsigned)alg < ZR_AEAD_ALG_COUNT && alg_ok[alg];
}

/* The calling thread's queue pair and batch slots, made on first use. */
static dpdk_thread_t *thread_get(void)
{
	if (thread_state)
		return thread_state;
	unsigned q = atomic_fetch_add(&next_qp, 1);
	if (q >= nb_qps)
		return NULL;
	dpdk_thread_t *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->qp = (uint16_t)q;
	for (unsigned i = 0; i < BATCHES; i++)
		t->free_batch[i] = (uint16_t)(BATCHES - 1 - i);
	t->n_free = BATCHES;
	thread_state = t;
	return t;
}

static int dpdk_key_new(zr_aead_alg_t alg, const uint8_t *key, zr_aead_key_t **out)
{
	dpdk_key_t *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->super.backend = &zr_aead_dpdk;
	k->super.alg = alg;
	memcpy(k->key, key, zr_aead_key_len(alg));
	*out = &k->super;
	return 0;
}

static void dpdk_key_free(zr_aead_key_t *key)
{
	dpdk_key_t *k = (dpdk_key_t *)key;
	for (int i = 0; i < SESS_PER_KEY; i++)
		if (k->sess[i].sess)
			rte_cryptodev_sym_session_free(dev, k->sess[i].sess);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

static void *session_for(dpdk_key_t *k, bool encrypt, uint16_t aad_len)
{
	int i;
	for (i = 0; i < SESS_PER_KEY && k->sess[i].sess; i++)
		if (k->sess[i].encrypt == encrypt && k->sess[i].aad_len == aad_len)
			return k->sess[i].sess;
	if (i == SESS_PER_KEY)
		return NULL;
	struct rte_crypto_sym_xform x = {
		.type = RTE_CRYPTO_SYM_XFORM_AEAD,
		.aead =
			{
				.op = encrypt ? RTE_CRYPTO_AEAD_OP_ENCRYPT : RTE_CRYPTO_AEAD_OP_DECRYPT,
				.algo = algos[k->super.alg],
				.key = {.data = k->key, .length = (uint16_t)zr_aead_key_len(k->super.alg)},
				.iv = {.offset = IV_OFFSET, .length = ZR_AEAD_IV_LEN},
				.digest_length = ZR_AEAD_TAG_LEN,
				.aad_length = aad_len,
			},
	};
	void *s = rte_cryptodev_sym_session_create(dev, &x, sess_pool);
	if (!s)
		return NULL;
	k->sess[i].sess = s;
	k->sess[i].encrypt = encrypt;
	k->sess[i].aad_len = aad_len;
	return s;
}

/* One dequeued op: its record's outcome, copied back out of the mbuf
 * unless the device worked on the record in place. */
static void op_done(struct rte_crypto_op *op)
{
	op_priv_t *p = rte_crypto_op_ctod_offset(op, op_priv_t *, PRIV_OFFSET);
	dpdk_batch_t *b = p->batch;
	zr_aead_rec_t *r = &b->recs[p->idx];
	struct rte_mbuf *m = op->sym->m_src;
	uint8_t *data = rte_pktmbuf_mtod(m, uint8_t *);
	size_t len = r->len + r->len2;
	if (op->status == RTE_CRYPTO_OP_STATUS_SUCCESS) {
		if (!p->in_place) {
			memcpy(r->out, data, len);
			if (b->encrypt)
				memcpy(r->tag, data + len, ZR_AEAD_TAG_LEN);
		}
		r->status = 0;
	} else {
		/* a device may have decrypted before checking the tag: no
		 * output of a failed record is left to be half-claimed */
		if (!b->encrypt)
			OPENSSL_cleanse(r->out, r->len);
		r->status = op->status == RTE_CRYPTO_OP_STATUS_AUTH_FAILED ? -EBADMSG : -EIO;
	}
	if (!p->in_place && (!b->encrypt || op->status != RTE_CRYPTO_OP_STATUS_SUCCESS))
		OPENSSL_cleanse(data, len); /* plaintext leaves device memory */
	rte_pktmbuf_free(m);		    /* detaches an attached record */
	rte_crypto_op_free(op);
	b->left--;
}

static void ext_free_noop(void *addr, void *opaque)
{
	(void)addr;
	(void)opaque;
}

/* The IOVA of a run of device memory that the device may take as one
 * segment (inside one memory segment, or IOVA = VA), or RTE_BAD_IOVA. */
static rte_iova_t run_iova(const uint8_t *p, size_t len)
{
	if (rte_eal_iova_mode() == RTE_IOVA_VA)
		return rte_mem_virt2memseg(p, NULL) ? (rte_iova_t)(uintptr_t)p : RTE_BAD_IOVA;
	const struct rte_memseg *a = rte_mem_virt2memseg(p, NULL), *z = rte_mem_virt2memseg(p + len - 1, NULL);
	if (!a || a != z || a->iova == RTE_BAD_IOVA)
		return RTE_BAD_IOVA;
	return a->iova + (rte_iova_t)(p - (const uint8_t *)a->addr);
}

/* A record sealed or opened in place in device memory, its tag right
 * behind it, goes to the device as it is: the mbuf is attached to it. */
static bool attach_in_place(struct rte_mbuf *m, op_priv_t *p, zr_aead_rec_t *r)
{
	if (r->len2 || r->in != r->out || r->tag != r->out + r->len || r->len + ZR_AEAD_TAG_LEN > UINT16_MAX)
		return false;
	rte_iova_t iova = run_iova(r->out, r->len + ZR_AEAD_TAG_LEN);
	if (iova == RTE_BAD_IOVA)
		return false;
	p->shinfo.free_cb = ext_free_noop;
	p->shinfo.fcb_opaque = NULL;
	rte_mbuf_ext_refcnt_set(&p->shinfo, 1);
	rte_pktmbuf_attach_extbuf(m, r->out, iova, (uint16_t)(r->len + ZR_AEAD_TAG_LEN), &p->shinfo);
	m->data_off = 0;
	m->data_len = (uint16_t)r->len;
	m->pkt_len = (uint32_t)r->len;
	return true;
}

static void dpdk_counts(uint64_t *in_place, uint64_t *copied)
{
	*in_place = thread_state ? thread_state->in_place : 0;
	*copied = thread_state ? thread_state->copied : 0;
}

static void *dpdk_mem_alloc(size_t size)
{
	return ready ? rte_malloc("zr_records", size, 64) : NULL;
}

static void dpdk_mem_free(void *p)
{
	rte_free(p);
}

/* Dequeues what the device has finished; calls back completed batches. */
static int drain(dpdk_thread_t *t)
{
	struct rte_crypto_op *ops[ZR_AEAD_BATCH_MAX];
	int batches = 0;
	uint16_t got = rte_cryptodev_dequeue_burst(dev, t->qp, ops, ZR_AEAD_BATCH_MAX);
	t->ops_out -= got;
	for (uint16_t i = 0; i < got; i++) {
		op_priv_t *p = rte_crypto_op_ctod_offset(ops[i], op_priv_t *, PRIV_OFFSET);
		dpdk_batch_t *b = p->batch;
		op_done(ops[i]);
		if (b->left == 0 && b->busy) {
			b->busy = false;
			t->free_batch[t->n_free++] = (uint16_t)(b - t->batch);
			b->cb(b->arg, b->recs, b->n);
			batches++;
		}
	}
	return batches;
}

static int dpdk_submit(zr_aead_key_t *key, bool encrypt, zr_aead_rec_t *recs, size_t n, zr_aead_done_cb cb, void *arg)
{
	dpdk_key_t *k = (dpdk_key_t *)key;
	dpdk_thread_t *t = thread_get();
	if (!t)
		return -ENOSPC; /* more threads than queue pairs */
	if (n == 0 || n > ZR_AEAD_BATCH_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (recs[i].len + recs[i].len2 > REC_MAX || recs[i].len2 > REC_MAX || recs[i].aad_len > AAD_MAX ||
		    (recs[i].len2 && !encrypt))
			return -EINVAL;
	if (t->ops_out + n > QP_DEPTH)
		return -EAGAIN;
	if (!t->n_free)
		return -EAGAIN;
	dpdk_batch_t *b = &t->batch[t->free_batch[t->n_free - 1]];

	struct rte_crypto_op *ops[ZR_AEAD_BATCH_MAX];
	struct rte_mbuf *mbufs[ZR_AEAD_BATCH_MAX];
	if (rte_crypto_op_bulk_alloc(op_pool, RTE_CRYPTO_OP_TYPE_SYMMETRIC, ops, (uint16_t)n) != n)
		return -EAGAIN;
	if (rte_pktmbuf_alloc_bulk(mbuf_pool, mbufs, (unsigned)n) != 0) {
		for (size_t i = 0; i < n; i++)
			rte_crypto_op_free(ops[i]);
		return -EAGAIN;
	}
	for (size_t i = 0; i < n; i++) {
		zr_aead_rec_t *r = &recs[i];
		void *sess = session_for(k, encrypt, (uint16_t)r->aad_len);
		if (!sess) {
			for (size_t j = 0; j < n; j++) {
				rte_pktmbuf_free(mbufs[j]);
				rte_crypto_op_free(ops[j]);
			}
			return -ENOMEM;
		}
		struct rte_mbuf *m = mbufs[i];
		size_t len = r->len + r->len2;
		op_priv_t *p = rte_crypto_op_ctod_offset(ops[i], op_priv_t *, PRIV_OFFSET);
		p->in_place = attach_in_place(m, p, r);
		t->in_place += p->in_place;
		t->copied += !p->in_place;
		if (!p->in_place) {
			uint8_t *copy = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(len + ZR_AEAD_TAG_LEN));
			memcpy(copy, r->in, r->len);
			if (r->len2)
				memcpy(copy + r->len, r->in2, r->len2);
			if (!encrypt)
				memcpy(copy + len, r->tag, ZR_AEAD_TAG_LEN);
		}
		uint8_t *data = rte_pktmbuf_mtod(m, uint8_t *);
		memcpy(p->iv, r->nonce, ZR_AEAD_IV_LEN);
		memcpy(p->aad, r->aad, r->aad_len);
		p->batch = b;
		p->idx = (uint32_t)i;
		struct rte_crypto_sym_op *s = ops[i]->sym;
		rte_crypto_op_attach_sym_session(ops[i], sess);
		s->m_src = m;
		s->m_dst = NULL;
		s->aead.data.offset = 0;
		s->aead.data.length = (uint32_t)len;
		s->aead.digest.data = data + len;
		s->aead.digest.phys_addr = rte_pktmbuf_iova_offset(m, len);
		s->aead.aad.data = p->aad;
		s->aead.aad.phys_addr = rte_crypto_op_ctophys_offset(ops[i], PRIV_OFFSET + offsetof(op_priv_t, aad));
	}
	*b = (dpdk_batch_t){.recs = recs, .n = n, .left = n, .cb = cb, .arg = arg, .encrypt = encrypt, .busy = true};
	t->n_free--;
	/* ops_out + n <= QP_DEPTH, so the ring has room; a PMD that still takes
	 * fewer gets them again after its completions are drained. */
	size_t sent = 0;
	while (sent < n) {
		uint16_t q = rte_cryptodev_enqueue_burst(dev, t->qp, ops + sent, (uint16_t)(n - sent));
		sent += q;
		t->ops_out += q;
		if (sent < n)
			drain(t);
	}
	return 0;
}

static int dpdk_poll(void)
{
	dpdk_thread_t *t = thread_state;
	if (!t || !t->ops_out)
		return 0;
	return drain(t);
}

static void dpdk_thread_cleanup(void)
{
	dpdk_thread_t *t = thread_state;
	if (!t)
		return;
	while (t->ops_out)
		drain(t);
	/* The queue pair index is not reused: threads are made once at
	 * start-up, and a later thread gets a fresh one if any is left. */
	free(t);
	thread_state = NULL;
}

static const char *dpdk_describe(void)
{
	return description[0] ? description : "DPDK cryptodev (not set up)";
}

const zr_aead_backend_t zr_aead_dpdk = {
	.name = "dpdk",
	.async = true,
	.two_segments = 1u << ZR_AEAD_AES_128_GCM | 1u << ZR_AEAD_AES_256_GCM | 1u << ZR_AEAD_CHACHA20_POLY1305,
	.setup = dpdk_setup,
	.supports = dpdk_supports,
	.key_new = dpdk_key_new,
	.key_free = dpdk_key_free,
	.submit = dpdk_submit,
	.poll = dpdk_poll,
	.thread_cleanup = dpdk_thread_cleanup,
	.describe = dpdk_describe,
	.mem_alloc = dpdk_mem_alloc,
	.mem_free = dpdk_mem_free,
	.counts = dpdk_counts,
};
