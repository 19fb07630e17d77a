/* fgrid.c — the "format grid": finds, by probing a format's own quantize/dequantize, which bits of a packed
 * block code which elements and the level table of those codes, so that GPTQ (gptq.c) can round columns to
 * any kvant/ggml format with fixed block parameters (see gptq.h for the method). */
#include "algos/gptq.h"
#include <math.h>

enum { PROBE_TRIALS = 3, MAX_UNIT = 8, MAX_CODE_BITS = 16 };

static int get_bit(const uint8_t *blk, int32_t bit) { return (blk[bit >> 3] >> (bit & 7)) & 1; }
static void put_bit(uint8_t *blk, int32_t bit, int v) {
    if (v) blk[bit >> 3] |= (uint8_t)(1u << (bit & 7));
    else blk[bit >> 3] &= (uint8_t)~(1u << (bit & 7));
}

int32_t kv_fgrid_get_code(const kv_fgrid *g, const uint8_t *blk, int32_t unit) {
    const int32_t *bits = g->unit_bit + (int64_t)unit * g->nbits;
    int32_t c = 0;
    for (int32_t k = 0; k < g->nbits; k++) c |= get_bit(blk, bits[k]) << k;
    return c;
}

void kv_fgrid_set_code(const kv_fgrid *g, uint8_t *blk, int32_t unit, int32_t code) {
    const int32_t *bits = g->unit_bit + (int64_t)unit * g->nbits;
    for (int32_t k = 0; k < g->nbits; k++) put_bit(blk, bits[k], (code >> k) & 1);
}

void kv_fgrid_free(kv_fgrid *g) {
    if (!g) return;
    free(g->unit_pos);
    free(g->unit_bit);
    free(g->pos_unit);
    free(g->pos_coord);
    free(g->t);
    free(g->valid);
    free(g->c0);
    free(g->c1);
    free(g->sorted_code);
    free(g->sorted_t);
    memset(g, 0, sizeof *g);
}

static int same_bits(float x, float y) { return memcmp(&x, &y, sizeof x) == 0; }

/* Which elements each bit of the block affects, as a list of up to MAX_UNIT positions (count > MAX_UNIT:
 * a block parameter). Union over a few random blocks. */
typedef struct {
    int32_t count;
    int32_t pos[MAX_UNIT];
} bit_effect;

static void add_effect(bit_effect *e, int32_t pos) {
    for (int32_t k = 0; k < KV_MIN(e->count, MAX_UNIT); k++)
        if (e->pos[k] == pos) return;
    if (e->count < MAX_UNIT) e->pos[e->count] = pos;
    e->count++;
}

static kv_status probe_bits(kv_fgrid *g, bit_effect *eff, uint8_t *row, uint8_t *flip, float *src, float *base,
                            float *deq, kv_error *err) {
    const kv_format *f = &g->fmt;
    int32_t nbit = g->bb * 8;
    for (int trial = 0; trial < PROBE_TRIALS; trial++) {
        kv_rng rng;
        kv_rng_seed(&rng, 0x9e3779b9u + (uint64_t)trial);
        double scale = trial == 0 ? 1.0 : trial == 1 ? 0.03 : 7.0;
        for (int32_t i = 0; i < g->B; i++) src[i] = (float)(scale * kv_rng_normal(&rng));
        kv_status st = f->quantize(f, src, row, 1, g->B, NULL, err);
        if (st) return st;
        f->dequantize(f, row, base, g->B);
        for (int32_t bit = 0; bit < nbit; bit++) {
            memcpy(flip, row, (size_t)(g->hdr + g->bb));
            put_bit(flip + g->hdr, bit, !get_bit(flip + g->hdr, bit));
            f->dequantize(f, flip, deq, g->B);
            for (int32_t i = 0; i < g->B; i++)
                if (!same_bits(deq[i], base[i])) add_effect(&eff[bit], i);
        }
    }
    return KV_OK;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Groups the code bits into units: bits with the smallest effect count p, grouped by the set they affect. */
static kv_status find_units(kv_fgrid *g, bit_effect *eff, kv_error *err) {
    int32_t nbit = g->bb * 8, p = INT32_MAX;
    for (int32_t b = 0; b < nbit; b++) {
        if (eff[b].count > 0 && eff[b].count < p) p = eff[b].count;
        if (eff[b].count > 0 && eff[b].count <= MAX_UNIT)
            qsort(eff[b].pos, (size_t)eff[b].count, sizeof(int32_t), cmp_i32);
    }
    if (p > MAX_UNIT || g->B % p)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s: no per-element code bits found", g->fmt.name);
    g->p = p;
    g->nunits = g->B / p;
    g->pos_unit = malloc(sizeof(int32_t) * (size_t)g->B);
    g->pos_coord = malloc(sizeof(int32_t) * (size_t)g->B);
    g->unit_pos = malloc(sizeof(int32_t) * (size_t)g->B);
    int32_t *nb = calloc((size_t)g->nunits, sizeof(int32_t));
    if (!g->pos_unit || !g->pos_coord || !g->unit_pos || !nb) {
        free(nb);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    for (int32_t i = 0; i < g->B; i++) g->pos_unit[i] = -1;
    int32_t units = 0;
    /* units are numbered by their first position so that numbering is independent of the bit layout */
    for (int32_t i = 0; i < g->B; i++) {
        if (g->pos_unit[i] >= 0) continue;
        int32_t found = -1;
        for (int32_t b = 0; b < nbit && found < 0; b++)
            if (eff[b].count == p && eff[b].pos[0] == i) found = b;
        if (found < 0 || units >= g->nunits) {
            free(nb);
            return kv_fail(err, KV_EUNSUPPORTED, "format %s: element %d of a block has no code bits of its own",
                           g->fmt.name, (int)i);
        }
        for (int32_t k = 0; k < p; k++) {
            int32_t pos = eff[found].pos[k];
            if (g->pos_unit[pos] >= 0) {
                free(nb);
                return kv_fail(err, KV_EUNSUPPORTED, "format %s: overlapping element codes", g->fmt.name);
            }
            g->pos_unit[pos] = units;
            g->pos_coord[pos] = k;
            g->unit_pos[units * p + k] = pos;
        }
        units++;
    }
    /* bits of each unit */
    for (int32_t b = 0; b < nbit; b++)
        if (eff[b].count == p) nb[g->pos_unit[eff[b].pos[0]]]++;
    g->nbits = nb[0];
    for (int32_t u = 0; u < g->nunits; u++)
        if (nb[u] != g->nbits || nb[u] > MAX_CODE_BITS) {
            int other = (int)nb[u];
            free(nb);
            return kv_fail(err, KV_EUNSUPPORTED, "format %s: elements have %d and %d code bits (at most %d supported)",
                           g->fmt.name, (int)g->nbits, other, MAX_CODE_BITS);
        }
    g->unit_bit = malloc(sizeof(int32_t) * (size_t)g->nunits * (size_t)g->nbits);
    if (!g->unit_bit) {
        free(nb);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    memset(nb, 0, sizeof(int32_t) * (size_t)g->nunits);
    for (int32_t b = 0; b < nbit; b++)
        if (eff[b].count == p) {
            int32_t u = g->pos_unit[eff[b].pos[0]];
            /* the unit must be exactly this bit's set */
            for (int32_t k = 0; k < p; k++)
                if (g->unit_pos[u * p + k] != eff[b].pos[k]) {
                    free(nb);
                    return kv_fail(err, KV_EUNSUPPORTED, "format %s: inconsistent element codes", g->fmt.name);
                }
            g->unit_bit[u * g->nbits + nb[u]++] = b;
        }
    free(nb);
    g->ncodes = 1 << g->nbits;
    return KV_OK;
}

static void set_all_codes(const kv_fgrid *g, uint8_t *blk, int32_t code) {
    for (int32_t u = 0; u < g->nunits; u++) kv_fgrid_set_code(g, blk, u, code);
}

void kv_fgrid_affine(const kv_fgrid *g, const uint8_t *row_hdr, const uint8_t *blk, float *a, float *b,
                     uint8_t *scratch, float *fscratch) {
    float *v0 = fscratch, *v1 = fscratch + g->B;
    if (g->hdr) memcpy(scratch, row_hdr, (size_t)g->hdr);
    for (int32_t i = 0; i < g->p; i++) {
        memcpy(scratch + g->hdr, blk, (size_t)g->bb);
        set_all_codes(g, scratch + g->hdr, g->c0[i]);
        g->fmt.dequantize(&g->fmt, scratch, v0, g->B);
        set_all_codes(g, scratch + g->hdr, g->c1[i]);
        g->fmt.dequantize(&g->fmt, scratch, v1, g->B);
        for (int32_t u = 0; u < g->nunits; u++) {
            int32_t pos = g->unit_pos[u * g->p + i];
            a[pos] = v1[pos] - v0[pos];
            b[pos] = v0[pos];
        }
    }
}

/* Level table from the reference block in row (unit 0), then a check that every unit of the block follows
 * the same affine law for every code. */
static kv_status find_levels(kv_fgrid *g, uint8_t *row, uint8_t *tmp, float *deq, kv_error *err) {
    int32_t nc = g->ncodes, p = g->p;
    float *raw = malloc(sizeof(float) * (size_t)nc * (size_t)p);
    float *a = malloc(sizeof(float) * (size_t)g->B * 4);
    g->t = calloc((size_t)nc * (size_t)p, sizeof(float));
    g->valid = calloc((size_t)nc, 1);
    g->c0 = calloc((size_t)p, sizeof(int32_t));
    g->c1 = calloc((size_t)p, sizeof(int32_t));
    if (!raw || !a || !g->t || !g->valid || !g->c0 || !g->c1) {
        free(raw);
        free(a);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    kv_status st = KV_OK;
    for (int32_t c = 0; c < nc; c++) {
        memcpy(tmp, row, (size_t)(g->hdr + g->bb));
        set_all_codes(g, tmp + g->hdr, c);
        g->fmt.dequantize(&g->fmt, tmp, deq, g->B);
        int ok = 1;
        for (int32_t k = 0; k < p; k++) {
            raw[c * p + k] = deq[g->unit_pos[k]];
            if (!isfinite(raw[c * p + k])) ok = 0;
        }
        g->valid[c] = (uint8_t)ok;
    }
    for (int32_t k = 0; k < p; k++) {
        int32_t lo = -1, hi = -1;
        for (int32_t c = 0; c < nc; c++) {
            if (!g->valid[c]) continue;
            if (lo < 0 || raw[c * p + k] < raw[lo * p + k]) lo = c;
            if (hi < 0 || raw[c * p + k] > raw[hi * p + k]) hi = c;
        }
        if (lo < 0 || !(raw[hi * p + k] > raw[lo * p + k])) {
            st = kv_fail(err, KV_EUNSUPPORTED, "format %s: codes do not change the element's value", g->fmt.name);
            goto done;
        }
        g->c0[k] = lo;
        g->c1[k] = hi;
        for (int32_t c = 0; c < nc; c++)
            g->t[c * p + k] = (raw[c * p + k] - raw[lo * p + k]) / (raw[hi * p + k] - raw[lo * p + k]);
    }
    /* verify the affine law on every unit and code */
    float *aa = a, *bb = a + g->B, *fs = a + 2 * g->B;
    kv_fgrid_affine(g, row, row + g->hdr, aa, bb, tmp, fs);
    uint8_t *tmp2 = tmp + g->hdr + g->bb;
    for (int32_t c = 0; c < nc && st == KV_OK; c++) {
        if (!g->valid[c]) continue;
        memcpy(tmp2, row, (size_t)(g->hdr + g->bb));
        set_all_codes(g, tmp2 + g->hdr, c);
        g->fmt.dequantize(&g->fmt, tmp2, deq, g->B);
        for (int32_t pos = 0; pos < g->B; pos++) {
            float want = aa[pos] * g->t[c * p + g->pos_coord[pos]] + bb[pos];
            float tol = 1e-5f * (fabsf(aa[pos]) + fabsf(bb[pos])) + 1e-30f;
            if (!(fabsf(deq[pos] - want) <= tol)) {
                st = kv_fail(err, KV_EUNSUPPORTED,
                             "format %s: element values are not one level table scaled per block; GPTQ cannot "
                             "round to it", g->fmt.name);
                break;
            }
        }
    }
done:
    free(raw);
    free(a);
    return st;
}

static int cmp_level(const void *x, const void *y, void *ctx) {
    const float *t = ctx;
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    if (t[a] != t[b]) return t[a] < t[b] ? -1 : 1;
    return (a > b) - (a < b);
}

static kv_status sort_levels(kv_fgrid *g, kv_error *err) {
    g->sorted_code = malloc(sizeof(int32_t) * (size_t)g->ncodes);
    g->sorted_t = malloc(sizeof(float) * (size_t)g->ncodes);
    if (!g->sorted_code || !g->sorted_t) return kv_fail(err, KV_ENOMEM, "out of memory");
    int32_t n = 0;
    for (int32_t c = 0; c < g->ncodes; c++)
        if (g->valid[c]) g->sorted_code[n++] = c;
    qsort_r(g->sorted_code, (size_t)n, sizeof(int32_t), cmp_level, g->t);
    int32_t m = 0;
    for (int32_t k = 0; k < n; k++) {
        float t = g->t[g->sorted_code[k]];
        if (m > 0 && g->sorted_t[m - 1] == t) continue;
        g->sorted_code[m] = g->sorted_code[k];
        g->sorted_t[m++] = t;
    }
    g->nsorted = m;
    return KV_OK;
}

int32_t kv_fgrid_nearest1(const kv_fgrid *g, float u) {
    const float *t = g->sorted_t;
    int32_t lo = 0, hi = g->nsorted - 1;
    if (!(u > t[0])) return g->sorted_code[0];
    if (u >= t[hi]) return g->sorted_code[hi];
    while (hi - lo > 1) { /* t[lo] < u <= t[hi] */
        int32_t mid = (lo + hi) / 2;
        if (t[mid] < u) lo = mid;
        else hi = mid;
    }
    return u - t[lo] <= t[hi] - u ? g->sorted_code[lo] : g->sorted_code[hi];
}

kv_status kv_fgrid_build(const kv_format *f, kv_fgrid *g, kv_error *err) {
    memset(g, 0, sizeof *g);
    g->fmt = *f;
    g->B = f->block;
    g->bb = f->block_bytes;
    g->hdr = f->row_header_bytes;
    if (!f->quantize || !f->dequantize || g->B <= 0 || g->bb <= 0 || g->B > 4096 || g->hdr < 0)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s cannot be quantized", f->name);
    if (f->type == KV_TYPE_Q8_1 || f->type == KV_TYPE_Q8_K)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s stores sums of its codes (an activation type); use q8_0",
                       f->name);
    size_t rowb = (size_t)(g->hdr + g->bb);
    int32_t nbit = g->bb * 8;
    uint8_t *row = malloc(rowb * 3);
    float *fl = malloc(sizeof(float) * (size_t)g->B * 3);
    bit_effect *eff = calloc((size_t)nbit, sizeof *eff);
    kv_status st = KV_OK;
    if (!row || !fl || !eff) {
        st = kv_fail(err, KV_ENOMEM, "out of memory");
        goto out;
    }
    st = probe_bits(g, eff, row, row + rowb, fl, fl + g->B, fl + 2 * g->B, err);
    if (st) goto out;
    st = find_units(g, eff, err);
    if (st) goto out;
    /* reference block: the first probe's */
    kv_rng rng;
    kv_rng_seed(&rng, 0x9e3779b9u);
    for (int32_t i = 0; i < g->B; i++) fl[i] = (float)kv_rng_normal(&rng);
    st = f->quantize(f, fl, row, 1, g->B, NULL, err);
    if (st) goto out;
    st = find_levels(g, row, row + rowb, fl + g->B, err);
    if (st) goto out;
    st = sort_levels(g, err);
out:
    free(row);
    free(fl);
    free(eff);
    if (st) kv_fgrid_free(g);
    return st;
}
