/* fuzz_imatrix.c — libFuzzer target for the importance-matrix loader (src/algos/imatrix.c), both forms:
 * llama.cpp's legacy .dat and its GGUF imatrix (chosen by the "GGUF" magic, as kv_imatrix_load does).
 * An accepted file has at least one entry, unique names, and only finite, non-negative means: the values
 * go straight to the quantizers as importance weights. */
#include "fuzz_util.h"
#include "kvant.h"
#include <math.h>
#include <string.h>

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_imatrix *im = NULL;
    if (kv_imatrix_load(fuzz_file(data, size), &im, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        FUZZ_ASSERT(!im);
        return 0;
    }
    const int64_t n = kv_imatrix_n_entries(im);
    FUZZ_ASSERT(n > 0);
    for (int64_t i = 0; i < n; i++) {
        const char *name = kv_imatrix_entry_name(im, i);
        FUZZ_ASSERT(name && name[0]);
        int64_t nval = 0;
        const float *v = kv_imatrix_find(im, name, &nval);
        FUZZ_ASSERT(v && nval > 0);
        for (int64_t j = 0; j < nval; j++) FUZZ_ASSERT(isfinite(v[j]) && v[j] >= 0);
        for (int64_t k = 0; k < i && k < 64; k++) FUZZ_ASSERT(strcmp(kv_imatrix_entry_name(im, k), name));
        g_sink += (uint64_t)nval;
    }
    g_sink += (uint64_t)kv_imatrix_chunks(im);
    kv_imatrix_free(im);
    return 0;
}
