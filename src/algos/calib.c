/* calib.c — layer-by-layer calibration (the sequential protocol of GPTQ, arXiv 2210.17323 §5 and
 * IST-DASLab/gptq llama.py llama_sequential): run the calibration windows through the embedding; for each
 * decoder block collect H = Σ x·xᵀ of every distinct linear input through the forward hooks, quantize the
 * block, write the quantized weights into the calibration model and recompute the block's outputs, which feed
 * the next block. Only one block's activations and Hessians are alive at a time. After the last block the
 * output head gets the same treatment: H of the final RMSNorm's outputs (the head's input, computed from the
 * quantized blocks' activations) and the method on output.weight (or on token_embd.weight when the head is
 * tied to it); an untied token embedding is a lookup, with no Hessian, and stays rounded to nearest.
 * Hessian files (--method NAME:save-hessians=DIR / load-hessians=DIR): DIR/blk.L.<tensor>.kvh, docs/FORMAT.md. */
#include "algos/calib.h"
#include "model/model.h"
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

enum { N_POINTS = 5, MAX_GROUPS = 8 };

/* The input point of each linear: 0 attention input (q/k/v), 1 attention output (o), 2 MLP input (gate/up),
 * 3 down input, 4 the head's input (the final RMSNorm's output). */
static int point_of(kv_linear_id which) {
    switch (which) {
    case KV_LINEAR_Q: case KV_LINEAR_K: case KV_LINEAR_V: return 0;
    case KV_LINEAR_O: return 1;
    case KV_LINEAR_GATE: case KV_LINEAR_UP: return 2;
    case KV_LINEAR_DOWN: return 3;
    case KV_LINEAR_HEAD: return 4;
    default: return -1;
    }
}

typedef struct {
    int point;
    int32_t rht_block;
    uint64_t rht_seed;
    int64_t dim;
    double *h;
    float *signs;       /* dim, when rotated */
    int64_t ntok;
    char what[200];     /* "blk.L.attn_q input" for errors */
    char file[64];      /* "blk.L.attn_q" for hessian files */
} hgroup;

typedef struct {
    int layer;          /* collecting for this layer, -1: not collecting */
    hgroup g[MAX_GROUPS];
    int ng;
    float *rot;         /* scratch for rotated inputs */
    int64_t rot_cap;
    kv_pool *pool;
    kv_status st;
    kv_error err;
} calib_state;

const float *kv_calib_rotated_input(float **buf, int64_t *cap, const float *x, int64_t ntok, int64_t dim,
                                    int32_t rht_block, const float *signs) {
    if (rht_block <= 0) return x;
    if (*cap < ntok * dim) {
        float *r = realloc(*buf, sizeof(float) * (size_t)(ntok * dim));
        if (!r) return NULL;
        *buf = r;
        *cap = ntok * dim;
    }
    memcpy(*buf, x, sizeof(float) * (size_t)(ntok * dim));
    for (int64_t t = 0; t < ntok; t++) kv_rht_apply(*buf + t * dim, dim, rht_block, signs);
    return *buf;
}

const char *kv_method_option(const char *options, const char *key, char *buf, size_t n) {
    if (!options || !key || !n) return NULL;
    size_t kl = strlen(key);
    const char *p = options;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len >= kl && !strncmp(p, key, kl) && (len == kl || p[kl] == '=')) {
            size_t vl = len == kl ? 0 : len - kl - 1;
            if (vl >= n) vl = n - 1;
            memcpy(buf, p + (len == kl ? kl : kl + 1), vl);
            buf[vl] = 0;
            return buf;
        }
        p += len;
        if (*p == ',') p++;
    }
    return NULL;
}

static void on_input(void *user, int layer, kv_linear_id which, const float *x, int64_t ntok, int64_t dim) {
    calib_state *s = user;
    if (s->st || layer != s->layer) return;
    int pt = point_of(which);
    for (int k = 0; k < s->ng && !s->st; k++) {
        hgroup *g = &s->g[k];
        if (g->point != pt) continue;
        if (g->dim != dim) {
            s->st = kv_fail(&s->err, KV_EINVAL, "%s: input has %lld features, the weight %lld", g->what,
                            (long long)dim, (long long)g->dim);
            return;
        }
        const float *xx = kv_calib_rotated_input(&s->rot, &s->rot_cap, x, ntok, dim, g->rht_block, g->signs);
        if (!xx) { s->st = kv_fail(&s->err, KV_ENOMEM, "out of memory"); return; }
        s->st = kv_hessian_add(g->h, xx, ntok, dim, g->what, s->pool, &s->err);
        g->ntok += ntok;
    }
}

/* ---- Hessian files: "KVH1", int64 dim, int64 ntok, dim·dim float64 (little-endian) ---- */

static kv_status save_h(const char *dir, const hgroup *g, kv_error *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.kvh", dir, g->file);
    kv_outfile *f;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st) return st;
    int64_t hdr[2] = {g->dim, g->ntok};
    if ((st = kv_outfile_write(f, "KVH1", 4, err)) == KV_OK && (st = kv_outfile_write(f, hdr, sizeof hdr, err)) == KV_OK)
        st = kv_outfile_write(f, g->h, sizeof(double) * (size_t)(g->dim * g->dim), err);
    if (st) { kv_outfile_abort(f); return st; }
    return kv_outfile_commit(f, err);
}

static kv_status load_h(const char *dir, hgroup *g, kv_error *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.kvh", dir, g->file);
    kv_mapped m;
    kv_status st = kv_map_file(path, &m, err);
    if (st) return st;
    size_t want = 20 + sizeof(double) * (size_t)(g->dim * g->dim);
    if (m.size != want || memcmp(m.data, "KVH1", 4) || (int64_t)kv_rd_u64(m.data + 4) != g->dim) {
        kv_unmap_file(&m);
        kv_fail(err, KV_EFORMAT, "not a %lld x %lld Hessian file of kvant (%zu bytes)", (long long)g->dim,
                (long long)g->dim, m.size);
        kv_error_context(err, path, 0, NULL);
        return KV_EFORMAT;
    }
    g->ntok = (int64_t)kv_rd_u64(m.data + 12);
    memcpy(g->h, m.data + 20, sizeof(double) * (size_t)(g->dim * g->dim));
    kv_unmap_file(&m);
    for (int64_t i = 0; i < g->dim * g->dim; i++)
        if (!isfinite(g->h[i])) {
            kv_fail(err, KV_EFORMAT, "Hessian holds a non-finite value");
            kv_error_context(err, path, 20 + 8 * i, NULL);
            return KV_EFORMAT;
        }
    return KV_OK;
}

static void free_groups(calib_state *s) {
    for (int k = 0; k < s->ng; k++) {
        free(s->g[k].h);
        free(s->g[k].signs);
    }
    memset(s->g, 0, sizeof s->g);
    s->ng = 0;
}

/* One H per distinct (input point, online rotation) among the layer's jobs; gidx[j] = group of job j. */
static kv_status make_groups(calib_state *s, int layer, kv_quant_job **jl, const kv_linear_id *which, int nj,
                             int *gidx, uint64_t *hbytes, kv_error *err) {
    for (int j = 0; j < nj; j++) {
        int pt = point_of(which[j]), found = -1;
        for (int k = 0; k < s->ng; k++)
            if (s->g[k].point == pt && s->g[k].rht_block == jl[j]->rht_block &&
                (jl[j]->rht_block == 0 || s->g[k].rht_seed == jl[j]->rht_seed))
                found = k;
        if (found < 0) {
            if (s->ng >= MAX_GROUPS) return kv_fail(err, KV_EINVAL, "too many linear inputs in layer %d", layer);
            hgroup *g = &s->g[s->ng];
            g->point = pt;
            g->rht_block = jl[j]->rht_block;
            g->rht_seed = jl[j]->rht_seed;
            g->dim = jl[j]->cols;
            g->h = calloc((size_t)(g->dim * g->dim), sizeof(double));
            if (g->rht_block > 0) {
                g->signs = malloc(sizeof(float) * (size_t)g->dim);
                if (g->signs) kv_rht_signs(g->rht_seed, g->dim, g->signs);
            }
            if (!g->h || (g->rht_block > 0 && !g->signs)) return kv_fail(err, KV_ENOMEM, "out of memory for H");
            const char *nm = jl[j]->name;
            const char *dot = strrchr(nm, '.');
            int l = dot ? (int)(dot - nm) : (int)strlen(nm);
            snprintf(g->what, sizeof g->what, "%.*s input", l, nm);
            snprintf(g->file, sizeof g->file, "%.*s", l > 60 ? 60 : l, nm);
            *hbytes += sizeof(double) * (uint64_t)(g->dim * g->dim);
            found = s->ng++;
        }
        gidx[j] = found;
    }
    return KV_OK;
}

static void logf_(kv_quant_method_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(kv_quant_method_ctx *c, const char *fmt, ...) {
    if (!c->log) return;
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    c->log(c->log_user, buf);
}

static kv_status ensure_dir(const char *dir, kv_error *err) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        kv_fail(err, KV_EIO, "cannot create directory: %s", strerror(errno));
        kv_error_context(err, dir, -1, NULL);
        return KV_EIO;
    }
    return KV_OK;
}

/* Streaming: the block's weights are loaded now, and the calibration model runs their fp32 values (borrowed
 * from the jobs) exactly as the in-memory pipeline's fp32 copy would; saved[] keeps the source weights the
 * model borrowed so the block can go back to them (and free its copies) once it is done. */
typedef struct saved_weight {
    kv_format fmt;
    const void *data;
    void *owned; /* the model's own bytes (q/k un-permuted from a GGUF or llama2.c file), held while the block runs */
} saved_weight;

static kv_status stream_load_block(kv_quant_method_ctx *c, kv_model *m, int layer, kv_quant_job **jl,
                                   const kv_linear_id *wh, int nj, saved_weight *saved, kv_error *err) {
    kv_format f32;
    kv_status st = kv_format_from_type(KV_TYPE_F32, &f32, err);
    for (int j = 0; j < nj && !st; j++) {
        kv_weight *w0 = kv_model_weight_mut(m, layer, wh[j]);
        saved[j].fmt = w0->fmt;
        saved[j].data = w0->data;
        saved[j].owned = w0->owned; /* kv_model_set_weight would free them: taken back by stream_release_block */
        w0->owned = NULL;
        if ((st = c->stream->load(c->stream->user, jl[j], err)) != KV_OK) break;
        st = kv_model_set_weight(m, jl[j]->name, &f32, jl[j]->w, 0, err);
        if (!st && jl[j]->rht_block > 0) st = kv_model_set_rht(m, jl[j]->name, jl[j]->rht_block, jl[j]->rht_seed, err);
    }
    return st;
}

static kv_status stream_release_block(kv_model *m, kv_quant_job **jl, int nj, const saved_weight *saved,
                                      kv_error *err) {
    kv_status st = KV_OK;
    for (int j = 0; j < nj; j++) {
        if (!saved[j].data) continue;
        kv_status sj = st ? KV_EINVAL : kv_model_set_weight(m, jl[j]->name, &saved[j].fmt, saved[j].data,
                                                             saved[j].owned != NULL, err);
        if (sj) free(saved[j].owned); /* not handed back */
        if (!st) st = sj;
    }
    return st;
}

/* Quantizes one job with H of group g; into_model: the next blocks see the quantized weight (the calibration
 * model gets it: for an entropy-coded output exactly the decoded weights); free_h: g's H is not needed after. */
static kv_status quantize_job(kv_quant_method_ctx *c, const kv_calib_opts *o, kv_calib_quant_fn fn, void *user,
                              kv_model *m, kv_quant_job *job, hgroup *g, int into_model, int free_h, kv_error *err) {
    char note[512] = "";
    kv_status st = fn(user, job, g->h, g->ntok, c->pool, note, sizeof note, err);
    if (st) {
        kv_error_context(err, NULL, -1, job->name);
        return st;
    }
    if (note[0]) logf_(c, "%s: %s", job->name, note);
    if (!o->load_dir && into_model && job->out_type == KV_TYPE_ECW) {
        float *dec = kv_malloc(sizeof(float) * (size_t)job->rows * (size_t)job->cols, err);
        kv_format f32;
        st = dec ? kv_ecw_decode_f32(job->out_data, (size_t)job->out_bytes, job->rows, job->cols, dec, c->pool, err)
                 : KV_ENOMEM;
        if (!st) st = kv_format_from_type(KV_TYPE_F32, &f32, err);
        if (!st) st = kv_model_set_weight(m, job->name, &f32, dec, 1, err);
        if (st) free(dec); /* not taken on failure */
        if (!st && job->rht_block > 0) st = kv_model_set_rht(m, job->name, job->rht_block, job->rht_seed, err);
    } else if (!o->load_dir && into_model) {
        size_t nb = kv_format_row_bytes(&job->fmt, job->cols) * (size_t)job->rows;
        void *copy = malloc(nb);
        if (!copy) return kv_fail(err, KV_ENOMEM, "out of memory");
        memcpy(copy, job->dst, nb);
        st = kv_model_set_weight(m, job->name, &job->fmt, copy, 1, err);
        if (!st && job->rht_block > 0) st = kv_model_set_rht(m, job->name, job->rht_block, job->rht_seed, err);
    }
    if (!st && c->stream && c->stream->weights_done) c->stream->weights_done(c->stream->user, job);
    if (free_h) {
        free(g->h);
        g->h = NULL;
    }
    return st;
}

/* The head after the last block (hidden: its outputs, nwin windows of ctx tokens): H of the final RMSNorm's
 * rows — what kv_forward_head hands the head — then the method on the head's job. Nothing runs after the head,
 * so the calibration model keeps its weight. */
static kv_status calib_head(kv_quant_method_ctx *c, const kv_calib_opts *o, kv_calib_quant_fn fn, void *user,
                            kv_model *m, calib_state *s, kv_quant_job *head, const float *hidden, float *win,
                            int64_t nwin, int64_t ctx, uint64_t *hbytes, kv_error *err) {
    const kv_hparams *hp = kv_model_get_hparams(m);
    const int64_t D = hp->n_embd;
    if (head->cols != D)
        return kv_fail(err, KV_EINVAL, "%s: %lld columns, the model's hidden size is %lld", head->name,
                       (long long)head->cols, (long long)D);
    kv_status st = c->stream ? c->stream->load(c->stream->user, head, err) : KV_OK;
    kv_linear_id wh = KV_LINEAR_HEAD;
    int gidx = 0;
    if (!st) st = make_groups(s, hp->n_layer, &head, &wh, 1, &gidx, hbytes, err);
    if (!st) snprintf(s->g[gidx].what, sizeof s->g[gidx].what, "%s input (final norm)", head->name);
    if (!st && o->load_dir) {
        st = load_h(o->load_dir, &s->g[gidx], err);
    } else if (!st) {
        s->layer = hp->n_layer;
        for (int64_t w = 0; w < nwin && !st && !s->st; w++) {
            kv_rmsnorm_rows(win, hidden + w * ctx * D, m->output_norm, ctx, D, hp->norm_eps);
            on_input(s, hp->n_layer, KV_LINEAR_HEAD, win, ctx, D);
        }
        s->layer = -1;
        if (!st && s->st) {
            st = s->st;
            *err = s->err;
        }
    }
    if (!st && o->save_dir) st = save_h(o->save_dir, &s->g[gidx], err);
    if (!st) st = quantize_job(c, o, fn, user, m, head, &s->g[gidx], 0, 1, err);
    free_groups(s);
    return st;
}

kv_status kv_calib_run(kv_quant_method_ctx *c, const kv_calib_opts *o, kv_calib_quant_fn fn, void *user,
                       kv_calib_report *rep, kv_error *err) {
    kv_calib_opts dflt = {0};
    kv_calib_report lrep;
    if (!o) o = &dflt;
    if (!rep) rep = &lrep;
    memset(rep, 0, sizeof *rep);
    double t0 = kv_now_seconds();
    /* The pipeline hands its private calibration copy of the model: layers are replaced by their quantized
     * weights as calibration proceeds (the GPTQ protocol), and the pipeline does not use it afterwards. */
    kv_model *m = (kv_model *)c->model;
    if (!m) return kv_fail(err, KV_EINVAL, "calibration needs the model and --calib text");
    const kv_hparams *hp = kv_model_get_hparams(m);
    int L = hp->n_layer;
    int64_t D = hp->n_embd, ctx = c->calib_ctx, nwin = ctx > 0 ? c->n_calib_ids / ctx : 0;
    if (!o->load_dir && (!c->calib_ids || nwin < 1))
        return kv_fail(err, KV_EINVAL, "calibration needs at least one window of %lld tokens", (long long)ctx);

    /* jobs of decoder linears by layer; the rest is rounded to nearest */
    kv_quant_job **byl = calloc((size_t)L * KV_LINEAR_COUNT, sizeof *byl);
    kv_quant_job *rest = calloc((size_t)KV_MAX(c->n_jobs, 1), sizeof *rest);
    if (!byl || !rest) {
        free(byl);
        free(rest);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    int64_t nrest = 0;
    kv_quant_job *head = NULL, *tied = NULL; /* output.weight, or the embedding when the head is tied to it */
    for (int64_t j = 0; j < c->n_jobs; j++) {
        int layer;
        kv_linear_id which;
        int known = kv_model_linear_by_name(m, c->jobs[j].name, &layer, &which) == 0;
        if (known && layer >= 0 && layer < L && point_of(which) >= 0)
            byl[layer * KV_LINEAR_COUNT + which] = &c->jobs[j];
        else if (known && layer == L && which == KV_LINEAR_HEAD && L > 0)
            head = &c->jobs[j];
        else if (known && layer < 0 && m->head_tied && L > 0)
            tied = &c->jobs[j];
        else
            rest[nrest++] = c->jobs[j];
    }
    if (!head) head = tied;
    else if (tied) rest[nrest++] = *tied;

    calib_state s;
    memset(&s, 0, sizeof s);
    s.layer = -1;
    s.pool = c->pool;
    float *hidden = NULL, *win = NULL;
    kv_context *kctx = NULL;
    kv_status st = KV_OK;
    int64_t done = 0;
    const int first_layer = c->stream ? KV_MAX(0, c->stream->first_layer) : 0;
    for (int64_t j = 0; j < c->n_jobs; j++) { /* the jobs of resumed blocks are done */
        int layer;
        kv_linear_id which;
        if (kv_model_linear_by_name(m, c->jobs[j].name, &layer, &which) == 0 && layer >= 0 && layer < first_layer)
            done++;
    }
    if (o->save_dir) st = ensure_dir(o->save_dir, err);
    if (!st && !o->load_dir) {
        rep->act_bytes = sizeof(float) * (uint64_t)(nwin * ctx * D + ctx * D);
        hidden = malloc(sizeof(float) * (size_t)(nwin * ctx * D));
        win = malloc(sizeof(float) * (size_t)(ctx * D));
        if (!hidden || !win) st = kv_fail(err, KV_ENOMEM, "out of memory for %lld calibration activations",
                                          (long long)(nwin * ctx));
        if (!st) st = kv_context_create(m, (int32_t)ctx, &kctx, err);
        if (!st) {
            kv_forward_hooks hk = {on_input, &s};
            kv_context_set_hooks(kctx, &hk);
        }
        if (!st && first_layer > 0) /* resumed: the output of the last finished block */
            memcpy(hidden, c->stream->hidden, sizeof(float) * (size_t)(nwin * ctx * D));
        for (int64_t w = 0; w < nwin && !st && first_layer == 0; w++)
            st = kv_forward_embed(m, c->calib_ids + w * ctx, ctx, hidden + w * ctx * D, err);
        rep->tokens = nwin * ctx;
        rep->windows = nwin;
    }
    if (first_layer > 0 && o->load_dir) st = kv_fail(err, KV_EINVAL, "resuming needs the calibration run, not load-hessians");

    for (int l = first_layer; l < L && !st; l++) {
        kv_quant_job *jl[KV_LINEAR_COUNT];
        kv_linear_id wh[KV_LINEAR_COUNT];
        int gidx[KV_LINEAR_COUNT], nj = 0;
        for (int k = 0; k < KV_LINEAR_COUNT; k++)
            if (byl[l * KV_LINEAR_COUNT + k]) {
                jl[nj] = byl[l * KV_LINEAR_COUNT + k];
                wh[nj++] = (kv_linear_id)k;
            }
        uint64_t hbytes = 0;
        saved_weight saved[KV_LINEAR_COUNT];
        memset(saved, 0, sizeof saved);
        if (c->stream) st = stream_load_block(c, m, l, jl, wh, nj, saved, err);
        if (!st) st = make_groups(&s, l, jl, wh, nj, gidx, &hbytes, err);
        rep->hess_bytes = KV_MAX(rep->hess_bytes, hbytes);
        if (!st && o->load_dir) {
            for (int k = 0; k < s.ng && !st; k++) st = load_h(o->load_dir, &s.g[k], err);
        } else if (!st) {
            s.layer = l;
            for (int64_t w = 0; w < nwin && !st; w++) {
                memcpy(win, hidden + w * ctx * D, sizeof(float) * (size_t)(ctx * D));
                st = kv_forward_layer(kctx, l, win, ctx, 0, c->pool, err);
                if (!st && s.st) {
                    st = s.st;
                    *err = s.err;
                }
            }
            s.layer = -1;
        }
        if (!st && o->save_dir)
            for (int k = 0; k < s.ng && !st; k++) st = save_h(o->save_dir, &s.g[k], err);
        for (int j = 0; j < nj && !st; j++) {
            int used_later = 0; /* H is freed after its last job: the block's largest runs with the others gone */
            for (int k = j + 1; k < nj; k++) used_later |= gidx[k] == gidx[j];
            st = quantize_job(c, o, fn, user, m, jl[j], &s.g[gidx[j]], 1, !used_later, err);
            if (!st && c->progress) kv_progress_update(c->progress, ++done);
        }
        free_groups(&s);
        for (int64_t w = 0; w < nwin && !st && !o->load_dir; w++)
            st = kv_forward_layer(kctx, l, hidden + w * ctx * D, ctx, 0, c->pool, err);
        kv_status rs = c->stream ? stream_release_block(m, jl, nj, saved, err) : KV_OK;
        if (!st) st = rs;
        if (!st && head && l == L - 1) { /* with the last block: a checkpoint never holds the blocks without it */
            hbytes = 0;
            st = calib_head(c, o, fn, user, m, &s, head, hidden, win, nwin, ctx, &hbytes, err);
            rep->hess_bytes = KV_MAX(rep->hess_bytes, hbytes);
            jl[nj++] = head;
            if (!st && c->progress) kv_progress_update(c->progress, ++done);
        }
        if (!st && c->stream)
            st = c->stream->block_done(c->stream->user, l, jl, nj, hidden, hidden ? nwin * ctx * D : 0, err);
    }
    rep->peak_bytes = rep->act_bytes + rep->hess_bytes;
    free(hidden);
    free(win);
    free(s.rot);
    free_groups(&s);
    kv_context_free(kctx);
    if (!st && nrest > 0) st = kv_method_rtn_jobs(c, rest, nrest, err);
    if (c->progress) kv_progress_update(c->progress, done + nrest);
    free(byl);
    free(rest);
    rep->seconds = kv_now_seconds() - t0;
    if (!st)
        logf_(c, "calibration: %lld windows x %lld tokens, peak %.1f MiB (activations %.1f, Hessians %.1f), %.1f s",
              (long long)rep->windows, (long long)ctx, rep->peak_bytes / 1048576.0, rep->act_bytes / 1048576.0,
              rep->hess_bytes / 1048576.0, rep->seconds);
    return st;
}
