/* fuzz_gguf.c — libFuzzer target for the GGUF reader (src/io/gguf.c): open the bytes, then touch every
 * metadata value (every element of every array, nested ones too), every getter, and the first and last byte
 * of every tensor, so that any offset the reader accepted but should not have shows up under ASan. */
#include "io/gguf.h"

static volatile uint64_t g_sink;

static void touch_value(const kv_gguf_value *v, int depth) {
    int64_t i;
    uint64_t u;
    double d;
    if (v->type == KV_GGUF_STRING) {
        for (uint64_t k = 0; k < v->n; k++) g_sink += ((const uint8_t *)v->data)[k];
        return;
    }
    if (v->type != KV_GGUF_ARRAY) {
        if (!kv_gguf_value_i64(v, &i, NULL)) g_sink += (uint64_t)i;
        if (!kv_gguf_value_u64(v, &u, NULL)) g_sink += u;
        if (!kv_gguf_value_f64(v, &d, NULL)) g_sink += (uint64_t)(d == d);
        return;
    }
    if (depth > KV_GGUF_MAX_ARRAY_DEPTH) __builtin_trap(); /* the reader must have refused this */
    for (uint64_t k = 0; k < v->n; k++) {
        kv_gguf_value e;
        if (kv_gguf_arr_get(v, k, &e, NULL) != KV_OK) __builtin_trap();
        touch_value(&e, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_gguf *g;
    if (kv_gguf_open_memory(data, size, "fuzz.gguf", &g, &err) != KV_OK) {
        if (!err.message[0]) __builtin_trap(); /* every rejection explains itself */
        return 0;
    }
    for (int64_t k = 0; k < kv_gguf_n_kv(g); k++) {
        const char *key = kv_gguf_kv_key(g, k);
        if (kv_gguf_find(g, key) != kv_gguf_kv_value(g, k)) __builtin_trap();
        touch_value(kv_gguf_kv_value(g, k), 0);
        uint32_t u32;
        int32_t i32;
        float f;
        int b;
        const char *s;
        kv_gguf_value arr;
        g_sink += kv_gguf_get_u32(g, key, &u32, NULL) + kv_gguf_get_i32(g, key, &i32, NULL) +
                  kv_gguf_get_f32(g, key, &f, NULL) + kv_gguf_get_bool(g, key, &b, NULL) +
                  kv_gguf_get_str(g, key, &s, NULL) + kv_gguf_get_arr(g, key, &arr, NULL);
    }
    for (int64_t k = 0; k < kv_gguf_n_tensors(g); k++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, k);
        if (kv_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        if (t->offset % kv_gguf_alignment(g)) __builtin_trap();
        if (t->nbytes) {
            const uint8_t *p = t->data;
            g_sink += p[0] + p[t->nbytes - 1];
        }
        /* an entropy-coded tensor the reader accepted: its streams must decode or be refused, never overrun */
        if (t->type == KV_TYPE_ECW && t->shape[0] * t->shape[1] <= (1 << 20)) {
            float *dec = malloc(sizeof(float) * (size_t)(t->shape[0] * t->shape[1]));
            if (dec && kv_ecw_decode_f32(t->data, (size_t)t->nbytes, t->shape[0], t->shape[1], dec, NULL, NULL) == KV_OK)
                g_sink += (uint64_t)(dec[0] == dec[0]);
            free(dec);
        }
    }
    kv_gguf_close(g);
    return 0;
}
