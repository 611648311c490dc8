/* What a write-open served in C needs, whichever loop serves it: hotpath.c's seccomp receive
 * loop (served_write.h's serve_write) and the ptrace driver's tracer loop (tracer.c's
 * tracer_write.h). The path read once into our buffer, the caller's base directory, the
 * published credentials it is served under, the open itself as the caller (a creation
 * too), and the change set's note (queued without the GIL: note_queue.h). Nothing here
 * answers a caller: each loop installs the file its own way.
 */
#ifndef HVFS_WRITE_OPEN_H
#define HVFS_WRITE_OPEN_H

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h> /* unshare, CLONE_FS */
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "cred_bumps.h"    /* the generation's part C bumps, by thread */
#include "note_queue.h"    /* the change set's notes without the GIL */
#include "served_switch.h" /* acting as the caller */

#ifndef AT_FDCWD
#define AT_FDCWD -100
#endif
#ifndef PATH_MAX_BYTES
#define PATH_MAX_BYTES 4096
#define SHORT_PATH 256 /* read first: most paths are short (hvfs/intercept/tracee.py) */
#endif
#define SERVED_STATUS (O_APPEND | O_DIRECT | O_NOATIME) /* direct.py _STATUS */
/* open(2)'s flags as the kernel keeps them (opening.py VALID_OPEN_FLAGS), and those that
 * make an open a write (WRITE_FLAGS: served by Python, with the VM's change set). */
#define SERVED_TMPFILE 020000000 /* __O_TMPFILE without O_DIRECTORY: opening.py TMPFILE_BIT */
#define SERVED_VALID_OPEN                                                                                      \
    (O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK | O_SYNC | O_DSYNC | FASYNC |     \
     O_DIRECT | O_LARGEFILE | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC | O_PATH | SERVED_TMPFILE)
#define SERVED_WRITE (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | SERVED_TMPFILE)

/* Up to size bytes at address in pid's memory; stops at the first unreadable page, as
 * one read of it all would. -1 with errno when not even the first byte can be read. */
static ssize_t
read_remote(pid_t pid, uint64_t address, char *buffer, size_t size)
{
    struct iovec local = {.iov_base = buffer, .iov_len = size};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)address, .iov_len = size};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

static int
ends_with(const char *text, size_t length, const char *tail)
{
    size_t size = strlen(tail);
    return length >= size && memcmp(text + length - size, tail, size) == 0;
}

#define SCOPED_RETRIES 16 /* hvfs/_sys/files.py: EAGAIN from a scoped lookup a rename raced */

/* openat2, a scoped lookup's EAGAIN (a rename or mount raced it) retried; the fd, or -1
 * with errno. Without the GIL. */
static long
openat2_retried(int dirfd, const char *path, struct open_how *how)
{
    int tries = how->resolve & (RESOLVE_IN_ROOT | RESOLVE_BENEATH) ? SCOPED_RETRIES : 0;
    long opened;
    for (;;) {
        opened = syscall(SYS_openat2, dirfd, path, how, sizeof(*how));
        if (opened >= 0 || errno != EAGAIN || tries-- <= 0)
            return opened;
    }
}

/* openat2 (O_CLOEXEC added), fstat, then F_SETFL status (where status >= 0 and the file is
 * a regular file or a FIFO, the kinds a served write-open hands out); 0, or the errno of
 * the failed step, with the fd closed when a step after the open failed. Without the GIL. */
static int
open_stat_calls(int dirfd, const char *path, struct open_how *how, int status, int *fd, unsigned int *mode)
{
    long opened = openat2_retried(dirfd, path, how);
    if (opened < 0)
        return errno;
    struct stat st;
    if (fstat((int)opened, &st) < 0 ||
        (status >= 0 && (S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode)) && fcntl((int)opened, F_SETFL, status) < 0)) {
        int failed = errno;
        close((int)opened);
        return failed;
    }
    *fd = (int)opened;
    *mode = st.st_mode;
    return 0;
}

static long
scoped_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
    struct open_how how = {.flags = flags | O_CLOEXEC, .resolve = resolve};
    long fd;
    int tries = SCOPED_RETRIES;
    do
        fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    while (fd < 0 && errno == EAGAIN && tries-- > 0);
    return fd;
}

/* The directory a relative path starts from (the cwd for AT_FDCWD, else dirfd's), as
 * tracee.directory reads it for resolve.base_directory: its text into base, and its
 * (device, inode); 0, or -1 for anything Python must look at (no such fd: EBADF there). */
static int
read_base(pid_t tid, int dirfd, char *base, size_t size, struct stat *identity)
{
    char link[64];
    if (dirfd == AT_FDCWD)
        snprintf(link, sizeof link, "/proc/%d/cwd", (int)tid);
    else
        snprintf(link, sizeof link, "/proc/%d/fd/%d", (int)tid, dirfd);
    ssize_t got = readlink(link, base, size - 1);
    if (got <= 0 || (size_t)got >= size - 1 || base[0] != '/' || stat(link, identity) < 0)
        return -1;
    base[got] = 0;
    return ends_with(base, (size_t)got, " (deleted)") ? -1 : 0; /* procfs's mark of a deleted one */
}

/* hvfs/intercept/credcache.py WATCH and PUBLISHED */
struct watch_state {
    uint64_t generation;
    uint32_t changing;
    uint32_t trusted;
};
struct published {
    int32_t tid;
    int32_t pidfd;
    uint64_t generation;
    uint32_t what, uid, gid, ngroups; /* served_switch.h struct acting's */
    uint64_t effective;
    uint32_t groups[PUBLISHED_GROUPS];
    uint32_t umask;         /* the caller's umask: served_write.h's creation */
    uint32_t access_alike;  /* 1: access's real ids switch as these (served_link.h) */
    uint32_t real_uid, real_gid; /* the rest of the Credentials, for Python to adopt a fresh record */
    uint64_t capabilities;
    uint32_t fresh; /* kept by C, not yet adopted by Python: first_credentials.h FRESH_* */
    uint32_t spare;
};

/* published_in's record of tid, its poll left to the caller: its index in known, with *a what
 * acting as it switches; or -1. A caller that proves the record's thread alive otherwise
 * (served_fdmeta.h: a duplicate taken through its pidfd) makes no poll. */
static long
published_record(const struct watch_state *watch, const uint64_t *bumps, const struct published *known,
                 size_t count, pid_t tid, struct acting *a)
{
    uint64_t generation = __atomic_load_n(&watch->generation, __ATOMIC_ACQUIRE) +
                          bumps_of(bumps, tid); /* CredWatch.generation_of(tid) */
    if (!__atomic_load_n(&watch->trusted, __ATOMIC_ACQUIRE) || __atomic_load_n(&watch->changing, __ATOMIC_ACQUIRE))
        return -1;
    for (size_t i = 0; i < count; i++) {
        if (known[i].tid != tid || known[i].pidfd < 0)
            continue;
        if (known[i].generation != generation)
            return -1;
        const struct published *p = &known[i];
        if (p->ngroups > PUBLISHED_GROUPS)
            return -1;
        *a = (struct acting){.what = p->what, .uid = p->uid, .gid = p->gid, .ngroups = p->ngroups,
                             .effective = p->effective, .groups = p->groups, .umask = p->umask,
                             .access_alike = p->access_alike};
        return (long)i;
    }
    return -1;
}

/* Whether the credentials of tid are published (known, count: one worker's records), under
 * the watch's generation (with the bumps C made, of the VM and of tid's bucket, or NULL), and still hold: then *a is what
 * acting as them switches. */
static int
published_in(const struct watch_state *watch, const uint64_t *bumps, const struct published *known,
             size_t count, pid_t tid, struct acting *a)
{
    long at = published_record(watch, bumps, known, count, tid, a);
    if (at < 0)
        return 0;
    struct pollfd alive = {.fd = known[at].pidfd, .events = POLLIN};
    return poll(&alive, 1, 0) == 0; /* alive, it holds its number: the notifier is that thread */
}


/* Whether path is one the Python path opens by its text in one call: absolute, plain, and
 * naming no kernel path nor anything under /dev. */
static int
plain_write_path(const char *path, size_t length)
{
    if (path[0] != '/' || path[length - 1] == '/' || strstr(path, "proc") || strstr(path, "pts") ||
        strstr(path, "dev"))
        return 0;
    return !strstr(path, "//") && !strstr(path, "/./") && !strstr(path, "/../") && !ends_with(path, length, "/.") &&
           !ends_with(path, length, "/..");
}

/* changes.note(path, existed, exists) with the GIL: 0, or -1 where it raised (reported as
 * unraisable; the request is then answered EIO, as the dispatch answers a failed record). */
static int
note_with_gil(PyObject *note, const char *path, size_t length, int existed, int exists)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *name = PyUnicode_DecodeFSDefaultAndSize(path, (Py_ssize_t)length);
    PyObject *done = name ? PyObject_CallFunctionObjArgs(note, name, existed ? Py_True : Py_False, exists ? Py_True : Py_False, NULL) : NULL;
    int failed = done == NULL;
    if (failed)
        PyErr_WriteUnraisable(note);
    Py_XDECREF(done);
    Py_XDECREF(name);
    PyGILState_Release(gil);
    return failed ? -1 : 0;
}

/* The change set's note of path, before the call is answered: queued without the GIL where
 * note is ChangeSet.c_note's (queue, note) (note_queue.h), with the GIL by that note where the
 * queue is full, or by note itself where it is a bare callable. 0, or -1 as note_with_gil.
 * Safe because: the tuple and the capsule are immutable and kept alive by the loop's
 * argument, so their fields read without the GIL are those set before the loop began; a
 * capsule's pointer is never NULL, so neither call below can fail on a capsule of our name. */
static int
note_change(PyObject *note, const char *path, size_t length, int existed, int exists)
{
    PyObject *queued = PyTuple_CheckExact(note) && PyTuple_GET_SIZE(note) == 2 ? PyTuple_GET_ITEM(note, 0) : NULL;
    const char *name = queued && PyCapsule_CheckExact(queued) ? PyCapsule_GetName(queued) : NULL;
    if (name && strcmp(name, NOTE_QUEUE_NAME) == 0) {
        if (note_queue_push(PyCapsule_GetPointer(queued, NOTE_QUEUE_NAME), path, length, existed, exists))
            return 0;
        note = PyTuple_GET_ITEM(note, 1);
    }
    return note_with_gil(note, path, length, existed, exists);
}

/* The file created as direct.py creates it (the open again with O_EXCL, the caller's mode
 * and umask, acting as the caller: a->switched) once the first open found nothing: 0, or the
 * errno (DECLINED then; EEXIST: another thread made it meanwhile, Python's general path).
 * The umask is set on this thread alone, as acting_as sets it: the thread's fs_struct made
 * its own first (unshare(CLONE_FS), as creds.py _identity does for every worker), put back
 * after. */
static int
create_as_caller(int dir, const char *path, struct open_how *how, uint64_t mode, int status, int *fd,
                 unsigned int *kind, const struct acting *a)
{
    static __thread int own_fs; /* 1: this thread's umask is its own; -1: unshare failed */
    if (!own_fs)
        own_fs = unshare(CLONE_FS) == 0 ? 1 : -1;
    if (own_fs < 0)
        return ECANCELED;
    how->flags |= O_CREAT | O_EXCL;
    how->mode = mode & 07777; /* opening.py normalized */
    mode_t before = umask((mode_t)(a->umask & 0777));
    int failed = open_stat_calls(dir, path, how, status, fd, kind);
    umask(before);
    return failed;
}

/* A relative path's base directory kept open for as long as one serve call answers in C:
 * served_base.h's keeper (the VM's root, for stats and read-only opens) and the writable
 * view's (write_base's, for the mutations served here). */
struct kept_base {
    int held;  /* fd is ours, and names text, of identity dev and ino */
    int plain; /* found by its text with no symlink on the way (served_audit.h's plain_base) */
    int fd;    /* O_PATH | O_DIRECTORY */
    dev_t dev;
    ino_t ino;
    uint64_t mount; /* served_base.h: the caller's directory's mount id when kept; 0: unknown, never matched */
    char text[PATH_MAX_BYTES + 1];
};

/* Whether kept holds the directory base names, of identity (its text and dev/ino alike). */
static inline int
kept_holds(const struct kept_base *kept, const char *base, const struct stat *identity)
{
    return kept && kept->held && kept->dev == identity->st_dev && kept->ino == identity->st_ino &&
           strcmp(kept->text, base) == 0;
}

/* Keeps dir, base's directory (of identity st), in kept for the serve call where its text fits,
 * closing the one kept before; plain: found with no symlink on the way (served_audit.h). */
static void
keep_base(struct kept_base *kept, long dir, const char *base, const struct stat *st, int plain)
{
    size_t length = strlen(base);
    if (!kept || length >= sizeof kept->text)
        return;
    if (kept->held)
        close(kept->fd);
    memcpy(kept->text, base, length + 1);
    kept->fd = (int)dir, kept->dev = st->st_dev, kept->ino = st->st_ino, kept->held = 1, kept->mount = 0;
    kept->plain = plain;
}

/* The directory a relative path starts from, found in the writable view as resolve.open_named
 * finds it (with the manager's rights: a lookup the caller made already; no symlink on the
 * way) and checked to be the caller's very directory (identity, read_base's): an fd, or -1;
 * write_base_done gives it back.
 *
 * An untar's every file and an rm -rf's every unlink start from one directory (the cwd, or
 * the directory fts holds open), whose openat2, fstat and close were a third of such a
 * request's syscalls. So, with a keeper (kept: the serve call's; NULL opens every base anew),
 * the directory found is kept with its text and identity, and used again for a request whose
 * base has that text and that identity, both read anew from the caller (read_base). That is
 * the directory Python's open of the text would find, the identity check it makes: an inode
 * number is unique among a device's inodes in use, and the kept directory's is in use for as
 * long as it is held open here, so a caller's directory of that (device, inode) is that very
 * directory (a removed one reads " (deleted)" and is refused by read_base). The text, read
 * anew, is what the change set notes, never the kept one. Only the manager mounts anything in
 * the writable view, so no other mount of that directory can stand at the text instead. */
static long
write_base(struct kept_base *kept, int rw_root, const char *base, const struct stat *identity)
{
    if (kept_holds(kept, base, identity))
        return kept->fd;
    struct stat st;
    long dir = scoped_openat2(rw_root, base, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
    if (dir >= 0 && (fstat((int)dir, &st) < 0 || st.st_dev != identity->st_dev || st.st_ino != identity->st_ino)) {
        close((int)dir);
        return -1;
    }
    if (dir >= 0)
        keep_base(kept, dir, base, &st, 0);
    return dir;
}

/* Gives back dir, a base from write_base (or rw_root itself): closed unless it is kept. */
static void
write_base_done(const struct kept_base *kept, int rw_root, long dir)
{
    if (dir >= 0 && dir != rw_root && !(kept && kept->held && kept->fd == dir))
        close((int)dir);
}

/* An act on a plain path, from the directory that path starts from (dir) with the lookup it
 * takes there (resolve: RESOLVE_IN_ROOT or RESOLVE_BENEATH): 0 when done, else an errno. */
typedef int (*view_act)(int dir, char *path, uint64_t resolve, void *how);

/* Runs act (how: its own arguments) on path (read_write_path's: plain; a relative one's base
 * and its identity beside it) in the writable view rw_root, acting as the caller (a): from
 * rw_root itself, RESOLVE_IN_ROOT, for an absolute path; from its base, RESOLVE_BENEATH, for a
 * relative one (write_base's: the caller's very directory; kept: its keeper, or NULL). act's answer, or ECANCELED with
 * nothing done where the base is not the caller's or the switch failed; the caller's
 * credentials put back and the base closed either way. Without the GIL. */
static int
act_in_view(int rw_root, struct kept_base *kept, char *path, const char *base, const struct stat *identity,
            struct acting *a, view_act act, void *how)
{
    long dir = path[0] == '/' ? rw_root : write_base(kept, rw_root, base, identity);
    if (dir < 0)
        return ECANCELED;
    int failed = ECANCELED;
    if (act_switch(a) == 0)
        failed = act((int)dir, path, path[0] == '/' ? RESOLVE_IN_ROOT : RESOLVE_BENEATH, how);
    act_restore(a);
    write_base_done(kept, rw_root, dir);
    return failed;
}

/* The path of a write-open (path_at from dirfd), read once from tid's memory into path, and,
 * for a relative one, its base's text (base) and identity: resolve.plain_name's whole text
 * into whole, its length; -1 for anything Python must look at (malformed or empty, a base
 * read_base refuses), -2 where that is the text alone (path read whole, NUL-terminated: one
 * that is not plain, or names "proc", "pts" or "dev"; served_dev.h looks at those). Safe
 * because: process_vm_readv writes only within our buffer; the bytes are opened as read,
 * whatever the caller's memory holds by then. */
static int
read_write_path(pid_t tid, int32_t dirfd, uint64_t path_at, char path[PATH_MAX_BYTES + 1],
                char base[PATH_MAX_BYTES + 1], char whole[2 * PATH_MAX_BYTES + 2], struct stat *identity)
{
    ssize_t got = read_remote(tid, path_at, path, SHORT_PATH);
    if (got == SHORT_PATH && !memchr(path, 0, SHORT_PATH)) {
        ssize_t more = read_remote(tid, path_at + SHORT_PATH, path + SHORT_PATH, PATH_MAX_BYTES - SHORT_PATH);
        got = more < 0 ? got : got + more;
    }
    if (got <= 0 || !memchr(path, 0, (size_t)got) || path[0] == 0)
        return -1;
    size_t size = 2 * PATH_MAX_BYTES + 2;
    int made = path[0] == '/' ? snprintf(whole, size, "%s", path) : 0;
    if (path[0] != '/') {
        if (read_base(tid, dirfd, base, PATH_MAX_BYTES + 1, identity) < 0)
            return -1;
        made = snprintf(whole, size, base[strlen(base) - 1] == '/' ? "%s%s" : "%s/%s", base, path);
    }
    if (made <= 0 || (size_t)made >= size)
        return -1;
    return plain_write_path(whole, (size_t)made) ? made : -2;
}

/* Whether path (from dir, resolved as the open was, no symlink on the way) names a regular
 * file, looked at as the caller (still switched): where an O_CREAT|O_EXCL open found one,
 * opening.py's general path probes it (O_PATH) and answers EEXIST with no side effect; any
 * other object (a directory, a symlink, a FIFO) is left to it. */
static int
found_regular(int dir, const char *path, uint64_t resolve)
{
    long probe = scoped_openat2(dir, path, O_PATH | O_NOFOLLOW | O_CLOEXEC, resolve);
    struct stat st;
    int regular = probe >= 0 && fstat((int)probe, &st) == 0 && S_ISREG(st.st_mode);
    if (probe >= 0)
        close((int)probe);
    return regular;
}

/* The open itself, as direct.py open_writable makes it, acting as the caller (a): path in
 * the writable view (rw_root; a relative one beneath its base, write_base's, kept by kept or NULL), the caller's
 * flags less O_CREAT, then, where that found nothing and O_CREAT asks, the creation (at once
 * for O_CREAT|O_EXCL, as direct.py's exclusive case). 0 with *fd a regular file or a FIFO and
 * *existed; -EEXIST where an exclusive creation met a regular file (answered so, nothing
 * done); or -1 (declined: nothing done but an O_TRUNC open's truncation or a creation whose
 * fstat or F_SETFL failed, as Python's direct path). */
static int
open_writable(int rw_root, struct kept_base *kept, const char *path, const char *base, const struct stat *identity,
              uint64_t flags, uint64_t creation_mode, struct acting *a, int *fd, int *existed)
{
    long dir = path[0] == '/' ? rw_root : write_base(kept, rw_root, base, identity);
    if (dir < 0)
        return -1;
    struct open_how how = {.flags = (flags & ~(uint64_t)O_CREAT) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
                           .resolve = RESOLVE_NO_SYMLINKS | (path[0] == '/' ? RESOLVE_IN_ROOT : RESOLVE_BENEATH)};
    int status = flags & O_NONBLOCK ? -1 : (int)(flags & SERVED_STATUS), failed = ECANCELED;
    int exclusive = flags & O_CREAT && flags & O_EXCL; /* direct.py: created at once, no open first */
    unsigned int mode = 0;
    *existed = 1;
    if (act_switch(a) == 0)
        failed = exclusive ? ENOENT : open_stat_calls((int)dir, path, &how, status, fd, &mode);
    if (failed == ENOENT && flags & O_CREAT && !a->failed) {
        *existed = 0;
        failed = create_as_caller((int)dir, path, &how, creation_mode, status, fd, &mode, a);
        if (failed == EEXIST && exclusive && found_regular((int)dir, path, how.resolve))
            failed = -EEXIST; /* answered: opening.py's probe finds that file and raises EEXIST */
    }
    act_restore(a);
    write_base_done(kept, rw_root, dir);
    if (failed)
        return failed == -EEXIST ? -EEXIST : -1;
    if (!S_ISREG(mode) && !S_ISFIFO(mode)) { /* unreachable in a nodev view: direct.py's general path */
        close(*fd);
        return -1;
    }
    *existed = S_ISREG(mode) ? *existed : -1; /* -1: a FIFO, not noted (it changes nothing in the tree) */
    return 0;
}

#endif /* HVFS_WRITE_OPEN_H */
