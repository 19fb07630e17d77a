/* forward.c — the reference forward pass of Llama-family models, read top to bottom like llama2.c's run.c
 * (rmsnorm, rope, attention, swiglu, forward), batched: every linear runs once for all tokens of a call
 * through the blocked GEMM (kernels/cpu/matmul.c), attention is threaded over (head, query block).
 * Numerics follow Hugging Face transformers' LlamaForCausalLM in fp32 (modeling_llama.py: LlamaRMSNorm,
 * apply_rotary_pos_emb with rotate_half, eager_attention_forward with GQA repeat_kv, LlamaMLP). */
#include "model/model.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/kernels.h"
#include <math.h>

enum { QBLOCK = 64,     /* queries per attention task */
       QDIRECT = 4 };   /* query blocks up to this size use dot products on the cache rows (no packing) */

/* ---------------------------------------------------------------------------------------------- */
/* context                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static int64_t kv_dim(const kv_hparams *hp) { return (int64_t)hp->n_head_kv * hp->head_dim; }
static int64_t q_dim(const kv_hparams *hp) { return (int64_t)hp->n_head * hp->head_dim; }

kv_status kv_context_create(const kv_model *m, int32_t n_ctx, kv_context **out, kv_error *err) {
    if (!m || !out) return kv_fail(err, KV_EINVAL, "kv_context_create: NULL argument");
    *out = NULL;
    if (n_ctx <= 0) return kv_fail(err, KV_EINVAL, "context length %d must be positive", (int)n_ctx);
    if (m->hp.n_ctx_train > 0 && n_ctx > m->hp.n_ctx_train)
        return kv_fail(err, KV_EINVAL, "context length %d exceeds the model's maximum %d", (int)n_ctx,
                       (int)m->hp.n_ctx_train);
    kv_context *c = kv_calloc(1, sizeof *c, err);
    if (!c) return KV_ENOMEM;
    c->m = m;
    c->n_ctx = n_ctx;
    const size_t cache = (size_t)m->hp.n_layer * (size_t)n_ctx * (size_t)kv_dim(&m->hp);
    c->kcache = kv_calloc(cache, sizeof(float), err);
    c->vcache = kv_calloc(cache, sizeof(float), err);
    if (!c->kcache || !c->vcache) { kv_context_free(c); return KV_ENOMEM; }
    *out = c;
    return KV_OK;
}

static void free_scratch(kv_context *c) {
    float **bufs[] = {&c->x, &c->xn, &c->q, &c->k, &c->v, &c->att, &c->gate, &c->up, &c->tin};
    for (size_t i = 0; i < KV_ARRAY_LEN(bufs); i++) { kv_free_aligned(*bufs[i]); *bufs[i] = NULL; }
    c->cap = 0;
}

void kv_context_free(kv_context *c) {
    if (!c) return;
    free_scratch(c);
    kv_matmul_ws_free(&c->ws);
    free(c->scores);
    free(c->kcache);
    free(c->vcache);
    free(c);
}

int32_t kv_context_n_ctx(const kv_context *c) { return c ? c->n_ctx : 0; }

void kv_context_set_hooks(kv_context *c, const kv_forward_hooks *hooks) {
    if (!c) return;
    if (hooks) c->hooks = *hooks;
    else memset(&c->hooks, 0, sizeof c->hooks);
}

/* Scratch for n tokens and nthr threads (grown, never shrunk). */
static kv_status reserve(kv_context *c, int64_t n, int nthr, kv_error *err) {
    const kv_hparams *hp = &c->m->hp;
    if (n > c->cap) {
        free_scratch(c);
        const int64_t d = hp->n_embd, qd = q_dim(hp), kvd = kv_dim(hp), ff = hp->n_ff;
        const int64_t tin = KV_MAX(KV_MAX(d, qd), ff);
        struct { float **p; int64_t w; } b[] = {{&c->x, d}, {&c->xn, KV_MAX(d, qd)}, {&c->q, qd}, {&c->k, kvd},
                                                {&c->v, kvd}, {&c->att, qd}, {&c->gate, ff}, {&c->up, ff},
                                                {&c->tin, tin}};
        for (size_t i = 0; i < KV_ARRAY_LEN(b); i++) {
            *b[i].p = kv_malloc_aligned((size_t)n * (size_t)b[i].w * sizeof(float), err);
            if (!*b[i].p) { free_scratch(c); return KV_ENOMEM; }
        }
        c->cap = n;
    }
    if (nthr > c->nthreads_alloc) {
        free(c->scores);
        /* per thread: QBLOCK x n_ctx scores + head_dim x n_ctx transposed values */
        c->scores = kv_malloc((size_t)nthr * (size_t)(QBLOCK + hp->head_dim) * (size_t)c->n_ctx * sizeof(float), err);
        c->nthreads_alloc = c->scores ? nthr : 0;
        if (!c->scores) return KV_ENOMEM;
    }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* operations                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

/* LlamaRMSNorm: y = w ⊙ x / sqrt(mean(x²) + eps), per row. */
static void rmsnorm(float *y, const float *x, const float *w, int64_t n, int64_t d, float eps) {
    for (int64_t t = 0; t < n; t++) {
        const float *xr = x + t * d;
        float *yr = y + t * d;
        double ss = 0.0;
        for (int64_t i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        const float s = 1.0f / sqrtf((float)(ss / (double)d) + eps);
        for (int64_t i = 0; i < d; i++) yr[i] = w[i] * (xr[i] * s);
    }
}

/* RoPE in Hugging Face's rotate-half layout: pairs (i, i + head_dim/2) of each head rotate by pos·inv_freq[i]. */
static void rope(float *x, int64_t n, int64_t pos0, int nheads, int hd, const double *inv_freq) {
    const int half = hd / 2;
    for (int64_t t = 0; t < n; t++) {
        const float pos = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            const float ang = pos * (float)inv_freq[i]; /* fp32 product, as HF's rotary embedding */
            const float cs = (float)cos((double)ang), sn = (float)sin((double)ang);
            for (int h = 0; h < nheads; h++) {
                float *v = x + (t * nheads + h) * (int64_t)hd;
                const float a = v[i], b = v[i + half];
                v[i] = a * cs - b * sn;
                v[i + half] = b * cs + a * sn;
            }
        }
    }
}

typedef struct attn_job {
    const kv_context *c;
    int layer;
    const float *q;
    float *out;
    int64_t n, pos0, nqb;
} attn_job;

/* A few queries (decode): packing the cache into GEMM panels would cost more than the products, so each score
 * is one dot product of the query with a cached key row and the output one axpy per value row. Query r sees
 * keys 0..first+r. S holds one row of scores. */
static void attn_rows_direct(const float *q, int64_t ldq, int64_t rows, const float *kc, const float *vc,
                             int64_t kvd, int hd, int64_t first, float *S, float scale, float *out) {
    const kv_f32_kernels *kt = kv_f32_kernels_hw();
    for (int64_t r = 0; r < rows; r++) {
        const float *qr = q + r * ldq;
        const int64_t valid = first + r + 1;
        for (int64_t p = 0; p < valid; p++) S[p] = kt->dot(qr, kc + p * kvd, hd);
        kt->softmax_scaled(S, valid, scale);
        float *o = out + r * ldq;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int64_t p = 0; p < valid; p++) kt->axpy(o, S[p], vc + p * kvd, hd);
    }
}

/* One (head, block of QBLOCK queries): S = Q·Kᵀ over the keys the block can see (two small GEMMs instead of
 * per-pair dot products), causal mask, softmax per row, O = P·V. */
static void attn_task(void *ctx, int64_t task, int thread) {
    const attn_job *j = ctx;
    const kv_hparams *hp = &j->c->m->hp;
    const int hd = hp->head_dim, h = (int)(task / j->nqb), kvh = h / (hp->n_head / hp->n_head_kv);
    const int64_t kvd = kv_dim(hp), qd = q_dim(hp), n_ctx = j->c->n_ctx;
    const float *kc = j->c->kcache + (size_t)j->layer * (size_t)n_ctx * (size_t)kvd + (size_t)kvh * hd;
    const float *vc = j->c->vcache + (size_t)j->layer * (size_t)n_ctx * (size_t)kvd + (size_t)kvh * hd;
    float *S = j->c->scores + (size_t)thread * (size_t)(QBLOCK + hd) * (size_t)n_ctx;
    float *Vt = S + (size_t)QBLOCK * (size_t)n_ctx;
    const float scale = 1.0f / sqrtf((float)hd);
    const int64_t t0 = (task % j->nqb) * QBLOCK, t1 = KV_MIN(t0 + QBLOCK, j->n), rows = t1 - t0;
    const int64_t nk = j->pos0 + t1; /* keys 0..nk-1 */
    if (rows <= QDIRECT) {
        attn_rows_direct(j->q + t0 * qd + (int64_t)h * hd, qd, rows, kc, vc, kvd, hd, j->pos0 + t0, S, scale,
                         j->out + t0 * qd + (int64_t)h * hd);
        return;
    }
    kv_gemm_f32_nt(rows, nk, hd, j->q + t0 * qd + (int64_t)h * hd, qd, kc, kvd, S, nk, NULL);
    for (int64_t r = 0; r < rows; r++) {
        float *sr = S + r * nk;
        const int64_t valid = j->pos0 + t0 + r + 1;
        kv_softmax_scaled(sr, valid, scale);
        for (int64_t p = valid; p < nk; p++) sr[p] = 0.0f;
    }
    for (int64_t p = 0; p < nk; p++)
        for (int d = 0; d < hd; d++) Vt[(int64_t)d * nk + p] = vc[p * kvd + d];
    kv_gemm_f32_nt(rows, hd, nk, S, nk, Vt, nk, j->out + t0 * qd + (int64_t)h * hd, qd, NULL);
}

/* Quantize-dequantize each row of x [n × d] with the activation format (simulated activation quantization). */
static kv_status act_quant_rows(const kv_format *f, float *x, int64_t n, int64_t d, kv_error *err) {
    const size_t rb = kv_format_row_bytes(f, d);
    void *packed = kv_malloc(rb, err);
    if (!packed) return KV_ENOMEM;
    kv_status st = KV_OK;
    for (int64_t t = 0; t < n && st == KV_OK; t++) {
        st = f->quantize(f, x + t * d, packed, 1, d, NULL, err);
        if (st == KV_OK) f->dequantize(f, packed, x + t * d, d);
    }
    free(packed);
    return st;
}

/* y = W·x for the rows of x, applying the weight's online Hadamard and the activation quantization first. */
static kv_status linear(kv_context *c, const kv_weight *w, const float *x, int64_t n, float *y, int act_quant,
                        kv_pool *pool, kv_error *err) {
    const kv_model *m = c->m;
    const float *in = x;
    if (w->llmint8) act_quant = 0; /* LLM.int8() quantizes its own activations */
    if (w->rht_block > 0 || act_quant) {
        memcpy(c->tin, x, (size_t)n * (size_t)w->cols * sizeof(float));
        if (w->rht_block > 0)
            for (int64_t t = 0; t < n; t++) kv_rht_apply(c->tin + t * w->cols, w->cols, w->rht_block, w->rht_signs);
        if (act_quant) {
            kv_status st = act_quant_rows(&m->act_fmt, c->tin, n, w->cols, err);
            if (st != KV_OK) return st;
        }
        in = c->tin;
    }
    if (w->llmint8) return kv_llmint8_weight_matmul(w, in, n, y, pool, err);
    const kv_matmul_opts o = {.bf16_dot = m->bf16_dot, .act_q8 = m->act_q8, .ws = &c->ws};
    return kv_weight_matmul_opt(w, in, n, y, &o, pool, err);
}

static void hook(const kv_context *c, int layer, kv_linear_id which, const float *x, int64_t n, int64_t dim) {
    if (c->hooks.on_linear_input) c->hooks.on_linear_input(c->hooks.user, layer, which, x, n, dim);
}

/* ---------------------------------------------------------------------------------------------- */
/* the two halves of a decoder block, on given weights (kv_forward_layer; AWQ's search substitutes)  */
/* ---------------------------------------------------------------------------------------------- */

/* Self-attention on normed inputs xn [n × n_embd] at positions pos0..: w = q, k, v, o. K and V go to the
 * layer's cache; out [n × n_embd] = o(attention) may alias xn; c->att keeps o's input. Scratch reserved. */
static kv_status attention_sublayer(kv_context *c, int layer, const kv_weight *const *w, const float *xn, int64_t n,
                                    int64_t pos0, float *out, kv_pool *pool, kv_error *err) {
    const kv_model *m = c->m;
    const kv_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd, qd = q_dim(hp), kvd = kv_dim(hp);
    const int aq = m->act_quant;
    kv_status st;
    hook(c, layer, KV_LINEAR_Q, xn, n, d);
    if ((st = linear(c, w[0], xn, n, c->q, aq, pool, err)) != KV_OK) return st;
    if ((st = linear(c, w[1], xn, n, c->k, aq, pool, err)) != KV_OK) return st;
    if ((st = linear(c, w[2], xn, n, c->v, aq, pool, err)) != KV_OK) return st;
    rope(c->q, n, pos0, hp->n_head, hp->head_dim, m->rope_inv_freq);
    rope(c->k, n, pos0, hp->n_head_kv, hp->head_dim, m->rope_inv_freq);
    const size_t base = ((size_t)layer * (size_t)c->n_ctx + (size_t)pos0) * (size_t)kvd;
    memcpy(c->kcache + base, c->k, (size_t)n * (size_t)kvd * sizeof(float));
    memcpy(c->vcache + base, c->v, (size_t)n * (size_t)kvd * sizeof(float));
    attn_job aj = {.c = c, .layer = layer, .q = c->q, .out = c->att, .n = n, .pos0 = pos0,
                   .nqb = (n + QBLOCK - 1) / QBLOCK};
    kv_pool_run(pool, (int64_t)hp->n_head * aj.nqb, attn_task, &aj);
    hook(c, layer, KV_LINEAR_O, c->att, n, qd);
    return linear(c, w[3], c->att, n, out, aq, pool, err);
}

/* SwiGLU MLP on normed inputs xn: out = down(silu(gate(xn)) ⊙ up(xn)), w = gate, up, down; out may alias xn;
 * c->gate keeps down's input. Scratch reserved. */
static kv_status mlp_sublayer(kv_context *c, int layer, const kv_weight *const *w, const float *xn, int64_t n,
                              float *out, kv_pool *pool, kv_error *err) {
    const kv_model *m = c->m;
    const int64_t d = m->hp.n_embd, ff = m->hp.n_ff;
    const int aq = m->act_quant;
    kv_status st;
    hook(c, layer, KV_LINEAR_GATE, xn, n, d);
    if ((st = linear(c, w[0], xn, n, c->gate, aq, pool, err)) != KV_OK) return st;
    if ((st = linear(c, w[1], xn, n, c->up, aq, pool, err)) != KV_OK) return st;
    kv_swiglu(c->gate, c->up, n * ff);
    hook(c, layer, KV_LINEAR_DOWN, c->gate, n, ff);
    return linear(c, w[2], c->gate, n, out, aq, pool, err);
}

/* ---------------------------------------------------------------------------------------------- */
/* forward                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

kv_status kv_forward_embed(const kv_model *m, const int32_t *tokens, int64_t n, float *hidden, kv_error *err) {
    if (!m || (!tokens && n > 0) || (!hidden && n > 0)) return kv_fail(err, KV_EINVAL, "kv_forward_embed: NULL argument");
    const kv_weight *e = &m->tok_embd;
    const size_t rb = kv_format_row_bytes(&e->fmt, e->cols);
    for (int64_t t = 0; t < n; t++) {
        const int32_t id = tokens[t];
        if (id < 0 || id >= m->hp.n_vocab)
            return kv_fail(err, KV_ERANGE, "token id %d at position %lld is outside the vocabulary (%d)", (int)id,
                           (long long)t, (int)m->hp.n_vocab);
        const uint8_t *row = (const uint8_t *)e->data + (size_t)id * rb;
        float *dst = hidden + t * e->cols;
        if (e->fmt.type == KV_TYPE_F32) memcpy(dst, row, (size_t)e->cols * sizeof(float));
        else if (e->fmt.type == KV_TYPE_BF16) kv_bf16_to_fp32_row((const uint16_t *)(const void *)row, dst, (size_t)e->cols);
        else if (e->fmt.type == KV_TYPE_F16) kv_fp16_to_fp32_row((const uint16_t *)(const void *)row, dst, (size_t)e->cols);
        else e->fmt.dequantize(&e->fmt, row, dst, e->cols);
    }
    return KV_OK;
}

static kv_status check_span(const kv_context *c, int64_t n, int64_t pos0, kv_error *err) {
    if (n < 0 || pos0 < 0) return kv_fail(err, KV_EINVAL, "negative token count or position");
    if (pos0 + n > c->n_ctx)
        return kv_fail(err, KV_ERANGE, "positions %lld..%lld exceed the context of %d tokens", (long long)pos0,
                       (long long)(pos0 + n - 1), (int)c->n_ctx);
    return KV_OK;
}

kv_status kv_forward_layer(kv_context *c, int layer, float *x, int64_t n, int64_t pos0, kv_pool *pool,
                           kv_error *err) {
    if (!c || !x) return kv_fail(err, KV_EINVAL, "kv_forward_layer: NULL argument");
    const kv_model *m = c->m;
    const kv_hparams *hp = &m->hp;
    if (layer < 0 || layer >= hp->n_layer) return kv_fail(err, KV_ERANGE, "layer %d out of range", layer);
    kv_status st = check_span(c, n, pos0, err);
    if (st != KV_OK || n == 0) return st;
    const int nthr = pool ? kv_pool_threads(pool) : 1;
    if ((st = reserve(c, n, nthr, err)) != KV_OK) return st;
    const kv_layer *L = &m->layers[layer];
    const int64_t d = hp->n_embd;
    const kv_weight *aw[4] = {&L->w[KV_LINEAR_Q], &L->w[KV_LINEAR_K], &L->w[KV_LINEAR_V], &L->w[KV_LINEAR_O]};
    const kv_weight *mw[3] = {&L->w[KV_LINEAR_GATE], &L->w[KV_LINEAR_UP], &L->w[KV_LINEAR_DOWN]};

    rmsnorm(c->xn, x, L->attn_norm, n, d, hp->norm_eps);
    if ((st = attention_sublayer(c, layer, aw, c->xn, n, pos0, c->xn, pool, err)) != KV_OK) return st;
    for (int64_t i = 0; i < n * d; i++) x[i] += c->xn[i];
    rmsnorm(c->xn, x, L->ffn_norm, n, d, hp->norm_eps);
    if ((st = mlp_sublayer(c, layer, mw, c->xn, n, c->xn, pool, err)) != KV_OK) return st;
    for (int64_t i = 0; i < n * d; i++) x[i] += c->xn[i];
    return KV_OK;
}

kv_status kv_forward_attention(kv_context *c, int layer, const kv_weight *const w[4], const float *xn, int64_t n,
                               int64_t pos0, float *out, kv_pool *pool, kv_error *err) {
    if (!c || !w || !xn || !out) return kv_fail(err, KV_EINVAL, "kv_forward_attention: NULL argument");
    if (layer < 0 || layer >= c->m->hp.n_layer) return kv_fail(err, KV_ERANGE, "layer %d out of range", layer);
    kv_status st = check_span(c, n, pos0, err);
    if (st != KV_OK || n == 0) return st;
    if ((st = reserve(c, n, pool ? kv_pool_threads(pool) : 1, err)) != KV_OK) return st;
    return attention_sublayer(c, layer, w, xn, n, pos0, out, pool, err);
}

kv_status kv_forward_mlp(kv_context *c, int layer, const kv_weight *const w[3], const float *xn, int64_t n,
                         float *out, kv_pool *pool, kv_error *err) {
    if (!c || !w || !xn || !out) return kv_fail(err, KV_EINVAL, "kv_forward_mlp: NULL argument");
    if (layer < 0 || layer >= c->m->hp.n_layer) return kv_fail(err, KV_ERANGE, "layer %d out of range", layer);
    if (n <= 0) return n < 0 ? kv_fail(err, KV_EINVAL, "negative token count") : KV_OK;
    kv_status st = reserve(c, n, pool ? kv_pool_threads(pool) : 1, err);
    return st != KV_OK ? st : mlp_sublayer(c, layer, w, xn, n, out, pool, err);
}

void kv_rmsnorm_rows(float *y, const float *x, const float *w, int64_t n, int64_t d, float eps) {
    rmsnorm(y, x, w, n, d, eps);
}

kv_status kv_forward_head(kv_context *c, const float *x, int64_t n, float *logits, kv_pool *pool, kv_error *err) {
    if (!c || !x || !logits) return kv_fail(err, KV_EINVAL, "kv_forward_head: NULL argument");
    const kv_model *m = c->m;
    const int nthr = pool ? kv_pool_threads(pool) : 1;
    kv_status st = reserve(c, n, nthr, err);
    if (st != KV_OK || n == 0) return st;
    rmsnorm(c->xn, x, m->output_norm, n, m->hp.n_embd, m->hp.norm_eps);
    hook(c, m->hp.n_layer, KV_LINEAR_HEAD, c->xn, n, m->hp.n_embd);
    return linear(c, &m->head, c->xn, n, logits, m->act_quant && m->act_quant_head, pool, err);
}

kv_status kv_forward(kv_context *c, const int32_t *tokens, int64_t n, int64_t pos0, float *logits, unsigned flags,
                     kv_pool *pool, kv_error *err) {
    if (!c || (!tokens && n > 0)) return kv_fail(err, KV_EINVAL, "kv_forward: NULL argument");
    if (!logits && !(flags & KV_FORWARD_NO_LOGITS)) return kv_fail(err, KV_EINVAL, "kv_forward: NULL logits");
    kv_status st = check_span(c, n, pos0, err);
    if (st != KV_OK || n == 0) return st;
    const int nthr = pool ? kv_pool_threads(pool) : 1;
    if ((st = reserve(c, n, nthr, err)) != KV_OK) return st;
    const kv_model *m = c->m;
    const int64_t d = m->hp.n_embd;
    if ((st = kv_forward_embed(m, tokens, n, c->x, err)) != KV_OK) return st;
    for (int l = 0; l < m->hp.n_layer; l++)
        if ((st = kv_forward_layer(c, l, c->x, n, pos0, pool, err)) != KV_OK) return st;
    if (flags & KV_FORWARD_NO_LOGITS) return KV_OK;
    if (flags & KV_FORWARD_LAST_ONLY) return kv_forward_head(c, c->x + (n - 1) * d, 1, logits, pool, err);
    return kv_forward_head(c, c->x, n, logits, pool, err);
}
