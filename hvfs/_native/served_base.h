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
 * Kept with the manager's rights, as Python opens a base; a foreign or missing base is not
 * kept. HVFS_SERVED_BASE=0 (read by served_stat.py, which then passes no keeper) opens every
 * base anew.
 */
#ifndef HVFS_SERVED_BASE_H
#define HVFS_SERVED_BASE_H

struct kept_base {
    int held; /* fd is ours, and names text, of identity dev and ino */
    int fd;   /* O_PATH | O_DIRECTORY, in the VM's root */
    dev_t dev;
    ino_t ino;
    char text[PATH_MAX_BYTES + 1];
};

/* The directory base names in root, checked to be identity's (read_base's): an fd, kept in
 * *kept (the caller must not close it) or, without a keeper, the caller's to close; or
 * -errno, with *foreign set for a base that is not the caller's directory (ForeignBase). */
static long
base_directory(struct kept_base *kept, int root, const char *base, const struct stat *identity, int *foreign)
{
    if (kept && kept->held && kept->dev == identity->st_dev && kept->ino == identity->st_ino &&
        strcmp(kept->text, base) == 0)
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
    size_t length = strlen(base);
    if (kept && length < sizeof kept->text) {
        if (kept->held)
            close(kept->fd);
        memcpy(kept->text, base, length + 1);
        kept->fd = (int)dir, kept->dev = st.st_dev, kept->ino = st.st_ino, kept->held = 1;
    }
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
