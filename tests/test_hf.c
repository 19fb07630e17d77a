/* test_hf.c — Hugging Face output (src/io/hf_write.c) and its reader (src/io/hf_quant_read.c): every layout
 * read back by kvant gives the weights of the same format's GGUF; refusals (rotations, mixed formats, a non-empty
 * directory) leave nothing behind; and, when python3 has torch + transformers (+ optimum/gptqmodel for GPTQ,
 * compressed-tensors for the others), transformers loads kvant's W4A16 GPTQ-layout and W8A8 compressed-tensors
 * directories on CPU with logits within 1e-2 of kvant's evaluation of the same directory and the same argmax
 * (scripts/crosscheck_hf.py). */
#include "test.h"
#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define PROXY "models/proxy-27m"
#define N_IDS 64

/* kvant's logits [N_IDS × vocab] of a model path; NULL on failure (reported). */
/* RoPE frequencies as transformers computes them for this bf16 model, whatever the file (a GGUF source would get
 * llama.cpp's exact ones) */
static const kv_model_load_opts k_load = {.rope_freq = KV_ROPE_FREQ_BF16};

static float *logits_of_opts(kv_test_ctx *T, const char *path, const int32_t *ids, int64_t *vocab,
                             const kv_model_load_opts *lo) {
    return kv_test_model_logits(T, path, ids, N_IDS, vocab, lo);
}

static float *logits_of(kv_test_ctx *T, const char *path, const int32_t *ids, int64_t *vocab) {
    return logits_of_opts(T, path, ids, vocab, &k_load);
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static kv_status quantize_to(const char *out, const char *format, const char *act, kv_out_format of,
                             const char *const *ov, int n_ov, kv_error *err) {
    char src[512];
    kv_quantize_opts o = {0};
    o.format = format;
    o.act = act;
    o.out_format = of;
    o.overrides = ov;
    o.n_overrides = n_ov;
    o.quiet = 1;
    o.no_imatrix = 1;
    return kv_quantize_model(kv_test_shared(src, sizeof src, PROXY), out, &o, NULL, err);
}

/* The HF directory of a layout and the GGUF of the same format (embedding and head bf16, as HF output keeps
 * them) give logits within tol; *hf_logits (optional) gets the directory's. */
static void hf_matches_gguf(kv_test_ctx *T, const char *name, const char *format, const char *act, kv_out_format of,
                            double tol, const int32_t *ids) {
    char dir[512], gguf[512];
    snprintf(dir, sizeof dir, "%s/%s", kv_test_tmpdir(), name);
    snprintf(gguf, sizeof gguf, "%s/%s.gguf", kv_test_tmpdir(), name);
    static const char *const ov[] = {"^token_embd\\.weight$=bf16", "^output\\.weight$=bf16"};
    kv_error err = {0};
    REQUIRE_OK(quantize_to(dir, format, act, of, NULL, 0, &err), &err);
    REQUIRE_OK(quantize_to(gguf, format, NULL, KV_OUT_GGUF, ov, 2, &err), &err);
    kv_model_file *mf = NULL;
    REQUIRE_OK(kv_model_open(dir, &mf, &err), &err);
    CHECK(kv_model_format(mf) == KV_FILE_HF);
    CHECK_MSG(kv_model_quant_method(mf)[0], "%s: no quant method read back", name);
    const kv_tensor *q = kv_model_find(mf, "blk.0.attn_q.weight");
    CHECK(q && q->shape[0] == 512 && q->shape[1] == 512);
    kv_model_close(mf);
    int64_t V = 0;
    float *a = logits_of(T, dir, ids, &V), *b = NULL;
    if (a && act && strcmp(act, "none")) {
        /* activation quantization: the GGUF evaluated the same way */
        kv_model_file *gf = NULL;
        kv_model *m = NULL;
        kv_context *c = NULL;
        kv_format af;
        REQUIRE_OK(kv_model_open(gguf, &gf, &err), &err);
        REQUIRE_OK(kv_model_load(gf, &k_load, &m, &err), &err);
        REQUIRE_OK(kv_format_get(!strcmp(act, "int8") ? "int8_g0_sym_f32_ct" : "fp8_e4m3", &af, &err), &err);
        REQUIRE_OK(kv_model_set_act_quant(m, &af, 0, &err), &err);
        REQUIRE_OK(kv_context_create(m, N_IDS, &c, &err), &err);
        b = malloc((size_t)(N_IDS * V) * sizeof(float));
        CHECK_OK(kv_forward(c, ids, N_IDS, 0, b, 0, NULL, &err), &err);
        kv_context_free(c);
        kv_model_free(m);
        kv_model_close(gf);
    } else if (a) b = logits_of(T, gguf, ids, &V);
    if (a && b) {
        double d = max_abs_diff(a, b, N_IDS * V);
        CHECK_MSG(d <= tol, "%s: HF directory vs GGUF of %s: max abs logit difference %g > %g", name, format, d, tol);
    }
    free(a);
    free(b);
}

KV_TEST(hf_layouts_read_back_as_the_gguf_weights) {
    char p[512];
    if (!kv_test_exists(kv_test_shared(p, sizeof p, PROXY "/config.json"))) SKIP("proxy-27m absent");
    int32_t ids[N_IDS];
    REQUIRE(kv_test_proxy_ref_ids(ids, N_IDS) == N_IDS);
    /* the same bytes: exact */
    hf_matches_gguf(T, "gptq_w4", "int4_g128_sym", NULL, KV_OUT_HF_GPTQ, 1e-5, ids);
    hf_matches_gguf(T, "ct_w4", "int4_g128_sym", NULL, KV_OUT_HF_CT, 1e-5, ids);
    hf_matches_gguf(T, "ct_w8a8", "int8_g0_sym", "int8", KV_OUT_HF_CT, 1e-5, ids);
    hf_matches_gguf(T, "ct_fp8", "fp8_e4m3", "fp8", KV_OUT_HF_CT, 1e-5, ids);
    hf_matches_gguf(T, "ct_nvfp4", "nvfp4_ts", NULL, KV_OUT_HF_CT, 1e-5, ids);
    hf_matches_gguf(T, "ct_w8", "int8_g0_sym", NULL, KV_OUT_HF_CT, 1e-5, ids);
    /* integer zero points re-expressed as fp32 min = -d*z (the GGUF stores fp16(-d*z)): close */
    hf_matches_gguf(T, "gptq_w4_asym", "int4_g128_asym_zp", NULL, KV_OUT_HF_GPTQ, 2e-2, ids);
    hf_matches_gguf(T, "ct_w4_asym", "int4_g64_asym_zp", NULL, KV_OUT_HF_CT, 2e-2, ids);
}

KV_TEST(hf_output_is_sharded_with_an_index) {
    char src[512], dir[512], path[700];
    if (!kv_test_exists(kv_test_shared(src, sizeof src, PROXY "/config.json"))) SKIP("proxy-27m absent");
    kv_test_shared(src, sizeof src, PROXY);
    snprintf(dir, sizeof dir, "%s/sharded/", kv_test_tmpdir());
    kv_quantize_opts o = {0};
    o.format = "int4_g128_sym";
    o.out_format = KV_OUT_HF_CT;
    o.max_shard_bytes = 4u << 20;
    o.quiet = 1;
    o.no_imatrix = 1;
    kv_quantize_report rep;
    kv_error err = {0};
    REQUIRE_OK(kv_quantize_model(src, dir, &o, &rep, &err), &err);
    CHECK(rep.hf.n_shards > 2);
    CHECK_STR(rep.hf.format, "pack-quantized");
    snprintf(path, sizeof path, "%smodel.safetensors.index.json", dir);
    CHECK(kv_test_exists(path));
    snprintf(path, sizeof path, "%smodel-00001-of-%05d.safetensors", dir, rep.hf.n_shards);
    CHECK(kv_test_exists(path));
    snprintf(path, sizeof path, "%stokenizer.model", dir);
    CHECK(kv_test_exists(path));
    snprintf(path, sizeof path, "%sgeneration_config.json", dir);
    CHECK(kv_test_exists(path));
    kv_model_file *mf = NULL;
    CHECK_OK(kv_model_open(dir, &mf, &err), &err);
    if (mf) CHECK(kv_model_find(mf, "blk.5.ffn_down.weight") != NULL);
    kv_model_close(mf);
}

KV_TEST(hf_output_refusals_leave_nothing) {
    char src[512], dir[512];
    if (!kv_test_exists(kv_test_shared(src, sizeof src, PROXY "/config.json"))) SKIP("proxy-27m absent");
    kv_test_shared(src, sizeof src, PROXY);
    snprintf(dir, sizeof dir, "%s/refused", kv_test_tmpdir());
    kv_error err = {0};
    kv_quantize_opts o = {0};
    o.format = "int4_g128_sym";
    o.out_format = KV_OUT_HF_GPTQ;
    o.quiet = 1;
    o.no_imatrix = 1;
    o.transforms = "rht";
    CHECK_EQ_INT(kv_quantize_model(src, dir, &o, NULL, &err), KV_EUNSUPPORTED);
    CHECK(strstr(err.message, "rotation") != NULL);
    o.transforms = NULL;
    o.format = "q4_k_m"; /* a mix: q4_k is no HF layout */
    kv_error_clear(&err);
    CHECK(kv_quantize_model(src, dir, &o, NULL, &err) != KV_OK);
    o.format = "int4_g128_asym"; /* no integer zero points */
    kv_error_clear(&err);
    CHECK_EQ_INT(kv_quantize_model(src, dir, &o, NULL, &err), KV_EUNSUPPORTED);
    CHECK(strstr(err.message, "_zp") != NULL);
    o.format = "int8_g0_sym";
    o.act = "int8"; /* GPTQ is weight-only */
    kv_error_clear(&err);
    CHECK_EQ_INT(kv_quantize_model(src, dir, &o, NULL, &err), KV_EUNSUPPORTED);
    struct stat sb;
    CHECK(stat(dir, &sb) != 0);
    /* a non-empty directory is not overwritten */
    mkdir(dir, 0755);
    char f[600];
    snprintf(f, sizeof f, "%s/keep.txt", dir);
    FILE *fp = fopen(f, "w");
    if (fp) fclose(fp);
    o.act = NULL;
    o.format = "int4_g128_sym";
    kv_error_clear(&err);
    CHECK_EQ_INT(kv_quantize_model(src, dir, &o, NULL, &err), KV_EINVAL);
    CHECK(kv_test_exists(f));
}

/* transformers on CPU agrees with kvant's evaluation of the same directory. */
static void crosscheck(kv_test_ctx *T, const char *name, const char *format, const char *act, kv_out_format of,
                       const char *imports) {
    char cmd[2400], dir[512], idf[512], lgf[512], log[512];
    snprintf(cmd, sizeof cmd, "python3 -c 'import %s' >/dev/null 2>&1", imports);
    if (system(cmd) != 0) SKIP("python3 lacks %s", imports);
    char p[512];
    if (!kv_test_exists(kv_test_shared(p, sizeof p, PROXY "/config.json"))) SKIP("proxy-27m absent");
    int32_t ids[N_IDS];
    REQUIRE(kv_test_proxy_ref_ids(ids, N_IDS) == N_IDS);
    snprintf(dir, sizeof dir, "%s/x_%s", kv_test_tmpdir(), name);
    kv_error err = {0};
    REQUIRE_OK(quantize_to(dir, format, act, of, NULL, 0, &err), &err);
    int64_t V = 0;
    /* transformers in float32 computes the RoPE inverse frequencies in float32 */
    const kv_model_load_opts exact = {.rope_freq = KV_ROPE_FREQ_EXACT};
    float *lg = logits_of_opts(T, dir, ids, &V, &exact);
    REQUIRE(lg);
    snprintf(idf, sizeof idf, "%s/x_%s.ids", kv_test_tmpdir(), name);
    snprintf(lgf, sizeof lgf, "%s/x_%s.logits", kv_test_tmpdir(), name);
    snprintf(log, sizeof log, "%s/x_%s.log", kv_test_tmpdir(), name);
    FILE *f = fopen(idf, "wb");
    REQUIRE(f);
    fwrite(ids, sizeof ids[0], N_IDS, f);
    fclose(f);
    f = fopen(lgf, "wb");
    REQUIRE(f);
    fwrite(lg, sizeof(float), (size_t)(N_IDS * V), f);
    fclose(f);
    free(lg);
    char noact[560] = "";
    if (act) { /* the weights alone: the same directory with kvant's activation quantizer off */
        kv_model_file *mf = NULL;
        kv_model *m = NULL;
        kv_context *c = NULL;
        REQUIRE_OK(kv_model_open(dir, &mf, &err), &err);
        REQUIRE_OK(kv_model_load(mf, &exact, &m, &err), &err);
        REQUIRE_OK(kv_model_set_act_quant(m, NULL, 0, &err), &err);
        REQUIRE_OK(kv_context_create(m, N_IDS, &c, &err), &err);
        float *l2 = malloc((size_t)(N_IDS * V) * sizeof(float));
        REQUIRE(l2);
        CHECK_OK(kv_forward(c, ids, N_IDS, 0, l2, 0, NULL, &err), &err);
        snprintf(noact, sizeof noact, "%s/x_%s.noact", kv_test_tmpdir(), name);
        f = fopen(noact, "wb");
        if (f) {
            fwrite(l2, sizeof(float), (size_t)(N_IDS * V), f);
            fclose(f);
        }
        free(l2);
        kv_context_free(c);
        kv_model_free(m);
        kv_model_close(mf);
    }
    snprintf(cmd, sizeof cmd, "python3 scripts/crosscheck_hf.py %s %s %s %s > %s 2>&1", dir, idf, lgf, noact, log);
    int rc = system(cmd);
    size_t n = 0;
    char *out = kv_test_read_file(log, &n);
    for (const char *line = out ? strstr(out, "max abs logit diff") : NULL; line; line = strstr(line + 1, "max abs logit diff")) {
        const char *b = line;
        while (b > out && b[-1] != '\n') b--;
        const char *e = strchr(line, '\n');
        fprintf(stderr, "    %.*s\n", e ? (int)(e - b) : (int)strlen(b), b);
        if (!e) break;
        line = e;
    }
    if (rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
        free(out);
        SKIP("a Python package is missing");
    }
    CHECK_MSG(rc == 0, "crosscheck_hf.py %s failed: %s", name, out ? out + (n > 1500 ? n - 1500 : 0) : "(no log)");
    free(out);
}

KV_TEST(hf_gptq_w4a16_loads_in_transformers) {
    crosscheck(T, "gptq_w4a16", "int4_g128_sym", NULL, KV_OUT_HF_GPTQ, "torch, transformers, optimum, gptqmodel");
}

KV_TEST(hf_ct_w8a8_loads_in_transformers) {
    crosscheck(T, "ct_w8a8", "int8_g0_sym", "int8", KV_OUT_HF_CT, "torch, transformers, compressed_tensors");
}

KV_TEST(hf_ct_w4a16_loads_in_transformers) {
    crosscheck(T, "ct_w4a16", "int4_g128_sym", NULL, KV_OUT_HF_CT, "torch, transformers, compressed_tensors");
}

KV_TEST(hf_ct_fp8_dynamic_loads_in_transformers) {
    crosscheck(T, "ct_fp8", "fp8_e4m3", "fp8", KV_OUT_HF_CT, "torch, transformers, compressed_tensors");
}
