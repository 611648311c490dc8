/* Per-call results for the programs that try refused calls: how often each call returned
 * success ("ok") and each errno, from any thread or forked child (the counts live in
 * shared memory). Printed as "calls": {"NAME": {"ok": N, "EPERM": N, ...}, ...}.
 *
 * Calls are registered before any thread starts; NAME is "SYSCALL" or "SYSCALL:VARIANT",
 * where SYSCALL is the name hvfs's table (docs/compatibility.md) gives it.
 */
#ifndef HVFS_TALLY_H
#define HVFS_TALLY_H

#include "attack.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#define TALLY_CALLS 512
#define TALLY_ERRNOS 134 /* EHWPOISON, the last errno; beyond it counts as 0 ("ok") would not */

struct tally {
    char name[64];
    atomic_long results[TALLY_ERRNOS + 2]; /* [0]: success, [e]: errno e, [last]: out of range */
};

static struct tally *tallies;
static int tally_count;

static inline void tally_init(void) {
    tallies = mmap(NULL, sizeof(struct tally) * TALLY_CALLS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (tallies == MAP_FAILED) exit(3);
}

/* The index of the call NAME (registered now if new: before threads start only). */
static inline int tally_call(const char *name) {
    for (int i = 0; i < tally_count; i++)
        if (strcmp(tallies[i].name, name) == 0) return i;
    if (tally_count == TALLY_CALLS) exit(3);
    snprintf(tallies[tally_count].name, sizeof tallies[tally_count].name, "%s", name);
    return tally_count++;
}

/* Records a libc-style result: >= 0 is success, -1 with errno set a failure. */
static inline void tally_result(int call, long result) {
    int slot = result >= 0 ? 0 : (errno > 0 && errno <= TALLY_ERRNOS ? errno : TALLY_ERRNOS + 1);
    atomic_fetch_add(&tallies[call].results[slot], 1);
}

/* Records a raw kernel result: >= 0 success, -errno a failure. */
static inline void tally_raw(int call, long result) {
    if (result < 0 && result >= -4095) {
        errno = (int)-result;
        result = -1;
    }
    tally_result(call, result);
}

static inline long tally_total(void) {
    long total = 0;
    for (int i = 0; i < tally_count; i++)
        for (int e = 0; e < TALLY_ERRNOS + 2; e++) total += atomic_load(&tallies[i].results[e]);
    return total;
}

static inline void tally_print(void) {
    printf("\"calls\": {");
    for (int i = 0; i < tally_count; i++) {
        printf("%s\"%s\": {", i ? ", " : "", tallies[i].name);
        int first = 1;
        for (int e = 0; e < TALLY_ERRNOS + 2; e++) {
            long n = atomic_load(&tallies[i].results[e]);
            if (!n) continue;
            const char *what = e == 0 ? "ok" : e > TALLY_ERRNOS ? "other" : strerrorname_np(e);
            printf("%s\"%s\": %ld", first ? "" : ", ", what ? what : "other", n);
            first = 0;
        }
        printf("}");
    }
    printf("}");
}

#endif
