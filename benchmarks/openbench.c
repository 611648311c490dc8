/* Times open()+close() of one path: prints microseconds per pair (median of 5 batches).
 * usage: openbench PATH r|w ITERATIONS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PATH r|w ITERATIONS\n", argv[0]);
        return 2;
    }
    int flags = strcmp(argv[2], "w") == 0 ? O_WRONLY : O_RDONLY;
    long n = atol(argv[3]) / 5;
    double batches[5];
    for (long i = 0; i < n / 10; i++) close(open(argv[1], flags));  /* warm up */
    for (int b = 0; b < 5; b++) {
        double start = now_us();
        for (long i = 0; i < n; i++) {
            int fd = open(argv[1], flags);
            if (fd < 0) { perror(argv[1]); return 1; }
            close(fd);
        }
        batches[b] = (now_us() - start) / n;
    }
    qsort(batches, 5, sizeof batches[0], cmp);
    printf("%.3f\n", batches[2]);
    return 0;
}
