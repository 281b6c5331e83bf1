/* Identity store: trust anchors, local certificates and their SSL_CTXs;
 * SPIFFE ID parsing. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "crypto/tls-int.h"
#include "io/log.h"

struct ident {
	zr_cert_info_t info; /* strings point at identity and cert_path */
	char *identity, *cert_path;
	SSL_CTX *ctx[2]; /* [0] client, [1] server */
};

struct zr_identity_store {
	atomic_uint refs;
	size_t n;
	struct ident *ids;
	X509_STORE *anchors;
	OSSL_PROVIDER *providers[2];
};

static const char *const tls13_suites[] = {
	"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",   "TLS_CHACHA20_POLY1305_SHA256",
	"TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256",
};

static int fail(char *err, size_t cap, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t cap, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (cap)
		vsnprintf(err, cap, fmt, ap);
	va_end(ap);
	return rc;
}

const char *zr_openssl_reason(char *buf, size_t cap)
{
	const char *data = NULL;
	int flags = 0;
	unsigned long e = ERR_peek_error_data(&data, &flags);
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	if (!reason)
		reason = e ? "unknown error" : "no error reported";
	if (data && *data && (flags & ERR_TXT_STRING))
		snprintf(buf, cap, "%s (%s)", reason, data);
	else
		snprintf(buf, cap, "%s", reason);
	ERR_clear_error();
	return buf;
}

/* SPIFFE IDs are compared byte for byte, so accept only the canonical form
 * (lowercase trust domain, no percent-encoding, no dot segments) rather than
 * normalising. */
static int segment(const char **p, char *out, size_t cap, bool trust_domain)
{
	size_t n = 0;
	for (const char *s = *p; *s && *s != '/'; s++, n++) {
		char c = *s;
		bool okc = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
		if (!trust_domain)
			okc = okc || (c >= 'A' && c <= 'Z');
		if (!okc || n + 1 >= cap)
			return -EINVAL;
		out[n] = c;
	}
	out[n] = '\0';
	if (n == 0 || !strcmp(out, ".") || !strcmp(out, ".."))
		return -EINVAL;
	*p += n;
	return 0;
}

int zr_spiffe_parse(const char *uri, zr_spiffe_id_t *out)
{
	const char *p = uri;
	if (strncmp(p, "spiffe://", 9))
		return -EINVAL;
	p += 9;
	if (segment(&p, out->trust_domain, sizeof(out->trust_domain), true) || strncmp(p, "/ns/", 4))
		return -EINVAL;
	p += 4;
	if (segment(&p, out->ns, sizeof(out->ns), false) || strncmp(p, "/sa/", 4))
		return -EINVAL;
	p += 4;
	if (segment(&p, out->sa, sizeof(out->sa), false) || *p)
		return -EINVAL;
	return 0;
}

int zr_cert_spiffe_uri(X509 *cert, char *out, size_t cap)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	int found = 0, rc = 0;
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		if (gn->type != GEN_URI)
			continue;
		const unsigned char *s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
		size_t len = (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier);
		if (len < 9 || strncasecmp((const char *)s, "spiffe://", 9))
			continue;
		if (found++)
			continue;
		if (len >= cap || memchr(s, '\0', len)) {
			rc = -ENAMETOOLONG;
			continue;
		}
		memcpy(out, s, len);
		out[len] = '\0';
	}
	GENERAL_NAMES_free(names);
	if (!found)
		return -ENOENT;
	return found > 1 ? -EEXIST : rc;
}

static bool usable(const struct ident *id, time_t now)
{
	return now >= id->info.not_before && now < id->info.not_after;
}

static struct ident *find(const zr_identity_store_t *st, const char *identity)
{
	for (size_t i = 0; st && identity && i < st->n; i++)
		if (!strcmp(st->ids[i].identity, identity))
			return &st->ids[i];
	return NULL;
}

SSL_CTX *zr_identity_store_ctx(const zr_identity_store_t *st, const char *identity, bool server)
{
	struct ident *id = find(st, identity);
	return id && usable(id, time(NULL)) ? id->ctx[server] : NULL;
}

bool zr_identity_store_has(const zr_identity_store_t *st, const char *identity)
{
	return zr_identity_store_ctx(st, identity, true) != NULL;
}

size_t zr_identity_store_count(const zr_identity_store_t *st)
{
	return st ? st->n : 0;
}

const zr_cert_info_t *zr_identity_store_info(const zr_identity_store_t *st, size_t i)
{
	return st && i < st->n ? &st->ids[i].info : NULL;
}

void zr_identity_store_ref(zr_identity_store_t *st)
{
	atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
}

static void store_free(zr_identity_store_t *st)
{
	for (size_t i = 0; i < st->n; i++) {
		SSL_CTX_free(st->ids[i].ctx[0]);
		SSL_CTX_free(st->ids[i].ctx[1]);
		free(st->ids[i].identity);
		free(st->ids[i].cert_path);
	}
	free(st->ids);
	X509_STORE_free(st->anchors);
	for (int i = 1; i >= 0; i--)
		if (st->providers[i])
			OSSL_PROVIDER_unload(st->providers[i]);
	free(st);
}

void zr_identity_store_unref(zr_identity_store_t *st)
{
	if (st && atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
		store_free(st);
}

static int readable(const char *what, const char *path, char *err, size_t cap)
{
	if (access(path, R_OK) == 0)
		return 0;
	int e = errno;
	return fail(err, cap, -e, "%s %s: %s", what, path, strerror(e));
}

static int load_providers(zr_identity_store_t *st, const char *name, char *err, size_t cap)
{
	char why[512];
	if (!name || !*name)
		return 0;
	/* Loading any provider explicitly stops OpenSSL from loading "default"
	 * implicitly, and the named one may not implement everything. */
	st->providers[0] = OSSL_PROVIDER_load(NULL, name);
	if (!st->providers[0])
		return fail(err, cap, -ENOENT, "openssl provider '%s' could not be loaded: %s", name,
			    zr_openssl_reason(why, sizeof(why)));
	st->providers[1] = OSSL_PROVIDER_load(NULL, "default");
	if (!st->providers[1])
		return fail(err, cap, -ENOENT, "openssl provider 'default' could not be loaded: %s",
			    zr_openssl_reason(why, sizeof(why)));
	return 0;
}

static int load_anchors(zr_identity_store_t *st, const char *path, char *err, size_t cap)
{
	char why[512];
	int rc = readable("caCertificates", path, err, cap);
	if (rc)
		return rc;
	st->anchors = X509_STORE_new();
	if (!st->anchors)
		return fail(err, cap, -ENOMEM, "out of memory");
	if (X509_STORE_load_file(st->anchors, path) != 1)
		return fail(err, cap, -EINVAL, "caCertificates %s: %s", path, zr_openssl_reason(why, sizeof(why)));
	if (sk_X509_OBJECT_num(X509_STORE_get0_objects(st->anchors)) == 0)
		return fail(err, cap, -EINVAL, "caCertificates %s: no certificate", path);
	return 0;
}

/* Unknown names would be skipped silently by SSL_CTX_set_ciphersuites. */
static int join_suites(const zr_config_t *cfg, char *out, size_t cap, char *err, size_t errcap)
{
	size_t len = 0;
	out[0] = '\0';
	for (size_t i = 0; i < cfg->tls.n_cipher_suites; i++) {
		const char *s = cfg->tls.cipher_suites[i];
		bool known = false;
		for (size_t k = 0; k < sizeof(tls13_suites) / sizeof(tls13_suites[0]); k++)
			known = known || !strcmp(s, tls13_suites[k]);
		if (!known)
			return fail(err, errcap, -EINVAL, "tls.cipherSuites: '%s' is no TLS 1.3 cipher suite", s);
		int n = snprintf(out + len, cap - len, "%s%s", len ? ":" : "", s);
		if (n < 0 || (size_t)n >= cap - len)
			return fail(err, errcap, -EINVAL, "tls.cipherSuites: too many");
		len += (size_t)n;
	}
	return 0;
}

static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;
	return ASN1_TIME_to_tm(t, &tm) == 1 ? timegm(&tm) : 0;
}

/* The leaf must name the configured identity and chain to the anchors.
 * Time is not checked here: an expired certificate is reported, not fatal. */
static int check_leaf(zr_identity_store_t *st, struct ident *id, SSL_CTX *ctx, char *err, size_t cap)
{
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	STACK_OF(X509) *chain = NULL;
	char uri[2048];
	SSL_CTX_get0_chain_certs(ctx, &chain);
	int rc = zr_cert_spiffe_uri(leaf, uri, sizeof(uri));
	if (rc == -ENOENT)
		return fail(err, cap, -EINVAL, "%s: certificate has no spiffe:// URI SAN", id->cert_path);
	if (rc)
		return fail(err, cap, -EINVAL, "%s: certificate must have exactly one spiffe:// URI SAN",
			    id->cert_path);
	if (strcmp(uri, id->identity))
		return fail(err, cap, -EINVAL, "%s: certificate identity %s differs from configured %s", id->cert_path,
			    uri, id->identity);

	X509_STORE_CTX *sc = X509_STORE_CTX_new();
	if (!sc || X509_STORE_CTX_init(sc, st->anchors, leaf, chain) != 1) {
		X509_STORE_CTX_free(sc);
		return fail(err, cap, -ENOMEM, "out of memory");
	}
	X509_STORE_CTX_set_flags(sc, X509_V_FLAG_NO_CHECK_TIME);
	rc = X509_verify_cert(sc) == 1 ? 0 : -EINVAL;
	if (rc)
		fail(err, cap, rc, "%s: certificate does not chain to caCertificates: %s", id->cert_path,
		     X509_verify_cert_error_string(X509_STORE_CTX_get_error(sc)));
	X509_STORE_CTX_free(sc);
	ERR_clear_error();
	if (rc)
		return rc;

	id->info.not_before = asn1_time(X509_get0_notBefore(leaf));
	id->info.not_after = asn1_time(X509_get0_notAfter(leaf));
	id->info.expired = time(NULL) >= id->info.not_after;
	return 0;
}

static int new_ctx(zr_identity_store_t *st, bool server, const char *suites, SSL_CTX **out, char *err, size_t cap)
{
	*out = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!*out || zr_tls_ctx_setup(*out, server, suites))
		return fail(err, cap, -ENOMEM, "cannot set up an SSL_CTX");
	SSL_CTX_set1_cert_store(*out, st->anchors);
	return 0;
}

static int load_identity(zr_identity_store_t *st, struct ident *id, const zr_identity_cert_t *c, const char *suites,
			 char *err, size_t cap)
{
	char why[512];
	id->identity = strdup(c->identity ? c->identity : "");
	id->cert_path = strdup(c->cert ? c->cert : "");
	if (!id->identity || !id->cert_path)
		return fail(err, cap, -ENOMEM, "out of memory");
	id->info.identity = id->identity;
	id->info.cert_path = id->cert_path;
	int rc = readable("certificate", id->cert_path, err, cap);
	if (!rc)
		rc = readable("key", c->key ? c->key : "", err, cap);
	if (!rc)
		rc = new_ctx(st, true, suites, &id->ctx[1], err, cap);
	if (rc)
		return rc;

	SSL_CTX *srv = id->ctx[1];
	if (SSL_CTX_use_certificate_chain_file(srv, id->cert_path) != 1)
		return fail(err, cap, -EINVAL, "certificate %s: %s", id->cert_path,
			    zr_openssl_reason(why, sizeof(why)));
	if (SSL_CTX_use_PrivateKey_file(srv, c->key, SSL_FILETYPE_PEM) != 1) {
		/* OpenSSL checks the pair here already; name both files then. */
		if (ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
			return fail(err, cap, -EINVAL, "key %s: %s", c->key, zr_openssl_reason(why, sizeof(why)));
		ERR_clear_error();
		return fail(err, cap, -EINVAL, "key %s does not match certificate %s", c->key, id->cert_path);
	}
	if (SSL_CTX_check_private_key(srv) != 1)
		return fail(err, cap, -EINVAL, "key %s does not match certificate %s: %s", c->key, id->cert_path,
			    zr_openssl_reason(why, sizeof(why)));
	rc = check_leaf(st, id, srv, err, cap);
	if (rc)
		return rc;

	/* The client side presents the same objects; no second parse. */
	STACK_OF(X509) *chain = NULL;
	SSL_CTX_get0_chain_certs(srv, &chain);
	rc = new_ctx(st, false, suites, &id->ctx[0], err, cap);
	if (rc)
		return rc;
	if (SSL_CTX_use_cert_and_key(id->ctx[0], SSL_CTX_get0_certificate(srv), SSL_CTX_get0_privatekey(srv), chain,
				     1) != 1)
		return fail(err, cap, -EINVAL, "certificate %s: %s", id->cert_path,
			    zr_openssl_reason(why, sizeof(why)));

	if (id->info.expired) {
		char when[32] = "?";
		struct tm tm;
		if (gmtime_r(&id->info.not_after, &tm))
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		zr_warn_unlimited("tls", "certificate %s for %s expired at %s: it is not presented until replaced",
				  id->cert_path, id->identity, when);
	}
	return 0;
}

int zr_identity_store_load(const zr_config_t *cfg, zr_identity_store_t **out, char *err, size_t cap)
{
	char suites[512];
	*out = NULL;
	if (cap)
		err[0] = '\0';
	zr_identity_store_t *st = calloc(1, sizeof(*st));
	if (!st)
		return fail(err, cap, -ENOMEM, "out of memory");
	atomic_init(&st->refs, 1);

	const char *ca = cfg->identity.ca_certificates;
	size_t n = cfg->identity.n_certificates;
	int rc = load_providers(st, cfg->tls.openssl_provider, err, cap);
	if (!rc && n && !ca)
		rc = fail(err, cap, -EINVAL, "identity.certificates needs identity.caCertificates");
	if (!rc && ca)
		rc = load_anchors(st, ca, err, cap);
	if (!rc)
		rc = join_suites(cfg, suites, sizeof(suites), err, cap);
	if (!rc && n && !(st->ids = calloc(n, sizeof(*st->ids))))
		rc = fail(err, cap, -ENOMEM, "out of memory");
	for (size_t i = 0; !rc && i < n; i++) {
		st->n = i + 1; /* so that store_free releases a half-built entry */
		rc = load_identity(st, &st->ids[i], &cfg->identity.certificates[i], suites[0] ? suites : NULL, err,
				   cap);
	}
	ERR_clear_error();
	if (rc) {
		store_free(st);
		return rc;
	}
	zr_debug("tls", "%zu identities loaded", st->n);
	*out = st;
	return 0;
}
