/* fuzz_ecw.c — libFuzzer target for the entropy-coded weight container (src/algos/entropy.c, docs/FORMAT.md
 * "kvant ECW", versions 2 and 3): arbitrary container bytes give a clean error or a matrix of valid weights.
 * An accepted container decodes identically serially and on a thread pool, the codes-only decode (v2)
 * agrees with the weights decode. With -DFUZZ_STRICT_FINITE also that the weights are finite: issue 15 makes
 * the decoder refuse non-finite side information; until that lands a NaN fp16 step still decodes to NaN. */
#include "fuzz_util.h"
#include "kvant.h"
#include <math.h>
#include <string.h>

static kv_pool *g_pool;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_pool) g_pool = kv_pool_create(2);
    kv_error err;
    kv_error_clear(&err);
    int64_t rows = 0, cols = 0;
    int version = 0;
    if (kv_ecw_check(data, size, &rows, &cols, &version, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        return 0;
    }
    FUZZ_ASSERT(rows > 0 && cols > 0 && (version == 2 || version == 3));
    if (rows * cols > (1 << 18)) return 0; /* bounded work per input */
    const size_t n = (size_t)(rows * cols);
    float *w1 = malloc(n * sizeof(float)), *w2 = malloc(n * sizeof(float));
    int32_t *z = malloc(n * sizeof(int32_t));
    if (!w1 || !w2 || !z) abort();
    kv_status s1 = kv_ecw_decode_f32(data, size, rows, cols, w1, NULL, &err);
    if (s1 != KV_OK) FUZZ_REQUIRE_MESSAGE(err);
    kv_error_clear(&err);
    kv_status s2 = kv_ecw_decode_f32(data, size, rows, cols, w2, g_pool, &err);
    FUZZ_ASSERT(s1 == s2);
    if (s1 == KV_OK) {
        FUZZ_ASSERT(!memcmp(w1, w2, n * sizeof(float)));
#ifdef FUZZ_STRICT_FINITE
        for (size_t i = 0; i < n; i++) FUZZ_ASSERT(isfinite(w1[i]));
#endif
        int64_t r = 0, c = 0;
        kv_error_clear(&err);
        FUZZ_ASSERT(kv_ecw_decode(data, size, &r, &c, z, w2, &err) == KV_OK && r == rows && c == cols);
        FUZZ_ASSERT(!memcmp(w1, w2, n * sizeof(float)));
    }
    free(w1);
    free(w2);
    free(z);
    return 0;
}
