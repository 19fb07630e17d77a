/* hf_write.c — quantized Hugging Face checkpoints that transformers and vLLM load (docs/FORMAT.md "Hugging Face
 * output"). Sources for the layouts (read for facts):
 *   GPTQ: GPTQModel nn_modules/qlinear (pack_block, dequantize_weight: W = scales[g_idx] * (q - zeros[g_idx]),
 *     qweight [in/pf, out] packed along the input dim, qzeros [groups, out/pf] along the output dim, pf = 32/bits,
 *     code j of a word at bits [bits*j, bits*j + bits)); utils/model.py convert_gptq_v1_to_v2_format (v1 stores
 *     zero - 1); transformers utils/quantization_config.py GPTQConfig.
 *   compressed-tensors 0.20: compressors/pack_quantized (pack_to_int32: a dense little-endian bit stream of
 *     q + 2^(bits-1) per row, zero points packed along dim 0), naive_quantized (int-quantized, float-quantized:
 *     the quantized values in int8 / float8_e4m3fn), nvfp4 (weight_packed uint8 two E2M1 codes per byte, low
 *     nibble first, weight_scale float8_e4m3fn per 16, x = fp4 * weight_scale / weight_global_scale),
 *     quantization/quant_args.py (the config fields).
 * kvant's formats map onto them without re-rounding: int sym x = d*(code - 2^(n-1)) is GPTQ's sym zero point and
 * compressed-tensors' signed code; int asym _zp x = d*(code - z); fp8_e4m3 rows are one fp32 scale and e4m3fn
 * bytes; nvfp4_ts is E4M3 block scales over a global scale. */
#include "io/hf_quant.h"
#include "core/core.h"
#include "io/json.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SHARD_BYTES (5ULL * 1000 * 1000 * 1000)

int kv_hf_int_parse(const char *name, kv_hf_int *out) {
    kv_format f;
    memset(out, 0, sizeof *out);
    if (kv_format_get(name, &f, NULL) != KV_OK || f.family != KV_FAM_INT) return 0;
    const int bits = f.code_bits, group = f.group;
    if (bits < 2 || bits > 8 || group < 0) return 0; /* per-tensor groups (_gt_) have no HF layout */
    out->asym = (f.traits & KV_FMT_ASYM) != 0;
    out->f32 = (f.traits & KV_FMT_F32_SCALE) != 0;
    out->zp = (f.traits & KV_FMT_INT_ZP) != 0;
    if (out->asym && !out->zp) return 0; /* asymmetric without integer zero points */
    out->bits = bits;
    out->group = group;
    return 1;
}

/* ---- what a tensor becomes ------------------------------------------------------------------------------ */

typedef enum kind { K_PLAIN, K_GPTQ, K_CT_PACK, K_CT_INT8, K_CT_FP8, K_CT_NVFP4 } kind;

static int is_plain_type(uint32_t t) { return t == KV_TYPE_F32 || t == KV_TYPE_F16 || t == KV_TYPE_BF16; }

static const char *plain_dtype(uint32_t t) { return t == KV_TYPE_F32 ? "F32" : t == KV_TYPE_F16 ? "F16" : "BF16"; }

/* The scheme shared by every quantized linear. */
typedef struct scheme {
    kind k;
    kv_hf_int in;             /* integer formats */
    char fmt[48];             /* the shared format name ("" when nothing is quantized) */
    int act_int8, act_fp8;
} scheme;

static int is_linear_weight(const kv_hf_tensor *t) {
    return t->n_dims == 2 && strcmp(t->name, "token_embd.weight") && strcmp(t->name, "output.weight");
}

static kv_status tensor_fail(kv_error *err, kv_status st, const char *tensor, const char *fmt, const char *a,
                             const char *b) {
    kv_fail(err, st, fmt, a, b);
    kv_error_context(err, NULL, -1, tensor);
    return st;
}

static kv_status choose_scheme(const kv_hf_tensor *t, int64_t n, const kv_hf_write_opts *o, scheme *s,
                               kv_error *err) {
    memset(s, 0, sizeof *s);
    const char *act = o && o->act && strcmp(o->act, "none") ? o->act : NULL;
    if (act && strcmp(act, "int8") && strcmp(act, "fp8"))
        return kv_fail(err, KV_EUNSUPPORTED, "HF output: activation scheme '%s' has no compressed-tensors layout "
                       "kvant writes (none, int8 = W8A8 per-token dynamic, fp8 = FP8_DYNAMIC)", act);
    s->act_int8 = act && !strcmp(act, "int8");
    s->act_fp8 = act && !strcmp(act, "fp8");
    const char *first = NULL;
    for (int64_t i = 0; i < n; i++) {
        if (t[i].rht_block > 0)
            return tensor_fail(err, KV_EUNSUPPORTED, t[i].name, "an online rotation (--transform rht/quarot%s) cannot "
                               "be expressed in a Hugging Face checkpoint: no HF loader rotates activations%s", "", "");
        if (is_plain_type(t[i].fmt.type)) continue;
        if (!is_linear_weight(&t[i]))
            return tensor_fail(err, KV_EUNSUPPORTED, t[i].name, "HF output keeps the embedding, the head and 1-D "
                               "tensors unquantized, but this one has format %s%s (override it with f16 or bf16)",
                               t[i].fmt.name, "");
        if (!first) first = t[i].name, kv_strlcpy(s->fmt, t[i].fmt.name, sizeof s->fmt);
        else if (strcmp(s->fmt, t[i].fmt.name)) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s has %s", first, s->fmt);
            return tensor_fail(err, KV_EUNSUPPORTED, t[i].name, "HF output needs one format for every quantized "
                               "linear (%s, this one %s): use --pure or matching overrides", msg, t[i].fmt.name);
        }
    }
    if (!s->fmt[0]) {
        if (act) return kv_fail(err, KV_EINVAL, "HF output: --act %s without quantized weights", act);
        s->k = K_PLAIN;
        return KV_OK;
    }
    const int gptq = o && o->layout == KV_HF_GPTQ;
    if (kv_hf_int_parse(s->fmt, &s->in)) {
        if (gptq) {
            if (act) return kv_fail(err, KV_EUNSUPPORTED, "GPTQ checkpoints are weight-only: --act %s needs "
                                    "--out-format compressed-tensors", act);
            if (s->in.bits != 2 && s->in.bits != 4 && s->in.bits != 8)
                return kv_fail(err, KV_EUNSUPPORTED, "GPTQ output: %d-bit codes are not written (2, 4, 8 bits pack "
                               "whole codes into int32; 3-bit GPTQ packing straddles words)", s->in.bits);
            if (s->in.f32)
                return kv_fail(err, KV_EUNSUPPORTED, "GPTQ stores fp16 scales: use %s without _f32", s->fmt);
            s->k = K_GPTQ;
            return KV_OK;
        }
        if (s->act_fp8) return kv_fail(err, KV_EUNSUPPORTED, "--act fp8 goes with fp8_e4m3 weights, not %s", s->fmt);
        if (s->act_int8) {
            if (s->in.bits != 8 || s->in.asym)
                return kv_fail(err, KV_EUNSUPPORTED, "W8A8 (int-quantized) needs symmetric 8-bit weights "
                               "(int8_g0_sym, int8_g128_sym ...), not %s", s->fmt);
            s->k = K_CT_INT8;
            return KV_OK;
        }
        s->k = K_CT_PACK;
        return KV_OK;
    }
    if (gptq)
        return kv_fail(err, KV_EUNSUPPORTED, "GPTQ output holds integer formats int{2,4,8}_g{32,64,128,256,0}_sym or "
                       "_asym_zp, not %s", s->fmt);
    if (!strcmp(s->fmt, "fp8_e4m3")) {
        if (s->act_int8) return kv_fail(err, KV_EUNSUPPORTED, "--act int8 goes with int8 weights, not fp8_e4m3");
        s->k = K_CT_FP8;
        return KV_OK;
    }
    if (!strcmp(s->fmt, "nvfp4_ts")) {
        if (act) return kv_fail(err, KV_EUNSUPPORTED, "NVFP4 output is weight-only (NVFP4A16): NVFP4 activations need "
                                "calibrated input global scales kvant does not compute");
        s->k = K_CT_NVFP4;
        return KV_OK;
    }
    kv_format sf;
    if (kv_format_get(s->fmt, &sf, NULL) == KV_OK && sf.family == KV_FAM_INT)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s has no HF layout: asymmetric formats need integer zero points "
                       "(the _zp variant, e.g. int4_g128_asym_zp) and per-tensor groups (_gt_) are not stored", s->fmt);
    return kv_fail(err, KV_EUNSUPPORTED, "format %s has no HF layout kvant writes (integer int{n}_g*_sym / _asym_zp, "
                   "fp8_e4m3, nvfp4_ts)", s->fmt);
}

/* ---- integer rows: codes and block parameters ----------------------------------------------------------- */

typedef struct int_view {
    kv_hf_int in;
    int64_t cols, groups, group; /* group = cols for per-row scales */
    size_t row_bytes, sbytes;    /* scale set bytes (d [, min]) */
} int_view;

static int_view int_view_of(const kv_hf_int *in, int64_t cols) {
    int_view v = {*in, cols, 0, 0, 0, 0};
    v.group = in->group ? in->group : cols;
    v.groups = cols / v.group;
    v.sbytes = (size_t)(in->f32 ? 4 : 2) * (in->asym ? 2 : 1);
    v.row_bytes = in->group ? (size_t)v.groups * (v.sbytes + (size_t)in->group * (size_t)in->bits / 8)
                            : v.sbytes + (size_t)cols * (size_t)in->bits / 8;
    return v;
}

static const uint8_t *group_params(const int_view *v, const uint8_t *row, int64_t g) {
    return v->in.group ? row + (size_t)g * (v->sbytes + (size_t)v->in.group * (size_t)v->in.bits / 8) : row;
}

static uint32_t get_bits(const uint8_t *p, int64_t i, int w) {
    int64_t bit = i * w;
    const uint8_t *q = p + (bit >> 3);
    int nb = (int)(((bit & 7) + w + 7) >> 3);
    uint32_t x = 0;
    for (int k = 0; k < nb; k++) x |= (uint32_t)q[k] << (8 * k);
    return (x >> (bit & 7)) & ((1u << w) - 1u);
}

static uint32_t code_at(const int_view *v, const uint8_t *row, int64_t c) {
    int64_t g = c / v->group;
    return get_bits(group_params(v, row, g) + v->sbytes, v->in.group ? c % v->group : c, v->in.bits);
}

static float scale_at(const int_view *v, const uint8_t *row, int64_t g) {
    const uint8_t *p = group_params(v, row, g);
    return v->in.f32 ? kv_rd_f32(p) : kv_fp16_to_fp32(kv_rd_u16(p));
}

static uint16_t scale_bits16(const int_view *v, const uint8_t *row, int64_t g) { return kv_rd_u16(group_params(v, row, g)); }

/* The integer zero point: 2^(n-1) for sym; round(-min/d) for _zp (the encoder stored min = -d*z). */
static uint32_t zero_at(const int_view *v, const uint8_t *row, int64_t g) {
    uint32_t half = 1u << (v->in.bits - 1), qmax = (1u << v->in.bits) - 1u;
    if (!v->in.asym) return half;
    const uint8_t *p = group_params(v, row, g);
    float d = v->in.f32 ? kv_rd_f32(p) : kv_fp16_to_fp32(kv_rd_u16(p));
    float mn = v->in.f32 ? kv_rd_f32(p + 4) : kv_fp16_to_fp32(kv_rd_u16(p + 2));
    if (!(d != 0.0f)) return 0;
    float z = rintf(-mn / d);
    return z < 0.0f ? 0u : z > (float)qmax ? qmax : (uint32_t)z;
}

/* ---- output entries ---------------------------------------------------------------------------------------- */

typedef struct entry {
    char name[200];
    const char *dtype;
    int n_dims;
    int64_t shape[4];
    uint64_t nbytes;
    int64_t src;              /* index of the source tensor */
    int part;                 /* which piece of it (qweight, qzeros ...) */
    int shard;
} entry;

typedef struct plan {
    entry *e;
    int64_t n, cap;
    int n_shards;
    uint64_t total;
} plan;

static kv_status plan_add(plan *p, const char *base, const char *suffix, const char *dtype, int n_dims,
                          const int64_t *shape, uint64_t elem_bits, int64_t src, int part, kv_error *err) {
    if (p->n == p->cap) {
        int64_t cap = p->cap ? p->cap * 2 : 256;
        entry *g = realloc(p->e, (size_t)cap * sizeof *g);
        if (!g) return kv_fail(err, KV_ENOMEM, "out of memory");
        p->e = g;
        p->cap = cap;
    }
    entry *e = &p->e[p->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s%s", base, suffix);
    e->dtype = dtype;
    e->n_dims = n_dims;
    uint64_t nel = 1;
    for (int d = 0; d < n_dims; d++) {
        e->shape[d] = shape[d];
        nel *= (uint64_t)shape[d];
    }
    e->nbytes = nel * elem_bits / 8;
    e->src = src;
    e->part = part;
    return KV_OK;
}

enum { P_MAIN, P_QZEROS, P_SCALES, P_GIDX, P_SHAPE, P_ZP, P_GSCALE };

/* The HF module name of a canonical weight ("blk.0.attn_q.weight" -> "model.layers.0.self_attn.q_proj.") */
static kv_status hf_base(const char *canonical, char *base, size_t n, kv_error *err) {
    char hf[200];
    if (!kv_name_to_hf(canonical, hf, sizeof hf))
        return tensor_fail(err, KV_EUNSUPPORTED, canonical, "no Hugging Face name for this tensor%s%s", "", "");
    size_t l = strlen(hf);
    if (l < 7 || strcmp(hf + l - 7, ".weight")) {
        kv_strlcpy(base, hf, n);
        return KV_OK;
    }
    hf[l - 6] = 0; /* keep the dot */
    kv_strlcpy(base, hf, n);
    return KV_OK;
}

static kv_status plan_tensor(plan *p, const kv_hf_tensor *t, int64_t i, const scheme *s, kv_error *err) {
    char base[200];
    if (is_plain_type(t->fmt.type) || !is_linear_weight(t)) {
        char hf[200];
        if (!kv_name_to_hf(t->name, hf, sizeof hf))
            return tensor_fail(err, KV_EUNSUPPORTED, t->name, "no Hugging Face name for this tensor%s%s", "", "");
        return plan_add(p, hf, "", plain_dtype(t->fmt.type), t->n_dims, t->shape, t->fmt.type == KV_TYPE_F32 ? 32 : 16,
                        i, P_MAIN, err);
    }
    kv_status st = hf_base(t->name, base, sizeof base, err);
    if (st) return st;
    const int64_t rows = t->shape[0], cols = t->shape[1];
    switch (s->k) {
    case K_GPTQ: {
        int_view v = int_view_of(&s->in, cols);
        int64_t pf = 32 / s->in.bits;
        if (cols % pf || rows % pf)
            return tensor_fail(err, KV_EUNSUPPORTED, t->name, "GPTQ packs %s codes per int32 along both dimensions: "
                               "rows and columns must be multiples of it%s", s->in.bits == 2 ? "16" : s->in.bits == 4 ? "8" : "4", "");
        int64_t qw[2] = {cols / pf, rows}, qz[2] = {v.groups, rows / pf}, sc[2] = {v.groups, rows}, gi[1] = {cols};
        if ((st = plan_add(p, base, "qweight", "I32", 2, qw, 32, i, P_MAIN, err))) return st;
        if ((st = plan_add(p, base, "qzeros", "I32", 2, qz, 32, i, P_QZEROS, err))) return st;
        if ((st = plan_add(p, base, "scales", "F16", 2, sc, 16, i, P_SCALES, err))) return st;
        return plan_add(p, base, "g_idx", "I32", 1, gi, 32, i, P_GIDX, err);
    }
    case K_CT_PACK: {
        int_view v = int_view_of(&s->in, cols);
        int64_t wp[2] = {rows, (cols * s->in.bits + 31) / 32}, sc[2] = {rows, v.groups}, sh[1] = {2};
        int64_t zp[2] = {(rows * s->in.bits + 31) / 32, v.groups};
        if ((st = plan_add(p, base, "weight_packed", "I32", 2, wp, 32, i, P_MAIN, err))) return st;
        if ((st = plan_add(p, base, "weight_scale", s->in.f32 ? "F32" : "F16", 2, sc, s->in.f32 ? 32 : 16, i, P_SCALES, err))) return st;
        if ((st = plan_add(p, base, "weight_shape", "I64", 1, sh, 64, i, P_SHAPE, err))) return st;
        if (s->in.asym) st = plan_add(p, base, "weight_zero_point", "I32", 2, zp, 32, i, P_ZP, err);
        return st;
    }
    case K_CT_INT8: {
        int_view v = int_view_of(&s->in, cols);
        int64_t w[2] = {rows, cols}, sc[2] = {rows, v.groups};
        if ((st = plan_add(p, base, "weight", "I8", 2, w, 8, i, P_MAIN, err))) return st;
        return plan_add(p, base, "weight_scale", s->in.f32 ? "F32" : "F16", 2, sc, s->in.f32 ? 32 : 16, i, P_SCALES, err);
    }
    case K_CT_FP8: {
        int64_t w[2] = {rows, cols}, sc[2] = {rows, 1};
        if ((st = plan_add(p, base, "weight", "F8_E4M3", 2, w, 8, i, P_MAIN, err))) return st;
        return plan_add(p, base, "weight_scale", "F32", 2, sc, 32, i, P_SCALES, err);
    }
    case K_CT_NVFP4: {
        int64_t w[2] = {rows, cols / 2}, sc[2] = {rows, cols / 16}, g[1] = {1};
        if ((st = plan_add(p, base, "weight_packed", "U8", 2, w, 8, i, P_MAIN, err))) return st;
        if ((st = plan_add(p, base, "weight_scale", "F8_E4M3", 2, sc, 8, i, P_SCALES, err))) return st;
        return plan_add(p, base, "weight_global_scale", "F32", 1, g, 32, i, P_GSCALE, err);
    }
    default: break;
    }
    return kv_fail(err, KV_EINVAL, "internal: no layout");
}

/* ---- producing the bytes of one entry -------------------------------------------------------------------- */

static void put_u32(uint8_t *o, int64_t i, uint32_t v) { kv_wr_u32(o + 4 * i, v); }

static kv_status produce(const kv_hf_tensor *t, const scheme *s, const entry *e, uint8_t *o, kv_error *err) {
    const uint8_t *src = t->data;
    memset(o, 0, (size_t)e->nbytes);
    if (is_plain_type(t->fmt.type) || !is_linear_weight(t)) {
        memcpy(o, src, (size_t)e->nbytes);
        return KV_OK;
    }
    const int64_t rows = t->shape[0], cols = t->shape[1];
    const size_t rb = kv_format_row_bytes(&t->fmt, cols);
    if (s->k == K_GPTQ || s->k == K_CT_PACK || s->k == K_CT_INT8) {
        int_view v = int_view_of(&s->in, cols);
        if (v.row_bytes != rb) return tensor_fail(err, KV_EINVAL, t->name, "internal: row size of %s%s", t->fmt.name, "");
        const int b = s->in.bits;
        const int64_t pf = 32 / b;
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *row = src + (size_t)r * rb;
            switch (e->part) {
            case P_MAIN:
                if (s->k == K_GPTQ) /* qweight[k][r]: codes k*pf .. k*pf+pf-1 of column r */
                    for (int64_t k = 0; k < cols / pf; k++) {
                        uint32_t w = 0;
                        for (int64_t j = 0; j < pf; j++) w |= code_at(&v, row, k * pf + j) << (b * j);
                        put_u32(o, k * rows + r, w);
                    }
                else if (s->k == K_CT_PACK) { /* the row's codes as one dense little-endian bit stream */
                    uint8_t *dst = o + (size_t)r * (size_t)e->shape[1] * 4;
                    for (int64_t c = 0; c < cols; c++) {
                        uint64_t bit = (uint64_t)c * (uint64_t)b;
                        uint32_t code = code_at(&v, row, c);
                        for (int k = 0; k < b; k++)
                            if (code >> k & 1u) dst[(bit + (uint64_t)k) >> 3] |= (uint8_t)(1u << ((bit + (uint64_t)k) & 7));
                    }
                } else
                    for (int64_t c = 0; c < cols; c++) o[r * cols + c] = (uint8_t)(int8_t)((int)code_at(&v, row, c) - 128);
                break;
            case P_SCALES:
                for (int64_t g = 0; g < v.groups; g++) {
                    if (s->k == K_GPTQ) kv_wr_u16(o + 2 * (g * rows + r), scale_bits16(&v, row, g));
                    else if (s->in.f32) kv_wr_f32(o + 4 * (r * v.groups + g), scale_at(&v, row, g));
                    else kv_wr_u16(o + 2 * (r * v.groups + g), scale_bits16(&v, row, g));
                }
                break;
            case P_QZEROS: /* v1 (sym) stores zero - 1; v2 (asym) the zero itself */
                for (int64_t g = 0; g < v.groups; g++) {
                    uint32_t z = zero_at(&v, row, g) - (s->in.asym ? 0u : 1u);
                    z &= (1u << b) - 1u;
                    size_t at = 4 * (size_t)(g * (rows / pf) + r / pf);
                    kv_wr_u32(o + at, kv_rd_u32(o + at) | z << (b * (r % pf)));
                }
                break;
            case P_ZP: /* packed along the output dim: word w of column g holds rows' zero points as a bit stream */
                for (int64_t g = 0; g < v.groups; g++) {
                    uint32_t z = zero_at(&v, row, g);
                    uint64_t bit = (uint64_t)r * (uint64_t)b;
                    for (int k = 0; k < b; k++)
                        if (z >> k & 1u) {
                            uint64_t word = (bit + (uint64_t)k) >> 5, in_word = (bit + (uint64_t)k) & 31;
                            size_t at = 4 * (size_t)(word * (uint64_t)v.groups + (uint64_t)g);
                            kv_wr_u32(o + at, kv_rd_u32(o + at) | 1u << in_word);
                        }
                }
                break;
            default: break;
            }
        }
        if (e->part == P_GIDX)
            for (int64_t c = 0; c < cols; c++) put_u32(o, c, (uint32_t)(c / v.group));
        if (e->part == P_SHAPE) {
            int64_t sh[2] = {rows, cols};
            memcpy(o, sh, 16);
        }
        return KV_OK;
    }
    if (s->k == K_CT_FP8) { /* kvant fp8_e4m3 row: fp32 scale, then one e4m3fn byte per value */
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *row = src + (size_t)r * rb;
            if (e->part == P_MAIN) memcpy(o + r * cols, row + 4, (size_t)cols);
            else memcpy(o + 4 * r, row, 4);
        }
        return KV_OK;
    }
    if (s->k == K_CT_NVFP4) { /* nvfp4_ts row: fp32 global scale, blocks of [e4m3 scale, 8 bytes of E2M1 pairs] */
        float g0 = kv_rd_f32(src);
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *row = src + (size_t)r * rb;
            if (kv_rd_f32(row) != g0) return tensor_fail(err, KV_EFORMAT, t->name, "nvfp4_ts rows disagree on the global scale%s%s", "", "");
            for (int64_t b = 0; b < cols / 16; b++) {
                const uint8_t *blk = row + 4 + 9 * b;
                if (e->part == P_MAIN) memcpy(o + r * (cols / 2) + b * 8, blk + 1, 8);
                else if (e->part == P_SCALES) o[r * (cols / 16) + b] = blk[0];
            }
        }
        if (e->part == P_GSCALE) kv_wr_f32(o, g0);
        return KV_OK;
    }
    return kv_fail(err, KV_EINVAL, "internal: no layout");
}

/* ---- checks ------------------------------------------------------------------------------------------------ */

kv_status kv_hf_check(const kv_hparams *hp, const kv_hf_tensor *t, int64_t n, const kv_hf_write_opts *o,
                      kv_error *err) {
    (void)hp;
    scheme s;
    kv_status st = choose_scheme(t, n, o, &s, err);
    if (st) return st;
    plan p = {0};
    for (int64_t i = 0; i < n && !st; i++) {
        if (!is_plain_type(t[i].fmt.type) && is_linear_weight(&t[i]) && (s.k == K_CT_NVFP4 || s.k == K_CT_FP8) &&
            t[i].shape[1] % (s.k == K_CT_NVFP4 ? 16 : 1))
            st = tensor_fail(err, KV_EUNSUPPORTED, t[i].name, "NVFP4 needs rows that are multiples of 16%s%s", "", "");
        if (!st) st = plan_tensor(&p, &t[i], i, &s, err);
    }
    free(p.e);
    return st;
}

kv_status kv_hf_check_output_dir(const char *dir, kv_error *err) {
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        if (errno != ENOENT) {
            kv_fail(err, KV_EIO, "cannot use the output directory: %s", strerror(errno));
            kv_error_context(err, dir, -1, NULL);
            return KV_EIO;
        }
        char parent[1024];
        kv_strlcpy(parent, dir, sizeof parent);
        size_t l = strlen(parent);
        while (l > 1 && parent[l - 1] == '/') parent[--l] = 0;
        char *slash = strrchr(parent, '/');
        if (!slash) return KV_OK;
        if (slash == parent) slash[1] = 0;
        else *slash = 0;
        if (stat(parent, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            kv_fail(err, KV_ENOTFOUND, "the directory '%s' that should hold the output does not exist", parent);
            kv_error_context(err, dir, -1, NULL);
            return KV_ENOTFOUND;
        }
        return KV_OK;
    }
    if (!S_ISDIR(sb.st_mode)) {
        kv_fail(err, KV_EINVAL, "HF output goes to a directory, and this path is a file");
        kv_error_context(err, dir, -1, NULL);
        return KV_EINVAL;
    }
    DIR *d = opendir(dir);
    if (!d) {
        kv_fail(err, KV_EIO, "cannot read the output directory: %s", strerror(errno));
        kv_error_context(err, dir, -1, NULL);
        return KV_EIO;
    }
    struct dirent *de;
    int empty = 1;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
    closedir(d);
    if (!empty) {
        kv_fail(err, KV_EINVAL, "the output directory exists and is not empty (kvant does not overwrite a model "
                "directory: remove it or choose another)");
        kv_error_context(err, dir, -1, NULL);
        return KV_EINVAL;
    }
    return KV_OK;
}

/* ---- JSON -------------------------------------------------------------------------------------------------- */


static void jw_kv_str(kv_jw *w, const char *k, const char *v) { kv_jw_key(w, k); kv_jw_str(w, v); }
static void jw_kv_int(kv_jw *w, const char *k, int64_t v) { kv_jw_key(w, k); kv_jw_int(w, v); }
static void jw_kv_bool(kv_jw *w, const char *k, int v) { kv_jw_key(w, k); kv_jw_bool(w, v); }
static void jw_kv_null(kv_jw *w, const char *k) { kv_jw_key(w, k); kv_jw_null(w); }

/* compressed-tensors QuantizationArgs */
static void ct_args(kv_jw *w, int bits, const char *type, int sym, const char *strategy, int group, int dynamic) {
    kv_jw_obj_begin(w);
    jw_kv_int(w, "num_bits", bits);
    jw_kv_str(w, "type", type);
    jw_kv_bool(w, "symmetric", sym);
    jw_kv_str(w, "strategy", strategy);
    if (group > 0) jw_kv_int(w, "group_size", group);
    else jw_kv_null(w, "group_size");
    jw_kv_bool(w, "dynamic", dynamic);
    jw_kv_null(w, "actorder");
    jw_kv_str(w, "observer", dynamic ? "memoryless_minmax" : "minmax");
    kv_jw_obj_end(w);
}

static const char *ct_format(kind k) {
    return k == K_CT_PACK ? "pack-quantized" : k == K_CT_INT8 ? "int-quantized" : k == K_CT_FP8 ? "float-quantized"
                                                                                              : "nvfp4-pack-quantized";
}

static void quant_config(kv_jw *w, const scheme *s, const kv_hf_write_opts *o) {
    kv_jw_obj_begin(w);
    if (s->k == K_GPTQ) {
        jw_kv_str(w, "quant_method", "gptq");
        jw_kv_int(w, "bits", s->in.bits);
        jw_kv_int(w, "group_size", s->in.group ? s->in.group : -1);
        jw_kv_bool(w, "desc_act", 0);
        jw_kv_bool(w, "sym", !s->in.asym);
        jw_kv_bool(w, "static_groups", 0);
        jw_kv_bool(w, "true_sequential", 1);
        jw_kv_str(w, "checkpoint_format", s->in.asym ? "gptq_v2" : "gptq");
        jw_kv_str(w, "pack_dtype", "int32");
        jw_kv_bool(w, "lm_head", 0);
    } else {
        jw_kv_str(w, "quant_method", "compressed-tensors");
        jw_kv_str(w, "format", ct_format(s->k));
        jw_kv_str(w, "quantization_status", "compressed");
        kv_jw_key(w, "config_groups");
        kv_jw_obj_begin(w);
        kv_jw_key(w, "group_0");
        kv_jw_obj_begin(w);
        kv_jw_key(w, "targets");
        kv_jw_arr_begin(w);
        kv_jw_str(w, "Linear");
        kv_jw_arr_end(w);
        kv_jw_key(w, "weights");
        if (s->k == K_CT_FP8) ct_args(w, 8, "float", 1, "channel", 0, 0);
        else if (s->k == K_CT_NVFP4) {
            kv_jw_obj_begin(w);
            jw_kv_int(w, "num_bits", 4);
            jw_kv_str(w, "type", "float");
            jw_kv_bool(w, "symmetric", 1);
            jw_kv_str(w, "strategy", "tensor_group");
            jw_kv_int(w, "group_size", 16);
            jw_kv_bool(w, "dynamic", 0);
            jw_kv_str(w, "observer", "minmax");
            jw_kv_str(w, "scale_dtype", "torch.float8_e4m3fn");
            kv_jw_obj_end(w);
        } else ct_args(w, s->in.bits, "int", !s->in.asym, s->in.group ? "group" : "channel", s->in.group, 0);
        kv_jw_key(w, "input_activations");
        if (s->act_int8) ct_args(w, 8, "int", 1, "token", 0, 1);
        else if (s->act_fp8) ct_args(w, 8, "float", 1, "token", 0, 1);
        else kv_jw_null(w);
        jw_kv_null(w, "output_activations");
        jw_kv_str(w, "format", ct_format(s->k));
        kv_jw_obj_end(w);
        kv_jw_obj_end(w);
        kv_jw_key(w, "ignore");
        kv_jw_arr_begin(w);
        kv_jw_str(w, "lm_head");
        kv_jw_arr_end(w);
        jw_kv_null(w, "kv_cache_scheme");
    }
    jw_kv_str(w, "kvant_version", KV_VERSION_STRING);
    if (o && o->recipe) jw_kv_str(w, "kvant_recipe", o->recipe);
    jw_kv_str(w, "kvant_format", s->fmt);
    kv_jw_obj_end(w);
}

static const char *k_archs[][2] = {{"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};

/* config.json from the hyper-parameters (sources that are not HF directories). */
static void config_from_hparams(kv_jw *w, const kv_hparams *hp, const char *dtype) {
    const char *arch = "LlamaForCausalLM";
    for (size_t i = 0; i < KV_ARRAY_LEN(k_archs); i++)
        if (!strcmp(hp->arch, k_archs[i][0])) arch = k_archs[i][1];
    kv_jw_key(w, "architectures");
    kv_jw_arr_begin(w);
    kv_jw_str(w, arch);
    kv_jw_arr_end(w);
    jw_kv_str(w, "model_type", hp->arch[0] ? hp->arch : "llama");
    jw_kv_int(w, "vocab_size", hp->n_vocab);
    jw_kv_int(w, "hidden_size", hp->n_embd);
    jw_kv_int(w, "intermediate_size", hp->n_ff);
    jw_kv_int(w, "num_hidden_layers", hp->n_layer);
    jw_kv_int(w, "num_attention_heads", hp->n_head);
    jw_kv_int(w, "num_key_value_heads", hp->n_head_kv);
    jw_kv_int(w, "head_dim", hp->head_dim);
    jw_kv_int(w, "max_position_embeddings", hp->n_ctx_train);
    kv_jw_key(w, "rms_norm_eps");
    kv_jw_num(w, hp->norm_eps);
    kv_jw_key(w, "rope_theta");
    kv_jw_num(w, hp->rope_theta);
    jw_kv_bool(w, "tie_word_embeddings", hp->tie_embeddings);
    if (hp->bos_id >= 0) jw_kv_int(w, "bos_token_id", hp->bos_id);
    if (hp->eos_id >= 0) jw_kv_int(w, "eos_token_id", hp->eos_id);
    jw_kv_str(w, "hidden_act", "silu");
    jw_kv_str(w, "torch_dtype", dtype);
}

/* ---- files ------------------------------------------------------------------------------------------------- */

static kv_status write_file(const char *dir, const char *name, const void *data, size_t n, kv_error *err) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    kv_outfile *f;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st) return st;
    if ((st = kv_outfile_write(f, data, n, err))) {
        kv_outfile_abort(f);
        return st;
    }
    return kv_outfile_commit(f, err);
}

static kv_status copy_file(const char *from, const char *dir, const char *name, kv_error *err) {
    kv_mapped m;
    kv_status st = kv_map_file(from, &m, err);
    if (st) return st;
    st = write_file(dir, name, m.data, m.size, err);
    kv_unmap_file(&m);
    return st;
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Removes the temporary directory and what kvant wrote into it (a failed run leaves nothing). */
static void remove_tmp_dir(const char *tmp) {
    DIR *d = opendir(tmp);
    if (d) {
        struct dirent *de;
        char path[2048];
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                snprintf(path, sizeof path, "%s/%s", tmp, de->d_name);
                unlink(path);
            }
        closedir(d);
    }
    rmdir(tmp);
}

static kv_status mem_stream(char **buf, size_t *len, FILE **f, kv_error *err) {
    *buf = NULL;
    *len = 0;
    *f = open_memstream(buf, len);
    return *f ? KV_OK : kv_fail(err, KV_ENOMEM, "out of memory");
}

static kv_status write_config(const char *tmp, const kv_hparams *hp, const scheme *s, const kv_hf_write_opts *o,
                              const char *dtype, kv_error *err) {
    kv_json_doc *doc = NULL;
    char src[2048];
    kv_status st = KV_OK;
    if (o && o->source_dir) {
        snprintf(src, sizeof src, "%s/config.json", o->source_dir);
        if (exists(src) && (st = kv_json_parse_file(src, 64u << 20, &doc, err))) return st;
    }
    char *buf;
    size_t len;
    FILE *f;
    if ((st = mem_stream(&buf, &len, &f, err))) {
        kv_json_free(doc);
        return st;
    }
    kv_jw w;
    kv_jw_init(&w, f, 1);
    kv_jw_obj_begin(&w);
    const kv_json *root = doc ? kv_json_root(doc) : NULL;
    if (root && root->type == KV_JSON_OBJECT) {
        for (uint64_t i = 0; i < root->len; i++) {
            const char *k = root->u.items[i].key;
            if (!strcmp(k, "quantization_config") || !strcmp(k, "torch_dtype") || !strcmp(k, "dtype")) continue;
            kv_jw_key(&w, k);
            kv_json_write(&w, &root->u.items[i]);
        }
        jw_kv_str(&w, "torch_dtype", dtype);
    } else config_from_hparams(&w, hp, dtype);
    if (s->k != K_PLAIN) {
        kv_jw_key(&w, "quantization_config");
        quant_config(&w, s, o);
    }
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
    fclose(f);
    kv_json_free(doc);
    st = buf ? write_file(tmp, "config.json", buf, len, err) : kv_fail(err, KV_ENOMEM, "out of memory");
    free(buf);
    return st;
}

static const char *const k_copied[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "added_tokens.json", "generation_config.json",
                                       "chat_template.jinja", "chat_template.json"};

static kv_status copy_side_files(const char *tmp, const kv_hparams *hp, const kv_hf_write_opts *o, int64_t *copied,
                                 kv_error *err) {
    int have_gen = 0;
    for (size_t i = 0; o && o->source_dir && i < KV_ARRAY_LEN(k_copied); i++) {
        char from[2048];
        snprintf(from, sizeof from, "%s/%s", o->source_dir, k_copied[i]);
        if (!exists(from)) continue;
        kv_status st = copy_file(from, tmp, k_copied[i], err);
        if (st) return st;
        (*copied)++;
        have_gen |= !strcmp(k_copied[i], "generation_config.json");
    }
    if (have_gen) return KV_OK;
    char gen[256];
    int l = snprintf(gen, sizeof gen, "{\n  \"_from_model_config\": true");
    if (hp->bos_id >= 0) l += snprintf(gen + l, sizeof gen - (size_t)l, ",\n  \"bos_token_id\": %d", (int)hp->bos_id);
    if (hp->eos_id >= 0) l += snprintf(gen + l, sizeof gen - (size_t)l, ",\n  \"eos_token_id\": %d", (int)hp->eos_id);
    l += snprintf(gen + l, sizeof gen - (size_t)l, "\n}\n");
    return write_file(tmp, "generation_config.json", gen, (size_t)l, err);
}

static void shard_name(char *out, size_t n, int shard, int n_shards) {
    if (n_shards == 1) snprintf(out, n, "model.safetensors");
    else snprintf(out, n, "model-%05d-of-%05d.safetensors", shard + 1, n_shards);
}

static kv_status write_shard(const char *tmp, const plan *p, int shard, const kv_hf_tensor *t, const scheme *s,
                             const kv_hf_write_opts *o, int64_t *done, kv_error *err) {
    char *h;
    size_t hl;
    FILE *f;
    kv_status st = mem_stream(&h, &hl, &f, err);
    if (st) return st;
    kv_jw w;
    kv_jw_init(&w, f, 0);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "__metadata__");
    kv_jw_obj_begin(&w);
    jw_kv_str(&w, "format", "pt");
    kv_jw_obj_end(&w);
    uint64_t off = 0;
    for (int64_t i = 0; i < p->n; i++) {
        const entry *e = &p->e[i];
        if (e->shard != shard) continue;
        kv_jw_key(&w, e->name);
        kv_jw_obj_begin(&w);
        jw_kv_str(&w, "dtype", e->dtype);
        kv_jw_key(&w, "shape");
        kv_jw_arr_begin(&w);
        for (int d = 0; d < e->n_dims; d++) kv_jw_int(&w, e->shape[d]);
        kv_jw_arr_end(&w);
        kv_jw_key(&w, "data_offsets");
        kv_jw_arr_begin(&w);
        kv_jw_int(&w, (int64_t)off);
        kv_jw_int(&w, (int64_t)(off + e->nbytes));
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        off += e->nbytes;
    }
    kv_jw_obj_end(&w);
    fclose(f);
    if (!h) return kv_fail(err, KV_ENOMEM, "out of memory");
    while (hl % 8) { /* pad the header with spaces so that the data starts 8-byte aligned */
        char *g = realloc(h, hl + 1);
        if (!g) { free(h); return kv_fail(err, KV_ENOMEM, "out of memory"); }
        h = g;
        h[hl++] = ' ';
    }
    char name[64], path[2048];
    shard_name(name, sizeof name, shard, p->n_shards);
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    kv_outfile *of;
    if ((st = kv_outfile_open(path, &of, err))) { free(h); return st; }
    uint64_t hlen = hl;
    st = kv_outfile_write(of, &hlen, 8, err);
    if (!st) st = kv_outfile_write(of, h, hl, err);
    free(h);
    uint8_t *buf = NULL;
    for (int64_t i = 0; i < p->n && !st; i++) {
        const entry *e = &p->e[i];
        if (e->shard != shard) continue;
        buf = kv_malloc(e->nbytes ? (size_t)e->nbytes : 1, err);
        if (!buf) { st = KV_ENOMEM; break; }
        st = produce(&t[e->src], s, e, buf, err);
        if (!st) st = kv_outfile_write(of, buf, (size_t)e->nbytes, err);
        free(buf);
        if (i + 1 == p->n || p->e[i + 1].src != e->src) {
            (*done)++;
            if (o && o->progress) kv_progress_update(o->progress, *done);
        }
    }
    if (st) {
        kv_outfile_abort(of);
        return st;
    }
    return kv_outfile_commit(of, err);
}

static kv_status write_index(const char *tmp, const plan *p, kv_error *err) {
    char *buf;
    size_t len;
    FILE *f;
    kv_status st = mem_stream(&buf, &len, &f, err);
    if (st) return st;
    kv_jw w;
    kv_jw_init(&w, f, 1);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "metadata");
    kv_jw_obj_begin(&w);
    jw_kv_int(&w, "total_size", (int64_t)p->total);
    kv_jw_obj_end(&w);
    kv_jw_key(&w, "weight_map");
    kv_jw_obj_begin(&w);
    for (int64_t i = 0; i < p->n; i++) {
        char name[64];
        shard_name(name, sizeof name, p->e[i].shard, p->n_shards);
        jw_kv_str(&w, p->e[i].name, name);
    }
    kv_jw_obj_end(&w);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
    fclose(f);
    st = buf ? write_file(tmp, "model.safetensors.index.json", buf, len, err) : kv_fail(err, KV_ENOMEM, "out of memory");
    free(buf);
    return st;
}

kv_status kv_hf_write(const char *dir_in, const kv_hparams *hp, const kv_hf_tensor *t, int64_t n,
                      const kv_hf_write_opts *o, kv_hf_write_report *rep, kv_error *err) {
    kv_hf_write_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    char dir[1024];
    kv_strlcpy(dir, dir_in, sizeof dir);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = 0;
    scheme s;
    kv_status st = choose_scheme(t, n, o, &s, err);
    if (st) return st;
    if ((st = kv_hf_check_output_dir(dir, err))) return st;
    plan p = {0};
    for (int64_t i = 0; i < n && !st; i++) st = plan_tensor(&p, &t[i], i, &s, err);
    if (st) { free(p.e); return st; }
    /* shards: whole source tensors in order, a new shard when the next would pass the limit */
    const uint64_t limit = o && o->max_shard_bytes ? o->max_shard_bytes : DEFAULT_SHARD_BYTES;
    uint64_t in_shard = 0;
    int shard = 0;
    for (int64_t i = 0; i < p.n;) {
        int64_t j = i;
        uint64_t sz = 0;
        while (j < p.n && p.e[j].src == p.e[i].src) sz += p.e[j++].nbytes;
        if (in_shard > 0 && in_shard + sz > limit) { shard++; in_shard = 0; }
        for (int64_t k = i; k < j; k++) p.e[k].shard = shard;
        in_shard += sz;
        p.total += sz;
        i = j;
    }
    p.n_shards = shard + 1;
    /* the plain tensors' dtype names the checkpoint's torch_dtype */
    const char *dtype = "bfloat16";
    for (int64_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, "token_embd.weight"))
            dtype = t[i].fmt.type == KV_TYPE_F16 ? "float16" : t[i].fmt.type == KV_TYPE_F32 ? "float32" : "bfloat16";
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", dir);
    if (!mkdtemp(tmp)) {
        free(p.e);
        kv_fail(err, KV_EIO, "cannot create a temporary directory next to the output: %s", strerror(errno));
        kv_error_context(err, dir, -1, NULL);
        return KV_EIO;
    }
    chmod(tmp, 0755);
    int64_t done = 0;
    for (int sh = 0; sh < p.n_shards && !st; sh++) st = write_shard(tmp, &p, sh, t, &s, o, &done, err);
    if (!st && p.n_shards > 1) st = write_index(tmp, &p, err);
    if (!st) st = write_config(tmp, hp, &s, o, dtype, err);
    if (!st) st = copy_side_files(tmp, hp, o, &rep->n_files_copied, err);
    if (!st) {
        rmdir(dir); /* an empty directory (checked above) is replaced */
        if (rename(tmp, dir) != 0) {
            st = kv_fail(err, KV_EIO, "cannot rename the temporary directory to the output: %s", strerror(errno));
            kv_error_context(err, dir, -1, NULL);
        }
    }
    if (st) remove_tmp_dir(tmp);
    if (!st) {
        rep->n_shards = p.n_shards;
        rep->tensor_bytes = p.total;
        if (s.k == K_GPTQ) {
            kv_strlcpy(rep->quant_method, "gptq", sizeof rep->quant_method);
            kv_strlcpy(rep->format, s.in.asym ? "gptq_v2" : "gptq", sizeof rep->format);
        } else if (s.k != K_PLAIN) {
            kv_strlcpy(rep->quant_method, "compressed-tensors", sizeof rep->quant_method);
            kv_strlcpy(rep->format, ct_format(s.k), sizeof rep->format);
        }
    }
    free(p.e);
    return st;
}
