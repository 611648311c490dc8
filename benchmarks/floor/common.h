/* What every answer of the floor (floor.c) needs: reading the caller's path, the directory a
 * relative one starts from, ID_VALID and the answer itself. */
#ifndef FLOOR_COMMON_H
#define FLOOR_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

_Noreturn static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Reads a NUL-terminated string from the child one page at a time, since the string may
 * end just before an unmapped page. Returns 0 or an errno. */
static int read_path(pid_t pid, unsigned long addr, char *buf, size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), done = 0;
    while (done < size) {
        size_t chunk = page - (addr + done) % page;
        if (chunk > size - done) chunk = size - done;
        struct iovec local = {.iov_base = buf + done, .iov_len = chunk};
        struct iovec remote = {.iov_base = (void *)(addr + done), .iov_len = chunk};
        ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (got <= 0) return got < 0 ? errno : EFAULT;
        if (memchr(buf + done, '\0', (size_t)got) != NULL) return 0;
        done += (size_t)got;
    }
    return ENAMETOOLONG;
}

/* The directory a relative path of the child starts from (its cwd, or its dirfd), opened
 * O_PATH; AT_FDCWD for an absolute path (the child and we share a root); -1 and errno when
 * the child's directory cannot be opened. */
static int open_base(pid_t pid, int dirfd, const char *path) {
    if (path[0] == '/') return AT_FDCWD;
    char base[64];
    if (dirfd == AT_FDCWD)
        snprintf(base, sizeof base, "/proc/%d/cwd", pid);
    else
        snprintf(base, sizeof base, "/proc/%d/fd/%d", pid, dirfd);
    return open(base, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

/* Whether PATH may lead through a procfs, whose /proc/self and /proc/thread-self name the
 * process that resolves them: such a call is continued, the kernel resolving it as the
 * caller (HVFS serves those in Python, hvfs/_native/served_names.h). */
static int names_proc(const char *path) {
    for (const char *at = path; (at = strstr(at, "proc")) != NULL; at += 4)
        if ((at == path || at[-1] == '/') && (at[4] == '\0' || at[4] == '/')) return 1;
    return 0;
}

/* Whether a relative path's BASE directory is in a procfs (see names_proc): one fstatfs,
 * where HVFS reads the base's text (hvfs/_native/served_base.h). */
static int base_in_proc(int base) {
    struct statfs fs;
    return base >= 0 && fstatfs(base, &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC;
}

static void close_base(int base) {
    if (base >= 0) close(base);
}

/* Whether the notification still waits: the pid may have been reused since RECV, and only a
 * still-valid id proves that what was read (or is about to be written) is the caller's. */
static int id_valid(int listener, __u64 id) {
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

static void reply(int listener, struct seccomp_notif_resp *resp) {
    /* ENOENT: the child was interrupted by a signal or died; nothing waits for the answer. */
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp) != 0 && errno != ENOENT) die("NOTIF_SEND");
}

static void reply_value(int listener, __u64 id, long long value) {
    struct seccomp_notif_resp resp = {.id = id, .val = value};
    reply(listener, &resp);
}

static void reply_error(int listener, __u64 id, int error) {
    struct seccomp_notif_resp resp = {.id = id, .error = -error};
    reply(listener, &resp);
}

static void reply_continue(int listener, __u64 id) {
    struct seccomp_notif_resp resp = {.id = id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
    reply(listener, &resp);
}

#endif
