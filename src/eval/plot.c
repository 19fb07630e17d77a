/* plot.c — scatter/line plots and heat maps for `kvant formats --plot` and `kvant study --report`, drawn on one
 * canvas interface with two backends: SVG text and an RGB raster encoded as PNG (png.c). Text is monospace
 * with a fixed advance (6 px × scale, 8 px line) in both backends — the SVG pins each string's width with
 * textLength — so the label placement (greedy, around each point, avoiding markers, other labels and the
 * legend) holds for both files. */
#include "eval/font5x7.h"
#include "eval/plot_impl.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------------------------------------------------- */
/* canvas                                                                                                     */

typedef struct canvas {
    int w, h;
    int svg;
    uint8_t *rgb;                 /* raster backend */
    char *buf;                    /* SVG backend */
    size_t len, cap;
    int oom;
    int clip, cx0, cy0, cx1, cy1; /* raster clip rectangle (SVG: a clipPath group) */
} canvas;

#define CHAR_W 6
#define CHAR_H 10

static void cv_printf(canvas *c, const char *fmt, ...) {
    if (c->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(c->buf + c->len, c->cap - c->len, fmt, ap);
        va_end(ap);
        if (k < 0) { c->oom = 1; return; }
        if ((size_t)k < c->cap - c->len) { c->len += (size_t)k; return; }
        size_t cap = (c->cap + (size_t)k + 1) * 2;
        char *q = realloc(c->buf, cap);
        if (!q) { c->oom = 1; return; }
        c->buf = q;
        c->cap = cap;
    }
}

static int cv_init(canvas *c, int w, int h, int svg) {
    memset(c, 0, sizeof *c);
    c->w = w;
    c->h = h;
    c->svg = svg;
    if (svg) {
        c->cap = 1 << 16;
        c->buf = malloc(c->cap);
        if (!c->buf) return -1;
        c->buf[0] = 0;
        cv_printf(c, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                     "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\">\n"
                     "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", w, h, w, h, w, h);
    } else {
        c->rgb = malloc((size_t)w * (size_t)h * 3);
        if (!c->rgb) return -1;
        memset(c->rgb, 255, (size_t)w * (size_t)h * 3);
    }
    return c->oom ? -1 : 0;
}

static void cv_free(canvas *c) {
    free(c->rgb);
    free(c->buf);
}

static void px(canvas *c, int x, int y, int32_t col) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    if (c->clip && (x < c->cx0 || x > c->cx1 || y < c->cy0 || y > c->cy1)) return;
    uint8_t *p = c->rgb + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    p[0] = (uint8_t)(col >> 16);
    p[1] = (uint8_t)(col >> 8);
    p[2] = (uint8_t)col;
}

static void cv_clip(canvas *c, int on, double x0, double y0, double x1, double y1) {
    c->clip = on;
    c->cx0 = (int)floor(x0);
    c->cy0 = (int)floor(y0);
    c->cx1 = (int)ceil(x1);
    c->cy1 = (int)ceil(y1);
    if (!c->svg) return;
    if (on)
        cv_printf(c, "<clipPath id=\"area\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n"
                     "<g clip-path=\"url(#area)\">\n", x0, y0, x1 - x0, y1 - y0);
    else cv_printf(c, "</g>\n");
}

static void fill_rect(canvas *c, double x, double y, double w, double h, int32_t col) {
    if (c->svg) {
        cv_printf(c, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#%06x\"/>\n", x, y, w, h,
                  (unsigned)col);
        return;
    }
    for (int yy = (int)lround(y); yy < (int)lround(y + h); yy++)
        for (int xx = (int)lround(x); xx < (int)lround(x + w); xx++) px(c, xx, yy, col);
}

static void stroke_rect(canvas *c, double x, double y, double w, double h, int32_t col) {
    if (c->svg) {
        cv_printf(c, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#%06x\"/>\n",
                  x, y, w, h, (unsigned)col);
        return;
    }
    int x0 = (int)lround(x), y0 = (int)lround(y), x1 = (int)lround(x + w), y1 = (int)lround(y + h);
    for (int xx = x0; xx <= x1; xx++) { px(c, xx, y0, col); px(c, xx, y1, col); }
    for (int yy = y0; yy <= y1; yy++) { px(c, x0, yy, col); px(c, x1, yy, col); }
}

static void disc(canvas *c, double cx, double cy, double r, int32_t col) {
    int ri = (int)ceil(r);
    for (int dy = -ri; dy <= ri; dy++)
        for (int dx = -ri; dx <= ri; dx++)
            if (dx * dx + dy * dy <= r * r + 0.25) px(c, (int)lround(cx) + dx, (int)lround(cy) + dy, col);
}

/* A segment of width wd; dashed: 6 on, 4 off. */
static void line(canvas *c, double x0, double y0, double x1, double y1, int32_t col, double wd, int dashed) {
    if (c->svg) {
        cv_printf(c, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#%06x\" stroke-width=\"%.1f\"%s/>\n",
                  x0, y0, x1, y1, (unsigned)col, wd, dashed ? " stroke-dasharray=\"6 4\"" : "");
        return;
    }
    double len = hypot(x1 - x0, y1 - y0);
    int steps = (int)ceil(len * 2) + 1;
    for (int s = 0; s <= steps; s++) {
        double t = (double)s / steps;
        if (dashed && fmod(t * len, 10.0) >= 6.0) continue;
        double x = x0 + t * (x1 - x0), y = y0 + t * (y1 - y0);
        if (wd <= 1.0) px(c, (int)lround(x), (int)lround(y), col);
        else disc(c, x, y, wd / 2, col);
    }
}

/* Markers by series: circle, square, triangle, diamond, cross. */
static void marker(canvas *c, double x, double y, int shape, double r, int32_t col) {
    shape %= 5;
    if (c->svg) {
        switch (shape) {
        case 0: cv_printf(c, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"#%06x\"/>\n", x, y, r, (unsigned)col); break;
        case 1: fill_rect(c, x - r, y - r, 2 * r, 2 * r, col); break;
        case 2:
            cv_printf(c, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"#%06x\"/>\n", x, y - r * 1.2,
                      x - r * 1.1, y + r * 0.8, x + r * 1.1, y + r * 0.8, (unsigned)col);
            break;
        case 3:
            cv_printf(c, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"#%06x\"/>\n", x, y - r * 1.3,
                      x + r * 1.3, y, x, y + r * 1.3, x - r * 1.3, y, (unsigned)col);
            break;
        default:
            line(c, x - r, y - r, x + r, y + r, col, 2, 0);
            line(c, x - r, y + r, x + r, y - r, col, 2, 0);
        }
        return;
    }
    int ri = (int)ceil(r * 1.3);
    for (int dy = -ri; dy <= ri; dy++)
        for (int dx = -ri; dx <= ri; dx++) {
            int in;
            switch (shape) {
            case 0: in = dx * dx + dy * dy <= r * r + 0.25; break;
            case 1: in = abs(dx) <= r && abs(dy) <= r; break;
            case 2: in = dy >= -r * 1.2 && dy <= r * 0.8 && fabs((double)dx) <= 1.1 * r * (dy + r * 1.2) / (2.0 * r); break;
            case 3: in = abs(dx) + abs(dy) <= r * 1.3; break;
            default: in = (abs(dx - dy) <= 1 || abs(dx + dy) <= 1) && abs(dx) <= r && abs(dy) <= r;
            }
            if (in) px(c, (int)lround(x) + dx, (int)lround(y) + dy, col);
        }
}

static int text_len(const char *s) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80) n++; /* one cell per UTF-8 character */
    return n;
}

/* Text of height CHAR_H*scale centred vertically on y; anchor 0 left, 1 centre, 2 right; vertical: rotated
 * -90 degrees (reads upwards), centred on (x, y) along its length. */
static void text(canvas *c, double x, double y, const char *s, int scale, int anchor, int32_t col, int vertical) {
    const int n = text_len(s);
    const double tw = (double)n * CHAR_W * scale;
    if (n == 0) return;
    if (c->svg) {
        const char *anc = anchor == 0 ? "start" : anchor == 1 ? "middle" : "end";
        cv_printf(c, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" fill=\"#%06x\" text-anchor=\"%s\" "
                     "dominant-baseline=\"central\" textLength=\"%.1f\" lengthAdjust=\"spacingAndGlyphs\"",
                  x, y, 10 * scale, (unsigned)col, anc, tw - scale);
        if (vertical) cv_printf(c, " transform=\"rotate(-90 %.1f %.1f)\"", x, y);
        cv_printf(c, ">");
        for (const char *p = s; *p; p++) {
            switch (*p) {
            case '&': cv_printf(c, "&amp;"); break;
            case '<': cv_printf(c, "&lt;"); break;
            case '>': cv_printf(c, "&gt;"); break;
            case '"': cv_printf(c, "&quot;"); break;
            default:
                if ((unsigned char)*p >= 0x20 || *p == '\t') cv_printf(c, "%c", *p);
            }
        }
        cv_printf(c, "</text>\n");
        return;
    }
    double start = anchor == 0 ? 0 : anchor == 1 ? -tw / 2 : -tw;
    int k = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p & 0xC0) == 0x80) continue;
        const unsigned ch = *p >= 0x20 && *p < 0x7F ? *p : '?';
        const uint8_t *g = kv_font5x7[ch - 0x20];
        const int drop = kv_font5x7_drop(ch);
        for (int gy = 0; gy < 7; gy++)
            for (int gx = 0; gx < 5; gx++) {
                if (!(g[gy] >> (4 - gx) & 1)) continue;
                for (int sy = 0; sy < scale; sy++)
                    for (int sx = 0; sx < scale; sx++) {
                        double u = start + (double)(k * CHAR_W + gx) * scale + sx; /* along the text */
                        double v = -4.5 * scale + (double)(gy + drop) * scale + sy;  /* across it */
                        if (!vertical) px(c, (int)lround(x + u), (int)lround(y + v), col);
                        else px(c, (int)lround(x + v), (int)lround(y - u), col);
                    }
            }
        k++;
    }
}

static kv_status cv_write(canvas *c, const char *path, kv_error *err) {
    const uint8_t *data;
    size_t n;
    uint8_t *png = NULL;
    if (c->svg) {
        cv_printf(c, "</svg>\n");
        if (c->oom) return kv_fail(err, KV_ENOMEM, "out of memory drawing %s", path);
        data = (const uint8_t *)c->buf;
        n = c->len;
    } else {
        kv_status st = kv_png_encode(c->rgb, c->w, c->h, &png, &n, err);
        if (st != KV_OK) return st;
        data = png;
    }
    kv_outfile *f = NULL;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st == KV_OK) {
        st = kv_outfile_write(f, data, n, err);
        if (st == KV_OK) st = kv_outfile_commit(f, err);
        else kv_outfile_abort(f);
    }
    free(png);
    return st;
}

/* 1 for .svg, 0 for .png, -1 otherwise. */
static int kind_of(const char *path) {
    size_t l = strlen(path);
    if (l >= 4 && !strcasecmp(path + l - 4, ".svg")) return 1;
    if (l >= 4 && !strcasecmp(path + l - 4, ".png")) return 0;
    return -1;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* axes                                                                                                       */

int32_t kv_plot_palette(int i) {
    static const int32_t pal[10] = {0x1f5fa8, 0xd9480f, 0x2b8a3e, 0xc2255c, 0x6741d9,
                                    0x8a6d00, 0x0b7285, 0x5c5f66, 0x74b816, 0x9c36b5};
    return pal[((i % 10) + 10) % 10];
}

typedef struct axis {
    int log;
    double lo, hi;      /* in data units */
    double p0, p1;      /* pixel positions of lo and hi */
} axis;

static double ax_map(const axis *a, double v) {
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return a->p0 + t * (a->p1 - a->p0);
}

static int usable(const axis *a, double v) { return isfinite(v) && (!a->log || v > 0); }

static void ax_range(axis *a, const kv_plot *p, int is_x, double fix_lo, double fix_hi) {
    if (fix_lo != fix_hi && (!a->log || (fix_lo > 0 && fix_hi > 0))) {
        a->lo = fmin(fix_lo, fix_hi);
        a->hi = fmax(fix_lo, fix_hi);
        return;
    }
    double lo = INFINITY, hi = -INFINITY;
    for (int s = 0; s < p->n_series; s++)
        for (int64_t i = 0; i < p->series[s].n; i++) {
            double v = is_x ? p->series[s].x[i] : p->series[s].y[i];
            double o = is_x ? p->series[s].y[i] : p->series[s].x[i];
            if (!usable(a, v) || !isfinite(o)) continue;
            lo = fmin(lo, v);
            hi = fmax(hi, v);
        }
    if (!isfinite(lo)) { lo = a->log ? 0.1 : 0; hi = a->log ? 10 : 1; }
    if (a->log) {
        double l0 = log10(lo), l1 = log10(hi), pad = fmax((l1 - l0) * 0.05, 0.05);
        a->lo = pow(10, l0 - pad);
        a->hi = pow(10, l1 + pad);
    } else {
        double pad = (hi - lo) * 0.05;
        if (pad == 0) pad = fabs(hi) > 0 ? fabs(hi) * 0.1 : 0.5;
        a->lo = lo - pad;
        a->hi = hi + pad;
    }
}

/* Tick values: decades (with 2 and 5 when the range spans under three) or 1-2-5 steps. */
static int ax_ticks(const axis *a, double *t, int max) {
    int n = 0;
    if (a->log) {
        int d0 = (int)floor(log10(a->lo)), d1 = (int)ceil(log10(a->hi));
        int step = (d1 - d0) > 12 ? (d1 - d0 + 11) / 12 : 1;
        const int sub = d1 - d0 < 3;
        for (int d = d0; d <= d1 && n < max; d += step) {
            static const double m[3] = {1, 2, 5};
            for (int k = 0; k < (sub ? 3 : 1) && n < max; k++) {
                double v = m[k] * pow(10, d);
                if (v >= a->lo * (1 - 1e-9) && v <= a->hi * (1 + 1e-9)) t[n++] = v;
            }
        }
        return n;
    }
    double span = a->hi - a->lo, raw = span / 6, mag = pow(10, floor(log10(raw))), step;
    double f = raw / mag;
    step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
    for (double v = ceil(a->lo / step) * step; v <= a->hi + step * 1e-9 && n < max; v += step)
        t[n++] = fabs(v) < step * 1e-9 ? 0 : v;
    return n;
}

static void tick_label(double v, char *s, size_t n) {
    if (v != 0 && (fabs(v) >= 1e5 || fabs(v) < 1e-3)) snprintf(s, n, "%.0e", v);
    else snprintf(s, n, "%g", v);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* label placement                                                                                            */

typedef struct box { double x0, y0, x1, y1; } box;

typedef struct boxes {
    box *b;
    int n, cap;
} boxes;

static int boxes_add(boxes *bs, box b) {
    if (bs->n == bs->cap) {
        int cap = bs->cap ? bs->cap * 2 : 64;
        box *q = realloc(bs->b, (size_t)cap * sizeof *q);
        if (!q) return -1;
        bs->b = q;
        bs->cap = cap;
    }
    bs->b[bs->n++] = b;
    return 0;
}

static int overlaps(const boxes *bs, box b) {
    for (int i = 0; i < bs->n; i++)
        if (b.x0 < bs->b[i].x1 && b.x1 > bs->b[i].x0 && b.y0 < bs->b[i].y1 && b.y1 > bs->b[i].y0) return 1;
    return 0;
}

typedef struct segs {
    double (*s)[4]; /* x0, y0, x1, y1 */
    int n, cap;
} segs;

static int segs_add(segs *ss, double xa, double ya, double xb, double yb) {
    if (ss->n == ss->cap) {
        int cap = ss->cap ? ss->cap * 2 : 64;
        double(*q)[4] = realloc(ss->s, (size_t)cap * sizeof *q);
        if (!q) return -1;
        ss->s = q;
        ss->cap = cap;
    }
    ss->s[ss->n][0] = xa;
    ss->s[ss->n][1] = ya;
    ss->s[ss->n][2] = xb;
    ss->s[ss->n][3] = yb;
    ss->n++;
    return 0;
}

/* Whether the segment (xa,ya)-(xb,yb) passes through box b (Liang-Barsky clipping against its four sides). */
static int seg_hits_box(const double *s, box b) {
    const double dx = s[2] - s[0], dy = s[3] - s[1];
    const double p[4] = {-dx, dx, -dy, dy}, q[4] = {s[0] - b.x0, b.x1 - s[0], s[1] - b.y0, b.y1 - s[1]};
    double t0 = 0, t1 = 1;
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return 0; /* parallel to this side and outside it */
            continue;
        }
        const double r = q[i] / p[i];
        if (p[i] < 0) { if (r > t1) return 0; if (r > t0) t0 = r; }
        else { if (r < t0) return 0; if (r < t1) t1 = r; }
    }
    return 1;
}

/* Whether two segments intersect (orientation test; touching counts). */
static int segs_cross(const double *a, const double *b) {
    const double d1 = (b[2] - b[0]) * (a[1] - b[1]) - (b[3] - b[1]) * (a[0] - b[0]);
    const double d2 = (b[2] - b[0]) * (a[3] - b[1]) - (b[3] - b[1]) * (a[2] - b[0]);
    const double d3 = (a[2] - a[0]) * (b[1] - a[1]) - (a[3] - a[1]) * (b[0] - a[0]);
    const double d4 = (a[2] - a[0]) * (b[3] - a[1]) - (a[3] - a[1]) * (b[2] - a[0]);
    return ((d1 > 0) != (d2 > 0) || d1 == 0 || d2 == 0) && ((d3 > 0) != (d4 > 0) || d3 == 0 || d4 == 0);
}

static int crosses(const segs *ss, box b) {
    for (int i = 0; i < ss->n; i++)
        if (seg_hits_box(ss->s[i], b)) return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* scatter / line plot                                                                                        */

typedef struct layout {
    double W, H, L, R, T, B; /* plot area: x in [L, W-R], y in [T, H-B] */
    double legend_x, legend_w;
} layout;

static void draw_plot(canvas *c, const kv_plot *p, const layout *lo, int *dropped) {
    const double x0 = lo->L, x1 = lo->W - lo->R, y0 = lo->T, y1 = lo->H - lo->B;
    axis ax = {.log = p->xlog, .p0 = x0, .p1 = x1}, ay = {.log = p->ylog, .p0 = y1, .p1 = y0};
    ax_range(&ax, p, 1, p->xmin, p->xmax);
    ax_range(&ay, p, 0, p->ymin, p->ymax);
    if (p->title) text(c, lo->W / 2, 16, p->title, 2, 1, 0x111111, 0);
    double ticks[64];
    char s[32];
    int nt = ax_ticks(&ax, ticks, 64);
    for (int i = 0; i < nt; i++) {
        double X = ax_map(&ax, ticks[i]);
        line(c, X, y0, X, y1, 0xe4e4e4, 1, 0);
        line(c, X, y1, X, y1 + 4, 0x333333, 1, 0);
        tick_label(ticks[i], s, sizeof s);
        text(c, X, y1 + 12, s, 1, 1, 0x333333, 0);
    }
    nt = ax_ticks(&ay, ticks, 64);
    for (int i = 0; i < nt; i++) {
        double Y = ax_map(&ay, ticks[i]);
        line(c, x0, Y, x1, Y, 0xe4e4e4, 1, 0);
        line(c, x0 - 4, Y, x0, Y, 0x333333, 1, 0);
        tick_label(ticks[i], s, sizeof s);
        text(c, x0 - 7, Y, s, 1, 2, 0x333333, 0);
    }
    stroke_rect(c, x0, y0, x1 - x0, y1 - y0, 0x333333);
    if (p->xlabel) text(c, (x0 + x1) / 2, lo->H - 16, p->xlabel, 2, 1, 0x111111, 0);
    if (p->ylabel) text(c, 14, (y0 + y1) / 2, p->ylabel, 2, 1, 0x111111, 1);

    /* series: lines first, markers over them; the lines are kept as obstacles for the point labels */
    segs curves = {0};
    cv_clip(c, 1, x0, y0, x1, y1);
    for (int si = 0; si < p->n_series; si++) {
        const kv_plot_series *se = &p->series[si];
        const int32_t col = se->color >= 0 ? se->color : kv_plot_palette(si);
        if (!se->line) continue;
        double px0 = 0, py0 = 0;
        int have = 0;
        for (int64_t i = 0; i < se->n; i++) {
            if (!usable(&ax, se->x[i]) || !usable(&ay, se->y[i])) { have = 0; continue; }
            double X = ax_map(&ax, se->x[i]), Y = ax_map(&ay, se->y[i]);
            if (have) {
                line(c, px0, py0, X, Y, col, 2, se->dashed);
                segs_add(&curves, px0, py0, X, Y);
            }
            px0 = X;
            py0 = Y;
            have = 1;
        }
    }
    boxes obst = {0};
    for (int si = 0; si < p->n_series; si++) {
        const kv_plot_series *se = &p->series[si];
        const int32_t col = se->color >= 0 ? se->color : kv_plot_palette(si);
        if (!se->marker) continue;
        for (int64_t i = 0; i < se->n; i++) {
            if (!usable(&ax, se->x[i]) || !usable(&ay, se->y[i])) continue;
            double X = ax_map(&ax, se->x[i]), Y = ax_map(&ay, se->y[i]);
            if (X < x0 - 1 || X > x1 + 1 || Y < y0 - 1 || Y > y1 + 1) continue;
            marker(c, X, Y, si / 10, 3.5, col);
            boxes_add(&obst, (box){X - 4, Y - 4, X + 4, Y + 4});
        }
    }
    cv_clip(c, 0, 0, 0, 0, 0);
    /* point labels: 8 directions at four distances (the far ones with a leader line), clear of every marker,
     * label and curve; leader lines cross no curve either where a free place allows it */
    static const double dirs[8][2] = {{1, 0}, {1, -1}, {1, 1}, {-1, 0}, {-1, -1}, {-1, 1}, {0, -1}, {0, 1}};
    for (int si = 0; si < p->n_series; si++) {
        const kv_plot_series *se = &p->series[si];
        const int32_t col = se->color >= 0 ? se->color : kv_plot_palette(si);
        if (!se->point_labels) continue;
        for (int64_t i = 0; i < se->n; i++) {
            const char *lab = se->point_labels[i];
            if (!lab || !*lab || !usable(&ax, se->x[i]) || !usable(&ay, se->y[i])) continue;
            double X = ax_map(&ax, se->x[i]), Y = ax_map(&ay, se->y[i]);
            if (X < x0 || X > x1 || Y < y0 || Y > y1) continue;
            const double tw = text_len(lab) * CHAR_W, th = CHAR_H + 2;
            int placed = 0;
            /* pass 0: leader lines that cross no curve; pass 1: any leader line */
            for (int pass = 0; pass < 2 && !placed; pass++)
                for (int ring = 0; ring < 4 && !placed; ring++) {
                    const double d = 7 + ring * 14;
                    for (int k = 0; k < 8 && !placed; k++) {
                        double ax0 = X + dirs[k][0] * d, ayc = Y + dirs[k][1] * (d * 0.8 + th / 2);
                        double bx0 = dirs[k][0] > 0 ? ax0 : dirs[k][0] < 0 ? ax0 - tw : X - tw / 2;
                        box b = {bx0 - 1, ayc - th / 2, bx0 + tw + 1, ayc + th / 2};
                        if (b.x0 < x0 + 1 || b.x1 > x1 - 1 || b.y0 < y0 + 1 || b.y1 > y1 - 1 || overlaps(&obst, b) ||
                            crosses(&curves, b))
                            continue;
                        const double lead[4] = {X + dirs[k][0] * 5, Y + dirs[k][1] * 5,
                                                dirs[k][0] > 0 ? b.x0 : dirs[k][0] < 0 ? b.x1 : X, ayc};
                        if (ring > 0 && pass == 0) {
                            /* the leader starts at its own marker, where curves meet: only its outer half counts */
                            const double outer[4] = {(lead[0] + lead[2]) / 2, (lead[1] + lead[3]) / 2, lead[2], lead[3]};
                            int hit = 0;
                            for (int q = 0; q < curves.n && !hit; q++) hit = segs_cross(curves.s[q], outer);
                            if (hit) continue;
                        }
                        if (ring > 0) line(c, lead[0], lead[1], lead[2], lead[3], 0xaaaaaa, 1, 0);
                        text(c, bx0, ayc, lab, 1, 0, col, 0);
                        boxes_add(&obst, b);
                        placed = 1;
                    }
                }
            if (!placed) (*dropped)++;
        }
    }
    free(obst.b);
    free(curves.s);
    /* legend, right of the plot area */
    double ly = y0 + 8;
    for (int si = 0; si < p->n_series; si++) {
        const kv_plot_series *se = &p->series[si];
        const int32_t col = se->color >= 0 ? se->color : kv_plot_palette(si);
        if (!se->label) continue;
        const double lx = lo->legend_x;
        if (se->line) line(c, lx, ly, lx + 22, ly, col, 2, se->dashed);
        if (se->marker) marker(c, lx + 11, ly, si / 10, 3.5, col);
        text(c, lx + 28, ly, se->label, 1, 0, 0x222222, 0);
        ly += 16;
        if (ly > lo->H - lo->B) break;
    }
    if (*dropped > 0) {
        char note[64];
        snprintf(note, sizeof note, "%d labels hidden", *dropped);
        text(c, lo->legend_x, ly + 8, note, 1, 0, 0x777777, 0);
        snprintf(note, sizeof note, "(no free space)");
        text(c, lo->legend_x, ly + 20, note, 1, 0, 0x777777, 0);
    }
}

static layout plot_layout(const kv_plot *p) {
    layout lo = {.W = p->width > 0 ? p->width : 960, .H = p->height > 0 ? p->height : 640};
    int maxl = 15; /* "N labels hidden" */
    for (int s = 0; s < p->n_series; s++)
        if (p->series[s].label) maxl = text_len(p->series[s].label) > maxl ? text_len(p->series[s].label) : maxl;
    if (maxl > 40) maxl = 40;
    lo.legend_w = 28 + maxl * CHAR_W + 12;
    lo.L = 84;
    lo.R = lo.legend_w + 16;
    lo.T = 36;
    lo.B = 56;
    lo.legend_x = lo.W - lo.R + 14;
    return lo;
}

kv_status kv_plot_write(const kv_plot *p, const char *path, kv_error *err) {
    const int kind = kind_of(path);
    if (kind < 0) return kv_fail(err, KV_EINVAL, "plot '%s': the file name must end in .svg or .png", path);
    if (!p || p->n_series <= 0) return kv_fail(err, KV_EINVAL, "plot '%s': nothing to draw", path);
    layout lo = plot_layout(p);
    if (lo.W - lo.L - lo.R < 100 || lo.H - lo.T - lo.B < 100 || lo.W > 8192 || lo.H > 8192)
        return kv_fail(err, KV_EINVAL, "plot '%s': %gx%g pixels leave no room for the plot", path, lo.W, lo.H);
    canvas c;
    if (cv_init(&c, (int)lo.W, (int)lo.H, kind) != 0) {
        cv_free(&c);
        return kv_fail(err, KV_ENOMEM, "out of memory drawing %s", path);
    }
    int dropped = 0;
    draw_plot(&c, p, &lo, &dropped);
    kv_status st = cv_write(&c, path, err);
    cv_free(&c);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* heat map                                                                                                   */

/* A sequential ramp, pale yellow to dark blue, by linear interpolation between five anchors. */
static int32_t ramp(double t) {
    static const int32_t a[5] = {0xfff7c0, 0xb5e0a0, 0x4fb6a8, 0x2c74b0, 0x1b2a72};
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double f = t * 4;
    int i = (int)f;
    if (i >= 4) i = 3;
    f -= i;
    int32_t out = 0;
    for (int sh = 16; sh >= 0; sh -= 8) {
        double u = ((a[i] >> sh) & 255) * (1 - f) + ((a[i + 1] >> sh) & 255) * f;
        out |= (int32_t)lround(u) << sh;
    }
    return out;
}

static int dark(int32_t c) { return 0.299 * (c >> 16 & 255) + 0.587 * (c >> 8 & 255) + 0.114 * (c & 255) < 128; }

kv_status kv_heatmap_write(const kv_heatmap *h, const char *path, kv_error *err) {
    const int kind = kind_of(path);
    if (kind < 0) return kv_fail(err, KV_EINVAL, "heat map '%s': the file name must end in .svg or .png", path);
    if (!h || h->rows <= 0 || h->cols <= 0 || h->rows > 512 || h->cols > 512)
        return kv_fail(err, KV_EINVAL, "heat map '%s': needs 1..512 rows and columns", path);
    const char *vf = h->value_fmt ? h->value_fmt : "%.1f";
    int rl = 1, cl = 1, vl = 1;
    char s[64];
    for (int r = 0; r < h->rows; r++)
        if (h->row_labels && h->row_labels[r] && text_len(h->row_labels[r]) > rl) rl = text_len(h->row_labels[r]);
    for (int k = 0; k < h->cols; k++)
        if (h->col_labels && h->col_labels[k] && text_len(h->col_labels[k]) > cl) cl = text_len(h->col_labels[k]);
    double vmin = h->vmin, vmax = h->vmax;
    if (vmin == vmax) {
        vmin = INFINITY;
        vmax = -INFINITY;
        for (int i = 0; i < h->rows * h->cols; i++)
            if (isfinite(h->v[i])) { vmin = fmin(vmin, h->v[i]); vmax = fmax(vmax, h->v[i]); }
        if (!isfinite(vmin)) { vmin = 0; vmax = 1; }
        if (vmax == vmin) vmax = vmin + 1;
    }
    for (int i = 0; i < h->rows * h->cols; i++)
        if (isfinite(h->v[i])) {
            snprintf(s, sizeof s, vf, h->v[i]);
            if (text_len(s) > vl) vl = text_len(s);
        }
    if (rl > 40) rl = 40;
    if (cl > 40) cl = 40;
    const double cellw = fmax(vl * CHAR_W + 10, 30), cellh = 22;
    const int vert = cl * CHAR_W + 4 > cellw; /* column labels upright when they are wider than a cell */
    const double L = 20 + rl * CHAR_W + 12 + (h->ylabel ? 20 : 0);
    const double T = 40 + (vert ? cl * CHAR_W + 8 : 16) + (h->xlabel ? 22 : 0);
    const double gridw = cellw * h->cols, gridh = cellh * h->rows;
    const double need_w = fmax(L + gridw + 110, h->title ? text_len(h->title) * CHAR_W * 2 + 40 : 0);
    const double W = h->width > 0 ? h->width : need_w, H = h->height > 0 ? h->height : T + fmax(gridh, 60) + 30;
    if (W > 8192 || H > 8192) return kv_fail(err, KV_EINVAL, "heat map '%s' would be over 8192 pixels", path);
    canvas c;
    if (cv_init(&c, (int)W, (int)H, kind) != 0) {
        cv_free(&c);
        return kv_fail(err, KV_ENOMEM, "out of memory drawing %s", path);
    }
    if (h->title) text(&c, W / 2, 16, h->title, 2, 1, 0x111111, 0);
    if (h->xlabel) text(&c, L + gridw / 2, 40, h->xlabel, 1, 1, 0x111111, 0);
    if (h->ylabel) text(&c, 14, T + gridh / 2, h->ylabel, 1, 1, 0x111111, 1);
    for (int k = 0; k < h->cols; k++) {
        const char *lab = h->col_labels && h->col_labels[k] ? h->col_labels[k] : "";
        double X = L + cellw * (k + 0.5);
        if (vert) text(&c, X, T - 6 - text_len(lab) * CHAR_W / 2.0, lab, 1, 1, 0x222222, 1);
        else text(&c, X, T - 10, lab, 1, 1, 0x222222, 0);
    }
    for (int r = 0; r < h->rows; r++) {
        const char *lab = h->row_labels && h->row_labels[r] ? h->row_labels[r] : "";
        double Y = T + cellh * (r + 0.5);
        text(&c, L - 8, Y, lab, 1, 2, 0x222222, 0);
        for (int k = 0; k < h->cols; k++) {
            double v = h->v[r * h->cols + k], X = L + cellw * k;
            int32_t col = isfinite(v) ? ramp((v - vmin) / (vmax - vmin)) : 0xeeeeee;
            fill_rect(&c, X, T + cellh * r, cellw, cellh, col);
            if (isfinite(v)) snprintf(s, sizeof s, vf, v);
            else snprintf(s, sizeof s, "-");
            text(&c, X + cellw / 2, Y, s, 1, 1, dark(col) ? 0xffffff : 0x111111, 0);
        }
    }
    stroke_rect(&c, L, T, gridw, gridh, 0x333333);
    /* colour bar */
    const double bx = L + gridw + 24, bh = fmax(gridh, 60);
    for (int i = 0; i < 50; i++) fill_rect(&c, bx, T + bh * i / 50.0, 14, bh / 50.0 + 0.5, ramp(1 - i / 49.0));
    stroke_rect(&c, bx, T, 14, bh, 0x333333);
    snprintf(s, sizeof s, vf, vmax);
    text(&c, bx + 18, T + 4, s, 1, 0, 0x222222, 0);
    snprintf(s, sizeof s, vf, vmin);
    text(&c, bx + 18, T + bh - 4, s, 1, 0, 0x222222, 0);
    kv_status st = cv_write(&c, path, err);
    cv_free(&c);
    return st;
}
