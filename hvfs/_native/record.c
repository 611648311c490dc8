/* An audited request's record, taken on the serving thread in one C call
 * (hvfs.api.hooks.EventBus.record_served; the Python twin is hvfs.api.events.record_request).
 *
 * Why: what the serving thread did for an event in Python (two clock reads, comm_of's
 * cache, the tuple, the ring's checks and append, three Python frames) was about a
 * microsecond of the 3 the audit still added to a served request. Here it is one call:
 * one CLOCK_MONOTONIC read (the request's duration), one CLOCK_REALTIME read (its time,
 * as time.time() computes it), the caller's command name from a per-thread cache with
 * comm_of's rules, and the record appended to the ring's deque under the GIL (the
 * length check and the append are one step: no other thread runs between them), or to
 * its C Ring (ring.h), which the driver's C loop appends to without the GIL (detached.h):
 * there the check and the append are one step under the Ring's mutex.
 *
 * The record is compact (compact.h): plain bytes holding what the event says, the
 * operation, result and value already as their JSON text (asked of Python once per type
 * or errno), nothing of the request's objects, which are freed on the serving thread as
 * without an audit instead of thousands of them waiting for the writer. The writers
 * (audit.c, hvfs.api.compact) give it the Record tuple's very line, the lazy Event its
 * Event; what it cannot hold (a number beyond 64 bits, more than MOST_PATHS paths) is
 * recorded as the Record tuple the Python recorder makes. The order, the Flush marks and
 * the lost-event accounting stay the ring's (hvfs.api.ring).
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
#include "compact.h"

#include "comm.h"
#include "kinds.h"
#include "ring.h" /* Ring, Sink: the items Python and the C loop append to */

static PyObject *s_caller, *s_pid, *s_append, *s_recorded;
static PyObject *slash, *double_slash, *slash_dot_slash, *slash_dots_slash, *slash_dot, *slash_dots; /* plain_name's */
static PyObject *again_types; /* frozenset of the request types whose caller's name is read again (exec) */

/* How a request and its answer read in an event: configure's tables and callbacks
 * (hvfs.api.events: request_kind, result_text, FIXED_RESULTS), each asked of Python once per type,
 * errno, or (an answer of no known kind) response. */
static PyObject *kinds;     /* type(request) -> (operation as a JSON string, flagged) */
static PyObject *kind_of;   /* request -> (str, bool) */
static PyObject *fixed;     /* type(response) -> (result, value) as JSON text */
static PyObject *result_of; /* response -> (result, value) as JSON text */
static PyObject *value_type, *errno_type, *data_type;
static PyObject *by_errno; /* errno -> (result, value) as JSON text */
static PyObject *s_flags, *s_value, *s_errno, *s_data;

#define MOST_PATHS 16 /* paths a compact record holds; more (never seen) make the Record tuple */

typedef struct {
    const char *data[COMPACT_PATHS + MOST_PATHS];
    uint32_t length[COMPACT_PATHS + MOST_PATHS];
    PyObject *held[COMPACT_PATHS + MOST_PATHS]; /* what keeps ``data`` alive, released after the copy */
    PyObject *kind, *answer; /* the same: the operation's (kind_of may change ``kinds``), result_of's pair */
    char digits[24];
} Fields;

/* A field of ``text`` (a str): its UTF-8, where it has a lone surrogate surrogatepass's (compact.h). */
static int put_field(Fields *f, int at, PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "an event field is %.80s, not str", Py_TYPE(text)->tp_name);
        return -1;
    }
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    if (utf8 == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        PyObject *bytes = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
        if (bytes == NULL)
            return -1;
        f->held[at] = bytes;
        utf8 = PyBytes_AS_STRING(bytes);
        length = PyBytes_GET_SIZE(bytes);
    }
    if (length >= (Py_ssize_t)COMPACT_NONE) {
        PyErr_SetString(PyExc_OverflowError, "an event field is too long");
        return -1;
    }
    f->data[at] = utf8;
    f->length[at] = (uint32_t)length;
    return 0;
}

static int put_pair(Fields *f, PyObject *pair) { /* (result, value) as JSON text, borrowed by f */
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "result_of must return (str, str)");
        return -1;
    }
    if (put_field(f, COMPACT_RESULT, PyTuple_GET_ITEM(pair, 0)) < 0)
        return -1;
    return put_field(f, COMPACT_VALUE, PyTuple_GET_ITEM(pair, 1));
}

static int put_number(Fields *f, long long number) { /* "ok" and the number */
    char *end = f->digits + sizeof f->digits, *at = end;
    unsigned long long magnitude = number < 0 ? 0ULL - (unsigned long long)number : (unsigned long long)number;
    do
        *--at = (char)('0' + magnitude % 10);
    while ((magnitude /= 10) != 0);
    if (number < 0)
        *--at = '-';
    f->data[COMPACT_RESULT] = "\"ok\"";
    f->length[COMPACT_RESULT] = 4;
    f->data[COMPACT_VALUE] = at;
    f->length[COMPACT_VALUE] = (uint32_t)(end - at);
    return 0;
}

/* The result and value of ``response``; 1 where they do not fit (a value beyond 64 bits). */
static int put_result(Fields *f, PyObject *response) {
    PyObject *type = (PyObject *)Py_TYPE(response);
    PyObject *pair = PyDict_GetItemWithError(fixed, type);
    if (pair != NULL || PyErr_Occurred())
        return pair != NULL ? put_pair(f, pair) : -1;
    if (type == value_type || type == data_type) {
        PyObject *value = PyObject_GetAttr(response, type == value_type ? s_value : s_data);
        if (value == NULL)
            return -1;
        int overflow = 0;
        long long number = type == value_type ? PyLong_AsLongLongAndOverflow(value, &overflow) : PyObject_Size(value);
        Py_DECREF(value);
        if (number == -1 && PyErr_Occurred())
            return -1;
        return overflow ? 1 : put_number(f, number);
    }
    if (type == errno_type) { /* the same pair for the same errno: asked of Python once */
        PyObject *number = PyObject_GetAttr(response, s_errno);
        if (number == NULL)
            return -1;
        pair = PyDict_GetItemWithError(by_errno, number);
        if (pair == NULL && !PyErr_Occurred()) {
            PyObject *made = PyObject_CallOneArg(result_of, response);
            if (made != NULL && PyDict_SetItem(by_errno, number, made) == 0)
                pair = PyDict_GetItemWithError(by_errno, number);
            Py_XDECREF(made);
        }
        Py_DECREF(number);
        return pair != NULL ? put_pair(f, pair) : -1;
    }
    pair = PyObject_CallOneArg(result_of, response); /* an answer of no known kind (WouldBlock) */
    if (pair == NULL)
        return -1;
    f->answer = pair; /* keeps both texts alive */
    return put_pair(f, pair);
}

static PyObject *kind(PyObject *request) { return kind_in(kinds, kind_of, request); }

/* The bytes of a compact record of ``head`` and the fields ``f`` holds. */
static PyObject *compact_bytes(const Fields *f, const CompactHead *head) {
    size_t size = sizeof *head + head->fields * 4;
    for (uint32_t i = 0; i < head->fields; i++)
        size += f->length[i] == COMPACT_NONE ? 0 : f->length[i];
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (result == NULL)
        return NULL;
    char *at = PyBytes_AS_STRING(result);
    memcpy(at, head, sizeof *head);
    memcpy(at + sizeof *head, f->length, head->fields * 4);
    at += sizeof *head + head->fields * 4;
    for (uint32_t i = 0; i < head->fields; i++)
        if (f->length[i] != COMPACT_NONE) {
            memcpy(at, f->data[i], f->length[i]);
            at += f->length[i];
        }
    return result;
}

/* The compact record (compact.h) of a served request; Py_None where it does not fit one
 * (a number beyond 64 bits, more than MOST_PATHS paths: the caller makes the Record tuple). */
static PyObject *compact(PyObject *const *fields, double seconds, long long pid, long long duration, const Comm *name,
                         const long long *given_flags) { /* given_flags: NULL, read from the request */
    PyObject *vm = fields[0], *request = fields[1], *response = fields[2], *answered_by = fields[4];
    PyObject *result = NULL, *paths = PySequence_Fast(fields[5], "paths must be a sequence");
    if (paths == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(paths);
    if (count > MOST_PATHS) {
        Py_DECREF(paths);
        Py_RETURN_NONE;
    }
    Fields f;
    memset(f.held, 0, sizeof f.held);
    f.kind = f.answer = NULL;
    CompactHead head = {.time = seconds, .pid = pid, .duration_us = duration, .magic = COMPACT_MAGIC};
    head.fields = (uint32_t)(COMPACT_PATHS + count);
    PyObject *known = kind(request);
    if (known == NULL)
        goto out;
    f.kind = Py_NewRef(known);
    int flagged = PyObject_IsTrue(PyTuple_GET_ITEM(known, 1));
    if (flagged < 0 || put_field(&f, COMPACT_OPERATION, PyTuple_GET_ITEM(known, 0)) < 0)
        goto out;
    if (flagged && given_flags != NULL)
        head.flags = *given_flags;
    else if (flagged) {
        PyObject *flags = PyObject_GetAttr(request, s_flags);
        if (flags == NULL)
            goto out;
        int overflow;
        head.flags = PyLong_AsLongLongAndOverflow(flags, &overflow);
        Py_DECREF(flags);
        if (PyErr_Occurred())
            goto out;
        if (overflow) {
            result = Py_NewRef(Py_None);
            goto out;
        }
    }
    int fits = put_result(&f, response);
    if (fits != 0) {
        result = fits > 0 ? Py_NewRef(Py_None) : NULL;
        goto out;
    }
    f.data[COMPACT_COMM] = name->text;
    f.length[COMPACT_COMM] = (uint32_t)name->text_length;
    if (put_field(&f, COMPACT_VM, vm) < 0)
        goto out;
    f.data[COMPACT_BY] = NULL;
    f.length[COMPACT_BY] = COMPACT_NONE;
    if (answered_by != Py_None && put_field(&f, COMPACT_BY, answered_by) < 0)
        goto out;
    for (Py_ssize_t i = 0; i < count; i++)
        if (put_field(&f, COMPACT_PATHS + (int)i, PySequence_Fast_GET_ITEM(paths, i)) < 0)
            goto out;
    result = compact_bytes(&f, &head);
out:
    for (int i = 0; i < COMPACT_PATHS + MOST_PATHS; i++)
        Py_XDECREF(f.held[i]);
    Py_XDECREF(f.kind);
    Py_XDECREF(f.answer);
    Py_DECREF(paths);
    return result;
}

/* The Record tuple (hvfs.api.events.Record) of what a compact record cannot hold. */
static PyObject *record_tuple(PyObject *const *fields, double seconds, long long duration, const Comm *name) {
    PyObject *record = PyTuple_New(8);
    PyObject *when = PyFloat_FromDouble(seconds), *took = PyLong_FromLongLong(duration);
    PyObject *comm = PyUnicode_DecodeUTF8(name->text, name->text_length, "strict");
    if (record == NULL || when == NULL || took == NULL || comm == NULL) {
        Py_XDECREF(record);
        Py_XDECREF(when);
        Py_XDECREF(took);
        Py_XDECREF(comm);
        return NULL;
    }
    PyObject *items[8] = {fields[0], fields[1], fields[2], when, took, comm, fields[4], fields[5]};
    for (int i = 0; i < 8; i++)
        PyTuple_SET_ITEM(record, i, i == 3 || i == 4 || i == 5 ? items[i] : Py_NewRef(items[i]));
    return record;
}

/* The record of a served request's ``fields`` (vm, request, response, began_ns, answered_by,
 * paths): compact, else the Record tuple; NULL with an error set. */
static PyObject *record_of(PyObject *const *fields) {
    long long began = PyLong_AsLongLong(fields[3]);
    if (began == -1 && PyErr_Occurred())
        return NULL;
    PyObject *request = fields[1];
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
    const Comm *name = comm_entry(number, again, now);
    /* time.time()'s own arithmetic (_PyTime_AsSecondsDouble), so that the two recorders agree */
    double seconds = wall % 1000000000LL == 0 ? (double)(wall / 1000000000LL) : (double)wall / 1e9;
    long long duration = (now - began) / 1000;
    duration = duration < 0 ? 0 : duration;
    PyObject *made = compact(fields, seconds, number, duration, name, NULL);
    if (made == NULL || made == Py_None) {
        /* What the compact form cannot hold, or an odd field (a path that is not a str):
         * the Record tuple, which the writer reads or reports, as before (never raises here) */
        PyErr_Clear();
        Py_XDECREF(made);
        made = record_tuple(fields, seconds, duration, name);
    }
    return made;
}

/* record(ring, capacity, vm, request, response, began_ns, answered_by, paths) -> int:
 * the ring's length before the record was appended (compact, else the Record tuple), or
 * -1 when it was full (nothing appended; the caller waits for room, hvfs.api.ring). */
static PyObject *record(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "record takes 8 arguments");
        return NULL;
    }
    if (kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hvfs._native._record: configure() was not called");
        return NULL;
    }
    PyObject *ring = args[0];
    Py_ssize_t capacity = PyLong_AsSsize_t(args[1]);
    if (capacity == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyObject_Size(ring);
    if (size < 0)
        return NULL;
    if (size >= capacity)
        return PyLong_FromLong(-1);
    PyObject *made = record_of(args + 2);
    if (made == NULL)
        return NULL;
    PyObject *done = PyObject_CallMethodOneArg(ring, s_append, made);
    Py_DECREF(made);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);
    return PyLong_FromSsize_t(size);
}

#include "recorder.h"

#include "record_raw.h" /* record_raw: the event of a request the C loop served */

#include "detached.h" /* raw_record: the same, without the GIL; raw_compact: made when drained */

/* plain_name(base, name) -> str | None: hvfs.manager.resolve.plain_name of a VmPath's base
 * and name, in C: the audited stat's naming, which in Python was a tenth of what the
 * audit added to it (substring tests, a concatenation, three frames). */
static PyObject *plain_name(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "plain_name takes a base and a name (str)");
        return NULL;
    }
    PyObject *base = args[0], *name = args[1], *whole;
    Py_ssize_t length = PyUnicode_GET_LENGTH(name);
    if (length > 0 && PyUnicode_READ_CHAR(name, 0) == '/')
        whole = Py_NewRef(name);
    else {
        Py_ssize_t based = PyUnicode_GET_LENGTH(base);
        if (length == 0 || based == 0 || PyUnicode_READ_CHAR(base, 0) != '/')
            Py_RETURN_NONE;
        if (PyUnicode_READ_CHAR(base, based - 1) == '/') /* a base "/a//" is not plain: below */
            whole = PyUnicode_Concat(base, name);
        else {
            PyObject *head = PyUnicode_Concat(base, slash);
            whole = head != NULL ? PyUnicode_Concat(head, name) : NULL;
            Py_XDECREF(head);
        }
        if (whole == NULL)
            return NULL;
    }
    static PyObject **const inner[] = {&double_slash, &slash_dot_slash, &slash_dots_slash};
    for (size_t i = 0; i < sizeof inner / sizeof *inner; i++) {
        int found = PyUnicode_Contains(whole, *inner[i]);
        if (found != 0) {
            Py_DECREF(whole);
            if (found < 0)
                return NULL;
            Py_RETURN_NONE;
        }
    }
    Py_ssize_t end = PyUnicode_GET_LENGTH(whole);
    if (PyUnicode_Tailmatch(whole, slash_dot, 0, end, 1) || PyUnicode_Tailmatch(whole, slash_dots, 0, end, 1)) {
        Py_DECREF(whole);
        Py_RETURN_NONE; /* a last component a path's text names differently than its resolution */
    }
    return whole;
}

/* comm(pid, again) -> str: the cache's answer alone (tests/test_audit_ring.py). */
static PyObject *comm(PyObject *self, PyObject *args) {
    long pid;
    int again = 0;
    if (!PyArg_ParseTuple(args, "l|p", &pid, &again))
        return NULL;
    return comm_of(pid, again, clock_ns(CLOCK_MONOTONIC));
}

/* configure(again_types, kind_of, result_of, fixed, value_type, errno_type, data_type): the
 * request types whose caller exec's (a frozenset), and how requests and answers read
 * (hvfs.api.events: request_kind, result_text, FIXED_RESULTS; api.Value, api.Errno, api.Data). */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *types, *new_kind_of, *new_result_of, *new_fixed, *new_value, *new_errno, *new_data;
    if (!PyArg_ParseTuple(args, "O!OOO!OOO:configure", &PyFrozenSet_Type, &types, &new_kind_of, &new_result_of,
                          &PyDict_Type, &new_fixed, &new_value, &new_errno, &new_data))
        return NULL;
    PyObject *new_kinds = PyDict_New(), *new_by_errno = PyDict_New(), *copy = PyDict_Copy(new_fixed);
    if (new_kinds == NULL || new_by_errno == NULL || copy == NULL) {
        Py_XDECREF(new_kinds);
        Py_XDECREF(new_by_errno);
        Py_XDECREF(copy);
        return NULL;
    }
    Py_XSETREF(again_types, Py_NewRef(types));
    Py_XSETREF(kinds, new_kinds);
    Py_XSETREF(by_errno, new_by_errno);
    Py_XSETREF(fixed, copy);
    Py_XSETREF(kind_of, Py_NewRef(new_kind_of));
    Py_XSETREF(result_of, Py_NewRef(new_result_of));
    Py_XSETREF(value_type, Py_NewRef(new_value));
    Py_XSETREF(errno_type, Py_NewRef(new_errno));
    Py_XSETREF(data_type, Py_NewRef(new_data));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL, "Append a served request's Record to the ring."},
    {"comm", comm, METH_VARARGS, "The command name of a thread, through the per-thread cache."},
    {"record_raw", (PyCFunction)(void (*)(void))record_raw, METH_FASTCALL, "The event of a request the C loop served."},
    {"plain_name", (PyCFunction)(void (*)(void))plain_name, METH_FASTCALL, "A VmPath's plain absolute text, or None."},
    {"configure", configure, METH_VARARGS, "The request types that read the caller's name again; how events read."},
    {"configure_raw", configure_raw, METH_O, "The (request, response) pairs a raw entry's kind reads as."},
    {"record_detached", record_detached, METH_VARARGS, "What the C loop records of a served request (tests)."},
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
    s_recorded = PyUnicode_InternFromString("recorded");
    s_flags = PyUnicode_InternFromString("flags");
    s_value = PyUnicode_InternFromString("value");
    s_errno = PyUnicode_InternFromString("errno");
    s_data = PyUnicode_InternFromString("data");
    slash = PyUnicode_InternFromString("/");
    double_slash = PyUnicode_InternFromString("//");
    slash_dot_slash = PyUnicode_InternFromString("/./");
    slash_dots_slash = PyUnicode_InternFromString("/../");
    slash_dot = PyUnicode_InternFromString("/.");
    slash_dots = PyUnicode_InternFromString("/..");
    if (!slash || !double_slash || !slash_dot_slash || !slash_dots_slash || !slash_dot || !slash_dots)
        return NULL;
    if (!s_caller || !s_pid || !s_append || !s_recorded
        || !s_flags || !s_value || !s_errno || !s_data)
        return NULL;
    if (PyType_Ready(&RecorderType) < 0 || PyType_Ready(&RingType) < 0 || PyType_Ready(&SinkType) < 0)
        return NULL;
    PyObject *made = PyModule_Create(&module);
    if (made == NULL)
        return NULL;
    PyObject *capsule = PyCapsule_New((void *)&raw_api, RAW_API_CAPSULE, NULL);
    if (capsule == NULL || PyModule_AddObjectRef(made, "_raw_api", capsule) < 0 ||
        PyModule_AddObjectRef(made, "Recorder", (PyObject *)&RecorderType) < 0 ||
        PyModule_AddObjectRef(made, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddObjectRef(made, "Sink", (PyObject *)&SinkType) < 0)
        Py_CLEAR(made);
    Py_XDECREF(capsule);
    return made;
}
