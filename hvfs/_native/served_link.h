/* A strict, quiet VM's readlink and access of a path served in the C receive loop, with the
 * Python path's answer (decoders/query.py _readlink and _access, then
 * hvfs/manager/handlers/query.py handle_readlink and handle_access, in the dispatch's
 * acting_as), by served_stat.h's rules: the path read once, resolved in the VM's root as
 * resolve.open_at resolves it, as the caller (served_switch.h), ID_VALID after the reads and
 * before the answer, anything Python must look at declined before anything is answered.
 *
 * readlink and readlinkat: the object found O_PATH | O_NOFOLLOW in the VM's root, EINVAL where
 * it is no symlink, else its text written to the caller's buffer, cut to the size asked, and
 * its length answered (driver.py _apply's api.Data). A size that is not positive (the
 * decoder's EINVAL), an empty path (an O_PATH dirfd's own link), and a path naming procfs or
 * devpts (magic links, the caller's own: served_names.h) are Python's.
 *
 * access, faccessat and faccessat2 (flags AT_EACCESS and AT_SYMLINK_NOFOLLOW only): the object
 * found in the writable view (its W_OK says EROFS only where the mount is read-only), and the
 * mode, if any, checked on it by faccessat2(AT_EACCESS | AT_EMPTY_PATH) as the caller. Without
 * AT_EACCESS the dispatch acts with the caller's real ids (creds.for_access): served only where
 * those switch what its effective ids do (published as access_alike by credcache.py). A mode
 * with other bits than R_OK | W_OK | X_OK, AT_EMPTY_PATH, and a driver with no writable view
 * here (rw_root -1: write-opens not served) are Python's.
 *
 * An audited VM's are served here too where the Python path names them by their text
 * (served_audit.h: a plain path found with no symlink on the way; its answer, ok or an errno,
 * recorded under that name), or names a failed lookup by its parent (served_resolved.h); the
 * rest is Python's, and so is the ptrace driver's, which serves these calls in Python.
 */
#ifndef HVFS_SERVED_LINK_H
#define HVFS_SERVED_LINK_H

#include <fcntl.h>
#include <sys/syscall.h>

#define LINK_ACCESS_MODES 7 /* R_OK | W_OK | X_OK: the decoder's S_IRWXO */

/* readlink (CALL_READLINK) or readlinkat of a path, as serve_stat's lookup finds it. */
static int
serve_readlink(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
               struct seccomp_notif_resp *resp, int *written)
{
    const __u64 *a = notif->data.args;
    int at = call == CALL_READLINKAT;
    int32_t dirfd = at ? (int32_t)a[0] : AT_FDCWD;
    uint64_t path_at = a[at], out_at = a[at + 1], size = a[at + 2];
    if ((int32_t)size <= 0)
        return DECLINED;
    int foreign = 0;
    long fd = -EBADF;
    struct acting as_caller = {0};
    int got = resolve_caller_path(c, listener, notif, dirfd, path_at, O_PATH | O_NOFOLLOW, "", &fd, &foreign,
                                  &as_caller, NULL);
    act_restore(&as_caller); /* the link's text is read of the fd: nothing of the caller checked */
    if (got != ANSWER)
        return got;
    uint64_t *count = c->counts + SERVED_OUTCOMES * COUNTS_READLINK;
    if (fd < 0) {
        answer_failed_lookup(fd, foreign, count, resp);
        note_answered(c, AUDIT_READLINK, 0, resp);
        return ANSWER;
    }
    /* read first: only a symlink has a text, so its kind is asked only where it has none */
    char text[PATH_MAX_BYTES + 1];
    struct stat st;
    ssize_t length = readlinkat((int)fd, "", text, sizeof text);
    int failed = length < 0 ? errno : 0;
    if (failed)
        failed = fstat((int)fd, &st) < 0 ? errno : !S_ISLNK(st.st_mode) ? EINVAL : failed;
    close((int)fd);
    if (!failed && (size_t)length >= sizeof text)
        return DECLINED; /* longer than a path: os.readlink's to read whole */
    if (failed) {
        resp->error = -failed;
        count[SERVED_FAILED]++;
        note_answered(c, AUDIT_READLINK, 0, resp); /* named by its text (plain_text) */
        return ANSWER;
    }
    struct seccomp_notif_resp done = {0};
    note_answered(c, AUDIT_READLINK, 0, &done); /* the handler's Data: recorded even if the caller is gone now */
    if (c->note)
        c->note->value = length;
    size_t put_size = (uint64_t)length < size ? (size_t)length : (size_t)size;
    uint64_t id = notif->id;
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0)
        return GONE;
    /* Safe because: the kernel writes only within the caller's writable mappings and reads
     * only put_size bytes of our buffer. */
    struct iovec local = {.iov_base = text, .iov_len = put_size};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)out_at, .iov_len = put_size};
    ssize_t put = process_vm_writev(notif->pid, &local, 1, &remote, 1, 0);
    if (put < 0 && errno == ESRCH)
        return GONE;
    count[SERVED_DONE]++;
    if (put != (ssize_t)put_size) {
        resp->error = -EFAULT;
    } else {
        resp->val = (int64_t)put_size;
        *written = 1;
    }
    return ANSWER;
}

/* access (CALL_ACCESS), faccessat or faccessat2 of a path, looked up in the writable view. */
static int
serve_access(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
             struct seccomp_notif_resp *resp)
{
    const __u64 *a = notif->data.args;
    int at = call != CALL_ACCESS;
    int32_t dirfd = at ? (int32_t)a[0] : AT_FDCWD;
    uint64_t path_at = a[at], mode = a[at + 1], flags = call == CALL_FACCESSAT2 ? a[3] & UINT32_MAX : 0;
    if (c->rw_root < 0 || mode & ~(uint64_t)LINK_ACCESS_MODES || flags & ~(uint64_t)(AT_EACCESS | AT_SYMLINK_NOFOLLOW))
        return DECLINED;
    struct stat_context in_view = *c;
    in_view.vm_root = c->rw_root;
    in_view.kept = NULL;                              /* a base kept is the VM root's, not the view's */
    in_view.real_ids = !(flags & AT_EACCESS);         /* creds.for_access: declined unless alike */
    int foreign = 0;
    long fd = -EBADF;
    struct acting as_caller = {0};
    int got = resolve_caller_path(&in_view, listener, notif, dirfd, path_at,
                                  O_PATH | (flags & AT_SYMLINK_NOFOLLOW ? O_NOFOLLOW : 0), "", &fd, &foreign, &as_caller,
                                  NULL);
    if (got != ANSWER || fd < 0)
        act_restore(&as_caller);
    if (got != ANSWER)
        return got;
    uint64_t *count = c->counts + SERVED_OUTCOMES * COUNTS_ACCESS;
    if (fd < 0) {
        answer_failed_lookup(fd, foreign, count, resp);
        note_answered(c, AUDIT_ACCESS, flags, resp);
        return ANSWER;
    }
    /* still acting as the caller (open_object_at's switch): the check is the caller's */
    int failed = mode && syscall(SYS_faccessat2, (int)fd, "", (int)mode, AT_EACCESS | AT_EMPTY_PATH) < 0 ? errno : 0;
    act_restore(&as_caller);
    close((int)fd);
    if (failed) {
        resp->error = -failed;
        count[SERVED_FAILED]++;
    } else {
        count[SERVED_DONE]++;
    }
    note_answered(c, AUDIT_ACCESS, flags, resp); /* found by its text: named by it (plain_text) */
    return ANSWER;
}

/* Serves a readlink or access call (call: CALL_READLINK and after), as the two above. */
static int
serve_link(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
           struct seccomp_notif_resp *resp, int *written)
{
    if (call <= CALL_READLINKAT)
        return serve_readlink(c, listener, notif, call, resp, written);
    if (c->note)
        roots_named(c); /* asked of both roots before access sets the view as its root */
    return serve_access(c, listener, notif, call, resp);
}

#endif
