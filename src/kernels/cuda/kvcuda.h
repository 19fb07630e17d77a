/* kvcuda.h — kvant's CUDA backend (the .cu files of src/kernels/cuda, built by `make cuda`; C API, callable from C).
 * Every function returns KV_OK or fills err (a CUDA error names the call and cudaGetErrorString). Pointers
 * named *_dev are device memory. Work goes to the default stream unless a stream (cudaStream_t) is given. */
#ifndef KV_CUDA_H
#define KV_CUDA_H

#include "kvant.h"
#include "kernels/cuda/pack.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kv_cuda_info {
    char name[256];
    int cc_major, cc_minor, sms;
    size_t l2_bytes, mem_bytes;
    int runtime_version, driver_version;
} kv_cuda_info;

/* Number of usable CUDA devices (0 when there is no driver or no device: callers skip). */
int kv_cuda_device_count(void);
kv_status kv_cuda_info_get(kv_cuda_info *out, kv_error *err);

/* Device memory helpers (so C callers need no CUDA headers). */
kv_status kv_cuda_malloc(void **ptr, size_t bytes, kv_error *err);
void kv_cuda_free(void *ptr);
kv_status kv_cuda_to_device(void *dst_dev, const void *src, size_t bytes, kv_error *err);
kv_status kv_cuda_to_host(void *dst, const void *src_dev, size_t bytes, kv_error *err);
kv_status kv_cuda_sync(kv_error *err);

/* Weight-only GEMV/GEMM from a kv_gpu_pack. */
typedef struct kv_cuda_wq kv_cuda_wq;
kv_status kv_cuda_wq_upload(const kv_gpu_pack *p, kv_cuda_wq **out, kv_error *err);
/* A pack's geometry (kv_gpu_pack_layout with alloc = 0) filled with random codes and scales on the device
 * (benchmarks: no host transfer of hundreds of MB). */
kv_status kv_cuda_wq_random(const kv_gpu_pack *layout, uint64_t seed, kv_cuda_wq **out, kv_error *err);
void kv_cuda_wq_free(kv_cuda_wq *w);
size_t kv_cuda_wq_bytes(const kv_cuda_wq *w);
/* y_dev[m][rows] (fp32) = x_dev[m][cols] (fp16) . W^T for m = 1..16. variant: 0 (the measured default), or
 * KV_WQ_STAGED (128-row blocks, activations, codes and scales through cp.async shared-memory stages, split-K over
 * a cluster) with KV_WQ_DEPTH2 / 4 (3 or 4 stages of 2 chunks), or without it the 16-row-tile kernel with the
 * chunks each warp keeps in flight in registers (KV_WQ_DEPTH2 / 4); plus KV_WQ_TABLE to decode the 4-bit affine
 * formats (int4, q4_0, q4_1, q4_k) through the pair table rather than by bit arithmetic. */
enum { KV_WQ_TABLE = 1, KV_WQ_DEPTH2 = 2, KV_WQ_DEPTH4 = 4, KV_WQ_STAGED = 8 };
kv_status kv_cuda_wq_matmul(const kv_cuda_wq *w, const void *x_dev, int m, float *y_dev, int variant, void *stream,
                            kv_error *err);

/* W8A8: int8 or e4m3 weights with fp32 row scales; activations quantized per token on the fly. */
typedef struct kv_cuda_w8 kv_cuda_w8;
kv_status kv_cuda_w8_upload(const kv_gpu_pack8 *p, kv_cuda_w8 **out, kv_error *err);
kv_status kv_cuda_w8_random(int fp8, int64_t rows, int64_t cols, uint64_t seed, kv_cuda_w8 **out, kv_error *err);
void kv_cuda_w8_free(kv_cuda_w8 *w);
/* Bytes of device workspace kv_cuda_w8_matmul needs for m tokens (quantized activations and their scales). */
size_t kv_cuda_w8_workspace(const kv_cuda_w8 *w, int64_t m);
/* y_dev[m][rows] (bf16) = dequant(quant_per_token(x_dev[m][cols] fp16) . Wq^T): one kernel quantizes each token
 * row (amax / 127 or / 448), the GEMM (s8 or e4m3 operands, int32 / fp32 accumulation) applies the token and row
 * scales in its epilogue. variant: one of kv_cuda_w8_variant (AUTO: the measured default); fp8 takes AUTO and
 * MMA_SYNC only (KV_EUNSUPPORTED otherwise). */
typedef enum kv_cuda_w8_variant {
    KV_W8_AUTO = 0,
    KV_W8_WGMMA = 1,         /* int8: wgmma m64n128k32, 3 cp.async stages, each slab's MMAs waited for */
    KV_W8_WGMMA_OVERLAP = 2, /* int8: wgmma, 4 stages, one slab's MMAs left running while the next is issued */
    KV_W8_MMA_SYNC = 3       /* mma.sync m16n8k32 with ldmatrix */
} kv_cuda_w8_variant;
kv_status kv_cuda_w8_matmul(const kv_cuda_w8 *w, const void *x_dev, int64_t m, void *y_dev, void *ws_dev, int variant,
                            void *stream, kv_error *err);

/* Benchmark (kvant bench kernels --gpu): fills res (malloc'd, *n entries; free with free()). */
typedef struct kv_cuda_bench_row {
    char kind[8];          /* "wq", "w8a8", "copy" */
    char format[48];
    int64_t n, k, m;       /* weight rows, cols; batch (tokens) */
    double us;             /* median microseconds per call */
    double format_bytes;   /* weight bytes in kvant's format */
    double gpu_bytes;      /* bytes the kernel reads for the weights */
    double gbps;           /* gpu_bytes / us (copy: bytes read + written) */
    double tflops;         /* 2 m n k / us */
    double cublas_us;      /* cuBLAS bf16 cublasGemmEx, same shape, same run */
    double ratio;          /* cublas_us / us */
    int variant;           /* wq: kv_cuda_wq_matmul's; w8a8: kv_cuda_w8_variant */
} kv_cuda_bench_row;
typedef struct kv_cuda_bench_opts {
    const char *const *formats; int n_formats;   /* weight-only formats */
    const int *batches; int n_batches;           /* weight-only batch sizes */
    const int64_t *w8_tokens; int n_w8_tokens;   /* W8A8 token counts */
    int w8a8;                                    /* run the W8A8 section */
    int reps;                                    /* timed graph replays (median) */
    int tune;                                    /* also time every kernel variant */
    int quick;                                   /* only the first shape */
    void (*progress)(void *user, const char *line); void *user;
} kv_cuda_bench_opts;
kv_status kv_cuda_bench(const kv_cuda_bench_opts *o, kv_cuda_bench_row **res, int *n, kv_error *err);

#ifdef __cplusplus
}
#endif
#endif
