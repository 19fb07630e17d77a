/* runner.c — runs every registered test in its own child process (a crash fails one test, not the run)
 * and prints the closing line "N passed, N failed" (", N skipped" when some were skipped).
 * Usage: kvant_test [--list] [--no-fork] [SUBSTRING ...] */
#include "test.h"
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { const char *name; const char *file; kv_test_fn fn; } test_entry;

/* Test registration happens in constructors before main: the one place kvant keeps a mutable list. */
static test_entry g_tests[4096];
static int g_ntests;
static char g_tmpdir[512];

void kv_test_register(const char *name, const char *file, kv_test_fn fn) {
    if (g_ntests < (int)(sizeof g_tests / sizeof g_tests[0])) g_tests[g_ntests++] = (test_entry){name, file, fn};
}

void kv_test_fail(kv_test_ctx *T, const char *file, int line, const char *fmt, ...) {
    T->failures++;
    if (T->failures > 20) return;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

const char *kv_test_shared(char *buf, size_t n, const char *rel) {
    const char *root = getenv("KVANT_SHARED");
    snprintf(buf, n, "%s/%s", root && *root ? root : "../shared", rel);
    return buf;
}

int kv_test_exists(const char *path) { struct stat sb; return stat(path, &sb) == 0; }

const char *kv_test_tmpdir(void) { return g_tmpdir; }

int kv_test_run_cli(const char *args, char **out) {
    const char *bin = getenv("KVANT_BIN");
    size_t cap = strlen(args) + 1024;
    char *cmd = malloc(cap);
    snprintf(cmd, cap, "%s %s 2>&1", bin && *bin ? bin : "build/kvant", args);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p) { if (out) *out = strdup(""); return -1; }
    size_t len = 0, sz = 4096;
    char *buf = malloc(sz);
    size_t r;
    while ((r = fread(buf + len, 1, sz - len - 1, p)) > 0) {
        len += r;
        if (sz - len < 2) { sz *= 2; buf = realloc(buf, sz); }
    }
    buf[len] = 0;
    int st = pclose(p);
    if (out) *out = buf; else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void *kv_test_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) { fclose(f); return NULL; }
    /* one NUL past the end, so text files can be searched with the str* functions */
    char *buf = malloc((size_t)n + 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = '\0';
    fclose(f);
    if (buf && size) *size = (size_t)n;
    return buf;
}

int kv_test_proxy_ref_ids(int32_t *ids, int cap) {
    char path[512];
    size_t n = 0;
    char *s = kv_test_read_file(kv_test_shared(path, sizeof path, "models/proxy-27m/ref/logits_ids.json"), &n);
    if (!s) return 0;
    char *p = strstr(s, "\"ids\"");
    int count = 0;
    if (p && (p = strchr(p, '['))) {
        p++;
        while (count < cap) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            ids[count++] = (int32_t)v;
            p = end;
            while (*p == ' ' || *p == ',' || *p == '\n') p++;
            if (*p == ']') break;
        }
    }
    free(s);
    return count;
}

int kv_test_write_file(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, size, f) == size;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

float *kv_test_model_logits(kv_test_ctx *T, const char *path, const int32_t *ids, int64_t n_ids, int64_t *vocab,
                            const kv_model_load_opts *lo) {
    kv_error err = {0};
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    kv_context *c = NULL;
    float *lg = NULL;
    kv_status st = kv_model_open(path, &mf, &err);
    if (!st) st = kv_model_load(mf, lo, &m, &err);
    if (!st) st = kv_model_apply_transforms(m, mf, &err); /* as eval does: the file's online rotations */
    if (!st) st = kv_context_create(m, n_ids, &c, &err);
    if (!st) {
        *vocab = kv_model_get_hparams(m)->n_vocab;
        lg = malloc((size_t)(n_ids * *vocab) * sizeof(float));
        st = lg ? kv_forward(c, ids, n_ids, 0, lg, 0, NULL, &err) : KV_ENOMEM;
    }
    if (st) {
        char b[1200];
        kv_test_fail(T, __FILE__, __LINE__, "logits of %s: %s", path, kv_error_format(&err, b, sizeof b));
        free(lg);
        lg = NULL;
    }
    kv_context_free(c);
    kv_model_free(m);
    kv_model_close(mf);
    return lg;
}

static int matches(const char *name, const char *file, int argc, char **argv, int first) {
    if (first >= argc) return 1;
    for (int i = first; i < argc; i++)
        if (strstr(name, argv[i]) || strstr(file, argv[i])) return 1;
    return 0;
}

static void make_tmpdir(const char *name) {
    const char *base = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/kvant-test-%s-XXXXXX", base && *base ? base : "/tmp", name);
    if (!mkdtemp(g_tmpdir)) snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp");
}

static void remove_tmpdir(void) {
    if (strncmp(g_tmpdir, "/tmp/", 5) && !strstr(g_tmpdir, "/kvant-test-")) return;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmpdir);
}

/* 0 pass, 1 fail, 2 skip */
static int run_one(const test_entry *t, int use_fork) {
    make_tmpdir(t->name);
    int result;
    if (!use_fork) {
        kv_test_ctx T = {.name = t->name};
        t->fn(&T);
        result = T.failures ? 1 : T.skipped ? 2 : 0;
        if (T.skipped && !T.failures) printf("  skip %s: %s\n", t->name, T.skip_reason);
    } else {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
            kv_test_ctx T = {.name = t->name};
            t->fn(&T);
            if (T.skipped && !T.failures) printf("  skip %s: %s\n", t->name, T.skip_reason);
            fflush(stdout);
            fflush(stderr);
            _exit(T.failures ? 1 : T.skipped ? 2 : 0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st)) result = WEXITSTATUS(st) <= 2 ? WEXITSTATUS(st) : 1;
        else {
            fprintf(stderr, "    crashed with signal %d\n", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
            result = 1;
        }
    }
    remove_tmpdir();
    return result;
}

/* OpenBLAS picks its kernels by CPU when it is loaded, and GPTQ/WaterSIC's Hessians then round differently from
 * one machine to the next: the golden hashes of the calibrated methods were recorded with its portable SSE3
 * kernels (Prescott), so the suite pins them unless OPENBLAS_CORETYPE is given (the variable is read only at
 * load time, hence the re-exec). */
static void pin_openblas_kernels(char **argv) {
#ifdef KV_HAVE_OPENBLAS
    if (getenv("OPENBLAS_CORETYPE")) return;
    setenv("OPENBLAS_CORETYPE", "Prescott", 1);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "kvant_test: could not re-run with OPENBLAS_CORETYPE=Prescott; golden hashes of calibrated "
                    "methods may differ on this CPU\n");
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    pin_openblas_kernels(argv);
    int use_fork = 1, list = 0, first = 1;
    while (first < argc && argv[first][0] == '-') {
        if (!strcmp(argv[first], "--no-fork")) use_fork = 0;
        else if (!strcmp(argv[first], "--list")) list = 1;
        else { fprintf(stderr, "usage: %s [--list] [--no-fork] [FILTER ...]\n", argv[0]); return 2; }
        first++;
    }
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < g_ntests; i++) {
        const test_entry *t = &g_tests[i];
        if (!matches(t->name, t->file, argc, argv, first)) continue;
        if (list) { printf("%s (%s)\n", t->name, t->file); continue; }
        double t0 = kv_now_seconds();
        int r = run_one(t, use_fork);
        double dt = kv_now_seconds() - t0;
        if (r == 0) { passed++; printf("  ok   %-48s %.2fs\n", t->name, dt); }
        else if (r == 2) skipped++;
        else { failed++; printf("  FAIL %-48s %.2fs  (%s)\n", t->name, dt, t->file); }
        fflush(stdout);
    }
    if (list) return 0;
    if (skipped) printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    else printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
