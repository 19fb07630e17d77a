/* linalg.h — the dense linear algebra the error-compensation methods need (GPTQ, WaterSIC): Cholesky,
 * triangular inverse, the upper Cholesky factor of an inverse, and the H += XᵀX accumulation.
 * Row-major n×n double matrices. OpenBLAS/LAPACK (dpotrf, dtrtri) when KV_HAVE_OPENBLAS, own blocked code
 * otherwise (and always available as kv_*_own for tests). Results do not depend on the kvant thread count. */
#ifndef KV_ALGOS_LINALG_H
#define KV_ALGOS_LINALG_H

#include "core/core.h"

/* In-place lower Cholesky factor: a = L·Lᵀ, L written to the lower triangle, the strict upper triangle
 * zeroed. Returns 0, or k+1 when the leading minor of order k+1 is not positive definite (a is then
 * garbage). pool may be NULL. */
int64_t kv_chol_lower(double *a, int64_t n, kv_pool *pool);
int64_t kv_chol_lower_own(double *a, int64_t n, kv_pool *pool);

/* In-place inverse of a lower-triangular matrix with non-zero diagonal (strict upper part must be 0).
 * Returns 0, or -1 when out of memory (l unchanged). */
int kv_trinv_lower(double *l, int64_t n, kv_pool *pool);
int kv_trinv_lower_own(double *l, int64_t n, kv_pool *pool);

/* a (symmetric positive definite) is replaced by the upper-triangular U with a⁻¹ = Uᵀ·U (GPTQ's "Hinv",
 * torch.linalg.cholesky(cholesky_inverse(chol(H)), upper=True)), computed with one Cholesky and one
 * triangular inverse of the reversed matrix. Returns 0, the failing pivot (1-based, in a's own order) when
 * a is not positive definite, or -1 when out of memory. */
int64_t kv_chol_inv_upper(double *a, int64_t n, kv_pool *pool);

/* h (n×n, full symmetric storage) += xᵀ·x for x [ntok × n] fp32 rows: the batch's sum in fp32 (OpenBLAS
 * ssyrk) or fp64 (own tiles, in token order), added to h in fp64. Independent of the kvant thread count. */
void kv_syrk_acc(double *h, const float *x, int64_t ntok, int64_t n, kv_pool *pool);

/* c [m × n] -= a [m × k] · b [k × n] (fp32, row-major with leading dimensions lda/ldb/ldc). Threaded over
 * row chunks; per element the sum runs in k order, so results do not depend on the thread count. */
void kv_sgemm_sub(float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,
                  int64_t m, int64_t n, int64_t k, kv_pool *pool);



/* c [m × n] = alpha·op(a)·b + beta·c in fp64; op(a) = a [m × k] or, with trans_a, aᵀ for a [k × m]. */
void kv_dgemm(int trans_a, int64_t m, int64_t n, int64_t k, double alpha, const double *a, int64_t lda,
              const double *b, int64_t ldb, double beta, double *c, int64_t ldc, kv_pool *pool);

/* NULL, or a warning when the BLAS these routines call runs kernels far below what the CPU can do (OpenBLAS
 * 0.3.21, Debian 12's, takes CPUs it does not know, such as Xeon model 207, for a Prescott: SSE3 kernels,
 * measured 2.6x slower GPTQ than with OPENBLAS_CORETYPE=SkylakeX). */
const char *kv_blas_slow_kernels_warning(char *buf, size_t n);
/* The kernels behind these routines ("own", or OpenBLAS's core name): part of what a result depends on. */
const char *kv_blas_core_name(void);
#endif
