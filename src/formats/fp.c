/* fp.c — minifloat element codecs and the plain element formats fp8_e4m3, fp8_e5m2, fp6_e3m2, fp6_e2m3, fp4_e2m1.
 * Sources: OCP 8-bit Floating Point Specification (OFP8) rev 1.0 (E4M3 "fn": bias 7, no Inf, NaN = S.1111.111,
 * max 448; E5M2: bias 15, IEEE-like Inf/NaN, max 57344) and OCP Microscaling Formats (MX) v1.0 (FP6 E3M2 /
 * E2M3, FP4 E2M1: no Inf/NaN). Conversion is round-to-nearest-even with saturation to +-max_norm (the OCP
 * "saturating" mode); subnormals are kept.
 * As weight formats each row carries one fp32 scale in its header: s = absmax(row) / max_norm, so the row's
 * largest magnitude lands on the format's largest finite value; element i stores code(x_i / s). */
#include "formats/extra.h"

static const kv_minifloat k_minifloats[KV_MF_COUNT] = {
    [KV_MF_E4M3] = {"e4m3", 4, 3, 7, 8, -6, 448.0f, 0, 1},
    [KV_MF_E5M2] = {"e5m2", 5, 2, 15, 15, -14, 57344.0f, 1, 1},
    [KV_MF_E3M2] = {"e3m2", 3, 2, 3, 4, -2, 28.0f, 0, 0},
    [KV_MF_E2M3] = {"e2m3", 2, 3, 1, 2, 0, 7.5f, 0, 0},
    [KV_MF_E2M1] = {"e2m1", 2, 1, 1, 2, 0, 6.0f, 0, 0},
};

const kv_minifloat *kv_mf_get(kv_mf_kind k) { return (unsigned)k < KV_MF_COUNT ? &k_minifloats[k] : NULL; }

static uint8_t nan_code(const kv_minifloat *m) {
    if (!m->has_nan) return 0;
    return (uint8_t)((1u << (m->ebits + m->mbits)) - 1u); /* E4M3: 0x7F; E5M2: 0x7F (exp 11111, mantissa 11) */
}

uint8_t kv_mf_encode(const kv_minifloat *m, float x) {
    int nb = m->ebits + m->mbits;
    uint8_t sign = signbit(x) ? (uint8_t)(1u << nb) : 0;
    if (isnan(x)) return nan_code(m);
    if (isinf(x) && m->has_inf) return (uint8_t)(sign | (((1u << m->ebits) - 1u) << m->mbits));
    float v = kv_mf_round_abs(m, fabsf(x));
    if (v < kv_f32_pow2(m->emin)) /* subnormal (or 0): exponent field 0, mantissa in units of 2^(emin - mbits) */
        return (uint8_t)(sign | (uint32_t)(v * kv_f32_pow2(m->mbits - m->emin)));
    uint32_t bits; /* v is a normal float here: read its exponent and top mantissa bits */
    memcpy(&bits, &v, 4);
    int ex = (int)(bits >> 23) - 127;
    uint32_t mant = (bits >> (23 - m->mbits)) & ((1u << m->mbits) - 1u);
    return (uint8_t)(sign | (uint32_t)(ex + m->bias) << m->mbits | mant);
}

float kv_mf_decode(const kv_minifloat *m, uint8_t code) {
    int nb = m->ebits + m->mbits;
    uint32_t mag = code & ((1u << nb) - 1u);
    float sign = code >> nb & 1u ? -1.0f : 1.0f;
    uint32_t ef = mag >> m->mbits, mant = mag & ((1u << m->mbits) - 1u);
    uint32_t emask = (1u << m->ebits) - 1u;
    if (m->has_inf && ef == emask) return mant ? NAN : sign * INFINITY;
    if (m->has_nan && !m->has_inf && mag == (1u << nb) - 1u) return NAN;
    if (ef == 0) return sign * ldexpf((float)mant, m->emin - m->mbits);
    return sign * ldexpf((float)(mant + (1u << m->mbits)), (int)ef - m->bias - m->mbits);
}

void kv_mf_table(const kv_minifloat *m, float *tab) {
    int ncodes = 1 << (1 + m->ebits + m->mbits);
    for (int c = 0; c < ncodes; c++) tab[c] = kv_mf_decode(m, (uint8_t)c);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* element formats with a per-row fp32 scale                                                                  */

static kv_status fp_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                             const float *importance, kv_error *err) {
    kv_status st = kv_format_check_quantize(f, src, dst, nrows, n, importance, err);
    if (st != KV_OK) return st;
    const kv_minifloat *m = kv_mf_get((kv_mf_kind)f->params[0]);
    int w = 1 + m->ebits + m->mbits;
    size_t rb = kv_xf_row_bytes(f, n);
    for (int64_t r = 0; r < nrows; r++) {
        const float *x = src + r * n;
        uint8_t *out = (uint8_t *)dst + (size_t)r * rb;
        memset(out, 0, rb);
        float amax = 0.0f;
        for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
        float s = amax / m->max_norm;
        kv_wr_f32(out, s);
        if (s == 0.0f) continue; /* all-zero row: codes stay 0 (= +0) */
        double inv = 1.0 / s; /* in double: 1/s overflows float when s is subnormal */
        uint8_t *q = out + 4;
        for (int64_t i = 0; i < n; i++) kv_bits_put(q, i, w, kv_mf_encode(m, (float)(x[i] * inv)));
    }
    return KV_OK;
}

static void fp_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    const kv_minifloat *m = kv_mf_get((kv_mf_kind)f->params[0]);
    int w = 1 + m->ebits + m->mbits;
    float tab[256];
    kv_mf_table(m, tab);
    const uint8_t *p = src;
    float s = kv_rd_f32(p);
    for (int64_t i = 0; i < n; i++) dst[i] = tab[kv_bits_get(p + 4, i, w)] * s;
}

static const struct {
    const char *name;
    kv_mf_kind kind;
    int block, block_bytes;
} k_fp_formats[] = {
    {"fp8_e4m3", KV_MF_E4M3, 1, 1}, {"fp8_e5m2", KV_MF_E5M2, 1, 1}, {"fp6_e3m2", KV_MF_E3M2, 4, 3},
    {"fp6_e2m3", KV_MF_E2M3, 4, 3}, {"fp4_e2m1", KV_MF_E2M1, 2, 1},
};

kv_status kv_fmt_fp_get(const char *name, kv_format *out, kv_error *err) {
    for (size_t i = 0; i < KV_ARRAY_LEN(k_fp_formats); i++) {
        if (strcmp(name, k_fp_formats[i].name)) continue;
        memset(out, 0, sizeof *out);
        kv_xf_set_name(out, name);
        out->type = KV_TYPE_KV_FP;
        out->block = k_fp_formats[i].block;
        out->block_bytes = k_fp_formats[i].block_bytes;
        out->row_header_bytes = 4;
        out->bits_per_weight = out->block_bytes * 8.0 / out->block;
        out->params[0] = (int32_t)k_fp_formats[i].kind;
        out->family = KV_FAM_FP;
        out->code_bits = out->block_bytes * 8 / out->block;
        out->quantize = fp_quantize;
        out->dequantize = fp_dequantize;
        out->dot = kv_xf_dot_dequant;
        return KV_OK;
    }
    (void)err;
    return KV_ENOTFOUND;
}
