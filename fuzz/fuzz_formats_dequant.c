/* fuzz_formats_dequant.c — libFuzzer target for the number formats' decoders (src/formats): arbitrary bytes
 * as one packed row of any format kvant computes must dequantize (and dot with a vector) without reading or
 * writing outside the row and its n outputs, and without undefined behaviour (UBSan: shifts, float-to-int
 * casts). Input: byte 0 picks the format from the `kvant formats` list, byte 1 the row length (1..8 blocks),
 * the rest is the row (repeated to its size). Byte 0 = 255: the rest is a format name for kv_format_get
 * (names also come from files: GGUF "kvant.tensor.NAME.format", ECW v3 headers), decoded on a zero row. */
#include "fuzz_util.h"
#include "kvant.h"
#include <string.h>

static volatile float g_sink;

static void decode_row(const kv_format *f, int64_t n, const uint8_t *bytes, size_t nbytes) {
    const size_t rb = kv_format_row_bytes(f, n);
    FUZZ_ASSERT(rb > 0);
    uint8_t *row = malloc(rb); /* exactly the row: ASan sees any overrun */
    float *out = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)n);
    if (!row || !out || !x) abort();
    for (size_t i = 0; i < rb; i++) row[i] = nbytes ? bytes[i % nbytes] : 0;
    for (int64_t i = 0; i < n; i++) x[i] = (float)(i % 7) - 3.0f;
    f->dequantize(f, row, out, n);
    g_sink += out[0] + out[n - 1];
    if (f->dot) g_sink += (float)f->dot(f, row, x, n);
    free(row);
    free(out);
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    kv_format f;
    kv_error err;
    kv_error_clear(&err);
    if (data[0] == 255) {
        char name[64];
        size_t len = size - 1 < sizeof name - 1 ? size - 1 : sizeof name - 1;
        memcpy(name, data + 1, len);
        name[len] = 0;
        if (kv_format_get(name, &f, &err) != KV_OK) {
            FUZZ_REQUIRE_MESSAGE(err);
            return 0;
        }
        FUZZ_ASSERT(f.block > 0 && f.block_bytes > 0 && f.row_header_bytes >= 0 && f.dequantize && f.quantize);
        if (f.block > 4096) return 0;
        decode_row(&f, (int64_t)f.block * 2, NULL, 0);
        return 0;
    }
    const char *name = kv_format_list_name(data[0] % kv_format_list_count());
    if (kv_format_get(name, &f, &err) != KV_OK) abort();
    int64_t n = (int64_t)f.block * (1 + data[1] % 8);
    while (n < 16) n *= 2;
    decode_row(&f, n, data + 2, size - 2);
    return 0;
}
