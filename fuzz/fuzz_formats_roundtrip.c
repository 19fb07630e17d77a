/* fuzz_formats_roundtrip.c — libFuzzer target for the number formats' encoders (src/formats): quantize →
 * dequantize → quantize → dequantize on fuzzed rows of finite values, checking what each format promises.
 *   EXACT formats (deterministic scale from the block's absmax or min/max, nearest grid point): quantizing the
 *     dequantized values reproduces the bytes (the values are grid points of the same scales);
 *   q8_1: the values reproduce (its per-block sum field is computed from the input, not from the codes);
 *   the others search their scales (k-quants' and iq4's rmse search with fp16 super-scales, nf4_dq's
 *     double-quantized absmax, HIGGS/E8 scaled by the block's RMS, which the codes change; nvfp4 and nvfp4_ts
 *     round amax/6 to an E4M3 block scale: rounded up, the block's largest code falls below 6 and the
 *     re-quantized block gets a smaller scale): no fixed point is
 *     promised, so only that both passes give finite values no farther from their input than zero would be
 *     (HIGGS/E8: than 5x the input's norm, see error_factor).
 * With importance weights only finiteness is checked (see check_bound).
 * Input: byte 0 the format, byte 1 the row length and rows, byte 2 the magnitude (up to 2^1 .. 2^15), byte 3 bit 0
 * importance weights; then int16 values (repeated as needed). */
#include "fuzz_util.h"
#include "kvant.h"
#include <math.h>
#include <string.h>

typedef enum { PROMISE_BYTES, PROMISE_VALUES, PROMISE_BOUND } promise;

static promise promise_of(const kv_format *f) {
    static const char *const search[] = {"q6_k", "q5_k", "q4_k", "q3_k", "q2_k", "q8_k", "iq4_nl", "iq4_xs", "nf4_dq",
                                         "nvfp4", "nvfp4_ts"};
    for (size_t i = 0; i < sizeof search / sizeof search[0]; i++)
        if (!strcmp(f->name, search[i])) return PROMISE_BOUND;
    if (!strncmp(f->name, "higgs_", 6) || !strncmp(f->name, "e8_", 3)) return PROMISE_BOUND;
    /* an MSE scale search may pick another scale for values already on a grid (int4_g128_asym_mse counterexample) */
    const size_t len = strlen(f->name);
    if (len > 4 && !strcmp(f->name + len - 4, "_mse")) return PROMISE_BOUND;
    if (!strcmp(f->name, "q8_1")) return PROMISE_VALUES;
    return PROMISE_BYTES;
}

/* per row: finite, and without importance ||y - x||^2 <= ||x||^2 (with slack for the fp32 sums). With importance
 * only finite: a weighted search trades unweighted error for weighted error, and formats that use the weights
 * only in part (HIGGS p = 1 ignores them, p >= 2 weighs its point search but not its RMS scale) give no
 * weighted bound either. */
/* Formats whose grid is min + k·step (asymmetric): zero is not a grid point, so near-zero values far from both
 * ends (a 2-bit block spanning [-736, 791]) land farther than zero would; their bound is the block's range. */
static int grid_has_min(const kv_format *f) {
    static const char *const mins[] = {"q4_1", "q5_1", "q2_k", "q4_k", "q5_k"};
    for (size_t i = 0; i < sizeof mins / sizeof mins[0]; i++)
        if (!strcmp(f->name, mins[i])) return 1;
    return strstr(f->name, "_asym") != NULL;
}

/* An asymmetric block whose range is far below its offset's fp16 resolution (values -32382/256 .. -32383/256:
 * range 2^-8 beside a min near -126.5, stored to 2^-4) comes back from the stored min and step with another
 * min/max, so re-quantizing picks other codes (the fuzzer's counterexample int3_g128_asym, kept in
 * fuzz/regress/formats_roundtrip/): no byte fixed point there, only the range bound. */
static int offset_dwarfs_range(const float *x, int64_t total, int64_t block) {
    for (int64_t b = 0; b + block <= total; b += block) {
        float lo = x[b], hi = x[b];
        for (int64_t i = 1; i < block; i++) lo = fminf(lo, x[b + i]), hi = fmaxf(hi, x[b + i]);
        if (hi - lo < 0x1p-7f * fmaxf(fabsf(lo), fabsf(hi))) return 1;
    }
    return 0;
}

/* per row: every value within [min - range, max + range] of its input row, plus the resolution of the stored
 * scales: the k-quants' fp16 super-scale d = (block scale)/63 of a small block is an fp16 subnormal (spacing
 * 2^-24), and a value is d·sc·q with sc·q up to 63·31 (a constant q4_k row of 194·2^-14 comes back 1.2e-5 low:
 * d = 1.2517e-5, the fuzzer's counterexample, kept in fuzz/regress/formats_roundtrip/) */
static void check_range(const float *x, const float *y, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) {
        float lo = x[r * n], hi = x[r * n];
        for (int64_t i = 1; i < n; i++) lo = fminf(lo, x[r * n + i]), hi = fmaxf(hi, x[r * n + i]);
        const float slack = (hi - lo) + 1e-3f * fmaxf(fabsf(lo), fabsf(hi)) + 63.0f * 31.0f * 0x1p-24f;
        for (int64_t i = 0; i < n; i++) FUZZ_ASSERT(isfinite(y[r * n + i]) && y[r * n + i] >= lo - slack && y[r * n + i] <= hi + slack);
    }
}

/* HIGGS and E8 scale their grid by the block's RMS, not to minimise the error: a 1-bit HIGGS row of -0.5s with a
 * few large values puts every small value at ±0.8·RMS, farther than zero (error 1.1 x the energy, the fuzzer's
 * counterexample higgs_p1_b1, kept in fuzz/regress/formats_roundtrip/). What holds is ||y|| <= g·||x|| with g the
 * grid's outermost point in RMS units (N(0,1)-optimal grids: below 4; ||y||/||x|| measured at most 0.8 over outlier
 * rows), so the bound asserted is ||y - x||^2 <= (1 + 4)^2 ||x||^2. */
static double error_factor(const kv_format *f) {
    return !strncmp(f->name, "higgs_", 6) || !strncmp(f->name, "e8_", 3) ? 25.0 : 1.0;
}

static void check_bound(const float *x, const float *y, int64_t rows, int64_t n, const float *w, double factor) {
    for (int64_t r = 0; r < rows; r++) {
        double e = 0, s = 0;
        for (int64_t i = 0; i < n; i++) {
            FUZZ_ASSERT(isfinite(y[r * n + i]));
            double d = (double)y[r * n + i] - x[r * n + i];
            e += d * d;
            s += (double)x[r * n + i] * x[r * n + i];
        }
        if (w) continue;
        if (!(e <= factor * s * (1 + 1e-6) + 1e-30)) {
            fprintf(stderr, "row %lld: error %g > energy %g; x[0..3] = %g %g %g %g, y = %g %g %g %g\n", (long long)r, e, s,
                    x[r * n], x[r * n + 1], x[r * n + 2], x[r * n + 3], y[r * n], y[r * n + 1], y[r * n + 2], y[r * n + 3]);
            FUZZ_ASSERT(e <= factor * s * (1 + 1e-6) + 1e-30);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 6) return 0;
    kv_format f;
    kv_error err;
    kv_error_clear(&err);
    if (kv_format_get(kv_format_list_name(data[0] % kv_format_list_count()), &f, &err) != KV_OK) abort();
    /* at most ~2K values per input: the codebook searches (HIGGS p = 4, E8) are slow under the sanitizers */
    int64_t n = (int64_t)f.block * (1 + data[1] % (f.block >= 128 ? 2 : 4));
    while (n < 32) n *= 2;
    const int64_t rows = 1 + (data[1] >> 7), total = rows * n;
    /* nonzero magnitudes in [2^(e-15), 2^e], e = 1..15: inside fp16's normal range, which the block scales of
     * most formats are stored in (below it a scale underflows, as in llama.cpp: no promise there) */
    const float scale = ldexpf(1.0f, 1 + data[2] % 15 - 15);
    const int with_importance = data[3] & 1;
    const uint8_t *v = data + 4;
    const size_t nv = (size - 4) / 2;
    const size_t rb = kv_format_row_bytes(&f, n);
    float *x = malloc(sizeof(float) * (size_t)total), *y1 = malloc(sizeof(float) * (size_t)total);
    float *y2 = malloc(sizeof(float) * (size_t)total), *imp = malloc(sizeof(float) * (size_t)n);
    uint8_t *q1 = malloc(rb * (size_t)rows), *q2 = malloc(rb * (size_t)rows);
    if (!x || !y1 || !y2 || !imp || !q1 || !q2) abort();
    for (int64_t i = 0; i < total; i++) {
        size_t k = (size_t)i % nv;
        x[i] = (float)(int16_t)(v[2 * k] | v[2 * k + 1] << 8) * scale;
    }
    for (int64_t i = 0; i < n; i++) imp[i] = fabsf(x[i]) / scale / 1024.0f;
    const float *w = with_importance ? imp : NULL;
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "format %s, %lld x %lld, importance %d\n", f.name, (long long)rows, (long long)n, with_importance);
    if (f.quantize(&f, x, q1, rows, n, w, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err); /* e.g. a format that refuses importance weights */
        goto done;
    }
    for (int64_t r = 0; r < rows; r++) f.dequantize(&f, q1 + (size_t)r * rb, y1 + r * n, n);
    kv_error_clear(&err);
    FUZZ_ASSERT(f.quantize(&f, y1, q2, rows, n, w, &err) == KV_OK);
    for (int64_t r = 0; r < rows; r++) f.dequantize(&f, q2 + (size_t)r * rb, y2 + r * n, n);
    if (grid_has_min(&f)) {
        check_range(x, y1, rows, n);
        check_range(y1, y2, rows, n);
    } else {
        check_bound(x, y1, rows, n, w, error_factor(&f));
        check_bound(y1, y2, rows, n, w, error_factor(&f));
    }
    if (!w) {
        promise p = promise_of(&f);
        if (p == PROMISE_BYTES && grid_has_min(&f) && offset_dwarfs_range(x, total, f.block)) p = PROMISE_BOUND;
        if (p == PROMISE_BYTES) FUZZ_ASSERT(!memcmp(q1, q2, rb * (size_t)rows));
        if (p == PROMISE_VALUES) FUZZ_ASSERT(!memcmp(y1, y2, sizeof(float) * (size_t)total));
    }
done:
    free(x);
    free(y1);
    free(y2);
    free(imp);
    free(q1);
    free(q2);
    return 0;
}
