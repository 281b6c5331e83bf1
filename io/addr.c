#include "io/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int zr_ip_parse(const char *s, zr_ip_t *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, s, out->bytes) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, out->bytes) == 1) {
		if (memcmp(out->bytes, v4mapped_prefix, 12) == 0) {
			memmove(out->bytes, out->bytes + 12, 4);
			memset(out->bytes + 4, 0, 12);
			out->family = AF_INET;
		} else {
			out->family = AF_INET6;
		}
		return 0;
	}
	return -EINVAL;
}

int zr_cidr_parse(const char *s, zr_ip_t *ip, uint8_t *prefix_len)
{
	char tmp[80];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof(tmp))
		return -EINVAL;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	if (zr_ip_parse(tmp, ip) != 0)
		return -EINVAL;
	/* ::ffff:a.b.c.d is stored as IPv4, but its prefix counts IPv6 bits:
	 * /96../128 are /0../32 of the IPv4 address; a shorter one would
	 * cover more than IPv4-mapped addresses, which no IPv4 prefix says. */
	bool mapped = ip->family == AF_INET && strchr(tmp, ':');
	unsigned max = ip->family == AF_INET && !mapped ? 32 : 128;
	if (!slash) {
		*prefix_len = ip->family == AF_INET ? 32 : 128;
		return 0;
	}
	/* Decimal digits only: strtoul would take "-0" (as 0, the whole
	 * address space), "+8" and " 8". */
	const char *d = slash + 1;
	size_t nd = strspn(d, "0123456789");
	if (nd == 0 || nd > 3 || d[nd] != '\0')
		return -EINVAL;
	unsigned p = (unsigned)strtoul(d, NULL, 10);
	if (p > max || (mapped && p < 96))
		return -EINVAL;
	*prefix_len = (uint8_t)(mapped ? p - 96 : p);
	return 0;
}

bool zr_ip_in_cidr(const zr_ip_t *ip, const zr_ip_t *net, uint8_t prefix_len)
{
	if (ip->family != net->family)
		return false;
	unsigned full = prefix_len / 8, rest = prefix_len % 8;
	if (memcmp(ip->bytes, net->bytes, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (ip->bytes[full] & mask) == (net->bytes[full] & mask);
}

int zr_addr_parse(const char *s, zr_sockaddr_t *out)
{
	char host[80];
	const char *port_str;
	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		port_str = close + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host) || strchr(s, ':') != colon)
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		port_str = colon + 1;
	}
	char *end;
	errno = 0;
	unsigned long port = strtoul(port_str, &end, 10);
	if (errno || end == port_str || *end != '\0' || port > 65535 || *port_str == '-' || *port_str == '+')
		return -EINVAL;
	zr_ip_t ip;
	if (zr_ip_parse(host, &ip) != 0)
		return -EINVAL;
	zr_sockaddr_from_ip(out, &ip, (uint16_t)port);
	return 0;
}

void zr_sockaddr_from_ip(zr_sockaddr_t *out, const zr_ip_t *ip, uint16_t port)
{
	memset(out, 0, sizeof(*out));
	if (ip->family == AF_INET) {
		out->in4.sin_family = AF_INET;
		out->in4.sin_port = htons(port);
		memcpy(&out->in4.sin_addr, ip->bytes, 4);
		out->len = sizeof(out->in4);
	} else {
		out->in6.sin6_family = AF_INET6;
		out->in6.sin6_port = htons(port);
		memcpy(&out->in6.sin6_addr, ip->bytes, 16);
		out->len = sizeof(out->in6);
	}
}

void zr_sockaddr_to_ip(const zr_sockaddr_t *sa, zr_ip_t *ip, uint16_t *port)
{
	memset(ip, 0, sizeof(*ip));
	if (sa->sa.sa_family == AF_INET) {
		ip->family = AF_INET;
		memcpy(ip->bytes, &sa->in4.sin_addr, 4);
		if (port)
			*port = ntohs(sa->in4.sin_port);
	} else {
		const uint8_t *b = (const uint8_t *)&sa->in6.sin6_addr;
		if (memcmp(b, v4mapped_prefix, 12) == 0) {
			ip->family = AF_INET;
			memcpy(ip->bytes, b + 12, 4);
		} else {
			ip->family = AF_INET6;
			memcpy(ip->bytes, b, 16);
		}
		if (port)
			*port = ntohs(sa->in6.sin6_port);
	}
}

uint16_t zr_sockaddr_port(const zr_sockaddr_t *sa)
{
	return ntohs(sa->sa.sa_family == AF_INET ? sa->in4.sin_port : sa->in6.sin6_port);
}

bool zr_ip_equal(const zr_ip_t *a, const zr_ip_t *b)
{
	return a->family == b->family && memcmp(a->bytes, b->bytes, a->family == AF_INET ? 4 : 16) == 0;
}

uint32_t zr_ip_hash(const zr_ip_t *ip)
{
	uint32_t h = 2166136261u ^ ip->family;
	unsigned n = ip->family == AF_INET ? 4 : 16;
	for (unsigned i = 0; i < n; i++)
		h = (h ^ ip->bytes[i]) * 16777619u;
	return h;
}

const char *zr_ip_str(const zr_ip_t *ip, char *buf)
{
	if (!inet_ntop(ip->family == AF_INET ? AF_INET : AF_INET6, ip->bytes, buf, ZR_ADDR_STRLEN))
		snprintf(buf, ZR_ADDR_STRLEN, "?");
	return buf;
}

const char *zr_sockaddr_str(const zr_sockaddr_t *sa, char *buf)
{
	zr_ip_t ip;
	uint16_t port;
	char ipbuf[ZR_ADDR_STRLEN];
	zr_sockaddr_to_ip(sa, &ip, &port);
	zr_ip_str(&ip, ipbuf);
	snprintf(buf, ZR_ADDR_STRLEN, ip.family == AF_INET ? "%s:%u" : "[%s]:%u", ipbuf, port);
	return buf;
}
