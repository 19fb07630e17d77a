/* f32_avx2.c — the fp32/bf16 kernels of f32_impl.h compiled for avx2 (flags: Makefile, files *_avx2.c). */
#define KV_F32_TABLE kv_f32_kernels_avx2
#include "kernels/cpu/f32_impl.h"
