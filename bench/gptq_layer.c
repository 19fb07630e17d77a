/* gptq_layer.c — benchmark of kvant's GPTQ on one layer (issue #7 "Speed"): W [rows × cols] ~ N(0, 0.02²),
 * H = XᵀX from ntok random-but-correlated tokens (AR(1) across features, a few loud features), int4_g128_asym,
 * lazy batch 128, damping 0.01, natural column order. H is rounded to fp32 values once accumulated, so that
 * bench/gptq_layer.py (the same algorithm in PyTorch) reads exactly the H kvant used.
 * Prints the seconds of H accumulation and the wall/CPU seconds of each GPTQ repeat (and the minimum), then
 * writes raw little-endian float32 files into OUTDIR: w.f32 (W), h.f32 (H) and q.f32 (kvant's quantized
 * layer, dequantized) for the PyTorch side to time the same work and compare results.
 * With --phases it also times, outside kv_gptq_quantize, the pieces it is made of on the same data: the
 * damped upper Cholesky of H⁻¹ (kv_chol_inv_upper) and the lazy-batch trailing GEMMs (kv_sgemm_sub with
 * GPTQ's shapes); the column loop is the rest.
 *   sh bench/gptq_layer.sh [ROWS COLS [NTOK [THREADS]]]   (builds this file, then runs both sides)
 *   build/bench_gptq_layer ROWS COLS NTOK OUTDIR [THREADS [REPEAT [--phases]]] */
#include "kvant.h"
#include "algos/linalg.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

/* CPU seconds of the process (all threads): on a shared machine wall time alone says little. */
static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* splitmix64 + Box-Muller (both outputs used): the bench's own data generator (no library state involved) */
typedef struct {
    uint64_t s;
    double spare;
    int has_spare;
} gen;

static uint64_t next_u64(gen *g) {
    uint64_t z = (g->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double normal(gen *g) {
    if (g->has_spare) {
        g->has_spare = 0;
        return g->spare;
    }
    double u1 = ((next_u64(g) >> 11) + 1.0) * 0x1p-53, u2 = (next_u64(g) >> 11) * 0x1p-53;
    double r = sqrt(-2 * log(u1));
    g->spare = r * sin(2 * M_PI * u2);
    g->has_spare = 1;
    return r * cos(2 * M_PI * u2);
}

static int write_raw(const char *dir, const char *name, const float *x, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(x, sizeof(float), n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* H = XᵀX over ntok tokens, each an AR(1) sequence across features with every 97th feature 8× louder. */
static int build_h(double *h, int64_t cols, int64_t ntok, gen *g, kv_pool *pool) {
    int64_t chunk = 4096;
    float *x = malloc(sizeof(float) * (size_t)(chunk * cols));
    if (!x) return -1;
    for (int64_t t0 = 0; t0 < ntok; t0 += chunk) {
        int64_t m = ntok - t0 < chunk ? ntok - t0 : chunk;
        for (int64_t t = 0; t < m; t++) {
            double prev = 0;
            for (int64_t j = 0; j < cols; j++) {
                prev = 0.9 * prev + normal(g);
                x[t * cols + j] = (float)(prev * (j % 97 == 0 ? 8.0 : 1.0));
            }
        }
        kv_error err;
        if (kv_hessian_add(h, x, m, cols, "bench input", pool, &err)) {
            fprintf(stderr, "%s\n", err.message);
            free(x);
            return -1;
        }
    }
    free(x);
    /* fp32 values: the PyTorch side then starts from the very same H */
    for (int64_t i = 0; i < cols * cols; i++) h[i] = (float)h[i];
    return 0;
}

/* The pieces of kv_gptq_quantize timed on their own (same data, same shapes; natural column order). */
static void time_phases(const double *h, int64_t rows, int64_t cols, int64_t bsz, kv_pool *pool) {
    size_t nn = (size_t)(cols * cols);
    double *u = malloc(sizeof(double) * nn);
    float *uf = malloc(sizeof(float) * nn), *w = calloc((size_t)(rows * cols), sizeof(float));
    float *e = malloc(sizeof(float) * (size_t)(rows * bsz));
    if (!u || !uf || !w || !e) { fprintf(stderr, "phases: out of memory\n"); goto done; }
    double mean = 0;
    for (int64_t i = 0; i < cols; i++) mean += h[i * cols + i];
    mean /= (double)cols;
    double t0 = kv_now_seconds(), c0 = cpu_seconds();
    memcpy(u, h, sizeof(double) * nn);
    for (int64_t i = 0; i < cols; i++) u[i * cols + i] += 0.01 * mean;
    int64_t bad = kv_chol_inv_upper(u, cols, pool);
    double t_inv = kv_now_seconds() - t0, c_inv = cpu_seconds() - c0;
    if (bad) { fprintf(stderr, "phases: H + damping not positive definite\n"); goto done; }
    for (size_t k = 0; k < nn; k++) uf[k] = (float)u[k];
    for (int64_t k = 0; k < rows * bsz; k++) e[k] = 1e-3f * (float)((k * 7919) % 200 - 100);
    double flops = 0;
    t0 = kv_now_seconds();
    c0 = cpu_seconds();
    for (int64_t i1 = 0; i1 < cols; i1 += bsz) {
        int64_t i2 = i1 + bsz < cols ? i1 + bsz : cols;
        if (i2 == cols) break;
        kv_sgemm_sub(w + i2, cols, e, bsz, uf + i1 * cols + i2, cols, rows, cols - i2, i2 - i1, pool);
        flops += 2.0 * (double)rows * (double)(i2 - i1) * (double)(cols - i2);
    }
    double t_mm = kv_now_seconds() - t0, c_mm = cpu_seconds() - c0;
    printf("kvant  phases: damped upper Cholesky of H^-1 %.2f s (%.2f CPU s), lazy-batch GEMMs %.2f s (%.2f CPU s, "
           "%.1f GFLOP/s); the column loop and copies are the rest\n", t_inv, c_inv, t_mm, c_mm,
           flops / t_mm * 1e-9);
done:
    free(e);
    free(w);
    free(uf);
    free(u);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s ROWS COLS NTOK OUTDIR [THREADS [REPEAT [--phases]]]\n", argv[0]);
        return 2;
    }
    int64_t rows = atoll(argv[1]), cols = atoll(argv[2]), ntok = atoll(argv[3]);
    const char *dir = argv[4];
    int threads = argc > 5 ? atoi(argv[5]) : 0;
    int repeat = argc > 6 ? atoi(argv[6]) : 1;
    int phases = argc > 7 && !strcmp(argv[7], "--phases");
    if (rows <= 0 || cols <= 0 || ntok <= 0 || cols % 128 || repeat <= 0) {
        fprintf(stderr, "bad sizes (COLS must be a multiple of 128) or repeat count\n");
        return 2;
    }
    kv_pool *pool = kv_pool_create(threads);
    kv_error err;
    gen g = {42, 0, 0};
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = calloc((size_t)(cols * cols), sizeof(double));
    if (!w || !h) { fprintf(stderr, "out of memory\n"); return 1; }
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)(0.02 * normal(&g));
    double t0 = kv_now_seconds();
    if (build_h(h, cols, ntok, &g, pool)) { fprintf(stderr, "H accumulation failed\n"); return 1; }
    double t_h = kv_now_seconds() - t0;
    printf("kvant  H from %lld tokens (%lld features): %.1f s\n", (long long)ntok, (long long)cols, t_h);
    fflush(stdout);

    kv_format f;
    if (kv_format_get("int4_g128_asym", &f, &err)) { fprintf(stderr, "%s\n", err.message); return 1; }
    size_t rb = kv_format_row_bytes(&f, cols);
    uint8_t *q = malloc(rb * (size_t)rows);
    if (!q) { fprintf(stderr, "out of memory\n"); return 1; }
    kv_gptq_opts o;
    kv_gptq_opts_default(&o);
    kv_gptq_stats st;
    double best = INFINITY, best_cpu = INFINITY;
    for (int rep = 0; rep < repeat; rep++) {
        t0 = kv_now_seconds();
        double c0 = cpu_seconds();
        if (kv_gptq_quantize(&f, w, rows, cols, h, &o, q, &st, pool, &err)) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        double t_g = kv_now_seconds() - t0, c_g = cpu_seconds() - c0;
        printf("kvant  gptq %lld x %lld int4_g128_asym run %d: %.2f s (%.2f CPU s), loss %.6g\n", (long long)rows,
               (long long)cols, rep + 1, t_g, c_g, st.loss);
        fflush(stdout);
        if (t_g < best) best = t_g;
        if (c_g < best_cpu) best_cpu = c_g;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("kvant  gptq %lld x %lld int4_g128_asym: min of %d: %.2f s (min CPU %.2f s, %d threads); peak RSS of the "
           "process %.0f MiB (W, H and X included)\n", (long long)rows, (long long)cols, repeat, best, best_cpu,
           kv_pool_threads(pool), ru.ru_maxrss / 1024.0);
    if (phases) time_phases(h, rows, cols, o.block, pool);

    /* the same W and H (exact) and kvant's result for the PyTorch run */
    float *buf = malloc(sizeof(float) * (size_t)(cols * (cols > rows ? cols : rows)));
    if (!buf) { fprintf(stderr, "out of memory\n"); return 1; }
    for (int64_t i = 0; i < cols * cols; i++) buf[i] = (float)h[i];
    int bad = write_raw(dir, "h.f32", buf, (size_t)(cols * cols)) || write_raw(dir, "w.f32", w, (size_t)(rows * cols));
    for (int64_t r = 0; r < rows; r++) f.dequantize(&f, q + (size_t)r * rb, buf + r * cols, cols);
    bad = bad || write_raw(dir, "q.f32", buf, (size_t)(rows * cols));
    if (bad) { fprintf(stderr, "cannot write %s/{w,h,q}.f32\n", dir); return 1; }
    free(buf);
    free(q);
    free(h);
    free(w);
    kv_pool_destroy(pool);
    return 0;
}
