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

/* Atomic output file: data goes to "PATH.tmp.<pid>", fsync, rename on commit; abort (or a failed write)
 * unlinks the temp file so no partial output is ever left under PATH. Opening removes stale temps of PATH
 * (kv_outfile_clean_stale) and refuses a PATH that exists as a directory, device or FIFO. */
typedef struct kv_outfile kv_outfile;
kv_status kv_outfile_open(const char *path, kv_outfile **out, kv_error *err);
/* Before any work: would kv_outfile_open(path) succeed? Creates and removes the temp file (so a read-only or
 * missing directory is reported now, not after the work). */
kv_status kv_outfile_check(const char *path, kv_error *err);
/* The temp name kv_outfile_open uses for path in this process (for a signal handler to unlink). */
void kv_outfile_temp_name(const char *path, char *dst, size_t n);
/* Removes temps of path left by kvant processes that no longer run ("PATH.tmp.<pid>" with a dead pid, and
 * older binaries' "PATH.tmp.XXXXXX" untouched for 10 minutes); returns how many. */
int kv_outfile_clean_stale(const char *path);
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
/* core: progress (a line with ETA on a TTY, a plain line every 10 s otherwise, nothing when quiet)  */
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
 * permuted for its interleaved RoPE (a llama2.c checkpoint's wq/wk rows are in the same order). The reader
 * does not copy them: such a matrix keeps pointing at the file's
 * bytes with qk_heads > 0, and every reader of rows (kv_tensor_row_bytes, kv_tensor_copy_bytes,
 * kv_tensor_row_f32, the model loader) un-permutes as it reads; the GGUF writer redoes the permutation. Read a
 * tensor's rows through those functions, not through data + row * row_bytes. (1-D q/k biases are un-permuted
 * into memory the model file owns when it is opened: qk_heads is 0 for them.) */
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
    int32_t qk_heads;       /* > 0: data's rows are in llama.cpp's q/k order for this many heads (see above) */
} kv_tensor;

int64_t kv_tensor_nelements(const kv_tensor *t);
/* The bytes of row `row` (kvant's row order) of a tensor with fixed-size rows; NULL for an entropy-coded tensor
 * or a row out of range. A row is the innermost dimension, counted over all outer dimensions. */
const void *kv_tensor_row_bytes(const kv_tensor *t, int64_t row);
/* All t->nbytes bytes of the tensor in kvant's row order (un-permuted q/k rows) into dst. */
kv_status kv_tensor_copy_bytes(const kv_tensor *t, void *dst, kv_error *err);

typedef struct kv_model_file kv_model_file;

/* Opens a model: a directory (Hugging Face layout), a .gguf file, a .safetensors file, or a llama2.c
 * checkpoint. Everything is memory-mapped; nothing is converted that is not asked for (GGUF q/k rows are
 * un-permuted as they are read: see kv_tensor). */
kv_status kv_model_open(const char *path, kv_model_file **out, kv_error *err);
void kv_model_close(kv_model_file *mf);
kv_file_format kv_model_format(const kv_model_file *mf);
const char *kv_file_format_name(kv_file_format f);
const char *kv_model_path(const kv_model_file *mf);
const kv_hparams *kv_model_hparams(const kv_model_file *mf);
int64_t kv_model_n_tensors(const kv_model_file *mf);
const kv_tensor *kv_model_tensor(const kv_model_file *mf, int64_t i);
const kv_tensor *kv_model_find(const kv_model_file *mf, const char *canonical_name);

/* Gives the file pages behind a mapped tensor's bytes back to the kernel (madvise DONTNEED) so that streaming
 * through a model does not grow the resident set; the bytes stay readable (they are read again from the file).
 * A no-op for bytes the model file owns. */
void kv_model_drop_pages(const kv_model_file *mf, const kv_tensor *t);

/* Tokenizer source of a model. */
typedef enum kv_tokenizer_source {
    KV_TOKSRC_NONE = 0,
    KV_TOKSRC_SPM_MODEL,     /* path of a SentencePiece tokenizer.model */
    KV_TOKSRC_HF_JSON,       /* path of a tokenizer.json */
    KV_TOKSRC_GGUF           /* the GGUF file itself (tokenizer.ggml.* keys) */
} kv_tokenizer_source;
kv_tokenizer_source kv_model_tokenizer(const kv_model_file *mf, const char **path);

/* Totals over all tensors: elements and stored bytes. */
int64_t kv_model_n_params(const kv_model_file *mf);
uint64_t kv_model_n_bytes(const kv_model_file *mf);
/* String metadata of a GGUF model ("general.name", "kvant.tensor.<name>.format" ...); NULL when absent, not a
 * string, or the model is not a GGUF. The pointer lives as long as the model file. */
const char *kv_model_meta_string(const kv_model_file *mf, const char *key);

/* A tensor's rows as fp32. A row is the innermost dimension (shape[n_dims-1] elements); rows are counted over
 * all outer dimensions. F32, F16 and BF16 are converted directly, other types through the formats module
 * (kv_format_from_type; KV_EUNSUPPORTED for types it cannot decode). kv_tensor_to_f32 writes all
 * kv_tensor_nelements(t) values. kv_model_tensor_row_f32 also decodes parametric kvant formats, whose name it
 * reads from the GGUF metadata "kvant.tensor.<name>.format". */
kv_status kv_tensor_row_f32(const kv_tensor *t, int64_t row, float *dst, kv_error *err);
kv_status kv_tensor_to_f32(const kv_tensor *t, float *dst, kv_error *err);
kv_status kv_model_tensor_row_f32(const kv_model_file *mf, const kv_tensor *t, int64_t row, float *dst, kv_error *err);

/* Verification (`kvant inspect --verify`, src/io/verify.c): every value of tensor t decoded as the model loader
 * would (entropy-coded containers with their checksums and stream checks) and checked finite. KV_OK when all
 * are; otherwise err names the file, the byte offset (the corrupt bytes, or the row holding the first
 * non-finite value) and the tensor, and r (filled either way) counts what was found. Memory: an entropy-coded
 * tensor is decoded whole, others one row per task; pool may be NULL; results do not depend on the threads. */
typedef struct kv_tensor_check {
    int64_t values;               /* decoded (0 when decoding failed) */
    int64_t nonfinite;            /* NaN or Inf among them */
    int64_t first_row, first_col; /* the first non-finite value, -1 when none */
    double max_abs;               /* largest finite |value| */
} kv_tensor_check;
kv_status kv_tensor_verify(const kv_model_file *mf, const kv_tensor *t, kv_pool *pool, kv_tensor_check *r,
                           kv_error *err);

/* Hugging Face <-> canonical tensor names ("model.layers.3.self_attn.q_proj.weight" <-> "blk.3.attn_q.weight").
 * Return 1 and fill out when the name is mapped, 0 otherwise. */
int kv_name_from_hf(const char *hf_name, char *out, size_t n);
int kv_name_to_hf(const char *canonical, char *out, size_t n);
/* ---- GGUF v3 container (src/io/gguf.c reader, src/io/gguf_write.c writer; docs/FORMAT.md) ---------- */
typedef enum kv_gguf_vtype {
    KV_GGUF_U8 = 0, KV_GGUF_I8 = 1, KV_GGUF_U16 = 2, KV_GGUF_I16 = 3, KV_GGUF_U32 = 4, KV_GGUF_I32 = 5,
    KV_GGUF_F32 = 6, KV_GGUF_BOOL = 7, KV_GGUF_STRING = 8, KV_GGUF_ARRAY = 9, KV_GGUF_U64 = 10,
    KV_GGUF_I64 = 11, KV_GGUF_F64 = 12,
    KV_GGUF_VTYPE_COUNT = 13
} kv_gguf_vtype;

#define KV_GGUF_DEFAULT_ALIGNMENT 32
#define KV_GGUF_MAX_NAME 63        /* tensor name bytes (llama.cpp: GGML_MAX_NAME 64 incl. NUL) */
#define KV_GGUF_MAX_ARRAY_DEPTH 8  /* nesting of arrays in arrays */

/* One metadata value, pointing into the file's bytes (valid while the kv_gguf is open).
 * Scalars: data -> the little-endian value.  STRING: data -> n bytes of UTF-8, NOT NUL-terminated.
 * ARRAY: elem_type, n elements; read them with kv_gguf_arr_get (O(1), also for strings and nested arrays). */
typedef struct kv_gguf_value {
    kv_gguf_vtype type;
    kv_gguf_vtype elem_type;  /* ARRAY only */
    uint64_t n;               /* STRING: byte length; ARRAY: element count; scalars: 1 */
    const void *data;
    uint64_t offset;          /* absolute file offset of the value's bytes (after its type field) */
    uint64_t raw_size;        /* serialized size of the value in the file (for verbatim copies) */
    const void *index_;       /* internal: element index of STRING/ARRAY arrays */
} kv_gguf_value;

/* One tensor info. shape is kvant's outermost-first order (GGUF's ne[] reversed). */
typedef struct kv_gguf_tensor {
    const char *name;         /* NUL-terminated copy */
    int n_dims;               /* 0..4 (0: a scalar, one element) */
    int64_t shape[4];
    uint32_t type;            /* kv_type id (ggml id, or >= KV_TYPE_KVANT_BASE) */
    uint64_t offset;          /* relative to the data section (kv_gguf_data_offset) */
    uint64_t nbytes;
    const void *data;         /* into the file's bytes */
    uint64_t info_offset;     /* absolute offset of its tensor info (error messages) */
} kv_gguf_tensor;

typedef struct kv_gguf kv_gguf;

/* Opens (memory-maps) and validates a GGUF v3 (or v2) file: every size is checked against the file, tensor
 * data must lie inside it, aligned, without overlaps. */
kv_status kv_gguf_open(const char *path, kv_gguf **out, kv_error *err);
/* Same on bytes the caller owns and keeps alive until kv_gguf_close; name is used in error messages. */
kv_status kv_gguf_open_memory(const void *data, size_t size, const char *name, kv_gguf **out, kv_error *err);
void kv_gguf_close(kv_gguf *g);

uint32_t kv_gguf_version(const kv_gguf *g);
uint32_t kv_gguf_alignment(const kv_gguf *g);
uint64_t kv_gguf_data_offset(const kv_gguf *g);   /* absolute offset of the tensor data section */
const uint8_t *kv_gguf_bytes(const kv_gguf *g, size_t *size);
const char *kv_gguf_path(const kv_gguf *g);
const char *kv_gguf_vtype_name(kv_gguf_vtype t);  /* "u8", ..., "array"; "?" when unknown */

/* Metadata, in file order. */
int64_t kv_gguf_n_kv(const kv_gguf *g);
const char *kv_gguf_kv_key(const kv_gguf *g, int64_t i);            /* NUL-terminated copy */
const kv_gguf_value *kv_gguf_kv_value(const kv_gguf *g, int64_t i);
int64_t kv_gguf_find_key(const kv_gguf *g, const char *key);        /* -1 when absent */
const kv_gguf_value *kv_gguf_find(const kv_gguf *g, const char *key); /* NULL when absent */

/* Typed getters by key: KV_ENOTFOUND when absent, KV_EFORMAT on a type that does not convert, KV_ERANGE
 * when the value does not fit. Integer getters accept every integer type (and bool), float getters
 * accept F32/F64. */
kv_status kv_gguf_get_u32(const kv_gguf *g, const char *key, uint32_t *out, kv_error *err);
kv_status kv_gguf_get_i32(const kv_gguf *g, const char *key, int32_t *out, kv_error *err);
kv_status kv_gguf_get_u64(const kv_gguf *g, const char *key, uint64_t *out, kv_error *err);
kv_status kv_gguf_get_i64(const kv_gguf *g, const char *key, int64_t *out, kv_error *err);
kv_status kv_gguf_get_f32(const kv_gguf *g, const char *key, float *out, kv_error *err);
kv_status kv_gguf_get_f64(const kv_gguf *g, const char *key, double *out, kv_error *err);
kv_status kv_gguf_get_bool(const kv_gguf *g, const char *key, int *out, kv_error *err);
/* *out: NUL-terminated copy owned by g (a string with an embedded NUL reads as its prefix). */
kv_status kv_gguf_get_str(const kv_gguf *g, const char *key, const char **out, kv_error *err);
/* An ARRAY value (any element type); count = arr->n. */
kv_status kv_gguf_get_arr(const kv_gguf *g, const char *key, kv_gguf_value *arr, kv_error *err);

/* Element i of an ARRAY value (a scalar, STRING or nested ARRAY value). KV_ERANGE if i >= n. */
kv_status kv_gguf_arr_get(const kv_gguf_value *arr, uint64_t i, kv_gguf_value *out, kv_error *err);
/* Conversions of a scalar value (same rules as the typed getters). */
kv_status kv_gguf_value_i64(const kv_gguf_value *v, int64_t *out, kv_error *err);
kv_status kv_gguf_value_u64(const kv_gguf_value *v, uint64_t *out, kv_error *err);
kv_status kv_gguf_value_f64(const kv_gguf_value *v, double *out, kv_error *err);

/* Tensors, in file order. */
int64_t kv_gguf_n_tensors(const kv_gguf *g);
const kv_gguf_tensor *kv_gguf_tensor_at(const kv_gguf *g, int64_t i);
const kv_gguf_tensor *kv_gguf_find_tensor(const kv_gguf *g, const char *name); /* NULL when absent */

/* Writer: collect metadata and tensors, then kv_gguf_writer_write lays the file out exactly as llama.cpp's
 * gguf.cpp / gguf-py do (header, kv, tensor infos, zero padding to the alignment, each tensor's data padded
 * to the alignment) through an atomic kv_outfile. Keys and tensors are written in the order added.
 * Adding "general.alignment" (u32, power of two) sets the alignment. */
typedef struct kv_gguf_writer kv_gguf_writer;
kv_status kv_gguf_writer_create(kv_gguf_writer **out, kv_error *err);
void kv_gguf_writer_free(kv_gguf_writer *w);

/* Scalars. While an array is open (kv_gguf_writer_begin_array), key must be NULL and the call appends an
 * element (its type must be the array's element type). Duplicate keys are rejected. */
kv_status kv_gguf_writer_add_u8(kv_gguf_writer *w, const char *key, uint8_t v, kv_error *err);
kv_status kv_gguf_writer_add_i8(kv_gguf_writer *w, const char *key, int8_t v, kv_error *err);
kv_status kv_gguf_writer_add_u16(kv_gguf_writer *w, const char *key, uint16_t v, kv_error *err);
kv_status kv_gguf_writer_add_i16(kv_gguf_writer *w, const char *key, int16_t v, kv_error *err);
kv_status kv_gguf_writer_add_u32(kv_gguf_writer *w, const char *key, uint32_t v, kv_error *err);
kv_status kv_gguf_writer_add_i32(kv_gguf_writer *w, const char *key, int32_t v, kv_error *err);
kv_status kv_gguf_writer_add_u64(kv_gguf_writer *w, const char *key, uint64_t v, kv_error *err);
kv_status kv_gguf_writer_add_i64(kv_gguf_writer *w, const char *key, int64_t v, kv_error *err);
kv_status kv_gguf_writer_add_f32(kv_gguf_writer *w, const char *key, float v, kv_error *err);
kv_status kv_gguf_writer_add_f64(kv_gguf_writer *w, const char *key, double v, kv_error *err);
kv_status kv_gguf_writer_add_bool(kv_gguf_writer *w, const char *key, int v, kv_error *err);
kv_status kv_gguf_writer_add_str(kv_gguf_writer *w, const char *key, const char *s, kv_error *err);
kv_status kv_gguf_writer_add_strn(kv_gguf_writer *w, const char *key, const char *s, size_t len, kv_error *err);
/* A whole array of n numbers/bools (elem_type: any scalar type but STRING; data in that type's layout,
 * bool = one byte 0/1) or of n strings (elem_type STRING: data is `const char *const *`, lens may be NULL
 * for NUL-terminated strings). */
kv_status kv_gguf_writer_add_arr(kv_gguf_writer *w, const char *key, kv_gguf_vtype elem_type,
                                 const void *data, uint64_t n, kv_error *err);
kv_status kv_gguf_writer_add_arr_str(kv_gguf_writer *w, const char *key, const char *const *strs,
                                     const size_t *lens, uint64_t n, kv_error *err);
/* Arrays built element by element (needed for nested arrays): begin (key NULL when nested), add_*, end. */
kv_status kv_gguf_writer_begin_array(kv_gguf_writer *w, const char *key, kv_gguf_vtype elem_type, kv_error *err);
kv_status kv_gguf_writer_end_array(kv_gguf_writer *w, kv_error *err);
/* A value read by kv_gguf (any type), copied verbatim. */
kv_status kv_gguf_writer_add_value(kv_gguf_writer *w, const char *key, const kv_gguf_value *v, kv_error *err);

/* Tensors: shape outermost-first (kvant order). data is borrowed until kv_gguf_writer_write returns.
 * A kvant-only type (>= KV_TYPE_KVANT_BASE) needs the string metadata "kvant.tensor.<name>.format" (its
 * kv_format name, which sizes the rows) added before the tensor.
 * The _fn variant produces the bytes on demand: fn(ctx, first_row, nrows, dst) fills nrows rows (a row is
 * shape[n_dims-1] elements of type) so quantizers can stream; it is called in row order, once per row. */
typedef kv_status (*kv_gguf_rows_fn)(void *ctx, int64_t first_row, int64_t nrows, void *dst, kv_error *err);
kv_status kv_gguf_writer_add_tensor(kv_gguf_writer *w, const char *name, int n_dims, const int64_t *shape,
                                    uint32_t type, const void *data, kv_error *err);
kv_status kv_gguf_writer_add_tensor_fn(kv_gguf_writer *w, const char *name, int n_dims, const int64_t *shape,
                                       uint32_t type, kv_gguf_rows_fn fn, void *ctx, kv_error *err);
/* An entropy-coded matrix (KV_TYPE_ECW, docs/FORMAT.md "kvant ECW"): data is an ECW container of nbytes whose
 * header must say rows × cols; adds the metadata kvant.tensor.<name>.format = "ecw" and .bytes = nbytes. */
kv_status kv_gguf_writer_add_tensor_ecw(kv_gguf_writer *w, const char *name, int64_t rows, int64_t cols,
                                        const void *data, uint64_t nbytes, kv_error *err);
/* The same, its nbytes produced on demand: fn(ctx, first_byte, n, dst) fills bytes [first_byte, first_byte + n)
 * of the container (in order, in chunks); the caller vouches for the container (streaming quantize, whose
 * containers come from kv_ecw_encode). */
kv_status kv_gguf_writer_add_tensor_ecw_fn(kv_gguf_writer *w, const char *name, int64_t rows, int64_t cols,
                                           uint64_t nbytes, kv_gguf_rows_fn fn, void *ctx, kv_error *err);
/* Writes the file; progress (may be NULL) advances by tensor bytes. */
kv_status kv_gguf_writer_write(kv_gguf_writer *w, const char *path, kv_progress *progress, kv_error *err);

/* Model -> GGUF the way llama.cpp's convert_hf_to_gguf.py does it (src/io/gguf_convert.c; docs/convert.md). */
/* GGUF architecture of a model: "llama" (Llama, Mistral) or "qwen2". */
const char *kv_gguf_arch_of(const kv_hparams *hp);
/* Heads of the q/k rotary permutation for a canonical tensor name (n_head for attn_q, n_head_kv for attn_k,
 * weights and biases, llama architecture only); 0 when the tensor is stored as is. */
int kv_gguf_qk_heads(const kv_hparams *hp, const char *name);
/* Type of a tensor under a plain output type: 1-D tensors and norms stay F32 as in llama.cpp. */
uint32_t kv_gguf_plain_type_for(const kv_tensor *t, uint32_t outtype);
/* Writes general.* (architecture, type, name, basename, size_label, file_type, quantization_version), the
 * <arch>.* hyper-parameters and tokenizer.ggml.* (from tokenizer.model / tokenizer.json, or copied from a GGUF
 * source) in llama.cpp's order. file_type: llama_ftype (0 all f32, 1 f16, 32 bf16, 15 q4_k_m ...), or
 * KV_GGUF_NO_FILE_TYPE to leave the key out (no llama_ftype describes the file). The one writer of this metadata:
 * `convert` and `quantize` (sources that are not GGUF) both call it. */
#define KV_GGUF_NO_FILE_TYPE UINT32_MAX
kv_status kv_gguf_add_model_metadata(kv_gguf_writer *w, const kv_model_file *mf, uint32_t file_type, kv_error *err);
/* llama3 rope scaling: adds rope_freqs.weight (head_dim/2 f32 factors, as llama.cpp's converter) computed into
 * store, which must outlive the writer's write; nothing for other models. */
kv_status kv_gguf_add_rope_freqs(kv_gguf_writer *w, const kv_hparams *hp, float store[512], kv_error *err);
typedef struct kv_convert_result {
    int64_t n_tensors;   /* written (rope_freqs.weight of llama3 models not counted) */
    int64_t n_skipped;   /* source tensors without a canonical name */
    uint64_t bytes;      /* tensor data written */
} kv_convert_result;
/* src (anything kv_model_open takes) -> dst GGUF with tensors in outtype (KV_TYPE_F32/F16/BF16); attn_q/attn_k
 * rows permuted for llama.cpp's rotary layout. res may be NULL. */
kv_status kv_gguf_convert(const char *src, const char *dst, uint32_t outtype, int quiet, kv_convert_result *res,
                          kv_error *err);

/* q/k row permutation between Hugging Face (rotate-half RoPE) and llama.cpp/Meta (interleaved pairs) layout
 * (src/io/permute.c; llama.cpp convert_hf_to_gguf.py `permute`). Within each of n_head heads of hd rows:
 * to_gguf moves HF row i*hd/2 + j to row 2*j + i; from_gguf undoes it. Rows are opaque row_bytes each
 * (quantized rows too). n_rows must be a multiple of 2*n_head. src and dst must not overlap. */
kv_status kv_permute_qk_to_gguf(const void *src, void *dst, int64_t n_rows, size_t row_bytes, int n_head,
                                kv_error *err);
kv_status kv_permute_qk_from_gguf(const void *src, void *dst, int64_t n_rows, size_t row_bytes, int n_head,
                                  kv_error *err);
/* The GGUF (interleaved) row that holds HF row hf_row of a head of head_dim rows (head_dim even): the
 * row map of kv_permute_qk_to_gguf, one row at a time. */
int64_t kv_qk_gguf_row(int64_t hf_row, int64_t head_dim);
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
/* The family of a format and its traits, set by the registry: callers branch on these, never on the name. */
typedef enum kv_format_family {
    KV_FAM_PLAIN = 0,         /* f32, f16, bf16 */
    KV_FAM_GGML,              /* ggml's block types (q4_0, q4_k, iq4_xs, mxfp4, nvfp4, ...) */
    KV_FAM_INT,               /* kvant int{n}_g{g}_{sym|asym}[...] */
    KV_FAM_FP,                /* fp8/fp6/fp4 minifloats with a per-row scale */
    KV_FAM_MX,                /* OCP MX (mxfp8/6/4, mxint8) */
    KV_FAM_NVFP4,             /* nvfp4_ts */
    KV_FAM_CODEBOOK,          /* nf4, nf4_dq, af4 */
    KV_FAM_HIGGS,             /* higgs_p{p}_b{b} */
    KV_FAM_LATTICE,           /* e8_b{b} */
    KV_FAM_OTHER              /* containers (ecw) */
} kv_format_family;
enum {
    KV_FMT_ASYM = 1u << 0,    /* a zero point / minimum per group */
    KV_FMT_SEARCH = 1u << 1,  /* the scale is searched for the least (importance-weighted) error: _mse, MX _ps */
    KV_FMT_F32_SCALE = 1u << 2, /* fp32 scales (_f32) */
    KV_FMT_INT_ZP = 1u << 3,  /* integer zero points (_zp: GPTQ / compressed-tensors layout) */
    KV_FMT_CT_SCALE = 1u << 4 /* compressed-tensors' symmetric scale (absmax / (2^(b-1) - 0.5)) (_ct) */
};
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
    kv_format_family family;
    int32_t group;            /* elements sharing one scale: > 0 a group, 0 the whole row, -1 the whole tensor */
    int32_t code_bits;        /* bits of one element's code, scales excluded (16/32 for plain types) */
    uint32_t traits;          /* KV_FMT_* */
};
kv_status kv_format_get(const char *name, kv_format *out, kv_error *err);
kv_status kv_format_from_type(uint32_t type, kv_format *out, kv_error *err);
size_t kv_format_row_bytes(const kv_format *f, int64_t n); /* 0 if n is not a multiple of the block */
double kv_format_bpw(const kv_format *f, int64_t n);         /* exact bits/weight for rows of n */
/* 1 when f's quantizer uses an importance vector (imatrix), 0 when it rounds the same without one. */
int kv_format_uses_importance(const kv_format *f);
/* The canonical list of format names for `kvant formats` (parametric families: representative members). */
int kv_format_list_count(void);
const char *kv_format_list_name(int i);

/* Error of a format on synthetic data (src/formats/stats.c, `kvant formats`): iid N(0,1) and Student-t (nu = 5)
 * samples, each as drawn and after a random Hadamard transform (random signs, orthonormal FWHT in blocks of
 * 256). Deterministic for a seed whatever the thread count. Samples form rows of KV_FMT_SAMPLE_ROW values;
 * formats with per-tensor state (nvfp4_ts, int*_gt_*) see tensors of KV_FMT_SAMPLE_TENSOR_ROWS rows. */
#define KV_FMT_SAMPLE_ROW 4096
#define KV_FMT_SAMPLE_TENSOR_ROWS 64
typedef enum kv_format_dataset {
    KV_FMT_GAUSS, KV_FMT_GAUSS_RHT, KV_FMT_T5, KV_FMT_T5_RHT, KV_FMT_NDATASETS
} kv_format_dataset;
typedef struct kv_format_samples {
    int64_t nrows;                   /* rows of KV_FMT_SAMPLE_ROW values in each set */
    float *data[KV_FMT_NDATASETS];   /* owned; kv_format_samples_free */
    double mean_square[KV_FMT_NDATASETS];
} kv_format_samples;
/* nsamples is rounded up to whole tensors (KV_FMT_SAMPLE_ROW * KV_FMT_SAMPLE_TENSOR_ROWS values). */
kv_status kv_format_samples_make(int64_t nsamples, uint64_t seed, kv_pool *pool, kv_format_samples *out,
                                 kv_error *err);
void kv_format_samples_free(kv_format_samples *s);
typedef struct kv_format_measure {
    double bits_per_weight;          /* exact, row headers included, for rows of KV_FMT_SAMPLE_ROW */
    double mse[KV_FMT_NDATASETS];    /* mean squared error per value */
    double snr_db[KV_FMT_NDATASETS]; /* 10 log10(mean square / mse) */
    double gap_bits_gauss;           /* 1/2 log2(mse_gauss / D(R)), D(R) = sigma^2 2^(-2R), R = bits_per_weight */
} kv_format_measure;
kv_status kv_formats_measure(const kv_format *f, const kv_format_samples *s, kv_pool *pool,
                             kv_format_measure *out, kv_error *err);
/* KVANT-SECTION formats END */

/* ============================================================================================== */
/* io: Hugging Face checkpoints that other runtimes load (src/io/hf_write.c, hf_quant_read.c)       */
/* ============================================================================================== */
/* KVANT-SECTION hf BEGIN */
/* `kvant quantize --out-format hf|gptq|compressed-tensors` (docs/quantize.md "Output layouts", docs/FORMAT.md
 * "Hugging Face output"): a model directory transformers and vLLM load without kvant — config.json with the
 * quantization_config their loaders expect, safetensors shards under Hugging Face tensor names (Hugging Face
 * row order; kvant keeps that order in memory, so nothing is un-permuted), model.safetensors.index.json when
 * sharded, the source's tokenizer files and generation_config.json. Every quantized linear must share one
 * format; the embedding, the head and every 1-D tensor are stored plain (f32/f16/bf16). Layouts:
 *   GPTQ (quant_method gptq): int{2,4,8}_g{32..256|0}_sym (checkpoint_format gptq, v1: qzeros hold zero - 1) or
 *     _asym.._zp (gptq_v2: true zeros; GPTQModel only), fp16 scales: qweight/qzeros/scales/g_idx, desc_act false.
 *   compressed-tensors: int{2..8}_*_{sym|asym_zp} weight-only -> pack-quantized (W4A16, W8A16); int8_g0_sym[_f32]
 *     with act int8 -> int-quantized with dynamic per-token int8 activations (W8A8); fp8_e4m3 -> float-quantized
 *     (act fp8: FP8_DYNAMIC, per-token dynamic fp8 activations); nvfp4_ts -> nvfp4-pack-quantized (NVFP4A16).
 * Weights with an online rotation (--transform rht, quarot) are refused: no HF loader rotates activations. */
typedef enum kv_hf_layout { KV_HF_GPTQ = 1, KV_HF_COMPRESSED_TENSORS = 2 } kv_hf_layout;

typedef struct kv_hf_tensor {
    const char *name;         /* canonical name (blk.0.attn_q.weight) */
    int n_dims;
    int64_t shape[4];
    kv_format fmt;            /* storage format of data */
    const void *data;         /* rows of fmt, Hugging Face row order */
    int32_t rht_block;        /* online rotation (refused when > 0) */
} kv_hf_tensor;

typedef struct kv_hf_write_opts {
    kv_hf_layout layout;
    const char *act;          /* activations: NULL/"none", "int8" (W8A8), "fp8" (FP8_DYNAMIC) */
    const char *source_dir;   /* HF directory whose config.json and tokenizer files are copied; NULL: config.json
                                 from the hyper-parameters, no tokenizer */
    uint64_t max_shard_bytes; /* 0: 5 GB (transformers' max_shard_size) */
    const char *recipe;       /* recorded in quantization_config.kvant_recipe (informational); may be NULL */
    kv_progress *progress;    /* advanced by tensors written; may be NULL */
} kv_hf_write_opts;

typedef struct kv_hf_write_report {
    char quant_method[32];    /* "gptq", "compressed-tensors", "" for a plain checkpoint */
    char format[40];          /* "gptq", "gptq_v2", "pack-quantized", "int-quantized", "float-quantized", ... */
    int n_shards;
    uint64_t tensor_bytes;    /* safetensors payload bytes */
    int64_t n_files_copied;   /* tokenizer / generation files copied from source_dir */
} kv_hf_write_report;

/* Checks everything about the tensors and options that the writer would refuse (formats, rotations, shapes),
 * without writing; the quantize pipeline calls it before any slow work with the formats it chose. */
kv_status kv_hf_check(const kv_hparams *hp, const kv_hf_tensor *t, int64_t n, const kv_hf_write_opts *o,
                      kv_error *err);
/* dir must not exist, or be an empty directory. Writes into a temporary sibling directory, then renames it:
 * a failure leaves nothing under dir. rep may be NULL. */
kv_status kv_hf_check_output_dir(const char *dir, kv_error *err);
kv_status kv_hf_write(const char *dir, const kv_hparams *hp, const kv_hf_tensor *t, int64_t n,
                      const kv_hf_write_opts *o, kv_hf_write_report *rep, kv_error *err);
/* The activation format a quantized HF checkpoint's config asks for (compressed-tensors input_activations:
 * dynamic per-token int8 -> "int8_g0_sym_f32_ct", fp8 -> "fp8_e4m3"), NULL when none; kv_model_load applies it
 * (kv_model_set_act_quant) so kvant evaluates the checkpoint as its loader runs it. */
const char *kv_model_act_format(const kv_model_file *mf);
/* quantization_config.quant_method and .format of an HF model directory ("" when not quantized). */
const char *kv_model_quant_method(const kv_model_file *mf);
/* KVANT-SECTION hf END */

/* ============================================================================================== */
/* model: tokenizers (src/model/tokenizer*)                                                        */
/* ============================================================================================== */
/* KVANT-SECTION tokenizer BEGIN */
/* Tokenizers, exact against their references (docs/tokenize.md):
 *   SPM: SentencePiece BPE (sentencepiece bpe_model.cc) from tokenizer.model or GGUF "llama" vocabularies;
 *   BPE: byte-level BPE (GPT-2 encoder.py, HF tokenizers) from tokenizer.json or GGUF "gpt2" vocabularies,
 *        with the GPT-2, Llama-3 or Qwen2 pre-tokenizer. */
typedef struct kv_tokenizer kv_tokenizer;

typedef enum kv_tokenizer_kind { KV_TOKENIZER_SPM = 1, KV_TOKENIZER_BPE = 2 } kv_tokenizer_kind;
/* Token types: SentencePiece's enum, also GGUF tokenizer.ggml.token_type. */
typedef enum kv_token_type {
    KV_TOKEN_NORMAL = 1, KV_TOKEN_UNKNOWN = 2, KV_TOKEN_CONTROL = 3, KV_TOKEN_USER_DEFINED = 4,
    KV_TOKEN_UNUSED = 5, KV_TOKEN_BYTE = 6
} kv_token_type;
/* Pre-tokenizers of byte-level BPE (split regexes); GGUF tokenizer.ggml.pre names in brackets. */
typedef enum kv_pretokenizer {
    KV_PRETOK_NONE = 0,   /* SPM */
    KV_PRETOK_GPT2,       /* ["default", "gpt-2"] */
    KV_PRETOK_LLAMA3,     /* ["llama-bpe", "llama3"] */
    KV_PRETOK_QWEN2       /* ["qwen2"] */
} kv_pretokenizer;

kv_status kv_tokenizer_load_spm(const char *path, kv_tokenizer **out, kv_error *err);      /* tokenizer.model */
/* The same from bytes (the fuzz target's entry point); name is used in error messages (may be NULL). */
kv_status kv_tokenizer_load_spm_memory(const void *data, size_t size, const char *name, kv_tokenizer **out,
                                       kv_error *err);
kv_status kv_tokenizer_load_hf_json(const char *path, kv_tokenizer **out, kv_error *err);  /* tokenizer.json */
/* The same from bytes (the fuzz target's entry point); name is used in error messages (may be NULL). */
kv_status kv_tokenizer_load_hf_json_memory(const void *data, size_t size, const char *name, kv_tokenizer **out,
                                           kv_error *err);
kv_status kv_tokenizer_load_gguf(const char *path, kv_tokenizer **out, kv_error *err);     /* tokenizer.ggml.* */
/* The tokenizer of an opened model (kv_model_tokenizer); bos/eos ids of the model's hparams win when set. */
kv_status kv_tokenizer_load_for_model(const kv_model_file *mf, kv_tokenizer **out, kv_error *err);
/* Any of: a model directory or model file (via kv_model_open), a .gguf, a tokenizer.model, a tokenizer.json. */
kv_status kv_tokenizer_load(const char *path, kv_tokenizer **out, kv_error *err);
void kv_tokenizer_free(kv_tokenizer *tok);

/* text[0..len) (any bytes; UTF-8 expected) -> *ids (malloc'd, caller frees; NULL when *n is 0).
 * add_bos prepends the BOS id (an error if the tokenizer has none). Malformed UTF-8 bytes are kept: SPM
 * encodes each as its <0xNN> byte token, BPE through the byte-level alphabet, so decoding gives them back.
 * Tokens written out in the text are matched first: SPM user-defined pieces; BPE control and user-defined
 * (added) tokens, e.g. "<|endoftext|>". A loaded tokenizer is read-only: share it between threads freely. */
kv_status kv_tokenize(const kv_tokenizer *tok, const char *text, size_t len, int add_bos, int32_t **ids,
                      size_t *n, kv_error *err);
/* ids -> UTF-8 bytes in *text (malloc'd, NUL-terminated, caller frees). Control tokens (BOS, EOS) give
 * nothing; SPM: U+2581 becomes a space, the dummy-prefix space of the first piece is dropped, <0xNN> pieces
 * give their byte, <unk> gives " \xE2\x81\x87 " as sentencepiece does. KV_ERANGE for an id out of range. */
kv_status kv_detokenize(const kv_tokenizer *tok, const int32_t *ids, size_t n, char **text, size_t *len,
                        kv_error *err);
/* The text of one token as llama-tokenize prints it (control tokens: their piece; no prefix stripping).
 * Writes at most cap bytes (no NUL) and returns the full length; 0 for an id out of range. */
size_t kv_token_to_text(const kv_tokenizer *tok, int32_t id, char *buf, size_t cap);

kv_tokenizer_kind kv_tokenizer_get_kind(const kv_tokenizer *tok);
kv_pretokenizer kv_tokenizer_pretokenizer(const kv_tokenizer *tok);
const char *kv_pretokenizer_name(kv_pretokenizer p);   /* GGUF tokenizer.ggml.pre value ("default", ...) */
int32_t kv_tokenizer_n_vocab(const kv_tokenizer *tok);
int32_t kv_tokenizer_bos(const kv_tokenizer *tok);      /* -1 when none */
int32_t kv_tokenizer_eos(const kv_tokenizer *tok);
int32_t kv_tokenizer_unk(const kv_tokenizer *tok);
int32_t kv_tokenizer_pad(const kv_tokenizer *tok);
int kv_tokenizer_add_bos_default(const kv_tokenizer *tok); /* whether the model expects BOS (CLI default) */
int kv_tokenizer_add_space_prefix(const kv_tokenizer *tok); /* SPM dummy prefix (GGUF add_space_prefix) */
/* Piece of an id exactly as stored (SPM with U+2581, BPE in the byte-level alphabet); NULL out of range. */
const char *kv_tokenizer_piece(const kv_tokenizer *tok, int32_t id, size_t *len);
float kv_tokenizer_score(const kv_tokenizer *tok, int32_t id);          /* SPM merge score; BPE: 0 or GGUF's */
kv_token_type kv_tokenizer_token_type(const kv_tokenizer *tok, int32_t id); /* 0 out of range */
/* BPE merges in rank order (for tokenizer.ggml.merges: "LEFT RIGHT" of the two pieces); 0 for SPM. */
int64_t kv_tokenizer_n_merges(const kv_tokenizer *tok);
kv_status kv_tokenizer_merge(const kv_tokenizer *tok, int64_t rank, int32_t *left, int32_t *right, kv_error *err);
/* KVANT-SECTION tokenizer END */

/* ============================================================================================== */
/* model: forward pass (src/model) and kernels (src/kernels)                                       */
/* ============================================================================================== */
/* KVANT-SECTION model BEGIN */
/* The runnable model (src/model/model.c) built from an opened kv_model_file, the reference forward pass
 * (src/model/forward.c, llama2.c-style: embed, RMSNorm, RoPE, GQA attention, SwiGLU, head) and the weight
 * seam: every linear layer is a kv_weight whose rows are in ANY kv_format; the matmul dequantizes weight
 * tiles on the fly into fp32 panels (src/kernels/cpu/matmul.c). Activations are always fp32. */
typedef struct kv_model kv_model;

/* The linear layers of a decoder block, plus the output head. */
typedef enum kv_linear_id {
    KV_LINEAR_Q = 0, KV_LINEAR_K, KV_LINEAR_V, KV_LINEAR_O,
    KV_LINEAR_GATE, KV_LINEAR_UP, KV_LINEAR_DOWN,
    KV_LINEAR_HEAD,           /* output.weight (layer index = n_layer) */
    KV_LINEAR_COUNT
} kv_linear_id;
const char *kv_linear_name(kv_linear_id id); /* "attn_q", ..., "ffn_down", "output" */

/* One linear layer y = W·x (+ b): W is rows (out_features) × cols (in_features), each row packed in fmt. */
typedef struct kv_weight {
    kv_format fmt;            /* f32/f16/bf16 or any quantized format */
    int64_t rows, cols;
    const void *data;         /* rows × kv_format_row_bytes(&fmt, cols) bytes */
    void *owned;              /* == data when the model owns it (free()d), else NULL (borrowed: mmap) */
    float *bias;              /* rows floats (owned by the model) or NULL */
    /* Online randomized Hadamard on the input: x <- H_b·diag(s)·x on each block of rht_block input
     * features (kv_rht_forward(x, cols, rht_block, rht_seed) semantics) before the matmul; 0 = none. */
    int32_t rht_block;
    uint64_t rht_seed;
    float *rht_signs;         /* cols signs cached by the model (internal; NULL when rht_block == 0) */
    float *packed;            /* fp32 GEMM panels cached at load (kv_model_load_opts.prepack; internal) */
    /* LLM.int8() mixed precision (`--method llm-int8`, docs/methods.md): fmt is int8_g0_sym_f32 whose codes of
     * the outlier input columns are 0; those columns are multiplied in fp16, the others in vector-wise int8
     * (kv_llmint8_weight_matmul). Set by kv_model_load from the GGUF's kvant.llmint8.* entries; owned. */
    int llmint8;              /* 1: the forward pass runs this weight through LLM.int8() */
    int64_t n_outliers;
    int32_t *outlier_cols;    /* n_outliers input columns, ascending */
    uint8_t *outlier_mask;    /* cols bytes: 1 for an outlier column */
    float *outlier_w;         /* rows × n_outliers: their weights (fp16 values) */
} kv_weight;

/* RoPE inverse frequencies. Hugging Face transformers keeps them in a buffer that is cast to the checkpoint's
 * dtype when a bf16/f16 model is loaded in its own dtype, so its "fp32 forward" of a bf16 checkpoint rotates
 * with bf16-rounded frequencies (proxy-27m's ref/ logits and PPLs were made that way); llama.cpp uses exact
 * fp32 frequencies. AUTO: rounded like transformers for a Hugging Face directory whose weights are bf16/f16,
 * exact for every other file (GGUF, llama2.c, safetensors of f32). */
typedef enum kv_rope_freq_mode { KV_ROPE_FREQ_AUTO = 0, KV_ROPE_FREQ_EXACT, KV_ROPE_FREQ_BF16, KV_ROPE_FREQ_F16 }
    kv_rope_freq_mode;

typedef struct kv_model_load_opts {
    kv_rope_freq_mode rope_freq;
    int weights_f32;          /* 1: convert f16/bf16 linears to f32 at load (2x memory) */
    int bf16_dot;             /* 1: bf16 linears multiply activations rounded to bf16 with AVX512-BF16 dot
                               * products (llama.cpp's CPU arithmetic; ~2x faster; logits move by ~1e-2).
                               * Default 0: exact fp32 activations. No effect without AVX512-BF16. */
    int prepack;              /* 1: keep every linear also as packed fp32 GEMM panels (4 bytes/weight more):
                               * saves the per-call dequantize+pack of the exact path (eval, bench). */
    int act_q8;               /* 1: linears whose format has an integer kernel (q4_0, q8_0, q4_k, q5_k, q6_k)
                               * multiply activations quantized to 8 bits per block on the fly with integer
                               * dot products from the packed bytes — llama.cpp's CPU arithmetic (q8_0/q8_K
                               * activations), the fast path of `kvant run`; logits move by ~1e-3 relative.
                               * Default 0: exact fp32 activations. Not combined with prepack. */
} kv_model_load_opts;

/* Builds a runnable model: linears borrow the file's mapped bytes (bf16/f16/f32 or any type the formats
 * module knows; kvant-only types via metadata kvant.tensor.<name>.format); norms and biases become fp32.
 * Online Hadamards recorded in a GGUF (KV_META_RHT_BLOCK_FMT / KV_META_RHT_SEED_FMT) are set on their
 * weights (kv_model_set_rht). mf must stay open while the model lives. opts may be NULL. */
kv_status kv_model_load(const kv_model_file *mf, const kv_model_load_opts *opts, kv_model **out, kv_error *err);
void kv_model_free(kv_model *m);
const kv_hparams *kv_model_get_hparams(const kv_model *m);
/* The linear `which` of `layer` (layer = n_layer with KV_LINEAR_HEAD); NULL when out of range. */
const kv_weight *kv_model_weight(const kv_model *m, int layer, kv_linear_id which);
/* The token embedding table (rows = n_vocab, cols = n_embd) in its storage format. */
const kv_weight *kv_model_embedding(const kv_model *m);
/* Maps a canonical tensor name ("blk.3.ffn_down.weight", "output.weight", "token_embd.weight") to a linear;
 * returns 0 on success. token_embd.weight gives layer -1 (the embedding). */
int kv_model_linear_by_name(const kv_model *m, const char *name, int *layer, kv_linear_id *which);
/* Replaces one weight (a linear, or token_embd.weight; with tied embeddings setting token_embd also moves
 * the head unless output.weight was set separately). data: rows × kv_format_row_bytes(fmt, cols) bytes;
 * take_ownership = 1: the model free()s data (it must come from malloc). The shape is the old one. */
kv_status kv_model_set_weight(kv_model *m, const char *tensor_name, const kv_format *fmt, const void *data,
                              int take_ownership, kv_error *err);
/* Decodes every linear (decoder linears and the head; not LLM.int8() ones, which keep their own kernel) to fp32
 * once, so that evaluation runs the fp32 GEMM on the same values the on-the-fly path reconstructs, without
 * decoding them again for every window. Memory: the fp32 linears. */
kv_status kv_model_linears_to_f32(kv_model *m, kv_error *err);
/* Records an online Hadamard on the input of one linear (see kv_weight.rht_block); block 0 removes it. */
kv_status kv_model_set_rht(kv_model *m, const char *tensor_name, int32_t block, uint64_t seed, kv_error *err);
/* Simulated activation quantization: the input of every DECODER linear (q/k/v, o, gate/up, down; not the
 * head, not the embedding) is quantized-dequantized per token row with fmt (after any online Hadamard)
 * before the matmul. NULL turns it off. include_head = 1 also quantizes the head input. The format's block
 * must divide n_embd, n_ff and n_head*head_dim (else KV_EINVAL). */
kv_status kv_model_set_act_quant(kv_model *m, const kv_format *fmt, int include_head, kv_error *err);

/* Calibration hook: called with each DISTINCT linear input, before any online transform / act quant:
 * which = KV_LINEAR_Q (input of q, k and v), KV_LINEAR_O, KV_LINEAR_GATE (input of gate and up),
 * KV_LINEAR_DOWN, and KV_LINEAR_HEAD with layer = n_layer. x is [ntok × dim], row-major. Called from the
 * caller's thread, in layer order. */
typedef void (*kv_linear_input_fn)(void *user, int layer, kv_linear_id which, const float *x, int64_t ntok,
                                   int64_t dim);
typedef struct kv_forward_hooks {
    kv_linear_input_fn on_linear_input;
    void *user;
} kv_forward_hooks;

/* An inference context: KV cache for up to n_ctx positions plus scratch buffers. One per thread of use;
 * the model may be shared by several contexts (read-only during forward). */
typedef struct kv_context kv_context;
kv_status kv_context_create(const kv_model *m, int32_t n_ctx, kv_context **out, kv_error *err);
void kv_context_free(kv_context *ctx);
int32_t kv_context_n_ctx(const kv_context *ctx);
void kv_context_set_hooks(kv_context *ctx, const kv_forward_hooks *hooks); /* NULL: none */

#define KV_FORWARD_LAST_ONLY 1u /* logits of the last token only (logits: n_vocab floats) */
#define KV_FORWARD_NO_LOGITS 2u /* fill the KV cache only */
/* Runs n tokens at positions pos0..pos0+n-1 (batched prefill: one GEMM per linear for all n tokens).
 * Positions before pos0 must already be in the cache (earlier calls); pos0 = 0 starts afresh.
 * logits: n × n_vocab floats (or n_vocab with KV_FORWARD_LAST_ONLY). pool may be NULL. */
kv_status kv_forward(kv_context *ctx, const int32_t *tokens, int64_t n, int64_t pos0, float *logits,
                     unsigned flags, kv_pool *pool, kv_error *err);
/* The pieces of kv_forward for layer-by-layer work (GPTQ calibration):
 *   kv_forward_embed: hidden [n × n_embd] <- embedding rows of tokens;
 *   kv_forward_layer: one decoder block in place on hidden, positions pos0.., using/filling ctx's cache;
 *   kv_forward_head: final RMSNorm + output head (logits n × n_vocab; hidden is left unchanged).
 * Hooks of ctx are called. */
kv_status kv_forward_embed(const kv_model *m, const int32_t *tokens, int64_t n, float *hidden, kv_error *err);
kv_status kv_forward_layer(kv_context *ctx, int layer, float *hidden, int64_t n, int64_t pos0, kv_pool *pool,
                           kv_error *err);
kv_status kv_forward_head(kv_context *ctx, const float *hidden, int64_t n, float *logits, kv_pool *pool,
                          kv_error *err);

/* The weight-seam matmul: y[ntok × w->rows] = x[ntok × w->cols] · Wᵀ (+ bias). Online transforms and act
 * quant are NOT applied here (the forward pass does that). */
kv_status kv_weight_matmul(const kv_weight *w, const float *x, int64_t ntok, float *y, kv_pool *pool,
                           kv_error *err);
/* KVANT-SECTION model END */

/* ============================================================================================== */
/* eval: perplexity, KL-divergence (src/eval)                                                      */
/* ============================================================================================== */
/* KVANT-SECTION eval BEGIN */
/* Perplexity and KL-divergence (src/eval; docs/eval.md). Inputs are token ids: the caller tokenizes.
 *   KV_PPL_HF: the GPTQ / HIGGS papers' convention: non-overlapping windows of ctx tokens of ids (ids[0] is
 *     the BOS the caller put first), tail dropped; every predicted token scored (ctx-1 per window).
 *   KV_PPL_LLAMACPP: llama-perplexity: windows of ctx from an empty cache with the first token replaced by
 *     BOS, only the second half scored (ctx-1-ctx/2 tokens per window); needs >= 2 windows of tokens. */
typedef enum kv_ppl_style { KV_PPL_HF = 0, KV_PPL_LLAMACPP = 1 } kv_ppl_style;
const char *kv_ppl_style_name(kv_ppl_style s); /* "hf", "llamacpp" */

typedef void (*kv_eval_progress_fn)(void *user, int64_t windows_done, int64_t windows_total);

typedef struct kv_eval_opts {
    int32_t ctx;              /* window length; 0 = 512 */
    int64_t chunks;           /* windows to evaluate; 0 = all */
    kv_ppl_style style;
    int32_t bos_id;           /* llamacpp style: BOS put at the start of each window; -1 = hparams bos_id */
    const char *save_logits;  /* write the base log-probs file here (NULL: don't) */
    const char *kld_base;     /* compare against this log-probs file (NULL: don't) */
    kv_eval_progress_fn progress;
    void *progress_user;
} kv_eval_opts;

/* The statistics of llama-perplexity's KL mode. */
typedef struct kv_kld_stats {
    int64_t n;                /* scored tokens */
    double mean, mean_stderr, median, p90, p99, max, min;
    double top1_agree;        /* percent of tokens with the same argmax */
    double dp_mean, dp_rms;   /* Δp = p_model(correct) - p_base(correct), mean and RMS (as fractions) */
    double ppl_base, ppl_ratio; /* PPL of the base log-probs; this model's PPL / base PPL */
} kv_kld_stats;

typedef struct kv_eval_result {
    double ppl, ppl_stderr, nll; /* nll: mean negative log-likelihood (nats) */
    int64_t tokens;           /* scored tokens */
    int64_t windows;
    int32_t ctx;
    kv_ppl_style style;
    double seconds, tokens_per_s; /* tokens_per_s counts every token run through the model */
    int has_kld;
    kv_kld_stats kld;
} kv_eval_result;

kv_status kv_eval_ppl(const kv_model *m, const int32_t *ids, int64_t n_ids, const kv_eval_opts *opts,
                      kv_pool *pool, kv_eval_result *res, kv_error *err);

/* In-memory base log-probs (the same records as the logits file; docs/FORMAT.md "kvant logits file"):
 * compute once for the base model, then kv_eval_kld for several other models without files. */
typedef struct kv_logprobs kv_logprobs;
kv_status kv_eval_base_logprobs(const kv_model *base, const int32_t *ids, int64_t n_ids,
                                const kv_eval_opts *opts, kv_pool *pool, kv_logprobs **out,
                                kv_eval_result *res, kv_error *err);
kv_status kv_eval_kld(const kv_model *m, const kv_logprobs *base, kv_pool *pool, kv_eval_result *res,
                      kv_error *err);
/* Checks every record: a NaN or +Inf log-prob, a non-finite log-prob of the correct token or an id outside the
 * vocabulary is KV_EFORMAT naming the file, the byte offset and the token. */
kv_status kv_logprobs_load(const char *path, kv_logprobs **out, kv_error *err);
/* Was lp made from these tokens with these options (ctx, style, windows; and m's vocabulary when m is not NULL)?
 * KV_EFORMAT saying what differs (as kv_eval_ppl with kld_base does). */
kv_status kv_logprobs_check(const kv_logprobs *lp, const kv_model *m, const int32_t *ids, int64_t n_ids,
                            const kv_eval_opts *opts, kv_error *err);
kv_status kv_logprobs_save(const kv_logprobs *lp, const char *path, kv_error *err);
void kv_logprobs_free(kv_logprobs *lp);
/* KVANT-SECTION eval END */

/* ============================================================================================== */
/* eval: zero-shot multiple-choice tasks (src/eval/tasks.c; docs/eval.md "Zero-shot tasks")         */
/* ============================================================================================== */
/* KVANT-SECTION tasks BEGIN */
/* lm-evaluation-harness's multiple-choice convention: every choice is scored by the log-likelihood of
 * delimiter + choice after the context (tokens of the whole string minus those of the context, trailing
 * spaces of the context moved to the continuation, as lm-eval's _encode_pair); acc = the best log-likelihood
 * is the gold one, acc_norm = the best log-likelihood per byte of the choice (lm-eval divides by len(choice):
 * characters, the same for ASCII), stderr = sqrt(p (1 - p) / (n - 1)) (lm-eval's mean_stderr). */
typedef struct kv_task_item {
    char *id;                 /* "" when the line has none */
    char *context;
    char *delimiter;          /* put before each choice; default " " */
    int n_choices;
    char **choices;
    int gold;                 /* index into choices */
} kv_task_item;

typedef struct kv_taskset {
    char name[128];           /* file name without directory and .jsonl */
    int64_t n;
    kv_task_item *items;      /* owned */
} kv_taskset;

/* JSONL: one object per line {"context": S, "choices": [S, ...], "gold": N, "id": S?, "delimiter": S?};
 * blank lines skipped. Errors name the file, line and byte offset; unknown keys are an error. */
kv_status kv_tasks_load(const char *path, kv_taskset **out, kv_error *err);
kv_status kv_tasks_parse(const char *text, size_t len, const char *name, kv_taskset **out, kv_error *err);
/* Atomic JSONL writer (the same schema; keys in the order above). */
kv_status kv_tasks_save(const kv_taskset *ts, const char *path, kv_error *err);
void kv_tasks_free(kv_taskset *ts);

/* Task files made from a text of passages, one per line (docs/eval.md): deterministic for a seed.
 *   KV_TASKS_NEXT_SENTENCE: context = up to 3 sentences of a passage, the right next sentence against
 *     sentences of other passages;
 *   KV_TASKS_CLOZE: context = a passage up to the last word of one of its sentences, the right word against
 *     last words of sentences of other passages. */
typedef enum kv_tasks_kind { KV_TASKS_NEXT_SENTENCE = 0, KV_TASKS_CLOZE = 1 } kv_tasks_kind;
const char *kv_tasks_kind_name(kv_tasks_kind k); /* "next-sentence", "cloze" */
kv_status kv_tasks_kind_parse(const char *s, kv_tasks_kind *out, kv_error *err);
kv_status kv_tasks_make(const char *text, size_t len, kv_tasks_kind kind, int64_t n_items, int n_choices,
                        uint64_t seed, const char *name, kv_taskset **out, kv_error *err);

typedef struct kv_task_opts {
    int add_bos;              /* prepend the tokenizer's BOS (the model's convention; -1: the tokenizer's default) */
    int64_t limit;            /* score the first N items only; 0: all */
    kv_eval_progress_fn progress; /* called with items done / total */
    void *progress_user;
} kv_task_opts;

typedef struct kv_task_result {
    int64_t n;                /* items scored */
    double acc, acc_stderr;
    double acc_norm, acc_norm_stderr;
    int64_t truncated;        /* items whose context was cut from the left to fit the model's context */
    int64_t tokens;           /* tokens run through the model */
    double seconds;
} kv_task_result;

/* Scores the items of ts (items run in parallel on pool, one inference context per thread; results do not
 * depend on the thread count). ll (may be NULL) gets, per item, n_choices log-likelihoods in nats (item after
 * item, sum of the items' n_choices values). */
kv_status kv_tasks_eval(const kv_model *m, const kv_tokenizer *tok, const kv_taskset *ts, const kv_task_opts *opts,
                        kv_pool *pool, kv_task_result *res, double *ll, kv_error *err);
/* KVANT-SECTION tasks END */

/* ============================================================================================== */
/* eval: plots for reports (src/eval/plot.c, png.c; docs/study.md "Plots")                         */
/* ============================================================================================== */
/* KVANT-SECTION plot BEGIN */
/* Scatter/line plots and heat maps written as SVG or PNG (chosen by the file name's extension) with no
 * dependency: the PNG is drawn by a small rasterizer with a built-in 5x7 font and encoded by kvant's own
 * deflate. Both outputs share one layout (monospace text of known width), so labels that do not overlap in
 * one do not overlap in the other: point labels are placed greedily around their point and dropped (with
 * the count in the legend) when no free place is left. */
typedef struct kv_plot_series {
    const char *label;        /* legend entry; NULL: none */
    const double *x, *y;      /* n points; non-finite (or <= 0 on a log axis) points are skipped */
    int64_t n;
    const char *const *point_labels; /* NULL, or n strings (NULL entries: no label) */
    int line;                 /* 1: join the points in the given order */
    int marker;               /* 1: draw a marker at each point */
    int dashed;
    int32_t color;            /* 0xRRGGBB; -1: the palette colour of the series index */
} kv_plot_series;

typedef struct kv_plot {
    const char *title, *xlabel, *ylabel;
    int xlog, ylog;           /* 1: logarithmic axis */
    double xmin, xmax, ymin, ymax; /* axis ranges; xmin == xmax (ymin == ymax): from the data */
    int width, height;        /* pixels; 0: 960 x 640 */
    const kv_plot_series *series;
    int n_series;
} kv_plot;

typedef struct kv_heatmap {
    const char *title, *xlabel, *ylabel;
    int rows, cols;
    const double *v;          /* rows × cols values, row-major; NaN: no value */
    const char *const *row_labels, *const *col_labels;
    const char *value_fmt;    /* printf format of the value in each cell; NULL: "%.1f" */
    double vmin, vmax;        /* colour scale; vmin == vmax: from the data */
    int width, height;        /* 0: from the number of cells */
} kv_heatmap;

/* The palette colour of series i (10 colours, then repeating with other markers). */
int32_t kv_plot_palette(int i);
/* Writes PATH (.svg or .png) atomically; KV_EINVAL for another extension or an empty plot. */
kv_status kv_plot_write(const kv_plot *p, const char *path, kv_error *err);
kv_status kv_heatmap_write(const kv_heatmap *h, const char *path, kv_error *err);
/* KVANT-SECTION plot END */

/* ============================================================================================== */
/* eval: studies — recipe matrices quantized and evaluated in one run (src/eval/study*.c; docs/study.md) */
/* ============================================================================================== */
/* KVANT-SECTION study BEGIN */
/* A study spec (JSON, docs/study.md) names one model, an evaluation (text, ctx, windows, task files), the
 * calibration, and the cells: matrices of methods × transforms × formats × activation formats (× bit budgets,
 * allocated among candidates) and explicit recipes, plus llama-quantize references. kv_study_load parses and
 * validates all of it (names, files, numbers) before any work. */
typedef struct kv_study kv_study;
kv_status kv_study_load(const char *path, kv_study **out, kv_error *err);
void kv_study_free(kv_study *s);
int64_t kv_study_n_cells(const kv_study *s);
const char *kv_study_cell_label(const kv_study *s, int64_t i);
const char *kv_study_name(const kv_study *s);
/* Where results go: the spec's "out" (default build/studies/NAME), or dir when not NULL. */
kv_status kv_study_set_out_dir(kv_study *s, const char *dir, kv_error *err);
const char *kv_study_out_dir(const kv_study *s);

#define KV_STUDY_MAX_TASKS 8
/* One evaluated cell (a line of results.jsonl / results.csv). */
typedef struct kv_study_row {
    char id[17];
    char label[200];
    char kind[16];            /* "base", "kvant", "llama.cpp" */
    char format[48], method[96], transform[96], act[16];
    double bits_target;       /* allocation budget (0: none) */
    int64_t n_params;
    uint64_t tensor_bytes, file_bytes;
    double bpw;               /* tensor bytes · 8 / parameters, embedding and head included */
    double ppl, ppl_stderr, ppl_ratio;
    double kld, kld_stderr, kld_p99, top1, dp_rms; /* vs the unquantized model (NaN for base) */
    int n_tasks;
    char task[KV_STUDY_MAX_TASKS][64];
    double acc[KV_STUDY_MAX_TASKS], acc_norm[KV_STUDY_MAX_TASKS];
    double acc_mean;          /* mean acc over the tasks (NaN without tasks) */
    double recovery;          /* 100 · acc_mean / acc_mean of the unquantized model */
    double seconds_quantize, seconds_eval;
    char commit[48];
} kv_study_row;

typedef struct kv_study_opts {
    int threads;              /* 0: the spec's "threads" (0 there: all cores) */
    int jobs;                 /* cells at once (each with threads/jobs threads); 0: the spec's (default 1) */
    const char *llama_cpp_dir;/* llama-quantize lives here; NULL: llama.cpp cells are left out (with a note) */
    const char *commit;       /* recorded in each row; NULL: "" */
    /* after each finished cell (from a worker, serialised): done counts cells run in this call */
    void (*on_row)(void *user, const kv_study_row *row, int64_t done, int64_t todo);
    void (*log)(void *user, const char *msg);
    void *user;
} kv_study_opts;

typedef struct kv_study_summary {
    int64_t cells;            /* in the spec */
    int64_t already;          /* found finished in results.jsonl and skipped */
    int64_t run;              /* evaluated by this call */
    int64_t left_out;         /* llama.cpp cells without llama_cpp_dir */
    double seconds;
} kv_study_summary;

/* Runs every cell not yet in OUT/results.jsonl: quantize (kv_quantize_model), evaluate (KLD and PPL against
 * the unquantized model's log-probs, tasks), append one line to results.jsonl and results.csv (flushed and
 * fsynced: a kill loses at most the cell in progress), and at the end rewrite results.json. */
kv_status kv_study_run(kv_study *s, const kv_study_opts *o, kv_study_summary *sum, kv_error *err);
/* Reads OUT/results.jsonl; rows are in spec order (base first), *n of them (malloc'd). */
kv_status kv_study_rows(const kv_study *s, kv_study_row **rows, int64_t *n, kv_error *err);
/* Markdown report with tables and plots (SVG and PNG) in dir: report.md, pareto_kld.*, pareto_ppl.*,
 * recovery.* (or kld heat map without tasks), frontier table against the llama.cpp rows. */
kv_status kv_study_report(const kv_study *s, const char *dir, const char *commit, kv_error *err);
/* KVANT-SECTION study END */

/* ============================================================================================== */
/* transforms and quantization pipeline (src/transforms, src/algos)                                */
/* ============================================================================================== */
/* KVANT-SECTION quantize BEGIN */
/* Randomized Hadamard transform (rht) of the input features of a linear layer (src/kernels/cpu/hadamard.c).
 * R = blockdiag(H_b · diag(s) / sqrt(b)) over the n inputs in contiguous blocks of b, with s_i = ±1 for every
 * input i drawn from kv_rng seeded with `seed` (s_i = -1 iff bit 63 of the i-th kv_rng_u64 is set).
 * H_b: b = 2^m is Sylvester's Hadamard in natural order; b = K·2^m (K = 12, 20, 28) is H_K ⊗ H_{2^m}
 * (x viewed as K rows of 2^m, Paley H_K across rows), as QuaRot does. R is orthogonal.
 * A weight stored with this transform holds W·Rᵀ (each row w replaced by R·w); the forward pass computes
 * x ← R·x before the matmul, so W·x is unchanged before rounding. GGUF metadata (per weight tensor NAME):
 *   kvant.transform.NAME.rht_block (uint32) and kvant.transform.NAME.rht_seed (uint64). */
#define KV_META_RHT_BLOCK_FMT "kvant.transform.%s.rht_block"
#define KV_META_RHT_SEED_FMT "kvant.transform.%s.rht_seed"
/* The rht block a `--transform` list applies to the linears' inputs (0 when it has no rht), parsed by the
 * pipeline's one parser (kv_quantize_opts.transforms): an invalid list is refused with its message. */
kv_status kv_transform_list_rht_block(const char *list, int32_t *block, kv_error *err);
/* 1 if b is a block size rht supports (b = K·2^m, K in {1, 12, 20, 28}, b >= 1). */
int kv_rht_block_supported(int64_t b);
/* Largest supported block <= max_block that divides n (>= 1: block 1 is the identity up to signs). */
int64_t kv_rht_best_block(int64_t n, int64_t max_block);
/* signs[0..n) = ±1.0f from seed (the convention above). */
void kv_rht_signs(uint64_t seed, int64_t n, float *signs);
/* x[0..n) ← R·x, R built from block and signs (NULL: all +1). n must be a multiple of a supported block. */
void kv_rht_apply(float *x, int64_t n, int32_t block, const float *signs);
/* x[0..n) ← Rᵀ·x (the inverse). */
void kv_rht_apply_inverse(float *x, int64_t n, int32_t block, const float *signs);
/* Convenience: kv_rht_signs + kv_rht_apply on one vector (the forward pass may precompute signs instead). */
void kv_rht_forward(float *x, int64_t n, int32_t block, uint64_t seed);
/* Per-tensor seed used by `kvant quantize --transform rht`: a hash of the run's seed and the tensor name. */
uint64_t kv_rht_tensor_seed(uint64_t seed, const char *tensor_name);

/* Importance matrices (src/algos/imatrix.c; docs/imatrix.md): per linear weight, the mean of x² of each input
 * column over calibration tokens (llama.cpp tools/imatrix). Files: llama.cpp's legacy binary .dat and its
 * GGUF imatrix (general.type = "imatrix", NAME.in_sum2 / NAME.counts tensors); both are read, the writer
 * picks GGUF when the path ends in ".gguf". */
typedef struct kv_imatrix kv_imatrix;
kv_status kv_imatrix_create(kv_imatrix **out, kv_error *err);
void kv_imatrix_free(kv_imatrix *im);
int64_t kv_imatrix_n_entries(const kv_imatrix *im);
const char *kv_imatrix_entry_name(const kv_imatrix *im, int64_t i);
/* Mean x² per input column of a tensor ("blk.0.attn_q.weight"), NULL when absent; *nval gets the count. */
const float *kv_imatrix_find(const kv_imatrix *im, const char *tensor_name, int64_t *nval);
int32_t kv_imatrix_chunks(const kv_imatrix *im);  /* calibration chunks (windows) it was computed from */
/* Adds x [ntok × dim] to the running Σx² of a tensor (creating it). Values read back are means. */
kv_status kv_imatrix_accumulate(kv_imatrix *im, const char *tensor_name, const float *x, int64_t ntok,
                                int64_t dim, kv_error *err);
/* Marks the end of one calibration chunk (llama.cpp's ncall / chunk_count). */
void kv_imatrix_end_chunk(kv_imatrix *im);
void kv_imatrix_set_dataset(kv_imatrix *im, const char *name);
kv_status kv_imatrix_save(const kv_imatrix *im, const char *path, kv_error *err);
kv_status kv_imatrix_load(const char *path, kv_imatrix **out, kv_error *err);
/* Runs the model over windows of ctx tokens of ids (each window one chunk) and collects the imatrix of every
 * linear (q/k/v share their input, gate/up too; output.weight included). */
kv_status kv_imatrix_collect(const kv_model *m, const int32_t *ids, int64_t n_ids, int32_t ctx, kv_pool *pool,
                             kv_imatrix *im, kv_progress *progress, kv_error *err);

/* The quantization pipeline (src/algos/quantize.c; docs/quantize.md): open → fp32 working copy → transforms
 * (smoothquant, awq, quarot, rht; prescale selects the MX formats' _ps variants) → per-tensor formats
 * (policy: llama.cpp mixes, --override) → method (rtn or a registered one) → GGUF (or safetensors). */
/* KV_OUT_HF_GPTQ / KV_OUT_HF_CT: a Hugging Face model directory (kv_hf_write; docs/quantize.md "Output layouts"). */
typedef enum kv_out_format { KV_OUT_GGUF = 0, KV_OUT_SAFETENSORS = 1, KV_OUT_HF_GPTQ = 2, KV_OUT_HF_CT = 3 } kv_out_format;

/* Method hook (`--method NAME[:OPTIONS]`): the pipeline hands a method every tensor to quantize at once. */
typedef struct kv_quant_job {
    const char *name;         /* canonical tensor name */
    int layer;                /* decoder layer; -1 token_embd, n_layer output.weight */
    kv_format fmt;            /* chosen by the policy */
    const float *w;           /* rows × cols fp32 weights after the transforms */
    int64_t rows, cols;
    const float *importance;  /* cols: imatrix mean x² in the transformed basis, or NULL */
    int32_t rht_block;        /* online rotation of this weight's input (0: none): w is already rotated */
    uint64_t rht_seed;
    void *dst;                /* rows × kv_format_row_bytes(&fmt, cols) bytes for the packed rows */
    /* Or a variable-size encoding instead of dst (WaterSIC's entropy-coded container): the method sets out_type
     * (KV_TYPE_ECW), out_data (malloc'd; the pipeline takes it) and out_bytes. */
    uint32_t out_type;
    void *out_data;
    uint64_t out_bytes;
} kv_quant_job;

typedef struct kv_method_values kv_method_values; /* below */
/* Streaming hooks of the calibrated methods (docs/quantize.md "Memory"). With them, kv_calib_run gets only
 * the decoder linears as jobs, each with w and dst NULL until load(user, job) fills them (malloc'd) just
 * before the job's block; the calibration model borrows the source's weights and holds fp32 or quantized
 * copies of the current block only. After each block, block_done(user, layer, its jobs, the block's output
 * activations) stores the jobs' bytes and frees w, dst and out_data. first_layer > 0 resumes: blocks before it
 * are done and hidden holds their output activations (windows × ctx × n_embd floats). */
typedef struct kv_quant_stream {
    kv_status (*load)(void *user, kv_quant_job *job, kv_error *err);
    kv_status (*block_done)(void *user, int layer, kv_quant_job *const *jobs, int n_jobs, const float *hidden,
                            int64_t n_hidden, kv_error *err);
    /* frees the job's fp32 weights once the calibration model holds its quantized copy (NULL: block_done does),
     * so a block's largest linear runs with the others' fp32 copies gone */
    void (*weights_done)(void *user, kv_quant_job *job);
    int first_layer;
    const float *hidden;
    void *user;
} kv_quant_stream;

typedef struct kv_quant_method_ctx {
    kv_quant_job *jobs;
    int64_t n_jobs;
    const kv_quant_stream *stream; /* NULL: jobs hold their weights and outputs (the in-memory pipeline) */
    /* The unquantized TRANSFORMED model (what the jobs' w come from), runnable: calibration forward passes
     * see exactly the activations the quantized weights will get (online rotations included). */
    const kv_model *model;
    const int32_t *calib_ids; /* calibration windows (calib_ctx tokens each), NULL without --calib */
    int64_t n_calib_ids;
    int32_t calib_ctx;
    const char *options;      /* text after ':' in --method NAME:OPTIONS ("" when none) */
    const kv_method_values *values; /* the same options parsed (kv_method_parse); NULL: the method parses options */
    uint64_t seed;
    kv_pool *pool;
    kv_progress *progress;    /* advance by jobs done; may be NULL */
    void (*log)(void *user, const char *msg); /* notes for the user; may be NULL */
    void *log_user;
    /* Side output of a method into the GGUF (both NULL for outputs that cannot hold it: safetensors): metadata
     * (n values of elem_type as an array, or one scalar with n = -1; no strings) and extra tensors of plain ggml
     * types; both copied and written after the pipeline's own keys and tensors, in the order added. */
    kv_status (*add_meta)(void *user, const char *key, kv_gguf_vtype elem_type, const void *data, int64_t n,
                          kv_error *err);
    kv_status (*add_tensor)(void *user, const char *name, int n_dims, const int64_t *shape, uint32_t type,
                            const void *data, kv_error *err);
    void *out_user;
} kv_quant_method_ctx;
typedef kv_status (*kv_quant_method_fn)(kv_quant_method_ctx *c, kv_error *err);
/* A method's options (`--method NAME:key=value,flag,...`) are declared in a table of kv_method_opt: one parser
 * (kv_method_parse) validates names, types and ranges before any work, and kv_method_help writes the help
 * from the same table. */
typedef enum kv_mopt_type {
    KV_MOPT_FLAG,             /* `name` alone */
    KV_MOPT_INT,              /* name=N, N in [min, max] */
    KV_MOPT_FLOAT,            /* name=F, F in [min, max] (inf allowed when max is) */
    KV_MOPT_TEXT,             /* name=TEXT (a path, a tensor-name filter) */
    KV_MOPT_CHOICE            /* name=one of choices ("a|b"; the first is the default) */
} kv_mopt_type;
typedef struct kv_method_opt {
    const char *name;
    kv_mopt_type type;
    double def, min, max;     /* INT / FLOAT: default and range */
    int open_min;             /* 1: the value must be > min (rates, steps) */
    const char *choices;      /* CHOICE: "a|b"; TEXT: the value's name in the help ("DIR") */
    const char *help;         /* one line */
} kv_method_opt;
#define KV_METHOD_MAX_OPTS 12
#define KV_MOPT_TEXT_MAX 512
/* Parsed option values: v[i] belongs to the method's opts[i]. */
struct kv_method_values {
    struct { int set; double num; char text[KV_MOPT_TEXT_MAX]; } v[KV_METHOD_MAX_OPTS];
};
typedef struct kv_quant_method {
    const char *name;
    int needs_calib;          /* 1: --calib required */
    kv_quant_method_fn run;
    const char *summary;
    const kv_method_opt *opts;
    int n_opts;
    /* capabilities (what the pipeline checks before any work, instead of comparing functions) */
    const char *needs_one_of; /* "bits|step": at least one of these options is required (NULL: none) */
    int per_tensor;           /* quantizes each tensor alone from its own weights (round to nearest): streams
                               * tensor by tensor, the one method --transform-only accepts */
    int compensates;          /* GPTQ-style error compensation through the format's grid (kv_fgrid): formats
                               * without one are rounded to nearest (and warned about) */
    int layerwise;            /* quantizes decoder block by decoder block through kv_calib_run */
    int needs_rotation;       /* every quantized linear must carry an online rotation (--transform rht:GROUP) */
    int entropy_coded;        /* stores entropy-coded containers (KV_TYPE_ECW): GGUF output only */
    int gguf_only;            /* writes side outputs (metadata, extra tensors) only GGUF holds */
    int outlier_columns;      /* records fp16 outlier input columns (kv_llmint8_summary_read reads them back) */
    int no_importance;        /* computes no imatrix from --calib */
    const char *own_format;   /* the format when --format is not given (NULL: q4_k_m) */
    int embd_head_f16;        /* keeps token_embd and output in f16 when --format is not given ... */
    const char *head_flag;    /* ... except the head when this flag option is set */
} kv_quant_method;
/* NULL when unknown; kv_quant_method_names() lists them; kv_quant_method_at(0..count-1) enumerates them. */
const kv_quant_method *kv_quant_method_find(const char *name);
const char *kv_quant_method_names(void);
int kv_quant_method_count(void);
const kv_quant_method *kv_quant_method_at(int i);
/* "NAME[:OPTIONS]" -> the method and its validated option values: an unknown method lists the methods, an
 * unknown option or a bad value names it and lists the method's options with their types and ranges, a
 * missing required option (needs_one_of) says which. */
kv_status kv_method_parse(const char *spec, const kv_quant_method **m, kv_method_values *v, kv_error *err);
/* Parses only OPTIONS for m. */
kv_status kv_method_values_parse(const kv_quant_method *m, const char *options, kv_method_values *v, kv_error *err);
/* Typed reads of an option by name (the default when not given; "" for an unset TEXT; the choice's index). */
double kv_mopt_num(const kv_quant_method *m, const kv_method_values *v, const char *name);
int kv_mopt_given(const kv_quant_method *m, const kv_method_values *v, const char *name);
const char *kv_mopt_text(const kv_quant_method *m, const kv_method_values *v, const char *name);
/* The option list of m ("act-order  process columns by decreasing diag(H)\n damp=F  ... [0, inf), default
 * 0.01\n"), each line prefixed by indent; the returned length is what a large enough buffer would hold. */
size_t kv_method_help(const kv_quant_method *m, const char *indent, char *buf, size_t n);
/* Round-to-nearest with each format's own (importance-aware) quantizer; jobs run in parallel. */
kv_status kv_method_rtn(kv_quant_method_ctx *c, kv_error *err);
/* kv_method_rtn on n of the jobs (the ones a method leaves to round-to-nearest), without progress updates. */
kv_status kv_method_rtn_jobs(const kv_quant_method_ctx *c, kv_quant_job *jobs, int64_t n, kv_error *err);

typedef struct kv_quantize_opts {
    const char *format;       /* NULL: "q4_k_m" (a format name or a llama.cpp mix) */
    const char *method;       /* NULL: "rtn"; "NAME:OPTIONS" passes OPTIONS to the method */
    const char *transforms;   /* comma list: rht[:BLOCK], quarot, smoothquant[:ALPHA], awq, prescale; NULL none */
    const char *const *overrides; /* "REGEX=FORMAT" (last match wins) */
    int n_overrides;
    int pure;                 /* every quantizable tensor gets the format (no llama.cpp mix rules) */
    const char *calib_path;   /* calibration text (smoothquant, awq, imatrix, calibrated methods) */
    int64_t calib_tokens;     /* 0: 128 × 512 */
    int32_t calib_ctx;        /* 0: 512 */
    int no_imatrix;           /* 1: do not compute an imatrix from calib_path */
    const char *imatrix_path; /* importance from a file (llama.cpp .dat or GGUF imatrix) */
    const char *act;          /* activation format recorded as kvant.act (none|int8|fp8|mxfp8|mxfp4) */
    int transform_only;       /* write the transformed model unquantized (f32 tensors; AWQ still searches
                               * with the formats the policy picks) */
    int entropy_code;         /* store the codes of integer-format tensors entropy-coded (KV_TYPE_ECW version 5,
                               * `--entropy-code`; kv_ecw_packed_formats() lists the formats); GGUF only */
    kv_out_format out_format;
    uint64_t max_shard_bytes; /* HF output: safetensors shard limit (0: 5 GB) */
    uint64_t seed;
    kv_pool *pool;            /* NULL: serial */
    int quiet;                /* no progress lines */
    void (*log)(void *user, const char *msg); /* notes (fallbacks, warnings); NULL: dropped */
    void *log_user;
    int allow_requantize;     /* 1: a source with quantized tensors is accepted (llama-quantize --allow-requantize) */
    const char *recipe_json;  /* stored as kvant.quantize.recipe (GGUF), __metadata__ (safetensors) and
                               * quantization_config.kvant_recipe (HF); NULL: built from these options */
    /* Called once per written tensor in file order (llama-quantize's per-tensor lines; user = log_user). */
    void (*on_tensor)(void *user, const char *name, const char *type, int n_dims, const int64_t *shape,
                      uint64_t bytes);
    int in_memory;            /* 1: hold the whole model in fp32 even where the run could stream (tests compare
                               * the two paths byte for byte) */
    int resume;               /* a streamed calibrated run continues from the checkpoint a killed run with the same
                               * arguments and inputs left next to the output (OUT.kvresume + OUT.kvpart) */
    int test_kill_after_block;/* tests: SIGKILL this process once block N-1's checkpoint is written (0: never) */
} kv_quantize_opts;

typedef struct kv_quantize_report {
    int64_t n_tensors;        /* tensors written */
    int64_t n_quantized;      /* tensors stored in a format other than their source type or f32 */
    int64_t n_fallback;       /* tensors whose row length forced a fallback format */
    int64_t n_params;         /* elements of all tensors */
    uint64_t tensor_bytes;    /* bytes of tensor data */
    uint64_t file_bytes;
    double bpw;               /* tensor_bytes · 8 / n_params */
    double seconds;
    char transforms[128];     /* the transforms applied, in order ("" when none) */
    kv_hf_write_report hf;    /* HF output: layout, shards */
    int streamed;             /* 1: tensors went one at a time from the source to the output, 2: one decoder
                               * block at a time (calibrated methods; docs/quantize.md "Memory"); 0: the whole
                               * model was held in fp32 */
    uint64_t peak_rss_bytes;  /* the process's peak resident set at the end of the run (getrusage) */
    int llama_cpp_runs;       /* 1: llama.cpp loads the output and computes what kvant does */
    char llama_cpp_why[256];  /* why not (or a caveat when it runs): the first reason found */
} kv_quantize_report;

kv_status kv_quantize_model(const char *model_path, const char *out_path, const kv_quantize_opts *opts,
                            kv_quantize_report *report, kv_error *err);
/* Everything kv_quantize_model refuses before reading weights (unknown method options, a method without what it
 * needs, option conflicts, missing inputs, an unwritable output directory, an already-quantized source without
 * allow_requantize), without doing any of the work: a front end calls it before its own slow steps. */
kv_status kv_quantize_check(const char *model_path, const char *out_path, const kv_quantize_opts *opts,
                            kv_error *err);
/* Maps --act names to the format used for simulated activation quantization ("int8" -> per-token int8 ...);
 * NULL for "none"; KV_EINVAL for unknown names (listing the valid ones). */
kv_status kv_act_format(const char *act, kv_format *out, int *is_none, kv_error *err);
/* Applies the online transforms a quantized file records (kvant.transform.NAME.rht_block / rht_seed) to a
 * model loaded from it (kv_model_set_rht on each weight). A no-op for files without them. */
kv_status kv_model_apply_transforms(kv_model *m, const kv_model_file *mf, kv_error *err);
/* KVANT-SECTION quantize END */

/* ============================================================================================== */
/* algos: error compensation (GPTQ, MR-GPTQ, WaterSIC, LLM.int8) (src/algos)                        */
/* ============================================================================================== */
/* KVANT-SECTION algos BEGIN */
/* Matrix-level methods: W [rows × cols] row-major fp32 (a linear layer, rows = out_features), H [cols × cols]
 * fp64 = Σ x·xᵀ over calibration inputs x (kv_hessian_*). docs/methods.md. */

/* GPTQ (Frantar et al. 2022, arXiv 2210.17323, Alg. 1 with lazy batches) onto ANY kv_format whose block
 * parameters are fixed per block: INTn groups, NF4, FP4/MX/NVFP4, ggml legacy and k-quants, HIGGS p=2 grids.
 * A format block's parameters are computed by the format's own quantizer when GPTQ first reaches one of its
 * columns (on the updated weights; static_groups: on the original W before the loop; formats with a row
 * header, e.g. a per-tensor scale, always use static parameters), then each column is rounded to that
 * block's grid; vector formats (p elements per code) are rounded p columns jointly. out gets the exact
 * format bytes (rows × kv_format_row_bytes(fmt, cols)). */
typedef struct kv_gptq_opts {
    double percdamp;     /* λ = percdamp·mean(diag H); default 0.01 */
    int32_t block;       /* lazy-update batch in columns; default 128 */
    int act_order;       /* process columns by decreasing diag(H) */
    int static_groups;   /* format-block parameters from the original W, before the loop */
    int use_importance;  /* pass diag(H) to the format's quantizer as element importance */
} kv_gptq_opts;
void kv_gptq_opts_default(kv_gptq_opts *o);

typedef struct kv_gptq_stats {
    double loss;          /* tr((W−Q)·H_damped·(W−Q)ᵀ) accumulated by the algorithm */
    double damp;          /* λ finally added to diag(H) */
    double damp_factor;   /* λ / (percdamp·mean diag H): 1 unless H needed extra damping */
    int64_t dead_cols;    /* inputs with H_ii = 0 (their weights are zeroed) */
    int static_params;    /* 1 when block parameters were computed before the loop */
    int32_t unit;         /* elements coded jointly (2 for HIGGS p=2) */
    char warning[256];    /* "" or e.g. "H not positive definite: damping raised 100x to 0.42" */
} kv_gptq_stats;

kv_status kv_gptq_quantize(const kv_format *fmt, const float *w, int64_t rows, int64_t cols, const double *h,
                           const kv_gptq_opts *opts, void *out, kv_gptq_stats *stats, kv_pool *pool,
                           kv_error *err);

/* tr((W−Q)·H·(W−Q)ᵀ) (fp64). */
double kv_hessian_loss(const float *w, const float *q, int64_t rows, int64_t cols, const double *h,
                       kv_pool *pool);
/* h [cols × cols] += xᵀ·x for x [ntok × cols]; deterministic for any thread count. KV_EINVAL naming
 * `what` (e.g. "blk.3.attn_q input") when x holds NaN/Inf. */
kv_status kv_hessian_add(double *h, const float *x, int64_t ntok, int64_t cols, const char *what, kv_pool *pool,
                         kv_error *err);

/* `kvant quantize --method NAME[:OPTIONS]` entries (kv_quant_method.run; all need --calib). They calibrate
 * layer by layer (GPTQ's sequential protocol): each block's H from the outputs of the already-quantized
 * blocks. The model in the context is the pipeline's calibration copy: its weights are replaced by the
 * quantized ones as calibration proceeds. Options (comma-separated):
 *   gptq: act-order, static, importance, damp=F (0.01), block=N (128), save-hessians=DIR, load-hessians=DIR
 *   watersic: bits=R (target rate incl. side information) or step=C, damp=F (1e-4), no-rescale, only=TEXT
 *     (matrices whose name contains TEXT; the rest rounded to nearest), store=ecw|decoded, ecw-dir=DIR (also
 *     writes each container as DIR/NAME.kvec), save-/load-hessians. The decoder linears are stored as
 *     KV_TYPE_ECW containers (job out_data); store=decoded keeps the old layout (Ŵ in --format f16|f32). */
kv_status kv_method_gptq(kv_quant_method_ctx *c, kv_error *err);
kv_status kv_method_watersic(kv_quant_method_ctx *c, kv_error *err);
/* mr-gptq (MR-GPTQ, arXiv 2509.23202): with --transform rht:G (G = the format's group), GPTQ on the rotated
 * weights with the format's scales fixed before the loop. Options: act-order, damp=F, save-/load-hessians. */
kv_status kv_method_mrgptq(kv_quant_method_ctx *c, kv_error *err);

/* WaterSIC (Lifar, Savkin, Ordentlich, Polyanskiy, arXiv 2603.04956; egorlifar/watersic zsic.py): in the
 * Cholesky basis of Σ_X (L lower, Y = W·L) every column is quantized with a scalar uniform quantizer of step
 * c in Y space (so α_i = c / L_ii on weights: rate is allocated by reverse waterfilling on the Cholesky
 * diagonal), interference is cancelled successively from the last column to the first, each column gets its
 * LMMSE gain, then row/column rescalers are fitted by alternating least squares. The step c is searched (secant
 * on log c) so that the rate — entropy of the pooled integer codes plus the fp16 side information — hits
 * target_bits. Ŵ = row_scale[r] · z[r][i] · col_step[i] (fp16 side information). */
typedef struct kv_watersic_opts {
    double target_bits;  /* bits per weight incl. side information (> 0), or 0 with step > 0 */
    double step;         /* fixed c (no search) when > 0 */
    double percdamp;     /* λ = percdamp·mean(diag H); default 1e-4 */
    int rescale;         /* fit row/column rescalers (default 1) */
    int max_search;      /* rate search iterations (default 12) */
} kv_watersic_opts;
void kv_watersic_opts_default(kv_watersic_opts *o);

typedef struct kv_watersic_result {
    int32_t *z;          /* rows × cols integer codes */
    uint16_t *col_step;  /* cols fp16 */
    uint16_t *row_scale; /* rows fp16 */
    float *wq;           /* rows × cols dequantized weights (exactly what the decoder gives) */
    double step;         /* c */
    double entropy_bits; /* code bits per weight: entropy of z within the container's column groups */
    double side_bits;    /* side information per weight (steps, scales, code table) */
    double rate_bits;    /* entropy_bits + side_bits */
    double distortion;   /* tr((W−Ŵ)·H·(W−Ŵ)ᵀ) / (rows·cols) with the given H */
    double bound;        /* Gaussian bound D(R = entropy_bits) for the same H (reverse waterfilling) */
    double gap_bits;     /* ½·log2(distortion / bound) */
    int64_t dead_cols;
    int search_iters;
} kv_watersic_result;
kv_status kv_watersic_quantize(const float *w, int64_t rows, int64_t cols, const double *h,
                               const kv_watersic_opts *opts, kv_watersic_result *res, kv_pool *pool,
                               kv_error *err);
void kv_watersic_result_free(kv_watersic_result *r);

/* Entropy-coded weights (docs/FORMAT.md "kvant ECW"): codes z with a static rANS coder (one frequency table per
 * group of columns of similar spread), fp16 column steps and row scales. *out is malloc'd. Decoding fills z
 * and/or w (either may be NULL). kv_ecw_rate: the code bits per weight the coder approaches (empirical
 * entropy within the column groups) and the side information per weight of the container. */
double kv_entropy_bits(const int32_t *z, int64_t n); /* pooled empirical entropy, bits per symbol */
kv_status kv_ecw_rate(const int32_t *z, int64_t rows, int64_t cols, double *code_bits, double *side_bits,
                      kv_error *err);
kv_status kv_ecw_encode(const int32_t *z, int64_t rows, int64_t cols, const uint16_t *col_step,
                        const uint16_t *row_scale, uint8_t **out, size_t *out_size, kv_error *err);
kv_status kv_ecw_decode(const uint8_t *data, size_t size, int64_t *rows, int64_t *cols, int32_t *z, float *w,
                        kv_error *err);
/* GGUF tensor type of an ECW container (docs/FORMAT.md "kvant ECW"): the tensor's data is the container, its
 * byte size the u64 metadata KV_META_ECW_BYTES_FMT, its logical shape [rows, cols]; string metadata
 * "kvant.tensor.<name>.format" = "ecw". Stored in kvant (Hugging Face) row order: no q/k permutation. */
#define KV_TYPE_ECW 1031u
/* GGUF tensor type of a weight rotated for an online transform (its input is rotated at run time:
 * kvant.transform.<name>.rht_block / rht_seed, --transform rht / quarot) whose rows are those of a ggml type
 * (q4_0, q8_0, mxfp4, f16, ...): the string metadata "kvant.tensor.<name>.format" names that ggml format and the
 * bytes are exactly its rows. Under the plain ggml id llama.cpp would run the weight without the rotation (wrong
 * output, no warning); it does not know this id and refuses the file (docs/FORMAT.md "1032"). */
#define KV_TYPE_ROTATED 1032u
#define KV_ECW_FORMAT_NAME "ecw"
#define KV_META_ECW_BYTES_FMT "kvant.tensor.%s.bytes"
/* Version 5 containers ("Huffman-GPTQ" baseline, `kvant quantize --entropy-code`): the integer codes of a
 * fixed-size format's packed rows (rows × kv_format_row_bytes) rANS-coded per column group, the format's row
 * headers and block parameters (scales, minima) kept raw; decoding rebuilds the packed rows exactly and applies
 * the format's dequantize. KV_EUNSUPPORTED naming the supported formats for others. */
int kv_ecw_packed_supported(const kv_format *fmt);
const char *kv_ecw_packed_formats(void); /* for messages: "int{n}_g{g}_{sym,asym}[_f32][_mse] (n = 2..8, ...)" */
kv_status kv_ecw_encode_packed(const kv_format *fmt, const void *packed, int64_t rows, int64_t cols, uint8_t **out,
                               size_t *out_size, kv_error *err);
/* Decodes a container of either version into w [rows × cols] fp32, after checking that it holds exactly a
 * rows × cols matrix; streams are decoded in parallel on pool (may be NULL), results identical. Error offsets
 * are relative to data. */
kv_status kv_ecw_decode_f32(const uint8_t *data, size_t size, int64_t rows, int64_t cols, float *w, kv_pool *pool,
                            kv_error *err);
/* Checks the container header (magic, version 4 or 5, sizes, frequency tables, finite side information, stream
 * sizes, header CRC-32; not the streams' contents) and returns its dimensions and version; O(header bytes).
 * kv_ecw_decode with z and w both NULL verifies everything (streams' CRC-32, rANS states, exact ends). */
kv_status kv_ecw_check(const uint8_t *data, size_t size, int64_t *rows, int64_t *cols, int *version, kv_error *err);
/* A model file tensor of type KV_TYPE_ECW decoded to fp32 (kv_tensor_nelements floats); errors name the file,
 * the absolute byte offset and the tensor. */
kv_status kv_ecw_tensor_to_f32(const kv_model_file *mf, const kv_tensor *t, float *dst, kv_pool *pool,
                               kv_error *err);

/* LLM.int8() (arXiv 2208.07339 §3.2): y [ntok × rows] = x [ntok × cols] · wᵀ with the input columns whose
 * activations reach threshold (6.0) in fp16 (x and w) and the rest in vector-wise int8 (absmax per x row and
 * per w row over the other columns, int32 accumulation). outlier_mask (cols bytes, from calibration) or NULL:
 * detect the columns in x. *n_outliers (may be NULL) gets their count. */
kv_status kv_llmint8_matmul(const float *x, int64_t ntok, const float *w, int64_t rows, int64_t cols, float threshold,
                            const uint8_t *outlier_mask, float *y, int64_t *n_outliers, kv_pool *pool, kv_error *err);

/* `kvant quantize --method llm-int8[:threshold=F,head]` (docs/methods.md "LLM.int8()"): one calibration pass
 * marks the input columns of every decoder linear (and of output.weight with `head`; off by default, as
 * bitsandbytes skips lm_head) where some calibration token has |x| >= threshold (6.0); q/k/v share their input,
 * gate/up too. Each weight is stored as KV_LLMINT8_FORMAT (per-row absmax over the other columns, codes
 * round(127·w/absmax) half to even, outlier columns' codes 0) plus the outlier columns in fp16 (docs/FORMAT.md
 * "kvant LLM.int8() weights"). Other jobs are rounded to nearest. Needs --calib and GGUF output. */
#define KV_LLMINT8_FORMAT "int8_g0_sym_f32"
kv_status kv_method_llmint8(kv_quant_method_ctx *c, kv_error *err);
/* Parses the method's options ("threshold=F,head"): KV_EINVAL naming a bad value or an unknown option. */
kv_status kv_llmint8_parse_options(const char *options, float *threshold, int *head, kv_error *err);
/* One weight w [rows × cols] with outlier mask (cols bytes, 1 = outlier): dst gets rows × (4 + cols) bytes of
 * KV_LLMINT8_FORMAT, outl (may be NULL when no column is an outlier) rows × n_outliers fp16, row-major. */
kv_status kv_llmint8_quantize(const float *w, int64_t rows, int64_t cols, const uint8_t *mask, void *dst,
                              uint16_t *outl, kv_error *err);
/* y [ntok × w->rows] = x [ntok × w->cols] · Wᵀ (+ bias) for a weight with llmint8 set: each token row's
 * non-outlier columns in int8 (absmax/127 scale, half-to-even rounding), int32 dot products with the weight
 * codes, plus the outlier columns as fp16(x)·fp16(w) through kvant's fp32 GEMM (so with every column an
 * outlier the result is exactly kv_weight_matmul of the fp16-rounded operands). The int8 scale of a token row
 * depends on that row only; results are identical for every thread count. KV_EINVAL on a non-finite input. */
kv_status kv_llmint8_weight_matmul(const kv_weight *w, const float *x, int64_t ntok, float *y, kv_pool *pool,
                                   kv_error *err);
/* Attaches a GGUF's kvant.llmint8.* entries to the weights of a model loaded from it (kv_model_load calls it;
 * a no-op for other files). Malformed entries: KV_EFORMAT naming the file and tensor. */
kv_status kv_llmint8_attach(kv_model *m, const kv_model_file *mf, kv_error *err);
/* The outlier columns a file records, per tensor (for reports). */
typedef struct kv_llmint8_info {
    char name[160];
    int64_t cols, n_outliers;
} kv_llmint8_info;
typedef struct kv_llmint8_summary {
    double threshold;         /* kvant.llmint8.threshold (NAN when absent) */
    int64_t n_tensors;
    kv_llmint8_info *tensors; /* owned, file order */
    int64_t total, max;       /* outlier columns summed over the tensors, and the largest count */
    int64_t max_index;        /* tensor with the largest count (-1 when none) */
} kv_llmint8_summary;
kv_status kv_llmint8_summary_read(const kv_model_file *mf, kv_llmint8_summary *out, kv_error *err);
void kv_llmint8_summary_free(kv_llmint8_summary *s);
/* KVANT-SECTION algos END */

/* ============================================================================================== */
/* algos: bit allocation (src/algos/allocation)                                                    */
/* ============================================================================================== */
/* KVANT-SECTION alloc BEGIN */
/* Bit allocation across layers as a multiple-choice knapsack (HIGGS, arXiv 2411.17525 §5): choose one candidate
 * format per layer minimising sum_l cost[l][c] subject to sum_l size_bits[l][c] <= budget_bits. */
typedef struct kv_alloc_problem {
    int n_layers;
    int n_cand;
    const double *size_bits;  /* [n_layers * n_cand] exact bits of layer l stored in candidate c; < 0: not allowed */
    const double *cost;       /* [n_layers * n_cand] predicted loss, e.g. alpha_l * t_l(c) */
    double budget_bits;
    int resolution;           /* DP budget buckets (0: default 20000); sizes round up, so results stay feasible */
} kv_alloc_problem;

typedef struct kv_alloc_result {
    double total_cost;
    double total_bits;
    double min_bits;          /* smallest achievable size (every layer at its smallest allowed candidate) */
    double max_bits;          /* size with every layer at its largest candidate */
} kv_alloc_result;

/* Exact DP over the discretised budget after removing dominated candidates; choice[l] gets the candidate index.
 * A budget below min_bits fails with KV_ERANGE and a message naming the feasible range. */
kv_status kv_alloc_dp(const kv_alloc_problem *p, int *choice, kv_alloc_result *res, kv_error *err);
/* Reverse waterfilling: target rate b_l = mean + 1/2 log2(w_l / geometric mean of w) per layer, where
 * w_l = cost of layer l at its median candidate scaled to unit size (the effective variance), then the closest
 * allowed candidate, then a greedy repair to meet the budget. For comparison with the DP. */
kv_status kv_alloc_waterfill(const kv_alloc_problem *p, const double *params, int *choice, kv_alloc_result *res,
                             kv_error *err);
/* Layer sensitivities for the linearity theorem (src/algos/sensitivity.c; docs/sensitivity.md):
 * PPL(W + noise_l) - PPL(W) ~= alpha_l * t_l, t_l = ||noise_l||^2 / ||W_l||^2, fitted per linear layer by
 * least squares through the origin over a few injected noise levels. */
typedef enum kv_sens_metric { KV_SENS_PPL = 0, KV_SENS_KLD = 1 } kv_sens_metric;
#define KV_SENS_MAX_LEVELS 8

typedef struct kv_sens_layer {
    char name[160];           /* canonical tensor name, e.g. blk.3.ffn_down.weight */
    int layer;                /* decoder layer (n_layer for the head) */
    kv_linear_id which;
    int64_t params;
    int n_levels;
    double t[KV_SENS_MAX_LEVELS];     /* injected relative MSE */
    double d_ppl[KV_SENS_MAX_LEVELS]; /* PPL(noisy) - PPL(base) */
    double kld[KV_SENS_MAX_LEVELS];   /* mean KL-divergence to the base */
    double alpha;             /* slope of the chosen metric against t */
    double r2;                /* coefficient of determination of that fit */
    int done;
} kv_sens_layer;

typedef struct kv_sens_result {
    kv_sens_metric metric;
    double base_ppl;
    int64_t tokens;           /* scored tokens per evaluation */
    int n_layers;
    kv_sens_layer *layers;    /* owned */
} kv_sens_result;

typedef struct kv_sens_opts {
    const double *levels;     /* NULL: 0.01, 0.02, 0.04, 0.08 */
    int n_levels;
    kv_sens_metric metric;    /* KLD (default in the CLI) is far less noisy than a PPL difference */
    int32_t ctx;              /* evaluation windows (hf style); 0: 512 */
    int64_t chunks;           /* windows; 0: all the ids allow */
    uint64_t seed;
    int include_head;         /* also the output head */
    kv_progress *progress;    /* advanced per layer; may be NULL */
    /* called after each batch of layers (from the caller's thread), e.g. to save a resumable file */
    kv_status (*checkpoint)(void *user, const kv_sens_result *res, kv_error *err);
    void *user;
} kv_sens_opts;

/* res may hold layers already done (loaded with kv_sens_load): those are kept and skipped. Threads work on
 * different layers at once, each with its own copy of the runnable model; results do not depend on the
 * thread count. */
kv_status kv_sensitivity_run(const kv_model_file *mf, const int32_t *ids, int64_t n_ids, const kv_sens_opts *opts,
                             kv_pool *pool, kv_sens_result *res, kv_error *err);
kv_status kv_sens_save(const kv_sens_result *res, const char *path, kv_error *err);
kv_status kv_sens_load(const char *path, kv_sens_result *res, kv_error *err);
void kv_sens_free(kv_sens_result *res);
/* Clamp non-positive or non-finite alphas to a small positive value; returns how many were clamped and calls
 * warn(user, message naming the layer) for each. */
int kv_sens_sanitize(kv_sens_result *res, void (*warn)(void *user, const char *msg), void *user);

/* Error table: for every linear layer of m and every candidate format, the relative error
 * t = ||Q(W) - W||^2 / ||W||^2 of round-to-nearest quantization and the exact stored size in bits. With
 * rht_block > 0 the rows are first rotated by the online randomized Hadamard the quantize pipeline uses
 * (seed per tensor: kv_rht_tensor_seed(seed, name)); t is the same in either basis. keep_data = 1 keeps the
 * packed rows so that configurations can be evaluated without re-quantizing. */
typedef struct kv_err_table {
    int n_layers, n_formats;
    char (*names)[160];       /* n_layers tensor names */
    int *layer;               /* n_layers decoder layer indices */
    kv_linear_id *which;
    int64_t *params;          /* n_layers */
    kv_format *formats;       /* n_formats */
    double *t;                /* [n_layers * n_formats]; < 0 when the format cannot hold the layer */
    double *size_bits;        /* [n_layers * n_formats] */
    void **data;              /* [n_layers * n_formats] packed rows or NULL */
    int32_t rht_block;
    uint64_t seed;
} kv_err_table;
kv_status kv_err_table_build(const kv_model *m, const char *const *formats, int n_formats, int include_head,
                             int32_t rht_block, uint64_t seed, int keep_data, kv_pool *pool, kv_err_table *out,
                             kv_error *err);
void kv_err_table_free(kv_err_table *t);

typedef enum kv_alloc_mode { KV_ALLOC_LINEARITY = 0, KV_ALLOC_WATERFILL = 1, KV_ALLOC_UNIFORM = 2 } kv_alloc_mode;
/* choice[l] = index into the table's formats for each layer, minimising sum alpha_l t_l under bits/weight
 * (exact bits incl. scales, over the table's layers). The alphas must name exactly the table's layers;
 * KV_ALLOC_UNIFORM uses none (alphas may be NULL): the least-error single format that fits. */
kv_status kv_alloc_plan(const kv_err_table *t, const kv_sens_result *alphas, double bits, kv_alloc_mode mode,
                        int *choice, kv_alloc_result *res, kv_error *err);
/* Sets the model's weights to the table's packed data for a choice (and the matching online rotations).
 * The table must have been built with keep_data = 1 from this model. */
kv_status kv_err_table_apply(const kv_err_table *t, const int *choice, kv_model *m, kv_error *err);

/* Linearity check (HIGGS Thm. 1): n_configs random per-layer format maps from the table; predicted
 * PPL = base + sum alpha_l t_l versus measured PPL (or KLD with KV_SENS_KLD). */
typedef struct kv_lincheck {
    int n;
    double *predicted, *measured; /* owned */
    double *bits;             /* bits/weight of each configuration */
    double correlation;       /* Pearson r */
    double mean_rel_err;      /* mean |pred - meas| / |meas - base|: error relative to the measured change */
    double mean_rel_err_total;/* mean |pred - meas| / meas: error relative to the metric itself */
    double base;              /* the metric for the unquantized model (PPL; 0 for KLD) */
} kv_lincheck;
kv_status kv_linearity_check(const kv_model_file *mf, const kv_err_table *t, const kv_sens_result *alphas,
                             const int32_t *ids, int64_t n_ids, int32_t ctx, int64_t chunks, int n_configs,
                             uint64_t seed, kv_pool *pool, kv_lincheck *out, kv_error *err);
void kv_lincheck_free(kv_lincheck *c);
/* The allocation behind `kvant quantize --bits B --allocate linearity|waterfill|uniform --alphas F --formats L`:
 * builds the error table of the model (rotated by rht_block when > 0), solves the plan and returns one
 * "^NAME$=FORMAT" override per linear layer (malloc'd strings; free each and the array). */
typedef struct kv_alloc_report {
    kv_alloc_result result;
    double bits_per_weight;   /* over the allocated layers */
    int n_layers;
} kv_alloc_report;
kv_status kv_alloc_overrides(const char *model_path, const char *alphas_path, const char *const *formats,
                             int n_formats, double bits, kv_alloc_mode mode, int32_t rht_block, uint64_t seed,
                             kv_pool *pool, char ***specs, int *n_specs, kv_alloc_report *rep, kv_error *err);
/* "linearity", "waterfill", "uniform" */
kv_status kv_alloc_mode_parse(const char *s, kv_alloc_mode *out, kv_error *err);
/* KVANT-SECTION alloc END */

#ifdef __cplusplus
}
#endif
#endif /* KVANT_H */
