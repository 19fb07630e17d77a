/* bench_formats.c — single-thread throughput of kvant's formats (issue #5 "Speed"): quantize (without and with
 * importance weights) and dequantize, in MB/s of fp32 data, on N(0,1) rows. Built and run by
 * bench/bench_formats.sh; bench/vs_ggml.sh compares the ggml types with ggml's own quantizers on the same data.
 *
 * Each number is the fastest single-row call over min_s seconds.
 * usage: bench_formats [--rows R] [--row N] [--min-seconds S] [--json] [--dump FILE.f32] [FORMAT ...]
 *   default formats: every ggml type; --dump writes the input rows (for vs_ggml.sh) and exits. */
#include "kvant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_default[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k",
                                        "q5_k", "q6_k", "q8_k", "iq4_nl", "iq4_xs", "mxfp4", "nvfp4"};

/* N(0,1) by xorshift64 + Box-Muller: self-contained, so the numbers do not move with kv_rng changes. */
static void gaussian(float *x, int64_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i += 2) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            u[k] = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        }
        double r = sqrt(-2 * log(u[0])), t = 6.283185307179586 * u[1];
        x[i] = (float)(r * cos(t));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(t));
    }
}

/* Times one row per call, cycling over the rows, for min_s seconds (at least 24 calls) and keeps the fastest
 * call: short calls rarely lose their time slice, so on a loaded machine the minimum is the stable
 * statistic. Returns MB/s of fp32 data. */
typedef struct job {
    kv_format f;
    const float *x;
    const float *imp;
    uint8_t *q;
    float *y;
    int64_t rows, n;
    size_t row_bytes;
} job;

enum { OP_QUANT, OP_QUANT_IMP, OP_DEQUANT };

static int run_row(job *j, int op, int64_t r) {
    if (op == OP_DEQUANT) {
        j->f.dequantize(&j->f, j->q + (size_t)r * j->row_bytes, j->y + r * j->n, j->n);
        return 0;
    }
    return j->f.quantize(&j->f, j->x + r * j->n, j->q + (size_t)r * j->row_bytes, 1, j->n,
                         op == OP_QUANT_IMP ? j->imp : NULL, NULL) != KV_OK;
}

static double measure(job *j, int op, double min_s) {
    double best = INFINITY, t0 = kv_now_seconds();
    for (int64_t k = 0; k < 24 || kv_now_seconds() - t0 < min_s; k++) {
        int64_t r = k % j->rows;
        double t1 = kv_now_seconds();
        if (run_row(j, op, r)) return -1;
        double dt = kv_now_seconds() - t1;
        if (dt < best) best = dt;
    }
    return (double)j->n * 4 / best / 1e6;
}

int main(int argc, char **argv) {
    long long rows = 1024, n = 4096;
    double min_s = 0.5;
    int json = 0, nnames = 0;
    const char *dump = NULL;
    const char **names = calloc((size_t)argc + sizeof k_default / sizeof *k_default + 1, sizeof *names);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--row") && i + 1 < argc) n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--min-seconds") && i + 1 < argc) min_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_formats [--rows R] [--row N] [--min-seconds S] [--json] [--dump FILE.f32] [FORMAT ...]\n");
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "bench_formats: unknown option %s\n", argv[i]);
            return 2;
        } else names[nnames++] = argv[i];
    }
    if (rows <= 0 || n <= 0 || n % 256) {
        fprintf(stderr, "bench_formats: --rows must be > 0 and --row a multiple of 256\n");
        return 2;
    }
    if (!nnames)
        for (size_t i = 0; i < sizeof k_default / sizeof *k_default; i++) names[nnames++] = k_default[i];
    int64_t total = rows * n;
    float *x = malloc(sizeof(float) * (size_t)total), *y = malloc(sizeof(float) * (size_t)total);
    float *imp = malloc(sizeof(float) * (size_t)n);
    uint8_t *q = malloc(sizeof(float) * (size_t)total + 4096);
    if (!x || !y || !imp || !q) {
        fprintf(stderr, "bench_formats: out of memory\n");
        return 1;
    }
    gaussian(x, total, 1);
    gaussian(imp, n, 2);
    for (int64_t i = 0; i < n; i++) imp[i] = imp[i] * imp[i] + 0.1f; /* positive, like imatrix column sums */
    if (dump) {
        FILE *f = fopen(dump, "wb");
        int ok = f && fwrite(x, sizeof(float), (size_t)total, f) == (size_t)total;
        if (f) ok &= fclose(f) == 0;
        char ipath[1024];
        snprintf(ipath, sizeof ipath, "%s.imatrix", dump);
        f = fopen(ipath, "wb");
        ok &= f && fwrite(imp, sizeof(float), (size_t)n, f) == (size_t)n;
        if (f) ok &= fclose(f) == 0;
        if (!ok) fprintf(stderr, "bench_formats: cannot write %s\n", dump);
        return ok ? 0 : 1;
    }
    if (json) printf("{\"rows\": %lld, \"row\": %lld, \"threads\": 1, \"results\": [\n", rows, n);
    else printf("%-10s %8s %12s %12s %12s\n", "format", "bpw", "quant MB/s", "q+imat MB/s", "deq MB/s");
    int rc = 0;
    for (int i = 0; i < nnames; i++) {
        job j = {.x = x, .imp = imp, .q = q, .y = y, .rows = rows, .n = n};
        kv_error err;
        if (kv_format_get(names[i], &j.f, &err) != KV_OK) {
            char buf[1400];
            fprintf(stderr, "bench_formats: %s\n", kv_error_format(&err, buf, sizeof buf));
            rc = 2;
            continue;
        }
        j.row_bytes = kv_format_row_bytes(&j.f, n);
        double qs = measure(&j, OP_QUANT, min_s);
        double qi = measure(&j, OP_QUANT_IMP, min_s);
        for (int64_t r = 0; r < rows; r++) run_row(&j, OP_QUANT, r);
        double dq = measure(&j, OP_DEQUANT, min_s);
        if (json)
            printf("  {\"name\": \"%s\", \"bits_per_weight\": %.4f, \"quantize_mb_s\": %.1f, \"quantize_imatrix_mb_s\": "
                   "%.1f, \"dequantize_mb_s\": %.1f}%s\n",
                   j.f.name, kv_format_bpw(&j.f, n), qs, qi, dq, i + 1 < nnames ? "," : "");
        else
            printf("%-10s %8.4f %12.1f %12.1f %12.1f\n", j.f.name, kv_format_bpw(&j.f, n), qs, qi, dq);
        fflush(stdout);
    }
    if (json) printf("]}\n");
    free(x); free(y); free(imp); free(q); free(names);
    return rc;
}
