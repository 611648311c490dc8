/* Opens a file the scanner refuses, again and again.
 *
 * Usage: refused_open TRIES SECONDS PATH
 * Reports {"tries", "refused", "opened", "other"}: opens that failed with EACCES, that
 * succeeded, that failed otherwise.
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: %s TRIES SECONDS PATH\n", argv[0]);
        return 2;
    }
    long i, refused = 0, opened = 0, other = 0;
    for (i = 0; attack_more(i); i++) {
        int fd = open(argv[3], O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            opened++;
            close(fd);
        } else if (errno == EACCES) {
            refused++;
        } else {
            other++;
        }
    }
    printf("{\"tries\": %ld, \"refused\": %ld, \"opened\": %ld, \"other\": %ld}\n", i, refused, opened, other);
    return 0;
}
