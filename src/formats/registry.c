/* registry.c — the format table: one entry per ggml type kvant computes (name, type id, block, bytes,
 * bits/weight, quantize/dequantize/dot), like ggml's type_traits[] (ggml/src/ggml.c); every other name is
 * asked of the non-ggml registry (kv_formats_extra_* in extra_registry.c). Also the shared argument checks and drivers of
 * formats.h. */
#include "formats/formats.h"
#include "formats/extra.h"

#include <stdio.h>

#define KV_GGML_ENTRY(t, id, blk, bytes)                                                                    \
    {.name = #t, .type = (id), .block = (blk), .block_bytes = (bytes), .row_header_bytes = 0,               \
     .bits_per_weight = (double)(bytes) * 8.0 / (double)(blk), .quantize = kv_##t##_quantize,              \
     .dequantize = kv_##t##_dequantize, .dot = kv_format_dot_blocks}

/* The order here is the order `kvant formats` lists them in. */
static const kv_format k_ggml_formats[] = {
    {.name = "f32", .type = KV_TYPE_F32, .block = 1, .block_bytes = 4, .bits_per_weight = 32.0,
     .quantize = kv_f32_quantize, .dequantize = kv_f32_dequantize, .dot = kv_f32_dot},
    {.name = "f16", .type = KV_TYPE_F16, .block = 1, .block_bytes = 2, .bits_per_weight = 16.0,
     .quantize = kv_f16_quantize, .dequantize = kv_f16_dequantize, .dot = kv_f16_dot},
    {.name = "bf16", .type = KV_TYPE_BF16, .block = 1, .block_bytes = 2, .bits_per_weight = 16.0,
     .quantize = kv_bf16_quantize, .dequantize = kv_bf16_dequantize, .dot = kv_bf16_dot},
    KV_GGML_ENTRY(q8_0, KV_TYPE_Q8_0, 32, 34),
    KV_GGML_ENTRY(q8_1, KV_TYPE_Q8_1, 32, 36),
    KV_GGML_ENTRY(q6_k, KV_TYPE_Q6_K, 256, 210),
    KV_GGML_ENTRY(q5_0, KV_TYPE_Q5_0, 32, 22),
    KV_GGML_ENTRY(q5_1, KV_TYPE_Q5_1, 32, 24),
    KV_GGML_ENTRY(q5_k, KV_TYPE_Q5_K, 256, 176),
    KV_GGML_ENTRY(q4_0, KV_TYPE_Q4_0, 32, 18),
    KV_GGML_ENTRY(q4_1, KV_TYPE_Q4_1, 32, 20),
    KV_GGML_ENTRY(q4_k, KV_TYPE_Q4_K, 256, 144),
    KV_GGML_ENTRY(iq4_nl, KV_TYPE_IQ4_NL, 32, 18),
    KV_GGML_ENTRY(iq4_xs, KV_TYPE_IQ4_XS, 256, 136),
    KV_GGML_ENTRY(mxfp4, KV_TYPE_MXFP4, 32, 17),
    KV_GGML_ENTRY(nvfp4, KV_TYPE_NVFP4, 64, 36),
    KV_GGML_ENTRY(q3_k, KV_TYPE_Q3_K, 256, 110),
    KV_GGML_ENTRY(q2_k, KV_TYPE_Q2_K, 256, 84),
    KV_GGML_ENTRY(q8_k, KV_TYPE_Q8_K, 256, 292),
};

/* Family traits of the ggml table: code bits and the elements under one scale (k-quants: the sub-block). */
static void ggml_traits(kv_format *f) {
    static const struct { uint32_t type; int32_t bits, group; uint32_t traits; } k[] = {
        {KV_TYPE_F32, 32, 0, 0}, {KV_TYPE_F16, 16, 0, 0}, {KV_TYPE_BF16, 16, 0, 0},
        {KV_TYPE_Q8_0, 8, 32, 0}, {KV_TYPE_Q8_1, 8, 32, 0}, {KV_TYPE_Q8_K, 8, 256, 0},
        {KV_TYPE_Q6_K, 6, 16, 0}, {KV_TYPE_Q5_0, 5, 32, 0}, {KV_TYPE_Q5_1, 5, 32, KV_FMT_ASYM},
        {KV_TYPE_Q5_K, 5, 32, KV_FMT_ASYM}, {KV_TYPE_Q4_0, 4, 32, 0}, {KV_TYPE_Q4_1, 4, 32, KV_FMT_ASYM},
        {KV_TYPE_Q4_K, 4, 32, KV_FMT_ASYM}, {KV_TYPE_IQ4_NL, 4, 32, 0}, {KV_TYPE_IQ4_XS, 4, 32, 0},
        {KV_TYPE_MXFP4, 4, 32, 0}, {KV_TYPE_NVFP4, 4, 16, 0}, {KV_TYPE_Q3_K, 3, 16, 0},
        {KV_TYPE_Q2_K, 2, 16, KV_FMT_ASYM},
    };
    for (size_t i = 0; i < KV_ARRAY_LEN(k); i++)
        if (k[i].type == f->type) {
            f->family = i < 3 ? KV_FAM_PLAIN : KV_FAM_GGML;
            f->code_bits = k[i].bits;
            f->group = k[i].group;
            f->traits = k[i].traits;
        }
}

static void lower_copy(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    for (; src[i] && i + 1 < cap; i++) dst[i] = (char)(src[i] >= 'A' && src[i] <= 'Z' ? src[i] + 32 : src[i]);
    dst[i] = 0;
}

kv_status kv_format_get(const char *name, kv_format *out, kv_error *err) {
    if (!name || !out) return kv_fail(err, KV_EINVAL, "kv_format_get: NULL argument");
    char lname[64];
    if (strlen(name) >= sizeof lname) return kv_fail(err, KV_EINVAL, "format name too long: '%.40s...'", name);
    lower_copy(lname, sizeof lname, name); /* ggml's names are lower case; accept "Q4_K" too */
    for (size_t i = 0; i < KV_ARRAY_LEN(k_ggml_formats); i++)
        if (!strcmp(lname, k_ggml_formats[i].name)) {
            *out = k_ggml_formats[i];
            ggml_traits(out);
            return KV_OK;
        }
    kv_error sub;
    kv_error_clear(&sub);
    kv_status st = kv_formats_extra_get(lname, out, &sub);
    if (st == KV_OK) return KV_OK;
    if (st != KV_ENOTFOUND) {
        if (err) *err = sub;
        return st;
    }
    char ggml_names[400];
    size_t len = 0;
    for (size_t i = 0; i < KV_ARRAY_LEN(k_ggml_formats); i++) {
        size_t k = strlen(k_ggml_formats[i].name);
        if (len + k + 2 > sizeof ggml_names) break;
        if (i) ggml_names[len++] = ' ';
        memcpy(ggml_names + len, k_ggml_formats[i].name, k);
        len += k;
    }
    ggml_names[len] = 0;
    const char *extra = kv_formats_extra_families();
    return kv_fail(err, KV_EINVAL, "unknown format '%s' (ggml types: %s%s%s)", name, ggml_names,
                   extra && *extra ? "; other families: " : "", extra ? extra : "");
}

kv_status kv_format_from_type(uint32_t type, kv_format *out, kv_error *err) {
    if (!out) return kv_fail(err, KV_EINVAL, "kv_format_from_type: NULL argument");
    for (size_t i = 0; i < KV_ARRAY_LEN(k_ggml_formats); i++)
        if (k_ggml_formats[i].type == type) {
            *out = k_ggml_formats[i];
            ggml_traits(out);
            return KV_OK;
        }
    if (type >= KV_TYPE_KVANT_BASE && type <= KV_TYPE_KVANT_MAX) {
        kv_status st = kv_formats_extra_from_type(type, out, err);
        if (st != KV_ENOTFOUND) return st;
        return kv_fail(err, KV_EUNSUPPORTED, "unknown kvant type id %u", (unsigned)type);
    }
    const kv_type_info *ti = kv_type_get(type);
    if (ti) return kv_fail(err, KV_EUNSUPPORTED, "ggml type %s (%u) is not computed by kvant", ti->name, (unsigned)type);
    return kv_fail(err, KV_EUNSUPPORTED, "unknown type id %u", (unsigned)type);
}

size_t kv_format_row_bytes(const kv_format *f, int64_t n) {
    if (!f || f->block <= 0 || n <= 0 || n % f->block) return 0;
    return (size_t)f->row_header_bytes + (size_t)(n / f->block) * (size_t)f->block_bytes;
}

double kv_format_bpw(const kv_format *f, int64_t n) {
    size_t bytes = kv_format_row_bytes(f, n);
    return bytes ? (double)bytes * 8.0 / (double)n : 0.0;
}

int kv_format_list_count(void) { return (int)KV_ARRAY_LEN(k_ggml_formats) + kv_formats_extra_list_count(); }

const char *kv_format_list_name(int i) {
    int nggml = (int)KV_ARRAY_LEN(k_ggml_formats);
    if (i < 0) return NULL;
    if (i < nggml) return k_ggml_formats[i].name;
    return i - nggml < kv_formats_extra_list_count() ? kv_formats_extra_list_name(i - nggml) : NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* shared checks and drivers (formats.h)                                                           */
/* ---------------------------------------------------------------------------------------------- */

/* Bit test instead of isfinite so the scan vectorizes: an all-ones exponent plus one sets bit 31. */
int64_t kv_format_find_nonfinite(const float *x, int64_t count) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        uint32_t bits[16], acc = 0;
        memcpy(bits, x + i, sizeof bits);
        for (int k = 0; k < 16; k++) acc |= (bits[k] & 0x7f800000u) + 0x00800000u;
        if (acc & 0x80000000u) break;
    }
    for (; i < count; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* Index of the first importance weight that is not finite and >= 0 (-0 is fine), -1 if none; vectorizable. */
static int64_t find_bad_weight(const float *w, int64_t count) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        uint32_t bits[16], acc = 0;
        memcpy(bits, w + i, sizeof bits);
        for (int k = 0; k < 16; k++) acc |= ((bits[k] & 0x7f800000u) + 0x00800000u) | (bits[k] > 0x80000000u ? 0x80000000u : 0);
        if (acc & 0x80000000u) break;
    }
    for (; i < count; i++)
        if (!isfinite(w[i]) || w[i] < 0) return i;
    return -1;
}

kv_status kv_format_check_quantize(const kv_format *f, const float *src, const void *dst, int64_t nrows,
                                   int64_t n, const float *importance, kv_error *err) {
    if (!f) return kv_fail(err, KV_EINVAL, "quantize: NULL format");
    if (n <= 0 || f->block <= 0 || n % f->block)
        return kv_fail(err, KV_EINVAL, "%s: row length %lld is not a positive multiple of the block size %d",
                       f->name, (long long)n, (int)f->block);
    if (nrows < 0) return kv_fail(err, KV_EINVAL, "%s: negative row count %lld", f->name, (long long)nrows);
    if (nrows > 0 && (!src || !dst)) return kv_fail(err, KV_EINVAL, "%s: NULL buffer", f->name);
    int64_t i = nrows > 0 ? kv_format_find_nonfinite(src, nrows * n) : -1;
    if (i >= 0)
        return kv_fail(err, KV_EINVAL, "%s: non-finite input (%g) at row %lld, column %lld", f->name, (double)src[i],
                       (long long)(i / n), (long long)(i % n));
    int64_t c = importance ? find_bad_weight(importance, n) : -1;
    if (c >= 0)
        return kv_fail(err, KV_EINVAL, "%s: importance weight %g at column %lld is not finite and >= 0", f->name,
                       (double)importance[c], (long long)c);
    return KV_OK;
}

kv_status kv_format_quantize_rows(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                                  const float *importance, kv_row_quantize_fn fn, kv_error *err) {
    kv_status st = kv_format_check_quantize(f, src, dst, nrows, n, importance, err);
    if (st) return st;
    size_t row_bytes = kv_format_row_bytes(f, n);
    for (int64_t r = 0; r < nrows; r++) fn(src + r * n, (uint8_t *)dst + (size_t)r * row_bytes, n, importance);
    return KV_OK;
}

double kv_format_dot_blocks(const kv_format *f, const void *row, const float *x, int64_t n) {
    float buf[KV_FORMAT_MAX_BLOCK];
    if (f->block > KV_FORMAT_MAX_BLOCK || f->row_header_bytes) return NAN; /* not a blockwise format */
    const uint8_t *p = (const uint8_t *)row + f->row_header_bytes;
    double sum = 0.0;
    for (int64_t i = 0; i + f->block <= n; i += f->block, p += f->block_bytes) {
        f->dequantize(f, p, buf, f->block);
        for (int32_t j = 0; j < f->block; j++) sum += (double)buf[j] * (double)x[i + j];
    }
    return sum;
}

/* Which quantizers read the importance vector (from their code: ggml's weighted paths, the _mse INT search, MX _ps,
 * HIGGS p >= 2, E8); the others round the same way with or without it. */
int kv_format_uses_importance(const kv_format *f) {
    switch (f->type) {
    case KV_TYPE_Q4_0: case KV_TYPE_Q4_1: case KV_TYPE_Q5_0: case KV_TYPE_Q5_1:
    case KV_TYPE_Q2_K: case KV_TYPE_Q3_K: case KV_TYPE_Q4_K: case KV_TYPE_Q5_K: case KV_TYPE_Q6_K:
    case KV_TYPE_IQ4_NL: case KV_TYPE_IQ4_XS:
        return 1;
    case KV_TYPE_KV_INT: return (f->traits & KV_FMT_SEARCH) != 0; /* _mse */
    case KV_TYPE_KV_MX: return (f->traits & KV_FMT_SEARCH) != 0;  /* _ps: the exponent search weighs the error */
    case KV_TYPE_KV_E8: return 1;
    case KV_TYPE_KV_HIGGS: return f->params[0] >= 2; /* p = 1 rounds each value to the nearest grid point */
    default: return 0; /* f32/f16/bf16, q8_0/q8_1/q8_k, ggml mxfp4/nvfp4, fp, nvfp4_ts, nf4/af4 */
    }
}

