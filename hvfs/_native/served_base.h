/* The base directory of a relative path, kept open for as long as one serve call answers in
 * C (served_stat.h's stats and read-only opens; hotpath.c serve, until a request needs
 * Python).
 *
 * Python finds a relative path's base by its text (read_base: the caller's cwd or dirfd as
 * readlink shows it, and the identity stat gives it), opened RESOLVE_IN_ROOT in the VM's
 * root and checked to be that very directory (resolve.open_at). git's lstat of every tracked
 * file and find's fstatat of every entry are relative, each from the directory the one
 * before was from: that openat2, its fstat and its close cost a third of the request's
 * syscalls in C. So the directory found is kept, with its text and identity, and used again
 * for a request whose base has the same text and the same identity, read anew from the
 * caller each time (read_base): the caller's directory is at that text in the VM's view now,
 * and the writable view is that view's tree, so the text finds that directory there again,
 * as Python's open would. Anything else opens and checks it as before, and keeps that one.
 *
 * The caller's directory is first looked at by one statx of its magic link (kept_base_of):
 * where it is the kept directory on the very mount it was kept for (the mount id, device and
 * inode the caller's side showed then; still linked), its text is not read again (readlink
 * costs as much as the statx): the directory the text names now is that one, on that mount,
 * as above. Only a lookup that leaves the base (EXDEV beneath it), which Python makes again
 * from the text, is then declined, for Python to make with the text it reads.
 *
 * Kept with the manager's rights, as Python opens a base; a foreign or missing base is not
 * kept. HVFS_SERVED_BASE=0 (read by served_stat.py, which then passes no keeper) opens every
 * base anew, the writable view's too (write_open.h write_base, the mutations' keeper).
 */
#ifndef HVFS_SERVED_BASE_H
#define HVFS_SERVED_BASE_H

#include <sys/sysmacros.h> /* makedev */

/* struct kept_base: write_open.h's (this keeper's fd is in the VM's root) */

/* The caller's magic link to its directory (dirfd, or its cwd): read_base's. */
static void
base_link(pid_t tid, int32_t dirfd, char *link, size_t size)
{
    if (dirfd == AT_FDCWD)
        snprintf(link, size, "/proc/%d/cwd", (int)tid);
    else
        snprintf(link, size, "/proc/%d/fd/%d", (int)tid, dirfd);
}

/* The caller's directory, seen by one statx of its magic link: 0 with *seen, or -1. */
static int
base_seen(pid_t tid, int32_t dirfd, struct statx *seen)
{
    char link[64];
    base_link(tid, dirfd, link, sizeof link);
    if (statx(AT_FDCWD, link, 0, STATX_TYPE | STATX_INO | STATX_NLINK | STATX_MNT_ID, seen) < 0)
        return -1;
    return seen->stx_mask & STATX_MNT_ID && S_ISDIR(seen->stx_mode) && seen->stx_nlink > 0 ? 0 : -1;
}

/* Whether the caller's directory is the kept one (base_seen): then *base and *identity are
 * the kept text and identity, for base_directory to find it kept. */
static int
kept_base_of(const struct kept_base *kept, pid_t tid, int32_t dirfd, char *base, struct stat *identity)
{
    struct statx seen;
    if (!kept || !kept->held || !kept->mount || base_seen(tid, dirfd, &seen) < 0 || seen.stx_mnt_id != kept->mount ||
        seen.stx_ino != kept->ino || makedev(seen.stx_dev_major, seen.stx_dev_minor) != kept->dev)
        return 0;
    memcpy(base, kept->text, strlen(kept->text) + 1);
    identity->st_dev = kept->dev, identity->st_ino = kept->ino;
    return 1;
}

/* read_base's text and identity of the caller's directory, with its mount id (*mount; 0 where
 * base_seen would refuse it) from the same statx that gives the identity, made after the
 * readlink as read_base's stat: the mount is that very directory's, seen once (a stat and then
 * a statx of the magic link cost two lookups through it). 0, or -1 as read_base. */
static int
read_base_seen(pid_t tid, int32_t dirfd, char *base, size_t size, struct stat *identity, uint64_t *mount)
{
    char link[64];
    struct statx seen;
    base_link(tid, dirfd, link, sizeof link);
    ssize_t got = readlink(link, base, size - 1);
    if (got <= 0 || (size_t)got >= size - 1 || base[0] != '/' ||
        statx(AT_FDCWD, link, 0, STATX_TYPE | STATX_INO | STATX_NLINK | STATX_MNT_ID, &seen) < 0 ||
        (seen.stx_mask & (STATX_TYPE | STATX_INO)) != (STATX_TYPE | STATX_INO))
        return -1;
    base[got] = 0;
    if (ends_with(base, (size_t)got, " (deleted)"))
        return -1;
    identity->st_dev = makedev(seen.stx_dev_major, seen.stx_dev_minor), identity->st_ino = seen.stx_ino;
    *mount = seen.stx_mask & STATX_MNT_ID && S_ISDIR(seen.stx_mode) && seen.stx_nlink > 0 ? seen.stx_mnt_id : 0;
    return 0;
}

/* After a miss, the kept directory's mount on the caller's side (read_base_seen's, read before
 * the directory was found), where the kept directory is the one this request's text and
 * identity found (not one kept for another text: the same directory on another mount). */
static void
kept_base_mounted(struct kept_base *kept, const char *base, const struct stat *identity, uint64_t mount)
{
    if (kept && kept->held && kept->dev == identity->st_dev && kept->ino == identity->st_ino &&
        strcmp(kept->text, base) == 0)
        kept->mount = mount;
}

/* The directory base names in root, checked to be identity's (read_base's): an fd, kept in
 * *kept (the caller must not close it) or, without a keeper, the caller's to close; or
 * -errno, with *foreign set for a base that is not the caller's directory (ForeignBase). */
static long
base_directory(struct kept_base *kept, int root, const char *base, const struct stat *identity, int *foreign)
{
    if (kept_holds(kept, base, identity))
        return kept->fd;
    long dir = scoped_openat2(root, base, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT);
    if (dir < 0) {
        *foreign = errno == ENOENT;
        return -errno;
    }
    struct stat st;
    if (fstat((int)dir, &st) < 0 || st.st_dev != identity->st_dev || st.st_ino != identity->st_ino) {
        close((int)dir);
        *foreign = 1;
        return -EACCES;
    }
    keep_base(kept, dir, base, &st, 0);
    return dir;
}

/* Whether dir (base_directory's) is the caller's to close. */
static int
base_borrowed(const struct kept_base *kept, long dir)
{
    return kept && kept->held && kept->fd == dir;
}

/* The keeper for a serve call: NULL where bases are opened anew (or no memory). */
static struct kept_base *
base_keeper(int wanted)
{
    struct kept_base *kept = wanted ? PyMem_RawMalloc(sizeof *kept) : NULL;
    if (kept)
        kept->held = 0;
    return kept;
}

static void
base_keeper_release(struct kept_base *kept)
{
    if (!kept)
        return;
    if (kept->held)
        close(kept->fd);
    PyMem_RawFree(kept);
}

#endif
