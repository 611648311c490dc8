/* A strict VM's stat of a path, and its read-only open (serve_open, below), served in the C
 * receive loop (hvfs/intercept/served_stat.py says when, and tests/test_served_stat.py holds
 * it to the Python path).
 *
 * stat, lstat, newfstatat and statx of an absolute path, or of a path relative to the cwd
 * or a dirfd, are answered here exactly as the Python path answers them (decoders/query.py,
 * then hvfs/manager/handlers/query.py handle_stat and handle_statx): the object opened
 * O_PATH in the VM's root (resolve.open_at: RESOLVE_IN_ROOT, or the base directory by its
 * text, checked to be the caller's very directory, then RESOLVE_BENEATH, and on EXDEV the
 * whole path in the root), ENOENT, ENOTDIR and ELOOP continued in the VM, another errno
 * answered, the stat written to the caller. Anything else is declined (returns DECLINED
 * before any answer, and Python serves the request from its start): flags
 * Python checks, a path that may name the VM's procfs or devpts (its text, or its base's,
 * has a component "proc" or "pts", which a kernel path's must: served_names.h), a malformed
 * or empty path, a caller whose credentials are not published and cannot be read here.
 *
 * Credentials: the worker's Python publishes (KnownCredentials, hvfs/intercept/credcache.py)
 * the threads whose credentials it read, each under a pidfd of the thread and the watch's
 * generation, with what acting_as switches for them (none for the manager's own), which
 * served_switch.h switches around the caller's lookups; the watch bumps its generation,
 * before it lets any call that may change credentials continue, in the shared state read
 * here. A thread in a stat cannot change its own credentials meanwhile: it is in this call.
 * A thread no worker has published is read and kept here (first_credentials.h), in Python's
 * order, for Python to adopt.
 *
 * Security: the path is read once, into our buffer, and only those bytes are resolved;
 * ID_VALID comes after every read of the caller (its path, its cwd or dirfd) and before the
 * call is answered (driver.py's order). A stat makes it once, just before its answer (the
 * result written, an errno, a continue), where nothing of the request outlives it but that
 * answer: an absolute path, or a relative one from the kept base (served_base.h), unaudited.
 * Between the reads and the check the manager only looks the path up, as the published
 * caller (an O_PATH open or a stat: nothing changes); a caller gone meanwhile, whose number
 * another thread may hold now, gets nothing. Where the reads leave something behind (a base
 * kept with its mount, an audit event) or a file is opened for the caller (serve_open),
 * ID_VALID comes right after the reads too, and again before the answer.
 */
#ifndef HVFS_SERVED_STAT_H
#define HVFS_SERVED_STAT_H

#include <linux/openat2.h>
#include <linux/stat.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "write_open.h" /* published_in, scoped_openat2, read_base; acting as the caller */
#include "served_names.h" /* names_kernel_mount: the paths Python treats by name */
#include "served_base.h"  /* base_directory: a relative path's base, kept for the serve call */

#ifndef AT_FDCWD
#define AT_FDCWD -100
#endif
#define STAT_STATX_SYNC_TYPE 0x6000
#define STAT_STATX_RESERVED 0x80000000u

/* RULE_SERVED's arg: from CALL_OPEN on serve_open's (an unlink, served_mutate.h's; a fd metadata change,
 * served_fdmeta.h's), from CALL_READLINK on serve_link's (served_link.h), from CALL_MKDIR on
 * serve_path_change's (served_pathmeta.h: a mkdir or rmdir, a metadata change by path) */
enum { CALL_STAT, CALL_LSTAT, CALL_NEWFSTATAT, CALL_STATX, CALL_OPEN, CALL_OPENAT, CALL_CREAT, CALL_UNLINK, CALL_UNLINKAT,
       CALL_FCHMOD, CALL_FCHOWN, CALL_UTIMENSAT, CALL_READLINK, CALL_READLINKAT, CALL_ACCESS, CALL_FACCESSAT,
       CALL_FACCESSAT2, CALL_MKDIR, CALL_MKDIRAT, CALL_RMDIR, CALL_CHMOD, CALL_FCHMODAT, CALL_CHOWN, CALL_LCHOWN,
       CALL_FCHOWNAT };
enum { SERVED_DONE, SERVED_CONTINUED, SERVED_FAILED, SERVED_OUTCOMES };
enum { COUNTS_STAT, COUNTS_STATX, COUNTS_OPEN, COUNTS_UNLINK, COUNTS_CHMOD, COUNTS_CHOWN, COUNTS_UTIMENS, COUNTS_READLINK, COUNTS_ACCESS,
       COUNTS_MKDIR, COUNTS_RMDIR, COUNTED_KINDS }; /* counts: [COUNTS_*][SERVED_*] */
enum { DECLINED = 0, ANSWER = 1, GONE = 2 };

struct dev_verdicts; /* served_dev.h */

struct stat_context {
    int vm_root;
    const volatile uint8_t *quiet; /* 1 while no hook, audit or fault rule must see a stat */
    const struct watch_state *watch;
    const uint64_t *bumps; /* hotpath.c serve's: the generation's part C bumps (EXEC_IF_LEADER), or NULL */
    struct published *known; /* written by first_credentials.h alone */
    size_t known_count;
    uint64_t *first_reads; /* after known's records: the credentials first_credentials.h kept, or NULL */
    int read_first;        /* first_credentials.h on (HVFS_FIRST_CREDENTIALS, served_stat.py) */
    uint64_t *counts; /* [COUNTS_*][SERVED_*] */
    int opens;        /* read-only opens too: no service judges what the VM reads */
    size_t quiet_length;
    struct served_note *note; /* served_audit.h: NULL where no audit may be served here */
    int rw_root;              /* served_write.h: the writable view, a nodev one; -1: no write served */
    PyObject *change_note;    /* the VM's ChangeSet.c_note (queue, note), borrowed from serve's argument */
    const char *own_mounts; /* served_fdmeta.h: the writable view's mount ids, own_count uint64 */
    size_t own_count;
    struct kept_base *kept;   /* served_base.h: a relative path's base kept open, or NULL */
    struct kept_base *write_kept; /* write_open.h write_base: one in the writable view, or NULL */
    int real_ids;             /* served_link.h's access: a caller whose real ids switch otherwise declined */
    int self_fds;             /* fd_change.h self_fds_open: this thread's /proc/thread-self/fd, or -1 */
    struct dev_verdicts *verdicts; /* served_dev.h: hp_serve's kept device verdicts, or NULL */
};

#include "first_credentials.h" /* first_credentials: a caller's read and kept here */

/* Whether the credentials of the notifying thread are published in this worker's records,
 * and still hold, or have been read and kept here now. */
static int
published_caller(const struct stat_context *c, int listener, const struct seccomp_notif *notif, struct acting *a)
{
    pid_t tid = (pid_t)notif->pid;
    return published_in(c->watch, c->bumps, c->known, c->known_count, tid, a) ||
           (c->read_first && first_credentials(c->watch, c->bumps, c->known, c->known_count, c->first_reads, listener, notif, a));
}

#include "served_audit.h"    /* an audited VM's: what is served, and its event */
#include "served_resolved.h" /* and the name of what Python does not name by its text */

#ifdef __x86_64__
/* arch.py _pack_stat_x86_64: the kernel's struct stat, built field by field, padding zero. */
static size_t
pack_stat(const struct stat *st, char *out)
{
    struct stat packed;
    memset(&packed, 0, sizeof packed);
    packed.st_dev = st->st_dev;
    packed.st_ino = st->st_ino;
    packed.st_nlink = st->st_nlink;
    packed.st_mode = st->st_mode;
    packed.st_uid = st->st_uid;
    packed.st_gid = st->st_gid;
    packed.st_rdev = st->st_rdev;
    packed.st_size = st->st_size;
    packed.st_blksize = st->st_blksize;
    packed.st_blocks = st->st_blocks;
    packed.st_atim = st->st_atim;
    packed.st_mtim = st->st_mtim;
    packed.st_ctim = st->st_ctim;
    memcpy(out, &packed, sizeof packed);
    return sizeof packed;
}
#endif

#include "served_quick.h" /* quick_stat_at: a stat of one name in one call */

/* resolve.open_at for an O_PATH open of the object: an fd, or -errno; -EACCES marked
 * foreign (ForeignBase, continued by the handler) through *foreign. Acting as the caller
 * (a) but for the base directory; -ECANCELED where the switch failed (a->failed); -EXDEV with
 * a->failed (declined) where base is the kept text (text_kept) and the lookup left it. quick:
 * NULL, or the stat wanted, made in one call where the name allows (quick->done, 0). */
static long
open_object_at(struct kept_base *kept, int text_kept, int root, const char *base, const struct stat *identity,
               const char *name, uint64_t flags, int *foreign, struct acting *a, struct quick_stat *quick)
{
    if (name[0] == '/') {
        if (act_switch(a) < 0)
            return -ECANCELED;
        long fd = scoped_openat2(root, name, flags, RESOLVE_IN_ROOT);
        return fd >= 0 ? fd : -errno;
    }
    long dir = base_directory(kept, root, base, identity, foreign); /* kept: served_base.h */
    if (dir < 0)
        return dir;
    int owned = !base_borrowed(kept, dir);
    if (act_switch(a) < 0) {
        if (owned)
            close((int)dir);
        return -ECANCELED;
    }
    long fd = quick && single_name(name) ? quick_stat_at((int)dir, name, quick) : 0;
    if (fd < 0 || (quick && quick->done)) {
        if (owned)
            close((int)dir);
        return fd;
    }
    fd = scoped_openat2((int)dir, name, flags, RESOLVE_BENEATH);
    int failed = fd < 0 ? errno : 0;
    if (owned)
        close((int)dir);
    if (fd >= 0 || failed != EXDEV)
        return fd >= 0 ? fd : -failed;
    if (text_kept) { /* the whole path is the base's text and the name: Python's, with the text it reads */
        a->failed = 1;
        return -EXDEV;
    }
    char whole[2 * PATH_MAX_BYTES + 2]; /* VmPath.__str__ */
    size_t length = strlen(base);
    while (length > 0 && base[length - 1] == '/')
        length--;
    snprintf(whole, sizeof whole, "%.*s/%s", (int)length, base, name);
    fd = scoped_openat2(root, whole, flags, RESOLVE_IN_ROOT);
    return fd >= 0 ? fd : -errno;
}

/* The path at path_at, read once, from dirfd (AT_FDCWD or an fd), resolved in the VM's root
 * as resolve.open_at resolves it, with open_flags (O_PATH, O_NOFOLLOW): ANSWER with *fd an
 * fd or -errno (*foreign: a base directory that is not the caller's, ForeignBase), or GONE,
 * or DECLINED (nothing answered) for what Python must look at: a path whose text (or its
 * base's) has a component declined, "proc" or "pts" (names_kernel_mount), malformed, empty;
 * a caller not published. */
static int
resolve_caller_path(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int32_t dirfd,
                    uint64_t path_at, uint64_t open_flags, const char *declined, long *fd, int *foreign,
                    struct acting *a, struct quick_stat *quick)
{
    int audited = 0;
    if (!__atomic_load_n(c->quiet, __ATOMIC_ACQUIRE)) { /* quiet[1]: audited, no hook (EventBus.quiet) */
        audited = c->note != NULL && c->quiet_length > 1 && __atomic_load_n(c->quiet + 1, __ATOMIC_ACQUIRE);
        if (!audited)
            return DECLINED;
    }
    if (c->vm_root < 0 || (dirfd < 0 && dirfd != AT_FDCWD) || path_at == 0 || notif->pid <= 0 ||
        !published_caller(c, listener, notif, a) || (c->real_ids && !a->access_alike))
        return DECLINED;
    /* Safe because: process_vm_readv writes only within our buffer; the bytes are resolved
     * as read, whatever the caller's memory holds by then. */
    char path[PATH_MAX_BYTES + 1];
    ssize_t got = read_remote(notif->pid, path_at, path, SHORT_PATH);
    if (got > 0 && got == SHORT_PATH && !memchr(path, 0, SHORT_PATH)) {
        ssize_t more = read_remote(notif->pid, path_at + SHORT_PATH, path + SHORT_PATH, PATH_MAX_BYTES - SHORT_PATH);
        got = more < 0 ? got : got + more;
    }
    if (got <= 0 || !memchr(path, 0, (size_t)got) || path[0] == 0)
        return DECLINED; /* EFAULT, ENAMETOOLONG, ENOENT: the decoder's answers */
    if (names_kernel_mount(path, declined))
        return DECLINED;
    char base[PATH_MAX_BYTES + 1] = "/";
    struct stat identity = {0};
    int kept = 0; /* the base's text that of the kept directory (served_base.h), not read again */
    uint64_t mount = 0; /* the base's mount, for the kept directory (kept_base_mounted) */
    if (path[0] != '/') {
        kept = !audited && kept_base_of(c->kept, notif->pid, dirfd, base, &identity);
        if (!kept && read_base_seen(notif->pid, dirfd, base, sizeof base, &identity, &mount) < 0)
            return DECLINED;
        if (names_kernel_mount(base, declined))
            return DECLINED;
        mount = !audited && c->kept ? mount : 0;
    }
    int plain = audited && plain_text(c->note, path, base, declined[0] != 0) == 0;
    if (audited && !plain && !c->note->by_answer)
        return DECLINED;
    uint64_t id = notif->id;
    if (quick && !audited && (path[0] == '/' || kept)) /* nothing kept from the reads: late_check */
        quick->check_late = 1;
    else if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0)
        return GONE;
    if (audited) { /* found as the audited Python path finds it, or Python's (it names the rest otherwise) */
        c->note->audited = 1, c->note->pid = notif->pid, c->note->answered = 0;
        *fd = plain ? open_plain_at(c->kept, c->vm_root, base, &identity, path, open_flags, a) : NOT_NAMED;
        if (*fd >= 0)
            return ANSWER;
        act_restore(a); /* the dispatch names a failed lookup as the manager, after the handler */
        if (*fd == NOT_NAMED && c->note->by_answer) { /* opening.py _found: then _open */
            *fd = open_object_at(NULL, 0, c->vm_root, base, &identity, path, open_flags, foreign, a, NULL);
            if (a->failed)
                return DECLINED;
            c->note->answered = 1;
            if (*fd >= 0)
                return ANSWER;
            act_restore(a);
        }
        return *fd != NOT_NAMED && resolved_name(c, base, &identity, path) == 0 ? ANSWER : DECLINED;
    }
    *fd = open_object_at(c->kept, kept, c->vm_root, base, &identity, path, open_flags, foreign, a, quick);
    if (mount)
        kept_base_mounted(c->kept, base, &identity, mount);
    return a->failed ? DECLINED : ANSWER;
}

/* Whether a failed lookup is left to the kernel on the boot view (handlers/query.py and
 * opening.py: RETRY_IN_VM, and a foreign base), counted; else resp answers its errno. */
static void
answer_failed_lookup(long failed, int foreign, uint64_t *count, struct seccomp_notif_resp *resp)
{
    if (foreign || failed == -ENOENT || failed == -ENOTDIR || failed == -ELOOP) {
        resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        count[SERVED_CONTINUED]++;
    } else {
        resp->error = (int32_t)failed;
        count[SERVED_FAILED]++;
    }
}

/* Whether the caller is still the one whose memory was read, where resolve_caller_path left
 * that ID_VALID for the answer (quick->check_late): an answer other than the stat written
 * (whose ID_VALID comes before the write) makes it first. */
static int
late_check(const struct quick_stat *quick, int listener, const struct seccomp_notif *notif)
{
    uint64_t id = notif->id;
    return !quick->check_late || ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

/* Serves one notification of a stat-family call (call: CALL_*): ANSWER with resp filled
 * (and *written set where the result was written to the caller), GONE when the caller is
 * gone (nothing to answer), DECLINED when Python must serve it. Without the GIL. */
static int
serve_stat(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
           struct seccomp_notif_resp *resp, int *written)
{
#ifndef __x86_64__
    return DECLINED; /* the struct stat layout is packed in C for x86_64 only */
#else
    const __u64 *a = notif->data.args;
    uint64_t path_at, out_at, flags = 0, mask = 0;
    int32_t dirfd = AT_FDCWD;
    if (call == CALL_STAT || call == CALL_LSTAT) {
        path_at = a[0], out_at = a[1];
        flags = call == CALL_LSTAT ? AT_SYMLINK_NOFOLLOW : 0;
    } else if (call == CALL_NEWFSTATAT) {
        dirfd = (int32_t)a[0], path_at = a[1], out_at = a[2], flags = a[3] & UINT32_MAX;
        if (flags & ~(uint64_t)(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT))
            return DECLINED;
    } else {
        dirfd = (int32_t)a[0], path_at = a[1], flags = a[2] & UINT32_MAX, mask = a[3] & UINT32_MAX, out_at = a[4];
        if (flags & ~(uint64_t)(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | STAT_STATX_SYNC_TYPE) ||
            (flags & STAT_STATX_SYNC_TYPE) == STAT_STATX_SYNC_TYPE || mask & STAT_STATX_RESERVED)
            return DECLINED;
    }
    int foreign = 0, statx_call = call == CALL_STATX;
    long fd = -EBADF;
    uint64_t open_flags = O_PATH | (flags & AT_SYMLINK_NOFOLLOW ? O_NOFOLLOW : 0);
    struct acting as_caller = {0};
    struct quick_stat quick = {.statx_call = statx_call, .flags = flags, .mask = mask};
    int got = resolve_caller_path(c, listener, notif, dirfd, path_at, open_flags, "", &fd, &foreign, &as_caller, &quick);
    act_restore(&as_caller); /* the stat of an fd checks nothing of its caller */
    if (got != ANSWER)
        return got;
    uint64_t *count = c->counts + SERVED_OUTCOMES * (statx_call ? COUNTS_STATX : COUNTS_STAT);
    if (fd < 0) {
        if (!late_check(&quick, listener, notif))
            return GONE;
        answer_failed_lookup(fd, foreign, count, resp);
        note_answered(c, statx_call ? AUDIT_STATX : AUDIT_STAT, flags, resp);
        return ANSWER;
    }
    char *out = quick.out; /* quick.done: the answer already, quick.size bytes */
    size_t size = quick.size;
    int failed = 0;
    if (!quick.done) {
        if (statx_call) {
            memset(out, 0, sizeof quick.out);
            unsigned int at = AT_EMPTY_PATH | (unsigned int)(flags & ~(uint64_t)AT_SYMLINK_NOFOLLOW);
            failed = syscall(SYS_statx, (int)fd, "", at, (unsigned int)mask, (struct statx *)out) < 0 ? errno : 0;
            size = sizeof quick.out;
        } else {
            struct stat st;
            failed = fstat((int)fd, &st) < 0 ? errno : 0;
            size = failed ? 0 : pack_stat(&st, out);
        }
        close((int)fd);
    }
    if (failed && c->note && c->note->audited)
        return DECLINED; /* an errno: its event is Python's */
    if (failed) {
        if (!late_check(&quick, listener, notif))
            return GONE;
        resp->error = -failed;
        count[SERVED_FAILED]++;
        return ANSWER;
    }
    if (c->note && c->note->audited) /* the handler's answer: recorded even if the caller is gone now */
        c->note->recordable = 1, c->note->kind = statx_call ? AUDIT_STATX : AUDIT_STAT, c->note->flags = flags;
    uint64_t id = notif->id;
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0)
        return GONE;
    /* Safe because: the kernel writes only within the caller's writable mappings and
     * reads only size bytes of our buffer. */
    struct iovec local = {.iov_base = out, .iov_len = size};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)out_at, .iov_len = size};
    ssize_t put = process_vm_writev(notif->pid, &local, 1, &remote, 1, 0);
    if (put < 0 && errno == ESRCH)
        return GONE;
    count[SERVED_DONE]++; /* the manager's count: the driver's EFAULT below comes after it */
    if (put != (ssize_t)size)
        resp->error = -EFAULT;
    else
        *written = 1;
    return ANSWER;
#endif
}

#include "served_write.h"  /* serve_write: a write-open, and install_served */
#include "served_pathmeta.h" /* serve_path_change: mkdir, rmdir, a change by path */
#include "served_mutate.h" /* serve_unlink */
#include "served_fdmeta.h" /* serve_fdmeta */
#include "served_link.h"   /* serve_link: readlink and access */

/* Serves a read-only open or openat (call: CALL_OPEN, CALL_OPENAT) as opening.py's
 * _open_readable does: the object found O_PATH in the VM's root, a regular file or a
 * directory opened again through its magic link with the caller's flags, to be installed
 * in the caller with ADDFD and SEND (*install: the fd, *newfd_flags); anything else is
 * continued on the boot view, a failed lookup as answer_failed_lookup says. O_PATH opens,
 * writes, paths that may name the caller's own files (/proc, /dev) are declined.
 *
 * An open with O_DIRECTORY is made at once with the caller's flags, no probe: the kernel
 * refuses anything but a directory (ENOTDIR, continued) before it opens it, so a FIFO is
 * never waited on nor its writers woken, and no device's driver is called; a symlink at the
 * end is followed as the probe follows it; the lookup, as the caller from the VM's root, and
 * the read access checked are the probe's and the open again's. Not with O_NOFOLLOW, which
 * the file would keep (F_GETFL) where the open again through the magic link drops it, as
 * Python's does. Any other open keeps the probe: an O_RDONLY open of a FIFO waits for a
 * writer, and even with O_NONBLOCK it wakes the writers waiting in theirs. */
static int
serve_open(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
           struct seccomp_notif_resp *resp, int *install, unsigned int *newfd_flags)
{
    if (call == CALL_UTIMENSAT && notif->data.args[1] != 0)
        return serve_pathmeta(c, listener, notif, call, resp);
    if (call >= CALL_FCHMOD)
        return serve_fdmeta(c, listener, notif, call, resp);
    if (call >= CALL_UNLINK)
        return serve_unlink(c, listener, notif, call, resp);
    const __u64 *a = notif->data.args;
    int32_t dirfd = call != CALL_OPENAT ? AT_FDCWD : (int32_t)a[0];
    uint64_t path_at = call != CALL_OPENAT ? a[0] : a[1];
    uint64_t flags = call == CALL_CREAT ? O_CREAT | O_WRONLY | O_TRUNC /* decoders/opening.py CREAT_FLAGS */
                                        : (call == CALL_OPEN ? a[1] : a[2]) & UINT32_MAX & SERVED_VALID_OPEN;
    if (flags & SERVED_WRITE && c->note) /* an audited one's event: the decoder's flags (CREAT_FLAGS for creat) */
        c->note->flags = call == CALL_CREAT ? O_CREAT | O_WRONLY | O_TRUNC : (call == CALL_OPEN ? a[1] : a[2]) & UINT32_MAX;
    if (flags & SERVED_WRITE)
        return serve_write(c, listener, notif, dirfd, path_at, flags, a[call == CALL_CREAT ? 1 : call == CALL_OPEN ? 2 : 3],
                           resp, install, newfd_flags);
    if (!c->opens || flags & O_PATH)
        return DECLINED;
    int foreign = 0, directory = (flags & (O_DIRECTORY | O_NOFOLLOW)) == O_DIRECTORY;
    long probe = -EBADF;
    struct acting as_caller = {0}; /* kept for the open again: it checks the caller's access */
    if (c->note)
        c->note->by_answer = 1; /* opening.py _found: its usual resolution where the text finds nothing */
    int got = resolve_caller_path(c, listener, notif, dirfd, path_at, directory ? flags : O_PATH | (flags & O_NOFOLLOW),
                                  "dev", &probe, &foreign, &as_caller, NULL);
    if (got != ANSWER || probe < 0 || directory)
        act_restore(&as_caller);
    if (got != ANSWER)
        return got;
    uint64_t *count = c->counts + SERVED_OUTCOMES * COUNTS_OPEN;
    uint64_t asked = (call == CALL_OPEN ? a[1] : a[2]) & UINT32_MAX; /* the decoder's flags, an event's */
    if (probe < 0) {
        if (directory && probe == -ENOTDIR && c->note && c->note->audited)
            return DECLINED; /* perhaps a file: Python's O_PATH probe finds it, and answers ENOTDIR */
        answer_failed_lookup(probe, foreign, count, resp);
        note_answered(c, AUDIT_OPEN, asked, resp);
        return ANSWER;
    }
    struct stat st;
    int audited = c->note && c->note->audited;
    if (!directory) {
        if (fstat((int)probe, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
            act_restore(&as_caller);
            close((int)probe);
            if (audited)
                return DECLINED; /* continued: its event is Python's */ /* a FIFO, a socket, a device: the kernel opens it (an fstat failure: EIO there) */
            resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
            count[SERVED_CONTINUED]++;
            return ANSWER;
        }
        char again[64]; /* the probe's magic link: the very object found, with the caller's flags */
        snprintf(again, sizeof again, c->self_fds >= 0 ? "%d" : "/proc/self/fd/%d", (int)probe);
        int opened = openat(c->self_fds >= 0 ? c->self_fds : AT_FDCWD, again,
                            (int)((flags & ~(uint64_t)O_NOFOLLOW) | O_CLOEXEC));
        int failed = opened < 0 ? errno : 0;
        act_restore(&as_caller);
        close((int)probe);
        if (failed && audited)
            return DECLINED;
        if (failed) {
            resp->error = -failed;
            count[SERVED_FAILED]++;
            return ANSWER;
        }
        probe = opened;
    }
    if (audited && c->note->answered) { /* served.py: an open's Fd named by the kernel's name of it */
        c->note->length = fd_vm_path_in(c->self_fds, (int)probe, c->note->name, PATH_MAX_BYTES + 1);
        if (c->note->length == 0 || !roots_named(c)) { /* Python names it otherwise: its event is Python's */
            close((int)probe);
            return DECLINED;
        }
    }
    *install = (int)probe;
    *newfd_flags = flags & O_CLOEXEC ? O_CLOEXEC : 0;
    if (audited) /* the decoder's flags: the register's low 32 bits, as they are */
        c->note->recordable = 1, c->note->kind = AUDIT_OPEN, c->note->flags = (call == CALL_OPEN ? a[1] : a[2]) & UINT32_MAX;
    count[SERVED_DONE]++;
    return ANSWER;
}

/* The stat context from serve's stat argument: None (nothing served here), or (vm_root,
 * quiet, watch, known, counts, opens[, audit[, writes[, keep_bases[, read_first]]]]):
 * hvfs/intercept/served_stat.py ServedStat.argument; audit (served_note_of) into note; writes
 * None or (rw_root, note[, own mounts: packed uint64, served_fdmeta.h's]): served_write.h's;
 * keep_bases: served_base.h's keeper wanted (and write_open.h write_base's); read_first: first_credentials.h's reads wanted
 * (known, writable, then read and kept in). 1 when served, 0 when not, -1 with an
 * exception. Views (4), the keeper and the fd table (self_fds) are released by release_stat. */
static int
stat_context_of(PyObject *argument, struct stat_context *c, Py_buffer views[4], struct served_note *note)
{
    c->self_fds = -1;
    if (argument == Py_None)
        return 0;
    PyObject *audit = Py_None, *writes = Py_None;
    int keep_bases = 0;
    if (!PyArg_ParseTuple(argument, "iy*y*w*w*p|OOpp", &c->vm_root, &views[0], &views[1], &views[2], &views[3], &c->opens,
                          &audit, &writes, &keep_bases, &c->read_first))
        return -1;
    c->rw_root = -1;
    const char *own = NULL;
    Py_ssize_t own_size = 0;
    if (writes != Py_None && !PyArg_ParseTuple(writes, "iO|y#", &c->rw_root, &c->change_note, &own, &own_size))
        return -1;
    c->own_mounts = own, c->own_count = (size_t)own_size / sizeof(uint64_t);
    if (audit != Py_None) {
        if (served_note_of(audit, note) < 0)
            return -1;
        c->note = note;
    }
    c->quiet_length = (size_t)views[0].len;
    if (views[0].len < 1 || views[1].len < (Py_ssize_t)sizeof(struct watch_state) ||
        views[3].len < (Py_ssize_t)(COUNTED_KINDS * SERVED_OUTCOMES * sizeof(uint64_t))) {
        PyErr_SetString(PyExc_ValueError, "stat: a buffer is too small");
        return -1;
    }
    c->quiet = views[0].buf, c->watch = views[1].buf, c->known = views[2].buf, c->counts = views[3].buf;
    c->known_count = (size_t)views[2].len / sizeof(struct published);
    if ((size_t)views[2].len >= c->known_count * sizeof(struct published) + sizeof(uint64_t))
        c->first_reads = (uint64_t *)(c->known + c->known_count); /* 8-aligned: the records are */
    c->kept = base_keeper(keep_bases); /* none without memory: every base opened anew */
    c->write_kept = base_keeper(keep_bases && c->rw_root >= 0);
    c->self_fds = self_fds_open();     /* none: the links are walked from /proc/self */
    return 1;
}

static void
release_stat(struct stat_context *c, Py_buffer views[4])
{
    base_keeper_release(c->kept);
    base_keeper_release(c->write_kept);
    c->kept = c->write_kept = NULL;
    if (c->self_fds >= 0)
        close(c->self_fds);
    c->self_fds = -1;
    for (int i = 0; i < 4; i++)
        if (views[i].obj)
            PyBuffer_Release(&views[i]);
}

#endif
