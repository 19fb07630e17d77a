/* test_gptq.c — linear algebra (src/algos/linalg.c), the format grid (fgrid.c) and GPTQ (gptq.c):
 * GPTQ vs RTN on correlated inputs, H = I gives RTN exactly, block-size invariance, an unblocked reference
 * implementation written here, act-order and static groups, vector (p = 2) rounding, damping of singular H,
 * dead inputs, NaN activations, thread-count determinism. Two small formats are defined here so that the
 * algorithm is tested independently of src/formats; real formats are tested when the registry has them. */
#include "test.h"
#include "../src/algos/gptq.h"
#include "../src/algos/linalg.h"

/* ---- a Q4_1-like test format: blocks of 32, fp16 scale d and min m, 4-bit codes, value = d·q + m ---- */
enum { TI_B = 32, TI_BYTES = 20 };

static kv_status ti_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                             const float *imp, kv_error *err) {
    uint8_t *o = dst;
    for (int64_t r = 0; r < nrows; r++)
        for (int64_t b = 0; b < n / TI_B; b++, o += TI_BYTES) {
            const float *x = src + r * n + b * TI_B;
            float mn = x[0], mx = x[0];
            for (int i = 1; i < TI_B; i++) { mn = fminf(mn, x[i]); mx = fmaxf(mx, x[i]); }
            uint16_t dh = kv_fp32_to_fp16((mx - mn) / 15), mh = kv_fp32_to_fp16(mn);
            float d = kv_fp16_to_fp32(dh), m = kv_fp16_to_fp32(mh);
            memcpy(o, &dh, 2);
            memcpy(o + 2, &mh, 2);
            memset(o + 4, 0, 16);
            for (int i = 0; i < TI_B; i++) {
                int q = d > 0 ? (int)lrintf((x[i] - m) / d) : 0;
                q = q < 0 ? 0 : q > 15 ? 15 : q;
                o[4 + i % 16] |= (uint8_t)(q << (i / 16 * 4));
            }
        }
    return KV_OK;
}

static void ti_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    const uint8_t *o = src;
    for (int64_t b = 0; b < n / TI_B; b++, o += TI_BYTES) {
        uint16_t dh, mh;
        memcpy(&dh, o, 2);
        memcpy(&mh, o + 2, 2);
        float d = kv_fp16_to_fp32(dh), m = kv_fp16_to_fp32(mh);
        for (int i = 0; i < TI_B; i++) dst[b * TI_B + i] = d * (float)((o[4 + i % 16] >> (i / 16 * 4)) & 15) + m;
    }
}

static kv_format test_int4(void) {
    kv_format f;
    memset(&f, 0, sizeof f);
    strcpy(f.name, "test_int4_g32");
    f.type = KV_TYPE_KVANT_MAX;
    f.block = TI_B;
    f.block_bytes = TI_BYTES;
    f.bits_per_weight = TI_BYTES * 8.0 / TI_B;
    f.quantize = ti_quantize;
    f.dequantize = ti_dequantize;
    return f;
}

/* ---- a 2-D vector test format: blocks of 16 = 8 pairs, fp32 scale, 16-point rotated grid per pair ---- */
enum { TV_B = 16, TV_BYTES = 12 };

static void tv_grid(float g[16][2]) {
    const double c = cos(0.5), s = sin(0.5);
    for (int k = 0; k < 16; k++) {
        double x = (k % 4) - 1.5, y = (k / 4) - 1.5;
        g[k][0] = (float)(c * x - s * y);
        g[k][1] = (float)(s * x + c * y);
    }
}

static kv_status tv_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                             const float *imp, kv_error *err) {
    float g[16][2];
    tv_grid(g);
    uint8_t *o = dst;
    for (int64_t r = 0; r < nrows; r++)
        for (int64_t b = 0; b < n / TV_B; b++, o += TV_BYTES) {
            const float *x = src + r * n + b * TV_B;
            double ss = 0;
            for (int i = 0; i < TV_B; i++) ss += (double)x[i] * x[i];
            float s = (float)sqrt(ss / TV_B) / 1.2f;
            memcpy(o, &s, 4);
            memset(o + 4, 0, 8);
            for (int pr = 0; pr < 8; pr++) {
                int best = 0;
                float bd = INFINITY;
                for (int k = 0; k < 16; k++) {
                    float dx = x[2 * pr] - s * g[k][0], dy = x[2 * pr + 1] - s * g[k][1];
                    if (dx * dx + dy * dy < bd) { bd = dx * dx + dy * dy; best = k; }
                }
                o[4 + pr / 2] |= (uint8_t)(best << (pr % 2 * 4));
            }
        }
    return KV_OK;
}

static void tv_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    float g[16][2];
    tv_grid(g);
    const uint8_t *o = src;
    for (int64_t b = 0; b < n / TV_B; b++, o += TV_BYTES) {
        float s;
        memcpy(&s, o, 4);
        for (int pr = 0; pr < 8; pr++) {
            int k = (o[4 + pr / 2] >> (pr % 2 * 4)) & 15;
            dst[b * TV_B + 2 * pr] = s * g[k][0];
            dst[b * TV_B + 2 * pr + 1] = s * g[k][1];
        }
    }
}

static kv_format test_vq2(void) {
    kv_format f;
    memset(&f, 0, sizeof f);
    strcpy(f.name, "test_vq2");
    f.type = KV_TYPE_KVANT_MAX;
    f.block = TV_B;
    f.block_bytes = TV_BYTES;
    f.bits_per_weight = TV_BYTES * 8.0 / TV_B;
    f.quantize = tv_quantize;
    f.dequantize = tv_dequantize;
    return f;
}

/* ---- data: W ~ N(0,1), X = Z·M with a random mixing M so that H = XᵀX has strong correlations ---- */
static void make_problem(int64_t rows, int64_t cols, int64_t ntok, uint64_t seed, float *w, double *h) {
    kv_rng rng;
    kv_rng_seed(&rng, seed);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)kv_rng_normal(&rng);
    float *m = malloc(sizeof(float) * (size_t)(cols * cols)), *x = malloc(sizeof(float) * (size_t)(ntok * cols));
    double *z = malloc(sizeof(double) * (size_t)cols);
    for (int64_t i = 0; i < cols * cols; i++) m[i] = (float)(kv_rng_normal(&rng) / sqrt((double)cols));
    for (int64_t i = 0; i < cols; i++) m[i * cols + i] += 0.3f;
    for (int64_t t = 0; t < ntok; t++) {
        for (int64_t k = 0; k < cols; k++) z[k] = kv_rng_normal(&rng) * (1.0 + 3.0 * (k % 7 == 0));
        for (int64_t j = 0; j < cols; j++) {
            double s = 0;
            for (int64_t k = 0; k < cols; k++) s += z[k] * m[k * cols + j];
            x[t * cols + j] = (float)s;
        }
    }
    memset(h, 0, sizeof(double) * (size_t)(cols * cols));
    kv_syrk_acc(h, x, ntok, cols, NULL);
    free(m);
    free(x);
    free(z);
}

static void dequant_all(const kv_format *f, const void *q, float *out, int64_t rows, int64_t cols) {
    size_t rb = kv_format_row_bytes(f, cols);
    for (int64_t r = 0; r < rows; r++) f->dequantize(f, (const uint8_t *)q + r * rb, out + r * cols, cols);
}

/* ============================== linear algebra ============================== */

static void random_spd(double *a, int64_t n, uint64_t seed) {
    kv_rng rng;
    kv_rng_seed(&rng, seed);
    double *b = malloc(sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n * n; i++) b[i] = kv_rng_normal(&rng);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += b[i * n + k] * b[j * n + k];
            a[i * n + j] = s + (i == j ? 0.5 : 0);
        }
    free(b);
}

KV_TEST(linalg_cholesky_own_and_blas) {
    int64_t n = 150; /* > one 64-tile: exercises the blocked path */
    double *a = malloc(sizeof(double) * (size_t)(n * n)), *l = malloc(sizeof(double) * (size_t)(n * n));
    kv_pool *pool = kv_pool_create(2);
    random_spd(a, n, 1);
    for (int which = 0; which < 2; which++) {
        memcpy(l, a, sizeof(double) * (size_t)(n * n));
        CHECK_EQ_INT(which ? kv_chol_lower(l, n, pool) : kv_chol_lower_own(l, n, pool), 0);
        double maxerr = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t k = 0; k < n; k++) s += l[i * n + k] * l[j * n + k];
                maxerr = fmax(maxerr, fabs(s - a[i * n + j]));
                if (j > i) CHECK(l[i * n + j] == 0);
            }
        CHECK_MSG(maxerr < 1e-9 * n, "which %d: |LLᵀ - A| = %g", which, maxerr);
    }
    /* an indefinite matrix reports its failing pivot */
    memcpy(l, a, sizeof(double) * (size_t)(n * n));
    l[70 * n + 70] = -1e6;
    CHECK_EQ_INT(kv_chol_lower_own(l, n, pool), 71);
    kv_pool_destroy(pool);
    free(a);
    free(l);
}

KV_TEST(linalg_inverse_upper_factor) {
    int64_t n = 97;
    double *a = malloc(sizeof(double) * (size_t)(n * n)), *u = malloc(sizeof(double) * (size_t)(n * n));
    random_spd(a, n, 2);
    memcpy(u, a, sizeof(double) * (size_t)(n * n));
    REQUIRE(kv_chol_inv_upper(u, n, NULL) == 0);
    /* UᵀU = A⁻¹  <=>  A·UᵀU = I; U upper */
    double *m = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += u[k * n + i] * u[k * n + j];
            m[i * n + j] = s;
            if (j < i) CHECK(u[i * n + j] == 0);
        }
    double maxerr = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += a[i * n + k] * m[k * n + j];
            maxerr = fmax(maxerr, fabs(s - (i == j)));
        }
    CHECK_MSG(maxerr < 1e-8, "|A·UᵀU - I| = %g", maxerr);
    /* own triangular inverse = BLAS one */
    double *l1 = malloc(sizeof(double) * (size_t)(n * n)), *l2 = malloc(sizeof(double) * (size_t)(n * n));
    memcpy(l1, a, sizeof(double) * (size_t)(n * n));
    kv_chol_lower(l1, n, NULL);
    memcpy(l2, l1, sizeof(double) * (size_t)(n * n));
    CHECK_EQ_INT(kv_trinv_lower_own(l1, n, NULL), 0);
    CHECK_EQ_INT(kv_trinv_lower(l2, n, NULL), 0);
    double d = 0;
    for (int64_t i = 0; i < n * n; i++) d = fmax(d, fabs(l1[i] - l2[i]));
    CHECK_MSG(d < 1e-9, "trinv own vs dispatch %g", d);
    free(a); free(u); free(m); free(l1); free(l2);
}

KV_TEST(linalg_syrk_matches_naive_and_threads) {
    int64_t n = 130, ntok = 37;
    float *x = malloc(sizeof(float) * (size_t)(n * ntok));
    kv_rng rng;
    kv_rng_seed(&rng, 3);
    for (int64_t i = 0; i < n * ntok; i++) x[i] = (float)kv_rng_normal(&rng);
    double *h1 = calloc((size_t)(n * n), sizeof(double)), *h2 = calloc((size_t)(n * n), sizeof(double));
    kv_pool *pool = kv_pool_create(2);
    kv_syrk_acc(h1, x, ntok, n, NULL);
    kv_syrk_acc(h2, x, ntok, n, pool);
    CHECK(memcmp(h1, h2, sizeof(double) * (size_t)(n * n)) == 0);
    double maxerr = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t t = 0; t < ntok; t++) s += (double)x[t * n + i] * x[t * n + j];
            maxerr = fmax(maxerr, fabs(s - h1[i * n + j]));
        }
    CHECK_MSG(maxerr < 1e-5 * ntok, "max err %g", maxerr); /* fp32 per-batch sums (BLAS) are allowed */
    kv_error err;
    x[5 * n + 7] = NAN;
    CHECK(kv_hessian_add(h1, x, ntok, n, "blk.2.ffn_down input", pool, &err) == KV_EINVAL);
    CHECK(strstr(err.message, "blk.2.ffn_down") != NULL);
    CHECK(strstr(err.message, "NaN") != NULL);
    kv_pool_destroy(pool);
    free(x); free(h1); free(h2);
}

/* ============================== format grid ============================== */

KV_TEST(fgrid_finds_codes_of_test_formats) {
    kv_error err;
    kv_format f = test_int4();
    kv_fgrid g;
    REQUIRE_OK(kv_fgrid_build(&f, &g, &err), &err);
    CHECK_EQ_INT(g.p, 1);
    CHECK_EQ_INT(g.nbits, 4);
    CHECK_EQ_INT(g.nunits, 32);
    CHECK_EQ_INT(g.nsorted, 16);
    /* element 17 lives in byte 4 + 1, high nibble */
    CHECK_EQ_INT(g.unit_bit[17 * 4 + 0], (4 + 1) * 8 + 4);
    for (int k = 1; k < g.nsorted; k++) CHECK(g.sorted_t[k] > g.sorted_t[k - 1]);
    kv_fgrid_free(&g);
    kv_format v = test_vq2();
    REQUIRE_OK(kv_fgrid_build(&v, &g, &err), &err);
    CHECK_EQ_INT(g.p, 2);
    CHECK_EQ_INT(g.nbits, 4);
    CHECK_EQ_INT(g.unit_pos[3 * 2], 6);
    CHECK_EQ_INT(g.unit_pos[3 * 2 + 1], 7);
    kv_fgrid_free(&g);
}

/* ============================== GPTQ ============================== */

static void check_h_identity_is_rtn(kv_test_ctx *T, const kv_format *f, int64_t rows, int64_t cols, int act) {
    kv_error err;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = calloc((size_t)(cols * cols), sizeof(double));
    kv_rng rng;
    kv_rng_seed(&rng, 11);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)kv_rng_normal(&rng);
    for (int64_t i = 0; i < cols; i++) h[i * cols + i] = 1;
    size_t rb = kv_format_row_bytes(f, cols);
    uint8_t *q1 = malloc(rb * (size_t)rows), *q2 = malloc(rb * (size_t)rows);
    kv_gptq_opts o;
    kv_gptq_opts_default(&o);
    o.act_order = act;
    CHECK_OK(f->quantize(f, w, q1, rows, cols, NULL, &err), &err);
    kv_gptq_stats st;
    CHECK_OK(kv_gptq_quantize(f, w, rows, cols, h, &o, q2, &st, NULL, &err), &err);
    CHECK_MSG(memcmp(q1, q2, rb * (size_t)rows) == 0, "%s: GPTQ with H = I differs from RTN", f->name);
    CHECK_EQ_INT(st.damp_factor == 1.0, 1);
    CHECK_STR(st.warning, "");
    free(w); free(h); free(q1); free(q2);
}

KV_TEST(gptq_identity_hessian_equals_rtn) {
    kv_format f = test_int4(), v = test_vq2();
    check_h_identity_is_rtn(T, &f, 24, 128, 0);
    check_h_identity_is_rtn(T, &v, 24, 128, 1);
}

static double run_gptq_loss(kv_test_ctx *T, const kv_format *f, const float *w, const double *h, int64_t rows,
                            int64_t cols, const kv_gptq_opts *o, float *deq, kv_pool *pool) {
    kv_error err;
    size_t rb = kv_format_row_bytes(f, cols);
    uint8_t *q = malloc(rb * (size_t)rows);
    kv_gptq_stats st;
    kv_status s = kv_gptq_quantize(f, w, rows, cols, h, o, q, &st, pool, &err);
    CHECK_OK(s, &err);
    dequant_all(f, q, deq, rows, cols);
    free(q);
    return s ? INFINITY : kv_hessian_loss(w, deq, rows, cols, h, pool);
}

KV_TEST(gptq_beats_rtn_on_correlated_inputs) {
    int64_t rows = 48, cols = 256;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols)), *d = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = malloc(sizeof(double) * (size_t)(cols * cols));
    make_problem(rows, cols, 600, 5, w, h);
    kv_pool *pool = kv_pool_create(2);
    kv_format fs[2] = {test_int4(), test_vq2()};
    for (int k = 0; k < 2; k++) {
        kv_error err;
        size_t rb = kv_format_row_bytes(&fs[k], cols);
        uint8_t *q = malloc(rb * (size_t)rows);
        CHECK_OK(fs[k].quantize(&fs[k], w, q, rows, cols, NULL, &err), &err);
        dequant_all(&fs[k], q, d, rows, cols);
        double rtn = kv_hessian_loss(w, d, rows, cols, h, pool);
        kv_gptq_opts o;
        kv_gptq_opts_default(&o);
        double g0 = run_gptq_loss(T, &fs[k], w, h, rows, cols, &o, d, pool);
        o.act_order = 1;
        double g1 = run_gptq_loss(T, &fs[k], w, h, rows, cols, &o, d, pool);
        o.static_groups = 1;
        double g2 = run_gptq_loss(T, &fs[k], w, h, rows, cols, &o, d, pool);
        CHECK_MSG(g0 < 0.8 * rtn && g1 < 0.8 * rtn && g2 < 0.8 * rtn, "%s: rtn %g gptq %g act %g static %g",
                  fs[k].name, rtn, g0, g1, g2);
        free(q);
    }
    kv_pool_destroy(pool);
    free(w); free(d); free(h);
}

KV_TEST(gptq_block_size_and_threads_do_not_change_results) {
    int64_t rows = 32, cols = 192;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = malloc(sizeof(double) * (size_t)(cols * cols));
    make_problem(rows, cols, 400, 6, w, h);
    kv_format f = test_int4();
    size_t rb = kv_format_row_bytes(&f, cols), tot = rb * (size_t)rows;
    uint8_t *q[3];
    int blocks[3] = {128, 32, 7};
    kv_pool *pool = kv_pool_create(2);
    kv_error err;
    for (int k = 0; k < 3; k++) {
        q[k] = malloc(tot);
        kv_gptq_opts o;
        kv_gptq_opts_default(&o);
        o.block = blocks[k];
        o.act_order = 1;
        CHECK_OK(kv_gptq_quantize(&f, w, rows, cols, h, &o, q[k], NULL, k == 0 ? NULL : pool, &err), &err);
    }
    /* lazy batches only reorder fp32 sums: allow a rare code flip at a rounding tie */
    for (int k = 1; k < 3; k++) {
        size_t diff = 0;
        for (size_t i = 0; i < tot; i++) diff += q[0][i] != q[k][i];
        CHECK_MSG(diff <= tot / 200, "block %d: %zu of %zu bytes differ", blocks[k], diff, tot);
    }
    /* same block, 1 vs 2 threads: identical bytes */
    uint8_t *q2 = malloc(tot);
    kv_gptq_opts o;
    kv_gptq_opts_default(&o);
    o.act_order = 1;
    CHECK_OK(kv_gptq_quantize(&f, w, rows, cols, h, &o, q2, NULL, pool, &err), &err);
    CHECK(memcmp(q2, q[0], tot) == 0);
    kv_pool_destroy(pool);
    for (int k = 0; k < 3; k++) free(q[k]);
    free(q2); free(w); free(h);
}

/* Straightforward GPTQ (gptq.py fasterquant with blocksize = 1, groupsize 32) in fp64 with the test format's
 * quantizer convention, for comparison. */
static void reference_gptq(const float *w0, const double *h0, int64_t rows, int64_t n, double percdamp,
                           float *out) {
    double *h = malloc(sizeof(double) * (size_t)(n * n)), *w = malloc(sizeof(double) * (size_t)(rows * n));
    memcpy(h, h0, sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < rows * n; i++) w[i] = w0[i];
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += h[i * n + i] / n;
    for (int64_t i = 0; i < n; i++) h[i * n + i] += percdamp * mean;
    /* Hinv by Gauss-Jordan, then its upper Cholesky factor U (Hinv = UᵀU) */
    double *inv = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < n; i++) inv[i * n + i] = 1;
    for (int64_t c = 0; c < n; c++) {
        double p = h[c * n + c];
        for (int64_t j = 0; j < n; j++) { h[c * n + j] /= p; inv[c * n + j] /= p; }
        for (int64_t r = 0; r < n; r++) {
            if (r == c) continue;
            double f = h[r * n + c];
            for (int64_t j = 0; j < n; j++) { h[r * n + j] -= f * h[c * n + j]; inv[r * n + j] -= f * inv[c * n + j]; }
        }
    }
    double *u = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            double s = inv[i * n + j];
            for (int64_t k = 0; k < i; k++) s -= u[k * n + i] * u[k * n + j];
            u[i * n + j] = i == j ? sqrt(s) : s / u[i * n + i];
        }
    for (int64_t r = 0; r < rows; r++) {
        double *wr = w + r * n;
        float d = 0, m = 0;
        for (int64_t i = 0; i < n; i++) {
            if (i % TI_B == 0) {
                float mn = (float)wr[i], mx = (float)wr[i];
                for (int k = 1; k < TI_B; k++) { mn = fminf(mn, (float)wr[i + k]); mx = fmaxf(mx, (float)wr[i + k]); }
                d = kv_fp16_to_fp32(kv_fp32_to_fp16((mx - mn) / 15));
                m = kv_fp16_to_fp32(kv_fp32_to_fp16(mn));
            }
            int q = d > 0 ? (int)lrint((wr[i] - m) / d) : 0;
            q = q < 0 ? 0 : q > 15 ? 15 : q;
            double qv = d * (float)q + m;
            double e = (wr[i] - qv) / u[i * n + i];
            for (int64_t j = i + 1; j < n; j++) wr[j] -= e * u[i * n + j];
            out[r * n + i] = (float)qv;
        }
    }
    free(h); free(w); free(inv); free(u);
}

KV_TEST(gptq_matches_unblocked_reference) {
    int64_t rows = 16, cols = 128;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols)), *ref = malloc(sizeof(float) * (size_t)(rows * cols));
    float *got = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = malloc(sizeof(double) * (size_t)(cols * cols));
    make_problem(rows, cols, 300, 8, w, h);
    reference_gptq(w, h, rows, cols, 0.01, ref);
    kv_format f = test_int4();
    kv_gptq_opts o;
    kv_gptq_opts_default(&o);
    o.block = 64;
    double lg = run_gptq_loss(T, &f, w, h, rows, cols, &o, got, NULL);
    double lr = kv_hessian_loss(w, ref, rows, cols, h, NULL);
    int64_t same = 0;
    for (int64_t i = 0; i < rows * cols; i++) same += fabsf(got[i] - ref[i]) <= 1e-5f * (1 + fabsf(ref[i]));
    CHECK_MSG(same >= rows * cols * 99 / 100, "%lld of %lld values equal", (long long)same,
              (long long)(rows * cols));
    CHECK_MSG(fabs(lg - lr) <= 0.01 * lr, "loss kvant %g reference %g", lg, lr);
    free(w); free(ref); free(got); free(h);
}

KV_TEST(gptq_static_groups_keep_rtn_parameters) {
    int64_t rows = 20, cols = 128;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = malloc(sizeof(double) * (size_t)(cols * cols));
    make_problem(rows, cols, 300, 9, w, h);
    kv_format f = test_int4();
    size_t rb = kv_format_row_bytes(&f, cols);
    uint8_t *rtn = malloc(rb * (size_t)rows), *q = malloc(rb * (size_t)rows);
    kv_error err;
    REQUIRE_OK(f.quantize(&f, w, rtn, rows, cols, NULL, &err), &err);
    for (int act = 0; act < 2; act++) {
        kv_gptq_opts o;
        kv_gptq_opts_default(&o);
        o.static_groups = 1;
        o.act_order = act;
        kv_gptq_stats st;
        REQUIRE_OK(kv_gptq_quantize(&f, w, rows, cols, h, &o, q, &st, NULL, &err), &err);
        CHECK_EQ_INT(st.static_params, 1);
        /* every block header (d, m) is RTN's; the codes differ */
        int same_hdr = 1, diff_codes = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < cols / TI_B; b++) {
                const uint8_t *x = rtn + r * rb + b * TI_BYTES, *y = q + r * rb + b * TI_BYTES;
                same_hdr &= memcmp(x, y, 4) == 0;
                diff_codes += memcmp(x + 4, y + 4, 16) != 0;
            }
        CHECK(same_hdr);
        CHECK(diff_codes > 0);
    }
    free(w); free(h); free(rtn); free(q);
}

KV_TEST(gptq_singular_hessian_gets_extra_damping) {
    int64_t rows = 8, cols = 64;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = calloc((size_t)(cols * cols), sizeof(double));
    kv_rng rng;
    kv_rng_seed(&rng, 4);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)kv_rng_normal(&rng);
    /* rank 3: far fewer tokens than inputs */
    float *x = malloc(sizeof(float) * 3 * (size_t)cols);
    for (int64_t i = 0; i < 3 * cols; i++) x[i] = (float)kv_rng_normal(&rng);
    kv_syrk_acc(h, x, 3, cols, NULL);
    kv_format f = test_int4();
    size_t rb = kv_format_row_bytes(&f, cols);
    uint8_t *q = malloc(rb * (size_t)rows);
    kv_gptq_opts o;
    kv_gptq_opts_default(&o);
    o.percdamp = 0;
    kv_gptq_stats st;
    kv_error err;
    CHECK_OK(kv_gptq_quantize(&f, w, rows, cols, h, &o, q, &st, NULL, &err), &err);
    CHECK(st.damp > 0);
    CHECK_MSG(strstr(st.warning, "damping raised") != NULL, "warning '%s'", st.warning);
    /* an indefinite H (negative eigenvalue) too, with the default damping */
    for (int64_t i = 0; i < cols; i++) h[i * cols + i] += 1e-3;
    h[0 * cols + 1] = h[1 * cols + 0] = 10 * sqrt(h[0] * h[cols + 1]);
    kv_gptq_opts_default(&o);
    CHECK_OK(kv_gptq_quantize(&f, w, rows, cols, h, &o, q, &st, NULL, &err), &err);
    CHECK_MSG(st.damp_factor >= 10 && strstr(st.warning, "raised"), "factor %g warning '%s'", st.damp_factor,
              st.warning);
    free(w); free(h); free(x); free(q);
}

KV_TEST(gptq_dead_inputs_zero_weights) {
    int64_t rows = 8, cols = 64;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols)), *d = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = malloc(sizeof(double) * (size_t)(cols * cols));
    make_problem(rows, cols, 200, 10, w, h);
    for (int64_t k = 0; k < cols; k++) h[5 * cols + k] = h[k * cols + 5] = 0;
    kv_format f = test_int4();
    size_t rb = kv_format_row_bytes(&f, cols);
    uint8_t *q = malloc(rb * (size_t)rows);
    kv_gptq_stats st;
    kv_error err;
    REQUIRE_OK(kv_gptq_quantize(&f, w, rows, cols, h, NULL, q, &st, NULL, &err), &err);
    CHECK_EQ_INT(st.dead_cols, 1);
    dequant_all(&f, q, d, rows, cols);
    double mean_abs = 0;
    for (int64_t r = 0; r < rows; r++) mean_abs += fabsf(d[r * cols + 5]) / rows;
    /* zeroed weight rounds to the grid point nearest 0: within half a step (range/15/2) */
    CHECK(mean_abs < 0.5);
    /* bad arguments */
    CHECK(kv_gptq_quantize(&f, w, rows, 60, h, NULL, q, &st, NULL, &err) == KV_EINVAL);
    w[3] = NAN;
    CHECK(kv_gptq_quantize(&f, w, rows, cols, h, NULL, q, &st, NULL, &err) == KV_EINVAL);
    free(w); free(d); free(h); free(q);
}

/* Real formats from the registry: H = I gives RTN's bytes, and GPTQ beats RTN on correlated inputs. */
KV_TEST(gptq_real_formats) {
    const char *names[] = {"q4_0", "q4_k", "q3_k", "q2_k", "int4_g128_asym", "int3_g128_sym", "nf4", "mxfp4",
                           "nvfp4", "higgs_p2_b4", "int2_g64_asym"};
    int64_t rows = 16, cols = 256;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols)), *d = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = malloc(sizeof(double) * (size_t)(cols * cols));
    make_problem(rows, cols, 500, 12, w, h);
    int tested = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        kv_format f;
        kv_error err;
        if (kv_format_get(names[k], &f, &err) != KV_OK || !f.quantize || !f.dequantize) continue;
        tested++;
        check_h_identity_is_rtn(T, &f, rows, cols, 0);
        size_t rb = kv_format_row_bytes(&f, cols);
        uint8_t *q = malloc(rb * (size_t)rows);
        CHECK_OK(f.quantize(&f, w, q, rows, cols, NULL, &err), &err);
        dequant_all(&f, q, d, rows, cols);
        double rtn = kv_hessian_loss(w, d, rows, cols, h, NULL);
        double g = run_gptq_loss(T, &f, w, h, rows, cols, NULL, d, NULL);
        CHECK_MSG(g < rtn, "%s: gptq %g rtn %g", names[k], g, rtn);
        free(q);
    }
    free(w); free(d); free(h);
    if (!tested) SKIP("no real formats registered yet");
}

/* ============================== the calibration engine through the CLI ============================== */

/* A calibration text of the first n bytes of calib.txt (tokenizing all 2 MB would dominate the test). */
static int short_calib(const char *dir, size_t n, char *path, size_t len) {
    char calib[512];
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    size_t size = 0;
    char *text = kv_test_read_file(calib, &size);
    if (!text) return -1;
    snprintf(path, len, "%s/calib-%zu.txt", dir, n);
    int rc = kv_test_write_file(path, text, n < size ? n : size);
    free(text);
    return rc;
}

KV_TEST(gptq_cli_calibrates_and_reuses_hessians) {
    char model[512], calib[1024], args[4096], *out = NULL;
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    const char *dir = kv_test_tmpdir();
    if (!kv_test_exists(model) || short_calib(dir, 16384, calib, sizeof calib)) SKIP("proxy-27m or calib.txt absent");
    /* under the sanitizers only blocks 0 and 5 get GPTQ (the others stay bf16), still through all blocks */
    const char *light = getenv("KVANT_SANITIZED") ? "--override 'blk\\.[1-4]\\.=bf16'" : "";
    int64_t want = getenv("KVANT_SANITIZED") ? 14 : 42;
    snprintf(args, sizeof args,
             "quantize %s -o %s/a.gguf --format q4_0 --pure %s --method gptq:act-order,save-hessians=%s/h "
             "--calib %s --calib-tokens 512 --no-imatrix -t 2 --quiet", model, dir, light, dir, calib);
    int rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    CHECK(out && strstr(out, "calibration: 1 windows x 512 tokens, peak"));
    free(out);
    char hpath[1024];
    snprintf(hpath, sizeof hpath, "%s/h/blk.5.ffn_down.kvh", dir);
    CHECK(kv_test_exists(hpath));
    /* the saved statistics give the same tensors without running the model (and with another thread count) */
    snprintf(args, sizeof args,
             "quantize %s -o %s/b.gguf --format q4_0 --pure %s --method gptq:act-order,load-hessians=%s/h "
             "--calib %s --calib-tokens 512 --no-imatrix -t 1 --quiet", model, dir, light, dir, calib);
    rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    free(out);
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/a.gguf", dir);
    snprintf(pb, sizeof pb, "%s/b.gguf", dir);
    kv_model_file *ma = NULL, *mb = NULL;
    kv_error err;
    REQUIRE_OK(kv_model_open(pa, &ma, &err), &err);
    REQUIRE_OK(kv_model_open(pb, &mb, &err), &err);
    REQUIRE(kv_model_n_tensors(ma) == kv_model_n_tensors(mb));
    int64_t differ = 0, quantized = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(ma); i++) {
        const kv_tensor *x = kv_model_tensor(ma, i), *y = kv_model_find(mb, x->name);
        if (!y || x->nbytes != y->nbytes || memcmp(x->data, y->data, x->nbytes)) differ++;
        quantized += x->type == KV_TYPE_Q4_0;
    }
    CHECK_EQ_INT(differ, 0);
    CHECK(quantized >= want);
    kv_model_close(ma);
    kv_model_close(mb);
}

KV_TEST(gptq_cli_bad_calibration_and_options) {
    char model[512], calib[1024], args[4096], *out = NULL;
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    const char *dir = kv_test_tmpdir();
    if (!kv_test_exists(model) || short_calib(dir, 8192, calib, sizeof calib)) SKIP("proxy-27m or calib.txt absent");
    /* fewer tokens than requested: both numbers named, no output file */
    snprintf(args, sizeof args, "quantize %s -o %s/x.gguf --format q4_0 --method gptq --calib %s "
             "--calib-tokens 65536 --quiet", model, dir, calib);
    int rc = kv_test_run_cli(args, &out);
    CHECK(rc != 0);
    CHECK_MSG(out && strstr(out, "65536") && strstr(out, "tokens, fewer than"), "%s", out ? out : "");
    free(out);
    char path[1024];
    snprintf(path, sizeof path, "%s/x.gguf", dir);
    CHECK(!kv_test_exists(path));
    snprintf(args, sizeof args, "quantize %s -o %s/x.gguf --format q4_0 --method gptq:bogus --calib %s "
             "--calib-tokens 512 --no-imatrix --quiet", model, dir, calib);
    rc = kv_test_run_cli(args, &out);
    CHECK(rc == 2);
    CHECK_MSG(out && strstr(out, "unknown option 'bogus'"), "%s", out ? out : "");
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s/x.gguf --format f16 --method watersic --calib %s "
             "--calib-tokens 512 --no-imatrix --quiet", model, dir, calib);
    rc = kv_test_run_cli(args, &out);
    CHECK(rc == 2);
    CHECK_MSG(out && strstr(out, "bits|step"), "%s", out ? out : "");
    free(out);
    CHECK(!kv_test_exists(path));
}

/* The head gets its Hessian (src/algos/calib.c): H of the final RMSNorm's outputs is saved as output.kvh, and
 * GPTQ's head has a smaller H-weighted error tr(ΔW·H·ΔWᵀ) than the same format rounded to nearest. */
KV_TEST(gptq_head_calibrated_beats_rtn) {
    char model[512], calib[1024], args[4096], *out = NULL;
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    const char *dir = kv_test_tmpdir();
    if (!kv_test_exists(model) || short_calib(dir, 8192, calib, sizeof calib)) SKIP("proxy-27m or calib.txt absent");
    const char *light = getenv("KVANT_SANITIZED") ? "--override 'blk\\.=bf16'" : ""; /* only the head calibrated */
    snprintf(args, sizeof args,
             "quantize %s -o %s/head.gguf --format int3_g128_asym --pure %s --method gptq:save-hessians=%s/hh "
             "--calib %s --calib-tokens 1024 --no-imatrix -t 2 --quiet", model, dir, light, dir, calib);
    int rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out ? out : "");
    free(out);
    char hpath[1024], qpath[1024];
    snprintf(hpath, sizeof hpath, "%s/hh/output.kvh", dir);
    snprintf(qpath, sizeof qpath, "%s/head.gguf", dir);
    size_t hsize = 0;
    uint8_t *hf = kv_test_read_file(hpath, &hsize);
    REQUIRE(hf);
    kv_model_file *src = NULL, *q = NULL;
    kv_error err;
    REQUIRE_OK(kv_model_open(model, &src, &err), &err);
    REQUIRE_OK(kv_model_open(qpath, &q, &err), &err);
    const kv_tensor *ts = kv_model_find(src, "output.weight"), *tq = kv_model_find(q, "output.weight");
    REQUIRE(ts && tq && ts->n_dims == 2);
    const int64_t rows = ts->shape[0], cols = ts->shape[1];
    REQUIRE(hsize == 20 + sizeof(double) * (size_t)(cols * cols) && !memcmp(hf, "KVH1", 4));
    CHECK_EQ_INT(kv_rd_u64(hf + 12), 1024); /* tokens */
    double *h = malloc(sizeof(double) * (size_t)(cols * cols));
    float *w = malloc(sizeof(float) * (size_t)(rows * cols)), *wg = malloc(sizeof(float) * (size_t)(rows * cols)),
          *wr = malloc(sizeof(float) * (size_t)(rows * cols));
    kv_format f;
    REQUIRE_OK(kv_format_get("int3_g128_asym", &f, &err), &err);
    size_t rb = kv_format_row_bytes(&f, cols);
    uint8_t *packed = malloc(rb * (size_t)rows);
    REQUIRE(h && w && wg && wr && packed);
    memcpy(h, hf + 20, sizeof(double) * (size_t)(cols * cols));
    REQUIRE_OK(kv_tensor_to_f32(ts, w, &err), &err);
    REQUIRE(tq->nbytes == rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) f.dequantize(&f, (const uint8_t *)tq->data + (size_t)r * rb, wg + r * cols, cols);
    REQUIRE_OK(f.quantize(&f, w, packed, rows, cols, NULL, &err), &err);
    for (int64_t r = 0; r < rows; r++) f.dequantize(&f, packed + (size_t)r * rb, wr + r * cols, cols);
    double lg = kv_hessian_loss(w, wg, rows, cols, h, NULL), lr = kv_hessian_loss(w, wr, rows, cols, h, NULL);
    CHECK_MSG(lg < 0.9 * lr, "head: GPTQ loss %.6g, round to nearest %.6g", lg, lr);
    free(h);
    free(w);
    free(wg);
    free(wr);
    free(packed);
    free(hf);
    kv_model_close(src);
    kv_model_close(q);
}
