/* fuzz_util.h — shared by the fuzz targets whose reader takes a path: the input bytes are written to one
 * memfd per process (a regular in-memory file, no disk traffic) and the reader opens "/proc/self/fd/N". */
#ifndef KV_FUZZ_UTIL_H
#define KV_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The path of a file holding exactly data[0..size); the same file is reused by every call. */
static const char *fuzz_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("kvant-fuzz", MFD_CLOEXEC);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) abort();
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        if (w <= 0) abort();
        done += (size_t)w;
    }
    return path;
}

/* A llama2.c checkpoint of a tiny model (dim 8, 1 layer, 2 heads, vocab 8, seq 64) with deterministic weights,
 * written once into its own memfd; returns its path. */
static const char *fuzz_tiny_model_path(void) {
    enum { DIM = 32, HIDDEN = 64, LAYERS = 1, HEADS = 4, VOCAB = 8, SEQ = 64 };
    static char path[64];
    if (path[0]) return path;
    const int64_t floats = (int64_t)VOCAB * DIM + LAYERS * (DIM + 4 * DIM * DIM + DIM + 3 * DIM * HIDDEN) + DIM +
                           2 * (SEQ * (DIM / HEADS) / 2);
    const size_t size = 28 + 4 * (size_t)floats;
    uint8_t *b = calloc(1, size);
    if (!b) abort();
    const int32_t h[7] = {DIM, HIDDEN, LAYERS, HEADS, HEADS, VOCAB, SEQ};
    for (int i = 0; i < 7; i++) memcpy(b + 4 * i, &h[i], 4);
    uint32_t s = 12345;
    for (int64_t i = 0; i < floats; i++) {
        s = s * 1664525u + 1013904223u;
        float v = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.8f;
        memcpy(b + 28 + 4 * i, &v, 4);
    }
    int fd = memfd_create("kvant-fuzz-model", MFD_CLOEXEC);
    if (fd < 0 || write(fd, b, size) != (ssize_t)size) abort();
    free(b);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return path;
}

/* A broken property: say which, then crash so that libFuzzer saves the input. */
#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz property violated: %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)
/* Every rejection explains itself: a failed call must leave a message. */
#define FUZZ_REQUIRE_MESSAGE(err) FUZZ_ASSERT((err).message[0])

#endif
