/* Against a VM's pid 1, and against every process that still holds its memory (children
 * of pid 1 before they exec): ptrace, process_vm_readv, pidfd_getfd, /proc/PID/{mem,
 * environ}. Also looks for a secret the host gave hvfs in its environment, in every
 * process's environment and memory it can read.
 *
 * PROGRAM TRIES SECONDS SECRET
 * Report: tries, escapes (any of the above succeeding on pid 1, or on a process that was
 * not yet exec'd -- comm "hvfs-init" -- both before and after the attempt: exec changes
 * the comm, and never back), raced (a success on a process that exec'd meanwhile, which is
 * allowed), secret_found, preexec_seen (such processes seen at all), refused. */
#include "attack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static long escapes, raced, secret_found, preexec_seen, refused;
static const char *secret;

static int read_file(const char *path, char *buffer, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buffer, size - 1);
    close(fd);
    if (n < 0) return -1;
    buffer[n] = 0;
    return (int)n;
}

static int holds(const char *data, size_t size) {
    size_t length = strlen(secret);
    for (size_t i = 0; i + length <= size; i++)
        if (memcmp(data + i, secret, length) == 0) return 1;
    return 0;
}

/* Whether pid is a process that must stay out of reach: pid 1, or one not yet exec'd. */
static int protected_process(pid_t pid) {
    char path[64], stat[512];
    if (pid == 1) return 1;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (read_file(path, stat, sizeof stat) < 0) return 0;
    return strstr(stat, "(hvfs-init)") != NULL;
}

/* Every way in, on `pid`; how many worked. */
static long try_all(pid_t pid) {
    long worked = 0;
    char path[64], buffer[1 << 16];
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
        worked++;
        /* let go at once: a tracee's exit waits for its tracer */
        int status;
        if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0 && waitpid(pid, &status, __WALL) == pid)
            ptrace(PTRACE_DETACH, pid, 0, 0);
    }
    static const unsigned long addresses[] = {0x400000, 0x401000}; /* a static binary's text */
    for (size_t i = 0; i < sizeof addresses / sizeof *addresses; i++) {
        struct iovec local = {buffer, 4096}, remote = {(void *)addresses[i], 4096};
        ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n > 0) {
            worked++;
            if (holds(buffer, (size_t)n)) secret_found++;
        }
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd >= 0) {
        for (int fd = 0; fd < 8; fd++) {
            int got = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
            if (got >= 0) {
                worked++;
                close(got);
            }
        }
        close(pidfd);
    }
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int mem = open(path, O_RDONLY | O_CLOEXEC);
    if (mem >= 0) {
        worked++;
        close(mem);
    }
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    int n = read_file(path, buffer, sizeof buffer);
    if (n >= 0) worked++;
    if (n > 0 && holds(buffer, (size_t)n)) secret_found++;
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    n = read_file(path, buffer, sizeof buffer);
    if (n > 0 && holds(buffer, (size_t)n)) secret_found++;
    return worked;
}

static void attack(pid_t pid) {
    int before = protected_process(pid);
    if (before && pid != 1) preexec_seen++;
    long worked = try_all(pid);
    if (!before) return;
    if (worked == 0)
        refused++;
    else if (protected_process(pid))
        escapes += worked;
    else
        raced++;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    secret = argc > 3 ? argv[3] : "no secret given";
    long i;
    for (i = 0; attack_more(i); i++) {
        attack(1);
        DIR *proc = opendir("/proc");
        struct dirent *entry;
        while (proc && (entry = readdir(proc)) != NULL) {
            pid_t pid = (pid_t)atoi(entry->d_name);
            if (pid > 1 && pid != getpid()) attack(pid);
        }
        if (proc) closedir(proc);
    }
    printf("{\"tries\": %ld, \"escapes\": %ld, \"raced\": %ld, \"secret_found\": %ld, \"preexec_seen\": %ld, "
           "\"refused\": %ld}\n", i, escapes, raced, secret_found, preexec_seen, refused);
    return 0;
}
