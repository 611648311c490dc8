/* callbench KIND N PATH: N calls of one kind (fchmod, fchown, futimens on PATH opened for writing;
 * openr, openw: open+close of PATH; opendir: open(dirname(PATH), O_DIRECTORY)+close; stat), timed in
 * 5 batches: prints the median µs per call (min-max). Run in `hvfs run --strict` and under
 * `floor strict:FILTER sync nopin` (benchmarks/callbench_ab.sh). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    const char *kind = argv[1]; int n = atoi(argv[2]); const char *p = argv[3];
    int w = open(p, O_WRONLY); if (w < 0) { perror("open"); return 1; }
    char dir[4096]; snprintf(dir, sizeof dir, "%s", p); char *slash = strrchr(dir, '/'); if (slash) *slash = 0; else strcpy(dir, ".");
    double r[5];
    for (int b = 0; b < 5; b++) {
        double t0 = now();
        for (int i = 0; i < n / 5; i++) {
            if (!strcmp(kind, "fchmod")) { if (fchmod(w, 0644)) { perror("fchmod"); return 1; } }
            else if (!strcmp(kind, "fchown")) { if (fchown(w, -1, -1)) { perror("fchown"); return 1; } }
            else if (!strcmp(kind, "futimens")) { struct timespec ts[2] = {{1, 0}, {2, 0}}; if (futimens(w, ts)) { perror("futimens"); return 1; } }
            else if (!strcmp(kind, "openr")) { int fd = open(p, O_RDONLY); if (fd < 0) { perror("openr"); return 1; } close(fd); }
            else if (!strcmp(kind, "openw")) { int fd = open(p, O_WRONLY); if (fd < 0) { perror("openw"); return 1; } close(fd); }
            else if (!strcmp(kind, "opendir")) { int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); if (fd < 0) { perror("opendir"); return 1; } close(fd); }
            else if (!strcmp(kind, "stat")) { struct stat st; if (stat(p, &st)) { perror("stat"); return 1; } }
        }
        r[b] = (now() - t0) / (n / 5);
    }
    qsort(r, 5, sizeof r[0], cmp);
    printf("%s %.2f (%.2f-%.2f)\n", kind, r[2], r[0], r[4]);
    return 0;
}
