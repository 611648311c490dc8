/* open_stat: a served write-open's kernel calls in one C call (hvfs._sys.files.open_stat).
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

#define SCOPED_RETRIES 16 /* hvfs/_sys/files.py: EAGAIN from a scoped lookup a rename raced */

/* openat2 (O_CLOEXEC added), fstat, then F_SETFL status (where status >= 0 and the file is
 * a regular file or a FIFO, the kinds a served write-open hands out); 0, or the errno of
 * the failed step, with the fd closed when a step after the open failed. Without the GIL. */
static int
open_stat_calls(int dirfd, const char *path, struct open_how *how, int status, int *fd, unsigned int *mode)
{
    int tries = how->resolve & (RESOLVE_IN_ROOT | RESOLVE_BENEATH) ? SCOPED_RETRIES : 0;
    long opened;
    for (;;) {
        opened = syscall(SYS_openat2, dirfd, path, how, sizeof(*how));
        if (opened >= 0 || errno != EAGAIN || tries-- <= 0)
            break;
    }
    if (opened < 0)
        return errno;
    struct stat st;
    if (fstat((int)opened, &st) < 0 ||
        (status >= 0 && (S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode)) && fcntl((int)opened, F_SETFL, status) < 0)) {
        int failed = errno;
        close((int)opened);
        return failed;
    }
    *fd = (int)opened;
    *mode = st.st_mode;
    return 0;
}

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

#endif
