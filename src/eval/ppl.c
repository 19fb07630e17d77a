/* ppl.c — perplexity over windows of a token stream, in the two conventions the field uses:
 *   hf: IST-DASLab/gptq datautils.get_wikitext2 + llama_eval (non-overlapping windows, tail dropped, every
 *       shifted prediction scored; the mean of window means equals the mean over tokens: windows are equal);
 *   llamacpp: llama.cpp tools/perplexity/perplexity.cpp perplexity() (first token of each window replaced by
 *       BOS, logits n_ctx/2 .. n_ctx-2 scored, nll in double, "PPL = X +/- err" from the nll variance).
 * The same pass optionally records the base model's log-probs (logits file) or compares against them (KLD;
 * kld.c), so every statistic comes from one forward per window. */
#include "eval/eval.h"
#include "model/model.h"
#include "kernels/cpu/matmul.h"
#include <math.h>

const char *kv_ppl_style_name(kv_ppl_style s) { return s == KV_PPL_LLAMACPP ? "llamacpp" : "hf"; }

kv_status kv_eval_make_plan(const kv_model *m, int64_t n_ids, const kv_eval_opts *o, kv_eval_plan *plan,
                            kv_error *err) {
    memset(plan, 0, sizeof *plan);
    const int32_t ctx = o && o->ctx > 0 ? o->ctx : 512;
    const kv_ppl_style style = o ? o->style : KV_PPL_HF;
    if (style != KV_PPL_HF && style != KV_PPL_LLAMACPP) return kv_fail(err, KV_EINVAL, "unknown perplexity style %d", (int)style);
    if (ctx < 2) return kv_fail(err, KV_EINVAL, "context %d is too short to score anything", (int)ctx);
    if (m->hp.n_ctx_train > 0 && ctx > m->hp.n_ctx_train)
        return kv_fail(err, KV_EINVAL, "context %d exceeds the model's maximum of %d tokens", (int)ctx, (int)m->hp.n_ctx_train);
    if (o && o->chunks < 0) return kv_fail(err, KV_EINVAL, "negative chunk count");
    if (n_ids <= 0) return kv_fail(err, KV_ERANGE, "the text is empty (no tokens to score)");
    int64_t windows = n_ids / ctx;
    if (style == KV_PPL_LLAMACPP && n_ids < 2 * (int64_t)ctx)
        return kv_fail(err, KV_ERANGE, "the text has %lld tokens; llama.cpp-style perplexity needs at least 2*ctx = %lld",
                       (long long)n_ids, 2LL * ctx);
    if (windows < 1)
        return kv_fail(err, KV_ERANGE, "the text has %lld tokens, shorter than one window of %d", (long long)n_ids, (int)ctx);
    if (o && o->chunks > 0) windows = KV_MIN(windows, o->chunks);
    plan->ctx = ctx;
    plan->style = style;
    plan->windows = windows;
    plan->bos_id = o && o->bos_id >= 0 ? o->bos_id : m->hp.bos_id;
    if (style == KV_PPL_LLAMACPP) {
        if (plan->bos_id < 0 || plan->bos_id >= m->hp.n_vocab)
            return kv_fail(err, KV_EINVAL, "llama.cpp-style perplexity needs a BOS token (the model has none)");
        plan->first = ctx / 2;
        plan->per_window = ctx - 1 - ctx / 2;
    } else {
        plan->first = 0;
        plan->per_window = ctx - 1;
    }
    return KV_OK;
}

uint64_t kv_eval_ids_hash(const int32_t *ids, int64_t n) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 over the little-endian int32 ids */
    for (int64_t i = 0; i < n; i++) {
        uint8_t b[4];
        kv_wr_u32(b, (uint32_t)ids[i]);
        for (int k = 0; k < 4; k++) h = (h ^ b[k]) * 0x100000001b3ULL;
    }
    return h;
}

/* ---------------------------------------------------------------------------------------------- */
/* per-row scoring (threaded over rows; each row's results depend only on that row)                 */
/* ---------------------------------------------------------------------------------------------- */

typedef struct row_job {
    const float *logits;     /* rows × V */
    int64_t V;
    const int32_t *targets;  /* rows */
    double *nll;
    uint8_t *rec_out;        /* rows records to fill, or NULL */
    const uint8_t *base;     /* rows base records, or NULL */
    size_t rec_bytes;
    double *kld, *dp;
    uint8_t *top1;
} row_job;

static void row_task(void *ctx, int64_t r, int thread) {
    const row_job *j = ctx;
    const float *l = j->logits + r * j->V;
    const int32_t target = j->targets[r];
    int64_t am = 0;
    for (int64_t i = 1; i < j->V; i++)
        if (l[i] > l[am]) am = i;
    const double mx = l[am];
    const double lse = mx + log(kv_sum_exp_shifted(l, j->V, l[am]));
    j->nll[r] = lse - (double)l[target];
    const int64_t K = kv_logprobs_topk(j->V);
    if (j->rec_out) {
        uint8_t *rec = j->rec_out + (size_t)r * j->rec_bytes;
        kv_wr_f32(rec, (float)((double)l[target] - lse));
        kv_wr_u32(rec + 4, (uint32_t)am);
        /* top K by insertion into a descending list (ties: lower id first) */
        int32_t top[KV_LOGPROBS_TOPK];
        int64_t nt = 0;
        for (int64_t i = 0; i < j->V; i++) {
            if (nt == K && !(l[i] > l[top[nt - 1]])) continue;
            int64_t p = nt < K ? nt++ : K - 1;
            while (p > 0 && l[i] > l[top[p - 1]]) { top[p] = top[p - 1]; p--; }
            top[p] = (int32_t)i;
        }
        for (int64_t k = 0; k < K; k++) {
            kv_wr_u32(rec + 8 + 8 * k, (uint32_t)top[k]);
            kv_wr_f32(rec + 12 + 8 * k, (float)((double)l[top[k]] - lse));
        }
        uint8_t *row = rec + 8 + 8 * K;
        for (int64_t i = 0; i < j->V; i++) kv_wr_u16(row + 2 * i, kv_fp32_to_fp16((float)((double)l[i] - lse)));
    }
    if (j->base) {
        const uint8_t *rec = j->base + (size_t)r * j->rec_bytes;
        const uint8_t *row = rec + 8 + 8 * K;
        double kl = 0.0;
        for (int64_t i = 0; i < j->V; i++) {
            const double lp = kv_fp16_to_fp32(kv_rd_u16(row + 2 * i));
            if (lp > -INFINITY) kl += exp(lp) * (lp - ((double)l[i] - lse));
        }
        /* the most probable tokens carry most of the sum: swap their fp16 terms for the exact ones */
        for (int64_t k = 0; k < K; k++) {
            const uint32_t id = kv_rd_u32(rec + 8 + 8 * k);
            if (id >= (uint64_t)j->V) continue;
            const double lq = (double)l[id] - lse;
            const double lp16 = kv_fp16_to_fp32(kv_rd_u16(row + 2 * (size_t)id));
            const double lp = kv_rd_f32(rec + 12 + 8 * k);
            if (lp16 > -INFINITY) kl -= exp(lp16) * (lp16 - lq);
            if (lp > -INFINITY) kl += exp(lp) * (lp - lq);
        }
        j->kld[r] = kl;
        j->dp[r] = exp(-j->nll[r]) - exp((double)kv_rd_f32(rec));
        j->top1[r] = (uint32_t)am == kv_rd_u32(rec + 4);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* the evaluation pass                                                                              */
/* ---------------------------------------------------------------------------------------------- */

typedef struct eval_sink {
    kv_logprobs *mem;        /* records to memory (base log-probs) */
    kv_outfile *file;        /* records streamed to a logits file */
    const kv_logprobs *base; /* compare against */
} eval_sink;

static kv_status eval_pass(const kv_model *m, const int32_t *ids, int64_t n_ids, const kv_eval_plan *plan,
                           const kv_eval_opts *o, kv_pool *pool, eval_sink *sink, kv_eval_result *res,
                           kv_error *err) {
    const int64_t V = m->hp.n_vocab, ctxn = plan->ctx, rows = plan->per_window;
    const int64_t n_scored = plan->windows * rows;
    const size_t rec_bytes = kv_logprobs_rec_bytes(V);
    kv_context *c = NULL;
    kv_status st = kv_context_create(m, plan->ctx, &c, err);
    if (st != KV_OK) return st;
    float *logits = kv_malloc((size_t)rows * (size_t)V * sizeof(float), err);
    int32_t *tok = kv_malloc((size_t)ctxn * sizeof(int32_t), err);
    double *nll = kv_malloc((size_t)n_scored * sizeof(double), err);
    uint8_t *recbuf = sink->file ? kv_malloc((size_t)rows * rec_bytes, err) : NULL;
    double *kld = sink->base ? kv_malloc((size_t)n_scored * sizeof(double), err) : NULL;
    double *dp = sink->base ? kv_malloc((size_t)n_scored * sizeof(double), err) : NULL;
    uint8_t *top1 = sink->base ? kv_malloc((size_t)n_scored, err) : NULL;
    if (!logits || !tok || !nll || (sink->file && !recbuf) || (sink->base && (!kld || !dp || !top1))) {
        st = KV_ENOMEM;
        goto done;
    }
    const double t0 = kv_now_seconds();
    for (int64_t w = 0; w < plan->windows; w++) {
        const int32_t *win = ids + w * ctxn;
        memcpy(tok, win, (size_t)ctxn * sizeof(int32_t));
        if (plan->style == KV_PPL_LLAMACPP) tok[0] = plan->bos_id;
        if ((st = kv_forward(c, tok, ctxn, 0, NULL, KV_FORWARD_NO_LOGITS, pool, err)) != KV_OK) goto done;
        /* logits only for the scored rows (llama.cpp style skips the head on the first half) */
        if ((st = kv_forward_head(c, c->x + (int64_t)plan->first * m->hp.n_embd, rows, logits, pool, err)) != KV_OK)
            goto done;
        const int64_t r0 = w * rows;
        row_job j = {.logits = logits, .V = V, .targets = win + plan->first + 1, .nll = nll + r0,
                     .rec_bytes = rec_bytes};
        if (sink->mem) j.rec_out = sink->mem->recs + (size_t)r0 * rec_bytes;
        else if (sink->file) j.rec_out = recbuf;
        if (sink->base) {
            j.base = sink->base->recs + (size_t)r0 * rec_bytes;
            j.kld = kld + r0;
            j.dp = dp + r0;
            j.top1 = top1 + r0;
        }
        for (int64_t r = 0; r < rows; r++)
            if (j.targets[r] < 0 || j.targets[r] >= V) {
                st = kv_fail(err, KV_ERANGE, "token id %d at position %lld is outside the vocabulary (%lld)",
                             (int)j.targets[r], (long long)(w * ctxn + plan->first + 1 + r), (long long)V);
                goto done;
            }
        kv_pool_run(pool, rows, row_task, &j);
        if (sink->file && (st = kv_outfile_write(sink->file, recbuf, (size_t)rows * rec_bytes, err)) != KV_OK) goto done;
        if (o && o->progress) o->progress(o->progress_user, w + 1, plan->windows);
    }
    const double secs = kv_now_seconds() - t0;
    /* reduce in token order (deterministic whatever the thread count) */
    double s = 0.0, s2 = 0.0;
    for (int64_t i = 0; i < n_scored; i++) {
        s += nll[i];
        s2 += nll[i] * nll[i];
    }
    memset(res, 0, sizeof *res);
    res->nll = s / (double)n_scored;
    res->ppl = exp(res->nll);
    const double var = s2 / (double)n_scored - res->nll * res->nll;
    res->ppl_stderr = n_scored > 1 && var > 0 ? res->ppl * sqrt(var / (double)(n_scored - 1)) : 0.0;
    res->tokens = n_scored;
    res->windows = plan->windows;
    res->ctx = plan->ctx;
    res->style = plan->style;
    res->seconds = secs;
    res->tokens_per_s = secs > 0 ? (double)(plan->windows * ctxn) / secs : 0.0;
    if (sink->base) {
        res->has_kld = 1;
        kv_eval_kld_finish(kld, dp, top1, n_scored, res->ppl, sink->base, &res->kld);
    }
done:
    free(logits);
    free(tok);
    free(nll);
    free(recbuf);
    free(kld);
    free(dp);
    free(top1);
    kv_context_free(c);
    (void)n_ids;
    return st;
}

/* A kv_logprobs describing (not yet holding) the records of this evaluation. */
static kv_status logprobs_init(const kv_model *m, const int32_t *ids, int64_t n_ids, const kv_eval_plan *plan,
                               kv_logprobs **out, kv_error *err) {
    kv_logprobs *lp = kv_calloc(1, sizeof *lp, err);
    if (!lp) return KV_ENOMEM;
    lp->n_vocab = m->hp.n_vocab;
    lp->plan = *plan;
    lp->n_ids = n_ids;
    lp->ids_hash = kv_eval_ids_hash(ids, n_ids);
    lp->n_scored = plan->windows * plan->per_window;
    lp->rec_bytes = kv_logprobs_rec_bytes(m->hp.n_vocab);
    lp->ids = kv_malloc((size_t)n_ids * sizeof(int32_t), err);
    if (!lp->ids) { free(lp); return KV_ENOMEM; }
    memcpy(lp->ids, ids, (size_t)n_ids * sizeof(int32_t));
    *out = lp;
    return KV_OK;
}

/* The base file must describe the same vocabulary, token stream and windows. */
static kv_status check_base(int32_t n_vocab, const int32_t *ids, int64_t n_ids, const kv_eval_plan *plan,
                            const kv_logprobs *b, kv_error *err) {
    if (n_vocab > 0 && b->n_vocab != n_vocab)
        return kv_fail(err, KV_EFORMAT, "the logits file has a vocabulary of %d, the model %d: it was made with "
                       "another model or tokenizer", (int)b->n_vocab, (int)n_vocab);
    if (b->n_ids != n_ids || b->ids_hash != kv_eval_ids_hash(ids, n_ids))
        return kv_fail(err, KV_EFORMAT, "the logits file was made from other tokens (%lld tokens, hash %016llx; "
                       "here %lld tokens, hash %016llx): another text or tokenizer", (long long)b->n_ids,
                       (unsigned long long)b->ids_hash, (long long)n_ids,
                       (unsigned long long)kv_eval_ids_hash(ids, n_ids));
    if (b->plan.ctx != plan->ctx || b->plan.style != plan->style || b->plan.windows != plan->windows)
        return kv_fail(err, KV_EFORMAT, "the logits file has ctx %d, style %s, %lld windows; this run ctx %d, style %s, "
                       "%lld windows", (int)b->plan.ctx, kv_ppl_style_name(b->plan.style), (long long)b->plan.windows,
                       (int)plan->ctx, kv_ppl_style_name(plan->style), (long long)plan->windows);
    return KV_OK;
}

kv_status kv_logprobs_check(const kv_logprobs *lp, const kv_model *m, const int32_t *ids, int64_t n_ids,
                            const kv_eval_opts *opts, kv_error *err) {
    kv_eval_plan plan;
    kv_status st;
    if (m) {
        if ((st = kv_eval_make_plan(m, n_ids, opts, &plan, err)) != KV_OK) return st;
        return check_base(m->hp.n_vocab, ids, n_ids, &plan, lp, err);
    }
    /* without the model: the tokens and the windows (what a run can check before its work) */
    memset(&plan, 0, sizeof plan);
    plan.ctx = opts && opts->ctx > 0 ? opts->ctx : 512;
    plan.style = opts ? opts->style : KV_PPL_HF;
    plan.windows = n_ids / plan.ctx;
    if (opts && opts->chunks > 0) plan.windows = KV_MIN(plan.windows, opts->chunks);
    return check_base(0, ids, n_ids, &plan, lp, err);
}

kv_status kv_eval_ppl(const kv_model *m, const int32_t *ids, int64_t n_ids, const kv_eval_opts *opts,
                      kv_pool *pool, kv_eval_result *res, kv_error *err) {
    if (!m || (!ids && n_ids > 0) || !res) return kv_fail(err, KV_EINVAL, "kv_eval_ppl: NULL argument");
    kv_eval_plan plan;
    kv_status st = kv_eval_make_plan(m, n_ids, opts, &plan, err);
    if (st != KV_OK) return st;
    eval_sink sink = {0};
    kv_logprobs *base = NULL, *desc = NULL;
    if (opts && opts->kld_base) {
        if ((st = kv_logprobs_load(opts->kld_base, &base, err)) != KV_OK) return st;
        if ((st = check_base(m->hp.n_vocab, ids, n_ids, &plan, base, err)) != KV_OK) {
            kv_error_context(err, opts->kld_base, -1, NULL);
            goto done;
        }
        sink.base = base;
    }
    if (opts && opts->save_logits) {
        if ((st = logprobs_init(m, ids, n_ids, &plan, &desc, err)) != KV_OK) goto done;
        if ((st = kv_outfile_open(opts->save_logits, &sink.file, err)) != KV_OK) goto done;
        uint8_t hdr[KV_LOGPROBS_HEADER_BYTES];
        kv_logprobs_header(desc, hdr);
        if ((st = kv_outfile_write(sink.file, hdr, sizeof hdr, err)) != KV_OK) goto done;
        for (int64_t i = 0; i < n_ids && st == KV_OK; i++) {
            uint8_t b[4];
            kv_wr_u32(b, (uint32_t)ids[i]);
            st = kv_outfile_write(sink.file, b, 4, err);
        }
        if (st != KV_OK) goto done;
    }
    if ((st = eval_pass(m, ids, n_ids, &plan, opts, pool, &sink, res, err)) != KV_OK) goto done;
    if (sink.file) {
        st = kv_outfile_commit(sink.file, err);
        sink.file = NULL;
    }
done:
    if (sink.file) kv_outfile_abort(sink.file);
    kv_logprobs_free(desc);
    kv_logprobs_free(base);
    return st;
}

kv_status kv_eval_base_logprobs(const kv_model *base, const int32_t *ids, int64_t n_ids, const kv_eval_opts *opts,
                                kv_pool *pool, kv_logprobs **out, kv_eval_result *res, kv_error *err) {
    if (!base || (!ids && n_ids > 0) || !out) return kv_fail(err, KV_EINVAL, "kv_eval_base_logprobs: NULL argument");
    *out = NULL;
    kv_eval_plan plan;
    kv_status st = kv_eval_make_plan(base, n_ids, opts, &plan, err);
    if (st != KV_OK) return st;
    kv_logprobs *lp = NULL;
    if ((st = logprobs_init(base, ids, n_ids, &plan, &lp, err)) != KV_OK) return st;
    lp->recs = kv_malloc((size_t)lp->n_scored * lp->rec_bytes, err);
    if (!lp->recs) { kv_logprobs_free(lp); return KV_ENOMEM; }
    eval_sink sink = {.mem = lp};
    kv_eval_result tmp;
    if ((st = eval_pass(base, ids, n_ids, &plan, opts, pool, &sink, res ? res : &tmp, err)) != KV_OK) {
        kv_logprobs_free(lp);
        return st;
    }
    *out = lp;
    return KV_OK;
}

kv_status kv_eval_kld(const kv_model *m, const kv_logprobs *base, kv_pool *pool, kv_eval_result *res, kv_error *err) {
    if (!m || !base || !res) return kv_fail(err, KV_EINVAL, "kv_eval_kld: NULL argument");
    kv_eval_opts o = {.ctx = base->plan.ctx, .chunks = base->plan.windows, .style = base->plan.style,
                      .bos_id = base->plan.bos_id};
    kv_eval_plan plan;
    kv_status st = kv_eval_make_plan(m, base->n_ids, &o, &plan, err);
    if (st != KV_OK) return st;
    if ((st = check_base(m->hp.n_vocab, base->ids, base->n_ids, &plan, base, err)) != KV_OK) return st;
    eval_sink sink = {.base = base};
    return eval_pass(m, base->ids, base->n_ids, &plan, &o, pool, &sink, res, err);
}
