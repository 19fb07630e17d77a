/* fuzz_logits.c — libFuzzer target for the logits file of `eval --save-logits` (src/eval/kld.c
 * kv_logprobs_load, docs/FORMAT.md "kvant logits file"). An accepted file's header agrees with its size;
 * when its vocabulary is that of a tiny built-in model (a llama2.c checkpoint made here, vocab 8), the
 * KL-divergence against it is computed as `eval --kld` does: an error, or finite statistics. */
#include "fuzz_util.h"
#include "eval/eval.h"
#include <math.h>
#include <string.h>

enum { DIM = 8, HIDDEN = 16, LAYERS = 1, HEADS = 2, VOCAB = 8, SEQ = 64 };

static kv_model_file *g_mf;
static kv_model *g_model;

/* A llama2.c checkpoint of a tiny model with deterministic weights, in its own memfd. */
static void make_model(void) {
    const int64_t floats = (int64_t)VOCAB * DIM + LAYERS * (DIM + 4 * DIM * DIM + DIM + 3 * DIM * HIDDEN) + DIM +
                           2 * (SEQ * (DIM / HEADS) / 2);
    size_t size = 28 + 4 * (size_t)floats;
    uint8_t *b = calloc(1, size);
    const int32_t h[7] = {DIM, HIDDEN, LAYERS, HEADS, HEADS, VOCAB, SEQ};
    for (int i = 0; i < 7; i++) kv_wr_u32(b + 4 * i, (uint32_t)h[i]);
    uint32_t s = 12345;
    for (int64_t i = 0; i < floats; i++) {
        s = s * 1664525u + 1013904223u;
        kv_wr_f32(b + 28 + 4 * i, ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.8f);
    }
    int fd = memfd_create("kvant-fuzz-model", MFD_CLOEXEC);
    if (fd < 0 || write(fd, b, size) != (ssize_t)size) abort();
    free(b);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    kv_error err;
    if (kv_model_open(path, &g_mf, &err) != KV_OK || kv_model_load(g_mf, NULL, &g_model, &err) != KV_OK) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_model) make_model();
    kv_error err;
    kv_error_clear(&err);
    kv_logprobs *lp = NULL;
    if (kv_logprobs_load(fuzz_file(data, size), &lp, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        FUZZ_ASSERT(!lp);
        return 0;
    }
    FUZZ_ASSERT(lp->n_vocab > 0 && lp->rec_bytes == kv_logprobs_rec_bytes(lp->n_vocab));
    FUZZ_ASSERT(KV_LOGPROBS_HEADER_BYTES + 4 * (uint64_t)lp->n_ids + (uint64_t)lp->n_scored * lp->rec_bytes == size);
    if (lp->n_vocab == VOCAB && lp->n_ids <= 4096) {
        kv_eval_result r;
        kv_error_clear(&err);
        if (kv_eval_kld(g_model, lp, NULL, &r, &err) == KV_OK) {
            FUZZ_ASSERT(r.has_kld && r.kld.n == lp->n_scored);
#ifdef FUZZ_STRICT_FINITE
            FUZZ_ASSERT(isfinite(r.kld.mean) && isfinite(r.ppl));
#endif
        } else {
            FUZZ_REQUIRE_MESSAGE(err);
        }
    }
    kv_logprobs_free(lp);
    return 0;
}
