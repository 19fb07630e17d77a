/* linalg.c — Cholesky, triangular inverse, upper Cholesky of an inverse, XᵀX accumulation, C -= A·B.
 * Textbook algorithms (Golub & Van Loan, "Matrix Computations", §4.2 blocked right-looking Cholesky,
 * §3.1 triangular systems); LAPACK's dpotrf/dtrtri and cblas through OpenBLAS when KV_HAVE_OPENBLAS.
 * Own code is blocked in 64×64 tiles and threaded over tiles whose results never depend on the thread. */
#include "algos/linalg.h"
#include "kernels/cpu/kernels.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>

#ifdef KV_HAVE_OPENBLAS
#include <cblas.h>
/* LAPACK (Fortran interface; OpenBLAS on Debian ships it inside libopenblas). */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info);
#endif

enum { TILE = 64 };

/* ---------------------------------------------------------------------------------------------- */
/* Cholesky (own): right-looking, TILE columns at a time                                           */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    double *a;
    int64_t n, k0, kb;
} chol_ctx;

/* Rows below the diagonal block: L[i, k0:k0+kb] = A[i, k0:k0+kb] · L_kk⁻ᵀ (forward substitution). */
static void chol_panel_task(void *vctx, int64_t task, int thread) {
    chol_ctx *c = vctx;
    int64_t n = c->n, k0 = c->k0, kb = c->kb;
    int64_t i0 = k0 + kb + task * TILE, i1 = KV_MIN(i0 + TILE, n);
    for (int64_t i = i0; i < i1; i++) {
        double *ri = c->a + i * n;
        for (int64_t j = k0; j < k0 + kb; j++) {
            const double *rj = c->a + j * n;
            double s = ri[j];
            for (int64_t m = k0; m < j; m++) s -= ri[m] * rj[m];
            ri[j] = s / rj[j];
        }
    }
}

/* Trailing update of one TILE-row strip: A[i, j] -= L[i, k0:k0+kb] · L[j, k0:k0+kb] for k0+kb <= j <= i. */
static void chol_update_task(void *vctx, int64_t task, int thread) {
    chol_ctx *c = vctx;
    int64_t n = c->n, k0 = c->k0, kb = c->kb, s0 = k0 + kb;
    int64_t i0 = s0 + task * TILE, i1 = KV_MIN(i0 + TILE, n);
    for (int64_t i = i0; i < i1; i++) {
        double *ri = c->a + i * n;
        const double *li = ri + k0;
        for (int64_t j = s0; j <= i; j++) {
            const double *lj = c->a + j * n + k0;
            double s = 0;
            for (int64_t m = 0; m < kb; m++) s += li[m] * lj[m];
            ri[j] -= s;
        }
    }
}

int64_t kv_chol_lower_own(double *a, int64_t n, kv_pool *pool) {
    for (int64_t k0 = 0; k0 < n; k0 += TILE) {
        int64_t kb = KV_MIN((int64_t)TILE, n - k0);
        for (int64_t j = k0; j < k0 + kb; j++) {
            double *rj = a + j * n;
            double d = rj[j];
            for (int64_t m = k0; m < j; m++) d -= rj[m] * rj[m];
            if (!(d > 0) || !isfinite(d)) return j + 1;
            rj[j] = sqrt(d);
            for (int64_t i = j + 1; i < k0 + kb; i++) {
                double *ri = a + i * n;
                double s = ri[j];
                for (int64_t m = k0; m < j; m++) s -= ri[m] * rj[m];
                ri[j] = s / rj[j];
            }
        }
        int64_t rest = n - k0 - kb;
        if (rest <= 0) break;
        chol_ctx c = {a, n, k0, kb};
        int64_t ntiles = (rest + TILE - 1) / TILE;
        kv_pool_run(pool, ntiles, chol_panel_task, &c);
        kv_pool_run(pool, ntiles, chol_update_task, &c);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) a[i * n + j] = 0;
    return 0;
}

int64_t kv_chol_lower(double *a, int64_t n, kv_pool *pool) {
#ifdef KV_HAVE_OPENBLAS
    if (n > 0 && n < (int64_t)1 << 30) {
        /* Row-major lower = column-major upper. */
        int nn = (int)n, info = 0;
        dpotrf_("U", &nn, a, &nn, &info);
        if (info != 0) return info > 0 ? info : 1;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i + 1; j < n; j++) a[i * n + j] = 0;
        return 0;
    }
#endif
    return kv_chol_lower_own(a, n, pool);
}

/* ---------------------------------------------------------------------------------------------- */
/* Triangular inverse (own): X = L⁻¹ column by column, TILE columns per task                      */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    const double *l;
    double *x; /* n × n scratch, column c of X stored as row c (contiguous) */
    int64_t n;
} trinv_ctx;

static void trinv_task(void *vctx, int64_t task, int thread) {
    trinv_ctx *c = vctx;
    int64_t n = c->n, c0 = task * TILE, c1 = KV_MIN(c0 + TILE, n);
    for (int64_t col = c0; col < c1; col++) {
        double *x = c->x + col * n; /* x[i] = X[i][col] */
        for (int64_t i = 0; i < col; i++) x[i] = 0;
        x[col] = 1.0 / c->l[col * n + col];
        for (int64_t i = col + 1; i < n; i++) {
            const double *li = c->l + i * n;
            double s = 0;
            for (int64_t m = col; m < i; m++) s += li[m] * x[m];
            x[i] = -s / li[i];
        }
    }
}

int kv_trinv_lower_own(double *l, int64_t n, kv_pool *pool) {
    double *x = malloc((size_t)n * (size_t)n * sizeof *x);
    if (!x) return -1;
    trinv_ctx c = {l, x, n};
    kv_pool_run(pool, (n + TILE - 1) / TILE, trinv_task, &c);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) l[i * n + j] = j <= i ? x[j * n + i] : 0.0;
    free(x);
    return 0;
}

int kv_trinv_lower(double *l, int64_t n, kv_pool *pool) {
#ifdef KV_HAVE_OPENBLAS
    if (n > 0 && n < (int64_t)1 << 30) {
        int nn = (int)n, info = 0;
        dtrtri_("U", "N", &nn, l, &nn, &info);
        if (info == 0) return 0;
    }
#endif
    return kv_trinv_lower_own(l, n, pool);
}

/* ---------------------------------------------------------------------------------------------- */
/* Upper Cholesky factor of the inverse                                                            */
/* ---------------------------------------------------------------------------------------------- */

/* Reverse rows and columns in place: a[i][j] <-> a[n-1-i][n-1-j]. */
static void reverse_both(double *a, int64_t n) {
    int64_t total = n * n;
    for (int64_t k = 0; k < total / 2; k++) {
        double t = a[k];
        a[k] = a[total - 1 - k];
        a[total - 1 - k] = t;
    }
}

int64_t kv_chol_inv_upper(double *a, int64_t n, kv_pool *pool) {
    /* With J the reversal, J·A·J = L'L'ᵀ gives A = M·Mᵀ for the upper M = J·L'·J, so
     * A⁻¹ = (M⁻¹)ᵀ·M⁻¹ and U = M⁻¹ = J·L'⁻¹·J. */
    reverse_both(a, n);
    int64_t bad = kv_chol_lower(a, n, pool);
    if (bad) return n + 1 - bad;
    if (kv_trinv_lower(a, n, pool)) return -1;
    reverse_both(a, n);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* H += XᵀX                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    double *h;
    const float *x;
    int64_t ntok, n, ntiles;
} syrk_ctx;

/* One TILE×TILE tile (ti >= tj) of the lower triangle, mirrored into the upper one. */
static void syrk_task(void *vctx, int64_t task, int thread) {
    syrk_ctx *c = vctx;
    int64_t ti = 0, rem = task;
    while (rem > ti) { rem -= ti + 1; ti++; }
    int64_t tj = rem;
    int64_t i0 = ti * TILE, i1 = KV_MIN(i0 + TILE, c->n), j0 = tj * TILE, j1 = KV_MIN(j0 + TILE, c->n);
    double acc[TILE][TILE];
    memset(acc, 0, sizeof acc);
    for (int64_t t = 0; t < c->ntok; t++) {
        const float *row = c->x + t * c->n;
        for (int64_t i = i0; i < i1; i++) {
            double xi = row[i];
            if (xi == 0) continue;
            double *ai = acc[i - i0];
            for (int64_t j = j0; j < j1; j++) ai[j - j0] += xi * (double)row[j];
        }
    }
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++) {
            if (j > i) continue;
            double v = acc[i - i0][j - j0];
            c->h[i * c->n + j] += v;
            if (i != j) c->h[j * c->n + i] += v;
        }
}

void kv_syrk_acc(double *h, const float *x, int64_t ntok, int64_t n, kv_pool *pool) {
    if (ntok <= 0 || n <= 0) return;
#ifdef KV_HAVE_OPENBLAS
    /* fp32 SYRK of this batch (OpenBLAS), summed into the fp64 total */
    float *t = n < INT32_MAX && ntok < INT32_MAX ? malloc(sizeof(float) * (size_t)n * (size_t)n) : NULL;
    if (t) {
        cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, (int)n, (int)ntok, 1.0f, x, (int)n, 0.0f, t, (int)n);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j <= i; j++) {
                double v = t[i * n + j];
                h[i * n + j] += v;
                if (i != j) h[j * n + i] += v;
            }
        free(t);
        return;
    }
#endif
    syrk_ctx c = {h, x, ntok, n, (n + TILE - 1) / TILE};
    kv_pool_run(pool, c.ntiles * (c.ntiles + 1) / 2, syrk_task, &c);
}

/* ---------------------------------------------------------------------------------------------- */
/* C -= A·B                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    float *c;
    const float *a, *b;
    int64_t ldc, lda, ldb, m, n, k;
} gemm_ctx;

enum { GEMM_ROWS = 4, GEMM_COLS = 256 };

static void gemm_task(void *vctx, int64_t task, int thread) {
    gemm_ctx *g = vctx;
    int64_t r0 = task * GEMM_ROWS, r1 = KV_MIN(r0 + GEMM_ROWS, g->m);
    for (int64_t c0 = 0; c0 < g->n; c0 += GEMM_COLS) {
        int64_t c1 = KV_MIN(c0 + GEMM_COLS, g->n);
        for (int64_t r = r0; r < r1; r++) {
            float *crow = g->c + r * g->ldc;
            const float *arow = g->a + r * g->lda;
            for (int64_t kk = 0; kk < g->k; kk++) {
                float av = arow[kk];
                if (av == 0) continue;
                const float *brow = g->b + kk * g->ldb;
                for (int64_t j = c0; j < c1; j++) crow[j] -= av * brow[j];
            }
        }
    }
}

void kv_sgemm_sub(float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,
                  int64_t m, int64_t n, int64_t k, kv_pool *pool) {
    if (m <= 0 || n <= 0 || k <= 0) return;
#ifdef KV_HAVE_OPENBLAS
    if (m < INT32_MAX && n < INT32_MAX && k < INT32_MAX) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, -1.0f, a, (int)lda, b,
                    (int)ldb, 1.0f, c, (int)ldc);
        return;
    }
#endif
    gemm_ctx g = {c, a, b, ldc, lda, ldb, m, n, k};
    kv_pool_run(pool, (m + GEMM_ROWS - 1) / GEMM_ROWS, gemm_task, &g);
}

/* ---------------------------------------------------------------------------------------------- */
/* C (+)= op(A)·B in fp64                                                                          */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    double *c;
    const double *a, *b;
    int64_t ldc, lda, ldb, m, n, k;
    double alpha, beta;
    int trans_a;
} dgemm_ctx;

static void dgemm_task(void *vctx, int64_t task, int thread) {
    dgemm_ctx *g = vctx;
    int64_t r0 = task * GEMM_ROWS, r1 = KV_MIN(r0 + GEMM_ROWS, g->m);
    for (int64_t r = r0; r < r1; r++) {
        double *crow = g->c + r * g->ldc;
        if (g->beta == 0) memset(crow, 0, sizeof(double) * (size_t)g->n);
        else if (g->beta != 1) for (int64_t j = 0; j < g->n; j++) crow[j] *= g->beta;
        for (int64_t kk = 0; kk < g->k; kk++) {
            double av = g->alpha * (g->trans_a ? g->a[kk * g->lda + r] : g->a[r * g->lda + kk]);
            if (av == 0) continue;
            const double *brow = g->b + kk * g->ldb;
            for (int64_t j = 0; j < g->n; j++) crow[j] += av * brow[j];
        }
    }
}

void kv_dgemm(int trans_a, int64_t m, int64_t n, int64_t k, double alpha, const double *a, int64_t lda,
              const double *b, int64_t ldb, double beta, double *c, int64_t ldc, kv_pool *pool) {
    if (m <= 0 || n <= 0) return;
#ifdef KV_HAVE_OPENBLAS
    if (m < INT32_MAX && n < INT32_MAX && k < INT32_MAX) {
        cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                    a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
        return;
    }
#endif
    dgemm_ctx g = {c, a, b, ldc, lda, ldb, m, n, k, alpha, beta, trans_a};
    kv_pool_run(pool, (m + GEMM_ROWS - 1) / GEMM_ROWS, dgemm_task, &g);
}

/* ---------------------------------------------------------------------------------------------- */
/* OpenBLAS's kernel choice                                                                        */
/* ---------------------------------------------------------------------------------------------- */

const char *kv_blas_slow_kernels_warning(char *buf, size_t n) {
#ifdef KV_HAVE_OPENBLAS
    static const char *const k_pre_avx[] = {"unknown", "katmai", "coppermine", "northwood", "prescott", "banias",
                                            "core2", "penryn", "dunnington", "nehalem", "atom"};
    const kv_isa hw = kv_cpu_isa_hw();
    const char *core = openblas_get_corename();
    if (hw < KV_ISA_AVX2 || !core) return NULL;
    char low[32];
    size_t i = 0;
    for (; core[i] && i + 1 < sizeof low; i++) low[i] = (char)tolower((unsigned char)core[i]);
    low[i] = 0;
    for (size_t k = 0; k < sizeof k_pre_avx / sizeof *k_pre_avx; k++)
        if (!strcmp(low, k_pre_avx[k])) {
            snprintf(buf, n, "warning: OpenBLAS runs its %s kernels on this %s CPU (a CPU this OpenBLAS does not "
                     "know): the Hessian inverses and GEMMs run several times slower; set OPENBLAS_CORETYPE=%s "
                     "(results then differ from this run's in the last bits of the BLAS sums)",
                     core, kv_isa_name(hw), hw >= KV_ISA_AVX512 ? "SkylakeX" : "Haswell");
            return buf;
        }
#else
    (void)buf;
    (void)n;
#endif
    return NULL;
}

const char *kv_blas_core_name(void) {
#ifdef KV_HAVE_OPENBLAS
    const char *core = openblas_get_corename();
    return core ? core : "openblas";
#else
    return "own";
#endif
}
