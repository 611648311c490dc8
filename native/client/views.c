/* What this process sees at a host path, for the manager to compare with what it sees
 * (hvfs.hypervisor.views): the device and inode there, and, at a path the run binds with
 * the mounts below it, those mounts as hvfs._sys.mountinfo.mounts_below lists them. */
#define _GNU_SOURCE
#include "front.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ``path`` as /proc/self/mountinfo shows it (its four escapes), with a '/' at its end; -1
 * when it does not fit. */
static int escaped_prefix(const char *path, char *out, size_t size) {
    size_t n = 0;
    for (const char *p = path; *p; p++) {
        if (n + 5 >= size)
            return -1;
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\\')
            n += (size_t)snprintf(out + n, size - n, "\\%03o", (unsigned char)*p);
        else
            out[n++] = *p;
    }
    while (n > 0 && out[n - 1] == '/')
        n--;
    out[n++] = '/';
    out[n] = 0;
    return 0;
}

/* The whole of this process's mount table, NUL-terminated (free it), or NULL. Read in
 * large pieces: the kernel walks the table again for each read. */
static char *read_table(void) {
    int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t size = 65536, len = 0;
    char *text = malloc(size);
    for (ssize_t n = 1; text && n > 0;) {
        if (len + 1 >= size) {
            char *bigger = size < MAX_MESSAGE ? realloc(text, size *= 2) : NULL;
            if (!bigger) {
                free(text);
                text = NULL;
                break;
            }
            text = bigger;
        }
        n = read(fd, text + len, size - len - 1);
        if (n < 0) {
            free(text);
            text = NULL;
        } else
            len += (size_t)n;
    }
    close(fd);
    if (text)
        text[len] = 0;
    return text;
}

/* ", [ENTRY, …]": the mounts strictly below the directory ``path`` in this process's table,
 * each "POINT DEVICE ROOT OPTIONS" (POINT relative to ``path``), none below a file; nothing
 * when ``path`` cannot be opened or the table cannot be read (the manager then asks the
 * Python client). The path is resolved once, by the kernel: the O_PATH fd's own path is
 * looked for. */
static void add_below(struct buf *b, const char *path) {
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOTDIR)
        buf_raw(b, ", []"); /* a file: nothing can be mounted below it */
    if (fd < 0)
        return;
    char link[64], real[4096], prefix[4 * 4096 + 2];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, sizeof real - 1);
    close(fd);
    if (n <= 0 || (size_t)n >= sizeof real - 1 || escaped_prefix(real, prefix, sizeof prefix) < 0)
        return;
    char *table = read_table(), *entry = NULL;
    if (!table)
        return;
    size_t length = strlen(prefix);
    buf_raw(b, ", [");
    int first = 1;
    char *line_save = NULL;
    for (char *line = strtok_r(table, "\n", &line_save); line; line = strtok_r(NULL, "\n", &line_save)) {
        char *field[6], *save = NULL, *p = line;
        int i = 0;
        for (; i < 6 && (field[i] = strtok_r(p, " ", &save)); i++)
            p = NULL;
        if (i < 6 || strncmp(field[4], prefix, length) != 0 || field[4][length] == 0)
            continue;
        free(entry);
        if (asprintf(&entry, "%s %s %s %s", field[4] + length, field[2], field[3], field[5]) < 0) {
            entry = NULL;
            b->failed = 1;
            break;
        }
        buf_raw(b, first ? "" : ", ");
        first = 0;
        buf_str(b, entry);
    }
    free(entry);
    free(table);
    buf_raw(b, "]");
}

void add_view(struct buf *b, char *path, int *first, int below) {
    struct stat st;
    int whole = 1;
    while (stat(path, &st) < 0) {
        char *slash = strrchr(path, '/');
        if (!slash || (slash == path && path[1] == 0))
            break;
        slash == path ? (void)(path[1] = 0) : (void)(*slash = 0);
        whole = 0;
    }
    if (stat(path, &st) < 0)
        return;
    buf_raw(b, *first ? "[" : ", [");
    *first = 0;
    buf_str(b, path);
    buf_raw(b, ", ");
    buf_long(b, (long long)st.st_dev);
    buf_raw(b, ", ");
    buf_long(b, (long long)st.st_ino);
    if (below && whole)
        add_below(b, path);
    buf_raw(b, "]");
}
