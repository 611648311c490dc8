/* The exit code's way to the native front (hvfs/hypervisor/front_exit.py): a pipe whose
 * write end only the VM's shim holds. This program, as the VM's command, looks for any
 * pipe or socket it could write a forged exit code into: every fd of every process it can
 * see in /proc (pid 1's among them), and its own inherited fds beyond stdio. It writes
 * FORGED into each one it can open for writing that is not its own stdio, then exits with
 * CODE. The host checks that the front reports CODE: a forged code that reached the front
 * would be an escape.
 *
 * usage: front_exit TRIES SECONDS CODE FORGED
 * prints {"tries": N, "refused": R, "opened": O, "written": W}
 */
#include "attack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct stat stdio_st[3];

static int is_own_stdio(const struct stat *st) {
    for (int i = 0; i < 3; i++)
        if (stdio_st[i].st_dev == st->st_dev && stdio_st[i].st_ino == st->st_ino)
            return 1;
    return 0;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 5) {
        fprintf(stderr, "usage: %s TRIES SECONDS CODE FORGED\n", argv[0]);
        return 2;
    }
    int code = atoi(argv[3]);
    char forged[32];
    int forged_len = snprintf(forged, sizeof forged, "%d\n", atoi(argv[4]));
    for (int i = 0; i < 3; i++)
        if (fstat(i, &stdio_st[i]) < 0)
            memset(&stdio_st[i], 0xff, sizeof stdio_st[i]);
    long tries = 0, refused = 0, opened = 0, written = 0;
    /* Inherited fds beyond stdio: written to directly. */
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        if (fstat(fd, &st) < 0 || is_own_stdio(&st))
            continue;
        if (write(fd, forged, (size_t)forged_len) == forged_len)
            written++;
    }
    for (long i = 0; attack_more(i); i++) {
        DIR *proc = opendir("/proc");
        if (!proc)
            break;
        struct dirent *p;
        while ((p = readdir(proc)) != NULL && attack_more(tries)) {
            if (p->d_name[0] < '0' || p->d_name[0] > '9')
                continue;
            char dir[64];
            snprintf(dir, sizeof dir, "/proc/%s/fd", p->d_name);
            DIR *fds = opendir(dir);
            if (!fds) {
                tries++;
                refused++; /* pid 1's: out of the VM's reach */
                continue;
            }
            struct dirent *f;
            while ((f = readdir(fds)) != NULL) {
                if (f->d_name[0] == '.')
                    continue;
                char path[128];
                snprintf(path, sizeof path, "%s/%s", dir, f->d_name);
                tries++;
                int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
                if (fd < 0) {
                    refused++;
                    continue;
                }
                struct stat st;
                if (fstat(fd, &st) == 0 && !is_own_stdio(&st) && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
                    opened++;
                    if (write(fd, forged, (size_t)forged_len) == forged_len)
                        written++;
                }
                close(fd);
            }
            closedir(fds);
        }
        closedir(proc);
        if (tries >= attack_tries)
            break;
    }
    printf("{\"tries\": %ld, \"refused\": %ld, \"opened\": %ld, \"written\": %ld}\n", tries, refused, opened, written);
    fflush(stdout);
    return code;
}
