/* Credentials kept by the driver across execs, raced (hvfs/intercept/credcache.py; the C
 * loop bumps only the exec'ing thread's bucket of the generation: hvfs/_native/cred_bumps.h).
 *
 * exec_drop TRIES SECONDS FILE
 *
 * FILE is the VM root's own, mode 0600: only root or a caller with CAP_DAC_OVERRIDE opens
 * it for writing.
 *
 * Each try forks a child that becomes uid 65534 keeping its capabilities (PR_SET_KEEPCAPS,
 * then capset: CAP_DAC_OVERRIDE effective), opens FILE (so the driver has read, and may
 * keep, its capable credentials), starts two sibling threads that keep opening FILE, tries
 * an exec that fails (ENOENT, as gcc tries its program paths; its capabilities must hold
 * after it), then execs this program from its leader, or, in the last quarter of the time
 * budget, from another thread (which makes the driver keep no credentials for the VM any
 * more: the leaders' execs race kept ones until then). A uid that is not 0 loses every capability at an exec of a file without any: the
 * exec'd program's open of FILE must be refused. Served with the credentials kept from
 * before, it succeeds and writes "escape" into FILE, which the host checks. Meanwhile
 * another capable process (its credentials kept all along: its opens must succeed) and a
 * process of uid 65534 without capabilities (its opens must be refused) keep opening FILE.
 *
 * Prints {"tries", "capable_ok", "capable_refused", "failed_exec_kept", "failed_exec_lost",
 *         "refused", "escapes", "other", "siblings_ok", "siblings_refused", "others_ok",
 *         "others_refused", "nobody_refused", "exec_failed", "setup_failed", "from_thread"}.
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

enum { REFUSED, ESCAPED, OTHER, CAPABLE_REFUSED = 10, FAILED_EXEC_LOST, EXEC_FAILED, SETUP_FAILED };

struct shared {
    atomic_long siblings_ok, siblings_refused, others_ok, others_refused, nobody_refused, escapes;
    atomic_int stop;
};

static const char *target, *self;
static struct shared *shared;

/* Opens FILE for writing; on success writes what. 0 or -errno. */
static int try_open(const char *what) {
    int fd = open(target, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (what)
        (void)!write(fd, what, strlen(what));
    close(fd);
    return 0;
}

/* This thread as uid 65534 with its capabilities effective (only this thread's: raw calls). */
static int become_capable_nobody(void) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    if (prctl(PR_SET_KEEPCAPS, 1) || syscall(SYS_setresuid, NOBODY, NOBODY, NOBODY) ||
        syscall(SYS_capget, &header, data))
        return -1;
    for (int i = 0; i < 2; i++)
        data[i].effective = data[i].permitted;
    return (int)syscall(SYS_capset, &header, data);
}

static void *sibling(void *unused) {
    (void)unused;
    for (;;) { /* until the exec kills it */
        if (try_open(NULL) == 0)
            atomic_fetch_add(&shared->siblings_ok, 1);
        else
            atomic_fetch_add(&shared->siblings_refused, 1);
    }
    return NULL;
}

static void run_self(void) {
    char *argv[] = {(char *)self, "after", (char *)target, NULL};
    execv(self, argv);
}

static void *exec_from_thread(void *unused) {
    (void)unused;
    run_self();
    _exit(EXEC_FAILED);
}

static void try_once(int from_thread) {
    if (become_capable_nobody())
        _exit(SETUP_FAILED);
    if (try_open(NULL) != 0)
        _exit(CAPABLE_REFUSED);
    pthread_t t;
    for (int k = 0; k < 2; k++)
        pthread_create(&t, NULL, sibling, NULL);
    char *missing[] = {"/nonexistent/exec_drop", NULL};
    execv(missing[0], missing);
    if (try_open(NULL) != 0)
        _exit(FAILED_EXEC_LOST);
    if (!from_thread)
        run_self();
    else if (pthread_create(&t, NULL, exec_from_thread, NULL) == 0)
        pause(); /* the exec kills this thread */
    _exit(EXEC_FAILED);
}

/* A process that keeps opening FILE until told to stop: capable (its opens must succeed)
 * or not (they must be refused). */
static pid_t keep_opening(int capable) {
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (capable ? become_capable_nobody() : syscall(SYS_setresuid, NOBODY, NOBODY, NOBODY))
        _exit(SETUP_FAILED);
    while (!atomic_load(&shared->stop)) {
        int got = try_open(capable ? NULL : "escape: opened by uid 65534\n");
        if (!capable && got == 0)
            atomic_fetch_add(&shared->escapes, 1);
        else if (!capable)
            atomic_fetch_add(&shared->nobody_refused, 1);
        else
            atomic_fetch_add(got == 0 ? &shared->others_ok : &shared->others_refused, 1);
    }
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "after") == 0) { /* the exec'd program: capabilities gone */
        target = argv[2];
        int got = try_open("escape: opened after an exec that dropped capabilities\n");
        return got == 0 ? ESCAPED : got == -EACCES ? REFUSED : OTHER;
    }
    attack_begin(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: exec_drop TRIES SECONDS FILE\n");
        return 2;
    }
    self = argv[0], target = argv[3];
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 3;
    pid_t other = keep_opening(1), nobody = keep_opening(0);
    long i = 0, outcomes[SETUP_FAILED + 2] = {0}, from_thread = 0;
    double threads_from = attack_now() + (attack_deadline - attack_now()) * 3 / 4;
    for (; attack_more(i); i++) {
        int thread = attack_now() >= threads_from;
        from_thread += thread;
        pid_t child = fork();
        if (child == 0)
            try_once(thread);
        int status;
        if (child < 0 || waitpid(child, &status, 0) != child)
            break;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : SETUP_FAILED + 1;
        outcomes[code <= SETUP_FAILED ? code : SETUP_FAILED + 1]++;
        if (code == ESCAPED) /* which exec: from the leader (even tries) or another thread */
            fprintf(stderr, "escape at try %ld, from %s\n", i, thread ? "another thread" : "the leader");
    }
    atomic_store(&shared->stop, 1);
    waitpid(other, NULL, 0);
    waitpid(nobody, NULL, 0);
    long failed_exec_lost = outcomes[FAILED_EXEC_LOST];
    long finished = outcomes[REFUSED] + outcomes[ESCAPED] + outcomes[OTHER];
    printf("{\"tries\": %ld, \"capable_ok\": %ld, \"capable_refused\": %ld, \"failed_exec_kept\": %ld, "
           "\"failed_exec_lost\": %ld, \"refused\": %ld, \"escapes\": %ld, \"other\": %ld, \"siblings_ok\": %ld, "
           "\"siblings_refused\": %ld, \"others_ok\": %ld, \"others_refused\": %ld, \"nobody_refused\": %ld, "
           "\"exec_failed\": %ld, \"setup_failed\": %ld, \"from_thread\": %ld}\n",
           i, finished + failed_exec_lost + outcomes[EXEC_FAILED], outcomes[CAPABLE_REFUSED], finished + outcomes[EXEC_FAILED],
           failed_exec_lost, outcomes[REFUSED], outcomes[ESCAPED] + atomic_load(&shared->escapes),
           outcomes[OTHER] + outcomes[SETUP_FAILED + 1], atomic_load(&shared->siblings_ok),
           atomic_load(&shared->siblings_refused), atomic_load(&shared->others_ok),
           atomic_load(&shared->others_refused), atomic_load(&shared->nobody_refused), outcomes[EXEC_FAILED],
           outcomes[SETUP_FAILED], from_thread);
    return 0;
}
