/* test_cli_habits.c — the small CLI promises of issue 16: the quantize summary names its two sizes, the --json
 * eval row carries the recipe, `kvant help` lists only benchmarks that exist, `formats --samples` below the
 * minimum says so, and llama.cpp's -m / -f / --chunks spellings work for eval and run. */
#include "test.h"
#include "../src/io/json.h"

#define STORIES "models/stories260K/stories260K.bin"
#define PROXY "models/proxy-27m"

static char *cli(kv_test_ctx *T, int want_rc, const char *args) {
    char *out = NULL;
    int rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == want_rc, "kvant %s: exit %d (want %d):\n%.3000s", args, rc, want_rc, out ? out : "");
    return out;
}

static kv_json_doc *parse_from(const char *out) {
    const char *p = out ? strchr(out, '{') : NULL;
    kv_json_doc *doc = NULL;
    kv_error err;
    kv_error_clear(&err);
    if (!p || kv_json_parse(p, strlen(p), NULL, &doc, &err) != KV_OK) return NULL;
    return doc;
}

KV_TEST(cli_quantize_summary_names_file_and_tensor_sizes) {
    char model[512], args[1600];
    kv_test_shared(model, sizeof model, STORIES);
    if (!kv_test_exists(model)) SKIP("stories260K not found");
    snprintf(args, sizeof args, "quantize %s -o %s/s.gguf --format q8_0 --quiet", model, kv_test_tmpdir());
    char *out = cli(T, 0, args);
    double file_mib = 0, tensor_mib = 0;
    const char *p = out ? strstr(out, ", file ") : NULL;
    CHECK_MSG(p && sscanf(p, ", file %lf MiB, tensor data %lf MiB,", &file_mib, &tensor_mib) == 2, "%s", out ? out : "");
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s/s.gguf --format q8_0 --quiet --json", model, kv_test_tmpdir());
    out = cli(T, 0, args);
    kv_json_doc *doc = parse_from(out);
    free(out);
    REQUIRE(doc);
    int64_t fb = 0, tb = 0;
    CHECK(kv_json_get_int(kv_json_root(doc), "file_bytes", &fb) == 1 && kv_json_get_int(kv_json_root(doc), "tensor_bytes", &tb) == 1);
    CHECK(fb > tb && tb > 0); /* the file adds the header, metadata and padding */
    CHECK_NEAR(file_mib, fb / 1048576.0, 0.006);
    CHECK_NEAR(tensor_mib, tb / 1048576.0, 0.006);
    kv_json_free(doc);
}

KV_TEST(cli_quantize_json_eval_row_is_the_recipe) {
    char model[512], text[512], args[1600];
    kv_test_shared(model, sizeof model, PROXY);
    kv_test_shared(text, sizeof text, "data/heldout.txt");
    if (!kv_test_exists(model) || !kv_test_exists(text)) SKIP("proxy-27m or heldout.txt not found");
    const char *cases[][2] = {{"--format q8_0", "q8_0"}, {"--format q8_0 --act int8", "q8_0 A:int8"},
                              {"--format q8_0 --label mine", "mine"}};
    for (int c = 0; c < 3; c++) {
        snprintf(args, sizeof args, "quantize %s -o %s/s.gguf %s --eval %s --ctx 64 --chunks 2 --quiet --json", model,
                 kv_test_tmpdir(), cases[c][0], text);
        char *out = cli(T, 0, args);
        kv_json_doc *doc = parse_from(out);
        CHECK_MSG(doc, "%.500s", out ? out : "");
        free(out);
        if (!doc) continue;
        const kv_json *rows = kv_json_get(kv_json_get(kv_json_root(doc), "eval"), "rows");
        const char *m0 = NULL, *m1 = NULL;
        REQUIRE(rows && rows->len == 2);
        CHECK(kv_json_get_str(kv_json_at(rows, 0), "model", &m0) == 1 && !strcmp(m0, "base"));
        CHECK_MSG(kv_json_get_str(kv_json_at(rows, 1), "model", &m1) == 1 && !strcmp(m1, cases[c][1]), "%s: row '%s'",
                  cases[c][0], m1 ? m1 : "(none)");
        kv_json_free(doc);
    }
}

KV_TEST(cli_help_lists_only_existing_benchmarks) {
    char *out = cli(T, 0, "help");
    const char *p = out ? strstr(out, "benchmarks (") : NULL;
    REQUIRE(p);
    p += strlen("benchmarks (");
    const char *end = strchr(p, ')');
    REQUIRE(end && end - p < 200);
    char list[256];
    memcpy(list, p, (size_t)(end - p));
    list[end - p] = 0;
    free(out);
    int n = 0;
    for (char *save = NULL, *name = strtok_r(list, ", ", &save); name; name = strtok_r(NULL, ", ", &save), n++) {
        char args[300];
        snprintf(args, sizeof args, "bench %s --help", name);
        free(cli(T, 0, args)); /* each one named exists */
    }
    CHECK(n >= 3);
    free(cli(T, 2, "bench formats")); /* and the one it used to name does not */
}

KV_TEST(cli_formats_samples_below_minimum_warns) {
    char *out = cli(T, 0, "formats --formats q8_0 --samples 1000 --quiet");
    CHECK_MSG(out && strstr(out, "warning: --samples 1000 is below the minimum of 262144") &&
              strstr(out, "262144 samples per set"), "%.1500s", out ? out : "");
    free(out);
    out = cli(T, 0, "formats --formats q8_0 --samples 262144 --quiet");
    CHECK(out && !strstr(out, "warning") && strstr(out, "262144 samples per set"));
    free(out);
    free(cli(T, 2, "formats --formats q8_0 --samples 0"));
}

KV_TEST(cli_eval_and_run_take_llama_cpp_spellings) {
    char model[512], text[512], args[1600], prompt[700];
    kv_test_shared(model, sizeof model, PROXY);
    kv_test_shared(text, sizeof text, "data/heldout.txt");
    if (!kv_test_exists(model) || !kv_test_exists(text)) SKIP("proxy-27m or heldout.txt not found");
    snprintf(args, sizeof args, "eval %s --text %s --ctx 64 --chunks 3 --json --quiet", model, text);
    char *a = cli(T, 0, args);
    snprintf(args, sizeof args, "eval -m %s -f %s -c 64 --chunks 3 --json --quiet", model, text);
    char *b = cli(T, 0, args);
    kv_json_doc *da = parse_from(a), *db = parse_from(b);
    free(a);
    free(b);
    REQUIRE(da && db);
    double pa = 0, pb = -1;
    int64_t wa = 0, wb = -1;
    CHECK(kv_json_get_num(kv_json_root(da), "ppl", &pa) == 1 && kv_json_get_num(kv_json_root(db), "ppl", &pb) == 1);
    CHECK(kv_json_get_int(kv_json_root(da), "windows", &wa) == 1 && kv_json_get_int(kv_json_root(db), "windows", &wb) == 1);
    CHECK(pa == pb && wa == 3 && wb == 3);
    kv_json_free(da);
    kv_json_free(db);
    snprintf(args, sizeof args, "eval -m %s %s -f %s", model, model, text);
    free(cli(T, 2, args)); /* MODEL twice */

    snprintf(prompt, sizeof prompt, "%s/prompt.txt", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(prompt, "Once upon a time", 16) == 0);
    snprintf(args, sizeof args, "run %s -p 'Once upon a time' -n 8 --temp 0 --json --quiet", model);
    a = cli(T, 0, args);
    snprintf(args, sizeof args, "run -m %s -f %s -n 8 --temp 0 --json --quiet", model, prompt);
    b = cli(T, 0, args);
    da = parse_from(a), db = parse_from(b);
    REQUIRE(da && db);
    const char *ta = NULL, *tb = NULL;
    CHECK(kv_json_get_str(kv_json_root(da), "text", &ta) == 1 && kv_json_get_str(kv_json_root(db), "text", &tb) == 1);
    CHECK_MSG(ta && tb && !strcmp(ta, tb) && strlen(ta) > 16, "'%s' vs '%s'", ta ? ta : "", tb ? tb : "");
    free(a);
    free(b);
    kv_json_free(da);
    kv_json_free(db);
    snprintf(args, sizeof args, "run %s -p hi -f %s", model, prompt);
    free(cli(T, 2, args)); /* one prompt */
}
