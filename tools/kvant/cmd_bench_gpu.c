/* cmd_bench_gpu.c — `kvant bench kernels --gpu`: kvant's CUDA kernels against cuBLAS bf16 on Llama-3-8B's
 * shapes, in one run on one device (docs/bench.md). The measuring is src/kernels/cuda/bench.cu; this file parses
 * the options and prints. Without CUDA (a build by plain `make`) it says how to get one. */
#include "cli.h"
#include "core/core.h"
#ifdef KV_HAVE_CUDA
#include "kernels/cuda/kvcuda.h"
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_usage_gpu[] =
    "usage: kvant bench kernels --gpu [--formats LIST] [--batches LIST] [--tokens LIST] [--no-w8a8] [--reps R]\n"
    "                           [--tune] [--quick] [--json]\n"
    "\n"
    "Weight-only GEMV/GEMM (batch 1..16) from kvant's packed formats and W8A8 int8/fp8 GEMM on the GPU, against\n"
    "cuBLAS bf16 (cublasGemmEx) measured in the same run, on Llama-3-8B's shapes 4096x4096, 14336x4096,\n"
    "4096x14336 and 128256x4096 (weights rotated through copies larger than L2), plus the device copy bandwidth.\n"
    "Needs a build with `make cuda` and a CUDA device.\n"
    "  --formats LIST   weight-only formats (default int4_g128_sym,int4_g128_asym,int3_g128_sym,q4_0,q4_k,nf4,\n"
    "                   mxfp4,nvfp4_ts,higgs_p1_b4,higgs_p2_b3,higgs_p2_b4)\n"
    "  --batches LIST   batch sizes 1..16 (default 1,4,16)\n"
    "  --tokens LIST    W8A8 token counts (default 512,2048)\n"
    "  --no-w8a8        skip the W8A8 GEMMs\n"
    "  --reps R         graph replays per measurement, median (default 20)\n"
    "  --tune           also time each kernel variant (weight-only: the staged kernel with 3 and 4 stages, the\n"
    "                   16-row-tile kernel through the pair table for the 4-bit affine formats; W8A8: wgmma, wgmma\n"
    "                   with its MMAs overlapped, mma.sync)\n"
    "  --quick          first shape only\n"
    "  --json           one JSON object with every measurement\n";

static const char *const k_default_formats[] = {"int4_g128_sym", "int4_g128_asym", "int3_g128_sym", "q4_0", "q4_k",
                                                "nf4", "mxfp4", "nvfp4_ts", "higgs_p1_b4", "higgs_p2_b3", "higgs_p2_b4"};

#ifdef KV_HAVE_CUDA
static void progress_line(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "%s\n", line);
}

#endif

int kv_cmd_bench_gpu(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) {
        fputs(k_usage_gpu, stdout);
        return 0;
    }
#ifndef KV_HAVE_CUDA
    (void)k_default_formats;
    fprintf(stderr, "kvant bench: error: this kvant was built without CUDA; build it with `make cuda` (needs nvcc) "
                    "and run build-cuda/kvant bench kernels --gpu\n");
    return 1;
#else
    const char *v, *formats_arg = NULL;
    long long batches[16] = {1, 4, 16}, tokens[16] = {512, 2048}, reps = 20;
    int nb = 3, nt = 2, json = 0, w8 = 1, tune = 0, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_flag(argv, i, "--gpu", NULL)) {
        } else if (kv_cli_opt(argc, argv, &i, "--formats", NULL, &v)) {
            formats_arg = v;
        } else if (kv_cli_opt(argc, argv, &i, "--batches", NULL, &v)) {
            if ((nb = kv_cli_parse_int_list(v, 1, 16, batches, 16)) <= 0) return kv_cli_usage("bench", "--batches needs a list of 1..16");
        } else if (kv_cli_opt(argc, argv, &i, "--tokens", NULL, &v)) {
            if ((nt = kv_cli_parse_int_list(v, 1, 65536, tokens, 16)) <= 0) return kv_cli_usage("bench", "--tokens needs a list of 1..65536");
        } else if (kv_cli_opt(argc, argv, &i, "--reps", NULL, &v)) {
            if (kv_cli_parse_int(v, 3, 1000, &reps)) return kv_cli_usage("bench", "--reps needs 3..1000");
        } else if (kv_cli_flag(argv, i, "--no-w8a8", NULL)) {
            w8 = 0;
        } else if (kv_cli_flag(argv, i, "--tune", NULL)) {
            tune = 1;
        } else if (kv_cli_flag(argv, i, "--quick", NULL)) {
            quick = 1;
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else {
            return kv_cli_usage("bench", "unknown argument '%s'", argv[i]);
        }
    }
    kv_error err;
    kv_error_clear(&err);
    char **fl = NULL;
    int nf = 0;
    if (formats_arg) {
        if ((nf = kv_cli_split_list(formats_arg, &fl)) <= 0) return kv_cli_usage("bench", "--formats needs a list");
    } else {
        nf = (int)KV_ARRAY_LEN(k_default_formats);
    }
    const char **names = malloc(sizeof(char *) * (size_t)nf);
    int rc = 0;
    if (!names) { kv_cli_free_list(fl, nf); return 1; }
    for (int i = 0; i < nf; i++) {
        names[i] = fl ? fl[i] : k_default_formats[i];
        kv_format f;
        if (kv_format_get(names[i], &f, &err) != KV_OK) { rc = kv_cli_fail("bench", &err); goto done; }
        if (!kv_gpu_pack_supported(&f)) {
            rc = kv_cli_usage("bench", "format %s has no GPU weight-only kernel", names[i]);
            goto done;
        }
    }
    if (kv_cuda_device_count() < 1) {
        fprintf(stderr, "kvant bench: error: no CUDA device\n");
        rc = 1;
        goto done;
    }
    int bi[16];
    int64_t ti[16];
    for (int i = 0; i < nb; i++) bi[i] = (int)batches[i];
    for (int i = 0; i < nt; i++) ti[i] = tokens[i];
    kv_cuda_bench_opts o = {.formats = names, .n_formats = nf, .batches = bi, .n_batches = nb, .w8_tokens = ti,
                            .n_w8_tokens = nt, .w8a8 = w8, .reps = (int)reps, .tune = tune, .quick = quick,
                            .progress = progress_line};
    kv_cuda_info info;
    if (kv_cuda_info_get(&info, &err) != KV_OK) { rc = kv_cli_fail("bench", &err); goto done; }
    kv_cuda_bench_row *res = NULL;
    int n = 0;
    if (kv_cuda_bench(&o, &res, &n, &err) != KV_OK) { rc = kv_cli_fail("bench", &err); goto done; }
    if (json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "device"); kv_jw_str(&w, info.name);
        kv_jw_key(&w, "sms"); kv_jw_int(&w, info.sms);
        kv_jw_key(&w, "l2_bytes"); kv_jw_int(&w, (int64_t)info.l2_bytes);
        kv_jw_key(&w, "cuda_runtime"); kv_jw_int(&w, info.runtime_version);
        kv_jw_key(&w, "cuda_driver"); kv_jw_int(&w, info.driver_version);
        kv_jw_key(&w, "results");
        kv_jw_arr_begin(&w);
        for (int i = 0; i < n; i++) {
            const kv_cuda_bench_row *r = &res[i];
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "kind"); kv_jw_str(&w, r->kind);
            kv_jw_key(&w, "format"); kv_jw_str(&w, r->format);
            kv_jw_key(&w, "n"); kv_jw_int(&w, r->n);
            kv_jw_key(&w, "k"); kv_jw_int(&w, r->k);
            kv_jw_key(&w, "m"); kv_jw_int(&w, r->m);
            kv_jw_key(&w, "us"); kv_jw_num(&w, r->us);
            kv_jw_key(&w, "format_bytes"); kv_jw_num(&w, r->format_bytes);
            kv_jw_key(&w, "gpu_bytes"); kv_jw_num(&w, r->gpu_bytes);
            kv_jw_key(&w, "gbps"); kv_jw_num(&w, r->gbps);
            kv_jw_key(&w, "tflops"); kv_jw_num(&w, r->tflops);
            kv_jw_key(&w, "cublas_bf16_us"); kv_jw_num(&w, r->cublas_us);
            kv_jw_key(&w, "x_cublas_bf16"); kv_jw_num(&w, r->ratio);
            kv_jw_key(&w, "variant"); kv_jw_int(&w, r->variant);
            kv_jw_obj_end(&w);
        }
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else {
        printf("%s (%d SMs, L2 %zu MB), CUDA runtime %d; median of %lld graph replays\n", info.name, info.sms,
               info.l2_bytes >> 20, info.runtime_version, reps);
        printf("%-6s %-16s %7s %6s %6s %10s %9s %9s %10s %8s\n", "kind", "format", "n", "k", "m", "us", "GB/s", "TFLOP/s",
               "cuBLAS us", "x cuBLAS");
        for (int i = 0; i < n; i++) {
            const kv_cuda_bench_row *r = &res[i];
            printf("%-6s %-16s %7lld %6lld %6lld %10.2f %9.0f %9.1f %10.2f %8.2f\n", r->kind, r->format, (long long)r->n,
                   (long long)r->k, (long long)r->m, r->us, r->gbps, r->tflops, r->cublas_us, r->ratio);
        }
    }
    free(res);
done:
    free(names);
    kv_cli_free_list(fl, fl ? nf : 0);
    return rc;
#endif
}
