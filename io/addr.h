/* Socket addresses: parsing "ip:port" / "[ip6]:port", formatting, and
 * comparison. Pure functions, any thread. */
#ifndef ZR_IO_ADDR_H
#define ZR_IO_ADDR_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* An IP address (v4 or v6) without port; v4 is stored as v4, not mapped. */
typedef struct zr_ip {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t bytes[16];
} zr_ip_t;

typedef struct zr_sockaddr {
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
		struct sockaddr_storage ss;
	};
	socklen_t len;
} zr_sockaddr_t;

/* "1.2.3.4:80", "[::1]:80", "0.0.0.0:15001". Returns 0 or -EINVAL. */
int zr_addr_parse(const char *s, zr_sockaddr_t *out) __attribute__((warn_unused_result));
/* "1.2.3.4" or "::1" (an IPv4-mapped IPv6 address is stored as IPv4). */
int zr_ip_parse(const char *s, zr_ip_t *out) __attribute__((warn_unused_result));
/* "10.0.0.0/8", or a plain address (full-length prefix). The length is 1-3
 * decimal digits; an IPv4-mapped address takes /96../128, stored as the
 * IPv4 prefix (length - 96). */
int zr_cidr_parse(const char *s, zr_ip_t *ip, uint8_t *prefix_len) __attribute__((warn_unused_result));
bool zr_ip_in_cidr(const zr_ip_t *ip, const zr_ip_t *net, uint8_t prefix_len);

void zr_sockaddr_from_ip(zr_sockaddr_t *out, const zr_ip_t *ip, uint16_t port);
/* Extracts the IP and port (IPv4-mapped IPv6 becomes IPv4). */
void zr_sockaddr_to_ip(const zr_sockaddr_t *sa, zr_ip_t *ip, uint16_t *port);
uint16_t zr_sockaddr_port(const zr_sockaddr_t *sa);

bool zr_ip_equal(const zr_ip_t *a, const zr_ip_t *b);
uint32_t zr_ip_hash(const zr_ip_t *ip);

/* Formats into buf (at least ZR_ADDR_STRLEN): "1.2.3.4:80" / "[::1]:80". */
#define ZR_ADDR_STRLEN 64
const char *zr_sockaddr_str(const zr_sockaddr_t *sa, char *buf);
const char *zr_ip_str(const zr_ip_t *ip, char *buf);

#endif
