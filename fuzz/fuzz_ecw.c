/* fuzz_ecw.c — libFuzzer target for the entropy-coded weight container (src/formats/ecw.c, docs/FORMAT.md
 * "kvant ECW", versions 4 and 5): arbitrary container bytes give a clean error or a matrix of finite weights.
 * An accepted container decodes identically serially and on a thread pool, the codes-only and verify-only
 * decodes agree with the weights decode, and re-encoding the decoded codes (version 4) gives a container that
 * decodes to the same codes. Most mutations break a checksum, so each input runs twice: as it is, and with its
 * checksums recomputed (when its layout lets them be found), which lets the fuzzer reach the tables, side
 * information, rANS states and stream ends behind them. */
#include "fuzz_util.h"
#include "kvant.h"
#include <math.h>
#include <string.h>

static kv_pool *g_pool;

static uint32_t crc32_bitwise(const uint8_t *p, size_t n) {
    uint32_t r = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        r ^= p[i];
        for (int k = 0; k < 8; k++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1)));
    }
    return r ^ 0xFFFFFFFFu;
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* Recomputes the checksums of a container laid out as docs/FORMAT.md says; leaves anything else alone. */
static void reseal(uint8_t *b, size_t size) {
    if (size < 32 || memcmp(b, "KVEC", 4)) return;
    uint32_t version = rd32(b + 4), ng = rd32(b + 24), rps = rd32(b + 28);
    uint64_t rows = rd64(b + 8), cols = rd64(b + 16);
    if ((version != 4 && version != 5) || ng == 0 || ng > 16 || rps == 0 || rows == 0 || cols == 0 ||
        rows > (1u << 20) || cols > (1u << 20))
        return;
    uint64_t off = 32, rowp = 0;
    if (version == 5) {
        if (size < off + 64) return;
        uint32_t g = rd32(b + 32 + 52), H = rd32(b + 32 + 56), P = rd32(b + 32 + 60);
        if (g == 0 || H > 64 || P > 64) return;
        rowp = H + (cols / g) * P;
        off += 64;
    }
    for (uint32_t k = 0; k < ng; k++) {
        if (off + 8 > size) return;
        off += 8 + 4ull * rd32(b + off + 4);
    }
    uint64_t ns = (rows + rps - 1) / rps;
    off += cols + (version == 5 ? rowp * rows : 2 * (cols + rows));
    uint64_t sizes = off, crcs = sizes + 4 * ns, hcrc = crcs + 4 * ns, at = hcrc + 4;
    if (hcrc + 4 > size) return;
    for (uint64_t s = 0; s < ns; s++) {
        uint32_t len = rd32(b + sizes + 4 * s);
        if (len > size - at) return;
        wr32(b + crcs + 4 * s, crc32_bitwise(b + at, len));
        at += len;
    }
    wr32(b + hcrc, crc32_bitwise(b, (size_t)hcrc));
}

static void one_container(uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    int64_t rows = 0, cols = 0;
    int version = 0;
    if (kv_ecw_check(data, size, &rows, &cols, &version, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        return;
    }
    FUZZ_ASSERT(rows > 0 && cols > 0 && (version == 4 || version == 5));
    if (rows * cols > (1 << 18)) return; /* bounded work per input */
    const size_t n = (size_t)(rows * cols);
    float *w1 = malloc(n * sizeof(float)), *w2 = malloc(n * sizeof(float));
    int32_t *z = malloc(n * sizeof(int32_t)), *z2 = malloc(n * sizeof(int32_t));
    if (!w1 || !w2 || !z || !z2) abort();
    kv_status s1 = kv_ecw_decode_f32(data, size, rows, cols, w1, NULL, &err);
    if (s1 != KV_OK) FUZZ_REQUIRE_MESSAGE(err);
    kv_error_clear(&err);
    kv_status s2 = kv_ecw_decode_f32(data, size, rows, cols, w2, g_pool, &err);
    FUZZ_ASSERT(s1 == s2);
    kv_error_clear(&err);
    kv_status s3 = kv_ecw_decode(data, size, NULL, NULL, NULL, NULL, &err); /* verify only */
    FUZZ_ASSERT((s3 == KV_OK) == (s1 == KV_OK) || s1 == KV_ENOMEM);
    if (s1 == KV_OK) {
        FUZZ_ASSERT(!memcmp(w1, w2, n * sizeof(float)));
        for (size_t i = 0; i < n; i++) FUZZ_ASSERT(isfinite(w1[i])); /* side information is checked finite */
        int64_t r = 0, c = 0;
        kv_error_clear(&err);
        FUZZ_ASSERT(kv_ecw_decode(data, size, &r, &c, z, w2, &err) == KV_OK && r == rows && c == cols);
        FUZZ_ASSERT(!memcmp(w1, w2, n * sizeof(float)));
        if (version == 4) { /* the codes re-encode (fp16 side information 1.0) and decode back */
            uint16_t *one = malloc(sizeof(uint16_t) * (size_t)(rows > cols ? rows : cols));
            if (!one) abort();
            for (int64_t i = 0; i < (rows > cols ? rows : cols); i++) one[i] = 0x3C00;
            uint8_t *blob = NULL;
            size_t bn = 0;
            kv_error_clear(&err);
            kv_status se = kv_ecw_encode(z, rows, cols, one, one, &blob, &bn, &err);
            if (se == KV_OK) {
                FUZZ_ASSERT(kv_ecw_decode(blob, bn, NULL, NULL, z2, NULL, &err) == KV_OK);
                FUZZ_ASSERT(!memcmp(z, z2, n * sizeof(int32_t)));
            } else {
                FUZZ_ASSERT(se == KV_ERANGE); /* codes spanning more than 2^15 values in a group */
            }
            free(blob);
            free(one);
        }
    }
    free(w1);
    free(w2);
    free(z);
    free(z2);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size) {
    if (!g_pool) g_pool = kv_pool_create(2);
    uint8_t *data = malloc(size ? size : 1);
    if (!data) abort();
    memcpy(data, in, size);
    one_container(data, size);
    reseal(data, size);
    if (memcmp(data, in, size)) one_container(data, size);
    free(data);
    return 0;
}
