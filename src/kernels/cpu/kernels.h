/* kernels.h — CPU kernel tables chosen at run time (internal). One binary runs on any x86-64: every kernel that
 * uses wider instructions lives in a translation unit compiled with that ISA's target flags (f32_avx2.c,
 * f32_avx512.c, qdot_avx2.c, qdot_avx512.c, qdot_avx512vbmi.c) and is only called after CPUID says the CPU has it.
 *   - kv_f32_kernels: the fp32/bf16 GEMM micro-kernels and the vector helpers of the forward pass.
 *   - kv_qkernel: integer dot products of one packed weight row with activations quantized per block on the
 *     fly (ggml's q8_0 / q8_K trick: llama.cpp's CPU arithmetic), or of formats without an integer grid with
 *     fp32 activations (table lookups in registers, fp32 sums); one entry per (format, ISA). */
#ifndef KV_KERNELS_CPU_KERNELS_H
#define KV_KERNELS_CPU_KERNELS_H

#include "core/core.h"

/* ---------------------------------------------------------------------------------------------- */
/* instruction sets                                                                                */
/* ---------------------------------------------------------------------------------------------- */
typedef enum kv_isa {
    KV_ISA_SCALAR = 0, /* portable C (whatever the baseline x86-64 compiler flags give) */
    KV_ISA_AVX2,       /* AVX2 + FMA + F16C */
    KV_ISA_AVX512,     /* AVX-512 F/BW/DQ/VL + VNNI (Cascade Lake, Cooper Lake, Ice Lake, Zen 4 and later) */
    KV_ISA_AVX512VBMI, /* the same + VBMI: byte permutes and bit-field extraction (Ice Lake, Zen 4 and later) */
    KV_ISA_COUNT
} kv_isa;

/* Best ISA the CPU supports (CPUID, through the compiler's __builtin_cpu_supports). */
kv_isa kv_cpu_isa_hw(void);
/* kv_cpu_isa_hw capped by the environment variable KVANT_ISA=scalar|avx2|avx512|avx512vbmi (tests and benchmarks of the
 * weight kernels; an unknown value is ignored). */
kv_isa kv_cpu_isa(void);
const char *kv_isa_name(kv_isa isa);
/* Parses "scalar|avx2|avx512|avx512vbmi"; -1 when unknown. */
int kv_isa_parse(const char *s);
int kv_cpu_has_avx512bf16(void);

/* ---------------------------------------------------------------------------------------------- */
/* fp32 / bf16 kernels (f32_impl.h)                                                                */
/* ---------------------------------------------------------------------------------------------- */
enum { KV_GEMM_MR = 8, KV_GEMM_NR = 32 };

/* C[mr × ncol] (+)= A[mr × kc] · P[kc × NR] with P a packed micro-panel (64-byte aligned). */
typedef void (*kv_ukernel_fn)(const float *A, int64_t lda, int mr, const float *P, int64_t kc, float *C, int64_t ldc,
                              int ncol, int accumulate);
/* The same over bf16 pairs (each u32 = two consecutive-k bf16 values). */
typedef void (*kv_ukernel_bf16_fn)(const uint32_t *A, int64_t lda, int mr, const uint32_t *P, int64_t kpc, float *C,
                                   int64_t ldc, int ncol, int accumulate);
typedef struct kv_f32_kernels {
    kv_ukernel_fn ukernel;
    kv_ukernel_bf16_fn ukernel_bf16;                        /* NULL without AVX512-BF16 code */
    void (*round_bf16)(const float *x, uint16_t *dst, int64_t n); /* with ukernel_bf16 */
    float (*dot)(const float *a, const float *b, int64_t n);
    float (*dot_bf16)(const uint16_t *w, const float *x, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    void (*softmax_scaled)(float *x, int64_t n, float scale);
    void (*swiglu)(float *g, const float *u, int64_t n);
    double (*sum_exp_shifted)(const float *x, int64_t n, float shift);
} kv_f32_kernels;

extern const kv_f32_kernels kv_f32_kernels_generic, kv_f32_kernels_avx2, kv_f32_kernels_avx512;
/* The table for the CPU this runs on (CPUID only: the vector helpers never read the environment). */
const kv_f32_kernels *kv_f32_kernels_hw(void);

/* ---------------------------------------------------------------------------------------------- */
/* quantized activations and integer dot products (qdot_*.c)                                       */
/* ---------------------------------------------------------------------------------------------- */
/* Activation blocks (internal layouts, never stored): the scale is kept in fp32 (ggml's q8_0 rounds it to
 * fp16; fp32 loses nothing and costs nothing here). Codes q = nearest-even(x / d), d = absmax / 127. */
/* KV_ACT_F32: the activations as they are (n floats): kernels of formats whose values are no integer grid
 * (NF4/AF4 codebooks, HIGGS grids) decode the weights to fp32 in registers and accumulate in fp32. */
/* KV_ACT_Q8_64NF: blocks of 64 codes in the nibble order of an nf4 / af4 block's 32 bytes (byte j holds value 2j
 * in its high nibble, 2j + 1 in its low one): q[l] is the code of value 2l + 1, q[32 + l] that of value 2l, so
 * a kernel multiplies the low nibbles of 32 bytes, then the high ones, by 32 consecutive codes without moving
 * a byte. off = -8 Σq: the VNNI kernels add 128 to the signed table values (VPDPBUSD multiplies unsigned
 * bytes) and start each of their 16 lanes at off, -128 Σq in all. */
/* KV_ACT_Q8_128P: blocks of 128 with the pairs' coordinates apart (HIGGS p = 2): q[t] is the code of value 2t,
 * q[64 + t] that of value 2t + 1, so the x and the y coordinates of 64 pairs each meet 64 consecutive codes;
 * off = -8 Σq as in KV_ACT_Q8_64NF. */
typedef enum kv_act_kind {
    KV_ACT_NONE = 0, KV_ACT_Q8_32, KV_ACT_Q8_256, KV_ACT_F32, KV_ACT_Q8_64NF, KV_ACT_Q8_128P
} kv_act_kind;
typedef struct kv_act_q8_32 {
    float d;
    int32_t sum;    /* Σ q (the offset terms of q4_0-style weights) */
    int8_t q[32];
} kv_act_q8_32;
typedef struct kv_act_q8_256 {
    float d;
    int16_t bsum[16]; /* Σ q over each 16 codes (k-quant minimums and offsets) */
    int8_t q[256];
} kv_act_q8_256;
typedef struct kv_act_q8_64 {
    float d;
    int32_t off;  /* -8 Σ q */
    int8_t q[64]; /* KV_ACT_Q8_64NF order */
} kv_act_q8_64;
KV_STATIC_ASSERT(sizeof(kv_act_q8_64) == 72, "q8_64 activation block");
typedef struct kv_act_q8_128 {
    float d;
    int32_t off;   /* -8 Σ q */
    int8_t q[128]; /* KV_ACT_Q8_128P order */
} kv_act_q8_128;
KV_STATIC_ASSERT(sizeof(kv_act_q8_128) == 136, "q8_128 activation block");
KV_STATIC_ASSERT(sizeof(kv_act_q8_32) == 40, "q8_32 activation block");
KV_STATIC_ASSERT(sizeof(kv_act_q8_256) == 292, "q8_256 activation block");

/* Bytes of one activation row of n values (n a multiple of the block). */
size_t kv_act_row_bytes(kv_act_kind kind, int64_t n);
/* 64 values x in KV_ACT_Q8_64NF order / 128 values in KV_ACT_Q8_128P order into out. */
void kv_act_nf_order(const float *x, float *out);
void kv_act_pair_order(const float *x, float *out);
/* x[n] -> activation blocks; identical bytes on every ISA. */
void kv_act_quantize(kv_act_kind kind, const float *x, int64_t n, void *dst);
/* The same computed on one ISA (kv_act_quantize picks the widest this CPU runs; tests compare them). */
void kv_act_quantize_isa(kv_isa isa, kv_act_kind kind, const float *x, int64_t n, void *dst);
void kv_act_quantize_avx2(kv_act_kind kind, const float *x, int64_t n, void *dst);
void kv_act_quantize_avx512(kv_act_kind kind, const float *x, int64_t n, void *dst);
void kv_act_quantize_avx512vbmi(kv_act_kind kind, const float *x, int64_t n, void *dst);

/* Dot of one packed weight row of n values with one activation row of the same n. */
typedef float (*kv_qdot_fn)(int64_t n, const void *wrow, const void *act);
/* A tile of dots: y[t * ldy + r] = dot(weight row r, activation row t) for r < nr, t < nt (nr <= tile_rows,
 * nt <= tile_toks), each weight block loaded once for all nt tokens. Every element equals dot() bit for bit,
 * so the tiling (thread count, token count) never changes a result. */
typedef void (*kv_qtile_fn)(int64_t n, const uint8_t *w, size_t w_stride, int nr, const uint8_t *act,
                            size_t act_stride, int nt, float *y, int64_t ldy);
typedef struct kv_qkernel {
    uint32_t type;     /* ggml type id, or a KV_QK_* id of a kvant layout (qdot_layout.h) */
    kv_act_kind act;
    kv_qdot_fn dot;
    kv_qtile_fn tile;  /* NULL: the caller loops over dot */
    int tile_rows, tile_toks;
} kv_qkernel;

/* Tables per ISA (terminated by type 0 / dot NULL); a format may have two entries, one on quantized and one on
 * fp32 activations (nf4 / af4). kv_qkernel_find_act: one format's kernel on a given ISA (falling back to the
 * next narrower ISA that has it): with q8 set, its kernel on quantized activations if there is one, else its
 * fp32-activation kernel; with q8 0, only an fp32-activation kernel. NULL when there is none. kv_qkernel_find
 * is kv_qkernel_find_act(f, isa, 1). */
extern const kv_qkernel kv_qkernels_scalar[], kv_qkernels_avx2[], kv_qkernels_avx512[], kv_qkernels_avx512vbmi[];
const kv_qkernel *kv_qkernel_find_act(const kv_format *f, kv_isa isa, int q8);
const kv_qkernel *kv_qkernel_find(const kv_format *f, kv_isa isa);
/* The kernel of f on activations of this kind on the given ISA or the next narrower that has one (tests: the
 * scalar reference of a SIMD kernel); NULL when none. */
const kv_qkernel *kv_qkernel_find_kind(const kv_format *f, kv_isa isa, kv_act_kind act);

/* The int8 table of a 16-value codebook in [-1, 1] (nf4, af4): t[c] = nearest(127 · code[c]), |error| <= 1/254
 * of the block's absmax (the kernels on KV_ACT_Q8_64NF multiply these and divide the sum by 127). */
void kv_cb4_table_i8(const float *code, int8_t t[16]);

/* The HIGGS p = 2 grids of 3 and 4 bits per dimension as int8 tables (qdot_grids.c): point c ≈ step · (x[c], y[c]),
 * each coordinate within step / 2 (the kernels on KV_ACT_Q8_128P multiply these, the sum times step at the end). */
typedef struct kv_higgs_i8 {
    float step;
    int8_t x[256], y[256];
} kv_higgs_i8;
extern const kv_higgs_i8 kv_higgs_p2b3_i8, kv_higgs_p2b4_i8;

#endif
