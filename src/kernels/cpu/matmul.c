/* matmul.c — blocked, threaded fp32 GEMM C = A·Bᵀ and the weight-seam matmul y = x·Wᵀ for weight rows of any
 * kv_format. Scheme (GotoBLAS / BLIS, "Anatomy of High-Performance Matrix Multiplication", Goto & van de
 * Geijn 2008): each task owns a tile of NT output columns; it dequantizes those weight rows to fp32 and packs
 * them K-major into NR-wide micro-panels (L1-resident per KC block), then sweeps all rows of A in MR-row
 * steps with an MR×NR register micro-kernel (AVX-512: 8 rows × 2 zmm). Every C element is summed in the same
 * order whatever the thread count or the number of rows, so prefill and one-token decode agree bit for bit. */
#include "kernels/cpu/matmul.h"
#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#define KV_GEMM_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define KV_GEMM_AVX2 1
#endif
#ifdef KV_HAVE_OPENBLAS
#include <cblas.h>
#endif

enum { MR = 8, NR = 32, NT = 64, KCB = 256 };

const char *kv_gemm_kernel_name(void) {
#if defined(KV_GEMM_AVX512)
    return "avx512";
#elif defined(KV_GEMM_AVX2)
    return "avx2";
#else
    return "generic";
#endif
}

/* ---------------------------------------------------------------------------------------------- */
/* micro-kernels: C[mr × ncol] (+)= A[mr × kc] · P[kc × NR] with P a packed micro-panel               */
/* ---------------------------------------------------------------------------------------------- */

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
/* the tiled GEMM over a source of B rows (fp32 matrix or kv_weight)                               */
/* ---------------------------------------------------------------------------------------------- */

typedef struct gemm_job {
    int64_t M, N, K;
    const float *A;
    int64_t lda;
    float *C;
    int64_t ldc;
    const float *B; /* fp32 rows, or NULL when w is set */
    int64_t ldb;
    const kv_weight *w;
    size_t row_bytes;
    float **scratch; /* per thread: NT*K packed floats + K floats of one dequantized row */
} gemm_job;

/* Row n of B as fp32 (pointer into B / the weight when it is fp32, else dequantized into buf). */
static const float *b_row(const gemm_job *j, int64_t n, float *buf) {
    if (j->B) return j->B + n * j->ldb;
    const kv_weight *w = j->w;
    const uint8_t *src = (const uint8_t *)w->data + (size_t)n * j->row_bytes;
    if (w->fmt.type == KV_TYPE_F32 && w->fmt.row_header_bytes == 0 && ((uintptr_t)src & 3) == 0)
        return (const float *)(const void *)src;
    if (w->fmt.type == KV_TYPE_BF16) kv_bf16_to_fp32_row((const uint16_t *)(const void *)src, buf, (size_t)j->K);
    else if (w->fmt.type == KV_TYPE_F16) kv_fp16_to_fp32_row((const uint16_t *)(const void *)src, buf, (size_t)j->K);
    else w->fmt.dequantize(&w->fmt, src, buf, j->K);
    return buf;
}

/* Packs B rows n0..n0+nn into NR-wide K-major micro-panels at pack (zero columns beyond nn). */
static void pack_tile(const gemm_job *j, int64_t n0, int64_t nn, float *pack, float *rowbuf) {
    const int64_t K = j->K;
    const int ngroups = (int)((nn + NR - 1) / NR);
    if (!j->B && j->w->fmt.type == KV_TYPE_BF16) {
        /* bf16 rows: read 32 rows side by side so the panel is written sequentially (bf16 -> fp32 is a shift) */
        static const uint16_t zero_row[1] = {0};
        for (int g = 0; g < ngroups; g++) {
            const uint16_t *r[NR];
            size_t step[NR];
            for (int c = 0; c < NR; c++) {
                const int64_t col = (int64_t)g * NR + c;
                r[c] = col < nn ? (const uint16_t *)(const void *)((const uint8_t *)j->w->data +
                                                                   (size_t)(n0 + col) * j->row_bytes)
                                : zero_row;
                step[c] = col < nn ? 1 : 0;
            }
            uint32_t *dst = (uint32_t *)(void *)(pack + (size_t)g * NR * K);
            for (int64_t k = 0; k < K; k++)
                for (int c = 0; c < NR; c++) dst[k * NR + c] = (uint32_t)kv_rd_u16(r[c] + (size_t)k * step[c]) << 16;
        }
        return;
    }
    for (int64_t c = 0; c < (int64_t)ngroups * NR; c++) {
        float *dst = pack + (size_t)(c / NR) * NR * K + (c % NR);
        if (c >= nn) {
            for (int64_t k = 0; k < K; k++) dst[k * NR] = 0.0f;
            continue;
        }
        const float *src = b_row(j, n0 + c, rowbuf);
        for (int64_t k = 0; k < K; k++) dst[k * NR] = src[k];
    }
}

static void gemm_task(void *ctx, int64_t task, int thread) {
    const gemm_job *j = ctx;
    const int64_t K = j->K, n0 = task * NT, nn = KV_MIN((int64_t)NT, j->N - n0);
    const int ngroups = (int)((nn + NR - 1) / NR);
    float *pack;
    if (j->w && j->w->packed) {
        pack = j->w->packed + (size_t)task * NT * (size_t)K; /* panels cached at load */
    } else {
        pack = j->scratch[thread];
        pack_tile(j, n0, nn, pack, pack + (size_t)NT * K);
    }
    for (int64_t k0 = 0; k0 < K; k0 += KCB) {
        const int64_t kc = KV_MIN((int64_t)KCB, K - k0);
        for (int g = 0; g < ngroups; g++) {
            const float *P = pack + (size_t)g * NR * K + (size_t)k0 * NR;
            const int ncol = (int)KV_MIN((int64_t)NR, nn - (int64_t)g * NR);
            for (int64_t m0 = 0; m0 < j->M; m0 += MR) {
                const int mr = (int)KV_MIN((int64_t)MR, j->M - m0);
                ukernel(j->A + m0 * j->lda + k0, j->lda, mr, P, kc, j->C + m0 * j->ldc + n0 + (int64_t)g * NR,
                        j->ldc, ncol, k0 > 0);
            }
        }
    }
}

static kv_status gemm_run(gemm_job *j, kv_pool *pool, kv_error *err) {
    if (j->M <= 0 || j->N <= 0) return KV_OK;
    if (j->K <= 0) {
        for (int64_t m = 0; m < j->M; m++) memset(j->C + m * j->ldc, 0, (size_t)j->N * sizeof(float));
        return KV_OK;
    }
    const int nthr = pool ? kv_pool_threads(pool) : 1;
    const size_t per = ((size_t)NT * (size_t)j->K + (size_t)j->K + 16) * sizeof(float);
    const size_t per_al = (per + 63) & ~(size_t)63;
    float *buf = kv_malloc_aligned(per_al * (size_t)nthr, err);
    if (!buf) return err ? err->status : KV_ENOMEM;
    float *scratch[256];
    for (int t = 0; t < nthr && t < 256; t++) scratch[t] = (float *)(void *)((char *)buf + per_al * (size_t)t);
    j->scratch = scratch;
    kv_pool_run(pool, (j->N + NT - 1) / NT, gemm_task, j);
    kv_free_aligned(buf);
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* bf16 dot-product GEMM (AVX512-BF16 VDPBF16PS): activations rounded to bf16, bf16 weights, fp32 sums —  */
/* the arithmetic of llama.cpp's CPU path for bf16 models (ggml_vec_dot_bf16). Twice the fp32 rate.        */
/* ---------------------------------------------------------------------------------------------- */

int kv_gemm_bf16_available(void) {
#if defined(KV_GEMM_AVX512) && defined(__AVX512BF16__)
    return 1;
#else
    return 0;
#endif
}

#if defined(KV_GEMM_AVX512) && defined(__AVX512BF16__)
/* C[mr × ncol] (+)= A2[mr × kp pairs] · P[kp pairs × NR] where each u32 holds two consecutive-k bf16. */
static void ukernel_bf16(const uint32_t *A, int64_t lda, int mr, const uint32_t *P, int64_t kpc, float *C,
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

typedef struct gemm_bf16_job {
    int64_t M, N, K2;        /* K2 = K / 2 pairs */
    const uint32_t *A;       /* M × K2 bf16 pairs */
    float *C;
    int64_t ldc;
    const kv_weight *w;      /* bf16 rows */
    size_t row_bytes;
    uint32_t **scratch;
} gemm_bf16_job;

static void gemm_bf16_task(void *ctx, int64_t task, int thread) {
    const gemm_bf16_job *j = ctx;
    const int64_t K2 = j->K2, n0 = task * NT, nn = KV_MIN((int64_t)NT, j->N - n0);
    const int ngroups = (int)((nn + NR - 1) / NR);
    uint32_t *pack = j->scratch[thread];
    for (int64_t c = 0; c < (int64_t)ngroups * NR; c++) {
        uint32_t *dst = pack + (size_t)(c / NR) * NR * K2 + (c % NR);
        if (c >= nn) {
            for (int64_t k = 0; k < K2; k++) dst[k * NR] = 0;
            continue;
        }
        const uint8_t *row = (const uint8_t *)j->w->data + (size_t)(n0 + c) * j->row_bytes;
        for (int64_t k = 0; k < K2; k++) dst[k * NR] = kv_rd_u32(row + 4 * k);
    }
    for (int64_t k0 = 0; k0 < K2; k0 += KCB) {
        const int64_t kc = KV_MIN((int64_t)KCB, K2 - k0);
        for (int g = 0; g < ngroups; g++) {
            const uint32_t *P = pack + (size_t)g * NR * K2 + (size_t)k0 * NR;
            const int ncol = (int)KV_MIN((int64_t)NR, nn - (int64_t)g * NR);
            for (int64_t m0 = 0; m0 < j->M; m0 += MR) {
                const int mr = (int)KV_MIN((int64_t)MR, j->M - m0);
                ukernel_bf16(j->A + m0 * K2 + k0, K2, mr, P, kc, j->C + m0 * j->ldc + n0 + (int64_t)g * NR, j->ldc,
                             ncol, k0 > 0);
            }
        }
    }
}

static kv_status gemm_bf16_run(const kv_weight *w, size_t rb, const float *x, int64_t ntok, float *y, kv_pool *pool,
                               kv_error *err) {
    const int64_t K2 = w->cols / 2;
    uint32_t *A = kv_malloc_aligned((size_t)ntok * (size_t)K2 * sizeof(uint32_t), err);
    if (!A) return err ? err->status : KV_ENOMEM;
    const int64_t total = ntok * w->cols;
    int64_t i = 0;
    for (; i + 32 <= total; i += 32) /* round to nearest even, two vectors at a time */
        _mm512_storeu_si512((void *)((uint16_t *)(void *)A + i),
                            (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    if (i < total) kv_fp32_to_bf16_row(x + i, (uint16_t *)(void *)A + i, (size_t)(total - i));
    const int nthr = pool ? kv_pool_threads(pool) : 1;
    const size_t per = ((size_t)NT * (size_t)K2 * sizeof(uint32_t) + 63) & ~(size_t)63;
    uint32_t *buf = kv_malloc_aligned(per * (size_t)nthr, err);
    if (!buf) { kv_free_aligned(A); return err ? err->status : KV_ENOMEM; }
    uint32_t *scratch[256];
    for (int t = 0; t < nthr && t < 256; t++) scratch[t] = (uint32_t *)(void *)((char *)buf + per * (size_t)t);
    gemm_bf16_job j = {.M = ntok, .N = w->rows, .K2 = K2, .A = A, .C = y, .ldc = w->rows, .w = w, .row_bytes = rb,
                       .scratch = scratch};
    kv_pool_run(pool, (w->rows + NT - 1) / NT, gemm_bf16_task, &j);
    kv_free_aligned(buf);
    kv_free_aligned(A);
    return KV_OK;
}
#endif

void kv_gemm_f32_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, kv_pool *pool) {
    gemm_job j = {.M = M, .N = N, .K = K, .A = A, .lda = lda, .C = C, .ldc = ldc, .B = B, .ldb = ldb};
    if (gemm_run(&j, pool, NULL) != KV_OK) {
        /* out of memory for the packed panels: fall back to an unblocked loop in the same summation order */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) C[m * ldc + n] = kv_dot_f32(A + m * lda, B + n * ldb, K);
    }
}

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

/* Few tokens (decode): one dot product per weight row and token, no packing. */
typedef struct matvec_job {
    const kv_weight *w;
    size_t row_bytes;
    const float *x;
    int64_t ntok;
    float *y;
    float **scratch; /* per thread: one row of cols floats */
} matvec_job;

enum { MV_ROWS = 64 };

static void matvec_task(void *ctx, int64_t task, int thread) {
    const matvec_job *j = ctx;
    const kv_weight *w = j->w;
    const int64_t r0 = task * MV_ROWS, r1 = KV_MIN(r0 + MV_ROWS, w->rows);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *src = (const uint8_t *)w->data + (size_t)r * j->row_bytes;
        if (w->fmt.type == KV_TYPE_BF16) {
            for (int64_t m = 0; m < j->ntok; m++)
                j->y[m * w->rows + r] = dot_bf16_f32((const uint16_t *)(const void *)src, j->x + m * w->cols, w->cols);
            continue;
        }
        gemm_job g = {.K = w->cols, .w = w, .row_bytes = j->row_bytes};
        const float *row = b_row(&g, r, j->scratch[thread]);
        for (int64_t m = 0; m < j->ntok; m++) j->y[m * w->rows + r] = kv_dot_f32(row, j->x + m * w->cols, w->cols);
    }
}

static kv_status matvec_run(matvec_job *j, kv_pool *pool, kv_error *err) {
    const int nthr = pool ? kv_pool_threads(pool) : 1;
    const size_t per = ((size_t)j->w->cols * sizeof(float) + 63) & ~(size_t)63;
    float *buf = kv_malloc_aligned(per * (size_t)nthr, err);
    if (!buf) return err ? err->status : KV_ENOMEM;
    float *scratch[256];
    for (int t = 0; t < nthr && t < 256; t++) scratch[t] = (float *)(void *)((char *)buf + per * (size_t)t);
    j->scratch = scratch;
    kv_pool_run(pool, (j->w->rows + MV_ROWS - 1) / MV_ROWS, matvec_task, j);
    kv_free_aligned(buf);
    return KV_OK;
}

kv_status kv_weight_matmul(const kv_weight *w, const float *x, int64_t ntok, float *y, kv_pool *pool,
                           kv_error *err) {
    return kv_weight_matmul_ex(w, x, ntok, y, 0, pool, err);
}

kv_status kv_weight_matmul_ex(const kv_weight *w, const float *x, int64_t ntok, float *y, int bf16_dot, kv_pool *pool,
                              kv_error *err) {
    if (!w || !w->data || !x || !y || ntok < 0) return kv_fail(err, KV_EINVAL, "kv_weight_matmul: bad arguments");
    const size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
    if (rb == 0) return kv_fail(err, KV_EINVAL, "weight of %lld columns does not fit format %s (block %d)",
                                (long long)w->cols, w->fmt.name, (int)w->fmt.block);
    if (w->fmt.type != KV_TYPE_F32 && w->fmt.type != KV_TYPE_F16 && w->fmt.type != KV_TYPE_BF16 &&
        !w->fmt.dequantize)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s cannot be dequantized", w->fmt.name);
    kv_status st;
#if defined(KV_GEMM_AVX512) && defined(__AVX512BF16__)
    if (bf16_dot && w->fmt.type == KV_TYPE_BF16 && w->cols % 2 == 0 && ntok >= 4) {
        st = gemm_bf16_run(w, rb, x, ntok, y, pool, err);
        goto bias;
    }
#else
    (void)bf16_dot;
#endif
    if (ntok < 4) {
        matvec_job mj = {.w = w, .row_bytes = rb, .x = x, .ntok = ntok, .y = y};
        st = matvec_run(&mj, pool, err);
    } else {
        gemm_job j = {.M = ntok, .N = w->rows, .K = w->cols, .A = x, .lda = w->cols, .C = y, .ldc = w->rows,
                      .w = w, .row_bytes = rb};
        st = gemm_run(&j, pool, err);
    }
#if defined(KV_GEMM_AVX512) && defined(__AVX512BF16__)
bias:
#endif
    if (st != KV_OK) return st;
    if (w->bias)
        for (int64_t m = 0; m < ntok; m++)
            for (int64_t n = 0; n < w->rows; n++) y[m * w->rows + n] += w->bias[n];
    return KV_OK;
}

kv_status kv_weight_prepack(kv_weight *w, kv_error *err) {
    kv_weight_unpack(w);
    const size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
    if (rb == 0 || w->rows <= 0 || w->cols <= 0) return kv_fail(err, KV_EINVAL, "kv_weight_prepack: bad weight");
    const int64_t ntiles = (w->rows + NT - 1) / NT;
    float *p = kv_malloc_aligned((size_t)ntiles * NT * (size_t)w->cols * sizeof(float), err);
    float *rowbuf = kv_malloc((size_t)w->cols * sizeof(float), err);
    if (!p || !rowbuf) { kv_free_aligned(p); free(rowbuf); return KV_ENOMEM; }
    gemm_job j = {.N = w->rows, .K = w->cols, .w = w, .row_bytes = rb};
    for (int64_t t = 0; t < ntiles; t++)
        pack_tile(&j, t * NT, KV_MIN((int64_t)NT, w->rows - t * NT), p + (size_t)t * NT * (size_t)w->cols, rowbuf);
    free(rowbuf);
    w->packed = p;
    return KV_OK;
}

void kv_weight_unpack(kv_weight *w) {
    if (!w) return;
    kv_free_aligned(w->packed);
    w->packed = NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* OpenBLAS (benchmarks and cross-checks)                                                          */
/* ---------------------------------------------------------------------------------------------- */

int kv_have_openblas(void) {
#ifdef KV_HAVE_OPENBLAS
    return 1;
#else
    return 0;
#endif
}

void kv_openblas_set_threads(int n) {
#ifdef KV_HAVE_OPENBLAS
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

void kv_gemm_openblas_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                         int64_t ldb, float *C, int64_t ldc) {
#ifdef KV_HAVE_OPENBLAS
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb,
                0.0f, C, (int)ldc);
#else
    kv_gemm_f32_nt(M, N, K, A, lda, B, ldb, C, ldc, NULL);
#endif
}

/* ---------------------------------------------------------------------------------------------- */
/* vector helpers                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

float kv_dot_f32(const float *a, const float *b, int64_t n) {
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

void kv_axpy_f32(float *y, float a, const float *x, int64_t n) {
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

void kv_softmax_scaled(float *x, int64_t n, float scale) {
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

void kv_swiglu(float *g, const float *u, int64_t n) {
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

double kv_sum_exp_shifted(const float *x, int64_t n, float shift) {
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
