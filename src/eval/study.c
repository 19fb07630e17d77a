/* study.c — `kvant study SPEC`: a recipe matrix on one model, each cell quantized (kv_quantize_model, in this
 * process), evaluated against the unquantized model (KLD, PPL, top-1, task accuracy and its recovery) and
 * appended to results.jsonl / results.csv as it finishes, so that a killed run resumes where it stopped.
 * The spec schema is docs/study.md; the report is study_report.c. */
#include "eval/study.h"
#include "algos/pipeline.h"
#include "algos/quantize.h"
#include "io/json.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---------------------------------------------------------------------------------------------------------- */
/* spec                                                                                                       */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static kv_status spec_fail(kv_error *err, const char *path, const kv_json *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kv_status spec_fail(kv_error *err, const char *path, const kv_json *at, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kv_fail(err, KV_EINVAL, "%s", msg);
    kv_error_context(err, path, at ? (int64_t)at->offset : -1, NULL);
    return KV_EINVAL;
}

/* Every key of obj must be one of keys (NULL-terminated). */
static kv_status known_keys(const kv_json *obj, const char *const *keys, const char *where, const char *path,
                            kv_error *err) {
    for (uint64_t i = 0; i < obj->len; i++) {
        int ok = 0;
        for (const char *const *k = keys; *k && !ok; k++) ok = !strcmp(obj->u.items[i].key, *k);
        if (!ok) {
            char list[400] = "";
            for (const char *const *k = keys; *k; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k == keys ? "" : ", ", *k);
            return spec_fail(err, path, &obj->u.items[i], "%s: unknown key \"%s\" (valid: %s)", where, obj->u.items[i].key, list);
        }
    }
    const kv_json *dup = kv_json_find_duplicate_key(obj);
    if (dup) return spec_fail(err, path, dup, "%s: key \"%s\" appears twice", where, dup->key);
    return KV_OK;
}

static kv_status get_str(const kv_json *obj, const char *key, char *dst, size_t n, int required, const char *where,
                         const char *path, kv_error *err) {
    const char *v = NULL;
    int rc = kv_json_get_str(obj, key, &v);
    if (rc < 0) return spec_fail(err, path, kv_json_get(obj, key), "%s: \"%s\" must be a string", where, key);
    if (rc == 0) {
        if (required) return spec_fail(err, path, obj, "%s: \"%s\" is required", where, key);
        return KV_OK;
    }
    if (strlen(v) >= n) return spec_fail(err, path, kv_json_get(obj, key), "%s: \"%s\" is too long", where, key);
    snprintf(dst, n, "%s", v);
    return KV_OK;
}

static kv_status get_int(const kv_json *obj, const char *key, int64_t lo, int64_t hi, int64_t *dst, const char *where,
                         const char *path, kv_error *err) {
    int64_t v;
    int rc = kv_json_get_int(obj, key, &v);
    if (rc < 0 || (rc == 1 && (v < lo || v > hi)))
        return spec_fail(err, path, kv_json_get(obj, key), "%s: \"%s\" must be an integer in %lld..%lld", where, key,
                         (long long)lo, (long long)hi);
    if (rc == 1) *dst = v;
    return KV_OK;
}

static kv_status get_bool(const kv_json *obj, const char *key, int *dst, const char *where, const char *path, kv_error *err) {
    int rc = kv_json_get_bool(obj, key, dst);
    if (rc < 0) return spec_fail(err, path, kv_json_get(obj, key), "%s: \"%s\" must be true or false", where, key);
    return KV_OK;
}

/* A JSON array of strings (or one string) -> a comma list. */
static kv_status get_list(const kv_json *obj, const char *key, char *dst, size_t n, const char *where, const char *path,
                          kv_error *err) {
    const kv_json *a = kv_json_get(obj, key);
    if (!a || a->type == KV_JSON_NULL) return KV_OK;
    dst[0] = 0;
    if (a->type == KV_JSON_STRING) return get_str(obj, key, dst, n, 0, where, path, err);
    if (a->type != KV_JSON_ARRAY || a->len == 0)
        return spec_fail(err, path, a, "%s: \"%s\" must be a non-empty array of strings", where, key);
    for (uint64_t i = 0; i < a->len; i++) {
        if (a->u.items[i].type != KV_JSON_STRING)
            return spec_fail(err, path, &a->u.items[i], "%s: \"%s\"[%llu] is not a string", where, key, (unsigned long long)i);
        size_t l = strlen(dst);
        if (l + a->u.items[i].len + 2 > n) return spec_fail(err, path, a, "%s: \"%s\" is too long", where, key);
        snprintf(dst + l, n - l, "%s%s", i ? "," : "", a->u.items[i].u.str);
    }
    return KV_OK;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Checks a format (or llama.cpp mix) name, a method, a transform list and an activation format. */
static kv_status check_recipe(const kv_study_cell *c, const char *path, const kv_json *at, kv_error *err) {
    kv_format f;
    kv_error e2;
    kv_error_clear(&e2);
    const char *dflt = NULL;
    if (c->kind == KV_CELL_LLAMACPP) {
        if (kv_policy_mix_ftype(c->format, &dflt) < 0 && kv_format_get(c->format, &f, &e2) != KV_OK)
            return spec_fail(err, path, at, "llama_cpp: unknown type \"%s\" (valid: %s)", c->format, kv_policy_mix_names());
        return KV_OK;
    }
    if (kv_policy_mix_ftype(c->format, &dflt) < 0 && kv_format_get(c->format, &f, &e2) != KV_OK)
        return spec_fail(err, path, at, "cell \"%s\": %s", c->label, e2.message);
    char mname[96];
    snprintf(mname, sizeof mname, "%s", c->method);
    char *colon = strchr(mname, ':');
    if (colon) *colon = 0;
    if (!kv_quant_method_find(mname))
        return spec_fail(err, path, at, "cell \"%s\": unknown method \"%s\" (valid: %s)", c->label, mname, kv_quant_method_names());
    kv_transform_set ts;
    if (c->transform[0] && kv_transform_set_parse(c->transform, &ts, &e2) != KV_OK)
        return spec_fail(err, path, at, "cell \"%s\": %s", c->label, e2.message);
    int none;
    if (kv_act_format(c->act, &f, &none, &e2) != KV_OK) return spec_fail(err, path, at, "cell \"%s\": %s", c->label, e2.message);
    if (c->bits > 0) {
        char cand[512];
        snprintf(cand, sizeof cand, "%s", c->candidates);
        if (!cand[0]) return spec_fail(err, path, at, "cell \"%s\": \"bits\" needs \"candidates\"", c->label);
        for (char *t = strtok(cand, ","); t; t = strtok(NULL, ","))
            if (kv_format_get(t, &f, &e2) != KV_OK) return spec_fail(err, path, at, "cell \"%s\": candidate: %s", c->label, e2.message);
        kv_alloc_mode m;
        if (kv_alloc_mode_parse(c->allocate, &m, &e2) != KV_OK) return spec_fail(err, path, at, "cell \"%s\": %s", c->label, e2.message);
    }
    for (int i = 0; i < c->n_overrides; i++) {
        const char *eq = strrchr(c->overrides[i], '=');
        if (!eq || eq == c->overrides[i] || kv_format_get(eq + 1, &f, &e2) != KV_OK)
            return spec_fail(err, path, at, "cell \"%s\": override \"%s\" is not REGEX=FORMAT with a known format", c->label,
                             c->overrides[i]);
    }
    return KV_OK;
}

static void cell_finish(kv_study *s, kv_study_cell *c) {
    char *k = c->key;
    size_t n = sizeof c->key;
    int w = 0;
    if (c->kind == KV_CELL_LLAMACPP)
        w = snprintf(k, n, "llama.cpp|type=%s|imatrix=%d|gguf=%s", c->format, s->llama_imatrix, s->llama_model);
    else
        w = snprintf(k, n, "kvant|format=%s|method=%s|transform=%s|act=%s|bits=%.6g|cand=%s|alloc=%s|pure=%d|ec=%d", c->format,
                     c->method, c->transform, c->act, c->bits, c->bits > 0 ? c->candidates : "", c->bits > 0 ? c->allocate : "",
                     c->pure, c->entropy_code);
    if (c->no_imatrix && w > 0 && (size_t)w < n) w += snprintf(k + w, n - (size_t)w, "|no_imatrix");
    for (int i = 0; i < c->n_overrides && w > 0 && (size_t)w < n; i++) w += snprintf(k + w, n - (size_t)w, "|ov=%s", c->overrides[i]);
    if (w > 0 && (size_t)w < n)
        w += snprintf(k + w, n - (size_t)w, "|model=%s|text=%s|ctx=%d|chunks=%lld|limit=%lld|calib=%s|ct=%lld|seed=%llu|alphas=%s",
                      s->model, s->text, (int)s->ctx, (long long)s->chunks, (long long)s->task_limit, s->calib,
                      (long long)s->calib_tokens, (unsigned long long)s->seed, c->bits > 0 ? s->alphas : "");
    for (int i = 0; i < s->n_tasks && w > 0 && (size_t)w < n; i++) w += snprintf(k + w, n - (size_t)w, "|task=%s", s->tasks[i]);
    snprintf(c->id, sizeof c->id, "%016llx", (unsigned long long)fnv1a(c->key));
    if (!c->label[0]) {
        if (c->kind == KV_CELL_LLAMACPP) snprintf(c->label, sizeof c->label, "llama.cpp %s%s", c->format, s->llama_imatrix ? " +imatrix" : "");
        else {
            char b[96] = "";
            if (c->bits > 0) snprintf(b, sizeof b, "alloc@%g/", c->bits);
            snprintf(c->label, sizeof c->label, "%.40s%s%.40s %.40s%.40s%s%s%s%s", c->method, c->transform[0] ? " +" : "", c->transform, b,
                     c->format, c->pure ? " pure" : "", strcmp(c->act, "none") ? " A:" : "", strcmp(c->act, "none") ? c->act : "",
                     c->entropy_code ? " +ec" : "");
        }
    }
}

static kv_status add_cell(kv_study *s, const kv_study_cell *c, int64_t *cap, kv_error *err) {
    if (s->n_cells == *cap) {
        int64_t nc = *cap ? *cap * 2 : 16;
        if (nc > 100000) return kv_fail(err, KV_ERANGE, "a study holds at most 100000 cells");
        kv_study_cell *q = realloc(s->cells, (size_t)nc * sizeof *q);
        if (!q) return kv_fail(err, KV_ENOMEM, "out of memory");
        s->cells = q;
        *cap = nc;
    }
    s->cells[s->n_cells] = *c;
    kv_study_cell *d = &s->cells[s->n_cells++];
    for (int i = 0; i < c->n_overrides; i++) d->overrides[i] = NULL;
    for (int i = 0; i < c->n_overrides; i++)
        if (!(d->overrides[i] = strdup(c->overrides[i]))) return kv_fail(err, KV_ENOMEM, "out of memory");
    cell_finish(s, d);
    for (int64_t i = 0; i + 1 < s->n_cells; i++)
        if (!strcmp(s->cells[i].id, d->id)) {
            kv_fail(err, KV_EINVAL, "cells \"%s\" and \"%s\" are the same recipe", s->cells[i].label, d->label);
            return KV_EINVAL;
        }
    return KV_OK;
}

static kv_status read_overrides(const kv_json *obj, kv_study_cell *c, const char *where, const char *path, kv_error *err) {
    const kv_json *a = kv_json_get(obj, "overrides");
    if (!a || a->type == KV_JSON_NULL) return KV_OK;
    if (a->type != KV_JSON_ARRAY) return spec_fail(err, path, a, "%s: \"overrides\" must be an array of \"REGEX=FORMAT\"", where);
    for (uint64_t i = 0; i < a->len; i++) {
        if (a->u.items[i].type != KV_JSON_STRING) return spec_fail(err, path, &a->u.items[i], "%s: overrides[%llu] is not a string", where, (unsigned long long)i);
        if (c->n_overrides == KV_STUDY_MAX_OVERRIDES) return spec_fail(err, path, a, "%s: at most %d overrides", where, KV_STUDY_MAX_OVERRIDES);
        c->overrides[c->n_overrides++] = (char *)a->u.items[i].u.str; /* borrowed until add_cell copies */
    }
    return KV_OK;
}

/* The recipe keys a cell and a matrix share (a matrix has lists where a cell has one value). */
static kv_status read_common(const kv_json *obj, kv_study_cell *c, const char *where, const char *path, kv_error *err) {
    kv_status st = get_list(obj, "candidates", c->candidates, sizeof c->candidates, where, path, err);
    if (st == KV_OK) st = get_str(obj, "allocate", c->allocate, sizeof c->allocate, 0, where, path, err);
    if (st == KV_OK) st = get_bool(obj, "pure", &c->pure, where, path, err);
    if (st == KV_OK) st = get_bool(obj, "entropy_code", &c->entropy_code, where, path, err);
    if (st == KV_OK) st = get_bool(obj, "no_imatrix", &c->no_imatrix, where, path, err);
    if (st == KV_OK) st = read_overrides(obj, c, where, path, err);
    return st;
}

/* Values of a matrix axis: an array of strings (or numbers for "bits"); *n = 0 when absent. */
static kv_status axis(const kv_json *m, const char *key, const kv_json **vals, uint64_t *n, int numbers, const char *path,
                      kv_error *err) {
    const kv_json *a = kv_json_get(m, key);
    *vals = NULL;
    *n = 0;
    if (!a || a->type == KV_JSON_NULL) return KV_OK;
    if (a->type != KV_JSON_ARRAY || a->len == 0) return spec_fail(err, path, a, "matrix: \"%s\" must be a non-empty array", key);
    for (uint64_t i = 0; i < a->len; i++)
        if (a->u.items[i].type != (numbers ? KV_JSON_NUMBER : KV_JSON_STRING) ||
            (numbers && !(a->u.items[i].num > 0 && a->u.items[i].num <= 32)))
            return spec_fail(err, path, &a->u.items[i], "matrix: \"%s\"[%llu] must be %s", key, (unsigned long long)i,
                             numbers ? "a number of bits per weight in (0, 32]" : "a string");
    *vals = a->u.items;
    *n = a->len;
    return KV_OK;
}

static kv_status expand_matrix(kv_study *s, const kv_json *m, int64_t *cap, const char *path, kv_error *err) {
    static const char *const keys[] = {"methods", "transforms", "formats", "acts", "bits", "candidates", "allocate",
                                       "pure", "entropy_code", "no_imatrix", "overrides", NULL};
    kv_status st = known_keys(m, keys, "matrix", path, err);
    if (st != KV_OK) return st;
    kv_study_cell base = {.kind = KV_CELL_KVANT, .pure = 0};
    snprintf(base.allocate, sizeof base.allocate, "linearity");
    if ((st = read_common(m, &base, "matrix", path, err)) != KV_OK) return st;
    const kv_json *meth, *tr, *fm, *ac, *bi;
    uint64_t nm, nt, nf, na, nb;
    if ((st = axis(m, "methods", &meth, &nm, 0, path, err)) || (st = axis(m, "transforms", &tr, &nt, 0, path, err)) ||
        (st = axis(m, "formats", &fm, &nf, 0, path, err)) || (st = axis(m, "acts", &ac, &na, 0, path, err)) ||
        (st = axis(m, "bits", &bi, &nb, 1, path, err)))
        return st;
    if (nf == 0) return spec_fail(err, path, m, "matrix: \"formats\" is required (with \"bits\": the format of the tensors the allocation leaves)");
    for (uint64_t a = 0; a < (nm ? nm : 1); a++)
        for (uint64_t b = 0; b < (nt ? nt : 1); b++)
            for (uint64_t f = 0; f < nf; f++)
                for (uint64_t d = 0; d < (na ? na : 1); d++)
                    for (uint64_t e = 0; e < (nb ? nb : 1); e++) {
                        kv_study_cell c = base;
                        snprintf(c.method, sizeof c.method, "%s", nm ? meth[a].u.str : "rtn");
                        const char *t = nt ? tr[b].u.str : "none";
                        snprintf(c.transform, sizeof c.transform, "%s", strcmp(t, "none") ? t : "");
                        snprintf(c.format, sizeof c.format, "%s", fm[f].u.str);
                        snprintf(c.act, sizeof c.act, "%s", na ? ac[d].u.str : "none");
                        c.bits = nb ? bi[e].num : 0;
                        if ((st = check_recipe(&c, path, m, err)) != KV_OK) return st;
                        if ((st = add_cell(s, &c, cap, err)) != KV_OK) return st;
                    }
    return KV_OK;
}

static kv_status read_cell(kv_study *s, const kv_json *o, int64_t *cap, const char *path, kv_error *err) {
    static const char *const keys[] = {"label", "format", "method", "transform", "act", "bits", "candidates", "allocate",
                                       "pure", "entropy_code", "no_imatrix", "overrides", NULL};
    if (o->type != KV_JSON_OBJECT) return spec_fail(err, path, o, "cells: every cell is an object");
    kv_status st = known_keys(o, keys, "cell", path, err);
    if (st != KV_OK) return st;
    kv_study_cell c = {.kind = KV_CELL_KVANT};
    snprintf(c.method, sizeof c.method, "rtn");
    snprintf(c.act, sizeof c.act, "none");
    snprintf(c.allocate, sizeof c.allocate, "linearity");
    if ((st = get_str(o, "label", c.label, sizeof c.label, 0, "cell", path, err)) ||
        (st = get_str(o, "format", c.format, sizeof c.format, 1, "cell", path, err)) ||
        (st = get_str(o, "method", c.method, sizeof c.method, 0, "cell", path, err)) ||
        (st = get_str(o, "transform", c.transform, sizeof c.transform, 0, "cell", path, err)) ||
        (st = get_str(o, "act", c.act, sizeof c.act, 0, "cell", path, err)) || (st = read_common(o, &c, "cell", path, err)))
        return st;
    if (!strcmp(c.transform, "none")) c.transform[0] = 0;
    double b = 0;
    int rc = kv_json_get_num(o, "bits", &b);
    if (rc < 0 || (rc == 1 && !(b > 0 && b <= 32))) return spec_fail(err, path, kv_json_get(o, "bits"), "cell: \"bits\" must be in (0, 32]");
    c.bits = b;
    if ((st = check_recipe(&c, path, o, err)) != KV_OK) return st;
    return add_cell(s, &c, cap, err);
}

static kv_status read_llamacpp(kv_study *s, const kv_json *o, int64_t *cap, const char *path, kv_error *err) {
    static const char *const keys[] = {"model", "types", "imatrix", NULL};
    if (o->type != KV_JSON_OBJECT) return spec_fail(err, path, o, "\"llama_cpp\" must be an object");
    kv_status st = known_keys(o, keys, "llama_cpp", path, err);
    if (st == KV_OK) st = get_str(o, "model", s->llama_model, sizeof s->llama_model, 1, "llama_cpp", path, err);
    if (st == KV_OK) st = get_bool(o, "imatrix", &s->llama_imatrix, "llama_cpp", path, err);
    if (st != KV_OK) return st;
    if (!file_exists(s->llama_model)) return spec_fail(err, path, o, "llama_cpp: model \"%s\" does not exist", s->llama_model);
    if (s->llama_imatrix && !s->calib[0]) return spec_fail(err, path, o, "llama_cpp: \"imatrix\" needs \"calib\" (the imatrix is computed from it)");
    const kv_json *t = kv_json_get(o, "types");
    if (!t || t->type != KV_JSON_ARRAY || t->len == 0) return spec_fail(err, path, o, "llama_cpp: \"types\" must be a non-empty array");
    for (uint64_t i = 0; i < t->len; i++) {
        if (t->u.items[i].type != KV_JSON_STRING) return spec_fail(err, path, &t->u.items[i], "llama_cpp: types[%llu] is not a string", (unsigned long long)i);
        kv_study_cell c = {.kind = KV_CELL_LLAMACPP};
        snprintf(c.format, sizeof c.format, "%s", t->u.items[i].u.str);
        snprintf(c.act, sizeof c.act, "none");
        snprintf(c.method, sizeof c.method, "llama-quantize");
        if ((st = check_recipe(&c, path, &t->u.items[i], err)) != KV_OK) return st;
        if ((st = add_cell(s, &c, cap, err)) != KV_OK) return st;
    }
    return KV_OK;
}

static kv_status read_eval(kv_study *s, const kv_json *e, const char *path, kv_error *err) {
    static const char *const keys[] = {"text", "ctx", "chunks", "tasks", "task_limit", NULL};
    if (!e || e->type != KV_JSON_OBJECT) return spec_fail(err, path, e, "\"eval\" must be an object with \"text\"");
    kv_status st = known_keys(e, keys, "eval", path, err);
    int64_t ctx = 512, chunks = 0, limit = 0;
    if (st == KV_OK) st = get_str(e, "text", s->text, sizeof s->text, 1, "eval", path, err);
    if (st == KV_OK) st = get_int(e, "ctx", 16, 1 << 16, &ctx, "eval", path, err);
    if (st == KV_OK) st = get_int(e, "chunks", 0, INT64_MAX, &chunks, "eval", path, err);
    if (st == KV_OK) st = get_int(e, "task_limit", 0, INT64_MAX, &limit, "eval", path, err);
    if (st != KV_OK) return st;
    s->ctx = (int32_t)ctx;
    s->chunks = chunks;
    s->task_limit = limit;
    if (!file_exists(s->text)) return spec_fail(err, path, e, "eval: text \"%s\" does not exist", s->text);
    const kv_json *t = kv_json_get(e, "tasks");
    if (t && t->type != KV_JSON_NULL) {
        if (t->type != KV_JSON_ARRAY || t->len > KV_STUDY_MAX_TASKS)
            return spec_fail(err, path, t, "eval: \"tasks\" must be an array of at most %d JSONL files", KV_STUDY_MAX_TASKS);
        for (uint64_t i = 0; i < t->len; i++) {
            if (t->u.items[i].type != KV_JSON_STRING) return spec_fail(err, path, &t->u.items[i], "eval: tasks[%llu] is not a string", (unsigned long long)i);
            if (!(s->tasks[s->n_tasks] = strdup(t->u.items[i].u.str))) return kv_fail(err, KV_ENOMEM, "out of memory");
            s->n_tasks++;
            if ((st = kv_tasks_load(s->tasks[s->n_tasks - 1], &s->tasksets[s->n_tasks - 1], err)) != KV_OK) return st;
        }
    }
    return KV_OK;
}

kv_status kv_study_load(const char *path, kv_study **out, kv_error *err) {
    *out = NULL;
    kv_json_doc *doc = NULL;
    kv_status st = kv_json_parse_file(path, 1 << 20, &doc, err);
    if (st != KV_OK) return st;
    kv_study *s = calloc(1, sizeof *s);
    if (!s) {
        kv_json_free(doc);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    snprintf(s->spec_path, sizeof s->spec_path, "%s", path);
    const kv_json *r = kv_json_root(doc);
    int64_t cap = 0, v;
    static const char *const keys[] = {"name", "description", "model", "out", "eval", "calib", "calib_tokens", "seed", "threads",
                                       "jobs", "alphas", "alpha_tokens", "keep_models", "layer_gaps", "matrix", "cells",
                                       "llama_cpp", NULL};
    if (r->type != KV_JSON_OBJECT) {
        st = spec_fail(err, path, r, "the spec must be a JSON object");
        goto done;
    }
    if ((st = known_keys(r, keys, "spec", path, err)) != KV_OK) goto done;
    if ((st = get_str(r, "name", s->name, sizeof s->name, 1, "spec", path, err)) != KV_OK) goto done;
    for (const char *p = s->name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.')) {
            st = spec_fail(err, path, kv_json_get(r, "name"), "spec: \"name\" may hold letters, digits, '-', '_' and '.' only");
            goto done;
        }
    if ((st = get_str(r, "model", s->model, sizeof s->model, 1, "spec", path, err)) != KV_OK) goto done;
    snprintf(s->out_dir, sizeof s->out_dir, "build/studies/%s", s->name);
    if ((st = get_str(r, "out", s->out_dir, sizeof s->out_dir, 0, "spec", path, err)) != KV_OK) goto done;
    if ((st = get_str(r, "calib", s->calib, sizeof s->calib, 0, "spec", path, err)) != KV_OK) goto done;
    if ((st = get_str(r, "alphas", s->alphas, sizeof s->alphas, 0, "spec", path, err)) != KV_OK) goto done;
    s->calib_tokens = 16384;
    s->alpha_tokens = 4096;
    s->jobs = 1;
    if ((st = get_int(r, "calib_tokens", 1, INT64_MAX, &s->calib_tokens, "spec", path, err)) != KV_OK) goto done;
    if ((st = get_int(r, "alpha_tokens", 1, INT64_MAX, &s->alpha_tokens, "spec", path, err)) != KV_OK) goto done;
    v = 0;
    if ((st = get_int(r, "seed", 0, INT64_MAX, &v, "spec", path, err)) != KV_OK) goto done;
    s->seed = (uint64_t)v;
    v = 0;
    if ((st = get_int(r, "threads", 0, 1024, &v, "spec", path, err)) != KV_OK) goto done;
    s->threads = (int)v;
    v = 1;
    if ((st = get_int(r, "jobs", 1, 256, &v, "spec", path, err)) != KV_OK) goto done;
    s->jobs = (int)v;
    if ((st = get_bool(r, "keep_models", &s->keep_models, "spec", path, err)) != KV_OK) goto done;
    s->layer_gaps = 1;
    if ((st = get_bool(r, "layer_gaps", &s->layer_gaps, "spec", path, err)) != KV_OK) goto done;
    if (!file_exists(s->model)) {
        st = spec_fail(err, path, kv_json_get(r, "model"), "spec: model \"%s\" does not exist", s->model);
        goto done;
    }
    if (s->calib[0] && !file_exists(s->calib)) {
        st = spec_fail(err, path, kv_json_get(r, "calib"), "spec: calib \"%s\" does not exist", s->calib);
        goto done;
    }
    if (s->alphas[0] && strcmp(s->alphas, "auto") && !file_exists(s->alphas)) {
        st = spec_fail(err, path, kv_json_get(r, "alphas"), "spec: alphas \"%s\" does not exist (or say \"auto\")", s->alphas);
        goto done;
    }
    if (!strcmp(s->alphas, "auto") && !s->calib[0]) {
        st = spec_fail(err, path, kv_json_get(r, "alphas"), "spec: \"alphas\": \"auto\" measures them on \"calib\": give one");
        goto done;
    }
    if ((st = read_eval(s, kv_json_get(r, "eval"), path, err)) != KV_OK) goto done;
    const kv_json *m = kv_json_get(r, "matrix");
    if (m && m->type == KV_JSON_OBJECT) st = expand_matrix(s, m, &cap, path, err);
    else if (m && m->type == KV_JSON_ARRAY)
        for (uint64_t i = 0; i < m->len && st == KV_OK; i++)
            st = m->u.items[i].type == KV_JSON_OBJECT ? expand_matrix(s, &m->u.items[i], &cap, path, err)
                                                      : spec_fail(err, path, &m->u.items[i], "matrix: every matrix is an object");
    else if (m && m->type != KV_JSON_NULL) st = spec_fail(err, path, m, "\"matrix\" must be an object or an array of them");
    if (st != KV_OK) goto done;
    const kv_json *cl = kv_json_get(r, "cells");
    if (cl && cl->type != KV_JSON_NULL) {
        if (cl->type != KV_JSON_ARRAY) {
            st = spec_fail(err, path, cl, "\"cells\" must be an array of recipes");
            goto done;
        }
        for (uint64_t i = 0; i < cl->len && st == KV_OK; i++) st = read_cell(s, &cl->u.items[i], &cap, path, err);
        if (st != KV_OK) goto done;
    }
    const kv_json *lc = kv_json_get(r, "llama_cpp");
    if (lc && lc->type != KV_JSON_NULL && (st = read_llamacpp(s, lc, &cap, path, err)) != KV_OK) goto done;
    if (s->n_cells == 0) {
        st = spec_fail(err, path, r, "the spec names no cell (\"matrix\", \"cells\" or \"llama_cpp\")");
        goto done;
    }
    for (int64_t i = 0; i < s->n_cells; i++) {
        const kv_study_cell *c = &s->cells[i];
        char mname[96];
        snprintf(mname, sizeof mname, "%s", c->method);
        char *colon = strchr(mname, ':');
        if (colon) *colon = 0;
        const kv_quant_method *qm = c->kind == KV_CELL_KVANT ? kv_quant_method_find(mname) : NULL;
        kv_transform_set ts = {0};
        if (c->transform[0]) kv_transform_set_parse(c->transform, &ts, err);
        if (((qm && qm->needs_calib) || ts.awq || ts.smooth) && !s->calib[0]) {
            st = spec_fail(err, path, r, "cell \"%s\" needs calibration text: give \"calib\"", c->label);
            goto done;
        }
        if (c->bits > 0 && strcmp(c->allocate, "uniform") && !s->alphas[0]) {
            st = spec_fail(err, path, r, "cell \"%s\": --allocate %s needs \"alphas\" (a kvant sensitivity file, or \"auto\")",
                           c->label, c->allocate);
            goto done;
        }
    }
done:
    kv_json_free(doc);
    if (st != KV_OK) {
        kv_study_free(s);
        return st;
    }
    *out = s;
    return KV_OK;
}

void kv_study_free(kv_study *s) {
    if (!s) return;
    for (int64_t i = 0; i < s->n_cells; i++)
        for (int k = 0; k < s->cells[i].n_overrides; k++) free(s->cells[i].overrides[k]);
    free(s->cells);
    for (int i = 0; i < s->n_tasks; i++) {
        free(s->tasks[i]);
        kv_tasks_free(s->tasksets[i]);
    }
    free(s);
}

int64_t kv_study_n_cells(const kv_study *s) { return s->n_cells; }
const char *kv_study_cell_label(const kv_study *s, int64_t i) { return i >= 0 && i < s->n_cells ? s->cells[i].label : NULL; }
const char *kv_study_name(const kv_study *s) { return s->name; }
const char *kv_study_out_dir(const kv_study *s) { return s->out_dir; }

kv_status kv_study_set_out_dir(kv_study *s, const char *dir, kv_error *err) {
    if (!dir || !*dir || strlen(dir) >= sizeof s->out_dir) return kv_fail(err, KV_EINVAL, "bad output directory");
    snprintf(s->out_dir, sizeof s->out_dir, "%s", dir);
    return KV_OK;
}
