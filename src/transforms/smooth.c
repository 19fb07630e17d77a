/* smooth.c — SmoothQuant (Xiao et al., arXiv 2211.10438 §4; mit-han-lab/smoothquant smooth.py
 * smooth_ln_fcs_llama_like): per input channel j of the linears fed by an RMSNorm,
 *   s_j = max(max|X_j|^α / max|W_j|^(1−α), 1e-5),  max|W_j| over every row of every linear fed (min 1e-5),
 * then norm.weight /= s and W[:, j] *= s_j, which moves activation outliers into the weights while the model
 * computes the same function. Applied to attn_norm → q/k/v and ffn_norm → gate/up (as the reference does for
 * Llama); activation maxima come from the calibration pass (quantize_calib.c kv_qcollect_act_stats). */
#include "algos/quantize.h"
#include <math.h>
#include <stdio.h>

static kv_status smooth_group(kv_wtensor *norm, kv_wtensor **fcs, int n, const kv_act_point *p, float alpha,
                              kv_error *err) {
    if (!norm || !p->absmax) return kv_fail(err, KV_ENOTFOUND, "smoothquant: no activation statistics for %s", norm ? norm->name : "a norm");
    const int64_t dim = norm->shape[0];
    if (p->dim != dim) return kv_fail(err, KV_EINVAL, "smoothquant: %s has %lld features, activations %lld", norm->name, (long long)dim, (long long)p->dim);
    float *s = kv_malloc((size_t)dim * sizeof(float), err);
    if (!s) return KV_ENOMEM;
    for (int64_t j = 0; j < dim; j++) {
        float wmax = 0.0f;
        for (int i = 0; i < n; i++) {
            if (!fcs[i]) continue;
            const int64_t rows = fcs[i]->shape[0], cols = fcs[i]->shape[1];
            for (int64_t r = 0; r < rows; r++) wmax = fmaxf(wmax, fabsf(fcs[i]->w[r * cols + j]));
        }
        wmax = fmaxf(wmax, 1e-5f);
        double v = pow((double)p->absmax[j], alpha) / pow((double)wmax, 1.0 - alpha);
        s[j] = (float)fmax(v, 1e-5);
    }
    for (int64_t j = 0; j < dim; j++) norm->w[j] /= s[j];
    norm->modified = 1;
    for (int i = 0; i < n; i++) {
        if (!fcs[i]) continue;
        if (fcs[i]->shape[1] != dim) {
            free(s);
            return kv_fail(err, KV_EINVAL, "smoothquant: %s does not take %lld features", fcs[i]->name, (long long)dim);
        }
        const int64_t rows = fcs[i]->shape[0];
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < dim; j++) fcs[i]->w[r * dim + j] *= s[j];
        fcs[i]->modified = 1;
    }
    free(s);
    return KV_OK;
}

kv_status kv_transform_smoothquant(kv_wmodel *wm, const kv_act_stats *st, float alpha, kv_error *err) {
    if (!st || !st->p) return kv_fail(err, KV_EINVAL, "smoothquant needs calibration statistics");
    kv_status rc = KV_OK;
    for (int l = 0; l < wm->hp.n_layer && l < st->n_layer && rc == KV_OK; l++) {
        kv_wtensor *qkv[3] = {kv_wmodel_layer(wm, l, "attn_q.weight"), kv_wmodel_layer(wm, l, "attn_k.weight"),
                              kv_wmodel_layer(wm, l, "attn_v.weight")};
        kv_wtensor *gu[2] = {kv_wmodel_layer(wm, l, "ffn_gate.weight"), kv_wmodel_layer(wm, l, "ffn_up.weight")};
        rc = smooth_group(kv_wmodel_layer(wm, l, "attn_norm.weight"), qkv, 3, &st->p[l * KV_ACT_POINTS + 0], alpha, err);
        if (rc == KV_OK)
            rc = smooth_group(kv_wmodel_layer(wm, l, "ffn_norm.weight"), gu, 2, &st->p[l * KV_ACT_POINTS + 2], alpha, err);
    }
    return rc;
}
