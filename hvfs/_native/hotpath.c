/* The seccomp driver's hot path in C: receive, read the caller's path, check the
 * notification, answer, each with the GIL released and without ctypes' per-call cost;
 * and the receive loop itself (serve), which answers without Python the requests whose
 * outcome a table fixes on the syscall number and its registers.
 *
 * Plain CPython C API, built by setup.py as the extension hvfs._native._hotpath.
 * hvfs/_native/__init__.py says when it is used (HVFS_NATIVE=0 forces the Python path,
 * hvfs/_sys/notify.py and process.py). Every other function here is a kernel primitive
 * with the same contract as its Python twin; the security reasoning (ID_VALID after all
 * reads, the ordering of ADDFD and the answer for writable files) stays in
 * hvfs/intercept/driver.py, which calls these in the same order as the Python ones, and
 * which rules serve may apply is hvfs/intercept/compiled.py's.
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_ADDFD
#error "linux/seccomp.h too old: SECCOMP_IOCTL_NOTIF_ADDFD (5.9) is needed"
#endif
#ifndef SECCOMP_ADDFD_FLAG_SEND
#define SECCOMP_ADDFD_FLAG_SEND (1UL << 1)
#endif

#define PATH_MAX_BYTES 4096
#define SHORT_PATH 256 /* read first: most paths are short (hvfs/intercept/tracee.py) */

static PyObject *
raise_errno(int code, const char *what)
{
    errno = code;
    return PyErr_SetFromErrnoWithFilename(PyExc_OSError, what);
}

/* Polls the listener and stop_fd and receives one notification into notif; call it
 * without the GIL. 0 with a notification, -1 when stop_fd is readable or the listener
 * hangs up (every thread of the VM has exited: NOTIF_RECV would block for ever), else
 * the errno of a failed poll or receive. A notification cancelled before we got it
 * (ENOENT) or a signal (EINTR) is not an error: poll again. watch_fd (-1: none) is polled
 * with them until it is readable, then *watched is set (served_dev.h's watch: an event queued
 * before the notification arrived is seen by the poll that returns it, at no call more) and
 * it is polled no more: it stays readable until read, and would wake every poll. */
static int
receive_one(int listener, int stop_fd, int watch_fd, int *watched, struct seccomp_notif *notif)
{
    for (;;) {
        struct pollfd fds[3] = {{.fd = listener, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN},
                                {.fd = watch_fd, .events = POLLIN}};
        if (poll(fds, watch_fd >= 0 && !*watched ? 3 : 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (fds[2].revents) /* never so where it is not polled: 0 as initialised */
            *watched = 1;
        if (fds[1].revents)
            return -1;
        if (fds[0].revents & POLLIN) {
            memset(notif, 0, sizeof *notif); /* the kernel rejects a buffer that is not all zeroes */
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, notif) == 0)
                return 0;
            if (errno == ENOENT || errno == EINTR)
                continue;
            return errno;
        }
        if (fds[0].revents & (POLLHUP | POLLERR | POLLNVAL))
            return -1;
    }
}

static PyObject *
notification(const struct seccomp_notif *notif)
{
    const struct seccomp_data *d = &notif->data;
    return Py_BuildValue("(KIi(KKKKKK)y#)", (unsigned long long)notif->id, notif->pid, d->nr,
                         (unsigned long long)d->args[0], (unsigned long long)d->args[1],
                         (unsigned long long)d->args[2], (unsigned long long)d->args[3],
                         (unsigned long long)d->args[4], (unsigned long long)d->args[5], (const char *)notif,
                         (Py_ssize_t)sizeof *notif);
}

/* receive(listener, stop_fd) -> (id, pid, nr, args, raw) | None: one notification, or
 * None when stopped (receive_one), all without the GIL. */
static PyObject *
hp_receive(PyObject *self, PyObject *args)
{
    int listener, stop_fd;
    if (!PyArg_ParseTuple(args, "ii", &listener, &stop_fd))
        return NULL;
    struct seccomp_notif notif;
    int got;
    Py_BEGIN_ALLOW_THREADS
    got = receive_one(listener, stop_fd, -1, NULL, &notif);
    Py_END_ALLOW_THREADS
    if (got > 0)
        return raise_errno(got, "NOTIF_RECV");
    if (got < 0)
        Py_RETURN_NONE;
    return notification(&notif);
}

/* The compiled decisions (hvfs/intercept/compiled.py builds the table, one rule per
 * syscall number; numbers past its end are Python's). A rule decides only on the
 * syscall number and its registers, which the VM can no longer change once it trapped. */
enum {
    RULE_PYTHON,
    RULE_CONTINUE,
    RULE_ERRNO,
    RULE_CONTINUE_IF_IN,
    RULE_CONTINUE_IF_IN32,
    RULE_EXEC_IF_LEADER,
    RULE_SERVED,
    RULE_BUMP_CONTINUE
};
struct rule {
    uint8_t kind;
    uint8_t arg;    /* RULE_CONTINUE_IF_IN(32): the argument, continued if among the values */
    uint16_t count; /* ... values[first], ... values[first + count - 1] (IN32: its low 32 bits, an int) */
    int32_t value;  /* RULE_ERRNO: the errno; RULE_CONTINUE_IF_IN(32): first */
};

/* Whether rule lets the call continue on its registers. */
static int
continues(const struct rule *rule, const struct seccomp_data *data, const uint64_t *values, size_t known_values)
{
    if (rule->kind == RULE_CONTINUE)
        return 1;
    if ((rule->kind != RULE_CONTINUE_IF_IN && rule->kind != RULE_CONTINUE_IF_IN32) || rule->arg >= 6 ||
        rule->value < 0 || (size_t)rule->value + rule->count > known_values)
        return 0;
    uint64_t arg = data->args[rule->arg];
    if (rule->kind == RULE_CONTINUE_IF_IN32)
        arg &= UINT32_MAX;
    for (size_t i = 0; i < rule->count; i++)
        if (values[rule->value + i] == arg)
            return 1;
    return 0;
}

#include "exec_leader.h" /* exec_of_leader, RULE_EXEC_IF_LEADER's proof */

/* The in-flight table's slot (hvfs/intercept/inflight.py, whose layout this mirrors: the
 * notification, then state, errno and value, then the time received). */
enum { SLOT_STATE = 80, SLOT_ERRNO = 84, SLOT_VALUE = 88, SLOT_RECEIVED = 96, SLOT_END = 104 };
enum { STATE_RECEIVED, STATE_ANSWERED, STATE_CONTINUED };
enum { COUNT_CONTINUED, COUNT_ANSWERED, COUNT_HANDED, COUNTS };

/* Records a request answered here as the driver's record and performed would: the last id,
 * then the outcome and the time, then the notification, whose id marks the slot taken. */
static void
record(char *table, Py_ssize_t slot_at, Py_ssize_t last_at, const struct seccomp_notif *notif, uint8_t state,
       int32_t error)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t received = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec, value = 0;
    char *slot = table + slot_at;
    memcpy(table + last_at, &notif->id, sizeof notif->id);
    memset(slot + SLOT_STATE, 0, SLOT_ERRNO - SLOT_STATE);
    slot[SLOT_STATE] = (char)state;
    memcpy(slot + SLOT_ERRNO, &error, sizeof error);
    memcpy(slot + SLOT_VALUE, &value, sizeof value);
    memcpy(slot + SLOT_RECEIVED, &received, sizeof received);
    memcpy(slot + sizeof notif->id, (const char *)notif + sizeof notif->id, sizeof *notif - sizeof notif->id);
    __atomic_store_n((uint64_t *)slot, notif->id, __ATOMIC_RELEASE);
}

#include "write_open.h" /* read_remote, and what a write-open served in C needs (tracer.c too) */

#include "open_stat.h"   /* hp_open_stat, the manager's served write-open; open_stat_calls */
#include "served_stat.h" /* serve_stat, serve_open: RULE_SERVED's calls, served here */

/* A served call's note made blank, its arrival timed (an event's duration); always 1. */
static int
served_anew(const struct stat_context *c)
{
    if (c->note) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        c->note->audited = c->note->recordable = c->note->error = c->note->continued = c->note->by_answer = 0;
        c->note->began = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    }
    return 1;
}

/* serve(listener, stop_fd, rules, values, table, slot_at, last_at, counts, record_handed[, bumps, stat])
 *   -> (id, pid, nr, args, raw) | None
 *
 * The driver's receive loop: receives, answers in C each request a rule decides
 * (CONTINUE or an errno), recorded in the in-flight table (table: its writable buffer,
 * or None) at slot_at for as long as it is answered, and loops; returns the first
 * request that needs Python, recorded there as received if record_handed (else the
 * driver records it), or None when stopped. counts: a writable buffer of three uint64,
 * bumped here: continued, answered (an errno, or a stat), handed to Python; bumps: None, or
 * the writable part of the credential generation RULE_EXEC_IF_LEADER and RULE_BUMP_CONTINUE
 * bump (cred_bumps.h: its caller's bucket only); stat: None, or what serve_stat needs (stat_context_of), recorded as received while answered. All without the
 * GIL, an audited VM's served call's event too (served_audit.h), but where its bus records with it;
 * OSError as a receive or an answer fails (ENOENT on the answer, a caller gone or its call
 * cancelled, is not a failure). */
static PyObject *
hp_serve(PyObject *self, PyObject *args)
{
    int listener, stop_fd;
    Py_buffer rules, values, counts, table = {.buf = NULL}, bumps = {.buf = NULL}, stat_views[4] = {{.obj = NULL}};
    PyObject *table_object, *bumps_object = Py_None, *stat_object = Py_None;
    Py_ssize_t slot_at, last_at;
    int record_handed, stat_on;
    struct stat_context stat = {.vm_root = -1};
    struct served_note note; /* stat.note, where an audited VM's are served too */
    struct dev_verdicts verdicts = {0}; /* stat.verdicts: served_dev.h's, for this call */
    if (!PyArg_ParseTuple(args, "iiy*y*Onnw*p|OO", &listener, &stop_fd, &rules, &values, &table_object, &slot_at,
                          &last_at, &counts, &record_handed, &bumps_object, &stat_object))
        return NULL;
    PyObject *result = NULL;
    if ((stat_on = stat_context_of(stat_object, &stat, stat_views, &note)) < 0)
        goto done;
    stat.verdicts = &verdicts;
    if (counts.len < (Py_ssize_t)(COUNTS * sizeof(uint64_t))) {
        PyErr_SetString(PyExc_ValueError, "counts: three uint64 are needed");
        goto done;
    }
    if (bumps_object != Py_None) {
        if (PyObject_GetBuffer(bumps_object, &bumps, PyBUF_WRITABLE) < 0)
            goto done;
        if (bumps.len < (Py_ssize_t)BUMPS_SIZE || (uintptr_t)bumps.buf % sizeof(uint64_t)) {
            PyErr_SetString(PyExc_ValueError, "bumps: 1 + TID_BUCKETS aligned uint64 are needed");
            goto done;
        }
    }
    if (table_object != Py_None) {
        if (PyObject_GetBuffer(table_object, &table, PyBUF_WRITABLE) < 0)
            goto done;
        if (slot_at < 0 || last_at < 0 || slot_at + SLOT_END > table.len || last_at + 8 > table.len) {
            PyErr_SetString(PyExc_ValueError, "the slot or the last id lies outside the in-flight table");
            goto done;
        }
    }
    stat.bumps = bumps.buf;
    const struct rule *rule_of = rules.buf;
    size_t known = (size_t)rules.len / sizeof(struct rule), known_values = (size_t)values.len / sizeof(uint64_t);
    uint64_t *count = counts.buf;
    struct seccomp_notif notif;
    int got, failed = 0, served = DECLINED, written = 0, install = -1;
    unsigned int newfd_flags = 0;
    Py_BEGIN_ALLOW_THREADS
    while ((got = receive_one(listener, stop_fd, verdicts.state > 0 ? verdicts.notify : -1, &verdicts.pending,
                              &notif)) == 0) {
        int nr = notif.data.nr;
        const struct rule *rule = nr >= 0 && (size_t)nr < known ? &rule_of[nr] : NULL;
        struct seccomp_notif_resp resp = {.id = notif.id};
        written = 0, install = -1;
        if (rule && continues(rule, &notif.data, values.buf, known_values))
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        else if (rule && rule->kind == RULE_EXEC_IF_LEADER && exec_of_leader(listener, &notif, bumps.buf))
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        else if (rule && rule->kind == RULE_BUMP_CONTINUE && bumps.buf) {
            /* A set*id, setgroups or capset changes its own thread's credentials only, once
             * continued: its thread's part of the generation bumped before (cred_bumps.h),
             * is all the driver owes it (make calls two in every child it starts). */
            __atomic_add_fetch(tid_bumps(bumps.buf, (pid_t)notif.pid), 1, __ATOMIC_SEQ_CST);
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        }
        else if (rule && rule->kind == RULE_ERRNO)
            resp.error = -rule->value;
        else if (rule && rule->kind == RULE_SERVED && stat_on && served_anew(&stat) &&
                 (served = rule->arg >= CALL_MKDIR ? serve_path_change(&stat, listener, &notif, rule->arg, &resp)
                           : rule->arg >= CALL_READLINK ? serve_link(&stat, listener, &notif, rule->arg, &resp, &written)
                           : rule->arg >= CALL_OPEN
                               ? serve_open(&stat, listener, &notif, rule->arg, &resp, &install, &newfd_flags)
                               : serve_stat(&stat, listener, &notif, rule->arg, &resp, &written)) != DECLINED) {
            if (stat.note && stat.note->recordable) { /* the dispatch records before the driver answers */
                if (stat.note->sink != NULL)
                    record_served_detached(stat.note); /* no GIL: into the ring record.c drains */
                else {
                    Py_BLOCK_THREADS
                    record_served_event(stat.note);
                    Py_UNBLOCK_THREADS
                }
            }
            if (served == GONE)
                continue;
        } else {
            if (table.buf && record_handed)
                record(table.buf, slot_at, last_at, &notif, STATE_RECEIVED, 0);
            count[COUNT_HANDED]++;
            break;
        }
        if (table.buf)
            record(table.buf, slot_at, last_at, &notif,
                   resp.flags ? STATE_CONTINUED : written || install >= 0 ? STATE_RECEIVED : STATE_ANSWERED, -resp.error);
        if (install >= 0)
            failed = install_served(listener, notif.id, install, newfd_flags);
        else if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT)
            failed = errno;
        if (table.buf)
            __atomic_store_n((uint64_t *)((char *)table.buf + slot_at), 0, __ATOMIC_RELEASE);
        if (failed)
            break;
        count[resp.flags ? COUNT_CONTINUED : COUNT_ANSWERED]++;
    }
    Py_END_ALLOW_THREADS
    if (failed)
        raise_errno(failed, "NOTIF_SEND");
    else if (got > 0)
        raise_errno(got, "NOTIF_RECV");
    else if (got < 0)
        result = Py_NewRef(Py_None);
    else
        result = notification(&notif);
done:
    release_stat(&stat, stat_views);
    dev_verdicts_release(&verdicts);
    if (table.buf)
        PyBuffer_Release(&table);
    if (bumps.buf)
        PyBuffer_Release(&bumps);
    PyBuffer_Release(&rules);
    PyBuffer_Release(&values);
    PyBuffer_Release(&counts);
    return result;
}

/* respond(listener, id, value, error, flags): NOTIF_SEND; OSError as the ioctl fails. */
static PyObject *
hp_respond(PyObject *self, PyObject *args)
{
    int listener, error;
    unsigned long long id;
    long long value;
    unsigned int flags;
    if (!PyArg_ParseTuple(args, "iKLiI", &listener, &id, &value, &error, &flags))
        return NULL;
    struct seccomp_notif_resp resp = {.id = id, .val = value, .error = error ? -error : 0, .flags = flags};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return raise_errno(errno, "NOTIF_SEND");
    Py_RETURN_NONE;
}

/* install(listener, id, fd, newfd_flags) -> error: the driver's _install in one call.
 *
 * A read-only file is installed and answered in one step (ADDFD with SEND). A writable
 * one is installed, the manager's reference dropped, and only then the call answered:
 * the VM's close must be the last, or IN_CLOSE_WRITE comes late and an exec right after
 * writing fails with ETXTBSY (hvfs/intercept/driver.py). fd is closed in every case.
 * Returns 0, or the errno of a failed ioctl (ENOENT: the caller is gone, nothing to do;
 * EMFILE: the caller was answered EMFILE here). */
static PyObject *
hp_install(PyObject *self, PyObject *args)
{
    int listener, fd;
    unsigned long long id;
    unsigned int newfd_flags;
    if (!PyArg_ParseTuple(args, "iKiI", &listener, &id, &fd, &newfd_flags))
        return NULL;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    int mode = fcntl(fd, F_GETFL);
    int writable = mode < 0 || (mode & O_ACCMODE) != O_RDONLY;
    struct seccomp_notif_addfd add = {
        .id = id, .flags = writable ? 0 : SECCOMP_ADDFD_FLAG_SEND, .srcfd = (uint32_t)fd, .newfd_flags = newfd_flags};
    int number = ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add);
    if (number < 0)
        failed = errno;
    close(fd);
    struct seccomp_notif_resp resp = {.id = id};
    if (failed == EMFILE) {
        resp.error = -EMFILE;
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT)
            failed = errno;
    } else if (!failed && writable) {
        resp.val = number;
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0)
            failed = errno;
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(failed);
}

/* id_valid(listener, id) -> bool: NOTIF_ID_VALID. */
static PyObject *
hp_id_valid(PyObject *self, PyObject *args)
{
    int listener;
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "iK", &listener, &id))
        return NULL;
    uint64_t value = id;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &value);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(rc == 0);
}

/* read_path(pid, address) -> bytes | int
 *
 * The NUL-terminated path at address in pid's memory, without its NUL: an int errno
 * where the kernel would fail the call (EFAULT, ENAMETOOLONG; the caller decides on an
 * empty path), OSError ESRCH when the thread is gone. Safe because the buffer is ours
 * and process_vm_readv never writes past the iovec we give it; the bytes read are not
 * trusted until the driver's NOTIF_ID_VALID after all reads. */
static PyObject *
hp_read_path(PyObject *self, PyObject *args)
{
    int pid;
    unsigned long long address;
    if (!PyArg_ParseTuple(args, "iK", &pid, &address))
        return NULL;
    if (address == 0)
        return PyLong_FromLong(EFAULT);
    char buffer[PATH_MAX_BYTES];
    ssize_t got, more = 0;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    got = read_remote(pid, address, buffer, SHORT_PATH);
    if (got < 0)
        failed = errno;
    else if (got == SHORT_PATH && !memchr(buffer, 0, SHORT_PATH)) {
        more = read_remote(pid, address + SHORT_PATH, buffer + SHORT_PATH, PATH_MAX_BYTES - SHORT_PATH);
        if (more < 0)
            more = errno == ESRCH ? (failed = ESRCH, 0) : 0;
    }
    Py_END_ALLOW_THREADS
    if (failed == ESRCH)
        return raise_errno(ESRCH, "process_vm_readv");
    if (failed)
        return PyLong_FromLong(EFAULT);
    size_t total = (size_t)got + (size_t)more;
    const char *end = memchr(buffer, 0, total);
    if (!end)
        return PyLong_FromLong(total == PATH_MAX_BYTES ? ENAMETOOLONG : EFAULT);
    return PyBytes_FromStringAndSize(buffer, end - buffer);
}

#include "credential_lines.h" /* hp_credential_lines */

/* thread_alive(pidfd) -> bool: whether the thread of a PIDFD_THREAD pidfd has not exited
 * (a pidfd turns readable when its thread exits, or once no task has its struct pid).
 * Needs no permission over the thread; one poll, too short to release the GIL for. */
static PyObject *
hp_thread_alive(PyObject *self, PyObject *args)
{
    int pidfd;
    if (!PyArg_ParseTuple(args, "i", &pidfd))
        return NULL;
    struct pollfd fds[1] = {{.fd = pidfd, .events = POLLIN}};
    int rc = poll(fds, 1, 0);
    return PyBool_FromLong(rc == 0);
}


static PyMethodDef methods[] = {
    {"receive", hp_receive, METH_VARARGS, "receive(listener, stop_fd) -> (id, pid, nr, args, raw) | None"},
    {"serve", hp_serve, METH_VARARGS,
     "serve(listener, stop_fd, rules, values, table, slot_at, last_at, counts, record_handed[, bumps, stat]) -> (id, pid, nr, "
     "args, raw) | None"},
    {"respond", hp_respond, METH_VARARGS, "respond(listener, id, value, error, flags)"},
    {"install", hp_install, METH_VARARGS, "install(listener, id, fd, newfd_flags) -> errno or 0"},
    {"id_valid", hp_id_valid, METH_VARARGS, "id_valid(listener, id) -> bool"},
    {"credential_lines", hp_credential_lines, METH_VARARGS, "credential_lines(fd) -> (uid, gid, groups, umask, capeff)"},
    {"thread_alive", hp_thread_alive, METH_VARARGS, "thread_alive(pidfd) -> bool"},
    {"read_path", hp_read_path, METH_VARARGS, "read_path(pid, address) -> bytes | errno"},
    {"open_stat", hp_open_stat, METH_VARARGS, "open_stat(dirfd, path, flags, mode, resolve, status) -> (fd, st_mode)"},
    {"openat2", (PyCFunction)(void (*)(void))hp_openat2, METH_FASTCALL, "openat2(dirfd, path, flags, mode, resolve) -> fd"},
    NOTE_QUEUE_METHODS, /* the change set's notes made without the GIL (write_open.h note_change) */
    FIRST_CREDENTIALS_METHODS, /* the loop's own read of a caller's credentials, for its tests */
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hotpath", "The seccomp driver's hot path (hvfs/_native/hotpath.c).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    PyObject *made = PyModule_Create(&module);
    if (made && PyModule_AddIntConstant(made, "NOTE_QUEUE_BYTES", NOTE_QUEUE_BYTES) < 0) /* the tests' overflow */
        Py_CLEAR(made);
    return made;
}
