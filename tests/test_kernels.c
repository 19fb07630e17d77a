/* test_kernels.c — the CPU kernel tables (src/kernels/cpu/kernels.h): integer dot kernels of every ISA this
 * CPU runs against the scalar reference and against an exact double dot of the dequantized weights with the
 * dequantized activations; activation quantization; the weight seam with act_q8 (one token = many tokens,
 * any thread count); the fp32 tables of every ISA agree with the generic one. Random data and proxy layers. */
#include "test.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/qdot_layout.h"
#include "formats/extra.h"
#include <math.h>

#define PROXY "models/proxy-27m"

static const char *const k_int_formats[] = {"q4_0", "q8_0", "q4_k", "q5_k", "q6_k", "mxfp4", "iq4_nl", "nvfp4",
                                            "int4_g128_sym", "int4_g128_asym", "int3_g128_sym", "int3_g128_asym",
                                            "int4_g128_asym_zp", "int3_g128_sym_mse", "nf4", "af4", "higgs_p2_b3",
                                            "higgs_p2_b4"};

static void fill_normal(float *x, int64_t n, uint64_t seed, double scale) {
    kv_rng r;
    kv_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(kv_rng_normal(&r) * scale);
}

/* The activation row back to floats (d · q). */
static void act_dequantize(kv_act_kind kind, const void *a, int64_t n, float *out) {
    if (kind == KV_ACT_F32) {
        memcpy(out, a, (size_t)n * sizeof(float));
    } else if (kind == KV_ACT_Q8_32) {
        const kv_act_q8_32 *b = a;
        for (int64_t i = 0; i < n; i++) out[i] = b[i / 32].d * b[i / 32].q[i % 32];
    } else if (kind == KV_ACT_Q8_128P) {
        const kv_act_q8_128 *b = a;
        for (int64_t i = 0; i < n; i++) {
            const int l = (int)(i % 128);
            out[i] = b[i / 128].d * b[i / 128].q[l & 1 ? 64 + l / 2 : l / 2];
        }
    } else if (kind == KV_ACT_Q8_64NF) {
        const kv_act_q8_64 *b = a;
        for (int64_t i = 0; i < n; i++) {
            const int l = (int)(i % 64);
            out[i] = b[i / 64].d * b[i / 64].q[l & 1 ? l / 2 : 32 + l / 2];
        }
    } else {
        const kv_act_q8_256 *b = a;
        for (int64_t i = 0; i < n; i++) out[i] = b[i / 256].d * b[i / 256].q[i % 256];
    }
}

/* Checks every ISA's kernel for fmt on rows × n weights W and activations x: each within tol_rel · Σ|w·x| of
 * the exact double dot of the dequantized operands, and of the scalar kernel. */
static void check_kernels_act(kv_test_ctx *T, const kv_format *fmt, const float *W, int64_t rows, int64_t n,
                              const float *x, const char *what, kv_act_kind kind) {
    kv_error err = {0};
    const kv_qkernel *ref = kv_qkernel_find_kind(fmt, KV_ISA_SCALAR, kind);
    REQUIRE(ref != NULL);
    const size_t rb = kv_format_row_bytes(fmt, n), ab = kv_act_row_bytes(ref->act, n);
    uint8_t *packed = malloc(rb * (size_t)rows), *act = malloc(ab);
    float *wd = malloc((size_t)n * sizeof(float)), *xd = malloc((size_t)n * sizeof(float));
    REQUIRE(packed && act && wd && xd);
    REQUIRE_OK(fmt->quantize(fmt, W, packed, rows, n, NULL, &err), &err);
    kv_act_quantize(ref->act, x, n, act);
    act_dequantize(ref->act, act, n, xd);
    double worst_exact = 0, worst_isa = 0, worst_fp32 = 0;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = packed + (size_t)r * rb;
        fmt->dequantize(fmt, row, wd, n);
        double exact = 0, mag = 0, fp32 = 0, lut = 0;
        for (int64_t i = 0; i < n; i++) {
            exact += (double)wd[i] * xd[i];
            fp32 += (double)wd[i] * x[i];
            mag += fabs((double)wd[i] * x[i]);
        }
        /* int8 tables of a [-1, 1] codebook: each weight within absmax / 254 (the block's max |w|) of its value */
        for (int64_t b = 0; ref->act == KV_ACT_Q8_64NF && b < n / 64; b++) {
            double am = 0, sx = 0;
            for (int i = 0; i < 64; i++) {
                am = fmax(am, fabs(wd[64 * b + i]));
                sx += fabs(xd[64 * b + i]);
            }
            lut += am * sx / 254.0;
        }
        /* int8 HIGGS grids: each coordinate within |s| · step / 2 (s the group's fp16 scale) */
        for (int64_t g = 0; ref->act == KV_ACT_Q8_128P && g < n / 256; g++) {
            const kv_higgs_i8 *h = fmt->params[1] == 3 ? &kv_higgs_p2b3_i8 : &kv_higgs_p2b4_i8;
            double sx = 0;
            for (int i = 0; i < 256; i++) sx += fabs(xd[256 * g + i]);
            lut += fabs(kv_f16_load(row + (size_t)g * kv_higgs_p2_bytes(fmt->params[1]))) * h->step / 2 * sx;
        }
        const float s = ref->dot(n, row, act);
        worst_exact = fmax(worst_exact, (fabs(s - exact) - lut) / mag);
        worst_fp32 = fmax(worst_fp32, fabs(s - fp32) / mag);
        for (int isa = KV_ISA_AVX2; isa <= (int)kv_cpu_isa_hw(); isa++) {
            const kv_qkernel *k = kv_qkernel_find_kind(fmt, (kv_isa)isa, kind);
            REQUIRE(k && k->act == ref->act);
            worst_isa = fmax(worst_isa, fabs(k->dot(n, row, act) - s) / mag);
        }
    }
    /* integer sums are exact: only fp32 rounding of per-block terms differs (~1e-7 relative per block); fp32
     * activation kernels sum n products in fp32 in another order (bound ~ n·2^-24 relative, ~1e-6 in practice) */
    const double tol = ref->act == KV_ACT_F32 ? 2e-5 : 2e-6;
    CHECK_MSG(worst_exact < tol, "%s %s: scalar kernel vs exact dot of the dequantized operands %g", fmt->name, what,
              worst_exact);
    CHECK_MSG(worst_isa < tol, "%s %s: SIMD kernels vs scalar %g", fmt->name, what, worst_isa);
    /* 8-bit activations: relative error of each code <= 1/254 of the block maximum */
    CHECK_MSG(worst_fp32 < 2e-2, "%s %s: vs fp32 activations %g", fmt->name, what, worst_fp32);
    free(packed); free(act); free(wd); free(xd);
}

/* check_kernels_act for each kind of activations the format has kernels on (nf4, af4, higgs: quantized and fp32) */
static void check_kernels(kv_test_ctx *T, const kv_format *fmt, const float *W, int64_t rows, int64_t n,
                          const float *x, const char *what) {
    static const kv_act_kind kinds[] = {KV_ACT_Q8_32, KV_ACT_Q8_256, KV_ACT_F32, KV_ACT_Q8_64NF, KV_ACT_Q8_128P};
    int found = 0;
    for (size_t k = 0; k < KV_ARRAY_LEN(kinds); k++)
        if (kv_qkernel_find_kind(fmt, KV_ISA_SCALAR, kinds[k]) && n % (kinds[k] == KV_ACT_Q8_128P ? 128 : 1) == 0) {
            check_kernels_act(T, fmt, W, rows, n, x, what, kinds[k]);
            found++;
        }
    CHECK_MSG(found > 0 && kv_qkernel_find_act(fmt, kv_cpu_isa_hw(), 1), "%s: no kernel", fmt->name);
}

/* The int8 HIGGS grids (qdot_grids.c) are nearest(coordinate / step) of the grids, step = largest |coordinate|
 * / 127, and their rounding adds under 1 % to the grids' own MSE on N(0, I_2) (Monte Carlo through the grid's
 * nearest point). */
KV_TEST(higgs_int8_grids_match_the_grids) {
    for (int b = 3; b <= 4; b++) {
        const kv_higgs_grid *g = kv_higgs_grid_get(2, b);
        const kv_higgs_i8 *t = b == 3 ? &kv_higgs_p2b3_i8 : &kv_higgs_p2b4_i8;
        REQUIRE(g && g->n == 1 << (2 * b));
        float m = 0;
        for (int i = 0; i < 2 * g->n; i++) m = fmaxf(m, fabsf(g->pts[i]));
        CHECK_NEAR(t->step, m / 127.0f, 1e-9);
        int bad = 0;
        for (int c = 0; c < g->n; c++)
            bad += t->x[c] != kv_nearest_int(127.0f / m * g->pts[2 * c]) || t->y[c] != kv_nearest_int(127.0f / m * g->pts[2 * c + 1]);
        CHECK_MSG(bad == 0, "p2_b%d: %d int8 grid points differ", b, bad);
        kv_rng r;
        kv_rng_seed(&r, 7);
        double e_grid = 0, e_lut = 0;
        for (int i = 0; i < 20000; i++) {
            const double px = kv_rng_normal(&r), py = kv_rng_normal(&r);
            int best = 0;
            double bd = 1e30;
            for (int c = 0; c < g->n; c++) {
                const double d = (px - g->pts[2 * c]) * (px - g->pts[2 * c]) + (py - g->pts[2 * c + 1]) * (py - g->pts[2 * c + 1]);
                if (d < bd) { bd = d; best = c; }
            }
            e_grid += bd;
            const double lx = t->step * t->x[best] - g->pts[2 * best], ly = t->step * t->y[best] - g->pts[2 * best + 1];
            e_lut += lx * lx + ly * ly;
        }
        CHECK_MSG(e_lut < 0.01 * e_grid, "p2_b%d: int8 rounding MSE %g vs the grid's %g", b, e_lut / 40000, e_grid / 40000);
    }
}

/* The int8 tables of nf4 / af4 (KV_ACT_Q8_64NF kernels): within 1/254 of each code, and on Gaussian blocks their
 * rounding adds under 1 % to the format's own mean squared error. */
KV_TEST(cb4_int8_tables_are_close) {
    static const char *const names[] = {"nf4", "af4"};
    kv_error err = {0};
    enum { N = 64 * 256 };
    float *W = malloc(N * sizeof(float)), *wd = malloc(N * sizeof(float));
    uint8_t *packed = malloc(N);
    REQUIRE(W && wd && packed);
    fill_normal(W, N, 41, 1.0);
    for (size_t f = 0; f < KV_ARRAY_LEN(names); f++) {
        kv_format fmt;
        REQUIRE_OK(kv_format_get(names[f], &fmt, &err), &err);
        const float *code = f == 0 ? kv_nf4_code64 : kv_af4_code64;
        int8_t t[16];
        kv_cb4_table_i8(code, t);
        for (int c = 0; c < 16; c++) CHECK(fabs(t[c] / 127.0 - code[c]) <= 1.0 / 254.0 + 1e-9);
        REQUIRE_OK(fmt.quantize(&fmt, W, packed, 1, N, NULL, &err), &err);
        fmt.dequantize(&fmt, packed, wd, N);
        double e_fmt = 0, e_lut = 0;
        for (int64_t b = 0; b < N / 64; b++) {
            const uint8_t *p = packed + (size_t)b * KV_CB4_BYTES;
            float am;
            memcpy(&am, p, 4);
            for (int i = 0; i < 64; i++) {
                const int c = i & 1 ? p[4 + i / 2] & 0xF : p[4 + i / 2] >> 4;
                const double v = (double)am * t[c] / 127.0;
                e_fmt += ((double)wd[64 * b + i] - W[64 * b + i]) * ((double)wd[64 * b + i] - W[64 * b + i]);
                e_lut += (v - wd[64 * b + i]) * (v - wd[64 * b + i]);
            }
        }
        CHECK_MSG(e_lut < 0.01 * e_fmt, "%s: table rounding MSE %g vs the format's %g", names[f], e_lut / N, e_fmt / N);
    }
    free(W); free(wd); free(packed);
}

KV_TEST(qkernels_match_scalar_reference_on_random_data) {
    kv_error err = {0};
    const int64_t rows = 6, n = 1536;
    float *W = malloc((size_t)(rows * n) * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
    fill_normal(W, rows * n, 11, 0.02);
    fill_normal(x, n, 12, 1.0);
    for (int64_t i = 0; i < n; i += 97) x[i] *= 20.0f; /* outlier channels */
    for (size_t f = 0; f < KV_ARRAY_LEN(k_int_formats); f++) {
        kv_format fmt;
        REQUIRE_OK(kv_format_get(k_int_formats[f], &fmt, &err), &err);
        check_kernels(T, &fmt, W, rows, n, x, "random");
        /* rows of one block and of an odd number of blocks (the last block at the end of the buffer) */
        check_kernels(T, &fmt, W, rows, fmt.block, x, "one block");
        if (5 * fmt.block <= n) check_kernels(T, &fmt, W, rows, 5 * fmt.block, x, "five blocks");
    }
    free(W); free(x);
}

/* Blocks of zeros, of one value, and of extreme codes (every q8_0 code ±127, q4 codes 0 and 15). */
KV_TEST(qkernels_edge_blocks) {
    kv_error err = {0};
    const int64_t rows = 4, n = 512;
    float *W = calloc((size_t)(rows * n), sizeof(float)), *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        W[n + i] = 1.0f;
        W[2 * n + i] = (i & 1) ? 3.0f : -3.0f;
        W[3 * n + i] = (float)((i * 7) % 31) - 15.0f;
        x[i] = (i % 3 == 0) ? -1000.0f : (i % 3 == 1) ? 1e-3f : 0.0f;
    }
    for (size_t f = 0; f < KV_ARRAY_LEN(k_int_formats); f++) {
        kv_format fmt;
        REQUIRE_OK(kv_format_get(k_int_formats[f], &fmt, &err), &err);
        /* the all-zero row has Σ|w·x| = 0: skip it (check_kernels divides by it) */
        check_kernels(T, &fmt, W + n, rows - 1, n, x, "edge");
    }
    free(W); free(x);
}

KV_TEST(qkernels_on_proxy_layers) {
    kv_error err = {0};
    char path[512];
    kv_model_file *mf = NULL;
    if (kv_model_open(kv_test_shared(path, sizeof path, PROXY), &mf, &err) != KV_OK) SKIP("proxy-27m absent");
    kv_model *m = NULL;
    REQUIRE_OK(kv_model_load(mf, NULL, &m, &err), &err);
    const kv_linear_id which[] = {KV_LINEAR_Q, KV_LINEAR_DOWN};
    for (size_t w = 0; w < KV_ARRAY_LEN(which); w++) {
        const kv_weight *wt = kv_model_weight(m, 2, which[w]);
        REQUIRE(wt);
        const int64_t rows = 8, n = wt->cols;
        float *W = malloc((size_t)(rows * n) * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
        const size_t rb = kv_format_row_bytes(&wt->fmt, n);
        for (int64_t r = 0; r < rows; r++)
            kv_bf16_to_fp32_row((const uint16_t *)(const void *)((const uint8_t *)wt->data + (size_t)(r * 37) * rb),
                                W + r * n, (size_t)n);
        fill_normal(x, n, 5 + w, 1.0);
        for (size_t f = 0; f < KV_ARRAY_LEN(k_int_formats); f++) {
            kv_format fmt;
            REQUIRE_OK(kv_format_get(k_int_formats[f], &fmt, &err), &err);
            if (n % fmt.block == 0) check_kernels(T, &fmt, W, rows, n, x, kv_linear_name(which[w]));
        }
        free(W); free(x);
    }
    kv_model_free(m);
    kv_model_close(mf);
}

KV_TEST(act_quantize_codes_and_sums) {
    float x[512];
    fill_normal(x, 512, 9, 3.0);
    x[5] = 0;
    kv_act_q8_32 a[16];
    kv_act_quantize(KV_ACT_Q8_32, x, 512, a);
    kv_act_q8_256 b[2];
    kv_act_quantize(KV_ACT_Q8_256, x, 512, b);
    CHECK_EQ_INT(kv_act_row_bytes(KV_ACT_Q8_32, 512), sizeof a);
    CHECK_EQ_INT(kv_act_row_bytes(KV_ACT_Q8_256, 512), sizeof b);
    for (int blk = 0; blk < 16; blk++) {
        int s = 0, maxq = 0;
        for (int l = 0; l < 32; l++) {
            s += a[blk].q[l];
            maxq = abs(a[blk].q[l]) > maxq ? abs(a[blk].q[l]) : maxq;
            CHECK(fabsf(a[blk].d * a[blk].q[l] - x[32 * blk + l]) <= 0.5f * a[blk].d * 1.0001f);
        }
        CHECK_EQ_INT(s, a[blk].sum);
        CHECK_EQ_INT(maxq, 127);
    }
    for (int blk = 0; blk < 2; blk++)
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += b[blk].q[16 * g + l];
            CHECK_EQ_INT(s, b[blk].bsum[g]);
        }
    float z[32] = {0};
    kv_act_quantize(KV_ACT_Q8_32, z, 32, a);
    CHECK(a[0].d == 0.0f && a[0].sum == 0);
}

/* Every ISA's activation quantizer writes the scalar reference's bytes (blocks of noise, outliers, zeros, ties). */
KV_TEST(act_quantize_same_bytes_on_every_isa) {
    enum { N = 2048 };
    float *x = malloc(N * sizeof(float));
    REQUIRE(x);
    fill_normal(x, N, 21, 2.0);
    for (int i = 0; i < N; i += 131) x[i] *= 50.0f;
    for (int i = 256; i < 512; i++) x[i] = 0.0f;
    for (int i = 512; i < 544; i++) x[i] = (float)(i - 528) * 0.5f + 0.25f; /* x / d lands on halves */
    static const kv_act_kind kinds[] = {KV_ACT_Q8_32, KV_ACT_Q8_256, KV_ACT_Q8_64NF, KV_ACT_Q8_128P};
    for (size_t k = 0; k < KV_ARRAY_LEN(kinds); k++) {
        const size_t bytes = kv_act_row_bytes(kinds[k], N);
        uint8_t *ref = malloc(bytes), *got = malloc(bytes);
        REQUIRE(ref && got);
        kv_act_quantize_isa(KV_ISA_SCALAR, kinds[k], x, N, ref);
        for (int isa = KV_ISA_AVX2; isa <= (int)kv_cpu_isa_hw(); isa++) {
            memset(got, 0xA5, bytes);
            kv_act_quantize_isa((kv_isa)isa, kinds[k], x, N, got);
            CHECK_MSG(memcmp(ref, got, bytes) == 0, "activation kind %d: %s bytes differ from scalar", (int)kinds[k],
                      kv_isa_name((kv_isa)isa));
        }
        free(ref); free(got);
    }
    free(x);
}

/* The tile kernels (several weight rows x several tokens per call) give each pair's dot() bit for bit, for
 * every tile shape: tiling never changes a result. */
KV_TEST(qkernel_tiles_equal_row_dots) {
    kv_error err = {0};
    const int64_t rows = 5, n = 1536, ntok = 4;
    float *W = malloc((size_t)(rows * n) * sizeof(float)), *x = malloc((size_t)(ntok * n) * sizeof(float));
    REQUIRE(W && x);
    fill_normal(W, rows * n, 31, 0.02);
    fill_normal(x, ntok * n, 32, 1.0);
    for (size_t f = 0; f < KV_ARRAY_LEN(k_int_formats); f++) {
        kv_format fmt;
        REQUIRE_OK(kv_format_get(k_int_formats[f], &fmt, &err), &err);
        const size_t rb = kv_format_row_bytes(&fmt, n);
        uint8_t *packed = malloc(rb * (size_t)rows);
        REQUIRE(packed);
        REQUIRE_OK(fmt.quantize(&fmt, W, packed, rows, n, NULL, &err), &err);
        for (int isa = KV_ISA_SCALAR; isa <= 2 * (int)kv_cpu_isa_hw() + 1; isa++) {
            const kv_qkernel *k = kv_qkernel_find_act(&fmt, (kv_isa)(isa / 2), isa & 1); /* both act kinds */
            if (isa & 1) REQUIRE(k);
            if (!k || !k->tile) continue;
            const size_t ab = kv_act_row_bytes(k->act, n);
            uint8_t *act = malloc(ab * (size_t)ntok);
            REQUIRE(act);
            for (int64_t t = 0; t < ntok; t++) kv_act_quantize(k->act, x + t * n, n, act + (size_t)t * ab);
            float want[5 * 4], got[5 * 4];
            for (int64_t t = 0; t < ntok; t++)
                for (int64_t r = 0; r < rows; r++) want[t * rows + r] = k->dot(n, packed + (size_t)r * rb, act + (size_t)t * ab);
            int bad = 0;
            for (int nr = 1; nr <= k->tile_rows; nr++)
                for (int nt = 1; nt <= k->tile_toks && nt <= ntok; nt++) {
                    for (int i = 0; i < 20; i++) got[i] = NAN;
                    k->tile(n, packed, rb, nr, act, ab, nt, got, rows);
                    for (int t = 0; t < nt; t++)
                        for (int r = 0; r < nr; r++) bad += memcmp(&got[t * rows + r], &want[t * rows + r], sizeof(float)) != 0;
                }
            CHECK_MSG(bad == 0, "%s on %s: %d tile results differ from dot()", fmt.name, kv_isa_name((kv_isa)(isa / 2)), bad);
            free(act);
        }
        free(packed);
    }
    free(W); free(x);
}

/* act_q8 matmul: prefill (many tokens) gives each token's decode result bit for bit, for 1 or 2 threads, with
 * and without a workspace; formats without an integer kernel keep the exact path. */
KV_TEST(weight_matmul_act_q8_is_deterministic) {
    kv_error err = {0};
    const int64_t rows = 300, cols = 512, ntok = 13;
    float *W = malloc((size_t)(rows * cols) * sizeof(float)), *x = malloc((size_t)(ntok * cols) * sizeof(float));
    float *y = malloc((size_t)(ntok * rows) * sizeof(float)), *y1 = malloc((size_t)rows * sizeof(float));
    fill_normal(W, rows * cols, 1, 0.05);
    fill_normal(x, ntok * cols, 2, 1.0);
    kv_pool *pool = kv_pool_create(2);
    kv_matmul_ws ws = {0};
    const char *names[] = {"q4_0", "q8_0", "q4_k", "q5_k", "q6_k", "nf4", "mxfp4", "nvfp4", "int4_g128_asym",
                           "int3_g128_sym", "higgs_p2_b4", "nf4_dq", "int4_g32_sym"};
    for (size_t f = 0; f < KV_ARRAY_LEN(names); f++) {
        kv_format fmt;
        REQUIRE_OK(kv_format_get(names[f], &fmt, &err), &err);
        const size_t rb = kv_format_row_bytes(&fmt, cols);
        uint8_t *packed = malloc(rb * (size_t)rows);
        REQUIRE_OK(fmt.quantize(&fmt, W, packed, rows, cols, NULL, &err), &err);
        kv_weight w = {.fmt = fmt, .rows = rows, .cols = cols, .data = packed};
        const kv_matmul_opts o = {.act_q8 = 1, .ws = &ws}, o_nows = {.act_q8 = 1};
        REQUIRE_OK(kv_weight_matmul_opt(&w, x, ntok, y, &o, pool, &err), &err);
        for (int64_t t = 0; t < ntok; t++) {
            REQUIRE_OK(kv_weight_matmul_opt(&w, x + t * cols, 1, y1, t & 1 ? &o : &o_nows, t % 3 ? pool : NULL, &err),
                       &err);
            if (kv_qkernel_find(&fmt, kv_cpu_isa())) /* the fp32 path's GEMM and row dots sum in other orders */
                CHECK_MSG(memcmp(y1, y + t * rows, (size_t)rows * sizeof(float)) == 0, "%s token %lld", fmt.name,
                          (long long)t);
        }
        const kv_qkernel *qk = kv_qkernel_find(&fmt, kv_cpu_isa());
        CHECK_STR(kv_weight_kernel_name(&w, 1), !qk ? "fp32" : qk->act == KV_ACT_F32 ? "fp32-lut" : "int8-dot");
        CHECK_STR(kv_weight_kernel_name(&w, 0), kv_qkernel_find_act(&fmt, kv_cpu_isa(), 0) ? "fp32-lut" : "fp32");
        free(packed);
    }
    kv_matmul_ws_free(&ws);
    kv_pool_destroy(pool);
    free(W); free(x); free(y); free(y1);
}

/* Every fp32 table this CPU can run gives the generic table's results within float rounding (the AVX-512
 * micro-kernel fuses multiply-adds, the generic one rounds twice). */
KV_TEST(f32_kernel_tables_agree) {
    const kv_f32_kernels *tabs[] = {&kv_f32_kernels_generic, &kv_f32_kernels_avx2, &kv_f32_kernels_avx512};
    const int ntab = 1 + KV_MIN((int)kv_cpu_isa_hw(), (int)KV_ISA_AVX512);
    float a[1000], b[1000], s0[1000], s1[1000];
    fill_normal(a, 1000, 3, 1.0);
    fill_normal(b, 1000, 4, 1.0);
    const float d0 = tabs[0]->dot(a, b, 1000);
    for (int t = 1; t < ntab; t++) {
        CHECK_NEAR(tabs[t]->dot(a, b, 1000), d0, 1e-3);
        memcpy(s0, a, sizeof a);
        memcpy(s1, a, sizeof a);
        tabs[0]->softmax_scaled(s0, 1000, 0.7f);
        tabs[t]->softmax_scaled(s1, 1000, 0.7f);
        for (int i = 0; i < 1000; i++) CHECK_NEAR(s1[i], s0[i], 1e-6 * fmax(1.0, s0[i] * 1e3));
        CHECK_NEAR(tabs[t]->sum_exp_shifted(a, 1000, 1.0f) / tabs[0]->sum_exp_shifted(a, 1000, 1.0f), 1.0, 1e-5);
    }
    CHECK(kv_isa_parse("avx2") == KV_ISA_AVX2 && kv_isa_parse("nope") == -1);
}

/* bench kernels validates its arguments before any work (the measurements themselves live in bench/). */
KV_TEST(bench_kernels_refuses_bad_arguments) {
    char *out = NULL;
    int rc = kv_test_run_cli("bench kernels --format q4_0,nope", &out);
    CHECK(rc != 0 && out && strstr(out, "nope"));
    free(out);
    rc = kv_test_run_cli("bench kernels --act-dot q4", &out);
    CHECK(rc != 0 && out && strstr(out, "--act-dot"));
    free(out);
    rc = kv_test_run_cli("bench kernels --shape 4096", &out);
    CHECK(rc != 0 && out && strstr(out, "--shape"));
    free(out);
}

KV_TEST(bench_run_refuses_bad_arguments) {
    char *out = NULL;
    int rc = kv_test_run_cli("bench run", &out);
    CHECK(rc == 2 && out && strstr(out, "MODEL"));
    free(out);
    rc = kv_test_run_cli("bench run model.gguf --gen 0", &out);
    CHECK(rc == 2 && out && strstr(out, "--gen"));
    free(out);
    rc = kv_test_run_cli("bench run model.gguf --threads 1,x", &out);
    CHECK(rc == 2 && out && strstr(out, "--threads"));
    free(out);
    rc = kv_test_run_cli("bench run /nonexistent/model.gguf --reps 1", &out);
    CHECK(rc == 1 && out && strstr(out, "nonexistent"));
    free(out);
}

/* PPL (JSON "ppl") of `kvant eval MODEL` on 2 windows of 64 tokens, with --act-dot MODE; NAN on failure. */
static double eval_ppl(kv_test_ctx *T, const char *model, const char *text, const char *mode) {
    char args[2400], *out = NULL;
    snprintf(args, sizeof args, "eval %s --text %s --ctx 64 --chunks 2 --json -t 2 --act-dot %s", model, text, mode);
    const int rc = kv_test_run_cli(args, &out);
    const char *p = out ? strstr(out, "\"ppl\":") : NULL;
    const double ppl = rc == 0 && p ? strtod(p + 6, NULL) : NAN;
    CHECK_MSG(isfinite(ppl), "eval %s --act-dot %s: rc %d: %s", model, mode, rc, out ? out : "");
    free(out);
    return ppl;
}

/* The proxy quantized to each format with a packed kernel: eval through the kernels (--act-dot q8) gives the PPL
 * of the exact path (--act-dot f32: dequantized fp32 GEMM, or the fp32-activation kernels of nf4 / higgs) within
 * the 8-bit activations' effect (and nf4's / higgs' int8 tables). */
KV_TEST(eval_ppl_through_packed_kernels_matches_reference) {
    char model[512], text[512], args[2400], gguf[700];
    char *out = NULL;
    kv_test_shared(model, sizeof model, PROXY);
    if (!kv_test_exists(model)) SKIP("proxy-27m absent");
    kv_test_shared(text, sizeof text, "data/wikitext2-test.txt");
    static const struct { const char *fmt; double tol; } k[] = {
        {"nf4", 1e-2}, {"higgs_p2_b4", 1e-2}, {"int4_g128_asym", 1e-2}, {"mxfp4", 1e-2}};
    for (size_t i = 0; i < KV_ARRAY_LEN(k); i++) {
        snprintf(gguf, sizeof gguf, "%s/%s.gguf", kv_test_tmpdir(), k[i].fmt);
        snprintf(args, sizeof args, "quantize %s -o %s --format %s --pure --quiet", model, gguf, k[i].fmt);
        const int rc = kv_test_run_cli(args, &out);
        CHECK_MSG(rc == 0, "%s: %s", args, out ? out : "");
        free(out);
        out = NULL;
        if (rc) continue;
        const double ref = eval_ppl(T, gguf, text, "f32"), got = eval_ppl(T, gguf, text, "q8");
        CHECK_MSG(fabs(got / ref - 1.0) < k[i].tol, "%s: PPL %.6f through the kernels, %.6f exact", k[i].fmt, got,
                  ref);
    }
}
