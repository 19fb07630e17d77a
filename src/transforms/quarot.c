/* quarot.c — QuaRot-style whole-model rotation (Ashkboos et al., arXiv 2404.00456 §4; spcl/QuaRot
 * fake_quant/rotation_utils.py fuse_layer_norms / rotate_model / rotate_ov_proj and main.py's online
 * down_proj Hadamard), on the pipeline's fp32 working copy:
 *   1. fold every RMSNorm gain into the linears it feeds (W ← W·diag(γ); the norm becomes 1);
 *   2. rotate the residual stream by Q = blockdiag(H·diag(s))/√b (randomized Hadamard, seeded): embedding rows
 *      and the inputs of q/k/v/gate/up/head (rows w ← Q·w), the outputs of o/down (columns c ← Q·c);
 *   3. per-head Hadamard on v's output rows and o's input columns (exact Hadamard of size head_dim);
 *   4. online Hadamards before ffn_down and attn_output: the weight's rows rotated offline, the activation at
 *      run time (recorded as the weight's rht, so the forward pass applies it).
 * Since RMSNorm(Q·x) = Q·RMSNorm(x) for orthogonal Q once the gains are folded, the unquantized model computes
 * the same function (tests/test_transforms.c checks the logits). */
#include "algos/quantize.h"
#include "kernels/cpu/hadamard.h"
#include <stdio.h>

static int64_t numel(const kv_wtensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
    return n;
}

/* W[:, j] *= g[j] for a [rows × cols] matrix */
static void scale_columns(kv_wtensor *w, const float *g) {
    if (!w) return;
    int64_t rows = w->shape[0], cols = w->shape[1];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) w->w[r * cols + c] *= g[c];
    w->modified = 1;
}

/* each row w ← R·w */
static void rotate_rows(kv_wtensor *w, int32_t block, const float *signs) {
    if (!w) return;
    int64_t rows = w->n_dims == 2 ? w->shape[0] : 1, cols = w->shape[w->n_dims - 1];
    for (int64_t r = 0; r < rows; r++) kv_rht_apply(w->w + r * cols, cols, block, signs);
    w->modified = 1;
}

/* each column c ← R·c (R acts on the output rows); tmp holds one column */
static void rotate_columns(kv_wtensor *w, int32_t block, const float *signs, float *tmp) {
    if (!w) return;
    int64_t rows = w->shape[0], cols = w->shape[1];
    for (int64_t c = 0; c < cols; c++) {
        for (int64_t r = 0; r < rows; r++) tmp[r] = w->w[r * cols + c];
        kv_rht_apply(tmp, rows, block, signs);
        for (int64_t r = 0; r < rows; r++) w->w[r * cols + c] = tmp[r];
    }
    w->modified = 1;
}

static void set_ones(kv_wtensor *t) {
    for (int64_t i = 0; i < numel(t); i++) t->w[i] = 1.0f;
    t->modified = 1;
}

static kv_status fold_norm(kv_wmodel *wm, kv_wtensor *norm, kv_wtensor **targets, int n, kv_error *err) {
    if (!norm) return kv_fail(err, KV_ENOTFOUND, "quarot: a norm tensor is missing");
    for (int i = 0; i < n; i++) {
        if (!targets[i]) continue;
        if (targets[i]->n_dims != 2 || targets[i]->shape[1] != numel(norm))
            return kv_fail(err, KV_EINVAL, "quarot: %s does not take %s's %lld features", targets[i]->name, norm->name,
                           (long long)numel(norm));
        scale_columns(targets[i], norm->w);
    }
    set_ones(norm);
    (void)wm;
    return KV_OK;
}

/* Step 1 alone (also `--transform fold-norms`: QuaRot without its rotations, the ablation in docs/RESULTS.md). */
kv_status kv_transform_fold_norms(kv_wmodel *wm, kv_error *err) {
    const kv_hparams *hp = &wm->hp;
    kv_status st = kv_wmodel_untie(wm, err); /* the head gets the final norm's gain, the embedding does not */
    for (int l = 0; l < hp->n_layer && st == KV_OK; l++) {
        kv_wtensor *qkv[3] = {kv_wmodel_layer(wm, l, "attn_q.weight"), kv_wmodel_layer(wm, l, "attn_k.weight"),
                              kv_wmodel_layer(wm, l, "attn_v.weight")};
        kv_wtensor *gu[2] = {kv_wmodel_layer(wm, l, "ffn_gate.weight"), kv_wmodel_layer(wm, l, "ffn_up.weight")};
        st = fold_norm(wm, kv_wmodel_layer(wm, l, "attn_norm.weight"), qkv, 3, err);
        if (st == KV_OK) st = fold_norm(wm, kv_wmodel_layer(wm, l, "ffn_norm.weight"), gu, 2, err);
    }
    kv_wtensor *head = kv_wmodel_find(wm, "output.weight");
    if (st == KV_OK) st = fold_norm(wm, kv_wmodel_find(wm, "output_norm.weight"), &head, 1, err);
    return st;
}

kv_status kv_transform_quarot(kv_wmodel *wm, uint64_t seed, kv_error *err) {
    const kv_hparams *hp = &wm->hp;
    const int64_t d = hp->n_embd, hd = hp->head_dim;
    if (d <= 0 || hd <= 0 || hp->n_layer <= 0) return kv_fail(err, KV_EINVAL, "quarot: model hyper-parameters are missing");
    if (!kv_rht_block_supported(hd))
        return kv_fail(err, KV_EUNSUPPORTED, "quarot: head_dim %lld has no Hadamard matrix (need K*2^m, K in {1,12,20,28})", (long long)hd);
    for (int l = 0; l < hp->n_layer; l++) {
        kv_wtensor *down = kv_wmodel_layer(wm, l, "ffn_down.weight"), *o = kv_wmodel_layer(wm, l, "attn_output.weight");
        if (down && down->rht_block > 0) return kv_fail(err, KV_EINVAL, "quarot: %s is already rotated", down->name);
        if (o && o->rht_block > 0) return kv_fail(err, KV_EINVAL, "quarot: %s is already rotated", o->name);
    }
    /* 1. fold the RMSNorm gains */
    kv_status st = kv_transform_fold_norms(wm, err);
    if (st != KV_OK) return st;
    kv_wtensor *head = kv_wmodel_find(wm, "output.weight");

    /* 2. residual rotation */
    const int32_t rb = (int32_t)kv_rht_best_block(d, d);
    float *signs = kv_malloc((size_t)d * sizeof(float), err);
    float *tmp = kv_malloc((size_t)KV_MAX(d, hp->n_ff) * sizeof(float), err);
    if (!signs || !tmp) {
        free(signs);
        free(tmp);
        return KV_ENOMEM;
    }
    kv_rht_signs(kv_rht_tensor_seed(seed, "quarot.residual"), d, signs);
    rotate_rows(kv_wmodel_find(wm, "token_embd.weight"), rb, signs);
    rotate_rows(head, rb, signs);
    for (int l = 0; l < hp->n_layer; l++) {
        static const char *const in_side[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_gate.weight", "ffn_up.weight"};
        for (size_t i = 0; i < KV_ARRAY_LEN(in_side); i++) rotate_rows(kv_wmodel_layer(wm, l, in_side[i]), rb, signs);
        rotate_columns(kv_wmodel_layer(wm, l, "attn_output.weight"), rb, signs, tmp);
        rotate_columns(kv_wmodel_layer(wm, l, "ffn_down.weight"), rb, signs, tmp);
        kv_wtensor *ob = kv_wmodel_layer(wm, l, "attn_output.bias");
        if (ob) rotate_rows(ob, rb, signs);
        kv_wtensor *db = kv_wmodel_layer(wm, l, "ffn_down.bias");
        if (db) rotate_rows(db, rb, signs);
    }

    /* 3. per-head Hadamard: v's output rows (per kv head) and o's input columns (per head) */
    for (int l = 0; l < hp->n_layer; l++) {
        kv_wtensor *v = kv_wmodel_layer(wm, l, "attn_v.weight"), *o = kv_wmodel_layer(wm, l, "attn_output.weight");
        if (v) rotate_columns(v, (int32_t)hd, NULL, tmp);
        kv_wtensor *vb = kv_wmodel_layer(wm, l, "attn_v.bias");
        if (vb) rotate_rows(vb, (int32_t)hd, NULL);
        if (o) rotate_rows(o, (int32_t)hd, NULL);
    }

    /* 4. online Hadamards before ffn_down (QuaRot's R4) and before attn_output (QuaRot's online cross-head
     *    Hadamard: here a randomized Hadamard over all n_head·head_dim inputs, on top of the per-head one) */
    for (int l = 0; l < 2 * hp->n_layer; l++) {
        kv_wtensor *down = kv_wmodel_layer(wm, l / 2, l % 2 ? "attn_output.weight" : "ffn_down.weight");
        if (!down || down->rht_block > 0) continue;
        int64_t ff = down->shape[1];
        down->rht_block = (int32_t)kv_rht_best_block(ff, ff);
        down->rht_seed = kv_rht_tensor_seed(seed, down->name);
        float *s = kv_malloc((size_t)ff * sizeof(float), err);
        if (!s) {
            free(signs);
            free(tmp);
            return KV_ENOMEM;
        }
        kv_rht_signs(down->rht_seed, ff, s);
        rotate_rows(down, down->rht_block, s);
        free(s);
    }
    free(signs);
    free(tmp);
    return KV_OK;
}

/* rht's choice for one tensor: every linear's weight but the embedding and those already rotated online gets
 * the block (or the largest supported block dividing its row) and its own seed. 1 when t is to be rotated. */
static int rht_plan(kv_wtensor *t, int32_t block, uint64_t seed) {
    if (t->n_dims != 2 || !strcmp(t->name, "token_embd.weight") || t->rht_block > 0) return 0;
    size_t len = strlen(t->name);
    if (len < 7 || strcmp(t->name + len - 7, ".weight")) return 0;
    int64_t cols = t->shape[1];
    t->rht_block = cols % block == 0 ? block : (int32_t)kv_rht_best_block(cols, block);
    t->rht_seed = kv_rht_tensor_seed(seed, t->name);
    return 1;
}

static kv_status rht_rotate(kv_wtensor *t, kv_error *err) {
    float *s = kv_malloc((size_t)t->shape[1] * sizeof(float), err);
    if (!s) return KV_ENOMEM;
    kv_rht_signs(t->rht_seed, t->shape[1], s);
    rotate_rows(t, t->rht_block, s);
    free(s);
    return KV_OK;
}

kv_status kv_transform_rht(kv_wmodel *wm, int32_t block, uint64_t seed, kv_error *err) {
    for (int64_t i = 0; i < wm->n; i++) {
        kv_wtensor *t = &wm->t[i];
        if (!rht_plan(t, block, seed)) continue;
        kv_status st = rht_rotate(t, err);
        if (st != KV_OK) return st;
    }
    return KV_OK;
}

void kv_transform_rht_plan(kv_wmodel *wm, int32_t block, uint64_t seed) {
    for (int64_t i = 0; i < wm->n; i++)
        if (rht_plan(&wm->t[i], block, seed)) {
            wm->t[i].rht_pending = 1;
            wm->t[i].modified = 1; /* never copied as stored */
        }
}

kv_status kv_rht_rotate_pending(kv_wtensor *t, kv_error *err) {
    if (!t->rht_pending) return KV_OK;
    if (!t->w) return kv_fail(err, KV_EINVAL, "internal: %s is rotated before it is read", t->name);
    return rht_rotate(t, err);
}
