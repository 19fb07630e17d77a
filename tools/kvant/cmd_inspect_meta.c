/* cmd_inspect_meta.c — `kvant inspect --meta`: a file's own metadata as stored, beside what kvant derived from
 * it: a GGUF's key/value pairs (arrays summarised as element type, length and first items), a safetensors
 * file's __metadata__, a Hugging Face directory's config.json quantization_config and its first shard's
 * __metadata__; then the transforms recorded (kvant.transform.list and every weight rotated online). */
#include "cli.h"
#include "inspect_meta.h"
#include "io/json.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FIRST_ITEMS 5       /* array items shown */
#define TEXT_STR_MAX 96     /* string bytes shown in the text output (JSON gets them whole, arrays excepted) */

/* ---- GGUF values ----------------------------------------------------------------------------- */

static void print_str_text(const char *s, uint64_t n) {
    putchar('"');
    for (uint64_t i = 0; i < n && i < TEXT_STR_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
    if (n > TEXT_STR_MAX) printf("... (%" PRIu64 " bytes)", n);
}

/* A scalar or string value (not an array) as text. */
static void print_scalar_text(const kv_gguf_value *v) {
    int64_t i;
    uint64_t u;
    double d;
    switch (v->type) {
    case KV_GGUF_STRING: print_str_text(v->data, v->n); break;
    case KV_GGUF_BOOL: printf("%s", *(const uint8_t *)v->data ? "true" : "false"); break;
    case KV_GGUF_F32: case KV_GGUF_F64:
        if (kv_gguf_value_f64(v, &d, NULL) == KV_OK) printf("%.9g", d);
        break;
    case KV_GGUF_U64: case KV_GGUF_U32: case KV_GGUF_U16: case KV_GGUF_U8:
        if (kv_gguf_value_u64(v, &u, NULL) == KV_OK) printf("%" PRIu64, u);
        break;
    default:
        if (kv_gguf_value_i64(v, &i, NULL) == KV_OK) printf("%" PRId64, i);
        break;
    }
}

static void scalar_json(kv_jw *w, const kv_gguf_value *v) {
    int64_t i;
    uint64_t u;
    double d;
    switch (v->type) {
    case KV_GGUF_STRING: {
        char *s = malloc(v->n + 1);
        if (!s) { kv_jw_null(w); return; }
        memcpy(s, v->data, v->n);
        s[v->n] = 0;
        kv_jw_str(w, s);
        free(s);
        break;
    }
    case KV_GGUF_BOOL: kv_jw_bool(w, *(const uint8_t *)v->data != 0); break;
    case KV_GGUF_F32: case KV_GGUF_F64:
        if (kv_gguf_value_f64(v, &d, NULL) == KV_OK) kv_jw_num(w, d);
        else kv_jw_null(w);
        break;
    case KV_GGUF_U64:
        /* beyond int64: as a string, exactly */
        if (kv_gguf_value_u64(v, &u, NULL) == KV_OK && u > (uint64_t)INT64_MAX) {
            char b[32];
            snprintf(b, sizeof b, "%" PRIu64, u);
            kv_jw_str(w, b);
            break;
        }
        /* fall through */
    default:
        if (kv_gguf_value_i64(v, &i, NULL) == KV_OK) kv_jw_int(w, i);
        else kv_jw_null(w);
        break;
    }
}

static void gguf_meta_text(const kv_gguf *g) {
    int64_t n = kv_gguf_n_kv(g);
    printf("metadata:      %lld keys (GGUF v%u)\n", (long long)n, kv_gguf_version(g));
    int width = 4;
    for (int64_t i = 0; i < n; i++) {
        int l = (int)strlen(kv_gguf_kv_key(g, i));
        if (l > width && l <= 60) width = l;
    }
    for (int64_t i = 0; i < n; i++) {
        const kv_gguf_value *v = kv_gguf_kv_value(g, i);
        printf("  %-*s  ", width, kv_gguf_kv_key(g, i));
        if (v->type != KV_GGUF_ARRAY) {
            printf("%-7s ", kv_gguf_vtype_name(v->type));
            print_scalar_text(v);
            printf("\n");
            continue;
        }
        char ty[32];
        snprintf(ty, sizeof ty, "[%s]", kv_gguf_vtype_name(v->elem_type));
        printf("%-7s ", ty);
        printf("%" PRIu64 " items%s", v->n, v->n ? ": " : "");
        for (uint64_t k = 0; k < v->n && k < FIRST_ITEMS; k++) {
            kv_gguf_value e;
            if (kv_gguf_arr_get(v, k, &e, NULL) != KV_OK) break;
            if (k) printf(", ");
            if (e.type == KV_GGUF_ARRAY) printf("[%" PRIu64 " %s]", e.n, kv_gguf_vtype_name(e.elem_type));
            else print_scalar_text(&e);
        }
        printf("%s\n", v->n > FIRST_ITEMS ? ", ..." : "");
    }
}

static void gguf_meta_json(kv_jw *w, const kv_gguf *g) {
    kv_jw_arr_begin(w);
    for (int64_t i = 0; i < kv_gguf_n_kv(g); i++) {
        const kv_gguf_value *v = kv_gguf_kv_value(g, i);
        kv_jw_obj_begin(w);
        kv_jw_key(w, "key"), kv_jw_str(w, kv_gguf_kv_key(g, i));
        kv_jw_key(w, "type"), kv_jw_str(w, kv_gguf_vtype_name(v->type));
        if (v->type != KV_GGUF_ARRAY) {
            kv_jw_key(w, "value"), scalar_json(w, v);
        } else {
            kv_jw_key(w, "elem_type"), kv_jw_str(w, kv_gguf_vtype_name(v->elem_type));
            kv_jw_key(w, "n"), kv_jw_int(w, (int64_t)v->n);
            kv_jw_key(w, "first");
            kv_jw_arr_begin(w);
            for (uint64_t k = 0; k < v->n && k < FIRST_ITEMS; k++) {
                kv_gguf_value e;
                if (kv_gguf_arr_get(v, k, &e, NULL) != KV_OK) break;
                if (e.type == KV_GGUF_ARRAY) kv_jw_null(w); /* nested arrays: not expanded */
                else scalar_json(w, &e);
            }
            kv_jw_arr_end(w);
        }
        kv_jw_obj_end(w);
    }
    kv_jw_arr_end(w);
}

/* ---- JSON documents (safetensors __metadata__, config.json) ----------------------------------- */

/* The JSON header of a safetensors file (its 8-byte length, then the text). */
static kv_status st_header(const char *path, kv_json_doc **doc, kv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return kv_fail(err, KV_EIO, "cannot open %s", path);
    uint8_t b8[8];
    kv_status st = KV_OK;
    uint64_t n = 0;
    if (fread(b8, 1, 8, f) != 8) st = kv_fail(err, KV_EFORMAT, "%s: shorter than a safetensors header", path);
    for (int i = 7; st == KV_OK && i >= 0; i--) n = n << 8 | b8[i];
    if (st == KV_OK && (n < 2 || n > ((uint64_t)100 << 20)))
        st = kv_fail(err, KV_EFORMAT, "%s: header length %" PRIu64 " out of range", path, n);
    char *text = st == KV_OK ? malloc((size_t)n) : NULL;
    if (st == KV_OK && !text) st = kv_fail(err, KV_ENOMEM, "out of memory");
    if (st == KV_OK && fread(text, 1, (size_t)n, f) != (size_t)n)
        st = kv_fail(err, KV_EFORMAT, "%s: header truncated", path);
    fclose(f);
    kv_json_opts o = {path, 8, 0, 0};
    if (st == KV_OK) st = kv_json_parse(text, (size_t)n, &o, doc, err);
    free(text);
    return st;
}

/* The first safetensors file of an HF directory: model.safetensors, else the index's first shard. */
static int first_shard(const char *dir, char *out, size_t n) {
    struct stat sb;
    snprintf(out, n, "%s/model.safetensors", dir);
    if (stat(out, &sb) == 0) return 1;
    char idx[1200];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    kv_json_doc *doc = NULL;
    kv_error err;
    kv_error_clear(&err);
    int ok = 0;
    if (kv_json_parse_file(idx, 0, &doc, &err) == KV_OK) {
        const kv_json *wm = kv_json_get(kv_json_root(doc), "weight_map");
        if (wm && wm->type == KV_JSON_OBJECT && wm->len && wm->u.items[0].type == KV_JSON_STRING) {
            snprintf(out, n, "%s/%s", dir, wm->u.items[0].u.str);
            ok = 1;
        }
    }
    kv_json_free(doc);
    return ok;
}

/* ---- transforms recorded --------------------------------------------------------------------- */

typedef struct rotation {
    char tensor[160];
    int64_t block;
    uint64_t seed;
} rotation;

struct kv_inspect_meta;
typedef struct meta_info {
    kv_gguf *g;               /* GGUF: the container */
    kv_json_doc *st;          /* safetensors file or first shard: its header */
    kv_json_doc *cfg;         /* HF directory: config.json */
    char st_path[1200];
    const char *transform_list;
    rotation *rot;
    int64_t n_rot;
} meta_info;

static void add_rotation(meta_info *m, const char *tensor, size_t len, int64_t block, uint64_t seed) {
    rotation *r = realloc(m->rot, (size_t)(m->n_rot + 1) * sizeof *r);
    if (!r) return;
    m->rot = r;
    r += m->n_rot++;
    if (len >= sizeof r->tensor) len = sizeof r->tensor - 1;
    memcpy(r->tensor, tensor, len);
    r->tensor[len] = 0;
    r->block = block;
    r->seed = seed;
}

static int ends_with(const char *s, const char *suffix, size_t *stem) {
    size_t a = strlen(s), b = strlen(suffix);
    if (a < b || strcmp(s + a - b, suffix)) return 0;
    *stem = a - b;
    return 1;
}

static void find_rotations(meta_info *m) {
    static const char pre[] = "kvant.transform.";
    size_t stem;
    if (m->g) {
        const kv_gguf_value *l = kv_gguf_find(m->g, "kvant.transform.list");
        if (l && l->type == KV_GGUF_STRING) kv_gguf_get_str(m->g, "kvant.transform.list", &m->transform_list, NULL);
        for (int64_t i = 0; i < kv_gguf_n_kv(m->g); i++) {
            const char *k = kv_gguf_kv_key(m->g, i);
            if (strncmp(k, pre, sizeof pre - 1) || !ends_with(k, ".rht_block", &stem) || stem <= sizeof pre - 1) continue;
            int64_t block = 0;
            uint64_t seed = 0;
            char sk[256];
            snprintf(sk, sizeof sk, "%.*s.rht_seed", (int)stem, k);
            if (kv_gguf_value_i64(kv_gguf_kv_value(m->g, i), &block, NULL) != KV_OK) continue;
            kv_gguf_get_u64(m->g, sk, &seed, NULL);
            add_rotation(m, k + sizeof pre - 1, stem - (sizeof pre - 1), block, seed);
        }
        return;
    }
    const kv_json *md = m->st ? kv_json_get(kv_json_root(m->st), "__metadata__") : NULL;
    if (!md || md->type != KV_JSON_OBJECT) return;
    kv_json_get_str(md, "kvant.transform.list", &m->transform_list);
    for (uint64_t i = 0; i < md->len; i++) {
        const kv_json *e = &md->u.items[i];
        if (e->type != KV_JSON_STRING || !ends_with(e->key, ".rht_block", &stem)) continue;
        char sk[256];
        const char *seed = NULL;
        snprintf(sk, sizeof sk, "%.*s.rht_seed", (int)stem, e->key);
        kv_json_get_str(md, sk, &seed);
        add_rotation(m, e->key, stem, strtoll(e->u.str, NULL, 10), seed ? strtoull(seed, NULL, 10) : 0);
    }
}

static kv_status meta_open(const kv_model_file *mf, meta_info *m, kv_error *err) {
    memset(m, 0, sizeof *m);
    const char *path = kv_model_path(mf);
    kv_status st = KV_OK;
    switch (kv_model_format(mf)) {
    case KV_FILE_GGUF: st = kv_gguf_open(path, &m->g, err); break;
    case KV_FILE_SAFETENSORS:
        snprintf(m->st_path, sizeof m->st_path, "%s", path);
        st = st_header(path, &m->st, err);
        break;
    case KV_FILE_HF: {
        char cfg[1200];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        st = kv_json_parse_file(cfg, 0, &m->cfg, err);
        if (st == KV_OK && first_shard(path, m->st_path, sizeof m->st_path)) st = st_header(m->st_path, &m->st, err);
        break;
    }
    default: break;
    }
    if (st == KV_OK) find_rotations(m);
    return st;
}

static void meta_close(meta_info *m) {
    kv_gguf_close(m->g);
    kv_json_free(m->st);
    kv_json_free(m->cfg);
    free(m->rot);
}

/* ---- output ---------------------------------------------------------------------------------- */

static void compact_json_line(const kv_json *v) {
    kv_jw w;
    kv_jw_init(&w, stdout, 0);
    kv_json_write(&w, v);
    kv_jw_end(&w);
}

static void transforms_text(const meta_info *m) {
    printf("transforms:    %s\n", m->transform_list && *m->transform_list ? m->transform_list : "(none recorded)");
    if (!m->n_rot) return;
    printf("  %lld weights rotated online (their input x <- R x at run time; llama.cpp cannot run them):\n",
           (long long)m->n_rot);
    for (int64_t i = 0; i < m->n_rot; i++)
        printf("    %-32s rht_block %-6lld seed %" PRIu64 "\n", m->rot[i].tensor, (long long)m->rot[i].block,
               m->rot[i].seed);
}

kv_status kv_inspect_meta_open(const kv_model_file *mf, kv_inspect_meta **out, kv_error *err) {
    *out = NULL;
    meta_info *m = malloc(sizeof *m);
    if (!m) return kv_fail(err, KV_ENOMEM, "out of memory");
    kv_status st = meta_open(mf, m, err);
    if (st != KV_OK) {
        meta_close(m);
        free(m);
        return st;
    }
    *out = (kv_inspect_meta *)m;
    return KV_OK;
}

void kv_inspect_meta_close(kv_inspect_meta *h) {
    if (!h) return;
    meta_close((meta_info *)h);
    free(h);
}

void kv_inspect_meta_print_text(const kv_inspect_meta *h, const kv_model_file *mf) {
    const meta_info *m = (const meta_info *)h;
    if (m->g) gguf_meta_text(m->g);
    if (m->cfg) {
        const kv_json *qc = kv_json_get(kv_json_root(m->cfg), "quantization_config");
        printf("quantization_config: ");
        if (qc) compact_json_line(qc);
        else printf("(none: config.json has no quantization_config)\n");
    }
    if (m->st) {
        const kv_json *md = kv_json_get(kv_json_root(m->st), "__metadata__");
        printf("__metadata__:  %s: %lld keys\n", m->st_path, md ? (long long)md->len : 0LL);
        for (uint64_t i = 0; md && md->type == KV_JSON_OBJECT && i < md->len; i++) {
            printf("  %-40s ", md->u.items[i].key);
            if (md->u.items[i].type == KV_JSON_STRING) print_str_text(md->u.items[i].u.str, md->u.items[i].len);
            printf("\n");
        }
    }
    if (!m->g && !m->st && !m->cfg)
        printf("metadata:      none (a %s file has no key/value metadata)\n", kv_file_format_name(kv_model_format(mf)));
    transforms_text(m);
}

void kv_inspect_meta_write_json(kv_jw *w, const kv_inspect_meta *h) {
    const meta_info *m = (const meta_info *)h;
    kv_jw_key(w, "metadata");
    if (m->g) gguf_meta_json(w, m->g);
    else kv_jw_null(w);
    kv_jw_key(w, "quantization_config");
    kv_json_write(w, m->cfg ? kv_json_get(kv_json_root(m->cfg), "quantization_config") : NULL);
    kv_jw_key(w, "safetensors_metadata");
    kv_json_write(w, m->st ? kv_json_get(kv_json_root(m->st), "__metadata__") : NULL);
    kv_jw_key(w, "transforms");
    kv_jw_obj_begin(w);
    kv_jw_key(w, "list");
    if (m->transform_list) kv_jw_str(w, m->transform_list);
    else kv_jw_null(w);
    kv_jw_key(w, "rotated");
    kv_jw_arr_begin(w);
    for (int64_t i = 0; i < m->n_rot; i++) {
        kv_jw_obj_begin(w);
        kv_jw_key(w, "tensor"), kv_jw_str(w, m->rot[i].tensor);
        kv_jw_key(w, "rht_block"), kv_jw_int(w, m->rot[i].block);
        char b[32];
        snprintf(b, sizeof b, "%" PRIu64, m->rot[i].seed); /* u64: exactly, as a string */
        kv_jw_key(w, "rht_seed"), kv_jw_str(w, b);
        kv_jw_obj_end(w);
    }
    kv_jw_arr_end(w);
    kv_jw_obj_end(w);
}
