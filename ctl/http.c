/* Request-head parsing for the control servers (HTTP/1.x, RFC 9112). */
#include "ctl/http-int.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool parse_request_line(const char *p, const char *eol, struct request *req)
{
	size_t n = 0;
	while (p + n < eol && is_tchar((unsigned char)p[n]))
		n++;
	if (n == 0 || n >= sizeof(req->method) || p + n >= eol || p[n] != ' ')
		return false;
	memcpy(req->method, p, n);
	req->method[n] = '\0';
	p += n + 1;
	const char *sp = memchr(p, ' ', (size_t)(eol - p));
	if (!sp || *p != '/')
		return false;
	const char *q = memchr(p, '?', (size_t)(sp - p));
	const char *path_end = q ? q : sp;
	if ((size_t)(path_end - p) >= sizeof(req->path) || (q && (size_t)(sp - q - 1) >= sizeof(req->query)))
		return false;
	memcpy(req->path, p, (size_t)(path_end - p));
	req->path[path_end - p] = '\0';
	req->query[0] = '\0';
	if (q) {
		memcpy(req->query, q + 1, (size_t)(sp - q - 1));
		req->query[sp - q - 1] = '\0';
	}
	sp++;
	size_t vlen = (size_t)(eol - sp);
	if (vlen && sp[vlen - 1] == '\r')
		vlen--;
	return vlen == 8 && memcmp(sp, "HTTP/1.", 7) == 0 && (sp[7] == '0' || sp[7] == '1');
}

int zr_http_parse_request(const char *buf, size_t len, struct request *req)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)buf[i];
		if ((ch < 0x20 && ch != '\r' && ch != '\n' && ch != '\t') || ch == 0x7f)
			return 400;
	}
	const char *eol = memchr(buf, '\n', len);
	if (!eol) {
		size_t n = 0;
		while (n < len && is_tchar((unsigned char)buf[n]))
			n++;
		if ((n < len && buf[n] != ' ') || n >= sizeof(req->method))
			return 400;
		return len >= REQ_MAX ? 431 : -EAGAIN;
	}
	if (!parse_request_line(buf, eol, req))
		return 400;
	const char *end = buf + len;
	for (const char *line = eol + 1;;) {
		const char *next = memchr(line, '\n', (size_t)(end - line));
		if (!next)
			return len >= REQ_MAX ? 431 : -EAGAIN;
		size_t llen = (size_t)(next - line);
		if (llen && line[llen - 1] == '\r')
			llen--;
		if (llen == 0)
			return 0;
		size_t n = 0;
		while (n < llen && is_tchar((unsigned char)line[n]))
			n++;
		if (n == 0 || n == llen || line[n] != ':')
			return 400;
		/* Bodies are never read, but a request that frames one in a way
		 * we can't trust is refused (RFC 9112 §6.3). */
		if (n == 14 && strncasecmp(line, "content-length", 14) == 0) {
			const char *v = line + 15, *vend = line + llen;
			while (v < vend && (*v == ' ' || *v == '\t'))
				v++;
			while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
				vend--;
			if (v == vend || vend - v > 9)
				return 400;
			for (const char *d = v; d < vend; d++)
				if (*d < '0' || *d > '9')
					return 400;
		} else if (n == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
			return 400;
		}
		line = next + 1;
	}
}

const char *zr_http_query_param(const char *query, const char *key, char *out, size_t cap)
{
	size_t klen = strlen(key);
	for (const char *p = query; *p;) {
		size_t n = strcspn(p, "&");
		if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
			size_t vlen = n - klen - 1;
			if (vlen >= cap)
				return NULL;
			memcpy(out, p + klen + 1, vlen);
			out[vlen] = '\0';
			return out;
		}
		p += n;
		if (*p)
			p++;
	}
	return NULL;
}
