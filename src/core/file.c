/* file.c — read-only memory maps and atomic output files (temp file, fsync, rename). */
#include "core.h"
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <time.h>
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

/* Temporary names are "PATH.tmp.<pid>": a signal handler can compute (and unlink) them without allocating, and a
 * later run can tell a stale temp (its process is gone) from one being written. */
static void temp_name(char *dst, size_t n, const char *path) { snprintf(dst, n, "%s.tmp.%ld", path, (long)getpid()); }

static void split_dir(const char *path, char *dir, size_t n, const char **base) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        kv_strlcpy(dir, ".", n);
        *base = path;
    } else {
        size_t len = slash == path ? 1 : (size_t)(slash - path);
        if (len >= n) len = n - 1;
        memcpy(dir, path, len);
        dir[len] = 0;
        *base = slash + 1;
    }
}

/* A temp left by kvant: ".tmp.<pid>" whose process is gone, or an older binary's ".tmp.XXXXXX" (no pid) not
 * touched for 10 minutes, so that a run writing the same output now is never disturbed. */
static int is_stale_temp(const char *dir, const char *name, const char *suffix) {
    size_t n = strlen(suffix);
    if (n == 0 || n > 12) return 0;
    int digits = 1, alnum = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)suffix[i];
        digits &= c >= '0' && c <= '9';
        alnum &= (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }
    if (digits && n <= 10) {
        long pid = strtol(suffix, NULL, 10);
        if (pid <= 0 || pid == (long)getpid()) return 0;
        return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
    }
    if (!alnum || n != 6) return 0;
    char full[2200];
    snprintf(full, sizeof full, "%s/%s", dir, name);
    struct stat sb;
    return lstat(full, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_mtime < time(NULL) - 600;
}

int kv_outfile_clean_stale(const char *path) {
    char dir[1100];
    const char *base;
    split_dir(path, dir, sizeof dir, &base);
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        if (strncmp(nm, base, blen) || strncmp(nm + blen, ".tmp.", 5)) continue;
        if (!is_stale_temp(dir, nm, nm + blen + 5)) continue;
        char full[2200];
        snprintf(full, sizeof full, "%s/%s", dir, nm);
        removed += unlink(full) == 0;
    }
    closedir(d);
    return removed;
}

/* An existing output must be a regular file (or a link to replace): renaming over a directory fails only at
 * the end, and over a device (as root) would replace /dev/null. */
static kv_status check_target(const char *path, kv_error *err) {
    struct stat sb;
    if (lstat(path, &sb) != 0 || S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode)) return KV_OK;
    kv_fail(err, KV_EINVAL, "output exists and is %s, not a regular file", kv_file_kind_name((unsigned)sb.st_mode));
    kv_error_context(err, path, -1, NULL);
    return KV_EINVAL;
}

static kv_status create_temp(const char *path, char *tmp, size_t n, int *fd, kv_error *err) {
    temp_name(tmp, n, path);
    kv_outfile_clean_stale(path);
    *fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (*fd < 0 && errno == EEXIST) { /* carries our pid: an earlier one of ours, or of a dead process */
        unlink(tmp);
        *fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    }
    if (*fd >= 0) return KV_OK;
    char dir[1100];
    const char *base;
    split_dir(path, dir, sizeof dir, &base);
    int e = errno;
    struct stat sb;
    kv_status st = stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)
                       ? kv_fail(err, KV_EIO, "output directory '%s' does not exist", dir)
                       : kv_fail(err, KV_EIO, "cannot create the output file in '%s': %s", dir, strerror(e));
    kv_error_context(err, path, -1, NULL);
    return st;
}

void kv_outfile_temp_name(const char *path, char *dst, size_t n) { temp_name(dst, n, path); }

kv_status kv_outfile_check(const char *path, kv_error *err) {
    char tmp[1100];
    if (strlen(path) >= 1024) return kv_fail(err, KV_EINVAL, "output path too long");
    kv_status st = check_target(path, err);
    if (st) return st;
    int fd;
    if ((st = create_temp(path, tmp, sizeof tmp, &fd, err))) return st;
    close(fd);
    unlink(tmp);
    return KV_OK;
}

kv_status kv_outfile_open(const char *path, kv_outfile **out, kv_error *err) {
    *out = NULL;
    kv_outfile *f = kv_calloc(1, sizeof *f, err);
    if (!f) return KV_ENOMEM;
    if (strlen(path) >= sizeof f->path) {
        free(f);
        return kv_fail(err, KV_EINVAL, "output path too long");
    }
    kv_strlcpy(f->path, path, sizeof f->path);
    kv_status st = check_target(path, err);
    if (!st) st = create_temp(path, f->tmp, sizeof f->tmp, &f->fd, err);
    if (st) {
        free(f);
        return st;
    }
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
