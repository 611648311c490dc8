/* The floor's strict mode on a caller's fd: fchmod, fchown and utimensat on a fd (an untar's
 * three calls per file, which HVFS serves: hvfs/_native/served_fdmeta.h). The caller's fd is
 * duplicated with pidfd_getfd, acted on, and closed. */
#ifndef FLOOR_FDMETA_H
#define FLOOR_FDMETA_H

#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "common.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* 6.9: a pidfd of a thread, not only of a process leader */
#endif

/* A pidfd of the last caller, kept: a workload's calls come from few threads. A kept pidfd
 * whose thread is gone (its number perhaps reused) makes pidfd_getfd fail with ESRCH, and
 * is then opened again. */
static pid_t kept_pid;
static int kept_pidfd = -1;

static int open_pidfd(pid_t tid) {
    if (kept_pidfd >= 0) close(kept_pidfd);
    kept_pid = tid;
    kept_pidfd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
    if (kept_pidfd < 0 && errno == EINVAL) kept_pidfd = (int)syscall(SYS_pidfd_open, tid, 0);
    return kept_pidfd;
}

/* A duplicate of the caller's fd NUMBER, or -errno. */
static int caller_fd(pid_t tid, int number) {
    if ((kept_pid != tid || kept_pidfd < 0) && open_pidfd(tid) < 0) return -errno;
    int fd = (int)syscall(SYS_pidfd_getfd, kept_pidfd, number, 0);
    if (fd < 0 && errno == ESRCH && open_pidfd(tid) >= 0) fd = (int)syscall(SYS_pidfd_getfd, kept_pidfd, number, 0);
    return fd < 0 ? -errno : fd;
}

/* utimensat's times (NULL: now), read from the caller: 0 or an errno. */
static int read_times(pid_t tid, unsigned long addr, struct timespec times[2], struct timespec **use) {
    *use = NULL;
    if (addr == 0) return 0;
    struct iovec local = {.iov_base = times, .iov_len = 2 * sizeof times[0]};
    struct iovec remote = {.iov_base = (void *)addr, .iov_len = local.iov_len};
    if (process_vm_readv(tid, &local, 1, &remote, 1, 0) != (ssize_t)local.iov_len) return EFAULT;
    *use = times;
    return 0;
}

enum fd_call { FD_CHMOD, FD_CHOWN, FD_UTIMENS };

/* Serves CALL on the caller's fd NUMBER with ARGS (a mode; an owner and a group; the times'
 * address and the flags). */
static void answer_on_fd(int listener, const struct seccomp_notif *req, enum fd_call call, int number,
                         const unsigned long long args[2]) {
    struct timespec times[2], *use = NULL;
    int err = call == FD_UTIMENS ? read_times(req->pid, args[0], times, &use) : 0;
    if (call == FD_UTIMENS && args[1] != 0) err = EINVAL; /* the kernel's, for flags without a path */
    int fd = err == 0 ? caller_fd(req->pid, number) : -err;
    if (!id_valid(listener, req->id)) {
        if (fd >= 0) close(fd);
        return;
    }
    if (fd < 0) {
        reply_error(listener, req->id, -fd);
        return;
    }
    int done;
    if (call == FD_CHMOD)
        done = fchmod(fd, (mode_t)args[0]);
    else if (call == FD_CHOWN)
        done = fchown(fd, (uid_t)args[0], (gid_t)args[1]);
    else
        done = futimens(fd, use);
    err = errno;
    close(fd);
    if (done < 0)
        reply_error(listener, req->id, err);
    else
        reply_value(listener, req->id, 0);
}

#endif
