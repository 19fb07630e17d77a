/* nvfp4.c — nvfp4_ts: NVIDIA's two-level FP4 (E2M1 elements, blocks of 16, an FP8 E4M3 block scale and a
 * per-tensor fp32 scale), following the FP-Quant recipe (IST-DASLab FP-Quant src/quantization/quantizer.py,
 * scale_precision E4M3):
 *   global = 448 * 6 / amax(tensor)               (1 when the tensor is all zero)
 *   block scale code = e4m3(amax(block) / 6 * global)  (RNE, saturating at 448)
 *   element = RNE E2M1 of x * global / e4m3_value(code)   (saturating at 6)
 *   x_hat = e2m1 * e4m3_value(code) / global
 * Rows must be self-contained, so the tensor's global scale is stored (fp32) in every row's 4-byte header;
 * quantize() sees all rows of the tensor at once. Block layout: byte 0 = E4M3 scale, bytes 1..8 = 16 E2M1 codes,
 * element 2i in the low nibble of byte 1+i, element 2i+1 in the high nibble (FP-Quant's pack_fp4_to_uint8).
 * NaN/Inf input is rejected (KV_EINVAL). Importance weights are not used. (ggml's own nvfp4 layout is "nvfp4".) */
#include "formats/extra.h"
#include <float.h>

#define NV_BLOCK 16

static kv_status nv_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                             const float *importance, kv_error *err) {
    kv_status st = kv_format_check_quantize(f, src, dst, nrows, n, importance, err);
    if (st != KV_OK) return st;
    const kv_minifloat *e4m3 = kv_mf_get(KV_MF_E4M3), *e2m1 = kv_mf_get(KV_MF_E2M1);
    float amax = 0.0f;
    for (int64_t i = 0; i < nrows * n; i++) amax = fmaxf(amax, fabsf(src[i]));
    double g = amax > 0.0f ? 448.0 * 6.0 / amax : 1.0;
    if (g > FLT_MAX) g = FLT_MAX;
    float global = (float)g;
    size_t rb = kv_xf_row_bytes(f, n);
    for (int64_t r = 0; r < nrows; r++) {
        uint8_t *out = (uint8_t *)dst + (size_t)r * rb;
        memset(out, 0, rb);
        kv_wr_f32(out, global);
        for (int64_t b = 0; b < n / NV_BLOCK; b++) {
            const float *x = src + r * n + b * NV_BLOCK;
            uint8_t *blk = out + 4 + b * f->block_bytes;
            float bmax = 0.0f;
            for (int i = 0; i < NV_BLOCK; i++) bmax = fmaxf(bmax, fabsf(x[i]));
            uint8_t sc = kv_mf_encode(e4m3, (float)((double)bmax / 6.0 * global));
            float s8 = kv_mf_decode(e4m3, sc);
            blk[0] = sc;
            if (s8 == 0.0f) continue;
            double k = (double)global / s8;
            for (int i = 0; i < NV_BLOCK; i++) kv_bits_put(blk + 1, i, 4, kv_mf_encode(e2m1, (float)(x[i] * k)));
        }
    }
    return KV_OK;
}

static void nv_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    const kv_minifloat *e4m3 = kv_mf_get(KV_MF_E4M3);
    float e2m1[16];
    kv_mf_table(kv_mf_get(KV_MF_E2M1), e2m1);
    const uint8_t *p = src;
    double global = kv_rd_f32(p);
    for (int64_t b = 0; b < n / NV_BLOCK; b++) {
        const uint8_t *blk = p + 4 + b * f->block_bytes;
        double s = kv_mf_decode(e4m3, blk[0]) / global;
        for (int i = 0; i < NV_BLOCK; i++) dst[b * NV_BLOCK + i] = (float)(e2m1[kv_bits_get(blk + 1, i, 4)] * s);
    }
}

kv_status kv_fmt_nvfp4ts_get(const char *name, kv_format *out, kv_error *err) {
    (void)err;
    if (strcmp(name, "nvfp4_ts")) return KV_ENOTFOUND;
    memset(out, 0, sizeof *out);
    kv_xf_set_name(out, name);
    out->type = KV_TYPE_KV_NVFP4TS;
    out->block = NV_BLOCK;
    out->block_bytes = 1 + NV_BLOCK / 2;
    out->row_header_bytes = 4;
    out->bits_per_weight = out->block_bytes * 8.0 / NV_BLOCK;
    out->family = KV_FAM_NVFP4;
    out->group = NV_BLOCK;
    out->code_bits = 4;
    out->quantize = nv_quantize;
    out->dequantize = nv_dequantize;
    out->dot = kv_xf_dot_dequant;
    return KV_OK;
}
