/* test_eval.c — perplexity and KL-divergence (src/eval) and `kvant eval`: the Hugging Face-convention PPL of
 * proxy-27m on WikiText-2 (ref/ppl_ref.json), llama-perplexity's figure for the bf16 GGUF (proxy-27m/README),
 * KLD of a model against itself, a uniform model's PPL = vocab size, logits-file checks and bad input. */
#include "test.h"
#include <math.h>

#define PROXY "models/proxy-27m"
#define GGUF "models/proxy-27m-gguf/proxy-27m-bf16.gguf"
#define STORIES "models/stories260K/stories260K.bin"
#define WIKI "data/wikitext2-test.txt"

typedef struct loaded {
    kv_model_file *mf;
    kv_model *m;
    kv_tokenizer *tok;
} loaded;

static int load(kv_test_ctx *T, const char *rel, int want_tok, loaded *L) {
    char path[512];
    kv_error err = {0};
    memset(L, 0, sizeof *L);
    if (!kv_test_exists(kv_test_shared(path, sizeof path, rel))) return 0;
    kv_status st = kv_model_open(path, &L->mf, &err);
    if (st == KV_OK) st = kv_model_load(L->mf, NULL, &L->m, &err);
    if (st == KV_OK && want_tok) st = kv_tokenizer_load_for_model(L->mf, &L->tok, &err);
    if (st != KV_OK) {
        char b[1200];
        kv_test_fail(T, __FILE__, __LINE__, "load %s: %s", rel, kv_error_format(&err, b, sizeof b));
        return 0;
    }
    return 1;
}

static void unload(loaded *L) {
    kv_tokenizer_free(L->tok);
    kv_model_free(L->m);
    kv_model_close(L->mf);
}

/* [BOS] + encode(whole text) */
static int32_t *tokenize_file(kv_test_ctx *T, const loaded *L, const char *rel, size_t *n) {
    char path[512];
    size_t len = 0;
    char *text = kv_test_read_file(kv_test_shared(path, sizeof path, rel), &len);
    if (!text) return NULL;
    int32_t *ids = NULL;
    kv_error err = {0};
    if (kv_tokenize(L->tok, text, len, 1, &ids, n, &err) != KV_OK) {
        char b[1200];
        kv_test_fail(T, __FILE__, __LINE__, "tokenize: %s", kv_error_format(&err, b, sizeof b));
    }
    free(text);
    return ids;
}

static int sanitized(void) { return getenv("KVANT_SANITIZED") != NULL; }

KV_TEST(eval_hf_ppl_wikitext_first40_matches_reference) {
    loaded L;
    if (!load(T, PROXY, 1, &L)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    size_t n = 0;
    int32_t *ids = tokenize_file(T, &L, WIKI, &n);
    REQUIRE(ids);
    CHECK_EQ_INT(n, 409438); /* ppl_ref.json wikitext2_test_tokens */
    const int chunks = sanitized() ? 2 : 40;
    kv_eval_opts o = {.ctx = 512, .chunks = chunks, .style = KV_PPL_HF, .bos_id = -1};
    kv_eval_result r;
    kv_error err = {0};
    kv_pool *pool = kv_pool_create(2);
    REQUIRE_OK(kv_eval_ppl(L.m, ids, (int64_t)n, &o, pool, &r, &err), &err);
    CHECK_EQ_INT(r.windows, chunks);
    CHECK_EQ_INT(r.tokens, chunks * 511);
    CHECK_EQ_INT(r.ctx, 512);
    CHECK(r.style == KV_PPL_HF);
    CHECK_NEAR(r.ppl, exp(r.nll), 1e-9 * r.ppl);
    CHECK(r.ppl_stderr > 0 && r.ppl_stderr < r.ppl);
    CHECK(r.tokens_per_s > 0);
    if (!sanitized()) CHECK_NEAR(r.ppl, 140.12270279971037, 0.002 * 140.12270279971037);
    else CHECK(r.ppl > 20 && r.ppl < 1000);
    kv_pool_destroy(pool);
    free(ids);
    unload(&L);
}

KV_TEST(eval_llamacpp_ppl_gguf_first40_matches_llama_perplexity) {
    loaded L;
    if (!load(T, GGUF, 1, &L)) { if (!T->failures) SKIP("proxy-27m gguf absent"); return; }
    size_t n = 0;
    int32_t *ids = tokenize_file(T, &L, WIKI, &n);
    REQUIRE(ids);
    const int chunks = sanitized() ? 2 : 40;
    kv_eval_opts o = {.ctx = 512, .chunks = chunks, .style = KV_PPL_LLAMACPP, .bos_id = -1};
    kv_eval_result r;
    kv_error err = {0};
    kv_pool *pool = kv_pool_create(2);
    REQUIRE_OK(kv_eval_ppl(L.m, ids, (int64_t)n, &o, pool, &r, &err), &err);
    CHECK_EQ_INT(r.windows, chunks);
    CHECK_EQ_INT(r.tokens, chunks * 255); /* n_ctx - 1 - n_ctx/2 per chunk */
    if (!sanitized()) {
        CHECK_NEAR(r.ppl, 110.4067, 0.003 * 110.4067);  /* llama.cpp: PPL 110.4067 +/- 4.02 */
        CHECK_NEAR(r.ppl_stderr, 4.02, 0.05);
    } else {
        CHECK(r.ppl > 20 && r.ppl < 1000);
    }
    kv_pool_destroy(pool);
    free(ids);
    unload(&L);
}

KV_TEST(eval_kld_of_model_against_itself_is_zero) {
    loaded L;
    if (!load(T, PROXY, 0, &L)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    const int64_t n = 2 * 256 + 5;
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + 13) % 8192);
    ids[0] = 1;
    kv_eval_opts o = {.ctx = 256, .style = KV_PPL_HF, .bos_id = -1};
    kv_pool *pool = kv_pool_create(2);
    kv_logprobs *base = NULL;
    kv_eval_result rb, rk;
    kv_error err = {0};
    REQUIRE_OK(kv_eval_base_logprobs(L.m, ids, n, &o, pool, &base, &rb, &err), &err);
    REQUIRE_OK(kv_eval_kld(L.m, base, pool, &rk, &err), &err);
    CHECK(rk.has_kld);
    CHECK_EQ_INT(rk.kld.n, 2 * 255);
    CHECK_NEAR(rk.kld.mean, 0.0, 1e-6);
    CHECK(fabs(rk.kld.max) < 2e-4 && fabs(rk.kld.min) < 2e-4);
    CHECK_NEAR(rk.kld.top1_agree, 100.0, 1e-12);
    CHECK_NEAR(rk.kld.ppl_ratio, 1.0, 1e-6);
    CHECK_NEAR(rk.kld.ppl_base, rb.ppl, 1e-6 * rb.ppl);
    CHECK(rk.kld.dp_rms < 1e-6);
    CHECK_NEAR(rk.ppl, rb.ppl, 1e-9 * rb.ppl);
    /* the same through a logits file: save, reload, compare */
    char path[600];
    snprintf(path, sizeof path, "%s/base.kvlp", kv_test_tmpdir());
    REQUIRE_OK(kv_logprobs_save(base, path, &err), &err);
    kv_eval_opts o2 = o;
    o2.kld_base = path;
    kv_eval_result rf;
    REQUIRE_OK(kv_eval_ppl(L.m, ids, n, &o2, pool, &rf, &err), &err);
    CHECK(rf.has_kld);
    CHECK(rf.kld.mean == rk.kld.mean && rf.kld.max == rk.kld.max);
    /* a different model (q8_0 head) gives a positive divergence */
    const kv_weight *h = kv_model_weight(L.m, kv_model_get_hparams(L.m)->n_layer, KV_LINEAR_HEAD);
    kv_format q4;
    REQUIRE_OK(kv_format_get("q4_0", &q4, &err), &err);
    float *rows = malloc((size_t)h->rows * (size_t)h->cols * sizeof(float));
    const size_t rbytes = kv_format_row_bytes(&h->fmt, h->cols);
    for (int64_t r = 0; r < h->rows; r++)
        h->fmt.dequantize(&h->fmt, (const uint8_t *)h->data + r * rbytes, rows + r * h->cols, h->cols);
    void *packed = malloc(kv_format_row_bytes(&q4, h->cols) * (size_t)h->rows);
    REQUIRE_OK(q4.quantize(&q4, rows, packed, h->rows, h->cols, NULL, &err), &err);
    REQUIRE_OK(kv_model_set_weight(L.m, "output.weight", &q4, packed, 1, &err), &err);
    kv_eval_result rq;
    REQUIRE_OK(kv_eval_kld(L.m, base, pool, &rq, &err), &err);
    CHECK(rq.kld.mean > 1e-4);
    CHECK(rq.kld.max >= rq.kld.p99 && rq.kld.p99 >= rq.kld.p90 && rq.kld.p90 >= rq.kld.median);
    CHECK(rq.kld.top1_agree > 50 && rq.kld.top1_agree < 100);
    CHECK(rq.kld.dp_rms > 0);
    CHECK_NEAR(rq.kld.ppl_ratio, rq.ppl / rb.ppl, 1e-6);
    free(rows);
    kv_logprobs_free(base);
    kv_pool_destroy(pool);
    free(ids);
    unload(&L);
}

KV_TEST(eval_uniform_model_ppl_equals_vocab) {
    loaded L;
    if (!load(T, STORIES, 0, &L)) { if (!T->failures) SKIP("stories260K absent"); return; }
    const kv_hparams *hp = kv_model_get_hparams(L.m);
    float *zeros = calloc((size_t)hp->n_vocab * (size_t)hp->n_embd, sizeof(float));
    kv_format f32;
    kv_error err = {0};
    REQUIRE_OK(kv_format_get("f32", &f32, &err), &err);
    REQUIRE_OK(kv_model_set_weight(L.m, "output.weight", &f32, zeros, 1, &err), &err);
    int32_t ids[300];
    for (int i = 0; i < 300; i++) ids[i] = (int32_t)((i * 37) % hp->n_vocab);
    for (int style = 0; style < 2; style++) {
        kv_eval_opts o = {.ctx = 64, .style = (kv_ppl_style)style, .bos_id = -1};
        kv_eval_result r;
        REQUIRE_OK(kv_eval_ppl(L.m, ids, 300, &o, NULL, &r, &err), &err);
        CHECK_NEAR(r.ppl, (double)hp->n_vocab, 1e-6 * hp->n_vocab);
        CHECK_EQ_INT(r.windows, 4);
        CHECK_EQ_INT(r.tokens, style ? 4 * 31 : 4 * 63);
    }
    unload(&L);
}

KV_TEST(eval_bad_input_is_refused_clearly) {
    loaded L;
    if (!load(T, STORIES, 0, &L)) { if (!T->failures) SKIP("stories260K absent"); return; }
    kv_error err = {0};
    kv_eval_result r;
    int32_t ids[200];
    for (int i = 0; i < 200; i++) ids[i] = (int32_t)((i * 11) % 512);
    kv_eval_opts o = {.ctx = 64, .style = KV_PPL_HF, .bos_id = -1};
    CHECK(kv_eval_ppl(L.m, ids, 0, &o, NULL, &r, &err) == KV_ERANGE);
    CHECK(strstr(err.message, "empty") != NULL);
    CHECK(kv_eval_ppl(L.m, ids, 50, &o, NULL, &r, &err) == KV_ERANGE);
    CHECK(strstr(err.message, "shorter than one window") != NULL);
    o.style = KV_PPL_LLAMACPP;
    CHECK(kv_eval_ppl(L.m, ids, 100, &o, NULL, &r, &err) == KV_ERANGE);
    o.style = KV_PPL_HF;
    o.ctx = 1024;
    CHECK(kv_eval_ppl(L.m, ids, 200, &o, NULL, &r, &err) == KV_EINVAL);
    CHECK(strstr(err.message, "maximum") != NULL);
    o.ctx = 64;
    ids[70] = 9999;
    CHECK(kv_eval_ppl(L.m, ids, 200, &o, NULL, &r, &err) == KV_ERANGE);
    ids[70] = 3;
    /* a logits file of this model on other tokens, and files that are not logits files */
    char path[600], junk[600];
    snprintf(path, sizeof path, "%s/stories.kvlp", kv_test_tmpdir());
    o.save_logits = path;
    REQUIRE_OK(kv_eval_ppl(L.m, ids, 200, &o, NULL, &r, &err), &err);
    o.save_logits = NULL;
    o.kld_base = path;
    ids[100] = 4;
    CHECK(kv_eval_ppl(L.m, ids, 200, &o, NULL, &r, &err) == KV_EFORMAT);
    CHECK(strstr(err.message, "other tokens") != NULL);
    CHECK_STR(err.file, path);
    ids[100] = (100 * 11) % 512;
    o.chunks = 2;
    CHECK(kv_eval_ppl(L.m, ids, 200, &o, NULL, &r, &err) == KV_EFORMAT);
    o.chunks = 0;
    CHECK_OK(kv_eval_ppl(L.m, ids, 200, &o, NULL, &r, &err), &err);
    size_t sz = 0;
    uint8_t *bytes = kv_test_read_file(path, &sz);
    REQUIRE(bytes && sz > 100);
    snprintf(junk, sizeof junk, "%s/trunc.kvlp", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(junk, bytes, sz - 7) == 0);
    o.kld_base = junk;
    CHECK(kv_eval_ppl(L.m, ids, 200, &o, NULL, &r, &err) == KV_EFORMAT);
    CHECK(strstr(err.message, "truncated") != NULL);
    bytes[0] = 'X';
    REQUIRE(kv_test_write_file(junk, bytes, sz) == 0);
    CHECK(kv_eval_ppl(L.m, ids, 200, &o, NULL, &r, &err) == KV_EFORMAT);
    CHECK(strstr(err.message, "magic") != NULL);
    free(bytes);
    /* a logits file of a model with another vocabulary */
    loaded P;
    if (load(T, PROXY, 0, &P)) {
        kv_logprobs *lp = NULL;
        kv_eval_opts op = {.ctx = 64, .style = KV_PPL_HF, .bos_id = -1};
        REQUIRE_OK(kv_eval_base_logprobs(P.m, ids, 200, &op, NULL, &lp, NULL, &err), &err);
        CHECK(kv_eval_kld(L.m, lp, NULL, &r, &err) == KV_EFORMAT);
        CHECK(strstr(err.message, "vocabulary") != NULL);
        kv_logprobs_free(lp);
        unload(&P);
    }
    unload(&L);
}

KV_TEST(eval_cli_json_help_and_errors) {
    char path[512], model[512], tmp[700], args[2400];
    char *out = NULL;
    kv_test_shared(model, sizeof model, PROXY);
    if (!kv_test_exists(model)) SKIP("proxy-27m absent");
    CHECK_EQ_INT(kv_test_run_cli("eval --help", &out), 0);
    CHECK(strstr(out, "--style") != NULL);
    free(out);
    CHECK_EQ_INT(kv_test_run_cli("eval", &out), 2);
    free(out);
    snprintf(args, sizeof args, "eval %s --text %s --style nope", model, kv_test_shared(path, sizeof path, WIKI));
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 2);
    free(out);
    snprintf(args, sizeof args, "eval %s --text %s --ctx 64 --chunks 2 --json -t 2", model, path);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    static const char *keys[] = {"\"ppl\"", "\"ppl_stderr\"", "\"nll\"", "\"tokens\"", "\"windows\"", "\"ctx\"",
                                 "\"style\"", "\"tokens_per_s\""};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) CHECK_MSG(strstr(out, keys[i]), "missing %s", keys[i]);
    CHECK(strstr(out, "\"tokens\": 126") != NULL);
    free(out);
    snprintf(args, sizeof args, "eval %s --text %s --ctx 4096", model, path);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 2);
    CHECK(strstr(out, "maximum") != NULL);
    free(out);
    /* empty text, non-UTF-8 text, text shorter than a window, missing model, a logits file of junk */
    snprintf(tmp, sizeof tmp, "%s/empty.txt", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(tmp, "", 0) == 0);
    snprintf(args, sizeof args, "eval %s --text %s", model, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 1);
    CHECK(strstr(out, "empty") != NULL);
    free(out);
    snprintf(tmp, sizeof tmp, "%s/latin1.txt", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(tmp, "caf\xe9 au lait", 12) == 0);
    snprintf(args, sizeof args, "eval %s --text %s", model, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 1);
    CHECK(strstr(out, "UTF-8") != NULL && strstr(out, "offset 3") != NULL);
    free(out);
    snprintf(tmp, sizeof tmp, "%s/short.txt", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(tmp, "Hello world.", 12) == 0);
    snprintf(args, sizeof args, "eval %s --text %s", model, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 1);
    CHECK(strstr(out, "shorter than one window") != NULL);
    free(out);
    snprintf(args, sizeof args, "eval %s/nonexistent --text %s", kv_test_tmpdir(), path);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 1);
    free(out);
    snprintf(tmp, sizeof tmp, "%s/junk.kvlp", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(tmp, "not a logits file at all, just text", 35) == 0);
    snprintf(args, sizeof args, "eval %s --text %s --ctx 64 --chunks 1 --kld %s", model, path, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 1);
    CHECK(strstr(out, "logits file") != NULL);
    free(out);
}
