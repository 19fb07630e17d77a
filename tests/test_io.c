/* test_io.c — model-file I/O: the JSON parser, HF config variants, safetensors, HF directories (proxy-27m),
 * llama2.c (stories260K), GGUF through kv_model_open (q/k un-permutation against the HF original), names,
 * fp32 rows and `kvant inspect`. Checksums are FNV-1a 64 of raw tensor bytes, computed once by an
 * independent script (python, straight from the files) and pinned here against loader regressions. */
#include "test.h"
#include "../src/io/json.h"
#include "../src/io/model_file.h"
#include "../src/io/safetensors.h"
#include <unistd.h>

static uint64_t fnv1a64(const void *p, uint64_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static kv_json_doc *parse_ok(kv_test_ctx *T, const char *text) {
    kv_error err;
    kv_error_clear(&err);
    kv_json_doc *doc = NULL;
    kv_status st = kv_json_parse(text, strlen(text), NULL, &doc, &err);
    if (st) {
        char b[1200];
        kv_test_fail(T, __FILE__, __LINE__, "parse of %s failed: %s", text, kv_error_format(&err, b, sizeof b));
    }
    return doc;
}

/* ---- JSON ------------------------------------------------------------------------------------------------ */

KV_TEST(json_scalars_and_structure) {
    kv_json_doc *doc = parse_ok(T, " {\"a\": [1, -2, 3.5, true, false, null, \"x\"], \"b\": {\"c\": {}}, \"d\": []} \n");
    REQUIRE(doc);
    const kv_json *r = kv_json_root(doc);
    CHECK_EQ_INT(r->type, KV_JSON_OBJECT);
    CHECK_EQ_INT(r->len, 3);
    const kv_json *a = kv_json_get(r, "a");
    REQUIRE(a && a->type == KV_JSON_ARRAY && a->len == 7);
    CHECK(kv_json_at(a, 0)->is_int && kv_json_at(a, 0)->ival == 1);
    CHECK(kv_json_at(a, 1)->is_int && kv_json_at(a, 1)->ival == -2);
    CHECK(!kv_json_at(a, 2)->is_int && kv_json_at(a, 2)->num == 3.5);
    CHECK(kv_json_at(a, 3)->type == KV_JSON_BOOL && kv_json_at(a, 3)->boolean == 1);
    CHECK(kv_json_at(a, 4)->type == KV_JSON_BOOL && kv_json_at(a, 4)->boolean == 0);
    CHECK_EQ_INT(kv_json_at(a, 5)->type, KV_JSON_NULL);
    CHECK_STR(kv_json_at(a, 6)->u.str, "x");
    CHECK(kv_json_at(a, 7) == NULL);
    CHECK_EQ_INT(kv_json_at(a, 2)->offset, 15); /* offsets point at the value's first byte */
    const kv_json *c = kv_json_get(kv_json_get(r, "b"), "c");
    CHECK(c && c->type == KV_JSON_OBJECT && c->len == 0);
    CHECK(kv_json_get(r, "zz") == NULL);
    CHECK(kv_json_get(a, "a") == NULL); /* not an object */
    int64_t iv;
    CHECK_EQ_INT(kv_json_get_int(r, "a", &iv), -1);
    CHECK_EQ_INT(kv_json_get_int(r, "nope", &iv), 0);
    kv_json_free(doc);
}

KV_TEST(json_string_escapes_and_unicode) {
    kv_json_doc *doc = parse_ok(T, "[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u4e2d\", \"\\ud83d\\ude00\", \"\\u0000z\", "
                                   "\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"]");
    REQUIRE(doc);
    const kv_json *r = kv_json_root(doc);
    CHECK_STR(kv_json_at(r, 0)->u.str, "a\"b\\c/d\b\f\n\r\t");
    CHECK_STR(kv_json_at(r, 1)->u.str, "\xc3\xa9\xe4\xb8\xad");
    CHECK_STR(kv_json_at(r, 2)->u.str, "\xf0\x9f\x98\x80"); /* U+1F600 from a surrogate pair */
    CHECK_EQ_INT(kv_json_at(r, 3)->len, 2);                  /* embedded NUL kept, length tells */
    CHECK(kv_json_at(r, 3)->u.str[0] == 0 && kv_json_at(r, 3)->u.str[1] == 'z');
    CHECK_STR(kv_json_at(r, 4)->u.str, "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80");
    kv_json_free(doc);
}

KV_TEST(json_numbers) {
    kv_json_doc *doc = parse_ok(T, "[0, -0, 9223372036854775807, -9223372036854775808, 9223372036854775808, 1e3, "
                                   "1.5e-3, -2.25E+2, 1e-400, 123456789012]");
    REQUIRE(doc);
    const kv_json *r = kv_json_root(doc);
    CHECK(kv_json_at(r, 0)->is_int && kv_json_at(r, 0)->ival == 0);
    CHECK(kv_json_at(r, 1)->is_int && kv_json_at(r, 1)->num == 0 && signbit(kv_json_at(r, 1)->num));
    CHECK(kv_json_at(r, 2)->is_int && kv_json_at(r, 2)->ival == INT64_MAX);
    CHECK(kv_json_at(r, 3)->is_int && kv_json_at(r, 3)->ival == INT64_MIN);
    CHECK(!kv_json_at(r, 4)->is_int && kv_json_at(r, 4)->num == 9223372036854775808.0); /* beyond int64: double only */
    CHECK(!kv_json_at(r, 5)->is_int && kv_json_at(r, 5)->num == 1000.0);
    CHECK_NEAR(kv_json_at(r, 6)->num, 0.0015, 1e-18);
    CHECK_EQ_INT(kv_json_at(r, 7)->num, -225);
    CHECK(kv_json_at(r, 8)->num == 0.0); /* underflow is fine */
    CHECK_EQ_INT(kv_json_at(r, 9)->ival, 123456789012LL);
    kv_json_free(doc);
}

typedef struct json_bad {
    const char *text;
    kv_status st;
    int64_t offset;
} json_bad;

KV_TEST(json_errors_have_offsets) {
    static const json_bad cases[] = {
        {"", KV_EFORMAT, 0},
        {"   ", KV_EFORMAT, 3},
        {"{", KV_EFORMAT, 1},
        {"[1,]", KV_EFORMAT, 3},
        {"{\"a\":1,}", KV_EFORMAT, 7},
        {"{\"a\" 1}", KV_EFORMAT, 5},
        {"{a:1}", KV_EFORMAT, 1},
        {"[1 2]", KV_EFORMAT, 3},
        {"[01]", KV_EFORMAT, 1},
        {"[-]", KV_EFORMAT, 1},
        {"[1.]", KV_EFORMAT, 3},
        {"[1e]", KV_EFORMAT, 3},
        {"[.5]", KV_EFORMAT, 1},
        {"[+1]", KV_EFORMAT, 1},
        {"[tru]", KV_EFORMAT, 1},
        {"[nul]", KV_EFORMAT, 1},
        {"[NaN]", KV_EFORMAT, 1},
        {"[1e400]", KV_ERANGE, 1},
        {"\"abc", KV_EFORMAT, 0},
        {"\"a\\x\"", KV_EFORMAT, 2},
        {"\"a\tb\"", KV_EFORMAT, 2},
        {"\"\\u12\"", KV_EFORMAT, 1},
        {"\"\\ud800\"", KV_EFORMAT, 1},
        {"\"\\ud800\\u0041\"", KV_EFORMAT, 1},
        {"\"\\udc00\"", KV_EFORMAT, 1},
        {"\"\xc0\x80\"", KV_EFORMAT, 1},        /* overlong */
        {"\"\xed\xa0\x80\"", KV_EFORMAT, 1},    /* encoded surrogate */
        {"\"\xf8\x88\x80\x80\x80\"", KV_EFORMAT, 1},
        {"\"ab\xe4\xb8\"", KV_EFORMAT, 3},      /* truncated sequence */
        {"{} x", KV_EFORMAT, 3},
        {"[1] [2]", KV_EFORMAT, 4},
        {"'a'", KV_EFORMAT, 0},
        {"[1,,2]", KV_EFORMAT, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kv_error err;
        kv_error_clear(&err);
        kv_json_doc *doc = NULL;
        kv_json_opts opts = {.path = "t.json"};
        kv_status st = kv_json_parse(cases[i].text, strlen(cases[i].text), &opts, &doc, &err);
        CHECK_MSG(st == cases[i].st, "case %zu (%s): status %d, want %d", i, cases[i].text, st, cases[i].st);
        CHECK_MSG(err.offset == cases[i].offset, "case %zu (%s): offset %lld, want %lld (%s)", i, cases[i].text,
                  (long long)err.offset, (long long)cases[i].offset, err.message);
        CHECK_STR(err.file, "t.json");
        CHECK(doc == NULL);
    }
}

KV_TEST(json_depth_and_size_limits) {
    char buf[1200];
    for (int depth = 255; depth <= 257; depth++) {
        int n = 0;
        for (int i = 0; i < depth; i++) buf[n++] = '[';
        for (int i = 0; i < depth; i++) buf[n++] = ']';
        kv_error err;
        kv_error_clear(&err);
        kv_json_doc *doc = NULL;
        kv_status st = kv_json_parse(buf, (size_t)n, NULL, &doc, &err);
        if (depth <= 256) {
            CHECK_EQ_INT(st, KV_OK);
        } else {
            CHECK_EQ_INT(st, KV_ERANGE);
            CHECK_EQ_INT(err.offset, 256); /* the bracket that goes one level too deep */
        }
        kv_json_free(doc);
    }
    kv_json_opts opts = {.max_depth = 2};
    kv_json_doc *doc = NULL;
    CHECK_EQ_INT(kv_json_parse("[[1]]", 5, &opts, &doc, NULL), KV_OK);
    kv_json_free(doc);
    CHECK_EQ_INT(kv_json_parse("[[[1]]]", 7, &opts, &doc, NULL), KV_ERANGE);
    kv_json_opts small = {.max_bytes = 4};
    CHECK_EQ_INT(kv_json_parse("[1, 2]", 6, &small, &doc, NULL), KV_ERANGE);
    /* a BOM is ignored (RFC 8259 §8.1); base_offset shifts reported offsets */
    REQUIRE_OK(kv_json_parse("\xEF\xBB\xBF{\"k\":2}", 10, NULL, &doc, NULL), NULL);
    CHECK_EQ_INT(kv_json_get(kv_json_root(doc), "k")->ival, 2);
    kv_json_free(doc);
    kv_error err;
    kv_error_clear(&err);
    kv_json_opts based = {.base_offset = 8};
    CHECK_EQ_INT(kv_json_parse("[1,]", 4, &based, &doc, &err), KV_EFORMAT);
    CHECK_EQ_INT(err.offset, 11);
}

KV_TEST(json_duplicate_keys) {
    kv_json_doc *doc = parse_ok(T, "{\"b\":1, \"a\":2, \"c\":3, \"a\":4}");
    REQUIRE(doc);
    const kv_json *dup = kv_json_find_duplicate_key(kv_json_root(doc));
    REQUIRE(dup);
    CHECK_STR(dup->key, "a");
    CHECK_EQ_INT(dup->ival, 4); /* the later one is reported */
    CHECK_EQ_INT(kv_json_get(kv_json_root(doc), "a")->ival, 2); /* lookup: first wins */
    kv_json_free(doc);
    doc = parse_ok(T, "{\"a\":1, \"a\\u0000\":2, \"ab\":3}");
    REQUIRE(doc);
    CHECK(kv_json_find_duplicate_key(kv_json_root(doc)) == NULL);
    kv_json_free(doc);
}

/* A tokenizer.json-sized document (about 6 MB): the vocab object and merges array parse and read back. */
KV_TEST(json_large_document) {
    int n = getenv("KVANT_SANITIZED") ? 40000 : 150000;
    size_t cap = (size_t)n * 48 + 64;
    char *buf = malloc(cap);
    REQUIRE(buf);
    size_t len = (size_t)sprintf(buf, "{\"vocab\": {");
    for (int i = 0; i < n; i++) len += (size_t)sprintf(buf + len, "%s\"tok\\u00e9%d\": %d", i ? ", " : "", i, i);
    len += (size_t)sprintf(buf + len, "}, \"merges\": [");
    for (int i = 0; i < n; i++) len += (size_t)sprintf(buf + len, "%s[\"a%d\", \"b\"]", i ? "," : "", i);
    len += (size_t)sprintf(buf + len, "]}");
    kv_json_doc *doc = NULL;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_json_parse(buf, len, NULL, &doc, &err), &err);
    const kv_json *vocab = kv_json_get(kv_json_root(doc), "vocab");
    const kv_json *merges = kv_json_get(kv_json_root(doc), "merges");
    REQUIRE(vocab && merges);
    CHECK_EQ_INT(vocab->len, n);
    CHECK_EQ_INT(merges->len, n);
    int bad = 0;
    char want[64];
    for (int i = 0; i < n; i += 997) {
        snprintf(want, sizeof want, "tok\xc3\xa9%d", i);
        const kv_json *m = &vocab->u.items[i];
        if (strcmp(m->key, want) || m->ival != i) bad++;
        snprintf(want, sizeof want, "a%d", i);
        if (strcmp(kv_json_at(kv_json_at(merges, (uint64_t)i), 0)->u.str, want)) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(kv_json_find_duplicate_key(vocab) == NULL);
    kv_json_free(doc);
    free(buf);
}

/* ---- HF config.json variants ------------------------------------------------------------------------------ */

static kv_status config_from(kv_test_ctx *T, const char *json, kv_hparams *hp, kv_error *err) {
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", kv_test_tmpdir());
    if (kv_test_write_file(path, json, strlen(json))) kv_test_fail(T, __FILE__, __LINE__, "cannot write %s", path);
    kv_error_clear(err);
    return kv_hf_config_file(path, hp, err);
}

KV_TEST(hf_config_llama3_rope_scaling) {
    kv_hparams hp;
    kv_error err;
    REQUIRE_OK(config_from(T, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 2048,"
                              " \"intermediate_size\": 8192, \"num_attention_heads\": 32, \"num_hidden_layers\": 16,"
                              " \"num_key_value_heads\": 8, \"head_dim\": 64, \"max_position_embeddings\": 131072,"
                              " \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, \"rope_scaling\": {\"factor\": 32.0,"
                              " \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192,"
                              " \"rope_type\": \"llama3\"}, \"tie_word_embeddings\": true, \"vocab_size\": 128256,"
                              " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009]}",
                           &hp, &err), &err);
    CHECK_STR(hp.arch, "llama");
    CHECK_EQ_INT(hp.n_embd, 2048);
    CHECK_EQ_INT(hp.n_layer, 16);
    CHECK_EQ_INT(hp.n_head, 32);
    CHECK_EQ_INT(hp.n_head_kv, 8);
    CHECK_EQ_INT(hp.head_dim, 64);
    CHECK_EQ_INT(hp.n_ff, 8192);
    CHECK_EQ_INT(hp.n_vocab, 128256);
    CHECK_EQ_INT(hp.n_ctx_train, 131072);
    CHECK_NEAR(hp.rope_theta, 500000.0, 0);
    CHECK_NEAR(hp.norm_eps, 1e-5, 1e-12);
    CHECK_EQ_INT(hp.rope_scaling, KV_ROPE_SCALING_LLAMA3);
    CHECK_NEAR(hp.rope_factor, 32.0, 0);
    CHECK_NEAR(hp.rope_low_freq_factor, 1.0, 0);
    CHECK_NEAR(hp.rope_high_freq_factor, 4.0, 0);
    CHECK_EQ_INT(hp.rope_orig_ctx, 8192);
    CHECK_EQ_INT(hp.tie_embeddings, 1);
    CHECK_EQ_INT(hp.attn_bias, 0);
    CHECK_EQ_INT(hp.bos_id, 128000);
    CHECK_EQ_INT(hp.eos_id, 128001);
}

KV_TEST(hf_config_transformers5_rope_parameters) {
    kv_hparams hp;
    kv_error err;
    REQUIRE_OK(config_from(T, "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 512,"
                              " \"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"vocab_size\": 1000,"
                              " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 250000.0, \"factor\": 8.0,"
                              " \"low_freq_factor\": 2.0, \"high_freq_factor\": 6.0, \"original_max_position_embeddings\": 4096}}",
                           &hp, &err), &err);
    CHECK_EQ_INT(hp.head_dim, 64);  /* hidden / heads */
    CHECK_EQ_INT(hp.n_head_kv, 4);  /* defaults to the query heads */
    CHECK_NEAR(hp.rope_theta, 250000.0, 0);
    CHECK_EQ_INT(hp.rope_scaling, KV_ROPE_SCALING_LLAMA3);
    CHECK_NEAR(hp.rope_factor, 8.0, 0);
    CHECK_NEAR(hp.rope_low_freq_factor, 2.0, 0);
    CHECK_NEAR(hp.rope_high_freq_factor, 6.0, 0);
    CHECK_EQ_INT(hp.rope_orig_ctx, 4096);
    CHECK_EQ_INT(hp.tie_embeddings, 0);
    CHECK_EQ_INT(hp.bos_id, -1);
}

KV_TEST(hf_config_mistral_and_qwen2) {
    kv_hparams hp;
    kv_error err;
    REQUIRE_OK(config_from(T, "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 4096, \"intermediate_size\": 14336,"
                              " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
                              " \"vocab_size\": 32000, \"rope_theta\": 1000000.0, \"sliding_window\": null, \"head_dim\": null,"
                              " \"rms_norm_eps\": 1e-05, \"bos_token_id\": 1, \"eos_token_id\": 2, \"tie_word_embeddings\": false}",
                           &hp, &err), &err);
    CHECK_STR(hp.arch, "mistral"); /* from architectures when model_type is absent */
    CHECK_EQ_INT(hp.head_dim, 128);
    CHECK_EQ_INT(hp.n_head_kv, 8);
    CHECK_NEAR(hp.rope_theta, 1e6, 0);
    CHECK_EQ_INT(hp.rope_scaling, KV_ROPE_SCALING_NONE);
    REQUIRE_OK(config_from(T, "{\"model_type\": \"qwen2\", \"hidden_size\": 896, \"intermediate_size\": 4864,"
                              " \"num_attention_heads\": 14, \"num_hidden_layers\": 24, \"num_key_value_heads\": 2,"
                              " \"vocab_size\": 151936, \"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-06,"
                              " \"tie_word_embeddings\": true, \"max_position_embeddings\": 32768,"
                              " \"bos_token_id\": 151643, \"eos_token_id\": 151643, \"rope_scaling\": null}",
                           &hp, &err), &err);
    CHECK_STR(hp.arch, "qwen2");
    CHECK_EQ_INT(hp.attn_bias, 1); /* Qwen2 always has q/k/v biases */
    CHECK_EQ_INT(hp.head_dim, 64);
    CHECK_EQ_INT(hp.tie_embeddings, 1);
    CHECK_NEAR(hp.norm_eps, 1e-6, 1e-13);
    CHECK_EQ_INT(hp.eos_id, 151643);
    REQUIRE_OK(config_from(T, "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128,"
                              " \"num_attention_heads\": 4, \"num_hidden_layers\": 1, \"vocab_size\": 10, \"attention_bias\": true,"
                              " \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", &hp, &err), &err);
    CHECK_EQ_INT(hp.attn_bias, 1);
    CHECK_EQ_INT(hp.rope_scaling, KV_ROPE_SCALING_LINEAR);
    CHECK_NEAR(hp.rope_factor, 2.0, 0);
}

KV_TEST(hf_config_rejections) {
    static const struct { const char *json; kv_status st; const char *needle; } cases[] = {
        {"{\"model_type\": \"llama\", \"intermediate_size\": 8, \"num_attention_heads\": 2, \"num_hidden_layers\": 1, \"vocab_size\": 4}",
         KV_EFORMAT, "hidden_size"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_attention_heads\": 4,"
         " \"num_key_value_heads\": 3, \"num_hidden_layers\": 1, \"vocab_size\": 4}", KV_EFORMAT, "num_key_value_heads"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_attention_heads\": 4,"
         " \"num_hidden_layers\": 1, \"vocab_size\": 4, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
         KV_EUNSUPPORTED, "yarn"},
        {"{\"model_type\": \"gemma\", \"hidden_size\": 64}", KV_EUNSUPPORTED, "gemma"},
        {"{\"model_type\": \"llama\", \"hidden_size\": \"64\", \"intermediate_size\": 8, \"num_attention_heads\": 4,"
         " \"num_hidden_layers\": 1, \"vocab_size\": 4}", KV_EFORMAT, "hidden_size"},
        {"{\"model_type\": \"llama\", \"hidden_size\": -64, \"intermediate_size\": 8, \"num_attention_heads\": 4,"
         " \"num_hidden_layers\": 1, \"vocab_size\": 4}", KV_ERANGE, "hidden_size"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_attention_heads\": 4,"
         " \"num_hidden_layers\": 1, \"vocab_size\": 4, \"tie_word_embeddings\": 1}", KV_EFORMAT, "tie_word_embeddings"},
        {"[1, 2]", KV_EFORMAT, "object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kv_hparams hp;
        kv_error err;
        kv_status st = config_from(T, cases[i].json, &hp, &err);
        CHECK_MSG(st == cases[i].st, "case %zu: status %d want %d (%s)", i, st, cases[i].st, err.message);
        CHECK_MSG(strstr(err.message, cases[i].needle) != NULL, "case %zu: message '%s' lacks '%s'", i, err.message, cases[i].needle);
        CHECK_MSG(strstr(err.file, "config.json") != NULL, "case %zu: file '%s'", i, err.file);
        CHECK_MSG(err.offset >= 0, "case %zu: no offset", i);
    }
}

/* ---- names ------------------------------------------------------------------------------------------------- */

KV_TEST(names_hf_canonical_roundtrip) {
    static const char *const pairs[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
        {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
        {"model.layers.12.self_attn.q_proj.weight", "blk.12.attn_q.weight"},
        {"model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias"},
        {"model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight"},
        {"model.layers.7.self_attn.o_proj.weight", "blk.7.attn_output.weight"},
        {"model.layers.7.post_attention_layernorm.weight", "blk.7.ffn_norm.weight"},
        {"model.layers.101.mlp.gate_proj.weight", "blk.101.ffn_gate.weight"},
        {"model.layers.1.mlp.up_proj.weight", "blk.1.ffn_up.weight"},
        {"model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight"},
    };
    char out[160];
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        CHECK(kv_name_from_hf(pairs[i][0], out, sizeof out) == 1);
        CHECK_STR(out, pairs[i][1]);
        CHECK(kv_name_to_hf(pairs[i][1], out, sizeof out) == 1);
        CHECK_STR(out, pairs[i][0]);
    }
    static const char *const unmapped[] = {"model.layers.01.mlp.up_proj.weight", "model.layers.x.mlp.up_proj.weight",
                                           "model.layers.1.mlp.up_proj", "model.rotary_emb.inv_freq", "blk.1.ffn_up.weight",
                                           "model.layers.-1.mlp.up_proj.weight", ""};
    for (size_t i = 0; i < sizeof unmapped / sizeof unmapped[0]; i++)
        CHECK_MSG(kv_name_from_hf(unmapped[i], out, sizeof out) == 0, "'%s' should not map", unmapped[i]);
    CHECK(kv_name_to_hf("blk.2.rope_freqs", out, sizeof out) == 0);
    CHECK(kv_name_from_hf("model.layers.12.self_attn.q_proj.weight", out, 8) == 0); /* does not fit */
}

/* ---- proxy-27m (HF directory) -------------------------------------------------------------------------------- */

static kv_model_file *open_shared(kv_test_ctx *T, const char *rel) {
    char path[600];
    kv_test_shared(path, sizeof path, rel);
    if (!kv_test_exists(path)) return NULL;
    kv_error err;
    kv_error_clear(&err);
    kv_model_file *mf = NULL;
    if (kv_model_open(path, &mf, &err)) {
        char b[1200];
        kv_test_fail(T, __FILE__, __LINE__, "open %s: %s", path, kv_error_format(&err, b, sizeof b));
        return NULL;
    }
    return mf;
}

KV_TEST(io_proxy_hf_directory) {
    char path[600];
    if (!kv_test_exists(kv_test_shared(path, sizeof path, "models/proxy-27m/config.json"))) SKIP("proxy-27m absent");
    kv_model_file *mf = open_shared(T, "models/proxy-27m");
    REQUIRE(mf);
    CHECK_EQ_INT(kv_model_format(mf), KV_FILE_HF);
    CHECK_EQ_INT(kv_model_n_tensors(mf), 57);
    CHECK_EQ_INT(kv_model_n_params(mf), 27269632);
    CHECK_EQ_INT(kv_model_n_bytes(mf), 2 * 27269632);
    const kv_hparams *hp = kv_model_hparams(mf);
    REQUIRE(hp);
    /* expected shapes come from config.json read independently of the loader's hparams */
    kv_json_doc *doc;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_json_parse_file(path, 0, &doc, &err), &err);
    const kv_json *cfg = kv_json_root(doc);
    int64_t hidden = 0, inter = 0, heads = 0, kvh = 0, layers = 0, vocab = 0, hd = 0;
    REQUIRE(kv_json_get_int(cfg, "hidden_size", &hidden) == 1 && kv_json_get_int(cfg, "intermediate_size", &inter) == 1 &&
          kv_json_get_int(cfg, "num_attention_heads", &heads) == 1 && kv_json_get_int(cfg, "num_key_value_heads", &kvh) == 1 &&
          kv_json_get_int(cfg, "num_hidden_layers", &layers) == 1 && kv_json_get_int(cfg, "vocab_size", &vocab) == 1 &&
          kv_json_get_int(cfg, "head_dim", &hd) == 1);
    kv_json_free(doc);
    CHECK_STR(hp->arch, "llama");
    CHECK_EQ_INT(hp->n_embd, hidden);
    CHECK_EQ_INT(hp->n_ff, inter);
    CHECK_EQ_INT(hp->n_head, heads);
    CHECK_EQ_INT(hp->n_head_kv, kvh);
    CHECK_EQ_INT(hp->n_layer, layers);
    CHECK_EQ_INT(hp->n_vocab, vocab);
    CHECK_EQ_INT(hp->head_dim, hd);
    CHECK_EQ_INT(hp->n_ctx_train, 1024);
    CHECK_NEAR(hp->rope_theta, 10000.0, 0);
    CHECK_NEAR(hp->norm_eps, 1e-5, 1e-12);
    CHECK_EQ_INT(hp->tie_embeddings, 0);
    CHECK_EQ_INT(hp->bos_id, 1);
    CHECK_EQ_INT(hp->eos_id, 2);
    int64_t params = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        CHECK_MSG(t->name[0], "unmapped tensor %s", t->src_name);
        CHECK_EQ_INT(t->type, KV_TYPE_BF16);
        CHECK_EQ_INT(t->nbytes, 2 * kv_tensor_nelements(t));
        int64_t r = 0, c = 0;
        int l;
        const char *n = t->name;
        if (!strcmp(n, "token_embd.weight") || !strcmp(n, "output.weight")) { r = vocab; c = hidden; }
        else if (!strcmp(n, "output_norm.weight")) r = hidden;
        else if (sscanf(n, "blk.%d.", &l) == 1) {
            const char *s = strchr(n + 4, '.') + 1;
            if (!strcmp(s, "attn_norm.weight") || !strcmp(s, "ffn_norm.weight")) r = hidden;
            else if (!strcmp(s, "attn_q.weight")) { r = heads * hd; c = hidden; }
            else if (!strcmp(s, "attn_k.weight") || !strcmp(s, "attn_v.weight")) { r = kvh * hd; c = hidden; }
            else if (!strcmp(s, "attn_output.weight")) { r = hidden; c = heads * hd; }
            else if (!strcmp(s, "ffn_gate.weight") || !strcmp(s, "ffn_up.weight")) { r = inter; c = hidden; }
            else if (!strcmp(s, "ffn_down.weight")) { r = hidden; c = inter; }
        }
        CHECK_MSG(r > 0, "unexpected tensor %s", n);
        CHECK_EQ_INT(t->n_dims, c ? 2 : 1);
        CHECK_EQ_INT(t->shape[0], r);
        if (c) CHECK_EQ_INT(t->shape[1], c);
        params += kv_tensor_nelements(t);
        /* zero-copy: data points into the mapped shard at the recorded offset */
        CHECK(t->file_index >= 0 && t->file_index < 5);
    }
    CHECK_EQ_INT(params, 27269632);
    /* file order: shard by shard, each shard's header order (what llama.cpp's converter writes) */
    CHECK_STR(kv_model_tensor(mf, 0)->src_name, "model.embed_tokens.weight");
    CHECK_STR(kv_model_tensor(mf, 56)->src_name, "lm_head.weight");
    for (int64_t i = 1; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *p = kv_model_tensor(mf, i - 1), *q = kv_model_tensor(mf, i);
        CHECK(p->file_index < q->file_index || (p->file_index == q->file_index && p->offset < q->offset));
    }
    const kv_tensor *t = kv_model_find(mf, "output_norm.weight");
    REQUIRE(t);
    CHECK_EQ_INT(fnv1a64(t->data, t->nbytes), 0xcd48191c72b6ea26ull);
    t = kv_model_find(mf, "blk.5.attn_norm.weight");
    REQUIRE(t);
    CHECK_EQ_INT(fnv1a64(t->data, t->nbytes), 0xe6631b043caba643ull);
    t = kv_model_find(mf, "blk.0.attn_k.weight");
    REQUIRE(t);
    CHECK_STR(t->src_name, "model.layers.0.self_attn.k_proj.weight");
    CHECK_EQ_INT(fnv1a64(t->data, t->nbytes), 0xf9d351bfa7c4a481ull);
    const char *tok = NULL;
    CHECK_EQ_INT(kv_model_tokenizer(mf, &tok), KV_TOKSRC_SPM_MODEL);
    CHECK(tok && strstr(tok, "tokenizer.model"));
    CHECK(kv_model_find(mf, "blk.6.attn_q.weight") == NULL);
    CHECK(kv_model_meta_string(mf, "general.name") == NULL);
    kv_model_close(mf);
}

/* ---- GGUF written by llama.cpp vs the HF original: identical after un-permuting q/k ------------------------------ */

KV_TEST(io_proxy_gguf_matches_hf) {
    char path[600];
    if (!kv_test_exists(kv_test_shared(path, sizeof path, "models/proxy-27m-gguf/proxy-27m-bf16.gguf"))) SKIP("gguf absent");
    kv_model_file *g = open_shared(T, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    kv_model_file *h = open_shared(T, "models/proxy-27m");
    REQUIRE(g && h);
    CHECK_EQ_INT(kv_model_format(g), KV_FILE_GGUF);
    CHECK_EQ_INT(kv_model_n_tensors(g), 57);
    CHECK_EQ_INT(kv_model_n_params(g), 27269632);
    const kv_hparams *hg = kv_model_hparams(g), *hh = kv_model_hparams(h);
    REQUIRE(hg && hh);
    CHECK_STR(hg->arch, "llama");
    CHECK_EQ_INT(hg->n_vocab, hh->n_vocab);
    CHECK_EQ_INT(hg->n_embd, hh->n_embd);
    CHECK_EQ_INT(hg->n_layer, hh->n_layer);
    CHECK_EQ_INT(hg->n_head, hh->n_head);
    CHECK_EQ_INT(hg->n_head_kv, hh->n_head_kv);
    CHECK_EQ_INT(hg->head_dim, hh->head_dim);
    CHECK_EQ_INT(hg->n_ff, hh->n_ff);
    CHECK_EQ_INT(hg->n_ctx_train, hh->n_ctx_train);
    CHECK_NEAR(hg->rope_theta, hh->rope_theta, 0);
    CHECK_NEAR(hg->norm_eps, hh->norm_eps, 0);
    CHECK_EQ_INT(hg->tie_embeddings, 0);
    CHECK_EQ_INT(hg->bos_id, hh->bos_id);
    CHECK_EQ_INT(hg->eos_id, hh->eos_id);
    CHECK_EQ_INT(kv_model_tokenizer(g, NULL), KV_TOKSRC_GGUF);
    CHECK_STR(kv_model_meta_string(g, "tokenizer.ggml.model"), "llama");
    CHECK(kv_model_meta_string(g, "llama.block_count") == NULL); /* not a string */
    int identical = 0, converted = 0;
    float *a = malloc(8192 * sizeof *a), *b = malloc(8192 * sizeof *b);
    REQUIRE(a && b);
    for (int64_t i = 0; i < kv_model_n_tensors(h); i++) {
        const kv_tensor *th = kv_model_tensor(h, i), *tg = kv_model_find(g, th->name);
        CHECK_MSG(tg != NULL, "GGUF lacks %s", th->name);
        if (!tg) continue;
        CHECK_EQ_INT(tg->n_dims, th->n_dims);
        for (int d = 0; d < th->n_dims; d++) CHECK_EQ_INT(tg->shape[d], th->shape[d]);
        if (tg->type == th->type) {
            /* q/k matrices stay in the file's (llama.cpp's) row order, read back in HF order */
            CHECK_EQ_INT(tg->qk_heads, strstr(th->name, "attn_q.weight") ? 8 : strstr(th->name, "attn_k.weight") ? 4 : 0);
            uint8_t *rows = malloc(th->nbytes);
            REQUIRE(rows);
            kv_error e;
            kv_error_clear(&e);
            CHECK_OK(kv_tensor_copy_bytes(tg, rows, &e), &e);
            CHECK_MSG(tg->nbytes == th->nbytes && !memcmp(rows, th->data, th->nbytes), "%s differs", th->name);
            for (int64_t r = 0; r < th->shape[0] && th->n_dims == 2; r += 7)
                CHECK(!memcmp(kv_tensor_row_bytes(tg, r), (const uint8_t *)th->data + (size_t)r * (th->nbytes / (uint64_t)th->shape[0]), th->nbytes / (uint64_t)th->shape[0]));
            free(rows);
            identical++;
        } else {
            /* llama.cpp keeps 1-D norms in f32: the values must be the bf16 ones exactly */
            CHECK_EQ_INT(tg->type, KV_TYPE_F32);
            CHECK_EQ_INT(th->n_dims, 1);
            kv_error err;
            kv_error_clear(&err);
            CHECK_OK(kv_tensor_row_f32(tg, 0, a, &err), &err);
            CHECK_OK(kv_tensor_row_f32(th, 0, b, &err), &err);
            CHECK_MSG(!memcmp(a, b, (size_t)th->shape[0] * sizeof *a), "%s values differ", th->name);
            converted++;
        }
    }
    CHECK_EQ_INT(identical + converted, 57);
    CHECK_EQ_INT(identical, 44);
    /* the permutation is real: the raw GGUF rows of attn_q differ from HF's, and un-permuting them matches */
    kv_gguf *raw;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_gguf_open(path, &raw, &err), &err);
    const kv_gguf_tensor *rq = kv_gguf_find_tensor(raw, "blk.3.attn_q.weight");
    const kv_tensor *hq = kv_model_find(h, "blk.3.attn_q.weight");
    REQUIRE(rq && hq);
    CHECK(memcmp(rq->data, hq->data, hq->nbytes) != 0);
    /* GGUF row 2i+j of head 0 is HF row j*hd/2+i (hd = 64): HF row 32 is GGUF row 1 */
    size_t row = (size_t)hq->shape[1] * 2;
    CHECK(!memcmp((const uint8_t *)rq->data + row, (const uint8_t *)hq->data + 32 * row, row));
    CHECK(!memcmp((const uint8_t *)rq->data + 2 * row, (const uint8_t *)hq->data + 1 * row, row));
    kv_gguf_close(raw);
    free(a);
    free(b);
    kv_model_close(g);
    kv_model_close(h);
}

KV_TEST(io_vocab_only_ggufs_open) {
    static const char *const files[][2] = {
        {"tokenizers/ggml-vocab-llama-spm.gguf", "llama"}, {"tokenizers/ggml-vocab-llama-bpe.gguf", "llama"},
        {"tokenizers/ggml-vocab-qwen2.gguf", "qwen2"}, {"tokenizers/ggml-vocab-gpt-2.gguf", "gpt2"},
    };
    static const int32_t vocab[] = {32000, 128256, 151936, 50257};
    int seen = 0;
    for (size_t i = 0; i < 4; i++) {
        char path[600];
        if (!kv_test_exists(kv_test_shared(path, sizeof path, files[i][0]))) continue;
        kv_model_file *mf = open_shared(T, files[i][0]);
        if (!mf) continue;
        seen++;
        CHECK_EQ_INT(kv_model_format(mf), KV_FILE_GGUF);
        CHECK_EQ_INT(kv_model_n_tensors(mf), 0);
        REQUIRE(kv_model_hparams(mf));
        CHECK_STR(kv_model_hparams(mf)->arch, files[i][1]);
        CHECK_EQ_INT(kv_model_hparams(mf)->n_vocab, vocab[i]);
        CHECK_EQ_INT(kv_model_tokenizer(mf, NULL), KV_TOKSRC_GGUF);
        kv_model_close(mf);
    }
    if (!seen) SKIP("no vocab GGUFs");
}

/* ---- llama2.c ------------------------------------------------------------------------------------------------ */

/* FNV-1a of a tensor's bytes in Hugging Face row order (kv_tensor_copy_bytes un-permutes q/k rows). */
static uint64_t hf_order_hash(kv_test_ctx *T, const kv_tensor *t) {
    kv_error err;
    kv_error_clear(&err);
    void *b = malloc(t->nbytes);
    uint64_t h = 0;
    if (b && kv_tensor_copy_bytes(t, b, &err) == KV_OK) h = fnv1a64(b, t->nbytes);
    else CHECK_MSG(0, "copy of %s failed: %s", t->name, err.message);
    free(b);
    return h;
}

KV_TEST(io_stories260k_llama2c) {
    char path[600];
    if (!kv_test_exists(kv_test_shared(path, sizeof path, "models/stories260K/stories260K.bin"))) SKIP("stories260K absent");
    kv_model_file *mf = open_shared(T, "models/stories260K/stories260K.bin");
    REQUIRE(mf);
    CHECK_EQ_INT(kv_model_format(mf), KV_FILE_LLAMA2C);
    const kv_hparams *hp = kv_model_hparams(mf);
    REQUIRE(hp);
    CHECK_EQ_INT(hp->n_embd, 64);
    CHECK_EQ_INT(hp->n_ff, 172);
    CHECK_EQ_INT(hp->n_layer, 5);
    CHECK_EQ_INT(hp->n_head, 8);
    CHECK_EQ_INT(hp->n_head_kv, 4);
    CHECK_EQ_INT(hp->head_dim, 8);
    CHECK_EQ_INT(hp->n_vocab, 512);
    CHECK_EQ_INT(hp->n_ctx_train, 512);
    CHECK_EQ_INT(hp->tie_embeddings, 1);
    CHECK(kv_model_find(mf, "output.weight") == NULL);
    CHECK_EQ_INT(kv_model_n_tensors(mf), 2 + 9 * 5);
    /* 260,032 parameters: the two legacy RoPE tables (2 x 512 x 4 floats) are skipped, not tensors */
    CHECK_EQ_INT(kv_model_n_params(mf), 260032);
    const kv_tensor *t = kv_model_find(mf, "blk.2.attn_k.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->shape[0], 32);
    CHECK_EQ_INT(t->shape[1], 64);
    CHECK_EQ_INT(t->qk_heads, 4); /* read un-permuted into HF order, not copied at open */
    CHECK_EQ_INT(hf_order_hash(T, t), 0xfc644553ae7a9e23ull);
    CHECK_EQ_INT(t->offset, 28 + 4 * (512 * 64 + 5 * 64 + 5 * 64 * 64 + 2 * 64 * 32));
    t = kv_model_find(mf, "blk.4.attn_q.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->qk_heads, 8);
    CHECK_EQ_INT(hf_order_hash(T, t), 0x059c8ad1440cccb6ull);
    t = kv_model_find(mf, "token_embd.weight");
    REQUIRE(t);
    CHECK_EQ_INT(fnv1a64(t->data, t->nbytes), 0x92105060e9e7c6f6ull);
    t = kv_model_find(mf, "output_norm.weight");
    REQUIRE(t);
    CHECK_EQ_INT(fnv1a64(t->data, t->nbytes), 0x411bf9c8787bfab5ull);
    t = kv_model_find(mf, "blk.1.ffn_down.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->shape[0], 64);
    CHECK_EQ_INT(t->shape[1], 172);
    CHECK_EQ_INT(kv_model_tokenizer(mf, NULL), KV_TOKSRC_NONE);
    /* listed layer by layer although the file groups each kind over all layers */
    CHECK_STR(kv_model_tensor(mf, 0)->name, "token_embd.weight");
    CHECK_STR(kv_model_tensor(mf, 1)->name, "blk.0.attn_norm.weight");
    CHECK_STR(kv_model_tensor(mf, 2)->name, "blk.0.attn_q.weight");
    CHECK_STR(kv_model_tensor(mf, 10)->name, "blk.1.attn_norm.weight");
    CHECK_STR(kv_model_tensor(mf, 46)->name, "output_norm.weight");
    kv_model_close(mf);
}

/* ---- synthetic safetensors: single-file directory, lone file, fp32 rows --------------------------------------- */

/* Writes a safetensors file whose tensors are laid out back to back in the order given (shape [r, 0]: 1-D). */
static int write_st(const char *path, int n, const char *const *names, const char *const *dtypes,
                    const int64_t (*shapes)[2], const void *const *data, const size_t *bytes) {
    char hdr[4096];
    size_t h = (size_t)snprintf(hdr, sizeof hdr, "{\"__metadata__\": {\"format\": \"pt\"}");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        char shape[64];
        if (shapes[i][1]) snprintf(shape, sizeof shape, "%lld, %lld", (long long)shapes[i][0], (long long)shapes[i][1]);
        else snprintf(shape, sizeof shape, "%lld", (long long)shapes[i][0]);
        h += (size_t)snprintf(hdr + h, sizeof hdr - h, ", \"%s\": {\"dtype\": \"%s\", \"shape\": [%s], "
                              "\"data_offsets\": [%zu, %zu]}", names[i], dtypes[i], shape, off, off + bytes[i]);
        off += bytes[i];
    }
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "}");
    while (h % 8) hdr[h++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint64_t n64 = h;
    fwrite(&n64, 8, 1, f);
    fwrite(hdr, 1, h, f);
    for (int i = 0; i < n; i++) fwrite(data[i], 1, bytes[i], f);
    return fclose(f);
}

KV_TEST(io_synthetic_hf_dir_and_rows) {
    /* a 1-layer model: vocab 8, hidden 4, 2 heads of 2, ffn 6, tied embeddings, mixed f32/f16/bf16 */
    const char *dir = kv_test_tmpdir();
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *cfg = "{\"model_type\": \"llama\", \"hidden_size\": 4, \"intermediate_size\": 6, \"num_attention_heads\": 2,"
                      " \"num_hidden_layers\": 1, \"vocab_size\": 8, \"tie_word_embeddings\": true}";
    REQUIRE(kv_test_write_file(path, cfg, strlen(cfg)) == 0);
    static const char *const names[] = {
        "model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.post_attention_layernorm.weight", "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.rotary_emb.inv_freq"};
    static const char *const dtypes[] = {"F32", "F32", "F16", "BF16", "F32", "F32", "F32", "F32", "F32", "F32", "F32", "F32"};
    static const int64_t shapes[][2] = {{8, 4}, {4, 0}, {4, 0}, {4, 4}, {4, 4}, {4, 4}, {4, 4}, {4, 0}, {6, 4}, {6, 4}, {4, 6}, {1, 0}};
    float f32[12][48];
    uint16_t half[48];
    const void *data[12];
    size_t bytes[12];
    for (int i = 0; i < 12; i++) {
        for (int k = 0; k < 48; k++) f32[i][k] = (float)(i * 100 + k) * 0.25f;
        data[i] = f32[i];
        bytes[i] = (size_t)(shapes[i][0] * (shapes[i][1] ? shapes[i][1] : 1)) * 4;
    }
    for (int k = 0; k < 4; k++) half[k] = kv_fp32_to_fp16(f32[2][k]);
    data[2] = half;
    bytes[2] = 8;
    uint16_t bf[16];
    for (int k = 0; k < 16; k++) bf[k] = kv_fp32_to_bf16(f32[3][k]);
    data[3] = bf;
    bytes[3] = 32;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    REQUIRE(write_st(path, 12, names, dtypes, shapes, data, bytes) == 0);
    const char *tj = "{}";
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    REQUIRE(kv_test_write_file(path, tj, 2) == 0);
    kv_error err;
    kv_error_clear(&err);
    kv_model_file *mf;
    REQUIRE_OK(kv_model_open(dir, &mf, &err), &err);
    CHECK_EQ_INT(kv_model_n_tensors(mf), 12);
    CHECK_EQ_INT(kv_model_hparams(mf)->tie_embeddings, 1);
    const char *tok;
    CHECK_EQ_INT(kv_model_tokenizer(mf, &tok), KV_TOKSRC_HF_JSON);
    /* unmapped tensors keep their source name with an empty canonical name */
    int unmapped = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++)
        if (!kv_model_tensor(mf, i)->name[0]) {
            unmapped++;
            CHECK_STR(kv_model_tensor(mf, i)->src_name, "model.rotary_emb.inv_freq");
        }
    CHECK_EQ_INT(unmapped, 1);
    float row[8];
    const kv_tensor *t = kv_model_find(mf, "token_embd.weight");
    REQUIRE(t);
    REQUIRE_OK(kv_tensor_row_f32(t, 5, row, &err), &err);
    CHECK(!memcmp(row, &f32[0][20], 16));
    CHECK_EQ_INT(kv_tensor_row_f32(t, 8, row, &err), KV_ERANGE);
    CHECK_STR(err.tensor, "token_embd.weight");
    t = kv_model_find(mf, "blk.0.attn_norm.weight");
    REQUIRE(t && t->type == KV_TYPE_F16 && t->n_dims == 1);
    REQUIRE_OK(kv_tensor_row_f32(t, 0, row, &err), &err);
    for (int k = 0; k < 4; k++) CHECK_EQ_INT(row[k] == kv_fp16_to_fp32(half[k]), 1);
    t = kv_model_find(mf, "blk.0.attn_q.weight");
    REQUIRE(t && t->type == KV_TYPE_BF16);
    float all[16];
    REQUIRE_OK(kv_tensor_to_f32(t, all, &err), &err);
    for (int k = 0; k < 16; k++) CHECK_EQ_INT(all[k] == kv_bf16_to_fp32(bf[k]), 1); /* HF layout: no permutation */
    /* block types go through the formats module: a hand-made q8_0 tensor (per block: fp16 d, 32 x int8 q) */
    uint8_t q8[2][34];
    for (int r = 0; r < 2; r++) {
        uint16_t d = kv_fp32_to_fp16(r ? 0.25f : -2.0f);
        memcpy(q8[r], &d, 2);
        for (int k = 0; k < 32; k++) q8[r][2 + k] = (uint8_t)(int8_t)(k - 16);
    }
    kv_tensor qt = {.name = "q", .n_dims = 2, .shape = {2, 32, 1, 1}, .type = KV_TYPE_Q8_0, .data = q8, .nbytes = 68};
    float qrow[32];
    REQUIRE_OK(kv_tensor_row_f32(&qt, 1, qrow, &err), &err);
    for (int k = 0; k < 32; k++) CHECK_EQ_INT(qrow[k] == 0.25f * (float)(k - 16), 1);
    REQUIRE_OK(kv_tensor_row_f32(&qt, 0, qrow, &err), &err);
    CHECK_EQ_INT(qrow[31] == -30.0f, 1);
    kv_tensor fake = *t;
    fake.type = KV_TYPE_Q4_K; /* rows of 4 are not a whole q4_k block */
    kv_error_clear(&err);
    CHECK_EQ_INT(kv_tensor_row_f32(&fake, 0, row, &err), KV_EUNSUPPORTED);
    CHECK(strstr(err.message, "q4_k") != NULL);
    CHECK_STR(err.tensor, "blk.0.attn_q.weight");
    fake.type = KV_TYPE_I32;
    kv_error_clear(&err);
    CHECK_EQ_INT(kv_tensor_row_f32(&fake, 0, row, &err), KV_EUNSUPPORTED);
    kv_model_close(mf);

    /* the same file alone: tensors only, no hparams, names still mapped */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    REQUIRE_OK(kv_model_open(path, &mf, &err), &err);
    CHECK_EQ_INT(kv_model_format(mf), KV_FILE_SAFETENSORS);
    CHECK(kv_model_hparams(mf) == NULL);
    CHECK_EQ_INT(kv_model_n_tensors(mf), 12);
    CHECK(kv_model_find(mf, "blk.0.ffn_down.weight") != NULL);
    CHECK_EQ_INT(kv_model_tokenizer(mf, NULL), KV_TOKSRC_NONE);
    kv_model_close(mf);
    char args[800], *out = NULL;
    snprintf(args, sizeof args, "inspect --json '%s'", path);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    kv_json_doc *doc = NULL;
    CHECK(out && kv_json_parse(out, strlen(out), NULL, &doc, NULL) == KV_OK);
    if (doc) {
        const kv_json *r = kv_json_root(doc);
        CHECK(kv_json_get(r, "architecture") && kv_json_get(r, "architecture")->type == KV_JSON_NULL);
        CHECK(kv_json_get(r, "hparams") && kv_json_get(r, "hparams")->type == KV_JSON_NULL);
        int64_t v;
        CHECK(kv_json_get_int(r, "params", &v) == 1 && v == 8 * 4 + 4 + 4 + 4 * 16 + 4 + 3 * 24 + 1);
        const kv_json *ts = kv_json_get(r, "tensors");
        CHECK(ts && ts->len == 12);
    }
    kv_json_free(doc);
    free(out);
}

KV_TEST(safetensors_parse_scalars_and_empty) {
    /* a 0-d scalar and a tensor with a zero dimension are valid */
    const char *hdr = "{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
                      "\"e\":{\"dtype\":\"I32\",\"shape\":[0,3],\"data_offsets\":[8,8]}}";
    size_t hl = strlen(hdr);
    uint8_t buf[256];
    uint64_t n = hl;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, hdr, hl);
    double v = 2.5;
    memcpy(buf + 8 + hl, &v, 8);
    kv_st_header h;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_safetensors_parse(buf, 16 + hl, "mem", &h, &err), &err);
    CHECK_EQ_INT(h.n_tensors, 2);
    CHECK_EQ_INT(h.tensors[0].n_dims, 0);
    CHECK_EQ_INT(h.tensors[0].type, KV_TYPE_F64);
    CHECK_EQ_INT(h.tensors[1].shape[0], 0);
    CHECK_EQ_INT(h.data_start, 8 + hl);
    kv_st_header_free(&h);
    CHECK_STR(kv_safetensors_dtype_name(KV_TYPE_BF16), "BF16");
    CHECK(kv_safetensors_dtype_name(KV_TYPE_Q4_0) == NULL);
}

/* ---- kvant inspect ---------------------------------------------------------------------------------------------- */

KV_TEST(cli_inspect_json_proxy) {
    char path[600], args[800];
    if (!kv_test_exists(kv_test_shared(path, sizeof path, "models/proxy-27m/config.json"))) SKIP("proxy-27m absent");
    kv_test_shared(path, sizeof path, "models/proxy-27m");
    snprintf(args, sizeof args, "inspect '%s' --json", path);
    char *out = NULL;
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    REQUIRE(out);
    kv_json_doc *doc;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_json_parse(out, strlen(out), NULL, &doc, &err), &err);
    const kv_json *r = kv_json_root(doc);
    const char *s;
    int64_t v;
    double bpw;
    CHECK(kv_json_get_str(r, "format", &s) == 1 && !strcmp(s, "hf"));
    CHECK(kv_json_get_str(r, "architecture", &s) == 1 && !strcmp(s, "llama"));
    CHECK(kv_json_get_int(r, "params", &v) == 1 && v == 27269632);
    CHECK(kv_json_get_int(r, "bytes", &v) == 1 && v == 2 * 27269632);
    CHECK(kv_json_get_num(r, "bits_per_weight", &bpw) == 1 && bpw == 16.0);
    const kv_json *hp = kv_json_get(r, "hparams");
    CHECK(kv_json_get_int(hp, "n_layer", &v) == 1 && v == 6);
    CHECK(kv_json_get_int(hp, "n_head_kv", &v) == 1 && v == 4);
    CHECK(kv_json_get_str(kv_json_get(r, "tokenizer"), "kind", &s) == 1 && !strcmp(s, "sentencepiece"));
    const kv_json *ts = kv_json_get(r, "tensors");
    REQUIRE(ts && ts->type == KV_JSON_ARRAY);
    CHECK_EQ_INT(ts->len, 57);
    int64_t sum = 0;
    for (uint64_t i = 0; i < ts->len; i++) {
        const kv_json *t = kv_json_at(ts, i);
        CHECK(kv_json_get_str(t, "name", &s) == 1 && kv_json_get_str(t, "dtype", &s) == 1 && !strcmp(s, "bf16"));
        CHECK(kv_json_get(t, "shape") && kv_json_get(t, "shape")->type == KV_JSON_ARRAY);
        if (kv_json_get_int(t, "bytes", &v) == 1) sum += v;
    }
    CHECK_EQ_INT(sum, 2 * 27269632);
    kv_json_free(doc);
    free(out);
}

KV_TEST(cli_inspect_every_shared_file) {
    static const char *const files[] = {
        "models/proxy-27m", "models/proxy-27m-gguf/proxy-27m-bf16.gguf", "models/stories260K/stories260K.bin",
        "tokenizers/ggml-vocab-llama-spm.gguf", "tokenizers/ggml-vocab-llama-bpe.gguf", "tokenizers/ggml-vocab-qwen2.gguf",
        "tokenizers/ggml-vocab-gpt-2.gguf",
    };
    int seen = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[600], args[800];
        if (!kv_test_exists(kv_test_shared(path, sizeof path, files[i]))) continue;
        seen++;
        for (int json = 0; json < 2; json++) {
            snprintf(args, sizeof args, "inspect '%s'%s", path, json ? " --json" : "");
            char *out = NULL;
            int rc = kv_test_run_cli(args, &out);
            CHECK_MSG(rc == 0, "%s: exit %d: %.300s", args, rc, out ? out : "");
            if (json && out) {
                kv_json_doc *doc = NULL;
                CHECK_MSG(kv_json_parse(out, strlen(out), NULL, &doc, NULL) == KV_OK, "%s: output is not JSON", args);
                kv_json_free(doc);
            } else if (out) {
                CHECK(strstr(out, "bits/weight:") != NULL);
            }
            free(out);
        }
    }
    if (!seen) SKIP("no shared files");
    char *out = NULL;
    CHECK_EQ_INT(kv_test_run_cli("inspect --help", &out), 0);
    CHECK(out && strstr(out, "usage: kvant inspect"));
    free(out);
    CHECK_EQ_INT(kv_test_run_cli("inspect", &out), 2);
    free(out);
    CHECK_EQ_INT(kv_test_run_cli("inspect a b", &out), 2);
    free(out);
    CHECK_EQ_INT(kv_test_run_cli("inspect --bogus x", &out), 2);
    free(out);
    CHECK_EQ_INT(kv_test_run_cli("inspect /nonexistent/model", &out), 1);
    CHECK(out && strstr(out, "/nonexistent/model"));
    free(out);
}

/* A kvant-only format in a GGUF: the exact format comes from "kvant.tensor.<name>.format", so rows decode
 * through kv_model_tensor_row_f32 (and inspect names the format), while the bare type id cannot say which. */
KV_TEST(io_gguf_kvant_format_rows) {
    kv_error err;
    kv_error_clear(&err);
    kv_format f;
    if (kv_format_get("int4_g128_asym", &f, &err) != KV_OK) SKIP("format int4_g128_asym not available");
    REQUIRE(f.type >= KV_TYPE_KVANT_BASE && f.quantize && f.dequantize);
    enum { ROWS = 3, COLS = 256 };
    float src[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) src[i] = sinf((float)i * 0.37f) * (1.0f + (float)(i / COLS));
    size_t rb = kv_format_row_bytes(&f, COLS);
    REQUIRE(rb > 0);
    uint8_t *packed = malloc(rb * ROWS);
    REQUIRE(packed);
    REQUIRE_OK(f.quantize(&f, src, packed, ROWS, COLS, NULL, &err), &err);
    char path[600];
    snprintf(path, sizeof path, "%s/kv.gguf", kv_test_tmpdir());
    kv_gguf_writer *w;
    REQUIRE_OK(kv_gguf_writer_create(&w, &err), &err);
    int64_t shape[2] = {ROWS, COLS};
    CHECK_OK(kv_gguf_writer_add_str(w, "kvant.tensor.w.format", "int4_g128_asym", &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor(w, "w", 2, shape, f.type, packed, &err), &err);
    CHECK_OK(kv_gguf_writer_write(w, path, NULL, &err), &err);
    kv_gguf_writer_free(w);
    kv_model_file *mf;
    REQUIRE_OK(kv_model_open(path, &mf, &err), &err);
    CHECK(kv_model_hparams(mf) == NULL); /* no general.architecture */
    const kv_tensor *t = kv_model_find(mf, "w");
    REQUIRE(t);
    CHECK_EQ_INT(t->nbytes, rb * ROWS);
    float row[COLS], want[COLS];
    for (int r = 0; r < ROWS; r++) {
        REQUIRE_OK(kv_model_tensor_row_f32(mf, t, r, row, &err), &err);
        f.dequantize(&f, packed + (size_t)r * rb, want, COLS);
        CHECK_MSG(!memcmp(row, want, sizeof row), "row %d differs", r);
        double e = 0;
        for (int k = 0; k < COLS; k++) e = fmax(e, fabs((double)row[k] - src[r * COLS + k]));
        CHECK(e < 0.5 * (1.0 + r)); /* 4-bit: within a quantization step of the source */
    }
    CHECK_EQ_INT(kv_model_tensor_row_f32(mf, t, ROWS, row, &err), KV_ERANGE);
    kv_error_clear(&err);
    CHECK_EQ_INT(kv_tensor_row_f32(t, 0, row, &err), KV_EUNSUPPORTED);
    CHECK_STR(kv_model_meta_string(mf, "kvant.tensor.w.format"), "int4_g128_asym");
    kv_model_close(mf);
    char args[800], *out = NULL;
    snprintf(args, sizeof args, "inspect '%s'", path);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(out && strstr(out, "int4_g128_asym"));
    free(out);
    free(packed);
}
