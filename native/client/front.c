/* hvfs, the native front (docs/control.md, "run_argv"; docs/performance.md, "A native
 * client"). It does the common case of `hvfs run` itself: this user's manager already
 * running, of this very hvfs, and stdio that is no terminal. The manager parses the
 * arguments with the Python client's own code; this program only carries them, the
 * working directory, the environment and the stdio, relays what is no pipe or socket
 * (as hvfs/sandbox/stdio.py), forwards signals and exits with the VM's status.
 *
 * With no manager running it starts one itself, as the Python client would (start.c).
 * For anything else, or any doubt, it execs the Python client with its argv unchanged
 * (`python -P -m hvfs ARGS`), having sent nothing but a hello, and read no input:
 * another command, a manager that did not start, a manager of other code, a state directory or socket
 * that is not private, a terminal, or the manager's {"fallback": WHY}.
 *
 * Built by setup.py with HVFS_PYTHON (the interpreter of this install), HVFS_PACKAGE
 * (its hvfs package directory) and HVFS_VERSION (hvfs.__version__), from which it
 * expects the manager's code id (hvfs/hypervisor/version.py). HVFS_FRONT=0 always
 * execs the Python client; HVFS_FRONT_TRACE tells which client ran (see trace). */
#include "front.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char **given_argv;

/* HVFS_FRONT_TRACE: 1 says on stderr which client does the run, and why; a path
 * appends it there (the tests count the runs the front did itself). */
void trace(const char *what, const char *why) {
    const char *to = getenv("HVFS_FRONT_TRACE");
    if (!to || !*to)
        return;
    if (strcmp(to, "1") == 0) {
        dprintf(2, "hvfs front: %s%s\n", what, why);
        return;
    }
    int fd = open(to, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dprintf(fd, "%s%s\n", what, why);
        close(fd);
    }
}
const char *state_dir;
char manager_socket[4200];

_Noreturn void python_client(const char *why) {
    trace("the Python client: ", why);
    int argc = 0;
    while (given_argv[argc])
        argc++;
    char **argv = calloc((size_t)argc + 4, sizeof *argv);
    if (!argv)
        exit(EXIT_HVFS);
    argv[0] = (char *)HVFS_PYTHON;
    argv[1] = (char *)"-P"; /* not hvfs from the working directory */
    argv[2] = (char *)"-m";
    argv[3] = (char *)"hvfs";
    for (int i = 1; i < argc; i++)
        argv[i + 3] = given_argv[i];
    restore_signals();
    execv(HVFS_PYTHON, argv);
    dprintf(2, "hvfs: cannot run the Python client %s: %s; run scripts/setup again\n", HVFS_PYTHON, strerror(errno));
    exit(EXIT_HVFS);
}

/* The state directory hvfs.state.state_directory names, made if missing, if it and the
 * directories on the way to it are private as hvfs.private_dirs asks; NULL otherwise (the Python
 * client then says what is wrong, or mends it). */
static char *state_directory(void) {
    static char path[4096];
    const char *chosen = getenv("HVFS_STATE_DIR");
    if (chosen && *chosen) {
        if (chosen[0] == '/')
            snprintf(path, sizeof path, "%s", chosen);
        else {
            char cwd[2048];
            if (!getcwd(cwd, sizeof cwd))
                return NULL;
            snprintf(path, sizeof path, "%s/%s", cwd, chosen);
        }
    } else if (geteuid() == 0) {
        snprintf(path, sizeof path, "/run/hvfs");
    } else {
        const char *runtime = getenv("XDG_RUNTIME_DIR");
        if (runtime && *runtime && access(runtime, W_OK) == 0)
            snprintf(path, sizeof path, "%s/hvfs", runtime);
        else
            snprintf(path, sizeof path, "/tmp/hvfs-%u", (unsigned)geteuid());
    }
    uid_t uid = geteuid();
    char prefix[4096];
    struct stat st;
    size_t len = strlen(path);
    for (size_t i = 1; i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        memcpy(prefix, path, i);
        prefix[i] = 0;
        /* Missing, beneath directories found safe: made as hvfs.private_dirs makes it (a
         * cold run in CI finds none); one made meanwhile by anyone is checked as any other. */
        if (i == len && lstat(prefix, &st) < 0 && errno == ENOENT)
            (void)mkdir(prefix, 0700);
        if (lstat(prefix, &st) < 0 || !S_ISDIR(st.st_mode)) /* a symbolic link: the Python client checks it */
            return NULL;
        if (i < len) {
            if (st.st_uid != 0 && st.st_uid != uid)
                return NULL;
            if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
                return NULL;
        }
    }
    if (st.st_uid != uid || (st.st_mode & 077)) /* 0755: the Python client tightens it, or refuses */
        return NULL;
    return path;
}

/* The pid manager.json names, or -1. */
long manager_pid(const char *state) {
    char path[4200], text[4096];
    snprintf(path, sizeof path, "%s/manager.json", state);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    const char *pid = json_get(text, "pid");
    if (!pid)
        return -1;
    char *end;
    long value = strtol(pid, &end, 10);
    return end == pid || value <= 0 ? -1 : value;
}

static int is_run(int argc, char **argv) { return argc >= 2 && strcmp(argv[1], "run") == 0; }

int main(int argc, char **argv) {
    given_argv = argv;
    const char *front = getenv("HVFS_FRONT");
    if (front && strcmp(front, "0") == 0)
        python_client("HVFS_FRONT=0");
    if (!is_run(argc, argv))
        python_client("not hvfs run");
    struct stdio_plan plan;
    if (plan_stdio(&plan) < 0)
        python_client("a terminal, a directory or a closed fd as stdio");
    const char *state = state_dir = state_directory();
    if (!state)
        python_client("the state directory is missing or not private");
    snprintf(manager_socket, sizeof manager_socket, "%s/manager.sock", state);
    long pid = manager_pid(state);
    if (pid < 0) {
        int sock = start_manager(state);
        if (sock < 0)
            python_client("no manager runs, and the one started did not answer as ours");
        return run(sock, argc, argv, &plan, 0);
    }
    int sock = manager_connect(manager_socket, pid);
    if (sock < 0)
        python_client("no manager of this user at its socket");
    return run(sock, argc, argv, &plan, 1); /* hello's check made with the request: one round trip */
}
