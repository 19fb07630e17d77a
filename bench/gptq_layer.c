/* gptq_layer.c — benchmark of kvant's GPTQ on one layer (issue #7 "Speed"): W [rows × cols] ~ N(0, 0.02²),
 * H = XᵀX from ntok random-but-correlated tokens (AR(1) across features, a few loud features), int4_g128_asym,
 * lazy batch 128, damping 0.01. Prints the seconds of H accumulation and of GPTQ, and writes W and H as raw
 * little-endian float32 files so that bench/gptq_layer.py runs the same algorithm in PyTorch on the same data.
 *   bench/gptq_layer.sh [ROWS COLS [NTOK]]   (builds this file against build/libkvant.a, then runs both)
 *   build/bench_gptq_layer ROWS COLS NTOK OUTDIR [THREADS] */
#include "kvant.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU seconds of the process (all threads): on a shared machine wall time alone says little. */
static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* splitmix64 + Box-Muller: the bench's own data generator (no library state involved) */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double normal(uint64_t *s) {
    double u1 = ((next_u64(s) >> 11) + 1.0) * 0x1p-53, u2 = (next_u64(s) >> 11) * 0x1p-53;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static int write_raw(const char *dir, const char *name, const float *x, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(x, sizeof(float), n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s ROWS COLS NTOK OUTDIR [THREADS]\n", argv[0]);
        return 2;
    }
    int64_t rows = atoll(argv[1]), cols = atoll(argv[2]), ntok = atoll(argv[3]);
    const char *dir = argv[4];
    int threads = argc > 5 ? atoi(argv[5]) : 0;
    if (rows <= 0 || cols <= 0 || ntok <= 0 || cols % 128) {
        fprintf(stderr, "bad sizes (COLS must be a multiple of 128)\n");
        return 2;
    }
    kv_pool *pool = kv_pool_create(threads);
    kv_error err;
    uint64_t seed = 42;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    double *h = calloc((size_t)(cols * cols), sizeof(double));
    int64_t chunk = 2048;
    float *x = malloc(sizeof(float) * (size_t)(chunk * cols));
    if (!w || !h || !x) { fprintf(stderr, "out of memory\n"); return 1; }
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)(0.02 * normal(&seed));
    double t0 = kv_now_seconds();
    for (int64_t t0k = 0; t0k < ntok; t0k += chunk) {
        int64_t m = ntok - t0k < chunk ? ntok - t0k : chunk;
        for (int64_t t = 0; t < m; t++) {
            double prev = 0;
            for (int64_t j = 0; j < cols; j++) {
                prev = 0.9 * prev + normal(&seed);
                x[t * cols + j] = (float)(prev * (j % 97 == 0 ? 8.0 : 1.0));
            }
        }
        if (kv_hessian_add(h, x, m, cols, "bench input", pool, &err)) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
    }
    double t_h = kv_now_seconds() - t0;
    kv_format f;
    if (kv_format_get("int4_g128_asym", &f, &err)) { fprintf(stderr, "%s\n", err.message); return 1; }
    size_t rb = kv_format_row_bytes(&f, cols);
    uint8_t *q = malloc(rb * (size_t)rows);
    kv_gptq_opts o;
    kv_gptq_opts_default(&o);
    kv_gptq_stats st;
    t0 = kv_now_seconds();
    double c0 = cpu_seconds();
    if (kv_gptq_quantize(&f, w, rows, cols, h, &o, q, &st, pool, &err)) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    double t_g = kv_now_seconds() - t0, c_g = cpu_seconds() - c0;
    printf("kvant  gptq %lld x %lld int4_g128_asym: H from %lld tokens %.2f s, GPTQ %.2f s (%.2f CPU s, %d threads), "
           "loss %.6g\n", (long long)rows, (long long)cols, (long long)ntok, t_h, t_g, c_g, kv_pool_threads(pool),
           st.loss);
    /* the same W and H for the PyTorch run (H as float32, as gptq.py keeps it) */
    float *hf = malloc(sizeof(float) * (size_t)(cols * cols));
    for (int64_t i = 0; i < cols * cols; i++) hf[i] = (float)h[i];
    if (write_raw(dir, "w.f32", w, (size_t)(rows * cols)) || write_raw(dir, "h.f32", hf, (size_t)(cols * cols))) {
        fprintf(stderr, "cannot write %s/w.f32, h.f32\n", dir);
        return 1;
    }
    free(hf);
    free(q);
    free(x);
    free(h);
    free(w);
    kv_pool_destroy(pool);
    return 0;
}
