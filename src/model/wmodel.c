/* wmodel.c — the working model: fp32 copies of every tensor of a model file that the transforms edit
 * (kv_wmodel_load), a tied head made separate (kv_wmodel_untie), and a runnable kv_model built from it
 * (kv_wmodel_to_model) for calibration. */
#include "model/wmodel.h"
#include "io/gguf.h"
#include "io/model_file.h"
#include "model/model.h"
#include <stdio.h>

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

void kv_wmodel_free(kv_wmodel *wm) {
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
    o->w = kv_malloc((size_t)kv_wtensor_nelem(e) * sizeof(float), err);
    if (!o->w) return KV_ENOMEM;
    memcpy(o->w, e->w, (size_t)kv_wtensor_nelem(e) * sizeof(float));
    wm->untied = 1;
    return KV_OK;
}

/* The kv_format of a source tensor (ggml ids directly, kvant-only ids through their metadata name). */
static kv_status source_format(const kv_model_file *mf, const kv_tensor *t, kv_format *f, kv_error *err) {
    if (t->type >= KV_TYPE_KVANT_BASE) { /* GGUF metadata, or what a quantized HF directory's reader recorded */
        char key[256];
        snprintf(key, sizeof key, "kvant.tensor.%s.format", t->name);
        const char *name = kv_model_meta_string(mf, key);
        if (name) return kv_format_get(name, f, err);
    }
    return kv_format_from_type(t->type, f, err);
}

kv_status kv_wtensor_read(const kv_model_file *mf, kv_wtensor *t, kv_error *err) {
    const kv_tensor *src = t->src;
    if (src->type == KV_TYPE_ECW) { /* entropy-coded: decoded whole, re-quantized like any fp32 weight */
        t->w = kv_malloc((size_t)kv_wtensor_nelem(t) * sizeof(float), err);
        if (!t->w) return KV_ENOMEM;
        return kv_ecw_tensor_to_f32(mf, src, t->w, NULL, err);
    }
    kv_format f;
    kv_status st = source_format(mf, src, &f, err);
    if (st != KV_OK || !f.dequantize) {
        if (st == KV_OK) st = kv_fail(err, KV_EUNSUPPORTED, "type %s cannot be dequantized", f.name);
        kv_error_context(err, kv_model_path(mf), (int64_t)src->offset, src->name);
        return st;
    }
    int64_t n = kv_wtensor_nelem(t), cols = kv_wtensor_row_len(t), rows = n / cols;
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
        f.dequantize(&f, kv_tensor_row_bytes(src, r), t->w + r * cols, cols);
    kv_model_drop_pages(mf, src); /* streaming must not grow the resident set with the mapped source */
    return KV_OK;
}

static kv_status wmodel_load(const kv_model_file *mf, kv_wmodel *wm, int lazy, kv_error *err) {
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
        if (lazy) continue;
        kv_status st = kv_wtensor_read(mf, t, err);
        if (st != KV_OK) return st;
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

kv_status kv_wmodel_load(const kv_model_file *mf, kv_wmodel *wm, kv_error *err) { return wmodel_load(mf, wm, 0, err); }

kv_status kv_wmodel_load_lazy(const kv_model_file *mf, kv_wmodel *wm, kv_error *err) { return wmodel_load(mf, wm, 1, err); }

static kv_status set_norm(float *dst, const kv_wtensor *t, int64_t n, kv_error *err) {
    if (!dst || !t) return KV_OK;
    if (kv_wtensor_nelem(t) != n) return kv_fail(err, KV_EINVAL, "norm %s has %lld elements, expected %lld", t->name, (long long)kv_wtensor_nelem(t), (long long)n);
    memcpy(dst, t->w, (size_t)n * sizeof(float));
    return KV_OK;
}

kv_status kv_wmodel_to_model(const kv_model_file *mf, const kv_wmodel *wm, kv_model **out, kv_error *err) {
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
            size_t bytes = (size_t)kv_wtensor_nelem(t) * sizeof(float);
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
                    if (w && w->bias && kv_wtensor_nelem(t) == w->rows) memcpy(w->bias, t->w, (size_t)w->rows * sizeof(float));
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
