/* pretok.c — the pre-tokenizer split regexes of byte-level BPE, written by hand as matchers over code
 * points (no regex library). Each matcher returns the end of the match at position i exactly as a
 * backtracking regex engine would, trying the alternatives left to right:
 *   GPT-2  (openai/gpt-2 encoder.py):
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   Llama-3 (tiktoken cl100k, Meta llama3 tokenizer.py):
 *     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   Qwen2: the Llama-3 pattern with \p{N} (one digit) instead of \p{N}{1,3}.
 * Text between matches cannot occur (every code point starts some alternative), so the pre-tokens tile the
 * input. \s is White_Space, \p{L}/\p{N} the general categories (unicode_tables.c). Malformed UTF-8 bytes
 * count as one code point each of no class (like U+FFFD). */
#include "model/tokenizer.h"
#include "model/unicode.h"

typedef struct cpseq {
    const uint32_t *cp;
    const uint8_t *fl;
    size_t n;
} cpseq;

static int is_l(const cpseq *s, size_t i) { return i < s->n && (s->fl[i] & KV_UCP_LETTER); }
static int is_n(const cpseq *s, size_t i) { return i < s->n && (s->fl[i] & KV_UCP_NUMBER); }
static int is_s(const cpseq *s, size_t i) { return i < s->n && (s->fl[i] & KV_UCP_SPACE); }
/* [^\s\p{L}\p{N}] */
static int is_other(const cpseq *s, size_t i) { return i < s->n && !(s->fl[i] & (KV_UCP_LETTER | KV_UCP_NUMBER | KV_UCP_SPACE)); }
static int is_crlf(const cpseq *s, size_t i) { return i < s->n && (s->cp[i] == '\r' || s->cp[i] == '\n'); }

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive; 0 when none */
static size_t match_contraction(const cpseq *s, size_t i, int fold) {
    if (s->cp[i] != '\'' || i + 1 >= s->n) return 0;
    uint32_t a = fold ? kv_ucp_tolower(s->cp[i + 1]) : s->cp[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 >= s->n) return 0;
    uint32_t b = fold ? kv_ucp_tolower(s->cp[i + 2]) : s->cp[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
}

/* \s+(?!\S)|\s+ at a whitespace position: a run of spaces gives its last one to the following word */
static size_t match_space_run(const cpseq *s, size_t i) {
    size_t k = i;
    while (is_s(s, k)) k++;
    if (k == s->n || k - 1 == i) return k;
    return k - 1;
}

static size_t match_gpt2(const cpseq *s, size_t i) {
    size_t e = match_contraction(s, i, 0);
    if (e) return e;
    size_t j = i + (s->cp[i] == ' ');
    /* with the optional space consumed or not: a space is in none of the three classes */
    if (is_l(s, j)) { while (is_l(s, j)) j++; return j; }
    if (is_n(s, j)) { while (is_n(s, j)) j++; return j; }
    if (is_other(s, j)) { while (is_other(s, j)) j++; return j; }
    if (is_s(s, i)) return match_space_run(s, i);
    return i + 1;
}

static size_t match_llama3(const cpseq *s, size_t i, size_t max_digits) {
    size_t e = match_contraction(s, i, 1);
    if (e) return e;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    size_t j = i;
    if (!is_crlf(s, i) && !is_l(s, i) && !is_n(s, i) && is_l(s, i + 1)) j = i + 1;
    if (is_l(s, j)) { while (is_l(s, j)) j++; return j; }
    /* \p{N}{1,max} */
    if (is_n(s, i)) {
        j = i;
        while (j - i < max_digits && is_n(s, j)) j++;
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    j = i + (s->cp[i] == ' ');
    if (is_other(s, j)) {
        while (is_other(s, j)) j++;
        while (is_crlf(s, j)) j++;
        return j;
    }
    if (is_s(s, i)) {
        /* \s*[\r\n]+ : up to and including the last line break of the whitespace run */
        size_t k = i, last_nl = SIZE_MAX;
        while (is_s(s, k)) {
            if (is_crlf(s, k)) last_nl = k;
            k++;
        }
        if (last_nl != SIZE_MAX) return last_nl + 1;
        return match_space_run(s, i);
    }
    return i + 1;
}

kv_status kv_pretok_split(kv_pretokenizer kind, const char *text, size_t len, kv_pretok_emit_fn emit, void *ctx,
                          kv_error *err) {
    if (!len) return KV_OK;
    if (kind != KV_PRETOK_GPT2 && kind != KV_PRETOK_LLAMA3 && kind != KV_PRETOK_QWEN2)
        return emit(ctx, 0, len, err);   /* no split pattern: the text is one pre-token */
    uint32_t *cp = kv_malloc(len * sizeof *cp, err);
    uint8_t *fl = cp ? kv_malloc(len, err) : NULL;
    size_t *off = fl ? kv_malloc((len + 1) * sizeof *off, err) : NULL;
    if (!off) {
        free(cp);
        free(fl);
        return KV_ENOMEM;
    }
    size_t n = 0;
    for (size_t b = 0; b < len;) {
        int ok;
        size_t l = kv_utf8_decode((const uint8_t *)text + b, len - b, &cp[n], &ok);
        fl[n] = ok ? (uint8_t)kv_ucp_flags(cp[n]) : 0;
        off[n++] = b;
        b += l;
    }
    off[n] = len;
    cpseq s = {cp, fl, n};
    kv_status st = KV_OK;
    for (size_t i = 0; !st && i < n;) {
        size_t e = kind == KV_PRETOK_GPT2 ? match_gpt2(&s, i)
                 : kind == KV_PRETOK_QWEN2 ? match_llama3(&s, i, 1)
                                           : match_llama3(&s, i, 3);
        st = emit(ctx, off[i], off[e], err);
        i = e;
    }
    free(cp);
    free(fl);
    free(off);
    return st;
}
