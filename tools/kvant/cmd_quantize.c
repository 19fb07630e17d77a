/* cmd_quantize.c — `kvant quantize`: parse options (and an optional JSON recipe), call kv_quantize_model,
 * print the summary line (tensors, bytes, bits/weight, time) or JSON, and with --eval compare the base and
 * the quantized model on a text: size, bits/weight, PPL, ΔPPL, KLD, top-1 agreement. docs/quantize.md. */
#include "cli.h"
#include "io/json.h"
#include <stddef.h>
#include <strings.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_OVERRIDES 4096

typedef struct qargs {
    const char *model, *out, *format, *method, *transform, *act, *calib, *imatrix, *recipe, *out_format, *eval;
    const char *eval_base, *label, *allocate, *alphas, *alloc_formats, *scheme;
    double bits;
    const char *overrides[MAX_OVERRIDES];
    int n_overrides;
    long long calib_tokens, ctx, chunks, seed, threads, max_shard_mb;
    int pure, no_imatrix, quiet, json, transform_only, ppl_only, entropy_code, allow_requantize, verbose, resume;
    int leave_output;
    unsigned char set[64];    /* per option of k_opts: given on the command line (or, after apply_recipe, either) */
    char arena[16384];        /* strings built here (alias overrides, a recipe's list of formats) */
    size_t arena_used;
} qargs;

/* One table for the command line and the recipe keys (the long name without "--", '-' -> '_'). */
typedef enum qkind {
    Q_FLAG, Q_STR, Q_INT, Q_NUM,
    Q_OVERRIDE,               /* "REGEX=FORMAT", repeatable */
    Q_TYPE_OF                 /* TYPE for the tensors of pattern (an --override of them) */
} qkind;

typedef enum qscope {
    Q_RECIPE,                 /* a recipe key, recorded in the output's kvant.quantize.recipe */
    Q_RECIPE_UNRECORDED,      /* a recipe key that does not shape the output (threads, quiet, ...) */
    Q_CLI                     /* this run's paths: command line only */
} qscope;

typedef struct qopt {
    const char *lng, *shrt;
    qkind kind;
    size_t off;
    long long lo, hi;
    qscope scope;
    const char *pattern;      /* Q_TYPE_OF */
    const char *rkey;         /* recipe key when not derived from lng */
} qopt;

#define F(x) offsetof(qargs, x)
static const qopt k_opts[] = {
    {"--output", "-o", Q_STR, F(out), 0, 0, Q_CLI, NULL, NULL},
    {"--model", "-m", Q_STR, F(model), 0, 0, Q_CLI, NULL, NULL},
    {"--recipe", NULL, Q_STR, F(recipe), 0, 0, Q_CLI, NULL, NULL},
    {"--scheme", NULL, Q_STR, F(scheme), 0, 0, Q_RECIPE, NULL, NULL},
    {"--format", NULL, Q_STR, F(format), 0, 0, Q_RECIPE, NULL, NULL},
    {"--method", NULL, Q_STR, F(method), 0, 0, Q_RECIPE, NULL, NULL},
    {"--transform", NULL, Q_STR, F(transform), 0, 0, Q_RECIPE, NULL, NULL},
    {"--act", NULL, Q_STR, F(act), 0, 0, Q_RECIPE, NULL, NULL},
    {"--calib", NULL, Q_STR, F(calib), 0, 0, Q_RECIPE, NULL, NULL},
    {"--calib-tokens", NULL, Q_INT, F(calib_tokens), 1, 1LL << 32, Q_RECIPE, NULL, NULL},
    {"--no-imatrix", NULL, Q_FLAG, F(no_imatrix), 0, 0, Q_RECIPE, NULL, NULL},
    {"--imatrix", NULL, Q_STR, F(imatrix), 0, 0, Q_RECIPE, NULL, NULL},
    {"--pure", NULL, Q_FLAG, F(pure), 0, 0, Q_RECIPE, NULL, NULL},
    {"--override", NULL, Q_OVERRIDE, 0, 0, 0, Q_RECIPE, NULL, "overrides"},
    {"--tensor-type", NULL, Q_OVERRIDE, 0, 0, 0, Q_RECIPE, NULL, NULL},
    {"--output-tensor-type", NULL, Q_TYPE_OF, 0, 0, 0, Q_RECIPE, "^output\\.weight$", NULL},
    {"--token-embedding-type", NULL, Q_TYPE_OF, 0, 0, 0, Q_RECIPE, "^token_embd\\.weight$", NULL},
    {"--leave-output-tensor", NULL, Q_FLAG, F(leave_output), 0, 0, Q_RECIPE, NULL, NULL},
    {"--allow-requantize", NULL, Q_FLAG, F(allow_requantize), 0, 0, Q_RECIPE, NULL, NULL},
    {"--resume", NULL, Q_FLAG, F(resume), 0, 0, Q_CLI, NULL, NULL},
    {"--bits", NULL, Q_NUM, F(bits), 0, 64, Q_RECIPE, NULL, NULL},
    {"--allocate", NULL, Q_STR, F(allocate), 0, 0, Q_RECIPE, NULL, NULL},
    {"--alphas", NULL, Q_STR, F(alphas), 0, 0, Q_RECIPE, NULL, NULL},
    {"--formats", NULL, Q_STR, F(alloc_formats), 0, 0, Q_RECIPE, NULL, NULL},
    {"--transform-only", NULL, Q_FLAG, F(transform_only), 0, 0, Q_RECIPE, NULL, NULL},
    {"--entropy-code", NULL, Q_FLAG, F(entropy_code), 0, 0, Q_RECIPE, NULL, NULL},
    {"--out-format", NULL, Q_STR, F(out_format), 0, 0, Q_RECIPE, NULL, NULL},
    {"--max-shard-size", NULL, Q_INT, F(max_shard_mb), 1, 1LL << 24, Q_RECIPE, NULL, NULL},
    {"--seed", NULL, Q_INT, F(seed), 0, 1LL << 62, Q_RECIPE, NULL, NULL},
    {"--eval", NULL, Q_STR, F(eval), 0, 0, Q_RECIPE, NULL, NULL},
    {"--ctx", NULL, Q_INT, F(ctx), 8, 1 << 20, Q_RECIPE, NULL, NULL},
    {"--chunks", NULL, Q_INT, F(chunks), 0, 1LL << 32, Q_RECIPE, NULL, NULL},
    {"--eval-base-logits", NULL, Q_STR, F(eval_base), 0, 0, Q_RECIPE, NULL, NULL},
    {"--eval-ppl-only", NULL, Q_FLAG, F(ppl_only), 0, 0, Q_RECIPE, NULL, NULL},
    {"--label", NULL, Q_STR, F(label), 0, 0, Q_RECIPE, NULL, NULL},
    {"--threads", "-t", Q_INT, F(threads), 1, 1024, Q_RECIPE_UNRECORDED, NULL, NULL},
    {"--quiet", "-q", Q_FLAG, F(quiet), 0, 0, Q_RECIPE_UNRECORDED, NULL, NULL},
    {"--verbose", "-v", Q_FLAG, F(verbose), 0, 0, Q_RECIPE_UNRECORDED, NULL, NULL},
    {"--json", NULL, Q_FLAG, F(json), 0, 0, Q_RECIPE_UNRECORDED, NULL, NULL},
};
#undef F
#define N_OPTS ((int)(sizeof k_opts / sizeof k_opts[0]))
_Static_assert(N_OPTS <= 64, "qargs.set holds one flag per option");

/* --scheme: the names of llm-compressor / compressed-tensors presets mapped onto kvant's format and activation
 * settings (docs/quantize.md "Schemes"). */
static const struct { const char *name, *format, *act, *note; } k_schemes[] = {
    {"W4A16", "int4_g128_sym", NULL, "int4 weights, symmetric, group 128; activations 16-bit"},
    {"W8A16", "int8_g0_sym", NULL, "int8 weights, symmetric, one scale per output channel"},
    {"W8A8", "int8_g0_sym", "int8", "int8 per-channel weights, dynamic per-token int8 activations"},
    {"FP8_DYNAMIC", "fp8_e4m3", "fp8", "fp8 e4m3 weights, dynamic per-token fp8 activations"},
    {"NVFP4", "nvfp4_ts", NULL, "NVFP4 weights (E2M1, E4M3 scale per 16, global scale); activations 16-bit (NVFP4A16)"},
    {"MXFP4", "mxfp4_ocp", "mxfp4", "OCP MXFP4 weights and activations (E2M1, E8M0 scale per 32)"},
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: kvant quantize MODEL -o OUT.gguf [options]\n"
            "  MODEL (or -m MODEL)   a Hugging Face directory, a .gguf, or a llama2.c checkpoint\n"
            "  -o, --output PATH     output file (written atomically: nothing is left on failure)\n"
            "  --format F            a format (q4_0, q4_k, int4_g128_asym, mxfp4_ocp, nvfp4_ts, nf4, higgs_p2_b4, ...)\n"
            "                        or a llama.cpp mix (q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k\n"
            "                        q4_0 q4_1 q5_0 q5_1 q8_0 iq4_nl iq4_xs); default q4_k_m (llm-int8: int8_g0_sym_f32).\n"
            "                        `kvant formats` lists formats\n"
            "  --scheme S            a preset by its llm-compressor name (format + --act):\n");
    for (size_t i = 0; i < sizeof k_schemes / sizeof k_schemes[0]; i++)
        fprintf(out, "                          %-12s = --format %s%s%s: %s\n", k_schemes[i].name, k_schemes[i].format,
                k_schemes[i].act ? " --act " : "", k_schemes[i].act ? k_schemes[i].act : "", k_schemes[i].note);
    fprintf(out,
            "  --pure                every quantizable tensor gets F (no llama.cpp mix rules)\n"
            "  --method M[:OPTS]     rtn (default), gptq, mr-gptq, watersic, llm-int8; OPTS comma-separated:\n");
    for (int i = 0; i < kv_quant_method_count(); i++) {
        const kv_quant_method *m = kv_quant_method_at(i);
        if (!m->n_opts) continue;
        char buf[2048];
        kv_method_help(m, "                            ", buf, sizeof buf);
        fprintf(out, "                          %s%s:\n%s", m->name, m->needs_one_of ? " (needs bits= or step=)" : "", buf);
    }
    fprintf(out,
            "  --transform T[,T...]  rht[:BLOCK] (default block 512), quarot, fold-norms, smoothquant[:ALPHA], awq,\n"
            "                        prescale\n"
            "  --transform-only      write the transformed model unquantized (f32), e.g. to check a rotation\n"
            "  --entropy-code        store the integer codes of int{n}_g{g}_* tensors entropy-coded (rANS, type ecw;\n"
            "                        the \"Huffman-GPTQ\" baseline with --method gptq); GGUF only, kvant reads it\n"
            "  --act A               simulated activation quantization for --eval: none int8 fp8 mxfp8 mxfp4\n"
            "  --calib FILE          calibration text (imatrix, smoothquant, awq)\n"
            "  --calib-tokens N      calibration tokens (default 65536 = 128 windows of 512)\n"
            "  --no-imatrix          do not compute importance from --calib\n"
            "  --resume              continue a killed calibrated run (gptq, mr-gptq, watersic) from its last\n"
            "                        finished block: same arguments; checkpoint OUT.kvresume + OUT.kvpart\n"
            "  --imatrix FILE        importance from a llama.cpp imatrix file (.dat or .gguf)\n"
            "  --override 'RE=F'     tensors whose name matches the POSIX regex RE get format F (repeatable;\n"
            "                        the last match wins). llama-quantize's spellings are aliases of it:\n"
            "  --tensor-type RE=F    = --override RE=F\n"
            "  --output-tensor-type F    = --override '^output\\.weight$=F'\n"
            "  --token-embedding-type F  = --override '^token_embd\\.weight$=F'\n"
            "  --leave-output-tensor     = --override '^output\\.weight$=<its source type>' (f16 for a quantized one)\n"
            "  --allow-requantize    accept a source that is already quantized (refused otherwise, like llama-quantize)\n"
            "  --bits B              bit allocation: choose one of --formats per linear layer so that the decoder\n"
            "                        linears average at most B bits/weight (exact, scales included); the embedding\n"
            "                        and head follow --format's rules. docs/sensitivity.md\n"
            "  --allocate MODE       linearity (default: the HIGGS dynamic program over alpha_l * t_l), waterfill,\n"
            "                        uniform\n"
            "  --alphas FILE         layer sensitivities from `kvant sensitivity` (linearity, waterfill)\n"
            "  --formats LIST        comma-separated candidate formats for --bits (e.g. q2_k,q3_k,q4_k,q5_k,q6_k)\n"
            "  --recipe FILE.json    options from a JSON object: every long option above is a key (without \"--\",\n"
            "                        '-' as '_': \"calib_tokens\": 512, \"pure\": true, \"overrides\": [\"RE=F\"], ...);\n"
            "                        the command line wins. The recipe used is stored in the output\n"
            "                        (kvant.quantize.recipe; `kvant inspect` shows it)\n"
            "  --out-format F        gguf (default), safetensors (kvant's packed rows), hf = compressed-tensors (a model\n"
            "                        directory transformers/vLLM load: W4A16, W8A16, W8A8 with --act int8, FP8 with\n"
            "                        --act fp8, NVFP4), gptq (GPTQ qweight/qzeros/scales). -o DIR/ implies hf,\n"
            "                        -o *.safetensors implies safetensors. docs/quantize.md \"Output layouts\"\n"
            "  --max-shard-size MB   HF output: safetensors shard size limit (default 5 GB)\n"
            "  --eval TEXT           afterwards, compare base and quantized on TEXT (hf style)\n"
            "  --ctx N               eval window (default 512)\n"
            "  --chunks K            eval windows (default 40; 0 = all)\n"
            "  --eval-base-logits F  reuse the base model's log-probs from F (computed and saved there when F is\n"
            "                        missing): several runs on one text evaluate the base once\n"
            "  --eval-ppl-only       only the quantized model's PPL (no base run, no KLD: long texts, little memory)\n"
            "  --label TEXT          name of the quantized row of the --eval table (default: the format)\n"
            "  --seed S              seed of the random rotations and calibration windows (default 0)\n"
            "  -t, --threads N       threads (default: all cores)\n"
            "  -v, --verbose         one line per written tensor: name, type, shape, size (as llama-quantize)\n"
            "  --quiet               no progress lines\n"
            "  --json                print the report as JSON\n");
}

static void log_note(void *user, const char *msg) {
    (void)user;
    if (!strncmp(msg, "warning: ", 9)) fprintf(stderr, "kvant quantize: warning: %s\n", msg + 9);
    else fprintf(stderr, "kvant quantize: note: %s\n", msg);
}

static void recipe_key(const qopt *o, char *buf, size_t n) {
    snprintf(buf, n, "%s", o->rkey ? o->rkey : o->lng + 2);
    if (o->rkey) return;
    for (char *p = buf; *p; p++)
        if (*p == '-') *p = '_';
}

/* n bytes of a->arena (NULL when it is full). */
static char *arena_alloc(qargs *a, size_t n) {
    if (n > sizeof a->arena - a->arena_used) return NULL;
    char *p = a->arena + a->arena_used;
    a->arena_used += n;
    memset(p, 0, n);
    return p;
}

/* Adds one override spec (NULL spec: out of memory). */
static int add_override(qargs *a, const char *spec, int at_front) {
    if (!spec) return kv_cli_usage("quantize", "too many type options");
    if (a->n_overrides == MAX_OVERRIDES) return kv_cli_usage("quantize", "too many overrides (max %d)", MAX_OVERRIDES);
    if (at_front >= 0) {
        memmove(a->overrides + at_front + 1, a->overrides + at_front, (size_t)(a->n_overrides - at_front) * sizeof a->overrides[0]);
        a->overrides[at_front] = spec;
    } else
        a->overrides[a->n_overrides] = spec;
    a->n_overrides++;
    return 0;
}

static int type_override(qargs *a, const qopt *o, const char *type, int at_front) {
    if (!*type) return kv_cli_usage("quantize", "%s needs a type", o->lng);
    size_t n = strlen(o->pattern) + strlen(type) + 2;
    char *spec = arena_alloc(a, n);
    if (spec) snprintf(spec, n, "%s=%s", o->pattern, type);
    return add_override(a, spec, at_front);
}

/* Sets option o from text v (command line) */
static int set_value(qargs *a, int idx, const char *v) {
    const qopt *o = &k_opts[idx];
    char *base = (char *)a;
    switch (o->kind) {
    case Q_FLAG: *(int *)(base + o->off) = 1; break;
    case Q_STR:
        if (!v) return kv_cli_usage("quantize", "%s needs a value", o->lng);
        *(const char **)(base + o->off) = v;
        break;
    case Q_INT:
        if (!v || kv_cli_parse_int(v, o->lo, o->hi, (long long *)(base + o->off)))
            return kv_cli_usage("quantize", "%s needs an integer in [%lld, %lld]", o->lng, o->lo, o->hi);
        break;
    case Q_NUM: {
        double *d = (double *)(base + o->off);
        if (!v || kv_cli_parse_double(v, d) || !(*d > o->lo && *d <= o->hi))
            return kv_cli_usage("quantize", "%s needs a number in (%lld, %lld]", o->lng, o->lo, o->hi);
        break;
    }
    case Q_OVERRIDE:
        if (!v) return kv_cli_usage("quantize", "%s needs 'REGEX=FORMAT'", o->lng);
        if (add_override(a, v, -1)) return 2;
        break;
    case Q_TYPE_OF:
        if (!v) return kv_cli_usage("quantize", "%s needs a type", o->lng);
        if (type_override(a, o, v, -1)) return 2;
        break;
    }
    a->set[idx] = 1;
    return 0;
}

static void valid_keys(char *buf, size_t n) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < N_OPTS && len < n; i++) {
        if (k_opts[i].scope == Q_CLI) continue;
        char k[48];
        recipe_key(&k_opts[i], k, sizeof k);
        len += (size_t)snprintf(buf + len, n - len, "%s%s", len ? " " : "", k);
    }
}

/* One recipe member into the option it names, unless the command line set it. Recipe lists of overrides
 * come first so that command-line ones win (the last match wins); *front counts them. */
static int apply_member(qargs *a, int idx, const kv_json *v, int *front) {
    const qopt *o = &k_opts[idx];
    char key[48];
    recipe_key(o, key, sizeof key);
    char *base = (char *)a;
    if (o->kind == Q_OVERRIDE || o->kind == Q_TYPE_OF) {
        if (v->type == KV_JSON_STRING) {
            int rc = o->kind == Q_OVERRIDE ? add_override(a, v->u.str, (*front)++) : type_override(a, o, v->u.str, (*front)++);
            if (!rc) a->set[idx] = 1;
            return rc;
        }
        if (v->type != KV_JSON_ARRAY || o->kind == Q_TYPE_OF)
            return kv_cli_usage("quantize", "recipe: '%s' must be %s", key,
                                o->kind == Q_TYPE_OF ? "a type name string" : "an array of \"REGEX=FORMAT\" strings");
        for (uint64_t i = 0; i < v->len; i++) {
            if (v->u.items[i].type != KV_JSON_STRING)
                return kv_cli_usage("quantize", "recipe: %s[%llu] is not a string", key, (unsigned long long)i);
            if (add_override(a, v->u.items[i].u.str, (*front)++)) return 2;
        }
        a->set[idx] = 1;
        return 0;
    }
    if (a->set[idx]) return 0; /* the command line wins */
    switch (o->kind) {
    case Q_FLAG:
        if (v->type != KV_JSON_BOOL) return kv_cli_usage("quantize", "recipe: '%s' must be true or false", key);
        *(int *)(base + o->off) = v->boolean;
        break;
    case Q_STR:
        if (o->off == offsetof(qargs, alloc_formats) && v->type == KV_JSON_ARRAY) { /* ["q3_k", "q4_k"] */
            size_t n = 1;
            for (uint64_t i = 0; i < v->len; i++) {
                if (v->u.items[i].type != KV_JSON_STRING)
                    return kv_cli_usage("quantize", "recipe: %s[%llu] is not a string", key, (unsigned long long)i);
                n += strlen(v->u.items[i].u.str) + 1;
            }
            char *joined = arena_alloc(a, n);
            if (!joined) return kv_cli_usage("quantize", "recipe: '%s' is too long", key);
            for (uint64_t i = 0; i < v->len; i++) {
                if (i) strcat(joined, ",");
                strcat(joined, v->u.items[i].u.str);
            }
            a->alloc_formats = joined;
            break;
        }
        if (v->type != KV_JSON_STRING) return kv_cli_usage("quantize", "recipe: '%s' must be a string", key);
        *(const char **)(base + o->off) = v->u.str;
        break;
    case Q_INT:
        if (v->type != KV_JSON_NUMBER || !v->is_int || v->ival < o->lo || v->ival > o->hi)
            return kv_cli_usage("quantize", "recipe: '%s' must be an integer in [%lld, %lld]", key, o->lo, o->hi);
        *(long long *)(base + o->off) = v->ival;
        break;
    case Q_NUM:
        if (v->type != KV_JSON_NUMBER || !(v->num > o->lo && v->num <= o->hi))
            return kv_cli_usage("quantize", "recipe: '%s' must be a number in (%lld, %lld]", key, o->lo, o->hi);
        *(double *)(base + o->off) = v->num;
        break;
    default: break;
    }
    a->set[idx] = 1;
    return 0;
}

/* Recipe values fill what the command line left unset. Strings point into doc (kept alive by the caller). */
static int apply_recipe(qargs *a, const kv_json_doc *doc) {
    const kv_json *r = kv_json_root(doc);
    if (!r || r->type != KV_JSON_OBJECT) return kv_cli_usage("quantize", "recipe: the top level must be a JSON object");
    const kv_json *dup = kv_json_find_duplicate_key(r);
    if (dup) return kv_cli_usage("quantize", "recipe: key '%s' appears twice", dup->key);
    int front = 0;
    for (uint64_t i = 0; i < r->len; i++) {
        const kv_json *v = &r->u.items[i];
        int idx = -1;
        for (int k = 0; k < N_OPTS && idx < 0; k++) {
            char key[48];
            recipe_key(&k_opts[k], key, sizeof key);
            if (k_opts[k].scope != Q_CLI && !strcmp(v->key, key)) idx = k;
        }
        if (idx < 0) {
            char keys[1200];
            valid_keys(keys, sizeof keys);
            return kv_cli_usage("quantize", "recipe: unknown key '%s' (valid keys: %s)", v->key, keys);
        }
        if (v->type == KV_JSON_NULL) continue;
        int rc = apply_member(a, idx, v, &front);
        if (rc) return rc;
    }
    return 0;
}

static int parse_args(int argc, char **argv, qargs *a) {
    memset(a, 0, sizeof *a);
    a->ctx = 512;
    a->chunks = 40;
    for (int i = 1; i < argc; i++) {
        int idx = -1;
        const char *v = NULL;
        for (int k = 0; k < N_OPTS && idx < 0; k++) {
            const qopt *o = &k_opts[k];
            if (o->kind == Q_FLAG) {
                if (kv_cli_flag(argv, i, o->lng, o->shrt)) idx = k;
            } else if (kv_cli_opt(argc, argv, &i, o->lng, o->shrt, &v))
                idx = k;
        }
        if (idx >= 0) {
            if (k_opts[idx].kind != Q_OVERRIDE && k_opts[idx].kind != Q_TYPE_OF && a->set[idx] &&
                k_opts[idx].kind != Q_FLAG)
                return kv_cli_usage("quantize", "%s given twice", k_opts[idx].lng);
            int rc = set_value(a, idx, v);
            if (rc) return rc;
        } else if (argv[i][0] == '-' && argv[i][1])
            return kv_cli_usage("quantize", "unknown option '%s'", argv[i]);
        else if (!a->model) a->model = argv[i];
        else return kv_cli_usage("quantize", "unexpected argument '%s'", argv[i]);
    }
    if (!a->model) return kv_cli_usage("quantize", "missing MODEL");
    if (!a->out) return kv_cli_usage("quantize", "missing -o OUT");
    return 0;
}

static int opt_set(const qargs *a, const char *lng) {
    for (int k = 0; k < N_OPTS; k++)
        if (!strcmp(k_opts[k].lng, lng)) return a->set[k];
    return 0;
}

/* After the recipe: --scheme into format and act, the checks across options. */
static int resolve_args(qargs *a) {
    if (a->scheme) {
        size_t i = 0, n = sizeof k_schemes / sizeof k_schemes[0];
        while (i < n && strcasecmp(a->scheme, k_schemes[i].name)) i++;
        if (i == n) {
            char names[200] = "";
            for (size_t k = 0; k < n; k++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? ", " : "", k_schemes[k].name);
            return kv_cli_usage("quantize", "unknown scheme '%s' (valid: %s)", a->scheme, names);
        }
        const char *want_act = k_schemes[i].act ? k_schemes[i].act : "none";
        if (a->format && strcasecmp(a->format, k_schemes[i].format))
            return kv_cli_usage("quantize", "--scheme %s means --format %s: it conflicts with --format %s", k_schemes[i].name,
                                k_schemes[i].format, a->format);
        if (a->act && strcasecmp(a->act, want_act))
            return kv_cli_usage("quantize", "--scheme %s means --act %s: it conflicts with --act %s", k_schemes[i].name,
                                want_act, a->act);
        a->format = k_schemes[i].format;
        if (k_schemes[i].act) a->act = k_schemes[i].act;
    }
    if ((a->allocate || a->alphas || a->alloc_formats) && a->bits <= 0)
        return kv_cli_usage("quantize", "--allocate, --alphas and --formats go with --bits B");
    if (a->bits > 0 && !a->alloc_formats) return kv_cli_usage("quantize", "--bits needs --formats LIST (the candidates)");
    if (!a->eval && (a->eval_base || a->ppl_only || a->label || opt_set(a, "--ctx") || opt_set(a, "--chunks")))
        return kv_cli_usage("quantize", "--ctx, --chunks, --eval-base-logits, --eval-ppl-only and --label go with --eval TEXT");
    if (a->ppl_only && a->eval_base)
        return kv_cli_usage("quantize", "--eval-ppl-only runs no base model: --eval-base-logits has nothing to do");
    return 0;
}

/* --leave-output-tensor: output.weight keeps the source's type (llama-quantize), f16 when that is quantized;
 * nothing for a tied head (llama-quantize's flag names output.weight only). */
static int leave_output_override(qargs *a) {
    if (!a->leave_output) return 0;
    kv_model_file *mf = NULL;
    kv_error err;
    kv_error_clear(&err);
    if (kv_model_open(a->model, &mf, &err) != KV_OK) return kv_cli_fail("quantize", &err);
    const kv_tensor *t = kv_model_find(mf, "output.weight");
    const char *type = !t ? NULL : t->type == KV_TYPE_F32 ? "f32" : t->type == KV_TYPE_BF16 ? "bf16" : "f16";
    kv_model_close(mf);
    if (!type) {
        fprintf(stderr, "kvant quantize: note: --leave-output-tensor: the model has no output.weight (its head is the "
                "token embedding)\n");
        return 0;
    }
    static const qopt lo = {"--leave-output-tensor", NULL, Q_TYPE_OF, 0, 0, 0, Q_RECIPE, "^output\\.weight$", NULL};
    return type_override(a, &lo, type, -1);
}

/* The recipe this run used, as the JSON object --recipe reads (stored in the output). */
static char *recipe_json(const qargs *a) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    kv_jw w;
    kv_jw_init(&w, f, 0);
    kv_jw_obj_begin(&w);
    const char *format = a->format;
    if (!format) {
        const kv_quant_method *m = NULL;
        kv_method_values v;
        format = kv_method_parse(a->method, &m, &v, NULL) == KV_OK && m->own_format ? m->own_format : "q4_k_m";
    }
    kv_jw_key(&w, "format"), kv_jw_str(&w, format);
    kv_jw_key(&w, "method"), kv_jw_str(&w, a->method ? a->method : "rtn");
    const char *base = (const char *)a;
    for (int k = 0; k < N_OPTS; k++) {
        const qopt *o = &k_opts[k];
        if (o->scope != Q_RECIPE || !a->set[k] || o->off == offsetof(qargs, format) || o->off == offsetof(qargs, method))
            continue;
        if (o->kind == Q_OVERRIDE || o->kind == Q_TYPE_OF || o->off == offsetof(qargs, leave_output)) continue;
        char key[48];
        recipe_key(o, key, sizeof key);
        kv_jw_key(&w, key);
        switch (o->kind) {
        case Q_FLAG: kv_jw_bool(&w, *(const int *)(base + o->off)); break;
        case Q_STR: kv_jw_str(&w, *(const char *const *)(base + o->off)); break;
        case Q_INT: kv_jw_int(&w, *(const long long *)(base + o->off)); break;
        case Q_NUM: kv_jw_num(&w, *(const double *)(base + o->off)); break;
        default: break;
        }
    }
    if (a->n_overrides) { /* aliases included, in the order they apply */
        kv_jw_key(&w, "overrides");
        kv_jw_arr_begin(&w);
        for (int i = 0; i < a->n_overrides; i++) kv_jw_str(&w, a->overrides[i]);
        kv_jw_arr_end(&w);
    }
    kv_jw_obj_end(&w);
    fclose(f);
    return buf;
}

/* --out-format, or what -o implies: a path ending in '/' (or an existing directory) is a Hugging Face directory,
 * *.safetensors is kvant's safetensors file; anything else GGUF. */
static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int resolve_out_format(const qargs *a, kv_out_format *out) {
    static const struct { const char *name; kv_out_format f; } k_out[] = {
        {"gguf", KV_OUT_GGUF}, {"safetensors", KV_OUT_SAFETENSORS}, {"hf", KV_OUT_HF_CT},
        {"compressed-tensors", KV_OUT_HF_CT}, {"ct", KV_OUT_HF_CT}, {"gptq", KV_OUT_HF_GPTQ},
    };
    if (a->out_format) {
        for (size_t i = 0; i < sizeof k_out / sizeof k_out[0]; i++)
            if (!strcmp(a->out_format, k_out[i].name)) {
                *out = k_out[i].f;
                if (*out == KV_OUT_GGUF && (ends_with(a->out, ".safetensors") || ends_with(a->out, "/")))
                    return kv_cli_usage("quantize", "--out-format gguf with -o %s: name the GGUF file *.gguf", a->out);
                return 0;
            }
        return kv_cli_usage("quantize", "--out-format must be gguf, safetensors, hf (= compressed-tensors), "
                            "compressed-tensors or gptq, not '%s'", a->out_format);
    }
    struct stat sb;
    if (ends_with(a->out, "/") || (stat(a->out, &sb) == 0 && S_ISDIR(sb.st_mode))) *out = KV_OUT_HF_CT;
    else if (ends_with(a->out, ".safetensors")) *out = KV_OUT_SAFETENSORS;
    else *out = KV_OUT_GGUF;
    return 0;
}

/* ---- --eval: base vs quantized ---- */

typedef struct eval_row {
    const char *name;
    double mib, bpw, ppl, dppl, kld, top1;
    int has_kld;
} eval_row;

static void eval_progress(void *user, int64_t done, int64_t total) { kv_progress_update(user, done); (void)total; }

static double model_tensor_bytes(const kv_model_file *mf, int64_t *params) {
    double bytes = 0;
    *params = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        if (!t->name[0]) continue;
        bytes += (double)t->nbytes;
        *params += kv_tensor_nelements(t);
    }
    return bytes;
}

/* --eval-base-logits F: F is read when it exists (and must then be a regular file), written otherwise. */
static int base_logits_exist(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Before the work: an existing --eval-base-logits file must be valid and made from the --eval text with this
 * run's ctx and style; otherwise the mismatch would only be found after quantizing. */
static kv_status precheck_eval_base(const qargs *a, kv_error *err) {
    if (!a->eval || !a->eval_base || a->ppl_only || !base_logits_exist(a->eval_base)) return KV_OK;
    kv_logprobs *lp = NULL;
    kv_model_file *src = NULL;
    kv_tokenizer *tok = NULL;
    kv_mapped text = {0};
    int mapped = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    kv_status st = kv_logprobs_load(a->eval_base, &lp, err);
    if (st == KV_OK) st = kv_model_open(a->model, &src, err);
    if (st == KV_OK) st = kv_tokenizer_load_for_model(src, &tok, err);
    if (st == KV_OK && (st = kv_map_file(a->eval, &text, err)) == KV_OK) mapped = 1;
    if (st == KV_OK) st = kv_tokenize(tok, (const char *)text.data, text.size, kv_tokenizer_bos(tok) >= 0, &ids, &n_ids, err);
    if (st == KV_OK) {
        kv_eval_opts eo = {.ctx = (int32_t)a->ctx, .chunks = a->chunks, .style = KV_PPL_HF, .bos_id = -1};
        if ((st = kv_logprobs_check(lp, NULL, ids, (int64_t)n_ids, &eo, err)) != KV_OK)
            kv_error_context(err, a->eval_base, -1, NULL);
    }
    free(ids);
    if (mapped) kv_unmap_file(&text);
    kv_tokenizer_free(tok);
    kv_model_close(src);
    kv_logprobs_free(lp);
    return st;
}

static int run_eval(const qargs *a, kv_pool *pool, eval_row rows[2], kv_error *err) {
    kv_model_file *src = NULL, *qf = NULL;
    kv_model *base = NULL, *qm = NULL;
    kv_tokenizer *tok = NULL;
    kv_logprobs *lp = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    kv_mapped text = {0};
    int mapped = 0;
    kv_status st = kv_model_open(a->model, &src, err);
    if (st == KV_OK) st = kv_model_open(a->out, &qf, err);
    if (st == KV_OK) st = kv_tokenizer_load_for_model(src, &tok, err);
    if (st == KV_OK && (st = kv_map_file(a->eval, &text, err)) == KV_OK) mapped = 1;
    if (st == KV_OK) st = kv_tokenize(tok, (const char *)text.data, text.size, kv_tokenizer_bos(tok) >= 0, &ids, &n_ids, err);
    if (st == KV_OK) st = kv_model_load(src, NULL, &base, err);
    if (st == KV_OK) st = kv_model_load(qf, NULL, &qm, err);
    if (st == KV_OK) st = kv_model_apply_transforms(qm, qf, err);
    if (st == KV_OK) st = kv_model_linears_to_f32(qm, err);
    if (st == KV_OK && a->act && !kv_model_act_format(qf)) { /* an HF W8A8/FP8 dir carries its own (applied at load) */
        kv_format af;
        int none = 1;
        if ((st = kv_act_format(a->act, &af, &none, err)) == KV_OK && !none) {
            if ((st = kv_model_set_act_quant(qm, &af, 0, err)) == KV_OK) st = kv_model_set_act_quant(base, NULL, 0, err);
        }
    }
    kv_eval_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.ctx = (int32_t)a->ctx;
    eo.chunks = a->chunks;
    eo.style = KV_PPL_HF;
    eo.bos_id = -1;
    kv_eval_result rb, rq;
    memset(&rb, 0, sizeof rb);
    memset(&rq, 0, sizeof rq);
    kv_progress prog;
    if (st == KV_OK) {
        int64_t windows = (int64_t)n_ids / a->ctx;
        if (a->chunks > 0 && a->chunks < windows) windows = a->chunks;
        eo.progress = eval_progress;
        eo.progress_user = &prog;
        int have_base = a->eval_base && base_logits_exist(a->eval_base);
        if (a->ppl_only) {
            kv_progress_begin(&prog, "eval quantized", windows, a->quiet);
            st = kv_eval_ppl(qm, ids, (int64_t)n_ids, &eo, pool, &rq, err);
            kv_progress_end(&prog);
        } else if (have_base) {
            /* the file must come from this text, ctx and style (as eval --kld checks) */
            if ((st = kv_logprobs_load(a->eval_base, &lp, err)) == KV_OK &&
                (st = kv_logprobs_check(lp, base, ids, (int64_t)n_ids, &eo, err)) != KV_OK)
                kv_error_context(err, a->eval_base, -1, NULL);
        } else {
            kv_progress_begin(&prog, "eval base", windows, a->quiet);
            st = kv_eval_base_logprobs(base, ids, (int64_t)n_ids, &eo, pool, &lp, &rb, err);
            kv_progress_end(&prog);
            if (st == KV_OK && a->eval_base) st = kv_logprobs_save(lp, a->eval_base, err);
        }
        if (st == KV_OK && !a->ppl_only) {
            kv_progress_begin(&prog, "eval quantized", windows, a->quiet);
            st = kv_eval_kld(qm, lp, pool, &rq, err);
            kv_progress_end(&prog);
        }
    }
    if (st == KV_OK) {
        int64_t pb = 0, pq = 0;
        double bb = model_tensor_bytes(src, &pb), bq = model_tensor_bytes(qf, &pq);
        double base_ppl = a->ppl_only ? NAN : rb.ppl > 0 ? rb.ppl : rq.kld.ppl_base; /* saved log-probs when reused */
        rb.ppl = base_ppl;
        rows[0] = (eval_row){"base", bb / 1048576.0, pb ? bb * 8 / (double)pb : 0, base_ppl, 0, 0, 100, 1};
        rows[1] = (eval_row){"quantized", bq / 1048576.0, pq ? bq * 8 / (double)pq : 0, rq.ppl, rq.ppl - rb.ppl,
                             rq.has_kld ? rq.kld.mean : NAN, rq.has_kld ? rq.kld.top1_agree : NAN, rq.has_kld};
    }
    kv_logprobs_free(lp);
    free(ids);
    if (mapped) kv_unmap_file(&text);
    kv_tokenizer_free(tok);
    kv_model_free(qm);
    kv_model_free(base);
    kv_model_close(qf);
    kv_model_close(src);
    return st;
}

/* ---- --bits: per-layer formats from the allocation (src/algos/sensitivity.c) ---- */

static int allocate(const qargs *a, kv_pool *pool, char ***specs, int *n_specs) {
    kv_error err;
    kv_error_clear(&err);
    kv_alloc_mode mode = KV_ALLOC_LINEARITY;
    if (a->allocate && kv_alloc_mode_parse(a->allocate, &mode, &err)) return kv_cli_fail("quantize", &err);
    if (mode != KV_ALLOC_UNIFORM && !a->alphas)
        return kv_cli_usage("quantize", "--allocate %s needs --alphas FILE (from kvant sensitivity)",
                            a->allocate ? a->allocate : "linearity");
    char **items;
    int n = kv_cli_split_list(a->alloc_formats, &items);
    if (n <= 0) {
        kv_cli_free_list(items, n > 0 ? n : 0);
        return kv_cli_usage("quantize", "--formats needs a comma-separated list of candidate formats");
    }
    /* the rotation block of --transform rht[:B] (0: none), so the error table sees rotated weights */
    int32_t rht_block = 0;
    if (kv_transform_list_rht_block(a->transform, &rht_block, &err) != KV_OK) {
        kv_cli_free_list(items, n);
        return kv_cli_fail("quantize", &err);
    }
    kv_alloc_report rep;
    kv_status st = kv_alloc_overrides(a->model, a->alphas, (const char *const *)items, n, a->bits, mode,
                                      rht_block, (uint64_t)a->seed, pool, specs, n_specs, &rep, &err);
    kv_cli_free_list(items, n);
    if (st) return kv_cli_fail("quantize", &err);
    double params = rep.bits_per_weight > 0 ? rep.result.total_bits / rep.bits_per_weight : 0;
    if (params > 0 && a->bits * params > rep.result.max_bits)
        fprintf(stderr, "kvant quantize: note: --bits %g is above the largest candidate mix (%.4f bits/weight): every "
                "layer gets its lowest-error candidate\n", a->bits, rep.result.max_bits / params);
    if (!a->quiet && !a->json) {
        fprintf(stderr, "kvant quantize: allocation %s: %d layers at %.4f bits/weight (budget %.4g), predicted loss %.6g\n",
                a->allocate ? a->allocate : "linearity", rep.n_layers, rep.bits_per_weight, a->bits,
                rep.result.total_cost);
        for (int i = 0; i < *n_specs; i++) fprintf(stderr, "  %s\n", (*specs)[i]);
    }
    return 0;
}

/* --verbose: llama-quantize's per-tensor line. */
static void print_tensor(void *user, const char *name, const char *type, int n_dims, const int64_t *shape,
                         uint64_t bytes) {
    (void)user;
    char sh[96] = "";
    for (int d = 0; d < n_dims; d++)
        snprintf(sh + strlen(sh), sizeof sh - strlen(sh), "%s%lld", d ? ", " : "", (long long)shape[d]);
    fprintf(stderr, "%-40s - [%s], type = %14s, size = %10.3f MiB\n", name, sh, type, (double)bytes / 1048576.0);
}

int kv_cmd_quantize(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    qargs a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    kv_cli_track_output(a.out); /* a signal removes its temp */
    kv_cli_track_output(a.eval_base);
    kv_error err;
    kv_error_clear(&err);
    kv_json_doc *recipe = NULL;
    if (a.recipe) {
        if (kv_json_parse_file(a.recipe, 0, &recipe, &err) != KV_OK) {
            err.status = KV_EINVAL;
            return kv_cli_fail("quantize", &err);
        }
        if ((rc = apply_recipe(&a, recipe)) != 0) {
            kv_json_free(recipe);
            return rc;
        }
    }
    if ((rc = resolve_args(&a)) != 0 || (rc = leave_output_override(&a)) != 0) {
        kv_json_free(recipe);
        return rc;
    }
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    o.format = a.format;
    o.method = a.method;
    o.transforms = a.transform;
    o.overrides = a.overrides;
    o.n_overrides = a.n_overrides;
    o.pure = a.pure;
    o.calib_path = a.calib;
    o.calib_tokens = a.calib_tokens;
    o.no_imatrix = a.no_imatrix;
    o.imatrix_path = a.imatrix;
    o.act = a.act;
    o.transform_only = a.transform_only;
    o.entropy_code = a.entropy_code;
    o.seed = (uint64_t)a.seed;
    o.quiet = a.quiet;
    o.log = log_note;
    o.allow_requantize = a.allow_requantize;
    o.resume = a.resume;
    const char *kill_after = getenv("KVANT_TEST_KILL_AFTER_BLOCK"); /* the suite's kill -9 in the middle of a run */
    if (kill_after) o.test_kill_after_block = atoi(kill_after);
    if (a.verbose) o.on_tensor = print_tensor;
    if ((rc = resolve_out_format(&a, &o.out_format)) != 0) {
        kv_json_free(recipe);
        return rc;
    }
    o.max_shard_bytes = (uint64_t)a.max_shard_mb << 20;
    if (a.eval && o.out_format == KV_OUT_SAFETENSORS) {
        kv_json_free(recipe);
        return kv_cli_usage("quantize", "--eval needs GGUF or HF output (kvant cannot run its packed safetensors file)");
    }
    /* everything the library refuses, and the outputs writable, before any work (the allocation included) */
    if (kv_quantize_check(a.model, a.out, &o, &err) != KV_OK) {
        kv_json_free(recipe);
        return kv_cli_fail("quantize", &err);
    }
    const int hf_out = o.out_format == KV_OUT_HF_CT || o.out_format == KV_OUT_HF_GPTQ; /* a directory, checked above */
    if ((!hf_out && (rc = kv_cli_prepare_output("quantize", a.out))) ||
        (a.eval && a.eval_base && !base_logits_exist(a.eval_base) && (rc = kv_cli_prepare_output("quantize", a.eval_base)))) {
        kv_json_free(recipe);
        return rc;
    }
    if (precheck_eval_base(&a, &err) != KV_OK) {
        kv_json_free(recipe);
        return kv_cli_fail("quantize", &err);
    }
    kv_pool *pool = kv_pool_create(a.threads > 0 ? (int)a.threads : 0);
    o.pool = pool;
    char **alloc_specs = NULL;
    int n_alloc = 0;
    const char **all_overrides = NULL;
    if (a.bits > 0) {
        rc = allocate(&a, pool, &alloc_specs, &n_alloc);
        if (rc) {
            kv_pool_destroy(pool);
            kv_json_free(recipe);
            return rc;
        }
        /* allocation first: the user's --override still wins (the last match wins) */
        all_overrides = calloc((size_t)(n_alloc + a.n_overrides) + 1, sizeof *all_overrides);
        for (int i = 0; i < n_alloc; i++) all_overrides[i] = alloc_specs[i];
        for (int i = 0; i < a.n_overrides; i++) all_overrides[n_alloc + i] = a.overrides[i];
        o.overrides = all_overrides;
        o.n_overrides = n_alloc + a.n_overrides;
    }
    char *rjson = recipe_json(&a);
    o.recipe_json = rjson;
    kv_quantize_report rep;
    kv_status st = kv_quantize_model(a.model, a.out, &o, &rep, &err);
    free(rjson);
    for (int i = 0; i < n_alloc; i++) free(alloc_specs[i]);
    free(alloc_specs);
    free(all_overrides);
    eval_row rows[2];
    int have_eval = 0;
    if (st == KV_OK && a.eval) {
        st = run_eval(&a, pool, rows, &err);
        have_eval = st == KV_OK;
    }
    /* llm-int8: the outlier columns per tensor, as the written file records them */
    kv_llmint8_summary i8 = {0};
    int have_i8 = 0;
    const kv_quant_method *meth = NULL;
    kv_method_values mv;
    if (kv_method_parse(a.method, &meth, &mv, NULL) != KV_OK) meth = NULL; /* checked above */
    if (st == KV_OK && meth && meth->outlier_columns && o.out_format == KV_OUT_GGUF) {
        kv_model_file *qf = NULL;
        if ((st = kv_model_open(a.out, &qf, &err)) == KV_OK) st = kv_llmint8_summary_read(qf, &i8, &err);
        kv_model_close(qf);
        have_i8 = st == KV_OK;
    }
    kv_pool_destroy(pool);
    if (st != KV_OK) {
        kv_json_free(recipe);
        return kv_cli_fail("quantize", &err);
    }
    /* the quantized row of the --eval table: --label, else the recipe (format, A:act) */
    char row_label[160];
    snprintf(row_label, sizeof row_label, "%s%s%s", a.label ? a.label : a.format ? a.format : have_i8 ? KV_LLMINT8_FORMAT : "q4_k_m",
             !a.label && a.act && strcmp(a.act, "none") ? " A:" : "", !a.label && a.act && strcmp(a.act, "none") ? a.act : "");
    if (have_eval) rows[1].name = row_label;
    if (a.json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "model"), kv_jw_str(&w, a.model);
        kv_jw_key(&w, "output"), kv_jw_str(&w, a.out);
        kv_jw_key(&w, "format"), kv_jw_str(&w, a.format ? a.format : have_i8 ? KV_LLMINT8_FORMAT : "q4_k_m");
        kv_jw_key(&w, "method"), kv_jw_str(&w, a.method ? a.method : "rtn");
        kv_jw_key(&w, "transforms"), kv_jw_str(&w, rep.transforms);
        kv_jw_key(&w, "tensors"), kv_jw_int(&w, rep.n_tensors);
        kv_jw_key(&w, "quantized"), kv_jw_int(&w, rep.n_quantized);
        kv_jw_key(&w, "fallbacks"), kv_jw_int(&w, rep.n_fallback);
        kv_jw_key(&w, "params"), kv_jw_int(&w, rep.n_params);
        kv_jw_key(&w, "tensor_bytes"), kv_jw_int(&w, (int64_t)rep.tensor_bytes);
        kv_jw_key(&w, "file_bytes"), kv_jw_int(&w, (int64_t)rep.file_bytes);
        kv_jw_key(&w, "bits_per_weight"), kv_jw_num(&w, rep.bpw);
        kv_jw_key(&w, "seconds"), kv_jw_num(&w, rep.seconds);
        kv_jw_key(&w, "peak_rss_bytes"), kv_jw_int(&w, (int64_t)rep.peak_rss_bytes);
        kv_jw_key(&w, "streamed"), kv_jw_bool(&w, rep.streamed != 0);
        kv_jw_key(&w, "llama_cpp_runs"), kv_jw_bool(&w, rep.llama_cpp_runs != 0);
        kv_jw_key(&w, "llama_cpp_why"), kv_jw_str(&w, rep.llama_cpp_why);
        if (have_i8) {
            kv_jw_key(&w, "llmint8");
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "threshold"), kv_jw_num(&w, i8.threshold);
            kv_jw_key(&w, "tensors"), kv_jw_int(&w, i8.n_tensors);
            kv_jw_key(&w, "outlier_columns_total"), kv_jw_int(&w, i8.total);
            kv_jw_key(&w, "outlier_columns_max"), kv_jw_int(&w, i8.max);
            kv_jw_key(&w, "max_tensor"), kv_jw_str(&w, i8.max_index >= 0 ? i8.tensors[i8.max_index].name : "");
            kv_jw_key(&w, "per_tensor");
            kv_jw_arr_begin(&w);
            for (int64_t i = 0; i < i8.n_tensors; i++) {
                kv_jw_obj_begin(&w);
                kv_jw_key(&w, "name"), kv_jw_str(&w, i8.tensors[i].name);
                kv_jw_key(&w, "cols"), kv_jw_int(&w, i8.tensors[i].cols);
                kv_jw_key(&w, "outlier_columns"), kv_jw_int(&w, i8.tensors[i].n_outliers);
                kv_jw_obj_end(&w);
            }
            kv_jw_arr_end(&w);
            kv_jw_obj_end(&w);
        }
        if (have_eval) {
            kv_jw_key(&w, "eval");
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "text"), kv_jw_str(&w, a.eval);
            kv_jw_key(&w, "ctx"), kv_jw_int(&w, a.ctx);
            kv_jw_key(&w, "chunks"), kv_jw_int(&w, a.chunks);
            kv_jw_key(&w, "act"), kv_jw_str(&w, a.act ? a.act : "none");
            kv_jw_key(&w, "rows");
            kv_jw_arr_begin(&w);
            for (int i = 0; i < 2; i++) {
                kv_jw_obj_begin(&w);
                kv_jw_key(&w, "model"), kv_jw_str(&w, rows[i].name);
                kv_jw_key(&w, "size_mib"), kv_jw_num(&w, rows[i].mib);
                kv_jw_key(&w, "bits_per_weight"), kv_jw_num(&w, rows[i].bpw);
                kv_jw_key(&w, "ppl"), kv_jw_num(&w, rows[i].ppl);
                kv_jw_key(&w, "delta_ppl"), kv_jw_num(&w, rows[i].dppl);
                kv_jw_key(&w, "kld_mean"), kv_jw_num(&w, rows[i].kld);
                kv_jw_key(&w, "top1_agree"), kv_jw_num(&w, rows[i].top1);
                kv_jw_obj_end(&w);
            }
            kv_jw_arr_end(&w);
            kv_jw_obj_end(&w);
        }
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else {
        printf("quantized %s -> %s: %lld tensors (%lld quantized, %lld fallbacks), %s %.2f MiB, tensor data %.2f MiB, "
               "%.3f bits/weight, %.1f s%s%s\n",
               a.model, a.out, (long long)rep.n_tensors, (long long)rep.n_quantized, (long long)rep.n_fallback,
               o.out_format == KV_OUT_GGUF || o.out_format == KV_OUT_SAFETENSORS ? "file" : "safetensors", (double)rep.file_bytes / 1048576.0,
               (double)rep.tensor_bytes / 1048576.0, rep.bpw, rep.seconds, rep.transforms[0] ? ", transforms " : "",
               rep.transforms);
        printf("memory: peak RSS %.1f MiB (%s)\n", (double)rep.peak_rss_bytes / 1048576.0,
               rep.streamed == 2 ? "streamed: one decoder block at a time"
               : rep.streamed ? "streamed: one tensor at a time per thread" : "the whole model held in fp32");
        if (!rep.llama_cpp_runs) printf("llama.cpp: cannot run this file (kvant eval/run can): %s\n", rep.llama_cpp_why);
        else if (rep.llama_cpp_why[0]) printf("llama.cpp: runs this file (%s)\n", rep.llama_cpp_why);
        else printf("llama.cpp: runs this file\n");
        if (have_i8) {
            printf("llm-int8: threshold %g: %lld outlier input columns in fp16 over %lld tensors, max %lld (%s)\n",
                   i8.threshold, (long long)i8.total, (long long)i8.n_tensors, (long long)i8.max,
                   i8.max_index >= 0 ? i8.tensors[i8.max_index].name : "-");
            for (int64_t i = 0; i < i8.n_tensors; i++)
                printf("  %-28s %6lld / %lld\n", i8.tensors[i].name, (long long)i8.tensors[i].n_outliers,
                       (long long)i8.tensors[i].cols);
        }
        if (have_eval) {
            char win[64];
            if (a.chunks) snprintf(win, sizeof win, "first %lld windows", a.chunks);
            else snprintf(win, sizeof win, "all windows");
            printf("\neval: %s, hf style, ctx %lld, %s%s%s\n", a.eval, a.ctx, win,
                   a.act && strcmp(a.act, "none") ? ", activations " : "", a.act && strcmp(a.act, "none") ? a.act : "");
            printf("| model | tensors (MiB) | bits/weight | PPL | ΔPPL | KLD mean | top-1 agree |\n");
            printf("|---|---:|---:|---:|---:|---:|---:|\n");
            if (a.ppl_only) printf("| base | %.2f | %.3f | — | — | — | — |\n", rows[0].mib, rows[0].bpw);
            else printf("| base | %.2f | %.3f | %.4f | — | — | — |\n", rows[0].mib, rows[0].bpw, rows[0].ppl);
            if (a.ppl_only)
                printf("| %s | %.2f | %.3f | %.4f | — | — | — |\n", row_label, rows[1].mib, rows[1].bpw, rows[1].ppl);
            else printf("| %s | %.2f | %.3f | %.4f | %+.4f | %.5f | %.2f%% |\n", row_label, rows[1].mib,
                   rows[1].bpw, rows[1].ppl, rows[1].dppl, rows[1].kld, rows[1].top1);
        }
    }
    kv_llmint8_summary_free(&i8);
    kv_json_free(recipe);
    return 0;
}
