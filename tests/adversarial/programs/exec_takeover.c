/* The ptrace driver's exec takeover, raced (issue 15): a sibling thread execs while its
 * leader keeps making calls the tracer's C loop answers itself (hvfs/_native/tracer_write.h,
 * tracer_unlink.h, tracer_fdmeta.h). The exec kills the leader and the exec'ing thread takes
 * its pid; a resume of that pid meant for the leader's answered stop would resume the new
 * program at its exec event, which the manager then never sees.
 *
 * exec_takeover TRIES SECONDS DIR
 *
 * Each try forks a child whose leader loops on a write-open of /dev/null, an fchmod of a
 * file of DIR (a volume) and an unlink of another, while a sibling thread execs this
 * program as "after DIR TRY", which creates DIR/ran-TRY through the manager: the host
 * counts those files (the execs made) against the manager's count of the execs it saw.
 * The leader marks each call in flight in memory shared with the parent, which reads it
 * after the try: a try whose leader died in a call ("in_call") is one where the takeover
 * happened while a call, most often one the C loop answers, was pending.
 *
 * Prints {"tries", "ran", "in_call", "calls", "exec_failed", "other"}.
 */
#include "attack.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { RAN = 0, EXEC_FAILED = 12, NOT_MARKED = 13 };

struct shared {
    atomic_int in_call;
    atomic_long calls;
};

static const char *self, *dir;
static struct shared *shared;
static char try_number[32];

static void *exec_sibling(void *unused) {
    (void)unused;
    char *argv[] = {(char *)self, "after", (char *)dir, try_number, NULL};
    execv(self, argv);
    _exit(EXEC_FAILED);
}

/* The leader: calls the C loop answers, each marked in flight, until the exec kills it. */
static void leader_calls(long try) {
    char kept[300], doomed[300];
    snprintf(kept, sizeof kept, "%s/kept", dir);
    snprintf(doomed, sizeof doomed, "%s/doomed-%ld", dir, try);
    int fd = open(kept, O_RDONLY | O_CLOEXEC);
    pthread_t t;
    if (fd < 0 || pthread_create(&t, NULL, exec_sibling, NULL) != 0)
        _exit(EXEC_FAILED);
    for (unsigned long i = 0;; i++) {
        atomic_store(&shared->in_call, 1);
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
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "after") == 0) { /* the exec'd program: says it ran */
        char marker[300];
        snprintf(marker, sizeof marker, "%s/ran-%s", argv[2], argv[3]);
        int fd = open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        return fd >= 0 && close(fd) == 0 ? RAN : NOT_MARKED;
    }
    attack_begin(argc, argv);
    if (argc != 4) {
        fprintf(stderr, "usage: exec_takeover TRIES SECONDS DIR\n");
        return 2;
    }
    self = argv[0], dir = argv[3];
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 3;
    long i = 0, ran = 0, in_call = 0, exec_failed = 0, other = 0;
    for (; attack_more(i); i++) {
        char doomed[300];
        snprintf(doomed, sizeof doomed, "%s/doomed-%ld", dir, i);
        int made = open(doomed, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (made >= 0)
            close(made);
        snprintf(try_number, sizeof try_number, "%ld", i);
        atomic_store(&shared->in_call, 0);
        pid_t child = fork();
        if (child == 0)
            leader_calls(i);
        int status;
        if (child < 0 || waitpid(child, &status, 0) != child)
            break;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        ran += code == RAN;
        exec_failed += code == EXEC_FAILED;
        other += code != RAN && code != EXEC_FAILED;
        in_call += code == RAN && atomic_load(&shared->in_call);
        if (code != RAN && code != EXEC_FAILED) /* which: a marker refused (13), a signal (-1) */
            fprintf(stderr, "try %ld: exit %d, signal %d\n", i, code, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    printf("{\"tries\": %ld, \"ran\": %ld, \"in_call\": %ld, \"calls\": %ld, \"exec_failed\": %ld, \"other\": %ld}\n",
           i, ran, in_call, atomic_load(&shared->calls), exec_failed, other);
    return 0;
}
