/* test_gpu.c — the CUDA backend (src/kernels/cuda): the GPU weight layout and its reference decoder against every
 * supported format's dequantize (runs everywhere), and, in a `make cuda` build with a device, the kernels against
 * the CPU reference dot products (kvant's dequantize + a double dot) on random data and on proxy-27m's layers.
 * Tolerances (relative Frobenius error ||y - ref|| / ||ref||): the kernel forms each weight in fp16 and
 * multiplies fp16 activations, so against the exact reference it is ~1e-3 (limit 1e-2); against the emulation of
 * its own fp16 weights (kv_gpu_pack_decode_row) only the fp32 accumulation order differs (limit 1e-5). */
#include "test.h"
#include "core/core.h"
#include "kernels/cuda/pack.h"
#ifdef KV_HAVE_CUDA
#include "kernels/cuda/kvcuda.h"
#endif

static const char *const k_gpu_formats[] = {
    "int4_g128_sym", "int4_g32_asym", "int4_g64_sym_f32", "int4_g0_asym", "int3_g128_sym", "int3_g64_asym",
    "int2_g32_asym", "q4_0", "q4_1", "q4_k", "iq4_nl", "nf4", "af4", "fp4_e2m1", "mxfp4", "mxfp4_ocp", "nvfp4",
    "nvfp4_ts", "higgs_p1_b2", "higgs_p1_b3", "higgs_p1_b4", "higgs_p2_b2", "higgs_p2_b3", "higgs_p2_b4"};

static float *random_matrix(int64_t rows, int64_t cols, uint64_t seed, float scale) {
    float *m = malloc(sizeof(float) * (size_t)(rows * cols));
    kv_rng r;
    kv_rng_seed(&r, seed);
    for (int64_t i = 0; i < rows * cols; i++) m[i] = (float)(scale * kv_rng_normal(&r));
    return m;
}

static void *quantize_rows(const kv_format *f, const float *w, int64_t rows, int64_t cols, kv_error *err) {
    void *q = malloc(kv_format_row_bytes(f, cols) * (size_t)rows);
    if (q && f->quantize(f, w, q, rows, cols, NULL, err) != KV_OK) {
        free(q);
        return NULL;
    }
    return q;
}

KV_TEST(gpu_pack_decodes_like_the_format) {
    const int64_t rows = 40, cols = 512; /* 40: the last 16-row tile is padded */
    float *w = random_matrix(rows, cols, 3, 0.02f);
    float *ref = malloc(sizeof(float) * (size_t)cols), *dec = malloc(sizeof(float) * (size_t)cols);
    for (size_t fi = 0; fi < KV_ARRAY_LEN(k_gpu_formats); fi++) {
        kv_error err;
        kv_format f;
        REQUIRE_OK(kv_format_get(k_gpu_formats[fi], &f, &err), &err);
        CHECK_MSG(kv_gpu_pack_supported(&f), "%s not supported", f.name);
        void *q = quantize_rows(&f, w, rows, cols, &err);
        REQUIRE(q);
        kv_gpu_pack p;
        REQUIRE_OK(kv_gpu_pack_build(&f, q, rows, cols, &p, &err), &err);
        CHECK_EQ_INT(p.rows_pad, 48);
        CHECK_EQ_INT(p.format_bytes, kv_format_row_bytes(&f, cols) * (size_t)rows);
        double worst = 0;
        for (int64_t r = 0; r < rows; r++) {
            f.dequantize(&f, (const uint8_t *)q + (size_t)r * kv_format_row_bytes(&f, cols), ref, cols);
            kv_gpu_pack_decode_row(&p, r, dec);
            float amax = 0;
            for (int64_t k = 0; k < cols; k++) amax = fmaxf(amax, fabsf(ref[k]));
            for (int64_t k = 0; k < cols; k++) worst = fmax(worst, fabs((double)dec[k] - ref[k]) / (amax + 1e-12));
        }
        /* fp16 table value, fp16 scale and offset, one fp16 rounding of the result: a few 2^-11 of the row's range */
        CHECK_MSG(worst < 3e-3, "%s: decoded GPU layout differs from dequantize by %.3g of the row max", f.name, worst);
        kv_gpu_pack_free(&p);
        free(q);
    }
    free(w);
    free(ref);
    free(dec);
}

KV_TEST(gpu_pack_refuses_what_it_cannot_hold) {
    kv_error err;
    kv_format f;
    REQUIRE_OK(kv_format_get("q6_k", &f, &err), &err);
    CHECK(!kv_gpu_pack_supported(&f));
    kv_gpu_pack p;
    uint8_t dummy[1024] = {0};
    CHECK_EQ_INT(kv_gpu_pack_build(&f, dummy, 1, 256, &p, &err), KV_EUNSUPPORTED);
    CHECK(strstr(err.message, "q6_k") != NULL);
    REQUIRE_OK(kv_format_get("higgs_p2_b3", &f, &err), &err);
    void *q = calloc(1, kv_format_row_bytes(&f, 384));
    CHECK_EQ_INT(kv_gpu_pack_build(&f, q, 1, 384, &p, &err), KV_EUNSUPPORTED); /* 384: not a multiple of 256 */
    CHECK(strstr(err.message, "256") != NULL);
    free(q);
    REQUIRE_OK(kv_format_get("int8_g0_sym_f32", &f, &err), &err);
    CHECK(kv_gpu_pack8_supported(&f));
    REQUIRE_OK(kv_format_get("int8_g128_sym", &f, &err), &err);
    CHECK(!kv_gpu_pack8_supported(&f));
}

KV_TEST(gpu_pack8_keeps_the_weights) {
    const int64_t rows = 8, cols = 256;
    float *w = random_matrix(rows, cols, 5, 0.05f);
    float *ref = malloc(sizeof(float) * (size_t)cols);
    const char *names[] = {"int8_g0_sym_f32", "int8_g0_sym", "fp8_e4m3"};
    for (int i = 0; i < 3; i++) {
        kv_error err;
        kv_format f;
        REQUIRE_OK(kv_format_get(names[i], &f, &err), &err);
        void *q = quantize_rows(&f, w, rows, cols, &err);
        REQUIRE(q);
        kv_gpu_pack8 p;
        REQUIRE_OK(kv_gpu_pack8_build(&f, q, rows, cols, &p, &err), &err);
        for (int64_t r = 0; r < rows; r++) {
            f.dequantize(&f, (const uint8_t *)q + (size_t)r * kv_format_row_bytes(&f, cols), ref, cols);
            for (int64_t k = 0; k < cols; k++) {
                const float v = p.fp8 ? kv_gpu_e4m3_value((uint8_t)p.q[r * cols + k]) : (float)p.q[r * cols + k];
                CHECK_NEAR(v * p.scale[r], ref[k], 1e-6 * fabs(ref[k]) + 1e-12);
            }
        }
        kv_gpu_pack8_free(&p);
        free(q);
    }
    /* per-token activation quantization: int8 codes within +-127 and q * s within s / 2 of x */
    float x[256];
    int8_t qa[256];
    for (int k = 0; k < 256; k++) x[k] = w[k] * (k == 7 ? 40.0f : 1.0f);
    const float s = kv_gpu_quant_act_row(x, 256, 0, qa);
    for (int k = 0; k < 256; k++) CHECK(fabsf(qa[k] * s - x[k]) <= 0.5f * s * 1.0001f);
    free(w);
    free(ref);
}

#ifdef KV_HAVE_CUDA
static double rel_err(const float *y, const double *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(y[i])) return INFINITY;
        num += (y[i] - ref[i]) * (y[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den + 1e-300));
}

/* GPU y = x W^T for m tokens vs the CPU: exact (dequantize, double dot) and the kernel's own fp16 weights. */
static void check_wq(kv_test_ctx *T, const kv_format *f, const void *q, int64_t rows, int64_t cols, int m, uint64_t seed,
                     const char *what) {
    kv_error err;
    kv_gpu_pack p;
    REQUIRE_OK(kv_gpu_pack_build(f, q, rows, cols, &p, &err), &err);
    kv_cuda_wq *w = NULL;
    REQUIRE_OK(kv_cuda_wq_upload(&p, &w, &err), &err);
    float *xf = random_matrix(m, cols, seed, 1.0f);
    uint16_t *xh = malloc(2 * (size_t)(m * cols));
    kv_fp32_to_fp16_row(xf, xh, (size_t)(m * cols));
    kv_fp16_to_fp32_row(xh, xf, (size_t)(m * cols)); /* the reference sees the fp16 activations */
    void *xd = NULL;
    float *yd = NULL;
    REQUIRE_OK(kv_cuda_malloc(&xd, 2 * (size_t)(m * cols), &err), &err);
    REQUIRE_OK(kv_cuda_malloc((void **)&yd, 4 * (size_t)(m * rows), &err), &err);
    REQUIRE_OK(kv_cuda_to_device(xd, xh, 2 * (size_t)(m * cols), &err), &err);
    float *poison = malloc(4 * (size_t)(m * rows));
    for (int64_t i = 0; i < m * rows; i++) poison[i] = NAN;
    float *y = malloc(4 * (size_t)(m * rows)), *wr = malloc(4 * (size_t)cols), *wd = malloc(4 * (size_t)cols);
    double *ref = malloc(8 * (size_t)(m * rows)), *emu = malloc(8 * (size_t)(m * rows));
    for (int64_t r = 0; r < rows; r++) {
        f->dequantize(f, (const uint8_t *)q + (size_t)r * kv_format_row_bytes(f, cols), wr, cols);
        kv_gpu_pack_decode_row(&p, r, wd);
        for (int i = 0; i < m; i++) {
            double a = 0, b = 0;
            for (int64_t k = 0; k < cols; k++) a += (double)wr[k] * xf[i * cols + k], b += (double)wd[k] * xf[i * cols + k];
            ref[i * rows + r] = a, emu[i * rows + r] = b;
        }
    }
    const int variants[] = {0,
                            KV_WQ_DEPTH2,
                            KV_WQ_DEPTH4,
                            KV_WQ_DEPTH2 | KV_WQ_TABLE,
                            KV_WQ_DEPTH4 | KV_WQ_TABLE,
                            KV_WQ_STAGED | KV_WQ_DEPTH2,
                            KV_WQ_STAGED | KV_WQ_DEPTH4,
                            KV_WQ_STAGED | KV_WQ_DEPTH4 | KV_WQ_TABLE};
    for (int v = 0; v < (int)KV_ARRAY_LEN(variants); v++) {
        REQUIRE_OK(kv_cuda_to_device(yd, poison, 4 * (size_t)(m * rows), &err), &err);
        REQUIRE_OK(kv_cuda_wq_matmul(w, xd, m, yd, variants[v], NULL, &err), &err);
        REQUIRE_OK(kv_cuda_sync(&err), &err);
        REQUIRE_OK(kv_cuda_to_host(y, yd, 4 * (size_t)(m * rows), &err), &err);
        const double e_ref = rel_err(y, ref, m * rows), e_emu = rel_err(y, emu, m * rows);
        CHECK_MSG(e_ref < 1e-2, "%s %s %lldx%lld m=%d variant=%d: rel err vs dequantize %.3g", what, f->name, (long long)rows,
                  (long long)cols, m, variants[v], e_ref);
        CHECK_MSG(e_emu < 1e-5, "%s %s %lldx%lld m=%d variant=%d: rel err vs the fp16 emulation %.3g", what, f->name,
                  (long long)rows, (long long)cols, m, variants[v], e_emu);
    }
    kv_cuda_free(xd);
    kv_cuda_free(yd);
    kv_cuda_wq_free(w);
    kv_gpu_pack_free(&p);
    free(xf); free(xh); free(poison); free(y); free(wr); free(wd); free(ref); free(emu);
}

KV_TEST(gpu_wq_matches_cpu_random) {
    if (kv_cuda_device_count() < 1) SKIP("no CUDA device");
    const int64_t rows = 300, cols = 1024;
    float *wf = random_matrix(rows, cols, 11, 0.02f), *wl = random_matrix(40, 10240, 12, 0.02f);
    const int batches[] = {1, 3, 8, 9, 16};
    for (size_t fi = 0; fi < KV_ARRAY_LEN(k_gpu_formats); fi++) {
        kv_error err;
        kv_format f;
        REQUIRE_OK(kv_format_get(k_gpu_formats[fi], &f, &err), &err);
        void *q = quantize_rows(&f, wf, rows, cols, &err);
        REQUIRE(q);
        for (size_t b = 0; b < KV_ARRAY_LEN(batches); b++) check_wq(T, &f, q, rows, cols, batches[b], 100 + b, "random");
        free(q);
        /* a long row: 10 chunks per warp, so the ring of chunks in flight wraps and ends part-full */
        q = quantize_rows(&f, wl, 40, 10240, &err);
        REQUIRE(q);
        check_wq(T, &f, q, 40, 10240, 1, 200, "random long");
        check_wq(T, &f, q, 40, 10240, 16, 201, "random long");
        free(q);
    }
    free(wf);
    free(wl);
    /* many 128-row blocks: the staged kernel runs without split-K (one block per row block, no cluster) */
    const char *tall[] = {"int4_g128_sym", "q4_k", "nf4", "higgs_p2_b3", "nvfp4_ts"};
    float *wt = random_matrix(34000, 256, 13, 0.02f);
    for (size_t fi = 0; fi < KV_ARRAY_LEN(tall); fi++) {
        kv_error err;
        kv_format f;
        REQUIRE_OK(kv_format_get(tall[fi], &f, &err), &err);
        void *q = quantize_rows(&f, wt, 34000, 256, &err);
        REQUIRE(q);
        check_wq(T, &f, q, 34000, 256, 1, 300, "random tall");
        check_wq(T, &f, q, 34000, 256, 13, 301, "random tall");
        free(q);
    }
    free(wt);
}

KV_TEST(gpu_wq_matches_cpu_proxy_layers) {
    if (kv_cuda_device_count() < 1) SKIP("no CUDA device");
    /* KVANT_GPU_PROXY: a safetensors file holding these tensors (a device machine has no ../shared) */
    char model[1024];
    const char *env = getenv("KVANT_GPU_PROXY");
    if (env && *env) snprintf(model, sizeof model, "%s", env);
    else kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("no proxy-27m (set KVANT_GPU_PROXY or KVANT_SHARED)");
    kv_error err;
    kv_model_file *mf = NULL;
    REQUIRE_OK(kv_model_open(model, &mf, &err), &err);
    const char *tensors[] = {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_gate.weight",
                             "blk.5.ffn_down.weight", "blk.5.attn_output.weight", "blk.5.ffn_up.weight"};
    const char *fmts[] = {"int4_g128_sym", "q4_k", "nf4", "higgs_p2_b3", "mxfp4", "nvfp4_ts", "int3_g128_sym"};
    for (size_t ti = 0; ti < KV_ARRAY_LEN(tensors); ti++) {
        const kv_tensor *t = kv_model_find(mf, tensors[ti]);
        REQUIRE(t);
        const int64_t rows = t->shape[0], cols = t->shape[1];
        float *wf = malloc(sizeof(float) * (size_t)(rows * cols));
        REQUIRE_OK(kv_tensor_to_f32(t, wf, &err), &err);
        for (size_t fi = 0; fi < KV_ARRAY_LEN(fmts); fi++) {
            kv_format f;
            REQUIRE_OK(kv_format_get(fmts[fi], &f, &err), &err);
            void *q = quantize_rows(&f, wf, rows, cols, &err);
            REQUIRE(q);
            check_wq(T, &f, q, rows, cols, 1, 7, tensors[ti]);
            check_wq(T, &f, q, rows, cols, 16, 8, tensors[ti]);
            free(q);
        }
        free(wf);
    }
    kv_model_close(mf);
}

KV_TEST(gpu_w8a8_matches_cpu) {
    if (kv_cuda_device_count() < 1) SKIP("no CUDA device");
    const int64_t rows = 256, cols = 1024; /* 8 k slabs: every stage ring wraps */
    float *wf = random_matrix(rows, cols, 21, 0.03f);
    const char *names[] = {"int8_g0_sym_f32", "fp8_e4m3"};
    const int64_t ms[] = {1, 37, 130};
    for (int ni = 0; ni < 2; ni++) {
        kv_error err;
        kv_format f;
        REQUIRE_OK(kv_format_get(names[ni], &f, &err), &err);
        void *q = quantize_rows(&f, wf, rows, cols, &err);
        REQUIRE(q);
        kv_gpu_pack8 p;
        REQUIRE_OK(kv_gpu_pack8_build(&f, q, rows, cols, &p, &err), &err);
        kv_cuda_w8 *w = NULL;
        REQUIRE_OK(kv_cuda_w8_upload(&p, &w, &err), &err);
        float *wdq = malloc(4 * (size_t)(rows * cols));
        for (int64_t r = 0; r < rows; r++)
            f.dequantize(&f, (const uint8_t *)q + (size_t)r * kv_format_row_bytes(&f, cols), wdq + r * cols, cols);
        for (size_t mi = 0; mi < KV_ARRAY_LEN(ms); mi++) {
            const int64_t m = ms[mi];
            float *xf = random_matrix(m, cols, 30 + mi, 1.0f);
            for (int64_t i = 0; i < m; i++) xf[i * cols + (i * 13) % cols] *= 20.0f; /* an outlier per token */
            uint16_t *xh = malloc(2 * (size_t)(m * cols));
            kv_fp32_to_fp16_row(xf, xh, (size_t)(m * cols));
            kv_fp16_to_fp32_row(xh, xf, (size_t)(m * cols));
            void *xd = NULL, *yd = NULL, *ws = NULL;
            REQUIRE_OK(kv_cuda_malloc(&xd, 2 * (size_t)(m * cols), &err), &err);
            REQUIRE_OK(kv_cuda_malloc(&yd, 2 * (size_t)(m * rows), &err), &err);
            REQUIRE_OK(kv_cuda_malloc(&ws, kv_cuda_w8_workspace(w, m), &err), &err);
            REQUIRE_OK(kv_cuda_to_device(xd, xh, 2 * (size_t)(m * cols), &err), &err);
            /* every kernel variant (kv_cuda_w8_variant), the default included */
            for (int v = KV_W8_AUTO; v <= KV_W8_MMA_SYNC; v++) {
                if (p.fp8 && v != KV_W8_AUTO && v != KV_W8_MMA_SYNC) { /* fp8 has mma.sync only */
                    CHECK(kv_cuda_w8_matmul(w, xd, m, yd, ws, v, NULL, &err) == KV_EUNSUPPORTED);
                    continue;
                }
                uint16_t *yh = malloc(2 * (size_t)(m * rows));
                for (int64_t i = 0; i < m * rows; i++) yh[i] = 0x7FC0; /* bf16 NaN */
                REQUIRE_OK(kv_cuda_to_device(yd, yh, 2 * (size_t)(m * rows), &err), &err);
                REQUIRE_OK(kv_cuda_w8_matmul(w, xd, m, yd, ws, v, NULL, &err), &err);
                REQUIRE_OK(kv_cuda_sync(&err), &err);
                REQUIRE_OK(kv_cuda_to_host(yh, yd, 2 * (size_t)(m * rows), &err), &err);
                int8_t *xq = malloc((size_t)cols);
                double worst_emu = 0, num = 0, den = 0, xnum = 0, xden = 0;
                int nonfinite = 0;
                for (int64_t i = 0; i < m; i++) {
                    const float sx = kv_gpu_quant_act_row(xf + i * cols, cols, p.fp8, xq);
                    for (int64_t k = 0; k < cols; k++) { /* the per-token quantization's own error */
                        const double xa = (p.fp8 ? kv_gpu_e4m3_value((uint8_t)xq[k]) : xq[k]) * (double)sx;
                        xnum += (xa - xf[i * cols + k]) * (xa - xf[i * cols + k]);
                        xden += (double)xf[i * cols + k] * xf[i * cols + k];
                    }
                    for (int64_t r = 0; r < rows; r++) {
                        double e = 0, exact = 0;
                        for (int64_t k = 0; k < cols; k++) {
                            const double xa = p.fp8 ? kv_gpu_e4m3_value((uint8_t)xq[k]) : xq[k];
                            const double wb = p.fp8 ? kv_gpu_e4m3_value((uint8_t)p.q[r * cols + k]) : p.q[r * cols + k];
                            e += xa * wb;
                            exact += (double)xf[i * cols + k] * wdq[r * cols + k];
                        }
                        e *= (double)sx * p.scale[r];
                        const float got = kv_bf16_to_fp32(yh[i * rows + r]);
                        if (!isfinite(got)) nonfinite++;
                        /* bf16 output: within 2^-8 of the emulated value (plus accumulation noise for fp8) */
                        worst_emu = fmax(worst_emu, fabs(got - e) / (fabs(e) + 1e-3 * sx * p.scale[r] * cols));
                        num += (got - exact) * (got - exact);
                        den += exact * exact;
                    }
                }
                CHECK_MSG(nonfinite == 0, "%s m=%lld variant %d: %d outputs not written / not finite", f.name, (long long)m, v, nonfinite);
                CHECK_MSG(worst_emu < 8e-3, "%s m=%lld variant %d: vs the emulated per-token quantization: %.3g", f.name, (long long)m, v, worst_emu);
                /* against the unquantized activations the error is the activation quantization's (an outlier of 20x
                 * per token makes the int8 step amax/127 coarse): at most twice its relative size, plus the weights' */
                const double x_rel = sqrt(xnum / xden);
                CHECK_MSG(sqrt(num / den) < 2.0 * x_rel + 1e-3, "%s m=%lld variant %d: vs the fp reference: rel err %.3g (activation "
                          "quantization alone %.3g)", f.name, (long long)m, v, sqrt(num / den), x_rel);
                free(xq); free(yh);
            }
            free(xh); free(xf);
            kv_cuda_free(xd); kv_cuda_free(yd); kv_cuda_free(ws);
        }
        free(wdq);
        kv_cuda_w8_free(w);
        kv_gpu_pack8_free(&p);
        free(q);
    }
    free(wf);
}
#else
KV_TEST(gpu_kernels_need_a_cuda_build) { SKIP("built without CUDA (make cuda)"); }
#endif
