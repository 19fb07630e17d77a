/* test_verify.c — `kvant inspect --verify` and kv_tensor_verify (src/io/verify.c): every tensor of every kind
 * (plain, ggml block types, kvant formats, entropy-coded) decoded and checked finite; a corrupt or non-finite
 * tensor is an error naming it and its byte offset, the others still get their verdict, the exit status is 1;
 * --json gives the same verdicts. */
#include "test.h"
#include "core/core.h"
#include "io/json.h"

static int64_t count_of(const char *log, const char *needle) {
    int64_t n = 0;
    for (const char *p = log; p && (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

/* A GGUF of four tensors: f32 with a NaN at [1][3], q8_0 whose block 2 has an Inf scale, a clean q8_0 and a
 * clean ECW (version 4). */
static int write_mixed(kv_test_ctx *T, const char *path, uint64_t *nan_row_off, uint64_t *inf_row_off,
                       uint64_t *ecw_end) {
    static float f[4][8];
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 8; i++) f[r][i] = (float)(r * 8 + i) * 0.25f;
    f[1][3] = NAN;
    kv_format q8;
    kv_error err;
    if (kv_format_from_type(KV_TYPE_Q8_0, &q8, &err) != KV_OK) return 0;
    float src[4 * 64];
    for (int i = 0; i < 4 * 64; i++) src[i] = sinf((float)i);
    uint8_t good[4 * 2 * 34], bad[4 * 2 * 34];
    if (q8.quantize(&q8, src, good, 4, 64, NULL, &err) != KV_OK) return 0;
    memcpy(bad, good, sizeof bad);
    kv_wr_u16(bad + 2 * 34, 0x7C00); /* row 1 (68 bytes a row), block 0: d = +Inf */
    int32_t z[16 * 32];
    uint16_t cs[32], rs[16];
    for (int i = 0; i < 16 * 32; i++) z[i] = (i * 7) % 5 - 2;
    for (int i = 0; i < 32; i++) cs[i] = kv_fp32_to_fp16(0.01f * (float)(i + 1));
    for (int i = 0; i < 16; i++) rs[i] = kv_fp32_to_fp16(1.0f);
    uint8_t *blob;
    size_t size;
    if (kv_ecw_encode(z, 16, 32, cs, rs, &blob, &size, &err) != KV_OK) return 0;
    kv_gguf_writer *w;
    const int64_t sf[2] = {4, 8}, sq[2] = {4, 64};
    kv_status st = kv_gguf_writer_create(&w, &err);
    if (!st) st = kv_gguf_writer_add_tensor(w, "a.nan", 2, sf, KV_TYPE_F32, f, &err);
    if (!st) st = kv_gguf_writer_add_tensor(w, "b.inf_scale", 2, sq, KV_TYPE_Q8_0, bad, &err);
    if (!st) st = kv_gguf_writer_add_tensor(w, "c.clean", 2, sq, KV_TYPE_Q8_0, good, &err);
    if (!st) st = kv_gguf_writer_add_tensor_ecw(w, "d.coded", 16, 32, blob, size, &err);
    if (!st) st = kv_gguf_writer_write(w, path, NULL, &err);
    kv_gguf_writer_free(w);
    free(blob);
    CHECK_MSG(st == KV_OK, "write: %s", err.message);
    kv_model_file *mf;
    if (st || kv_model_open(path, &mf, &err) != KV_OK) return 0;
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        if (!strcmp(t->src_name, "a.nan")) *nan_row_off = t->offset + 32;
        if (!strcmp(t->src_name, "b.inf_scale")) *inf_row_off = t->offset + 68;
        if (!strcmp(t->src_name, "d.coded")) *ecw_end = t->offset + t->nbytes;
    }
    kv_model_close(mf);
    return 1;
}

KV_TEST(verify_reports_every_tensor_and_fails_on_any) {
    char path[1024], args[2048];
    snprintf(path, sizeof path, "%s/mixed.gguf", kv_test_tmpdir());
    uint64_t nan_at = 0, inf_at = 0, end = 0;
    REQUIRE(write_mixed(T, path, &nan_at, &inf_at, &end));
    /* the library call: verdict, counts, location */
    kv_model_file *mf;
    kv_error err;
    REQUIRE_OK(kv_model_open(path, &mf, &err), &err);
    kv_tensor_check c;
    const kv_tensor *t = NULL;
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++)
        if (!strcmp(kv_model_tensor(mf, i)->src_name, "a.nan")) t = kv_model_tensor(mf, i);
    REQUIRE(t != NULL);
    CHECK(kv_tensor_verify(mf, t, NULL, &c, &err) == KV_EFORMAT);
    CHECK_EQ_INT(c.nonfinite, 1);
    CHECK_EQ_INT(c.first_row, 1);
    CHECK_EQ_INT(c.first_col, 3);
    CHECK_EQ_INT(err.offset, (int64_t)nan_at);
    CHECK_MSG(!strcmp(err.tensor, "a.nan") && strstr(err.file, "mixed.gguf") && strstr(err.message, "row 1, column 3"),
              "%s", err.message);
    kv_model_close(mf);

    char *log = NULL;
    snprintf(args, sizeof args, "inspect --verify %s -t 2 --quiet", path);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 1);
    REQUIRE(log != NULL);
    CHECK_MSG(count_of(log, "  ok     ") == 2 && count_of(log, "  ERROR  ") == 2, "%s", log);
    char want[256];
    snprintf(want, sizeof want, "offset %llu: 1 of 32 values are not finite (NaN or Inf), the first at row 1, column 3",
             (unsigned long long)nan_at);
    CHECK_MSG(strstr(log, want), "%s", log);
    snprintf(want, sizeof want, "offset %llu: 32 of 256 values are not finite", (unsigned long long)inf_at);
    CHECK_MSG(strstr(log, want), "%s", log);
    CHECK_MSG(strstr(log, "4 tensors: 2 ok, 2 with errors") && strstr(log, "2 of 4 tensors failed verification"),
              "%s", log);
    free(log);

    /* --json: the same verdicts */
    snprintf(args, sizeof args, "inspect --verify %s --json --quiet", path);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 1);
    REQUIRE(log != NULL);
    const char *brace = strchr(log, '{'), *last = strrchr(log, '}');
    REQUIRE(brace && last);
    kv_json_doc *doc;
    REQUIRE_OK(kv_json_parse(brace, (size_t)(last - brace + 1), NULL, &doc, &err), &err);
    const kv_json *root = kv_json_root(doc), *ts = kv_json_get(root, "tensors");
    int64_t ok = -1, errors = -1;
    CHECK(kv_json_get_int(root, "ok", &ok) && ok == 2);
    CHECK(kv_json_get_int(root, "errors", &errors) && errors == 2);
    static const char *const want_status[] = {"error", "error", "ok", "ok"};
    REQUIRE(ts && ts->len == 4);
    for (uint64_t i = 0; i < 4; i++) {
        const char *st = NULL;
        CHECK(kv_json_get_str(kv_json_at(ts, i), "status", &st) && !strcmp(st, want_status[i]));
    }
    int64_t off = 0, row = 0;
    CHECK(kv_json_get_int(kv_json_at(ts, 1), "offset", &off) && off == (int64_t)inf_at);
    CHECK(kv_json_get_int(kv_json_at(ts, 0), "first_row", &row) && row == 1);
    kv_json_free(doc);
    free(log);

    /* options of --verify alone are refused without it */
    snprintf(args, sizeof args, "inspect %s -t 2", path);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 2);
    free(log);
}

KV_TEST(verify_corrupt_ecw_stream_named) {
    char path[1024], args[2048];
    snprintf(path, sizeof path, "%s/mixed.gguf", kv_test_tmpdir());
    uint64_t a, b, end = 0;
    REQUIRE(write_mixed(T, path, &a, &b, &end));
    size_t n;
    uint8_t *file = kv_test_read_file(path, &n);
    REQUIRE(file != NULL);
    REQUIRE(end >= 8 && end <= n);
    file[end - 2] ^= 0x08; /* a byte of the ECW tensor's only stream (it ends the container) */
    REQUIRE(kv_test_write_file(path, file, n) == 0);
    free(file);
    char *log = NULL;
    snprintf(args, sizeof args, "inspect --verify %s --quiet", path);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 1);
    CHECK_MSG(log && strstr(log, "d.coded") && strstr(log, "stream 0 (rows 0..15): checksum") &&
              strstr(log, "2 of 4 tensors") == NULL && strstr(log, "3 of 4 tensors failed"), "%s", log ? log : "");
    free(log);
}

/* Real outputs: the bf16 source, an integer kvant format and its entropy-coded form all verify clean; a NaN
 * scale patched into the kvant-format file is found at its row. */
KV_TEST(verify_proxy_outputs) {
    char model[512], out[1024], coded[1024], args[4096];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m absent");
    snprintf(out, sizeof out, "%s/int4.gguf", kv_test_tmpdir());
    snprintf(coded, sizeof coded, "%s/coded.gguf", kv_test_tmpdir());
    char *log = NULL;
    snprintf(args, sizeof args, "inspect --verify %s --quiet", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 0);
    CHECK_MSG(log && strstr(log, "57 tensors: 57 ok, 0 with errors"), "%s", log ? log : "");
    free(log);
    snprintf(args, sizeof args, "quantize %s -o %s --format int4_g128_asym --pure -t 2 --quiet", model, out);
    REQUIRE(kv_test_run_cli(args, &log) == 0);
    free(log);
    snprintf(args, sizeof args, "quantize %s -o %s --format int4_g128_asym --pure --entropy-code -t 2 --quiet", model,
             coded);
    REQUIRE(kv_test_run_cli(args, &log) == 0);
    free(log);
    snprintf(args, sizeof args, "inspect --verify %s --quiet", coded);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 0);
    CHECK_MSG(log && strstr(log, "57 tensors: 57 ok") && count_of(log, " ecw ") >= 40, "%s", log ? log : "");
    free(log);
    snprintf(args, sizeof args, "inspect --verify %s --quiet", out);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 0);
    free(log);
    /* blk.2.ffn_up.weight's row 5, block 1: its fp16 scale becomes NaN */
    kv_model_file *mf;
    kv_error err;
    REQUIRE_OK(kv_model_open(out, &mf, &err), &err);
    const kv_tensor *t = kv_model_find(mf, "blk.2.ffn_up.weight");
    REQUIRE(t != NULL);
    uint64_t row_bytes = t->nbytes / (uint64_t)t->shape[0], at = t->offset + 5 * row_bytes;
    kv_model_close(mf);
    size_t n;
    uint8_t *file = kv_test_read_file(out, &n);
    REQUIRE(file != NULL);
    kv_wr_u16(file + at + row_bytes / ((uint64_t)512 / 128), 0x7E00);
    REQUIRE(kv_test_write_file(out, file, n) == 0);
    free(file);
    snprintf(args, sizeof args, "inspect --verify %s --quiet", out);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 1);
    char want[200];
    snprintf(want, sizeof want, "blk.2.ffn_up.weight");
    CHECK_MSG(log && strstr(log, want) && strstr(log, "the first at row 5, column 128") &&
              strstr(log, "56 ok, 1 with errors"), "%s", log ? log : "");
    free(log);
}
