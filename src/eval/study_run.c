/* study_run.c — running a study (kv_study_run): the unquantized model's row and log-probs first, then every
 * cell not yet in results.jsonl, `jobs` cells at once, each quantized by kv_quantize_model (or by llama-quantize
 * for the reference cells) into OUT/cells/, evaluated in this process and appended to results.jsonl and
 * results.csv with fsync. A line cut by a kill is dropped on the next start; finished cells are skipped. */
#include "eval/study.h"
#include "algos/pipeline.h"
#include "io/json.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static kv_status mkdir_p(const char *dir, kv_error *err) {
    char p[1300];
    snprintf(p, sizeof p, "%.1200s", dir);
    for (char *q = p + 1; ; q++) {
        if (*q == '/' || *q == 0) {
            char c = *q;
            *q = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                kv_fail(err, KV_EIO, "cannot create directory: %s", strerror(errno));
                kv_error_context(err, p, -1, NULL);
                return KV_EIO;
            }
            *q = c;
            if (!c) break;
        }
    }
    return KV_OK;
}

static int file_exists_(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void path_in(char *dst, size_t n, const kv_study *s, const char *name) { snprintf(dst, n, "%s/%s", s->out_dir, name); }

/* ---------------------------------------------------------------------------------------------------------- */
/* rows: JSON lines and CSV                                                                                   */

/* The row's fields by name, in the order of a results.jsonl line: strings, sizes, metrics, tasks, then the tail. */
#define ROW_FIELD(f) {#f, offsetof(kv_study_row, f), sizeof ((kv_study_row *)0)->f}
typedef struct row_field {
    const char *key;
    size_t off, size;
} row_field;
static const row_field ROW_STRINGS[] = {
    ROW_FIELD(id), ROW_FIELD(label), ROW_FIELD(kind), ROW_FIELD(format), ROW_FIELD(method), ROW_FIELD(transform), ROW_FIELD(act)};
static const row_field ROW_METRICS[] = { /* doubles */
    ROW_FIELD(bpw), ROW_FIELD(ppl), ROW_FIELD(ppl_stderr), ROW_FIELD(ppl_ratio), ROW_FIELD(kld), ROW_FIELD(kld_stderr),
    ROW_FIELD(kld_p99), ROW_FIELD(top1), ROW_FIELD(dp_rms)};
static const row_field ROW_TAIL[] = { /* doubles */
    ROW_FIELD(acc_mean), ROW_FIELD(recovery), ROW_FIELD(seconds_quantize), ROW_FIELD(seconds_eval)};
#undef ROW_FIELD
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *row_str(const kv_study_row *r, size_t off) { return (const char *)r + off; }
static double row_num(const kv_study_row *r, size_t off) { return *(const double *)(const void *)((const char *)r + off); }
static void row_set_num(kv_study_row *r, size_t off, double v) { *(double *)(void *)((char *)r + off) = v; }

static void row_json(kv_jw *w, const kv_study_row *r) {
    kv_jw_obj_begin(w);
    for (size_t i = 0; i < N_OF(ROW_STRINGS); i++) { kv_jw_key(w, ROW_STRINGS[i].key); kv_jw_str(w, row_str(r, ROW_STRINGS[i].off)); }
    kv_jw_key(w, "bits_target"); kv_jw_num(w, r->bits_target);
    kv_jw_key(w, "n_params"); kv_jw_int(w, r->n_params);
    kv_jw_key(w, "tensor_bytes"); kv_jw_int(w, (int64_t)r->tensor_bytes);
    kv_jw_key(w, "file_bytes"); kv_jw_int(w, (int64_t)r->file_bytes);
    for (size_t i = 0; i < N_OF(ROW_METRICS); i++) { kv_jw_key(w, ROW_METRICS[i].key); kv_jw_num(w, row_num(r, ROW_METRICS[i].off)); }
    kv_jw_key(w, "tasks");
    kv_jw_arr_begin(w);
    for (int i = 0; i < r->n_tasks; i++) {
        kv_jw_obj_begin(w);
        kv_jw_key(w, "name"); kv_jw_str(w, r->task[i]);
        kv_jw_key(w, "acc"); kv_jw_num(w, r->acc[i]);
        kv_jw_key(w, "acc_norm"); kv_jw_num(w, r->acc_norm[i]);
        kv_jw_obj_end(w);
    }
    kv_jw_arr_end(w);
    for (size_t i = 0; i < N_OF(ROW_TAIL); i++) { kv_jw_key(w, ROW_TAIL[i].key); kv_jw_num(w, row_num(r, ROW_TAIL[i].off)); }
    kv_jw_key(w, "commit"); kv_jw_str(w, r->commit);
    kv_jw_obj_end(w);
}

static double num_or_nan(const kv_json *o, const char *k) {
    double v;
    return kv_json_get_num(o, k, &v) == 1 ? v : NAN;
}

static void str_into(const kv_json *o, const char *k, char *dst, size_t n) {
    const char *v = NULL;
    if (kv_json_get_str(o, k, &v) == 1) snprintf(dst, n, "%s", v);
}

static int row_parse(const kv_json *o, kv_study_row *r) {
    memset(r, 0, sizeof *r);
    if (o->type != KV_JSON_OBJECT) return -1;
    for (size_t i = 0; i < N_OF(ROW_STRINGS); i++) str_into(o, ROW_STRINGS[i].key, (char *)r + ROW_STRINGS[i].off, ROW_STRINGS[i].size);
    if (strlen(r->id) != 16) return -1;
    str_into(o, "commit", r->commit, sizeof r->commit);
    int64_t iv;
    r->bits_target = num_or_nan(o, "bits_target");
    if (kv_json_get_int(o, "n_params", &iv) == 1) r->n_params = iv;
    if (kv_json_get_int(o, "tensor_bytes", &iv) == 1) r->tensor_bytes = (uint64_t)iv;
    if (kv_json_get_int(o, "file_bytes", &iv) == 1) r->file_bytes = (uint64_t)iv;
    for (size_t i = 0; i < N_OF(ROW_METRICS); i++) row_set_num(r, ROW_METRICS[i].off, num_or_nan(o, ROW_METRICS[i].key));
    for (size_t i = 0; i < N_OF(ROW_TAIL); i++) row_set_num(r, ROW_TAIL[i].off, num_or_nan(o, ROW_TAIL[i].key));
    const kv_json *t = kv_json_get(o, "tasks");
    for (uint64_t i = 0; t && t->type == KV_JSON_ARRAY && i < t->len && r->n_tasks < KV_STUDY_MAX_TASKS; i++) {
        str_into(&t->u.items[i], "name", r->task[r->n_tasks], sizeof r->task[0]);
        r->acc[r->n_tasks] = num_or_nan(&t->u.items[i], "acc");
        r->acc_norm[r->n_tasks] = num_or_nan(&t->u.items[i], "acc_norm");
        r->n_tasks++;
    }
    return 0;
}

static void csv_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void csv_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, ",%.9g", v);
    else fputs(",", f);
}

static void csv_header(FILE *f, const kv_study *s) {
    fputs("id,label,kind,format,method,transform,act,bits_target,n_params,tensor_bytes,file_bytes,bpw,ppl,ppl_stderr,"
          "ppl_ratio,kld,kld_stderr,kld_p99,top1,dp_rms,acc_mean,recovery", f);
    for (int i = 0; i < s->n_tasks; i++) fprintf(f, ",%s_acc,%s_acc_norm", s->tasksets[i]->name, s->tasksets[i]->name);
    fputs(",seconds_quantize,seconds_eval,commit\n", f);
}

static void csv_row(FILE *f, const kv_study *s, const kv_study_row *r) {
    fprintf(f, "%s,", r->id);
    csv_str(f, r->label);
    fprintf(f, ",%s,", r->kind);
    csv_str(f, r->format);
    fputc(',', f);
    csv_str(f, r->method);
    fputc(',', f);
    csv_str(f, r->transform);
    fprintf(f, ",%s", r->act);
    csv_num(f, r->bits_target);
    fprintf(f, ",%lld,%llu,%llu", (long long)r->n_params, (unsigned long long)r->tensor_bytes, (unsigned long long)r->file_bytes);
    for (size_t i = 0; i < N_OF(ROW_METRICS); i++) csv_num(f, row_num(r, ROW_METRICS[i].off));
    csv_num(f, r->acc_mean);
    csv_num(f, r->recovery);
    for (int i = 0; i < s->n_tasks; i++) {
        csv_num(f, i < r->n_tasks ? r->acc[i] : NAN);
        csv_num(f, i < r->n_tasks ? r->acc_norm[i] : NAN);
    }
    csv_num(f, r->seconds_quantize);
    csv_num(f, r->seconds_eval);
    fprintf(f, ",%s\n", r->commit);
}

/* Appends bytes to path and fsyncs (one write call per line: a kill leaves a prefix of it at worst). */
static kv_status append_sync(const char *path, const char *data, size_t n, kv_error *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd < 0) {
        kv_fail(err, KV_EIO, "cannot open for appending: %s", strerror(errno));
        kv_error_context(err, path, -1, NULL);
        return KV_EIO;
    }
    ssize_t w = write(fd, data, n);
    int bad = w != (ssize_t)n || fsync(fd) != 0;
    int e = errno;
    close(fd);
    if (bad) {
        kv_fail(err, KV_EIO, "write failed: %s", strerror(e));
        kv_error_context(err, path, -1, NULL);
        return KV_EIO;
    }
    return KV_OK;
}

static kv_status write_atomic(const char *path, const char *data, size_t n, kv_error *err) {
    kv_outfile *f = NULL;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st != KV_OK) return st;
    st = kv_outfile_write(f, data, n, err);
    if (st == KV_OK) return kv_outfile_commit(f, err);
    kv_outfile_abort(f);
    return st;
}

/* Reads results.jsonl: complete lines only. A last line without its newline or not valid JSON (a kill in the
 * middle of a write) is cut off the file; a bad line before the last one is an error. */
static kv_status load_rows(const char *path, kv_study_row **rows, int64_t *n, int truncate_tail, kv_error *err) {
    *rows = NULL;
    *n = 0;
    if (!file_exists_(path)) return KV_OK;
    kv_mapped mp;
    kv_status st = kv_map_file(path, &mp, err);
    if (st != KV_OK) return st;
    const char *t = (const char *)mp.data;
    size_t pos = 0, good = 0, cap = 0;
    int64_t line = 0;
    while (pos < mp.size) {
        const char *nl = memchr(t + pos, '\n', mp.size - pos);
        size_t end = nl ? (size_t)(nl - t) : mp.size;
        line++;
        kv_json_doc *doc = NULL;
        kv_error e2;
        kv_error_clear(&e2);
        kv_study_row r;
        int ok = nl && end > pos && kv_json_parse(t + pos, end - pos, NULL, &doc, &e2) == KV_OK &&
                 row_parse(kv_json_root(doc), &r) == 0;
        kv_json_free(doc);
        if (!ok) {
            if (end + 1 < mp.size) { /* not the last line */
                kv_unmap_file(&mp);
                free(*rows);
                *rows = NULL;
                kv_fail(err, KV_EFORMAT, "line %lld is not a result row (remove it or the file)", (long long)line);
                kv_error_context(err, path, (int64_t)pos, NULL);
                return KV_EFORMAT;
            }
            break;
        }
        if ((size_t)*n == cap) {
            cap = cap ? cap * 2 : 64;
            kv_study_row *q = realloc(*rows, cap * sizeof *q);
            if (!q) {
                kv_unmap_file(&mp);
                return kv_fail(err, KV_ENOMEM, "out of memory");
            }
            *rows = q;
        }
        (*rows)[(*n)++] = r;
        pos = end + 1;
        good = pos;
    }
    const size_t size = mp.size;
    kv_unmap_file(&mp);
    if (truncate_tail && good < size && truncate(path, (off_t)good) != 0) {
        kv_fail(err, KV_EIO, "cannot cut the unfinished last line: %s", strerror(errno));
        kv_error_context(err, path, (int64_t)good, NULL);
        return KV_EIO;
    }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* evaluation of one model file                                                                               */

typedef struct study_ctx {
    kv_study *s;
    const kv_study_opts *o;
    kv_logprobs *base_lp;
    const kv_study_row *base;     /* NULL while the base row itself is computed */
    const int32_t *todo;          /* cell indices to run */
    int64_t n_todo, next, done;
    int threads_per_job;
    char imatrix[1100];           /* for llama-quantize */
    char alphas[1100];
    pthread_mutex_t mu;
    kv_status st;
    kv_error err;
    double t0;
} study_ctx;

static void sctx_log(const study_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sctx_log(const study_ctx *c, const char *fmt, ...) {
    if (!c->o->log) return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->o->log(c->o->user, msg);
}

/* Squared error of one tensor of q against the same tensor of base and the energy of base, row by row; an
 * entropy-coded (ecw) tensor has no fixed-size rows and is decoded whole first (one tensor in memory). Returns
 * 0 when a row cannot be decoded. */
static int tensor_error(const kv_model_file *base, const kv_tensor *bt, const kv_model_file *q, const kv_tensor *t,
                        float *a, float *b, kv_pool *pool, double *se, double *ss) {
    const int64_t cols = t->shape[t->n_dims - 1], rows = kv_tensor_nelements(t) / cols;
    kv_error e2;
    kv_error_clear(&e2);
    float *whole = NULL;
    if (t->type == KV_TYPE_ECW) {
        whole = malloc((size_t)rows * (size_t)cols * sizeof *whole);
        if (!whole || kv_ecw_tensor_to_f32(q, t, whole, pool, &e2) != KV_OK) { free(whole); return 0; }
    }
    int ok = 1;
    *se = *ss = 0;
    for (int64_t r = 0; r < rows && ok; r++) {
        const float *qr = whole ? whole + r * cols : b;
        if (kv_model_tensor_row_f32(base, bt, r, a, &e2) != KV_OK || (!whole && kv_model_tensor_row_f32(q, t, r, b, &e2) != KV_OK))
            ok = 0;
        for (int64_t k = 0; ok && k < cols; k++) {
            const double d = (double)qr[k] - a[k];
            *se += d * d;
            *ss += (double)a[k] * a[k];
        }
    }
    free(whole);
    return ok;
}

/* Per-tensor relative error against the unquantized weights and its gap to the Gaussian rate-distortion bound,
 * written as CSV (name, bits/weight, relative MSE, gap in bits). */
static kv_status layer_gaps(const kv_model_file *base, const kv_model_file *q, const char *path, kv_pool *pool, kv_error *err) {
    size_t cap = 1 << 14, len = 0;
    char *buf = malloc(cap);
    if (!buf) return kv_fail(err, KV_ENOMEM, "out of memory");
    len = (size_t)snprintf(buf, cap, "tensor,bpw,rel_mse,gap_bits\n");
    float *a = NULL, *b = NULL;
    int64_t acap = 0;
    kv_status st = KV_OK;
    for (int64_t i = 0; i < kv_model_n_tensors(q) && st == KV_OK; i++) {
        const kv_tensor *t = kv_model_tensor(q, i);
        const kv_tensor *bt = kv_model_find(base, t->name);
        if (!bt || t->n_dims != 2 || kv_tensor_nelements(bt) != kv_tensor_nelements(t)) continue;
        const int64_t cols = t->shape[t->n_dims - 1];
        if (cols > acap) {
            float *na = realloc(a, (size_t)cols * sizeof *a), *nb = na ? realloc(b, (size_t)cols * sizeof *b) : NULL;
            if (na) a = na;
            if (!na || !nb) { st = kv_fail(err, KV_ENOMEM, "out of memory"); break; }
            b = nb;
            acap = cols;
        }
        double se = 0, ss = 0;
        if (!tensor_error(base, bt, q, t, a, b, pool, &se, &ss) || !(ss > 0)) continue; /* undecodable: no data */
        const double bpw = (double)t->nbytes * 8.0 / (double)kv_tensor_nelements(t), rel = se / ss;
        const double gap = rel > 0 ? 0.5 * log2(rel) + bpw : NAN;
        if (len + 256 > cap) {
            char *nbuf = realloc(buf, cap *= 2);
            if (!nbuf) { st = kv_fail(err, KV_ENOMEM, "out of memory"); break; }
            buf = nbuf;
        }
        len += (size_t)snprintf(buf + len, cap - len, "%s,%.6f,%.9g,%.6f\n", t->name, bpw, rel, gap);
    }
    free(a);
    free(b);
    if (st == KV_OK) st = write_atomic(path, buf, len, err);
    free(buf);
    return st;
}

static void fill_tasks(const study_ctx *c, kv_study_row *r, const kv_task_result *tr) {
    const kv_study *s = c->s;
    double sum = 0;
    r->n_tasks = s->n_tasks;
    for (int i = 0; i < s->n_tasks; i++) {
        snprintf(r->task[i], sizeof r->task[i], "%.63s", s->tasksets[i]->name);
        r->acc[i] = tr[i].acc;
        r->acc_norm[i] = tr[i].acc_norm;
        sum += tr[i].acc;
    }
    r->acc_mean = s->n_tasks ? sum / s->n_tasks : NAN;
    r->recovery = NAN;
    if (c->base && s->n_tasks && c->base->acc_mean > 0) r->recovery = 100.0 * r->acc_mean / c->base->acc_mean;
    else if (!c->base && s->n_tasks) r->recovery = 100.0;
}

/* Evaluates the model at path into r (KLD/PPL against the base log-probs, tasks). */
static kv_status eval_file(const study_ctx *c, const char *path, const char *act, kv_pool *pool, kv_study_row *r,
                           kv_error *err) {
    const kv_study *s = c->s;
    const double t0 = kv_now_seconds();
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    kv_tokenizer *tok = NULL;
    kv_task_result tr[KV_STUDY_MAX_TASKS];
    memset(tr, 0, sizeof tr);
    kv_status st = kv_model_open(path, &mf, err);
    if (st == KV_OK) st = kv_model_load(mf, NULL, &m, err);
    if (st == KV_OK) st = kv_model_apply_transforms(m, mf, err);
    if (st == KV_OK) st = kv_model_linears_to_f32(m, err);
    if (st == KV_OK && act && strcmp(act, "none") && !kv_model_act_format(mf)) {
        kv_format af;
        int none = 1;
        if ((st = kv_act_format(act, &af, &none, err)) == KV_OK && !none) st = kv_model_set_act_quant(m, &af, 0, err);
    }
    if (st == KV_OK && s->n_tasks) st = kv_tokenizer_load_for_model(mf, &tok, err);
    kv_eval_result er;
    memset(&er, 0, sizeof er);
    if (st == KV_OK) st = kv_eval_kld(m, c->base_lp, pool, &er, err);
    for (int i = 0; i < s->n_tasks && st == KV_OK; i++) {
        kv_task_opts to = {.add_bos = -1, .limit = s->task_limit};
        st = kv_tasks_eval(m, tok, s->tasksets[i], &to, pool, &tr[i], NULL, err);
        if (st != KV_OK) kv_error_context(err, s->tasks[i], -1, NULL);
    }
    if (st == KV_OK) {
        r->n_params = kv_model_n_params(mf);
        r->tensor_bytes = kv_model_n_bytes(mf);
        struct stat sb;
        r->file_bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        r->bpw = r->n_params ? (double)r->tensor_bytes * 8.0 / (double)r->n_params : NAN;
        r->ppl = er.ppl;
        r->ppl_stderr = er.ppl_stderr;
        r->ppl_ratio = er.kld.ppl_ratio;
        r->kld = er.kld.mean;
        r->kld_stderr = er.kld.mean_stderr;
        r->kld_p99 = er.kld.p99;
        r->top1 = er.kld.top1_agree;
        r->dp_rms = er.kld.dp_rms;
        fill_tasks(c, r, tr);
    }
    r->seconds_eval = kv_now_seconds() - t0;
    kv_tokenizer_free(tok);
    kv_model_free(m);
    kv_model_close(mf);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* cells                                                                                                      */

static kv_status run_llama_quantize(const study_ctx *c, const kv_study_cell *cell, const char *out, int threads,
                                    kv_error *err) {
    char exe[1100], logp[1200], th[16];
    snprintf(exe, sizeof exe, "%s/llama-quantize", c->o->llama_cpp_dir);
    snprintf(logp, sizeof logp, "%s/cells/%s.log", c->s->out_dir, cell->id);
    snprintf(th, sizeof th, "%d", threads);
    char *argv[10];
    int a = 0;
    argv[a++] = exe;
    if (c->s->llama_imatrix) {
        argv[a++] = "--imatrix";
        argv[a++] = (char *)c->imatrix;
    }
    argv[a++] = (char *)c->s->llama_model;
    argv[a++] = (char *)out;
    argv[a++] = (char *)cell->format;
    argv[a++] = th;
    argv[a] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, logp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        kv_fail(err, KV_EIO, "cannot run llama-quantize: %s", strerror(rc));
        kv_error_context(err, exe, -1, NULL);
        return KV_EIO;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        unlink(out);
        kv_fail(err, KV_EIO, "llama-quantize %s failed (exit %d; its output: %s)", cell->format,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1, logp);
        return KV_EIO;
    }
    return KV_OK;
}

static kv_status run_cell(study_ctx *c, const kv_study_cell *cell, kv_pool *pool, kv_study_row *r, kv_error *err) {
    const kv_study *s = c->s;
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", cell->id);
    snprintf(r->label, sizeof r->label, "%s", cell->label);
    snprintf(r->kind, sizeof r->kind, "%s", cell->kind == KV_CELL_LLAMACPP ? "llama.cpp" : "kvant");
    snprintf(r->format, sizeof r->format, "%s", cell->format);
    snprintf(r->method, sizeof r->method, "%s", cell->method);
    snprintf(r->transform, sizeof r->transform, "%s", cell->transform);
    snprintf(r->act, sizeof r->act, "%s", cell->act);
    snprintf(r->commit, sizeof r->commit, "%s", c->o->commit ? c->o->commit : "");
    r->bits_target = cell->bits;
    char out[1200];
    snprintf(out, sizeof out, "%s/cells/%s.gguf", s->out_dir, cell->id);
    const double t0 = kv_now_seconds();
    kv_status st = KV_OK;
    char **specs = NULL;
    int n_specs = 0;
    if (cell->kind == KV_CELL_LLAMACPP) st = run_llama_quantize(c, cell, out, kv_pool_threads(pool), err);
    else {
        const char *ov[KV_STUDY_MAX_OVERRIDES + 512];
        int nov = 0;
        for (int i = 0; i < cell->n_overrides; i++) ov[nov++] = cell->overrides[i];
        if (cell->bits > 0) {
            char cand[512];
            const char *items[32];
            int ni = 0;
            snprintf(cand, sizeof cand, "%s", cell->candidates);
            char *save = NULL;
            for (char *t = strtok_r(cand, ",", &save); t && ni < 32; t = strtok_r(NULL, ",", &save)) items[ni++] = t;
            kv_alloc_mode mode = KV_ALLOC_LINEARITY;
            kv_alloc_report ar;
            kv_transform_set ts = {0};
            if ((st = kv_alloc_mode_parse(cell->allocate, &mode, err)) == KV_OK && cell->transform[0])
                st = kv_transform_set_parse(cell->transform, &ts, err);
            if (st == KV_OK)
                st = kv_alloc_overrides(s->model, mode == KV_ALLOC_UNIFORM ? NULL : c->alphas, items, ni, cell->bits, mode,
                                        ts.rht ? ts.rht_block : 0, s->seed, pool, &specs, &n_specs, &ar, err);
            for (int i = 0; st == KV_OK && i < n_specs && nov < (int)(sizeof ov / sizeof ov[0]); i++) ov[nov++] = specs[i];
        }
        kv_quantize_opts qo;
        memset(&qo, 0, sizeof qo);
        qo.format = cell->format;
        qo.method = cell->method;
        qo.transforms = cell->transform[0] ? cell->transform : NULL;
        qo.overrides = ov;
        qo.n_overrides = nov;
        qo.pure = cell->pure;
        qo.calib_path = s->calib[0] ? s->calib : NULL;
        qo.calib_tokens = s->calib_tokens;
        qo.no_imatrix = cell->no_imatrix;
        qo.act = strcmp(cell->act, "none") ? cell->act : NULL;
        qo.entropy_code = cell->entropy_code;
        qo.seed = s->seed;
        qo.pool = pool;
        qo.quiet = 1;
        kv_quantize_report qr;
        if (st == KV_OK) st = kv_quantize_model(s->model, out, &qo, &qr, err);
    }
    for (int i = 0; i < n_specs; i++) free(specs[i]);
    free(specs);
    r->seconds_quantize = kv_now_seconds() - t0;
    if (st == KV_OK) st = eval_file(c, out, cell->act, pool, r, err);
    if (st == KV_OK && s->layer_gaps && !cell->transform[0]) {
        char lp[1200];
        snprintf(lp, sizeof lp, "%s/cells/%s.layers.csv", s->out_dir, cell->id);
        kv_model_file *bm = NULL, *qm = NULL;
        if ((st = kv_model_open(s->model, &bm, err)) == KV_OK && (st = kv_model_open(out, &qm, err)) == KV_OK)
            st = layer_gaps(bm, qm, lp, pool, err);
        kv_model_close(qm);
        kv_model_close(bm);
    }
    if (!s->keep_models) unlink(out);
    if (st != KV_OK) kv_error_context(err, NULL, -1, cell->label);
    return st;
}

static kv_status record_row(study_ctx *c, const kv_study_row *r, kv_error *err) {
    char *mem = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&mem, &n);
    if (!f) return kv_fail(err, KV_ENOMEM, "out of memory");
    kv_jw w;
    kv_jw_init(&w, f, 0);
    row_json(&w, r);
    kv_jw_end(&w);
    fclose(f);
    char p[1200];
    path_in(p, sizeof p, c->s, "results.jsonl");
    kv_status st = append_sync(p, mem, n, err);
    free(mem);
    if (st != KV_OK) return st;
    mem = NULL;
    f = open_memstream(&mem, &n);
    if (!f) return kv_fail(err, KV_ENOMEM, "out of memory");
    csv_row(f, c->s, r);
    fclose(f);
    path_in(p, sizeof p, c->s, "results.csv");
    st = append_sync(p, mem, n, err);
    free(mem);
    return st;
}

static void *worker(void *arg) {
    study_ctx *c = arg;
    kv_pool *pool = kv_pool_create(c->threads_per_job);
    for (;;) {
        pthread_mutex_lock(&c->mu);
        int64_t k = c->st == KV_OK && c->next < c->n_todo ? c->next++ : -1;
        pthread_mutex_unlock(&c->mu);
        if (k < 0) break;
        kv_study_row r;
        kv_error e;
        kv_error_clear(&e);
        kv_status st = run_cell(c, &c->s->cells[c->todo[k]], pool, &r, &e);
        pthread_mutex_lock(&c->mu);
        if (st == KV_OK) st = record_row(c, &r, &e);
        if (st == KV_OK) {
            c->done++;
            if (c->o->on_row) c->o->on_row(c->o->user, &r, c->done, c->n_todo);
        } else if (c->st == KV_OK) {
            c->st = st;
            c->err = e;
        }
        pthread_mutex_unlock(&c->mu);
    }
    kv_pool_destroy(pool);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* the base model: its row, its log-probs (OUT/base-ID.logits), the imatrix and alphas shared by cells        */

static void base_id(const kv_study *s, char *id) {
    char key[3000];
    int w = snprintf(key, sizeof key, "base|model=%s|text=%s|ctx=%d|chunks=%lld|limit=%lld", s->model, s->text, (int)s->ctx,
                     (long long)s->chunks, (long long)s->task_limit);
    for (int i = 0; i < s->n_tasks && w > 0 && (size_t)w < sizeof key; i++) w += snprintf(key + w, sizeof key - (size_t)w, "|task=%s", s->tasks[i]);
    snprintf(id, 17, "%016llx", (unsigned long long)fnv1a(key));
}

static kv_status base_prepare(study_ctx *c, kv_pool *pool, const kv_study_row *have, kv_study_row *row, int *fresh,
                              kv_error *err) {
    kv_study *s = c->s;
    char id[17], lpath[1200];
    base_id(s, id);
    snprintf(lpath, sizeof lpath, "%s/base-%s.logits", s->out_dir, id);
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    kv_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    kv_mapped text = {0};
    int mapped = 0;
    *fresh = 0;
    kv_eval_opts eo = {.ctx = s->ctx, .chunks = s->chunks, .style = KV_PPL_HF, .bos_id = -1};
    kv_status st = kv_model_open(s->model, &mf, err);
    if (st == KV_OK) st = kv_tokenizer_load_for_model(mf, &tok, err);
    if (st == KV_OK && (st = kv_map_file(s->text, &text, err)) == KV_OK) mapped = 1;
    if (st == KV_OK) st = kv_tokenize(tok, (const char *)text.data, text.size, kv_tokenizer_bos(tok) >= 0, &ids, &n_ids, err);
    if (st == KV_OK) st = kv_model_load(mf, NULL, &m, err);
    if (st == KV_OK && file_exists_(lpath)) {
        kv_logprobs *lp = NULL;
        kv_error e2;
        kv_error_clear(&e2);
        if (kv_logprobs_load(lpath, &lp, &e2) == KV_OK && kv_logprobs_check(lp, m, ids, (int64_t)n_ids, &eo, &e2) == KV_OK)
            c->base_lp = lp;
        else {
            kv_logprobs_free(lp);
            sctx_log(c, "recomputing the base log-probs (%s)", e2.message);
        }
    }
    kv_eval_result er;
    memset(&er, 0, sizeof er);
    const double t0 = kv_now_seconds();
    if (st == KV_OK && !c->base_lp) {
        sctx_log(c, "base model: log-probs of %s (%lld tokens)", s->text, (long long)n_ids);
        st = kv_eval_base_logprobs(m, ids, (int64_t)n_ids, &eo, pool, &c->base_lp, &er, err);
        if (st == KV_OK) st = kv_logprobs_save(c->base_lp, lpath, err);
    }
    if (st == KV_OK && have) *row = *have;
    else if (st == KV_OK) {
        if (!er.ppl) st = kv_eval_ppl(m, ids, (int64_t)n_ids, &eo, pool, &er, err);
        memset(row, 0, sizeof *row);
        snprintf(row->id, sizeof row->id, "%s", id);
        snprintf(row->label, sizeof row->label, "base (unquantized)");
        snprintf(row->kind, sizeof row->kind, "base");
        snprintf(row->act, sizeof row->act, "none");
        snprintf(row->commit, sizeof row->commit, "%s", c->o->commit ? c->o->commit : "");
        row->n_params = kv_model_n_params(mf);
        row->tensor_bytes = kv_model_n_bytes(mf);
        row->bpw = row->n_params ? (double)row->tensor_bytes * 8 / (double)row->n_params : NAN;
        row->ppl = er.ppl;
        row->ppl_stderr = er.ppl_stderr;
        row->ppl_ratio = 1;
        row->kld = row->kld_stderr = row->kld_p99 = 0;
        row->top1 = 100;
        row->dp_rms = 0;
        row->bits_target = NAN;
        kv_task_result tr[KV_STUDY_MAX_TASKS];
        memset(tr, 0, sizeof tr);
        for (int i = 0; i < s->n_tasks && st == KV_OK; i++) {
            kv_task_opts to = {.add_bos = -1, .limit = s->task_limit};
            st = kv_tasks_eval(m, tok, s->tasksets[i], &to, pool, &tr[i], NULL, err);
        }
        if (st == KV_OK) fill_tasks(c, row, tr);
        row->seconds_eval = kv_now_seconds() - t0;
        *fresh = 1;
    }
    /* the imatrix llama-quantize gets: kvant's, from the calibration windows kvant's own cells use */
    if (st == KV_OK && c->imatrix[0] && !file_exists_(c->imatrix)) {
        kv_quantize_opts qo = {.calib_path = s->calib, .calib_tokens = s->calib_tokens, .seed = s->seed};
        int32_t *cids = NULL;
        int64_t nc = 0;
        kv_imatrix *im = NULL;
        sctx_log(c, "imatrix for llama-quantize from %s (%lld tokens)", s->calib, (long long)s->calib_tokens);
        if ((st = kv_qcalib_tokens(mf, &qo, 512, &cids, &nc, err)) == KV_OK && (st = kv_imatrix_create(&im, err)) == KV_OK) {
            kv_imatrix_set_dataset(im, s->calib);
            if ((st = kv_imatrix_collect(m, cids, nc, 512, pool, im, NULL, err)) == KV_OK) st = kv_imatrix_save(im, c->imatrix, err);
        }
        kv_imatrix_free(im);
        free(cids);
    }
    /* "alphas": "auto": layer sensitivities measured once on the calibration text (KLD metric) */
    if (st == KV_OK && !strcmp(s->alphas, "auto") && !file_exists_(c->alphas)) {
        kv_quantize_opts qo = {.calib_path = s->calib, .calib_tokens = s->alpha_tokens, .seed = s->seed};
        int32_t *cids = NULL;
        int64_t nc = 0;
        kv_sens_result sr;
        memset(&sr, 0, sizeof sr);
        kv_sens_opts so = {.metric = KV_SENS_KLD, .ctx = 512, .seed = s->seed};
        sctx_log(c, "layer sensitivities for the allocation (%lld calibration tokens)", (long long)s->alpha_tokens);
        if ((st = kv_qcalib_tokens(mf, &qo, 512, &cids, &nc, err)) == KV_OK &&
            (st = kv_sensitivity_run(mf, cids, nc, &so, pool, &sr, err)) == KV_OK)
            st = kv_sens_save(&sr, c->alphas, err);
        kv_sens_free(&sr);
        free(cids);
    }
    free(ids);
    if (mapped) kv_unmap_file(&text);
    kv_tokenizer_free(tok);
    kv_model_free(m);
    kv_model_close(mf);
    return st;
}

static int row_index(const kv_study_row *rows, int64_t n, const char *id) {
    for (int64_t i = 0; i < n; i++)
        if (!strcmp(rows[i].id, id)) return (int)i;
    return -1;
}

/* results.json (all rows in spec order, base first) and results.csv rewritten from results.jsonl. */
static kv_status rewrite_outputs(const kv_study *s, kv_error *err) {
    kv_study_row *rows = NULL;
    int64_t n = 0;
    kv_status st = kv_study_rows(s, &rows, &n, err);
    if (st != KV_OK) return st;
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    if (!f) { free(rows); return kv_fail(err, KV_ENOMEM, "out of memory"); }
    kv_jw w;
    kv_jw_init(&w, f, 1);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "study"); kv_jw_str(&w, s->name);
    kv_jw_key(&w, "model"); kv_jw_str(&w, s->model);
    kv_jw_key(&w, "text"); kv_jw_str(&w, s->text);
    kv_jw_key(&w, "ctx"); kv_jw_int(&w, s->ctx);
    kv_jw_key(&w, "chunks"); kv_jw_int(&w, s->chunks);
    kv_jw_key(&w, "cells"); kv_jw_int(&w, s->n_cells);
    kv_jw_key(&w, "rows");
    kv_jw_arr_begin(&w);
    for (int64_t i = 0; i < n; i++) row_json(&w, &rows[i]);
    kv_jw_arr_end(&w);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
    fclose(f);
    char p[1200];
    path_in(p, sizeof p, s, "results.json");
    st = write_atomic(p, mem, len, err);
    free(mem);
    mem = NULL;
    if (st == KV_OK && (f = open_memstream(&mem, &len)) != NULL) {
        csv_header(f, s);
        for (int64_t i = 0; i < n; i++) csv_row(f, s, &rows[i]);
        fclose(f);
        path_in(p, sizeof p, s, "results.csv");
        st = write_atomic(p, mem, len, err);
        free(mem);
    }
    free(rows);
    return st;
}

kv_status kv_study_rows(const kv_study *s, kv_study_row **out, int64_t *n_out, kv_error *err) {
    *out = NULL;
    *n_out = 0;
    char p[1200];
    path_in(p, sizeof p, s, "results.jsonl");
    kv_study_row *all = NULL;
    int64_t n = 0;
    kv_status st = load_rows(p, &all, &n, 0, err);
    if (st != KV_OK) return st;
    kv_study_row *rows = malloc(sizeof *rows * (size_t)(s->n_cells + 1));
    if (!rows) { free(all); return kv_fail(err, KV_ENOMEM, "out of memory"); }
    int64_t k = 0;
    char bid[17];
    base_id(s, bid);
    int b = row_index(all, n, bid);
    if (b >= 0) rows[k++] = all[b];
    for (int64_t i = 0; i < s->n_cells; i++) {
        int j = row_index(all, n, s->cells[i].id);
        if (j >= 0) rows[k++] = all[j];
    }
    free(all);
    *out = rows;
    *n_out = k;
    return KV_OK;
}

kv_status kv_study_run(kv_study *s, const kv_study_opts *o_in, kv_study_summary *sum, kv_error *err) {
    kv_study_opts o = o_in ? *o_in : (kv_study_opts){0};
    kv_study_summary local;
    if (!sum) sum = &local;
    memset(sum, 0, sizeof *sum);
    sum->cells = s->n_cells;
    const double t0 = kv_now_seconds();
    char cells_dir[1200], p[1200];
    snprintf(cells_dir, sizeof cells_dir, "%s/cells", s->out_dir);
    kv_status st = mkdir_p(cells_dir, err);
    if (st != KV_OK) return st;
    if (o.llama_cpp_dir) {
        char exe[1100];
        snprintf(exe, sizeof exe, "%s/llama-quantize", o.llama_cpp_dir);
        if (access(exe, X_OK) != 0) {
            kv_fail(err, KV_EINVAL, "LLAMA_CPP_DIR has no runnable llama-quantize");
            kv_error_context(err, exe, -1, NULL);
            return KV_EINVAL;
        }
    }
    path_in(p, sizeof p, s, "results.jsonl");
    kv_study_row *have = NULL;
    int64_t n_have = 0;
    if ((st = load_rows(p, &have, &n_have, 1, err)) != KV_OK) return st;
    study_ctx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    c.o = &o;
    int32_t *todo = malloc(sizeof *todo * (size_t)(s->n_cells + 1));
    if (!todo) { free(have); return kv_fail(err, KV_ENOMEM, "out of memory"); }
    int need_llama = 0;
    for (int64_t i = 0; i < s->n_cells; i++) {
        if (row_index(have, n_have, s->cells[i].id) >= 0) { sum->already++; continue; }
        if (s->cells[i].kind == KV_CELL_LLAMACPP && !o.llama_cpp_dir) { sum->left_out++; continue; }
        need_llama |= s->cells[i].kind == KV_CELL_LLAMACPP;
        todo[c.n_todo++] = (int32_t)i;
    }
    if (sum->left_out) sctx_log(&c, "%lld llama.cpp cells left out: set LLAMA_CPP_DIR to run them", (long long)sum->left_out);
    if (need_llama && s->llama_imatrix) path_in(c.imatrix, sizeof c.imatrix, s, "imatrix.dat");
    path_in(c.alphas, sizeof c.alphas, s, "alphas.json");
    if (s->alphas[0] && strcmp(s->alphas, "auto")) snprintf(c.alphas, sizeof c.alphas, "%s", s->alphas);
    int need_alphas = 0;
    for (int64_t i = 0; i < c.n_todo; i++)
        need_alphas |= s->cells[todo[i]].bits > 0 && strcmp(s->cells[todo[i]].allocate, "uniform");
    char saved_alphas[1024];
    snprintf(saved_alphas, sizeof saved_alphas, "%s", s->alphas);
    if (!need_alphas) s->alphas[0] = 0; /* nothing to allocate this time: do not measure them */
    const int threads = o.threads > 0 ? o.threads : s->threads > 0 ? s->threads : 0;
    kv_pool *pool = kv_pool_create(threads);
    int jobs = o.jobs > 0 ? o.jobs : s->jobs;
    const int total = kv_pool_threads(pool);
    if (jobs > total) jobs = total;
    if (jobs < 1) jobs = 1;
    c.threads_per_job = total / jobs > 0 ? total / jobs : 1;
    char bid[17];
    base_id(s, bid);
    int bi = row_index(have, n_have, bid);
    kv_study_row base;
    int fresh = 0;
    st = base_prepare(&c, pool, bi >= 0 ? &have[bi] : NULL, &base, &fresh, err);
    snprintf(s->alphas, sizeof s->alphas, "%s", saved_alphas);
    kv_pool_destroy(pool);
    if (st == KV_OK && fresh) {
        st = record_row(&c, &base, err);
        if (st == KV_OK && o.on_row) o.on_row(o.user, &base, 0, c.n_todo);
    }
    if (st == KV_OK && c.n_todo) {
        c.base = &base;
        c.todo = todo;
        c.t0 = kv_now_seconds();
        pthread_mutex_init(&c.mu, NULL);
        pthread_t th[256];
        int started = 0;
        for (int j = 1; j < jobs; j++)
            if (pthread_create(&th[started], NULL, worker, &c) == 0) started++;
        worker(&c);
        for (int j = 0; j < started; j++) pthread_join(th[j], NULL);
        pthread_mutex_destroy(&c.mu);
        if (c.st != KV_OK) {
            st = c.st;
            *err = c.err;
        }
        sum->run = c.done;
    }
    kv_logprobs_free(c.base_lp);
    free(todo);
    free(have);
    kv_error e2;
    kv_error_clear(&e2);
    if (rewrite_outputs(s, st == KV_OK ? err : &e2) != KV_OK && st == KV_OK) st = err->status;
    sum->seconds = kv_now_seconds() - t0;
    return st;
}
