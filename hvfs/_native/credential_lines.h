/* credential_lines: a notifying thread's credential lines of /proc/TID/status, read and cut
 * in one call (hvfs/intercept/procfs.py). Included by hotpath.c, which it would push past
 * 500 lines. */
#ifndef HVFS_CREDENTIAL_LINES_H
#define HVFS_CREDENTIAL_LINES_H

/* The value of the line "\nKEY" of text, up to its newline; NULL if there is none. */
static const char *
status_line(const char *text, size_t size, const char *key, size_t *length)
{
    size_t key_size = strlen(key);
    const char *at = text, *end = text + size;
    if ((at = memmem(at, end - at, key, key_size)) == NULL)
        return NULL;
    const char *value = at + key_size;
    const char *newline = memchr(value, '\n', end - value);
    *length = (newline ? newline : end) - value;
    return value;
}

/* credential_lines(fd) -> (uid, gid, groups, umask, capeff): the raw values of those
 * lines of /proc/TID/status (fd, kept open by the worker), None for a missing line.
 * What hvfs/intercept/procfs.py parse_credentials takes, read and cut in one call: the
 * file is generated afresh by each read at offset 0, so credentials are as they are now.
 * OSError as pread fails (ESRCH: the thread is gone). Only the Name line holds text a
 * program chooses, and procfs escapes newlines in it, so "\nKey:" starts a real line. */
static PyObject *
hp_credential_lines(PyObject *self, PyObject *args)
{
    static const char *keys[] = {"\nUid:", "\nGid:", "\nGroups:", "\nUmask:", "\nCapEff:"};
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    char buffer[16384]; /* status is about 1.5 KiB; the Groups line of 65,536 groups is the exception */
    char *text = buffer;
    size_t capacity = sizeof buffer, size = 0;
    int failed = 0;
    for (;;) {
        ssize_t got;
        Py_BEGIN_ALLOW_THREADS
        got = pread(fd, text + size, capacity - size, size);
        Py_END_ALLOW_THREADS
        if (got < 0) {
            failed = errno;
            break;
        }
        size += (size_t)got;
        if (got == 0 || size < capacity)
            break;
        /* Reads after the first continue from the text procfs generated for it. */
        char *larger = PyMem_Malloc(capacity * 2);
        if (!larger) {
            failed = ENOMEM;
            break;
        }
        memcpy(larger, text, size);
        if (text != buffer)
            PyMem_Free(text);
        text = larger;
        capacity *= 2;
    }
    PyObject *result = NULL;
    if (failed)
        raise_errno(failed, "/proc/TID/status");
    else if ((result = PyTuple_New(5)) != NULL) {
        for (int i = 0; i < 5; i++) {
            size_t length = 0;
            const char *value = status_line(text, size, keys[i], &length);
            PyObject *item = value ? PyBytes_FromStringAndSize(value, (Py_ssize_t)length) : Py_NewRef(Py_None);
            if (!item) {
                Py_CLEAR(result);
                break;
            }
            PyTuple_SET_ITEM(result, i, item);
        }
    }
    if (text != buffer)
        PyMem_Free(text);
    return result;
}

#endif
