/* Shared by the attack programs: the try and time budget, and the one-line JSON report.
 *
 * Every program is called as PROGRAM TRIES SECONDS [ARGS...], runs until either budget is
 * spent, and prints {"tries": N, ...counters...} as its last line.
 */
#ifndef HVFS_ATTACK_H
#define HVFS_ATTACK_H

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long attack_tries;
static double attack_deadline;

static double attack_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Parses the budget from argv[1] and argv[2]; the program's own arguments start at argv[3]. */
static void attack_begin(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TRIES SECONDS [ARGS...]\n", argv[0]);
        exit(2);
    }
    attack_tries = atol(argv[1]);
    attack_deadline = attack_now() + atof(argv[2]);
}

/* Whether try number i (from 0) may run. */
static int attack_more(long i) {
    return i < attack_tries && ((i & 15) || attack_now() < attack_deadline);
}

#endif
