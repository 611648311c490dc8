/* A device write-open whose verdict the C loop keeps (hvfs/_native/served_dev.h: /dev/NAME
 * found a character device, kept while an inotify watch on the writable view's root and /dev
 * reports no change), its name swapped with a regular file's by the VM's root.
 *
 * dev_swap TRIES SECONDS
 *
 * Makes /dev/spare a regular file (the writable view's /dev is a tmpfs the VM's root may
 * write to, through the manager). A second thread write-opens /dev/zero without pause, so
 * that the receiving loop keeps its verdict while the main thread swaps /dev/zero and
 * /dev/spare (renameat2 RENAME_EXCHANGE: one request, served by Python while the loop goes
 * on answering the other thread) and then write-opens /dev/zero itself: after the first swap
 * it must get the regular file (the manager serves it, "regular"), after the second the
 * device ("device"). A continue on a verdict the swap made stale would have the kernel open
 * the regular file on the boot view, read-only: EROFS ("stale"). Anything else is "odd".
 * Each try is one pair of swaps; /dev/zero is the device again at the end.
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static atomic_int stop;
static long warm, regular, device, stale, odd, swap_failed;
static int last_errno;

static void *warmer(void *unused) {
    while (!atomic_load(&stop)) {
        int fd = open("/dev/zero", O_WRONLY | O_CLOEXEC);
        if (fd >= 0)
            close(fd);
        warm++;
    }
    return NULL;
}

static int swap(void) {
    if (syscall(SYS_renameat2, AT_FDCWD, "/dev/zero", AT_FDCWD, "/dev/spare", RENAME_EXCHANGE) == 0)
        return 0;
    swap_failed++;
    last_errno = errno;
    return -1;
}

/* The main thread's write-open of /dev/zero: S_IFREG or S_IFCHR expected (want). */
static void look(mode_t want) {
    int fd = open("/dev/zero", O_WRONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        last_errno = errno;
        if (errno == EROFS)
            stale++;
        else
            odd++;
        return;
    }
    if (fstat(fd, &st) < 0 || (st.st_mode & S_IFMT) != want)
        odd++;
    else if (want == S_IFREG)
        regular++;
    else
        device++;
    close(fd);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    int made = open("/dev/spare", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (made < 0) {
        perror("/dev/spare");
        return 3;
    }
    close(made);
    pthread_t thread;
    pthread_create(&thread, NULL, warmer, NULL);
    long i = 0;
    for (; attack_more(i); i++) {
        if (swap() < 0)
            break;
        look(S_IFREG);
        if (swap() < 0)
            break;
        look(S_IFCHR);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"tries\": %ld, \"regular\": %ld, \"device\": %ld, \"stale\": %ld, \"odd\": %ld, \"warm\": %ld, "
           "\"swap_failed\": %ld, \"last_errno\": %d}\n",
           i, regular, device, stale, odd, warm, swap_failed, last_errno);
    return 0;
}
