/* A quiet or audited VM's mkdir and rmdir of a plain path, served in the C receive loop (hotpath.c hands
 * CALL_MKDIR, CALL_MKDIRAT and CALL_RMDIR here, served_mutate.h's serve_unlink an unlinkat with
 * AT_REMOVEDIR; hvfs/intercept/served_stat.py says when, and tests/test_served_dirs.py holds it
 * to the Python path).
 *
 * What is served is what hvfs/manager/handlers/names.py handle_mkdir and handle_rmdir serve
 * (dir_named.h): a path served_write.h's plain_write_path takes, as serve_unlink takes it, its
 * parent found with no symlink on the way, the directory made or removed there acting as the
 * caller (its umask too, for a mkdir).
 *
 * The change set: what changes.after notes for a Mkdir (the name's text, it did not exist, it
 * exists: a mkdir that succeeded found nothing there) or an Rmdir (it existed, exists no more),
 * before the answer (served_noted.h answer_noted, queued without the GIL).
 *
 * An audited VM with no hook is served so too, its Mkdir or Rmdir event recorded (served_audit.h)
 * under the name Python's handler notes (names.py _parent: the parent found by its text with no
 * symlink on the way, as here, and the last component: the path's whole text, as served_mutate.h
 * names an unlink), "ok", EEXIST or EIO as answered here.
 *
 * Declined before any answer, so that Python serves the request from its start: a VM with a
 * hook (quiet[0] and quiet[1] off), no writable view, a path that is not plain or a base Python
 * would find otherwise, a caller
 * whose credentials are not published, and every failure (ELOOP: a symlink on the way; ENOENT,
 * ENOTEMPTY, EACCES, EROFS ...) but a mkdir's EEXIST: a failed mkdirat or rmdir changes nothing,
 * and Python answers it. EEXIST (GNU tar's mkdir of every directory on the way of a name whose
 * open found none) is answered here: mkdirat's own answer in the parent found with no symlink on
 * the way, the one Python's resolve.parent finds too, as the caller, so Python's os.mkdir there
 * answers it alike; nothing is noted, as changes.after notes no failed call.
 */
#ifndef HVFS_SERVED_DIRS_H
#define HVFS_SERVED_DIRS_H

#include "dir_named.h"    /* dir_named: the act itself */
#include "served_noted.h" /* answer_noted: its note and answer */

/* Serves a mkdir (remove 0, mode: the caller's) or rmdir (remove 1) of path_at from dirfd as the
 * header says: ANSWER (resp: 0, or EIO where the change set's note fell back on Python and
 * raised), GONE, or DECLINED. Without the GIL. */
static int
serve_dir_at(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int32_t dirfd,
             uint64_t path_at, int remove, uint64_t mode, struct seccomp_notif_resp *resp)
{
    if (dirfd < 0 && dirfd != AT_FDCWD)
        return DECLINED;
    struct acting a;
    struct write_path p;
    int made = write_request(c, listener, notif, dirfd, path_at, &a, &p);
    if (made <= 0)
        return made < 0 ? GONE : DECLINED;
    int failed = dir_named(c->rw_root, c->write_kept, p.path, p.base, &p.identity, remove, mode, &a);
    uint64_t *count = c->counts + SERVED_OUTCOMES * (remove ? COUNTS_RMDIR : COUNTS_MKDIR);
    int kind = remove ? AUDIT_RMDIR : AUDIT_MKDIR;
    if (failed == EEXIST && !remove) { /* the mkdirat's own answer, in the parent Python finds too */
        resp->error = -EEXIST;
        count[SERVED_FAILED]++;
        note_served(c, kind, p.whole, (size_t)made, EEXIST);
        return ANSWER;
    }
    if (failed)
        return DECLINED;
    int answered = answer_noted(c, p.whole, (size_t)made, remove, !remove, count, resp);
    note_served(c, kind, p.whole, (size_t)made, -resp->error); /* 0, or the EIO of a note that raised */
    return answered;
}

/* Serves a mkdir, mkdirat or rmdir (call: CALL_MKDIR ...) as serve_dir_at says. */
static int
serve_dir(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
          struct seccomp_notif_resp *resp)
{
    const __u64 *args = notif->data.args;
    if (call == CALL_MKDIRAT)
        return serve_dir_at(c, listener, notif, (int32_t)args[0], args[1], 0, args[2], resp);
    return serve_dir_at(c, listener, notif, AT_FDCWD, args[0], call == CALL_RMDIR, args[1], resp);
}

#endif
