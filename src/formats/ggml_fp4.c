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

/* kv_kvalues_fp4 as floats (exact), so the scan does no int->float conversions. */
static const float k_fp4f[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* ggml best_index_mxfp4 for n (16 or 32) elements at once: per element the same linear scan over the table
 * with strict < (ties keep the lower index); scanning the table in the outer loop lets the element loop
 * vectorize. */
static void best_index_fp4(const float *x, float e, int n, int32_t *idx) {
    float best_err[32];
    for (int j = 0; j < n; j++) {
        best_err[j] = fabsf(k_fp4f[0] * e - x[j]);
        idx[j] = 0;
    }
    for (int i = 1; i < 16; i++) {
        const float v = k_fp4f[i] * e;
        for (int j = 0; j < n; j++) {
            float err = fabsf(v - x[j]);
            int better = err < best_err[j];
            idx[j] = better ? i : idx[j];
            best_err[j] = better ? err : best_err[j];
        }
    }
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
        int32_t idx[32];
        best_index_fp4(x, d, 32, idx);
        for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(idx[j] | (idx[j + 16] << 4));
    }
}

kv_status kv_mxfp4_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                            const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, mxfp4_row, err);
}

void kv_mxfp4_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_mxfp4 *restrict x = src;
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
            int32_t idx[16];
            best_index_fp4(xb, d, 16, idx);
            for (int j = 0; j < 8; j++) y->qs[8 * s + j] = (uint8_t)(idx[j] | (idx[j + 8] << 4));
        }
    }
}

kv_status kv_nvfp4_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                            const float *importance, kv_error *err) {
    return kv_format_quantize_rows(f, src, dst, nrows, n, importance, nvfp4_row, err);
}

void kv_nvfp4_dequantize(const kv_format *f, const void *src, float *restrict y, int64_t n) {
    const kv_block_nvfp4 *restrict x = src;
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
