/* hf.c — Hugging Face model directories: config.json (transformers LlamaConfig / MistralConfig / Qwen2Config
 * fields, rope_scaling incl. "llama3", transformers 5 `rope_parameters`), model.safetensors or the sharded
 * model.safetensors.index.json (`weight_map`), and the tokenizer file. */
#include "io/model_file.h"
#include "io/safetensors.h"
#include <stdio.h>
#include <sys/stat.h>

#define KV_MAX_DIM (1 << 24) /* sanity bound for every size read from config.json */

static kv_status cfg_fail(kv_error *err, kv_status st, const char *path, const kv_json *at, const char *fmt, const char *key) {
    kv_fail(err, st, fmt, key);
    kv_error_context(err, path, at ? (int64_t)at->offset : -1, NULL);
    return st;
}

/* An integer field in [lo, KV_MAX_DIM]; *found = 0 when absent or null. */
static kv_status cfg_int(const kv_json *cfg, const char *key, const char *path, int64_t lo, int32_t *out, int *found,
                         kv_error *err) {
    int64_t v;
    int r = kv_json_get_int(cfg, key, &v);
    *found = r == 1;
    if (r == 0) return KV_OK;
    if (r < 0) return cfg_fail(err, KV_EFORMAT, path, kv_json_get(cfg, key), "\"%s\" must be an integer", key);
    if (v < lo || v > KV_MAX_DIM)
        return cfg_fail(err, KV_ERANGE, path, kv_json_get(cfg, key), "\"%s\" is out of range", key);
    *out = (int32_t)v;
    return KV_OK;
}

static kv_status cfg_required_int(const kv_json *cfg, const char *key, const char *path, int32_t *out, kv_error *err) {
    int found;
    kv_status st = cfg_int(cfg, key, path, 1, out, &found, err);
    if (!st && !found) return cfg_fail(err, KV_EFORMAT, path, cfg, "required field \"%s\" is missing", key);
    return st;
}

static kv_status cfg_float(const kv_json *cfg, const char *key, const char *path, float *out, kv_error *err) {
    double v;
    int r = kv_json_get_num(cfg, key, &v);
    if (r < 0) return cfg_fail(err, KV_EFORMAT, path, kv_json_get(cfg, key), "\"%s\" must be a number", key);
    if (r == 1) {
        if (!(v > 0) || v > 1e30) return cfg_fail(err, KV_ERANGE, path, kv_json_get(cfg, key), "\"%s\" must be positive", key);
        *out = (float)v;
    }
    return KV_OK;
}

/* bos/eos ids may be an integer, null, or a list (first entry used, as generation stops at any of them). */
static kv_status cfg_token_id(const kv_json *cfg, const char *key, const char *path, int32_t *out, kv_error *err) {
    const kv_json *v = kv_json_get(cfg, key);
    if (!v || v->type == KV_JSON_NULL) return KV_OK;
    if (v->type == KV_JSON_ARRAY && v->len) v = &v->u.items[0];
    if (v->type != KV_JSON_NUMBER || !v->is_int || v->ival < 0 || v->ival > INT32_MAX)
        return cfg_fail(err, KV_EFORMAT, path, v, "\"%s\" must be a non-negative integer", key);
    *out = (int32_t)v->ival;
    return KV_OK;
}

static kv_status parse_rope(const kv_json *rope, const char *path, kv_hparams *hp, kv_error *err) {
    if (!rope || rope->type == KV_JSON_NULL) return KV_OK;
    if (rope->type != KV_JSON_OBJECT) return cfg_fail(err, KV_EFORMAT, path, rope, "%s must be an object", "rope scaling");
    kv_status st = cfg_float(rope, "rope_theta", path, &hp->rope_theta, err);
    if (st) return st;
    const char *type = NULL;
    if (kv_json_get_str(rope, "rope_type", &type) < 0 || (!type && kv_json_get_str(rope, "type", &type) < 0))
        return cfg_fail(err, KV_EFORMAT, path, rope, "%s must be a string", "rope_type");
    if (!type || !strcmp(type, "default")) return KV_OK;
    if (!strcmp(type, "linear")) hp->rope_scaling = KV_ROPE_SCALING_LINEAR;
    else if (!strcmp(type, "llama3")) hp->rope_scaling = KV_ROPE_SCALING_LLAMA3;
    else return cfg_fail(err, KV_EUNSUPPORTED, path, kv_json_get(rope, "rope_type") ? kv_json_get(rope, "rope_type") : rope,
                         "rope scaling type \"%s\" is not supported (default, linear, llama3)", type);
    hp->rope_factor = 0;
    if ((st = cfg_float(rope, "factor", path, &hp->rope_factor, err))) return st;
    if (!(hp->rope_factor > 0)) /* transformers requires it for linear and llama3 scaling */
        return cfg_fail(err, KV_EFORMAT, path, rope, "rope scaling needs a positive \"%s\"", "factor");
    if (hp->rope_scaling == KV_ROPE_SCALING_LLAMA3) {
        int found;
        hp->rope_low_freq_factor = 1.0f;
        hp->rope_high_freq_factor = 4.0f;
        if ((st = cfg_float(rope, "low_freq_factor", path, &hp->rope_low_freq_factor, err))) return st;
        if ((st = cfg_float(rope, "high_freq_factor", path, &hp->rope_high_freq_factor, err))) return st;
        if ((st = cfg_int(rope, "original_max_position_embeddings", path, 1, &hp->rope_orig_ctx, &found, err))) return st;
        if (!found) return cfg_fail(err, KV_EFORMAT, path, rope, "llama3 rope scaling needs \"%s\"", "original_max_position_embeddings");
        if (!(hp->rope_high_freq_factor > hp->rope_low_freq_factor))
            return cfg_fail(err, KV_ERANGE, path, rope, "%s must exceed low_freq_factor", "high_freq_factor");
    }
    return KV_OK;
}

static const struct { const char *model_type, *architecture; } k_archs[] = {
    {"llama", "LlamaForCausalLM"},
    {"mistral", "MistralForCausalLM"},
    {"qwen2", "Qwen2ForCausalLM"},
};

static kv_status parse_arch(const kv_json *cfg, const char *path, kv_hparams *hp, kv_error *err) {
    const char *mt = NULL;
    if (kv_json_get_str(cfg, "model_type", &mt) < 0)
        return cfg_fail(err, KV_EFORMAT, path, kv_json_get(cfg, "model_type"), "\"%s\" must be a string", "model_type");
    const kv_json *archs = kv_json_get(cfg, "architectures");
    for (size_t i = 0; i < KV_ARRAY_LEN(k_archs); i++) {
        int match = mt && !strcmp(mt, k_archs[i].model_type);
        if (!mt && archs && archs->type == KV_JSON_ARRAY && archs->len && archs->u.items[0].type == KV_JSON_STRING)
            match = !strcmp(archs->u.items[0].u.str, k_archs[i].architecture);
        if (match) {
            kv_strlcpy(hp->arch, k_archs[i].model_type, sizeof hp->arch);
            return KV_OK;
        }
    }
    if (!mt) return cfg_fail(err, KV_EFORMAT, path, cfg, "missing \"%s\" (and no known architectures entry)", "model_type");
    return cfg_fail(err, KV_EUNSUPPORTED, path, kv_json_get(cfg, "model_type"),
                    "model_type \"%s\" is not supported (llama, mistral, qwen2)", mt);
}

kv_status kv_hf_config_to_hparams(const kv_json *cfg, const char *path, kv_hparams *hp, kv_error *err) {
    memset(hp, 0, sizeof *hp);
    hp->bos_id = hp->eos_id = -1;
    if (!cfg || cfg->type != KV_JSON_OBJECT) return cfg_fail(err, KV_EFORMAT, path, cfg, "%s must be a JSON object", "config.json");
    kv_status st = parse_arch(cfg, path, hp, err);
    if (st) return st;
    int found;
    if ((st = cfg_required_int(cfg, "hidden_size", path, &hp->n_embd, err)) ||
        (st = cfg_required_int(cfg, "num_hidden_layers", path, &hp->n_layer, err)) ||
        (st = cfg_required_int(cfg, "num_attention_heads", path, &hp->n_head, err)) ||
        (st = cfg_required_int(cfg, "intermediate_size", path, &hp->n_ff, err)) ||
        (st = cfg_required_int(cfg, "vocab_size", path, &hp->n_vocab, err)))
        return st;
    hp->n_head_kv = hp->n_head;
    if ((st = cfg_int(cfg, "num_key_value_heads", path, 1, &hp->n_head_kv, &found, err))) return st;
    if ((st = cfg_int(cfg, "head_dim", path, 1, &hp->head_dim, &found, err))) return st;
    if (!found) {
        if (hp->n_embd % hp->n_head)
            return cfg_fail(err, KV_EFORMAT, path, cfg, "%s is not a multiple of num_attention_heads (and no head_dim)", "hidden_size");
        hp->head_dim = hp->n_embd / hp->n_head;
    }
    if (hp->head_dim % 2) return cfg_fail(err, KV_EFORMAT, path, cfg, "%s must be even for RoPE", "head_dim");
    if (hp->n_head % hp->n_head_kv)
        return cfg_fail(err, KV_EFORMAT, path, kv_json_get(cfg, "num_key_value_heads"),
                        "num_attention_heads is not a multiple of %s", "num_key_value_heads");
    if ((int64_t)hp->n_head * hp->head_dim > KV_MAX_DIM)
        return cfg_fail(err, KV_ERANGE, path, cfg, "%s x heads is out of range", "head_dim");
    hp->n_ctx_train = 2048;
    if ((st = cfg_int(cfg, "max_position_embeddings", path, 1, &hp->n_ctx_train, &found, err))) return st;
    hp->rope_theta = 10000.0f;
    hp->norm_eps = 1e-6f;
    if ((st = cfg_float(cfg, "rope_theta", path, &hp->rope_theta, err))) return st;
    if ((st = cfg_float(cfg, "rms_norm_eps", path, &hp->norm_eps, err))) return st;
    /* transformers 5 moved rope_theta and scaling into rope_parameters; older configs use rope_scaling */
    if ((st = parse_rope(kv_json_get(cfg, "rope_scaling"), path, hp, err))) return st;
    if ((st = parse_rope(kv_json_get(cfg, "rope_parameters"), path, hp, err))) return st;
    if (kv_json_get_bool(cfg, "tie_word_embeddings", &hp->tie_embeddings) < 0)
        return cfg_fail(err, KV_EFORMAT, path, kv_json_get(cfg, "tie_word_embeddings"), "\"%s\" must be a boolean", "tie_word_embeddings");
    if (kv_json_get_bool(cfg, "attention_bias", &hp->attn_bias) < 0)
        return cfg_fail(err, KV_EFORMAT, path, kv_json_get(cfg, "attention_bias"), "\"%s\" must be a boolean", "attention_bias");
    if (!strcmp(hp->arch, "qwen2")) hp->attn_bias = 1; /* Qwen2Attention always has q/k/v biases */
    if ((st = cfg_token_id(cfg, "bos_token_id", path, &hp->bos_id, err))) return st;
    if ((st = cfg_token_id(cfg, "eos_token_id", path, &hp->eos_id, err))) return st;
    return KV_OK;
}

kv_status kv_hf_config_file(const char *path, kv_hparams *hp, kv_error *err) {
    kv_json_doc *doc;
    kv_status st = kv_json_parse_file(path, 16u << 20, &doc, err);
    if (st) return st;
    st = kv_hf_config_to_hparams(kv_json_root(doc), path, hp, err);
    kv_json_free(doc);
    return st;
}

/* ---- safetensors files --------------------------------------------------------------------------------- */

kv_status kv_safetensors_add_tensors(kv_model_file *mf, int file_index, kv_error *err) {
    const kv_mapped *m = &mf->maps[file_index];
    kv_st_header h;
    kv_status st = kv_safetensors_parse(m->data, m->size, m->path, &h, err);
    if (st) return st;
    for (int64_t i = 0; i < h.n_tensors; i++) {
        const kv_st_tensor *s = &h.tensors[i];
        if (s->raw && !mf->allow_raw) {
            st = kv_fail(err, KV_EUNSUPPORTED, "dtype %s is not supported (kvant reads F32, F16, BF16, F64, I8-I64; "
                         "quantized checkpoints need a quantization_config in config.json)", s->dtype);
            kv_error_context(err, m->path, -1, s->name);
            break;
        }
        kv_tensor *t = kv_mf_add_tensor(mf, err);
        if (!t) { st = KV_ENOMEM; break; }
        kv_strlcpy(t->src_name, s->name, sizeof t->src_name);
        if (!kv_name_from_hf(s->name, t->name, sizeof t->name)) t->name[0] = 0;
        t->n_dims = s->n_dims;
        for (int d = 0; d < 4; d++) t->shape[d] = d < s->n_dims ? s->shape[d] : 1;
        t->type = s->type;
        t->offset = h.data_start + s->begin;
        t->nbytes = s->end - s->begin;
        t->data = m->data + t->offset;
        t->file_index = file_index;
    }
    kv_st_header_free(&h);
    return st;
}

kv_status kv_safetensors_open_file(kv_model_file *mf, const char *path, kv_error *err) {
    int idx;
    kv_status st = kv_mf_add_map(mf, path, &idx, err);
    if (st) return st;
    return kv_safetensors_add_tensors(mf, idx, err);
}

/* ---- directories --------------------------------------------------------------------------------------- */

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Shard file names of the weight map: plain names inside the directory, sorted, unique. */
static kv_status index_shards(const kv_json *wm, const char *index_path, const char ***out, int *n_out, kv_error *err) {
    const char **names = kv_malloc((wm->len ? wm->len : 1) * sizeof *names, err);
    if (!names) return KV_ENOMEM;
    for (uint64_t i = 0; i < wm->len; i++) {
        const kv_json *v = &wm->u.items[i];
        if (v->type != KV_JSON_STRING || !v->len || strchr(v->u.str, '/') || !strcmp(v->u.str, "..") ||
            strlen(v->u.str) != v->len) {
            free(names);
            kv_fail(err, KV_EFORMAT, "weight_map entry of '%.100s' must name a file in the model directory", v->key);
            kv_error_context(err, index_path, (int64_t)v->offset, v->key);
            return KV_EFORMAT;
        }
        names[i] = v->u.str;
    }
    qsort(names, wm->len, sizeof *names, cmp_str);
    int n = 0;
    for (uint64_t i = 0; i < wm->len; i++)
        if (n == 0 || strcmp(names[n - 1], names[i])) names[n++] = names[i];
    *out = names;
    *n_out = n;
    return KV_OK;
}

static kv_status open_sharded(kv_model_file *mf, const char *dir, const char *index_path, kv_error *err) {
    kv_json_doc *doc;
    kv_status st = kv_json_parse_file(index_path, 64u << 20, &doc, err);
    if (st) return st;
    const kv_json *wm = kv_json_get(kv_json_root(doc), "weight_map");
    const char **shards = NULL;
    int n_shards = 0;
    if (!wm || wm->type != KV_JSON_OBJECT) {
        st = kv_fail(err, KV_EFORMAT, "missing or non-object \"weight_map\"");
        kv_error_context(err, index_path, wm ? (int64_t)wm->offset : -1, NULL);
        goto done;
    }
    const kv_json *dup = kv_json_find_duplicate_key(wm);
    if (dup) {
        st = kv_fail(err, KV_EFORMAT, "duplicate tensor name in weight_map");
        kv_error_context(err, index_path, (int64_t)dup->offset, dup->key);
        goto done;
    }
    if ((st = index_shards(wm, index_path, &shards, &n_shards, err))) goto done;
    char path[2048];
    for (int s = 0; s < n_shards && !st; s++) {
        snprintf(path, sizeof path, "%s/%s", dir, shards[s]);
        int idx;
        if (!file_exists(path)) {
            st = kv_fail(err, KV_ENOTFOUND, "shard %s named in the index is missing", shards[s]);
            kv_error_context(err, index_path, -1, NULL);
        } else if (!(st = kv_mf_add_map(mf, path, &idx, err))) {
            st = kv_safetensors_add_tensors(mf, idx, err);
        }
    }
    /* every tensor of the index must be in the shard it names, and no tensor in two shards */
    for (uint64_t i = 0; i < wm->len && !st; i++) {
        const kv_json *e = &wm->u.items[i];
        const kv_tensor *hit = NULL;
        int count = 0;
        for (int64_t t = 0; t < mf->n_tensors; t++)
            if (!strcmp(mf->tensors[t].src_name, e->key)) { hit = &mf->tensors[t]; count++; }
        const char *shard = hit ? mf->maps[hit->file_index].path : NULL;
        size_t sl = shard ? strlen(shard) : 0, nl = e->len;
        if (!hit || sl < nl || strcmp(shard + sl - nl, e->u.str)) {
            st = kv_fail(err, KV_ENOTFOUND, "the index places this tensor in %s, which does not contain it", e->u.str);
            kv_error_context(err, index_path, (int64_t)e->offset, e->key);
        } else if (count > 1) {
            st = kv_fail(err, KV_EFORMAT, "tensor appears in more than one shard");
            kv_error_context(err, index_path, (int64_t)e->offset, e->key);
        }
    }
done:
    free(shards);
    kv_json_free(doc);
    return st;
}

kv_status kv_hf_open_dir(kv_model_file *mf, const char *dir, kv_error *err) {
    char path[2048];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!file_exists(path)) {
        kv_fail(err, KV_ENOTFOUND, "not a model directory: config.json is missing");
        kv_error_context(err, dir, -1, NULL);
        return KV_ENOTFOUND;
    }
    kv_json_doc *cfg_doc = NULL;
    kv_status st = kv_json_parse_file(path, 16u << 20, &cfg_doc, err);
    if (!st) st = kv_hf_config_to_hparams(kv_json_root(cfg_doc), path, &mf->hp, err);
    const kv_json *qcfg = st ? NULL : kv_json_get(kv_json_root(cfg_doc), "quantization_config");
    if (qcfg && qcfg->type == KV_JSON_NULL) qcfg = NULL;
    char cfg_path[2048];
    kv_strlcpy(cfg_path, path, sizeof cfg_path);
    if (st) {
        kv_json_free(cfg_doc);
        return st;
    }
    mf->has_hparams = 1;
    mf->allow_raw = qcfg != NULL;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (file_exists(path)) {
        st = open_sharded(mf, dir, path, err);
    } else {
        snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
        int has_pickle = file_exists(path);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (!file_exists(path) && has_pickle) {
            kv_fail(err, KV_EUNSUPPORTED, "PyTorch pickle checkpoints (pytorch_model.bin) are not supported: save the model as safetensors");
            kv_error_context(err, dir, -1, NULL);
            kv_json_free(cfg_doc);
            return KV_EUNSUPPORTED;
        }
        if (!file_exists(path)) {
            kv_fail(err, KV_ENOTFOUND, "no model.safetensors or model.safetensors.index.json in the directory");
            kv_error_context(err, dir, -1, NULL);
            kv_json_free(cfg_doc);
            return KV_ENOTFOUND;
        }
        st = kv_safetensors_open_file(mf, path, err);
    }
    if (!st && qcfg) st = kv_hf_quant_open(mf, qcfg, cfg_path, err);
    kv_json_free(cfg_doc);
    if (st) return st;
    if ((st = kv_mf_check_shapes(mf, err))) return st;
    static const struct { const char *file; kv_tokenizer_source src; } toks[] = {
        {"tokenizer.model", KV_TOKSRC_SPM_MODEL},
        {"tokenizer.json", KV_TOKSRC_HF_JSON},
    };
    for (size_t i = 0; i < KV_ARRAY_LEN(toks); i++) {
        snprintf(mf->tok_path, sizeof mf->tok_path, "%s/%s", dir, toks[i].file);
        if (file_exists(mf->tok_path)) {
            mf->tok = toks[i].src;
            return KV_OK;
        }
    }
    mf->tok_path[0] = 0;
    return KV_OK;
}
