/* The AEAD backends: known answers from the RFCs, batches against OpenSSL,
 * tampered records, and the start-up choice of backend. Every backend built
 * in and usable here runs the same checks. */
#include <errno.h>
#include <pthread.h>
#include <linux/tls.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crypto/aead.h"
#include "tap.h"

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	while (s[0] && s[1] && n < cap) {
		unsigned v;
		if (sscanf(s, "%2x", &v) != 1)
			break;
		out[n++] = (uint8_t)v;
		s += 2;
	}
	return n;
}

static const zr_aead_backend_t *openssl_ref;

/* TLS 1.3: the per-record nonce is the static iv XOR the sequence number,
 * left-padded to 12 bytes (RFC 8446 5.3). */
static void tls_nonce(uint8_t nonce[12], const uint8_t iv[12], uint64_t seq)
{
	memcpy(nonce, iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[11 - i] ^= (uint8_t)(seq >> (8 * i));
}

/* --- RFC 8448 section 3, "Simple 1-RTT Handshake", TLS_AES_128_GCM_SHA256:
 * whole protected records (header, ciphertext, tag) with their keys. */
typedef struct rfc8448_rec {
	const char *what;
	const char *key, *iv;
	uint64_t seq;
	const char *record;
	const char *inner; /* TLSInnerPlaintext (content + type); NULL: checked apart */
} rfc8448_rec_t;

static const rfc8448_rec_t rfc8448[] = {
	{"server handshake flight (EE, Certificate, CertificateVerify, Finished)", "3fce516009c21727d0f2e4e86ee403bc",
	 "5d313eb2671276ee13000b30", 0,
	 "17030302a2d1ff334a56f5bff6594a07cc87b580233f500f45e489e7f33af35edf7869fcf40aa40aa2b8ea73f848a7ca07612ef9f945"
	 "cb960b4068905123ea78b111b429ba9191cd05d2a389280f526134aadc7fc78c4b729df828b5ecf7b13bd9aefb0e57f271585b8ea9bb"
	 "355c7c79020716cfb9b1183ef3ab20e37d57a6b9d7477609aee6e122a4cf51427325250c7d0e509289444c9b3a648f1d71035d2ed65b"
	 "0e3cdd0cbae8bf2d0b227812cbb360987255cc744110c453baa4fcd610928d809810e4b7ed1a8fd991f06aa6248204797e36a6a73b70"
	 "a2559c09ead686945ba246ab66e5edd8044b4c6de3fcf2a89441ac66272fd8fb330ef8190579b3684596c960bd596eea520a56a8d650"
	 "f563aad27409960dca63d3e688611ea5e22f4415cf9538d51a200c27034272968a264ed6540c84838d89f72c24461aad6d26f59ecaba9"
	 "acbbb317b66d902f4f292a36ac1b639c637ce343117b659622245317b49eeda0c6258f100d7d961ffb138647e92ea330faeea6dfa31c"
	 "7a84dc3bd7e1b7a6c7178af36879018e3f252107f243d243dc7339d5684c8b0378bf30244da8c87c843f5e56eb4c5e8280a2b48052cf"
	 "93b16499a66db7cca71e4599426f7d461e66f99882bd89fc50800becca62d6c74116dbd2972fda1fa80f85df881edbe5a37668936b33"
	 "5583b599186dc5c6918a396fa48a181d6b6fa4f9d62d513afbb992f2b992f67f8afe67f76913fa388cb5630c8ca01e0c65d11c66a1e2a"
	 "c4c85977b7c7a6999bbf10dc35ae69f5515614636c0b9b68c19ed2e31c0b3b66763038ebba42f3b38edc0399f3a9f23faa63978c317f"
	 "c9fa66a73f60f0504de93b5b845e275592c12335ee340bbc4fddd502784016e4b3be7ef04dda49f4b440a30cb5d2af939828fd4ae379"
	 "4e44f94df5a631ede42c1719bfdabf0253fe5175be898e750edc53370d2b",
	 NULL},
	{"client Finished", "dbfaa693d1762c5b666af5d950258d01", "5bd3c71b836e0b76bb73265f", 0,
	 "170303003575ec4dc238cce60b298044a71e219c56cc77b0517fe9b93c7a4bfc44d87f38f80338ac98fc46deb384bd1caeacab6867d7"
	 "26c40546",
	 "14000020a8ec436d677634ae525ac1fcebe11a039ec17694fac6e98527b642f2edd5ce6116"},
	{"client application data", "17422dda596ed5d9acd890e3c63f5051", "5b78923dee08579033e523d9", 0,
	 "1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b395bd54a9a20441e2b62974e1f5a62"
	 "92a2977014bd1e3deae63aeebb21694915e4",
	 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303117"},
	{"server application data (seq 1)", "9f02283b6c9c07efc26bb9f2ac92e356", "cf782b88dd83549aadf1e984", 1,
	 "17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6dffc602dcb501a59a8fcc49c4bf2e5"
	 "f0a21c0047c2abf332540dd032e167c2955d",
	 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303117"},
	{"server close_notify alert (seq 2)", "9f02283b6c9c07efc26bb9f2ac92e356", "cf782b88dd83549aadf1e984", 2,
	 "1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9", "010015"},
};

/* The server's Finished verify_data (RFC 8448 section 3), which ends the
 * decrypted flight, before the content type byte. */
static const char server_finished[] = "140000209b9b141d906337fbd2cbdce71df4deda4ab42c309572cb7fffee5454b78f071816";

static void kat_rfc8448(const zr_aead_backend_t *b)
{
	for (size_t v = 0; v < sizeof(rfc8448) / sizeof(rfc8448[0]); v++) {
		const rfc8448_rec_t *t = &rfc8448[v];
		uint8_t key[16], iv[12], record[1024], inner[1024], out[1024], tag[16];
		unhex(t->key, key, sizeof(key));
		unhex(t->iv, iv, sizeof(iv));
		size_t rlen = unhex(t->record, record, sizeof(record));
		size_t clen = rlen - 5 - 16;

		zr_aead_key_t *k;
		if (zr_aead_key_new(b, ZR_AEAD_AES_128_GCM, key, &k) != 0) {
			ok(false, "%s: RFC 8448 %s: key", b->name, t->what);
			continue;
		}
		zr_aead_rec_t r = {.in = record + 5,
				   .out = out,
				   .len = clen,
				   .aad = record,
				   .aad_len = 5,
				   .tag = record + 5 + clen};
		tls_nonce(r.nonce, iv, t->seq);
		int rc = zr_aead_open(k, &r, 1);
		bool right;
		if (t->inner) {
			size_t ilen = unhex(t->inner, inner, sizeof(inner));
			right = ilen == clen && memcmp(out, inner, ilen) == 0;
		} else {
			size_t flen = unhex(server_finished, inner, sizeof(inner));
			right = memcmp(out, "\x08\x00\x00\x24", 4) == 0 && /* EncryptedExtensions */
				memcmp(out + clen - flen, inner, flen) == 0;
			memcpy(inner, out, clen);
		}
		ok(rc == 0 && r.status == 0 && right, "%s: RFC 8448 %s opens to the RFC's plaintext", b->name, t->what);

		/* and sealing that plaintext gives the RFC's record, byte for byte */
		memset(out, 0, sizeof(out));
		zr_aead_rec_t s = {.in = inner, .out = out, .len = clen, .aad = record, .aad_len = 5, .tag = tag};
		tls_nonce(s.nonce, iv, t->seq);
		rc = zr_aead_seal(k, &s, 1);
		ok(rc == 0 && memcmp(out, record + 5, clen) == 0 && memcmp(tag, record + 5 + clen, 16) == 0,
		   "%s: RFC 8448 %s seals to the RFC's record", b->name, t->what);
		zr_aead_key_free(k);
	}
}

/* --- single-shot AEAD vectors: McGrew & Viega GCM test case 16 (AES-256,
 * 60-byte plaintext, 20-byte AAD) and RFC 8439 section 2.8.2. */
typedef struct aead_kat {
	zr_aead_alg_t alg;
	const char *what, *key, *nonce, *aad, *plain, *cipher, *tag;
} aead_kat_t;

static const aead_kat_t kats[] = {
	{ZR_AEAD_AES_256_GCM, "GCM spec test case 16",
	 "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
	 "feedfacedeadbeeffeedfacedeadbeefabaddad2",
	 "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de6"
	 "57ba637b39",
	 "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a"
	 "0abcc9f662",
	 "76fc6ece0f4e1768cddf8853bb2d551b"},
	{ZR_AEAD_CHACHA20_POLY1305, "RFC 8439 2.8.2",
	 "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f", "070000004041424344454647",
	 "50515253c0c1c2c3c4c5c6c7",
	 /* "Ladies and Gentlemen of the class of '99: If I could offer you
	  * only one tip for the future, sunscreen would be it." */
	 "4c616469657320616e642047656e746c656d656e206f662074686520636c617373206f66202739393a204966204920636f756c64206f"
	 "6666657220796f75206f6e6c79206f6e652074697020666f7220746865206675747572652c2073756e73637265656e20776f756c6420"
	 "62652069742e",
	 "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b"
	 "2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586ce"
	 "c64b6116",
	 "1ae10b594f09e26a7e902ecbd0600691"},
};

static void kat_aead(const zr_aead_backend_t *b)
{
	for (size_t v = 0; v < sizeof(kats) / sizeof(kats[0]); v++) {
		const aead_kat_t *t = &kats[v];
		if (!b->supports(t->alg)) {
			skip("backend does not do this algorithm here");
			skip("backend does not do this algorithm here");
			continue;
		}
		uint8_t key[32], aad[32], plain[256], cipher[256], tag[16], out[256], got_tag[16];
		zr_aead_rec_t r = {.out = out, .aad = aad, .tag = got_tag};
		unhex(t->key, key, sizeof(key));
		unhex(t->nonce, r.nonce, sizeof(r.nonce));
		r.aad_len = unhex(t->aad, aad, sizeof(aad));
		size_t n = unhex(t->plain, plain, sizeof(plain));
		unhex(t->cipher, cipher, sizeof(cipher));
		unhex(t->tag, tag, sizeof(tag));
		zr_aead_key_t *k;
		if (zr_aead_key_new(b, t->alg, key, &k) != 0) {
			ok(false, "%s: %s: key", b->name, t->what);
			continue;
		}
		r.in = plain;
		r.len = n;
		int rc = zr_aead_seal(k, &r, 1);
		ok(rc == 0 && memcmp(out, cipher, n) == 0 && memcmp(got_tag, tag, 16) == 0, "%s: %s %s seals", b->name,
		   zr_aead_alg_name(t->alg), t->what);
		r.in = cipher;
		r.tag = tag;
		memset(out, 0, sizeof(out));
		rc = zr_aead_open(k, &r, 1);
		ok(rc == 0 && r.status == 0 && memcmp(out, plain, n) == 0, "%s: %s %s opens", b->name,
		   zr_aead_alg_name(t->alg), t->what);
		zr_aead_key_free(k);
	}
}

/* --- batches of random records, checked against the openssl backend */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}
static void fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}

#define REC_MAX (16384 + 1) /* a full TLSInnerPlaintext: 2^14 bytes + type */
#define NREC	150

typedef struct batch {
	zr_aead_rec_t rec[NREC];
	uint8_t *plain[NREC], *buf[NREC], *ref[NREC];
	uint8_t aad[NREC][5], tag[NREC][16], ref_tag[NREC][16];
} batch_t;

static batch_t B;

static size_t pick_len(void)
{
	switch (rnd() % 8) {
	case 0:
		return 0;
	case 1:
		return REC_MAX;
	case 2:
		return 1 + rnd() % 64;
	default:
		return rnd() % (REC_MAX + 1);
	}
}

/* Seals n random records with b (in place or not), compares each with what
 * openssl makes of the same record, then opens them with b. */
static bool round_trip(const zr_aead_backend_t *b, zr_aead_alg_t alg, size_t n, bool in_place, char *why, size_t cap)
{
	uint8_t key[32];
	fill(key, sizeof(key));
	zr_aead_key_t *k, *ref;
	if (zr_aead_key_new(b, alg, key, &k) || zr_aead_key_new(openssl_ref, alg, key, &ref)) {
		snprintf(why, cap, "key");
		return false;
	}
	bool good = true;
	for (size_t i = 0; i < n; i++) {
		size_t len = pick_len();
		fill(B.plain[i], len);
		fill(B.aad[i], 5);
		zr_aead_rec_t *r = &B.rec[i];
		*r = (zr_aead_rec_t){.len = len, .aad = B.aad[i], .aad_len = 5, .tag = B.ref_tag[i], .status = 99};
		fill(r->nonce, sizeof(r->nonce));
		r->in = B.plain[i];
		r->out = B.ref[i];
	}
	if (zr_aead_seal(ref, B.rec, n) != 0) {
		snprintf(why, cap, "openssl seal");
		good = false;
	}
	for (size_t i = 0; i < n; i++) {
		zr_aead_rec_t *r = &B.rec[i];
		r->tag = B.tag[i];
		r->status = 99;
		if (in_place) {
			memcpy(B.buf[i], B.plain[i], r->len);
			r->in = B.buf[i];
		}
		r->out = B.buf[i];
	}
	int rc = zr_aead_seal(k, B.rec, n);
	for (size_t i = 0; good && i < n; i++) {
		zr_aead_rec_t *r = &B.rec[i];
		if (rc || r->status || memcmp(B.buf[i], B.ref[i], r->len) || memcmp(B.tag[i], B.ref_tag[i], 16)) {
			snprintf(why, cap, "record %zu (%zu bytes) seals differently from openssl (rc %d, status %d)",
				 i, r->len, rc, r->status);
			good = false;
		}
	}
	for (size_t i = 0; i < n; i++) {
		zr_aead_rec_t *r = &B.rec[i];
		r->status = 99;
		if (in_place) {
			r->in = B.buf[i];
			r->out = B.buf[i];
		} else {
			r->in = B.ref[i];
			r->out = B.buf[i];
			memset(B.buf[i], 0, r->len);
		}
	}
	rc = zr_aead_open(k, B.rec, n);
	for (size_t i = 0; good && i < n; i++) {
		zr_aead_rec_t *r = &B.rec[i];
		if (rc || r->status || memcmp(B.buf[i], B.plain[i], r->len)) {
			snprintf(why, cap, "record %zu (%zu bytes) does not open (rc %d, status %d)", i, r->len, rc,
				 r->status);
			good = false;
		}
	}
	zr_aead_key_free(k);
	zr_aead_key_free(ref);
	return good;
}

static void batches(const zr_aead_backend_t *b)
{
	for (int alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++) {
		if (!b->supports(alg) || !openssl_ref->supports(alg)) {
			skip("algorithm not done here");
			continue;
		}
		char why[200] = "";
		bool good = true;
		size_t sizes[] = {1, 2, 7, 32, 63, 64, 65, NREC};
		for (size_t s = 0; good && s < sizeof(sizes) / sizeof(sizes[0]); s++)
			for (int in_place = 0; good && in_place < 2; in_place++)
				good = round_trip(b, alg, sizes[s], in_place, why, sizeof(why));
		for (int i = 0; good && i < 6; i++)
			good = round_trip(b, alg, 1 + rnd() % 64, rnd() & 1, why, sizeof(why));
		ok(good, "%s: %s batches of 1..%d records of 0..%d bytes, in place and not, match openssl and open",
		   b->name, zr_aead_alg_name(alg), NREC, REC_MAX);
		if (!good)
			diag("%s", why);
	}
}

/* --- a record altered on the way is refused, alone: the rest of its batch
 * opens */
static void tampering(const zr_aead_backend_t *b)
{
	for (int alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++) {
		if (!b->supports(alg)) {
			skip("algorithm not done here");
			continue;
		}
		enum {
			N = 9
		};
		uint8_t key[32];
		fill(key, sizeof(key));
		zr_aead_key_t *k;
		if (zr_aead_key_new(b, alg, key, &k) != 0) {
			ok(false, "%s: key", b->name);
			continue;
		}
		for (size_t i = 0; i < N; i++) {
			size_t len = 1 + rnd() % 3000;
			fill(B.plain[i], len);
			fill(B.aad[i], 5);
			B.rec[i] = (zr_aead_rec_t){.in = B.plain[i],
						   .out = B.buf[i],
						   .len = len,
						   .aad = B.aad[i],
						   .aad_len = 5,
						   .tag = B.tag[i]};
			fill(B.rec[i].nonce, 12);
		}
		int rc = zr_aead_seal(k, B.rec, N);
		/* record 1: ciphertext bit; 4: tag bit; 7: AAD bit */
		B.buf[1][B.rec[1].len / 2] ^= 0x10;
		B.tag[4][15] ^= 0x01;
		B.aad[7][3] ^= 0x80;
		for (size_t i = 0; i < N; i++) {
			B.rec[i].in = B.buf[i];
			B.rec[i].status = 99;
		}
		int orc = zr_aead_open(k, B.rec, N);
		bool rest = true, refused = true, nothing_left = true;
		for (size_t i = 0; i < N; i++) {
			bool bad = i == 1 || i == 4 || i == 7;
			if (bad) {
				refused &= B.rec[i].status == -EBADMSG;
				nothing_left &= memcmp(B.buf[i], B.plain[i], B.rec[i].len) != 0;
			} else {
				rest &= B.rec[i].status == 0 && memcmp(B.buf[i], B.plain[i], B.rec[i].len) == 0;
			}
		}
		ok(rc == 0 && orc == -EBADMSG && refused,
		   "%s: %s: a flipped bit in ciphertext, tag or AAD fails that record with -EBADMSG", b->name,
		   zr_aead_alg_name(alg));
		ok(rest, "%s: %s: the other records of the batch open", b->name, zr_aead_alg_name(alg));
		ok(nothing_left, "%s: %s: a refused record leaves no plaintext behind", b->name, zr_aead_alg_name(alg));

		/* alone in its batch (backends take another path for one) */
		B.rec[4].in = B.rec[4].out = B.buf[4];
		B.rec[4].status = 99;
		orc = zr_aead_open(k, &B.rec[4], 1);
		ok(orc == -EBADMSG && B.rec[4].status == -EBADMSG,
		   "%s: %s: a lone record with a flipped tag bit is refused", b->name, zr_aead_alg_name(alg));
		zr_aead_key_free(k);
	}
}

/* --- seals of two runs of plaintext (in, then in2) against one-run seals
 * of the concatenation on the same backend: same ciphertext, same tag. The
 * record layer seals content || type this way. Batches of TWO_N records,
 * in2 in a buffer of its own (a backend reading in[len..] instead would
 * show). */
enum {
	TWO_N = 64,
	TWO_MAX = 16385 + 17
};

static void two_segments(const zr_aead_backend_t *b)
{
	static const size_t len2s[] = {0, 1, 17};
	uint8_t *plain = malloc(TWO_MAX);
	uint8_t *out = malloc((size_t)TWO_N * TWO_MAX), *ref = malloc((size_t)TWO_N * TWO_MAX);
	uint8_t second[TWO_N][17], tag[TWO_N][16], ref_tag[TWO_N][16], aad[5] = {23, 3, 3, 0, 0}, key[32];
	zr_aead_rec_t recs[TWO_N], refs[TWO_N];
	if (!plain || !out || !ref) {
		ok(false, "%s: two runs: out of memory", b->name);
		goto out;
	}
	for (size_t i = 0; i < TWO_MAX; i++)
		plain[i] = (uint8_t)(i * 131 + 7);
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(0x5a ^ i);
	for (zr_aead_alg_t alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++) {
		zr_aead_key_t *k = NULL;
		char why[128];
		if (!b->supports(alg) || zr_aead_key_new(b, alg, key, &k) != 0) {
			snprintf(why, sizeof(why), "%s: %s not supported here", b->name, zr_aead_alg_name(alg));
			skip(why);
			continue;
		}
		if (!zr_aead_two_segments(k)) {
			snprintf(why, sizeof(why), "%s: %s: no seals of two runs", b->name, zr_aead_alg_name(alg));
			skip(why);
			zr_aead_key_free(k);
			continue;
		}
		for (size_t l2 = 0; l2 < sizeof(len2s) / sizeof(len2s[0]); l2++) {
			size_t len2 = len2s[l2], bad = SIZE_MAX;
			bool good = true;
			for (size_t first = 0; first <= 16385 && good; first += TWO_N) {
				size_t n = 16385 - first + 1 < TWO_N ? 16385 - first + 1 : TWO_N;
				for (size_t i = 0; i < n; i++) {
					size_t len = first + i;
					memcpy(second[i], plain + len, len2);
					recs[i] = (zr_aead_rec_t){.in = plain,
								  .out = out + i * TWO_MAX,
								  .len = len,
								  .in2 = len2 ? second[i] : NULL,
								  .len2 = len2,
								  .aad = aad,
								  .aad_len = 5,
								  .tag = tag[i]};
					tls_nonce(recs[i].nonce, key, len);
					refs[i] = (zr_aead_rec_t){.in = plain,
								  .out = ref + i * TWO_MAX,
								  .len = len + len2,
								  .aad = aad,
								  .aad_len = 5,
								  .tag = ref_tag[i]};
					memcpy(refs[i].nonce, recs[i].nonce, 12);
				}
				good = zr_aead_seal(k, recs, n) == 0 && zr_aead_seal(k, refs, n) == 0;
				for (size_t i = 0; good && i < n; i++) {
					size_t len = first + i;
					if (memcmp(out + i * TWO_MAX, ref + i * TWO_MAX, len + len2) != 0 ||
					    memcmp(tag[i], ref_tag[i], 16) != 0) {
						good = false;
						bad = len;
					}
				}
			}
			ok(good, "%s: %s: seal of in[0..len) || in2[0..%zu) = seal of the concatenation, len 0..16385",
			   b->name, zr_aead_alg_name(alg), len2);
			if (!good)
				diag("first mismatch at len %zu (SIZE_MAX: the seal failed)", bad);
		}
		zr_aead_rec_t r = {.in = ref,
				   .out = out,
				   .len = 16,
				   .in2 = second[0],
				   .len2 = 1,
				   .aad = aad,
				   .aad_len = 5,
				   .tag = ref_tag[0]};
		ok(zr_aead_open(k, &r, 1) == -EINVAL, "%s: %s: open refuses a second run", b->name,
		   zr_aead_alg_name(alg));
		zr_aead_key_free(k);
	}
out:
	free(plain);
	free(out);
	free(ref);
}

/* --- several worker threads at once, each with its own per-thread state
 * (an IMB_MGR, a DPDK queue pair): what one seals, openssl opens. */
typedef struct worker {
	const zr_aead_backend_t *b;
	zr_aead_alg_t alg;
	unsigned seed;
	bool good;
} worker_t;

static void *worker_main(void *arg)
{
	worker_t *w = arg;
	enum {
		N = 48,
		LEN = 4096
	};
	struct bufs {
		uint8_t plain[N][LEN], ct[N][LEN], back[N][LEN], tag[N][16], aad[N][5];
	} *m = malloc(sizeof(*m));
	uint8_t(*plain)[LEN] = m->plain, (*ct)[LEN] = m->ct, (*back)[LEN] = m->back, (*tag)[16] = m->tag,
	(*aad)[5] = m->aad;
	zr_aead_rec_t recs[N];
	uint8_t key[32];
	if (!m) {
		w->good = false;
		return NULL;
	}
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(w->seed * 13 + i);
	zr_aead_key_t *k = NULL, *ref = NULL;
	w->good = zr_aead_key_new(w->b, w->alg, key, &k) == 0 && zr_aead_key_new(openssl_ref, w->alg, key, &ref) == 0;
	for (int round = 0; w->good && round < 20; round++) {
		for (int i = 0; i < N; i++) {
			size_t len = (size_t)((w->seed * 7919u + (unsigned)round * 104729u + (unsigned)i * 31u) % LEN);
			for (size_t j = 0; j < len; j++)
				plain[i][j] = (uint8_t)(j + (size_t)i + w->seed);
			memset(aad[i], i, 5);
			recs[i] = (zr_aead_rec_t){
				.in = plain[i], .out = ct[i], .len = len, .aad = aad[i], .aad_len = 5, .tag = tag[i]};
			memset(recs[i].nonce, round, 12);
			recs[i].nonce[0] = (uint8_t)w->seed;
		}
		if (zr_aead_seal(k, recs, N) != 0) {
			w->good = false;
			break;
		}
		for (int i = 0; i < N; i++) {
			recs[i].in = ct[i];
			recs[i].out = back[i];
		}
		if (zr_aead_open(ref, recs, N) != 0)
			w->good = false;
		for (int i = 0; w->good && i < N; i++)
			w->good = memcmp(back[i], plain[i], recs[i].len) == 0;
	}
	zr_aead_key_free(k);
	zr_aead_key_free(ref);
	zr_aead_thread_cleanup();
	free(m);
	return NULL;
}

static void threads(const zr_aead_backend_t *b)
{
	enum {
		T = 4
	};
	worker_t w[T];
	pthread_t th[T];
	bool started = true, good = true;
	for (unsigned i = 0; i < T; i++) {
		w[i] = (worker_t){.b = b, .alg = ZR_AEAD_AES_128_GCM, .seed = i + 1};
		started &= pthread_create(&th[i], NULL, worker_main, &w[i]) == 0;
	}
	for (unsigned i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		good &= w[i].good;
	}
	ok(started && good, "%s: %d threads at once seal batches that openssl opens", b->name, T);
}

static zr_record_crypto_t choice_of(const char *name)
{
	if (strcmp(name, "ipsec-mb") == 0)
		return ZR_RECORD_CRYPTO_IPSEC_MB;
	if (strcmp(name, "dpdk") == 0)
		return ZR_RECORD_CRYPTO_DPDK;
	return ZR_RECORD_CRYPTO_OPENSSL;
}

/* Selects openssl with a provider in a child process: OpenSSL 3.0 leaks at
 * exit once a provider load has failed, or once the legacy provider is
 * loaded, whatever the program does (reproduced with OpenSSL alone), and
 * sanitizer builds would report it; the child's _exit skips that. True when
 * the outcome is the one expected (a failure must name the provider). */
static bool openssl_provider_in_child(const char *provider, bool should_load)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		const zr_aead_backend_t *b;
		char err[512], want[128];
		int rc = zr_aead_select(ZR_RECORD_CRYPTO_OPENSSL, provider, &b, err, sizeof(err));
		snprintf(want, sizeof(want), "OpenSSL provider '%s' could not be loaded: ", provider);
		printf("# %s: %s\n", provider, rc == 0 ? b->describe() : err);
		fflush(stdout);
		_exit(should_load ? rc != 0 || b != openssl_ref : rc == 0 || !strstr(err, want));
	}
	int status = 0;
	return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void selection(void)
{
	const zr_aead_backend_t *b;
	char err[256] = "";
	int rc = zr_aead_select(ZR_RECORD_CRYPTO_AUTO, NULL, &b, err, sizeof(err));
	if (zr_aead_backend_find("ipsec-mb") && __builtin_cpu_supports("aes"))
		ok(rc == 0 && b && strcmp(b->name, "ipsec-mb") == 0, "auto picks ipsec-mb on a CPU with AES-NI (%s)",
		   rc == 0 ? b->describe() : err);
	else
		ok(rc == 0 && b && strcmp(b->name, "openssl") == 0, "auto picks openssl without ipsec-mb or AES-NI");

	if (!zr_aead_backend_find("dpdk")) {
		rc = zr_aead_select(ZR_RECORD_CRYPTO_DPDK, NULL, &b, err, sizeof(err));
		ok(rc < 0 && strstr(err, "'dpdk' is not built in") && strstr(err, "-Ddpdk=enabled"),
		   "dpdk in a build without it names the rebuild option");
		diag("%s", err);
	} else {
		skip("dpdk is built in");
	}

	char why[200];
	if (!zr_ktls_available(why, sizeof(why))) {
		rc = zr_aead_select(ZR_RECORD_CRYPTO_KTLS, NULL, &b, err, sizeof(err));
		ok(rc < 0 && strstr(err, "kernel TLS") && strstr(err, "tls ULP"),
		   "ktls without the tls ULP is an error naming it");
		diag("%s", err);
	} else {
		rc = zr_aead_select(ZR_RECORD_CRYPTO_KTLS, NULL, &b, err, sizeof(err));
		ok(rc == 0 && b == NULL, "ktls with the tls ULP selects no AEAD backend");
	}

	ok(openssl_provider_in_child("no-such-provider", false),
	   "openssl with a provider that does not exist fails and names it");
	ok(openssl_provider_in_child("legacy", true), "openssl with the legacy provider loads");
}

static void ktls_info(void)
{
	uint8_t key[32], iv[12];
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(0xa0 + i);
	for (int i = 0; i < 12; i++)
		iv[i] = (uint8_t)(0x10 + i);
	struct tls12_crypto_info_aes_gcm_128 g128;
	int n = zr_ktls_crypto_info(ZR_AEAD_AES_128_GCM, key, iv, 0x0102030405060708ull, &g128, sizeof(g128));
	ok(n == (int)sizeof(g128) && g128.info.version == TLS_1_3_VERSION &&
		   g128.info.cipher_type == TLS_CIPHER_AES_GCM_128 && memcmp(g128.salt, iv, 4) == 0 &&
		   memcmp(g128.iv, iv + 4, 8) == 0 && memcmp(g128.key, key, 16) == 0 &&
		   memcmp(g128.rec_seq, "\x01\x02\x03\x04\x05\x06\x07\x08", 8) == 0,
	   "kTLS AES-128-GCM info: salt = iv[0..4], iv = iv[4..12], key, big-endian seq");
	struct tls12_crypto_info_aes_gcm_256 g256;
	n = zr_ktls_crypto_info(ZR_AEAD_AES_256_GCM, key, iv, 7, &g256, sizeof(g256));
	ok(n == (int)sizeof(g256) && g256.info.cipher_type == TLS_CIPHER_AES_GCM_256 &&
		   memcmp(g256.key, key, 32) == 0 && memcmp(g256.salt, iv, 4) == 0 && g256.rec_seq[7] == 7,
	   "kTLS AES-256-GCM info");
	struct tls12_crypto_info_chacha20_poly1305 c;
	n = zr_ktls_crypto_info(ZR_AEAD_CHACHA20_POLY1305, key, iv, 0, &c, sizeof(c));
	ok(n == (int)sizeof(c) && c.info.cipher_type == TLS_CIPHER_CHACHA20_POLY1305 && memcmp(c.iv, iv, 12) == 0 &&
		   memcmp(c.key, key, 32) == 0,
	   "kTLS ChaCha20-Poly1305 info: the whole iv, no salt");
	ok(zr_ktls_crypto_info(ZR_AEAD_AES_256_GCM, key, iv, 0, &g128, sizeof(g128)) == -EINVAL,
	   "kTLS info refuses a buffer too small");
}

int main(void)
{
	for (size_t i = 0; i < NREC; i++) {
		B.plain[i] = malloc(REC_MAX);
		B.buf[i] = malloc(REC_MAX);
		B.ref[i] = malloc(REC_MAX);
	}
	const zr_aead_backend_t *b;
	char err[256];
	if (zr_aead_select(ZR_RECORD_CRYPTO_OPENSSL, NULL, &openssl_ref, err, sizeof(err)) != 0)
		skip_all(err);

	unsigned usable = 0;
	for (size_t i = 0; zr_aead_backends[i]; i++) {
		const char *name = zr_aead_backends[i]->name;
		if (zr_aead_select(choice_of(name), NULL, &b, err, sizeof(err)) != 0) {
			printf("ok %u # SKIP %s: %s\n", ++tap_run, name, err);
			continue;
		}
		usable++;
		diag("backend %s: %s", name, b->describe());
		kat_rfc8448(b);
		kat_aead(b);
		batches(b);
		tampering(b);
		two_segments(b);
		threads(b);
	}
	if (!usable)
		skip_all("no AEAD backend is usable here");
	selection();
	ktls_info();
	zr_aead_thread_cleanup();
	for (size_t i = 0; i < NREC; i++) {
		free(B.plain[i]);
		free(B.buf[i]);
		free(B.ref[i]);
	}
	return done_testing();
}
