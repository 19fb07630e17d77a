/* fuzz_study.c — libFuzzer target for the study spec reader (src/eval/study.c, kv_study_load): any bytes as a
 * spec file either load (then every cell has an id, a label and a known kind) or fail with a message; never a
 * crash, a leak or a partly built study. */
#include "kvant.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/kvant-fuzz-study-%d.json", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    kv_error err;
    kv_error_clear(&err);
    kv_study *s = NULL;
    if (kv_study_load(path, &s, &err) != KV_OK) {
        if (!err.message[0] || s) __builtin_trap();
    } else {
        if (kv_study_n_cells(s) <= 0) __builtin_trap();
        for (int64_t i = 0; i < kv_study_n_cells(s); i++)
            if (!kv_study_cell_label(s, i) || !kv_study_cell_label(s, i)[0]) __builtin_trap();
        kv_study_free(s);
    }
    unlink(path);
    return 0;
}
