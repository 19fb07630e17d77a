/* gen_grids.c — generates src/formats/higgs_grids.c: the HIGGS Gaussian MSE-optimal grids and the AF4 code.
 *
 *   cc -O2 -std=c11 -o /tmp/gen_grids scripts/gen_grids.c -lm && /tmp/gen_grids > src/formats/higgs_grids.c
 *
 * Deterministic: no seed from the environment, a fixed splitmix64 stream, double arithmetic only.
 *  - p = 1, b = 1..8: Lloyd-Max quantizer of N(0,1) with n = 2^b levels by Lloyd's iteration on exact
 *    integrals (cell probability by erfc, centroid (phi(a) - phi(b)) / P), started from the Panter-Dite
 *    companding points sqrt(3)*Phi^-1((i + 1/2)/n); the MSE is the exact integral at the fixed point.
 *    (Max 1960; HIGGS, arXiv 2411.17525, uses the same optimal grids.)
 *  - p = 2 (b = 2, 3, 4) and p = 4 (b = 2): n = 2^(p*b) points by Lloyd / k-means on NS iid N(0, I_p) samples,
 *    started from the product of the p = 1 grids at b bits (p = 4: the 2-D grid at b bits paired is too big, so
 *    the product of 1-D 2-bit grids); the MSE is measured on an independent sample set.
 *  - AF4 for blocks of 64: davisyoshida/abnormal-floats generate_af4.py construction (arXiv 2306.06965): the
 *    distribution of w / absmax(block) for an iid N(0,1) block of B values (point masses 1/(2B) at +-1, the
 *    rest a truncated normal scaled by the block max, mixed over the max's density B(2Phi(m)-1)^(B-1) 2phi(m));
 *    code points are chained so that each is the median of its cell, the free first point found by a root
 *    search so that the last cell ends at the median 0; code = {-1, 6 negatives, 0, 7 positives, 1}. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------ */
/* normal distribution                                                                             */

static double phi(double x) { return exp(-0.5 * x * x) * 0.39894228040143267794; }
static double upper_tail(double x) { return 0.5 * erfc(x * 0.70710678118654752440); } /* P(X > x) */
static double Phi(double x) { return 1.0 - upper_tail(x); }

static double Phi_inv(double p) {
    double lo = -40.0, hi = 40.0;
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi);
        if (Phi(mid) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* ------------------------------------------------------------------------------------------------ */
/* p = 1: Lloyd-Max on the positive half (n even, symmetric)                                        */

static double lloyd_max(int n, double *levels /* n, ascending */) {
    int h = n / 2;
    double *y = levels + h; /* positive half y[0..h) */
    for (int i = 0; i < h; i++) y[i] = sqrt(3.0) * Phi_inv((h + i + 0.5) / n);
    double *t = malloc((size_t)(h + 1) * sizeof *t);
    for (int it = 0; it < 2000000; it++) {
        t[0] = 0.0;
        for (int i = 1; i < h; i++) t[i] = 0.5 * (y[i - 1] + y[i]);
        t[h] = INFINITY;
        double change = 0.0;
        for (int i = 0; i < h; i++) {
            double pa = upper_tail(t[i]), pb = i == h - 1 ? 0.0 : upper_tail(t[i + 1]);
            double fb = i == h - 1 ? 0.0 : phi(t[i + 1]);
            double c = (phi(t[i]) - fb) / (pa - pb);
            change = fmax(change, fabs(c - y[i]));
            y[i] = c;
        }
        if (change < 1e-14) break;
    }
    t[0] = 0.0;
    for (int i = 1; i < h; i++) t[i] = 0.5 * (y[i - 1] + y[i]);
    double mse = 0.0;
    for (int i = 0; i < h; i++) {
        double a = t[i], last = i == h - 1;
        double P = upper_tail(a) - (last ? 0.0 : upper_tail(t[i + 1]));
        double m1 = phi(a) - (last ? 0.0 : phi(t[i + 1]));                           /* int x phi */
        double m2 = a * phi(a) - (last ? 0.0 : t[i + 1] * phi(t[i + 1])) + P;        /* int x^2 phi */
        mse += 2.0 * (m2 - 2.0 * y[i] * m1 + y[i] * y[i] * P);
    }
    for (int i = 0; i < h; i++) levels[h - 1 - i] = -y[i];
    free(t);
    return mse;
}

/* ------------------------------------------------------------------------------------------------ */
/* p > 1: k-means on samples                                                                        */

static uint64_t g_state = 0x6b76616e74677269ull; /* "kvantgri": the generator's only state, fixed */
static uint64_t splitmix64(void) {
    uint64_t z = (g_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double uniform01(void) { return ((splitmix64() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static void normals(double *out, size_t n) {
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(uniform01())), a = 6.283185307179586 * uniform01();
        out[i] = r * cos(a);
        if (i + 1 < n) out[i + 1] = r * sin(a);
    }
}

static int nearest(const double *pts, int n, int p, const double *v, double *d2out) {
    int best = 0;
    double bd = INFINITY;
    for (int k = 0; k < n; k++) {
        double d = 0.0;
        for (int j = 0; j < p && d < bd; j++) {
            double e = v[j] - pts[k * p + j];
            d += e * e;
        }
        if (d < bd) { bd = d; best = k; }
    }
    *d2out = bd;
    return best;
}

static double kmeans(int p, int n, double *pts, size_t ns, int iters) {
    double *x = malloc(ns * p * sizeof *x), *sum = malloc((size_t)n * p * sizeof *sum);
    size_t *cnt = malloc((size_t)n * sizeof *cnt);
    normals(x, ns * p);
    for (int it = 0; it < iters; it++) {
        memset(sum, 0, (size_t)n * p * sizeof *sum);
        memset(cnt, 0, (size_t)n * sizeof *cnt);
        for (size_t s = 0; s < ns; s++) {
            double d2;
            int k = nearest(pts, n, p, x + s * p, &d2);
            cnt[k]++;
            for (int j = 0; j < p; j++) sum[k * p + j] += x[s * p + j];
        }
        for (int k = 0; k < n; k++)
            if (cnt[k])
                for (int j = 0; j < p; j++) pts[k * p + j] = sum[k * p + j] / (double)cnt[k];
    }
    /* independent test set for the reported MSE */
    normals(x, ns * p);
    double se = 0.0;
    for (size_t s = 0; s < ns; s++) {
        double d2;
        (void)nearest(pts, n, p, x + s * p, &d2);
        se += d2;
    }
    free(x);
    free(sum);
    free(cnt);
    return se / (double)(ns * p);
}

/* Sort points lexicographically so the table is stable to read. */
static int g_cmp_p;
static int cmp_pts(const void *a, const void *b) {
    const double *x = a, *y = b;
    for (int j = 0; j < g_cmp_p; j++)
        if (x[j] != y[j]) return x[j] < y[j] ? -1 : 1;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* AF4                                                                                              */

#define AF_B 64
/* cdf of w/absmax on [-1, 1] (generate_af4.py cdf): Simpson over the block max m on [0, 12]. */
static double af_cdf(double x) {
    if (x < -1.0) return 0.0;
    if (x >= 1.0) return 1.0;
    const int N = 3000;
    const double M = 12.0, hstep = M / N;
    double acc = 0.0;
    for (int i = 0; i <= N; i++) {
        double m = i * hstep;
        double pm = m == 0.0 ? 0.0 : AF_B * pow(2.0 * Phi(m) - 1.0, AF_B - 1) * 2.0 * phi(m);
        double den = Phi(m) - Phi(-m);
        double tc = den > 0.0 ? (Phi(m * x) - Phi(-m)) / den : 0.0; /* truncnorm cdf at m*x on [-m, m] */
        double w = i == 0 || i == N ? 1.0 : i % 2 ? 4.0 : 2.0;
        acc += w * tc * pm;
    }
    acc *= hstep / 3.0;
    return 1.0 / (2.0 * AF_B) + acc * (AF_B - 1.0) / AF_B;
}

static double af_inv_cdf(double v) {
    double edge = 1.0 / (2.0 * AF_B);
    if (v <= edge) return -1.0;
    if (v >= 1.0 - edge) return 1.0;
    double lo = -1.0, hi = 1.0;
    for (int it = 0; it < 60; it++) {
        double mid = 0.5 * (lo + hi);
        if (af_cdf(mid) < v) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* generate_af4.py build_code with lower bound -1 (a code point) and upper bound 0: n_steps + 1 points. */
static void af_build(double start, int n_steps, double *code) {
    const double upper = 0.0;
    int len = 0;
    code[len++] = start;
    double a = -1.0, b = start, prev_mid_prob = af_cdf(0.5 * (a + b));
    for (int s = 0; s < n_steps; s++) {
        double prev_mass = af_cdf(b) - prev_mid_prob;
        double next_mid_prob = af_cdf(b) + prev_mass;
        double c;
        if (next_mid_prob > 1.0) c = 1.0;
        else {
            double next_mid = af_inv_cdf(next_mid_prob);
            prev_mid_prob = next_mid_prob;
            c = 2.0 * next_mid - b;
            a = b;
            b = c;
        }
        if (c >= upper) {
            while (len < n_steps + 1) code[len++] = upper;
            return;
        }
        code[len++] = c;
    }
}

static int af_infeasible(const double *code, int len) {
    for (int i = 0; i + 1 < len; i++)
        if (code[i + 1] - code[i] <= 0.0 || code[i] >= 0.0) return 1;
    return code[len - 1] > 0.0;
}

static double af_target(double start, int n_steps) {
    double code[16];
    af_build(start, n_steps, code);
    double top = code[n_steps], split = 0.5 * (top + code[n_steps - 1]);
    double tp = af_cdf(top);
    return tp + (tp - af_cdf(split)) - 0.5;
}

/* generate_af4.py interval_code_search(-1, 0, n_steps, B). */
static void af_interval(int n_steps, double *code) {
    double lo = -1.0 + 1e-5, feas_lo = lo, feas_hi = -1e-5;
    while (feas_hi - feas_lo > 1e-4) {
        double mid = 0.5 * (feas_lo + feas_hi);
        af_build(mid, n_steps, code);
        if (af_infeasible(code, n_steps + 1)) feas_hi = mid;
        else feas_lo = mid;
    }
    double a = lo, b = feas_lo, fa = af_target(a, n_steps);
    for (int it = 0; it < 60; it++) { /* bisection for the root of af_target on [a, b] */
        double mid = 0.5 * (a + b), fm = af_target(mid, n_steps);
        if ((fm < 0) == (fa < 0)) { a = mid; fa = fm; }
        else b = mid;
    }
    af_build(0.5 * (a + b), n_steps, code);
}

/* ------------------------------------------------------------------------------------------------ */

/* A float literal with 9 significant digits (always with a '.' or exponent, so "1" becomes "1.0f"). */
static void print_float(double v, int i, int count) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.9g", v);
    if (!strpbrk(buf, ".e")) strcat(buf, ".0");
    printf("%s%sf,%s", i % 6 == 0 ? "    " : " ", buf, i % 6 == 5 || i == count - 1 ? "\n" : "");
}

static void print_table(const char *name, const double *v, int count) {
    printf("static const float %s[%d] = {\n", name, count);
    for (int i = 0; i < count; i++) print_float(v[i], i, count);
    printf("};\n");
}

int main(void) {
    static const int cfg[][2] = {{1, 1}, {1, 2}, {1, 3}, {1, 4}, {1, 5}, {1, 6}, {1, 7}, {1, 8},
                                 {2, 2}, {2, 3}, {2, 4}, {4, 2}};
    const int ncfg = (int)(sizeof cfg / sizeof cfg[0]);
    double mse[16];
    double lm[9][256];
    printf("/* higgs_grids.c — GENERATED by scripts/gen_grids.c; do not edit. Regenerate with:\n"
           " *   cc -O2 -std=c11 -o /tmp/gen_grids scripts/gen_grids.c -lm && /tmp/gen_grids > src/formats/higgs_grids.c\n"
           " * Gaussian MSE-optimal grids for HIGGS (p = 1: Lloyd-Max, exact; p = 2, 4: k-means on N(0, I_p)) and the\n"
           " * AbnormalFloat-4 code for blocks of 64. */\n#include \"formats/extra.h\"\n\n");
    for (int c = 0; c < ncfg; c++) {
        int p = cfg[c][0], b = cfg[c][1], n = 1 << (p * b);
        double *pts = malloc((size_t)n * p * sizeof *pts);
        if (p == 1) {
            mse[c] = lloyd_max(n, pts);
            memcpy(lm[b], pts, (size_t)n * sizeof *pts);
        } else {
            /* product initialisation from the 1-D grid at b bits per dimension */
            int m = 1 << b;
            for (int k = 0; k < n; k++)
                for (int j = 0; j < p; j++) pts[k * p + j] = lm[b][(k >> (j * b)) & (m - 1)];
            size_t ns = (size_t)n * 1000;
            mse[c] = kmeans(p, n, pts, ns, p == 2 && b < 4 ? 150 : 40);
            g_cmp_p = p;
            qsort(pts, (size_t)n, (size_t)p * sizeof *pts, cmp_pts);
        }
        char name[32];
        snprintf(name, sizeof name, "k_p%d_b%d", p, b);
        print_table(name, pts, n * p);
        free(pts);
        fprintf(stderr, "p=%d b=%d n=%d mse=%.6f\n", p, b, n, mse[c]);
    }
    printf("\nstatic const kv_higgs_grid k_grids[] = {\n");
    for (int c = 0; c < ncfg; c++)
        printf("    {%d, %d, %d, %.9g, k_p%d_b%d},\n", cfg[c][0], cfg[c][1], 1 << (cfg[c][0] * cfg[c][1]), mse[c],
               cfg[c][0], cfg[c][1]);
    printf("};\n\nconst kv_higgs_grid *kv_higgs_grid_get(int p, int b) {\n"
           "    for (size_t i = 0; i < sizeof k_grids / sizeof k_grids[0]; i++)\n"
           "        if (k_grids[i].p == p && k_grids[i].b == b) return &k_grids[i];\n"
           "    return NULL;\n}\n\n");
    double lower[16], upper[16], af[16];
    af_interval(5, lower);
    af_interval(6, upper);
    int k = 0;
    af[k++] = -1.0;
    for (int i = 0; i < 6; i++) af[k++] = lower[i];
    af[k++] = 0.0;
    for (int i = 6; i >= 0; i--) af[k++] = -upper[i];
    af[k++] = 1.0;
    printf("const float kv_af4_code64[16] = {\n");
    for (int i = 0; i < 16; i++) print_float(af[i], i, 16);
    printf("};\n");
    fprintf(stderr, "af4:");
    for (int i = 0; i < 16; i++) fprintf(stderr, " %.5f", af[i]);
    fprintf(stderr, "\n");
    return 0;
}
