/* A write-open of a character device under /dev (open, openat, creat), continued by the C
 * receive loop as the Python path continues it (issue 14: /dev/null written to by every
 * shell redirect, 40 µs a time through Python). tests/test_served_dev.py holds it to the
 * Python path, tests/adversarial/test_served_dev_races.py to the invariant.
 *
 * The Python path (hvfs/manager/handlers/opening.py handle_open, _open_writable): a path
 * under /dev skips the one-call open (_under_dev) and is probed O_PATH in the writable view
 * (whose /dev holds the same nodes as the VM's, nodev), as the caller, RESOLVE_IN_ROOT (with
 * the caller's O_NOFOLLOW); a character device found there is left to the kernel
 * (_continued), whatever the flags (O_CREAT and O_TRUNC included: the kernel opens the node,
 * EEXIST for O_EXCL); a failed probe goes on to kernel_paths.check.
 *
 * Continued here, counted as the manager counts it ("open", "continued": nothing else is
 * recorded, no change noted, trail untouched), only where Python's probe itself finds one
 * character device: an absolute path, read once, that is plain (no "//", "/./", "/../",
 * last "/", "/." or "/..") and under /dev/, naming none of the caller's own files nor a
 * kernel mount by its text (a component "fd", "pts", "proc", nor /dev/stdin|stdout|stderr:
 * the decoder's and is_kernel_path's names, which Python sends elsewhere before any probe);
 * in a quiet VM (no hook, audit, fault rule, scanner: quiet[0]) or an audited one with no
 * hook (quiet[1], served_hearing) whose reads no service judges (a writable view) and a
 * published caller, ID_VALID after the read; then that probe, made as Python makes it:
 * openat2 O_PATH of the text in the writable view, RESOLVE_IN_ROOT, the caller's
 * O_NOFOLLOW, acting as the caller. Anything else is declined before any answer: Python
 * serves it from the start, as today.
 *
 * An audited VM's continue is recorded here (served_audit.h, before the answer) as the
 * dispatch records Python's: an Open of the decoder's flags, its response a Continue, named
 * as served.py served_paths names a request the handler noted nothing for (the probe's
 * name is unused: a device is no Fd): _resolved, the parent directory opened again in the
 * writable view as the manager and named by the kernel, and the last component
 * (served_resolved.h resolved_name; a VM whose roots do not read as "/" is declined, as
 * there). Python's audited probe tries RESOLVE_NO_SYMLINKS first (opening.py _found,
 * open_named) and then the usual resolution: it finds what the one probe here finds, a
 * lookup failing before any symlink failing alike in both. tests/test_served_dev.py compares
 * the records; tests/adversarial/test_served_dev_races.py checks that no record of a race
 * names what the VM did not get.
 *
 * What each step is for (issue 14 asked which the answer rests on; the manager's CPU per
 * call is in docs/performance.md, branch devtrim):
 * - the probe decides CONTINUE exactly where Python's would: a regular file the VM made
 *   under /dev (root may: the writable view's /dev is a tmpfs) is served by Python, a
 *   symlink with O_NOFOLLOW answered ELOOP, a missing name created or failed, /dev/ptmx
 *   (pts/ptmx: an empty placeholder in this view) sent to kernel_paths.check. One probe:
 *   the VM's root (/proc/PID/root) holds the same /dev, so a second one there could only
 *   differ through its own procfs and devpts, where this one fails and declines anyway;
 * - acting as the caller: the probe needs search permission on / and on every directory of
 *   /dev on the way, which the VM's root may take from a user (chmod through the manager);
 *   Python's probe then fails EACCES and answers it (counted failed), and C's, as the
 *   caller, fails too and declines (the manager's rights would find the device and continue
 *   it: the kernel's EACCES, counted continued). A caller of the manager's own identity
 *   switches nothing;
 * - openat2 rather than one statx: statx has no RESOLVE_IN_ROOT, so an absolute symlink on
 *   the way (one the VM made under /dev) would be followed from the manager's root, not the
 *   VM's: another answer than Python's, and a look at the manager's files;
 * - the published caller (a poll of its pidfd): the credentials the probe acts as;
 * - ID_VALID after the read: the count is made only for a caller alive after its path was
 *   read (its number not yet another process's, whose memory the read would have been).
 *
 * Security: CONTINUE makes the kernel read the path again from the VM's memory, where
 * another thread may have written another path since it was read here, and open whatever
 * that names, in the VM's boot view, as the caller. So nothing above is what keeps the VM
 * in; the boot view is (the same holds of the Python path's own CONTINUE of this request,
 * and of every read it continues). What a write-open there can reach, whatever its path:
 * - a regular file, directory or symlink of any mount of the boot view: every one is
 *   read-only and locked (DESIGN.md), so EROFS; the flags are the register's (open, openat,
 *   creat), which the VM cannot change after the check, so no O_CREAT or O_TMPFILE appears;
 * - /dev: a read-only tmpfs whose devices are the harmless character devices bound in
 *   (sources/devices.py: null, zero, full, random, urandom, tty); writing to one is content
 *   I/O to a device, which the Python path lets through the same way; /dev/shm read-only;
 * - the VM's own procfs and devpts: the VM's own processes and terminals (what it may write
 *   there it may write through any path the Python path continues);
 * - a magic link (/proc/self/fd/N, /proc/PID/fd/N of the VM's processes, map_files, cwd):
 *   only files the VM holds open already. Those the manager hands out read-only are opened
 *   on the read-only twin of their view (opening.py _hand_out), so reopening one for writing
 *   fails with EROFS; a writable one is a file the manager opened for writing already and
 *   noted in the change set then; stdio are pipes or a pty, never a host file (DESIGN.md,
 *   "Inherited fds"), a VM-made memfd or pipe is the VM's own.
 * tests/adversarial/test_served_dev_races.py flips the path between /dev/null and a file on
 * the writable volume, a magic link to a read-only fd of a WORK file, and a symlink to one,
 * and finds the WORK file unchanged but through the manager.
 *
 * Not served here: openat2 (never served in C), relative paths. The ptrace driver's loop
 * continues it alike (tracer_write.h served_dev_here: letting the call run). */
#ifndef HVFS_SERVED_DEV_H
#define HVFS_SERVED_DEV_H

#include "dev_probe.h" /* dev_path, char_device_in: the decision, shared with the tracer loop */

/* Continues the write-open (flags: the register's, masked) of path, read once from the
 * caller whose published credentials are *a, as the header says: ANSWER (continued), GONE,
 * or DECLINED. Without the GIL. */
static int
serve_dev_write(const struct stat_context *c, int listener, const struct seccomp_notif *notif, const char *path,
                uint64_t flags, struct acting *a, struct seccomp_notif_resp *resp)
{
    int audited = c->note != NULL && c->note->audited; /* served_hearing's verdict (write_request) */
    if (!(audited || __atomic_load_n(c->quiet, __ATOMIC_ACQUIRE)) || c->rw_root < 0 || !dev_path(path))
        return DECLINED;
    uint64_t id = notif->id;
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0)
        return GONE;
    if (act_switch(a) < 0)
        return DECLINED;
    int device = char_device_in(c->rw_root, path, flags & O_NOFOLLOW);
    act_restore(a);
    if (!device)
        return DECLINED;
    if (audited && resolved_name(c, "", &(struct stat){0}, path) < 0) /* as the manager, switched back */
        return DECLINED;
    resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    note_answered(c, AUDIT_OPEN, audited ? c->note->flags : 0, resp); /* the decoder's flags, serve_open's */
    c->counts[SERVED_OUTCOMES * COUNTS_OPEN + SERVED_CONTINUED]++;
    return ANSWER;
}

#endif
