/* pack.h — the GPU weight layout of kvant's CUDA kernels (docs/FORMAT.md "GPU layout"), built on the host from
 * a format's packed rows. Plain C (part of libkvant in every build) so that the layout and its reference
 * decoder are tested without a GPU; the .cu files upload and use it.
 *
 * Weight-only formats (kv_gpu_pack): every supported format decodes as w = L[code] * scale + offset with codes
 * of b bits (p = 1) or tuple codes of 2b bits (HIGGS p = 2). Two consecutive weights of a row form a "pair"
 * whose index (c0 | c1 << b, or the tuple code) has PB = 2b bits (4, 6 or 8) and selects one half2 entry of a
 * pair table, as in FLUTE (Guo et al. 2024, arXiv 2407.10960). The pair indices are stored in the order the
 * mma.sync m16n8k16 A fragments consume them, so one 16-byte load per lane feeds 8 tensor-core steps.
 *
 * W8A8 (kv_gpu_pack8): int8 or fp8 e4m3 rows with one fp32 scale per output row. */
#ifndef KV_GPU_PACK_H
#define KV_GPU_PACK_H

#include "kvant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KV_GPU_CHUNK 128 /* k values per lane group: 32 lanes x 32 values of 16 rows */

typedef enum kv_gpu_scale_kind {
    KV_GS_F16 = 0,   /* fp16 per (group, row) */
    KV_GS_F32 = 1,   /* fp32 */
    KV_GS_E8M0 = 2,  /* byte e: 2^(e-127) (e = 0: 2^-127) */
    KV_GS_UE4M3 = 3, /* byte: E4M3 value (sign bit honoured) times rowmul[row] */
    KV_GS_Q4K = 4    /* byte sc: d[super][row] * sc, 8 groups of 32 in a super-block of 256 */
} kv_gpu_scale_kind;

typedef enum kv_gpu_off_kind {
    KV_GO_NONE = 0,
    KV_GO_F16 = 1,
    KV_GO_F32 = 2,
    KV_GO_Q4K = 3    /* byte m: -dmin[super][row] * m */
} kv_gpu_off_kind;

typedef struct kv_gpu_pack {
    char format[48];
    int64_t rows, cols, rows_pad; /* rows_pad = rows rounded up to 16 */
    int pair_bits;                /* PB: 4, 6 or 8 */
    int group;                    /* weights per scale along a row: 16, 32, 64, 128, 256 or cols */
    int scale_kind, off_kind;
    uint32_t lut[256];            /* 2^PB entries: fp16 bits of the pair (low half = first weight) */
    /* plane0: [rows_pad/16][cols/128][32 lanes][16 bytes], the low 4 bits of the 32 pair indices of a lane;
     * plane1: the high PB-4 bits ([..][32][8] for PB 6, [..][32][16] for PB 8), NULL for PB 4. */
    uint8_t *plane0, *plane1;
    size_t plane0_bytes, plane1_bytes;
    void *scale, *off;            /* [cols/group][rows_pad], element size kv_gpu_scale_bytes / kv_gpu_off_bytes */
    size_t scale_bytes, off_bytes;
    uint16_t *super_d, *super_m;  /* KV_GS_Q4K: [cols/256][rows_pad] fp16 d and dmin */
    size_t super_bytes;           /* each of the two */
    float *rowmul;                /* KV_GS_UE4M3: [rows_pad] */
    size_t format_bytes;          /* rows * kv_format_row_bytes of the source format */
} kv_gpu_pack;

/* 1 if fmt can be packed for the weight-only kernels (int{2,3,4}_g*, q4_0, q4_1, q4_k, iq4_nl, nf4, af4,
 * fp4_e2m1, mxfp4, mxfp4_ocp[_ps], nvfp4, nvfp4_ts, higgs_p1_b{2,3,4}, higgs_p2_b{2,3,4}). */
int kv_gpu_pack_supported(const kv_format *fmt);
/* rows x cols packed rows of fmt -> GPU layout; cols must be a multiple of 128 (256 for higgs, q4_k, nvfp4)
 * and of the format's block. Errors name the format and the reason. */
kv_status kv_gpu_pack_build(const kv_format *fmt, const void *data, int64_t rows, int64_t cols, kv_gpu_pack *out,
                            kv_error *err);
void kv_gpu_pack_free(kv_gpu_pack *p);
/* Allocates the arrays of a pack with the given geometry without filling them (benchmarks fill them with
 * random codes on the device). fmt sets PB, group and kinds as kv_gpu_pack_build would. */
kv_status kv_gpu_pack_layout(const kv_format *fmt, int64_t rows, int64_t cols, kv_gpu_pack *out, int alloc,
                             kv_error *err);
/* Bytes the kernels read for the weights (planes, scales, offsets, super-blocks, row factors). */
size_t kv_gpu_pack_bytes(const kv_gpu_pack *p);
int kv_gpu_scale_bytes(int kind);
int kv_gpu_off_bytes(int kind);
/* The weights exactly as the kernel forms them: fp16(L[code] * fp16(scale) + fp16(offset)) with one rounding
 * (the kernel's HFMA2), as floats. out: cols floats. */
void kv_gpu_pack_decode_row(const kv_gpu_pack *p, int64_t row, float *out);
/* Scale and offset of (group, row) as the kernel computes them in fp32 before rounding to fp16. */
void kv_gpu_pack_group_params(const kv_gpu_pack *p, int64_t group, int64_t row, float *scale, float *off);

/* W8A8 weights: int8 (from int8_g0_sym[_f32]: code - 128) or fp8 e4m3 (from fp8_e4m3) rows, fp32 row scales. */
typedef struct kv_gpu_pack8 {
    int fp8;                      /* 0: int8, 1: e4m3 */
    int64_t rows, cols;
    int8_t *q;                    /* rows x cols */
    float *scale;                 /* rows */
} kv_gpu_pack8;
int kv_gpu_pack8_supported(const kv_format *fmt);
kv_status kv_gpu_pack8_build(const kv_format *fmt, const void *data, int64_t rows, int64_t cols, kv_gpu_pack8 *out,
                             kv_error *err);
void kv_gpu_pack8_free(kv_gpu_pack8 *p);
/* Per-token dynamic quantization of one activation row as the GPU does it: amax over the row, s = amax / 127
 * (int8: q = rint(x / s) clamped to +-127) or amax / 448 (e4m3, round to nearest even, saturating); s = 1 for
 * an all-zero row. q: cols bytes. Returns s. */
float kv_gpu_quant_act_row(const float *x, int64_t cols, int fp8, int8_t *q);
/* E4M3 byte -> float (0x7F / 0xFF are NaN). */
float kv_gpu_e4m3_value(uint8_t b);

#ifdef __cplusplus
}
#endif
#endif
