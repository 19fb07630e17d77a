/* f32_impl.h — the fp32 / bf16 kernels of the forward pass, compiled once per instruction set (f32_generic.c,
 * f32_avx2.c, f32_avx512.c include this file under their own target flags; matmul.c picks one table at run
 * time with CPUID). Each TU defines KV_F32_TABLE (the table's name). The AVX-512 variants are the arithmetic
 * the forward pass had when it was built with -march=native (results unchanged on AVX-512 machines); the
 * generic code is written so that the compiler vectorizes it without reordering any sum (no -ffast-math,
 * contraction off), so the scalar and AVX2 builds give the same bits as each other.
 * Sources: GotoBLAS/BLIS micro-kernel (Goto & van de Geijn 2008), Cody–Waite exp reduction. */
#include "kernels/cpu/kernels.h"
#include <math.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define KV_GEMM_AVX512 1
#endif

enum { MR = KV_GEMM_MR, NR = KV_GEMM_NR };

#if defined(KV_GEMM_AVX512)
/* Writes (or adds) the first mr rows and ncol columns of an 8x32 accumulator tile to C: the shared epilogue of
 * the fp32 and bf16 micro-kernels. */
static inline void store_tile_8x32(float *C, int64_t ldc, const __m512 acc[MR][2], int mr, int ncol, int accumulate) {
    const __mmask16 m0 = (__mmask16)(ncol >= 16 ? 0xFFFF : (1u << ncol) - 1);
    const __mmask16 m1 = (__mmask16)(ncol >= 32 ? 0xFFFF : ncol <= 16 ? 0 : (1u << (ncol - 16)) - 1);
    for (int i = 0; i < mr; i++) {
        float *c = C + (int64_t)i * ldc;
        __m512 v0 = acc[i][0], v1 = acc[i][1];
        if (accumulate) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), v1);
        }
        _mm512_mask_storeu_ps(c, m0, v0);
        _mm512_mask_storeu_ps(c + 16, m1, v1);
    }
}

static void ukernel(const float *A, int64_t lda, int mr, const float *P, int64_t kc, float *C, int64_t ldc,
                    int ncol, int accumulate) {
    /* rows past mr repeat the last valid row (their results are never stored) */
    const float *a[MR];
    for (int i = 0; i < MR; i++) a[i] = A + (int64_t)(i < mr ? i : mr - 1) * lda;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
           c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(P + k * NR), b1 = _mm512_load_ps(P + k * NR + 16);
        __m512 x;
        x = _mm512_set1_ps(a[0][k]); c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
        x = _mm512_set1_ps(a[1][k]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
        x = _mm512_set1_ps(a[2][k]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
        x = _mm512_set1_ps(a[3][k]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
        x = _mm512_set1_ps(a[4][k]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
        x = _mm512_set1_ps(a[5][k]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
        x = _mm512_set1_ps(a[6][k]); c60 = _mm512_fmadd_ps(x, b0, c60); c61 = _mm512_fmadd_ps(x, b1, c61);
        x = _mm512_set1_ps(a[7][k]); c70 = _mm512_fmadd_ps(x, b0, c70); c71 = _mm512_fmadd_ps(x, b1, c71);
    }
    const __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                               {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    store_tile_8x32(C, ldc, acc, mr, ncol, accumulate);
}
#else
static void ukernel(const float *A, int64_t lda, int mr, const float *P, int64_t kc, float *C, int64_t ldc,
                    int ncol, int accumulate) {
    /* plain C written so that the compiler vectorizes the NR loop (no reductions across lanes) */
    float acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int64_t k = 0; k < kc; k++) {
        const float *p = P + k * NR;
        for (int i = 0; i < mr; i++) {
            const float x = A[(int64_t)i * lda + k];
            for (int j = 0; j < NR; j++) acc[i][j] += x * p[j];
        }
    }
    for (int i = 0; i < mr; i++) {
        float *c = C + (int64_t)i * ldc;
        for (int j = 0; j < ncol; j++) c[j] = accumulate ? c[j] + acc[i][j] : acc[i][j];
    }
}
#endif

/* ---------------------------------------------------------------------------------------------- */

#if defined(KV_GEMM_AVX512)
#define KV_BF16_TARGET __attribute__((target("avx512bf16")))
/* C[mr × ncol] (+)= A2[mr × kp pairs] · P[kp pairs × NR] where each u32 holds two consecutive-k bf16. */
KV_BF16_TARGET static void ukernel_bf16(const uint32_t *A, int64_t lda, int mr, const uint32_t *P, int64_t kpc, float *C,
                         int64_t ldc, int ncol, int accumulate) {
    const uint32_t *a[MR];
    for (int i = 0; i < MR; i++) a[i] = A + (int64_t)(i < mr ? i : mr - 1) * lda;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
           c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int64_t k = 0; k < kpc; k++) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(P + k * NR));
        const __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(P + k * NR + 16));
        __m512bh x;
        x = (__m512bh)_mm512_set1_epi32((int)a[0][k]); c00 = _mm512_dpbf16_ps(c00, x, b0); c01 = _mm512_dpbf16_ps(c01, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[1][k]); c10 = _mm512_dpbf16_ps(c10, x, b0); c11 = _mm512_dpbf16_ps(c11, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[2][k]); c20 = _mm512_dpbf16_ps(c20, x, b0); c21 = _mm512_dpbf16_ps(c21, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[3][k]); c30 = _mm512_dpbf16_ps(c30, x, b0); c31 = _mm512_dpbf16_ps(c31, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[4][k]); c40 = _mm512_dpbf16_ps(c40, x, b0); c41 = _mm512_dpbf16_ps(c41, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[5][k]); c50 = _mm512_dpbf16_ps(c50, x, b0); c51 = _mm512_dpbf16_ps(c51, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[6][k]); c60 = _mm512_dpbf16_ps(c60, x, b0); c61 = _mm512_dpbf16_ps(c61, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[7][k]); c70 = _mm512_dpbf16_ps(c70, x, b0); c71 = _mm512_dpbf16_ps(c71, x, b1);
    }
    const __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                               {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    store_tile_8x32(C, ldc, acc, mr, ncol, accumulate);
}

/* Rounds n floats to bf16 pairs (round to nearest even, VCVTNE2PS2BF16), two vectors at a time. */
KV_BF16_TARGET static void round_bf16(const float *x, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    if (i < n) kv_fp32_to_bf16_row(x + i, dst + i, (size_t)(n - i));
}
#endif

/* Dot product of a bf16 row with fp32 x (bf16 -> fp32 is a 16-bit shift). */
static float dot_bf16_f32(const uint16_t *w, const float *x, int64_t n) {
    int64_t i = 0;
#if defined(KV_GEMM_AVX512)
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        const __m512i a = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(w + i)));
        const __m512i b = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(w + i + 16)));
        s0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(a, 16)), _mm512_loadu_ps(x + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(b, 16)), _mm512_loadu_ps(x + i + 16), s1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#else
    float s = 0.0f;
#endif
    for (; i < n; i++) s += kv_bf16_to_fp32(w[i]) * x[i];
    return s;
}


/* ---------------------------------------------------------------------------------------------- */
/* vector helpers                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

static float dot_f32(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
#if defined(KV_GEMM_AVX512)
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#else
    float acc[8] = {0};
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_f32(float *y, float a, const float *x, int64_t n) {
    int64_t i = 0;
#if defined(KV_GEMM_AVX512)
    const __m512 va = _mm512_set1_ps(a);
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

/* ---------------------------------------------------------------------------------------------- */
/* exp-based row operations (attention softmax, SwiGLU)                                            */
/* ---------------------------------------------------------------------------------------------- */

#if defined(KV_GEMM_AVX512)
/* e^x for 16 lanes: x = n·ln2 + r (Cody–Waite split of ln2), degree-6 Taylor polynomial of e^r on
 * |r| <= ln2/2 (relative error ~1e-7, about one ulp), times 2^n via VSCALEFPS. Inputs are clamped to the
 * range where e^x is a normal float. */
static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

static void softmax_scaled(float *x, int64_t n, float scale) {
    int64_t i = 0;
    float mx = -INFINITY;
#if defined(KV_GEMM_AVX512)
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vs);
        _mm512_storeu_ps(x + i, v);
        vm = _mm512_max_ps(vm, v);
    }
    mx = _mm512_reduce_max_ps(vm);
#endif
    for (; i < n; i++) {
        x[i] *= scale;
        if (x[i] > mx) mx = x[i];
    }
    float sum = 0.0f;
    i = 0;
#if defined(KV_GEMM_AVX512)
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmx));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    sum = _mm512_reduce_add_ps(acc);
#endif
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (i = 0; i < n; i++) x[i] *= inv;
}

static void swiglu(float *g, const float *u, int64_t n) {
    int64_t i = 0;
#if defined(KV_GEMM_AVX512)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(g + i);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + i)));
    }
#endif
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static double sum_exp_shifted(const float *x, int64_t n, float shift) {
    int64_t i = 0;
    double sum = 0.0;
#if defined(KV_GEMM_AVX512)
    const __m512 vs = _mm512_set1_ps(shift);
    for (; i + 256 <= n; i += 256) { /* float partial sums over 256 values, accumulated in double */
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = 0; k < 256; k += 16) acc = _mm512_add_ps(acc, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i + k), vs)));
        sum += (double)_mm512_reduce_add_ps(acc);
    }
#endif
    for (; i < n; i++) sum += (double)expf(x[i] - shift);
    return sum;
}

const kv_f32_kernels KV_F32_TABLE = {
    .ukernel = ukernel,
#if defined(KV_GEMM_AVX512)
    .ukernel_bf16 = ukernel_bf16,
    .round_bf16 = round_bf16,
#endif
    .dot = dot_f32,
    .dot_bf16 = dot_bf16_f32,
    .axpy = axpy_f32,
    .softmax_scaled = softmax_scaled,
    .swiglu = swiglu,
    .sum_exp_shifted = sum_exp_shifted,
};
