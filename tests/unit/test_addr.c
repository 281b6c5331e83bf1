/* io/addr.c's CIDR parser (policies' sourceIps/destinationIps, services'
 * cidrVips): the prefix length is 1 to 3 decimal digits within the family's
 * range, nothing else ("/-0" was /0, everything); an IPv4-mapped address
 * (stored as IPv4) takes an IPv6 prefix of 96..128, counted from bit 96. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "io/addr.h"
#include "tap.h"

static void test_good(void)
{
	static const struct {
		const char *s, *ip;
		unsigned len;
	} cases[] = {
		{"10.1.2.3/8", "10.1.2.3", 8},
		{"10.0.0.0/0", "10.0.0.0", 0},
		{"10.0.0.0/32", "10.0.0.0", 32},
		{"10.0.0.0/08", "10.0.0.0", 8},
		{"10.0.0.0/008", "10.0.0.0", 8},
		{"10.0.0.1", "10.0.0.1", 32},
		{"fd00::/64", "fd00::", 64},
		{"fd00::1/128", "fd00::1", 128},
		{"fd00::1", "fd00::1", 128},
		{"::/0", "::", 0},
		{"::ffff:10.9.9.9/120", "10.9.9.9", 24},
		{"::ffff:10.9.9.9/128", "10.9.9.9", 32},
		{"::ffff:10.9.9.9/96", "10.9.9.9", 0},
		{"::ffff:10.9.9.9/104", "10.9.9.9", 8},
		{"::FFFF:a09:909/112", "10.9.9.9", 16},
		{"::ffff:10.9.9.9", "10.9.9.9", 32},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		zr_ip_t ip;
		uint8_t len = 99;
		char buf[ZR_ADDR_STRLEN];
		int rc = zr_cidr_parse(cases[i].s, &ip, &len);
		ok(rc == 0 && !strcmp(zr_ip_str(&ip, buf), cases[i].ip) && len == cases[i].len, "\"%s\" is %s/%u",
		   cases[i].s, cases[i].ip, cases[i].len);
		if (rc == 0 && (strcmp(buf, cases[i].ip) || len != cases[i].len))
			diag("  got %s/%u", buf, len);
	}
}

/* The string as C would write it, for test names. */
static const char *printable(const char *s, char *buf, size_t size)
{
	size_t o = 0;
	for (; *s && o + 5 < size; s++)
		o += (size_t)snprintf(buf + o, size - o, *s == '\n' ? "\\n" : *s == '\t' ? "\\t" : "%c", *s);
	buf[o] = '\0';
	return buf;
}

static void test_bad(void)
{
	static const char *const bad[] = {
		"10.1.2.3/-0",
		"10.1.2.3/-8",
		"10.0.0.0/+8",
		"10.0.0.0/ 8",
		"10.0.0.0/\t8",
		"10.0.0.0/8 ",
		"10.0.0.0/8\n",
		"10.0.0.0/",
		"10.0.0.0/33",
		"10.0.0.0/0008",
		"10.0.0.0/0x8",
		"10.0.0.0/8/8",
		"10.0.0.0//8",
		"10.0.0.0/4294967304",
		"10.0.0.0/18446744073709551624",
		"10.0.0.0/8a",
		"fd00::/129",
		"fd00::/1000",
		"::/-0",
		"::ffff:10.9.9.9/24",
		"::ffff:10.9.9.9/95",
		"::ffff:10.9.9.9/0",
		"::ffff:10.9.9.9/129",
		"/8",
		"",
		"10.0.0/8",
		"abc/8",
		" 10.0.0.0/8",
		"10.0.0.256/8",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		zr_ip_t ip;
		uint8_t len;
		char buf[128];
		is(zr_cidr_parse(bad[i], &ip, &len), -EINVAL, "\"%s\" is refused", printable(bad[i], buf, sizeof(buf)));
	}
}

/* What the parsed prefix covers, through zr_ip_in_cidr as authz uses it. */
static void test_contains(void)
{
	static const struct {
		const char *cidr, *ip;
		bool in;
	} cases[] = {
		{"::ffff:10.9.9.0/120", "10.9.9.200", true}, {"::ffff:10.9.9.0/120", "10.9.10.1", false},
		{"::ffff:10.9.9.9/128", "10.9.9.9", true},   {"::ffff:10.9.9.9/128", "10.9.9.8", false},
		{"::ffff:10.9.9.9/96", "192.168.1.1", true}, {"::ffff:10.9.9.9/96", "fd00::1", false},
		{"10.1.2.3/8", "10.200.0.1", true},	     {"10.1.2.3/8", "11.0.0.1", false},
		{"fd00::/64", "fd00::ffff:1.2.3.4", true},   {"fd00::/64", "10.0.0.1", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		zr_ip_t net, ip;
		uint8_t len;
		bool good = zr_cidr_parse(cases[i].cidr, &net, &len) == 0 && zr_ip_parse(cases[i].ip, &ip) == 0 &&
			    zr_ip_in_cidr(&ip, &net, len) == cases[i].in;
		ok(good, "%s %s %s", cases[i].cidr, cases[i].in ? "holds" : "does not hold", cases[i].ip);
	}
}

int main(void)
{
	test_good();
	test_bad();
	test_contains();
	return done_testing();
}
