/* hvfs-init's life: the launcher, then pid 1 and its supervision loop (see init.h). */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAMESPACES (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP)
#define MAX_EXECS 1024

/* Signals pid 1 passes to the command. */
static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 125;
}

double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void noop(int sig) { (void)sig; }

/* The signals pid 1 handles back to their default: what a child does first (spawn.c), so
 * that a signal sent to it before its exec acts as it would on the command. */
void default_handled_signals(void) {
    for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++) signal(FORWARDED[i], SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
}

/* Signals arrive through a signalfd. Each still needs a handler: signals to a pid 1 whose
 * disposition is the default are dropped, even the manager's (only SIGKILL and SIGSTOP
 * from an ancestor namespace are forced). Every other signal gets its default here, at
 * boot (a spare's is before its run), not in each child between its fork and its exec:
 * what the manager left ignored (posix_spawn keeps SIG_IGN) must not reach the command,
 * and a child then has only the handled ones to reset (64 rt_sigaction calls through the
 * filter were ~50 µs of the command's fork → exec). A default disposition costs pid 1
 * nothing: the kernel never lets one kill or stop a pid namespace's init from inside. */
static int catch_signals(void) {
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = noop;
    for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++) {
        sigaddset(&set, FORWARDED[i]);
        sigaction(FORWARDED[i], &action, NULL);
    }
    sigaddset(&set, SIGCHLD);
    sigaction(SIGCHLD, &action, NULL);
    sigprocmask(SIG_BLOCK, &set, NULL);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

struct supervisor {
    int chan;
    int signals;
    pid_t command;
    pid_t exec_pids[MAX_EXECS];
    int64_t exec_ids[MAX_EXECS];
    int grace_ms;
    double manager_lost_at; /* 0 while the manager is there */
};

static void send_exec_exited(struct supervisor *s, int64_t id, int code) {
    if (s->manager_lost_at) return;
    struct builder b;
    build_begin(&b, MSG_EXEC_EXITED);
    build_int(&b, T_ID, id);
    build_int(&b, T_CODE, code);
    build_send(s->chan, &b, NULL, 0);
}

/* Reaps every exited child; returns the command's wait status once it is among them. */
static int reap(struct supervisor *s, int *command_status) {
    int status, found = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == s->command) {
            *command_status = status;
            found = 1;
            continue;
        }
        for (int i = 0; i < MAX_EXECS; i++)
            if (s->exec_pids[i] == pid) {
                s->exec_pids[i] = 0;
                send_exec_exited(s, s->exec_ids[i], exit_code(status));
                break;
            }
    }
    return found;
}

static void start_exec(struct supervisor *s, struct message *m) {
    struct program p;
    int64_t id = msg_int(m, T_ID, -1);
    int master = -1, slave = -1;
    struct builder b;
    if (program_from(m, &p) < 0) {
        send_exec_exited(s, id, 125);
        return;
    }
    if (msg_int(m, T_TTY, 0)) {
        if (open_terminal(s->chan, m, &master, &slave) < 0) {
            program_free(&p);
            send_exec_exited(s, id, 125);
            return;
        }
    } else if (m->nfds != 3) {
        program_free(&p);
        send_exec_exited(s, id, 125);
        return;
    }
    pid_t pid = spawn(&p, slave, slave >= 0 ? NULL : m->fds);
    program_free(&p);
    if (slave >= 0) close(slave);
    int slot = -1;
    for (int i = 0; i < MAX_EXECS && slot < 0; i++)
        if (s->exec_pids[i] == 0) slot = i;
    if (pid > 0 && slot >= 0) {
        s->exec_pids[slot] = pid;
        s->exec_ids[slot] = id;
    }
    build_begin(&b, MSG_EXEC_STARTED);
    build_int(&b, T_ID, id);
    build_int(&b, T_PID, pid);
    if (master >= 0) build_int(&b, T_FD, master); /* closed when the manager has TAKEN it */
    build_send(s->chan, &b, NULL, 0);
    if (pid < 0) send_exec_exited(s, id, 126);
}

static void from_manager(struct supervisor *s) {
    struct message m;
    if (msg_receive(s->chan, &m) < 0 || m.size == 0) {
        if (m.data != NULL) msg_free(&m);
        /* The manager is gone: every trapped call now fails with ENOSYS. End the VM
         * whole: SIGTERM to everyone, and after the grace period exiting kills the rest. */
        s->manager_lost_at = now();
        kill(-1, SIGTERM);
        return;
    }
    if (m.type == MSG_EXEC) start_exec(s, &m);
    if (m.type == MSG_TAKEN) {
        size_t length;
        const uint8_t *fd;
        for (size_t i = 0; (fd = msg_get(&m, T_FD, i, &length)) != NULL; i++) {
            int64_t number = 0;
            if (length == 8) memcpy(&number, fd, 8);
            if (number > VM_FD && number != s->signals) close((int)number);
        }
    }
    for (int i = 0; i < m.nfds; i++) close(m.fds[i]);
    msg_free(&m);
}

static int on_signals(struct supervisor *s, int *command_status) {
    struct signalfd_siginfo info;
    while (read(s->signals, &info, sizeof info) == sizeof info) {
        if (info.ssi_signo != SIGCHLD && !s->manager_lost_at) kill(s->command, (int)info.ssi_signo);
    }
    return reap(s, command_status);
}

__attribute__((noreturn)) static void supervise(struct supervisor *s) {
    int status = 0;
    for (;;) {
        struct pollfd fds[2] = {{s->signals, POLLIN, 0}, {s->chan, POLLIN, 0}};
        int timeout = -1;
        if (s->manager_lost_at) {
            double left = s->manager_lost_at + s->grace_ms / 1000.0 - now();
            if (left <= 0) _exit(128 + SIGKILL);
            timeout = (int)(left * 1000) + 1;
        }
        int n = poll(fds, s->manager_lost_at ? 1 : 2, timeout);
        if (n < 0 && errno != EINTR) _exit(125);
        if (n > 0 && fds[1].revents && !s->manager_lost_at) from_manager(s);
        if (on_signals(s, &status)) _exit(exit_code(status));
    }
}

/* A spare's stdio, sent with START: it becomes pid 1's own, which the command inherits. */
static int take_stdio(int chan, struct message *start) {
    if (start->nfds != 3) {
        send_error(chan, "stdio", EINVAL, "START brings no stdio");
        return -1;
    }
    for (int i = 0; i < 3; i++)
        if (dup2(start->fds[i], i) < 0) {
            send_error(chan, "stdio", errno, NULL);
            return -1;
        }
    for (int i = 0; i < 3; i++) close(start->fds[i]);
    start->nfds = 0;
    return 0;
}

__attribute__((noreturn)) static void vm_init(int chan, struct message *plan) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the launcher is the VM's handle: killing it ends the VM */
    /* A spare (T_SPARE) boots before any run chose it: what is the run's own (program,
     * stdio, hostname) comes with START, so nothing of a run is in it before. */
    int spare = msg_int(plan, T_SPARE, 0) != 0;
    struct program program;
    if (!spare && program_from(plan, &program) < 0) {
        send_error(chan, "plan", EINVAL, "the plan lacks a command");
        _exit(125);
    }
    int master = -1, slave = -1;
    if (enter_boot_view(chan, plan) < 0) _exit(125);
    /* Pid 1's own mount namespace dies with its last process, pid 1, and its teardown
     * (every mount of the boot view unmounted, an RCU grace period waited for) came
     * before the kernel told the shim of the exit: ~0.1-0.3 ms of sleep and a second wait
     * for a CPU on every run's way out. The manager holds it (taken as the listener is)
     * and lets it go once the exit is told, so the teardown comes after. */
    int mounts = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (mounts < 0) {
        send_error(chan, "mount namespace", errno, NULL);
        _exit(125);
    }
    if (msg_int(plan, T_TTY, 0) && open_terminal(chan, plan, &master, &slave) < 0) _exit(125);
    int listener = install_filter(chan, plan);
    if (listener < 0) _exit(125);
    int signals = catch_signals();
    if (signals < 0) {
        send_error(chan, "signals", errno, NULL);
        _exit(125);
    }
    struct builder b;
    build_begin(&b, MSG_READY);
    build_int(&b, T_TTY, master >= 0);
    build_int(&b, T_FD, listener);
    if (master >= 0) build_int(&b, T_FD, master);
    build_int(&b, T_MOUNTS, mounts);
    if (build_send(chan, &b, NULL, 0) < 0) _exit(125);
    struct message start;
    if (msg_receive(chan, &start) < 0 || start.type != MSG_START) _exit(125);
    close(listener); /* the manager took them before it sent START */
    close(mounts);
    if (master >= 0) close(master);
    if (spare && program_from(&start, &program) < 0) {
        send_error(chan, "start", EINVAL, "START lacks the command");
        _exit(125);
    }
    if (spare && take_stdio(chan, &start) < 0) _exit(125);
    if (apply_start(chan, &start) < 0) _exit(125);
    if (send_simple(chan, MSG_STARTED) < 0) _exit(125);
    struct supervisor s;
    memset(&s, 0, sizeof s);
    s.chan = chan;
    s.signals = signals;
    s.grace_ms = (int)msg_int(plan, T_GRACE_MS, 1000);
    s.command = spawn(&program, slave, NULL);
    if (s.command < 0) _exit(126);
    if (slave >= 0) close(slave);
    program_free(&program); /* a spare's points into START: freed after it */
    msg_free(&start);
    supervise(&s);
}

int main(void) {
    syscall(SYS_close_range, VM_FD + 1, ~0U, 0);
    prctl(PR_SET_DUMPABLE, 0); /* before anything of the VM exists; children inherit it */
    struct message plan, mapped;
    if (msg_receive(SHIM_FD, &plan) < 0 || plan.type != MSG_PLAN) return 125;
    if (unshare(NAMESPACES) < 0) {
        send_error(SHIM_FD, "VM namespaces", errno, NULL);
        return 125;
    }
    if (send_simple(SHIM_FD, MSG_UNSHARED) < 0) return 125;
    if (msg_receive(SHIM_FD, &mapped) < 0 || mapped.type != MSG_MAPPED) return 125;
    msg_free(&mapped);
    pid_t pid = fork();
    if (pid < 0) {
        send_error(SHIM_FD, "fork", errno, NULL);
        return 125;
    }
    if (pid == 0) {
        close(SHIM_FD);
        vm_init(VM_FD, &plan);
    }
    close(VM_FD);
    for (int fd = 0; fd < 3; fd++) close(fd); /* pid 1 and the command hold the VM's stdio */
    struct builder b;
    build_begin(&b, MSG_INIT);
    build_int(&b, T_PID, pid);
    build_send(SHIM_FD, &b, NULL, 0);
    shim(SHIM_FD, &plan, pid);
}
