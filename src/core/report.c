/* report.c — the JSON writer behind every --json report, and the progress line with ETA. */
#include "core.h"
#include <math.h>
#include <time.h>
#include <unistd.h>

void kv_jw_init(kv_jw *w, FILE *out, int pretty) {
    memset(w, 0, sizeof *w);
    w->out = out;
    w->pretty = pretty;
}

static void jw_newline(kv_jw *w) {
    if (!w->pretty) return;
    fputc('\n', w->out);
    for (int i = 0; i < w->depth; i++) fputs("  ", w->out);
}

/* Called before every value or key: emits the separating comma. */
static void jw_before_item(kv_jw *w) {
    if (w->depth > 0 && w->depth < 64) {
        if (w->need_comma[w->depth]) fputc(',', w->out);
        w->need_comma[w->depth] = 1;
        jw_newline(w);
    }
}

static void jw_value_prefix(kv_jw *w) {
    /* A value right after a key needs no comma; need_comma[depth] == 2 marks "key just written". */
    if (w->depth > 0 && w->depth < 64 && w->need_comma[w->depth] == 2) {
        w->need_comma[w->depth] = 1;
        return;
    }
    jw_before_item(w);
}

void kv_jw_obj_begin(kv_jw *w) {
    jw_value_prefix(w);
    fputc('{', w->out);
    w->depth++;
    if (w->depth < 64) w->need_comma[w->depth] = 0;
}
void kv_jw_obj_end(kv_jw *w) {
    int had = w->depth < 64 && w->need_comma[w->depth];
    w->depth--;
    if (had) jw_newline(w);
    fputc('}', w->out);
}
void kv_jw_arr_begin(kv_jw *w) {
    jw_value_prefix(w);
    fputc('[', w->out);
    w->depth++;
    if (w->depth < 64) w->need_comma[w->depth] = 0;
}
void kv_jw_arr_end(kv_jw *w) {
    w->depth--;
    fputc(']', w->out);
}

static void jw_write_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*p < 0x20) fprintf(out, "\\u%04x", *p);
            else fputc(*p, out);
        }
    }
    fputc('"', out);
}

void kv_jw_key(kv_jw *w, const char *key) {
    jw_before_item(w);
    jw_write_string(w->out, key);
    fputs(w->pretty ? ": " : ":", w->out);
    if (w->depth < 64) w->need_comma[w->depth] = 2;
}
void kv_jw_str(kv_jw *w, const char *s) { jw_value_prefix(w); jw_write_string(w->out, s ? s : ""); }
void kv_jw_int(kv_jw *w, int64_t v) { jw_value_prefix(w); fprintf(w->out, "%lld", (long long)v); }
void kv_jw_num(kv_jw *w, double v) {
    jw_value_prefix(w);
    if (!isfinite(v)) fputs("null", w->out);
    else fprintf(w->out, "%.10g", v);
}
void kv_jw_bool(kv_jw *w, int v) { jw_value_prefix(w); fputs(v ? "true" : "false", w->out); }
void kv_jw_null(kv_jw *w) { jw_value_prefix(w); fputs("null", w->out); }
void kv_jw_end(kv_jw *w) { fputc('\n', w->out); fflush(w->out); }

double kv_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void kv_progress_begin(kv_progress *p, const char *label, int64_t total, int quiet) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t_start = p->t_last = kv_now_seconds();
    p->enabled = quiet ? 0 : isatty(STDERR_FILENO) ? 1 : 2; /* 2: plain lines (a log file, a pipe) */
}

void kv_progress_update(kv_progress *p, int64_t done) {
    p->done = done;
    if (!p->enabled) return;
    double now = kv_now_seconds();
    /* without a terminal, a plain line every 10 s keeps logs short; nothing for work shorter than that */
    if (p->enabled == 2 ? now - p->t_last < 10.0 : now - p->t_last < 0.2 && done < p->total) return;
    p->t_last = now;
    double el = now - p->t_start;
    double eta = done > 0 ? el * (double)(p->total - done) / (double)done : 0.0;
    fprintf(stderr, "%s%s: %lld/%lld (%.0f%%) elapsed %.1fs ETA %.1fs%s", p->enabled == 2 ? "" : "\r", p->label,
            (long long)done, (long long)p->total, p->total ? 100.0 * (double)done / (double)p->total : 100.0, el, eta,
            p->enabled == 2 ? "\n" : "   ");
    fflush(stderr);
}

void kv_progress_end(kv_progress *p) {
    if (p->enabled != 1) return;
    fprintf(stderr, "\r%s: done in %.1fs%40s\n", p->label, kv_now_seconds() - p->t_start, "");
    fflush(stderr);
}
