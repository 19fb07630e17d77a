/* methods.c — the table of `kvant quantize --method` entries (kv_quant_method_find). */
#include "algos/quantize.h"

static const kv_quant_method k_methods[] = {
    {"rtn", 0, kv_method_rtn, "round to nearest with the format's own (importance-weighted) quantizer"},
    {"gptq", 1, kv_method_gptq, "GPTQ error compensation onto any format (src/algos/gptq.c)"},
    {"mr-gptq", 1, kv_method_mrgptq, "MR-GPTQ: GPTQ on Hadamard-rotated weights (--transform rht:GROUP) with fixed scales"},
    {"watersic", 1, kv_method_watersic, "WaterSIC: entropy-coded successive interference cancellation (src/algos/watersic.c)"},
    {"llm-int8", 1, kv_method_llmint8, "LLM.int8(): W8A8 vector-wise int8 with fp16 outlier input columns (src/algos/llmint8_method.c)"},
};

const kv_quant_method *kv_quant_method_find(const char *name) {
    for (size_t i = 0; i < KV_ARRAY_LEN(k_methods); i++)
        if (!strcmp(name, k_methods[i].name)) return &k_methods[i];
    return NULL;
}

const char *kv_quant_method_names(void) { return "rtn, gptq, mr-gptq, watersic, llm-int8"; }
