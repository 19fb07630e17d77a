/* safetensors.h — safetensors header parser (huggingface/safetensors README "Format", src/tensor.rs
 * `validate`): 8-byte little-endian header length N, N bytes of JSON, then the byte buffer. */
#ifndef KV_IO_SAFETENSORS_H
#define KV_IO_SAFETENSORS_H

#include "kvant.h"

#define KV_ST_MAX_HEADER ((uint64_t)100 << 20) /* the reference implementation's cap */

typedef struct kv_st_tensor {
    char name[160];
    char dtype[16];         /* as written: "BF16" */
    uint32_t type;          /* kv_type (for raw dtypes a stand-in integer type of the same width) */
    int raw;                /* 1: a dtype kvant does not compute with (U8, U32, BOOL, F8_E4M3 ...): dtype says what */
    int n_dims;
    int64_t shape[4];
    uint64_t begin, end;    /* data_offsets, relative to the start of the byte buffer */
} kv_st_tensor;

typedef struct kv_st_header {
    kv_st_tensor *tensors;  /* in header order */
    int64_t n_tensors;
    uint64_t data_start;    /* absolute offset of the byte buffer: 8 + N */
} kv_st_header;

/* Validates everything the format promises: header length within the file and the cap, JSON object
 * starting with '{', no duplicate names, known dtypes (F32/F16/BF16/F64/I8/I16/I32/I64 are loadable; other
 * byte-sized safetensors dtypes are kept raw, see kv_st_tensor.raw; F4/F6/C64 give KV_EUNSUPPORTED naming the dtype), shape products without overflow, byte
 * counts matching dtype x shape, offsets inside the buffer, the buffer covered with no holes or overlaps.
 * path only names the file in errors. On success free with kv_st_header_free. */
kv_status kv_safetensors_parse(const uint8_t *data, size_t size, const char *path, kv_st_header *out, kv_error *err);
void kv_st_header_free(kv_st_header *h);

/* "BF16" for KV_TYPE_BF16 ...; NULL for types safetensors cannot hold. */
const char *kv_safetensors_dtype_name(uint32_t type);

#endif
