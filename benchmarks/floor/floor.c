/* The floor of a trapped open(): the least a seccomp user-notification supervisor can do.
 *
 * usage: floor continue|addfd|ordered sync|nosync pin|nopin PROGRAM [ARG...]
 *
 * It forks a child that sets NO_NEW_PRIVS, installs a filter sending openat to this
 * process (SECCOMP_RET_USER_NOTIF, arch-checked), hands the listener back over a unix
 * socket and execs PROGRAM (benchmarks/openbench.c, whose own microseconds per open are
 * what we report). Every openat of the child is answered by the parent with what any
 * correct supervisor must do at minimum: receive (NOTIF_RECV), read the path from the
 * child's memory, check the notification is still valid (NOTIF_ID_VALID), then either
 *   continue  let the kernel perform the call (SECCOMP_USER_NOTIF_FLAG_CONTINUE), or
 *   addfd     open the file itself and install it in the child with
 *             SECCOMP_IOCTL_NOTIF_ADDFD + SECCOMP_ADDFD_FLAG_SEND (answer in one step), or
 *   ordered   as addfd for a read-only open; a writable file is installed, our copy
 *             closed, and only then the call answered (NOTIF_SEND): what a supervisor must
 *             do so that the child's close is the file's last (with SEND our copy outlives
 *             the child's, and an exec of the file right after writing it fails with
 *             ETXTBSY). HVFS serves opens so (hvfs/intercept/driver.py).
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
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* Debian 12's kernel headers (6.1) predate these (6.6). */
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
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

enum answer { CONTINUE, ADDFD, ORDERED };

_Noreturn static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Runs in the child: from here on, every openat stops until the parent answers. */
static int install_filter(void) {
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
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS");
    int listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (listener < 0) die("seccomp(SECCOMP_SET_MODE_FILTER)");
    return listener;
}

static void send_fd(int sock, int fd) {
    char data = 0;
    struct iovec iov = {.iov_base = &data, .iov_len = 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) != 1) die("sendmsg(listener)");
}

static int receive_fd(int sock) {
    char data;
    struct iovec iov = {.iov_base = &data, .iov_len = 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) die("recvmsg(listener)");
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS) {
        fprintf(stderr, "floor: the child sent no listener\n");
        exit(1);
    }
    int fd;
    memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
    return fd;
}

/* Reads a NUL-terminated string from the child one page at a time, since the string may
 * end just before an unmapped page. Returns 0 or an errno. */
static int read_path(pid_t pid, unsigned long addr, char *buf, size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), done = 0;
    while (done < size) {
        size_t chunk = page - (addr + done) % page;
        if (chunk > size - done) chunk = size - done;
        struct iovec local = {.iov_base = buf + done, .iov_len = chunk};
        struct iovec remote = {.iov_base = (void *)(addr + done), .iov_len = chunk};
        ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (got <= 0) return got < 0 ? errno : EFAULT;
        if (memchr(buf + done, '\0', (size_t)got) != NULL) return 0;
        done += (size_t)got;
    }
    return ENAMETOOLONG;
}

/* Opens what the child asked for, relative to its cwd or directory fd where the path is. */
static int open_for(pid_t pid, int dirfd, const char *path, int flags, mode_t mode) {
    if (path[0] == '/') return open(path, flags | O_CLOEXEC, mode);
    char base[64];
    if (dirfd == AT_FDCWD)
        snprintf(base, sizeof base, "/proc/%d/cwd", pid);
    else
        snprintf(base, sizeof base, "/proc/%d/fd/%d", pid, dirfd);
    int dir = open(base, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return -1;
    int fd = openat(dir, path, flags | O_CLOEXEC, mode);
    int saved = errno;
    close(dir);
    errno = saved;
    return fd;
}

static void reply(int listener, struct seccomp_notif_resp *resp) {
    /* ENOENT: the child was interrupted by a signal or died; nothing waits for the answer. */
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp) != 0 && errno != ENOENT) die("NOTIF_SEND");
}

static void answer(int listener, const struct seccomp_notif *req, enum answer how) {
    char path[PATH_MAX];
    struct seccomp_notif_resp resp = {.id = req->id};
    int err = read_path(req->pid, req->data.args[1], path, sizeof path);
    /* The pid may have been reused between RECV and the read: only a still-valid id
     * proves the path came from the thread that is waiting. */
    __u64 id = req->id;
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) != 0) return;
    if (err != 0) {
        resp.error = -err;
        reply(listener, &resp);
        return;
    }
    if (how == CONTINUE) {
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        reply(listener, &resp);
        return;
    }
    int flags = (int)req->data.args[2];
    int fd = open_for(req->pid, (int)req->data.args[0], path, flags, (mode_t)req->data.args[3]);
    if (fd < 0) {
        resp.error = -errno;
        reply(listener, &resp);
        return;
    }
    int ordered = how == ORDERED && (flags & O_ACCMODE) != O_RDONLY;
    struct seccomp_notif_addfd addfd = {
        .id = req->id,
        .flags = ordered ? 0 : SECCOMP_ADDFD_FLAG_SEND,
        .srcfd = (__u32)fd,
        .newfd_flags = (__u32)(flags & O_CLOEXEC),
    };
    /* With SEND the ioctl installs the fd and answers the call with its number at once. */
    int number = ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
    if (number < 0 && errno != ENOENT) die("NOTIF_ADDFD");
    close(fd);
    if (ordered && number >= 0) {
        resp.val = number;
        reply(listener, &resp);
    }
}

static void serve(int listener, enum answer how) {
    struct seccomp_notif req;
    for (;;) {
        struct pollfd p = {.fd = listener, .events = POLLIN};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll(listener)");
        }
        /* RECV would block for ever once the last target has exited: POLLHUP says so. */
        if (!(p.revents & POLLIN)) return;
        memset(&req, 0, sizeof req); /* the kernel refuses (EINVAL) a struct that is not zeroed */
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
            if (errno == EINTR || errno == ENOENT) continue; /* the caller went away meanwhile */
            die("NOTIF_RECV");
        }
        answer(listener, &req, how);
    }
}

_Noreturn static void usage(const char *self) {
    fprintf(stderr, "usage: %s continue|addfd|ordered sync|nosync pin|nopin PROGRAM [ARG...]\n", self);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 5) usage(argv[0]);
    enum answer how;
    if (strcmp(argv[1], "continue") == 0)
        how = CONTINUE;
    else if (strcmp(argv[1], "addfd") == 0)
        how = ADDFD;
    else if (strcmp(argv[1], "ordered") == 0)
        how = ORDERED;
    else
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
    int sockets[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) die("socketpair");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(sockets[0]);
        int listener = install_filter();
        send_fd(sockets[1], listener);
        close(listener);
        close(sockets[1]);
        execvp(argv[4], argv + 4);
        die(argv[4]);
    }
    close(sockets[1]);
    int listener = receive_fd(sockets[0]);
    close(sockets[0]);
    if (sync_wake_up && ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) != 0) {
        /* The flag is passed by value, not by pointer. EINVAL: kernel older than 6.6. */
        perror("SECCOMP_IOCTL_NOTIF_SET_FLAGS(SYNC_WAKE_UP)");
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        return 3;
    }
    serve(listener, how);
    close(listener);
    int status;
    if (waitpid(child, &status, 0) != child) die("waitpid");
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}
