/* gen_seeds.c — writes small valid seed inputs for the fuzz targets (run by fuzz/run.sh; not a fuzz target):
 *   DIR/gguf/NAME.gguf     GGUF files made with kvant's own writer (every value type, nested arrays, tensors
 *                          of plain and block types, alignment 32 and 64, a vocab-like array of strings,
 *                          an entropy-coded (ecw) tensor, a rotated ggml-typed (1032) tensor);
 *   DIR/safetensors/NAME   safetensors files (header JSON + byte buffer) of several dtypes and shapes;
 *   DIR/json/NAME.json     JSON texts exercising escapes, surrogate pairs, numbers and nesting;
 *   DIR/imatrix/           importance matrices saved by kvant in both forms (.dat, GGUF);
 *   DIR/llama2c/           tiny llama2.c checkpoints (shared and unshared classifier) and their GGUF conversion;
 *   DIR/logits/            logits files (hf and llamacpp window styles, vocab 8: the size fuzz_logits' model has);
 *   DIR/alphas/            sensitivity files written by kv_sens_save;
 *   DIR/hf_config/         config.json texts (Llama, Mistral, Qwen2, rope scaling variants);
 *   DIR/tokenizer_json/    small byte-level BPE tokenizer.json files (GPT-2 and Llama-3 pre-tokenizers);
 *   DIR/ecw/               entropy-coded containers of versions 4 and 5;
 *   DIR/recipe/            quantize recipes (JSON) using every key;
 *   DIR/formats_dequant/, DIR/formats_roundtrip/  one valid input per format (and format names).
 * usage: gen_seeds DIR */
#include "io/gguf.h"
#include "eval/eval.h"
#include <math.h>
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

/* Writes the seed built in w as DIR/NAME unless building it failed (st), frees w; -1 with a message on failure. */
static int finish_gguf_seed(kv_gguf_writer *w, kv_status st, const char *dir, const char *name, kv_error *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!st) st = kv_gguf_writer_write(w, path, NULL, err);
    kv_gguf_writer_free(w);
    if (st) {
        char buf[1200];
        fprintf(stderr, "gen_seeds: %s\n", kv_error_format(err, buf, sizeof buf));
        return -1;
    }
    return 0;
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
    return finish_gguf_seed(w, st, dir, name, &err);
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

/* A GGUF with a rotated ggml-typed weight (type 1032, docs/FORMAT.md "1032"): q8_0 rows under the kvant id, the
 * format named in metadata and the online rotation recorded, so the fuzzer reaches the rotated-type checks. */
static int rotated_seed(const char *dir, const char *name) {
    kv_error err;
    kv_gguf_writer *w;
    if (kv_gguf_writer_create(&w, &err)) return -1;
    static uint8_t data[2 * 2 * 34];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 29 + 3);
    static const int64_t shape[2] = {2, 64};
    const char *t = "blk.0.attn_q.weight";
    char key[256];
    kv_status st = kv_gguf_writer_add_str(w, "general.architecture", "llama", &err);
    snprintf(key, sizeof key, "%s%s%s", KV_GGUF_KVANT_FORMAT_PREFIX, t, KV_GGUF_KVANT_FORMAT_SUFFIX);
    if (!st) st = kv_gguf_writer_add_str(w, key, "q8_0", &err);
    snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, t);
    if (!st) st = kv_gguf_writer_add_u32(w, key, 64, &err);
    snprintf(key, sizeof key, KV_META_RHT_SEED_FMT, t);
    if (!st) st = kv_gguf_writer_add_u64(w, key, 7, &err);
    if (!st) st = kv_gguf_writer_add_tensor(w, t, 2, shape, KV_TYPE_ROTATED, data, &err);
    return finish_gguf_seed(w, st, dir, name, &err);
}

/* A GGUF with an entropy-coded tensor (type 1031, docs/FORMAT.md "kvant ECW"): version 4 codes of a small
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

static int report(kv_status st, const kv_error *err, const char *what) {
    if (st == KV_OK) return 0;
    char buf[1200];
    fprintf(stderr, "gen_seeds: %s: %s\n", what, kv_error_format(err, buf, sizeof buf));
    return -1;
}

static const char *subdir(const char *root, const char *name) {
    static char path[8][900];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 900, "%s/%s", root, name);
    mkdir(p, 0755);
    return p;
}

static float pseudo(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

static int imatrix_seeds(const char *dir) {
    kv_error err;
    kv_error_clear(&err);
    int bad = 0;
    for (int variant = 0; variant < 2; variant++) {
        kv_imatrix *im = NULL;
        kv_status st = kv_imatrix_create(&im, &err);
        float x[3 * 16];
        uint32_t s = 7 + (uint32_t)variant;
        for (int i = 0; i < 3 * 16; i++) x[i] = pseudo(&s);
        if (!st) st = kv_imatrix_accumulate(im, "blk.0.attn_q.weight", x, 3, 16, &err);
        if (!st && variant) st = kv_imatrix_accumulate(im, "blk.0.ffn_down.weight", x, 1, 48, &err);
        if (!st) kv_imatrix_end_chunk(im);
        if (!st) kv_imatrix_set_dataset(im, "seed.txt");
        char path[1000];
        snprintf(path, sizeof path, "%s/im%d.dat", dir, variant);
        if (!st) st = kv_imatrix_save(im, path, &err);
        snprintf(path, sizeof path, "%s/im%d.gguf", dir, variant);
        if (!st) st = kv_imatrix_save(im, path, &err);
        kv_imatrix_free(im);
        bad |= report(st, &err, "imatrix");
    }
    return bad;
}

/* llama2.c: 7 int32 then fp32 weights (src/io/llama2c.c); vocab < 0: unshared classifier. */
static int llama2c_seed(const char *dir, const char *name, int dim, int hidden, int layers, int heads, int kv_heads,
                        int vocab, int seq) {
    int V = vocab < 0 ? -vocab : vocab, hs = dim / heads;
    int64_t floats = (int64_t)V * dim +
                     (int64_t)layers * (dim + dim * dim + 2 * (int64_t)dim * (hs * kv_heads) + dim * dim + dim +
                                        3 * (int64_t)dim * hidden) +
                     dim + 2 * (int64_t)seq * hs / 2 + (vocab < 0 ? (int64_t)V * dim : 0);
    size_t size = 28 + 4 * (size_t)floats;
    uint8_t *b = calloc(1, size);
    if (!b) return -1;
    const int32_t h[7] = {dim, hidden, layers, heads, kv_heads, vocab, seq};
    for (int i = 0; i < 7; i++) kv_wr_u32(b + 4 * i, (uint32_t)h[i]);
    uint32_t s = 99;
    for (int64_t i = 0; i < floats; i++) kv_wr_f32(b + 28 + 4 * i, pseudo(&s));
    int rc = write_file(dir, name, b, size);
    free(b);
    return rc;
}

static int llama2c_seeds(const char *dir) {
    int bad = llama2c_seed(dir, "tiny-shared.bin", 8, 16, 1, 2, 2, 8, 8);
    bad |= llama2c_seed(dir, "tiny-gqa-unshared.bin", 16, 24, 2, 4, 2, -12, 4);
    char src[1000], dst[1000];
    snprintf(src, sizeof src, "%s/tiny-shared.bin", dir);
    snprintf(dst, sizeof dst, "%s/tiny-shared.gguf", dir);
    kv_error err;
    kv_error_clear(&err);
    if (!bad) bad |= report(kv_gguf_convert(src, dst, KV_TYPE_F16, 1, NULL, &err), &err, "llama2c convert");
    return bad;
}

/* A logits file of vocab 8 written through kv_logprobs_save (docs/FORMAT.md "kvant logits file"). */
static int logits_seed(const char *dir, const char *name, kv_ppl_style style, int32_t ctx, int64_t windows) {
    enum { V = 8 };
    kv_logprobs lp;
    memset(&lp, 0, sizeof lp);
    int32_t ids[64];
    const int64_t n_ids = windows * ctx + 1;
    if (n_ids > 64) return -1;
    for (int64_t i = 0; i < n_ids; i++) ids[i] = (int32_t)((i * 5 + 1) % V);
    lp.n_vocab = V;
    lp.plan.ctx = ctx;
    lp.plan.style = style;
    lp.plan.bos_id = 1;
    lp.plan.windows = windows;
    lp.plan.first = style == KV_PPL_LLAMACPP ? ctx / 2 : 0;
    lp.plan.per_window = style == KV_PPL_LLAMACPP ? ctx - 1 - ctx / 2 : ctx - 1;
    lp.n_ids = n_ids;
    lp.ids = ids;
    lp.ids_hash = kv_eval_ids_hash(ids, n_ids);
    lp.n_scored = windows * lp.plan.per_window;
    lp.rec_bytes = kv_logprobs_rec_bytes(V);
    uint8_t recs[16 * (8 + 8 * V + 2 * V)];
    if ((size_t)lp.n_scored * lp.rec_bytes > sizeof recs) return -1;
    for (int64_t r = 0; r < lp.n_scored; r++) {
        uint8_t *rec = recs + (size_t)r * lp.rec_bytes;
        float l[V], lse = 0;
        for (int i = 0; i < V; i++) lse += expf(l[i] = (float)((i + r) % V) * 0.3f);
        lse = logf(lse);
        int top[V];
        for (int i = 0; i < V; i++) top[i] = (int)((V - 1 - r % V + V - i) % V); /* descending logits */
        kv_wr_f32(rec, l[ids[r + 1]] - lse);
        kv_wr_u32(rec + 4, (uint32_t)top[0]);
        for (int k = 0; k < V; k++) {
            kv_wr_u32(rec + 8 + 8 * k, (uint32_t)top[k]);
            kv_wr_f32(rec + 12 + 8 * k, l[top[k]] - lse);
        }
        for (int i = 0; i < V; i++) kv_wr_u16(rec + 8 + 8 * V + 2 * i, kv_fp32_to_fp16(l[i] - lse));
    }
    lp.recs = recs;
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    kv_error err;
    kv_error_clear(&err);
    return report(kv_logprobs_save(&lp, path, &err), &err, "logits");
}

static int alphas_seed(const char *dir, const char *name, int n, kv_sens_metric metric) {
    kv_sens_layer layers[8];
    memset(layers, 0, sizeof layers);
    for (int i = 0; i < n && i < 8; i++) {
        kv_sens_layer *L = &layers[i];
        snprintf(L->name, sizeof L->name, "blk.%d.%s.weight", i / 3, i % 3 == 0 ? "attn_q" : i % 3 == 1 ? "ffn_up" : "ffn_down");
        L->layer = i / 3;
        L->params = 4096;
        L->n_levels = 2;
        L->t[0] = 0.01, L->t[1] = 0.02;
        L->d_ppl[0] = 0.1 * (i + 1), L->d_ppl[1] = 0.2 * (i + 1);
        L->kld[0] = 0.001 * (i + 1), L->kld[1] = 0.002 * (i + 1);
        L->alpha = i == 2 ? -0.5 : 10.0 * (i + 1);
        L->r2 = 0.99;
        L->done = 1;
    }
    kv_sens_result res = {.metric = metric, .base_ppl = 12.5, .tokens = 1024, .n_layers = n, .layers = layers};
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    kv_error err;
    kv_error_clear(&err);
    return report(kv_sens_save(&res, path, &err), &err, "alphas");
}

static const char *const k_configs[] = {
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":172,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":8,\"num_key_value_heads\":2,\"vocab_size\":256,"
    "\"max_position_embeddings\":512,\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"tie_word_embeddings\":true,"
    "\"bos_token_id\":1,\"eos_token_id\":2,\"torch_dtype\":\"bfloat16\"}",
    "{\"model_type\":\"llama\",\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,"
    "\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":128256,\"rope_theta\":500000.0,"
    "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},\"eos_token_id\":[128001,128008]}",
    "{\"model_type\":\"mistral\",\"hidden_size\":128,\"intermediate_size\":256,\"num_hidden_layers\":1,"
    "\"num_attention_heads\":4,\"head_dim\":64,\"vocab_size\":1000,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0},"
    "\"attention_bias\":false}",
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":96,\"intermediate_size\":192,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":6,\"num_key_value_heads\":2,\"vocab_size\":300,\"rope_parameters\":{\"rope_theta\":1e6,"
    "\"rope_type\":\"default\"},\"bos_token_id\":null}",
};

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the others to U+0100 upwards. */
static size_t byte_char(int b, char *out) {
    static int map[256];
    static int ready;
    if (!ready) {
        int n = 0;
        for (int c = 0; c < 256; c++) {
            int keep = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
            map[c] = keep ? c : 256 + n++;
        }
        ready = 1;
    }
    int u = map[b];
    if (u < 0x80) {
        if (u == '"' || u == '\\') { out[0] = '\\'; out[1] = (char)u; return 2; }
        out[0] = (char)u;
        return 1;
    }
    out[0] = (char)(0xC0 | u >> 6);
    out[1] = (char)(0x80 | (u & 63));
    return 2;
}

static int tokenizer_json_seed(const char *dir, const char *name, const char *pretok, int pair_merges) {
    char *buf = malloc(1 << 16);
    if (!buf) return -1;
    size_t len = 0;
#define PUT(...) (len += (size_t)snprintf(buf + len, (1 << 16) - len, __VA_ARGS__))
    PUT("{\"version\":\"1.0\",\"added_tokens\":[{\"id\":262,\"content\":\"<|endoftext|>\",\"special\":true}],");
    PUT("\"pre_tokenizer\":%s,", pretok);
    PUT("\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|endoftext|>\"}}]},");
    PUT("\"model\":{\"type\":\"BPE\",\"unk_token\":null,\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        char c[4];
        size_t k = byte_char(b, c);
        PUT("%s\"%.*s\":%d", b ? "," : "", (int)k, c, b);
    }
    /* merges: "Ġ t" -> 256, "h e" -> 257, "Ġt he" -> 258, "l l" -> 259, "o r" -> 260, "Ġ w" -> 261 */
    static const char *const merged[] = {"\xc4\xa0t", "he", "\xc4\xa0the", "ll", "or", "\xc4\xa0w"};
    static const char *const left[] = {"\xc4\xa0", "h", "\xc4\xa0t", "l", "o", "\xc4\xa0"};
    static const char *const right[] = {"t", "e", "he", "l", "r", "w"};
    for (int i = 0; i < 6; i++) PUT(",\"%s\":%d", merged[i], 256 + i);
    PUT("},\"merges\":[");
    for (int i = 0; i < 6; i++) {
        if (pair_merges) PUT("%s[\"%s\",\"%s\"]", i ? "," : "", left[i], right[i]);
        else PUT("%s\"%s %s\"", i ? "," : "", left[i], right[i]);
    }
    PUT("]}}");
#undef PUT
    int rc = write_file(dir, name, buf, len);
    free(buf);
    return rc;
}

static int ecw_seeds(const char *dir) {
    kv_error err;
    kv_error_clear(&err);
    int bad = 0;
    /* version 2: WaterSIC-style codes with fp16 steps and scales, two shapes */
    for (int v = 0; v < 2; v++) {
        const int R = v ? 70 : 8, C = v ? 24 : 16;
        int32_t *z = malloc(sizeof(int32_t) * R * C);
        uint16_t *cs = malloc(2 * C), *rs = malloc(2 * R);
        uint32_t s = 3;
        for (int i = 0; i < R * C; i++) z[i] = (int32_t)lroundf(pseudo(&s) * (float)(2 + (i % C)));
        for (int i = 0; i < C; i++) cs[i] = kv_fp32_to_fp16(0.01f * (float)(i + 1));
        for (int i = 0; i < R; i++) rs[i] = kv_fp32_to_fp16(1.0f + 0.1f * (float)(i % 3));
        uint8_t *blob = NULL;
        size_t size = 0;
        kv_status st = kv_ecw_encode(z, R, C, cs, rs, &blob, &size, &err);
        char name[32];
        snprintf(name, sizeof name, "v4-%dx%d.kvec", R, C);
        if (!st) bad |= write_file(dir, name, blob, size);
        bad |= report(st, &err, "ecw v4");
        free(blob), free(z), free(cs), free(rs);
    }
    /* version 3: the packed rows of integer formats */
    static const char *const fmts[] = {"int4_g32_sym", "int3_g128_asym", "int8_g0_sym"};
    for (int k = 0; k < 3; k++) {
        kv_format f;
        kv_status st = kv_format_get(fmts[k], &f, &err);
        const int64_t R = 3, C = 128;
        float w[3 * 128];
        uint32_t s = 11;
        for (int i = 0; i < R * C; i++) w[i] = pseudo(&s);
        size_t rb = kv_format_row_bytes(&f, C);
        uint8_t *packed = malloc(rb * R), *blob = NULL;
        size_t size = 0;
        if (!st) st = f.quantize(&f, w, packed, R, C, NULL, &err);
        if (!st) st = kv_ecw_encode_packed(&f, packed, R, C, &blob, &size, &err);
        char name[48];
        snprintf(name, sizeof name, "v5-%s.kvec", fmts[k]);
        if (!st) bad |= write_file(dir, name, blob, size);
        bad |= report(st, &err, "ecw v5");
        free(packed), free(blob);
    }
    return bad;
}

/* formats_dequant: [index, blocks-1, packed row of real codes]; formats_roundtrip: [index, len, exponent, flags,
 * int16 values]. Plus a few format names (byte 255) for the name parser. */
static int format_seeds(const char *ddir, const char *rdir) {
    int bad = 0;
    kv_error err;
    kv_error_clear(&err);
    for (int i = 0; i < kv_format_list_count(); i++) {
        kv_format f;
        if (kv_format_get(kv_format_list_name(i), &f, &err)) return report(KV_EINVAL, &err, "format");
        int64_t n = f.block;
        while (n < 16) n *= 2;
        size_t rb = kv_format_row_bytes(&f, n);
        float *x = malloc(sizeof(float) * (size_t)n);
        uint8_t *buf = malloc(2 + rb);
        uint32_t s = 5 + (uint32_t)i;
        for (int64_t j = 0; j < n; j++) x[j] = pseudo(&s) * 4.0f;
        buf[0] = (uint8_t)i, buf[1] = 0;
        if (f.quantize(&f, x, buf + 2, 1, n, NULL, &err) == KV_OK) {
            char name[80];
            snprintf(name, sizeof name, "%s.bin", f.name);
            bad |= write_file(ddir, name, buf, 2 + rb);
        }
        uint8_t rt[4 + 2 * 64];
        rt[0] = (uint8_t)i, rt[1] = 0, rt[2] = 24, rt[3] = (uint8_t)(i & 1);
        for (int j = 0; j < 64; j++) {
            int16_t v = (int16_t)(pseudo(&s) * 60000.0f);
            rt[4 + 2 * j] = (uint8_t)v, rt[5 + 2 * j] = (uint8_t)((uint16_t)v >> 8);
        }
        char name[80];
        snprintf(name, sizeof name, "%s.bin", f.name);
        bad |= write_file(rdir, name, rt, sizeof rt);
        free(x);
        free(buf);
    }
    static const char *const names[] = {"int3_g64_asym_f32_mse", "int8_gt_sym", "higgs_p2_b3", "mxfp6_e3m2_ps", "Q4_K",
                                        "fp8_e4m3", "e8_b4", "nf4_dq"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char buf[64], file[32];
        buf[0] = (char)255;
        size_t l = strlen(names[i]);
        memcpy(buf + 1, names[i], l);
        snprintf(file, sizeof file, "name%zu.bin", i);
        bad |= write_file(ddir, file, buf, l + 1);
    }
    return bad;
}

static const char *const k_recipes[] = {
    "{\"format\":\"q4_k_m\"}",
    "{\"format\":\"q8_0\",\"pure\":true,\"seed\":7,\"overrides\":[\"^blk\\\\.0\\\\.ffn_=f16\",\"output=q4_0\"]}",
    "{\"format\":\"int4_g32_asym\",\"method\":\"rtn\",\"transform\":\"rht:8\",\"act\":\"int8\"}",
    "{\"format\":\"mxfp4_ocp\",\"transform\":\"prescale\",\"out_format\":\"safetensors\",\"no_imatrix\":true}",
    "{\"format\":\"higgs_p2_b3\",\"method\":\"gptq:act-order,damp=0.02\",\"calib\":\"/nonexistent.txt\",\"calib_tokens\":64}",
    "{\"format\":\"nf4\",\"imatrix\":\"/nonexistent.dat\",\"out_format\":\"gguf\"}",
};

static int more_seeds(const char *root) {
    int bad = imatrix_seeds(subdir(root, "imatrix"));
    bad |= llama2c_seeds(subdir(root, "llama2c"));
    const char *lg = subdir(root, "logits");
    bad |= logits_seed(lg, "hf-ctx4.logits", KV_PPL_HF, 4, 2);
    bad |= logits_seed(lg, "llamacpp-ctx8.logits", KV_PPL_LLAMACPP, 8, 2);
    const char *al = subdir(root, "alphas");
    bad |= alphas_seed(al, "kld3.json", 3, KV_SENS_KLD);
    bad |= alphas_seed(al, "ppl6.json", 6, KV_SENS_PPL);
    const char *hc = subdir(root, "hf_config");
    for (size_t i = 0; i < sizeof k_configs / sizeof k_configs[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "config%zu.json", i);
        bad |= write_file(hc, name, k_configs[i], strlen(k_configs[i]));
    }
    const char *tj = subdir(root, "tokenizer_json");
    bad |= tokenizer_json_seed(tj, "gpt2.json", "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", 0);
    bad |= tokenizer_json_seed(tj, "llama3-pairs.json",
                               "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                               "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                               "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                               "\"trim_offsets\":true,\"use_regex\":false}]}",
                               1);
    const char *rc = subdir(root, "recipe");
    for (size_t i = 0; i < sizeof k_recipes / sizeof k_recipes[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "recipe%zu.json", i);
        bad |= write_file(rc, name, k_recipes[i], strlen(k_recipes[i]));
    }
    bad |= ecw_seeds(subdir(root, "ecw"));
    bad |= format_seeds(subdir(root, "formats_dequant"), subdir(root, "formats_roundtrip"));
    return bad;
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
    bad |= rotated_seed(d_gguf, "rotated-q8_0.gguf");
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
    bad |= more_seeds(argv[1]);
    return bad ? 1 : 0;
}
