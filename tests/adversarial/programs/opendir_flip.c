/* A directory exchanged with a FIFO, thousands of times, while the VM opens the name with
 * O_DIRECTORY (which a strict VM's C loop opens at once with the caller's flags, no O_PATH
 * probe: hvfs/_native/served_stat.h serve_open).
 *
 * opendir_flip TRIES SECONDS VOLUME
 *
 * VOLUME/x is a directory and VOLUME/y a FIFO (the host's, with a host writer blocked in its
 * open, waiting for a reader). A thread exchanges the two names (renameat2 RENAME_EXCHANGE,
 * served by the manager) while the main thread opens VOLUME/x O_RDONLY|O_DIRECTORY and closes
 * it. Counters: "dirs" (a directory opened), "notdirs" (ENOTDIR: the FIFO was found), "other"
 * (any other errno), "odd" (an fd that is not a directory), "swaps".
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

static char x[512], y[512];
static atomic_int stop;
static long swaps;

static void *swapper(void *unused) {
    (void)unused;
    while (!atomic_load(&stop))
        if (syscall(SYS_renameat2, AT_FDCWD, x, AT_FDCWD, y, RENAME_EXCHANGE) == 0) swaps++;
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) return 2;
    snprintf(x, sizeof x, "%s/x", argv[3]);
    snprintf(y, sizeof y, "%s/y", argv[3]);
    pthread_t thread;
    pthread_create(&thread, NULL, swapper, NULL);
    long i, dirs = 0, notdirs = 0, other = 0, odd = 0;
    for (i = 0; attack_more(i); i++) {
        int fd = open(x, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOTDIR) notdirs++;
            else other++;
            continue;
        }
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) dirs++;
        else odd++;
        close(fd);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"tries\": %ld, \"dirs\": %ld, \"notdirs\": %ld, \"other\": %ld, \"odd\": %ld, \"swaps\": %ld}\n", i, dirs,
           notdirs, other, odd, swaps);
    return 0;
}
