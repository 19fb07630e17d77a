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

static float dot_q4_0(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_32 *x = act;
    const int64_t nb = n / 32;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float off = 0.0f;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2, w += 2 * KV_Q4_0_BYTES, x += 2) {
        const __m256i s0 = dp_u8s8(_mm256_setzero_si256(), q4_0_codes(w + 2), load256(x[0].q));
        const __m256i s1 = dp_u8s8(_mm256_setzero_si256(), q4_0_codes(w + KV_Q4_0_BYTES + 2), load256(x[1].q));
        const float d0 = f16(w) * x[0].d, d1 = f16(w + KV_Q4_0_BYTES) * x[1].d;
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), _mm256_cvtepi32_ps(s0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1), _mm256_cvtepi32_ps(s1), acc1);
        off += d0 * (float)x[0].sum + d1 * (float)x[1].sum;
    }
    for (; i < nb; i++, w += KV_Q4_0_BYTES, x++) {
        const __m256i s0 = dp_u8s8(_mm256_setzero_si256(), q4_0_codes(w + 2), load256(x->q));
        const float d0 = f16(w) * x->d;
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), _mm256_cvtepi32_ps(s0), acc0);
        off += d0 * (float)x->sum;
    }
    return hsum8(_mm256_add_ps(acc0, acc1)) - 8.0f * off;
}

static float dot_q8_0(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_32 *x = act;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const int64_t nb = n / 32;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2, w += 2 * KV_Q8_0_BYTES, x += 2) {
        const __m256i a0 = load256(w + 2), a1 = load256(w + KV_Q8_0_BYTES + 2);
        /* |w| (as u8) times x with w's sign */
        const __m256i s0 = dp_u8s8(_mm256_setzero_si256(), _mm256_sign_epi8(a0, a0), _mm256_sign_epi8(load256(x[0].q), a0));
        const __m256i s1 = dp_u8s8(_mm256_setzero_si256(), _mm256_sign_epi8(a1, a1), _mm256_sign_epi8(load256(x[1].q), a1));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w) * x[0].d), _mm256_cvtepi32_ps(s0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w + KV_Q8_0_BYTES) * x[1].d), _mm256_cvtepi32_ps(s1), acc1);
    }
    for (; i < nb; i++, w += KV_Q8_0_BYTES, x++) {
        const __m256i a0 = load256(w + 2);
        const __m256i s0 = dp_u8s8(_mm256_setzero_si256(), _mm256_sign_epi8(a0, a0), _mm256_sign_epi8(load256(x->q), a0));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16(w) * x->d), _mm256_cvtepi32_ps(s0), acc0);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
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
static float dot_q4_k(int64_t n, const void *w, const void *a) { return dot_q45_k(n, w, a, 0); }
static float dot_q5_k(int64_t n, const void *w, const void *a) { return dot_q45_k(n, w, a, 1); }

static float dot_q6_k(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_256 *x = act;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++, w += KV_Q6_K_BYTES, x++) {
        const int8_t *sc = (const int8_t *)(w + 192);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w + 64 * h, *qhp = w + 128 + 32 * h;
            const __m256i l0 = load256(ql), l1 = load256(ql + 32), qh = load256(qhp);
            const __m256i v[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4)),
            };
            for (int r = 0; r < 4; r++) {
                const int g = 8 * h + 2 * r; /* scales of the two runs of 16 in these 32 values */
                const __m256i s16 = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
                sumi = dp_scaled(sumi, v[r], load256(x->q + 128 * h + 32 * r), s16);
            }
        }
        int off = 0;
        for (int g = 0; g < 16; g++) off += sc[g] * x->bsum[g];
        sumi = _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * off, 0, 0, 0, 0, 0, 0, 0));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w + 208) * x->d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

const kv_qkernel KV_QDOT_TABLE[] = {
    {KV_TYPE_Q4_0, KV_ACT_Q8_32, dot_q4_0},
    {KV_TYPE_Q8_0, KV_ACT_Q8_32, dot_q8_0},
    {KV_TYPE_Q4_K, KV_ACT_Q8_256, dot_q4_k},
    {KV_TYPE_Q5_K, KV_ACT_Q8_256, dot_q5_k},
    {KV_TYPE_Q6_K, KV_ACT_Q8_256, dot_q6_k},
    {0, KV_ACT_NONE, NULL},
};
