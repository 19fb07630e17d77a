/*
 * kvant.h — the public interface of libkvant, a C11 toolkit for post-training quantization of LLMs.
 *
 * This is the only public header. Internal modules keep their private helpers in src/<module>/<module>.h.
 * Conventions (docs/STYLE in ../shared/docs/STYLE.md):
 *   - every fallible call returns kv_status (0 = KV_OK) and fills a caller-owned kv_error (may be NULL);
 *   - whoever allocates frees: kv_x_open / kv_x_close pairs;
 *   - no global mutable state; tables are const;
 *   - tensor shapes are in row-major, outermost-first order (PyTorch order): shape[0] = rows of a matrix.
 *     GGUF stores the reverse (ne0 innermost); the GGUF module converts at the boundary.
 *
 * Sections are owned by modules; keep each module's declarations inside its section.
 */
#ifndef KVANT_H
#define KVANT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KV_VERSION_STRING "0.1.0"

/* ============================================================================================== */
/* core: errors                                                                                    */
/* ============================================================================================== */

typedef enum kv_status {
    KV_OK = 0,
    KV_EIO,          /* open/read/write/rename failed */
    KV_EFORMAT,      /* malformed input bytes */
    KV_EINVAL,       /* bad argument or option */
    KV_EUNSUPPORTED, /* valid input that kvant does not handle (yet) */
    KV_ENOMEM,
    KV_ERANGE,       /* size or index out of range, overflow */
    KV_ENOTFOUND     /* missing file, tensor, key */
} kv_status;

typedef struct kv_error {
    kv_status status;
    char message[512];
    char file[512];     /* "" when not about a file */
    int64_t offset;     /* byte offset in file, -1 when none */
    char tensor[160];   /* "" when not about a tensor */
} kv_error;

/* Set status + printf-style message; returns st so callers can `return kv_fail(err, ...)`.
 * err may be NULL. Context fields already present are kept. */
kv_status kv_fail(kv_error *err, kv_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Attach context unless already set (inner layers know more). Any of file/tensor may be NULL, offset -1. */
void kv_error_context(kv_error *err, const char *file, int64_t offset, const char *tensor);
void kv_error_clear(kv_error *err);
/* One line: "FILE: offset N: tensor 'T': MESSAGE" (parts omitted when empty). Returns buf. */
const char *kv_error_format(const kv_error *err, char *buf, size_t n);
const char *kv_status_name(kv_status st);

/* ============================================================================================== */
/* core: scalar conversions (round-to-nearest-even, NaN/Inf preserved)                             */
/* ============================================================================================== */

uint16_t kv_fp32_to_fp16(float f);
float kv_fp16_to_fp32(uint16_t h);
uint16_t kv_fp32_to_bf16(float f);
float kv_bf16_to_fp32(uint16_t h);
void kv_fp16_to_fp32_row(const uint16_t *src, float *dst, size_t n);
void kv_fp32_to_fp16_row(const float *src, uint16_t *dst, size_t n);
void kv_bf16_to_fp32_row(const uint16_t *src, float *dst, size_t n);
void kv_fp32_to_bf16_row(const float *src, uint16_t *dst, size_t n);

/* ============================================================================================== */
/* core: tensor types (ggml ids for storage types; kvant-only types from KV_TYPE_KVANT_BASE on)     */
/* ============================================================================================== */

typedef enum kv_type {
    KV_TYPE_F32 = 0, KV_TYPE_F16 = 1, KV_TYPE_Q4_0 = 2, KV_TYPE_Q4_1 = 3,
    KV_TYPE_Q5_0 = 6, KV_TYPE_Q5_1 = 7, KV_TYPE_Q8_0 = 8, KV_TYPE_Q8_1 = 9,
    KV_TYPE_Q2_K = 10, KV_TYPE_Q3_K = 11, KV_TYPE_Q4_K = 12, KV_TYPE_Q5_K = 13, KV_TYPE_Q6_K = 14,
    KV_TYPE_Q8_K = 15, KV_TYPE_IQ2_XXS = 16, KV_TYPE_IQ2_XS = 17, KV_TYPE_IQ3_XXS = 18,
    KV_TYPE_IQ1_S = 19, KV_TYPE_IQ4_NL = 20, KV_TYPE_IQ3_S = 21, KV_TYPE_IQ2_S = 22, KV_TYPE_IQ4_XS = 23,
    KV_TYPE_I8 = 24, KV_TYPE_I16 = 25, KV_TYPE_I32 = 26, KV_TYPE_I64 = 27, KV_TYPE_F64 = 28,
    KV_TYPE_IQ1_M = 29, KV_TYPE_BF16 = 30, KV_TYPE_TQ1_0 = 34, KV_TYPE_TQ2_0 = 35, KV_TYPE_MXFP4 = 39,
    KV_TYPE_NVFP4 = 40,
    KV_TYPE_GGML_COUNT = 41,
    /* kvant-only storage types (docs/FORMAT.md); ids are stable once released */
    KV_TYPE_KVANT_BASE = 1024,
    KV_TYPE_KVANT_MAX = 2047
} kv_type;

typedef struct kv_type_info {
    const char *name;     /* ggml's lower-case name ("q4_k", "bf16"), or kvant's format name */
    int32_t block;        /* elements per block (1 for plain types) */
    int32_t block_bytes;  /* bytes per block */
} kv_type_info;

/* NULL for an unknown id (including removed ggml ids 4, 5, 31-33, 36-38). Covers every ggml id so that
 * files with types kvant cannot compute still inspect; kvant-only ids are described by the formats table. */
const kv_type_info *kv_type_get(uint32_t type);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block or the type is unknown. */
size_t kv_type_row_bytes(uint32_t type, int64_t n);

/* ============================================================================================== */
/* core: threads                                                                                   */
/* ============================================================================================== */

typedef struct kv_pool kv_pool;
/* nthreads <= 0: number of online cores. */
kv_pool *kv_pool_create(int nthreads);
void kv_pool_destroy(kv_pool *pool);
int kv_pool_threads(const kv_pool *pool);
/* Runs fn(ctx, task, thread) for task in [0, ntasks) on the pool's threads and waits. The caller's thread
 * takes part. Results must not depend on which thread ran a task (deterministic whatever the count).
 * pool may be NULL: runs serially. */
typedef void (*kv_task_fn)(void *ctx, int64_t task, int thread);
void kv_pool_run(kv_pool *pool, int64_t ntasks, kv_task_fn fn, void *ctx);

/* ============================================================================================== */
/* core: files                                                                                     */
/* ============================================================================================== */

typedef struct kv_mapped {
    const uint8_t *data;
    size_t size;
    char path[512];
} kv_mapped;
kv_status kv_map_file(const char *path, kv_mapped *out, kv_error *err);
void kv_unmap_file(kv_mapped *m);

/* Atomic output file: data goes to "PATH.tmp.XXXXXX", fsync, rename on commit; abort (or a failed write)
 * unlinks the temp file so no partial output is ever left under PATH. */
typedef struct kv_outfile kv_outfile;
kv_status kv_outfile_open(const char *path, kv_outfile **out, kv_error *err);
kv_status kv_outfile_write(kv_outfile *f, const void *data, size_t n, kv_error *err);
kv_status kv_outfile_pad(kv_outfile *f, size_t alignment, kv_error *err); /* zero bytes up to alignment */
uint64_t kv_outfile_tell(const kv_outfile *f);
kv_status kv_outfile_commit(kv_outfile *f, kv_error *err); /* frees f */
void kv_outfile_abort(kv_outfile *f);                       /* frees f */

/* ============================================================================================== */
/* core: JSON writer (reports: every report has --json)                                            */
/* ============================================================================================== */

typedef struct kv_jw {
    FILE *out;
    int depth;
    int need_comma[64];
    int pretty;
} kv_jw;
void kv_jw_init(kv_jw *w, FILE *out, int pretty);
void kv_jw_obj_begin(kv_jw *w);
void kv_jw_obj_end(kv_jw *w);
void kv_jw_arr_begin(kv_jw *w);
void kv_jw_arr_end(kv_jw *w);
void kv_jw_key(kv_jw *w, const char *key);
void kv_jw_str(kv_jw *w, const char *s);
void kv_jw_int(kv_jw *w, int64_t v);
void kv_jw_num(kv_jw *w, double v); /* non-finite numbers become null */
void kv_jw_bool(kv_jw *w, int v);
void kv_jw_null(kv_jw *w);
void kv_jw_end(kv_jw *w); /* trailing newline */

/* ============================================================================================== */
/* core: progress (a line with ETA on a TTY, nothing otherwise or when quiet)                       */
/* ============================================================================================== */

typedef struct kv_progress {
    const char *label;
    int64_t total;
    int64_t done;
    double t_start;
    double t_last;
    int enabled;
} kv_progress;
void kv_progress_begin(kv_progress *p, const char *label, int64_t total, int quiet);
void kv_progress_update(kv_progress *p, int64_t done);
void kv_progress_end(kv_progress *p);
double kv_now_seconds(void); /* monotonic */

/* ============================================================================================== */
/* io: model files (src/io) — HF directories, safetensors, GGUF v3, llama2.c                        */
/* ============================================================================================== */
/* KVANT-SECTION io BEGIN */
typedef enum kv_file_format {
    KV_FILE_UNKNOWN = 0,
    KV_FILE_HF,          /* directory: config.json + model.safetensors or sharded index */
    KV_FILE_SAFETENSORS, /* a lone .safetensors file (tensors only, no hparams) */
    KV_FILE_GGUF,        /* GGUF v3 */
    KV_FILE_LLAMA2C      /* llama2.c checkpoint (7 x int32 header + fp32 weights) */
} kv_file_format;

typedef enum kv_rope_scaling_type {
    KV_ROPE_SCALING_NONE = 0,
    KV_ROPE_SCALING_LINEAR,
    KV_ROPE_SCALING_LLAMA3
} kv_rope_scaling_type;

/* Llama-family hyper-parameters (Llama 2/3, Mistral, Qwen2). */
typedef struct kv_hparams {
    char arch[32];          /* "llama", "mistral", "qwen2" */
    int32_t n_vocab;
    int32_t n_embd;         /* hidden_size */
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;           /* intermediate_size */
    int32_t n_ctx_train;    /* max_position_embeddings */
    float rope_theta;
    float norm_eps;
    kv_rope_scaling_type rope_scaling;
    float rope_factor;
    float rope_low_freq_factor;
    float rope_high_freq_factor;
    int32_t rope_orig_ctx;  /* original_max_position_embeddings */
    int tie_embeddings;     /* output head shares token_embd */
    int attn_bias;          /* q/k/v biases (Qwen2) */
    int32_t bos_id;         /* -1 when unknown */
    int32_t eos_id;
} kv_hparams;

/* One tensor of an opened model file. Names are kvant's canonical (GGUF-style) names:
 *   token_embd.weight, output_norm.weight, output.weight,
 *   blk.N.attn_norm.weight, blk.N.attn_q.weight, blk.N.attn_k.weight, blk.N.attn_v.weight,
 *   blk.N.attn_q.bias, blk.N.attn_k.bias, blk.N.attn_v.bias, blk.N.attn_output.weight,
 *   blk.N.ffn_norm.weight, blk.N.ffn_gate.weight, blk.N.ffn_up.weight, blk.N.ffn_down.weight.
 * Row layout is Hugging Face's (rotate-half RoPE): a GGUF written by llama.cpp stores attn_q/attn_k rows
 * permuted for its interleaved RoPE; the reader undoes that (data then points at memory the model file
 * owns) and the GGUF writer redoes it. */
typedef struct kv_tensor {
    char name[160];         /* canonical name ("" for tensors kvant does not map: see src_name) */
    char src_name[160];     /* the name in the source file */
    int n_dims;
    int64_t shape[4];       /* outermost first: a linear layer is [out_features, in_features] */
    uint32_t type;          /* kv_type */
    const void *data;       /* bytes of the tensor in kvant layout (mapped or owned by the model file) */
    uint64_t offset;        /* absolute byte offset in the source file */
    uint64_t nbytes;
    int file_index;         /* which file of the model (shard index) */
} kv_tensor;

int64_t kv_tensor_nelements(const kv_tensor *t);

typedef struct kv_model_file kv_model_file;

/* Opens a model: a directory (Hugging Face layout), a .gguf file, a .safetensors file, or a llama2.c
 * checkpoint. Everything is memory-mapped; nothing is converted that is not asked for (except the q/k
 * un-permutation of GGUF files). */
kv_status kv_model_open(const char *path, kv_model_file **out, kv_error *err);
void kv_model_close(kv_model_file *mf);
kv_file_format kv_model_format(const kv_model_file *mf);
const char *kv_file_format_name(kv_file_format f);
const char *kv_model_path(const kv_model_file *mf);
const kv_hparams *kv_model_hparams(const kv_model_file *mf);
int64_t kv_model_n_tensors(const kv_model_file *mf);
const kv_tensor *kv_model_tensor(const kv_model_file *mf, int64_t i);
const kv_tensor *kv_model_find(const kv_model_file *mf, const char *canonical_name);

/* Tokenizer source of a model. */
typedef enum kv_tokenizer_source {
    KV_TOKSRC_NONE = 0,
    KV_TOKSRC_SPM_MODEL,     /* path of a SentencePiece tokenizer.model */
    KV_TOKSRC_HF_JSON,       /* path of a tokenizer.json */
    KV_TOKSRC_GGUF           /* the GGUF file itself (tokenizer.ggml.* keys) */
} kv_tokenizer_source;
kv_tokenizer_source kv_model_tokenizer(const kv_model_file *mf, const char **path);
/* KVANT-SECTION io END */

/* ============================================================================================== */
/* formats: number formats (src/formats)                                                           */
/* ============================================================================================== */
/* KVANT-SECTION formats BEGIN */
/* A number format: one uniform interface for every element, block and codebook format (issue: formats).
 * A format is a value: kv_format_get parses a name ("q4_k", "int4_g128_asym", "higgs_p2_b4") into one.
 * Every row is self-contained: row bytes = row_header_bytes + (n / block) * block_bytes, so any row can be
 * dequantized alone (per-tensor scales are replicated in each row's header). */
typedef struct kv_format kv_format;
typedef kv_status (*kv_quantize_fn)(const kv_format *f, const float *src, void *dst, int64_t nrows,
                                    int64_t n, const float *importance, kv_error *err);
typedef void (*kv_dequantize_fn)(const kv_format *f, const void *src, float *dst, int64_t n);
typedef double (*kv_dot_fn)(const kv_format *f, const void *row, const float *x, int64_t n);
struct kv_format {
    char name[48];            /* canonical name */
    uint32_t type;            /* ggml id for ggml types (and f32/f16/bf16), else >= KV_TYPE_KVANT_BASE */
    int32_t block;            /* elements per block; a row length must be a multiple of it */
    int32_t block_bytes;      /* bytes per block */
    int32_t row_header_bytes; /* bytes at the start of each row (0 for most formats) */
    double bits_per_weight;   /* block_bytes * 8 / block (the row header is extra: kv_format_bpw) */
    int32_t params[8];        /* family-specific parameters */
    kv_quantize_fn quantize;  /* nrows rows of n floats -> packed; importance: n weights or NULL */
    kv_dequantize_fn dequantize; /* one packed row -> n floats */
    kv_dot_fn dot;            /* reference scalar dot product of one packed row with x */
};
kv_status kv_format_get(const char *name, kv_format *out, kv_error *err);
kv_status kv_format_from_type(uint32_t type, kv_format *out, kv_error *err);
size_t kv_format_row_bytes(const kv_format *f, int64_t n); /* 0 if n is not a multiple of the block */
double kv_format_bpw(const kv_format *f, int64_t n);         /* exact bits/weight for rows of n */
/* The canonical list of format names for `kvant formats` (parametric families: representative members). */
int kv_format_list_count(void);
const char *kv_format_list_name(int i);
/* KVANT-SECTION formats END */

/* ============================================================================================== */
/* model: tokenizers (src/model/tokenizer*)                                                        */
/* ============================================================================================== */
/* KVANT-SECTION tokenizer BEGIN */
/* KVANT-SECTION tokenizer END */

/* ============================================================================================== */
/* model: forward pass (src/model) and kernels (src/kernels)                                       */
/* ============================================================================================== */
/* KVANT-SECTION model BEGIN */
/* KVANT-SECTION model END */

/* ============================================================================================== */
/* eval: perplexity, KL-divergence (src/eval)                                                      */
/* ============================================================================================== */
/* KVANT-SECTION eval BEGIN */
/* KVANT-SECTION eval END */

/* ============================================================================================== */
/* transforms and quantization pipeline (src/transforms, src/algos)                                */
/* ============================================================================================== */
/* KVANT-SECTION quantize BEGIN */
/* KVANT-SECTION quantize END */

/* ============================================================================================== */
/* algos: error compensation (GPTQ, MR-GPTQ, WaterSIC, LLM.int8) (src/algos)                        */
/* ============================================================================================== */
/* KVANT-SECTION algos BEGIN */
/* KVANT-SECTION algos END */

/* ============================================================================================== */
/* algos: bit allocation (src/algos/allocation)                                                    */
/* ============================================================================================== */
/* KVANT-SECTION alloc BEGIN */
/* KVANT-SECTION alloc END */

#ifdef __cplusplus
}
#endif
#endif /* KVANT_H */
