/* mx.c — OCP Microscaling (MX) v1.0 block formats: mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_ocp,
 * mxint8, and their "prescale" variants (suffix _ps).
 * Source: OCP Microscaling Formats (MX) Specification v1.0 (blocks of k = 32 elements sharing one E8M0
 * scale X = 2^(E-127), E = 0xFF is NaN); its conversion: shared exponent = floor(log2(max|V_i|)) - emax_elem,
 * elements P_i = V_i / X rounded to nearest even and saturated to +-max_norm. Zero blocks as in
 * microsoft/microxcaling mx/mx_ops.py _shared_exponents: the exponent is clamped to -127 (E8M0 code 0).
 * MXINT8 elements are two's-complement int8 with an implicit scale 2^-6, clamped to +-127 (as microxcaling).
 * Block layout: byte 0 = E8M0 scale, then the 32 element codes as a little-endian bit stream (element i in bits
 * [i*w, i*w+w)): FP8/INT8 one byte each, FP6 four elements in three bytes, FP4 element 2i in the low nibble.
 * NaN or Inf anywhere in a block gives the NaN scale 0xFF (every element of the block decodes to NaN).
 * The _ps variants choose among the neighbouring shared exponents e-1, e, e+1 the one with the smallest
 * (importance-weighted) block squared error; ties keep the spec's e. */
#include "formats/extra.h"

#define MX_BLOCK 32
#define MX_INT8 (-1)

typedef struct mx_ctx {
    const kv_minifloat *m; /* NULL for MXINT8 */
    int w;                 /* bits per element */
    int emax;
} mx_ctx;

static mx_ctx mx_setup(const kv_format *f) {
    mx_ctx c;
    if (f->params[0] == MX_INT8) {
        c.m = NULL;
        c.w = 8;
        c.emax = 0;
    } else {
        c.m = kv_mf_get((kv_mf_kind)f->params[0]);
        c.w = 1 + c.m->ebits + c.m->mbits;
        c.emax = c.m->emax;
    }
    return c;
}

/* Element code of v = x / X and its decoded value. */
static inline uint32_t mx_elem(const mx_ctx *c, float v, float *dec) {
    if (!c->m) {
        float q = rintf(v * 64.0f);
        q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
        *dec = q / 64.0f;
        return (uint32_t)(uint8_t)(int8_t)q;
    }
    float a = kv_mf_round_abs(c->m, fabsf(v));
    *dec = signbit(v) ? -a : a;
    return kv_mf_encode(c->m, *dec);
}

/* x * 2^-e (ldexpf only where 2^-e is not a normal float). */
static inline float mx_unscale(float x, int e) { return e >= -126 && e <= 126 ? x * kv_f32_pow2(-e) : ldexpf(x, -e); }

/* Decoded value of v = x / X (no code). */
static inline float mx_value(const mx_ctx *c, float v) {
    if (!c->m) {
        float q = rintf(v * 64.0f);
        return (q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q) / 64.0f;
    }
    float a = kv_mf_round_abs(c->m, fabsf(v));
    return signbit(v) ? -a : a;
}

/* Weighted squared error of the block at shared exponent e. */
static double mx_block_err(const mx_ctx *c, const float *x, const float *wts, int e) {
    double sse = 0.0, scale = ldexp(1.0, e);
    for (int i = 0; i < MX_BLOCK; i++) {
        float dec = mx_value(c, mx_unscale(x[i], e));
        double d = (double)x[i] - dec * scale;
        sse += (wts ? wts[i] : 1.0) * d * d;
    }
    return sse;
}

static void mx_quantize_block(const mx_ctx *c, int prescale, const float *x, const float *wts, uint8_t *out) {
    memset(out, 0, 1 + MX_BLOCK * c->w / 8);
    float amax = 0.0f;
    int finite = 1;
    for (int i = 0; i < MX_BLOCK; i++) {
        if (!isfinite(x[i])) finite = 0;
        else amax = fmaxf(amax, fabsf(x[i]));
    }
    if (!finite) {
        out[0] = 0xFF;
        return;
    }
    int e = -127;
    if (amax > 0.0f) {
        int fe;
        (void)frexpf(amax, &fe);
        e = fe - 1 - c->emax;
        if (e < -127) e = -127;
    }
    if (prescale && amax > 0.0f) {
        double best = mx_block_err(c, x, wts, e);
        int best_e = e;
        for (int d = -1; d <= 1; d += 2) {
            int cand = e + d;
            if (cand < -127 || cand > 127) continue;
            double err = mx_block_err(c, x, wts, cand);
            if (err < best) {
                best = err;
                best_e = cand;
            }
        }
        e = best_e;
    }
    out[0] = (uint8_t)(e + 127);
    for (int i = 0; i < MX_BLOCK; i++) {
        float dec;
        kv_bits_put(out + 1, i, c->w, mx_elem(c, mx_unscale(x[i], e), &dec));
    }
}

static kv_status mx_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                             const float *importance, kv_error *err) {
    /* NaN/Inf input is legal here (the NaN scale encodes it): check only shape, buffers and importance. */
    kv_status st = kv_format_check_quantize(f, src, dst, 0, n, importance, err);
    if (st != KV_OK) return st;
    if (nrows < 0 || (nrows > 0 && (!src || !dst)))
        return kv_fail(err, KV_EINVAL, "%s: bad row count or NULL buffer", f->name);
    mx_ctx c = mx_setup(f);
    size_t rb = kv_xf_row_bytes(f, n);
    for (int64_t r = 0; r < nrows; r++) {
        uint8_t *out = (uint8_t *)dst + (size_t)r * rb;
        for (int64_t b = 0; b < n / MX_BLOCK; b++)
            mx_quantize_block(&c, f->params[1], src + r * n + b * MX_BLOCK,
                              importance ? importance + b * MX_BLOCK : NULL, out + b * f->block_bytes);
    }
    return KV_OK;
}

static void mx_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    mx_ctx c = mx_setup(f);
    float tab[256];
    if (c.m) kv_mf_table(c.m, tab);
    else
        for (int q = 0; q < 256; q++) tab[q] = (float)(int8_t)q / 64.0f;
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / MX_BLOCK; b++, p += f->block_bytes) {
        float *y = dst + b * MX_BLOCK;
        if (p[0] == 0xFF) {
            for (int i = 0; i < MX_BLOCK; i++) y[i] = NAN;
            continue;
        }
        float s = ldexpf(1.0f, (int)p[0] - 127);
        for (int i = 0; i < MX_BLOCK; i++) y[i] = tab[kv_bits_get(p + 1, i, c.w)] * s;
    }
}

static const struct {
    const char *name;
    int kind;
} k_mx_formats[] = {
    {"mxfp8_e4m3", KV_MF_E4M3}, {"mxfp8_e5m2", KV_MF_E5M2}, {"mxfp6_e3m2", KV_MF_E3M2},
    {"mxfp6_e2m3", KV_MF_E2M3}, {"mxfp4_ocp", KV_MF_E2M1},  {"mxint8", MX_INT8},
};

kv_status kv_fmt_mx_get(const char *name, kv_format *out, kv_error *err) {
    (void)err;
    for (size_t i = 0; i < KV_ARRAY_LEN(k_mx_formats); i++) {
        size_t len = strlen(k_mx_formats[i].name);
        if (strncmp(name, k_mx_formats[i].name, len)) continue;
        int prescale;
        if (name[len] == 0) prescale = 0;
        else if (!strcmp(name + len, "_ps")) prescale = 1;
        else continue;
        memset(out, 0, sizeof *out);
        kv_xf_set_name(out, name);
        out->type = KV_TYPE_KV_MX;
        out->params[0] = k_mx_formats[i].kind;
        out->params[1] = prescale;
        mx_ctx c = mx_setup(out);
        out->block = MX_BLOCK;
        out->block_bytes = 1 + MX_BLOCK * c.w / 8;
        out->bits_per_weight = out->block_bytes * 8.0 / MX_BLOCK;
        out->family = KV_FAM_MX;
        out->group = MX_BLOCK;
        out->code_bits = c.w;
        out->traits = prescale ? KV_FMT_SEARCH : 0;
        out->quantize = mx_quantize;
        out->dequantize = mx_dequantize;
        out->dot = out->row_header_bytes ? kv_xf_dot_dequant : kv_format_dot_blocks;
        return KV_OK;
    }
    return KV_ENOTFOUND;
}
