/* SVG plots for the reports: self-contained SVG 1.1 (no scripts, no external
 * fonts or styles) so a file can be attached to an issue or opened from disk.
 * Every piece of text goes through xml_text, since series names and titles
 * come from the command line. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "perf/bench.h"

#define WIDTH	  860
#define HEIGHT	  480
#define TOP	  46
#define BOTTOM	  52
#define LEFT	  78
#define LEGEND_W  190
#define N_COLOURS 8

/* Tableau 10: distinguishable, and readable by most colour-blind viewers */
static const char *const colours[N_COLOURS] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
					       "#59a14f", "#edc948", "#b07aa1", "#9c755f"};

typedef struct frame {
	FILE *f;
	double x0, x1, y0, y1; /* data range shown */
	double left, top, w, h;
} frame_t;

static double px(const frame_t *fr, double x)
{
	return fr->left + (x - fr->x0) / (fr->x1 - fr->x0) * fr->w;
}

static double py(const frame_t *fr, double y)
{
	return fr->top + fr->h - (y - fr->y0) / (fr->y1 - fr->y0) * fr->h;
}

/* Length of a valid UTF-8 sequence at s, 0 if none (XML parsers reject
 * malformed UTF-8, so such bytes are replaced). */
static int utf8_len(const unsigned char *s)
{
	int n = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
	for (int i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((n == 2 && s[0] < 0xc2) || (n == 3 && s[0] == 0xe0 && s[1] < 0xa0) ||
	    (n == 3 && s[0] == 0xed && s[1] >= 0xa0) ||
	    (n == 4 && (s[0] > 0xf4 || (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))))
		return 0;
	return n;
}

static void xml_text(FILE *f, const char *text)
{
	const unsigned char *s = (const unsigned char *)(text ? text : "");
	while (*s) {
		int n = utf8_len(s);
		if (*s == '&')
			fputs("&amp;", f);
		else if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else if (*s == '"')
			fputs("&quot;", f);
		else if (*s == '\'')
			fputs("&apos;", f);
		else if (!n || (*s < 0x20 && *s != '\t'))
			fputc('?', f); /* not allowed in XML 1.0 */
		else
			fwrite(s, 1, (size_t)n, f);
		s += n ? n : 1;
	}
}

static void begin(FILE *f, const char *title, int height)
{
	fprintf(f,
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
		"viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n<title>",
		WIDTH, height, WIDTH, height);
	xml_text(f, title);
	fprintf(f, "</title>\n<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", WIDTH, height);
	fprintf(f, "<text x=\"%d\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">", WIDTH / 2);
	xml_text(f, title);
	fputs("</text>\n", f);
}

static int finish(FILE *f)
{
	fputs("</svg>\n", f);
	int err = ferror(f) ? -EIO : 0;
	if (fclose(f) && !err)
		err = errno ? -errno : -EIO;
	return err;
}

/* A "nice" step (1, 2 or 5 times a power of ten) giving about `ticks` ticks. */
static double nice_step(double range, int ticks)
{
	if (!(range > 0))
		return 1;
	double raw = range / ticks, mag = pow(10, floor(log10(raw))), norm = raw / mag;
	return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

static double nice_max(double max)
{
	if (!(max > 0) || !isfinite(max))
		return 1;
	double step = nice_step(max, 5);
	return ceil(max / step * (1 - 1e-9)) * step;
}

/* Decimals that show a tick step without noise (0.25 -> 2, 50 -> 0). */
static int decimals_for(double step)
{
	int d = (int)ceil(-log10(step) - 1e-9);
	return d < 0 ? 0 : d > 6 ? 6 : d;
}

/* Gridlines and labels of a linear y axis from 0 to fr->y1. */
static void y_axis(const frame_t *fr, const char *label)
{
	double step = nice_step(fr->y1 - fr->y0, 5);
	int dec = decimals_for(step);
	for (double v = fr->y0; v <= fr->y1 * (1 + 1e-9); v += step) {
		double y = py(fr, v);
		fprintf(fr->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n", fr->left,
			y, fr->left + fr->w, y);
		fprintf(fr->f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.*f</text>\n", fr->left - 6, y + 4,
			dec, v);
	}
	fprintf(fr->f, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">",
		fr->top + fr->h / 2);
	xml_text(fr->f, label);
	fputs("</text>\n", fr->f);
}

static void x_tick(const frame_t *fr, double x, const char *text)
{
	double X = px(fr, x);
	fprintf(fr->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n", X, fr->top, X,
		fr->top + fr->h);
	fprintf(fr->f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", X, fr->top + fr->h + 18);
	xml_text(fr->f, text);
	fputs("</text>\n", fr->f);
}

static void x_label(const frame_t *fr, const char *label)
{
	fprintf(fr->f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", fr->left + fr->w / 2,
		fr->top + fr->h + 40);
	xml_text(fr->f, label);
	fputs("</text>\n", fr->f);
}

static void frame_box(const frame_t *fr)
{
	fprintf(fr->f,
		"<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888888\"/>\n",
		fr->left, fr->top, fr->w, fr->h);
}

static void legend(const frame_t *fr, const zr_svg_series_t *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		double x = fr->left + fr->w + 16, y = fr->top + 10 + 20.0 * i;
		fprintf(fr->f,
			"<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>\n"
			"<text x=\"%.1f\" y=\"%.1f\">",
			x, y, x + 22, y, colours[i % N_COLOURS], x + 28, y + 4);
		xml_text(fr->f, s[i].name);
		fputs("</text>\n", fr->f);
	}
}

static void polyline_begin(FILE *f, unsigned i)
{
	fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"",
		colours[i % N_COLOURS]);
}

int zr_svg_latency_spectrum(const char *path, const char *title, const zr_svg_series_t *s, unsigned n)
{
	/* x = log10(1 / (1 - p)): 0 is p0, 1 is p90, ... 5 is p99.999 */
	static const struct {
		double x;
		const char *label;
	} ticks[] = {{0, "0%"}, {0.30103, "50%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}, {5, "99.999%"}};
	double max_ns = 0;
	for (unsigned i = 0; i < n; i++)
		if (s[i].hist && s[i].hist->count && (double)s[i].hist->max > max_ns)
			max_ns = (double)s[i].hist->max;
	double scale = max_ns < 1e6 ? 1e3 : max_ns < 1e9 ? 1e6 : 1e9;
	const char *unit = scale == 1e3 ? "latency (\xc2\xb5s)" : scale == 1e6 ? "latency (ms)" : "latency (s)";

	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	frame_t fr = {.f = f, .x0 = 0, .x1 = 5, .y0 = 0, .y1 = nice_max(max_ns / scale), .left = LEFT, .top = TOP};
	fr.w = WIDTH - LEFT - LEGEND_W;
	fr.h = HEIGHT - TOP - BOTTOM;
	begin(f, title, HEIGHT);
	y_axis(&fr, unit);
	for (unsigned i = 0; i < sizeof(ticks) / sizeof(ticks[0]); i++)
		x_tick(&fr, ticks[i].x, ticks[i].label);
	x_label(&fr, "percentile");
	frame_box(&fr);
	for (unsigned i = 0; i < n; i++) {
		const zr_hist_t *h = s[i].hist;
		polyline_begin(f, i);
		if (h && h->count) {
			/* beyond 1/(1-p) = count the histogram has nothing more to say */
			double x_end = fmin(5, log10((double)h->count));
			for (double x = 0; x < x_end; x += 0.02)
				fprintf(f, "%.1f,%.1f ", px(&fr, x),
					py(&fr, (double)zr_hist_percentile(h, 100 * (1 - pow(10, -x))) / scale));
			fprintf(f, "%.1f,%.1f", px(&fr, x_end), py(&fr, (double)h->max / scale));
		}
		fputs("\"/>\n", f);
	}
	legend(&fr, s, n);
	return finish(f);
}

int zr_svg_time_series(const char *path, const char *title, const char *unit, const zr_svg_series_t *s, unsigned n)
{
	double max_v = 0, max_t = 0;
	for (unsigned i = 0; i < n; i++) {
		double t = s[i].n_values * (s[i].interval_s > 0 ? s[i].interval_s : 1);
		if (t > max_t)
			max_t = t;
		for (unsigned k = 0; k < s[i].n_values; k++)
			if (isfinite(s[i].values[k]) && s[i].values[k] > max_v)
				max_v = s[i].values[k];
	}
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	frame_t fr = {.f = f, .x0 = 0, .x1 = nice_max(max_t), .y0 = 0, .y1 = nice_max(max_v), .left = LEFT, .top = TOP};
	fr.w = WIDTH - LEFT - LEGEND_W;
	fr.h = HEIGHT - TOP - BOTTOM;
	begin(f, title, HEIGHT);
	y_axis(&fr, unit);
	double step = nice_step(fr.x1, 8);
	int dec = decimals_for(step);
	for (double t = 0; t <= fr.x1 * (1 + 1e-9); t += step) {
		char text[32];
		snprintf(text, sizeof(text), "%.*f", dec, t);
		x_tick(&fr, t, text);
	}
	x_label(&fr, "time (s)");
	frame_box(&fr);
	for (unsigned i = 0; i < n; i++) {
		double dt = s[i].interval_s > 0 ? s[i].interval_s : 1;
		polyline_begin(f, i);
		/* each value is plotted at the end of its interval */
		for (unsigned k = 0; k < s[i].n_values; k++)
			if (isfinite(s[i].values[k]))
				fprintf(f, "%s%.1f,%.1f", k ? " " : "", px(&fr, (k + 1) * dt), py(&fr, s[i].values[k]));
		fputs("\"/>\n", f);
	}
	legend(&fr, s, n);
	return finish(f);
}

int zr_svg_bars(const char *path, const char *title, const char *unit, const char *const *labels, const double *values,
		unsigned n)
{
	size_t longest = 0;
	double max_v = 0;
	for (unsigned i = 0; i < n; i++) {
		size_t len = strlen(labels[i] ? labels[i] : "");
		if (len > longest)
			longest = len;
		if (isfinite(values[i]) && values[i] > max_v)
			max_v = values[i];
	}
	/* about 7 px per character at 12 px sans-serif */
	double left = fmin(20 + 7.0 * (double)longest, WIDTH / 2.0);
	double bar_h = 22, gap = 10;
	int height = (int)(TOP + BOTTOM + n * (bar_h + gap) + gap);
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	frame_t fr = {.f = f, .x0 = 0, .x1 = nice_max(max_v * 1.12), .y0 = 0, .y1 = 1, .left = left, .top = TOP};
	fr.w = WIDTH - left - 40;
	fr.h = height - TOP - BOTTOM;
	begin(f, title, height);
	double step = nice_step(fr.x1, 6);
	int dec = decimals_for(step);
	for (double v = 0; v <= fr.x1 * (1 + 1e-9); v += step) {
		char text[32];
		snprintf(text, sizeof(text), "%.*f", dec, v);
		x_tick(&fr, v, text);
	}
	x_label(&fr, unit);
	frame_box(&fr);
	for (unsigned i = 0; i < n; i++) {
		double y = TOP + gap + i * (bar_h + gap), v = isfinite(values[i]) && values[i] > 0 ? values[i] : 0;
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", left - 8, y + bar_h / 2 + 4);
		xml_text(f, labels[i]);
		fprintf(f, "</text>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", left,
			y, px(&fr, v) - left, bar_h, colours[i % N_COLOURS]);
		if (isfinite(values[i]))
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%.3g</text>\n", px(&fr, v) + 5, y + bar_h / 2 + 4,
				values[i]);
		else
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">n/a</text>\n", px(&fr, v) + 5, y + bar_h / 2 + 4);
	}
	return finish(f);
}

int zr_bench_report_svg(const char *path, const zr_bench_opts_t *o, const zr_bench_result_t *r)
{
	char title[512];
	zr_svg_series_t s = {.name = o->target_text[0] ? o->target_text : zr_bench_mode_name(r->mode)};
	if (r->mode == ZR_BENCH_RR || r->mode == ZR_BENCH_CRR) {
		if (o->rate > 0)
			snprintf(title, sizeof(title),
				 "zring-bench %s: latency by percentile at %.0f req/s, %u connections",
				 zr_bench_mode_name(r->mode), o->rate, o->connections);
		else
			snprintf(title, sizeof(title), "zring-bench %s: latency by percentile, %u connections",
				 zr_bench_mode_name(r->mode), o->connections);
		s.hist = &r->latency;
		return zr_svg_latency_spectrum(path, title, &s, 1);
	}
	if (r->mode != ZR_BENCH_STREAM)
		return -EINVAL; /* the servers measure nothing to plot */
	snprintf(title, sizeof(title), "zring-bench stream: throughput, %u connections", o->connections);
	s.values = r->series_gbps;
	s.n_values = r->n_series < ZR_BENCH_SERIES_MAX ? r->n_series : ZR_BENCH_SERIES_MAX;
	s.interval_s = 0.1;
	return zr_svg_time_series(path, title, "Gbit/s", &s, 1);
}
