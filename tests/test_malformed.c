/* test_malformed.c — a corpus of malformed model files (safetensors, JSON configs and indexes, HF directories,
 * llama2.c checkpoints), generated in the test's scratch directory. Each one must be rejected by kv_model_open
 * with the expected status and an error naming the file and the offset or tensor, and by `kvant inspect` with
 * exit status 1 or 2, the message on stderr, nothing on stdout and no crash (issue #3 "Bad input").
 * Every family starts from a valid baseline that is checked to open, so each case fails for its own reason. */
#include "test.h"
#include <sys/stat.h>
#include <unistd.h>

#define PATH_N 700
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

enum { CTX_OFFSET = 1, CTX_TENSOR = 2, CTX_EITHER = 3, CTX_FILE = 4 };

typedef struct bad_case {
    const char *name;
    void (*gen)(const char *dir, char *path); /* writes files under dir, sets the path to open */
    kv_status status;
    const char *needle;   /* substring of the message */
    const char *file;     /* substring of the file named in the error */
    int ctx;              /* which context must be present besides the file */
} bad_case;

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

/* A safetensors file with a given header text, a header length field (0: the real length) and data_len bytes. */
static void write_st_raw(const char *path, const char *header, uint64_t len_field, size_t data_len) {
    size_t hl = strlen(header);
    size_t total = 8 + hl + data_len;
    uint8_t *buf = calloc(1, total);
    uint64_t n = len_field ? len_field : hl;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) buf[8 + hl + i] = (uint8_t)(i * 7 + 1);
    write_bytes(path, buf, total);
    free(buf);
}

static void st_path(const char *dir, char *path) { snprintf(path, PATH_N, "%s/bad.safetensors", dir); }

#define ST_CASE(fn, header, data_len) \
    static void fn(const char *dir, char *path) { st_path(dir, path); write_st_raw(path, header, 0, data_len); }

static const char k_st_good[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                                "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}";
ST_CASE(gen_st_good, k_st_good, 24)
ST_CASE(gen_st_truncated_data, k_st_good, 20)
ST_CASE(gen_st_trailing_data, k_st_good, 30)
ST_CASE(gen_st_overlap, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                        "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]}}", 16)
ST_CASE(gen_st_hole, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[20,28]}}", 28)
ST_CASE(gen_st_out_of_bounds, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[4096,4112]}}", 16)
ST_CASE(gen_st_shape_overflow, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,16]}}", 16)
ST_CASE(gen_st_unknown_dtype, "{\"a\":{\"dtype\":\"F13\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16)
ST_CASE(gen_st_unsupported_dtype, "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[16],\"data_offsets\":[0,16]}}", 16)
ST_CASE(gen_st_bytes_mismatch, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8)
ST_CASE(gen_st_negative_dim, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2,2],\"data_offsets\":[0,16]}}", 16)
ST_CASE(gen_st_float_offset, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0.5,16]}}", 16)
ST_CASE(gen_st_end_before_begin, "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}}", 16)
ST_CASE(gen_st_duplicate_name, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16)
ST_CASE(gen_st_missing_dtype, "{\"a\":{\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16)
ST_CASE(gen_st_five_dims, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,2,2],\"data_offsets\":[0,16]}}", 16)
ST_CASE(gen_st_bad_metadata, "{\"__metadata__\":{\"format\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16)
ST_CASE(gen_st_bad_utf8_name, "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16)
ST_CASE(gen_st_not_object, "[{\"dtype\":\"F32\"}]", 0)
ST_CASE(gen_st_bad_json, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},}", 16)
ST_CASE(gen_st_entry_not_object, "{\"a\":[1,2]}", 0)
ST_CASE(gen_st_truncated_header, "{\"a\":{\"dtype\":\"F32\",\"sha", 0)

static void gen_st_empty(const char *dir, char *path) { st_path(dir, path); write_bytes(path, "", 0); }
static void gen_st_short(const char *dir, char *path) { st_path(dir, path); write_bytes(path, "\x10\0\0\0", 4); }
static void gen_st_header_beyond_file(const char *dir, char *path) {
    st_path(dir, path);
    write_st_raw(path, k_st_good, 4000, 24);
}
static void gen_st_header_huge(const char *dir, char *path) {
    st_path(dir, path);
    write_st_raw(path, k_st_good, (uint64_t)1 << 40, 24);
}

/* ---- Hugging Face directories: vocab 8, hidden 4, 2 heads, ffn 6, 1 layer, tied embeddings ---------------------- */

static const char k_cfg[] = "{\"model_type\": \"llama\", \"hidden_size\": 4, \"intermediate_size\": 6, \"num_attention_heads\": 2,"
                            " \"num_hidden_layers\": 1, \"vocab_size\": 8, \"tie_word_embeddings\": true}";

typedef struct hf_tensor { const char *name; int64_t rows, cols; } hf_tensor;
static const hf_tensor k_hf_tensors[] = {
    {"model.embed_tokens.weight", 8, 4}, {"model.norm.weight", 4, 0},
    {"model.layers.0.input_layernorm.weight", 4, 0}, {"model.layers.0.self_attn.q_proj.weight", 4, 4},
    {"model.layers.0.self_attn.k_proj.weight", 4, 4}, {"model.layers.0.self_attn.v_proj.weight", 4, 4},
    {"model.layers.0.self_attn.o_proj.weight", 4, 4}, {"model.layers.0.post_attention_layernorm.weight", 4, 0},
    {"model.layers.0.mlp.gate_proj.weight", 6, 4}, {"model.layers.0.mlp.up_proj.weight", 6, 4},
    {"model.layers.0.mlp.down_proj.weight", 4, 6},
};

/* Writes a safetensors file of the tensors [first, last) of the table; drop: a name to leave out; widen: a name
 * whose first dimension grows by one; extra: one more 1-D tensor of 4 elements. */
static void write_hf_st(const char *path, size_t first, size_t last, const char *drop, const char *widen, const char *extra) {
    char hdr[8192];
    size_t h = (size_t)snprintf(hdr, sizeof hdr, "{");
    uint64_t off = 0;
    int n = 0;
    for (size_t i = first; i <= last; i++) {
        hf_tensor t;
        if (i == last) {
            if (!extra) break;
            t = (hf_tensor){extra, 4, 0};
        } else {
            t = k_hf_tensors[i];
        }
        if (drop && !strcmp(drop, t.name)) continue;
        if (widen && !strcmp(widen, t.name)) t.rows++;
        uint64_t bytes = (uint64_t)(t.rows * (t.cols ? t.cols : 1)) * 4;
        char shape[48];
        if (t.cols) snprintf(shape, sizeof shape, "%lld,%lld", (long long)t.rows, (long long)t.cols);
        else snprintf(shape, sizeof shape, "%lld", (long long)t.rows);
        h += (size_t)snprintf(hdr + h, sizeof hdr - h, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],\"data_offsets\":[%llu,%llu]}",
                              n++ ? "," : "", t.name, shape, (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    snprintf(hdr + h, sizeof hdr - h, "}");
    write_st_raw(path, hdr, 0, (size_t)off);
}

static void hf_dir(const char *dir, char *path, const char *cfg, const char *drop, const char *widen, const char *extra) {
    snprintf(path, PATH_N, "%s/m", dir);
    mkdir(path, 0755);
    char p[PATH_N + 40];
    snprintf(p, sizeof p, "%s/config.json", path);
    write_text(p, cfg);
    snprintf(p, sizeof p, "%s/model.safetensors", path);
    write_hf_st(p, 0, N_OF(k_hf_tensors), drop, widen, extra);
}

static void gen_hf_good(const char *dir, char *path) { hf_dir(dir, path, k_cfg, NULL, NULL, NULL); }
static void gen_hf_shape_mismatch(const char *dir, char *path) {
    hf_dir(dir, path, k_cfg, NULL, "model.layers.0.mlp.up_proj.weight", NULL);
}
static void gen_hf_missing_tensor(const char *dir, char *path) {
    hf_dir(dir, path, k_cfg, "model.layers.0.self_attn.v_proj.weight", NULL, NULL);
}
static void gen_hf_layer_beyond(const char *dir, char *path) {
    hf_dir(dir, path, k_cfg, NULL, NULL, "model.layers.3.input_layernorm.weight");
}
static void gen_hf_untied_no_head(const char *dir, char *path) {
    char cfg[sizeof k_cfg];
    memcpy(cfg, k_cfg, sizeof cfg);
    memcpy(strstr(cfg, "true"), "0   ", 4); /* tie_word_embeddings: a number, not a boolean */
    hf_dir(dir, path, cfg, NULL, NULL, NULL);
}
static void gen_hf_config_bad_json(const char *dir, char *path) {
    hf_dir(dir, path, "{\"model_type\": \"llama\", \"hidden_size\": 4,, \"vocab_size\": 8}", NULL, NULL, NULL);
}
static void gen_hf_config_truncated(const char *dir, char *path) {
    hf_dir(dir, path, "{\"model_type\": \"llama\", \"hidden_si", NULL, NULL, NULL);
}
static void gen_hf_config_missing_field(const char *dir, char *path) {
    hf_dir(dir, path, "{\"model_type\": \"llama\", \"hidden_size\": 4, \"num_attention_heads\": 2, \"num_hidden_layers\": 1,"
                      " \"vocab_size\": 8}", NULL, NULL, NULL);
}
static void gen_hf_config_deep(const char *dir, char *path) {
    char cfg[1200];
    size_t n = (size_t)snprintf(cfg, sizeof cfg, "{\"x\": ");
    for (int i = 0; i < 300; i++) cfg[n++] = '[';
    for (int i = 0; i < 300; i++) cfg[n++] = ']';
    snprintf(cfg + n, sizeof cfg - n, "}");
    hf_dir(dir, path, cfg, NULL, NULL, NULL);
}
static void gen_hf_config_bad_escape(const char *dir, char *path) {
    hf_dir(dir, path, "{\"model_type\": \"ll\\qama\"}", NULL, NULL, NULL);
}
static void gen_hf_no_weights(const char *dir, char *path) {
    snprintf(path, PATH_N, "%s/m", dir);
    mkdir(path, 0755);
    char p[PATH_N + 40];
    snprintf(p, sizeof p, "%s/config.json", path);
    write_text(p, k_cfg);
}
static void gen_hf_pickle_only(const char *dir, char *path) {
    gen_hf_no_weights(dir, path);
    char p[PATH_N + 40];
    snprintf(p, sizeof p, "%s/pytorch_model.bin", path);
    write_text(p, "PK\x03\x04");
}
static void gen_hf_no_config(const char *dir, char *path) {
    snprintf(path, PATH_N, "%s/m", dir);
    mkdir(path, 0755);
}

/* Sharded: shard 1 holds the first two tensors, shard 2 the rest. */
static void sharded(const char *dir, char *path, const char *index, int write_second) {
    snprintf(path, PATH_N, "%s/m", dir);
    mkdir(path, 0755);
    char p[PATH_N + 60];
    snprintf(p, sizeof p, "%s/config.json", path);
    write_text(p, k_cfg);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", path);
    write_hf_st(p, 0, 2, NULL, NULL, NULL);
    if (write_second) {
        snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", path);
        write_hf_st(p, 2, N_OF(k_hf_tensors), NULL, NULL, NULL);
    }
    char idx[4096];
    size_t n = (size_t)snprintf(idx, sizeof idx, "{\"metadata\": {}, \"weight_map\": {");
    for (size_t i = 0; i < N_OF(k_hf_tensors); i++)
        n += (size_t)snprintf(idx + n, sizeof idx - n, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                              k_hf_tensors[i].name, i < 2 ? 1 : 2);
    snprintf(idx + n, sizeof idx - n, "}}");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
    write_text(p, index ? index : idx);
}
static void gen_shard_good(const char *dir, char *path) { sharded(dir, path, NULL, 1); }
static void gen_shard_missing(const char *dir, char *path) { sharded(dir, path, NULL, 0); }
static void gen_shard_wrong_place(const char *dir, char *path) {
    sharded(dir, path, "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00002-of-00002.safetensors\","
                       " \"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}", 1);
}
static void gen_shard_traversal(const char *dir, char *path) {
    sharded(dir, path, "{\"weight_map\": {\"model.norm.weight\": \"../model-00001-of-00002.safetensors\"}}", 1);
}
static void gen_shard_index_bad_json(const char *dir, char *path) {
    sharded(dir, path, "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\"", 1);
}
static void gen_shard_index_no_map(const char *dir, char *path) { sharded(dir, path, "{\"metadata\": {}}", 1); }
static void gen_shard_index_dup(const char *dir, char *path) {
    sharded(dir, path, "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\","
                       " \"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}", 1);
}

/* ---- llama2.c: dim 8, hidden 12, 1 layer, 2 heads, 1 kv head, vocab 16, seq 4 -> 648 floats ---------------------- */

static void l2c(const char *dir, char *path, const int32_t *hdr, long n_floats) {
    snprintf(path, PATH_N, "%s/model.bin", dir);
    size_t total = 28 + (size_t)(n_floats > 0 ? n_floats : 0) * 4;
    uint8_t *buf = calloc(1, total);
    memcpy(buf, hdr, 28);
    write_bytes(path, buf, total);
    free(buf);
}
static const int32_t k_l2c[7] = {8, 12, 1, 2, 1, 16, 4};
static void gen_l2c_good(const char *dir, char *path) { l2c(dir, path, k_l2c, 648); }
static void gen_l2c_truncated(const char *dir, char *path) { l2c(dir, path, k_l2c, 300); }
static void gen_l2c_trailing(const char *dir, char *path) { l2c(dir, path, k_l2c, 700); }
static void gen_l2c_negative_dim(const char *dir, char *path) {
    int32_t h[7] = {-8, 12, 1, 2, 1, 16, 4};
    l2c(dir, path, h, 648);
}
static void gen_l2c_zero_layers(const char *dir, char *path) {
    int32_t h[7] = {8, 12, 0, 2, 1, 16, 4};
    l2c(dir, path, h, 648);
}
static void gen_l2c_heads(const char *dir, char *path) {
    int32_t h[7] = {8, 12, 1, 3, 1, 16, 4};
    l2c(dir, path, h, 648);
}
static void gen_l2c_kv_heads(const char *dir, char *path) {
    int32_t h[7] = {8, 12, 1, 2, 3, 16, 4};
    l2c(dir, path, h, 648);
}
static void gen_l2c_huge(const char *dir, char *path) {
    int32_t h[7] = {1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, -(1 << 24), 1 << 24};
    l2c(dir, path, h, 648);
}
static void gen_l2c_tiny(const char *dir, char *path) {
    snprintf(path, PATH_N, "%s/model.bin", dir);
    write_bytes(path, "\x08\0\0\0\x0c\0", 6);
}
static void gen_l2c_unshared_missing_wcls(const char *dir, char *path) {
    int32_t h[7] = {8, 12, 1, 2, 1, -16, 4};
    l2c(dir, path, h, 648); /* a negative vocab needs 16 x 8 more floats for wcls */
}
static void gen_gguf_garbage(const char *dir, char *path) {
    snprintf(path, PATH_N, "%s/model.gguf", dir);
    write_text(path, "GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff");
}
/* A tiny llama GGUF written with kvant's GGUF writer: skip_key leaves out one metadata key, embd_cols sets the
 * width of token_embd (4 is right). */
static void gguf_tiny(const char *dir, char *path, const char *skip_key, int64_t embd_cols) {
    snprintf(path, PATH_N, "%s/tiny.gguf", dir);
    static const struct { const char *key; uint32_t v; } keys[] = {
        {"llama.block_count", 1}, {"llama.embedding_length", 4}, {"llama.feed_forward_length", 6},
        {"llama.attention.head_count", 2}, {"llama.attention.head_count_kv", 2}, {"llama.context_length", 16},
    };
    static float zeros[64];
    kv_gguf_writer *w;
    if (kv_gguf_writer_create(&w, NULL)) return;
    kv_gguf_writer_add_str(w, "general.architecture", "llama", NULL);
    for (size_t i = 0; i < N_OF(keys); i++)
        if (!skip_key || strcmp(skip_key, keys[i].key)) kv_gguf_writer_add_u32(w, keys[i].key, keys[i].v, NULL);
    for (size_t i = 0; i < N_OF(k_hf_tensors); i++) {
        char name[64];
        kv_name_from_hf(k_hf_tensors[i].name, name, sizeof name);
        int64_t shape[2] = {k_hf_tensors[i].rows, k_hf_tensors[i].cols};
        if (i == 0) shape[1] = embd_cols;
        kv_gguf_writer_add_tensor(w, name, shape[1] ? 2 : 1, shape, KV_TYPE_F32, zeros, NULL);
    }
    kv_gguf_writer_write(w, path, NULL, NULL);
    kv_gguf_writer_free(w);
}
static void gen_gguf_good(const char *dir, char *path) { gguf_tiny(dir, path, NULL, 4); }
static void gen_gguf_no_heads(const char *dir, char *path) { gguf_tiny(dir, path, "llama.attention.head_count", 4); }
static void gen_gguf_shape_mismatch(const char *dir, char *path) { gguf_tiny(dir, path, NULL, 5); }
static void gen_l2c_versioned(const char *dir, char *path) {
    int32_t h[7] = {0x616b3432, 2, 8, 12, 1, 2, 1};
    l2c(dir, path, h, 648);
}
static void gen_text_file(const char *dir, char *path) {
    snprintf(path, PATH_N, "%s/notes.txt", dir);
    write_text(path, "This is not a model, just a long enough line of text.\n");
}
static void gen_missing_path(const char *dir, char *path) { snprintf(path, PATH_N, "%s/does-not-exist", dir); }

static const bad_case k_cases[] = {
    {"st_empty", gen_st_empty, KV_EFORMAT, "too small", "bad.safetensors", CTX_OFFSET},
    {"st_short", gen_st_short, KV_EFORMAT, "too small", "bad.safetensors", CTX_OFFSET},
    {"st_header_beyond_file", gen_st_header_beyond_file, KV_EFORMAT, "beyond the end of the file", "bad.safetensors", CTX_OFFSET},
    {"st_header_huge", gen_st_header_huge, KV_ERANGE, "100 MB", "bad.safetensors", CTX_OFFSET},
    {"st_truncated_data", gen_st_truncated_data, KV_EFORMAT, "beyond the end", "bad.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"st_trailing_data", gen_st_trailing_data, KV_EFORMAT, "after the last tensor", "bad.safetensors", CTX_OFFSET},
    {"st_overlap", gen_st_overlap, KV_EFORMAT, "overlap", "bad.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"st_hole", gen_st_hole, KV_EFORMAT, "hole", "bad.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"st_out_of_bounds", gen_st_out_of_bounds, KV_EFORMAT, "beyond the end", "bad.safetensors", CTX_TENSOR},
    {"st_shape_overflow", gen_st_shape_overflow, KV_ERANGE, "overflow", "bad.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"st_unknown_dtype", gen_st_unknown_dtype, KV_EFORMAT, "F13", "bad.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"st_unsupported_dtype", gen_st_unsupported_dtype, KV_EUNSUPPORTED, "F8_E4M3", "bad.safetensors", CTX_TENSOR},
    {"st_bytes_mismatch", gen_st_bytes_mismatch, KV_EFORMAT, "does not match", "bad.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"st_negative_dim", gen_st_negative_dim, KV_EFORMAT, "non-negative", "bad.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"st_float_offset", gen_st_float_offset, KV_EFORMAT, "data_offsets", "bad.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"st_end_before_begin", gen_st_end_before_begin, KV_EFORMAT, "end < begin", "bad.safetensors", CTX_TENSOR},
    {"st_duplicate_name", gen_st_duplicate_name, KV_EFORMAT, "duplicate", "bad.safetensors", CTX_OFFSET},
    {"st_missing_dtype", gen_st_missing_dtype, KV_EFORMAT, "dtype", "bad.safetensors", CTX_TENSOR},
    {"st_five_dims", gen_st_five_dims, KV_EUNSUPPORTED, "4 dimensions", "bad.safetensors", CTX_TENSOR},
    {"st_bad_metadata", gen_st_bad_metadata, KV_EFORMAT, "__metadata__", "bad.safetensors", CTX_OFFSET},
    {"st_bad_utf8_name", gen_st_bad_utf8_name, KV_EFORMAT, "UTF-8", "bad.safetensors", CTX_OFFSET},
    {"st_not_object", gen_st_not_object, KV_EFORMAT, "'{'", "bad.safetensors", CTX_OFFSET},
    {"st_bad_json", gen_st_bad_json, KV_EFORMAT, "trailing comma", "bad.safetensors", CTX_OFFSET},
    {"st_entry_not_object", gen_st_entry_not_object, KV_EFORMAT, "must be an object", "bad.safetensors", CTX_TENSOR},
    {"st_truncated_header", gen_st_truncated_header, KV_EFORMAT, "unterminated", "bad.safetensors", CTX_OFFSET},
    {"hf_shape_mismatch", gen_hf_shape_mismatch, KV_EFORMAT, "expected [6, 4]", "model.safetensors", CTX_TENSOR | CTX_OFFSET},
    {"hf_missing_tensor", gen_hf_missing_tensor, KV_ENOTFOUND, "blk.0.attn_v.weight", "m", CTX_TENSOR},
    {"hf_layer_beyond", gen_hf_layer_beyond, KV_EFORMAT, "layer 3", "model.safetensors", CTX_TENSOR},
    {"hf_config_wrong_type", gen_hf_untied_no_head, KV_EFORMAT, "tie_word_embeddings", "config.json", CTX_OFFSET},
    {"hf_config_bad_json", gen_hf_config_bad_json, KV_EFORMAT, "expected a string key", "config.json", CTX_OFFSET},
    {"hf_config_truncated", gen_hf_config_truncated, KV_EFORMAT, "unterminated string", "config.json", CTX_OFFSET},
    {"hf_config_missing_field", gen_hf_config_missing_field, KV_EFORMAT, "intermediate_size", "config.json", CTX_OFFSET},
    {"hf_config_deep", gen_hf_config_deep, KV_ERANGE, "nesting", "config.json", CTX_OFFSET},
    {"hf_config_bad_escape", gen_hf_config_bad_escape, KV_EFORMAT, "escape", "config.json", CTX_OFFSET},
    {"hf_no_weights", gen_hf_no_weights, KV_ENOTFOUND, "model.safetensors", "m", CTX_FILE},
    {"hf_pickle_only", gen_hf_pickle_only, KV_EUNSUPPORTED, "pytorch_model.bin", "m", CTX_FILE},
    {"hf_no_config", gen_hf_no_config, KV_ENOTFOUND, "config.json", "m", CTX_FILE},
    {"shard_missing", gen_shard_missing, KV_ENOTFOUND, "model-00002-of-00002.safetensors", "index.json", CTX_FILE},
    {"shard_wrong_place", gen_shard_wrong_place, KV_ENOTFOUND, "does not contain", "index.json", CTX_TENSOR | CTX_OFFSET},
    {"shard_traversal", gen_shard_traversal, KV_EFORMAT, "model directory", "index.json", CTX_TENSOR | CTX_OFFSET},
    {"shard_index_bad_json", gen_shard_index_bad_json, KV_EFORMAT, "unterminated object", "index.json", CTX_OFFSET},
    {"shard_index_no_map", gen_shard_index_no_map, KV_EFORMAT, "weight_map", "index.json", CTX_FILE},
    {"shard_index_duplicate", gen_shard_index_dup, KV_EFORMAT, "duplicate", "index.json", CTX_TENSOR | CTX_OFFSET},
    {"l2c_truncated", gen_l2c_truncated, KV_EFORMAT, "too small", "model.bin", CTX_OFFSET},
    {"l2c_trailing", gen_l2c_trailing, KV_EFORMAT, "trailing", "model.bin", CTX_OFFSET},
    {"l2c_negative_dim", gen_l2c_negative_dim, KV_EFORMAT, "dim", "model.bin", CTX_OFFSET},
    {"l2c_zero_layers", gen_l2c_zero_layers, KV_EFORMAT, "n_layers", "model.bin", CTX_OFFSET},
    {"l2c_heads_not_dividing", gen_l2c_heads, KV_EFORMAT, "n_heads", "model.bin", CTX_OFFSET},
    {"l2c_kv_heads_not_dividing", gen_l2c_kv_heads, KV_EFORMAT, "n_kv_heads", "model.bin", CTX_OFFSET},
    {"l2c_huge_sizes", gen_l2c_huge, KV_EFORMAT, "too small", "model.bin", CTX_OFFSET},
    {"l2c_tiny", gen_l2c_tiny, KV_EFORMAT, "too small", "model.bin", CTX_OFFSET},
    {"l2c_unshared_missing_wcls", gen_l2c_unshared_missing_wcls, KV_EFORMAT, "wcls", "model.bin", CTX_OFFSET},
    {"l2c_versioned_export", gen_l2c_versioned, KV_EUNSUPPORTED, "ak42", "model.bin", CTX_OFFSET},
    {"gguf_no_head_count", gen_gguf_no_heads, KV_EFORMAT, "llama.attention.head_count", "tiny.gguf", CTX_FILE},
    {"gguf_shape_mismatch", gen_gguf_shape_mismatch, KV_EFORMAT, "expected [8, 4]", "tiny.gguf", CTX_TENSOR},
    {"gguf_garbage", gen_gguf_garbage, KV_EFORMAT, "", "model.gguf", 0},
    {"text_file", gen_text_file, KV_EFORMAT, "not a recognized model file", "notes.txt", CTX_OFFSET},
    {"missing_path", gen_missing_path, KV_ENOTFOUND, "no such file", "does-not-exist", CTX_FILE},
};

/* A fresh directory per case so that cases never see each other's files. */
static void case_dir(const char *name, char *dir) {
    snprintf(dir, PATH_N, "%s/%s", kv_test_tmpdir(), name);
    mkdir(dir, 0755);
}

KV_TEST(malformed_baselines_are_valid) {
    void (*gens[])(const char *, char *) = {gen_st_good, gen_hf_good, gen_shard_good, gen_l2c_good, gen_gguf_good};
    static const int tensors[] = {2, 11, 11, 2 + 9, 11};
    for (size_t i = 0; i < sizeof gens / sizeof gens[0]; i++) {
        char dir[PATH_N], path[PATH_N], name[32];
        snprintf(name, sizeof name, "good%zu", i);
        case_dir(name, dir);
        gens[i](dir, path);
        kv_error err;
        kv_error_clear(&err);
        kv_model_file *mf = NULL;
        CHECK_OK(kv_model_open(path, &mf, &err), &err);
        if (mf) CHECK_EQ_INT(kv_model_n_tensors(mf), tensors[i]);
        kv_model_close(mf);
    }
}

KV_TEST(malformed_corpus_library) {
    CHECK(N_OF(k_cases) >= 30);
    for (size_t i = 0; i < N_OF(k_cases); i++) {
        const bad_case *c = &k_cases[i];
        char dir[PATH_N], path[PATH_N];
        case_dir(c->name, dir);
        c->gen(dir, path);
        kv_error err;
        kv_error_clear(&err);
        kv_model_file *mf = NULL;
        kv_status st = kv_model_open(path, &mf, &err);
        char msg[1400];
        kv_error_format(&err, msg, sizeof msg);
        if (getenv("KVANT_TEST_VERBOSE")) fprintf(stderr, "    %-26s %s\n", c->name, msg);
        CHECK_MSG(st == c->status, "%s: status %s, want %s (%s)", c->name, kv_status_name(st), kv_status_name(c->status), msg);
        CHECK_MSG(mf == NULL, "%s: model returned on failure", c->name);
        kv_model_close(mf);
        CHECK_MSG(strstr(err.message, c->needle) != NULL, "%s: message lacks '%s': %s", c->name, c->needle, msg);
        CHECK_MSG(err.file[0] && strstr(err.file, c->file) != NULL, "%s: file '%s' lacks '%s'", c->name, err.file, c->file);
        if ((c->ctx & CTX_OFFSET) && !(c->ctx & CTX_TENSOR)) CHECK_MSG(err.offset >= 0, "%s: no offset: %s", c->name, msg);
        if ((c->ctx & CTX_TENSOR) && !(c->ctx & CTX_OFFSET)) CHECK_MSG(err.tensor[0], "%s: no tensor: %s", c->name, msg);
        if ((c->ctx & CTX_EITHER) == CTX_EITHER) {
            CHECK_MSG(err.offset >= 0, "%s: no offset: %s", c->name, msg);
            CHECK_MSG(err.tensor[0], "%s: no tensor: %s", c->name, msg);
        }
    }
}

/* The file's bytes, NUL-terminated. */
static char *read_text(const char *path, size_t *n) {
    *n = 0;
    void *raw = kv_test_read_file(path, n);
    char *s = calloc(1, *n + 1);
    if (raw && s) memcpy(s, raw, *n);
    free(raw);
    return s;
}

KV_TEST(malformed_corpus_cli) {
    for (size_t i = 0; i < N_OF(k_cases); i++) {
        const bad_case *c = &k_cases[i];
        char dir[PATH_N], path[PATH_N], args[4 * PATH_N];
        case_dir(c->name, dir);
        c->gen(dir, path);
        /* stdout and stderr to separate files; the shell's status is kvant's (128+signal after a crash) */
        snprintf(args, sizeof args, "inspect '%s' >'%s/out' 2>'%s/err'; exit $?", path, dir, dir);
        int rc = kv_test_run_cli(args, NULL);
        CHECK_MSG(rc == 1 || rc == 2, "%s: kvant inspect exited %d", c->name, rc);
        char p[PATH_N + 8];
        size_t n_out = 0, n_err = 0;
        snprintf(p, sizeof p, "%s/out", dir);
        char *out = read_text(p, &n_out);
        snprintf(p, sizeof p, "%s/err", dir);
        char *err = read_text(p, &n_err);
        CHECK_MSG(n_out == 0, "%s: %zu bytes on stdout", c->name, n_out);
        CHECK_MSG(err && n_err > 0 && strstr(err, "error") && strstr(err, c->file), "%s: stderr: %s", c->name, err ? err : "");
        CHECK_MSG(err && memchr(err, '\n', n_err) == err + n_err - 1, "%s: not one line: %s", c->name, err ? err : "");
        free(out);
        free(err);
    }
}
