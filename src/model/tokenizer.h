/* tokenizer.h — internals of kv_tokenizer shared by tokenizer.c (vocabulary, loaders, decode), tok_spm.c
 * (SentencePiece BPE encode), tok_bpe.c (byte-level BPE encode) and pretok.c (split regexes by hand).
 * Not public: the API is the tokenizer section of include/kvant.h. */
#ifndef KV_MODEL_TOKENIZER_H
#define KV_MODEL_TOKENIZER_H

#include "core/core.h"

#define KV_TOK_MAX_VOCAB (1 << 24)     /* ids must fit the float ranks of the merge engine exactly */
#define KV_TOK_MAX_PIECE 65536         /* bytes of one piece */

struct kv_tokenizer {
    kv_tokenizer_kind kind;
    int32_t n_vocab;
    /* pieces: piece i is arena[off[i] .. off[i] + len[i]) followed by a NUL */
    char *arena;
    size_t arena_len, arena_cap;
    size_t *off;
    uint32_t *len;
    float *scores;
    uint8_t *types;                    /* kv_token_type */
    /* piece -> id, open addressing; -1 = empty; the lowest id wins for duplicate pieces */
    int32_t *slots;
    size_t slot_mask;
    int32_t bos_id, eos_id, unk_id, pad_id;
    int add_bos;
    /* SentencePiece normalizer and model options */
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces, byte_fallback;
    int has_unused;                    /* resegmentation of UNUSED pieces is needed */
    /* SPM: ASCII bytes no multi-byte mergeable piece contains; no merge crosses them, so the text is
     * encoded in independent runs between them (the same result, with small heaps) */
    uint8_t isolated[128];
    /* SPM: no mergeable piece has U+2581 after another character than U+2581, so no merge crosses the
     * start of a word ("x|▁"): words are encoded independently */
    int space_cut;
    /* SPM: id of <0xNN>; BPE: id of the one-character token of byte NN (bytes_to_unicode); -1 if none */
    int32_t byte_ids[256];
    /* tokens matched in the raw text before encoding (SPM: user-defined; BPE: control and user-defined),
     * bucketed by first byte (CSR), longest first within a bucket */
    int32_t *special_ids;
    uint32_t special_start[257];
    /* byte-level BPE */
    kv_pretokenizer pretok;
    int ignore_merges;                 /* a pre-token that is a whole vocab entry is not merged (Llama-3) */
    int64_t n_merges, merges_cap;
    int32_t *merge_left, *merge_right, *merge_result; /* by rank */
    uint64_t *merge_keys;              /* open addressing on (left << 32 | right) + 1; 0 = empty */
    int32_t *merge_rank;
    size_t merge_mask;
};

/* ---- building (tokenizer.c) ---- */
kv_status kv_tok_create(kv_tokenizer_kind kind, int32_t n_vocab, kv_tokenizer **out, kv_error *err);
/* Sets piece id (each id exactly once, in any order). */
kv_status kv_tok_set_piece(kv_tokenizer *tok, int32_t id, const char *piece, size_t len, float score,
                           kv_token_type type, kv_error *err);
/* After all pieces: builds the lookup tables (and, for BPE, checks the byte alphabet). */
kv_status kv_tok_finish(kv_tokenizer *tok, kv_error *err);
/* BPE: appends the merge of rank n_merges (call after kv_tok_finish). */
kv_status kv_tok_add_merge(kv_tokenizer *tok, const char *left, size_t left_len, const char *right,
                           size_t right_len, kv_error *err);
kv_status kv_tok_finish_merges(kv_tokenizer *tok, kv_error *err);
/* -1 when absent */
int32_t kv_tok_find(const kv_tokenizer *tok, const char *piece, size_t len);
/* Merge rank of the pair (left, right), or -1; *result = the merged token. */
int64_t kv_tok_merge_rank(const kv_tokenizer *tok, int32_t left, int32_t right, int32_t *result);
/* Length of the longest special token that starts at text[0..len), or 0; *id its id. */
size_t kv_tok_match_special(const kv_tokenizer *tok, const char *text, size_t len, int32_t *id);

/* ---- growable id vector ---- */
typedef struct kv_idvec { int32_t *v; size_t n, cap; } kv_idvec;
kv_status kv_idvec_push(kv_idvec *iv, int32_t id, kv_error *err);

/* ---- the merge engine (tok_spm.c): a doubly linked list of symbols and a max-heap of candidate pairs,
 *      best key first, leftmost on ties (sentencepiece bpe_model.cc, HF tokenizers word.rs merge_all) ---- */
typedef struct kv_bpe_sym {
    int32_t start, len;                /* span of the symbol in the text being encoded */
    int32_t prev, next;                /* neighbours; -1 at the ends */
    int32_t id;                        /* token id (byte-level BPE), or -1 */
    uint8_t frozen;                    /* user-defined piece: never merged (SPM) */
} kv_bpe_sym;
typedef struct kv_bpe_pair { double key; int32_t left, right; int32_t size; int32_t result; } kv_bpe_pair;
typedef struct kv_bpe_work {
    kv_bpe_sym *syms;
    size_t n_syms, cap_syms;
    kv_bpe_pair *heap;
    size_t n_heap, cap_heap;
} kv_bpe_work;
void kv_bpe_work_free(kv_bpe_work *w);
kv_status kv_bpe_sym_push(kv_bpe_work *w, int32_t start, int32_t len, int32_t id, int frozen, kv_error *err);
/* pair_fn: 1 and (*key, *result) when symbols l and r may merge (higher key first), else 0. */
typedef int (*kv_bpe_pair_fn)(void *ctx, const kv_bpe_work *w, int32_t l, int32_t r, double *key, int32_t *result);
/* Runs the merges over w->syms[0..n_syms) (already linked in order). on_merge (may be NULL) sees each
 * applied pair first. */
typedef void (*kv_bpe_merge_fn)(void *ctx, const kv_bpe_work *w, const kv_bpe_pair *p);
kv_status kv_bpe_run(kv_bpe_work *w, kv_bpe_pair_fn pair_fn, kv_bpe_merge_fn on_merge, void *ctx, kv_error *err);

/* ---- encoders ---- */
kv_status kv_spm_encode(const kv_tokenizer *tok, const char *text, size_t len, kv_idvec *out, kv_error *err);
kv_status kv_bpe_encode(const kv_tokenizer *tok, const char *text, size_t len, kv_idvec *out, kv_error *err);

/* ---- pre-tokenizers (pretok.c): calls emit for each pre-token [start, end) of text, in order ---- */
typedef kv_status (*kv_pretok_emit_fn)(void *ctx, size_t start, size_t end, kv_error *err);
kv_status kv_pretok_split(kv_pretokenizer kind, const char *text, size_t len, kv_pretok_emit_fn emit, void *ctx,
                          kv_error *err);

/* ---- byte-level alphabet (GPT-2 encoder.py bytes_to_unicode) ---- */
uint32_t kv_bpe_byte_to_cp(uint8_t b);
int kv_bpe_cp_to_byte(uint32_t cp);    /* -1 when cp is not in the alphabet */

/* ---- SentencePiece protobuf ---- */
kv_status kv_spm_parse(const uint8_t *data, size_t size, const char *name, kv_tokenizer **out, kv_error *err);

#endif
