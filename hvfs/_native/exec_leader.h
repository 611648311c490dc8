/* exec_of_leader: the seccomp driver's C loop continuing an exec (hotpath.c serve,
 * RULE_EXEC_IF_LEADER; hvfs/intercept/compiled.py says when the rule is given). Included by
 * hotpath.c, which it would push past 500 lines.
 */
#ifndef HVFS_EXEC_LEADER_H
#define HVFS_EXEC_LEADER_H

#include <linux/seccomp.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cred_bumps.h" /* tid_bumps */

/* RULE_EXEC_IF_LEADER: whether the exec of notif may continue here, as
 * hvfs/intercept/credcache.py before_change continues one: its caller is its process's
 * leader (an exec from another thread takes over the leader's struct pid, which Python
 * must see: it distrusts the VM's kept credentials), proved while the notification is
 * still pending; and if so its thread's part of the credential generation (bumps:
 * BUMPS_SIZE bytes that CredWatch adds to its own) is bumped, before the call continues.
 * Only that thread's: the exec kills its process's other threads (their pidfds poll
 * exited before the new credentials are committed), and changes no other process's. A
 * failed exec (gcc trying its program paths) needs no bump at all, but its outcome is
 * not known here; the bump costs its thread one read of /proc, no other thread any. pidfd_open without PIDFD_THREAD
 * refuses a thread that is not a leader (EINVAL); the ID_VALID check after it proves the
 * number it named was still the notifying thread's. Anything unsure is Python's. */
static int
exec_of_leader(int listener, const struct seccomp_notif *notif, uint64_t *bumps)
{
    if (!bumps || notif->pid == 0)
        return 0;
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)notif->pid, 0);
    if (pidfd < 0)
        return 0;
    __u64 id = notif->id;
    int pending = ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
    close(pidfd);
    if (!pending)
        return 0;
    __atomic_add_fetch(tid_bumps(bumps, (pid_t)notif->pid), 1, __ATOMIC_SEQ_CST);
    return 1;
}

#endif
