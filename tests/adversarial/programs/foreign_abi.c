/* Path syscalls through another ABI than the one the filter decodes, and syscall numbers
 * the filter's table does not know.
 *
 * foreign_abi TRIES SECONDS RO_FILE VOLUME_FILE HOST_FILE [above=NR ...]
 *   x86_64 only: i386 `int $0x80` open/creat/unlink/chmod/chown32/rename/mkdir/truncate/
 *   link/symlink/utime/setxattr of the three files (the i386 getpid too), and the same
 *   as x32 calls (nr | 0x40000000); the native `syscall` with bits above 31 set in rax
 *   (the kernel and the filter both take the low 32 bits: a served open).
 *   Every arch: each NR of `above` with arguments that would set an xattr on RO_FILE (as
 *   setxattrat does), and fchmodat2 (452, newer than libseccomp's table on some systems,
 *   known to hvfs's), which must be served: EROFS on RO_FILE, done on VOLUME_FILE.
 * foreign_abi native DIRECTORY (on the host) creates DIRECTORY/int80 with an i386 creat
 *   and DIRECTORY/x32 with an x32 one, and prints the results: the calls work natively.
 *
 * Two threads run every call in a loop for a quarter of the budget (a decision of the BPF
 * alone needs no long race). Report: "calls" (tally.h: "int80:CALL:TARGET",
 * "x32:CALL:TARGET", "high_bits:...", "above:NR", "fchmodat2:..."), "x86_64" (whether the
 * foreign ABIs were tried).
 */
#include "tally.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 2
#define X32 0x40000000L
#define NR_fchmodat2 452

/* Static, so that the strings sit below 4 GiB where the 32-bit ABI can point at them
 * (the binary is static and not position independent). */
static char targets[3][512], others[3][512], value[] = "attack";
static const char *target_names[3] = {"ro", "volume", "host"};

#if defined(__x86_64__)
static long int80(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

static long syscall64(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

/* i386 and x32 numbers of the calls, and their arguments as (path, other path or value). */
static const struct {
    const char *name;
    long i386, x32;
    int shape; /* 0: (path, flags, mode)  1: (path, mode)  2: (path)  3: (path, other)  4: (path, uid, gid) */
    long flags, mode;
} calls[] = {
    {"open", 5, 2, 0, O_WRONLY | O_CREAT | O_TRUNC, 0644},
    {"creat", 8, 85, 1, 0, 0644},
    {"unlink", 10, 87, 2, 0, 0},
    {"chmod", 15, 90, 1, 0, 0777},
    {"chown", 212, 92, 4, 0, 4242},
    {"rename", 38, 82, 3, 0, 0},
    {"mkdir", 39, 83, 1, 0, 0755},
    {"truncate", 92, 76, 1, 0, 0},
    {"link", 9, 86, 3, 0, 0},
    {"symlink", 83, 88, 3, 0, 0},
    {"utime", 30, 132, 2, 0, 0},
    {"getpid", 20, 39, 2, 0, 0},
};
#define CALLS (sizeof calls / sizeof calls[0])

static int foreign_index[2][CALLS][3], high_index[2];

static long foreign(int x32, int c, int t) {
    long nr = x32 ? calls[c].x32 | X32 : calls[c].i386;
    long path = (long)(uintptr_t)targets[t], other = (long)(uintptr_t)others[t];
    long a = path, b = 0, d = 0;
    switch (calls[c].shape) {
    case 0: b = calls[c].flags, d = calls[c].mode; break;
    case 1: b = calls[c].mode; break;
    case 3: b = other; break;
    case 4: b = calls[c].mode, d = calls[c].mode; break;
    }
    if (strcmp(calls[c].name, "symlink") == 0) a = (long)(uintptr_t) "/etc/passwd", b = path;
    return x32 ? syscall64(nr, a, b, d) : int80(nr, a, b, d);
}
#endif

static long above[64];
static int above_count, above_index[64], chmod2_index[2][2];
static atomic_int stop;

static void *worker(void *unused) {
    (void)unused;
    for (long round = 0; attack_more(round) && !atomic_load(&stop); round++) {
#if defined(__x86_64__)
        for (int x32 = 0; x32 < 2; x32++)
            for (unsigned c = 0; c < CALLS; c++)
                for (int t = 0; t < 3; t++) tally_raw(foreign_index[x32][c][t], foreign(x32, c, t));
        /* open(2) with garbage above bit 31 of rax: one call for the kernel and the filter. */
        for (int t = 0; t < 2; t++) {
            long fd = syscall64((1L << 32) | SYS_open, (long)(uintptr_t)targets[t], O_WRONLY | O_CREAT | O_TRUNC, 0644);
            tally_raw(high_index[t], fd);
            if (fd >= 0) close((int)fd);
        }
#endif
        for (int n = 0; n < above_count; n++)
            tally_result(above_index[n], syscall(above[n], AT_FDCWD, targets[0], 0, "user.hvfs", value, 6));
        for (int t = 0; t < 2; t++)
            for (int nofollow = 0; nofollow < 2; nofollow++)
                tally_result(chmod2_index[t][nofollow], syscall(NR_fchmodat2, AT_FDCWD, targets[t], 0640,
                                                                nofollow ? AT_SYMLINK_NOFOLLOW : 0));
    }
    return NULL;
}

static int native(const char *directory) {
#if defined(__x86_64__)
    snprintf(targets[0], sizeof targets[0], "%s/int80", directory);
    snprintf(targets[1], sizeof targets[1], "%s/x32", directory);
    long a = int80(8, (long)(uintptr_t)targets[0], 0644, 0), b = syscall64(85 | X32, (long)(uintptr_t)targets[1], 0644, 0);
    printf("{\"int80\": %ld, \"x32\": %ld}\n", a, b);
    return 0;
#else
    (void)directory;
    return 2;
#endif
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "native") == 0) return native(argv[2]);
    attack_begin(argc, argv);
    if (argc < 6) {
        fprintf(stderr, "usage: %s TRIES SECONDS RO_FILE VOLUME_FILE HOST_FILE [above=NR...]\n", argv[0]);
        return 2;
    }
    attack_deadline = attack_now() + (attack_deadline - attack_now()) / 4;
    tally_init();
    for (int t = 0; t < 3; t++) {
        snprintf(targets[t], sizeof targets[t], "%s", argv[3 + t]);
        snprintf(others[t], sizeof others[t], "%s.other", argv[3 + t]);
    }
    char name[64];
#if defined(__x86_64__)
    for (int x32 = 0; x32 < 2; x32++)
        for (unsigned c = 0; c < CALLS; c++)
            for (int t = 0; t < 3; t++) {
                snprintf(name, sizeof name, "%s:%s:%s", x32 ? "x32" : "int80", calls[c].name, target_names[t]);
                foreign_index[x32][c][t] = tally_call(name);
            }
    for (int t = 0; t < 2; t++) {
        snprintf(name, sizeof name, "high_bits:open:%s", target_names[t]);
        high_index[t] = tally_call(name);
    }
#endif
    for (int i = 6; i < argc && above_count < 64; i++) {
        if (strncmp(argv[i], "above=", 6) != 0) continue;
        above[above_count] = strtol(argv[i] + 6, NULL, 0);
        snprintf(name, sizeof name, "above:%ld", above[above_count]);
        above_index[above_count++] = tally_call(name);
    }
    for (int t = 0; t < 2; t++)
        for (int nofollow = 0; nofollow < 2; nofollow++) {
            snprintf(name, sizeof name, "fchmodat2:%s%s", target_names[t], nofollow ? ":nofollow" : "");
            chmod2_index[t][nofollow] = tally_call(name);
        }
    pthread_t workers[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&workers[t], NULL, worker, NULL);
    for (int t = 0; t < THREADS; t++) pthread_join(workers[t], NULL);
    printf("{\"tries\": %ld, \"x86_64\": %d, ", tally_total(),
#if defined(__x86_64__)
           1
#else
           0
#endif
    );
    tally_print();
    printf("}\n");
    return 0;
}
