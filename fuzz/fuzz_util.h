/* fuzz_util.h — shared by the fuzz targets whose reader takes a path: the input bytes are written to one
 * memfd per process (a regular in-memory file, no disk traffic) and the reader opens "/proc/self/fd/N". */
#ifndef KV_FUZZ_UTIL_H
#define KV_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
