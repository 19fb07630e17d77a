/* kld.c — the base model's log-probs ("kvant logits file", docs/FORMAT.md) and the KL-divergence statistics
 * of llama-perplexity's KL mode (llama.cpp tools/perplexity/perplexity.cpp kl_divergence(): mean ± stderr,
 * percentiles with linear interpolation, "same top p", Δp of the correct token, PPL ratio). */
#include "eval/eval.h"
#include <math.h>

void kv_logprobs_free(kv_logprobs *lp) {
    if (!lp) return;
    if (lp->mapped) kv_unmap_file(&lp->map);
    else free(lp->recs);
    free(lp->ids);
    free(lp);
}

void kv_logprobs_header(const kv_logprobs *lp, uint8_t *h) {
    memset(h, 0, KV_LOGPROBS_HEADER_BYTES);
    memcpy(h, KV_LOGPROBS_MAGIC, 8);
    kv_wr_u32(h + 8, KV_LOGPROBS_VERSION);
    kv_wr_u32(h + 12, (uint32_t)lp->n_vocab);
    kv_wr_u64(h + 16, (uint64_t)lp->n_ids);
    kv_wr_u64(h + 24, lp->ids_hash);
    kv_wr_u32(h + 32, (uint32_t)lp->plan.ctx);
    kv_wr_u32(h + 36, (uint32_t)lp->plan.style);
    kv_wr_u64(h + 40, (uint64_t)lp->plan.windows);
    kv_wr_u64(h + 48, (uint64_t)lp->n_scored);
    kv_wr_u32(h + 56, (uint32_t)lp->rec_bytes);
    kv_wr_u32(h + 60, (uint32_t)lp->plan.bos_id);
}

kv_status kv_logprobs_save(const kv_logprobs *lp, const char *path, kv_error *err) {
    if (!lp || !path || !lp->recs) return kv_fail(err, KV_EINVAL, "kv_logprobs_save: nothing to save");
    kv_outfile *f = NULL;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st != KV_OK) return st;
    uint8_t hdr[KV_LOGPROBS_HEADER_BYTES];
    kv_logprobs_header(lp, hdr);
    st = kv_outfile_write(f, hdr, sizeof hdr, err);
    for (int64_t i = 0; i < lp->n_ids && st == KV_OK; i++) {
        uint8_t b[4];
        kv_wr_u32(b, (uint32_t)lp->ids[i]);
        st = kv_outfile_write(f, b, 4, err);
    }
    if (st == KV_OK) st = kv_outfile_write(f, lp->recs, (size_t)lp->n_scored * lp->rec_bytes, err);
    if (st != KV_OK) { kv_outfile_abort(f); return st; }
    return kv_outfile_commit(f, err);
}

static kv_status bad(kv_error *err, const char *path, int64_t off, const char *msg) {
    kv_fail(err, KV_EFORMAT, "not a valid kvant logits file: %s", msg);
    kv_error_context(err, path, off, NULL);
    return KV_EFORMAT;
}

static kv_status bad_record(kv_error *err, const char *path, const kv_logprobs *lp, int64_t r, const uint8_t *at,
                            const char *what, double v) {
    kv_fail(err, KV_EFORMAT, "not a valid kvant logits file: scored token %lld: %s is %g", (long long)r, what, v);
    kv_error_context(err, path, (int64_t)(at - lp->map.data), NULL);
    return KV_EFORMAT;
}

/* A log-prob is <= 0 or -inf (a token the model rules out; kvant writes l - logsumexp(l), never above 0); NaN
 * would turn every statistic into NaN and a positive value overflows exp() into an infinite KL-divergence. */
static int bad_logprob(float v) { return isnan(v) || v > 0; }

static kv_status check_records(const kv_logprobs *lp, const char *path, kv_error *err) {
    const int64_t V = lp->n_vocab, K = kv_logprobs_topk(V);
    for (int64_t r = 0; r < lp->n_scored; r++) {
        const uint8_t *rec = lp->recs + (size_t)r * lp->rec_bytes;
        float t = kv_rd_f32(rec);
        if (!isfinite(t) || t > 0) return bad_record(err, path, lp, r, rec, "the log-prob of the correct token", t);
        uint32_t am = kv_rd_u32(rec + 4);
        if (am >= (uint32_t)V) return bad_record(err, path, lp, r, rec + 4, "the argmax id", am);
        for (int64_t k = 0; k < K; k++) {
            uint32_t id = kv_rd_u32(rec + 8 + 8 * k);
            float v = kv_rd_f32(rec + 12 + 8 * k);
            if (id >= (uint32_t)V) return bad_record(err, path, lp, r, rec + 8 + 8 * k, "a top-k id", id);
            if (bad_logprob(v)) return bad_record(err, path, lp, r, rec + 12 + 8 * k, "a top-k log-prob", v);
        }
        const uint8_t *row = rec + 8 + 8 * K;
        for (int64_t i = 0; i < V; i++) {
            uint16_t hv = kv_rd_u16(row + 2 * i);
            /* fp16 exponent all ones: NaN or +-inf, only -inf (0xFC00) is a log-prob; sign clear: positive
             * (only +0 is one) */
            if (((hv & 0x7C00) == 0x7C00 && hv != 0xFC00) || (!(hv & 0x8000) && hv != 0))
                return bad_record(err, path, lp, r, row + 2 * i, "an fp16 log-prob", kv_fp16_to_fp32(hv));
        }
    }
    return KV_OK;
}

kv_status kv_logprobs_load(const char *path, kv_logprobs **out, kv_error *err) {
    if (!path || !out) return kv_fail(err, KV_EINVAL, "kv_logprobs_load: NULL argument");
    *out = NULL;
    kv_logprobs *lp = kv_calloc(1, sizeof *lp, err);
    if (!lp) return KV_ENOMEM;
    kv_status st = kv_map_file(path, &lp->map, err);
    if (st != KV_OK) { free(lp); return st; }
    lp->mapped = 1;
    const uint8_t *h = lp->map.data;
    const size_t size = lp->map.size;
    if (size < KV_LOGPROBS_HEADER_BYTES || memcmp(h, KV_LOGPROBS_MAGIC, 8)) { st = bad(err, path, 0, "bad magic"); goto fail; }
    if (kv_rd_u32(h + 8) != KV_LOGPROBS_VERSION) { st = bad(err, path, 8, "unsupported version"); goto fail; }
    lp->n_vocab = (int32_t)kv_rd_u32(h + 12);
    lp->n_ids = (int64_t)kv_rd_u64(h + 16);
    lp->ids_hash = kv_rd_u64(h + 24);
    lp->plan.ctx = (int32_t)kv_rd_u32(h + 32);
    lp->plan.style = (kv_ppl_style)kv_rd_u32(h + 36);
    lp->plan.windows = (int64_t)kv_rd_u64(h + 40);
    lp->n_scored = (int64_t)kv_rd_u64(h + 48);
    lp->rec_bytes = kv_rd_u32(h + 56);
    lp->plan.bos_id = (int32_t)kv_rd_u32(h + 60);
    if (lp->n_vocab <= 0 || lp->rec_bytes != kv_logprobs_rec_bytes(lp->n_vocab)) { st = bad(err, path, 12, "vocabulary/record size"); goto fail; }
    if (lp->plan.ctx < 2 || (lp->plan.style != KV_PPL_HF && lp->plan.style != KV_PPL_LLAMACPP)) {
        st = bad(err, path, 32, "ctx/style");
        goto fail;
    }
    lp->plan.first = lp->plan.style == KV_PPL_LLAMACPP ? lp->plan.ctx / 2 : 0;
    lp->plan.per_window = lp->plan.style == KV_PPL_LLAMACPP ? lp->plan.ctx - 1 - lp->plan.ctx / 2 : lp->plan.ctx - 1;
    uint64_t need, t;
    /* bounded by the file first: 4 * n_ids below must not wrap */
    if (lp->n_ids < 0 || (uint64_t)lp->n_ids > (size - KV_LOGPROBS_HEADER_BYTES) / 4) {
        st = bad(err, path, 16, "token count larger than the file");
        goto fail;
    }
    if (lp->plan.windows <= 0 || lp->n_scored < 0 ||
        !kv_mul_u64((uint64_t)lp->plan.windows, (uint64_t)lp->plan.ctx, &t) || t > (uint64_t)lp->n_ids ||
        (uint64_t)lp->n_scored != (uint64_t)lp->plan.windows * (uint64_t)lp->plan.per_window) {
        st = bad(err, path, 16, "token/window counts disagree");
        goto fail;
    }
    if (!kv_mul_u64((uint64_t)lp->n_scored, lp->rec_bytes, &need) || !kv_add_u64(need, 4ull * (uint64_t)lp->n_ids, &need) ||
        !kv_add_u64(need, KV_LOGPROBS_HEADER_BYTES, &need) || need != size) {
        st = bad(err, path, (int64_t)size, "file size does not match its header (truncated?)");
        goto fail;
    }
    lp->ids = kv_malloc((size_t)lp->n_ids * sizeof(int32_t) + 1, err);
    if (!lp->ids) { st = KV_ENOMEM; goto fail; }
    for (int64_t i = 0; i < lp->n_ids; i++) lp->ids[i] = (int32_t)kv_rd_u32(h + KV_LOGPROBS_HEADER_BYTES + 4 * i);
    if (kv_eval_ids_hash(lp->ids, lp->n_ids) != lp->ids_hash) {
        st = bad(err, path, KV_LOGPROBS_HEADER_BYTES, "token ids do not match their hash");
        goto fail;
    }
    lp->recs = (uint8_t *)(uintptr_t)(h + KV_LOGPROBS_HEADER_BYTES + 4 * lp->n_ids);
    if ((st = check_records(lp, path, err)) != KV_OK) goto fail;
    *out = lp;
    return KV_OK;
fail:
    kv_logprobs_free(lp);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* llama.cpp's percentile: linear interpolation between the two nearest ranks of the sorted values. */
static double percentile(const double *sorted, int64_t n, double fraction) {
    if (fraction <= 0) return sorted[0];
    if (fraction >= 1) return sorted[n - 1];
    double p = fraction * (double)(n - 1);
    const int64_t ip = (int64_t)p;
    p -= (double)ip;
    return (1 - p) * sorted[ip] + p * sorted[KV_MIN(ip + 1, n - 1)];
}

void kv_eval_kld_finish(const double *kld, const double *dp, const uint8_t *top1, int64_t n, double ppl,
                        const kv_logprobs *base, kv_kld_stats *o) {
    memset(o, 0, sizeof *o);
    o->n = n;
    if (n <= 0) return;
    double s = 0, s2 = 0, d = 0, d2 = 0, same = 0, lb = 0;
    for (int64_t i = 0; i < n; i++) {
        s += kld[i];
        s2 += kld[i] * kld[i];
        d += dp[i];
        d2 += dp[i] * dp[i];
        same += top1[i];
        lb -= kv_rd_f32(base->recs + (size_t)i * base->rec_bytes);
    }
    o->mean = s / (double)n;
    const double var = s2 / (double)n - o->mean * o->mean;
    o->mean_stderr = n > 1 && var > 0 ? sqrt(var / (double)(n - 1)) : 0.0;
    o->dp_mean = d / (double)n;
    o->dp_rms = sqrt(d2 / (double)n);
    o->top1_agree = 100.0 * same / (double)n;
    o->ppl_base = exp(lb / (double)n);
    o->ppl_ratio = ppl / o->ppl_base;
    double *sorted = malloc((size_t)n * sizeof(double));
    if (!sorted) { o->median = o->p90 = o->p99 = o->max = o->min = NAN; return; }
    memcpy(sorted, kld, (size_t)n * sizeof(double));
    qsort(sorted, (size_t)n, sizeof(double), cmp_double);
    o->median = percentile(sorted, n, 0.5);
    o->p90 = percentile(sorted, n, 0.9);
    o->p99 = percentile(sorted, n, 0.99);
    o->max = sorted[n - 1];
    o->min = sorted[0];
    free(sorted);
}
