/* test_core.c — scalar conversions, errors, thread pool, atomic output files, JSON writer. */
#include "test.h"
#include "../src/core/core.h"
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

KV_TEST(fp16_roundtrip_all_codes) {
    /* every finite fp16 value converts to fp32 and back unchanged; NaNs stay NaN */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kv_fp16_to_fp32((uint16_t)h);
        uint16_t back = kv_fp32_to_fp16(f);
        if (isnan(f)) CHECK((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        else if (back != h) { CHECK_EQ_INT(back, h); break; }
    }
}

KV_TEST(fp16_round_to_nearest_even) {
    CHECK_EQ_INT(kv_fp32_to_fp16(1.0f), 0x3c00);
    /* 1 + 2^-11 is halfway between 1 and 1+2^-10: ties to even (1.0) */
    CHECK_EQ_INT(kv_fp32_to_fp16(1.0f + 0x1p-11f), 0x3c00);
    /* 1 + 3*2^-11 is halfway between 1+2^-10 and 1+2^-9: ties to even (1+2^-9) */
    CHECK_EQ_INT(kv_fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);
    CHECK_EQ_INT(kv_fp32_to_fp16(65504.0f), 0x7bff);
    CHECK_EQ_INT(kv_fp32_to_fp16(65520.0f), 0x7c00);  /* rounds up to Inf */
    CHECK_EQ_INT(kv_fp32_to_fp16(65519.0f), 0x7bff);
    CHECK_EQ_INT(kv_fp32_to_fp16(-INFINITY), 0xfc00);
    CHECK_EQ_INT(kv_fp32_to_fp16(0x1p-24f), 0x0001);  /* smallest subnormal */
    CHECK_EQ_INT(kv_fp32_to_fp16(0x1p-25f), 0x0000);  /* tie to even: 0 */
    CHECK_EQ_INT(kv_fp32_to_fp16(0x1.8p-24f), 0x0002); /* 1.5 units: tie to even 2 */
    CHECK_EQ_INT(kv_fp32_to_fp16(-0.0f), 0x8000);
    CHECK(isnan(kv_fp16_to_fp32(kv_fp32_to_fp16(NAN))));
    CHECK_EQ_INT(kv_fp16_to_fp32(0x0001) == 0x1p-24f, 1);
}

KV_TEST(bf16_conversions) {
    CHECK_EQ_INT(kv_fp32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is halfway between bf16 neighbours 1 and 1+2^-7: ties to even */
    CHECK_EQ_INT(kv_fp32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    CHECK_EQ_INT(kv_fp32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    CHECK_EQ_INT(kv_fp32_to_bf16(INFINITY), 0x7f80);
    CHECK(isnan(kv_bf16_to_fp32(kv_fp32_to_bf16(NAN))));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kv_bf16_to_fp32((uint16_t)h);
        if (!isnan(f) && kv_fp32_to_bf16(f) != h) { CHECK_EQ_INT(kv_fp32_to_bf16(f), h); break; }
    }
}

KV_TEST(error_format_has_context) {
    kv_error e;
    kv_error_clear(&e);
    CHECK_EQ_INT(kv_fail(&e, KV_EFORMAT, "bad magic 0x%x", 0x1234), KV_EFORMAT);
    kv_error_context(&e, "model.gguf", 16, "blk.0.attn_q.weight");
    kv_error_context(&e, "other", 99, "other"); /* inner context wins */
    char buf[1200];
    CHECK_STR(kv_error_format(&e, buf, sizeof buf), "model.gguf: offset 16: tensor 'blk.0.attn_q.weight': bad magic 0x1234");
    CHECK_EQ_INT(kv_fail(NULL, KV_EIO, "ignored"), KV_EIO);
}

typedef struct { int64_t *out; } square_ctx;
static void square_task(void *c, int64_t t, int thread) { (void)thread; ((square_ctx *)c)->out[t] = t * t; }

KV_TEST(pool_runs_every_task_once) {
    for (int nt = 1; nt <= 4; nt++) {
        kv_pool *p = kv_pool_create(nt);
        REQUIRE(p);
        CHECK_EQ_INT(kv_pool_threads(p), nt);
        int64_t out[1000];
        for (int rep = 0; rep < 20; rep++) {
            memset(out, 0xff, sizeof out);
            square_ctx c = {out};
            kv_pool_run(p, 1000, square_task, &c);
            for (int i = 0; i < 1000; i++) if (out[i] != (int64_t)i * i) { CHECK_EQ_INT(out[i], (int64_t)i * i); break; }
        }
        kv_pool_destroy(p);
    }
    int64_t out[3];
    square_ctx c = {out};
    kv_pool_run(NULL, 3, square_task, &c);
    CHECK_EQ_INT(out[2], 4);
}

KV_TEST(outfile_commit_and_abort) {
    char path[600];
    snprintf(path, sizeof path, "%s/out.bin", kv_test_tmpdir());
    kv_error e;
    kv_error_clear(&e);
    kv_outfile *f;
    REQUIRE_OK(kv_outfile_open(path, &f, &e), &e);
    CHECK_OK(kv_outfile_write(f, "abc", 3, &e), &e);
    CHECK_OK(kv_outfile_pad(f, 8, &e), &e);
    CHECK_EQ_INT(kv_outfile_tell(f), 8);
    CHECK(!kv_test_exists(path)); /* nothing under the final name before commit */
    CHECK_OK(kv_outfile_commit(f, &e), &e);
    size_t n = 0;
    char *data = kv_test_read_file(path, &n);
    REQUIRE(data);
    CHECK_EQ_INT(n, 8);
    CHECK(!memcmp(data, "abc\0\0\0\0\0", 8));
    free(data);

    char path2[600];
    snprintf(path2, sizeof path2, "%s/aborted.bin", kv_test_tmpdir());
    REQUIRE_OK(kv_outfile_open(path2, &f, &e), &e);
    CHECK_OK(kv_outfile_write(f, "xyz", 3, &e), &e);
    kv_outfile_abort(f);
    CHECK(!kv_test_exists(path2));
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c tmp", kv_test_tmpdir());
    FILE *p = popen(cmd, "r");
    int count = -1;
    if (p) { if (fscanf(p, "%d", &count) != 1) count = -1; pclose(p); }
    CHECK_EQ_INT(count, 0); /* no temp file left behind */

    kv_error_clear(&e);
    CHECK(kv_outfile_open("/nonexistent-dir/x.gguf", &f, &e) == KV_EIO);
    CHECK(strstr(e.file, "/nonexistent-dir/x.gguf") != NULL);
}

KV_TEST(outfile_write_failure_leaves_nothing) {
    /* A file-size limit makes write() fail like a full disk (EFBIG instead of ENOSPC). The runner forks
     * each test, so the limit only affects this child. */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = 4096, .rlim_max = RLIM_INFINITY};
    REQUIRE(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    char path[600];
    snprintf(path, sizeof path, "%s/full.bin", kv_test_tmpdir());
    kv_error e;
    kv_error_clear(&e);
    kv_outfile *f;
    REQUIRE_OK(kv_outfile_open(path, &f, &e), &e);
    static char block[10000];
    kv_status st = kv_outfile_write(f, block, sizeof block, &e);
    CHECK(st == KV_EIO);
    CHECK(strstr(e.message, "write failed") != NULL);
    CHECK(kv_outfile_commit(f, &e) != KV_OK); /* commit after a failed write refuses and cleans up */
    CHECK(!kv_test_exists(path));
    rl.rlim_cur = RLIM_INFINITY;
    setrlimit(RLIMIT_FSIZE, &rl);
}

KV_TEST(json_writer_output) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    REQUIRE(m);
    kv_jw w;
    kv_jw_init(&w, m, 0);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "a"); kv_jw_int(&w, 1);
    kv_jw_key(&w, "b"); kv_jw_arr_begin(&w); kv_jw_num(&w, 0.5); kv_jw_str(&w, "x\"y"); kv_jw_null(&w); kv_jw_arr_end(&w);
    kv_jw_key(&w, "c"); kv_jw_obj_begin(&w); kv_jw_key(&w, "d"); kv_jw_bool(&w, 1); kv_jw_obj_end(&w);
    kv_jw_key(&w, "e"); kv_jw_num(&w, NAN);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
    fclose(m);
    CHECK_STR(buf, "{\"a\":1,\"b\":[0.5,\"x\\\"y\",null],\"c\":{\"d\":true},\"e\":null}\n");
    free(buf);
}

KV_TEST(rng_is_deterministic) {
    kv_rng a, b;
    kv_rng_seed(&a, 42);
    kv_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) CHECK(kv_rng_u64(&a) == kv_rng_u64(&b));
    double s = 0, s2 = 0;
    kv_rng_seed(&a, 1);
    for (int i = 0; i < 100000; i++) { double x = kv_rng_normal(&a); s += x; s2 += x * x; }
    CHECK_NEAR(s / 100000, 0.0, 0.02);
    CHECK_NEAR(s2 / 100000, 1.0, 0.02);
}

KV_TEST(type_traits_cover_ggml_ids) {
    CHECK_STR(kv_type_get(KV_TYPE_Q4_K)->name, "q4_k");
    CHECK_EQ_INT(kv_type_get(KV_TYPE_Q6_K)->block_bytes, 210);
    CHECK(kv_type_get(4) == NULL);
    CHECK(kv_type_get(31) == NULL);
    CHECK(kv_type_get(99999) == NULL);
    CHECK_EQ_INT(kv_type_row_bytes(KV_TYPE_Q4_0, 64), 36);
    CHECK_EQ_INT(kv_type_row_bytes(KV_TYPE_Q4_0, 65), 0);
    CHECK_EQ_INT(kv_type_row_bytes(KV_TYPE_BF16, 3), 6);
}
