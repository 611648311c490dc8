/* The audit's writer in C: the bus's records (record.c's compact ones, compact_line.h;
 * hvfs.api.ring's Record tuples, where Python recorded them) and Events
 * made into the audit's JSON lines and written in batches with the GIL released.
 *
 * Why: in Python an event's line (hvfs.api.events.record_line), the join, the encode and
 * the write cost about 2 us of the audit's thread per event, under the GIL the requests
 * need. Here the same bytes cost a fraction of that, and the write(2) runs without the GIL.
 *
 * The bytes are exactly record_line's (tests/test_audit_ring.py compares the two files):
 *   - a JSON string is json.encoder.encode_basestring's (", \, \b \f \n \r \t escaped,
 *     other characters below 0x20 as \u00xx, everything else as it is) encoded as UTF-8;
 *     a lone surrogate (a name that is not UTF-8, decoded with surrogateescape) as its
 *     \uxxxx escape, as python_lines's error handler writes it;
 *   - the time is repr(float) (shortest.h: without dtoa where it can), an int is str(int);
 *   - what depends on a request's or response's type only is asked of Python once per
 *     type (configure's ``kind_of``); an answer other than the fixed ones and Value is
 *     asked of Python (``result_of``), as is the line of anything that is not a record
 *     (an Event: its to_json()).
 *
 * Lines are written ``per_write`` at a time, each batch whole on the caller's O_APPEND fd:
 * a batch written is in the file even if the manager dies right after.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "buffer.h"
#include "shortest.h"
#include "kinds.h"

#define RECORD_FIELDS 8 /* (vm, request, response, time, duration_us, comm, answered_by, paths) */

static PyObject *kinds;     /* type(request) -> (operation as a JSON string, flagged) */
static PyObject *fixed;     /* type(response) -> (result, value) as JSON text, for the constant ones */
static PyObject *kind_of;   /* Python: request -> (str, bool), asked once per type */
static PyObject *result_of; /* Python: response -> (str, str) */
static PyObject *value_type;
static PyObject *errno_type; /* its pair depends on .errno alone: asked of result_of once per errno */
static PyObject *by_errno;   /* errno -> (result, value) as JSON text */
static PyObject *s_caller, *s_pid, *s_flags, *s_value, *s_to_json, *s_errno;

static const char HEX[] = "0123456789abcdef";

/* The JSON escape of an ASCII character encode_basestring escapes (quote, backslash, controls). */
static char *put_escape(char *out, unsigned char c) {
    *out++ = '\\';
    switch (c) {
    case '"': *out++ = '"'; break;
    case '\\': *out++ = '\\'; break;
    case '\b': *out++ = 'b'; break;
    case '\f': *out++ = 'f'; break;
    case '\n': *out++ = 'n'; break;
    case '\r': *out++ = 'r'; break;
    case '\t': *out++ = 't'; break;
    default:
        *out++ = 'u';
        *out++ = '0';
        *out++ = '0';
        *out++ = HEX[c >> 4];
        *out++ = HEX[c & 0xf];
    }
    return out;
}

#include "compact_line.h" /* a compact record's line (record.c makes them) */

/* put_string for a str UTF-8 cannot encode: a name of the VM's that is not UTF-8, which
 * hvfs decodes with surrogateescape (a byte 0xff is U+DCFF). Each lone surrogate is written
 * as its JSON escape (\udcff), as events.py's python_lines does: the line stays valid
 * JSON, json.loads gives back the same str, and os.fsencode of it the VM's very bytes.
 * Without this the whole batch was refused, and a VM could keep its calls out of the audit. */
static int put_string_escaping(Buffer *b, PyObject *text) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (reserve(b, (size_t)n * 6 + 2) < 0) /* the longest: \uxxxx, more than UTF-8's 4 */
        return -1;
    char *out = b->data + b->size;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *out++ = (char)c;
        } else if (c < 0x80) {
            out = put_escape(out, (unsigned char)c);
        } else if (c >= 0xd800 && c <= 0xdfff) {
            *out++ = '\\';
            *out++ = 'u';
            *out++ = HEX[(c >> 12) & 0xf];
            *out++ = HEX[(c >> 8) & 0xf];
            *out++ = HEX[(c >> 4) & 0xf];
            *out++ = HEX[c & 0xf];
        } else if (c < 0x800) {
            *out++ = (char)(0xc0 | (c >> 6));
            *out++ = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            *out++ = (char)(0xe0 | (c >> 12));
            *out++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *out++ = (char)(0x80 | (c & 0x3f));
        } else {
            *out++ = (char)(0xf0 | (c >> 18));
            *out++ = (char)(0x80 | ((c >> 12) & 0x3f));
            *out++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *out++ = (char)(0x80 | (c & 0x3f));
        }
    }
    *out++ = '"';
    b->size = (size_t)(out - b->data);
    return 0;
}

static int put_string(Buffer *b, PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "an audit field is %.80s, not str", Py_TYPE(text)->tp_name);
        return -1;
    }
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    if (utf8 == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        return put_string_escaping(b, text);
    }
    if (reserve(b, (size_t)length * 6 + 2) < 0) /* the longest escape: \u00xx */
        return -1;
    char *out = b->data + b->size;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)utf8[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        out = put_escape(out, c);
    }
    *out++ = '"';
    b->size = (size_t)(out - b->data);
    return 0;
}

static int put_text(Buffer *b, PyObject *text) { /* a str as it is (already JSON) */
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    return utf8 == NULL ? -1 : put(b, utf8, (size_t)length);
}

static int put_int(Buffer *b, PyObject *number) { /* "%d" % number */
    if (PyLong_Check(number)) {
        int overflow;
        long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
        if (!overflow) {
            if (value == -1 && PyErr_Occurred())
                return -1;
            char text[24], *end = text + sizeof text, *at = end; /* digits backwards: snprintf costs more */
            unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
            do
                *--at = (char)('0' + magnitude % 10);
            while ((magnitude /= 10) != 0);
            if (value < 0)
                *--at = '-';
            return put(b, at, (size_t)(end - at));
        }
    }
    PyObject *integer = PyNumber_Long(number);
    if (integer == NULL)
        return -1;
    PyObject *text = PyObject_Str(integer);
    Py_DECREF(integer);
    if (text == NULL)
        return -1;
    int done = put_text(b, text);
    Py_DECREF(text);
    return done;
}

static int put_repr(Buffer *b, PyObject *object) { /* repr(object): a float's shortest repr */
    if (PyFloat_CheckExact(object)) {
        char fast[32];
        int length = shortest_repr(PyFloat_AS_DOUBLE(object), fast);
        if (length > 0)
            return put(b, fast, (size_t)length);
        char *text = PyOS_double_to_string(PyFloat_AS_DOUBLE(object), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL)
            return -1;
        int done = put(b, text, strlen(text));
        PyMem_Free(text);
        return done;
    }
    PyObject *text = PyObject_Repr(object);
    if (text == NULL)
        return -1;
    int done = put_text(b, text);
    Py_DECREF(text);
    return done;
}

static int put_attribute_int(Buffer *b, PyObject *object, PyObject *name) {
    PyObject *value = PyObject_GetAttr(object, name);
    if (value == NULL)
        return -1;
    int done = put_int(b, value);
    Py_DECREF(value);
    return done;
}

static PyObject *kind(PyObject *request) { return kind_in(kinds, kind_of, request); }

static int put_pair(Buffer *b, PyObject *pair) { /* (result, value) as JSON text */
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0))
        || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
        PyErr_SetString(PyExc_TypeError, "result_of must return (str, str)");
        return -1;
    }
    if (put_text(b, PyTuple_GET_ITEM(pair, 0)) < 0 || PUT(b, ",\"value\":") < 0)
        return -1;
    return put_text(b, PyTuple_GET_ITEM(pair, 1));
}

static int put_result(Buffer *b, PyObject *response) {
    PyObject *type = (PyObject *)Py_TYPE(response);
    PyObject *pair = PyDict_GetItemWithError(fixed, type);
    if (pair != NULL)
        return put_pair(b, pair);
    if (PyErr_Occurred())
        return -1;
    if (type == value_type) {
        if (PUT(b, "\"ok\",\"value\":") < 0)
            return -1;
        return put_attribute_int(b, response, s_value);
    }
    PyObject *number = type == errno_type ? PyObject_GetAttr(response, s_errno) : NULL;
    pair = number != NULL ? PyDict_GetItemWithError(by_errno, number) : NULL; /* borrowed */
    if (pair != NULL || PyErr_Occurred()) {
        Py_XDECREF(number);
        return pair != NULL ? put_pair(b, pair) : -1;
    }
    PyObject *made = PyObject_CallOneArg(result_of, response);
    int done = made != NULL ? put_pair(b, made) : -1;
    if (done == 0 && number != NULL) /* a failed request's line: the same for the same errno */
        done = PyDict_SetItem(by_errno, number, made);
    Py_XDECREF(made);
    Py_XDECREF(number);
    return done;
}

static int put_paths(Buffer *b, PyObject *paths) {
    PyObject *fast = PySequence_Fast(paths, "paths must be a sequence");
    if (fast == NULL)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    int done = PUT(b, "[");
    for (Py_ssize_t i = 0; i < count && done == 0; i++) {
        if (i > 0)
            done = PUT(b, ",");
        if (done == 0)
            done = put_string(b, items[i]);
    }
    Py_DECREF(fast);
    return done < 0 ? -1 : PUT(b, "]");
}

static int put_record(Buffer *b, PyObject *record) {
    PyObject *vm = PyTuple_GET_ITEM(record, 0), *request = PyTuple_GET_ITEM(record, 1);
    PyObject *response = PyTuple_GET_ITEM(record, 2), *time = PyTuple_GET_ITEM(record, 3);
    PyObject *duration = PyTuple_GET_ITEM(record, 4), *comm = PyTuple_GET_ITEM(record, 5);
    PyObject *answered_by = PyTuple_GET_ITEM(record, 6), *paths = PyTuple_GET_ITEM(record, 7);
    PyObject *known = kind(request);
    if (known == NULL)
        return -1;
    Py_INCREF(known); /* kind_of may run Python that changes ``kinds`` */
    int flagged = PyObject_IsTrue(PyTuple_GET_ITEM(known, 1));
    int done = -1;
    if (flagged < 0)
        goto out;
    if (PUT(b, "{\"time\":") < 0 || put_repr(b, time) < 0 || PUT(b, ",\"vm\":") < 0 || put_string(b, vm) < 0)
        goto out;
    if (PUT(b, ",\"pid\":") < 0)
        goto out;
    PyObject *caller = PyObject_GetAttr(request, s_caller);
    if (caller == NULL)
        goto out;
    int pid = put_attribute_int(b, caller, s_pid);
    Py_DECREF(caller);
    if (pid < 0 || PUT(b, ",\"comm\":") < 0 || put_string(b, comm) < 0)
        goto out;
    if (PUT(b, ",\"operation\":") < 0 || put_text(b, PyTuple_GET_ITEM(known, 0)) < 0)
        goto out;
    if (PUT(b, ",\"paths\":") < 0 || put_paths(b, paths) < 0 || PUT(b, ",\"flags\":") < 0)
        goto out;
    if (flagged ? put_attribute_int(b, request, s_flags) < 0 : PUT(b, "0") < 0)
        goto out;
    if (PUT(b, ",\"result\":") < 0 || put_result(b, response) < 0)
        goto out;
    if (PUT(b, ",\"duration_us\":") < 0 || put_int(b, duration) < 0 || PUT(b, ",\"answered_by\":") < 0)
        goto out;
    if (answered_by == Py_None ? PUT(b, "null") < 0 : put_string(b, answered_by) < 0)
        goto out;
    done = PUT(b, "}");
out:
    Py_DECREF(known);
    return done;
}

static int put_item(Buffer *b, PyObject *item) { /* one line and its newline */
    int done;
    if (PyBytes_CheckExact(item)) {
        done = put_compact(b, item);
    } else if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == RECORD_FIELDS) {
        done = put_record(b, item);
    } else {
        PyObject *line = PyObject_CallMethodNoArgs(item, s_to_json);
        if (line == NULL)
            return -1;
        done = PyUnicode_Check(line) ? put_text(b, line) : -1;
        if (done < 0 && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "to_json must return str");
        Py_DECREF(line);
    }
    return done < 0 ? -1 : PUT(b, "\n");
}

static int configured(void) {
    if (kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hvfs._native._audit: configure() was not called");
        return 0;
    }
    return 1;
}

/* The lines of ``items``, made by ``per`` at a time, each batch given to ``sink``. */
typedef int (*Sink)(Buffer *, void *);

static int each_batch(PyObject *items, Py_ssize_t per, Sink sink, void *into) {
    PyObject *fast = PySequence_Fast(items, "items must be a sequence");
    if (fast == NULL)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    Buffer b = {NULL, 0, 0};
    int done = 0;
    for (Py_ssize_t start = 0; start < count && done == 0; start += per) {
        b.size = 0;
        /* Items are read again each time: an item's Python code (to_json) could change the list. */
        for (Py_ssize_t i = start; i < start + per && i < PySequence_Fast_GET_SIZE(fast) && done == 0; i++)
            done = put_item(&b, PySequence_Fast_GET_ITEM(fast, i));
        if (done == 0 && b.size > 0)
            done = sink(&b, into);
    }
    PyMem_Free(b.data);
    Py_DECREF(fast);
    return done;
}

static int write_all(Buffer *b, void *into) {
    int fd = *(int *)into;
    size_t at = 0;
    int error = 0;
    Py_BEGIN_ALLOW_THREADS
    while (at < b->size) {
        ssize_t written = write(fd, b->data + at, b->size - at);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            error = errno;
            break;
        }
        at += (size_t)written; /* short only on a full disk or a signal: write the rest */
    }
    Py_END_ALLOW_THREADS
    if (error) {
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static int append(Buffer *b, void *into) {
    PyObject *bytes = (PyObject *)into;
    Py_ssize_t had = PyByteArray_GET_SIZE(bytes);
    if (PyByteArray_Resize(bytes, had + (Py_ssize_t)b->size) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(bytes) + had, b->data, b->size);
    return 0;
}

static PyObject *audit_write(PyObject *self, PyObject *args) {
    int fd;
    PyObject *items;
    Py_ssize_t per;
    if (!PyArg_ParseTuple(args, "iOn:write", &fd, &items, &per) || !configured())
        return NULL;
    if (per < 1) {
        PyErr_SetString(PyExc_ValueError, "per_write must be at least 1");
        return NULL;
    }
    if (each_batch(items, per, write_all, &fd) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *audit_lines(PyObject *self, PyObject *items) {
    if (!configured())
        return NULL;
    PyObject *into = PyByteArray_FromStringAndSize(NULL, 0);
    if (into == NULL)
        return NULL;
    if (each_batch(items, 64, append, into) < 0) {
        Py_DECREF(into);
        return NULL;
    }
    PyObject *bytes = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(into), PyByteArray_GET_SIZE(into));
    Py_DECREF(into);
    return bytes;
}

static PyObject *audit_configure(PyObject *self, PyObject *args) {
    PyObject *new_kind_of, *new_result_of, *new_fixed, *new_value_type, *new_errno_type = Py_None;
    if (!PyArg_ParseTuple(args, "OOO!O|O:configure", &new_kind_of, &new_result_of, &PyDict_Type, &new_fixed,
                          &new_value_type, &new_errno_type))
        return NULL;
    PyObject *new_kinds = PyDict_New(), *new_by_errno = PyDict_New();
    if (new_kinds == NULL || new_by_errno == NULL) {
        Py_XDECREF(new_kinds);
        Py_XDECREF(new_by_errno);
        return NULL;
    }
    Py_XSETREF(kinds, new_kinds);
    Py_XSETREF(by_errno, new_by_errno);
    Py_INCREF(new_errno_type);
    Py_XSETREF(errno_type, new_errno_type);
    Py_INCREF(new_kind_of);
    Py_XSETREF(kind_of, new_kind_of);
    Py_INCREF(new_result_of);
    Py_XSETREF(result_of, new_result_of);
    PyObject *copy = PyDict_Copy(new_fixed);
    if (copy == NULL)
        return NULL;
    Py_XSETREF(fixed, copy);
    Py_INCREF(new_value_type);
    Py_XSETREF(value_type, new_value_type);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", audit_configure, METH_VARARGS,
     "configure(kind_of, result_of, fixed, value_type, errno_type=None): how requests and responses read "
     "(hvfs.api.events; errno_type's result_of depends on its .errno alone)."},
    {"write", audit_write, METH_VARARGS,
     "write(fd, items, per_write): the lines of items (records, Events), per_write lines per write(2)."},
    {"lines", audit_lines, METH_O, "lines(items) -> bytes: what write() writes for items."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_audit",
    .m_doc = "The audit's lines in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__audit(void) {
    s_caller = PyUnicode_InternFromString("caller");
    s_pid = PyUnicode_InternFromString("pid");
    s_flags = PyUnicode_InternFromString("flags");
    s_value = PyUnicode_InternFromString("value");
    s_to_json = PyUnicode_InternFromString("to_json");
    s_errno = PyUnicode_InternFromString("errno");
    if (!s_caller || !s_pid || !s_flags || !s_value || !s_to_json || !s_errno)
        return NULL;
    return PyModule_Create(&module);
}
