/* error.c — kv_error: a status, a message and where it happened (file, byte offset, tensor). */
#include "core.h"
#include <stdarg.h>
#include <stdio.h>

kv_status kv_fail(kv_error *err, kv_status st, const char *fmt, ...) {
    if (!err) return st;
    /* a new failure: where it happened is added afterwards by kv_error_context (never left over from an earlier
     * error, nor garbage when the caller did not clear err) */
    err->status = st;
    err->file[0] = 0;
    err->tensor[0] = 0;
    err->offset = -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return st;
}

void kv_error_context(kv_error *err, const char *file, int64_t offset, const char *tensor) {
    if (!err) return;
    if (file && !err->file[0]) kv_strlcpy(err->file, file, sizeof err->file);
    if (offset >= 0 && err->offset < 0) err->offset = offset;
    if (tensor && !err->tensor[0]) kv_strlcpy(err->tensor, tensor, sizeof err->tensor);
}

void kv_error_clear(kv_error *err) {
    if (!err) return;
    memset(err, 0, sizeof *err);
    err->offset = -1;
}

const char *kv_error_format(const kv_error *err, char *buf, size_t n) {
    if (!buf || n == 0) return buf;
    buf[0] = 0;
    if (!err) return buf;
    size_t used = 0;
#define KV_APPEND(...) do { if (used < n) { int w = snprintf(buf + used, n - used, __VA_ARGS__); if (w > 0) used += (size_t)w; } } while (0)
    if (err->file[0]) KV_APPEND("%s: ", err->file);
    if (err->offset >= 0) KV_APPEND("offset %lld: ", (long long)err->offset);
    if (err->tensor[0]) KV_APPEND("tensor '%s': ", err->tensor);
    KV_APPEND("%s", err->message[0] ? err->message : kv_status_name(err->status));
#undef KV_APPEND
    return buf;
}

const char *kv_status_name(kv_status st) {
    switch (st) {
    case KV_OK: return "ok";
    case KV_EIO: return "I/O error";
    case KV_EFORMAT: return "malformed input";
    case KV_EINVAL: return "invalid argument";
    case KV_EUNSUPPORTED: return "unsupported";
    case KV_ENOMEM: return "out of memory";
    case KV_ERANGE: return "out of range";
    case KV_ENOTFOUND: return "not found";
    }
    return "unknown error";
}

void *kv_malloc(size_t n, kv_error *err) {
    void *p = malloc(n ? n : 1);
    if (!p) kv_fail(err, KV_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *kv_calloc(size_t count, size_t size, kv_error *err) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) kv_fail(err, KV_ENOMEM, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *kv_malloc_aligned(size_t n, kv_error *err) {
    void *p = NULL;
    size_t rounded = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        kv_fail(err, KV_ENOMEM, "out of memory allocating %zu aligned bytes", n);
        return NULL;
    }
    return p;
}

void kv_free_aligned(void *p) { free(p); }

void kv_strlcpy(char *dst, const char *src, size_t n) {
    if (n == 0) return;
    size_t i = 0;
    for (; i + 1 < n && src[i]; i++) dst[i] = src[i];
    dst[i] = 0;
}
