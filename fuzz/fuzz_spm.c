/* fuzz_spm.c — libFuzzer target for the SentencePiece tokenizer.model protobuf parser (src/model/tok_spm.c):
 * any accepted model must also tokenize and detokenize a fixed text without crashing. */
#include "kvant.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = NULL;
    if (kv_tokenizer_load_spm_memory(data, size, "fuzz.model", &tok, &err) != KV_OK) {
        if (!err.message[0]) __builtin_trap(); /* every rejection explains itself */
        return 0;
    }
    static const char text[] = "Hello world, 3.14 \xc3\xa9t\xc3\xa9\n\n  tabs\tand \xe2\x96\x81 bytes \xff!";
    int32_t *ids = NULL;
    size_t n = 0;
    if (kv_tokenize(tok, text, sizeof text - 1, 1, &ids, &n, &err) == KV_OK) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= kv_tokenizer_n_vocab(tok)) __builtin_trap();
        char *back = NULL;
        size_t len = 0;
        if (kv_detokenize(tok, ids, n, &back, &len, &err) == KV_OK) free(back);
        free(ids);
    }
    kv_tokenizer_free(tok);
    return 0;
}
