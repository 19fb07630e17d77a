/* test_transforms.c — Hadamard matrices, FWHT, randomized Hadamard (rht) and the model transforms
 * (QuaRot, SmoothQuant, AWQ folds keep the unquantized model's logits). */
#include "test.h"
#include "../src/core/core.h"
#include "../src/kernels/cpu/hadamard.h"

KV_TEST(hadamard_small_orders_are_hadamard) {
    static const int orders[] = {1, 2, 12, 20, 28};
    int8_t h[28 * 28];
    for (size_t o = 0; o < sizeof orders / sizeof orders[0]; o++) {
        int k = orders[o];
        REQUIRE(kv_hadamard_small(k, h) == 0);
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                CHECK(h[i * k + j] == 1 || h[i * k + j] == -1);
                int dot = 0;
                for (int c = 0; c < k; c++) dot += h[i * k + c] * h[j * k + c];
                CHECK_MSG(dot == (i == j ? k : 0), "order %d rows %d,%d dot %d", k, i, j, dot);
            }
    }
    CHECK(kv_hadamard_small(36, h) != 0);
}

KV_TEST(fwht_matches_sylvester_matrix) {
    /* H_8[i][j] = (-1)^popcount(i & j) in natural order */
    for (int col = 0; col < 8; col++) {
        float x[8] = {0};
        x[col] = 1.0f;
        kv_fwht(x, 8);
        for (int i = 0; i < 8; i++) CHECK_NEAR(x[i], (__builtin_popcount(i & col) & 1) ? -1.0 : 1.0, 0);
    }
}

KV_TEST(rht_block_sizes) {
    CHECK(kv_rht_block_supported(512));
    CHECK(kv_rht_block_supported(1536)); /* 12 * 128 */
    CHECK(kv_rht_block_supported(20 * 64));
    CHECK(kv_rht_block_supported(28 * 512)); /* 14336 */
    CHECK(!kv_rht_block_supported(172));
    CHECK(!kv_rht_block_supported(0));
    CHECK_EQ_INT(kv_rht_best_block(1536, 1 << 20), 1536);
    CHECK_EQ_INT(kv_rht_best_block(1536, 512), 512);
    CHECK_EQ_INT(kv_rht_best_block(172, 1 << 20), 4);
    CHECK_EQ_INT(kv_rht_best_block(7, 512), 1);
}

/* R is orthogonal, the inverse undoes it, and kv_rht_forward equals signs + apply. */
static void check_rht(kv_test_ctx *T, int64_t n, int32_t block, uint64_t seed) {
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *z = malloc(n * sizeof(float));
    float *s = malloc(n * sizeof(float));
    kv_rng r;
    kv_rng_seed(&r, seed * 7 + 1);
    double nx = 0, ny = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = (float)kv_rng_normal(&r);
        nx += (double)x[i] * x[i];
    }
    memcpy(y, x, n * sizeof(float));
    memcpy(z, x, n * sizeof(float));
    kv_rht_signs(seed, n, s);
    kv_rht_apply(y, n, block, s);
    kv_rht_forward(z, n, block, seed);
    double maxdiff = 0;
    for (int64_t i = 0; i < n; i++) {
        ny += (double)y[i] * y[i];
        maxdiff = fmax(maxdiff, fabs(y[i] - z[i]));
    }
    CHECK_MSG(maxdiff == 0, "forward vs apply: %g (n %lld block %d)", maxdiff, (long long)n, block);
    CHECK_NEAR(ny / nx, 1.0, 1e-5);
    kv_rht_apply_inverse(y, n, block, s);
    for (int64_t i = 0; i < n; i++) maxdiff = fmax(maxdiff, fabs(y[i] - x[i]));
    CHECK_MSG(maxdiff < 1e-5, "inverse: %g (n %lld block %d)", maxdiff, (long long)n, block);
    free(x), free(y), free(z), free(s);
}

KV_TEST(rht_orthogonal_and_invertible) {
    check_rht(T, 512, 512, 1);
    check_rht(T, 1536, 1536, 2);
    check_rht(T, 1536, 512, 3);
    check_rht(T, 640, 20 * 32, 4);
    check_rht(T, 28 * 16 * 2, 28 * 16, 5);
    check_rht(T, 172, 4, 6);
}

KV_TEST(rht_matches_dense_matrix) {
    /* build R column by column (R·e_j) for K = 12 and check R·Rᵀ = I and R·x equals the dense product */
    enum { N = 48 };
    float s[N], R[N][N];
    kv_rht_signs(42, N, s);
    for (int j = 0; j < N; j++) {
        float e[N] = {0};
        e[j] = 1.0f;
        kv_rht_apply(e, N, N, s);
        for (int i = 0; i < N; i++) R[i][j] = e[i];
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double d = 0;
            for (int c = 0; c < N; c++) d += (double)R[i][c] * R[j][c];
            CHECK_NEAR(d, i == j ? 1.0 : 0.0, 1e-6);
        }
    float x[N], y[N];
    for (int i = 0; i < N; i++) x[i] = (float)(i % 7) - 3.0f;
    memcpy(y, x, sizeof x);
    kv_rht_apply(y, N, N, s);
    for (int i = 0; i < N; i++) {
        double d = 0;
        for (int c = 0; c < N; c++) d += (double)R[i][c] * x[c];
        CHECK_NEAR(y[i], d, 1e-5);
    }
}

KV_TEST(rht_online_equals_offline_weight_rotation) {
    /* W·x == (W·Rᵀ)·(R·x): rotating weight rows offline and the activation online keeps the product */
    enum { ROWS = 5, N = 1536 };
    static float W[ROWS][N], x[N];
    kv_rng r;
    kv_rng_seed(&r, 9);
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < N; j++) W[i][j] = (float)kv_rng_normal(&r);
    for (int j = 0; j < N; j++) x[j] = (float)kv_rng_normal(&r);
    double ref[ROWS];
    for (int i = 0; i < ROWS; i++) {
        ref[i] = 0;
        for (int j = 0; j < N; j++) ref[i] += (double)W[i][j] * x[j];
    }
    uint64_t seed = kv_rht_tensor_seed(0, "blk.0.ffn_down.weight");
    CHECK(seed != kv_rht_tensor_seed(0, "blk.1.ffn_down.weight"));
    CHECK(seed != kv_rht_tensor_seed(1, "blk.0.ffn_down.weight"));
    for (int i = 0; i < ROWS; i++) kv_rht_forward(W[i], N, 512, seed);
    kv_rht_forward(x, N, 512, seed);
    for (int i = 0; i < ROWS; i++) {
        double d = 0;
        for (int j = 0; j < N; j++) d += (double)W[i][j] * x[j];
        CHECK_NEAR(d, ref[i], 1e-3);
    }
}

/* ---- whole-model transforms: the unquantized transformed model computes the same logits ---- */

/* Writes MODEL transformed (unquantized f32) and checks its logits against the plain f32 copy. */
static void check_transform_keeps_logits(kv_test_ctx *T, const char *model_rel, const char *transforms,
                                         const char *format, int with_calib, double tol, const char *changed) {
    char model[512], calib[512], ref[600], out[600];
    kv_test_shared(model, sizeof model, model_rel);
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    if (!kv_test_exists(model)) SKIP("%.200s not found", model);
    snprintf(ref, sizeof ref, "%s/ref.gguf", kv_test_tmpdir());
    snprintf(out, sizeof out, "%s/transformed.gguf", kv_test_tmpdir());
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    o.format = format;
    o.transform_only = 1;
    o.seed = 7;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_quantize_model(model, ref, &o, NULL, &err), &err);
    o.transforms = transforms;
    const char *light[] = {"^blk\\.[1-9]\\.=bf16"};
    if (getenv("KVANT_SANITIZED") && !strcmp(transforms, "awq")) {
        o.overrides = light;
        o.n_overrides = 1;
    }
    if (with_calib) {
        o.calib_path = calib;
        o.calib_ctx = 64;
        o.calib_tokens = 256;
    }
    kv_quantize_report rep;
    REQUIRE_OK(kv_quantize_model(model, out, &o, &rep, &err), &err);
    CHECK_MSG(rep.transforms[0] != 0, "no transform recorded for %s", transforms);
    int32_t ids[48];
    for (int i = 0; i < 48; i++) ids[i] = (i * 37 + 11) % 500 + 1;
    int64_t va = 0, vb = 0;
    float *a = kv_test_model_logits(T, ref, ids, 48, &va, NULL);
    REQUIRE(a);
    float *b = kv_test_model_logits(T, out, ids, 48, &vb, NULL);
    if (b && va == vb) {
        double maxd = 0, maxv = 0;
        int finite = 1;
        for (int64_t i = 0; i < (int64_t)48 * va; i++) {
            finite &= isfinite(a[i]) && isfinite(b[i]);
            maxd = fmax(maxd, fabs((double)a[i] - b[i]));
            maxv = fmax(maxv, fabs((double)a[i]));
        }
        CHECK(finite);
        CHECK(maxv > 1.0); /* real logits, not zeros */
        CHECK_MSG(maxd <= tol, "%s on %s: max |logit diff| %.3g (logits up to %.3g)", transforms, model_rel, maxd, maxv);
    }
    free(a);
    free(b);
    /* the transform really changed the weights */
    kv_model_file *fa = NULL, *fb = NULL;
    REQUIRE_OK(kv_model_open(ref, &fa, &err), &err);
    REQUIRE_OK(kv_model_open(out, &fb, &err), &err);
    const kv_tensor *ta = kv_model_find(fa, changed), *tb = kv_model_find(fb, changed);
    REQUIRE(ta && tb && ta->type == KV_TYPE_F32 && tb->type == KV_TYPE_F32 && ta->nbytes == tb->nbytes);
    double maxw = 0;
    for (uint64_t i = 0; i < ta->nbytes / 4; i++)
        maxw = fmax(maxw, fabs((double)((const float *)ta->data)[i] - ((const float *)tb->data)[i]));
    CHECK_MSG(maxw > 1e-4, "%s left %s unchanged (max diff %g)", transforms, changed, maxw);
    kv_model_close(fa);
    kv_model_close(fb);
}

KV_TEST(quarot_keeps_logits_stories260k) {
    /* tied embeddings (untied by the fold), head_dim 8, ffn 172 (online Hadamard in blocks of 4) */
    check_transform_keeps_logits(T, "models/stories260K/stories260K.bin", "quarot", "f32", 0, 1e-3, "blk.0.attn_v.weight");
}

KV_TEST(rht_keeps_logits_stories260k) {
    check_transform_keeps_logits(T, "models/stories260K/stories260K.bin", "rht", "f32", 0, 1e-3, "blk.0.ffn_down.weight");
    check_transform_keeps_logits(T, "models/stories260K/stories260K.bin", "rht:4,quarot", "f32", 0, 1e-3, "blk.1.attn_q.weight");
}

KV_TEST(fold_norms_keeps_logits_stories260k) {
    check_transform_keeps_logits(T, "models/stories260K/stories260K.bin", "fold-norms", "f32", 0, 1e-3, "blk.0.attn_q.weight");
}

KV_TEST(quarot_keeps_logits_proxy27m) {
    if (getenv("KVANT_SANITIZED")) SKIP("proxy-27m rotation is covered by the stories260K test under sanitizers");
    check_transform_keeps_logits(T, "models/proxy-27m", "quarot,rht", "f32", 0, 1e-3, "blk.3.ffn_down.weight");
}

KV_TEST(smoothquant_keeps_logits_proxy27m) {
    check_transform_keeps_logits(T, "models/proxy-27m", "smoothquant:0.5", "f32", 1, 1e-3, "blk.2.ffn_norm.weight");
}

KV_TEST(awq_keeps_logits_proxy27m) {
    /* AWQ searches its scales with q4_0 (the format only steers the search here: output stays f32); under
     * sanitizers only layer 0 gets a quantized format, so only its groups are searched */
    check_transform_keeps_logits(T, "models/proxy-27m", "awq", "q4_0", 1, 1e-3, "blk.0.ffn_up.weight");
}
