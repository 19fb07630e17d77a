/* int8.c — LLM.int8() mixed-precision matrix multiplication (Dettmers et al., arXiv 2208.07339 §3.2;
 * bitsandbytes MatMul8bitLt / int8_vectorwise_quant): input feature columns with an activation magnitude
 * >= threshold (6.0) are multiplied in fp16 (activations and weights rounded to fp16, fp32 accumulation); the
 * other columns use vector-wise int8: each activation row and each weight row is scaled by its absmax over
 * those columns, q = round(127·v/absmax) (half to even), int32 accumulation, y = acc·(sx·sw)/127².
 * The outlier columns come from the activations themselves (as bitsandbytes does per batch) or from a mask
 * computed on calibration data. kv_llmint8_quantize / kv_llmint8_weight_matmul are the stored form used by
 * `--method llm-int8` (weights int8_g0_sym_f32 with the outlier columns' codes 0, those columns in fp16;
 * docs/FORMAT.md "kvant LLM.int8() weights"); the method and the loader are in llmint8_method.c. */
#include "core/core.h"
#include "kernels/cpu/matmul.h"
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

/* ---------------------------------------------------------------------------------------------- */
/* stored weights: int8_g0_sym_f32 rows [f32 d = absmax/127][cols codes q + 128], outliers in fp16      */
/* ---------------------------------------------------------------------------------------------- */

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define KV_I8_VNNI 1
#endif

enum { I8_TOK_BLOCK = 4, I8_ROW_BLOCK = 128 };

/* One row v [cols] to int8 over the non-outlier columns: q[j] = round(127·v[j]/absmax) (half to even; 0 on
 * outlier columns). Returns absmax/127 (the dequantization step), or -1 when v holds NaN/Inf. */
static float i8_quant_row(const float *v, int64_t cols, const uint8_t *mask, int8_t *q, int32_t *qsum) {
#if defined(KV_I8_VNNI) && defined(__AVX512DQ__) && defined(__AVX512VL__)
    { /* the same arithmetic 16 columns at a time (cvtps rounds half to even, as lrintf does by default) */
        __m512 am = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j < cols; j += 16) {
            const __mmask16 live = cols - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - j)) - 1u);
            const __m512 x = _mm512_maskz_loadu_ps(live, v + j);
            if (_mm512_mask_fpclass_ps_mask(live, x, 0x99)) return -1.0f; /* NaN or ±Inf */
            const __mmask16 keep = _mm_mask_cmpeq_epi8_mask(live, _mm_maskz_loadu_epi8(live, mask + j), _mm_setzero_si128());
            am = _mm512_mask_max_ps(am, keep, am, _mm512_abs_ps(x));
        }
        const float amax = _mm512_reduce_max_ps(am);
        const __m512 inv = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
        __m512i sum = _mm512_setzero_si512();
        for (j = 0; j < cols; j += 16) {
            const __mmask16 live = cols - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - j)) - 1u);
            const __mmask16 keep = _mm_mask_cmpeq_epi8_mask(live, _mm_maskz_loadu_epi8(live, mask + j), _mm_setzero_si128());
            const __m512i qi = _mm512_maskz_cvtps_epi32(keep, _mm512_mul_ps(_mm512_maskz_loadu_ps(live, v + j), inv));
            sum = _mm512_add_epi32(sum, qi);
            _mm_mask_storeu_epi8(q + j, live, _mm512_cvtepi32_epi8(qi));
        }
        if (qsum) *qsum = _mm512_reduce_add_epi32(sum);
        return amax / 127.0f;
    }
#endif
    float amax = 0;
    for (int64_t j = 0; j < cols; j++) {
        if (!isfinite(v[j])) return -1.0f;
        if (!mask[j]) amax = fmaxf(amax, fabsf(v[j]));
    }
    const float inv = amax > 0 ? 127.0f / amax : 0.0f;
    int32_t s = 0;
    for (int64_t j = 0; j < cols; j++) {
        q[j] = mask[j] ? 0 : (int8_t)lrintf(v[j] * inv);
        s += q[j];
    }
    if (qsum) *qsum = s;
    return amax / 127.0f;
}

kv_status kv_llmint8_quantize(const float *w, int64_t rows, int64_t cols, const uint8_t *mask, void *dst,
                              uint16_t *outl, kv_error *err) {
    if (!w || !mask || !dst || rows <= 0 || cols <= 0) return kv_fail(err, KV_EINVAL, "llm.int8: empty weight");
    int64_t nout = 0;
    for (int64_t j = 0; j < cols; j++) nout += mask[j] != 0;
    if (nout > 0 && !outl) return kv_fail(err, KV_EINVAL, "llm.int8: no buffer for %lld outlier columns", (long long)nout);
    int8_t *q = malloc((size_t)cols);
    if (!q) return kv_fail(err, KV_ENOMEM, "llm.int8: out of memory");
    const size_t rb = 4 + (size_t)cols;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float d = i8_quant_row(row, cols, mask, q, NULL);
        if (d < 0) {
            free(q);
            return kv_fail(err, KV_EINVAL, "llm.int8: weight row %lld holds NaN or Inf", (long long)r);
        }
        uint8_t *o = (uint8_t *)dst + (size_t)r * rb;
        kv_wr_f32(o, d);
        for (int64_t j = 0; j < cols; j++) o[4 + j] = (uint8_t)(q[j] + 128);
        for (int64_t j = 0, k = 0; j < cols; j++)
            if (mask[j]) outl[r * nout + k++] = kv_fp32_to_fp16(row[j]);
    }
    free(q);
    return KV_OK;
}

typedef struct {
    const kv_weight *w;
    const float *x;
    int64_t ntok, rows, cols, nout;
    int8_t *qx;          /* ntok × cols */
    float *dx;           /* ntok steps (absmax/127); < 0: non-finite row */
    int32_t *qsum;       /* ntok Σ q (undoes the +128 offset of the weight codes) */
    float *xo;           /* ntok × nout fp16-rounded outlier activations */
    float *y;
    int64_t nrb;         /* row blocks */
} wmm_ctx;

static void wmm_quant_task(void *vctx, int64_t t, int thread) {
    wmm_ctx *c = vctx;
    (void)thread;
    const float *xr = c->x + t * c->cols;
    c->dx[t] = i8_quant_row(xr, c->cols, c->w->outlier_mask, c->qx + t * c->cols, &c->qsum[t]);
    for (int64_t k = 0; k < c->nout; k++)
        c->xo[t * c->nout + k] = kv_fp16_to_fp32(kv_fp32_to_fp16(xr[c->w->outlier_cols[k]]));
}

/* Σ_j code[j]·q[j] for nt (<= I8_TOK_BLOCK) token rows q (stride cols). Exact integer arithmetic: every code
 * path gives the same sums. */
static void dot_codes(const uint8_t *code, const int8_t *q, int nt, int64_t cols, int64_t *out) {
#ifdef KV_I8_VNNI
    if (cols <= 65536) { /* Σ code·q fits int32 (255·127·65536 < 2^31) */
        __m512i a[I8_TOK_BLOCK];
        for (int k = 0; k < nt; k++) a[k] = _mm512_setzero_si512();
        int64_t j = 0;
        if (nt == 4) { /* named accumulators: kept in registers */
            __m512i a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
            for (; j + 64 <= cols; j += 64) {
                const __m512i wv = _mm512_loadu_si512((const void *)(code + j));
                a0 = _mm512_dpbusd_epi32(a0, wv, _mm512_loadu_si512((const void *)(q + j)));
                a1 = _mm512_dpbusd_epi32(a1, wv, _mm512_loadu_si512((const void *)(q + cols + j)));
                a2 = _mm512_dpbusd_epi32(a2, wv, _mm512_loadu_si512((const void *)(q + 2 * cols + j)));
                a3 = _mm512_dpbusd_epi32(a3, wv, _mm512_loadu_si512((const void *)(q + 3 * cols + j)));
            }
            a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
        }
        for (; j + 64 <= cols; j += 64) {
            const __m512i wv = _mm512_loadu_si512((const void *)(code + j));
            for (int k = 0; k < nt; k++)
                a[k] = _mm512_dpbusd_epi32(a[k], wv, _mm512_loadu_si512((const void *)(q + k * cols + j)));
        }
        if (j < cols) {
            const __mmask64 m = (__mmask64)(~0ULL >> (64 - (cols - j)));
            const __m512i wv = _mm512_maskz_loadu_epi8(m, code + j);
            for (int k = 0; k < nt; k++)
                a[k] = _mm512_dpbusd_epi32(a[k], wv, _mm512_maskz_loadu_epi8(m, q + k * cols + j));
        }
        for (int k = 0; k < nt; k++) out[k] = _mm512_reduce_add_epi32(a[k]);
        return;
    }
#endif
    for (int k = 0; k < nt; k++) {
        const int8_t *qk = q + k * cols;
        int64_t s = 0;
        for (int64_t j0 = 0; j0 < cols; j0 += 32768) { /* int32 partial sums cannot overflow */
            const int64_t j1 = KV_MIN(cols, j0 + 32768);
            int32_t p = 0;
            for (int64_t j = j0; j < j1; j++) p += (int32_t)code[j] * qk[j];
            s += p;
        }
        out[k] = s;
    }
}

static void wmm_task(void *vctx, int64_t task, int thread) {
    wmm_ctx *c = vctx;
    (void)thread;
    const int64_t t0 = (task / c->nrb) * I8_TOK_BLOCK, r0 = (task % c->nrb) * I8_ROW_BLOCK;
    const int nt = (int)KV_MIN(I8_TOK_BLOCK, c->ntok - t0);
    const int64_t r1 = KV_MIN(c->rows, r0 + I8_ROW_BLOCK);
    const size_t rb = 4 + (size_t)c->cols;
    const uint8_t *base = c->w->data;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = base + (size_t)r * rb;
        const float dw = kv_rd_f32(row);
        int64_t acc[I8_TOK_BLOCK];
        dot_codes(row + 4, c->qx + t0 * c->cols, nt, c->cols, acc);
        for (int k = 0; k < nt; k++) {
            const int64_t t = t0 + k;
            const int64_t a = acc[k] - 128 * (int64_t)c->qsum[t]; /* codes are q_w + 128 */
            const float f = c->nout > 0 ? c->y[t * c->rows + r] : 0.0f; /* the fp16 part, already in y */
            float y = (float)a * (c->dx[t] * dw) + f;
            if (c->w->bias) y += c->w->bias[r];
            c->y[t * c->rows + r] = y;
        }
    }
}

kv_status kv_llmint8_weight_matmul(const kv_weight *w, const float *x, int64_t ntok, float *y, kv_pool *pool,
                                   kv_error *err) {
    if (!w || !x || !y || ntok < 0) return kv_fail(err, KV_EINVAL, "llm.int8: NULL argument");
    if (!w->llmint8 || !w->outlier_mask || (w->n_outliers > 0 && (!w->outlier_cols || !w->outlier_w)))
        return kv_fail(err, KV_EINVAL, "llm.int8: the weight carries no LLM.int8() outlier columns");
    if (kv_format_row_bytes(&w->fmt, w->cols) != 4 + (size_t)w->cols)
        return kv_fail(err, KV_EINVAL, "llm.int8: weight format %s is not %s", w->fmt.name, KV_LLMINT8_FORMAT);
    if (ntok == 0) return KV_OK;
    wmm_ctx c = {w, x, ntok, w->rows, w->cols, w->n_outliers, NULL, NULL, NULL, NULL, y, 0};
    c.qx = malloc((size_t)(ntok * w->cols));
    c.dx = malloc(sizeof(float) * (size_t)ntok);
    c.qsum = malloc(sizeof(int32_t) * (size_t)ntok);
    c.xo = malloc(sizeof(float) * (size_t)KV_MAX(ntok * c.nout, 1));
    kv_status st = KV_OK;
    if (!c.qx || !c.dx || !c.qsum || !c.xo) {
        st = kv_fail(err, KV_ENOMEM, "llm.int8: out of memory");
        goto done;
    }
    kv_pool_run(pool, ntok, wmm_quant_task, &c);
    for (int64_t t = 0; t < ntok; t++)
        if (c.dx[t] < 0) {
            st = kv_fail(err, KV_EINVAL, "llm.int8: input row %lld holds NaN or Inf", (long long)t);
            goto done;
        }
    /* the outlier columns: fp16 operands, fp32 GEMM (each element summed in one fixed order) */
    if (c.nout > 0) kv_gemm_f32_nt(ntok, w->rows, c.nout, c.xo, c.nout, w->outlier_w, c.nout, y, w->rows, pool);
    c.nrb = (w->rows + I8_ROW_BLOCK - 1) / I8_ROW_BLOCK;
    kv_pool_run(pool, (ntok + I8_TOK_BLOCK - 1) / I8_TOK_BLOCK * c.nrb, wmm_task, &c);
done:
    free(c.qx);
    free(c.dx);
    free(c.qsum);
    free(c.xo);
    return st;
}
