/* llmint8_method.c — `kvant quantize --method llm-int8`: LLM.int8() (Dettmers et al., arXiv 2208.07339 §3.2)
 * with a static outlier set. bitsandbytes finds the outlier columns per batch at run time; kvant finds them once
 * on calibration text (a column is an outlier when some calibration token has |x| >= threshold at that linear's
 * input), so a stored model gives the same result whatever the batch. Stored form (docs/FORMAT.md "kvant
 * LLM.int8() weights"): the weight as int8_g0_sym_f32 with the outlier columns' codes 0, the outlier columns'
 * weights as the F16 tensor NAME.llmint8_outl [rows, n_outliers], and their indices as the i32 array metadata
 * kvant.llmint8.NAME.cols. The loader side (kv_llmint8_attach) and the report (kv_llmint8_summary_read) are in
 * src/model/llmint8_load.c. */
#include "algos/calib.h"
#include "io/gguf.h"
#include "io/model_file.h"
#include "model/model.h"
#include "model/llmint8.h"
#include <math.h>
#include <stdio.h>


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

/* Options declared in src/algos/methods.c: threshold=F (default 6.0; inf: plain int8 W8A8), head. */
static kv_status values_of(const kv_method_values *v, float *threshold, int *head) {
    const kv_quant_method *m = kv_quant_method_find("llm-int8");
    *threshold = (float)kv_mopt_num(m, v, "threshold");
    *head = kv_mopt_given(m, v, "head");
    return KV_OK;
}

kv_status kv_llmint8_parse_options(const char *options, float *threshold, int *head, kv_error *err) {
    kv_method_values v;
    kv_status st = kv_method_values_parse(kv_quant_method_find("llm-int8"), options, &v, err);
    return st != KV_OK ? st : values_of(&v, threshold, head);
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
    kv_method_values local;
    const kv_method_values *v = kv_method_ctx_values(c, kv_quant_method_find("llm-int8"), &local, err);
    if (!v) return err ? err->status : KV_EINVAL;
    kv_status st = values_of(v, &threshold, &head);
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
