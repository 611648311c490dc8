/* Credentials kept by the driver, raced (hvfs/intercept/credcache.py).
 *
 * cred_drop TRIES SECONDS FILE
 *
 * FILE is the VM root's own, mode 0600: root opens it for writing, no other uid may.
 *
 * Drops, for the first quarter of the time budget: each try starts a thread that opens FILE for
 * writing as root (so the driver has read, and may keep, its root credentials), then
 * drops them with a raw syscall (this thread only; setresuid, setfsuid, setreuid or
 * setuid to 65534), then opens FILE for writing again. Two sibling threads keep opening
 * FILE as root all along, so the driver serves root requests between the drop and the
 * second open. A second open that succeeds was served with stale root credentials: it
 * writes "escape" into FILE, which the host checks.
 *
 * Reuse, for the second quarter: a root thread opens FILE and exits; its tid is then handed
 * (ns_last_pid) to a new thread of a child process that runs as 65534, which opens FILE
 * for writing: served with the dead root thread's credentials, it writes "escape" too.
 *
 * Prints {"tries", "root_ok", "dropped", "drop_failed", "refused", "escapes", "other",
 *         "siblings_ok", "siblings_refused", "reuse_tries", "reused", "reuse_refused",
 *         "reuse_unavailable"}.
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

static const char *target;
static atomic_long root_ok, dropped, drop_failed, refused, escapes, other, siblings_ok, siblings_refused;
static atomic_int stop;

/* Opens FILE for writing; on success writes what, and counts it as got. */
static int try_open(const char *what) {
    int fd = open(target, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (what)
        (void)!write(fd, what, strlen(what));
    close(fd);
    return 0;
}

static void *sibling(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        if (try_open(NULL) == 0)
            atomic_fetch_add(&siblings_ok, 1);
        else
            atomic_fetch_add(&siblings_refused, 1);
    }
    return NULL;
}

static void *dropper(void *arg) {
    long variant = (long)arg;
    if (try_open(NULL) == 0)
        atomic_fetch_add(&root_ok, 1);
    long rc = -1;
    switch (variant % 4) {
    case 0:
        rc = syscall(SYS_setresuid, NOBODY, NOBODY, NOBODY);
        break;
    case 1:
        syscall(SYS_setfsuid, NOBODY);
        rc = syscall(SYS_setfsuid, -1) == NOBODY ? 0 : -1; /* -1 is no uid: it only reports */
        break;
    case 2:
        rc = syscall(SYS_setreuid, NOBODY, NOBODY);
        break;
    case 3:
        rc = syscall(SYS_setuid, NOBODY);
        break;
    }
    if (rc != 0) {
        atomic_fetch_add(&drop_failed, 1);
        return NULL;
    }
    atomic_fetch_add(&dropped, 1);
    int got = try_open("escape: opened after a drop\n");
    if (got == 0)
        atomic_fetch_add(&escapes, 1);
    else if (got == -EACCES)
        atomic_fetch_add(&refused, 1);
    else
        atomic_fetch_add(&other, 1);
    return NULL;
}

static void *report_tid(void *out) {
    *(pid_t *)out = (pid_t)syscall(SYS_gettid);
    if (try_open(NULL) == 0)
        atomic_fetch_add(&root_ok, 1);
    return NULL;
}

/* In the child, as NOBODY: a thread that reports its tid and what its open got. */
static void *reuser(void *out) {
    long *result = out;
    result[0] = syscall(SYS_gettid);
    result[1] = try_open("escape: opened by a reused tid\n");
    return NULL;
}

static long reuse_tries, reused, reuse_refused, reuse_unavailable;

static void reuse(double until) {
    int last = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
    int go[2], back[2];
    if (last < 0 || pipe(go) || pipe(back)) {
        reuse_unavailable = 1;
        return;
    }
    pid_t child = fork();
    if (child == 0) {
        close(go[1]); /* or its read never sees the end */
        close(back[0]);
        if (syscall(SYS_setresgid, NOBODY, NOBODY, NOBODY) || syscall(SYS_setresuid, NOBODY, NOBODY, NOBODY))
            _exit(3);
        char c;
        while (read(go[0], &c, 1) == 1) {
            long result[2] = {0, 0};
            pthread_t t;
            if (pthread_create(&t, NULL, reuser, result) == 0)
                pthread_join(t, NULL);
            if (write(back[1], result, sizeof result) != sizeof result)
                _exit(4);
        }
        _exit(0);
    }
    while (attack_now() < until) {
        pid_t tid = 0;
        pthread_t t;
        if (pthread_create(&t, NULL, report_tid, &tid))
            break;
        pthread_join(t, NULL);
        char number[32];
        int n = snprintf(number, sizeof number, "%d", tid - 1);
        if (pwrite(last, number, n, 0) != n) {
            reuse_unavailable = 1;
            break;
        }
        long result[2];
        if (write(go[1], "g", 1) != 1 || read(back[0], result, sizeof result) != sizeof result)
            break;
        reuse_tries++;
        if (result[0] != tid)
            continue;
        reused++;
        if (result[1] == 0)
            atomic_fetch_add(&escapes, 1);
        else if (result[1] == -EACCES)
            reuse_refused++;
        else
            atomic_fetch_add(&other, 1);
    }
    close(go[1]);
    waitpid(child, NULL, 0);
    close(go[0]);
    close(back[0]);
    close(back[1]);
    close(last);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: cred_drop TRIES SECONDS FILE\n");
        return 2;
    }
    target = argv[3];
    /* Half the budget is plenty (hundreds of drops a second even in strict mode), and
     * CI's time is short: a quarter for the drops, a quarter for the reuse. */
    double start = attack_now(), quarter = (attack_deadline - start) / 4;
    double halfway = start + quarter;
    attack_deadline = start + 2 * quarter;
    pthread_t siblings[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&siblings[i], NULL, sibling, NULL);
    long i = 0;
    for (; attack_more(i) && attack_now() < halfway; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, dropper, (void *)i))
            break;
        pthread_join(t, NULL);
    }
    atomic_store(&stop, 1);
    for (int k = 0; k < 2; k++)
        pthread_join(siblings[k], NULL);
    reuse(attack_deadline);
    printf("{\"tries\": %ld, \"root_ok\": %ld, \"dropped\": %ld, \"drop_failed\": %ld, \"refused\": %ld, "
           "\"escapes\": %ld, \"other\": %ld, \"siblings_ok\": %ld, \"siblings_refused\": %ld, "
           "\"reuse_tries\": %ld, \"reused\": %ld, \"reuse_refused\": %ld, \"reuse_unavailable\": %ld}\n",
           i, atomic_load(&root_ok), atomic_load(&dropped), atomic_load(&drop_failed), atomic_load(&refused),
           atomic_load(&escapes), atomic_load(&other), atomic_load(&siblings_ok), atomic_load(&siblings_refused),
           reuse_tries, reused, reuse_refused, reuse_unavailable);
    return 0;
}
