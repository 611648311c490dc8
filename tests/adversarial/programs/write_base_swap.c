/* Two directories of the volume swapped (renameat2 RENAME_EXCHANGE, by a thread of the VM or
 * by the host) while the main thread creates a file, then unlinks it, by a name relative to
 * one directory: from its fd, or from the cwd after fchdir to it. The C loop serves those,
 * keeping the base directory it found in the writable view (write_open.h write_base).
 *
 * write_base_swap TRIES SECONDS VOLUME [host]
 *
 * Natively a name relative to a directory's fd (or to the cwd) is in that very directory,
 * wherever its name went. Where the file landed and whether the unlink removed it is read
 * by getdents64 of that directory's fd, which the VM makes itself (never trapped): a base
 * found (or kept) by a text that now names the other directory would create or unlink the
 * name in the other one.
 *
 * Counters: "inside" (the create and the unlink in the right directory), "escapes" (either
 * in the other one), "refused" (an error), "swaps" (exchanges done), "cwd_tries",
 * "dirfd_tries".
 */
#include "attack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_int stop;
static atomic_long swaps;
static int volume; /* the volume's fd: the main thread's fchdir moves this thread's cwd too */

static void *swap(void *unused) {
    (void)unused;
    while (!atomic_load(&stop))
        if (syscall(SYS_renameat2, volume, "d1", volume, "d2", 2 /* RENAME_EXCHANGE */) == 0)
            atomic_fetch_add(&swaps, 1);
    return NULL;
}

/* Whether the directory open as dir holds name: 1, 0, or -1 (read natively, getdents64). */
static int holds(int dir, const char *name) {
    char buffer[4096];
    if (lseek(dir, 0, SEEK_SET) < 0)
        return -1;
    for (;;) {
        long got = syscall(SYS_getdents64, dir, buffer, sizeof buffer);
        if (got <= 0)
            return got < 0 ? -1 : 0;
        for (long at = 0; at < got;) {
            struct dirent64 *entry = (struct dirent64 *)(buffer + at);
            if (strcmp(entry->d_name, name) == 0)
                return 1;
            at += entry->d_reclen;
        }
    }
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: write_base_swap TRIES SECONDS VOLUME [host]\n");
        return 2;
    }
    if (chdir(argv[3]) < 0 || (mkdir("d1", 0755) < 0 && errno != EEXIST) || (mkdir("d2", 0755) < 0 && errno != EEXIST))
        return 3;
    volume = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fds[2] = {open("d1", O_RDONLY | O_DIRECTORY | O_CLOEXEC), open("d2", O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    int ready = open("ready", O_WRONLY | O_CREAT | O_CLOEXEC, 0644); /* the host swaps from now on */
    if (volume < 0 || fds[0] < 0 || fds[1] < 0 || ready < 0)
        return 4;
    close(ready);
    int by_host = argc > 4 && strcmp(argv[4], "host") == 0;
    pthread_t swapper;
    if (!by_host)
        pthread_create(&swapper, NULL, swap, NULL);
    long i = 0, inside = 0, escapes = 0, refused = 0, tries[2] = {0, 0};
    for (; attack_more(i); i++) {
        int which = (int)(i % 2), from_cwd = (int)(i / 2 % 2);
        char name[32];
        snprintf(name, sizeof name, "f%ld", i);
        int base = fds[which];
        if (from_cwd) {
            if (fchdir(fds[which]) < 0) {
                refused++;
                continue;
            }
            base = AT_FDCWD;
        }
        tries[from_cwd]++;
        int fd = openat(base, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            refused++;
            continue;
        }
        close(fd);
        int created = holds(fds[which], name);
        int unlinked = unlinkat(base, name, 0);
        int left = holds(fds[which], name), elsewhere = holds(fds[1 - which], name);
        if (created < 0 || left < 0 || elsewhere < 0)
            refused++;
        else if (created == 1 && unlinked == 0 && left == 0 && elsewhere == 0)
            inside++;
        else if (created == 0 || (unlinked == 0 && left == 1) || elsewhere == 1)
            escapes++;
        else
            refused++;
        if (left == 1) /* whatever is left is removed by its directory's fd, for the next try */
            unlinkat(fds[which], name, 0);
        if (elsewhere == 1)
            unlinkat(fds[1 - which], name, 0);
    }
    atomic_store(&stop, 1);
    if (!by_host)
        pthread_join(swapper, NULL);
    printf("{\"tries\": %ld, \"inside\": %ld, \"escapes\": %ld, \"refused\": %ld, \"swaps\": %ld, "
           "\"dirfd_tries\": %ld, \"cwd_tries\": %ld}\n",
           i, inside, escapes, refused, atomic_load(&swaps), tries[0], tries[1]);
    return 0;
}
