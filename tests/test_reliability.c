/* test_reliability.c — regressions of issue 15: memory-safety bugs in error paths, input that used to be
 * silently ignored or silently corrupted, non-regular files, temporary files and signals. Every case must end in
 * a clear message and a non-zero exit (or a warning), never a crash or a partial output. */
#include "test.h"
#include "core/core.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STORIES "../shared/models/stories260K/stories260K.bin"
#define PROXY_GGUF "../shared/models/proxy-27m-gguf/proxy-27m-bf16.gguf"

static const char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", kv_test_tmpdir(), name);
    return buf;
}

/* Runs the CLI and checks exit status and that the output mentions every needle. */
static void expect_cli(kv_test_ctx *T, const char *args, int want_rc, const char *const *needles) {
    char *out = NULL;
    int rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == want_rc, "kvant %s: exit %d (want %d): %s", args, rc, want_rc, out ? out : "");
    for (int i = 0; needles && needles[i]; i++)
        CHECK_MSG(out && strstr(out, needles[i]), "kvant %s: no '%s' in: %s", args, needles[i], out ? out : "");
    CHECK_MSG(!out || !strstr(out, "Sanitizer"), "kvant %s: sanitizer report: %s", args, out);
    free(out);
}
#define EXPECT_CLI(args, rc, ...) expect_cli(T, args, rc, (const char *const[]){__VA_ARGS__, NULL})

/* ---- memory-safety bugs ---------------------------------------------------------------------------- */

KV_TEST(reliability_imatrix_from_model_gguf_is_refused) {
    /* a model GGUF is not an imatrix: the message used to read general.type after closing the file */
    char args[1200];
    EXPECT_CLI("imatrix --show " PROXY_GGUF, 1, "not an imatrix", "general.type is 'model'");
    snprintf(args, sizeof args, "quantize %s -o %s/x.gguf --format q4_0 --imatrix %s", STORIES, kv_test_tmpdir(),
             PROXY_GGUF);
    EXPECT_CLI(args, 1, "not an imatrix");
    kv_imatrix *im = NULL;
    kv_error e;
    kv_error_clear(&e);
    CHECK(kv_imatrix_load(PROXY_GGUF, &im, &e) == KV_EFORMAT);
    CHECK(strstr(e.message, "'model'") != NULL);
    CHECK(im == NULL);
}

KV_TEST(reliability_recipe_bad_out_format_is_reported) {
    /* the recipe's out_format string was printed after the recipe was freed */
    char recipe[600], args[1600];
    tmp_path(recipe, sizeof recipe, "r.json");
    REQUIRE(kv_test_write_file(recipe, "{\"out_format\":\"onnx\"}", 21) == 0);
    snprintf(args, sizeof args, "quantize %s -o %s/x.gguf --recipe %s", STORIES, kv_test_tmpdir(), recipe);
    EXPECT_CLI(args, 2, "not 'onnx'");
}

KV_TEST(reliability_alloc_huge_alphas) {
    /* costs near the top of the double range: the Lagrangian bisection overflowed, picked no candidate and read
     * index -1; the plan must be the same as with the alphas scaled down */
    enum { L = 6, C = 3 };
    double size[L * C], cost[L * C], small[L * C];
    for (int l = 0; l < L; l++)
        for (int c = 0; c < C; c++) {
            size[l * C + c] = 1000.0 * (1 << (2 * c)) * (1 + l % 3);
            small[l * C + c] = (1.0 + l) / (1 << (3 * c));
            cost[l * C + c] = small[l * C + c] * 1e300;
        }
    int a[L], b[L];
    kv_alloc_result ra, rb;
    kv_error e;
    kv_error_clear(&e);
    kv_alloc_problem ps = {L, C, size, small, 60000, 0};
    kv_alloc_problem pb = {L, C, size, cost, 60000, 0};
    REQUIRE_OK(kv_alloc_dp(&ps, a, &ra, &e), &e);
    REQUIRE_OK(kv_alloc_dp(&pb, b, &rb, &e), &e);
    for (int l = 0; l < L; l++) {
        CHECK(b[l] >= 0 && b[l] < C);
        CHECK_EQ_INT(a[l], b[l]);
    }
    CHECK(rb.total_bits <= 60000 && isfinite(rb.total_cost));
}

KV_TEST(reliability_quantize_alloc_huge_alphas_cli) {
    /* the command: every alpha 1e160 with fp4/fp8/f16 at 6 bits exited 0 with an out-of-bounds plan */
    kv_model_file *mf = NULL;
    kv_error e;
    kv_error_clear(&e);
    REQUIRE_OK(kv_model_open(STORIES, &mf, &e), &e);
    kv_model *m = NULL;
    REQUIRE_OK(kv_model_load(mf, NULL, &m, &e), &e);
    const char *fmts[] = {"fp4_e2m1", "fp8_e4m3", "f16"};
    kv_err_table t;
    REQUIRE_OK(kv_err_table_build(m, fmts, 3, 0, 0, 0, 0, NULL, &t, &e), &e);
    kv_sens_result a = {0};
    a.metric = KV_SENS_KLD;
    a.n_layers = t.n_layers;
    a.layers = calloc((size_t)t.n_layers, sizeof *a.layers);
    for (int l = 0; l < t.n_layers; l++) {
        kv_strlcpy(a.layers[l].name, t.names[l], sizeof a.layers[l].name);
        a.layers[l].layer = t.layer[l];
        a.layers[l].which = t.which[l];
        a.layers[l].params = t.params[l];
        a.layers[l].alpha = 1e160 * (1 + l);
        a.layers[l].r2 = 1;
        a.layers[l].done = 1;
    }
    char alphas[600], out[600], args[2000];
    tmp_path(alphas, sizeof alphas, "alphas.json");
    tmp_path(out, sizeof out, "alloc.gguf");
    REQUIRE_OK(kv_sens_save(&a, alphas, &e), &e);
    kv_sens_free(&a);
    kv_err_table_free(&t);
    kv_model_free(m);
    kv_model_close(mf);
    snprintf(args, sizeof args,
             "quantize %s -o %s --bits 6 --allocate linearity --alphas %s --formats fp4_e2m1,fp8_e4m3,f16 --pure "
             "--format f16",
             STORIES, out, alphas);
    EXPECT_CLI(args, 0, "allocation linearity");
    kv_model_file *q = NULL;
    REQUIRE_OK(kv_model_open(out, &q, &e), &e);
    double bits = 0, params = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(q); i++) {
        const kv_tensor *tt = kv_model_tensor(q, i);
        if (strncmp(tt->name, "blk.", 4) || tt->n_dims != 2) continue;
        bits += 8.0 * (double)tt->nbytes;
        params += (double)kv_tensor_nelements(tt);
    }
    CHECK(params > 0 && bits / params <= 6.0 + 1e-9);
    kv_model_close(q);
}

/* ---- non-regular files ------------------------------------------------------------------------------ */

/* A child that keeps trying to open the FIFO for writing: that succeeds only while a reader is blocked in
 * open(), which it then releases (so a regression fails the test instead of hanging it) and records. */
static pid_t fifo_guard(const char *fifo, const char *marker) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    for (;;) {
        usleep(200 * 1000);
        int fd = open(fifo, O_WRONLY | O_NONBLOCK);
        if (fd >= 0) {
            int m = open(marker, O_WRONLY | O_CREAT, 0644);
            if (m >= 0) close(m);
            close(fd);
        }
    }
}

KV_TEST(reliability_fifo_inputs_are_refused) {
    char fifo[600], marker[600], args[2000];
    tmp_path(fifo, sizeof fifo, "in.fifo");
    tmp_path(marker, sizeof marker, "blocked");
    REQUIRE(mkfifo(fifo, 0600) == 0);
    pid_t guard = fifo_guard(fifo, marker);
    REQUIRE(guard > 0);
    const char *cmds[] = {
        "inspect %s",
        "tokenize %s hello",
        "tokenize ../shared/models/proxy-27m --file %s",
        "eval %s --text ../shared/data/heldout.txt",
        "eval " STORIES " --text %s",
        "imatrix --show %s",
        "quantize " STORIES " -o %s.q.gguf --format q4_0 --imatrix %s",
        "quantize %s -o %s.q.gguf --format q4_0",
        "convert %s -o %s.c.gguf",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char *out = NULL;
        snprintf(args, sizeof args, cmds[i], fifo, fifo); /* the second %s (if any): an output next to it */
        int rc = kv_test_run_cli(args, &out);
        CHECK_MSG(rc != 0, "kvant %s: exit 0", args);
        CHECK_MSG(out && strstr(out, "not a regular file (a FIFO)"), "kvant %s: %s", args, out ? out : "");
        free(out);
        CHECK_MSG(!kv_test_exists(marker), "kvant %s blocked in open()", args);
        unlink(marker);
    }
    kill(guard, SIGKILL);
    waitpid(guard, NULL, 0);
    EXPECT_CLI("inspect /dev/zero", 1, "not a regular file (a character device)");
}

/* ---- GGUF hyper-parameters ---------------------------------------------------------------------------- */

typedef struct meta_edit {
    const char *key;    /* replaced (or added) */
    int kind;           /* 0: f32, 1: string */
    float f;
    const char *s;
} meta_edit;

/* Copies src (a GGUF) to dst with the edits applied: keys replaced in place, new ones at the end. */
static kv_status gguf_with_edits(const char *src, const char *dst, const meta_edit *ed, int n, kv_error *e) {
    kv_gguf *g = NULL;
    kv_status st = kv_gguf_open(src, &g, e);
    if (st) return st;
    kv_gguf_writer *w = NULL;
    if ((st = kv_gguf_writer_create(&w, e))) { kv_gguf_close(g); return st; }
    int *used = calloc((size_t)n + 1, sizeof *used);
    for (int64_t i = 0; i < kv_gguf_n_kv(g) && !st; i++) {
        const char *k = kv_gguf_kv_key(g, i);
        int j = 0;
        while (j < n && strcmp(ed[j].key, k)) j++;
        if (j == n) { st = kv_gguf_writer_add_value(w, k, kv_gguf_kv_value(g, i), e); continue; }
        used[j] = 1;
        st = ed[j].kind ? kv_gguf_writer_add_str(w, k, ed[j].s, e) : kv_gguf_writer_add_f32(w, k, ed[j].f, e);
    }
    for (int j = 0; j < n && !st; j++)
        if (!used[j]) st = ed[j].kind ? kv_gguf_writer_add_str(w, ed[j].key, ed[j].s, e)
                                      : kv_gguf_writer_add_f32(w, ed[j].key, ed[j].f, e);
    for (int64_t i = 0; i < kv_gguf_n_tensors(g) && !st; i++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);
        st = kv_gguf_writer_add_tensor(w, t->name, t->n_dims, t->shape, t->type, t->data, e);
    }
    if (!st) st = kv_gguf_writer_write(w, dst, NULL, e);
    free(used);
    kv_gguf_writer_free(w);
    kv_gguf_close(g);
    return st;
}

KV_TEST(reliability_gguf_hparams_are_validated) {
    char base[600], bad[600], args[2000];
    tmp_path(base, sizeof base, "base.gguf");
    tmp_path(bad, sizeof bad, "bad.gguf");
    snprintf(args, sizeof args, "convert %s -o %s --quiet", STORIES, base);
    EXPECT_CLI(args, 0, "");
    kv_error e;
    kv_error_clear(&e);
    const struct { meta_edit ed[2]; int n; const char *needle; } cases[] = {
        {{{"llama.rope.freq_base", 0, INFINITY, NULL}}, 1, "llama.rope.freq_base = inf must be positive and finite"},
        {{{"llama.rope.freq_base", 0, NAN, NULL}}, 1, "llama.rope.freq_base = nan must be positive and finite"},
        {{{"llama.attention.layer_norm_rms_epsilon", 0, INFINITY, NULL}}, 1, "layer_norm_rms_epsilon = inf must be"},
        {{{"llama.attention.layer_norm_rms_epsilon", 0, 0.0f, NULL}}, 1, "layer_norm_rms_epsilon = 0 must be"},
        {{{"llama.rope.scaling.type", 1, 0, "yarn"}}, 1, "\"yarn\": rope scaling type not supported"},
        {{{"llama.rope.scaling.type", 1, 0, "linear"}, {"llama.rope.scaling.factor", 0, 0.0f, NULL}}, 2,
         "llama.rope.scaling.factor = 0 must be positive"},
        {{{"llama.rope.scaling.type", 1, 0, "linear"}, {"llama.rope.scaling.factor", 0, NAN, NULL}}, 2,
         "llama.rope.scaling.factor = nan must be positive"},
        {{{"general.architecture", 1, 0, "falcon"}}, 1, "unsupported architecture 'falcon'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        REQUIRE_OK(gguf_with_edits(base, bad, cases[i].ed, cases[i].n, &e), &e);
        snprintf(args, sizeof args, "eval %s --text ../shared/data/heldout.txt --chunks 1 --ctx 16", bad);
        EXPECT_CLI(args, 1, cases[i].needle);
    }
    /* "none" is llama.cpp's explicit no-scaling and still loads */
    meta_edit none = {"llama.rope.scaling.type", 1, 0, "none"};
    REQUIRE_OK(gguf_with_edits(base, bad, &none, 1, &e), &e);
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    REQUIRE_OK(kv_model_open(bad, &mf, &e), &e);
    CHECK_OK(kv_model_load(mf, NULL, &m, &e), &e);
    kv_model_free(m);
    kv_model_close(mf);
}

/* ---- imatrix files ------------------------------------------------------------------------------------ */

static size_t put_i32(uint8_t *p, int32_t v) { memcpy(p, &v, 4); return 4; }

/* A legacy .dat with n_entries entries of 4 values named blk.I.ffn_up.weight, then the trailer (if trailer). */
static size_t legacy_dat(uint8_t *buf, int32_t count, int n_entries, int trailer) {
    size_t p = put_i32(buf, count);
    for (int i = 0; i < n_entries; i++) {
        char name[64];
        int len = snprintf(name, sizeof name, "blk.%d.ffn_up.weight", i);
        p += put_i32(buf + p, len);
        memcpy(buf + p, name, (size_t)len);
        p += (size_t)len;
        p += put_i32(buf + p, 1);
        p += put_i32(buf + p, 4);
        for (int j = 0; j < 4; j++) { float v = 1.0f + (float)j; memcpy(buf + p, &v, 4); p += 4; }
    }
    if (trailer) {
        p += put_i32(buf + p, 10);
        p += put_i32(buf + p, 9);
        memcpy(buf + p, "calib.txt", 9);
        p += 9;
    }
    return p;
}

KV_TEST(reliability_imatrix_dat_count_must_match) {
    uint8_t buf[8192];
    char path[600];
    tmp_path(path, sizeof path, "im.dat");
    kv_error e;
    kv_error_clear(&e);
    kv_imatrix *im = NULL;
    /* well-formed, with and without the trailer */
    REQUIRE(kv_test_write_file(path, buf, legacy_dat(buf, 35, 35, 1)) == 0);
    REQUIRE_OK(kv_imatrix_load(path, &im, &e), &e);
    CHECK_EQ_INT(kv_imatrix_n_entries(im), 35);
    CHECK_EQ_INT(kv_imatrix_chunks(im), 10);
    kv_imatrix_free(im);
    REQUIRE(kv_test_write_file(path, buf, legacy_dat(buf, 35, 35, 0)) == 0);
    REQUIRE_OK(kv_imatrix_load(path, &im, &e), &e);
    CHECK_EQ_INT(kv_imatrix_n_entries(im), 35);
    kv_imatrix_free(im);
    /* count 1, 35 entries: the other 34 used to be read as a "trailer" and dropped */
    for (int trailer = 0; trailer < 2; trailer++) {
        REQUIRE(kv_test_write_file(path, buf, legacy_dat(buf, 1, 35, trailer)) == 0);
        kv_error_clear(&e);
        CHECK(kv_imatrix_load(path, &im, &e) == KV_EFORMAT);
        CHECK(im == NULL);
        CHECK(strstr(e.message, "not a trailer") != NULL);
        CHECK(e.offset == 4 + 4 + 19 + 4 + 4 + 16); /* right after the first entry */
    }
    /* a trailer whose name runs past the end, or bytes after it */
    size_t n = legacy_dat(buf, 2, 2, 1);
    REQUIRE(kv_test_write_file(path, buf, n - 1) == 0);
    CHECK(kv_imatrix_load(path, &im, &e) == KV_EFORMAT);
    buf[n] = 'x';
    REQUIRE(kv_test_write_file(path, buf, n + 1) == 0);
    CHECK(kv_imatrix_load(path, &im, &e) == KV_EFORMAT);
    char args[1200];
    snprintf(args, sizeof args, "imatrix --show %s", path);
    EXPECT_CLI(args, 1, "not a trailer", path);
}

/* ---- temporary files, signals, output checks ------------------------------------------------------------ */

static const char *kvant_bin(void) {
    const char *b = getenv("KVANT_BIN");
    return b && *b ? b : "build/kvant";
}

/* Is there a file "PREFIX*" in dir? */
static int temp_exists(const char *out) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "ls %s.tmp.* >/dev/null 2>&1", out);
    return system(cmd) == 0;
}

/* Starts argv, stops it (SIGSTOP) as soon as the temp of out exists, then sends sig: the handler must remove the
 * temp and leave no output. A run that committed before it could be stopped is retried. */
static void kill_while_writing(kv_test_ctx *T, const char *out, char *const argv[], int sig) {
    for (int attempt = 0; attempt < 5; attempt++) {
        unlink(out);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            dup2(devnull, 2);
            signal(sig, SIG_DFL); /* a suite started in the background inherits SIGINT ignored, which kvant respects */
            execv(kvant_bin(), argv);
            _exit(127);
        }
        int seen = 0, st = 0, exited = 0;
        for (int i = 0; i < 120000 && !seen && !exited; i++) { /* up to 10 minutes under sanitizers */
            seen = temp_exists(out);
            if (!seen) {
                usleep(5 * 1000);
                exited = waitpid(pid, &st, WNOHANG) == pid;
            }
        }
        if (exited) continue; /* finished between two polls */
        kill(pid, SIGSTOP);
        waitpid(pid, &st, WUNTRACED);
        if (!temp_exists(out)) { /* committed already: let it finish and try again */
            kill(pid, SIGCONT);
            waitpid(pid, &st, 0);
            continue;
        }
        kill(pid, sig);
        kill(pid, SIGCONT);
        waitpid(pid, &st, 0);
        CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == sig, "not killed by signal %d (status %d)", sig, st);
        CHECK_MSG(!temp_exists(out), "a temp of %s is left after signal %d", out, sig);
        CHECK_MSG(!kv_test_exists(out), "%s exists after signal %d", out, sig);
        return;
    }
    CHECK_MSG(0, "could not catch %s while its temp existed", out);
}

KV_TEST(reliability_signal_removes_temp_files) {
    char out[600], logits[600];
    tmp_path(out, sizeof out, "q.gguf");
    tmp_path(logits, sizeof logits, "base.logits");
    char *qargv[] = {(char *)kvant_bin(), "quantize", "../shared/models/proxy-27m", "-o", out, "--format", "q4_k_m",
                     "--quiet", "-t", "1", NULL};
    kill_while_writing(T, out, qargv, SIGTERM);
    char *eargv[] = {(char *)kvant_bin(), "eval", "../shared/models/proxy-27m", "--text", "../shared/data/heldout.txt",
                     "--ctx", "64", "--save-logits", logits, "--quiet", "-t", "1", NULL};
    kill_while_writing(T, logits, eargv, SIGINT);
}

KV_TEST(reliability_stale_temps_are_cleaned) {
    char out[600], dead[700], old[700], live[700], other[700], args[2000];
    tmp_path(out, sizeof out, "s.gguf");
    pid_t child = fork(); /* a pid that is surely gone once reaped */
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    snprintf(dead, sizeof dead, "%s.tmp.%ld", out, (long)child);
    snprintf(old, sizeof old, "%s.tmp.Ab3xYz", out);      /* an older binary's mkstemp name */
    snprintf(live, sizeof live, "%s.tmp.%ld", out, (long)getpid()); /* a running process's temp */
    snprintf(other, sizeof other, "%s/t.gguf.tmp.Zz9yXw", kv_test_tmpdir()); /* another output's */
    const char *all[] = {dead, old, live, other};
    for (int i = 0; i < 4; i++) REQUIRE(kv_test_write_file(all[i], "x", 1) == 0);
    snprintf(args, sizeof args, "touch -d '2 hours ago' %s %s", old, other);
    REQUIRE(system(args) == 0);
    snprintf(args, sizeof args, "convert %s -o %s --quiet", STORIES, out);
    EXPECT_CLI(args, 0, "");
    CHECK(kv_test_exists(out));
    CHECK(!kv_test_exists(dead));
    CHECK(!kv_test_exists(old));
    CHECK(kv_test_exists(live));
    CHECK(kv_test_exists(other));
}

KV_TEST(reliability_file_size_limit_is_reported) {
    /* SIGXFSZ used to kill kvant without a word; now the write fails with "File too large" */
    char out[600], cmd[2000];
    tmp_path(out, sizeof out, "big.gguf");
    snprintf(cmd, sizeof cmd, "ulimit -f 64 && %s convert %s -o %s --quiet 2>&1; echo \"rc=$?\"", kvant_bin(), STORIES,
             out);
    FILE *p = popen(cmd, "r");
    REQUIRE(p);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    pclose(p);
    CHECK_MSG(strstr(buf, "File too large") && strstr(buf, "rc=1"), "%s", buf);
    CHECK_MSG(strstr(buf, out) != NULL, "the message names the file: %s", buf);
    CHECK(!kv_test_exists(out));
    CHECK(!temp_exists(out));
}

KV_TEST(reliability_unwritable_outputs_fail_before_the_work) {
    char dir[600], args[2400];
    tmp_path(dir, sizeof dir, "ro");
    REQUIRE(mkdir(dir, 0555) == 0);
    /* root ignores directory permissions: use a directory nobody can create files in */
    const char *ro = geteuid() == 0 ? "/proc/self" : dir;
    const char *cmds[] = {
        "eval " STORIES " --text ../shared/data/heldout.txt --save-logits %s/x.logits",
        "imatrix ../shared/models/proxy-27m --calib ../shared/data/calib.txt -o %s/x.dat",
        "sensitivity ../shared/models/proxy-27m --text ../shared/data/calib.txt -o %s/a.json",
        "convert " STORIES " -o %s/x.gguf",
        "formats quantize --format q4_0 --row 32 --in " STORIES " --out %s/x.bin",
        "quantize ../shared/models/proxy-27m -o %s/x.gguf --method gptq --calib ../shared/data/calib.txt",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        snprintf(args, sizeof args, cmds[i], ro);
        EXPECT_CLI(args, 1, "cannot create the output file in", ro);
    }
    /* an output that exists as a directory or device is refused before anything is written */
    snprintf(args, sizeof args, "convert %s -o %s", STORIES, dir);
    EXPECT_CLI(args, 2, "output exists and is a directory");
    snprintf(args, sizeof args, "convert %s -o /dev/null", STORIES);
    EXPECT_CLI(args, 2, "output exists and is a character device");
}

/* ---- logits files --------------------------------------------------------------------------------------- */

#define PROXY "../shared/models/proxy-27m"

KV_TEST(reliability_eval_base_logits_must_match) {
    char lg[600], out[600], args[2400];
    tmp_path(lg, sizeof lg, "base.logits");
    tmp_path(out, sizeof out, "q.gguf");
    /* logits of another text */
    snprintf(args, sizeof args, "eval %s --text ../shared/data/calib.txt --ctx 32 --chunks 2 --save-logits %s --quiet",
             PROXY, lg);
    EXPECT_CLI(args, 0, "");
    snprintf(args, sizeof args,
             "quantize %s -o %s --format q8_0 --quiet --eval ../shared/data/heldout.txt --ctx 32 --chunks 2 "
             "--eval-base-logits %s", PROXY, out, lg);
    EXPECT_CLI(args, 1, "made from other tokens", lg);
    CHECK(!kv_test_exists(out)); /* refused before the work */
    /* the right text with another ctx, then with the same: accepted */
    snprintf(args, sizeof args, "eval %s --text ../shared/data/heldout.txt --ctx 32 --chunks 2 --save-logits %s --quiet",
             PROXY, lg);
    EXPECT_CLI(args, 0, "");
    snprintf(args, sizeof args,
             "quantize %s -o %s --format q8_0 --quiet --eval ../shared/data/heldout.txt --ctx 64 --chunks 2 "
             "--eval-base-logits %s", PROXY, out, lg);
    EXPECT_CLI(args, 1, "ctx 32", "ctx 64");
    snprintf(args, sizeof args,
             "quantize %s -o %s --format q8_0 --quiet --eval ../shared/data/heldout.txt --ctx 32 --chunks 2 "
             "--eval-base-logits %s", PROXY, out, lg);
    EXPECT_CLI(args, 0, "");
}

KV_TEST(reliability_logits_nan_records_are_refused) {
    char lg[600], bad[600], args[2400];
    tmp_path(lg, sizeof lg, "base.logits");
    tmp_path(bad, sizeof bad, "bad.logits");
    snprintf(args, sizeof args, "eval %s --text ../shared/data/heldout.txt --ctx 16 --chunks 1 --save-logits %s --quiet",
             PROXY, lg);
    EXPECT_CLI(args, 0, "");
    size_t n = 0;
    uint8_t *d = kv_test_read_file(lg, &n);
    REQUIRE(d && n > 64);
    int64_t n_ids = (int64_t)kv_rd_u64(d + 16), V = kv_rd_u32(d + 12);
    size_t rec0 = 64 + 4 * (size_t)n_ids, recb = kv_rd_u32(d + 56);
    size_t row = rec0 + 8 + 8 * (size_t)(V < 32 ? V : 32);
    const struct { size_t at; int width; uint32_t v; } cases[] = {
        {rec0 + recb + row - rec0 + 2 * 5, 2, 0x7E00},  /* NaN in token 1's fp16 row */
        {rec0 + row - rec0 + 2 * 7, 2, 0x7C00},         /* +inf */
        {rec0, 4, 0x7FC00000},                          /* NaN log-prob of the correct token */
        {rec0 + 12, 4, 0x7F800000},                     /* +inf top-1 log-prob */
        {rec0 + 8, 4, 0xFFFFFFF0u},                     /* top-1 id out of the vocabulary */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *c = malloc(n);
        memcpy(c, d, n);
        if (cases[i].width == 2) kv_wr_u16(c + cases[i].at, (uint16_t)cases[i].v);
        else kv_wr_u32(c + cases[i].at, cases[i].v);
        REQUIRE(kv_test_write_file(bad, c, n) == 0);
        free(c);
        snprintf(args, sizeof args, "eval %s --text ../shared/data/heldout.txt --ctx 16 --chunks 1 --kld %s", PROXY, bad);
        char off[64];
        snprintf(off, sizeof off, "offset %zu", cases[i].at);
        EXPECT_CLI(args, 1, "not a valid kvant logits file: scored token", off, bad);
    }
    free(d);
}

/* ---- imatrix entries that do not fit the model; options without effect ------------------------------------ */

static void save_imatrix(kv_test_ctx *T, const char *path, const char *name, int64_t dim) {
    kv_imatrix *im = NULL;
    kv_error e;
    kv_error_clear(&e);
    REQUIRE_OK(kv_imatrix_create(&im, &e), &e);
    float x[2 * 512];
    for (int i = 0; i < 2 * 512; i++) x[i] = 0.5f + (float)(i % 7);
    CHECK_OK(kv_imatrix_accumulate(im, "blk.0.attn_q.weight", x, 2, 64, &e), &e);
    CHECK_OK(kv_imatrix_accumulate(im, name, x, 2, dim, &e), &e);
    kv_imatrix_end_chunk(im);
    CHECK_OK(kv_imatrix_save(im, path, &e), &e);
    kv_imatrix_free(im);
}

KV_TEST(reliability_imatrix_must_fit_the_model) {
    char im[600], out[600], args[2000];
    tmp_path(out, sizeof out, "q.gguf");
    const struct { const char *file, *name; int64_t dim; const char *needle; } cases[] = {
        {"size.dat", "blk.1.ffn_down.weight", 64, "imatrix entry 'blk.1.ffn_down.weight' has 64 values, the tensor has 172"},
        {"other.dat", "blk.31.ffn_up.weight", 64, "imatrix entry 'blk.31.ffn_up.weight' names no matrix of this model"},
        {"size.gguf", "blk.2.attn_k.weight", 128, "imatrix entry 'blk.2.attn_k.weight' has 128 values"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tmp_path(im, sizeof im, cases[i].file);
        save_imatrix(T, im, cases[i].name, cases[i].dim);
        snprintf(args, sizeof args, "quantize %s -o %s --format q4_k --imatrix %s", STORIES, out, im);
        EXPECT_CLI(args, 2, cases[i].needle, im);
        CHECK(!kv_test_exists(out));
    }
    tmp_path(im, sizeof im, "ok.dat"); /* a fitting one is used */
    save_imatrix(T, im, "blk.1.ffn_down.weight", 172);
    snprintf(args, sizeof args, "quantize %s -o %s --format q4_0 --imatrix %s", STORIES, out, im);
    EXPECT_CLI(args, 0, "");
}

KV_TEST(reliability_format_importance_flag_matches_the_quantizers) {
    /* kv_format_uses_importance must tell the truth: formats that say 0 give the same bytes with any importance */
    static const char *const names[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k",
                                        "q6_k", "iq4_nl", "iq4_xs", "mxfp4", "int4_g128_asym", "int4_g128_asym_mse",
                                        "int3_g64_sym", "fp8_e4m3", "fp4_e2m1", "mxfp4_ocp", "mxfp6_e2m3_ps",
                                        "nvfp4_ts", "nf4", "af4", "nf4_dq", "higgs_p1_b4", "higgs_p2_b2", "e8_b2"};
    enum { N = 512, R = 2 };
    float *w = malloc(R * N * sizeof(float)), imp1[N], imp2[N];
    kv_rng r;
    kv_rng_seed(&r, 3);
    for (int i = 0; i < R * N; i++) w[i] = (float)kv_rng_normal(&r) * (i % 17 == 0 ? 4.0f : 1.0f);
    for (int i = 0; i < N; i++) {
        imp1[i] = 1.0f;
        imp2[i] = (float)(0.01 + 100.0 * kv_rng_uniform(&r) * kv_rng_uniform(&r));
    }
    kv_error e;
    kv_error_clear(&e);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        kv_format f;
        REQUIRE_OK(kv_format_get(names[k], &f, &e), &e);
        size_t rb = kv_format_row_bytes(&f, N);
        uint8_t *a = calloc(R, rb), *b = calloc(R, rb), *c = calloc(R, rb);
        CHECK_OK(f.quantize(&f, w, a, R, N, NULL, &e), &e);
        CHECK_OK(f.quantize(&f, w, b, R, N, imp1, &e), &e);
        CHECK_OK(f.quantize(&f, w, c, R, N, imp2, &e), &e);
        int same = !memcmp(a, c, R * rb) && !memcmp(b, c, R * rb);
        CHECK_MSG(same == !kv_format_uses_importance(&f), "%s: uses_importance %d but bytes %s with importance",
                  names[k], kv_format_uses_importance(&f), same ? "unchanged" : "changed");
        free(a), free(b), free(c);
    }
    free(w);
}

KV_TEST(reliability_ignored_options_warn_once) {
    char im[600], out[600], args[2400];
    tmp_path(im, sizeof im, "im.dat");
    tmp_path(out, sizeof out, "q.gguf");
    save_imatrix(T, im, "blk.1.ffn_up.weight", 64);
    snprintf(args, sizeof args, "quantize %s -o %s --format int4_g32_asym --pure --imatrix %s", STORIES, out, im);
    EXPECT_CLI(args, 0, "warning: --imatrix has no effect: int4_g32_asym rounds without importance");
    snprintf(args, sizeof args, "quantize %s -o %s --format q4_0 --override blk.1.ffn_up=nf4 --imatrix %s", STORIES, out, im);
    EXPECT_CLI(args, 0, "warning: --imatrix is ignored by 1 tensor in nf4 (blk.1.ffn_up.weight), which rounds without importance; 1 tensor uses it");
    snprintf(args, sizeof args, "quantize %s -o %s --format q8_0 --transform rht --override 'nosuch=q4_0'", STORIES, out);
    EXPECT_CLI(args, 0, "rht:512: input width 172 is not a multiple of 512: 5 tensors",
               "rotated in blocks of 4 instead (too small to spread outliers)",
               "rht:512: input width 64 is not a multiple of 512: 30 tensors",
               "warning: --override 'nosuch=q4_0' matches no quantizable tensor");
    /* gptq on E8 used to be round-to-nearest with a note per tensor; now one warning before the calibration */
    char *log = NULL;
    snprintf(args, sizeof args, "quantize %s -o %s --format q8_0 --override attn_v=e8_b2 --method gptq --calib "
             "../shared/data/calib.txt --calib-tokens 64 -t 2", PROXY, out);
    int rc = kv_test_run_cli(args, &log);
    CHECK_MSG(rc == 0, "%s", log);
    const char *wmsg = "warning: --method gptq cannot error-compensate e8_b2";
    const char *at = log ? strstr(log, wmsg) : NULL;
    CHECK_MSG(at && !strstr(at + 1, wmsg), "%s", log);
    CHECK(log && strstr(log, "its 6 tensors (blk.0.attn_v.weight") != NULL);
    CHECK(log && !strstr(log, "rounded to nearest instead)\n")); /* no per-tensor notes */
    free(log);
}
