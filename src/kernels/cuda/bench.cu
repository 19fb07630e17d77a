/* bench.cu — `kvant bench kernels --gpu`: the CUDA kernels against cuBLAS bf16 (cublasGemmEx) on Llama-3-8B's
 * linear shapes, measured in one run on one device, plus the device-to-device copy bandwidth.
 * Method (see docs/bench.md): weights larger than L2 (enough rotating copies that one pass over them reads at
 * least 3x the L2 size), random codes and scales (never zeros), a CUDA graph of 20 launches over the rotating
 * copies replayed `reps` times, the median replay time / 20. cuBLAS gets the same treatment (bf16 weights
 * rotating likewise). */
#include "kernels/cuda/cuda_util.h"
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <algorithm>
#include <stdarg.h>
#include <stdio.h>
#include <vector>

#define KV_CUBLAS(call, err)                                                                          \
    do {                                                                                              \
        cublasStatus_t _s = (call);                                                                   \
        if (_s != CUBLAS_STATUS_SUCCESS)                                                              \
            return kv_fail((err), KV_EIO, "cuBLAS: %s: status %d (%s:%d)", #call, (int)_s, __FILE__, __LINE__); \
    } while (0)

static const int k_graph_launches = 20;

__global__ void fill_half(__half *p, size_t n, unsigned long long seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const unsigned long long h = kv_cu_hash(seed ^ (i * 0x9E3779B97F4A7C15ull));
        p[i] = __float2half(scale * ((float)(h >> 40) * (1.0f / 8388608.0f) - 1.0f));
    }
}
__global__ void fill_bf16(__nv_bfloat16 *p, size_t n, unsigned long long seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const unsigned long long h = kv_cu_hash(seed ^ (i * 0x9E3779B97F4A7C15ull));
        p[i] = __float2bfloat16(scale * ((float)(h >> 40) * (1.0f / 8388608.0f) - 1.0f));
    }
}

/* Times f(copy, stream) (a kv_status-returning enqueue) as described above; *us = median per launch. */
template <class F>
static kv_status time_launches(F f, int copies, int reps, cudaStream_t st, double *us, kv_error *err) {
    for (int i = 0; i < copies + 2; i++) {
        kv_status s = f(i % copies, st);
        if (s != KV_OK) return s;
    }
    KV_CU(cudaStreamSynchronize(st), err);
    cudaGraph_t g;
    cudaGraphExec_t ge;
    KV_CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), err);
    for (int i = 0; i < k_graph_launches; i++) {
        kv_status s = f(i % copies, st);
        if (s != KV_OK) {
            cudaStreamEndCapture(st, &g);
            return s;
        }
    }
    KV_CU(cudaStreamEndCapture(st, &g), err);
    KV_CU(cudaGraphInstantiate(&ge, g, 0), err);
    cudaEvent_t e0, e1;
    KV_CU(cudaEventCreate(&e0), err);
    KV_CU(cudaEventCreate(&e1), err);
    KV_CU(cudaGraphLaunch(ge, st), err);
    std::vector<double> t;
    for (int r = 0; r < reps; r++) {
        KV_CU(cudaEventRecord(e0, st), err);
        KV_CU(cudaGraphLaunch(ge, st), err);
        KV_CU(cudaEventRecord(e1, st), err);
        KV_CU(cudaEventSynchronize(e1), err);
        float ms = 0;
        KV_CU(cudaEventElapsedTime(&ms, e0, e1), err);
        t.push_back(ms * 1000.0 / k_graph_launches);
    }
    std::sort(t.begin(), t.end());
    *us = t[t.size() / 2];
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    return KV_OK;
}

static int copies_for(size_t bytes, size_t l2) {
    const size_t want = 3 * l2;
    size_t c = (want + bytes - 1) / bytes;
    return (int)std::max<size_t>(1, std::min<size_t>(c, 64));
}

struct shape { const char *name; int64_t n, k; };
static const shape k_shapes[] = {{"q/o 4096x4096", 4096, 4096},
                                 {"gate/up 14336x4096", 14336, 4096},
                                 {"down 4096x14336", 4096, 14336},
                                 {"lm_head 128256x4096", 128256, 4096}};

struct bench_ctx {
    const kv_cuda_bench_opts *o;
    kv_cuda_info info;
    cublasHandle_t h;
    void *cublas_ws;
    cudaStream_t st;
    std::vector<kv_cuda_bench_row> rows;
};

static void say(bench_ctx &c, const char *fmt, ...) {
    if (!c.o->progress) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    c.o->progress(c.o->user, buf);
}

/* cuBLAS bf16: Y[m][n] = X[m][k] W[n][k]^T, i.e. column-major C (n x m) = W^T(n x k) X(k x m). */
static kv_status time_cublas(bench_ctx &c, int64_t n, int64_t k, int64_t m, double *us, kv_error *err) {
    const size_t wbytes = (size_t)(n * k) * 2;
    const int copies = copies_for(wbytes, c.info.l2_bytes);
    std::vector<__nv_bfloat16 *> W(copies, nullptr);
    __nv_bfloat16 *X = nullptr, *Y = nullptr;
    kv_status st = KV_OK;
    for (int i = 0; i < copies && st == KV_OK; i++) {
        if ((st = kv_cuda_malloc((void **)&W[i], wbytes, err)) == KV_OK) fill_bf16<<<1024, 256, 0, c.st>>>(W[i], (size_t)(n * k), 11 + i, 0.05f);
    }
    if (st == KV_OK) st = kv_cuda_malloc((void **)&X, (size_t)(m * k) * 2, err);
    if (st == KV_OK) st = kv_cuda_malloc((void **)&Y, (size_t)(m * n) * 2, err);
    if (st == KV_OK) {
        fill_bf16<<<1024, 256, 0, c.st>>>(X, (size_t)(m * k), 7, 1.0f);
        const float one = 1.0f, zero = 0.0f;
        auto f = [&](int i, cudaStream_t s) -> kv_status {
            (void)s;
            KV_CUBLAS(cublasGemmEx(c.h, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, W[i], CUDA_R_16BF, (int)k,
                                   X, CUDA_R_16BF, (int)k, &zero, Y, CUDA_R_16BF, (int)n, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
                      err);
            return KV_OK;
        };
        st = time_launches(f, copies, c.o->reps, c.st, us, err);
    }
    for (auto p : W) kv_cuda_free(p);
    kv_cuda_free(X);
    kv_cuda_free(Y);
    return st;
}

static kv_status bench_copy(bench_ctx &c, kv_error *err) {
    const size_t bytes = (size_t)1 << 30;
    void *a = nullptr, *b = nullptr;
    kv_status st = kv_cuda_malloc(&a, bytes, err);
    if (st == KV_OK) st = kv_cuda_malloc(&b, bytes, err);
    double us = 0;
    if (st == KV_OK) {
        fill_half<<<1024, 256, 0, c.st>>>((__half *)a, bytes / 2, 3, 1.0f);
        auto f = [&](int i, cudaStream_t s) -> kv_status {
            (void)i;
            KV_CU(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s), err);
            return KV_OK;
        };
        st = time_launches(f, 1, std::max(3, c.o->reps / 4), c.st, &us, err);
    }
    kv_cuda_free(a);
    kv_cuda_free(b);
    if (st != KV_OK) return st;
    kv_cuda_bench_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.kind, sizeof r.kind, "copy");
    snprintf(r.format, sizeof r.format, "d2d 1 GiB");
    r.us = us;
    r.gpu_bytes = 2.0 * (double)bytes;
    r.gbps = r.gpu_bytes / us * 1e-3;
    c.rows.push_back(r);
    say(c, "device-to-device copy: %.0f GB/s (read + write)", r.gbps);
    return KV_OK;
}

static kv_status bench_wq(bench_ctx &c, const shape &sh, const kv_format *fmt, int m, double cublas_us, kv_error *err) {
    kv_gpu_pack lay;
    kv_status st = kv_gpu_pack_layout(fmt, sh.n, sh.k, &lay, 0, err);
    if (st != KV_OK) return st;
    const size_t bytes = kv_gpu_pack_bytes(&lay);
    const int copies = copies_for(bytes, c.info.l2_bytes);
    std::vector<kv_cuda_wq *> W(copies, nullptr);
    __half *X = nullptr;
    float *Y = nullptr;
    for (int i = 0; i < copies && st == KV_OK; i++) st = kv_cuda_wq_random(&lay, 100 + i, &W[i], err);
    if (st == KV_OK) st = kv_cuda_malloc((void **)&X, (size_t)(m * sh.k) * 2, err);
    if (st == KV_OK) st = kv_cuda_malloc((void **)&Y, (size_t)(m * sh.n) * 4, err);
    if (st == KV_OK) fill_half<<<1024, 256, 0, c.st>>>(X, (size_t)(m * sh.k), 5, 1.0f);
    /* 0: the default; the staged kernel with 3 and 4 stages; the 16-row-tile kernel's table path */
    const int variants[] = {0, KV_WQ_STAGED | KV_WQ_DEPTH2, KV_WQ_STAGED | KV_WQ_DEPTH4, KV_WQ_DEPTH2 | KV_WQ_TABLE};
    for (int vi = 0; vi < (c.o->tune ? 4 : 1) && st == KV_OK; vi++) {
        const int rt = variants[vi];
        double us = 0;
        auto f = [&](int i, cudaStream_t s) -> kv_status { return kv_cuda_wq_matmul(W[i], X, m, Y, rt, s, err); };
        if ((st = time_launches(f, copies, c.o->reps, c.st, &us, err)) != KV_OK) break;
        kv_cuda_bench_row r;
        memset(&r, 0, sizeof r);
        snprintf(r.kind, sizeof r.kind, "wq");
        snprintf(r.format, sizeof r.format, "%s", fmt->name);
        r.n = sh.n, r.k = sh.k, r.m = m, r.us = us;
        r.format_bytes = (double)lay.format_bytes;
        r.gpu_bytes = (double)bytes;
        r.gbps = r.gpu_bytes / us * 1e-3;
        r.tflops = 2.0 * m * (double)sh.n * (double)sh.k / us * 1e-6;
        r.cublas_us = cublas_us;
        r.ratio = cublas_us / us;
        r.variant = rt;
        c.rows.push_back(r);
        say(c, "%-20s %-16s m=%2d v=%d %9.2f us %7.0f GB/s  cuBLAS bf16 %9.2f us  x%.2f", sh.name, fmt->name, m,
            r.variant, us, r.gbps, cublas_us, r.ratio);
    }
    for (auto p : W) kv_cuda_wq_free(p);
    kv_cuda_free(X);
    kv_cuda_free(Y);
    return st;
}

static kv_status bench_w8(bench_ctx &c, const shape &sh, int fp8, int64_t m, double cublas_us, kv_error *err) {
    const size_t bytes = (size_t)(sh.n * sh.k);
    const int copies = copies_for(bytes, c.info.l2_bytes);
    std::vector<kv_cuda_w8 *> W(copies, nullptr);
    kv_status st = KV_OK;
    for (int i = 0; i < copies && st == KV_OK; i++) st = kv_cuda_w8_random(fp8, sh.n, sh.k, 200 + i, &W[i], err);
    __half *X = nullptr;
    void *Y = nullptr, *ws = nullptr;
    if (st == KV_OK) st = kv_cuda_malloc((void **)&X, (size_t)(m * sh.k) * 2, err);
    if (st == KV_OK) st = kv_cuda_malloc(&Y, (size_t)(m * sh.n) * 2, err);
    if (st == KV_OK) st = kv_cuda_malloc(&ws, kv_cuda_w8_workspace(W[0], m), err);
    if (st == KV_OK) fill_half<<<1024, 256, 0, c.st>>>(X, (size_t)(m * sh.k), 9, 2.0f);
    /* AUTO is KV_W8_WGMMA for int8, KV_W8_MMA_SYNC for fp8 (its only form) */
    const int variants[] = {KV_W8_AUTO, KV_W8_WGMMA_OVERLAP, KV_W8_MMA_SYNC};
    for (int vi = 0; vi < (c.o->tune && !fp8 ? 3 : 1) && st == KV_OK; vi++) {
        const int v = variants[vi];
        double us = 0;
        auto f = [&](int i, cudaStream_t s) -> kv_status { return kv_cuda_w8_matmul(W[i], X, m, Y, ws, v, s, err); };
        if ((st = time_launches(f, copies, c.o->reps, c.st, &us, err)) != KV_OK) break;
        kv_cuda_bench_row r;
        memset(&r, 0, sizeof r);
        snprintf(r.kind, sizeof r.kind, "w8a8");
        snprintf(r.format, sizeof r.format, "%s", fp8 ? "fp8_e4m3" : "int8");
        r.n = sh.n, r.k = sh.k, r.m = m, r.us = us;
        r.format_bytes = r.gpu_bytes = (double)bytes;
        r.gbps = r.gpu_bytes / us * 1e-3;
        r.tflops = 2.0 * (double)m * (double)sh.n * (double)sh.k / us * 1e-6;
        r.cublas_us = cublas_us;
        r.ratio = cublas_us / us;
        r.variant = v;
        c.rows.push_back(r);
        say(c, "%-20s %-8s M=%5lld v=%d %9.1f us %7.1f TOPS  cuBLAS bf16 %9.1f us (%.1f TFLOP/s)  x%.2f", sh.name,
            r.format, (long long)m, v, us, r.tflops, cublas_us, 2.0 * (double)m * sh.n * sh.k / cublas_us * 1e-6, r.ratio);
    }
    for (auto p : W) kv_cuda_w8_free(p);
    kv_cuda_free(X);
    kv_cuda_free(Y);
    kv_cuda_free(ws);
    return st;
}

static kv_status run_all(bench_ctx &c, kv_error *err) {
    kv_status st = bench_copy(c, err);
    if (st != KV_OK) return st;
    const int nshapes = c.o->quick ? 1 : (int)(sizeof k_shapes / sizeof k_shapes[0]);
    std::vector<kv_format> fmts(c.o->n_formats);
    for (int i = 0; i < c.o->n_formats; i++)
        if ((st = kv_format_get(c.o->formats[i], &fmts[i], err)) != KV_OK) return st;
    for (int s = 0; s < nshapes; s++) {
        const shape &sh = k_shapes[s];
        for (int b = 0; b < c.o->n_batches; b++) {
            const int m = c.o->batches[b];
            double cub = 0;
            if ((st = time_cublas(c, sh.n, sh.k, m, &cub, err)) != KV_OK) return st;
            kv_cuda_bench_row r;
            memset(&r, 0, sizeof r);
            snprintf(r.kind, sizeof r.kind, "cublas");
            snprintf(r.format, sizeof r.format, "bf16");
            r.n = sh.n, r.k = sh.k, r.m = m, r.us = cub, r.cublas_us = cub, r.ratio = 1.0;
            r.format_bytes = r.gpu_bytes = (double)(sh.n * sh.k) * 2.0;
            r.gbps = r.gpu_bytes / cub * 1e-3;
            r.tflops = 2.0 * m * (double)sh.n * (double)sh.k / cub * 1e-6;
            c.rows.push_back(r);
            say(c, "%-20s cuBLAS bf16      m=%2d      %9.2f us %7.0f GB/s", sh.name, m, cub, r.gbps);
            for (int f = 0; f < c.o->n_formats; f++)
                if ((st = bench_wq(c, sh, &fmts[f], m, cub, err)) != KV_OK) return st;
        }
        if (!c.o->w8a8) continue;
        for (int t = 0; t < c.o->n_w8_tokens; t++) {
            const int64_t m = c.o->w8_tokens[t];
            double cub = 0;
            if ((st = time_cublas(c, sh.n, sh.k, m, &cub, err)) != KV_OK) return st;
            if ((st = bench_w8(c, sh, 0, m, cub, err)) != KV_OK) return st;
            if ((st = bench_w8(c, sh, 1, m, cub, err)) != KV_OK) return st;
        }
    }
    return KV_OK;
}

extern "C" kv_status kv_cuda_bench(const kv_cuda_bench_opts *o, kv_cuda_bench_row **res, int *n, kv_error *err) {
    *res = NULL;
    *n = 0;
    if (kv_cuda_device_count() < 1) return kv_fail(err, KV_EUNSUPPORTED, "no CUDA device");
    bench_ctx c;
    c.o = o;
    kv_status st = kv_cuda_info_get(&c.info, err);
    if (st != KV_OK) return st;
    KV_CU(cudaStreamCreateWithFlags(&c.st, cudaStreamNonBlocking), err);
    KV_CUBLAS(cublasCreate(&c.h), err);
    const size_t ws = (size_t)64 << 20;
    if ((st = kv_cuda_malloc(&c.cublas_ws, ws, err)) != KV_OK) return st;
    KV_CUBLAS(cublasSetStream(c.h, c.st), err);
    KV_CUBLAS(cublasSetWorkspace(c.h, c.cublas_ws, ws), err);
    st = run_all(c, err);
    cublasDestroy(c.h);
    kv_cuda_free(c.cublas_ws);
    cudaStreamDestroy(c.st);
    if (st != KV_OK) return st;
    *res = (kv_cuda_bench_row *)malloc(sizeof(kv_cuda_bench_row) * std::max<size_t>(1, c.rows.size()));
    if (!*res) return kv_fail(err, KV_ENOMEM, "out of memory");
    memcpy(*res, c.rows.data(), sizeof(kv_cuda_bench_row) * c.rows.size());
    *n = (int)c.rows.size();
    return KV_OK;
}
