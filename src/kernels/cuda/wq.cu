/* wq.cu — weight-only GEMV/GEMM (batch 1..16) straight from kvant's packed formats, on the tensor cores.
 *
 * Every format is one kernel (layout: pack.h, docs/FORMAT.md "GPU layout"): a lane loads the pair indices of
 * 32 weights of two rows (16 bytes for PB = 4, 24 for 6, 32 for 8), looks each pair up in a half2 table in
 * shared memory (FLUTE, Guo et al. 2024, arXiv 2407.10960: one lookup per two weights; the table is replicated
 * 32 times, one copy per bank, so a warp's 32 lookups never conflict), applies the group's scale and offset with
 * one HFMA2 and feeds the result to mma.sync m16n8k16 (fp16 x fp16 -> fp32) as the A operand. Activations are
 * the B operand, read straight from x[m][k]: the k order inside a 128-wide chunk is permuted identically on both
 * sides (lane t of a quad owns k in [32t, 32t+32)), so a lane reads its activations with four 16-byte loads.
 *
 * One block of eight warps per 16-row tile; warp w takes the chunks w, w + 8, ... of K. The kernel is bound by
 * the bytes it keeps in flight, so each warp holds a ring of D chunks (codes and the raw bits of their scales,
 * converted only when used, so a load never stalls the warp before its data is needed), all D issued before the
 * pair table is filled; the eight partial sums are added in shared memory in a fixed order (deterministic, no
 * atomics). Two accumulator sets alternate between mma steps to halve the tensor-core dependency chain. */
#include "kernels/cuda/cuda_util.h"
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <algorithm>

namespace cg = cooperative_groups;

struct kv_cuda_wq {
    kv_gpu_pack meta; /* geometry, kinds and the pair table; host arrays NULL */
    uint4 *plane0;
    void *plane1, *scale, *off;
    __half *sd, *sm;
    float *rowmul;
    uint32_t *lut;
    size_t bytes;
    int affine;      /* 1: 4-bit codes whose table is L[c] = c + base (int4, q4_0, q4_1, q4_k): decoded without it */
    int affine_base; /* 0 or -8 */
};

struct wq_args {
    const uint4 *plane0;
    const void *plane1, *scale, *off;
    const __half *sd, *sm;
    const float *rowmul;
    const uint32_t *lut;
    const __half *x;
    float *y;
    int m, rows, rows_pad, k, nchunks, ntiles, group, sk, ok;
    uint32_t aff_lo, aff_hi; /* affine decode: half2 1024 - base; half2 -(64 - base) */
};

__device__ __forceinline__ uint4 ld_stream4(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
__device__ __forceinline__ uint2 ld_stream2(const void *p) {
    uint2 v;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}

__device__ __forceinline__ float e4m3_value(unsigned b) {
    const unsigned e = (b >> 3) & 15, m = b & 7;
    float v = e == 0 ? (float)m * 0.001953125f : __uint_as_float(((e + 120u) << 23) | (m << 20));
    if (e == 15 && m == 7) v = __uint_as_float(0x7FC00000u);
    return (b & 0x80) ? -v : v;
}

/* The raw stored bits of a scale / offset element i (no arithmetic: the value is formed when it is used). */
__device__ __forceinline__ uint32_t raw_scale(const wq_args &a, size_t i) {
    switch (a.sk) {
    case KV_GS_F16: return __ldg((const unsigned short *)a.scale + i);
    case KV_GS_F32: return __ldg((const unsigned *)a.scale + i);
    default: return __ldg((const uint8_t *)a.scale + i);
    }
}
__device__ __forceinline__ uint32_t raw_off(const wq_args &a, size_t i) {
    switch (a.ok) {
    case KV_GO_NONE: return 0u;
    case KV_GO_F16: return __ldg((const unsigned short *)a.off + i);
    case KV_GO_F32: return __ldg((const unsigned *)a.off + i);
    default: return __ldg((const uint8_t *)a.off + i);
    }
}
/* Scale and offset in fp32 from their raw bits, as kv_gpu_pack_group_params computes them. sd, sm: q4_k's
 * super-block d and dmin bits; rowmul: the UE4M3 kinds' row factor. */
__device__ __forceinline__ float scale_value(const wq_args &a, uint32_t raw, uint32_t sd, float rowmul) {
    switch (a.sk) {
    case KV_GS_F16: return __half2float(__ushort_as_half((unsigned short)raw));
    case KV_GS_F32: return __uint_as_float(raw);
    case KV_GS_E8M0: return __uint_as_float(raw ? raw << 23 : 0x00400000u);
    case KV_GS_UE4M3: return e4m3_value(raw) * rowmul;
    default: return __half2float(__ushort_as_half((unsigned short)sd)) * (float)raw;
    }
}
__device__ __forceinline__ float off_value(const wq_args &a, uint32_t raw, uint32_t sm) {
    switch (a.ok) {
    case KV_GO_NONE: return 0.0f;
    case KV_GO_F16: return __half2float(__ushort_as_half((unsigned short)raw));
    case KV_GO_F32: return __uint_as_float(raw);
    default: return -(__half2float(__ushort_as_half((unsigned short)sm)) * (float)raw);
    }
}

__device__ __forceinline__ uint32_t w4(const uint4 &v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* What one lane loads for one chunk of one tile: its pair indices and the raw bits of the scales and offsets of
 * rows g and g + 8 ([0], [1]) and, for 16-wide groups, of the second group its 32 k values touch ([2], [3]). */
template <int PB, bool G16>
struct lane_chunk {
    static constexpr int NQ = G16 ? 4 : 2;
    uint4 p0;
    uint4 p1; /* PB 6 uses .x, .y */
    uint32_t s[NQ], o[NQ];
    uint32_t sd[2], sm[2]; /* q4_k super-block d and dmin of rows g, g + 8 */
};

template <int PB, bool G16>
__device__ __forceinline__ void load_chunk(const wq_args &a, int tile, int c, int lane, lane_chunk<PB, G16> &L) {
    const size_t li = ((size_t)tile * a.nchunks + c) * 32 + lane;
    L.p0 = ld_stream4(a.plane0 + li);
    if (PB == 6) {
        const uint2 h = ld_stream2((const uint2 *)a.plane1 + li);
        L.p1 = make_uint4(h.x, h.y, 0, 0);
    } else if (PB == 8) {
        L.p1 = ld_stream4((const uint4 *)a.plane1 + li);
    }
    const int row0 = tile * 16 + (lane >> 2), kb = c * KV_GPU_CHUNK + 32 * (lane & 3);
    const int grp = kb / a.group;
    const size_t i0 = (size_t)grp * a.rows_pad + row0;
#pragma unroll
    for (int q = 0; q < L.NQ; q++) {
        const size_t i = i0 + (size_t)(q >> 1) * a.rows_pad + 8 * (q & 1);
        L.s[q] = raw_scale(a, i);
        L.o[q] = raw_off(a, i);
    }
    if (a.sk == KV_GS_Q4K) {
        const size_t j = (size_t)(grp >> 3) * a.rows_pad + row0;
        L.sd[0] = __ldg((const unsigned short *)a.sd + j), L.sd[1] = __ldg((const unsigned short *)a.sd + j + 8);
        L.sm[0] = __ldg((const unsigned short *)a.sm + j), L.sm[1] = __ldg((const unsigned short *)a.sm + j + 8);
    } else {
        L.sd[0] = L.sd[1] = L.sm[0] = L.sm[1] = 0u;
    }
}

/* Activations of chunk c as B fragments: bx[nt][2s], bx[nt][2s + 1] feed mma step s of token tile nt. */
template <int NT>
__device__ __forceinline__ void load_x(const wq_args &a, int c, int g, int t, uint32_t (*bx)[16]) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int n = nt * 8 + g;
        if (n < a.m) {
            const uint4 *xp = reinterpret_cast<const uint4 *>(a.x + (size_t)n * a.k + (size_t)c * KV_GPU_CHUNK + 32 * t);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const uint4 v = __ldg(xp + q);
                bx[nt][4 * q] = v.x, bx[nt][4 * q + 1] = v.y, bx[nt][4 * q + 2] = v.z, bx[nt][4 * q + 3] = v.w;
            }
        } else {
#pragma unroll
            for (int q = 0; q < 16; q++) bx[nt][q] = 0u;
        }
    }
}

/* The four A registers of one mma step of a 4-bit affine format without the pair table: PRMT puts code byte b
 * of both planes (first weight's nibbles in the low half, second's in the high) into one word; a mask and the
 * fp16 exponent of 1024 turn a nibble pair into half2 (1024 + c) (low nibbles) or (1024 + 16 c) (high), and one
 * HSUB2 / HFMA2 by exact constants gives c + base, the table's value bit for bit. */
__device__ __forceinline__ void affine_step(const wq_args &a, uint32_t w0, uint32_t w1, int b, const __half2 *hs,
                                            const __half2 *ho, int q0, uint32_t *A) {
    const __half2 lo = *reinterpret_cast<const __half2 *>(&a.aff_lo), hi = *reinterpret_cast<const __half2 *>(&a.aff_hi);
    const __half2 sixteenth = __float2half2_rn(0.0625f);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const uint32_t v = __byte_perm(w0, w1, (uint32_t)((b + h) | (b + h) << 4 | (b + h + 4) << 8 | (b + h + 4) << 12));
        uint32_t u0 = (v & 0x000F000Fu) | 0x64006400u, u1 = (v & 0x00F000F0u) | 0x64006400u;
        const __half2 c0 = __hsub2(*reinterpret_cast<__half2 *>(&u0), lo);
        const __half2 c1 = __hfma2(*reinterpret_cast<__half2 *>(&u1), sixteenth, hi);
        __half2 r0 = __hfma2(c0, hs[q0], ho[q0]), r1 = __hfma2(c1, hs[q0 + 1], ho[q0 + 1]);
        A[2 * h] = *reinterpret_cast<uint32_t *>(&r0);
        A[2 * h + 1] = *reinterpret_cast<uint32_t *>(&r1);
    }
}

template <int PB, int NT, bool G16, bool AFF>
__device__ __forceinline__ void compute_chunk(const wq_args &a, const lane_chunk<PB, G16> &L, const float *rowmul,
                                              const uint32_t *lutl, const uint32_t (*bx)[16], float (*acc)[NT][4]) {
    __half2 hs[4], ho[4];
#pragma unroll
    for (int q = 0; q < L.NQ; q++) {
        hs[q] = __float2half2_rn(scale_value(a, L.s[q], L.sd[q & 1], rowmul[q & 1]));
        ho[q] = __float2half2_rn(off_value(a, L.o[q], L.sm[q & 1]));
    }
#pragma unroll
    for (int s = 0; s < 8; s++) {
        uint32_t A[4];
        if (AFF) affine_step(a, w4(L.p0, s >> 1), w4(L.p1, s >> 1), 2 * (s & 1), hs, ho, G16 && s >= 4 ? 2 : 0, A);
#pragma unroll
        for (int j = 0; j < (AFF ? 0 : 4); j++) {
            const int slot = 4 * s + j;
            uint32_t idx = (w4(L.p0, slot >> 3) >> (4 * (slot & 7))) & 15u;
            if (PB == 6) idx |= ((w4(L.p1, slot >> 4) >> (2 * (slot & 15))) & 3u) << 4;
            if (PB == 8) idx |= ((w4(L.p1, slot >> 3) >> (4 * (slot & 7))) & 15u) << 4;
            const uint32_t u = lutl[idx << 5];
            const int q = (G16 && s >= 4 ? 2 : 0) + (j & 1);
            __half2 h = __hfma2(*reinterpret_cast<const __half2 *>(&u), hs[q], ho[q]);
            A[j] = *reinterpret_cast<uint32_t *>(&h);
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) mma16816(acc[s & 1][nt], A, bx[nt][2 * s], bx[nt][2 * s + 1]);
    }
}

template <int PB, int NT, bool G16, int D, bool AFF>
__global__ void __launch_bounds__(256) wq_kernel(wq_args a) {
    extern __shared__ uint32_t smem[];
    constexpr int NP = 1 << PB, E = NT * 4;
    uint32_t *lut = smem;
    float *red = reinterpret_cast<float *>(smem + (AFF ? 0 : NP * 32)); /* the affine path has no table */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int tile = blockIdx.x;
    const int nw = (a.nchunks - warp + 7) / 8; /* this warp's chunks: warp + 8 i, i < nw */
    lane_chunk<PB, G16> ring[D];
#pragma unroll
    for (int j = 0; j < D; j++)
        if (j < nw) load_chunk<PB, G16>(a, tile, warp + 8 * j, lane, ring[j]);
    float rowmul[2] = {1.0f, 1.0f};
    if (a.sk == KV_GS_UE4M3) rowmul[0] = __ldg(a.rowmul + tile * 16 + g), rowmul[1] = __ldg(a.rowmul + tile * 16 + g + 8);
    if (!AFF)
        for (int i = threadIdx.x; i < NP * 32; i += 256) lut[i] = __ldg(a.lut + (i >> 5));
    __syncthreads();
    const uint32_t *lutl = lut + lane;
    float acc[2][NT][4];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) acc[h][nt][0] = acc[h][nt][1] = acc[h][nt][2] = acc[h][nt][3] = 0.0f;
    for (int i0 = 0; i0 < nw; i0 += D) {
#pragma unroll
        for (int j = 0; j < D; j++) {
            const int i = i0 + j;
            if (i < nw) {
                const int c = warp + 8 * i;
                uint32_t bx[NT][16];
                load_x<NT>(a, c, g, t, bx);
                compute_chunk<PB, NT, G16, AFF>(a, ring[j], rowmul, lutl, bx, acc);
                if (i + D < nw) load_chunk<PB, G16>(a, tile, c + 8 * D, lane, ring[j]);
            }
        }
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) red[(warp * E + nt * 4 + e) * 32 + lane] = acc[0][nt][e] + acc[1][nt][e];
    __syncthreads();
    for (int i = threadIdx.x; i < E * 32; i += 256) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < 8; w++) sum += red[w * E * 32 + i];
        const int ln = i & 31, e = (i >> 5) & 3, nt = i >> 7;
        const int row = tile * 16 + (ln >> 2) + 8 * (e >> 1), n = nt * 8 + 2 * (ln & 3) + (e & 1);
        if (row < a.rows && n < a.m) a.y[(size_t)n * a.rows + row] = sum;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* staged kernel: 128-row blocks, activations and codes through cp.async stages, split-K over a cluster */
/* ---------------------------------------------------------------------------------------------- */
/* Batch 16 reads each activation 8 times per weight byte when a block holds one 16-row tile (every tile
 * re-reads x from L1/L2), and the register ring of the kernel above keeps few bytes in flight. Here a block of
 * eight warps holds eight tiles (128 rows, warp w streams tile w over the block's K range) and goes over K in
 * slabs of SC chunks: per slab one cp.async group copies each lane's own codes, the slab's activations (shared
 * by the eight warps, XOR-swizzled so a quarter-warp's 16-byte reads hit eight distinct bank groups) and the
 * slab's scale/offset rows into one of NS shared-memory stages, so NS - 1 slabs are in flight without registers.
 * Shapes with few 128-row blocks split K over a thread-block cluster of S blocks (grid.y); the partial sums
 * meet in distributed shared memory and are added in rank order (deterministic, no atomics). */
struct wqs_layout {
    int codes0, codes1, xs, sc, of, sd, sm, stage; /* byte offsets inside one stage; stage size */
    int lut, red, bytes;                           /* offsets after the NS stages; total dynamic smem */
    int ngs, nsup;                                 /* scale groups / q4_k super-blocks per slab */
    int cps;                                       /* chunks per split (multiple of SC) */
};

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cpa16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cpa8(void *dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cpa_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cpa_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

/* 16-byte unit u of activation row n inside a slab -> its stored unit (bijective within each 8 units). */
__device__ __forceinline__ int xswz(int u, int n) { return u ^ ((((u >> 3) & 1) << 1) | (n & 1)); }

__device__ __forceinline__ uint32_t sread(const unsigned char *base, int i, int bytes) {
    return bytes == 2 ? ((const unsigned short *)base)[i] : bytes == 4 ? ((const unsigned *)base)[i] : base[i];
}

template <int PB, int NT, int SC>
__device__ __forceinline__ void wqs_issue(const wq_args &a, const wqs_layout &L, unsigned char *stg, int cs, int ce,
                                          int tile, bool live, int row0, int rows_blk, int esz, int osz) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (live)
        for (int j = 0; j < ce - cs; j++) {
            const size_t li = ((size_t)tile * a.nchunks + cs + j) * 32 + lane;
            const int slot = (warp * SC + j) * 32 + lane;
            cpa16(stg + L.codes0 + slot * 16, a.plane0 + li);
            if (PB == 6) cpa8(stg + L.codes1 + slot * 8, (const uint2 *)a.plane1 + li);
            if (PB == 8) cpa16(stg + L.codes1 + slot * 16, (const uint4 *)a.plane1 + li);
        }
    constexpr int UR = SC * 16; /* 16-byte units per activation row of a slab */
    for (int i = threadIdx.x; i < NT * 8 * UR; i += 256) {
        const int n = i / UR, u = i % UR;
        if (n < a.m && cs + (u >> 4) < ce)
            cpa16(stg + L.xs + (n * UR + xswz(u, n)) * 16, a.x + (size_t)n * a.k + (size_t)cs * KV_GPU_CHUNK + u * 8);
    }
    const int k0 = cs * KV_GPU_CHUNK, kl = ce * KV_GPU_CHUNK - 1;
    const int gf = k0 / a.group, ng = kl / a.group - gf + 1;
    const int upg = rows_blk * esz / 16, upo = rows_blk * osz / 16;
    for (int i = threadIdx.x; i < ng * upg; i += 256) {
        const int gi = i / upg, u = i % upg;
        cpa16(stg + L.sc + gi * 128 * esz + u * 16,
              (const unsigned char *)a.scale + ((size_t)(gf + gi) * a.rows_pad + row0) * esz + u * 16);
    }
    for (int i = threadIdx.x; i < ng * upo; i += 256) {
        const int gi = i / upo, u = i % upo;
        cpa16(stg + L.of + gi * 128 * osz + u * 16,
              (const unsigned char *)a.off + ((size_t)(gf + gi) * a.rows_pad + row0) * osz + u * 16);
    }
    if (a.sk == KV_GS_Q4K) {
        const int sf = k0 / 256, ns = kl / 256 - sf + 1, ups = rows_blk * 2 / 16;
        for (int i = threadIdx.x; i < ns * ups; i += 256) {
            const int si = i / ups, u = i % ups;
            const size_t go = ((size_t)(sf + si) * a.rows_pad + row0) * 2 + u * 16;
            cpa16(stg + L.sd + si * 256 + u * 16, (const unsigned char *)a.sd + go);
            cpa16(stg + L.sm + si * 256 + u * 16, (const unsigned char *)a.sm + go);
        }
    }
}

template <int PB, int NT, bool G16, bool AFF, int SC, int NS>
__global__ void __launch_bounds__(256) wqs_kernel(wq_args a, wqs_layout L) {
    extern __shared__ __align__(128) unsigned char smem_s[];
    constexpr int NP = 1 << PB, E = NT * 4, UR = SC * 16;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int tile = blockIdx.x * 8 + warp, row0 = blockIdx.x * 128;
    const bool live = tile < a.ntiles;
    const int rows_blk = min(128, a.rows_pad - row0);
    const int c0 = blockIdx.y * L.cps, c1 = min(a.nchunks, c0 + L.cps);
    const int nslab = (c1 - c0 + SC - 1) / SC;
    const int esz = a.sk == KV_GS_F16 ? 2 : a.sk == KV_GS_F32 ? 4 : 1;
    const int osz = a.ok == KV_GO_NONE ? 0 : a.ok == KV_GO_F16 ? 2 : a.ok == KV_GO_F32 ? 4 : 1;
    uint32_t *lut = reinterpret_cast<uint32_t *>(smem_s + L.lut);
    if (!AFF)
        for (int i = threadIdx.x; i < NP * 32; i += 256) lut[i] = __ldg(a.lut + (i >> 5));
    float rowmul[2] = {1.0f, 1.0f};
    if (a.sk == KV_GS_UE4M3 && live)
        rowmul[0] = __ldg(a.rowmul + tile * 16 + g), rowmul[1] = __ldg(a.rowmul + tile * 16 + g + 8);
#pragma unroll
    for (int s = 0; s < NS - 1; s++) {
        if (s < nslab)
            wqs_issue<PB, NT, SC>(a, L, smem_s + s * L.stage, c0 + s * SC, min(c1, c0 + s * SC + SC), tile, live, row0,
                                  rows_blk, esz, osz);
        cpa_commit();
    }
    const uint32_t *lutl = lut + lane;
    float acc[2][NT][4];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) acc[h][nt][0] = acc[h][nt][1] = acc[h][nt][2] = acc[h][nt][3] = 0.0f;
    for (int s = 0; s < nslab; s++) {
        cpa_wait<NS - 2>();
        __syncthreads(); /* slab s landed for every thread; every warp is done with the stage refilled next */
        const int sn = s + NS - 1;
        if (sn < nslab)
            wqs_issue<PB, NT, SC>(a, L, smem_s + (sn % NS) * L.stage, c0 + sn * SC, min(c1, c0 + sn * SC + SC), tile,
                                  live, row0, rows_blk, esz, osz);
        cpa_commit();
        if (!live) continue;
        const unsigned char *stg = smem_s + (s % NS) * L.stage;
        const int cs = c0 + s * SC, gf = cs * KV_GPU_CHUNK / a.group, lr = warp * 16 + g;
#pragma unroll
        for (int j = 0; j < SC; j++) {
            const int c = cs + j;
            if (c >= c1) break;
            lane_chunk<PB, G16> C;
            const int slot = (warp * SC + j) * 32 + lane;
            C.p0 = *reinterpret_cast<const uint4 *>(stg + L.codes0 + slot * 16);
            if (PB == 6) {
                const uint2 h = *reinterpret_cast<const uint2 *>(stg + L.codes1 + slot * 8);
                C.p1 = make_uint4(h.x, h.y, 0, 0);
            } else if (PB == 8) {
                C.p1 = *reinterpret_cast<const uint4 *>(stg + L.codes1 + slot * 16);
            }
            const int grp = (c * KV_GPU_CHUNK + 32 * t) / a.group;
#pragma unroll
            for (int q = 0; q < C.NQ; q++) {
                const int i = (grp - gf + (q >> 1)) * 128 + lr + 8 * (q & 1);
                C.s[q] = sread(stg + L.sc, i, esz);
                C.o[q] = osz ? sread(stg + L.of, i, osz) : 0u;
            }
            if (a.sk == KV_GS_Q4K) {
                const int i = ((grp >> 3) - cs * KV_GPU_CHUNK / 256) * 128 + lr;
                C.sd[0] = sread(stg + L.sd, i, 2), C.sd[1] = sread(stg + L.sd, i + 8, 2);
                C.sm[0] = sread(stg + L.sm, i, 2), C.sm[1] = sread(stg + L.sm, i + 8, 2);
            } else {
                C.sd[0] = C.sd[1] = C.sm[0] = C.sm[1] = 0u;
            }
            uint32_t bx[NT][16];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const int n = nt * 8 + g;
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const uint4 v = *reinterpret_cast<const uint4 *>(stg + L.xs + (n * UR + xswz(j * 16 + 4 * t + q, n)) * 16);
                    bx[nt][4 * q] = v.x, bx[nt][4 * q + 1] = v.y, bx[nt][4 * q + 2] = v.z, bx[nt][4 * q + 3] = v.w;
                }
            }
            compute_chunk<PB, NT, G16, AFF>(a, C, rowmul, lutl, bx, acc);
        }
    }
    /* tokens n >= m read stale shared memory: only their own output columns, never stored */
    if (gridDim.y == 1) {
        if (!live) return;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = tile * 16 + g + 8 * (e >> 1), n = nt * 8 + 2 * t + (e & 1);
                if (row < a.rows && n < a.m) a.y[(size_t)n * a.rows + row] = acc[0][nt][e] + acc[1][nt][e];
            }
        return;
    }
    cpa_wait<0>();
    __syncthreads(); /* the partial sums reuse stage 0 */
    float *red = reinterpret_cast<float *>(smem_s + L.red);
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) red[(warp * E + nt * 4 + e) * 32 + lane] = acc[0][nt][e] + acc[1][nt][e];
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    const int S = (int)gridDim.y, r = (int)cl.block_rank(), total = 8 * E * 32, per = (total + S - 1) / S;
    for (int i = r * per + (int)threadIdx.x; i < min(total, (r + 1) * per); i += 256) {
        float sum = 0.0f;
        for (int k = 0; k < S; k++) sum += cl.map_shared_rank(red, k)[i];
        const int ln = i & 31, e = (i >> 5) & 3, nt = (i >> 7) % NT, w = (i >> 5) / E;
        const int row = row0 + w * 16 + (ln >> 2) + 8 * (e >> 1), n = nt * 8 + 2 * (ln & 3) + (e & 1);
        if (row < a.rows && n < a.m) a.y[(size_t)n * a.rows + row] = sum;
    }
    cl.sync(); /* no block leaves while another reads its partial sums */
}

/* ---------------------------------------------------------------------------------------------- */
/* host side                                                                                       */
/* ---------------------------------------------------------------------------------------------- */
template <int PB, int NT, bool AFF>
static constexpr size_t wq_smem() { return (AFF ? 0 : (size_t)(1 << PB) * 32 * 4) + (size_t)8 * NT * 4 * 32 * 4; }
static_assert(wq_smem<8, 2, false>() <= 48 * 1024, "the weight-only kernels stay under the default shared-memory limit");

template <int PB, int NT, bool G16, int D, bool AFF>
static kv_status launch_t(const wq_args &a, cudaStream_t st, kv_error *err) {
    wq_kernel<PB, NT, G16, D, AFF><<<(unsigned)a.ntiles, 256, wq_smem<PB, NT, AFF>(), st>>>(a);
    KV_CU_LAUNCH("wq_kernel", err);
    return KV_OK;
}

template <int PB, int NT, bool AFF, int SC, int NS>
static wqs_layout wqs_layout_of(const wq_args &a) {
    wqs_layout L;
    memset(&L, 0, sizeof L);
    const int esz = kv_gpu_scale_bytes(a.sk), osz = kv_gpu_off_bytes(a.ok);
    L.ngs = a.group >= SC * KV_GPU_CHUNK ? 1 : SC * KV_GPU_CHUNK / a.group;
    L.nsup = a.sk == KV_GS_Q4K ? (SC * KV_GPU_CHUNK >= 256 ? SC * KV_GPU_CHUNK / 256 : 1) : 0;
    L.codes0 = 0;
    L.codes1 = L.codes0 + 8 * SC * 32 * 16;
    L.xs = L.codes1 + 8 * SC * 32 * (PB == 6 ? 8 : PB == 8 ? 16 : 0);
    L.sc = L.xs + NT * 8 * SC * KV_GPU_CHUNK * 2;
    L.of = L.sc + L.ngs * 128 * esz;
    L.sd = L.of + L.ngs * 128 * osz;
    L.sm = L.sd + L.nsup * 256;
    L.stage = (L.sm + L.nsup * 256 + 127) / 128 * 128;
    L.lut = NS * L.stage;
    L.red = 0; /* after the last slab, over stage 0 */
    L.bytes = std::max(L.lut + (AFF ? 0 : (1 << PB) * 32 * 4), 8 * NT * 4 * 32 * 4);
    return L;
}

/* Split-K factor S (1..8, the cluster size) for rb 128-row blocks: the fewest (waves x chunks per block), a
 * block's fixed cost (first slab's latency, the reduction) counted as 4 chunks. */
static int wqs_splits(int rb, int nchunks, int slots, int sc) {
    int best = 1;
    double best_cost = 1e30;
    for (int s = 1; s <= 8; s++) {
        const int cps = ((nchunks + s - 1) / s + sc - 1) / sc * sc;
        const int se = (nchunks + cps - 1) / cps;
        if (se != s) continue;
        const double waves = (double)((rb * s + slots - 1) / slots);
        const double cost = waves * (cps + 4);
        if (cost < best_cost - 1e-9) best = s, best_cost = cost;
    }
    return best;
}

template <int PB, int NT, bool G16, bool AFF, int SC, int NS>
static kv_status launch_s(const wq_args &a, cudaStream_t st, kv_error *err) {
    wqs_layout L = wqs_layout_of<PB, NT, AFF, SC, NS>(a);
    auto kern = wqs_kernel<PB, NT, G16, AFF, SC, NS>;
    KV_CU(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, L.bytes), err);
    KV_CU(cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 0), err);
    int nb = 0, dev = 0, sms = 0;
    KV_CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, kern, 256, L.bytes), err);
    KV_CU(cudaGetDevice(&dev), err);
    KV_CU(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), err);
    const int rb = (a.ntiles + 7) / 8;
    const int S = wqs_splits(rb, a.nchunks, (nb > 0 ? nb : 1) * sms, SC);
    L.cps = ((a.nchunks + S - 1) / S + SC - 1) / SC * SC;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)rb, (unsigned)S, 1);
    cfg.blockDim = dim3(256, 1, 1);
    cfg.dynamicSmemBytes = (size_t)L.bytes;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = 1, at[0].val.clusterDim.y = (unsigned)S, at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    KV_CU(cudaLaunchKernelEx(&cfg, kern, a, L), err);
    return KV_OK;
}

template <int PB, bool G16, bool AFF>
static kv_status launch_g(const wq_args &a, int depth, int staged, cudaStream_t st, kv_error *err) {
    if (staged) {
        if (a.m <= 8)
            return depth == 2 ? launch_s<PB, 1, G16, AFF, 2, 3>(a, st, err) : launch_s<PB, 1, G16, AFF, 2, 4>(a, st, err);
        return depth == 2 ? launch_s<PB, 2, G16, AFF, 2, 3>(a, st, err) : launch_s<PB, 2, G16, AFF, 2, 4>(a, st, err);
    }
    if (a.m <= 8)
        return depth == 2 ? launch_t<PB, 1, G16, 2, AFF>(a, st, err) : launch_t<PB, 1, G16, 4, AFF>(a, st, err);
    return depth == 2 ? launch_t<PB, 2, G16, 2, AFF>(a, st, err) : launch_t<PB, 2, G16, 4, AFF>(a, st, err);
}

template <int PB>
static kv_status launch_pb(const wq_args &a, int depth, int staged, cudaStream_t st, kv_error *err) {
    return a.group == 16 ? launch_g<PB, true, false>(a, depth, staged, st, err)
                         : launch_g<PB, false, false>(a, depth, staged, st, err);
}

extern "C" kv_status kv_cuda_wq_matmul(const kv_cuda_wq *w, const void *x_dev, int m, float *y_dev, int variant,
                                       void *stream, kv_error *err) {
    if (!w || !x_dev || !y_dev) return kv_fail(err, KV_EINVAL, "kv_cuda_wq_matmul: NULL argument");
    if (m < 1 || m > 16) return kv_fail(err, KV_EINVAL, "kv_cuda_wq_matmul: batch %d outside 1..16", m);
    int depth = variant & ~(KV_WQ_TABLE | KV_WQ_STAGED), staged = (variant & KV_WQ_STAGED) != 0;
    if (variant < 0 || (depth != 0 && depth != KV_WQ_DEPTH2 && depth != KV_WQ_DEPTH4))
        return kv_fail(err, KV_EINVAL, "kv_cuda_wq_matmul: variant %d", variant);
    if ((uintptr_t)x_dev % 16) return kv_fail(err, KV_EINVAL, "kv_cuda_wq_matmul: x must be 16-byte aligned");
    const kv_gpu_pack *p = &w->meta;
    wq_args a;
    a.plane0 = w->plane0, a.plane1 = w->plane1, a.scale = w->scale, a.off = w->off;
    a.sd = w->sd, a.sm = w->sm, a.rowmul = w->rowmul, a.lut = w->lut;
    a.x = (const __half *)x_dev, a.y = y_dev;
    a.m = m, a.rows = (int)p->rows, a.rows_pad = (int)p->rows_pad, a.k = (int)p->cols;
    a.nchunks = (int)(p->cols / KV_GPU_CHUNK), a.ntiles = (int)(p->rows_pad / 16), a.group = p->group;
    a.sk = p->scale_kind, a.ok = p->off_kind;
    /* measured default (docs/RESULTS.md, GPU section, H100): the 16-row-tile kernel with 2 chunks in flight, except
     * at batch > 8 on tall matrices (>= 96 row blocks of 128, no split-K), where the staged kernel's shared
     * activations win (lm_head x1.87 -> x2.01 int4, x1.18 -> x1.55 nf4); it loses where K is split over a cluster.
     * 3 stages for the 8-bit-pair table formats (their 32 KB table costs occupancy), 4 otherwise. */
    if (depth == 0) {
        const int tall = m > 8 && (p->rows_pad / 16 + 7) / 8 >= 96;
        const int table8 = p->pair_bits == 8 && !w->affine;
        depth = tall && table8 ? KV_WQ_DEPTH2 : tall ? KV_WQ_DEPTH4 : KV_WQ_DEPTH2;
        staged = tall;
    }
    const int d = depth;
    cudaStream_t st = (cudaStream_t)stream;
    if (w->affine && !(variant & KV_WQ_TABLE)) {
        const uint32_t lo = kv_fp32_to_fp16(1024.0f - (float)w->affine_base), hi = kv_fp32_to_fp16((float)w->affine_base - 64.0f);
        a.aff_lo = lo | lo << 16, a.aff_hi = hi | hi << 16;
        return launch_g<8, false, true>(a, d, staged, st, err);
    }
    a.aff_lo = a.aff_hi = 0;
    switch (p->pair_bits) {
    case 4: return launch_pb<4>(a, d, staged, st, err);
    case 6: return launch_pb<6>(a, d, staged, st, err);
    case 8: return launch_pb<8>(a, d, staged, st, err);
    default: return kv_fail(err, KV_EINVAL, "kv_cuda_wq_matmul: pair bits %d", p->pair_bits);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* upload / random fill                                                                            */
/* ---------------------------------------------------------------------------------------------- */
extern "C" void kv_cuda_wq_free(kv_cuda_wq *w) {
    if (!w) return;
    cudaFree(w->plane0);
    cudaFree(w->plane1);
    cudaFree(w->scale);
    cudaFree(w->off);
    cudaFree(w->sd);
    cudaFree(w->sm);
    cudaFree(w->rowmul);
    cudaFree(w->lut);
    free(w);
}

extern "C" size_t kv_cuda_wq_bytes(const kv_cuda_wq *w) { return w ? w->bytes : 0; }

/* Whether p's pair table is that of 4-bit codes with L[c] = c + base, base 0 or -8 (the affine decode path). */
static void affine_of(const kv_gpu_pack *p, int *affine, int *base) {
    *affine = 0, *base = 0;
    if (p->pair_bits != 8 || p->group == 16) return;
    for (int b = 0; b >= -8; b -= 8) {
        int ok = 1;
        for (int i = 0; i < 256 && ok; i++)
            ok = p->lut[i] == ((uint32_t)kv_fp32_to_fp16((float)((i & 15) + b)) |
                               (uint32_t)kv_fp32_to_fp16((float)((i >> 4) + b)) << 16);
        if (ok) {
            *affine = 1, *base = b;
            return;
        }
    }
}

static kv_status wq_alloc(const kv_gpu_pack *p, kv_cuda_wq **out, kv_error *err) {
    kv_cuda_wq *w = (kv_cuda_wq *)calloc(1, sizeof *w);
    if (!w) return kv_fail(err, KV_ENOMEM, "out of memory");
    w->meta = *p;
    w->meta.plane0 = w->meta.plane1 = NULL;
    w->meta.scale = w->meta.off = NULL;
    w->meta.super_d = w->meta.super_m = NULL;
    w->meta.rowmul = NULL;
    *out = w;
    cudaError_t e = cudaMalloc((void **)&w->plane0, p->plane0_bytes);
    if (e == cudaSuccess && p->plane1_bytes) e = cudaMalloc(&w->plane1, p->plane1_bytes);
    if (e == cudaSuccess) e = cudaMalloc(&w->scale, p->scale_bytes);
    if (e == cudaSuccess && p->off_bytes) e = cudaMalloc(&w->off, p->off_bytes);
    if (e == cudaSuccess && p->super_bytes) e = cudaMalloc((void **)&w->sd, p->super_bytes);
    if (e == cudaSuccess && p->super_bytes) e = cudaMalloc((void **)&w->sm, p->super_bytes);
    if (e == cudaSuccess && p->scale_kind == KV_GS_UE4M3) e = cudaMalloc((void **)&w->rowmul, (size_t)p->rows_pad * 4);
    if (e == cudaSuccess) e = cudaMalloc((void **)&w->lut, 256 * 4);
    if (e == cudaSuccess) e = cudaMemcpy(w->lut, p->lut, 256 * 4, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        kv_cuda_wq_free(w);
        *out = NULL;
        return kv_fail(err, KV_ENOMEM, "CUDA: allocating %s weights (%zu bytes): %s", p->format, kv_gpu_pack_bytes(p),
                       cudaGetErrorString(e));
    }
    w->bytes = kv_gpu_pack_bytes(p);
    affine_of(p, &w->affine, &w->affine_base);
    return KV_OK;
}

extern "C" kv_status kv_cuda_wq_upload(const kv_gpu_pack *p, kv_cuda_wq **out, kv_error *err) {
    *out = NULL;
    kv_status st = wq_alloc(p, out, err);
    if (st != KV_OK) return st;
    kv_cuda_wq *w = *out;
    cudaError_t e = cudaMemcpy(w->plane0, p->plane0, p->plane0_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && p->plane1_bytes) e = cudaMemcpy(w->plane1, p->plane1, p->plane1_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(w->scale, p->scale, p->scale_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && p->off_bytes) e = cudaMemcpy(w->off, p->off, p->off_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && p->super_bytes) e = cudaMemcpy(w->sd, p->super_d, p->super_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && p->super_bytes) e = cudaMemcpy(w->sm, p->super_m, p->super_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && w->rowmul) e = cudaMemcpy(w->rowmul, p->rowmul, (size_t)p->rows_pad * 4, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        kv_cuda_wq_free(w);
        *out = NULL;
        return kv_fail(err, KV_EIO, "CUDA: uploading %s weights: %s", p->format, cudaGetErrorString(e));
    }
    return KV_OK;
}

/* Random bytes, then every scale-like array overwritten with plausible values (weights of ~0.02 magnitude). */
__global__ void fill_random_u32(uint32_t *p, size_t n, unsigned long long seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (uint32_t)kv_cu_hash(seed ^ (i * 0x2545F4914F6CDD1Dull));
}
__global__ void fill_random_kind(void *p, size_t n, int bytes, int kind, unsigned long long seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const unsigned long long h = kv_cu_hash(seed ^ (i * 0x9E3779B97F4A7C15ull));
        const float u = (float)(h >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        if (kind == 0) ((__half *)p)[i] = __float2half(0.001f + 0.004f * u);       /* fp16 scale */
        else if (kind == 1) ((float *)p)[i] = 0.001f + 0.004f * u;                 /* fp32 scale */
        else if (kind == 2) ((uint8_t *)p)[i] = (uint8_t)(118 + (h >> 61));        /* e8m0 ~ 2^-9..2^-2 */
        else if (kind == 3) ((uint8_t *)p)[i] = (uint8_t)(0x30 + (h >> 59));       /* e4m3 ~ 0.25..1 */
        else if (kind == 4) ((uint8_t *)p)[i] = (uint8_t)(1 + (h >> 58));          /* q4_k 6-bit */
        else if (kind == 5) ((__half *)p)[i] = __float2half(-0.01f * u);           /* fp16 offset */
        else if (kind == 6) ((float *)p)[i] = -0.01f * u;                          /* fp32 offset */
        else ((float *)p)[i] = 0.01f + 0.01f * u;                                  /* row factor */
        (void)bytes;
    }
}

extern "C" kv_status kv_cuda_wq_random(const kv_gpu_pack *layout, uint64_t seed, kv_cuda_wq **out, kv_error *err) {
    *out = NULL;
    kv_status st = wq_alloc(layout, out, err);
    if (st != KV_OK) return st;
    kv_cuda_wq *w = *out;
    const kv_gpu_pack *p = layout;
    fill_random_u32<<<1024, 256>>>((uint32_t *)w->plane0, p->plane0_bytes / 4, seed);
    if (p->plane1_bytes) fill_random_u32<<<1024, 256>>>((uint32_t *)w->plane1, p->plane1_bytes / 4, seed + 1);
    const size_t ns = p->scale_bytes / kv_gpu_scale_bytes(p->scale_kind);
    static const int scale_fill[] = {0, 1, 2, 3, 4};
    fill_random_kind<<<1024, 256>>>(w->scale, ns, 0, scale_fill[p->scale_kind], seed + 2);
    if (p->off_bytes) {
        const size_t no = p->off_bytes / kv_gpu_off_bytes(p->off_kind);
        fill_random_kind<<<1024, 256>>>(w->off, no, 0, p->off_kind == KV_GO_F16 ? 5 : p->off_kind == KV_GO_F32 ? 6 : 4,
                                        seed + 3);
    }
    if (p->super_bytes) {
        fill_random_kind<<<1024, 256>>>(w->sd, p->super_bytes / 2, 0, 0, seed + 4);
        fill_random_kind<<<1024, 256>>>(w->sm, p->super_bytes / 2, 0, 0, seed + 5);
    }
    if (w->rowmul) fill_random_kind<<<1024, 256>>>(w->rowmul, (size_t)p->rows_pad, 0, 7, seed + 6);
    KV_CU_LAUNCH("fill_random", err);
    KV_CU(cudaDeviceSynchronize(), err);
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* device, memory                                                                                  */
/* ---------------------------------------------------------------------------------------------- */
extern "C" int kv_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" kv_status kv_cuda_info_get(kv_cuda_info *out, kv_error *err) {
    memset(out, 0, sizeof *out);
    cudaDeviceProp pr;
    int dev = 0;
    KV_CU(cudaGetDevice(&dev), err);
    KV_CU(cudaGetDeviceProperties(&pr, dev), err);
    snprintf(out->name, sizeof out->name, "%s", pr.name);
    out->cc_major = pr.major, out->cc_minor = pr.minor, out->sms = pr.multiProcessorCount;
    out->l2_bytes = (size_t)pr.l2CacheSize, out->mem_bytes = pr.totalGlobalMem;
    KV_CU(cudaRuntimeGetVersion(&out->runtime_version), err);
    KV_CU(cudaDriverGetVersion(&out->driver_version), err);
    return KV_OK;
}

extern "C" kv_status kv_cuda_malloc(void **ptr, size_t bytes, kv_error *err) {
    *ptr = NULL;
    cudaError_t e = cudaMalloc(ptr, bytes ? bytes : 1);
    if (e != cudaSuccess) return kv_fail(err, KV_ENOMEM, "CUDA: cudaMalloc(%zu): %s", bytes, cudaGetErrorString(e));
    return KV_OK;
}
extern "C" void kv_cuda_free(void *ptr) { cudaFree(ptr); }
extern "C" kv_status kv_cuda_to_device(void *dst, const void *src, size_t bytes, kv_error *err) {
    KV_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), err);
    return KV_OK;
}
extern "C" kv_status kv_cuda_to_host(void *dst, const void *src, size_t bytes, kv_error *err) {
    KV_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), err);
    return KV_OK;
}
extern "C" kv_status kv_cuda_sync(kv_error *err) {
    KV_CU(cudaDeviceSynchronize(), err);
    return KV_OK;
}
