/* tok_spm.c — SentencePiece BPE: the tokenizer.model protobuf parser, the normalizer (identity rules:
 * dummy prefix, whitespace escaping, optional removal of extra whitespace), and the merge engine shared with
 * byte-level BPE. Sources: google/sentencepiece src/sentencepiece_model.proto (field numbers),
 * src/normalizer.cc Normalizer::Normalize, src/bpe_model.cc Model::SampleEncode (symbol list, agenda ordered
 * by score then leftmost, rev_merge resegmentation of UNUSED pieces), src/sentencepiece_processor.cc
 * (unknown pieces -> <0xNN> byte pieces when byte_fallback). Protobuf wire format: protobuf.dev
 * "Encoding" (varint, length-delimited, fixed32/fixed64). */
#include "model/tokenizer.h"
#include "model/unicode.h"

/* ---------------------------------------------------------------------------------------------- */
/* the merge engine                                                                               */
/* ---------------------------------------------------------------------------------------------- */

void kv_bpe_work_free(kv_bpe_work *w) {
    free(w->syms);
    free(w->heap);
    memset(w, 0, sizeof *w);
}

kv_status kv_bpe_sym_push(kv_bpe_work *w, int32_t start, int32_t len, int32_t id, int frozen, kv_error *err) {
    if (w->n_syms == w->cap_syms) {
        size_t cap = w->cap_syms ? w->cap_syms * 2 : 64;
        kv_bpe_sym *s = realloc(w->syms, cap * sizeof *s);
        if (!s) return kv_fail(err, KV_ENOMEM, "out of memory (%zu symbols)", cap);
        w->syms = s;
        w->cap_syms = cap;
    }
    int32_t i = (int32_t)w->n_syms++;
    w->syms[i] = (kv_bpe_sym){start, len, i - 1, -1, id, (uint8_t)(frozen != 0)};
    if (i > 0) w->syms[i - 1].next = i;
    return KV_OK;
}

/* a before b: higher key, then the leftmost pair */
static int pair_before(const kv_bpe_pair *a, const kv_bpe_pair *b) {
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}

static kv_status heap_push(kv_bpe_work *w, kv_bpe_pair p, kv_error *err) {
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 64;
        kv_bpe_pair *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return kv_fail(err, KV_ENOMEM, "out of memory (%zu merge candidates)", cap);
        w->heap = h;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = p;
    return KV_OK;
}

static kv_bpe_pair heap_pop(kv_bpe_work *w) {
    kv_bpe_pair top = w->heap[0];
    kv_bpe_pair last = w->heap[--w->n_heap];
    size_t n = w->n_heap, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!pair_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static kv_status try_pair(kv_bpe_work *w, int32_t l, int32_t r, kv_bpe_pair_fn fn, void *ctx, kv_error *err) {
    if (l < 0 || r < 0 || w->syms[l].frozen || w->syms[r].frozen) return KV_OK;
    double key;
    int32_t result;
    if (!fn(ctx, w, l, r, &key, &result)) return KV_OK;
    kv_bpe_pair p = {key, l, r, w->syms[l].len + w->syms[r].len, result};
    return heap_push(w, p, err);
}

kv_status kv_bpe_run(kv_bpe_work *w, kv_bpe_pair_fn pair_fn, kv_bpe_merge_fn on_merge, void *ctx, kv_error *err) {
    w->n_heap = 0;
    kv_status st = KV_OK;
    for (size_t i = 1; !st && i < w->n_syms; i++) st = try_pair(w, (int32_t)i - 1, (int32_t)i, pair_fn, ctx, err);
    while (!st && w->n_heap) {
        kv_bpe_pair p = heap_pop(w);
        kv_bpe_sym *L = &w->syms[p.left], *R = &w->syms[p.right];
        /* stale candidate: one side has merged since it was pushed */
        if (!L->len || !R->len || L->next != p.right || L->len + R->len != p.size) continue;
        if (on_merge) on_merge(ctx, w, &p);
        L->len += R->len;
        L->id = p.result;
        L->next = R->next;
        if (R->next >= 0) w->syms[R->next].prev = p.left;
        R->len = 0;
        st = try_pair(w, L->prev, p.left, pair_fn, ctx, err);
        if (!st) st = try_pair(w, p.left, L->next, pair_fn, ctx, err);
    }
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* SentencePiece encode                                                                           */
/* ---------------------------------------------------------------------------------------------- */

static const char k_space_symbol[] = "\xE2\x96\x81";   /* U+2581 */

/* Normalizer::Normalize with an identity character map. */
static kv_status spm_normalize(const kv_tokenizer *tok, const char *text, size_t len, char **out, size_t *out_len,
                               kv_error *err) {
    size_t i = 0;
    if (tok->remove_extra_whitespaces)
        while (i < len && text[i] == ' ') i++;
    *out = NULL;
    *out_len = 0;
    if (i == len) return KV_OK;
    char *buf = kv_malloc(3 * (len - i) + 4, err);
    if (!buf) return KV_ENOMEM;
    size_t n = 0;
    const char *space = tok->escape_whitespaces ? k_space_symbol : " ";
    size_t space_len = tok->escape_whitespaces ? 3 : 1;
    if (tok->add_dummy_prefix) {
        memcpy(buf, space, space_len);
        n = space_len;
    }
    int prev_space = tok->remove_extra_whitespaces;
    for (; i < len; i++) {
        if (text[i] == ' ') {
            if (!prev_space) {
                memcpy(buf + n, space, space_len);
                n += space_len;
            }
            prev_space = tok->remove_extra_whitespaces;
        } else {
            buf[n++] = text[i];
            prev_space = 0;
        }
    }
    if (tok->remove_extra_whitespaces)
        while (n >= space_len && !memcmp(buf + n - space_len, space, space_len)) n -= space_len;
    *out = buf;
    *out_len = n;
    return KV_OK;
}

static int spm_mergeable(uint8_t type) {
    return type == KV_TOKEN_NORMAL || type == KV_TOKEN_USER_DEFINED || type == KV_TOKEN_UNUSED;
}

typedef struct spm_ctx {
    const kv_tokenizer *tok;
    const char *norm;
    int32_t (*rev)[4];      /* UNUSED piece id -> spans (left start, len, right start, len); NULL if none */
} spm_ctx;

static int spm_pair(void *c, const kv_bpe_work *w, int32_t l, int32_t r, double *key, int32_t *result) {
    spm_ctx *x = c;
    const kv_bpe_sym *L = &w->syms[l], *R = &w->syms[r];
    int32_t id = kv_tok_find(x->tok, x->norm + L->start, (size_t)(L->len + R->len));
    if (id < 0 || !spm_mergeable(x->tok->types[id])) return 0;
    *key = x->tok->scores[id];
    *result = id;
    /* sentencepiece remembers how an unused piece was formed to split it again at the end */
    if (x->rev && x->tok->types[id] == KV_TOKEN_UNUSED) {
        x->rev[id][0] = L->start;
        x->rev[id][1] = L->len;
        x->rev[id][2] = R->start;
        x->rev[id][3] = R->len;
    }
    return 1;
}

static kv_status spm_emit_unknown(const kv_tokenizer *tok, const char *s, size_t n, kv_idvec *out, kv_error *err) {
    kv_status st = KV_OK;
    if (tok->byte_fallback) {
        for (size_t i = 0; !st && i < n; i++) {
            int32_t b = tok->byte_ids[(uint8_t)s[i]];
            if (b < 0 && tok->unk_id < 0) return kv_fail(err, KV_EFORMAT, "no <0x%02X> byte piece and no <unk> piece", (uint8_t)s[i]);
            st = kv_idvec_push(out, b >= 0 ? b : tok->unk_id, err);
        }
        return st;
    }
    if (tok->unk_id < 0) return kv_fail(err, KV_EFORMAT, "text needs the <unk> piece, which the vocabulary lacks");
    return kv_idvec_push(out, tok->unk_id, err);
}

/* Model::SampleEncode's resegment: an UNUSED piece is replaced by the two pieces it was formed from. */
static kv_status spm_emit(const spm_ctx *x, int32_t start, int32_t len, kv_idvec *out, kv_error *err) {
    int32_t stack[64][2];
    int depth = 0;
    stack[depth][0] = start;
    stack[depth][1] = len;
    depth++;
    kv_status st = KV_OK;
    while (!st && depth > 0) {
        depth--;
        int32_t s = stack[depth][0], n = stack[depth][1];
        int32_t id = kv_tok_find(x->tok, x->norm + s, (size_t)n);
        if (id >= 0 && x->rev && x->tok->types[id] == KV_TOKEN_UNUSED && x->rev[id][1] > 0 && depth + 2 <= 64) {
            stack[depth][0] = x->rev[id][2];   /* right pushed first: the left comes out first */
            stack[depth][1] = x->rev[id][3];
            stack[depth + 1][0] = x->rev[id][0];
            stack[depth + 1][1] = x->rev[id][1];
            depth += 2;
            continue;
        }
        if (id >= 0 && spm_mergeable(x->tok->types[id])) st = kv_idvec_push(out, id, err);
        else st = spm_emit_unknown(x->tok, x->norm + s, (size_t)n, out, err);
    }
    return st;
}

static int is_isolated(const kv_tokenizer *tok, char c) { return (uint8_t)c < 128 && tok->isolated[(uint8_t)c]; }

/* norm[p] starts a U+2581 that follows another character than U+2581 */
static int is_word_start(const char *norm, size_t n, size_t p) {
    if (p + 3 > n || memcmp(norm + p, k_space_symbol, 3)) return 0;
    return p < 3 || memcmp(norm + p - 3, k_space_symbol, 3) != 0;
}

/* Encodes norm[start, end): characters (user-defined pieces first, longest match, frozen), merges, output. */
static kv_status spm_encode_run(const kv_tokenizer *tok, spm_ctx *x, kv_bpe_work *w, size_t start, size_t end,
                                kv_idvec *out, kv_error *err) {
    kv_status st = KV_OK;
    w->n_syms = 0;
    for (size_t i = start; !st && i < end;) {
        int32_t id;
        size_t l = kv_tok_match_special(tok, x->norm + i, end - i, &id);
        int frozen = l > 0;
        if (!l) {
            uint32_t cp;
            int ok;
            l = kv_utf8_decode((const uint8_t *)x->norm + i, end - i, &cp, &ok);
        }
        st = kv_bpe_sym_push(w, (int32_t)i, (int32_t)l, -1, frozen, err);
        i += l;
    }
    if (!st) st = kv_bpe_run(w, spm_pair, NULL, x, err);
    for (int32_t i = 0; !st && i >= 0 && w->n_syms; i = w->syms[i].next) st = spm_emit(x, w->syms[i].start, w->syms[i].len, out, err);
    return st;
}

kv_status kv_spm_encode(const kv_tokenizer *tok, const char *text, size_t len, kv_idvec *out, kv_error *err) {
    char *norm = NULL;
    size_t n = 0;
    kv_status st = spm_normalize(tok, text, len, &norm, &n, err);
    if (st || !n) {
        free(norm);
        return st;
    }
    if (n > (size_t)INT32_MAX) {
        free(norm);
        return kv_fail(err, KV_ERANGE, "text too long");
    }
    kv_bpe_work w = {0};
    spm_ctx x = {tok, norm, NULL};
    if (tok->has_unused) {
        x.rev = kv_calloc((size_t)tok->n_vocab, sizeof *x.rev, err);
        if (!x.rev) st = KV_ENOMEM;
    }
    /* independent runs: merges never cross an isolated byte, nor (space_cut) the start of a word */
    for (size_t i = 0; !st && i < n;) {
        size_t e = i + 1;
        if (!is_isolated(tok, norm[i]))
            while (e < n && !is_isolated(tok, norm[e]) && !(tok->space_cut && is_word_start(norm, n, e))) e++;
        st = spm_encode_run(tok, &x, &w, i, e, out, err);
        i = e;
    }
    kv_bpe_work_free(&w);
    free(x.rev);
    free(norm);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* tokenizer.model (protobuf)                                                                     */
/* ---------------------------------------------------------------------------------------------- */

typedef struct pb_reader {
    const uint8_t *base;
    size_t pos, end;
} pb_reader;

typedef struct pb_field {
    uint32_t num;
    uint32_t wire;
    uint64_t v;                 /* varint / fixed value */
    size_t start, len;          /* length-delimited payload */
    size_t offset;              /* offset of the tag */
} pb_field;

static kv_status pb_varint(pb_reader *r, uint64_t *out, kv_error *err) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->pos >= r->end) return kv_fail(err, KV_EFORMAT, "protobuf: truncated varint");
        uint8_t b = r->base[r->pos++];
        if (shift == 63 && (b & 0x7E)) return kv_fail(err, KV_EFORMAT, "protobuf: varint overflows 64 bits");
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return KV_OK;
        }
    }
    return kv_fail(err, KV_EFORMAT, "protobuf: varint longer than 10 bytes");
}

/* Reads the next field; returns 0 at the end, 1 with *f filled, or a negative value on error (err set). */
static int pb_next(pb_reader *r, pb_field *f, kv_error *err) {
    if (r->pos >= r->end) return 0;
    f->offset = r->pos;
    uint64_t tag;
    if (pb_varint(r, &tag, err)) return -1;
    f->num = (uint32_t)(tag >> 3);
    f->wire = (uint32_t)(tag & 7);
    if (tag >> 3 == 0 || tag >> 32) { kv_fail(err, KV_EFORMAT, "protobuf: invalid field number"); return -1; }
    switch (f->wire) {
    case 0:
        if (pb_varint(r, &f->v, err)) return -1;
        return 1;
    case 1:
        if (r->end - r->pos < 8) { kv_fail(err, KV_EFORMAT, "protobuf: truncated fixed64"); return -1; }
        f->v = kv_rd_u64(r->base + r->pos);
        r->pos += 8;
        return 1;
    case 5:
        if (r->end - r->pos < 4) { kv_fail(err, KV_EFORMAT, "protobuf: truncated fixed32"); return -1; }
        f->v = kv_rd_u32(r->base + r->pos);
        r->pos += 4;
        return 1;
    case 2: {
        uint64_t len;
        if (pb_varint(r, &len, err)) return -1;
        if (len > r->end - r->pos) {
            kv_fail(err, KV_EFORMAT, "protobuf: field %u of %llu bytes runs past its message", f->num, (unsigned long long)len);
            return -1;
        }
        f->start = r->pos;
        f->len = (size_t)len;
        r->pos += (size_t)len;
        return 1;
    }
    default:
        kv_fail(err, KV_EFORMAT, "protobuf: unsupported wire type %u (field %u)", f->wire, f->num);
        return -1;
    }
}

static kv_status pb_expect(const pb_field *f, uint32_t wire, const char *what, kv_error *err) {
    if (f->wire == wire) return KV_OK;
    return kv_fail(err, KV_EFORMAT, "%s has wire type %u, expected %u", what, f->wire, wire);
}

typedef struct spm_spec {
    int64_t model_type;         /* UNIGRAM = 1 (proto default), BPE = 2 */
    int byte_fallback, ws_suffix;
    int64_t ids[4];             /* unk, bos, eos, pad */
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    size_t charsmap_len;
} spm_spec;

static kv_status parse_trainer(const uint8_t *base, size_t start, size_t len, spm_spec *s, kv_error *err) {
    pb_reader r = {base, start, start + len};
    pb_field f;
    int k;
    while ((k = pb_next(&r, &f, err)) == 1) {
        kv_status st = KV_OK;
        switch (f.num) {
        case 3: if (!(st = pb_expect(&f, 0, "trainer_spec.model_type", err))) s->model_type = (int64_t)f.v; break;
        case 24: if (!(st = pb_expect(&f, 0, "trainer_spec.treat_whitespace_as_suffix", err))) s->ws_suffix = f.v != 0; break;
        case 35: if (!(st = pb_expect(&f, 0, "trainer_spec.byte_fallback", err))) s->byte_fallback = f.v != 0; break;
        case 40: case 41: case 42: case 43:
            /* int32: negative values arrive sign-extended to 64 bits */
            if (!(st = pb_expect(&f, 0, "trainer_spec.*_id", err))) s->ids[f.num - 40] = (int64_t)(int32_t)(uint32_t)f.v;
            break;
        default: break;
        }
        if (st) {
            kv_error_context(err, NULL, (int64_t)f.offset, NULL);
            return st;
        }
    }
    return k < 0 ? err ? err->status : KV_EFORMAT : KV_OK;
}

static kv_status parse_normalizer(const uint8_t *base, size_t start, size_t len, spm_spec *s, kv_error *err) {
    pb_reader r = {base, start, start + len};
    pb_field f;
    int k;
    while ((k = pb_next(&r, &f, err)) == 1) {
        kv_status st = KV_OK;
        switch (f.num) {
        case 2: if (!(st = pb_expect(&f, 2, "normalizer_spec.precompiled_charsmap", err))) s->charsmap_len = f.len; break;
        case 3: if (!(st = pb_expect(&f, 0, "normalizer_spec.add_dummy_prefix", err))) s->add_dummy_prefix = f.v != 0; break;
        case 4: if (!(st = pb_expect(&f, 0, "normalizer_spec.remove_extra_whitespaces", err))) s->remove_extra_ws = f.v != 0; break;
        case 5: if (!(st = pb_expect(&f, 0, "normalizer_spec.escape_whitespaces", err))) s->escape_ws = f.v != 0; break;
        default: break;
        }
        if (st) {
            kv_error_context(err, NULL, (int64_t)f.offset, NULL);
            return st;
        }
    }
    return k < 0 ? err ? err->status : KV_EFORMAT : KV_OK;
}

/* One ModelProto.SentencePiece {piece = 1, score = 2, type = 3}. */
static kv_status parse_piece(kv_tokenizer *tok, int32_t id, const uint8_t *base, size_t start, size_t len, kv_error *err) {
    pb_reader r = {base, start, start + len};
    pb_field f;
    int k;
    const char *piece = NULL;
    size_t piece_len = 0;
    float score = 0;
    uint64_t type = KV_TOKEN_NORMAL;
    while ((k = pb_next(&r, &f, err)) == 1) {
        kv_status st = KV_OK;
        switch (f.num) {
        case 1:
            if (!(st = pb_expect(&f, 2, "piece", err))) {
                piece = (const char *)base + f.start;
                piece_len = f.len;
            }
            break;
        case 2: {
            uint32_t bits = (uint32_t)f.v;
            if (!(st = pb_expect(&f, 5, "score", err))) memcpy(&score, &bits, 4);
            break;
        }
        case 3:
            if (!(st = pb_expect(&f, 0, "type", err)) && (f.v < KV_TOKEN_NORMAL || f.v > KV_TOKEN_BYTE))
                st = kv_fail(err, KV_EFORMAT, "piece %d has unknown type %llu", (int)id, (unsigned long long)f.v);
            type = f.v;
            break;
        default: break;
        }
        if (st) {
            kv_error_context(err, NULL, (int64_t)f.offset, NULL);
            return st;
        }
    }
    if (k < 0) return err ? err->status : KV_EFORMAT;
    if (!piece_len) {
        kv_fail(err, KV_EFORMAT, "piece %d is empty", (int)id);
        kv_error_context(err, NULL, (int64_t)start, NULL);
        return KV_EFORMAT;
    }
    return kv_tok_set_piece(tok, id, piece, piece_len, score, (kv_token_type)type, err);
}

kv_status kv_spm_parse(const uint8_t *data, size_t size, const char *name, kv_tokenizer **out, kv_error *err) {
    *out = NULL;
    spm_spec spec = {1, 0, 0, {0, 1, 2, -1}, 1, 1, 1, 0};
    int64_t n_pieces = 0;
    pb_reader r = {data, 0, size};
    pb_field f;
    int k;
    kv_status st = KV_OK;
    while ((k = pb_next(&r, &f, err)) == 1) {
        if (f.num == 1 || f.num == 2 || f.num == 3) {
            if ((st = pb_expect(&f, 2, f.num == 1 ? "ModelProto.pieces" : f.num == 2 ? "ModelProto.trainer_spec"
                                                                                     : "ModelProto.normalizer_spec", err))) {
                kv_error_context(err, name, (int64_t)f.offset, NULL);
                return st;
            }
        }
        if (f.num == 1) n_pieces++;
        else if (f.num == 2) st = parse_trainer(data, f.start, f.len, &spec, err);
        else if (f.num == 3) st = parse_normalizer(data, f.start, f.len, &spec, err);
        if (st) {
            kv_error_context(err, name, -1, NULL);
            return st;
        }
    }
    if (k < 0) {
        kv_error_context(err, name, (int64_t)f.offset, NULL);
        return err ? err->status : KV_EFORMAT;
    }
    if (n_pieces == 0) {
        kv_fail(err, KV_EFORMAT, "not a SentencePiece model: no pieces");
        kv_error_context(err, name, 0, NULL);
        return KV_EFORMAT;
    }
    if (spec.model_type != 2) {
        kv_fail(err, KV_EUNSUPPORTED, "SentencePiece model type %lld is not supported (only BPE = 2; unigram = 1)",
                (long long)spec.model_type);
        kv_error_context(err, name, -1, NULL);
        return KV_EUNSUPPORTED;
    }
    if (spec.charsmap_len || spec.ws_suffix) {
        kv_fail(err, KV_EUNSUPPORTED, "SentencePiece %s is not supported",
                spec.ws_suffix ? "treat_whitespace_as_suffix" : "normalization with a precompiled character map");
        kv_error_context(err, name, -1, NULL);
        return KV_EUNSUPPORTED;
    }
    if (n_pieces > KV_TOK_MAX_VOCAB) return kv_fail(err, KV_ERANGE, "%lld pieces is too many", (long long)n_pieces);
    kv_tokenizer *tok = NULL;
    if ((st = kv_tok_create(KV_TOKENIZER_SPM, (int32_t)n_pieces, &tok, err))) return st;
    r = (pb_reader){data, 0, size};
    int32_t id = 0;
    while (!st && pb_next(&r, &f, err) == 1)
        if (f.num == 1) st = parse_piece(tok, id++, data, f.start, f.len, err);
    if (!st) st = kv_tok_finish(tok, err);
    if (!st) {
        tok->add_dummy_prefix = spec.add_dummy_prefix;
        tok->remove_extra_whitespaces = spec.remove_extra_ws;
        tok->escape_whitespaces = spec.escape_ws;
        tok->byte_fallback = spec.byte_fallback;
        tok->add_bos = 1;
        int32_t *dst[4] = {&tok->unk_id, &tok->bos_id, &tok->eos_id, &tok->pad_id};
        for (int i = 0; i < 4; i++) *dst[i] = spec.ids[i] >= 0 && spec.ids[i] < tok->n_vocab ? (int32_t)spec.ids[i] : -1;
    }
    if (st) {
        kv_error_context(err, name, -1, NULL);
        kv_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return KV_OK;
}
