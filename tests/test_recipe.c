/* test_recipe.c — the typed recipe of `kvant quantize` (issue 12) and the llama.cpp / llm-compressor spellings
 * of its options (issue 16): method option tables and their one parser, format traits, every refusal before
 * any work, recipe keys for every long option, the recipe stored in the output and shown by inspect,
 * --allow-requantize, --scheme, --tensor-type & co, --verbose. */
#include "test.h"
#include "io/json.h"
#include <sys/stat.h>
#include <unistd.h>

#define P27 "models/proxy-27m"

/* ---- library: method options and format traits ---- */

KV_TEST(recipe_method_options_parse_and_validate) {
    const kv_quant_method *m = NULL;
    kv_method_values v;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_method_parse("gptq:act-order,damp=0.05,block=64", &m, &v, &err), &err);
    CHECK_STR(m->name, "gptq");
    CHECK(kv_mopt_given(m, &v, "act-order"));
    CHECK(!kv_mopt_given(m, &v, "static"));
    CHECK_NEAR(kv_mopt_num(m, &v, "damp"), 0.05, 1e-12);
    CHECK_NEAR(kv_mopt_num(m, &v, "block"), 64, 0);
    REQUIRE_OK(kv_method_parse("gptq", &m, &v, &err), &err);
    CHECK_NEAR(kv_mopt_num(m, &v, "damp"), 0.01, 1e-12); /* the declared default */
    REQUIRE_OK(kv_method_parse(NULL, &m, &v, &err), &err);
    CHECK_STR(m->name, "rtn");
    static const struct { const char *spec, *msg; } bad[] = {
        {"gptq:bogus", "unknown option 'bogus'"},  {"gptq:bogus", "act-order"},
        {"gptq:damp=-1", "damp=-1"},               {"gptq:block=0", "[1, 65536]"},
        {"gptq:block=2.5", "an integer"},          {"gptq:act-order=1", "takes no value"},
        {"gptq:damp", "needs a value"},            {"gptq:damp=1,damp=2", "twice"},
        {"watersic", "bits|step"},                 {"watersic:bits=0", "bits=0"},
        {"watersic:bits=3,store=zip", "ecw|decoded"}, {"llm-int8:threshold=abc", "threshold=abc"},
        {"rtn:x", "valid: none"},                  {"nosuch", "rtn, gptq"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kv_error_clear(&err);
        CHECK_MSG(kv_method_parse(bad[i].spec, &m, &v, &err) == KV_EINVAL && strstr(err.message, bad[i].msg),
                  "%s: %s", bad[i].spec, err.message);
    }
    REQUIRE_OK(kv_method_parse("watersic:step=0.5,store=decoded,only=blk.1.", &m, &v, &err), &err);
    CHECK_NEAR(kv_mopt_num(m, &v, "store"), 1, 0);
    CHECK_STR(kv_mopt_text(m, &v, "only"), "blk.1.");
    /* the help comes from the same table: every option of every method is in it */
    for (int i = 0; i < kv_quant_method_count(); i++) {
        const kv_quant_method *q = kv_quant_method_at(i);
        char help[4096];
        size_t n = kv_method_help(q, "  ", help, sizeof help);
        CHECK(n < sizeof help);
        for (int k = 0; k < q->n_opts; k++) CHECK_MSG(strstr(help, q->opts[k].name), "%s: %s", q->name, q->opts[k].name);
        REQUIRE(q->n_opts <= KV_METHOD_MAX_OPTS);
    }
}

KV_TEST(recipe_format_traits) {
    static const struct { const char *name; kv_format_family fam; int group, bits; uint32_t traits; } k[] = {
        {"f16", KV_FAM_PLAIN, 0, 16, 0},
        {"q4_k", KV_FAM_GGML, 32, 4, KV_FMT_ASYM},
        {"q6_k", KV_FAM_GGML, 16, 6, 0},
        {"int4_g128_asym", KV_FAM_INT, 128, 4, KV_FMT_ASYM},
        {"int4_g128_asym_mse", KV_FAM_INT, 128, 4, KV_FMT_ASYM | KV_FMT_SEARCH},
        {"int4_g128_asym_zp", KV_FAM_INT, 128, 4, KV_FMT_ASYM | KV_FMT_INT_ZP},
        {"int8_g0_sym_f32", KV_FAM_INT, 0, 8, KV_FMT_F32_SCALE},
        {"int4_gt_sym", KV_FAM_INT, -1, 4, 0},
        {"mxfp4_ocp", KV_FAM_MX, 32, 4, 0},
        {"mxfp6_e2m3_ps", KV_FAM_MX, 32, 6, KV_FMT_SEARCH},
        {"nvfp4_ts", KV_FAM_NVFP4, 16, 4, 0},
        {"fp8_e4m3", KV_FAM_FP, 0, 8, 0},
        {"nf4", KV_FAM_CODEBOOK, 64, 4, 0},
        {"higgs_p2_b4", KV_FAM_HIGGS, 256, 4, 0},
        {"e8_b3", KV_FAM_LATTICE, 256, 3, 0},
    };
    kv_error err;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        kv_format f;
        REQUIRE_OK(kv_format_get(k[i].name, &f, &err), &err);
        CHECK_MSG(f.family == k[i].fam && f.group == k[i].group && f.code_bits == k[i].bits && f.traits == k[i].traits,
                  "%s: family %d group %d bits %d traits %u", k[i].name, (int)f.family, (int)f.group,
                  (int)f.code_bits, (unsigned)f.traits);
    }
    /* every listed format has traits, and the importance rule reads them */
    for (int i = 0; i < kv_format_list_count(); i++) {
        kv_format f;
        REQUIRE_OK(kv_format_get(kv_format_list_name(i), &f, &err), &err);
        CHECK_MSG(f.code_bits > 0 && (f.family == KV_FAM_PLAIN) == (f.code_bits >= 16), "%s", f.name);
    }
    kv_format a, b;
    REQUIRE_OK(kv_format_get("mxfp4_ocp_ps", &a, &err), &err);
    REQUIRE_OK(kv_format_get("mxfp4_ocp", &b, &err), &err);
    CHECK(kv_format_uses_importance(&a) && !kv_format_uses_importance(&b));
}

/* What the pipeline asks of a method is a field (per_tensor, compensates, layerwise ...), and a --transform
 * list is parsed once, by the pipeline's parser, into its rht block. */
KV_TEST(recipe_method_capabilities_and_rht_block) {
    static const struct { const char *name; int per_tensor, compensates, layerwise; } k[] = {
        {"rtn", 1, 0, 0}, {"gptq", 0, 1, 1}, {"mr-gptq", 0, 1, 1}, {"watersic", 0, 0, 1}, {"llm-int8", 0, 0, 0},
    };
    CHECK_EQ_INT(kv_quant_method_count(), (int)(sizeof k / sizeof k[0]));
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        const kv_quant_method *m = kv_quant_method_find(k[i].name);
        REQUIRE(m);
        CHECK_MSG(m->per_tensor == k[i].per_tensor && m->compensates == k[i].compensates &&
                  m->layerwise == k[i].layerwise, "%s", k[i].name);
        CHECK_MSG(!m->per_tensor || !m->needs_calib, "%s", k[i].name);
    }
    static const struct { const char *list; int32_t block; } ok[] = {
        {NULL, 0}, {"", 0}, {"none", 0}, {"rht", 512}, {"quarot,rht:64", 64}, {"rht:96,prescale", 96},
        {"smoothquant:0.5", 0}, {"prescale", 0},
    };
    kv_error err;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int32_t b = -1;
        CHECK_OK(kv_transform_list_rht_block(ok[i].list, &b, &err), &err);
        CHECK_MSG(b == ok[i].block, "%s: %d", ok[i].list ? ok[i].list : "NULL", (int)b);
    }
    static const char *const bad[] = {"rhtx", "rht:100", "quarot,xrht", "rht:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t b = -1;
        kv_error_clear(&err);
        CHECK_MSG(kv_transform_list_rht_block(bad[i], &b, &err) == KV_EINVAL && err.message[0], "%s", bad[i]);
        CHECK_EQ_INT(b, 0);
    }
}

/* ---- the CLI ---- */

static int run(const char *args, char **out) { return kv_test_run_cli(args, out); }

KV_TEST(recipe_refusals_before_any_work) {
    char model[512], calib[512];
    kv_test_shared(model, sizeof model, P27);
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    if (!kv_test_exists(model) || !kv_test_exists(calib)) SKIP("proxy-27m or calib.txt absent");
    const char *dir = kv_test_tmpdir();
    char ro[700], rjson[700];
    snprintf(ro, sizeof ro, "%s/readonly", dir);
    mkdir(ro, 0755);
    chmod(ro, 0555);
    snprintf(rjson, sizeof rjson, "%s/bad.json", dir);
    REQUIRE(kv_test_write_file(rjson, "{\"format\": \"q4_0\", \"calib_token\": 5}", 36) == 0);
    char c[600];
    snprintf(c, sizeof c, "--calib %s", calib);
    struct { const char *args, *extra, *msg; int root_ok; } k[] = {
        {"--method gptq:bogus", c, "unknown option 'bogus' (valid: act-order", 0},
        {"--method mr-gptq --format mxfp4_ocp", c, "--transform rht", 0},
        {"--method watersic --format f16", c, "bits|step", 0},
        {"--method watersic:bits=-2 --format f16", c, "bits=-2", 0},
        {"--method gptq", "", "needs calibration text", 0},
        {"--calib /nonexistent/calib.txt", "", "cannot open", 0},
        {"--imatrix /nonexistent/im.dat", "", "cannot open", 0},
        {"--imatrix x.dat --no-imatrix", "", "contradict", 0},
        {"--transform-only --method gptq", c, "nothing to do", 0},
        {"--scheme W4A16 --format q4_0", "", "conflicts with --format q4_0", 0},
        {"--scheme W4A17", "", "valid: W4A16", 0},
        {"--ctx 64", "", "go with --eval", 0},
        {"--method watersic:bits=3 --out-format safetensors", c, "GGUF only", 0},
        {"--transform rht --out-format hf", "", "online rotation", 0},
        {"--recipe", rjson, "valid keys:", 0},
        {"--format q4_0 -o /nonexistent_dir/x.gguf", "", "does not exist", 0},
        {"--format q4_0 -o @RO/x.gguf", "", "is not writable", 1},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (k[i].root_ok && geteuid() == 0) continue; /* root writes anywhere */
        char args[3000], out_opt[800], a2[1000];
        snprintf(out_opt, sizeof out_opt, "-o %s/never.gguf", dir);
        const char *ro_at = strstr(k[i].args, "@RO");
        if (ro_at) snprintf(a2, sizeof a2, "%.*s%s%s", (int)(ro_at - k[i].args), k[i].args, ro, ro_at + 3);
        else snprintf(a2, sizeof a2, "%s", k[i].args);
        snprintf(args, sizeof args, "quantize %s %s %s %s --quiet", model, strstr(k[i].args, "-o ") ? "" : out_opt, a2,
                 k[i].extra);
        char *out = NULL;
        double t0 = kv_now_seconds();
        int rc = run(args, &out);
        double dt = kv_now_seconds() - t0;
        CHECK_MSG(rc == 2 || rc == 1, "%s: exit %d", k[i].args, rc);
        CHECK_MSG(out && strstr(out, k[i].msg), "%s: wanted '%s' in:\n%s", k[i].args, k[i].msg, out ? out : "");
        if (getenv("KVANT_TEST_VERBOSE")) fprintf(stderr, "  refused in %.3f s: %s\n", dt, k[i].args);
        free(out);
    }
    char never[800];
    snprintf(never, sizeof never, "%s/never.gguf", dir);
    CHECK(!kv_test_exists(never));
    chmod(ro, 0755);
}

static char *meta_recipe(const char *path) {
    kv_model_file *mf = NULL;
    kv_error err;
    if (kv_model_open(path, &mf, &err) != KV_OK) return NULL;
    const char *r = kv_model_meta_string(mf, "kvant.quantize.recipe");
    char *s = r ? strdup(r) : NULL;
    kv_model_close(mf);
    return s;
}

KV_TEST(recipe_every_long_option_and_stored_recipe_reruns) {
    char model[512], text[512];
    kv_test_shared(model, sizeof model, P27);
    kv_test_shared(text, sizeof text, "data/heldout.txt");
    if (!kv_test_exists(model) || !kv_test_exists(text)) SKIP("proxy-27m or heldout.txt absent");
    const char *dir = kv_test_tmpdir();
    char rpath[700], json[2000], args[3000], a[700], b[700], *out = NULL;
    snprintf(rpath, sizeof rpath, "%s/r.json", dir);
    snprintf(a, sizeof a, "%s/a.gguf", dir);
    snprintf(b, sizeof b, "%s/b.gguf", dir);
    /* keys of flags, numbers, lists and the llama.cpp aliases; eval/ctx/chunks/threads/quiet too */
    snprintf(json, sizeof json,
             "{\"format\": \"q4_0\", \"seed\": 7, \"pure\": false, \"threads\": 2, \"quiet\": true, "
             "\"overrides\": [\"ffn_down=q8_0\"], \"token_embedding_type\": \"q6_k\", \"output_tensor_type\": \"q5_0\", "
             "\"eval\": \"%s\", \"ctx\": 64, \"chunks\": 2, \"label\": \"mine\", \"allow_requantize\": false}", text);
    REQUIRE(kv_test_write_file(rpath, json, strlen(json)) == 0);
    snprintf(args, sizeof args, "quantize %s -o %s --recipe %s", model, a, rpath);
    int rc = run(args, &out);
    CHECK_MSG(rc == 0 && out && strstr(out, "| mine |"), "exit %d:\n%s", rc, out ? out : "");
    free(out);
    kv_model_file *mf = NULL;
    kv_error err;
    REQUIRE_OK(kv_model_open(a, &mf, &err), &err);
    CHECK_EQ_INT(kv_model_find(mf, "blk.0.ffn_down.weight")->type, KV_TYPE_Q8_0);
    CHECK_EQ_INT(kv_model_find(mf, "blk.0.attn_q.weight")->type, KV_TYPE_Q4_0);
    CHECK_EQ_INT(kv_model_find(mf, "token_embd.weight")->type, KV_TYPE_Q6_K);
    CHECK_EQ_INT(kv_model_find(mf, "output.weight")->type, KV_TYPE_Q5_0);
    kv_model_close(mf);
    /* the stored recipe is the one used, threads excluded (outputs do not depend on them) */
    char *rec = meta_recipe(a);
    REQUIRE(rec != NULL);
    CHECK_MSG(strstr(rec, "\"format\":\"q4_0\"") && strstr(rec, "\"seed\":7") && strstr(rec, "ffn_down=q8_0") &&
              strstr(rec, "^token_embd\\\\.weight$=q6_k") && !strstr(rec, "threads"), "%s", rec);
    /* inspect shows it, in text and JSON */
    snprintf(args, sizeof args, "inspect %s", a);
    rc = run(args, &out);
    CHECK_MSG(rc == 0 && out && strstr(out, "recipe:") && strstr(out, "ffn_down=q8_0"), "%s", out ? out : "");
    free(out);
    snprintf(args, sizeof args, "inspect %s --json", a);
    rc = run(args, &out);
    CHECK_MSG(rc == 0 && out && strstr(out, "\"recipe\": \"{"), "%s", out ? out : "");
    free(out);
    /* the stored recipe, fed back, makes the same file */
    REQUIRE(kv_test_write_file(rpath, rec, strlen(rec)) == 0);
    free(rec);
    snprintf(args, sizeof args, "quantize %s -o %s --recipe %s --quiet", model, b, rpath);
    rc = run(args, &out);
    CHECK_MSG(rc == 0, "exit %d:\n%s", rc, out ? out : "");
    free(out);
    size_t na = 0, nb = 0;
    uint8_t *da = kv_test_read_file(a, &na), *db = kv_test_read_file(b, &nb);
    REQUIRE(da && db);
    CHECK_MSG(na == nb && !memcmp(da, db, na), "the stored recipe reproduces the file (%zu vs %zu bytes)", na, nb);
    free(da);
    free(db);
    /* unknown keys and wrong types list what is valid */
    REQUIRE(kv_test_write_file(rpath, "{\"bitz\": 4}", 11) == 0);
    snprintf(args, sizeof args, "quantize %s -o %s --recipe %s --quiet", model, b, rpath);
    rc = run(args, &out);
    CHECK_MSG(rc == 2 && out && strstr(out, "unknown key 'bitz'") && strstr(out, "calib_tokens") &&
              strstr(out, "entropy_code") && strstr(out, "alphas") && strstr(out, "threads"), "%s", out ? out : "");
    free(out);
    REQUIRE(kv_test_write_file(rpath, "{\"calib_tokens\": \"many\"}", 24) == 0);
    rc = run(args, &out);
    CHECK_MSG(rc == 2 && out && strstr(out, "'calib_tokens' must be an integer"), "%s", out ? out : "");
    free(out);
}

KV_TEST(recipe_allow_requantize) {
    char model[512], args[3000], *out = NULL;
    kv_test_shared(model, sizeof model, P27);
    if (!kv_test_exists(model)) SKIP("proxy-27m absent");
    const char *dir = kv_test_tmpdir();
    char q[700], r[700], hf[700];
    snprintf(q, sizeof q, "%s/q8.gguf", dir);
    snprintf(r, sizeof r, "%s/re.gguf", dir);
    snprintf(hf, sizeof hf, "%s/hf/", dir);
    snprintf(args, sizeof args, "quantize %s -o %s --format q8_0 --quiet -t 2", model, q);
    REQUIRE(run(args, NULL) == 0);
    snprintf(args, sizeof args, "quantize %s -o %s --format q4_0 --quiet -t 2", q, r);
    int rc = run(args, &out);
    CHECK_MSG(rc == 2 && out && strstr(out, "already quantized") && strstr(out, "--allow-requantize") &&
              strstr(out, "q8_0"), "exit %d: %s", rc, out ? out : "");
    free(out);
    CHECK(!kv_test_exists(r));
    snprintf(args, sizeof args, "quantize %s -o %s --format q4_0 --allow-requantize --quiet -t 2", q, r);
    rc = run(args, &out);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, out ? out : "");
    free(out);
    /* an HF checkpoint with a quantization_config */
    snprintf(args, sizeof args, "quantize %s -o %s --scheme W4A16 --quiet -t 2", model, hf);
    rc = run(args, &out);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, out ? out : "");
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s --format q4_0 --quiet -t 2", hf, r);
    rc = run(args, &out);
    CHECK_MSG(rc == 2 && out && strstr(out, "already quantized"), "exit %d: %s", rc, out ? out : "");
    free(out);
    /* the HF directory carries the recipe too, and inspect reads it there */
    snprintf(args, sizeof args, "inspect %s", hf);
    rc = run(args, &out);
    CHECK_MSG(rc == 0 && out && strstr(out, "recipe:") && strstr(out, "W4A16"), "%s", out ? out : "");
    free(out);
}

KV_TEST(recipe_scheme_aliases_verbose) {
    char model[512], args[3000], *out = NULL;
    kv_test_shared(model, sizeof model, P27);
    if (!kv_test_exists(model)) SKIP("proxy-27m absent");
    const char *dir = kv_test_tmpdir();
    char o[700];
    snprintf(o, sizeof o, "%s/s.gguf", dir);
    /* --scheme (case-insensitive) = format + act; -m for the model; llama-quantize's type options */
    snprintf(args, sizeof args, "quantize -m %s -o %s --scheme w8a8 --token-embedding-type q8_0 --leave-output-tensor "
             "--tensor-type 'attn_v=q6_k' --verbose --quiet -t 2", model, o);
    int rc = run(args, &out);
    REQUIRE(rc == 0);
    kv_model_file *mf = NULL;
    kv_error err;
    REQUIRE_OK(kv_model_open(o, &mf, &err), &err);
    int64_t n = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        char line[256];
        snprintf(line, sizeof line, "%s ", t->name);
        n += strstr(out, line) != NULL; /* one --verbose line per tensor */
    }
    CHECK_EQ_INT(n, kv_model_n_tensors(mf));
    CHECK_MSG(strstr(out, "type =") && strstr(out, "MiB"), "%s", out);
    CHECK_STR(kv_model_meta_string(mf, "kvant.act"), "int8");
    CHECK_STR(kv_model_meta_string(mf, "kvant.tensor.blk.0.attn_q.weight.format"), "int8_g0_sym");
    CHECK_EQ_INT(kv_model_find(mf, "token_embd.weight")->type, KV_TYPE_Q8_0);
    CHECK_EQ_INT(kv_model_find(mf, "output.weight")->type, KV_TYPE_BF16); /* the source's type */
    CHECK_EQ_INT(kv_model_find(mf, "blk.1.attn_v.weight")->type, KV_TYPE_Q6_K);
    kv_model_close(mf);
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s --scheme FP8_DYNAMIC --act int8 --quiet", model, o);
    rc = run(args, &out);
    CHECK_MSG(rc == 2 && out && strstr(out, "--act fp8"), "%s", out ? out : "");
    free(out);
}
