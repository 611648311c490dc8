/* open_stat: a served write-open's kernel calls in one C call (hvfs._sys.files.open_stat),
 * and openat2 alone (hvfs._sys.files.openat2: every other lookup of the manager's).
 *
 * The manager's one-call write-open (hvfs/manager/handlers/direct.py) makes an openat2 in
 * the VM's writable view, an fstat of what it opened, and, for a regular file or a FIFO,
 * an F_SETFL that gives the file the caller's status flags back (O_NONBLOCK off). Through
 * ctypes and os each is a Python call with its own argument conversion; here they are one,
 * with the GIL released once (a lookup on a network file system may block). Included by
 * hotpath.c, which it would push past 500 lines.
 */
#ifndef HVFS_OPEN_STAT_H
#define HVFS_OPEN_STAT_H

#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "write_open.h" /* openat2_retried, open_stat_calls */

/* open_stat(dirfd, path, flags, mode, resolve, status) -> (fd, st_mode); OSError with the
 * errno of the step that failed (hvfs/_sys/files.py's contract). */
static PyObject *
hp_open_stat(PyObject *self, PyObject *args)
{
    int dirfd, status;
    const char *path; /* "y": a bytes object without a NUL inside (ValueError otherwise) */
    unsigned long long flags, mode, resolve;
    if (!PyArg_ParseTuple(args, "iyKKKi", &dirfd, &path, &flags, &mode, &resolve, &status))
        return NULL;
    struct open_how how = {.flags = flags | O_CLOEXEC, .mode = mode, .resolve = resolve};
    int fd = -1, failed;
    unsigned int st_mode = 0;
    Py_BEGIN_ALLOW_THREADS
    failed = open_stat_calls(dirfd, path, &how, status, &fd, &st_mode);
    Py_END_ALLOW_THREADS
    if (failed)
        return raise_errno(failed, path);
    return Py_BuildValue("iI", fd, st_mode);
}

/* openat2(dirfd, path, flags, mode, resolve) -> fd: O_CLOEXEC added, EAGAIN retried as
 * open_stat; OSError with the errno. One C call where ctypes took four conversions and a
 * Python wrapper (5.6 µs with its close, against 3.1 for os.open). */
static PyObject *
hp_openat2(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int)");
        return NULL;
    }
    long dirfd = PyLong_AsLong(args[0]);
    unsigned long long flags = PyLong_AsUnsignedLongLongMask(args[2]);
    unsigned long long mode = PyLong_AsUnsignedLongLongMask(args[3]);
    unsigned long long resolve = PyLong_AsUnsignedLongLongMask(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (dirfd < INT_MIN || dirfd > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "openat2: dirfd out of range");
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(args[1]);
    if (strlen(path) != (size_t)PyBytes_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_ValueError, "openat2: embedded null byte");
        return NULL;
    }
    struct open_how how = {.flags = flags | O_CLOEXEC, .mode = mode, .resolve = resolve};
    long fd;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    fd = openat2_retried((int)dirfd, path, &how);
    if (fd < 0)
        failed = errno;
    Py_END_ALLOW_THREADS
    if (fd < 0)
        return raise_errno(failed, path);
    return PyLong_FromLong(fd);
}

#endif
