/* safetensors.c — safetensors header validation (huggingface/safetensors README "Format" and
 * safetensors/src/tensor.rs `Metadata::validate`: offsets must tile the buffer with no holes or overlaps). */
#include "io/safetensors.h"
#include "core/core.h"
#include "io/json.h"
#include <stdio.h>

typedef struct st_dtype {
    const char *name;
    int64_t type;     /* kv_type, or -1 when kvant cannot hold the dtype */
    uint32_t bits;    /* bits per element */
} st_dtype;

static const st_dtype k_dtypes[] = {
    {"F32", KV_TYPE_F32, 32},  {"F16", KV_TYPE_F16, 16},   {"BF16", KV_TYPE_BF16, 16}, {"F64", KV_TYPE_F64, 64},
    {"I8", KV_TYPE_I8, 8},     {"I16", KV_TYPE_I16, 16},   {"I32", KV_TYPE_I32, 32},   {"I64", KV_TYPE_I64, 64},
    {"BOOL", -1, 8},           {"U8", -1, 8},              {"U16", -1, 16},            {"U32", -1, 32},
    {"U64", -1, 64},           {"F8_E5M2", -1, 8},         {"F8_E4M3", -1, 8},         {"F8_E8M0", -1, 8},
    {"F4", -1, 4},             {"F6_E2M3", -1, 6},         {"F6_E3M2", -1, 6},         {"C64", -1, 64},
};

const char *kv_safetensors_dtype_name(uint32_t type) {
    for (size_t i = 0; i < KV_ARRAY_LEN(k_dtypes); i++)
        if (k_dtypes[i].type == (int64_t)type) return k_dtypes[i].name;
    return NULL;
}

static kv_status fail_json(kv_error *err, kv_status st, const char *path, const kv_json *at, const char *tensor,
                           const char *fmt, const char *a) {
    kv_fail(err, st, fmt, a);
    kv_error_context(err, path, at ? (int64_t)at->offset : -1, tensor);
    return st;
}

static kv_status parse_entry(const kv_json *e, const char *path, kv_st_tensor *t, kv_error *err) {
    if (e->key_len >= sizeof t->name || memchr(e->key, 0, e->key_len))
        return fail_json(err, KV_EFORMAT, path, e, NULL, "tensor name too long or contains NUL: %.80s", e->key);
    memcpy(t->name, e->key, e->key_len + 1);
    if (e->type != KV_JSON_OBJECT)
        return fail_json(err, KV_EFORMAT, path, e, t->name, "tensor entry must be an object, found %s",
                         kv_json_type_name(e->type));
    const kv_json *dt = kv_json_get(e, "dtype"), *sh = kv_json_get(e, "shape"), *off = kv_json_get(e, "data_offsets");
    if (!dt || dt->type != KV_JSON_STRING)
        return fail_json(err, KV_EFORMAT, path, dt ? dt : e, t->name, "%s", "missing or non-string \"dtype\"");
    const st_dtype *d = NULL;
    for (size_t i = 0; i < KV_ARRAY_LEN(k_dtypes); i++)
        if (!strcmp(dt->u.str, k_dtypes[i].name)) d = &k_dtypes[i];
    if (!d) return fail_json(err, KV_EFORMAT, path, dt, t->name, "unknown safetensors dtype \"%.32s\"", dt->u.str);
    /* dtypes kvant does not compute with are kept as raw bytes (a stand-in integer type of the same width) for
     * the quantized-checkpoint readers, which know what they hold; everyone else refuses them */
    static const int64_t k_raw_type[] = {KV_TYPE_I8, KV_TYPE_I16, -1, KV_TYPE_I32, -1, -1, -1, KV_TYPE_I64};
    int64_t type = d->type;
    t->raw = 0;
    if (type < 0 && d->bits % 8 == 0 && d->bits <= 64) {
        type = k_raw_type[d->bits / 8 - 1];
        t->raw = 1;
    }
    if (type < 0)
        return fail_json(err, KV_EUNSUPPORTED, path, dt, t->name,
                         "dtype %s is not supported (kvant reads F32, F16, BF16, F64, I8-I64)", d->name);
    kv_strlcpy(t->dtype, d->name, sizeof t->dtype);
    t->type = (uint32_t)type;
    if (!sh || sh->type != KV_JSON_ARRAY)
        return fail_json(err, KV_EFORMAT, path, sh ? sh : e, t->name, "%s", "missing or non-array \"shape\"");
    if (sh->len > 4)
        return fail_json(err, KV_EUNSUPPORTED, path, sh, t->name, "%s", "more than 4 dimensions");
    t->n_dims = (int)sh->len;
    uint64_t nel = 1;
    for (int i = 0; i < 4; i++) t->shape[i] = 1;
    for (int i = 0; i < t->n_dims; i++) {
        const kv_json *x = &sh->u.items[i];
        if (x->type != KV_JSON_NUMBER || !x->is_int || x->ival < 0)
            return fail_json(err, KV_EFORMAT, path, x, t->name, "%s", "shape entries must be non-negative integers");
        t->shape[i] = x->ival;
        if (!kv_mul_u64(nel, (uint64_t)x->ival, &nel) || nel > (UINT64_MAX >> 4))
            return fail_json(err, KV_ERANGE, path, x, t->name, "%s", "shape product overflows");
    }
    if (!off || off->type != KV_JSON_ARRAY || off->len != 2)
        return fail_json(err, KV_EFORMAT, path, off ? off : e, t->name, "%s", "\"data_offsets\" must be [begin, end]");
    for (int i = 0; i < 2; i++) {
        const kv_json *x = &off->u.items[i];
        if (x->type != KV_JSON_NUMBER || !x->is_int || x->ival < 0)
            return fail_json(err, KV_EFORMAT, path, x, t->name, "%s", "data_offsets must be non-negative integers");
    }
    t->begin = (uint64_t)off->u.items[0].ival;
    t->end = (uint64_t)off->u.items[1].ival;
    if (t->end < t->begin) return fail_json(err, KV_EFORMAT, path, off, t->name, "%s", "data_offsets end < begin");
    uint64_t nbits = nel * d->bits;
    if (nbits % 8) return fail_json(err, KV_EFORMAT, path, sh, t->name, "%s", "shape is not a whole number of bytes");
    if (nbits / 8 != t->end - t->begin) {
        kv_fail(err, KV_EFORMAT, "byte count %llu of data_offsets does not match dtype %s x shape (%llu bytes)",
                (unsigned long long)(t->end - t->begin), d->name, (unsigned long long)(nbits / 8));
        kv_error_context(err, path, (int64_t)off->offset, t->name);
        return KV_EFORMAT;
    }
    return KV_OK;
}

static int cmp_by_begin(const void *a, const void *b) {
    const kv_st_tensor *x = *(const kv_st_tensor *const *)a, *y = *(const kv_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The buffer must be tiled exactly: sorted by begin, each tensor starts where the previous ended. */
static kv_status check_tiling(kv_st_header *h, uint64_t buf_size, const char *path, kv_error *err) {
    if (h->n_tensors == 0) {
        if (buf_size) {
            kv_fail(err, KV_EFORMAT, "%llu bytes of data after the header but no tensors", (unsigned long long)buf_size);
            kv_error_context(err, path, (int64_t)h->data_start, NULL);
            return KV_EFORMAT;
        }
        return KV_OK;
    }
    kv_st_tensor **v = kv_malloc((size_t)h->n_tensors * sizeof *v, err);
    if (!v) return KV_ENOMEM;
    for (int64_t i = 0; i < h->n_tensors; i++) v[i] = &h->tensors[i];
    qsort(v, (size_t)h->n_tensors, sizeof *v, cmp_by_begin);
    kv_status st = KV_OK;
    uint64_t expect = 0;
    for (int64_t i = 0; i < h->n_tensors && !st; i++) {
        const kv_st_tensor *t = v[i];
        if (t->end > buf_size) {
            kv_fail(err, KV_EFORMAT, "data_offsets [%llu, %llu) beyond the end of the data buffer (%llu bytes)",
                    (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)buf_size);
            st = KV_EFORMAT;
        } else if (t->begin < expect) {
            kv_fail(err, KV_EFORMAT, "data_offsets [%llu, %llu) overlap tensor '%s'", (unsigned long long)t->begin,
                    (unsigned long long)t->end, v[i - 1]->name);
            st = KV_EFORMAT;
        } else if (t->begin > expect) {
            kv_fail(err, KV_EFORMAT, "hole in the data buffer: bytes [%llu, %llu) belong to no tensor",
                    (unsigned long long)expect, (unsigned long long)t->begin);
            st = KV_EFORMAT;
        }
        if (st) kv_error_context(err, path, (int64_t)(h->data_start + t->begin), t->name);
        expect = t->end;
    }
    if (!st && expect != buf_size) {
        kv_fail(err, KV_EFORMAT, "data buffer has %llu bytes after the last tensor",
                (unsigned long long)(buf_size - expect));
        kv_error_context(err, path, (int64_t)(h->data_start + expect), NULL);
        st = KV_EFORMAT;
    }
    free(v);
    return st;
}

static kv_status check_metadata(const kv_json *m, const char *path, kv_error *err) {
    if (m->type != KV_JSON_OBJECT)
        return fail_json(err, KV_EFORMAT, path, m, NULL, "%s", "__metadata__ must be an object of strings");
    for (uint64_t i = 0; i < m->len; i++)
        if (m->u.items[i].type != KV_JSON_STRING)
            return fail_json(err, KV_EFORMAT, path, &m->u.items[i], NULL, "__metadata__ value of '%.80s' is not a string",
                             m->u.items[i].key);
    return KV_OK;
}

kv_status kv_safetensors_parse(const uint8_t *data, size_t size, const char *path, kv_st_header *out, kv_error *err) {
    memset(out, 0, sizeof *out);
    if (size < 8) {
        kv_fail(err, KV_EFORMAT, "file of %zu bytes is too small for a safetensors header (8-byte length)", size);
        kv_error_context(err, path, 0, NULL);
        return KV_EFORMAT;
    }
    uint64_t n = kv_rd_u64(data);
    if (n > KV_ST_MAX_HEADER) {
        kv_fail(err, KV_ERANGE, "header length %llu exceeds the 100 MB limit", (unsigned long long)n);
        kv_error_context(err, path, 0, NULL);
        return KV_ERANGE;
    }
    if (n > size - 8) {
        kv_fail(err, KV_EFORMAT, "header length %llu goes beyond the end of the file (%zu bytes)", (unsigned long long)n, size);
        kv_error_context(err, path, 0, NULL);
        return KV_EFORMAT;
    }
    if (n < 2 || data[8] != '{') {
        kv_fail(err, KV_EFORMAT, "header must be a JSON object starting with '{'");
        kv_error_context(err, path, 8, NULL);
        return KV_EFORMAT;
    }
    kv_json_opts opts = {.path = path, .base_offset = 8, .max_bytes = KV_ST_MAX_HEADER, .max_depth = 8};
    kv_json_doc *doc;
    kv_status st = kv_json_parse((const char *)data + 8, (size_t)n, &opts, &doc, err);
    if (st) return st;
    const kv_json *root = kv_json_root(doc);
    const kv_json *dup = kv_json_find_duplicate_key(root);
    if (dup) {
        st = fail_json(err, KV_EFORMAT, path, dup, NULL, "duplicate tensor name '%.100s' in header", dup->key);
        goto done;
    }
    out->data_start = 8 + n;
    out->tensors = kv_calloc(root->len ? root->len : 1, sizeof *out->tensors, err);
    if (!out->tensors) { st = KV_ENOMEM; goto done; }
    for (uint64_t i = 0; i < root->len; i++) {
        const kv_json *e = &root->u.items[i];
        if (!strcmp(e->key, "__metadata__")) {
            if ((st = check_metadata(e, path, err))) goto done;
            continue;
        }
        if ((st = parse_entry(e, path, &out->tensors[out->n_tensors], err))) goto done;
        out->n_tensors++;
    }
    st = check_tiling(out, size - out->data_start, path, err);
done:
    kv_json_free(doc);
    if (st) kv_st_header_free(out);
    return st;
}

void kv_st_header_free(kv_st_header *h) {
    if (!h) return;
    free(h->tensors);
    memset(h, 0, sizeof *h);
}
