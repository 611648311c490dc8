/* Path buffers flipped between a file on a writable volume and one the VM may not change,
 * while the main thread mutates through them.
 *
 * path_flip TRIES SECONDS VOLUME FORBIDDEN [FORBIDDEN...]
 *
 * The program works in VOLUME (its cwd). Each FORBIDDEN is a directory, absolute or
 * relative to VOLUME (a :ro mount, a host directory outside every mount, `..`-style
 * paths up and out of the volume), holding decoys named f, u, r, r2 and o on the host.
 * For its share of the time, a thread flips six buffers between the allowed name (in
 * VOLUME, spelt as FORBIDDEN is: absolute or relative) and FORBIDDEN/NAME, while the main
 * thread calls open(O_WRONLY|O_CREAT|O_TRUNC), chmod and truncate on f, unlink on u,
 * rename of r away to VOLUME/moved, rename of r2 to m2 within the same directory, and a
 * rename of VOLUME/src over o. The manager reads each path once: whatever it read, it
 * resolves and acts on, in the VM. The volume's files are put back after each try.
 *
 * Counters: per call "CALL_ok" (acted on the volume) and "CALL_refused"; "odd" (a call
 * succeeded but the volume shows no trace of it); per target "tK_tries", "tK_ok",
 * "tK_refused".
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OPEN, CHMOD, TRUNCATE, UNLINK, RENAME_AWAY, RENAME_WITHIN, RENAME_OVER, CALLS };
#define WITHIN_TO CALLS /* the second buffer of the rename within */
#define BUFFERS (CALLS + 1)
static const char *names[CALLS] = {"open", "chmod", "truncate", "unlink", "rename_away", "rename_within",
                                   "rename_over"};
static const char *files[BUFFERS] = {"f", "f", "f", "u", "r", "r2", "o", "m2"};
static long ok[CALLS], refused[CALLS], odd;

static char buffer[BUFFERS][1024], allowed[BUFFERS][1024], forbidden[BUFFERS][1024];
static atomic_int stop;

static void dwell(void) {
    for (volatile int i = 0; i < 64; i++) {
    }
}

static void *flip(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        for (int b = 0; b < BUFFERS; b++) memcpy(buffer[b], allowed[b], strlen(allowed[b]) + 1);
        dwell();
        for (int b = 0; b < BUFFERS; b++) memcpy(buffer[b], forbidden[b], strlen(forbidden[b]) + 1);
        dwell();
    }
    return NULL;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static void put(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, "volume\n", 7) < 0) perror("write");
        close(fd);
    }
}

/* A call's result; "odd" when it succeeded and the volume's own file shows nothing of it. */
static void count(int call, int result, const char *should_be_gone) {
    if (result < 0) {
        refused[call]++;
        return;
    }
    ok[call]++;
    if (should_be_gone && exists(should_be_gone)) odd++;
}

static void restore(void) {
    if (exists("moved"))
        rename("moved", "r");
    else if (!exists("r"))
        put("r");
    if (exists("m2"))
        rename("m2", "r2");
    else if (!exists("r2"))
        put("r2");
    if (!exists("u")) put("u");
    if (!exists("src")) put("src");
    if (!exists("f")) put("f");
}

static void race(int k, const char *volume, const char *target, double until) {
    for (int b = 0; b < BUFFERS; b++) {
        if (target[0] == '/')
            snprintf(allowed[b], sizeof allowed[b], "%s/%s", volume, files[b]);
        else
            snprintf(allowed[b], sizeof allowed[b], "%s", files[b]);
        snprintf(forbidden[b], sizeof forbidden[b], "%s/%s", target, files[b]);
        strcpy(buffer[b], allowed[b]);
    }
    atomic_store(&stop, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, flip, NULL);
    long i, before_ok = 0, before_refused = 0;
    for (int c = 0; c < CALLS; c++) before_ok += ok[c], before_refused += refused[c];
    for (i = 0; attack_more(i) && attack_now() < until; i++) {
        int fd = open(buffer[OPEN], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, "attack\n", 7) < 0) perror("write");
            close(fd);
        }
        count(OPEN, fd, NULL);
        count(CHMOD, chmod(buffer[CHMOD], i & 1 ? 0600 : 0640), NULL);
        count(TRUNCATE, truncate(buffer[TRUNCATE], 1), NULL);
        count(UNLINK, unlink(buffer[UNLINK]), "u");
        count(RENAME_AWAY, rename(buffer[RENAME_AWAY], "moved"), "r");
        count(RENAME_WITHIN, rename(buffer[RENAME_WITHIN], buffer[WITHIN_TO]), "r2");
        count(RENAME_OVER, rename("src", buffer[RENAME_OVER]), "src");
        restore();
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    long after_ok = 0, after_refused = 0;
    for (int c = 0; c < CALLS; c++) after_ok += ok[c], after_refused += refused[c];
    printf("\"t%d_tries\": %ld, \"t%d_ok\": %ld, \"t%d_refused\": %ld, ", k, i, k, after_ok - before_ok, k,
           after_refused - before_refused);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 5) {
        fprintf(stderr, "usage: %s TRIES SECONDS VOLUME FORBIDDEN...\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    const char *volume = argv[3];
    if (chdir(volume) < 0) return 3;
    restore();
    int targets = argc - 4;
    double start = attack_now(), share = (attack_deadline - start) / targets;
    printf("{");
    for (int k = 0; k < targets; k++) race(k, volume, argv[4 + k], start + share * (k + 1));
    long total = 0;
    for (int c = 0; c < CALLS; c++) {
        printf("\"%s_ok\": %ld, \"%s_refused\": %ld, ", names[c], ok[c], names[c], refused[c]);
        total += ok[c] + refused[c];
    }
    printf("\"calls\": %ld, \"odd\": %ld, \"tries\": %ld}\n", total, odd, total / CALLS);
    return 0;
}
