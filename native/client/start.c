/* A cold `hvfs run`: no manager runs, so the front starts one itself, exactly as
 * hvfs.hypervisor.client._start does (same command, environment and spawn lock), rather
 * than exec the Python client to do it: a cold run then pays the manager's start-up
 * alone, not the Python client's imports before it (docs/performance.md, "A cold start").
 *
 * Only in a state directory the front already found private (front.c); the manager it
 * then talks to is vouched for as any other (SO_PEERCRED, the pid manager.json names,
 * the hello's code id). Any doubt or failure hands over to the Python client, which
 * starts or reports as it always did. */
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
#include <sys/file.h>
#include <unistd.h>

#define START_TIMEOUT 20.0 /* seconds, as client.START_TIMEOUT */

/* client.PASSED: what of the environment decides where a manager's state lives and how
 * it runs; HVFS_* goes too. */
static const char *const PASSED[] = {"PATH=", "PYTHONPATH=", "HOME=", "LANG=", "LC_ALL=", "XDG_RUNTIME_DIR=",
                                     "XDG_CACHE_HOME=", "TMPDIR=", NULL};

static int passed(const char *entry) {
    if (strncmp(entry, "HVFS_", 5) == 0)
        return strncmp(entry, "HVFS_STATE_DIR=", 15) != 0; /* set below, to the one checked */
    for (const char *const *p = PASSED; *p; p++)
        if (strncmp(entry, *p, strlen(*p)) == 0 && strncmp(*p, "PYTHONPATH=", 11) != 0)
            return 1;
    return 0;
}

/* client._same_code: a manager that imports this very hvfs. An install in a
 * site-packages directory is found by the interpreter itself; a source tree (an
 * editable install) goes first on PYTHONPATH, unless it is there already. */
static char *pythonpath(void) {
    char here[4096];
    snprintf(here, sizeof here, "%s", HVFS_PACKAGE);
    char *slash = strrchr(here, '/');
    if (!slash || slash == here)
        return NULL;
    *slash = 0;
    const char *base = strrchr(here, '/') + 1;
    const char *given = getenv("PYTHONPATH");
    char *entry;
    if (strcmp(base, "site-packages") == 0 || strcmp(base, "dist-packages") == 0) {
        if (!given)
            return NULL;
        if (asprintf(&entry, "PYTHONPATH=%s", given) < 0)
            return NULL;
        return entry;
    }
    size_t n = strlen(here);
    if (given && strncmp(given, here, n) == 0 && (given[n] == ':' || given[n] == 0))
        return asprintf(&entry, "PYTHONPATH=%s", given) < 0 ? NULL : entry;
    if (asprintf(&entry, given && *given ? "PYTHONPATH=%s:%s" : "PYTHONPATH=%s", here, given) < 0)
        return NULL;
    return entry;
}

/* Spawn `python -P -m hvfs manager serve --ready-fd 3`, detached, and wait for its one
 * line; 0 once it says ready. */
static int spawn_manager(const char *state) {
    extern char **environ;
    size_t count = 0;
    while (environ[count])
        count++;
    char **env = calloc(count + 3, sizeof *env);
    if (!env)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < count; i++)
        if (passed(environ[i]))
            env[n++] = environ[i];
    char *state_entry = NULL, *path_entry = pythonpath();
    if (asprintf(&state_entry, "HVFS_STATE_DIR=%s", state) < 0)
        return -1;
    env[n++] = state_entry;
    if (path_entry)
        env[n++] = path_entry;
    env[n] = NULL;

    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return -1;
    char *argv[] = {(char *)HVFS_PYTHON, "-P", "-m", "hvfs", "manager", "serve", "--ready-fd", "3", NULL};
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
    for (int target = 0; target < 3; target++)
        posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_RDWR, 0);
    posix_spawn_file_actions_adddup2(&actions, ready[1], 3);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
    pid_t child;
    int failed = posix_spawn(&child, HVFS_PYTHON, &actions, &attr, argv, env);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    close(ready[1]);
    free(state_entry);
    free(path_entry);
    free(env);
    if (failed) {
        close(ready[0]);
        return -1;
    }
    char line[512];
    ssize_t got = 0;
    struct pollfd waiting = {.fd = ready[0], .events = POLLIN};
    int polled;
    do
        polled = poll(&waiting, 1, (int)(START_TIMEOUT * 1000));
    while (polled < 0 && errno == EINTR);
    if (polled > 0)
        do
            got = read(ready[0], line, sizeof line - 1);
        while (got < 0 && errno == EINTR);
    close(ready[0]);
    return got == 6 && memcmp(line, "ready\n", 6) == 0 ? 0 : -1; /* else the Python client reports why */
}

/* A connection to a manager that said hello as ours, or -1. */
static int reach(const char *state) {
    long pid = manager_pid(state);
    if (pid < 0)
        return -1;
    int sock = manager_connect(manager_socket, pid);
    if (sock < 0)
        return -1;
    if (hello(sock) < 0) {
        close(sock);
        return -1;
    }
    return sock;
}

int start_manager(const char *state) {
    char path[4200];
    snprintf(path, sizeof path, "%s/spawn.lock", state);
    int spawning = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (spawning < 0)
        return -1;
    int sock;
    while (flock(spawning, LOCK_EX) < 0)
        if (errno != EINTR) {
            close(spawning);
            return -1;
        }
    sock = reach(state); /* another client started one meanwhile */
    if (sock >= 0)
        trace("cold: ", "another client started the manager meanwhile");
    else if (spawn_manager(state) == 0 && (sock = reach(state)) >= 0)
        trace("cold: ", "the front started the manager");
    close(spawning);
    return sock;
}
