/* matmul.c — blocked, threaded fp32 GEMM C = A·Bᵀ and the weight-seam matmul y = x·Wᵀ for weight rows of any
 * kv_format. Scheme (GotoBLAS / BLIS, "Anatomy of High-Performance Matrix Multiplication", Goto & van de
 * Geijn 2008): each task owns a tile of NT output columns; it dequantizes those weight rows to fp32 and packs
 * them K-major into NR-wide micro-panels (L1-resident per KC block), then sweeps all rows of A in MR-row
 * steps with an MR×NR register micro-kernel (AVX-512: 8 rows × 2 zmm). Every C element is summed in the same
 * order whatever the thread count or the number of rows, so prefill and one-token decode agree bit for bit. */
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/kernels.h"
#include <math.h>
#ifdef KV_HAVE_OPENBLAS
#include <cblas.h>
#endif

enum { MR = KV_GEMM_MR, NR = KV_GEMM_NR, NT = 64, KCB = 256 };

const char *kv_gemm_kernel_name(void) {
    const kv_isa isa = kv_cpu_isa_hw();
    return isa == KV_ISA_SCALAR ? "generic" : kv_isa_name(isa >= KV_ISA_AVX512 ? KV_ISA_AVX512 : isa);
}

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
    const kv_f32_kernels *kt;
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
                j->kt->ukernel(j->A + m0 * j->lda + k0, j->lda, mr, P, kc, j->C + m0 * j->ldc + n0 + (int64_t)g * NR,
                        j->ldc, ncol, k0 > 0);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* scratch: the caller's workspace (grown, never shrunk) or, without one, an allocation per call     */
/* ---------------------------------------------------------------------------------------------- */

void kv_matmul_ws_free(kv_matmul_ws *ws) {
    if (!ws) return;
    kv_free_aligned(ws->buf);
    ws->buf = NULL;
    ws->cap = 0;
}

/* bytes of 64-byte aligned scratch; *owned is set when the caller must kv_free_aligned it. */
static void *scratch_get(kv_matmul_ws *ws, size_t bytes, void **owned, kv_error *err) {
    *owned = NULL;
    if (!ws) return *owned = kv_malloc_aligned(bytes ? bytes : 64, err);
    if (ws->cap < bytes) {
        kv_free_aligned(ws->buf);
        ws->cap = 0;
        if (!(ws->buf = kv_malloc_aligned(bytes, err))) return NULL;
        ws->cap = bytes;
    }
    return ws->buf;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static kv_status gemm_run(gemm_job *j, kv_matmul_ws *ws, kv_pool *pool, kv_error *err) {
    if (j->M <= 0 || j->N <= 0) return KV_OK;
    if (j->K <= 0) {
        for (int64_t m = 0; m < j->M; m++) memset(j->C + m * j->ldc, 0, (size_t)j->N * sizeof(float));
        return KV_OK;
    }
    j->kt = kv_f32_kernels_hw();
    const int nthr = KV_MIN(pool ? kv_pool_threads(pool) : 1, 256);
    const size_t per_al = align64(((size_t)NT * (size_t)j->K + (size_t)j->K + 16) * sizeof(float));
    void *owned;
    char *buf = (j->w && j->w->packed) ? NULL : scratch_get(ws, per_al * (size_t)nthr, &owned, err);
    if (!(j->w && j->w->packed) && !buf) return err ? err->status : KV_ENOMEM;
    float *scratch[256];
    for (int t = 0; t < nthr; t++) scratch[t] = buf ? (float *)(void *)(buf + per_al * (size_t)t) : NULL;
    j->scratch = scratch;
    kv_pool_run(pool, (j->N + NT - 1) / NT, gemm_task, j);
    if (buf) kv_free_aligned(owned);
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* bf16 dot-product GEMM (AVX512-BF16 VDPBF16PS): activations rounded to bf16, bf16 weights, fp32 sums —  */
/* the arithmetic of llama.cpp's CPU path for bf16 models (ggml_vec_dot_bf16). Twice the fp32 rate.        */
/* ---------------------------------------------------------------------------------------------- */

int kv_gemm_bf16_available(void) { return kv_cpu_has_avx512bf16() && kv_f32_kernels_avx512.ukernel_bf16 != NULL; }

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
                kv_f32_kernels_avx512.ukernel_bf16(j->A + m0 * K2 + k0, K2, mr, P, kc,
                                                   j->C + m0 * j->ldc + n0 + (int64_t)g * NR, j->ldc, ncol, k0 > 0);
            }
        }
    }
}

static kv_status gemm_bf16_run(const kv_weight *w, size_t rb, const float *x, int64_t ntok, float *y,
                               kv_matmul_ws *ws, kv_pool *pool, kv_error *err) {
    const int64_t K2 = w->cols / 2;
    const int nthr = KV_MIN(pool ? kv_pool_threads(pool) : 1, 256);
    const size_t a_bytes = align64((size_t)ntok * (size_t)K2 * sizeof(uint32_t));
    const size_t per = align64((size_t)NT * (size_t)K2 * sizeof(uint32_t));
    void *owned;
    char *buf = scratch_get(ws, a_bytes + per * (size_t)nthr, &owned, err);
    if (!buf) return err ? err->status : KV_ENOMEM;
    uint32_t *A = (uint32_t *)(void *)buf;
    kv_f32_kernels_avx512.round_bf16(x, (uint16_t *)(void *)A, ntok * w->cols);
    uint32_t *scratch[256];
    for (int t = 0; t < nthr; t++) scratch[t] = (uint32_t *)(void *)(buf + a_bytes + per * (size_t)t);
    gemm_bf16_job j = {.M = ntok, .N = w->rows, .K2 = K2, .A = A, .C = y, .ldc = w->rows, .w = w, .row_bytes = rb,
                       .scratch = scratch};
    kv_pool_run(pool, (w->rows + NT - 1) / NT, gemm_bf16_task, &j);
    kv_free_aligned(owned);
    return KV_OK;
}

void kv_gemm_f32_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, kv_pool *pool) {
    gemm_job j = {.M = M, .N = N, .K = K, .A = A, .lda = lda, .C = C, .ldc = ldc, .B = B, .ldb = ldb};
    if (gemm_run(&j, NULL, pool, NULL) != KV_OK) {
        /* out of memory for the packed panels: fall back to an unblocked loop in the same summation order */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) C[m * ldc + n] = kv_dot_f32(A + m * lda, B + n * ldb, K);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* few tokens with fp32 activations (decode): one dot product per weight row and token, no packing    */
/* ---------------------------------------------------------------------------------------------- */
typedef struct matvec_job {
    const kv_weight *w;
    size_t row_bytes;
    const float *x;
    int64_t ntok;
    float *y;
    const kv_f32_kernels *kt;
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
                j->y[m * w->rows + r] = j->kt->dot_bf16((const uint16_t *)(const void *)src, j->x + m * w->cols, w->cols);
            continue;
        }
        gemm_job g = {.K = w->cols, .w = w, .row_bytes = j->row_bytes};
        const float *row = b_row(&g, r, j->scratch[thread]);
        for (int64_t m = 0; m < j->ntok; m++) j->y[m * w->rows + r] = j->kt->dot(row, j->x + m * w->cols, w->cols);
    }
}

static kv_status matvec_run(matvec_job *j, kv_matmul_ws *ws, kv_pool *pool, kv_error *err) {
    const int nthr = KV_MIN(pool ? kv_pool_threads(pool) : 1, 256);
    const size_t per = align64((size_t)j->w->cols * sizeof(float));
    void *owned;
    char *buf = scratch_get(ws, per * (size_t)nthr, &owned, err);
    if (!buf) return err ? err->status : KV_ENOMEM;
    float *scratch[256];
    for (int t = 0; t < nthr; t++) scratch[t] = (float *)(void *)(buf + per * (size_t)t);
    j->scratch = scratch;
    j->kt = kv_f32_kernels_hw();
    kv_pool_run(pool, (j->w->rows + MV_ROWS - 1) / MV_ROWS, matvec_task, j);
    kv_free_aligned(owned);
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* integer dot products on activations quantized per block (llama.cpp's arithmetic): GEMV and GEMM     */
/* ---------------------------------------------------------------------------------------------- */
/* GEMM = tiles of QROWS weight rows × QTOK tokens, both L1/L2-resident, each (row, token) one kernel dot:
 * the same arithmetic for one token or many, whatever the thread count. */
enum { QROWS_GEMV = 16, QROWS_GEMM = 32, QTOK = 8 };

typedef struct qmm_job {
    const kv_qkernel *k;
    const uint8_t *w;
    size_t row_bytes;
    int64_t rows, cols, ntok, rows_per_task;
    const float *x;
    uint8_t *act;
    size_t act_bytes;
    float *y;
} qmm_job;

static void act_task(void *ctx, int64_t t, int thread) {
    const qmm_job *j = ctx;
    kv_act_quantize(j->k->act, j->x + t * j->cols, j->cols, j->act + (size_t)t * j->act_bytes);
}

static void qmm_task(void *ctx, int64_t task, int thread) {
    const qmm_job *j = ctx;
    const kv_qkernel *k = j->k;
    const int64_t r0 = task * j->rows_per_task, r1 = KV_MIN(r0 + j->rows_per_task, j->rows);
    if (k->tile) {
        /* tiles of tile_rows x tile_toks: each weight block is read once per tile_toks tokens */
        for (int64_t t0 = 0; t0 < j->ntok; t0 += k->tile_toks) {
            const int nt = (int)KV_MIN((int64_t)k->tile_toks, j->ntok - t0);
            for (int64_t r = r0; r < r1; r += k->tile_rows)
                k->tile(j->cols, j->w + (size_t)r * j->row_bytes, j->row_bytes, (int)KV_MIN((int64_t)k->tile_rows, r1 - r),
                        j->act + (size_t)t0 * j->act_bytes, j->act_bytes, nt, j->y + t0 * j->rows + r, j->rows);
        }
        return;
    }
    for (int64_t t0 = 0; t0 < j->ntok; t0 += QTOK) {
        const int64_t t1 = KV_MIN(t0 + QTOK, j->ntok);
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *wr = j->w + (size_t)r * j->row_bytes;
            for (int64_t t = t0; t < t1; t++)
                j->y[t * j->rows + r] = k->dot(j->cols, wr, j->act + (size_t)t * j->act_bytes);
        }
    }
}

static kv_status qmm_run(const kv_weight *w, const kv_qkernel *k, size_t rb, const float *x, int64_t ntok, float *y,
                         kv_matmul_ws *ws, kv_pool *pool, kv_error *err) {
    const size_t ab = kv_act_row_bytes(k->act, w->cols);
    void *owned = NULL;
    /* fp32-activation kernels read x as it is */
    uint8_t *act = k->act == KV_ACT_F32 ? (uint8_t *)(uintptr_t)x : scratch_get(ws, ab * (size_t)ntok, &owned, err);
    if (!act) return err ? err->status : KV_ENOMEM;
    qmm_job j = {.k = k, .w = w->data, .row_bytes = rb, .rows = w->rows, .cols = w->cols, .ntok = ntok,
                 .rows_per_task = ntok == 1 ? QROWS_GEMV : QROWS_GEMM, .x = x, .act = act, .act_bytes = ab, .y = y};
    if (k->act != KV_ACT_F32) kv_pool_run(ntok > 1 ? pool : NULL, ntok, act_task, &j);
    kv_pool_run(pool, (w->rows + j.rows_per_task - 1) / j.rows_per_task, qmm_task, &j);
    kv_free_aligned(owned);
    return KV_OK;
}

/* The packed-weight kernel kv_weight_matmul_opt runs w through, or NULL for the dequantizing fp32 path: integer
 * kernels with act_q8; fp32-activation kernels (exact arithmetic up to the order of the fp32 sums) with act_q8,
 * and without it for decode (few tokens: prefill keeps the blocked GEMM, which dequantizes each tile once). */
static const kv_qkernel *packed_kernel(const kv_weight *w, int act_q8, int64_t ntok) {
    const int q8 = act_q8 && !w->packed;
    const kv_qkernel *k = kv_qkernel_find_act(&w->fmt, kv_cpu_isa(), q8);
    if (!k) return NULL;
    if (k->act == KV_ACT_F32 && ntok < 4) return k;
    return q8 ? k : NULL;
}

const char *kv_weight_kernel_name(const kv_weight *w, int act_q8) {
    const kv_qkernel *k = packed_kernel(w, act_q8, 1);
    return !k ? "fp32" : k->act == KV_ACT_F32 ? "fp32-lut" : "int8-dot";
}

/* ---------------------------------------------------------------------------------------------- */
/* the weight seam                                                                                 */
/* ---------------------------------------------------------------------------------------------- */

kv_status kv_weight_matmul(const kv_weight *w, const float *x, int64_t ntok, float *y, kv_pool *pool,
                           kv_error *err) {
    return kv_weight_matmul_opt(w, x, ntok, y, NULL, pool, err);
}

kv_status kv_weight_matmul_ex(const kv_weight *w, const float *x, int64_t ntok, float *y, int bf16_dot, kv_pool *pool,
                              kv_error *err) {
    const kv_matmul_opts o = {.bf16_dot = bf16_dot};
    return kv_weight_matmul_opt(w, x, ntok, y, &o, pool, err);
}

kv_status kv_weight_matmul_opt(const kv_weight *w, const float *x, int64_t ntok, float *y, const kv_matmul_opts *opts,
                               kv_pool *pool, kv_error *err) {
    if (!w || !w->data || !x || !y || ntok < 0) return kv_fail(err, KV_EINVAL, "kv_weight_matmul: bad arguments");
    const kv_matmul_opts o = opts ? *opts : (kv_matmul_opts){0};
    const size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
    if (rb == 0) return kv_fail(err, KV_EINVAL, "weight of %lld columns does not fit format %s (block %d)",
                                (long long)w->cols, w->fmt.name, (int)w->fmt.block);
    if (w->fmt.type != KV_TYPE_F32 && w->fmt.type != KV_TYPE_F16 && w->fmt.type != KV_TYPE_BF16 &&
        !w->fmt.dequantize)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s cannot be dequantized", w->fmt.name);
    if (ntok == 0) return KV_OK;
    const kv_qkernel *qk = packed_kernel(w, o.act_q8, ntok);
    kv_status st;
    if (qk) {
        st = qmm_run(w, qk, rb, x, ntok, y, o.ws, pool, err);
    } else if (o.bf16_dot && w->fmt.type == KV_TYPE_BF16 && w->cols % 2 == 0 && ntok >= 4 && kv_gemm_bf16_available()) {
        st = gemm_bf16_run(w, rb, x, ntok, y, o.ws, pool, err);
    } else if (ntok < 4) {
        matvec_job mj = {.w = w, .row_bytes = rb, .x = x, .ntok = ntok, .y = y};
        st = matvec_run(&mj, o.ws, pool, err);
    } else {
        gemm_job j = {.M = ntok, .N = w->rows, .K = w->cols, .A = x, .lda = w->cols, .C = y, .ldc = w->rows,
                      .w = w, .row_bytes = rb};
        st = gemm_run(&j, o.ws, pool, err);
    }
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
/* vector helpers: the CPU's table (kernels.h)                                                     */
/* ---------------------------------------------------------------------------------------------- */

float kv_dot_f32(const float *a, const float *b, int64_t n) { return kv_f32_kernels_hw()->dot(a, b, n); }
void kv_axpy_f32(float *y, float a, const float *x, int64_t n) { kv_f32_kernels_hw()->axpy(y, a, x, n); }
void kv_softmax_scaled(float *x, int64_t n, float scale) { kv_f32_kernels_hw()->softmax_scaled(x, n, scale); }
void kv_swiglu(float *g, const float *u, int64_t n) { kv_f32_kernels_hw()->swiglu(g, u, n); }
double kv_sum_exp_shifted(const float *x, int64_t n, float shift) {
    return kv_f32_kernels_hw()->sum_exp_shifted(x, n, shift);
}
