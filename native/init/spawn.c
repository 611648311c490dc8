/* Starting a program inside the VM: the command, or a process of `hvfs exec`. The child
 * inherits pid 1's seccomp filter; it stays non-dumpable until it execs, so that nothing
 * in the VM can read it while it still holds pid 1's memory. Exit 126 when the program
 * cannot be run and 127 when it is not found, as docker does. */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#define DEFAULT_PATH "/bin:/usr/bin" /* what Python's os.execvpe falls back to */
#define MAX_GROUPS 256

int program_from(const struct message *m, struct program *p) {
    memset(p, 0, sizeof *p);
    p->argv = msg_strings(m, T_ARG);
    p->env = msg_strings(m, T_ENV);
    p->workdir = msg_string(m, T_WORKDIR, 0);
    p->user = msg_string(m, T_USER, 0);
    p->home_set = msg_int(m, T_HOME_SET, 0) != 0;
    if (p->argv == NULL || p->argv[0] == NULL || p->env == NULL) {
        program_free(p);
        return -1;
    }
    if (p->workdir == NULL) p->workdir = "/";
    return 0;
}

void program_free(struct program *p) {
    free(p->argv);
    free(p->env);
    p->argv = p->env = NULL;
}

__attribute__((noreturn, format(printf, 2, 3))) static void fail(int code, const char *format, ...) {
    char text[4200];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(text, sizeof text, format, args);
    va_end(args);
    if (n > (int)sizeof text - 2) n = (int)sizeof text - 2;
    text[n] = '\n';
    if (write(2, "hvfs: ", 6) >= 0 && write(2, text, (size_t)n + 1) >= 0) {}
    _exit(code);
}

static int all_digits(const char *s) {
    if (*s == 0) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* The fields of each entry of a colon-separated file, one entry per call: `fields` gets
 * pointers into `line`; returns how many, or -1 at the end. Comment and blank lines skip. */
static int next_entry(FILE *f, char *line, size_t size, char **fields, int most) {
    while (fgets(line, (int)size, f) != NULL) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] == 0 || line[0] == '#') continue;
        int n = 0;
        char *at = line;
        while (n < most) {
            fields[n++] = at;
            char *colon = strchr(at, ':');
            if (colon == NULL) break;
            *colon = 0;
            at = colon + 1;
        }
        return n;
    }
    return -1;
}

struct user {
    uid_t uid;
    gid_t gid;
    gid_t groups[MAX_GROUPS];
    int ngroups;
    char home[4096];
};

static int member_of(const char *list, const char *name) {
    size_t length = strlen(name);
    for (const char *at = list; *at;) {
        const char *comma = strchr(at, ',');
        size_t item = comma ? (size_t)(comma - at) : strlen(at);
        if (item == length && strncmp(at, name, length) == 0) return 1;
        if (comma == NULL) break;
        at = comma + 1;
    }
    return 0;
}

static void add_group(struct user *u, gid_t gid) {
    for (int i = 0; i < u->ngroups; i++)
        if (u->groups[i] == gid) return;
    if (u->ngroups < MAX_GROUPS) u->groups[u->ngroups++] = gid;
}

/* USER[:GROUP] by name or number from the VM's own /etc/passwd and /etc/group (files,
 * not NSS, so that images without glibc work too), as docker's --user. */
static void resolve_user(const char *spec, struct user *u) {
    char wanted[256], line[8192], name[256] = "";
    snprintf(wanted, sizeof wanted, "%s", spec);
    char *group = strchr(wanted, ':');
    if (group != NULL) *group++ = 0;
    char *fields[8];
    int found = 0;
    FILE *f = fopen("/etc/passwd", "re");
    for (int n; f != NULL && (n = next_entry(f, line, sizeof line, fields, 8)) >= 0;) {
        if (n >= 7 && (strcmp(fields[0], wanted) == 0 || (all_digits(wanted) && strcmp(fields[2], wanted) == 0))) {
            u->uid = (uid_t)strtoul(fields[2], NULL, 10);
            u->gid = (gid_t)strtoul(fields[3], NULL, 10);
            snprintf(name, sizeof name, "%s", fields[0]);
            snprintf(u->home, sizeof u->home, "%s", fields[5]);
            found = 1;
            break;
        }
    }
    if (f != NULL) fclose(f);
    if (!found) {
        if (!all_digits(wanted)) fail(126, "--user %s: no user named '%s' in the VM's /etc/passwd", spec, wanted);
        u->uid = u->gid = (uid_t)strtoul(wanted, NULL, 10);
        strcpy(u->home, "/");
    }
    f = fopen("/etc/group", "re");
    int group_found = 0;
    for (int n; f != NULL && (n = next_entry(f, line, sizeof line, fields, 4)) >= 0;) {
        if (group != NULL && !group_found && n >= 3 && (strcmp(fields[0], group) == 0 || strcmp(fields[2], group) == 0)) {
            u->gid = (gid_t)strtoul(fields[2], NULL, 10);
            group_found = 1;
        }
    }
    if (group != NULL && !group_found) {
        if (!all_digits(group)) fail(126, "--user %s: no group named '%s' in the VM's /etc/group", spec, group);
        u->gid = (gid_t)strtoul(group, NULL, 10);
    }
    /* Supplementary groups: the primary first, then every group listing the user, by id. */
    u->ngroups = 0;
    add_group(u, u->gid);
    gid_t extra[MAX_GROUPS];
    int nextra = 0;
    if (f != NULL && found) {
        rewind(f);
        for (int n; (n = next_entry(f, line, sizeof line, fields, 4)) >= 0;)
            if (n >= 4 && member_of(fields[3], name) && nextra < MAX_GROUPS) extra[nextra++] = (gid_t)strtoul(fields[2], NULL, 10);
    }
    if (f != NULL) fclose(f);
    for (int i = 1; i < nextra; i++) /* sorted, as the Python resolver did */
        for (int j = i; j > 0 && extra[j - 1] > extra[j]; j--) {
            gid_t t = extra[j];
            extra[j] = extra[j - 1];
            extra[j - 1] = t;
        }
    for (int i = 0; i < nextra; i++) add_group(u, extra[i]);
}

/* `env` with HOME=home, replacing one that is there. */
static char **with_home(char **env, const char *home) {
    size_t n = 0;
    while (env[n]) n++;
    char **out = calloc(n + 2, sizeof *out);
    char *entry = malloc(strlen(home) + 6);
    if (out == NULL || entry == NULL) fail(126, "out of memory");
    sprintf(entry, "HOME=%s", home);
    size_t j = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(env[i], "HOME=", 5) != 0) out[j++] = env[i];
    out[j++] = entry;
    return out;
}

/* execve along the PATH of `env`, as Python's os.execvpe: a name with a slash is run
 * as given; otherwise each directory is tried, and the first error that is not "not
 * found" is the one reported. */
__attribute__((noreturn)) static void exec_program(char **argv, char **env) {
    const char *file = argv[0];
    int saved = 0, last = ENOENT;
    if (strchr(file, '/') != NULL) {
        execve(file, argv, env);
        last = errno;
    } else {
        const char *path = DEFAULT_PATH;
        for (char **e = env; *e; e++)
            if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
        char candidate[8192];
        for (const char *at = path;;) {
            const char *colon = strchr(at, ':');
            size_t length = colon ? (size_t)(colon - at) : strlen(at);
            snprintf(candidate, sizeof candidate, "%.*s%s%s", (int)length, at, length ? "/" : "", file);
            /* A name that is not there costs no execve: an execve is trapped (a round trip
             * to the manager, or a ptrace stop), a faccessat is not unless reads are, and
             * it fails as that execve would. What is there is left to execve to judge. */
            if (faccessat(AT_FDCWD, candidate, F_OK, 0) < 0 && (errno == ENOENT || errno == ENOTDIR))
                last = errno;
            else {
                execve(candidate, argv, env);
                last = errno;
            }
            if (last != ENOENT && last != ENOTDIR && saved == 0) saved = last;
            if (colon == NULL) break;
            at = colon + 1;
        }
    }
    int error = saved ? saved : last;
    if (error == ENOENT || error == ENOTDIR) fail(127, "%s: executable file not found in $PATH", file);
    if (error == EACCES || error == EPERM) fail(126, "%s: permission denied", file);
    fail(126, "%s: %s", file, strerror(error));
}

static void become(const char *spec, struct user *u) {
    resolve_user(spec, u);
    if (setgroups((size_t)u->ngroups, u->groups) < 0 || setresgid(u->gid, u->gid, u->gid) < 0 ||
        setresuid(u->uid, u->uid, u->uid) < 0)
        fail(126, "--user %s: %s; is that id mapped in this VM?", spec, strerror(errno));
}

static void child(const struct program *p, int terminal, const int *stdio) {
    default_handled_signals(); /* every other is at its default since pid 1's boot */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid(); /* off any terminal of the host's: no TIOCSTI into the user's shell */
    int fds[3] = {-1, -1, -1};
    if (terminal >= 0) {
        ioctl(terminal, TIOCSCTTY, 0);
        fds[0] = fds[1] = fds[2] = terminal;
    } else if (stdio != NULL) {
        for (int i = 0; i < 3; i++) fds[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 10); /* above 0-2: no clobbering */
    }
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0 && dup2(fds[i], i) < 0) _exit(126);
    char **env = p->env;
    if (p->user != NULL) {
        struct user u;
        become(p->user, &u);
        if (!p->home_set) env = with_home(env, u.home);
    }
    if (chdir(p->workdir) < 0) fail(126, "working directory %s: %s", p->workdir, strerror(errno));
    syscall(SYS_close_range, 3, ~0U, 0);
    exec_program(p->argv, env);
}

/* Forks and starts `p` with the pty slave `terminal` or the three fds `stdio` (or pid
 * 1's own stdio when both are absent); returns the child's pid. */
pid_t spawn(const struct program *p, int terminal, const int *stdio) {
    pid_t pid = fork();
    if (pid == 0) child(p, terminal, stdio);
    return pid;
}
