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
 * published caller (an audited one's ID_VALID after the read); then that probe, made as Python makes it:
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
 * - no ID_VALID after the read (but an audited VM's: its record names the path, which must
 *   be the caller's): the answer is a CONTINUE of this very notification, or a decline, and
 *   whatever a read of a dead caller's number found (another thread's memory, once the
 *   number is reused), a CONTINUE of a notification no longer there fails (ENOENT, ignored
 *   by the loop) and changes nothing, a decline hands it to Python, which reads it again.
 *   The count is the loop's own, of the CONTINUE answered (as for a caller dying after an
 *   ID_VALID, before the answer); a verdict kept (below) is of the text and the credentials,
 *   whoever asked. The credentials are not the read's: published_caller's, a first read of
 *   them checked by its own ID_VALID (first_credentials.h).
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

#include <sys/inotify.h>

/* The probe's verdict kept for a device directly under /dev (issue 14: W8c's 20,000 opens of
 * /dev/null each paid openat2, fstat and close, and a VM user's the switch and its restore,
 * ten calls more), for as long as one serve call answers in C (hp_serve's, released with
 * the stat context). A verdict is kept only where nothing it rests on can change unseen:
 * - the path: "/dev/NAME", one component under /dev, NAME itself a character device (no
 *   symlink: fstatat AT_SYMLINK_NOFOLLOW in the view's /dev), so the probe's lookup went
 *   through the view's root, its /dev and that entry alone;
 * - those: an inotify watch on the writable view's root and on its /dev directory, made
 *   (as the manager) before the probe whose verdict is kept, reports every change of an
 *   entry in either (create, delete, rename in or out: a /dev/NAME replaced, or /dev itself
 *   removed from the root and so detached) and of their attributes (mode, owner, ACL: the
 *   search permission a user needs). The kernel queues the event within the changing
 *   call, before it returns; the receive loop polls the watch with the listener (hotpath.c
 *   receive_one), so the poll that returns a notification has looked at the watch after
 *   the notification was queued, and so after every change made before the VM's call
 *   (an event it shows is read, and every verdict forgotten, an overflow too, before the
 *   lookup). A change racing the call is concurrent with the open, either order being the
 *   kernel's too. Every change of the writable view is the manager's (the VM's own view is
 *   read-only), whoever in the manager makes it: this loop (served in C: a mkdir in the
 *   root), a Python worker (after a takeover: driver.py), the manager's own commands;
 * - the mounts: the writable view's are made when the VM starts, never after, and a VM
 *   may neither mount nor chroot (DESIGN.md: blocked with EPERM), so the lookup crosses the
 *   same mounts for the VM's life;
 * - the caller's credentials: the probe acts as the caller, so a verdict is kept for the
 *   switch it was probed with (what acting_as switches, and to what: served_switch.h),
 *   and holds for that switch alone; a caller whose credentials changed is published anew
 *   (a bump of the watch's generation) and so switches otherwise, or is declined.
 * A NAME the VM's root made (a regular file, a symlink) is never kept: only a device found
 * is. The watch (an inotify instance, an fd and a lookup of /dev, six calls with its close)
 * is made at the fifth such open of a serve call, after four probes (a shell's redirects come
 * one or two between execs, each of which ends a serve call: they pay no watch), and no more
 * than DEV_WATCHES at once in the manager (inotify instances are counted per user, 128 by
 * default: a rootless manager's are its user's); past that, every open is probed.
 * Nothing kept decides what the VM can reach: the boot view does (this header's first
 * part); a stale verdict would only answer otherwise than Python.
 * tests/test_served_dev.py changes the view (through the manager's fd of it) while the loop
 * answers, and finds the change seen; tests/adversarial/test_served_dev_races.py (dev_swap)
 * swaps /dev/zero with a regular file under a thread's opens. */
#define DEV_VERDICTS 8
#define DEV_PROBES_UNWATCHED 4 /* device opens a serve call probes before it makes the watch */
#define DEV_WATCHES 16         /* watches made at once in the manager, at most */
#define DEV_NAME_BYTES 32
#define DEV_WATCHED (IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF)

struct dev_verdict {
    char name[DEV_NAME_BYTES];
    uint64_t nofollow, effective;
    uint32_t what, uid, gid, ngroups;
    uint32_t groups[PUBLISHED_GROUPS];
};

struct dev_verdicts {
    int state; /* 0: no watch yet; 1: watching (notify, dev); -1: none this serve call */
    int counted; /* one of dev_watches' */
    int notify, dev;
    int pending;         /* the receive loop's poll saw the watch readable: read it */
    unsigned int probed; /* device opens probed this serve call */
    unsigned int count, next;
    struct dev_verdict held[DEV_VERDICTS];
    size_t head_length; /* an audited VM's: the name resolved_name gave /dev, or 0 */
    char head[DEV_NAME_BYTES];
};

static int dev_watches; /* made and not yet released, in every serve call of the manager */

/* Whether the switch a acts with is the one v was probed with (served_switch.h's fields,
 * those it switches: the rest is the manager's own identity, the same for every caller). */
static int
dev_same_switch(const struct dev_verdict *v, const struct acting *a)
{
    if (v->what != a->what)
        return 0;
    if (a->what & SWITCH_IDS && (v->uid != a->uid || v->gid != a->gid))
        return 0;
    if (a->what & (SWITCH_IDS | SWITCH_CAPS) && v->effective != a->effective)
        return 0;
    return !(a->what & SWITCH_GROUPS) ||
           (v->ngroups == a->ngroups && memcmp(v->groups, a->groups, a->ngroups * sizeof *a->groups) == 0);
}

/* The watch read where the loop's poll saw it readable (made first where the serve call has
 * probed DEV_PROBES_UNWATCHED device opens): 1 where the kept verdicts hold (every one
 * forgotten on an event), 0 where nothing is kept. As the manager. */
static int
dev_verdicts_current(struct dev_verdicts *v, int rw_root)
{
    if (v == NULL || v->state < 0)
        return 0;
    if (v->state == 0) {
        if (v->probed < DEV_PROBES_UNWATCHED)
            return 0;
        char link[48];
        v->state = -1, v->dev = -1, v->notify = -1, v->counted = 1;
        if (__atomic_add_fetch(&dev_watches, 1, __ATOMIC_RELAXED) > DEV_WATCHES)
            return 0;
        v->notify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (v->notify < 0)
            return 0;
        long dev = scoped_openat2(rw_root, "/dev", O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
        v->dev = (int)dev;
        snprintf(link, sizeof link, "/proc/self/fd/%d", rw_root);
        if (dev < 0 || inotify_add_watch(v->notify, link, DEV_WATCHED) < 0)
            return 0;
        snprintf(link, sizeof link, "/proc/self/fd/%d", v->dev);
        if (inotify_add_watch(v->notify, link, DEV_WATCHED) < 0)
            return 0;
        v->state = 1;
        return 1;
    }
    if (!v->pending)
        return 1;
    v->pending = 0;
    char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t got;
    while ((got = read(v->notify, events, sizeof events)) > 0)
        v->count = 0, v->head_length = 0;
    if (got < 0 && errno == EAGAIN)
        return 1;
    v->state = -1; /* the watch unreadable: nothing kept from now on */
    v->count = 0, v->head_length = 0;
    return 0;
}

/* Whether a device verdict is kept for name (under /dev/), the flags' O_NOFOLLOW and a's switch. */
static int
dev_verdict_held(const struct dev_verdicts *v, const char *name, uint64_t nofollow, const struct acting *a)
{
    for (unsigned int i = 0; i < v->count; i++)
        if (v->held[i].nofollow == nofollow && strcmp(v->held[i].name, name) == 0 && dev_same_switch(&v->held[i], a))
            return 1;
    return 0;
}

/* Keeps the device verdict of a probe made after dev_verdicts_current said the watch holds,
 * where name is a character device itself in the view's /dev (no symlink). As the manager. */
static void
dev_verdict_keep(struct dev_verdicts *v, const char *name, uint64_t nofollow, const struct acting *a)
{
    struct stat st;
    if (fstatat(v->dev, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISCHR(st.st_mode))
        return;
    if (a->what & SWITCH_GROUPS && a->ngroups > PUBLISHED_GROUPS)
        return;
    struct dev_verdict *kept = &v->held[v->next];
    v->next = (v->next + 1) % DEV_VERDICTS;
    if (v->count < DEV_VERDICTS)
        v->count++;
    *kept = (struct dev_verdict){.nofollow = nofollow, .effective = a->effective, .what = a->what, .uid = a->uid,
                                 .gid = a->gid, .ngroups = a->ngroups};
    snprintf(kept->name, sizeof kept->name, "%s", name);
    if (a->what & SWITCH_GROUPS)
        memcpy(kept->groups, a->groups, a->ngroups * sizeof *a->groups);
}

/* The watch closed: hp_serve's, at the end of a serve call. */
static void
dev_verdicts_release(struct dev_verdicts *v)
{
    if (v->state != 0) {
        if (v->notify >= 0)
            close(v->notify);
        if (v->dev >= 0)
            close(v->dev);
    }
    if (v->counted)
        __atomic_sub_fetch(&dev_watches, 1, __ATOMIC_RELAXED);
    v->state = 0, v->count = 0, v->probed = 0, v->pending = 0, v->counted = 0, v->head_length = 0;
}

/* An audited VM's event named as served.py _resolved names it (resolved_name): /dev's name,
 * kept while the watch holds (its entry in the root, a mount point: its name changes only
 * with an entry of the root, which the watch reports, or a mount, which none makes), and
 * NAME; resolved_name's where none is kept yet, which keeps it. 0, or -1 (declined). */
static int
dev_event_name(const struct stat_context *c, struct dev_verdicts *v, int watched, const char *path, const char *name)
{
    struct served_note *n = c->note;
    size_t last = strlen(name);
    if (watched && v->head_length && roots_named(c) && v->head_length + 1 + last < sizeof n->name) {
        memcpy(n->name, v->head, v->head_length);
        n->name[v->head_length] = '/';
        memcpy(n->name + v->head_length + 1, name, last + 1);
        n->length = v->head_length + 1 + last;
        return 0;
    }
    if (resolved_name(c, "", &(struct stat){0}, path) < 0) /* as the manager, switched back */
        return -1;
    size_t head = n->length - last - 1; /* resolved_name's own: its head, "/", then the last component */
    if (watched && n->length > last && n->name[head] == '/' && strcmp(n->name + head + 1, name) == 0 && head > 0 &&
        head < sizeof v->head) {
        memcpy(v->head, n->name, head);
        v->head_length = head;
    }
    return 0;
}

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
    if (audited && ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0)
        return GONE;
    const char *name = path + 5; /* after "/dev/" */
    uint64_t nofollow = flags & O_NOFOLLOW;
    struct dev_verdicts *v = strchr(name, '/') || strlen(name) >= DEV_NAME_BYTES ? NULL : c->verdicts;
    int watched = dev_verdicts_current(v, c->rw_root);
    if (!watched || !dev_verdict_held(v, name, nofollow, a)) {
        if (act_switch(a) < 0)
            return DECLINED;
        int device = char_device_in(c->rw_root, path, nofollow);
        act_restore(a);
        if (!device)
            return DECLINED;
        if (v)
            v->probed++;
        if (watched)
            dev_verdict_keep(v, name, nofollow, a);
    }
    if (audited && dev_event_name(c, v, watched, path, name) < 0)
        return DECLINED;
    resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    note_answered(c, AUDIT_OPEN, audited ? c->note->flags : 0, resp); /* the decoder's flags, serve_open's */
    c->counts[SERVED_OUTCOMES * COUNTS_OPEN + SERVED_CONTINUED]++;
    return ANSWER;
}

#endif
