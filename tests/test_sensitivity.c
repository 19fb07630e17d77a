/* test_sensitivity.c — noise-injection alphas, error tables, allocation plans and the linearity check
 * (src/algos/sensitivity.c) on the real stories260K checkpoint. */
#include "test.h"
#include "core/core.h"

static int32_t *story_ids(int64_t n) {
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    kv_rng r;
    kv_rng_seed(&r, 11);
    ids[0] = 1;
    for (int64_t i = 1; i < n; i++) ids[i] = 3 + (int32_t)(kv_rng_u64(&r) % 509);
    return ids;
}

static kv_model_file *open_stories(kv_test_ctx *T) {
    char path[512];
    kv_test_shared(path, sizeof path, "models/stories260K/stories260K.bin");
    kv_model_file *mf = NULL;
    kv_error e;
    kv_error_clear(&e);
    if (kv_model_open(path, &mf, &e)) { char b[1200]; kv_test_fail(T, __FILE__, __LINE__, "%s", kv_error_format(&e, b, sizeof b)); }
    return mf;
}

static kv_status run_sens(kv_model_file *mf, int threads, kv_sens_result *res, kv_error *e) {
    int32_t *ids = story_ids(4 * 32);
    kv_pool *pool = kv_pool_create(threads);
    kv_sens_opts o = {.metric = KV_SENS_KLD, .ctx = 32, .seed = 5};
    kv_status st = kv_sensitivity_run(mf, ids, 4 * 32, &o, pool, res, e);
    kv_pool_destroy(pool);
    free(ids);
    return st;
}

KV_TEST(sensitivity_alphas_deterministic_across_threads) {
    kv_model_file *mf = open_stories(T);
    REQUIRE(mf);
    kv_error e;
    kv_error_clear(&e);
    kv_sens_result a = {0}, b = {0};
    REQUIRE_OK(run_sens(mf, 1, &a, &e), &e);
    REQUIRE_OK(run_sens(mf, 2, &b, &e), &e);
    CHECK_EQ_INT(a.n_layers, 5 * 7); /* tied head is not a separate layer */
    CHECK_STR(a.layers[6].name, "blk.0.ffn_down.weight");
    for (int i = 0; i < a.n_layers; i++) {
        const kv_sens_layer *L = &a.layers[i];
        CHECK(L->done);
        CHECK_EQ_INT(L->n_levels, 4);
        static const double levels[4] = {0.01, 0.02, 0.04, 0.08};
        for (int k = 0; k < L->n_levels; k++) {
            CHECK_NEAR(L->t[k], levels[k], 1e-4); /* noise scaled exactly */
            CHECK(L->kld[k] > 0);
        }
        CHECK(L->kld[3] > L->kld[0]); /* more noise, more divergence */
        CHECK(isfinite(L->alpha) && L->alpha > 0);
        CHECK(L->r2 > 0.5);           /* KLD grows linearly in t at these small errors */
        CHECK(!memcmp(&a.layers[i], &b.layers[i], sizeof a.layers[i]));
    }
    kv_sens_free(&a);
    kv_sens_free(&b);
    kv_model_close(mf);
}

KV_TEST(sensitivity_file_roundtrip_and_resume) {
    kv_model_file *mf = open_stories(T);
    REQUIRE(mf);
    kv_error e;
    kv_error_clear(&e);
    kv_sens_result a = {0};
    REQUIRE_OK(run_sens(mf, 2, &a, &e), &e);
    char path[600];
    snprintf(path, sizeof path, "%s/alphas.json", kv_test_tmpdir());
    REQUIRE_OK(kv_sens_save(&a, path, &e), &e);
    kv_sens_result b;
    REQUIRE_OK(kv_sens_load(path, &b, &e), &e);
    CHECK_EQ_INT(b.n_layers, a.n_layers);
    for (int i = 0; i < a.n_layers; i++) {
        CHECK_STR(b.layers[i].name, a.layers[i].name);
        CHECK_NEAR(b.layers[i].alpha, a.layers[i].alpha, 1e-9 * fabs(a.layers[i].alpha));
    }
    /* resume: layers marked not done are recomputed and give the same numbers */
    for (int i = 0; i < b.n_layers; i += 3) b.layers[i].done = 0;
    REQUIRE_OK(run_sens(mf, 2, &b, &e), &e);
    for (int i = 0; i < a.n_layers; i++) {
        CHECK(b.layers[i].done);
        CHECK_NEAR(b.layers[i].alpha, a.layers[i].alpha, 1e-9 * fabs(a.layers[i].alpha));
    }
    kv_sens_free(&b);
    /* a file for another model is refused when resuming */
    a.layers[2].name[4] = '9';
    kv_error_clear(&e);
    CHECK(run_sens(mf, 1, &a, &e) == KV_EINVAL);
    CHECK(strstr(e.message, "blk.0.attn_v.weight") != NULL);
    kv_sens_free(&a);
    /* malformed files */
    kv_test_write_file(path, "{\"layers\": 3}", 13);
    CHECK(kv_sens_load(path, &b, &e) == KV_EFORMAT);
    kv_model_close(mf);
}

KV_TEST(sensitivity_error_table_and_plan) {
    kv_model_file *mf = open_stories(T);
    REQUIRE(mf);
    kv_error e;
    kv_error_clear(&e);
    kv_model *m;
    REQUIRE_OK(kv_model_load(mf, NULL, &m, &e), &e);
    const char *fmts[] = {"q8_0", "q4_0", "int2_g32_asym", "f16"};
    kv_err_table t;
    REQUIRE_OK(kv_err_table_build(m, fmts, 4, 0, 0, 0, 1, NULL, &t, &e), &e);
    CHECK_EQ_INT(t.n_layers, 35);
    for (int l = 0; l < t.n_layers; l++) {
        const double *row = t.t + (size_t)l * 4;
        if (!strstr(t.names[l], "ffn_down")) {
            CHECK(row[0] >= 0 && row[0] < row[1] && row[1] < row[2]); /* more bits, less error */
            CHECK_NEAR(t.size_bits[(size_t)l * 4] / (double)t.params[l], 8.5, 1e-9);
        } else {
            CHECK(row[0] < 0 && row[1] < 0 && row[2] < 0); /* 172 inputs: no block of 32 fits */
            CHECK(row[3] >= 0 && row[3] < 1e-6);           /* f16 does, almost losslessly */
        }
    }
    /* rotation: same shapes, errors still ordered */
    kv_err_table tr;
    REQUIRE_OK(kv_err_table_build(m, fmts, 2, 0, 32, 7, 0, NULL, &tr, &e), &e);
    CHECK(tr.t[0] >= 0 && tr.t[0] < tr.t[1]);
    kv_err_table_free(&tr);
    kv_error_clear(&e);
    CHECK(kv_err_table_build(m, fmts, 2, 0, 36, 7, 0, NULL, &tr, &e) == KV_EINVAL); /* 36 is no K*2^m */

    kv_sens_result a = {0};
    REQUIRE_OK(run_sens(mf, 2, &a, &e), &e);
    int choice[35], uni[35];
    kv_alloc_result rd, ru;
    REQUIRE_OK(kv_alloc_plan(&t, &a, 7.0, KV_ALLOC_LINEARITY, choice, &rd, &e), &e);
    double params = 0;
    for (int l = 0; l < t.n_layers; l++) params += (double)t.params[l];
    CHECK(rd.total_bits <= 7.0 * params);
    for (int l = 0; l < t.n_layers; l++) CHECK(t.t[(size_t)l * 4 + choice[l]] >= 0);
    /* only f16 fits every layer: no uniform map meets 7 bits, while the DP mixes formats */
    kv_error_clear(&e);
    CHECK(kv_alloc_plan(&t, NULL, 7.0, KV_ALLOC_UNIFORM, uni, &ru, &e) == KV_ERANGE);
    REQUIRE_OK(kv_alloc_plan(&t, NULL, 16.0, KV_ALLOC_UNIFORM, uni, &ru, &e), &e);
    CHECK_EQ_INT(uni[0], 3);
    double uni_cost = 0; /* the uniform map's predicted loss under the same alphas */
    for (int l = 0; l < t.n_layers; l++) uni_cost += a.layers[l].alpha * t.t[(size_t)l * 4 + uni[l]];
    REQUIRE_OK(kv_alloc_plan(&t, &a, 16.0, KV_ALLOC_LINEARITY, choice, &rd, &e), &e);
    CHECK(rd.total_cost <= uni_cost * (1 + 1e-12));
    kv_error_clear(&e);
    CHECK(kv_alloc_plan(&t, NULL, 16.0, KV_ALLOC_LINEARITY, choice, &rd, &e) == KV_EINVAL); /* DP needs alphas */
    REQUIRE_OK(kv_alloc_plan(&t, &a, 7.0, KV_ALLOC_LINEARITY, choice, &rd, &e), &e);
    kv_error_clear(&e);
    CHECK(kv_alloc_plan(&t, &a, 1.0, KV_ALLOC_LINEARITY, choice, &rd, &e) == KV_ERANGE);
    CHECK(strstr(e.message, "not feasible") != NULL);
    /* apply the plan: the model runs with the quantized weights */
    REQUIRE_OK(kv_err_table_apply(&t, choice, m, &e), &e);
    kv_context *ctx;
    REQUIRE_OK(kv_context_create(m, 16, &ctx, &e), &e);
    int32_t toks[4] = {1, 50, 60, 70};
    float logits[512];
    REQUIRE_OK(kv_forward(ctx, toks, 4, 0, logits, KV_FORWARD_LAST_ONLY, NULL, &e), &e);
    CHECK(isfinite(logits[0]));
    kv_context_free(ctx);
    /* alphas of another model are refused */
    a.n_layers = 34;
    kv_error_clear(&e);
    CHECK(kv_alloc_plan(&t, &a, 7.0, KV_ALLOC_LINEARITY, choice, &rd, &e) == KV_EINVAL);
    a.n_layers = 35;
    kv_sens_free(&a);
    kv_err_table_free(&t);
    kv_model_free(m);
    kv_model_close(mf);
}

KV_TEST(sensitivity_linearity_check_runs) {
    kv_model_file *mf = open_stories(T);
    REQUIRE(mf);
    kv_error e;
    kv_error_clear(&e);
    kv_model *m;
    REQUIRE_OK(kv_model_load(mf, NULL, &m, &e), &e);
    const char *fmts[] = {"f16", "q8_0", "q4_0", "int3_g32_sym"};
    kv_err_table t;
    REQUIRE_OK(kv_err_table_build(m, fmts, 4, 0, 0, 0, 1, NULL, &t, &e), &e);
    kv_sens_result a = {0};
    REQUIRE_OK(run_sens(mf, 2, &a, &e), &e);
    int32_t *ids = story_ids(4 * 32);
    kv_pool *pool = kv_pool_create(2);
    kv_lincheck c;
    REQUIRE_OK(kv_linearity_check(mf, &t, &a, ids, 4 * 32, 32, 4, 8, 3, pool, &c, &e), &e);
    CHECK_EQ_INT(c.n, 8);
    for (int i = 0; i < c.n; i++) {
        CHECK(c.predicted[i] > 0 && c.measured[i] > 0);
        CHECK(c.bits[i] > 3 && c.bits[i] < 16);
    }
    CHECK(c.correlation > 0.5); /* predicted KLD tracks the measured one */
    kv_lincheck_free(&c);
    kv_pool_destroy(pool);
    free(ids);
    kv_sens_free(&a);
    kv_err_table_free(&t);
    kv_model_free(m);
    kv_model_close(mf);
}

KV_TEST(sensitivity_cli_errors) {
    char *out = NULL;
    int rc = kv_test_run_cli("sensitivity ../shared/models/stories260K/stories260K.bin", &out);
    CHECK_EQ_INT(rc, 2);
    free(out);
    rc = kv_test_run_cli("sensitivity ../shared/models/stories260K/stories260K.bin --errors q4_0,nosuch", &out);
    CHECK_EQ_INT(rc, 2);
    CHECK(strstr(out, "nosuch") != NULL);
    free(out);
    rc = kv_test_run_cli("sensitivity ../shared/models/stories260K/stories260K.bin --errors f16,q8_0 --json", &out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "\"blk.4.ffn_down.weight\"") != NULL);
    free(out);
}

KV_TEST(sensitivity_quantize_with_bit_allocation) {
    kv_model_file *mf = open_stories(T);
    REQUIRE(mf);
    kv_error e;
    kv_error_clear(&e);
    kv_sens_result a = {0};
    REQUIRE_OK(run_sens(mf, 2, &a, &e), &e);
    char alphas[600], out[600], args[2400];
    snprintf(alphas, sizeof alphas, "%s/alphas.json", kv_test_tmpdir());
    snprintf(out, sizeof out, "%s/alloc.gguf", kv_test_tmpdir());
    REQUIRE_OK(kv_sens_save(&a, alphas, &e), &e);
    kv_sens_free(&a);
    kv_model_close(mf);
    char *log = NULL;
    snprintf(args, sizeof args,
             "quantize ../shared/models/stories260K/stories260K.bin -o %s --bits 7.5 --formats q8_0,q4_0,f16 "
             "--alphas %s --format q8_0 --pure",
             out, alphas);
    int rc = kv_test_run_cli(args, &log);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, log);
    CHECK(strstr(log, "allocation linearity: 35 layers") != NULL);
    free(log);
    kv_model_file *q = NULL;
    REQUIRE_OK(kv_model_open(out, &q, &e), &e);
    double bits = 0, params = 0;
    int types_seen[64] = {0};
    for (int64_t i = 0; i < kv_model_n_tensors(q); i++) {
        const kv_tensor *t = kv_model_tensor(q, i);
        if (strncmp(t->name, "blk.", 4) || t->n_dims != 2) continue;
        bits += 8.0 * (double)t->nbytes;
        params += (double)kv_tensor_nelements(t);
        if (t->type < 64) types_seen[t->type] = 1;
        if (strstr(t->name, "ffn_down")) CHECK_EQ_INT(t->type, KV_TYPE_F16); /* 172 inputs: only f16 fits */
    }
    CHECK(params > 0 && bits / params <= 7.5);
    CHECK(types_seen[KV_TYPE_Q8_0] + types_seen[KV_TYPE_Q4_0] >= 1); /* a real mix, not f16 everywhere */
    kv_model_close(q);
    /* infeasible budget and missing candidates */
    snprintf(args, sizeof args,
             "quantize ../shared/models/stories260K/stories260K.bin -o %s.x --bits 2 --formats q8_0,q4_0,f16 --alphas %s",
             out, alphas);
    rc = kv_test_run_cli(args, &log);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(log, "not feasible") != NULL);
    free(log);
    snprintf(args, sizeof args, "%s.x", out);
    CHECK(!kv_test_exists(args));
    snprintf(args, sizeof args, "quantize ../shared/models/stories260K/stories260K.bin -o %s.y --bits 4", out);
    rc = kv_test_run_cli(args, &log);
    CHECK_EQ_INT(rc, 2);
    free(log);
}

KV_TEST(sensitivity_cli_sweep_on_proxy) {
    /* the in-memory sweep: uniform q8_0 fits 8.5 bits, not 4; JSON rows carry PPL and KLD */
    char *out = NULL;
    int rc = kv_test_run_cli("sensitivity ../shared/models/proxy-27m --text ../shared/data/calib.txt --tokens 64 "
                             "--ctx 32 --sweep 4,8.5 --modes uniform --formats q8_0 --json --quiet -t 2", &out);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, out);
    CHECK(strstr(out, "\"feasible\": false") != NULL);
    CHECK(strstr(out, "\"feasible\": true") != NULL);
    CHECK(strstr(out, "\"kld\"") != NULL);
    free(out);
    rc = kv_test_run_cli("sensitivity ../shared/models/proxy-27m --sweep 4 --formats q8_0", &out);
    CHECK_EQ_INT(rc, 2); /* --sweep needs --text */
    free(out);
    rc = kv_test_run_cli("sensitivity ../shared/models/proxy-27m --text ../shared/data/calib.txt --sweep 4,abc "
                         "--formats q8_0 --modes uniform", &out);
    CHECK_EQ_INT(rc, 2);
    CHECK(strstr(out, "abc") != NULL);
    free(out);
    rc = kv_test_run_cli("sensitivity ../shared/models/proxy-27m --text ../shared/data/calib.txt --tokens 64 --ctx 32 "
                         "--sweep 4 --formats q8_0 --modes linearity --quiet", &out);
    CHECK_EQ_INT(rc, 2); /* linearity needs --alphas */
    CHECK(strstr(out, "--alphas") != NULL);
    free(out);
}
