/* types.c — storage type traits for every ggml type id (ggml/include/ggml.h enum ggml_type,
 * ggml/src/ggml-common.h block structs), so files with types kvant cannot compute still inspect. */
#include "core.h"

static const kv_type_info k_ggml_types[KV_TYPE_GGML_COUNT] = {
    [KV_TYPE_F32] = {"f32", 1, 4},
    [KV_TYPE_F16] = {"f16", 1, 2},
    [KV_TYPE_Q4_0] = {"q4_0", 32, 18},
    [KV_TYPE_Q4_1] = {"q4_1", 32, 20},
    [KV_TYPE_Q5_0] = {"q5_0", 32, 22},
    [KV_TYPE_Q5_1] = {"q5_1", 32, 24},
    [KV_TYPE_Q8_0] = {"q8_0", 32, 34},
    [KV_TYPE_Q8_1] = {"q8_1", 32, 36},
    [KV_TYPE_Q2_K] = {"q2_k", 256, 84},
    [KV_TYPE_Q3_K] = {"q3_k", 256, 110},
    [KV_TYPE_Q4_K] = {"q4_k", 256, 144},
    [KV_TYPE_Q5_K] = {"q5_k", 256, 176},
    [KV_TYPE_Q6_K] = {"q6_k", 256, 210},
    [KV_TYPE_Q8_K] = {"q8_k", 256, 292},
    [KV_TYPE_IQ2_XXS] = {"iq2_xxs", 256, 66},
    [KV_TYPE_IQ2_XS] = {"iq2_xs", 256, 74},
    [KV_TYPE_IQ3_XXS] = {"iq3_xxs", 256, 98},
    [KV_TYPE_IQ1_S] = {"iq1_s", 256, 50},
    [KV_TYPE_IQ4_NL] = {"iq4_nl", 32, 18},
    [KV_TYPE_IQ3_S] = {"iq3_s", 256, 110},
    [KV_TYPE_IQ2_S] = {"iq2_s", 256, 82},
    [KV_TYPE_IQ4_XS] = {"iq4_xs", 256, 136},
    [KV_TYPE_I8] = {"i8", 1, 1},
    [KV_TYPE_I16] = {"i16", 1, 2},
    [KV_TYPE_I32] = {"i32", 1, 4},
    [KV_TYPE_I64] = {"i64", 1, 8},
    [KV_TYPE_F64] = {"f64", 1, 8},
    [KV_TYPE_IQ1_M] = {"iq1_m", 256, 56},
    [KV_TYPE_BF16] = {"bf16", 1, 2},
    [KV_TYPE_TQ1_0] = {"tq1_0", 256, 54},
    [KV_TYPE_TQ2_0] = {"tq2_0", 256, 66},
    [KV_TYPE_MXFP4] = {"mxfp4", 32, 17},
    [KV_TYPE_NVFP4] = {"nvfp4", 64, 36},
};

const kv_type_info *kv_type_get(uint32_t type) {
    if (type < KV_TYPE_GGML_COUNT && k_ggml_types[type].name) return &k_ggml_types[type];
    return NULL;
}

size_t kv_type_row_bytes(uint32_t type, int64_t n) {
    const kv_type_info *ti = kv_type_get(type);
    if (!ti || n < 0 || n % ti->block) return 0;
    return (size_t)(n / ti->block) * (size_t)ti->block_bytes;
}
