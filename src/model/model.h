/* model.h — internals of the runnable model (src/model/model.c) and the forward pass (src/model/forward.c),
 * shared with src/eval. Layout follows llama2.c's run.c: weights struct, run state, then the operations. */
#ifndef KV_MODEL_MODEL_H
#define KV_MODEL_MODEL_H

#include "core/core.h"
#include "kernels/cpu/matmul.h"

/* The linears of one decoder block are indexed by kv_linear_id (KV_LINEAR_Q .. KV_LINEAR_DOWN). */
#define KV_N_BLOCK_LINEARS 7

typedef struct kv_layer {
    float *attn_norm;                 /* n_embd */
    float *ffn_norm;                  /* n_embd */
    kv_weight w[KV_N_BLOCK_LINEARS];
} kv_layer;

struct kv_model {
    kv_hparams hp;
    const kv_model_file *mf;
    kv_weight tok_embd;               /* n_vocab × n_embd, storage format (row lookup dequantizes) */
    kv_layer *layers;                 /* n_layer */
    float *output_norm;               /* n_embd */
    kv_weight head;                   /* n_vocab × n_embd */
    int head_tied;                    /* head shares tok_embd's bytes (until output.weight is set) */
    double *rope_inv_freq;            /* head_dim / 2 inverse frequencies, scaling applied */
    int bf16_dot;                     /* bf16 weights x bf16-rounded activations (kv_model_load_opts) */
    int act_q8;                       /* integer kernels on 8-bit activations (kv_model_load_opts) */
    int act_quant;                    /* simulated activation quantization on */
    int act_quant_head;
    kv_format act_fmt;
};

struct kv_context {
    const kv_model *m;
    int32_t n_ctx;
    float *kcache, *vcache;           /* [n_layer][n_ctx][n_head_kv * head_dim] */
    kv_forward_hooks hooks;
    /* scratch for up to cap tokens */
    int64_t cap;
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *tin;
    int nthreads_alloc;
    float *scores;                    /* per thread attention scratch (forward.c) */
    kv_matmul_ws ws;                  /* scratch of the weight matmuls (kernels/cpu/matmul.h) */
};

/* The halves of kv_forward_layer on given weights (forward.c; AWQ's block-output search substitutes its
 * candidates). kv_forward_attention: self-attention of `layer` on normed inputs xn [n × n_embd] at positions
 * pos0.. with w = q, k, v, o (K/V written to the layer's cache), out [n × n_embd] = o(attention), may alias xn;
 * afterwards c->att holds o's input [n × n_head·head_dim]. kv_forward_mlp: out = down(silu(gate(xn)) ⊙ up(xn))
 * with w = gate, up, down; afterwards c->gate holds down's input [n × n_ff]. Hooks and the model's activation
 * quantization apply as in kv_forward_layer. */
kv_status kv_forward_attention(kv_context *c, int layer, const kv_weight *const w[4], const float *xn, int64_t n,
                               int64_t pos0, float *out, kv_pool *pool, kv_error *err);
kv_status kv_forward_mlp(kv_context *c, int layer, const kv_weight *const w[3], const float *xn, int64_t n,
                         float *out, kv_pool *pool, kv_error *err);
/* LlamaRMSNorm of n rows of d: y = w ⊙ x / sqrt(mean(x²) + eps) (the forward pass's own). */
void kv_rmsnorm_rows(float *y, const float *x, const float *w, int64_t n, int64_t d, float eps);

/* Weight of (layer, which), writable. NULL when out of range. */
kv_weight *kv_model_weight_mut(kv_model *m, int layer, kv_linear_id which);

#endif
