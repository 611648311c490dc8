/* The audit's line of a compact record (compact.h): included by audit.c alone, after
 * buffer.h and its put_escape. The bytes are record_line's for the same event. */
#ifndef HVFS_COMPACT_LINE_H
#define HVFS_COMPACT_LINE_H

#include "compact.h"

/* A JSON string of a field's UTF-8 (surrogatepass for a lone surrogate): as put_string and
 * put_string_escaping write the str it came from. */
static int put_utf8_string(Buffer *b, const unsigned char *text, uint32_t length) {
    if (reserve(b, (size_t)length * 6 + 2) < 0)
        return -1;
    char *out = b->data + b->size;
    *out++ = '"';
    for (uint32_t i = 0; i < length; i++) {
        unsigned char c = text[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0xed) {
            *out++ = (char)c;
        } else if (c < 0x80) {
            out = put_escape(out, c);
        } else if (i + 2 < length && (text[i + 1] & 0xe0) == 0xa0) {
            /* ED A0..BF xx: a surrogate, which UTF-8 never holds (0xED starts U+D000..U+D7FF
             * with 80..9F): its \uxxxx escape, as python_lines's error handler writes it */
            unsigned code = 0xd000u | ((unsigned)(text[i + 1] & 0x3f) << 6) | (text[i + 2] & 0x3fu);
            *out++ = '\\';
            *out++ = 'u';
            *out++ = HEX[(code >> 12) & 0xf];
            *out++ = HEX[(code >> 8) & 0xf];
            *out++ = HEX[(code >> 4) & 0xf];
            *out++ = HEX[code & 0xf];
            i += 2;
        } else {
            *out++ = (char)c;
        }
    }
    *out++ = '"';
    b->size = (size_t)(out - b->data);
    return 0;
}

static int put_int64(Buffer *b, int64_t value) {
    char text[24], *end = text + sizeof text, *at = end;
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do
        *--at = (char)('0' + magnitude % 10);
    while ((magnitude /= 10) != 0);
    if (value < 0)
        *--at = '-';
    return put(b, at, (size_t)(end - at));
}

static int put_time(Buffer *b, double seconds) { /* repr(float) */
    char fast[32];
    int length = shortest_repr(seconds, fast);
    if (length > 0)
        return put(b, fast, (size_t)length);
    char *text = PyOS_double_to_string(seconds, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL)
        return -1;
    int done = put(b, text, strlen(text));
    PyMem_Free(text);
    return done;
}

/* The line of a compact record (without its newline); ValueError for bytes that are not one. */
static int put_compact(Buffer *b, PyObject *record) {
    const char *data = PyBytes_AS_STRING(record);
    size_t size = (size_t)PyBytes_GET_SIZE(record);
    CompactHead head;
    if (size < sizeof head)
        goto bad;
    memcpy(&head, data, sizeof head);
    if (head.magic != COMPACT_MAGIC || head.fields < COMPACT_PATHS || head.fields > (size - sizeof head) / 4)
        goto bad;
    const char *lengths = data + sizeof head;
    const unsigned char *field[COMPACT_PATHS];
    uint32_t length[COMPACT_PATHS];
    size_t at = sizeof head + (size_t)head.fields * 4;
    for (uint32_t i = 0; i < head.fields; i++) { /* every length checked before any is used */
        uint32_t n;
        memcpy(&n, lengths + (size_t)i * 4, 4);
        size_t taken = i == COMPACT_BY && n == COMPACT_NONE ? 0 : n;
        if (taken > size - at)
            goto bad;
        if (i < COMPACT_PATHS) {
            field[i] = (const unsigned char *)data + at;
            length[i] = n;
        }
        at += taken;
    }
    if (at != size)
        goto bad;
    if (PUT(b, "{\"time\":") < 0 || put_time(b, head.time) < 0 || PUT(b, ",\"vm\":") < 0
        || put_utf8_string(b, field[COMPACT_VM], length[COMPACT_VM]) < 0 || PUT(b, ",\"pid\":") < 0
        || put_int64(b, head.pid) < 0 || PUT(b, ",\"comm\":") < 0
        || put_utf8_string(b, field[COMPACT_COMM], length[COMPACT_COMM]) < 0 || PUT(b, ",\"operation\":") < 0
        || put(b, (const char *)field[COMPACT_OPERATION], length[COMPACT_OPERATION]) < 0
        || PUT(b, ",\"paths\":[") < 0)
        return -1;
    at = sizeof head + (size_t)head.fields * 4;
    for (uint32_t i = 0; i < head.fields; i++) {
        uint32_t n;
        memcpy(&n, lengths + (size_t)i * 4, 4);
        if (i >= COMPACT_PATHS) {
            if ((i > COMPACT_PATHS && PUT(b, ",") < 0) || put_utf8_string(b, (const unsigned char *)data + at, n) < 0)
                return -1;
        }
        at += i == COMPACT_BY && n == COMPACT_NONE ? 0 : n;
    }
    if (PUT(b, "],\"flags\":") < 0 || put_int64(b, head.flags) < 0 || PUT(b, ",\"result\":") < 0
        || put(b, (const char *)field[COMPACT_RESULT], length[COMPACT_RESULT]) < 0 || PUT(b, ",\"value\":") < 0
        || put(b, (const char *)field[COMPACT_VALUE], length[COMPACT_VALUE]) < 0
        || PUT(b, ",\"duration_us\":") < 0 || put_int64(b, head.duration_us) < 0 || PUT(b, ",\"answered_by\":") < 0)
        return -1;
    if (length[COMPACT_BY] == COMPACT_NONE)
        return PUT(b, "null") < 0 ? -1 : PUT(b, "}");
    if (put_utf8_string(b, field[COMPACT_BY], length[COMPACT_BY]) < 0)
        return -1;
    return PUT(b, "}");
bad:
    PyErr_SetString(PyExc_ValueError, "not a compact record");
    return -1;
}

#endif
