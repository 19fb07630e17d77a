/* cmd_inspect.c — `kvant inspect PATH [--json]`: what a model file holds (format, architecture,
 * hyper-parameters, tokenizer, every tensor) and its size in parameters, bytes and bits/weight. */
#include "cli.h"
#include "io/json.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant inspect PATH [--json]\n"
    "\n"
    "Show a model: a Hugging Face directory (config.json + safetensors), a .gguf file, a .safetensors file or\n"
    "a llama2.c checkpoint. Prints the format, architecture, hyper-parameters, tokenizer, every tensor (name,\n"
    "shape, dtype, bytes), the parameter count, total bytes and bits/weight (tensor bytes * 8 / parameters).\n"
    "\n"
    "options:\n"
    "  --json        one JSON object: format, path, architecture, hparams, tokenizer, params, bytes,\n"
    "                bits_per_weight, recipe (what `kvant quantize` recorded, or null), tensors [{name,\n"
    "                source_name, shape, dtype, bytes, offset}]\n"
    "  -h, --help    this help\n"
    "\n"
    "Exit status: 0 on success, 1 when the file cannot be read or is malformed, 2 on bad arguments.\n";

static const char *tokenizer_kind(kv_tokenizer_source s) {
    switch (s) {
    case KV_TOKSRC_SPM_MODEL: return "sentencepiece";
    case KV_TOKSRC_HF_JSON: return "hf-json";
    case KV_TOKSRC_GGUF: return "gguf";
    default: return "none";
    }
}

static const char *rope_scaling_name(kv_rope_scaling_type t) {
    switch (t) {
    case KV_ROPE_SCALING_LINEAR: return "linear";
    case KV_ROPE_SCALING_LLAMA3: return "llama3";
    default: return "none";
    }
}

/* The dtype as a name: ggml's for ggml ids, the kv_format name recorded in a kvant GGUF for kvant types. */
static const char *dtype_name(const kv_model_file *mf, const kv_tensor *t, char *buf, size_t n) {
    const kv_type_info *ti = kv_type_get(t->type);
    if (ti) return ti->name;
    if (t->type >= KV_TYPE_KVANT_BASE) {
        char key[256];
        snprintf(key, sizeof key, "kvant.tensor.%s.format", t->src_name);
        const char *f = kv_model_meta_string(mf, key);
        if (f) return f;
    }
    snprintf(buf, n, "type%u", t->type);
    return buf;
}

static const char *display_name(const kv_tensor *t) { return t->name[0] ? t->name : t->src_name; }

static void shape_str(const kv_tensor *t, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->n_dims && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* The recipe `kvant quantize` stored (a JSON object as text): GGUF kvant.quantize.recipe, an HF directory's
 * quantization_config.kvant_recipe. malloc'd, NULL when there is none. */
static char *stored_recipe(const kv_model_file *mf) {
    const char *v = kv_model_meta_string(mf, "kvant.quantize.recipe");
    if (v) return strdup(v);
    if (kv_model_format(mf) != KV_FILE_HF) return NULL;
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "%s/config.json", kv_model_path(mf));
    kv_json_doc *doc = NULL;
    kv_error err;
    kv_error_clear(&err);
    char *out = NULL;
    if (kv_json_parse_file(cfg, 0, &doc, &err) == KV_OK) {
        const char *r = NULL;
        if (kv_json_get_str(kv_json_get(kv_json_root(doc), "quantization_config"), "kvant_recipe", &r) == 1) out = strdup(r);
    }
    kv_json_free(doc);
    return out;
}

static double bits_per_weight(const kv_model_file *mf) {
    int64_t p = kv_model_n_params(mf);
    return p ? (double)kv_model_n_bytes(mf) * 8.0 / (double)p : 0.0;
}

static void print_json(const kv_model_file *mf) {
    kv_jw w;
    kv_jw_init(&w, stdout, 1);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "format");
    kv_jw_str(&w, kv_file_format_name(kv_model_format(mf)));
    kv_jw_key(&w, "path");
    kv_jw_str(&w, kv_model_path(mf));
    const kv_hparams *hp = kv_model_hparams(mf);
    kv_jw_key(&w, "architecture");
    if (hp) kv_jw_str(&w, hp->arch);
    else kv_jw_null(&w);
    kv_jw_key(&w, "hparams");
    if (hp) {
        kv_jw_obj_begin(&w);
        const struct { const char *k; int64_t v; } ints[] = {
            {"n_vocab", hp->n_vocab}, {"n_embd", hp->n_embd}, {"n_layer", hp->n_layer}, {"n_head", hp->n_head},
            {"n_head_kv", hp->n_head_kv}, {"head_dim", hp->head_dim}, {"n_ff", hp->n_ff}, {"n_ctx_train", hp->n_ctx_train},
        };
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
            kv_jw_key(&w, ints[i].k);
            kv_jw_int(&w, ints[i].v);
        }
        kv_jw_key(&w, "rope_theta");
        kv_jw_num(&w, hp->rope_theta);
        kv_jw_key(&w, "norm_eps");
        kv_jw_num(&w, hp->norm_eps);
        kv_jw_key(&w, "rope_scaling");
        kv_jw_str(&w, rope_scaling_name(hp->rope_scaling));
        if (hp->rope_scaling != KV_ROPE_SCALING_NONE) {
            kv_jw_key(&w, "rope_factor");
            kv_jw_num(&w, hp->rope_factor);
        }
        if (hp->rope_scaling == KV_ROPE_SCALING_LLAMA3) {
            kv_jw_key(&w, "rope_low_freq_factor");
            kv_jw_num(&w, hp->rope_low_freq_factor);
            kv_jw_key(&w, "rope_high_freq_factor");
            kv_jw_num(&w, hp->rope_high_freq_factor);
            kv_jw_key(&w, "rope_orig_ctx");
            kv_jw_int(&w, hp->rope_orig_ctx);
        }
        kv_jw_key(&w, "tie_embeddings");
        kv_jw_bool(&w, hp->tie_embeddings);
        kv_jw_key(&w, "attn_bias");
        kv_jw_bool(&w, hp->attn_bias);
        kv_jw_key(&w, "bos_id");
        kv_jw_int(&w, hp->bos_id);
        kv_jw_key(&w, "eos_id");
        kv_jw_int(&w, hp->eos_id);
        kv_jw_obj_end(&w);
    } else {
        kv_jw_null(&w);
    }
    const char *tok_path = NULL;
    kv_tokenizer_source ts = kv_model_tokenizer(mf, &tok_path);
    kv_jw_key(&w, "tokenizer");
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "kind");
    kv_jw_str(&w, tokenizer_kind(ts));
    kv_jw_key(&w, "path");
    if (tok_path) kv_jw_str(&w, tok_path);
    else kv_jw_null(&w);
    kv_jw_obj_end(&w);
    kv_jw_key(&w, "params");
    kv_jw_int(&w, kv_model_n_params(mf));
    kv_jw_key(&w, "bytes");
    kv_jw_int(&w, (int64_t)kv_model_n_bytes(mf));
    kv_jw_key(&w, "bits_per_weight");
    kv_jw_num(&w, bits_per_weight(mf));
    char *recipe = stored_recipe(mf);
    kv_jw_key(&w, "recipe");
    if (recipe) kv_jw_str(&w, recipe);
    else kv_jw_null(&w);
    free(recipe);
    kv_jw_key(&w, "tensors");
    kv_jw_arr_begin(&w);
    char buf[32];
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "name");
        kv_jw_str(&w, display_name(t));
        kv_jw_key(&w, "source_name");
        kv_jw_str(&w, t->src_name);
        kv_jw_key(&w, "shape");
        kv_jw_arr_begin(&w);
        for (int d = 0; d < t->n_dims; d++) kv_jw_int(&w, t->shape[d]);
        kv_jw_arr_end(&w);
        kv_jw_key(&w, "dtype");
        kv_jw_str(&w, dtype_name(mf, t, buf, sizeof buf));
        kv_jw_key(&w, "bytes");
        kv_jw_int(&w, (int64_t)t->nbytes);
        kv_jw_key(&w, "offset");
        kv_jw_int(&w, (int64_t)t->offset);
        kv_jw_obj_end(&w);
    }
    kv_jw_arr_end(&w);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
}

static void print_text(const kv_model_file *mf) {
    printf("format:        %s\n", kv_file_format_name(kv_model_format(mf)));
    printf("path:          %s\n", kv_model_path(mf));
    const kv_hparams *hp = kv_model_hparams(mf);
    if (hp) {
        printf("architecture:  %s\n", hp->arch);
        printf("hparams:       vocab %d, hidden %d, layers %d, heads %d (kv %d, head_dim %d), ffn %d, context %d\n",
               hp->n_vocab, hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff, hp->n_ctx_train);
        printf("               rope_theta %g, rms_norm_eps %g, rope scaling %s", hp->rope_theta, hp->norm_eps,
               rope_scaling_name(hp->rope_scaling));
        if (hp->rope_scaling != KV_ROPE_SCALING_NONE) printf(" (factor %g)", hp->rope_factor);
        printf(",\n               tied embeddings %s, attention bias %s, bos %d, eos %d\n",
               hp->tie_embeddings ? "yes" : "no", hp->attn_bias ? "yes" : "no", hp->bos_id, hp->eos_id);
    } else {
        printf("architecture:  (none: no hyper-parameters in this file)\n");
    }
    const char *tok_path = NULL;
    kv_tokenizer_source ts = kv_model_tokenizer(mf, &tok_path);
    printf("tokenizer:     %s%s%s\n", tokenizer_kind(ts), tok_path ? "  " : "", tok_path ? tok_path : "");
    int64_t n = kv_model_n_tensors(mf);
    printf("tensors:       %lld\n", (long long)n);
    int width = 4;
    for (int64_t i = 0; i < n; i++) {
        int l = (int)strlen(display_name(kv_model_tensor(mf, i)));
        if (l > width) width = l;
    }
    if (n) printf("  %-*s  %-20s  %-8s  %12s\n", width, "name", "shape", "dtype", "bytes");
    char shape[96], buf[32];
    for (int64_t i = 0; i < n; i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        shape_str(t, shape, sizeof shape);
        printf("  %-*s  %-20s  %-8s  %12llu", width, display_name(t), shape, dtype_name(mf, t, buf, sizeof buf),
               (unsigned long long)t->nbytes);
        if (t->name[0] && strcmp(t->name, t->src_name)) printf("  (%s)", t->src_name);
        printf("\n");
    }
    printf("params:        %lld\n", (long long)kv_model_n_params(mf));
    printf("bytes:         %llu\n", (unsigned long long)kv_model_n_bytes(mf));
    printf("bits/weight:   %.4f\n", bits_per_weight(mf));
    char *recipe = stored_recipe(mf);
    if (recipe) printf("recipe:        %s\n", recipe);
    free(recipe);
}

int kv_cmd_inspect(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) {
        fputs(k_usage, stdout);
        return 0;
    }
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_flag(argv, i, "--json", NULL)) json = 1;
        else if (argv[i][0] == '-' && argv[i][1]) return kv_cli_usage("inspect", "unknown option '%s'", argv[i]);
        else if (path) return kv_cli_usage("inspect", "more than one PATH ('%s')", argv[i]);
        else path = argv[i];
    }
    if (!path) return kv_cli_usage("inspect", "missing PATH");
    kv_error err;
    kv_error_clear(&err);
    kv_model_file *mf;
    if (kv_model_open(path, &mf, &err) != KV_OK) return kv_cli_fail("inspect", &err);
    if (json) print_json(mf);
    else print_text(mf);
    kv_model_close(mf);
    return 0;
}
