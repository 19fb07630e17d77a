/* awq.c — AWQ, activation-aware weight quantization (Lin et al., arXiv 2306.00978 §3.2–3.3), run the way
 * mit-han-lab/llm-awq does (awq/quantize/pre_quant.py run_awq, auto_scale.py auto_scale_block /
 * _search_module_scale / apply_scale, auto_clip.py auto_clip_layer). Block by block, on the calibration
 * windows (each one a sequence from position 0) through the unquantized model:
 *   1. reference pass: the block's attention and MLP outputs, mean|x| per channel of the four linear inputs,
 *      Σ xᵀx of the o and down inputs, and every (ntok/512)-th token of each input (auto_clip's sample);
 *   2. scale search, each group on the original block: s = mean|x|^α (min 1e-4), s /= sqrt(max s · min s),
 *      α = 0, 0.05, …, 0.95, every linear W of the group replaced by Q(W·diag s)·diag(1/s) with Q the format
 *      the policy chose for it (quantize + dequantize); the α with the least mean squared error of
 *        q/k/v:    the attention output (RoPE, causal mask, GQA, o in full precision),
 *        gate/up:  the MLP output down(silu(gate)·up) (down in full precision),
 *        o (after v; only when v and o have the same shape) and down (after up): the linear's own output,
 *                  as tr(ΔW·XᵀX·ΔWᵀ) over all tokens;
 *      then every group is folded: W ← W·diag(s), previous op ← previous op / s (norm gain, or the rows and
 *      bias of v / up), which leaves the unquantized model's function unchanged;
 *   3. clipping (only when the model is being quantized; llm-awq skips q and k): per output row and input
 *      group of the format (its scale group: INTn's g, else the block; one group per row for formats without
 *      scale groups), max|w| ← r·max|w| with r = 1 − i/20, i = 0..9, the r with the least mean over the sampled
 *      tokens of (x_g·(Q(clip_r w) − w)_g)², x the inputs after the fold (x / s); w is then clipped.
 * The next block's inputs are the unquantized block's outputs (run_awq computes them before scaling).
 * What differs from llm-awq is only what kvant generalises: Q is each tensor's own format (llm-awq: INTn
 * asymmetric with groups of 128), without importance; the arithmetic is fp32 (llm-awq: the model's fp16);
 * the calibration windows are kvant's (--calib, random windows) instead of pile-val blocks.
 * Memory: 3 × tokens × n_embd floats (block inputs, attention and MLP outputs) + n_ff² + (n_head·head_dim)²
 * doubles + the sampled tokens. Deterministic for any thread count (threaded parts are kvant's fixed-order
 * GEMM / forward pass / Hessian code; every reduction here is serial). */
#include "algos/quantize.h"
#include "kernels/cpu/matmul.h"
#include "model/model.h"
#include <math.h>
#include <stdio.h>

enum { N_GRID = 20, N_CLIP = 10, N_CLIP_TOKENS = 512, N_LIN = KV_N_BLOCK_LINEARS };
enum { G_QKV, G_O, G_GATEUP, G_DOWN, N_GROUPS };

/* Groups of linears sharing an input: the op before them, the linears, the input point (0 attention input,
 * 1 o input, 2 MLP input, 3 down input). */
static const struct {
    kv_linear_id prev_linear; /* KV_LINEAR_COUNT: the previous op is the norm */
    const char *norm;
    kv_linear_id fc[3];
    int nfc;
} k_groups[N_GROUPS] = {
    {KV_LINEAR_COUNT, "attn_norm.weight", {KV_LINEAR_Q, KV_LINEAR_K, KV_LINEAR_V}, 3},
    {KV_LINEAR_V, NULL, {KV_LINEAR_O}, 1},
    {KV_LINEAR_COUNT, "ffn_norm.weight", {KV_LINEAR_GATE, KV_LINEAR_UP}, 2},
    {KV_LINEAR_UP, NULL, {KV_LINEAR_DOWN}, 1},
};
static const char *const k_group_names[N_GROUPS] = {"qkv", "o", "gate/up", "down"};

/* One decoder block of the working model. */
typedef struct awq_block {
    kv_wtensor *w[N_LIN], *attn_norm, *ffn_norm, *v_bias;
    const kv_format *fmt[N_LIN]; /* the chosen format; NULL: not quantized (plain or no format) */
    kv_weight ref[N_LIN];        /* f32 views of w[i] with the model's bias and online rotation */
} awq_block;

typedef struct awq_run {
    kv_wmodel *wm;
    const kv_model *m;
    kv_context *c;
    kv_pool *pool;
    int64_t nwin, ctx, ntok, d;
    float eps;
    float *h, *ya, *ym;      /* ntok × d: block inputs, attention outputs, MLP outputs (unquantized) */
    float *xn, *tmp;         /* ctx × max(d, n_ff) scratch */
    int64_t dim[4];          /* features of each input point */
    double *absum[4];        /* Σ|x| per feature */
    double *gram[4];         /* Σ xᵀx (points 1 and 3 when searched) */
    float *gramf[4];         /* the same in fp32 for the loss GEMM */
    float *samp[4];          /* nsamp × dim sampled tokens */
    int64_t nsamp, stride;
    float *cand[3];          /* the candidate weights of a group */
    float *cw, *dw, *e;      /* clipping scratch */
    size_t cap_w, cap_e;
    uint8_t *packed;
    size_t cap_packed;
} awq_run;

static const kv_format *plain_or_null(const kv_format *f) {
    if (!f || !f->quantize || !f->dequantize) return NULL;
    if (f->type == KV_TYPE_F32 || f->type == KV_TYPE_F16 || f->type == KV_TYPE_BF16) return NULL;
    return f;
}

static int64_t nel(const kv_wtensor *t) { return t->shape[0] * (t->n_dims == 2 ? t->shape[1] : 1); }

static kv_status grow_packed(awq_run *r, size_t n, kv_error *err) {
    if (r->cap_packed >= n) return KV_OK;
    free(r->packed);
    r->packed = kv_malloc(n, err);
    r->cap_packed = r->packed ? n : 0;
    return r->packed ? KV_OK : KV_ENOMEM;
}

/* out = Q(W·diag s)·diag(1/s) (s NULL: Q(W)); fmt NULL: out = W (kept in full precision). */
static kv_status fake_quant(awq_run *r, const float *w, int64_t rows, int64_t cols, const kv_format *fmt,
                            const float *s, float *out, kv_error *err) {
    const size_t n = (size_t)(rows * cols);
    if (!fmt) {
        memcpy(out, w, n * sizeof(float));
        return KV_OK;
    }
    const size_t rb = kv_format_row_bytes(fmt, cols);
    if (rb == 0) return kv_fail(err, KV_EINVAL, "awq: rows of %lld do not fit %s", (long long)cols, fmt->name);
    kv_status st = grow_packed(r, rb * (size_t)rows, err);
    if (st != KV_OK) return st;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) out[i * cols + j] = s ? w[i * cols + j] * s[j] : w[i * cols + j];
    if ((st = fmt->quantize(fmt, out, r->packed, rows, cols, NULL, err)) != KV_OK) return st;
    for (int64_t i = 0; i < rows; i++) {
        fmt->dequantize(fmt, r->packed + (size_t)i * rb, out + i * cols, cols);
        if (s)
            for (int64_t j = 0; j < cols; j++) out[i * cols + j] /= s[j];
    }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* the block and its reference pass                                                                */
/* ---------------------------------------------------------------------------------------------- */

static kv_status block_open(awq_run *r, int l, kv_format_of_fn fmt_of, void *user, awq_block *b, kv_error *err) {
    memset(b, 0, sizeof *b);
    const kv_hparams *hp = &r->wm->hp;
    const int64_t d = hp->n_embd;
    kv_format f32;
    kv_status st = kv_format_from_type(KV_TYPE_F32, &f32, err);
    if (st != KV_OK) return st;
    for (int i = 0; i < N_LIN; i++) {
        char name[160];
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, kv_linear_name((kv_linear_id)i));
        b->w[i] = kv_wmodel_find(r->wm, name);
        const kv_weight *mw = kv_model_weight(r->m, l, (kv_linear_id)i);
        if (!b->w[i] || !mw || b->w[i]->n_dims != 2 || b->w[i]->shape[0] != mw->rows || b->w[i]->shape[1] != mw->cols)
            return kv_fail(err, KV_EINVAL, "awq: %s is missing or does not match the model", name);
        b->fmt[i] = plain_or_null(fmt_of(user, name));
        kv_weight *v = &b->ref[i];
        v->fmt = f32;
        v->rows = mw->rows;
        v->cols = mw->cols;
        v->data = b->w[i]->w;
        v->bias = mw->bias;
        v->rht_block = mw->rht_block;
        v->rht_seed = mw->rht_seed;
        v->rht_signs = mw->rht_signs;
    }
    b->attn_norm = kv_wmodel_layer(r->wm, l, "attn_norm.weight");
    b->ffn_norm = kv_wmodel_layer(r->wm, l, "ffn_norm.weight");
    b->v_bias = kv_wmodel_layer(r->wm, l, "attn_v.bias");
    if (!b->attn_norm || !b->ffn_norm || nel(b->attn_norm) != d || nel(b->ffn_norm) != d)
        return kv_fail(err, KV_EINVAL, "awq: blk.%d has no attn_norm/ffn_norm of %lld features", l, (long long)d);
    if (b->v_bias && nel(b->v_bias) != b->w[KV_LINEAR_V]->shape[0]) b->v_bias = NULL;
    return KV_OK;
}

/* A group is searched when one of its linears is quantized, none has an online rotation, and (o) v and o
 * have the same shape, as llm-awq requires (with GQA o's inputs repeat v's rows). */
static int group_active(const awq_block *b, int g) {
    int any = 0;
    for (int i = 0; i < k_groups[g].nfc; i++) {
        kv_linear_id id = k_groups[g].fc[i];
        if (b->w[id]->rht_block) return 0;
        any |= b->fmt[id] != NULL;
    }
    if (k_groups[g].prev_linear != KV_LINEAR_COUNT && b->w[k_groups[g].prev_linear]->rht_block) return 0;
    if (g == G_O)
        return any && b->w[KV_LINEAR_V]->shape[0] == b->w[KV_LINEAR_O]->shape[0] &&
               b->w[KV_LINEAR_V]->shape[1] == b->w[KV_LINEAR_O]->shape[1];
    return any;
}

static kv_status record(awq_run *r, int p, const float *x, int64_t w, int with_gram, kv_error *err) {
    const int64_t dim = r->dim[p];
    for (int64_t t = 0; t < r->ctx; t++)
        for (int64_t j = 0; j < dim; j++) r->absum[p][j] += fabs((double)x[t * dim + j]);
    for (int64_t t = 0; t < r->ctx; t++) {
        int64_t gt = w * r->ctx + t;
        if (gt % r->stride == 0)
            memcpy(r->samp[p] + (gt / r->stride) * dim, x + t * dim, (size_t)dim * sizeof(float));
    }
    if (with_gram && r->gram[p]) return kv_hessian_add(r->gram[p], x, r->ctx, dim, "awq input", r->pool, err);
    return KV_OK;
}

static kv_status reference_pass(awq_run *r, int l, awq_block *b, const int *active, kv_error *err) {
    for (int p = 0; p < 4; p++) {
        memset(r->absum[p], 0, (size_t)r->dim[p] * sizeof(double));
        if (r->gram[p]) memset(r->gram[p], 0, (size_t)(r->dim[p] * r->dim[p]) * sizeof(double));
    }
    const kv_weight *aw[4] = {&b->ref[0], &b->ref[1], &b->ref[2], &b->ref[3]};
    const kv_weight *mw[3] = {&b->ref[4], &b->ref[5], &b->ref[6]};
    const int64_t d = r->d;
    kv_status st = KV_OK;
    for (int64_t w = 0; w < r->nwin && st == KV_OK; w++) {
        const float *hw = r->h + w * r->ctx * d;
        float *yaw = r->ya + w * r->ctx * d, *ymw = r->ym + w * r->ctx * d;
        kv_rmsnorm_rows(r->xn, hw, b->attn_norm->w, r->ctx, d, r->eps);
        if ((st = record(r, 0, r->xn, w, 0, err)) != KV_OK) break;
        if ((st = kv_forward_attention(r->c, l, aw, r->xn, r->ctx, 0, yaw, r->pool, err)) != KV_OK) break;
        if ((st = record(r, 1, r->c->att, w, active[G_O], err)) != KV_OK) break;
        for (int64_t i = 0; i < r->ctx * d; i++) r->tmp[i] = hw[i] + yaw[i];
        kv_rmsnorm_rows(r->xn, r->tmp, b->ffn_norm->w, r->ctx, d, r->eps);
        if ((st = record(r, 2, r->xn, w, 0, err)) != KV_OK) break;
        if ((st = kv_forward_mlp(r->c, l, mw, r->xn, r->ctx, ymw, r->pool, err)) != KV_OK) break;
        st = record(r, 3, r->c->gate, w, active[G_DOWN], err);
    }
    for (int p = 1; p < 4 && st == KV_OK; p += 2)
        if (r->gram[p] && active[p])
            for (int64_t i = 0; i < r->dim[p] * r->dim[p]; i++) r->gramf[p][i] = (float)r->gram[p][i];
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* scale search                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static void awq_scales(const double *absum, int64_t dim, int64_t count, double alpha, float *s) {
    double mx = 0, mn = INFINITY;
    for (int64_t j = 0; j < dim; j++) {
        double v = fmax(pow(absum[j] / (double)count, alpha), 1e-4);
        s[j] = (float)v;
        mx = fmax(mx, v);
        mn = fmin(mn, v);
    }
    double norm = sqrt(mx * mn);
    for (int64_t j = 0; j < dim; j++) s[j] = (float)(s[j] / norm);
}

static double sq_diff(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)a[i] - b[i];
        s += e * e;
    }
    return s;
}

/* Mean squared output error of group g with its linears replaced by Q(W·s)/s. */
static kv_status group_loss(awq_run *r, int l, awq_block *b, int g, const float *s, double *loss, kv_error *err) {
    kv_weight cw[3];
    kv_status st = KV_OK;
    for (int i = 0; i < k_groups[g].nfc && st == KV_OK; i++) {
        kv_linear_id id = k_groups[g].fc[i];
        const kv_wtensor *t = b->w[id];
        st = fake_quant(r, t->w, t->shape[0], t->shape[1], b->fmt[id], s, r->cand[i], err);
        cw[i] = b->ref[id];
        cw[i].data = r->cand[i];
    }
    if (st != KV_OK) return st;
    const int64_t d = r->d, n = r->ctx * d;
    double sum = 0;
    if (g == G_QKV) {
        const kv_weight *aw[4] = {&cw[0], &cw[1], &cw[2], &b->ref[KV_LINEAR_O]};
        for (int64_t w = 0; w < r->nwin && st == KV_OK; w++) {
            kv_rmsnorm_rows(r->xn, r->h + w * n, b->attn_norm->w, r->ctx, d, r->eps);
            if ((st = kv_forward_attention(r->c, l, aw, r->xn, r->ctx, 0, r->tmp, r->pool, err)) == KV_OK)
                sum += sq_diff(r->tmp, r->ya + w * n, n);
        }
        *loss = sum / (double)(r->ntok * d);
    } else if (g == G_GATEUP) {
        const kv_weight *mw[3] = {&cw[0], &cw[1], &b->ref[KV_LINEAR_DOWN]};
        for (int64_t w = 0; w < r->nwin && st == KV_OK; w++) {
            for (int64_t i = 0; i < n; i++) r->tmp[i] = r->h[w * n + i] + r->ya[w * n + i];
            kv_rmsnorm_rows(r->xn, r->tmp, b->ffn_norm->w, r->ctx, d, r->eps);
            if ((st = kv_forward_mlp(r->c, l, mw, r->xn, r->ctx, r->tmp, r->pool, err)) == KV_OK)
                sum += sq_diff(r->tmp, r->ym + w * n, n);
        }
        *loss = sum / (double)(r->ntok * d);
    } else {
        /* ‖X·ΔWᵀ‖² = Σ (ΔW·G) ⊙ ΔW with G = XᵀX over all tokens (one fp32 GEMM instead of a pass over X) */
        const kv_wtensor *t = b->w[k_groups[g].fc[0]];
        const int64_t rows = t->shape[0], cols = t->shape[1];
        float *dw = r->cand[0], *pg = r->cand[1];
        for (int64_t i = 0; i < rows * cols; i++) dw[i] = t->w[i] - dw[i];
        kv_gemm_f32_nt(rows, cols, cols, dw, cols, r->gramf[g == G_O ? 1 : 3], cols, pg, cols, r->pool);
        for (int64_t i = 0; i < rows * cols; i++) sum += (double)pg[i] * dw[i];
        *loss = sum / (double)(r->ntok * rows);
    }
    return st;
}

static kv_status search_group(awq_run *r, int l, awq_block *b, int g, float *best, kv_awq_result *res,
                              kv_error *err) {
    const int p = g;
    const int64_t dim = r->dim[p];
    float *s = kv_malloc((size_t)dim * sizeof(float), err);
    if (!s) return KV_ENOMEM;
    kv_status st = KV_OK;
    double best_loss = INFINITY, best_alpha = -1, loss0 = NAN;
    for (int k = 0; k < N_GRID && st == KV_OK; k++) {
        double alpha = k / (double)N_GRID, loss = NAN;
        awq_scales(r->absum[p], dim, r->ntok, alpha, s);
        if ((st = group_loss(r, l, b, g, s, &loss, err)) != KV_OK) break;
        if (k == 0) loss0 = loss;
        if (loss < best_loss) {
            best_loss = loss;
            best_alpha = alpha;
            memcpy(best, s, (size_t)dim * sizeof(float));
        }
    }
    free(s);
    if (st == KV_OK && best_alpha < 0)
        return kv_fail(err, KV_EINVAL, "awq: blk.%d %s: no finite output error for any scale", l, k_group_names[g]);
    res->searched = 1;
    res->alpha = best_alpha;
    res->loss = best_loss;
    res->loss_alpha0 = loss0;
    return st;
}

/* W ← W·diag(s) for the group's linears, previous op ← previous op / s. */
static void fold_group(awq_block *b, int g, const float *s) {
    for (int i = 0; i < k_groups[g].nfc; i++) {
        kv_wtensor *t = b->w[k_groups[g].fc[i]];
        const int64_t rows = t->shape[0], cols = t->shape[1];
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) t->w[r * cols + j] *= s[j];
        t->modified = 1;
    }
    if (k_groups[g].prev_linear == KV_LINEAR_COUNT) {
        kv_wtensor *nm = g == G_QKV ? b->attn_norm : b->ffn_norm;
        for (int64_t j = 0; j < nel(nm); j++) nm->w[j] /= s[j];
        nm->modified = 1;
        return;
    }
    kv_wtensor *prev = b->w[k_groups[g].prev_linear];
    const int64_t cols = prev->shape[1];
    for (int64_t r = 0; r < prev->shape[0]; r++)
        for (int64_t j = 0; j < cols; j++) prev->w[r * cols + j] /= s[r];
    prev->modified = 1;
    if (g == G_O && b->v_bias) {
        for (int64_t r = 0; r < nel(b->v_bias); r++) b->v_bias->w[r] /= s[r];
        b->v_bias->modified = 1;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* clipping search (auto_clip_layer)                                                               */
/* ---------------------------------------------------------------------------------------------- */

/* The input group of the clipping search: the format's scale group (kvant's INTn: g; g0 and gt scale whole
 * rows or the tensor), else its block when it holds a scale (>= 16), else the row. */
int64_t kv_awq_clip_group(const kv_format *f, int64_t cols) {
    if (f->family == KV_FAM_INT) return f->group > 0 && cols % f->group == 0 ? f->group : cols;
    return f->block >= 16 && cols % f->block == 0 ? f->block : cols;
}

static void clip_to(const float *w, float *out, const float *amax, const float *ratio, int64_t rows, int64_t cols,
                    int64_t gs) {
    const int64_t ng = cols / gs;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ng; g++) {
            const float lim = amax[r * ng + g] * ratio[r * ng + g];
            for (int64_t c = g * gs; c < (g + 1) * gs; c++) {
                const float v = w[r * cols + c];
                out[r * cols + c] = v > lim ? lim : v < -lim ? -lim : v;
            }
        }
}

kv_status kv_awq_clip(float *w, int64_t rows, int64_t cols, const kv_format *fmt, const float *x, int64_t nsamp,
                      kv_pool *pool, float *ratio_out, kv_error *err) {
    const int64_t gs = kv_awq_clip_group(fmt, cols), ng = cols / gs, n = rows * ng;
    const size_t rb = kv_format_row_bytes(fmt, cols);
    if (rb == 0) return kv_fail(err, KV_EINVAL, "awq: rows of %lld do not fit %s", (long long)cols, fmt->name);
    float *amax = kv_malloc((size_t)n * sizeof(float), err), *ratio = kv_malloc((size_t)n * sizeof(float), err);
    float *best = kv_malloc((size_t)n * sizeof(float), err);
    double *best_err = kv_malloc((size_t)n * sizeof(double), err), *acc = kv_malloc((size_t)rows * sizeof(double), err);
    float *cw = kv_malloc((size_t)(rows * cols) * sizeof(float), err);
    float *e = kv_malloc((size_t)(nsamp * rows) * sizeof(float), err);
    uint8_t *packed = kv_malloc(rb * (size_t)rows, err);
    kv_status st = amax && ratio && best && best_err && acc && cw && e && packed ? KV_OK : KV_ENOMEM;
    for (int64_t i = 0; st == KV_OK && i < n; i++) {
        const float *wr = w + (i / ng) * cols + (i % ng) * gs;
        float a = 0.0f;
        for (int64_t c = 0; c < gs; c++) a = fmaxf(a, fabsf(wr[c]));
        amax[i] = a;
        best[i] = 1.0f;
        best_err[i] = INFINITY;
    }
    for (int k = 0; k < N_CLIP && st == KV_OK; k++) {
        const float rk = 1.0f - (float)k / (float)N_GRID;
        for (int64_t i = 0; i < n; i++) ratio[i] = rk;
        clip_to(w, cw, amax, ratio, rows, cols, gs);
        if ((st = fmt->quantize(fmt, cw, packed, rows, cols, NULL, err)) != KV_OK) break;
        for (int64_t r = 0; r < rows; r++) {
            fmt->dequantize(fmt, packed + (size_t)r * rb, cw + r * cols, cols);
            for (int64_t c = 0; c < cols; c++) cw[r * cols + c] -= w[r * cols + c];
        }
        for (int64_t g = 0; g < ng; g++) {
            /* e[t, r] = x_t,g · (q − w)_r,g: the group's share of the output error */
            kv_gemm_f32_nt(nsamp, rows, gs, x + g * gs, cols, cw + g * gs, cols, e, rows, pool);
            memset(acc, 0, (size_t)rows * sizeof(double));
            for (int64_t t = 0; t < nsamp; t++)
                for (int64_t r = 0; r < rows; r++) acc[r] += (double)e[t * rows + r] * e[t * rows + r];
            for (int64_t r = 0; r < rows; r++) {
                double er = acc[r] / (double)nsamp;
                if (er < best_err[r * ng + g]) best_err[r * ng + g] = er, best[r * ng + g] = rk;
            }
        }
    }
    if (st == KV_OK) {
        clip_to(w, cw, amax, best, rows, cols, gs);
        memcpy(w, cw, (size_t)(rows * cols) * sizeof(float));
        if (ratio_out) memcpy(ratio_out, best, (size_t)n * sizeof(float));
    }
    free(amax);
    free(ratio);
    free(best);
    free(best_err);
    free(acc);
    free(cw);
    free(e);
    free(packed);
    return st;
}

/* Clips the group's linears (not q, k) on the sampled inputs divided by the group's scales s (NULL: 1). */
static kv_status clip_group(awq_run *r, awq_block *b, int g, const float *s, double *ratio_sum, int64_t *ratio_n,
                            kv_error *err) {
    const int p = g;
    const int64_t dim = r->dim[p];
    kv_status st = KV_OK;
    float *x = NULL, *ratios = NULL;
    for (int i = 0; i < k_groups[g].nfc && st == KV_OK; i++) {
        kv_linear_id id = k_groups[g].fc[i];
        kv_wtensor *t = b->w[id];
        if (id == KV_LINEAR_Q || id == KV_LINEAR_K || !b->fmt[id] || t->rht_block) continue;
        if (!x) {
            x = kv_malloc((size_t)(r->nsamp * dim) * sizeof(float), err);
            if (!x) return KV_ENOMEM;
            for (int64_t k = 0; k < r->nsamp; k++)
                for (int64_t j = 0; j < dim; j++) x[k * dim + j] = s ? r->samp[p][k * dim + j] / s[j] : r->samp[p][k * dim + j];
        }
        const int64_t ng = t->shape[1] / kv_awq_clip_group(b->fmt[id], t->shape[1]), n = t->shape[0] * ng;
        free(ratios);
        if (!(ratios = kv_malloc((size_t)n * sizeof(float), err))) st = KV_ENOMEM;
        if (st == KV_OK) st = kv_awq_clip(t->w, t->shape[0], t->shape[1], b->fmt[id], x, r->nsamp, r->pool, ratios, err);
        if (st == KV_OK) {
            for (int64_t k = 0; k < n; k++) *ratio_sum += ratios[k];
            *ratio_n += n;
            t->modified = 1;
        }
    }
    free(x);
    free(ratios);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* driver                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

static void run_free(awq_run *r) {
    kv_context_free(r->c);
    free(r->h);
    free(r->ya);
    free(r->ym);
    free(r->xn);
    free(r->tmp);
    for (int p = 0; p < 4; p++) {
        free(r->absum[p]);
        free(r->gram[p]);
        free(r->gramf[p]);
        free(r->samp[p]);
    }
    for (int i = 0; i < 3; i++) free(r->cand[i]);
    free(r->packed);
}

static kv_status run_init(awq_run *r, kv_wmodel *wm, const kv_model *m, const int32_t *ids, int64_t n_ids,
                          int32_t ctx, kv_pool *pool, kv_error *err) {
    memset(r, 0, sizeof *r);
    const kv_hparams *hp = kv_model_get_hparams(m);
    r->wm = wm;
    r->m = m;
    r->pool = pool;
    r->ctx = ctx;
    r->nwin = ctx > 0 ? n_ids / ctx : 0;
    if (!ids || r->nwin < 1)
        return kv_fail(err, KV_EINVAL, "awq needs at least one calibration window of %d tokens", (int)ctx);
    if (hp->n_layer != wm->hp.n_layer || hp->n_embd != wm->hp.n_embd)
        return kv_fail(err, KV_EINVAL, "awq: the model does not match the working copy");
    r->ntok = r->nwin * ctx;
    r->d = hp->n_embd;
    r->eps = hp->norm_eps;
    r->stride = KV_MAX(1, r->ntok / N_CLIP_TOKENS);
    r->nsamp = (r->ntok + r->stride - 1) / r->stride;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim, ff = hp->n_ff, wide = KV_MAX(KV_MAX(r->d, qd), ff);
    r->dim[0] = r->dim[2] = r->d;
    r->dim[1] = qd;
    r->dim[3] = ff;
    const size_t act = (size_t)(r->ntok * r->d) * sizeof(float);
    r->h = kv_malloc(act, err);
    r->ya = kv_malloc(act, err);
    r->ym = kv_malloc(act, err);
    r->xn = kv_malloc((size_t)(ctx * wide) * sizeof(float), err);
    r->tmp = kv_malloc((size_t)(ctx * wide) * sizeof(float), err);
    if (!r->h || !r->ya || !r->ym || !r->xn || !r->tmp) return KV_ENOMEM;
    for (int p = 0; p < 4; p++) {
        r->absum[p] = kv_malloc((size_t)r->dim[p] * sizeof(double), err);
        r->samp[p] = kv_malloc((size_t)(r->nsamp * r->dim[p]) * sizeof(float), err);
        if (!r->absum[p] || !r->samp[p]) return KV_ENOMEM;
    }
    int64_t maxw = 0;
    for (int64_t i = 0; i < wm->n; i++)
        if (!strncmp(wm->t[i].name, "blk.", 4) && wm->t[i].n_dims == 2) maxw = KV_MAX(maxw, nel(&wm->t[i]));
    for (int i = 0; i < 3; i++)
        if (!(r->cand[i] = kv_malloc((size_t)maxw * sizeof(float), err))) return KV_ENOMEM;
    kv_status st = kv_context_create(m, ctx, &r->c, err);
    for (int64_t w = 0; w < r->nwin && st == KV_OK; w++)
        st = kv_forward_embed(m, ids + w * ctx, ctx, r->h + w * ctx * r->d, err);
    return st;
}

static kv_status grams_for(awq_run *r, const int *active, kv_error *err) {
    const int pts[2][2] = {{G_O, 1}, {G_DOWN, 3}};
    for (int k = 0; k < 2; k++) {
        int g = pts[k][0], p = pts[k][1];
        if (active[g] && !r->gram[p]) {
            r->gram[p] = kv_malloc((size_t)(r->dim[p] * r->dim[p]) * sizeof(double), err);
            r->gramf[p] = kv_malloc((size_t)(r->dim[p] * r->dim[p]) * sizeof(float), err);
            if (!r->gram[p] || !r->gramf[p]) return KV_ENOMEM;
        }
    }
    return KV_OK;
}

static void make_summary(const kv_awq_result *res, int n_layer, double clip_sum, int64_t clip_n, char *out, size_t n) {
    size_t len = 0;
    out[0] = 0;
    for (int g = 0; g < N_GROUPS; g++) {
        double a = 0, l = 0, l0 = 0;
        int k = 0;
        for (int li = 0; li < n_layer; li++) {
            const kv_awq_result *x = &res[li * N_GROUPS + g];
            if (!x->searched) continue;
            a += x->alpha;
            l += x->loss;
            l0 += x->loss_alpha0;
            k++;
        }
        if (k && len < n)
            len += (size_t)snprintf(out + len, n - len, "%s%s alpha %.2f (MSE x%.3f of alpha 0)", len ? ", " : "",
                                    k_group_names[g], a / k, l0 > 0 ? l / l0 : 1.0);
    }
    if (clip_n && len < n)
        snprintf(out + len, n - len, "%smean clip ratio %.3f over %lld groups", len ? ", " : "", clip_sum / (double)clip_n,
                 (long long)clip_n);
}

kv_status kv_transform_awq(kv_wmodel *wm, const kv_model *m, const int32_t *ids, int64_t n_ids, int32_t ctx,
                           kv_format_of_fn fmt_of, void *user, int clip, kv_pool *pool, kv_awq_result *results,
                           char *summary, size_t summary_len, kv_error *err) {
    if (!wm || !m || !fmt_of) return kv_fail(err, KV_EINVAL, "kv_transform_awq: NULL argument");
    const int L = wm->hp.n_layer;
    awq_run r;
    kv_status st = run_init(&r, wm, m, ids, n_ids, ctx, pool, err);
    kv_awq_result *res = results ? results : kv_calloc((size_t)KV_MAX(L, 1) * N_GROUPS, sizeof *res, err);
    if (st == KV_OK && !res) st = KV_ENOMEM;
    if (st == KV_OK && results) memset(results, 0, (size_t)L * N_GROUPS * sizeof *results);
    float *s[N_GROUPS] = {0};
    for (int g = 0; g < N_GROUPS && st == KV_OK; g++)
        if (!(s[g] = kv_malloc((size_t)KV_MAX(r.dim[g], 1) * sizeof(float), err))) st = KV_ENOMEM;
    double clip_sum = 0;
    int64_t clip_n = 0;
    for (int l = 0; l < L && st == KV_OK; l++) {
        awq_block b;
        int active[N_GROUPS];
        if ((st = block_open(&r, l, fmt_of, user, &b, err)) != KV_OK) break;
        for (int g = 0; g < N_GROUPS; g++) active[g] = group_active(&b, g);
        if ((st = grams_for(&r, active, err)) != KV_OK) break;
        if ((st = reference_pass(&r, l, &b, active, err)) != KV_OK) break;
        /* every group is searched on the original block, then all are folded (auto_scale_block, apply_scale) */
        for (int g = 0; g < N_GROUPS && st == KV_OK; g++)
            if (active[g]) st = search_group(&r, l, &b, g, s[g], &res[l * N_GROUPS + g], err);
        for (int g = 0; g < N_GROUPS && st == KV_OK; g++)
            if (active[g]) fold_group(&b, g, s[g]);
        for (int g = 0; g < N_GROUPS && st == KV_OK && clip; g++)
            st = clip_group(&r, &b, g, active[g] ? s[g] : NULL, &clip_sum, &clip_n, err);
        /* the next block sees the unquantized block's output */
        for (int64_t i = 0; st == KV_OK && i < r.ntok * r.d; i++) {
            r.h[i] += r.ya[i];
            r.h[i] += r.ym[i];
        }
        if (st != KV_OK && b.w[KV_LINEAR_Q]) kv_error_context(err, NULL, -1, b.w[KV_LINEAR_Q]->name);
    }
    if (st == KV_OK && summary && summary_len) make_summary(res, L, clip_sum, clip_n, summary, summary_len);
    for (int g = 0; g < N_GROUPS; g++) free(s[g]);
    if (res != results) free(res);
    run_free(&r);
    return st;
}
