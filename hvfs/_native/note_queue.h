/* A VM's change-set notes made by the C loops without the GIL (hvfs/manager/changes.py
 * ChangeSet.c_note says how the change set reads them).
 *
 * Why: each write-open, creation, unlink and fd metadata change served in C is noted in the
 * VM's change set before its answer. Taking the GIL for that (the manager's Python threads
 * hold it) was most of such a call's time. The note is appended here instead, under a mutex
 * held for a copy alone, and the change set drains the queue (drain_notes, one call, under its
 * own lock) before every operation that reads or changes it. A note queued before its answer
 * is thus seen by every reader that comes after that answer, and applied before any note
 * made in Python after it: the order the dispatch keeps (changes.record, then the answer).
 *
 * Bounded (NOTE_QUEUE_BYTES of entries): a note that does not fit is made with the GIL by
 * ChangeSet.note, which drains first, so nothing is dropped and the order holds.
 *
 * Folded: a note of a path that exists, right after one of the same path that exists, is
 * counted on that one (repeats) rather than queued. An untar notes each file four times (its
 * creation, fchmod, fchown, futimens), and every time the queue filled, the serving thread took
 * the GIL and drained some 4,000 notes in Python while its caller waited (three times in an
 * untar of 3,000 files). The change set applies a repeat as it applies the note before it
 * (ChangeSet._note_locked: nothing changes for a path it holds; one more lost past its limit),
 * so folding changes nothing it shows.
 *
 * The queue is a capsule (NOTE_QUEUE_NAME) made by note_queue(), so that both extensions
 * (_hotpath's seccomp loop, _tracer's ptrace loop) take the one a change set made.
 */
#ifndef HVFS_NOTE_QUEUE_H
#define HVFS_NOTE_QUEUE_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NOTE_QUEUE_NAME "hvfs._native.note_queue"
#define NOTE_QUEUE_BYTES (256 * 1024) /* some 3,000 notes of tar's paths between two drains */

/* One note: its path's bytes follow, then padding to 8. */
struct queued_note {
    uint32_t length;
    uint8_t existed, exists;
    uint16_t repeats; /* notes of the same path that exists, folded into this one */
};

struct note_queue {
    pthread_mutex_t lock;
    size_t used; /* bytes of entries */
    size_t capacity;
    size_t last; /* the last entry's offset, SIZE_MAX when the queue is empty */
    char entries[];
};

static size_t
queued_size(size_t length)
{
    return (sizeof(struct queued_note) + length + 7) & ~(size_t)7;
}

/* Appends a note: 1, or 0 where it does not fit (nothing done). Without the GIL. */
static int
note_queue_push(struct note_queue *q, const char *path, size_t length, int existed, int exists)
{
    size_t size = queued_size(length);
    pthread_mutex_lock(&q->lock);
    if (exists && q->last != SIZE_MAX) {
        struct queued_note prior;
        memcpy(&prior, q->entries + q->last, sizeof prior);
        /* Safe because: the last entry holds prior.length bytes of path after its head. */
        if (prior.exists && prior.length == length && prior.repeats < UINT16_MAX &&
            memcmp(q->entries + q->last + sizeof prior, path, length) == 0) {
            prior.repeats++;
            memcpy(q->entries + q->last, &prior, sizeof prior);
            pthread_mutex_unlock(&q->lock);
            return 1;
        }
    }
    int fits = size <= q->capacity - q->used;
    if (fits) {
        struct queued_note head = {.length = (uint32_t)length, .existed = existed != 0, .exists = exists != 0};
        /* Safe because: q->used + size <= q->capacity, the entries' bytes. */
        memcpy(q->entries + q->used, &head, sizeof head);
        memcpy(q->entries + q->used + sizeof head, path, length);
        q->last = q->used;
        q->used += size;
    }
    pthread_mutex_unlock(&q->lock);
    return fits;
}

static void
note_queue_free(PyObject *capsule)
{
    struct note_queue *q = PyCapsule_GetPointer(capsule, NOTE_QUEUE_NAME);
    if (q) {
        pthread_mutex_destroy(&q->lock);
        free(q);
    }
}

/* note_queue() -> an empty queue (a capsule). */
static PyObject *
nq_new(PyObject *self, PyObject *unused)
{
    struct note_queue *q = malloc(sizeof *q + NOTE_QUEUE_BYTES);
    if (!q)
        return PyErr_NoMemory();
    pthread_mutex_init(&q->lock, NULL);
    q->used = 0, q->capacity = NOTE_QUEUE_BYTES, q->last = SIZE_MAX;
    PyObject *capsule = PyCapsule_New(q, NOTE_QUEUE_NAME, note_queue_free);
    if (!capsule) {
        pthread_mutex_destroy(&q->lock);
        free(q);
    }
    return capsule;
}

/* drain_notes(queue) -> [(path, existed, exists, repeats), ...] in the order they were queued,
 * the queue left empty. The entries are copied out under the mutex and decoded after it, so a C
 * loop waits for a copy alone. A decoding can fail only for want of memory (the file system's
 * encoding escapes any byte): MemoryError then, the notes not yet decoded lost. */
static PyObject *
nq_drain(PyObject *self, PyObject *capsule)
{
    struct note_queue *q = PyCapsule_GetPointer(capsule, NOTE_QUEUE_NAME);
    if (!q)
        return NULL;
    char *copy = NULL;
    size_t used;
    /* With the GIL: a C loop holds the mutex for a copy alone and never waits for the GIL
     * while it does, and giving the GIL up here would cost the caller a switch interval. */
    pthread_mutex_lock(&q->lock);
    used = q->used;
    if (used && (copy = malloc(used)) != NULL) {
        memcpy(copy, q->entries, used);
        q->used = 0, q->last = SIZE_MAX;
    }
    pthread_mutex_unlock(&q->lock);
    if (used && !copy)
        return PyErr_NoMemory(); /* nothing taken: the next drain has them all */
    PyObject *notes = PyList_New(0);
    for (size_t at = 0; notes && at < used;) {
        struct queued_note head;
        memcpy(&head, copy + at, sizeof head);
        PyObject *name = PyUnicode_DecodeFSDefaultAndSize(copy + at + sizeof head, (Py_ssize_t)head.length);
        PyObject *note = name ? Py_BuildValue("(NOOi)", name, head.existed ? Py_True : Py_False,
                                              head.exists ? Py_True : Py_False, (int)head.repeats)
                              : NULL;
        if (!note || PyList_Append(notes, note) < 0)
            Py_CLEAR(notes);
        Py_XDECREF(note);
        at += queued_size(head.length);
    }
    free(copy);
    return notes;
}

#define NOTE_QUEUE_METHODS                                                                                            \
    {"note_queue", nq_new, METH_NOARGS, "note_queue() -> an empty queue of change-set notes (note_queue.h)"},        \
        {"drain_notes", nq_drain, METH_O, "drain_notes(queue) -> [(path, existed, exists, repeats), ...], the queue emptied"}

#endif /* HVFS_NOTE_QUEUE_H */
