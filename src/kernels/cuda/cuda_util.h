/* cuda_util.h — error plumbing shared by the .cu files of kvant's CUDA backend (internal). */
#ifndef KV_CUDA_UTIL_H
#define KV_CUDA_UTIL_H

#include "kernels/cuda/kvcuda.h"
#include <cuda_runtime.h>

/* On a CUDA error: fill err naming the call, return its kv_status. */
#define KV_CU(call, err)                                                                                \
    do {                                                                                                \
        cudaError_t _e = (call);                                                                        \
        if (_e != cudaSuccess)                                                                          \
            return kv_fail((err), KV_EIO, "CUDA: %s: %s (%s:%d)", #call, cudaGetErrorString(_e), __FILE__, \
                           __LINE__);                                                                   \
    } while (0)

/* After a launch: the launch error (bad configuration) without synchronising. */
#define KV_CU_LAUNCH(what, err) KV_CU(cudaGetLastError(), err)

static inline __host__ __device__ unsigned long long kv_cu_hash(unsigned long long x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

#endif
