/* core.h — internal helpers shared by every module of libkvant (not public). */
#ifndef KV_CORE_H
#define KV_CORE_H

#include "kvant.h"
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define KV_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KV_MAX(a, b) ((a) > (b) ? (a) : (b))
#define KV_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define KV_STATIC_ASSERT(c, msg) _Static_assert(c, msg)

/* Overflow-checked arithmetic for sizes computed from untrusted headers. Return false on overflow. */
static inline bool kv_mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool kv_add_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }

/* Little-endian loads/stores (the formats are little-endian on disk; x86/ARM hosts are too, but
 * unaligned access through these keeps UBSan quiet). */
static inline uint16_t kv_rd_u16(const void *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t kv_rd_u32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t kv_rd_u64(const void *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline float kv_rd_f32(const void *p) { float v; memcpy(&v, p, 4); return v; }
static inline void kv_wr_u16(void *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void kv_wr_u32(void *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void kv_wr_u64(void *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void kv_wr_f32(void *p, float v) { memcpy(p, &v, 4); }

/* malloc wrappers that fill err on failure. */
void *kv_malloc(size_t n, kv_error *err);
void *kv_calloc(size_t count, size_t size, kv_error *err);

/* 64-byte aligned allocation (for kernels); free with kv_free_aligned. */
void *kv_malloc_aligned(size_t n, kv_error *err);
void kv_free_aligned(void *p);

/* Readers refuse anything but regular files (a FIFO would block in open, a device never ends).
 * kv_check_regular_file: stat only (KV_ENOTFOUND / KV_EIO naming the kind). kv_open_regular: *fd gets an O_RDONLY
 * descriptor of a regular file, opened without blocking (-1 on failure). */
kv_status kv_check_regular_file(const char *path, kv_error *err);
kv_status kv_open_regular(const char *path, int *fd, kv_error *err);
const char *kv_file_kind_name(unsigned mode); /* "a FIFO", "a directory", ... for a st_mode */

/* Bounded string copy that always terminates. */
void kv_strlcpy(char *dst, const char *src, size_t n);

/* Deterministic PRNG (splitmix64 seeding + xoshiro256**): every random choice of kvant goes through it so
 * that the same seed gives the same bytes on every machine and thread count. */
typedef struct kv_rng { uint64_t s[4]; } kv_rng;
void kv_rng_seed(kv_rng *r, uint64_t seed);
uint64_t kv_rng_u64(kv_rng *r);
double kv_rng_uniform(kv_rng *r);   /* [0, 1) */
double kv_rng_normal(kv_rng *r);    /* N(0, 1), Box-Muller without caching */

#endif
