/* Ring(capacity, nudge_at, full_wait): an EventRing's records in one FIFO that Python and the
 * seccomp driver's C loop both append to, and Sink(), the bus's hold on its current Ring that
 * the C loop reaches without the GIL. Included by record.c alone, after comm.h.
 *
 * Why: the C loop used to take the GIL once per audited request it served, to append its
 * record to the ring's deque: 0.3 µs of CPU beside an idle manager, up to 1.9 µs beside a
 * Python thread that never blocks (benchmarks/gil_per_event.py), and the GIL handed to and
 * fro with the ring's thread and the audit's writer. Here the C loop appends a raw entry
 * (detached.h) under a mutex, which no holder keeps across a wait for the GIL, and the
 * ring's thread makes it the compact record the dispatch makes, when it drains.
 *
 * Order: one FIFO, one mutex: an item is in the order its append took the mutex, whoever
 * appended it (a Python record or Event, a Flush mark, a raw entry); the C loop appends
 * before it answers, so a Flush or a successor request comes after. Bounds: ``capacity``
 * items (Python's ``append`` of a Flush or after its own full-ring wait goes past it, by the
 * appenders at most, as the deque did), a raw entry of a full ring waits up to
 * ``full_wait`` seconds for room, then is counted lost by its VM (``take_lost``). Wake-ups:
 * ``wake`` (any thread, with or without the GIL) ends the ring's thread's ``wait``.
 *
 * Lock order: a Sink's mutex, then its Ring's. Neither is held while the GIL is waited for:
 * the C loop holds no GIL, and a Python thread holding the GIL takes them only for steps
 * that never wait for it. */
#ifndef HVFS_RING_H
#define HVFS_RING_H

#include <errno.h>
#include <structmember.h>
#include "raw_event.h"

/* A raw entry: what the C loop took at record time, the rest (how the event reads) made
 * from its kind when drained. Followed by vm_length + name_length bytes: the VM, the name. */
struct raw_entry {
    int kind, error, continued;
    int64_t value, pid, duration_us;
    uint64_t flags;
    double time;                 /* unix time, as time.time() computes it */
    Py_ssize_t comm_length;      /* the command name's bytes, as read (comm.h's ``name``) */
    char comm[COMM_READ];
    size_t vm_length, name_length;
    char bytes[];
};

struct ring_node {
    struct ring_node *next;
    PyObject *object;       /* a Python item (owned), or NULL: ``raw`` */
    struct raw_entry *raw;  /* in the same block, after the node */
};

struct lost_count { /* a VM's raw entries dropped since the last take_lost */
    struct lost_count *next;
    Py_ssize_t count;
    size_t length;
    char vm[];
};

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    pthread_cond_t woken_cond; /* CLOCK_MONOTONIC */
    struct ring_node *head, *tail;
    Py_ssize_t size, capacity, nudge_at;
    double full_wait;
    char prompt, stopping, woken;
    struct lost_count *lost;
    Py_ssize_t lost_total;
    PyObject *vm_text; /* the drain's last VM name, kept with its bytes: made once per VM run */
    char *vm_bytes;
    size_t vm_length;
} Ring;

/* Appends ``node``; the ring's size before. With the ring's lock held. */
static Py_ssize_t ring_push_locked(Ring *ring, struct ring_node *node) {
    node->next = NULL;
    if (ring->tail != NULL)
        ring->tail->next = node;
    else
        ring->head = node;
    ring->tail = node;
    return ring->size++;
}

static void ring_wake_locked(Ring *ring) {
    ring->woken = 1;
    pthread_cond_signal(&ring->woken_cond);
}

/* Appends a Python item (GIL held); its size before, or -1 where ``bounded`` and it is full
 * (nothing appended), -2 with an error set. */
static Py_ssize_t ring_push_object(Ring *ring, PyObject *item, int bounded) {
    struct ring_node *node = malloc(sizeof *node);
    if (node == NULL) {
        PyErr_NoMemory();
        return -2;
    }
    node->object = Py_NewRef(item), node->raw = NULL;
    pthread_mutex_lock(&ring->lock);
    Py_ssize_t size = -1;
    if (!bounded || ring->size < ring->capacity)
        size = ring_push_locked(ring, node);
    pthread_mutex_unlock(&ring->lock);
    if (size < 0) {
        Py_DECREF(item);
        free(node);
    }
    return size;
}

/* Counts a raw entry of the VM ``vm`` lost. With the ring's lock held. */
static void ring_lose_locked(Ring *ring, const char *vm, size_t length) {
    ring->lost_total++;
    for (struct lost_count *at = ring->lost; at != NULL; at = at->next)
        if (at->length == length && memcmp(at->vm, vm, length) == 0) {
            at->count++;
            return;
        }
    struct lost_count *made = malloc(sizeof *made + length);
    if (made == NULL)
        return; /* the total still says it; its VM's "lost" event does not */
    made->count = 1, made->length = length, made->next = ring->lost;
    memcpy(made->vm, vm, length);
    ring->lost = made;
}

static PyObject *raw_compact(Ring *ring, const struct raw_entry *entry); /* detached.h */

static int ring_init(Ring *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"capacity", "nudge_at", "full_wait", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nnd:Ring", names, &self->capacity, &self->nudge_at,
                                     &self->full_wait))
        return -1;
    return 0;
}

static PyObject *ring_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Ring *self = (Ring *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&self->lock, NULL) != 0 || pthread_cond_init(&self->woken_cond, &attributes) != 0) {
        pthread_condattr_destroy(&attributes);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    pthread_condattr_destroy(&attributes);
    return (PyObject *)self;
}

static void ring_dealloc(Ring *self) { /* no Sink holds it: no C loop reaches it any more */
    for (struct ring_node *node = self->head, *next; node != NULL; node = next) {
        next = node->next;
        Py_XDECREF(node->object);
        free(node);
    }
    for (struct lost_count *at = self->lost, *next; at != NULL; at = next) {
        next = at->next;
        free(at);
    }
    Py_XDECREF(self->vm_text);
    free(self->vm_bytes);
    pthread_mutex_destroy(&self->lock);
    pthread_cond_destroy(&self->woken_cond);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t ring_length(Ring *self) {
    return __atomic_load_n(&self->size, __ATOMIC_RELAXED);
}

/* append(item): at the end, whatever the ring holds (a Flush mark; the deque's ``append``). */
static PyObject *ring_append(Ring *self, PyObject *item) {
    return ring_push_object(self, item, 0) < 0 ? NULL : Py_NewRef(Py_None);
}

/* take(count) -> list: the first ``count`` items at most, in order, a raw entry made the
 * compact record the dispatch makes of its request (a failure to make it: counted lost). */
static PyObject *ring_take(Ring *self, PyObject *argument) {
    Py_ssize_t count = PyLong_AsSsize_t(argument);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    pthread_mutex_lock(&self->lock);
    struct ring_node *first = self->head, *last = NULL;
    Py_ssize_t taken = 0;
    for (struct ring_node *node = first; node != NULL && taken < count; node = node->next)
        last = node, taken++;
    if (last != NULL) {
        self->head = last->next;
        if (self->head == NULL)
            self->tail = NULL;
        last->next = NULL;
        self->size -= taken;
    }
    pthread_mutex_unlock(&self->lock);
    PyObject *items = PyList_New(0);
    for (struct ring_node *node = taken ? first : NULL, *next; node != NULL; node = next) {
        next = node->next;
        PyObject *item = node->object != NULL ? node->object : raw_compact(self, node->raw);
        if (item == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
            pthread_mutex_lock(&self->lock);
            ring_lose_locked(self, node->raw->bytes, node->raw->vm_length);
            pthread_mutex_unlock(&self->lock);
        } else if (items == NULL || PyList_Append(items, item) < 0)
            PyErr_Clear(); /* no memory for the list: the rest is dropped, as it could not be handed out */
        Py_XDECREF(item);
        free(node);
    }
    return items != NULL ? items : PyErr_NoMemory();
}

/* take_lost() -> dict: the raw entries lost by VM since the last call. */
static PyObject *ring_take_lost(Ring *self, PyObject *unused) {
    pthread_mutex_lock(&self->lock);
    struct lost_count *lost = self->lost;
    self->lost = NULL;
    pthread_mutex_unlock(&self->lock);
    PyObject *counts = PyDict_New();
    for (struct lost_count *at = lost, *next; at != NULL; at = next) {
        next = at->next;
        PyObject *vm = PyUnicode_DecodeUTF8(at->vm, (Py_ssize_t)at->length, "surrogateescape");
        PyObject *count = PyLong_FromSsize_t(at->count);
        if (counts != NULL && (vm == NULL || count == NULL || PyDict_SetItem(counts, vm, count) < 0))
            Py_CLEAR(counts);
        Py_XDECREF(vm);
        Py_XDECREF(count);
        free(at);
    }
    return counts;
}

static PyObject *ring_wake(Ring *self, PyObject *unused) {
    pthread_mutex_lock(&self->lock);
    ring_wake_locked(self);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

/* wait(timeout): until woken (``wake``, a C loop's record that is due) or ``timeout``
 * seconds passed, without the GIL; clears the wake-up. */
static PyObject *ring_wait(Ring *self, PyObject *argument) {
    double timeout = PyFloat_AsDouble(argument);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    long long ns = until.tv_nsec + (long long)(timeout * 1e9);
    until.tv_sec += (time_t)(ns / 1000000000LL);
    until.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&self->lock);
    while (!self->woken && pthread_cond_timedwait(&self->woken_cond, &self->lock, &until) != ETIMEDOUT)
        ;
    self->woken = 0;
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *ring_lost(Ring *self, void *unused) {
    pthread_mutex_lock(&self->lock);
    Py_ssize_t total = self->lost_total;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromSsize_t(total);
}

static PyMethodDef ring_methods[] = {
    {"append", (PyCFunction)ring_append, METH_O, "Append an item, whatever the ring holds."},
    {"take", (PyCFunction)ring_take, METH_O, "The first items at most, in order, raw entries made records."},
    {"take_lost", (PyCFunction)ring_take_lost, METH_NOARGS, "The raw entries lost by VM since the last call."},
    {"wake", (PyCFunction)ring_wake, METH_NOARGS, "End the ring's thread's wait."},
    {"wait", (PyCFunction)ring_wait, METH_O, "Wait until woken or the timeout, without the GIL."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ring_getset[] = {
    {"lost", (getter)ring_lost, NULL, "raw entries dropped on a full ring, in all", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Set by Python, read by the C loop without the GIL (a word each, stale by a record at most). */
static PyMemberDef ring_members[] = {
    {"capacity", T_PYSSIZET, offsetof(Ring, capacity), 0, "items the ring holds at most"},
    {"nudge_at", T_PYSSIZET, offsetof(Ring, nudge_at), 0, "the size at which a record wakes the ring's thread"},
    {"prompt", T_BOOL, offsetof(Ring, prompt), 0, "wake the ring's thread per record"},
    {"stopping", T_BOOL, offsetof(Ring, stopping), 0, "the last drain is due: a full ring is not waited for"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods ring_sequence = {.sq_length = (lenfunc)ring_length};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hvfs._native._record.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT, /* its items (records, Events, marks) hold no ring: no cycle */
    .tp_doc = "Ring(capacity, nudge_at, full_wait): an EventRing's items, appended by Python and C.",
    .tp_new = ring_new,
    .tp_init = (initproc)ring_init,
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_methods = ring_methods,
    .tp_members = ring_members,
    .tp_getset = ring_getset,
    .tp_as_sequence = &ring_sequence,
};

/* Sink(): the bus's current Ring for the C loop (``attach``), or none (the audit went). */
typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    Ring *ring; /* owned; replaced under ``lock``, so that a C loop that holds it reads a live one */
    unsigned long long recorded; /* raw entries appended through it (--stats: audit_detached) */
} Sink;

static PyObject *sink_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Sink *self = (Sink *)type->tp_alloc(type, 0);
    if (self != NULL && pthread_mutex_init(&self->lock, NULL) != 0) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

/* attach(ring | None): where the C loop records from now on; none: nothing is recorded. */
static PyObject *sink_attach(Sink *self, PyObject *ring) {
    if (ring != Py_None && !PyObject_TypeCheck(ring, &RingType)) {
        PyErr_SetString(PyExc_TypeError, "attach takes a Ring or None");
        return NULL;
    }
    Ring *old;
    pthread_mutex_lock(&self->lock);
    old = self->ring;
    self->ring = ring == Py_None ? NULL : (Ring *)Py_NewRef(ring);
    pthread_mutex_unlock(&self->lock);
    Py_XDECREF(old); /* after the unlock: no C loop holds it now */
    Py_RETURN_NONE;
}

static PyObject *sink_recorded(Sink *self, void *unused) {
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->recorded, __ATOMIC_RELAXED));
}

static PyGetSetDef sink_getset[] = {
    {"recorded", (getter)sink_recorded, NULL, "raw entries the C loop appended through it, in all", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static void sink_dealloc(Sink *self) {
    Py_XDECREF(self->ring);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef sink_methods[] = {
    {"attach", (PyCFunction)sink_attach, METH_O, "Where the C loop records from now on (a Ring or None)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SinkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hvfs._native._record.Sink",
    .tp_basicsize = sizeof(Sink),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sink(): the bus's current Ring, which the C loop records to without the GIL.",
    .tp_new = sink_new,
    .tp_dealloc = (destructor)sink_dealloc,
    .tp_methods = sink_methods,
    .tp_getset = sink_getset,
};

#endif
