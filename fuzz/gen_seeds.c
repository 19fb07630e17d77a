/* gen_seeds.c — writes small valid seed inputs for the fuzz targets (run by fuzz/run.sh; not a fuzz target):
 *   DIR/gguf/NAME.gguf     GGUF files made with kvant's own writer (every value type, nested arrays, tensors
 *                          of plain and block types, alignment 32 and 64, a vocab-like array of strings,
 *                          an entropy-coded (ecw) tensor);
 *   DIR/safetensors/NAME   safetensors files (header JSON + byte buffer) of several dtypes and shapes;
 *   DIR/json/NAME.json     JSON texts exercising escapes, surrogate pairs, numbers and nesting.
 * usage: gen_seeds DIR */
#include "io/gguf.h"
#include <stdio.h>
#include <sys/stat.h>

static int write_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int gguf_seed(const char *dir, const char *name, uint32_t alignment, int n_tensors, int with_arrays) {
    kv_error err;
    kv_gguf_writer *w;
    if (kv_gguf_writer_create(&w, &err)) return -1;
    kv_status st = kv_gguf_writer_add_str(w, "general.architecture", "llama", &err);
    if (!st && alignment != 32) st = kv_gguf_writer_add_u32(w, "general.alignment", alignment, &err);
    if (!st) st = kv_gguf_writer_add_u32(w, "llama.block_count", 2, &err);
    if (!st) st = kv_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f, &err);
    if (!st) st = kv_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 1, &err);
    if (!st) st = kv_gguf_writer_add_i64(w, "t.i64", -5, &err);
    if (!st) st = kv_gguf_writer_add_u64(w, "t.u64", 5, &err);
    if (!st) st = kv_gguf_writer_add_f64(w, "t.f64", 0.25, &err);
    if (!st) st = kv_gguf_writer_add_i8(w, "t.i8", -1, &err);
    if (!st) st = kv_gguf_writer_add_u16(w, "t.u16", 7, &err);
    if (!st) st = kv_gguf_writer_add_i16(w, "t.i16", -7, &err);
    if (!st) st = kv_gguf_writer_add_u8(w, "t.u8", 7, &err);
    if (!st) st = kv_gguf_writer_add_str(w, "general.name", "seed \xf0\x9f\xa6\x99", &err);
    if (with_arrays) {
        static const char *const toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81the", "a", "b", ""};
        static const float scores[7] = {0, 0, 0, -1, -2, -3, -4};
        static const int32_t types[7] = {2, 3, 3, 1, 1, 1, 1};
        if (!st) st = kv_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 7, &err);
        if (!st) st = kv_gguf_writer_add_arr(w, "tokenizer.ggml.scores", KV_GGUF_F32, scores, 7, &err);
        if (!st) st = kv_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KV_GGUF_I32, types, 7, &err);
        if (!st) st = kv_gguf_writer_begin_array(w, "t.nested", KV_GGUF_ARRAY, &err);
        if (!st) st = kv_gguf_writer_add_arr(w, NULL, KV_GGUF_I32, types, 3, &err);
        if (!st) st = kv_gguf_writer_add_arr_str(w, NULL, NULL, NULL, 0, &err);
        if (!st) st = kv_gguf_writer_end_array(w, &err);
    }
    static uint8_t data[4 * 34 * 2 + 512];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 37 + 11);
    static const int64_t s_f32[2] = {2, 8}, s_q8[2] = {2, 64}, s_bf16[3] = {2, 2, 4}, s_f16[1] = {5};
    if (!st && n_tensors > 0) st = kv_gguf_writer_add_tensor(w, "token_embd.weight", 2, s_f32, KV_TYPE_F32, data, &err);
    if (!st && n_tensors > 1) st = kv_gguf_writer_add_tensor(w, "blk.0.attn_q.weight", 2, s_q8, KV_TYPE_Q8_0, data, &err);
    if (!st && n_tensors > 2) st = kv_gguf_writer_add_tensor(w, "blk.0.ffn_up.weight", 3, s_bf16, KV_TYPE_BF16, data, &err);
    if (!st && n_tensors > 3) st = kv_gguf_writer_add_tensor(w, "output_norm.weight", 1, s_f16, KV_TYPE_F16, data, &err);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!st) st = kv_gguf_writer_write(w, path, NULL, &err);
    kv_gguf_writer_free(w);
    if (st) {
        char buf[1200];
        fprintf(stderr, "gen_seeds: %s\n", kv_error_format(&err, buf, sizeof buf));
        return -1;
    }
    return 0;
}

static int safetensors_seed(const char *dir, const char *name, const char *header, size_t data_bytes) {
    uint8_t buf[4096];
    size_t hl = strlen(header);
    if (8 + hl + data_bytes > sizeof buf) return -1;
    kv_wr_u64(buf, hl);
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_bytes; i++) buf[8 + hl + i] = (uint8_t)(i * 13 + 1);
    return write_file(dir, name, buf, 8 + hl + data_bytes);
}

static const char *const k_json[] = {
    "{}",
    "[]",
    "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}",
    "{\"s\":\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83e\\udd99 \\u0000\"}",
    "[0,-0,1.5,-2.5e10,1E-7,123456789012345678901234567890,9007199254740993,-9223372036854775808]",
    "[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]",
    ("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"num_attention_heads\":8,"
     "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0},\"torch_dtype\":\"bfloat16\"}"),
    "  \"just a string with UTF-8 \xc3\xa9\xe2\x82\xac\"  ",
    "{\"dup\":1,\"dup\":2}",
};

/* A GGUF with an entropy-coded tensor (type 1031, docs/FORMAT.md "kvant ECW"): version 2 codes of a small
 * matrix, so the fuzzer reaches the container checks and, through fuzz_gguf's decode, the rANS streams. */
static int ecw_seed(const char *dir, const char *name) {
    enum { R = 8, C = 16 };
    int32_t z[R * C];
    uint16_t cs[C], rs[R];
    for (int i = 0; i < R * C; i++) z[i] = (i * 7 % 5) - 2;
    for (int i = 0; i < C; i++) cs[i] = kv_fp32_to_fp16(0.5f + 0.01f * (float)i);
    for (int i = 0; i < R; i++) rs[i] = kv_fp32_to_fp16(1.0f);
    uint8_t *blob = NULL;
    size_t size = 0;
    kv_error err;
    kv_error_clear(&err);
    kv_gguf_writer *w = NULL;
    kv_status st = kv_ecw_encode(z, R, C, cs, rs, &blob, &size, &err);
    if (!st) st = kv_gguf_writer_create(&w, &err);
    if (!st) st = kv_gguf_writer_add_str(w, "general.name", "ecw seed", &err);
    if (!st) st = kv_gguf_writer_add_tensor_ecw(w, "blk.0.attn_q.weight", R, C, blob, size, &err);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!st) st = kv_gguf_writer_write(w, path, NULL, &err);
    kv_gguf_writer_free(w);
    free(blob);
    if (st) {
        char buf[1200];
        fprintf(stderr, "gen_seeds: %s\n", kv_error_format(&err, buf, sizeof buf));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds DIR\n");
        return 2;
    }
    char d_gguf[900], d_st[900], d_json[900];
    snprintf(d_gguf, sizeof d_gguf, "%s/gguf", argv[1]);
    snprintf(d_st, sizeof d_st, "%s/safetensors", argv[1]);
    snprintf(d_json, sizeof d_json, "%s/json", argv[1]);
    mkdir(argv[1], 0755), mkdir(d_gguf, 0755), mkdir(d_st, 0755), mkdir(d_json, 0755);
    int bad = 0;
    bad |= gguf_seed(d_gguf, "meta-only.gguf", 32, 0, 1);
    bad |= gguf_seed(d_gguf, "tensors-a32.gguf", 32, 4, 0);
    bad |= gguf_seed(d_gguf, "all-a64.gguf", 64, 4, 1);
    bad |= gguf_seed(d_gguf, "one-tensor-a8.gguf", 8, 1, 0);
    bad |= ecw_seed(d_gguf, "ecw.gguf");
    bad |= safetensors_seed(d_st, "f32.safetensors",
                            "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
    bad |= safetensors_seed(d_st, "mixed.safetensors",
                            "{\"__metadata__\":{\"format\":\"pt\"},"
                            "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                            "\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
                            "\"c\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[16,24]}}",
                            24);
    bad |= safetensors_seed(d_st, "empty.safetensors", "{}", 0);
    bad |= safetensors_seed(d_st, "zero-dim.safetensors",
                            "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]}}      ", 0);
    for (size_t i = 0; i < sizeof k_json / sizeof k_json[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "seed%zu.json", i);
        bad |= write_file(d_json, name, k_json[i], strlen(k_json[i]));
    }
    return bad ? 1 : 0;
}
