/* A VM's unlink of a plain path, served in the C receive loop (served_stat.h's serve_open
 * hands CALL_UNLINK and CALL_UNLINKAT here; hvfs/intercept/served_stat.py says when, and
 * tests/test_served_mutate.py holds it to the Python path).
 *
 * What is served is what hvfs/manager/handlers/names.py handle_unlink serves: the name's
 * parent found in the VM's writable view (resolve.parent_named), the last component unlinked
 * there (unlinkat, no AT_REMOVEDIR), acting as the caller, so that the kernel makes every
 * check the caller's own unlink would (search and write on the directory, the sticky bit,
 * CAP_FOWNER, a read-only volume). Only a path served_write.h's plain_write_path takes (a
 * relative one's after its base's, read as read_base reads it): absolute, plain, no kernel
 * path, no last "/", so that its text is its VM path and its last component a name; its
 * parent opened with no symlink on the way (an absolute path RESOLVE_IN_ROOT from the writable
 * view's root; a relative one RESOLVE_BENEATH its base, found with the manager's rights and
 * checked to be the caller's very directory, as write_base finds it).
 *
 * The change set: a removed name noted (its text, it existed, it exists no more) as
 * changes.after notes an Unlink, before the answer (write_open.h note_change: queued without
 * the GIL, as served_write.h's "The change set" says).
 *
 * An audited VM with no hook is served so too, its event recorded (served_audit.h).
 *
 * Declined before any answer, so that Python serves the request from its start: a VM with a
 * hook (quiet[0] and quiet[1] off), no writable view, unlinkat with any other flag than
 * AT_REMOVEDIR (an Rmdir: served_dirs.h's serve_dir_at), a path that is not plain, a base Python would find otherwise, a caller whose
 * credentials are not published, and every failure (a symlink on the way: ELOOP; ENOENT,
 * EACCES, EISDIR, EROFS ...): a failed unlinkat changes nothing, and Python answers it.
 */
#ifndef HVFS_SERVED_MUTATE_H
#define HVFS_SERVED_MUTATE_H

#include "unlink_named.h" /* unlink_named: the unlink itself, shared with the ptrace tracer loop */

/* Serves an unlink or unlinkat (call: CALL_UNLINK, CALL_UNLINKAT) as the header says:
 * ANSWER (resp: 0, or EIO where the change set's note fell back on Python and raised), GONE, or DECLINED. Without
 * the GIL (the change set's note queued: note_change). */
static int
serve_unlink(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
             struct seccomp_notif_resp *resp)
{
    const __u64 *args = notif->data.args;
    int32_t dirfd = call == CALL_UNLINKAT ? (int32_t)args[0] : AT_FDCWD;
    uint64_t path_at = call == CALL_UNLINKAT ? args[1] : args[0];
    if (call == CALL_UNLINKAT && (args[2] & UINT32_MAX) == AT_REMOVEDIR)
        return serve_dir_at(c, listener, notif, dirfd, path_at, 1, 0, resp);
    if ((call == CALL_UNLINKAT && (args[2] & UINT32_MAX) != 0) || (dirfd < 0 && dirfd != AT_FDCWD))
        return DECLINED;
    struct acting a;
    struct write_path p;
    int made = write_request(c, listener, notif, dirfd, path_at, &a, &p);
    if (made <= 0)
        return made < 0 ? GONE : DECLINED;
    if (unlink_named(c->rw_root, c->write_kept, p.path, p.base, &p.identity, &a) != 0)
        return DECLINED;
    uint64_t *count = c->counts + SERVED_OUTCOMES * COUNTS_UNLINK;
    if (note_change(c->change_note, p.whole, (size_t)made, 1, 0) < 0) {
        resp->error = -EIO;
        count[SERVED_FAILED]++;
        note_served(c, AUDIT_UNLINK, p.whole, (size_t)made, EIO);
        return ANSWER;
    }
    note_served(c, AUDIT_UNLINK, p.whole, (size_t)made, 0);
    resp->val = 0;
    count[SERVED_DONE]++;
    return ANSWER;
}

#endif
