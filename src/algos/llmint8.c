/* llmint8.c — LLM.int8() mixed-precision matrix multiplication (Dettmers et al., arXiv 2208.07339 §3.2;
 * bitsandbytes MatMul8bitLt / int8_vectorwise_quant): input feature columns with an activation magnitude
 * >= threshold (6.0) are multiplied in fp16 (activations and weights rounded to fp16, fp32 accumulation); the
 * other columns use vector-wise int8: each activation row and each weight row is scaled by its absmax over
 * those columns, q = round(127·v/absmax) (half to even), int32 accumulation, y = acc·(sx·sw)/127².
 * The outlier columns come from the activations themselves (as bitsandbytes does per batch) or from a mask
 * computed on calibration data. */
#include "core/core.h"
#include <math.h>

typedef struct {
    const float *x, *w;
    int64_t ntok, rows, cols;
    const uint8_t *out;  /* cols: 1 = outlier column */
    int8_t *qx, *qw;     /* ntok × cols, rows × cols (outlier columns 0) */
    float *sx, *sw;      /* absmax per row */
    uint16_t *hx, *hw;   /* fp16 outlier parts, ntok × nout, rows × nout */
    const int64_t *oidx;
    int64_t nout;
    float *y;
} i8_ctx;

static void quant_rows(const float *v, int64_t n, int64_t cols, const uint8_t *out, const int64_t *oidx, int64_t nout,
                       int8_t *q, float *s, uint16_t *h) {
    for (int64_t r = 0; r < n; r++) {
        const float *row = v + r * cols;
        float amax = 0;
        for (int64_t j = 0; j < cols; j++)
            if (!out[j]) amax = fmaxf(amax, fabsf(row[j]));
        s[r] = amax;
        float inv = amax > 0 ? 127.0f / amax : 0;
        for (int64_t j = 0; j < cols; j++) q[r * cols + j] = out[j] ? 0 : (int8_t)lrintf(row[j] * inv);
        for (int64_t k = 0; k < nout; k++) h[r * nout + k] = kv_fp32_to_fp16(row[oidx[k]]);
    }
}

static void i8_task(void *vctx, int64_t t, int thread) {
    i8_ctx *c = vctx;
    const int8_t *qx = c->qx + t * c->cols;
    for (int64_t r = 0; r < c->rows; r++) {
        const int8_t *qw = c->qw + r * c->cols;
        int32_t acc = 0;
        for (int64_t j = 0; j < c->cols; j++) acc += (int32_t)qx[j] * qw[j];
        float y = (float)acc * (c->sx[t] * c->sw[r]) / (127.0f * 127.0f);
        float f = 0;
        for (int64_t k = 0; k < c->nout; k++)
            f += kv_fp16_to_fp32(c->hx[t * c->nout + k]) * kv_fp16_to_fp32(c->hw[r * c->nout + k]);
        c->y[t * c->rows + r] = y + f;
    }
}

kv_status kv_llmint8_matmul(const float *x, int64_t ntok, const float *w, int64_t rows, int64_t cols, float threshold,
                            const uint8_t *outlier_mask, float *y, int64_t *n_outliers, kv_pool *pool, kv_error *err) {
    if (!x || !w || !y || ntok <= 0 || rows <= 0 || cols <= 0) return kv_fail(err, KV_EINVAL, "llm.int8: empty input");
    uint8_t *out = malloc((size_t)cols);
    int64_t *oidx = malloc(sizeof(int64_t) * (size_t)cols);
    i8_ctx c = {x, w, ntok, rows, cols, out, NULL, NULL, NULL, NULL, NULL, NULL, oidx, 0, y};
    c.qx = malloc((size_t)(ntok * cols));
    c.qw = malloc((size_t)(rows * cols));
    c.sx = malloc(sizeof(float) * (size_t)ntok);
    c.sw = malloc(sizeof(float) * (size_t)rows);
    kv_status st = KV_OK;
    if (!out || !oidx || !c.qx || !c.qw || !c.sx || !c.sw) {
        st = kv_fail(err, KV_ENOMEM, "llm.int8: out of memory");
        goto done;
    }
    for (int64_t j = 0; j < cols; j++) out[j] = outlier_mask ? outlier_mask[j] != 0 : 0;
    if (!outlier_mask)
        for (int64_t i = 0; i < ntok * cols; i++) {
            if (!isfinite(x[i])) { st = kv_fail(err, KV_EINVAL, "llm.int8: activation %lld is not finite", (long long)i); goto done; }
            if (fabsf(x[i]) >= threshold) out[i % cols] = 1;
        }
    for (int64_t j = 0; j < cols; j++)
        if (out[j]) oidx[c.nout++] = j;
    c.hx = malloc(sizeof(uint16_t) * (size_t)KV_MAX(ntok * c.nout, 1));
    c.hw = malloc(sizeof(uint16_t) * (size_t)KV_MAX(rows * c.nout, 1));
    if (!c.hx || !c.hw) {
        st = kv_fail(err, KV_ENOMEM, "llm.int8: out of memory");
        goto done;
    }
    quant_rows(x, ntok, cols, out, oidx, c.nout, c.qx, c.sx, c.hx);
    quant_rows(w, rows, cols, out, oidx, c.nout, c.qw, c.sw, c.hw);
    kv_pool_run(pool, ntok, i8_task, &c);
    if (n_outliers) *n_outliers = c.nout;
done:
    free(out);
    free(oidx);
    free(c.qx);
    free(c.qw);
    free(c.sx);
    free(c.sw);
    free(c.hx);
    free(c.hw);
    return st;
}
