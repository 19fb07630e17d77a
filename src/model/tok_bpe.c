/* tok_bpe.c — byte-level BPE encoding: special (added) tokens are cut out of the raw text first, the rest is
 * split by the pre-tokenizer (pretok.c), and each pre-token's bytes, as the one-character tokens of GPT-2's
 * bytes_to_unicode alphabet, are merged by lowest merge rank, leftmost first on ties.
 * Sources: openai/gpt-2 src/encoder.py (bytes_to_unicode, Encoder.bpe), HF tokenizers models/bpe/word.rs
 * (merge_all priority queue) and added_vocabulary.rs (added tokens split first), BPE ignore_merges
 * (a pre-token that is itself a vocabulary entry is emitted whole: Llama-3). */
#include "model/tokenizer.h"
#include "model/unicode.h"

typedef struct bpe_ctx {
    const kv_tokenizer *tok;
    const char *text;
    kv_idvec *out;
    kv_bpe_work work;
    char *mapped;               /* the pre-token in the byte-level alphabet (ignore_merges lookups) */
    size_t mapped_cap;
} bpe_ctx;

static int bpe_pair(void *c, const kv_bpe_work *w, int32_t l, int32_t r, double *key, int32_t *result) {
    const bpe_ctx *x = c;
    int64_t rank = kv_tok_merge_rank(x->tok, w->syms[l].id, w->syms[r].id, result);
    if (rank < 0) return 0;
    *key = -(double)rank;       /* the engine takes the highest key: lowest rank first */
    return 1;
}

static kv_status whole_word_id(bpe_ctx *x, size_t start, size_t end, int32_t *id, kv_error *err) {
    size_t need = (end - start) * 2;   /* every alphabet character is 1 or 2 UTF-8 bytes */
    if (need > x->mapped_cap) {
        char *m = realloc(x->mapped, need);
        if (!m) return kv_fail(err, KV_ENOMEM, "out of memory");
        x->mapped = m;
        x->mapped_cap = need;
    }
    size_t n = 0;
    for (size_t i = start; i < end; i++) n += kv_utf8_encode(kv_bpe_byte_to_cp((uint8_t)x->text[i]), x->mapped + n);
    *id = kv_tok_find(x->tok, x->mapped, n);
    return KV_OK;
}

static kv_status encode_pretoken(void *c, size_t start, size_t end, kv_error *err) {
    bpe_ctx *x = c;
    const kv_tokenizer *tok = x->tok;
    kv_status st;
    if (tok->ignore_merges) {
        int32_t id = -1;
        if ((st = whole_word_id(x, start, end, &id, err))) return st;
        if (id >= 0) return kv_idvec_push(x->out, id, err);
    }
    kv_bpe_work *w = &x->work;
    w->n_syms = 0;
    for (size_t i = start; i < end; i++)
        if ((st = kv_bpe_sym_push(w, (int32_t)(i - start), 1, tok->byte_ids[(uint8_t)x->text[i]], 0, err))) return st;
    if ((st = kv_bpe_run(w, bpe_pair, NULL, x, err))) return st;
    for (int32_t i = 0; i >= 0; i = w->syms[i].next)
        if ((st = kv_idvec_push(x->out, w->syms[i].id, err))) return st;
    return KV_OK;
}

kv_status kv_bpe_encode(const kv_tokenizer *tok, const char *text, size_t len, kv_idvec *out, kv_error *err) {
    bpe_ctx x = {tok, text, out, {0}, NULL, 0};
    kv_status st = KV_OK;
    size_t seg = 0;
    for (size_t i = 0; !st && i <= len;) {
        int32_t sid = -1;
        size_t m = i < len ? kv_tok_match_special(tok, text + i, len - i, &sid) : 0;
        if (!m && i < len) {
            i++;
            continue;
        }
        x.text = text + seg;    /* pre-token offsets are relative to the segment */
        if (i > seg) st = kv_pretok_split(tok->pretok, text + seg, i - seg, encode_pretoken, &x, err);
        if (!st && m) st = kv_idvec_push(out, sid, err);
        if (!m) break;
        i += m;
        seg = i;
    }
    kv_bpe_work_free(&x.work);
    free(x.mapped);
    return st;
}
