/* isa.c — run-time choice of the CPU kernels (CPUID through __builtin_cpu_supports, whose data libgcc fills
 * before main): no state of kvant's own. */
#include "kernels/cpu/kernels.h"
#include <stdlib.h>
#include <string.h>

static const char *const k_isa_names[KV_ISA_COUNT] = {"scalar", "avx2", "avx512", "avx512vbmi"};

kv_isa kv_cpu_isa_hw(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2"))
        return __builtin_cpu_supports("avx512vbmi") ? KV_ISA_AVX512VBMI : KV_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KV_ISA_AVX2;
#endif
    return KV_ISA_SCALAR;
}

int kv_cpu_has_avx512bf16(void) {
#if defined(__x86_64__) || defined(__i386__)
    return kv_cpu_isa_hw() >= KV_ISA_AVX512 && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

int kv_isa_parse(const char *s) {
    for (int i = 0; s && i < KV_ISA_COUNT; i++)
        if (!strcmp(s, k_isa_names[i])) return i;
    return -1;
}

kv_isa kv_cpu_isa(void) {
    const kv_isa hw = kv_cpu_isa_hw();
    const int cap = kv_isa_parse(getenv("KVANT_ISA"));
    return cap >= 0 && cap < (int)hw ? (kv_isa)cap : hw;
}

const char *kv_isa_name(kv_isa isa) { return isa >= 0 && isa < KV_ISA_COUNT ? k_isa_names[isa] : "?"; }

const kv_f32_kernels *kv_f32_kernels_hw(void) {
    switch (kv_cpu_isa_hw()) {
    case KV_ISA_AVX512VBMI:
    case KV_ISA_AVX512: return &kv_f32_kernels_avx512;
    case KV_ISA_AVX2: return &kv_f32_kernels_avx2;
    default: return &kv_f32_kernels_generic;
    }
}
