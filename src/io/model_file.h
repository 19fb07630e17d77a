/* model_file.h — internals of kv_model_file shared by the loaders of src/io (hf.c, llama2c.c, model_file.c). */
#ifndef KV_IO_MODEL_FILE_H
#define KV_IO_MODEL_FILE_H

#include "core/core.h"
#include "io/json.h"

struct kv_gguf;

struct kv_model_file {
    kv_file_format format;
    char path[1024];
    kv_hparams hp;
    int has_hparams;          /* 0 for a lone .safetensors file */
    kv_mapped *maps;          /* one per file of the model (shards) */
    int n_maps, cap_maps;
    kv_tensor *tensors;
    int64_t n_tensors, cap_tensors;
    void **owned;             /* buffers the model owns (un-permuted q/k rows) */
    int n_owned, cap_owned;
    kv_tokenizer_source tok;
    char tok_path[1024];
    struct kv_gguf *gguf;     /* the open GGUF reader of a GGUF model */
    /* quantized HF checkpoints (src/io/hf_quant_read.c): string metadata standing in for the GGUF keys
     * ("kvant.tensor.NAME.format"), the activation format the checkpoint's loader applies, its quant method */
    struct kv_mf_meta *meta;
    int n_meta, cap_meta;
    int allow_raw;            /* safetensors dtypes kvant does not compute with are read (quantized checkpoints) */
    char act_format[48];
    char quant_method[72];    /* "gptq (gptq)", "compressed-tensors (pack-quantized)" */
};

typedef struct kv_mf_meta {
    char key[224];
    char value[64];
} kv_mf_meta;
kv_status kv_mf_set_meta(kv_model_file *mf, const char *key, const char *value, kv_error *err);
/* Rebuilds the tensors of a directory whose config.json has a quantization_config (GPTQ, compressed-tensors)
 * as kvant tensors of formats that decode to the loader's weights (src/io/hf_quant_read.c). */
kv_status kv_hf_quant_open(kv_model_file *mf, const kv_json *qcfg, const char *config_path, kv_error *err);

/* Maps path as file number *index of the model. */
kv_status kv_mf_add_map(kv_model_file *mf, const char *path, int *index, kv_error *err);
/* A zeroed tensor slot appended to the model (pointer valid until the next add). */
kv_tensor *kv_mf_add_tensor(kv_model_file *mf, kv_error *err);
/* n bytes owned (and freed) by the model file. */
void *kv_mf_alloc(kv_model_file *mf, size_t n, kv_error *err);

/* Loaders filling an empty model file. */
kv_status kv_hf_open_dir(kv_model_file *mf, const char *dir, kv_error *err);
kv_status kv_safetensors_open_file(kv_model_file *mf, const char *path, kv_error *err);
kv_status kv_llama2c_open_file(kv_model_file *mf, const char *path, kv_error *err);

/* Adds every tensor of the safetensors file as file number file_index (names mapped to canonical). */
kv_status kv_safetensors_add_tensors(kv_model_file *mf, int file_index, kv_error *err);

/* config.json (parsed) -> hparams; path names the file in errors. */
kv_status kv_hf_config_to_hparams(const kv_json *cfg, const char *path, kv_hparams *hp, kv_error *err);
kv_status kv_hf_config_file(const char *path, kv_hparams *hp, kv_error *err);

/* Checks that tensor shapes agree with hparams: every canonical tensor present with the shape the
 * hyper-parameters imply (output.weight optional when tied, biases only with attn_bias). */
kv_status kv_mf_check_shapes(const kv_model_file *mf, kv_error *err);

#endif
