/* ecw.c — entropy-coded weights ("kvant ECW", docs/FORMAT.md): integer codes Z [rows × cols] coded with
 * a static range-asymmetric-numeral-system coder (rANS: J. Duda, "Asymmetric numeral systems", arXiv
 * 0902.0271; 32-bit state with byte-wise renormalisation as in F. Giesen's public-domain rans_byte.h
 * description). Columns are put in up to 16 groups of similar code spread (sorted by mean |z|), each group
 * with its own frequency table, so the code length approaches the mean per-column entropy rather than the
 * entropy of all codes pooled; one stream per 64 rows (decoded in parallel).
 *   version 4 (WaterSIC, watersic.c): fp16 per-column steps and per-row scales,
 *     w[r][i] = row_scale[r] · z[r][i] · col_step[i];
 *   version 5 ("Huffman-GPTQ", `kvant quantize --entropy-code`): the codes of an integer format's packed rows,
 *     its row headers and block parameters kept raw; decoding rebuilds the packed rows and dequantizes them.
 * Integrity: a CRC-32 (ISO-HDLC, as zlib's crc32) of the header and one of each stream; the decoder also
 * checks that each stream's rANS state ends where the encoder started it and that no byte is left over, so
 * corruption is an error naming the byte offset, never wrong weights. Versions 2 and 3 (the same layouts
 * without checksums) were written only by development builds before any release and are refused.
 * The container is also a GGUF tensor type (KV_TYPE_ECW), decoded by kv_model_load. */
#include "core/core.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

enum { SCALE_BITS = 16, ROWS_PER_STREAM = 64, MAX_SYMBOLS = 1 << 15, MAX_GROUPS = 16, FMT_NAME_BYTES = 48 };
/* decoder: slot -> symbol through a table of 2^(SCALE_BITS - LUT_SHIFT) entries per group, then a short scan */
enum { LUT_SHIFT = 6, LUT_STEP = 1 << LUT_SHIFT, LUT_SIZE = 1 << (SCALE_BITS - LUT_SHIFT) };
enum { VERSION_SCALED = 4, VERSION_PACKED = 5 };
#define RANS_L (1u << 23)
#define HEADER_BYTES 28 /* magic, version, rows, cols, ngroups */
#define V3_FIELDS (FMT_NAME_BYTES + 16) /* format name, bits, block, row header bytes, block parameter bytes */
#define CODE_LIMIT (1 << 24) /* version 4 codes: |z| <= 2^24, exact in fp32 */

/* CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320, initial and final xor 0xFFFFFFFF: zlib's crc32),
 * slicing by 8; the table is built per call (2048 entries, microseconds) so that there is no global state. */
typedef struct crc_table {
    uint32_t t[8][256];
} crc_table;

static void crc_init(crc_table *c) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i;
        for (int k = 0; k < 8; k++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1)));
        c->t[0][i] = r;
    }
    for (int s = 1; s < 8; s++)
        for (uint32_t i = 0; i < 256; i++) c->t[s][i] = (c->t[s - 1][i] >> 8) ^ c->t[0][c->t[s - 1][i] & 0xff];
}

static uint32_t crc32_of(const crc_table *c, const uint8_t *p, size_t n) {
    uint32_t r = 0xFFFFFFFFu;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t a = r ^ kv_rd_u32(p), b = kv_rd_u32(p + 4);
        r = c->t[7][a & 0xff] ^ c->t[6][(a >> 8) & 0xff] ^ c->t[5][(a >> 16) & 0xff] ^ c->t[4][a >> 24] ^
            c->t[3][b & 0xff] ^ c->t[2][(b >> 8) & 0xff] ^ c->t[1][(b >> 16) & 0xff] ^ c->t[0][b >> 24];
    }
    while (n--) r = (r >> 8) ^ c->t[0][(r ^ *p++) & 0xff];
    return r ^ 0xFFFFFFFFu;
}

static int fp16_finite(uint16_t h) { return (h & 0x7C00u) != 0x7C00u; }

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

/* Bytes of a version 4 container besides its streams. */
static uint64_t header_bytes(const ecw_groups *g, int64_t rows, int64_t cols) {
    uint64_t b = HEADER_BYTES + 4 + (uint64_t)cols * 3 + (uint64_t)rows * 2 + 4;
    for (int k = 0; k < g->ng; k++) b += 8 + 4ull * g->nsym[k];
    return b + 8ull * (uint64_t)((rows + ROWS_PER_STREAM - 1) / ROWS_PER_STREAM);
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
 * | per group: i32 zmin, u32 nsym, u32 freq[nsym] | u8 group[cols] | side information (v4: u16 col_step[cols],
 * u16 row_scale[rows] (fp16); v5: per row the format's row header and block parameters) | u32 stream_bytes[nstreams]
 * | u32 stream_crc[nstreams] | u32 header_crc (of every byte before it) | streams (rANS, 4-byte final state first) */
static kv_status ecw_build(uint32_t version, const int32_t *z, int64_t rows, int64_t cols, const uint8_t *v3,
                           const uint8_t *side, size_t side_n, uint8_t **out, size_t *out_size, kv_error *err) {
    ecw_groups g;
    kv_status st = make_groups(z, rows, cols, &g, err);
    int64_t nstreams = (rows + ROWS_PER_STREAM - 1) / ROWS_PER_STREAM;
    uint32_t *freq[MAX_GROUPS] = {0}, *cum[MAX_GROUPS] = {0};
    size_t cap = (size_t)(ROWS_PER_STREAM * cols) * 2 + 16; /* at most SCALE_BITS bits per symbol */
    uint8_t *tmp = NULL, *buf = NULL;
    if (st) goto done;
    uint64_t head = HEADER_BYTES + 4 + (v3 ? V3_FIELDS : 0) + (uint64_t)cols + side_n + 8ull * (uint64_t)nstreams + 4;
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
    uint8_t *sizes = p, *crcs = p + 4 * nstreams, *head_crc = crcs + 4 * nstreams;
    p = head_crc + 4;
    crc_table crc;
    crc_init(&crc);
    for (int64_t sidx = 0; sidx < nstreams; sidx++) {
        int64_t r0 = sidx * ROWS_PER_STREAM, r1 = KV_MIN(r0 + ROWS_PER_STREAM, rows);
        uint8_t *start = rans_encode(z, r0, r1, cols, &g, freq, cum, tmp, cap);
        if (!start) { st = kv_fail(err, KV_ERANGE, "ecw: stream overflow"); goto done; }
        size_t len = (size_t)(tmp + cap - start);
        memcpy(p, start, len);
        p += len;
        kv_wr_u32(sizes + 4 * sidx, (uint32_t)len);
        kv_wr_u32(crcs + 4 * sidx, crc32_of(&crc, start, len));
    }
    kv_wr_u32(head_crc, crc32_of(&crc, buf, (size_t)(head_crc - buf)));
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
    /* what the decoder refuses is never written: non-finite side information, codes beyond fp32's integers */
    for (int64_t i = 0; i < cols; i++)
        if (!fp16_finite(col_step[i])) return kv_fail(err, KV_ERANGE, "ecw: column %lld's step is not finite", (long long)i);
    for (int64_t i = 0; i < rows; i++)
        if (!fp16_finite(row_scale[i])) return kv_fail(err, KV_ERANGE, "ecw: row %lld's scale is not finite", (long long)i);
    for (int64_t i = 0; i < rows * cols; i++)
        if (z[i] < -CODE_LIMIT || z[i] > CODE_LIMIT)
            return kv_fail(err, KV_ERANGE, "ecw: code %d of row %lld is beyond +-2^24", z[i], (long long)(i / cols));
    size_t side_n = 2 * (size_t)cols + 2 * (size_t)rows;
    uint8_t *side = malloc(side_n);
    if (!side) return kv_fail(err, KV_ENOMEM, "ecw: out of memory");
    for (int64_t i = 0; i < cols; i++) kv_wr_u16(side + 2 * i, col_step[i]);
    for (int64_t i = 0; i < rows; i++) kv_wr_u16(side + 2 * cols + 2 * i, row_scale[i]);
    kv_status st = ecw_build(VERSION_SCALED, z, rows, cols, NULL, side, side_n, out, out_size, err);
    free(side);
    return st;
}

/* ---- version 5: codes of a packed integer format ------------------------------------------------- */

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
    if (f->family != KV_FAM_INT || !f->dequantize || f->block <= 0) return 0;
    const int n = f->code_bits;
    if (n < 2 || n > 8 || ((int64_t)f->block * n) % 8 || f->block_bytes < f->block * n / 8) return 0;
    if (f->block_bytes - f->block * n / 8 > 64 || f->row_header_bytes > 64) return 0;
    return n;
}

int kv_ecw_packed_supported(const kv_format *fmt) { return fmt && packed_bits(fmt) > 0; }

/* The integer formats' row headers and block parameters are all scales and minima: fp32 for the _f32
 * variants, fp16 otherwise (src/formats/int.c). */
static int param_width(const kv_format *f) { return f->traits & KV_FMT_F32_SCALE ? 4 : 2; }

/* Index of the first non-finite scale value in n bytes of parameters (n when all are finite). */
static size_t first_nonfinite_param(const uint8_t *p, size_t n, int width) {
    for (size_t i = 0; i + (size_t)width <= n; i += (size_t)width)
        if (width == 4 ? !isfinite(kv_rd_f32(p + i)) : !fp16_finite(kv_rd_u16(p + i))) return i;
    return n;
}

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
    for (int64_t r = 0; r < rows; r++) {
        size_t at = first_nonfinite_param(side + (size_t)r * rowp, rowp, param_width(fmt));
        if (at < rowp) {
            free(z);
            free(side);
            return kv_fail(err, KV_ERANGE, "ecw: row %lld %s holds a non-finite scale", (long long)r,
                           (int64_t)at < H ? "header" : "block parameters");
        }
    }
    uint8_t v3[V3_FIELDS] = {0};
    kv_strlcpy((char *)v3, fmt->name, FMT_NAME_BYTES);
    kv_wr_u32(v3 + FMT_NAME_BYTES, (uint32_t)n);
    kv_wr_u32(v3 + FMT_NAME_BYTES + 4, (uint32_t)g);
    kv_wr_u32(v3 + FMT_NAME_BYTES + 8, (uint32_t)H);
    kv_wr_u32(v3 + FMT_NAME_BYTES + 12, (uint32_t)P);
    kv_status st = ecw_build(VERSION_PACKED, z, rows, cols, v3, side, rowp * (size_t)rows, out, out_size, err);
    free(z);
    free(side);
    return st;
}

/* ---- decoding ------------------------------------------------------------------------------------ */

typedef struct ecw_view {
    uint32_t version, ng, rps;
    int packed;                /* version 5 */
    int64_t rows, cols, nstreams;
    int32_t lo[MAX_GROUPS];
    uint32_t nsym[MAX_GROUPS];
    const uint8_t *freq[MAX_GROUPS];
    const uint8_t *grp;
    const uint8_t *csp, *rsp;  /* v4: fp16 column steps, row scales */
    kv_format fmt;             /* v5: the packed format and its layout */
    int bits;
    int64_t g, nb, H, P;
    size_t rowp, rb;
    const uint8_t *par;        /* v5: rows × rowp side bytes */
    size_t sizes_off, crcs_off, hcrc_off, streams_off;
} ecw_view;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static kv_status bad(kv_error *err, size_t off, const char *fmt, ...) {
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    kv_fail(err, KV_EFORMAT, "ecw: %s", what);
    kv_error_context(err, NULL, (int64_t)off, NULL);
    return KV_EFORMAT;
}

static kv_status parse_v5(const uint8_t *data, size_t size, ecw_view *v, size_t *off, kv_error *err) {
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

/* One group's table: codes inside the version's range, frequencies summing to 2^16 with the first and last
 * symbol present (the encoder's table spans exactly the codes it holds: anything else is corruption, e.g. a
 * table whose one symbol takes all of 2^16 while others are declared). */
static kv_status parse_table(const uint8_t *data, size_t size, ecw_view *v, uint32_t k, size_t *off, kv_error *err) {
    if (size - *off < 8) return bad(err, *off, "truncated table");
    int32_t lo = v->lo[k] = (int32_t)kv_rd_u32(data + *off);
    uint32_t nsym = v->nsym[k] = kv_rd_u32(data + *off + 4);
    if (nsym == 0 || nsym > MAX_SYMBOLS)
        return bad(err, *off + 4, "group %u: %u symbols (1..%d)", k, nsym, MAX_SYMBOLS);
    int64_t hi = (int64_t)lo + nsym - 1;
    if (v->packed && (lo < 0 || hi >= ((int64_t)1 << v->bits)))
        return bad(err, *off, "group %u: codes %d..%lld outside the format's range [0, %d)", k, lo, (long long)hi,
                   1 << v->bits);
    if (!v->packed && (lo < -CODE_LIMIT || hi > CODE_LIMIT))
        return bad(err, *off, "group %u: codes %d..%lld outside [-2^24, 2^24]", k, lo, (long long)hi);
    *off += 8;
    if ((size - *off) / 4 < nsym) return bad(err, *off, "truncated table");
    const uint8_t *fp = v->freq[k] = data + *off;
    uint64_t sum = 0;
    for (uint32_t s = 0; s < nsym; s++) {
        uint32_t f = kv_rd_u32(fp + 4 * s);
        if (f > 1u << SCALE_BITS) return bad(err, *off + 4 * s, "group %u: frequency %u above 2^16", k, f);
        sum += f;
    }
    if (sum != 1u << SCALE_BITS)
        return bad(err, *off, "group %u: frequencies sum to %llu, not 2^16", k, (unsigned long long)sum);
    if (!kv_rd_u32(fp) || !kv_rd_u32(fp + 4 * (nsym - 1)))
        return bad(err, *off + (kv_rd_u32(fp) ? 4 * (size_t)(nsym - 1) : 0),
                   "group %u: degenerate frequency table (code %lld has frequency 0, but the table must span exactly "
                   "the codes it holds)", k, (long long)(kv_rd_u32(fp) ? hi : lo));
    *off += 4ull * nsym;
    return KV_OK;
}

/* Side information must be finite: fp16 steps and scales (v4), the format's scales and minima (v5). */
static kv_status check_side(const uint8_t *data, const ecw_view *v, size_t off, kv_error *err) {
    if (!v->packed) {
        for (int64_t i = 0; i < v->cols; i++)
            if (!fp16_finite(kv_rd_u16(v->csp + 2 * i)))
                return bad(err, off + 2 * (size_t)i, "column %lld's step is not finite (fp16 0x%04x)", (long long)i,
                           kv_rd_u16(v->csp + 2 * i));
        for (int64_t r = 0; r < v->rows; r++)
            if (!fp16_finite(kv_rd_u16(v->rsp + 2 * r)))
                return bad(err, (size_t)(v->rsp - data) + 2 * (size_t)r, "row %lld's scale is not finite (fp16 0x%04x)",
                           (long long)r, kv_rd_u16(v->rsp + 2 * r));
        return KV_OK;
    }
    for (int64_t r = 0; r < v->rows; r++) {
        size_t at = first_nonfinite_param(v->par + (size_t)r * v->rowp, v->rowp, param_width(&v->fmt));
        if (at < v->rowp)
            return bad(err, off + (size_t)r * v->rowp + at, "row %lld: a non-finite scale in its %s", (long long)r,
                       (int64_t)at < v->H ? "row header" : "block parameters");
    }
    return KV_OK;
}

/* Everything but the streams' contents: layout, tables, side information, stream sizes adding up to exactly the
 * container, and the header's checksum. */
static kv_status ecw_parse(const uint8_t *data, size_t size, ecw_view *v, const crc_table *crc, kv_error *err) {
    memset(v, 0, sizeof *v);
    if (!data || size < HEADER_BYTES + 4 || memcmp(data, "KVEC", 4))
        return bad(err, 0, "not an entropy-coded weight container");
    v->version = kv_rd_u32(data + 4);
    if (v->version == 2 || v->version == 3)
        return bad(err, 4, "version %u is a pre-release layout without checksums (no kvant release wrote it): "
                   "quantize the model again", v->version);
    if (v->version != VERSION_SCALED && v->version != VERSION_PACKED)
        return bad(err, 4, "unsupported version %u (kvant reads 4 and 5)", v->version);
    v->packed = v->version == VERSION_PACKED;
    v->rows = (int64_t)kv_rd_u64(data + 8);
    v->cols = (int64_t)kv_rd_u64(data + 16);
    v->ng = kv_rd_u32(data + 24);
    v->rps = kv_rd_u32(data + HEADER_BYTES);
    if (v->rows <= 0 || v->cols <= 0 || v->cols > ((int64_t)1 << 32) || v->rows > ((int64_t)1 << 40) / v->cols)
        return bad(err, 8, "bad dimensions");
    if (v->ng == 0 || v->ng > MAX_GROUPS || v->rps == 0) return bad(err, 24, "bad group count or stream rows");
    size_t off = HEADER_BYTES + 4;
    kv_status st;
    if (v->packed && (st = parse_v5(data, size, v, &off, err)) != KV_OK) return st;
    for (uint32_t k = 0; k < v->ng; k++)
        if ((st = parse_table(data, size, v, k, &off, err)) != KV_OK) return st;
    v->nstreams = (v->rows + v->rps - 1) / v->rps;
    uint64_t side = v->packed ? (uint64_t)v->rows * v->rowp : (uint64_t)v->cols * 2 + (uint64_t)v->rows * 2;
    uint64_t rest = (uint64_t)v->cols + side + 8ull * (uint64_t)v->nstreams + 4;
    if (rest > size - off) return bad(err, off, "truncated header");
    v->grp = data + off;
    for (int64_t j = 0; j < v->cols; j++)
        if (v->grp[j] >= v->ng) return bad(err, off + (size_t)j, "column %lld: bad group %u", (long long)j, v->grp[j]);
    off += (size_t)v->cols;
    if (v->packed) {
        v->par = data + off;
    } else {
        v->csp = data + off;
        v->rsp = v->csp + 2 * v->cols;
    }
    if ((st = check_side(data, v, off, err)) != KV_OK) return st;
    v->sizes_off = off + (size_t)side;
    v->crcs_off = v->sizes_off + 4 * (size_t)v->nstreams;
    v->hcrc_off = v->crcs_off + 4 * (size_t)v->nstreams;
    v->streams_off = v->hcrc_off + 4;
    uint64_t total = 0, room = size - v->streams_off;
    for (int64_t s = 0; s < v->nstreams; s++) {
        uint32_t len = kv_rd_u32(data + v->sizes_off + 4 * s);
        if (len < 4) return bad(err, v->sizes_off + 4 * (size_t)s, "stream %lld: %u bytes, less than its state", (long long)s, len);
        total += len;
        if (total > room)
            return bad(err, v->sizes_off + 4 * (size_t)s, "stream %lld ends past the container (%llu bytes of streams, "
                       "%llu there)", (long long)s, (unsigned long long)total, (unsigned long long)room);
    }
    if (total != room)
        return bad(err, v->streams_off + (size_t)total, "%llu bytes after the last stream",
                   (unsigned long long)(room - total));
    uint32_t want = kv_rd_u32(data + v->hcrc_off), got = crc32_of(crc, data, v->hcrc_off);
    if (want != got)
        return bad(err, v->hcrc_off, "header checksum 0x%08x does not match its bytes (CRC-32 0x%08x): the "
                   "container is corrupt", want, got);
    return KV_OK;
}

kv_status kv_ecw_check(const uint8_t *data, size_t size, int64_t *rows, int64_t *cols, int *version, kv_error *err) {
    ecw_view v;
    crc_table crc;
    crc_init(&crc);
    kv_status st = ecw_parse(data, size, &v, &crc, err);
    if (st) return st;
    if (rows) *rows = v.rows;
    if (cols) *cols = v.cols;
    if (version) *version = (int)v.version;
    return KV_OK;
}

/* Why a stream was refused (formatted after the parallel decode: the first failing stream is reported). */
enum { F_NONE, F_NOMEM, F_CRC, F_STATE, F_EARLY, F_LEFT, F_FINAL, F_NONFINITE };
typedef struct stream_fault {
    int what;
    size_t off;
    uint64_t a, b;
} stream_fault;

typedef struct dec_ctx {
    const ecw_view *v;
    const uint8_t *data;
    const crc_table *crc;
    const uint32_t *cum;   /* per group nsym + 1 cumulative frequencies, from cum + cum_at[k] */
    const size_t *cum_at;
    const uint16_t *lut;   /* ng × LUT_SIZE: the symbol holding slot (i << LUT_SHIFT) */
    const float *cs;       /* v4 column steps */
    const size_t *soff;    /* stream start offsets */
    int32_t *z;
    float *w;
    stream_fault *fault;   /* per stream */
} dec_ctx;

static void fault(stream_fault *f, int what, size_t off, uint64_t a, uint64_t b) {
    f->what = what;
    f->off = off;
    f->a = a;
    f->b = b;
}

/* Offset (in the container) of the parameters that row r's column i is dequantized with (v5). */
static size_t param_offset(const ecw_view *v, const uint8_t *data, int64_t r, int64_t i) {
    size_t row = (size_t)(v->par - data) + (size_t)r * v->rowp;
    return v->H ? row : row + (size_t)(i / v->g) * (size_t)v->P;
}

/* One stream: rows [s·rps, (s+1)·rps). Checked: its CRC-32, its initial state inside the coder's range, no
 * read past its end, no byte left over, and the final state equal to the encoder's start (2^23). */
static void dec_task(void *vctx, int64_t s, int thread) {
    (void)thread;
    dec_ctx *c = vctx;
    const ecw_view *v = c->v;
    stream_fault *ft = &c->fault[s];
    int64_t cols = v->cols, r0 = s * v->rps, r1 = KV_MIN(r0 + (int64_t)v->rps, v->rows);
    const uint8_t *start = c->data + c->soff[s];
    uint32_t len = kv_rd_u32(c->data + v->sizes_off + 4 * s);
    const uint8_t *p = start + 4, *end = start + len;
    uint32_t want = kv_rd_u32(c->data + v->crcs_off + 4 * s), got = crc32_of(c->crc, start, len);
    if (want != got) { fault(ft, F_CRC, c->soff[s], want, got); return; }
    uint32_t x = kv_rd_u32(start);
    if (x < RANS_L || x >= RANS_L << 8) { fault(ft, F_STATE, c->soff[s], x, 0); return; }
    int32_t *zrow = NULL;
    uint8_t *packed = NULL;
    if (v->packed && c->w) {
        zrow = c->z ? NULL : malloc(sizeof(int32_t) * (size_t)cols);
        packed = malloc(v->rb);
        if ((!c->z && !zrow) || !packed) {
            fault(ft, F_NOMEM, 0, 0, 0);
            goto done;
        }
    }
    for (int64_t r = r0; r < r1; r++) {
        int32_t *zr = c->z ? c->z + r * cols : zrow;
        float rs = v->packed ? 0.0f : kv_fp16_to_fp32(kv_rd_u16(v->rsp + 2 * r));
        for (int64_t i = 0; i < cols; i++) {
            uint32_t k = v->grp[i];
            const uint32_t *ck = c->cum + c->cum_at[k];
            uint32_t slot = x & ((1u << SCALE_BITS) - 1), sym = c->lut[(size_t)k * LUT_SIZE + (slot >> LUT_SHIFT)];
            while (ck[sym + 1] <= slot) sym++; /* a coarse table: cache-resident, a few steps at most */
            x = (ck[sym + 1] - ck[sym]) * (x >> SCALE_BITS) + slot - ck[sym];
            while (x < RANS_L) {
                if (p == end) {
                    fault(ft, F_EARLY, (size_t)(p - c->data), (uint64_t)r, (uint64_t)i);
                    goto done;
                }
                x = (x << 8) | *p++;
            }
            int32_t val = (int32_t)((int64_t)sym + v->lo[k]);
            if (zr) zr[i] = val;
            if (!v->packed && c->w) c->w[r * cols + i] = rs * ((float)val * c->cs[i]);
        }
        if (v->packed && c->w) {
            /* the packed row the format's quantizer wrote: header, then per block parameters and codes */
            const uint8_t *sp = v->par + (size_t)r * v->rowp;
            float *wr = c->w + r * cols;
            memset(packed, 0, v->rb);
            memcpy(packed, sp, (size_t)v->H);
            for (int64_t b = 0; b < v->nb; b++) {
                uint8_t *blk = packed + v->H + b * v->fmt.block_bytes;
                memcpy(blk, sp + v->H + b * v->P, (size_t)v->P);
                for (int64_t i = 0; i < v->g; i++) bits_put(blk + v->P, i, v->bits, (uint32_t)zr[b * v->g + i]);
            }
            v->fmt.dequantize(&v->fmt, packed, wr, cols);
            for (int64_t i = 0; i < cols; i++)
                if (!isfinite(wr[i])) { /* finite fp32 scales whose products overflow */
                    fault(ft, F_NONFINITE, param_offset(v, c->data, r, i), (uint64_t)r, (uint64_t)i);
                    goto done;
                }
        }
    }
    if (p != end) fault(ft, F_LEFT, (size_t)(p - c->data), (uint64_t)(end - p), 0);
    else if (x != RANS_L) fault(ft, F_FINAL, c->soff[s], x, 0);
done:
    free(zrow);
    free(packed);
}

static kv_status stream_error(const ecw_view *v, int64_t s, const stream_fault *f, kv_error *err) {
    long long r0 = (long long)(s * v->rps), r1 = (long long)KV_MIN((s + 1) * (int64_t)v->rps, v->rows) - 1;
    switch (f->what) {
    case F_NOMEM: return kv_fail(err, KV_ENOMEM, "ecw: out of memory");
    case F_CRC:
        return bad(err, f->off, "stream %lld (rows %lld..%lld): checksum 0x%08llx does not match its bytes (CRC-32 "
                   "0x%08llx): the stream is corrupt", (long long)s, r0, r1, (unsigned long long)f->a,
                   (unsigned long long)f->b);
    case F_STATE:
        return bad(err, f->off, "stream %lld (rows %lld..%lld): initial rANS state 0x%08llx outside [2^23, 2^31)",
                   (long long)s, r0, r1, (unsigned long long)f->a);
    case F_EARLY:
        return bad(err, f->off, "stream %lld ends early (at row %llu, column %llu)", (long long)s,
                   (unsigned long long)f->a, (unsigned long long)f->b);
    case F_LEFT:
        return bad(err, f->off, "stream %lld (rows %lld..%lld): %llu bytes left after its last code", (long long)s,
                   r0, r1, (unsigned long long)f->a);
    case F_FINAL:
        return bad(err, f->off, "stream %lld (rows %lld..%lld): final rANS state 0x%08llx, not the encoder's "
                   "initial 2^23: the stream is corrupt", (long long)s, r0, r1, (unsigned long long)f->a);
    default:
        return bad(err, f->off, "row %llu, column %llu dequantizes to a non-finite value (its scales, at this offset, "
                   "overflow fp32)", (unsigned long long)f->a, (unsigned long long)f->b);
    }
}

static kv_status ecw_decode_view(const ecw_view *v, const crc_table *crc, const uint8_t *data, int32_t *z, float *w,
                                 kv_pool *pool, kv_error *err) {
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
    size_t *soff = malloc(sizeof(size_t) * (size_t)ns);
    stream_fault *faults = calloc((size_t)ns, sizeof *faults);
    kv_status st = KV_OK;
    if (!cum || !lut || !cs || !soff || !faults) {
        st = kv_fail(err, KV_ENOMEM, "ecw: out of memory");
        goto done;
    }
    for (uint32_t k = 0; k < ng; k++) { /* (the tables were checked by ecw_parse) */
        uint32_t *ck = cum + cum_at[k];
        uint16_t *lk = lut + (size_t)k * LUT_SIZE;
        ck[0] = 0;
        for (uint32_t s = 0; s < v->nsym[k]; s++) {
            ck[s + 1] = ck[s] + kv_rd_u32(v->freq[k] + 4 * s);
            /* coarse slots starting inside [ck[s], ck[s+1]) belong to s */
            for (uint32_t q = (ck[s] + LUT_STEP - 1) >> LUT_SHIFT; q < LUT_SIZE && (q << LUT_SHIFT) < ck[s + 1]; q++)
                lk[q] = (uint16_t)s;
        }
    }
    if (!v->packed)
        for (int64_t i = 0; i < v->cols; i++) cs[i] = kv_fp16_to_fp32(kv_rd_u16(v->csp + 2 * i));
    size_t off = v->streams_off;
    for (int64_t s = 0; s < ns; s++) {
        soff[s] = off;
        off += kv_rd_u32(data + v->sizes_off + 4 * s);
    }
    dec_ctx c = {v, data, crc, cum, cum_at, lut, cs, soff, z, w, faults};
    kv_pool_run(pool, ns, dec_task, &c);
    for (int64_t s = 0; s < ns && !st; s++)
        if (faults[s].what != F_NONE) st = stream_error(v, s, &faults[s], err);
done:
    free(cum);
    free(lut);
    free(cs);
    free(soff);
    free(faults);
    return st;
}

kv_status kv_ecw_decode(const uint8_t *data, size_t size, int64_t *rows_out, int64_t *cols_out, int32_t *z,
                        float *w, kv_error *err) {
    ecw_view v;
    crc_table crc;
    crc_init(&crc);
    kv_status st = ecw_parse(data, size, &v, &crc, err);
    if (st) return st;
    if (rows_out) *rows_out = v.rows;
    if (cols_out) *cols_out = v.cols;
    return ecw_decode_view(&v, &crc, data, z, w, NULL, err);
}

kv_status kv_ecw_decode_f32(const uint8_t *data, size_t size, int64_t rows, int64_t cols, float *w, kv_pool *pool,
                            kv_error *err) {
    ecw_view v;
    crc_table crc;
    crc_init(&crc);
    kv_status st = ecw_parse(data, size, &v, &crc, err);
    if (st) return st;
    if (v.rows != rows || v.cols != cols) {
        kv_fail(err, KV_EFORMAT, "ecw: the container holds a %lld x %lld matrix, the tensor is %lld x %lld",
                (long long)v.rows, (long long)v.cols, (long long)rows, (long long)cols);
        kv_error_context(err, NULL, 8, NULL);
        return KV_EFORMAT;
    }
    return ecw_decode_view(&v, &crc, data, NULL, w, pool, err);
}
