/* llama2c.c — llama2.c checkpoints (karpathy/llama2.c run.c: `Config`, `read_checkpoint`,
 * `memory_map_weights`): 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len; a negative vocab_size means an unshared classifier) then fp32 weights, each kind stacked over layers.
 * After rms_final_weight come two legacy RoPE tables (freq_cis_real, freq_cis_imag: seq_len*head_size/2 floats
 * each) that run.c skips, then wcls when unshared. llama2.c applies RoPE to adjacent pairs, so wq/wk rows are
 * un-permuted into Hugging Face order as they are read (kv_tensor.qk_heads), never copied. */
#include "io/model_file.h"
#include <stdio.h>

#define KV_L2C_HEADER 28

typedef struct l2c_part {
    const char *src;       /* llama2.c field name */
    const char *canonical; /* "%d" for the layer */
    int per_layer;
    int64_t rows, cols;    /* shape of one layer's matrix (cols 0: a vector) */
    int unpermute_heads;   /* number of heads for q/k rows, 0 otherwise */
} l2c_part;

static kv_status header_fail(kv_error *err, const char *path, int64_t off, const char *fmt, long long v) {
    kv_fail(err, KV_EFORMAT, fmt, v);
    kv_error_context(err, path, off, NULL);
    return KV_EFORMAT;
}

kv_status kv_llama2c_open_file(kv_model_file *mf, const char *path, kv_error *err) {
    int idx;
    kv_status st = kv_mf_add_map(mf, path, &idx, err);
    if (st) return st;
    const kv_mapped *m = &mf->maps[idx];
    if (m->size < KV_L2C_HEADER)
        return header_fail(err, path, 0, "file of %lld bytes is too small for a llama2.c header (28 bytes)", (long long)m->size);
    if (kv_rd_u32(m->data) == 0x616b3432u) { /* "ak42": the versioned export of llama2.c's export.py */
        kv_fail(err, KV_EUNSUPPORTED, "llama2.c versioned export (magic ak42) is not supported; use the legacy format");
        kv_error_context(err, path, 0, NULL);
        return KV_EUNSUPPORTED;
    }
    int32_t h[7];
    static const char *const names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        h[i] = (int32_t)kv_rd_u32(m->data + 4 * i);
        int32_t v = i == 5 && h[i] < 0 && h[i] != INT32_MIN ? -h[i] : h[i];
        if (v <= 0 || v > (1 << 24)) {
            kv_fail(err, KV_EFORMAT, "not a recognized model file: llama2.c header field %s = %d is out of range", names[i], h[i]);
            kv_error_context(err, path, 4 * i, NULL);
            return KV_EFORMAT;
        }
    }
    int64_t dim = h[0], hidden = h[1], n_layer = h[2], n_head = h[3], n_head_kv = h[4], seq = h[6];
    int shared = h[5] > 0;
    int64_t vocab = shared ? h[5] : -(int64_t)h[5];
    if (dim % n_head) return header_fail(err, path, 12, "n_heads %lld does not divide dim", (long long)n_head);
    if (n_head % n_head_kv) return header_fail(err, path, 16, "n_kv_heads %lld does not divide n_heads", (long long)n_head_kv);
    int64_t hs = dim / n_head;
    if (hs % 2) return header_fail(err, path, 12, "head size %lld must be even for RoPE", (long long)hs);
    int64_t kv_dim = hs * n_head_kv;

    const l2c_part parts[] = {
        {"token_embedding_table", "token_embd.weight", 0, vocab, dim, 0},
        {"rms_att_weight", "blk.%d.attn_norm.weight", 1, dim, 0, 0},
        {"wq", "blk.%d.attn_q.weight", 1, dim, dim, (int)n_head},
        {"wk", "blk.%d.attn_k.weight", 1, kv_dim, dim, (int)n_head_kv},
        {"wv", "blk.%d.attn_v.weight", 1, kv_dim, dim, 0},
        {"wo", "blk.%d.attn_output.weight", 1, dim, dim, 0},
        {"rms_ffn_weight", "blk.%d.ffn_norm.weight", 1, dim, 0, 0},
        {"w1", "blk.%d.ffn_gate.weight", 1, hidden, dim, 0},
        {"w2", "blk.%d.ffn_down.weight", 1, dim, hidden, 0},
        {"w3", "blk.%d.ffn_up.weight", 1, hidden, dim, 0},
        {"rms_final_weight", "output_norm.weight", 0, dim, 0, 0},
        {"freq_cis_real", NULL, 0, seq * hs / 2, 0, 0},
        {"freq_cis_imag", NULL, 0, seq * hs / 2, 0, 0},
        {"wcls", "output.weight", 0, vocab, dim, 0},
    };
    int n_parts = shared ? (int)KV_ARRAY_LEN(parts) - 1 : (int)KV_ARRAY_LEN(parts);
    /* each size is < 2^24, so one matrix is < 2^50 bytes; layer counts and the running total are checked */
    uint64_t pos = KV_L2C_HEADER;
    for (int p = 0; p < n_parts; p++) {
        const l2c_part *pt = &parts[p];
        uint64_t per = (uint64_t)pt->rows * (uint64_t)(pt->cols ? pt->cols : 1) * 4;
        int count = pt->per_layer ? (int)n_layer : 1;
        uint64_t all, end;
        if (!kv_mul_u64(per, (uint64_t)count, &all) || !kv_add_u64(pos, all, &end) || end > m->size) {
            kv_fail(err, KV_EFORMAT, "file too small for the header's sizes: %s needs more bytes than the file's %zu",
                    pt->src, m->size);
            kv_error_context(err, path, (int64_t)pos, NULL);
            return KV_EFORMAT;
        }
        for (int l = 0; l < count && pt->canonical; l++) {
            kv_tensor *t = kv_mf_add_tensor(mf, err);
            if (!t) return KV_ENOMEM;
            snprintf(t->name, sizeof t->name, pt->canonical, l);
            if (pt->per_layer) snprintf(t->src_name, sizeof t->src_name, "%s[%d]", pt->src, l);
            else kv_strlcpy(t->src_name, pt->src, sizeof t->src_name);
            t->n_dims = pt->cols ? 2 : 1;
            t->shape[0] = pt->rows;
            t->shape[1] = pt->cols ? pt->cols : 1;
            t->shape[2] = t->shape[3] = 1;
            t->type = KV_TYPE_F32;
            t->offset = pos + per * (uint64_t)l;
            t->nbytes = per;
            t->file_index = idx;
            t->data = m->data + t->offset;
            /* read through the row accessors, un-permuted per row: no fp32 copy of every wq/wk at open */
            t->qk_heads = pt->unpermute_heads;
        }
        pos += per * (uint64_t)count;
    }
    if (pos != m->size) {
        kv_fail(err, KV_EFORMAT, "%llu trailing bytes after the weights the header describes", (unsigned long long)(m->size - pos));
        kv_error_context(err, path, (int64_t)pos, NULL);
        return KV_EFORMAT;
    }
    kv_hparams *hp = &mf->hp;
    kv_strlcpy(hp->arch, "llama", sizeof hp->arch);
    hp->n_vocab = (int32_t)vocab;
    hp->n_embd = (int32_t)dim;
    hp->n_layer = (int32_t)n_layer;
    hp->n_head = (int32_t)n_head;
    hp->n_head_kv = (int32_t)n_head_kv;
    hp->head_dim = (int32_t)hs;
    hp->n_ff = (int32_t)hidden;
    hp->n_ctx_train = (int32_t)seq;
    hp->rope_theta = 10000.0f; /* run.c: powf(10000.0f, head_dim / (float)head_size) */
    hp->norm_eps = 1e-5f;      /* run.c rmsnorm */
    hp->tie_embeddings = shared;
    hp->bos_id = 1;            /* llama2.c's sentencepiece convention: run.c encode() uses 1 and 2 */
    hp->eos_id = 2;
    mf->has_hparams = 1;
    return kv_mf_check_shapes(mf, err);
}
