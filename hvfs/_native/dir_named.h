/* A plain path's mkdir or rmdir in the VM's writable view, acting as the caller (served_dirs.h's
 * serve_dir, from hotpath.c's seccomp receive loop). What is made or removed is what
 * hvfs/manager/handlers/names.py handle_mkdir and handle_rmdir make or remove: the name's
 * parent found with no symlink on the way (unlink_named.h's mutated_parent: an absolute path
 * RESOLVE_IN_ROOT from the writable view's root; a relative one RESOLVE_BENEATH its base, found
 * with the manager's rights and checked to be the caller's very directory), then mkdirat of the
 * last component with the caller's mode (& 07777, the decoder's) under its umask, or unlinkat
 * with AT_REMOVEDIR, so that the kernel makes every check the caller's own call would. The act
 * is on a name in the parent fd held, never on a path walked again: a parent swapped with a
 * symlink after the lookup leaves the fd on the directory found, inside the view. Nothing here
 * reads the caller's memory nor answers it: the path is the loop's copy, read once.
 */
#ifndef HVFS_DIR_NAMED_H
#define HVFS_DIR_NAMED_H

#include "unlink_named.h" /* mutated_parent, write_base; acting as the caller */

/* mkdirat under the caller's umask, set on this thread alone as acting_as sets it (the
 * thread's fs_struct its own first, as create_as_caller makes it): 0 or the errno
 * (ECANCELED: no fs_struct of its own). */
static int
mkdir_as_caller(int parent, const char *last, uint64_t mode, const struct acting *a)
{
    static __thread int own_fs; /* 1: this thread's umask is its own; -1: unshare failed */
    if (!own_fs)
        own_fs = unshare(CLONE_FS) == 0 ? 1 : -1;
    if (own_fs < 0)
        return ECANCELED;
    mode_t before = umask((mode_t)(a->umask & 0777));
    int failed = mkdirat(parent, last, (mode_t)(mode & 07777)) < 0 ? errno : 0;
    umask(before);
    return failed;
}

/* What dir_named asks of dir_in: remove (1) or make (0, with the caller's mode, under a's umask). */
struct dir_act {
    int remove;
    uint64_t mode;
    const struct acting *a;
};

/* The mkdirat or the unlinkat with AT_REMOVEDIR of path's last component in its parent, found
 * from dir (act_in_view's act; how: a struct dir_act). */
static int
dir_in(int dir, char *path, uint64_t resolve, void *how)
{
    const struct dir_act *asked = how;
    const char *last = NULL;
    long parent = mutated_parent(dir, path, resolve, &last);
    int failed;
    if (parent < 0) /* ENOENT, ELOOP ...: never EEXIST, which the act alone answers */
        failed = errno == EEXIST ? ECANCELED : errno;
    else if (!*last) /* names.py _refuse_root's: Python answers it */
        failed = ECANCELED;
    else if (asked->remove)
        failed = unlinkat((int)parent, last, AT_REMOVEDIR) < 0 ? errno : 0;
    else
        failed = mkdir_as_caller((int)parent, last, asked->mode, asked->a);
    if (parent >= 0)
        close((int)parent);
    return failed;
}

/* Makes (remove: 0) or removes (1) the directory path (write_open.h read_write_path's: plain;
 * a relative one's base and its identity beside it) in the writable view rw_root (its base
 * kept by kept, or NULL), acting as
 * the caller (a): 0 when done, else an errno (ECANCELED: the base not the caller's, or the
 * switch failed), with nothing changed. Without the GIL. */
static int
dir_named(int rw_root, struct kept_base *kept, char *path, const char *base, const struct stat *identity, int remove,
          uint64_t mode, struct acting *a)
{
    struct dir_act asked = {.remove = remove, .mode = mode, .a = a};
    return act_in_view(rw_root, kept, path, base, identity, a, dir_in, &asked);
}

#endif /* HVFS_DIR_NAMED_H */
