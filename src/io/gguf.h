/* gguf.h — internal helpers of the GGUF v3 container (reader src/io/gguf.c, writer src/io/gguf_write.c,
 * q/k permutation src/io/permute.c). The public API (kv_gguf_*, kv_gguf_writer_*, kv_permute_qk_*) is in
 * the io section of include/kvant.h. Layout: llama.cpp docs/gguf.md and ggml/src/gguf.cpp
 * (gguf_init_from_file_impl, gguf_write_out); docs/FORMAT.md "GGUF container".
 *
 * Quick use (reader):
 *     kv_gguf *g; REQUIRE kv_gguf_open(path, &g, &err) == KV_OK
 *     const char *arch; kv_gguf_get_str(g, "general.architecture", &arch, &err);
 *     uint32_t n_layer; kv_gguf_get_u32(g, "llama.block_count", &n_layer, &err);
 *     kv_gguf_value toks; kv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, &err);
 *     for i < toks.n: kv_gguf_value s; kv_gguf_arr_get(&toks, i, &s, &err);  (s.data, s.n) = piece bytes
 *     for i < kv_gguf_n_tensors(g): const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);  t->data, t->nbytes
 *     kv_gguf_close(g);
 */
#ifndef KV_IO_GGUF_H
#define KV_IO_GGUF_H

#include "core/core.h"

#define KV_GGUF_MAGIC "GGUF"
#define KV_GGUF_VERSION 3

/* Key holding the kv_format name of a kvant-only tensor type: "kvant.tensor.<tensor name>.format". */
#define KV_GGUF_KVANT_FORMAT_PREFIX "kvant.tensor."
#define KV_GGUF_KVANT_FORMAT_SUFFIX ".format"

/* Byte size of a scalar value type; 0 for STRING, ARRAY and unknown types. */
size_t kv_gguf_vtype_size(uint32_t t);

/* Bytes of a tensor of this type and shape (outermost first); 0 with err filled when the innermost
 * dimension is not a multiple of the block, the type is unknown, or the size overflows.
 * format_name: for kvant-only types (>= KV_TYPE_KVANT_BASE), the kv_format name; else ignored. */
kv_status kv_gguf_tensor_nbytes(uint32_t type, const char *format_name, int n_dims, const int64_t *shape,
                                uint64_t *nbytes, size_t *row_bytes, kv_error *err);

/* 1 when [p, p + n) lies inside the file mapping of a GGUF opened with kv_gguf_open (kv_model_drop_pages). */
int kv_gguf_maps_range(const kv_gguf *g, const void *p, size_t n);

#endif
