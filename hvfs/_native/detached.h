/* The event of a request the seccomp driver's C loop served, recorded without the GIL
 * (``raw_record``, which the loop reaches through the capsule ``_raw_api``: raw_event.h), and
 * made on the ring's thread the very compact record record_raw.h makes of it with the GIL
 * (``raw_compact``). Included by record.c alone, after record_raw.h and ring.h.
 *
 * Taken at record time, on the serving thread, before the request is answered: the two
 * clocks (the event's time and duration), the command name (comm.h's per-thread cache; its
 * bytes as read, for an exec can change it later), the pid, flags, errno, the link's length,
 * the VM and the path as served, copied into the entry. Made when drained, from the entry's
 * kind alone: the operation, result and value texts, which depend on the request's and the
 * answer's types (and the errno) and on nothing the VM can change; the same Python objects
 * record_raw.h is given are made of the entry here (a path decoded with surrogateescape,
 * the failure's Errno, the link's Value), then the same ``compact``. */
#ifndef HVFS_DETACHED_H
#define HVFS_DETACHED_H

#include <errno.h>

static PyObject *raw_prototypes;    /* configure_raw's: AUDIT_KINDS (request, response) pairs */
static int raw_again[AUDIT_KINDS]; /* whether a kind's caller's name is read again (again_types) */
static int raw_ready;              /* raw_prototypes set: raw_record records (read without the GIL) */

/* The raw entry of ``event``, taken now; NULL where there is no memory. */
static struct ring_node *raw_node(const struct raw_event *event) {
    long long now = clock_ns(CLOCK_MONOTONIC), wall = clock_ns(CLOCK_REALTIME);
    struct ring_node *node = malloc(sizeof *node + sizeof(struct raw_entry) + event->vm_length + event->name_length);
    if (node == NULL)
        return NULL;
    struct raw_entry *entry = (struct raw_entry *)(node + 1); /* safe because: allocated together, aligned (3 words) */
    node->object = NULL, node->raw = entry, node->next = NULL;
    const Comm *name = comm_lookup((long)event->pid, raw_again[event->kind], now);
    entry->kind = event->kind, entry->error = event->error, entry->continued = event->continued;
    entry->value = event->value, entry->pid = event->pid, entry->flags = event->flags;
    long long duration = (now - event->began) / 1000;
    entry->duration_us = duration < 0 ? 0 : duration;
    /* time.time()'s own arithmetic (_PyTime_AsSecondsDouble), as record_raw.h */
    entry->time = wall % 1000000000LL == 0 ? (double)(wall / 1000000000LL) : (double)wall / 1e9;
    entry->comm_length = name->length;
    memcpy(entry->comm, name->name, (size_t)name->length);
    entry->vm_length = event->vm_length, entry->name_length = event->name_length;
    memcpy(entry->bytes, event->vm, event->vm_length);
    memcpy(entry->bytes + event->vm_length, event->name, event->name_length);
    return node;
}

/* raw_api.record: the entry into the sink's ring, before the request is answered. A full
 * ring: its thread woken, room waited for up to its full_wait in 1 ms steps (the sink read
 * again at each: an audit that went meanwhile records nothing), then counted lost. */
static void raw_record(PyObject *sink_object, const struct raw_event *event) {
    Sink *sink = (Sink *)sink_object;
    if (event->kind < 0 || event->kind >= AUDIT_KINDS)
        return;
    /* not configured (never so: audit_of configures before a loop has a sink): counted lost, as no memory */
    struct ring_node *node = __atomic_load_n(&raw_ready, __ATOMIC_ACQUIRE) ? raw_node(event) : NULL;
    long long deadline = 0;
    for (;;) {
        pthread_mutex_lock(&sink->lock);
        Ring *ring = sink->ring;
        if (ring == NULL) {
            pthread_mutex_unlock(&sink->lock);
            free(node);
            return;
        }
        pthread_mutex_lock(&ring->lock);
        int done = 1, pushed = node != NULL && ring->size < ring->capacity;
        if (pushed) {
            Py_ssize_t size = ring_push_locked(ring, node);
            if (ring->prompt || size == ring->nudge_at)
                ring_wake_locked(ring);
            sink->recorded++; /* under the sink's lock */
        } else {
            ring_wake_locked(ring);
            long long now = clock_ns(CLOCK_MONOTONIC);
            if (deadline == 0)
                deadline = now + (long long)(ring->full_wait * 1e9);
            done = node == NULL || ring->stopping || now > deadline;
            if (done) /* no memory counts as a full ring: the audit says where its gap is */
                ring_lose_locked(ring, event->vm, event->vm_length);
        }
        pthread_mutex_unlock(&ring->lock);
        pthread_mutex_unlock(&sink->lock);
        if (done) {
            if (!pushed)
                free(node);
            return;
        }
        struct timespec step = {0, 1000000};
        nanosleep(&step, NULL);
    }
}

static const struct raw_api raw_api = {raw_record};

/* The VM's name as a str, kept from one entry to the next (the drain's, with the GIL). */
static PyObject *raw_vm(Ring *ring, const struct raw_entry *entry) {
    if (ring->vm_text != NULL && ring->vm_length == entry->vm_length &&
        memcmp(ring->vm_bytes, entry->bytes, entry->vm_length) == 0)
        return Py_NewRef(ring->vm_text);
    PyObject *vm = PyUnicode_DecodeUTF8(entry->bytes, (Py_ssize_t)entry->vm_length, "surrogateescape");
    char *bytes = malloc(entry->vm_length + 1);
    if (vm == NULL || bytes == NULL) {
        free(bytes);
        Py_XDECREF(vm);
        return vm == NULL ? NULL : PyErr_NoMemory();
    }
    memcpy(bytes, entry->bytes, entry->vm_length);
    free(ring->vm_bytes);
    Py_XSETREF(ring->vm_text, Py_NewRef(vm));
    ring->vm_bytes = bytes, ring->vm_length = entry->vm_length;
    return vm;
}

/* The compact record of a raw entry: record_raw.h's of the same request (served_audit.h's
 * record_served_event's objects), the clocks and the name as taken at record time. */
static PyObject *raw_compact_objects(Ring *ring, const struct raw_entry *entry) {
    PyObject *pair = PyTuple_GET_ITEM(raw_prototypes, entry->kind), *response = PyTuple_GET_ITEM(pair, 1);
    PyObject *failed = PyTuple_GET_ITEM(PyTuple_GET_ITEM(raw_prototypes, AUDIT_FAILED), 1), *made = NULL;
    if (entry->continued)
        response = PyTuple_GET_ITEM(PyTuple_GET_ITEM(raw_prototypes, AUDIT_CONTINUED), 1);
    else if (entry->error) /* the dispatch's Errno of the handler's OSError */
        response = made = PyObject_CallFunction((PyObject *)Py_TYPE(failed), "i", entry->error);
    else if (entry->kind == AUDIT_READLINK) /* the event reads the Data's length alone, as a Value's */
        response = made = PyObject_CallFunction((PyObject *)Py_TYPE(response), "L", (long long)entry->value);
    PyObject *vm = raw_vm(ring, entry);
    PyObject *name = PyUnicode_DecodeUTF8(entry->bytes + entry->vm_length, (Py_ssize_t)entry->name_length,
                                          "surrogateescape");
    PyObject *paths = name != NULL ? PyTuple_Pack(1, name) : NULL, *result = NULL;
    if (response != NULL && vm != NULL && paths != NULL) {
        Comm comm = {.fd = -1, .length = entry->comm_length};
        memcpy(comm.name, entry->comm, (size_t)entry->comm_length);
        name_text(&comm);
        long long flags = (long long)entry->flags;
        PyObject *fields[6] = {vm, PyTuple_GET_ITEM(pair, 0), response, Py_None, Py_None, paths};
        result = compact(fields, entry->time, entry->pid, entry->duration_us, &comm, &flags);
        if (result == Py_None) { /* C serves nothing a compact record cannot hold */
            Py_CLEAR(result);
            PyErr_SetString(PyExc_ValueError, "a raw entry: not a compact record");
        }
    }
    Py_XDECREF(made);
    Py_XDECREF(vm);
    Py_XDECREF(name);
    Py_XDECREF(paths);
    return result;
}

static int ascii(const char *bytes, size_t length) {
    unsigned char any = 0;
    for (size_t i = 0; i < length; i++)
        any |= (unsigned char)bytes[i];
    return any < 0x80;
}

/* The result and value of an errno answered: configure's by_errno pair, made once per errno
 * of the failure prototype's Errno as put_result makes it. 0, or -1 with an error set. */
static int put_errno(Fields *f, int error) {
    PyObject *number = PyLong_FromLong(error);
    if (number == NULL)
        return -1;
    PyObject *pair = PyDict_GetItemWithError(by_errno, number);
    Py_DECREF(number);
    if (pair != NULL)
        return put_pair(f, pair);
    if (PyErr_Occurred())
        return -1;
    PyObject *failed = PyTuple_GET_ITEM(PyTuple_GET_ITEM(raw_prototypes, AUDIT_FAILED), 1);
    PyObject *made = PyObject_CallFunction((PyObject *)Py_TYPE(failed), "i", error);
    if (made == NULL)
        return -1;
    int done = put_result(f, made); /* by_errno's pair now: borrowed by f, which the dict keeps */
    Py_DECREF(made);
    return done;
}

/* raw_compact_objects's record, made straight from the entry's bytes where its name is ASCII
 * (the bytes a str of it holds: what put_field would copy) and its VM's UTF-8 is the str's
 * own (served_note_of's); no object made but for a new errno's. Else raw_compact_objects. */
static PyObject *raw_compact(Ring *ring, const struct raw_entry *entry) {
    const char *name = entry->bytes + entry->vm_length;
    if (!ascii(name, entry->name_length) || entry->name_length >= COMPACT_NONE || entry->vm_length >= COMPACT_NONE)
        return raw_compact_objects(ring, entry);
    PyObject *pair = PyTuple_GET_ITEM(raw_prototypes, entry->kind), *result = NULL;
    Fields f;
    memset(f.held, 0, sizeof f.held);
    f.kind = f.answer = NULL;
    CompactHead head = {.time = entry->time, .pid = entry->pid, .duration_us = entry->duration_us,
                        .fields = COMPACT_PATHS + 1, .magic = COMPACT_MAGIC};
    PyObject *known = kind(PyTuple_GET_ITEM(pair, 0));
    if (known == NULL)
        return NULL;
    f.kind = Py_NewRef(known);
    int flagged = PyObject_IsTrue(PyTuple_GET_ITEM(known, 1)), fits;
    if (flagged < 0 || put_field(&f, COMPACT_OPERATION, PyTuple_GET_ITEM(known, 0)) < 0)
        goto out;
    head.flags = flagged ? (int64_t)entry->flags : 0;
    if (entry->continued)
        fits = put_result(&f, PyTuple_GET_ITEM(PyTuple_GET_ITEM(raw_prototypes, AUDIT_CONTINUED), 1));
    else if (entry->error)
        fits = put_errno(&f, entry->error);
    else if (entry->kind == AUDIT_READLINK) /* a Value of the link's length: put_result's number */
        fits = put_number(&f, entry->value);
    else
        fits = put_result(&f, PyTuple_GET_ITEM(pair, 1));
    if (fits != 0) {
        if (fits > 0)
            PyErr_SetString(PyExc_ValueError, "a raw entry: not a compact record");
        goto out;
    }
    Comm comm = {.fd = -1, .length = entry->comm_length};
    memcpy(comm.name, entry->comm, (size_t)entry->comm_length);
    name_text(&comm);
    f.data[COMPACT_COMM] = comm.text, f.length[COMPACT_COMM] = (uint32_t)comm.text_length;
    f.data[COMPACT_VM] = entry->bytes, f.length[COMPACT_VM] = (uint32_t)entry->vm_length;
    f.data[COMPACT_BY] = NULL, f.length[COMPACT_BY] = COMPACT_NONE;
    f.data[COMPACT_PATHS] = name, f.length[COMPACT_PATHS] = (uint32_t)entry->name_length;
    result = compact_bytes(&f, &head);
out:
    for (int i = 0; i < COMPACT_PATHS + MOST_PATHS; i++)
        Py_XDECREF(f.held[i]);
    Py_XDECREF(f.kind);
    Py_XDECREF(f.answer);
    return result;
}

/* configure_raw(prototypes): served_stat.audit_of's AUDIT_KINDS (request, response) pairs,
 * whose types say how a raw entry's event reads (their callers are never read). After
 * configure(). */
static PyObject *configure_raw(PyObject *self, PyObject *prototypes) {
    if (!PyTuple_Check(prototypes) || PyTuple_GET_SIZE(prototypes) != AUDIT_KINDS) {
        PyErr_SetString(PyExc_ValueError, "configure_raw takes AUDIT_KINDS (request, response) pairs");
        return NULL;
    }
    int again[AUDIT_KINDS];
    for (int i = 0; i < AUDIT_KINDS; i++) {
        PyObject *pair = PyTuple_GET_ITEM(prototypes, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_ValueError, "configure_raw takes AUDIT_KINDS (request, response) pairs");
            return NULL;
        }
        PyObject *type = (PyObject *)Py_TYPE(PyTuple_GET_ITEM(pair, 0));
        again[i] = again_types != NULL ? PySet_Contains(again_types, type) : 0;
        if (again[i] < 0)
            return NULL;
    }
    if (__atomic_load_n(&raw_ready, __ATOMIC_ACQUIRE))
        Py_RETURN_NONE; /* the first stays: a C loop may read it now */
    memcpy(raw_again, again, sizeof again);
    raw_prototypes = Py_NewRef(prototypes);
    __atomic_store_n(&raw_ready, 1, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* record_detached(sink, kind, error, continued, value, pid, flags, began_ns, vm, name): what
 * the C loop does for a served request, from Python (its GIL let go): the tests'. */
static PyObject *record_detached(PyObject *self, PyObject *args) {
    PyObject *sink;
    struct raw_event event;
    unsigned long long flags;
    long long value, pid, began;
    Py_ssize_t vm_length, name_length;
    if (!PyArg_ParseTuple(args, "O!iipLLKLs#y#:record_detached", &SinkType, &sink, &event.kind, &event.error,
                          &event.continued, &value, &pid, &flags, &began, &event.vm, &vm_length, &event.name,
                          &name_length))
        return NULL;
    event.value = value, event.pid = pid, event.flags = flags, event.began = began;
    event.vm_length = (size_t)vm_length, event.name_length = (size_t)name_length;
    Py_BEGIN_ALLOW_THREADS
    raw_record(sink, &event);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

#endif
