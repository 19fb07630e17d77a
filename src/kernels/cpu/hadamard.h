/* hadamard.h — Walsh–Hadamard transforms and small Hadamard matrices (kernels below the model: the forward pass and src/transforms use them).
 * The public part (kv_rht_*) is declared in include/kvant.h, quantize section. */
#ifndef KV_KERNELS_CPU_HADAMARD_H
#define KV_KERNELS_CPU_HADAMARD_H

#include "core/core.h"

/* Largest non-power-of-two factor kvant knows a Hadamard matrix for. */
#define KV_HADAMARD_MAX_K 28

/* In-place unnormalized Sylvester FWHT of x[0..n) (n a power of two): natural (Hadamard) order. */
void kv_fwht(float *x, int64_t n);
/* Same in double precision (used where transforms are folded into weights). */
void kv_fwht_f64(double *x, int64_t n);

/* Fills h (k*k, row-major, entries ±1) with a Hadamard matrix of order k for k in {1, 2, 12, 20, 28}
 * (Paley construction I for 12, 20, 28: q = 11, 19 prime and q = 27 over GF(27)). Returns 0, or -1 if k is
 * not one of these orders. h·hᵀ = k·I. */
int kv_hadamard_small(int k, int8_t *h);

/* Splits a supported block size b = k * 2^m with the largest k in {28, 20, 12} that divides it and leaves a
 * power of two (else k = 1). Returns 0, or -1 if b is not of that form. */
int kv_hadamard_factor(int64_t b, int *k, int64_t *p);

#endif
