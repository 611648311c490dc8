/* A metadata change through an fd by threads that exit, or drop their credentials, as fast as
 * they are made (the C loop serves fchmod and fchown of the VM's own files and proves their
 * published thread the caller by the duplicate it takes through the thread's pidfd, with no
 * poll of that pidfd: hvfs/_native/served_fdmeta.h).
 *
 * fdmeta_exit TRIES SECONDS FILE
 *
 * FILE is the VM root's own, mode 0600, held open for reading and writing (a write-open: the
 * writable view's file, which C changes). For the first half of the budget, each try starts a
 * root thread that fchmods it three times (0600: its root credentials published, then served on
 * them by C), drops them with a raw syscall (this thread only: setresuid, setfsuid, setreuid or
 * setuid to 65534) and fchmods it again to 0666: natively EPERM. For the second half, each try
 * starts a root thread that fchmods FILE three times and exits, hands its tid (ns_last_pid) to
 * a new thread of a child process running as 65534, which fchmods FILE to 0666 and fchowns it
 * to 65534: natively EPERM both. A change that succeeds was served with a gone or dropped
 * root's credentials: the host checks FILE's mode and owner. A tid the VM reuses is another
 * number in the manager's pid namespace, where the C loop names threads: a reuse there (a wrap
 * of that namespace) cannot be forced from a VM; tests/test_pidfd_getfd_proof.py checks what
 * the loop's proof rests on instead.
 *
 * Prints {"tries", "root_ok", "dropped", "drop_failed", "refused", "escapes", "other",
 *         "reuse_tries", "reused", "reuse_refused", "reuse_unavailable"}.
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

static int file = -1;
static atomic_long root_ok, dropped, drop_failed, refused, escapes, other;

/* What a change as a dropped or foreign thread got: counted. */
static void counted(long got) {
    if (got == 0)
        atomic_fetch_add(&escapes, 1);
    else if (got == -EPERM)
        atomic_fetch_add(&refused, 1);
    else
        atomic_fetch_add(&other, 1);
}

static long changed(long rc) {
    return rc == 0 ? 0 : -errno;
}

/* As root: a few changes, the first of a new thread served by Python (its credentials read
 * and published), the others by C on those. */
static void as_root(void) {
    for (int k = 0; k < 3; k++)
        if (fchmod(file, 0600) == 0)
            atomic_fetch_add(&root_ok, 1);
}

static void *dropper(void *arg) {
    long variant = (long)arg, rc = -1;
    as_root();
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
    counted(changed(fchmod(file, 0666)));
    return NULL;
}

static void *report_tid(void *out) {
    *(pid_t *)out = (pid_t)syscall(SYS_gettid);
    as_root();
    return NULL;
}

/* In the child, as NOBODY: a thread that reports its tid and what its changes got. */
static void *reuser(void *out) {
    long *result = out;
    result[0] = syscall(SYS_gettid);
    result[1] = changed(fchmod(file, 0666));
    result[2] = changed(fchown(file, NOBODY, NOBODY));
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
            long result[3] = {0, 0, 0};
            pthread_t t;
            if (pthread_create(&t, NULL, reuser, result) == 0)
                pthread_join(t, NULL);
            if (write(back[1], result, sizeof result) != sizeof result)
                _exit(4);
        }
        _exit(0);
    }
    /* Its own share of the try budget too: thousands of reuses take a second, not the rest of the time. */
    while (attack_now() < until && reuse_tries < attack_tries) {
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
        long result[3];
        if (write(go[1], "g", 1) != 1 || read(back[0], result, sizeof result) != sizeof result)
            break;
        reuse_tries++;
        counted(result[1]);
        counted(result[2]);
        if (result[0] != tid)
            continue;
        reused++;
        if (result[1] == -EPERM && result[2] == -EPERM)
            reuse_refused++;
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
        fprintf(stderr, "usage: fdmeta_exit TRIES SECONDS FILE\n");
        return 2;
    }
    file = open(argv[3], O_RDWR | O_CLOEXEC); /* a write-open: the writable view's, whose files C changes */
    if (file < 0)
        return 3;
    double halfway = attack_now() + (attack_deadline - attack_now()) / 2;
    long i = 0;
    for (; attack_more(i) && attack_now() < halfway; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, dropper, (void *)i))
            break;
        pthread_join(t, NULL);
    }
    reuse(attack_deadline);
    printf("{\"tries\": %ld, \"root_ok\": %ld, \"dropped\": %ld, \"drop_failed\": %ld, \"refused\": %ld, "
           "\"escapes\": %ld, \"other\": %ld, \"reuse_tries\": %ld, \"reused\": %ld, \"reuse_refused\": %ld, "
           "\"reuse_unavailable\": %ld}\n",
           i, atomic_load(&root_ok), atomic_load(&dropped), atomic_load(&drop_failed), atomic_load(&refused),
           atomic_load(&escapes), atomic_load(&other), reuse_tries, reused, reuse_refused, reuse_unavailable);
    return 0;
}
