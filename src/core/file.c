/* file.c — read-only memory maps and atomic output files (temp file, fsync, rename). */
#include "core.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *kv_file_kind_name(unsigned mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

static kv_status not_regular(const char *path, unsigned mode, kv_error *err) {
    kv_fail(err, KV_EIO, "not a regular file (%s): kvant reads only regular files", kv_file_kind_name(mode));
    kv_error_context(err, path, -1, NULL);
    return KV_EIO;
}

kv_status kv_check_regular_file(const char *path, kv_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        kv_status st = kv_fail(err, errno == ENOENT ? KV_ENOTFOUND : KV_EIO, "cannot open: %s", strerror(errno));
        kv_error_context(err, path, -1, NULL);
        return st;
    }
    return S_ISREG(sb.st_mode) ? KV_OK : not_regular(path, (unsigned)sb.st_mode, err);
}

kv_status kv_open_regular(const char *path, int *out_fd, kv_error *err) {
    *out_fd = -1;
    /* O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever before fstat can refuse it */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        kv_status st = kv_fail(err, errno == ENOENT ? KV_ENOTFOUND : KV_EIO, "cannot open: %s", strerror(errno));
        kv_error_context(err, path, -1, NULL);
        return st;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        unsigned mode = (unsigned)sb.st_mode;
        close(fd);
        return not_regular(path, mode, err);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *out_fd = fd;
    return KV_OK;
}

kv_status kv_map_file(const char *path, kv_mapped *out, kv_error *err) {
    memset(out, 0, sizeof *out);
    kv_strlcpy(out->path, path, sizeof out->path);
    int fd;
    kv_status ost = kv_open_regular(path, &fd, err);
    if (ost != KV_OK) return ost;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        kv_fail(err, KV_EIO, "cannot stat: %s", strerror(errno));
        kv_error_context(err, path, -1, NULL);
        return KV_EIO;
    }
    out->size = (size_t)sb.st_size;
    if (out->size == 0) {
        close(fd);
        out->data = (const uint8_t *)"";
        return KV_OK;
    }
    void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        kv_fail(err, KV_EIO, "mmap failed: %s", strerror(errno));
        kv_error_context(err, path, -1, NULL);
        return KV_EIO;
    }
    out->data = p;
    return KV_OK;
}

void kv_unmap_file(kv_mapped *m) {
    if (m && m->data && m->size) munmap((void *)m->data, m->size);
    if (m) { m->data = NULL; m->size = 0; }
}

struct kv_outfile {
    int fd;
    uint64_t pos;
    char path[1024];
    char tmp[1100];
    int failed;
};

kv_status kv_outfile_open(const char *path, kv_outfile **out, kv_error *err) {
    *out = NULL;
    kv_outfile *f = kv_calloc(1, sizeof *f, err);
    if (!f) return KV_ENOMEM;
    if (strlen(path) >= sizeof f->path) {
        free(f);
        return kv_fail(err, KV_EINVAL, "output path too long");
    }
    kv_strlcpy(f->path, path, sizeof f->path);
    snprintf(f->tmp, sizeof f->tmp, "%s.tmp.XXXXXX", path);
    f->fd = mkostemp(f->tmp, O_CLOEXEC);
    if (f->fd < 0) {
        kv_status st = kv_fail(err, KV_EIO, "cannot create output file: %s", strerror(errno));
        kv_error_context(err, path, -1, NULL);
        free(f);
        return st;
    }
    fchmod(f->fd, 0644);
    *out = f;
    return KV_OK;
}

kv_status kv_outfile_write(kv_outfile *f, const void *data, size_t n, kv_error *err) {
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            f->failed = 1;
            kv_status st = kv_fail(err, KV_EIO, "write failed: %s", strerror(errno));
            kv_error_context(err, f->path, (int64_t)f->pos, NULL);
            return st;
        }
        p += w;
        n -= (size_t)w;
        f->pos += (uint64_t)w;
    }
    return KV_OK;
}

kv_status kv_outfile_pad(kv_outfile *f, size_t alignment, kv_error *err) {
    static const uint8_t zeros[256];
    if (alignment <= 1) return KV_OK;
    uint64_t pad = (alignment - f->pos % alignment) % alignment;
    while (pad > 0) {
        size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        kv_status st = kv_outfile_write(f, zeros, n, err);
        if (st) return st;
        pad -= n;
    }
    return KV_OK;
}

uint64_t kv_outfile_tell(const kv_outfile *f) { return f->pos; }

kv_status kv_outfile_commit(kv_outfile *f, kv_error *err) {
    if (f->failed) {
        kv_outfile_abort(f);
        return kv_fail(err, KV_EIO, "earlier write failed");
    }
    if (fsync(f->fd) != 0) {
        kv_status st = kv_fail(err, KV_EIO, "fsync failed: %s", strerror(errno));
        kv_error_context(err, f->path, -1, NULL);
        kv_outfile_abort(f);
        return st;
    }
    if (close(f->fd) != 0) {
        f->fd = -1;
        kv_status st = kv_fail(err, KV_EIO, "close failed: %s", strerror(errno));
        kv_error_context(err, f->path, -1, NULL);
        kv_outfile_abort(f);
        return st;
    }
    f->fd = -1;
    if (rename(f->tmp, f->path) != 0) {
        kv_status st = kv_fail(err, KV_EIO, "rename to final name failed: %s", strerror(errno));
        kv_error_context(err, f->path, -1, NULL);
        kv_outfile_abort(f);
        return st;
    }
    free(f);
    return KV_OK;
}

void kv_outfile_abort(kv_outfile *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    free(f);
}
