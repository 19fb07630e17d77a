/* test_inspect_meta.c — `kvant inspect --meta` shows what a file stores (GGUF key/value pairs with arrays
 * summarised, safetensors __metadata__, an HF directory's quantization_config) and the transforms recorded;
 * and `inspect` of a llama2.c directory finds its checkpoint. */
#include "test.h"
#include "../src/io/json.h"
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

static char *cli(kv_test_ctx *T, int want_rc, const char *fmt, const char *a, const char *b) {
    char args[2000], *out = NULL;
    snprintf(args, sizeof args, fmt, a, b);
    int rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == want_rc, "kvant %s: exit %d (want %d):\n%.3000s", args, rc, want_rc, out ? out : "");
    return out;
}

/* The JSON object that starts at the first '{' of out (kvant --json prints nothing before it). */
static kv_json_doc *parse_out(kv_test_ctx *T, const char *out) {
    const char *p = out ? strchr(out, '{') : NULL;
    kv_json_doc *doc = NULL;
    kv_error err;
    kv_error_clear(&err);
    if (!p || kv_json_parse(p, strlen(p), NULL, &doc, &err) != KV_OK) {
        CHECK_MSG(0, "not JSON: %.500s", out ? out : "");
        return NULL;
    }
    return doc;
}

KV_TEST(inspect_meta_gguf_pairs_arrays_and_rotations) {
    char model[512], gguf[700];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    snprintf(gguf, sizeof gguf, "%s/r.gguf", kv_test_tmpdir());
    free(cli(T, 0, "quantize %s -o %s --format q4_0 --pure --transform rht --quiet", model, gguf));
    char *out = cli(T, 0, "inspect %s --meta%s", gguf, "");
    REQUIRE(out);
    CHECK_MSG(strstr(out, "metadata:") && strstr(out, "GGUF v3"), "%.400s", out);
    CHECK(strstr(out, "general.architecture") && strstr(out, "\"llama\""));
    CHECK(strstr(out, "llama.block_count") && strstr(out, "u32     6"));
    CHECK(strstr(out, "tokenizer.ggml.tokens") && strstr(out, "[string] 8192 items: "));
    CHECK(strstr(out, "kvant.tensor.blk.0.ffn_down.weight.format") && strstr(out, "\"q4_0\""));
    CHECK(strstr(out, "transforms:    rht:512") && strstr(out, "43 weights rotated online"));
    free(out);

    /* --json: the same pairs, arrays as {elem_type, n, first}; equal to what the GGUF reader gives */
    out = cli(T, 0, "inspect %s --meta --json%s", gguf, "");
    kv_json_doc *doc = parse_out(T, out);
    free(out);
    REQUIRE(doc);
    kv_gguf *g = NULL;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_gguf_open(gguf, &g, &err), &err);
    const kv_json *md = kv_json_get(kv_json_root(doc), "metadata");
    REQUIRE(md && md->type == KV_JSON_ARRAY);
    CHECK_EQ_INT(md->len, kv_gguf_n_kv(g));
    int seen_tokens = 0, seen_layers = 0;
    for (uint64_t i = 0; i < md->len; i++) {
        const kv_json *e = kv_json_at(md, i);
        const char *key = NULL, *type = NULL;
        REQUIRE(kv_json_get_str(e, "key", &key) == 1 && kv_json_get_str(e, "type", &type) == 1);
        CHECK_STR(key, kv_gguf_kv_key(g, (int64_t)i));
        if (!strcmp(key, "tokenizer.ggml.tokens")) {
            seen_tokens = 1;
            int64_t n = 0;
            const char *et = NULL;
            CHECK_STR(type, "array");
            CHECK(kv_json_get_str(e, "elem_type", &et) == 1 && !strcmp(et, "string"));
            CHECK(kv_json_get_int(e, "n", &n) == 1 && n == 8192);
            const kv_json *first = kv_json_get(e, "first");
            REQUIRE(first && first->len == 5);
            kv_gguf_value arr, it;
            REQUIRE_OK(kv_gguf_get_arr(g, key, &arr, &err), &err);
            for (uint64_t k = 0; k < 5; k++) {
                REQUIRE_OK(kv_gguf_arr_get(&arr, k, &it, &err), &err);
                const kv_json *f = kv_json_at(first, k);
                CHECK(f && f->type == KV_JSON_STRING && f->len == it.n && !memcmp(f->u.str, it.data, it.n));
            }
        }
        if (!strcmp(key, "llama.block_count")) {
            int64_t v = 0;
            seen_layers = kv_json_get_int(e, "value", &v) == 1 && v == 6;
        }
    }
    CHECK(seen_tokens && seen_layers);
    const kv_json *tr = kv_json_get(kv_json_root(doc), "transforms");
    const char *list = NULL;
    CHECK(kv_json_get_str(tr, "list", &list) == 1 && !strcmp(list, "rht:512"));
    const kv_json *rot = kv_json_get(tr, "rotated");
    REQUIRE(rot && rot->type == KV_JSON_ARRAY);
    CHECK_EQ_INT(rot->len, 43);
    int64_t block = 0;
    const char *seed = NULL, *tensor = NULL;
    REQUIRE(kv_json_get_str(kv_json_at(rot, 0), "tensor", &tensor) == 1);
    CHECK(kv_json_get_int(kv_json_at(rot, 0), "rht_block", &block) == 1 && block == 512);
    CHECK(kv_json_get_str(kv_json_at(rot, 0), "rht_seed", &seed) == 1);
    char key[256];
    uint64_t want = 0;
    snprintf(key, sizeof key, KV_META_RHT_SEED_FMT, tensor);
    CHECK_OK(kv_gguf_get_u64(g, key, &want, &err), &err);
    CHECK(seed && strtoull(seed, NULL, 10) == want);
    kv_gguf_close(g);
    kv_json_free(doc);
    /* --meta is a report of its own, not a --verify option */
    free(cli(T, 2, "inspect %s --meta --verify%s", gguf, ""));
}

KV_TEST(inspect_meta_hf_dir_and_safetensors) {
    char model[512], dir[700], st[700];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    snprintf(dir, sizeof dir, "%s/w4a16/", kv_test_tmpdir());
    snprintf(st, sizeof st, "%s/q.safetensors", kv_test_tmpdir());
    free(cli(T, 0, "quantize %s -o %s --scheme W4A16 --quiet", model, dir));
    char *out = cli(T, 0, "inspect %s --meta%s", dir, "");
    REQUIRE(out);
    CHECK_MSG(strstr(out, "quantization_config: {") && strstr(out, "\"quant_method\":\"compressed-tensors\""), "%.3000s", out);
    CHECK(strstr(out, "__metadata__:") && strstr(out, "transforms:    (none recorded)"));
    free(out);
    out = cli(T, 0, "inspect %s --meta --json%s", dir, "");
    kv_json_doc *doc = parse_out(T, out);
    free(out);
    REQUIRE(doc);
    const kv_json *qc = kv_json_get(kv_json_root(doc), "quantization_config");
    const char *qm = NULL;
    CHECK(kv_json_get_str(qc, "quant_method", &qm) == 1 && !strcmp(qm, "compressed-tensors"));
    CHECK(kv_json_get(kv_json_root(doc), "metadata")->type == KV_JSON_NULL);
    kv_json_free(doc);

    free(cli(T, 0, "quantize %s -o %s --format f16 --pure --transform rht:256 --quiet", model, st));
    out = cli(T, 0, "inspect %s --meta%s", st, "");
    REQUIRE(out);
    CHECK_MSG(strstr(out, "__metadata__:") && strstr(out, "kvant.quantize.format") && strstr(out, "\"f16\""), "%.2000s", out);
    CHECK(strstr(out, "transforms:    rht:256") && strstr(out, "weights rotated online") &&
          strstr(out, "blk.0.attn_q.weight") && strstr(out, "rht_block 256"));
    free(out);
}

KV_TEST(inspect_llama2c_directory_finds_the_checkpoint) {
    char model[512], dir[512];
    kv_test_shared(model, sizeof model, "models/stories260K");
    if (!kv_test_exists(model)) SKIP("stories260K not found");
    char *out = cli(T, 0, "inspect %s%s", model, "");
    REQUIRE(out);
    CHECK_MSG(strstr(out, "format:        llama2c") && strstr(out, "stories260K.bin"), "%.600s", out);
    free(out);
    out = cli(T, 0, "inspect %s --meta%s", model, "");
    CHECK(out && strstr(out, "metadata:      none"));
    free(out);
    /* a tokenizer-like .bin beside it is not a model; two checkpoints are an error naming both */
    char bin[700], path[800];
    snprintf(dir, sizeof dir, "%s/d", kv_test_tmpdir());
    snprintf(path, sizeof path, "mkdir -p %s", dir);
    REQUIRE(system(path) == 0);
    char abs[4096];
    REQUIRE(realpath(model, abs) != NULL); /* the links live elsewhere */
    snprintf(bin, sizeof bin, "%.600s/stories260K.bin", abs);
    snprintf(path, sizeof path, "%s/a.bin", dir);
    REQUIRE(symlink(bin, path) == 0);
    snprintf(path, sizeof path, "%s/tok512.bin", dir);
    REQUIRE(kv_test_write_file(path, "\x10\x00\x00\x00junk", 8) == 0);
    out = cli(T, 0, "inspect %s%s", dir, "");
    CHECK_MSG(out && strstr(out, "format:        llama2c") && strstr(out, "a.bin"), "%.600s", out ? out : "");
    free(out);
    snprintf(path, sizeof path, "%s/b.bin", dir);
    REQUIRE(symlink(bin, path) == 0);
    out = cli(T, 2, "inspect %s%s", dir, ""); /* which file is the user's to say: a usage error */
    CHECK_MSG(out && strstr(out, "2 model files") && strstr(out, "a.bin") && strstr(out, "b.bin"), "%.600s", out ? out : "");
    free(out);
}

/* --meta on what is not a model: a clear error naming the file (and the offset for bad bytes), exit 1, and no
 * partial report; on a vocab-only GGUF (a valid GGUF that holds no tensors) the key/value pairs are shown. */
KV_TEST(inspect_meta_refuses_bad_files_and_reads_vocab_only_gguf) {
    char bad[700], trunc[700], vocab[512];
    snprintf(bad, sizeof bad, "%s/junk.gguf", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(bad, "GGUX\x03\0\0\0 not a model", 20) == 0);
    char *out = cli(T, 1, "inspect %s --meta%s", bad, "");
    CHECK_MSG(out && strstr(out, bad) && strstr(out, "offset 0") && strstr(out, "not a GGUF file"), "%.400s", out ? out : "");
    CHECK(out && !strstr(out, "metadata:"));
    free(out);
    /* a GGUF cut inside its key/value pairs */
    kv_test_shared(vocab, sizeof vocab, "tokenizers/ggml-vocab-llama-spm.gguf");
    if (!kv_test_exists(vocab)) SKIP("%.200s not found", vocab);
    size_t n = 0;
    char *bytes = kv_test_read_file(vocab, &n);
    REQUIRE(bytes && n > 4096);
    snprintf(trunc, sizeof trunc, "%s/cut.gguf", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(trunc, bytes, 4096) == 0);
    free(bytes);
    out = cli(T, 1, "inspect %s --meta%s", trunc, "");
    CHECK_MSG(out && strstr(out, trunc) && strstr(out, "error"), "%.400s", out ? out : "");
    CHECK(out && !strstr(out, "metadata:"));
    free(out);
    out = cli(T, 0, "inspect %s --meta%s", vocab, "");
    CHECK_MSG(out && strstr(out, "tokenizer.ggml.tokens") && strstr(out, "metadata:"), "%.400s", out ? out : "");
    free(out);
}
