/* awq.c — activation-aware channel scaling (Lin et al., arXiv 2306.00978 §3.2; mit-han-lab/llm-awq
 * awq/quantize/auto_scale.py auto_scale_block / _search_module_scale): for each group of linears sharing an
 * input X (q/k/v after attn_norm, gate/up after ffn_norm, down after up, o after v when there is no GQA),
 *   s = mean|X|^α (min 1e-4), s /= sqrt(max s · min s), α = 0, 0.05, …, 0.95;
 *   loss(α) = Σ over the group's linears ‖X·Wᵀ − X·(Q(W·diag s)·diag(1/s))ᵀ‖² on sampled calibration tokens,
 * with Q the format the policy chose for that tensor (quantize + dequantize); the best s is folded: W ← W·diag(s)
 * and the previous op ← previous op / s (norm gain, or the rows of up / v).
 * Then (when the model is being quantized) the clipping search of llm-awq auto_clip.py, per output row.
 * Deviations from llm-awq: the loss is each linear's output error, not the whole block's output (the reference
 * runs the attention/MLP module); the clipping ratio is chosen per row, not per row and group. */
#include "algos/quantize.h"
#include <math.h>
#include <stdio.h>

typedef struct awq_group {
    const char *prev;     /* norm gain (vector) or the linear whose output rows feed the group */
    const char *fcs[3];
    int nfc;
    int point;            /* kv_act_stats point */
} awq_group;

static const awq_group k_groups[] = {
    {"attn_norm.weight", {"attn_q.weight", "attn_k.weight", "attn_v.weight"}, 3, 0},
    {"ffn_norm.weight", {"ffn_gate.weight", "ffn_up.weight"}, 2, 2},
    {"ffn_up.weight", {"ffn_down.weight"}, 1, 3},
    {"attn_v.weight", {"attn_output.weight"}, 1, 1},
};

typedef struct awq_buf {
    float *ws, *d, *y;
    uint8_t *packed;
    size_t cap_w, cap_p, cap_y;
} awq_buf;

static int grow_f(float **p, size_t *cap, size_t n, kv_error *err) {
    if (*cap >= n) return 1;
    free(*p);
    *p = kv_malloc(n * sizeof(float), err);
    *cap = *p ? n : 0;
    return *p != NULL;
}

/* Output error of one linear quantized after scaling its inputs by s. */
static kv_status linear_loss(const kv_wtensor *w, const kv_format *fmt, const float *s, const kv_act_point *p,
                             awq_buf *b, kv_pool *pool, double *loss, kv_error *err) {
    const int64_t rows = w->shape[0], cols = w->shape[1];
    const size_t rb = kv_format_row_bytes(fmt, cols);
    if (!grow_f(&b->ws, &b->cap_w, (size_t)(rows * cols), err) || !grow_f(&b->d, &b->cap_y, (size_t)(rows * cols), err))
        return KV_ENOMEM;
    if (b->cap_p < rb * (size_t)rows) {
        free(b->packed);
        b->packed = kv_malloc(rb * (size_t)rows, err);
        b->cap_p = b->packed ? rb * (size_t)rows : 0;
        if (!b->packed) return KV_ENOMEM;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) b->ws[r * cols + j] = w->w[r * cols + j] * s[j];
    kv_status st = fmt->quantize(fmt, b->ws, b->packed, rows, cols, NULL, err);
    if (st != KV_OK) return st;
    for (int64_t r = 0; r < rows; r++) {
        fmt->dequantize(fmt, b->packed + (size_t)r * rb, b->ws + r * cols, cols);
        for (int64_t j = 0; j < cols; j++) b->d[r * cols + j] = w->w[r * cols + j] - b->ws[r * cols + j] / s[j];
    }
    kv_weight dw;
    memset(&dw, 0, sizeof dw);
    if ((st = kv_format_from_type(KV_TYPE_F32, &dw.fmt, err)) != KV_OK) return st;
    dw.rows = rows;
    dw.cols = cols;
    dw.data = b->d;
    float *y = kv_malloc((size_t)(p->nsample * rows) * sizeof(float), err);
    if (!y) return KV_ENOMEM;
    st = kv_weight_matmul(&dw, p->sample, p->nsample, y, pool, err);
    double sum = 0;
    for (int64_t i = 0; st == KV_OK && i < p->nsample * rows; i++) sum += (double)y[i] * y[i];
    free(y);
    *loss += sum;
    return st;
}

/* llm-awq auto_clip.py: per output row, the clipping ratio r in {1, 0.95, ..., 0.55} of each block's max |w|
 * (block = the format's block, at least 32) that minimises ‖X·(w − Q(clip_r(w)))ᵀ‖² on the sampled tokens.
 * Rows are searched together: each ratio quantizes the whole tensor once. */
static void clip_rows(const float *w, float *out, int64_t rows, int64_t cols, int64_t g, const float *ratio) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c0 = 0; c0 < cols; c0 += g) {
            int64_t c1 = KV_MIN(cols, c0 + g);
            float amax = 0.0f;
            for (int64_t c = c0; c < c1; c++) amax = fmaxf(amax, fabsf(w[r * cols + c]));
            float lim = amax * ratio[r];
            for (int64_t c = c0; c < c1; c++) out[r * cols + c] = fminf(fmaxf(w[r * cols + c], -lim), lim);
        }
}

static kv_status clip_search(kv_wtensor *w, const kv_format *fmt, const kv_act_point *p, awq_buf *b, kv_pool *pool,
                             double *mean_ratio, kv_error *err) {
    const int64_t rows = w->shape[0], cols = w->shape[1];
    const int64_t g = KV_MIN(cols, KV_MAX(32, (int64_t)fmt->block));
    const size_t rb = kv_format_row_bytes(fmt, cols);
    float *ratio = kv_malloc((size_t)rows * sizeof(float), err), *best = kv_malloc((size_t)rows * sizeof(float), err);
    double *best_err = kv_malloc((size_t)rows * sizeof(double), err);
    float *y = kv_malloc((size_t)(p->nsample * rows) * sizeof(float), err);
    kv_status st = ratio && best && best_err && y ? KV_OK : KV_ENOMEM;
    if (st == KV_OK && (!grow_f(&b->ws, &b->cap_w, (size_t)(rows * cols), err) || !grow_f(&b->d, &b->cap_y, (size_t)(rows * cols), err)))
        st = KV_ENOMEM;
    if (st == KV_OK && b->cap_p < rb * (size_t)rows) {
        free(b->packed);
        b->packed = kv_malloc(rb * (size_t)rows, err);
        b->cap_p = b->packed ? rb * (size_t)rows : 0;
        if (!b->packed) st = KV_ENOMEM;
    }
    kv_weight dw;
    memset(&dw, 0, sizeof dw);
    if (st == KV_OK) st = kv_format_from_type(KV_TYPE_F32, &dw.fmt, err);
    dw.rows = rows;
    dw.cols = cols;
    dw.data = b->d;
    for (int64_t r = 0; r < rows; r++) best_err[r] = INFINITY, best[r] = 1.0f;
    for (int i = 0; i < 10 && st == KV_OK; i++) {
        for (int64_t r = 0; r < rows; r++) ratio[r] = 1.0f - (float)i / 20.0f;
        clip_rows(w->w, b->ws, rows, cols, g, ratio);
        if ((st = fmt->quantize(fmt, b->ws, b->packed, rows, cols, NULL, err)) != KV_OK) break;
        for (int64_t r = 0; r < rows; r++) {
            fmt->dequantize(fmt, b->packed + (size_t)r * rb, b->ws + r * cols, cols);
            for (int64_t c = 0; c < cols; c++) b->d[r * cols + c] = w->w[r * cols + c] - b->ws[r * cols + c];
        }
        if ((st = kv_weight_matmul(&dw, p->sample, p->nsample, y, pool, err)) != KV_OK) break;
        for (int64_t r = 0; r < rows; r++) {
            double e = 0;
            for (int64_t t = 0; t < p->nsample; t++) e += (double)y[t * rows + r] * y[t * rows + r];
            if (e < best_err[r]) best_err[r] = e, best[r] = ratio[r];
        }
    }
    if (st == KV_OK) {
        clip_rows(w->w, b->ws, rows, cols, g, best);
        memcpy(w->w, b->ws, (size_t)(rows * cols) * sizeof(float));
        w->modified = 1;
        double sum = 0;
        for (int64_t r = 0; r < rows; r++) sum += best[r];
        *mean_ratio = sum / (double)rows;
    }
    free(ratio);
    free(best);
    free(best_err);
    free(y);
    return st;
}

static void awq_scales(const kv_act_point *p, double alpha, float *s) {
    double mx = 0, mn = INFINITY;
    for (int64_t j = 0; j < p->dim; j++) {
        double m = p->count ? p->abssum[j] / (double)p->count : 0;
        double v = fmax(pow(m, alpha), 1e-4);
        s[j] = (float)v;
        mx = fmax(mx, v);
        mn = fmin(mn, v);
    }
    double norm = sqrt(mx * mn);
    for (int64_t j = 0; j < p->dim; j++) s[j] = (float)(s[j] / norm);
}

kv_status kv_transform_awq(kv_wmodel *wm, const kv_act_stats *st, kv_format_of_fn fmt_of, void *user, int clip,
                           kv_pool *pool, char *summary, size_t summary_len, kv_error *err) {
    if (!st || !st->p) return kv_fail(err, KV_EINVAL, "awq needs calibration statistics");
    awq_buf b = {0};
    kv_status rc = KV_OK;
    double alpha_sum[KV_ARRAY_LEN(k_groups)] = {0};
    int alpha_n[KV_ARRAY_LEN(k_groups)] = {0};
    double clip_sum = 0;
    int clip_n = 0;
    const int gqa = wm->hp.n_head != wm->hp.n_head_kv;
    for (int l = 0; l < wm->hp.n_layer && l < st->n_layer && rc == KV_OK; l++)
        for (size_t g = 0; g < KV_ARRAY_LEN(k_groups) && rc == KV_OK; g++) {
            const awq_group *G = &k_groups[g];
            if (g == 3 && gqa) continue; /* o's inputs repeat v's rows across the heads of a group */
            const kv_act_point *p = &st->p[l * KV_ACT_POINTS + G->point];
            kv_wtensor *prev = kv_wmodel_layer(wm, l, G->prev);
            kv_wtensor *fc[3] = {0};
            const kv_format *ff[3] = {0};
            int ok = prev && p->absmax && p->nsample > 0;
            for (int i = 0; ok && i < G->nfc; i++) {
                fc[i] = kv_wmodel_layer(wm, l, G->fcs[i]);
                ff[i] = fc[i] ? fmt_of(user, fc[i]->name) : NULL;
                ok = fc[i] && ff[i] && ff[i]->quantize && ff[i]->dequantize && fc[i]->rht_block == 0 &&
                     fc[i]->shape[1] == p->dim && ff[i]->type != KV_TYPE_F32 && ff[i]->type != KV_TYPE_F16 &&
                     ff[i]->type != KV_TYPE_BF16;
            }
            if (ok && prev->n_dims == 2 && prev->shape[0] != p->dim) ok = 0;
            if (!ok) continue;
            float *s = kv_malloc((size_t)p->dim * sizeof(float), err), *best = kv_malloc((size_t)p->dim * sizeof(float), err);
            if (!s || !best) {
                free(s);
                free(best);
                rc = KV_ENOMEM;
                break;
            }
            double best_loss = INFINITY, best_alpha = 0;
            for (int k = 0; k < 20 && rc == KV_OK; k++) {
                double alpha = k / 20.0, loss = 0;
                awq_scales(p, alpha, s);
                for (int i = 0; i < G->nfc && rc == KV_OK; i++) rc = linear_loss(fc[i], ff[i], s, p, &b, pool, &loss, err);
                if (rc == KV_OK && loss < best_loss) {
                    best_loss = loss;
                    best_alpha = alpha;
                    memcpy(best, s, (size_t)p->dim * sizeof(float));
                }
            }
            if (rc == KV_OK) {
                for (int i = 0; i < G->nfc; i++) {
                    const int64_t rows = fc[i]->shape[0], cols = fc[i]->shape[1];
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t j = 0; j < cols; j++) fc[i]->w[r * cols + j] *= best[j];
                    fc[i]->modified = 1;
                }
                const int64_t pc = prev->n_dims == 2 ? prev->shape[1] : 1;
                for (int64_t j = 0; j < p->dim; j++)
                    for (int64_t c = 0; c < pc; c++) prev->w[j * pc + c] /= best[j];
                prev->modified = 1;
                alpha_sum[g] += best_alpha;
                alpha_n[g]++;
                /* then the clipping search on the scaled weights (llm-awq skips q and k) */
                for (int i = 0; clip && i < G->nfc && rc == KV_OK; i++) {
                    if (g == 0 && i < 2) continue;
                    double r = 1.0;
                    rc = clip_search(fc[i], ff[i], p, &b, pool, &r, err);
                    clip_sum += r;
                    clip_n++;
                }
            }
            free(s);
            free(best);
        }
    free(b.ws);
    free(b.d);
    free(b.packed);
    if (summary && summary_len) {
        static const char *const names[] = {"qkv", "gate/up", "down", "o"};
        size_t len = 0;
        summary[0] = 0;
        for (size_t g = 0; g < KV_ARRAY_LEN(k_groups); g++)
            if (alpha_n[g] && len < summary_len)
                len += (size_t)snprintf(summary + len, summary_len - len, "%smean alpha %s %.2f", len ? ", " : "", names[g],
                                        alpha_sum[g] / alpha_n[g]);
        if (clip_n && len < summary_len)
            snprintf(summary + len, summary_len - len, "%smean clip ratio %.3f over %d linears", len ? ", " : "",
                     clip_sum / clip_n, clip_n);
    }
    return rc;
}
