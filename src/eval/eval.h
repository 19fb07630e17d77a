/* eval.h — internals of src/eval: the window plan shared by perplexity and KL-divergence, and the log-probs
 * records of the "kvant logits file" (docs/FORMAT.md). */
#ifndef KV_EVAL_EVAL_H
#define KV_EVAL_EVAL_H

#include "core/core.h"

#define KV_LOGPROBS_MAGIC "KVLOGP01"
#define KV_LOGPROBS_VERSION 1u
#define KV_LOGPROBS_HEADER_BYTES 64
#define KV_LOGPROBS_TOPK 32   /* most probable tokens stored exactly (fp32) besides the fp16 row */

/* Record of one scored token: f32 log-prob of the correct token, i32 argmax, K × {u32 id, f32 log-prob} of
 * the K = min(32, V) most probable tokens (descending), then V fp16 log-probs. */
static inline int64_t kv_logprobs_topk(int64_t V) { return V < KV_LOGPROBS_TOPK ? V : KV_LOGPROBS_TOPK; }
static inline size_t kv_logprobs_rec_bytes(int64_t V) { return 8 + 8 * (size_t)kv_logprobs_topk(V) + 2 * (size_t)V; }

/* Which tokens are run and scored. */
typedef struct kv_eval_plan {
    int32_t ctx;
    kv_ppl_style style;
    int32_t bos_id;       /* llamacpp: replaces the first token of each window */
    int64_t windows;
    int32_t first;        /* first logits row scored in a window (predicts token first+1) */
    int32_t per_window;   /* rows scored per window */
} kv_eval_plan;

/* One scored token of the base model: log-prob of the correct token (exact), argmax, fp16 log-probs. */
typedef struct kv_logprobs_rec_head {
    float lp_target;
    int32_t argmax;
} kv_logprobs_rec_head;
KV_STATIC_ASSERT(sizeof(kv_logprobs_rec_head) == 8, "record head is 8 bytes");

struct kv_logprobs {
    int32_t n_vocab;
    kv_eval_plan plan;
    int64_t n_ids;
    int32_t *ids;          /* owned copy */
    uint64_t ids_hash;
    int64_t n_scored;
    size_t rec_bytes;      /* kv_logprobs_rec_bytes(n_vocab) */
    uint8_t *recs;         /* n_scored records (owned, or into map) */
    kv_mapped map;         /* when loaded from a file */
    int mapped;
};

kv_status kv_eval_make_plan(const kv_model *m, int64_t n_ids, const kv_eval_opts *o, kv_eval_plan *plan,
                            kv_error *err);
uint64_t kv_eval_ids_hash(const int32_t *ids, int64_t n);
/* KLD statistics from per-token values (kld, Δp, same-top flags) and this model's PPL. */
void kv_eval_kld_finish(const double *kld, const double *dp, const uint8_t *top1, int64_t n, double ppl,
                        const kv_logprobs *base, kv_kld_stats *out);
/* Serialized header of a logits file (KV_LOGPROBS_HEADER_BYTES bytes). */
void kv_logprobs_header(const kv_logprobs *lp, uint8_t *out);

#endif
