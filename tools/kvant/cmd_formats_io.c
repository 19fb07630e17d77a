/* cmd_formats_io.c — `kvant formats quantize|dequantize`: raw little-endian float32 rows of N values to one
 * format's packed rows and back (issue #5). Any format name of kv_format_get works; rows are quantized
 * independently, in parallel, with results independent of the thread count. */
#include "cli.h"
#include "formats_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct io_opts {
    const char *format, *in, *out, *importance;
    long long row, threads;
    int quiet, json;
} io_opts;

static void usage(FILE *out, const char *sub) {
    if (!strcmp(sub, "quantize"))
        fprintf(out, "usage: kvant formats quantize --format F --row N --in X.f32 --out Y.bin [--importance W.f32]\n"
                     "                              [-t N] [--json] [--quiet]\n\n"
                     "Quantizes the rows of N little-endian float32 values in X.f32 to format F (q4_0, q4_k, iq4_nl,\n"
                     "mxfp4, int4_g128_asym, ...; see 'kvant formats') and writes the packed rows to Y.bin.\n"
                     "W.f32 holds N importance weights (llama.cpp imatrix semantics) shared by every row.\n");
    else
        fprintf(out, "usage: kvant formats dequantize --format F --row N --in Y.bin --out Z.f32 [-t N] [--json]\n"
                     "                                [--quiet]\n\n"
                     "Dequantizes packed rows of N values of format F to little-endian float32.\n");
    fprintf(out, "\n  -t, --threads N   worker threads (default: all cores)\n"
                 "  --json            print a summary object {\"format\", \"rows\", \"row\", \"bytes_in\", \"bytes_out\",\n"
                 "                    \"bits_per_weight\"}\n"
                 "  --quiet           no progress line\n");
}

/* Returns -1 when parsed, else the exit code to return. */
static int parse(int argc, char **argv, const char *sub, int need_importance_ok, io_opts *o) {
    char cmd[40];
    snprintf(cmd, sizeof cmd, "formats %s", sub);
    memset(o, 0, sizeof *o);
    o->row = -1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (kv_cli_flag(argv, i, "--quiet", "-q")) o->quiet = 1;
        else if (kv_cli_flag(argv, i, "--json", NULL)) o->json = 1;
        else if (kv_cli_opt(argc, argv, &i, "--format", "-f", &v)) { if (!v) return kv_cli_usage(cmd, "--format needs a value"); o->format = v; }
        else if (kv_cli_opt(argc, argv, &i, "--in", "-i", &v)) { if (!v) return kv_cli_usage(cmd, "--in needs a value"); o->in = v; }
        else if (kv_cli_opt(argc, argv, &i, "--out", "-o", &v)) { if (!v) return kv_cli_usage(cmd, "--out needs a value"); o->out = v; }
        else if (need_importance_ok && kv_cli_opt(argc, argv, &i, "--importance", "-w", &v)) {
            if (!v) return kv_cli_usage(cmd, "--importance needs a value");
            o->importance = v;
        } else if (kv_cli_opt(argc, argv, &i, "--row", "-n", &v)) {
            if (kv_cli_parse_int(v, 1, (long long)1 << 40, &o->row)) return kv_cli_usage(cmd, "--row needs a positive integer");
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if (kv_cli_parse_int(v, 0, 4096, &o->threads)) return kv_cli_usage(cmd, "--threads needs an integer 0..4096");
        } else return kv_cli_usage(cmd, "unknown argument '%s'", argv[i]);
    }
    if (!o->format) return kv_cli_usage(cmd, "--format is required");
    if (o->row < 0) return kv_cli_usage(cmd, "--row is required");
    if (!o->in || !o->out) return kv_cli_usage(cmd, "--in and --out are required");
    int prc = kv_cli_prepare_output(cmd, o->out); /* a read-only directory fails before the work */
    if (prc) return prc;
    return -1;
}

/* Rows go to the pool in tasks of ROWS_PER_TASK rows; a round of tasks is followed by a progress update. */
#define ROWS_PER_TASK 64

typedef struct io_job {
    const kv_format *f;
    const uint8_t *src;
    uint8_t *dst;
    const float *importance;
    int64_t row, row0, nrows; /* this round: rows [row0, row0 + nrows) */
    size_t in_row_bytes, out_row_bytes;
    int quantize;
    kv_status *status; /* per task of the round, so the first failure is reported in row order */
    kv_error *errors;
} io_job;

static void io_task(void *ctx, int64_t task, int thread) {
    (void)thread;
    io_job *j = ctx;
    int64_t r0 = j->row0 + task * ROWS_PER_TASK, end = j->row0 + j->nrows;
    int64_t cnt = end - r0 < ROWS_PER_TASK ? end - r0 : ROWS_PER_TASK;
    const uint8_t *in = j->src + (size_t)r0 * j->in_row_bytes;
    uint8_t *out = j->dst + (size_t)r0 * j->out_row_bytes;
    if (j->quantize) {
        j->status[task] = j->f->quantize(j->f, (const float *)in, out, cnt, j->row, j->importance, &j->errors[task]);
        return;
    }
    for (int64_t r = 0; r < cnt; r++)
        j->f->dequantize(j->f, in + (size_t)r * j->in_row_bytes, (float *)(out + (size_t)r * j->out_row_bytes), j->row);
    j->status[task] = KV_OK;
}

/* Runs every row through the pool; returns the first failure (in row order) with the input file as context. */
static kv_status run_rows(io_job *j, int64_t total_rows, kv_pool *pool, int quiet, const char *label,
                          const char *in_path, kv_error *err) {
    int64_t per_round = (int64_t)kv_pool_threads(pool) * 4;
    kv_status *status = calloc((size_t)per_round, sizeof *status);
    kv_error *errors = calloc((size_t)per_round, sizeof *errors);
    if (!status || !errors) {
        free(status);
        free(errors);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    j->status = status;
    j->errors = errors;
    kv_progress prog;
    kv_progress_begin(&prog, label, total_rows, quiet);
    kv_status st = KV_OK;
    for (int64_t r = 0; r < total_rows && !st; r += per_round * ROWS_PER_TASK) {
        j->row0 = r;
        j->nrows = total_rows - r < per_round * ROWS_PER_TASK ? total_rows - r : per_round * ROWS_PER_TASK;
        int64_t ntasks = (j->nrows + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
        kv_pool_run(pool, ntasks, io_task, j);
        for (int64_t t = 0; t < ntasks && !st; t++)
            if (status[t]) {
                st = status[t];
                if (err) *err = errors[t];
                kv_error_context(err, in_path, (int64_t)((r + t * ROWS_PER_TASK) * (int64_t)j->in_row_bytes), NULL);
            }
        kv_progress_update(&prog, r + j->nrows);
    }
    kv_progress_end(&prog);
    free(status);
    free(errors);
    return st;
}

static void print_summary(const io_opts *o, const kv_format *f, int64_t nrows, size_t in_bytes, size_t out_bytes,
                          const char *sub) {
    if (o->json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "format"); kv_jw_str(&w, f->name);
        kv_jw_key(&w, "rows"); kv_jw_int(&w, nrows);
        kv_jw_key(&w, "row"); kv_jw_int(&w, o->row);
        kv_jw_key(&w, "bytes_in"); kv_jw_int(&w, (int64_t)in_bytes);
        kv_jw_key(&w, "bytes_out"); kv_jw_int(&w, (int64_t)out_bytes);
        kv_jw_key(&w, "bits_per_weight"); kv_jw_num(&w, kv_format_bpw(f, o->row));
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else if (!o->quiet) {
        printf("%s: %lld rows of %lld (%s, %.4f bits/weight): %zu -> %zu bytes, %s\n", sub, (long long)nrows,
               o->row, f->name, kv_format_bpw(f, o->row), in_bytes, out_bytes, o->out);
    }
}

static kv_status write_all(const char *path, const void *data, size_t n, kv_error *err) {
    kv_outfile *of = NULL;
    kv_status st = kv_outfile_open(path, &of, err);
    if (st) return st;
    st = kv_outfile_write(of, data, n, err);
    if (st) {
        kv_outfile_abort(of);
        return st;
    }
    return kv_outfile_commit(of, err);
}

/* The first non-finite value of the input, reported with its byte offset (quantization would refuse it). */
static kv_status check_finite(const kv_mapped *m, int64_t row, kv_error *err) {
    size_t n = m->size / 4;
    for (size_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, m->data + 4 * i, 4);
        if (!isfinite(v)) {
            kv_fail(err, KV_EFORMAT, "non-finite value (%g) at row %lld, column %lld", (double)v,
                    (long long)(i / (size_t)row), (long long)(i % (size_t)row));
            kv_error_context(err, m->path, (int64_t)(4 * i), NULL);
            return KV_EFORMAT;
        }
    }
    return KV_OK;
}

static int formats_io(int argc, char **argv, int quantize) {
    const char *sub = quantize ? "quantize" : "dequantize";
    char cmd[40];
    snprintf(cmd, sizeof cmd, "formats %s", sub);
    if (kv_cli_wants_help(argc, argv)) {
        usage(stdout, sub);
        return 0;
    }
    io_opts o;
    int rc = parse(argc, argv, sub, quantize, &o);
    if (rc >= 0) return rc;

    kv_error err;
    kv_error_clear(&err);
    kv_format f;
    if (kv_format_get(o.format, &f, &err)) return kv_cli_fail(cmd, &err);
    size_t packed = kv_format_row_bytes(&f, o.row);
    if (!packed) return kv_cli_usage(cmd, "--row %lld is not a multiple of %s's block of %d", o.row, f.name, (int)f.block);
    size_t fl_bytes = (size_t)o.row * 4;
    size_t in_row = quantize ? fl_bytes : packed, out_row = quantize ? packed : fl_bytes;

    kv_mapped in = {0}, imp = {0};
    uint8_t *out = NULL;
    kv_pool *pool = NULL;
    kv_status st = kv_map_file(o.in, &in, &err);
    if (!st && (in.size == 0 || in.size % in_row)) {
        st = kv_fail(&err, KV_EFORMAT, "size %zu is not a positive multiple of the row size %zu (%lld %s)", in.size,
                     in_row, o.row, quantize ? "float32 values" : f.name);
        kv_error_context(&err, o.in, -1, NULL);
    }
    if (!st && quantize) st = check_finite(&in, o.row, &err);
    if (!st && o.importance) {
        st = kv_map_file(o.importance, &imp, &err);
        if (!st && imp.size != fl_bytes) {
            st = kv_fail(&err, KV_EFORMAT, "importance file has %zu bytes, expected %zu (%lld float32 values)",
                         imp.size, fl_bytes, o.row);
            kv_error_context(&err, o.importance, -1, NULL);
        }
    }
    int64_t nrows = st ? 0 : (int64_t)(in.size / in_row);
    float *weights = NULL;
    if (!st && o.importance) {
        weights = malloc(fl_bytes); /* an aligned copy: the mapping is only byte-aligned in principle */
        if (!weights) st = kv_fail(&err, KV_ENOMEM, "out of memory");
        else memcpy(weights, imp.data, fl_bytes);
    }
    if (!st) {
        out = malloc((size_t)nrows * out_row);
        if (!out) st = kv_fail(&err, KV_ENOMEM, "out of memory for %zu bytes", (size_t)nrows * out_row);
    }
    const uint8_t *src = in.data;
    uint8_t *aligned_in = NULL;
    if (!st && ((uintptr_t)in.data % 4)) { /* float rows must be 4-aligned for the quantizers */
        aligned_in = malloc(in.size);
        if (!aligned_in) st = kv_fail(&err, KV_ENOMEM, "out of memory");
        else src = memcpy(aligned_in, in.data, in.size);
    }
    if (!st) {
        /* a format with a tensor-wide scale in its row headers (nvfp4_ts) must see every row in one call */
        pool = f.row_header_bytes ? NULL : kv_pool_create((int)o.threads);
        io_job job = {.f = &f, .src = src, .dst = out, .importance = weights, .row = o.row,
                      .in_row_bytes = in_row, .out_row_bytes = out_row, .quantize = quantize};
        if (quantize && f.row_header_bytes) {
            st = f.quantize(&f, (const float *)src, out, nrows, o.row, weights, &err);
            if (st) kv_error_context(&err, o.in, -1, NULL);
        } else {
            st = run_rows(&job, nrows, pool, o.quiet || o.json, sub, o.in, &err);
        }
    }
    if (!st) st = write_all(o.out, out, (size_t)nrows * out_row, &err);
    if (!st) print_summary(&o, &f, nrows, in.size, (size_t)nrows * out_row, sub);
    kv_pool_destroy(pool);
    free(out);
    free(weights);
    free(aligned_in);
    if (in.data) kv_unmap_file(&in);
    if (imp.data) kv_unmap_file(&imp);
    return st ? kv_cli_fail(cmd, &err) : 0;
}

int kv_cmd_formats_quantize(int argc, char **argv) { return formats_io(argc, argv, 1); }
int kv_cmd_formats_dequantize(int argc, char **argv) { return formats_io(argc, argv, 0); }
