/* quantize_bytes.c — the pipeline's quantization step: every tensor's bytes from the method (or a raw copy of
 * a tensor kept as stored), a method's variable-size outputs, and --entropy-code. */
#include "algos/pipeline.h"
#include <stdio.h>

/* A method's variable-size outputs (WaterSIC's ECW containers) replace the fixed-size rows of their tensors;
 * outputs of a failed run are freed too. */
static void take_var_outputs(kv_qtensor *ot, int64_t n, kv_quant_job *jobs, int64_t nj) {
    for (int64_t k = 0; k < nj; k++) {
        if (!jobs[k].out_data) continue;
        kv_qtensor *x = NULL;
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

/* `--entropy-code`'s choice for one tensor: *code = 0 leaves it as it is (plain f32/f16/bf16, already coded),
 * 1 codes it; a format the container cannot hold is refused, naming the tensor. */
kv_status kv_qentropy_select(const kv_qtensor *x, int *code, kv_error *err) {
    *code = 0;
    if (kv_format_is_plain(&x->fmt) || x->type == KV_TYPE_ECW) return KV_OK;
    if (!kv_ecw_packed_supported(&x->fmt) || x->wt->n_dims != 2) {
        kv_fail(err, KV_EUNSUPPORTED, "--entropy-code: format %s is not supported (supported: %s)", x->fmt.name,
                kv_ecw_packed_formats());
        kv_error_context(err, NULL, -1, x->wt->name);
        return KV_EUNSUPPORTED;
    }
    *code = 1;
    return KV_OK;
}

/* `--entropy-code`: the codes of every integer-format tensor go into an ECW version 5 container (the
 * "Huffman-GPTQ" baseline); plain f32/f16/bf16 tensors stay as they are, other formats are refused. */
kv_status kv_qentropy_code(kv_qtensor *ot, int64_t n, const kv_quantize_opts *o, kv_error *err) {
    uint64_t before = 0, after = 0;
    int64_t coded = 0;
    double weights = 0;
    for (int64_t i = 0; i < n; i++) {
        kv_qtensor *x = &ot[i];
        int code = 0;
        if (kv_qentropy_select(x, &code, err) != KV_OK) return KV_EUNSUPPORTED;
        if (!code) continue;
        const kv_wtensor *t = x->wt;
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
        kv_qnote(o, "entropy-code: %lld tensors, %llu bytes packed (%.4f bits/weight) -> %llu bytes entropy-coded (%.4f "
             "bits/weight, %.2f%%)", (long long)coded, (unsigned long long)before, (double)before * 8.0 / weights,
             (unsigned long long)after, (double)after * 8.0 / weights, 100.0 * (double)after / (double)before);
    return KV_OK;
}

/* Quantizes (method for real formats, direct conversion for f32/f16/bf16, raw copies for untouched tensors
 * kept in their source type). */
kv_status kv_qproduce_bytes(const kv_model_file *mf, kv_wmodel *wm, kv_qtensor *ot, const kv_quant_method *meth,
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
        kv_qtensor *x = &ot[i];
        kv_wtensor *t = x->wt;
        /* (matrices of a calibrated method always go to it: watersic stores them entropy-coded whatever --format) */
        if (t->src && !t->modified && x->type == t->src->type && t->src->nbytes == x->nbytes &&
            !(meth->needs_calib && t->n_dims >= 2)) {
            if (t->src->qk_heads <= 0) { /* kept exactly as stored */
                x->data = t->src->data;
                continue;
            }
            if (!(x->owned = kv_malloc(x->nbytes, err))) { st = KV_ENOMEM; break; }
            x->data = x->owned; /* GGUF q/k rows: un-permuted here, permuted again by the writer */
            st = kv_tensor_copy_bytes(t->src, x->owned, err);
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
        j.cols = kv_wtensor_row_len(t);
        j.rows = kv_wtensor_nelem(t) / j.cols;
        j.rht_block = t->rht_block;
        j.rht_seed = t->rht_seed;
        j.dst = x->owned;
        if (im && !kv_format_is_plain(&x->fmt)) {
            int64_t nval = 0;
            const float *v = kv_imatrix_find(im, t->name, &nval);
            if (v && nval == j.cols) j.importance = v;
        }
        /* calibrated methods also get plain-format matrices (watersic stores its decoded weights as f16/f32) */
        if ((kv_format_is_plain(&x->fmt) && !meth->needs_calib) || t->n_dims < 2) plain[np++] = j;
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
