/* gptq.c — GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers", arXiv 2210.17323, Algorithm 1; reference code IST-DASLab/gptq
 * gptq.py GPTQ.fasterquant): dampening, dead inputs, act-order, Cholesky of H⁻¹ (upper), lazy batch
 * updates — onto any kv_format through the format grid (gptq.h, fgrid.c).
 *
 * Everything runs in the permuted column order (act-order); rows are independent, so each lazy batch is
 * processed by row chunks in parallel, and the trailing update W[:, i2:] -= Err·U[i1:i2, i2:] is one GEMM. */
#include "algos/gptq.h"
#include "algos/linalg.h"
#include "algos/calib.h"
#include <math.h>

enum { ROW_CHUNK = 8, MAX_DAMP_TRIES = 12 };

void kv_gptq_opts_default(kv_gptq_opts *o) {
    memset(o, 0, sizeof *o);
    o->percdamp = 0.01;
    o->block = 128;
}

typedef struct {
    uint8_t *qbuf;  /* hdr + bb */
    uint8_t *scr;   /* hdr + bb */
    float *gath;    /* B */
    float *fa, *fb; /* B each */
    float *fscr;    /* 2B */
    kv_status st;   /* first quantizer failure on this thread */
    kv_error err;
} gptq_scratch;

typedef struct {
    const kv_fgrid *g;
    int64_t rows, n, rowb, bsz;
    const int64_t *perm, *invperm, *first_pi;
    float *W;          /* rows × n, permuted columns */
    const float *U;    /* n × n upper, permuted */
    float *A, *Bv, *S; /* rows × n: affine parameters and the value each column had when its block opened */
    uint8_t *out;
    float *Err;        /* rows × bsz */
    double *rowloss;
    const float *imp;  /* natural-order importance or NULL */
    int dynamic;
    int64_t i1, i2;
    gptq_scratch *scratch; /* per thread */
} gptq_ctx;

static uint8_t *block_ptr(const gptq_ctx *c, int64_t r, int64_t blk) {
    return c->out + r * c->rowb + c->g->hdr + blk * c->g->bb;
}

/* Fix block blk's parameters for row r with the format's own quantizer on the current weights. */
static kv_status open_block(gptq_ctx *c, gptq_scratch *s, int64_t r, int64_t blk, int64_t i) {
    const kv_fgrid *g = c->g;
    float *w = c->W + r * c->n;
    const float *err = c->Err + r * c->bsz;
    for (int32_t k = 0; k < g->B; k++) {
        int64_t pc = c->invperm[blk * g->B + k];
        double v = w[pc];
        if (pc >= c->i2) /* updates of this batch not yet applied to later batches */
            for (int64_t m = c->i1; m < i; m++) v -= (double)err[m - c->i1] * c->U[m * c->n + pc];
        s->gath[k] = (float)v;
    }
    kv_error e;
    kv_status st = g->fmt.quantize(&g->fmt, s->gath, s->qbuf, 1, g->B, c->imp ? c->imp + blk * g->B : NULL, &e);
    if (st) {
        if (!s->st) { s->st = st; s->err = e; }
        return st;
    }
    uint8_t *bp = block_ptr(c, r, blk);
    memcpy(bp, s->qbuf, (size_t)g->bb);
    kv_fgrid_affine(g, NULL, bp, s->fa, s->fb, s->scr, s->fscr);
    for (int32_t k = 0; k < g->B; k++) {
        int64_t pc = c->invperm[blk * g->B + k];
        c->A[r * c->n + pc] = s->fa[k];
        c->Bv[r * c->n + pc] = s->fb[k];
        c->S[r * c->n + pc] = s->gath[k];
    }
    return KV_OK;
}

static int same_bits(float x, float y) { return memcmp(&x, &y, sizeof x) == 0; }

/* kv_fgrid_nearest1 (the same code for every u) without its binary search: the largest lo with t[lo] < u is
 * guessed from u's position between the end levels (right for evenly spaced grids up to a step of rounding),
 * checked, and left to kv_fgrid_nearest1 when the grid is too uneven for the guess. */
static int32_t nearest_level(const kv_fgrid *g, float u) {
    const float *t = g->sorted_t;
    int32_t last = g->nsorted - 1;
    if (!(u > t[0])) return g->sorted_code[0];
    if (u >= t[last]) return g->sorted_code[last];
    double x = ((double)u - t[0]) / ((double)t[last] - t[0]) * last;
    int32_t lo = x < 0 ? 0 : x > last - 1 ? last - 1 : (int32_t)x;
    if (lo > 0 && !(t[lo] < u)) lo--;
    if (lo + 1 < last && t[lo + 1] < u) lo++;
    if (!(t[lo] < u) || (lo + 1 < last && t[lo + 1] < u)) return kv_fgrid_nearest1(g, u); /* uneven grid */
    return u - t[lo] <= t[lo + 1] - u ? g->sorted_code[lo] : g->sorted_code[lo + 1];
}

/* Chooses the code of the unit starting at permuted column i of row r and writes it; q gets its values. */
static void round_unit(gptq_ctx *c, int64_t r, int64_t i, float *q) {
    const kv_fgrid *g = c->g;
    int32_t p = g->p;
    int64_t col = c->perm[i], blk = col / g->B;
    int32_t unit = g->pos_unit[col % g->B];
    uint8_t *bp = block_ptr(c, r, blk);
    const float *w = c->W + r * c->n, *A = c->A + r * c->n, *Bv = c->Bv + r * c->n, *S = c->S + r * c->n;
    int unchanged = 1;
    for (int32_t k = 0; k < p; k++) unchanged &= same_bits(w[i + k], S[i + k]);
    int32_t code;
    if (unchanged) { /* the weight has not moved: keep the format's own choice */
        code = kv_fgrid_get_code(g, bp, unit);
    } else if (p == 1) {
        float a = A[i];
        if (a == 0 || !isfinite(a)) code = kv_fgrid_get_code(g, bp, unit);
        else code = nearest_level(g, (w[i] - Bv[i]) / a);
    } else {
        /* exact GPTQ loss of the unit for each code: the error of coordinate k moves coordinates > k */
        double best = INFINITY;
        code = kv_fgrid_get_code(g, bp, unit);
        for (int32_t cc = 0; cc < g->ncodes; cc++) {
            if (!g->valid[cc]) continue;
            double e[8], loss = 0;
            for (int32_t k = 0; k < p && loss < best; k++) {
                double wk = w[i + k];
                for (int32_t m = 0; m < k; m++) wk -= e[m] * c->U[(i + m) * c->n + i + k];
                double qk = (double)A[i + k] * g->t[cc * p + k] + Bv[i + k];
                e[k] = (wk - qk) / c->U[(i + k) * c->n + i + k];
                loss += e[k] * e[k];
            }
            if (loss < best) { best = loss; code = cc; }
        }
    }
    kv_fgrid_set_code(g, bp, unit, code);
    for (int32_t k = 0; k < p; k++) q[k] = A[i + k] * g->t[code * p + k] + Bv[i + k];
}

/* w[0..m) -= e·u[0..m). Each element gets one multiply and one subtract, as in a plain loop, so blocks of a
 * fixed 16 or 8 (which the compiler turns into vector instructions at -O2) give the same bytes. */
static void sub_scaled(float *restrict w, const float *restrict u, float e, int64_t m) {
    int64_t j = 0;
    for (; j + 16 <= m; j += 16)
        for (int k = 0; k < 16; k++) w[j + k] -= e * u[j + k];
    if (j + 8 <= m) {
        for (int k = 0; k < 8; k++) w[j + k] -= e * u[j + k];
        j += 8;
    }
    for (; j < m; j++) w[j] -= e * u[j];
}

static void batch_task(void *vctx, int64_t task, int thread) {
    gptq_ctx *c = vctx;
    gptq_scratch *s = &c->scratch[thread];
    int64_t r0 = task * ROW_CHUNK, r1 = KV_MIN(r0 + ROW_CHUNK, c->rows);
    const kv_fgrid *g = c->g;
    int64_t n = c->n;
    for (int64_t r = r0; r < r1; r++) {
        float *w = c->W + r * n, *err = c->Err + r * c->bsz;
        float q[8] = {0};
        double loss = 0;
        for (int64_t i = c->i1; i < c->i2; i++) {
            int64_t blk = c->perm[i] / g->B;
            if (c->dynamic && c->first_pi[blk] == i && open_block(c, s, r, blk, i)) return;
            int64_t k = (i - c->i1) % g->p; /* batches start on unit boundaries */
            if (k == 0) round_unit(c, r, i, q);
            const float *u = c->U + i * n;
            float e = (w[i] - q[k]) / u[i];
            err[i - c->i1] = e;
            loss += (double)e * e;
            w[i] = q[k];
            sub_scaled(w + i + 1, u + i + 1, e, c->i2 - i - 1);
        }
        c->rowloss[r] += loss;
    }
}

static void static_task(void *vctx, int64_t task, int thread) {
    gptq_ctx *c = vctx;
    gptq_scratch *s = &c->scratch[thread];
    const kv_fgrid *g = c->g;
    int64_t r = task;
    const uint8_t *row = c->out + r * c->rowb;
    for (int64_t blk = 0; blk < c->n / g->B; blk++) {
        kv_fgrid_affine(g, row, row + g->hdr + blk * g->bb, s->fa, s->fb, s->scr, s->fscr);
        for (int32_t k = 0; k < g->B; k++) {
            int64_t pc = c->invperm[blk * g->B + k];
            c->A[r * c->n + pc] = s->fa[k];
            c->Bv[r * c->n + pc] = s->fb[k];
            c->S[r * c->n + pc] = c->W[r * c->n + pc];
        }
    }
}

typedef struct {
    int64_t unit;
    double key;
} unit_key;

static int cmp_unit_key(const void *x, const void *y) {
    const unit_key *a = x, *b = y;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;
    return (a->unit > b->unit) - (a->unit < b->unit);
}

/* perm[i] = original column processed i-th: units stay contiguous, in coordinate order. */
static kv_status build_perm(const kv_fgrid *g, const double *diag, int64_t n, int act_order, int64_t *perm,
                            kv_error *err) {
    int64_t nblk = n / g->B, nu = nblk * g->nunits;
    unit_key *uk = malloc(sizeof *uk * (size_t)nu);
    if (!uk) return kv_fail(err, KV_ENOMEM, "out of memory");
    for (int64_t blk = 0; blk < nblk; blk++)
        for (int32_t u = 0; u < g->nunits; u++) {
            unit_key *k = &uk[blk * g->nunits + u];
            k->unit = blk * g->nunits + u;
            k->key = 0;
            for (int32_t j = 0; j < g->p; j++) {
                int64_t col = blk * g->B + g->unit_pos[u * g->p + j];
                k->key += diag[col];
            }
        }
    /* natural order keeps units sorted by their first column */
    if (act_order) qsort(uk, (size_t)nu, sizeof *uk, cmp_unit_key);
    else {
        for (int64_t i = 0; i < nu; i++) uk[i].key = -(double)(uk[i].unit / g->nunits * g->B +
                                                               g->unit_pos[(uk[i].unit % g->nunits) * g->p]);
        qsort(uk, (size_t)nu, sizeof *uk, cmp_unit_key);
    }
    int64_t i = 0;
    for (int64_t k = 0; k < nu; k++) {
        int64_t blk = uk[k].unit / g->nunits;
        int32_t u = (int32_t)(uk[k].unit % g->nunits);
        for (int32_t j = 0; j < g->p; j++) perm[i++] = blk * g->B + g->unit_pos[u * g->p + j];
    }
    free(uk);
    return KV_OK;
}

/* u = H in the processing order, dead inputs cut off (row and column 0, diagonal 1: gptq.py). Filled from the
 * caller's H on every damping try, so no n×n copy of H is kept (fp64 H is 1.6 GB at n = 14336). */
static void fill_permuted_h(const double *h, const uint8_t *dead, const int64_t *perm, int64_t n, double *u) {
    for (int64_t i = 0; i < n; i++) {
        const double *hi = h + perm[i] * n;
        double *ui = u + i * n;
        if (dead[perm[i]]) {
            memset(ui, 0, sizeof(double) * (size_t)n);
            ui[i] = 1;
            continue;
        }
        for (int64_t j = 0; j < n; j++) ui[j] = dead[perm[j]] ? 0.0 : hi[perm[j]];
    }
}

/* U = upper Cholesky of (H + λI)⁻¹ (H permuted, dead inputs cut off; diag: its diagonal in natural order),
 * raising λ tenfold until H + λI is positive definite. */
static kv_status damped_inverse(const double *h, const uint8_t *dead, const double *diag, const int64_t *perm,
                                int64_t n, double percdamp, double *u, kv_gptq_stats *stats, kv_pool *pool,
                                kv_error *err) {
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += diag[perm[i]];
    mean /= (double)n;
    double lambda0 = percdamp * mean, lambda = lambda0;
    for (int tries = 0; tries < MAX_DAMP_TRIES; tries++, lambda = lambda > 0 ? lambda * 10 : 1e-6 * mean) {
        fill_permuted_h(h, dead, perm, n, u);
        for (int64_t i = 0; i < n; i++) u[i * n + i] += lambda;
        int64_t bad = kv_chol_inv_upper(u, n, pool);
        if (bad < 0) return kv_fail(err, KV_ENOMEM, "out of memory inverting H");
        if (bad == 0) {
            stats->damp = lambda;
            stats->damp_factor = lambda0 > 0 ? lambda / lambda0 : INFINITY;
            if (tries > 0)
                snprintf(stats->warning, sizeof stats->warning,
                         "H is not positive definite with damping %.3g; damping raised to %.6g (%.0fx, %.3g of "
                         "mean diag H)", lambda0, lambda, lambda0 > 0 ? lambda / lambda0 : INFINITY,
                         lambda / mean);
            return KV_OK;
        }
    }
    return kv_fail(err, KV_EINVAL, "H is not positive definite even with damping %.3g (mean diag %.3g)", lambda,
                   mean);
}

kv_status kv_gptq_quantize(const kv_format *fmt, const float *w, int64_t rows, int64_t cols, const double *h,
                           const kv_gptq_opts *opts, void *out, kv_gptq_stats *stats, kv_pool *pool,
                           kv_error *err) {
    kv_gptq_opts dflt;
    kv_gptq_stats local;
    if (!opts) { kv_gptq_opts_default(&dflt); opts = &dflt; }
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    if (!fmt || !w || !h || !out || rows <= 0 || cols <= 0)
        return kv_fail(err, KV_EINVAL, "gptq: missing weights, H or output");
    if (cols % fmt->block)
        return kv_fail(err, KV_EINVAL, "gptq: %lld columns are not a multiple of %s's block %d", (long long)cols,
                       fmt->name, (int)fmt->block);
    if (!(opts->percdamp >= 0) || opts->block <= 0) return kv_fail(err, KV_EINVAL, "gptq: bad percdamp or block");
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(w[i])) return kv_fail(err, KV_EINVAL, "gptq: weight [%lld, %lld] is not finite",
                                            (long long)(i / cols), (long long)(i % cols));
    for (int64_t i = 0; i < cols * cols; i++)
        if (!isfinite(h[i])) return kv_fail(err, KV_EINVAL, "gptq: H is not finite");

    kv_fgrid g;
    kv_status st = kv_fgrid_build(fmt, &g, err);
    if (st) return st;
    int64_t n = cols, rowb = (int64_t)kv_format_row_bytes(fmt, n);
    int nth = pool ? kv_pool_threads(pool) : 1;
    int64_t bsz = (opts->block + g.p - 1) / g.p * g.p;
    size_t nn = (size_t)n * (size_t)n, rn = (size_t)rows * (size_t)n;
    double *diag = malloc(sizeof(double) * (size_t)n), *ud = malloc(sizeof(double) * nn);
    uint8_t *dead = malloc((size_t)n);
    float *wn = malloc(sizeof(float) * rn), *imp = NULL, *uf = NULL; /* uf after the inverse: lower peak */
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)n), *invperm = malloc(sizeof(int64_t) * (size_t)n);
    int64_t *first_pi = malloc(sizeof(int64_t) * (size_t)(n / g.B));
    gptq_ctx c = {0};
    gptq_scratch *scr = calloc((size_t)nth, sizeof *scr);
    c.W = malloc(sizeof(float) * rn);
    c.U = NULL;
    c.A = malloc(sizeof(float) * rn);
    c.Bv = malloc(sizeof(float) * rn);
    c.S = malloc(sizeof(float) * rn);
    c.Err = malloc(sizeof(float) * (size_t)rows * (size_t)bsz);
    c.rowloss = calloc((size_t)rows, sizeof(double));
    if (opts->use_importance) imp = malloc(sizeof(float) * (size_t)n);
    int oom = !diag || !ud || !dead || !wn || !perm || !invperm || !first_pi || !scr || !c.W || !c.A || !c.Bv ||
              !c.S || !c.Err || !c.rowloss || (opts->use_importance && !imp);
    for (int t = 0; t < nth && !oom; t++) {
        size_t qb = (size_t)(g.hdr + g.bb);
        scr[t].qbuf = malloc(qb);
        scr[t].scr = malloc(qb);
        scr[t].gath = malloc(sizeof(float) * (size_t)g.B * 5);
        oom = !scr[t].qbuf || !scr[t].scr || !scr[t].gath;
        if (!oom) {
            scr[t].fa = scr[t].gath + g.B;
            scr[t].fb = scr[t].gath + 2 * g.B;
            scr[t].fscr = scr[t].gath + 3 * g.B;
        }
    }
    if (oom) {
        st = kv_fail(err, KV_ENOMEM, "gptq: out of memory for a %lld x %lld layer", (long long)rows, (long long)n);
        goto done;
    }

    /* dead inputs: H_ii = 1, the rest of their row and column 0, and their weights 0 (gptq.py) */
    memcpy(wn, w, sizeof(float) * rn);
    for (int64_t j = 0; j < n; j++) {
        dead[j] = !(h[j * n + j] > 0);
        diag[j] = dead[j] ? 1.0 : h[j * n + j];
        if (dead[j]) {
            stats->dead_cols++;
            for (int64_t r = 0; r < rows; r++) wn[r * n + j] = 0;
        }
    }
    if (imp)
        for (int64_t j = 0; j < n; j++) imp[j] = (float)diag[j];

    /* round to nearest first: row headers, static block parameters, and the code of every untouched block */
    st = fmt->quantize(fmt, wn, out, rows, n, imp, err);
    if (st) goto done;

    st = build_perm(&g, diag, n, opts->act_order, perm, err);
    if (st) goto done;
    for (int64_t i = 0; i < n; i++) invperm[perm[i]] = i;
    for (int64_t b = 0; b < n / g.B; b++) {
        first_pi[b] = n;
        for (int32_t k = 0; k < g.B; k++) first_pi[b] = KV_MIN(first_pi[b], invperm[b * g.B + k]);
    }
    /* U of the permuted, damped H in ud (fp64), then as fp32 */
    st = damped_inverse(h, dead, diag, perm, n, opts->percdamp, ud, stats, pool, err);
    if (st) goto done;
    uf = malloc(sizeof(float) * nn);
    if (!uf) {
        st = kv_fail(err, KV_ENOMEM, "gptq: out of memory for a %lld x %lld layer", (long long)rows, (long long)n);
        goto done;
    }
    for (size_t k = 0; k < nn; k++) uf[k] = (float)ud[k];
    free(ud);
    ud = NULL;

    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++) c.W[r * n + i] = wn[r * n + perm[i]];
    c.g = &g;
    c.rows = rows;
    c.n = n;
    c.rowb = rowb;
    c.bsz = bsz;
    c.perm = perm;
    c.invperm = invperm;
    c.first_pi = first_pi;
    c.U = uf;
    c.out = out;
    c.imp = imp;
    c.scratch = scr;
    c.dynamic = !opts->static_groups && g.hdr == 0;
    stats->static_params = !c.dynamic;
    stats->unit = g.p;
    if (!c.dynamic) kv_pool_run(pool, rows, static_task, &c);

    for (int64_t i1 = 0; i1 < n; i1 += bsz) {
        c.i1 = i1;
        c.i2 = KV_MIN(i1 + bsz, n);
        kv_pool_run(pool, (rows + ROW_CHUNK - 1) / ROW_CHUNK, batch_task, &c);
        for (int t = 0; t < nth; t++)
            if (scr[t].st) {
                if (err) *err = scr[t].err;
                st = scr[t].st;
                goto done;
            }
        if (c.i2 < n)
            kv_sgemm_sub(c.W + c.i2, n, c.Err, bsz, uf + i1 * n + c.i2, n, rows, n - c.i2, c.i2 - i1, pool);
    }
    for (int64_t r = 0; r < rows; r++) stats->loss += c.rowloss[r];

done:
    for (int t = 0; scr && t < nth; t++) {
        free(scr[t].qbuf);
        free(scr[t].scr);
        free(scr[t].gath);
    }
    free(scr);
    free(diag);
    free(dead);
    free(ud);
    free(wn);
    free(imp);
    free(perm);
    free(invperm);
    free(first_pi);
    free(c.W);
    free(uf);
    free(c.A);
    free(c.Bv);
    free(c.S);
    free(c.Err);
    free(c.rowloss);
    kv_fgrid_free(&g);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* H accumulation and the loss                                                                     */
/* ---------------------------------------------------------------------------------------------- */

kv_status kv_hessian_add(double *h, const float *x, int64_t ntok, int64_t cols, const char *what, kv_pool *pool,
                         kv_error *err) {
    for (int64_t i = 0; i < ntok * cols; i++)
        if (!isfinite(x[i]))
            return kv_fail(err, KV_EINVAL, "%s: activation [token %lld, feature %lld] is %s",
                           what ? what : "linear input", (long long)(i / cols), (long long)(i % cols),
                           isnan(x[i]) ? "NaN" : "infinite");
    kv_syrk_acc(h, x, ntok, cols, pool);
    return KV_OK;
}

typedef struct {
    const float *w, *q;
    const double *h;
    int64_t n;
    double *rowloss;
} loss_ctx;

static void loss_task(void *vctx, int64_t r, int thread) {
    loss_ctx *c = vctx;
    int64_t n = c->n;
    double *d = malloc(sizeof(double) * (size_t)n);
    if (!d) { c->rowloss[r] = NAN; return; }
    for (int64_t j = 0; j < n; j++) d[j] = (double)c->w[r * n + j] - c->q[r * n + j];
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (d[i] == 0) continue;
        const double *hi = c->h + i * n;
        double t = 0;
        for (int64_t j = 0; j < n; j++) t += hi[j] * d[j];
        s += d[i] * t;
    }
    c->rowloss[r] = s;
    free(d);
}

double kv_hessian_loss(const float *w, const float *q, int64_t rows, int64_t cols, const double *h,
                       kv_pool *pool) {
    double *rl = calloc((size_t)rows, sizeof(double));
    if (!rl) return NAN;
    loss_ctx c = {w, q, h, cols, rl};
    kv_pool_run(pool, rows, loss_task, &c);
    double s = 0;
    for (int64_t r = 0; r < rows; r++) s += rl[r];
    free(rl);
    return s;
}

/* ---------------------------------------------------------------------------------------------- */
/* `kvant quantize --method gptq[:OPTIONS]`                                                         */
/* ---------------------------------------------------------------------------------------------- */

/* The method's values (declared in src/algos/methods.c): parsed by the pipeline, or here for a direct caller. */
const kv_method_values *kv_method_ctx_values(const kv_quant_method_ctx *c, const kv_quant_method *m,
                                             kv_method_values *local, kv_error *err) {
    if (c->values) return c->values;
    return kv_method_values_parse(m, c->options, local, err) == KV_OK ? local : NULL;
}

/* Options: act-order, static, importance, damp=F, block=N, save-hessians=DIR, load-hessians=DIR. */
static kv_status gptq_parse(const kv_quant_method_ctx *c, kv_gptq_opts *o, kv_calib_opts *co, kv_method_values *local,
                            kv_error *err) {
    const kv_quant_method *m = kv_quant_method_find("gptq");
    const kv_method_values *v = kv_method_ctx_values(c, m, local, err);
    if (!v) return err ? err->status : KV_EINVAL;
    kv_gptq_opts_default(o);
    memset(co, 0, sizeof *co);
    o->act_order = kv_mopt_given(m, v, "act-order");
    o->static_groups = kv_mopt_given(m, v, "static");
    o->use_importance = kv_mopt_given(m, v, "importance");
    if (kv_mopt_given(m, v, "damp")) o->percdamp = kv_mopt_num(m, v, "damp");
    if (kv_mopt_given(m, v, "block")) o->block = (int32_t)kv_mopt_num(m, v, "block");
    if (kv_mopt_given(m, v, "save-hessians")) co->save_dir = kv_mopt_text(m, v, "save-hessians");
    if (kv_mopt_given(m, v, "load-hessians")) co->load_dir = kv_mopt_text(m, v, "load-hessians");
    return KV_OK;
}

typedef struct {
    kv_gptq_opts o;
    double loss;
} gptq_method_state;

static kv_status gptq_job(void *user, kv_quant_job *job, const double *h, int64_t ntok, kv_pool *pool,
                          char *note, size_t note_len, kv_error *err) {
    gptq_method_state *s = user;
    kv_gptq_stats st;
    if (job->fmt.type == KV_TYPE_F32 || job->fmt.type == KV_TYPE_F16 || job->fmt.type == KV_TYPE_BF16)
        return job->fmt.quantize(&job->fmt, job->w, job->dst, job->rows, job->cols, NULL, err);
    kv_status r = kv_gptq_quantize(&job->fmt, job->w, job->rows, job->cols, h, &s->o, job->dst, &st, pool, err);
    if (r == KV_EUNSUPPORTED) { /* a format GPTQ cannot round to: its own quantizer (the driver warned once) */
        if (err) kv_error_clear(err);
        return job->fmt.quantize(&job->fmt, job->w, job->dst, job->rows, job->cols, job->importance, err);
    }
    if (r) return r;
    s->loss += st.loss;
    if (st.warning[0]) snprintf(note, note_len, "%s", st.warning);
    return KV_OK;
}

kv_status kv_method_gptq(kv_quant_method_ctx *c, kv_error *err) {
    gptq_method_state s = {0};
    kv_calib_opts co;
    kv_method_values local; /* co's paths point into the values */
    kv_status st = gptq_parse(c, &s.o, &co, &local, err);
    if (st) return st;
    return kv_calib_run(c, &co, gptq_job, &s, NULL, err);
}
