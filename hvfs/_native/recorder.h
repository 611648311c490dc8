/* Recorder(ring, deque, capacity, nudge_at): an EventRing's EventBus.record_served, called
 * recorder(vm, request, response, began_ns, answered_by, paths) by the dispatch. Included
 * by record.c alone, after ``record_of``.
 *
 * Why a type of its own rather than functools.partial(record_into, ring): the partial's call
 * and four attribute reads of the ring (its deque, capacity, nudge_at, prompt) and the
 * lookup of the deque's append were a quarter of the record's time on the serving thread.
 * Here they are read once, the append is the deque's bound method, and ``prompt`` and
 * ``capacity`` are fields the ring sets (hvfs.api.ring.EventRing's properties). Where the ring is full, or its
 * thread is to be woken, ring.recorded(size, vm, request, response, began_ns, answered_by,
 * paths) does the rest in Python, as before. */
#ifndef HVFS_RECORDER_H
#define HVFS_RECORDER_H

#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *ring, *deque, *append;
    Ring *items; /* the deque where it is a Ring (ring.h): checked and appended in one step */
    Py_ssize_t capacity, nudge_at;
    char prompt; /* a subscriber wants each event as soon as it can: wake the ring per record */
    vectorcallfunc vectorcall;
} Recorder;

static int recorder_init(Recorder *self, PyObject *args, PyObject *kwargs) {
    PyObject *ring, *deque;
    Py_ssize_t capacity, nudge_at;
    static char *names[] = {"ring", "deque", "capacity", "nudge_at", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOnn:Recorder", names, &ring, &deque, &capacity, &nudge_at))
        return -1;
    PyObject *append = PyObject_GetAttr(deque, s_append);
    if (append == NULL)
        return -1;
    Py_XSETREF(self->ring, Py_NewRef(ring));
    Py_XSETREF(self->deque, Py_NewRef(deque));
    Py_XSETREF(self->append, append);
    self->items = PyObject_TypeCheck(deque, &RingType) ? (Ring *)deque : NULL; /* borrowed: ``deque`` holds it */
    self->capacity = capacity;
    self->nudge_at = nudge_at;
    return 0;
}

/* The ring's Python rest: ``recorded(size, *fields)``, where it is full (-1) or to be woken. */
static PyObject *recorder_rest(Recorder *self, Py_ssize_t size, PyObject *const *fields) {
    PyObject *at = PyLong_FromSsize_t(size);
    if (at == NULL)
        return NULL;
    /* rest[0] is room the call may borrow (PY_VECTORCALL_ARGUMENTS_OFFSET) */
    PyObject *rest[9] = {NULL, self->ring, at, fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]};
    PyObject *done = PyObject_VectorcallMethod(s_recorded, rest + 1, 8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(at);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);
    Py_RETURN_NONE;
}

static PyObject *recorder_call(PyObject *callable, PyObject *const *args, size_t flags, PyObject *kwnames) {
    Recorder *self = (Recorder *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(flags);
    if (nargs != 6 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a Recorder takes 6 positional arguments");
        return NULL;
    }
    if (kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hvfs._native._record: configure() was not called");
        return NULL;
    }
    /* The length check and the append are one step: no other thread runs between them
     * (the GIL is not let go: no Python code runs in between). */
    Py_ssize_t size = PyObject_Size(self->deque);
    if (size < 0)
        return NULL;
    if (size >= self->capacity)
        return recorder_rest(self, -1, args);
    PyObject *made = record_of(args);
    if (made == NULL)
        return NULL;
    if (self->items != NULL) { /* the C loop appends without the GIL: the check again, with the append */
        size = ring_push_object(self->items, made, 1);
        Py_DECREF(made);
        if (size < -1)
            return NULL;
        if (size == -1)
            return recorder_rest(self, -1, args);
        if (self->prompt || size == self->nudge_at)
            return recorder_rest(self, size, args);
        Py_RETURN_NONE;
    }
    PyObject *done = PyObject_CallOneArg(self->append, made);
    Py_DECREF(made);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);
    if (self->prompt || size == self->nudge_at)
        return recorder_rest(self, size, args);
    Py_RETURN_NONE;
}

static PyObject *recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Recorder *self = (Recorder *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->vectorcall = recorder_call;
    return (PyObject *)self;
}

static int recorder_traverse(Recorder *self, visitproc visit, void *arg) {
    Py_VISIT(self->ring);
    Py_VISIT(self->deque);
    Py_VISIT(self->append);
    return 0;
}

static int recorder_clear(Recorder *self) {
    Py_CLEAR(self->ring);
    Py_CLEAR(self->deque);
    Py_CLEAR(self->append);
    self->items = NULL;
    return 0;
}

static void recorder_dealloc(Recorder *self) {
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef recorder_members[] = {
    {"prompt", T_BOOL, offsetof(Recorder, prompt), 0, "wake the ring's thread per record"},
    {"capacity", T_PYSSIZET, offsetof(Recorder, capacity), 0, "records the ring holds at most"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hvfs._native._record.Recorder",
    .tp_basicsize = sizeof(Recorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Recorder(ring, deque, capacity, nudge_at): an EventRing's record_served.",
    .tp_new = recorder_new,
    .tp_init = (initproc)recorder_init,
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_vectorcall_offset = offsetof(Recorder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_members = recorder_members,
};

#endif
