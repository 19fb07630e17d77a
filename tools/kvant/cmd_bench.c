/* cmd_bench.c — `kvant bench matmul|prefill`: speed of the forward pass's kernels (docs/bench.md). Numbers
 * live here and in bench/, never in tests. matmul: kvant's blocked GEMM (fp32 weights and the bf16 weight
 * seam) against OpenBLAS sgemm on the model's shapes, GFLOP/s, in one run; prefill: tokens/s of a full
 * window through the model with 1 and 2 threads. */
#include "cli.h"
#include "fwd_cli.h"
#include "core/core.h"
#include "kernels/cpu/matmul.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char k_usage[] =
    "usage: kvant bench matmul [--tokens M] [--threads LIST] [--reps R] [--json]\n"
    "       kvant bench kernels [--format F,...] [--threads N] [--json]   (kvant bench kernels --help)\n"
    "       kvant bench kernels --gpu [--json] ... (CUDA build: see kvant bench kernels --gpu --help)\n"
    "       kvant bench run MODEL [--prompt P] [--gen G] [--threads LIST] [--json]   (kvant bench run --help)\n"
    "       kvant bench prefill MODEL [--ctx N] [--threads LIST] [--reps R] [--bf16-dot] [--json]\n"
    "\n"
    "matmul   GFLOP/s of C[M x N] = A[M x K] * W[N x K]^T on proxy-27m's linear shapes (M = tokens, default 512):\n"
    "         kvant's GEMM with fp32 weights, kvant's weight seam on bf16 rows (dequantized per tile), the\n"
    "         bf16-dot path (activations rounded to bf16, AVX512-BF16), and OpenBLAS cblas_sgemm when kvant\n"
    "         was built with it. Best of R runs (default 5).\n"
    "prefill  tokens/s of one window of N tokens (default 512) through MODEL, logits for every token; best of R\n"
    "         runs (default 3). Also tokens per CPU-second (process CPU time), steadier on a busy machine.\n"
    "         --bf16-dot: bf16 weights x bf16-rounded activations (see kvant eval --help).\n"
    "  --threads LIST   comma-separated thread counts (default 1,2)\n"
    "  --json           one JSON object with every measurement\n";

typedef struct shape { const char *name; int64_t n, k; } shape;

static int bench_matmul(int argc, char **argv) {
    long long M = 512, reps = 5;
    long long threads[8] = {1, 2};
    int nthr = 2, json = 0;
    const char *v;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--tokens", "-m", &v)) {
            if (kv_cli_parse_int(v, 1, 1 << 16, &M)) return kv_cli_usage("bench", "--tokens needs 1..65536");
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if ((nthr = kv_cli_parse_int_list(v, 1, 256, threads, 8)) <= 0) return kv_cli_usage("bench", "--threads needs a list like 1,2");
        } else if (kv_cli_opt(argc, argv, &i, "--reps", NULL, &v)) {
            if (kv_cli_parse_int(v, 1, 1000, &reps)) return kv_cli_usage("bench", "--reps needs 1..1000");
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else {
            return kv_cli_usage("bench", "unknown argument '%s'", argv[i]);
        }
    }
    static const shape shapes[] = {{"attn_q/o 512x512", 512, 512}, {"attn_k/v 256x512", 256, 512},
                                   {"ffn_gate/up 1536x512", 1536, 512}, {"ffn_down 512x1536", 512, 1536},
                                   {"output 8192x512", 8192, 512}};
    kv_error err;
    kv_error_clear(&err);
    kv_jw w;
    if (json) {
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "kernel"); kv_jw_str(&w, kv_gemm_kernel_name());
        kv_jw_key(&w, "openblas"); kv_jw_bool(&w, kv_have_openblas());
        kv_jw_key(&w, "tokens"); kv_jw_int(&w, M);
        kv_jw_key(&w, "results");
        kv_jw_arr_begin(&w);
    } else {
        printf("kvant GEMM kernel: %s; OpenBLAS: %s; M = %lld tokens; GFLOP/s (best of %lld)\n", kv_gemm_kernel_name(),
               kv_have_openblas() ? "yes" : "no", M, reps);
        printf("%-22s %7s %10s %10s %10s %10s\n", "shape (N x K)", "threads", "kvant f32", "kvant bf16", "bf16-dot",
               "openblas");
    }
    kv_rng r;
    kv_rng_seed(&r, 1);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t N = shapes[s].n, K = shapes[s].k;
        float *A = malloc((size_t)(M * K) * sizeof(float)), *B = malloc((size_t)(N * K) * sizeof(float));
        float *C = malloc((size_t)(M * N) * sizeof(float));
        uint16_t *Bh = malloc((size_t)(N * K) * sizeof(uint16_t));
        if (!A || !B || !C || !Bh) { free(A); free(B); free(C); free(Bh); kv_fail(&err, KV_ENOMEM, "out of memory"); return kv_cli_fail("bench", &err); }
        for (int64_t i = 0; i < M * K; i++) A[i] = (float)(kv_rng_uniform(&r) - 0.5);
        for (int64_t i = 0; i < N * K; i++) B[i] = (float)(kv_rng_uniform(&r) - 0.5);
        kv_fp32_to_bf16_row(B, Bh, (size_t)(N * K));
        kv_weight wt = {.rows = N, .cols = K, .data = Bh};
        kv_format_get("bf16", &wt.fmt, &err);
        const double flop = 2.0 * (double)M * (double)N * (double)K;
        for (int t = 0; t < nthr; t++) {
            kv_pool *pool = kv_pool_create((int)threads[t]);
            double best[4] = {1e30, 1e30, 1e30, 1e30};
            for (long long rep = 0; rep < reps; rep++) {
                double t0 = kv_now_seconds();
                kv_gemm_f32_nt(M, N, K, A, K, B, K, C, N, pool);
                best[0] = KV_MIN(best[0], kv_now_seconds() - t0);
                t0 = kv_now_seconds();
                kv_weight_matmul(&wt, A, M, C, pool, &err);
                best[1] = KV_MIN(best[1], kv_now_seconds() - t0);
                t0 = kv_now_seconds();
                kv_weight_matmul_ex(&wt, A, M, C, 1, pool, &err);
                best[3] = KV_MIN(best[3], kv_now_seconds() - t0);
                if (kv_have_openblas()) {
                    kv_openblas_set_threads((int)threads[t]);
                    t0 = kv_now_seconds();
                    kv_gemm_openblas_nt(M, N, K, A, K, B, K, C, N);
                    best[2] = KV_MIN(best[2], kv_now_seconds() - t0);
                }
            }
            const double g0 = flop / best[0] * 1e-9, g1 = flop / best[1] * 1e-9, g3 = flop / best[3] * 1e-9;
            const double g2 = kv_have_openblas() ? flop / best[2] * 1e-9 : 0;
            if (json) {
                kv_jw_obj_begin(&w);
                kv_jw_key(&w, "shape"); kv_jw_str(&w, shapes[s].name);
                kv_jw_key(&w, "n"); kv_jw_int(&w, N);
                kv_jw_key(&w, "k"); kv_jw_int(&w, K);
                kv_jw_key(&w, "threads"); kv_jw_int(&w, (int)threads[t]);
                kv_jw_key(&w, "kvant_f32_gflops"); kv_jw_num(&w, g0);
                kv_jw_key(&w, "kvant_bf16_gflops"); kv_jw_num(&w, g1);
                kv_jw_key(&w, "kvant_bf16_dot_gflops");
                if (kv_gemm_bf16_available()) kv_jw_num(&w, g3);
                else kv_jw_null(&w);
                kv_jw_key(&w, "openblas_gflops");
                if (kv_have_openblas()) kv_jw_num(&w, g2);
                else kv_jw_null(&w);
                kv_jw_obj_end(&w);
            } else {
                printf("%-22s %7d %10.1f %10.1f ", shapes[s].name, (int)threads[t], g0, g1);
                if (kv_gemm_bf16_available()) printf("%10.1f ", g3);
                else printf("%10s ", "-");
                if (kv_have_openblas()) printf("%10.1f\n", g2);
                else printf("%10s\n", "-");
            }
            kv_pool_destroy(pool);
        }
        free(A); free(B); free(C); free(Bh);
    }
    if (json) {
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    }
    return 0;
}

static int bench_prefill(int argc, char **argv) {
    long long ctx = 512, reps = 3;
    long long threads[8] = {1, 2};
    int nthr = 2, json = 0;
    kv_model_load_opts lo = {.prepack = -1};
    const char *v, *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--ctx", "-c", &v)) {
            if (kv_cli_parse_int(v, 1, 1 << 20, &ctx)) return kv_cli_usage("bench", "--ctx needs a positive number");
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if ((nthr = kv_cli_parse_int_list(v, 1, 256, threads, 8)) <= 0) return kv_cli_usage("bench", "--threads needs a list like 1,2");
        } else if (kv_cli_opt(argc, argv, &i, "--reps", NULL, &v)) {
            if (kv_cli_parse_int(v, 1, 1000, &reps)) return kv_cli_usage("bench", "--reps needs 1..1000");
        } else if (kv_cli_flag(argv, i, "--bf16-dot", NULL)) {
            lo.bf16_dot = 1;
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else if (argv[i][0] == '-') {
            return kv_cli_usage("bench", "unknown option '%s'", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return kv_cli_usage("bench", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return kv_cli_usage("bench", "prefill needs MODEL");
    kv_error err;
    kv_error_clear(&err);
    kv_cli_model cm;
    if (kv_cli_model_open(model, &lo, 0, &cm, &err) != KV_OK) return kv_cli_fail("bench", &err);
    const kv_hparams *hp = kv_model_get_hparams(cm.m);
    kv_context *c = NULL;
    int32_t *ids = malloc((size_t)ctx * sizeof(int32_t));
    float *logits = malloc((size_t)ctx * (size_t)hp->n_vocab * sizeof(float));
    int rc = 0;
    if (!ids || !logits) { kv_fail(&err, KV_ENOMEM, "out of memory"); rc = kv_cli_fail("bench", &err); goto done; }
    if (kv_context_create(cm.m, (int32_t)ctx, &c, &err) != KV_OK) { rc = kv_cli_fail("bench", &err); goto done; }
    for (long long i = 0; i < ctx; i++) ids[i] = (int32_t)((i * 7919 + 1) % hp->n_vocab);
    kv_jw w;
    if (json) {
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "model"); kv_jw_str(&w, model);
        kv_jw_key(&w, "ctx"); kv_jw_int(&w, ctx);
        kv_jw_key(&w, "kernel"); kv_jw_str(&w, kv_gemm_kernel_name());
        kv_jw_key(&w, "bf16_dot"); kv_jw_bool(&w, lo.bf16_dot);
        kv_jw_key(&w, "results");
        kv_jw_arr_begin(&w);
    } else {
        printf("prefill of %lld tokens, %s (kernel %s%s), best of %lld\n", ctx, model, kv_gemm_kernel_name(),
               lo.bf16_dot ? ", bf16-dot" : "", reps);
    }
    for (int t = 0; t < nthr; t++) {
        kv_pool *pool = kv_pool_create((int)threads[t]);
        double best = 1e30, best_cpu = 1e30;
        for (long long rep = 0; rep < reps; rep++) {
            const double t0 = kv_now_seconds();
            const clock_t c0 = clock();
            if (kv_forward(c, ids, ctx, 0, logits, 0, pool, &err) != KV_OK) {
                kv_pool_destroy(pool);
                rc = kv_cli_fail("bench", &err);
                goto done;
            }
            best = KV_MIN(best, kv_now_seconds() - t0);
            best_cpu = KV_MIN(best_cpu, (double)(clock() - c0) / CLOCKS_PER_SEC);
        }
        kv_pool_destroy(pool);
        if (json) {
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "threads"); kv_jw_int(&w, (int)threads[t]);
            kv_jw_key(&w, "seconds"); kv_jw_num(&w, best);
            kv_jw_key(&w, "tokens_per_s"); kv_jw_num(&w, (double)ctx / best);
            kv_jw_key(&w, "cpu_seconds"); kv_jw_num(&w, best_cpu);
            kv_jw_key(&w, "tokens_per_cpu_s"); kv_jw_num(&w, (double)ctx / best_cpu);
            kv_jw_obj_end(&w);
        } else {
            printf("  threads %d: %.3f s, %.1f tokens/s  (%.3f CPU s, %.1f tokens per CPU-second)\n", (int)threads[t], best,
                   (double)ctx / best, best_cpu, (double)ctx / best_cpu);
        }
    }
    if (json) {
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    }
done:
    kv_context_free(c);
    free(ids);
    free(logits);
    kv_cli_model_close(&cm);
    return rc;
}

int kv_cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(k_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 2; i < argc; i++) /* the GPU kernels (cmd_bench_gpu.c) */
        if (!strcmp(argv[1], "kernels") && !strcmp(argv[i], "--gpu")) return kv_cmd_bench_gpu(argc - 1, argv + 1);
    if (!strcmp(argv[1], "kernels")) return kv_bench_kernels(argc - 1, argv + 1);
    if (!strcmp(argv[1], "run")) return kv_bench_run(argc - 1, argv + 1);
    if (kv_cli_wants_help(argc, argv)) { fputs(k_usage, stdout); return 0; }
    if (!strcmp(argv[1], "matmul")) return bench_matmul(argc - 1, argv + 1);
    if (!strcmp(argv[1], "prefill")) return bench_prefill(argc - 1, argv + 1);
    return kv_cli_usage("bench", "unknown benchmark '%s' (matmul, prefill, kernels, run)", argv[1]);
}
