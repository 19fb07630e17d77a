/* int.c — uniform integer formats INTn, n = 2..8: names int{n}_g{g}_{sym|asym}[_f32][_mse].
 * Source: llama.cpp's two classic schemes (ggml-quants.c quantize_row_q4_0_ref, "type-0", and
 * quantize_row_q4_1_ref, "type-1"), generalised to any bit width and grouping:
 *   sym  (type-0): d = m / -2^(n-1) where m is the group's value of largest magnitude (signed), code
 *                  q = clamp(round(x/d), -2^(n-1), 2^(n-1)-1) stored as q + 2^(n-1); x_hat = d*(code - 2^(n-1)).
 *   asym (type-1): d = (max - min) / (2^n - 1), code = clamp(round((x - min)/d), 0, 2^n-1); x_hat = d*code + min.
 * Rounding is to nearest even, with the stored (fp16 or fp32) d and min.
 * Grouping g: 32, 64, 128, 256 (scales in each block), 0 = per channel (one scale set per row, in the row
 * header), t = per tensor (one scale set for the whole tensor, replicated in every row header).
 * _zp (asym only): an integer zero point, as GPTQ (AutoGPTQ quant.Quantizer) and compressed-tensors store it: the
 * range is widened to include 0, d = (max - min)/(2^n - 1), z = clamp(round(-min/d), 0, 2^n - 1), and the stored
 * min is -d*z rounded to the scale type, so x_hat = d*(code - z) up to that rounding (same layout as asym).
 * _ct (sym only): compressed-tensors' symmetric scale (calculate_qparams): d = absmax / ((2^n - 1)/2), codes
 * clamp(round(x/d), -2^(n-1), 2^(n-1)-1) + 2^(n-1); its dynamic per-token activation quantizer with _g0_.._f32.
 * _f32 stores scales as fp32 (default fp16; a scale that overflows fp16 is an error). _mse searches the clip
 * ratio r in {1, 0.98, ..., 0.50} (the group range [min, max] or m is multiplied by r, as GPTQ's quantizer
 * grid search) minimising the importance-weighted squared error; without _mse, importance is ignored.
 * Codes are a little-endian bit stream: code i of a block (or of the row for g0/gt) in bits [i*n, i*n+n). */
#include "formats/extra.h"
#include <stdio.h>

enum { P_BITS, P_GROUP, P_ASYM, P_F32, P_MSE, P_ZP, P_CT };
#define GROUP_ROW 0
#define GROUP_TENSOR (-1)

typedef struct int_params {
    float d, mn; /* stored (already rounded) scale and min (min = 0 for sym) */
} int_params;

typedef struct int_spec {
    int bits, asym, f32, mse, zp, ct;
} int_spec;

static float store_round(const int_spec *s, float v) { return s->f32 ? v : kv_fp16_to_fp32(kv_fp32_to_fp16(v)); }

static inline uint32_t int_code(const int_spec *s, const int_params *p, float x) {
    if (p->d == 0.0f) return s->asym ? 0u : 1u << (s->bits - 1);
    if (s->asym) {
        float q = rintf((x - p->mn) / p->d);
        float hi = (float)((1 << s->bits) - 1);
        return (uint32_t)(q < 0.0f ? 0.0f : q > hi ? hi : q);
    }
    float half = (float)(1 << (s->bits - 1));
    float q = rintf(x / p->d);
    q = q < -half ? -half : q > half - 1.0f ? half - 1.0f : q;
    return (uint32_t)(q + half);
}

static inline float int_value(const int_spec *s, const int_params *p, uint32_t code) {
    return s->asym ? p->d * (float)code + p->mn : p->d * ((float)code - (float)(1 << (s->bits - 1)));
}

/* Scale (and min) for values x[0..m) at clip ratio r. */
static int_params int_fit_ratio(const int_spec *s, float lo, float hi, float big, float r) {
    int_params p = {0.0f, 0.0f};
    if (s->asym && s->zp) {
        float mn = fminf(lo, 0.0f) * r, mx = fmaxf(hi, 0.0f) * r;
        const float qmax = (float)((1 << s->bits) - 1);
        p.d = store_round(s, (float)(((double)mx - mn) / qmax));
        float z = p.d > 0.0f ? rintf(-mn / p.d) : 0.0f;
        z = z < 0.0f ? 0.0f : z > qmax ? qmax : z;
        p.mn = store_round(s, -p.d * z);
    } else if (s->asym) {
        float mn = lo * r, mx = hi * r;
        p.d = store_round(s, (float)(((double)mx - mn) / ((1 << s->bits) - 1))); /* double: max - min may overflow */
        p.mn = store_round(s, mn);
    } else if (s->ct) {
        p.d = store_round(s, fabsf(big) * r / ((float)((1 << s->bits) - 1) / 2.0f));
    } else {
        p.d = store_round(s, big * r / -(float)(1 << (s->bits - 1)));
    }
    return p;
}

/* Weighted squared error of x[0..m) under p; weight of element i = w[(w0 + i) % wn] (or 1). */
static double int_err(const int_spec *s, const int_params *p, const float *x, int64_t m, const float *w,
                      int64_t w0, int64_t wn) {
    double e = 0.0;
    for (int64_t i = 0; i < m; i++) {
        double d = (double)x[i] - int_value(s, p, int_code(s, p, x[i]));
        e += (w ? w[(w0 + i) % wn] : 1.0) * d * d;
    }
    return e;
}

static kv_status int_fit(const kv_format *f, const int_spec *s, const float *x, int64_t m, const float *w,
                         int64_t w0, int64_t wn, int_params *out, kv_error *err) {
    float lo = x[0], hi = x[0], big = 0.0f;
    for (int64_t i = 0; i < m; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
        if (fabsf(x[i]) > fabsf(big)) big = x[i];
    }
    int_params best = int_fit_ratio(s, lo, hi, big, 1.0f);
    if (s->mse) {
        double best_err = int_err(s, &best, x, m, w, w0, wn);
        for (int k = 1; k <= 25; k++) {
            int_params p = int_fit_ratio(s, lo, hi, big, 1.0f - 0.02f * (float)k);
            double e = int_err(s, &p, x, m, w, w0, wn);
            if (e < best_err) {
                best_err = e;
                best = p;
            }
        }
    }
    if (!isfinite(best.d) || !isfinite(best.mn))
        return kv_fail(err, KV_ERANGE, "format %s: group range [%g, %g] gives a scale beyond fp16 (use the _f32 "
                       "variant)", f->name, (double)lo, (double)hi);
    *out = best;
    return KV_OK;
}

static int_spec spec_of(const kv_format *f) {
    int_spec s = {f->params[P_BITS], f->params[P_ASYM], f->params[P_F32], f->params[P_MSE], f->params[P_ZP],
                  f->params[P_CT]};
    return s;
}

static int scale_bytes(const int_spec *s) { return (s->f32 ? 4 : 2) * (s->asym ? 2 : 1); }

static void put_params(const int_spec *s, const int_params *p, uint8_t *o) {
    if (s->f32) {
        kv_wr_f32(o, p->d);
        if (s->asym) kv_wr_f32(o + 4, p->mn);
    } else {
        kv_wr_u16(o, kv_fp32_to_fp16(p->d));
        if (s->asym) kv_wr_u16(o + 2, kv_fp32_to_fp16(p->mn));
    }
}

static int_params get_params(const int_spec *s, const uint8_t *o) {
    int_params p = {0.0f, 0.0f};
    if (s->f32) {
        p.d = kv_rd_f32(o);
        if (s->asym) p.mn = kv_rd_f32(o + 4);
    } else {
        p.d = kv_fp16_to_fp32(kv_rd_u16(o));
        if (s->asym) p.mn = kv_fp16_to_fp32(kv_rd_u16(o + 2));
    }
    return p;
}

static kv_status int_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                              const float *importance, kv_error *err) {
    kv_status st = kv_format_check_quantize(f, src, dst, nrows, n, importance, err);
    if (st != KV_OK) return st;
    int_spec s = spec_of(f);
    int g = f->params[P_GROUP], sb = scale_bytes(&s);
    size_t rb = kv_xf_row_bytes(f, n);
    int_params tensor_p = {0.0f, 0.0f};
    if (g == GROUP_TENSOR && nrows > 0) {
        st = int_fit(f, &s, src, nrows * n, importance, 0, n, &tensor_p, err);
        if (st != KV_OK) return st;
    }
    for (int64_t r = 0; r < nrows; r++) {
        const float *x = src + r * n;
        uint8_t *out = (uint8_t *)dst + (size_t)r * rb;
        memset(out, 0, rb);
        if (g <= 0) {
            int_params p = tensor_p;
            if (g == GROUP_ROW && (st = int_fit(f, &s, x, n, importance, 0, n, &p, err)) != KV_OK) return st;
            put_params(&s, &p, out);
            for (int64_t i = 0; i < n; i++) kv_bits_put(out + sb, i, s.bits, int_code(&s, &p, x[i]));
            continue;
        }
        for (int64_t b = 0; b < n / g; b++) {
            uint8_t *blk = out + b * f->block_bytes;
            int_params p;
            if ((st = int_fit(f, &s, x + b * g, g, importance, b * g, n, &p, err)) != KV_OK) return st;
            put_params(&s, &p, blk);
            for (int i = 0; i < g; i++) kv_bits_put(blk + sb, i, s.bits, int_code(&s, &p, x[b * g + i]));
        }
    }
    return KV_OK;
}

static void int_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    int_spec s = spec_of(f);
    int g = f->params[P_GROUP], sb = scale_bytes(&s);
    const uint8_t *p = src;
    if (g <= 0) {
        int_params ip = get_params(&s, p);
        for (int64_t i = 0; i < n; i++) dst[i] = int_value(&s, &ip, kv_bits_get(p + sb, i, s.bits));
        return;
    }
    for (int64_t b = 0; b < n / g; b++) {
        const uint8_t *blk = p + b * f->block_bytes;
        int_params ip = get_params(&s, blk);
        for (int i = 0; i < g; i++) dst[b * g + i] = int_value(&s, &ip, kv_bits_get(blk + sb, i, s.bits));
    }
}

kv_status kv_fmt_int_get(const char *name, kv_format *out, kv_error *err) {
    if (strncmp(name, "int", 3)) return KV_ENOTFOUND;
    const char *p = name + 3;
    if (*p < '2' || *p > '8' || p[1] != '_' || p[2] != 'g') return KV_ENOTFOUND;
    int bits = *p - '0';
    p += 3;
    int group;
    if (*p == 't') {
        group = GROUP_TENSOR;
        p++;
    } else {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (v != 0 && v != 32 && v != 64 && v != 128 && v != 256)) return KV_ENOTFOUND;
        group = (int)v;
        p = end;
    }
    int asym;
    if (!strncmp(p, "_sym", 4)) { asym = 0; p += 4; }
    else if (!strncmp(p, "_asym", 5)) { asym = 1; p += 5; }
    else return KV_ENOTFOUND;
    int f32 = 0, mse = 0, zp = 0, ct = 0;
    if (!strncmp(p, "_f32", 4)) { f32 = 1; p += 4; }
    if (!strncmp(p, "_mse", 4)) { mse = 1; p += 4; }
    if (asym && !strncmp(p, "_zp", 3)) { zp = 1; p += 3; }
    if (!asym && !strncmp(p, "_ct", 3)) { ct = 1; p += 3; }
    if (*p) return KV_ENOTFOUND;
    char canon[48], g_txt[8];
    if (group == GROUP_TENSOR) snprintf(g_txt, sizeof g_txt, "t");
    else snprintf(g_txt, sizeof g_txt, "%d", group);
    snprintf(canon, sizeof canon, "int%d_g%s_%s%s%s%s%s", bits, g_txt, asym ? "asym" : "sym", f32 ? "_f32" : "",
             mse ? "_mse" : "", zp ? "_zp" : "", ct ? "_ct" : "");
    if (strcmp(canon, name)) return KV_ENOTFOUND; /* e.g. "int4_g032_sym": one spelling per format */
    (void)err;
    memset(out, 0, sizeof *out);
    kv_xf_set_name(out, name);
    out->type = KV_TYPE_KV_INT;
    out->params[P_BITS] = bits;
    out->params[P_GROUP] = group;
    out->params[P_ASYM] = asym;
    out->params[P_F32] = f32;
    out->params[P_MSE] = mse;
    out->params[P_ZP] = zp;
    out->params[P_CT] = ct;
    int_spec s = spec_of(out);
    if (group > 0) {
        out->block = group;
        out->block_bytes = scale_bytes(&s) + group * bits / 8;
    } else {
        out->block = 8; /* 8 codes of n bits fill n whole bytes */
        out->block_bytes = bits;
        out->row_header_bytes = scale_bytes(&s);
    }
    out->bits_per_weight = out->block_bytes * 8.0 / out->block;
    out->family = KV_FAM_INT;
    out->group = group > 0 ? group : group == 0 ? 0 : -1;
    out->code_bits = bits;
    out->traits = (asym ? KV_FMT_ASYM : 0) | (mse ? KV_FMT_SEARCH : 0) | (f32 ? KV_FMT_F32_SCALE : 0) |
                  (zp ? KV_FMT_INT_ZP : 0) | (ct ? KV_FMT_CT_SCALE : 0);
    out->quantize = int_quantize;
    out->dequantize = int_dequantize;
    out->dot = out->row_header_bytes ? kv_xf_dot_dequant : kv_format_dot_blocks;
    return KV_OK;
}
