/* Against the files a VM was handed as stdio: reopen for writing through every magic link
 * that names them, and change their metadata through the fds.
 *
 * PROGRAM TRIES SECONDS
 * Report: tries, and how many calls the kernel allowed (allowed) or refused (refused).
 * Whether anything reached a host file is for the host to say. */
#include "attack.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static long allowed, refused;

static void count(int result) {
    if (result < 0)
        refused++;
    else
        allowed++;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    char path[64];
    const char *spellings[] = {"/proc/self/fd/%d", "/proc/thread-self/fd/%d", "/dev/fd/%d", "/proc/%2$d/fd/%1$d"};
    const char *named[] = {"/dev/stdin", "/dev/stdout", "/dev/stderr"};
    long i;
    for (i = 0; attack_more(i); i++) {
        for (int fd = 0; fd < 3; fd++) {
            for (size_t s = 0; s < sizeof spellings / sizeof *spellings; s++) {
                snprintf(path, sizeof path, spellings[s], fd, getpid());
                int w = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NONBLOCK);
                count(w);
                if (w >= 0) {
                    if (fd == 0) count((int)write(w, "PWNED\n", 6)); /* into a pipe nobody reads: fine */
                    close(w);
                }
            }
            count(fchmod(fd, 04777));
            count(fchown(fd, 1234, 1234));
            struct timespec times[2] = {{0, 0}, {0, 0}};
            count(futimens(fd, times));
            count(fsetxattr(fd, "user.pwned", "1", 1, 0));
        }
        int w = open(named[i % 3], O_WRONLY | O_TRUNC | O_CLOEXEC | O_NONBLOCK);
        count(w);
        if (w >= 0) close(w);
    }
    printf("{\"tries\": %ld, \"allowed\": %ld, \"refused\": %ld}\n", i, allowed, refused);
    return 0;
}
