/* f32_generic.c — the fp32/bf16 kernels of f32_impl.h compiled for generic (flags: Makefile, files *_generic.c). */
#define KV_F32_TABLE kv_f32_kernels_generic
#include "kernels/cpu/f32_impl.h"
