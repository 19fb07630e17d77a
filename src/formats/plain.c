/* plain.c — f32, f16 and bf16 as formats (block 1), so unquantized weights go through the same interface
 * as the block types. Storage as ggml's GGML_TYPE_F32/F16/BF16: little-endian IEEE binary32, binary16, and
 * the upper half of binary32. Conversions round to nearest even (src/core/half.c). Quantize rejects
 * non-finite input like every format, and f16 also rejects finite values that would overflow to Inf. */
#include "formats/formats.h"

kv_status kv_f32_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                          const float *importance, kv_error *err) {
    kv_status st = kv_format_check_quantize(f, src, dst, nrows, n, importance, err);
    if (st) return st;
    uint8_t *out = dst;
    for (int64_t i = 0; i < nrows * n; i++) kv_wr_f32(out + 4 * i, src[i]);
    return KV_OK;
}

void kv_f32_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    const uint8_t *in = src;
    for (int64_t i = 0; i < n; i++) dst[i] = kv_rd_f32(in + 4 * i);
}

double kv_f32_dot(const kv_format *f, const void *row, const float *x, int64_t n) {
    const uint8_t *in = row;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)kv_rd_f32(in + 4 * i) * (double)x[i];
    return sum;
}

kv_status kv_f16_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                          const float *importance, kv_error *err) {
    kv_status st = kv_format_check_quantize(f, src, dst, nrows, n, importance, err);
    if (st) return st;
    uint8_t *out = dst;
    for (int64_t i = 0; i < nrows * n; i++) {
        uint16_t h = kv_fp32_to_fp16(src[i]);
        if ((h & 0x7c00u) == 0x7c00u)
            return kv_fail(err, KV_EINVAL, "f16: value %g at row %lld, column %lld overflows fp16", (double)src[i],
                           (long long)(i / n), (long long)(i % n));
        kv_wr_u16(out + 2 * i, h);
    }
    return KV_OK;
}

void kv_f16_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    const uint8_t *in = src;
    for (int64_t i = 0; i < n; i++) dst[i] = kv_fp16_to_fp32(kv_rd_u16(in + 2 * i));
}

double kv_f16_dot(const kv_format *f, const void *row, const float *x, int64_t n) {
    const uint8_t *in = row;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)kv_fp16_to_fp32(kv_rd_u16(in + 2 * i)) * (double)x[i];
    return sum;
}

kv_status kv_bf16_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                           const float *importance, kv_error *err) {
    kv_status st = kv_format_check_quantize(f, src, dst, nrows, n, importance, err);
    if (st) return st;
    uint8_t *out = dst;
    for (int64_t i = 0; i < nrows * n; i++) {
        uint16_t h = kv_fp32_to_bf16(src[i]);
        if ((h & 0x7f80u) == 0x7f80u)
            return kv_fail(err, KV_EINVAL, "bf16: value %g at row %lld, column %lld overflows bf16", (double)src[i],
                           (long long)(i / n), (long long)(i % n));
        kv_wr_u16(out + 2 * i, h);
    }
    return KV_OK;
}

void kv_bf16_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    const uint8_t *in = src;
    for (int64_t i = 0; i < n; i++) dst[i] = kv_bf16_to_fp32(kv_rd_u16(in + 2 * i));
}

double kv_bf16_dot(const kv_format *f, const void *row, const float *x, int64_t n) {
    const uint8_t *in = row;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)kv_bf16_to_fp32(kv_rd_u16(in + 2 * i)) * (double)x[i];
    return sum;
}
