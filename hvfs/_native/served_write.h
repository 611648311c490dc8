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
 * An audited VM with no hook (quiet[1]) is served so too, its event (the request's text, the
 * decoder's flags, "ok" or the errno answered) recorded by served_audit.h before the answer.
 *
 * Declined before any answer, so that Python serves the request from its start: a VM with a
 * hook (quiet[0] and quiet[1] off); O_PATH, O_TMPFILE, a
 * read-only access mode (O_CREAT or O_TRUNC alone: opening.py's probe);
 * a path (with its base) naming "proc", "pts" or "dev" (kernel_paths, /dev's devices, magic
 * links to the caller's own files; served_dev.h continues a character device under /dev
 * among them, as Python would), a path that is not plain, a base Python would find
 * otherwise (ForeignBase, a deleted or foreign directory); a caller whose credentials are not
 * published; and every failed open: ENOENT (without O_CREAT, or a missing directory), EEXIST
 * (a file made meanwhile; for O_EXCL, anything but a regular file there: a symlink, a
 * directory), ELOOP (a symlink on the way: named by a readlink there), any errno (Python's
 * general path answers it). A failed openat2 changes nothing, bar an O_TRUNC open
 * failing after its truncation, or a creation whose fstat or F_SETFL fails, which Python's
 * own direct path hands to its general path alike.
 *
 * The change set: noted before the file is installed and the call answered, queued without
 * the GIL in the VM's note queue (write_open.h note_change, note_queue.h), which the VM's
 * ChangeSet drains under its lock before every operation that reads or changes it; where the
 * queue is full, by ChangeSet.note with the GIL taken here, which drains it first. So no
 * reader of the change set (hvfs diff, a snapshot, the manager's stop) sees it without every
 * change answered before it, and a note or a move made in Python after the answer applies
 * after this one: the order the dispatch keeps (changes.record, then the driver's answer).
 *
 * The answer: ADDFD without SEND, C's copy closed, then the answer (hp_install's order for a
 * writable file: the VM's close must be the last, or an exec right after writing fails with
 * ETXTBSY).
 */
/* The path read, the open itself and the note: write_open.h, shared with the ptrace driver's
 * tracer loop (tracer_write.h). */
#ifndef HVFS_SERVED_WRITE_H
#define HVFS_SERVED_WRITE_H

#include "served_dev.h" /* serve_dev_write: a write-open of a device under /dev, continued */

#define SERVED_WRITABLE (1u << 31) /* in *newfd_flags, never the kernel's: install_served's order */

/* A mutation's path as read once from the caller (write_open.h read_write_path's buffers). */
struct write_path {
    char path[PATH_MAX_BYTES + 1], base[PATH_MAX_BYTES + 1], whole[2 * PATH_MAX_BYTES + 2];
    struct stat identity;
    int by_text; /* 1: read whole, declined by its text alone (read_write_path's -2): served_dev.h's */
};

/* What a mutation served here (serve_write, served_mutate.h's serve_unlink, served_dirs.h's
 * and served_pathmeta.h's) needs before it acts: a quiet VM with a writable view, the
 * caller's published credentials (*a), its path read once (*p), ID_VALID after; *a and *p
 * start empty (no credentials, no identity: only a relative path has one; not by text). The
 * whole text's length (> 0) to go on; 0 (DECLINED) or -GONE otherwise. */
static int
write_request(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int32_t dirfd,
              uint64_t path_at, struct acting *a, struct write_path *p)
{
    *a = (struct acting){0};
    p->identity = (struct stat){0};
    p->by_text = 0;
    if (c->rw_root < 0 || !c->change_note || path_at == 0 || notif->pid <= 0 || !served_hearing(c, notif->pid))
        return DECLINED;
    if (!published_caller(c, listener, notif, a))
        return DECLINED;
    int made = read_write_path(notif->pid, dirfd, path_at, p->path, p->base, p->whole, &p->identity);
    p->by_text = made == -2;
    if (made <= 0)
        return DECLINED;
    uint64_t id = notif->id;
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0 ? -GONE : made;
}

/* Serves a write-open (flags: the register's, masked to what open(2) keeps) of path_at from
 * dirfd, as the header says: ANSWER with *install the fd to install writable (or resp an
 * errno), GONE, or DECLINED. Without the GIL (the change set's note queued: note_change). */
static int
serve_write(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int32_t dirfd,
            uint64_t path_at, uint64_t flags, uint64_t creation_mode, struct seccomp_notif_resp *resp, int *install,
            unsigned int *newfd_flags)
{
    uint64_t access = flags & O_ACCMODE;
    if (flags & (O_PATH | SERVED_TMPFILE) || (access != O_WRONLY && access != O_RDWR) || (dirfd < 0 && dirfd != AT_FDCWD))
        return DECLINED;
    struct acting a;
    struct write_path p;
    int made = write_request(c, listener, notif, dirfd, path_at, &a, &p), fd = -1, existed;
    if (made == DECLINED && p.by_text) /* a device under /dev, continued there */
        return serve_dev_write(c, listener, notif, p.path, flags, &a, resp);
    if (made <= 0)
        return made < 0 ? GONE : DECLINED;
    int opened = open_writable(c->rw_root, c->write_kept, p.path, p.base, &p.identity, flags, creation_mode, &a, &fd, &existed);
    uint64_t *count = c->counts + SERVED_OUTCOMES * COUNTS_OPEN;
    if (opened == -EEXIST) {
        resp->error = -EEXIST;
        count[SERVED_FAILED]++;
        note_served(c, AUDIT_OPEN, p.whole, (size_t)made, EEXIST);
        return ANSWER;
    }
    if (opened < 0)
        return DECLINED;
    if (existed >= 0 && note_change(c->change_note, p.whole, (size_t)made, existed, 1) < 0) {
        close(fd);
        resp->error = -EIO;
        count[SERVED_FAILED]++;
        note_served(c, AUDIT_OPEN, p.whole, (size_t)made, EIO);
        return ANSWER;
    }
    note_served(c, AUDIT_OPEN, p.whole, (size_t)made, 0);
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
