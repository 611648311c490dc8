/* A new process's first credentials, read by the driver's C loop while the process drops
 * them (hvfs/_native/first_credentials.h: the read, then ID_VALID, then the generation
 * checked again; nothing kept if any fails).
 *
 * first_drop TRIES SECONDS FILE [OTHERS]
 *
 * FILE is the VM root's own, mode 0600: root opens it for writing, no other uid may.
 * OTHERS (optional) is uid 1000's own, mode 0600: root opens it for writing only with
 * CAP_DAC_OVERRIDE in its effective set.
 *
 * Each try starts a thread, or on every fourth try forks a process (as make's children),
 * whose credentials nothing has kept yet: its first trapped call is an open for writing of
 * the target (FILE, or OTHERS on odd tries when given). Right then, after a delay that
 * sweeps 0-300 us across the tries, the main thread sends it SIGUSR1, whose handler
 * (SA_RESTART) drops its credentials with the raw call, this thread only: setresuid to
 * euid 65534 (FILE), or capset clearing the effective set (OTHERS). A
 * signal that arrives while the open waits for the driver cancels that notification; the
 * open is made again after the handler, as a new request, with the new credentials. Every
 * open that began after the drop (the handler's count, read before the open) must be
 * refused; one that succeeds was served with the credentials read before the drop and
 * writes "escape" into the target, which the host checks. After the first open the child
 * opens the target three more times, each after the drop: stale credentials kept by the
 * first read would serve those.
 *
 * Prints {"tries", "processes", "first_ok", "first_refused" (the drop came while the first open waited:
 *         the window itself), "dropped_before", "later_refused", "escapes", "other",
 *         "drop_failed", "no_signal", "fork_failed"}.
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534
#define LATER 3

enum { FIRST_OK, FIRST_REFUSED, DROPPED_BEFORE, LATER_REFUSED, ESCAPES, OTHER, DROP_FAILED, NO_SIGNAL, COUNTERS };
static const char *names[COUNTERS] = {"first_ok", "first_refused", "dropped_before", "later_refused",
                                      "escapes",  "other",         "drop_failed",    "no_signal"};

struct shared {
    atomic_long counts[COUNTERS];
    atomic_long ready; /* the try whose child is about to make its first open */
    atomic_int tid;    /* its thread */
};

static struct shared *shared;
static __thread volatile sig_atomic_t drops; /* each thread's own, as what the handler drops */
static __thread volatile sig_atomic_t by_caps;

static void drop(int signal) {
    (void)signal;
    int saved = errno;
    long rc;
    if (by_caps) {
        struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
        struct __user_cap_data_struct data[2];
        rc = syscall(SYS_capget, &header, data);
        if (rc == 0) {
            data[0].effective = data[1].effective = 0;
            rc = syscall(SYS_capset, &header, data);
        }
    } else {
        rc = syscall(SYS_setresuid, -1, NOBODY, -1);
    }
    if (rc == 0)
        drops = 1;
    else
        atomic_fetch_add(&shared->counts[DROP_FAILED], 1);
    errno = saved;
}

/* Opens the target for writing, writing "escape" where it began after the drop: 0 or -errno. */
static int try_open(const char *path, int *dropped_before) {
    *dropped_before = drops;
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (*dropped_before) {
        const char *escape = "escape: opened after a drop\n";
        (void)!write(fd, escape, strlen(escape));
    }
    close(fd);
    return 0;
}

static void count(int got, int dropped_before, int first) {
    int index = OTHER;
    if (got == 0)
        index = dropped_before ? ESCAPES : first ? FIRST_OK : OTHER;
    else if (got == -EACCES)
        index = dropped_before && first ? DROPPED_BEFORE : first ? FIRST_REFUSED : LATER_REFUSED;
    atomic_fetch_add(&shared->counts[index], 1);
}

struct try {
    long number;
    const char *path;
    int caps;
};

/* A try's thread, in a process of its own or not: its first open, raced by the drop. */
static void *child(void *argument) {
    const struct try *t = argument;
    const char *path = t->path;
    int dropped_before;
    by_caps = t->caps;
    atomic_store(&shared->tid, (int)syscall(SYS_gettid));
    atomic_store(&shared->ready, t->number);
    int got = try_open(path, &dropped_before);
    count(got, dropped_before, 1);
    double until = attack_now() + 0.01; /* the signal, if the open beat it */
    while (!drops && attack_now() < until) {
        struct timespec nap = {.tv_nsec = 20000}; /* ended by the signal: its handler has run */
        nanosleep(&nap, NULL);
    }
    if (!drops) {
        atomic_fetch_add(&shared->counts[NO_SIGNAL], 1);
        return NULL;
    }
    for (int k = 0; k < LATER; k++) {
        got = try_open(path, &dropped_before);
        count(got, 1, 0);
    }
    return NULL;
}

static void spin_us(double us) {
    double until = attack_now() + us / 1e6;
    while (attack_now() < until)
        ;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: first_drop TRIES SECONDS FILE [OTHERS]\n");
        return 2;
    }
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 3;
    struct sigaction action = {.sa_handler = drop, .sa_flags = SA_RESTART};
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, NULL); /* before the fork: the child has it from its start */
    long tries = 0, processes = 0, fork_failed = 0;
    for (; attack_more(tries); tries++) {
        struct try t = {.number = tries, .caps = argc > 4 && tries % 2};
        t.path = t.caps ? argv[4] : argv[3];
        atomic_store(&shared->ready, -1);
        pid_t pid = 0;
        pthread_t thread;
        if (tries % 4 == 0) {
            processes++;
            if ((pid = fork()) == 0) {
                child(&t);
                _exit(0);
            }
        } else if (pthread_create(&thread, NULL, child, &t)) {
            pid = -1;
        }
        if (pid < 0) {
            fork_failed++;
            break;
        }
        double waited = attack_now();
        while (atomic_load(&shared->ready) != tries && attack_now() - waited < 1)
            ;
        spin_us((double)(tries * 37 % 300));
        if (pid > 0) {
            kill(pid, SIGUSR1);
            waitpid(pid, NULL, 0);
        } else {
            syscall(SYS_tgkill, getpid(), atomic_load(&shared->tid), SIGUSR1);
            pthread_join(thread, NULL);
        }
    }
    printf("{\"tries\": %ld, \"processes\": %ld, \"fork_failed\": %ld", tries, processes, fork_failed);
    for (int i = 0; i < COUNTERS; i++)
        printf(", \"%s\": %ld", names[i], atomic_load(&shared->counts[i]));
    printf("}\n");
    return 0;
}
