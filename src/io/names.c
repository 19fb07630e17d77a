/* names.c — the canonical (GGUF-style) tensor names of the Llama family and their Hugging Face names
 * (transformers modeling_llama.py module names; llama.cpp gguf-py/gguf/tensor_mapping.py for the GGUF side). */
#include "core/core.h"
#include <stdio.h>

typedef struct name_pair {
    const char *canonical; /* after "blk.N." for per-layer tensors */
    const char *hf;        /* after "model.layers.N." for per-layer tensors */
} name_pair;

static const name_pair k_global[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

static const name_pair k_layer[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

/* Parses "<prefix><N>.<rest>" with a plain decimal N (no sign, no leading zeros); returns rest or NULL. */
static const char *layer_suffix(const char *name, const char *prefix, long *layer) {
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl)) return NULL;
    const char *p = name + pl;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.')) return NULL;
    long v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > 1000000) return NULL;
        p++;
    }
    if (*p != '.') return NULL;
    *layer = v;
    return p + 1;
}

static int map_name(const char *in, char *out, size_t n, int to_hf) {
    for (size_t i = 0; i < KV_ARRAY_LEN(k_global); i++) {
        const char *from = to_hf ? k_global[i].canonical : k_global[i].hf;
        const char *to = to_hf ? k_global[i].hf : k_global[i].canonical;
        if (!strcmp(in, from)) {
            if (strlen(to) >= n) return 0;
            kv_strlcpy(out, to, n);
            return 1;
        }
    }
    long layer;
    const char *rest = layer_suffix(in, to_hf ? "blk." : "model.layers.", &layer);
    if (!rest) return 0;
    for (size_t i = 0; i < KV_ARRAY_LEN(k_layer); i++) {
        const char *from = to_hf ? k_layer[i].canonical : k_layer[i].hf;
        const char *to = to_hf ? k_layer[i].hf : k_layer[i].canonical;
        if (strcmp(rest, from)) continue;
        int w = snprintf(out, n, "%s%ld.%s", to_hf ? "model.layers." : "blk.", layer, to);
        return w > 0 && (size_t)w < n;
    }
    return 0;
}

int kv_name_from_hf(const char *hf_name, char *out, size_t n) { return map_name(hf_name, out, n, 0); }
int kv_name_to_hf(const char *canonical, char *out, size_t n) { return map_name(canonical, out, n, 1); }
