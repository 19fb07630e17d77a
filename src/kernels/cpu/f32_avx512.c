/* f32_avx512.c — the fp32/bf16 kernels of f32_impl.h compiled for avx512 (flags: Makefile, files *_avx512.c). */
#define KV_F32_TABLE kv_f32_kernels_avx512
#include "kernels/cpu/f32_impl.h"
