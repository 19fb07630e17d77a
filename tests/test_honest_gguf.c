/* test_honest_gguf.c — rotated weights in ggml formats are stored under kvant's type 1032 (docs/FORMAT.md
 * "Rotated weights: type 1032"): llama.cpp refuses such a file instead of running the weights unrotated, kvant
 * reads the rows as their ggml type and applies the rotation, and the quantize report says whether llama.cpp
 * can run the output. */
#include "test.h"
#include <sys/wait.h>

static const int32_t k_ids[] = {1, 450, 4996, 1735, 1701, 432, 1724, 975, 278, 1736, 1103, 2988, 13, 1576, 2987, 2990};
#define N_IDS ((int)(sizeof k_ids / sizeof k_ids[0]))

/* proxy-27m -> dir/name with format F, --pure, transforms (NULL: none). */
static kv_status quantize_proxy(kv_test_ctx *T, const char *name, const char *format, const char *transforms,
                                char *out, size_t n, kv_quantize_report *rep, kv_error *err) {
    char model[512];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    snprintf(out, n, "%s/%s", kv_test_tmpdir(), name);
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    o.format = format;
    o.pure = 1;
    o.transforms = transforms;
    o.quiet = 1;
    (void)T;
    return kv_quantize_model(model, out, &o, rep, err);
}

/* Byte offset of a tensor's u32 type field in the file (GGUF tensor info: name, n_dims, ne[], type). */
static uint64_t type_field_offset(const kv_gguf_tensor *t) {
    return t->info_offset + 8 + strlen(t->name) + 4 + 8 * (uint64_t)t->n_dims;
}

KV_TEST(honest_gguf_rotated_weights_stored_under_1032) {
    char model[512], out[600], plain[700];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    kv_quantize_report rep;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(quantize_proxy(T, "rot.gguf", "q8_0", "rht:256", out, sizeof out, &rep, &err), &err);
    CHECK_EQ_INT(rep.llama_cpp_runs, 0);
    CHECK_MSG(strstr(rep.llama_cpp_why, "rotation") && strstr(rep.llama_cpp_why, "1032"), "why: %s", rep.llama_cpp_why);

    /* the container: every rotated weight is 1032 + "q8_0" + its rotation; the embedding keeps q8_0's id */
    kv_gguf *g = NULL;
    REQUIRE_OK(kv_gguf_open(out, &g, &err), &err);
    int64_t n_rot = 0;
    size_t size = 0;
    uint8_t *bytes = kv_test_read_file(out, &size);
    REQUIRE(bytes);
    for (int64_t i = 0; i < kv_gguf_n_tensors(g); i++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);
        char key[256];
        snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, t->name);
        int rotated = kv_gguf_find_key(g, key) >= 0;
        if (!rotated) {
            CHECK_MSG(t->type < KV_TYPE_KVANT_BASE, "%s: type %u without a rotation", t->name, t->type);
            continue;
        }
        n_rot++;
        CHECK_EQ_INT(t->type, KV_TYPE_ROTATED);
        snprintf(key, sizeof key, "kvant.tensor.%s.format", t->name);
        const kv_gguf_value *v = kv_gguf_find(g, key);
        CHECK_MSG(v && v->type == KV_GGUF_STRING, "%s missing", key);
        uint64_t at = type_field_offset(t);
        REQUIRE(at + 4 <= size);
        CHECK(bytes[at] == 0x08 && bytes[at + 1] == 0x04 && bytes[at + 2] == 0 && bytes[at + 3] == 0);
        /* the file an older kvant wrote: the plain ggml id in its place */
        bytes[at] = (uint8_t)KV_TYPE_Q8_0, bytes[at + 1] = 0;
    }
    CHECK_EQ_INT(n_rot, 43); /* 6 layers x 7 linears + the head; token_embd is not rotated */
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "token_embd.weight")->type, KV_TYPE_Q8_0);
    kv_gguf_close(g);
    snprintf(plain, sizeof plain, "%s/plain-ids.gguf", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(plain, bytes, size) == 0);
    free(bytes);

    /* kvant reads 1032 as the ggml type and computes exactly what it computed from the plain ids */
    kv_model_file *mf = NULL;
    REQUIRE_OK(kv_model_open(out, &mf, &err), &err);
    CHECK_EQ_INT(kv_model_find(mf, "blk.3.ffn_down.weight")->type, KV_TYPE_Q8_0);
    CHECK_EQ_INT(kv_model_find(mf, "output.weight")->type, KV_TYPE_Q8_0);
    kv_model_close(mf);
    int64_t va = 0, vb = 0;
    float *a = kv_test_model_logits(T, out, k_ids, N_IDS, &va, NULL);
    float *b = kv_test_model_logits(T, plain, k_ids, N_IDS, &vb, NULL);
    REQUIRE(a && b && va == vb && va > 0);
    CHECK(!memcmp(a, b, (size_t)N_IDS * (size_t)va * sizeof(float)));
    free(a);
    free(b);

    /* without a rotation the same format keeps its ggml id, and llama.cpp can run the file */
    REQUIRE_OK(quantize_proxy(T, "plain.gguf", "q8_0", NULL, out, sizeof out, &rep, &err), &err);
    CHECK_EQ_INT(rep.llama_cpp_runs, 1);
    CHECK_STR(rep.llama_cpp_why, "");
    REQUIRE_OK(kv_gguf_open(out, &g, &err), &err);
    for (int64_t i = 0; i < kv_gguf_n_tensors(g); i++) CHECK(kv_gguf_tensor_at(g, i)->type < KV_TYPE_KVANT_BASE);
    kv_gguf_close(g);
}

/* A tiny GGUF holding one [4, 32] q8_0 matrix "blk.0.ffn_down.weight" stored under type, with the given
 * format metadata (NULL: none) and, when rotated, its rht keys. */
static kv_status write_one(const char *path, uint32_t type, const char *format, int rotated, kv_error *err) {
    kv_gguf_writer *w = NULL;
    kv_status st = kv_gguf_writer_create(&w, err);
    if (st) return st;
    const char *name = "blk.0.ffn_down.weight";
    uint8_t data[4 * 34 * 2];
    memset(data, 0, sizeof data); /* q8_0: f16 scale 0 + 32 codes per block */
    int64_t shape[2] = {4, 32};
    if (format && !strcmp(format, "int4_g32_sym")) shape[1] = 64; /* some kvant format's rows */
    if (format) st = kv_gguf_writer_add_str(w, "kvant.tensor.blk.0.ffn_down.weight.format", format, err);
    if (!st && rotated) st = kv_gguf_writer_add_u32(w, "kvant.transform.blk.0.ffn_down.weight.rht_block", 32, err);
    if (!st && rotated) st = kv_gguf_writer_add_u64(w, "kvant.transform.blk.0.ffn_down.weight.rht_seed", 7, err);
    if (!st) st = kv_gguf_writer_add_tensor(w, name, 2, shape, type, data, err);
    if (!st) st = kv_gguf_writer_write(w, path, NULL, err);
    kv_gguf_writer_free(w);
    return st;
}

KV_TEST(honest_gguf_1032_needs_a_ggml_format_and_its_rotation) {
    char path[600], msg[1200];
    kv_error err;
    kv_error_clear(&err);
    snprintf(path, sizeof path, "%s/one.gguf", kv_test_tmpdir());
    kv_model_file *mf = NULL;
    /* well formed: read as q8_0 */
    REQUIRE_OK(write_one(path, KV_TYPE_ROTATED, "q8_0", 1, &err), &err);
    REQUIRE_OK(kv_model_open(path, &mf, &err), &err);
    CHECK_EQ_INT(kv_model_find(mf, "blk.0.ffn_down.weight")->type, KV_TYPE_Q8_0);
    CHECK_EQ_INT(kv_model_find(mf, "blk.0.ffn_down.weight")->nbytes, 4 * 34);
    kv_model_close(mf);
    mf = NULL;
    /* no rotation recorded: running it would be wrong, so it is an error naming the key and the tensor */
    REQUIRE_OK(write_one(path, KV_TYPE_ROTATED, "q8_0", 0, &err), &err);
    CHECK_EQ_INT(kv_model_open(path, &mf, &err), KV_EFORMAT);
    kv_error_format(&err, msg, sizeof msg);
    CHECK_MSG(strstr(msg, "rht_block") && strstr(msg, "blk.0.ffn_down.weight") && strstr(msg, "one.gguf"), "%s", msg);
    /* a kvant-only format has its own id: 1032 holds ggml formats only */
    kv_error_clear(&err);
    kv_status st = write_one(path, KV_TYPE_ROTATED, "int4_g32_sym", 1, &err); /* the writer refuses it */
    kv_error_format(&err, msg, sizeof msg);
    CHECK_MSG(st == KV_EINVAL && strstr(msg, "ggml formats only") && strstr(msg, "int4_g32_sym"), "%d: %s", (int)st, msg);
    /* and so does the reader, on a file whose int4 tensor's type field says 1032 */
    kv_error_clear(&err);
    REQUIRE_OK(write_one(path, 1024, "int4_g32_sym", 1, &err), &err);
    kv_gguf *g = NULL;
    REQUIRE_OK(kv_gguf_open(path, &g, &err), &err);
    uint64_t at = type_field_offset(kv_gguf_tensor_at(g, 0));
    kv_gguf_close(g);
    size_t size = 0;
    uint8_t *bytes = kv_test_read_file(path, &size);
    REQUIRE(bytes && at + 4 <= size && bytes[at] == 0x00 && bytes[at + 1] == 0x04);
    bytes[at] = 0x08;
    REQUIRE(kv_test_write_file(path, bytes, size) == 0);
    free(bytes);
    g = NULL;
    st = kv_gguf_open(path, &g, &err);
    kv_error_format(&err, msg, sizeof msg);
    CHECK_MSG(st == KV_EFORMAT && strstr(msg, "ggml formats only") && strstr(msg, "blk.0.ffn_down.weight"), "%d: %s",
              (int)st, msg);
    kv_gguf_close(g);
    /* without a format name it cannot be sized */
    kv_error_clear(&err);
    CHECK(write_one(path, KV_TYPE_ROTATED, NULL, 1, &err) != KV_OK);
}

KV_TEST(honest_gguf_cli_summary_and_convert) {
    char model[512], args[1600], *out = NULL;
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    const char *tmp = kv_test_tmpdir();
    snprintf(args, sizeof args, "quantize %s -o %s/r.gguf --format q4_0 --pure --transform rht --quiet", model, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK_MSG(strstr(out, "llama.cpp: cannot run this file") && strstr(out, "online rotation") && strstr(out, "1032"),
              "%s", out);
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s/r.gguf --format q4_0 --pure --transform rht --quiet --json", model, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK_MSG(strstr(out, "\"llama_cpp_runs\": false") && strstr(out, "\"llama_cpp_why\": \""), "%s", out);
    free(out);
    /* a plain GGUF cannot express the rotation: convert refuses it, naming the tensor */
    snprintf(args, sizeof args, "quantize %s -o %s/t.gguf --transform rht --transform-only --quiet", model, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    free(out);
    snprintf(args, sizeof args, "convert %s/t.gguf -o %s/c.gguf --outtype f16", tmp, tmp);
    CHECK(kv_test_run_cli(args, &out) != 0);
    CHECK_MSG(out && strstr(out, "online rotation") && strstr(out, ".weight"), "%s", out ? out : "");
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s/p.gguf --format q8_0 --act int8 --quiet", model, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK_MSG(strstr(out, "llama.cpp: runs this file (the weights only"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s/k.gguf --format int4_g128_asym --quiet --json", model, tmp);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK_MSG(strstr(out, "\"llama_cpp_runs\": false") && strstr(out, "kvant-only formats"), "%s", out);
    free(out);
}

/* Optional (LLAMA_CPP_DIR with llama-perplexity): llama.cpp refuses the rotated file it used to run unrotated. */
KV_TEST(honest_gguf_llama_cpp_refuses_rotated_file) {
    const char *dir = getenv("LLAMA_CPP_DIR");
    char exe[600], model[512], text[512], cmd[3000];
    if (!dir || !*dir) SKIP("LLAMA_CPP_DIR not set");
    snprintf(exe, sizeof exe, "%s/llama-perplexity", dir);
    if (!kv_test_exists(exe)) SKIP("%.200s not found", exe);
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    kv_test_shared(text, sizeof text, "data/heldout.txt");
    if (!kv_test_exists(model) || !kv_test_exists(text)) SKIP("proxy-27m or heldout.txt not found");
    const char *tmp = kv_test_tmpdir();
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "quantize %s -o %s/r.gguf --format q4_0 --pure --transform rht --quiet", model, tmp);
    REQUIRE(kv_test_run_cli(cmd, &out) == 0);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' -m %s/r.gguf -f '%s' -c 128 --chunks 2 -t 2 > %s/llama.log 2>&1", exe, tmp, text, tmp);
    int rc = system(cmd);
    CHECK_MSG(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) != 0, "llama-perplexity accepted the rotated file");
    char logp[700];
    snprintf(logp, sizeof logp, "%s/llama.log", tmp);
    size_t n = 0;
    char *log = kv_test_read_file(logp, &n);
    CHECK_MSG(log && strstr(log, "invalid ggml type 1032"), "llama.cpp log: %.2000s", log ? log : "(none)");
    free(log);
}
