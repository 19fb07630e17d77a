/* json.h — a strict RFC 8259 JSON parser with a read-only DOM (config.json, safetensors headers,
 * model.safetensors.index.json, tokenizer.json). Internal to libkvant (other modules include "io/json.h"). */
#ifndef KV_IO_JSON_H
#define KV_IO_JSON_H

#include "kvant.h"

typedef enum kv_json_type {
    KV_JSON_NULL = 0,
    KV_JSON_BOOL,
    KV_JSON_NUMBER,
    KV_JSON_STRING,
    KV_JSON_ARRAY,
    KV_JSON_OBJECT
} kv_json_type;

/* One value. Children of arrays and objects are contiguous (items[0 .. len-1]), in document order; object
 * members carry their key. All strings are decoded UTF-8, NUL-terminated, but may contain NUL bytes
 * (from \u0000): use the lengths when that matters. */
typedef struct kv_json kv_json;
struct kv_json {
    uint8_t type;          /* kv_json_type */
    uint8_t boolean;       /* BOOL: 0 or 1 */
    uint8_t is_int;        /* NUMBER: an integer literal (no fraction, no exponent) that fits int64 */
    uint32_t key_len;      /* member key length in bytes */
    uint64_t len;          /* STRING: bytes; ARRAY/OBJECT: number of children */
    const char *key;       /* key when this value is an object member, else NULL */
    union {
        const char *str;   /* STRING */
        kv_json *items;    /* ARRAY/OBJECT */
    } u;
    double num;            /* NUMBER (also set for integers) */
    int64_t ival;          /* NUMBER when is_int */
    uint64_t offset;       /* byte offset of the value in the source (plus opts.base_offset) */
};

typedef struct kv_json_opts {
    const char *path;      /* named in errors (may be NULL) */
    uint64_t base_offset;  /* added to every offset (e.g. 8 for a safetensors header) */
    size_t max_bytes;      /* 0: 512 MiB */
    int max_depth;         /* 0: 256 nested arrays/objects */
} kv_json_opts;

typedef struct kv_json_doc kv_json_doc;

/* Parses exactly one JSON text (surrounding whitespace allowed, a leading UTF-8 BOM ignored). Errors are
 * KV_EFORMAT (syntax, invalid UTF-8, lone surrogates), KV_ERANGE (depth, size, number out of range) with
 * the byte offset set. opts may be NULL. */
kv_status kv_json_parse(const char *text, size_t len, const kv_json_opts *opts, kv_json_doc **out, kv_error *err);
/* Maps and parses a file (max_bytes 0: the default limit). */
kv_status kv_json_parse_file(const char *path, size_t max_bytes, kv_json_doc **out, kv_error *err);
void kv_json_free(kv_json_doc *doc);
const kv_json *kv_json_root(const kv_json_doc *doc);

/* Lookups: NULL when v is NULL, not the right kind, or the key/index is missing. Object lookup is a linear
 * scan; for big objects iterate items instead. With duplicate keys, the first one wins. */
const kv_json *kv_json_get(const kv_json *obj, const char *key);
/* Writes v (NULL: null) through the report writer, keys in document order. */
void kv_json_write(kv_jw *w, const kv_json *v);
const kv_json *kv_json_at(const kv_json *arr, uint64_t i);
/* The first duplicate key of an object (n log n), or NULL when all keys are distinct. */
const kv_json *kv_json_find_duplicate_key(const kv_json *obj);

/* Typed reads of an object member; they return 1 and set *out when the member exists with the right type,
 * 0 when it is absent or null, -1 when it has another type (or a non-integer / out-of-range number). */
int kv_json_get_int(const kv_json *obj, const char *key, int64_t *out);
int kv_json_get_num(const kv_json *obj, const char *key, double *out);
int kv_json_get_bool(const kv_json *obj, const char *key, int *out);
int kv_json_get_str(const kv_json *obj, const char *key, const char **out);
const char *kv_json_type_name(int type);

#endif
