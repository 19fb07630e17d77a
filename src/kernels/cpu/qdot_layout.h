/* qdot_layout.h — byte layouts of the ggml blocks the integer kernels read (ggml-common.h; the same bytes
 * src/formats/ggml_legacy.c and ggml_k.c write), as offsets, and the small decoders shared by every ISA.
 *   q4_0 (18 B): fp16 d | 16 B: value l = low nibble of byte l, value l+16 = high nibble, minus 8
 *   q8_0 (34 B): fp16 d | 32 int8
 *   q4_k (144 B): fp16 d, fp16 dmin | 12 B 6-bit scales/mins | 128 B nibbles (chunk c of 64 values: low
 *                 nibbles of bytes 32c.. give values 64c.., high nibbles values 64c+32..)
 *   q5_k (176 B): as q4_k with 32 B of high bits (bit 2c / 2c+1 of byte l) before the nibbles
 *   q6_k (210 B): 128 B low nibbles | 64 B 2-bit highs | 16 int8 scales (one per 16 values) | fp16 d */
#ifndef KV_KERNELS_CPU_QDOT_LAYOUT_H
#define KV_KERNELS_CPU_QDOT_LAYOUT_H

#include <stdint.h>

enum { KV_Q4_0_BYTES = 18, KV_Q8_0_BYTES = 34, KV_Q4_K_BYTES = 144, KV_Q5_K_BYTES = 176, KV_Q6_K_BYTES = 210 };

/* The 8 scales and 8 minimums of a q4_k / q5_k super-block from its 12 packed bytes (ggml get_scale_min_k4). */
static inline void kv_k4_scales(const uint8_t *q, uint8_t sc[8], uint8_t m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t)((q[j + 8] & 0xF) | ((q[j] >> 6) << 4));
        m[j + 4] = (uint8_t)((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

/* Unsigned 6-bit code (0..63; the value is code - 32) of element e of a q6_k super-block (ggml
 * dequantize_row_q6_K order: half h = e / 128, then four runs of 32). */
static inline int kv_q6_k_code(const uint8_t *b, int e) {
    const int h = e / 128, r = (e % 128) / 32, l = e % 32;
    const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
    const int lo = r & 1 ? ql[l + 32] : ql[l];
    return ((r < 2 ? lo & 0xF : lo >> 4) | (((qh[l] >> (2 * r)) & 3) << 4));
}

#endif
