/* test_study.c — `kvant study` (src/eval/study*.c): the spec is validated whole before any work (unknown keys,
 * names, files, missing calibration or alphas, duplicate cells) and nothing is written when it fails; a run on
 * proxy-27m writes the base and every cell to results.jsonl / .csv / .json with sensible numbers; a cut last line
 * is dropped and finished cells are skipped when the spec grows; a run killed with SIGKILL resumes without
 * repeating a finished cell; the report has its tables and plots. */
#include "test.h"
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROXY "models/proxy-27m"

static int count_lines(const char *path) {
    size_t n = 0;
    char *s = kv_test_read_file(path, &n);
    if (!s) return -1;
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    free(s);
    return k;
}

/* Writes a spec naming proxy-27m and heldout.txt with the given cells part ("matrix": ... / "cells": ...). */
static int write_spec(const char *path, const char *out, const char *extra, const char *tasks) {
    char model[512], text[512], calib[512];
    kv_test_shared(model, sizeof model, PROXY);
    kv_test_shared(text, sizeof text, "data/heldout.txt");
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"name\": \"t\", \"model\": \"%s\", \"out\": \"%s\",\n"
             " \"eval\": {\"text\": \"%s\", \"ctx\": 64, \"chunks\": 2%s%s%s},\n"
             " \"calib\": \"%s\", \"calib_tokens\": 512, \"threads\": 2,\n %s}\n",
             model, out, text, tasks ? ", \"task_limit\": 4, \"tasks\": [\"" : "", tasks ? tasks : "", tasks ? "\"]" : "", calib, extra);
    return kv_test_write_file(path, buf, strlen(buf));
}

KV_TEST(study_spec_validated_before_any_work) {
    char model[512];
    kv_test_shared(model, sizeof model, PROXY);
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    static const struct { const char *extra, *msg; } bad[] = {
        {"\"matrix\": {\"formats\": [\"q4_k\"], \"colour\": 1}", "unknown key \"colour\""},
        {"\"matrix\": {\"formats\": [\"q4_kk\"]}", "q4_kk"},
        {"\"matrix\": {\"formats\": [\"q4_k\"], \"methods\": [\"gptqq\"]}", "unknown method \"gptqq\""},
        {"\"matrix\": {\"formats\": [\"q4_k\"], \"transforms\": [\"rht:7\"]}", "rht"},
        {"\"matrix\": {\"formats\": [\"q4_k\"], \"acts\": [\"int7\"]}", "int7"},
        {"\"cells\": [{\"format\": \"q4_k\", \"bits\": 3}]", "\"bits\" needs \"candidates\""},
        {"\"cells\": [{\"format\": \"q4_k\", \"bits\": 3, \"candidates\": [\"q3_k\", \"q4_k\"]}]", "needs \"alphas\""},
        {"\"cells\": [{\"format\": \"q4_k\"}, {\"format\": \"q4_k\", \"label\": \"again\"}]", "same recipe"},
        {"\"cells\": [{\"format\": \"q4_k\", \"overrides\": [\"token_embd=q9\"]}]", "override"},
        {"\"cells\": []", "names no cell"},
        {"\"llama_cpp\": {\"model\": \"/nonexistent.gguf\", \"types\": [\"q4_k_m\"]}", "does not exist"},
        {"\"llama_cpp\": {\"model\": \"%s\", \"types\": [\"q4_k_mm\"]}", "unknown type"},
    };
    char spec[600], out[600];
    snprintf(out, sizeof out, "%s/out", kv_test_tmpdir());
    snprintf(spec, sizeof spec, "%s/s.json", kv_test_tmpdir());
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char extra[1200];
        snprintf(extra, sizeof extra, bad[i].extra, model);
        REQUIRE(write_spec(spec, out, extra, NULL) == 0);
        kv_study *s = NULL;
        kv_error err = {0};
        kv_status st = kv_study_load(spec, &s, &err);
        CHECK_MSG(st != KV_OK, "case %zu accepted", i);
        CHECK_MSG(strstr(err.message, bad[i].msg) != NULL, "case %zu: '%s' lacks '%s'", i, err.message, bad[i].msg);
        kv_study_free(s);
    }
    /* gptq without calibration, through the CLI: exit non-zero, nothing created */
    char buf[2048], text[512], cmd[1400], *o = NULL;
    kv_test_shared(text, sizeof text, "data/heldout.txt");
    snprintf(buf, sizeof buf, "{\"name\": \"t\", \"model\": \"%s\", \"out\": \"%s\", \"eval\": {\"text\": \"%s\"},"
             " \"matrix\": {\"methods\": [\"gptq\"], \"formats\": [\"q4_k\"]}}", model, out, text);
    REQUIRE(kv_test_write_file(spec, buf, strlen(buf)) == 0);
    snprintf(cmd, sizeof cmd, "study %s", spec);
    int rc = kv_test_run_cli(cmd, &o);
    CHECK(rc != 0);
    CHECK_MSG(o && strstr(o, "needs calibration text"), "%s", o ? o : "");
    free(o);
    CHECK(!kv_test_exists(out));
    /* a JSON syntax error names the offset */
    REQUIRE(kv_test_write_file(spec, "{\"name\": ", 9) == 0);
    rc = kv_test_run_cli(cmd, &o);
    CHECK(rc != 0);
    free(o);
}

static void make_tasks(const char *path) {
    char text[512];
    kv_test_shared(text, sizeof text, "data/heldout.txt");
    size_t n = 0;
    char *t = kv_test_read_file(text, &n);
    kv_taskset *ts = NULL;
    kv_error err = {0};
    if (t && kv_tasks_make(t, n, KV_TASKS_CLOZE, 8, 4, 1, "cloze", &ts, &err) == KV_OK) kv_tasks_save(ts, path, &err);
    kv_tasks_free(ts);
    free(t);
}

KV_TEST(study_runs_resumes_and_reports) {
    char model[512];
    kv_test_shared(model, sizeof model, PROXY);
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    char spec[600], out[600], tasks[600], p[700], cmd[1600], rep[600], *o = NULL;
    snprintf(out, sizeof out, "%s/out", kv_test_tmpdir());
    snprintf(spec, sizeof spec, "%s/s.json", kv_test_tmpdir());
    snprintf(tasks, sizeof tasks, "%s/cloze.jsonl", kv_test_tmpdir());
    snprintf(rep, sizeof rep, "%s/report", kv_test_tmpdir());
    make_tasks(tasks);
    REQUIRE(write_spec(spec, out, "\"matrix\": {\"formats\": [\"q8_0\", \"q4_0\"], \"pure\": true}", tasks) == 0);
    snprintf(cmd, sizeof cmd, "study %s --json --quiet", spec);
    int rc = kv_test_run_cli(cmd, &o);
    REQUIRE(rc == 0 && o);
    CHECK(strstr(o, "\"run\": 2") != NULL);
    CHECK(strstr(o, "\"already_done\": 0") != NULL);
    free(o);
    snprintf(p, sizeof p, "%s/results.jsonl", out);
    CHECK_EQ_INT(count_lines(p), 3); /* base + 2 cells */
    snprintf(p, sizeof p, "%s/results.csv", out);
    CHECK_EQ_INT(count_lines(p), 4); /* header + 3 */
    kv_study *s = NULL;
    kv_error err = {0};
    REQUIRE_OK(kv_study_load(spec, &s, &err), &err);
    kv_study_row *rows = NULL;
    int64_t n = 0;
    REQUIRE_OK(kv_study_rows(s, &rows, &n, &err), &err);
    REQUIRE(n == 3);
    CHECK_STR(rows[0].kind, "base");
    CHECK_NEAR(rows[0].bpw, 16.0, 1e-9);
    CHECK_NEAR(rows[1].bpw, 8.5, 0.02); /* pure q8_0: every tensor (norms stay f32) */
    CHECK(rows[1].kld > 0 && rows[2].kld > rows[1].kld);
    CHECK(rows[2].bpw < rows[1].bpw);
    CHECK(rows[1].n_tasks == 1 && isfinite(rows[1].acc[0]) && isfinite(rows[1].recovery));
    CHECK(rows[1].top1 > 90 && rows[1].top1 <= 100);
    free(rows);
    kv_study_free(s);
    /* a cut line (a kill in the middle of a write) and a grown spec: only the new cell runs */
    snprintf(p, sizeof p, "%s/results.jsonl", out);
    FILE *f = fopen(p, "a");
    REQUIRE(f);
    fputs("{\"id\": \"0123456789abcdef\", \"label\": \"half", f);
    fclose(f);
    REQUIRE(write_spec(spec, out, "\"matrix\": {\"formats\": [\"q8_0\", \"q4_0\", \"q5_0\"], \"pure\": true}", tasks) == 0);
    rc = kv_test_run_cli(cmd, &o);
    REQUIRE(rc == 0 && o);
    CHECK_MSG(strstr(o, "\"run\": 1") && strstr(o, "\"already_done\": 2"), "%s", o);
    free(o);
    CHECK_EQ_INT(count_lines(p), 4);
    size_t sz = 0;
    char *j = kv_test_read_file(p, &sz);
    CHECK(j && !strstr(j, "half"));
    free(j);
    /* the report */
    snprintf(cmd, sizeof cmd, "study %s --no-run --report %s --quiet", spec, rep);
    rc = kv_test_run_cli(cmd, &o);
    CHECK_MSG(rc == 0, "%s", o ? o : "");
    free(o);
    snprintf(p, sizeof p, "%s/report.md", rep);
    char *md = kv_test_read_file(p, &sz);
    REQUIRE(md);
    CHECK(strstr(md, "## Results") && strstr(md, "## Pareto front") && strstr(md, "pareto_kld.png"));
    CHECK(strstr(md, "| base (unquantized) |") && strstr(md, "rtn q5_0 pure"));
    CHECK(strstr(md, "## Recovery") && strstr(md, "## Per-tensor rate"));
    free(md);
    static const char *const files[] = {"pareto_kld.png", "pareto_kld.svg", "pareto_ppl.png", "recovery.png", "layer_gap.svg"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", rep, files[i]);
        char *b = kv_test_read_file(p, &sz);
        CHECK_MSG(b && sz > 100, "%s missing", files[i]);
        if (b && strstr(files[i], ".png")) CHECK(!memcmp(b, "\x89PNG", 4));
        free(b);
    }
    /* --list marks what is done */
    snprintf(cmd, sizeof cmd, "study %s --list", spec);
    rc = kv_test_run_cli(cmd, &o);
    CHECK(rc == 0 && o && strstr(o, "done") && strstr(o, "rtn q5_0 pure"));
    free(o);
}

KV_TEST(study_resumes_after_sigkill) {
    char model[512];
    kv_test_shared(model, sizeof model, PROXY);
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    char spec[600], out[600], p[700], cmd[1600], *o = NULL;
    snprintf(out, sizeof out, "%s/out", kv_test_tmpdir());
    snprintf(spec, sizeof spec, "%s/s.json", kv_test_tmpdir());
    REQUIRE(write_spec(spec, out, "\"matrix\": {\"formats\": [\"q8_0\", \"q4_0\", \"q5_0\", \"q4_1\"], \"pure\": true}", NULL) == 0);
    const char *bin = getenv("KVANT_BIN");
    if (!bin || !*bin) bin = "build/kvant";
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl(bin, bin, "study", spec, "--quiet", (char *)NULL);
        _exit(127);
    }
    snprintf(p, sizeof p, "%s/results.jsonl", out);
    /* wait for the base row and one cell, then kill without warning */
    for (int t = 0; t < 6000 && count_lines(p) < 2; t++) usleep(50000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    const int before = count_lines(p);
    CHECK_MSG(before >= 2, "only %d lines before the kill", before);
    snprintf(cmd, sizeof cmd, "study %s --json --quiet", spec);
    int rc = kv_test_run_cli(cmd, &o);
    REQUIRE(rc == 0 && o);
    char want[64];
    snprintf(want, sizeof want, "\"already_done\": %d", before - 1);
    CHECK_MSG(strstr(o, want) != NULL, "expected %s in %s", want, o);
    free(o);
    CHECK_EQ_INT(count_lines(p), 5); /* base + 4 cells, each once */
    kv_study *s = NULL;
    kv_error err = {0};
    REQUIRE_OK(kv_study_load(spec, &s, &err), &err);
    kv_study_row *rows = NULL;
    int64_t n = 0;
    REQUIRE_OK(kv_study_rows(s, &rows, &n, &err), &err);
    CHECK_EQ_INT(n, 5);
    free(rows);
    kv_study_free(s);
    /* no quantized file is left behind (temps of the killed run included) but the kept ones */
    snprintf(cmd, sizeof cmd, "ls %s/cells | grep -c gguf", out);
    FILE *f = popen(cmd, "r");
    int left = -1;
    if (f) {
        if (fscanf(f, "%d", &left) != 1) left = 0;
        pclose(f);
    }
    CHECK_MSG(left == 0, "%d model files left in cells/", left); /* the killed cell's temp was cleaned when it ran again */
}

/* Reads OUT/cells/ID.layers.csv into names and relative MSEs; returns the number of tensors. */
static int read_gaps(const char *out, const char *id, char names[][96], double *rel, double *bpw, int max) {
    char p[800], line[512];
    snprintf(p, sizeof p, "%s/cells/%s.layers.csv", out, id);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    int n = 0;
    if (!fgets(line, sizeof line, f)) n = -1;
    while (n >= 0 && n < max && fgets(line, sizeof line, f)) {
        double g;
        char *c = strchr(line, ',');
        if (!c || sscanf(c + 1, "%lf,%lf,%lf", &bpw[n], &rel[n], &g) != 3) continue;
        snprintf(names[n], 96, "%.*s", (int)(c - line), line);
        n++;
    }
    fclose(f);
    return n;
}

KV_TEST(study_layer_gaps_decode_entropy_coded_tensors) {
    char model[512];
    kv_test_shared(model, sizeof model, PROXY);
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    char spec[600], out[600], cmd[1600], *o = NULL;
    snprintf(out, sizeof out, "%s/out", kv_test_tmpdir());
    snprintf(spec, sizeof spec, "%s/s.json", kv_test_tmpdir());
    REQUIRE(write_spec(spec, out,
                       "\"cells\": [{\"format\": \"int4_g128_asym\", \"pure\": true},"
                       " {\"format\": \"int4_g128_asym\", \"pure\": true, \"entropy_code\": true}]", NULL) == 0);
    snprintf(cmd, sizeof cmd, "study %s --quiet", spec);
    int rc = kv_test_run_cli(cmd, &o);
    CHECK_MSG(rc == 0, "%s", o ? o : "");
    free(o);
    REQUIRE(rc == 0);
    kv_study *s = NULL;
    kv_error err = {0};
    REQUIRE_OK(kv_study_load(spec, &s, &err), &err);
    kv_study_row *rows = NULL;
    int64_t n = 0;
    REQUIRE_OK(kv_study_rows(s, &rows, &n, &err), &err);
    REQUIRE(n == 3);
    static char pn[64][96], en[64][96];
    double prel[64], pbpw[64], erel[64], ebpw[64];
    const int np = read_gaps(out, rows[1].id, pn, prel, pbpw, 64), ne = read_gaps(out, rows[2].id, en, erel, ebpw, 64);
    /* every 2-D tensor of both cells: the entropy-coded ones decoded, not left out */
    CHECK_MSG(np > 40 && ne == np, "plain %d tensors, entropy-coded %d", np, ne);
    for (int i = 0; i < np && i < ne; i++) {
        CHECK_STR(en[i], pn[i]);
        /* lossless coding: the same weights, so the same error, at fewer bits */
        CHECK_NEAR(erel[i], prel[i], 1e-9 * prel[i]);
        CHECK_MSG(ebpw[i] < pbpw[i], "%s: %g bits entropy-coded vs %g", en[i], ebpw[i], pbpw[i]);
    }
    free(rows);
    kv_study_free(s);
}
