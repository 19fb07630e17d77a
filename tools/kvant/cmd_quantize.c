/* cmd_quantize.c — `kvant quantize`: parse options (and an optional JSON recipe), call kv_quantize_model,
 * print the summary line (tensors, bytes, bits/weight, time) or JSON, and with --eval compare the base and
 * the quantized model on a text: size, bits/weight, PPL, ΔPPL, KLD, top-1 agreement. docs/quantize.md. */
#include "cli.h"
#include <sys/stat.h>
#include "io/json.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_OVERRIDES 4096

static void usage(FILE *out) {
    fprintf(out,
            "usage: kvant quantize MODEL -o OUT.gguf [options]\n"
            "  MODEL                 a Hugging Face directory, a .gguf, or a llama2.c checkpoint\n"
            "  -o, --output PATH     output file (written atomically: nothing is left on failure)\n"
            "  --format F            a format (q4_0, q4_k, int4_g128_asym, mxfp4_ocp, nvfp4_ts, nf4, higgs_p2_b4, ...)\n"
            "                        or a llama.cpp mix (q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k\n"
            "                        q4_0 q4_1 q5_0 q5_1 q8_0 iq4_nl iq4_xs); default q4_k_m (llm-int8: int8_g0_sym_f32).\n"
            "                        `kvant formats` lists formats\n"
            "  --pure                every quantizable tensor gets F (no llama.cpp mix rules)\n"
            "  --method M[:OPTS]     rtn (default), gptq, mr-gptq, watersic, llm-int8[:threshold=F,head] (docs/methods.md)\n"
            "  --transform T[,T...]  rht[:BLOCK] (default block 512), quarot, fold-norms, smoothquant[:ALPHA], awq,\n"
            "                        prescale\n"
            "  --transform-only      write the transformed model unquantized (f32), e.g. to check a rotation\n"
            "  --entropy-code        store the integer codes of int{n}_g{g}_* tensors entropy-coded (rANS, type ecw;\n"
            "                        the \"Huffman-GPTQ\" baseline with --method gptq); GGUF only, kvant reads it\n"
            "  --act A               simulated activation quantization for --eval: none int8 fp8 mxfp8 mxfp4\n"
            "  --calib FILE          calibration text (imatrix, smoothquant, awq)\n"
            "  --calib-tokens N      calibration tokens (default 65536 = 128 windows of 512)\n"
            "  --no-imatrix          do not compute importance from --calib\n"
            "  --imatrix FILE        importance from a llama.cpp imatrix file (.dat or .gguf)\n"
            "  --override 'RE=F'     tensors whose name matches the POSIX regex RE get format F (repeatable)\n"
            "  --bits B              bit allocation: choose one of --formats per linear layer so that the decoder\n"
            "                        linears average at most B bits/weight (exact, scales included); the embedding\n"
            "                        and head follow --format's rules. docs/sensitivity.md\n"
            "  --allocate MODE       linearity (default: the HIGGS dynamic program over alpha_l * t_l), waterfill,\n"
            "                        uniform\n"
            "  --alphas FILE         layer sensitivities from `kvant sensitivity` (linearity, waterfill)\n"
            "  --formats LIST        comma-separated candidate formats for --bits (e.g. q2_k,q3_k,q4_k,q5_k,q6_k)\n"
            "  --recipe FILE.json    options from a JSON object (keys as the long options; command line wins)\n"
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
            "  --quiet               no progress lines\n"
            "  --json                print the report as JSON\n");
}

typedef struct qargs {
    const char *model, *out, *format, *method, *transform, *act, *calib, *imatrix, *recipe, *out_format, *eval;
    const char *eval_base, *label, *allocate, *alphas, *alloc_formats;
    double bits;
    const char *overrides[MAX_OVERRIDES];
    int n_overrides;
    long long calib_tokens, ctx, chunks, seed, threads, max_shard_mb;
    int pure, no_imatrix, quiet, json, transform_only, ppl_only, entropy_code;
    int set_calib_tokens, set_seed;
} qargs;

static void log_note(void *user, const char *msg) {
    (void)user;
    if (!strncmp(msg, "warning: ", 9)) fprintf(stderr, "kvant quantize: warning: %s\n", msg + 9);
    else fprintf(stderr, "kvant quantize: note: %s\n", msg);
}

/* Recipe values fill what the command line left unset. Strings point into doc (kept alive by the caller). */
static int apply_recipe(qargs *a, const kv_json_doc *doc) {
    const kv_json *r = kv_json_root(doc);
    if (!r || r->type != KV_JSON_OBJECT) return kv_cli_usage("quantize", "recipe: the top level must be a JSON object");
    static const char *const known[] = {"format", "method", "transform", "act", "calib", "calib_tokens", "imatrix",
                                        "overrides", "pure", "seed", "out_format", "no_imatrix"};
    for (uint64_t i = 0; i < r->len; i++) {
        int ok = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) ok |= !strcmp(r->u.items[i].key, known[k]);
        if (!ok) return kv_cli_usage("quantize", "recipe: unknown key '%s'", r->u.items[i].key);
    }
    struct { const char *key; const char **dst; } strs[] = {
        {"format", &a->format}, {"method", &a->method}, {"transform", &a->transform}, {"act", &a->act},
        {"calib", &a->calib}, {"imatrix", &a->imatrix}, {"out_format", &a->out_format},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const char *v;
        int rc = kv_json_get_str(r, strs[i].key, &v);
        if (rc < 0) return kv_cli_usage("quantize", "recipe: '%s' must be a string", strs[i].key);
        if (rc == 1 && !*strs[i].dst) *strs[i].dst = v;
    }
    int64_t iv;
    int b, rc;
    if ((rc = kv_json_get_int(r, "calib_tokens", &iv)) < 0 || (rc == 1 && iv <= 0)) return kv_cli_usage("quantize", "recipe: bad calib_tokens");
    if (rc == 1 && !a->set_calib_tokens) a->calib_tokens = iv;
    if ((rc = kv_json_get_int(r, "seed", &iv)) < 0 || (rc == 1 && iv < 0)) return kv_cli_usage("quantize", "recipe: bad seed");
    if (rc == 1 && !a->set_seed) a->seed = iv;
    if ((rc = kv_json_get_bool(r, "pure", &b)) < 0) return kv_cli_usage("quantize", "recipe: 'pure' must be true or false");
    if (rc == 1 && b) a->pure = 1;
    if ((rc = kv_json_get_bool(r, "no_imatrix", &b)) < 0) return kv_cli_usage("quantize", "recipe: 'no_imatrix' must be true or false");
    if (rc == 1 && b) a->no_imatrix = 1;
    const kv_json *ov = kv_json_get(r, "overrides");
    if (ov && ov->type != KV_JSON_ARRAY) return kv_cli_usage("quantize", "recipe: 'overrides' must be an array of \"REGEX=FORMAT\" strings");
    /* recipe overrides come first so that command-line ones win (the last match wins) */
    if (ov) {
        if (a->n_overrides + (int)ov->len > MAX_OVERRIDES) return kv_cli_usage("quantize", "too many overrides");
        memmove(a->overrides + ov->len, a->overrides, (size_t)a->n_overrides * sizeof a->overrides[0]);
        for (uint64_t i = 0; i < ov->len; i++) {
            if (ov->u.items[i].type != KV_JSON_STRING) return kv_cli_usage("quantize", "recipe: overrides[%llu] is not a string", (unsigned long long)i);
            a->overrides[i] = ov->u.items[i].u.str;
        }
        a->n_overrides += (int)ov->len;
    }
    return 0;
}

static int parse_args(int argc, char **argv, qargs *a) {
    memset(a, 0, sizeof *a);
    a->ctx = 512;
    a->chunks = 40;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (kv_cli_flag(argv, i, "--pure", NULL)) a->pure = 1;
        else if (kv_cli_flag(argv, i, "--no-imatrix", NULL)) a->no_imatrix = 1;
        else if (kv_cli_flag(argv, i, "--transform-only", NULL)) a->transform_only = 1;
        else if (kv_cli_flag(argv, i, "--entropy-code", NULL)) a->entropy_code = 1;
        else if (kv_cli_flag(argv, i, "--eval-ppl-only", NULL)) a->ppl_only = 1;
        else if (kv_cli_flag(argv, i, "--quiet", "-q")) a->quiet = 1;
        else if (kv_cli_flag(argv, i, "--json", NULL)) a->json = 1;
#define STR_OPT(l, s, dst) else if (kv_cli_opt(argc, argv, &i, l, s, &v)) { if (!v) return kv_cli_usage("quantize", "%s needs a value", l); dst = v; }
#define INT_OPT(l, s, dst, lo, hi, flag) else if (kv_cli_opt(argc, argv, &i, l, s, &v)) { \
            if (!v || kv_cli_parse_int(v, lo, hi, &dst)) { \
                return kv_cli_usage("quantize", "%s needs an integer in [%lld, %lld]", l, (long long)(lo), (long long)(hi)); \
            } \
            flag; }
        STR_OPT("--output", "-o", a->out)
        STR_OPT("--format", NULL, a->format)
        STR_OPT("--method", NULL, a->method)
        STR_OPT("--transform", NULL, a->transform)
        STR_OPT("--act", NULL, a->act)
        STR_OPT("--calib", NULL, a->calib)
        STR_OPT("--imatrix", NULL, a->imatrix)
        STR_OPT("--recipe", NULL, a->recipe)
        STR_OPT("--out-format", NULL, a->out_format)
        STR_OPT("--eval", NULL, a->eval)
        STR_OPT("--eval-base-logits", NULL, a->eval_base)
        STR_OPT("--label", NULL, a->label)
        STR_OPT("--allocate", NULL, a->allocate)
        STR_OPT("--alphas", NULL, a->alphas)
        STR_OPT("--formats", NULL, a->alloc_formats)
        else if (kv_cli_opt(argc, argv, &i, "--bits", NULL, &v)) {
            if (!v || kv_cli_parse_double(v, &a->bits) || !(a->bits > 0 && a->bits <= 64))
                return kv_cli_usage("quantize", "--bits needs a number of bits per weight in (0, 64]");
        }
        INT_OPT("--calib-tokens", NULL, a->calib_tokens, 1, 1LL << 32, a->set_calib_tokens = 1)
        INT_OPT("--ctx", NULL, a->ctx, 8, 1 << 20, (void)0)
        INT_OPT("--chunks", NULL, a->chunks, 0, 1LL << 32, (void)0)
        INT_OPT("--seed", NULL, a->seed, 0, 1LL << 62, a->set_seed = 1)
        INT_OPT("--threads", "-t", a->threads, 1, 1024, (void)0)
        INT_OPT("--max-shard-size", NULL, a->max_shard_mb, 1, 1LL << 24, (void)0)
        else if (kv_cli_opt(argc, argv, &i, "--override", NULL, &v)) {
            if (!v) return kv_cli_usage("quantize", "--override needs 'REGEX=FORMAT'");
            if (a->n_overrides == MAX_OVERRIDES) return kv_cli_usage("quantize", "too many overrides (max %d)", MAX_OVERRIDES);
            a->overrides[a->n_overrides++] = v;
        } else if (argv[i][0] == '-' && argv[i][1]) return kv_cli_usage("quantize", "unknown option '%s'", argv[i]);
        else if (!a->model) a->model = argv[i];
        else return kv_cli_usage("quantize", "unexpected argument '%s'", argv[i]);
#undef STR_OPT
#undef INT_OPT
    }
    if (!a->model) return kv_cli_usage("quantize", "missing MODEL");
    if (!a->out) return kv_cli_usage("quantize", "missing -o OUT");
    if ((a->allocate || a->alphas || a->alloc_formats) && a->bits <= 0)
        return kv_cli_usage("quantize", "--allocate, --alphas and --formats go with --bits B");
    if (a->bits > 0 && !a->alloc_formats) return kv_cli_usage("quantize", "--bits needs --formats LIST (the candidates)");
    return 0;
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

/* Dequantizes every linear once to f32 so evaluation runs the fast f32 GEMM: the same weight values the
 * on-the-fly path reconstructs, without re-decoding them for every window. */
static kv_status weights_to_f32(kv_model *m, kv_error *err) {
    kv_format f32;
    kv_status st = kv_format_from_type(KV_TYPE_F32, &f32, err);
    const int n_layer = kv_model_get_hparams(m)->n_layer;
    for (int l = 0; l <= n_layer && st == KV_OK; l++)
        for (int k = 0; k < KV_LINEAR_COUNT && st == KV_OK; k++) {
            kv_linear_id id = (kv_linear_id)k;
            if ((l == n_layer) != (id == KV_LINEAR_HEAD)) continue;
            const kv_weight *w = kv_model_weight(m, l, id);
            if (!w || w->llmint8 || w->fmt.type == KV_TYPE_F32 || !w->fmt.dequantize) continue; /* LLM.int8: own kernel */
            size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
            float *d = malloc((size_t)(w->rows * w->cols) * sizeof(float));
            if (!d) return kv_fail(err, KV_ENOMEM, "out of memory converting weights for evaluation");
            for (int64_t r = 0; r < w->rows; r++)
                w->fmt.dequantize(&w->fmt, (const uint8_t *)w->data + (size_t)r * rb, d + r * w->cols, w->cols);
            char name[96];
            if (id == KV_LINEAR_HEAD) snprintf(name, sizeof name, "output.weight");
            else snprintf(name, sizeof name, "blk.%d.%s.weight", l, kv_linear_name(id));
            st = kv_model_set_weight(m, name, &f32, d, 1, err);
            if (st != KV_OK) free(d);
        }
    return st;
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
    if (st == KV_OK) st = weights_to_f32(qm, err);
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

/* The rotation block of --transform rht[:B] (0 when no rht), so the error table sees rotated weights. */
static int32_t rht_block_of(const char *transforms) {
    if (!transforms) return 0;
    const char *p = strstr(transforms, "rht");
    if (!p || (p != transforms && p[-1] != ',')) return 0;
    if (p[3] == ':') return (int32_t)atoi(p + 4);
    return 512;
}

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
    kv_alloc_report rep;
    kv_status st = kv_alloc_overrides(a->model, a->alphas, (const char *const *)items, n, a->bits, mode,
                                      rht_block_of(a->transform), (uint64_t)a->seed, pool, specs, n_specs, &rep, &err);
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
    if ((rc = resolve_out_format(&a, &o.out_format)) != 0) {
        kv_json_free(recipe);
        return rc;
    }
    o.max_shard_bytes = (uint64_t)a.max_shard_mb << 20;
    if (a.eval && o.out_format == KV_OUT_SAFETENSORS) {
        kv_json_free(recipe);
        return kv_cli_usage("quantize", "--eval needs GGUF or HF output (kvant cannot run its packed safetensors file)");
    }
    /* outputs writable before the work (a read-only directory used to be reported after all of it) */
    if ((rc = kv_cli_prepare_output("quantize", a.out)) ||
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
    kv_quantize_report rep;
    kv_status st = kv_quantize_model(a.model, a.out, &o, &rep, &err);
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
    if (st == KV_OK && a.method && !strncmp(a.method, "llm-int8", 8) && o.out_format == KV_OUT_GGUF) {
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
        printf("quantized %s -> %s: %lld tensors (%lld quantized, %lld fallbacks), %.2f MiB, %.3f bits/weight, %.1f s%s%s\n",
               a.model, a.out, (long long)rep.n_tensors, (long long)rep.n_quantized, (long long)rep.n_fallback,
               (double)rep.file_bytes / 1048576.0, rep.bpw, rep.seconds, rep.transforms[0] ? ", transforms " : "",
               rep.transforms);
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
            printf("| model | size (MiB) | bits/weight | PPL | ΔPPL | KLD mean | top-1 agree |\n");
            printf("|---|---:|---:|---:|---:|---:|---:|\n");
            if (a.ppl_only) printf("| base | %.2f | %.3f | — | — | — | — |\n", rows[0].mib, rows[0].bpw);
            else printf("| base | %.2f | %.3f | %.4f | — | — | — |\n", rows[0].mib, rows[0].bpw, rows[0].ppl);
            if (a.ppl_only)
                printf("| %s | %.2f | %.3f | %.4f | — | — | — |\n", a.label ? a.label : a.format ? a.format : "q4_k_m",
                       rows[1].mib, rows[1].bpw, rows[1].ppl);
            else printf("| %s%s%s | %.2f | %.3f | %.4f | %+.4f | %.5f | %.2f%% |\n", a.label ? a.label : a.format ? a.format : "q4_k_m",
                   !a.label && a.act && strcmp(a.act, "none") ? " A:" : "", !a.label && a.act && strcmp(a.act, "none") ? a.act : "", rows[1].mib,
                   rows[1].bpw, rows[1].ppl, rows[1].dppl, rows[1].kld, rows[1].top1);
        }
    }
    kv_llmint8_summary_free(&i8);
    kv_json_free(recipe);
    return 0;
}
