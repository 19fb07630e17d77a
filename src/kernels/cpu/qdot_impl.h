/* qdot_impl.h — the integer dot kernels in 256-bit vectors, compiled twice: qdot_avx2.c (AVX2: VPMADDUBSW +
 * VPMADDWD) and qdot_avx512.c (AVX512-VNNI on ymm registers: VPDPBUSD / VPDPWSSD fuse the multiply and the
 * widening add). Each TU defines KV_QDOT_TABLE. The arithmetic is ggml's (ggml-cpu/arch/x86/quants.c
 * ggml_vec_dot_q4_0_q8_0 & co.): weights as unsigned codes times signed activation codes, the code offsets
 * (-8, -32) and the k-quant minimums applied through the activation block sums; one fp32 scale per block. */
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/qdot_layout.h"
#include <immintrin.h>

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
/* acc + Σ4 u8·s8 per 32-bit lane */
static inline __m256i dp_u8s8(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
/* acc + Σ2 s16·s16 per 32-bit lane */
static inline __m256i dp_s16(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
#else
static inline __m256i dp_u8s8(__m256i acc, __m256i u, __m256i s) {
    /* u <= 128 and |s| <= 127 here: the pairwise int16 sums of VPMADDUBSW cannot saturate */
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
static inline __m256i dp_s16(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
#endif

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 32 nibbles of a q4_0 block in value order (low nibbles, then high nibbles) */
static inline __m256i q4_0_codes(const uint8_t *qs) {
    const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)qs);
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}

/* ---------------------------------------------------------------------------------------------- */
/* activations: kv_act_quantize's bytes, 8 lanes at a time                                        */
/* ---------------------------------------------------------------------------------------------- */

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline int hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* max |x| over n (a multiple of 32) values; max of absolute values is exact, so any order gives fmaxf's */
static inline float absmax(const float *x, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    return hmax8(m);
}

/* 32 codes nearest-even(x * id) clamped to ±127 (as act_block in qdot_ref.c) into q; the four 8-lane int32
 * code vectors go to c[] for the block sums. */
static inline void codes32(const float *x, float id, int8_t *q, __m256i c[4]) {
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i hi = _mm256_set1_epi32(127), lo = _mm256_set1_epi32(-127);
    for (int k = 0; k < 4; k++) {
        const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid)); /* MXCSR: nearest-even */
        c[k] = _mm256_max_epi32(_mm256_min_epi32(v, hi), lo);
    }
    const __m256i p16a = _mm256_packs_epi32(c[0], c[1]), p16b = _mm256_packs_epi32(c[2], c[3]);
    const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    _mm256_storeu_si256((__m256i *)(void *)q, _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

void KV_QDOT_ACT(kv_act_kind kind, const float *x, int64_t n, void *dst) {
    __m256i c[4];
    if (kind == KV_ACT_Q8_32) {
        kv_act_q8_32 *b = dst;
        for (int64_t i = 0; i < n / 32; i++, b++, x += 32) {
            const float d = absmax(x, 32) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            b->d = d;
            codes32(x, id, b->q, c);
            b->sum = hsum8i(_mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3])));
        }
    } else if (kind == KV_ACT_Q8_256) {
        kv_act_q8_256 *b = dst;
        for (int64_t i = 0; i < n / 256; i++, b++, x += 256) {
            const float d = absmax(x, 256) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            b->d = d;
            for (int k = 0; k < 8; k++) {
                codes32(x + 32 * k, id, b->q + 32 * k, c);
                b->bsum[2 * k] = (int16_t)hsum8i(_mm256_add_epi32(c[0], c[1]));
                b->bsum[2 * k + 1] = (int16_t)hsum8i(_mm256_add_epi32(c[2], c[3]));
            }
        }
    } else if (kind == KV_ACT_Q8_64NF) {
        kv_act_q8_64 *b = dst;
        float v[64];
        __m256i c2[4];
        for (int64_t i = 0; i < n / 64; i++, b++, x += 64) {
            kv_act_nf_order(x, v);
            const float d = absmax(v, 64) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            b->d = d;
            codes32(v, id, b->q, c);
            codes32(v + 32, id, b->q + 32, c2);
            const __m256i s = _mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3]));
            b->off = -8 * hsum8i(_mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(c2[0], c2[1]), _mm256_add_epi32(c2[2], c2[3]))));
        }
    } else if (kind == KV_ACT_Q8_128P) {
        kv_act_q8_128 *b = dst;
        float v[128];
        for (int64_t i = 0; i < n / 128; i++, b++, x += 128) {
            kv_act_pair_order(x, v);
            const float d = absmax(v, 128) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            b->d = d;
            __m256i s = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                codes32(v + 32 * k, id, b->q + 32 * k, c);
                s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3])));
            }
            b->off = -8 * hsum8i(s);
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* tiles of up to TR weight rows x TT tokens (kernels.h kv_qtile_fn); dot() is the 1 x 1 tile        */
/* ---------------------------------------------------------------------------------------------- */
#define KV_INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")
enum { TR = 4, TT = 4, TT_K = 2 };

/* the 8-lane fp32 accumulators of a tile, summed and stored */
#define STORE_TILE(acc, NR, NT, y, ldy)                                                                           \
    UNROLL for (int r = 0; r < (NR); r++)                                                                       \
        UNROLL for (int t = 0; t < (NT); t++) (y)[(int64_t)t * (ldy) + r] = hsum8((acc)[r][t])

/* q4_0: Σ (u - 8)·x = dp(u, x) - 8 Σx, the -8 Σx spread over the 8 lanes of the integer accumulator's start */
KV_INLINE void tile_q4_0(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                         int64_t ldy, const int NR, const int NT) {
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
            const uint8_t *p = w + (size_t)r * ws + (size_t)b * KV_Q4_0_BYTES;
            wq[r] = q4_0_codes(p + 2);
            wd[r] = _mm256_set1_ps(f16(p));
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const kv_act_q8_32 *x = (const kv_act_q8_32 *)(const void *)(act + (size_t)t * as) + b;
            const __m256i xq = load256(x->q), start = _mm256_set1_epi32(-x->sum);
            const __m256 xd = _mm256_set1_ps(x->d);
            UNROLL
            for (int r = 0; r < NR; r++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(wd[r], xd), _mm256_cvtepi32_ps(dp_u8s8(start, wq[r], xq)), acc[r][t]);
        }
    }
    STORE_TILE(acc, NR, NT, y, ldy);
}

/* q8_0. VNNI: Σ w·x = Σ w·(x + 128) - 128 Σw (x + 128 is unsigned); AVX2: |w| times x with w's sign. */
KV_INLINE void tile_q8_0(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                         int64_t ldy, const int NR, const int NT) {
    __m256 acc[TR][TT];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i wq[TR], wa[TR];
        __m256 wd[TR];
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *p = w + (size_t)r * ws + (size_t)b * KV_Q8_0_BYTES;
            wq[r] = load256(p + 2);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
            wa[r] = _mm256_sub_epi32(_mm256_setzero_si256(), dp_u8s8(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), wq[r]));
#else
            wa[r] = _mm256_sign_epi8(wq[r], wq[r]);
#endif
            wd[r] = _mm256_set1_ps(f16(p));
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const kv_act_q8_32 *x = (const kv_act_q8_32 *)(const void *)(act + (size_t)t * as) + b;
            const __m256i xq = load256(x->q);
            const __m256 xd = _mm256_set1_ps(x->d);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
            const __m256i xu = _mm256_xor_si256(xq, _mm256_set1_epi8((char)0x80));
            UNROLL
            for (int r = 0; r < NR; r++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(wd[r], xd), _mm256_cvtepi32_ps(dp_u8s8(wa[r], xu, wq[r])), acc[r][t]);
#else
            UNROLL
            for (int r = 0; r < NR; r++) {
                const __m256i s = dp_u8s8(_mm256_setzero_si256(), wa[r], _mm256_sign_epi8(xq, wq[r]));
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(wd[r], xd), _mm256_cvtepi32_ps(s), acc[r][t]);
            }
#endif
        }
    }
    STORE_TILE(acc, NR, NT, y, ldy);
}

/* Σ u·q over 32 values, the int16 pair sums times a per-lane int16 scale, into acc (32-bit lanes) */
static inline __m256i dp_scaled(__m256i acc, __m256i u, __m256i q, __m256i scale16) {
    return dp_s16(acc, _mm256_maddubs_epi16(u, q), scale16);
}

static inline float dot_q45_k(int64_t n, const void *wrow, const void *act, const int five) {
    const uint8_t *w = wrow;
    const kv_act_q8_256 *x = act;
    const size_t bytes = five ? KV_Q5_K_BYTES : KV_Q4_K_BYTES;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float accm = 0.0f;
    for (int64_t i = 0; i < n / 256; i++, w += bytes, x++) {
        uint8_t sc[8], m[8];
        kv_k4_scales(w + 4, sc, m);
        const uint8_t *qs = w + (five ? 48 : 16);
        const __m256i hb = five ? load256(w + 16) : _mm256_setzero_si256();
        __m256i sumi = _mm256_setzero_si256();
        UNROLL
        for (int c = 0; c < 4; c++) {
            const __m256i q = load256(qs + 32 * c);
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
            }
            sumi = dp_scaled(sumi, lo, load256(x->q + 64 * c), _mm256_set1_epi16(sc[2 * c]));
            sumi = dp_scaled(sumi, hi, load256(x->q + 64 * c + 32), _mm256_set1_epi16(sc[2 * c + 1]));
        }
        int summ = 0;
        for (int j = 0; j < 8; j++) summ += m[j] * (x->bsum[2 * j] + x->bsum[2 * j + 1]);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w) * x->d), _mm256_cvtepi32_ps(sumi), acc);
        accm += f16(w + 2) * x->d * (float)summ;
    }
    return hsum8(acc) - accm;
}
static float dot_q5_k(int64_t n, const void *w, const void *a) { return dot_q45_k(n, w, a, 1); }

/* Σ m_j · (bsum of sub-block j) over the 8 sub-blocks: the 16 per-16 sums times their minimum (pairs) */
static inline __m256i q4_k_min_products(const kv_act_q8_256 *x, const uint8_t m[8]) {
    uint64_t m8;
    memcpy(&m8, m, 8);
    const __m128i mm = _mm_cvtsi64_si128((long long)m8);
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mm, mm));
    return _mm256_madd_epi16(load256(x->bsum), m16);
}

/* q4_k: d·Σ sc_j Σ u·x - dmin·Σ m_j Σx per super-block, both into one fp32 accumulator per (row, token) */
KV_INLINE void tile_q4_k(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                         int64_t ldy, const int NR, const int NT) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[TR][TT_K];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++) {
        uint8_t sc[TR][8], m[TR][8];
        const uint8_t *p[TR];
        UNROLL
        for (int r = 0; r < NR; r++) {
            p[r] = w + (size_t)r * ws + (size_t)i * KV_Q4_K_BYTES;
            kv_k4_scales(p[r] + 4, sc[r], m[r]);
        }
        __m256i sumi[TR][TT_K];
        UNROLL
        for (int r = 0; r < NR; r++)
            UNROLL
            for (int t = 0; t < NT; t++) sumi[r][t] = _mm256_setzero_si256();
        UNROLL
        for (int c = 0; c < 4; c++) {
            __m256i lo[TR], hi[TR];
            UNROLL
            for (int r = 0; r < NR; r++) {
                const __m256i q = load256(p[r] + 16 + 32 * c);
                lo[r] = _mm256_and_si256(q, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                const kv_act_q8_256 *x = (const kv_act_q8_256 *)(const void *)(act + (size_t)t * as) + i;
                const __m256i x0 = load256(x->q + 64 * c), x1 = load256(x->q + 64 * c + 32);
                UNROLL
                for (int r = 0; r < NR; r++) {
                    sumi[r][t] = dp_scaled(sumi[r][t], lo[r], x0, _mm256_set1_epi16(sc[r][2 * c]));
                    sumi[r][t] = dp_scaled(sumi[r][t], hi[r], x1, _mm256_set1_epi16(sc[r][2 * c + 1]));
                }
            }
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const kv_act_q8_256 *x = (const kv_act_q8_256 *)(const void *)(act + (size_t)t * as) + i;
            const __m256 xd = _mm256_set1_ps(x->d);
            UNROLL
            for (int r = 0; r < NR; r++) {
                const __m256 d = _mm256_mul_ps(_mm256_set1_ps(f16(p[r])), xd);
                const __m256 dmin = _mm256_mul_ps(_mm256_set1_ps(f16(p[r] + 2)), xd);
                acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[r][t]), acc[r][t]);
                acc[r][t] = _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(q4_k_min_products(x, m[r])), acc[r][t]);
            }
        }
    }
    STORE_TILE(acc, NR, NT, y, ldy);
}

/* 32 six-bit codes of run k (0..3) of half h of a q6_k super-block */
static inline __m256i q6_k_run(const uint8_t *b, int h, int k) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    const __m256i l = load256(b + 64 * h + 32 * (k & 1)), qh = load256(b + 128 + 32 * h);
    const __m256i low = k < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
    return _mm256_or_si256(low, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2), 4));
}

/* q6_k: Σ sc_g Σ (u - 32)·x = Σ sc_g Σ u·x - 32 Σ sc_g bsum_g, all in 32-bit integers per super-block */
KV_INLINE void tile_q6_k(int64_t n, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, float *y,
                         int64_t ldy, const int NR, const int NT) {
    __m256 acc[TR][TT_K];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++) {
        const uint8_t *p[TR];
        __m256i sumi[TR][TT_K];
        UNROLL
        for (int r = 0; r < NR; r++) {
            p[r] = w + (size_t)r * ws + (size_t)i * KV_Q6_K_BYTES;
            const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(p[r] + 192)));
            UNROLL
            for (int t = 0; t < NT; t++) {
                const kv_act_q8_256 *x = (const kv_act_q8_256 *)(const void *)(act + (size_t)t * as) + i;
                sumi[r][t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(load256(x->bsum), sc16), 5));
            }
        }
        UNROLL
        for (int h = 0; h < 2; h++)
            UNROLL
            for (int k = 0; k < 4; k++) {
                const int g = 8 * h + 2 * k; /* scales of the two runs of 16 in these 32 values */
                __m256i v[TR], s16[TR];
                UNROLL
                for (int r = 0; r < NR; r++) {
                    const int8_t *sc = (const int8_t *)(p[r] + 192);
                    v[r] = q6_k_run(p[r], h, k);
                    s16[r] = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
                }
                UNROLL
                for (int t = 0; t < NT; t++) {
                    const kv_act_q8_256 *x = (const kv_act_q8_256 *)(const void *)(act + (size_t)t * as) + i;
                    const __m256i xq = load256(x->q + 128 * h + 32 * k);
                    UNROLL
                    for (int r = 0; r < NR; r++) sumi[r][t] = dp_scaled(sumi[r][t], v[r], xq, s16[r]);
                }
            }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const __m256 xd = _mm256_set1_ps(((const kv_act_q8_256 *)(const void *)(act + (size_t)t * as) + i)->d);
            UNROLL
            for (int r = 0; r < NR; r++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(f16(p[r] + 208)), xd), _mm256_cvtepi32_ps(sumi[r][t]), acc[r][t]);
        }
    }
    STORE_TILE(acc, NR, NT, y, ldy);
}

/* the tile entry points: one instantiation per (rows, tokens) so every loop above unrolls into registers */
#define TILE_CASE(fn, R, T)                                                                                        \
    case (R) * 8 + (T): fn(n, w, ws, act, as, y, ldy, R, T); return;
#define TILE_ENTRY(name, fn, C4)                                                                                   \
    static void name(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *act, size_t as, int nt,        \
                     float *y, int64_t ldy) {                                                                      \
        switch (nr * 8 + nt) {                                                                                     \
            TILE_CASE(fn, 1, 1) TILE_CASE(fn, 2, 1) TILE_CASE(fn, 3, 1) TILE_CASE(fn, 4, 1)                        \
            TILE_CASE(fn, 1, 2) TILE_CASE(fn, 2, 2) TILE_CASE(fn, 3, 2) TILE_CASE(fn, 4, 2)                        \
            C4                                                                                                     \
        default:                                                                                                   \
            for (int t = 0; t < nt; t++)                                                                           \
                for (int r = 0; r < nr; r++) fn(n, w + (size_t)r * ws, ws, act + (size_t)t * as, as,               \
                                                y + (int64_t)t * ldy + r, ldy, 1, 1);                              \
        }                                                                                                          \
    }                                                                                                              \
    static float name##_dot(int64_t n, const void *wrow, const void *a) {                                          \
        float y;                                                                                                   \
        fn(n, wrow, 0, a, 0, &y, 1, 1, 1);                                                                         \
        return y;                                                                                                  \
    }
#define TILE_T34(fn) TILE_CASE(fn, 1, 3) TILE_CASE(fn, 2, 3) TILE_CASE(fn, 3, 3) TILE_CASE(fn, 4, 3)               \
    TILE_CASE(fn, 1, 4) TILE_CASE(fn, 2, 4) TILE_CASE(fn, 3, 4) TILE_CASE(fn, 4, 4)
TILE_ENTRY(tile_q4_0_fn, tile_q4_0, TILE_T34(tile_q4_0))
TILE_ENTRY(tile_q8_0_fn, tile_q8_0, TILE_T34(tile_q8_0))
TILE_ENTRY(tile_q4_k_fn, tile_q4_k, )
TILE_ENTRY(tile_q6_k_fn, tile_q6_k, )

#include "kernels/cpu/qdot_lut_impl.h"

const kv_qkernel KV_QDOT_TABLE[] = {
    {KV_TYPE_Q4_0, KV_ACT_Q8_32, tile_q4_0_fn_dot, tile_q4_0_fn, TR, TT},
    {KV_TYPE_Q8_0, KV_ACT_Q8_32, tile_q8_0_fn_dot, tile_q8_0_fn, TR, TT},
    {KV_TYPE_Q4_K, KV_ACT_Q8_256, tile_q4_k_fn_dot, tile_q4_k_fn, TR, TT_K},
    {KV_TYPE_Q5_K, KV_ACT_Q8_256, dot_q5_k, NULL, 0, 0},
    {KV_TYPE_Q6_K, KV_ACT_Q8_256, tile_q6_k_fn_dot, tile_q6_k_fn, TR, TT_K},
    KV_QDOT_VBMI_ENTRIES
    KV_QDOT_LUT_ENTRIES
    {0, KV_ACT_NONE, NULL, NULL, 0, 0},
};
