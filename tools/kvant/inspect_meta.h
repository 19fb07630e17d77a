/* inspect_meta.h — `kvant inspect --meta` (cmd_inspect_meta.c): a file's stored metadata and transforms. */
#ifndef KV_INSPECT_META_H
#define KV_INSPECT_META_H

#include "kvant.h"

typedef struct kv_inspect_meta kv_inspect_meta;
/* Reads the metadata of mf's file(s) before anything is printed, so a failure leaves no partial output. */
kv_status kv_inspect_meta_open(const kv_model_file *mf, kv_inspect_meta **out, kv_error *err);
void kv_inspect_meta_close(kv_inspect_meta *m);
void kv_inspect_meta_print_text(const kv_inspect_meta *m, const kv_model_file *mf);
/* Members "metadata", "quantization_config", "safetensors_metadata", "transforms" of the open object. */
void kv_inspect_meta_write_json(kv_jw *w, const kv_inspect_meta *m);

#endif
