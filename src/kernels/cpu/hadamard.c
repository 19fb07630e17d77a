/* hadamard.c — fast Walsh–Hadamard transforms, Paley Hadamard matrices of order 12/20/28 and the randomized
 * Hadamard transform (rht) of linear-layer inputs.
 * Sources: Sylvester construction and the in-place butterfly FWHT; Paley, "On orthogonal matrices" (1933),
 * construction I (q ≡ 3 mod 4 prime power, H = I + S with S the bordered Jacobsthal matrix); QuaRot
 * (arXiv 2404.00456) hadamard_utils.py for the Kronecker convention H_K ⊗ H_{2^m} (x as K rows of 2^m);
 * HIGGS (arXiv 2411.17525) and MR-GPTQ for the block-wise randomized rotation of weight rows. */
#include "kernels/cpu/hadamard.h"
#include <math.h>

void kv_fwht(float *x, int64_t n) {
    for (int64_t h = 1; h < n; h <<= 1)
        for (int64_t i = 0; i < n; i += h << 1)
            for (int64_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
}

void kv_fwht_f64(double *x, int64_t n) {
    for (int64_t h = 1; h < n; h <<= 1)
        for (int64_t i = 0; i < n; i += h << 1)
            for (int64_t j = i; j < i + h; j++) {
                double a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
}

/* ---- GF(q) for q = p^e, elements encoded as base-p digits (polynomial coefficients) ---- */

typedef struct gf {
    int p, e, q;
    int modpoly[4]; /* x^e = sum modpoly[i] x^i (mod p) */
} gf;

static int gf_sub(const gf *f, int a, int b) {
    int r = 0, mul = 1;
    for (int i = 0; i < f->e; i++) {
        int da = a % f->p, db = b % f->p;
        r += ((da - db + f->p) % f->p) * mul;
        a /= f->p;
        b /= f->p;
        mul *= f->p;
    }
    return r;
}

static int gf_mul(const gf *f, int a, int b) {
    int ca[4] = {0}, cb[4] = {0}, prod[8] = {0};
    for (int i = 0; i < f->e; i++, a /= f->p, b /= f->p) {
        ca[i] = a % f->p;
        cb[i] = b % f->p;
    }
    for (int i = 0; i < f->e; i++)
        for (int j = 0; j < f->e; j++) prod[i + j] = (prod[i + j] + ca[i] * cb[j]) % f->p;
    /* reduce degrees 2e-2 .. e using x^e = modpoly */
    for (int d = 2 * f->e - 2; d >= f->e; d--) {
        int c = prod[d];
        prod[d] = 0;
        for (int i = 0; i < f->e; i++) prod[d - f->e + i] = (prod[d - f->e + i] + c * f->modpoly[i]) % f->p;
    }
    int r = 0;
    for (int i = f->e - 1; i >= 0; i--) r = r * f->p + prod[i];
    return r;
}

/* Paley construction I of order q+1: H = I + S, S = [[0, 1ᵀ], [-1, Q]], Q[i][j] = χ(a_i - a_j). */
static void paley1(const gf *f, int8_t *h) {
    int q = f->q, n = q + 1;
    int8_t chi[32] = {0}; /* quadratic character: +1 on nonzero squares, -1 on non-squares */
    for (int a = 1; a < q; a++) chi[a] = -1;
    for (int a = 1; a < q; a++) chi[gf_mul(f, a, a)] = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int s;
            if (i == 0) s = j == 0 ? 0 : 1;
            else if (j == 0) s = -1;
            else s = chi[gf_sub(f, i - 1, j - 1)];
            h[i * n + j] = (int8_t)(s + (i == j ? 1 : 0));
        }
}

int kv_hadamard_small(int k, int8_t *h) {
    if (k == 1) {
        h[0] = 1;
        return 0;
    }
    if (k == 2) {
        h[0] = 1, h[1] = 1, h[2] = 1, h[3] = -1;
        return 0;
    }
    gf f = {0};
    if (k == 12) f = (gf){.p = 11, .e = 1, .q = 11};
    else if (k == 20) f = (gf){.p = 19, .e = 1, .q = 19};
    else if (k == 28) f = (gf){.p = 3, .e = 3, .q = 27, .modpoly = {1, 1, 0}}; /* x^3 = x + 1 (x^3 - x - 1 irreducible over GF(3)) */
    else return -1;
    paley1(&f, h);
    return 0;
}

static int is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

int kv_hadamard_factor(int64_t b, int *k, int64_t *p) {
    static const int ks[] = {28, 20, 12};
    if (b <= 0) return -1;
    if (is_pow2(b)) {
        *k = 1;
        *p = b;
        return 0;
    }
    for (size_t i = 0; i < KV_ARRAY_LEN(ks); i++)
        if (b % ks[i] == 0 && is_pow2(b / ks[i])) {
            *k = ks[i];
            *p = b / ks[i];
            return 0;
        }
    return -1;
}

int kv_rht_block_supported(int64_t b) {
    int k;
    int64_t p;
    return kv_hadamard_factor(b, &k, &p) == 0;
}

int64_t kv_rht_best_block(int64_t n, int64_t max_block) {
    for (int64_t b = KV_MIN(n, max_block); b > 1; b--)
        if (n % b == 0 && kv_rht_block_supported(b)) return b;
    return 1;
}

void kv_rht_signs(uint64_t seed, int64_t n, float *signs) {
    kv_rng r;
    kv_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) signs[i] = (kv_rng_u64(&r) >> 63) ? -1.0f : 1.0f;
}

/* y[0..K) ← H_K·y (transpose: H_Kᵀ·y) for each of the p columns of the K×p view of x. */
static void mix_small(float *x, int k, int64_t p, const int8_t *hk, int transpose) {
    float y[KV_HADAMARD_MAX_K], z[KV_HADAMARD_MAX_K];
    for (int64_t c = 0; c < p; c++) {
        for (int a = 0; a < k; a++) y[a] = x[a * p + c];
        for (int a = 0; a < k; a++) {
            float s = 0.0f;
            for (int b = 0; b < k; b++) s += (float)(transpose ? hk[b * k + a] : hk[a * k + b]) * y[b];
            z[a] = s;
        }
        for (int a = 0; a < k; a++) x[a * p + c] = z[a];
    }
}

static void rht_blocks(float *x, int64_t n, int32_t block, const float *signs, int inverse) {
    int k = 1;
    int64_t p = block;
    int8_t hk[KV_HADAMARD_MAX_K * KV_HADAMARD_MAX_K];
    if (block <= 0 || n % block != 0 || kv_hadamard_factor(block, &k, &p) != 0) return; /* callers validate */
    kv_hadamard_small(k, hk);
    const float scale = (float)(1.0 / sqrt((double)block));
    for (int64_t off = 0; off < n; off += block) {
        float *xb = x + off;
        if (!inverse && signs)
            for (int32_t i = 0; i < block; i++) xb[i] *= signs[off + i];
        for (int a = 0; a < k; a++) kv_fwht(xb + a * p, p);
        if (k > 1) mix_small(xb, k, p, hk, inverse);
        for (int32_t i = 0; i < block; i++) xb[i] *= scale;
        if (inverse && signs)
            for (int32_t i = 0; i < block; i++) xb[i] *= signs[off + i];
    }
}

void kv_rht_apply(float *x, int64_t n, int32_t block, const float *signs) { rht_blocks(x, n, block, signs, 0); }

void kv_rht_apply_inverse(float *x, int64_t n, int32_t block, const float *signs) {
    rht_blocks(x, n, block, signs, 1);
}

void kv_rht_forward(float *x, int64_t n, int32_t block, uint64_t seed) {
    /* signs stream straight from the generator: D is applied first, so no sign buffer is needed */
    kv_rng r;
    kv_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++)
        if (kv_rng_u64(&r) >> 63) x[i] = -x[i];
    rht_blocks(x, n, block, NULL, 0);
}

uint64_t kv_rht_tensor_seed(uint64_t seed, const char *tensor_name) {
    /* FNV-1a over the name, mixed with the run seed through one splitmix step */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *s = (const unsigned char *)tensor_name; *s; s++) h = (h ^ *s) * 0x100000001b3ULL;
    uint64_t z = h ^ (seed + 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
