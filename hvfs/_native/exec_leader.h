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

/* RULE_EXEC_IF_LEADER: whether the exec of notif may continue here, as
 * hvfs/intercept/credcache.py before_change continues one: its caller is its process's
 * leader (an exec from another thread takes over the leader's struct pid, which Python
 * must see: it distrusts the VM's kept credentials), proved while the notification is
 * still pending; and if so the credential generation (bumps: a uint64 that CredWatch adds
 * to its own) is bumped, before the call continues. pidfd_open without PIDFD_THREAD
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
    __atomic_add_fetch(bumps, 1, __ATOMIC_SEQ_CST);
    return 1;
}

#endif
