#include "core/socks5.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

int zr_socks5_parse_greeting(const uint8_t *buf, size_t len)
{
	if (len < 1)
		return 0;
	if (buf[0] != 5)
		return -EPROTO;
	if (len < 2)
		return 0;
	unsigned n = buf[1];
	if (n == 0)
		return -EPROTO;
	if (len < 2 + (size_t)n)
		return 0;
	for (unsigned i = 0; i < n; i++)
		if (buf[2 + i] == 0x00)
			return (int)(2 + n);
	return -EACCES;
}

int zr_socks5_parse_request(const uint8_t *buf, size_t len, zr_socks5_request_t *req)
{
	memset(req, 0, sizeof(*req));
	if (len < 1)
		return 0;
	if (buf[0] != 5)
		return -EPROTO;
	if (len < 4)
		return 0;
	if (buf[2] != 0)
		return -EPROTO;
	size_t need;
	switch (buf[3]) {
	case ZR_SOCKS5_ATYP_IPV4:
		need = 4 + 4 + 2;
		break;
	case ZR_SOCKS5_ATYP_IPV6:
		need = 4 + 16 + 2;
		break;
	case ZR_SOCKS5_ATYP_DOMAIN:
		if (len < 5)
			return 0;
		if (buf[4] == 0)
			return -EPROTO;
		need = 5 + (size_t)buf[4] + 2;
		break;
	default:
		return buf[1] == 1 ? -EAFNOSUPPORT : -ENOTSUP;
	}
	if (len < need)
		return 0;
	if (buf[1] != 1)
		return -ENOTSUP;
	req->atyp = buf[3];
	const uint8_t *p = buf + 4;
	if (req->atyp == ZR_SOCKS5_ATYP_IPV4) {
		req->ip.family = AF_INET;
		memcpy(req->ip.bytes, p, 4);
		p += 4;
	} else if (req->atyp == ZR_SOCKS5_ATYP_IPV6) {
		req->ip.family = AF_INET6;
		memcpy(req->ip.bytes, p, 16);
		p += 16;
	} else {
		size_t n = *p++;
		for (size_t i = 0; i < n; i++)
			if (p[i] == 0 || p[i] < 0x21 || p[i] > 0x7e)
				return -EPROTO;
		memcpy(req->host, p, n);
		req->host[n] = '\0';
		p += n;
	}
	req->port = (uint16_t)((p[0] << 8) | p[1]);
	return (int)need;
}

size_t zr_socks5_reply(uint8_t *out, uint8_t code, const zr_sockaddr_t *bound)
{
	out[0] = 5;
	out[1] = code;
	out[2] = 0;
	if (bound && bound->sa.sa_family == AF_INET6) {
		out[3] = ZR_SOCKS5_ATYP_IPV6;
		memcpy(out + 4, &bound->in6.sin6_addr, 16);
		memcpy(out + 20, &bound->in6.sin6_port, 2);
		return 22;
	}
	out[3] = ZR_SOCKS5_ATYP_IPV4;
	if (bound && bound->sa.sa_family == AF_INET) {
		memcpy(out + 4, &bound->in4.sin_addr, 4);
		memcpy(out + 8, &bound->in4.sin_port, 2);
	} else {
		memset(out + 4, 0, 6);
	}
	return 10;
}
