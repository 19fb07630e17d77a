/* test_tokenizer.c — tokenizers: exact ids against the proxy model's reference (HF/sentencepiece) and
 * llama.cpp's test vectors for Llama-2 SPM, Llama-3, Qwen2 and GPT-2; the WikiText-2 token count of the
 * reference perplexity; decode(encode(s)) == s; tokenizer.json loading; malformed protobuf; the CLI. */
#include "test.h"
#include "../src/core/core.h"
#include "../src/io/json.h"
#include "../src/model/tokenizer.h"
#include "../src/model/unicode.h"

static int sanitized(void) { return getenv("KVANT_SANITIZED") != NULL; }

static kv_tokenizer *load_shared(kv_test_ctx *T, const char *rel, kv_error *err) {
    char path[1024];
    kv_test_shared(path, sizeof path, rel);
    if (!kv_test_exists(path)) return NULL;
    kv_tokenizer *tok = NULL;
    CHECK_OK(kv_tokenizer_load(path, &tok, err), err);
    return tok;
}

static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s (%zu):", label, n);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, "\n");
}

/* encode(text) == expected, and decode gives text back */
static void check_case(kv_test_ctx *T, const kv_tokenizer *tok, const char *text, size_t len, const int32_t *exp,
                       size_t nexp, const char *what) {
    kv_error err;
    kv_error_clear(&err);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(kv_tokenize(tok, text, len, 0, &ids, &n, &err), &err);
    if (!ids_equal(ids, n, exp, nexp)) {
        CHECK_MSG(0, "%s: ids differ for \"%.60s\"", what, text);
        print_ids("got", ids, n);
        print_ids("expected", exp, nexp);
    }
    char *back = NULL;
    size_t blen = 0;
    CHECK_OK(kv_detokenize(tok, ids, n, &back, &blen, &err), &err);
    CHECK_MSG(back && blen == len && !memcmp(back, text, len), "%s: decode(encode(\"%.60s\")) = \"%.60s\"", what, text,
              back ? back : "(null)");
    free(back);
    free(ids);
}

/* ---------------------------------------------------------------------------------------------- */

KV_TEST(tok_proxy_reference_cases) {
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = load_shared(T, "models/proxy-27m/tokenizer.model", &err);
    if (!tok) SKIP("proxy-27m tokenizer.model not found");
    char path[1024];
    kv_test_shared(path, sizeof path, "models/proxy-27m/ref/tokenizer_ref.json");
    kv_json_doc *doc = NULL;
    REQUIRE_OK(kv_json_parse_file(path, 0, &doc, &err), &err);
    const kv_json *root = kv_json_root(doc);
    REQUIRE(root && root->type == KV_JSON_ARRAY && root->len >= 3);
    for (uint64_t i = 0; i < root->len; i++) {
        const kv_json *c = kv_json_at(root, i);
        const kv_json *text = kv_json_get(c, "text"), *ids = kv_json_get(c, "ids");
        REQUIRE(text && text->type == KV_JSON_STRING && ids && ids->type == KV_JSON_ARRAY);
        int32_t *exp = malloc((ids->len + 1) * sizeof *exp);
        for (uint64_t k = 0; k < ids->len; k++) exp[k] = (int32_t)ids->u.items[k].ival;
        check_case(T, tok, text->u.str, (size_t)text->len, exp, (size_t)ids->len, "proxy");
        free(exp);
    }
    CHECK_EQ_INT(kv_tokenizer_n_vocab(tok), 8192);
    CHECK_EQ_INT(kv_tokenizer_bos(tok), 1);
    CHECK_EQ_INT(kv_tokenizer_eos(tok), 2);
    CHECK_EQ_INT(kv_tokenizer_unk(tok), 0);
    CHECK_EQ_INT(kv_tokenizer_get_kind(tok), KV_TOKENIZER_SPM);
    CHECK_EQ_INT(kv_tokenizer_token_type(tok, 0), KV_TOKEN_UNKNOWN);
    CHECK_EQ_INT(kv_tokenizer_token_type(tok, 1), KV_TOKEN_CONTROL);
    CHECK_EQ_INT(kv_tokenizer_token_type(tok, 3 + 0x41), KV_TOKEN_BYTE);
    CHECK_STR(kv_tokenizer_piece(tok, 3 + 0x41, NULL), "<0x41>");
    CHECK(kv_tokenizer_piece(tok, 8192, NULL) == NULL);
    kv_json_free(doc);
    kv_tokenizer_free(tok);
}

/* llama.cpp's vectors: NAME.gguf.inp holds strings separated by "\n__ggml_vocab_test__\n", NAME.gguf.out the
 * ids of each, one line per string. */
static void run_vocab_vectors(kv_test_ctx *T, const char *name) {
    char rel[256], path[1024];
    snprintf(rel, sizeof rel, "tokenizers/ggml-vocab-%s.gguf", name);
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = load_shared(T, rel, &err);
    if (!tok) SKIP("%.200s not found", rel);
    snprintf(rel, sizeof rel, "tokenizers/ggml-vocab-%s.gguf.inp", name);
    size_t ninp = 0, nout = 0;
    char *inp = kv_test_read_file(kv_test_shared(path, sizeof path, rel), &ninp);
    snprintf(rel, sizeof rel, "tokenizers/ggml-vocab-%s.gguf.out", name);
    char *out = kv_test_read_file(kv_test_shared(path, sizeof path, rel), &nout);
    REQUIRE(inp && out);
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep), pos = 0, opos = 0;
    int cases = 0;
    int32_t *exp = malloc(4096 * sizeof *exp);
    while (pos < ninp) {
        char *end = memmem(inp + pos, ninp - pos, sep, seplen);
        if (!end) break;
        size_t len = (size_t)(end - (inp + pos));
        char *eol = memchr(out + opos, '\n', nout - opos);
        REQUIRE(eol);
        size_t nexp = 0;
        char *p = out + opos;
        while (p < eol && nexp < 4096) {
            char *q;
            long v = strtol(p, &q, 10);
            if (q == p) break;
            exp[nexp++] = (int32_t)v;
            p = q;
        }
        check_case(T, tok, inp + pos, len, exp, nexp, name);
        cases++;
        pos += len + seplen;
        opos = (size_t)(eol - out) + 1;
    }
    CHECK_EQ_INT(cases, 46);
    free(exp);
    free(inp);
    free(out);
    kv_tokenizer_free(tok);
}

KV_TEST(tok_vectors_llama_spm) { run_vocab_vectors(T, "llama-spm"); }
KV_TEST(tok_vectors_llama_bpe) { run_vocab_vectors(T, "llama-bpe"); }
KV_TEST(tok_vectors_qwen2) { run_vocab_vectors(T, "qwen2"); }
KV_TEST(tok_vectors_gpt2) { run_vocab_vectors(T, "gpt-2"); }

KV_TEST(tok_wikitext2_token_count) {
    /* ref/ppl_ref.json: tokens = [BOS] + encode(whole wikitext2-test.txt) has 409438 tokens */
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = load_shared(T, "models/proxy-27m/tokenizer.model", &err);
    if (!tok) SKIP("proxy-27m tokenizer.model not found");
    char path[1024];
    size_t len = 0;
    char *text = kv_test_read_file(kv_test_shared(path, sizeof path, "data/wikitext2-test.txt"), &len);
    REQUIRE(text);
    int32_t *ids = NULL;
    size_t n = 0;
    REQUIRE_OK(kv_tokenize(tok, text, len, 1, &ids, &n, &err), &err);
    CHECK_EQ_INT(n, 409438);
    CHECK_EQ_INT(ids[0], 1);
    /* the same through the GGUF that llama.cpp's converter wrote for the proxy model */
    kv_tokenizer *g = load_shared(T, "models/proxy-27m-gguf/proxy-27m-bf16.gguf", &err);
    if (g) {
        int32_t *ids2 = NULL;
        size_t n2 = 0;
        CHECK_OK(kv_tokenize(g, text, len, 1, &ids2, &n2, &err), &err);
        CHECK(ids_equal(ids, n, ids2, n2));
        free(ids2);
        kv_tokenizer_free(g);
    }
    free(ids);
    free(text);
    kv_tokenizer_free(tok);
}

KV_TEST(tok_spm_independent_runs_match_whole_text) {
    /* encoding in runs cut at isolated bytes and word starts gives the ids of one merge over the whole text */
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = load_shared(T, "models/proxy-27m/tokenizer.model", &err);
    if (!tok) SKIP("proxy-27m tokenizer.model not found");
    CHECK(tok->space_cut);
    CHECK(tok->isolated['\n']);
    char path[1024];
    size_t len = 0;
    char *held = kv_test_read_file(kv_test_shared(path, sizeof path, "data/heldout.txt"), &len);
    REQUIRE(held);
    len = KV_MIN(len, (size_t)(sanitized() ? 60000 : 300000));
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(kv_tokenize(tok, held, len, 0, &a, &na, &err), &err);
    tok->space_cut = 0;
    memset(tok->isolated, 0, sizeof tok->isolated);
    CHECK_OK(kv_tokenize(tok, held, len, 0, &b, &nb, &err), &err);
    CHECK(na > 1000 && ids_equal(a, na, b, nb));
    free(a);
    free(b);
    free(held);
    kv_tokenizer_free(tok);
}

static void roundtrip(kv_test_ctx *T, const kv_tokenizer *tok, const char *text, size_t len, const char *what) {
    kv_error err;
    kv_error_clear(&err);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(kv_tokenize(tok, text, len, 1, &ids, &n, &err), &err);
    char *back = NULL;
    size_t blen = 0;
    CHECK_OK(kv_detokenize(tok, ids, n, &back, &blen, &err), &err);
    CHECK_MSG(back && blen == len && !memcmp(back, text, len), "%s: round trip of %zu bytes gave %zu bytes", what, len, blen);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < kv_tokenizer_n_vocab(tok));
    free(back);
    free(ids);
}

KV_TEST(tok_roundtrip_texts) {
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *spm = load_shared(T, "models/proxy-27m/tokenizer.model", &err);
    kv_tokenizer *bpe = load_shared(T, "tokenizers/ggml-vocab-llama-bpe.gguf", &err);
    if (!spm || !bpe) SKIP("shared tokenizers not found");
    static const char *texts[] = {
        "", " ", "   ", "\n", "\n\n \n", "a", "  two  spaces  ", "tab\tand\r\nCRLF\r\n",
        "invalid \xff\xfe bytes \xc3 and a truncated \xe2\x82", "surrogate \xed\xa0\x80 overlong \xc0\xaf",
        "emoji \xf0\x9f\x99\x82\xf0\x9f\xa6\x99 and CJK \xe6\x9d\xb1\xe4\xba\xac", "numbers 1234567890 3.14159",
        "<s> looks special but is text </s>",
    };
    for (size_t i = 0; i < KV_ARRAY_LEN(texts); i++) {
        roundtrip(T, spm, texts[i], strlen(texts[i]), "spm");
        roundtrip(T, bpe, texts[i], strlen(texts[i]), "bpe");
    }
    /* U+2581 in the text is a space to SentencePiece (it decodes as one); byte-level BPE keeps it */
    static const char lower_block[] = "\xe2\x96\x81 literal U+2581 \xe2\x96\x81\xe2\x96\x81";
    roundtrip(T, bpe, lower_block, strlen(lower_block), "bpe");
    char path[1024];
    size_t len = 0;
    char *held = kv_test_read_file(kv_test_shared(path, sizeof path, "data/heldout.txt"), &len);
    REQUIRE(held);
    size_t part = sanitized() ? KV_MIN(len, (size_t)200000) : len;
    roundtrip(T, spm, held, part, "spm heldout");
    roundtrip(T, bpe, held, KV_MIN(part, (size_t)300000), "bpe heldout");
    free(held);
    /* random bytes (mostly malformed UTF-8) */
    kv_rng rng;
    kv_rng_seed(&rng, 7);
    for (int r = 0; r < 200; r++) {
        char buf[48];
        size_t n = 1 + kv_rng_u64(&rng) % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = r & 1 ? (char)kv_rng_u64(&rng) : "ab \n\xc3\xa9\xe2\x96'1"[kv_rng_u64(&rng) % 10];
        roundtrip(T, spm, buf, n, "spm random");
        roundtrip(T, bpe, buf, n, "bpe random");
    }
    /* every byte value alone */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        roundtrip(T, spm, &c, 1, "spm byte");
        roundtrip(T, bpe, &c, 1, "bpe byte");
    }
    kv_tokenizer_free(spm);
    kv_tokenizer_free(bpe);
}

KV_TEST(tok_decode_rules) {
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = load_shared(T, "models/proxy-27m/tokenizer.model", &err);
    if (!tok) SKIP("proxy-27m tokenizer.model not found");
    /* control tokens vanish, the dummy prefix is stripped once, <unk> is sentencepiece's " ⁇ " */
    int32_t *ids = NULL;
    size_t n = 0;
    REQUIRE_OK(kv_tokenize(tok, "Hello world", 11, 1, &ids, &n, &err), &err);
    REQUIRE(n >= 2 && ids[0] == 1);
    int32_t with_eos[64];
    REQUIRE(n + 1 < 64);
    memcpy(with_eos, ids, n * sizeof *ids);
    with_eos[n] = 2;
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(kv_detokenize(tok, with_eos, n + 1, &text, &len, &err), &err);
    CHECK_STR(text, "Hello world");
    free(text);
    int32_t unk[] = {0};
    CHECK_OK(kv_detokenize(tok, unk, 1, &text, &len, &err), &err);
    CHECK_STR(text, " \xe2\x81\x87 ");
    free(text);
    int32_t bad[] = {5, 8192};
    CHECK_EQ_INT(kv_detokenize(tok, bad, 2, &text, &len, &err), KV_ERANGE);
    CHECK(text == NULL);
    /* one token's text as llama-tokenize prints it */
    char buf[64];
    size_t l = kv_token_to_text(tok, 1, buf, sizeof buf);
    CHECK(l == 3 && !memcmp(buf, "<s>", 3));
    l = kv_token_to_text(tok, 3 + 0x0A, buf, sizeof buf);
    CHECK(l == 1 && buf[0] == '\n');
    CHECK_EQ_INT(kv_token_to_text(tok, -1, buf, sizeof buf), 0);
    /* a tokenizer without BOS refuses add_bos, an empty text gives no tokens */
    free(ids);
    CHECK_OK(kv_tokenize(tok, "", 0, 0, &ids, &n, &err), &err);
    CHECK(n == 0 && ids == NULL);
    CHECK_OK(kv_tokenize(tok, "", 0, 1, &ids, &n, &err), &err);
    CHECK(n == 1 && ids[0] == 1);
    free(ids);
    kv_tokenizer_free(tok);
}

/* ---------------------------------------------------------------------------------------------- */
/* pre-tokenizers and unicode                                                                     */
/* ---------------------------------------------------------------------------------------------- */

typedef struct split_acc { char parts[64][64]; int n; } split_acc;

static kv_status acc_emit(void *ctx, size_t start, size_t end, kv_error *err) {
    split_acc *a = ctx;
    (void)err;
    if (a->n < 64) {
        size_t l = KV_MIN(end - start, (size_t)63);
        memcpy(a->parts[a->n], (const char *)a->parts[63] + start, l);  /* the text sits in parts[63] */
        a->parts[a->n][l] = 0;
        a->n++;
    }
    return KV_OK;
}

/* expected: parts joined by '|' */
static void check_split(kv_test_ctx *T, kv_pretokenizer kind, const char *text, const char *expected) {
    split_acc a;
    memset(&a, 0, sizeof a);
    kv_strlcpy(a.parts[63], text, sizeof a.parts[63]);
    char src[64];
    kv_strlcpy(src, text, sizeof src);
    REQUIRE_OK(kv_pretok_split(kind, src, strlen(src), acc_emit, &a, NULL), (kv_error *)NULL);
    char joined[512] = "";
    for (int i = 0; i < a.n; i++) {
        if (i) strcat(joined, "|");
        strcat(joined, a.parts[i]);
    }
    CHECK_MSG(!strcmp(joined, expected), "split %d of \"%s\": \"%s\", expected \"%s\"", (int)kind, text, joined, expected);
}

KV_TEST(tok_pretokenizer_splits) {
    /* expectations follow the regexes (pretok.c header) by hand */
    check_split(T, KV_PRETOK_GPT2, "Hello   world", "Hello|  | world");
    check_split(T, KV_PRETOK_GPT2, "I'm 'S x", "I|'m| '|S| x");
    check_split(T, KV_PRETOK_GPT2, "abc123 456!!  ", "abc|123| 456|!!|  ");
    check_split(T, KV_PRETOK_GPT2, "\t\tx", "\t|\t|x");   /* \s+(?!\S) leaves the last tab, \s+ takes it */
    check_split(T, KV_PRETOK_LLAMA3, "I'M 12345 (x)", "I|'M| |123|45| (|x|)");
    check_split(T, KV_PRETOK_QWEN2, "12345", "1|2|3|4|5");
    check_split(T, KV_PRETOK_LLAMA3, "a \n\n  b", "a| \n\n| | b");
    check_split(T, KV_PRETOK_LLAMA3, "x...\n\ny", "x|...\n\n|y");
    check_split(T, KV_PRETOK_LLAMA3, "   end", "  | end");
    check_split(T, KV_PRETOK_LLAMA3, "tail  ", "tail|  ");
    check_split(T, KV_PRETOK_NONE, "no split  at all", "no split  at all");
}

KV_TEST(tok_unicode_tables) {
    CHECK(kv_ucp_is_letter(0xE9));        /* é */
    CHECK(kv_ucp_is_letter(0x6771));      /* 東 */
    CHECK(kv_ucp_is_number(0x0663));      /* Arabic-Indic three */
    CHECK(kv_ucp_is_number(0x00B2));      /* superscript two: No */
    CHECK(kv_ucp_is_space(0x3000) && kv_ucp_is_space(0x00A0) && kv_ucp_is_space(0x0085));
    CHECK(!kv_ucp_is_space(0x001C) && !kv_ucp_is_space(0x200B));
    CHECK(!kv_ucp_is_letter(0x1F642) && !kv_ucp_is_number(0x1F642));
    CHECK_EQ_INT(kv_ucp_tolower('S'), 's');
    CHECK_EQ_INT(kv_ucp_tolower(0xC9), 0xE9);
    CHECK_EQ_INT(kv_ucp_tolower(0x0130), 'i');
    CHECK_EQ_INT(kv_ucp_tolower(0x0416), 0x0436);
    for (size_t i = 1; i < kv_ucp_n_ranges; i++) CHECK(kv_ucp_ranges[i - 1].last < kv_ucp_ranges[i].first);
    for (size_t i = 1; i < kv_ucp_n_lower; i++) CHECK(kv_ucp_lower[i - 1].from < kv_ucp_lower[i].from);
    /* UTF-8 decoding rejects overlongs, surrogates and truncation */
    uint32_t cp;
    int ok;
    CHECK(kv_utf8_decode((const uint8_t *)"\xc0\xaf", 2, &cp, &ok) == 1 && !ok);
    CHECK(kv_utf8_decode((const uint8_t *)"\xed\xa0\x80", 3, &cp, &ok) == 1 && !ok);
    CHECK(kv_utf8_decode((const uint8_t *)"\xe2\x82", 2, &cp, &ok) == 1 && !ok);
    CHECK(kv_utf8_decode((const uint8_t *)"\xf0\x9f\x99\x82", 4, &cp, &ok) == 4 && ok && cp == 0x1F642);
    char buf[4];
    for (uint32_t c = 0; c < 0x110000; c += 97) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        size_t l = kv_utf8_encode(c, buf);
        CHECK(kv_utf8_decode((const uint8_t *)buf, l, &cp, &ok) == l && ok && cp == c);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* tokenizer.json                                                                                 */
/* ---------------------------------------------------------------------------------------------- */

static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* Writes a tokenizer.json with the vocabulary and merges of a GGUF byte-level vocab. pre: the
 * pre_tokenizer JSON; pair_merges: merges as [a, b] pairs instead of "a b". */
static int write_tokenizer_json(const kv_tokenizer *g, const char *path, const char *pre, int pair_merges) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fprintf(f, "{\"version\": \"1.0\", \"added_tokens\": [");
    int first = 1;
    for (int32_t id = 0; id < kv_tokenizer_n_vocab(g); id++) {
        kv_token_type t = kv_tokenizer_token_type(g, id);
        if (t != KV_TOKEN_CONTROL && t != KV_TOKEN_USER_DEFINED) continue;
        size_t l;
        const char *p = kv_tokenizer_piece(g, id, &l);
        fprintf(f, "%s{\"id\": %d, \"content\": ", first ? "" : ", ", (int)id);
        json_string(f, p, l);
        fprintf(f, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": %s}",
                t == KV_TOKEN_CONTROL ? "true" : "false");
        first = 0;
    }
    fprintf(f, "], \"normalizer\": null, \"pre_tokenizer\": %s, \"post_processor\": null, \"decoder\": null,\n", pre);
    fprintf(f, "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"byte_fallback\": false, \"vocab\": {");
    first = 1;
    for (int32_t id = 0; id < kv_tokenizer_n_vocab(g); id++) {
        kv_token_type t = kv_tokenizer_token_type(g, id);
        if (t == KV_TOKEN_CONTROL || t == KV_TOKEN_USER_DEFINED) continue;
        size_t l;
        const char *p = kv_tokenizer_piece(g, id, &l);
        if (!first) fputs(", ", f);
        json_string(f, p, l);
        fprintf(f, ": %d", (int)id);
        first = 0;
    }
    fputs("}, \"merges\": [", f);
    for (int64_t r = 0; r < kv_tokenizer_n_merges(g); r++) {
        int32_t a, b;
        kv_tokenizer_merge(g, r, &a, &b, NULL);
        size_t la, lb;
        const char *pa = kv_tokenizer_piece(g, a, &la), *pb = kv_tokenizer_piece(g, b, &lb);
        if (r) fputs(", ", f);
        if (pair_merges) {
            fputc('[', f);
            json_string(f, pa, la);
            fputs(", ", f);
            json_string(f, pb, lb);
            fputc(']', f);
        } else {
            char buf[2048];
            if (la + lb + 1 > sizeof buf) { fclose(f); return 0; }
            memcpy(buf, pa, la);
            buf[la] = ' ';
            memcpy(buf + la + 1, pb, lb);
            json_string(f, buf, la + lb + 1);
        }
    }
    fputs("]}}\n", f);
    return fclose(f) == 0;
}

static void compare_on_vectors(kv_test_ctx *T, const kv_tokenizer *a, const kv_tokenizer *b, const char *inp_rel) {
    char path[1024];
    size_t n = 0;
    char *inp = kv_test_read_file(kv_test_shared(path, sizeof path, inp_rel), &n);
    REQUIRE(inp);
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t pos = 0;
    int cases = 0;
    while (pos < n) {
        char *end = memmem(inp + pos, n - pos, sep, strlen(sep));
        size_t len = end ? (size_t)(end - (inp + pos)) : n - pos;
        int32_t *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(kv_tokenize(a, inp + pos, len, 0, &x, &nx, NULL), (kv_error *)NULL);
        CHECK_OK(kv_tokenize(b, inp + pos, len, 0, &y, &ny, NULL), (kv_error *)NULL);
        CHECK_MSG(ids_equal(x, nx, y, ny), "tokenizer.json and GGUF differ on \"%.60s\"", inp + pos);
        free(x);
        free(y);
        cases++;
        if (!end) break;
        pos += len + strlen(sep);
    }
    CHECK(cases >= 46);
    free(inp);
}

KV_TEST(tok_hf_json_gpt2) {
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *g = load_shared(T, "tokenizers/ggml-vocab-gpt-2.gguf", &err);
    if (!g) SKIP("gpt-2 vocab not found");
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer.json", kv_test_tmpdir());
    REQUIRE(write_tokenizer_json(g, path, "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}", 0));
    kv_tokenizer *j = NULL;
    REQUIRE_OK(kv_tokenizer_load(path, &j, &err), &err);
    CHECK_EQ_INT(kv_tokenizer_n_vocab(j), kv_tokenizer_n_vocab(g));
    CHECK_EQ_INT(kv_tokenizer_n_merges(j), kv_tokenizer_n_merges(g));
    CHECK_EQ_INT(kv_tokenizer_pretokenizer(j), KV_PRETOK_GPT2);
    compare_on_vectors(T, j, g, "tokenizers/ggml-vocab-gpt-2.gguf.inp");
    /* an added token in the text is matched before pre-tokenization */
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(kv_tokenize(j, "a<|endoftext|>b", 15, 0, &ids, &n, &err), &err);
    CHECK(n == 3 && ids[1] == 50256);
    free(ids);
    kv_tokenizer_free(j);

    /* the Llama-3 split pattern as a Sequence[Split, ByteLevel] with [a, b] merges, against the GGUF vocab
     * switched to the same pre-tokenizer */
    char pre[1024];
    snprintf(pre, sizeof pre,
             "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
             "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, "
             "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
             "\"trim_offsets\": true, \"use_regex\": false}]}");
    REQUIRE(write_tokenizer_json(g, path, pre, 1));
    REQUIRE_OK(kv_tokenizer_load_hf_json(path, &j, &err), &err);
    CHECK_EQ_INT(kv_tokenizer_pretokenizer(j), KV_PRETOK_LLAMA3);
    g->pretok = KV_PRETOK_LLAMA3;
    compare_on_vectors(T, j, g, "tokenizers/ggml-vocab-llama-bpe.gguf.inp");
    kv_tokenizer_free(j);

    /* unknown patterns and broken merges are clear errors */
    REQUIRE(write_tokenizer_json(g, path, "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}}", 0));
    CHECK_EQ_INT(kv_tokenizer_load_hf_json(path, &j, &err), KV_EUNSUPPORTED);
    CHECK(strstr(err.message, "regex") != NULL);
    static const char broken[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}, "
                                 "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    kv_test_write_file(path, broken, sizeof broken - 1);
    kv_error_clear(&err);
    CHECK(kv_tokenizer_load_hf_json(path, &j, &err) != KV_OK);
    CHECK(strstr(err.file, "tokenizer.json") != NULL);
    kv_tokenizer_free(g);
}

/* ---------------------------------------------------------------------------------------------- */
/* malformed input                                                                                */
/* ---------------------------------------------------------------------------------------------- */

static void try_spm_bytes(kv_test_ctx *T, const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = NULL;
    kv_status st = kv_tokenizer_load_spm_memory(data, size, "mutated.model", &tok, &err);
    if (st == KV_OK) {
        REQUIRE(tok);
        int32_t *ids = NULL;
        size_t n = 0;
        kv_status s2 = kv_tokenize(tok, "Hello, w\xc3\xb6rld! 123 \xff", 20, 0, &ids, &n, &err);
        if (s2 == KV_OK) {
            char *back = NULL;
            kv_detokenize(tok, ids, n, &back, NULL, &err);
            free(back);
        }
        free(ids);
        kv_tokenizer_free(tok);
    } else {
        CHECK(tok == NULL);
        CHECK(err.message[0] != 0);
        CHECK(err.status == st);
    }
}

KV_TEST(tok_malformed_protobuf) {
    char path[1024];
    size_t size = 0;
    uint8_t *model = kv_test_read_file(kv_test_shared(path, sizeof path, "models/proxy-27m/tokenizer.model"), &size);
    if (!model) SKIP("proxy-27m tokenizer.model not found");
    /* truncations */
    size_t step = sanitized() ? 4099 : 509;
    for (size_t cut = 0; cut < size; cut += (cut < 64 ? 1 : step)) try_spm_bytes(T, model, cut);
    /* random byte corruption */
    uint8_t *copy = malloc(size);
    kv_rng rng;
    kv_rng_seed(&rng, 42);
    int rounds = sanitized() ? 30 : 200;
    for (int r = 0; r < rounds; r++) {
        memcpy(copy, model, size);
        for (int k = 0; k < 4; k++) copy[kv_rng_u64(&rng) % size] = (uint8_t)kv_rng_u64(&rng);
        try_spm_bytes(T, copy, size);
    }
    free(copy);
    free(model);
    /* hand-made messages */
    kv_error err;
    kv_tokenizer *tok = NULL;
    static const struct { const char *bytes; size_t n; kv_status want; const char *msg; } cases[] = {
        {"", 0, KV_EFORMAT, "no pieces"},
        {"\x0b", 1, KV_EFORMAT, "wire type"},                                    /* field 1, group start */
        {"\x0a\xff\xff\xff\xff\x0f", 6, KV_EFORMAT, "runs past"},                /* huge length */
        {"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, KV_EFORMAT, "varint"},
        {"\x0a\x02\x0a\x00\x12\x02\x18\x02", 8, KV_EFORMAT, "empty"},                            /* piece "" */
        {"\x0a\x03\x0a\x01\x61", 5, KV_EUNSUPPORTED, "type 1"},                  /* unigram by default */
        {"\x0a\x03\x0a\x01\x61\x12\x02\x18\x02\x1a\x04\x12\x02\x01\x02", 15, KV_EUNSUPPORTED, "character map"},
        {"\x0a\x05\x0a\x01\x61\x18\x09\x12\x02\x18\x02", 11, KV_EFORMAT, "unknown type"},
    };
    for (size_t i = 0; i < KV_ARRAY_LEN(cases); i++) {
        kv_error_clear(&err);
        kv_status st = kv_tokenizer_load_spm_memory(cases[i].bytes, cases[i].n, "case.model", &tok, &err);
        CHECK_MSG(st == cases[i].want, "case %zu: status %s, message '%s'", i, kv_status_name(st), err.message);
        CHECK_MSG(strstr(err.message, cases[i].msg) != NULL, "case %zu: message '%s' lacks '%s'", i, err.message, cases[i].msg);
        CHECK_STR(err.file, "case.model");
        CHECK(tok == NULL);
    }
    /* a minimal valid BPE model: pieces a, b, ab; the pair merges */
    static const char mini[] = "\x0a\x03\x0a\x01\x61" "\x0a\x03\x0a\x01\x62" "\x0a\x09\x0a\x02\x61\x62\x15\x00\x00\x80\x3f"
                               "\x12\x06\x18\x02\xc0\x02\xff\x01" "\x1a\x02\x18\x00";
    kv_error_clear(&err);
    REQUIRE_OK(kv_tokenizer_load_spm_memory(mini, sizeof mini - 1, "mini.model", &tok, &err), &err);
    int32_t *ids = NULL;
    size_t n = 0;
    /* unk_id = 255 is out of range: no <unk>; "abab" needs none (no dummy prefix: add_dummy_prefix = 0) */
    CHECK_EQ_INT(kv_tokenizer_unk(tok), -1);
    CHECK_OK(kv_tokenize(tok, "abab", 4, 0, &ids, &n, &err), &err);
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 2);
    free(ids);
    CHECK_EQ_INT(kv_tokenize(tok, "abc", 3, 0, &ids, &n, &err), KV_EFORMAT);
    kv_tokenizer_free(tok);
}

/* a tiny protobuf writer for hand-made tokenizer.model files */
typedef struct pbuf { uint8_t b[4096]; size_t n; } pbuf;
static void pb_varint_put(pbuf *p, uint64_t v) {
    do {
        p->b[p->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void pb_bytes_put(pbuf *p, uint32_t field, const void *data, size_t n) {
    pb_varint_put(p, (uint64_t)field << 3 | 2);
    pb_varint_put(p, n);
    memcpy(p->b + p->n, data, n);
    p->n += n;
}
static void pb_piece_put(pbuf *p, const char *piece, float score, int type) {
    pbuf m = {.n = 0};
    pb_bytes_put(&m, 1, piece, strlen(piece));
    pb_varint_put(&m, 2 << 3 | 5);
    memcpy(m.b + m.n, &score, 4);
    m.n += 4;
    pb_varint_put(&m, 3 << 3);
    pb_varint_put(&m, (uint64_t)type);
    pb_bytes_put(p, 1, m.b, m.n);
}

static void expect_ids(kv_test_ctx *T, const kv_tokenizer *tok, const char *text, const int32_t *exp, size_t nexp) {
    int32_t *ids = NULL;
    size_t n = 0;
    kv_error err;
    kv_error_clear(&err);
    CHECK_OK(kv_tokenize(tok, text, strlen(text), 0, &ids, &n, &err), &err);
    if (!ids_equal(ids, n, exp, nexp)) {
        CHECK_MSG(0, "ids differ for \"%s\"", text);
        print_ids("got", ids, n);
        print_ids("expected", exp, nexp);
    }
    free(ids);
}

KV_TEST(tok_spm_unused_user_defined_and_unk) {
    /* sentencepiece semantics on a hand-made model (no dummy prefix, no byte fallback):
     * - an UNUSED piece takes part in merges but is split back into the pair that formed it;
     * - a user-defined piece is matched first and never merged;
     * - characters outside the vocabulary give <unk>. */
    pbuf p = {.n = 0};
    pb_piece_put(&p, "<unk>", 0, KV_TOKEN_UNKNOWN);          /* 0 */
    pb_piece_put(&p, "a", 0, KV_TOKEN_NORMAL);               /* 1 */
    pb_piece_put(&p, "b", 0, KV_TOKEN_NORMAL);               /* 2 */
    pb_piece_put(&p, "c", 0, KV_TOKEN_NORMAL);               /* 3 */
    pb_piece_put(&p, "ab", 5, KV_TOKEN_UNUSED);              /* 4 */
    pb_piece_put(&p, "abc", 1, KV_TOKEN_NORMAL);             /* 5 */
    pb_piece_put(&p, "<x>", 0, KV_TOKEN_USER_DEFINED);       /* 6 */
    pb_piece_put(&p, "a<x>", 9, KV_TOKEN_NORMAL);            /* 7: never formed, <x> is frozen */
    pb_piece_put(&p, "bc", 2, KV_TOKEN_NORMAL);              /* 8 */
    pbuf t = {.n = 0}, nspec = {.n = 0};
    pb_varint_put(&t, 3 << 3);
    pb_varint_put(&t, 2);                                    /* model_type BPE */
    pb_varint_put(&t, 40 << 3);
    pb_varint_put(&t, 0);                                    /* unk_id 0 */
    pb_varint_put(&t, 41 << 3);
    pb_varint_put(&t, (uint64_t)-1);                         /* bos_id -1 (10-byte varint) */
    pb_bytes_put(&p, 2, t.b, t.n);
    pb_varint_put(&nspec, 3 << 3);
    pb_varint_put(&nspec, 0);                                /* add_dummy_prefix false */
    pb_bytes_put(&p, 3, nspec.b, nspec.n);
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = NULL;
    REQUIRE_OK(kv_tokenizer_load_spm_memory(p.b, p.n, "hand.model", &tok, &err), &err);
    CHECK_EQ_INT(kv_tokenizer_bos(tok), -1);
    CHECK_EQ_INT(kv_tokenizer_unk(tok), 0);
    CHECK_EQ_INT(kv_tokenize(tok, "a", 1, 1, &(int32_t *){NULL}, &(size_t){0}, &err), KV_EINVAL);  /* no BOS */
    /* "ab": a+b -> ab (unused) -> resegmented into a, b */
    expect_ids(T, tok, "ab", (const int32_t[]){1, 2}, 2);
    /* "abc": a+b (score 5) before b+c (2), then ab+c -> abc */
    expect_ids(T, tok, "abc", (const int32_t[]){5}, 1);
    /* "a<x>b": <x> is one frozen symbol */
    expect_ids(T, tok, "a<x>bc", (const int32_t[]){1, 6, 8}, 3);
    /* unknown character (no byte fallback): <unk> per symbol */
    expect_ids(T, tok, "a\xc3\xa9" "b", (const int32_t[]){1, 0, 2}, 3);
    kv_tokenizer_free(tok);
}

/* a vocab-only GGUF: model, pre (NULL: none), n tokens with scores and types (NULL: absent), merges */
static int write_vocab_gguf(const char *path, const char *model, const char *pre, const char *const *toks, uint64_t n,
                            const float *scores, uint64_t n_scores, const int32_t *types, const char *const *merges,
                            uint64_t n_merges) {
    kv_gguf_writer *w = NULL;
    kv_status st = kv_gguf_writer_create(&w, NULL);
    if (!st) st = kv_gguf_writer_add_str(w, "tokenizer.ggml.model", model, NULL);
    if (!st && pre) st = kv_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre, NULL);
    if (!st) st = kv_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, n, NULL);
    if (!st && scores) st = kv_gguf_writer_add_arr(w, "tokenizer.ggml.scores", KV_GGUF_F32, scores, n_scores, NULL);
    if (!st && types) st = kv_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KV_GGUF_I32, types, n, NULL);
    if (!st && merges) st = kv_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, NULL, n_merges, NULL);
    if (!st) st = kv_gguf_writer_write(w, path, NULL, NULL);
    kv_gguf_writer_free(w);
    return st == KV_OK;
}

KV_TEST(tok_gguf_bad_vocabularies) {
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab.gguf", kv_test_tmpdir());
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a", "b"};
    static const float scores[] = {0, 0, 0, -1, -2};
    static const int32_t types[] = {2, 3, 3, 1, 1};
    kv_error err;
    kv_tokenizer *tok = NULL;
    /* a valid SPM vocab first: "a b" -> ▁a, ▁ is not a piece and there is no byte fallback -> <unk> */
    REQUIRE(write_vocab_gguf(path, "llama", NULL, toks, 5, scores, 5, types, NULL, 0));
    kv_error_clear(&err);
    REQUIRE_OK(kv_tokenizer_load_gguf(path, &tok, &err), &err);
    CHECK_EQ_INT(kv_tokenizer_unk(tok), 0);
    expect_ids(T, tok, "a b", (const int32_t[]){3, 0, 4}, 3);
    kv_tokenizer_free(tok);
    static const struct { const char *model, *pre; uint64_t n_scores; int merges; kv_status want; const char *msg; } cases[] = {
        {"bert", NULL, 5, 0, KV_EUNSUPPORTED, "'bert'"},
        {"llama", NULL, 4, 0, KV_EFORMAT, "entries"},             /* scores shorter than tokens */
        {"gpt2", "default", 5, 0, KV_EFORMAT, "byte 0x"},        /* not a byte-level alphabet */
        {"gpt2", "mystery", 5, 0, KV_EUNSUPPORTED, "'mystery'"},
    };
    for (size_t i = 0; i < KV_ARRAY_LEN(cases); i++) {
        REQUIRE(write_vocab_gguf(path, cases[i].model, cases[i].pre, toks, 5, scores, cases[i].n_scores, types, NULL, 0));
        kv_error_clear(&err);
        kv_status st = kv_tokenizer_load_gguf(path, &tok, &err);
        CHECK_MSG(st == cases[i].want, "case %zu: %s (%s)", i, kv_status_name(st), err.message);
        CHECK_MSG(strstr(err.message, cases[i].msg) != NULL, "case %zu: message '%s' lacks '%s'", i, err.message, cases[i].msg);
        CHECK(strstr(err.file, "vocab.gguf") != NULL);
        CHECK(tok == NULL);
    }
    /* a byte-level vocab whose merge names a missing token */
    const char *bl[256 + 1];
    char store[256][4];
    for (int b = 0; b < 256; b++) {
        size_t l = kv_utf8_encode(kv_bpe_byte_to_cp((uint8_t)b), store[b]);
        store[b][l] = 0;
        bl[b] = store[b];
    }
    bl[256] = "ab";
    static const char *const good_merge[] = {"a b"}, *const bad_merge[] = {"a zz"};
    REQUIRE(write_vocab_gguf(path, "gpt2", "qwen2", bl, 257, NULL, 0, NULL, good_merge, 1));
    kv_error_clear(&err);
    REQUIRE_OK(kv_tokenizer_load_gguf(path, &tok, &err), &err);
    expect_ids(T, tok, "abab", (const int32_t[]){256, 256}, 2);
    kv_tokenizer_free(tok);
    REQUIRE(write_vocab_gguf(path, "gpt2", "qwen2", bl, 257, NULL, 0, NULL, bad_merge, 1));
    kv_error_clear(&err);
    CHECK_EQ_INT(kv_tokenizer_load_gguf(path, &tok, &err), KV_EFORMAT);
    CHECK(strstr(err.message, "'zz'") != NULL);
    CHECK(tok == NULL);
}

KV_TEST(tok_load_directory_without_weights) {
    char src[1024], dir[1024], dst[1100];
    kv_test_shared(src, sizeof src, "models/proxy-27m/tokenizer.model");
    size_t n = 0;
    void *bytes = kv_test_read_file(src, &n);
    if (!bytes) SKIP("proxy tokenizer.model not found");
    snprintf(dir, sizeof dir, "%s", kv_test_tmpdir());
    snprintf(dst, sizeof dst, "%s/tokenizer.model", dir);
    REQUIRE(kv_test_write_file(dst, bytes, n) == 0);
    free(bytes);
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = NULL;
    REQUIRE_OK(kv_tokenizer_load(dir, &tok, &err), &err);
    CHECK_EQ_INT(kv_tokenizer_n_vocab(tok), 8192);
    kv_tokenizer_free(tok);
}

KV_TEST(tok_load_errors) {
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = NULL;
    CHECK_EQ_INT(kv_tokenizer_load("/nonexistent/tokenizer.model", &tok, &err), KV_ENOTFOUND);
    CHECK_STR(err.file, "/nonexistent/tokenizer.model");
    char path[1024];
    snprintf(path, sizeof path, "%s/x.gguf", kv_test_tmpdir());
    kv_test_write_file(path, "GGUF\x03\x00\x00\x00garbage", 15);
    kv_error_clear(&err);
    CHECK(kv_tokenizer_load(path, &tok, &err) != KV_OK);
    CHECK(tok == NULL && err.message[0]);
    snprintf(path, sizeof path, "%s/tokenizer.json", kv_test_tmpdir());
    kv_test_write_file(path, "{\"model\": ", 10);
    kv_error_clear(&err);
    CHECK_EQ_INT(kv_tokenizer_load(path, &tok, &err), KV_EFORMAT);
    CHECK(tok == NULL);
}

KV_TEST(tok_model_sources_agree) {
    /* the HF directory (tokenizer.model) and llama.cpp's GGUF of the proxy model give the same ids */
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *a = load_shared(T, "models/proxy-27m", &err);
    kv_tokenizer *b = load_shared(T, "models/proxy-27m-gguf/proxy-27m-bf16.gguf", &err);
    if (!a || !b) {
        kv_tokenizer_free(a);
        kv_tokenizer_free(b);
        SKIP("proxy model not found");
    }
    CHECK_EQ_INT(kv_tokenizer_n_vocab(a), kv_tokenizer_n_vocab(b));
    CHECK_EQ_INT(kv_tokenizer_bos(a), kv_tokenizer_bos(b));
    CHECK_EQ_INT(kv_tokenizer_eos(a), kv_tokenizer_eos(b));
    CHECK_EQ_INT(kv_tokenizer_add_bos_default(a), 1);
    CHECK_EQ_INT(kv_tokenizer_add_space_prefix(b), 1);
    for (int32_t id = 0; id < kv_tokenizer_n_vocab(a); id++) {
        size_t la, lb;
        const char *pa = kv_tokenizer_piece(a, id, &la), *pb = kv_tokenizer_piece(b, id, &lb);
        if (la != lb || memcmp(pa, pb, la) || kv_tokenizer_score(a, id) != kv_tokenizer_score(b, id) ||
            kv_tokenizer_token_type(a, id) != kv_tokenizer_token_type(b, id)) {
            CHECK_MSG(0, "token %d differs between tokenizer.model and GGUF", (int)id);
            break;
        }
    }
    char path[1024];
    size_t len = 0;
    char *held = kv_test_read_file(kv_test_shared(path, sizeof path, "data/heldout.txt"), &len);
    REQUIRE(held);
    len = KV_MIN(len, (size_t)100000);
    int32_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    CHECK_OK(kv_tokenize(a, held, len, 1, &x, &nx, &err), &err);
    CHECK_OK(kv_tokenize(b, held, len, 1, &y, &ny, &err), &err);
    CHECK(nx > 1000 && ids_equal(x, nx, y, ny));
    free(x);
    free(y);
    free(held);
    kv_tokenizer_free(a);
    kv_tokenizer_free(b);
}

KV_TEST(tok_gguf_accessors_for_writer) {
    /* pieces, scores, types and merges read back exactly as the GGUF holds them */
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = load_shared(T, "tokenizers/ggml-vocab-qwen2.gguf", &err);
    if (!tok) SKIP("qwen2 vocab not found");
    CHECK_EQ_INT(kv_tokenizer_get_kind(tok), KV_TOKENIZER_BPE);
    CHECK_STR(kv_pretokenizer_name(kv_tokenizer_pretokenizer(tok)), "qwen2");
    char path[1024];
    kv_gguf *g = NULL;
    REQUIRE_OK(kv_gguf_open(kv_test_shared(path, sizeof path, "tokenizers/ggml-vocab-qwen2.gguf"), &g, &err), &err);
    kv_gguf_value toks, merges, types;
    REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, &err), &err);
    REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.merges", &merges, &err), &err);
    REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.token_type", &types, &err), &err);
    CHECK_EQ_INT(kv_tokenizer_n_vocab(tok), toks.n);
    CHECK_EQ_INT(kv_tokenizer_n_merges(tok), merges.n);
    for (uint64_t i = 0; i < toks.n; i += 7) {
        kv_gguf_value s, t;
        kv_gguf_arr_get(&toks, i, &s, NULL);
        kv_gguf_arr_get(&types, i, &t, NULL);
        size_t l;
        const char *p = kv_tokenizer_piece(tok, (int32_t)i, &l);
        int64_t type = 0;
        kv_gguf_value_i64(&t, &type, NULL);
        if (l != s.n || memcmp(p, s.data, l) || kv_tokenizer_token_type(tok, (int32_t)i) != type) {
            CHECK_MSG(0, "token %llu differs", (unsigned long long)i);
            break;
        }
    }
    for (uint64_t r = 0; r < merges.n; r += 13) {
        kv_gguf_value s;
        kv_gguf_arr_get(&merges, r, &s, NULL);
        int32_t a, b;
        REQUIRE_OK(kv_tokenizer_merge(tok, (int64_t)r, &a, &b, &err), &err);
        size_t la, lb;
        const char *pa = kv_tokenizer_piece(tok, a, &la), *pb = kv_tokenizer_piece(tok, b, &lb);
        char buf[1024];
        REQUIRE(la + lb + 1 < sizeof buf);
        memcpy(buf, pa, la);
        buf[la] = ' ';
        memcpy(buf + la + 1, pb, lb);
        if (s.n != la + lb + 1 || memcmp(buf, s.data, s.n)) {
            CHECK_MSG(0, "merge %llu differs", (unsigned long long)r);
            break;
        }
    }
    int32_t a, b;
    CHECK_EQ_INT(kv_tokenizer_merge(tok, (int64_t)merges.n, &a, &b, &err), KV_ERANGE);
    kv_gguf_close(g);
    kv_tokenizer_free(tok);
}

/* ---------------------------------------------------------------------------------------------- */
/* CLI                                                                                            */
/* ---------------------------------------------------------------------------------------------- */

KV_TEST(tok_cli) {
    char model[1024], args[4096];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy model not found");
    char *out = NULL;
    CHECK_EQ_INT(kv_test_run_cli("tokenize --help", &out), 0);
    CHECK(out && strstr(out, "usage: kvant tokenize"));
    free(out);
    snprintf(args, sizeof args, "tokenize %s --ids-only 'The quick brown fox jumps over the lazy dog.'", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK_STR(out, "[1, 351, 1963, 4820, 641, 8092, 520, 7491, 620, 263, 979, 4495, 2821, 8082]\n");
    free(out);
    snprintf(args, sizeof args, "tokenize %s --json --no-bos 'Hello world'", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    kv_json_doc *doc = NULL;
    REQUIRE(out);
    CHECK_OK(kv_json_parse(out, strlen(out), NULL, &doc, NULL), (kv_error *)NULL);
    if (doc) {
        const kv_json *ids = kv_json_get(kv_json_root(doc), "ids");
        CHECK(ids && ids->type == KV_JSON_ARRAY && ids->len >= 2 && ids->u.items[0].ival != 1);
        kv_json_free(doc);
    }
    free(out);
    snprintf(args, sizeof args, "tokenize %s 'Hello world'", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(out && strstr(out, "     1 -> '<s>'\n") && strstr(out, " -> ' world'\n"));
    free(out);
    /* empty text: just BOS; a text file with a malformed byte: a warning, byte tokens */
    snprintf(args, sizeof args, "tokenize %s --ids-only ''", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK_STR(out, "[1]\n");
    free(out);
    char file[1024];
    snprintf(file, sizeof file, "%s/bad.txt", kv_test_tmpdir());
    kv_test_write_file(file, "ab\xff", 3);
    snprintf(args, sizeof args, "tokenize %s --ids-only --file %s", model, file);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(out && strstr(out, "not valid UTF-8") && strstr(out, ", 258]"));   /* <0xFF> = 3 + 255 */
    free(out);
    /* errors: usage 2, runtime 1, no crash */
    CHECK_EQ_INT(kv_test_run_cli("tokenize", &out), 2);
    free(out);
    snprintf(args, sizeof args, "tokenize %s", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 2);
    free(out);
    snprintf(args, sizeof args, "tokenize %s --bogus x", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 2);
    free(out);
    CHECK_EQ_INT(kv_test_run_cli("tokenize /nonexistent/model 'x'", &out), 1);
    CHECK(out && strstr(out, "/nonexistent/model"));
    free(out);
    snprintf(args, sizeof args, "tokenize %s --file /nonexistent/text.txt", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 1);
    CHECK(out && strstr(out, "/nonexistent/text.txt"));
    free(out);
}
