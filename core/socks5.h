/* SOCKS5 (RFC 1928) parsing: the greeting and the CONNECT request, no
 * authentication. Pure functions over a byte buffer; any thread. */
#ifndef ZR_CORE_SOCKS5_H
#define ZR_CORE_SOCKS5_H

#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"

#define ZR_SOCKS5_ATYP_IPV4   1
#define ZR_SOCKS5_ATYP_DOMAIN 3
#define ZR_SOCKS5_ATYP_IPV6   4

/* Reply codes (RFC 1928 §6). */
#define ZR_SOCKS5_OK		   0x00
#define ZR_SOCKS5_GENERAL_FAILURE  0x01
#define ZR_SOCKS5_NOT_ALLOWED	   0x02
#define ZR_SOCKS5_NET_UNREACHABLE  0x03
#define ZR_SOCKS5_HOST_UNREACHABLE 0x04
#define ZR_SOCKS5_CONN_REFUSED	   0x05
#define ZR_SOCKS5_TTL_EXPIRED	   0x06 /* used for timeouts */
#define ZR_SOCKS5_CMD_UNSUPPORTED  0x07
#define ZR_SOCKS5_ATYP_UNSUPPORTED 0x08

typedef struct zr_socks5_request {
	uint8_t atyp;
	zr_ip_t ip;	/* ATYP_IPV4 / ATYP_IPV6 */
	char host[256]; /* ATYP_DOMAIN, NUL-terminated */
	uint16_t port;
} zr_socks5_request_t;

/* Parses the method-selection greeting at buf[0..len).
 * Returns the bytes consumed (> 0) when complete and "no authentication"
 * is offered; 0 when more bytes are needed; -EPROTO when malformed (wrong
 * version, no methods); -EACCES when no-auth is not offered. */
int zr_socks5_parse_greeting(const uint8_t *buf, size_t len);

/* Parses a request. Returns the bytes consumed (> 0) with *req filled; 0
 * when more bytes are needed; -EPROTO malformed; -ENOTSUP a command other
 * than CONNECT (reply 0x07); -EAFNOSUPPORT an unknown address type (0x08). */
int zr_socks5_parse_request(const uint8_t *buf, size_t len, zr_socks5_request_t *req);

/* Writes a reply with `code` and bound address `bound` (may be NULL:
 * 0.0.0.0:0) into out (at least 22 bytes); returns its length. */
size_t zr_socks5_reply(uint8_t *out, uint8_t code, const zr_sockaddr_t *bound);

#endif
