/* Exec race against the scanner: a thread flips the path buffer between a clean and a
 * blocklisted program while the main thread executes it, again and again.
 *
 *   scan_exec_race TRIES SECONDS CLEAN BLOCKLISTED
 *
 * Each try is vfork + execve(buffer): the child shares the parent's memory, so the flipping
 * thread keeps rewriting the path while the manager checks it and the kernel reads it
 * again. Outcomes, from the child's wait status: "clean" (the clean program ran, exit 0),
 * "refused" (execve failed with EACCES, exit 126: the manager judged the blocklisted
 * path), "killed" (SIGKILL: the kernel loaded the blocklisted file after the clean one was
 * checked, and the exec tracer killed it before it ran), "escapes" (exit 42: the
 * blocklisted program ran), "other" (a torn path: ENOENT and the like).
 */
#include "attack.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile char path[256];
static const char *names[2];
static size_t lengths[2];
static volatile int stop;

/* Byte by byte, the NUL last: whoever reads the buffer meanwhile may get a torn mix of the
 * two, which names nothing (the manager then finds no file; the kernel, reading again, may). */
static void *flip(void *unused) {
    (void)unused;
    for (unsigned long i = 0; !stop; i++)
        for (size_t j = 0; j <= lengths[i & 1]; j++)
            path[j] = names[i & 1][j];
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc != 5 || strlen(argv[3]) >= sizeof path || strlen(argv[4]) >= sizeof path) {
        fprintf(stderr, "usage: %s TRIES SECONDS CLEAN BLOCKLISTED\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < 2; i++) {
        names[i] = argv[3 + i];
        lengths[i] = strlen(names[i]);
    }
    memcpy((char *)path, names[0], lengths[0] + 1);
    pthread_t flipper;
    pthread_create(&flipper, NULL, flip, NULL);
    char *child_argv[] = {"target", NULL};
    char *child_env[] = {NULL};
    long tries = 0, clean = 0, refused = 0, killed = 0, escapes = 0, other = 0;
    for (; attack_more(tries); tries++) {
        pid_t pid = vfork();
        if (pid == 0) {
            execve((const char *)path, child_argv, child_env);
            _exit(errno == EACCES ? 126 : 127);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) < 0) {
            other++;
            continue;
        }
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            killed++;
        else if (!WIFEXITED(status))
            other++;
        else if (WEXITSTATUS(status) == 0)
            clean++;
        else if (WEXITSTATUS(status) == 126)
            refused++;
        else if (WEXITSTATUS(status) == 42)
            escapes++;
        else
            other++;
    }
    stop = 1;
    pthread_join(flipper, NULL);
    printf("{\"tries\": %ld, \"clean\": %ld, \"refused\": %ld, \"killed\": %ld, \"escapes\": %ld, \"other\": %ld}\n",
           tries, clean, refused, killed, escapes, other);
    return 0;
}
