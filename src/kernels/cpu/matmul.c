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

static void gemm_task(void *ctx, int64_t task, int thread) {
    const gemm_job *j = ctx;
    const int64_t K = j->K, n0 = task * NT, nn = KV_MIN((int64_t)NT, j->N - n0);
    const int ngroups = (int)((nn + NR - 1) / NR);
    float *pack = j->scratch[thread];
    float *rowbuf = pack + (size_t)NT * K;
    /* pack: group g holds columns n0+32g.. as [K][NR], zero beyond nn */
    for (int64_t c = 0; c < (int64_t)ngroups * NR; c++) {
        float *dst = pack + (size_t)(c / NR) * NR * K + (c % NR);
        if (c >= nn) {
            for (int64_t k = 0; k < K; k++) dst[k * NR] = 0.0f;
            continue;
        }
        const float *src = b_row(j, n0 + c, rowbuf);
        for (int64_t k = 0; k < K; k++) dst[k * NR] = src[k];
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

void kv_gemm_f32_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, kv_pool *pool) {
    gemm_job j = {.M = M, .N = N, .K = K, .A = A, .lda = lda, .C = C, .ldc = ldc, .B = B, .ldb = ldb};
    if (gemm_run(&j, pool, NULL) != KV_OK) {
        /* out of memory for the packed panels: fall back to an unblocked loop in the same summation order */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) C[m * ldc + n] = kv_dot_f32(A + m * lda, B + n * ldb, K);
    }
}

kv_status kv_weight_matmul(const kv_weight *w, const float *x, int64_t ntok, float *y, kv_pool *pool,
                           kv_error *err) {
    if (!w || !w->data || !x || !y || ntok < 0) return kv_fail(err, KV_EINVAL, "kv_weight_matmul: bad arguments");
    const size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
    if (rb == 0) return kv_fail(err, KV_EINVAL, "weight of %lld columns does not fit format %s (block %d)",
                                (long long)w->cols, w->fmt.name, (int)w->fmt.block);
    if (w->fmt.type != KV_TYPE_F32 && w->fmt.type != KV_TYPE_F16 && w->fmt.type != KV_TYPE_BF16 &&
        !w->fmt.dequantize)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s cannot be dequantized", w->fmt.name);
    gemm_job j = {.M = ntok, .N = w->rows, .K = w->cols, .A = x, .lda = w->cols, .C = y, .ldc = w->rows,
                  .w = w, .row_bytes = rb};
    kv_status st = gemm_run(&j, pool, err);
    if (st != KV_OK) return st;
    if (w->bias)
        for (int64_t m = 0; m < ntok; m++)
            for (int64_t n = 0; n < w->rows; n++) y[m * w->rows + n] += w->bias[n];
    return KV_OK;
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
