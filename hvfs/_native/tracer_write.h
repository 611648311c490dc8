/* A quiet VM's write-open served in the ptrace driver's C loop (tracer.c's wait_stop): at the
 * seccomp stop of open, openat or creat, the file opened as served_write.h's serve_write opens
 * it (write_open.h: the same path read once, the same published credentials, the same open
 * and note), then installed through the process's kept socket by tracer_receive.h's
 * receive (kcmp of the number before, of what was received after) and the thread resumed,
 * with no return to Python. hvfs/intercept/ptrace/tracer.py (Tracer.serve_writes) says
 * when; tests/test_ptrace_write.py holds it to the Python path.
 *
 * Declined (Python serves the stop from its start, as before) wherever serve_write declines,
 * and besides: a thread with no kept socket in the table Python hands each wait (kept.py:
 * only processes whose socket is still their own; none while a fork, an exec or a first
 * stop is not yet handled by Python, since with a kept socket those all come back to
 * Python), a number the kcmp before the open finds holding anything else, and any stop
 * once this wait has reaped an exit or found a status for Python (its queued stops: Python
 * has not yet seen what comes before them), and past SERVED_PER_WAIT served in one wait.
 *
 * Credentials: the ptrace driver's one KnownCredentials (its Inspector's) publishes, as a
 * seccomp worker's does, each thread it read under a PIDFD_THREAD pidfd and the watch's
 * generation. The tracer thread takes the VM's stops in turn, and every call that may
 * change a thread's credentials (set*id, setgroups, capset, prctl, umask: the filter stops
 * them) comes back to Python, which bumps the generation before it lets the call run (a
 * umask: run to its exit, bumped again); an exec event is Python's too while a socket is
 * kept (``here`` is 0 then), and it bumps there. So a thread's record here is of the
 * credentials it holds at its open: stopped in it, it changes nothing meanwhile.
 *
 * A write-open of a character device under /dev that the seccomp loop would continue
 * (served_dev.h) is continued here alike, by letting the call run (served_dev_here): the
 * same text check and probe (dev_probe.h), as the caller, and Python's count. It needs no
 * kept socket (nothing is installed), so it is declined, as tracer_unlink.h's unlink is,
 * once this wait has passed an exec (whose bump of the generation is Python's, after the
 * wait) or reaped an exit. The thread is stopped and only this tracer reaps it: its number
 * is its own until then (its path is read without an ID_VALID: none exists here), but for
 * one case, a sibling's exec that kills the stopped leader and takes over its pid
 * (tracer_fdmeta.h). So the call is let run only where PTRACE_GET_SYSCALL_INFO still finds
 * the thread at a seccomp stop: resuming the sibling at its exec event instead would hide
 * that event from Python (its credentials' bump, its exec check). A sibling's exec between
 * that check and PTRACE_CONT (one syscall later) is not excluded: Python's own resume of
 * a continued stop, and every answer this loop makes, leave the same window, wider.
 *
 * After the open: the note queued without the GIL, as served_write.h's "The change set" says;
 * a failed note (the queue full, ChangeSet.note raised) answers EIO, as the dispatch answers a failed record; a
 * failed receive answers what the Python path would (EMFILE, else EIO) and its socket is
 * given up (``doubted``, for Python); a thread that died meanwhile is handed back as an
 * exit.
 */
#ifndef HVFS_TRACER_WRITE_H
#define HVFS_TRACER_WRITE_H

#include "dev_probe.h" /* dev_path, char_device_in: served_dev.h's decision */
#include "write_open.h"

#define NR_OPEN 2
#define NR_OPENAT 257
#define NR_CREAT 85
#define COUNTED_OPEN 6 /* served_stat.h's counts: COUNTS_OPEN * SERVED_OUTCOMES */
#define COUNTED_ALL 21 /* and all of them: COUNTED_KINDS * SERVED_OUTCOMES */
#define DOUBTED_KEPT 8
/* Served in one wait before the next write-open goes back to Python: its round then collects
 * the stops pending meanwhile (fair to every thread: a thread always ready again by the
 * next waitpid could otherwise be reported first, open after open). */
#define SERVED_PER_WAIT 16

/* One thread's kept socket (hvfs/intercept/ptrace/kept.py KeptSockets.table, KEPT_ENTRY). */
struct kept_entry {
    int32_t tid, number, sock;
    uint32_t length; /* of address */
    char address[108];
};

struct write_context {
    int rw_root;
    PyObject *note; /* the VM's ChangeSet.c_note (write_open.h note_change), borrowed from the argument */
    const volatile uint8_t *quiet;
    const struct watch_state *watch;
    const uint64_t *bumps;
    const struct published *known;
    size_t known_count;
    uint64_t *counts;
    const struct kept_entry *kept;
    size_t kept_count;
    const char *own; /* tracer_fdmeta.h: the writable view's mount ids, own_count uint64 */
    size_t own_count;
    Py_buffer views[7];
};

/* What one wait served here, for Python: served opens, unlinks (tracer_unlink.h), fd metadata
 * changes (tracer_fdmeta.h), device write-opens continued (served_dev_here), and threads whose socket to give up; and, for SERVED_PER_WAIT alone, the opens answered with an errno
 * (counted in counts). */
struct served_writes {
    long served, refused, unlinked, changed, continued;
    int doubted[DOUBTED_KEPT], ndoubted;
};

/* The context from wait_stop's ``writes``: None, or (rw_root, note, quiet, watch, bumps,
 * known, counts, kept, own mounts): 1, 0 for None, -1 with an exception. */
static int
write_context_of(PyObject *argument, struct write_context *w)
{
    memset(w, 0, sizeof *w);
    if (argument == Py_None)
        return 0;
    Py_buffer *v = w->views;
    if (!PyArg_ParseTuple(argument, "iOy*y*y*y*w*y*y*", &w->rw_root, &w->note, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                          &v[6]))
        return -1;
    if (v[0].len < 1 || v[1].len < (Py_ssize_t)sizeof(struct watch_state) || v[2].len < (Py_ssize_t)BUMPS_SIZE ||
        v[4].len < (Py_ssize_t)(COUNTED_ALL * sizeof(uint64_t))) {
        PyErr_SetString(PyExc_ValueError, "writes: a buffer is too small");
        return -1;
    }
    w->quiet = v[0].buf, w->watch = v[1].buf, w->bumps = v[2].buf, w->known = v[3].buf, w->counts = v[4].buf;
    w->known_count = (size_t)v[3].len / sizeof(struct published);
    w->kept = v[5].buf, w->kept_count = (size_t)v[5].len / sizeof(struct kept_entry);
    w->own = v[6].buf, w->own_count = (size_t)v[6].len / sizeof(uint64_t);
    return 1;
}

static void
release_writes(struct write_context *w)
{
    for (int i = 0; i < 7; i++)
        if (w->views[i].obj)
            PyBuffer_Release(&w->views[i]);
}

/* ``doubted`` as a tuple of tids, or NULL with an exception. */
static PyObject *
doubted_of(const struct served_writes *done)
{
    PyObject *tids = PyTuple_New(done->ndoubted);
    for (int i = 0; tids != NULL && i < done->ndoubted; i++) {
        PyObject *tid = PyLong_FromLong(done->doubted[i]);
        if (tid == NULL)
            Py_CLEAR(tids);
        else
            PyTuple_SET_ITEM(tids, i, tid);
    }
    return tids;
}

/* The call skipped, returning result, the thread resumed (delivering signum); killed where
 * that fails but for ESRCH (killed meanwhile), as resume_installed. */
static void
answer_skipped(pid_t pid, const regs_t *stopped, long long result, int signum)
{
    /* Not at a call's stop (its seccomp stop, or the exit of the receive run in its place):
     * killed, or a sibling's exec took over its pid (the leader's), and the registers and the
     * resume would be the new program's at its exec event, which then Python would never see
     * (tests/adversarial/test_ptrace_exec_takeover.py). Left as it is: its status comes next. */
    if (!at_call_stop(pid))
        return;
    regs_t back = *stopped;
    back.orig_rax = (unsigned long long)-1;
    back.rax = (unsigned long long)result;
    if ((ptrace(PTRACE_SETREGS, pid, 0, &back) < 0 || ptrace(PTRACE_CONT, pid, 0, (void *)(long)signum) < 0) &&
        errno != ESRCH) {
        kill(pid, SIGKILL);
        ptrace(PTRACE_CONT, pid, 0, 0);
    }
}

/* After a receive that installed nothing: fd closed, the socket doubted, the call answered
 * (or the thread's death handed back as an exit). */
static void
receive_failed(pid_t pid, const regs_t *stopped, int fd, const struct outcome *out, struct served_writes *done,
               struct passing *seen)
{
    close(fd);
    if ((out->gone || out->result != -EMFILE) && done->ndoubted < DOUBTED_KEPT) /* stopped.py _through_kept */
        done->doubted[done->ndoubted++] = pid;
    if (out->gone) {
        /* its exit, or the exec event of the sibling that took over its pid (run_to_exit), handed
         * back in their order (Python's _on_status handles either); room: only served while no
         * exit is kept */
        if (out->status >= 0) {
            seen->exits[seen->nexits][0] = pid;
            seen->exits[seen->nexits][1] = out->status;
            seen->nexits++;
            seen->stopped |= WIFSTOPPED(out->status);
        }
        return;
    }
    answer_skipped(pid, stopped, out->result == -EMFILE ? -EMFILE : -EIO, out->nsignals ? out->signals[0] : 0);
}

/* Continues the write-open of a device under /dev (path, read once; flags masked) that pid is
 * stopped at, as the header says: 1 when let run here (or the thread died), 0 when it is
 * Python's. Without the GIL. */
static int
served_dev_here(const struct write_context *w, pid_t pid, const char *path, uint64_t flags, struct acting *a,
                struct served_writes *done, const struct passing *seen)
{
    if (seen->execs || !dev_path(path) || act_switch(a) < 0)
        return 0;
    int device = char_device_in(w->rw_root, path, flags & O_NOFOLLOW);
    act_restore(a);
    if (!device)
        return 0;
    if (!at_seccomp_stop(pid)) /* killed, or its pid a sibling's that execs: its status comes next */
        return 1;
    w->counts[COUNTED_OPEN + 1]++; /* SERVED_CONTINUED, as served_dev.h counts it */
    done->continued++;
    if (ptrace(PTRACE_CONT, pid, 0, 0) < 0 && errno != ESRCH) { /* ESRCH: killed meanwhile, its exit comes next */
        kill(pid, SIGKILL);
        ptrace(PTRACE_CONT, pid, 0, 0);
    }
    return 1;
}

/* Serves the write-open pid is stopped at (regs), as the header says: 1 when answered here
 * (or the thread died), 0 when it is Python's. Without the GIL (the note queued: note_change). */
static int
served_write_here(const struct write_context *w, pid_t pid, const regs_t *regs, struct served_writes *done,
                  struct passing *seen)
{
    int32_t call = (int32_t)(regs->orig_rax & 0xFFFFFFFFu), dirfd = AT_FDCWD;
    uint64_t path_at = regs->rdi, flags, creation_mode;
    if (call == NR_OPEN)
        flags = regs->rsi, creation_mode = regs->rdx;
    else if (call == NR_OPENAT)
        dirfd = (int32_t)regs->rdi, path_at = regs->rsi, flags = regs->rdx, creation_mode = regs->r10;
    else if (call == NR_CREAT)
        flags = O_CREAT | O_WRONLY | O_TRUNC, creation_mode = regs->rsi; /* decoders/opening.py CREAT_FLAGS */
    else
        return 0;
    flags &= UINT32_MAX & SERVED_VALID_OPEN;
    uint64_t access = flags & O_ACCMODE;
    if (!(flags & SERVED_WRITE) || !__atomic_load_n(w->quiet, __ATOMIC_ACQUIRE) || seen->nexits ||
        done->ndoubted == DOUBTED_KEPT ||
        done->served + done->refused + done->unlinked + done->changed + done->continued >= SERVED_PER_WAIT)
        return 0;
    if (flags & (O_PATH | SERVED_TMPFILE) || (access != O_WRONLY && access != O_RDWR) || (dirfd < 0 && dirfd != AT_FDCWD) ||
        path_at == 0)
        return 0; /* serve_write's declines */
    const struct kept_entry *kept = NULL;
    for (size_t i = 0; i < w->kept_count && kept == NULL; i++)
        kept = w->kept[i].tid == pid ? &w->kept[i] : NULL;
    struct acting a = {0};
    if (!published_in(w->watch, w->bumps, w->known, w->known_count, pid, &a))
        return 0;
    char path[PATH_MAX_BYTES + 1], base[PATH_MAX_BYTES + 1], whole[2 * PATH_MAX_BYTES + 2];
    struct stat identity = {0};
    int made = read_write_path(pid, dirfd, path_at, path, base, whole, &identity), fd = -1, existed;
    if (made == -2) /* declined by its text alone: a device under /dev, continued there */
        return served_dev_here(w, pid, path, flags, &a, done, seen);
    if (made < 0 || kept == NULL || kept->length > sizeof kept->address || kcmp_file(pid, kept->number, kept->sock) != 0)
        return 0;
    int opened = open_writable(w->rw_root, NULL, path, base, &identity, flags, creation_mode, &a, &fd, &existed);
    uint64_t *count = w->counts + COUNTED_OPEN;
    if (opened == -EEXIST) { /* an exclusive creation that met a regular file: nothing done */
        count[2]++;          /* SERVED_FAILED, as serve_write counts it */
        done->refused++;
        answer_skipped(pid, regs, -EEXIST, 0);
        return 1;
    }
    if (opened < 0)
        return 0;
    if (existed >= 0 && note_change(w->note, whole, (size_t)made, existed, 1) < 0) {
        close(fd);
        count[2]++; /* SERVED_FAILED */
        answer_skipped(pid, regs, -EIO, 0);
        return 1;
    }
    count[0]++; /* SERVED_DONE: the manager's count, the install's failure after it */
    struct sockaddr_un to;
    memset(&to, 0, sizeof to);
    to.sun_family = AF_UNIX;
    memcpy(to.sun_path, kept->address, kept->length);
    socklen_t to_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + kept->length);
    struct outcome out;
    memset(&out, 0, sizeof out);
    receive(pid, regs, kept->sock, &to, to_len, kept->number, fd, MSG_DONTWAIT | (flags & O_CLOEXEC ? MSG_CMSG_CLOEXEC : 0),
            1, &out);
    done->served++;
    if (!out.resumed)
        receive_failed(pid, regs, fd, &out, done, seen);
    return 1;
}

#endif /* HVFS_TRACER_WRITE_H */
