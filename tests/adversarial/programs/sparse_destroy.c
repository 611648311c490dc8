/* Makes the manager face 50 GiB files about to be destroyed, as fast as it can.
 *
 * Usage: sparse_destroy TRIES SECONDS DIR
 * Each try creates a 50 GiB sparse file (open, ftruncate, close: the close is a backup
 * trigger) and destroys it one of three ways, timing the destroying call: unlink, a
 * rename of another such file over it, an open with O_TRUNC (then unlink, untimed).
 * Before the backup was bounded, each destroying call copied 50 GiB first.
 * Reports {"tries", "unlinks", "renames", "truncates", "max_us", "failures"}.
 */
#include "attack.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define SIZE (50LL << 30)

static char big[4096], other[4096];
static long failures;

static int make(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, SIZE) != 0) {
        failures++;
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return close(fd);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: %s TRIES SECONDS DIR\n", argv[0]);
        return 2;
    }
    snprintf(big, sizeof big, "%s/big", argv[3]);
    snprintf(other, sizeof other, "%s/other", argv[3]);
    long i, counts[3] = {0, 0, 0};
    double worst = 0;
    for (i = 0; attack_more(i); i++) {
        int how = i % 3;
        if (make(big) != 0 || (how == 1 && make(other) != 0))
            continue;
        double began = attack_now();
        int result;
        if (how == 0) {
            result = unlink(big);
        } else if (how == 1) {
            result = rename(other, big);
        } else {
            result = open(big, O_WRONLY | O_TRUNC | O_CLOEXEC);
            if (result >= 0)
                close(result);
        }
        double took = attack_now() - began;
        if (result < 0) {
            failures++;
            continue;
        }
        if (took > worst)
            worst = took;
        counts[how]++;
        if (how != 0)
            unlink(big);
    }
    printf("{\"tries\": %ld, \"unlinks\": %ld, \"renames\": %ld, \"truncates\": %ld, \"max_us\": %ld, "
           "\"failures\": %ld}\n",
           i, counts[0], counts[1], counts[2], (long)(worst * 1e6), failures);
    return 0;
}
