/* quantize.h — internal interfaces of the quantization pipeline (src/algos/policy.c, rtn.c, imatrix.c,
 * quantize.c) and the model transforms (src/transforms/quarot.c, smooth.c, awq.c). The public entry point,
 * kv_quantize_model, is in include/kvant.h (quantize section). */
#ifndef KV_ALGOS_QUANTIZE_H
#define KV_ALGOS_QUANTIZE_H

#include "core/core.h"
#include "model/wmodel.h"
#include <regex.h>

/* ---------------------------------------------------------------------------------------------- */
/* policy.c: which tensor gets which format (llama.cpp src/llama-quant.cpp llama_tensor_get_type)   */
/* ---------------------------------------------------------------------------------------------- */

/* llama.cpp's file types (include/llama.h enum llama_ftype), written as general.file_type. */
enum {
    KV_FTYPE_ALL_F32 = 0, KV_FTYPE_F16 = 1, KV_FTYPE_Q4_0 = 2, KV_FTYPE_Q4_1 = 3, KV_FTYPE_Q8_0 = 7,
    KV_FTYPE_Q5_0 = 8, KV_FTYPE_Q5_1 = 9, KV_FTYPE_Q2_K = 10, KV_FTYPE_Q3_K_S = 11, KV_FTYPE_Q3_K_M = 12,
    KV_FTYPE_Q3_K_L = 13, KV_FTYPE_Q4_K_S = 14, KV_FTYPE_Q4_K_M = 15, KV_FTYPE_Q5_K_S = 16,
    KV_FTYPE_Q5_K_M = 17, KV_FTYPE_Q6_K = 18, KV_FTYPE_Q2_K_S = 21, KV_FTYPE_IQ4_NL = 25,
    KV_FTYPE_IQ4_XS = 30, KV_FTYPE_BF16 = 32, KV_FTYPE_GUESSED = 1024
};

#define KV_FORMAT_NAME_MAX 48

typedef struct kv_policy_override {
    char pattern[256];
    char format[KV_FORMAT_NAME_MAX];
    regex_t re;
} kv_policy_override;

typedef struct kv_policy {
    char format[KV_FORMAT_NAME_MAX];      /* --format, lower case */
    int ftype;                            /* llama.cpp ftype when format is a llama.cpp mix, else -1 */
    char base_format[KV_FORMAT_NAME_MAX]; /* the format most tensors get */
    int pure;                             /* 1: every quantizable tensor gets base_format (llama-quantize --pure) */
    int has_imatrix;
    char embd_format[KV_FORMAT_NAME_MAX]; /* "" = rules (llama-quantize --token-embedding-type) */
    char head_format[KV_FORMAT_NAME_MAX]; /* "" = rules (--output-tensor-type) */
    int n_overrides;
    kv_policy_override *overrides;
} kv_policy;

typedef struct kv_policy_choice {
    int quantize;                         /* 0: stored as-is (1-D tensors: f32) */
    char format[KV_FORMAT_NAME_MAX];
    int fallback;                         /* the block did not divide the row: a fallback format was used */
    char note[256];                       /* why (for the fallback message), "" otherwise */
} kv_policy_choice;

/* The mixes kvant knows (llama.cpp names): returns the ftype, or -1. default_type gets the base ggml type. */
int kv_policy_mix_ftype(const char *name, const char **default_type);
/* Space-separated list of the mix names, for error messages. */
const char *kv_policy_mix_names(void);
kv_status kv_policy_init(kv_policy *p, const char *format, kv_error *err);
/* spec "REGEX=FORMAT" (POSIX extended regex searched in the tensor name; the last matching override wins). */
kv_status kv_policy_add_override(kv_policy *p, const char *spec, kv_error *err);
void kv_policy_free(kv_policy *p);
/* Tensors the policy (and its overrides) may quantize: 2-D and more "...weight", not norms. */
int kv_policy_quantizable(const char *name, int n_dims);
/* The format of one tensor (canonical name, kvant shape order). hp gives n_layer/n_head/n_head_kv;
 * has_output: the model has its own output.weight (else token_embd doubles as the head). */
kv_status kv_policy_choose(const kv_policy *p, const kv_hparams *hp, int has_output, const char *name,
                           int n_dims, const int64_t *shape, kv_policy_choice *out, kv_error *err);

/* ---------------------------------------------------------------------------------------------- */
/* imatrix.c: importance matrices (llama.cpp tools/imatrix)                                         */
/* ---------------------------------------------------------------------------------------------- */

typedef struct kv_imatrix_entry {
    char name[160];     /* tensor name, e.g. blk.0.attn_q.weight */
    int32_t ncall;      /* chunks accumulated (llama.cpp's ncall) */
    int64_t nval;       /* number of input columns */
    float *values;      /* nval: mean of x² per input column */
    double *sums;       /* nval: running Σx² (collection only; NULL when loaded) */
    int64_t count;      /* tokens accumulated (collection only) */
} kv_imatrix_entry;

/* Activation statistics at the inputs of the linears for SmoothQuant (collected on the unquantized model, quantize_calib.c):
 * point 0 = attention input (q/k/v), 1 = attention output (o), 2 = MLP input (gate/up), 3 = down input. */
#define KV_ACT_POINTS 4
typedef struct kv_act_point {
    int64_t dim;
    float *absmax;            /* dim: max |x_j| */
    double *abssum;           /* dim: Σ |x_j| */
    int64_t count;            /* tokens seen */
} kv_act_point;
typedef struct kv_act_stats {
    int n_layer;
    kv_act_point *p;          /* n_layer × KV_ACT_POINTS */
} kv_act_stats;
void kv_act_stats_free(kv_act_stats *s);

/* ---------------------------------------------------------------------------------------------- */
/* transforms (src/transforms)                                                                      */
/* ---------------------------------------------------------------------------------------------- */

/* QuaRot (quarot.c): fold RMSNorm gains, rotate the residual stream, per-head Hadamard on v/o, online
 * Hadamard before ffn_down (recorded as rht on ffn_down). */
kv_status kv_transform_quarot(kv_wmodel *wm, uint64_t seed, kv_error *err);
/* QuaRot's step 1 alone: every RMSNorm gain folded into the linears it feeds (norms become 1; a tied head is
 * untied). The model computes the same function. */
kv_status kv_transform_fold_norms(kv_wmodel *wm, kv_error *err);
/* rht on every linear's input (block, or the largest supported block dividing the row), skipping weights
 * that already have an online rotation. The embedding is not touched. */
kv_status kv_transform_rht(kv_wmodel *wm, int32_t block, uint64_t seed, kv_error *err);
/* The same split for streaming: kv_transform_rht_plan gives every tensor rht would rotate its block and seed
 * (what the output's header records) and marks it rht_pending; kv_rht_rotate_pending rotates one such tensor
 * once its w has been read. Together they produce kv_transform_rht's bytes, one tensor at a time. */
void kv_transform_rht_plan(kv_wmodel *wm, int32_t block, uint64_t seed);
kv_status kv_rht_rotate_pending(kv_wtensor *t, kv_error *err);
/* SmoothQuant (smooth.c): s_j = max|X_j|^α / max|W_j|^(1−α) folded into attn_norm/ffn_norm. */
kv_status kv_transform_smoothquant(kv_wmodel *wm, const kv_act_stats *st, float alpha, kv_error *err);
/* AWQ (awq.c, llm-awq's run_awq): block by block on the calibration windows ids (n_ids tokens, windows of ctx
 * from position 0) through the unquantized model m (a runnable model of the same file: hyper-parameters,
 * embedding, RoPE; the block weights come from wm): per group of linears sharing an input, the grid search of
 * s = mean|x|^α on the output error of the attention (q/k/v), the MLP (gate/up) or the linear (o, down) with
 * the group quantized in the formats fmt_of(user, name) gives, folded into the previous op; then (clip = 1)
 * the clipping search per output row and input group, which changes the unquantized model (0 with
 * --transform-only). results (NULL, or n_layer × 4 entries: qkv, o, gate/up, down) get each group's α and
 * mean squared output errors; summary a line for the log. */
typedef const kv_format *(*kv_format_of_fn)(void *user, const char *tensor_name);
typedef struct kv_awq_result {
    int searched;             /* 0: the group was left alone (nothing quantized, online rotation, GQA o) */
    double alpha;             /* the chosen exponent */
    double loss, loss_alpha0; /* mean squared output error with the chosen α, and with α = 0 (plain RTN) */
} kv_awq_result;
kv_status kv_transform_awq(kv_wmodel *wm, const kv_model *m, const int32_t *ids, int64_t n_ids, int32_t ctx,
                           kv_format_of_fn fmt_of, void *user, int clip, kv_pool *pool, kv_awq_result *results,
                           char *summary, size_t summary_len, kv_error *err);
/* AWQ's clipping search (llm-awq auto_clip_layer) on one weight w [rows × cols], in place: per row and input
 * group (kv_awq_clip_group), the ratio r = 1 − i/20 (i = 0..9) of the group's max |w| whose clipped weights,
 * quantized with fmt, give the least mean over the nsamp tokens x [nsamp × cols] of (x_g·(Q(w) − w)_g)².
 * ratios (NULL or rows × groups) gets the chosen r. */
kv_status kv_awq_clip(float *w, int64_t rows, int64_t cols, const kv_format *fmt, const float *x, int64_t nsamp,
                      kv_pool *pool, float *ratios, kv_error *err);
int64_t kv_awq_clip_group(const kv_format *fmt, int64_t cols);

#endif
