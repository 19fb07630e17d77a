/* qdot_avx2.c — the integer dot kernels of qdot_impl.h compiled for avx2 (flags: Makefile, files *_avx2.c). */
#define KV_QDOT_TABLE kv_qkernels_avx2
#define KV_QDOT_ACT kv_act_quantize_avx2
#include "kernels/cpu/qdot_impl.h"
