/* A quiet VM's metadata change through an fd of its own served in the ptrace driver's C loop
 * (tracer.c's wait_stop): at the seccomp stop of fchmod, fchown, or utimensat with no path and
 * no flag (futimens), the change made as served_fdmeta.h's serve_fdmeta makes it (fd_change.h:
 * the same duplicate, the same test of the VM's own mounts, the same change acting as the
 * caller, the same note), then the call skipped with its answer, with no return to Python.
 * hvfs/intercept/ptrace/writes.py says when (with the write-opens and unlinks:
 * ``HVFS_SERVED_WRITE=0`` turns all off); tests/test_served_fdmeta.py holds it to the Python
 * path under ``--driver ptrace``.
 *
 * The fd: the caller is stopped, but its siblings run and share its fd table, so the number
 * may name another file by the time anyone looks. The duplicate is taken with pidfd_getfd
 * through the pidfd the caller's credentials were published under (published_in's record),
 * and every decision is made on it alone. Why that pidfd names the stopped thread: a pidfd
 * names a struct pid, not a number; published_in polled it alive (its thread holds tid) and
 * the stopped thread holds tid too, since a traced thread's number stays its own until its
 * tracer reaps it, and only this thread reaps. One case moves a struct pid to another thread:
 * a sibling's exec kills the stopped leader and takes over its pid (de_thread), and that
 * thread then stops at its exec event, which only this loop resumes. So once the duplicate
 * is taken, PTRACE_GET_SYSCALL_INFO must still find tid at a seccomp stop: then no exec has
 * taken tid over before the duplicate was made (after it, the duplicate is already of the
 * caller's table), as ID_VALID proves it under seccomp. The times are read (process_vm_readv
 * into our buffer, used as read) before that check too.
 *
 * Credentials: as tracer_unlink.h says (published_in, and nothing served once this wait
 * passed an exec). Declined (Python serves the stop from its start) wherever serve_fdmeta
 * declines, and as an unlink is: an audited or hooked VM, a negative fd, utimensat with a
 * path or a flag, unreadable times, a caller whose credentials are not published, an fd it
 * does not have, an O_PATH one, anything not the VM's own object (Python answers EPERM and
 * its warning), a deleted file, a failed switch; once this wait has reaped an exit or passed
 * an exec, and past SERVED_PER_WAIT served in one wait. A failed change is answered its
 * errno (nothing changed); a failed note EIO, as the dispatch answers a failed record.
 */
#ifndef HVFS_TRACER_FDMETA_H
#define HVFS_TRACER_FDMETA_H

#include "fd_change.h"

#define NR_FCHMOD 91
#define NR_FCHOWN 93
#define NR_UTIMENSAT 280
#define COUNTED_FDMETA 12 /* served_stat.h's counts: COUNTS_CHMOD * SERVED_OUTCOMES */
/* Serves the fd metadata change pid is stopped at (regs), as the header says: 1 when answered
 * here, 0 when it is Python's. Without the GIL (the note queued: note_change). */
static int
served_fdmeta_here(const struct write_context *w, pid_t pid, const regs_t *regs, struct served_writes *done,
                   struct passing *seen)
{
    int32_t call = (int32_t)(regs->orig_rax & 0xFFFFFFFFu), number = (int32_t)regs->rdi;
    const __u64 args[4] = {regs->rdi, regs->rsi, regs->rdx, regs->r10};
    int kind = call == NR_FCHMOD ? CHANGE_MODE : call == NR_FCHOWN ? CHANGE_OWNER : CHANGE_TIMES;
    if (call != NR_FCHMOD && call != NR_FCHOWN && call != NR_UTIMENSAT)
        return 0;
    if (number < 0 || (kind == CHANGE_TIMES && (args[1] != 0 || (args[3] & UINT32_MAX) != 0)))
        return 0;
    if (!w->own_count || !__atomic_load_n(w->quiet, __ATOMIC_ACQUIRE) || seen->nexits || seen->execs ||
        done->served + done->refused + done->unlinked + done->changed + done->continued >= SERVED_PER_WAIT)
        return 0;
    struct acting a = {0};
    if (!published_in(w->watch, w->bumps, w->known, w->known_count, pid, &a))
        return 0;
    int pidfd = published_pidfd(w->known, w->known_count, pid);
    struct timespec times[2];
    const struct timespec *asked = kind == CHANGE_TIMES && args[2] ? times : NULL;
    /* Safe because: process_vm_readv writes only within our buffer; the times are used as read. */
    if (pidfd < 0 || (asked && read_remote(pid, args[2], (char *)times, sizeof times) != (ssize_t)sizeof times))
        return 0;
    long fd = syscall(SYS_pidfd_getfd, pidfd, number, 0);
    if (fd < 0)
        return 0;
    char path[PATH_MAX_BYTES + 1];
    int status = fcntl((int)fd, F_GETFL);
    size_t length = !at_seccomp_stop(pid) || status < 0 || status & O_PATH || !own_object(w->own, w->own_count, (int)fd)
                        ? 0
                        : fd_vm_path((int)fd, path, sizeof path);
    int failed = ECANCELED;
    if (length && act_switch(&a) == 0)
        failed = change_fd(kind, (int)fd, args, asked);
    act_restore(&a);
    close((int)fd);
    if (failed == ECANCELED)
        return 0;
    uint64_t *count = w->counts + COUNTED_FDMETA + 3 * kind; /* [COUNTS_CHMOD + kind][SERVED_*] */
    if (!failed && note_change(w->note, path, length, 1, 1) < 0)
        failed = EIO;
    count[failed ? 2 : 0]++; /* SERVED_FAILED, SERVED_DONE */
    done->changed++;
    answer_skipped(pid, regs, -failed, 0);
    return 1;
}

#endif /* HVFS_TRACER_FDMETA_H */
