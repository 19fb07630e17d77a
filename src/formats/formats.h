/* formats.h — internal helpers shared by the number-format files of src/formats/ and the registry glue
 * between the ggml table (registry.c) and the non-ggml formats (extra_registry.c).
 *
 * Scalar helpers reproduce ggml's (ggml/src/ggml-quants.c nearest_int, ggml-impl.h ggml_e8m0_to_fp32[_half],
 * ggml_fp32_to_ue4m3 / ggml_ue4m3_to_fp32) bit for bit, because the ggml block types must give ggml's bytes.
 *
 * Contract for a format file:
 *   - quantize(f, src, dst, nrows, n, importance, err) first calls kv_format_check_quantize() (block multiple,
 *     finite input naming row/column, finite non-negative importance), then packs each row independently;
 *     kv_format_quantize_rows() does both for formats whose rows need no shared state.
 *   - dequantize(f, src, dst, n) never fails (a packed row is always decodable).
 *   - dot(f, row, x, n) is a scalar reference; kv_format_dot_blocks() is a generic one for formats whose blocks
 *     dequantize independently (row_header_bytes == 0, block <= KV_FORMAT_MAX_BLOCK).
 */
#ifndef KV_FORMATS_H
#define KV_FORMATS_H

#include "core/core.h"
#include <math.h>

/* Bit-exactness with ggml needs every a*b+c rounded twice, as ggml's reference build does: no FMA
 * contraction (gcc: -std=c11 implies -ffp-contract=off; clang contracts by default, so say it). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ggml's type_traits keep blocks <= 256 elements (QK_K); the generic dot uses a stack buffer of this size. */
#define KV_FORMAT_MAX_BLOCK 256

/* ---------------------------------------------------------------------------------------------- */
/* scalar helpers (ggml semantics)                                                                 */
/* ---------------------------------------------------------------------------------------------- */

/* ggml nearest_int: add 1.5*2^23 and read the mantissa, i.e. round half to even; valid for |f| <= 4194303. */
static inline int kv_nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* C leaves float->int conversion of NaN or out-of-range values undefined; ggml's (int8_t)(float) casts become
 * x86 cvttss2si (INT32_MIN for those) and then the low byte. Same result, defined (only degenerate inputs,
 * e.g. subnormal blocks whose 1/d overflows, reach this). */
static inline int32_t kv_cvtt_i32(float f) {
    return f >= -2147483648.0f && f < 2147483648.0f ? (int32_t)f : INT32_MIN;
}

/* fp16 store / load used by every ggml scale (round to nearest even, like ggml_compute_fp32_to_fp16). With F16C
 * the hardware conversion (same RNE result for every non-NaN value, tested against kv_fp32_to_fp16) keeps the
 * per-block scale stores out of a function call; the quantizers' speed depends on it. */
#if defined(__F16C__)
#include <immintrin.h>
static inline uint16_t kv_f16_store(float f) { return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
static inline float kv_f16_bits_to_f32(uint16_t h) { return _cvtsh_ss(h); }
#else
static inline uint16_t kv_f16_store(float f) { return kv_fp32_to_fp16(f); }
static inline float kv_f16_bits_to_f32(uint16_t h) { return kv_fp16_to_fp32(h); }
#endif
static inline float kv_f16_load(const void *p) { return kv_f16_bits_to_f32(kv_rd_u16(p)); }

static inline float kv_f32_from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline uint32_t kv_f32_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* E8M0 (OCP MX shared scale): 2^(e-127); e = 0 is 2^-127 (a subnormal float). 0xFF (NaN) is not special here
 * (ggml ignores it); formats that honour NaN check for it first. */
static inline float kv_e8m0_to_fp32(uint8_t e) {
    return kv_f32_from_bits(e == 0 ? 0x00400000u : (uint32_t)e << 23);
}
/* Half of kv_e8m0_to_fp32 (ggml's GGML_E8M0_TO_FP32_HALF, paired with the doubled E2M1 table). */
static inline float kv_e8m0_to_fp32_half(uint8_t e) {
    return kv_f32_from_bits(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

/* UE4M3 (unsigned E4M3, bias 7) as ggml's NVFP4 uses it: 0 and 0x7F decode to 0, the result is halved to
 * match the doubled E2M1 table (ggml_ue4m3_to_fp32). */
static inline float kv_ue4m3_to_fp32_half(uint8_t x) {
    if (x == 0 || x == 0x7F) return 0.0f;
    int e = (x >> 3) & 0xF, m = x & 7;
    float raw = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return raw * 0.5f;
}
/* ggml_fp32_to_ue4m3: truncating conversion plus one rounding bit (ties away), saturating at 448 -> 0x7E,
 * non-positive (and NaN) -> 0, subnormals rounded half up. */
static inline uint8_t kv_fp32_to_ue4m3(float x) {
    if (!(x > 0.0f)) return 0;
    if (x > 448.0f) x = 448.0f;
    uint32_t bits = kv_f32_bits(x);
    int e = (int)((bits >> 23) & 0xFF) - 127 + 7;
    if (e <= 0) {
        int m = (int)(x * 512.0f + 0.5f);
        if (m > 7) m = 7;
        return m < 1 ? 0 : (uint8_t)m;
    }
    if (e >= 15) return 0x7E;
    int m = (int)((bits >> 20) & 7) + (int)((bits >> 19) & 1);
    if (m > 7) {
        m = 0;
        if (++e >= 15) return 0x7E;
    }
    return (uint8_t)((e << 3) | m);
}

/* E2M1 values doubled (ggml kvalues_fp4): code bit 3 is the sign. Shared by mxfp4 and nvfp4. */
extern const int8_t kv_kvalues_fp4[16];
/* IQ4_NL non-linear levels (ggml kvalues_iq4nl). */
extern const int8_t kv_kvalues_iq4nl[16];

/* ---------------------------------------------------------------------------------------------- */
/* argument checks and drivers                                                                     */
/* ---------------------------------------------------------------------------------------------- */

/* n > 0 and a multiple of f->block, nrows >= 0, src/dst non-NULL when nrows > 0, every input finite (else
 * KV_EINVAL naming row and column), importance (if given) finite and >= 0. */
kv_status kv_format_check_quantize(const kv_format *f, const float *src, const void *dst, int64_t nrows,
                                   int64_t n, const float *importance, kv_error *err);

/* Index of the first NaN or Inf among count floats, -1 if none. */
int64_t kv_format_find_nonfinite(const float *x, int64_t count);

/* One row of n elements -> packed bytes (n already checked); importance: n weights or NULL. */
typedef void (*kv_row_quantize_fn)(const float *x, void *dst, int64_t n, const float *importance);
/* kv_format_check_quantize, then fn on each row (dst rows are kv_format_row_bytes(f, n) apart). */
kv_status kv_format_quantize_rows(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                                  const float *importance, kv_row_quantize_fn fn, kv_error *err);

/* Reference dot for formats whose blocks dequantize alone: dequantize block by block, accumulate in double. */
double kv_format_dot_blocks(const kv_format *f, const void *row, const float *x, int64_t n);

/* ---------------------------------------------------------------------------------------------- */
/* the non-ggml formats (extra_registry.c, owned by the "kvant formats" helper)                     */
/* ---------------------------------------------------------------------------------------------- */
/* kv_format_get() asks here for every name its ggml table does not hold; KV_ENOTFOUND means "not mine"
 * (the registry then reports KV_EINVAL with the list of families). Any other status is returned as is
 * (e.g. KV_EINVAL for "int9_g32_sym" with a precise message). */
kv_status kv_formats_extra_get(const char *name, kv_format *out, kv_error *err);
/* Same for type ids >= KV_TYPE_KVANT_BASE. */
kv_status kv_formats_extra_from_type(uint32_t type, kv_format *out, kv_error *err);
/* Representative names for `kvant formats` (appended after the ggml names). */
int kv_formats_extra_list_count(void);
const char *kv_formats_extra_list_name(int i);
/* One line naming the families (for "unknown format" messages), e.g. "int{n}_g{g}_{sym|asym}, fp8_e4m3, ...". */
const char *kv_formats_extra_families(void);

/* ---------------------------------------------------------------------------------------------- */
/* ggml's scale searches (ggml_k.c; ggml-quants.c functions of the same name, same arithmetic order)  */
/* ---------------------------------------------------------------------------------------------- */
#define KV_GROUP_MAX_EPS 1e-15f
/* Symmetric scale search; L gets values in [0, 2*nmax). rmse_type 1: weights x^2 (or qw when given). */
float kv_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw);
/* Asymmetric (scale, min) search of the k-quants; weights NULL means x^2. *the_min gets -min. */
float kv_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad);
float kv_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad);
/* Positive-value scale search of the imatrix paths (quantizes the sub-block scales). */
float kv_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);
/* Q3_K's coordinate-descent search (rmse), weights x^2. */
float kv_make_q3_quants(int n, int nmax, const float *x, int8_t *L, bool do_rmse);

/* ---------------------------------------------------------------------------------------------- */
/* ggml families (one file each); the registry table points at these                              */
/* ---------------------------------------------------------------------------------------------- */
#define KV_DECLARE_FORMAT(t)                                                                               \
    kv_status kv_##t##_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n, \
                                const float *importance, kv_error *err);                                  \
    void kv_##t##_dequantize(const kv_format *f, const void *src, float *dst, int64_t n)

KV_DECLARE_FORMAT(f32);    /* plain.c */
KV_DECLARE_FORMAT(f16);
KV_DECLARE_FORMAT(bf16);
KV_DECLARE_FORMAT(q4_0);   /* ggml_legacy.c */
KV_DECLARE_FORMAT(q4_1);
KV_DECLARE_FORMAT(q5_0);
KV_DECLARE_FORMAT(q5_1);
KV_DECLARE_FORMAT(q8_0);
KV_DECLARE_FORMAT(q8_1);
KV_DECLARE_FORMAT(q2_k);   /* ggml_k.c */
KV_DECLARE_FORMAT(q3_k);
KV_DECLARE_FORMAT(q4_k);
KV_DECLARE_FORMAT(q5_k);
KV_DECLARE_FORMAT(q6_k);
KV_DECLARE_FORMAT(q8_k);
KV_DECLARE_FORMAT(iq4_nl); /* ggml_iq.c */
KV_DECLARE_FORMAT(iq4_xs);
KV_DECLARE_FORMAT(mxfp4);  /* ggml_fp4.c */
KV_DECLARE_FORMAT(nvfp4);

/* Plain formats have exact dots of their own (no block buffer needed). */
double kv_f32_dot(const kv_format *f, const void *row, const float *x, int64_t n);
double kv_f16_dot(const kv_format *f, const void *row, const float *x, int64_t n);
double kv_bf16_dot(const kv_format *f, const void *row, const float *x, int64_t n);

#endif
