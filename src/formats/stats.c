/* stats.c — kv_formats_measure: a format's MSE and SNR on iid N(0,1) and Student-t (nu = 5) samples, with and
 * without a random Hadamard rotation, and its gap to the Gaussian rate-distortion bound D(R) = sigma^2 2^(-2R)
 * (Shannon; Cover & Thomas, Elements of Information Theory, ch. 10): gap = 1/2 log2(MSE / D(R)) bits.
 * Student-t: Z / sqrt(chi2_5 / 5) with chi2_5 the sum of five squared normals. The rotation: multiply by a fixed
 * random +-1 vector (one per row position, from the seed), then the orthonormal fast Walsh-Hadamard transform
 * (Sylvester order, scale 1/16) on blocks of 256 — orthonormal, so the MSE measured on rotated data is the MSE
 * the rotated format would give on the original data.
 * Determinism: every row draws from its own kv_rng stream seeded from (seed, set, row); quantization runs in
 * fixed tasks of one tensor (KV_FMT_SAMPLE_TENSOR_ROWS rows) each, and partial sums are reduced in task order. */
#include "formats/extra.h"

#define RHT_BLOCK 256
#define ROW KV_FMT_SAMPLE_ROW
#define TROWS KV_FMT_SAMPLE_TENSOR_ROWS

static uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t z = seed ^ (a * 0x9e3779b97f4a7c15ull) ^ (b * 0xc2b2ae3d27d4eb4full);
    z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ull;
    return z ^ (z >> 29);
}

/* In-place orthonormal FWHT of 256 values. */
static void fwht256(float *x) {
    for (int h = 1; h < RHT_BLOCK; h *= 2)
        for (int i = 0; i < RHT_BLOCK; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    for (int i = 0; i < RHT_BLOCK; i++) x[i] *= 0.0625f;
}

typedef struct gen_ctx {
    kv_format_samples *s;
    uint64_t seed;
    const float *signs;
} gen_ctx;

static void gen_row(void *vctx, int64_t r, int thread) {
    (void)thread;
    gen_ctx *c = vctx;
    kv_rng rng;
    float *g = c->s->data[KV_FMT_GAUSS] + r * ROW, *t = c->s->data[KV_FMT_T5] + r * ROW;
    kv_rng_seed(&rng, mix_seed(c->seed, 1, (uint64_t)r));
    for (int i = 0; i < ROW; i++) g[i] = (float)kv_rng_normal(&rng);
    kv_rng_seed(&rng, mix_seed(c->seed, 2, (uint64_t)r));
    for (int i = 0; i < ROW; i++) {
        double z = kv_rng_normal(&rng), chi2 = 0.0;
        for (int k = 0; k < 5; k++) {
            double u = kv_rng_normal(&rng);
            chi2 += u * u;
        }
        t[i] = (float)(z / sqrt(chi2 / 5.0));
    }
    for (int set = KV_FMT_GAUSS; set <= KV_FMT_T5; set += 2) {
        const float *src = c->s->data[set] + r * ROW;
        float *dst = c->s->data[set + 1] + r * ROW;
        for (int i = 0; i < ROW; i++) dst[i] = src[i] * c->signs[i];
        for (int b = 0; b < ROW; b += RHT_BLOCK) fwht256(dst + b);
    }
}

void kv_format_samples_free(kv_format_samples *s) {
    if (!s) return;
    for (int i = 0; i < KV_FMT_NDATASETS; i++) {
        free(s->data[i]);
        s->data[i] = NULL;
    }
    s->nrows = 0;
}

kv_status kv_format_samples_make(int64_t nsamples, uint64_t seed, kv_pool *pool, kv_format_samples *out,
                                 kv_error *err) {
    memset(out, 0, sizeof *out);
    if (nsamples <= 0 || nsamples > ((int64_t)1 << 32))
        return kv_fail(err, KV_EINVAL, "sample count %lld out of range (1 .. 2^32)", (long long)nsamples);
    int64_t per_tensor = (int64_t)ROW * TROWS;
    out->nrows = (nsamples + per_tensor - 1) / per_tensor * TROWS;
    for (int i = 0; i < KV_FMT_NDATASETS; i++) {
        out->data[i] = kv_malloc((size_t)out->nrows * ROW * sizeof(float), err);
        if (!out->data[i]) {
            kv_format_samples_free(out);
            return KV_ENOMEM;
        }
    }
    float signs[ROW];
    kv_rng rng;
    kv_rng_seed(&rng, mix_seed(seed, 3, 0));
    for (int i = 0; i < ROW; i++) signs[i] = kv_rng_u64(&rng) >> 63 ? -1.0f : 1.0f;
    gen_ctx c = {out, seed, signs};
    kv_pool_run(pool, out->nrows, gen_row, &c);
    for (int set = 0; set < KV_FMT_NDATASETS; set++) {
        double ss = 0.0;
        const float *x = out->data[set];
        for (int64_t i = 0; i < out->nrows * ROW; i++) ss += (double)x[i] * x[i];
        out->mean_square[set] = ss / (double)(out->nrows * ROW);
    }
    return KV_OK;
}

typedef struct measure_ctx {
    const kv_format *f;
    const kv_format_samples *s;
    int64_t ntensors;
    double *sse;      /* per task */
    kv_status *st;    /* per task */
    kv_error *errs;   /* per task */
} measure_ctx;

static void measure_task(void *vctx, int64_t task, int thread) {
    (void)thread;
    measure_ctx *c = vctx;
    int set = (int)(task / c->ntensors);
    int64_t tensor = task % c->ntensors;
    const float *x = c->s->data[set] + tensor * TROWS * ROW;
    size_t rb = kv_format_row_bytes(c->f, ROW);
    uint8_t *packed = malloc(rb * TROWS);
    float *y = malloc(ROW * sizeof *y);
    c->sse[task] = 0.0;
    if (!packed || !y) {
        c->st[task] = kv_fail(&c->errs[task], KV_ENOMEM, "out of memory measuring %s", c->f->name);
    } else {
        c->st[task] = c->f->quantize(c->f, x, packed, TROWS, ROW, NULL, &c->errs[task]);
        for (int64_t r = 0; r < TROWS && c->st[task] == KV_OK; r++) {
            c->f->dequantize(c->f, packed + r * rb, y, ROW);
            double e = 0.0;
            for (int i = 0; i < ROW; i++) {
                double d = (double)y[i] - x[r * ROW + i];
                e += d * d;
            }
            c->sse[task] += e;
        }
    }
    free(packed);
    free(y);
}

kv_status kv_formats_measure(const kv_format *f, const kv_format_samples *s, kv_pool *pool,
                             kv_format_measure *out, kv_error *err) {
    memset(out, 0, sizeof *out);
    if (!f || !s || s->nrows <= 0 || s->nrows % TROWS) return kv_fail(err, KV_EINVAL, "measure: bad arguments");
    if (kv_format_row_bytes(f, ROW) == 0)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s: block %d does not divide the sample row %d", f->name,
                       f->block, ROW);
    int64_t ntensors = s->nrows / TROWS, ntasks = ntensors * KV_FMT_NDATASETS;
    measure_ctx c = {f, s, ntensors, NULL, NULL, NULL};
    c.sse = kv_calloc((size_t)ntasks, sizeof *c.sse, err);
    c.st = kv_calloc((size_t)ntasks, sizeof *c.st, err);
    c.errs = kv_calloc((size_t)ntasks, sizeof *c.errs, err);
    kv_status st = KV_OK;
    if (!c.sse || !c.st || !c.errs) st = KV_ENOMEM;
    else kv_pool_run(pool, ntasks, measure_task, &c);
    for (int64_t t = 0; st == KV_OK && t < ntasks; t++)
        if (c.st[t] != KV_OK) {
            st = c.st[t];
            if (err) *err = c.errs[t];
        }
    if (st == KV_OK) {
        double n = (double)(s->nrows * ROW);
        for (int set = 0; set < KV_FMT_NDATASETS; set++) {
            double sse = 0.0;
            for (int64_t t = 0; t < ntensors; t++) sse += c.sse[set * ntensors + t];
            out->mse[set] = sse / n;
            out->snr_db[set] = 10.0 * log10(s->mean_square[set] / out->mse[set]);
        }
        out->bits_per_weight = kv_format_bpw(f, ROW);
        double dr = s->mean_square[KV_FMT_GAUSS] * exp2(-2.0 * out->bits_per_weight);
        out->gap_bits_gauss = 0.5 * log2(out->mse[KV_FMT_GAUSS] / dr);
    }
    free(c.sse);
    free(c.st);
    free(c.errs);
    return st;
}
