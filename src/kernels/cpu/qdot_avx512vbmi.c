/* qdot_avx512vbmi.c — the kernels of qdot_impl.h compiled for avx512 + VBMI (flags: Makefile, files *_avx512vbmi.c):
 * the avx512 table plus the kernels that need byte permutes (qdot_lut_impl.h, __AVX512VBMI__). */
#define KV_QDOT_TABLE kv_qkernels_avx512vbmi
#define KV_QDOT_ACT kv_act_quantize_avx512vbmi
#include "kernels/cpu/qdot_impl.h"
