/* The floor of a trapped call: the least a seccomp user-notification supervisor can do.
 *
 * usage: floor continue|addfd|ordered|strict:FILTER sync|nosync pin|nopin PROGRAM [ARG...]
 *
 * It forks a child that sets NO_NEW_PRIVS, installs a filter sending calls to this process
 * (SECCOMP_RET_USER_NOTIF, arch-checked), hands the listener back (this process takes it
 * with pidfd_getfd: a strict filter traps the child's sendmsg) and execs PROGRAM
 * (benchmarks/openbench.c, whose own microseconds per open are what we report, or a
 * workload). With continue, addfd and ordered the filter traps openat alone, and every
 * openat of the child is answered with what any correct supervisor must do at minimum:
 * receive (NOTIF_RECV), read the path from the child's memory, check the notification is
 * still valid (NOTIF_ID_VALID), then either
 *   continue  let the kernel perform the call (SECCOMP_USER_NOTIF_FLAG_CONTINUE), or
 *   addfd     open the file itself and install it in the child with
 *             SECCOMP_IOCTL_NOTIF_ADDFD + SECCOMP_ADDFD_FLAG_SEND (answer in one step), or
 *   ordered   as addfd for a read-only open; a writable file is installed, our copy
 *             closed, and only then the call answered (NOTIF_SEND): what a supervisor must
 *             do so that the child's close is the file's last (with SEND our copy outlives
 *             the child's, and an exec of the file right after writing it fails with
 *             ETXTBSY). HVFS serves opens so (hvfs/intercept/driver.py).
 * strict:FILTER loads the BPF program in the file FILTER instead (HVFS's --strict one, as
 * benchmarks/fixtures.py writes it) and serves what it traps as strict.h says.
 * sync sets SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (kernel 6.6+), which lets the woken side
 * run on the waker's CPU; pin puts supervisor and child on the CPU the supervisor started
 * on. What HVFS adds on top of this (decoding in Python, the manager, its threads) is its
 * own overhead. Exit status: the child's; 3 when the kernel lacks a requested feature.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "open.h"
#include "strict.h"

/* Debian 12's kernel headers (6.1) predate these (6.6). */
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "floor supports x86_64 and aarch64"
#endif

#define STRICT_PREFIX "strict:"
#define MAX_PROGRAM 4096 /* BPF_MAXINSNS */

/* What the filter traps: openat alone, or a program read from a file (strict). */
struct program {
    struct sock_filter code[MAX_PROGRAM];
    unsigned short length;
    int strict;
};

static void openat_program(struct program *p) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        /* x32 calls carry the x86_64 arch value with this bit set: refuse them. */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    memcpy(p->code, code, sizeof code);
    p->length = sizeof code / sizeof code[0];
    p->strict = 0;
}

/* Reads a program of struct sock_filter from FILE; exits 2 with one line when it is none. */
static void read_program(const char *file, struct program *p) {
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "floor: cannot open the filter %s: %s; benchmarks/fixtures.py writes it\n", file,
                strerror(errno));
        exit(2);
    }
    ssize_t got = read(fd, p->code, sizeof p->code);
    close(fd);
    if (got <= 0 || got % (ssize_t)sizeof(struct sock_filter) != 0) {
        fprintf(stderr, "floor: %s holds no BPF program (struct sock_filter[])\n", file);
        exit(2);
    }
    p->length = (unsigned short)(got / (ssize_t)sizeof(struct sock_filter));
    p->strict = 1;
}

/* Runs in the child: from here on, every trapped call stops until the parent answers. A
 * strict program is loaded as hvfs-init loads it (native/init/boot.c install_filter). */
static int install_filter(const struct program *p) {
    struct sock_fprog prog = {.len = p->length, .filter = (struct sock_filter *)p->code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS");
    unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | (p->strict ? SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV : 0);
    long listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (listener < 0 && errno == EINVAL && p->strict) /* before 5.19 */
        listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (listener < 0) die("seccomp(SECCOMP_SET_MODE_FILTER)");
    return (int)listener;
}

/* Both sides of the hand-over on a pipe pair: the child writes its listener's number and
 * keeps it open until the parent, having duplicated it (pidfd_getfd), says so. write and
 * read are trapped by no filter; sendmsg is by the strict one. */
static void hand_over(int to_parent, int from_parent, int listener) {
    char done;
    if (write(to_parent, &listener, sizeof listener) != sizeof listener) die("write(listener)");
    if (read(from_parent, &done, 1) != 1) _exit(1); /* the parent failed, and said why */
}

static int take_listener(pid_t child, int from_child, int to_child) {
    int number;
    if (read(from_child, &number, sizeof number) != sizeof number) {
        fprintf(stderr, "floor: the child sent no listener\n");
        exit(1);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
    if (pidfd < 0) die("pidfd_open");
    int listener = (int)syscall(SYS_pidfd_getfd, pidfd, number, 0);
    if (listener < 0) die("pidfd_getfd(listener)");
    close(pidfd);
    if (write(to_child, "", 1) != 1) die("write(child)");
    return listener;
}

static void serve(int listener, const struct program *p, enum answer how) {
    struct seccomp_notif req;
    for (;;) {
        struct pollfd poller = {.fd = listener, .events = POLLIN};
        if (poll(&poller, 1, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll(listener)");
        }
        /* RECV would block for ever once the last target has exited: POLLHUP says so. */
        if (!(poller.revents & POLLIN)) return;
        memset(&req, 0, sizeof req); /* the kernel refuses (EINVAL) a struct that is not zeroed */
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
            if (errno == EINTR || errno == ENOENT) continue; /* the caller went away meanwhile */
            die("NOTIF_RECV");
        }
        if (p->strict)
            answer_strict(listener, &req);
        else
            answer_open(listener, &req, (int)req.data.args[0], req.data.args[1], (int)req.data.args[2],
                        (mode_t)req.data.args[3], how, 0);
    }
}

_Noreturn static void usage(const char *self) {
    fprintf(stderr, "usage: %s continue|addfd|ordered|strict:FILTER sync|nosync pin|nopin PROGRAM [ARG...]\n", self);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 5) usage(argv[0]);
    static struct program program;
    enum answer how = ORDERED;
    openat_program(&program);
    if (strcmp(argv[1], "continue") == 0)
        how = CONTINUE;
    else if (strcmp(argv[1], "addfd") == 0)
        how = ADDFD;
    else if (strncmp(argv[1], STRICT_PREFIX, strlen(STRICT_PREFIX)) == 0)
        read_program(argv[1] + strlen(STRICT_PREFIX), &program);
    else if (strcmp(argv[1], "ordered") != 0)
        usage(argv[0]);
    int sync_wake_up = strcmp(argv[2], "sync") == 0;
    int pin = strcmp(argv[3], "pin") == 0;

    if (pin) {
        /* Set before fork, so that the child inherits the same single CPU. */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(sched_getcpu(), &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
    }
    int up[2], down[2];
    if (pipe2(up, O_CLOEXEC) != 0 || pipe2(down, O_CLOEXEC) != 0) die("pipe2");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(up[0]);
        close(down[1]);
        int listener = install_filter(&program);
        hand_over(up[1], down[0], listener);
        close(listener);
        execvp(argv[4], argv + 4);
        die(argv[4]);
    }
    close(up[1]);
    close(down[0]);
    int listener = take_listener(child, up[0], down[1]);
    close(up[0]);
    close(down[1]);
    if (sync_wake_up && ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) != 0) {
        /* The flag is passed by value, not by pointer. EINVAL: kernel older than 6.6. */
        perror("SECCOMP_IOCTL_NOTIF_SET_FLAGS(SYNC_WAKE_UP)");
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        return 3;
    }
    serve(listener, &program, how);
    close(listener);
    if (program.strict) report_strict_counts();
    int status;
    if (waitpid(child, &status, 0) != child) die("waitpid");
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}
