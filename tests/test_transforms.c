/* test_transforms.c — Hadamard matrices, FWHT, randomized Hadamard (rht) and the model transforms
 * (QuaRot, SmoothQuant, AWQ folds keep the unquantized model's logits). */
#include "test.h"
#include "../src/core/core.h"
#include "../src/transforms/hadamard.h"

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
