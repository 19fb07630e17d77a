/* ggml_legacy.c — ggml's legacy block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 (blocks of 32), bit-exact with
 * ggml (ggml/src/ggml-quants.c): quantize_row_qN_ref without importance weights, quantize_row_qN_impl with
 * them (weights qw * sqrt(sigma2 + x^2), sigma2 = mean x^2 over the row), dequantize_row_qN; layouts from
 * ggml-common.h. 4/5-bit packing is split halves: byte j holds element j (low nibble) and j+16 (high). */
#include "formats/formats.h"

#include <float.h>

#define QK 32

typedef struct { uint8_t d[2], qs[16]; } kv_block_q4_0;
typedef struct { uint8_t d[2], m[2], qs[16]; } kv_block_q4_1;
typedef struct { uint8_t d[2], qh[4], qs[16]; } kv_block_q5_0;
typedef struct { uint8_t d[2], m[2], qh[4], qs[16]; } kv_block_q5_1;
typedef struct { uint8_t d[2]; int8_t qs[32]; } kv_block_q8_0;
typedef struct { uint8_t d[2], s[2]; int8_t qs[32]; } kv_block_q8_1;
KV_STATIC_ASSERT(sizeof(kv_block_q4_0) == 18, "q4_0 block");
KV_STATIC_ASSERT(sizeof(kv_block_q4_1) == 20, "q4_1 block");
KV_STATIC_ASSERT(sizeof(kv_block_q5_0) == 22, "q5_0 block");
KV_STATIC_ASSERT(sizeof(kv_block_q5_1) == 24, "q5_1 block");
KV_STATIC_ASSERT(sizeof(kv_block_q8_0) == 34, "q8_0 block");
KV_STATIC_ASSERT(sizeof(kv_block_q8_1) == 36, "q8_1 block");

/* The element of largest magnitude, with its sign (the first one on ties). */
static float signed_absmax(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void min_max(const float *x, float *min_out, float *max_out) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QK; j++) { /* selects (minss/maxss), same result as ggml's ifs */
        min = x[j] < min ? x[j] : min;
        max = x[j] > max ? x[j] : max;
    }
    *min_out = min;
    *max_out = max;
}

/* The importance weights of the weighted paths: qw * sqrt(sigma2 + x^2), sigma2 = mean of x^2 over the row. */
static float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; j++) sum_x2 += x[j] * x[j];
    return sum_x2 / n;
}

static void block_weights(const float *xb, const float *qw, float sigma2, float *weight) {
    for (int j = 0; j < QK; j++) weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}

/* Bit 4 of element k goes to bit k of qh (ggml's two shifts per pair give the same word). */
static void pack_q5_levels(const uint8_t *L, uint8_t *qs, uint8_t *qh_out) {
    uint32_t qh = 0;
    for (int k = 0; k < QK; k++) qh |= (uint32_t)((L[k] >> 4) & 1) << k;
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
    kv_wr_u32(qh_out, qh);
}

/* ---------------------------------------------------------------------------------------------- */
/* Q4_0: d = max / -8 (signed max), q = min(15, trunc(x/d + 8.5))                                  */
/* ---------------------------------------------------------------------------------------------- */

static void q4_0_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q4_0 *y = dst;
    const float sigma2 = imp ? row_sigma2(x, n) : 0;
    for (int64_t i = 0; i < n / QK; i++, y++) {
        const float *xb = x + i * QK;
        if (imp) {
            float weight[QK];
            int8_t L[QK];
            block_weights(xb, imp + i * QK, sigma2, weight);
            kv_wr_u16(y->d, kv_f16_store(kv_make_qx_quants(QK, 8, xb, L, 1, weight)));
            for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
            continue;
        }
        const float d = signed_absmax(xb) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        kv_wr_u16(y->d, kv_f16_store(d));
        uint8_t L[QK];
        if (isfinite(id)) /* then |x * id| <= 8: the plain conversion is exact and defined */
            for (int j = 0; j < QK; j++) L[j] = (uint8_t)KV_MIN(15, (int)(xb[j] * id + 8.5f));
        else
            for (int j = 0; j < QK; j++) L[j] = (uint8_t)KV_MIN(15, (int8_t)kv_cvtt_i32(xb[j] * id + 8.5f));
        for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

kv_status kv_q4_0_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q4_0_row, err);
}

void kv_q4_0_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q4_0 *restrict x = src;
    for (int64_t i = 0; i < n / QK; i++, x++, y += QK) {
        const float d = kv_f16_load(x->d);
        for (int j = 0; j < 16; j++) {
            y[j] = ((x->qs[j] & 0x0F) - 8) * d;
            y[j + 16] = ((x->qs[j] >> 4) - 8) * d;
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - min)/d + 0.5))                       */
/* ---------------------------------------------------------------------------------------------- */

static void q4_1_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q4_1 *y = dst;
    const float sigma2 = imp ? row_sigma2(x, n) : 0;
    for (int64_t i = 0; i < n / QK; i++, y++) {
        const float *xb = x + i * QK;
        if (imp) {
            float weight[QK], the_min;
            uint8_t L[QK], Laux[QK];
            block_weights(xb, imp + i * QK, sigma2, weight);
            float d = kv_make_qkx3_quants(QK, 15, xb, weight, L, &the_min, Laux, -0.9f, 0.05f, 36, false);
            kv_wr_u16(y->d, kv_f16_store(d));
            kv_wr_u16(y->m, kv_f16_store(-the_min));
            for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
            continue;
        }
        float min, max;
        min_max(xb, &min, &max);
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        kv_wr_u16(y->d, kv_f16_store(d));
        kv_wr_u16(y->m, kv_f16_store(min));
        uint8_t L[QK];
        if (isfinite(id) && isfinite(max - min)) /* then 0 <= (x - min) * id <= 15 */
            for (int j = 0; j < QK; j++) L[j] = (uint8_t)KV_MIN(15, (int)((xb[j] - min) * id + 0.5f));
        else
            for (int j = 0; j < QK; j++) L[j] = (uint8_t)KV_MIN(15, (int8_t)kv_cvtt_i32((xb[j] - min) * id + 0.5f));
        for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

kv_status kv_q4_1_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q4_1_row, err);
}

void kv_q4_1_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q4_1 *restrict x = src;
    for (int64_t i = 0; i < n / QK; i++, x++, y += QK) {
        const float d = kv_f16_load(x->d), m = kv_f16_load(x->m);
        for (int j = 0; j < 16; j++) {
            y[j] = (x->qs[j] & 0x0F) * d + m;
            y[j + 16] = (x->qs[j] >> 4) * d + m;
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Q5_0: d = max / -16, q = min(31, trunc(x/d + 16.5)); bit 4 of element j goes to bit j of qh       */
/* ---------------------------------------------------------------------------------------------- */

static void q5_0_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q5_0 *y = dst;
    const float sigma2 = imp ? row_sigma2(x, n) : 0;
    uint8_t L[QK];
    for (int64_t i = 0; i < n / QK; i++, y++) {
        const float *xb = x + i * QK;
        if (imp) {
            float weight[QK];
            int8_t Ls[QK];
            block_weights(xb, imp + i * QK, sigma2, weight);
            kv_wr_u16(y->d, kv_f16_store(kv_make_qx_quants(QK, 16, xb, Ls, 1, weight)));
            for (int j = 0; j < QK; j++) L[j] = (uint8_t)Ls[j];
        } else {
            const float d = signed_absmax(xb) / -16;
            const float id = d ? 1.0f / d : 0.0f;
            kv_wr_u16(y->d, kv_f16_store(d));
            if (isfinite(id))
                for (int j = 0; j < QK; j++) L[j] = (uint8_t)KV_MIN(31, (int)(xb[j] * id + 16.5f));
            else
                for (int j = 0; j < QK; j++) L[j] = (uint8_t)KV_MIN(31, (int8_t)kv_cvtt_i32(xb[j] * id + 16.5f));
        }
        pack_q5_levels(L, y->qs, y->qh);
    }
}

kv_status kv_q5_0_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q5_0_row, err);
}

void kv_q5_0_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q5_0 *restrict x = src;
    for (int64_t i = 0; i < n / QK; i++, x++, y += QK) {
        const float d = kv_f16_load(x->d);
        const uint32_t qh = kv_rd_u32(x->qh);
        for (int j = 0; j < 16; j++) {
            const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (((x->qs[j] & 0x0F) | h0) - 16) * d;
            y[j + 16] = (((x->qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Q5_1: d = (max - min) / 31, m = min, q = trunc((x - min)/d + 0.5) (ggml does not clamp)          */
/* ---------------------------------------------------------------------------------------------- */

static void q5_1_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q5_1 *y = dst;
    const float sigma2 = imp ? row_sigma2(x, n) : 0;
    uint8_t L[QK];
    for (int64_t i = 0; i < n / QK; i++, y++) {
        const float *xb = x + i * QK;
        if (imp) {
            float weight[QK], the_min;
            uint8_t Laux[QK];
            block_weights(xb, imp + i * QK, sigma2, weight);
            float d = kv_make_qkx3_quants(QK, 31, xb, weight, L, &the_min, Laux, -0.9f, 0.05f, 36, false);
            kv_wr_u16(y->d, kv_f16_store(d));
            kv_wr_u16(y->m, kv_f16_store(-the_min));
        } else {
            float min, max;
            min_max(xb, &min, &max);
            const float d = (max - min) / 31;
            const float id = d ? 1.0f / d : 0.0f;
            kv_wr_u16(y->d, kv_f16_store(d));
            kv_wr_u16(y->m, kv_f16_store(min));
            if (isfinite(id) && isfinite(max - min))
                for (int j = 0; j < QK; j++) L[j] = (uint8_t)(int)((xb[j] - min) * id + 0.5f);
            else
                for (int j = 0; j < QK; j++) L[j] = (uint8_t)kv_cvtt_i32((xb[j] - min) * id + 0.5f);
        }
        pack_q5_levels(L, y->qs, y->qh);
    }
}

kv_status kv_q5_1_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q5_1_row, err);
}

void kv_q5_1_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q5_1 *restrict x = src;
    for (int64_t i = 0; i < n / QK; i++, x++, y += QK) {
        const float d = kv_f16_load(x->d), m = kv_f16_load(x->m);
        const uint32_t qh = kv_rd_u32(x->qh);
        for (int j = 0; j < 16; j++) {
            const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((x->qs[j] & 0x0F) | h0) * d + m;
            y[j + 16] = ((x->qs[j] >> 4) | h1) * d + m;
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Q8_0 / Q8_1: d = amax / 127, q = roundf(x/d) (half away from zero); ggml has no weighted path     */
/* ---------------------------------------------------------------------------------------------- */

static float q8_scale(const float *xb, float *id) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = KV_MAX(amax, fabsf(xb[j]));
    const float d = amax / 127;
    *id = d ? 1.0f / d : 0.0f;
    return d;
}

/* roundf (half away from zero) of a value with |v| < 2^23, without the libm call: v - trunc(v) is exact. */
static inline int round_half_away(float v) {
    int t = (int)v;
    int away = fabsf(v - (float)t) >= 0.5f;
    return t + away * ((v > 0) - (v < 0)); /* arithmetic, not a branch: the comparison is data-random */
}

static void q8_levels(const float *x, float id, int8_t *qs) {
    if (isfinite(id)) /* then |x * id| <= 127 */
        for (int j = 0; j < QK; j++) qs[j] = (int8_t)round_half_away(x[j] * id);
    else
        for (int j = 0; j < QK; j++) qs[j] = (int8_t)kv_cvtt_i32(roundf(x[j] * id));
}

static void q8_0_row(const float *x, void *dst, int64_t n, const float *imp) {
    (void)imp;
    kv_block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / QK; i++, y++, x += QK) {
        float id;
        kv_wr_u16(y->d, kv_f16_store(q8_scale(x, &id)));
        q8_levels(x, id, y->qs);
    }
}

kv_status kv_q8_0_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q8_0_row, err);
}

void kv_q8_0_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q8_0 *restrict x = src;
    for (int64_t i = 0; i < n / QK; i++, x++, y += QK) {
        const float d = kv_f16_load(x->d);
        for (int j = 0; j < QK; j++) y[j] = x->qs[j] * d;
    }
}

/* Q8_1 also stores s = fp16(d * sum(q)) with the fp32 d (the dot-product kernels' precomputed sum). */
static void q8_1_row(const float *x, void *dst, int64_t n, const float *imp) {
    (void)imp;
    kv_block_q8_1 *y = dst;
    for (int64_t i = 0; i < n / QK; i++, y++, x += QK) {
        float id;
        const float d = q8_scale(x, &id);
        kv_wr_u16(y->d, kv_f16_store(d));
        q8_levels(x, id, y->qs);
        int sum = 0;
        for (int j = 0; j < QK; j++) sum += y->qs[j];
        kv_wr_u16(y->s, kv_f16_store(sum * d));
    }
}

kv_status kv_q8_1_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q8_1_row, err);
}

void kv_q8_1_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q8_1 *restrict x = src;
    for (int64_t i = 0; i < n / QK; i++, x++, y += QK) {
        const float d = kv_f16_load(x->d);
        for (int j = 0; j < QK; j++) y[j] = x->qs[j] * d;
    }
}
