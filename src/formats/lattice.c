/* lattice.c — E8 lattice formats e8_b2, e8_b3, e8_b4: a Voronoi (nested-lattice) code of the Gosset lattice.
 * Sources: Conway & Sloane, SPLAG ch. 20 (nearest point of D_n and of E8 = D8 u (D8 + 1/2)), and
 * Conway & Sloane, "A fast encoding method for lattice codes and quantizers" (IEEE Trans. IT 29, 1983):
 * Voronoi codes; the same construction as NestQuant (arXiv 2502.09720) without its multi-beta overload step.
 * Codebook (q = 2^b: 4, 8, 16 for b = 2, 3, 4): the q^8 points of E8 inside the Voronoi region of q*E8 (one
 * representative of each coset of E8 / qE8), scaled by beta. Rate: exactly log2(q) = b bits per weight plus the
 * scale. Encoding of an 8-vector y: lambda = Q_E8(y / beta); the index is the 8 coordinates v of lambda in the
 * generator basis G (below) reduced mod q, stored as 8 digits of b bits. Decoding: lambda' = v G, then
 * lambda' - q Q_E8(lambda' / q) (the coset member nearest the origin). A vector outside q*V(E8) is "overloaded"
 * and would decode to another member of its coset: the encoder then shrinks the vector toward the origin until it
 * is not (e8_vec), and chooses beta per group of 256 among 3 candidates beta = RMS * c_b * 2^(k/8), k = -1..1
 * (c_2 = 1.08, c_3 = 0.58, c_4 = 0.314: measured Gaussian optima of this encoder), by the exact decoded
 * squared error (importance-weighted).
 * G (rows): 2e1; -e_{i-1} + e_i for i = 2..7; (1/2, ..., 1/2) — unimodular, even: a basis of E8.
 * Block layout (256 values = 32 vectors): fp16 beta, then 256 digits of b bits as a little-endian bit stream
 * (vector k, coordinate i in position 8k + i). bits/weight = b + 16/256. */
#include "formats/extra.h"

#define E8_GROUP 256

/* Nearest point of D8 (integer vectors with even sum): round, then re-round the worst coordinate if odd. */
static void d8_nearest(const double *x, double *y) {
    double sum = 0.0, worst = -1.0;
    int wi = 0;
    for (int i = 0; i < 8; i++) {
        y[i] = floor(x[i] + 0.5);
        sum += y[i];
        double d = fabs(x[i] - y[i]);
        if (d > worst) {
            worst = d;
            wi = i;
        }
    }
    if (fmod(fabs(sum), 2.0) == 1.0) y[wi] += x[wi] >= y[wi] ? 1.0 : -1.0;
}

void kv_e8_nearest(const double *x, double *y) {
    double y0[8], y1[8], xs[8], d0 = 0.0, d1 = 0.0;
    d8_nearest(x, y0);
    for (int i = 0; i < 8; i++) xs[i] = x[i] - 0.5;
    d8_nearest(xs, y1);
    for (int i = 0; i < 8; i++) {
        y1[i] += 0.5;
        d0 += (x[i] - y0[i]) * (x[i] - y0[i]);
        d1 += (x[i] - y1[i]) * (x[i] - y1[i]);
    }
    memcpy(y, d1 < d0 ? y1 : y0, sizeof y0);
}

/* Coordinates v (lambda = v G) of a lattice point, from L = 2 lambda (integers of one parity). */
static void e8_coords(const double *lambda, int64_t *v) {
    int64_t L[8];
    for (int i = 0; i < 8; i++) L[i] = (int64_t)llround(2.0 * lambda[i]);
    v[7] = L[7];
    v[6] = (L[6] - L[7]) / 2;
    for (int j = 5; j >= 1; j--) v[j] = (L[j] - L[7]) / 2 + v[j + 1];
    v[0] = ((L[0] - L[7]) / 2 + v[1]) / 2;
}

static void e8_point(const int64_t *v, double *lambda) {
    double h = 0.5 * (double)v[7];
    lambda[0] = 2.0 * (double)v[0] - (double)v[1] + h;
    for (int j = 1; j <= 5; j++) lambda[j] = (double)v[j] - (double)v[j + 1] + h;
    lambda[6] = (double)v[6] + h;
    lambda[7] = h;
}

/* Voronoi code: digits (mod q) of a lattice point, and the decoded codebook point. */
static void e8_encode(const double *lam, int q, uint32_t *digits) {
    int64_t v[8];
    e8_coords(lam, v);
    for (int i = 0; i < 8; i++) digits[i] = (uint32_t)(((v[i] % q) + q) % q);
}

static void e8_decode(const uint32_t *digits, int q, double *out) {
    int64_t v[8];
    double lam[8], s[8], c[8];
    for (int i = 0; i < 8; i++) v[i] = digits[i];
    e8_point(v, lam);
    for (int i = 0; i < 8; i++) s[i] = lam[i] / q;
    kv_e8_nearest(s, c);
    for (int i = 0; i < 8; i++) out[i] = lam[i] - q * c[i];
}

/* Encodes one 8-vector x at scale beta; returns its (weighted) squared error. The decoded point is always a
 * codebook point, so the encoder may pick any: it tries y = x / beta shrunk by alpha = 1, 0.92, ..., 0.44 and
 * stops at the first alpha whose nearest lattice point is inside q*V(E8) (not overloaded); the candidate with the
 * smallest error wins. Without overload (alpha = 1) that is the exact nearest codebook point. */
static double e8_vec(const float *x, const float *w, float beta, int q, uint32_t *digits) {
    double best = INFINITY;
    for (int a = 0; a < 8; a++) {
        double y[8], lam[8], dec[8], e = 0.0;
        uint32_t dg[8];
        double alpha = 1.0 - 0.08 * a;
        for (int i = 0; i < 8; i++) y[i] = beta > 0.0f ? x[i] / (double)beta * alpha : 0.0;
        kv_e8_nearest(y, lam);
        e8_encode(lam, q, dg);
        e8_decode(dg, q, dec);
        int overloaded = 0;
        for (int i = 0; i < 8; i++) {
            double d = x[i] - beta * dec[i];
            e += (w ? w[i] : 1.0) * d * d;
            overloaded |= dec[i] != lam[i];
        }
        if (e < best) {
            best = e;
            memcpy(digits, dg, sizeof dg);
        }
        if (!overloaded) break;
    }
    return best;
}

/* Squared error (weighted) of a group at scale beta; digits gets the 256 codes. */
static double e8_group(const float *x, const float *w, float beta, int q, uint32_t *digits) {
    double err = 0.0;
    for (int k = 0; k < E8_GROUP / 8; k++) err += e8_vec(x + 8 * k, w ? w + 8 * k : NULL, beta, q, digits + 8 * k);
    return err;
}

/* beta / RMS around which the encoder searches (the Gaussian optimum of this encoder, measured). */
static double e8_base(int b) { return b == 2 ? 1.08 : b == 3 ? 0.58 : 0.314; }

static kv_status e8_quantize(const kv_format *f, const float *src, void *dst, int64_t nrows, int64_t n,
                             const float *importance, kv_error *err) {
    kv_status st = kv_format_check_quantize(f, src, dst, nrows, n, importance, err);
    if (st != KV_OK) return st;
    int b = f->params[0], q = 1 << b;
    size_t rb = kv_xf_row_bytes(f, n);
    uint32_t digits[E8_GROUP];
    for (int64_t r = 0; r < nrows; r++) {
        uint8_t *out = (uint8_t *)dst + (size_t)r * rb;
        memset(out, 0, rb);
        for (int64_t g = 0; g < n / E8_GROUP; g++) {
            const float *x = src + r * n + g * E8_GROUP;
            const float *w = importance ? importance + g * E8_GROUP : NULL;
            uint8_t *blk = out + g * f->block_bytes;
            double ss = 0.0;
            for (int i = 0; i < E8_GROUP; i++) ss += (double)x[i] * x[i];
            double rms = sqrt(ss / E8_GROUP);
            uint16_t best_h = 0;
            double best = INFINITY;
            uint32_t cand[E8_GROUP];
            int overflow = 0;
            for (int k = -1; k <= 1 && rms > 0.0; k++) {
                uint16_t h = kv_fp32_to_fp16((float)(rms * e8_base(b) * exp2(k / 8.0)));
                float beta = kv_fp16_to_fp32(h);
                overflow |= !isfinite(beta);
                if (!isfinite(beta) || beta == 0.0f) continue; /* below fp16: the group decodes to zeros */
                double e = e8_group(x, w, beta, q, cand);
                if (e < best) {
                    best = e;
                    best_h = h;
                    memcpy(digits, cand, sizeof cand);
                }
            }
            if (overflow && best_h == 0)
                return kv_fail(err, KV_ERANGE, "%s: row %lld: group RMS %g does not fit the fp16 scale", f->name,
                               (long long)r, rms);
            if (best_h == 0) memset(digits, 0, sizeof digits);
            kv_wr_u16(blk, best_h);
            for (int i = 0; i < E8_GROUP; i++) kv_bits_put(blk + 2, i, b, digits[i]);
        }
    }
    return KV_OK;
}

static void e8_dequantize(const kv_format *f, const void *src, float *dst, int64_t n) {
    int b = f->params[0], q = 1 << b;
    const uint8_t *blk = src;
    for (int64_t g = 0; g < n / E8_GROUP; g++, blk += f->block_bytes) {
        float beta = kv_fp16_to_fp32(kv_rd_u16(blk));
        for (int k = 0; k < E8_GROUP / 8; k++) {
            uint32_t dg[8];
            double dec[8];
            for (int i = 0; i < 8; i++) dg[i] = kv_bits_get(blk + 2, 8 * k + i, b);
            e8_decode(dg, q, dec);
            for (int i = 0; i < 8; i++) dst[g * E8_GROUP + 8 * k + i] = (float)(beta * dec[i]);
        }
    }
}

kv_status kv_fmt_e8_get(const char *name, kv_format *out, kv_error *err) {
    (void)err;
    int b;
    if (!strcmp(name, "e8_b2")) b = 2;
    else if (!strcmp(name, "e8_b3")) b = 3;
    else if (!strcmp(name, "e8_b4")) b = 4;
    else return KV_ENOTFOUND;
    memset(out, 0, sizeof *out);
    kv_xf_set_name(out, name);
    out->type = KV_TYPE_KV_E8;
    out->params[0] = b;
    out->block = E8_GROUP;
    out->block_bytes = 2 + E8_GROUP * b / 8;
    out->bits_per_weight = out->block_bytes * 8.0 / E8_GROUP;
    out->family = KV_FAM_LATTICE;
    out->group = E8_GROUP;
    out->code_bits = b;
    out->quantize = e8_quantize;
    out->dequantize = e8_dequantize;
    out->dot = kv_format_dot_blocks;
    return KV_OK;
}
