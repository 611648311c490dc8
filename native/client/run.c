/* One `hvfs run`: run_argv with the stdio, then as hvfs/run.py does: relay, forward
 * signals, follow the VM to the next manager if its own goes away, exit with its status. */
#define _GNU_SOURCE
#include "front.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define CHUNK 65536
#define RECONNECT 20.0 /* seconds, as hvfs.client.session.RECONNECT */
#define FINISH 5.0     /* seconds the VM's output may take to end once it exited (Stdio.finish) */

static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define NFORWARDED (int)(sizeof FORWARDED / sizeof FORWARDED[0])
static struct sigaction before[NFORWARDED], pipe_before;
static int installed, signals[2] = {-1, -1};

static void noted(int signum) {
    unsigned char byte = (unsigned char)signum;
    int saved = errno;
    (void)!write(signals[1], &byte, 1);
    errno = saved;
}

/* Installed before the run is asked for, so that no signal is lost (run.SignalForwarder). */
static void install_signals(void) {
    if (pipe2(signals, O_CLOEXEC | O_NONBLOCK) < 0)
        python_client("no pipe for signals");
    struct sigaction action = {.sa_handler = noted, .sa_flags = SA_RESTART};
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < NFORWARDED; i++)
        sigaction(FORWARDED[i], &action, &before[i]);
    struct sigaction ignore = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &ignore, &pipe_before); /* as Python: EPIPE, not death, on output nobody reads */
    installed = 1;
}

void restore_signals(void) {
    if (!installed)
        return;
    for (int i = 0; i < NFORWARDED; i++)
        sigaction(FORWARDED[i], &before[i], NULL);
    sigaction(SIGPIPE, &pipe_before, NULL);
    installed = 0;
    unsigned char byte;
    if (read(signals[0], &byte, 1) == 1) /* one came before the run: as if to the Python client */
        raise(byte);
}

static void say(const char *prefix, const char *text) { dprintf(2, "%s%s\n", prefix, text); }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void add_view(struct buf *b, char *path, int *first);

static void build_request(struct buf *b, int argc, char **argv, int checked) {
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        python_client("no working directory");
    if (checked) {
        char code[CODE_ID];
        code_id(code, sizeof code);
        buf_raw(b, "{\"hvfs\": 1, \"op\": \"run_argv_checked\", \"code\": ");
        buf_str(b, code);
        buf_raw(b, ", \"argv\": [");
    } else
        buf_raw(b, "{\"hvfs\": 1, \"op\": \"run_argv\", \"argv\": [");
    for (int i = 1; i < argc; i++) {
        if (i > 1)
            buf_raw(b, ", ");
        buf_str(b, argv[i]);
    }
    /* The exit code from the VM's shim, if the manager offers it (hvfs/hypervisor/front_exit.py). */
    buf_raw(b, "], \"exit_fd\": true, \"cwd\": ");
    buf_str(b, cwd);
    /* What it sees at the paths every run names, ahead: the manager then asks for no
     * others' (``stat``) unless the run names more. */
    buf_raw(b, ", \"views\": [");
    int first_view = 1;
    char root[] = "/";
    add_view(b, cwd, &first_view);
    add_view(b, root, &first_view);
    buf_raw(b, "], \"env\": {");
    int first = 1;
    for (char **entry = environ; *entry; entry++) {
        const char *equals = strchr(*entry, '=');
        if (!equals || equals == *entry)
            continue;
        char key[4096];
        size_t n = (size_t)(equals - *entry);
        if (n >= sizeof key) {
            b->failed = 1;
            return;
        }
        memcpy(key, *entry, n);
        key[n] = 0;
        buf_raw(b, first ? "" : ", ");
        first = 0;
        buf_str(b, key);
        buf_raw(b, ": ");
        buf_str(b, equals + 1);
    }
    buf_raw(b, "}}");
}

/* [PATH, DEV, INO] of what this process sees at ``path`` (cut to its nearest existing
 * parent), as hvfs.hypervisor.views.seen; nothing when even "/" cannot be seen. */
static void add_view(struct buf *b, char *path, int *first) {
    struct stat st;
    while (stat(path, &st) < 0) {
        char *slash = strrchr(path, '/');
        if (!slash || (slash == path && path[1] == 0))
            break;
        slash == path ? (void)(path[1] = 0) : (void)(*slash = 0);
    }
    if (stat(path, &st) < 0)
        return;
    buf_raw(b, *first ? "[" : ", [");
    *first = 0;
    buf_str(b, path);
    buf_raw(b, ", ");
    buf_long(b, (long long)st.st_dev);
    buf_raw(b, ", ");
    buf_long(b, (long long)st.st_ino);
    buf_raw(b, "]");
}

/* What this process sees at each path the manager names. */
static int answer_views(int sock, const char *paths) {
    struct buf b = {0};
    buf_raw(&b, "{\"hvfs\": 1, \"op\": \"run_views\", \"views\": [");
    int first = 1;
    static char path[4096];
    for (const char *p = json_first(paths); p; p = json_next(p)) {
        if (json_string(p, path, sizeof path) < 0)
            return -1;
        add_view(&b, path, &first);
    }
    buf_raw(&b, "]}");
    int sent = send_message(sock, &b, NULL, 0);
    free(b.data);
    return sent;
}

/* The audit file the manager names, opened here as the user who ran hvfs (the manager,
 * root in its user namespace, could open what the user may not), as the Python client's
 * manager opens it (hvfs.services.audit.AuditLog): its fd, or the errno, to the manager. */
static int answer_open(int sock, const char *value) {
    static char path[4096];
    if (json_string(value, path, sizeof path) < 0)
        return -1;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    struct buf b = {0};
    buf_raw(&b, "{\"hvfs\": 1, \"op\": \"run_opened\"");
    if (fd < 0) {
        buf_raw(&b, ", \"errno\": ");
        buf_long(&b, errno);
    }
    buf_raw(&b, "}");
    int sent = send_message(sock, &b, fd < 0 ? NULL : &fd, fd < 0 ? 0 : 1);
    if (fd >= 0)
        close(fd);
    free(b.data);
    return sent;
}

/* The manager serving the VM went away (killed, or replaced): `hvfs manager status`
 * starts the next one when VMs were left (docs/control.md); follow the VM there. */
static int reattach(const char *gid, char *msg) {
    double deadline = now() + RECONNECT;
    while (now() < deadline) {
        char *status[] = {(char *)HVFS_PYTHON, (char *)"-P", (char *)"-m", (char *)"hvfs", (char *)"manager",
                          (char *)"status", NULL};
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        for (int fd = 0; fd < 3; fd++)
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_RDWR, 0);
        pid_t child;
        if (posix_spawn(&child, HVFS_PYTHON, &actions, NULL, status, environ) == 0)
            while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
                ;
        posix_spawn_file_actions_destroy(&actions);
        int sock = manager_connect(manager_socket, manager_pid(state_dir));
        if (sock >= 0 && hello(sock) == 0) {
            struct buf b = {0};
            buf_raw(&b, "{\"hvfs\": 1, \"op\": \"attach\", \"gid\": ");
            buf_str(&b, gid);
            buf_raw(&b, "}");
            int sent = send_message(sock, &b, NULL, 0);
            free(b.data);
            if (sent == 0 && receive_message(sock, msg) > 0) {
                char error[4096];
                if (json_string(json_get(msg, "error"), error, sizeof error) == 0) {
                    say("hvfs: the VM was lost with its manager: ", error);
                    exit(EXIT_HVFS);
                }
                return sock;
            }
        }
        if (sock >= 0)
            close(sock);
        usleep(100000);
    }
    say("hvfs: ", "the manager went away and no other took the VM back");
    exit(EXIT_HVFS);
}

static void forward(int sock, const char *gid, const char *vm) {
    unsigned char byte;
    while (read(signals[0], &byte, 1) == 1) {
        struct buf b = {0};
        buf_raw(&b, "{\"hvfs\": 1, \"op\": \"signal\", \"gid\": ");
        buf_str(&b, gid);
        buf_raw(&b, ", \"vm\": ");
        buf_str(&b, vm);
        buf_raw(&b, ", \"signal\": ");
        buf_long(&b, byte);
        buf_raw(&b, "}");
        send_message(sock, &b, NULL, 0); /* a manager being replaced: the next one hears the next */
        free(b.data);
    }
}

static int write_all(int fd, const char *data, size_t n) {
    while (n > 0) {
        ssize_t wrote = write(fd, data, n);
        if (wrote < 0 && errno == EINTR)
            continue;
        if (wrote <= 0)
            return -1;
        data += wrote;
        n -= (size_t)wrote;
    }
    return 0;
}

/* One step of the relay of an output pipe to ``target``: -1 once it ended. */
static int pass_output(int source, int target, char *chunk) {
    ssize_t got = read(source, chunk, CHUNK);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return source;
    if (got <= 0 || write_all(target, chunk, (size_t)got) < 0) {
        close(source); /* the VM sees the end, or EPIPE on output nobody reads any more */
        return -1;
    }
    return source;
}

/* The VM's exit code as its shim wrote it, or -1 (and the pipe closed) when the shim ended
 * without writing it: the manager tells it then. */
static long exit_told(int *fd) {
    char text[16];
    ssize_t got;
    do
        got = read(*fd, text, sizeof text - 1);
    while (got < 0 && errno == EINTR);
    close(*fd);
    *fd = -1;
    if (got <= 0)
        return -1;
    text[got] = 0;
    char *end;
    long code = strtol(text, &end, 10);
    return end == text || *end != '\n' || code < 0 || code > 255 ? -1 : code;
}

/* Whatever the manager tells before the VM started; the reply that ends the wait.
 * checked: the request was run_argv_checked, which a manager older than it does not know. */
static void started(int sock, char *msg, char *gid, char *vm, long *code, int checked, int *exit_fd) {
    char text[8192];
    for (;;) {
        int fd = -1;
        ssize_t got = receive_message_fd(sock, msg, &fd);
        if (fd >= 0 && (got <= 0 || !json_get(msg, "exit_fd") || !json_get(msg, "started"))) {
            close(fd);
            fd = -1;
        }
        if (got <= 0) {
            say("hvfs: ", "the manager went away while starting the VM; see its log (hvfs manager status)");
            exit(EXIT_HVFS);
        }
        const char *value;
        if ((value = json_get(msg, "fallback"))) {
            json_string(value, text, sizeof text);
            restore_signals();
            python_client(text);
        }
        if ((value = json_get(msg, "stat"))) {
            if (answer_views(sock, value) < 0) {
                restore_signals();
                python_client("cannot say what it sees");
            }
            continue;
        }
        if ((value = json_get(msg, "open"))) {
            if (answer_open(sock, value) < 0) {
                restore_signals();
                python_client("cannot answer the manager");
            }
            continue;
        }
        if (json_string(json_get(msg, "error"), text, sizeof text) == 0) {
            if (checked && strncmp(text, "unknown operation", 17) == 0) {
                restore_signals(); /* a manager of older code: it did nothing */
                python_client("the manager runs other code");
            }
            say("hvfs: ", text);
            exit(EXIT_HVFS);
        }
        if (json_string(json_get(msg, "stderr"), text, sizeof text) == 0) {
            say("", text);
            continue;
        }
        if (json_get(msg, "log"))
            continue;
        if (json_get(msg, "exited")) { /* a VM that ended as it started */
            const char *c = json_get(msg, "code");
            *code = c ? strtol(c, NULL, 10) : EXIT_HVFS;
            continue;
        }
        if (json_string(json_get(msg, "started"), vm, 4096) == 0 &&
            json_string(json_get(msg, "gid"), gid, 4096) == 0) {
            *exit_fd = fd;
            return;
        }
        if (fd >= 0)
            close(fd);
    }
}

int run(int sock, int argc, char **argv, struct stdio_plan *plan, int checked) {
    char *msg = malloc(MAX_MESSAGE + 1), *chunk = malloc(CHUNK), *input = malloc(CHUNK);
    static char gid[4096], vm[4096];
    struct buf request = {0};
    if (!msg || !chunk || !input)
        python_client("no memory");
    build_request(&request, argc, argv, checked);
    if (request.failed)
        python_client("arguments or environment too long, or not UTF-8");
    install_signals();
    if (send_message(sock, &request, plan->vm, 3) < 0) {
        restore_signals();
        python_client("the manager took no run_argv");
    }
    free(request.data);
    long code = -1;
    int exit_fd = -1; /* the shim's word of the VM's exit code, or -1 */
    started(sock, msg, gid, vm, &code, checked, &exit_fd);
    trace("native: ", gid);
    handed_over(plan);
    int in_sink = plan->relay[0], out[3] = {-1, plan->relay[1], plan->relay[2]};
    size_t pending = 0, offset = 0;
    int in_open = in_sink >= 0;
    double finish = 0;
    for (;;) {
        if (code >= 0 && finish == 0)
            finish = now() + FINISH;
        if (code >= 0 && ((out[1] < 0 && out[2] < 0) || now() > finish))
            break;
        struct pollfd fds[7];
        int n = 0, at_sock = -1, at_signals = -1, at_in = -1, at_sink = -1, at_out[3] = {-1, -1, -1}, at_exit = -1;
        if (code < 0) {
            fds[at_sock = n++] = (struct pollfd){.fd = sock, .events = POLLIN};
            if (exit_fd >= 0)
                fds[at_exit = n++] = (struct pollfd){.fd = exit_fd, .events = POLLIN};
            fds[at_signals = n++] = (struct pollfd){.fd = signals[0], .events = POLLIN};
            if (in_open && pending == 0)
                fds[at_in = n++] = (struct pollfd){.fd = 0, .events = POLLIN};
            if (in_sink >= 0 && pending > 0)
                fds[at_sink = n++] = (struct pollfd){.fd = in_sink, .events = POLLOUT};
        }
        for (int fd = 1; fd < 3; fd++)
            if (out[fd] >= 0)
                fds[at_out[fd] = n++] = (struct pollfd){.fd = out[fd], .events = POLLIN};
        int timeout = code >= 0 ? (int)((finish - now()) * 1000) + 1 : -1;
        if (poll(fds, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (at_signals >= 0 && fds[at_signals].revents)
            forward(sock, gid, vm);
        if (at_sock >= 0 && fds[at_sock].revents) {
            if (receive_message(sock, msg) <= 0) {
                close(sock);
                sock = reattach(gid, msg);
                continue;
            }
            char text[8192];
            if (json_get(msg, "exited")) {
                const char *c = json_get(msg, "code");
                code = c ? strtol(c, NULL, 10) : EXIT_HVFS;
            } else if (json_string(json_get(msg, "stderr"), text, sizeof text) == 0)
                say("", text);
        }
        if (at_exit >= 0 && fds[at_exit].revents)
            code = exit_told(&exit_fd);
        if (at_in >= 0 && fds[at_in].revents) {
            ssize_t got = read(0, input, CHUNK);
            if (got > 0) {
                pending = (size_t)got;
                offset = 0;
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                in_open = 0;
                close(in_sink); /* the VM sees the end of its input */
                in_sink = -1;
            }
        }
        if (at_sink >= 0 && fds[at_sink].revents) {
            ssize_t wrote = write(in_sink, input + offset, pending);
            if (wrote > 0) {
                offset += (size_t)wrote;
                pending -= (size_t)wrote;
            } else if (wrote < 0 && errno != EAGAIN && errno != EINTR) {
                in_open = 0, pending = 0;
                close(in_sink);
                in_sink = -1;
            }
        }
        for (int fd = 1; fd < 3; fd++)
            if (at_out[fd] >= 0 && fds[at_out[fd]].revents)
                out[fd] = pass_output(out[fd], fd, chunk);
    }
    if (exit_fd >= 0)
        close(exit_fd);
    close(sock);
    return (int)code;
}
