/* qdot_ref.c — activation quantization and the portable scalar reference of the integer dot kernels, plus the
 * kernel lookup. The weight layouts are ggml's (ggml-common.h block_q4_0, block_q8_0, block_q4_K, block_q5_K,
 * block_q6_K; kvant's src/formats/ggml_*.c write them byte for byte); the activation side follows ggml's
 * quantize_row_q8_0 / quantize_row_q8_K (d = absmax/127, per-16 sums for the k-quants' minimums) with the scale
 * kept in fp32. Each kernel sums the integer products of a block exactly, then adds scale · sum in fp32 — the
 * order of ggml_vec_dot_*_q8_* reference loops. The SIMD tables (qdot_avx2.c, qdot_avx512.c) compute the same
 * sums with a different fp32 summation order; tests/test_kernels.c bounds the difference. */
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/qdot_layout.h"
#include "formats/formats.h"

/* ---------------------------------------------------------------------------------------------- */
/* activations                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

size_t kv_act_row_bytes(kv_act_kind kind, int64_t n) {
    switch (kind) {
    case KV_ACT_Q8_32: return (size_t)(n / 32) * sizeof(kv_act_q8_32);
    case KV_ACT_Q8_256: return (size_t)(n / 256) * sizeof(kv_act_q8_256);
    default: return 0;
    }
}

/* Codes of n values with the block scale d = absmax / 127 (nearest, ties to even); returns d. */
static float act_block(const float *x, int n, int8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) {
        int v = kv_nearest_int(x[i] * id);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return d;
}

void kv_act_quantize(kv_act_kind kind, const float *x, int64_t n, void *dst) {
    kv_act_quantize_isa(kv_cpu_isa(), kind, x, n, dst);
}

void kv_act_quantize_isa(kv_isa isa, kv_act_kind kind, const float *x, int64_t n, void *dst) {
    if (isa > kv_cpu_isa_hw()) isa = kv_cpu_isa_hw();
    if (isa >= KV_ISA_AVX512) { kv_act_quantize_avx512(kind, x, n, dst); return; }
    if (isa >= KV_ISA_AVX2) { kv_act_quantize_avx2(kind, x, n, dst); return; }
    if (kind == KV_ACT_Q8_32) {
        kv_act_q8_32 *b = dst;
        for (int64_t i = 0; i < n / 32; i++, b++, x += 32) {
            b->d = act_block(x, 32, b->q);
            int s = 0;
            for (int l = 0; l < 32; l++) s += b->q[l];
            b->sum = s;
        }
    } else if (kind == KV_ACT_Q8_256) {
        kv_act_q8_256 *b = dst;
        for (int64_t i = 0; i < n / 256; i++, b++, x += 256) {
            b->d = act_block(x, 256, b->q);
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int l = 0; l < 16; l++) s += b->q[16 * g + l];
                b->bsum[g] = (int16_t)s;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* scalar kernels                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

static float dot_q4_0(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_32 *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++, w += KV_Q4_0_BYTES, x++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += (w[2 + l] & 0xF) * x->q[l] + (w[2 + l] >> 4) * x->q[l + 16];
        acc += kv_f16_load(w) * x->d * (float)(s - 8 * x->sum);
    }
    return acc;
}

static float dot_q8_0(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_32 *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++, w += KV_Q8_0_BYTES, x++) {
        int s = 0;
        for (int l = 0; l < 32; l++) s += (int8_t)w[2 + l] * x->q[l];
        acc += kv_f16_load(w) * x->d * (float)s;
    }
    return acc;
}

/* q4_k and q5_k: sub-block j (32 values) has scale sc[j] and minimum m[j] (6 bits each). */
static float dot_q45_k(int64_t n, const void *wrow, const void *act, int five) {
    const uint8_t *w = wrow;
    const kv_act_q8_256 *x = act;
    const size_t bytes = five ? KV_Q5_K_BYTES : KV_Q4_K_BYTES;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++, w += bytes, x++) {
        uint8_t sc[8], m[8];
        kv_k4_scales(w + 4, sc, m);
        const uint8_t *qh = w + 16, *qs = w + (five ? 48 : 16);
        int sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++) {
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                int lo = qs[32 * c + l] & 0xF, hi = qs[32 * c + l] >> 4;
                if (five) {
                    lo += ((qh[l] >> (2 * c)) & 1) << 4;
                    hi += ((qh[l] >> (2 * c + 1)) & 1) << 4;
                }
                s0 += lo * x->q[64 * c + l];
                s1 += hi * x->q[64 * c + 32 + l];
            }
            sumi += sc[2 * c] * s0 + sc[2 * c + 1] * s1;
        }
        for (int j = 0; j < 8; j++) summ += m[j] * (x->bsum[2 * j] + x->bsum[2 * j + 1]);
        acc += x->d * (kv_f16_load(w) * (float)sumi - kv_f16_load(w + 2) * (float)summ);
    }
    return acc;
}
static float dot_q4_k(int64_t n, const void *w, const void *a) { return dot_q45_k(n, w, a, 0); }
static float dot_q5_k(int64_t n, const void *w, const void *a) { return dot_q45_k(n, w, a, 1); }

static float dot_q6_k(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_256 *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 256; i++, w += KV_Q6_K_BYTES, x++) {
        const int8_t *sc = (const int8_t *)(w + 192);
        int sumi = 0;
        for (int e = 0; e < 256; e++) sumi += sc[e / 16] * kv_q6_k_code(w, e) * x->q[e];
        int off = 0;
        for (int g = 0; g < 16; g++) off += sc[g] * x->bsum[g];
        acc += kv_f16_load(w + 208) * x->d * (float)(sumi - 32 * off);
    }
    return acc;
}

const kv_qkernel kv_qkernels_scalar[] = {
    {KV_TYPE_Q4_0, KV_ACT_Q8_32, dot_q4_0, NULL, 0, 0},
    {KV_TYPE_Q8_0, KV_ACT_Q8_32, dot_q8_0, NULL, 0, 0},
    {KV_TYPE_Q4_K, KV_ACT_Q8_256, dot_q4_k, NULL, 0, 0},
    {KV_TYPE_Q5_K, KV_ACT_Q8_256, dot_q5_k, NULL, 0, 0},
    {KV_TYPE_Q6_K, KV_ACT_Q8_256, dot_q6_k, NULL, 0, 0},
    {0, KV_ACT_NONE, NULL, NULL, 0, 0},
};

/* ---------------------------------------------------------------------------------------------- */
/* lookup                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

/* The ggml layouts the kernels read (a kvant format reusing a ggml id with another layout gets none). */
static int layout_ok(const kv_format *f) {
    static const struct { uint32_t type; int32_t block, bytes; } k[] = {
        {KV_TYPE_Q4_0, 32, KV_Q4_0_BYTES}, {KV_TYPE_Q8_0, 32, KV_Q8_0_BYTES}, {KV_TYPE_Q4_K, 256, KV_Q4_K_BYTES},
        {KV_TYPE_Q5_K, 256, KV_Q5_K_BYTES}, {KV_TYPE_Q6_K, 256, KV_Q6_K_BYTES}};
    for (size_t i = 0; i < KV_ARRAY_LEN(k); i++)
        if (f->type == k[i].type) return f->block == k[i].block && f->block_bytes == k[i].bytes && f->row_header_bytes == 0;
    return 0;
}

static const kv_qkernel *table_find(const kv_qkernel *t, uint32_t type) {
    for (; t->dot; t++)
        if (t->type == type) return t;
    return NULL;
}

const kv_qkernel *kv_qkernel_find(const kv_format *f, kv_isa isa) {
    if (!f || !layout_ok(f)) return NULL;
    const kv_qkernel *k = NULL;
    if (isa >= KV_ISA_AVX512) k = table_find(kv_qkernels_avx512, f->type);
    if (!k && isa >= KV_ISA_AVX2) k = table_find(kv_qkernels_avx2, f->type);
    if (!k) k = table_find(kv_qkernels_scalar, f->type);
    return k;
}
