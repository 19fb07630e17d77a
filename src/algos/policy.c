/* policy.c — which format each tensor gets.
 * Source: llama.cpp src/llama-quant.cpp (llama_model_quantize_impl: which tensors are quantized and the
 * default type of each file type; llama_tensor_get_type: the per-tensor choices of the k-quant mixes and the
 * fallback for rows not divisible by the block). docs/quantize.md lists the rules. kvant differences: Falcon,
 * MoE and IQ1/IQ2/IQ3 rules are left out (kvant does not run those architectures or compute those types);
 * formats that are not llama.cpp file types are applied uniformly. */
#include "algos/quantize.h"
#include <ctype.h>
#include <stdio.h>

typedef struct mix_def {
    const char *name;
    int ftype;
    const char *default_type;
} mix_def;

static const mix_def k_mixes[] = {
    {"q4_0", KV_FTYPE_Q4_0, "q4_0"},       {"q4_1", KV_FTYPE_Q4_1, "q4_1"},
    {"q5_0", KV_FTYPE_Q5_0, "q5_0"},       {"q5_1", KV_FTYPE_Q5_1, "q5_1"},
    {"q8_0", KV_FTYPE_Q8_0, "q8_0"},       {"q2_k", KV_FTYPE_Q2_K, "q2_k"},
    {"q2_k_s", KV_FTYPE_Q2_K_S, "q2_k"},   {"q3_k_s", KV_FTYPE_Q3_K_S, "q3_k"},
    {"q3_k_m", KV_FTYPE_Q3_K_M, "q3_k"},   {"q3_k_l", KV_FTYPE_Q3_K_L, "q3_k"},
    {"q4_k_s", KV_FTYPE_Q4_K_S, "q4_k"},   {"q4_k_m", KV_FTYPE_Q4_K_M, "q4_k"},
    {"q5_k_s", KV_FTYPE_Q5_K_S, "q5_k"},   {"q5_k_m", KV_FTYPE_Q5_K_M, "q5_k"},
    {"q6_k", KV_FTYPE_Q6_K, "q6_k"},       {"iq4_nl", KV_FTYPE_IQ4_NL, "iq4_nl"},
    {"iq4_xs", KV_FTYPE_IQ4_XS, "iq4_xs"},
};

int kv_policy_mix_ftype(const char *name, const char **default_type) {
    for (size_t i = 0; i < KV_ARRAY_LEN(k_mixes); i++)
        if (!strcmp(name, k_mixes[i].name)) {
            if (default_type) *default_type = k_mixes[i].default_type;
            return k_mixes[i].ftype;
        }
    return -1;
}

const char *kv_policy_mix_names(void) {
    return "q2_k q2_k_s q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k q4_0 q4_1 q5_0 q5_1 q8_0 "
           "iq4_nl iq4_xs";
}

static void lower_copy(char *dst, size_t n, const char *src) {
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = 0;
}

kv_status kv_policy_init(kv_policy *p, const char *format, kv_error *err) {
    memset(p, 0, sizeof *p);
    if (!format || !*format) return kv_fail(err, KV_EINVAL, "empty format name");
    if (strlen(format) >= sizeof p->format) return kv_fail(err, KV_EINVAL, "format name too long: '%s'", format);
    lower_copy(p->format, sizeof p->format, format);
    const char *def = NULL;
    p->ftype = kv_policy_mix_ftype(p->format, &def);
    kv_strlcpy(p->base_format, def ? def : p->format, sizeof p->base_format);
    kv_format f;
    kv_error sub;
    kv_error_clear(&sub);
    if (kv_format_get(p->base_format, &f, &sub) != KV_OK)
        return kv_fail(err, KV_EINVAL, "%s; llama.cpp mixes: %s", sub.message, kv_policy_mix_names());
    return KV_OK;
}

kv_status kv_policy_add_override(kv_policy *p, const char *spec, kv_error *err) {
    const char *eq = spec ? strrchr(spec, '=') : NULL;
    if (!eq || eq == spec || !eq[1])
        return kv_fail(err, KV_EINVAL, "override '%s' is not REGEX=FORMAT", spec ? spec : "");
    kv_policy_override o;
    memset(&o, 0, sizeof o);
    size_t plen = (size_t)(eq - spec);
    if (plen >= sizeof o.pattern || strlen(eq + 1) >= sizeof o.format)
        return kv_fail(err, KV_EINVAL, "override '%.60s' is too long", spec);
    memcpy(o.pattern, spec, plen);
    lower_copy(o.format, sizeof o.format, eq + 1);
    kv_format f;
    kv_error sub;
    kv_error_clear(&sub);
    if (kv_format_get(o.format, &f, &sub) != KV_OK)
        return kv_fail(err, KV_EINVAL, "override '%s': %s", spec, sub.message);
    int rc = regcomp(&o.re, o.pattern, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[160];
        regerror(rc, &o.re, msg, sizeof msg);
        return kv_fail(err, KV_EINVAL, "override '%s': bad regular expression: %s", spec, msg);
    }
    kv_policy_override *grown = realloc(p->overrides, (size_t)(p->n_overrides + 1) * sizeof *grown);
    if (!grown) {
        regfree(&o.re);
        return kv_fail(err, KV_ENOMEM, "out of memory adding an override");
    }
    p->overrides = grown;
    p->overrides[p->n_overrides++] = o;
    return KV_OK;
}

void kv_policy_free(kv_policy *p) {
    if (!p) return;
    for (int i = 0; i < p->n_overrides; i++) regfree(&p->overrides[i].re);
    free(p->overrides);
    p->overrides = NULL;
    p->n_overrides = 0;
}

static int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* llama-quant.cpp use_more_bits: the first and last eighth of the layers and every third one between. */
static int use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

static int layer_of(const char *name) {
    int l = -1;
    if (sscanf(name, "blk.%d.", &l) != 1) return -1;
    return l;
}

/* llama_tensor_get_type for the non-IQ file types kvant writes. Returns a ggml type name. */
static const char *llama_rules(const kv_policy *p, const kv_hparams *hp, int has_output, const char *name,
                               int64_t nx) {
    const char *t = p->base_format;
    const int ftype = p->ftype;
    const int n_gqa = hp->n_head_kv > 0 ? hp->n_head / hp->n_head_kv : 1;
    const int n_layer = hp->n_layer;
    const int i_layer = layer_of(name);
    /* llama.cpp's LLM_TYPE_70B (Llama 2/3 70B are the 80-layer llama models) */
    const int is_70b = !strcmp(hp->arch, "llama") && n_layer == 80;

    if (!strcmp(name, "output.weight") || (!has_output && !strcmp(name, "token_embd.weight"))) {
        kv_format f;
        if (kv_format_get(t, &f, NULL) != KV_OK || nx % f.block != 0) return "q8_0";
        return strcmp(t, "q8_0") ? "q6_k" : t;
    }
    if (!strcmp(name, "token_embd.weight")) return t;
    if (contains(name, "attn_v.weight")) {
        int i_wv = i_layer;
        if (ftype == KV_FTYPE_Q2_K) t = n_gqa >= 4 ? "q4_k" : "q3_k";
        else if (ftype == KV_FTYPE_Q2_K_S && n_gqa >= 4) t = "q4_k";
        else if (ftype == KV_FTYPE_Q3_K_M) t = i_wv < 2 ? "q5_k" : "q4_k";
        else if (ftype == KV_FTYPE_Q3_K_L) t = "q5_k";
        else if ((ftype == KV_FTYPE_IQ4_NL || ftype == KV_FTYPE_IQ4_XS) && n_gqa >= 4) t = "q5_k";
        else if ((ftype == KV_FTYPE_Q4_K_M || ftype == KV_FTYPE_Q5_K_M) && use_more_bits(i_wv, n_layer)) t = "q6_k";
        else if (ftype == KV_FTYPE_Q4_K_S && i_wv < 4) t = "q5_k";
        if (is_70b && (!strcmp(t, "q3_k") || !strcmp(t, "q4_k"))) t = "q5_k";
        return t;
    }
    if (contains(name, "ffn_down")) {
        if (ftype == KV_FTYPE_Q2_K) t = "q3_k";
        else if (ftype == KV_FTYPE_Q2_K_S) {
            if (i_layer < n_layer / 8) t = "q4_k";
        } else if (ftype == KV_FTYPE_Q3_K_M) {
            /* arch != FALCON makes the middle branch always q4_k */
            t = i_layer < n_layer / 16 ? "q5_k" : "q4_k";
        } else if (ftype == KV_FTYPE_Q3_K_L) t = "q5_k";
        else if (ftype == KV_FTYPE_Q4_K_M) {
            if (use_more_bits(i_layer, n_layer)) t = "q6_k";
        } else if (i_layer < n_layer / 8 && (ftype == KV_FTYPE_IQ4_NL || ftype == KV_FTYPE_IQ4_XS) && !p->has_imatrix)
            t = "q5_k";
        else if (ftype == KV_FTYPE_Q5_K_M && use_more_bits(i_layer, n_layer)) t = "q6_k";
        else if (ftype == KV_FTYPE_Q4_K_S && i_layer < n_layer / 8) t = "q5_k";
        else if ((ftype == KV_FTYPE_Q4_0 || ftype == KV_FTYPE_Q5_0) && p->has_imatrix && i_layer < n_layer / 8)
            t = ftype == KV_FTYPE_Q4_0 ? "q4_1" : "q5_1";
        return t;
    }
    if (contains(name, "attn_output.weight")) {
        if (ftype == KV_FTYPE_Q2_K) t = "q3_k";
        else if (ftype == KV_FTYPE_Q3_K_M) t = "q4_k";
        else if (ftype == KV_FTYPE_Q3_K_L) t = "q5_k";
        return t;
    }
    return t; /* attn_q, attn_k, ffn_gate, ffn_up: only IQ3/IQ2 file types change them */
}

/* llama_tensor_get_type's convert_incompatible_tensor switch, then F16 if that does not divide either. */
static const char *ggml_fallback(const char *t) {
    static const struct { const char *from, *to; } k_fb[] = {
        {"tq1_0", "q4_0"}, {"tq2_0", "q4_0"}, {"q2_k", "iq4_nl"}, {"q3_k", "iq4_nl"}, {"iq4_xs", "iq4_nl"},
        {"q4_k", "q5_0"},  {"q5_k", "q5_1"},  {"q6_k", "q8_0"},
    };
    for (size_t i = 0; i < KV_ARRAY_LEN(k_fb); i++)
        if (!strcmp(t, k_fb[i].from)) return k_fb[i].to;
    return NULL;
}

static int divides(const char *fmt, int64_t nx) {
    kv_format f;
    return kv_format_get(fmt, &f, NULL) == KV_OK && f.block > 0 && nx % f.block == 0;
}

static int quantizable(const char *name, int n_dims) {
    size_t len = strlen(name);
    if (len < 6 || strcmp(name + len - 6, "weight")) return 0;
    if (n_dims < 2) return 0;
    return !contains(name, "_norm.weight");
}

int kv_policy_quantizable(const char *name, int n_dims) { return quantizable(name, n_dims); }

kv_status kv_policy_choose(const kv_policy *p, const kv_hparams *hp, int has_output, const char *name,
                           int n_dims, const int64_t *shape, kv_policy_choice *out, kv_error *err) {
    memset(out, 0, sizeof *out);
    if (!quantizable(name, n_dims)) {
        kv_strlcpy(out->format, "f32", sizeof out->format);
        return KV_OK;
    }
    const int64_t nx = shape[n_dims - 1];
    const char *t = p->base_format;
    if (p->ftype >= 0 && !p->pure) t = llama_rules(p, hp, has_output, name, nx);
    if (p->embd_format[0] && !strcmp(name, "token_embd.weight")) t = p->embd_format;
    if (p->head_format[0] && !strcmp(name, "output.weight")) t = p->head_format;
    for (int i = 0; i < p->n_overrides; i++)
        if (regexec(&p->overrides[i].re, name, 0, NULL, 0) == 0) t = p->overrides[i].format;

    kv_strlcpy(out->format, t, sizeof out->format);
    out->quantize = 1;
    if (divides(t, nx)) return KV_OK;

    /* rows not divisible by the block: llama.cpp's fallback chain for ggml types, else q8_0, then f16 */
    kv_format f;
    kv_status st = kv_format_get(t, &f, err);
    if (st != KV_OK) {
        kv_error_context(err, NULL, -1, name);
        return st;
    }
    const char *fb = ggml_fallback(t);
    if (!fb) fb = "q8_0";
    if (!divides(fb, nx)) fb = "f16";
    snprintf(out->note, sizeof out->note, "%s: row length %lld is not a multiple of %s's block %d: using %s",
             name, (long long)nx, t, (int)f.block, fb);
    kv_strlcpy(out->format, fb, sizeof out->format);
    out->fallback = 1;
    return KV_OK;
}
