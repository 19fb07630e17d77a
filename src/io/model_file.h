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
};

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
