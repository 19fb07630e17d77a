/* allocation.c — per-layer bit allocation under a size budget.
 * HIGGS (Malinovskii et al., arXiv 2411.17525, §5 "dynamic bitwidth"): with the linearity theorem the model's loss
 * grows as sum_l alpha_l * t_l, so picking one format per layer under a budget is a multiple-choice knapsack,
 * solved here exactly by dynamic programming over a discretised budget. Sizes are rounded UP to budget units, so
 * the chosen map always fits the exact budget; a greedy pass then spends what the rounding left over. With very
 * many layers the rounding adds up, so a Lagrangian-relaxation solution is computed as well and the better of
 * the two is returned.
 * kv_alloc_waterfill is the classical reverse-waterfilling allocation (Cover & Thomas §10.3.3) for comparison. */
#include "core/core.h"
#include <float.h>
#include <math.h>

static int cand_allowed(const kv_alloc_problem *p, int l, int c) {
    double s = p->size_bits[(size_t)l * p->n_cand + c];
    double q = p->cost[(size_t)l * p->n_cand + c];
    return s >= 0 && isfinite(s) && isfinite(q);
}

static double size_of(const kv_alloc_problem *p, int l, int c) { return p->size_bits[(size_t)l * p->n_cand + c]; }
static double cost_of(const kv_alloc_problem *p, int l, int c) { return p->cost[(size_t)l * p->n_cand + c]; }

static kv_status check_problem(const kv_alloc_problem *p, kv_alloc_result *res, int *smallest, int *largest,
                               kv_error *err) {
    if (!p || p->n_layers <= 0 || p->n_cand <= 0 || !p->size_bits || !p->cost)
        return kv_fail(err, KV_EINVAL, "allocation problem is empty");
    res->min_bits = res->max_bits = 0;
    for (int l = 0; l < p->n_layers; l++) {
        int lo = -1, hi = -1;
        for (int c = 0; c < p->n_cand; c++) {
            if (!cand_allowed(p, l, c)) continue;
            if (lo < 0 || size_of(p, l, c) < size_of(p, l, lo)) lo = c;
            if (hi < 0 || size_of(p, l, c) > size_of(p, l, hi)) hi = c;
        }
        if (lo < 0) return kv_fail(err, KV_EINVAL, "layer %d has no allowed candidate", l);
        smallest[l] = lo;
        largest[l] = hi;
        res->min_bits += size_of(p, l, lo);
        res->max_bits += size_of(p, l, hi);
    }
    if (p->budget_bits < res->min_bits)
        return kv_fail(err, KV_ERANGE,
                       "budget of %.0f bits is below the smallest feasible size %.0f bits (feasible: %.0f .. %.0f)",
                       p->budget_bits, res->min_bits, res->min_bits, res->max_bits);
    return KV_OK;
}

static void totals(const kv_alloc_problem *p, const int *choice, kv_alloc_result *res) {
    res->total_bits = res->total_cost = 0;
    for (int l = 0; l < p->n_layers; l++) {
        res->total_bits += size_of(p, l, choice[l]);
        res->total_cost += cost_of(p, l, choice[l]);
    }
}

/* Spend leftover budget: repeatedly take the upgrade with the best cost decrease per extra bit that still fits. */
static void greedy_upgrade(const kv_alloc_problem *p, int *choice) {
    kv_alloc_result r;
    totals(p, choice, &r);
    for (;;) {
        int best_l = -1, best_c = -1;
        double best_gain = 0;
        for (int l = 0; l < p->n_layers; l++) {
            for (int c = 0; c < p->n_cand; c++) {
                if (!cand_allowed(p, l, c)) continue;
                double ds = size_of(p, l, c) - size_of(p, l, choice[l]);
                double dc = cost_of(p, l, choice[l]) - cost_of(p, l, c);
                if (dc <= 0 || r.total_bits + ds > p->budget_bits) continue;
                double gain = ds > 0 ? dc / ds : DBL_MAX;
                if (gain > best_gain) { best_gain = gain; best_l = l; best_c = c; }
            }
        }
        if (best_l < 0) return;
        r.total_bits += size_of(p, best_l, best_c) - size_of(p, best_l, choice[best_l]);
        choice[best_l] = best_c;
    }
}

/* Candidates of layer l that no other candidate beats in both size and cost, sorted by size. */
static int pareto_front(const kv_alloc_problem *p, int l, int *out) {
    int n = 0;
    for (int c = 0; c < p->n_cand; c++)
        if (cand_allowed(p, l, c)) out[n++] = c;
    for (int i = 1; i < n; i++) { /* insertion sort by (size, cost) */
        int v = out[i], j = i - 1;
        while (j >= 0 && (size_of(p, l, out[j]) > size_of(p, l, v) ||
                          (size_of(p, l, out[j]) == size_of(p, l, v) && cost_of(p, l, out[j]) > cost_of(p, l, v)))) {
            out[j + 1] = out[j];
            j--;
        }
        out[j + 1] = v;
    }
    int m = 0;
    double best = DBL_MAX;
    for (int i = 0; i < n; i++)
        if (cost_of(p, l, out[i]) < best) { best = cost_of(p, l, out[i]); out[m++] = out[i]; }
    return m;
}

/* Lagrangian relaxation: for a price lambda per bit every layer independently takes the candidate minimising
 * cost + lambda * size; the smallest lambda whose total size fits is found by bisection. The result is optimal
 * for the budget it uses (a vertex of the convex hull) and never worse than one candidate step per layer. */
static double lagrangian_pick(const kv_alloc_problem *p, double lambda, int *choice) {
    double total = 0;
    for (int l = 0; l < p->n_layers; l++) {
        int best = -1;
        double best_v = DBL_MAX;
        for (int c = 0; c < p->n_cand; c++) {
            if (!cand_allowed(p, l, c)) continue;
            double v = cost_of(p, l, c) + lambda * size_of(p, l, c);
            if (best < 0 || v < best_v || (v == best_v && size_of(p, l, c) < size_of(p, l, best))) { best_v = v; best = c; }
        }
        choice[l] = best;
        total += size_of(p, l, best);
    }
    return total;
}

static void lagrangian_solve(const kv_alloc_problem *p, int *choice) {
    if (lagrangian_pick(p, 0.0, choice) <= p->budget_bits) return;
    double hi = 1e-30;
    while (lagrangian_pick(p, hi, choice) > p->budget_bits && hi < 1e300) hi *= 4;
    double lo = hi / 4 > 1e-30 ? hi / 4 : 0;
    for (int it = 0; it < 100; it++) {
        double mid = lo > 0 ? sqrt(lo) * sqrt(hi) : hi / 2; /* lo * hi overflows near 1e300 */
        if (lagrangian_pick(p, mid, choice) > p->budget_bits) lo = mid;
        else hi = mid;
        if (hi - lo <= 1e-12 * hi) break;
    }
    lagrangian_pick(p, hi, choice);
}

/* The same problem with every cost divided by a power of two that brings the largest finite |cost| to [0.5, 1):
 * choices are unchanged (the division is exact) and sums over layers cannot overflow, whatever the alphas. */
static double *normalised_costs(const kv_alloc_problem *p, kv_alloc_problem *q, kv_error *err) {
    size_t cells = (size_t)p->n_layers * (size_t)p->n_cand;
    double *c = kv_malloc(cells * sizeof(double), err);
    if (!c) return NULL;
    double big = 0;
    for (size_t i = 0; i < cells; i++)
        if (isfinite(p->cost[i]) && fabs(p->cost[i]) > big) big = fabs(p->cost[i]);
    int e = 0;
    if (big > 0) frexp(big, &e);
    for (size_t i = 0; i < cells; i++) c[i] = isfinite(p->cost[i]) ? ldexp(p->cost[i], -e) : p->cost[i];
    *q = *p;
    q->cost = c;
    return c;
}

static kv_status alloc_dp_scaled(const kv_alloc_problem *p, int *choice, kv_alloc_result *res, kv_error *err);

kv_status kv_alloc_dp(const kv_alloc_problem *p, int *choice, kv_alloc_result *res, kv_error *err) {
    kv_alloc_result tmp;
    if (!res) res = &tmp;
    if (!p || p->n_layers <= 0 || p->n_cand <= 0 || !p->size_bits || !p->cost)
        return kv_fail(err, KV_EINVAL, "allocation problem is empty");
    kv_alloc_problem q;
    double *scaled = normalised_costs(p, &q, err);
    if (!scaled) return KV_ENOMEM;
    kv_status st = alloc_dp_scaled(&q, choice, res, err);
    free(scaled);
    if (st == KV_OK) totals(p, choice, res); /* the costs as given */
    return st;
}

static kv_status alloc_dp_scaled(const kv_alloc_problem *p, int *choice, kv_alloc_result *res, kv_error *err) {
    int L = p->n_layers;
    int *smallest = kv_calloc((size_t)(L > 0 ? L : 1), sizeof(int), err);
    int *largest = kv_calloc((size_t)(L > 0 ? L : 1), sizeof(int), err);
    if (!smallest || !largest) { free(smallest); free(largest); return KV_ENOMEM; }
    kv_status st = check_problem(p, res, smallest, largest, err);
    if (st) { free(smallest); free(largest); return st; }

    /* The DP costs L x K x R; keep it within ~3e8 steps (well under a second) by lowering the resolution
     * for very large problems. Sizes round up to budget units, so with many layers the rounding wastes some
     * budget: the Lagrangian solution (optimal for the budget it uses) is computed too and the better wins. */
    int R = p->resolution > 0 ? p->resolution : 20000;
    if (p->resolution <= 0) {
        int64_t steps = (int64_t)L * p->n_cand;
        if (steps * R > 300000000) R = (int)KV_MAX(1000, 300000000 / (steps > 0 ? steps : 1));
    }
    double unit = p->budget_bits / R;
    size_t cols = (size_t)R + 1;
    double *dp = kv_malloc(cols * sizeof(double), err);
    double *next = kv_malloc(cols * sizeof(double), err);
    int16_t *pick = kv_malloc((size_t)L * cols * sizeof(int16_t), err);
    int *front = kv_malloc((size_t)p->n_cand * sizeof(int), err);
    int64_t *units = kv_malloc((size_t)p->n_cand * sizeof(int64_t), err);
    if (!dp || !next || !pick || !front || !units || p->n_cand > INT16_MAX) {
        st = (dp && next && pick && front && units) ? kv_fail(err, KV_EINVAL, "too many candidates") : KV_ENOMEM;
        goto done;
    }
    for (size_t b = 0; b < cols; b++) dp[b] = 0; /* dp[b]: best cost of layers so far within b units */
    for (int l = 0; l < L; l++) {
        int m = pareto_front(p, l, front);
        for (int i = 0; i < m; i++) units[i] = (int64_t)ceil(size_of(p, l, front[i]) / unit - 1e-9);
        int16_t *pk = pick + (size_t)l * cols;
        for (size_t b = 0; b < cols; b++) {
            double best = DBL_MAX;
            int16_t arg = -1;
            for (int i = 0; i < m; i++) {
                if (units[i] > (int64_t)b) break; /* front is sorted by size */
                double v = dp[b - (size_t)units[i]];
                if (v == DBL_MAX) continue;
                v += cost_of(p, l, front[i]);
                if (v < best) { best = v; arg = (int16_t)front[i]; }
            }
            next[b] = best;
            pk[b] = arg;
        }
        double *t = dp; dp = next; next = t;
    }
    if (dp[R] == DBL_MAX) {
        /* the rounding-up made a barely feasible budget infeasible: the smallest map fits by construction */
        for (int l = 0; l < L; l++) choice[l] = smallest[l];
    } else {
        int64_t b = R;
        for (int l = L - 1; l >= 0; l--) {
            int c = pick[(size_t)l * cols + (size_t)b];
            if (c < 0) c = smallest[l]; /* cannot happen with finite normalised costs; never index with -1 */
            choice[l] = c;
            b -= (int64_t)ceil(size_of(p, l, c) / unit - 1e-9);
            if (b < 0) b = 0;
        }
    }
    totals(p, choice, res);
    if (res->total_bits > p->budget_bits) memcpy(choice, smallest, (size_t)L * sizeof(int)); /* defensive */
    greedy_upgrade(p, choice);
    totals(p, choice, res);
    {
        int *lag = kv_malloc((size_t)L * sizeof(int), err);
        if (!lag) { st = KV_ENOMEM; goto done; }
        lagrangian_solve(p, lag);
        greedy_upgrade(p, lag);
        kv_alloc_result rl = *res;
        totals(p, lag, &rl);
        if (rl.total_bits <= p->budget_bits && rl.total_cost < res->total_cost) {
            memcpy(choice, lag, (size_t)L * sizeof(int));
            *res = rl;
        }
        free(lag);
    }
    st = KV_OK;
done:
    free(dp); free(next); free(pick); free(front); free(units); free(smallest); free(largest);
    return st;
}

kv_status kv_alloc_waterfill(const kv_alloc_problem *p, const double *params, int *choice, kv_alloc_result *res,
                             kv_error *err) {
    kv_alloc_result tmp;
    if (!res) res = &tmp;
    int L = p ? p->n_layers : 0;
    if (!params) return kv_fail(err, KV_EINVAL, "waterfilling needs the parameter count of every layer");
    int *smallest = kv_calloc((size_t)(L > 0 ? L : 1), sizeof(int), err);
    int *largest = kv_calloc((size_t)(L > 0 ? L : 1), sizeof(int), err);
    double *w = kv_calloc((size_t)(L > 0 ? L : 1), sizeof(double), err);
    double *vals = kv_calloc((size_t)p->n_cand + 1, sizeof(double), err);
    kv_status st = (!smallest || !largest || !w || !vals) ? KV_ENOMEM : check_problem(p, res, smallest, largest, err);
    if (st) goto done;
    /* Fit cost_l(b) ~ a_l 2^(-2b) per layer (median over candidates), effective variance w_l = a_l / d_l. */
    double sum_d = 0, sum_dlogw = 0;
    for (int l = 0; l < L; l++) {
        int n = 0;
        for (int c = 0; c < p->n_cand; c++) {
            if (!cand_allowed(p, l, c) || cost_of(p, l, c) <= 0) continue;
            double b = size_of(p, l, c) / params[l];
            vals[n++] = log(cost_of(p, l, c)) + 2.0 * b * log(2.0);
        }
        for (int i = 1; i < n; i++) { double v = vals[i]; int j = i - 1; while (j >= 0 && vals[j] > v) { vals[j + 1] = vals[j]; j--; } vals[j + 1] = v; }
        double loga = n ? vals[n / 2] : 0.0;
        w[l] = loga - log(params[l]);
        sum_d += params[l];
        sum_dlogw += params[l] * w[l];
    }
    double mean_b = p->budget_bits / sum_d, mean_logw = sum_dlogw / sum_d;
    for (int l = 0; l < L; l++) {
        double target = mean_b + 0.5 * (w[l] - mean_logw) / log(2.0);
        int best = smallest[l];
        for (int c = 0; c < p->n_cand; c++) {
            if (!cand_allowed(p, l, c)) continue;
            double b = size_of(p, l, c) / params[l];
            if (fabs(b - target) < fabs(size_of(p, l, best) / params[l] - target)) best = c;
        }
        choice[l] = best;
    }
    /* repair: while over budget, downgrade where the cost rises least per bit saved */
    totals(p, choice, res);
    while (res->total_bits > p->budget_bits) {
        int bl = -1, bc = -1;
        double best = DBL_MAX;
        for (int l = 0; l < L; l++)
            for (int c = 0; c < p->n_cand; c++) {
                if (!cand_allowed(p, l, c)) continue;
                double saved = size_of(p, l, choice[l]) - size_of(p, l, c);
                if (saved <= 0) continue;
                double rise = (cost_of(p, l, c) - cost_of(p, l, choice[l])) / saved;
                if (rise < best) { best = rise; bl = l; bc = c; }
            }
        if (bl < 0) break;
        choice[bl] = bc;
        totals(p, choice, res);
    }
    greedy_upgrade(p, choice);
    totals(p, choice, res);
done:
    free(smallest); free(largest); free(w); free(vals);
    return st;
}
