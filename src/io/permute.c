/* permute.c — q/k row order between Hugging Face checkpoints (rotate-half RoPE: a head's first half of rows
 * pairs with its second half) and llama.cpp GGUF / Meta / llama2.c (interleaved RoPE: adjacent rows pair).
 * Source: llama.cpp convert_hf_to_gguf.py LlamaModel.permute — per head, reshape the hd rows to (2, hd/2),
 * swap the axes: GGUF row 2*j + i = HF row i*hd/2 + j (i in {0, 1}). Used by the GGUF writer (convert,
 * quantize) and, inverted, by the GGUF and llama.c readers (src/io/model_file.c). */
#include "io/gguf.h"
#include <inttypes.h>

static kv_status permute_qk(const void *src, void *dst, int64_t n_rows, size_t row_bytes, int n_head, int to_gguf,
                            kv_error *err) {
    if (!src || !dst || n_head <= 0 || n_rows <= 0 || row_bytes == 0 || n_rows % (2 * (int64_t)n_head))
        return kv_fail(err, KV_EINVAL, "q/k permutation: %" PRId64 " rows do not split into %d heads of even size",
                       n_rows, n_head);
    const uint8_t *s = src;
    uint8_t *d = dst;
    int64_t hd = n_rows / n_head, half = hd / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < half; j++) {
                int64_t hf = h * hd + i * half + j, gg = h * hd + 2 * j + i;
                int64_t from = to_gguf ? hf : gg, to = to_gguf ? gg : hf;
                memcpy(d + (size_t)to * row_bytes, s + (size_t)from * row_bytes, row_bytes);
            }
    return KV_OK;
}

kv_status kv_permute_qk_to_gguf(const void *src, void *dst, int64_t n_rows, size_t row_bytes, int n_head,
                                kv_error *err) {
    return permute_qk(src, dst, n_rows, row_bytes, n_head, 1, err);
}

kv_status kv_permute_qk_from_gguf(const void *src, void *dst, int64_t n_rows, size_t row_bytes, int n_head,
                                  kv_error *err) {
    return permute_qk(src, dst, n_rows, row_bytes, n_head, 0, err);
}

int64_t kv_qk_gguf_row(int64_t hf_row, int64_t head_dim) {
    int64_t half = head_dim / 2, h = hf_row / head_dim, k = hf_row % head_dim;
    return h * head_dim + 2 * (k % half) + k / half;
}
