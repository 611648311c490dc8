/* A caller's credentials read and kept in the C loop, for a thread the worker has kept none
 * of (issue 14: each of make's new processes sent its first served request to Python only
 * for Python to read its credentials).
 *
 * What credcache.py KnownCredentials.get does, in its order, here: the generation of the
 * thread (the watch's and the bumps of the VM and of its bucket) taken first, with the watch
 * trusted and no umask pending; a PIDFD_THREAD pidfd of the thread opened BEFORE the read
 * (or the one its stale record was kept under, alive); /proc/TID/status read once and cut as
 * procfs.py parse_credentials cuts it; ID_VALID of the request right after the read (the
 * notifier was alive throughout, so it held TID at the open and at the read: both are of
 * it); the watch checked again, unchanged (a set*id, capset or exec bumped meanwhile: the
 * read may be of before; nothing is kept and Python serves). Only then is it kept, in a
 * free slot of the worker's published records (or the thread's own stale one), under the
 * generation taken first, marked fresh: Python adopts it (KnownCredentials.adopt) when serve
 * hands it the next request, and owns the pidfd from then on. Until then a fresh slot under a
 * pidfd opened here is C's: one whose thread has exited is taken again here, its pidfd
 * closed; a pidfd of Python's own record is never closed here.
 *
 * The calls served here never change credentials (stats, opens, links, unlinks, fd
 * metadata): an exec, whose credentials the manager's check must not keep, is never read here.
 * Anything unsure declines: Python reads, as before.
 */
#ifndef HVFS_FIRST_CREDENTIALS_H
#define HVFS_FIRST_CREDENTIALS_H

#include "credential_lines.h" /* status_line */

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* linux/pidfd.h, 6.9 */
#endif

static int first_credentials_off; /* PIDFD_THREAD refused (before 6.9): nothing is kept, as credcache's threads */

/* A status read's credentials (procfs.py parse_credentials's). */
struct first_read {
    uint32_t uid, gid, real_uid, real_gid, umask, ngroups;
    uint64_t capabilities;
    uint32_t groups[PUBLISHED_GROUPS];
};

/* The value of line key as numbers in base, at most count of them: how many, or -1. */
static int
status_numbers(const char *text, size_t size, const char *key, int base, unsigned long long *out, int count)
{
    size_t length = 0;
    const char *value = status_line(text, size, key, &length);
    char line[512];
    if (!value || length >= sizeof line)
        return -1;
    memcpy(line, value, length);
    line[length] = 0;
    int found = 0;
    for (char *at = line, *end;; at = end) {
        while (*at == ' ' || *at == '\t')
            at++;
        if (!*at)
            return found;
        if (found == count || *at < '0' || (*at > '9' && base != 16))
            return -1;
        errno = 0;
        out[found++] = strtoull(at, &end, base);
        if (end == at || errno || (*end && *end != ' ' && *end != '\t'))
            return -1;
    }
}

/* The credentials in the status text: 0, or -1 where Python's parse could differ (a line
 * missing or odd, more than PUBLISHED_GROUPS groups, which C never switches to). */
static int
first_parse(const char *text, size_t size, struct first_read *r)
{
    unsigned long long uids[4], gids[4], groups[PUBLISHED_GROUPS], umask[1], caps[1];
    if (status_numbers(text, size, "\nUid:", 10, uids, 4) != 4 || status_numbers(text, size, "\nGid:", 10, gids, 4) != 4 ||
        status_numbers(text, size, "\nCapEff:", 16, caps, 1) != 1)
        return -1;
    int ngroups = status_numbers(text, size, "\nGroups:", 10, groups, PUBLISHED_GROUPS);
    size_t length;
    int umasks = status_line(text, size, "\nUmask:", &length) ? status_numbers(text, size, "\nUmask:", 8, umask, 1) : 0;
    if (ngroups < 0 || umasks < 0)
        return -1;
    for (int i = 0; i < 4; i++)
        if (uids[i] > UINT32_MAX || gids[i] > UINT32_MAX)
            return -1;
    r->uid = (uint32_t)uids[3], r->gid = (uint32_t)gids[3], r->real_uid = (uint32_t)uids[0], r->real_gid = (uint32_t)gids[0];
    r->umask = umasks ? (uint32_t)umask[0] : 022; /* 0022 before 4.7, as parse_credentials */
    r->capabilities = caps[0];
    r->ngroups = (uint32_t)ngroups;
    for (int i = 0; i < ngroups; i++) {
        if (groups[i] > UINT32_MAX)
            return -1;
        r->groups[i] = (uint32_t)groups[i];
    }
    return 0;
}

static int
holds(const uint32_t *ids, size_t count, uint32_t id)
{
    for (size_t i = 0; i < count; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

/* served_stat.py switch_of against this thread's identity outside any switch: SWITCH_*,
 * with *wanted the capabilities asked that the manager holds. files.groups_to_switch:
 * {gid, *groups} differs from {gid, *own}. */
static uint32_t
first_switch(const struct thread_identity *me, uint32_t uid, uint32_t gid, const uint32_t *groups, uint32_t ngroups,
             uint64_t capabilities, uint64_t *wanted)
{
    uint64_t permitted = me->caps[0].permitted | (uint64_t)me->caps[1].permitted << 32;
    uint64_t effective = me->caps[0].effective | (uint64_t)me->caps[1].effective << 32;
    uint32_t what = 0;
    for (uint32_t i = 0; i < ngroups && !what; i++)
        what = groups[i] != gid && !holds(me->groups, (size_t)me->ngroups, groups[i]) ? SWITCH_GROUPS : 0;
    for (int i = 0; i < me->ngroups && !what; i++)
        what = me->groups[i] != gid && !holds(groups, ngroups, me->groups[i]) ? SWITCH_GROUPS : 0;
    *wanted = capabilities & permitted;
    what |= uid != me->uid || gid != me->gid ? SWITCH_IDS : 0;
    what |= what & SWITCH_IDS || *wanted != effective ? SWITCH_CAPS : 0;
    return what;
}

/* What the loop publishes with r: SWITCH_*, *wanted the capabilities switched to, and
 * *alike whether access(2)'s real ids switch the same (credcache.py: publish(for_access())
 * == switch; Credentials.for_access: all capabilities for a real uid 0, else none). */
static uint32_t
first_switches(const struct thread_identity *me, const struct first_read *r, uint64_t *wanted, int *alike)
{
    uint64_t real_wanted;
    uint32_t what = first_switch(me, r->uid, r->gid, r->groups, r->ngroups, r->capabilities, wanted);
    uint32_t real_what = first_switch(me, r->real_uid, r->real_gid, r->groups, r->ngroups,
                                      r->real_uid == 0 ? UINT64_MAX : 0, &real_wanted);
    *alike = real_what == what && r->real_uid == r->uid && r->real_gid == r->gid && real_wanted == *wanted;
    return what;
}

/* The generation of tid's entries now (CredWatch.generation_of), or 0 with *usable 0 where
 * nothing may be kept (distrusted, a umask pending). */
static uint64_t
first_generation(const struct watch_state *watch, const uint64_t *bumps, pid_t tid, int *usable)
{
    uint64_t generation = __atomic_load_n(&watch->generation, __ATOMIC_ACQUIRE) + bumps_of(bumps, tid);
    *usable = __atomic_load_n(&watch->trusted, __ATOMIC_ACQUIRE) && !__atomic_load_n(&watch->changing, __ATOMIC_ACQUIRE);
    return generation;
}

static int
pidfd_alive(int pidfd)
{
    struct pollfd alive = {.fd = pidfd, .events = POLLIN};
    return poll(&alive, 1, 0) == 0;
}

/* struct published's fresh: Python's (0), or kept here and not yet adopted, under a pidfd
 * opened here (FRESH_OWN: C's to close until adopted) or under the pidfd of Python's own
 * stale record of the thread (FRESH_PYTHONS: Python's, never closed here). */
enum { FRESH_OWN = 1, FRESH_PYTHONS = 2 };

/* The slot for tid's credentials in known: its own record (*pidfd: the one kept), or a free
 * one, or a fresh one of a thread gone under C's own pidfd (*pidfd -1, that pidfd to be
 * closed as taken); -1 for none. */
static int
first_slot(const struct published *known, size_t count, pid_t tid, int *pidfd)
{
    int free_at = -1;
    for (size_t i = 0; i < count; i++) {
        if (known[i].tid == tid) {
            if (known[i].pidfd < 0 || !pidfd_alive(known[i].pidfd))
                return -1; /* Python's to drop (adopt); not C's to close */
            *pidfd = known[i].pidfd;
            return (int)i;
        }
        if (free_at < 0 && (known[i].tid == 0 || (known[i].fresh == FRESH_OWN && !pidfd_alive(known[i].pidfd))))
            free_at = (int)i;
    }
    *pidfd = -1;
    return free_at;
}

/* The status text of tid: its length (< size), or -1. */
static ssize_t
first_status(pid_t tid, char *text, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = pread(fd, text, size, 0);
    close(fd);
    return got > 0 && (size_t)got < size ? got : -1; /* a full buffer: a long Groups line, Python's */
}

/* Reads, checks and keeps the notifying thread's credentials in known (see above): 1 with *a
 * what acting as them switches, or 0 (nothing kept, nothing of the thread's left open). */
static int
first_credentials(const struct watch_state *watch, const uint64_t *bumps, struct published *known, size_t count,
                  uint64_t *reads, int listener, const struct seccomp_notif *notif, struct acting *a)
{
    pid_t tid = (pid_t)notif->pid;
    int usable = 0, kept = -1;
    if (first_credentials_off || !known || tid <= 0)
        return 0;
    uint64_t generation = first_generation(watch, bumps, tid, &usable);
    const struct thread_identity *me = thread_identity();
    int slot = usable && me && me->ngroups >= 0 ? first_slot(known, count, tid, &kept) : -1;
    if (slot < 0)
        return 0;
    int pidfd = kept >= 0 ? kept : (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD); /* before the read */
    if (pidfd < 0) {
        first_credentials_off = errno == EINVAL;
        return 0;
    }
    char text[8192];
    struct first_read r;
    uint64_t id = notif->id;
    ssize_t size = first_status(tid, text, sizeof text);
    int read = size > 0 && first_parse(text, (size_t)size, &r) == 0 &&
               ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0; /* the read was of the notifier */
    uint64_t now = first_generation(watch, bumps, tid, &usable);
    if (!read || !usable || now != generation || (kept >= 0 && !pidfd_alive(kept))) {
        if (kept < 0)
            close(pidfd);
        return 0;
    }
    struct published *p = &known[slot];
    uint32_t fresh = kept < 0 || p->fresh == FRESH_OWN ? FRESH_OWN : FRESH_PYTHONS;
    if (kept < 0 && p->tid != 0) /* a fresh record of a thread gone, under C's own pidfd */
        close(p->pidfd);
    uint64_t wanted;
    int alike;
    uint32_t what = first_switches(me, &r, &wanted, &alike);
    *p = (struct published){.tid = tid, .pidfd = pidfd, .generation = generation, .what = what, .uid = r.uid,
                            .gid = r.gid, .ngroups = r.ngroups, .effective = wanted, .umask = r.umask,
                            .access_alike = (uint32_t)alike,
                            .real_uid = r.real_uid, .real_gid = r.real_gid, .capabilities = r.capabilities, .fresh = fresh};
    memcpy(p->groups, r.groups, r.ngroups * sizeof *r.groups);
    if (reads)
        ++*reads;
    *a = (struct acting){.what = p->what, .uid = p->uid, .gid = p->gid, .ngroups = p->ngroups, .effective = p->effective,
                         .groups = p->groups, .umask = p->umask, .access_alike = p->access_alike};
    return 1;
}

/* first_read(tid) -> (Credentials' fields: uid, gid, groups, umask, capabilities, real_uid,
 * real_gid; then what the loop publishes with them: SWITCH_*, the capabilities switched to,
 * access_alike) | None: the loop's read and cut of /proc/TID/status and its switch against
 * this thread, for tests/test_first_credentials.py to hold to procfs.py and served_stat.py
 * switch_of. None where the loop would decline. */
static PyObject *
hp_first_read(PyObject *self, PyObject *args)
{
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid))
        return NULL;
    char text[8192];
    struct first_read r;
    const struct thread_identity *me = thread_identity();
    ssize_t size = first_status(tid, text, sizeof text);
    if (!me || me->ngroups < 0 || size <= 0 || first_parse(text, (size_t)size, &r) < 0)
        Py_RETURN_NONE;
    uint64_t wanted;
    int alike;
    uint32_t what = first_switches(me, &r, &wanted, &alike);
    PyObject *groups = PyTuple_New(r.ngroups);
    for (uint32_t i = 0; groups && i < r.ngroups; i++)
        PyTuple_SET_ITEM(groups, i, PyLong_FromUnsignedLong(r.groups[i]));
    if (!groups)
        return NULL;
    return Py_BuildValue("(IINIKIIIKi)", r.uid, r.gid, groups, r.umask, (unsigned long long)r.capabilities, r.real_uid,
                         r.real_gid, what, (unsigned long long)wanted, alike);
}

#define FIRST_CREDENTIALS_METHODS \
    {"first_read", hp_first_read, METH_VARARGS, "first_read(tid) -> (credentials..., what, effective, alike) | None"}

#endif
