/* gguf_convert.c — a model (HF directory, llama2.c, GGUF) to a GGUF that llama.cpp loads: the key set,
 * key order, tensor types and q/k row order of llama.cpp's convert_hf_to_gguf.py (TextModel and LlamaModel
 * set_gguf_parameters, _set_vocab_sentencepiece / _set_vocab_gpt2, LlamaModel.permute and
 * generate_extra_tensors for llama3 rope_freqs; gguf-py metadata.py id_to_title and
 * model_weight_count_rounded_notation for general.name / general.size_label). docs/convert.md lists the keys. */
#include "io/gguf.h"
#include "io/json.h"
#include "io/model_file.h"
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

/* llama.cpp llama_ftype values for the plain output types */
static int file_type_of(uint32_t outtype, uint32_t *ftype) {
    switch (outtype) {
    case KV_TYPE_F32: *ftype = 0; return 1;  /* LLAMA_FTYPE_ALL_F32 */
    case KV_TYPE_F16: *ftype = 1; return 1;  /* LLAMA_FTYPE_MOSTLY_F16 */
    case KV_TYPE_BF16: *ftype = 32; return 1; /* LLAMA_FTYPE_MOSTLY_BF16 */
    default: return 0;
    }
}

const char *kv_gguf_arch_of(const kv_hparams *hp) {
    /* llama.cpp converts Mistral checkpoints with the llama architecture */
    return !strcmp(hp->arch, "qwen2") ? "qwen2" : "llama";
}

int kv_gguf_qk_heads(const kv_hparams *hp, const char *name) {
    if (strcmp(kv_gguf_arch_of(hp), "llama") != 0 || strncmp(name, "blk.", 4) != 0) return 0;
    const char *dot = strchr(name + 4, '.');
    if (!dot) return 0;
    if (!strcmp(dot, ".attn_q.weight") || !strcmp(dot, ".attn_q.bias")) return hp->n_head;
    if (!strcmp(dot, ".attn_k.weight") || !strcmp(dot, ".attn_k.bias")) return hp->n_head_kv;
    return 0;
}

uint32_t kv_gguf_plain_type_for(const kv_tensor *t, uint32_t outtype) {
    size_t n = strlen(t->name);
    /* llama.cpp keeps 1-D tensors and norms in f32 (its kernels expect it) */
    if (t->n_dims <= 1 || (n >= 12 && !strcmp(t->name + n - 12, "_norm.weight"))) return KV_TYPE_F32;
    return outtype;
}

/* ---- general.* naming (gguf-py metadata.py) ----------------------------------------------------- */

/* The model id: the directory or file name without extension. */
static void model_id(const char *path, char *id, size_t n) {
    char tmp[1024];
    kv_strlcpy(tmp, path, sizeof tmp);
    size_t len = strlen(tmp);
    while (len > 1 && tmp[len - 1] == '/') tmp[--len] = 0;
    const char *base = strrchr(tmp, '/');
    base = base ? base + 1 : tmp;
    kv_strlcpy(id, base, n);
    static const char *const exts[] = {".gguf", ".bin", ".safetensors"};
    for (size_t i = 0; i < KV_ARRAY_LEN(exts); i++) {
        size_t l = strlen(id), e = strlen(exts[i]);
        if (l > e && !strcmp(id + l - e, exts[i])) id[l - e] = 0;
    }
}

static int word_is_lower(const char *w, size_t n) {
    int cased = 0;
    for (size_t i = 0; i < n; i++) {
        if (isupper((unsigned char)w[i])) return 0;
        if (islower((unsigned char)w[i])) cased = 1;
    }
    return cased;
}

/* ^(v\d+(\.\d+)*|\d.*)$ : version numbers and sizes keep their case */
static int word_is_version_or_number(const char *w, size_t n) {
    if (n && isdigit((unsigned char)w[0])) return 1;
    if (n < 2 || w[0] != 'v') return 0;
    for (size_t i = 1; i < n; i++)
        if (!isdigit((unsigned char)w[i]) && w[i] != '.') return 0;
    return isdigit((unsigned char)w[1]);
}

/* id_to_title: "-" becomes a space; all-lowercase words that are not versions are title-cased. */
static void id_to_title(const char *id, char *out, size_t n) {
    size_t o = 0;
    const char *p = id;
    while (*p && o + 1 < n) {
        while (*p == '-' || *p == ' ') p++;
        size_t len = strcspn(p, "- ");
        if (!len) break;
        if (o && o + 1 < n) out[o++] = ' ';
        int title = word_is_lower(p, len) && !word_is_version_or_number(p, len);
        int prev_alpha = 0;
        for (size_t i = 0; i < len && o + 1 < n; i++) {
            char c = p[i];
            int alpha = isalpha((unsigned char)c) != 0;
            if (title && alpha) c = (char)(prev_alpha ? tolower((unsigned char)c) : toupper((unsigned char)c));
            prev_alpha = alpha;
            out[o++] = c;
        }
        p += len;
    }
    out[o] = 0;
}

/* The leading "-"-separated parts of the id before the first one that starts with a digit (a size). */
static void id_basename(const char *id, char *out, size_t n) {
    size_t o = 0;
    const char *p = id;
    while (*p) {
        size_t len = strcspn(p, "-");
        if (len && isdigit((unsigned char)p[0])) break;
        if (o && o + 1 < n) out[o++] = '-';
        for (size_t i = 0; i < len && o + 1 < n; i++) out[o++] = p[i];
        p += len;
        if (*p == '-') p++;
    }
    while (o && out[o - 1] == '-') o--;
    out[o] = 0;
}

/* model_weight_count_rounded_notation(n, min_digits=2): "27M", "1.1B", "260K". */
static void size_label(int64_t params, char *out, size_t n) {
    double v = (double)params;
    const char *suffix;
    if (v > 1e12) v *= 1e-12, suffix = "T";
    else if (v > 1e9) v *= 1e-9, suffix = "B";
    else if (v > 1e6) v *= 1e-6, suffix = "M";
    else v *= 1e-3, suffix = "K";
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", v);
    const char *d = digits;
    while (*d == '0') d++;
    int fix = 2 - (int)strlen(d);
    snprintf(out, n, "%.*f%s", fix > 0 ? fix : 0, v, suffix);
}

/* ---- tokenizer.* -------------------------------------------------------------------------------- */

static kv_status copy_gguf_tokenizer(kv_gguf_writer *w, const kv_gguf *g, kv_error *err) {
    for (int64_t i = 0; i < kv_gguf_n_kv(g); i++) {
        const char *key = kv_gguf_kv_key(g, i);
        if (strncmp(key, "tokenizer.", 10) != 0) continue;
        kv_status st = kv_gguf_writer_add_value(w, key, kv_gguf_kv_value(g, i), err);
        if (st) return st;
    }
    return KV_OK;
}

/* tokenizer_config.json next to an HF model: add_bos_token / add_eos_token / chat_template. */
static kv_status add_tokenizer_config(kv_gguf_writer *w, const kv_model_file *mf, kv_error *err) {
    if (kv_model_format(mf) != KV_FILE_HF) return KV_OK;
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", kv_model_path(mf));
    kv_json_doc *doc;
    kv_error sub;
    kv_error_clear(&sub);
    if (kv_json_parse_file(path, 0, &doc, &sub) != KV_OK) return KV_OK; /* optional file */
    const kv_json *root = kv_json_root(doc);
    int b;
    const char *tmpl;
    kv_status st = KV_OK;
    if (kv_json_get_bool(root, "add_bos_token", &b) == 1) st = kv_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", b, err);
    if (!st && kv_json_get_bool(root, "add_eos_token", &b) == 1)
        st = kv_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", b, err);
    if (!st && kv_json_get_str(root, "chat_template", &tmpl) == 1)
        st = kv_gguf_writer_add_str(w, "tokenizer.chat_template", tmpl, err);
    kv_json_free(doc);
    return st;
}

static kv_status add_vocab(kv_gguf_writer *w, const kv_tokenizer *tok, int32_t n_vocab, kv_error *err) {
    int spm = kv_tokenizer_get_kind(tok) == KV_TOKENIZER_SPM;
    int32_t n_tok = kv_tokenizer_n_vocab(tok);
    /* llama.cpp pads a vocabulary to the model's vocab_size with [PADi] pieces (_set_vocab_sentencepiece, and
     * get_vocab_base for BPE: Qwen2's embedding has more rows than its tokenizer has tokens) */
    int32_t n = n_vocab > n_tok ? n_vocab : n_tok;
    kv_status st = kv_gguf_writer_add_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", err);
    /* llama.cpp names the SentencePiece pre-tokenizer "default" */
    const char *pre = spm ? "default" : kv_pretokenizer_name(kv_tokenizer_pretokenizer(tok));
    if (!st) st = kv_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre && *pre ? pre : "default", err);
    if (!st) st = kv_gguf_writer_begin_array(w, "tokenizer.ggml.tokens", KV_GGUF_STRING, err);
    for (int32_t i = 0; i < n && !st; i++) {
        size_t len = 0;
        const char *piece = i < n_tok ? kv_tokenizer_piece(tok, i, &len) : NULL;
        char pad[32];
        if (!piece) len = (size_t)snprintf(pad, sizeof pad, "[PAD%d]", (int)i), piece = pad;
        st = kv_gguf_writer_add_strn(w, NULL, piece, len, err);
    }
    if (!st) st = kv_gguf_writer_end_array(w, err);
    if (!st && spm) {
        st = kv_gguf_writer_begin_array(w, "tokenizer.ggml.scores", KV_GGUF_F32, err);
        for (int32_t i = 0; i < n && !st; i++)
            st = kv_gguf_writer_add_f32(w, NULL, i < n_tok ? kv_tokenizer_score(tok, i) : -1000.0f, err);
        if (!st) st = kv_gguf_writer_end_array(w, err);
    }
    if (!st) st = kv_gguf_writer_begin_array(w, "tokenizer.ggml.token_type", KV_GGUF_I32, err);
    for (int32_t i = 0; i < n && !st; i++)
        st = kv_gguf_writer_add_i32(w, NULL, i < n_tok ? (int32_t)kv_tokenizer_token_type(tok, i) : KV_TOKEN_UNUSED, err);
    if (!st) st = kv_gguf_writer_end_array(w, err);
    int64_t n_merges = kv_tokenizer_n_merges(tok);
    if (!st && n_merges > 0) {
        st = kv_gguf_writer_begin_array(w, "tokenizer.ggml.merges", KV_GGUF_STRING, err);
        char *buf = NULL;
        size_t cap = 0;
        for (int64_t r = 0; r < n_merges && !st; r++) {
            int32_t l, rt;
            size_t ll, rl;
            st = kv_tokenizer_merge(tok, r, &l, &rt, err);
            if (st) break;
            const char *ls = kv_tokenizer_piece(tok, l, &ll), *rs = kv_tokenizer_piece(tok, rt, &rl);
            if (ll + rl + 1 > cap) {
                cap = (ll + rl + 1) * 2;
                char *nb = realloc(buf, cap);
                if (!nb) { st = kv_fail(err, KV_ENOMEM, "out of memory"); break; }
                buf = nb;
            }
            memcpy(buf, ls, ll);
            buf[ll] = ' ';
            memcpy(buf + ll + 1, rs, rl);
            st = kv_gguf_writer_add_strn(w, NULL, buf, ll + rl + 1, err);
        }
        free(buf);
        if (!st) st = kv_gguf_writer_end_array(w, err);
    }
    return st;
}

static kv_status add_tokenizer(kv_gguf_writer *w, const kv_model_file *mf, kv_error *err) {
    const kv_hparams *hp = kv_model_hparams(mf);
    if (mf->gguf) return copy_gguf_tokenizer(w, mf->gguf, err);
    if (kv_model_tokenizer(mf, NULL) == KV_TOKSRC_NONE) return KV_OK;
    kv_tokenizer *tok;
    kv_status st = kv_tokenizer_load_for_model(mf, &tok, err);
    if (st) return st;
    st = add_vocab(w, tok, hp->n_vocab, err);
    kv_tokenizer_free(tok);
    /* the special ids llama.cpp takes from config.json (SpecialVocab order: bos, eos) */
    if (!st && hp->bos_id >= 0) st = kv_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)hp->bos_id, err);
    if (!st && hp->eos_id >= 0) st = kv_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)hp->eos_id, err);
    if (!st) st = add_tokenizer_config(w, mf, err);
    return st;
}

/* ---- metadata ----------------------------------------------------------------------------------- */

static kv_status add_u32(kv_gguf_writer *w, const char *arch, const char *suffix, int64_t v, kv_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (v < 0 || v > UINT32_MAX) return kv_fail(err, KV_ERANGE, "hyper-parameter %s = %" PRId64 " out of range", key, v);
    return kv_gguf_writer_add_u32(w, key, (uint32_t)v, err);
}

static kv_status add_f32(kv_gguf_writer *w, const char *arch, const char *suffix, float v, kv_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return kv_gguf_writer_add_f32(w, key, v, err);
}

kv_status kv_gguf_add_model_metadata(kv_gguf_writer *w, const kv_model_file *mf, uint32_t file_type, kv_error *err) {
    const kv_hparams *hp = kv_model_hparams(mf);
    const char *arch = kv_gguf_arch_of(hp);
    char id[256], name[256], base[256], size[32];
    model_id(kv_model_path(mf), id, sizeof id);
    const char *src_name = kv_model_meta_string(mf, "general.name");
    if (src_name) kv_strlcpy(name, src_name, sizeof name);
    else id_to_title(id, name, sizeof name);
    id_basename(id, base, sizeof base);
    int64_t params = kv_model_n_params(mf);
    size_label(params, size, sizeof size);

    kv_status st = kv_gguf_writer_add_str(w, "general.architecture", arch, err);
    if (!st) st = kv_gguf_writer_add_str(w, "general.type", "model", err);
    if (!st && name[0]) st = kv_gguf_writer_add_str(w, "general.name", name, err);
    if (!st && base[0]) st = kv_gguf_writer_add_str(w, "general.basename", base, err);
    if (!st && params > 0) st = kv_gguf_writer_add_str(w, "general.size_label", size, err);
    /* TextModel.set_gguf_parameters */
    if (!st) st = add_u32(w, arch, "block_count", hp->n_layer, err);
    if (!st && hp->n_ctx_train > 0) st = add_u32(w, arch, "context_length", hp->n_ctx_train, err);
    if (!st) st = add_u32(w, arch, "embedding_length", hp->n_embd, err);
    if (!st) st = add_u32(w, arch, "feed_forward_length", hp->n_ff, err);
    if (!st) st = add_u32(w, arch, "attention.head_count", hp->n_head, err);
    if (!st) st = add_u32(w, arch, "attention.head_count_kv", hp->n_head_kv, err);
    if (!st && hp->rope_theta > 0) st = add_f32(w, arch, "rope.freq_base", hp->rope_theta, err);
    if (!st) st = add_f32(w, arch, "attention.layer_norm_rms_epsilon", hp->norm_eps, err);
    if (!st && hp->head_dim > 0) st = add_u32(w, arch, "attention.key_length", hp->head_dim, err);
    if (!st && hp->head_dim > 0) st = add_u32(w, arch, "attention.value_length", hp->head_dim, err);
    if (!st && file_type != KV_GGUF_NO_FILE_TYPE) st = kv_gguf_writer_add_u32(w, "general.file_type", file_type, err);
    /* LlamaModel.set_gguf_parameters */
    if (!st && !strcmp(arch, "llama")) {
        st = add_u32(w, arch, "vocab_size", hp->n_vocab, err);
        if (!st) st = add_u32(w, arch, "rope.dimension_count", hp->head_dim, err);
        if (!st && hp->rope_scaling == KV_ROPE_SCALING_LINEAR) {
            st = kv_gguf_writer_add_str(w, "llama.rope.scaling.type", "linear", err);
            if (!st) st = add_f32(w, arch, "rope.scaling.factor", hp->rope_factor, err);
        }
    }
    if (!st) st = kv_gguf_writer_add_u32(w, "general.quantization_version", 2, err);
    if (!st) st = add_tokenizer(w, mf, err);
    return st;
}

/* ---- tensors ------------------------------------------------------------------------------------ */

typedef struct conv_tensor {
    const kv_tensor *t;
    uint32_t out_type;
    int n_head;            /* q/k permutation heads, 0 for none */
    int64_t ne0;
} conv_tensor;

/* GGUF row r of a permuted tensor comes from HF row hf_row(r) (LlamaModel.permute). */
static int64_t hf_row(int64_t r, int64_t n_rows, int n_head) {
    int64_t hd = n_rows / n_head, h = r / hd, k = r % hd;
    return h * hd + (k % 2) * (hd / 2) + k / 2;
}

static kv_status conv_rows(void *ctx, int64_t first_row, int64_t nrows, void *dst, kv_error *err) {
    const conv_tensor *c = ctx;
    const kv_tensor *t = c->t;
    int64_t total_rows = c->ne0 ? kv_tensor_nelements(t) / c->ne0 : 0;
    size_t out_rb = kv_type_row_bytes(c->out_type, c->ne0);
    float *tmp = c->t->type == c->out_type ? NULL : kv_malloc((size_t)c->ne0 * sizeof(float), err);
    if (c->t->type != c->out_type && !tmp) return KV_ENOMEM;
    kv_status st = KV_OK;
    for (int64_t i = 0; i < nrows && !st; i++) {
        int64_t r = first_row + i, src = c->n_head ? hf_row(r, total_rows, c->n_head) : r;
        uint8_t *out = (uint8_t *)dst + (size_t)i * out_rb;
        if (!tmp) {
            memcpy(out, kv_tensor_row_bytes(t, src), out_rb);
            continue;
        }
        st = kv_tensor_row_f32(t, src, tmp, err);
        if (st) break;
        if (c->out_type == KV_TYPE_F32) memcpy(out, tmp, out_rb);
        else if (c->out_type == KV_TYPE_F16) kv_fp32_to_fp16_row(tmp, (uint16_t *)(void *)out, (size_t)c->ne0);
        else kv_fp32_to_bf16_row(tmp, (uint16_t *)(void *)out, (size_t)c->ne0);
    }
    free(tmp);
    return st;
}

/* llama3 rope scaling: llama.cpp stores the per-frequency factors as the tensor rope_freqs.weight. */
static void llama3_rope_factors(const kv_hparams *hp, float *out) {
    int dim = hp->head_dim;
    double base = hp->rope_theta > 0 ? hp->rope_theta : 10000.0, factor = hp->rope_factor;
    double lo = hp->rope_low_freq_factor, hi = hp->rope_high_freq_factor, old_ctx = hp->rope_orig_ctx;
    double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
    for (int i = 0; i < dim / 2; i++) {
        /* torch computes the exponent arange(0, dim, 2) / dim in float32 */
        float expo = (float)(2 * i) / (float)dim;
        float freq = (float)(1.0 / pow(base, expo));
        double wavelen = 2 * M_PI / freq;
        if (wavelen < hi_wavelen) out[i] = 1.0f;
        else if (wavelen > lo_wavelen) out[i] = (float)factor;
        else {
            double smooth = (old_ctx / wavelen - lo) / (hi - lo);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

kv_status kv_gguf_add_rope_freqs(kv_gguf_writer *w, const kv_hparams *hp, float store[512], kv_error *err) {
    if (hp->rope_scaling != KV_ROPE_SCALING_LLAMA3 || strcmp(kv_gguf_arch_of(hp), "llama")) return KV_OK;
    if (hp->head_dim <= 0 || hp->head_dim > 1024)
        return kv_fail(err, KV_ERANGE, "head_dim %d out of range for the llama3 rope factors", hp->head_dim);
    llama3_rope_factors(hp, store);
    int64_t shape[1] = {hp->head_dim / 2};
    return kv_gguf_writer_add_tensor(w, "rope_freqs.weight", 1, shape, KV_TYPE_F32, store, err);
}

kv_status kv_gguf_convert(const char *src, const char *dst, uint32_t outtype, int quiet, kv_convert_result *res,
                          kv_error *err) {
    kv_error_clear(err);
    if (res) memset(res, 0, sizeof *res);
    uint32_t ftype;
    if (!file_type_of(outtype, &ftype))
        return kv_fail(err, KV_EINVAL, "output type must be f32, f16 or bf16 (got type id %u)", outtype);
    kv_model_file *mf;
    kv_status st = kv_model_open(src, &mf, err);
    if (st) return st;
    const kv_hparams *hp = kv_model_hparams(mf);
    int64_t n = kv_model_n_tensors(mf);
    conv_tensor *conv = kv_calloc((size_t)n + 1, sizeof *conv, err);
    kv_gguf_writer *w = NULL;
    float rope_freqs[512];
    if (!conv) st = KV_ENOMEM;
    if (!st) st = kv_gguf_writer_create(&w, err);
    if (!st) st = kv_gguf_add_model_metadata(w, mf, ftype, err);
    if (!st) st = kv_gguf_add_rope_freqs(w, hp, rope_freqs, err);
    uint64_t total = 0;
    for (int64_t i = 0; i < n && !st; i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        if (!t->name[0]) { /* tensors without a llama.cpp name (rotary caches ...) are left out */
            if (res) res->n_skipped++;
            continue;
        }
        char key[256];
        snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, t->name);
        if ((mf->gguf && kv_gguf_find_key(mf->gguf, key) >= 0) || kv_model_meta_string(mf, key)) { /* a plain GGUF would lose the online rotation (FORMAT.md "1032") */
            st = kv_fail(err, KV_EUNSUPPORTED, "the weight needs the online rotation recorded in %s, which a plain "
                         "GGUF cannot express (llama.cpp would run it unrotated)", key);
            kv_error_context(err, src, -1, t->name);
            break;
        }
        if (t->type != KV_TYPE_F32 && t->type != KV_TYPE_F16 && t->type != KV_TYPE_BF16) {
            const kv_type_info *ti = kv_type_get(t->type);
            st = kv_fail(err, KV_EUNSUPPORTED, "convert takes f32/f16/bf16 tensors, not %s (use kvant quantize)",
                         ti ? ti->name : "a kvant format");
            kv_error_context(err, src, -1, t->name);
            break;
        }
        conv_tensor *c = &conv[i];
        c->t = t;
        c->out_type = kv_gguf_plain_type_for(t, outtype);
        c->n_head = kv_gguf_qk_heads(hp, t->name);
        c->ne0 = t->n_dims ? t->shape[t->n_dims - 1] : 1;
        if (c->n_head && t->shape[0] % (2 * (int64_t)c->n_head)) {
            st = kv_fail(err, KV_EFORMAT, "%" PRId64 " rows do not split into %d heads for the rotary permutation",
                         t->shape[0], c->n_head);
            kv_error_context(err, src, -1, t->name);
            break;
        }
        if (c->out_type == t->type && !c->n_head)
            st = kv_gguf_writer_add_tensor(w, t->name, t->n_dims, t->shape, c->out_type, t->data, err);
        else
            st = kv_gguf_writer_add_tensor_fn(w, t->name, t->n_dims, t->shape, c->out_type, conv_rows, c, err);
        total += kv_type_row_bytes(c->out_type, c->ne0) * (uint64_t)(c->ne0 ? kv_tensor_nelements(t) / c->ne0 : 0);
        if (res) res->n_tensors++;
    }
    if (!st) {
        kv_progress p;
        kv_progress_begin(&p, "convert", (int64_t)total, quiet);
        st = kv_gguf_writer_write(w, dst, &p, err);
        kv_progress_end(&p);
    }
    if (!st && res) res->bytes = total;
    kv_gguf_writer_free(w);
    free(conv);
    kv_model_close(mf);
    return st;
}
