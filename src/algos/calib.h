/* calib.h — the layer-by-layer calibration engine shared by the error-compensation methods (GPTQ, MR-GPTQ,
 * WaterSIC): GPTQ's sequential protocol (IST-DASLab/gptq llama.py llama_sequential). */
#ifndef KV_ALGOS_CALIB_H
#define KV_ALGOS_CALIB_H

#include "core/core.h"

/* Quantizes one job (its dst) given H = Σ x·xᵀ over ntok calibration tokens of its (rotated) input.
 * note: a line for the user ("" for none). */
typedef kv_status (*kv_calib_quant_fn)(void *user, kv_quant_job *job, const double *h, int64_t ntok,
                                       kv_pool *pool, char *note, size_t note_len, kv_error *err);

typedef struct kv_calib_opts {
    const char *save_dir;  /* write each layer's H here (NULL: don't) */
    const char *load_dir;  /* read H from here instead of running the model (NULL: don't) */
} kv_calib_opts;

typedef struct kv_calib_report {
    int64_t tokens;        /* calibration tokens per layer */
    int64_t windows;
    uint64_t peak_bytes;   /* activations + Hessians + scratch alive at once */
    uint64_t act_bytes, hess_bytes;
    double seconds;
} kv_calib_report;

/* For each decoder block in order: collect H for each distinct linear input (q/k/v share one, gate/up one,
 * o and down their own; a linear with an online rotation gets the rotated input's H), quantize the block's
 * jobs with fn, put the quantized weights into the calibration model, and recompute the block's outputs with
 * them for the next block. Jobs outside the decoder blocks (embedding, head) are rounded to nearest. */
kv_status kv_calib_run(kv_quant_method_ctx *c, const kv_calib_opts *o, kv_calib_quant_fn fn, void *user,
                       kv_calib_report *rep, kv_error *err);

/* A method's option values: c->values (parsed once by the pipeline) or, for a direct caller, c->options parsed
 * into *local (methods.c declares the options); NULL with err set when they do not parse. */
const kv_method_values *kv_method_ctx_values(const kv_quant_method_ctx *c, const kv_quant_method *m,
                                             kv_method_values *local, kv_error *err);

/* Parses "key=value" / "flag" items of a comma-separated method option string; returns the value of key
 * (NULL when absent; "" for a bare flag) copied into buf. */
const char *kv_method_option(const char *options, const char *key, char *buf, size_t n);

/* The input a weight stored rotated (W·Rᵀ, online rht of block rht_block) sees: R·x for each of the ntok rows
 * of x, in *buf (grown as needed, owned by the caller); x itself when rht_block <= 0; NULL when out of memory. */
const float *kv_calib_rotated_input(float **buf, int64_t *cap, const float *x, int64_t ntok, int64_t dim,
                                    int32_t rht_block, const float *signs);

#endif
