/* qdot_avx512.c — the integer dot kernels of qdot_impl.h compiled for avx512 (flags: Makefile, files *_avx512.c). */
#define KV_QDOT_TABLE kv_qkernels_avx512
#define KV_QDOT_ACT kv_act_quantize_avx512
#include "kernels/cpu/qdot_impl.h"
