/* test_plot.c — the plot module (src/eval/plot.c, png.c): CRC-32 / Adler-32 check values, the PNG encoder
 * decoded back here by an independent inflate (stored and fixed-Huffman blocks, RFC 1951) and, when python3
 * is there, by zlib (and PIL when installed: scripts/crosscheck_png.py); SVG output well-formed (tags balanced,
 * entities escaped), point labels that never overlap; heat maps; bad file names; `kvant formats --plot`. */
#include "test.h"
#include "eval/plot_impl.h"

KV_TEST(plot_crc32_adler32_check_values) {
    CHECK_EQ_INT(kv_crc32(0, (const uint8_t *)"123456789", 9), 0xCBF43926u);
    CHECK_EQ_INT(kv_crc32(kv_crc32(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5), 0xCBF43926u);
    CHECK_EQ_INT(kv_adler32((const uint8_t *)"Wikipedia", 9), 0x11E60398u);
    CHECK_EQ_INT(kv_adler32(NULL, 0), 1);
}

/* ---- an independent inflate: enough for what the encoder may emit (BTYPE 00 and 01) ---- */
typedef struct bitrd {
    const uint8_t *p;
    size_t n, pos;
    int bit;
} bitrd;

static int rd_bit(bitrd *r) {
    if (r->pos >= r->n) return -1;
    int b = r->p[r->pos] >> r->bit & 1;
    if (++r->bit == 8) { r->bit = 0; r->pos++; }
    return b;
}
static long rd_bits(bitrd *r, int n) {
    long v = 0;
    for (int i = 0; i < n; i++) {
        int b = rd_bit(r);
        if (b < 0) return -1;
        v |= (long)b << i;
    }
    return v;
}
/* Fixed literal/length code, read MSB first. */
static int rd_fixed_litlen(bitrd *r) {
    int code = 0;
    for (int len = 1; len <= 9; len++) {
        int b = rd_bit(r);
        if (b < 0) return -1;
        code = code << 1 | b;
        if (len == 7 && code <= 0x17) return 256 + code;
        if (len == 8 && code >= 0x30 && code <= 0xBF) return code - 0x30;
        if (len == 8 && code >= 0xC0 && code <= 0xC7) return 280 + code - 0xC0;
        if (len == 9 && code >= 0x190) return 144 + code - 0x190;
    }
    return -1;
}

static uint8_t *inflate_zlib(const uint8_t *z, size_t n, size_t *out_n) {
    static const int lbase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const int lext[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const int dbase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static const int dext[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    if (n < 6 || (z[0] & 15) != 8 || ((z[0] << 8) | z[1]) % 31 != 0) return NULL;
    size_t cap = 1 << 16, len = 0;
    uint8_t *out = malloc(cap);
    bitrd r = {z + 2, n - 6, 0, 0};
    int final = 0;
    while (!final) {
        final = rd_bit(&r);
        long type = rd_bits(&r, 2);
        if (final < 0 || type < 0 || type > 1) goto bad;
        if (type == 0) {
            if (r.bit) { r.bit = 0; r.pos++; }
            if (r.pos + 4 > r.n) goto bad;
            size_t l = r.p[r.pos] | r.p[r.pos + 1] << 8;
            if ((l ^ (size_t)(r.p[r.pos + 2] | r.p[r.pos + 3] << 8)) != 0xFFFF) goto bad;
            r.pos += 4;
            if (r.pos + l > r.n) goto bad;
            while (len + l > cap) out = realloc(out, cap *= 2);
            memcpy(out + len, r.p + r.pos, l);
            len += l;
            r.pos += l;
            continue;
        }
        for (;;) {
            int sym = rd_fixed_litlen(&r);
            if (sym < 0 || sym > 285) goto bad;
            if (sym == 256) break;
            if (len + 258 > cap) out = realloc(out, cap *= 2);
            if (sym < 256) { out[len++] = (uint8_t)sym; continue; }
            long e = rd_bits(&r, lext[sym - 257]);
            int ml = lbase[sym - 257] + (int)e;
            long dc = 0;
            for (int i = 0; i < 5; i++) dc = dc << 1 | rd_bit(&r); /* 5-bit fixed distance code, MSB first */
            if (e < 0 || dc < 0 || dc > 29) goto bad;
            long de = rd_bits(&r, dext[dc]);
            size_t dist = (size_t)(dbase[dc] + de);
            if (de < 0 || dist > len) goto bad;
            for (int i = 0; i < ml; i++, len++) out[len] = out[len - dist];
        }
    }
    if (r.bit) r.pos++;
    const uint8_t *a = z + 2 + r.pos;
    if (a + 4 != z + n) goto bad;
    if (((uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3]) != kv_adler32(out, len)) goto bad;
    *out_n = len;
    return out;
bad:
    free(out);
    return NULL;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Decodes our own PNG back to RGB, checking signature, chunk CRCs, IHDR and the filters; NULL on any defect. */
static uint8_t *png_decode(const uint8_t *png, size_t n, int *w, int *h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (n < 8 || memcmp(png, sig, 8)) return NULL;
    size_t pos = 8, zn = 0;
    uint8_t *zdat = NULL;
    int seen_end = 0;
    *w = *h = 0;
    while (pos + 12 <= n && !seen_end) {
        uint32_t len = be32(png + pos);
        if (pos + 12 + len > n) break;
        const uint8_t *type = png + pos + 4, *data = png + pos + 8;
        if (kv_crc32(0, type, 4 + len) != be32(data + len)) { free(zdat); return NULL; }
        if (!memcmp(type, "IHDR", 4)) {
            if (len != 13 || data[8] != 8 || data[9] != 2 || data[10] || data[11] || data[12]) { free(zdat); return NULL; }
            *w = (int)be32(data);
            *h = (int)be32(data + 4);
        } else if (!memcmp(type, "IDAT", 4)) {
            zdat = realloc(zdat, zn + len);
            memcpy(zdat + zn, data, len);
            zn += len;
        } else if (!memcmp(type, "IEND", 4)) seen_end = 1;
        pos += 12 + len;
    }
    if (!seen_end || pos != n || *w <= 0 || *h <= 0) { free(zdat); return NULL; }
    size_t rn = 0;
    uint8_t *raw = inflate_zlib(zdat, zn, &rn);
    free(zdat);
    const size_t stride = (size_t)*w * 3;
    if (!raw || rn != (stride + 1) * (size_t)*h) { free(raw); return NULL; }
    uint8_t *rgb = malloc(stride * (size_t)*h);
    for (int y = 0; y < *h; y++) {
        const uint8_t *src = raw + (size_t)y * (stride + 1);
        uint8_t *dst = rgb + (size_t)y * stride;
        for (size_t x = 0; x < stride; x++) {
            uint8_t up = y ? dst[x - stride] : 0;
            if (src[0] == 0) dst[x] = src[1 + x];
            else if (src[0] == 2) dst[x] = (uint8_t)(src[1 + x] + up);
            else { free(raw); free(rgb); return NULL; }
        }
    }
    free(raw);
    return rgb;
}

KV_TEST(plot_png_encoder_decodes_back) {
    kv_error err = {0};
    static const int sizes[][2] = {{1, 1}, {7, 3}, {300, 200}};
    for (int s = 0; s < 3; s++) {
        const int w = sizes[s][0], h = sizes[s][1];
        uint8_t *rgb = malloc((size_t)w * h * 3);
        uint64_t st = 12345;
        for (int i = 0; i < w * h * 3; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            /* flat areas, gradients and noise: every kind of block the matcher sees */
            int y = i / (w * 3), x = i % (w * 3);
            rgb[i] = y < h / 3 ? 255 : y < 2 * h / 3 ? (uint8_t)(x + y) : (uint8_t)(st >> 56);
        }
        uint8_t *png = NULL;
        size_t n = 0;
        REQUIRE_OK(kv_png_encode(rgb, w, h, &png, &n, &err), &err);
        int dw, dh;
        uint8_t *back = png_decode(png, n, &dw, &dh);
        CHECK_MSG(back != NULL, "%dx%d: the PNG does not decode", w, h);
        if (back) {
            CHECK_EQ_INT(dw, w);
            CHECK_EQ_INT(dh, h);
            CHECK(!memcmp(back, rgb, (size_t)w * h * 3));
        }
        free(back);
        free(png);
        free(rgb);
    }
    /* a white image compresses to a small file */
    uint8_t *white = malloc(960 * 640 * 3);
    memset(white, 255, 960 * 640 * 3);
    uint8_t *png = NULL;
    size_t n = 0;
    REQUIRE_OK(kv_png_encode(white, 960, 640, &png, &n, &err), &err);
    CHECK_MSG(n < 20000, "white 960x640 PNG is %zu bytes", n);
    free(png);
    free(white);
    CHECK(kv_png_encode(NULL, 0, 5, &png, &n, &err) == KV_EINVAL);
}

/* Minimal XML well-formedness: balanced tags, quoted attributes, only known entities. */
static int svg_well_formed(const char *s, char *why, size_t nwhy) {
    char stack[64][32];
    int depth = 0, roots = 0;
    const char *p = s;
    if (strncmp(p, "<?xml", 5) == 0) {
        p = strstr(p, "?>");
        if (!p) { snprintf(why, nwhy, "unterminated <?xml"); return 0; }
        p += 2;
    }
    while (*p) {
        if (*p == '&') {
            if (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) && strncmp(p, "&quot;", 6)) {
                snprintf(why, nwhy, "bad entity at %td", p - s);
                return 0;
            }
            p++;
            continue;
        }
        if (*p != '<') { p++; continue; }
        const char *e = p + 1;
        int closing = *e == '/';
        if (closing) e++;
        char name[32];
        int k = 0;
        while (*e && *e != ' ' && *e != '>' && *e != '/' && *e != '\n' && k < 31) name[k++] = *e++;
        name[k] = 0;
        int quote = 0;
        while (*e && (quote || *e != '>')) {
            if (*e == '"') quote = !quote;
            else if (quote && *e == '<') { snprintf(why, nwhy, "'<' in an attribute of <%s>", name); return 0; }
            e++;
        }
        if (!*e) { snprintf(why, nwhy, "unterminated <%s>", name); return 0; }
        int self = e[-1] == '/';
        if (closing) {
            if (depth == 0 || strcmp(stack[depth - 1], name)) {
                snprintf(why, nwhy, "</%s> closes <%s>", name, depth ? stack[depth - 1] : "nothing");
                return 0;
            }
            depth--;
        } else if (!self) {
            if (depth == 0) roots++;
            if (depth == 64) { snprintf(why, nwhy, "too deep"); return 0; }
            snprintf(stack[depth++], 32, "%s", name);
        } else if (depth == 0) roots++;
        p = e + 1;
    }
    if (depth != 0 || roots != 1) { snprintf(why, nwhy, "depth %d, %d roots at the end", depth, roots); return 0; }
    return 1;
}

typedef struct tbox { double x0, y0, x1, y1; } tbox;

/* Boxes of the <text font-size="10"> elements (point labels and tick labels) from their x, y, textLength and
 * anchor; returns the count. */
static int svg_label_boxes(const char *s, tbox *b, int max) {
    int n = 0;
    for (const char *p = strstr(s, "<text "); p && n < max; p = strstr(p + 1, "<text ")) {
        const char *end = strchr(p, '>');
        double x, y, tl;
        const char *fx = strstr(p, " x=\""), *fy = strstr(p, " y=\""), *fs = strstr(p, "font-size=\"10\""),
                   *ft = strstr(p, "textLength=\""), *fa = strstr(p, "text-anchor=\"");
        const char *rot = strstr(p, "rotate");
        if (!fx || !fy || !fs || !ft || !fa || fs > end || (rot && rot < end)) continue;
        x = atof(fx + 4);
        y = atof(fy + 4);
        tl = atof(ft + 12);
        double x0 = !strncmp(fa + 13, "start", 5) ? x : !strncmp(fa + 13, "middle", 6) ? x - tl / 2 : x - tl;
        b[n++] = (tbox){x0, y - 4, x0 + tl, y + 4};
    }
    return n;
}

KV_TEST(plot_svg_well_formed_labels_never_overlap) {
    kv_error err = {0};
    enum { N = 120 };
    double x[N], y[N], x2[N], y2[N];
    char names[N][24];
    const char *labs[N];
    for (int i = 0; i < N; i++) { /* a dense cluster: most labels cannot all fit */
        x[i] = 3.0 + 0.02 * (i % 11);
        y[i] = 0.01 * (1 + 0.03 * (i / 11));
        x2[i] = i * 0.1;
        y2[i] = exp(-i * 0.05);
        snprintf(names[i], sizeof names[i], i == 7 ? "a<b & \"c\"" : "fmt_%d", i);
        labs[i] = names[i];
    }
    kv_plot_series ser[2] = {
        {.label = "cluster <&>", .x = x, .y = y, .n = N, .point_labels = labs, .marker = 1, .color = -1},
        {.label = "curve", .x = x2, .y = y2, .n = N, .line = 1, .dashed = 1, .color = -1},
    };
    kv_plot p = {.title = "t", .xlabel = "bits", .ylabel = "mse", .ylog = 1, .series = ser, .n_series = 2};
    char svg[600], png[600];
    snprintf(svg, sizeof svg, "%s/p.svg", kv_test_tmpdir());
    snprintf(png, sizeof png, "%s/p.PNG", kv_test_tmpdir());
    REQUIRE_OK(kv_plot_write(&p, svg, &err), &err);
    REQUIRE_OK(kv_plot_write(&p, png, &err), &err);
    size_t n = 0;
    char *s = kv_test_read_file(svg, &n);
    REQUIRE(s);
    char why[200] = "";
    CHECK_MSG(svg_well_formed(s, why, sizeof why), "SVG not well-formed: %s", why);
    CHECK(strstr(s, "a&lt;b &amp; &quot;c&quot;") || strstr(s, "labels hidden"));
    CHECK(strstr(s, "labels hidden") != NULL); /* some of the 120 did not fit and the legend says so */
    CHECK(strstr(s, "stroke-dasharray") != NULL);
    static tbox b[400];
    int nb = svg_label_boxes(s, b, 400);
    CHECK(nb > 20);
    int bad = 0;
    for (int i = 0; i < nb; i++)
        for (int j = i + 1; j < nb; j++)
            if (b[i].x0 < b[j].x1 - 0.5 && b[j].x0 < b[i].x1 - 0.5 && b[i].y0 < b[j].y1 - 0.5 && b[j].y0 < b[i].y1 - 0.5) bad++;
    CHECK_MSG(bad == 0, "%d pairs of labels overlap", bad);
    free(s);
    s = kv_test_read_file(png, &n);
    REQUIRE(s);
    int w, h;
    uint8_t *rgb = png_decode((const uint8_t *)s, n, &w, &h);
    CHECK(rgb != NULL);
    CHECK_EQ_INT(w, 960);
    CHECK_EQ_INT(h, 640);
    if (rgb) { /* something was drawn in the series' palette colour */
        int32_t c0 = kv_plot_palette(0);
        long hits = 0;
        for (long i = 0; i < (long)w * h; i++)
            hits += rgb[3 * i] == (uint8_t)(c0 >> 16) && rgb[3 * i + 1] == (uint8_t)(c0 >> 8) && rgb[3 * i + 2] == (uint8_t)c0;
        CHECK(hits > 100);
    }
    free(rgb);
    free(s);
    CHECK(kv_plot_write(&p, "x.pdf", &err) == KV_EINVAL);
    kv_plot empty = {0};
    CHECK(kv_plot_write(&empty, svg, &err) == KV_EINVAL);
}

KV_TEST(plot_heatmap_svg_and_png) {
    kv_error err = {0};
    double v[6] = {99.5, 97.25, NAN, 80, 60.5, 100};
    const char *rows[2] = {"rtn", "gptq"}, *cols[3] = {"int4_g128_asym", "q4_k", "mxfp4_ocp"};
    kv_heatmap hm = {.title = "recovery %", .rows = 2, .cols = 3, .v = v, .row_labels = rows, .col_labels = cols};
    char svg[600], png[600];
    snprintf(svg, sizeof svg, "%s/h.svg", kv_test_tmpdir());
    snprintf(png, sizeof png, "%s/h.png", kv_test_tmpdir());
    REQUIRE_OK(kv_heatmap_write(&hm, svg, &err), &err);
    REQUIRE_OK(kv_heatmap_write(&hm, png, &err), &err);
    size_t n;
    char *s = kv_test_read_file(svg, &n);
    REQUIRE(s);
    char why[200] = "";
    CHECK_MSG(svg_well_formed(s, why, sizeof why), "SVG not well-formed: %s", why);
    CHECK(strstr(s, ">97.2<") || strstr(s, ">97.3<"));
    CHECK(strstr(s, ">-<") != NULL); /* the missing cell */
    free(s);
    s = kv_test_read_file(png, &n);
    REQUIRE(s);
    int w, h;
    uint8_t *rgb = png_decode((const uint8_t *)s, n, &w, &h);
    CHECK(rgb != NULL);
    free(rgb);
    free(s);
    kv_heatmap bad = hm;
    bad.rows = 0;
    CHECK(kv_heatmap_write(&bad, svg, &err) == KV_EINVAL);
}

/* zlib (python3's standard library) and PIL, when present, read the PNG as the same pixels. */
KV_TEST(plot_png_crosscheck_python) {
    if (system("python3 -c 'import zlib' >/dev/null 2>&1") != 0) SKIP("no python3");
    kv_error err = {0};
    const int w = 64, h = 48;
    uint8_t *rgb = malloc(w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 7 + (i / 192) * 13);
    uint8_t *png = NULL;
    size_t n = 0;
    REQUIRE_OK(kv_png_encode(rgb, w, h, &png, &n, &err), &err);
    char pp[600], rp[600], cmd[1400];
    snprintf(pp, sizeof pp, "%s/x.png", kv_test_tmpdir());
    snprintf(rp, sizeof rp, "%s/x.rgb", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(pp, png, n) == 0);
    REQUIRE(kv_test_write_file(rp, rgb, (size_t)w * h * 3) == 0);
    snprintf(cmd, sizeof cmd, "python3 scripts/crosscheck_png.py %s %s >/dev/null 2>&1", pp, rp);
    CHECK_MSG(system(cmd) == 0, "scripts/crosscheck_png.py refused the PNG");
    free(png);
    free(rgb);
}

KV_TEST(plot_formats_cli_svg_and_png) {
    char cmd[1400], svg[600], png[600], *out = NULL;
    snprintf(svg, sizeof svg, "%s/f.svg", kv_test_tmpdir());
    snprintf(png, sizeof png, "%s/f.png", kv_test_tmpdir());
    snprintf(cmd, sizeof cmd, "formats --quiet --samples 300000 --formats q4_k,q4_0,int4_g128_asym,mxfp4_ocp,nf4 --plot %s --plot %s", svg, png);
    int rc = kv_test_run_cli(cmd, &out);
    CHECK_MSG(rc == 0, "%s", out ? out : "");
    free(out);
    size_t n;
    char *s = kv_test_read_file(svg, &n);
    REQUIRE(s);
    CHECK(strstr(s, "ggml k-quants") && strstr(s, "INT groups") && strstr(s, "MX (OCP)") && strstr(s, "Shannon"));
    CHECK(strstr(s, ">q4_k<") != NULL);
    free(s);
    s = kv_test_read_file(png, &n);
    REQUIRE(s && n > 8);
    CHECK(!memcmp(s, "\x89PNG\r\n\x1a\n", 8));
    free(s);
    snprintf(cmd, sizeof cmd, "formats --quiet --plot %s/f.pdf", kv_test_tmpdir());
    rc = kv_test_run_cli(cmd, &out);
    CHECK_EQ_INT(rc, 2);
    CHECK(out && strstr(out, "SVG or PNG"));
    free(out);
}

/* Segments of the <line stroke-width="2.0"> elements (the curves and the legend's samples). */
static int svg_curve_segments(const char *s, double (*seg)[4], int max) {
    int n = 0;
    for (const char *p = strstr(s, "<line "); p && n < max; p = strstr(p + 1, "<line ")) {
        const char *end = strchr(p, '>'), *w = strstr(p, "stroke-width=\"2.0\"");
        if (!end || !w || w > end) continue;
        if (sscanf(p, "<line x1=\"%lf\" y1=\"%lf\" x2=\"%lf\" y2=\"%lf\"", &seg[n][0], &seg[n][1], &seg[n][2], &seg[n][3]) == 4) n++;
    }
    return n;
}

KV_TEST(plot_point_labels_clear_of_curves) {
    /* three crossing curves of labelled points, as on a Pareto plot: no label may sit on a line */
    enum { N = 9 };
    double x[3][N], y[3][N];
    char names[3][N][24];
    const char *labs[3][N];
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < N; i++) {
            x[s][i] = 2 + 0.55 * i + 0.2 * s;
            y[s][i] = exp(-1.1 * i - 0.4 * s + 0.3 * (s == 1) * (i % 2));
            snprintf(names[s][i], sizeof names[s][i], "int%d_g128_asym", i + s);
            labs[s][i] = names[s][i];
        }
    kv_plot_series ser[3];
    for (int s = 0; s < 3; s++)
        ser[s] = (kv_plot_series){.label = s ? "other" : "gptq", .x = x[s], .y = y[s], .n = N, .point_labels = labs[s],
                                  .line = 1, .marker = 1, .dashed = s == 2, .color = -1};
    kv_plot p = {.title = "t", .xlabel = "bits", .ylabel = "kld", .ylog = 1, .series = ser, .n_series = 3};
    char svg[600];
    snprintf(svg, sizeof svg, "%s/c.svg", kv_test_tmpdir());
    kv_error err = {0};
    REQUIRE_OK(kv_plot_write(&p, svg, &err), &err);
    size_t n = 0;
    char *s = kv_test_read_file(svg, &n);
    REQUIRE(s);
    static tbox b[200];
    static double seg[400][4];
    const int nb = svg_label_boxes(s, b, 200), ns = svg_curve_segments(s, seg, 400);
    CHECK(ns >= 3 * (N - 1));
    int placed = 0, bad = 0;
    for (int i = 0; i < nb; i++) {
        int point_label = b[i].x1 - b[i].x0 > 60; /* the "int..._g128_asym" labels (tick labels are short) */
        placed += point_label;
        for (int k = 0; point_label && k < ns; k++)
            for (int t = 0; t <= 200; t++) { /* sampled along the segment: independent of the library's test */
                const double px = seg[k][0] + (seg[k][2] - seg[k][0]) * t / 200.0, py = seg[k][1] + (seg[k][3] - seg[k][1]) * t / 200.0;
                if (px > b[i].x0 + 0.5 && px < b[i].x1 - 0.5 && py > b[i].y0 + 0.5 && py < b[i].y1 - 0.5) { bad++; break; }
            }
    }
    CHECK_MSG(placed >= 2 * N, "only %d of %d labels placed", placed, 3 * N);
    CHECK_MSG(bad == 0, "%d label/curve crossings", bad);
    free(s);
}
