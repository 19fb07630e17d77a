/* quantize_calib.c — the pipeline's calibration data: the token windows of --calib, the activation
 * statistics SmoothQuant needs, and the importance matrix collected in the transformed basis. */
#include "algos/pipeline.h"
#include "model/model.h"
#include <math.h>
#include <stdio.h>

/* [BOS] + encode(text), then n_win windows of ctx tokens at starts drawn from kv_rng(seed) (GPTQ's
 * datautils: random windows of the calibration text). */
kv_status kv_qcalib_tokens(const kv_model_file *mf, const kv_quantize_opts *o, int32_t ctx, int32_t **ids_out,
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

kv_status kv_qcollect_act_stats(const kv_model *m, const int32_t *ids, int64_t n, int32_t ctx, kv_pool *pool,
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

kv_status kv_qcollect_imatrix(const kv_model *m, kv_wmodel *wm, const int32_t *ids, int64_t n, int32_t ctx,
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

/* The same imatrix while streaming (docs/quantize.md "Memory"): the windows go through the model one decoder
 * block at a time, that block's linears read from the source in fp32 (rotated as the working copy would be)
 * just then and given back after it; each window's block output is the next block's input, and the head's
 * input is the final norm of the last block's output (kv_forward's steps, called one by one). Every entry sees
 * the same tokens in the same order as in kv_qcollect_imatrix, so the means are the same bits. Peak: the
 * windows' activations and one block's fp32 linears. */
typedef struct block_weight {
    kv_wtensor *t;
    kv_format fmt;      /* the model's own weight, put back after the block */
    const void *data;
} block_weight;

static kv_status load_block(const kv_model_file *mf, kv_model *m, kv_wmodel *wm, int layer, block_weight *bw,
                            int *nbw, kv_error *err) {
    kv_format f32;
    kv_status st = kv_format_from_type(KV_TYPE_F32, &f32, err);
    *nbw = 0;
    for (int64_t i = 0; i < wm->n && st == KV_OK; i++) {
        kv_wtensor *t = &wm->t[i];
        int l;
        kv_linear_id which;
        if (t->n_dims != 2 || kv_model_linear_by_name(m, t->name, &l, &which) != 0 || l != layer ||
            which == KV_LINEAR_HEAD || *nbw >= KV_LINEAR_COUNT)
            continue;
        const kv_weight *w0 = kv_model_weight(m, l, which);
        block_weight *b = &bw[(*nbw)++];
        b->t = t;
        b->fmt = w0->fmt;
        b->data = w0->data;
        if ((st = kv_wtensor_read(mf, t, err)) == KV_OK && (st = kv_rht_rotate_pending(t, err)) == KV_OK)
            st = kv_model_set_weight(m, t->name, &f32, t->w, 0, err);
        if (st == KV_OK && t->rht_block > 0) st = kv_model_set_rht(m, t->name, t->rht_block, t->rht_seed, err);
    }
    return st;
}

static kv_status release_block(kv_model *m, block_weight *bw, int nbw, kv_error *err) {
    kv_status st = KV_OK;
    for (int k = 0; k < nbw; k++) {
        if (st == KV_OK && bw[k].data) st = kv_model_set_weight(m, bw[k].t->name, &bw[k].fmt, bw[k].data, 0, err);
        free(bw[k].t->w);
        bw[k].t->w = NULL;
    }
    return st;
}

kv_status kv_qstream_imatrix(const kv_model_file *mf, kv_model *m, kv_wmodel *wm, const int32_t *ids, int64_t n,
                             int32_t ctx, kv_pool *pool, kv_imatrix *im, kv_progress *prog, kv_error *err) {
    const int64_t d = wm->hp.n_embd, nwin = n / ctx;
    const int L = wm->hp.n_layer;
    kv_context *kc = NULL;
    kv_status st = kv_context_create(m, ctx, &kc, err);
    if (st != KV_OK) return st;
    imx_hook h = {im, wm, NULL, 0, KV_OK, err};
    kv_forward_hooks hooks = {imx_on_input, &h};
    kv_context_set_hooks(kc, &hooks);
    float *hidden = kv_malloc(sizeof(float) * (size_t)KV_MAX(nwin * ctx * d, 1), err);
    float *logits = kv_malloc((size_t)ctx * (size_t)wm->hp.n_vocab * sizeof(float), err);
    if (!hidden || !logits) st = KV_ENOMEM;
    for (int64_t w = 0; w < nwin && st == KV_OK; w++) st = kv_forward_embed(m, ids + w * ctx, ctx, hidden + w * ctx * d, err);
    for (int l = 0; l < L && st == KV_OK; l++) {
        block_weight bw[KV_LINEAR_COUNT];
        int nbw = 0;
        st = load_block(mf, m, wm, l, bw, &nbw, err);
        for (int64_t w = 0; w < nwin && st == KV_OK; w++) {
            st = kv_forward_layer(kc, l, hidden + w * ctx * d, ctx, 0, pool, err);
            if (st == KV_OK) st = h.st;
        }
        kv_status rs = release_block(m, bw, nbw, err);
        if (st == KV_OK) st = rs;
        if (prog) kv_progress_update(prog, l + 1);
    }
    for (int64_t w = 0; w < nwin && st == KV_OK; w++) {
        st = kv_forward_head(kc, hidden + w * ctx * d, ctx, logits, pool, err);
        if (st == KV_OK) st = h.st;
    }
    for (int64_t w = 0; w < nwin && st == KV_OK; w++) kv_imatrix_end_chunk(im);
    if (prog && st == KV_OK) kv_progress_update(prog, L + 1);
    free(hidden);
    free(logits);
    free(h.buf);
    kv_context_free(kc);
    return st;
}
