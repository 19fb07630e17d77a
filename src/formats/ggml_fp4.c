/* ggml_fp4.c — ggml's FP4 (E2M1) block types in ggml's layouts, bit-exact with ggml/src/ggml-quants.c:
 *   mxfp4: 32 elements, one E8M0 exponent e = floor(log2(amax)) - 2 + 127 (no clamp), scale 2^(e-128) against
 *          the doubled E2M1 table kvalues_fp4 (quantize_row_mxfp4_ref, dequantize_row_mxfp4);
 *   nvfp4: 64 elements as four 16-element sub-blocks, each with a UE4M3 scale fp32_to_ue4m3(amax/6), no
 *          per-tensor scale (quantize_row_nvfp4_ref, dequantize_row_nvfp4).
 * Elements take the nearest table entry by linear scan (ties keep the lower index, so +0 beats -0). Neither
 * ggml quantizer uses importance weights. Packing: split halves within the 32- (16-) element group. */
#include "formats/formats.h"

const int8_t kv_kvalues_fp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

typedef struct { uint8_t e, qs[16]; } kv_block_mxfp4;
typedef struct { uint8_t d[4], qs[32]; } kv_block_nvfp4;
KV_STATIC_ASSERT(sizeof(kv_block_mxfp4) == 17, "mxfp4 block");
KV_STATIC_ASSERT(sizeof(kv_block_nvfp4) == 36, "nvfp4 block");

static inline uint8_t best_index_fp4(float x, float e) {
    int best = 0;
    float best_err = fabsf(kv_kvalues_fp4[0] * e - x);
    for (int i = 1; i < 16; i++) {
        float err = fabsf(kv_kvalues_fp4[i] * e - x);
        if (err < best_err) {
            best = i;
            best_err = err;
        }
    }
    return (uint8_t)best;
}

static void mxfp4_row(const float *x, void *dst, int64_t n, const float *imp) {
    (void)imp;
    kv_block_mxfp4 *y = dst;
    for (int64_t i = 0; i < n / 32; i++, y++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]);
        /* below 2^-125 the exponent goes negative and wraps modulo 256 exactly as ggml's cast does */
        const uint8_t e = amax > 0.0f ? (uint8_t)kv_cvtt_i32(floorf(log2f(amax)) - 2 + 127) : 0;
        const float d = kv_e8m0_to_fp32_half(e);
        y->e = e;
        for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(best_index_fp4(x[j], d) | (best_index_fp4(x[j + 16], d) << 4));
    }
}

kv_status kv_mxfp4_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                            const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, mxfp4_row, err);
}

void kv_mxfp4_dequantize(const kv_format *f, const void *src, float *y, int64_t n) {
    const kv_block_mxfp4 *x = src;
    for (int64_t i = 0; i < n / 32; i++, x++, y += 32) {
        const float d = kv_e8m0_to_fp32_half(x->e);
        for (int j = 0; j < 16; j++) {
            y[j] = kv_kvalues_fp4[x->qs[j] & 0x0F] * d;
            y[j + 16] = kv_kvalues_fp4[x->qs[j] >> 4] * d;
        }
    }
}

static void nvfp4_row(const float *x, void *dst, int64_t n, const float *imp) {
    (void)imp;
    kv_block_nvfp4 *y = dst;
    for (int64_t i = 0; i < n / 64; i++, y++) {
        for (int s = 0; s < 4; s++) {
            const float *xb = x + 64 * i + 16 * s;
            float amax = 0.0f;
            for (int j = 0; j < 16; j++)
                if (amax < fabsf(xb[j])) amax = fabsf(xb[j]);
            const uint8_t ue = kv_fp32_to_ue4m3(amax / 6.0f);
            y->d[s] = ue;
            const float d = kv_ue4m3_to_fp32_half(ue);
            for (int j = 0; j < 8; j++)
                y->qs[8 * s + j] = (uint8_t)(best_index_fp4(xb[j], d) | (best_index_fp4(xb[j + 8], d) << 4));
        }
    }
}

kv_status kv_nvfp4_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                            const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, nvfp4_row, err);
}

void kv_nvfp4_dequantize(const kv_format *f, const void *src, float *y, int64_t n) {
    const kv_block_nvfp4 *x = src;
    for (int64_t i = 0; i < n / 64; i++, x++) {
        for (int s = 0; s < 4; s++, y += 16) {
            const float d = kv_ue4m3_to_fp32_half(x->d[s]);
            for (int j = 0; j < 8; j++) {
                y[j] = kv_kvalues_fp4[x->qs[8 * s + j] & 0x0F] * d;
                y[j + 8] = kv_kvalues_fp4[x->qs[8 * s + j] >> 4] * d;
            }
        }
    }
}
