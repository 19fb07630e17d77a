/* gen_model.c — writes a synthetic Llama-shaped Hugging Face checkpoint for scale tests (bench/scale.sh):
 * config.json, bf16 weights in sharded safetensors with model.safetensors.index.json, and the tokenizer of a
 * real model directory symlinked in. Weights are Gaussian: linears N(0, 1/in_features) so activations keep
 * their scale through the blocks, the embedding and the head N(0, 0.02²) (HF's initializer_range), norms 1.
 * Streaming: one chunk of rows (≤ 8 MiB) is in memory at a time, whatever the model size. Deterministic: each
 * tensor's values come from kv_rng seeded with seed ^ hash(name), so shards can be regenerated alone.
 * Layout: safetensors (8-byte little-endian header length, JSON header, data; huggingface/safetensors
 * docs "format"), tensors in HF's module order, shards closed when they would pass --shard-mb.
 *   gen_model OUT_DIR [--hidden N] [--layers N] [--ffn N] [--heads N] [--kv-heads N] [--vocab N]
 *             [--shard-mb N] [--seed N] [--tokenizer-from DIR] [--tied] */
#include "core/core.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct shape_cfg {
    int64_t hidden, layers, ffn, heads, kv_heads, vocab, shard_mb;
    uint64_t seed;
    int tied;
    const char *tok_dir;
} shape_cfg;

typedef struct gen_tensor {
    char name[128];
    int n_dims;
    int64_t rows, cols;   /* a vector has rows = 1 */
    double std;           /* 0: all ones (a norm) */
} gen_tensor;

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static int add(gen_tensor *t, int n, const char *name, int n_dims, int64_t rows, int64_t cols, double std) {
    snprintf(t[n].name, sizeof t[n].name, "%s", name);
    t[n].n_dims = n_dims;
    t[n].rows = rows;
    t[n].cols = cols;
    t[n].std = std;
    return n + 1;
}

/* Tensors in the order transformers saves a LlamaForCausalLM. */
static int list_tensors(const shape_cfg *c, gen_tensor *t) {
    int n = 0;
    int64_t hd = c->hidden / c->heads, kvd = hd * c->kv_heads;
    char nm[128];
    n = add(t, n, "model.embed_tokens.weight", 2, c->vocab, c->hidden, 0.02);
    for (int64_t l = 0; l < c->layers; l++) {
#define L(s, r, k, sd) (snprintf(nm, sizeof nm, "model.layers.%lld." s, (long long)l), n = add(t, n, nm, 2, r, k, sd))
        L("self_attn.q_proj.weight", c->hidden, c->hidden, 1 / sqrt((double)c->hidden));
        L("self_attn.k_proj.weight", kvd, c->hidden, 1 / sqrt((double)c->hidden));
        L("self_attn.v_proj.weight", kvd, c->hidden, 1 / sqrt((double)c->hidden));
        L("self_attn.o_proj.weight", c->hidden, c->hidden, 1 / sqrt((double)c->hidden));
        L("mlp.gate_proj.weight", c->ffn, c->hidden, 1 / sqrt((double)c->hidden));
        L("mlp.up_proj.weight", c->ffn, c->hidden, 1 / sqrt((double)c->hidden));
        L("mlp.down_proj.weight", c->hidden, c->ffn, 1 / sqrt((double)c->ffn));
#undef L
        snprintf(nm, sizeof nm, "model.layers.%lld.input_layernorm.weight", (long long)l);
        n = add(t, n, nm, 1, 1, c->hidden, 0);
        snprintf(nm, sizeof nm, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
        n = add(t, n, nm, 1, 1, c->hidden, 0);
    }
    n = add(t, n, "model.norm.weight", 1, 1, c->hidden, 0);
    if (!c->tied) n = add(t, n, "lm_head.weight", 2, c->vocab, c->hidden, 0.02);
    return n;
}

static uint64_t tensor_bytes(const gen_tensor *t) { return (uint64_t)t->rows * (uint64_t)t->cols * 2; }

static int write_all(FILE *f, const void *p, size_t n, const char *path) {
    if (fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "gen_model: %s: write failed: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Values row chunk by row chunk: Gaussian draws rounded to bf16. */
static int write_tensor(FILE *f, const gen_tensor *t, uint64_t seed, const char *path) {
    kv_rng r;
    kv_rng_seed(&r, seed ^ name_hash(t->name));
    int64_t chunk_rows = KV_MAX((int64_t)1, ((int64_t)4 << 20) / t->cols);
    float *x = malloc(sizeof(float) * (size_t)(chunk_rows * t->cols));
    uint16_t *b = malloc(sizeof(uint16_t) * (size_t)(chunk_rows * t->cols));
    int rc = (x && b) ? 0 : -1;
    if (rc) fprintf(stderr, "gen_model: out of memory\n");
    for (int64_t r0 = 0; r0 < t->rows && !rc; r0 += chunk_rows) {
        int64_t n = KV_MIN(chunk_rows, t->rows - r0) * t->cols;
        for (int64_t i = 0; i < n; i++) x[i] = t->std > 0 ? (float)(kv_rng_normal(&r) * t->std) : 1.0f;
        kv_fp32_to_bf16_row(x, b, (size_t)n);
        rc = write_all(f, b, sizeof(uint16_t) * (size_t)n, path);
    }
    free(x);
    free(b);
    return rc;
}

static char *header_json(const gen_tensor *t, int first, int last, size_t *len) {
    size_t cap = 256 + (size_t)(last - first) * 256, n = 0;
    char *h = malloc(cap);
    if (!h) return NULL;
    n += (size_t)snprintf(h + n, cap - n, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int i = first; i < last; i++) {
        if (t[i].n_dims == 1)
            n += (size_t)snprintf(h + n, cap - n, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld],", t[i].name,
                                  (long long)t[i].cols);
        else
            n += (size_t)snprintf(h + n, cap - n, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld,%lld],", t[i].name,
                                  (long long)t[i].rows, (long long)t[i].cols);
        n += (size_t)snprintf(h + n, cap - n, "\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                              (unsigned long long)(off + tensor_bytes(&t[i])));
        off += tensor_bytes(&t[i]);
    }
    n += (size_t)snprintf(h + n, cap - n, "}");
    while (n % 8) h[n++] = ' '; /* data starts 8-aligned */
    h[n] = 0;
    *len = n;
    return h;
}

static int write_shard(const char *dir, int k, int nshards, const gen_tensor *t, int first, int last, uint64_t seed) {
    char path[1200];
    snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, k + 1, nshards);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "gen_model: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t hl = 0;
    char *h = header_json(t, first, last, &hl);
    uint8_t len8[8];
    kv_wr_u64(len8, (uint64_t)hl);
    int rc = h ? 0 : -1;
    if (!rc) rc = write_all(f, len8, 8, path);
    if (!rc) rc = write_all(f, h, hl, path);
    free(h);
    for (int i = first; i < last && !rc; i++) rc = write_tensor(f, &t[i], seed, path);
    if (fclose(f) != 0 && !rc) {
        fprintf(stderr, "gen_model: %s: %s\n", path, strerror(errno));
        rc = -1;
    }
    if (!rc) fprintf(stderr, "gen_model: wrote %s (%d tensors)\n", path, last - first);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return fprintf(stderr, "gen_model: cannot create %s: %s\n", path, strerror(errno)), -1;
    int rc = fputs(text, f) < 0 ? -1 : 0;
    if (fclose(f) != 0) rc = -1;
    return rc;
}

static int write_config(const char *dir, const shape_cfg *c) {
    char buf[2048];
    snprintf(buf, sizeof buf,
             "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
             "  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n  \"num_hidden_layers\": %lld,\n"
             "  \"num_attention_heads\": %lld,\n  \"num_key_value_heads\": %lld,\n  \"head_dim\": %lld,\n"
             "  \"vocab_size\": %lld,\n  \"max_position_embeddings\": 2048,\n  \"rms_norm_eps\": 1e-05,\n"
             "  \"rope_theta\": 10000.0,\n  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n"
             "  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
             "  \"torch_dtype\": \"bfloat16\"\n}\n",
             (long long)c->hidden, (long long)c->ffn, (long long)c->layers, (long long)c->heads,
             (long long)c->kv_heads, (long long)(c->hidden / c->heads), (long long)c->vocab,
             c->tied ? "true" : "false");
    return write_text(dir, "config.json", buf);
}

static int write_index(const char *dir, const gen_tensor *t, int n, const int *shard_of, int nshards,
                       uint64_t total) {
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return fprintf(stderr, "gen_model: cannot create %s: %s\n", path, strerror(errno)), -1;
    fprintf(f, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n", (unsigned long long)total);
    for (int i = 0; i < n; i++)
        fprintf(f, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n", t[i].name, shard_of[i] + 1, nshards,
                i + 1 < n ? "," : "");
    fprintf(f, "  }\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

static int link_tokenizer(const char *dir, const char *from) {
    static const char *const files[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"};
    int linked = 0;
    for (size_t i = 0; i < KV_ARRAY_LEN(files); i++) {
        char src[1200], dst[1200], abs[4096];
        snprintf(src, sizeof src, "%s/%s", from, files[i]);
        if (access(src, R_OK) != 0) continue;
        if (!realpath(src, abs)) continue;
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        unlink(dst);
        if (symlink(abs, dst) != 0) return fprintf(stderr, "gen_model: symlink %s: %s\n", dst, strerror(errno)), -1;
        linked++;
    }
    if (!linked) return fprintf(stderr, "gen_model: no tokenizer file in %s\n", from), -1;
    return 0;
}

static int parse_i64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v <= 0) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    shape_cfg c = {2048, 16, 8192, 16, 8, 8192, 2048, 1234, 0, "../shared/models/proxy-27m"};
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int64_t *dst = !strcmp(a, "--hidden") ? &c.hidden : !strcmp(a, "--layers") ? &c.layers
                     : !strcmp(a, "--ffn") ? &c.ffn : !strcmp(a, "--heads") ? &c.heads
                     : !strcmp(a, "--kv-heads") ? &c.kv_heads : !strcmp(a, "--vocab") ? &c.vocab
                     : !strcmp(a, "--shard-mb") ? &c.shard_mb : NULL;
        if (dst || !strcmp(a, "--seed") || !strcmp(a, "--tokenizer-from")) {
            if (i + 1 >= argc) return fprintf(stderr, "gen_model: %s needs a value\n", a), 2;
            const char *v = argv[++i];
            int64_t seed;
            if (!strcmp(a, "--tokenizer-from")) c.tok_dir = v;
            else if (dst ? parse_i64(v, dst) : parse_i64(v, &seed))
                return fprintf(stderr, "gen_model: %s '%s' must be a positive integer\n", a, v), 2;
            else if (!dst) c.seed = (uint64_t)seed;
        } else if (!strcmp(a, "--tied")) c.tied = 1;
        else if (a[0] == '-') return fprintf(stderr, "gen_model: unknown option '%s'\n", a), 2;
        else if (!dir) dir = a;
        else return fprintf(stderr, "gen_model: more than one output directory ('%s')\n", a), 2;
    }
    if (!dir) {
        fprintf(stderr, "usage: gen_model OUT_DIR [--hidden 2048] [--layers 16] [--ffn 8192] [--heads 16] "
                        "[--kv-heads 8] [--vocab 8192] [--shard-mb 2048] [--seed 1234] [--tokenizer-from DIR] [--tied]\n");
        return 2;
    }
    if (c.hidden % c.heads || c.heads % c.kv_heads)
        return fprintf(stderr, "gen_model: hidden %% heads and heads %% kv-heads must be 0\n"), 2;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return fprintf(stderr, "gen_model: cannot create %s: %s\n", dir, strerror(errno)), 1;
    int cap = (int)(c.layers * 9 + 3);
    gen_tensor *t = calloc((size_t)cap, sizeof *t);
    int *shard_of = calloc((size_t)cap, sizeof *shard_of);
    if (!t || !shard_of) return fprintf(stderr, "gen_model: out of memory\n"), 1;
    int n = list_tensors(&c, t);
    uint64_t limit = (uint64_t)c.shard_mb << 20, in_shard = 0, total = 0, params = 0;
    int nshards = 1;
    for (int i = 0; i < n; i++) {
        uint64_t b = tensor_bytes(&t[i]);
        if (in_shard > 0 && in_shard + b > limit) nshards++, in_shard = 0;
        shard_of[i] = nshards - 1;
        in_shard += b;
        total += b;
        params += b / 2;
    }
    fprintf(stderr, "gen_model: %s: %d tensors, %.3fB parameters, %.2f GB bf16 in %d shards\n", dir, n, params / 1e9,
            total / 1e9, nshards);
    int rc = write_config(dir, &c);
    if (!rc) rc = link_tokenizer(dir, c.tok_dir);
    for (int k = 0, first = 0; k < nshards && !rc; k++) {
        int last = first;
        while (last < n && shard_of[last] == k) last++;
        rc = write_shard(dir, k, nshards, t, first, last, c.seed);
        first = last;
    }
    if (!rc) rc = write_index(dir, t, n, shard_of, nshards, total);
    free(t);
    free(shard_of);
    return rc ? 1 : 0;
}
