/* A stat's (or a read-only open's) path flipped, while the manager serves it, between a
 * file in the VM and a host file outside the VM's view (strict: every stat and open is
 * served; the C loop serves these).
 *
 * stat_flip TRIES SECONDS VOLUME INODE SIZE FORBIDDEN [FORBIDDEN...]
 *
 * The program works in VOLUME (its cwd), which holds "inside". INODE and SIZE are the host
 * secret's: a stat that returns them reached it, an escape. Each FORBIDDEN spells a path to
 * the secret (its host path, "../" ones up and out of the volume, a symlink on the volume
 * to it); for its share of the time, a thread flips a buffer between the allowed name
 * ("inside", spelt absolute or relative as FORBIDDEN is) and FORBIDDEN, while the main
 * thread calls stat, lstat and statx on it, and opens it O_RDONLY (then fstat of the fd it
 * got). The manager reads the path once, resolves the bytes it read in the VM's root, and
 * writes back what it found there, or installs what it opened there.
 *
 * Counters: "inside" (the stat of inside), "refused" (an error: no such file in the VM),
 * "escapes" (the secret's identity), "odd" (anything else), per call "CALL_tries".
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

#ifndef STATX_BASIC_STATS
#define STATX_BASIC_STATS 0x7ff
#endif

static char buffer[4096], allowed[4096], forbidden[4096];
static atomic_int stop;
static long inside, refused, escapes, odd, tries[4];

static void dwell(void) {
    for (volatile int i = 0; i < 64; i++) {
    }
}

static void *flip(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        memcpy(buffer, allowed, strlen(allowed) + 1);
        dwell();
        memcpy(buffer, forbidden, strlen(forbidden) + 1);
        dwell();
    }
    return NULL;
}

/* The inode and size of the path as call (0 stat, 1 lstat, 2 statx, 3 open) found it; -errno. */
static int look(int call, unsigned long long *inode, long long *size) {
    if (call == 3) {
        struct stat st;
        int fd = open(buffer, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return -errno;
        int got = fstat(fd, &st);
        close(fd);
        if (got < 0) return -EIO;
        *inode = st.st_ino;
        *size = st.st_size;
        return 0;
    }
    if (call == 2) {
        char raw[256];
        if (syscall(SYS_statx, AT_FDCWD, buffer, 0, STATX_BASIC_STATS, raw) < 0) return -errno;
        memcpy(inode, raw + 32, 8);
        memcpy(size, raw + 40, 8);
        return 0;
    }
    struct stat st;
    if ((call ? lstat(buffer, &st) : stat(buffer, &st)) < 0) return -errno;
    *inode = st.st_ino;
    *size = st.st_size;
    return 0;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 7) {
        fprintf(stderr, "usage: stat_flip TRIES SECONDS VOLUME INODE SIZE FORBIDDEN...\n");
        return 2;
    }
    const char *volume = argv[3];
    unsigned long long secret = strtoull(argv[4], NULL, 10);
    long long secret_size = atoll(argv[5]);
    if (chdir(volume) < 0) return 3;
    struct stat mine;
    if (stat("inside", &mine) < 0) return 4;
    int targets = argc - 6;
    double start = attack_now(), share = (attack_deadline - start) / targets;
    long i = 0;
    for (int k = 0; k < targets; k++) {
        const char *target = argv[6 + k];
        snprintf(forbidden, sizeof forbidden, "%s", target);
        if (target[0] == '/')
            snprintf(allowed, sizeof allowed, "%s/inside", volume);
        else
            snprintf(allowed, sizeof allowed, "inside");
        memcpy(buffer, allowed, strlen(allowed) + 1);
        atomic_store(&stop, 0);
        pthread_t flipper;
        pthread_create(&flipper, NULL, flip, NULL);
        double until = start + share * (k + 1);
        long last = attack_tries / targets * (k + 1); /* each target its share of the tries too */
        for (; attack_more(i) && i < last && attack_now() < until; i++) {
            int call = (int)(i % 4);
            unsigned long long inode = 0;
            long long size = -1;
            int got = look(call, &inode, &size);
            tries[call]++;
            if (got < 0)
                refused++;
            else if (inode == secret || size == secret_size)
                escapes++;
            else if (inode == mine.st_ino)
                inside++;
            else
                odd++;
        }
        atomic_store(&stop, 1);
        pthread_join(flipper, NULL);
    }
    printf("{\"tries\": %ld, \"inside\": %ld, \"refused\": %ld, \"escapes\": %ld, \"odd\": %ld, \"stat_tries\": %ld,"
           " \"lstat_tries\": %ld, \"statx_tries\": %ld, \"open_tries\": %ld}\n",
           i, inside, refused, escapes, odd, tries[0], tries[1], tries[2], tries[3]);
    return 0;
}
