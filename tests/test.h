/* test.h — kvant's test harness: each test is a function that asserts; tests register themselves, the
 * runner (tests/runner.c) runs each in a child process and prints "N passed, N failed". */
#ifndef KV_TEST_H
#define KV_TEST_H

#include "kvant.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kv_test_ctx {
    const char *name;
    int failures;
    int skipped;
    char skip_reason[256];
} kv_test_ctx;

typedef void (*kv_test_fn)(kv_test_ctx *T);
void kv_test_register(const char *name, const char *file, kv_test_fn fn);

#define KV_TEST(fname)                                                                                  \
    static void fname(kv_test_ctx *T);                                                                  \
    __attribute__((constructor)) static void kv_register_##fname(void) { kv_test_register(#fname, __FILE__, fname); } \
    static void fname(kv_test_ctx *T)

void kv_test_fail(kv_test_ctx *T, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define CHECK(cond) do { if (!(cond)) kv_test_fail(T, __FILE__, __LINE__, "CHECK(%s)", #cond); } while (0)
#define REQUIRE(cond) do { if (!(cond)) { kv_test_fail(T, __FILE__, __LINE__, "REQUIRE(%s)", #cond); return; } } while (0)
#define CHECK_MSG(cond, ...) do { if (!(cond)) kv_test_fail(T, __FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (_a != _b) kv_test_fail(T, __FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, _a, _b); } while (0)
#define CHECK_NEAR(a, b, tol) do { double _a = (double)(a), _b = (double)(b), _t = (double)(tol); \
    if (!(fabs(_a - _b) <= _t)) kv_test_fail(T, __FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (tol %g)", #a, #b, _a, _b, _t); } while (0)
#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); \
    if (!_a || !_b || strcmp(_a, _b)) kv_test_fail(T, __FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, _a ? _a : "(null)", _b ? _b : "(null)"); } while (0)
/* Status check that prints the library's error message on failure. */
#define CHECK_OK(expr, errp) do { kv_status _st = (expr); if (_st != KV_OK) { char _b[1200]; \
    kv_test_fail(T, __FILE__, __LINE__, "%s -> %s", #expr, kv_error_format((errp), _b, sizeof _b)); } } while (0)
#define REQUIRE_OK(expr, errp) do { kv_status _st = (expr); if (_st != KV_OK) { char _b[1200]; \
    kv_test_fail(T, __FILE__, __LINE__, "%s -> %s", #expr, kv_error_format((errp), _b, sizeof _b)); return; } } while (0)
#define SKIP(...) do { T->skipped = 1; snprintf(T->skip_reason, sizeof T->skip_reason, __VA_ARGS__); return; } while (0)

/* Path of a file under ../shared (or $KVANT_SHARED); returns a static-per-call buffer owned by caller. */
const char *kv_test_shared(char *buf, size_t n, const char *rel);
/* 1 if the file exists. */
int kv_test_exists(const char *path);
/* A fresh temporary directory for this test (removed by the runner afterwards). */
const char *kv_test_tmpdir(void);
/* Runs "build/kvant ARGS" (or $KVANT_BIN) through the shell; captures stdout+stderr into *out (malloc'd,
 * caller frees) and returns the exit status (-1 if it did not exit normally). */
int kv_test_run_cli(const char *args, char **out);
/* Reads a whole file into malloc'd memory; NULL on failure. */
/* The token ids of proxy-27m's ref/logits_ids.json ("ids": [...]), at most cap; 0 if absent. */
int kv_test_proxy_ref_ids(int32_t *ids, int cap);
/* The whole file, with a NUL after its last byte (not counted in *size); NULL if unreadable. */
void *kv_test_read_file(const char *path, size_t *size);
int kv_test_write_file(const char *path, const void *data, size_t size);
/* Logits (n_ids x vocab, malloc'd, caller frees) of the model file at path over ids, loaded with lo and with the
 * file's recorded online transforms applied (as eval runs it); on error a test failure naming the file, and NULL. */
float *kv_test_model_logits(kv_test_ctx *T, const char *path, const int32_t *ids, int64_t n_ids, int64_t *vocab,
                            const kv_model_load_opts *lo);

#endif
