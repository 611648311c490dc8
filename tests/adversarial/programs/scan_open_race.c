/* Open race against the scanner: a thread flips the path buffer between a clean and a
 * blocklisted data file while the main thread opens it and reads it, again and again.
 *
 *   scan_open_race TRIES SECONDS CLEAN BLOCKLISTED
 *
 * The clean file starts with "CLEAN", the blocklisted one with "BLOCK". Outcomes: "clean"
 * (read the clean content), "refused" (EACCES: the scanner judged the fd it was about to
 * hand out), "escapes" (read the blocklisted content), "other" (a torn path: ENOENT).
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

static volatile char path[256];
static const char *names[2];
static size_t lengths[2];
static volatile int stop;

/* Byte by byte, the NUL last: whoever reads the buffer meanwhile may get a torn mix of the
 * two, which names nothing (the manager then finds no file; the kernel, reading again, may). */
static void *flip(void *unused) {
    (void)unused;
    for (unsigned long i = 0; !stop; i++)
        for (size_t j = 0; j <= lengths[i & 1]; j++)
            path[j] = names[i & 1][j];
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc != 5 || strlen(argv[3]) >= sizeof path || strlen(argv[4]) >= sizeof path) {
        fprintf(stderr, "usage: %s TRIES SECONDS CLEAN BLOCKLISTED\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < 2; i++) {
        names[i] = argv[3 + i];
        lengths[i] = strlen(names[i]);
    }
    memcpy((char *)path, names[0], lengths[0] + 1);
    pthread_t flipper;
    pthread_create(&flipper, NULL, flip, NULL);
    long tries = 0, clean = 0, refused = 0, escapes = 0, other = 0;
    for (; attack_more(tries); tries++) {
        int fd = open((const char *)path, O_RDONLY);
        if (fd < 0) {
            if (errno == EACCES)
                refused++;
            else
                other++;
            continue;
        }
        char head[5] = {0};
        ssize_t n = read(fd, head, sizeof head);
        close(fd);
        if (n == 5 && !memcmp(head, "CLEAN", 5))
            clean++;
        else if (n == 5 && !memcmp(head, "BLOCK", 5))
            escapes++;
        else
            other++;
    }
    stop = 1;
    pthread_join(flipper, NULL);
    printf("{\"tries\": %ld, \"clean\": %ld, \"refused\": %ld, \"escapes\": %ld, \"other\": %ld}\n", tries, clean,
           refused, escapes, other);
    return 0;
}
