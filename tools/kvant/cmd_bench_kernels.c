/* cmd_bench_kernels.c — `kvant bench kernels`: GEMV GB/s of weight bytes (one token, the decode case) and GEMM
 * GFLOP/s (64 tokens, prefill) of the weight matmul per format on 4096x4096, 4096x14336 and 14336x4096, next to
 * a STREAM-style triad (a = b + s·c over 3 x 128 MiB) measured in the same run, so the fraction of memory
 * bandwidth each kernel reaches is a ratio of one run. Weights: 256 quantized rows of N(0, 0.02) repeated to
 * the full matrix (the bytes a kernel streams are what matters, not their values). Best of R runs. */
#include "cli.h"
#include "core/core.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/matmul.h"
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant bench kernels [--format F[,F...]] [--shape RxC] [--threads N] [--reps R] [--act-dot q8|f32]\n"
    "                          [--json]\n"
    "  GEMV GB/s (weight bytes per second, 1 token) and GEMM GFLOP/s (64 tokens) of y = x W^T for each\n"
    "  format (default q4_0,q4_k,q5_k,q6_k,q8_0,mxfp4,nf4,int4_g128_asym,higgs_p2_b4) on 4096x4096,\n"
    "  4096x14336 and 14336x4096 (rows x cols), and a STREAM triad (GB/s) in the same run.\n"
    "  --shape RxC   only this matrix shape (rows x cols, cols a multiple of every format's block)\n"
    "  --threads N   threads (default 2); --reps R best of R (default 5)\n"
    "  --act-dot M   q8 (default): integer kernels where the format has one; f32: exact fp32 activations\n"
    "  --json        one JSON object\n";

typedef struct triad_job { float *a; const float *b, *c; int64_t n; } triad_job;
enum { TRIAD_CHUNK = 1 << 16 };
static void triad_task(void *ctx, int64_t t, int thread) {
    const triad_job *j = ctx;
    const int64_t i0 = t * TRIAD_CHUNK, i1 = KV_MIN(i0 + TRIAD_CHUNK, j->n);
    for (int64_t i = i0; i < i1; i++) j->a[i] = j->b[i] + 3.0f * j->c[i];
}

/* Best triad bandwidth (3 arrays of n floats moved per pass: 2 reads + 1 write), GB/s. */
static double triad_gbs(int64_t n, int reps, kv_pool *pool, kv_error *err) {
    float *a = kv_malloc_aligned((size_t)n * 4, err), *b = kv_malloc_aligned((size_t)n * 4, err),
          *c = kv_malloc_aligned((size_t)n * 4, err);
    double best = 0;
    if (a && b && c) {
        for (int64_t i = 0; i < n; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
        triad_job j = {a, b, c, n};
        for (int r = 0; r < reps; r++) {
            const double t0 = kv_now_seconds();
            kv_pool_run(pool, (n + TRIAD_CHUNK - 1) / TRIAD_CHUNK, triad_task, &j);
            const double dt = kv_now_seconds() - t0;
            best = fmax(best, 3.0 * 4.0 * (double)n / dt / 1e9);
        }
    }
    kv_free_aligned(a); kv_free_aligned(b); kv_free_aligned(c);
    return best;
}

typedef struct kres { double gemv_gbs, gemm_gflops; size_t bytes; const char *kernel; } kres;

static kv_status bench_one(const kv_format *f, int64_t rows, int64_t cols, int reps, int act_q8, kv_pool *pool,
                           kres *out, kv_error *err) {
    const size_t rb = kv_format_row_bytes(f, cols);
    if (!rb) return kv_fail(err, KV_EINVAL, "%s: %lld columns are not a multiple of its block %d", f->name,
                            (long long)cols, (int)f->block);
    enum { QROWS = 256, GEMM_TOK = 64 };
    float *src = malloc((size_t)QROWS * (size_t)cols * sizeof(float));
    uint8_t *w = kv_malloc_aligned(rb * (size_t)rows, err);
    float *x = malloc((size_t)GEMM_TOK * (size_t)cols * sizeof(float)), *y = malloc((size_t)GEMM_TOK * (size_t)rows * sizeof(float));
    kv_status st = KV_ENOMEM;
    if (!src || !w || !x || !y) { kv_fail(err, KV_ENOMEM, "out of memory for %s %lldx%lld", f->name, (long long)rows, (long long)cols); goto done; }
    kv_rng r;
    kv_rng_seed(&r, 1);
    for (int64_t i = 0; i < QROWS * cols; i++) src[i] = (float)(kv_rng_normal(&r) * 0.02);
    for (int64_t i = 0; i < GEMM_TOK * cols; i++) x[i] = (float)kv_rng_normal(&r);
    if ((st = f->quantize(f, src, w, QROWS, cols, NULL, err)) != KV_OK) goto done;
    for (int64_t row = QROWS; row < rows; row += QROWS)
        memcpy(w + (size_t)row * rb, w, rb * (size_t)KV_MIN((int64_t)QROWS, rows - row));
    kv_weight wt = {.fmt = *f, .rows = rows, .cols = cols, .data = w};
    kv_matmul_ws ws = {0};
    const kv_matmul_opts o = {.act_q8 = act_q8, .ws = &ws};
    double best1 = 1e30, bestm = 1e30;
    for (int i = 0; i < reps + 1 && st == KV_OK; i++) { /* the first run warms the workspace and pages */
        double t0 = kv_now_seconds();
        st = kv_weight_matmul_opt(&wt, x, 1, y, &o, pool, err);
        const double dt = kv_now_seconds() - t0;
        if (i) best1 = fmin(best1, dt);
    }
    for (int i = 0; i < KV_MAX(reps / 2, 1) + 1 && st == KV_OK; i++) {
        double t0 = kv_now_seconds();
        st = kv_weight_matmul_opt(&wt, x, GEMM_TOK, y, &o, pool, err);
        const double dt = kv_now_seconds() - t0;
        if (i) bestm = fmin(bestm, dt);
    }
    kv_matmul_ws_free(&ws);
    out->bytes = rb * (size_t)rows;
    out->gemv_gbs = (double)out->bytes / best1 / 1e9;
    out->gemm_gflops = 2.0 * GEMM_TOK * (double)rows * (double)cols / bestm / 1e9;
    out->kernel = kv_weight_kernel_name(&wt, act_q8);
done:
    free(src); kv_free_aligned(w); free(x); free(y);
    return st;
}

int kv_bench_kernels(int argc, char **argv) {
    const char *formats = "q4_0,q4_k,q5_k,q6_k,q8_0,mxfp4,nf4,int4_g128_asym,higgs_p2_b4", *v = NULL;
    long long threads = 2, reps = 5;
    int json = 0, act_q8 = 1, nshapes = 3;
    int64_t one_shape[2] = {0, 0};
    for (int i = 1; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--format", NULL, &v)) {
            if (!v || !*v) return kv_cli_usage("bench", "--format needs a list of formats");
            formats = v;
        } else if (kv_cli_opt(argc, argv, &i, "--shape", NULL, &v)) {
            long long r = 0, c = 0;
            char tail = 0;
            if (!v || sscanf(v, "%lldx%lld%c", &r, &c, &tail) != 2 || r < 1 || c < 1 || r > (1 << 20) || c > (1 << 20))
                return kv_cli_usage("bench", "--shape needs ROWSxCOLS (e.g. 4096x14336)");
            one_shape[0] = r;
            one_shape[1] = c;
            nshapes = 1;
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if (kv_cli_parse_int(v, 1, 256, &threads)) return kv_cli_usage("bench", "--threads needs 1..256");
        } else if (kv_cli_opt(argc, argv, &i, "--reps", NULL, &v)) {
            if (kv_cli_parse_int(v, 1, 1000, &reps)) return kv_cli_usage("bench", "--reps needs 1..1000");
        } else if (kv_cli_opt(argc, argv, &i, "--act-dot", NULL, &v)) {
            if (!v || (strcmp(v, "q8") && strcmp(v, "f32"))) return kv_cli_usage("bench", "--act-dot is q8 or f32");
            act_q8 = !strcmp(v, "q8");
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else if (kv_cli_wants_help(argc, argv)) {
            fputs(k_usage, stdout);
            return 0;
        } else {
            return kv_cli_usage("bench", "unknown argument '%s' for bench kernels", argv[i]);
        }
    }
    /* validate every format before any work */
    kv_error err;
    kv_error_clear(&err);
    kv_format fmts[32];
    int nf = 0;
    char buf[1024];
    kv_strlcpy(buf, formats, sizeof buf);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (nf == 32) return kv_cli_usage("bench", "at most 32 formats");
        if (kv_format_get(tok, &fmts[nf], &err) != KV_OK) return kv_cli_fail("bench", &err);
        if (!fmts[nf].quantize) return kv_cli_usage("bench", "format %s cannot quantize", tok);
        nf++;
    }
    int64_t shapes[3][2] = {{4096, 4096}, {4096, 14336}, {14336, 4096}};
    if (nshapes == 1) { shapes[0][0] = one_shape[0]; shapes[0][1] = one_shape[1]; }
    kv_pool *pool = kv_pool_create((int)threads);
    if (!pool) { fprintf(stderr, "kvant bench: cannot start %lld threads\n", threads); return 1; }
    const double triad = triad_gbs((int64_t)32 << 20, (int)reps, pool, &err);
    kv_jw w;
    if (json) {
        kv_jw_init(&w, stdout, 0);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "isa"); kv_jw_str(&w, kv_isa_name(kv_cpu_isa()));
        kv_jw_key(&w, "threads"); kv_jw_int(&w, threads);
        kv_jw_key(&w, "triad_gbs"); kv_jw_num(&w, triad);
        kv_jw_key(&w, "results"); kv_jw_arr_begin(&w);
    } else {
        printf("isa %s, %lld threads, triad %.2f GB/s (3 x 128 MiB)\n", kv_isa_name(kv_cpu_isa()), threads, triad);
        printf("%-16s %-12s %9s %9s %10s %8s %11s %-8s\n", "format", "shape", "MiB", "GEMV ms", "GEMV GB/s", "%triad",
               "GEMM GF/s", "kernel");
    }
    int rc = 0;
    for (int f = 0; f < nf && !rc; f++)
        for (int s = 0; s < nshapes; s++) {
            kres r = {0};
            if (bench_one(&fmts[f], shapes[s][0], shapes[s][1], (int)reps, act_q8, pool, &r, &err) != KV_OK) {
                rc = kv_cli_fail("bench", &err);
                break;
            }
            char sh[32];
            snprintf(sh, sizeof sh, "%lldx%lld", (long long)shapes[s][0], (long long)shapes[s][1]);
            if (json) {
                kv_jw_obj_begin(&w);
                kv_jw_key(&w, "format"); kv_jw_str(&w, fmts[f].name);
                kv_jw_key(&w, "shape"); kv_jw_str(&w, sh);
                kv_jw_key(&w, "bytes"); kv_jw_int(&w, (long long)r.bytes);
                kv_jw_key(&w, "gemv_gbs"); kv_jw_num(&w, r.gemv_gbs);
                kv_jw_key(&w, "gemv_triad_fraction"); kv_jw_num(&w, r.gemv_gbs / triad);
                kv_jw_key(&w, "gemm_gflops"); kv_jw_num(&w, r.gemm_gflops);
                kv_jw_key(&w, "kernel"); kv_jw_str(&w, r.kernel);
                kv_jw_obj_end(&w);
            } else {
                printf("%-16s %-12s %9.1f %9.3f %10.2f %7.0f%% %11.1f %-8s\n", fmts[f].name, sh,
                       (double)r.bytes / 1048576.0, (double)r.bytes / r.gemv_gbs / 1e6, r.gemv_gbs,
                       100.0 * r.gemv_gbs / triad, r.gemm_gflops, r.kernel);
                fflush(stdout);
            }
        }
    if (json) {
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    }
    kv_pool_destroy(pool);
    return rc;
}
