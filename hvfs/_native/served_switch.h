/* Acting as a caller in the C loop: hvfs/manager/creds.py acting_as, for the lookups of a
 * stat or a read-only open served in served_stat.h.
 *
 * Python publishes, with each thread, what acting_as switches for it (served_stat.py
 * switch_of: _switch's test against the manager's identity): the supplementary groups, the
 * fsuid and fsgid, the effective capabilities. Here they are switched in _switch's order
 * (groups; fsgid, then fsuid; capabilities, whenever the ids are switched too, even to the
 * manager's own set: a fsuid leaving 0 has dropped the fs ones, which a caller that kept
 * its capabilities as a non-zero uid holds) and put back in _restore's (fsuid, fsgid;
 * capabilities, whenever the ids or the capabilities were switched, since a fsuid leaving 0
 * drops the fs capabilities from the effective set; groups last, once CAP_SETGID is back).
 * Every call is the raw syscall, which changes this thread only: glibc's setgroups (and
 * set*id) would change every thread of the manager. Like acting_as, nothing is kept
 * switched between requests: the caller's lookups are made switched (the base directory
 * of a relative path, which the caller has looked up already, with the manager's rights,
 * as resolve.py's manager_rights), and the thread is put back before anything else is
 * done with the caller (reading or writing its memory, ID_VALID, answering).
 *
 * A switch that fails (setgroups denied in a user namespace, a fsuid the kernel refused,
 * which setfsuid reports only by its next call) is put back and the request declined:
 * Python serves it, as acting_as. A restore that fails would leave a manager's thread
 * acting as a VM's user: the manager aborts instead (it cannot fail for a thread putting
 * back ids and capabilities it held).
 */
#ifndef HVFS_SERVED_SWITCH_H
#define HVFS_SERVED_SWITCH_H

#include <linux/capability.h>
#include <stdlib.h>

#define PUBLISHED_GROUPS 32 /* credcache.py PUBLISHED_GROUPS */
#define SELF_GROUPS 256     /* the manager's own groups; more: nothing that switches groups is served */
enum { SWITCH_GROUPS = 1, SWITCH_IDS = 2, SWITCH_CAPS = 4 }; /* credcache.py SWITCH_* */

/* This thread's identity outside any switch (creds.py _ThreadIdentity), read once: C runs
 * only outside acting_as, and puts back what it switched before it returns. */
struct thread_identity {
    int known; /* 1 read, -1 unreadable (nothing switched is served on this thread) */
    uint32_t uid, gid;
    int ngroups; /* -1: more than SELF_GROUPS */
    uint32_t groups[SELF_GROUPS];
    struct __user_cap_data_struct caps[2];
};
static __thread struct thread_identity self_identity;

/* One served request's switch: what it takes (a published record's), what was switched. */
struct acting {
    uint32_t what, uid, gid, ngroups;
    uint64_t effective;
    const uint32_t *groups;
    uint32_t umask;    /* the caller's, set by served_write.h alone, around a creation */
    uint32_t access_alike; /* access without AT_EACCESS switches the same (served_link.h) */
    uint32_t switched; /* SWITCH_* done, to be put back */
    int failed;        /* a switch failed: put back, the request declined */
};

static int
capabilities_set(const struct __user_cap_data_struct caps[2])
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    return (int)syscall(SYS_capset, &header, caps);
}

static const struct thread_identity *
thread_identity(void)
{
    struct thread_identity *me = &self_identity;
    if (me->known)
        return me->known > 0 ? me : NULL;
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    long count = syscall(SYS_getgroups, SELF_GROUPS, me->groups);
    me->ngroups = count < 0 ? -1 : (int)count;
    me->uid = (uint32_t)geteuid(), me->gid = (uint32_t)getegid(); /* creds.py _identity's */
    me->known = syscall(SYS_capget, &header, me->caps) < 0 ? -1 : 1;
    return me->known > 0 ? me : NULL;
}

/* creds.py _restore of what a->switched says. */
static void
act_restore(struct acting *a)
{
    const struct thread_identity *me = &self_identity;
    uint32_t switched = a->switched;
    if (!switched)
        return;
    int failed = 0;
    if (switched & SWITCH_IDS) {
        syscall(SYS_setfsuid, me->uid);
        syscall(SYS_setfsgid, me->gid);
        failed |= (uint32_t)syscall(SYS_setfsuid, (uid_t)-1) != me->uid;
        failed |= (uint32_t)syscall(SYS_setfsgid, (gid_t)-1) != me->gid;
    }
    if (switched & (SWITCH_IDS | SWITCH_CAPS))
        failed |= capabilities_set(me->caps) < 0;
    if (switched & SWITCH_GROUPS)
        failed |= syscall(SYS_setgroups, (size_t)me->ngroups, me->groups) < 0;
    if (failed)
        abort(); /* never serve anything more as a VM's user */
    a->switched = 0;
}

/* creds.py _switch of the caller's published credentials, once per request: 0, or -1 (put
 * back, a->failed) where a call failed. */
static int
act_switch(struct acting *a)
{
    if (a->switched || a->failed || !a->what)
        return a->failed ? -1 : 0;
    const struct thread_identity *me = thread_identity();
    if (me == NULL || (a->what & SWITCH_GROUPS && me->ngroups < 0)) {
        a->failed = 1;
        return -1;
    }
    if (a->what & SWITCH_GROUPS) {
        a->switched |= SWITCH_GROUPS;
        if (syscall(SYS_setgroups, (size_t)a->ngroups, a->groups) < 0)
            goto failed;
    }
    if (a->what & SWITCH_IDS) {
        a->switched |= SWITCH_IDS;
        syscall(SYS_setfsgid, a->gid);
        syscall(SYS_setfsuid, a->uid);
        /* setfsuid and setfsgid say nothing of a refusal but the value their next call reads */
        if ((uint32_t)syscall(SYS_setfsgid, (gid_t)-1) != a->gid || (uint32_t)syscall(SYS_setfsuid, (uid_t)-1) != a->uid)
            goto failed;
    }
    if (a->what & (SWITCH_IDS | SWITCH_CAPS)) { /* after the ids even if unchanged: a fsuid off 0 drops the fs ones */
        a->switched |= SWITCH_CAPS;
        struct __user_cap_data_struct caps[2];
        memcpy(caps, me->caps, sizeof caps); /* permitted and inheritable kept */
        caps[0].effective = (uint32_t)a->effective, caps[1].effective = (uint32_t)(a->effective >> 32);
        if (capabilities_set(caps) < 0)
            goto failed;
    }
    return 0;
failed:
    act_restore(a);
    a->failed = 1;
    return -1;
}

#endif
