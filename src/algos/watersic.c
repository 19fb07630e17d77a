/* watersic.c — WaterSIC (Lifar, Savkin, Ordentlich, Polyanskiy, "WaterSIC: information-theoretically (near)
 * optimal linear layer quantization", arXiv 2603.04956; reference code egorlifar/watersic
 * quant_layerwise/methods/zsic.py compress_w2q / find_optimal_rescalers3), written from the paper's algorithm:
 *   L = lower Cholesky of Σ_X + λI, Y = W·L; step c in Y space, α_i = c/L_ii (reverse waterfilling on the
 *   Cholesky diagonal); for i = n−1 … 0: z = round(Y[:, i]/c), LMMSE gain γ_i, Y[:, ≤i] −= γ_i α_i z·L[i, ≤i]
 *   (successive interference cancellation); then row/column rescalers by alternating least squares; c found by
 *   a secant search on log c so that entropy(Z) + side information = the target rate.
 * The column loop is batched like GPTQ's: inside a batch of columns only the batch is updated, the rest of Y
 * gets one GEMM per batch. */
#include "algos/linalg.h"
#include "algos/calib.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

enum { BATCH = 64, ROW_CHUNK = 32, ALS_ITERS = 10 };

void kv_watersic_opts_default(kv_watersic_opts *o) {
    memset(o, 0, sizeof *o);
    o->percdamp = 1e-4;
    o->rescale = 1;
    o->max_search = 12;
}

void kv_watersic_result_free(kv_watersic_result *r) {
    if (!r) return;
    free(r->z);
    free(r->col_step);
    free(r->row_scale);
    free(r->wq);
    memset(r, 0, sizeof *r);
}

typedef struct {
    int64_t a, n;
    const double *L;  /* n × n lower */
    const float *w;   /* a × n (dead columns zeroed) */
    const uint8_t *dead;
    double *Y;        /* a × n */
    double *Q;        /* a × BATCH: g·z of the current batch */
    int32_t *z;       /* a × n */
    double *g;        /* n: column gains γ_i·α_i */
    double c;
    int64_t col, i0;  /* column being coded, batch start */
    double *zz, *zy;  /* per row chunk partial sums */
    double gprev;     /* gain of column col+1 (to apply before coding col), NAN when none */
} sic_ctx;

/* Y = W·L: row r, Y[r][j] = Σ_{k ≥ j} W[r][k]·L[k][j]. */
static void wl_task(void *vctx, int64_t task, int thread) {
    sic_ctx *s = vctx;
    int64_t r0 = task * ROW_CHUNK, r1 = KV_MIN(r0 + ROW_CHUNK, s->a), n = s->n;
    for (int64_t r = r0; r < r1; r++) {
        double *y = s->Y + r * n;
        memset(y, 0, sizeof(double) * (size_t)n);
        for (int64_t k = 0; k < n; k++) {
            double wk = s->w[r * n + k];
            if (wk == 0) continue;
            const double *lk = s->L + k * n;
            for (int64_t j = 0; j <= k; j++) y[j] += wk * lk[j];
        }
    }
}

/* For rows of the chunk: apply column col+1's feedback inside the batch, then round column col. */
static void col_task(void *vctx, int64_t task, int thread) {
    sic_ctx *s = vctx;
    int64_t r0 = task * ROW_CHUNK, r1 = KV_MIN(r0 + ROW_CHUNK, s->a), n = s->n, i = s->col;
    double zz = 0, zy = 0;
    for (int64_t r = r0; r < r1; r++) {
        double *y = s->Y + r * n;
        if (!isnan(s->gprev)) {
            int64_t p = i + 1;
            double q = s->gprev * s->z[r * n + p];
            s->Q[r * BATCH + (p - s->i0)] = q;
            if (q != 0) {
                const double *lp = s->L + p * n;
                for (int64_t j = s->i0; j <= p; j++) y[j] -= q * lp[j];
            }
        }
        if (i < s->i0) continue;
        int32_t zi = s->dead[i] ? 0 : (int32_t)lrint(y[i] / s->c);
        s->z[r * n + i] = zi;
        zz += (double)zi * zi;
        zy += zi * y[i];
    }
    s->zz[task] = zz;
    s->zy[task] = zy;
}

/* One SIC pass with step c: fills z and g. */
static void sic_pass(sic_ctx *s, double c, kv_pool *pool) {
    int64_t a = s->a, n = s->n, nchunk = (a + ROW_CHUNK - 1) / ROW_CHUNK;
    s->c = c;
    kv_pool_run(pool, nchunk, wl_task, s);
    for (int64_t i1 = n; i1 > 0; i1 -= BATCH) {
        int64_t i0 = KV_MAX(i1 - BATCH, (int64_t)0);
        s->i0 = i0;
        s->gprev = NAN;
        for (int64_t i = i1 - 1; i >= i0 - 1; i--) {
            s->col = i;
            kv_pool_run(pool, nchunk, col_task, s);
            if (i < i0) break; /* last run only applied column i0's feedback */
            double zz = 0, zy = 0;
            for (int64_t t = 0; t < nchunk; t++) { zz += s->zz[t]; zy += s->zy[t]; }
            double gamma = zz > 0 ? zy / (zz * c) : 0; /* LMMSE gain of the column */
            s->g[i] = gamma * c / s->L[i * n + i];
            s->gprev = s->g[i];
        }
        /* columns left of the batch: Y[:, :i0] −= Q·L[i0:i1, :i0] */
        if (i0 > 0) kv_dgemm(0, a, i0, i1 - i0, -1.0, s->Q, BATCH, s->L + i0 * n, n, 1.0, s->Y, n, pool);
    }
}

/* tr(E·S·Eᵀ) for E = W − diag(t)·Z·diag(g) (t may be NULL = 1). */
static double weighted_err(const sic_ctx *s, const double *S, const double *t, const double *g, double *E,
                           double *P, kv_pool *pool) {
    int64_t a = s->a, n = s->n;
    for (int64_t r = 0; r < a; r++)
        for (int64_t j = 0; j < n; j++)
            E[r * n + j] = s->w[r * n + j] - (t ? t[r] : 1.0) * g[j] * s->z[r * n + j];
    kv_dgemm(0, a, n, n, 1.0, E, n, S, n, 0.0, P, n, pool);
    double d = 0;
    for (int64_t k = 0; k < a * n; k++) d += E[k] * P[k];
    return d;
}

/* Alternating least squares for row scales t and column gains g (zsic.py find_optimal_rescalers3). */
static kv_status rescale(sic_ctx *s, const double *S, double *t, kv_pool *pool, kv_error *err) {
    int64_t a = s->a, n = s->n;
    size_t an = (size_t)(a * n), nn = (size_t)(n * n);
    double *V = malloc(sizeof(double) * an), *P = malloc(sizeof(double) * an), *WS = malloc(sizeof(double) * an);
    double *M = malloc(sizeof(double) * nn), *b = malloc(sizeof(double) * (size_t)n);
    double *g = malloc(sizeof(double) * (size_t)n), *t2 = malloc(sizeof(double) * (size_t)a);
    kv_status st = KV_OK;
    if (!V || !P || !WS || !M || !b || !g || !t2) {
        st = kv_fail(err, KV_ENOMEM, "watersic: out of memory");
        goto done;
    }
    for (int64_t r = 0; r < a; r++) t[r] = 1;
    for (int64_t k = 0; k < (int64_t)an; k++) V[k] = s->w[k];
    kv_dgemm(0, a, n, n, 1.0, V, n, S, n, 0.0, WS, n, pool); /* W·S */
    double prev = weighted_err(s, S, t, s->g, V, P, pool);
    for (int it = 0; it < ALS_ITERS; it++) {
        /* rows: t_r = (W_r S v_rᵀ) / (v_r S v_rᵀ), v_r = z_r ∘ g */
        for (int64_t r = 0; r < a; r++)
            for (int64_t j = 0; j < n; j++) V[r * n + j] = s->g[j] * s->z[r * n + j];
        kv_dgemm(0, a, n, n, 1.0, V, n, S, n, 0.0, P, n, pool);
        for (int64_t r = 0; r < a; r++) {
            double num = 0, den = 0;
            for (int64_t j = 0; j < n; j++) {
                num += s->w[r * n + j] * P[r * n + j];
                den += V[r * n + j] * P[r * n + j];
            }
            t2[r] = den > 0 ? num / den : 1;
        }
        /* columns: M γ = b with M = (Vtᵀ·Vt) ∘ S, b_j = Σ_r Vt_rj (W·S)_rj, Vt = diag(t)·V */
        for (int64_t r = 0; r < a; r++)
            for (int64_t j = 0; j < n; j++) V[r * n + j] *= t2[r];
        kv_dgemm(1, n, n, a, 1.0, V, n, V, n, 0.0, M, n, pool);
        double tr = 0;
        for (int64_t k = 0; k < (int64_t)nn; k++) M[k] *= S[k];
        for (int64_t j = 0; j < n; j++) tr += M[j * n + j];
        for (int64_t j = 0; j < n; j++) {
            double bj = 0;
            for (int64_t r = 0; r < a; r++) bj += V[r * n + j] * WS[r * n + j];
            b[j] = bj;
            M[j * n + j] += 1e-9 * tr / n + (M[j * n + j] == 0); /* columns with z ≡ 0 stay put */
        }
        if (kv_chol_lower(M, n, pool) != 0) break;
        /* forward and back substitution: L y = b, Lᵀ γ = y */
        for (int64_t i = 0; i < n; i++) {
            double v = b[i];
            for (int64_t k = 0; k < i; k++) v -= M[i * n + k] * b[k];
            b[i] = v / M[i * n + i];
        }
        for (int64_t i = n - 1; i >= 0; i--) {
            double v = b[i];
            for (int64_t k = i + 1; k < n; k++) v -= M[k * n + i] * b[k];
            b[i] = v / M[i * n + i];
        }
        for (int64_t j = 0; j < n; j++) g[j] = s->g[j] * b[j];
        double d = weighted_err(s, S, t2, g, V, P, pool);
        if (!(d < prev)) break;
        memcpy(t, t2, sizeof(double) * (size_t)a);
        memcpy(s->g, g, sizeof(double) * (size_t)n);
        int stop = prev - d < 3e-4 * prev;
        prev = d;
        if (stop) break;
    }
done:
    free(V); free(P); free(WS); free(M); free(b); free(g); free(t2);
    return st;
}

/* Reverse waterfilling: per-weight distortion of the Gaussian source with component variances v[0..n) at
 * R bits per component. */
static double waterfill_bound(const double *v, int64_t n, double R) {
    double lo = -200, hi = 200; /* log2 θ */
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi), rate = 0;
        for (int64_t i = 0; i < n; i++)
            if (v[i] > 0) rate += fmax(0.0, 0.5 * (log2(v[i]) - mid));
        if (rate > R * n) lo = mid;
        else hi = mid;
    }
    double theta = exp2(0.5 * (lo + hi)), d = 0;
    for (int64_t i = 0; i < n; i++) d += fmin(theta, v[i]);
    return d / n;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

kv_status kv_watersic_quantize(const float *w, int64_t rows, int64_t cols, const double *h,
                               const kv_watersic_opts *opts, kv_watersic_result *res, kv_pool *pool,
                               kv_error *err) {
    kv_watersic_opts dflt;
    if (!opts) { kv_watersic_opts_default(&dflt); opts = &dflt; }
    memset(res, 0, sizeof *res);
    int64_t a = rows, n = cols;
    if (!w || !h || a <= 0 || n <= 0) return kv_fail(err, KV_EINVAL, "watersic: missing weights or H");
    if (!(opts->target_bits > 0) && !(opts->step > 0))
        return kv_fail(err, KV_EINVAL, "watersic: give a target rate (bits > 0) or a step");
    for (int64_t i = 0; i < a * n; i++)
        if (!isfinite(w[i])) return kv_fail(err, KV_EINVAL, "watersic: weight [%lld, %lld] is not finite",
                                            (long long)(i / n), (long long)(i % n));
    size_t an = (size_t)(a * n), nn = (size_t)(n * n);
    double *S = malloc(sizeof(double) * nn), *L = malloc(sizeof(double) * nn), *diag = malloc(sizeof(double) * (size_t)n);
    float *wz = malloc(sizeof(float) * an);
    uint8_t *dead = calloc((size_t)n, 1);
    int64_t nchunk = (a + ROW_CHUNK - 1) / ROW_CHUNK;
    sic_ctx s = {0};
    s.Y = malloc(sizeof(double) * an);
    s.Q = calloc((size_t)a * BATCH, sizeof(double));
    s.z = malloc(sizeof(int32_t) * an);
    s.g = calloc((size_t)n, sizeof(double));
    s.zz = malloc(sizeof(double) * (size_t)nchunk);
    s.zy = malloc(sizeof(double) * (size_t)nchunk);
    double *t = malloc(sizeof(double) * (size_t)a), *vv = malloc(sizeof(double) * (size_t)n);
    kv_status st = KV_OK;
    if (!S || !L || !diag || !wz || !dead || !s.Y || !s.Q || !s.z || !s.g || !s.zz || !s.zy || !t || !vv) {
        st = kv_fail(err, KV_ENOMEM, "watersic: out of memory for a %lld x %lld layer", (long long)a, (long long)n);
        goto done;
    }
    /* dead inputs (diag below 1e-3 of the median) are removed: zero weights, decoupled unit rows of H */
    memcpy(S, h, sizeof(double) * nn);
    memcpy(wz, w, sizeof(float) * an);
    for (int64_t j = 0; j < n; j++) diag[j] = S[j * n + j];
    qsort(diag, (size_t)n, sizeof(double), cmp_double);
    double median = diag[n / 2], mean = 0;
    for (int64_t j = 0; j < n; j++) {
        if (!isfinite(S[j * n + j])) { st = kv_fail(err, KV_EINVAL, "watersic: H is not finite"); goto done; }
        if (!(S[j * n + j] > 1e-3 * median)) {
            dead[j] = 1;
            res->dead_cols++;
            for (int64_t k = 0; k < n; k++) S[j * n + k] = S[k * n + j] = 0;
            for (int64_t r = 0; r < a; r++) wz[r * n + j] = 0;
        }
        mean += S[j * n + j] / n;
    }
    if (!(mean > 0)) mean = 1;
    for (int64_t j = 0; j < n; j++) S[j * n + j] += dead[j] ? mean : opts->percdamp * mean;
    for (double extra = 1e-4 * mean;; extra *= 10) { /* not positive definite: more damping */
        memcpy(L, S, sizeof(double) * nn);
        if (kv_chol_lower(L, n, pool) == 0) break;
        if (extra > 1e3 * mean) { st = kv_fail(err, KV_EINVAL, "watersic: H is not positive definite"); goto done; }
        for (int64_t j = 0; j < n; j++) S[j * n + j] += extra;
    }
    s.a = a;
    s.n = n;
    s.L = L;
    s.w = wz;
    s.dead = dead;

    /* per-column variances in the Cholesky basis, v_i = s_i·L_ii² */
    double logmean = 0;
    int64_t live = 0;
    for (int64_t j = 0; j < n; j++) {
        double sj = 0;
        for (int64_t r = 0; r < a; r++) sj += (double)wz[r * n + j] * wz[r * n + j];
        sj /= a;
        vv[j] = sj * L[j * n + j] * L[j * n + j];
        if (!dead[j] && vv[j] > 0) { logmean += log(12.0 * vv[j]); live++; }
    }
    logmean = live ? logmean / live : 0;

    double c = opts->step;
    if (!(c > 0)) {
        /* secant on log c towards the target rate (rate falls ~1 bit per doubling of c) */
        double lc = 0.5 * logmean - opts->target_bits * log(2.0), lc_prev = 0, f_prev = 0;
        for (int it = 0; it < KV_MAX(opts->max_search, 1); it++) {
            sic_pass(&s, exp(lc), pool);
            double cb, sb;
            if ((st = kv_ecw_rate(s.z, a, n, &cb, &sb, err)) != KV_OK) goto done;
            double f = cb + sb - opts->target_bits;
            res->search_iters = it + 1;
            if (fabs(f) < 2e-3) break;
            double slope = it > 0 && f != f_prev ? (f - f_prev) / (lc - lc_prev) : -1.0 / log(2.0);
            if (!(slope < 0)) slope = -1.0 / log(2.0);
            double step = -f / slope;
            step = fmax(-1.0, fmin(1.0, step));
            lc_prev = lc;
            f_prev = f;
            lc += step;
        }
        c = exp(lc);
    }
    sic_pass(&s, c, pool);
    res->step = c;
    if (opts->rescale) {
        st = rescale(&s, S, t, pool, err);
        if (st) goto done;
    } else {
        for (int64_t r = 0; r < a; r++) t[r] = 1;
    }

    /* fp16 side information, normalised so that column steps are O(1) */
    res->z = s.z;
    s.z = NULL;
    res->col_step = malloc(sizeof(uint16_t) * (size_t)n);
    res->row_scale = malloc(sizeof(uint16_t) * (size_t)a);
    res->wq = malloc(sizeof(float) * an);
    if (!res->col_step || !res->row_scale || !res->wq) {
        st = kv_fail(err, KV_ENOMEM, "watersic: out of memory");
        goto done;
    }
    double gmax = 0;
    for (int64_t j = 0; j < n; j++) gmax = fmax(gmax, fabs(s.g[j]));
    if (!(gmax > 0)) gmax = 1;
    for (int64_t j = 0; j < n; j++) res->col_step[j] = kv_fp32_to_fp16((float)(s.g[j] / gmax));
    for (int64_t r = 0; r < a; r++) res->row_scale[r] = kv_fp32_to_fp16((float)(t[r] * gmax));
    for (int64_t r = 0; r < a; r++) {
        float rs = kv_fp16_to_fp32(res->row_scale[r]);
        for (int64_t j = 0; j < n; j++)
            res->wq[r * n + j] = rs * ((float)res->z[r * n + j] * kv_fp16_to_fp32(res->col_step[j]));
    }
    if ((st = kv_ecw_rate(res->z, a, n, &res->entropy_bits, &res->side_bits, err)) != KV_OK) goto done;
    res->rate_bits = res->entropy_bits + res->side_bits;
    res->distortion = kv_hessian_loss(wz, res->wq, a, n, S, pool) / (double)an; /* dead inputs: 0 */
    res->bound = waterfill_bound(vv, n, res->entropy_bits);
    res->gap_bits = res->bound > 0 && res->distortion > 0 ? 0.5 * log2(res->distortion / res->bound) : 0;
done:
    free(S); free(L); free(diag); free(wz); free(dead); free(t); free(vv);
    free(s.Y); free(s.Q); free(s.z); free(s.g); free(s.zz); free(s.zy);
    if (st) kv_watersic_result_free(res);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* `kvant quantize --method watersic:bits=R[,...]`                                                  */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    kv_watersic_opts o;
    const char *ecw_dir;
    int decoded;         /* store=decoded: the GGUF holds Ŵ in the policy's f16/f32 instead of the container */
    const char *only;    /* only=TEXT: WaterSIC on the matrices whose name contains TEXT, the others rounded to
                          * nearest in their policy format (quick runs, tests) */
    double weights, rate_sum, gap_sum, side_sum;
    uint64_t ecw_bytes;
    int64_t layers;
} ws_state;

static kv_status ws_job(void *user, kv_quant_job *job, const double *h, int64_t ntok, kv_pool *pool, char *note,
                        size_t note_len, kv_error *err) {
    ws_state *s = user;
    if (s->only && !strstr(job->name, s->only)) return job->fmt.quantize(&job->fmt, job->w, job->dst, job->rows, job->cols,
                                                                         job->importance, err);
    if (s->decoded && job->fmt.type != KV_TYPE_F32 && job->fmt.type != KV_TYPE_F16)
        return kv_fail(err, KV_EINVAL, "watersic store=decoded writes Ŵ as f16 or f32 (--format f16), not %s",
                       job->fmt.name);
    kv_watersic_result r;
    kv_status st = kv_watersic_quantize(job->w, job->rows, job->cols, h, &s->o, &r, pool, err);
    if (st) return st;
    uint8_t *blob = NULL;
    size_t size = 0;
    st = kv_ecw_encode(r.z, job->rows, job->cols, r.col_step, r.row_scale, &blob, &size, err);
    if (!st && s->decoded) st = job->fmt.quantize(&job->fmt, r.wq, job->dst, job->rows, job->cols, NULL, err);
    if (!st && s->ecw_dir) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.kvec", s->ecw_dir, job->name);
        kv_outfile *f;
        if ((st = kv_outfile_open(path, &f, err)) == KV_OK) {
            if ((st = kv_outfile_write(f, blob, size, err)) == KV_OK) st = kv_outfile_commit(f, err);
            else kv_outfile_abort(f);
        }
    }
    if (!st) {
        double nw = (double)job->rows * (double)job->cols;
        s->weights += nw;
        s->rate_sum += r.rate_bits * nw;
        s->side_sum += r.side_bits * nw;
        s->gap_sum += r.gap_bits;
        s->layers++;
        s->ecw_bytes += size;
        snprintf(note, note_len,
                 "rate %.3f bits (codes %.3f + side %.3f), entropy-coded %zu bytes = %.3f bits/weight, "
                 "distortion %.4g, %.2f bits above the Gaussian bound, step %.4g, %d search steps",
                 r.rate_bits, r.entropy_bits, r.side_bits, size, size * 8.0 / nw, r.distortion, r.gap_bits, r.step,
                 r.search_iters);
        if (!s->decoded) { /* the container is the stored tensor; the calibration model gets exactly Ŵ */
            job->out_type = KV_TYPE_ECW;
            job->out_data = blob;
            job->out_bytes = size;
            blob = NULL;
        }
    }
    free(blob);
    kv_watersic_result_free(&r);
    return st;
}

kv_status kv_method_watersic(kv_quant_method_ctx *c, kv_error *err) {
    ws_state s;
    memset(&s, 0, sizeof s);
    kv_watersic_opts_default(&s.o);
    const kv_quant_method *m = kv_quant_method_find("watersic");
    kv_method_values local; /* the paths below point into the values */
    const kv_method_values *v = kv_method_ctx_values(c, m, &local, err);
    if (!v) return err ? err->status : KV_EINVAL;
    if (kv_mopt_given(m, v, "bits")) s.o.target_bits = kv_mopt_num(m, v, "bits");
    if (kv_mopt_given(m, v, "step")) s.o.step = kv_mopt_num(m, v, "step");
    if (kv_mopt_given(m, v, "damp")) s.o.percdamp = kv_mopt_num(m, v, "damp");
    if (kv_mopt_given(m, v, "no-rescale")) s.o.rescale = 0;
    if (kv_mopt_given(m, v, "only")) s.only = kv_mopt_text(m, v, "only");
    s.decoded = kv_mopt_num(m, v, "store") == 1; /* ecw|decoded */
    kv_calib_opts co = {0};
    if (kv_mopt_given(m, v, "save-hessians")) co.save_dir = kv_mopt_text(m, v, "save-hessians");
    if (kv_mopt_given(m, v, "load-hessians")) co.load_dir = kv_mopt_text(m, v, "load-hessians");
    if (kv_mopt_given(m, v, "ecw-dir")) {
        const char *ecw = kv_mopt_text(m, v, "ecw-dir");
        s.ecw_dir = ecw;
        if (mkdir(ecw, 0777) != 0 && errno != EEXIST) {
            kv_fail(err, KV_EIO, "cannot create directory: %s", strerror(errno));
            kv_error_context(err, ecw, -1, NULL);
            return KV_EIO;
        }
    }
    kv_status st = kv_calib_run(c, &co, ws_job, &s, NULL, err);
    if (!st && c->log && s.weights > 0) {
        char line[400];
        snprintf(line, sizeof line,
                 "watersic: %lld matrices, mean rate %.4f bits/weight (side %.4f), entropy-coded %.0f bytes = %.4f "
                 "bits/weight (%.2f%% from the rate), mean gap to the Gaussian bound %.3f bits",
                 (long long)s.layers, s.rate_sum / s.weights, s.side_sum / s.weights, (double)s.ecw_bytes,
                 s.ecw_bytes * 8.0 / s.weights, 100.0 * (s.ecw_bytes * 8.0 - s.rate_sum) / s.rate_sum,
                 s.gap_sum / (double)s.layers);
        c->log(c->log_user, line);
    }
    return st;
}
