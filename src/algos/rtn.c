/* rtn.c — the "rtn" method: round to nearest with each format's own quantizer (ggml's reference quantizers
 * for ggml types, importance-weighted when an imatrix is given, as llama-quantize's quantize_<type> calls).
 * Jobs (whole tensors) run in parallel on the pool; every tensor is quantized in one call so that formats with
 * tensor-wide state (a per-tensor scale) see all rows. Deterministic: tensors are independent. */
#include "algos/quantize.h"
#include <stdio.h>

typedef struct rtn_ctx {
    kv_quant_method_ctx *c;
    kv_status *st;
    kv_error *errs;
    int64_t *done;
} rtn_ctx;

static void rtn_task(void *user, int64_t i, int thread) {
    rtn_ctx *r = user;
    kv_quant_job *j = &r->c->jobs[i];
    kv_error *e = &r->errs[i];
    kv_error_clear(e);
    r->st[i] = j->fmt.quantize(&j->fmt, j->w, j->dst, j->rows, j->cols, j->importance, e);
    if (r->st[i] != KV_OK) kv_error_context(e, NULL, -1, j->name);
}

kv_status kv_method_rtn(kv_quant_method_ctx *c, kv_error *err) {
    for (int64_t i = 0; i < c->n_jobs; i++)
        if (!c->jobs[i].fmt.quantize) {
            kv_fail(err, KV_EUNSUPPORTED, "format %s has no quantizer", c->jobs[i].fmt.name);
            kv_error_context(err, NULL, -1, c->jobs[i].name);
            return KV_EUNSUPPORTED;
        }
    kv_status *st = kv_calloc((size_t)KV_MAX(c->n_jobs, 1), sizeof *st, err);
    kv_error *errs = kv_calloc((size_t)KV_MAX(c->n_jobs, 1), sizeof *errs, err);
    if (!st || !errs) {
        free(st);
        free(errs);
        return KV_ENOMEM;
    }
    /* one pool run per batch of jobs so the progress line moves; results do not depend on the batching */
    int64_t batch = c->pool ? 2 * (int64_t)kv_pool_threads(c->pool) : 1;
    rtn_ctx r = {c, st, errs, NULL};
    kv_status out = KV_OK;
    for (int64_t first = 0; first < c->n_jobs && out == KV_OK; first += batch) {
        int64_t n = KV_MIN(batch, c->n_jobs - first);
        kv_quant_method_ctx sub = *c;
        sub.jobs = c->jobs + first;
        r.c = &sub;
        r.st = st + first;
        r.errs = errs + first;
        kv_pool_run(c->pool, n, rtn_task, &r);
        for (int64_t i = first; i < first + n; i++)
            if (st[i] != KV_OK) { /* the first failure in job order */
                if (err) *err = errs[i];
                out = st[i];
                break;
            }
        if (c->progress) kv_progress_update(c->progress, first + n);
    }
    free(st);
    free(errs);
    return out;
}

kv_status kv_method_rtn_jobs(const kv_quant_method_ctx *c, kv_quant_job *jobs, int64_t n, kv_error *err) {
    kv_quant_method_ctx sub = *c;
    sub.jobs = jobs;
    sub.n_jobs = n;
    sub.progress = NULL;
    return kv_method_rtn(&sub, err);
}
