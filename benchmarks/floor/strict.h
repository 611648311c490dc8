/* The floor's strict mode: what `hvfs run --strict` traps, served the least a correct
 * supervisor can.
 *
 * The filter is HVFS's own strict program (read from a file that benchmarks/fixtures.py
 * writes from the package being measured), so the two trap the same calls. Of those, the
 * ones HVFS serves for a workload's every file lookup are served here: a stat (stat, lstat,
 * newfstatat, statx), an access check, a readlink, an unlink, an open, and an fchmod,
 * fchown or futimens (fdmeta.h). Each is received,
 * its path read from the caller's memory once, the caller's cwd or dirfd opened for a
 * relative one, ID_VALID checked, the call made here (a path through a procfs is continued,
 * common.h names_proc and base_in_proc), and the result written to the caller
 * (process_vm_writev, after a second ID_VALID: the caller's pid could otherwise have been
 * reused meanwhile) and answered; an open is ORDERED (open.h). Any other trapped call (an
 * exec, a mkdir, a chmod, a credential change...) is answered CONTINUE unread: HVFS checks
 * or serves these, so here the floor is lower than a fair one. */
#ifndef FLOOR_STRICT_H
#define FLOOR_STRICT_H

#include <linux/stat.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "common.h"
#include "fdmeta.h"
#include "open.h"

enum strict_kind {
    KIND_OPEN, KIND_STAT, KIND_STATX, KIND_ACCESS, KIND_READLINK, KIND_UNLINK, /* on a path */
    KIND_FCHMOD, KIND_FCHOWN, KIND_FUTIMENS, /* on a fd (fdmeta.h) */
    KIND_OTHER, KINDS
};
static const char *const kind_names[KINDS] = {"open",   "stat",   "statx",    "access",   "readlink",
                                              "unlink", "fchmod", "fchown", "futimens", "continued"};
static unsigned long kind_counts[KINDS];

/* One trapped call's arguments, in the *at form: the path is relative to dirfd. */
struct strict_call {
    enum strict_kind kind;
    int dirfd;
    unsigned long path;
    unsigned long long rest[3]; /* after the path: flags, mode, buffer, size... as kind says */
};

/* Thin decoding: which argument is which, nothing read yet. */
static struct strict_call decode(const struct seccomp_notif *req) {
    const __u64 *a = req->data.args;
    struct strict_call c = {.kind = KIND_OTHER, .dirfd = (int)a[0], .path = a[1], .rest = {a[2], a[3], a[4]}};
    struct strict_call cwd = {.kind = KIND_OTHER, .dirfd = AT_FDCWD, .path = a[0], .rest = {a[1], a[2], a[3]}};
    switch (req->data.nr) {
    case __NR_openat: /* flags, mode */
        c.kind = KIND_OPEN;
        return c;
    case __NR_newfstatat: /* buffer, flags */
        c.kind = KIND_STAT;
        return c;
    case __NR_statx: /* flags, mask, buffer */
        c.kind = KIND_STATX;
        return c;
    case __NR_faccessat: /* mode; no flags */
        c.rest[1] = 0;
        c.kind = KIND_ACCESS;
        return c;
    case __NR_faccessat2: /* mode, flags */
        c.kind = KIND_ACCESS;
        return c;
    case __NR_readlinkat: /* buffer, size */
        c.kind = KIND_READLINK;
        return c;
    case __NR_unlinkat: /* flags */
        c.kind = KIND_UNLINK;
        return c;
    case __NR_fchmod: /* the fd, a mode */
        cwd.kind = KIND_FCHMOD;
        return cwd;
    case __NR_fchown: /* the fd, an owner, a group */
        cwd.kind = KIND_FCHOWN;
        return cwd;
    case __NR_utimensat: /* on the fd (no path: futimens) the times, flags; else continued */
        if (c.path == 0 && c.dirfd != AT_FDCWD) c.kind = KIND_FUTIMENS;
        c.rest[0] = a[2], c.rest[1] = a[3];
        return c;
#ifdef __NR_open
    case __NR_open:
        cwd.kind = KIND_OPEN;
        return cwd;
    case __NR_stat:
    case __NR_lstat:
        cwd.rest[1] = req->data.nr == __NR_lstat ? AT_SYMLINK_NOFOLLOW : 0;
        cwd.kind = KIND_STAT;
        return cwd;
    case __NR_access:
        cwd.rest[1] = 0;
        cwd.kind = KIND_ACCESS;
        return cwd;
    case __NR_readlink:
        cwd.kind = KIND_READLINK;
        return cwd;
    case __NR_unlink:
    case __NR_rmdir:
        cwd.rest[0] = req->data.nr == __NR_rmdir ? AT_REMOVEDIR : 0;
        cwd.kind = KIND_UNLINK;
        return cwd;
#endif
    default:
        return c;
    }
}

/* The call made here, relative to BASE: its result (>= 0, a byte count for a readlink) or
 * -errno; what it returns in memory is put in OUT and its size in *size. */
static long perform(const struct strict_call *c, int base, const char *path, void *out, size_t *size) {
    long done;
    switch (c->kind) {
    case KIND_STAT:
        *size = sizeof(struct stat);
        done = fstatat(base, path, out, (int)c->rest[1]);
        break;
    case KIND_STATX:
        *size = sizeof(struct statx);
        done = syscall(SYS_statx, base, path, (int)c->rest[0], (unsigned)c->rest[1], out);
        break;
    case KIND_ACCESS:
        done = syscall(SYS_faccessat2, base, path, (int)c->rest[0], (int)c->rest[1]);
        break;
    case KIND_READLINK:
        if ((int)c->rest[1] <= 0) { /* as the kernel's bufsiz check */
            errno = EINVAL;
            return -EINVAL;
        }
        done = readlinkat(base, path, out, c->rest[1] < PATH_MAX ? c->rest[1] : PATH_MAX);
        *size = done > 0 ? (size_t)done : 0;
        break;
    case KIND_UNLINK:
        done = unlinkat(base, path, (int)c->rest[0]);
        break;
    default:
        errno = ENOSYS;
        done = -1;
    }
    return done < 0 ? -errno : done;
}

/* Answers one notification of the strict program. */
static void answer_strict(int listener, const struct seccomp_notif *req) {
    struct strict_call c = decode(req);
    kind_counts[c.kind]++;
    if (c.kind == KIND_OTHER) {
        reply_continue(listener, req->id);
        return;
    }
    if (c.kind >= KIND_FCHMOD) {
        /* fchmod and fchown: the fd is decoded as a path (their first argument) */
        static const enum fd_call calls[] = {FD_CHMOD, FD_CHOWN, FD_UTIMENS};
        int fd = c.kind == KIND_FUTIMENS ? c.dirfd : (int)c.path;
        answer_on_fd(listener, req, calls[c.kind - KIND_FCHMOD], fd, c.rest);
        return;
    }
    if (c.kind == KIND_OPEN) {
        answer_open(listener, req, c.dirfd, c.path, (int)c.rest[0], (mode_t)c.rest[1], ORDERED, 1);
        return;
    }
    char path[PATH_MAX];
    int err = read_path(req->pid, c.path, path, sizeof path);
    if (err == 0 && names_proc(path)) {
        if (id_valid(listener, req->id)) reply_continue(listener, req->id);
        return;
    }
    int base = err == 0 ? open_base(req->pid, c.dirfd, path) : AT_FDCWD;
    if (base == -1) err = errno;
    int spared = base_in_proc(base);
    if (!id_valid(listener, req->id)) {
        close_base(base);
        return;
    }
    if (spared) {
        close_base(base);
        reply_continue(listener, req->id);
        return;
    }
    if (err != 0) {
        reply_error(listener, req->id, err);
        return;
    }
    union {
        struct stat st;
        struct statx stx;
        char link[PATH_MAX];
    } out;
    size_t size = 0;
    long result = perform(&c, base, path, &out, &size);
    close_base(base);
    if (result >= 0 && size > 0) {
        /* The buffer argument: a stat's third, statx's fifth, readlink's third. */
        unsigned long buffer = c.kind == KIND_STATX ? c.rest[2] : c.rest[0];
        struct iovec local = {.iov_base = &out, .iov_len = size};
        struct iovec remote = {.iov_base = (void *)buffer, .iov_len = size};
        if (!id_valid(listener, req->id)) return;
        if (process_vm_writev(req->pid, &local, 1, &remote, 1, 0) != (ssize_t)size) result = -EFAULT;
    }
    if (result < 0)
        reply_error(listener, req->id, (int)-result);
    else
        reply_value(listener, req->id, result);
}

/* Says on stderr how many calls of each kind were answered, when FLOOR_COUNTS is set, and
 * the CPU time this process took for them (cpu_us: its own, the child's not yet waited for),
 * against which benchmarks/served_floor_cpu.py sets the manager's per request. */
static void report_strict_counts(void) {
    if (getenv("FLOOR_COUNTS") == NULL) return;
    struct rusage used;
    long cpu_us = -1;
    if (getrusage(RUSAGE_SELF, &used) == 0)
        cpu_us = (used.ru_utime.tv_sec + used.ru_stime.tv_sec) * 1000000L + used.ru_utime.tv_usec + used.ru_stime.tv_usec;
    fprintf(stderr, "floor:");
    for (int kind = 0; kind < KINDS; kind++) fprintf(stderr, " %s %lu", kind_names[kind], kind_counts[kind]);
    fprintf(stderr, " cpu_us %ld\n", cpu_us);
}

#endif
