/* tokenizer.c — kv_tokenizer: the vocabulary (pieces, scores, types, lookups, merges), the common encode
 * entry point, decoding, accessors and the loaders (tokenizer.model, tokenizer.json, GGUF tokenizer.ggml.*).
 * Sources: sentencepiece sentencepiece_processor.cc (Encode byte fallback, Decode), GPT-2 encoder.py
 * (bytes_to_unicode), HF tokenizers tokenizer.json layout, llama.cpp llama-vocab.cpp (GGUF keys). */
#include "model/tokenizer.h"
#include "model/unicode.h"
#include "io/gguf.h"
#include "io/json.h"
#include <stdio.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------------------------------------- */
/* vocabulary                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;           /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n) {
    size_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

kv_status kv_tok_create(kv_tokenizer_kind kind, int32_t n_vocab, kv_tokenizer **out, kv_error *err) {
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > KV_TOK_MAX_VOCAB)
        return kv_fail(err, KV_ERANGE, "vocabulary size %d out of range (1..%d)", (int)n_vocab, KV_TOK_MAX_VOCAB);
    kv_tokenizer *t = kv_calloc(1, sizeof *t, err);
    if (!t) return KV_ENOMEM;
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->bos_id = t->eos_id = t->unk_id = t->pad_id = -1;
    t->add_dummy_prefix = 1;
    t->escape_whitespaces = 1;
    t->off = kv_calloc((size_t)n_vocab, sizeof *t->off, err);
    t->len = kv_malloc((size_t)n_vocab * sizeof *t->len, err);
    t->scores = kv_calloc((size_t)n_vocab, sizeof *t->scores, err);
    t->types = kv_calloc((size_t)n_vocab, sizeof *t->types, err);
    if (!t->off || !t->len || !t->scores || !t->types) {
        kv_tokenizer_free(t);
        return KV_ENOMEM;
    }
    memset(t->len, 0xff, (size_t)n_vocab * sizeof *t->len);   /* UINT32_MAX = not set yet */
    for (int i = 0; i < 256; i++) t->byte_ids[i] = -1;
    *out = t;
    return KV_OK;
}

kv_status kv_tok_set_piece(kv_tokenizer *tok, int32_t id, const char *piece, size_t len, float score,
                           kv_token_type type, kv_error *err) {
    if (id < 0 || id >= tok->n_vocab) return kv_fail(err, KV_ERANGE, "token id %d out of range", (int)id);
    if (tok->len[id] != UINT32_MAX) return kv_fail(err, KV_EFORMAT, "token %d defined twice", (int)id);
    if (len > KV_TOK_MAX_PIECE) return kv_fail(err, KV_ERANGE, "token %d: piece of %zu bytes is too long", (int)id, len);
    if (type < KV_TOKEN_NORMAL || type > KV_TOKEN_BYTE) type = KV_TOKEN_NORMAL;
    if (tok->arena_len + len + 1 > tok->arena_cap) {
        size_t cap = tok->arena_cap ? tok->arena_cap : 4096;
        while (cap < tok->arena_len + len + 1) cap *= 2;
        char *a = realloc(tok->arena, cap);
        if (!a) return kv_fail(err, KV_ENOMEM, "out of memory (vocabulary of %zu bytes)", cap);
        tok->arena = a;
        tok->arena_cap = cap;
    }
    if (len) memcpy(tok->arena + tok->arena_len, piece, len);
    tok->arena[tok->arena_len + len] = 0;
    tok->off[id] = tok->arena_len;
    tok->len[id] = (uint32_t)len;
    tok->arena_len += len + 1;
    tok->scores[id] = score;
    tok->types[id] = (uint8_t)type;
    return KV_OK;
}

int32_t kv_tok_find(const kv_tokenizer *tok, const char *piece, size_t len) {
    if (!tok->slots) return -1;
    size_t i = (size_t)hash_bytes(piece, len) & tok->slot_mask;
    for (;;) {
        int32_t id = tok->slots[i];
        if (id < 0) return -1;
        if (tok->len[id] == len && !memcmp(tok->arena + tok->off[id], piece, len)) return id;
        i = (i + 1) & tok->slot_mask;
    }
}

static int parse_byte_piece(const char *p, size_t n) {
    /* "<0xNN>" */
    if (n != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int is_special_type(const kv_tokenizer *tok, uint8_t type) {
    if (type == KV_TOKEN_USER_DEFINED) return 1;
    return tok->kind == KV_TOKENIZER_BPE && type == KV_TOKEN_CONTROL;
}

static void sort_specials(const kv_tokenizer *tok, int32_t *ids, size_t n) {
    /* insertion sort by (length desc, id asc); buckets are small */
    for (size_t i = 1; i < n; i++) {
        int32_t x = ids[i];
        size_t j = i;
        while (j > 0) {
            int32_t y = ids[j - 1];
            int before = tok->len[x] > tok->len[y] || (tok->len[x] == tok->len[y] && x < y);
            if (!before) break;
            ids[j] = y;
            j--;
        }
        ids[j] = x;
    }
}

static kv_status build_specials(kv_tokenizer *tok, kv_error *err) {
    uint32_t count[256] = {0};
    size_t total = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (is_special_type(tok, tok->types[id]) && tok->len[id] > 0) {
            count[(uint8_t)tok->arena[tok->off[id]]]++;
            total++;
        }
    tok->special_start[0] = 0;
    for (int b = 0; b < 256; b++) tok->special_start[b + 1] = tok->special_start[b] + count[b];
    if (!total) return KV_OK;
    tok->special_ids = kv_malloc(total * sizeof *tok->special_ids, err);
    if (!tok->special_ids) return KV_ENOMEM;
    uint32_t fill[256];
    memcpy(fill, tok->special_start, sizeof fill);
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (is_special_type(tok, tok->types[id]) && tok->len[id] > 0)
            tok->special_ids[fill[(uint8_t)tok->arena[tok->off[id]]]++] = id;
    for (int b = 0; b < 256; b++)
        sort_specials(tok, tok->special_ids + tok->special_start[b], tok->special_start[b + 1] - tok->special_start[b]);
    return KV_OK;
}

size_t kv_tok_match_special(const kv_tokenizer *tok, const char *text, size_t len, int32_t *id) {
    if (!tok->special_ids || !len) return 0;
    uint8_t b = (uint8_t)text[0];
    for (uint32_t k = tok->special_start[b]; k < tok->special_start[b + 1]; k++) {
        int32_t s = tok->special_ids[k];
        size_t n = tok->len[s];
        if (n <= len && !memcmp(text, tok->arena + tok->off[s], n)) {
            *id = s;
            return n;
        }
    }
    return 0;
}

uint32_t kv_bpe_byte_to_cp(uint8_t b) {
    /* printable bytes stand for themselves; the 68 others map to U+0100.. in byte order */
    if (b <= 32) return 256u + b;
    if (b >= 127 && b <= 160) return 256u + 33 + (b - 127u);
    if (b == 173) return 256u + 67;
    return b;
}

int kv_bpe_cp_to_byte(uint32_t cp) {
    if (cp < 256) return (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) ? -1 : (int)cp;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(cp - 256 - 33 + 127);
    if (cp == 256 + 67) return 173;
    return -1;
}

kv_status kv_tok_finish(kv_tokenizer *tok, kv_error *err) {
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (tok->len[id] == UINT32_MAX) return kv_fail(err, KV_EFORMAT, "token %d has no piece", (int)id);
    size_t nslots = pow2_at_least((size_t)tok->n_vocab * 2);
    tok->slots = kv_malloc(nslots * sizeof *tok->slots, err);
    if (!tok->slots) return KV_ENOMEM;
    memset(tok->slots, 0xff, nslots * sizeof *tok->slots);
    tok->slot_mask = nslots - 1;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        const char *p = tok->arena + tok->off[id];
        if (kv_tok_find(tok, p, tok->len[id]) >= 0) continue;   /* duplicate: the lower id keeps the piece */
        size_t i = (size_t)hash_bytes(p, tok->len[id]) & tok->slot_mask;
        while (tok->slots[i] >= 0) i = (i + 1) & tok->slot_mask;
        tok->slots[i] = id;
    }
    for (int32_t id = 0; id < tok->n_vocab; id++) if (tok->types[id] == KV_TOKEN_UNUSED) tok->has_unused = 1;
    if (tok->kind == KV_TOKENIZER_SPM) {
        memset(tok->isolated, 1, sizeof tok->isolated);
        tok->space_cut = 1;
        for (int32_t id = 0; id < tok->n_vocab; id++) {
            uint8_t t = tok->types[id];
            if (tok->len[id] < 2 || !(t == KV_TOKEN_NORMAL || t == KV_TOKEN_USER_DEFINED || t == KV_TOKEN_UNUSED)) continue;
            const char *p = tok->arena + tok->off[id];
            for (uint32_t k = 0; k < tok->len[id]; k++) {
                uint8_t c = (uint8_t)p[k];
                if (c < 128) tok->isolated[c] = 0;
                if (k > 0 && k + 3 <= tok->len[id] && !memcmp(p + k, "\xE2\x96\x81", 3) &&
                    (k < 3 || memcmp(p + k - 3, "\xE2\x96\x81", 3)))
                    tok->space_cut = 0;
            }
        }
        for (int32_t id = 0; id < tok->n_vocab; id++) {
            if (tok->types[id] != KV_TOKEN_BYTE) continue;
            int b = parse_byte_piece(tok->arena + tok->off[id], tok->len[id]);
            if (b < 0) return kv_fail(err, KV_EFORMAT, "byte token %d has piece '%s', expected <0xNN>", (int)id, tok->arena + tok->off[id]);
            if (tok->byte_ids[b] < 0) tok->byte_ids[b] = id;
        }
    } else {
        for (int b = 0; b < 256; b++) {
            char u[4];
            size_t n = kv_utf8_encode(kv_bpe_byte_to_cp((uint8_t)b), u);
            tok->byte_ids[b] = kv_tok_find(tok, u, n);
            if (tok->byte_ids[b] < 0)
                return kv_fail(err, KV_EFORMAT, "byte-level vocabulary has no token for byte 0x%02X (U+%04X)", b,
                               (unsigned)kv_bpe_byte_to_cp((uint8_t)b));
        }
    }
    return build_specials(tok, err);
}

kv_status kv_tok_add_merge(kv_tokenizer *tok, const char *left, size_t left_len, const char *right,
                           size_t right_len, kv_error *err) {
    int64_t rank = tok->n_merges;
    int32_t l = kv_tok_find(tok, left, left_len), r = kv_tok_find(tok, right, right_len);
    if (l < 0 || r < 0)
        return kv_fail(err, KV_EFORMAT, "merge %lld: '%.*s' is not in the vocabulary", (long long)rank,
                       (int)(l < 0 ? KV_MIN(left_len, 200) : KV_MIN(right_len, 200)), l < 0 ? left : right);
    if (left_len + right_len > KV_TOK_MAX_PIECE) return kv_fail(err, KV_ERANGE, "merge %lld too long", (long long)rank);
    char stackbuf[512];
    char *cat = left_len + right_len <= sizeof stackbuf ? stackbuf : kv_malloc(left_len + right_len, err);
    if (!cat) return KV_ENOMEM;
    memcpy(cat, left, left_len);
    memcpy(cat + left_len, right, right_len);
    int32_t res = kv_tok_find(tok, cat, left_len + right_len);
    if (cat != stackbuf) free(cat);
    if (res < 0)
        return kv_fail(err, KV_EFORMAT, "merge %lld: '%.*s%.*s' is not in the vocabulary", (long long)rank,
                       (int)KV_MIN(left_len, 100), left, (int)KV_MIN(right_len, 100), right);
    if (tok->n_merges == tok->merges_cap) {
        int64_t cap = tok->merges_cap ? tok->merges_cap * 2 : 1024;
        int32_t *a = realloc(tok->merge_left, (size_t)cap * sizeof *a);
        if (a) tok->merge_left = a;
        int32_t *b = a ? realloc(tok->merge_right, (size_t)cap * sizeof *b) : NULL;
        if (b) tok->merge_right = b;
        int32_t *c = b ? realloc(tok->merge_result, (size_t)cap * sizeof *c) : NULL;
        if (c) tok->merge_result = c;
        if (!c) return kv_fail(err, KV_ENOMEM, "out of memory (%lld merges)", (long long)cap);
        tok->merges_cap = cap;
    }
    tok->merge_left[rank] = l;
    tok->merge_right[rank] = r;
    tok->merge_result[rank] = res;
    tok->n_merges++;
    return KV_OK;
}

static uint64_t merge_key(int32_t l, int32_t r) { return (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1; }

kv_status kv_tok_finish_merges(kv_tokenizer *tok, kv_error *err) {
    size_t n = pow2_at_least((size_t)tok->n_merges * 2);
    free(tok->merge_keys);
    free(tok->merge_rank);
    tok->merge_keys = kv_calloc(n, sizeof *tok->merge_keys, err);
    tok->merge_rank = kv_malloc(n * sizeof *tok->merge_rank, err);
    if (!tok->merge_keys || !tok->merge_rank) return KV_ENOMEM;
    tok->merge_mask = n - 1;
    for (int64_t r = 0; r < tok->n_merges; r++) {
        uint64_t k = merge_key(tok->merge_left[r], tok->merge_right[r]);
        size_t i = (size_t)hash_u64(k) & tok->merge_mask;
        while (tok->merge_keys[i] && tok->merge_keys[i] != k) i = (i + 1) & tok->merge_mask;
        if (tok->merge_keys[i]) continue;   /* a repeated pair keeps its first (best) rank */
        tok->merge_keys[i] = k;
        tok->merge_rank[i] = (int32_t)r;
    }
    return KV_OK;
}

int64_t kv_tok_merge_rank(const kv_tokenizer *tok, int32_t left, int32_t right, int32_t *result) {
    if (!tok->merge_keys) return -1;
    uint64_t k = merge_key(left, right);
    size_t i = (size_t)hash_u64(k) & tok->merge_mask;
    while (tok->merge_keys[i]) {
        if (tok->merge_keys[i] == k) {
            int32_t r = tok->merge_rank[i];
            *result = tok->merge_result[r];
            return r;
        }
        i = (i + 1) & tok->merge_mask;
    }
    return -1;
}

void kv_tokenizer_free(kv_tokenizer *tok) {
    if (!tok) return;
    free(tok->arena);
    free(tok->off);
    free(tok->len);
    free(tok->scores);
    free(tok->types);
    free(tok->slots);
    free(tok->special_ids);
    free(tok->merge_left);
    free(tok->merge_right);
    free(tok->merge_result);
    free(tok->merge_keys);
    free(tok->merge_rank);
    free(tok);
}

kv_status kv_idvec_push(kv_idvec *iv, int32_t id, kv_error *err) {
    if (iv->n == iv->cap) {
        size_t cap = iv->cap ? iv->cap * 2 : 256;
        int32_t *v = realloc(iv->v, cap * sizeof *v);
        if (!v) return kv_fail(err, KV_ENOMEM, "out of memory (%zu tokens)", cap);
        iv->v = v;
        iv->cap = cap;
    }
    iv->v[iv->n++] = id;
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* encode / decode                                                                                */
/* ---------------------------------------------------------------------------------------------- */

kv_status kv_tokenize(const kv_tokenizer *tok, const char *text, size_t len, int add_bos, int32_t **ids,
                      size_t *n, kv_error *err) {
    *ids = NULL;
    *n = 0;
    if (!tok || (!text && len)) return kv_fail(err, KV_EINVAL, "kv_tokenize: NULL argument");
    if (len > (size_t)INT32_MAX / 2) return kv_fail(err, KV_ERANGE, "text of %zu bytes is too long to tokenize", len);
    kv_idvec out = {0};
    kv_status st = KV_OK;
    if (add_bos) {
        if (tok->bos_id < 0) return kv_fail(err, KV_EINVAL, "the tokenizer has no BOS token");
        st = kv_idvec_push(&out, tok->bos_id, err);
    }
    if (!st && len) st = tok->kind == KV_TOKENIZER_SPM ? kv_spm_encode(tok, text, len, &out, err)
                                                      : kv_bpe_encode(tok, text, len, &out, err);
    if (st) {
        free(out.v);
        return st;
    }
    if (!out.n) {
        free(out.v);
        out.v = NULL;
    }
    *ids = out.v;
    *n = out.n;
    return KV_OK;
}

typedef struct strbuf { char *p; size_t n, cap; } strbuf;

static kv_status sb_put(strbuf *b, const void *s, size_t n, kv_error *err) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return kv_fail(err, KV_ENOMEM, "out of memory (%zu bytes of text)", cap);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return KV_OK;
}

static const char k_spm_space[] = "\xE2\x96\x81";   /* U+2581, sentencepiece's kSpaceSymbol */
static const char k_spm_unk_surface[] = " \xE2\x81\x87 ";

/* SPM piece with U+2581 -> ' '; skip_lead drops one leading U+2581 (the dummy prefix). */
static kv_status put_spm_piece(strbuf *b, const char *p, size_t n, int skip_lead, kv_error *err) {
    size_t i = 0;
    if (skip_lead && n >= 3 && !memcmp(p, k_spm_space, 3)) i = 3;
    while (i < n) {
        size_t j = i;
        while (j < n && !(j + 3 <= n && !memcmp(p + j, k_spm_space, 3))) j++;
        kv_status st = sb_put(b, p + i, j - i, err);
        if (st) return st;
        if (j < n) {
            if ((st = sb_put(b, " ", 1, err))) return st;
            j += 3;
        }
        i = j;
    }
    return KV_OK;
}

/* byte-level piece -> bytes (characters outside the alphabet are copied as UTF-8) */
static kv_status put_bpe_piece(strbuf *b, const char *p, size_t n, kv_error *err) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int ok;
        size_t l = kv_utf8_decode((const uint8_t *)p + i, n - i, &cp, &ok);
        int byte = ok ? kv_bpe_cp_to_byte(cp) : -1;
        uint8_t c = (uint8_t)byte;
        kv_status st = byte >= 0 ? sb_put(b, &c, 1, err) : sb_put(b, p + i, l, err);
        if (st) return st;
        i += l;
    }
    return KV_OK;
}

/* decode_mode: kv_detokenize's rules (control tokens vanish, <unk> surface); first: the first piece that
 * produces text, whose dummy-prefix space is dropped. */
static kv_status put_token(const kv_tokenizer *tok, strbuf *b, int32_t id, int decode_mode, int first, kv_error *err) {
    const char *p = tok->arena + tok->off[id];
    size_t n = tok->len[id];
    uint8_t type = tok->types[id];
    if (type == KV_TOKEN_CONTROL) return decode_mode ? KV_OK : sb_put(b, p, n, err);
    if (tok->kind == KV_TOKENIZER_SPM) {
        if (type == KV_TOKEN_BYTE) {
            uint8_t c = (uint8_t)parse_byte_piece(p, n);
            return sb_put(b, &c, 1, err);
        }
        if (type == KV_TOKEN_UNKNOWN && decode_mode) return sb_put(b, k_spm_unk_surface, sizeof k_spm_unk_surface - 1, err);
        /* the dummy-prefix space of the first piece is dropped (HF LlamaTokenizer, llama.cpp) */
        int skip = decode_mode && first && tok->add_dummy_prefix;
        return put_spm_piece(b, p, n, skip, err);
    }
    if (type == KV_TOKEN_USER_DEFINED || type == KV_TOKEN_UNKNOWN) return sb_put(b, p, n, err);
    return put_bpe_piece(b, p, n, err);
}

kv_status kv_detokenize(const kv_tokenizer *tok, const int32_t *ids, size_t n, char **text, size_t *len,
                        kv_error *err) {
    *text = NULL;
    if (len) *len = 0;
    strbuf b = {0};
    kv_status st = sb_put(&b, "", 0, err);
    int first = 1;
    for (size_t i = 0; !st && i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            st = kv_fail(err, KV_ERANGE, "token id %d at position %zu is out of range (vocabulary of %d)", (int)ids[i], i,
                         (int)tok->n_vocab);
        else {
            st = put_token(tok, &b, ids[i], 1, first, err);
            if (tok->types[ids[i]] != KV_TOKEN_CONTROL) first = 0;
        }
    }
    if (st) {
        free(b.p);
        return st;
    }
    *text = b.p;
    if (len) *len = b.n;
    return KV_OK;
}

size_t kv_token_to_text(const kv_tokenizer *tok, int32_t id, char *buf, size_t cap) {
    if (!tok || id < 0 || id >= tok->n_vocab) return 0;
    strbuf b = {0};
    if (put_token(tok, &b, id, 0, 0, NULL) != KV_OK) {
        free(b.p);
        return 0;
    }
    size_t n = b.n;
    if (buf && cap) memcpy(buf, b.p, KV_MIN(n, cap));
    free(b.p);
    return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* accessors                                                                                      */
/* ---------------------------------------------------------------------------------------------- */

kv_tokenizer_kind kv_tokenizer_get_kind(const kv_tokenizer *tok) { return tok->kind; }
kv_pretokenizer kv_tokenizer_pretokenizer(const kv_tokenizer *tok) { return tok->pretok; }
int32_t kv_tokenizer_n_vocab(const kv_tokenizer *tok) { return tok->n_vocab; }
int32_t kv_tokenizer_bos(const kv_tokenizer *tok) { return tok->bos_id; }
int32_t kv_tokenizer_eos(const kv_tokenizer *tok) { return tok->eos_id; }
int32_t kv_tokenizer_unk(const kv_tokenizer *tok) { return tok->unk_id; }
int32_t kv_tokenizer_pad(const kv_tokenizer *tok) { return tok->pad_id; }
int kv_tokenizer_add_bos_default(const kv_tokenizer *tok) { return tok->add_bos && tok->bos_id >= 0; }
int kv_tokenizer_add_space_prefix(const kv_tokenizer *tok) { return tok->kind == KV_TOKENIZER_SPM && tok->add_dummy_prefix; }

const char *kv_pretokenizer_name(kv_pretokenizer p) {
    switch (p) {
    case KV_PRETOK_GPT2: return "default";
    case KV_PRETOK_LLAMA3: return "llama-bpe";
    case KV_PRETOK_QWEN2: return "qwen2";
    default: return "";
    }
}

const char *kv_tokenizer_piece(const kv_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n_vocab) return NULL;
    if (len) *len = tok->len[id];
    return tok->arena + tok->off[id];
}

float kv_tokenizer_score(const kv_tokenizer *tok, int32_t id) {
    return id < 0 || id >= tok->n_vocab ? 0.0f : tok->scores[id];
}

kv_token_type kv_tokenizer_token_type(const kv_tokenizer *tok, int32_t id) {
    return id < 0 || id >= tok->n_vocab ? (kv_token_type)0 : (kv_token_type)tok->types[id];
}

int64_t kv_tokenizer_n_merges(const kv_tokenizer *tok) { return tok->n_merges; }

kv_status kv_tokenizer_merge(const kv_tokenizer *tok, int64_t rank, int32_t *left, int32_t *right, kv_error *err) {
    if (rank < 0 || rank >= tok->n_merges)
        return kv_fail(err, KV_ERANGE, "merge %lld out of range (%lld merges)", (long long)rank, (long long)tok->n_merges);
    *left = tok->merge_left[rank];
    *right = tok->merge_right[rank];
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* loaders                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

kv_status kv_tokenizer_load_spm_memory(const void *data, size_t size, const char *name, kv_tokenizer **out,
                                       kv_error *err) {
    *out = NULL;
    kv_status st = kv_spm_parse((const uint8_t *)data, size, name, out, err);
    if (st && name) kv_error_context(err, name, -1, NULL);
    return st;
}

kv_status kv_tokenizer_load_spm(const char *path, kv_tokenizer **out, kv_error *err) {
    *out = NULL;
    kv_mapped m;
    kv_status st = kv_map_file(path, &m, err);
    if (st) return st;
    st = kv_tokenizer_load_spm_memory(m.data, m.size, path, out, err);
    kv_unmap_file(&m);
    return st;
}

/* --- GGUF tokenizer.ggml.* --- */

/* An optional token id: absent or outside the vocabulary (some files store -1 as 0xFFFFFFFF) -> -1. */
static kv_status gguf_opt_id(kv_gguf *g, const char *key, int32_t n_vocab, int32_t *v, kv_error *err) {
    if (!kv_gguf_find(g, key)) return KV_OK;
    int64_t x;
    kv_status st = kv_gguf_get_i64(g, key, &x, err);
    if (st == KV_ERANGE) {
        kv_error_clear(err);
        x = -1;
    } else if (st) {
        return st;
    }
    *v = x >= 0 && x < n_vocab ? (int32_t)x : -1;
    return KV_OK;
}

static kv_status gguf_opt_bool(kv_gguf *g, const char *key, int *v, kv_error *err) {
    if (!kv_gguf_find(g, key)) return KV_OK;
    return kv_gguf_get_bool(g, key, v, err);
}

static kv_pretokenizer pretok_from_name(const char *pre) {
    if (!pre || !strcmp(pre, "default") || !strcmp(pre, "gpt-2") || !strcmp(pre, "gpt2")) return KV_PRETOK_GPT2;
    if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "llama-v3")) return KV_PRETOK_LLAMA3;
    if (!strcmp(pre, "qwen2")) return KV_PRETOK_QWEN2;
    return KV_PRETOK_NONE;
}

static kv_status gguf_kind(kv_gguf *g, kv_tokenizer_kind *kind, kv_pretokenizer *pre, kv_error *err) {
    const char *model = NULL;
    kv_status st = kv_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (st) return st;
    *pre = KV_PRETOK_NONE;
    if (!strcmp(model, "llama")) {
        *kind = KV_TOKENIZER_SPM;
        return KV_OK;
    }
    if (strcmp(model, "gpt2"))
        return kv_fail(err, KV_EUNSUPPORTED, "tokenizer.ggml.model '%s' is not supported (only 'llama' and 'gpt2')", model);
    *kind = KV_TOKENIZER_BPE;
    const char *pname = NULL;
    if (kv_gguf_find(g, "tokenizer.ggml.pre") && (st = kv_gguf_get_str(g, "tokenizer.ggml.pre", &pname, err))) return st;
    *pre = pretok_from_name(pname);
    if (*pre == KV_PRETOK_NONE)
        return kv_fail(err, KV_EUNSUPPORTED, "tokenizer.ggml.pre '%s' is not supported (default, llama-bpe, qwen2)", pname);
    return KV_OK;
}

/* tokens with their scores and types (both optional) */
static kv_status gguf_pieces(kv_gguf *g, kv_tokenizer_kind kind, kv_tokenizer **out, kv_error *err) {
    kv_gguf_value toks, scores = {0}, types = {0};
    kv_status st = kv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, err);
    if (st) return st;
    if (toks.elem_type != KV_GGUF_STRING) return kv_fail(err, KV_EFORMAT, "tokenizer.ggml.tokens is not an array of strings");
    int has_scores = kv_gguf_find(g, "tokenizer.ggml.scores") != NULL;
    int has_types = kv_gguf_find(g, "tokenizer.ggml.token_type") != NULL;
    if (has_scores && (st = kv_gguf_get_arr(g, "tokenizer.ggml.scores", &scores, err))) return st;
    if (has_types && (st = kv_gguf_get_arr(g, "tokenizer.ggml.token_type", &types, err))) return st;
    if ((has_scores && scores.n != toks.n) || (has_types && types.n != toks.n))
        return kv_fail(err, KV_EFORMAT, "tokenizer.ggml.scores/token_type have %llu/%llu entries for %llu tokens",
                       (unsigned long long)scores.n, (unsigned long long)types.n, (unsigned long long)toks.n);
    if (toks.n > KV_TOK_MAX_VOCAB) return kv_fail(err, KV_ERANGE, "%llu tokens is too many", (unsigned long long)toks.n);
    kv_tokenizer *tok = NULL;
    if ((st = kv_tok_create(kind, (int32_t)toks.n, &tok, err))) return st;
    for (uint64_t i = 0; !st && i < toks.n; i++) {
        kv_gguf_value s, v;
        double score = 0;
        int64_t type = KV_TOKEN_NORMAL;
        st = kv_gguf_arr_get(&toks, i, &s, err);
        if (!st && has_scores && !(st = kv_gguf_arr_get(&scores, i, &v, err))) st = kv_gguf_value_f64(&v, &score, err);
        if (!st && has_types && !(st = kv_gguf_arr_get(&types, i, &v, err))) st = kv_gguf_value_i64(&v, &type, err);
        if (!st) st = kv_tok_set_piece(tok, (int32_t)i, (const char *)s.data, (size_t)s.n, (float)score, (kv_token_type)type, err);
    }
    if (!st) st = kv_tok_finish(tok, err);
    if (st) {
        kv_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return KV_OK;
}

/* special ids and flags; llama.cpp's defaults when absent */
static kv_status gguf_options(kv_gguf *g, kv_tokenizer *tok, kv_error *err) {
    int rem = 0;
    tok->add_bos = tok->kind == KV_TOKENIZER_SPM;
    kv_status st = gguf_opt_id(g, "tokenizer.ggml.bos_token_id", tok->n_vocab, &tok->bos_id, err);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.eos_token_id", tok->n_vocab, &tok->eos_id, err);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.unknown_token_id", tok->n_vocab, &tok->unk_id, err);
    if (!st) st = gguf_opt_id(g, "tokenizer.ggml.padding_token_id", tok->n_vocab, &tok->pad_id, err);
    if (!st) st = gguf_opt_bool(g, "tokenizer.ggml.add_bos_token", &tok->add_bos, err);
    if (!st) st = gguf_opt_bool(g, "tokenizer.ggml.add_space_prefix", &tok->add_dummy_prefix, err);
    if (!st) st = gguf_opt_bool(g, "tokenizer.ggml.remove_extra_whitespaces", &rem, err);
    tok->remove_extra_whitespaces = rem;
    if (tok->kind == KV_TOKENIZER_SPM) {
        for (int32_t id = 0; tok->unk_id < 0 && id < tok->n_vocab; id++)
            if (tok->types[id] == KV_TOKEN_UNKNOWN) tok->unk_id = id;
        for (int b = 0; b < 256; b++) tok->byte_fallback |= tok->byte_ids[b] >= 0;
    }
    /* llama.cpp sets ignore_merges for the Llama-3 pre-tokenizer, as its tokenizer.json does */
    tok->ignore_merges = tok->pretok == KV_PRETOK_LLAMA3;
    return st;
}

static kv_status gguf_merges(kv_gguf *g, kv_tokenizer *tok, kv_error *err) {
    kv_gguf_value merges;
    kv_status st = kv_gguf_get_arr(g, "tokenizer.ggml.merges", &merges, err);
    if (st) return st;
    if (merges.elem_type != KV_GGUF_STRING) return kv_fail(err, KV_EFORMAT, "tokenizer.ggml.merges is not an array of strings");
    for (uint64_t i = 0; !st && i < merges.n; i++) {
        kv_gguf_value s;
        if ((st = kv_gguf_arr_get(&merges, i, &s, err))) break;
        const char *p = (const char *)s.data;
        const char *sp = s.n > 1 ? memchr(p + 1, ' ', (size_t)s.n - 1) : NULL;
        if (!sp) st = kv_fail(err, KV_EFORMAT, "tokenizer.ggml.merges[%llu] has no space", (unsigned long long)i);
        else st = kv_tok_add_merge(tok, p, (size_t)(sp - p), sp + 1, (size_t)s.n - (size_t)(sp - p) - 1, err);
    }
    return st ? st : kv_tok_finish_merges(tok, err);
}

kv_status kv_tokenizer_load_gguf(const char *path, kv_tokenizer **out, kv_error *err) {
    *out = NULL;
    kv_gguf *g = NULL;
    kv_status st = kv_gguf_open(path, &g, err);
    if (st) return st;
    kv_tokenizer_kind kind = KV_TOKENIZER_SPM;
    kv_pretokenizer pre = KV_PRETOK_NONE;
    kv_tokenizer *tok = NULL;
    st = gguf_kind(g, &kind, &pre, err);
    if (!st) st = gguf_pieces(g, kind, &tok, err);
    if (!st) {
        tok->pretok = pre;
        st = gguf_options(g, tok, err);
    }
    if (!st && kind == KV_TOKENIZER_BPE) st = gguf_merges(g, tok, err);
    kv_gguf_close(g);
    if (st) {
        kv_error_context(err, path, -1, NULL);
        kv_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return KV_OK;
}

/* --- tokenizer.json (HF tokenizers) --- */

static const char k_re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char k_re_llama3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_re_qwen2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Finds the split pattern of a pre_tokenizer (a Split with a Regex, possibly inside a Sequence) or a
 * ByteLevel with use_regex (GPT-2's built-in pattern). */
static kv_status detect_pretok(const kv_json *pt, kv_pretokenizer *out, kv_error *err) {
    const char *type = NULL;
    if (!pt || kv_json_get_str(pt, "type", &type) != 1) return kv_fail(err, KV_EUNSUPPORTED, "tokenizer.json has no pre_tokenizer");
    if (!strcmp(type, "Sequence")) {
        const kv_json *list = kv_json_get(pt, "pretokenizers");
        *out = KV_PRETOK_NONE;
        for (uint64_t i = 0; list && i < list->len; i++) {
            kv_pretokenizer p = KV_PRETOK_NONE;
            const kv_json *item = kv_json_at(list, i);
            const char *it = NULL;
            kv_json_get_str(item, "type", &it);
            if (it && !strcmp(it, "ByteLevel")) {
                int use_regex = 1;
                kv_json_get_bool(item, "use_regex", &use_regex);
                if (!use_regex) continue;
            }
            kv_status st = detect_pretok(item, &p, err);
            if (st) return st;
            if (*out != KV_PRETOK_NONE && p != KV_PRETOK_NONE)
                return kv_fail(err, KV_EUNSUPPORTED, "tokenizer.json pre_tokenizer splits twice (not supported)");
            if (p != KV_PRETOK_NONE) *out = p;
        }
        if (*out == KV_PRETOK_NONE) return kv_fail(err, KV_EUNSUPPORTED, "tokenizer.json pre_tokenizer has no split pattern");
        return KV_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        int use_regex = 1, prefix = 0;
        kv_json_get_bool(pt, "use_regex", &use_regex);
        kv_json_get_bool(pt, "add_prefix_space", &prefix);
        if (prefix) return kv_fail(err, KV_EUNSUPPORTED, "ByteLevel add_prefix_space is not supported");
        *out = use_regex ? KV_PRETOK_GPT2 : KV_PRETOK_NONE;
        return KV_OK;
    }
    if (!strcmp(type, "Split")) {
        const kv_json *pat = kv_json_get(pt, "pattern");
        const char *re = NULL;
        if (kv_json_get_str(pat, "Regex", &re) != 1) return kv_fail(err, KV_EUNSUPPORTED, "Split pre_tokenizer without a Regex pattern");
        if (!strcmp(re, k_re_gpt2)) *out = KV_PRETOK_GPT2;
        else if (!strcmp(re, k_re_llama3)) *out = KV_PRETOK_LLAMA3;
        else if (!strcmp(re, k_re_qwen2)) *out = KV_PRETOK_QWEN2;
        else return kv_fail(err, KV_EUNSUPPORTED, "pre_tokenizer regex is none of GPT-2, Llama-3, Qwen2: %.200s", re);
        return KV_OK;
    }
    return kv_fail(err, KV_EUNSUPPORTED, "pre_tokenizer type '%s' is not supported", type);
}

/* The BOS of a TemplateProcessing post-processor ("single": [{"SpecialToken": {"id": "<s>"}}, ...]). */
static const char *template_bos(const kv_json *pp) {
    const char *type = NULL;
    if (!pp || kv_json_get_str(pp, "type", &type) != 1) return NULL;
    if (!strcmp(type, "Sequence")) {
        const kv_json *list = kv_json_get(pp, "processors");
        for (uint64_t i = 0; list && i < list->len; i++) {
            const char *b = template_bos(kv_json_at(list, i));
            if (b) return b;
        }
        return NULL;
    }
    if (strcmp(type, "TemplateProcessing")) return NULL;
    const kv_json *first = kv_json_at(kv_json_get(pp, "single"), 0);
    const char *id = NULL;
    if (kv_json_get_str(kv_json_get(first, "SpecialToken"), "id", &id) == 1) return id;
    return NULL;
}

/* The vocabulary: model.vocab (normal tokens) and added_tokens (special: control, else user-defined); the
 * size is one past the largest id. */
static kv_status hf_pieces(const kv_json *vocab, const kv_json *added, kv_tokenizer **out, kv_error *err) {
    int64_t max_id = -1;
    for (uint64_t i = 0; i < vocab->len; i++) {
        const kv_json *v = &vocab->u.items[i];
        if (v->type != KV_JSON_NUMBER || !v->is_int || v->ival < 0 || v->ival >= KV_TOK_MAX_VOCAB) {
            kv_fail(err, KV_EFORMAT, "model.vocab['%.100s'] is not a valid id", v->key);
            kv_error_context(err, NULL, (int64_t)v->offset, NULL);
            return KV_EFORMAT;
        }
        max_id = KV_MAX(max_id, v->ival);
    }
    for (uint64_t i = 0; added && i < added->len; i++) {
        const kv_json *a = &added->u.items[i];
        int64_t id;
        const char *content;
        if (kv_json_get_int(a, "id", &id) != 1 || id < 0 || id >= KV_TOK_MAX_VOCAB || kv_json_get_str(a, "content", &content) != 1) {
            kv_fail(err, KV_EFORMAT, "added_tokens[%llu] needs an id and a content", (unsigned long long)i);
            kv_error_context(err, NULL, (int64_t)a->offset, NULL);
            return KV_EFORMAT;
        }
        max_id = KV_MAX(max_id, id);
    }
    kv_tokenizer *tok = NULL;
    kv_status st = kv_tok_create(KV_TOKENIZER_BPE, (int32_t)(max_id + 1), &tok, err);
    if (st) return st;
    for (uint64_t i = 0; !st && added && i < added->len; i++) {
        const kv_json *a = &added->u.items[i];
        const kv_json *c = kv_json_get(a, "content");
        int64_t id = 0;
        int special = 0;
        kv_json_get_int(a, "id", &id);
        kv_json_get_bool(a, "special", &special);
        if (tok->len[id] == UINT32_MAX)
            st = kv_tok_set_piece(tok, (int32_t)id, c->u.str, (size_t)c->len, 0.0f, special ? KV_TOKEN_CONTROL : KV_TOKEN_USER_DEFINED, err);
    }
    for (uint64_t i = 0; !st && i < vocab->len; i++) {
        const kv_json *v = &vocab->u.items[i];
        if (tok->len[v->ival] == UINT32_MAX) st = kv_tok_set_piece(tok, (int32_t)v->ival, v->key, v->key_len, 0.0f, KV_TOKEN_NORMAL, err);
    }
    if (!st) st = kv_tok_finish(tok, err);
    if (st) {
        kv_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return KV_OK;
}

/* model.merges: "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20) */
static kv_status hf_merges(const kv_json *merges, kv_tokenizer *tok, kv_error *err) {
    kv_status st = KV_OK;
    for (uint64_t i = 0; !st && i < merges->len; i++) {
        const kv_json *m = &merges->u.items[i];
        if (m->type == KV_JSON_STRING) {
            const char *sp = m->len > 1 ? memchr(m->u.str + 1, ' ', (size_t)m->len - 1) : NULL;
            if (!sp) st = kv_fail(err, KV_EFORMAT, "model.merges[%llu] has no space", (unsigned long long)i);
            else st = kv_tok_add_merge(tok, m->u.str, (size_t)(sp - m->u.str), sp + 1, (size_t)m->len - (size_t)(sp - m->u.str) - 1, err);
        } else if (m->type == KV_JSON_ARRAY && m->len == 2 && m->u.items[0].type == KV_JSON_STRING &&
                   m->u.items[1].type == KV_JSON_STRING) {
            st = kv_tok_add_merge(tok, m->u.items[0].u.str, (size_t)m->u.items[0].len, m->u.items[1].u.str,
                                  (size_t)m->u.items[1].len, err);
        } else {
            st = kv_fail(err, KV_EFORMAT, "model.merges[%llu] is neither \"a b\" nor [a, b]", (unsigned long long)i);
        }
        if (st) kv_error_context(err, NULL, (int64_t)m->offset, NULL);
    }
    return st ? st : kv_tok_finish_merges(tok, err);
}

static kv_status load_hf_json_doc(const kv_json *root, kv_tokenizer **out, kv_error *err) {
    const kv_json *model = kv_json_get(root, "model");
    const char *mtype = NULL;
    if (!model) return kv_fail(err, KV_EFORMAT, "not a tokenizer.json (no \"model\" object)");
    if (kv_json_get_str(model, "type", &mtype) == 1 && strcmp(mtype, "BPE"))
        return kv_fail(err, KV_EUNSUPPORTED, "tokenizer.json model type '%s' is not supported (only byte-level BPE)", mtype);
    int byte_fallback = 0;
    kv_json_get_bool(model, "byte_fallback", &byte_fallback);
    if (byte_fallback)
        return kv_fail(err, KV_EUNSUPPORTED, "tokenizer.json is a SentencePiece-style BPE (byte_fallback); load tokenizer.model instead");
    kv_pretokenizer pre = KV_PRETOK_NONE;
    kv_status st = detect_pretok(kv_json_get(root, "pre_tokenizer"), &pre, err);
    if (st) return st;
    const kv_json *vocab = kv_json_get(model, "vocab");
    const kv_json *merges = kv_json_get(model, "merges");
    const kv_json *added = kv_json_get(root, "added_tokens");
    if (!vocab || vocab->type != KV_JSON_OBJECT) return kv_fail(err, KV_EFORMAT, "tokenizer.json model.vocab is not an object");
    if (!merges || merges->type != KV_JSON_ARRAY) return kv_fail(err, KV_EFORMAT, "tokenizer.json model.merges is not an array");
    if (added && added->type != KV_JSON_ARRAY) return kv_fail(err, KV_EFORMAT, "tokenizer.json added_tokens is not an array");
    kv_tokenizer *tok = NULL;
    if ((st = hf_pieces(vocab, added, &tok, err))) return st;
    tok->pretok = pre;
    int ignore = 0;
    kv_json_get_bool(model, "ignore_merges", &ignore);
    tok->ignore_merges = ignore;
    if ((st = hf_merges(merges, tok, err))) {
        kv_tokenizer_free(tok);
        return st;
    }
    const char *unk = NULL;
    if (kv_json_get_str(model, "unk_token", &unk) == 1) tok->unk_id = kv_tok_find(tok, unk, strlen(unk));
    const char *bos = template_bos(kv_json_get(root, "post_processor"));
    if (bos) {
        tok->bos_id = kv_tok_find(tok, bos, strlen(bos));
        tok->add_bos = tok->bos_id >= 0;
    }
    *out = tok;
    return KV_OK;
}

kv_status kv_tokenizer_load_hf_json(const char *path, kv_tokenizer **out, kv_error *err) {
    *out = NULL;
    kv_json_doc *doc = NULL;
    kv_status st = kv_json_parse_file(path, 0, &doc, err);
    if (st) return st;
    st = load_hf_json_doc(kv_json_root(doc), out, err);
    if (st) kv_error_context(err, path, -1, NULL);
    kv_json_free(doc);
    return st;
}

kv_status kv_tokenizer_load_hf_json_memory(const void *data, size_t size, const char *name, kv_tokenizer **out,
                                           kv_error *err) {
    *out = NULL;
    kv_json_doc *doc = NULL;
    kv_json_opts opts = {name, 0, 0, 0};
    kv_status st = kv_json_parse(data, size, &opts, &doc, err);
    if (st) return st;
    st = load_hf_json_doc(kv_json_root(doc), out, err);
    if (st) kv_error_context(err, name, -1, NULL);
    kv_json_free(doc);
    return st;
}

kv_status kv_tokenizer_load_for_model(const kv_model_file *mf, kv_tokenizer **out, kv_error *err) {
    *out = NULL;
    const char *path = NULL;
    kv_status st;
    switch (kv_model_tokenizer(mf, &path)) {
    case KV_TOKSRC_SPM_MODEL: st = kv_tokenizer_load_spm(path, out, err); break;
    case KV_TOKSRC_HF_JSON: st = kv_tokenizer_load_hf_json(path, out, err); break;
    case KV_TOKSRC_GGUF: st = kv_tokenizer_load_gguf(path ? path : kv_model_path(mf), out, err); break;
    default:
        return kv_fail(err, KV_ENOTFOUND, "%s: the model has no tokenizer (tokenizer.model, tokenizer.json or GGUF vocabulary)",
                       kv_model_path(mf));
    }
    if (st) return st;
    const kv_hparams *hp = kv_model_hparams(mf);
    if (hp) {
        if (hp->bos_id >= 0 && hp->bos_id < (*out)->n_vocab) (*out)->bos_id = hp->bos_id;
        if (hp->eos_id >= 0 && hp->eos_id < (*out)->n_vocab) (*out)->eos_id = hp->eos_id;
    }
    return KV_OK;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int file_starts_with(const char *path, const char *magic, size_t n) {
    char buf[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n && !memcmp(buf, magic, n);
}

kv_status kv_tokenizer_load(const char *path, kv_tokenizer **out, kv_error *err) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        kv_fail(err, KV_ENOTFOUND, "no such file or directory");
        kv_error_context(err, path, -1, NULL);
        return KV_ENOTFOUND;
    }
    if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode)) return kv_check_regular_file(path, err);
    if (!S_ISDIR(sb.st_mode)) {
        if (file_starts_with(path, "GGUF", 4)) return kv_tokenizer_load_gguf(path, out, err);
        if (has_suffix(path, ".json")) return kv_tokenizer_load_hf_json(path, out, err);
        if (has_suffix(path, ".model")) return kv_tokenizer_load_spm(path, out, err);
    }
    kv_model_file *mf = NULL;
    kv_status st = kv_model_open(path, &mf, err);
    if (st == KV_OK) {
        st = kv_tokenizer_load_for_model(mf, out, err);
        kv_model_close(mf);
        return st;
    }
    if (S_ISDIR(sb.st_mode)) {
        /* a directory with only tokenizer files (no weights) */
        static const char *const names[] = {"tokenizer.model", "tokenizer.json"};
        for (int i = 0; i < 2; i++) {
            char file[1024];
            struct stat fs;
            snprintf(file, sizeof file, "%s/%s", path, names[i]);
            if (stat(file, &fs) == 0 && S_ISREG(fs.st_mode)) {
                kv_error_clear(err);
                return i == 0 ? kv_tokenizer_load_spm(file, out, err) : kv_tokenizer_load_hf_json(file, out, err);
            }
        }
    }
    return st;
}
