/* hf_quant_read.c — reading quantized Hugging Face checkpoints (GPTQ and compressed-tensors, the layouts of
 * src/io/hf_write.c; the sources are cited there). Each quantized linear's pieces (qweight/qzeros/scales/g_idx,
 * weight_packed/weight_scale/weight_zero_point/weight_shape, ...) become one kvant tensor in a kvant format whose
 * decoding gives the loader's dequantized weight: d*(q - z) as int{n}_g{G}_sym (fp16 scales, exact) or
 * int{n}_g{G}_{sym|asym}_f32 (min = -d*z), fp8_e4m3 and nvfp4_ts rows as they are; GPTQ with a permuted g_idx
 * (desc_act) is dequantized to f32. Memory: the packed size of the model. */
#include "io/hf_quant.h"
#include "io/model_file.h"
#include <math.h>
#include <stdio.h>

typedef struct qc {
    int gptq;
    char ct_format[40];
    int bits, group, sym;     /* GPTQ; compressed-tensors weights */
    int gptq_v1;
    char wtype[8];            /* compressed-tensors weights.type: "int", "float" */
    char strategy[16];
} qc;

static kv_status cfg_err(kv_error *err, const char *path, const kv_json *at, const char *msg, const char *a) {
    kv_fail(err, KV_EUNSUPPORTED, msg, a);
    kv_error_context(err, path, at ? (int64_t)at->offset : -1, NULL);
    return KV_EUNSUPPORTED;
}

static const kv_tensor *find_src(const kv_model_file *mf, const char *name) {
    for (int64_t i = 0; i < mf->n_tensors; i++)
        if (!strcmp(mf->tensors[i].src_name, name)) return &mf->tensors[i];
    return NULL;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static kv_status piece_fail(kv_error *err, const kv_model_file *mf, const kv_tensor *t, const char *what) {
    kv_fail(err, KV_EFORMAT, "%s", what);
    kv_error_context(err, mf->maps[t ? t->file_index : 0].path, t ? (int64_t)t->offset : -1, t ? t->src_name : NULL);
    return KV_EFORMAT;
}

/* A piece of a quantized module: present, of the given element width, with the expected shape. */
static kv_status need(const kv_model_file *mf, const char *base, const char *suffix, int n_dims, const int64_t *shape,
                      int elem_bytes, const kv_tensor **out, kv_error *err) {
    char name[256];
    snprintf(name, sizeof name, "%s%s", base, suffix);
    const kv_tensor *t = find_src(mf, name);
    if (!t) {
        kv_fail(err, KV_ENOTFOUND, "quantized module %s has no tensor %s", base, name);
        kv_error_context(err, mf->path, -1, name);
        return KV_ENOTFOUND;
    }
    uint64_t nel = 1;
    for (int d = 0; d < n_dims; d++) nel *= (uint64_t)shape[d];
    int ok = t->n_dims == n_dims && t->nbytes == nel * (uint64_t)elem_bytes;
    for (int d = 0; ok && d < n_dims; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        char msg[160];
        snprintf(msg, sizeof msg, "unexpected shape or dtype for %s (expected %d-D, %llu elements of %d bytes)", suffix,
                 n_dims, (unsigned long long)nel, elem_bytes);
        return piece_fail(err, mf, t, msg);
    }
    *out = t;
    return KV_OK;
}

/* A scale value of any float dtype (F16, BF16, F32). */
static float scale_value(const kv_tensor *t, int64_t i) {
    const uint8_t *p = t->data;
    if (t->type == KV_TYPE_F32) return kv_rd_f32(p + 4 * i);
    if (t->type == KV_TYPE_BF16) return kv_bf16_to_fp32(kv_rd_u16(p + 2 * i));
    return kv_fp16_to_fp32(kv_rd_u16(p + 2 * i));
}

static int is_float_type(uint32_t t) { return t == KV_TYPE_F32 || t == KV_TYPE_F16 || t == KV_TYPE_BF16; }

static void put_bits(uint8_t *p, int64_t i, int w, uint32_t code) {
    int64_t bit = i * w;
    for (int k = 0; k < w; k++)
        if (code >> k & 1u) p[(bit + k) >> 3] |= (uint8_t)(1u << ((bit + k) & 7));
}

static uint32_t stream_get(const uint8_t *p, int64_t i, int w) {
    uint32_t v = 0;
    int64_t bit = i * w;
    for (int k = 0; k < w; k++) v |= (uint32_t)(p[(bit + k) >> 3] >> ((bit + k) & 7) & 1u) << k;
    return v;
}

/* The kvant tensor replacing a module: canonical name of base + "weight", format, owned rows. */
typedef struct built {
    char hf_name[200];
    int64_t rows, cols;
    kv_format fmt;
    uint8_t *data;
    uint64_t nbytes;
    const kv_tensor *anchor; /* the main piece (offset, file) */
} built;

/* int rows from codes c(r, col), scale d(r, g) and zero z(r, g), in int{b}_g{G}_{sym|asym}_f32 (or _sym with fp16
 * scales when exact16). */
typedef struct int_src {
    int bits, group;          /* group = cols for per-row */
    int sym, exact16;
    uint32_t (*code)(const void *u, int64_t r, int64_t c);
    float (*scale)(const void *u, int64_t r, int64_t g);
    uint16_t (*scale16)(const void *u, int64_t r, int64_t g);
    uint32_t (*zero)(const void *u, int64_t r, int64_t g);
    const void *u;
} int_src;

static kv_status build_int(kv_model_file *mf, built *b, const int_src *s, kv_error *err) {
    char name[48], g_txt[8];
    int per_row = s->group == b->cols;
    if (per_row && b->cols % 8) return kv_fail(err, KV_EUNSUPPORTED, "per-channel rows of %lld are not a multiple of 8", (long long)b->cols);
    if (per_row) snprintf(g_txt, sizeof g_txt, "0");
    else snprintf(g_txt, sizeof g_txt, "%d", s->group);
    snprintf(name, sizeof name, "int%d_g%s_%s%s", s->bits, g_txt, s->sym ? "sym" : "asym", s->exact16 ? "" : "_f32");
    kv_status st = kv_format_get(name, &b->fmt, err);
    if (st) return st;
    size_t rb = kv_format_row_bytes(&b->fmt, b->cols);
    if (!rb) return kv_fail(err, KV_EUNSUPPORTED, "rows of %lld do not fit %s", (long long)b->cols, name);
    b->nbytes = (uint64_t)rb * (uint64_t)b->rows;
    b->data = kv_mf_alloc(mf, (size_t)b->nbytes, err);
    if (!b->data) return KV_ENOMEM;
    memset(b->data, 0, (size_t)b->nbytes);
    const size_t sb = (size_t)(s->exact16 ? 2 : 4) * (s->sym ? 1 : 2);
    const int64_t groups = b->cols / s->group;
    const uint32_t half = 1u << (s->bits - 1);
    for (int64_t r = 0; r < b->rows; r++) {
        uint8_t *row = b->data + (size_t)r * rb;
        for (int64_t g = 0; g < groups; g++) {
            uint8_t *blk = per_row ? row : row + (size_t)g * (sb + (size_t)s->group * (size_t)s->bits / 8);
            uint32_t z = s->zero(s->u, r, g);
            if (s->exact16) kv_wr_u16(blk, s->scale16(s->u, r, g));
            else {
                float d = s->scale(s->u, r, g);
                kv_wr_f32(blk, d);
                if (!s->sym) kv_wr_f32(blk + 4, -d * (float)z);
            }
            for (int64_t i = 0; i < s->group; i++) {
                uint32_t c = s->code(s->u, r, g * s->group + i);
                if (s->sym) c = (uint32_t)((int64_t)c - (int64_t)z + (int64_t)half); /* z == half: unchanged */
                put_bits(blk + sb, per_row ? g * s->group + i : i, s->bits, c);
            }
        }
    }
    return KV_OK;
}

/* ---- GPTQ -------------------------------------------------------------------------------------------------- */

typedef struct gptq_u {
    const kv_tensor *qw, *qz, *sc, *gi;
    int bits, pf;
    int64_t rows, groups;
    int v1;
} gptq_u;

static uint32_t gptq_code(const void *u_, int64_t r, int64_t c) {
    const gptq_u *u = u_;
    uint32_t w = kv_rd_u32((const uint8_t *)u->qw->data + 4 * ((c / u->pf) * u->rows + r));
    return (w >> (u->bits * (c % u->pf))) & ((1u << u->bits) - 1u);
}
static float gptq_scale(const void *u_, int64_t r, int64_t g) { const gptq_u *u = u_; return scale_value(u->sc, g * u->rows + r); }
static uint16_t gptq_scale16(const void *u_, int64_t r, int64_t g) {
    const gptq_u *u = u_;
    return kv_rd_u16((const uint8_t *)u->sc->data + 2 * (g * u->rows + r));
}
static uint32_t gptq_zero(const void *u_, int64_t r, int64_t g) {
    const gptq_u *u = u_;
    uint32_t w = kv_rd_u32((const uint8_t *)u->qz->data + 4 * (g * (u->rows / u->pf) + r / u->pf));
    uint32_t z = (w >> (u->bits * (r % u->pf))) & ((1u << u->bits) - 1u);
    return u->v1 ? (z + 1u) & ((1u << u->bits) - 1u) : z; /* v1 stores zero - 1 */
}

static kv_status build_gptq(kv_model_file *mf, const qc *q, const char *base, built *b, kv_error *err) {
    char name[256];
    snprintf(name, sizeof name, "%sqweight", base);
    const kv_tensor *qw = find_src(mf, name);
    if (qw->n_dims != 2 || qw->type != KV_TYPE_I32) return piece_fail(err, mf, qw, "qweight must be a 2-D int32 tensor");
    gptq_u u = {0};
    u.bits = q->bits;
    u.pf = 32 / q->bits;
    u.v1 = q->gptq_v1;
    const int64_t cols = qw->shape[0] * u.pf, rows = qw->shape[1];
    const int64_t group = q->group > 0 ? q->group : cols;
    if (cols % group) return piece_fail(err, mf, qw, "input features are not a multiple of group_size");
    u.rows = rows;
    u.groups = cols / group;
    u.qw = qw;
    int64_t qz_shape[2] = {u.groups, rows / u.pf}, sc_shape[2] = {u.groups, rows}, gi_shape[1] = {cols};
    kv_status st = need(mf, base, "qzeros", 2, qz_shape, 4, &u.qz, err);
    if (!st) {
        snprintf(name, sizeof name, "%sscales", base);
        const kv_tensor *sc = find_src(mf, name);
        if (!sc || !is_float_type(sc->type)) st = piece_fail(err, mf, sc, "scales must be a float tensor");
        else st = need(mf, base, "scales", 2, sc_shape, sc->type == KV_TYPE_F32 ? 4 : 2, &u.sc, err);
    }
    snprintf(name, sizeof name, "%sg_idx", base);
    if (!st && find_src(mf, name)) st = need(mf, base, "g_idx", 1, gi_shape, 4, &u.gi, err);
    if (st) return st;
    b->rows = rows;
    b->cols = cols;
    b->anchor = qw;
    int trivial = 1, sym = 1;
    for (int64_t c = 0; u.gi && c < cols && trivial; c++)
        trivial = kv_rd_u32((const uint8_t *)u.gi->data + 4 * c) == (uint32_t)(c / group);
    for (int64_t g = 0; g < u.groups && sym; g++)
        for (int64_t r = 0; r < rows && sym; r++) sym = gptq_zero(&u, r, g) == 1u << (q->bits - 1);
    int kvant_group = group == cols || group == 32 || group == 64 || group == 128 || group == 256;
    if (trivial && kvant_group) {
        int_src s = {q->bits, (int)group, sym, sym && u.sc->type == KV_TYPE_F16, gptq_code, gptq_scale, gptq_scale16,
                     gptq_zero, &u};
        return build_int(mf, b, &s, err);
    }
    /* a permuted g_idx (desc_act) or a group kvant has no format for: f32 weights */
    if ((st = kv_format_get("f32", &b->fmt, err))) return st;
    b->nbytes = (uint64_t)rows * (uint64_t)cols * 4;
    b->data = kv_mf_alloc(mf, (size_t)b->nbytes, err);
    if (!b->data) return KV_ENOMEM;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            int64_t g = u.gi ? (int64_t)kv_rd_u32((const uint8_t *)u.gi->data + 4 * c) : c / group;
            if (g < 0 || g >= u.groups) return piece_fail(err, mf, u.gi, "g_idx names a group that does not exist");
            float w = gptq_scale(&u, r, g) * ((float)gptq_code(&u, r, c) - (float)gptq_zero(&u, r, g));
            kv_wr_f32(b->data + 4 * (r * cols + c), w);
        }
    return KV_OK;
}

/* ---- compressed-tensors -------------------------------------------------------------------------------------- */

typedef struct ct_u {
    const kv_tensor *w, *sc, *zp;
    int bits, packed;
    int64_t rows, cols, groups, words;
} ct_u;

static uint32_t ct_code(const void *u_, int64_t r, int64_t c) {
    const ct_u *u = u_;
    if (u->packed) return stream_get((const uint8_t *)u->w->data + 4 * (size_t)(r * u->words), c, u->bits);
    return (uint32_t)((int)((const int8_t *)u->w->data)[r * u->cols + c] + 128);
}
static float ct_scale(const void *u_, int64_t r, int64_t g) { const ct_u *u = u_; return scale_value(u->sc, r * u->groups + g); }
static uint16_t ct_scale16(const void *u_, int64_t r, int64_t g) { (void)u_; (void)r; (void)g; return 0; }
static uint32_t ct_zero(const void *u_, int64_t r, int64_t g) {
    const ct_u *u = u_;
    if (!u->zp) return 1u << (u->bits - 1);
    /* packed along dim 0: element (r, g) is bit stream position r of column g, words [word][g] */
    uint32_t v = 0;
    int64_t bit = r * u->bits;
    for (int k = 0; k < u->bits; k++) {
        int64_t word = (bit + k) >> 5;
        uint32_t w = kv_rd_u32((const uint8_t *)u->zp->data + 4 * (size_t)(word * u->groups + g));
        v |= (w >> ((bit + k) & 31) & 1u) << k;
    }
    return v;
}

static kv_status build_ct(kv_model_file *mf, const qc *q, const char *base, built *b, kv_error *err) {
    char name[256];
    kv_status st;
    const kv_tensor *sc = NULL;
    snprintf(name, sizeof name, "%sweight_scale", base);
    sc = find_src(mf, name);
    if (!sc) return cfg_err(err, mf->path, NULL, "quantized module %s has no weight_scale", base);
    if (!strcmp(q->wtype, "int")) {
        ct_u u = {0};
        u.bits = q->bits;
        snprintf(name, sizeof name, "%sweight_packed", base);
        const kv_tensor *w = find_src(mf, name);
        if (w) {
            const kv_tensor *shape;
            int64_t sh_shape[1] = {2};
            if ((st = need(mf, base, "weight_shape", 1, sh_shape, 8, &shape, err))) return st;
            const int64_t *dims = shape->data;
            int64_t d0, d1;
            memcpy(&d0, dims, 8);
            memcpy(&d1, (const uint8_t *)shape->data + 8, 8);
            u.rows = d0;
            u.cols = d1;
            u.words = (u.cols * u.bits + 31) / 32;
            u.packed = 1;
            int64_t wp[2] = {u.rows, u.words};
            if (u.rows <= 0 || u.cols <= 0 || (st = need(mf, base, "weight_packed", 2, wp, 4, &u.w, err)))
                return u.rows <= 0 || u.cols <= 0 ? piece_fail(err, mf, shape, "weight_shape must be positive") : st;
        } else {
            snprintf(name, sizeof name, "%sweight", base);
            w = find_src(mf, name);
            if (!w || w->n_dims != 2 || w->nbytes != (uint64_t)(w->shape[0] * w->shape[1]) || q->bits != 8)
                return piece_fail(err, mf, w, "int-quantized weights must be a 2-D int8 tensor");
            u.w = w;
            u.rows = w->shape[0];
            u.cols = w->shape[1];
        }
        const int64_t group = !strcmp(q->strategy, "group") ? q->group : u.cols;
        if (group <= 0 || u.cols % group) return piece_fail(err, mf, w, "columns are not a multiple of group_size");
        u.groups = u.cols / group;
        int64_t sc_shape[2] = {u.rows, u.groups};
        if (!is_float_type(sc->type)) return piece_fail(err, mf, sc, "weight_scale must be a float tensor");
        if ((st = need(mf, base, "weight_scale", 2, sc_shape, sc->type == KV_TYPE_F32 ? 4 : 2, &u.sc, err))) return st;
        if (!q->sym) {
            int64_t zp_shape[2] = {(u.rows * u.bits + 31) / 32, u.groups};
            if ((st = need(mf, base, "weight_zero_point", 2, zp_shape, 4, &u.zp, err))) return st;
        }
        b->rows = u.rows;
        b->cols = u.cols;
        b->anchor = u.w;
        if (!(group == u.cols || group == 32 || group == 64 || group == 128 || group == 256))
            return piece_fail(err, mf, u.w, "group_size has no kvant integer format (32, 64, 128, 256 or per channel)");
        int_src s = {u.bits, (int)group, q->sym, 0, ct_code, ct_scale, ct_scale16, ct_zero, &u};
        return build_int(mf, b, &s, err);
    }
    if (!strcmp(q->ct_format, "float-quantized") && q->bits == 8) { /* fp8_e4m3 rows: fp32 scale + codes */
        snprintf(name, sizeof name, "%sweight", base);
        const kv_tensor *w = find_src(mf, name);
        if (!w || w->n_dims != 2) return piece_fail(err, mf, w, "float-quantized weight must be 2-D");
        const int64_t rows = w->shape[0], cols = w->shape[1];
        if (w->nbytes != (uint64_t)(rows * cols)) return piece_fail(err, mf, w, "float-quantized weight must be float8");
        int64_t per = kv_tensor_nelements(sc);
        if (!is_float_type(sc->type) || (per != rows && per != 1))
            return piece_fail(err, mf, sc, "weight_scale must hold one float per channel or per tensor");
        if ((st = kv_format_get("fp8_e4m3", &b->fmt, err))) return st;
        b->rows = rows;
        b->cols = cols;
        b->anchor = w;
        b->nbytes = (uint64_t)rows * (uint64_t)(cols + 4);
        b->data = kv_mf_alloc(mf, (size_t)b->nbytes, err);
        if (!b->data) return KV_ENOMEM;
        for (int64_t r = 0; r < rows; r++) {
            kv_wr_f32(b->data + (size_t)r * (size_t)(cols + 4), scale_value(sc, per == 1 ? 0 : r));
            memcpy(b->data + (size_t)r * (size_t)(cols + 4) + 4, (const uint8_t *)w->data + r * cols, (size_t)cols);
        }
        return KV_OK;
    }
    if (!strcmp(q->ct_format, "nvfp4-pack-quantized")) {
        snprintf(name, sizeof name, "%sweight_packed", base);
        const kv_tensor *w = find_src(mf, name), *gs;
        if (!w || w->n_dims != 2) return piece_fail(err, mf, w, "weight_packed must be 2-D uint8");
        const int64_t rows = w->shape[0], cols = w->shape[1] * 2;
        if (cols % 16 || w->nbytes != (uint64_t)(rows * cols / 2)) return piece_fail(err, mf, w, "weight_packed must be uint8 with rows of a multiple of 8 bytes");
        int64_t sc_shape[2] = {rows, cols / 16}, g_shape[1] = {1};
        if ((st = need(mf, base, "weight_scale", 2, sc_shape, 1, &sc, err))) return st;
        if ((st = need(mf, base, "weight_global_scale", 1, g_shape, 4, &gs, err))) return st;
        if ((st = kv_format_get("nvfp4_ts", &b->fmt, err))) return st;
        b->rows = rows;
        b->cols = cols;
        b->anchor = w;
        size_t rb = kv_format_row_bytes(&b->fmt, cols);
        b->nbytes = (uint64_t)rb * (uint64_t)rows;
        b->data = kv_mf_alloc(mf, (size_t)b->nbytes, err);
        if (!b->data) return KV_ENOMEM;
        float g = kv_rd_f32(gs->data);
        for (int64_t r = 0; r < rows; r++) {
            uint8_t *row = b->data + (size_t)r * rb;
            kv_wr_f32(row, g);
            for (int64_t k = 0; k < cols / 16; k++) {
                row[4 + 9 * k] = ((const uint8_t *)sc->data)[r * (cols / 16) + k];
                memcpy(row + 4 + 9 * k + 1, (const uint8_t *)w->data + r * (cols / 2) + 8 * k, 8);
            }
        }
        return KV_OK;
    }
    return cfg_err(err, mf->path, NULL, "compressed-tensors format '%s' is not read (pack-quantized, int-quantized, "
                   "float-quantized, nvfp4-pack-quantized)", q->ct_format);
}

/* ---- config ---------------------------------------------------------------------------------------------------- */

static kv_status parse_qc(kv_model_file *mf, const kv_json *c, const char *path, qc *q, kv_error *err) {
    memset(q, 0, sizeof *q);
    const char *method = NULL;
    if (kv_json_get_str(c, "quant_method", &method) != 1) return cfg_err(err, path, c, "quantization_config has no %s", "quant_method");
    int64_t v;
    int b;
    if (!strcmp(method, "gptq")) {
        q->gptq = 1;
        if (kv_json_get_int(c, "bits", &v) != 1 || (v != 2 && v != 4 && v != 8))
            return cfg_err(err, path, kv_json_get(c, "bits"), "GPTQ bits must be 2, 4 or 8 (%s)", "3-bit packing is not read");
        q->bits = (int)v;
        q->group = kv_json_get_int(c, "group_size", &v) == 1 ? (int)v : -1;
        q->sym = kv_json_get_bool(c, "sym", &b) == 1 ? b : 1;
        const char *cf = NULL;
        if (kv_json_get_str(c, "checkpoint_format", &cf) != 1) kv_json_get_str(c, "format", &cf);
        q->gptq_v1 = !cf || strcmp(cf, "gptq_v2");
        snprintf(mf->quant_method, sizeof mf->quant_method, "gptq (%s)", q->gptq_v1 ? "gptq" : "gptq_v2");
        return KV_OK;
    }
    if (strcmp(method, "compressed-tensors"))
        return cfg_err(err, path, kv_json_get(c, "quant_method"), "quant_method '%s' is not read (gptq, compressed-tensors)", method);
    const char *fmt = NULL;
    kv_json_get_str(c, "format", &fmt);
    const kv_json *groups = kv_json_get(c, "config_groups");
    if (!groups || groups->type != KV_JSON_OBJECT || groups->len != 1)
        return cfg_err(err, path, groups, "compressed-tensors: exactly one config group is read (%s)", "config_groups");
    const kv_json *g = &groups->u.items[0];
    const kv_json *w = kv_json_get(g, "weights"), *in = kv_json_get(g, "input_activations");
    const char *gfmt = NULL;
    if (kv_json_get_str(g, "format", &gfmt) == 1) fmt = gfmt;
    if (!fmt) return cfg_err(err, path, c, "compressed-tensors config without a %s", "format");
    kv_strlcpy(q->ct_format, fmt, sizeof q->ct_format);
    const char *s = NULL;
    if (!w || kv_json_get_int(w, "num_bits", &v) != 1) return cfg_err(err, path, g, "config group without %s", "weights.num_bits");
    q->bits = (int)v;
    if (kv_json_get_str(w, "type", &s) == 1) kv_strlcpy(q->wtype, s, sizeof q->wtype);
    if (kv_json_get_str(w, "strategy", &s) == 1) kv_strlcpy(q->strategy, s, sizeof q->strategy);
    q->group = kv_json_get_int(w, "group_size", &v) == 1 ? (int)v : 0;
    q->sym = kv_json_get_bool(w, "symmetric", &b) == 1 ? b : 1;
    if (!strcmp(q->wtype, "int") && (q->bits < 2 || q->bits > 8))
        return cfg_err(err, path, w, "compressed-tensors integer weights of %s bits are not read (2..8)", "other");
    if (in && in->type == KV_JSON_OBJECT) {
        const char *t = NULL, *strat = NULL;
        int dyn = 0, sym = 1;
        kv_json_get_str(in, "type", &t);
        kv_json_get_str(in, "strategy", &strat);
        kv_json_get_bool(in, "dynamic", &dyn);
        kv_json_get_bool(in, "symmetric", &sym);
        if (kv_json_get_int(in, "num_bits", &v) != 1 || v != 8 || !t || !strat || strcmp(strat, "token") || !dyn || !sym)
            return cfg_err(err, path, in, "input_activations other than dynamic symmetric per-token 8-bit are not "
                           "simulated (%s)", "kvant would evaluate a different model than the loader runs");
        kv_strlcpy(mf->act_format, !strcmp(t, "int") ? "int8_g0_sym_f32_ct" : "fp8_e4m3", sizeof mf->act_format);
    }
    snprintf(mf->quant_method, sizeof mf->quant_method, "compressed-tensors (%s)", q->ct_format);
    return KV_OK;
}

/* The module base ("model.layers.0.self_attn.q_proj.") of a quantized piece's name, or 0. */
static int module_base(const qc *q, const char *src, char *base, size_t n) {
    static const char *const gptq_main[] = {"qweight"};
    static const char *const ct_main[] = {"weight_packed", "weight_scale"};
    const char *const *mains = q->gptq ? gptq_main : ct_main;
    size_t nm = q->gptq ? 1 : 2;
    for (size_t i = 0; i < nm; i++) {
        char suf[32];
        snprintf(suf, sizeof suf, ".%s", mains[i]);
        if (ends_with(src, suf)) {
            size_t l = strlen(src) - strlen(mains[i]);
            if (l >= n) return 0;
            memcpy(base, src, l);
            base[l] = 0;
            return 1;
        }
    }
    return 0;
}

static int is_piece_of(const char *src, const char *base) {
    size_t l = strlen(base);
    if (strncmp(src, base, l)) return 0;
    const char *rest = src + l;
    static const char *const pieces[] = {"qweight", "qzeros", "scales", "g_idx", "weight_packed", "weight_scale",
                                         "weight_zero_point", "weight_shape", "weight_global_scale", "weight",
                                         "input_global_scale", "weight_g_idx"};
    for (size_t i = 0; i < KV_ARRAY_LEN(pieces); i++)
        if (!strcmp(rest, pieces[i])) return 1;
    return 0;
}

kv_status kv_hf_quant_open(kv_model_file *mf, const kv_json *qcfg, const char *config_path, kv_error *err) {
    qc q;
    kv_status st = parse_qc(mf, qcfg, config_path, &q, err);
    if (st) return st;
    const int64_t n = mf->n_tensors;
    kv_tensor *old = mf->tensors;
    kv_tensor *nt = kv_calloc((size_t)(n ? n : 1), sizeof *nt, err);
    uint8_t *used = kv_calloc((size_t)(n ? n : 1), 1, err);
    if (!nt || !used) {
        free(nt);
        free(used);
        return KV_ENOMEM;
    }
    int64_t k = 0;
    for (int64_t i = 0; i < n && !st; i++) {
        char base[200];
        if (used[i] || !module_base(&q, old[i].src_name, base, sizeof base)) continue;
        if (!q.gptq && ends_with(old[i].src_name, ".weight_scale")) { /* int-/float-quantized: weight + weight_scale */
            char w[256];
            snprintf(w, sizeof w, "%sweight_packed", base);
            if (find_src(mf, w)) continue; /* reached through weight_packed */
        }
        built b;
        memset(&b, 0, sizeof b);
        st = q.gptq ? build_gptq(mf, &q, base, &b, err) : build_ct(mf, &q, base, &b, err);
        if (st) {
            if (!err || !err->tensor[0]) kv_error_context(err, config_path, -1, base);
            break;
        }
        for (int64_t j = 0; j < n; j++)
            if (is_piece_of(old[j].src_name, base) && strcmp(old[j].src_name + strlen(base), "bias")) used[j] = 1;
        kv_tensor *t = &nt[k++];
        snprintf(t->src_name, sizeof t->src_name, "%sweight", base);
        if (!kv_name_from_hf(t->src_name, t->name, sizeof t->name)) t->name[0] = 0;
        t->n_dims = 2;
        t->shape[0] = b.rows;
        t->shape[1] = b.cols;
        t->shape[2] = t->shape[3] = 1;
        t->type = b.fmt.type;
        t->data = b.data;
        t->nbytes = b.nbytes;
        t->offset = b.anchor ? b.anchor->offset : 0;
        t->file_index = b.anchor ? b.anchor->file_index : 0;
        if (b.fmt.type >= KV_TYPE_KVANT_BASE) {
            char key[240];
            snprintf(key, sizeof key, "kvant.tensor.%s.format", t->src_name);
            st = kv_mf_set_meta(mf, key, b.fmt.name, err);
            if (!st && t->name[0]) {
                snprintf(key, sizeof key, "kvant.tensor.%s.format", t->name);
                st = kv_mf_set_meta(mf, key, b.fmt.name, err);
            }
        }
    }
    for (int64_t i = 0; i < n && !st; i++) {
        if (used[i]) continue;
        if (old[i].type != KV_TYPE_F32 && old[i].type != KV_TYPE_F16 && old[i].type != KV_TYPE_BF16 && old[i].name[0]) {
            st = kv_fail(err, KV_EUNSUPPORTED, "tensor of a quantized checkpoint that is neither a quantized module's "
                         "piece nor a float tensor");
            kv_error_context(err, mf->maps[old[i].file_index].path, (int64_t)old[i].offset, old[i].src_name);
            break;
        }
        nt[k++] = old[i];
    }
    free(used);
    if (st) {
        free(nt);
        return st;
    }
    free(old);
    mf->tensors = nt;
    mf->n_tensors = k;
    mf->cap_tensors = n ? n : 1;
    return KV_OK;
}
