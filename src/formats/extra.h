/* extra.h — internal interface of kvant's non-ggml number formats (issue #5): INTn groups, FP8/FP6/FP4 element
 * formats, OCP MX v1.0, NVFP4 with a tensor scale, NF4/AF4 codebooks, HIGGS grids and the E8 lattice.
 * Each family file exposes a parser (name -> kv_format, KV_ENOTFOUND when the name is not of its family), a
 * from-type constructor for its kvant type id and a list of representative names; extra_registry.c chains them.
 * Byte layouts are documented in docs/FORMAT.md. */
#ifndef KV_FORMATS_EXTRA_H
#define KV_FORMATS_EXTRA_H

#include "formats/formats.h"

/* kvant type ids (one per family; the exact format name is stored in GGUF metadata kvant.tensor.<name>.format). */
enum {
    KV_TYPE_KV_INT = KV_TYPE_KVANT_BASE + 0,   /* int{n}_g{g}_{sym|asym}[_f32][_mse] */
    KV_TYPE_KV_FP = KV_TYPE_KVANT_BASE + 1,    /* fp8_e4m3, fp8_e5m2, fp6_e3m2, fp6_e2m3, fp4_e2m1 (row scale) */
    KV_TYPE_KV_MX = KV_TYPE_KVANT_BASE + 2,    /* mxfp8_e4m3 ... mxint8, *_ps */
    KV_TYPE_KV_NVFP4TS = KV_TYPE_KVANT_BASE + 3, /* nvfp4_ts */
    KV_TYPE_KV_CODEBOOK = KV_TYPE_KVANT_BASE + 4, /* nf4, nf4_dq, af4 */
    KV_TYPE_KV_HIGGS = KV_TYPE_KVANT_BASE + 5, /* higgs_p{p}_b{b} */
    KV_TYPE_KV_E8 = KV_TYPE_KVANT_BASE + 6     /* e8_b2, e8_b4 */
};

/* The registry hooks kv_formats_extra_* are declared in formats.h (the registry's header). */

/* ---- minifloat element codecs (fp.c): OCP OFP8 / MX element types, round-to-nearest-even, saturating ---- */
typedef enum kv_mf_kind { KV_MF_E4M3, KV_MF_E5M2, KV_MF_E3M2, KV_MF_E2M3, KV_MF_E2M1, KV_MF_COUNT } kv_mf_kind;
typedef struct kv_minifloat {
    const char *name; /* "e4m3" */
    int ebits, mbits, bias;
    int emax;         /* largest normal exponent (unbiased) */
    int emin;         /* smallest normal exponent = 1 - bias */
    float max_norm;
    int has_inf;      /* E5M2: IEEE-like Inf and NaN */
    int has_nan;      /* E4M3: S.1111.111 only; E5M2: exponent all ones, mantissa != 0 */
} kv_minifloat;
const kv_minifloat *kv_mf_get(kv_mf_kind k);
/* |x| rounded to the format (RNE, subnormals kept, saturating at max_norm); ax must be finite, >= 0. */
static inline float kv_mf_round_abs(const kv_minifloat *m, float ax);
/* The code (sign bit at bit ebits+mbits) of a finite value, after RNE + saturation; NaN -> the NaN code where
 * the format has one (0 otherwise), +-Inf -> Inf (E5M2) or saturate. */
uint8_t kv_mf_encode(const kv_minifloat *m, float x);
float kv_mf_decode(const kv_minifloat *m, uint8_t code);
/* The 2^(1+ebits+mbits) decoded values of every code into tab. */
void kv_mf_table(const kv_minifloat *m, float *tab);

#include <math.h>
static inline float kv_f32_pow2(int e) { /* 2^e for -126 <= e <= 127, exactly */
    uint32_t b = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
static inline float kv_mf_round_abs(const kv_minifloat *m, float ax) {
    if (!(ax < m->max_norm)) return m->max_norm;
    uint32_t bits;
    memcpy(&bits, &ax, 4);
    int ex = (int)(bits >> 23) - 127; /* floor(log2 ax) for normal ax; below emin anyway otherwise */
    if (ex < m->emin) ex = m->emin;
    /* spacing of representable values at this exponent is 2^(ex - mbits); multiplying by powers of two is
     * exact, and rintf rounds ties to even in the default rounding mode */
    float r = rintf(ax * kv_f32_pow2(m->mbits - ex)) * kv_f32_pow2(ex - m->mbits);
    return r > m->max_norm ? m->max_norm : r;
}

/* ---- bit streams: code i of width w (1..16) occupies bits [i*w, i*w + w) of a little-endian stream ---- */
static inline void kv_bits_put(uint8_t *p, int64_t i, int w, uint32_t code) {
    int64_t bit = i * w;
    uint8_t *q = p + (bit >> 3);
    uint32_t v = code << (bit & 7); /* OR into zeroed bytes */
    int nbytes = (int)(((bit & 7) + w + 7) >> 3);
    for (int k = 0; k < nbytes; k++) q[k] |= (uint8_t)(v >> (8 * k));
}
static inline uint32_t kv_bits_get(const uint8_t *p, int64_t i, int w) {
    int64_t bit = i * w;
    const uint8_t *q = p + (bit >> 3);
    int nbytes = (int)(((bit & 7) + w + 7) >> 3);
    uint32_t v = 0;
    for (int k = 0; k < nbytes; k++) v |= (uint32_t)q[k] << (8 * k);
    return (v >> (bit & 7)) & ((1u << w) - 1u);
}

/* ---- shared checks ---- */
/* (NaN/Inf input and bad importance weights: kv_format_check_quantize of formats.h.) */
size_t kv_xf_row_bytes(const kv_format *f, int64_t n);
/* Reference dot through a dequantized copy (double accumulation); used by formats without a faster dot. */
double kv_xf_dot_dequant(const kv_format *f, const void *row, const float *x, int64_t n);
void kv_xf_set_name(kv_format *f, const char *name);

/* ---- families (each returns KV_ENOTFOUND if the name is not one of its members) ---- */
kv_status kv_fmt_int_get(const char *name, kv_format *out, kv_error *err);
kv_status kv_fmt_fp_get(const char *name, kv_format *out, kv_error *err);
kv_status kv_fmt_mx_get(const char *name, kv_format *out, kv_error *err);
kv_status kv_fmt_nvfp4ts_get(const char *name, kv_format *out, kv_error *err);
kv_status kv_fmt_codebook_get(const char *name, kv_format *out, kv_error *err);
kv_status kv_fmt_higgs_get(const char *name, kv_format *out, kv_error *err);
kv_status kv_fmt_e8_get(const char *name, kv_format *out, kv_error *err);

/* ---- generated tables (higgs_grids.c, made by scripts/gen_grids.c) ---- */
typedef struct kv_higgs_grid {
    int p, b;          /* dimension, bits per dimension */
    int n;             /* points = 2^(p*b) */
    double mse;        /* per-dimension MSE on N(0, I_p) (exact integral for p = 1, Monte Carlo otherwise) */
    const float *pts;  /* n * p coordinates, sorted (p = 1: ascending) */
} kv_higgs_grid;
const kv_higgs_grid *kv_higgs_grid_get(int p, int b); /* NULL if not generated */
extern const float kv_af4_code64[16];                 /* AbnormalFloat-4 for blocks of 64, ascending */
extern const float kv_nf4_code64[16];                 /* NormalFloat-4 (bitsandbytes), ascending */
/* bitsandbytes' signed 8-bit dynamic map (nf4_dq's second level), ascending. */
void kv_nf4_dynamic_map(float *map256);

/* E8 nearest point (Conway & Sloane, SPLAG ch. 20, algorithm for D_n and E8 = D8 u (D8 + 1/2)). */
void kv_e8_nearest(const double *x, double *y);

#endif
