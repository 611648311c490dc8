/* The shim: the launcher's life once pid 1 exists.
 *
 * A manager may die or be restarted (an upgrade) while its VMs run on. What a manager
 * holds that the kernel cannot give a new one is deposited here (MSG_DEPOSIT, fds with a
 * role each): the seccomp driver's listener and table of requests in flight ("driver:"
 * roles, hvfs.intercept.backend), the VM's writable view, the manager's end of pid 1's
 * channel. While they are here no pending request fails
 * (the listener stays open, so the kernel keeps the VM's trapped calls waiting) and pid 1
 * sees no end of its channel. A new manager connects to the shim's socket, proves to be
 * of the same user, and takes them (MSG_WITHDRAW → MSG_DEPOSITED); it then re-serves the
 * requests in flight whose notifications are still valid.
 *
 * Waiting is bounded: when no manager has come back T_WAIT_MS after the last one left,
 * the shim answers the requests in flight (those noted in the table, and any a manager
 * received and died before noting) and every new one with EIO, which a program
 * can handle, until a manager comes back; when none has come back after ten times that,
 * it ends the VM, which no one would ever serve again. When pid 1 exits, the shim writes its status
 * to the file "exit" beside its socket, tells the manager (MSG_VM_EXITED), and exits
 * with it once the manager has hung up, or after the same bound when none is there.
 */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_DEPOSIT 32
#define SLOT_SIZE 104 /* hvfs/intercept/inflight.py: a struct seccomp_notif first */
#define PROBE 256     /* hvfs/intercept/orphans.py: ids asked either side of the last one recorded */

struct shim {
    int link;   /* the manager's connection, -1 while there is none */
    int accept; /* the socket a new manager connects to */
    int signals;
    pid_t pid1;
    char dir[4096];
    char path[4096]; /* its socket, "" without one */
    int spare;       /* a warm spare no run has taken yet: it dies with its manager */
    int fds[MAX_DEPOSIT];
    char roles[MAX_DEPOSIT][32];
    int count;
    double lost_at; /* when the last manager left; 0 while one is linked */
    double wait;    /* seconds requests wait for a manager */
    int exited, code;
    int front; /* the run's client's pipe for the exit code (role "front"), -1 without one */
};

static int deposited(const struct shim *s, const char *role) {
    for (int i = 0; i < s->count; i++)
        if (strcmp(s->roles[i], role) == 0) return s->fds[i];
    return -1;
}

static void deposit(struct shim *s, const char *role, int fd) {
    for (int i = 0; i < s->count; i++)
        if (strcmp(s->roles[i], role) == 0) {
            close(s->fds[i]);
            s->fds[i] = fd;
            return;
        }
    if (s->count == MAX_DEPOSIT) {
        close(fd);
        return;
    }
    snprintf(s->roles[s->count], sizeof s->roles[s->count], "%s", role);
    s->fds[s->count++] = fd;
}

static void unlink_manager(struct shim *s) {
    if (s->link >= 0) close(s->link);
    s->link = -1;
    s->lost_at = now();
}

static void send_exited(struct shim *s) {
    if (s->link < 0) return;
    struct builder b;
    build_begin(&b, MSG_VM_EXITED);
    build_int(&b, T_CODE, s->code);
    build_send(s->link, &b, NULL, 0);
}

/* Pid 1's exit code straight to the run's client, which may then end before the manager's
 * bookkeeping of the exit (hvfs/hypervisor/front_exit.py). Only this process holds the
 * pipe's write end (pid 1 was forked before it came), and what it says is the VM's own
 * code, which the VM chooses anyway. Once, then closed: the client sees the end. */
static void tell_front(struct shim *s) {
    if (s->front < 0 || !s->exited) return;
    char text[16];
    int n = snprintf(text, sizeof text, "%d\n", s->code);
    (void)!write(s->front, text, (size_t)n);
    close(s->front);
    s->front = -1;
}

static void give_back(struct shim *s, int to) {
    struct builder b;
    build_begin(&b, MSG_DEPOSITED);
    for (int i = 0; i < s->count; i++) build_string(&b, T_ROLE, s->roles[i]);
    build_send(to, &b, s->fds, s->count);
}

/* A message on the manager's link (or a new manager's first). */
static void from_manager(struct shim *s, int from) {
    struct message m;
    if (msg_receive(from, &m) < 0 || m.size == 0) {
        if (m.data != NULL) msg_free(&m);
        if (from == s->link) unlink_manager(s);
        else close(from);
        return;
    }
    if (m.type == MSG_WITHDRAW) {
        if (from != s->link) { /* a new manager: it is the link from now on */
            if (s->link >= 0) close(s->link);
            s->link = from;
            s->lost_at = 0;
        }
        give_back(s, from);
        if (s->exited) send_exited(s);
    } else if (m.type == MSG_DEPOSIT) {
        /* A spare's state directory is renamed to the run's that takes it: its socket moved
         * with it, and the exit file goes there. */
        const char *moved = msg_string(&m, T_SHIM, 0);
        if (moved != NULL && s->path[0] && strlen(moved) < sizeof s->path) {
            snprintf(s->path, sizeof s->path, "%s", moved);
            snprintf(s->dir, sizeof s->dir, "%s", moved);
            char *slash = strrchr(s->dir, '/');
            if (slash != NULL) *slash = 0;
        }
        s->spare = 0;
        for (int i = 0; i < m.nfds; i++) {
            const char *role = msg_string(&m, T_ROLE, (size_t)i);
            if (role != NULL && strcmp(role, "front") == 0 && s->front < 0) s->front = m.fds[i]; /* not given back */
            else if (role != NULL) deposit(s, role, m.fds[i]);
            else close(m.fds[i]);
        }
        m.nfds = 0;
        tell_front(s); /* pid 1 may have ended before the pipe came */
    }
    for (int i = 0; i < m.nfds; i++) close(m.fds[i]);
    msg_free(&m);
}

/* Only a process of the manager's user may link: the same uid as ours, here root of the
 * VM's user namespace, which is how the manager's root appears in it. (The socket lies
 * in the manager's private state directory, out of any VM's view.) */
static void accept_manager(struct shim *s) {
    int fd = accept4(s->accept, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    struct ucred peer;
    socklen_t size = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) < 0 || peer.uid != getuid()) {
        close(fd);
        return;
    }
    from_manager(s, fd);
    if (fd != s->link) close(fd);
}

/* After the slots: the id of the last notification recorded. One a manager received and
 * died before recording lies near it, still pending, and no one can receive it again;
 * with no manager here and the slots answered, nothing else near it is pending. */
static void answer_orphans(int listener, uint8_t *table, off_t size) {
    off_t at = size / SLOT_SIZE * SLOT_SIZE;
    uint64_t last;
    if (size - at < (off_t)sizeof last) return;
    memcpy(&last, table + at, sizeof last);
    if (last == 0) return;
    for (int64_t delta = -PROBE; delta <= PROBE; delta++) {
        uint64_t id = last + (uint64_t)delta;
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) != 0) continue;
        struct seccomp_notif_resp r = {.id = id, .error = -EIO};
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &r);
    }
    memset(table + at, 0, sizeof last); /* answered: no need to ask again at each wake-up */
}

/* Past the bound: the requests the last manager had taken, and every new one, get EIO. */
static void answer_alone(struct shim *s) {
    int listener = deposited(s, "driver:listener"), table = deposited(s, "driver:inflight");
    if (listener < 0) return;
    struct stat st;
    if (table >= 0 && fstat(table, &st) == 0 && st.st_size >= SLOT_SIZE) {
        uint8_t *slots = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, table, 0);
        if (slots != MAP_FAILED) {
            for (off_t at = 0; at + SLOT_SIZE <= st.st_size; at += SLOT_SIZE) {
                struct seccomp_notif_resp r = {0};
                memcpy(&r.id, slots + at, sizeof r.id);
                if (r.id == 0) continue;
                r.error = -EIO;
                ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &r);
                memset(slots + at, 0, SLOT_SIZE);
            }
            answer_orphans(listener, slots, st.st_size);
            munmap(slots, (size_t)st.st_size);
        }
    }
    for (;;) {
        struct pollfd p = {listener, POLLIN, 0};
        if (poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN)) return;
        struct seccomp_notif n;
        memset(&n, 0, sizeof n);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0) return;
        struct seccomp_notif_resp r = {.id = n.id, .error = -EIO};
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &r);
    }
}

static void write_exit(struct shim *s) {
    char path[4200], temporary[4200], text[16];
    snprintf(path, sizeof path, "%s/exit", s->dir);
    snprintf(temporary, sizeof temporary, "%s/.exit", s->dir);
    /* Not O_TRUNC, on the exit's way to the manager: ext4 flushes a file truncated to nothing
     * as it is closed (auto_da_alloc). The manager keeps .exit emptied (hvfs.hypervisor.vmdirs);
     * anything longer, which a crash left, is cut after the write. */
    int fd = open(temporary, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    int n = snprintf(text, sizeof text, "%d\n", s->code);
    struct stat found;
    if (write(fd, text, (size_t)n) == n && fstat(fd, &found) == 0 && (found.st_size <= n || ftruncate(fd, n) == 0))
        rename(temporary, path);
    close(fd);
}

static int listen_at(const char *path) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) return -1;
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    unlink(path);
    mode_t old = umask(0177);
    int bound = bind(fd, (struct sockaddr *)&address, sizeof address);
    umask(old);
    if (fd < 0 || bound < 0 || listen(fd, 4) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

void shim(int link, const struct message *plan, pid_t pid1) {
    struct shim s;
    memset(&s, 0, sizeof s);
    s.link = link;
    s.pid1 = pid1;
    s.accept = -1;
    s.front = -1;
    s.wait = (double)msg_int(plan, T_WAIT_MS, 30000) / 1000.0;
    s.spare = msg_int(plan, T_SPARE, 0) != 0;
    const char *path = msg_string(plan, T_SHIM, 0);
    if (path != NULL) {
        snprintf(s.path, sizeof s.path, "%s", path);
        snprintf(s.dir, sizeof s.dir, "%s", path);
        char *slash = strrchr(s.dir, '/');
        if (slash != NULL) *slash = 0;
        s.accept = listen_at(path);
        if (s.accept < 0) send_error(link, "shim socket", errno, NULL); /* no manager after this one */
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    s.signals = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    for (;;) {
        int status;
        if (!s.exited && waitpid(s.pid1, &status, WNOHANG) == s.pid1) {
            s.exited = 1;
            s.code = exit_code(status);
            if (s.dir[0]) write_exit(&s); /* before the client hears: hvfs ps waits on it */
            tell_front(&s);
            send_exited(&s);
        }
        if (s.spare && s.link < 0) { /* its manager is gone before a run took it: nothing to keep */
            kill(s.pid1, SIGKILL);
            while (waitpid(s.pid1, &status, 0) < 0 && errno == EINTR) {
            }
            break;
        }
        double alone = s.link < 0 ? now() - s.lost_at : 0;
        if (s.exited && (s.accept < 0 || (s.link < 0 && alone >= s.wait))) break;
        int answering = s.link < 0 && alone >= s.wait && !s.exited;
        if (answering) answer_alone(&s);
        if (answering && alone >= 10 * s.wait) kill(s.pid1, SIGKILL); /* orphaned for good */
        struct pollfd fds[4];
        int n = 0;
        fds[n++] = (struct pollfd){s.signals, POLLIN, 0};
        if (s.accept >= 0) fds[n++] = (struct pollfd){s.accept, POLLIN, 0};
        int at_link = -1, at_listener = -1;
        if (s.link >= 0) {
            at_link = n;
            fds[n++] = (struct pollfd){s.link, POLLIN, 0};
        }
        int listener = deposited(&s, "driver:listener");
        if (answering && listener >= 0) {
            at_listener = n;
            fds[n++] = (struct pollfd){listener, POLLIN, 0};
        }
        int timeout = -1;
        if (s.link < 0 && alone < s.wait) timeout = (int)((s.wait - alone) * 1000) + 1;
        else if (s.link < 0 && !s.exited && alone < 10 * s.wait) timeout = (int)((10 * s.wait - alone) * 1000) + 1;
        if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) break;
        if (fds[0].revents) {
            struct signalfd_siginfo info;
            while (read(s.signals, &info, sizeof info) == sizeof info) {
            }
        }
        if (s.accept >= 0 && fds[1].revents) accept_manager(&s);
        if (at_link >= 0 && fds[at_link].revents && s.link == fds[at_link].fd) {
            from_manager(&s, s.link);
            if (s.exited && s.link < 0) break; /* the manager has heard the exit and left */
        }
        (void)at_listener;
    }
    if (s.accept >= 0 && s.path[0]) unlink(s.path);
    _exit(s.exited ? s.code : 125);
}
