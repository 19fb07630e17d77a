/* hf_quant.h — the quantized Hugging Face checkpoint layouts kvant writes (src/io/hf_write.c) and reads
 * (src/io/hf_quant_read.c): GPTQ (AutoGPTQ / GPTQModel `quant_method: gptq`) and the compressed-tensors formats
 * of llm-compressor (`quant_method: compressed-tensors`: pack-quantized, int-quantized, float-quantized,
 * nvfp4-pack-quantized). docs/FORMAT.md "Hugging Face output" describes them byte by byte. */
#ifndef KV_IO_HF_QUANT_H
#define KV_IO_HF_QUANT_H

#include "kvant.h"

/* The integer formats (int{n}_g{g}_{sym|asym}...) as the HF layouts see them, parsed from the format name. */
typedef struct kv_hf_int {
    int bits;
    int group;     /* elements per scale group; 0: one per row (channel) */
    int asym;      /* asymmetric: only with an integer zero point (_zp) */
    int zp;
    int f32;       /* fp32 scales */
} kv_hf_int;

/* 1 and *out for int{n}_g{32,64,128,256,0}_sym[_f32][_mse][_ct] and int{n}_g{..}_asym[_f32][_mse]_zp; 0 otherwise
 * (per-tensor groups, asym without integer zero points: no HF layout holds them). */
int kv_hf_int_parse(const char *format_name, kv_hf_int *out);

#endif
