/* fuzz_hf_config.c — libFuzzer target for Hugging Face config.json → hyper-parameters (src/io/hf.c
 * kv_hf_config_to_hparams, on the JSON parser's DOM): accepted hyper-parameters are in range, heads divide
 * the width unless head_dim is explicit, and rope scaling factors are finite. */
#include "fuzz_util.h"
#include "io/json.h"
#include "io/model_file.h"
#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_json_doc *doc = NULL;
    kv_json_opts opts = {"config.json", 0, 1 << 20, 0};
    if (kv_json_parse((const char *)data, size, &opts, &doc, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        return 0;
    }
    kv_hparams hp;
    kv_error_clear(&err);
    if (kv_hf_config_to_hparams(kv_json_root(doc), "config.json", &hp, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
    } else {
        FUZZ_ASSERT(hp.arch[0]);
        FUZZ_ASSERT(hp.n_embd > 0 && hp.n_layer > 0 && hp.n_head > 0 && hp.n_head_kv > 0 && hp.n_vocab > 0);
        FUZZ_ASSERT(hp.n_head % hp.n_head_kv == 0);
        FUZZ_ASSERT(hp.head_dim > 0 && hp.n_ff > 0);
        FUZZ_ASSERT(isfinite(hp.rope_theta) && hp.rope_theta > 0 && isfinite(hp.norm_eps) && hp.norm_eps > 0);
        if (hp.rope_scaling != KV_ROPE_SCALING_NONE) FUZZ_ASSERT(isfinite(hp.rope_factor) && hp.rope_factor > 0);
    }
    kv_json_free(doc);
    return 0;
}
