/* What decides that a write-open of a character device under /dev is continued, in either C
 * loop (served_dev.h for the seccomp receive loop, tracer_write.h for the ptrace driver's):
 * the path's text, then opening.py _open_writable's own probe. served_dev.h's header says
 * what each step is for and why a continue is safe whatever the kernel reads then. */
#ifndef HVFS_DEV_PROBE_H
#define HVFS_DEV_PROBE_H

#include "served_names.h" /* has_component */
#include "write_open.h"   /* ends_with, scoped_openat2 */

/* Whether path (NUL-terminated) is a plain absolute path under /dev/ that names none of the
 * caller's own files nor a kernel mount by its text (served_dev.h's list). */
static int
dev_path(const char *path)
{
    size_t length = strlen(path);
    if (length <= 5 || memcmp(path, "/dev/", 5) != 0 || path[length - 1] == '/' || strstr(path, "//") ||
        strstr(path, "/./") || strstr(path, "/../") || ends_with(path, length, "/.") || ends_with(path, length, "/.."))
        return 0;
    if (has_component(path, "fd") || has_component(path, "pts") || has_component(path, "proc"))
        return 0;
    return strcmp(path, "/dev/stdin") != 0 && strcmp(path, "/dev/stdout") != 0 && strcmp(path, "/dev/stderr") != 0;
}

/* Whether path names a character device in the writable view (rw_root), probed as
 * opening.py _open_writable probes it (acting as the caller, already switched). */
static int
char_device_in(int rw_root, const char *path, uint64_t nofollow)
{
    long fd = scoped_openat2(rw_root, path, O_PATH | nofollow, RESOLVE_IN_ROOT);
    if (fd < 0)
        return 0;
    struct stat st;
    int found = fstat((int)fd, &st) == 0 && S_ISCHR(st.st_mode);
    close((int)fd);
    return found;
}

#endif
