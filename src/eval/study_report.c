/* study_report.c — `kvant study SPEC --report DIR`: a Markdown report of a study's rows with plots (SVG and PNG
 * through src/eval/plot.c): the table of every cell, the Pareto front of KLD and PPL against bits/weight (one
 * curve per method, llama.cpp's mixes as the reference curve), the bits/weight kvant needs for each llama.cpp
 * level's KLD (interpolated on kvant's front in log KLD), a heat map of recovery % (or KLD without tasks), and
 * the per-tensor rate-distortion gap of the cells that have it (OUT/cells/ID.layers.csv). */
#include "eval/study.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->p && (size_t)k < b->cap - b->n) { b->n += (size_t)k; return; }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
}

static int is_kvant(const kv_study_row *r) { return !strcmp(r->kind, "kvant"); }
static int is_llama(const kv_study_row *r) { return !strcmp(r->kind, "llama.cpp"); }

/* The curve a row belongs to: method, transform and activation format (llama.cpp rows: one curve). */
static void group_of(const kv_study_row *r, char *g, size_t n) {
    if (is_llama(r)) { snprintf(g, n, "llama.cpp (imatrix)"); return; }
    const char *colon = strchr(r->method, ':'); /* watersic:bits=3 and watersic:bits=4 are one curve */
    const int ml = colon ? (int)(colon - r->method) : (int)strlen(r->method);
    snprintf(g, n, "%.*s%s%.30s%s%.15s%s", ml < 30 ? ml : 30, r->method, r->transform[0] ? " +" : "", r->transform,
             strcmp(r->act, "none") && r->act[0] ? " A:" : "", strcmp(r->act, "none") ? r->act : "", r->bits_target > 0 ? " alloc" : "");
}

static int cmp_bpw(const void *a, const void *b) {
    const kv_study_row *x = *(const kv_study_row *const *)a, *y = *(const kv_study_row *const *)b;
    if (x->bpw != y->bpw) return x->bpw < y->bpw ? -1 : 1;
    return x->kld < y->kld ? -1 : x->kld > y->kld; /* ties: the better one first (the front keeps it) */
}

/* kvant's Pareto front in (bits/weight, KLD): rows by bits/weight, each with a KLD below every smaller one. */
static int pareto(const kv_study_row *rows, int64_t n, const kv_study_row **front) {
    const kv_study_row **all = malloc(sizeof *all * (size_t)(n ? n : 1));
    int na = 0, nf = 0;
    if (!all) return 0;
    for (int64_t i = 0; i < n; i++)
        if (is_kvant(&rows[i]) && isfinite(rows[i].kld) && rows[i].kld > 0) all[na++] = &rows[i];
    qsort(all, (size_t)na, sizeof *all, cmp_bpw);
    double best = INFINITY;
    for (int i = 0; i < na; i++)
        if (all[i]->kld < best && (nf == 0 || all[i]->bpw > front[nf - 1]->bpw)) {
            best = all[i]->kld;
            front[nf++] = all[i];
        }
    free(all);
    return nf;
}

/* Bits/weight at which the front reaches KLD k (log-linear between front points); *bound: -1 when k is above
 * the front's first point (the answer is at most its bits), +1 when the front never gets that low. */
static double bpw_at_kld(const kv_study_row *const *f, int nf, double k, int *bound) {
    *bound = 0;
    if (nf == 0) { *bound = 1; return NAN; }
    if (k >= f[0]->kld) { *bound = -1; return f[0]->bpw; }
    for (int i = 0; i + 1 < nf; i++)
        if (k >= f[i + 1]->kld) {
            double t = (log(f[i]->kld) - log(k)) / (log(f[i]->kld) - log(f[i + 1]->kld));
            return f[i]->bpw + t * (f[i + 1]->bpw - f[i]->bpw);
        }
    *bound = 1;
    return NAN;
}

static double kld_at_bpw(const kv_study_row *const *f, int nf, double b) {
    if (nf == 0 || b < f[0]->bpw) return NAN;
    for (int i = 0; i + 1 < nf; i++)
        if (b <= f[i + 1]->bpw) {
            double t = (b - f[i]->bpw) / (f[i + 1]->bpw - f[i]->bpw);
            return exp(log(f[i]->kld) + t * (log(f[i + 1]->kld) - log(f[i]->kld)));
        }
    return f[nf - 1]->kld; /* beyond the last point: at least that good */
}

static kv_status write_plot_pair(const kv_plot *p, const char *dir, const char *stem, kv_error *err) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.svg", dir, stem);
    kv_status st = kv_plot_write(p, path, err);
    if (st != KV_OK) return st;
    snprintf(path, sizeof path, "%s/%s.png", dir, stem);
    return kv_plot_write(p, path, err);
}

/* A point's label on its curve: what varies along it (the method's options, the budget, or the format). */
static const char *point_label(const kv_study_row *r, char *buf, size_t n) {
    const char *colon = strchr(r->method, ':');
    if (is_kvant(r) && colon) snprintf(buf, n, "%.60s", colon + 1);
    else if (is_kvant(r) && r->bits_target > 0) snprintf(buf, n, "%g b", r->bits_target);
    else snprintf(buf, n, "%.60s", r->format);
    return buf;
}

/* Pareto plots: metric 0 = KLD, 1 = PPL. */
static kv_status plot_front(const kv_study *s, const kv_study_row *rows, int64_t n, int metric, const char *dir,
                            kv_error *err) {
    char (*groups)[100] = calloc((size_t)(n ? n : 1), sizeof *groups);
    const kv_study_row **sorted = malloc(sizeof *sorted * (size_t)(n ? n : 1));
    double *xy = malloc(sizeof(double) * 2 * (size_t)(n ? n : 1));
    const char **labs = malloc(sizeof(char *) * (size_t)(n ? n : 1));
    kv_plot_series *ser = calloc((size_t)(n ? n : 1) + 1, sizeof *ser);
    char (*lab_buf)[64] = calloc((size_t)(n ? n : 1), sizeof *lab_buf);
    kv_status st = KV_OK;
    if (!groups || !sorted || !xy || !labs || !ser || !lab_buf) {
        st = kv_fail(err, KV_ENOMEM, "out of memory");
        goto done;
    }
    int ng = 0, used = 0, ns = 0;
    double base_ppl = NAN;
    for (int64_t i = 0; i < n; i++) {
        if (!strcmp(rows[i].kind, "base")) base_ppl = rows[i].ppl;
        if (!is_kvant(&rows[i]) && !is_llama(&rows[i])) continue;
        char g[100];
        group_of(&rows[i], g, sizeof g);
        int k = 0;
        while (k < ng && strcmp(groups[k], g)) k++;
        if (k == ng) snprintf(groups[ng++], sizeof groups[0], "%s", g);
    }
    for (int k = 0; k < ng; k++) {
        int m = 0;
        for (int64_t i = 0; i < n; i++) {
            char g[100];
            if (!is_kvant(&rows[i]) && !is_llama(&rows[i])) continue;
            group_of(&rows[i], g, sizeof g);
            if (!strcmp(g, groups[k])) sorted[m++] = &rows[i];
        }
        qsort(sorted, (size_t)m, sizeof *sorted, cmp_bpw);
        double *x = xy + used, *y = xy + n + used;
        for (int i = 0; i < m; i++) {
            x[i] = sorted[i]->bpw;
            y[i] = metric == 0 ? sorted[i]->kld : sorted[i]->ppl;
            labs[used + i] = point_label(sorted[i], lab_buf[used + i], sizeof lab_buf[0]);
        }
        const int llama = !strcmp(groups[k], "llama.cpp (imatrix)");
        ser[ns++] = (kv_plot_series){.label = groups[k], .x = x, .y = y, .n = m, .point_labels = labs + used, .line = 1,
                                     .marker = 1, .dashed = llama, .color = llama ? 0x222222 : -1};
        used += m;
    }
    double bx[2] = {0, 64}, by[2] = {base_ppl, base_ppl};
    if (metric == 1 && isfinite(base_ppl))
        ser[ns++] = (kv_plot_series){.label = "unquantized", .x = bx, .y = by, .n = 2, .line = 1, .dashed = 1, .color = 0xc92a2a};
    char title[200];
    snprintf(title, sizeof title, "%.60s: %s vs bits/weight (%.100s)", s->name, metric == 0 ? "KLD" : "PPL", s->text);
    kv_plot p = {.title = title,
                 .xlabel = "bits per weight (all tensors, embedding and head included)",
                 .ylabel = metric == 0 ? "mean KLD vs unquantized (log)" : "perplexity",
                 .ylog = metric == 0,
                 .series = ser,
                 .n_series = ns};
    double xmin = INFINITY, xmax = -INFINITY;
    for (int i = 0; i < used; i++) { xmin = fmin(xmin, xy[i]); xmax = fmax(xmax, xy[i]); }
    if (isfinite(xmin)) { p.xmin = floor(xmin * 2) / 2 - 0.25; p.xmax = ceil(xmax * 2) / 2 + 0.25; }
    if (ns > 0 && used > 0) st = write_plot_pair(&p, dir, metric == 0 ? "pareto_kld" : "pareto_ppl", err);
done:
    free(lab_buf);
    free(groups);
    free(sorted);
    free(xy);
    free(labs);
    free(ser);
    return st;
}

/* A heat-map column: the format, or the budget and the format of what the allocation leaves. */
static void heat_column(const kv_study_row *r, char *c, size_t n) {
    if (r->bits_target > 0) snprintf(c, n, "%g b/%.40s", r->bits_target, r->format);
    else snprintf(c, n, "%.60s", r->format);
}

/* The index of label s among the *k labels of width w at tab (appended when new). */
static int label_index(void *tab, size_t w, int *k, const char *s) {
    char *t = tab;
    for (int i = 0; i < *k; i++)
        if (!strcmp(t + (size_t)i * w, s)) return i;
    snprintf(t + (size_t)*k * w, w, "%s", s);
    return (*k)++;
}

/* Heat map: rows = curve (method/transform/act), columns = format or budget; recovery % (or KLD). */
static kv_status heat(const kv_study *s, const kv_study_row *rows, int64_t n, const char *dir, int *written, kv_error *err) {
    *written = 0;
    int use_rec = s->n_tasks > 0;
    char (*rl)[100] = calloc((size_t)(n ? n : 1), sizeof *rl), (*cl)[64] = calloc((size_t)(n ? n : 1), sizeof *cl);
    const char **rlp = malloc(sizeof(char *) * (size_t)(n ? n : 1)), **clp = malloc(sizeof(char *) * (size_t)(n ? n : 1));
    double *v = NULL;
    kv_status st = KV_OK;
    int *ri = malloc(sizeof(int) * (size_t)(n ? n : 1)), *ci = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!rl || !cl || !rlp || !clp || !ri || !ci) { st = kv_fail(err, KV_ENOMEM, "out of memory"); goto done; }
    int nr = 0, nc = 0;
    for (int64_t i = 0; i < n; i++) { /* each kvant row's heat-map row (its curve) and column */
        ri[i] = ci[i] = -1;
        if (!is_kvant(&rows[i])) continue;
        char g[100], c[64];
        group_of(&rows[i], g, sizeof g);
        heat_column(&rows[i], c, sizeof c);
        ri[i] = label_index(rl, sizeof rl[0], &nr, g);
        ci[i] = label_index(cl, sizeof cl[0], &nc, c);
    }
    if (nr == 0 || nc == 0 || nr > 512 || nc > 512) goto done;
    v = malloc(sizeof(double) * (size_t)nr * (size_t)nc);
    if (!v) { st = kv_fail(err, KV_ENOMEM, "out of memory"); goto done; }
    for (int i = 0; i < nr * nc; i++) v[i] = NAN;
    for (int64_t i = 0; i < n; i++)
        if (ri[i] >= 0) v[ri[i] * nc + ci[i]] = use_rec ? rows[i].recovery : rows[i].kld;
    for (int i = 0; i < nr; i++) rlp[i] = rl[i];
    for (int i = 0; i < nc; i++) clp[i] = cl[i];
    char title[200];
    snprintf(title, sizeof title, "%s: %s", s->name, use_rec ? "task accuracy recovery (%)" : "mean KLD");
    kv_heatmap h = {.title = title, .xlabel = "format (or budget/format of embedding and head)", .rows = nr, .cols = nc, .v = v,
                    .row_labels = rlp, .col_labels = clp, .value_fmt = use_rec ? "%.1f" : "%.4f"};
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.svg", dir, use_rec ? "recovery" : "kld_heat");
    if ((st = kv_heatmap_write(&h, path, err)) == KV_OK) {
        snprintf(path, sizeof path, "%s/%s.png", dir, use_rec ? "recovery" : "kld_heat");
        st = kv_heatmap_write(&h, path, err);
    }
    if (st == KV_OK) *written = 1 + use_rec;
done:
    free(ri);
    free(ci);
    free(rl);
    free(cl);
    free(rlp);
    free(clp);
    free(v);
    return st;
}

static int gap_file(const kv_study *s, const kv_study_row *r, char *path, size_t n) {
    snprintf(path, n, "%s/cells/%s.layers.csv", s->out_dir, r->id);
    return strcmp(r->kind, "base") != 0 && access(path, R_OK) == 0;
}

/* Marks the cells whose gaps are plotted: the first cell of each curve (method), then the others in order, up to
 * max; returns the count. */
static int choose_gap_plots(const kv_study *s, const kv_study_row *rows, int64_t n, char *plot, int max) {
    int chosen = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < n && chosen < max; i++) {
            char path[1200], g[100], h[100];
            if (plot[i] || !gap_file(s, &rows[i], path, sizeof path)) continue;
            group_of(&rows[i], g, sizeof g);
            int seen = 0;
            for (int64_t k = 0; pass == 0 && k < n && !seen; k++)
                if (plot[k]) {
                    group_of(&rows[k], h, sizeof h);
                    seen = !strcmp(g, h);
                }
            if (seen) continue;
            plot[i] = 1;
            chosen++;
        }
    return chosen;
}

/* Per-tensor gaps of the cells that have them: the mean gap of every such cell, and a plot (tensor index on x,
 * one series per cell) of at most 10 of them, every method represented. Returns the number of plotted cells. */
static int layer_report(const kv_study *s, const kv_study_row *rows, int64_t n, const char *dir, sbuf *md, kv_error *err) {
    enum { MAXC = 10, MAXT = 4096 };
    double *x = malloc(sizeof(double) * MAXC * MAXT), *y = malloc(sizeof(double) * MAXC * MAXT), *g = malloc(sizeof(double) * MAXT);
    char *plot = calloc((size_t)(n ? n : 1), 1);
    kv_plot_series ser[MAXC];
    int ns = 0, nt = 0;
    if (!x || !y || !g || !plot) { free(x); free(y); free(g); free(plot); return 0; }
    choose_gap_plots(s, rows, n, plot, MAXC);
    for (int64_t i = 0; i < n; i++) {
        char path[1200], line[512];
        if (!gap_file(s, &rows[i], path, sizeof path)) continue;
        FILE *f = fopen(path, "r");
        if (!f) continue;
        int m = 0;
        double sum = 0;
        if (!fgets(line, sizeof line, f)) { fclose(f); continue; }
        while (fgets(line, sizeof line, f) && m < MAXT) {
            char *c1 = strchr(line, ',');
            double bpw, rel;
            if (!c1 || sscanf(c1 + 1, "%lf,%lf,%lf", &bpw, &rel, &g[m]) != 3 || !isfinite(g[m])) continue;
            sum += g[m++];
        }
        fclose(f);
        if (m == 0) continue;
        if (nt++ == 0)
            sb_printf(md, "\n## Per-tensor rate–distortion gap\n\nFor every 2-D tensor of a cell (in file order: embedding, then "
                          "each layer's linears, then the head), gap = ½·log2(‖Q(W) − W‖² / ‖W‖²) + R with R the tensor's "
                          "stored bits/weight (entropy-coded tensors: their coded size): the bits spent above the Gaussian "
                          "rate–distortion bound D(R) = σ²·2^(−2R) at that tensor's error (cells without rotations only; the "
                          "plot shows up to %d cells, every method's first).\n\n"
                          "![per-tensor gap](layer_gap.png) ([SVG](layer_gap.svg))\n\n| cell | tensors | mean gap (bits) |\n|---|---:|---:|\n",
                      MAXC);
        sb_printf(md, "| %s | %d | %.3f |\n", rows[i].label, m, sum / m);
        if (!plot[i] || ns == MAXC) continue;
        for (int k = 0; k < m; k++) {
            x[ns * MAXT + k] = k;
            y[ns * MAXT + k] = g[k];
        }
        ser[ns] = (kv_plot_series){.label = rows[i].label, .x = x + ns * MAXT, .y = y + ns * MAXT, .n = m, .line = 1, .marker = 1, .color = -1};
        ns++;
    }
    if (ns > 0) {
        char title[200];
        snprintf(title, sizeof title, "%s: per-tensor gap to the rate-distortion bound", s->name);
        kv_plot p = {.title = title, .xlabel = "tensor (file order)", .ylabel = "gap (bits/weight)", .series = ser, .n_series = ns};
        if (write_plot_pair(&p, dir, "layer_gap", err) != KV_OK) ns = -1;
    }
    free(x);
    free(y);
    free(g);
    free(plot);
    return ns;
}

static void cell_md(sbuf *md, double v, const char *fmt) {
    if (isfinite(v)) {
        sb_printf(md, " ");
        sb_printf(md, fmt, v);
        sb_printf(md, " |");
    } else sb_printf(md, " — |");
}

kv_status kv_study_report(const kv_study *s, const char *dir, const char *commit, kv_error *err) {
    char p[1300];
    snprintf(p, sizeof p, "%.1200s", dir);
    for (char *q = p + 1;; q++) /* mkdir -p */
        if (*q == '/' || *q == 0) {
            const char c = *q;
            *q = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                kv_fail(err, KV_EIO, "cannot create the report directory: %s", strerror(errno));
                kv_error_context(err, p, -1, NULL);
                return KV_EIO;
            }
            *q = c;
            if (!c) break;
        }
    kv_study_row *rows = NULL;
    int64_t n = 0;
    kv_status st = kv_study_rows(s, &rows, &n, err);
    if (st != KV_OK) return st;
    if (n == 0) {
        free(rows);
        return kv_fail(err, KV_EINVAL, "study %s has no results in %s yet: run it first", s->name, s->out_dir);
    }
    const kv_study_row *base = NULL;
    for (int64_t i = 0; i < n; i++)
        if (!strcmp(rows[i].kind, "base")) base = &rows[i];
    sbuf md = {0};
    char win[48];
    if (s->chunks) snprintf(win, sizeof win, "first %lld windows", (long long)s->chunks);
    else snprintf(win, sizeof win, "all windows");
    sb_printf(&md, "# Study `%s`\n\nModel `%s`; evaluation: `%s`, hf style, ctx %d, %s; KLD against the unquantized "
                   "model; bits/weight = tensor bytes · 8 / parameters over the whole file (embedding and head included).",
              s->name, s->model, s->text, (int)s->ctx, win);
    if (s->calib[0]) sb_printf(&md, " Calibration: `%s`, %lld tokens, seed %llu.", s->calib, (long long)s->calib_tokens, (unsigned long long)s->seed);
    for (int i = 0; i < s->n_tasks; i++)
        sb_printf(&md, "%s`%s`", i ? ", " : " Tasks (accuracy; recovery = mean accuracy / the unquantized model's): ", s->tasks[i]);
    if (s->n_tasks && s->task_limit) sb_printf(&md, " (first %lld items each)", (long long)s->task_limit);
    sb_printf(&md, "\n\nGenerated by `kvant study %s --report %s` at commit `%s` (%lld of %lld cells measured).\n", s->spec_path,
              dir, commit && *commit ? commit : "unknown", (long long)(n - (base != NULL)), (long long)s->n_cells);
    /* the rows keep the commit they were measured at: a resumed study may span several */
    for (int64_t i = 0, listed = 0; i < n; i++) {
        int64_t k = 0;
        while (k < i && strcmp(rows[k].commit, rows[i].commit)) k++;
        if (k < i) continue;
        sb_printf(&md, "%s`%s`", listed++ ? ", " : "Rows measured at commit ", rows[i].commit[0] ? rows[i].commit : "unknown");
    }
    if (n) sb_printf(&md, ".\n");

    /* the table */
    sb_printf(&md, "\n## Results\n\n| cell | size (MiB) | bits/weight | PPL | ΔPPL | KLD mean | KLD p99 | top-1 agree |");
    for (int t = 0; t < s->n_tasks; t++) sb_printf(&md, " %s acc |", s->tasksets[t]->name);
    if (s->n_tasks) sb_printf(&md, " recovery |");
    sb_printf(&md, "\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for (int t = 0; t < s->n_tasks; t++) sb_printf(&md, "---:|");
    if (s->n_tasks) sb_printf(&md, "---:|");
    sb_printf(&md, "\n");
    for (int64_t i = 0; i < n; i++) {
        const kv_study_row *r = &rows[i];
        sb_printf(&md, "| %s |", r->label);
        cell_md(&md, (double)r->tensor_bytes / 1048576.0, "%.2f");
        cell_md(&md, r->bpw, "%.3f");
        cell_md(&md, r->ppl, "%.4f");
        if (base && r != base) cell_md(&md, r->ppl - base->ppl, "%+.4f");
        else sb_printf(&md, " — |");
        if (r == base) sb_printf(&md, " — | — | — |");
        else {
            cell_md(&md, r->kld, "%.5f");
            cell_md(&md, r->kld_p99, "%.4f");
            cell_md(&md, r->top1, "%.2f%%");
        }
        for (int t = 0; t < s->n_tasks; t++) cell_md(&md, t < r->n_tasks ? r->acc[t] : NAN, "%.3f");
        if (s->n_tasks) cell_md(&md, r == base ? NAN : r->recovery, "%.1f%%");
        sb_printf(&md, "\n");
    }
    /* Pareto front */
    const kv_study_row **front = malloc(sizeof *front * (size_t)n);
    int nf = front ? pareto(rows, n, front) : 0;
    if ((st = plot_front(s, rows, n, 0, dir, err)) == KV_OK) st = plot_front(s, rows, n, 1, dir, err);
    sb_printf(&md, "\n## Pareto front\n\n![KLD vs bits/weight](pareto_kld.png) ([SVG](pareto_kld.svg))\n\n"
                   "![PPL vs bits/weight](pareto_ppl.png) ([SVG](pareto_ppl.svg))\n\n"
                   "kvant cells on the front (no other kvant cell is both smaller and closer to the unquantized model):\n\n"
                   "| bits/weight | KLD mean | PPL | cell |\n|---:|---:|---:|---|\n");
    for (int i = 0; i < nf; i++) sb_printf(&md, "| %.3f | %.5f | %.4f | %s |\n", front[i]->bpw, front[i]->kld, front[i]->ppl, front[i]->label);
    /* against llama.cpp */
    int nl = 0;
    for (int64_t i = 0; i < n; i++) nl += is_llama(&rows[i]);
    if (nl) {
        sb_printf(&md, "\n## Against llama.cpp at equal KLD\n\nFor each llama.cpp file (llama-quantize%s, evaluated by kvant on the "
                       "same tokens): the bits/weight at which kvant's front reaches the same KLD (log-linear between front "
                       "points), the bits saved, and kvant's KLD at the llama.cpp file's size (interpolated); then the "
                       "smallest kvant cell measured at that KLD or below and the bits it saves (no interpolation).\n\n"
                       "| llama.cpp | bits/weight | KLD | kvant bits/weight at that KLD | saved (bits/weight) | kvant KLD at that size "
                       "| smallest kvant cell at ≤ that KLD | saved, measured |\n"
                       "|---|---:|---:|---:|---:|---:|---|---:|\n",
                  s->llama_imatrix ? " with kvant's imatrix of the calibration text" : "");
        const kv_study_row **ll = malloc(sizeof *ll * (size_t)n);
        int k = 0;
        for (int64_t i = 0; ll && i < n; i++)
            if (is_llama(&rows[i])) ll[k++] = &rows[i];
        if (ll) qsort(ll, (size_t)k, sizeof *ll, cmp_bpw);
        for (int i = 0; ll && i < k; i++) {
            int bound;
            double b = bpw_at_kld(front, nf, ll[i]->kld, &bound);
            sb_printf(&md, "| %s | %.3f | %.5f |", ll[i]->format, ll[i]->bpw, ll[i]->kld);
            if (bound > 0) sb_printf(&md, " not reached | — |");
            else if (bound < 0) sb_printf(&md, " ≤ %.3f | ≥ %.3f |", b, ll[i]->bpw - b);
            else sb_printf(&md, " %.3f | %.3f |", b, ll[i]->bpw - b);
            /* past kvant's largest front cell: its KLD bounds what kvant reaches at that size */
            cell_md(&md, kld_at_bpw(front, nf, ll[i]->bpw), nf && ll[i]->bpw > front[nf - 1]->bpw ? "≤ %.5f" : "%.5f");
            int m = 0; /* the front is sorted by bits with falling KLD: its first cell at or below the target */
            while (m < nf && front[m]->kld > ll[i]->kld) m++;
            if (m < nf) sb_printf(&md, " %.3f (%s, KLD %.5f) | %.3f |\n", front[m]->bpw, front[m]->label, front[m]->kld, ll[i]->bpw - front[m]->bpw);
            else sb_printf(&md, " none | — |\n");
        }
        free(ll);
    }
    free(front);
    int hw = 0;
    if (st == KV_OK) st = heat(s, rows, n, dir, &hw, err);
    if (hw == 2) sb_printf(&md, "\n## Recovery\n\nMean task accuracy as a percentage of the unquantized model's, per cell.\n\n![recovery heat map](recovery.png) ([SVG](recovery.svg))\n");
    else if (hw == 1) sb_printf(&md, "\n## KLD per cell\n\n![KLD heat map](kld_heat.png) ([SVG](kld_heat.svg))\n");
    if (st == KV_OK && layer_report(s, rows, n, dir, &md, err) < 0) st = err->status;
    if (st == KV_OK && md.oom) st = kv_fail(err, KV_ENOMEM, "out of memory writing the report");
    if (st == KV_OK) {
        char path[1200];
        snprintf(path, sizeof path, "%s/report.md", dir);
        kv_outfile *f = NULL;
        if ((st = kv_outfile_open(path, &f, err)) == KV_OK) {
            if ((st = kv_outfile_write(f, md.p, md.n, err)) == KV_OK) st = kv_outfile_commit(f, err);
            else kv_outfile_abort(f);
        }
    }
    free(md.p);
    free(rows);
    return st;
}
