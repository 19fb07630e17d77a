/* pipeline.h — the pieces of kv_quantize_model (src/algos/quantize.c, the driver) shared by its steps:
 * quantize_calib.c (calibration data), transform_set.c (--transform), quantize_formats.c (a format per
 * tensor), quantize_bytes.c (the method step), quantize_write.c (the output file). Internal to libkvant. */
#ifndef KV_ALGOS_PIPELINE_H
#define KV_ALGOS_PIPELINE_H

#include "algos/quantize.h"
#include "io/gguf.h"
#include <stdarg.h>
#include <stdio.h>

/* A log line through opts->log (nothing when there is no log callback). */
static inline void kv_qnote(const kv_quantize_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void kv_qnote(const kv_quantize_opts *o, const char *fmt, ...) {
    if (!o->log) return;
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    o->log(o->log_user, buf);
}

static inline int kv_format_is_plain(const kv_format *f) {
    return f->type == KV_TYPE_F32 || f->type == KV_TYPE_F16 || f->type == KV_TYPE_BF16;
}

/* ---- calibration data (quantize_calib.c) ---- */

/* [BOS] + encode(o->calib_path), then calib_tokens / ctx windows of ctx tokens at starts drawn from
 * kv_rng(o->seed) (GPTQ's datautils: random windows of the calibration text). */
kv_status kv_qcalib_tokens(const kv_model_file *mf, const kv_quantize_opts *o, int32_t ctx, int32_t **ids_out,
                           int64_t *n_out, kv_error *err);
/* SmoothQuant's activation statistics on the unquantized model m. */
kv_status kv_qcollect_act_stats(const kv_model *m, const int32_t *ids, int64_t n, int32_t ctx, kv_pool *pool,
                                kv_act_stats *s, kv_error *err);
/* The importance of every linear of wm in its stored (rotated) basis, from the forward passes of m. */
kv_status kv_qcollect_imatrix(const kv_model *m, kv_wmodel *wm, const int32_t *ids, int64_t n, int32_t ctx,
                              kv_pool *pool, kv_imatrix *im, kv_progress *prog, kv_error *err);
/* The same bits while streaming: m borrows mf's weights (kv_model_load) and wm is lazy (rht planned, not
 * applied); each decoder block's linears are read in fp32 for its turn and m gets its own weights back after
 * it. prog advances per block (n_layer + 1 steps, the head last). */
kv_status kv_qstream_imatrix(const kv_model_file *mf, kv_model *m, kv_wmodel *wm, const int32_t *ids, int64_t n,
                             int32_t ctx, kv_pool *pool, kv_imatrix *im, kv_progress *prog, kv_error *err);

/* ---- --transform (transform_set.c) ---- */

typedef struct kv_transform_set {
    int rht, quarot, fold, smooth, awq, prescale;
    int32_t rht_block;
    float alpha;
} kv_transform_set;

kv_status kv_transform_set_parse(const char *list, kv_transform_set *ts, kv_error *err);
/* prescale: the _ps variant of an MX format name. */
kv_status kv_prescale_name(const char *fmt, char *out, size_t n, kv_error *err);

/* ---- the typed recipe (quantize_recipe.c) ---- */

typedef struct kv_qrecipe {
    const kv_quant_method *meth;
    kv_method_values mv;      /* its options, validated */
    const char *method_opts;  /* the text they came from (kv_quant_method_ctx.options) */
    kv_transform_set ts;
    kv_format actf;           /* --act (act_none: none) */
    int act_none;
    const char *format;       /* --format, or the method's own format, or q4_k_m */
} kv_qrecipe;

/* Parses and checks everything in o that needs no model (o->no_imatrix is set for methods that compute no
 * importance): the method and its options, transforms, --act, the inputs that must exist, the combinations
 * that cannot work, the policy (format, overrides) into *pol (kv_policy_free), the output directory. */
kv_status kv_qrecipe_parse(const char *out_path, kv_quantize_opts *o, kv_qrecipe *r, kv_policy *pol, kv_error *err);
/* An already-quantized source is refused unless o->allow_requantize (llama-quantize's rule). */
kv_status kv_qcheck_source(const kv_model_file *mf, const kv_quantize_opts *o, kv_error *err);
/* The recipe as a JSON object (o->recipe_json when given), malloc'd; NULL when out of memory. */
char *kv_qrecipe_json(const kv_quantize_opts *o, const kv_qrecipe *r);

/* ---- one output tensor, from the format choice to the file ---- */

typedef struct kv_qtensor {
    kv_wtensor *wt;
    kv_policy_choice choice;
    kv_format fmt;
    uint32_t type;
    const void *data;         /* bytes in kvant (HF) row order */
    void *owned;
    uint64_t nbytes;
    size_t row_bytes;
    int spilled;              /* streamed calibration: the bytes are in the spill file at spill_off */
    uint64_t spill_off;
    uint64_t packed_nbytes;   /* streamed --entropy-code: > 0 when the tensor is coded as it is produced from */
    uint32_t packed_type;     /* packed rows of this type and size (type is then KV_TYPE_ECW) */
} kv_qtensor;

/* ---- checks of the inputs (quantize_checks.c) ---- */

/* Every entry of an imatrix file must name a matrix of wm and hold one value per input column: KV_EINVAL naming
 * the entry otherwise (an imatrix of another model would silently change nothing). */
kv_status kv_qcheck_imatrix(const kv_imatrix *im, kv_wmodel *wm, const char *path, kv_error *err);
/* One warning (through o->log) for each option that has no effect on the tensors it reaches: --imatrix on
 * formats that round without importance, gptq/mr-gptq on formats it cannot compensate, rht blocks reduced to
 * what the input width allows, overrides that match no tensor. */
void kv_qwarn_ignored_input(const kv_quantize_opts *o, const kv_policy *pol, const kv_transform_set *ts,
                            const kv_quant_method *meth, const kv_wmodel *wm, const kv_qtensor *ot,
                            const kv_imatrix *im_file);

/* ---- format choice (quantize_formats.c) ---- */

/* Chooses every tensor's format (policy + prescale) and fills ot[] (wm->n entries). */
kv_status kv_qchoose_formats(const kv_model_file *mf, kv_wmodel *wm, kv_policy *pol, const kv_transform_set *ts,
                             const kv_quantize_opts *o, kv_qtensor *ot, kv_quantize_report *rep, kv_error *err);
/* kv_format_of_fn for AWQ: user is a { kv_qtensor *ot; int64_t n; }. */
const kv_format *kv_qawq_format_of(void *user, const char *name);

/* ---- the method step (quantize_bytes.c) ---- */

kv_status kv_qproduce_bytes(const kv_model_file *mf, kv_wmodel *wm, kv_qtensor *ot, const kv_quant_method *meth,
                            kv_quant_method_ctx *mc, const kv_imatrix *im, kv_progress *prog, kv_error *err);
/* --entropy-code's choice for one tensor (*code 0: left as it is, 1: coded); unsupported formats are refused. */
kv_status kv_qentropy_select(const kv_qtensor *x, int *code, kv_error *err);
kv_status kv_qentropy_code(kv_qtensor *ot, int64_t n, const kv_quantize_opts *o, kv_error *err);

/* ---- output (quantize_write.c) ---- */

typedef struct kv_qrun_info {
    const kv_policy *policy;
    const char *method;
    const char *transforms;
    const char *act;
    uint64_t seed;
    const char *recipe_json;  /* kvant.quantize.recipe (NULL: not written) */
} kv_qrun_info;

typedef struct kv_qextra_item {
    char *name;               /* metadata key or tensor name */
    int is_tensor;
    kv_gguf_vtype elem_type;  /* metadata */
    int64_t n;                /* metadata: array length, -1 for a scalar */
    int n_dims;               /* tensor */
    int64_t shape[4];
    uint32_t type;
    void *data;
    uint64_t nbytes;
} kv_qextra_item;

typedef struct kv_qextra {
    kv_qextra_item *it;
    int64_t n, cap;
} kv_qextra;

/* kv_quant_method_ctx.add_meta / add_tensor with user = a kv_qextra. */
kv_status kv_qextra_add_meta(void *user, const char *key, kv_gguf_vtype elem_type, const void *data, int64_t n,
                             kv_error *err);
kv_status kv_qextra_add_tensor(void *user, const char *name, int n_dims, const int64_t *shape, uint32_t type,
                               const void *data, kv_error *err);
void kv_qextra_free(kv_qextra *x);
typedef struct kv_qstream kv_qstream;
/* Sorts ot[] into llama-quantize's order. ss (NULL: every ot[i].data is in memory) makes the tensors' bytes
 * come from the streaming producer instead (quantize_stream.c). */
kv_status kv_qwrite_gguf(const kv_model_file *mf, const kv_wmodel *wm, kv_qtensor *ot, int64_t n,
                         const kv_qrun_info *ri, const kv_qextra *xo, kv_qstream *ss, const char *path,
                         kv_progress *prog, kv_error *err);
/* llama.cpp's q/k rotary row permutation: the heads of a tensor, 0 when it is stored as is. */
int kv_qqk_heads(const kv_model_file *mf, const kv_hparams *hp, const char *name);

/* ---- streaming (quantize_stream.c; docs/quantize.md "Memory") ---- */

struct kv_qstream {
    const kv_model_file *mf;
    const kv_hparams *hp;
    const kv_quant_method_ctx *mc;  /* pool, for the round-to-nearest jobs */
    const kv_imatrix *im;
    int64_t batch;            /* tensors quantized at once (one per thread) */
    int needs_calib;          /* calibrated method: its matrices are never kept as stored */
    int spill_fd;             /* the calibrated blocks' bytes (-1: none) */
    const char *spill_path;
    kv_progress *prog;        /* advanced per tensor written */
    /* set by kv_qstream_add */
    kv_qtensor *ot;
    int64_t n, done;
    uint8_t **bytes;
    struct kv_qstream_ref { struct kv_qstream *s; int64_t i; } *refs;
};
/* --entropy-code on the streamed path: a size pass that quantizes and codes every tensor the in-memory
 * kv_qentropy_code would (same refusals, same note), keeps only each container's size (the header needs it)
 * and marks the tensor to be coded again when the writer asks for it. Peak: one batch of tensors. */
kv_status kv_qstream_entropy_sizes(kv_qstream *ss, kv_qtensor *ot, int64_t n, const kv_quantize_opts *o,
                                   kv_error *err);
/* Adds ot[0..n) (in file order) to the writer as tensors produced on demand. */
kv_status kv_qstream_add(kv_qstream *ss, kv_gguf_writer *w, kv_qtensor *ot, int64_t n, kv_error *err);
void kv_qstream_free(kv_qstream *ss);

typedef struct kv_qspill kv_qspill;
/* The calibrated method (gptq, mr-gptq, watersic) on the decoder linears, block by block from the source,
 * each block's bytes spilled to OUT.kvpart and checkpointed in OUT.kvresume (--resume continues from it).
 * *out gets the spill state (kv_qspill_close frees it; on success it also removes the files). */
kv_status kv_qstream_calibrate(const char *model_path, const kv_model_file *mf, kv_wmodel *wm, kv_qtensor *ot,
                               const kv_quant_method *meth, kv_quant_method_ctx *mc, const kv_imatrix *im,
                               const kv_quantize_opts *o, const char *format, const char *out_path,
                               kv_progress *prog, kv_qspill **out, kv_error *err);
int kv_qspill_fd(const kv_qspill *cs);
const char *kv_qspill_path(const kv_qspill *cs);
const char *kv_qspill_state_path(const kv_qspill *cs);
void kv_qspill_close(kv_qspill *cs, int success);
/* The GGUF type id ot is stored under: KV_TYPE_ROTATED for a ggml-typed weight whose input is rotated online
 * (docs/FORMAT.md "1032"), else its own type. */
uint32_t kv_qstored_type(const kv_qtensor *q);
/* Whether llama.cpp can run the output (rep->llama_cpp_runs) and why not, or the caveat when it does
 * (rep->llama_cpp_why): GGUF only, no kvant type ids (formats >= 1024, ecw, weights rotated online). */
void kv_qllama_cpp_verdict(const kv_qtensor *ot, int64_t n, kv_out_format of, const char *act, const char *transforms,
                           kv_quantize_report *rep);
kv_status kv_qwrite_safetensors(kv_qtensor *ot, int64_t n, const kv_qrun_info *ri, const char *path, kv_error *err);

#endif
