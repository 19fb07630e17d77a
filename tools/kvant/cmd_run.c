/* cmd_run.c — `kvant run MODEL -p TEXT`: text generation with the reference forward pass (llama2.c run.c's
 * generate loop: batched prefill of the prompt, then one token at a time with the KV cache; temperature and
 * nucleus (top-p) sampling as in run.c's sample / sample_topp, randomness from kv_rng). */
#include "cli.h"
#include "fwd_cli.h"
#include "core/core.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant run MODEL -p TEXT|-f FILE [-n N] [--temp T] [--top-p P] [--seed S] [--ctx N] [-t N] [--json] [--quiet]\n"
    "\n"
    "Generate text from a prompt and stream it to stdout. At the end, prefill and decode speeds go to stderr.\n"
    "  -p, --prompt TEXT  the prompt (BOS is added when the model expects it)\n"
    "  -f, --file FILE    the prompt from a UTF-8 text file (llama-cli's -f)\n"
    "  -m, --model MODEL  MODEL as an option (llama.cpp's spelling)\n"
    "  -n N               tokens to generate (default 128; stops early at EOS or a full context)\n"
    "  --temp T           temperature (default 0.8; 0 = greedy argmax)\n"
    "  --top-p P          nucleus sampling: smallest set of tokens with probability >= P (default 0.9; 1 = off)\n"
    "  --seed S           sampling seed (default 0); the same seed gives the same text\n"
    "  --ctx N            context length (default: the model's, at most 4096)\n"
    "  -t, --threads N    threads (default: all cores)\n"
    "  --act-dot M        q8 (default): q4_0/q8_0/q4_k/q5_k/q6_k weights multiply activations quantized to 8 bits\n"
    "                     per block with integer dot products (llama.cpp's arithmetic); f32: exact activations\n"
    "  --json             print one JSON object at the end instead of streaming: text, ids, prompt_tokens,\n"
    "                     generated_tokens, prefill_tokens_per_s, decode_tokens_per_s\n"
    "  --quiet            no speed line\n"
    "\n"
    "Exit status: 0 on success, 1 on a runtime error, 2 on bad arguments.\n";

typedef struct prob_index { float p; int32_t id; } prob_index;

static int cmp_prob_desc(const void *a, const void *b) {
    const prob_index *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Greedy for temp <= 0; else softmax(logits / temp), truncated to the top-p nucleus, sampled with rng. */
static int32_t sample(const float *logits, int32_t V, double temp, double top_p, kv_rng *rng, prob_index *scratch) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (temp <= 0) return best;
    double sum = 0;
    for (int32_t i = 0; i < V; i++) {
        scratch[i].p = (float)exp((logits[i] - logits[best]) / temp);
        scratch[i].id = i;
        sum += scratch[i].p;
    }
    int32_t n = V;
    double mass = sum;
    if (top_p < 1.0) {
        qsort(scratch, (size_t)V, sizeof *scratch, cmp_prob_desc);
        double c = 0;
        for (n = 0; n < V; n++) {
            c += scratch[n].p;
            if (c >= top_p * sum) { n++; break; }
        }
        if (n > V) n = V;
        mass = c;
    }
    const double r = kv_rng_uniform(rng) * mass;
    double c = 0;
    for (int32_t i = 0; i < n; i++) {
        c += scratch[i].p;
        if (r < c) return scratch[i].id;
    }
    return scratch[n - 1].id;
}

int kv_cmd_run(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) { fputs(k_usage, stdout); return 0; }
    const char *model = NULL, *prompt = NULL, *prompt_file = NULL, *v = NULL;
    long long ntok = 128, seed = 0, threads = 0, ctx = 0;
    double temp = 0.8, top_p = 0.9;
    int json = 0, quiet = 0;
    kv_model_load_opts lo = {.prepack = -1, .act_q8 = 1};
    for (int i = 1; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--prompt", "-p", &v)) {
            if (!v) return kv_cli_usage("run", "--prompt needs a text");
            if (prompt || prompt_file) return kv_cli_usage("run", "give one prompt (-p TEXT or -f FILE)");
            prompt = v;
        } else if (kv_cli_opt(argc, argv, &i, "--file", "-f", &v)) { /* llama-cli's prompt file */
            if (!v) return kv_cli_usage("run", "--file needs a file");
            if (prompt || prompt_file) return kv_cli_usage("run", "give one prompt (-p TEXT or -f FILE)");
            prompt_file = v;
        } else if (kv_cli_opt(argc, argv, &i, "--model", "-m", &v)) {
            if (!v) return kv_cli_usage("run", "--model needs a path");
            if (model) return kv_cli_usage("run", "MODEL given twice ('%s')", v);
            model = v;
        } else if (kv_cli_opt(argc, argv, &i, "--n-predict", "-n", &v)) {
            if (kv_cli_parse_int(v, 0, 1 << 20, &ntok)) return kv_cli_usage("run", "-n needs a number >= 0");
        } else if (kv_cli_opt(argc, argv, &i, "--temp", NULL, &v)) {
            if (kv_cli_parse_double(v, &temp) || !(temp >= 0) || temp > 100) return kv_cli_usage("run", "--temp needs 0..100");
        } else if (kv_cli_opt(argc, argv, &i, "--top-p", NULL, &v)) {
            if (kv_cli_parse_double(v, &top_p) || !(top_p > 0) || top_p > 1) return kv_cli_usage("run", "--top-p needs (0, 1]");
        } else if (kv_cli_opt(argc, argv, &i, "--seed", "-s", &v)) {
            if (kv_cli_parse_int(v, 0, INT64_MAX, &seed)) return kv_cli_usage("run", "--seed needs a number >= 0");
        } else if (kv_cli_opt(argc, argv, &i, "--ctx", "-c", &v)) {
            if (kv_cli_parse_int(v, 1, 1 << 20, &ctx)) return kv_cli_usage("run", "--ctx needs a positive number");
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if (kv_cli_parse_int(v, 1, 256, &threads)) return kv_cli_usage("run", "--threads needs 1..256");
        } else if (kv_cli_opt(argc, argv, &i, "--act-dot", NULL, &v)) {
            if (kv_cli_parse_act_dot(v, &lo.act_q8)) return kv_cli_usage("run", "--act-dot is q8 or f32");
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else if (kv_cli_flag(argv, i, "--quiet", "-q")) {
            quiet = 1;
        } else if (argv[i][0] == '-') {
            return kv_cli_usage("run", "unknown option '%s'", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return kv_cli_usage("run", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return kv_cli_usage("run", "missing MODEL");
    if (!prompt && !prompt_file) return kv_cli_usage("run", "missing -p TEXT (or -f FILE)");
    kv_error err;
    kv_error_clear(&err);
    char *file_text = NULL;
    if (prompt_file) {
        kv_mapped fm;
        if (kv_map_file(prompt_file, &fm, &err) != KV_OK) return kv_cli_fail("run", &err);
        if (fm.size && memchr(fm.data, 0, fm.size)) {
            kv_unmap_file(&fm);
            return kv_cli_usage("run", "%s: the prompt file holds a NUL byte (not text)", prompt_file);
        }
        file_text = malloc(fm.size + 1);
        if (file_text && fm.size) memcpy(file_text, fm.data, fm.size);
        if (file_text) file_text[fm.size] = 0;
        kv_unmap_file(&fm);
        if (!file_text) return kv_cli_usage("run", "out of memory reading %s", prompt_file);
        prompt = file_text;
    }
    if (kv_utf8_invalid_offset(prompt, strlen(prompt)) >= 0) {
        free(file_text);
        return kv_cli_usage("run", "the prompt is not valid UTF-8");
    }

    kv_cli_model cm;
    if (kv_cli_model_open(model, &lo, 1, &cm, &err) != KV_OK) {
        free(file_text);
        return kv_cli_fail("run", &err);
    }
    const kv_hparams *hp = kv_model_get_hparams(cm.m);
    if (ctx == 0) ctx = hp->n_ctx_train > 0 ? KV_MIN(hp->n_ctx_train, 4096) : 2048;
    int rc = 0;
    int32_t *ids = NULL;
    size_t nprompt = 0;
    kv_context *c = NULL;
    kv_pool *pool = NULL;
    float *logits = NULL;
    prob_index *scratch = NULL;
    char *text = NULL;
    const int add_bos = kv_tokenizer_bos(cm.tok) >= 0 && kv_tokenizer_add_bos_default(cm.tok);
    if (kv_tokenize(cm.tok, prompt, strlen(prompt), add_bos, &ids, &nprompt, &err) != KV_OK ||
        kv_context_create(cm.m, (int32_t)ctx, &c, &err) != KV_OK) {
        rc = kv_cli_fail("run", &err);
        goto done;
    }
    if (nprompt == 0) { rc = kv_cli_usage("run", "the prompt gives no tokens"); goto done; }
    if ((long long)nprompt >= ctx) {
        kv_fail(&err, KV_EINVAL, "the prompt has %zu tokens, the context %lld", nprompt, ctx);
        rc = kv_cli_fail("run", &err);
        goto done;
    }
    int32_t *all = realloc(ids, ((size_t)nprompt + (size_t)ntok + 1) * sizeof(int32_t));
    if (!all) { kv_fail(&err, KV_ENOMEM, "out of memory"); rc = kv_cli_fail("run", &err); goto done; }
    ids = all;
    pool = kv_pool_create((int)threads);
    logits = malloc((size_t)hp->n_vocab * sizeof(float));
    scratch = malloc((size_t)hp->n_vocab * sizeof(prob_index));
    if (!logits || !scratch) { kv_fail(&err, KV_ENOMEM, "out of memory"); rc = kv_cli_fail("run", &err); goto done; }
    kv_rng rng;
    kv_rng_seed(&rng, (uint64_t)seed);

    double t0 = kv_now_seconds();
    if (kv_forward(c, ids, (int64_t)nprompt, 0, logits, KV_FORWARD_LAST_ONLY, pool, &err) != KV_OK) {
        rc = kv_cli_fail("run", &err);
        goto done;
    }
    const double t_prefill = kv_now_seconds() - t0;
    size_t n = nprompt, printed = 0;
    if (!json) {
        /* the prompt as the tokenizer gives it back */
        size_t len = 0;
        if (kv_detokenize(cm.tok, ids, n, &text, &len, &err) == KV_OK) { fwrite(text, 1, len, stdout); printed = len; }
        free(text);
        text = NULL;
        fflush(stdout);
    }
    t0 = kv_now_seconds();
    int64_t generated = 0;
    while (generated < ntok && (long long)n < ctx) {
        const int32_t next = sample(logits, hp->n_vocab, temp, top_p, &rng, scratch);
        if (next == kv_tokenizer_eos(cm.tok) && next >= 0) break;
        ids[n++] = next;
        generated++;
        if (!json) {
            size_t len = 0;
            if (kv_detokenize(cm.tok, ids, n, &text, &len, &err) == KV_OK && len > printed) {
                fwrite(text + printed, 1, len - printed, stdout);
                fflush(stdout);
                printed = len;
            }
            free(text);
            text = NULL;
        }
        if ((long long)n >= ctx || generated >= ntok) break;
        if (kv_forward(c, &ids[n - 1], 1, (int64_t)n - 1, logits, KV_FORWARD_LAST_ONLY, pool, &err) != KV_OK) {
            rc = kv_cli_fail("run", &err);
            goto done;
        }
    }
    const double t_decode = kv_now_seconds() - t0;
    const double pre_tps = t_prefill > 0 ? (double)nprompt / t_prefill : 0, dec_tps = t_decode > 0 ? (double)generated / t_decode : 0;
    if (json) {
        size_t len = 0;
        if (kv_detokenize(cm.tok, ids + nprompt, n - nprompt, &text, &len, &err) != KV_OK) { rc = kv_cli_fail("run", &err); goto done; }
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "text"); kv_jw_str(&w, text);
        kv_jw_key(&w, "ids");
        kv_jw_arr_begin(&w);
        for (size_t i = nprompt; i < n; i++) kv_jw_int(&w, ids[i]);
        kv_jw_arr_end(&w);
        kv_jw_key(&w, "prompt_tokens"); kv_jw_int(&w, (int64_t)nprompt);
        kv_jw_key(&w, "generated_tokens"); kv_jw_int(&w, generated);
        kv_jw_key(&w, "prefill_tokens_per_s"); kv_jw_num(&w, pre_tps);
        kv_jw_key(&w, "decode_tokens_per_s"); kv_jw_num(&w, dec_tps);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else {
        fputc('\n', stdout);
        if (!quiet)
            fprintf(stderr, "prefill: %zu tokens, %.1f tokens/s; decode: %lld tokens, %.1f tokens/s\n", nprompt, pre_tps,
                    (long long)generated, dec_tps);
    }
done:
    free(file_text);
    free(text);
    free(scratch);
    free(logits);
    kv_pool_destroy(pool);
    kv_context_free(c);
    free(ids);
    kv_cli_model_close(&cm);
    return rc;
}
