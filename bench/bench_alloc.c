/* bench_alloc.c — solve time of the bit-allocation dynamic program (issue: < 1 s for 1000 layers x 30
 * candidates) and of waterfilling, on random problems shaped like real ones (t ~ 2^-2b, sizes from params).
 *   bench_alloc [LAYERS] [CANDIDATES] */
#include "kvant.h"
#include "core/core.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int L = argc > 1 ? atoi(argv[1]) : 1000, C = argc > 2 ? atoi(argv[2]) : 30;
    if (L < 1 || C < 1) { fprintf(stderr, "usage: bench_alloc [LAYERS] [CANDIDATES]\n"); return 2; }
    double *size = malloc(sizeof(double) * (size_t)L * C), *cost = malloc(sizeof(double) * (size_t)L * C);
    double *params = malloc(sizeof(double) * (size_t)L);
    int *choice = malloc(sizeof(int) * (size_t)L);
    kv_rng r;
    kv_rng_seed(&r, 1);
    double total = 0;
    for (int l = 0; l < L; l++) {
        params[l] = 4e6 * (0.25 + kv_rng_uniform(&r));
        total += params[l];
        double alpha = exp(3 * kv_rng_normal(&r));
        for (int c = 0; c < C; c++) {
            double bits = 1.5 + 6.5 * c / (C - 1 > 0 ? C - 1 : 1) + 0.05 * kv_rng_uniform(&r);
            size[(size_t)l * C + c] = params[l] * bits;
            cost[(size_t)l * C + c] = alpha * pow(2.0, -2 * bits) * (0.9 + 0.2 * kv_rng_uniform(&r));
        }
    }
    kv_alloc_problem p = {L, C, size, cost, 3.5 * total, 0};
    kv_alloc_result res;
    kv_error err;
    kv_error_clear(&err);
    double best_dp = 1e30, best_wf = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = kv_now_seconds();
        if (kv_alloc_dp(&p, choice, &res, &err)) { fprintf(stderr, "dp: %s\n", err.message); return 1; }
        double t1 = kv_now_seconds();
        if (t1 - t0 < best_dp) best_dp = t1 - t0;
    }
    double dp_cost = res.total_cost, dp_bits = res.total_bits / total;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = kv_now_seconds();
        if (kv_alloc_waterfill(&p, params, choice, &res, &err)) { fprintf(stderr, "waterfill: %s\n", err.message); return 1; }
        double t1 = kv_now_seconds();
        if (t1 - t0 < best_wf) best_wf = t1 - t0;
    }
    printf("allocation %d layers x %d candidates at 3.5 bits/weight\n", L, C);
    printf("  dp        %.3f s   cost %.6g   %.4f bits/weight\n", best_dp, dp_cost, dp_bits);
    printf("  waterfill %.3f s   cost %.6g   %.4f bits/weight\n", best_wf, res.total_cost, res.total_bits / total);
    free(size); free(cost); free(params); free(choice);
    return 0;
}
