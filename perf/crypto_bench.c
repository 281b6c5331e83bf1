/* `zring-bench crypto`: AEAD throughput of every record crypto backend built
 * in and usable here, one thread, batches of records as the record layer
 * submits them, beside `openssl speed -evp` on the same machine in the same
 * run as the baseline everyone knows. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/aead.h"
#include "perf/bench.h"

#define BATCH  32
#define NSIZES 2
static const size_t sizes[NSIZES] = {1024, 16384};

typedef struct cell {
	const char *backend;
	zr_aead_alg_t alg;
	size_t size;
	double seal_gbs, open_gbs; /* NAN: not measured */
} cell_t;

typedef struct speed {
	zr_aead_alg_t alg;
	size_t size;
	double gbs; /* NAN: openssl speed did not run or gave nothing */
} speed_t;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seals or opens batches of BATCH records for about seconds; GB/s of
 * payload (10^9 bytes). Every record reuses its nonce: fine for a
 * measurement, never for traffic. */
static double measure_slice(zr_aead_key_t *k, bool seal, zr_aead_rec_t *recs, double seconds)
{
	uint64_t bytes = 0;
	double start = now_s(), t = start;
	/* check the clock once per few batches: it costs more than a 1 KiB
	 * record */
	while (t - start < seconds) {
		for (int i = 0; i < 8; i++) {
			int rc = seal ? zr_aead_seal(k, recs, BATCH) : zr_aead_open(k, recs, BATCH);
			if (rc)
				return NAN;
			for (int r = 0; r < BATCH; r++)
				bytes += recs[r].len;
		}
		t = now_s();
	}
	return (double)bytes / (t - start) / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The median of SLICES slices: a shared machine's bursts of other work
 * move one slice, not the figure. */
#define SLICES 5
static double measure(zr_aead_key_t *k, bool seal, zr_aead_rec_t *recs, double seconds)
{
	double v[SLICES];
	for (int i = 0; i < SLICES; i++) {
		v[i] = measure_slice(k, seal, recs, seconds / SLICES);
		if (isnan(v[i]))
			return NAN;
	}
	qsort(v, SLICES, sizeof(v[0]), cmp_double);
	return v[SLICES / 2];
}

static int run_cell(const zr_aead_backend_t *b, zr_aead_alg_t alg, size_t size, double seconds, cell_t *c)
{
	*c = (cell_t){.backend = b->name, .alg = alg, .size = size, .seal_gbs = NAN, .open_gbs = NAN};
	uint8_t key[32];
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(i * 7 + 1);
	zr_aead_key_t *k;
	int rc = zr_aead_key_new(b, alg, key, &k);
	if (rc)
		return rc;
	static uint8_t aad[BATCH][5], tag[BATCH][16];
	uint8_t *plain = malloc(BATCH * size), *cipher = malloc(BATCH * size), *back = malloc(BATCH * size);
	zr_aead_rec_t recs[BATCH];
	if (!plain || !cipher || !back) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < BATCH * size; i++)
		plain[i] = (uint8_t)(i * 31);
	for (int r = 0; r < BATCH; r++) {
		memcpy(aad[r], "\x17\x03\x03\x40\x11", 5);
		recs[r] = (zr_aead_rec_t){.in = plain + r * size,
					  .out = cipher + r * size,
					  .len = size,
					  .aad = aad[r],
					  .aad_len = 5,
					  .tag = tag[r]};
		memset(recs[r].nonce, r, sizeof(recs[r].nonce));
	}
	/* seal out of place (plaintext kept), then open the result out of
	 * place so every open authenticates */
	c->seal_gbs = measure(k, true, recs, seconds);
	for (int r = 0; r < BATCH; r++) {
		recs[r].in = cipher + r * size;
		recs[r].out = back + r * size;
	}
	c->open_gbs = measure(k, false, recs, seconds);
	if (memcmp(back, plain, BATCH * size) != 0)
		c->open_gbs = NAN; /* a backend that does not round-trip has no figure */
out:
	free(plain);
	free(cipher);
	free(back);
	zr_aead_key_free(k);
	return rc;
}

/* `openssl speed -evp <alg> -bytes <size> -seconds <s>`: the last line is
 * "<ALG>  <rate>k" in 1000s of bytes per second. */
static double openssl_speed(zr_aead_alg_t alg, size_t size, int seconds)
{
	static const char *const evp[] = {"aes-128-gcm", "aes-256-gcm", "chacha20-poly1305"};
	char cmd[160], line[256], last[256] = "";
	snprintf(cmd, sizeof(cmd), "openssl speed -evp %s -bytes %zu -seconds %d 2>/dev/null", evp[alg], size, seconds);
	FILE *p = popen(cmd, "r");
	if (!p)
		return NAN;
	while (fgets(line, sizeof(line), p))
		if (line[0] && line[0] != '\n')
			snprintf(last, sizeof(last), "%s", line);
	if (pclose(p) != 0)
		return NAN;
	char name[64];
	double k;
	if (sscanf(last, "%63s %lfk", name, &k) != 2)
		return NAN;
	return k * 1000.0 / 1e9;
}

static zr_record_crypto_t choice_of(const char *name)
{
	if (strcmp(name, "ipsec-mb") == 0)
		return ZR_RECORD_CRYPTO_IPSEC_MB;
	if (strcmp(name, "dpdk") == 0)
		return ZR_RECORD_CRYPTO_DPDK;
	return ZR_RECORD_CRYPTO_OPENSSL;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: zring-bench crypto [--seconds S] [--json FILE] [--no-openssl-speed]\n"
		"  AEAD seal/open GB/s per backend, algorithm and record size (1 KiB, 16 KiB),\n"
		"  batches of %d records, one thread; beside `openssl speed -evp` as the baseline.\n",
		BATCH);
}

static void fmt(char *buf, size_t cap, double v)
{
	if (isnan(v))
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%.2f", v);
}

int zr_bench_crypto_main(int argc, char **argv)
{
	double seconds = 1.0;
	const char *json_path = NULL;
	bool run_speed = true;
	static const struct option longopts[] = {
		{"seconds", required_argument, NULL, 's'},
		{"json", required_argument, NULL, 'j'},
		{"no-openssl-speed", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	optind = 1;
	for (int o; (o = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
		char *end;
		switch (o) {
		case 's':
			seconds = strtod(optarg, &end);
			if (*end || !(seconds > 0) || seconds > 600) {
				fprintf(stderr, "zring-bench crypto: --seconds: '%s' is not a duration in (0, 600]\n",
					optarg);
				return 2;
			}
			break;
		case 'j':
			json_path = optarg;
			break;
		case 'n':
			run_speed = false;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}

	cell_t cells[8 * ZR_AEAD_ALG_COUNT * NSIZES];
	size_t ncells = 0;
	const char *skipped[8] = {0};
	char skip_why[8][256];
	size_t nb = 0;
	for (size_t i = 0; zr_aead_backends[i] && i < 8; i++, nb++) {
		const zr_aead_backend_t *b;
		char err[256];
		if (zr_aead_select(choice_of(zr_aead_backends[i]->name), NULL, &b, err, sizeof(err)) != 0) {
			skipped[i] = zr_aead_backends[i]->name;
			snprintf(skip_why[i], sizeof(skip_why[i]), "%s", err);
			fprintf(stderr, "crypto: %s skipped: %s\n", zr_aead_backends[i]->name, err);
			continue;
		}
		fprintf(stderr, "crypto: %s: %s\n", b->name, b->describe());
		for (int alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++) {
			if (!b->supports(alg))
				continue;
			for (int s = 0; s < NSIZES; s++) {
				int rc = run_cell(b, alg, sizes[s], seconds, &cells[ncells]);
				if (rc)
					fprintf(stderr, "crypto: %s %s: %s\n", b->name, zr_aead_alg_name(alg),
						strerror(-rc));
				ncells++;
			}
		}
	}

	speed_t speeds[ZR_AEAD_ALG_COUNT * NSIZES];
	size_t nspeeds = 0;
	int speed_seconds = seconds < 1 ? 1 : (int)lround(seconds);
	for (int alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++)
		for (int s = 0; s < NSIZES; s++)
			speeds[nspeeds++] =
				(speed_t){alg, sizes[s], run_speed ? openssl_speed(alg, sizes[s], speed_seconds) : NAN};

	printf("%-10s %-18s %7s %10s %10s %16s\n", "backend", "algorithm", "record", "seal GB/s", "open GB/s",
	       "openssl speed");
	for (size_t i = 0; i < ncells; i++) {
		cell_t *c = &cells[i];
		double base = NAN;
		for (size_t j = 0; j < nspeeds; j++)
			if (speeds[j].alg == c->alg && speeds[j].size == c->size)
				base = speeds[j].gbs;
		char seal[16], open[16], sp[16];
		fmt(seal, sizeof(seal), c->seal_gbs);
		fmt(open, sizeof(open), c->open_gbs);
		fmt(sp, sizeof(sp), base);
		printf("%-10s %-18s %6zuB %10s %10s %16s\n", c->backend, zr_aead_alg_name(c->alg), c->size, seal, open,
		       sp);
	}
	/* the headline: ipsec-mb against openssl speed, 16 KiB records */
	double ratio[ZR_AEAD_ALG_COUNT];
	for (int alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++) {
		ratio[alg] = NAN;
		for (size_t i = 0; i < ncells; i++)
			if (strcmp(cells[i].backend, "ipsec-mb") == 0 && cells[i].alg == (zr_aead_alg_t)alg &&
			    cells[i].size == 16384)
				for (size_t j = 0; j < nspeeds; j++)
					if (speeds[j].alg == (zr_aead_alg_t)alg && speeds[j].size == 16384)
						ratio[alg] = cells[i].seal_gbs / speeds[j].gbs;
		if (!isnan(ratio[alg]))
			printf("ipsec-mb seal / openssl speed, %s, 16 KiB: %.2fx\n", zr_aead_alg_name(alg), ratio[alg]);
	}
	printf("(one thread, batches of %d records, %.1f s per cell, median of %d slices; GB = 10^9 bytes of payload)\n",
	       BATCH, seconds, SLICES);

	if (json_path) {
		FILE *f = fopen(json_path, "w");
		if (!f) {
			fprintf(stderr, "zring-bench crypto: --json: %s: %s\n", json_path, strerror(errno));
			return 1;
		}
		zr_json_t j;
		zr_json_init(&j, f);
		zr_json_object_begin(&j, NULL);
		zr_json_str(&j, "mode", "crypto");
		zr_json_num(&j, "seconds_per_cell", seconds);
		zr_json_uint(&j, "batch", BATCH);
		zr_json_uint(&j, "threads", 1);
		zr_json_array_begin(&j, "backends");
		for (size_t i = 0; i < nb; i++) {
			zr_json_object_begin(&j, NULL);
			zr_json_str(&j, "name", zr_aead_backends[i]->name);
			zr_json_bool(&j, "usable", !skipped[i]);
			zr_json_str(&j, skipped[i] ? "skipped" : "description",
				    skipped[i] ? skip_why[i] : zr_aead_backends[i]->describe());
			zr_json_object_end(&j);
		}
		zr_json_array_end(&j);
		zr_json_array_begin(&j, "results");
		for (size_t i = 0; i < ncells; i++) {
			zr_json_object_begin(&j, NULL);
			zr_json_str(&j, "backend", cells[i].backend);
			zr_json_str(&j, "algorithm", zr_aead_alg_name(cells[i].alg));
			zr_json_uint(&j, "record_bytes", cells[i].size);
			zr_json_num(&j, "seal_gbytes_per_s", cells[i].seal_gbs);
			zr_json_num(&j, "open_gbytes_per_s", cells[i].open_gbs);
			zr_json_object_end(&j);
		}
		zr_json_array_end(&j);
		zr_json_array_begin(&j, "openssl_speed");
		for (size_t i = 0; i < nspeeds; i++) {
			zr_json_object_begin(&j, NULL);
			zr_json_str(&j, "algorithm", zr_aead_alg_name(speeds[i].alg));
			zr_json_uint(&j, "record_bytes", speeds[i].size);
			zr_json_num(&j, "gbytes_per_s", speeds[i].gbs);
			zr_json_object_end(&j);
		}
		zr_json_array_end(&j);
		zr_json_object_begin(&j, "ipsecmb_over_openssl_speed_16k");
		for (int alg = 0; alg < ZR_AEAD_ALG_COUNT; alg++)
			zr_json_num(&j, zr_aead_alg_name(alg), ratio[alg]);
		zr_json_object_end(&j);
		zr_json_object_end(&j);
		fputc('\n', f);
		if (fclose(f) != 0) {
			fprintf(stderr, "zring-bench crypto: --json: %s: %s\n", json_path, strerror(errno));
			return 1;
		}
	}
	zr_aead_thread_cleanup();
	return 0;
}
