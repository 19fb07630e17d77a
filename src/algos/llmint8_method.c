/* llmint8_method.c — `kvant quantize --method llm-int8`: LLM.int8() (Dettmers et al., arXiv 2208.07339 §3.2)
 * with a static outlier set. bitsandbytes finds the outlier columns per batch at run time; kvant finds them once
 * on calibration text (a column is an outlier when some calibration token has |x| >= threshold at that linear's
 * input), so a stored model gives the same result whatever the batch. Stored form (docs/FORMAT.md "kvant
 * LLM.int8() weights"): the weight as int8_g0_sym_f32 with the outlier columns' codes 0, the outlier columns'
 * weights as the F16 tensor NAME.llmint8_outl [rows, n_outliers], and their indices as the i32 array metadata
 * kvant.llmint8.NAME.cols. Also the loader side (kv_llmint8_attach) and the report (kv_llmint8_summary_read). */
#include "algos/calib.h"
#include "io/gguf.h"
#include "io/model_file.h"
#include "model/model.h"
#include <math.h>
#include <stdio.h>

#define I8_COLS_KEY "kvant.llmint8.%s.cols"
#define I8_OUTL_NAME "%s.llmint8_outl"
#define I8_THRESHOLD_KEY "kvant.llmint8.threshold"

/* ---------------------------------------------------------------------------------------------- */
/* calibration: max |x| per input column of every target linear                                     */
/* ---------------------------------------------------------------------------------------------- */

/* Input point of a linear: q/k/v share one, gate/up one (kv_forward_hooks reports KV_LINEAR_Q / _GATE). */
static kv_linear_id input_point(kv_linear_id which) {
    switch (which) {
    case KV_LINEAR_K: case KV_LINEAR_V: return KV_LINEAR_Q;
    case KV_LINEAR_UP: return KV_LINEAR_GATE;
    default: return which;
    }
}

typedef struct {
    kv_quant_job *job;
    int layer;
    kv_linear_id which, point;
    float *amax;        /* cols: max |x_j| over the calibration tokens (rotated input when rht) */
    float *signs;       /* cols rht signs, when the weight has an online rotation */
} i8_target;

typedef struct {
    i8_target *t;
    int nt;
    float *rot;         /* scratch for rotated inputs */
    int64_t rot_cap;
    kv_status st;
    kv_error err;
} i8_calib;

static void on_input(void *user, int layer, kv_linear_id which, const float *x, int64_t ntok, int64_t dim) {
    i8_calib *s = user;
    for (int i = 0; i < s->nt && s->st == KV_OK; i++) {
        i8_target *t = &s->t[i];
        if (t->layer != layer || t->point != which) continue;
        if (t->job->cols != dim) {
            s->st = kv_fail(&s->err, KV_EINVAL, "input has %lld features, the weight %lld", (long long)dim,
                            (long long)t->job->cols);
            kv_error_context(&s->err, NULL, -1, t->job->name);
            return;
        }
        /* a weight stored rotated (W·Rᵀ) sees R·x */
        const float *xx = kv_calib_rotated_input(&s->rot, &s->rot_cap, x, ntok, dim, t->job->rht_block, t->signs);
        if (!xx) { s->st = kv_fail(&s->err, KV_ENOMEM, "out of memory"); return; }
        for (int64_t k = 0; k < ntok * dim; k++) {
            const float a = fabsf(xx[k]);
            if (!isfinite(a)) {
                s->st = kv_fail(&s->err, KV_EINVAL, "calibration activation [token %lld, feature %lld] is not finite",
                                (long long)(k / dim), (long long)(k % dim));
                kv_error_context(&s->err, NULL, -1, t->job->name);
                return;
            }
            if (a > t->amax[k % dim]) t->amax[k % dim] = a;
        }
    }
}

static kv_status calibrate(kv_quant_method_ctx *c, i8_calib *s, int with_head, kv_error *err) {
    const kv_hparams *hp = kv_model_get_hparams(c->model);
    const int32_t ctx = c->calib_ctx;
    const int64_t nwin = ctx > 0 ? c->n_calib_ids / ctx : 0;
    if (!c->calib_ids || nwin < 1) return kv_fail(err, KV_EINVAL, "llm-int8 needs at least one calibration window");
    kv_context *kc = NULL;
    kv_status st = kv_context_create(c->model, ctx, &kc, err);
    if (st != KV_OK) return st;
    kv_forward_hooks hooks = {on_input, s};
    kv_context_set_hooks(kc, &hooks);
    float *logits = NULL; /* the head's input is seen only when logits are computed */
    if (with_head && !(logits = kv_malloc((size_t)ctx * (size_t)hp->n_vocab * sizeof(float), err))) st = KV_ENOMEM;
    for (int64_t w = 0; w < nwin && st == KV_OK; w++) {
        st = kv_forward(kc, c->calib_ids + w * ctx, ctx, 0, logits, logits ? 0 : KV_FORWARD_NO_LOGITS, c->pool, err);
        if (st == KV_OK && s->st != KV_OK) {
            st = s->st;
            if (err) *err = s->err;
        }
    }
    free(logits);
    kv_context_free(kc);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* the method                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

kv_status kv_llmint8_parse_options(const char *options, float *threshold, int *head, kv_error *err) {
    static const char *const usage = "(options: threshold=F (default 6.0; inf: plain int8 W8A8), head)";
    *threshold = 6.0f;
    *head = 0;
    char buf[256];
    for (const char *p = options ? options : ""; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len >= sizeof buf) return kv_fail(err, KV_EINVAL, "llm-int8: option too long %s", usage);
        memcpy(buf, p, len);
        buf[len] = 0;
        char *val = strchr(buf, '=');
        if (val) *val++ = 0;
        if (!strcmp(buf, "threshold") && val) {
            char *end;
            double t = strtod(val, &end);
            if (!*val || *end || !(t >= 0)) /* NaN fails too */
                return kv_fail(err, KV_EINVAL, "llm-int8: threshold '%s' is not a number >= 0 %s", val, usage);
            *threshold = (float)t;
        } else if (!strcmp(buf, "head") && !val) {
            *head = 1;
        } else if (len > 0) {
            return kv_fail(err, KV_EINVAL, "llm-int8: unknown option '%s%s%s' %s", buf, val ? "=" : "", val ? val : "",
                           usage);
        }
        p += len;
        if (*p == ',') p++;
    }
    return KV_OK;
}

/* Quantizes one target and hands its outlier columns to the pipeline's GGUF. */
static kv_status store_target(kv_quant_method_ctx *c, const i8_target *t, float threshold, int64_t *nout_out,
                              kv_error *err) {
    const kv_quant_job *j = t->job;
    uint8_t *mask = kv_malloc((size_t)j->cols, err);
    int32_t *cols = kv_malloc(sizeof(int32_t) * (size_t)j->cols, err);
    uint16_t *outl = NULL;
    kv_status st = mask && cols ? KV_OK : KV_ENOMEM;
    int64_t nout = 0;
    for (int64_t k = 0; st == KV_OK && k < j->cols; k++) {
        mask[k] = t->amax[k] >= threshold;
        if (mask[k]) cols[nout++] = (int32_t)k;
    }
    if (st == KV_OK && nout > 0 && !(outl = kv_malloc(sizeof(uint16_t) * (size_t)(j->rows * nout), err))) st = KV_ENOMEM;
    if (st == KV_OK) st = kv_llmint8_quantize(j->w, j->rows, j->cols, mask, j->dst, outl, err);
    char key[256];
    snprintf(key, sizeof key, I8_COLS_KEY, j->name);
    if (st == KV_OK) st = c->add_meta(c->out_user, key, KV_GGUF_I32, cols, nout, err);
    if (st == KV_OK && nout > 0) {
        char name[200];
        snprintf(name, sizeof name, I8_OUTL_NAME, j->name);
        const int64_t shape[2] = {j->rows, nout};
        st = c->add_tensor(c->out_user, name, 2, shape, KV_TYPE_F16, outl, err);
    }
    if (st != KV_OK) kv_error_context(err, NULL, -1, j->name);
    *nout_out = nout;
    free(mask);
    free(cols);
    free(outl);
    return st;
}

static int target_order(const void *pa, const void *pb) {
    const i8_target *a = pa, *b = pb;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    return a->which < b->which ? -1 : a->which > b->which;
}

kv_status kv_method_llmint8(kv_quant_method_ctx *c, kv_error *err) {
    float threshold;
    int head;
    kv_status st = kv_llmint8_parse_options(c->options, &threshold, &head, err);
    if (st != KV_OK) return st;
    if (!c->add_meta || !c->add_tensor)
        return kv_fail(err, KV_EUNSUPPORTED, "llm-int8 stores its outlier columns in the GGUF: use GGUF output");
    if (!c->model) return kv_fail(err, KV_EINVAL, "llm-int8 needs calibration text (--calib FILE)");
    i8_calib s;
    memset(&s, 0, sizeof s);
    s.t = kv_calloc((size_t)KV_MAX(c->n_jobs, 1), sizeof *s.t, err);
    kv_quant_job *rest = kv_calloc((size_t)KV_MAX(c->n_jobs, 1), sizeof *rest, err);
    int64_t nrest = 0;
    if (!s.t || !rest) st = KV_ENOMEM;
    for (int64_t i = 0; st == KV_OK && i < c->n_jobs; i++) {
        kv_quant_job *j = &c->jobs[i];
        int layer;
        kv_linear_id which;
        int is_linear = kv_model_linear_by_name(c->model, j->name, &layer, &which) == 0 && layer >= 0;
        if (!is_linear || (which == KV_LINEAR_HEAD && !head)) {
            rest[nrest++] = *j;
            continue;
        }
        if (strcmp(j->fmt.name, KV_LLMINT8_FORMAT) || kv_format_row_bytes(&j->fmt, j->cols) != 4 + (size_t)j->cols) {
            st = kv_fail(err, KV_EINVAL, "llm-int8 stores linears as %s, not %s (leave --format out, or give %s)",
                         KV_LLMINT8_FORMAT, j->fmt.name, KV_LLMINT8_FORMAT);
            kv_error_context(err, NULL, -1, j->name);
            break;
        }
        i8_target *t = &s.t[s.nt++];
        t->job = j;
        t->layer = layer;
        t->which = which;
        t->point = input_point(which);
        t->amax = kv_calloc((size_t)j->cols, sizeof(float), err);
        if (!t->amax) { st = KV_ENOMEM; break; }
        if (j->rht_block > 0) {
            if (!(t->signs = kv_malloc(sizeof(float) * (size_t)j->cols, err))) { st = KV_ENOMEM; break; }
            kv_rht_signs(j->rht_seed, j->cols, t->signs);
        }
    }
    if (st == KV_OK) qsort(s.t, (size_t)s.nt, sizeof *s.t, target_order); /* file order: by layer, then linear */
    int with_head = 0;
    for (int i = 0; i < s.nt; i++) with_head |= s.t[i].point == KV_LINEAR_HEAD;
    if (st == KV_OK && head && !with_head && c->log)
        c->log(c->log_user, "llm-int8: head: the model has no separate output.weight (tied embeddings): not converted");
    if (st == KV_OK && s.nt > 0) st = calibrate(c, &s, with_head, err);
    if (st == KV_OK) st = c->add_meta(c->out_user, I8_THRESHOLD_KEY, KV_GGUF_F32, &threshold, -1, err);
    int64_t total = 0, max = -1, done = 0;
    const char *max_name = "-";
    for (int i = 0; st == KV_OK && i < s.nt; i++) {
        int64_t nout = 0;
        st = store_target(c, &s.t[i], threshold, &nout, err);
        total += nout;
        if (nout > max) { max = nout; max_name = s.t[i].job->name; }
        if (c->progress) kv_progress_update(c->progress, ++done);
    }
    if (st == KV_OK && nrest > 0) st = kv_method_rtn_jobs(c, rest, nrest, err);
    if (st == KV_OK && c->log) {
        char line[400];
        snprintf(line, sizeof line, "llm-int8: threshold %g: %lld outlier input columns kept in fp16 over %d linears "
                 "(max %lld in %s)", (double)threshold, (long long)total, s.nt, (long long)KV_MAX(max, 0), max_name);
        c->log(c->log_user, line);
    }
    for (int i = 0; s.t && i < s.nt; i++) {
        free(s.t[i].amax);
        free(s.t[i].signs);
    }
    free(s.t);
    free(s.rot);
    free(rest);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* loading                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

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
