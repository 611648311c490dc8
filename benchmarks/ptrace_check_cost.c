/* What the ptrace driver's takeover checks cost (docs/ptrace.md, "Every resume of a leader"):
 * ns per PTRACE_GET_SYSCALL_INFO (at_call_stop, at_seccomp_stop) and per PTRACE_GETSIGINFO
 * (still_at) on a stopped tracee, the calls each resume now makes once more.
 *
 *   gcc -O2 -o /tmp/ptrace_check_cost benchmarks/ptrace_check_cost.c && /tmp/ptrace_check_cost 200000 7
 *
 * Prints, for each of ROUNDS rounds of CALLS calls each, both costs in ns (one JSON line).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PTRACE_GET_SYSCALL_INFO
#define PTRACE_GET_SYSCALL_INFO 0x420e
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 200000, rounds = argc > 2 ? atol(argv[2]) : 7;
    pid_t child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        _exit(0);
    }
    int status;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFSTOPPED(status))
        return 1;
    printf("{\"info_ns\": [");
    for (long r = 0; r < rounds; r++) {
        uint8_t info[128];
        double start = now();
        for (long i = 0; i < calls; i++)
            ptrace(PTRACE_GET_SYSCALL_INFO, child, (void *)sizeof info, info);
        printf("%s%.0f", r ? ", " : "", (now() - start) / calls);
    }
    printf("], \"siginfo_ns\": [");
    for (long r = 0; r < rounds; r++) {
        siginfo_t si;
        double start = now();
        for (long i = 0; i < calls; i++)
            ptrace(PTRACE_GETSIGINFO, child, 0, &si);
        printf("%s%.0f", r ? ", " : "", (now() - start) / calls);
    }
    printf("]}\n");
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    return 0;
}
