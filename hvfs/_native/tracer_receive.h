/* The served open's receive in the tracee (tracer.c's receive(), the C half of stopped.py's
 * _receive): send the manager's file on the kept socket, make the stopped thread run a
 * recvmsg in place of its call, and check what it got. Included by tracer.c (after its
 * regs_t and scratch layout), which it would push past 500 lines.
 */
#ifndef HVFS_TRACER_RECEIVE_H
#define HVFS_TRACER_RECEIVE_H

static int
send_fd(int sock, const struct sockaddr_un *to, socklen_t to_len, int fd)
{
    char byte = 'f';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_name = (void *)to,
                         .msg_namelen = to_len,
                         .msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

#ifndef PTRACE_GET_SYSCALL_INFO
#define PTRACE_GET_SYSCALL_INFO 0x420e
#endif
#define SYSCALL_INFO_OP_SECCOMP 3 /* linux/ptrace.h PTRACE_SYSCALL_INFO_SECCOMP */

/* Whether pid is at a seccomp stop now (struct ptrace_syscall_info's op, its first byte): a
 * sibling's exec that took over the pid (the leader's) leaves it at its exec event (op 0). */
static int
at_seccomp_stop(pid_t pid)
{
    uint8_t info[128] = {0};
    return ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof info, info) > 0 && info[0] == SYSCALL_INFO_OP_SECCOMP;
}

/* Whether pid is at a stop of a call: its seccomp stop, or the entry or exit stop of a call
 * it was made to run from there (op 1 to 3); never at an exec event (op 0). */
static int
at_call_stop(pid_t pid)
{
    uint8_t info[128] = {0};
    return ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof info, info) > 0 && info[0] >= 1 &&
           info[0] <= SYSCALL_INFO_OP_SECCOMP;
}

struct outcome {
    long long result; /* the call's result: the received number, or a negative errno */
    int gone;         /* the thread died: its pid's next status is in ``status`` (-1: not seen) */
    int status;
    int signals[8]; /* the first signals that stopped it meanwhile (the driver delivers the first) */
    int nsignals;
    int resumed; /* answered and resumed here, the manager's file closed (resume_installed) */
};

/* Run the prepared ``regs`` (the recvmsg, in place of the call) to their syscall-exit stop,
 * as stopped.py's _run_to_exit: its other stops are resumed, their signals kept; the statuses
 * of other tracees, waited for as the main loop waits, are kept in ``met``. The registers
 * there are not read: receive reads them only where the cmsg does not check. An exec event
 * under pid is a sibling's exec that killed the thread (a leader) meanwhile and took over its
 * pid: never resumed here (the new program would run with its exec unseen), it is ``gone``
 * with that stop as its status, which the caller hands to Python as it hands an exit. */
static void
run_to_exit(pid_t pid, struct outcome *out)
{
    if (ptrace(PTRACE_SYSCALL, pid, 0, 0) < 0) {
        out->gone = 1;
        out->status = -1;
        return;
    }
    int bursting = 1; /* the recvmsg's exit stop follows at once: always polled first */
    for (;;) {
        int status;
        pid_t got = spun_wait(-1, &status, __WALL | __WNOTHREAD, &bursting);
        if (got < 0 && errno == EINTR)
            continue;
        if (got > 0 && got != pid) {
            met_keep(got, status);
            continue;
        }
        if (got < 0 || WIFEXITED(status) || WIFSIGNALED(status)) {
            out->gone = 1;
            out->status = got < 0 ? -1 : status;
            return;
        }
        int sig = WSTOPSIG(status), event = status >> 16;
        if (sig == SYSCALL_STOP)
            return;
        if (event == PTRACE_EVENT_EXEC) {
            out->gone = 1;
            out->status = status;
            return;
        }
        if (!event && sig != SIGTRAP) {
            if (out->nsignals < 8)
                out->signals[out->nsignals++] = sig;
        }
        /* that stop ended since (killed, taken over): gone, its next status comes from the wait */
        if (!still_at(pid, status) || ptrace(PTRACE_SYSCALL, pid, 0, 0) < 0) {
            out->gone = 1;
            out->status = -1;
            return;
        }
    }
}

static long
kcmp_file(pid_t pid, int theirs, int ours)
{
    static pid_t self;
    if (self == 0)
        self = getpid(); /* this manager's; a fork of it never runs a tracer loop */
    return syscall(SYS_kcmp, pid, self, KCMP_FILE, (unsigned long)theirs, (unsigned long)ours);
}

/* After a checked install: the manager's file closed here first (the thread's copy is then
 * the only one: a script it wrote and runs at once must not meet ETXTBSY because of the
 * manager), the registers as at the stop with the call returning the number, and the
 * thread resumed with the first signal that stopped it meanwhile. A failure other than
 * ESRCH (killed meanwhile: its exit comes next) never leaves it stopped with its call
 * half answered: it is killed, as the driver's _recover does. */
static void
resume_installed(pid_t pid, const regs_t *stopped, int fd, struct outcome *out)
{
    close(fd);
    out->resumed = 1; /* nothing left for the caller: the file closed, the thread resumed or gone */
    /* At the exit of the recvmsg run in its place (run_to_exit), or else killed: then a
     * sibling's exec may have taken over its pid since, and the registers and the resume
     * would be the new program's at its exec event, never seen by Python. Left as it is: its
     * status comes next from the wait. */
    if (!at_call_stop(pid))
        return;
    regs_t back = *stopped;
    back.rax = (unsigned long long)out->result;
    long signum = out->nsignals ? out->signals[0] : 0;
    if ((ptrace(PTRACE_SETREGS, pid, 0, &back) < 0 || ptrace(PTRACE_CONT, pid, 0, (void *)signum) < 0) &&
        errno != ESRCH) {
        kill(pid, SIGKILL);
        ptrace(PTRACE_CONT, pid, 0, 0);
    }
}

static void
receive(pid_t pid, const regs_t *stopped, int sock, const struct sockaddr_un *to, socklen_t to_len, int number,
        int fd, int flags, int check, struct outcome *out)
{
    /* Its number must still name the kept socket (kept.py's Kept.holds), or nothing is sent. */
    if (check && kcmp_file(pid, number, sock) != 0) {
        out->result = -ESTALE;
        return;
    }
    if (send_fd(sock, to, to_len, fd) < 0) {
        out->result = -EIO;
        return;
    }
    unsigned long long scratch = (stopped->rsp - RED_ZONE - SCRATCH) & ~0xFULL;
    unsigned char buffer[SCRATCH];
    memset(buffer, 0, sizeof buffer);
    struct msghdr header = {.msg_iov = (struct iovec *)(uintptr_t)(scratch + IOV_AT),
                            .msg_iovlen = 1,
                            .msg_control = (void *)(uintptr_t)(scratch + CMSG_AT),
                            .msg_controllen = CMSG_SPACE(sizeof(int))};
    struct iovec iov = {.iov_base = (void *)(uintptr_t)(scratch + BYTE_AT), .iov_len = 1};
    memcpy(buffer, &header, sizeof header);
    memcpy(buffer + IOV_AT, &iov, sizeof iov);
    struct iovec local = {.iov_base = buffer, .iov_len = sizeof buffer};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)scratch, .iov_len = sizeof buffer};
    if (process_vm_writev(pid, &local, 1, &remote, 1, 0) != (ssize_t)sizeof buffer) {
        out->result = -EIO;
        return;
    }
    regs_t regs = *stopped, after;
    regs.orig_rax = SYS_recvmsg;
    regs.rdi = (unsigned long long)number;
    regs.rsi = scratch;
    regs.rdx = (unsigned long long)flags;
    /* Still at its seccomp stop, as resume_installed checks at the exit: else killed, or its
     * pid a sibling's exec took over since the wait reported the stop; its status comes next. */
    if (!at_seccomp_stop(pid) || ptrace(PTRACE_SETREGS, pid, 0, &regs) < 0) {
        out->gone = 1;
        out->status = -1;
        return;
    }
    run_to_exit(pid, out);
    if (out->gone)
        return;
    /* The cmsg first: a number there that kcmp finds to be the manager's very file is where
     * the file was installed, in this thread's table, whatever the call returned; only
     * otherwise is its result read, to say why (EMFILE as the kernel said it, else EIO). */
    struct {
        uint64_t len;
        int32_t level, type, fd;
    } cmsg;
    local = (struct iovec){.iov_base = &cmsg, .iov_len = 20};
    remote = (struct iovec){.iov_base = (void *)(uintptr_t)(scratch + CMSG_AT), .iov_len = 20};
    int read_back = process_vm_readv(pid, &local, 1, &remote, 1, 0) == 20;
    int ours = read_back && cmsg.len >= 20 && cmsg.level == SOL_SOCKET && cmsg.type == SCM_RIGHTS;
    /* Without kcmp (``check`` false: never kept then), the number read back as before. */
    int checked = ours && (check ? cmsg.fd >= 0 && kcmp_file(pid, cmsg.fd, fd) == 0 : 1);
    if (checked && check) {
        out->result = cmsg.fd;
        resume_installed(pid, stopped, fd, out);
        return;
    }
    if (ptrace(PTRACE_GETREGS, pid, 0, &after) < 0) {
        out->gone = 1;
        out->status = -1;
        return;
    }
    long long received = (long long)after.rax;
    if (received == -EMFILE)
        out->result = received;
    else if (received < 0 || !checked)
        out->result = -EIO;
    else {
        out->result = cmsg.fd;
        resume_installed(pid, stopped, fd, out);
    }
}

#endif /* HVFS_TRACER_RECEIVE_H */
