/* The ptrace driver's hot loop in C: wait for the next stop that needs a decision,
 * passing the others through here, and apply an answer with one call, each with the
 * GIL released and without python-ptrace's and ctypes' per-call cost.
 *
 * Plain CPython C API, built by setup.py as the extension hvfs._native._tracer; used by
 * hvfs/intercept/ptrace/ (waits.py, stopped.py) where it is built, the Python path
 * otherwise and under HVFS_NATIVE=0. Every decision stays in Python but for a quiet VM's
 * plain write-opens, unlinks and fd metadata changes (tracer_write.h, tracer_unlink.h,
 * tracer_fdmeta.h: what the seccomp loop serves in C, by the same code): this file waits,
 * resumes, and runs the served open's recvmsg with the same checks as the Python path
 * (stopped.py's _receive: the cmsg read back, kcmp of the received number against the
 * manager's file). A new tracee's stops and a leader's exec event are answered here only
 * while Python says it has nothing to do at them (wait_stop's ``here``: no kept socket, no
 * exec to verify).
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef __x86_64__
#error "the ptrace driver's registers are x86_64's (docs/ptrace.md, Limits)"
#endif

#ifndef PTRACE_LISTEN
#define PTRACE_LISTEN 0x4208
#endif
#ifndef PTRACE_EVENT_SECCOMP
#define PTRACE_EVENT_SECCOMP 7
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif
/* wait_stop's ``here``: what Python has nothing to do at, for now (waits.py's _here). */
#define HERE_BIRTHS 1 /* fork, vfork and clone events, and a new tracee's first stop */
#define HERE_EXECS 2  /* the exec event of a thread group's leader */
#define SYSCALL_STOP (SIGTRAP | 0x80) /* with PTRACE_O_TRACESYSGOOD */
#define KCMP_FILE 0
#define RED_ZONE 128
/* The scratch buffer below the red zone, as stopped.py lays it out: struct msghdr,
 * struct iovec at 64, one byte at 80, the cmsg of one fd at 96, 128 bytes in all. */
#define IOV_AT 64
#define BYTE_AT 80
#define CMSG_AT 96
#define SCRATCH 128

typedef struct user_regs_struct regs_t;

static PyObject *
raise_errno(int code, const char *what)
{
    errno = code;
    return PyErr_SetFromErrnoWithFilename(PyExc_OSError, what);
}

static int
regs_from(PyObject *raw, regs_t *regs)
{
    Py_buffer view;
    if (PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view.len != (Py_ssize_t)sizeof *regs) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "registers: not a user_regs_struct");
        return -1;
    }
    memcpy(regs, view.buf, sizeof *regs);
    PyBuffer_Release(&view);
    return 0;
}

/* Whether pid is still at the stop its wait ``status`` reported (exec_tracer.py's _stands): a
 * leader's stop, once reported, may be ended by a sibling's exec that kills it and takes over
 * its pid, and a resume meant for that stop would then resume the new program at its exec
 * event (whose siginfo is SIGTRAP | PTRACE_EVENT_EXEC << 8), which the wait then never
 * reports. An event stop's si_code is its status's SIGTRAP | event << 8, a signal's si_signo
 * its signal, and a SIGTRAP's si_code no event's (any other signal's si_code is the sender's,
 * which a process may set for itself). Killed meanwhile: false too (its exit comes next). */
static int
still_at(pid_t pid, int status)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (ptrace(PTRACE_GETSIGINFO, pid, 0, &info) < 0)
        return 0;
    int sig = WSTOPSIG(status), event = status >> 16;
    if (event || sig == SYSCALL_STOP)
        return info.si_code == ((status >> 8) & 0xffff);
    return info.si_signo == sig && (sig != SIGTRAP || !(info.si_code > 0 && info.si_code >> 8));
}

/* Resume after a stop that needs no decision; 0, or the errno (ESRCH: killed meanwhile, or no
 * longer at that stop: still_at, its next status comes from the wait). */
static int
pass_through(pid_t pid, int status)
{
    int sig = WSTOPSIG(status), event = status >> 16;
    long done;
    if (!still_at(pid, status))
        return ESRCH;
    if (sig == SYSCALL_STOP) /* left over from an install the thread died in */
        done = ptrace(PTRACE_CONT, pid, 0, 0);
    else if (event == PTRACE_EVENT_STOP) /* a group-stop: kept until SIGCONT, as job control wants */
        done = ptrace(PTRACE_LISTEN, pid, 0, 0);
    else /* a signal-delivery-stop: deliver it */
        done = ptrace(PTRACE_CONT, pid, 0, (void *)(long)sig);
    return done < 0 ? errno : 0;
}

/* Whether a stop needs no decision. Only stops that every thread reaches after its first
 * stop, which always comes back to Python: with PTRACE_SEIZE a new tracee's first stop is
 * its PTRACE_EVENT_STOP (the kernel handles that trap before it dequeues any signal), and
 * one taken here as a group-stop (a thread born during one) stays stopped by LISTEN until
 * a SIGCONT, whose stop (SIGTRAP) comes back to Python before it runs an instruction. */
static int
needs_no_decision(int status)
{
    if (!WIFSTOPPED(status))
        return 0;
    int sig = WSTOPSIG(status), event = status >> 16;
    if (sig == SYSCALL_STOP)
        return 1;
    if (event == 0)
        return sig != SIGTRAP; /* a bare SIGTRAP stop is left to Python, as before */
    if (event == PTRACE_EVENT_STOP)
        return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
    return 0;
}

/* Whether a stop is answered here because Python, by ``here``, has nothing to do at it:
 * resumed as the Python path would (exec_tracer.py's _on_status), ``execs`` counting the
 * exec events. A fork's child needs no word to Python: its group is read from /proc
 * when it is first needed (kept.py's KeptSockets.group), and with no kept socket in the
 * VM it holds no copy of one. An exec whose caller is not its leader takes over the
 * leader's pid (Python's tables must follow): never here. */
static int
answered_here(pid_t pid, int status, int here, long *execs)
{
    if (!WIFSTOPPED(status))
        return 0;
    int sig = WSTOPSIG(status), event = status >> 16;
    long done;
    if (here & HERE_BIRTHS) {
        int birth = event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK || event == PTRACE_EVENT_CLONE;
        /* a new tracee's first stop (SEIZE), or a listen woken by SIGCONT: both resumed */
        if (birth || (event == PTRACE_EVENT_STOP && sig == SIGTRAP)) {
            if (!still_at(pid, status)) /* a leader's exec'ing sibling took over: its exec event comes next */
                return 1;
            done = ptrace(PTRACE_CONT, pid, 0, 0);
            return done == 0 || errno == ESRCH;
        }
    }
    if ((here & HERE_EXECS) && event == PTRACE_EVENT_EXEC) {
        unsigned long former = 0;
        if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &former) < 0 || former != (unsigned long)pid)
            return 0;
        done = ptrace(PTRACE_CONT, pid, 0, 0);
        if (done == 0 || errno == ESRCH) {
            (*execs)++;
            return 1;
        }
    }
    return 0;
}

#include "tracer_spin.h" /* spun_wait: the waits polled briefly before they block */
#include "tracer_met.h"  /* met: what an install's wait met of other tracees */

/* The next status: waited for (exits included), or with ``pending`` a stop already there
 * (waitid without WEXITED: an exit is never reaped so), 0 when there is none. */
static pid_t
next_status(int pending, int *status)
{
    static __thread int bursting; /* this tracer thread's stops come in a burst (tracer_spin.h) */
    if (met.n) /* older than any the kernel has for this wait */
        return met_take(status);
    if (!pending)
        return spun_wait(-1, status, __WALL | __WNOTHREAD, &bursting);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_ALL, 0, &info, WSTOPPED | WNOHANG | __WALL | __WNOTHREAD) < 0)
        return errno == ECHILD ? 0 : -1; /* ECHILD: only zombies left, which the next wait reaps */
    *status = info.si_status << 8 | 0x7f;
    return info.si_pid;
}

#define EXITS_KEPT 64 /* exits reaped in one wait_stop before it returns anyway */
#define QUEUED_KEPT 32 /* stops already pending collected by one blocking wait_stop */

/* What one wait hands to Python besides its status: the stops passed and the exits reaped;
 * ``stopped``: among the exits, a stop (tracer_write.h receive_failed: the exec event of a
 * sibling that took over a served thread's pid), on which Python must act before any wait. */
struct passing {
    long passed, execs;
    int exits[EXITS_KEPT][2], nexits, stopped;
};

/* The exits an install served here reaped (met), moved to the wait's in their order; where they do
 * not fit, the wait returns at once (``stopped``) and hands the rest back at its end. */
static void
met_exits_to(struct passing *seen)
{
    int kept = 0;
    for (int i = 0; i < met.n; i++) {
        if (ended_status(met.at[i][1]) && !seen->stopped && seen->nexits < EXITS_KEPT) {
            seen->exits[seen->nexits][0] = met.at[i][0];
            seen->exits[seen->nexits][1] = met.at[i][1];
            seen->nexits++;
            continue;
        }
        seen->stopped |= ended_status(met.at[i][1]);
        memcpy(met.at[kept++], met.at[i], sizeof met.at[i]);
    }
    met.n = kept;
}

#include "tracer_receive.h" /* send_fd, run_to_exit, receive: a served open's install */
#include "tracer_write.h"   /* served_write_here: a write-open served in this loop */
#include "tracer_unlink.h"  /* served_unlink_here: an unlink served in this loop */
#include "tracer_fdmeta.h"  /* served_fdmeta_here: a fchmod, fchown or futimens served in this loop */

/* One status Python must handle (next_status, the stops needing no decision and those
 * ``here`` leaves to C passed, exits kept in ``seen``, the write-opens ``w`` serves
 * here counted in ``done``): its pid, 0 when none (``pending``), -1 with errno.
 * ``have_regs``: a seccomp stop's registers read into ``regs``. */
static pid_t
for_python(int pending, int here, int *status, regs_t *regs, int *have_regs, struct passing *seen,
           const struct write_context *w, struct served_writes *done)
{
    *have_regs = 0;
    for (;;) {
        pid_t pid = next_status(pending, status);
        if (pid == 0) {
            *status = 0;
            return 0;
        }
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (needs_no_decision(*status)) {
            int code = pass_through(pid, *status);
            if (code == 0 || code == ESRCH) { /* ESRCH: killed meanwhile, its exit comes next */
                seen->passed++;
                continue;
            }
            return pid; /* an unexpected failure: Python handles (and logs) this stop */
        }
        if (here && answered_here(pid, *status, here, &seen->execs)) {
            seen->passed++;
            continue;
        }
        if ((WIFEXITED(*status) || WIFSIGNALED(*status)) && seen->nexits < EXITS_KEPT) {
            seen->exits[seen->nexits][0] = pid;
            seen->exits[seen->nexits][1] = *status;
            seen->nexits++;
            continue;
        }
        if (WIFSTOPPED(*status) && (*status >> 16) == PTRACE_EVENT_SECCOMP) {
            *have_regs = ptrace(PTRACE_GETREGS, pid, 0, regs) == 0;
            if (*have_regs && w != NULL &&
                (served_write_here(w, pid, regs, done, seen) || served_unlink_here(w, pid, regs, done, seen) ||
                 served_fdmeta_here(w, pid, regs, done, seen))) {
                met_exits_to(seen); /* what its install reaped: Python's before the status it returns */
                if (seen->stopped) { /* none for Python but that stop, handed back with the exits */
                    *have_regs = 0;
                    *status = 0;
                    return 0;
                }
                continue;
            }
        }
        return pid;
    }
}

struct queued {
    pid_t pid;
    int status, have_regs;
    regs_t regs;
};

static PyObject *
stop_tuple(pid_t pid, int status, const regs_t *regs, int have_regs)
{
    if (have_regs)
        return Py_BuildValue("iiy#", pid, status, (const char *)regs, (Py_ssize_t)sizeof *regs);
    return Py_BuildValue("iiO", pid, status, Py_None);
}

/* wait_stop(pending, here, writes) -> (pid, status, regs | None, passed, execs, exits, queued, more,
 *                                    served, doubted, unlinked, changed, continued, ended)
 *
 * Waits (waitpid(-1, __WALL | __WNOTHREAD), the GIL released) until a stop or an exit
 * that Python must handle: a seccomp stop (returned with its registers, read here), a
 * fork, clone, vfork or exec event, a new tracee's first stop, an exit. The stops that
 * need no decision (needs_no_decision), and those ``here`` (HERE_BIRTHS, HERE_EXECS)
 * leaves to this loop (answered_here), are resumed here; ``passed`` counts them,
 * ``execs`` the exec events among them. An exit is reaped and waited past too (its real
 * parent, pid 1 say, learns of it only once the tracer has reaped it: no wait for Python
 * there), and handed back in ``exits``, ((pid, status), ...) in their order, which the
 * caller must handle before the status returned (their pids may be reused by then).
 * Once a status is found, the stops already pending are collected in the same call, as
 * ``pending`` calls would (never an exit; ``here`` as given: Python's exits can only
 * widen it): ``queued``, ((pid, status, regs | None), ...) in arrival order, for the
 * driver's round after the status; ``more`` when QUEUED_KEPT were taken and others may
 * wait (then ``pending`` calls). With ``pending`` true, only a stop already there, never
 * an exit: pid 0 when there is none (the driver's rounds, exec_tracer.py's _next), and
 * nothing queued; pid 0 too, either way, when ``exits`` ends with a stop (a served thread's
 * pid taken over by a sibling's exec: its exec event, which Python must resume), or when an
 * install served here reaped more exits of other tracees than ``exits`` holds (tracer_met.h:
 * then the rest of them at its end, and the stops that install met in ``queued``). ChildProcessError when no tracee is left and no exit is to be handed
 * back (then pid 0: the next call raises it). ``writes``: None, or what tracer_write.h
 * serves the VM's write-opens with (write_context_of); ``served`` counts those served
 * here (before the status, never among the queued stops), ``doubted`` the threads whose
 * kept socket Python must give up, before it handles the exits; ``unlinked`` the unlinks
 * tracer_unlink.h served here (the same way), ``changed`` the fd metadata changes tracer_fdmeta.h
 * served here, ``continued`` the device write-opens tracer_write.h let run. ``ended``: no tracee is left after what this call reaped (waitpid's ECHILD once
 * the exits are in ``exits``), so that the caller ends with them instead of waiting again
 * only to learn it (a second call, whose GIL taken back was on the VM's exit path). */
static PyObject *
tr_wait_stop(PyObject *self, PyObject *args)
{
    pid_t pid = 0;
    int status = 0, failed = 0, have_regs = 0, pending = 0, here = 0, nqueued = 0, more = 0, serving;
    struct passing seen;
    memset(&seen, 0, sizeof seen);
    struct queued *round = NULL; /* on the heap: QUEUED_KEPT registers are 7 KiB */
    regs_t regs;
    PyObject *writes = Py_None;
    struct write_context w;
    memset(&w, 0, sizeof w);
    struct served_writes done = {0};
    if (!PyArg_ParseTuple(args, "pi|O", &pending, &here, &writes) || (serving = write_context_of(writes, &w)) < 0) {
        release_writes(&w);
        return NULL;
    }
    round = PyMem_Malloc(sizeof *round * QUEUED_KEPT);
    if (round == NULL) {
        release_writes(&w);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    pid = for_python(pending, here, &status, &regs, &have_regs, &seen, serving ? &w : NULL, &done);
    if (pid < 0)
        failed = errno;
    while (pid > 0 && !pending && nqueued < QUEUED_KEPT) {
        struct queued *next = &round[nqueued];
        next->pid = for_python(1, here, &next->status, &next->regs, &next->have_regs, &seen, NULL, &done);
        if (next->pid <= 0)
            break; /* none left (a failure of this waitid: the next wait meets it) */
        nqueued++;
    }
    more = nqueued == QUEUED_KEPT;
    Py_END_ALLOW_THREADS
    release_writes(&w);
    /* What an install served here met and this wait did not take (its exits that did not fit,
     * for_python returning at once then; stops past a full round): after the others. */
    int met_exits = 0;
    for (int k = 0; k < met.n; k++)
        met_exits += ended_status(met.at[k][1]);
    int nexited = seen.nexits + met_exits, ncollected = nqueued + met.n - met_exits;
    PyObject *exited = PyTuple_New(nexited), *collected = PyTuple_New(ncollected), *doubted = doubted_of(&done);
    int i;
    for (i = 0; exited && collected && i < seen.nexits; i++) {
        PyObject *pair = Py_BuildValue("ii", seen.exits[i][0], seen.exits[i][1]);
        if (pair == NULL)
            break;
        PyTuple_SET_ITEM(exited, i, pair);
    }
    int j;
    for (j = 0; exited && collected && i == seen.nexits && j < nqueued; j++) {
        PyObject *stop = stop_tuple(round[j].pid, round[j].status, &round[j].regs, round[j].have_regs);
        if (stop == NULL)
            break;
        PyTuple_SET_ITEM(collected, j, stop);
    }
    for (int k = 0; exited && collected && i >= seen.nexits && j >= nqueued && k < met.n; k++) {
        int ended = ended_status(met.at[k][1]);
        PyObject *entry = ended ? Py_BuildValue("ii", met.at[k][0], met.at[k][1])
                                : stop_tuple(met.at[k][0], met.at[k][1], NULL, 0);
        if (entry == NULL)
            break;
        PyTuple_SET_ITEM(ended ? exited : collected, ended ? i++ : j++, entry);
    }
    met.n = 0; /* handed back (or, on a failure to build, dropped with the rest of this wait) */
    PyMem_Free(round);
    if (exited == NULL || collected == NULL || doubted == NULL || i < nexited || j < ncollected) {
        Py_XDECREF(exited);
        Py_XDECREF(collected);
        Py_XDECREF(doubted);
        return NULL;
    }
    if (failed && (nexited || ncollected || done.served || done.unlinked || done.changed || done.continued)) /* what was done here: Python's first */
        return Py_BuildValue("iiOllNNilNlllN", 0, 0, Py_None, seen.passed, seen.execs, exited, collected, 0, done.served,
                             doubted, done.unlinked, done.changed, done.continued, PyBool_FromLong(failed == ECHILD));
    PyObject *first = failed ? NULL : stop_tuple(pid, status, &regs, have_regs);
    if (first == NULL) {
        Py_DECREF(exited);
        Py_DECREF(collected);
        Py_DECREF(doubted);
        if (!failed)
            return NULL;
        if (failed == ECHILD) {
            PyErr_SetString(PyExc_ChildProcessError, "no tracee left");
            return NULL;
        }
        return raise_errno(failed, "waitpid");
    }
    PyObject *result = Py_BuildValue("OOOllNNilNlllN", PyTuple_GET_ITEM(first, 0), PyTuple_GET_ITEM(first, 1),
                                     PyTuple_GET_ITEM(first, 2), seen.passed, seen.execs, exited, collected, more,
                                     done.served, doubted, done.unlinked, done.changed, done.continued, PyBool_FromLong(0));
    Py_DECREF(first);
    return result;
}

/* release(pid, regs, skip, result, signum) -> None
 *
 * Resume a thread after its call was decided: with ``regs`` (bytes of its registers)
 * written back first, unless None; its call skipped (number -1) when ``skip``, and
 * returning ``result`` whenever regs are given. PTRACE_CONT delivers ``signum``.
 * OSError (ESRCH: killed meanwhile). */
static PyObject *
tr_release(PyObject *self, PyObject *args)
{
    int pid, skip, signum;
    long long result;
    PyObject *raw;
    if (!PyArg_ParseTuple(args, "iOpLi", &pid, &raw, &skip, &result, &signum))
        return NULL;
    regs_t regs;
    int with_regs = raw != Py_None;
    if (with_regs) {
        if (regs_from(raw, &regs) < 0)
            return NULL;
        if (skip)
            regs.orig_rax = (unsigned long long)-1;
        regs.rax = (unsigned long long)result;
    }
    int failed = 0;
    const char *what = "PTRACE_CONT";
    Py_BEGIN_ALLOW_THREADS
    /* Only a stopped call is released (Stopped.release): not at one any more, a sibling's exec
     * took over the pid (or it was killed), and the registers and the resume would be the new
     * program's at its exec event, which the wait then would never report (answer_skipped's
     * check): ESRCH, as for a thread killed meanwhile, and its status comes next. */
    if (!at_call_stop(pid)) {
        failed = ESRCH;
        what = "PTRACE_GET_SYSCALL_INFO";
    } else if (with_regs && ptrace(PTRACE_SETREGS, pid, 0, &regs) < 0) {
        failed = errno;
        what = "PTRACE_SETREGS";
    } else if (ptrace(PTRACE_CONT, pid, 0, (void *)(long)signum) < 0)
        failed = errno;
    Py_END_ALLOW_THREADS
    if (failed)
        return raise_errno(failed, what);
    Py_RETURN_NONE;
}

/* receive(pid, regs, sock, address, number, fd, flags, check) -> (result, signals, gone_status, resumed, reaped)
 *
 * A served open through the kept socket (stopped.py's _receive, in place of the call),
 * from its seccomp stop to its resume with no return to Python between: with ``check``,
 * kcmp of the thread's ``number`` against ``sock`` (the driver's duplicate: kept.py's
 * Kept.holds), else nothing is sent (-ESTALE); send ``fd`` on ``sock`` to ``address``,
 * write the scratch msghdr below the red zone of the stopped thread (``regs``, bytes),
 * make it run recvmsg(``number``, scratch, ``flags``) in place of its call, to its exit,
 * and check what it received (an SCM_RIGHTS cmsg; kcmp against ``fd`` when ``check``).
 * ``result`` is the number received, -ESTALE, -EMFILE, or -EIO; ``signals`` those that
 * stopped the thread meanwhile (a tuple), ``gone_status`` the wait status of a thread
 * that died (-1 when it was not seen: its pid's next status comes from the wait), which
 * may be the exec event of a sibling that took over its pid (run_to_exit), else None. A number received and checked is
 * answered here (resume_installed): ``fd`` closed, the thread resumed, ``resumed``
 * True; the caller must hold no other reference to a file of the VM by then (stopped.py:
 * the tracee's duplicates are closed before). Otherwise the thread stays stopped and
 * ``fd`` open, for the caller (``release``). ``reaped``: ((pid, status), ...), the exits of
 * other tracees its wait reaped meanwhile, in order, for the caller's bookkeeping before any
 * stop it holds; the stops it met are kept for the next wait_stop, which takes them first
 * (tracer_met.h). */
static PyObject *
tr_receive(PyObject *self, PyObject *args)
{
    int pid, sock, number, fd, flags, check;
    PyObject *raw;
    Py_buffer address;
    if (!PyArg_ParseTuple(args, "iOiy*iiip", &pid, &raw, &sock, &address, &number, &fd, &flags, &check))
        return NULL;
    regs_t stopped;
    struct sockaddr_un to;
    memset(&to, 0, sizeof to);
    to.sun_family = AF_UNIX;
    if (regs_from(raw, &stopped) < 0 || address.len > (Py_ssize_t)sizeof to.sun_path) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "address: too long for a unix socket");
        PyBuffer_Release(&address);
        return NULL;
    }
    memcpy(to.sun_path, address.buf, address.len);
    socklen_t to_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + address.len);
    PyBuffer_Release(&address);
    struct outcome out;
    memset(&out, 0, sizeof out);
    Py_BEGIN_ALLOW_THREADS
    receive(pid, &stopped, sock, &to, to_len, number, fd, flags, check, &out);
    Py_END_ALLOW_THREADS
    int nreaped = 0, kept = 0;
    for (int k = 0; k < met.n; k++)
        nreaped += ended_status(met.at[k][1]);
    PyObject *signals = PyTuple_New(out.nsignals), *others = PyTuple_New(nreaped);
    for (int i = 0; signals != NULL && i < out.nsignals; i++)
        PyTuple_SET_ITEM(signals, i, PyLong_FromLong(out.signals[i]));
    for (int k = 0, r = 0; k < met.n; k++) { /* the exits to Python; the stops kept for the next wait */
        if (!ended_status(met.at[k][1])) {
            memcpy(met.at[kept++], met.at[k], sizeof met.at[k]);
            continue;
        }
        PyObject *pair = others != NULL ? Py_BuildValue("ii", met.at[k][0], met.at[k][1]) : NULL;
        if (pair == NULL)
            Py_CLEAR(others);
        else
            PyTuple_SET_ITEM(others, r++, pair);
    }
    met.n = kept;
    if (signals == NULL || others == NULL) {
        Py_XDECREF(signals);
        Py_XDECREF(others);
        return NULL;
    }
    PyObject *resumed = PyBool_FromLong(out.resumed);
    if (out.gone)
        return Py_BuildValue("LNiNN", out.result, signals, out.status, resumed, others);
    return Py_BuildValue("LNONN", out.result, signals, Py_None, resumed, others);
}

/* keep_met(pid, status) -> None
 *
 * A status of another tracee that the Python path's wait for an injected call met (stopped.py
 * _met): kept with the C loop's, for the next wait_stop to take first (a stop), or its stops
 * kept so far dropped (an exit, reaped: the caller does its bookkeeping). */
static PyObject *
tr_keep_met(PyObject *self, PyObject *args)
{
    int pid, status;
    if (!PyArg_ParseTuple(args, "ii", &pid, &status))
        return NULL;
    if (ended_status(status)) /* the caller has it: only what it ends is dropped here */
        met_drop(pid);
    else
        met_keep(pid, status);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"keep_met", tr_keep_met, METH_VARARGS, "Keep another tracee's status met by an injected call's wait."},
    {"wait_stop", tr_wait_stop, METH_VARARGS, "The next stop Python must decide, and what was done meanwhile."},
    {"release", tr_release, METH_VARARGS, "Write a stopped thread's registers back (or not) and resume it."},
    {"receive", tr_receive, METH_VARARGS, "A served open's recvmsg, run in place of the call, and checked."},
    NOTE_QUEUE_METHODS, /* the change set's notes made without the GIL (write_open.h note_change) */
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tracer", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__tracer(void)
{
    spin_configure();
    return PyModule_Create(&module);
}
