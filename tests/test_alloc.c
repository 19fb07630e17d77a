/* test_alloc.c — the multiple-choice knapsack DP and waterfilling of src/algos/allocation.c. */
#include "test.h"
#include "core/core.h"
#include <float.h>

/* exhaustive optimum over all n_cand^n_layers maps */
static double brute_force(const kv_alloc_problem *p, double budget, int *best_choice) {
    int L = p->n_layers, C = p->n_cand;
    int choice[8] = {0};
    double best = DBL_MAX;
    for (;;) {
        double s = 0, c = 0;
        int ok = 1;
        for (int l = 0; l < L; l++) {
            double sz = p->size_bits[l * C + choice[l]];
            if (sz < 0) { ok = 0; break; }
            s += sz;
            c += p->cost[l * C + choice[l]];
        }
        if (ok && s <= budget && c < best) { best = c; if (best_choice) memcpy(best_choice, choice, sizeof(int) * L); }
        int l = 0;
        while (l < L && ++choice[l] == C) choice[l++] = 0;
        if (l == L) break;
    }
    return best;
}

static void random_problem(kv_rng *r, int L, int C, double *size, double *cost) {
    for (int l = 0; l < L; l++) {
        double params = 1000 + 9000 * kv_rng_uniform(r);
        double alpha = 0.1 + 10 * kv_rng_uniform(r);
        for (int c = 0; c < C; c++) {
            double bits = 2 + c + 0.25 * kv_rng_uniform(r);
            size[l * C + c] = params * bits;
            cost[l * C + c] = alpha * pow(2.0, -2 * bits) * (0.8 + 0.4 * kv_rng_uniform(r));
        }
    }
}

KV_TEST(alloc_dp_matches_brute_force) {
    kv_rng r;
    kv_rng_seed(&r, 7);
    enum { L = 6, C = 4 };
    double size[L * C], cost[L * C];
    int checked = 0;
    for (int trial = 0; trial < 40; trial++) {
        random_problem(&r, L, C, size, cost);
        double min_bits = 0, max_bits = 0;
        for (int l = 0; l < L; l++) { min_bits += size[l * C]; max_bits += size[l * C + C - 1]; }
        double budget = min_bits + (max_bits - min_bits) * kv_rng_uniform(&r);
        kv_alloc_problem p = {L, C, size, cost, budget, 200000};
        int choice[L];
        kv_alloc_result res;
        kv_error e;
        kv_error_clear(&e);
        REQUIRE_OK(kv_alloc_dp(&p, choice, &res, &e), &e);
        CHECK(res.total_bits <= budget);
        double opt = brute_force(&p, budget, NULL);
        /* sizes round up to budget/resolution units: the DP is optimal up to that slack */
        double opt_slack = brute_force(&p, budget - L * budget / p.resolution, NULL);
        CHECK(res.total_cost >= opt - 1e-12);
        CHECK(res.total_cost <= opt_slack + 1e-12);
        if (fabs(res.total_cost - opt) < 1e-12 * (1 + opt)) checked++;
    }
    CHECK(checked >= 35); /* almost always exactly optimal at this resolution */
}

KV_TEST(alloc_dp_exact_on_integer_sizes) {
    /* sizes that are multiples of the budget unit: the DP is exact */
    enum { L = 5, C = 3 };
    double size[L * C], cost[L * C];
    for (int l = 0; l < L; l++)
        for (int c = 0; c < C; c++) { size[l * C + c] = 10.0 * (c + 1); cost[l * C + c] = (l + 1) * pow(0.25, c); }
    kv_alloc_problem p = {L, C, size, cost, 100.0, 100};
    int choice[L];
    kv_alloc_result res;
    REQUIRE_OK(kv_alloc_dp(&p, choice, &res, NULL), (kv_error *)NULL);
    int bf[L];
    double opt = brute_force(&p, 100.0, bf);
    CHECK_NEAR(res.total_cost, opt, 1e-12);
    CHECK(res.total_bits <= 100.0);
    /* heavier layers (larger alpha) get at least as many bits */
    for (int l = 1; l < L; l++) CHECK(choice[l] >= choice[l - 1]);
}

KV_TEST(alloc_reports_feasible_range) {
    double size[4] = {10, 20, 10, 20}, cost[4] = {1, 0.5, 1, 0.5};
    kv_alloc_problem p = {2, 2, size, cost, 15, 0};
    int choice[2];
    kv_alloc_result res;
    kv_error e;
    kv_error_clear(&e);
    CHECK(kv_alloc_dp(&p, choice, &res, &e) == KV_ERANGE);
    CHECK(strstr(e.message, "20") && strstr(e.message, "40"));
    p.budget_bits = 1000; /* above max: everything at the best candidate */
    REQUIRE_OK(kv_alloc_dp(&p, choice, &res, &e), &e);
    CHECK(choice[0] == 1 && choice[1] == 1);
    CHECK_NEAR(res.max_bits, 40, 0);
    size[1] = -1; /* disallowed candidate is never chosen */
    REQUIRE_OK(kv_alloc_dp(&p, choice, &res, &e), &e);
    CHECK(choice[0] == 0);
}

KV_TEST(alloc_waterfill_fits_and_is_no_better_than_dp) {
    kv_rng r;
    kv_rng_seed(&r, 3);
    enum { L = 6, C = 4 };
    double size[L * C], cost[L * C], params[L];
    for (int trial = 0; trial < 10; trial++) {
        random_problem(&r, L, C, size, cost);
        double min_bits = 0, max_bits = 0;
        for (int l = 0; l < L; l++) { min_bits += size[l * C]; max_bits += size[l * C + C - 1]; params[l] = size[l * C] / 2.1; }
        double budget = 0.5 * (min_bits + max_bits);
        kv_alloc_problem p = {L, C, size, cost, budget, 100000};
        int cw[L], cd[L];
        kv_alloc_result rw, rd;
        REQUIRE_OK(kv_alloc_waterfill(&p, params, cw, &rw, NULL), (kv_error *)NULL);
        REQUIRE_OK(kv_alloc_dp(&p, cd, &rd, NULL), (kv_error *)NULL);
        CHECK(rw.total_bits <= budget);
        CHECK(rd.total_cost <= rw.total_cost + 1e-12);
    }
}
