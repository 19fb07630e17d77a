/* entropy.c — entropy-coded weights ("kvant ECW", docs/FORMAT.md): integer codes Z [rows × cols] coded with
 * a static range-asymmetric-numeral-system coder (rANS: J. Duda, "Asymmetric numeral systems", arXiv
 * 0902.0271; 32-bit state with byte-wise renormalisation as in F. Giesen's public-domain rans_byte.h
 * description). Columns are put in up to 16 groups of similar code spread (sorted by mean |z|), each group
 * with its own frequency table, so the code length approaches the mean per-column entropy rather than the
 * entropy of all codes pooled; one stream per 64 rows (decodable in parallel); fp16 per-column steps and
 * per-row scales: w[r][i] = row_scale[r] · z[r][i] · col_step[i].
 * Used by WaterSIC (watersic.c), whose rate is the empirical entropy of Z. */
#include "core/core.h"
#include <math.h>

enum { SCALE_BITS = 16, ROWS_PER_STREAM = 64, ECW_VERSION = 2, MAX_SYMBOLS = 1 << 15, MAX_GROUPS = 16 };
#define RANS_L (1u << 23)
#define HEADER_BYTES 28

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

/* ---- container (little-endian) ----
 * "KVEC" | u32 version | u64 rows | u64 cols | u32 ngroups | u32 rows_per_stream
 * | per group: i32 zmin, u32 nsym, u32 freq[nsym] | u8 group[cols] | u16 col_step[cols] (fp16)
 * | u16 row_scale[rows] (fp16) | u32 stream_bytes[nstreams] | streams (rANS, 4-byte final state first) */

kv_status kv_ecw_encode(const int32_t *z, int64_t rows, int64_t cols, const uint16_t *col_step,
                        const uint16_t *row_scale, uint8_t **out, size_t *out_size, kv_error *err) {
    *out = NULL;
    *out_size = 0;
    if (rows <= 0 || cols <= 0) return kv_fail(err, KV_EINVAL, "ecw: empty matrix");
    ecw_groups g;
    kv_status st = make_groups(z, rows, cols, &g, err);
    int64_t nstreams = (rows + ROWS_PER_STREAM - 1) / ROWS_PER_STREAM;
    uint32_t *freq[MAX_GROUPS] = {0}, *cum[MAX_GROUPS] = {0};
    size_t cap = (size_t)(ROWS_PER_STREAM * cols) * 2 + 16; /* at most SCALE_BITS bits per symbol */
    uint8_t *tmp = NULL, *buf = NULL;
    if (st) goto done;
    for (int k = 0; k < g.ng; k++) {
        freq[k] = calloc(g.nsym[k], sizeof(uint32_t));
        cum[k] = calloc(g.nsym[k] + 1, sizeof(uint32_t));
        if (!freq[k] || !cum[k]) { st = kv_fail(err, KV_ENOMEM, "ecw: out of memory"); goto done; }
        normalize_freqs(g.cnt[k], g.total[k], g.nsym[k], freq[k]);
        for (uint32_t s = 0; s < g.nsym[k]; s++) cum[k][s + 1] = cum[k][s] + freq[k][s];
    }
    uint64_t head = header_bytes(&g, rows, cols);
    tmp = malloc(cap);
    buf = malloc(head + (size_t)nstreams * cap);
    if (!tmp || !buf) { st = kv_fail(err, KV_ENOMEM, "ecw: out of memory"); goto done; }
    uint8_t *p = buf;
    memcpy(p, "KVEC", 4);
    kv_wr_u32(p + 4, ECW_VERSION);
    kv_wr_u64(p + 8, (uint64_t)rows);
    kv_wr_u64(p + 16, (uint64_t)cols);
    kv_wr_u32(p + 24, (uint32_t)g.ng);
    p += HEADER_BYTES;
    kv_wr_u32(p, ROWS_PER_STREAM);
    p += 4;
    for (int k = 0; k < g.ng; k++) {
        kv_wr_u32(p, (uint32_t)g.lo[k]);
        kv_wr_u32(p + 4, g.nsym[k]);
        p += 8;
        for (uint32_t s = 0; s < g.nsym[k]; s++, p += 4) kv_wr_u32(p, freq[k][s]);
    }
    memcpy(p, g.group, (size_t)cols);
    p += cols;
    for (int64_t i = 0; i < cols; i++, p += 2) kv_wr_u16(p, col_step[i]);
    for (int64_t i = 0; i < rows; i++, p += 2) kv_wr_u16(p, row_scale[i]);
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

static kv_status bad(kv_error *err, size_t off, const char *what) {
    kv_fail(err, KV_EFORMAT, "ecw: %s", what);
    kv_error_context(err, NULL, (int64_t)off, NULL);
    return KV_EFORMAT;
}

kv_status kv_ecw_decode(const uint8_t *data, size_t size, int64_t *rows_out, int64_t *cols_out, int32_t *z,
                        float *w, kv_error *err) {
    if (size < HEADER_BYTES + 4 || memcmp(data, "KVEC", 4)) return bad(err, 0, "not an entropy-coded weight blob");
    if (kv_rd_u32(data + 4) != ECW_VERSION) return bad(err, 4, "unsupported version");
    int64_t rows = (int64_t)kv_rd_u64(data + 8), cols = (int64_t)kv_rd_u64(data + 16);
    uint32_t ng = kv_rd_u32(data + 24), rps = kv_rd_u32(data + HEADER_BYTES);
    if (rows <= 0 || cols <= 0 || rows > ((int64_t)1 << 40) / cols || cols > ((int64_t)1 << 32))
        return bad(err, 8, "bad dimensions");
    if (ng == 0 || ng > MAX_GROUPS || rps == 0) return bad(err, 24, "bad group count or stream rows");
    if (rows_out) *rows_out = rows;
    if (cols_out) *cols_out = cols;
    size_t off = HEADER_BYTES + 4;
    int32_t lo[MAX_GROUPS];
    uint32_t nsym[MAX_GROUPS];
    const uint8_t *fp[MAX_GROUPS];
    for (uint32_t k = 0; k < ng; k++) {
        if (size - off < 8) return bad(err, off, "truncated table");
        lo[k] = (int32_t)kv_rd_u32(data + off);
        nsym[k] = kv_rd_u32(data + off + 4);
        if (nsym[k] == 0 || nsym[k] > MAX_SYMBOLS) return bad(err, off + 4, "bad symbol count");
        fp[k] = data + off + 8;
        off += 8;
        if ((size - off) / 4 < nsym[k]) return bad(err, off, "truncated table");
        off += 4ull * nsym[k];
    }
    int64_t nstreams = (rows + rps - 1) / rps;
    uint64_t rest = (uint64_t)cols * 3 + (uint64_t)rows * 2 + 4ull * (uint64_t)nstreams;
    if (rest > size - off) return bad(err, off, "truncated header");
    const uint8_t *grp = data + off, *csp = grp + cols, *rsp = csp + 2 * cols, *szp = rsp + 2 * rows;
    for (int64_t j = 0; j < cols; j++)
        if (grp[j] >= ng) return bad(err, off + (size_t)j, "bad column group");
    if (!z && !w) return KV_OK;
    uint32_t *cum = malloc(sizeof(uint32_t) * (MAX_SYMBOLS + 1) * ng);
    uint16_t *lut = malloc((sizeof(uint16_t) << SCALE_BITS) * ng);
    float *cs = malloc(sizeof(float) * (size_t)cols);
    if (!cum || !lut || !cs) {
        free(cum); free(lut); free(cs);
        return kv_fail(err, KV_ENOMEM, "ecw: out of memory");
    }
    kv_status st = KV_OK;
    for (uint32_t k = 0; k < ng && !st; k++) {
        uint32_t *ck = cum + (size_t)k * (MAX_SYMBOLS + 1);
        uint16_t *lk = lut + ((size_t)k << SCALE_BITS);
        ck[0] = 0;
        for (uint32_t s = 0; s < nsym[k]; s++) {
            uint32_t f = kv_rd_u32(fp[k] + 4 * s);
            if (f > (1u << SCALE_BITS) - ck[s]) { st = bad(err, (size_t)(fp[k] - data) + 4 * s, "bad frequency table"); break; }
            ck[s + 1] = ck[s] + f;
            for (uint32_t q = ck[s]; q < ck[s + 1]; q++) lk[q] = (uint16_t)s;
        }
        if (!st && ck[nsym[k]] != 1u << SCALE_BITS) st = bad(err, (size_t)(fp[k] - data), "frequencies do not sum to 2^16");
    }
    for (int64_t i = 0; i < cols; i++) cs[i] = kv_fp16_to_fp32(kv_rd_u16(csp + 2 * i));
    off = (size_t)(szp - data) + 4 * (size_t)nstreams;
    for (int64_t sidx = 0; sidx < nstreams && !st; sidx++) {
        uint32_t len = kv_rd_u32(szp + 4 * sidx);
        if (len < 4 || len > size - off) { st = bad(err, (size_t)(szp - data) + 4 * sidx, "truncated stream"); break; }
        const uint8_t *p = data + off, *end = p + len;
        uint32_t x = kv_rd_u32(p);
        p += 4;
        int64_t r0 = sidx * rps, r1 = KV_MIN(r0 + (int64_t)rps, rows);
        for (int64_t r = r0; r < r1 && !st; r++) {
            float rs = kv_fp16_to_fp32(kv_rd_u16(rsp + 2 * r));
            for (int64_t i = 0; i < cols; i++) {
                uint32_t k = grp[i];
                const uint32_t *ck = cum + (size_t)k * (MAX_SYMBOLS + 1);
                uint32_t slot = x & ((1u << SCALE_BITS) - 1), s = lut[((size_t)k << SCALE_BITS) + slot];
                uint32_t f = ck[s + 1] - ck[s];
                x = f * (x >> SCALE_BITS) + slot - ck[s];
                while (x < RANS_L) {
                    if (p == end) { st = bad(err, (size_t)(p - data), "stream ends early"); break; }
                    x = (x << 8) | *p++;
                }
                if (st) break;
                int32_t v = (int32_t)s + lo[k];
                if (z) z[r * cols + i] = v;
                if (w) w[r * cols + i] = rs * ((float)v * cs[i]);
            }
        }
        off += len;
    }
    free(cum);
    free(lut);
    free(cs);
    return st;
}
