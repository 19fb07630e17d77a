/* ecw.c — entropy-coded weights ("kvant ECW", docs/FORMAT.md): integer codes Z [rows × cols] coded with
 * a static range-asymmetric-numeral-system coder (rANS: J. Duda, "Asymmetric numeral systems", arXiv
 * 0902.0271; 32-bit state with byte-wise renormalisation as in F. Giesen's public-domain rans_byte.h
 * description). Columns are put in up to 16 groups of similar code spread (sorted by mean |z|), each group
 * with its own frequency table, so the code length approaches the mean per-column entropy rather than the
 * entropy of all codes pooled; one stream per 64 rows (decoded in parallel).
 *   version 2 (WaterSIC, watersic.c): fp16 per-column steps and per-row scales,
 *     w[r][i] = row_scale[r] · z[r][i] · col_step[i];
 *   version 3 ("Huffman-GPTQ", `kvant quantize --entropy-code`): the codes of an integer format's packed rows,
 *     its row headers and block parameters kept raw; decoding rebuilds the packed rows and dequantizes them.
 * The container is also a GGUF tensor type (KV_TYPE_ECW), decoded by kv_model_load. */
#include "core/core.h"
#include <math.h>
#include <stdio.h>

enum { SCALE_BITS = 16, ROWS_PER_STREAM = 64, MAX_SYMBOLS = 1 << 15, MAX_GROUPS = 16, FMT_NAME_BYTES = 48 };
/* decoder: slot -> symbol through a table of 2^(SCALE_BITS - LUT_SHIFT) entries per group, then a short scan */
enum { LUT_SHIFT = 6, LUT_STEP = 1 << LUT_SHIFT, LUT_SIZE = 1 << (SCALE_BITS - LUT_SHIFT) };
#define RANS_L (1u << 23)
#define HEADER_BYTES 28 /* magic, version, rows, cols, ngroups */
#define V3_FIELDS (FMT_NAME_BYTES + 16) /* format name, bits, block, row header bytes, block parameter bytes */

double kv_entropy_bits(const int32_t *z, int64_t n) {
    if (n <= 0) return 0;
    int32_t lo = z[0], hi = z[0];
    for (int64_t i = 1; i < n; i++) { lo = KV_MIN(lo, z[i]); hi = KV_MAX(hi, z[i]); }
    int64_t k = (int64_t)hi - lo + 1;
    int64_t *cnt = calloc((size_t)k, sizeof *cnt);
    if (!cnt) return NAN;
    for (int64_t i = 0; i < n; i++) cnt[z[i] - lo]++;
    double h = 0;
    for (int64_t s = 0; s < k; s++)
        if (cnt[s]) {
            double p = (double)cnt[s] / (double)n;
            h -= p * log2(p);
        }
    free(cnt);
    return h;
}

/* Counts -> frequencies summing to 2^SCALE_BITS, every present symbol at least 1. */
static void normalize_freqs(const int64_t *cnt, int64_t total, uint32_t nsym, uint32_t *freq) {
    const uint32_t M = 1u << SCALE_BITS;
    int64_t sum = 0;
    uint32_t big = 0;
    for (uint32_t s = 0; s < nsym; s++) {
        if (!cnt[s]) { freq[s] = 0; continue; }
        double f = (double)cnt[s] * M / (double)total;
        freq[s] = f < 1 ? 1 : (uint32_t)llround(f);
        sum += freq[s];
        if (cnt[s] > cnt[big] || !cnt[big]) big = s;
    }
    /* fix the total on the largest symbols (cheapest in code length) */
    while (sum != M) {
        uint32_t best = big;
        for (uint32_t s = 0; s < nsym; s++)
            if (freq[s] > freq[best]) best = s;
        if (sum > M) {
            uint32_t take = (uint32_t)KV_MIN((int64_t)freq[best] - 1, sum - (int64_t)M);
            if (take == 0) { /* spread over other symbols > 1 */
                for (uint32_t s = 0; s < nsym && sum > M; s++)
                    if (freq[s] > 1) { freq[s]--; sum--; }
                continue;
            }
            freq[best] -= take;
            sum -= take;
        } else {
            freq[best] += (uint32_t)(M - sum);
            sum = M;
        }
    }
}


typedef struct {
    int32_t ng;
    uint8_t *group;      /* cols */
    int32_t lo[MAX_GROUPS];
    uint32_t nsym[MAX_GROUPS];
    int64_t *cnt[MAX_GROUPS];
    int64_t total[MAX_GROUPS];
} ecw_groups;

static void groups_free(ecw_groups *g) {
    free(g->group);
    for (int k = 0; k < MAX_GROUPS; k++) free(g->cnt[k]);
    memset(g, 0, sizeof *g);
}

typedef struct {
    double key;
    int64_t col;
} col_key;

static int cmp_col_key(const void *x, const void *y) {
    const col_key *a = x, *b = y;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return (a->col > b->col) - (a->col < b->col);
}

/* Column groups by mean |z| and their histograms. */
static kv_status make_groups(const int32_t *z, int64_t rows, int64_t cols, ecw_groups *g, kv_error *err) {
    memset(g, 0, sizeof *g);
    g->ng = (int32_t)KV_MAX((int64_t)1, KV_MIN((int64_t)MAX_GROUPS, cols / 8));
    g->group = malloc((size_t)cols);
    col_key *ck = malloc(sizeof *ck * (size_t)cols);
    if (!g->group || !ck) {
        free(ck);
        return kv_fail(err, KV_ENOMEM, "ecw: out of memory");
    }
    for (int64_t j = 0; j < cols; j++) { ck[j].key = 0; ck[j].col = j; }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) ck[j].key += abs(z[r * cols + j]);
    qsort(ck, (size_t)cols, sizeof *ck, cmp_col_key);
    for (int64_t k = 0; k < cols; k++) g->group[ck[k].col] = (uint8_t)(k * g->ng / cols);
    free(ck);
    int32_t hi[MAX_GROUPS];
    for (int k = 0; k < g->ng; k++) { g->lo[k] = INT32_MAX; hi[k] = INT32_MIN; }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
            int k = g->group[j];
            g->lo[k] = KV_MIN(g->lo[k], z[r * cols + j]);
            hi[k] = KV_MAX(hi[k], z[r * cols + j]);
        }
    for (int k = 0; k < g->ng; k++) {
        if ((int64_t)hi[k] - g->lo[k] + 1 > MAX_SYMBOLS)
            return kv_fail(err, KV_ERANGE, "ecw: codes span %lld values (at most %d)", (long long)hi[k] - g->lo[k] + 1,
                           MAX_SYMBOLS);
        g->nsym[k] = (uint32_t)(hi[k] - g->lo[k] + 1);
        g->cnt[k] = calloc(g->nsym[k], sizeof(int64_t));
        if (!g->cnt[k]) return kv_fail(err, KV_ENOMEM, "ecw: out of memory");
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
            int k = g->group[j];
            g->cnt[k][z[r * cols + j] - g->lo[k]]++;
            g->total[k]++;
        }
    return KV_OK;
}

static uint64_t header_bytes(const ecw_groups *g, int64_t rows, int64_t cols) {
    uint64_t b = HEADER_BYTES + 4 + (uint64_t)cols * 3 + (uint64_t)rows * 2;
    for (int k = 0; k < g->ng; k++) b += 8 + 4ull * g->nsym[k];
    return b + 4ull * (uint64_t)((rows + ROWS_PER_STREAM - 1) / ROWS_PER_STREAM);
}

kv_status kv_ecw_rate(const int32_t *z, int64_t rows, int64_t cols, double *code_bits, double *side_bits,
                      kv_error *err) {
    ecw_groups g;
    kv_status st = make_groups(z, rows, cols, &g, err);
    if (st == KV_OK) {
        double bits = 0;
        for (int k = 0; k < g.ng; k++)
            for (uint32_t s = 0; s < g.nsym[k]; s++)
                if (g.cnt[k][s]) bits -= (double)g.cnt[k][s] * log2((double)g.cnt[k][s] / (double)g.total[k]);
        double nw = (double)rows * (double)cols;
        if (code_bits) *code_bits = bits / nw;
        if (side_bits) *side_bits = (double)header_bytes(&g, rows, cols) * 8.0 / nw;
    }
    groups_free(&g);
    return st;
}

/* Encodes symbols of rows [r0, r1) (each with its column's table) backwards into buf (capacity cap) ending at
 * buf+cap; returns the start pointer, or NULL when it did not fit. */
static uint8_t *rans_encode(const int32_t *z, int64_t r0, int64_t r1, int64_t cols, const ecw_groups *g,
                            uint32_t *const *freq, uint32_t *const *cum, uint8_t *buf, size_t cap) {
    uint8_t *p = buf + cap;
    uint32_t x = RANS_L;
    for (int64_t i = (r1 - r0) * cols - 1; i >= 0; i--) {
        int64_t j = i % cols;
        int k = g->group[j];
        uint32_t s = (uint32_t)(z[r0 * cols + i] - g->lo[k]);
        uint32_t f = freq[k][s], c = cum[k][s];
        uint32_t xmax = ((RANS_L >> SCALE_BITS) << 8) * f;
        while (x >= xmax) {
            if (p == buf) return NULL;
            *--p = (uint8_t)(x & 0xff);
            x >>= 8;
        }
        x = ((x / f) << SCALE_BITS) + (x % f) + c;
    }
    if (p - buf < 4) return NULL;
    p -= 4;
    kv_wr_u32(p, x);
    return p;
}

/* ---- container (little-endian; docs/FORMAT.md "kvant ECW") ----
 * "KVEC" | u32 version | u64 rows | u64 cols | u32 ngroups | u32 rows_per_stream | [v3 fields]
 * | per group: i32 zmin, u32 nsym, u32 freq[nsym] | u8 group[cols] | side information (v2: u16 col_step[cols],
 * u16 row_scale[rows] (fp16); v3: per row the format's row header and block parameters) | u32 stream_bytes[nstreams]
 * | streams (rANS, 4-byte final state first) */
static kv_status ecw_build(uint32_t version, const int32_t *z, int64_t rows, int64_t cols, const uint8_t *v3,
                           const uint8_t *side, size_t side_n, uint8_t **out, size_t *out_size, kv_error *err) {
    ecw_groups g;
    kv_status st = make_groups(z, rows, cols, &g, err);
    int64_t nstreams = (rows + ROWS_PER_STREAM - 1) / ROWS_PER_STREAM;
    uint32_t *freq[MAX_GROUPS] = {0}, *cum[MAX_GROUPS] = {0};
    size_t cap = (size_t)(ROWS_PER_STREAM * cols) * 2 + 16; /* at most SCALE_BITS bits per symbol */
    uint8_t *tmp = NULL, *buf = NULL;
    if (st) goto done;
    uint64_t head = HEADER_BYTES + 4 + (v3 ? V3_FIELDS : 0) + (uint64_t)cols + side_n + 4ull * (uint64_t)nstreams;
    for (int k = 0; k < g.ng; k++) {
        freq[k] = calloc(g.nsym[k], sizeof(uint32_t));
        cum[k] = calloc(g.nsym[k] + 1, sizeof(uint32_t));
        if (!freq[k] || !cum[k]) { st = kv_fail(err, KV_ENOMEM, "ecw: out of memory"); goto done; }
        normalize_freqs(g.cnt[k], g.total[k], g.nsym[k], freq[k]);
        for (uint32_t s = 0; s < g.nsym[k]; s++) cum[k][s + 1] = cum[k][s] + freq[k][s];
        head += 8 + 4ull * g.nsym[k];
    }
    tmp = malloc(cap);
    buf = malloc(head + (size_t)nstreams * cap);
    if (!tmp || !buf) { st = kv_fail(err, KV_ENOMEM, "ecw: out of memory"); goto done; }
    uint8_t *p = buf;
    memcpy(p, "KVEC", 4);
    kv_wr_u32(p + 4, version);
    kv_wr_u64(p + 8, (uint64_t)rows);
    kv_wr_u64(p + 16, (uint64_t)cols);
    kv_wr_u32(p + 24, (uint32_t)g.ng);
    kv_wr_u32(p + HEADER_BYTES, ROWS_PER_STREAM);
    p += HEADER_BYTES + 4;
    if (v3) {
        memcpy(p, v3, V3_FIELDS);
        p += V3_FIELDS;
    }
    for (int k = 0; k < g.ng; k++) {
        kv_wr_u32(p, (uint32_t)g.lo[k]);
        kv_wr_u32(p + 4, g.nsym[k]);
        p += 8;
        for (uint32_t s = 0; s < g.nsym[k]; s++, p += 4) kv_wr_u32(p, freq[k][s]);
    }
    memcpy(p, g.group, (size_t)cols);
    p += cols;
    if (side_n) memcpy(p, side, side_n);
    p += side_n;
    uint8_t *sizes = p;
    p += 4 * nstreams;
    for (int64_t sidx = 0; sidx < nstreams; sidx++) {
        int64_t r0 = sidx * ROWS_PER_STREAM, r1 = KV_MIN(r0 + ROWS_PER_STREAM, rows);
        uint8_t *start = rans_encode(z, r0, r1, cols, &g, freq, cum, tmp, cap);
        if (!start) { st = kv_fail(err, KV_ERANGE, "ecw: stream overflow"); goto done; }
        size_t len = (size_t)(tmp + cap - start);
        memcpy(p, start, len);
        p += len;
        kv_wr_u32(sizes + 4 * sidx, (uint32_t)len);
    }
    *out_size = (size_t)(p - buf);
    uint8_t *shrunk = realloc(buf, *out_size);
    *out = shrunk ? shrunk : buf;
    buf = NULL;
done:
    for (int k = 0; k < MAX_GROUPS; k++) { free(freq[k]); free(cum[k]); }
    free(tmp);
    free(buf);
    groups_free(&g);
    return st;
}

kv_status kv_ecw_encode(const int32_t *z, int64_t rows, int64_t cols, const uint16_t *col_step,
                        const uint16_t *row_scale, uint8_t **out, size_t *out_size, kv_error *err) {
    *out = NULL;
    *out_size = 0;
    if (rows <= 0 || cols <= 0) return kv_fail(err, KV_EINVAL, "ecw: empty matrix");
    size_t side_n = 2 * (size_t)cols + 2 * (size_t)rows;
    uint8_t *side = malloc(side_n);
    if (!side) return kv_fail(err, KV_ENOMEM, "ecw: out of memory");
    for (int64_t i = 0; i < cols; i++) kv_wr_u16(side + 2 * i, col_step[i]);
    for (int64_t i = 0; i < rows; i++) kv_wr_u16(side + 2 * cols + 2 * i, row_scale[i]);
    kv_status st = ecw_build(2, z, rows, cols, NULL, side, side_n, out, out_size, err);
    free(side);
    return st;
}

/* ---- version 3: codes of a packed integer format ------------------------------------------------- */

/* Code i of a little-endian bit stream of w-bit codes (w <= 8: a code spans at most two bytes). */
static uint32_t bits_get(const uint8_t *p, int64_t i, int w) {
    uint64_t bit = (uint64_t)i * (uint64_t)w;
    const uint8_t *b = p + (bit >> 3);
    unsigned sh = (unsigned)(bit & 7);
    uint32_t v = (uint32_t)b[0] >> sh;
    if (sh + (unsigned)w > 8) v |= (uint32_t)b[1] << (8 - sh);
    return v & ((1u << w) - 1);
}

static void bits_put(uint8_t *p, int64_t i, int w, uint32_t code) {
    uint64_t bit = (uint64_t)i * (uint64_t)w;
    uint8_t *b = p + (bit >> 3);
    unsigned sh = (unsigned)(bit & 7);
    b[0] |= (uint8_t)(code << sh);
    if (sh + (unsigned)w > 8) b[1] |= (uint8_t)(code >> (8 - sh));
}

/* Code width of a format whose blocks are [parameters][block·n/8 bytes of n-bit codes] (0 when not such). */
static int packed_bits(const kv_format *f) {
    int n = 0, used = 0;
    if (f->type != KV_TYPE_KVANT_BASE || !f->dequantize || f->block <= 0) return 0;
    if (sscanf(f->name, "int%d_g%n", &n, &used) != 1 || used == 0) return 0;
    if (n < 2 || n > 8 || ((int64_t)f->block * n) % 8 || f->block_bytes < f->block * n / 8) return 0;
    if (f->block_bytes - f->block * n / 8 > 64 || f->row_header_bytes > 64) return 0;
    return n;
}

int kv_ecw_packed_supported(const kv_format *fmt) { return fmt && packed_bits(fmt) > 0; }

const char *kv_ecw_packed_formats(void) {
    return "int{n}_g{g}_{sym,asym}[_f32][_mse] with n = 2..8 and g = 32, 64, 128, 256, 0 (per row) or t (per tensor)";
}

kv_status kv_ecw_encode_packed(const kv_format *fmt, const void *packed, int64_t rows, int64_t cols, uint8_t **out,
                               size_t *out_size, kv_error *err) {
    *out = NULL;
    *out_size = 0;
    int n = packed_bits(fmt);
    if (!n)
        return kv_fail(err, KV_EUNSUPPORTED, "entropy coding of format %s is not supported (supported: %s)",
                       fmt ? fmt->name : "?", kv_ecw_packed_formats());
    if (rows <= 0 || cols <= 0) return kv_fail(err, KV_EINVAL, "ecw: empty matrix");
    size_t rb = kv_format_row_bytes(fmt, cols);
    if (rb == 0) return kv_fail(err, KV_EINVAL, "ecw: rows of %lld do not fit format %s", (long long)cols, fmt->name);
    int64_t g = fmt->block, nb = cols / g, H = fmt->row_header_bytes, P = fmt->block_bytes - g * n / 8;
    size_t rowp = (size_t)(H + nb * P);
    int32_t *z = malloc(sizeof(int32_t) * (size_t)rows * (size_t)cols);
    uint8_t *side = malloc(KV_MAX(rowp * (size_t)rows, (size_t)1));
    if (!z || !side) {
        free(z);
        free(side);
        return kv_fail(err, KV_ENOMEM, "ecw: out of memory");
    }
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)packed + (size_t)r * rb;
        uint8_t *sp = side + (size_t)r * rowp;
        memcpy(sp, row, (size_t)H);
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + H + b * fmt->block_bytes;
            memcpy(sp + H + b * P, blk, (size_t)P);
            for (int64_t i = 0; i < g; i++) z[r * cols + b * g + i] = (int32_t)bits_get(blk + P, i, n);
        }
    }
    uint8_t v3[V3_FIELDS] = {0};
    kv_strlcpy((char *)v3, fmt->name, FMT_NAME_BYTES);
    kv_wr_u32(v3 + FMT_NAME_BYTES, (uint32_t)n);
    kv_wr_u32(v3 + FMT_NAME_BYTES + 4, (uint32_t)g);
    kv_wr_u32(v3 + FMT_NAME_BYTES + 8, (uint32_t)H);
    kv_wr_u32(v3 + FMT_NAME_BYTES + 12, (uint32_t)P);
    kv_status st = ecw_build(3, z, rows, cols, v3, side, rowp * (size_t)rows, out, out_size, err);
    free(z);
    free(side);
    return st;
}

/* ---- decoding ------------------------------------------------------------------------------------ */

typedef struct ecw_view {
    uint32_t version, ng, rps;
    int64_t rows, cols, nstreams;
    int32_t lo[MAX_GROUPS];
    uint32_t nsym[MAX_GROUPS];
    const uint8_t *freq[MAX_GROUPS];
    const uint8_t *grp;
    const uint8_t *csp, *rsp;  /* v2: fp16 column steps, row scales */
    kv_format fmt;             /* v3: the packed format and its layout */
    int bits;
    int64_t g, nb, H, P;
    size_t rowp, rb;
    const uint8_t *par;        /* v3: rows × rowp side bytes */
    size_t sizes_off, streams_off;
} ecw_view;

static kv_status bad(kv_error *err, size_t off, const char *what) {
    kv_fail(err, KV_EFORMAT, "ecw: %s", what);
    kv_error_context(err, NULL, (int64_t)off, NULL);
    return KV_EFORMAT;
}

static kv_status parse_v3(const uint8_t *data, size_t size, ecw_view *v, size_t *off, kv_error *err) {
    if (size - *off < V3_FIELDS) return bad(err, *off, "truncated header");
    const uint8_t *f = data + *off;
    char name[FMT_NAME_BYTES];
    if (!memchr(f, 0, FMT_NAME_BYTES)) return bad(err, *off, "format name is not terminated");
    memcpy(name, f, FMT_NAME_BYTES);
    kv_error sub;
    kv_error_clear(&sub);
    if (kv_format_get(name, &v->fmt, &sub) != KV_OK) return bad(err, *off, "unknown format name");
    v->bits = (int)kv_rd_u32(f + FMT_NAME_BYTES);
    v->g = kv_rd_u32(f + FMT_NAME_BYTES + 4);
    v->H = kv_rd_u32(f + FMT_NAME_BYTES + 8);
    v->P = kv_rd_u32(f + FMT_NAME_BYTES + 12);
    int n = packed_bits(&v->fmt);
    if (!n || n != v->bits || v->fmt.block != v->g || v->fmt.row_header_bytes != v->H ||
        v->fmt.block_bytes != v->P + v->g * n / 8)
        return bad(err, *off + FMT_NAME_BYTES, "format fields do not match the format");
    if (v->cols % v->g) return bad(err, 16, "columns are not a multiple of the format's block");
    v->nb = v->cols / v->g;
    v->rowp = (size_t)(v->H + v->nb * v->P);
    v->rb = kv_format_row_bytes(&v->fmt, v->cols);
    *off += V3_FIELDS;
    return KV_OK;
}

static kv_status ecw_parse(const uint8_t *data, size_t size, ecw_view *v, kv_error *err) {
    memset(v, 0, sizeof *v);
    if (!data || size < HEADER_BYTES + 4 || memcmp(data, "KVEC", 4))
        return bad(err, 0, "not an entropy-coded weight container");
    v->version = kv_rd_u32(data + 4);
    if (v->version != 2 && v->version != 3) return bad(err, 4, "unsupported version (kvant reads 2 and 3)");
    v->rows = (int64_t)kv_rd_u64(data + 8);
    v->cols = (int64_t)kv_rd_u64(data + 16);
    v->ng = kv_rd_u32(data + 24);
    v->rps = kv_rd_u32(data + HEADER_BYTES);
    if (v->rows <= 0 || v->cols <= 0 || v->cols > ((int64_t)1 << 32) || v->rows > ((int64_t)1 << 40) / v->cols)
        return bad(err, 8, "bad dimensions");
    if (v->ng == 0 || v->ng > MAX_GROUPS || v->rps == 0) return bad(err, 24, "bad group count or stream rows");
    size_t off = HEADER_BYTES + 4;
    kv_status st;
    if (v->version == 3 && (st = parse_v3(data, size, v, &off, err)) != KV_OK) return st;
    for (uint32_t k = 0; k < v->ng; k++) {
        if (size - off < 8) return bad(err, off, "truncated table");
        v->lo[k] = (int32_t)kv_rd_u32(data + off);
        v->nsym[k] = kv_rd_u32(data + off + 4);
        if (v->nsym[k] == 0 || v->nsym[k] > MAX_SYMBOLS) return bad(err, off + 4, "bad symbol count");
        if (v->version == 3 && (v->lo[k] < 0 || (int64_t)v->lo[k] + v->nsym[k] > ((int64_t)1 << v->bits)))
            return bad(err, off, "codes outside the format's range");
        if (v->version == 2 && (int64_t)v->lo[k] + v->nsym[k] - 1 > INT32_MAX) return bad(err, off, "bad code range");
        v->freq[k] = data + off + 8;
        off += 8;
        if ((size - off) / 4 < v->nsym[k]) return bad(err, off, "truncated table");
        off += 4ull * v->nsym[k];
    }
    v->nstreams = (v->rows + v->rps - 1) / v->rps;
    uint64_t side = v->version == 2 ? (uint64_t)v->cols * 2 + (uint64_t)v->rows * 2 : (uint64_t)v->rows * v->rowp;
    uint64_t rest = (uint64_t)v->cols + side + 4ull * (uint64_t)v->nstreams;
    if (rest > size - off) return bad(err, off, "truncated header");
    v->grp = data + off;
    for (int64_t j = 0; j < v->cols; j++)
        if (v->grp[j] >= v->ng) return bad(err, off + (size_t)j, "bad column group");
    off += (size_t)v->cols;
    if (v->version == 2) {
        v->csp = data + off;
        v->rsp = v->csp + 2 * v->cols;
    } else {
        v->par = data + off;
    }
    v->sizes_off = off + (size_t)side;
    v->streams_off = v->sizes_off + 4 * (size_t)v->nstreams;
    return KV_OK;
}

kv_status kv_ecw_check(const uint8_t *data, size_t size, int64_t *rows, int64_t *cols, int *version, kv_error *err) {
    ecw_view v;
    kv_status st = ecw_parse(data, size, &v, err);
    if (st) return st;
    if (rows) *rows = v.rows;
    if (cols) *cols = v.cols;
    if (version) *version = (int)v.version;
    return KV_OK;
}

typedef struct dec_ctx {
    const ecw_view *v;
    const uint8_t *data;
    const uint32_t *cum;   /* per group nsym + 1 cumulative frequencies, from cum + cum_at[k] */
    const size_t *cum_at;
    const uint16_t *lut;   /* ng × LUT_SIZE: the symbol holding slot (i << LUT_SHIFT) */
    const float *cs;       /* v2 column steps */
    const size_t *soff;    /* stream start offsets */
    const uint32_t *slen;
    int32_t *z;
    float *w;
    kv_status *st;         /* per stream */
    size_t *bad_off;
    const char **bad_what;
} dec_ctx;

/* One stream: rows [s·rps, (s+1)·rps). */
static void dec_task(void *vctx, int64_t s, int thread) {
    (void)thread;
    dec_ctx *c = vctx;
    const ecw_view *v = c->v;
    int64_t cols = v->cols, r0 = s * v->rps, r1 = KV_MIN(r0 + (int64_t)v->rps, v->rows);
    const uint8_t *p = c->data + c->soff[s] + 4, *end = c->data + c->soff[s] + c->slen[s];
    uint32_t x = kv_rd_u32(c->data + c->soff[s]);
    int32_t *zrow = NULL;
    uint8_t *packed = NULL;
    if (v->version == 3 && c->w) {
        zrow = c->z ? NULL : malloc(sizeof(int32_t) * (size_t)cols);
        packed = malloc(v->rb);
        if ((!c->z && !zrow) || !packed) {
            c->st[s] = KV_ENOMEM;
            goto done;
        }
    }
    for (int64_t r = r0; r < r1; r++) {
        int32_t *zr = c->z ? c->z + r * cols : zrow;
        float rs = v->version == 2 ? kv_fp16_to_fp32(kv_rd_u16(v->rsp + 2 * r)) : 0.0f;
        for (int64_t i = 0; i < cols; i++) {
            uint32_t k = v->grp[i];
            const uint32_t *ck = c->cum + c->cum_at[k];
            uint32_t slot = x & ((1u << SCALE_BITS) - 1), sym = c->lut[(size_t)k * LUT_SIZE + (slot >> LUT_SHIFT)];
            while (ck[sym + 1] <= slot) sym++; /* a coarse table: cache-resident, a few steps at most */
            x = (ck[sym + 1] - ck[sym]) * (x >> SCALE_BITS) + slot - ck[sym];
            while (x < RANS_L) {
                if (p == end) {
                    c->st[s] = KV_EFORMAT;
                    c->bad_off[s] = (size_t)(p - c->data);
                    c->bad_what[s] = "stream ends early";
                    goto done;
                }
                x = (x << 8) | *p++;
            }
            int32_t val = (int32_t)((int64_t)sym + v->lo[k]);
            if (zr) zr[i] = val;
            if (v->version == 2 && c->w) c->w[r * cols + i] = rs * ((float)val * c->cs[i]);
        }
        if (v->version == 3 && c->w) {
            /* the packed row the format's quantizer wrote: header, then per block parameters and codes */
            const uint8_t *sp = v->par + (size_t)r * v->rowp;
            memset(packed, 0, v->rb);
            memcpy(packed, sp, (size_t)v->H);
            for (int64_t b = 0; b < v->nb; b++) {
                uint8_t *blk = packed + v->H + b * v->fmt.block_bytes;
                memcpy(blk, sp + v->H + b * v->P, (size_t)v->P);
                for (int64_t i = 0; i < v->g; i++) bits_put(blk + v->P, i, v->bits, (uint32_t)zr[b * v->g + i]);
            }
            v->fmt.dequantize(&v->fmt, packed, c->w + r * cols, cols);
        }
    }
done:
    free(zrow);
    free(packed);
}

static kv_status ecw_decode_view(const ecw_view *v, const uint8_t *data, size_t size, int32_t *z, float *w,
                                 kv_pool *pool, kv_error *err) {
    if (!z && !w) return KV_OK;
    uint32_t ng = v->ng;
    int64_t ns = v->nstreams;
    size_t cum_at[MAX_GROUPS], ncum = 0;
    for (uint32_t k = 0; k < ng; k++) {
        cum_at[k] = ncum;
        ncum += v->nsym[k] + 1;
    }
    uint32_t *cum = malloc(sizeof(uint32_t) * ncum);
    uint16_t *lut = malloc(sizeof(uint16_t) * LUT_SIZE * ng);
    float *cs = malloc(sizeof(float) * (size_t)v->cols);
    size_t *soff = malloc(sizeof(size_t) * (size_t)ns), *bad_off = calloc((size_t)ns, sizeof(size_t));
    uint32_t *slen = malloc(sizeof(uint32_t) * (size_t)ns);
    kv_status *sst = calloc((size_t)ns, sizeof(kv_status));
    const char **bad_what = calloc((size_t)ns, sizeof(char *));
    kv_status st = KV_OK;
    if (!cum || !lut || !cs || !soff || !bad_off || !slen || !sst || !bad_what) {
        st = kv_fail(err, KV_ENOMEM, "ecw: out of memory");
        goto done;
    }
    for (uint32_t k = 0; k < ng && !st; k++) {
        uint32_t *ck = cum + cum_at[k];
        uint16_t *lk = lut + (size_t)k * LUT_SIZE;
        const uint8_t *fp = v->freq[k];
        ck[0] = 0;
        for (uint32_t s = 0; s < v->nsym[k]; s++) {
            uint32_t f = kv_rd_u32(fp + 4 * s);
            if (f > (1u << SCALE_BITS) - ck[s]) { st = bad(err, (size_t)(fp - data) + 4 * s, "bad frequency table"); break; }
            ck[s + 1] = ck[s] + f;
            /* coarse slots starting inside [ck[s], ck[s+1]) belong to s */
            for (uint32_t q = (ck[s] + LUT_STEP - 1) >> LUT_SHIFT; q < LUT_SIZE && (q << LUT_SHIFT) < ck[s + 1]; q++)
                lk[q] = (uint16_t)s;
        }
        if (!st && ck[v->nsym[k]] != 1u << SCALE_BITS)
            st = bad(err, (size_t)(fp - data), "frequencies do not sum to 2^16");
    }
    if (v->version == 2)
        for (int64_t i = 0; i < v->cols; i++) cs[i] = kv_fp16_to_fp32(kv_rd_u16(v->csp + 2 * i));
    size_t off = v->streams_off;
    for (int64_t s = 0; s < ns && !st; s++) {
        uint32_t len = kv_rd_u32(data + v->sizes_off + 4 * s);
        if (len < 4 || len > size - off) { st = bad(err, v->sizes_off + 4 * (size_t)s, "truncated stream"); break; }
        soff[s] = off;
        slen[s] = len;
        off += len;
    }
    if (!st) {
        dec_ctx c = {v, data, cum, cum_at, lut, cs, soff, slen, z, w, sst, bad_off, bad_what};
        kv_pool_run(pool, ns, dec_task, &c);
        for (int64_t s = 0; s < ns && !st; s++) {
            if (sst[s] == KV_ENOMEM) st = kv_fail(err, KV_ENOMEM, "ecw: out of memory");
            else if (sst[s]) st = bad(err, bad_off[s], bad_what[s]);
        }
    }
done:
    free(cum);
    free(lut);
    free(cs);
    free(soff);
    free(bad_off);
    free(slen);
    free(sst);
    free(bad_what);
    return st;
}

kv_status kv_ecw_decode(const uint8_t *data, size_t size, int64_t *rows_out, int64_t *cols_out, int32_t *z,
                        float *w, kv_error *err) {
    ecw_view v;
    kv_status st = ecw_parse(data, size, &v, err);
    if (st) return st;
    if (rows_out) *rows_out = v.rows;
    if (cols_out) *cols_out = v.cols;
    return ecw_decode_view(&v, data, size, z, w, NULL, err);
}

kv_status kv_ecw_decode_f32(const uint8_t *data, size_t size, int64_t rows, int64_t cols, float *w, kv_pool *pool,
                            kv_error *err) {
    ecw_view v;
    kv_status st = ecw_parse(data, size, &v, err);
    if (st) return st;
    if (v.rows != rows || v.cols != cols) {
        kv_fail(err, KV_EFORMAT, "ecw: the container holds a %lld x %lld matrix, the tensor is %lld x %lld",
                (long long)v.rows, (long long)v.cols, (long long)rows, (long long)cols);
        kv_error_context(err, NULL, 8, NULL);
        return KV_EFORMAT;
    }
    return ecw_decode_view(&v, data, size, NULL, w, pool, err);
}
