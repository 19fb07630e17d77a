/* qdot_layout.h — byte layouts of the ggml blocks the integer kernels read (ggml-common.h; the same bytes
 * src/formats/ggml_legacy.c and ggml_k.c write), as offsets, and the small decoders shared by every ISA.
 *   q4_0 (18 B): fp16 d | 16 B: value l = low nibble of byte l, value l+16 = high nibble, minus 8
 *   q8_0 (34 B): fp16 d | 32 int8
 *   q4_k (144 B): fp16 d, fp16 dmin | 12 B 6-bit scales/mins | 128 B nibbles (chunk c of 64 values: low
 *                 nibbles of bytes 32c.. give values 64c.., high nibbles values 64c+32..)
 *   q5_k (176 B): as q4_k with 32 B of high bits (bit 2c / 2c+1 of byte l) before the nibbles
 *   q6_k (210 B): 128 B low nibbles | 64 B 2-bit highs | 16 int8 scales (one per 16 values) | fp16 d
 *   mxfp4 (17 B): E8M0 e | 16 B nibbles as q4_0; value kvalues_fp4[c] · 2^(e-128) (the doubled E2M1 table)
 *   iq4_nl (18 B): fp16 d | 16 B nibbles as q4_0; value kvalues_iq4nl[c] · d
 *   nvfp4 (36 B): 4 UE4M3 scales (one per 16 values) | 32 B: sub-block s, byte 8s + j: low nibble value 16s + j,
 *                 high nibble value 16s + j + 8; value kvalues_fp4[c] · ue4m3_half(d[s])
 * and kvant's own (src/formats/codebook.c, int.c, higgs.c; docs/FORMAT.md):
 *   nf4 / af4 (36 B / 64 values): fp32 absmax | 32 B, value 2j the HIGH nibble of byte j, 2j+1 the low one
 *   int{3,4}_g128_{sym,asym} (fp16 scales): fp16 d [| fp16 min] | 128 codes of 3 or 4 bits, little-endian
 *                 bit stream (int4: value 2j the LOW nibble of byte j); sym d·(c - 2^(b-1)), asym d·c + min
 *   higgs_p2_b{3,4} (256 values): fp16 s | 128 codes of 2b bits (bit stream), pair t = s · grid[code t] */
#ifndef KV_KERNELS_CPU_QDOT_LAYOUT_H
#define KV_KERNELS_CPU_QDOT_LAYOUT_H

#include <stdint.h>
#include <string.h>

enum { KV_Q4_0_BYTES = 18, KV_Q8_0_BYTES = 34, KV_Q4_K_BYTES = 144, KV_Q5_K_BYTES = 176, KV_Q6_K_BYTES = 210 };
enum { KV_MXFP4_BYTES = 17, KV_IQ4_NL_BYTES = 18, KV_NVFP4_BYTES = 36, KV_CB4_BYTES = 36 };

/* Kernel ids of kvant's formats (a family shares one type id, so the kernels key on the layout; kernels.h
 * kv_qkernel.type holds the ggml type id for ggml types, else one of these). */
enum {
    KV_QK_NF4 = 0x7F000001, KV_QK_AF4, KV_QK_INT4_SYM, KV_QK_INT4_ASYM, KV_QK_INT3_SYM, KV_QK_INT3_ASYM,
    KV_QK_HIGGS_P2B3, KV_QK_HIGGS_P2B4
};
/* bytes per 128-value group of the int kernels (fp16 scales) and per 256-value HIGGS group */
static inline int kv_int_g128_bytes(int bits, int asym) { return (asym ? 4 : 2) + 16 * bits; }
static inline int kv_higgs_p2_bytes(int b) { return 2 + 32 * b; }

/* UE4M3 scale halved (ggml_ue4m3_to_fp32 / 2, formats.h kv_ue4m3_to_fp32_half) built from its bits: exact. */
static inline float kv_ue4m3_half_bits(uint8_t x) {
    if (x == 0 || x == 0x7F) return 0.0f;
    const uint32_t e = (x >> 3) & 0xF, m = x & 7;
    float v;
    if (e == 0) {
        v = (float)m * (1.0f / 1024.0f); /* m · 2^-9 / 2 */
    } else {
        const uint32_t bits = ((e + 127 - 8) << 23) | (m << 20); /* (1 + m/8) · 2^(e-7) / 2 */
        memcpy(&v, &bits, 4);
    }
    return v;
}

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
