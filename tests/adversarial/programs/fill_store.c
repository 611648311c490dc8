/* Tries to fill the backup store: file after file of distinct, incompressible content.
 *
 * Usage: fill_store TRIES SECONDS DIR MIB
 * Each try writes DIR/fN (MIB MiB from a PRNG seeded by the try and the clock), closes
 * it (a backup trigger) and unlinks it (another one, on the request path), timing the
 * unlink. Reports {"tries", "written_mib", "max_unlink_us", "failures"}.
 */
#include "attack.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static uint64_t state;

static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 5) {
        fprintf(stderr, "usage: %s TRIES SECONDS DIR MIB\n", argv[0]);
        return 2;
    }
    long mib = atol(argv[4]), i, written = 0, failures = 0;
    static uint64_t buffer[CHUNK / 8];
    char path[4096];
    double worst = 0;
    state = (uint64_t)(attack_now() * 1e9) | 1;
    for (i = 0; attack_more(i); i++) {
        snprintf(path, sizeof path, "%s/f%ld", argv[3], i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            failures++;
            continue;
        }
        for (long m = 0; m < mib; m++) {
            for (size_t w = 0; w < CHUNK / 8; w++)
                buffer[w] = next();
            if (write(fd, buffer, CHUNK) != CHUNK) {
                failures++;
                break;
            }
            written++;
        }
        close(fd);
        double began = attack_now();
        if (unlink(path) != 0)
            failures++;
        double took = attack_now() - began;
        if (took > worst)
            worst = took;
    }
    printf("{\"tries\": %ld, \"written_mib\": %ld, \"max_unlink_us\": %ld, \"failures\": %ld}\n", i, written,
           (long)(worst * 1e6), failures);
    return 0;
}
