/* The name an audited VM's event gives a request the Python path does not name by its text:
 * a stat, open, readlink or access whose lookup failed (continued in the VM or answered its
 * errno). The dispatch names it after the handler (hvfs/manager/served.py served_paths,
 * _resolved, with nothing noted): the path's parent directory opened again in the writable view as the manager
 * (resolve.parent: the head followed as the kernel follows it, a relative path's from its
 * base, checked to be the caller's very directory), the kernel's name of that directory
 * (its magic link) and the path's last component; where that fails or the last component
 * is none (".", ".."), the path's text, tidied (served.py tidy of VmPath.__str__).
 *
 * The same here, in the same order, from the path and base text read once from the caller
 * (never its memory again) and the base's identity read with them. The one case C does not
 * name, a VM whose roots do not read as "/" (served.py then checks each name again in the
 * view), declines: Python serves and names the request. The parent is opened O_PATH, as
 * the manager, in the writable view: nothing of the caller's is acted on; a VM that swaps
 * its directories meanwhile gets a name its parent had at some moment, as from Python
 * (tests/adversarial/test_audited_link_names.py).
 */
#ifndef HVFS_SERVED_RESOLVED_H
#define HVFS_SERVED_RESOLVED_H

#include "fd_change.h" /* fd_vm_path_in: a directory's VM path, as served.py _vm_name reads it */

/* served.py tidy(str(VmPath(base, path))) into n->name: 0, or -1 where it does not fit. */
static int
tidy_text(struct served_note *n, const char *base, const char *path)
{
    char whole[2 * PATH_MAX_BYTES + 2];
    int made;
    if (path[0] == '/')
        made = snprintf(whole, sizeof whole, "%s", path);
    else {
        size_t length = strlen(base);
        while (length > 0 && base[length - 1] == '/')
            length--;
        made = snprintf(whole, sizeof whole, "%.*s/%s", (int)length, base, path);
    }
    if (made < 0 || (size_t)made >= sizeof whole)
        return -1;
    if (whole[0] != '/') { /* not a VM path: as it is (never so: a base is absolute) */
        memcpy(n->name, whole, (size_t)made + 1);
        n->length = (size_t)made;
        return 0;
    }
    size_t out = 0;
    for (const char *at = whole; *at;) {
        while (*at == '/')
            at++;
        const char *end = strchrnul(at, '/');
        size_t part = (size_t)(end - at);
        if (part && !(part == 1 && at[0] == '.')) {
            n->name[out++] = '/';
            memcpy(n->name + out, at, part);
            out += part;
        }
        at = end;
    }
    if (out == 0)
        n->name[out++] = '/';
    n->name[out] = 0;
    n->length = out;
    return 0;
}

/* served.py _roots_named_from_themselves: both roots read as "/" (asked once per serve call). */
static int
roots_named(const struct stat_context *c)
{
    if (c->note->roots_named < 0) {
        int roots[2] = {c->rw_root, c->vm_root}, named = c->rw_root >= 0 && c->vm_root >= 0;
        for (int i = 0; i < 2 && named; i++) {
            char link[32], text[4];
            snprintf(link, sizeof link, c->self_fds >= 0 ? "%d" : "/proc/self/fd/%d", roots[i]);
            ssize_t got = readlinkat(c->self_fds >= 0 ? c->self_fds : AT_FDCWD, link, text, sizeof text);
            named = got == 1 && text[0] == '/';
        }
        c->note->roots_named = named;
    }
    return c->note->roots_named;
}

/* resolve.base_directory in the writable view, with the manager's rights: an fd, or -1. */
static long
view_base(int rw_root, const char *base, const struct stat *identity)
{
    long fd = scoped_openat2(rw_root, base, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT);
    struct stat st;
    if (fd >= 0 && (fstat((int)fd, &st) < 0 || st.st_dev != identity->st_dev || st.st_ino != identity->st_ino)) {
        close((int)fd); /* ForeignBase: an OSError there, so no head */
        return -1;
    }
    return fd;
}

/* resolve.parent's directory of path (its head: the text before the last component, or the
 * base itself), opened in the writable view as resolve.open_at opens it: an fd, or -1. */
static long
view_parent(int rw_root, const char *base, const struct stat *identity, const char *path)
{
    size_t stripped = strlen(path);
    while (stripped > 0 && path[stripped - 1] == '/')
        stripped--;
    size_t slash = stripped;
    while (slash > 0 && path[slash - 1] != '/')
        slash--;
    char head[PATH_MAX_BYTES + 1];
    if (slash == 0) /* a relative name of one component: the base holds it */
        return view_base(rw_root, base, identity);
    size_t length = slash > 1 ? slash - 1 : 1; /* "/a" -> "/"; "a/b" -> "a"; "a//b" -> "a/" */
    memcpy(head, path, length);
    head[length] = 0;
    if (head[0] == '/')
        return scoped_openat2(rw_root, head, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT);
    long dir = view_base(rw_root, base, identity);
    if (dir < 0)
        return -1;
    long fd = scoped_openat2((int)dir, head, O_PATH | O_DIRECTORY, RESOLVE_BENEATH);
    int failed = fd < 0 ? errno : 0;
    close((int)dir);
    if (failed != EXDEV)
        return fd;
    char whole[2 * PATH_MAX_BYTES + 2]; /* VmPath.__str__ of (base, head) */
    size_t base_length = strlen(base);
    while (base_length > 0 && base[base_length - 1] == '/')
        base_length--;
    snprintf(whole, sizeof whole, "%.*s/%s", (int)base_length, base, head);
    return scoped_openat2(rw_root, whole, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT);
}

/* served.py _resolved(vm, VmPath(base, path)) into c->note->name, as the manager (call it
 * acting as nobody else): 0, or -1 where Python must name it (declined). */
static int
resolved_name(const struct stat_context *c, const char *base, const struct stat *identity, const char *path)
{
    struct served_note *n = c->note;
    size_t stripped = strlen(path);
    while (stripped > 0 && path[stripped - 1] == '/')
        stripped--;
    size_t start = stripped;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t last = stripped - start;
    if (last == 0 || (last == 1 && path[start] == '.') || (last == 2 && path[start] == '.' && path[start + 1] == '.'))
        return tidy_text(n, base, path);
    if (c->rw_root < 0 || !roots_named(c))
        return -1; /* no view here, or names checked again in it: Python's */
    long dir = view_parent(c->rw_root, base, identity, path);
    char head[PATH_MAX_BYTES + 1];
    size_t head_length = dir >= 0 ? fd_vm_path_in(c->self_fds, (int)dir, head, sizeof head) : 0;
    if (dir >= 0)
        close((int)dir);
    if (head_length == 0) /* an OSError, or no VM path: the text */
        return tidy_text(n, base, path);
    while (head_length > 0 && head[head_length - 1] == '/')
        head_length--;
    if (head_length + 1 + last >= sizeof n->name)
        return -1;
    memcpy(n->name, head, head_length);
    n->name[head_length] = '/';
    memcpy(n->name + head_length + 1, path + start, last);
    n->length = head_length + 1 + last;
    n->name[n->length] = 0;
    return 0;
}

/* An audited request answered here as the dispatch answers it (resp: continued, or an errno)
 * made recordable under the name resolved_name put in the note: its kind and flags. */
static void
note_answered(const struct stat_context *c, int kind, uint64_t flags, const struct seccomp_notif_resp *resp)
{
    struct served_note *n = c->note;
    if (n == NULL || !n->audited)
        return;
    n->recordable = 1, n->kind = kind, n->flags = flags;
    n->continued = resp->flags != 0;
    n->error = -resp->error;
}

#endif
