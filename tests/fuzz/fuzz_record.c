/* libFuzzer target for zring's TLS 1.3 record layer: arbitrary bytes as
 * received ciphertext, and arbitrary inner plaintexts sealed under the
 * right key (so that they pass authentication and reach the content-type,
 * alert and post-handshake message parsing), into an established
 * connection with fixed keys. It must never crash, leak or read out of
 * bounds; a bad input only fails that connection.
 *
 * Input: byte 0 picks the cipher suite (bits 0-1), whether the bytes are
 * ciphertext or inner plaintexts (bit 2), fed or lent (bit 3), or a round
 * trip (bit 4); byte 1 picks read sizes. Inner plaintexts are
 * length-prefixed (2 bytes) pieces. A round trip: the rest of the input
 * drives writes, transfers and reads of different sizes between two of our
 * endpoints (with KeyUpdates every few records), and what is read must be
 * what was written. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/aead.h"
#include "crypto/record.h"
#include "crypto/tls-int.h"
#include "io/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const zr_aead_backend_t *backend;

static void setup(void)
{
	char err[256];
	zr_log_set_level(ZR_LOG_ERROR);
	if (zr_aead_select(ZR_RECORD_CRYPTO_OPENSSL, NULL, &backend, err, sizeof(err))) {
		fprintf(stderr, "fuzz_record: %s\n", err);
		abort();
	}
}

/* Reads until nothing more comes, with buffer sizes from `sizes`; writes a
 * little so that queued KeyUpdates and alerts go through the output. */
static void drain(zr_tls_t *t, uint8_t sizes)
{
	static uint8_t buf[3 * ZR_RECORD_CIPHER_MAX];
	size_t cap = sizes & 0x80 ? (size_t)(sizes & 0x7f) + 1 : sizeof(buf) - (size_t)(sizes & 0x7f) * 300;
	for (int i = 0; i < 1000; i++) {
		ssize_t n = zr_tls_read(t, buf, cap);
		if (n <= 0)
			break;
	}
	if (!zr_tls_write(t, "x", 1)) {
		const void *p;
		size_t n = zr_tls_out_peek(t, &p);
		zr_tls_out_consume(t, n);
	}
	zr_tls_out_consume(t, zr_tls_out_pending(t));
}

/* Writes of sizes taken from the input, pieces of ciphertext moved, reads
 * into buffers of sizes taken from the input; the stream must arrive
 * intact. */
static void round_trip(zr_aead_alg_t alg, uint8_t ku, const uint8_t *data, size_t size, const uint8_t *cs,
		       const uint8_t *ss)
{
	static uint8_t tx[1 << 20], rx[1 << 20];
	zr_tls_t *c = zr_tls_new_established(false, backend, alg, ss, cs);
	zr_tls_t *s = zr_tls_new_established(true, backend, alg, cs, ss);
	if (!c || !s)
		goto out;
	zr_tls_set_key_update_interval(c, (uint64_t)ku % 8 + 1);
	size_t sent = 0, got = 0;
	for (size_t i = 0; i + 3 <= size; i += 3) {
		size_t n = ((size_t)data[i] << 8 | data[i + 1]) % 40000;
		n = n < sizeof(tx) - sent ? n : sizeof(tx) - sent;
		for (size_t j = 0; j < n; j++)
			tx[sent + j] = (uint8_t)(sent + j + ku);
		if (zr_tls_write(c, tx + sent, n))
			abort();
		sent += n;
		const void *p;
		size_t piece = (size_t)data[i + 2] * 97 + 1, m;
		while ((m = zr_tls_out_peek(c, &p))) {
			m = m < piece ? m : piece;
			if (zr_tls_feed(s, p, m))
				abort();
			zr_tls_out_consume(c, m);
		}
		size_t cap = (size_t)(data[i + 2] & 0x3f) * (data[i + 2] & 0x40 ? 700 : 3) + 1;
		ssize_t r = 0;
		while (got < sent &&
		       (r = zr_tls_read(s, rx + got, cap < sizeof(rx) - got ? cap : sizeof(rx) - got)) > 0)
			got += (size_t)r;
		/* Everything written was moved: all of it must read back now. */
		if (got != sent || (r < 0 && r != -EAGAIN))
			abort();
	}
	if (memcmp(tx, rx, got))
		abort();
out:
	zr_tls_free(c);
	zr_tls_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t secret_c[48] = "fuzz client secret .............................";
	static const uint8_t secret_s[48] = "fuzz server secret .............................";
	if (!backend)
		setup();
	if (size < 2)
		return 0;
	zr_aead_alg_t alg = (zr_aead_alg_t)(data[0] & 3) % ZR_AEAD_ALG_COUNT;
	bool inner = data[0] & 4, lend = data[0] & 8;
	uint8_t sizes = data[1];
	data += 2;
	size -= 2;
	if (data[-2] & 0x10) {
		round_trip(alg, sizes, data, size, secret_c, secret_s);
		return 0;
	}
	zr_tls_t *t = zr_tls_new_established(true, backend, alg, secret_c, secret_s);
	if (!t)
		return 0;
	if (!inner) {
		if (lend) {
			zr_tls_lend(t, data, size);
			drain(t, sizes);
			if (zr_tls_unlend(t) == 0)
				drain(t, sizes);
		} else if (!zr_tls_feed(t, data, size)) {
			drain(t, sizes);
		}
		zr_tls_free(t);
		return 0;
	}
	/* The peer's write direction, kept in step with t's read key. */
	zr_record_dir_t peer = {0};
	static uint8_t rec[0x10000 + ZR_RECORD_OVERHEAD];
	if (zr_record_dir_init(&peer, backend, alg, secret_c)) {
		zr_tls_free(t);
		return 0;
	}
	while (size >= 2) {
		size_t len = (size_t)data[0] << 8 | data[1];
		data += 2;
		size -= 2;
		len = len < size ? len : size;
		ssize_t n = zr_record_seal_inner(&peer, data, len, rec, sizeof(rec));
		data += len;
		size -= len;
		if (n < 0 || zr_tls_feed(t, rec, (size_t)n))
			break;
		drain(t, sizes);
		if (t->state != ZR_TLS_ESTABLISHED)
			break;
		if (memcmp(t->rec.rd.secret, peer.secret, peer.secret_len) && zr_record_dir_update(&peer))
			break;
	}
	zr_record_dir_clear(&peer);
	zr_tls_free(t);
	return 0;
}
