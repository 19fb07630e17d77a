/* fuzz_tokenizer_json.c — libFuzzer target for Hugging Face tokenizer.json loading (byte-level BPE,
 * src/model/tokenizer.c) on the bytes, then encoding a fixed text (ASCII, UTF-8, malformed bytes, a special
 * token written out) and decoding it back; every merge must name two valid pieces. */
#include "fuzz_util.h"
#include "kvant.h"
#include <string.h>

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_tokenizer *tok = NULL;
    if (kv_tokenizer_load_hf_json_memory(data, size, "tokenizer.json", &tok, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        FUZZ_ASSERT(!tok);
        return 0;
    }
    const int32_t nv = kv_tokenizer_n_vocab(tok);
    FUZZ_ASSERT(nv > 0);
    for (int64_t r = 0; r < kv_tokenizer_n_merges(tok) && r < 4096; r++) {
        int32_t a, b;
        FUZZ_ASSERT(kv_tokenizer_merge(tok, r, &a, &b, NULL) == KV_OK);
        FUZZ_ASSERT(a >= 0 && a < nv && b >= 0 && b < nv);
    }
    static const char text[] = "Hello world, it's 3.14 \xc3\xa9t\xc3\xa9 <|endoftext|>\n\n  tabs\tand \xe2\x96\x81 \xff bytes!";
    int32_t *ids = NULL;
    size_t n = 0;
    kv_error_clear(&err);
    if (kv_tokenize(tok, text, sizeof text - 1, kv_tokenizer_bos(tok) >= 0, &ids, &n, &err) == KV_OK) {
        for (size_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < nv);
        char *back = NULL;
        size_t len = 0;
        if (kv_detokenize(tok, ids, n, &back, &len, &err) == KV_OK) {
            FUZZ_ASSERT(back[len] == 0);
            free(back);
        }
        for (size_t i = 0; i < n; i++) {
            char buf[64];
            g_sink += kv_token_to_text(tok, ids[i], buf, sizeof buf);
        }
        free(ids);
    } else {
        FUZZ_REQUIRE_MESSAGE(err);
    }
    kv_tokenizer_free(tok);
    return 0;
}
