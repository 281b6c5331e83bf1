/* The suite's throw-away PKI, made with OpenSSL 3 in-process so that the
 * suite needs no openssl CLI and no shell script: one CA and two ECDSA P-256
 * leaves with SPIFFE URI SANs, as zring's HBONE and HAProxy's mTLS pair both
 * want them. Valid for a week: long enough for any run, short enough that a
 * leaked file is soon worthless. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "perf/suite.h"

#define VALID_S (7L * 24 * 3600)

static void set_err(char *err, size_t cap, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, cap, "certificates: %s%s%s", what, e ? ": " : "", buf);
	ERR_clear_error();
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -1;
	int ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

static int random_serial(X509 *cert)
{
	unsigned char raw[8];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	raw[0] &= 0x7f; /* a positive serial */
	BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
	if (!bn)
		return -1;
	int ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

/* A certificate for key, signed by issuer_key (self-signed when issuer is
 * NULL). uri NULL makes a CA. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, const char *uri)
{
	X509 *cert = X509_new();
	if (!cert)
		return NULL;
	X509_NAME *name = X509_get_subject_name(cert);
	if (X509_set_version(cert, X509_VERSION_3) != 1 || random_serial(cert) ||
	    !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) || !X509_gmtime_adj(X509_getm_notAfter(cert), VALID_S) ||
	    X509_set_pubkey(cert, key) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"zring-bench", -1, -1, 0) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name) != 1)
		goto fail;
	X509 *ext_issuer = issuer ? issuer : cert;
	if (!uri) {
		if (add_ext(cert, ext_issuer, NID_basic_constraints, "critical,CA:TRUE") ||
		    add_ext(cert, ext_issuer, NID_key_usage, "critical,keyCertSign,cRLSign") ||
		    add_ext(cert, ext_issuer, NID_subject_key_identifier, "hash"))
			goto fail;
	} else {
		char san[512];
		snprintf(san, sizeof(san), "critical,URI:%s", uri);
		if (add_ext(cert, ext_issuer, NID_basic_constraints, "critical,CA:FALSE") ||
		    add_ext(cert, ext_issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
		    add_ext(cert, ext_issuer, NID_ext_key_usage, "serverAuth,clientAuth") ||
		    add_ext(cert, ext_issuer, NID_subject_alt_name, san) ||
		    add_ext(cert, ext_issuer, NID_authority_key_identifier, "keyid"))
			goto fail;
	}
	if (X509_sign(cert, issuer_key ? issuer_key : key, EVP_sha256()) <= 0)
		goto fail;
	return cert;
fail:
	X509_free(cert);
	return NULL;
}

/* Opens path for writing; private keys get mode 0600 before any byte lands. */
static FILE *open_out(const char *path, bool secret)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, secret ? 0600 : 0644);
	if (fd < 0)
		return NULL;
	FILE *f = fdopen(fd, "w");
	if (!f)
		close(fd);
	return f;
}

static int write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
	FILE *f = open_out(path, key != NULL);
	if (!f)
		return -1;
	int ok = 1;
	if (cert)
		ok = PEM_write_X509(f, cert);
	if (ok && key)
		ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	if (fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

static int join(char *out, const char *dir, const char *file)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, file);
	return n > 0 && n < PATH_MAX ? 0 : -1;
}

int zr_suite_certs_make(const char *dir, const char *client_uri, const char *server_uri, zr_suite_certs_t *out,
			char *err, size_t cap)
{
	EVP_PKEY *ca_key = NULL, *client_key = NULL, *server_key = NULL;
	X509 *ca = NULL, *client = NULL, *server = NULL;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (join(out->ca, dir, "ca.pem") || join(out->client_cert, dir, "client.pem") ||
	    join(out->client_key, dir, "client.key") || join(out->server_cert, dir, "server.pem") ||
	    join(out->server_key, dir, "server.key") || join(out->haproxy_client, dir, "haproxy-client.pem") ||
	    join(out->haproxy_server, dir, "haproxy-server.pem")) {
		snprintf(err, cap, "certificates: folder name too long: %s", dir);
		return -1;
	}
	ca_key = EVP_EC_gen("P-256");
	client_key = EVP_EC_gen("P-256");
	server_key = EVP_EC_gen("P-256");
	if (!ca_key || !client_key || !server_key) {
		set_err(err, cap, "P-256 key generation failed");
		goto done;
	}
	ca = make_cert(ca_key, "zring-bench CA", NULL, NULL, NULL);
	client = ca ? make_cert(client_key, "client", ca, ca_key, client_uri) : NULL;
	server = ca ? make_cert(server_key, "server", ca, ca_key, server_uri) : NULL;
	if (!ca || !client || !server) {
		set_err(err, cap, "building a certificate failed");
		goto done;
	}
	const struct {
		const char *path;
		X509 *cert;
		EVP_PKEY *key;
	} files[] = {
		{out->ca, ca, NULL},
		{out->client_cert, client, NULL},
		{out->client_key, NULL, client_key},
		{out->server_cert, server, NULL},
		{out->server_key, NULL, server_key},
		{out->haproxy_client, client, client_key},
		{out->haproxy_server, server, server_key},
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (write_pem(files[i].path, files[i].cert, files[i].key)) {
			snprintf(err, cap, "certificates: cannot write %s: %s", files[i].path, strerror(errno));
			ERR_clear_error();
			goto done;
		}
	}
	rc = 0;
done:
	X509_free(ca);
	X509_free(client);
	X509_free(server);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(client_key);
	EVP_PKEY_free(server_key);
	return rc;
}
