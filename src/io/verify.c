/* verify.c — kv_tensor_verify (`kvant inspect --verify`): one tensor of a model file decoded in full through the
 * same readers the model loader uses (plain types, ggml block types, kvant formats, entropy-coded containers
 * with their checksums and rANS checks, docs/FORMAT.md) and every value checked finite. */
#include "io/model_file.h"
#include <math.h>
#include <stdio.h>

enum { MAX_TASKS = 256 };

/* What one range of values holds. */
typedef struct span_check {
    int64_t nonfinite, first; /* first: index of the first non-finite value, -1 when none */
    double max_abs;
} span_check;

static span_check scan(const float *v, int64_t n, int64_t base) {
    span_check s = {0, -1, 0.0};
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) {
            if (s.first < 0) s.first = base + i;
            s.nonfinite++;
        } else if (fabs((double)v[i]) > s.max_abs) {
            s.max_abs = fabs((double)v[i]);
        }
    }
    return s;
}

typedef struct row_task {
    const kv_model_file *mf;
    const kv_tensor *t;
    int64_t n, rows, per_task;
    span_check *spans;
    kv_status *st;
    kv_error *errs;
} row_task;

static void verify_rows(void *vctx, int64_t k, int thread) {
    (void)thread;
    row_task *c = vctx;
    int64_t r0 = k * c->per_task, r1 = KV_MIN(r0 + c->per_task, c->rows);
    span_check acc = {0, -1, 0.0};
    float *row = malloc(sizeof(float) * (size_t)c->n);
    if (!row) {
        c->st[k] = kv_fail(&c->errs[k], KV_ENOMEM, "out of memory");
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        kv_status st = kv_model_tensor_row_f32(c->mf, c->t, r, row, &c->errs[k]);
        if (st) {
            c->st[k] = st;
            break;
        }
        span_check s = scan(row, c->n, r * c->n);
        if (acc.first < 0) acc.first = s.first;
        acc.nonfinite += s.nonfinite;
        acc.max_abs = KV_MAX(acc.max_abs, s.max_abs);
    }
    c->spans[k] = acc;
    free(row);
}

/* Fixed-size rows: decoded one row at a time on the pool, in at most MAX_TASKS contiguous ranges (the result
 * is the same whatever the thread count). */
static kv_status verify_fixed(const kv_model_file *mf, const kv_tensor *t, kv_pool *pool, span_check *out,
                              kv_error *err) {
    int64_t n = t->n_dims ? t->shape[t->n_dims - 1] : 1, rows = n ? kv_tensor_nelements(t) / n : 0;
    if (rows == 0) return KV_OK;
    int64_t ntasks = KV_MIN(rows, (int64_t)MAX_TASKS);
    row_task c = {mf, t, n, rows, (rows + ntasks - 1) / ntasks, NULL, NULL, NULL};
    ntasks = (rows + c.per_task - 1) / c.per_task;
    c.spans = kv_calloc((size_t)ntasks, sizeof *c.spans, err);
    c.st = kv_calloc((size_t)ntasks, sizeof *c.st, err);
    c.errs = kv_calloc((size_t)ntasks, sizeof *c.errs, err);
    kv_status st = KV_OK;
    if (!c.spans || !c.st || !c.errs) st = KV_ENOMEM;
    if (!st) {
        for (int64_t k = 0; k < ntasks; k++) kv_error_clear(&c.errs[k]);
        kv_pool_run(pool, ntasks, verify_rows, &c);
        for (int64_t k = 0; k < ntasks && !st; k++)
            if (c.st[k]) {
                st = c.st[k];
                *err = c.errs[k];
            }
        for (int64_t k = 0; k < ntasks && !st; k++) {
            if (out->first < 0) out->first = c.spans[k].first;
            out->nonfinite += c.spans[k].nonfinite;
            out->max_abs = KV_MAX(out->max_abs, c.spans[k].max_abs);
        }
    }
    free(c.spans);
    free(c.st);
    free(c.errs);
    return st;
}

kv_status kv_tensor_verify(const kv_model_file *mf, const kv_tensor *t, kv_pool *pool, kv_tensor_check *r,
                           kv_error *err) {
    const char *name = t->name[0] ? t->name : t->src_name;
    memset(r, 0, sizeof *r);
    kv_error_clear(err);
    r->first_row = r->first_col = -1;
    int64_t n = t->n_dims ? t->shape[t->n_dims - 1] : 1, total = kv_tensor_nelements(t);
    span_check s = {0, -1, 0.0};
    kv_status st;
    if (t->type == KV_TYPE_ECW) { /* no fixed-size rows: decoded whole (and its checksums verified) */
        float *w = total > 0 ? kv_malloc(sizeof(float) * (size_t)total, err) : NULL;
        if (total > 0 && !w) return KV_ENOMEM;
        st = kv_ecw_tensor_to_f32(mf, t, w, pool, err);
        if (!st) s = scan(w, total, 0);
        free(w);
    } else {
        st = verify_fixed(mf, t, pool, &s, err);
    }
    if (st) {
        kv_error_context(err, kv_model_path(mf), (int64_t)t->offset, name);
        return st;
    }
    r->values = total;
    r->nonfinite = s.nonfinite;
    r->max_abs = s.max_abs;
    if (s.first < 0) return KV_OK;
    r->first_row = n ? s.first / n : 0;
    r->first_col = n ? s.first % n : 0;
    int64_t rows = n ? total / n : 0;
    /* fixed-size rows: the offset of the row that holds it; entropy-coded: the tensor's */
    uint64_t at = t->offset;
    if (t->type != KV_TYPE_ECW && rows > 0 && t->nbytes % (uint64_t)rows == 0)
        at += (uint64_t)r->first_row * (t->nbytes / (uint64_t)rows);
    kv_fail(err, KV_EFORMAT, "%lld of %lld values are not finite (NaN or Inf), the first at row %lld, column %lld",
            (long long)s.nonfinite, (long long)total, (long long)r->first_row, (long long)r->first_col);
    kv_error_context(err, kv_model_path(mf), (int64_t)at, name);
    return KV_EFORMAT;
}
