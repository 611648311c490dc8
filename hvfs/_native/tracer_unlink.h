/* A quiet VM's unlink of a plain path served in the ptrace driver's C loop (tracer.c's
 * wait_stop): at the seccomp stop of unlink, or unlinkat with no flag, the name removed as
 * served_mutate.h's serve_unlink removes it (write_open.h's read_write_path: the path read
 * once; the same published credentials; unlink_named.h: the same unlink as the caller; the
 * same note), then the call skipped with 0, with no return to Python. Nothing is installed,
 * so no kept socket is needed. hvfs/intercept/ptrace/writes.py says when (with the write-opens:
 * ``HVFS_SERVED_WRITE=0`` turns both off); tests/test_ptrace_unlink.py holds it to the Python
 * path.
 *
 * Why the name removed is the one the caller named: the path is read once, by
 * process_vm_readv into our buffer, and only that copy is looked up; the caller's other
 * threads run meanwhile and may rewrite its memory, which is then no longer read. A relative
 * path's base (/proc/TID/cwd or /proc/TID/fd/N, which another thread may change) is read as
 * text and identity, found again in the writable view by its text and taken only where it is
 * that very directory (write_base), as under seccomp. The caller's number is its own
 * throughout: a traced thread is reaped by this thread alone, so nothing answers another.
 *
 * Credentials: as tracer_write.h says, a thread's published record is of the credentials it
 * holds at its stop; every call that may change them comes back to Python, which bumps the
 * watch before it runs. One case is new here, since no kept socket is needed: with no socket
 * kept in the VM, this wait may itself have passed a leader's exec event (``here``), after
 * which Python bumps the watch only once the wait returns (a set-id program's credentials):
 * nothing is served once an exec has been passed in this wait.
 *
 * Declined (Python serves the stop from its start) wherever serve_unlink declines: an audited
 * or hooked VM (quiet[0] off), unlinkat with any flag (AT_REMOVEDIR: an Rmdir), a bad dirfd, a
 * path that is not plain, a base Python would find otherwise, a caller whose credentials are
 * not published, and every failed unlink (nothing changed: Python answers it); and, as a
 * write-open is, once this wait has reaped an exit, and past SERVED_PER_WAIT served in one
 * wait. A failed note answers EIO, as the dispatch answers a failed record.
 */
#ifndef HVFS_TRACER_UNLINK_H
#define HVFS_TRACER_UNLINK_H

#include "unlink_named.h"

#define NR_UNLINK 87
#define NR_UNLINKAT 263
#define COUNTED_UNLINK 9 /* served_stat.h's counts: COUNTS_UNLINK * SERVED_OUTCOMES */

/* Serves the unlink pid is stopped at (regs), as the header says: 1 when answered here, 0 when
 * it is Python's. Without the GIL (the note queued: note_change). */
static int
served_unlink_here(const struct write_context *w, pid_t pid, const regs_t *regs, struct served_writes *done,
                   struct passing *seen)
{
    int32_t call = (int32_t)(regs->orig_rax & 0xFFFFFFFFu), dirfd = AT_FDCWD;
    uint64_t path_at = regs->rdi;
    if (call == NR_UNLINKAT) {
        if ((regs->rdx & UINT32_MAX) != 0)
            return 0; /* AT_REMOVEDIR, or a flag the kernel refuses: Python's */
        dirfd = (int32_t)regs->rdi, path_at = regs->rsi;
    } else if (call != NR_UNLINK)
        return 0;
    if (!__atomic_load_n(w->quiet, __ATOMIC_ACQUIRE) || seen->nexits || seen->execs ||
        done->served + done->refused + done->unlinked + done->changed + done->continued >= SERVED_PER_WAIT || (dirfd < 0 && dirfd != AT_FDCWD) ||
        path_at == 0)
        return 0;
    struct acting a = {0};
    if (!published_in(w->watch, w->bumps, w->known, w->known_count, pid, &a))
        return 0;
    char path[PATH_MAX_BYTES + 1], base[PATH_MAX_BYTES + 1], whole[2 * PATH_MAX_BYTES + 2];
    struct stat identity = {0};
    int made = read_write_path(pid, dirfd, path_at, path, base, whole, &identity);
    if (made <= 0 || unlink_named(w->rw_root, NULL, path, base, &identity, &a) != 0)
        return 0;
    uint64_t *count = w->counts + COUNTED_UNLINK;
    done->unlinked++;
    if (note_change(w->note, whole, (size_t)made, 1, 0) < 0) {
        count[2]++; /* SERVED_FAILED, as serve_unlink counts it */
        answer_skipped(pid, regs, -EIO, 0);
        return 1;
    }
    count[0]++; /* SERVED_DONE */
    answer_skipped(pid, regs, 0, 0);
    return 1;
}

#endif /* HVFS_TRACER_UNLINK_H */
