/* cputime: runs ARGV, waits for it, and prints on stderr the CPU its whole tree used (every
 * descendant waited for: user + system, in microseconds), as "cputime US". GNU time prints
 * seconds with two decimals, too coarse for a 5 ms find. Used by benchmarks/profile_cpu.py
 * inside each sandbox, so that the VM's own CPU is counted the same way under every runner. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static long long micros(struct timeval tv) { return (long long)tv.tv_sec * 1000000 + tv.tv_usec; }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cputime COMMAND [ARG...]\n");
        return 125;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("cputime: fork");
        return 125;
    }
    if (child == 0) {
        execvp(argv[1], argv + 1);
        perror("cputime: exec");
        _exit(127);
    }
    int status = 0;
    if (waitpid(child, &status, 0) < 0) {
        perror("cputime: waitpid");
        return 125;
    }
    struct rusage usage;
    getrusage(RUSAGE_CHILDREN, &usage);
    fprintf(stderr, "cputime %lld\n", micros(usage.ru_utime) + micros(usage.ru_stime));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
