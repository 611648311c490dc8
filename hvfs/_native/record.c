/* An audited request's record, taken on the serving thread in one C call
 * (hvfs.api.hooks.EventBus.record_served; the Python twin is hvfs.api.events.record_request).
 *
 * Why: what the serving thread did for an event in Python (two clock reads, comm_of's
 * cache, the tuple, the ring's checks and append, three Python frames) was about a
 * microsecond of the 3 the audit still added to a served request. Here it is one call:
 * one CLOCK_MONOTONIC read (the request's duration), one CLOCK_REALTIME read (its time,
 * as time.time() computes it), the caller's command name from a per-thread cache with
 * comm_of's rules, and the ring's Record tuple appended to its deque under the GIL (the
 * length check and the append are one step: no other thread runs between them).
 *
 * The tuple is the very Record the Python recorder makes, so the writers (audit.c and
 * hvfs.api.events.python_write) and every other subscriber are unchanged, and the order,
 * the Flush marks, the lost-event accounting stay the ring's (hvfs.api.ring).
 *
 * The command name (comm_of's rules): /proc/TID/comm of the caller, kept open per serving
 * thread (KEPT at most, the oldest dropped), read again after COMM_FRESH_NS, at once for
 * an exec (``again``, which also forgets it so that the new program's first request reads
 * its own); a kept fd whose thread is gone fails (ESRCH) and the number is opened again.
 * Kept as bytes, so that a thread's end closes its fds without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEPT 8                    /* threads per serving thread, as hvfs.api.events._COMM_KEPT */
#define COMM_FRESH_NS 20000000LL /* hvfs.api.events.COMM_FRESH */
#define COMM_READ 64              /* bytes read of /proc/TID/comm, as comm_of */

typedef struct {
    long pid; /* 0: a free slot */
    int fd;   /* -1: none kept */
    int named;
    long long when; /* CLOCK_MONOTONIC ns of the read */
    Py_ssize_t length;
    char name[COMM_READ];
} Comm;

typedef struct {
    Comm kept[KEPT];
    unsigned next; /* the slot to reuse when all are taken: the oldest */
} Comms;

static pthread_key_t comms_key;
static PyObject *s_caller, *s_pid, *s_append, *s_deque, *s_capacity, *s_nudge_at, *s_prompt, *s_recorded;
static PyObject *again_types; /* frozenset of the request types whose caller's name is read again (exec) */

static void comms_free(void *data) { /* the serving thread ended: its fds, no Python */
    Comms *comms = data;
    for (int i = 0; i < KEPT; i++)
        if (comms->kept[i].fd >= 0)
            close(comms->kept[i].fd);
    free(comms);
}

static Comms *comms_here(void) {
    Comms *comms = pthread_getspecific(comms_key);
    if (comms != NULL)
        return comms;
    comms = calloc(1, sizeof *comms);
    if (comms == NULL)
        return NULL;
    for (int i = 0; i < KEPT; i++)
        comms->kept[i].fd = -1;
    if (pthread_setspecific(comms_key, comms) != 0) {
        free(comms);
        return NULL;
    }
    return comms;
}

static long long clock_ns(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static Py_ssize_t read_name(int fd, char *into) { /* -1: the thread is gone */
    ssize_t got = pread(fd, into, COMM_READ, 0);
    if (got < 0)
        return -1;
    while (got > 0 && into[got - 1] == '\n') /* bytes.rstrip(b"\n") */
        got--;
    return got;
}

/* Fills ``entry`` with pid's name read now (length 0 where it is gone). */
static void read_comm(Comm *entry, long pid) {
    if (entry->fd >= 0) {
        entry->length = read_name(entry->fd, entry->name);
        if (entry->length >= 0)
            return;
        close(entry->fd); /* that thread is gone; the number may be another's now */
        entry->fd = -1;
    }
    char path[48];
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    entry->fd = open(path, O_RDONLY | O_CLOEXEC);
    entry->length = entry->fd < 0 ? 0 : read_name(entry->fd, entry->name);
    if (entry->length < 0) {
        close(entry->fd);
        entry->fd = -1;
        entry->length = 0;
    }
}

static PyObject *comm_of(long pid, int again, long long now) {
    Comms *comms = comms_here();
    if (comms == NULL)
        return PyUnicode_FromStringAndSize("", 0);
    Comm *entry = NULL;
    for (int i = 0; i < KEPT; i++)
        if (comms->kept[i].pid == pid) {
            entry = &comms->kept[i];
            break;
        }
    if (entry != NULL && !again && entry->named && now - entry->when < COMM_FRESH_NS)
        return PyUnicode_DecodeUTF8(entry->name, entry->length, "replace");
    if (entry == NULL) {
        entry = &comms->kept[comms->next];
        comms->next = (comms->next + 1) % KEPT;
        if (entry->fd >= 0)
            close(entry->fd);
        entry->pid = pid;
        entry->fd = -1;
    }
    read_comm(entry, pid);
    entry->named = !again && entry->length > 0;
    entry->when = now;
    return PyUnicode_DecodeUTF8(entry->name, entry->length, "replace");
}

/* record(ring, capacity, vm, request, response, began_ns, answered_by, paths) -> int:
 * the ring's length before the Record was appended, or -1 when it was full (nothing
 * appended; the caller waits for room, hvfs.api.ring). */
static PyObject *record(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "record takes 8 arguments");
        return NULL;
    }
    PyObject *ring = args[0], *request = args[3];
    Py_ssize_t capacity = PyLong_AsSsize_t(args[1]);
    long long began = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyObject_Size(ring);
    if (size < 0)
        return NULL;
    if (size >= capacity)
        return PyLong_FromLong(-1);
    long long now = clock_ns(CLOCK_MONOTONIC);
    long long wall = clock_ns(CLOCK_REALTIME);
    PyObject *caller = PyObject_GetAttr(request, s_caller);
    if (caller == NULL)
        return NULL;
    PyObject *pid = PyObject_GetAttr(caller, s_pid);
    Py_DECREF(caller);
    if (pid == NULL)
        return NULL;
    long number = PyLong_AsLong(pid);
    Py_DECREF(pid);
    if (number == -1 && PyErr_Occurred())
        return NULL;
    int again = again_types != NULL ? PySet_Contains(again_types, (PyObject *)Py_TYPE(request)) : 0;
    if (again < 0)
        return NULL;
    PyObject *comm = comm_of(number, again, now);
    if (comm == NULL)
        return NULL;
    /* time.time()'s own arithmetic (_PyTime_AsSecondsDouble), so that the two recorders agree */
    double seconds = wall % 1000000000LL == 0 ? (double)(wall / 1000000000LL) : (double)wall / 1e9;
    long long duration = (now - began) / 1000;
    PyObject *record = PyTuple_New(8); /* the Record, in its order (hvfs.api.events.Record) */
    PyObject *when = PyFloat_FromDouble(seconds), *took = PyLong_FromLongLong(duration < 0 ? 0 : duration);
    if (record == NULL || when == NULL || took == NULL) {
        Py_XDECREF(record);
        Py_XDECREF(when);
        Py_XDECREF(took);
        Py_DECREF(comm);
        return NULL;
    }
    PyObject *items[8] = {args[2], request, args[4], when, took, comm, args[6], args[7]};
    for (int i = 0; i < 8; i++)
        PyTuple_SET_ITEM(record, i, i == 3 || i == 4 || i == 5 ? items[i] : Py_NewRef(items[i]));
    PyObject *done = PyObject_CallMethodOneArg(ring, s_append, record);
    Py_DECREF(record);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);
    return PyLong_FromSsize_t(size);
}

/* record_into(ring, vm, request, response, began_ns, answered_by, paths): ``record`` into an
 * EventRing's deque, bound to the ring (functools.partial) as EventBus.record_served, so that
 * the dispatch's call runs no Python; where the ring is full, or its thread is to be woken,
 * ring.recorded(size, vm, request, response, began_ns, answered_by, paths) does the rest. */
static PyObject *record_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "record_into takes 7 arguments");
        return NULL;
    }
    PyObject *ring = args[0], *deque = NULL, *capacity = NULL, *nudge_at = NULL, *prompt = NULL, *size = NULL;
    PyObject *result = NULL;
    if ((deque = PyObject_GetAttr(ring, s_deque)) == NULL || (capacity = PyObject_GetAttr(ring, s_capacity)) == NULL)
        goto done;
    PyObject *call[8] = {deque, capacity, args[1], args[2], args[3], args[4], args[5], args[6]};
    if ((size = record(self, call, 8)) == NULL)
        goto done;
    if ((nudge_at = PyObject_GetAttr(ring, s_nudge_at)) == NULL || (prompt = PyObject_GetAttr(ring, s_prompt)) == NULL)
        goto done;
    int wake = PyObject_IsTrue(prompt);
    if (wake < 0)
        goto done;
    long at = PyLong_AsLong(size);
    if (wake || at < 0 || at == PyLong_AsLong(nudge_at)) {
        if (PyErr_Occurred())
            goto done;
        /* rest[0] is room the call may borrow (PY_VECTORCALL_ARGUMENTS_OFFSET) */
        PyObject *rest[9] = {NULL, ring, size, args[1], args[2], args[3], args[4], args[5], args[6]};
        result = PyObject_VectorcallMethod(s_recorded, rest + 1, 8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (result == NULL)
            goto done;
        Py_DECREF(result);
    }
    if (PyErr_Occurred())
        goto done;
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(deque);
    Py_XDECREF(capacity);
    Py_XDECREF(nudge_at);
    Py_XDECREF(prompt);
    Py_XDECREF(size);
    return result;
}

/* comm(pid, again) -> str: the cache's answer alone (tests/test_audit_ring.py). */
static PyObject *comm(PyObject *self, PyObject *args) {
    long pid;
    int again = 0;
    if (!PyArg_ParseTuple(args, "l|p", &pid, &again))
        return NULL;
    return comm_of(pid, again, clock_ns(CLOCK_MONOTONIC));
}

/* configure(again_types): the request types (a frozenset) whose caller exec's. */
static PyObject *configure(PyObject *self, PyObject *types) {
    if (!PyFrozenSet_Check(types)) {
        PyErr_SetString(PyExc_TypeError, "configure takes a frozenset of types");
        return NULL;
    }
    Py_XSETREF(again_types, Py_NewRef(types));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL, "Append a served request's Record to the ring."},
    {"record_into", (PyCFunction)(void (*)(void))record_into, METH_FASTCALL, "record into an EventRing."},
    {"comm", comm, METH_VARARGS, "The command name of a thread, through the per-thread cache."},
    {"configure", configure, METH_O, "The request types that read the caller's name again."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_record", "An audited request's record in one C call.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__record(void) {
    if (pthread_key_create(&comms_key, comms_free) != 0)
        return PyErr_NoMemory();
    s_caller = PyUnicode_InternFromString("caller");
    s_pid = PyUnicode_InternFromString("pid");
    s_append = PyUnicode_InternFromString("append");
    s_deque = PyUnicode_InternFromString("deque");
    s_capacity = PyUnicode_InternFromString("capacity");
    s_nudge_at = PyUnicode_InternFromString("nudge_at");
    s_prompt = PyUnicode_InternFromString("prompt");
    s_recorded = PyUnicode_InternFromString("recorded");
    if (!s_caller || !s_pid || !s_append || !s_deque || !s_capacity || !s_nudge_at || !s_prompt || !s_recorded)
        return NULL;
    return PyModule_Create(&module);
}
