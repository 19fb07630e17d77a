/* test_stream.c — the streaming quantize pipeline (docs/quantize.md "Memory"): a run that goes one tensor at a
 * time from the source to the output writes exactly the bytes of the in-memory pipeline, for every kind of
 * source (HF bf16, GGUF, llama2.c fp32), mixes, pure formats, overrides, kvant-only formats and importance. */
#include "test.h"
#include <unistd.h>

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    void *pa = kv_test_read_file(a, &na), *pb = kv_test_read_file(b, &nb);
    int same = pa && pb && na == nb && !memcmp(pa, pb, na);
    free(pa);
    free(pb);
    return same;
}

/* quantizes model twice (streaming, then in memory) with the options and checks the files are identical */
static void check_stream_equals_memory(kv_test_ctx *T, const char *model, kv_quantize_opts o, const char *what) {
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/stream.gguf", kv_test_tmpdir());
    snprintf(b, sizeof b, "%s/memory.gguf", kv_test_tmpdir());
    kv_quantize_report rep;
    kv_error err;
    kv_error_clear(&err);
    o.in_memory = 0;
    REQUIRE_OK(kv_quantize_model(model, a, &o, &rep, &err), &err);
    CHECK_MSG(rep.streamed == (o.method && strncmp(o.method, "rtn", 3) ? 2 : 1), "%s: the run did not stream", what);
    CHECK(rep.peak_rss_bytes > 0);
    o.in_memory = 1;
    REQUIRE_OK(kv_quantize_model(model, b, &o, &rep, &err), &err);
    CHECK_EQ_INT(rep.streamed, 0);
    CHECK_MSG(same_file(a, b), "%s: streamed and in-memory outputs differ", what);
}

KV_TEST(stream_rtn_bytes_equal_in_memory_hf) {
    char model[512];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    kv_pool *pool = kv_pool_create(2);
    static const char *const mixes[] = {"q4_k_m", "q3_k_s", "q5_0", "int4_g128_asym", "nvfp4_ts", "bf16"};
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++) {
        kv_quantize_opts o = {0};
        o.format = mixes[i];
        o.pool = pool;
        o.quiet = 1;
        check_stream_equals_memory(T, model, o, mixes[i]);
    }
    static const char *const ov[] = {"ffn_down=q8_0", "attn_v=mxfp4_ocp"};
    kv_quantize_opts o = {0};
    o.format = "q4_k";
    o.pure = 1;
    o.overrides = ov;
    o.n_overrides = 2;
    o.pool = pool;
    o.quiet = 1;
    check_stream_equals_memory(T, model, o, "pure q4_k with overrides");
    kv_pool_destroy(pool);
}

/* --transform rht streams: each tensor is rotated when it is read (its block and seed in the header first),
 * with the in-memory pipeline's bytes, also from a GGUF (rows un-permuted, then rotated) and a source already
 * carrying online rotations (those tensors are not rotated again). */
KV_TEST(stream_rht_bytes_equal_in_memory) {
    char model[512], gguf[512];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    kv_test_shared(gguf, sizeof gguf, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    if (!kv_test_exists(model) || !kv_test_exists(gguf)) SKIP("proxy-27m or its GGUF not found");
    kv_pool *pool = kv_pool_create(2);
    static const struct { const char *fmt, *tr; } cases[] = {
        {"int4_g128_sym", "rht"}, {"q4_k_m", "rht:128"}, {"higgs_p2_b4", "rht:64"}, {"mxfp4_ocp", "rht:32,prescale"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kv_quantize_opts o = {0};
        o.format = cases[i].fmt;
        o.transforms = cases[i].tr;
        o.pool = pool;
        o.quiet = 1;
        check_stream_equals_memory(T, model, o, cases[i].tr);
    }
    kv_quantize_opts o = {0};
    o.format = "q4_k_m";
    o.transforms = "rht:64";
    o.pool = pool;
    o.quiet = 1;
    check_stream_equals_memory(T, gguf, o, "gguf rht:64");
    /* a rotated output as the source: its rotations are kept, the rest (none) rotated */
    char r[600];
    snprintf(r, sizeof r, "%s/rht.gguf", kv_test_tmpdir());
    kv_quantize_report rep;
    kv_error err;
    kv_error_clear(&err);
    kv_quantize_opts of = {0};
    of.format = "f16";
    of.transforms = "rht:128";
    of.quiet = 1;
    REQUIRE_OK(kv_quantize_model(model, r, &of, &rep, &err), &err);
    CHECK_EQ_INT(rep.streamed, 1);
    o.format = "q8_0";
    o.transforms = "rht:64";
    o.allow_requantize = 1;
    check_stream_equals_memory(T, r, o, "rotated f16 source, rht again");
    kv_pool_destroy(pool);
}

/* --entropy-code streams: a size pass records every container's size, the writer's pass codes each tensor
 * again; the bytes are the in-memory pipeline's (also rotated, from a GGUF with q/k kept as stored, and a
 * quantized source whose tensors are copied as stored, then coded). */
KV_TEST(stream_entropy_code_bytes_equal_in_memory) {
    char model[512], gguf[512];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    kv_test_shared(gguf, sizeof gguf, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    if (!kv_test_exists(model) || !kv_test_exists(gguf)) SKIP("proxy-27m or its GGUF not found");
    kv_pool *pool = kv_pool_create(2);
    kv_quantize_opts o = {0};
    o.format = "int4_g128_asym";
    o.entropy_code = 1;
    o.pool = pool;
    o.quiet = 1;
    check_stream_equals_memory(T, model, o, "int4_g128_asym --entropy-code");
    o.format = "int3_g64_sym";
    o.transforms = "rht:64";
    check_stream_equals_memory(T, model, o, "int3_g64_sym rht:64 --entropy-code");
    static const char *const ov[] = {"attn_q|attn_k=bf16"};
    o.format = "int4_g128_asym";
    o.transforms = NULL;
    o.overrides = ov;
    o.n_overrides = 1;
    check_stream_equals_memory(T, gguf, o, "gguf, q/k bf16 as stored, --entropy-code");
    char q[600];
    snprintf(q, sizeof q, "%s/int4.gguf", kv_test_tmpdir());
    kv_quantize_report rep;
    kv_error err;
    kv_error_clear(&err);
    kv_quantize_opts o4 = {0};
    o4.format = "int4_g128_asym";
    o4.quiet = 1;
    REQUIRE_OK(kv_quantize_model(model, q, &o4, &rep, &err), &err);
    o.overrides = NULL;
    o.n_overrides = 0;
    o.allow_requantize = 1;
    check_stream_equals_memory(T, q, o, "int4 source kept as stored, --entropy-code");
    /* a format the coder does not take is refused as before */
    o.format = "q4_k_m";
    o.allow_requantize = 0;
    char out[600];
    snprintf(out, sizeof out, "%s/refused.gguf", kv_test_tmpdir());
    CHECK_EQ_INT(kv_quantize_model(model, out, &o, &rep, &err), KV_EUNSUPPORTED);
    CHECK(strstr(err.message, "--entropy-code: format") != NULL);
    CHECK(!kv_test_exists(out));
    kv_pool_destroy(pool);
}

KV_TEST(stream_rtn_bytes_equal_in_memory_gguf_and_llama2c) {
    char gguf[512], l2c[512];
    kv_test_shared(gguf, sizeof gguf, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    kv_test_shared(l2c, sizeof l2c, "models/stories260K/stories260K.bin");
    if (!kv_test_exists(gguf) || !kv_test_exists(l2c)) SKIP("proxy-27m-gguf or stories260K not found");
    kv_quantize_opts o = {0};
    o.quiet = 1;
    check_stream_equals_memory(T, gguf, o, "gguf q4_k_m"); /* q/k rows un-permuted on read, permuted again */
    check_stream_equals_memory(T, l2c, o, "llama2.c q4_k_m (fallback formats, tied head)");
    /* a quantized GGUF as the source: raw copies and requantized tensors */
    char q[600];
    snprintf(q, sizeof q, "%s/q8.gguf", kv_test_tmpdir());
    kv_quantize_report rep;
    kv_error err;
    kv_quantize_opts o8 = {0};
    o8.format = "q8_0";
    o8.quiet = 1;
    REQUIRE_OK(kv_quantize_model(gguf, q, &o8, &rep, &err), &err);
    o.format = "q8_0";
    o.allow_requantize = 1; /* a quantized source on purpose */
    check_stream_equals_memory(T, q, o, "q8_0 GGUF kept as stored");
}

/* Calibrated methods block by block from the source (GPTQ; WaterSIC's entropy-coded containers, whose sizes
 * are known only after their block) give the in-memory pipeline's bytes. */
KV_TEST(stream_calibrated_bytes_equal_in_memory) {
    char model[512], calib[512];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    if (!kv_test_exists(model) || !kv_test_exists(calib)) SKIP("proxy-27m or calib.txt not found");
    if (getenv("KVANT_SANITIZED")) SKIP("GPTQ on proxy-27m twice is slow under sanitizers");
    kv_pool *pool = kv_pool_create(2);
    static const char *const meth[][2] = {{"gptq", "int4_g128_asym"}, {"watersic:bits=3,only=blk.1.", "f16"}};
    for (int i = 0; i < 2; i++) {
        kv_quantize_opts o = {0};
        o.method = meth[i][0];
        o.format = meth[i][1];
        o.calib_path = calib;
        o.calib_tokens = 512;
        o.no_imatrix = 1;
        o.pool = pool;
        o.quiet = 1;
        check_stream_equals_memory(T, model, o, meth[i][0]);
    }
    kv_pool_destroy(pool);
}

/* The rotation and --entropy-code under a calibrated method stream too: each block's linears are rotated when
 * the block is read (mr-gptq = gptq on rht-rotated weights), the spilled codes coded after the blocks; also from
 * a GGUF (q/k un-permuted on read, coded in kvant's row order). */
KV_TEST(stream_calibrated_rht_and_entropy_code_bytes_equal_in_memory) {
    char model[512], gguf[512], calib[512];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    kv_test_shared(gguf, sizeof gguf, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    if (!kv_test_exists(model) || !kv_test_exists(gguf) || !kv_test_exists(calib)) SKIP("proxy-27m or calib.txt not found");
    if (getenv("KVANT_SANITIZED")) SKIP("GPTQ on proxy-27m twice is slow under sanitizers");
    kv_pool *pool = kv_pool_create(2);
    static const struct { const char *model, *meth, *fmt, *tr; int ec; } cases[] = {
        {"hf", "mr-gptq", "mxfp4_ocp", "rht:32", 0},
        {"hf", "gptq", "int4_g128_asym", NULL, 1},
        {"gguf", "gptq", "int3_g64_sym", "rht:64", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kv_quantize_opts o = {0};
        o.method = cases[i].meth;
        o.format = cases[i].fmt;
        o.transforms = cases[i].tr;
        o.entropy_code = cases[i].ec;
        o.calib_path = calib;
        o.calib_tokens = 256;
        o.calib_ctx = 128;
        o.no_imatrix = 1;
        o.pool = pool;
        o.quiet = 1;
        char what[200];
        snprintf(what, sizeof what, "%s %s %s %s%s", cases[i].model, cases[i].meth, cases[i].fmt,
                 cases[i].tr ? cases[i].tr : "", cases[i].ec ? " --entropy-code" : "");
        check_stream_equals_memory(T, cases[i].model[0] == 'h' ? model : gguf, o, what);
    }
    kv_pool_destroy(pool);
}

/* A computed imatrix streams: its statistics block by block through the unquantized model (the block's
 * linears from the source, rotated when rht is planned), then each tensor is rounded with it; the bytes and the
 * imatrix metadata are the in-memory pipeline's (several windows, rht, and GPTQ after it). */
KV_TEST(stream_computed_imatrix_bytes_equal_in_memory) {
    char model[512], calib[512];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    if (!kv_test_exists(model) || !kv_test_exists(calib)) SKIP("proxy-27m or calib.txt not found");
    kv_pool *pool = kv_pool_create(2);
    kv_quantize_opts o = {0};
    o.format = "q4_k_m";
    o.calib_path = calib;
    o.calib_tokens = 768;
    o.calib_ctx = 256;
    o.pool = pool;
    o.quiet = 1;
    check_stream_equals_memory(T, model, o, "q4_k_m, computed imatrix");
    o.format = "iq4_nl";
    o.transforms = "rht:64";
    check_stream_equals_memory(T, model, o, "iq4_nl rht:64, computed imatrix");
    if (!getenv("KVANT_SANITIZED")) {
        o.format = "int4_g128_asym";
        o.method = "gptq";
        o.transforms = NULL;
        o.calib_tokens = 512;
        o.calib_ctx = 256;
        check_stream_equals_memory(T, model, o, "gptq, computed imatrix");
    }
    kv_pool_destroy(pool);
}

/* kill -9 after block 3 of 6 (the test hook raises SIGKILL once that block's checkpoint is written), then the
 * same command with --resume: the file is byte-identical to an uninterrupted run and the checkpoint is gone. */
static void check_kill_and_resume(kv_test_ctx *T, const char *method, const char *format, const char *name) {
    char model[512], calib[512], base[1600], args[2400], a[700], b[700], ck[800];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    if (!kv_test_exists(model) || !kv_test_exists(calib)) SKIP("proxy-27m or calib.txt not found");
    snprintf(a, sizeof a, "%s/%s-straight.gguf", kv_test_tmpdir(), name);
    snprintf(b, sizeof b, "%s/%s-resumed.gguf", kv_test_tmpdir(), name);
    snprintf(base, sizeof base, "quantize %s --format %s --method %s --calib %s --calib-tokens 512 --no-imatrix -t 2 --quiet",
             model, format, method, calib);
    char *out = NULL;
    snprintf(args, sizeof args, "%s -o %s", base, a);
    int rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == 0, "uninterrupted run: %s", out ? out : "");
    free(out);
    setenv("KVANT_TEST_KILL_AFTER_BLOCK", "3", 1);
    snprintf(args, sizeof args, "%s -o %s", base, b);
    rc = kv_test_run_cli(args, &out);
    unsetenv("KVANT_TEST_KILL_AFTER_BLOCK");
    CHECK_MSG(rc != 0, "the killed run exited %d: %s", rc, out ? out : "");
    free(out);
    CHECK(!kv_test_exists(b));
    snprintf(ck, sizeof ck, "%s.kvresume", b);
    REQUIRE(kv_test_exists(ck));
    snprintf(args, sizeof args, "%s -o %s --resume", base, b);
    rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == 0, "resumed run: %s", out ? out : "");
    free(out);
    CHECK_MSG(same_file(a, b), "%s: the resumed file differs from the uninterrupted one", name);
    CHECK(!kv_test_exists(ck));
    snprintf(ck, sizeof ck, "%s.kvpart", b);
    CHECK(!kv_test_exists(ck));
    /* other arguments do not resume from a checkpoint that is not theirs */
    setenv("KVANT_TEST_KILL_AFTER_BLOCK", "2", 1);
    snprintf(args, sizeof args, "%s -o %s", base, b);
    rc = kv_test_run_cli(args, &out);
    unsetenv("KVANT_TEST_KILL_AFTER_BLOCK");
    free(out);
    snprintf(args, sizeof args, "%s -o %s --resume --seed 7", base, b);
    rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc != 0 && out && strstr(out, "other arguments"), "a mismatched checkpoint was used: %s", out ? out : "");
    free(out);
}

KV_TEST(stream_gptq_killed_then_resumed_is_byte_identical) {
    if (getenv("KVANT_SANITIZED")) SKIP("GPTQ on proxy-27m three times is slow under sanitizers");
    check_kill_and_resume(T, "gptq", "int4_g128_asym", "gptq");
}

KV_TEST(stream_watersic_killed_then_resumed_is_byte_identical) {
    check_kill_and_resume(T, "watersic:bits=3,only=blk.3.", "f16", "watersic");
}
