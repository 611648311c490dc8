/* A VM's metadata change through an fd of its own, whichever loop serves it: hotpath.c's
 * seccomp receive loop (served_fdmeta.h's serve_fdmeta) and the ptrace driver's tracer loop
 * (tracer.c's tracer_fdmeta.h). These are the parts that do not depend on how the caller is
 * stopped: the pidfd its fd is duplicated through, whether the duplicate is the VM's own
 * object, the VM path it is noted by, and the change itself acting as the caller;
 * served_fdmeta.h's header says why each is what the Python path does. Nothing here reads
 * the caller nor answers it.
 */
#ifndef HVFS_FD_CHANGE_H
#define HVFS_FD_CHANGE_H

#include <linux/stat.h> /* struct statx, STATX_MNT_ID */

#include "write_open.h" /* struct published, ends_with */

#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

/* change_fd's kind: in CALL_FCHMOD's order (served_stat.h), and COUNTS_CHMOD's */
enum { CHANGE_MODE, CHANGE_OWNER, CHANGE_TIMES };

/* The pidfd the credentials of tid were published under (published_in's record: known, count),
 * or -1. */
static int
published_pidfd(const struct published *known, size_t count, pid_t tid)
{
    for (size_t i = 0; i < count; i++)
        if (known[i].tid == tid && known[i].pidfd >= 0)
            return known[i].pidfd;
    return -1;
}

/* Whether fd, a duplicate, is on one of the VM's own mounts (own_mounts: own_count packed
 * uint64) and not a device node. */
static int
own_object(const char *own_mounts, size_t own_count, int fd)
{
    struct statx sx;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_MNT_ID, &sx) < 0 || !(sx.stx_mask & STATX_MNT_ID))
        return 0;
    if (S_ISCHR(sx.stx_mode) || S_ISBLK(sx.stx_mode))
        return 0;
    for (size_t i = 0; i < own_count; i++) {
        uint64_t own;
        memcpy(&own, own_mounts + i * sizeof own, sizeof own);
        if (own == sx.stx_mnt_id)
            return 1;
    }
    return 0;
}

/* The VM path of fd (as tracee.py _path_of reads it) into path: its length, or 0 where it
 * is not an absolute path of a file still linked. self_fds: this thread's /proc/thread-self/fd
 * held open (self_fds_open), whose entry "N" is read, or -1: /proc/self/fd/N is (its walk
 * through /proc/self costs a third of the readlink). */
static size_t
fd_vm_path_in(int self_fds, int fd, char *path, size_t size)
{
    char link[64];
    snprintf(link, sizeof link, self_fds >= 0 ? "%d" : "/proc/self/fd/%d", fd);
    ssize_t got = readlinkat(self_fds >= 0 ? self_fds : AT_FDCWD, link, path, size - 1);
    if (got <= 0 || (size_t)got >= size - 1 || path[0] != '/')
        return 0;
    path[got] = 0;
    return ends_with(path, (size_t)got, " (deleted)") ? 0 : (size_t)got;
}

/* inline: only the tracer's loop walks the paths; the hot path holds its fd table */
static inline size_t
fd_vm_path(int fd, char *path, size_t size)
{
    return fd_vm_path_in(-1, fd, path, size);
}

/* This thread's fd table in procfs, held for as long as one serve call answers (its "N" is
 * the magic link /proc/self/fd/N names, found without walking /proc/self each time): an
 * O_PATH fd, or -1 (then the paths are walked). thread-self, not self: a thread that unshared
 * its table (hvfs/_sys/spawner.py) reads its own. */
static inline int /* inline: the hot path's alone, and the tracer includes this too */
self_fds_open(void)
{
    return open("/proc/thread-self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

/* The change itself (kind: CHANGE_*) on fd, acting as the caller, args the call's: 0 or the
 * errno. */
static int
change_fd(int kind, int fd, const __u64 *args, const struct timespec *times)
{
    long done;
    if (kind == CHANGE_MODE)
        done = fchmod(fd, (mode_t)(args[1] & 07777));
    else if (kind == CHANGE_OWNER)
        done = syscall(SYS_fchownat, fd, "", (uint32_t)args[1], (uint32_t)args[2], AT_EMPTY_PATH);
    else
        done = syscall(SYS_utimensat, fd, "", times, AT_EMPTY_PATH);
    return done < 0 ? errno : 0;
}

#endif /* HVFS_FD_CHANGE_H */
