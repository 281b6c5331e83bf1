/* SOCKS5 parser: complete, partial, malformed and unsupported input. */
#include <arpa/inet.h>
#include <errno.h>

#include "core/socks5.h"
#include "tap.h"

int main(void)
{
	zr_socks5_request_t req;

	is(zr_socks5_parse_greeting((const uint8_t *)"\x05\x01\x00", 3), 3, "greeting with no-auth is accepted");
	is(zr_socks5_parse_greeting((const uint8_t *)"\x05\x02\x02\x00", 4), 4, "no-auth found among methods");
	is(zr_socks5_parse_greeting((const uint8_t *)"\x05\x02\x00", 3), 0, "partial greeting asks for more");
	is(zr_socks5_parse_greeting((const uint8_t *)"\x05", 1), 0, "version alone asks for more");
	is(zr_socks5_parse_greeting((const uint8_t *)"\x04\x01\x00", 3), -EPROTO, "SOCKS4 is a protocol error");
	is(zr_socks5_parse_greeting((const uint8_t *)"\x05\x00", 2), -EPROTO, "zero methods is a protocol error");
	is(zr_socks5_parse_greeting((const uint8_t *)"\x05\x01\x02", 3), -EACCES, "no no-auth method: refused");

	const uint8_t v4[] = {5, 1, 0, 1, 127, 10, 0, 1, 0, 80};
	is(zr_socks5_parse_request(v4, sizeof(v4), &req), 10, "IPv4 CONNECT parsed");
	is(req.port, 80, "port");
	ok(req.atyp == ZR_SOCKS5_ATYP_IPV4 && req.ip.family == AF_INET && req.ip.bytes[1] == 10, "IPv4 address");
	for (size_t i = 0; i < sizeof(v4); i++)
		if (zr_socks5_parse_request(v4, i, &req) != 0)
			ok(0, "prefix of %zu bytes should ask for more", i);
	ok(1, "every prefix of an IPv4 request asks for more");

	uint8_t v6[22] = {5, 1, 0, 4};
	inet_pton(AF_INET6, "::1", v6 + 4);
	v6[20] = 0x1f;
	v6[21] = 0x90;
	is(zr_socks5_parse_request(v6, sizeof(v6), &req), 22, "IPv6 CONNECT parsed");
	ok(req.ip.family == AF_INET6 && req.port == 8080, "IPv6 address and port");

	const char host[] = "echo.default.svc.cluster.local";
	uint8_t dn[300] = {5, 1, 0, 3, (uint8_t)(sizeof(host) - 1)};
	memcpy(dn + 5, host, sizeof(host) - 1);
	dn[5 + sizeof(host) - 1] = 0;
	dn[6 + sizeof(host) - 1] = 80;
	size_t dn_len = 7 + sizeof(host) - 1;
	is(zr_socks5_parse_request(dn, dn_len, &req), (long long)dn_len, "domain CONNECT parsed");
	is_str(req.host, host, "domain name");

	uint8_t bind_req[] = {5, 2, 0, 1, 127, 0, 0, 1, 0, 80};
	is(zr_socks5_parse_request(bind_req, sizeof(bind_req), &req), -ENOTSUP, "BIND is not supported (0x07)");
	uint8_t udp_req[] = {5, 3, 0, 1, 127, 0, 0, 1, 0, 80};
	is(zr_socks5_parse_request(udp_req, sizeof(udp_req), &req), -ENOTSUP, "UDP ASSOCIATE is not supported");
	uint8_t bad_atyp[] = {5, 1, 0, 9, 1, 2, 3, 4, 0, 80};
	is(zr_socks5_parse_request(bad_atyp, sizeof(bad_atyp), &req), -EAFNOSUPPORT, "unknown address type (0x08)");
	uint8_t bad_rsv[] = {5, 1, 7, 1, 127, 0, 0, 1, 0, 80};
	is(zr_socks5_parse_request(bad_rsv, sizeof(bad_rsv), &req), -EPROTO, "non-zero reserved byte");
	uint8_t bad_ver[] = {4, 1, 0, 1, 127, 0, 0, 1, 0, 80};
	is(zr_socks5_parse_request(bad_ver, sizeof(bad_ver), &req), -EPROTO, "wrong version");
	uint8_t empty_name[] = {5, 1, 0, 3, 0, 0, 80};
	is(zr_socks5_parse_request(empty_name, sizeof(empty_name), &req), -EPROTO, "empty domain name");
	uint8_t ctl_name[] = {5, 1, 0, 3, 3, 'a', '\n', 'b', 0, 80};
	is(zr_socks5_parse_request(ctl_name, sizeof(ctl_name), &req), -EPROTO, "control bytes in domain name");

	uint8_t out[32];
	zr_sockaddr_t sa;
	if (zr_addr_parse("127.0.0.2:4242", &sa) != 0)
		return 1;
	is(zr_socks5_reply(out, 0, &sa), 10, "IPv4 reply is 10 bytes");
	ok(out[0] == 5 && out[1] == 0 && out[3] == 1 && out[4] == 127 && out[7] == 2 && out[8] == 0x10 &&
		   out[9] == 0x92,
	   "reply carries the bound address");
	is(zr_socks5_reply(out, ZR_SOCKS5_CONN_REFUSED, NULL), 10, "failure reply without address");
	is(out[1], ZR_SOCKS5_CONN_REFUSED, "failure code");
	return done_testing();
}
