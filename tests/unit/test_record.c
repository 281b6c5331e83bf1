/* zring's TLS 1.3 record layer: the key schedule and records of RFC 8448
 * section 3 (Simple 1-RTT Handshake), then two established endpoints on
 * every usable AEAD backend: bulk data, padding, KeyUpdate, and the alerts a
 * malformed record draws. The records from the RFC authenticate only if
 * every byte and the derived keys are right, so the vectors check
 * themselves. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "crypto/aead.h"
#include "crypto/record.h"
#include "crypto/tls-int.h"
#include "io/log.h"
#include "tap.h"
#include "tls_poll.h"

/* RFC 8448 section 3: traffic secrets, keys and IVs. */
#define S_HS	 "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38"
#define S_HS_KEY "3fce516009c21727d0f2e4e86ee403bc"
#define S_HS_IV	 "5d313eb2671276ee13000b30"
#define C_HS	 "b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21"
#define C_HS_KEY "dbfaa693d1762c5b666af5d950258d01"
#define C_HS_IV	 "5bd3c71b836e0b76bb73265f"
#define C_AP	 "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5"
#define C_AP_KEY "17422dda596ed5d9acd890e3c63f5051"
#define C_AP_IV	 "5b78923dee08579033e523d9"
#define S_AP	 "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643"
#define S_AP_KEY "9f02283b6c9c07efc26bb9f2ac92e356"
#define S_AP_IV	 "cf782b88dd83549aadf1e984"

/* {server} EncryptedExtensions, Certificate, CertificateVerify, Finished:
 * the record (server handshake keys, sequence 0) and its 657-byte payload. */
static const char srv_hs_record[] =
	"17030302a2"
	"d1ff334a56f5bff6594a07cc87b580233f500f45e489e7f33af35edf7869fcf40aa40aa2b8ea73f848a7ca07612ef9f945cb960b40"
	"68905123ea78b111b429ba9191cd05d2a389280f526134aadc7fc78c4b729df828b5ecf7b13bd9aefb0e57f271585b8ea9bb355c7c"
	"79020716cfb9b1183ef3ab20e37d57a6b9d7477609aee6e122a4cf51427325250c7d0e509289444c9b3a648f1d71035d2ed65b0e3c"
	"dd0cbae8bf2d0b227812cbb360987255cc744110c453baa4fcd610928d809810e4b7ed1a8fd991f06aa6248204797e36a6a73b70a2"
	"559c09ead686945ba246ab66e5edd8044b4c6de3fcf2a89441ac66272fd8fb330ef8190579b3684596c960bd596eea520a56a8d650"
	"f563aad27409960dca63d3e688611ea5e22f4415cf9538d51a200c27034272968a264ed6540c84838d89f72c24461aad6d26f59eca"
	"ba9acbbb317b66d902f4f292a36ac1b639c637ce343117b659622245317b49eeda0c6258f100d7d961ffb138647e92ea330faeea6d"
	"fa31c7a84dc3bd7e1b7a6c7178af36879018e3f252107f243d243dc7339d5684c8b0378bf30244da8c87c843f5e56eb4c5e8280a2b"
	"48052cf93b16499a66db7cca71e4599426f7d461e66f99882bd89fc50800becca62d6c74116dbd2972fda1fa80f85df881edbe5a37"
	"668936b335583b599186dc5c6918a396fa48a181d6b6fa4f9d62d513afbb992f2b992f67f8afe67f76913fa388cb5630c8ca01e0c6"
	"5d11c66a1e2ac4c85977b7c7a6999bbf10dc35ae69f5515614636c0b9b68c19ed2e31c0b3b66763038ebba42f3b38edc0399f3a9f2"
	"3faa63978c317fc9fa66a73f60f0504de93b5b845e275592c12335ee340bbc4fddd502784016e4b3be7ef04dda49f4b440a30cb5d2"
	"af939828fd4ae3794e44f94df5a631ede42c1719bfdabf0253fe5175be898e750edc53370d2b";
static const char srv_hs_plain[] =
	"080000240022000a00140012001d00170018001901000101010201030104001c00024001000000000b0001b9000001b50001b03082"
	"01ac30820115a003020102020102300d06092a864886f70d01010b0500300e310c300a06035504031303727361301e170d31363037"
	"33303031323335395a170d3236303733303031323335395a300e310c300a0603550403130372736130819f300d06092a864886f70d"
	"010101050003818d0030818902818100b4bb498f8279303d980836399b36c6988c0c68de55e1bdb826d3901a2461eafd2de49a91d0"
	"15abbc9a95137ace6c1af19eaa6af98c7ced43120998e187a80ee0ccb0524b1b018c3e0b63264d449a6d38e22a5fda430846748030"
	"530ef0461c8ca9d9efbfae8ea6d1d03e2bd193eff0ab9a8002c47428a6d35a8d88d79f7f1e3f0203010001a31a301830090603551d"
	"1304023000300b0603551d0f0404030205a0300d06092a864886f70d01010b05000381810085aad2a0e5b9276b908c65f73a726717"
	"0618a54c5f8a7b337d2df7a594365417f2eae8f8a58c8f8172f9319cf36b7fd6c55b80f21a03015156726096fd335e5e67f2dbf102"
	"702e608ccae6bec1fc63a42a99be5c3eb7107c3c54e9b9eb2bd5203b1c3b84e0a8b2f759409ba3eac9d91d402dcc0cc8f8961229ac"
	"9187b42b4de100000f000084080400805a747c5d88fa9bd2e55ab085a61015b7211f824cd484145ab3ff52f1fda8477b0b7abc90db"
	"78e2d33a5c141a078653fa6bef780c5ea248eeaaa785c4f394cab6d30bbe8d4859ee511f602957b15411ac027671459e46445c9ea5"
	"8c181e818e95b8c3fb0bf3278409d3be152a3da5043e063dda65cdf5aea20d53dfacd42f74f3140000209b9b141d906337fbd2cbdc"
	"e71df4deda4ab42c309572cb7fffee5454b78f0718";
/* {client} Finished under the client handshake keys, sequence 0. */
static const char cli_finished_record[] =
	"1703030035"
	"75ec4dc238cce60b298044a71e219c56cc77b0517fe9b93c7a4bfc44d87f38f80338ac98fc46deb384bd1caeacab6867d726c40546";
static const char cli_finished_plain[] = "14000020a8ec436d677634ae525ac1fcebe11a039ec17694fac6e98527b642f2edd5ce61";
/* {server} NewSessionTicket, application keys, sequence 0. */
static const char srv_ticket_record[] =
	"17030300de"
	"3a6b8f90414a97d6959c3487680de5134a2b240e6cffac116e95d41d6af8f6b580dcf3d11d63c758db289a015940252f55713e061d"
	"c13e078891a38efbcf5753ad8ef170ad3c7353d16d9da773b9ca7f2b9fa1b6c0d4a3d03f75e09c30ba1e62972ac46f75f7b981be63"
	"439b2999ce13064615139891d5e4c5b406f16e3fc181a77ca475840025db2f0a77f81b5ab05b94c01346755f69232c86519d86cbee"
	"ac87aac347d143f9605d64f650db4d023e70e952ca49fe5137121c74bc2697687e248746d6df353005f3bce18696129c8153556b3b"
	"6c6779b37bf15985684f";
/* Fifty bytes 00..31 each way, then close_notify each way. */
static const char cli_data_record[] = "1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b39"
				      "5bd54a9a20441e2b62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4";
static const char cli_alert_record[] = "1703030013c9872760655666b74d7ff1153efd6db6d0b0e3";
static const char srv_data_record[] = "17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6"
				      "dffc602dcb501a59a8fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d";
static const char srv_alert_record[] = "1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9";

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	for (; s[0] && s[1] && n < cap; s += 2) {
		unsigned v;
		if (sscanf(s, "%2x", &v) != 1)
			break;
		out[n++] = (uint8_t)v;
	}
	return n;
}

static bool same_hex(const uint8_t *p, size_t len, const char *hex)
{
	uint8_t want[4096];
	size_t n = unhex(hex, want, sizeof(want));
	return n == len && !memcmp(p, want, n);
}

/* HKDF-Expand-Label through another path than the record layer's:
 * EVP_PKEY's HKDF, the label built here. */
static bool ref_expand_label(const char *md, const uint8_t *secret, size_t secret_len, const char *label, uint8_t *out,
			     size_t out_len)
{
	uint8_t info[300];
	size_t n = 0, l = strlen(label);
	info[n++] = (uint8_t)(out_len >> 8);
	info[n++] = (uint8_t)out_len;
	info[n++] = (uint8_t)(6 + l);
	memcpy(info + n, "tls13 ", 6);
	memcpy(info + n + 6, label, l);
	n += 6 + l;
	info[n++] = 0;
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
	size_t len = out_len;
	bool ok = pc && EVP_PKEY_derive_init(pc) > 0 &&
		  EVP_PKEY_CTX_set_hkdf_mode(pc, EVP_PKEY_HKDEF_MODE_EXPAND_ONLY) > 0 &&
		  EVP_PKEY_CTX_set_hkdf_md(pc, EVP_get_digestbyname(md)) > 0 &&
		  EVP_PKEY_CTX_set1_hkdf_key(pc, secret, (int)secret_len) > 0 &&
		  EVP_PKEY_CTX_add1_hkdf_info(pc, info, (int)n) > 0 && EVP_PKEY_derive(pc, out, &len) > 0 &&
		  len == out_len;
	EVP_PKEY_CTX_free(pc);
	return ok;
}

static void test_key_schedule(void)
{
	static const struct {
		const char *name, *secret, *key, *iv;
	} v[] = {
		{"server handshake", S_HS, S_HS_KEY, S_HS_IV},
		{"client handshake", C_HS, C_HS_KEY, C_HS_IV},
		{"client application", C_AP, C_AP_KEY, C_AP_IV},
		{"server application", S_AP, S_AP_KEY, S_AP_IV},
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint8_t secret[32], key[16], iv[12];
		unhex(v[i].secret, secret, sizeof(secret));
		ok(!zr_tls13_hkdf_expand_label("SHA256", secret, 32, "key", NULL, 0, key, 16) &&
			   same_hex(key, 16, v[i].key),
		   "RFC 8448: %s write key", v[i].name);
		ok(!zr_tls13_hkdf_expand_label("SHA256", secret, 32, "iv", NULL, 0, iv, 12) &&
			   same_hex(iv, 12, v[i].iv),
		   "RFC 8448: %s write iv", v[i].name);
	}
	uint8_t out[16];
	is(zr_tls13_hkdf_expand_label("SHA256", out, 0, "key", NULL, 0, out, 16), -EINVAL, "empty secret refused");
}

/* KeyUpdate's next secret, and the key and IV from it, against the
 * independent HKDF; for both hashes. */
static void test_key_update_secret(const zr_aead_backend_t *b)
{
	static const zr_aead_alg_t algs[] = {ZR_AEAD_AES_128_GCM, ZR_AEAD_AES_256_GCM};
	for (size_t i = 0; i < 2; i++) {
		zr_aead_alg_t alg = algs[i];
		if (!b->supports(alg))
			continue;
		const char *md = zr_record_hash_name(alg);
		size_t hl = zr_record_hash_len(alg), kl = zr_aead_key_len(alg);
		uint8_t secret[48], next[48], key[32], iv[12], nonce[12];
		unhex(S_AP S_HS, secret, hl);
		zr_record_dir_t d = {0};
		bool good = !zr_record_dir_init(&d, b, alg, secret) && !zr_record_dir_update(&d) &&
			    ref_expand_label(md, secret, hl, "traffic upd", next, hl) && !memcmp(d.secret, next, hl);
		ok(good, "%s: KeyUpdate secret = HKDF-Expand-Label(secret, \"traffic upd\") (%s)", b->name, md);
		good = ref_expand_label(md, next, hl, "iv", iv, 12) && ref_expand_label(md, next, hl, "key", key, kl) &&
		       !memcmp(d.iv, iv, 12) && d.seq == 0;
		zr_record_nonce(&d, 0x0102030405060708ull, nonce);
		for (int j = 0; j < 8; j++)
			iv[4 + j] ^= (uint8_t)(j + 1);
		ok(good && !memcmp(nonce, iv, 12), "%s: new IV after KeyUpdate, nonce = iv ^ seq (%s)", b->name, md);
		/* The new key is the one a reference derivation gives: a record
		 * sealed with it opens with a direction built on `next`. */
		zr_record_dir_t e = {0};
		uint8_t rec[64], plain[64], type = 0;
		size_t len = 0;
		ssize_t n =
			zr_record_seal1(&d, ZR_TLS_CT_APPLICATION_DATA, (const uint8_t *)"after", 5, rec, sizeof(rec));
		ok(n == 5 + ZR_RECORD_OVERHEAD && !zr_record_dir_init(&e, b, alg, next) &&
			   !zr_record_open1(&e, rec, (size_t)n, plain, sizeof(plain), &type, &len) && len == 5 &&
			   !memcmp(plain, "after", 5),
		   "%s: records under the updated key open with the reference key (%s)", b->name, md);
		zr_record_dir_clear(&d);
		zr_record_dir_clear(&e);
		OPENSSL_cleanse(next, sizeof(next));
		(void)key;
	}
}

static void test_rfc_records(const zr_aead_backend_t *b)
{
	uint8_t secret[32], rec[1024], plain[1024], type = 0;
	size_t rec_len, len = 0;
	zr_record_dir_t d = {0};

	unhex(S_HS, secret, 32);
	rec_len = unhex(srv_hs_record, rec, sizeof(rec));
	int alert = zr_record_dir_init(&d, b, ZR_AEAD_AES_128_GCM, secret);
	alert = alert ? alert : zr_record_open1(&d, rec, rec_len, plain, sizeof(plain), &type, &len);
	ok(!alert && type == ZR_TLS_CT_HANDSHAKE && same_hex(plain, len, srv_hs_plain) && d.seq == 1,
	   "%s: RFC 8448 server handshake record opens to its 657-byte flight", b->name);
	rec[100] ^= 0x01;
	d.seq = 0;
	is(zr_record_open1(&d, rec, rec_len, plain, sizeof(plain), &type, &len), ZR_TLS_ALERT_BAD_RECORD_MAC,
	   "%s: ... and with one bit flipped it calls for bad_record_mac", b->name);

	unhex(C_HS, secret, 32);
	rec_len = unhex(cli_finished_record, rec, sizeof(rec));
	alert = zr_record_dir_init(&d, b, ZR_AEAD_AES_128_GCM, secret);
	alert = alert ? alert : zr_record_open1(&d, rec, rec_len, plain, sizeof(plain), &type, &len);
	ok(!alert && type == ZR_TLS_CT_HANDSHAKE && same_hex(plain, len, cli_finished_plain),
	   "%s: RFC 8448 client Finished record", b->name);

	/* Sealing gives the RFC's bytes: the server's records 1 and 2. */
	unhex(S_AP, secret, 32);
	uint8_t data[50];
	for (int i = 0; i < 50; i++)
		data[i] = (uint8_t)i;
	ssize_t n = zr_record_dir_init(&d, b, ZR_AEAD_AES_128_GCM, secret);
	d.seq = 1;
	n = n ? n : zr_record_seal1(&d, ZR_TLS_CT_APPLICATION_DATA, data, 50, rec, sizeof(rec));
	ok(n > 0 && same_hex(rec, (size_t)n, srv_data_record), "%s: sealing 50 bytes at seq 1 = RFC server record",
	   b->name);
	n = zr_record_seal1(&d, ZR_TLS_CT_ALERT, (const uint8_t *)"\x01\x00", 2, rec, sizeof(rec));
	ok(n > 0 && same_hex(rec, (size_t)n, srv_alert_record), "%s: close_notify at seq 2 = RFC server alert",
	   b->name);
	zr_record_dir_clear(&d);

	/* The connection level: the RFC's client reads the server's ticket
	 * (ignored), data and close_notify; it writes the RFC's records. */
	uint8_t s_ap[32], c_ap[32];
	unhex(S_AP, s_ap, 32);
	unhex(C_AP, c_ap, 32);
	zr_tls_t *cli = zr_tls_new_established(false, b, ZR_AEAD_AES_128_GCM, s_ap, c_ap);
	if (!ok(cli != NULL, "%s: client established on the RFC's secrets", b->name))
		return;
	uint8_t wire[2048];
	size_t w = unhex(srv_ticket_record, wire, sizeof(wire));
	w += unhex(srv_data_record, wire + w, sizeof(wire) - w);
	w += unhex(srv_alert_record, wire + w, sizeof(wire) - w);
	ssize_t got = zr_tls_feed(cli, wire, w) ? -ENOMEM : tls_read(cli, plain, sizeof(plain));
	ok(got == 50 && !memcmp(plain, data, 50), "%s: client skips the NewSessionTicket, reads the 50 bytes", b->name);
	is(tls_read(cli, plain, sizeof(plain)), 0, "%s: then close_notify reads as 0", b->name);
	const void *p;
	size_t plen;
	ok(!zr_tls_write(cli, data, 50) && (plen = tls_peek(cli, &p)) && same_hex(p, plen, cli_data_record),
	   "%s: client writes the RFC's data record", b->name);
	zr_tls_out_consume(cli, zr_tls_out_pending(cli));
	zr_tls_close_notify(cli);
	ok((plen = tls_peek(cli, &p)) && same_hex(p, plen, cli_alert_record), "%s: and the RFC's close_notify record",
	   b->name);
	is(zr_tls_write(cli, data, 1), -EPIPE, "%s: no writing after close_notify", b->name);
	zr_tls_free(cli);

	/* A server reading the client's records; a ticket sent to a server is
	 * refused. */
	zr_tls_t *srv = zr_tls_new_established(true, b, ZR_AEAD_AES_128_GCM, c_ap, s_ap);
	w = unhex(cli_data_record, wire, sizeof(wire));
	w += unhex(cli_alert_record, wire + w, sizeof(wire) - w);
	got = srv && !zr_tls_feed(srv, wire, w) ? tls_read(srv, plain, sizeof(plain)) : -1;
	ok(got == 50 && !memcmp(plain, data, 50) && tls_read(srv, plain, 10) == 0,
	   "%s: server reads the client's data, then close_notify", b->name);
	zr_tls_free(srv);
	srv = zr_tls_new_established(true, b, ZR_AEAD_AES_128_GCM, s_ap, s_ap);
	w = unhex(srv_ticket_record, wire, sizeof(wire));
	got = srv && !zr_tls_feed(srv, wire, w) ? tls_read(srv, plain, sizeof(plain)) : 0;
	ok(got == -EPROTO && strstr(zr_tls_error(srv), "unexpected message"),
	   "%s: NewSessionTicket to a server: unexpected_message (%s)", b->name, srv ? zr_tls_error(srv) : "");
	zr_tls_free(srv);
}

/* --- two endpoints of our own --- */

typedef struct pair {
	zr_tls_t *c, *s;
} pair_t;

static bool pair_new(pair_t *pr, const zr_aead_backend_t *b, zr_aead_alg_t alg)
{
	uint8_t cs[48], ss[48];
	RAND_bytes(cs, sizeof(cs));
	RAND_bytes(ss, sizeof(ss));
	pr->c = zr_tls_new_established(false, b, alg, ss, cs);
	pr->s = zr_tls_new_established(true, b, alg, cs, ss);
	OPENSSL_cleanse(cs, sizeof(cs));
	OPENSSL_cleanse(ss, sizeof(ss));
	return pr->c && pr->s;
}

static void pair_free(pair_t *pr)
{
	zr_tls_free(pr->c);
	zr_tls_free(pr->s);
}

/* Moves `from`'s output to `to`, in pieces of `piece` bytes. */
static size_t move(zr_tls_t *from, zr_tls_t *to, size_t piece)
{
	size_t moved = 0, n;
	const void *p;
	while ((n = tls_peek(from, &p))) {
		n = n < piece ? n : piece;
		if (zr_tls_feed(to, p, n))
			break;
		zr_tls_out_consume(from, n);
		moved += n;
	}
	return moved;
}

/* Reads until `want` bytes came, or returns what stopped it (a failure,
 * close_notify, more input needed) if none did. On a device a batch ends at
 * each KeyUpdate, so one read may give less than is there. */
static ssize_t read_upto(zr_tls_t *t, uint8_t *buf, size_t want)
{
	size_t got = 0;
	while (got < want) {
		ssize_t r = tls_read(t, buf + got, want - got);
		if (r <= 0)
			return got ? (ssize_t)got : r;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* A record sealed by hand under `from`'s write key, as a misbehaving peer
 * would send it, fed to `to`. */
static void inject_inner(zr_tls_t *from, zr_tls_t *to, const uint8_t *inner, size_t len)
{
	static uint8_t rec[70000];
	ssize_t n = zr_record_seal_inner(&from->rec.wr, inner, len, rec, sizeof(rec));
	if (n < 0 || zr_tls_feed(to, rec, (size_t)n))
		diag("inject: %zd", n);
}

static void inject(zr_tls_t *from, zr_tls_t *to, uint8_t type, const void *content, size_t len)
{
	uint8_t inner[70000];
	memcpy(inner, content, len);
	inner[len] = type;
	inject_inner(from, to, inner, len + 1);
}

/* Writes `total` bytes in random pieces from a to b while b reads into
 * buffers of random sizes (some smaller than a record: staging). */
static bool bulk(zr_tls_t *a, zr_tls_t *b, size_t total, unsigned seed)
{
	uint8_t *tx = malloc(total), *rx = malloc(total);
	srand(seed);
	for (size_t i = 0; i < total; i++)
		tx[i] = (uint8_t)rand();
	size_t sent = 0, got = 0;
	bool good = true;
	while (good && got < total) {
		if (sent < total) {
			size_t n = (size_t)rand() % 3 ? (size_t)rand() % 300 + 1 : (size_t)rand() % 70000 + 1;
			n = n < total - sent ? n : total - sent;
			good = !zr_tls_write(a, tx + sent, n);
			sent += n;
		}
		if (sent == total || rand() % 4 == 0)
			move(a, b, (size_t)rand() % 20000 + 1);
		good = good && tls_read_random(b, rx, &got, total);
	}
	good = good && got == total && !memcmp(tx, rx, total);
	free(tx);
	free(rx);
	return good;
}

/* All of `t`'s output into out; returns its length. */
static size_t drain_out(zr_tls_t *t, uint8_t *out, size_t cap)
{
	size_t w = 0, n;
	const void *p;
	while ((n = tls_peek(t, &p)) && w + n <= cap) {
		memcpy(out + w, p, n);
		zr_tls_out_consume(t, n);
		w += n;
	}
	return w;
}

/* Large writes: whole records are sealed straight from the writer's bytes
 * where the backend takes two runs of plaintext, small writes are gathered
 * by copy. Both must cut and number records alike: one endpoint writes
 * 7 B, ~293 KiB, 64 KiB and 16 KiB in four calls, another with the same key
 * writes the same bytes 1000 at a time, and the outputs are the same bytes
 * (with our KeyUpdate every 3 records too), which the peer reads back. */
static void test_large_writes(const zr_aead_backend_t *b, zr_aead_alg_t alg)
{
	static const size_t pieces[] = {7, 300001, 65536, 16384};
	enum {
		TOTAL = 7 + 300001 + 65536 + 16384,
		WIRE = 2 * TOTAL
	};
	uint8_t cs[48], ss[48];
	uint8_t *tx = malloc(TOTAL), *rx = malloc(TOTAL), *w1 = malloc(WIRE), *w2 = malloc(WIRE);
	RAND_bytes(cs, sizeof(cs));
	RAND_bytes(ss, sizeof(ss));
	if (tx)
		RAND_bytes(tx, TOTAL);
	for (uint64_t interval = 0; interval <= 3; interval += 3) {
		zr_tls_t *big = zr_tls_new_established(false, b, alg, ss, cs);
		zr_tls_t *small = zr_tls_new_established(false, b, alg, ss, cs);
		zr_tls_t *peer = zr_tls_new_established(true, b, alg, cs, ss);
		bool good = tx && rx && w1 && w2 && big && small && peer;
		if (good && interval) {
			zr_tls_set_key_update_interval(big, interval);
			zr_tls_set_key_update_interval(small, interval);
		}
		size_t off = 0;
		for (size_t i = 0; good && i < sizeof(pieces) / sizeof(pieces[0]); i++) {
			good = !zr_tls_write(big, tx + off, pieces[i]);
			off += pieces[i];
		}
		for (off = 0; good && off < TOTAL; off += 1000)
			good = !zr_tls_write(small, tx + off, TOTAL - off < 1000 ? TOTAL - off : 1000);
		size_t l1 = good ? drain_out(big, w1, WIRE) : 0, l2 = good ? drain_out(small, w2, WIRE) : 0;
		bool same = good && l1 == l2 && !memcmp(w1, w2, l1);
		size_t got = 0;
		if (same && !zr_tls_feed(peer, w1, l1)) {
			for (;;) {
				ssize_t r = tls_read(peer, rx + got, TOTAL - got);
				if (r <= 0)
					break;
				got += (size_t)r;
			}
		}
		ok(same && got == TOTAL && !memcmp(tx, rx, TOTAL),
		   "%s/%s: writes up to ~293 KiB in one call: same records as small writes%s, read back", b->name,
		   zr_aead_alg_name(alg), interval ? " with KeyUpdate every 3 records" : "");
		zr_tls_free(big);
		zr_tls_free(small);
		zr_tls_free(peer);
	}
	OPENSSL_cleanse(cs, sizeof(cs));
	OPENSSL_cleanse(ss, sizeof(ss));
	free(tx);
	free(rx);
	free(w1);
	free(w2);
}

static void test_pair(const zr_aead_backend_t *b, zr_aead_alg_t alg)
{
	const char *an = zr_aead_alg_name(alg);
	pair_t pr;
	uint8_t buf[20000];
	if (!ok(pair_new(&pr, b, alg), "%s/%s: endpoints", b->name, an)) {
		pair_free(&pr);
		return;
	}
	ok(bulk(pr.c, pr.s, 3 << 20, 1) && bulk(pr.s, pr.c, 3 << 20, 2),
	   "%s/%s: 3 MiB each way, random write and read sizes, byte-exact", b->name, an);

	/* Our own KeyUpdate every 3 records: both sides keep up. */
	zr_tls_set_key_update_interval(pr.c, 3);
	zr_tls_set_key_update_interval(pr.s, 5);
	ok(bulk(pr.c, pr.s, 1 << 20, 3) && bulk(pr.s, pr.c, 1 << 20, 4) && pr.c->rec.wr.seq < 3 && pr.s->rec.rd.seq < 5,
	   "%s/%s: 1 MiB each way with our KeyUpdate every few records", b->name, an);
	zr_tls_set_key_update_interval(pr.c, ZR_RECORD_KEY_UPDATE_DEFAULT);
	zr_tls_set_key_update_interval(pr.s, ZR_RECORD_KEY_UPDATE_DEFAULT);

	/* The peer asks for a KeyUpdate: read key updated, ours answered. A
	 * record of ours first, so that the answer's new key shows. */
	bool sent = !zr_tls_write(pr.s, "z", 1) && move(pr.s, pr.c, 100000) && tls_read(pr.c, buf, 1) == 1;
	uint64_t wseq = pr.s->rec.wr.seq;
	inject(pr.c, pr.s, ZR_TLS_CT_HANDSHAKE, "\x18\x00\x00\x01\x01", 5);
	int rc = zr_record_dir_update(&pr.c->rec.wr);
	ssize_t n = tls_read(pr.s, buf, sizeof(buf));
	ok(sent && !rc && n == -EAGAIN && zr_tls_out_pending(pr.s) && pr.s->rec.wr.seq == 0 && wseq > 0,
	   "%s/%s: KeyUpdate(update_requested) answered with our own", b->name, an);
	move(pr.s, pr.c, 100000);
	ok(bulk(pr.c, pr.s, 100000, 5) && bulk(pr.s, pr.c, 100000, 6), "%s/%s: data flows both ways after it", b->name,
	   an);

	/* Padding is accepted; zero-length data records too. */
	uint8_t inner[600] = "padded";
	inner[6] = ZR_TLS_CT_APPLICATION_DATA;
	inject_inner(pr.c, pr.s, inner, sizeof(inner));
	inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "", 0);
	inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "!", 1);
	n = tls_read(pr.s, buf, sizeof(buf));
	ok(n == 7 && !memcmp(buf, "padded!", 7), "%s/%s: padded and empty records read", b->name, an);
	/* Padded records between plain ones in one batch: the contents still
	 * come out back to back. */
	static const char *const parts[] = {"one", "two-padded", "three", "four-padded", "five", "six"};
	size_t want = 0;
	char expect[64] = "";
	for (size_t i = 0; i < 6; i++) {
		uint8_t in[64] = {0};
		size_t l = strlen(parts[i]);
		memcpy(in, parts[i], l);
		in[l] = ZR_TLS_CT_APPLICATION_DATA;
		inject_inner(pr.c, pr.s, in, strstr(parts[i], "padded") ? l + 1 + 9 * i : l + 1);
		strcat(expect, parts[i]);
		want += l;
	}
	n = tls_read(pr.s, buf, sizeof(buf));
	ok(n == (ssize_t)want && !memcmp(buf, expect, want), "%s/%s: padded records amid plain ones, one read", b->name,
	   an);
	/* A record failing to authenticate amid good ones: those before it are
	 * read, then -EBADMSG. */
	inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "good", 4);
	inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "also good", 9);
	uint8_t frec[64];
	ssize_t rl = zr_record_seal1(&pr.c->rec.wr, ZR_TLS_CT_APPLICATION_DATA, (const uint8_t *)"forged", 6, frec,
				     sizeof(frec));
	frec[rl - 1] ^= 1;
	bool fed = rl > 0 && !zr_tls_feed(pr.s, frec, (size_t)rl);
	inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "after", 5);
	n = fed ? tls_read(pr.s, buf, sizeof(buf)) : -1;
	ok(n == 13 && !memcmp(buf, "goodalso good", 13) && tls_read(pr.s, buf, sizeof(buf)) == -EBADMSG,
	   "%s/%s: good records before a forged one read, then -EBADMSG", b->name, an);
	pair_free(&pr);

	struct {
		const char *what;
		uint8_t inner[8];
		size_t len;
		int rc;
		const char *alert;
	} bad[] = {
		{"all-zero inner plaintext", {0, 0, 0, 0}, 4, -EPROTO, "unexpected message"},
		{"empty inner plaintext", {0}, 0, -EPROTO, "unexpected message"},
		{"unknown content type", {'x', 99}, 2, -EPROTO, "unexpected message"},
		{"change_cipher_spec after the handshake", {1, 20}, 2, -EPROTO, "unexpected message"},
		{"ClientHello (renegotiation)", {1, 0, 0, 0, 22}, 5, -EPROTO, "unexpected message"},
		{"CertificateRequest (post-handshake auth)", {13, 0, 0, 0, 22}, 5, -EPROTO, "unexpected message"},
		{"KeyUpdate of length 2", {24, 0, 0, 2, 0, 0, 22}, 7, -EPROTO, "decode error"},
		{"KeyUpdate request_update 2", {24, 0, 0, 1, 2, 22}, 6, -EPROTO, "illegal parameter"},
		{"KeyUpdate with bytes after it", {24, 0, 0, 1, 0, 4, 22}, 7, -EPROTO, "unexpected message"},
		{"empty handshake record", {22}, 1, -EPROTO, "unexpected message"},
		{"alert of 3 bytes", {2, 40, 0, 21}, 4, -EPROTO, "decode error"},
		{"peer's fatal alert", {2, 40, 21}, 3, -ECONNRESET, "handshake failure"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (!pair_new(&pr, b, alg)) {
			pair_free(&pr);
			continue;
		}
		inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "before", 6);
		inject_inner(pr.c, pr.s, bad[i].inner, bad[i].len);
		n = tls_read(pr.s, buf, sizeof(buf));
		ssize_t n2 = tls_read(pr.s, buf + 6, sizeof(buf) - 6);
		bool alert_sent = bad[i].rc == -ECONNRESET ? !zr_tls_out_pending(pr.s) : zr_tls_out_pending(pr.s) > 0;
		move(pr.s, pr.c, 100000);
		ssize_t peer = tls_read(pr.c, buf + 100, 100);
		ok(n == 6 && !memcmp(buf, "before", 6) && n2 == bad[i].rc && strstr(zr_tls_error(pr.s), bad[i].alert) &&
			   alert_sent &&
			   (bad[i].rc == -ECONNRESET ||
			    (peer == -ECONNRESET && strstr(zr_tls_error(pr.c), bad[i].alert))),
		   "%s/%s: %s: data before it read, then %zd, alert %s (%s / peer: %s)", b->name, an, bad[i].what, n2,
		   bad[i].alert, zr_tls_error(pr.s), zr_tls_error(pr.c));
		is(tls_read(pr.s, buf, sizeof(buf)), bad[i].rc, "%s/%s: %s: the failure sticks", b->name, an,
		   bad[i].what);
		pair_free(&pr);
	}

	/* Oversize: inner plaintext past 2^14 + 1, ciphertext past 2^14 + 256. */
	if (pair_new(&pr, b, alg)) {
		static uint8_t big[ZR_RECORD_PLAIN_MAX + 300];
		memset(big, 'a', sizeof(big));
		big[ZR_RECORD_PLAIN_MAX + 1] = ZR_TLS_CT_APPLICATION_DATA;
		inject_inner(pr.c, pr.s, big, ZR_RECORD_PLAIN_MAX + 2);
		static uint8_t rbuf[ZR_RECORD_PLAIN_MAX + 300];
		n = tls_read(pr.s, rbuf, sizeof(rbuf));
		ok(n == -EPROTO && strstr(zr_tls_error(pr.s), "record overflow"),
		   "%s/%s: 16386-byte inner plaintext: record_overflow (%s)", b->name, an, zr_tls_error(pr.s));
	}
	pair_free(&pr);
	if (pair_new(&pr, b, alg)) {
		uint8_t hdr[5] = {23, 3, 3, (ZR_RECORD_CIPHER_MAX + 1) >> 8, (ZR_RECORD_CIPHER_MAX + 1) & 0xff};
		n = zr_tls_feed(pr.s, hdr, 5) ? 1 : tls_read(pr.s, buf, sizeof(buf));
		ok(n == -EPROTO && strstr(zr_tls_error(pr.s), "record overflow"),
		   "%s/%s: header announcing 16641 bytes: record_overflow at once", b->name, an);
	}
	pair_free(&pr);
	if (pair_new(&pr, b, alg)) {
		uint8_t rec[64] = {21, 3, 3, 0, 2, 1, 0};
		n = zr_tls_feed(pr.s, rec, 7) ? 1 : tls_read(pr.s, buf, sizeof(buf));
		ok(n == -EPROTO && strstr(zr_tls_error(pr.s), "unexpected message"),
		   "%s/%s: a plaintext alert after the handshake: unexpected_message", b->name, an);
	}
	pair_free(&pr);

	/* A flipped bit: bad_record_mac, the peer told; a truncated record
	 * just waits; data after close_notify is ignored. */
	if (pair_new(&pr, b, alg)) {
		const void *p;
		ok(!zr_tls_write(pr.c, "hello", 5) && tls_peek(pr.c, &p) == 5 + ZR_RECORD_OVERHEAD,
		   "%s/%s: 5-byte record", b->name, an);
		uint8_t rec[64];
		memcpy(rec, p, 5 + ZR_RECORD_OVERHEAD);
		zr_tls_out_consume(pr.c, 5 + ZR_RECORD_OVERHEAD);
		is(zr_tls_feed(pr.s, rec, 20) ? 1 : tls_read(pr.s, buf, sizeof(buf)), -EAGAIN,
		   "%s/%s: truncated record: -EAGAIN, nothing delivered", b->name, an);
		rec[22] ^= 0x80;
		n = zr_tls_feed(pr.s, rec + 20, 7) ? 1 : tls_read(pr.s, buf, sizeof(buf));
		move(pr.s, pr.c, 1000);
		ssize_t peer = tls_read(pr.c, buf, sizeof(buf));
		ok(n == -EBADMSG && strstr(zr_tls_error(pr.s), "bad record mac") && peer == -ECONNRESET &&
			   strstr(zr_tls_error(pr.c), "bad record mac"),
		   "%s/%s: flipped bit in the tag: bad_record_mac sent and seen by the peer (%s)", b->name, an,
		   zr_tls_error(pr.c));
	}
	pair_free(&pr);
	if (pair_new(&pr, b, alg)) {
		bool good = !zr_tls_write(pr.c, "last", 4);
		zr_tls_close_notify(pr.c);
		move(pr.c, pr.s, 7);
		inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "ignored", 7);
		n = tls_read(pr.s, buf, sizeof(buf));
		ok(good && n == 4 && tls_read(pr.s, buf, sizeof(buf)) == 0 && tls_read(pr.s, buf, 9) == 0,
		   "%s/%s: data, close_notify (0), what follows ignored", b->name, an);
		ok(!zr_tls_write(pr.s, "half", 4) && move(pr.s, pr.c, 5) && tls_read(pr.c, buf, 10) == 4,
		   "%s/%s: the other direction still works (half-close)", b->name, an);
	}
	pair_free(&pr);
}

/* zr_tls_lend: records cut anywhere between fed and lent bytes. */
static void test_lend(const zr_aead_backend_t *b)
{
	pair_t pr;
	if (!pair_new(&pr, b, ZR_AEAD_AES_128_GCM)) {
		pair_free(&pr);
		return;
	}
	static uint8_t msg[200000], wire[300000], got[200000], piece[7001];
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 13 + 5);
	bool good = !zr_tls_write(pr.c, msg, sizeof(msg));
	size_t wlen = 0, n, have = 0;
	const void *p;
	while ((n = tls_peek(pr.c, &p))) {
		memcpy(wire + wlen, p, n);
		wlen += n;
		zr_tls_out_consume(pr.c, n);
	}
	for (size_t off = 0; off < wlen && good; off += sizeof(piece)) {
		size_t len = wlen - off < sizeof(piece) ? wlen - off : sizeof(piece);
		memcpy(piece, wire + off, len);
		zr_tls_lend(pr.s, piece, len);
		ssize_t r;
		while (have < sizeof(got) && (r = tls_read(pr.s, got + have, sizeof(got) - have)) > 0)
			have += (size_t)r;
		good = !zr_tls_unlend(pr.s);
		memset(piece, 0xee, sizeof(piece));
	}
	ok(good && have == sizeof(msg) && !memcmp(got, msg, sizeof(msg)), "%s: 200000 bytes through lent pieces",
	   b->name);
	pair_free(&pr);
}

/* A backend that wraps another and, while `failing_open`, refuses open
 * batches at submit (as ipsec-mb does without an IMB_MGR, or dpdk without a
 * session): nothing is opened and no record's status is set. */
static const zr_aead_backend_t *wrapped;
static zr_aead_backend_t failing;
static bool failing_open;

static int failing_key_new(zr_aead_alg_t alg, const uint8_t *key, zr_aead_key_t **out)
{
	int rc = wrapped->key_new(alg, key, out);
	if (!rc)
		(*out)->backend = &failing;
	return rc;
}

static void failing_key_free(zr_aead_key_t *key)
{
	key->backend = wrapped;
	wrapped->key_free(key);
}

static int failing_submit(zr_aead_key_t *key, bool encrypt, zr_aead_rec_t *recs, size_t n, zr_aead_done_cb cb,
			  void *arg)
{
	if (!encrypt && failing_open)
		return -ENOMEM;
	return wrapped->submit(key, encrypt, recs, n, cb, arg);
}

static void test_open_submit_failure(const zr_aead_backend_t *b)
{
	wrapped = b;
	failing = *b;
	failing.key_new = failing_key_new;
	failing.key_free = failing_key_free;
	failing.submit = failing_submit;
	uint8_t cs[32], ss[32], buf[256];
	RAND_bytes(cs, sizeof(cs));
	RAND_bytes(ss, sizeof(ss));
	zr_tls_t *c = zr_tls_new_established(false, b, ZR_AEAD_AES_128_GCM, ss, cs);
	zr_tls_t *s = zr_tls_new_established(true, &failing, ZR_AEAD_AES_128_GCM, cs, ss);
	bool good = c && s && !zr_tls_write(c, "hello", 5) && !zr_tls_write(c, "world", 5) && move(c, s, 100000);
	/* What the reader's buffer held before: it must not come out as data. */
	memset(buf, ZR_TLS_CT_APPLICATION_DATA, sizeof(buf));
	failing_open = true;
	ssize_t n = good ? tls_read(s, buf, sizeof(buf)) : 0;
	failing_open = false;
	ok(good && n == -EPROTO && s->rec.rd.seq == 0 && strstr(zr_tls_error(s), "internal error"),
	   "%s: an open batch the backend refuses delivers nothing and fails (read %zd, %s)", b->name, n,
	   s ? zr_tls_error(s) : "");
	zr_tls_free(c);
	zr_tls_free(s);
	OPENSSL_cleanse(cs, sizeof(cs));
	OPENSSL_cleanse(ss, sizeof(ss));
}

/* KeyUpdate floods: requests while we are silent are answered once (RFC
 * 8446 4.6.3), and a run of KeyUpdates without application data between
 * them is cut off, as OpenSSL and BoringSSL do after 32. */
static void test_key_update_flood(const zr_aead_backend_t *b, zr_aead_alg_t alg)
{
	const char *an = zr_aead_alg_name(alg);
	pair_t pr;
	uint8_t buf[256];
	if (pair_new(&pr, b, alg)) {
		size_t one = 5 + ZR_RECORD_OVERHEAD; /* one KeyUpdate record */
		bool good = true;
		for (int i = 0; i < 20 && good; i++) {
			inject(pr.c, pr.s, ZR_TLS_CT_HANDSHAKE, "\x18\x00\x00\x01\x01", 5);
			good = !zr_record_dir_update(&pr.c->rec.wr);
		}
		ssize_t n = good ? tls_read(pr.s, buf, sizeof(buf)) : 0;
		size_t out = zr_tls_out_pending(pr.s);
		ok(good && n == -EAGAIN && out == one,
		   "%s/%s: 20 KeyUpdate requests while silent: answered once (%zu bytes out)", b->name, an, out);
		/* Once we have sent data, the next request is answered again. */
		good = good && !zr_tls_write(pr.s, "data", 4) && move(pr.s, pr.c, 100000);
		inject(pr.c, pr.s, ZR_TLS_CT_HANDSHAKE, "\x18\x00\x00\x01\x01", 5);
		good = good && !zr_record_dir_update(&pr.c->rec.wr);
		uint64_t wseq = pr.s->rec.wr.seq;
		n = good ? tls_read(pr.s, buf, sizeof(buf)) : 0;
		ok(good && n == -EAGAIN && wseq == 1 && pr.s->rec.wr.seq == 0 && zr_tls_out_pending(pr.s) == one &&
			   move(pr.s, pr.c, 100000) && tls_read(pr.c, buf, sizeof(buf)) == 4 && !memcmp(buf, "data", 4),
		   "%s/%s: a request after our data is answered again", b->name, an);
		good = good && !zr_tls_write(pr.s, "more", 4) && move(pr.s, pr.c, 100000);
		ok(good && tls_read(pr.c, buf, sizeof(buf)) == 4, "%s/%s: and the peer follows our keys", b->name, an);
	}
	pair_free(&pr);
	if (pair_new(&pr, b, alg)) {
		bool good = true;
		/* 32 in a row, data, 32 again: fine. */
		for (int round = 0; round < 2 && good; round++) {
			for (int i = 0; i < 32 && good; i++) {
				inject(pr.c, pr.s, ZR_TLS_CT_HANDSHAKE, "\x18\x00\x00\x01\x00", 5);
				good = !zr_record_dir_update(&pr.c->rec.wr);
			}
			inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "x", 1);
		}
		ssize_t n = good ? read_upto(pr.s, buf, 2) : 0;
		ok(good && n == 2 && !memcmp(buf, "xx", 2), "%s/%s: 32 KeyUpdates in a row, data, 32 more: accepted",
		   b->name, an);
		for (int i = 0; i < 33 && good; i++) {
			inject(pr.c, pr.s, ZR_TLS_CT_HANDSHAKE, "\x18\x00\x00\x01\x00", 5);
			good = !zr_record_dir_update(&pr.c->rec.wr);
		}
		n = good ? read_upto(pr.s, buf, sizeof(buf)) : 0;
		ok(good && n == -EPROTO && strstr(zr_tls_error(pr.s), "unexpected message"),
		   "%s/%s: 33 KeyUpdates without data between: unexpected_message (%s)", b->name, an,
		   zr_tls_error(pr.s));
	}
	pair_free(&pr);
	/* Empty data records and user_canceled warnings carry nothing: 32 in a
	 * row are accepted, a 33rd is a flood. */
	if (pair_new(&pr, b, alg)) {
		for (int round = 0; round < 2; round++) {
			for (int i = 0; i < 32; i++) {
				if (i % 4 == 3)
					inject(pr.c, pr.s, ZR_TLS_CT_ALERT, "\x01\x5a", 2);
				else
					inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "", 0);
			}
			inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "y", 1);
		}
		ssize_t n = read_upto(pr.s, buf, 2);
		ok(n == 2 && !memcmp(buf, "yy", 2),
		   "%s/%s: 32 empty records and warnings in a row, data, 32 more: read", b->name, an);
		for (int i = 0; i < 33; i++)
			inject(pr.c, pr.s, ZR_TLS_CT_APPLICATION_DATA, "", 0);
		n = read_upto(pr.s, buf, sizeof(buf));
		ok(n == -EPROTO && strstr(zr_tls_error(pr.s), "unexpected message"),
		   "%s/%s: 33 empty records in a row: unexpected_message (%s)", b->name, an, zr_tls_error(pr.s));
	}
	pair_free(&pr);
	if (pair_new(&pr, b, alg)) {
		for (int i = 0; i < 33; i++)
			inject(pr.c, pr.s, ZR_TLS_CT_ALERT, "\x01\x5a", 2);
		ssize_t n = read_upto(pr.s, buf, sizeof(buf));
		ok(n == -EPROTO && strstr(zr_tls_error(pr.s), "unexpected message"),
		   "%s/%s: 33 user_canceled warnings in a row: unexpected_message (%s)", b->name, an,
		   zr_tls_error(pr.s));
	}
	pair_free(&pr);
}

/* The peer's fatal alert fails the connection: what we had written but not
 * sealed yet must not then be left in the output as plaintext. */
static void test_alert_with_unsealed(const zr_aead_backend_t *b, zr_aead_alg_t alg)
{
	static const char secret[] = "TOP-SECRET-PLAINTEXT";
	pair_t pr;
	uint8_t buf[256];
	if (pair_new(&pr, b, alg)) {
		bool good = !zr_tls_write(pr.c, secret, sizeof(secret) - 1);
		inject(pr.s, pr.c, ZR_TLS_CT_ALERT, "\x02\x28", 2);
		ssize_t n = tls_read(pr.c, buf, sizeof(buf));
		const void *p;
		size_t len, leaked = 0;
		while ((len = tls_peek(pr.c, &p))) {
			leaked += memmem(p, len, secret, sizeof(secret) - 1) != NULL;
			zr_tls_out_consume(pr.c, len);
		}
		ok(good && n == -ECONNRESET && !leaked,
		   "%s/%s: peer's fatal alert with a record not sealed yet: no plaintext in the output (read %zd)",
		   b->name, zr_aead_alg_name(alg), n);
	}
	pair_free(&pr);
}

static void count_wake(void *arg)
{
	(*(int *)arg)++;
}

/* An asynchronous backend (a device) as the worker loop sees it, without
 * the helpers that poll: output waits while its records are being sealed,
 * a read waits while records are being opened, completions wake the
 * connection from zr_tls_crypto_poll only, and a connection freed with
 * batches in flight leaves nothing behind. */
static void test_async(const zr_aead_backend_t *b)
{
	static uint8_t msg[100000], got[100000];
	pair_t pr;
	int wakes_c = 0, wakes_s = 0;
	if (!pair_new(&pr, b, ZR_AEAD_AES_128_GCM)) {
		pair_free(&pr);
		return;
	}
	zr_tls_set_wake(pr.c, count_wake, &wakes_c);
	zr_tls_set_wake(pr.s, count_wake, &wakes_s);
	uint64_t in_place0 = 0, copied0 = 0, in_place1 = 0, copied1 = 0;
	if (b->counts)
		b->counts(&in_place0, &copied0);
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 1);
	const void *p;
	bool good = !zr_tls_write(pr.c, msg, sizeof(msg));
	size_t before = zr_tls_out_peek(pr.c, &p), pending = zr_tls_out_pending(pr.c);
	ok(good && before == 0 && pending > sizeof(msg) && wakes_c == 0,
	   "%s: written records are being sealed: nothing to send yet (%zu of %zu bytes)", b->name, before, pending);
	unsigned left = 1;
	for (int i = 0; i < 100000 && left; i++)
		left = zr_tls_crypto_poll();
	size_t after = zr_tls_out_peek(pr.c, &p);
	ok(!left && wakes_c >= 1 && after > 0 && after == (pending < ZR_TLS_CHUNK_SIZE ? pending : ZR_TLS_CHUNK_SIZE),
	   "%s: once the device is polled the writer is woken (%d) and its first chunk is sealed (%zu bytes)", b->name,
	   wakes_c, after);
	size_t moved = move(pr.c, pr.s, 1 << 20);
	ssize_t n = zr_tls_read(pr.s, got, sizeof(got));
	ok(moved == pending && n == -EAGAIN && wakes_s == 0,
	   "%s: the reader's records are being opened: -EAGAIN, not woken yet", b->name);
	tls_settle();
	size_t have = 0;
	int wakes_at_first = wakes_s;
	while (have < sizeof(got) && (n = tls_read(pr.s, got + have, sizeof(got) - have)) > 0)
		have += (size_t)n;
	ok(wakes_at_first == 1 && have == sizeof(msg) && !memcmp(got, msg, sizeof(msg)),
	   "%s: woken once its batch is back; all %zu bytes read", b->name, have);
	if (b->counts) {
		/* 100000 bytes: 7 records, sealed and opened */
		b->counts(&in_place1, &copied1);
		ok(in_place1 - in_place0 == 14 && copied1 == copied0,
		   "%s: every record sealed and opened in place in the device's memory (%llu in place, %llu copied)",
		   b->name, (unsigned long long)(in_place1 - in_place0), (unsigned long long)(copied1 - copied0));
	}

	/* Freed with seals and an open in flight: the free waits for them. */
	good = !zr_tls_write(pr.c, msg, sizeof(msg)) && zr_tls_out_peek(pr.c, &p) == 0;
	good = good && !zr_tls_write(pr.s, "x", 1) && tls_peek(pr.s, &p) &&
	       zr_tls_feed(pr.c, p, 1 + ZR_RECORD_OVERHEAD) == 0 && zr_tls_read(pr.c, got, 10) == -EAGAIN;
	pair_free(&pr);
	ok(good && zr_tls_crypto_poll() == 0, "%s: connections freed with batches in flight: none left behind",
	   b->name);
}

static zr_record_crypto_t choice_of(const char *name)
{
	if (!strcmp(name, "ipsec-mb"))
		return ZR_RECORD_CRYPTO_IPSEC_MB;
	if (!strcmp(name, "dpdk"))
		return ZR_RECORD_CRYPTO_DPDK;
	return ZR_RECORD_CRYPTO_OPENSSL;
}

int main(void)
{
	zr_log_set_level(ZR_LOG_ERROR);
	test_key_schedule();
	for (size_t i = 0; zr_aead_backends[i]; i++) {
		const zr_aead_backend_t *b = NULL;
		char err[256];
		if (zr_aead_select(choice_of(zr_aead_backends[i]->name), NULL, &b, err, sizeof(err)) || !b) {
			skip(err);
			continue;
		}
		diag("backend %s: %s", b->name, b->describe ? b->describe() : "");
		test_rfc_records(b);
		test_key_update_secret(b);
		for (zr_aead_alg_t alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++) {
			if (b->supports(alg)) {
				test_pair(b, alg);
				test_large_writes(b, alg);
				test_key_update_flood(b, alg);
				test_alert_with_unsealed(b, alg);
			} else
				diag("%s lacks %s", b->name, zr_aead_alg_name(alg));
		}
		test_lend(b);
		test_open_submit_failure(b);
		if (b->async)
			test_async(b);
	}
	zr_aead_thread_cleanup();
	zr_tls_thread_cleanup();
	return done_testing();
}
