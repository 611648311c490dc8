/* A plain path's unlink in the VM's writable view, acting as the caller, whichever loop serves
 * it: hotpath.c's seccomp receive loop (served_mutate.h's serve_unlink) and the ptrace driver's
 * tracer loop (tracer.c's tracer_unlink.h). What is unlinked is what hvfs/manager/handlers/
 * names.py handle_unlink unlinks: the name's parent found with no symlink on the way (an
 * absolute path RESOLVE_IN_ROOT from the writable view's root; a relative one RESOLVE_BENEATH
 * its base, found with the manager's rights and checked to be the caller's very directory, as
 * write_open.h's write_base finds it), then unlinkat of the last component, no AT_REMOVEDIR, so
 * that the kernel makes every check the caller's own unlink would. Nothing here reads the
 * caller's memory nor answers it: the path is the loop's copy, read once.
 */
#ifndef HVFS_UNLINK_NAMED_H
#define HVFS_UNLINK_NAMED_H

#include "write_open.h" /* scoped_openat2, write_base; acting as the caller */

/* The directory holding path's last component (*last: where that starts in path), opened
 * O_PATH from dir with no symlink on the way (resolve: RESOLVE_IN_ROOT or RESOLVE_BENEATH),
 * acting as the caller: an fd, or -1 with errno. A name with no "/" is in dir itself: dup. */
static long
mutated_parent(int dir, char *path, uint64_t resolve, const char **last)
{
    char *slash = strrchr(path, '/');
    if (!slash) {
        *last = path;
        return fcntl(dir, F_DUPFD_CLOEXEC, 0);
    }
    *last = slash + 1;
    char held = slash[1];
    slash[1] = 0; /* the head with its "/": "/" itself for a name at the root */
    long parent = scoped_openat2(dir, path, O_PATH | O_DIRECTORY, resolve | RESOLVE_NO_SYMLINKS);
    slash[1] = held;
    return parent;
}

/* The unlinkat of path's last component in its parent, found from dir (act_in_view's act). */
static int
unlink_in(int dir, char *path, uint64_t resolve, void *how)
{
    const char *last = NULL;
    long parent = mutated_parent(dir, path, resolve, &last);
    int failed = parent < 0 ? errno : unlinkat((int)parent, last, 0) < 0 ? errno : 0;
    if (parent >= 0)
        close((int)parent);
    return failed;
}

/* Unlinks path (write_open.h read_write_path's: plain; a relative one's base and its identity
 * beside it) in the writable view rw_root (its base kept by kept, or NULL), acting as the caller (a): 0 when it is gone, else
 * an errno (ECANCELED: the base not the caller's, or the switch failed), with nothing changed.
 * Without the GIL. */
static int
unlink_named(int rw_root, struct kept_base *kept, char *path, const char *base, const struct stat *identity,
             struct acting *a)
{
    return act_in_view(rw_root, kept, path, base, identity, a, unlink_in, NULL);
}

#endif /* HVFS_UNLINK_NAMED_H */
