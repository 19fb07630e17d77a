/* fuzz_study.c — libFuzzer target for the study spec reader (src/eval/study.c, kv_study_load) through a memfd
 * (fuzz_util.h): any bytes either load (then the study has cells, each with a label) or fail with a message;
 * never a crash, a leak or a partly built study. */
#include "fuzz_util.h"
#include "kvant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    if (!path) return 0;
    kv_error err;
    kv_error_clear(&err);
    kv_study *s = NULL;
    if (kv_study_load(path, &s, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        FUZZ_ASSERT(s == NULL);
        return 0;
    }
    FUZZ_ASSERT(kv_study_n_cells(s) > 0);
    for (int64_t i = 0; i < kv_study_n_cells(s); i++) FUZZ_ASSERT(kv_study_cell_label(s, i) && kv_study_cell_label(s, i)[0]);
    kv_study_free(s);
    return 0;
}
