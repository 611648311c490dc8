/* A served stat, read-only open, readlink or access of an audited VM (an audit or other
 * subscriber on its bus, no hook: no fault rule, scanner or service must see the request),
 * served in the C loop
 * with its event recorded here, the very record the Python path makes for it
 * (tests/test_served_audit.py compares them).
 *
 * Only what the Python path names by its text is served so (hvfs.manager.resolve.open_named:
 * a ``plain_name`` path found with no symlink on the way, whose text is then its name as the
 * kernel resolved it, a stat's without its trailing "/", an open's only without one), and
 * what it names as served_resolved.h says (a failed lookup, continued or answered its errno:
 * by its parent directory; a read-only open its text does not find: by its answer's fd). A
 * stat answers "ok" here or is declined (an fstat's errno); a readlink or access answers
 * what it finds (served_link.h). Everything else, which Python names by a readlink of what
 * it found (a stat, readlink or access through a symlink on the way) or answers otherwise (a
 * FIFO's open), is declined before any answer, and Python serves and records it.
 *
 * The record: after the request is served and before it is answered (the dispatch records,
 * then the driver answers: the in-flight table, a Flush mark and a successor see the same
 * order), without the GIL: ``record_served_detached`` hands record.c (through its capsule,
 * raw_event.h) what the event says, which it copies into a raw entry of the bus's ring, the
 * C FIFO the dispatch's records go to too (ring.h), where the ring's thread makes it the
 * compact record record_raw.h makes (detached.h). The ring's flush, its Flush marks, its
 * full-ring wait and lost count, its last drain at the manager's stop are the ring's. The
 * ring is read from the bus's Sink at each record (an audit removed meanwhile: nothing
 * recorded, as the dispatch's call would do). Where the bus has no Sink
 * (HVFS_AUDIT_DETACHED=0) ``record_served_event`` records with the GIL, as before: 0.3 µs
 * of CPU per event beside an idle manager, up to 1.9 µs beside a Python thread that never
 * blocks (benchmarks/gil_per_event.py). */
#ifndef HVFS_SERVED_AUDIT_H
#define HVFS_SERVED_AUDIT_H

#include "raw_event.h" /* the prototypes' order (AUDIT_*), and record.c's capsule */

struct served_note {
    PyObject *bus, *vm, *record_raw, *prototypes; /* borrowed from serve's argument */
    PyObject *sink;        /* the bus's Sink (ring.h), borrowed from the bus, which never replaces it; or NULL */
    const char *vm_utf8;   /* the VM's name, the str's own UTF-8 (alive with ``vm``) */
    Py_ssize_t vm_length;
    int audited;                                  /* this request is served under the audit */
    int recordable;                               /* served as Python serves it: record it */
    int kind;                                     /* AUDIT_* */
    int error;                                    /* answered this errno (a mutation's), or 0: the kind's response */
    int continued;                                /* continued in the VM: a Continue, whatever the kind */
    int roots_named;                              /* served.py _roots_named_from_themselves: -1 not asked yet */
    int64_t value;                                /* AUDIT_READLINK: the link's length */
    int by_answer; /* a read-only open: where not found by its text, found as Python's _open finds it */
    int answered;  /* ... and so found: named by its answer's fd (served.py served_paths), or resolved_name */
    pid_t pid;
    uint64_t flags;
    int64_t began;
    size_t length;
    char name[2 * PATH_MAX_BYTES + 2];
};

/* Whether a mutation (served_write.h, served_mutate.h, served_fdmeta.h, served_dirs.h) may be served here:
 * its VM quiet, or audited with no hook (quiet[1]), where C records its event as the
 * dispatch would (note->audited set for the caller). */
static int
served_hearing(const struct stat_context *c, pid_t pid)
{
    if (__atomic_load_n(c->quiet, __ATOMIC_ACQUIRE))
        return 1;
    if (c->note == NULL || c->quiet_length < 2 || !__atomic_load_n(c->quiet + 1, __ATOMIC_ACQUIRE))
        return 0;
    c->note->audited = 1, c->note->pid = pid;
    return 1;
}

/* An audited mutation's event made recordable (nothing where the VM is quiet): its kind, the
 * name the Python handler notes (a path's text, an fd's VM path), the errno answered or 0. */
static void
note_served(const struct stat_context *c, int kind, const char *name, size_t length, int error)
{
    struct served_note *n = c->note;
    if (n == NULL || !n->audited || length >= sizeof n->name)
        return;
    memcpy(n->name, name, length);
    n->name[length] = 0;
    n->length = length, n->kind = kind, n->error = error, n->recordable = 1;
}

/* resolve.plain_name of the path (its base's text first where relative) into note->name,
 * as the Python handler notes it (a stat: without its trailing "/"; an open with one is
 * named by a readlink there: -1). -1 where it is not plain. */
static int
plain_text(struct served_note *n, const char *path, const char *base, int opening)
{
    int made;
    if (path[0] == '/')
        made = snprintf(n->name, sizeof n->name, "%s", path);
    else {
        size_t length = strlen(base);
        if (base[0] != '/' || length == 0)
            return -1;
        made = snprintf(n->name, sizeof n->name, base[length - 1] == '/' ? "%s%s" : "%s/%s", base, path);
    }
    if (made <= 0 || (size_t)made >= sizeof n->name)
        return -1;
    size_t length = (size_t)made;
    if (strstr(n->name, "//") || strstr(n->name, "/./") || strstr(n->name, "/../") || ends_with(n->name, length, "/.") ||
        ends_with(n->name, length, "/.."))
        return -1;
    if (opening && n->name[length - 1] == '/')
        return -1;
    while (length > 1 && n->name[length - 1] == '/')
        length--;
    n->name[length] = 0;
    n->length = length;
    return 0;
}

#define NOT_NAMED (-ECANCELED)

/* A relative path's base as resolve.open_named finds it (resolve._base_named): its text, read
 * anew from the caller for this request, opened with no symlink on the way and checked to be
 * the caller's very directory (identity, read with the text). An fd (the keeper's where
 * base_borrowed says so: the caller must not close it), or NOT_NAMED.
 *
 * The directory found so is kept (served_base.h's keeper, plain) and taken again for a request
 * whose text, read anew, and identity are the kept ones: the readlink of the caller's magic link
 * that gave the text is the kernel's name of that very directory at that moment, which holds no
 * symlink (each component an ancestor directory), so the text finds that directory (the
 * identity) as the openat2 would, and the name the event gives (the text and the path) is that
 * directory's at a moment of the request, as Python's. A directory moved (another text), or
 * another at the text (another identity), is found again. Saves an openat2, an fstat and a close
 * of every audited relative stat or open (git's lstat of each tracked file). */
static long
plain_base(struct kept_base *kept, int root, const char *base, const struct stat *identity)
{
    if (kept_holds(kept, base, identity) && kept->plain)
        return kept->fd;
    long dir = scoped_openat2(root, base, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
    if (dir < 0)
        return NOT_NAMED;
    struct stat st;
    if (fstat((int)dir, &st) < 0 || st.st_dev != identity->st_dev || st.st_ino != identity->st_ino) {
        close((int)dir);
        return NOT_NAMED;
    }
    keep_base(kept, dir, base, &st, 1);
    return dir;
}

/* resolve.open_named: the plain path found with no symlink on the way (a relative one beneath
 * its base, found so too and checked to be the caller's very directory: plain_base): an fd,
 * the -errno open_named raises (a lookup failed before any symlink, as the usual resolution
 * fails), or NOT_NAMED where it finds nothing by the text (a symlink on the way, ELOOP; the
 * base not so found; the switch failed), which Python names otherwise. */
static long
open_plain_at(struct kept_base *kept, int root, const char *base, const struct stat *identity, const char *path,
              uint64_t flags, struct acting *a)
{
    long fd;
    if (path[0] == '/') {
        if (act_switch(a) < 0)
            return NOT_NAMED;
        fd = scoped_openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
    } else {
        long dir = plain_base(kept, root, base, identity);
        if (dir < 0)
            return NOT_NAMED;
        fd = NOT_NAMED;
        if (act_switch(a) == 0) {
            fd = scoped_openat2((int)dir, path, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
            if (fd < 0 && errno == EXDEV) /* the usual resolution goes on from the root: Python's */
                errno = ELOOP;
        }
        int failed = errno;
        if (!base_borrowed(kept, dir))
            close((int)dir);
        errno = failed;
        if (fd == NOT_NAMED)
            return NOT_NAMED;
    }
    return fd >= 0 ? fd : errno == ELOOP || errno == ECANCELED ? NOT_NAMED : -errno;
}

/* The served request's event, with the GIL held: record_raw(recorder, vm, prototype, response,
 * pid, flags, began, name). Never raises: a failure is reported as unraisable, as a
 * dispatch's record never fails the request. */
static void
record_served_event(const struct served_note *n)
{
    PyObject *pair = PyTuple_GET_ITEM(n->prototypes, n->kind), *response = PyTuple_GET_ITEM(pair, 1);
    PyObject *failed = PyTuple_GET_ITEM(PyTuple_GET_ITEM(n->prototypes, AUDIT_FAILED), 1), *made = NULL;
    if (n->continued)
        response = PyTuple_GET_ITEM(PyTuple_GET_ITEM(n->prototypes, AUDIT_CONTINUED), 1);
    else if (n->error) /* the dispatch's Errno of the handler's OSError */
        response = made = PyObject_CallFunction((PyObject *)Py_TYPE(failed), "i", n->error);
    else if (n->kind == AUDIT_READLINK) /* the event reads the Data's length alone, as a Value's */
        response = made = PyObject_CallFunction((PyObject *)Py_TYPE(response), "L", (long long)n->value);
    PyObject *recorder = PyObject_GetAttrString(n->bus, "record_served");
    PyObject *pid = PyLong_FromLong(n->pid), *flags = PyLong_FromUnsignedLongLong(n->flags);
    PyObject *began = PyLong_FromLongLong(n->began);
    PyObject *name = PyUnicode_DecodeUTF8(n->name, (Py_ssize_t)n->length, "surrogateescape");
    if (response && recorder && pid && flags && began && name) {
        PyObject *args[8] = {recorder, n->vm, PyTuple_GET_ITEM(pair, 0), response, pid, flags, began, name};
        PyObject *done = PyObject_Vectorcall(n->record_raw, args, 8, NULL);
        Py_XDECREF(done);
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(n->record_raw);
    Py_XDECREF(made);
    Py_XDECREF(recorder);
    Py_XDECREF(pid);
    Py_XDECREF(flags);
    Py_XDECREF(began);
    Py_XDECREF(name);
}

static const struct raw_api *raw_api; /* record.c's, from its capsule: once */

/* The served request's event, without the GIL: into the ring the bus's Sink holds, which
 * record.c's ring thread makes the compact record record_served_event's call would make
 * (hvfs/_native/detached.h). Before the request is answered, as the dispatch records. */
static void
record_served_detached(const struct served_note *n)
{
    struct raw_event event = {
        .kind = n->kind, .error = n->error, .continued = n->continued, .value = n->value, .pid = n->pid,
        .flags = n->flags, .began = n->began, .vm = n->vm_utf8, .vm_length = (size_t)n->vm_length,
        .name = n->name, .name_length = n->length,
    };
    raw_api->record(n->sink, &event);
}

/* The audit part of serve's stat argument: None, or (bus, vm, record_raw, prototypes), the
 * prototypes a tuple of AUDIT_KINDS (request, response) pairs. 0, or -1 with an exception. */
static int
served_note_of(PyObject *argument, struct served_note *n)
{
    if (!PyArg_ParseTuple(argument, "OUOO!", &n->bus, &n->vm, &n->record_raw, &PyTuple_Type, &n->prototypes))
        return -1;
    n->roots_named = -1;
    n->sink = NULL;
    if (PyTuple_GET_SIZE(n->prototypes) != AUDIT_KINDS)
        goto malformed;
    /* The bus's Sink, where it has one (hvfs.api.ring.make_sink): the events recorded without
     * the GIL; else (none, HVFS_AUDIT_DETACHED=0, a name UTF-8 cannot hold) with it. */
    PyObject *sink = PyObject_GetAttrString(n->bus, "sink");
    if (sink == NULL)
        PyErr_Clear();
    else if (sink != Py_None) {
        n->vm_utf8 = PyUnicode_AsUTF8AndSize(n->vm, &n->vm_length);
        if (raw_api == NULL && n->vm_utf8 != NULL)
            raw_api = PyCapsule_Import(RAW_API_CAPSULE, 0);
        if (n->vm_utf8 != NULL && raw_api != NULL)
            n->sink = sink; /* borrowed: the bus keeps it as long as serve's argument keeps the bus */
        PyErr_Clear();
    }
    Py_XDECREF(sink);
    for (int i = 0; i < AUDIT_KINDS; i++) {
        PyObject *pair = PyTuple_GET_ITEM(n->prototypes, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2)
            goto malformed;
    }
    return 0;
malformed:
    PyErr_SetString(PyExc_ValueError, "stat: the audit's prototypes are AUDIT_KINDS (request, response) pairs");
    return -1;
}

#endif
