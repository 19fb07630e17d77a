/* ggml_k.c — ggml's k-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (super-blocks of 256) and the activation-side Q8_K,
 * bit-exact with ggml (ggml/src/ggml-quants.c: quantize_row_qN_K_ref without importance weights,
 * quantize_row_qN_K_impl with them, dequantize_row_qN_K; block layouts from ggml-common.h), plus the scale
 * searches they share with the legacy types (make_qx_quants, make_qkx2/3_quants, make_qp_quants,
 * make_q3_quants). Every expression keeps ggml's float operation order: the bytes depend on it. */
#include "formats/formats.h"

#define QK_K 256

typedef struct { uint8_t scales[16], qs[64], d[2], dmin[2]; } kv_block_q2_k;
typedef struct { uint8_t hmask[32], qs[64], scales[12], d[2]; } kv_block_q3_k;
typedef struct { uint8_t d[2], dmin[2], scales[12], qs[128]; } kv_block_q4_k;
typedef struct { uint8_t d[2], dmin[2], scales[12], qh[32], qs[128]; } kv_block_q5_k;
typedef struct { uint8_t ql[128], qh[64]; int8_t scales[16]; uint8_t d[2]; } kv_block_q6_k;
typedef struct { uint8_t d[4]; int8_t qs[256]; uint8_t bsums[32]; } kv_block_q8_k;
KV_STATIC_ASSERT(sizeof(kv_block_q2_k) == 84, "q2_k block");
KV_STATIC_ASSERT(sizeof(kv_block_q3_k) == 110, "q3_k block");
KV_STATIC_ASSERT(sizeof(kv_block_q4_k) == 144, "q4_k block");
KV_STATIC_ASSERT(sizeof(kv_block_q5_k) == 176, "q5_k block");
KV_STATIC_ASSERT(sizeof(kv_block_q6_k) == 210, "q6_k block");
KV_STATIC_ASSERT(sizeof(kv_block_q8_k) == 292, "q8_k block");

/* ============================================================================================== */
/* scale searches                                                                                  */
/* ============================================================================================== */

/* make_qx_quants' weights: qw when given, else by rmse_type (1: x^2, 2: 1, 3: |x|, other: sqrt|x|). Computed
 * once per call (n <= 32 here) instead of in each of the 19 trial scales; the values are the same. */
static void qx_weights(int n, int rmse_type, const float *qw, const float *x, float *w) {
    for (int i = 0; i < n; i++)
        w[i] = qw ? qw[i] : rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1 : rmse_type == 3 ? fabsf(x[i]) : sqrtf(fabsf(x[i]));
}

#define QX_MAX_N 32

/* The body is instantiated for n = 16 and n = 32 (the only sizes ggml uses) so the level loops have constant
 * trip counts and vectorize; the arithmetic is the same for any n. */
static inline __attribute__((always_inline)) float make_qx_quants(int n, int nmax, const float *x, int8_t *L,
                                                                  int rmse_type, const float *qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < KV_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; i++) {
            int l = kv_nearest_int(iscale * x[i]);
            L[i] = (int8_t)(nmax + KV_MAX(-nmax, KV_MIN(nmax - 1, l)));
        }
        return 1 / iscale;
    }
    bool return_early = false;
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        return_early = true;
    }
    float wbuf[QX_MAX_N], wx[QX_MAX_N];
    int lv[QX_MAX_N];
    qx_weights(n, rmse_type, qw, x, wbuf);
    for (int i = 0; i < n; i++) wx[i] = wbuf[i] * x[i]; /* the w*x of ggml's w*x*l, evaluated left to right */
    /* levels first (vectorizable), then the sums in ggml's order */
    for (int i = 0; i < n; i++) lv[i] = KV_MAX(-nmax, KV_MIN(nmax - 1, kv_nearest_int(iscale * x[i])));
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (int8_t)(lv[i] + nmax);
        sumlx += wx[i] * lv[i];
        suml2 += wbuf[i] * lv[i] * lv[i];
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    if (return_early) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        for (int i = 0; i < n; i++) lv[i] = KV_MAX(-nmax, KV_MIN(nmax - 1, kv_nearest_int(iscale * x[i])));
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            sumlx += wx[i] * lv[i];
            suml2 += wbuf[i] * lv[i] * lv[i];
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + lv[i]);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

float kv_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw) {
    if (n == 16) return make_qx_quants(16, nmax, x, L, rmse_type, qw);
    if (n == 32) return make_qx_quants(32, nmax, x, L, rmse_type, qw);
    return n > 0 && n <= QX_MAX_N ? make_qx_quants(n, nmax, x, L, rmse_type, qw) : 0.f;
}

float kv_make_q3_quants(int n, int nmax, const float *x, int8_t *L, bool do_rmse) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < KV_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    if (do_rmse) {
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = kv_nearest_int(iscale * x[i]);
            l = KV_MAX(-nmax, KV_MIN(nmax - 1, l));
            L[i] = (int8_t)l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        for (int itry = 0; itry < 5; itry++) {
            int n_changed = 0;
            for (int i = 0; i < n; i++) {
                float w = x[i] * x[i];
                float slx = sumlx - w * x[i] * L[i];
                if (slx > 0) {
                    float sl2 = suml2 - w * L[i] * L[i];
                    int new_l = kv_nearest_int(x[i] * sl2 / slx);
                    new_l = KV_MAX(-nmax, KV_MIN(nmax - 1, new_l));
                    if (new_l != L[i]) {
                        slx += w * x[i] * new_l;
                        sl2 += w * new_l * new_l;
                        if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                            L[i] = (int8_t)new_l;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed++;
                        }
                    }
                }
            }
            if (!n_changed) break;
        }
        for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
    for (int i = 0; i < n; i++) {
        int l = kv_nearest_int(iscale * x[i]);
        L[i] = (int8_t)(KV_MAX(-nmax, KV_MIN(nmax - 1, l)) + nmax);
    }
    return 1 / iscale;
}

/* make_qkx2_quants and make_qkx3_quants are the same search (qkx3 also accepts NULL weights = x^2, which
 * its wrapper materialises: the same floats, and no branch in the loops). */
static float make_qkx_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                             uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = kv_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)KV_MAX(0, KV_MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = kv_nearest_int(iscale * (x[i] - min));
            l = KV_MAX(0, KV_MIN(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

float kv_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    return make_qkx_quants(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

float kv_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float w2[QX_MAX_N];
    if (!weights) {
        if (n > QX_MAX_N) return 0.f;
        for (int i = 0; i < n; i++) w2[i] = x[i] * x[i];
        weights = w2;
    }
    return make_qkx_quants(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

float kv_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights) {
    float max = 0;
    for (int i = 0; i < n; i++) max = KV_MAX(max, x[i]);
    if (max < KV_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)kv_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        float diff = x[i] - scale * L[i];
        float w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        float iscale_is = (0.1f * is + nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            int l = kv_nearest_int(iscale_is * x[i]);
            l = KV_MIN(nmax, l);
            float diff = x[i] - scale_is * l;
            float w = quant_weights[i];
            mse += w * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = kv_nearest_int(iscale * x[i]);
        l = KV_MIN(nmax, l);
        L[i] = (uint8_t)l;
        float w = quant_weights[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = quant_weights[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = kv_nearest_int(x[i] * sl2 / slx);
                new_l = KV_MIN(nmax, new_l);
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ============================================================================================== */
/* packing helpers                                                                                 */
/* ============================================================================================== */

/* 2-bit packing of Q2_K / Q3_K: per 128 elements, byte l holds elements l, l+32, l+64, l+96. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* Q4_K / Q5_K 6-bit scale and min of sub-block j (ggml get_scale_min_k4). */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

static void put_scale_min_k4(int j, uint8_t ls, uint8_t lm, uint8_t *scales) {
    if (j < 4) {
        scales[j] = ls;
        scales[j + 4] = lm;
    } else {
        scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
        scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
        scales[j - 0] |= (uint8_t)((lm >> 4) << 6);
    }
}

/* Q3_K: the 6-bit scale of sub-block j is spread over a low nibble and 2 high bits. */
static void put_scale_q3(int j, int l, uint8_t *scales) {
    if (j < 8) scales[j] = (uint8_t)(l & 0xF);
    else scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
    l >>= 4;
    scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
}

static inline int8_t get_scale_q3(int j, const uint8_t *scales) {
    int lo = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
    int hi = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (int8_t)((lo | (hi << 4)) - 32);
}

/* ============================================================================================== */
/* Q2_K                                                                                            */
/* ============================================================================================== */

static void q2_k_requantize_pack(const float *x, kv_block_q2_k *y, uint8_t *L) {
    float d_all = kv_f16_load(y->d), m_all = kv_f16_load(y->dmin);
    for (int j = 0; j < QK_K / 16; j++) {
        const float d = d_all * (y->scales[j] & 0xF);
        if (!d) continue;
        const float dm = m_all * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ii++) {
            int l = kv_nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)KV_MAX(0, KV_MIN(3, l));
        }
    }
    pack_2bit(L, y->qs);
}

static void q2_k_block_ref(const float *x, kv_block_q2_k *y) {
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 16; j++) {
        for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
        scales[j] = kv_make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        float iscale = q4scale / max_scale;
        for (int j = 0; j < QK_K / 16; j++) y->scales[j] = (uint8_t)kv_nearest_int(iscale * scales[j]);
        kv_wr_u16(y->d, kv_f16_store(max_scale / q4scale));
    } else {
        memset(y->scales, 0, 16);
        kv_wr_u16(y->d, kv_f16_store(0.f));
    }
    if (max_min > 0) {
        float iscale = q4scale / max_min;
        for (int j = 0; j < QK_K / 16; j++) y->scales[j] |= (uint8_t)((unsigned)kv_nearest_int(iscale * mins[j]) << 4);
        kv_wr_u16(y->dmin, kv_f16_store(max_min / q4scale));
    } else {
        kv_wr_u16(y->dmin, kv_f16_store(0.f));
    }
    q2_k_requantize_pack(x, y, L);
}

static void q2_k_block_imatrix(const float *x, kv_block_q2_k *y, const float *qw_block) {
    uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];
    memset(sw, 0, sizeof sw);
    float sumx2 = 0;
    for (int j = 0; j < QK_K; j++) sumx2 += x[j] * x[j];
    float sigma2 = sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; j++) {
        const float *qw = qw_block + 16 * j;
        for (int l = 0; l < 16; l++) weight[l] = qw[l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        for (int l = 0; l < 16; l++) sw[j] += weight[l];
        scales[j] = kv_make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    float dm = kv_make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
    float mm = kv_make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
    kv_wr_u16(y->d, kv_f16_store(dm));
    kv_wr_u16(y->dmin, kv_f16_store(mm));
    for (int j = 0; j < QK_K / 16; j++) y->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    q2_k_requantize_pack(x, y, L);
}

static void q2_k_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q2_k *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        if (imp) q2_k_block_imatrix(x + i * QK_K, y + i, imp + i * QK_K);
        else q2_k_block_ref(x + i * QK_K, y + i);
    }
}

kv_status kv_q2_k_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q2_k_row, err);
}

void kv_q2_k_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q2_k *restrict x = src;
    for (int64_t i = 0; i < n / QK_K; i++, x++) {
        const float d = kv_f16_load(x->d), min = kv_f16_load(x->dmin);
        const uint8_t *q = x->qs;
        int is = 0;
        /* per 128 elements: 4 shifts x (16 elements of q[0..15], 16 of q[16..31]), a scale for each 16 */
        for (int c = 0; c < QK_K; c += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++, is++) {
                    const uint8_t sc = x->scales[is];
                    const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    for (int l = 0; l < 16; l++) *y++ = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* ============================================================================================== */
/* Q3_K                                                                                            */
/* ============================================================================================== */

static void q3_k_requantize_pack(const float *x, kv_block_q3_k *y, int8_t *L) {
    const float d_all = kv_f16_load(y->d);
    for (int j = 0; j < QK_K / 16; j++) {
        float d = d_all * get_scale_q3(j, y->scales);
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = kv_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(KV_MAX(-4, KV_MIN(3, l)) + 4);
        }
    }
    memset(y->hmask, 0, sizeof y->hmask);
    uint8_t U[QK_K];
    for (int j = 0; j < QK_K; j++) {
        int l = L[j];
        if (l > 3) {
            y->hmask[j % 32] |= (uint8_t)(1u << (j / 32));
            l -= 4;
        }
        U[j] = (uint8_t)l;
    }
    pack_2bit(U, y->qs);
}

static void q3_k_block_ref(const float *x, kv_block_q3_k *y) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, amax = 0;
    for (int j = 0; j < QK_K / 16; j++) {
        scales[j] = kv_make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
        float scale = fabsf(scales[j]);
        if (scale > amax) { amax = scale; max_scale = scales[j]; }
    }
    memset(y->scales, 0, 12);
    if (max_scale) {
        float iscale = -32.f / max_scale;
        for (int j = 0; j < QK_K / 16; j++) {
            int8_t l = (int8_t)kv_nearest_int(iscale * scales[j]);
            put_scale_q3(j, KV_MAX(-32, KV_MIN(31, l)) + 32, y->scales);
        }
        kv_wr_u16(y->d, kv_f16_store(1 / iscale));
    } else {
        kv_wr_u16(y->d, kv_f16_store(0.f));
    }
    q3_k_requantize_pack(x, y, L);
}

static void q3_k_block_imatrix(const float *x, kv_block_q3_k *y, const float *qw_block) {
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], weight[16], sw[QK_K / 16];
    float sumx2 = 0;
    for (int j = 0; j < QK_K; j++) sumx2 += x[j] * x[j];
    float sigma2 = 2 * sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; j++) {
        const float *qw = qw_block + 16 * j;
        for (int l = 0; l < 16; l++) weight[l] = qw[l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; l++) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = kv_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
    }
    memset(y->scales, 0, 12);
    float d_block = kv_make_qx_quants(QK_K / 16, 32, scales, Ls, 1, sw);
    for (int j = 0; j < QK_K / 16; j++) put_scale_q3(j, Ls[j], y->scales);
    kv_wr_u16(y->d, kv_f16_store(d_block));
    q3_k_requantize_pack(x, y, L);
}

static void q3_k_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q3_k *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        if (imp) q3_k_block_imatrix(x + i * QK_K, y + i, imp + i * QK_K);
        else q3_k_block_ref(x + i * QK_K, y + i);
    }
}

kv_status kv_q3_k_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q3_k_row, err);
}

void kv_q3_k_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q3_k *restrict x = src;
    for (int64_t i = 0; i < n / QK_K; i++, x++) {
        const float d_all = kv_f16_load(x->d);
        int8_t sc[16];
        for (int j = 0; j < 16; j++) sc[j] = get_scale_q3(j, x->scales);
        const uint8_t *q = x->qs;
        int is = 0, bit = 0;
        for (int c = 0; c < QK_K; c += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, bit++) {
                for (int half = 0; half < 2; half++, is++) {
                    const float dl = d_all * sc[is];
                    const uint8_t *hm = x->hmask + 16 * half;
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (((q[l + 16 * half] >> shift) & 3) - ((hm[l] >> bit) & 1 ? 0 : 4));
                }
            }
        }
    }
}

/* ============================================================================================== */
/* Q4_K and Q5_K                                                                                   */
/* ============================================================================================== */

/* Sub-block scales and mins of the no-importance path (quantize_row_q{4,5}_K_ref): returns them packed
 * into scales[12], d and dmin; L gets the search's levels. */
static void qk_scales_ref(const float *x, int nmax, float rmin, int nstep, uint8_t *L, uint8_t *scales_out,
                          uint8_t *d_out, uint8_t *dmin_out) {
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = kv_make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)kv_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)kv_nearest_int(inv_min * mins[j]);
        put_scale_min_k4(j, KV_MIN(63, ls), KV_MIN(63, lm), scales_out);
    }
    kv_wr_u16(d_out, kv_f16_store(max_scale / 63.f));
    kv_wr_u16(dmin_out, kv_f16_store(max_min / 63.f));
}

/* Same with importance weights (quantize_row_q{4,5}_K_impl; only Q5_K clamps the 6-bit values). */
static void qk_scales_imatrix(const float *x, int nmax, const float *qw_block, uint8_t *L, uint8_t *scales_out,
                              uint8_t *d_out, uint8_t *dmin_out) {
    uint8_t Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
    float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; l++) sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / QK_K;
    for (int j = 0; j < QK_K / 32; j++) {
        const float *qw = qw_block + 32 * j;
        for (int l = 0; l < 32; l++) weights[l] = qw[l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; l++) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = kv_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    float d_block = kv_make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    float m_block = kv_make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < QK_K / 32; j++)
        put_scale_min_k4(j, nmax == 31 ? KV_MIN(63, Ls[j]) : Ls[j], nmax == 31 ? KV_MIN(63, Lm[j]) : Lm[j], scales_out);
    kv_wr_u16(d_out, kv_f16_store(d_block));
    kv_wr_u16(dmin_out, kv_f16_store(m_block));
}

static void qk_requantize(const float *x, int nmax, const uint8_t *scales, const uint8_t *d16, const uint8_t *dmin16,
                          uint8_t *L) {
    const float d_all = kv_f16_load(d16), m_all = kv_f16_load(dmin16);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales, &sc, &m);
        const float d = d_all * sc;
        if (!d) continue;
        const float dm = m_all * m;
        for (int ii = 0; ii < 32; ii++) {
            int l = kv_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)KV_MAX(0, KV_MIN(nmax, l));
        }
    }
}

static void q4_k_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q4_k *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, y++, x += QK_K) {
        memset(y->scales, 0, 12);
        if (imp) qk_scales_imatrix(x, 15, imp + i * QK_K, L, y->scales, y->d, y->dmin);
        else qk_scales_ref(x, 15, -1.f, 20, L, y->scales, y->d, y->dmin);
        qk_requantize(x, 15, y->scales, y->d, y->dmin, L);
        uint8_t *q = y->qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

kv_status kv_q4_k_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q4_k_row, err);
}

void kv_q4_k_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q4_k *restrict x = src;
    for (int64_t i = 0; i < n / QK_K; i++, x++) {
        const float d = kv_f16_load(x->d), min = kv_f16_load(x->dmin);
        const uint8_t *q = x->qs;
        for (int is = 0; is < 8; is += 2, q += 32) {
            uint8_t sc, m;
            get_scale_min_k4(is, x->scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x->scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void q5_k_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q5_k *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, y++, x += QK_K) {
        memset(y->scales, 0, 12);
        if (imp) qk_scales_imatrix(x, 31, imp + i * QK_K, L, y->scales, y->d, y->dmin);
        else qk_scales_ref(x, 31, -0.5f, 15, L, y->scales, y->d, y->dmin);
        qk_requantize(x, 31, y->scales, y->d, y->dmin, L);
        memset(y->qh, 0, sizeof y->qh);
        uint8_t *ql = y->qs, m1 = 1, m2 = 2;
        for (int c = 0; c < QK_K; c += 64, ql += 32, m1 = (uint8_t)(m1 << 2), m2 = (uint8_t)(m2 << 2)) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[c + j], l2 = L[c + j + 32];
                if (l1 > 15) { l1 -= 16; y->qh[j] |= m1; }
                if (l2 > 15) { l2 -= 16; y->qh[j] |= m2; }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
        }
    }
}

kv_status kv_q5_k_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q5_k_row, err);
}

void kv_q5_k_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q5_k *restrict x = src;
    for (int64_t i = 0; i < n / QK_K; i++, x++) {
        const float d = kv_f16_load(x->d), min = kv_f16_load(x->dmin);
        const uint8_t *ql = x->qs, *qh = x->qh;
        uint8_t u1 = 1, u2 = 2;
        for (int is = 0; is < 8; is += 2, ql += 32, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
            uint8_t sc, m;
            get_scale_min_k4(is, x->scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x->scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* ============================================================================================== */
/* Q6_K                                                                                            */
/* ============================================================================================== */

static void q6_k_block(const float *x, kv_block_q6_k *y, const float *qw_block) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ib++) {
        /* with importance, ggml passes the raw weights (no sigma term) to make_qx_quants */
        const float scale = kv_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw_block ? qw_block + 16 * ib : NULL);
        scales[ib] = scale;
        const float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) { max_abs_scale = abs_scale; max_scale = scale; }
    }
    if (max_abs_scale < KV_GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        return;
    }
    float iscale = -128.f / max_scale;
    kv_wr_u16(y->d, kv_f16_store(1 / iscale));
    for (int ib = 0; ib < QK_K / 16; ib++) y->scales[ib] = (int8_t)KV_MIN(127, kv_nearest_int(iscale * scales[ib]));
    const float d_all = kv_f16_load(y->d);
    for (int j = 0; j < QK_K / 16; j++) {
        float d = d_all * y->scales[j];
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = kv_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(KV_MAX(-32, KV_MIN(31, l)) + 32);
        }
    }
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
    }
}

static void q6_k_row(const float *x, void *dst, int64_t n, const float *imp) {
    kv_block_q6_k *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) q6_k_block(x + i * QK_K, y + i, imp ? imp + i * QK_K : NULL);
}

kv_status kv_q6_k_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q6_k_row, err);
}

void kv_q6_k_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q6_k *restrict x = src;
    for (int64_t i = 0; i < n / QK_K; i++, x++) {
        const float d = kv_f16_load(x->d);
        const uint8_t *ql = x->ql, *qh = x->qh;
        const int8_t *sc = x->scales;
        for (int c = 0; c < QK_K; c += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                const int8_t q1 = (int8_t)(((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                const int8_t q2 = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                const int8_t q3 = (int8_t)(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                const int8_t q4 = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

/* ============================================================================================== */
/* Q8_K (activation side: fp32 scale, 8-bit levels, 16-element sums)                               */
/* ============================================================================================== */

static void q8_k_row(const float *x, void *dst, int64_t n, const float *imp) {
    (void)imp; /* ggml's Q8_K quantizer has no weighted path */
    kv_block_q8_k *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++, y++, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (!amax) {
            memset(y, 0, sizeof *y);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) y->qs[j] = (int8_t)KV_MIN(127, kv_nearest_int(iscale * x[j]));
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int ii = 0; ii < 16; ii++) sum += y->qs[j * 16 + ii];
            kv_wr_u16(y->bsums + 2 * j, (uint16_t)(int16_t)sum);
        }
        kv_wr_f32(y->d, 1 / iscale);
    }
}

kv_status kv_q8_k_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, q8_k_row, err);
}

void kv_q8_k_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_q8_k *restrict x = src;
    for (int64_t i = 0; i < n / QK_K; i++, x++) {
        const float d = kv_rd_f32(x->d);
        for (int j = 0; j < QK_K; j++) *y++ = d * x->qs[j];
    }
}
