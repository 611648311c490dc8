/* The audit writer's line buffer (audit.c): bytes appended to a growing PyMem block.
 * put and reserve are inlined: a literal's copy becomes a few moves (put was a sixth of
 * a line's time in perf). Included by audit.c alone; needs Python.h and string.h first. */
#ifndef HVFS_BUFFER_H
#define HVFS_BUFFER_H

typedef struct {
    char *data;
    size_t size, capacity;
} Buffer;

static int grow(Buffer *b, size_t more) {
    size_t capacity = b->capacity ? b->capacity : 4096;
    while (capacity < b->size + more)
        capacity *= 2;
    char *data = PyMem_Realloc(b->data, capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static inline __attribute__((always_inline)) int reserve(Buffer *b, size_t more) {
    return b->size + more <= b->capacity ? 0 : grow(b, more);
}

static inline __attribute__((always_inline)) int put(Buffer *b, const char *text, size_t length) {
    if (reserve(b, length) < 0)
        return -1;
    memcpy(b->data + b->size, text, length);
    b->size += length;
    return 0;
}

#define PUT(b, literal) put((b), (literal), sizeof(literal) - 1)

#endif
