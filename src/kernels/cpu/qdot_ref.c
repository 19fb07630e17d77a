/* qdot_ref.c — activation quantization and the portable scalar reference of the integer dot kernels, plus the
 * kernel lookup. The weight layouts are ggml's (ggml-common.h block_q4_0, block_q8_0, block_q4_K, block_q5_K,
 * block_q6_K; kvant's src/formats/ggml_*.c write them byte for byte); the activation side follows ggml's
 * quantize_row_q8_0 / quantize_row_q8_K (d = absmax/127, per-16 sums for the k-quants' minimums) with the scale
 * kept in fp32. Each kernel sums the integer products of a block exactly, then adds scale · sum in fp32 — the
 * order of ggml_vec_dot_*_q8_* reference loops. Also ggml's mxfp4, nvfp4 and iq4_nl (table values times q8
 * codes), kvant's int{3,4}_g128 on q8 blocks, nf4 / af4 as int8 tables on q8 blocks of 64 in their nibble
 * order, and, on fp32 activations, nf4 / af4 and higgs_p2_b{3,4} (the
 * dequantized values times x, an fp32 sum per block). The SIMD tables (qdot_avx2.c, qdot_avx512.c) compute the
 * same sums with a different fp32 summation order; tests/test_kernels.c bounds the difference. */
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/qdot_layout.h"
#include "formats/formats.h"
#include "formats/extra.h"

/* ---------------------------------------------------------------------------------------------- */
/* activations                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

size_t kv_act_row_bytes(kv_act_kind kind, int64_t n) {
    switch (kind) {
    case KV_ACT_Q8_32: return (size_t)(n / 32) * sizeof(kv_act_q8_32);
    case KV_ACT_Q8_256: return (size_t)(n / 256) * sizeof(kv_act_q8_256);
    case KV_ACT_F32: return (size_t)n * sizeof(float);
    case KV_ACT_Q8_64NF: return (size_t)(n / 64) * sizeof(kv_act_q8_64);
    case KV_ACT_Q8_128P: return (size_t)(n / 128) * sizeof(kv_act_q8_128);
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

/* 64 values in KV_ACT_Q8_64NF order (kernels.h) */
void kv_act_nf_order(const float *x, float *out) {
    for (int l = 0; l < 32; l++) {
        out[l] = x[2 * l + 1];
        out[32 + l] = x[2 * l];
    }
}

/* 128 values in KV_ACT_Q8_128P order */
void kv_act_pair_order(const float *x, float *out) {
    for (int t = 0; t < 64; t++) {
        out[t] = x[2 * t];
        out[64 + t] = x[2 * t + 1];
    }
}

void kv_act_quantize(kv_act_kind kind, const float *x, int64_t n, void *dst) {
    kv_act_quantize_isa(kv_cpu_isa(), kind, x, n, dst);
}

void kv_act_quantize_isa(kv_isa isa, kv_act_kind kind, const float *x, int64_t n, void *dst) {
    if (kind == KV_ACT_F32) { memcpy(dst, x, (size_t)n * sizeof(float)); return; }
    if (isa > kv_cpu_isa_hw()) isa = kv_cpu_isa_hw();
    if (isa >= KV_ISA_AVX512VBMI) { kv_act_quantize_avx512vbmi(kind, x, n, dst); return; }
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
    } else if (kind == KV_ACT_Q8_64NF) {
        kv_act_q8_64 *b = dst;
        float v[64];
        for (int64_t i = 0; i < n / 64; i++, b++, x += 64) {
            kv_act_nf_order(x, v);
            b->d = act_block(v, 64, b->q);
            int s = 0;
            for (int l = 0; l < 64; l++) s += b->q[l];
            b->off = -8 * s;
        }
    } else if (kind == KV_ACT_Q8_128P) {
        kv_act_q8_128 *b = dst;
        float v[128];
        for (int64_t i = 0; i < n / 128; i++, b++, x += 128) {
            kv_act_pair_order(x, v);
            b->d = act_block(v, 128, b->q);
            int s = 0;
            for (int l = 0; l < 128; l++) s += b->q[l];
            b->off = -8 * s;
        }
    }
}

void kv_cb4_table_i8(const float *code, int8_t t[16]) {
    for (int c = 0; c < 16; c++) t[c] = (int8_t)kv_nearest_int(127.0f * code[c]);
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

/* 4-bit lookup formats on q8 activations (ggml_vec_dot_mxfp4_q8_0, _iq4_nl_q8_0 order): Σ table[c]·q exactly */
static int lut_block32(const uint8_t *qs, const int8_t *tab, const int8_t *q) {
    int s = 0;
    for (int l = 0; l < 16; l++) s += tab[qs[l] & 0xF] * q[l] + tab[qs[l] >> 4] * q[l + 16];
    return s;
}

static float dot_mxfp4(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_32 *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++, w += KV_MXFP4_BYTES, x++)
        acc += kv_e8m0_to_fp32_half(w[0]) * x->d * (float)lut_block32(w + 1, kv_kvalues_fp4, x->q);
    return acc;
}

static float dot_iq4_nl(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_32 *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 32; i++, w += KV_IQ4_NL_BYTES, x++)
        acc += kv_f16_load(w) * x->d * (float)lut_block32(w + 2, kv_kvalues_iq4nl, x->q);
    return acc;
}

/* nvfp4: each q8 block of 32 covers two 16-value sub-blocks with their own scale */
static float dot_nvfp4(int64_t n, const void *wrow, const void *act) {
    const uint8_t *w = wrow;
    const kv_act_q8_32 *x = act;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / 64; i++, w += KV_NVFP4_BYTES) {
        for (int s = 0; s < 4; s++) {
            const kv_act_q8_32 *xb = x + 2 * i + s / 2;
            const uint8_t *qs = w + 4 + 8 * s;
            const int8_t *q = xb->q + 16 * (s & 1);
            int sum = 0;
            for (int j = 0; j < 8; j++) sum += kv_kvalues_fp4[qs[j] & 0xF] * q[j] + kv_kvalues_fp4[qs[j] >> 4] * q[j + 8];
            acc += kv_ue4m3_half_bits(w[s]) * xb->d * (float)sum;
        }
    }
    return acc;
}

/* int{3,4}_g128: per q8 block of 32, Σ c·q exactly; sym: d·xd·(Σ c·q - 2^(b-1) Σq), asym: d·xd·Σ c·q + min·xd·Σq */
static float dot_int_g128(int64_t n, const void *wrow, const void *act, const int bits, const int asym) {
    const uint8_t *w = wrow;
    const kv_act_q8_32 *x = act;
    const int gb = kv_int_g128_bytes(bits, asym), sb = asym ? 4 : 2;
    float acc = 0.0f;
    for (int64_t g = 0; g < n / 128; g++, w += gb) {
        const float d = kv_f16_load(w), mn = asym ? kv_f16_load(w + 2) : 0.0f;
        for (int k = 0; k < 4; k++, x++) {
            int s = 0;
            for (int l = 0; l < 32; l++) s += (int)kv_bits_get(w + sb, 32 * k + l, bits) * x->q[l];
            if (asym) acc += d * x->d * (float)s + mn * x->d * (float)x->sum;
            else acc += d * x->d * (float)(s - (1 << (bits - 1)) * x->sum);
        }
    }
    return acc;
}
static float dot_int4_sym(int64_t n, const void *w, const void *a) { return dot_int_g128(n, w, a, 4, 0); }
static float dot_int4_asym(int64_t n, const void *w, const void *a) { return dot_int_g128(n, w, a, 4, 1); }
static float dot_int3_sym(int64_t n, const void *w, const void *a) { return dot_int_g128(n, w, a, 3, 0); }
static float dot_int3_asym(int64_t n, const void *w, const void *a) { return dot_int_g128(n, w, a, 3, 1); }

/* fp32 activations. nf4 / af4: the dequantized values table[c]·absmax times x, one fp32 sum per block */
static float dot_cb4(int64_t n, const void *wrow, const void *act, const float *tab) {
    const uint8_t *w = wrow;
    const float *x = act;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / 64; b++, w += KV_CB4_BYTES, x += 64) {
        const float am = kv_rd_f32(w);
        float s = 0.0f;
        for (int j = 0; j < 32; j++) s += tab[w[4 + j] >> 4] * am * x[2 * j] + tab[w[4 + j] & 0xF] * am * x[2 * j + 1];
        acc += s;
    }
    return acc;
}
static float dot_nf4(int64_t n, const void *w, const void *a) { return dot_cb4(n, w, a, kv_nf4_code64); }
static float dot_af4(int64_t n, const void *w, const void *a) { return dot_cb4(n, w, a, kv_af4_code64); }

/* nf4 / af4 on KV_ACT_Q8_64NF: per block absmax · d · Σ t[c]·q exactly, t the int8 table; the sum over blocks
 * divided by the table's 127 at the end */
static float dot_cb4_q8(int64_t n, const void *wrow, const void *act, const float *code) {
    const uint8_t *w = wrow;
    const kv_act_q8_64 *x = act;
    int8_t t[16];
    kv_cb4_table_i8(code, t);
    float acc = 0.0f;
    for (int64_t b = 0; b < n / 64; b++, w += KV_CB4_BYTES, x++) {
        int s = 0;
        for (int l = 0; l < 32; l++) s += t[w[4 + l] & 0xF] * x->q[l] + t[w[4 + l] >> 4] * x->q[32 + l];
        acc += kv_rd_f32(w) * x->d * (float)s;
    }
    return acc * (1.0f / 127.0f);
}
static float dot_nf4_q8(int64_t n, const void *w, const void *a) { return dot_cb4_q8(n, w, a, kv_nf4_code64); }
static float dot_af4_q8(int64_t n, const void *w, const void *a) { return dot_cb4_q8(n, w, a, kv_af4_code64); }

/* higgs_p2_b{3,4}: the dequantized pair s·grid[c] times x, one fp32 sum per 256-value group */
static float dot_higgs_p2(int64_t n, const void *wrow, const void *act, const int b) {
    const uint8_t *w = wrow;
    const float *x = act;
    const float *pts = kv_higgs_grid_get(2, b)->pts;
    float acc = 0.0f;
    for (int64_t g = 0; g < n / 256; g++, w += kv_higgs_p2_bytes(b), x += 256) {
        const float s = kv_f16_load(w);
        float sum = 0.0f;
        for (int t = 0; t < 128; t++) {
            const float *q = pts + 2 * kv_bits_get(w + 2, t, 2 * b);
            sum += q[0] * s * x[2 * t] + q[1] * s * x[2 * t + 1];
        }
        acc += sum;
    }
    return acc;
}
static float dot_higgs_p2b3(int64_t n, const void *w, const void *a) { return dot_higgs_p2(n, w, a, 3); }
static float dot_higgs_p2b4(int64_t n, const void *w, const void *a) { return dot_higgs_p2(n, w, a, 4); }

/* higgs_p2_b{3,4} on KV_ACT_Q8_128P: per 64 pairs s·d·Σ (x[c]·q[t] + y[c]·q[64 + t]) exactly with the int8 grid,
 * the sum times the grid's step at the end */
static float dot_higgs_p2_q8(int64_t n, const void *wrow, const void *act, const int b) {
    const uint8_t *w = wrow;
    const kv_act_q8_128 *x = act;
    const kv_higgs_i8 *g = b == 3 ? &kv_higgs_p2b3_i8 : &kv_higgs_p2b4_i8;
    float acc = 0.0f;
    for (int64_t grp = 0; grp < n / 256; grp++, w += kv_higgs_p2_bytes(b)) {
        const float s = kv_f16_load(w);
        for (int h = 0; h < 2; h++, x++) {
            int sum = 0;
            for (int t = 0; t < 64; t++) {
                const uint32_t c = kv_bits_get(w + 2, 64 * h + t, 2 * b);
                sum += g->x[c] * x->q[t] + g->y[c] * x->q[64 + t];
            }
            acc += s * x->d * (float)sum;
        }
    }
    return acc * g->step;
}
static float dot_higgs_p2b3_q8(int64_t n, const void *w, const void *a) { return dot_higgs_p2_q8(n, w, a, 3); }
static float dot_higgs_p2b4_q8(int64_t n, const void *w, const void *a) { return dot_higgs_p2_q8(n, w, a, 4); }

const kv_qkernel kv_qkernels_scalar[] = {
    {KV_TYPE_Q4_0, KV_ACT_Q8_32, dot_q4_0, NULL, 0, 0},
    {KV_TYPE_Q8_0, KV_ACT_Q8_32, dot_q8_0, NULL, 0, 0},
    {KV_TYPE_Q4_K, KV_ACT_Q8_256, dot_q4_k, NULL, 0, 0},
    {KV_TYPE_Q5_K, KV_ACT_Q8_256, dot_q5_k, NULL, 0, 0},
    {KV_TYPE_Q6_K, KV_ACT_Q8_256, dot_q6_k, NULL, 0, 0},
    {KV_TYPE_MXFP4, KV_ACT_Q8_32, dot_mxfp4, NULL, 0, 0},
    {KV_TYPE_IQ4_NL, KV_ACT_Q8_32, dot_iq4_nl, NULL, 0, 0},
    {KV_TYPE_NVFP4, KV_ACT_Q8_32, dot_nvfp4, NULL, 0, 0},
    {KV_QK_INT4_SYM, KV_ACT_Q8_32, dot_int4_sym, NULL, 0, 0},
    {KV_QK_INT4_ASYM, KV_ACT_Q8_32, dot_int4_asym, NULL, 0, 0},
    {KV_QK_INT3_SYM, KV_ACT_Q8_32, dot_int3_sym, NULL, 0, 0},
    {KV_QK_INT3_ASYM, KV_ACT_Q8_32, dot_int3_asym, NULL, 0, 0},
    {KV_QK_NF4, KV_ACT_Q8_64NF, dot_nf4_q8, NULL, 0, 0},
    {KV_QK_AF4, KV_ACT_Q8_64NF, dot_af4_q8, NULL, 0, 0},
    {KV_QK_NF4, KV_ACT_F32, dot_nf4, NULL, 0, 0},
    {KV_QK_AF4, KV_ACT_F32, dot_af4, NULL, 0, 0},
    {KV_QK_HIGGS_P2B3, KV_ACT_Q8_128P, dot_higgs_p2b3_q8, NULL, 0, 0},
    {KV_QK_HIGGS_P2B4, KV_ACT_Q8_128P, dot_higgs_p2b4_q8, NULL, 0, 0},
    {KV_QK_HIGGS_P2B3, KV_ACT_F32, dot_higgs_p2b3, NULL, 0, 0},
    {KV_QK_HIGGS_P2B4, KV_ACT_F32, dot_higgs_p2b4, NULL, 0, 0},
    {0, KV_ACT_NONE, NULL, NULL, 0, 0},
};

/* ---------------------------------------------------------------------------------------------- */
/* lookup                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

/* The kernel id of a format's layout: the ggml id for the ggml layouts the kernels read (a kvant format reusing
 * a ggml id with another layout gets none), a KV_QK_* id for kvant's; 0 when no kernel reads it. */
static uint32_t kernel_id(const kv_format *f) {
    static const struct { uint32_t type; int32_t block, bytes; } k[] = {
        {KV_TYPE_Q4_0, 32, KV_Q4_0_BYTES}, {KV_TYPE_Q8_0, 32, KV_Q8_0_BYTES}, {KV_TYPE_Q4_K, 256, KV_Q4_K_BYTES},
        {KV_TYPE_Q5_K, 256, KV_Q5_K_BYTES}, {KV_TYPE_Q6_K, 256, KV_Q6_K_BYTES}, {KV_TYPE_MXFP4, 32, KV_MXFP4_BYTES},
        {KV_TYPE_IQ4_NL, 32, KV_IQ4_NL_BYTES}, {KV_TYPE_NVFP4, 64, KV_NVFP4_BYTES}};
    if (f->row_header_bytes != 0) return 0;
    for (size_t i = 0; i < KV_ARRAY_LEN(k); i++)
        if (f->type == k[i].type) return f->block == k[i].block && f->block_bytes == k[i].bytes ? f->type : 0;
    if (f->type == KV_TYPE_KV_CODEBOOK && f->block == 64 && f->block_bytes == KV_CB4_BYTES)
        return f->params[0] == 0 ? KV_QK_NF4 : f->params[0] == 2 ? KV_QK_AF4 : 0; /* codebook.c CB_NF4, CB_AF4 */
    if (f->type == KV_TYPE_KV_INT && f->block == 128 && !(f->traits & KV_FMT_F32_SCALE) &&
        (f->code_bits == 3 || f->code_bits == 4)) {
        const int asym = (f->traits & KV_FMT_ASYM) != 0;
        if (f->block_bytes != kv_int_g128_bytes(f->code_bits, asym)) return 0;
        return f->code_bits == 4 ? (asym ? KV_QK_INT4_ASYM : KV_QK_INT4_SYM) : (asym ? KV_QK_INT3_ASYM : KV_QK_INT3_SYM);
    }
    if (f->type == KV_TYPE_KV_HIGGS && f->params[0] == 2 && (f->params[1] == 3 || f->params[1] == 4) &&
        f->block == 256 && f->block_bytes == kv_higgs_p2_bytes(f->params[1]))
        return f->params[1] == 3 ? KV_QK_HIGGS_P2B3 : KV_QK_HIGGS_P2B4;
    return 0;
}

static const kv_qkernel *const k_tables[KV_ISA_COUNT] = {kv_qkernels_scalar, kv_qkernels_avx2, kv_qkernels_avx512,
                                                          kv_qkernels_avx512vbmi};

/* the entry of type in t on activations of kind act (act KV_ACT_NONE: any kind on quantized activations) */
static const kv_qkernel *table_find(const kv_qkernel *t, uint32_t type, kv_act_kind act) {
    for (; t->dot; t++)
        if (t->type == type && (act == KV_ACT_NONE ? t->act != KV_ACT_F32 : t->act == act)) return t;
    return NULL;
}

/* the widest ISA up to isa with a kernel for the layout, and there the quantized-activation one if q8 and there
 * is one: a format whose integer kernel needs a wider ISA keeps its fp32-activation SIMD kernel on this one */
const kv_qkernel *kv_qkernel_find_act(const kv_format *f, kv_isa isa, int q8) {
    const uint32_t id = f ? kernel_id(f) : 0;
    if (!id) return NULL;
    for (int i = KV_MIN((int)isa, KV_ISA_COUNT - 1); i >= 0; i--) {
        const kv_qkernel *k = q8 ? table_find(k_tables[i], id, KV_ACT_NONE) : NULL;
        if (!k) k = table_find(k_tables[i], id, KV_ACT_F32);
        if (k) return k;
    }
    return NULL;
}

const kv_qkernel *kv_qkernel_find(const kv_format *f, kv_isa isa) { return kv_qkernel_find_act(f, isa, 1); }

const kv_qkernel *kv_qkernel_find_kind(const kv_format *f, kv_isa isa, kv_act_kind act) {
    const uint32_t id = f ? kernel_id(f) : 0;
    for (int i = KV_MIN((int)isa, KV_ISA_COUNT - 1); id && act != KV_ACT_NONE && i >= 0; i--) {
        const kv_qkernel *k = table_find(k_tables[i], id, act);
        if (k) return k;
    }
    return NULL;
}
