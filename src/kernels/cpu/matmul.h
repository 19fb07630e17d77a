/* matmul.h — CPU kernels of the forward pass (internal): a blocked, threaded fp32 GEMM C = A·Bᵀ whose B
 * rows are weight rows of any kv_format (dequantized tile by tile into fp32 panels: the "weight seam"), and
 * the small vector helpers the attention uses. Source: the GotoBLAS/BLIS blocking scheme (packed B
 * micro-panels kept in L1, A blocks in L2, an MR x NR register micro-kernel). */
#ifndef KV_KERNELS_CPU_MATMUL_H
#define KV_KERNELS_CPU_MATMUL_H

#include "core/core.h"

/* C[M×N] = A[M×K] · B[N×K]ᵀ with fp32 B rows (row stride ldb floats); threaded over column tiles of C.
 * Results are identical for every thread count (each C element is summed in one fixed order). */
void kv_gemm_f32_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, kv_pool *pool);

/* kv_weight_matmul with a choice of arithmetic for bf16 weights: bf16_dot = 1 rounds the activations to bf16
 * and uses AVX512-BF16 dot products (llama.cpp's CPU arithmetic for bf16 models; about twice as fast, logits
 * differ by ~1e-2). Ignored (exact fp32 path) for other formats, fewer than 4 tokens, or without AVX512-BF16. */
kv_status kv_weight_matmul_ex(const kv_weight *w, const float *x, int64_t ntok, float *y, int bf16_dot,
                              kv_pool *pool, kv_error *err);
int kv_gemm_bf16_available(void);

/* Scratch of the weight matmuls, owned by the caller (a kv_context): grown on demand, never shrunk, so the
 * forward pass allocates nothing per call once warm. One workspace per concurrent caller. */
typedef struct kv_matmul_ws {
    void *buf;
    size_t cap;
} kv_matmul_ws;
void kv_matmul_ws_free(kv_matmul_ws *ws);

typedef struct kv_matmul_opts {
    int bf16_dot;     /* as kv_weight_matmul_ex */
    int act_q8;       /* 1: formats with an integer kernel (kernels.h kv_qkernel_find) multiply activations
                       * quantized to 8 bits per block (llama.cpp's q8_0 / q8_K arithmetic) with integer dot
                       * products, and formats with an fp32-activation kernel use it for any token count;
                       * 0: exact fp32 activations (fp32-activation kernels for fewer than 4 tokens) */
    kv_matmul_ws *ws; /* NULL: scratch allocated per call */
} kv_matmul_opts;
/* y = x·Wᵀ (+ b) with those options (opts NULL: all zero). */
kv_status kv_weight_matmul_opt(const kv_weight *w, const float *x, int64_t ntok, float *y, const kv_matmul_opts *opts,
                               kv_pool *pool, kv_error *err);
/* "int8-dot" when act_q8 would run w through an integer kernel on this CPU, "fp32-lut" when a kernel on fp32
 * activations reads w's packed bytes (decode always, prefill with act_q8), else "fp32" (dequantize + fp32). */
const char *kv_weight_kernel_name(const kv_weight *w, int act_q8);

/* Caches w as packed fp32 GEMM panels (w->packed, 64-byte aligned; the exact path then skips dequantize + pack
 * per call) / drops the cache. Whoever changes w->data must call kv_weight_unpack. */
kv_status kv_weight_prepack(kv_weight *w, kv_error *err);
void kv_weight_unpack(kv_weight *w);

/* Name of the fp32 micro-kernel this CPU runs ("avx512", "avx2", "generic"). */
const char *kv_gemm_kernel_name(void);

/* 1 when OpenBLAS was found at build time; kv_gemm_openblas_nt then runs cblas_sgemm (benchmarks). */
int kv_have_openblas(void);
void kv_gemm_openblas_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                         int64_t ldb, float *C, int64_t ldc);

/* OpenBLAS's own thread count (a process-wide setting of OpenBLAS: benchmarks only). */
void kv_openblas_set_threads(int n);

/* Dot product and y += a·x over n floats (fixed summation order: results do not depend on threads). */
float kv_dot_f32(const float *a, const float *b, int64_t n);
void kv_axpy_f32(float *y, float a, const float *x, int64_t n);

/* x <- softmax(scale · x) over n floats (vectorized exp, ~1 ulp). */
void kv_softmax_scaled(float *x, int64_t n, float scale);
/* Σ exp(x[i] - shift) (vectorized exp, double accumulation): log-sum-exp of a logits row. */
double kv_sum_exp_shifted(const float *x, int64_t n, float shift);
/* g <- silu(g) · u (SwiGLU), n floats. */
void kv_swiglu(float *g, const float *u, int64_t n);

#endif
