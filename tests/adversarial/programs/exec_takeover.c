/* The ptrace driver's exec takeover, raced (issue 15): a sibling thread execs while its
 * leader keeps the tracer resuming it. The exec kills the leader and the exec'ing thread
 * takes its pid; a resume of that pid meant for the leader's stop would resume the new
 * program at its exec event, which the manager then never sees.
 *
 * exec_takeover TRIES SECONDS DIR [MODE]
 *
 * Each try forks a child whose leader loops on what MODE says, while a sibling thread execs
 * this program as "after DIR TRY", which creates DIR/ran-TRY through the manager: the host
 * counts those files (the execs made) against the manager's count of the execs it saw.
 *   answered   (the default) a write-open of /dev/null, an fchmod of DIR/kept and an unlink of
 *              another file: calls the C loop answers (tracer_write.h, tracer_unlink.h,
 *              tracer_fdmeta.h) and resumes.
 *   installed  a write-open of DIR/kept: served in the C loop, the file installed by a recvmsg
 *              run in place of the call (tracer_receive.h), then the thread resumed.
 *   signalled  raise(SIGUSR1): a signal-delivery-stop the C loop passes (pass_through).
 *   crowd      installed, with CROWD more threads beside the leader and the exec'ing sibling,
 *              each looping on write-opens of DIR/kept too: the exec kills them all, and it
 *              waits until the tracer has reaped each (de_thread), while the tracer may be
 *              waiting for the leader's injected recvmsg (issue 15: a wait on the leader's
 *              pid alone hung the VM there). Their stops and exits met by that wait are the
 *              main loop's to handle.
 *   swap       answered and installed in turn, and the sibling execs DIR/prog-a, which the
 *              parent renames to DIR/prog-b in shared memory (one byte) as soon as the sibling has
 *              left its exec's seccomp stop, where --strict checked prog-a: whatever the
 *              kernel then loads, prog-a was the one checked. prog-b (this program built
 *              with -DSWAPPED_IN) creates DIR/swapped-TRY instead: it may never run.
 * The leader marks each call in flight in memory shared with the parent, which reads it
 * after the try: a try whose leader died in a call ("in_call") is one where the takeover
 * happened while a call was pending, most often one the C loop answers.
 *
 * Prints {"tries", "ran", "in_call", "calls", "exec_failed", "killed", "flipped", "other"}:
 * "flipped" the swaps made, "killed" those the kernel loaded (prog-b, killed as it must be).
 */
#include "attack.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { RAN = 0, EXEC_FAILED = 12, NOT_MARKED = 13, CROWD = 3 };

#ifdef SWAPPED_IN
#define MARKER "swapped"
#else
#define MARKER "ran"
#endif

/* Shared with the parent, across the fork: MAP_SHARED. ``program``: the path the sibling
 * execs, which the parent rewrites in swap mode. */
struct shared {
    atomic_int in_call, sibling_tid, watched; /* swap: the sibling's tid, its stat file open */
    atomic_long calls, flipped, try_calls; /* try_calls: the leader's calls done in this try */
    char program[300];
};

static const char *self, *dir, *mode = "answered";
static struct shared *shared;
static char try_number[32];
static int swapping;

static void *exec_sibling(void *unused) {
    (void)unused;
    char *argv[] = {shared->program, "after", (char *)dir, try_number, NULL};
    atomic_store(&shared->sibling_tid, gettid());
    /* A new process's first calls go to the manager's Python (its credentials not yet known
     * to the C loop): an exec made at once races those alone (CI: 0 of 1,776 rootless tries
     * reached a call served in C). Tries take turns racing the first call and the later ones. */
    long after = atoi(try_number) % 3;
    while (atomic_load(&shared->try_calls) < after)
        ;
    while (swapping && !atomic_load(&shared->watched)) /* the swapper's open first: a call the manager serves */
        ;
    execv(shared->program, argv);
    _exit(EXEC_FAILED);
}

/* The state letter of a thread (its /proc stat), 0 once it is gone (exec'd or dead). */
static char state_of(int stat) {
    char text[512];
    ssize_t got = pread(stat, text, sizeof text - 1, 0);
    if (got <= 0)
        return 0;
    text[got] = 0;
    char *end = strrchr(text, ')');
    return end != NULL && end[1] == ' ' ? end[2] : 0;
}

/* swap, in the parent: once the child's sibling has been at its exec's seccomp stop ('t') and
 * left it, the last byte of the path it execs turns prog-a into prog-b, for the kernel's second
 * read of it. The parent, not a third thread of the child: the try's threads stay the two whose
 * race this mode is about (crowd is the mode with more). */
static void swap_after_check(pid_t child) {
    int tid;
    while ((tid = atomic_load(&shared->sibling_tid)) == 0)
        ;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)child, tid);
    int stat = open(path, O_RDONLY | O_CLOEXEC);
    atomic_store(&shared->watched, 1);
    if (stat < 0)
        return;
    char state;
    while ((state = state_of(stat)) != 0 && state != 't')
        ;
    while ((state = state_of(stat)) == 't')
        ;
    if (state != 0) {
        ((volatile char *)shared->program)[strlen(shared->program) - 1] = 'b';
        atomic_fetch_add(&shared->flipped, 1);
    }
    close(stat);
}

static void on_signal(int signum) { (void)signum; }

/* crowd: one more thread of the child, opening DIR/kept for writing until the exec kills it. */
static void *crowd_member(void *kept) {
    for (;;) {
        int written = open(kept, O_WRONLY | O_CLOEXEC);
        if (written >= 0)
            close(written);
    }
    return NULL;
}

/* The leader: calls as MODE says, each marked in flight, until the exec kills it. */
static void leader_calls(long try) {
    char kept[300], doomed[300];
    snprintf(kept, sizeof kept, "%s/kept", dir);
    snprintf(doomed, sizeof doomed, "%s/doomed-%ld", dir, try);
    int crowd = strcmp(mode, "crowd") == 0;
    int fd = open(kept, O_RDONLY | O_CLOEXEC), installed = crowd || strcmp(mode, "installed") == 0;
    int signalled = strcmp(mode, "signalled") == 0;
    pthread_t t;
    for (int member = 0; crowd && member < CROWD; member++)
        if (pthread_create(&t, NULL, crowd_member, kept) != 0)
            _exit(EXEC_FAILED);
    if (fd < 0 || pthread_create(&t, NULL, exec_sibling, NULL) != 0)
        _exit(EXEC_FAILED);
    for (unsigned long i = 0;; i++) {
        atomic_store(&shared->in_call, 1);
        if (installed || (swapping && i % 2)) {
            int written = open(kept, O_WRONLY | O_CLOEXEC);
            if (written >= 0)
                close(written);
        } else if (signalled)
            raise(SIGUSR1);
        else
            switch (i % 3) {
            case 0: {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
                if (null >= 0)
                    close(null);
                break;
            }
            case 1:
                fchmod(fd, i & 4 ? 0644 : 0640);
                break;
            default:
                unlink(doomed); /* absent after the first: answered ENOENT in C as well */
            }
        atomic_store(&shared->in_call, 0);
        atomic_fetch_add(&shared->calls, 1);
        atomic_fetch_add(&shared->try_calls, 1);
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "after") == 0) { /* the exec'd program: says it ran */
        char marker[300];
        snprintf(marker, sizeof marker, "%s/" MARKER "-%s", argv[2], argv[3]);
        int fd = open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        return fd >= 0 && close(fd) == 0 ? RAN : NOT_MARKED;
    }
    attack_begin(argc, argv);
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: exec_takeover TRIES SECONDS DIR [MODE]\n");
        return 2;
    }
    self = argv[0], dir = argv[3], mode = argc == 5 ? argv[4] : mode;
    int swap = swapping = strcmp(mode, "swap") == 0;
    signal(SIGUSR1, on_signal);
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 3;
    long i = 0, ran = 0, in_call = 0, exec_failed = 0, killed = 0, other = 0;
    for (; attack_more(i); i++) {
        char doomed[300];
        snprintf(doomed, sizeof doomed, "%s/doomed-%ld", dir, i);
        int made = open(doomed, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (made >= 0)
            close(made);
        snprintf(try_number, sizeof try_number, "%ld", i);
        if (swap)
            snprintf(shared->program, sizeof shared->program, "%s/prog-a", dir);
        else
            snprintf(shared->program, sizeof shared->program, "%s", self);
        atomic_store(&shared->sibling_tid, 0);
        atomic_store(&shared->watched, 0);
        atomic_store(&shared->in_call, 0);
        atomic_store(&shared->try_calls, 0);
        pid_t child = fork();
        if (child == 0)
            leader_calls(i);
        if (swap && child > 0)
            swap_after_check(child);
        int status;
        if (child < 0 || waitpid(child, &status, 0) != child)
            break;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        /* swap: prog-b loaded after prog-a was checked, killed at its exec event as it must be */
        int caught = swap && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        ran += code == RAN;
        exec_failed += code == EXEC_FAILED;
        killed += caught;
        other += code != RAN && code != EXEC_FAILED && !caught;
        in_call += (code == RAN || caught) && atomic_load(&shared->in_call);
        if (code != RAN && code != EXEC_FAILED && !caught) /* which: a marker refused (13), a signal (-1) */
            fprintf(stderr, "try %ld: exit %d, signal %d\n", i, code, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    printf("{\"tries\": %ld, \"ran\": %ld, \"in_call\": %ld, \"calls\": %ld, \"exec_failed\": %ld, \"killed\": %ld, "
           "\"flipped\": %ld, \"other\": %ld}\n",
           i, ran, in_call, atomic_load(&shared->calls), exec_failed, killed, atomic_load(&shared->flipped), other);
    return 0;
}
