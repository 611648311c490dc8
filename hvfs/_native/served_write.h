/* A strict VM's write-open (a file created too), served in the C receive loop (served_stat.h's
 * serve_open hands its writes here; hvfs/intercept/served_stat.py says when, and
 * tests/test_served_write.py holds it to the Python path).
 *
 * What is served is what the Python path serves in one call (hvfs/manager/handlers/direct.py
 * open_writable, reached from opening.py handle_open for a legacy open, openat or creat): a
 * path whose text (a relative one's after its base's, the cwd or the dirfd as read_base reads
 * it) resolve.py ``plain_name`` names (no "//", "/./", "/../", no last "/." or "/.." nor "/"),
 * opened O_WRONLY or O_RDWR in the VM's writable view, a nodev one, with the caller's flags less
 * O_CREAT (no mode), O_NONBLOCK, O_NOCTTY and O_CLOEXEC added, no
 * symlink on the way (resolve.open_named: an absolute path RESOLVE_IN_ROOT; a relative one
 * RESOLVE_BENEATH its base, found in the view with the manager's rights and checked to be the
 * caller's very directory), acting as the caller; then fstat and F_SETFL of the caller's
 * status flags (files.open_stat); where that finds nothing (ENOENT) and O_CREAT asks, the open
 * again with O_CREAT and O_EXCL, the caller's mode (& 07777) and umask (published with its
 * credentials, under the same watch); an O_CREAT|O_EXCL open is that creation at once, and
 * where it finds a regular file (no symlink on the way) answered EEXIST, as opening.py's
 * probe answers it. A regular file is noted in the change set as direct.py
 * notes it (its text, whether it existed, exists), a FIFO is not (it changes nothing in the
 * tree); both are handed out.
 *
 * Served in every profile (the default one has its opens alone served here: compiled.py);
 * none where a service judges the VM's reads (no rw_root then: runtime.py).
 *
 * Declined before any answer, so that Python serves the request from its start: a VM with a
 * hook or an audit (quiet[0] off); O_PATH, O_TMPFILE, a
 * read-only access mode (O_CREAT or O_TRUNC alone: opening.py's probe);
 * a path (with its base) naming "proc", "pts" or "dev" (kernel_paths, /dev's devices, magic
 * links to the caller's own files), a path that is not plain, a base Python would find
 * otherwise (ForeignBase, a deleted or foreign directory); a caller whose credentials are not
 * published; and every failed open: ENOENT (without O_CREAT, or a missing directory), EEXIST
 * (a file made meanwhile; for O_EXCL, anything but a regular file there: a symlink, a
 * directory), ELOOP (a symlink on the way: named by a readlink there), any errno (Python's
 * general path answers it). A failed openat2 changes nothing, bar an O_TRUNC open
 * failing after its truncation, or a creation whose fstat or F_SETFL fails, which Python's
 * own direct path hands to its general path alike.
 *
 * The change set: noted with the GIL taken here (PyGILState_Ensure), by the VM's
 * ChangeSet.note, before the file is installed and the call answered, so no reader of the
 * change set (hvfs diff, a snapshot, the manager's stop) can look in between: the order the
 * dispatch keeps (changes.record, then the driver's answer).
 *
 * The answer: ADDFD without SEND, C's copy closed, then the answer (hp_install's order for a
 * writable file: the VM's close must be the last, or an exec right after writing fails with
 * ETXTBSY).
 */
#ifndef HVFS_SERVED_WRITE_H
#define HVFS_SERVED_WRITE_H

#include <sched.h> /* unshare, CLONE_FS */

#define SERVED_STATUS (O_APPEND | O_DIRECT | O_NOATIME) /* direct.py _STATUS */
#define SERVED_WRITABLE (1u << 31) /* in *newfd_flags, never the kernel's: install_served's order */

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

/* changes.note(path, existed, True) with the GIL: 0, or -1 where it raised (reported as
 * unraisable; the request is then answered EIO, as the dispatch answers a failed record). */
static int
note_change(PyObject *note, const char *path, size_t length, int existed)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *name = PyUnicode_DecodeFSDefaultAndSize(path, (Py_ssize_t)length);
    PyObject *done = name ? PyObject_CallFunctionObjArgs(note, name, existed ? Py_True : Py_False, Py_True, NULL) : NULL;
    int failed = done == NULL;
    if (failed)
        PyErr_WriteUnraisable(note);
    Py_XDECREF(done);
    Py_XDECREF(name);
    PyGILState_Release(gil);
    return failed ? -1 : 0;
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

/* The directory a relative path starts from, found in the writable view as resolve.open_named
 * finds it (with the manager's rights: a lookup the caller made already; no symlink on the
 * way) and checked to be the caller's very directory (identity, read_base's): an fd, or -1. */
static long
write_base(int rw_root, const char *base, const struct stat *identity)
{
    long dir = scoped_openat2(rw_root, base, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
    struct stat st;
    if (dir >= 0 && (fstat((int)dir, &st) < 0 || st.st_dev != identity->st_dev || st.st_ino != identity->st_ino)) {
        close((int)dir);
        return -1;
    }
    return dir;
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

/* Serves a write-open (flags: the register's, masked to what open(2) keeps) of path_at from
 * dirfd, as the header says: ANSWER with *install the fd to install writable (or resp an
 * errno), GONE, or DECLINED. Without the GIL but for the change set's note. */
static int
serve_write(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int32_t dirfd,
            uint64_t path_at, uint64_t flags, uint64_t creation_mode, struct seccomp_notif_resp *resp, int *install,
            unsigned int *newfd_flags)
{
    uint64_t access = flags & O_ACCMODE;
    if (c->rw_root < 0 || !c->change_note || !__atomic_load_n(c->quiet, __ATOMIC_ACQUIRE))
        return DECLINED;
    if (flags & (O_PATH | SERVED_TMPFILE) || (access != O_WRONLY && access != O_RDWR) || (dirfd < 0 && dirfd != AT_FDCWD))
        return DECLINED;
    int exclusive = flags & O_CREAT && flags & O_EXCL; /* direct.py: created at once, no open first */
    struct acting a = {0};
    if (path_at == 0 || notif->pid <= 0 || !published_caller(c, notif->pid, &a))
        return DECLINED;
    /* Safe because: process_vm_readv writes only within our buffer; the bytes are opened as
     * read, whatever the caller's memory holds by then. */
    char path[PATH_MAX_BYTES + 1];
    ssize_t got = read_remote(notif->pid, path_at, path, SHORT_PATH);
    if (got == SHORT_PATH && !memchr(path, 0, SHORT_PATH)) {
        ssize_t more = read_remote(notif->pid, path_at + SHORT_PATH, path + SHORT_PATH, PATH_MAX_BYTES - SHORT_PATH);
        got = more < 0 ? got : got + more;
    }
    if (got <= 0 || !memchr(path, 0, (size_t)got) || path[0] == 0)
        return DECLINED;
    char base[PATH_MAX_BYTES + 1], whole[2 * PATH_MAX_BYTES + 2]; /* resolve.plain_name's text */
    struct stat identity = {0};
    int made = path[0] == '/' ? snprintf(whole, sizeof whole, "%s", path) : 0;
    if (path[0] != '/') {
        if (read_base(notif->pid, dirfd, base, sizeof base, &identity) < 0)
            return DECLINED;
        made = snprintf(whole, sizeof whole, base[strlen(base) - 1] == '/' ? "%s%s" : "%s/%s", base, path);
    }
    if (made <= 0 || (size_t)made >= sizeof whole || !plain_write_path(whole, (size_t)made))
        return DECLINED;
    uint64_t id = notif->id;
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0)
        return GONE;
    long dir = path[0] == '/' ? c->rw_root : write_base(c->rw_root, base, &identity);
    if (dir < 0)
        return DECLINED;
    struct open_how how = {.flags = (flags & ~(uint64_t)O_CREAT) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
                           .resolve = RESOLVE_NO_SYMLINKS | (path[0] == '/' ? RESOLVE_IN_ROOT : RESOLVE_BENEATH)};
    int status = flags & O_NONBLOCK ? -1 : (int)(flags & SERVED_STATUS), fd = -1, failed = ECANCELED, existed = 1;
    unsigned int mode = 0;
    if (act_switch(&a) == 0)
        failed = exclusive ? ENOENT : open_stat_calls((int)dir, path, &how, status, &fd, &mode);
    if (failed == ENOENT && flags & O_CREAT && !a.failed) {
        existed = 0;
        failed = create_as_caller((int)dir, path, &how, creation_mode, status, &fd, &mode, &a);
        if (failed == EEXIST && exclusive && found_regular((int)dir, path, how.resolve))
            failed = -EEXIST; /* answered: opening.py's probe finds that file and raises EEXIST */
    }
    act_restore(&a);
    if (dir != c->rw_root)
        close((int)dir);
    uint64_t *count = c->counts + SERVED_OUTCOMES * COUNTS_OPEN;
    if (failed == -EEXIST) {
        resp->error = -EEXIST;
        count[SERVED_FAILED]++;
        return ANSWER;
    }
    if (failed)
        return DECLINED;
    if (!S_ISREG(mode) && !S_ISFIFO(mode)) { /* unreachable in a nodev view: direct.py's general path */
        close(fd);
        return DECLINED;
    }
    if (S_ISREG(mode) && note_change(c->change_note, whole, (size_t)made, existed) < 0) {
        close(fd);
        resp->error = -EIO;
        count[SERVED_FAILED]++;
        return ANSWER;
    }
    *install = fd;
    *newfd_flags = (flags & O_CLOEXEC ? O_CLOEXEC : 0) | SERVED_WRITABLE;
    count[SERVED_DONE]++;
    return ANSWER;
}

/* Installs fd (taken, closed here) in the caller: read-only with ADDFD and SEND; writable
 * (SERVED_WRITABLE in newfd_flags) with ADDFD, our copy closed, then the answer (hp_install's
 * order). EMFILE answered EMFILE, ENOENT
 * (the caller gone) nothing, any other failure EIO, as the driver answers an internal error. 0,
 * or the errno of a failed answer. */
static int
install_served(int listener, uint64_t id, int fd, unsigned int newfd_flags)
{
    int writable = (newfd_flags & SERVED_WRITABLE) != 0;
    struct seccomp_notif_addfd add = {.id = id,
                                      .flags = writable ? 0 : SECCOMP_ADDFD_FLAG_SEND,
                                      .srcfd = (uint32_t)fd,
                                      .newfd_flags = newfd_flags & ~SERVED_WRITABLE};
    int number = ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add);
    int failed = number < 0 ? errno : 0;
    close(fd);
    if (failed == ENOENT || (!failed && !writable))
        return 0;
    struct seccomp_notif_resp resp = {.id = id, .val = failed ? 0 : number};
    if (failed)
        resp.error = failed == EMFILE ? -EMFILE : -EIO;
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT ? errno : 0;
}

#endif
