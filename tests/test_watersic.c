/* test_watersic.c — WaterSIC (src/algos/watersic.c) and the entropy-coded weight container
 * (src/formats/ecw.c): identity Σ_X reduces to per-column uniform scalar quantization, the entropy falls by
 * ~1 bit when the step doubles, the rate search hits its target, the distortion is within ~0.3 bit of the
 * Gaussian bound on iid Gaussian weights, the rANS container round-trips exactly at a size within 2% of the
 * reported rate, corrupt containers are refused, results do not depend on the thread count. */
#include "test.h"
#include "../src/algos/linalg.h"

static float *gauss_matrix(int64_t rows, int64_t cols, uint64_t seed) {
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    kv_rng rng;
    kv_rng_seed(&rng, seed);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)kv_rng_normal(&rng);
    return w;
}

static double *identity(int64_t n) {
    double *h = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < n; i++) h[i * n + i] = 1;
    return h;
}

/* H = XᵀX/ntok for correlated Gaussian inputs (an AR(1)-like mixing plus a few loud features). */
static double *correlated_h(int64_t n, int64_t ntok, uint64_t seed) {
    kv_rng rng;
    kv_rng_seed(&rng, seed);
    float *x = malloc(sizeof(float) * (size_t)(n * ntok));
    for (int64_t t = 0; t < ntok; t++) {
        double prev = 0;
        for (int64_t j = 0; j < n; j++) {
            prev = 0.8 * prev + kv_rng_normal(&rng);
            x[t * n + j] = (float)(prev * (j % 9 == 0 ? 4.0 : 1.0));
        }
    }
    double *h = calloc((size_t)(n * n), sizeof(double));
    kv_syrk_acc(h, x, ntok, n, NULL);
    for (int64_t i = 0; i < n * n; i++) h[i] /= (double)ntok;
    free(x);
    return h;
}

KV_TEST(watersic_identity_sigma_is_scalar_quantization) {
    int64_t a = 64, n = 96;
    float *w = gauss_matrix(a, n, 1);
    double *h = identity(n);
    kv_watersic_opts o;
    kv_watersic_opts_default(&o);
    o.step = 0.35;
    o.percdamp = 0;
    o.rescale = 0;
    kv_watersic_result r;
    kv_error err;
    REQUIRE_OK(kv_watersic_quantize(w, a, n, h, &o, &r, NULL, &err), &err);
    int64_t same = 0;
    for (int64_t i = 0; i < a * n; i++) same += r.z[i] == (int32_t)lrint(w[i] / 0.35);
    CHECK_EQ_INT(same, a * n);
    /* every column's value is its integer code times one step: the step divided by the code is constant */
    for (int64_t j = 0; j < n; j++) {
        float cs = kv_fp16_to_fp32(r.col_step[j]) * kv_fp16_to_fp32(r.row_scale[0]);
        CHECK_NEAR(cs, 0.35, 0.35 * 0.05); /* LMMSE gain stays close to 1 at this rate */
        for (int64_t i = 0; i < a; i++) CHECK_NEAR(r.wq[i * n + j], cs * r.z[i * n + j], 1e-6);
    }
    kv_watersic_result_free(&r);
    free(w);
    free(h);
}

KV_TEST(watersic_entropy_falls_one_bit_per_doubling) {
    int64_t a = 128, n = 128;
    float *w = gauss_matrix(a, n, 2);
    double *h = correlated_h(n, 400, 3);
    kv_watersic_opts o;
    kv_watersic_opts_default(&o);
    kv_watersic_result r1, r2;
    kv_error err;
    o.step = 0.05;
    REQUIRE_OK(kv_watersic_quantize(w, a, n, h, &o, &r1, NULL, &err), &err);
    o.step = 0.10;
    REQUIRE_OK(kv_watersic_quantize(w, a, n, h, &o, &r2, NULL, &err), &err);
    double drop = r1.entropy_bits - r2.entropy_bits;
    CHECK_MSG(drop > 0.85 && drop < 1.15, "entropy %g -> %g bits", r1.entropy_bits, r2.entropy_bits);
    CHECK(r2.distortion > 3 * r1.distortion); /* ~4x at high rate */
    kv_watersic_result_free(&r1);
    kv_watersic_result_free(&r2);
    free(w);
    free(h);
}

KV_TEST(watersic_rate_search_and_gaussian_bound) {
    int64_t a = 256, n = 128;
    if (getenv("KVANT_SANITIZED")) a = 96;
    float *w = gauss_matrix(a, n, 4);
    double *hs[2] = {identity(n), correlated_h(n, 500, 5)};
    kv_pool *pool = kv_pool_create(2);
    for (int k = 0; k < 2; k++) {
        for (double R = 2.0; R <= 4.0; R += 1.0) {
            kv_watersic_opts o;
            kv_watersic_opts_default(&o);
            o.target_bits = R;
            kv_watersic_result r;
            kv_error err;
            REQUIRE_OK(kv_watersic_quantize(w, a, n, hs[k], &o, &r, pool, &err), &err);
            CHECK_MSG(fabs(r.rate_bits - R) < 0.01, "target %g got %g", R, r.rate_bits);
            /* entropy-coded scalar quantization: the space-filling loss is 0.254 bit at high rate; at 2 bits
             * with unequal column variances the equal step also spends rate below the water level */
            double lim = k == 1 && R < 2.5 ? 0.45 : 0.3;
            CHECK_MSG(r.gap_bits > 0 && r.gap_bits < lim, "H %d R %g: gap %g bits (D %g bound %g)", k, R,
                      r.gap_bits, r.distortion, r.bound);
            kv_watersic_result_free(&r);
        }
    }
    kv_pool_destroy(pool);
    free(hs[0]);
    free(hs[1]);
    free(w);
}

KV_TEST(watersic_threads_do_not_change_results) {
    int64_t a = 80, n = 160;
    float *w = gauss_matrix(a, n, 6);
    double *h = correlated_h(n, 300, 7);
    kv_pool *pool = kv_pool_create(2);
    kv_watersic_opts o;
    kv_watersic_opts_default(&o);
    o.target_bits = 2.5;
    kv_watersic_result r1, r2;
    kv_error err;
    REQUIRE_OK(kv_watersic_quantize(w, a, n, h, &o, &r1, NULL, &err), &err);
    REQUIRE_OK(kv_watersic_quantize(w, a, n, h, &o, &r2, pool, &err), &err);
    CHECK(memcmp(r1.z, r2.z, sizeof(int32_t) * (size_t)(a * n)) == 0);
    CHECK(memcmp(r1.wq, r2.wq, sizeof(float) * (size_t)(a * n)) == 0);
    kv_watersic_result_free(&r1);
    kv_watersic_result_free(&r2);
    kv_pool_destroy(pool);
    free(w);
    free(h);
}

KV_TEST(ecw_roundtrip_size_matches_entropy) {
    int64_t a = 192, n = 256;
    float *w = gauss_matrix(a, n, 8);
    double *h = correlated_h(n, 600, 9);
    kv_error err;
    for (double R = 2.0; R <= 4.0; R += 2.0) {
        kv_watersic_opts o;
        kv_watersic_opts_default(&o);
        o.target_bits = R;
        kv_watersic_result r;
        REQUIRE_OK(kv_watersic_quantize(w, a, n, h, &o, &r, NULL, &err), &err);
        uint8_t *blob;
        size_t size;
        REQUIRE_OK(kv_ecw_encode(r.z, a, n, r.col_step, r.row_scale, &blob, &size, &err), &err);
        double want = r.rate_bits * (double)(a * n) / 8;
        CHECK_MSG(fabs((double)size - want) <= 0.02 * want, "R %g: %zu bytes, rate says %.0f", R, size, want);
        int32_t *z = malloc(sizeof(int32_t) * (size_t)(a * n));
        float *wd = malloc(sizeof(float) * (size_t)(a * n));
        int64_t ra, rn;
        REQUIRE_OK(kv_ecw_decode(blob, size, &ra, &rn, z, wd, &err), &err);
        CHECK_EQ_INT(ra, a);
        CHECK_EQ_INT(rn, n);
        CHECK(memcmp(z, r.z, sizeof(int32_t) * (size_t)(a * n)) == 0);
        CHECK(memcmp(wd, r.wq, sizeof(float) * (size_t)(a * n)) == 0);
        /* corrupt input: every truncation is refused, a flipped table byte too, nothing crashes */
        for (size_t cut = 0; cut < size; cut += size / 7 + 1)
            CHECK(kv_ecw_decode(blob, cut, NULL, NULL, z, wd, &err) != KV_OK);
        blob[32 + 8 + 1] ^= 0x40; /* first frequency of the first group */
        CHECK(kv_ecw_decode(blob, size, NULL, NULL, z, wd, &err) == KV_EFORMAT);
        free(blob);
        free(z);
        free(wd);
        kv_watersic_result_free(&r);
    }
    free(w);
    free(h);
}

KV_TEST(ecw_entropy_of_known_distributions) {
    int32_t z[1024];
    for (int i = 0; i < 1024; i++) z[i] = i % 4;
    CHECK_NEAR(kv_entropy_bits(z, 1024), 2.0, 1e-12);
    for (int i = 0; i < 1024; i++) z[i] = 7;
    CHECK_NEAR(kv_entropy_bits(z, 1024), 0.0, 1e-12);
    /* a constant matrix still round-trips */
    uint16_t cs[32], rs[32];
    for (int i = 0; i < 32; i++) cs[i] = rs[i] = kv_fp32_to_fp16(1.0f);
    uint8_t *blob;
    size_t size;
    kv_error err;
    REQUIRE_OK(kv_ecw_encode(z, 32, 32, cs, rs, &blob, &size, &err), &err);
    int32_t back[1024];
    REQUIRE_OK(kv_ecw_decode(blob, size, NULL, NULL, back, NULL, &err), &err);
    CHECK(memcmp(back, z, sizeof z) == 0);
    free(blob);
}

KV_TEST(watersic_bad_input) {
    int64_t a = 8, n = 16;
    float *w = gauss_matrix(a, n, 10);
    double *h = identity(n);
    kv_watersic_result r;
    kv_error err;
    kv_watersic_opts o;
    kv_watersic_opts_default(&o);
    CHECK(kv_watersic_quantize(w, a, n, h, &o, &r, NULL, &err) == KV_EINVAL); /* no rate, no step */
    o.target_bits = 3;
    w[5] = NAN;
    CHECK(kv_watersic_quantize(w, a, n, h, &o, &r, NULL, &err) == KV_EINVAL);
    CHECK(strstr(err.message, "not finite") != NULL);
    w[5] = 0;
    h[3 * n + 3] = 0; /* a dead input: zero weights there */
    REQUIRE_OK(kv_watersic_quantize(w, a, n, h, &o, &r, NULL, &err), &err);
    CHECK_EQ_INT(r.dead_cols, 1);
    for (int64_t i = 0; i < a; i++) CHECK(r.wq[i * n + 3] == 0);
    kv_watersic_result_free(&r);
    free(w);
    free(h);
}

/* ============================== LLM.int8() ============================== */

static double rel_err(const float *a, const float *b, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) { e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); s += (double)b[i] * b[i]; }
    return sqrt(e / s);
}

KV_TEST(llmint8_outlier_columns_rescue_int8) {
    int64_t ntok = 16, rows = 24, cols = 128;
    float *x = gauss_matrix(ntok, cols, 20), *w = gauss_matrix(rows, cols, 21);
    for (int64_t i = 0; i < rows * cols; i++) w[i] *= 0.05f;
    /* two feature columns with large activations (the emergent outliers of the paper) */
    for (int64_t t = 0; t < ntok; t++) { x[t * cols + 7] *= 60; x[t * cols + 90] = 40 + t; }
    float *ref = calloc((size_t)(ntok * rows), sizeof(float)), *y = malloc(sizeof(float) * (size_t)(ntok * rows));
    float *y8 = malloc(sizeof(float) * (size_t)(ntok * rows));
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t j = 0; j < cols; j++) s += (double)x[t * cols + j] * w[r * cols + j];
            ref[t * rows + r] = (float)s;
        }
    kv_error err;
    int64_t nout = -1;
    REQUIRE_OK(kv_llmint8_matmul(x, ntok, w, rows, cols, 6.0f, NULL, y, &nout, NULL, &err), &err);
    CHECK(nout >= 2); /* the two planted columns (plus any Gaussian value >= 6: none expected) */
    /* plain vector-wise int8 of everything: a mask of zeros */
    uint8_t *none = calloc((size_t)cols, 1);
    REQUIRE_OK(kv_llmint8_matmul(x, ntok, w, rows, cols, 6.0f, none, y8, NULL, NULL, &err), &err);
    double e_mixed = rel_err(y, ref, ntok * rows), e_int8 = rel_err(y8, ref, ntok * rows);
    CHECK_MSG(e_mixed < 0.01 && e_int8 > 4 * e_mixed, "LLM.int8 %g, int8 %g", e_mixed, e_int8);
    /* threads do not change results */
    kv_pool *pool = kv_pool_create(2);
    float *y2 = malloc(sizeof(float) * (size_t)(ntok * rows));
    REQUIRE_OK(kv_llmint8_matmul(x, ntok, w, rows, cols, 6.0f, NULL, y2, NULL, pool, &err), &err);
    CHECK(memcmp(y, y2, sizeof(float) * (size_t)(ntok * rows)) == 0);
    kv_pool_destroy(pool);
    x[3] = NAN;
    CHECK(kv_llmint8_matmul(x, ntok, w, rows, cols, 6.0f, NULL, y, NULL, NULL, &err) == KV_EINVAL);
    free(x); free(w); free(ref); free(y); free(y8); free(y2); free(none);
}
