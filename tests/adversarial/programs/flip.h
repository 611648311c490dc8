/* What the *_flip programs share: a path in a buffer that a thread flips, while the main thread
 * makes its call on it, between an allowed name in the volume and a FORBIDDEN spelling of a
 * host file (or, for "swap:HOST", a thread of the program's own that swaps a name of the volume
 * for a symlink out of it), each FORBIDDEN for its share of the time and of the tries.
 *
 * A program includes this, calls flip_begin, flip_run and flip_report; it keeps its own call
 * and its own check of what the call reached (attempt), and what a target needs set up (aim).
 */
#ifndef FLIP_H
#define FLIP_H

#include "attack.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char buffer[4096], allowed[4096], forbidden[4096], host[4096];
static atomic_int stop;
static long inside, refused, escapes;
/* A "swap:" target's directory of the volume, held open (flip_aim_swapdir); flip_run closes it. */
static int flip_home = AT_FDCWD;

/* The thread that races a try: flip, or a program's own. */
typedef void *(*flip_racer)(void *);

/* A pause between flips: long enough that the manager's read of the path can land in either. */
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

/* The buffers for a plain FORBIDDEN target: the allowed NAME spelt absolute or relative as it is. */
static inline void flip_aim(const char *volume, const char *target, const char *name) {
    snprintf(forbidden, sizeof forbidden, "%s", target);
    if (target[0] == '/')
        snprintf(allowed, sizeof allowed, "%s/%s", volume, name);
    else
        snprintf(allowed, sizeof allowed, "%s", name);
    memcpy(buffer, allowed, strlen(allowed) + 1);
}

/* The volume's "swapdir" is its directory, then a symlink to the host directory, in turn (inline:
 * not every program swaps). */
static inline void *flip_swapdir(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        syscall(SYS_renameat2, AT_FDCWD, "swapdir", AT_FDCWD, "swap.link", RENAME_EXCHANGE);
        dwell();
    }
    return NULL;
}

/* The buffers for a "swap:HOSTDIR" target of flip_swapdir, the path VOLUME/swapdir/NAME, and
 * flip_home an O_PATH fd of swapdir (the volume's directory, whatever the thread does later):
 * flip_swapdir, or NULL if not. */
static inline flip_racer flip_aim_swapdir(const char *volume, const char *target, const char *name) {
    snprintf(host, sizeof host, "%s", target + 5);
    snprintf(buffer, sizeof buffer, "%s/swapdir/%s", volume, name);
    mkdir("swapdir", 0755);
    if (symlink(host, "swap.link") < 0 || (flip_home = open("swapdir", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return NULL;
    return flip_swapdir;
}

/* The VOLUME argument, now the cwd; exits 2 with USAGE when fewer than NEEDED arguments. */
static const char *flip_begin(int argc, char **argv, int needed, const char *usage) {
    attack_begin(argc, argv);
    if (argc < needed) {
        fprintf(stderr, "usage: %s\n", usage);
        exit(2);
    }
    if (chdir(argv[3]) < 0)
        exit(3);
    return argv[3];
}

/* For each target argv[first..argc): aim readies it and names the racing thread (NULL: exit 5),
 * attempt(i) is one try. The number of tries made. */
static long flip_run(int argc, char **argv, int first, flip_racer (*aim)(const char *target),
                     void (*attempt)(long i)) {
    int targets = argc - first;
    double start = attack_now(), share = (attack_deadline - start) / targets;
    long i = 0;
    for (int k = 0; k < targets; k++) {
        flip_racer racer = aim(argv[first + k]);
        if (racer == NULL)
            exit(5);
        atomic_store(&stop, 0);
        pthread_t flipper;
        pthread_create(&flipper, NULL, racer, NULL);
        double until = start + share * (k + 1);
        long last = attack_tries / targets * (k + 1); /* each target its share of the tries too */
        for (; attack_more(i) && i < last && attack_now() < until; i++)
            attempt(i);
        atomic_store(&stop, 1);
        pthread_join(flipper, NULL);
        if (flip_home != AT_FDCWD)
            close(flip_home);
        flip_home = AT_FDCWD;
    }
    return i;
}

/* The JSON report: the shared counters, then the program's own (MORE, a format of ", "-led fields). */
static void flip_report(long tries, const char *more, ...) {
    printf("{\"tries\": %ld, \"inside\": %ld, \"refused\": %ld, \"escapes\": %ld", tries, inside, refused, escapes);
    va_list fields;
    va_start(fields, more);
    vprintf(more, fields);
    va_end(fields);
    printf("}\n");
}

#endif
