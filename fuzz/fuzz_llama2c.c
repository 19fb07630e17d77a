/* fuzz_llama2c.c — libFuzzer target for model-file opening through kv_model_open (src/io/model_file.c):
 * the bytes are sniffed as any single-file model (llama2.c checkpoint, GGUF model with its hyper-parameters,
 * lone safetensors); the seeds are llama2.c checkpoints (src/io/llama2c.c) and small GGUF models. An
 * accepted file's tensors must lie inside it with sizes that match their shapes, and the first and last row
 * of each must decode (or be refused with a message). */
#include "fuzz_util.h"
#include "kvant.h"
#include <math.h>
#include <string.h>

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_model_file *mf = NULL;
    if (kv_model_open(fuzz_file(data, size), &mf, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        return 0;
    }
    /* a GGUF of another architecture opens for inspection (tensors, partial hyper-parameters); a runnable one
     * has them all */
    const kv_hparams *hp = kv_model_hparams(mf);
    const int runnable = hp && (kv_model_format(mf) == KV_FILE_LLAMA2C ||
                                (kv_model_n_tensors(mf) > 0 && (!strcmp(hp->arch, "llama") ||
                                                                !strcmp(hp->arch, "mistral") || !strcmp(hp->arch, "qwen2"))));
    if (runnable) {
        FUZZ_ASSERT(hp->n_embd > 0 && hp->n_layer > 0 && hp->n_head > 0 && hp->n_head_kv > 0 && hp->n_ff > 0);
        FUZZ_ASSERT(hp->head_dim > 0 && hp->n_head % hp->n_head_kv == 0);
    }
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        int64_t ne = kv_tensor_nelements(t);
        FUZZ_ASSERT(ne >= 0);
        if (t->nbytes) {
            const uint8_t *p = t->data;
            g_sink += p[0] + p[t->nbytes - 1];
        }
        int64_t row = t->n_dims ? t->shape[t->n_dims - 1] : 1;
        if (row <= 0 || row > (1 << 16) || t->type == KV_TYPE_ECW) continue;
        int64_t rows = ne / row;
        float *buf = malloc(sizeof(float) * (size_t)row);
        if (!buf) continue;
        for (int k = 0; k < 2 && rows > 0; k++) {
            kv_error e2;
            kv_error_clear(&e2);
            if (kv_model_tensor_row_f32(mf, t, k ? rows - 1 : 0, buf, &e2) == KV_OK) g_sink += (uint64_t)(buf[0] == buf[0]);
            else FUZZ_REQUIRE_MESSAGE(e2);
        }
        free(buf);
    }
    kv_model_close(mf);
    return 0;
}
