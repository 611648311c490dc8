/* Two directories of the volume swapped (renameat2 RENAME_EXCHANGE, served by the manager on
 * another worker) while the main thread stats and opens a name relative to each directory's
 * own fd (the C loop serves those, keeping the base directory it found: served_base.h).
 *
 * base_swap TRIES SECONDS VOLUME [host]
 *
 * With "host", the program swaps nothing itself: the host does, outside every request of the
 * VM (a host process, another VM sharing the volume), so that no request the manager answers
 * in between marks the change, once the program made VOLUME/ready.
 * VOLUME/d1/f and VOLUME/d2/f are two files; fds of d1 and d2 are held. Natively a name
 * relative to an fd names a file in that very directory, wherever its name went: fstatat and
 * openat of "f" from d1's fd always find d1's f, and from d2's fd d2's f. A base found (or
 * kept) by a text that now names the other directory would answer the other's f.
 *
 * Counters: "inside" (the right f), "escapes" (the other directory's f), "refused" (an
 * error), "swaps" (exchanges done), "stat_tries", "open_tries".
 */
#include "attack.h"

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

static void *swap(void *unused) {
    (void)unused;
    while (!atomic_load(&stop))
        if (syscall(SYS_renameat2, AT_FDCWD, "d1", AT_FDCWD, "d2", 2 /* RENAME_EXCHANGE */) == 0)
            atomic_fetch_add(&swaps, 1);
    return NULL;
}

static int made(const char *dir, const char *body, int *fd, ino_t *inode) {
    char name[64];
    snprintf(name, sizeof name, "%s/f", dir);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -1;
    int file = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    struct stat st;
    if (file < 0 || write(file, body, strlen(body)) < 0 || fstat(file, &st) < 0)
        return -1;
    close(file);
    *inode = st.st_ino;
    *fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return *fd < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: base_swap TRIES SECONDS VOLUME\n");
        return 2;
    }
    if (chdir(argv[3]) < 0)
        return 3;
    int fds[2];
    ino_t inodes[2];
    if (made("d1", "one\n", &fds[0], &inodes[0]) < 0 || made("d2", "two\n", &fds[1], &inodes[1]) < 0)
        return 4;
    int by_host = argc > 4 && strcmp(argv[4], "host") == 0;
    int ready = open("ready", O_WRONLY | O_CREAT | O_CLOEXEC, 0644); /* the host swaps from now on */
    if (ready < 0)
        return 4;
    close(ready);
    pthread_t swapper;
    if (!by_host)
        pthread_create(&swapper, NULL, swap, NULL);
    long i = 0, inside = 0, escapes = 0, refused = 0, tries[2] = {0, 0};
    for (; attack_more(i); i++) {
        int which = (int)(i % 2), call = (int)(i / 2 % 2);
        struct stat st;
        int got;
        if (call == 0) {
            got = fstatat(fds[which], "f", &st, AT_SYMLINK_NOFOLLOW);
        } else {
            int fd = openat(fds[which], "f", O_RDONLY | O_CLOEXEC);
            got = fd < 0 ? -1 : fstat(fd, &st);
            if (fd >= 0)
                close(fd);
        }
        tries[call]++;
        if (got < 0)
            refused++;
        else if (st.st_ino == inodes[which])
            inside++;
        else
            escapes++;
    }
    atomic_store(&stop, 1);
    if (!by_host)
        pthread_join(swapper, NULL);
    printf("{\"tries\": %ld, \"inside\": %ld, \"escapes\": %ld, \"refused\": %ld, \"swaps\": %ld, "
           "\"stat_tries\": %ld, \"open_tries\": %ld}\n",
           i, inside, escapes, refused, atomic_load(&swaps), tries[0], tries[1]);
    return 0;
}
