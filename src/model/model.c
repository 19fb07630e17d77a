/* model.c — kv_model: the runnable weights of a Llama-family model built from an opened kv_model_file
 * (llama2.c run.c's build_transformer / memory_map_weights, generalised): linears borrow the file's mapped
 * rows in their storage format (the weight seam: any kv_format), norms become fp32, RoPE frequencies are
 * precomputed with the config's scaling (Hugging Face modeling_rope_utils: default, linear, llama3). */
#include "model/model.h"
#include "kernels/cpu/matmul.h"
#include <math.h>
#include <stdio.h>

static const char *const k_linear_names[KV_LINEAR_COUNT] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "output"};

const char *kv_linear_name(kv_linear_id id) {
    return (unsigned)id < KV_LINEAR_COUNT ? k_linear_names[id] : "?";
}

const kv_hparams *kv_model_get_hparams(const kv_model *m) { return m ? &m->hp : NULL; }

kv_weight *kv_model_weight_mut(kv_model *m, int layer, kv_linear_id which) {
    if (!m) return NULL;
    if (which == KV_LINEAR_HEAD) return layer == m->hp.n_layer ? &m->head : NULL;
    if ((unsigned)which >= KV_N_BLOCK_LINEARS || layer < 0 || layer >= m->hp.n_layer) return NULL;
    return &m->layers[layer].w[which];
}

const kv_weight *kv_model_weight(const kv_model *m, int layer, kv_linear_id which) {
    return kv_model_weight_mut((kv_model *)m, layer, which);
}

const kv_weight *kv_model_embedding(const kv_model *m) { return m ? &m->tok_embd : NULL; }

int kv_model_linear_by_name(const kv_model *m, const char *name, int *layer, kv_linear_id *which) {
    if (!m || !name) return -1;
    if (!strcmp(name, "token_embd.weight")) { *layer = -1; *which = KV_LINEAR_COUNT; return 0; }
    if (!strcmp(name, "output.weight")) { *layer = m->hp.n_layer; *which = KV_LINEAR_HEAD; return 0; }
    int l = -1, used = 0;
    if (sscanf(name, "blk.%d.%n", &l, &used) != 1 || used == 0 || l < 0 || l >= m->hp.n_layer) return -1;
    const char *rest = name + used;
    for (int i = 0; i < KV_N_BLOCK_LINEARS; i++) {
        size_t len = strlen(k_linear_names[i]);
        if (!strncmp(rest, k_linear_names[i], len) && !strcmp(rest + len, ".weight")) {
            *layer = l;
            *which = (kv_linear_id)i;
            return 0;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------- */
/* loading                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static void weight_release(kv_weight *w) {
    kv_weight_unpack(w);
    free(w->owned);
    free(w->bias);
    free(w->rht_signs);
    free(w->outlier_cols);
    free(w->outlier_mask);
    free(w->outlier_w);
    memset(w, 0, sizeof *w);
}

/* The kv_format of a stored tensor: ggml ids directly, kvant-only ids by their metadata name. */
static kv_status tensor_format(const kv_model_file *mf, const kv_tensor *t, kv_format *fmt, kv_error *err) {
    if (t->type >= KV_TYPE_KVANT_BASE) {
        char key[256];
        snprintf(key, sizeof key, "kvant.tensor.%s.format", t->name);
        const char *name = kv_model_meta_string(mf, key);
        if (!name) return kv_fail(err, KV_EFORMAT, "kvant-only tensor type %u without metadata '%s'", t->type, key);
        return kv_format_get(name, fmt, err);
    }
    return kv_format_from_type(t->type, fmt, err);
}

/* An entropy-coded matrix (KV_TYPE_ECW) is decoded once, here, into fp32: the model runs exactly the stored
 * weights (docs/FORMAT.md "kvant ECW"). Errors name the file, offset and tensor. */
static kv_status load_ecw(const kv_model_file *mf, const kv_tensor *t, int64_t rows, int64_t cols, kv_weight *w,
                          kv_error *err) {
    float *f = kv_malloc((size_t)rows * (size_t)cols * sizeof(float), err);
    if (!f) return KV_ENOMEM;
    kv_status st = kv_ecw_tensor_to_f32(mf, t, f, NULL, err);
    if (st == KV_OK) st = kv_format_from_type(KV_TYPE_F32, &w->fmt, err);
    if (st != KV_OK) {
        free(f);
        return st;
    }
    w->rows = rows;
    w->cols = cols;
    w->data = w->owned = f;
    return KV_OK;
}

static kv_status load_weight(const kv_model_file *mf, const char *name, int64_t rows, int64_t cols, int to_f32,
                             kv_weight *w, kv_error *err) {
    const kv_tensor *t = kv_model_find(mf, name);
    if (!t) return kv_fail(err, KV_ENOTFOUND, "tensor '%s' is missing", name);
    kv_status st = KV_OK;
    if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        st = kv_fail(err, KV_EFORMAT, "tensor has shape [%lld, %lld] (%d dims), expected [%lld, %lld]",
                     (long long)t->shape[0], (long long)(t->n_dims > 1 ? t->shape[1] : 0), t->n_dims,
                     (long long)rows, (long long)cols);
        goto fail;
    }
    if (t->type == KV_TYPE_ECW) return load_ecw(mf, t, rows, cols, w, err);
    if ((st = tensor_format(mf, t, &w->fmt, err)) != KV_OK) goto fail;
    const size_t rb = kv_format_row_bytes(&w->fmt, cols);
    if (rb == 0 || (uint64_t)rb * (uint64_t)rows != t->nbytes) {
        st = kv_fail(err, KV_EFORMAT, "%llu bytes do not hold %lld rows of %lld %s values", (unsigned long long)t->nbytes,
                     (long long)rows, (long long)cols, w->fmt.name);
        goto fail;
    }
    if (w->fmt.type != KV_TYPE_F32 && w->fmt.type != KV_TYPE_F16 && w->fmt.type != KV_TYPE_BF16 &&
        !w->fmt.dequantize) {
        st = kv_fail(err, KV_EUNSUPPORTED, "format %s cannot be dequantized", w->fmt.name);
        goto fail;
    }
    w->rows = rows;
    w->cols = cols;
    w->data = t->data;
    if (to_f32 && (w->fmt.type == KV_TYPE_F16 || w->fmt.type == KV_TYPE_BF16)) {
        float *f = kv_malloc((size_t)rows * (size_t)cols * sizeof(float), err);
        if (!f) { st = KV_ENOMEM; goto fail; }
        for (int64_t r = 0; r < rows; r++) {
            const uint16_t *src = kv_tensor_row_bytes(t, r);
            if (w->fmt.type == KV_TYPE_F16) kv_fp16_to_fp32_row(src, f + r * cols, (size_t)cols);
            else kv_bf16_to_fp32_row(src, f + r * cols, (size_t)cols);
        }
        if ((st = kv_format_from_type(KV_TYPE_F32, &w->fmt, err)) != KV_OK) { free(f); goto fail; }
        w->data = w->owned = f;
    } else if (t->qk_heads > 0) { /* GGUF q/k rows in llama.cpp's order: the model keeps an un-permuted copy */
        void *copy = kv_malloc((size_t)t->nbytes, err);
        if (!copy) { st = KV_ENOMEM; goto fail; }
        if ((st = kv_tensor_copy_bytes(t, copy, err)) != KV_OK) { free(copy); goto fail; }
        w->data = w->owned = copy;
    }
    return KV_OK;
fail:
    kv_error_context(err, kv_model_path(mf), t ? (int64_t)t->offset : -1, name);
    return st;
}

/* A 1-D fp32 copy of a vector tensor (norm weights, biases). */
static kv_status load_vector(const kv_model_file *mf, const char *name, int64_t n, float **out, kv_error *err) {
    const kv_tensor *t = kv_model_find(mf, name);
    if (!t) return kv_fail(err, KV_ENOTFOUND, "tensor '%s' is missing", name);
    kv_status st;
    if (t->n_dims != 1 || t->shape[0] != n) {
        st = kv_fail(err, KV_EFORMAT, "tensor has %d dims / %lld elements, expected a vector of %lld", t->n_dims,
                     (long long)t->shape[0], (long long)n);
        goto fail;
    }
    float *v = kv_malloc((size_t)n * sizeof(float), err);
    if (!v) return KV_ENOMEM;
    if ((st = kv_tensor_to_f32(t, v, err)) != KV_OK) { free(v); goto fail; }
    *out = v;
    return KV_OK;
fail:
    kv_error_context(err, kv_model_path(mf), (int64_t)t->offset, name);
    return st;
}

static kv_status check_hparams(const kv_hparams *hp, kv_error *err) {
    /* the architecture first: another model's keys are missing, which is not what is wrong */
    if (strcmp(hp->arch, "llama") && strcmp(hp->arch, "mistral") && strcmp(hp->arch, "qwen2") && hp->arch[0])
        return kv_fail(err, KV_EUNSUPPORTED, "unsupported architecture '%s' (kvant runs llama, mistral, qwen2)", hp->arch);
    if (hp->n_vocab <= 0 || hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->head_dim <= 0 || hp->n_ff <= 0)
        return kv_fail(err, KV_EFORMAT, "incomplete hyper-parameters (vocab %d, embd %d, layers %d, heads %d/%d, "
                       "head_dim %d, ff %d)", hp->n_vocab, hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv,
                       hp->head_dim, hp->n_ff);
    if (hp->n_head % hp->n_head_kv != 0)
        return kv_fail(err, KV_EFORMAT, "n_head %d is not a multiple of n_head_kv %d", hp->n_head, hp->n_head_kv);
    if (hp->head_dim % 2 != 0) return kv_fail(err, KV_EFORMAT, "head_dim %d is odd (RoPE needs pairs)", hp->head_dim);
    if (!(hp->norm_eps > 0) || !(hp->rope_theta > 0) || !isfinite(hp->norm_eps) || !isfinite(hp->rope_theta))
        return kv_fail(err, KV_EFORMAT, "norm_eps %g / rope_theta %g must be positive and finite", hp->norm_eps,
                       hp->rope_theta);
    if (hp->rope_scaling != KV_ROPE_SCALING_NONE && (!isfinite(hp->rope_factor) || hp->rope_factor < 0))
        return kv_fail(err, KV_EFORMAT, "rope scaling factor %g must be positive and finite", hp->rope_factor);
    return KV_OK;
}

/* Online Hadamards recorded by `kvant quantize --transform rht|quarot` in a GGUF (KV_META_RHT_*_FMT keys):
 * the stored weight holds W·Rᵀ, so the forward pass must apply R to the input again. */
static kv_status load_rht_metadata(kv_model *m, const kv_model_file *mf, kv_error *err) {
    if (kv_model_format(mf) != KV_FILE_GGUF) return KV_OK;
    kv_gguf *g = NULL;
    kv_status st = kv_gguf_open(kv_model_path(mf), &g, err);
    if (st != KV_OK) return st;
    for (int l = 0; l <= m->hp.n_layer && st == KV_OK; l++) {
        for (int i = 0; i < KV_LINEAR_COUNT && st == KV_OK; i++) {
            if ((i == KV_LINEAR_HEAD) != (l == m->hp.n_layer)) continue;
            char name[96], key[256];
            if (i == KV_LINEAR_HEAD) snprintf(name, sizeof name, "output.weight");
            else snprintf(name, sizeof name, "blk.%d.%s.weight", l, k_linear_names[i]);
            snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, name);
            if (kv_gguf_find_key(g, key) < 0) continue;
            uint32_t block = 0;
            uint64_t seed = 0;
            if ((st = kv_gguf_get_u32(g, key, &block, err)) != KV_OK) break;
            snprintf(key, sizeof key, KV_META_RHT_SEED_FMT, name);
            if ((st = kv_gguf_get_u64(g, key, &seed, err)) != KV_OK) break;
            if (block > (1u << 24)) { st = kv_fail(err, KV_EFORMAT, "rht block %u out of range", block); break; }
            st = kv_model_set_rht(m, name, (int32_t)block, seed, err);
        }
    }
    if (st != KV_OK) kv_error_context(err, kv_model_path(mf), -1, NULL);
    kv_gguf_close(g);
    return st;
}

/* Inverse RoPE frequencies as Hugging Face computes them (fp32 base power), then the config's scaling. */
static void rope_frequencies(const kv_hparams *hp, kv_rope_freq_mode mode, double *inv) {
    const int half = hp->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float f = 1.0f / powf(hp->rope_theta, (float)(2 * i) / (float)hp->head_dim);
        double v = f;
        if (hp->rope_scaling == KV_ROPE_SCALING_LINEAR && hp->rope_factor > 0) {
            v /= hp->rope_factor;
        } else if (hp->rope_scaling == KV_ROPE_SCALING_LLAMA3 && hp->rope_factor > 0) {
            /* modeling_rope_utils._compute_llama3_parameters */
            const double lo = hp->rope_low_freq_factor > 0 ? hp->rope_low_freq_factor : 1.0;
            const double hi = hp->rope_high_freq_factor > 0 ? hp->rope_high_freq_factor : 4.0;
            const double old = hp->rope_orig_ctx > 0 ? hp->rope_orig_ctx : 8192.0;
            const double low_wavelen = old / lo, high_wavelen = old / hi;
            const double wavelen = 2.0 * M_PI / v;
            if (wavelen > low_wavelen) {
                v /= hp->rope_factor;
            } else if (wavelen >= high_wavelen && hi != lo) {
                const double smooth = (old / wavelen - lo) / (hi - lo);
                v = (1.0 - smooth) * v / hp->rope_factor + smooth * v;
            }
        }
        if (mode == KV_ROPE_FREQ_BF16) v = kv_bf16_to_fp32(kv_fp32_to_bf16((float)v));
        else if (mode == KV_ROPE_FREQ_F16) v = kv_fp16_to_fp32(kv_fp32_to_fp16((float)v));
        inv[i] = v;
    }
}

void kv_model_free(kv_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->hp.n_layer; l++) {
            free(m->layers[l].attn_norm);
            free(m->layers[l].ffn_norm);
            for (int i = 0; i < KV_N_BLOCK_LINEARS; i++) weight_release(&m->layers[l].w[i]);
        }
        free(m->layers);
    }
    if (m->head_tied) m->head.owned = NULL; /* borrowed from tok_embd (its packed panels are its own) */
    weight_release(&m->head);
    weight_release(&m->tok_embd);
    free(m->output_norm);
    free(m->rope_inv_freq);
    free(m);
}

/* fp32 panels only for plain float weights: quantized weights stay packed in memory (the dequantizing GEMM
 * unpacks one tile at a time), so a q4 model costs its file size, not 4 bytes per weight. */
static int prepack_wanted(const kv_weight *w) {
    return !w->llmint8 && (w->fmt.type == KV_TYPE_F32 || w->fmt.type == KV_TYPE_F16 || w->fmt.type == KV_TYPE_BF16);
}

kv_status kv_model_load(const kv_model_file *mf, const kv_model_load_opts *opts, kv_model **out, kv_error *err) {
    if (!mf || !out) return kv_fail(err, KV_EINVAL, "kv_model_load: NULL argument");
    *out = NULL;
    const kv_hparams *hp = kv_model_hparams(mf);
    if (!hp) return kv_fail(err, KV_EFORMAT, "model has no hyper-parameters");
    kv_status st = check_hparams(hp, err);
    if (st != KV_OK) { kv_error_context(err, kv_model_path(mf), -1, NULL); return st; }
    const int to_f32 = opts && opts->weights_f32;
    kv_model *m = kv_calloc(1, sizeof *m, err);
    if (!m) return KV_ENOMEM;
    m->hp = *hp;
    m->mf = mf;
    m->bf16_dot = opts && opts->bf16_dot;
    m->act_q8 = opts && opts->act_q8;
    const int64_t d = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t ff = hp->n_ff;
    m->layers = kv_calloc((size_t)hp->n_layer, sizeof *m->layers, err);
    m->rope_inv_freq = kv_malloc((size_t)hp->head_dim / 2 * sizeof(double), err);
    if (!m->layers || !m->rope_inv_freq) { st = KV_ENOMEM; goto fail; }
    if ((st = load_weight(mf, "token_embd.weight", hp->n_vocab, d, 0, &m->tok_embd, err)) != KV_OK) goto fail;
    kv_rope_freq_mode rmode = opts ? opts->rope_freq : KV_ROPE_FREQ_AUTO;
    if (rmode == KV_ROPE_FREQ_AUTO) {
        /* transformers casts the inv_freq buffer to the checkpoint dtype (see kv_rope_freq_mode) */
        const uint32_t ty = m->tok_embd.fmt.type;
        rmode = kv_model_format(mf) != KV_FILE_HF ? KV_ROPE_FREQ_EXACT
              : ty == KV_TYPE_BF16 ? KV_ROPE_FREQ_BF16 : ty == KV_TYPE_F16 ? KV_ROPE_FREQ_F16 : KV_ROPE_FREQ_EXACT;
    }
    rope_frequencies(hp, rmode, m->rope_inv_freq);
    if ((st = load_vector(mf, "output_norm.weight", d, &m->output_norm, err)) != KV_OK) goto fail;
    if (!hp->tie_embeddings && kv_model_find(mf, "output.weight")) {
        if ((st = load_weight(mf, "output.weight", hp->n_vocab, d, to_f32, &m->head, err)) != KV_OK) goto fail;
    } else {
        m->head = m->tok_embd;
        m->head.owned = NULL;
        m->head_tied = 1;
    }
    const int64_t shapes[KV_N_BLOCK_LINEARS][2] = {{qd, d}, {kvd, d}, {kvd, d}, {d, qd}, {ff, d}, {ff, d}, {d, ff}};
    for (int l = 0; l < hp->n_layer; l++) {
        kv_layer *L = &m->layers[l];
        char name[96];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if ((st = load_vector(mf, name, d, &L->attn_norm, err)) != KV_OK) goto fail;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        if ((st = load_vector(mf, name, d, &L->ffn_norm, err)) != KV_OK) goto fail;
        for (int i = 0; i < KV_N_BLOCK_LINEARS; i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, k_linear_names[i]);
            if ((st = load_weight(mf, name, shapes[i][0], shapes[i][1], to_f32, &L->w[i], err)) != KV_OK) goto fail;
            if (i <= KV_LINEAR_V) {
                snprintf(name, sizeof name, "blk.%d.%s.bias", l, k_linear_names[i]);
                if (kv_model_find(mf, name)) {
                    if ((st = load_vector(mf, name, shapes[i][0], &L->w[i].bias, err)) != KV_OK) goto fail;
                } else if (hp->attn_bias) {
                    st = kv_fail(err, KV_ENOTFOUND, "tensor '%s' is missing (the config has attention biases)", name);
                    kv_error_context(err, kv_model_path(mf), -1, name);
                    goto fail;
                }
            }
        }
    }
    if ((st = load_rht_metadata(m, mf, err)) != KV_OK) goto fail;
    if ((st = kv_llmint8_attach(m, mf, err)) != KV_OK) goto fail;
    if (kv_model_act_format(mf)) { /* a compressed-tensors W8A8 / FP8 checkpoint: its loader's activation quantizer */
        kv_format af;
        if ((st = kv_format_get(kv_model_act_format(mf), &af, err)) != KV_OK) goto fail;
        if ((st = kv_model_set_act_quant(m, &af, 0, err)) != KV_OK) goto fail;
    }
    if (opts && opts->prepack) { /* LLM.int8() weights run their own int8 kernel: no fp32 panels */
        for (int l = 0; l < hp->n_layer; l++)
            for (int i = 0; i < KV_N_BLOCK_LINEARS; i++)
                if (prepack_wanted(&m->layers[l].w[i]) && (st = kv_weight_prepack(&m->layers[l].w[i], err)) != KV_OK)
                    goto fail;
        if (prepack_wanted(&m->head) && (st = kv_weight_prepack(&m->head, err)) != KV_OK) goto fail;
    }
    *out = m;
    return KV_OK;
fail:
    kv_model_free(m);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* editing (quantize pipeline, transforms)                                                         */
/* ---------------------------------------------------------------------------------------------- */

kv_status kv_model_set_weight(kv_model *m, const char *tensor_name, const kv_format *fmt, const void *data,
                              int take_ownership, kv_error *err) {
    if (!m || !tensor_name || !fmt || !data) return kv_fail(err, KV_EINVAL, "kv_model_set_weight: NULL argument");
    int layer;
    kv_linear_id which;
    if (kv_model_linear_by_name(m, tensor_name, &layer, &which) != 0) {
        kv_fail(err, KV_ENOTFOUND, "not a linear weight or token_embd.weight of this model");
        kv_error_context(err, NULL, -1, tensor_name);
        return KV_ENOTFOUND;
    }
    kv_weight *w = layer < 0 ? &m->tok_embd : kv_model_weight_mut(m, layer, which);
    if (kv_format_row_bytes(fmt, w->cols) == 0) {
        kv_fail(err, KV_EINVAL, "rows of %lld do not fit format %s (block %d)", (long long)w->cols, fmt->name,
                (int)fmt->block);
        kv_error_context(err, NULL, -1, tensor_name);
        return KV_EINVAL;
    }
    if (fmt->type != KV_TYPE_F32 && fmt->type != KV_TYPE_F16 && fmt->type != KV_TYPE_BF16 && !fmt->dequantize) {
        kv_fail(err, KV_EUNSUPPORTED, "format %s cannot be dequantized", fmt->name);
        kv_error_context(err, NULL, -1, tensor_name);
        return KV_EUNSUPPORTED;
    }
    if (which == KV_LINEAR_HEAD && m->head_tied) {
        m->head.owned = NULL;
        m->head_tied = 0;
    }
    kv_weight_unpack(w); /* cached panels belong to the old bytes */
    free(w->owned);
    free(w->outlier_cols); /* LLM.int8() columns describe the old bytes too */
    free(w->outlier_mask);
    free(w->outlier_w);
    w->outlier_cols = NULL;
    w->outlier_mask = NULL;
    w->outlier_w = NULL;
    w->n_outliers = 0;
    w->llmint8 = 0;
    w->fmt = *fmt;
    w->data = data;
    w->owned = take_ownership ? (void *)data : NULL;
    if (layer < 0 && m->head_tied) {
        kv_weight_unpack(&m->head);
        m->head.fmt = *fmt;
        m->head.data = data;
    }
    return KV_OK;
}

kv_status kv_model_linears_to_f32(kv_model *m, kv_error *err) {
    kv_format f32;
    kv_status st = kv_format_from_type(KV_TYPE_F32, &f32, err);
    const int n_layer = m->hp.n_layer;
    for (int l = 0; l <= n_layer && st == KV_OK; l++)
        for (int k = 0; k < KV_LINEAR_COUNT && st == KV_OK; k++) {
            const kv_linear_id id = (kv_linear_id)k;
            if ((l == n_layer) != (id == KV_LINEAR_HEAD)) continue;
            const kv_weight *w = kv_model_weight(m, l, id);
            if (!w || w->llmint8 || w->fmt.type == KV_TYPE_F32 || !w->fmt.dequantize) continue; /* LLM.int8: own kernel */
            const size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
            float *d = kv_malloc((size_t)w->rows * (size_t)w->cols * sizeof(float), err);
            if (!d) return KV_ENOMEM;
            for (int64_t r = 0; r < w->rows; r++)
                w->fmt.dequantize(&w->fmt, (const uint8_t *)w->data + (size_t)r * rb, d + r * w->cols, w->cols);
            char name[96];
            if (id == KV_LINEAR_HEAD) snprintf(name, sizeof name, "output.weight");
            else snprintf(name, sizeof name, "blk.%d.%s.weight", l, kv_linear_name(id));
            if ((st = kv_model_set_weight(m, name, &f32, d, 1, err)) != KV_OK) free(d);
        }
    return st;
}

kv_status kv_model_set_rht(kv_model *m, const char *tensor_name, int32_t block, uint64_t seed, kv_error *err) {
    int layer;
    kv_linear_id which;
    if (!m || !tensor_name || kv_model_linear_by_name(m, tensor_name, &layer, &which) != 0 || layer < 0) {
        kv_fail(err, KV_ENOTFOUND, "not a linear weight of this model");
        kv_error_context(err, NULL, -1, tensor_name);
        return KV_ENOTFOUND;
    }
    kv_weight *w = kv_model_weight_mut(m, layer, which);
    if (which == KV_LINEAR_HEAD && m->head_tied) {
        kv_fail(err, KV_EUNSUPPORTED, "online Hadamard on a head tied to the embedding");
        kv_error_context(err, NULL, -1, tensor_name);
        return KV_EUNSUPPORTED;
    }
    free(w->rht_signs);
    w->rht_signs = NULL;
    w->rht_block = 0;
    w->rht_seed = 0;
    if (block == 0) return KV_OK;
    if (block < 0 || w->cols % block != 0 || !kv_rht_block_supported(block)) {
        kv_fail(err, KV_EINVAL, "Hadamard block %d does not divide %lld inputs or is not a supported size",
                (int)block, (long long)w->cols);
        kv_error_context(err, NULL, -1, tensor_name);
        return KV_EINVAL;
    }
    w->rht_signs = kv_malloc((size_t)w->cols * sizeof(float), err);
    if (!w->rht_signs) return KV_ENOMEM;
    kv_rht_signs(seed, w->cols, w->rht_signs);
    w->rht_block = block;
    w->rht_seed = seed;
    return KV_OK;
}

kv_status kv_model_set_act_quant(kv_model *m, const kv_format *fmt, int include_head, kv_error *err) {
    if (!m) return kv_fail(err, KV_EINVAL, "kv_model_set_act_quant: NULL model");
    if (!fmt) {
        m->act_quant = 0;
        m->act_quant_head = 0;
        return KV_OK;
    }
    if (!fmt->quantize || !fmt->dequantize)
        return kv_fail(err, KV_EUNSUPPORTED, "format %s has no quantize/dequantize pair", fmt->name);
    const int64_t dims[3] = {m->hp.n_embd, m->hp.n_ff, (int64_t)m->hp.n_head * m->hp.head_dim};
    for (int i = 0; i < 3; i++)
        if (kv_format_row_bytes(fmt, dims[i]) == 0)
            return kv_fail(err, KV_EINVAL, "activation format %s (block %d) does not divide a linear input of %lld",
                           fmt->name, (int)fmt->block, (long long)dims[i]);
    m->act_fmt = *fmt;
    m->act_quant = 1;
    m->act_quant_head = include_head != 0;
    return KV_OK;
}
