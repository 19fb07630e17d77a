/* quantize_stream.c — the streaming pipeline (docs/quantize.md "Memory" and "Resume"): tensors produced one
 * at a time for the GGUF writer from the mapped source (round to nearest), and the calibrated methods run
 * block by block with their outputs spilled to disk and a checkpoint after every block. The bytes are those of
 * the in-memory pipeline (tests/test_stream.c compares both). GPTQ's sequential protocol (arXiv 2210.17323 §5)
 * is what allows one block resident at a time. */
#include "algos/pipeline.h"
#include "algos/linalg.h"
#include "model/wmodel.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

/* Streaming (docs/quantize.md "Memory"): the writer asks for each tensor's rows in file order; the first
 * request of a tensor quantizes it together with the next ones up to one per thread (in parallel, through the
 * same round-to-nearest jobs as the in-memory path, so the bytes are identical), reading their source values
 * just then; a tensor's bytes are freed once the writer has them. Peak memory: a few tensors, never the model. */


static int is_raw_copy(const kv_qtensor *x, int needs_calib) {
    const kv_wtensor *t = x->wt;
    const int coded = x->packed_nbytes > 0; /* --entropy-code: the packed rows before coding */
    return t->src && !t->modified && (coded ? x->packed_type : x->type) == t->src->type &&
           t->src->nbytes == (coded ? x->packed_nbytes : x->nbytes) && !(needs_calib && t->n_dims >= 2);
}

static kv_status pread_all(int fd, void *dst, uint64_t n, uint64_t off, const char *path, kv_error *err) {
    uint8_t *p = dst;
    while (n > 0) {
        ssize_t k = pread(fd, p, (size_t)KV_MIN(n, (uint64_t)1 << 30), (off_t)off);
        if (k <= 0) {
            kv_fail(err, KV_EIO, "read failed: %s", k < 0 ? strerror(errno) : "unexpected end of file");
            kv_error_context(err, path, (int64_t)off, NULL);
            return KV_EIO;
        }
        p += k;
        n -= (uint64_t)k;
        off += (uint64_t)k;
    }
    return KV_OK;
}

static kv_quant_job job_for(const kv_wtensor *t, const kv_qtensor *x, const kv_hparams *hp, const kv_imatrix *im,
                            void *dst) {
    kv_quant_job j = {0};
    j.name = t->name;
    j.layer = -1;
    int l;
    if (sscanf(t->name, "blk.%d.", &l) == 1) j.layer = l;
    else if (!strcmp(t->name, "output.weight")) j.layer = hp->n_layer;
    j.fmt = x->fmt;
    j.w = t->w;
    j.cols = kv_wtensor_row_len(t);
    j.rows = kv_wtensor_nelem(t) / j.cols;
    j.rht_block = t->rht_block;
    j.rht_seed = t->rht_seed;
    j.dst = dst;
    if (im && !kv_format_is_plain(&x->fmt)) {
        int64_t nval = 0;
        const float *v = kv_imatrix_find(im, t->name, &nval);
        if (v && nval == j.cols) j.importance = v;
    }
    return j;
}

/* --entropy-code while streaming: the tensor's packed rows (its quantized or stored bytes) are produced as
 * any other's, then coded into an ECW container; the size pass (kv_qstream_entropy_sizes) has recorded the
 * container's size for the header. */
static int is_coded(const kv_qtensor *x) { return x->packed_nbytes > 0; }

static kv_status code_packed(kv_qstream *s, int64_t i, kv_error *err) {
    kv_qtensor *x = &s->ot[i];
    const kv_wtensor *t = x->wt;
    uint8_t *blob = NULL;
    size_t size = 0;
    kv_status st = kv_ecw_encode_packed(&x->fmt, s->bytes[i], t->shape[0], t->shape[1], &blob, &size, err);
    if (st != KV_OK) {
        kv_error_context(err, NULL, -1, t->name);
        return st;
    }
    if (!x->nbytes) x->nbytes = size; /* the size pass */
    if (size != x->nbytes) {
        free(blob);
        kv_fail(err, KV_EINVAL, "internal: entropy-coded size changed between passes (%zu, then %llu bytes)", size,
                (unsigned long long)x->nbytes);
        kv_error_context(err, NULL, -1, t->name);
        return KV_EINVAL;
    }
    free(s->bytes[i]);
    s->bytes[i] = blob;
    return KV_OK;
}

/* Bytes of the tensors which[0..n) (n <= 64), in GGUF row order. */
static kv_status produce_list(kv_qstream *s, const int64_t *which, int64_t n, kv_error *err) {
    kv_quant_job jobs[64];
    int64_t idx[64], nj = 0;
    kv_status st = KV_OK;
    for (int64_t k = 0; k < n && st == KV_OK; k++) {
        const int64_t i = which[k];
        kv_qtensor *x = &s->ot[i];
        kv_wtensor *t = x->wt;
        const uint64_t nbytes = is_coded(x) ? x->packed_nbytes : x->nbytes;
        if (!(s->bytes[i] = kv_malloc(KV_MAX(nbytes, 1), err))) { st = KV_ENOMEM; break; }
        if (x->spilled) { /* produced by the calibrated method, block by block (packed, when coded now) */
            st = pread_all(s->spill_fd, s->bytes[i], nbytes, x->spill_off, s->spill_path, err);
            if (st == KV_OK && is_coded(x)) st = code_packed(s, i, err);
            continue;
        }
        if (is_raw_copy(x, s->needs_calib)) { /* kept exactly as stored */
            st = kv_tensor_copy_bytes(t->src, s->bytes[i], err);
            kv_model_drop_pages(s->mf, t->src);
            if (st == KV_OK && is_coded(x)) st = code_packed(s, i, err);
            continue;
        }
        if ((st = kv_wtensor_read(s->mf, t, err)) != KV_OK) break;
        if ((st = kv_rht_rotate_pending(t, err)) != KV_OK) {
            free(t->w);
            t->w = NULL;
            break;
        }
        idx[nj] = i;
        jobs[nj++] = job_for(t, x, s->hp, s->im, s->bytes[i]);
    }
    if (st == KV_OK && nj > 0) st = kv_method_rtn_jobs(s->mc, jobs, nj, err);
    for (int64_t k = 0; k < nj; k++) {
        kv_wtensor *t = s->ot[idx[k]].wt;
        free(t->w);
        t->w = NULL;
    }
    for (int64_t k = 0; k < nj && st == KV_OK; k++)
        if (is_coded(&s->ot[idx[k]])) st = code_packed(s, idx[k], err);
    for (int64_t k = 0; k < n && st == KV_OK; k++) { /* llama.cpp's rotary row order for q/k */
        const int64_t i = which[k];
        kv_qtensor *x = &s->ot[i];
        int heads = kv_qqk_heads(s->mf, s->hp, x->wt->name);
        if (heads <= 0 || x->type == KV_TYPE_ECW || is_coded(x)) continue; /* containers keep kvant's row order */
        uint8_t *perm = kv_malloc(x->nbytes, err);
        if (!perm) { st = KV_ENOMEM; break; }
        st = kv_permute_qk_to_gguf(s->bytes[i], perm, x->wt->shape[0], x->nbytes / (uint64_t)x->wt->shape[0], heads, err);
        if (st != KV_OK) kv_error_context(err, NULL, -1, x->wt->name);
        free(s->bytes[i]);
        s->bytes[i] = perm;
    }
    return st;
}

/* Bytes of tensors first .. first+batch-1 (those not produced yet). */
static kv_status stream_produce(kv_qstream *s, int64_t first, kv_error *err) {
    int64_t last = KV_MIN(s->n, first + s->batch), which[64], n = 0;
    for (int64_t i = first; i < last; i++)
        if (!s->bytes[i]) which[n++] = i;
    return produce_list(s, which, n, err);
}

kv_status kv_qstream_entropy_sizes(kv_qstream *s, kv_qtensor *ot, int64_t n, const kv_quantize_opts *o,
                                   kv_error *err) {
    uint64_t before = 0, after = 0;
    int64_t coded = 0, which[64], nw = 0;
    double weights = 0;
    for (int64_t i = 0; i < n; i++) { /* the in-memory pipeline's choice and refusal, checked before any work */
        int code;
        if (kv_qentropy_select(&ot[i], &code, err) != KV_OK) return KV_EUNSUPPORTED;
    }
    s->ot = ot;
    s->n = n;
    s->bytes = kv_calloc((size_t)KV_MAX(n, 1), sizeof *s->bytes, err);
    if (!s->bytes) return KV_ENOMEM;
    kv_status st = KV_OK;
    for (int64_t i = 0; i <= n && st == KV_OK; i++) {
        if (i < n) {
            kv_qtensor *x = &ot[i];
            int code = 0;
            if ((st = kv_qentropy_select(x, &code, err)) != KV_OK || !code) continue;
            x->packed_type = x->type;
            x->packed_nbytes = x->nbytes;
            x->nbytes = 0; /* known after this pass */
            which[nw++] = i;
        }
        if (nw == 0 || (i < n && nw < s->batch)) continue;
        if ((st = produce_list(s, which, nw, err)) != KV_OK) break;
        for (int64_t k = 0; k < nw; k++) {
            kv_qtensor *x = &ot[which[k]];
            free(s->bytes[which[k]]);
            s->bytes[which[k]] = NULL;
            x->type = KV_TYPE_ECW;
            x->row_bytes = 0;
            before += x->packed_nbytes;
            after += x->nbytes;
            if (s->prog) kv_progress_update(s->prog, which[k] + 1);
            coded++;
            weights += (double)x->wt->shape[0] * (double)x->wt->shape[1];
        }
        nw = 0;
    }
    kv_qstream_free(s);
    if (st == KV_OK && coded)
        kv_qnote(o, "entropy-code: %lld tensors, %llu bytes packed (%.4f bits/weight) -> %llu bytes entropy-coded (%.4f "
                 "bits/weight, %.2f%%)", (long long)coded, (unsigned long long)before, (double)before * 8.0 / weights,
                 (unsigned long long)after, (double)after * 8.0 / weights, 100.0 * (double)after / (double)before);
    return st;
}

static kv_status stream_rows(void *ctx, int64_t first_row, int64_t nrows, void *dst, kv_error *err) {
    struct kv_qstream_ref *r = ctx;
    kv_qstream *s = r->s;
    kv_qtensor *x = &s->ot[r->i];
    const int ecw = x->type == KV_TYPE_ECW; /* a container: "rows" of one byte */
    const size_t rb = ecw ? 1 : x->row_bytes;
    int64_t rows = ecw ? (int64_t)x->nbytes : kv_wtensor_nelem(x->wt) / kv_wtensor_row_len(x->wt);
    if (!s->bytes[r->i]) {
        kv_status st = stream_produce(s, r->i, err);
        if (st != KV_OK) return st;
    }
    memcpy(dst, s->bytes[r->i] + (size_t)first_row * rb, (size_t)nrows * rb);
    if (first_row + nrows == rows) {
        free(s->bytes[r->i]);
        s->bytes[r->i] = NULL;
        if (s->prog) kv_progress_update(s->prog, ++s->done);
    }
    return KV_OK;
}

void kv_qstream_free(kv_qstream *s) {
    for (int64_t i = 0; s->bytes && i < s->n; i++) free(s->bytes[i]);
    free(s->bytes);
    free(s->refs);
    s->bytes = NULL;
    s->refs = NULL;
}

kv_status kv_qstream_add(kv_qstream *ss, kv_gguf_writer *w, kv_qtensor *ot, int64_t n, kv_error *err) {
    ss->ot = ot;
    ss->n = n;
    ss->done = 0;
    ss->bytes = kv_calloc((size_t)KV_MAX(n, 1), sizeof *ss->bytes, err);
    ss->refs = kv_calloc((size_t)KV_MAX(n, 1), sizeof *ss->refs, err);
    if (!ss->bytes || !ss->refs) return KV_ENOMEM;
    kv_status st = KV_OK;
    for (int64_t i = 0; st == KV_OK && i < n; i++) {
        ss->refs[i].s = ss;
        ss->refs[i].i = i;
        const kv_wtensor *t = ot[i].wt;
        if (ot[i].type == KV_TYPE_ECW)
            st = kv_gguf_writer_add_tensor_ecw_fn(w, t->name, t->shape[0], kv_wtensor_nelem(t) / t->shape[0],
                                                  ot[i].nbytes, stream_rows, &ss->refs[i], err);
        else
            st = kv_gguf_writer_add_tensor_fn(w, t->name, t->n_dims, t->shape, kv_qstored_type(&ot[i]), stream_rows,
                                              &ss->refs[i], err);
    }
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* streamed calibration: block outputs spilled to OUT.kvpart, a checkpoint per block in OUT.kvresume */
/* ---------------------------------------------------------------------------------------------- */

/* Checkpoint file (docs/quantize.md "Resume"), little-endian: "KVRS", u32 version 1, u64 key, u32 blocks done,
 * u64 spill bytes, u64 n records, n × {u32 name length, name, u32 type, u64 offset, u64 bytes}, u64 n_hidden,
 * n_hidden fp32 (the last finished block's output activations). Written through a temp file + fsync + rename
 * after the spill file is fsync'ed, so a kill at any point leaves a consistent pair. */
#define KV_RESUME_MAGIC "KVRS"
#define KV_RESUME_VERSION 1u

struct kv_qspill {
    const kv_model_file *mf;
    kv_qtensor *ot;
    int64_t n_ot;
    kv_quant_job *jobs;
    int64_t *job_ot;          /* jobs[k] is the tensor ot[job_ot[k]] */
    int fd;
    uint64_t len;
    char spill_path[1100], state_path[1100];
    uint64_t key;
    int n_layer;
    int kill_after;           /* test hook */
    const kv_quantize_opts *o;
    double t0;
    int first_layer;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}
static uint64_t fnv_str(uint64_t h, const char *s) { return fnv(h, s ? s : "\x01", s ? strlen(s) + 1 : 1); }

/* What a checkpoint is valid for: the arguments that shape the output and the inputs' identity (every source
 * tensor's name, type, size and offset; the sizes and modification times of the source, calibration and
 * imatrix files). */
static uint64_t resume_key(const char *model_path, const kv_model_file *mf, const kv_quantize_opts *o,
                           const char *format, int64_t n_cids) {
    uint64_t h = 1469598103934665603ULL;
    h = fnv_str(h, "kvant resume 1");
    h = fnv_str(h, model_path);
    h = fnv_str(h, format);
    h = fnv_str(h, o->method);
    h = fnv_str(h, o->transforms);
    for (int i = 0; i < o->n_overrides; i++) h = fnv_str(h, o->overrides[i]);
    int64_t nums[] = {o->pure, o->calib_tokens, o->calib_ctx, o->no_imatrix, (int64_t)o->seed, o->entropy_code,
                      (int64_t)o->out_format, n_cids};
    h = fnv(h, nums, sizeof nums);
    h = fnv_str(h, o->calib_path);
    h = fnv_str(h, o->imatrix_path);
    h = fnv_str(h, o->act);
    h = fnv_str(h, kv_blas_core_name()); /* OPENBLAS_CORETYPE changes the last bits of the Hessian algebra */
    const char *files[] = {model_path, o->calib_path, o->imatrix_path};
    for (size_t i = 0; i < KV_ARRAY_LEN(files); i++) {
        struct stat sb;
        if (files[i] && stat(files[i], &sb) == 0) {
            int64_t id[3] = {(int64_t)sb.st_size, (int64_t)sb.st_mtim.tv_sec, (int64_t)sb.st_mtim.tv_nsec};
            h = fnv(h, id, sizeof id);
        }
    }
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        uint64_t v[3] = {t->type, t->nbytes, t->offset};
        h = fnv_str(h, t->src_name);
        h = fnv(h, v, sizeof v);
    }
    return h;
}

static kv_status spill_load_job(void *user, kv_quant_job *job, kv_error *err) {
    kv_qspill *cs = user;
    kv_qtensor *x = &cs->ot[cs->job_ot[job - cs->jobs]];
    kv_status st = kv_wtensor_read(cs->mf, x->wt, err);
    if (st == KV_OK) st = kv_rht_rotate_pending(x->wt, err); /* rht planned: rotated as the working copy would be */
    if (st != KV_OK) {
        free(x->wt->w);
        x->wt->w = NULL;
        return st;
    }
    job->w = x->wt->w;
    job->dst = kv_malloc(KV_MAX(x->nbytes, 1), err);
    return job->dst ? KV_OK : KV_ENOMEM;
}

static kv_status write_full(int fd, const void *p, uint64_t n, uint64_t off, const char *path, kv_error *err) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = pwrite(fd, b, (size_t)KV_MIN(n, (uint64_t)1 << 30), (off_t)off);
        if (k <= 0) {
            kv_fail(err, KV_EIO, "write failed: %s", k < 0 ? strerror(errno) : "no space");
            kv_error_context(err, path, (int64_t)off, NULL);
            return KV_EIO;
        }
        b += k;
        n -= (uint64_t)k;
        off += (uint64_t)k;
    }
    return KV_OK;
}

static kv_status write_checkpoint(kv_qspill *cs, int blocks_done, const float *hidden, int64_t n_hidden,
                                  kv_error *err) {
    if (fsync(cs->fd) != 0) {
        kv_fail(err, KV_EIO, "fsync failed: %s", strerror(errno));
        kv_error_context(err, cs->spill_path, -1, NULL);
        return KV_EIO;
    }
    kv_outfile *f = NULL;
    kv_status st = kv_outfile_open(cs->state_path, &f, err);
    if (st != KV_OK) return st;
    uint8_t hdr[4 + 4 + 8 + 4 + 8 + 8];
    uint64_t nrec = 0;
    for (int64_t i = 0; i < cs->n_ot; i++) nrec += cs->ot[i].spilled != 0;
    memcpy(hdr, KV_RESUME_MAGIC, 4);
    kv_wr_u32(hdr + 4, KV_RESUME_VERSION);
    kv_wr_u64(hdr + 8, cs->key);
    kv_wr_u32(hdr + 16, (uint32_t)blocks_done);
    kv_wr_u64(hdr + 20, cs->len);
    kv_wr_u64(hdr + 28, nrec);
    st = kv_outfile_write(f, hdr, sizeof hdr, err);
    for (int64_t i = 0; i < cs->n_ot && st == KV_OK; i++) {
        const kv_qtensor *x = &cs->ot[i];
        if (!x->spilled) continue;
        uint8_t rec[4 + 8 + 8], nl[4];
        kv_wr_u32(nl, (uint32_t)strlen(x->wt->name));
        kv_wr_u32(rec, x->type);
        kv_wr_u64(rec + 4, x->spill_off);
        kv_wr_u64(rec + 12, x->nbytes);
        st = kv_outfile_write(f, nl, 4, err);
        if (st == KV_OK) st = kv_outfile_write(f, x->wt->name, strlen(x->wt->name), err);
        if (st == KV_OK) st = kv_outfile_write(f, rec, sizeof rec, err);
    }
    uint8_t nh[8];
    kv_wr_u64(nh, (uint64_t)n_hidden);
    if (st == KV_OK) st = kv_outfile_write(f, nh, 8, err);
    if (st == KV_OK) st = kv_outfile_write(f, hidden, sizeof(float) * (size_t)n_hidden, err);
    if (st != KV_OK) {
        kv_outfile_abort(f);
        return st;
    }
    return kv_outfile_commit(f, err);
}

static kv_status spill_block_done(void *user, int layer, kv_quant_job *const *jobs, int nj, const float *hidden,
                                  int64_t n_hidden, kv_error *err) {
    kv_qspill *cs = user;
    kv_status st = KV_OK;
    for (int j = 0; j < nj; j++) {
        kv_quant_job *job = jobs[j];
        kv_qtensor *x = &cs->ot[cs->job_ot[job - cs->jobs]];
        if (st == KV_OK) {
            const int ecw = job->out_data && job->out_type == KV_TYPE_ECW;
            const void *data = ecw ? job->out_data : job->dst;
            uint64_t n = ecw ? job->out_bytes : x->nbytes;
            st = write_full(cs->fd, data, n, cs->len, cs->spill_path, err);
            if (st == KV_OK) {
                x->spilled = 1;
                x->spill_off = cs->len;
                cs->len += n;
                if (ecw) {
                    x->type = KV_TYPE_ECW;
                    x->nbytes = n;
                    x->row_bytes = 0;
                }
            }
        }
        free(job->out_data);
        free(job->dst);
        free(x->wt->w);
        job->out_data = job->dst = NULL;
        job->w = x->wt->w = NULL;
    }
    if (st == KV_OK) st = write_checkpoint(cs, layer + 1, hidden, n_hidden, err);
    if (st == KV_OK && !cs->o->quiet && cs->o->log) {
        double el = kv_now_seconds() - cs->t0;
        int done = layer + 1 - cs->first_layer, left = cs->n_layer - layer - 1;
        char line[200];
        snprintf(line, sizeof line, "block %d/%d done: %.1f s elapsed, ETA %.1f s", layer + 1, cs->n_layer, el,
                 done > 0 ? el / done * left : 0.0);
        cs->o->log(cs->o->log_user, line);
    }
    if (st == KV_OK && cs->kill_after > 0 && layer + 1 == cs->kill_after) raise(SIGKILL); /* test hook: kill -9 */
    return st;
}

static void spill_weights_done(void *user, kv_quant_job *job) {
    kv_qspill *cs = user;
    kv_qtensor *x = &cs->ot[cs->job_ot[job - cs->jobs]];
    free(x->wt->w);
    job->w = x->wt->w = NULL;
}

/* --resume: the checkpoint's records go back into ot, its activations into *hidden. */
static kv_status read_checkpoint(kv_qspill *cs, float **hidden, int64_t *n_hidden, kv_error *err) {
    kv_mapped m;
    kv_status st = kv_map_file(cs->state_path, &m, err);
    if (st != KV_OK) return st;
    const uint8_t *p = m.data, *end = m.data + m.size;
    st = KV_EFORMAT;
    if (m.size < 36 || memcmp(p, KV_RESUME_MAGIC, 4) || kv_rd_u32(p + 4) != KV_RESUME_VERSION) {
        kv_fail(err, KV_EFORMAT, "not a kvant checkpoint");
        goto out;
    }
    if (kv_rd_u64(p + 8) != cs->key) {
        kv_fail(err, KV_EINVAL, "the checkpoint was made with other arguments or inputs: rerun without --resume "
                "(or with the arguments of the interrupted run)");
        st = KV_EINVAL;
        goto out;
    }
    cs->first_layer = (int)kv_rd_u32(p + 16);
    cs->len = kv_rd_u64(p + 20);
    uint64_t nrec = kv_rd_u64(p + 28);
    p += 36;
    for (uint64_t r = 0; r < nrec; r++) {
        if (end - p < 4) goto bad;
        uint32_t nl = kv_rd_u32(p);
        if ((uint64_t)(end - p) < 4ull + nl + 20) goto bad;
        kv_qtensor *x = NULL;
        for (int64_t i = 0; i < cs->n_ot && !x; i++)
            if (strlen(cs->ot[i].wt->name) == nl && !memcmp(cs->ot[i].wt->name, p + 4, nl)) x = &cs->ot[i];
        p += 4 + nl;
        if (!x) goto bad;
        x->spilled = 1;
        uint32_t type = kv_rd_u32(p);
        x->spill_off = kv_rd_u64(p + 4);
        uint64_t nb = kv_rd_u64(p + 12);
        p += 20;
        if (type == KV_TYPE_ECW) {
            x->type = KV_TYPE_ECW;
            x->row_bytes = 0;
            x->nbytes = nb;
        } else if (type != x->type || nb != x->nbytes) goto bad;
        if (x->spill_off + nb > cs->len) goto bad;
    }
    if (end - p < 8) goto bad;
    *n_hidden = (int64_t)kv_rd_u64(p);
    p += 8;
    if ((uint64_t)(end - p) != (uint64_t)*n_hidden * sizeof(float) || cs->first_layer > cs->n_layer) goto bad;
    *hidden = kv_malloc(sizeof(float) * (size_t)KV_MAX(*n_hidden, 1), err);
    if (!*hidden) {
        st = KV_ENOMEM;
        goto out;
    }
    memcpy(*hidden, p, sizeof(float) * (size_t)*n_hidden);
    st = KV_OK;
    goto out;
bad:
    kv_fail(err, KV_EFORMAT, "malformed checkpoint");
    kv_error_context(err, NULL, p - m.data, NULL);
out:
    if (st != KV_OK) kv_error_context(err, cs->state_path, -1, NULL);
    kv_unmap_file(&m);
    return st;
}

/* The calibrated method on the decoder linears and the head, block by block from the source (kv_calib_run's
 * streaming hooks); other tensors are left to the streaming writer. */
kv_status kv_qstream_calibrate(const char *model_path, const kv_model_file *mf, kv_wmodel *wm, kv_qtensor *ot,
                               const kv_quant_method *meth, kv_quant_method_ctx *mc, const kv_imatrix *im,
                               const kv_quantize_opts *o, const char *format, const char *out_path,
                               kv_progress *prog, kv_qspill **out, kv_error *err) {
    kv_qspill *cs = kv_calloc(1, sizeof *cs, err);
    *out = cs;
    if (!cs) return KV_ENOMEM;
    cs->fd = -1;
    cs->mf = mf;
    cs->ot = ot;
    cs->n_ot = wm->n;
    cs->n_layer = wm->hp.n_layer;
    cs->o = o;
    cs->kill_after = o->test_kill_after_block;
    cs->t0 = kv_now_seconds();
    cs->key = resume_key(model_path, mf, o, format, mc->n_calib_ids);
    snprintf(cs->spill_path, sizeof cs->spill_path, "%s.kvpart", out_path);
    snprintf(cs->state_path, sizeof cs->state_path, "%s.kvresume", out_path);
    cs->jobs = kv_calloc((size_t)KV_MAX(wm->n, 1), sizeof *cs->jobs, err);
    cs->job_ot = kv_calloc((size_t)KV_MAX(wm->n, 1), sizeof *cs->job_ot, err);
    if (!cs->jobs || !cs->job_ot) return KV_ENOMEM;
    int64_t nj = 0;
    for (int64_t i = 0; i < wm->n; i++) {
        int layer;
        kv_linear_id which;
        if (ot[i].wt->n_dims != 2 || kv_model_linear_by_name(mc->model, ot[i].wt->name, &layer, &which) != 0)
            continue;
        /* the head goes with the last block (kv_calib_run); an untied embedding is left to the writer */
        const int head = layer == wm->hp.n_layer || (layer < 0 && !kv_wmodel_find(wm, "output.weight"));
        if ((layer < 0 || layer >= wm->hp.n_layer) && !head) continue;
        cs->job_ot[nj] = i;
        cs->jobs[nj++] = job_for(ot[i].wt, &ot[i], &wm->hp, im, NULL);
    }
    float *hidden = NULL;
    int64_t n_hidden = 0;
    kv_status st = KV_OK;
    struct stat sb;
    if (o->resume && stat(cs->state_path, &sb) == 0) {
        st = read_checkpoint(cs, &hidden, &n_hidden, err);
        if (st == KV_OK)
            kv_qnote(o, "resume: %d of %d blocks done in %s", cs->first_layer, cs->n_layer, cs->state_path);
    } else if (o->resume) {
        kv_qnote(o, "resume: no checkpoint %s: starting from the first block", cs->state_path);
    }
    if (st == KV_OK) {
        cs->fd = open(cs->spill_path, O_RDWR | O_CREAT | (cs->first_layer ? 0 : O_TRUNC), 0644);
        if (cs->fd < 0 || (cs->first_layer && ftruncate(cs->fd, (off_t)cs->len) != 0)) {
            st = kv_fail(err, KV_EIO, "cannot open the spill file: %s", strerror(errno));
            kv_error_context(err, cs->spill_path, -1, NULL);
        }
    }
    if (st == KV_OK && cs->first_layer > 0 && n_hidden != mc->n_calib_ids / mc->calib_ctx * mc->calib_ctx * wm->hp.n_embd)
        st = kv_fail(err, KV_EFORMAT, "checkpoint holds %lld activations, this run needs %lld", (long long)n_hidden,
                     (long long)(mc->n_calib_ids / mc->calib_ctx * mc->calib_ctx * wm->hp.n_embd));
    kv_quant_stream hooks = {spill_load_job, spill_block_done, spill_weights_done, cs->first_layer, hidden, cs};
    if (st == KV_OK && cs->first_layer < cs->n_layer) {
        mc->jobs = cs->jobs;
        mc->n_jobs = nj;
        mc->stream = &hooks;
        mc->progress = prog;
        st = meth->run(mc, err);
        mc->stream = NULL;
    }
    free(hidden);
    return st;
}

void kv_qspill_close(kv_qspill *cs, int success) {
    if (!cs) return;
    if (cs->fd >= 0) close(cs->fd);
    if (success && cs->spill_path[0]) { /* a checkpoint is kept after a failure, for --resume */
        unlink(cs->spill_path);
        unlink(cs->state_path);
    }
    free(cs->jobs);
    free(cs->job_ot);
    free(cs);
}

int kv_qspill_fd(const kv_qspill *cs) { return cs ? cs->fd : -1; }
const char *kv_qspill_path(const kv_qspill *cs) { return cs ? cs->spill_path : ""; }
const char *kv_qspill_state_path(const kv_qspill *cs) { return cs ? cs->state_path : ""; }
