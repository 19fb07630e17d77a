/* qdot_lut_impl.h — the kernels of the lookup-table and bit-stream formats (included by qdot_impl.h, so compiled
 * for AVX2 and for AVX-512; layouts in qdot_layout.h):
 *   - 4-bit formats whose values are small integers on q8 activations: mxfp4 (E2M1 doubled, E8M0 scale),
 *     nvfp4 (UE4M3 scale per 16), iq4_nl — the 16-entry int8 table in a register, VPSHUFB as the lookup, the
 *     signed products through |w| · sign(x, w) (ggml-cpu/arch/x86/quants.c ggml_vec_dot_mxfp4_q8_0);
 *   - int4 / int3 groups of 128 on q8 activations: the codes unpacked to bytes, the offset 2^(b-1) (sym) or
 *     the minimum (asym) through the activation block sums (ggml's q4_0 / q4_1 with q8_0 / q8_1);
 *   - nf4 / af4 on q8 activations in their nibble order (KV_ACT_Q8_64NF): the codebook rounded to int8
 *     (127 · code, within 1/254 of the absmax) in a register, VPSHUFB as the lookup;
 *   - higgs_p2_b{3,4} on q8 activations with the pairs' coordinates apart (KV_ACT_Q8_128P), where VBMI is
 *     (qdot_avx512vbmi.c): the 2-D grid as two int8 tables in registers, VPERMB / VPERMI2B as the lookup;
 *   - nf4 / af4 (exact, for --act-dot f32) and higgs_p2_b{3,4} on fp32 activations: the 16-entry
 *     codebook scaled by the block's absmax in registers (AVX-512 VPERMPS on 16 lanes; AVX2 two VPERMPS of
 *     8 and a blend on code bit 3), the HIGGS 2-D grid in L1 (one 64-bit gather per pair), fp32 sums.
 * Each (row, token) of a tile runs the same operation sequence as the 1 x 1 tile, so tiles equal dot(). */
#include "formats/formats.h"
#include "formats/extra.h"

enum { TT_F = 2 };

/* Σ w·x over 32 signed bytes (|w|, |x| <= 127: the pair sums of VPMADDUBSW cannot saturate) */
static inline __m256i dp_s8s8(__m256i acc, __m256i w, __m256i x) {
    return dp_u8s8(acc, _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

static inline __m256i table16_i8(const int8_t *t) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)t));
}

/* mxfp4 (kind 0) and iq4_nl (kind 1): q4_0's nibble order, one table value per code */
/* VNNI: the table + 128 as VPDPBUSD's unsigned operand, its 128 Σq removed by the accumulator's start (-16 Σq
 * in each of 8 lanes): no sign juggling per block; AVX2: dp_s8s8 */
KV_INLINE void tile_lut32(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                          int64_t ldy, const int NR, const int NT, const int kind) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    const __m256i tab = _mm256_xor_si256(table16_i8(kind == 0 ? kv_kvalues_fp4 : kv_kvalues_iq4nl), _mm256_set1_epi8((char)0x80));
#else
    const __m256i tab = table16_i8(kind == 0 ? kv_kvalues_fp4 : kv_kvalues_iq4nl);
#endif
    const size_t bytes = kind == 0 ? KV_MXFP4_BYTES : KV_IQ4_NL_BYTES;
    __m256 acc[TR][TT];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i wq[TR];
        __m256 wd[TR];
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *p = w + (size_t)r * ws + (size_t)b * bytes;
            wq[r] = _mm256_shuffle_epi8(tab, q4_0_codes(p + (kind == 0 ? 1 : 2)));
            wd[r] = _mm256_set1_ps(kind == 0 ? kv_e8m0_to_fp32_half(p[0]) : f16(p));
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const kv_act_q8_32 *x = (const kv_act_q8_32 *)(const void *)(act + (size_t)t * as) + b;
            const __m256i xq = load256(x->q);
            const __m256 xd = _mm256_set1_ps(x->d);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
            const __m256i start = _mm256_set1_epi32(-16 * x->sum);
            UNROLL
            for (int r = 0; r < NR; r++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(wd[r], xd), _mm256_cvtepi32_ps(dp_u8s8(start, wq[r], xq)), acc[r][t]);
#else
            UNROLL
            for (int r = 0; r < NR; r++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(wd[r], xd),
                                            _mm256_cvtepi32_ps(dp_s8s8(_mm256_setzero_si256(), wq[r], xq)), acc[r][t]);
#endif
        }
    }
    STORE_TILE(acc, NR, NT, y, ldy);
}
KV_INLINE void tile_mxfp4(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                          int64_t ldy, const int NR, const int NT) {
    tile_lut32(n, w, ws, act, as, y, ldy, NR, NT, 0);
}
KV_INLINE void tile_iq4_nl(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                           int64_t ldy, const int NR, const int NT) {
    tile_lut32(n, w, ws, act, as, y, ldy, NR, NT, 1);
}

/* nvfp4: q8 block h of a 64-value block holds sub-blocks 2h (lanes 0..3 of the dot) and 2h + 1 (lanes 4..7) */
KV_INLINE void tile_nvfp4(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                          int64_t ldy, const int NR, const int NT) {
    const __m256i tab = table16_i8(kv_kvalues_fp4);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m256 acc[TR][TT];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 64; b++) {
        UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i wq[TR];
            __m256 wd[TR];
            UNROLL
            for (int r = 0; r < NR; r++) {
                const uint8_t *p = w + (size_t)r * ws + (size_t)b * KV_NVFP4_BYTES;
                const __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(p + 4 + 16 * h));
                const __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                wq[r] = _mm256_shuffle_epi8(tab, _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi)));
                wd[r] = _mm256_set_m128(_mm_set1_ps(kv_ue4m3_half_bits(p[2 * h + 1])), _mm_set1_ps(kv_ue4m3_half_bits(p[2 * h])));
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                const kv_act_q8_32 *x = (const kv_act_q8_32 *)(const void *)(act + (size_t)t * as) + 2 * b + h;
                const __m256i xq = load256(x->q);
                const __m256 xd = _mm256_set1_ps(x->d);
                UNROLL
                for (int r = 0; r < NR; r++)
                    acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(wd[r], xd),
                                                _mm256_cvtepi32_ps(dp_s8s8(_mm256_setzero_si256(), wq[r], xq)), acc[r][t]);
            }
        }
    }
    STORE_TILE(acc, NR, NT, y, ldy);
}

/* 32 int4 codes (16 bytes, value 2j the low nibble of byte j) as bytes in value order */
static inline __m256i int4_codes(const uint8_t *p) {
    const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)p), m = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    return _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
}

/* 32 int3 codes k*32.. of a 128-code group (codes at g): 12 bytes each. Each code's 16-bit window (bytes
 * 3i/8 and 3i/8 + 1) is gathered by VPSHUFB, multiplied by 2^(7 - 3i mod 8) so its 3 bits land at bits 7..9,
 * then shifted down; word order (codes 0-7 | 16-23) and (8-15 | 24-31) makes VPACKUSWB give value order.
 * The last run is loaded 4 bytes early so no load passes the group's end. */
static inline __m256i int3_codes(const uint8_t *g, int k) {
#if defined(__AVX512VBMI__)
    /* VBMI: VPERMB puts bytes 3j..3j+2 of the run in 64-bit lane j, VPMULTISHIFTQB takes its 8 codes out at bits
     * 0, 3, .., 21 */
    const __m128i raw = _mm_loadu_si128((const __m128i *)(const void *)(g + (k < 3 ? 12 * k : 32)));
    const __m256i lo = _mm256_setr_epi8(0, 1, 2, 2, 2, 2, 2, 2, 3, 4, 5, 5, 5, 5, 5, 5, 6, 7, 8, 8, 8, 8, 8, 8, 9, 10, 11, 11,
                                        11, 11, 11, 11);
    const __m256i idx = k < 3 ? lo : _mm256_add_epi8(lo, _mm256_set1_epi8(4));
    const __m256i c = _mm256_multishift_epi64_epi8(_mm256_set1_epi64x(0x15120F0C09060300LL),
                                                   _mm256_permutexvar_epi8(idx, _mm256_castsi128_si256(raw)));
    return _mm256_and_si256(c, _mm256_set1_epi8(7));
#else
    const __m256i src = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(g + (k < 3 ? 12 * k : 32))));
    __m256i ia, ib;
    if (k < 3) {
        ia = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 1, 2, 1, 2, 1, 2, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 7, 8, 7, 8, 7, 8, 8, 9, 8, 9);
        ib = _mm256_setr_epi8(3, 4, 3, 4, 3, 4, 4, 5, 4, 5, 4, 5, 5, 6, 5, 6, 9, 10, 9, 10, 9, 10, 10, 11, 10, 11, 10,
                              11, 11, -128, 11, -128);
    } else {
        ia = _mm256_setr_epi8(4, 5, 4, 5, 4, 5, 5, 6, 5, 6, 5, 6, 6, 7, 6, 7, 10, 11, 10, 11, 10, 11, 11, 12, 11, 12,
                              11, 12, 12, 13, 12, 13);
        ib = _mm256_setr_epi8(7, 8, 7, 8, 7, 8, 8, 9, 8, 9, 8, 9, 9, 10, 9, 10, 13, 14, 13, 14, 13, 14, 14, 15, 14, 15,
                              14, 15, 15, -128, 15, -128);
    }
    const __m256i mul = _mm256_setr_epi16(128, 16, 2, 64, 8, 1, 32, 4, 128, 16, 2, 64, 8, 1, 32, 4);
    const __m256i m3 = _mm256_set1_epi16(7);
    const __m256i a = _mm256_and_si256(_mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(src, ia), mul), 7), m3);
    const __m256i b = _mm256_and_si256(_mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(src, ib), mul), 7), m3);
    return _mm256_packus_epi16(a, b);
#endif
}

/* int{3,4}_g128 sym / asym on q8_32 activations: per q8 block, d·xd·Σ c·q; the offset -2^(b-1)·Σq (sym) rides
 * in the integer accumulator's start, the minimum's min·xd·Σq (asym) in lane 0 of the fp32 accumulator */
KV_INLINE void tile_int_g128(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                             int64_t ldy, const int NR, const int NT, const int bits, const int asym) {
    const size_t gb = (size_t)kv_int_g128_bytes(bits, asym);
    const int sb = asym ? 4 : 2;
    __m256 acc[TR][TT];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < n / 128; g++) {
        const uint8_t *p[TR];
        __m256 wd[TR], wm[TR];
        UNROLL
        for (int r = 0; r < NR; r++) {
            p[r] = w + (size_t)r * ws + (size_t)g * gb;
            wd[r] = _mm256_set1_ps(f16(p[r]));
            wm[r] = asym ? _mm256_set1_ps(f16(p[r] + 2)) : _mm256_setzero_ps();
        }
        UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i wq[TR];
            UNROLL
            for (int r = 0; r < NR; r++) wq[r] = bits == 4 ? int4_codes(p[r] + sb + 16 * k) : int3_codes(p[r] + sb, k);
            UNROLL
            for (int t = 0; t < NT; t++) {
                const kv_act_q8_32 *x = (const kv_act_q8_32 *)(const void *)(act + (size_t)t * as) + 4 * g + k;
                const __m256i xq = load256(x->q);
                const __m256 xd = _mm256_set1_ps(x->d);
                const int s = x->sum;
                const __m256i start = asym ? _mm256_setzero_si256()
                                      : bits == 4 ? _mm256_set1_epi32(-s)
                                                  : _mm256_setr_epi32(-s, -s, -s, -s, 0, 0, 0, 0);
                const __m256 msum = _mm256_setr_ps(x->d * (float)s, 0, 0, 0, 0, 0, 0, 0);
                UNROLL
                for (int r = 0; r < NR; r++) {
                    acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(wd[r], xd), _mm256_cvtepi32_ps(dp_u8s8(start, wq[r], xq)), acc[r][t]);
                    if (asym) acc[r][t] = _mm256_fmadd_ps(wm[r], msum, acc[r][t]);
                }
            }
        }
    }
    STORE_TILE(acc, NR, NT, y, ldy);
}
#define INT_TILE(name, B, A)                                                                                       \
    KV_INLINE void name(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,          \
                        int64_t ldy, const int NR, const int NT) {                                                 \
        tile_int_g128(n, w, ws, act, as, y, ldy, NR, NT, B, A);                                                    \
    }
INT_TILE(tile_int4_sym, 4, 0)
INT_TILE(tile_int4_asym, 4, 1)
INT_TILE(tile_int3_sym, 3, 0)
INT_TILE(tile_int3_asym, 3, 1)

/* the int8 table of a codebook in [-1, 1] (kv_cb4_table_i8's bytes: CVTPS2DQ rounds half to even as
 * kv_nearest_int does) */
static inline __m128i cb4_table_i8(const float *code) {
    const __m128 s = _mm_set1_ps(127.0f);
    __m128i c[4];
    for (int k = 0; k < 4; k++) c[k] = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(code + 4 * k), s));
    return _mm_packs_epi16(_mm_packs_epi32(c[0], c[1]), _mm_packs_epi32(c[2], c[3]));
}

/* nf4 / af4 on KV_ACT_Q8_64NF: per block absmax·d·Σ t[c]·q with t the int8 table in a register (VPSHUFB), the
 * activation codes already in the bytes' nibble order. AVX-512: the 64 codes of a block in one register (low
 * nibbles in the low half, high nibbles in the high half: one broadcast load, one shift per 64-bit lane), the
 * table + 128 as VPDPBUSD's unsigned operand, its 128 Σq removed by the accumulator's start (act off); AVX2:
 * two 32-byte halves, signed products (dp_s8s8). */
KV_INLINE void tile_cb4q(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                         int64_t ldy, const int NR, const int NT, const float *code) {
    const __m128i t8 = cb4_table_i8(code);
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
    const __m512i tab = _mm512_xor_si512(_mm512_broadcast_i32x4(t8), _mm512_set1_epi8((char)0x80));
    const __m512i sh = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4), m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[TR][TT];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 64; b++) {
        __m512i wq[TR];
        __m512 wd[TR];
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *p = w + (size_t)r * ws + (size_t)b * KV_CB4_BYTES;
            const __m512i q = _mm512_broadcast_i64x4(load256(p + 4));
            wq[r] = _mm512_shuffle_epi8(tab, _mm512_and_si512(_mm512_srlv_epi64(q, sh), m4));
            wd[r] = _mm512_set1_ps(kv_rd_f32(p));
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const kv_act_q8_64 *x = (const kv_act_q8_64 *)(const void *)(act + (size_t)t * as) + b;
            const __m512i xq = _mm512_loadu_si512((const void *)x->q), start = _mm512_set1_epi32(x->off);
            const __m512 xd = _mm512_set1_ps(x->d);
            UNROLL
            for (int r = 0; r < NR; r++)
                acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(wd[r], xd), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, wq[r], xq)),
                                            acc[r][t]);
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) y[(int64_t)t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]) * (1.0f / 127.0f);
#else
    const __m256i tab = _mm256_broadcastsi128_si256(t8), m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[TR][TT];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 64; b++) {
        __m256i wl[TR], wh[TR];
        __m256 wd[TR];
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *p = w + (size_t)r * ws + (size_t)b * KV_CB4_BYTES;
            const __m256i q = load256(p + 4);
            wl[r] = _mm256_shuffle_epi8(tab, _mm256_and_si256(q, m4));
            wh[r] = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
            wd[r] = _mm256_set1_ps(kv_rd_f32(p));
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const kv_act_q8_64 *x = (const kv_act_q8_64 *)(const void *)(act + (size_t)t * as) + b;
            const __m256i x0 = load256(x->q), x1 = load256(x->q + 32);
            const __m256 xd = _mm256_set1_ps(x->d);
            UNROLL
            for (int r = 0; r < NR; r++) {
                const __m256i s = dp_s8s8(dp_s8s8(_mm256_setzero_si256(), wl[r], x0), wh[r], x1);
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(wd[r], xd), _mm256_cvtepi32_ps(s), acc[r][t]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) y[(int64_t)t * ldy + r] = hsum8(acc[r][t]) * (1.0f / 127.0f);
#endif
}
KV_INLINE void tile_nf4q(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                         int64_t ldy, const int NR, const int NT) {
    tile_cb4q(n, w, ws, act, as, y, ldy, NR, NT, kv_nf4_code64);
}
KV_INLINE void tile_af4q(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                         int64_t ldy, const int NR, const int NT) {
    tile_cb4q(n, w, ws, act, as, y, ldy, NR, NT, kv_af4_code64);
}

/* ---------------------------------------------------------------------------------------------- */
/* fp32 activations                                                                                */
/* ---------------------------------------------------------------------------------------------- */
#if defined(__AVX512F__)
typedef __m512 vf;
#define VF_LANES 16
#define vf_zero _mm512_setzero_ps
#define vf_load _mm512_loadu_ps
#define vf_fmadd _mm512_fmadd_ps
#define vf_hsum _mm512_reduce_add_ps
#else
typedef __m256 vf;
#define VF_LANES 8
#define vf_zero _mm256_setzero_ps
#define vf_load _mm256_loadu_ps
#define vf_fmadd _mm256_fmadd_ps
#define vf_hsum hsum8
#endif
#define STORE_TILE_F(acc, NR, NT, y, ldy)                                                                         \
    UNROLL for (int r = 0; r < (NR); r++)                                                                       \
        UNROLL for (int t = 0; t < (NT); t++) (y)[(int64_t)t * (ldy) + r] = vf_hsum((acc)[r][t])

/* nf4 / af4: per row and block the table times absmax (exactly the dequantized values), looked up per code */
KV_INLINE void tile_cb4(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                        int64_t ldy, const int NR, const int NT, const float *code) {
    vf acc[TR][TT_F];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = vf_zero();
#if defined(__AVX512F__)
    const __m512 tab = _mm512_loadu_ps(code);
    const __m512i shift = _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
#else
    const __m256 tlo = _mm256_loadu_ps(code), thi = _mm256_loadu_ps(code + 8);
    const __m256i shift = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);
#endif
    for (int64_t b = 0; b < n / 64; b++) {
        __m128i q[TR][2];
#if defined(__AVX512F__)
        __m512 st[TR];
#else
        __m256 sl[TR], sh[TR];
#endif
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *p = w + (size_t)r * ws + (size_t)b * KV_CB4_BYTES;
            float am;
            memcpy(&am, p, 4);
            q[r][0] = _mm_loadu_si128((const __m128i *)(const void *)(p + 4));
            q[r][1] = _mm_loadu_si128((const __m128i *)(const void *)(p + 20));
#if defined(__AVX512F__)
            st[r] = _mm512_mul_ps(tab, _mm512_set1_ps(am));
#else
            sl[r] = _mm256_mul_ps(tlo, _mm256_set1_ps(am));
            sh[r] = _mm256_mul_ps(thi, _mm256_set1_ps(am));
#endif
        }
        UNROLL
        for (int c = 0; c < 64 / VF_LANES; c++) {
            vf v[TR];
            UNROLL
            for (int r = 0; r < NR; r++) {
#if defined(__AVX512F__)
                /* values 16c..16c+15 = bytes 8c..8c+7, each twice (high nibble, then low nibble) */
                const __m128i src = q[r][c / 2];
                const __m128i dup = c & 1 ? _mm_unpackhi_epi8(src, src) : _mm_unpacklo_epi8(src, src);
                const __m512i idx = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(dup), shift); /* VPERMPS reads bits 0..3 */
                v[r] = _mm512_permutexvar_ps(idx, st[r]);
#else
                /* values 8c..8c+7 = bytes 4c..4c+3 */
                const __m128i src = q[r][c / 4];
                const __m128i dup = (c / 2) & 1 ? _mm_unpackhi_epi8(src, src) : _mm_unpacklo_epi8(src, src);
                const __m256i idx = _mm256_srlv_epi32(_mm256_cvtepu8_epi32(c & 1 ? _mm_srli_si128(dup, 8) : dup), shift);
                const __m256 hi8 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)); /* code bit 3 -> sign bit */
                v[r] = _mm256_blendv_ps(_mm256_permutevar8x32_ps(sl[r], idx), _mm256_permutevar8x32_ps(sh[r], idx), hi8);
#endif
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                const vf xv = vf_load((const float *)(const void *)(act + (size_t)t * as) + 64 * b + VF_LANES * c);
                UNROLL
                for (int r = 0; r < NR; r++) acc[r][t] = vf_fmadd(v[r], xv, acc[r][t]);
            }
        }
    }
    STORE_TILE_F(acc, NR, NT, y, ldy);
}
KV_INLINE void tile_nf4(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                        int64_t ldy, const int NR, const int NT) {
    tile_cb4(n, w, ws, act, as, y, ldy, NR, NT, kv_nf4_code64);
}
KV_INLINE void tile_af4(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                        int64_t ldy, const int NR, const int NT) {
    tile_cb4(n, w, ws, act, as, y, ldy, NR, NT, kv_af4_code64);
}

/* n (3, 4, 6 or 8) little-endian bytes, assembled in registers: a memcpy into a zeroed u64 would be stored in
 * pieces and reloaded whole, a store-forwarding stall on every chunk */
static inline uint64_t load_le(const uint8_t *p, const int n) {
    uint32_t a;
    uint16_t b;
    uint64_t v;
    switch (n) {
    case 8: memcpy(&v, p, 8); return v;
    case 6: memcpy(&a, p, 4); memcpy(&b, p + 4, 2); return a | (uint64_t)b << 32;
    case 4: memcpy(&a, p, 4); return a;
    default: memcpy(&b, p, 2); return b | (uint64_t)p[2] << 16;
    }
}

/* higgs_p2_b{3,4}: the codes of VF_LANES / 2 pairs are 2b-bit fields of VF_LANES·b / 8 consecutive bytes; one
 * 64-bit gather fetches their grid points (both coordinates), scaled by s to the dequantized values */
KV_INLINE void tile_higgs_p2(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                             int64_t ldy, const int NR, const int NT, const int b) {
    const int cw = 2 * b;                       /* bits per code */
    const int chunk = VF_LANES / 2 * cw / 8;    /* bytes per VF_LANES / 2 codes */
    const size_t gb = (size_t)kv_higgs_p2_bytes(b);
    const long long *pts = (const long long *)(const void *)kv_higgs_grid_get(2, b)->pts;
#if defined(__AVX512F__)
    const __m512i sh = _mm512_setr_epi64(0, cw, 2 * cw, 3 * cw, 4 * cw, 5 * cw, 6 * cw, 7 * cw);
    const __m512i mask = _mm512_set1_epi64((1 << cw) - 1);
#else
    const __m256i sh = _mm256_setr_epi64x(0, cw, 2 * cw, 3 * cw);
    const __m256i mask = _mm256_set1_epi64x((1 << cw) - 1);
#endif
    vf acc[TR][TT_F];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = vf_zero();
    for (int64_t g = 0; g < n / 256; g++) {
        const uint8_t *p[TR];
        vf s[TR];
        UNROLL
        for (int r = 0; r < NR; r++) {
            p[r] = w + (size_t)r * ws + (size_t)g * gb;
#if defined(__AVX512F__)
            s[r] = _mm512_set1_ps(f16(p[r]));
#else
            s[r] = _mm256_set1_ps(f16(p[r]));
#endif
        }
        for (int c = 0; c < 256 / VF_LANES; c++) {
            vf v[TR];
            UNROLL
            for (int r = 0; r < NR; r++) {
                const uint64_t u = load_le(p[r] + 2 + (size_t)c * chunk, chunk);
#if defined(__AVX512F__)
                const __m512i idx = _mm512_and_si512(_mm512_srlv_epi64(_mm512_set1_epi64((long long)u), sh), mask);
                v[r] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_i64gather_epi64(idx, pts, 8)), s[r]);
#else
                const __m256i idx = _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x((long long)u), sh), mask);
                v[r] = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_i64gather_epi64(pts, idx, 8)), s[r]);
#endif
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                const vf xv = vf_load((const float *)(const void *)(act + (size_t)t * as) + 256 * g + VF_LANES * c);
                UNROLL
                for (int r = 0; r < NR; r++) acc[r][t] = vf_fmadd(v[r], xv, acc[r][t]);
            }
        }
    }
    STORE_TILE_F(acc, NR, NT, y, ldy);
}
KV_INLINE void tile_higgs_p2b3(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                               int64_t ldy, const int NR, const int NT) {
    tile_higgs_p2(n, w, ws, act, as, y, ldy, NR, NT, 3);
}
KV_INLINE void tile_higgs_p2b4(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                               int64_t ldy, const int NR, const int NT) {
    tile_higgs_p2(n, w, ws, act, as, y, ldy, NR, NT, 4);
}

#if defined(__AVX512VBMI__)
/* higgs_p2_b{3,4} on KV_ACT_Q8_128P: the int8 grid (kv_higgs_i8, + 128: VPDPBUSD's unsigned operand) in
 * registers, x and y coordinates apart, 64 codes per step. b4: the codes are bytes; VPERMI2B looks up 128
 * entries of two registers, the code's bit 7 picks the half. b3: 48 bytes hold 64 six-bit codes; VPERMB puts
 * bytes 6k..6k+5 in 64-bit lane k, VPMULTISHIFTQB takes the 8 codes of a lane out at bits 0, 6, .., 42, and one
 * VPERMB per coordinate looks up 64 entries (it reads the low 6 bits of each index). The 128 Σq of the offset
 * tables is the accumulator's start (act off). */
KV_INLINE void tile_higgs_q8(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                             int64_t ldy, const int NR, const int NT, const int b) {
    const kv_higgs_i8 *g = b == 3 ? &kv_higgs_p2b3_i8 : &kv_higgs_p2b4_i8;
    const size_t gb = (size_t)kv_higgs_p2_bytes(b);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i tx[4], ty[4];
    for (int k = 0; k < (b == 3 ? 1 : 4); k++) {
        tx[k] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(g->x + 64 * k)), flip);
        ty[k] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(g->y + 64 * k)), flip);
    }
    const __m512i spread = _mm512_set_epi8(47, 46, 47, 46, 45, 44, 43, 42, 41, 40, 41, 40, 39, 38, 37, 36, 35, 34, 35, 34, 33,
                                           32, 31, 30, 29, 28, 29, 28, 27, 26, 25, 24, 23, 22, 23, 22, 21, 20, 19, 18, 17,
                                           16, 17, 16, 15, 14, 13, 12, 11, 10, 11, 10, 9, 8, 7, 6, 5, 4, 5, 4, 3, 2, 1, 0);
    const __m512i fields = _mm512_set1_epi64(0x2A241E18120C0600LL); /* bit offsets 0, 6, .., 42 */
    __m512 acc[TR][TT_F];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    for (int64_t grp = 0; grp < n / 256; grp++) {
        const uint8_t *p[TR];
        __m512 s[TR];
        UNROLL
        for (int r = 0; r < NR; r++) {
            p[r] = w + (size_t)r * ws + (size_t)grp * gb;
            s[r] = _mm512_set1_ps(f16(p[r]));
        }
        UNROLL
        for (int h = 0; h < 2; h++) {
            __m512i gx[TR], gy[TR];
            UNROLL
            for (int r = 0; r < NR; r++) {
                if (b == 4) {
                    const __m512i c = _mm512_loadu_si512((const void *)(p[r] + 2 + 64 * h));
                    const __mmask64 hi = _mm512_movepi8_mask(c);
                    gx[r] = _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(tx[0], c, tx[1]), _mm512_permutex2var_epi8(tx[2], c, tx[3]));
                    gy[r] = _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(ty[0], c, ty[1]), _mm512_permutex2var_epi8(ty[2], c, ty[3]));
                } else {
                    const __m512i raw = _mm512_maskz_loadu_epi8(0xFFFFFFFFFFFFULL, p[r] + 2 + 48 * h);
                    const __m512i c = _mm512_multishift_epi64_epi8(fields, _mm512_permutexvar_epi8(spread, raw));
                    gx[r] = _mm512_permutexvar_epi8(c, tx[0]);
                    gy[r] = _mm512_permutexvar_epi8(c, ty[0]);
                }
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                const kv_act_q8_128 *x = (const kv_act_q8_128 *)(const void *)(act + (size_t)t * as) + 2 * grp + h;
                const __m512i x0 = _mm512_loadu_si512((const void *)x->q), x1 = _mm512_loadu_si512((const void *)(x->q + 64));
                const __m512i start = _mm512_set1_epi32(x->off);
                const __m512 xd = _mm512_set1_ps(x->d);
                UNROLL
                for (int r = 0; r < NR; r++) {
                    const __m512i si = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, gx[r], x0), gy[r], x1);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(s[r], xd), _mm512_cvtepi32_ps(si), acc[r][t]);
                }
            }
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) y[(int64_t)t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]) * g->step;
}
KV_INLINE void tile_higgs_q8b3(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                               int64_t ldy, const int NR, const int NT) {
    tile_higgs_q8(n, w, ws, act, as, y, ldy, NR, NT, 3);
}
KV_INLINE void tile_higgs_q8b4(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                               int64_t ldy, const int NR, const int NT) {
    tile_higgs_q8(n, w, ws, act, as, y, ldy, NR, NT, 4);
}
TILE_ENTRY(tile_higgs_q8b3_fn, tile_higgs_q8b3, )
TILE_ENTRY(tile_higgs_q8b4_fn, tile_higgs_q8b4, )
#define KV_QDOT_VBMI_ENTRIES                                                                                       \
    {KV_QK_HIGGS_P2B3, KV_ACT_Q8_128P, tile_higgs_q8b3_fn_dot, tile_higgs_q8b3_fn, TR, TT_F},                      \
    {KV_QK_HIGGS_P2B4, KV_ACT_Q8_128P, tile_higgs_q8b4_fn_dot, tile_higgs_q8b4_fn, TR, TT_F},
#else
#define KV_QDOT_VBMI_ENTRIES
#endif

TILE_ENTRY(tile_mxfp4_fn, tile_mxfp4, TILE_T34(tile_mxfp4))
TILE_ENTRY(tile_iq4_nl_fn, tile_iq4_nl, TILE_T34(tile_iq4_nl))
TILE_ENTRY(tile_nvfp4_fn, tile_nvfp4, TILE_T34(tile_nvfp4))
TILE_ENTRY(tile_int4_sym_fn, tile_int4_sym, TILE_T34(tile_int4_sym))
TILE_ENTRY(tile_int4_asym_fn, tile_int4_asym, TILE_T34(tile_int4_asym))
TILE_ENTRY(tile_int3_sym_fn, tile_int3_sym, TILE_T34(tile_int3_sym))
TILE_ENTRY(tile_int3_asym_fn, tile_int3_asym, TILE_T34(tile_int3_asym))
TILE_ENTRY(tile_nf4q_fn, tile_nf4q, TILE_T34(tile_nf4q))
TILE_ENTRY(tile_af4q_fn, tile_af4q, TILE_T34(tile_af4q))
TILE_ENTRY(tile_nf4_fn, tile_nf4, )
TILE_ENTRY(tile_af4_fn, tile_af4, )
TILE_ENTRY(tile_higgs_p2b3_fn, tile_higgs_p2b3, )
TILE_ENTRY(tile_higgs_p2b4_fn, tile_higgs_p2b4, )

#define KV_QDOT_LUT_ENTRIES                                                                                        \
    {KV_TYPE_MXFP4, KV_ACT_Q8_32, tile_mxfp4_fn_dot, tile_mxfp4_fn, TR, TT},                                       \
    {KV_TYPE_IQ4_NL, KV_ACT_Q8_32, tile_iq4_nl_fn_dot, tile_iq4_nl_fn, TR, TT},                                    \
    {KV_TYPE_NVFP4, KV_ACT_Q8_32, tile_nvfp4_fn_dot, tile_nvfp4_fn, TR, TT},                                       \
    {KV_QK_INT4_SYM, KV_ACT_Q8_32, tile_int4_sym_fn_dot, tile_int4_sym_fn, TR, TT},                                \
    {KV_QK_INT4_ASYM, KV_ACT_Q8_32, tile_int4_asym_fn_dot, tile_int4_asym_fn, TR, TT},                             \
    {KV_QK_INT3_SYM, KV_ACT_Q8_32, tile_int3_sym_fn_dot, tile_int3_sym_fn, TR, TT},                                \
    {KV_QK_INT3_ASYM, KV_ACT_Q8_32, tile_int3_asym_fn_dot, tile_int3_asym_fn, TR, TT},                             \
    {KV_QK_NF4, KV_ACT_Q8_64NF, tile_nf4q_fn_dot, tile_nf4q_fn, TR, TT},                                          \
    {KV_QK_AF4, KV_ACT_Q8_64NF, tile_af4q_fn_dot, tile_af4q_fn, TR, TT},                                          \
    {KV_QK_NF4, KV_ACT_F32, tile_nf4_fn_dot, tile_nf4_fn, TR, TT_F},                                               \
    {KV_QK_AF4, KV_ACT_F32, tile_af4_fn_dot, tile_af4_fn, TR, TT_F},                                               \
    {KV_QK_HIGGS_P2B3, KV_ACT_F32, tile_higgs_p2b3_fn_dot, tile_higgs_p2b3_fn, TR, TT_F},                          \
    {KV_QK_HIGGS_P2B4, KV_ACT_F32, tile_higgs_p2b4_fn_dot, tile_higgs_p2b4_fn, TR, TT_F},
