/* A quiet or audited VM's metadata change by a plain path, served in the C receive loop: chmod, fchmodat,
 * chown, lchown, fchownat (flags 0 or AT_SYMLINK_NOFOLLOW) and utimensat with a path (the same
 * flags); hotpath.c hands CALL_MKDIR and after to serve_path_change, served_stat.h's serve_open
 * a utimensat with a path (hvfs/intercept/served_stat.py says when, and
 * tests/test_served_pathmeta.py holds it to the Python path).
 *
 * What is served is what decoders/attrs.py and handlers/attrs.py serve for a path (path_meta.h:
 * change_named): the mode masked to 07777, the ids to 32 bits, the times passed as read (read
 * before the path, the decoder's order; the kernel checks them: EINVAL), the object opened
 * with no symlink on the way, as the caller, and changed through its fd.
 *
 * The change set: the object noted by the path's text (the VM path /proc/self/fd reads for it,
 * as changes._object notes it: no symlink on the way), existed and exists, before the answer
 * (served_noted.h answer_noted, queued without the GIL).
 *
 * An audited VM with no hook is served so too, its Chmod, Chown or Utimens event recorded
 * (served_audit.h) under the name Python's handler notes (attrs.py _noted_object: the object
 * found by its text with no symlink on the way, as here: the path's whole text), "ok", or EIO
 * where the note raised.
 *
 * Declined before any answer, so that Python serves the request from its start: a VM with a
 * hook (quiet[0] and quiet[1] off), no writable view, AT_EMPTY_PATH or another flag, times that
 * cannot be read, a path that is not plain or
 * a base Python would find otherwise, a caller whose credentials are not published, a device
 * node, a symlink's mode, and every failure (ELOOP: a symlink on the way; ENOENT, EPERM,
 * EACCES, EROFS, EINVAL ...): a failed change changes nothing, and Python answers it.
 */
#ifndef HVFS_SERVED_PATHMETA_H
#define HVFS_SERVED_PATHMETA_H

#include "path_meta.h"   /* change_named: the change itself */
#include "served_dirs.h" /* serve_dir: mkdir and rmdir */

/* Serves one change (call: CALL_CHMOD ..., or CALL_UTIMENSAT with a path) as the header says:
 * ANSWER (resp: 0, or EIO where the change set's note fell back on Python and raised), GONE,
 * or DECLINED. Without the GIL. */
static int
serve_pathmeta(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
               struct seccomp_notif_resp *resp)
{
    const __u64 *args = notif->data.args;
    int at = call == CALL_FCHMODAT || call == CALL_FCHOWNAT || call == CALL_UTIMENSAT;
    int32_t dirfd = at ? (int32_t)args[0] : AT_FDCWD;
    uint64_t path_at = at ? args[1] : args[0];
    const __u64 *rest = args + (at ? 2 : 1); /* the mode, the ids, or the times */
    uint64_t flags = call == CALL_FCHOWNAT ? args[4] & UINT32_MAX
                     : call == CALL_UTIMENSAT ? args[3] & UINT32_MAX
                     : call == CALL_LCHOWN    ? AT_SYMLINK_NOFOLLOW
                                              : 0;
    if ((flags & ~(uint64_t)AT_SYMLINK_NOFOLLOW) || (dirfd < 0 && dirfd != AT_FDCWD))
        return DECLINED;
    int kind = call == CALL_UTIMENSAT                     ? CHANGE_TIMES
               : call == CALL_CHMOD || call == CALL_FCHMODAT ? CHANGE_MODE
                                                             : CHANGE_OWNER;
    struct timespec times[2];
    /* Safe because: process_vm_readv writes only within our buffer; the times are used as read. */
    if (kind == CHANGE_TIMES && rest[0] &&
        read_remote(notif->pid, rest[0], (char *)times, sizeof times) != (ssize_t)sizeof times)
        return DECLINED;
    uint64_t value = kind == CHANGE_OWNER ? (rest[0] & UINT32_MAX) | (rest[1] << 32) : rest[0];
    struct acting a;
    struct write_path p;
    int made = write_request(c, listener, notif, dirfd, path_at, &a, &p);
    if (made <= 0)
        return made < 0 ? GONE : DECLINED;
    if (change_named(c->rw_root, c->write_kept, p.path, p.base, &p.identity, !(flags & AT_SYMLINK_NOFOLLOW), kind, value,
                     kind == CHANGE_TIMES && rest[0] ? times : NULL, c->self_fds, &a) != 0)
        return DECLINED;
    /* CHANGE_* and the counts' and the audit's kinds are in one order: mode, owner, times */
    int answered = answer_noted(c, p.whole, (size_t)made, 1, 1, c->counts + SERVED_OUTCOMES * (COUNTS_CHMOD + kind), resp);
    note_served(c, AUDIT_CHMOD + kind, p.whole, (size_t)made, -resp->error); /* 0, or the EIO of a note that raised */
    return answered;
}

/* Serves a call from CALL_MKDIR on: a mkdir or rmdir (serve_dir), or a change by path. */
static int
serve_path_change(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
                  struct seccomp_notif_resp *resp)
{
    return call >= CALL_CHMOD ? serve_pathmeta(c, listener, notif, call, resp)
                              : serve_dir(c, listener, notif, call, resp);
}

#endif
