/* A directory on a writable volume swapped with a symlink out of it, while every kind of
 * mutation goes through it; and a file swapped with a symlink as the last component.
 *
 * path_swap TRIES SECONDS VOLUME TARGET:SUBPATH [TARGET:SUBPATH...]
 *
 * For each TARGET (its share of the time): VOLUME/dK is a directory holding SUBPATH/ with
 * the files victim, over, gone and src; VOLUME/aK is a symlink to TARGET. A thread swaps
 * the two names (renameat2 RENAME_EXCHANGE, itself served by the manager) while the main
 * thread creates, write-opens with O_TRUNC, renames over, unlinks, chmods, chowns, utimes,
 * truncates, links, symlinks, mkdirs and sets an xattr through VOLUME/dK/SUBPATH/NAME.
 * The same thread swaps VOLUME/fK, a file, with VOLUME/lK, a symlink to TARGET/SUBPATH/
 * victim, while the main thread calls what follows a last symlink on VOLUME/fK: open
 * with O_TRUNC, chmod, chown, utimes, truncate, setxattr and link with AT_SYMLINK_FOLLOW.
 * Where TARGET/SUBPATH is a host directory (outside every mount, or a :ro one) the host
 * holds decoys with those names; resolved in the VM it is absent or read-only. Between
 * tries the swapper pauses and the volume's own files are put back through a directory fd.
 *
 * Counters: per call, "CALL_ok" and "CALL_refused" (last_CALL for the last component);
 * per target, "tK_tries", "tK_open_ok" (the write-open landed on the volume: the directory
 * was seen) and "tK_open_refused" (it did not: the symlink was seen), "tK_last_ok" and
 * "tK_last_refused" (the same for the last component); "elsewhere" (a write-open returned
 * a file off the volume), "swaps".
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#define TARGETS 8

enum { OPEN, CREATE, RENAME, UNLINK, CHMOD, CHOWN, UTIMES, TRUNCATE, LINK, SYMLINK, MKDIR, XATTR,
       LAST_OPEN, LAST_CHMOD, LAST_CHOWN, LAST_UTIMES, LAST_TRUNCATE, LAST_XATTR, LAST_LINK, CALLS };
static const char *names[CALLS] = {"open", "create", "rename", "unlink", "chmod", "chown", "utimes",
                                   "truncate", "link", "symlink", "mkdir", "xattr", "last_open", "last_chmod",
                                   "last_chown", "last_utimes", "last_truncate", "last_xattr", "last_link"};
static long ok[CALLS], refused[CALLS];
static long elsewhere, swaps, swap_errno;

static char d[512], a[512], f[512], l[512];
static atomic_int stop, hold, held;

static void *swapper(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        if (atomic_load(&hold)) {
            atomic_store(&held, 1);
            while (atomic_load(&hold) && !atomic_load(&stop)) sched_yield();
            atomic_store(&held, 0);
            continue;
        }
        if (syscall(SYS_renameat2, AT_FDCWD, d, AT_FDCWD, a, RENAME_EXCHANGE) == 0)
            swaps++;
        else
            swap_errno = errno;
        if (syscall(SYS_renameat2, AT_FDCWD, f, AT_FDCWD, l, RENAME_EXCHANGE) == 0)
            swaps++;
        else
            swap_errno = errno;
    }
    return NULL;
}

static void count(int call, long result) {
    if (result < 0)
        refused[call]++;
    else
        ok[call]++;
}

static int mkdir_p(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        int r = mkdir(path, 0755);
        *p = '/';
        if (r < 0 && errno != EEXIST) return -1;
    }
    return mkdir(path, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static void put(int dir, const char *name) {
    int fd = openat(dir, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, "volume\n", 7) < 0) perror("write");
        close(fd);
    }
}

/* A pause of 0 to 1 ms, different each time: after restore() the swapper and this thread
 * start together, and without it each try's open met the swap at the same point, so that
 * one target could see only the directory (or only the symlink) in a whole run. */
static void jitter(void) {
    static unsigned state = 2463534242u;
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    double until = attack_now() + (state & 1023) / 1e6;
    while (attack_now() < until) {
    }
}

/* The volume's own files as they were, through the directory's fd (the swapper holds still). */
static void restore(int dir, const char *hardlink) {
    atomic_store(&hold, 1);
    while (!atomic_load(&held)) sched_yield();
    unlink(hardlink);
    unlinkat(dir, "new", 0);
    unlinkat(dir, "hard", 0);
    unlinkat(dir, "sym", 0);
    unlinkat(dir, "made", AT_REMOVEDIR);
    struct stat st;
    if (fstatat(dir, "src", &st, AT_SYMLINK_NOFOLLOW) < 0) put(dir, "src");
    if (fstatat(dir, "gone", &st, AT_SYMLINK_NOFOLLOW) < 0) put(dir, "gone");
    atomic_store(&hold, 0);
}

static void race(int k, const char *target, const char *subpath, const char *volume, double until) {
    snprintf(d, sizeof d, "%s/d%d", volume, k);
    snprintf(a, sizeof a, "%s/a%d", volume, k);
    snprintf(f, sizeof f, "%s/f%d", volume, k);
    snprintf(l, sizeof l, "%s/l%d", volume, k);
    char base[1024], path[CALLS + 4][1100], last_target[1100], hardlink[600];
    snprintf(base, sizeof base, "%s%s%s", d, *subpath ? "/" : "", subpath);
    snprintf(last_target, sizeof last_target, "%s/%s%svictim", target, subpath, *subpath ? "/" : "");
    snprintf(hardlink, sizeof hardlink, "%s/h%d", volume, k);
    put(AT_FDCWD, f);
    if (mkdir_p(base) < 0 || symlink(target, a) < 0 || symlink(last_target, l) < 0) {
        perror(base);
        exit(3);
    }
    int dir = open(base, O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat volume_st;
    if (dir < 0 || stat(volume, &volume_st) < 0) exit(3);
    const char *files[] = {"victim", "over", "gone", "src", "new", "hard", "sym", "made"};
    for (int i = 0; i < 8; i++) snprintf(path[i], sizeof path[i], "%s/%s", base, files[i]);
    const char *victim = path[0], *over = path[1], *gone = path[2], *src = path[3], *new = path[4], *hard = path[5],
               *sym = path[6], *made = path[7];
    for (int i = 0; i < 4; i++) put(dir, files[i]);

    atomic_store(&stop, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, swapper, NULL);
    long i, open_ok = 0, open_refused = 0, last_ok = 0, last_refused = 0;
    struct timespec times[2] = {{1, 0}, {1, 0}};
    for (i = 0; attack_more(i) && attack_now() < until; i++) {
        jitter();
        int fd = open(victim, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            struct stat st;
            if (fstat(fd, &st) == 0 && st.st_dev != volume_st.st_dev) elsewhere++;
            if (write(fd, "attack\n", 7) < 0) perror("write");
            close(fd);
            open_ok++;
        } else {
            open_refused++;
        }
        count(OPEN, fd);
        fd = open(new, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        count(CREATE, fd);
        if (fd >= 0) close(fd);
        count(RENAME, rename(src, over));
        count(UNLINK, unlink(gone));
        count(CHMOD, chmod(victim, i & 1 ? 0600 : 0640));
        count(CHOWN, chown(victim, 4242, 4242));
        count(UTIMES, utimensat(AT_FDCWD, victim, times, 0));
        count(TRUNCATE, truncate(victim, 1));
        count(LINK, link(victim, hard));
        count(SYMLINK, symlink("/etc/passwd", sym));
        count(MKDIR, mkdir(made, 0755));
        count(XATTR, setxattr(victim, "user.hvfs", "attack", 6, 0));
        jitter();
        fd = open(f, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd >= 0) {
            struct stat st;
            if (fstat(fd, &st) == 0 && st.st_dev != volume_st.st_dev) elsewhere++;
            close(fd);
            last_ok++;
        } else {
            last_refused++;
        }
        count(LAST_OPEN, fd);
        count(LAST_CHMOD, chmod(f, i & 1 ? 0600 : 0640));
        count(LAST_CHOWN, chown(f, 4242, 4242));
        count(LAST_UTIMES, utimensat(AT_FDCWD, f, times, 0));
        count(LAST_TRUNCATE, truncate(f, 0));
        count(LAST_XATTR, setxattr(f, "user.hvfs", "attack", 6, 0));
        count(LAST_LINK, linkat(AT_FDCWD, f, AT_FDCWD, hardlink, AT_SYMLINK_FOLLOW));
        restore(dir, hardlink);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    close(dir);
    printf("\"t%d_tries\": %ld, \"t%d_open_ok\": %ld, \"t%d_open_refused\": %ld, \"t%d_last_ok\": %ld, "
           "\"t%d_last_refused\": %ld, ",
           k, i, k, open_ok, k, open_refused, k, last_ok, k, last_refused);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 5 || argc - 4 > TARGETS) {
        fprintf(stderr, "usage: %s TRIES SECONDS VOLUME TARGET:SUBPATH...\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOFBF, 1 << 16); /* one line at the end */
    const char *volume = argv[3];
    int targets = argc - 4;
    double start = attack_now(), share = (attack_deadline - start) / targets;
    printf("{");
    for (int k = 0; k < targets; k++) {
        char *target = argv[4 + k], *colon = strchr(target, ':');
        if (!colon) return 2;
        *colon = 0;
        race(k, target, colon + 1, volume, start + share * (k + 1));
    }
    long total = 0;
    for (int c = 0; c < CALLS; c++) {
        printf("\"%s_ok\": %ld, \"%s_refused\": %ld, ", names[c], ok[c], names[c], refused[c]);
        total += ok[c] + refused[c];
    }
    printf("\"calls\": %ld, \"elsewhere\": %ld, \"swaps\": %ld, \"swap_errno\": %ld, \"tries\": %ld}\n", total,
           elsewhere, swaps, swap_errno, total / CALLS);
    return 0;
}
