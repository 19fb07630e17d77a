/* test_fuzz_findings.c — one regression test per finding of the fuzz targets (fuzz/, docs/fuzzing.md); each
 * names the target that found it. The reproducers themselves are in fuzz/regress/TARGET/, replayed by
 * `make test-fuzz`. */
#include "test.h"
#include "io/model_file.h"
#include "eval/eval.h"

/* An imatrix GGUF with one entry: in_sum2 = sums (n values), counts = count (one matrix). */
static int write_imatrix_gguf(const char *path, const float *sums, int64_t n, float count) {
    kv_error err;
    kv_gguf_writer *w = NULL;
    kv_status st = kv_gguf_writer_create(&w, &err);
    const int64_t shape_s[1] = {n}, shape_c[1] = {1};
    if (!st) st = kv_gguf_writer_add_str(w, "general.type", "imatrix", &err);
    if (!st) st = kv_gguf_writer_add_u32(w, "imatrix.chunk_count", 1, &err);
    if (!st) st = kv_gguf_writer_add_tensor(w, "blk.0.attn_q.weight.in_sum2", 1, shape_s, KV_TYPE_F32, sums, &err);
    if (!st) st = kv_gguf_writer_add_tensor(w, "blk.0.attn_q.weight.counts", 1, shape_c, KV_TYPE_F32, &count, &err);
    if (!st) st = kv_gguf_writer_write(w, path, NULL, &err);
    kv_gguf_writer_free(w);
    return st == KV_OK;
}

/* fuzz_imatrix: a GGUF imatrix with a NaN sum, a negative sum or a negative/NaN count loaded, and its means went
 * to the quantizers as importance weights. */
KV_TEST(fuzz_imatrix_gguf_refuses_nonfinite_or_negative_means) {
    char path[1024];
    snprintf(path, sizeof path, "%s/im.gguf", kv_test_tmpdir());
    const float good[4] = {1, 2, 3, 4};
    kv_imatrix *im = NULL;
    kv_error err;
    REQUIRE(write_imatrix_gguf(path, good, 4, 2.0f));
    REQUIRE_OK(kv_imatrix_load(path, &im, &err), &err);
    int64_t n = 0;
    const float *v = kv_imatrix_find(im, "blk.0.attn_q.weight", &n);
    REQUIRE(v && n == 4);
    CHECK_NEAR(v[3], 2.0, 0);
    kv_imatrix_free(im);
    const float bad_sums[3][4] = {{1, NAN, 3, 4}, {1, 2, -3, 4}, {1, 2, 3, INFINITY}};
    for (int k = 0; k < 3; k++) {
        REQUIRE(write_imatrix_gguf(path, bad_sums[k], 4, 2.0f));
        im = NULL;
        CHECK(kv_imatrix_load(path, &im, &err) == KV_EFORMAT && !im);
        CHECK(strstr(err.message, "sum") && !strcmp(err.tensor, "blk.0.attn_q.weight"));
    }
    const float bad_counts[2] = {-1.0f, NAN};
    for (int k = 0; k < 2; k++) {
        REQUIRE(write_imatrix_gguf(path, good, 4, bad_counts[k]));
        im = NULL;
        CHECK(kv_imatrix_load(path, &im, &err) == KV_EFORMAT && !im);
        CHECK(strstr(err.message, "count") != NULL);
    }
    /* a tiny positive count that overflows the mean */
    REQUIRE(write_imatrix_gguf(path, good, 4, 1e-45f));
    im = NULL;
    CHECK(kv_imatrix_load(path, &im, &err) == KV_EFORMAT && !im);
}

/* fuzz_hf_config: rope_scaling {"type": "linear"} (or llama3) without "factor" was accepted with factor 0, which
 * divides the positions by zero in the forward pass. */
KV_TEST(fuzz_hf_config_rope_scaling_needs_factor) {
    static const char *const cfgs[] = {
        "{\"model_type\":\"llama\",\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":1,"
        "\"num_attention_heads\":2,\"vocab_size\":8,\"rope_scaling\":{\"type\":\"linear\"}}",
        "{\"model_type\":\"llama\",\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":1,"
        "\"num_attention_heads\":2,\"vocab_size\":8,\"rope_scaling\":{\"rope_type\":\"llama3\","
        "\"original_max_position_embeddings\":64}}",
    };
    for (int i = 0; i < 2; i++) {
        kv_json_doc *doc = NULL;
        kv_error err;
        REQUIRE_OK(kv_json_parse(cfgs[i], strlen(cfgs[i]), NULL, &doc, &err), &err);
        kv_hparams hp;
        CHECK(kv_hf_config_to_hparams(kv_json_root(doc), "config.json", &hp, &err) == KV_EFORMAT);
        CHECK(strstr(err.message, "factor") != NULL);
        kv_json_free(doc);
    }
    const char *ok = "{\"model_type\":\"llama\",\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":1,"
                     "\"num_attention_heads\":2,\"vocab_size\":8,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}";
    kv_json_doc *doc = NULL;
    kv_error err;
    REQUIRE_OK(kv_json_parse(ok, strlen(ok), NULL, &doc, &err), &err);
    kv_hparams hp;
    CHECK_OK(kv_hf_config_to_hparams(kv_json_root(doc), "config.json", &hp, &err), &err);
    CHECK_NEAR(hp.rope_factor, 2.0, 0);
    kv_json_free(doc);
}

/* fuzz_imatrix: a legacy .dat entry whose name starts with (or holds) a NUL byte loaded as an empty (or shorter)
 * name, which matches no tensor or another one. */
KV_TEST(fuzz_imatrix_dat_refuses_nul_in_name) {
    uint8_t b[64];
    size_t n = 0;
    kv_wr_u32(b + n, 1), n += 4;              /* one entry */
    kv_wr_u32(b + n, 4), n += 4;              /* name length */
    memcpy(b + n, "a\0bc", 4), n += 4;
    kv_wr_u32(b + n, 1), n += 4;              /* ncall */
    kv_wr_u32(b + n, 2), n += 4;              /* nval */
    kv_wr_f32(b + n, 1.0f), n += 4;
    kv_wr_f32(b + n, 2.0f), n += 4;
    char path[1024];
    snprintf(path, sizeof path, "%s/nul.dat", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(path, b, n) == 0);
    kv_imatrix *im = NULL;
    kv_error err;
    CHECK(kv_imatrix_load(path, &im, &err) == KV_EFORMAT && !im);
    CHECK(strstr(err.message, "NUL") != NULL);
    memcpy(b + 8, "abcd", 4);
    REQUIRE(kv_test_write_file(path, b, n) == 0);
    CHECK_OK(kv_imatrix_load(path, &im, &err), &err);
    kv_imatrix_free(im);
}

/* fuzz_logits: a logits file whose token count n_ids makes 4·n_ids wrap around 2^64 passed the size check, and the
 * ids buffer (n_ids·4 + 1 bytes, wrapped too) was overrun: heap-buffer-overflow in kv_logprobs_load. */
KV_TEST(fuzz_logits_huge_token_count_is_refused) {
    enum { V = 8 };
    const size_t rec = 8 + 8 * V + 2 * V;
    uint8_t b[64 + 4 * 4 + 3 * 88];
    memset(b, 0, sizeof b);
    memcpy(b, "KVLOGP01", 8);
    kv_wr_u32(b + 8, 1);
    kv_wr_u32(b + 12, V);
    /* 4 · (2^62 + 4) = 16 (mod 2^64): the size equation holds with 4 ids' worth of bytes */
    kv_wr_u64(b + 16, (1ull << 62) + 4);
    kv_wr_u32(b + 32, 4);                 /* ctx */
    kv_wr_u32(b + 36, 0);                 /* hf style */
    kv_wr_u64(b + 40, 1);                 /* windows */
    kv_wr_u64(b + 48, 3);                 /* scored = windows · (ctx - 1) */
    kv_wr_u32(b + 56, (uint32_t)rec);
    REQUIRE(sizeof b == 64 + 16 + 3 * rec);
    char path[1024];
    snprintf(path, sizeof path, "%s/huge.logits", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(path, b, sizeof b) == 0);
    kv_logprobs *lp = NULL;
    kv_error err;
    CHECK(kv_logprobs_load(path, &lp, &err) == KV_EFORMAT && !lp);
    CHECK(strstr(err.message, "token count") != NULL);
}

/* fuzz_logits: positive log-probs (valid files never have them: kvant writes l - logsumexp(l)) loaded, and
 * exp(60000) made the KL-divergence infinite with exit 0. */
KV_TEST(fuzz_logits_positive_logprob_is_refused) {
    enum { V = 8 };
    int32_t ids[5] = {1, 2, 3, 4, 5};
    uint8_t recs[3 * (8 + 8 * V + 2 * V)];
    kv_logprobs lp;
    memset(&lp, 0, sizeof lp);
    lp.n_vocab = V;
    lp.plan.ctx = 4;
    lp.plan.style = KV_PPL_HF;
    lp.plan.windows = 1;
    lp.plan.per_window = 3;
    lp.n_ids = 5;
    lp.ids = ids;
    lp.ids_hash = kv_eval_ids_hash(ids, 5);
    lp.n_scored = 3;
    lp.rec_bytes = kv_logprobs_rec_bytes(V);
    for (int r = 0; r < 3; r++) {
        uint8_t *rec = recs + (size_t)r * lp.rec_bytes;
        kv_wr_f32(rec, -logf(8.0f));
        kv_wr_u32(rec + 4, 0);
        for (int k = 0; k < V; k++) kv_wr_u32(rec + 8 + 8 * k, (uint32_t)k), kv_wr_f32(rec + 12 + 8 * k, -logf(8.0f));
        for (int i = 0; i < V; i++) kv_wr_u16(rec + 8 + 8 * V + 2 * i, kv_fp32_to_fp16(-logf(8.0f)));
    }
    lp.recs = recs;
    char path[1024];
    snprintf(path, sizeof path, "%s/pos.logits", kv_test_tmpdir());
    kv_error err;
    REQUIRE_OK(kv_logprobs_save(&lp, path, &err), &err);
    kv_logprobs *back = NULL;
    REQUIRE_OK(kv_logprobs_load(path, &back, &err), &err);
    kv_logprobs_free(back);
    const size_t rec1 = 64 + 4 * 5 + lp.rec_bytes; /* second record */
    size_t size = 0;
    uint8_t *b = kv_test_read_file(path, &size);
    REQUIRE(b);
    const struct { size_t off; int f16; float v; } bad[] = {
        {rec1, 0, 0.5f},                        /* the correct token's log-prob */
        {rec1 + 12 + 8 * 3, 0, 60000.0f},       /* a top-k log-prob */
        {rec1 + 8 + 8 * V + 2 * 5, 1, 60000.0f} /* an fp16 log-prob */
    };
    for (int k = 0; k < 3; k++) {
        uint8_t *c = malloc(size);
        REQUIRE(c);
        memcpy(c, b, size);
        if (bad[k].f16) kv_wr_u16(c + bad[k].off, kv_fp32_to_fp16(bad[k].v));
        else kv_wr_f32(c + bad[k].off, bad[k].v);
        REQUIRE(kv_test_write_file(path, c, size) == 0);
        free(c);
        back = NULL;
        CHECK(kv_logprobs_load(path, &back, &err) == KV_EFORMAT && !back);
        CHECK(strstr(err.message, "log-prob") != NULL);
    }
    free(b);
}
