/* cmd_inspect.c — `kvant inspect PATH [--json]`: what a model file holds (format, architecture,
 * hyper-parameters, tokenizer, every tensor) and its size in parameters, bytes and bits/weight;
 * `--verify`: every tensor decoded and checked (kv_tensor_verify), one verdict per tensor. */
#include "cli.h"
#include "inspect_meta.h"
#include "io/json.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant inspect PATH [--meta] [--json]\n"
    "       kvant inspect --verify PATH [--json] [-t N] [--quiet]\n"
    "\n"
    "Show a model: a Hugging Face directory (config.json + safetensors), a .gguf file, a .safetensors file or\n"
    "a llama2.c checkpoint. Prints the format, architecture, hyper-parameters, tokenizer, every tensor (name,\n"
    "shape, dtype, bytes), the parameter count, total bytes and bits/weight (tensor bytes * 8 / parameters).\n"
    "\n"
    "options:\n"
    "  --json        one JSON object: format, path, architecture, hparams, tokenizer, params, bytes,\n"
    "                bits_per_weight, recipe (what `kvant quantize` recorded, or null), tensors [{name,\n"
    "                source_name, shape, dtype, bytes, offset}]\n"
    "  --meta        also the file's own metadata: a GGUF's key/value pairs (arrays: element type, length,\n"
    "                first items), a safetensors file's __metadata__, an HF directory's quantization_config\n"
    "                and first shard's __metadata__; and the transforms recorded (kvant.transform.list, every\n"
    "                weight rotated online with its rht block and seed). --json: metadata [{key, type, value |\n"
    "                elem_type, n, first}], quantization_config, safetensors_metadata, transforms {list, rotated}\n"
    "  --verify      decode every tensor (every format, entropy-coded ones with their checksums) and check\n"
    "                that its values are finite; one line per tensor, ok or the error with its byte offset\n"
    "                (--json: path, format, tensors [{name, dtype, status, values, nonfinite, max_abs,\n"
    "                first_row, first_col, error, offset}], ok, errors)\n"
    "  -t, --threads N  threads for --verify (default: all cores)\n"
    "  --quiet       no progress line (--verify)\n"
    "  -h, --help    this help\n"
    "\n"
    "Exit status: 0 on success, 1 when the file cannot be read or is malformed (with --verify: when any tensor\n"
    "fails), 2 on bad arguments.\n";

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

static void print_json(const kv_model_file *mf, const kv_inspect_meta *meta) {
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
    if (meta) kv_inspect_meta_write_json(&w, meta);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
}

static void print_text(const kv_model_file *mf, const kv_inspect_meta *meta) {
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
    if (meta) kv_inspect_meta_print_text(meta, mf);
}

/* ---- --verify ---------------------------------------------------------------------------------- */

typedef struct verdict {
    kv_status st;
    kv_tensor_check c;
    kv_error err;
} verdict;

static void verdict_json(kv_jw *w, const kv_model_file *mf, const kv_tensor *t, const verdict *v) {
    char buf[32];
    kv_jw_obj_begin(w);
    kv_jw_key(w, "name");
    kv_jw_str(w, display_name(t));
    kv_jw_key(w, "dtype");
    kv_jw_str(w, dtype_name(mf, t, buf, sizeof buf));
    kv_jw_key(w, "status");
    kv_jw_str(w, v->st ? "error" : "ok");
    kv_jw_key(w, "values");
    kv_jw_int(w, v->c.values);
    kv_jw_key(w, "nonfinite");
    kv_jw_int(w, v->c.nonfinite);
    kv_jw_key(w, "max_abs");
    kv_jw_num(w, v->c.max_abs);
    kv_jw_key(w, "first_row");
    kv_jw_int(w, v->c.first_row);
    kv_jw_key(w, "first_col");
    kv_jw_int(w, v->c.first_col);
    kv_jw_key(w, "error");
    if (v->st) kv_jw_str(w, v->err.message);
    else kv_jw_null(w);
    kv_jw_key(w, "offset");
    if (v->st && v->err.offset >= 0) kv_jw_int(w, v->err.offset);
    else kv_jw_null(w);
    kv_jw_obj_end(w);
}

static int verify_model(const kv_model_file *mf, int json, int threads, int quiet) {
    int64_t n = kv_model_n_tensors(mf), bad = 0;
    kv_pool *pool = kv_pool_create(threads);
    kv_progress prog;
    kv_progress_begin(&prog, "verify", n, quiet);
    kv_jw w;
    if (json) {
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "path");
        kv_jw_str(&w, kv_model_path(mf));
        kv_jw_key(&w, "format");
        kv_jw_str(&w, kv_file_format_name(kv_model_format(mf)));
        kv_jw_key(&w, "tensors");
        kv_jw_arr_begin(&w);
    } else {
        printf("verify:        %s (%s, %lld tensors)\n", kv_model_path(mf), kv_file_format_name(kv_model_format(mf)),
               (long long)n);
    }
    int width = 4;
    for (int64_t i = 0; i < n; i++) { int l = (int)strlen(display_name(kv_model_tensor(mf, i))); if (l > width) width = l; }
    for (int64_t i = 0; i < n; i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        verdict v;
        v.st = kv_tensor_verify(mf, t, pool, &v.c, &v.err);
        bad += v.st != KV_OK;
        kv_progress_update(&prog, i + 1);
        if (json) {
            verdict_json(&w, mf, t, &v);
            continue;
        }
        char buf[32];
        if (v.st == KV_OK) {
            printf("  ok     %-*s  %-8s  %12lld values, max |x| %g\n", width, display_name(t),
                   dtype_name(mf, t, buf, sizeof buf), (long long)v.c.values, v.c.max_abs);
        } else {
            char msg[1400];
            kv_error e = v.err;
            e.tensor[0] = 0; /* the line names it */
            e.file[0] = 0;
            printf("  ERROR  %-*s  %-8s  %s\n", width, display_name(t), dtype_name(mf, t, buf, sizeof buf),
                   kv_error_format(&e, msg, sizeof msg));
        }
        fflush(stdout);
    }
    kv_progress_end(&prog);
    if (json) {
        kv_jw_arr_end(&w);
        kv_jw_key(&w, "ok");
        kv_jw_int(&w, n - bad);
        kv_jw_key(&w, "errors");
        kv_jw_int(&w, bad);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else {
        printf("%lld tensors: %lld ok, %lld with errors\n", (long long)n, (long long)(n - bad), (long long)bad);
    }
    if (bad) fprintf(stderr, "kvant inspect: error: %s: %lld of %lld tensors failed verification\n",
                     kv_model_path(mf), (long long)bad, (long long)n);
    kv_pool_destroy(pool);
    return bad ? 1 : 0;
}

int kv_cmd_inspect(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) {
        fputs(k_usage, stdout);
        return 0;
    }
    const char *path = NULL, *v = NULL;
    int json = 0, verify = 0, quiet = 0, threads_given = 0, meta = 0;
    long long threads = 0;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_flag(argv, i, "--json", NULL)) json = 1;
        else if (kv_cli_flag(argv, i, "--verify", NULL)) verify = 1;
        else if (kv_cli_flag(argv, i, "--meta", NULL)) meta = 1;
        else if (kv_cli_flag(argv, i, "--quiet", "-q")) quiet = 1;
        else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if (kv_cli_parse_int(v, 1, 256, &threads)) return kv_cli_usage("inspect", "--threads needs 1..256");
            threads_given = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) return kv_cli_usage("inspect", "unknown option '%s'", argv[i]);
        else if (path) return kv_cli_usage("inspect", "more than one PATH ('%s')", argv[i]);
        else path = argv[i];
    }
    if (!path) return kv_cli_usage("inspect", "missing PATH");
    if (!verify && (threads_given || quiet))
        return kv_cli_usage("inspect", "%s is an option of --verify", threads_given ? "--threads" : "--quiet");
    if (verify && meta) return kv_cli_usage("inspect", "--meta and --verify are separate reports: give one");
    kv_error err;
    kv_error_clear(&err);
    kv_model_file *mf;
    if (kv_model_open(path, &mf, &err) != KV_OK) return kv_cli_fail("inspect", &err);
    kv_inspect_meta *mi = NULL;
    if (meta && kv_inspect_meta_open(mf, &mi, &err) != KV_OK) {
        kv_model_close(mf);
        return kv_cli_fail("inspect", &err);
    }
    int rc = 0;
    if (verify) rc = verify_model(mf, json, (int)threads, quiet);
    else if (json) print_json(mf, mi);
    else print_text(mf, mi);
    kv_inspect_meta_close(mi);
    kv_model_close(mf);
    return rc;
}
