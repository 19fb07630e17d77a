/* wmodel.h — the working model: fp32 copies of a model file's tensors that the transforms edit and the
 * quantization pipeline reads (src/model/wmodel.c). Below transforms/ and algos/: it knows models, not
 * their callers. */
#ifndef KV_MODEL_WMODEL_H
#define KV_MODEL_WMODEL_H

#include "core/core.h"


typedef struct kv_wtensor {
    char name[160];
    int n_dims;
    int64_t shape[4];         /* outermost first */
    const kv_tensor *src;     /* NULL for a tensor the pipeline created (an untied output.weight) */
    float *w;                 /* fp32 copy, nelements floats */
    int modified;             /* a transform changed w */
    int32_t rht_block;        /* online input rotation (0: none) */
    uint64_t rht_seed;
    int rht_pending;          /* streaming: w is rotated by rht_block/rht_seed each time it is read */
} kv_wtensor;

typedef struct kv_wmodel {
    kv_hparams hp;
    kv_wtensor *t;
    int64_t n, cap;
    int untied;               /* output.weight was created from token_embd.weight */
} kv_wmodel;

kv_wtensor *kv_wmodel_find(kv_wmodel *wm, const char *name);
/* "blk.%d.<suffix>" of layer l */
kv_wtensor *kv_wmodel_layer(kv_wmodel *wm, int l, const char *suffix);
/* Gives tied models their own output.weight (a copy of token_embd) so that the head can change alone. */
kv_status kv_wmodel_untie(kv_wmodel *wm, kv_error *err);
void kv_wmodel_free(kv_wmodel *wm);
/* Every named tensor of mf dequantized to fp32 (entropy-coded ones decoded), with a previous kvant run's
 * online rotations. */
kv_status kv_wmodel_load(const kv_model_file *mf, kv_wmodel *wm, kv_error *err);
/* The same with names, shapes and rotations only (every w NULL): streaming reads each tensor when it is
 * quantized, with kv_wtensor_read. */
kv_status kv_wmodel_load_lazy(const kv_model_file *mf, kv_wmodel *wm, kv_error *err);
/* t's source values as fp32 into t->w (malloc'd; the caller frees it); the file pages they came from are
 * given back (kv_model_drop_pages). */
kv_status kv_wtensor_read(const kv_model_file *mf, kv_wtensor *t, kv_error *err);
/* A runnable model of mf whose linears, norms and q/k/v biases are wm's (f32, with their rotations). */
kv_status kv_wmodel_to_model(const kv_model_file *mf, const kv_wmodel *wm, kv_model **out, kv_error *err);

static inline int64_t kv_wtensor_nelem(const kv_wtensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
    return n;
}

static inline int64_t kv_wtensor_row_len(const kv_wtensor *t) { return t->n_dims ? t->shape[t->n_dims - 1] : 1; }

#endif
