/* quantize.c — kv_quantize_model: the pipeline every `kvant quantize` run goes through.
 *   open the model → fp32 working copy → transforms (smoothquant | awq, quarot, rht) → a format per tensor
 *   (policy.c) → importance (imatrix file, or collected on the transformed model) → the method (rtn.c or a
 *   registered one) → GGUF with llama.cpp's metadata (or safetensors) through an atomic output file.
 * Sources: llama.cpp src/llama-quant.cpp llama_model_quantize_impl (copy the source's KV pairs, set
 * general.quantization_version = 2 and general.file_type; 1-D tensors stay f32), convert_hf_to_gguf.py (the
 * llama.* and tokenizer.ggml.* keys for sources that are not GGUF), docs/quantize.md, docs/FORMAT.md. */
#include "algos/quantize.h"
#include "algos/calib.h"
#include "io/gguf.h"
#include "io/model_file.h"
#include "model/model.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGML_QNT_VERSION 2

/* ---------------------------------------------------------------------------------------------- */
/* methods                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static const kv_quant_method k_methods[] = {
    {"rtn", 0, kv_method_rtn, "round to nearest with the format's own (importance-weighted) quantizer"},
    {"gptq", 1, kv_method_gptq, "GPTQ error compensation onto any format (src/algos/gptq.c)"},
    {"mr-gptq", 1, kv_method_mrgptq, "MR-GPTQ: GPTQ on Hadamard-rotated weights (--transform rht:GROUP) with fixed scales"},
    {"watersic", 1, kv_method_watersic, "WaterSIC: entropy-coded successive interference cancellation (src/algos/watersic.c)"},
    {"llm-int8", 1, kv_method_llmint8, "LLM.int8(): W8A8 vector-wise int8 with fp16 outlier input columns (src/algos/llmint8_method.c)"},
};

const kv_quant_method *kv_quant_method_find(const char *name) {
    for (size_t i = 0; i < KV_ARRAY_LEN(k_methods); i++)
        if (!strcmp(name, k_methods[i].name)) return &k_methods[i];
    return NULL;
}

const char *kv_quant_method_names(void) { return "rtn, gptq, mr-gptq, watersic, llm-int8"; }

/* ---------------------------------------------------------------------------------------------- */
/* small helpers                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static void note(const kv_quantize_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const kv_quantize_opts *o, const char *fmt, ...) {
    if (!o->log) return;
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    o->log(o->log_user, buf);
}

static int64_t nelem(const kv_wtensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
    return n;
}

static int64_t row_len(const kv_wtensor *t) { return t->n_dims ? t->shape[t->n_dims - 1] : 1; }

kv_status kv_act_format(const char *act, kv_format *out, int *is_none, kv_error *err) {
    static const struct { const char *name, *fmt; } k_act[] = {
        {"int8", "int8_g0_sym"}, {"fp8", "fp8_e4m3"}, {"mxfp8", "mxfp8_e4m3"}, {"mxfp4", "mxfp4_ocp"},
    };
    *is_none = 0;
    if (!act || !*act || !strcmp(act, "none")) {
        *is_none = 1;
        return KV_OK;
    }
    for (size_t i = 0; i < KV_ARRAY_LEN(k_act); i++)
        if (!strcmp(act, k_act[i].name)) return kv_format_get(k_act[i].fmt, out, err);
    kv_error sub;
    kv_error_clear(&sub);
    if (kv_format_get(act, out, &sub) == KV_OK) return KV_OK;
    return kv_fail(err, KV_EINVAL, "unknown activation format '%s' (valid: none int8 fp8 mxfp8 mxfp4, or a format name)", act);
}

/* ---------------------------------------------------------------------------------------------- */
/* the working model                                                                                */
/* ---------------------------------------------------------------------------------------------- */

kv_wtensor *kv_wmodel_find(kv_wmodel *wm, const char *name) {
    for (int64_t i = 0; i < wm->n; i++)
        if (!strcmp(wm->t[i].name, name)) return &wm->t[i];
    return NULL;
}

kv_wtensor *kv_wmodel_layer(kv_wmodel *wm, int l, const char *suffix) {
    char name[160];
    snprintf(name, sizeof name, "blk.%d.%s", l, suffix);
    return kv_wmodel_find(wm, name);
}

static kv_wtensor *wmodel_add(kv_wmodel *wm, kv_error *err) {
    if (wm->n == wm->cap) {
        int64_t cap = wm->cap ? wm->cap * 2 : 64;
        kv_wtensor *g = realloc(wm->t, (size_t)cap * sizeof *g);
        if (!g) return kv_fail(err, KV_ENOMEM, "out of memory"), NULL;
        wm->t = g;
        wm->cap = cap;
    }
    kv_wtensor *t = &wm->t[wm->n++];
    memset(t, 0, sizeof *t);
    return t;
}

static void wmodel_free(kv_wmodel *wm) {
    for (int64_t i = 0; i < wm->n; i++) free(wm->t[i].w);
    free(wm->t);
    memset(wm, 0, sizeof *wm);
}

kv_status kv_wmodel_untie(kv_wmodel *wm, kv_error *err) {
    if (kv_wmodel_find(wm, "output.weight")) return KV_OK;
    kv_wtensor *e = kv_wmodel_find(wm, "token_embd.weight");
    if (!e) return kv_fail(err, KV_ENOTFOUND, "model has neither output.weight nor token_embd.weight");
    int64_t ei = e - wm->t;
    kv_wtensor *o = wmodel_add(wm, err);
    if (!o) return KV_ENOMEM;
    e = &wm->t[ei];
    *o = *e;
    kv_strlcpy(o->name, "output.weight", sizeof o->name);
    o->src = NULL;
    o->modified = 1;
    o->w = kv_malloc((size_t)nelem(e) * sizeof(float), err);
    if (!o->w) return KV_ENOMEM;
    memcpy(o->w, e->w, (size_t)nelem(e) * sizeof(float));
    wm->untied = 1;
    return KV_OK;
}

/* The kv_format of a source tensor (ggml ids directly, kvant-only ids through their metadata name). */
static kv_status source_format(const kv_model_file *mf, const kv_tensor *t, kv_format *f, kv_error *err) {
    if (t->type >= KV_TYPE_KVANT_BASE && mf->gguf) {
        char key[256];
        const char *name = NULL;
        snprintf(key, sizeof key, "kvant.tensor.%s.format", t->name);
        if (kv_gguf_get_str(mf->gguf, key, &name, NULL) == KV_OK) return kv_format_get(name, f, err);
    }
    return kv_format_from_type(t->type, f, err);
}

static kv_status wmodel_load(const kv_model_file *mf, kv_wmodel *wm, kv_error *err) {
    memset(wm, 0, sizeof *wm);
    wm->hp = *kv_model_hparams(mf);
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *src = kv_model_tensor(mf, i);
        if (!src->name[0]) continue; /* tensors kvant does not map are not carried over */
        kv_wtensor *t = wmodel_add(wm, err);
        if (!t) return KV_ENOMEM;
        kv_strlcpy(t->name, src->name, sizeof t->name);
        t->n_dims = src->n_dims;
        memcpy(t->shape, src->shape, sizeof t->shape);
        t->src = src;
        if (src->type == KV_TYPE_ECW) { /* entropy-coded: decoded whole, re-quantized like any fp32 weight */
            t->w = kv_malloc((size_t)nelem(t) * sizeof(float), err);
            if (!t->w) return KV_ENOMEM;
            kv_status st = kv_ecw_tensor_to_f32(mf, src, t->w, NULL, err);
            if (st != KV_OK) return st;
            continue;
        }
        kv_format f;
        kv_status st = source_format(mf, src, &f, err);
        if (st != KV_OK || !f.dequantize) {
            if (st == KV_OK) st = kv_fail(err, KV_EUNSUPPORTED, "type %s cannot be dequantized", f.name);
            kv_error_context(err, kv_model_path(mf), (int64_t)src->offset, src->name);
            return st;
        }
        int64_t n = nelem(t), cols = row_len(t), rows = n / cols;
        size_t rb = kv_format_row_bytes(&f, cols);
        if (rb == 0 || (uint64_t)rb * (uint64_t)rows > src->nbytes) {
            kv_fail(err, KV_EFORMAT, "tensor of %lld x %lld %s needs %llu bytes, has %llu", (long long)rows,
                    (long long)cols, f.name, (unsigned long long)rb * (unsigned long long)rows,
                    (unsigned long long)src->nbytes);
            kv_error_context(err, kv_model_path(mf), (int64_t)src->offset, src->name);
            return KV_EFORMAT;
        }
        t->w = kv_malloc((size_t)n * sizeof(float), err);
        if (!t->w) return KV_ENOMEM;
        for (int64_t r = 0; r < rows; r++)
            f.dequantize(&f, (const uint8_t *)src->data + (size_t)r * rb, t->w + r * cols, cols);
    }
    /* a previous kvant run's online rotations stay with their weights */
    if (mf->gguf)
        for (int64_t i = 0; i < wm->n; i++) {
            char key[256];
            uint32_t block = 0;
            uint64_t seed = 0;
            snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, wm->t[i].name);
            if (kv_gguf_get_u32(mf->gguf, key, &block, NULL) != KV_OK) continue;
            snprintf(key, sizeof key, KV_META_RHT_SEED_FMT, wm->t[i].name);
            kv_gguf_get_u64(mf->gguf, key, &seed, NULL);
            wm->t[i].rht_block = (int32_t)block;
            wm->t[i].rht_seed = seed;
        }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* runnable models from the working copy (in memory: the model's fp32 norms are written directly)  */
/* ---------------------------------------------------------------------------------------------- */

static kv_status set_norm(float *dst, const kv_wtensor *t, int64_t n, kv_error *err) {
    if (!dst || !t) return KV_OK;
    if (nelem(t) != n) return kv_fail(err, KV_EINVAL, "norm %s has %lld elements, expected %lld", t->name, (long long)nelem(t), (long long)n);
    memcpy(dst, t->w, (size_t)n * sizeof(float));
    return KV_OK;
}

static kv_status wmodel_to_model(const kv_model_file *mf, const kv_wmodel *wm, kv_model **out, kv_error *err) {
    kv_model *m = NULL;
    kv_status st = kv_model_load(mf, NULL, &m, err);
    if (st != KV_OK) return st;
    kv_format f32;
    if ((st = kv_format_from_type(KV_TYPE_F32, &f32, err)) != KV_OK) goto fail;
    const int64_t n_embd = wm->hp.n_embd;
    for (int64_t i = 0; i < wm->n && st == KV_OK; i++) {
        const kv_wtensor *t = &wm->t[i];
        int layer;
        kv_linear_id which;
        if (t->n_dims == 2 && kv_model_linear_by_name(m, t->name, &layer, &which) == 0) {
            size_t bytes = (size_t)nelem(t) * sizeof(float);
            float *copy = kv_malloc(bytes, err);
            if (!copy) { st = KV_ENOMEM; break; }
            memcpy(copy, t->w, bytes);
            if ((st = kv_model_set_weight(m, t->name, &f32, copy, 1, err)) != KV_OK) break;
            if (t->rht_block > 0) st = kv_model_set_rht(m, t->name, t->rht_block, t->rht_seed, err);
        } else if (!strcmp(t->name, "output_norm.weight")) {
            st = set_norm(m->output_norm, t, n_embd, err);
        } else {
            int l;
            char rest[64];
            if (sscanf(t->name, "blk.%d.%63s", &l, rest) == 2 && l >= 0 && l < wm->hp.n_layer) {
                if (!strcmp(rest, "attn_norm.weight")) st = set_norm(m->layers[l].attn_norm, t, n_embd, err);
                else if (!strcmp(rest, "ffn_norm.weight")) st = set_norm(m->layers[l].ffn_norm, t, n_embd, err);
                else if (!strcmp(rest, "attn_q.bias") || !strcmp(rest, "attn_k.bias") || !strcmp(rest, "attn_v.bias")) {
                    kv_linear_id id = rest[5] == 'q' ? KV_LINEAR_Q : rest[5] == 'k' ? KV_LINEAR_K : KV_LINEAR_V;
                    kv_weight *w = kv_model_weight_mut(m, l, id);
                    if (w && w->bias && nelem(t) == w->rows) memcpy(w->bias, t->w, (size_t)w->rows * sizeof(float));
                }
            }
        }
    }
    if (st == KV_OK) {
        *out = m;
        return KV_OK;
    }
fail:
    kv_model_free(m);
    return st;
}

kv_status kv_model_apply_transforms(kv_model *m, const kv_model_file *mf, kv_error *err) {
    if (!mf || !mf->gguf) return KV_OK;
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        char key[256];
        uint32_t block = 0;
        uint64_t seed = 0;
        snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, t->name);
        if (kv_gguf_get_u32(mf->gguf, key, &block, NULL) != KV_OK) continue;
        snprintf(key, sizeof key, KV_META_RHT_SEED_FMT, t->name);
        kv_status st = kv_gguf_get_u64(mf->gguf, key, &seed, err);
        if (st == KV_OK) st = kv_model_set_rht(m, t->name, (int32_t)block, seed, err);
        if (st != KV_OK) {
            kv_error_context(err, kv_model_path(mf), -1, t->name);
            return st;
        }
    }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* calibration: tokens, activation statistics, importance                                          */
/* ---------------------------------------------------------------------------------------------- */

/* [BOS] + encode(text), then n_win windows of ctx tokens at starts drawn from kv_rng(seed) (GPTQ's
 * datautils: random windows of the calibration text). */
static kv_status calib_tokens(const kv_model_file *mf, const kv_quantize_opts *o, int32_t ctx, int32_t **ids_out,
                              int64_t *n_out, kv_error *err) {
    kv_mapped text;
    kv_status st = kv_map_file(o->calib_path, &text, err);
    if (st != KV_OK) return st;
    kv_tokenizer *tok = NULL;
    int32_t *all = NULL;
    size_t n_all = 0;
    if ((st = kv_tokenizer_load_for_model(mf, &tok, err)) == KV_OK)
        st = kv_tokenize(tok, (const char *)text.data, text.size, kv_tokenizer_bos(tok) >= 0, &all, &n_all, err);
    kv_tokenizer_free(tok);
    kv_unmap_file(&text);
    if (st != KV_OK) {
        kv_error_context(err, o->calib_path, -1, NULL);
        return st;
    }
    int64_t want = o->calib_tokens > 0 ? o->calib_tokens : 128 * 512;
    int64_t n_win = want / ctx;
    if (n_win < 1) n_win = 1;
    if ((int64_t)n_all < n_win * ctx) {
        free(all);
        kv_fail(err, KV_EINVAL, "calibration text has %zu tokens, fewer than the %lld requested (%lld windows of %d)",
                n_all, (long long)(n_win * ctx), (long long)n_win, ctx);
        kv_error_context(err, o->calib_path, -1, NULL);
        return KV_EINVAL;
    }
    int32_t *ids = kv_malloc((size_t)(n_win * ctx) * sizeof(int32_t), err);
    if (!ids) {
        free(all);
        return KV_ENOMEM;
    }
    kv_rng r;
    kv_rng_seed(&r, o->seed ^ 0x63616c6962ULL);
    uint64_t span = (uint64_t)n_all - (uint64_t)ctx + 1;
    for (int64_t w = 0; w < n_win; w++) {
        uint64_t start = kv_rng_u64(&r) % span;
        memcpy(ids + w * ctx, all + start, (size_t)ctx * sizeof(int32_t));
    }
    free(all);
    *ids_out = ids;
    *n_out = n_win * ctx;
    return KV_OK;
}

void kv_act_stats_free(kv_act_stats *s) {
    if (!s || !s->p) return;
    for (int i = 0; i < s->n_layer * KV_ACT_POINTS; i++) {
        free(s->p[i].absmax);
        free(s->p[i].abssum);
    }
    free(s->p);
    s->p = NULL;
}

typedef struct act_hook {
    kv_act_stats *s;
    kv_status st;
    kv_error *err;
} act_hook;

static void act_on_input(void *user, int layer, kv_linear_id which, const float *x, int64_t ntok, int64_t dim) {
    act_hook *h = user;
    int pt = which == KV_LINEAR_Q ? 0 : which == KV_LINEAR_O ? 1 : which == KV_LINEAR_GATE ? 2 : which == KV_LINEAR_DOWN ? 3 : -1;
    if (h->st != KV_OK || pt < 0 || layer < 0 || layer >= h->s->n_layer) return;
    kv_act_point *p = &h->s->p[layer * KV_ACT_POINTS + pt];
    if (!p->absmax) {
        p->dim = dim;
        p->absmax = kv_calloc((size_t)dim, sizeof(float), h->err);
        p->abssum = kv_calloc((size_t)dim, sizeof(double), h->err);
        if (!p->absmax || !p->abssum) { h->st = KV_ENOMEM; return; }
    }
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t j = 0; j < dim; j++) {
            float a = fabsf(x[t * dim + j]);
            if (a > p->absmax[j]) p->absmax[j] = a;
            p->abssum[j] += a;
        }
    p->count += ntok;
}

static kv_status collect_act_stats(const kv_model *m, const int32_t *ids, int64_t n, int32_t ctx, kv_pool *pool,
                                   kv_act_stats *s, kv_error *err) {
    s->n_layer = kv_model_get_hparams(m)->n_layer;
    s->p = kv_calloc((size_t)s->n_layer * KV_ACT_POINTS, sizeof *s->p, err);
    if (!s->p) return KV_ENOMEM;
    kv_context *kc = NULL;
    kv_status st = kv_context_create(m, ctx, &kc, err);
    if (st != KV_OK) return st;
    act_hook h = {s, KV_OK, err};
    kv_forward_hooks hooks = {act_on_input, &h};
    kv_context_set_hooks(kc, &hooks);
    for (int64_t w = 0; w + ctx <= n && st == KV_OK; w += ctx) {
        st = kv_forward(kc, ids + w, ctx, 0, NULL, KV_FORWARD_NO_LOGITS, pool, err);
        if (st == KV_OK) st = h.st;
    }
    kv_context_free(kc);
    return st;
}

/* imatrix in the transformed basis: the hook sees a linear's input before its online rotation, so each
 * weight's own rotation is applied to a copy first. */
typedef struct imx_hook {
    kv_imatrix *im;
    kv_wmodel *wm;
    float *buf;
    int64_t cap;
    kv_status st;
    kv_error *err;
} imx_hook;

static void imx_accumulate(imx_hook *h, const char *name, const float *x, int64_t ntok, int64_t dim) {
    kv_wtensor *t = kv_wmodel_find(h->wm, name);
    if (!t) return;
    const float *src = x;
    if (t->rht_block > 0) {
        if (h->cap < ntok * dim + dim) {
            free(h->buf);
            h->cap = ntok * dim + dim;
            h->buf = kv_malloc((size_t)h->cap * sizeof(float), h->err);
            if (!h->buf) { h->cap = 0; h->st = KV_ENOMEM; return; }
        }
        float *signs = h->buf + ntok * dim;
        kv_rht_signs(t->rht_seed, dim, signs);
        memcpy(h->buf, x, (size_t)(ntok * dim) * sizeof(float));
        for (int64_t r = 0; r < ntok; r++) kv_rht_apply(h->buf + r * dim, dim, t->rht_block, signs);
        src = h->buf;
    }
    h->st = kv_imatrix_accumulate(h->im, name, src, ntok, dim, h->err);
}

static void imx_on_input(void *user, int layer, kv_linear_id which, const float *x, int64_t ntok, int64_t dim) {
    imx_hook *h = user;
    static const char *const q[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight"};
    static const char *const g[] = {"ffn_gate.weight", "ffn_up.weight"};
    const char *const *names = NULL;
    const char *one = NULL;
    int count = 1;
    if (which == KV_LINEAR_Q) names = q, count = 3;
    else if (which == KV_LINEAR_GATE) names = g, count = 2;
    else if (which == KV_LINEAR_O) one = "attn_output.weight";
    else if (which == KV_LINEAR_DOWN) one = "ffn_down.weight";
    else if (which == KV_LINEAR_HEAD) one = "output.weight";
    else return;
    for (int i = 0; i < count && h->st == KV_OK; i++) {
        char name[160];
        if (which == KV_LINEAR_HEAD) kv_strlcpy(name, one, sizeof name);
        else snprintf(name, sizeof name, "blk.%d.%s", layer, names ? names[i] : one);
        imx_accumulate(h, name, x, ntok, dim);
    }
}

static kv_status collect_imatrix(const kv_model *m, kv_wmodel *wm, const int32_t *ids, int64_t n, int32_t ctx,
                                 kv_pool *pool, kv_imatrix *im, kv_progress *prog, kv_error *err) {
    kv_context *kc = NULL;
    kv_status st = kv_context_create(m, ctx, &kc, err);
    if (st != KV_OK) return st;
    imx_hook h = {im, wm, NULL, 0, KV_OK, err};
    kv_forward_hooks hooks = {imx_on_input, &h};
    kv_context_set_hooks(kc, &hooks);
    float *logits = kv_malloc((size_t)ctx * (size_t)wm->hp.n_vocab * sizeof(float), err);
    if (!logits) st = KV_ENOMEM;
    for (int64_t w = 0; w + ctx <= n && st == KV_OK; w += ctx) {
        st = kv_forward(kc, ids + w, ctx, 0, logits, 0, pool, err);
        if (st == KV_OK) st = h.st;
        kv_imatrix_end_chunk(im);
        if (prog) kv_progress_update(prog, (w + ctx) / ctx);
    }
    free(logits);
    free(h.buf);
    kv_context_free(kc);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* transform list                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

typedef struct transform_set {
    int rht, quarot, fold, smooth, awq, prescale;
    int32_t rht_block;
    float alpha;
} transform_set;

static kv_status parse_transforms(const char *list, transform_set *ts, kv_error *err) {
    memset(ts, 0, sizeof *ts);
    ts->rht_block = 512;
    ts->alpha = 0.5f;
    if (!list || !*list || !strcmp(list, "none")) return KV_OK;
    char buf[256];
    if (strlen(list) >= sizeof buf) return kv_fail(err, KV_EINVAL, "transform list too long");
    kv_strlcpy(buf, list, sizeof buf);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *arg = strchr(tok, ':');
        if (arg) *arg++ = 0;
        if (!strcmp(tok, "rht")) {
            ts->rht = 1;
            if (arg) {
                char *end;
                long b = strtol(arg, &end, 10);
                if (*end || b < 2 || b > (1 << 20) || !kv_rht_block_supported(b))
                    return kv_fail(err, KV_EINVAL, "rht block '%s' must be K*2^m with K in {1, 12, 20, 28}", arg);
                ts->rht_block = (int32_t)b;
            }
        } else if (!strcmp(tok, "quarot") && !arg) ts->quarot = 1;
        else if (!strcmp(tok, "fold-norms") && !arg) ts->fold = 1;
        else if (!strcmp(tok, "smoothquant")) {
            ts->smooth = 1;
            if (arg) {
                char *end;
                double a = strtod(arg, &end);
                if (*end || !(a >= 0 && a <= 1)) return kv_fail(err, KV_EINVAL, "smoothquant alpha '%s' must be in [0, 1]", arg);
                ts->alpha = (float)a;
            }
        } else if (!strcmp(tok, "awq") && !arg) ts->awq = 1;
        else if (!strcmp(tok, "prescale") && !arg) ts->prescale = 1;
        else
            return kv_fail(err, KV_EINVAL, "unknown transform '%s%s%s' (valid: rht[:BLOCK], quarot, fold-norms, smoothquant[:ALPHA], awq, prescale)",
                           tok, arg ? ":" : "", arg ? arg : "");
    }
    if (ts->smooth && ts->awq) return kv_fail(err, KV_EINVAL, "smoothquant and awq both rescale channels: choose one");
    return KV_OK;
}

/* prescale: the MX formats' _ps variants (the block exponent chosen among e-1, e, e+1 for the least MSE) */
static kv_status prescale_name(const char *fmt, char *out, size_t n, kv_error *err) {
    kv_format f;
    char cand[64];
    snprintf(cand, sizeof cand, "%s_ps", fmt);
    if (!strncmp(fmt, "mx", 2) && kv_format_get(cand, &f, NULL) == KV_OK) {
        kv_strlcpy(out, cand, n);
        return KV_OK;
    }
    if (!strcmp(fmt, "mxfp4")) return kv_fail(err, KV_EINVAL, "prescale needs an OCP MX format: ggml's mxfp4 has no pre-scaled variant (use mxfp4_ocp)");
    return kv_fail(err, KV_EINVAL, "prescale works only with MX formats (mxfp4_ocp, mxfp6_e2m3, mxfp8_e4m3, mxint8), not '%s'", fmt);
}

/* ---------------------------------------------------------------------------------------------- */
/* output                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

typedef struct out_tensor {
    kv_wtensor *wt;
    kv_policy_choice choice;
    kv_format fmt;
    uint32_t type;
    const void *data;         /* bytes in kvant (HF) row order */
    void *owned;
    uint64_t nbytes;
    size_t row_bytes;
} out_tensor;

static int is_llama_arch(const kv_hparams *hp) { return !strcmp(hp->arch, "llama"); }

/* llama.cpp's converter writes attn_q/attn_k rows permuted for its interleaved RoPE (arch llama). */
static int qk_heads(const kv_hparams *hp, const char *name) {
    if (!is_llama_arch(hp) || strncmp(name, "blk.", 4)) return 0;
    const char *rest = strchr(name + 4, '.');
    if (!rest) return 0;
    rest++;
    if (!strcmp(rest, "attn_q.weight") || !strcmp(rest, "attn_q.bias")) return hp->n_head;
    if (!strcmp(rest, "attn_k.weight") || !strcmp(rest, "attn_k.bias")) return hp->n_head_kv;
    return 0;
}

static kv_status meta_tokenizer(kv_gguf_writer *w, const kv_model_file *mf, kv_error *err) {
    kv_tokenizer *tok = NULL;
    if (kv_model_tokenizer(mf, NULL) == KV_TOKSRC_NONE) return KV_OK;
    kv_status st = kv_tokenizer_load_for_model(mf, &tok, err);
    if (st != KV_OK) return st;
    int32_t nv = kv_tokenizer_n_vocab(tok);
    const char **pieces = kv_malloc((size_t)nv * sizeof(char *), err);
    size_t *lens = kv_malloc((size_t)nv * sizeof(size_t), err);
    float *scores = kv_malloc((size_t)nv * sizeof(float), err);
    int32_t *types = kv_malloc((size_t)nv * sizeof(int32_t), err);
    if (!pieces || !lens || !scores || !types) st = KV_ENOMEM;
    for (int32_t i = 0; st == KV_OK && i < nv; i++) {
        pieces[i] = kv_tokenizer_piece(tok, i, &lens[i]);
        scores[i] = kv_tokenizer_score(tok, i);
        types[i] = (int32_t)kv_tokenizer_token_type(tok, i);
    }
    int spm = kv_tokenizer_get_kind(tok) == KV_TOKENIZER_SPM;
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", err);
    if (st == KV_OK && !spm)
        st = kv_gguf_writer_add_str(w, "tokenizer.ggml.pre", kv_pretokenizer_name(kv_tokenizer_pretokenizer(tok)), err);
    if (st == KV_OK) st = kv_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", pieces, lens, (uint64_t)nv, err);
    if (st == KV_OK && spm) st = kv_gguf_writer_add_arr(w, "tokenizer.ggml.scores", KV_GGUF_F32, scores, (uint64_t)nv, err);
    if (st == KV_OK) st = kv_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KV_GGUF_I32, types, (uint64_t)nv, err);
    if (st == KV_OK && !spm && kv_tokenizer_n_merges(tok) > 0) {
        int64_t nm = kv_tokenizer_n_merges(tok);
        char **merges = kv_calloc((size_t)nm, sizeof(char *), err);
        if (!merges) st = KV_ENOMEM;
        for (int64_t i = 0; st == KV_OK && i < nm; i++) {
            int32_t l, r;
            size_t ll, rl;
            if ((st = kv_tokenizer_merge(tok, i, &l, &r, err)) != KV_OK) break;
            const char *lp = kv_tokenizer_piece(tok, l, &ll), *rp = kv_tokenizer_piece(tok, r, &rl);
            merges[i] = kv_malloc(ll + rl + 2, err);
            if (!merges[i]) { st = KV_ENOMEM; break; }
            memcpy(merges[i], lp, ll);
            merges[i][ll] = ' ';
            memcpy(merges[i] + ll + 1, rp, rl);
            merges[i][ll + rl + 1] = 0;
        }
        if (st == KV_OK) st = kv_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, (uint64_t)nm, err);
        for (int64_t i = 0; merges && i < nm; i++) free(merges[i]);
        free(merges);
    }
    static const struct { const char *key; int32_t (*get)(const kv_tokenizer *); } k_ids[] = {
        {"tokenizer.ggml.bos_token_id", kv_tokenizer_bos}, {"tokenizer.ggml.eos_token_id", kv_tokenizer_eos},
        {"tokenizer.ggml.unknown_token_id", kv_tokenizer_unk}, {"tokenizer.ggml.padding_token_id", kv_tokenizer_pad},
    };
    for (size_t i = 0; st == KV_OK && i < KV_ARRAY_LEN(k_ids); i++) {
        int32_t id = k_ids[i].get(tok);
        if (id >= 0) st = kv_gguf_writer_add_u32(w, k_ids[i].key, (uint32_t)id, err);
    }
    if (st == KV_OK) st = kv_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", kv_tokenizer_add_bos_default(tok), err);
    if (st == KV_OK && spm) st = kv_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", kv_tokenizer_add_space_prefix(tok), err);
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    kv_tokenizer_free(tok);
    return st;
}

/* llama.* keys as convert_hf_to_gguf.py writes them for a Llama-family source that is not GGUF. */
static kv_status meta_hparams(kv_gguf_writer *w, const kv_model_file *mf, kv_error *err) {
    const kv_hparams *hp = kv_model_hparams(mf);
    char key[128];
    const char *a = hp->arch[0] ? hp->arch : "llama";
    const char *path = kv_model_path(mf), *base = strrchr(path, '/');
    char name[256];
    kv_strlcpy(name, base && base[1] ? base + 1 : path, sizeof name);
    kv_status st = kv_gguf_writer_add_str(w, "general.architecture", a, err);
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "general.name", name, err);
#define U32(k, v) if (st == KV_OK) { snprintf(key, sizeof key, "%s." k, a); st = kv_gguf_writer_add_u32(w, key, (uint32_t)(v), err); }
#define F32(k, v) if (st == KV_OK) { snprintf(key, sizeof key, "%s." k, a); st = kv_gguf_writer_add_f32(w, key, (float)(v), err); }
    U32("block_count", hp->n_layer);
    U32("context_length", hp->n_ctx_train);
    U32("embedding_length", hp->n_embd);
    U32("feed_forward_length", hp->n_ff);
    U32("attention.head_count", hp->n_head);
    U32("attention.head_count_kv", hp->n_head_kv);
    F32("rope.freq_base", hp->rope_theta);
    F32("attention.layer_norm_rms_epsilon", hp->norm_eps);
    if (hp->head_dim != hp->n_embd / KV_MAX(hp->n_head, 1)) {
        U32("attention.key_length", hp->head_dim);
        U32("attention.value_length", hp->head_dim);
    }
    U32("vocab_size", hp->n_vocab);
    U32("rope.dimension_count", hp->head_dim);
    if (hp->rope_scaling == KV_ROPE_SCALING_LINEAR) {
        if (st == KV_OK) { snprintf(key, sizeof key, "%s.rope.scaling.type", a); st = kv_gguf_writer_add_str(w, key, "linear", err); }
        F32("rope.scaling.factor", hp->rope_factor);
    }
#undef U32
#undef F32
    if (st == KV_OK) st = meta_tokenizer(w, mf, err);
    return st;
}

/* Copies a GGUF source's KV pairs except the ones this run rewrites. */
static kv_status meta_copy_gguf(kv_gguf_writer *w, const kv_gguf *g, kv_error *err) {
    for (int64_t i = 0; i < kv_gguf_n_kv(g); i++) {
        const char *k = kv_gguf_kv_key(g, i);
        if (!strcmp(k, "general.file_type") || !strcmp(k, "general.quantization_version") || !strncmp(k, "kvant.", 6))
            continue;
        kv_status st = kv_gguf_writer_add_value(w, k, kv_gguf_kv_value(g, i), err);
        if (st != KV_OK) return st;
    }
    return KV_OK;
}

typedef struct run_info {
    const kv_policy *policy;
    const char *method;
    const char *transforms;
    const char *act;
    uint64_t seed;
} run_info;

/* llama.cpp's weight_name_comparer (llama-model-loader.h): by layer number (-1 outside blocks), then name;
 * llama-quantize writes tensors in this order. */
static int tensor_order(const void *pa, const void *pb) {
    const out_tensor *a = pa, *b = pb;
    int la = -1, lb = -1;
    sscanf(a->wt->name, "blk.%d.", &la);
    sscanf(b->wt->name, "blk.%d.", &lb);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a->wt->name, b->wt->name);
}

/* Side output of a method (kv_quant_method_ctx.add_meta / add_tensor): copies, written after the model's. */
typedef struct extra_item {
    char *name;               /* metadata key or tensor name */
    int is_tensor;
    kv_gguf_vtype elem_type;  /* metadata */
    int64_t n;                /* metadata: array length, -1 for a scalar */
    int n_dims;               /* tensor */
    int64_t shape[4];
    uint32_t type;
    void *data;
    uint64_t nbytes;
} extra_item;

typedef struct extra_out {
    extra_item *it;
    int64_t n, cap;
} extra_out;

static kv_status extra_push(extra_out *x, const char *name, const void *data, uint64_t nbytes, extra_item **out,
                            kv_error *err) {
    if (x->n == x->cap) {
        int64_t cap = x->cap ? 2 * x->cap : 64;
        extra_item *g = realloc(x->it, sizeof *g * (size_t)cap);
        if (!g) return kv_fail(err, KV_ENOMEM, "out of memory");
        x->it = g;
        x->cap = cap;
    }
    extra_item *e = &x->it[x->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->data = malloc(nbytes ? (size_t)nbytes : 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    if (nbytes) memcpy(e->data, data, (size_t)nbytes);
    e->nbytes = nbytes;
    x->n++;
    *out = e;
    return KV_OK;
}

static kv_status extra_add_meta(void *user, const char *key, kv_gguf_vtype elem_type, const void *data, int64_t n,
                                kv_error *err) {
    size_t esz = kv_gguf_vtype_size(elem_type);
    if (!key || !esz || elem_type == KV_GGUF_STRING || n < -1 || (n != 0 && !data))
        return kv_fail(err, KV_EINVAL, "method metadata '%s': bad type or data", key ? key : "(null)");
    extra_item *e;
    kv_status st = extra_push(user, key, data, (uint64_t)(n < 0 ? 1 : n) * esz, &e, err);
    if (st != KV_OK) return st;
    e->elem_type = elem_type;
    e->n = n;
    return KV_OK;
}

static kv_status extra_add_tensor(void *user, const char *name, int n_dims, const int64_t *shape, uint32_t type,
                                  const void *data, kv_error *err) {
    if (!name || !shape || !data || n_dims < 1 || n_dims > 4 || type >= KV_TYPE_KVANT_BASE)
        return kv_fail(err, KV_EINVAL, "method tensor '%s': bad shape or type", name ? name : "(null)");
    uint64_t rows = 1;
    for (int d = 0; d + 1 < n_dims; d++) rows *= (uint64_t)shape[d];
    uint64_t nbytes = (uint64_t)kv_type_row_bytes(type, shape[n_dims - 1]) * rows;
    if (!nbytes) return kv_fail(err, KV_EINVAL, "method tensor '%s': empty or bad row length", name);
    extra_item *e;
    kv_status st = extra_push(user, name, data, nbytes, &e, err);
    if (st != KV_OK) return st;
    e->is_tensor = 1;
    e->n_dims = n_dims;
    memcpy(e->shape, shape, sizeof(int64_t) * (size_t)n_dims);
    e->type = type;
    return KV_OK;
}

static void extra_free(extra_out *x) {
    for (int64_t i = 0; i < x->n; i++) {
        free(x->it[i].name);
        free(x->it[i].data);
    }
    free(x->it);
    memset(x, 0, sizeof *x);
}

static kv_status extra_write_meta(kv_gguf_writer *w, const extra_item *e, kv_error *err) {
    if (e->n >= 0) return kv_gguf_writer_add_arr(w, e->name, e->elem_type, e->data, (uint64_t)e->n, err);
    const void *d = e->data;
    switch (e->elem_type) {
    case KV_GGUF_U8: return kv_gguf_writer_add_u8(w, e->name, *(const uint8_t *)d, err);
    case KV_GGUF_I8: return kv_gguf_writer_add_i8(w, e->name, *(const int8_t *)d, err);
    case KV_GGUF_U16: return kv_gguf_writer_add_u16(w, e->name, (uint16_t)kv_rd_u16(d), err);
    case KV_GGUF_I16: return kv_gguf_writer_add_i16(w, e->name, (int16_t)kv_rd_u16(d), err);
    case KV_GGUF_U32: return kv_gguf_writer_add_u32(w, e->name, kv_rd_u32(d), err);
    case KV_GGUF_I32: return kv_gguf_writer_add_i32(w, e->name, (int32_t)kv_rd_u32(d), err);
    case KV_GGUF_U64: return kv_gguf_writer_add_u64(w, e->name, kv_rd_u64(d), err);
    case KV_GGUF_I64: return kv_gguf_writer_add_i64(w, e->name, (int64_t)kv_rd_u64(d), err);
    case KV_GGUF_F32: return kv_gguf_writer_add_f32(w, e->name, kv_rd_f32(d), err);
    case KV_GGUF_F64: { double v; memcpy(&v, d, 8); return kv_gguf_writer_add_f64(w, e->name, v, err); }
    case KV_GGUF_BOOL: return kv_gguf_writer_add_bool(w, e->name, *(const uint8_t *)d != 0, err);
    default: return kv_fail(err, KV_EINVAL, "method metadata '%s': unsupported type", e->name);
    }
}

static kv_status write_gguf(const kv_model_file *mf, const kv_wmodel *wm, out_tensor *ot, int64_t n,
                            const run_info *ri, const extra_out *xo, const char *path, kv_progress *prog,
                            kv_error *err) {
    kv_gguf_writer *w = NULL;
    kv_status st = kv_gguf_writer_create(&w, err);
    if (st != KV_OK) return st;
    st = mf->gguf ? meta_copy_gguf(w, mf->gguf, err) : meta_hparams(w, mf, err);
    int any_quant = 0;
    for (int64_t i = 0; i < n; i++) any_quant |= ot[i].type != KV_TYPE_F32 && ot[i].type != KV_TYPE_F16 && ot[i].type != KV_TYPE_BF16;
    if (st == KV_OK && any_quant) st = kv_gguf_writer_add_u32(w, "general.quantization_version", GGML_QNT_VERSION, err);
    if (st == KV_OK && ri->policy->ftype >= 0 && !ri->policy->pure)
        st = kv_gguf_writer_add_u32(w, "general.file_type", (uint32_t)ri->policy->ftype, err);
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "kvant.quantize.format", ri->policy->format, err);
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "kvant.quantize.method", ri->method, err);
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "kvant.transform.list", ri->transforms, err);
    if (st == KV_OK) st = kv_gguf_writer_add_u64(w, "kvant.quantize.seed", ri->seed, err);
    if (st == KV_OK && ri->act && strcmp(ri->act, "none")) st = kv_gguf_writer_add_str(w, "kvant.act", ri->act, err);
    for (int64_t i = 0; st == KV_OK && i < n; i++) {
        char key[256];
        const kv_wtensor *t = ot[i].wt;
        if (ot[i].type >= KV_TYPE_KVANT_BASE && ot[i].type != KV_TYPE_ECW) { /* ecw: the writer adds its keys */
            snprintf(key, sizeof key, "kvant.tensor.%s.format", t->name);
            st = kv_gguf_writer_add_str(w, key, ot[i].fmt.name, err);
        }
        if (st == KV_OK && t->rht_block > 0) {
            snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, t->name);
            st = kv_gguf_writer_add_u32(w, key, (uint32_t)t->rht_block, err);
            snprintf(key, sizeof key, KV_META_RHT_SEED_FMT, t->name);
            if (st == KV_OK) st = kv_gguf_writer_add_u64(w, key, t->rht_seed, err);
        }
    }
    for (int64_t i = 0; st == KV_OK && i < xo->n; i++)
        if (!xo->it[i].is_tensor) st = extra_write_meta(w, &xo->it[i], err);
    qsort(ot, (size_t)n, sizeof *ot, tensor_order);
    void **perm = kv_calloc((size_t)KV_MAX(n, 1), sizeof(void *), err);
    if (!perm) st = KV_ENOMEM;
    for (int64_t i = 0; st == KV_OK && i < n; i++) {
        const kv_wtensor *t = ot[i].wt;
        const void *data = ot[i].data;
        if (ot[i].type == KV_TYPE_ECW) { /* entropy-coded: kvant row order, size in metadata */
            st = kv_gguf_writer_add_tensor_ecw(w, t->name, t->shape[0], nelem(t) / t->shape[0], data, ot[i].nbytes, err);
            continue;
        }
        int heads = qk_heads(&wm->hp, t->name);
        if (heads > 0) {
            perm[i] = kv_malloc(ot[i].nbytes, err);
            if (!perm[i]) { st = KV_ENOMEM; break; }
            st = kv_permute_qk_to_gguf(ot[i].data, perm[i], t->shape[0], ot[i].nbytes / (uint64_t)t->shape[0], heads, err);
            if (st != KV_OK) { kv_error_context(err, NULL, -1, t->name); break; }
            data = perm[i];
        }
        st = kv_gguf_writer_add_tensor(w, t->name, t->n_dims, t->shape, ot[i].type, data, err);
    }
    for (int64_t i = 0; st == KV_OK && i < xo->n; i++)
        if (xo->it[i].is_tensor)
            st = kv_gguf_writer_add_tensor(w, xo->it[i].name, xo->it[i].n_dims, xo->it[i].shape, xo->it[i].type,
                                           xo->it[i].data, err);
    if (st == KV_OK) st = kv_gguf_writer_write(w, path, prog, err);
    for (int64_t i = 0; perm && i < n; i++) free(perm[i]);
    free(perm);
    kv_gguf_writer_free(w);
    return st;
}

/* safetensors: every tensor under its canonical name, in HF row order; quantized tensors as U8 [rows, row
 * bytes] holding the packed rows of their kv_format (docs/FORMAT.md "kvant safetensors output"), described in
 * __metadata__ by "NAME.format", "NAME.shape" and the rht keys. */
static void json_str(char **p, size_t *len, size_t *cap, int *oom, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void json_str(char **p, size_t *len, size_t *cap, int *oom, const char *fmt, ...) {
    if (*oom) return;
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(*p ? *p + *len : NULL, *p ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { *oom = 1; return; }
        if (*p && *len + (size_t)k < *cap) { *len += (size_t)k; return; }
        size_t ncap = (*cap ? *cap * 2 : 4096) + (size_t)k;
        char *g = realloc(*p, ncap);
        if (!g) { *oom = 1; return; }
        *p = g;
        *cap = ncap;
    }
}

static kv_status write_safetensors(out_tensor *ot, int64_t n, const run_info *ri, const char *path, kv_error *err) {
    char *h = NULL;
    size_t len = 0, cap = 0;
    int oom = 0;
    json_str(&h, &len, &cap, &oom, "{\"__metadata__\":{\"format\":\"pt\",\"kvant.quantize.format\":\"%s\","
             "\"kvant.quantize.method\":\"%s\",\"kvant.transform.list\":\"%s\"", ri->policy->format, ri->method, ri->transforms);
    for (int64_t i = 0; i < n; i++) {
        const kv_wtensor *t = ot[i].wt;
        json_str(&h, &len, &cap, &oom, ",\"%s.format\":\"%s\",\"%s.shape\":\"[", t->name, ot[i].fmt.name, t->name);
        for (int d = 0; d < t->n_dims; d++) json_str(&h, &len, &cap, &oom, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        json_str(&h, &len, &cap, &oom, "]\"");
        if (t->rht_block > 0)
            json_str(&h, &len, &cap, &oom, ",\"%s.rht_block\":\"%d\",\"%s.rht_seed\":\"%llu\"", t->name, (int)t->rht_block,
                     t->name, (unsigned long long)t->rht_seed);
    }
    json_str(&h, &len, &cap, &oom, "}");
    uint64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const kv_wtensor *t = ot[i].wt;
        const char *dtype = ot[i].type == KV_TYPE_F32 ? "F32" : ot[i].type == KV_TYPE_F16 ? "F16" : ot[i].type == KV_TYPE_BF16 ? "BF16" : "U8";
        json_str(&h, &len, &cap, &oom, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, dtype);
        if (dtype[0] == 'U')
            json_str(&h, &len, &cap, &oom, "%lld,%llu", (long long)t->shape[0], (unsigned long long)(ot[i].nbytes / (uint64_t)t->shape[0]));
        else
            for (int d = 0; d < t->n_dims; d++) json_str(&h, &len, &cap, &oom, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        json_str(&h, &len, &cap, &oom, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + ot[i].nbytes));
        off += ot[i].nbytes;
    }
    json_str(&h, &len, &cap, &oom, "}");
    while (!oom && len % 8) json_str(&h, &len, &cap, &oom, " ");
    if (oom) {
        free(h);
        return kv_fail(err, KV_ENOMEM, "out of memory building the safetensors header");
    }
    kv_outfile *f = NULL;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st != KV_OK) {
        free(h);
        return st;
    }
    uint64_t hl = len;
    st = kv_outfile_write(f, &hl, 8, err);
    if (st == KV_OK) st = kv_outfile_write(f, h, len, err);
    for (int64_t i = 0; st == KV_OK && i < n; i++) st = kv_outfile_write(f, ot[i].data, ot[i].nbytes, err);
    free(h);
    if (st != KV_OK) {
        kv_outfile_abort(f);
        return st;
    }
    return kv_outfile_commit(f, err);
}

/* ---------------------------------------------------------------------------------------------- */
/* the pipeline                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static int is_plain(const kv_format *f) { return f->type == KV_TYPE_F32 || f->type == KV_TYPE_F16 || f->type == KV_TYPE_BF16; }

static const kv_format *awq_format_of(void *user, const char *name) {
    struct { out_tensor *ot; int64_t n; } *u = user;
    for (int64_t i = 0; i < u->n; i++)
        if (!strcmp(u->ot[i].wt->name, name)) return &u->ot[i].fmt;
    return NULL;
}

static kv_status check_out_dir(const char *path, kv_error *err) {
    char dir[1024];
    kv_strlcpy(dir, path, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (!slash) return KV_OK;
    if (slash == dir) slash[1] = 0;
    else *slash = 0;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        kv_fail(err, KV_ENOTFOUND, "output directory '%s' does not exist", dir);
        kv_error_context(err, path, -1, NULL);
        return KV_ENOTFOUND;
    }
    return KV_OK;
}

/* Chooses every tensor's format (policy + prescale) and fills ot[]. */
static kv_status choose_formats(const kv_model_file *mf, kv_wmodel *wm, kv_policy *pol, const transform_set *ts,
                                const kv_quantize_opts *o, out_tensor *ot, kv_quantize_report *rep, kv_error *err) {
    int has_output = kv_wmodel_find(wm, "output.weight") != NULL;
    for (int64_t i = 0; i < wm->n; i++) {
        kv_wtensor *t = &wm->t[i];
        out_tensor *x = &ot[i];
        memset(x, 0, sizeof *x);
        x->wt = t;
        kv_status st = kv_policy_choose(pol, &wm->hp, has_output, t->name, t->n_dims, t->shape, &x->choice, err);
        if (st != KV_OK) return st;
        char name[KV_FORMAT_NAME_MAX];
        kv_strlcpy(name, x->choice.format, sizeof name);
        if (ts->prescale && x->choice.quantize && !strncmp(name, "mx", 2)) {
            if ((st = prescale_name(name, name, sizeof name, err)) != KV_OK) return st;
        }
        if ((st = kv_format_get(name, &x->fmt, err)) != KV_OK) {
            kv_error_context(err, NULL, -1, t->name);
            return st;
        }
        x->type = x->fmt.type;
        x->row_bytes = kv_format_row_bytes(&x->fmt, row_len(t));
        if (x->row_bytes == 0) {
            kv_fail(err, KV_EINVAL, "rows of %lld do not fit format %s", (long long)row_len(t), x->fmt.name);
            kv_error_context(err, kv_model_path(mf), -1, t->name);
            return KV_EINVAL;
        }
        x->nbytes = (uint64_t)x->row_bytes * (uint64_t)(nelem(t) / row_len(t));
        if (x->choice.fallback) {
            rep->n_fallback++;
            note(o, "fallback: %s", x->choice.note);
        }
    }
    if (ts->prescale) {
        int any = 0;
        for (int64_t i = 0; i < wm->n; i++) any |= strstr(ot[i].fmt.name, "_ps") != NULL;
        if (!any) return kv_fail(err, KV_EINVAL, "prescale works only with MX formats (mxfp4_ocp, mxfp6_e2m3, mxfp8_e4m3, mxint8), not '%s'", pol->format);
    }
    return KV_OK;
}

/* Quantizes (method for real formats, direct conversion for f32/f16/bf16, raw copies for untouched tensors
 * kept in their source type). */
/* A method's variable-size outputs (WaterSIC's ECW containers) replace the fixed-size rows of their tensors;
 * outputs of a failed run are freed too. */
static void take_var_outputs(out_tensor *ot, int64_t n, kv_quant_job *jobs, int64_t nj) {
    for (int64_t k = 0; k < nj; k++) {
        if (!jobs[k].out_data) continue;
        out_tensor *x = NULL;
        for (int64_t i = 0; i < n && !x; i++)
            if (ot[i].owned && ot[i].owned == jobs[k].dst) x = &ot[i];
        if (!x || jobs[k].out_type != KV_TYPE_ECW) {
            free(jobs[k].out_data);
            continue;
        }
        free(x->owned);
        x->owned = jobs[k].out_data;
        x->data = x->owned;
        x->nbytes = jobs[k].out_bytes;
        x->type = KV_TYPE_ECW;
        x->row_bytes = 0;
    }
}

/* `--entropy-code`: the codes of every integer-format tensor go into an ECW version 3 container (the
 * "Huffman-GPTQ" baseline); plain f32/f16/bf16 tensors stay as they are, other formats are refused. */
static kv_status entropy_code_tensors(out_tensor *ot, int64_t n, const kv_quantize_opts *o, kv_error *err) {
    uint64_t before = 0, after = 0;
    int64_t coded = 0;
    double weights = 0;
    for (int64_t i = 0; i < n; i++) {
        out_tensor *x = &ot[i];
        if (is_plain(&x->fmt) || x->type == KV_TYPE_ECW) continue;
        const kv_wtensor *t = x->wt;
        if (!kv_ecw_packed_supported(&x->fmt) || t->n_dims != 2) {
            kv_fail(err, KV_EUNSUPPORTED, "--entropy-code: format %s is not supported (supported: %s)", x->fmt.name,
                    kv_ecw_packed_formats());
            kv_error_context(err, NULL, -1, t->name);
            return KV_EUNSUPPORTED;
        }
        uint8_t *blob = NULL;
        size_t size = 0;
        kv_status st = kv_ecw_encode_packed(&x->fmt, x->data, t->shape[0], t->shape[1], &blob, &size, err);
        if (st != KV_OK) {
            kv_error_context(err, NULL, -1, t->name);
            return st;
        }
        before += x->nbytes;
        after += size;
        coded++;
        weights += (double)t->shape[0] * (double)t->shape[1];
        free(x->owned);
        x->owned = blob;
        x->data = blob;
        x->nbytes = size;
        x->type = KV_TYPE_ECW;
        x->row_bytes = 0;
    }
    if (coded)
        note(o, "entropy-code: %lld tensors, %llu bytes packed (%.4f bits/weight) -> %llu bytes entropy-coded (%.4f "
             "bits/weight, %.2f%%)", (long long)coded, (unsigned long long)before, (double)before * 8.0 / weights,
             (unsigned long long)after, (double)after * 8.0 / weights, 100.0 * (double)after / (double)before);
    return KV_OK;
}

static kv_status produce_bytes(const kv_model_file *mf, kv_wmodel *wm, out_tensor *ot, const kv_quant_method *meth,
                               kv_quant_method_ctx *mc, const kv_imatrix *im, kv_progress *prog, kv_error *err) {
    kv_quant_job *jobs = kv_calloc((size_t)KV_MAX(wm->n, 1), sizeof *jobs, err);
    kv_quant_job *plain = kv_calloc((size_t)KV_MAX(wm->n, 1), sizeof *plain, err);
    if (!jobs || !plain) {
        free(jobs);
        free(plain);
        return KV_ENOMEM;
    }
    int64_t nj = 0, np = 0;
    kv_status st = KV_OK;
    for (int64_t i = 0; i < wm->n && st == KV_OK; i++) {
        out_tensor *x = &ot[i];
        kv_wtensor *t = x->wt;
        /* (matrices of a calibrated method always go to it: watersic stores them entropy-coded whatever --format) */
        if (t->src && !t->modified && x->type == t->src->type && t->src->nbytes == x->nbytes &&
            !(meth->needs_calib && t->n_dims >= 2)) {
            x->data = t->src->data; /* kept exactly as stored */
            continue;
        }
        x->owned = kv_malloc(x->nbytes, err);
        if (!x->owned) { st = KV_ENOMEM; break; }
        x->data = x->owned;
        kv_quant_job j = {0};
        j.name = t->name;
        j.layer = -1;
        int l;
        if (sscanf(t->name, "blk.%d.", &l) == 1) j.layer = l;
        else if (!strcmp(t->name, "output.weight")) j.layer = wm->hp.n_layer;
        j.fmt = x->fmt;
        j.w = t->w;
        j.cols = row_len(t);
        j.rows = nelem(t) / j.cols;
        j.rht_block = t->rht_block;
        j.rht_seed = t->rht_seed;
        j.dst = x->owned;
        if (im && !is_plain(&x->fmt)) {
            int64_t nval = 0;
            const float *v = kv_imatrix_find(im, t->name, &nval);
            if (v && nval == j.cols) j.importance = v;
        }
        /* calibrated methods also get plain-format matrices (watersic stores its decoded weights as f16/f32) */
        if ((is_plain(&x->fmt) && !meth->needs_calib) || t->n_dims < 2) plain[np++] = j;
        else jobs[nj++] = j;
    }
    (void)mf;
    if (st == KV_OK && np > 0) st = kv_method_rtn_jobs(mc, plain, np, err);
    if (st == KV_OK && nj > 0) {
        mc->jobs = jobs;
        mc->n_jobs = nj;
        mc->progress = prog;
        st = meth->run(mc, err);
    }
    take_var_outputs(ot, wm->n, jobs, nj);
    free(jobs);
    free(plain);
    return st;
}

kv_status kv_quantize_model(const char *model_path, const char *out_path, const kv_quantize_opts *opts_in,
                            kv_quantize_report *rep, kv_error *err) {
    kv_quantize_opts o = opts_in ? *opts_in : (kv_quantize_opts){0};
    kv_quantize_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    const double t0 = kv_now_seconds();
    if (!model_path || !out_path) return kv_fail(err, KV_EINVAL, "model and output paths are required");
    const char *format = o.format ? o.format : "q4_k_m";
    char method_name[64] = "rtn";
    const char *method_opts = "";
    if (o.method) {
        const char *colon = strchr(o.method, ':');
        size_t l = colon ? (size_t)(colon - o.method) : strlen(o.method);
        if (l >= sizeof method_name) return kv_fail(err, KV_EINVAL, "method name too long");
        memcpy(method_name, o.method, l);
        method_name[l] = 0;
        method_opts = colon ? colon + 1 : "";
    }
    const kv_quant_method *meth = kv_quant_method_find(method_name);
    if (!meth) return kv_fail(err, KV_EINVAL, "unknown method '%s' (valid: %s)", method_name, kv_quant_method_names());
    /* llm-int8 stores the linears in its own int8 format, and like bitsandbytes keeps the embedding and the head
     * in fp16 (unless its `head` option converts the head); it needs no importance */
    const int llmint8 = meth->run == kv_method_llmint8;
    char opt_buf[8];
    if (llmint8) {
        float threshold;
        int head;
        kv_status ost = kv_llmint8_parse_options(method_opts, &threshold, &head, err); /* before any slow work */
        if (ost != KV_OK) return ost;
        if (o.out_format != KV_OUT_GGUF)
            return kv_fail(err, KV_EUNSUPPORTED, "llm-int8 stores its outlier columns in the GGUF: use GGUF output");
        o.no_imatrix = 1;
    }
    if (llmint8 && !o.format) format = KV_LLMINT8_FORMAT;

    transform_set ts;
    kv_status st = parse_transforms(o.transforms, &ts, err);
    if (st != KV_OK) return st;
    if ((ts.smooth || ts.awq) && !o.calib_path)
        return kv_fail(err, KV_EINVAL, "%s needs calibration text (--calib FILE)", ts.smooth ? "smoothquant" : "awq");
    if (meth->needs_calib && !o.calib_path) return kv_fail(err, KV_EINVAL, "method %s needs calibration text (--calib FILE)", meth->name);
    if ((o.entropy_code || meth->run == kv_method_watersic) && o.out_format == KV_OUT_SAFETENSORS)
        return kv_fail(err, KV_EINVAL, "entropy-coded tensors (%s) are written to GGUF only",
                       o.entropy_code ? "--entropy-code" : "--method watersic");
    if (o.imatrix_path && (ts.rht || ts.quarot))
        return kv_fail(err, KV_EINVAL, "--imatrix holds importance in the unrotated basis: with rht/quarot compute it from --calib instead");
    kv_format actf;
    int act_none;
    if ((st = kv_act_format(o.act, &actf, &act_none, err)) != KV_OK) return st;

    kv_policy pol;
    if ((st = kv_policy_init(&pol, format, err)) != KV_OK) return st;
    pol.pure = o.pure;
    if (llmint8 && !o.format) {
        kv_strlcpy(pol.embd_format, "f16", sizeof pol.embd_format);
        if (!kv_method_option(method_opts, "head", opt_buf, sizeof opt_buf)) kv_strlcpy(pol.head_format, "f16", sizeof pol.head_format);
    }
    for (int i = 0; i < o.n_overrides && st == KV_OK; i++) st = kv_policy_add_override(&pol, o.overrides[i], err);
    if (st == KV_OK) st = check_out_dir(out_path, err);

    kv_model_file *mf = NULL;
    kv_wmodel wm = {0};
    kv_imatrix *im = NULL;
    int32_t *cids = NULL;
    int64_t n_cids = 0;
    kv_model *cal = NULL;
    kv_act_stats stats = {0};
    out_tensor *ot = NULL;
    const int32_t ctx = o.calib_ctx > 0 ? o.calib_ctx : 512;
    char applied[128] = "";
    kv_progress prog;
    extra_out xo = {0};

    if (st == KV_OK) st = kv_model_open(model_path, &mf, err);
    if (st == KV_OK && !kv_model_hparams(mf)->n_layer)
        st = kv_fail(err, KV_EUNSUPPORTED, "'%s' has no model hyper-parameters (a lone safetensors file?)", model_path);
    if (st == KV_OK) st = wmodel_load(mf, &wm, err);
    if (st == KV_OK && o.imatrix_path) {
        if ((st = kv_imatrix_load(o.imatrix_path, &im, err)) == KV_OK) pol.has_imatrix = 1;
    }
    if (st == KV_OK && o.calib_path) st = calib_tokens(mf, &o, ctx, &cids, &n_cids, err);
    if (st == KV_OK && !im && cids && !o.no_imatrix) pol.has_imatrix = 1; /* computed below */

    /* channel rescaling first: its statistics are the original model's activations */
    if (st == KV_OK && ts.smooth) {
        kv_model *base = NULL;
        if ((st = kv_model_load(mf, NULL, &base, err)) == KV_OK) {
            st = collect_act_stats(base, cids, n_cids, ctx, o.pool, &stats, err);
            kv_model_free(base);
        }
        if (st == KV_OK && ts.smooth) {
            st = kv_transform_smoothquant(&wm, &stats, ts.alpha, err);
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%ssmoothquant:%.2f", applied[0] ? "," : "", (double)ts.alpha);
        }
    }
    /* formats are known before AWQ (its search quantizes with them) */
    if (st == KV_OK) {
        ot = kv_calloc((size_t)KV_MAX(wm.n + 1, 1), sizeof *ot, err);
        if (!ot) st = KV_ENOMEM;
    }
    if (st == KV_OK) st = choose_formats(mf, &wm, &pol, &ts, &o, ot, rep, err);
    if (st == KV_OK && ts.awq) {
        char summary[320] = "";
        struct { out_tensor *ot; int64_t n; } u = {ot, wm.n};
        kv_model *base = NULL; /* the unquantized model AWQ runs block by block */
        if ((st = kv_model_load(mf, NULL, &base, err)) == KV_OK)
            st = kv_transform_awq(&wm, base, cids, n_cids, ctx, awq_format_of, &u, !o.transform_only, o.pool, NULL,
                                  summary, sizeof summary, err);
        kv_model_free(base);
        if (st == KV_OK) {
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%sawq", applied[0] ? "," : "");
            if (summary[0]) note(&o, "awq: %s", summary);
        }
    }
    if (st == KV_OK && ts.fold && !ts.quarot) {
        if ((st = kv_transform_fold_norms(&wm, err)) == KV_OK)
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%sfold-norms", applied[0] ? "," : "");
    }
    if (st == KV_OK && ts.quarot) {
        if ((st = kv_transform_quarot(&wm, o.seed, err)) == KV_OK)
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%squarot", applied[0] ? "," : "");
    }
    if (st == KV_OK && ts.rht) {
        if ((st = kv_transform_rht(&wm, ts.rht_block, o.seed, err)) == KV_OK)
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%srht:%d", applied[0] ? "," : "", (int)ts.rht_block);
    }
    if (st == KV_OK && ts.prescale)
        snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%sprescale", applied[0] ? "," : "");
    kv_strlcpy(rep->transforms, applied, sizeof rep->transforms);
    /* quarot may have created output.weight: formats again for the final tensor list */
    if (st == KV_OK && wm.untied) {
        kv_quantize_opts silent = o; /* the notes were given the first time */
        silent.log = NULL;
        st = choose_formats(mf, &wm, &pol, &ts, &silent, ot, &(kv_quantize_report){0}, err);
    }

    if (st == KV_OK && o.transform_only) {
        kv_format f32;
        if ((st = kv_format_from_type(KV_TYPE_F32, &f32, err)) == KV_OK)
            for (int64_t i = 0; i < wm.n; i++) {
                ot[i].fmt = f32;
                ot[i].type = KV_TYPE_F32;
                ot[i].row_bytes = (size_t)row_len(&wm.t[i]) * 4;
                ot[i].nbytes = (uint64_t)nelem(&wm.t[i]) * 4;
            }
    }
    /* importance and calibrated methods run on the transformed, unquantized model */
    if (st == KV_OK && cids && !o.transform_only && (meth->needs_calib || (!im && !o.no_imatrix))) {
        st = wmodel_to_model(mf, &wm, &cal, err);
        if (st == KV_OK && !im && !o.no_imatrix) {
            if ((st = kv_imatrix_create(&im, err)) == KV_OK) {
                kv_imatrix_set_dataset(im, o.calib_path);
                kv_progress_begin(&prog, "imatrix", n_cids / ctx, o.quiet);
                st = collect_imatrix(cal, &wm, cids, n_cids, ctx, o.pool, im, &prog, err);
                kv_progress_end(&prog);
            }
        }
    }
    if (st == KV_OK) {
        kv_quant_method_ctx mc = {0};
        mc.model = cal;
        mc.calib_ids = cids;
        mc.n_calib_ids = n_cids;
        mc.calib_ctx = ctx;
        mc.options = method_opts;
        mc.seed = o.seed;
        mc.pool = o.pool;
        mc.log = o.log;
        mc.log_user = o.log_user;
        if (o.out_format == KV_OUT_GGUF) {
            mc.add_meta = extra_add_meta;
            mc.add_tensor = extra_add_tensor;
            mc.out_user = &xo;
        }
        kv_progress_begin(&prog, "quantize", wm.n, o.quiet);
        st = produce_bytes(mf, &wm, ot, meth, &mc, im, &prog, err);
        kv_progress_end(&prog);
        if (st == KV_OK && o.entropy_code) st = entropy_code_tensors(ot, wm.n, &o, err);
    }
    if (st == KV_OK) {
        run_info ri = {&pol, o.method ? o.method : "rtn", applied, act_none ? NULL : o.act, o.seed};
        uint64_t total = 0;
        for (int64_t i = 0; i < wm.n; i++) total += ot[i].nbytes;
        if (o.out_format == KV_OUT_SAFETENSORS) st = write_safetensors(ot, wm.n, &ri, out_path, err);
        else {
            kv_progress_begin(&prog, "write", (int64_t)total, o.quiet);
            st = write_gguf(mf, &wm, ot, wm.n, &ri, &xo, out_path, &prog, err);
            kv_progress_end(&prog);
        }
    }
    if (st == KV_OK) {
        for (int64_t i = 0; i < wm.n; i++) {
            rep->n_tensors++;
            rep->n_params += nelem(&wm.t[i]);
            rep->tensor_bytes += ot[i].nbytes;
            if (!is_plain(&ot[i].fmt) || ot[i].type == KV_TYPE_ECW) rep->n_quantized++;
        }
        for (int64_t i = 0; i < xo.n; i++) /* a method's extra tensors are storage too (not parameters) */
            if (xo.it[i].is_tensor) rep->tensor_bytes += xo.it[i].nbytes;
        struct stat sb;
        if (stat(out_path, &sb) == 0) rep->file_bytes = (uint64_t)sb.st_size;
        rep->bpw = rep->n_params ? (double)rep->tensor_bytes * 8.0 / (double)rep->n_params : 0;
    }
    rep->seconds = kv_now_seconds() - t0;
    if (st != KV_OK && err && !err->file[0] && !err->tensor[0]) kv_error_context(err, model_path, -1, NULL);
    for (int64_t i = 0; ot && i < wm.n; i++) free(ot[i].owned);
    free(ot);
    kv_act_stats_free(&stats);
    kv_model_free(cal);
    kv_imatrix_free(im);
    free(cids);
    wmodel_free(&wm);
    kv_model_close(mf);
    kv_policy_free(&pol);
    extra_free(&xo);
    return st;
}
