/* w8a8.cu — W8A8 GEMM for prefill: int8 (s8 x s8 -> s32) or FP8 E4M3 (e4m3 x e4m3 -> f32) weights with one fp32
 * scale per output row, activations quantized per token on the fly (SmoothQuant's / LLM.int8()'s vector-wise
 * scheme: s_token = amax / 127 or / 448), the scales applied in the GEMM epilogue: y = s_token * s_row * sum q_x q_w,
 * stored bf16.
 * One pipeline for every variant: 128 x 128 block tiles, k slabs of 128 bytes through cp.async stages written in
 * the 128-byte swizzle that wgmma's shared-memory descriptors read (ldmatrix reads the same tiles); the MMA form
 * (wgmma m64n128k32 by two warpgroups, or mma.sync m16n8k32 by eight warps) is the kernel's Op parameter. */
#include "kernels/cuda/cuda_util.h"
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

struct kv_cuda_w8 {
    int fp8;
    int64_t rows, cols;
    int8_t *q;
    float *scale;
};

#define BM 128
#define BN 128
#define BK 128
#define TILE_BYTES (BM * BK)

/* ---------------------------------------------------------------------------------------------- */
/* per-token quantization                                                                          */
/* ---------------------------------------------------------------------------------------------- */
template <int FP8>
__global__ void __launch_bounds__(256) quant_rows(const __half *x, int K, int8_t *q, float *s) {
    const size_t row = blockIdx.x;
    const uint4 *xr = reinterpret_cast<const uint4 *>(x + row * K);
    float amax = 0.0f;
    for (int i = threadIdx.x; i < K / 8; i += 256) {
        uint4 v = __ldg(xr + i);
        const __half2 *h = reinterpret_cast<const __half2 *>(&v);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float2 f = __half22float2(h[j]);
            amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y)));
        }
    }
    __shared__ float red[8];
#pragma unroll
    for (int o = 16; o; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = amax;
    __syncthreads();
    amax = red[0];
#pragma unroll
    for (int w = 1; w < 8; w++) amax = fmaxf(amax, red[w]);
    const float sc = amax > 0.0f ? amax / (FP8 ? 448.0f : 127.0f) : 1.0f;
    uint2 *qr = reinterpret_cast<uint2 *>(q + row * K);
    for (int i = threadIdx.x; i < K / 8; i += 256) {
        uint4 v = __ldg(xr + i);
        const __half2 *h = reinterpret_cast<const __half2 *>(&v);
        uint8_t out[8];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float2 f = __half22float2(h[j]);
            const float a = f.x / sc, b = f.y / sc;
            if (FP8) {
                out[2 * j] = (uint8_t)__nv_cvt_float_to_fp8(a, __NV_SATFINITE, __NV_E4M3);
                out[2 * j + 1] = (uint8_t)__nv_cvt_float_to_fp8(b, __NV_SATFINITE, __NV_E4M3);
            } else {
                out[2 * j] = (uint8_t)(int8_t)fminf(127.0f, fmaxf(-127.0f, rintf(a)));
                out[2 * j + 1] = (uint8_t)(int8_t)fminf(127.0f, fmaxf(-127.0f, rintf(b)));
            }
        }
        uint2 o;
        memcpy(&o, out, 8);
        qr[i] = o;
    }
    if (threadIdx.x == 0) s[row] = sc;
}

/* ---------------------------------------------------------------------------------------------- */
/* GEMM                                                                                            */
/* ---------------------------------------------------------------------------------------------- */
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void ldsm4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

/* One 128 x 128-byte tile of a row-major matrix (rows r0.., k bytes k0..) into swizzled shared memory;
 * rows >= nrows are zero-filled. */
__device__ __forceinline__ void load_tile(uint32_t dst, const int8_t *src, int64_t ld, int r0, int nrows, int k0) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int q = threadIdx.x + 256 * j, row = q >> 3, c = q & 7;
        const int gr = r0 + row;
        const int8_t *s = src + (int64_t)(gr < nrows ? gr : 0) * ld + k0 + c * 16;
        cp_async16(dst + row * BK + ((c ^ (row & 7)) << 4), s, gr < nrows ? 16 : 0);
    }
}

/* Shared-memory matrix descriptor of a K-major tile with 128-byte rows in the 128-byte swizzle (the XOR pattern
 * load_tile writes): start address, leading offset 16 (unused by this layout), stride 1024 bytes between 8-row
 * groups, swizzle mode 1. The tile base must be 1024-byte aligned. */
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

#define WGMMA_D64                                                                                                  \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "  \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "    \
    "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define WGMMA_OUT64(c)                                                                                             \
    c(d[0]), c(d[1]), c(d[2]), c(d[3]), c(d[4]), c(d[5]), c(d[6]), c(d[7]), c(d[8]), c(d[9]), c(d[10]), c(d[11]),  \
        c(d[12]), c(d[13]), c(d[14]), c(d[15]), c(d[16]), c(d[17]), c(d[18]), c(d[19]), c(d[20]), c(d[21]),         \
        c(d[22]), c(d[23]), c(d[24]), c(d[25]), c(d[26]), c(d[27]), c(d[28]), c(d[29]), c(d[30]), c(d[31]),         \
        c(d[32]), c(d[33]), c(d[34]), c(d[35]), c(d[36]), c(d[37]), c(d[38]), c(d[39]), c(d[40]), c(d[41]),         \
        c(d[42]), c(d[43]), c(d[44]), c(d[45]), c(d[46]), c(d[47]), c(d[48]), c(d[49]), c(d[50]), c(d[51]),         \
        c(d[52]), c(d[53]), c(d[54]), c(d[55]), c(d[56]), c(d[57]), c(d[58]), c(d[59]), c(d[60]), c(d[61]),         \
        c(d[62]), c(d[63])
#define KV_R(x) "+r"(x)
#define KV_F(x) "+f"(x)

/* wgmma (sm_90a): one warpgroup's 64 x 128 x 32 product, A (tokens) and B (weight rows) both K-major in shared
 * memory (the only layout 8-bit operands take), 64 accumulators per thread: int32 for s8, fp32 for e4m3 (whose
 * form takes the two immediate operand scales, here +1). */
__device__ __forceinline__ void wgmma_k32(int *d, uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 " WGMMA_D64 ", %64, %65, p;\n}\n"
                 : WGMMA_OUT64(KV_R)
                 : "l"(da), "l"(db));
}
__device__ __forceinline__ void wgmma_k32(float *d, uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " WGMMA_D64 ", %64, %65, p, 1, 1;\n}\n"
                 : WGMMA_OUT64(KV_F)
                 : "l"(da), "l"(db));
}

__device__ __forceinline__ void mma_k32(int *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_k32(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int FP8> struct acc_t { typedef int T; };
template <> struct acc_t<1> { typedef float T; };

/* The two MMA forms of a 128 x 128 block tile over one 128-byte k slab of the shared-memory tiles, each with its
 * accumulators and a walk over them in (row, col) pairs for the epilogue.
 * wgmma: two warpgroups of 64 tokens x 128 rows; INFLIGHT 0 waits for the slab's MMAs before returning, 1 leaves
 * them running until the next slab's are issued (the caller then keeps one more stage of shared memory). */
template <int FP8, int INFLIGHT>
struct wgmma_op {
    typename acc_t<FP8>::T acc[64];
    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < 64; i++) acc[i] = 0;
    }
    __device__ __forceinline__ void slab(uint32_t a_st, uint32_t b_st) {
        const int wg = threadIdx.x >> 7;
        a_st += wg * 64 * BK;
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
        for (int ks = 0; ks < BK / 32; ks++) wgmma_k32(acc, sw128_desc(a_st + ks * 32), sw128_desc(b_st + ks * 32));
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(INFLIGHT) : "memory");
    }
    __device__ __forceinline__ void drain() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
    template <class F>
    __device__ __forceinline__ void each(F f) const {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                f((warp >> 2) * 64 + (warp & 3) * 16 + g + 8 * h, j * 8 + 2 * t, (float)acc[4 * j + 2 * h],
                  (float)acc[4 * j + 2 * h + 1]);
    }
};

/* mma.sync m16n8k32: eight warps of 64 tokens x 32 rows, fragments by ldmatrix from the same swizzled tiles. */
template <int FP8>
struct mma_sync_op {
    typename acc_t<FP8>::T acc[4][4][4];
    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < 64; i++) (&acc[0][0][0])[i] = 0;
    }
    __device__ __forceinline__ void slab(uint32_t a_st, uint32_t b_st) {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wm = warp >> 2, wn = warp & 3;
#pragma unroll
        for (int ks = 0; ks < BK / 32; ks++) {
            uint32_t af[4][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int row = wm * 64 + i * 16 + (lane & 7) + 8 * ((lane >> 3) & 1), ch = ks * 2 + (lane >> 4);
                ldsm4(a_st + row * BK + ((ch ^ (row & 7)) << 4), af[i][0], af[i][1], af[i][2], af[i][3]);
            }
#pragma unroll
            for (int jp = 0; jp < 2; jp++) {
                const int n = wn * 32 + jp * 16 + (lane & 7) + 8 * (lane >> 4), ch = ks * 2 + ((lane >> 3) & 1);
                ldsm4(b_st + n * BK + ((ch ^ (n & 7)) << 4), bf[2 * jp][0], bf[2 * jp][1], bf[2 * jp + 1][0],
                      bf[2 * jp + 1][1]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) mma_k32(acc[i][j], af[i], bf[j][0], bf[j][1]);
        }
    }
    __device__ __forceinline__ void drain() {}
    template <class F>
    __device__ __forceinline__ void each(F f) const {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wm = warp >> 2, wn = warp & 3, g = lane >> 2,
                  t = lane & 3;
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    f(wm * 64 + i * 16 + g + 8 * h, wn * 32 + j * 8 + 2 * t, (float)acc[i][j][2 * h],
                      (float)acc[i][j][2 * h + 1]);
    }
};

/* Y[M][N] (bf16) = sx[m] sw[n] sum_k X[m][k] W[n][k]: block tile 128 tokens x 128 weight rows; k slabs of 128
 * bytes through ST cp.async stages, AHEAD of them loading while Op works on the current one (ST - AHEAD - 1
 * stages stay with MMAs still running: wgmma_op<., 1> needs ST = AHEAD + 2). */
template <class Op, int ST, int AHEAD>
__global__ void __launch_bounds__(256) w8_gemm(const int8_t *X, const float *sx, const int8_t *W, const float *sw,
                                                __nv_bfloat16 *Y, int M, int N, int K) {
    extern __shared__ __align__(1024) uint8_t sh[];
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const uint32_t base = smem_u32(sh), sA = (base + 1023) & ~1023u, sB = sA + ST * TILE_BYTES;
    Op op;
    op.zero();
    const int KT = K / BK;
#pragma unroll
    for (int s = 0; s < AHEAD; s++) {
        if (s < KT) {
            load_tile(sA + s * TILE_BYTES, X, K, m0, M, s * BK);
            load_tile(sB + s * TILE_BYTES, W, K, n0, N, s * BK);
        }
        cp_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        cp_wait<AHEAD - 1>();
        /* cp.async wrote through the generic proxy; wgmma reads through the async proxy */
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();
        const int pf = kt + AHEAD;
        if (pf < KT) {
            load_tile(sA + (pf % ST) * TILE_BYTES, X, K, m0, M, pf * BK);
            load_tile(sB + (pf % ST) * TILE_BYTES, W, K, n0, N, pf * BK);
        }
        cp_commit();
        op.slab(sA + (kt % ST) * TILE_BYTES, sB + (kt % ST) * TILE_BYTES);
    }
    op.drain();
    cp_wait<0>();
    op.each([&](int r, int c, float v0, float v1) {
        const int row = m0 + r, col = n0 + c;
        if (row >= M) return;
        const float s = __ldg(sx + row);
        *reinterpret_cast<__nv_bfloat162 *>(Y + (int64_t)row * N + col) =
            __floats2bfloat162_rn(v0 * s * __ldg(sw + col), v1 * s * __ldg(sw + col + 1));
    });
}

/* The kernel variants (kv_cuda_w8_matmul's variant argument) and their shared-memory sizes. */
typedef void (*w8_kernel_fn)(const int8_t *, const float *, const int8_t *, const float *, __nv_bfloat16 *, int, int,
                             int);
struct w8_variant {
    w8_kernel_fn fn[2]; /* int8, fp8 */
    int stages;
};
/* fp8 has no wgmma entry: its wgmma form (m64n128k32.f32.e4m3.e4m3 on the same descriptors as int8's) gave wrong
 * sums on the H100 (relative error 1 to 8 against the emulation, docs/RESULTS.md) while int8's matched. */
static const w8_variant k_w8_variants[] = {
    /* KV_W8_WGMMA: 3 stages, 2 loading ahead, each slab's MMAs waited for */
    {{w8_gemm<wgmma_op<0, 0>, 3, 2>, NULL}, 3},
    /* KV_W8_WGMMA_OVERLAP: 4 stages, 2 loading ahead, one slab's MMAs left running */
    {{w8_gemm<wgmma_op<0, 1>, 4, 2>, NULL}, 4},
    /* KV_W8_MMA_SYNC */
    {{w8_gemm<mma_sync_op<0>, 3, 2>, w8_gemm<mma_sync_op<1>, 3, 2>}, 3},
};
static size_t w8_smem(int stages) { return (size_t)2 * stages * TILE_BYTES + 1024; /* + alignment to 1024 */ }

/* ---------------------------------------------------------------------------------------------- */
/* ---------------------------------------------------------------------------------------------- */
/* host                                                                                            */
/* ---------------------------------------------------------------------------------------------- */
extern "C" void kv_cuda_w8_free(kv_cuda_w8 *w) {
    if (!w) return;
    cudaFree(w->q);
    cudaFree(w->scale);
    free(w);
}

static kv_status w8_alloc(int fp8, int64_t rows, int64_t cols, kv_cuda_w8 **out, kv_error *err) {
    *out = NULL;
    if (rows <= 0 || rows % BN || cols <= 0 || cols % BK)
        return kv_fail(err, KV_EUNSUPPORTED, "W8A8 GPU GEMM: weights %lld x %lld (rows must be a multiple of %d, cols of %d)",
                       (long long)rows, (long long)cols, BN, BK);
    kv_cuda_w8 *w = (kv_cuda_w8 *)calloc(1, sizeof *w);
    if (!w) return kv_fail(err, KV_ENOMEM, "out of memory");
    w->fp8 = fp8, w->rows = rows, w->cols = cols;
    cudaError_t e = cudaMalloc((void **)&w->q, (size_t)(rows * cols));
    if (e == cudaSuccess) e = cudaMalloc((void **)&w->scale, (size_t)rows * 4);
    if (e != cudaSuccess) {
        kv_cuda_w8_free(w);
        return kv_fail(err, KV_ENOMEM, "CUDA: allocating W8A8 weights: %s", cudaGetErrorString(e));
    }
    /* the GEMMs' shared-memory limits, raised once here rather than at each launch (launches may be captured) */
    for (size_t v = 0; v < sizeof k_w8_variants / sizeof k_w8_variants[0] && e == cudaSuccess; v++)
        if (k_w8_variants[v].fn[fp8 ? 1 : 0])
            e = cudaFuncSetAttribute(k_w8_variants[v].fn[fp8 ? 1 : 0], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)w8_smem(k_w8_variants[v].stages));
    if (e != cudaSuccess) {
        kv_cuda_w8_free(w);
        return kv_fail(err, KV_EIO, "CUDA: W8A8 GEMM shared memory: %s", cudaGetErrorString(e));
    }
    *out = w;
    return KV_OK;
}

extern "C" kv_status kv_cuda_w8_upload(const kv_gpu_pack8 *p, kv_cuda_w8 **out, kv_error *err) {
    kv_status st = w8_alloc(p->fp8, p->rows, p->cols, out, err);
    if (st != KV_OK) return st;
    cudaError_t e = cudaMemcpy((*out)->q, p->q, (size_t)(p->rows * p->cols), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy((*out)->scale, p->scale, (size_t)p->rows * 4, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        kv_cuda_w8_free(*out);
        *out = NULL;
        return kv_fail(err, KV_EIO, "CUDA: uploading W8A8 weights: %s", cudaGetErrorString(e));
    }
    return KV_OK;
}

__global__ void w8_fill(int8_t *q, size_t n, float *s, size_t rows, int fp8, unsigned long long seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const unsigned long long h = kv_cu_hash(seed ^ (i * 0x9E3779B97F4A7C15ull));
        /* int8: any of -127..127; e4m3: finite codes of magnitude <= 448 (0x7F / 0xFF are NaN) */
        uint8_t b = (uint8_t)(h >> 56);
        if (!fp8 && b == 0x80) b = 0x81;
        if (fp8 && (b & 0x7F) == 0x7F) b ^= 1;
        q[i] = (int8_t)b;
        if (i < rows) s[i] = 1e-3f * (1.0f + (float)(h & 1023) / 1024.0f);
    }
}

extern "C" kv_status kv_cuda_w8_random(int fp8, int64_t rows, int64_t cols, uint64_t seed, kv_cuda_w8 **out, kv_error *err) {
    kv_status st = w8_alloc(fp8, rows, cols, out, err);
    if (st != KV_OK) return st;
    w8_fill<<<1024, 256>>>((*out)->q, (size_t)(rows * cols), (*out)->scale, (size_t)rows, fp8, seed);
    KV_CU_LAUNCH("w8_fill", err);
    KV_CU(cudaDeviceSynchronize(), err);
    return KV_OK;
}

extern "C" size_t kv_cuda_w8_workspace(const kv_cuda_w8 *w, int64_t m) {
    return (size_t)(m * w->cols) + 256 + (size_t)m * 4;
}

extern "C" kv_status kv_cuda_w8_matmul(const kv_cuda_w8 *w, const void *x_dev, int64_t m, void *y_dev, void *ws_dev,
                                       int variant, void *stream, kv_error *err) {
    if (!w || !x_dev || !y_dev || !ws_dev) return kv_fail(err, KV_EINVAL, "kv_cuda_w8_matmul: NULL argument");
    if (m < 1 || m > (1 << 24)) return kv_fail(err, KV_EINVAL, "kv_cuda_w8_matmul: %lld tokens", (long long)m);
    if (variant < KV_W8_AUTO || variant > KV_W8_MMA_SYNC)
        return kv_fail(err, KV_EINVAL, "kv_cuda_w8_matmul: variant %d", variant);
    /* measured defaults (docs/RESULTS.md, GPU section): int8 wgmma, fp8 mma.sync (the only fp8 form that is right) */
    if (variant == KV_W8_AUTO) variant = w->fp8 ? KV_W8_MMA_SYNC : KV_W8_WGMMA;
    const w8_variant &v = k_w8_variants[variant - 1];
    if (!v.fn[w->fp8 ? 1 : 0])
        return kv_fail(err, KV_EUNSUPPORTED, "kv_cuda_w8_matmul: variant %d has no fp8 form (only mma.sync)", variant);
    cudaStream_t st = (cudaStream_t)stream;
    int8_t *xq = (int8_t *)ws_dev;
    float *sx = (float *)((uint8_t *)ws_dev + (((size_t)(m * w->cols) + 255) / 256) * 256);
    const int K = (int)w->cols, N = (int)w->rows;
    if (w->fp8) quant_rows<1><<<(unsigned)m, 256, 0, st>>>((const __half *)x_dev, K, xq, sx);
    else quant_rows<0><<<(unsigned)m, 256, 0, st>>>((const __half *)x_dev, K, xq, sx);
    KV_CU_LAUNCH("quant_rows", err);
    const dim3 grid((unsigned)(N / BN), (unsigned)((m + BM - 1) / BM));
    v.fn[w->fp8 ? 1 : 0]<<<grid, 256, w8_smem(v.stages), st>>>(xq, sx, w->q, w->scale, (__nv_bfloat16 *)y_dev, (int)m,
                                                               N, K);
    KV_CU_LAUNCH("w8_gemm", err);
    return KV_OK;
}
