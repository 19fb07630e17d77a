/* fuzz_logits.c — libFuzzer target for the logits file of `eval --save-logits` (src/eval/kld.c
 * kv_logprobs_load, docs/FORMAT.md "kvant logits file"). An accepted file's header agrees with its size;
 * when its vocabulary is that of a tiny built-in model (fuzz_tiny_model_path, vocab 8), the
 * KL-divergence against it is computed as `eval --kld` does: an error, or finite statistics (the loader refuses
 * NaN/Inf records). */
#include "fuzz_util.h"
#include "eval/eval.h"
#include <math.h>
#include <string.h>

enum { VOCAB = 8 };

static kv_model_file *g_mf;
static kv_model *g_model;

static void make_model(void) {
    kv_error err;
    if (kv_model_open(fuzz_tiny_model_path(), &g_mf, &err) != KV_OK || kv_model_load(g_mf, NULL, &g_model, &err) != KV_OK)
        abort();
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
            FUZZ_ASSERT(isfinite(r.kld.mean) && isfinite(r.ppl));
        } else {
            FUZZ_REQUIRE_MESSAGE(err);
        }
    }
    kv_logprobs_free(lp);
    return 0;
}
