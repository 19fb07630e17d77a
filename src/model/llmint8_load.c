/* llmint8_load.c — the loader side of LLM.int8() weights (Dettmers et al., arXiv 2208.07339 §3.2; stored as
 * src/algos/llmint8_method.c writes them, docs/FORMAT.md "kvant LLM.int8() weights"): kv_llmint8_attach gives
 * every int8 weight of a loaded model its fp16 outlier columns, so the forward pass runs its int8 kernel
 * (src/kernels/cpu/int8.c); kv_llmint8_summary_read reports the outlier counts a file records. */
#include "io/gguf.h"
#include "io/model_file.h"
#include "model/llmint8.h"
#include "model/model.h"
#include <math.h>
#include <stdio.h>

static kv_status attach_one(kv_weight *w, const kv_model_file *mf, const char *name, const kv_gguf_value *v,
                            kv_error *err) {
    if (v->type != KV_GGUF_ARRAY || v->elem_type != KV_GGUF_I32)
        return kv_fail(err, KV_EFORMAT, "metadata " I8_COLS_KEY " must be an i32 array", name);
    if (strcmp(w->fmt.name, KV_LLMINT8_FORMAT))
        return kv_fail(err, KV_EFORMAT, "an LLM.int8() weight must be stored as %s, not %s", KV_LLMINT8_FORMAT,
                       w->fmt.name);
    if (v->n > (uint64_t)w->cols)
        return kv_fail(err, KV_EFORMAT, "%llu outlier columns for %lld inputs", (unsigned long long)v->n,
                       (long long)w->cols);
    const int64_t nout = (int64_t)v->n;
    const kv_tensor *ot = NULL;
    if (nout > 0) {
        char oname[200];
        snprintf(oname, sizeof oname, I8_OUTL_NAME, name);
        ot = kv_model_find(mf, oname);
        if (!ot) return kv_fail(err, KV_EFORMAT, "tensor %s is missing", oname);
        if (ot->type != KV_TYPE_F16 || ot->n_dims != 2 || ot->shape[0] != w->rows || ot->shape[1] != nout ||
            ot->nbytes != (uint64_t)(w->rows * nout) * 2)
            return kv_fail(err, KV_EFORMAT, "tensor %s must be f16 [%lld, %lld]", oname, (long long)w->rows,
                           (long long)nout);
    }
    int32_t *cols = kv_malloc(sizeof(int32_t) * (size_t)KV_MAX(nout, 1), err);
    uint8_t *mask = kv_calloc((size_t)w->cols, 1, err);
    float *outw = kv_malloc(sizeof(float) * (size_t)KV_MAX(w->rows * nout, 1), err);
    kv_status st = cols && mask && outw ? KV_OK : KV_ENOMEM;
    for (int64_t k = 0; st == KV_OK && k < nout; k++) {
        kv_gguf_value e;
        int64_t c;
        if ((st = kv_gguf_arr_get(v, (uint64_t)k, &e, err)) != KV_OK || (st = kv_gguf_value_i64(&e, &c, err)) != KV_OK)
            break;
        if (c < 0 || c >= w->cols || (k > 0 && c <= cols[k - 1])) {
            st = kv_fail(err, KV_EFORMAT, "outlier column %lld at index %lld is out of range or out of order",
                         (long long)c, (long long)k);
            break;
        }
        cols[k] = (int32_t)c;
        mask[c] = 1;
    }
    if (st == KV_OK && nout > 0) kv_fp16_to_fp32_row(ot->data, outw, (size_t)(w->rows * nout));
    if (st != KV_OK) {
        free(cols);
        free(mask);
        free(outw);
        return st;
    }
    free(w->outlier_cols);
    free(w->outlier_mask);
    free(w->outlier_w);
    w->llmint8 = 1;
    w->n_outliers = nout;
    w->outlier_cols = cols;
    w->outlier_mask = mask;
    w->outlier_w = outw;
    return KV_OK;
}

kv_status kv_llmint8_attach(kv_model *m, const kv_model_file *mf, kv_error *err) {
    if (!m || !mf) return kv_fail(err, KV_EINVAL, "kv_llmint8_attach: NULL argument");
    if (!mf->gguf) return KV_OK;
    const int n_layer = m->hp.n_layer;
    for (int l = 0; l <= n_layer; l++)
        for (int i = 0; i < KV_LINEAR_COUNT; i++) {
            if ((i == KV_LINEAR_HEAD) != (l == n_layer)) continue;
            char name[96], key[256];
            if (i == KV_LINEAR_HEAD) snprintf(name, sizeof name, "output.weight");
            else snprintf(name, sizeof name, "blk.%d.%s.weight", l, kv_linear_name((kv_linear_id)i));
            snprintf(key, sizeof key, I8_COLS_KEY, name);
            const kv_gguf_value *v = kv_gguf_find(mf->gguf, key);
            if (!v) continue;
            kv_weight *w = kv_model_weight_mut(m, l, (kv_linear_id)i);
            kv_status st = w && !(i == KV_LINEAR_HEAD && m->head_tied)
                         ? attach_one(w, mf, name, v, err)
                         : kv_fail(err, KV_EFORMAT, "LLM.int8() columns for a weight the model does not have");
            if (st != KV_OK) {
                kv_error_context(err, kv_model_path(mf), (int64_t)v->offset, name);
                return st;
            }
        }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* report                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

void kv_llmint8_summary_free(kv_llmint8_summary *s) {
    if (!s) return;
    free(s->tensors);
    memset(s, 0, sizeof *s);
}

kv_status kv_llmint8_summary_read(const kv_model_file *mf, kv_llmint8_summary *out, kv_error *err) {
    if (!mf || !out) return kv_fail(err, KV_EINVAL, "kv_llmint8_summary_read: NULL argument");
    memset(out, 0, sizeof *out);
    out->threshold = NAN;
    out->max_index = -1;
    const kv_gguf *g = mf->gguf;
    if (!g) return KV_OK;
    if (kv_gguf_find(g, I8_THRESHOLD_KEY)) {
        kv_status st = kv_gguf_get_f64(g, I8_THRESHOLD_KEY, &out->threshold, err);
        if (st != KV_OK) return st;
    }
    const size_t pre = strlen("kvant.llmint8."), suf = strlen(".cols");
    for (int64_t i = 0; i < kv_gguf_n_kv(g); i++) {
        const char *k = kv_gguf_kv_key(g, i);
        size_t len = strlen(k);
        if (len <= pre + suf || strncmp(k, "kvant.llmint8.", pre) || strcmp(k + len - suf, ".cols")) continue;
        kv_llmint8_info *grown = realloc(out->tensors, sizeof *grown * (size_t)(out->n_tensors + 1));
        if (!grown) {
            kv_llmint8_summary_free(out);
            return kv_fail(err, KV_ENOMEM, "out of memory");
        }
        out->tensors = grown;
        kv_llmint8_info *t = &out->tensors[out->n_tensors];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%.*s", (int)KV_MIN(len - pre - suf, sizeof t->name - 1), k + pre);
        const kv_tensor *wt = kv_model_find(mf, t->name);
        t->cols = wt && wt->n_dims == 2 ? wt->shape[1] : 0;
        t->n_outliers = (int64_t)kv_gguf_kv_value(g, i)->n;
        out->total += t->n_outliers;
        if (t->n_outliers > out->max || out->max_index < 0) {
            out->max = t->n_outliers;
            out->max_index = out->n_tensors;
        }
        out->n_tensors++;
    }
    return KV_OK;
}
