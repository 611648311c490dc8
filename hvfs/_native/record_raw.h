/* The event of a request the seccomp driver's C loop served, recorded by the same compact
 * record as the dispatch's (record.c's ``compact``, the bus's Recorder). Included by record.c
 * alone, after recorder.h. */
#ifndef HVFS_RECORD_RAW_H
#define HVFS_RECORD_RAW_H

/* record_raw(recorder, vm, prototype, response, pid, flags, began_ns, path) -> None: the event of a
 * request the seccomp driver's C loop served (hvfs/_native/served_stat.h), recorded as the
 * Recorder records the same request served in Python, the very bytes: ``prototype`` is a
 * request of its type (its operation, flagged or not, and whether an exec reads the name
 * again; its own caller and flags are not read: ``pid`` and ``flags`` are the request's),
 * ``response`` an answer of its type, ``path`` the name the Python handler would note.
 * A ``recorder`` that is not a Recorder (the audit went meanwhile: the bus's
 * ``record_served`` records nothing) records nothing, as the dispatch's call would. A full
 * ring, or one to be woken: ring.recorded_record(size, vm, record), in Python. */
static PyObject *record_raw(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "record_raw takes 8 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &RecorderType))
        Py_RETURN_NONE;
    if (kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hvfs._native._record: configure() was not called");
        return NULL;
    }
    Recorder *recorder = (Recorder *)args[0];
    PyObject *vm = args[1], *prototype = args[2];
    long long pid = PyLong_AsLongLong(args[4]), flags = PyLong_AsLongLong(args[5]), began = PyLong_AsLongLong(args[6]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *paths = PyTuple_Pack(1, args[7]);
    if (paths == NULL)
        return NULL;
    long long now = clock_ns(CLOCK_MONOTONIC), wall = clock_ns(CLOCK_REALTIME);
    int again = again_types != NULL ? PySet_Contains(again_types, (PyObject *)Py_TYPE(prototype)) : 0;
    if (again < 0) {
        Py_DECREF(paths);
        return NULL;
    }
    const Comm *name = comm_entry(pid, again, now);
    double seconds = wall % 1000000000LL == 0 ? (double)(wall / 1000000000LL) : (double)wall / 1e9;
    long long duration = (now - began) / 1000;
    PyObject *fields[6] = {vm, prototype, args[3], args[6], Py_None, paths};
    PyObject *made = compact(fields, seconds, pid, duration < 0 ? 0 : duration, name, &flags);
    Py_DECREF(paths);
    if (made == NULL)
        return NULL;
    if (made == Py_None) { /* C serves nothing a compact record cannot hold */
        Py_DECREF(made);
        PyErr_SetString(PyExc_ValueError, "record_raw: not a compact record");
        return NULL;
    }
    Py_ssize_t size = PyObject_Size(recorder->deque);
    if (size >= 0 && size < recorder->capacity) {
        PyObject *done = PyObject_CallOneArg(recorder->append, made);
        if (done == NULL)
            size = -2;
        Py_XDECREF(done);
    } else if (size >= 0)
        size = -1;
    PyObject *result = NULL;
    if (size >= -1 && (size < 0 || recorder->prompt || size == recorder->nudge_at)) {
        PyObject *at = PyLong_FromSsize_t(size);
        if (at != NULL)
            result = PyObject_CallMethod(recorder->ring, "recorded_record", "OOO", at, vm, made);
        Py_XDECREF(at);
    } else if (size >= -1)
        result = Py_NewRef(Py_None);
    Py_DECREF(made);
    return result;
}

#endif
