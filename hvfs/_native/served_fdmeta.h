/* A VM's metadata change on an open file of its own, served in the C receive loop
 * (served_stat.h's serve_open hands CALL_FCHMOD, CALL_FCHOWN and CALL_UTIMENSAT here;
 * hvfs/intercept/served_stat.py says when, and tests/test_served_fdmeta.py holds it to the
 * Python path).
 *
 * What is served is what the Python path serves (decoders/attrs.py fchmod, fchown, and
 * utimensat with no path, futimens; then handlers/attrs.py handle_chmod, handle_chown and
 * handle_utimens through world.py own_object): the caller's fd, duplicated into the manager
 * with pidfd_getfd, acted on as that duplicate, acting as the caller, so that the kernel
 * makes every check the caller's own call would (the owner or CAP_FOWNER, CAP_CHOWN, a
 * group it is in, write access for the current time, a read-only volume: EROFS). Python's
 * acts are fchmod through /proc/self/fd/N (the same chmod_common on the same path),
 * fchownat(fd, "", uid, gid, AT_EMPTY_PATH) and utimensat(fd, "", times, AT_EMPTY_PATH), the
 * same calls here; the mode masked to 07777 and the ids to 32 bits as the decoder does; the
 * times passed as read (the kernel checks them: EINVAL). A failed call changes nothing and
 * is answered its errno, as the dispatch answers the handler's OSError.
 *
 * The fd: the thread's published pidfd (credcache.py: a PIDFD_THREAD pidfd, opened before its
 * credentials were read) names a struct pid, never a number; the duplicate is taken from it,
 * then ID_VALID proves the notification still pending, so the duplicate is of the caller's
 * table while it was in this call (driver.py's order, as tracee.py _getfd). The duplicate is
 * also what proves the published thread the caller, without published_in's poll of the pidfd
 * (three an untar's file: its fchmod's, fchown's and futimens'): pidfd_getfd finds the pidfd's task
 * (none once the thread is reaped: ESRCH) and takes the fd from its table (none once it
 * exited: exit_files comes before its exit is signalled, EBADF), so a duplicate taken means
 * the published thread had not exited then, and held tid, which a thread's struct pid keeps
 * until it is reaped. The notifying thread held tid then too (it waits in its call from before
 * the receive to after ID_VALID), so they are one thread, as at published_in's poll. What was
 * read by tid before (the times) was read from that thread as well; a duplicate not taken is
 * declined. A caller whose record needs a read (first_credentials.h) is polled as before. A sibling sharing that table may dup2 another file over the number at
 * any time: every decision below is made on the duplicate alone, which no one else can
 * change, and the change is made through it.
 *
 * Only the VM's own objects: the duplicate's mount (statx STATX_MNT_ID) among the writable
 * view's own mounts, which Python published (world.py own_mounts' ids). A mount id names one
 * mount among those alive; every one published is a mount of the writable view, which the
 * manager holds (the detached tree under rw_root, open for as long as this loop serves), so
 * none of them is freed and its id given to another mount meanwhile; and the duplicate holds
 * its own mount alive while it is looked at. A match is that very mount. Not a device node
 * (none in a nodev view; checked anyway). Anything else is declined to Python (find_own's
 * twin in the writable view of a file opened on the boot view, an anonymous object, an fd
 * from outside, a device: EPERM and its warning there).
 *
 * The change set: the file noted by the path /proc/self/fd reads for the duplicate (the
 * writable view reads as the VM's own paths), existed and exists, as trail.open_file and
 * changes.after note an OpenFile target, before the answer (queued without the GIL, as
 * served_write.h's "The change set" says); a path that is not
 * absolute or names a deleted file is declined (Python notes it otherwise or not at all).
 *
 * Declined before any side effect or answer, so that Python serves the request from its
 * start: a VM with a hook (quiet[0] and quiet[1] off; an audited one is served, its event
 * recorded: served_audit.h), no writable view, a caller whose
 * credentials are not published, a negative fd, utimensat with a path or a flag, times that
 * cannot be read (EFAULT there), an fd the caller does not have (EBADF), an O_PATH one
 * (EBADF), a switch that failed.
 */
#ifndef HVFS_SERVED_FDMETA_H
#define HVFS_SERVED_FDMETA_H

#include "fd_change.h" /* published_pidfd, own_object, fd_vm_path, change_fd: shared with tracer_fdmeta.h */

/* Serves a fchmod, fchown or futimens (call: CALL_FCHMOD ...) as the header says: ANSWER
 * (resp: 0, the change's errno, or EIO where the change set's note fell back on Python and raised), GONE, or
 * DECLINED. Without the GIL (the change set's note queued: note_change). */
static int
serve_fdmeta(const struct stat_context *c, int listener, const struct seccomp_notif *notif, int call,
             struct seccomp_notif_resp *resp)
{
    const __u64 *args = notif->data.args;
    int32_t number = (int32_t)args[0];
    if (number < 0 || (call == CALL_UTIMENSAT && (args[1] != 0 || (args[3] & UINT32_MAX) != 0)))
        return DECLINED;
    if (c->rw_root < 0 || !c->change_note || !c->own_count || notif->pid <= 0 || !served_hearing(c, notif->pid))
        return DECLINED;
    struct acting a = {0};
    long at = published_record(c->watch, c->bumps, c->known, c->known_count, notif->pid, &a);
    int pidfd = at >= 0 ? c->known[at].pidfd : -1; /* its thread proven the caller by the duplicate */
    if (at < 0 && published_caller(c, listener, notif, &a))
        pidfd = published_pidfd(c->known, c->known_count, notif->pid);
    struct timespec times[2];
    /* Safe because: process_vm_readv writes only within our buffer; the times are used as read. */
    if (pidfd < 0 || (call == CALL_UTIMENSAT && args[2] &&
                      read_remote(notif->pid, args[2], (char *)times, sizeof times) != (ssize_t)sizeof times))
        return DECLINED;
    long fd = syscall(SYS_pidfd_getfd, pidfd, number, 0);
    if (fd < 0)
        return DECLINED;
    uint64_t id = notif->id;
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0) {
        close((int)fd);
        return GONE;
    }
    char path[PATH_MAX_BYTES + 1];
    int status = fcntl((int)fd, F_GETFL);
    size_t length = status < 0 || status & O_PATH || !own_object(c->own_mounts, c->own_count, (int)fd)
                        ? 0
                        : fd_vm_path_in(c->self_fds, (int)fd, path, sizeof path);
    int failed = ECANCELED;
    if (length && act_switch(&a) == 0)
        failed = change_fd(call - CALL_FCHMOD, (int)fd, args, call == CALL_UTIMENSAT && args[2] ? times : NULL);
    act_restore(&a);
    close((int)fd);
    if (failed == ECANCELED)
        return DECLINED;
    uint64_t *count = c->counts + SERVED_OUTCOMES * (COUNTS_CHMOD + (call - CALL_FCHMOD));
    if (!failed && note_change(c->change_note, path, length, 1, 1) < 0)
        failed = EIO;
    resp->error = -failed;
    count[failed ? SERVED_FAILED : SERVED_DONE]++;
    note_served(c, AUDIT_CHMOD + (call - CALL_FCHMOD), path, length, failed);
    return ANSWER;
}

#endif
