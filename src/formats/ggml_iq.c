/* ggml_iq.c — ggml's non-linear 4-bit types IQ4_NL (blocks of 32, one fp16 scale) and IQ4_XS (super-blocks of
 * 256 with 6-bit sub-block scales), bit-exact with ggml's file path (ggml/src/ggml-quants.c quantize_iq4_nl /
 * quantize_iq4_xs -> quantize_row_iq4_nl_impl with ntry = 7; dequantize_row_iq4_nl/_xs; ggml-common.h
 * kvalues_iq4nl and block_iq4_nl/block_iq4_xs). Note: quantize_row_iq4_nl_ref (ntry = -1) gives other bytes;
 * ggml_quantize_chunk and llama-quantize use the ntry = 7 search reproduced here. */
#include "formats/formats.h"

const int8_t kv_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

typedef struct { uint8_t d[2], qs[16]; } kv_block_iq4_nl;
typedef struct { uint8_t d[2], scales_h[2], scales_l[4], qs[128]; } kv_block_iq4_xs;
KV_STATIC_ASSERT(sizeof(kv_block_iq4_nl) == 18, "iq4_nl block");
KV_STATIC_ASSERT(sizeof(kv_block_iq4_xs) == 136, "iq4_xs block");

#define IQ4_NTRY 7

/* kv_kvalues_iq4nl as floats (exact): comparisons give the same answers without conversions. */
static const float k_iq4f[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* ggml best_index_int8 (bisection; a tie goes to the upper level) for the n = 32 values s * x[j], without
 * branches: the bisection ends at mu = the number of levels <= a (for levels[0] < a < levels[15]), so count
 * them; the table scan is the outer loop so the element loop vectorizes. */
static void best_index_iq4(float s, const float *x, int32_t *idx) {
    float a[32];
    int32_t mu[32];
    for (int j = 0; j < 32; j++) {
        a[j] = s * x[j];
        mu[j] = 1;
    }
    for (int i = 1; i < 15; i++)
        for (int j = 0; j < 32; j++) mu[j] += k_iq4f[i] <= a[j];
    for (int j = 0; j < 32; j++) {
        int m = mu[j];
        int l = a[j] - k_iq4f[m - 1] < k_iq4f[m] - a[j] ? m - 1 : m;
        l = a[j] >= k_iq4f[15] ? 15 : l;
        l = a[j] <= k_iq4f[0] ? 0 : l;
        idx[j] = a[j] != a[j] ? 15 : l; /* NaN: where ggml's bisection ends */
    }
}

/* Scale of one 32-element block: start at d = -max/values[0], least-squares refit, then try 2*ntry+1
 * other starting scales and keep the best weighted fit. Returns 0 for an (almost) all-zero block. */
static float iq4_block_scale(const float *xb, const float *weight, uint8_t *Lb) {
    const float *values = k_iq4f;
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        float ax = fabsf(xb[j]);
        if (ax > amax) { amax = ax; max = xb[j]; }
    }
    if (amax < KV_GROUP_MAX_EPS) return 0;
    float d = -max / values[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    int32_t idx[32];
    best_index_iq4(id, xb, idx);
    for (int j = 0; j < 32; j++) {
        int l = idx[j];
        Lb[j] = (uint8_t)l;
        float q = values[l], w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -IQ4_NTRY; itry <= IQ4_NTRY; itry++) {
        id = (itry + values[0]) / max;
        sumqx = sumq2 = 0;
        best_index_iq4(id, xb, idx);
        for (int j = 0; j < 32; j++) {
            int l = idx[j];
            float q = values[l], w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* Weights of the search: x^2 without importance, qw * sqrt(sigma2 + x^2) with (sigma2 = 2 mean x^2 over the
 * super-block). */
static void iq4_weights(const float *xb, const float *qw, float sigma2, float *weight) {
    for (int j = 0; j < 32; j++) weight[j] = qw ? qw[j] * sqrtf(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
}

static float iq4_sigma2(const float *x, int n) {
    float sigma2 = 0;
    for (int j = 0; j < n; j++) sigma2 += x[j] * x[j];
    sigma2 *= 2.f / n;
    return sigma2;
}

static void pack_nibbles(const uint8_t *L, uint8_t *q4, int n) {
    for (int i = 0; i < n / 32; i++)
        for (int j = 0; j < 16; j++) q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

static void iq4_nl_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_iq4_nl *y = dst;
    float weight[32];
    uint8_t L[32];
    for (int64_t ib = 0; ib < n / 32; ib++, y++) {
        const float *xb = x + 32 * ib;
        iq4_weights(xb, imp ? imp + 32 * ib : NULL, iq4_sigma2(xb, 32), weight);
        float scale = iq4_block_scale(xb, weight, L);
        kv_wr_u16(y->d, kv_f16_store(scale));
        float id = scale ? 1 / scale : 0;
        int32_t idx[32];
        best_index_iq4(id, xb, idx);
        for (int j = 0; j < 32; j++) L[j] = (uint8_t)idx[j];
        pack_nibbles(L, y->qs, 32);
    }
}

kv_status kv_iq4_nl_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                             const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, iq4_nl_row, err);
}

void kv_iq4_nl_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_iq4_nl *restrict x = src;
    for (int64_t i = 0; i < n / 32; i++, x++, y += 32) {
        const float d = kv_f16_load(x->d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * kv_kvalues_iq4nl[x->qs[j] & 0xf];
            y[j + 16] = d * kv_kvalues_iq4nl[x->qs[j] >> 4];
        }
    }
}

/* IQ4_XS: the eight block scales are requantized to 6 bits against d = -max_scale/32 (the fp32 d, not its
 * fp16 rounding, as in ggml), then every level is re-chosen with the final block scale. */
static void iq4_xs_superblock(const float *x, kv_block_iq4_xs *y, const float *qw) {
    float weight[32], scales[8];
    uint8_t L[256];
    const float sigma2 = iq4_sigma2(x, 256);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < 8; ib++) {
        iq4_weights(x + 32 * ib, qw ? qw + 32 * ib : NULL, sigma2, weight);
        scales[ib] = iq4_block_scale(x + 32 * ib, weight, L + 32 * ib);
        float abs_d = fabsf(scales[ib]);
        if (abs_d > amax_scale) { amax_scale = abs_d; max_scale = scales[ib]; }
    }
    uint16_t scales_h = 0;
    memset(y->scales_l, 0, sizeof y->scales_l);
    const float d = -max_scale / 32;
    kv_wr_u16(y->d, kv_f16_store(d));
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < 8; ib++) {
        int l = kv_nearest_int(id * scales[ib]);
        l = KV_MAX(-32, KV_MIN(31, l));
        float dl = d * l;
        float idl = dl ? 1 / dl : 0.f;
        int32_t idx[32];
        best_index_iq4(idl, x + 32 * ib, idx);
        for (int j = 0; j < 32; j++) L[32 * ib + j] = (uint8_t)idx[j];
        l += 32;
        y->scales_l[ib / 2] |= (uint8_t)((l & 0xf) << (4 * (ib % 2)));
        scales_h |= (uint16_t)((l >> 4) << (2 * (ib % 8)));
    }
    kv_wr_u16(y->scales_h, scales_h);
    pack_nibbles(L, y->qs, 256);
}

static void iq4_xs_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_iq4_xs *y = dst;
    for (int64_t i = 0; i < n / 256; i++) iq4_xs_superblock(x + 256 * i, y + i, imp ? imp + 256 * i : NULL);
}

kv_status kv_iq4_xs_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                             const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, iq4_xs_row, err);
}

void kv_iq4_xs_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_iq4_xs *restrict x = src;
    for (int64_t i = 0; i < n / 256; i++, x++) {
        const float d = kv_f16_load(x->d);
        const uint16_t scales_h = kv_rd_u16(x->scales_h);
        const uint8_t *qs = x->qs;
        for (int ib = 0; ib < 8; ib++, y += 32, qs += 16) {
            const int ls = ((x->scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4);
            const float dl = d * (ls - 32);
            for (int j = 0; j < 16; j++) {
                y[j] = dl * kv_kvalues_iq4nl[qs[j] & 0xf];
                y[j + 16] = dl * kv_kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}
