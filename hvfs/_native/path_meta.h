/* A plain path's metadata change in the VM's writable view, acting as the caller
 * (served_pathmeta.h's serve_pathmeta, from hotpath.c's seccomp receive loop). What is changed
 * is what hvfs/manager/handlers/attrs.py handle_chmod, handle_chown and handle_utimens change
 * for a path (``_on_target`` through ``_object``): the object opened O_PATH in the view, the
 * caller's lookup (acting as the caller), following its last component or not as asked, then
 * the change made through that fd, never through a name walked again: chmod of
 * /proc/thread-self/fd/N (resolve.chmod_fd's), fchownat(fd, "", AT_EMPTY_PATH) and
 * utimensat(fd, "", times, AT_EMPTY_PATH), the Python path's very calls. Only with no symlink on
 * the way (RESOLVE_NO_SYMLINKS: a symlink last with AT_SYMLINK_NOFOLLOW is opened itself, as
 * O_PATH|O_NOFOLLOW opens it), an absolute path RESOLVE_IN_ROOT from the view's root, a relative
 * one RESOLVE_BENEATH its base, found with the manager's rights and checked to be the caller's
 * very directory (write_base): so the object is the one the path's text names in the VM, which
 * the change set notes by that text. A parent swapped with a symlink after the lookup changes
 * nothing: the fd holds the object found. Nothing here reads the caller's memory nor answers it.
 */
#ifndef HVFS_PATH_META_H
#define HVFS_PATH_META_H

#include "fd_change.h"  /* CHANGE_*; change_fd's calls, on a path's O_PATH fd here */
#include "write_open.h" /* scoped_openat2, write_base; acting as the caller */

/* What change_named asks of change_in: the change (kind, value, times), whether path's last
 * component is followed, and this thread's /proc/thread-self/fd (self_fds, or -1). */
struct meta_act {
    int follow, kind;
    uint64_t value;
    const struct timespec *times;
    int self_fds;
};

/* The change on the object path names, opened O_PATH from dir with no symlink on the way
 * (act_in_view's act; how: a struct meta_act), made through that fd. */
static int
change_in(int dir, char *path, uint64_t resolve, void *how)
{
    const struct meta_act *asked = how;
    int kind = asked->kind;
    uint64_t value = asked->value;
    int failed;
    long fd = scoped_openat2(dir, path, O_PATH | (asked->follow ? 0 : O_NOFOLLOW), resolve | RESOLVE_NO_SYMLINKS);
    struct stat st;
    if (fd < 0 || fstat((int)fd, &st) < 0)
        failed = errno;
    else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || (kind == CHANGE_MODE && S_ISLNK(st.st_mode)))
        failed = ECANCELED;
    else if (kind == CHANGE_MODE) {
        char link[64];
        int self_fds = asked->self_fds;
        snprintf(link, sizeof link, self_fds >= 0 ? "%d" : "/proc/self/fd/%d", (int)fd);
        failed = fchmodat(self_fds >= 0 ? self_fds : AT_FDCWD, link, (mode_t)(value & 07777), 0) < 0 ? errno : 0;
    } else if (kind == CHANGE_OWNER)
        failed = syscall(SYS_fchownat, (int)fd, "", (uint32_t)value, (uint32_t)(value >> 32), AT_EMPTY_PATH) < 0
                     ? errno
                     : 0;
    else
        failed = syscall(SYS_utimensat, (int)fd, "", asked->times, AT_EMPTY_PATH) < 0 ? errno : 0;
    if (fd >= 0)
        close((int)fd);
    return failed;
}

/* The change (kind: CHANGE_*; value: the mode, or the uid and gid in its low and high 32 bits;
 * times: utimensat's, or NULL for now) on the object path names (write_open.h read_write_path's:
 * plain; a relative one's base and its identity beside it; follow: 0 for AT_SYMLINK_NOFOLLOW) in
 * the writable view rw_root (its base kept by kept, or NULL), acting as the caller (a); self_fds: this thread's
 * /proc/thread-self/fd, or -1. 0 when done, else an errno with nothing changed (ECANCELED: the
 * base not the caller's, the switch failed, a device node or a symlink's mode: attrs.py refuses
 * those, and Python answers them). Without the GIL. */
static int
change_named(int rw_root, struct kept_base *kept, char *path, const char *base, const struct stat *identity,
             int follow, int kind, uint64_t value, const struct timespec *times, int self_fds, struct acting *a)
{
    struct meta_act asked = {.follow = follow, .kind = kind, .value = value, .times = times, .self_fds = self_fds};
    return act_in_view(rw_root, kept, path, base, identity, a, change_in, &asked);
}

#endif /* HVFS_PATH_META_H */
