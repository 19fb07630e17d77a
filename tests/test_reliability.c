/* test_reliability.c — regressions of issue 15: memory-safety bugs in error paths, input that used to be
 * silently ignored or silently corrupted, non-regular files, temporary files and signals. Every case must end in
 * a clear message and a non-zero exit (or a warning), never a crash or a partial output. */
#include "test.h"
#include "core/core.h"
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STORIES "../shared/models/stories260K/stories260K.bin"
#define PROXY_GGUF "../shared/models/proxy-27m-gguf/proxy-27m-bf16.gguf"

static const char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", kv_test_tmpdir(), name);
    return buf;
}

/* Runs the CLI and checks exit status and that the output mentions every needle. */
static void expect_cli(kv_test_ctx *T, const char *args, int want_rc, const char *const *needles) {
    char *out = NULL;
    int rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == want_rc, "kvant %s: exit %d (want %d): %s", args, rc, want_rc, out ? out : "");
    for (int i = 0; needles && needles[i]; i++)
        CHECK_MSG(out && strstr(out, needles[i]), "kvant %s: no '%s' in: %s", args, needles[i], out ? out : "");
    CHECK_MSG(!out || !strstr(out, "Sanitizer"), "kvant %s: sanitizer report: %s", args, out);
    free(out);
}
#define EXPECT_CLI(args, rc, ...) expect_cli(T, args, rc, (const char *const[]){__VA_ARGS__, NULL})

/* ---- memory-safety bugs ---------------------------------------------------------------------------- */

KV_TEST(reliability_imatrix_from_model_gguf_is_refused) {
    /* a model GGUF is not an imatrix: the message used to read general.type after closing the file */
    char args[1200];
    EXPECT_CLI("imatrix --show " PROXY_GGUF, 1, "not an imatrix", "general.type is 'model'");
    snprintf(args, sizeof args, "quantize %s -o %s/x.gguf --format q4_0 --imatrix %s", STORIES, kv_test_tmpdir(),
             PROXY_GGUF);
    EXPECT_CLI(args, 1, "not an imatrix");
    kv_imatrix *im = NULL;
    kv_error e;
    kv_error_clear(&e);
    CHECK(kv_imatrix_load(PROXY_GGUF, &im, &e) == KV_EFORMAT);
    CHECK(strstr(e.message, "'model'") != NULL);
    CHECK(im == NULL);
}

KV_TEST(reliability_recipe_bad_out_format_is_reported) {
    /* the recipe's out_format string was printed after the recipe was freed */
    char recipe[600], args[1600];
    tmp_path(recipe, sizeof recipe, "r.json");
    REQUIRE(kv_test_write_file(recipe, "{\"out_format\":\"onnx\"}", 21) == 0);
    snprintf(args, sizeof args, "quantize %s -o %s/x.gguf --recipe %s", STORIES, kv_test_tmpdir(), recipe);
    EXPECT_CLI(args, 2, "not 'onnx'");
}

KV_TEST(reliability_alloc_huge_alphas) {
    /* costs near the top of the double range: the Lagrangian bisection overflowed, picked no candidate and read
     * index -1; the plan must be the same as with the alphas scaled down */
    enum { L = 6, C = 3 };
    double size[L * C], cost[L * C], small[L * C];
    for (int l = 0; l < L; l++)
        for (int c = 0; c < C; c++) {
            size[l * C + c] = 1000.0 * (1 << (2 * c)) * (1 + l % 3);
            small[l * C + c] = (1.0 + l) / (1 << (3 * c));
            cost[l * C + c] = small[l * C + c] * 1e300;
        }
    int a[L], b[L];
    kv_alloc_result ra, rb;
    kv_error e;
    kv_error_clear(&e);
    kv_alloc_problem ps = {L, C, size, small, 60000, 0};
    kv_alloc_problem pb = {L, C, size, cost, 60000, 0};
    REQUIRE_OK(kv_alloc_dp(&ps, a, &ra, &e), &e);
    REQUIRE_OK(kv_alloc_dp(&pb, b, &rb, &e), &e);
    for (int l = 0; l < L; l++) {
        CHECK(b[l] >= 0 && b[l] < C);
        CHECK_EQ_INT(a[l], b[l]);
    }
    CHECK(rb.total_bits <= 60000 && isfinite(rb.total_cost));
}

KV_TEST(reliability_quantize_alloc_huge_alphas_cli) {
    /* the command: every alpha 1e160 with fp4/fp8/f16 at 6 bits exited 0 with an out-of-bounds plan */
    kv_model_file *mf = NULL;
    kv_error e;
    kv_error_clear(&e);
    REQUIRE_OK(kv_model_open(STORIES, &mf, &e), &e);
    kv_model *m = NULL;
    REQUIRE_OK(kv_model_load(mf, NULL, &m, &e), &e);
    const char *fmts[] = {"fp4_e2m1", "fp8_e4m3", "f16"};
    kv_err_table t;
    REQUIRE_OK(kv_err_table_build(m, fmts, 3, 0, 0, 0, 0, NULL, &t, &e), &e);
    kv_sens_result a = {0};
    a.metric = KV_SENS_KLD;
    a.n_layers = t.n_layers;
    a.layers = calloc((size_t)t.n_layers, sizeof *a.layers);
    for (int l = 0; l < t.n_layers; l++) {
        kv_strlcpy(a.layers[l].name, t.names[l], sizeof a.layers[l].name);
        a.layers[l].layer = t.layer[l];
        a.layers[l].which = t.which[l];
        a.layers[l].params = t.params[l];
        a.layers[l].alpha = 1e160 * (1 + l);
        a.layers[l].r2 = 1;
        a.layers[l].done = 1;
    }
    char alphas[600], out[600], args[2000];
    tmp_path(alphas, sizeof alphas, "alphas.json");
    tmp_path(out, sizeof out, "alloc.gguf");
    REQUIRE_OK(kv_sens_save(&a, alphas, &e), &e);
    kv_sens_free(&a);
    kv_err_table_free(&t);
    kv_model_free(m);
    kv_model_close(mf);
    snprintf(args, sizeof args,
             "quantize %s -o %s --bits 6 --allocate linearity --alphas %s --formats fp4_e2m1,fp8_e4m3,f16 --pure "
             "--format f16",
             STORIES, out, alphas);
    EXPECT_CLI(args, 0, "allocation linearity");
    kv_model_file *q = NULL;
    REQUIRE_OK(kv_model_open(out, &q, &e), &e);
    double bits = 0, params = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(q); i++) {
        const kv_tensor *tt = kv_model_tensor(q, i);
        if (strncmp(tt->name, "blk.", 4) || tt->n_dims != 2) continue;
        bits += 8.0 * (double)tt->nbytes;
        params += (double)kv_tensor_nelements(tt);
    }
    CHECK(params > 0 && bits / params <= 6.0 + 1e-9);
    kv_model_close(q);
}
