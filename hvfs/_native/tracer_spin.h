/* The tracer's waits, polled briefly before they block (tracer.c's next_status, tracer_receive.h's
 * run_to_exit). A blocked tracer is woken by the stopping thread's CPU; where the other CPU has
 * halted meanwhile (an idle machine, and in a nested guest a halted vCPU waits for the host),
 * that wake-up costs tens of µs per stop, more than the stop itself. Polling waitpid(WNOHANG)
 * for a few tens of µs catches the next stop of a burst (a served open's recvmsg, a loop of
 * trapped calls) with the tracer's CPU still awake. Only while stops come in bursts: the poll
 * runs when this thread's last wait was met within the budget and WAKE_ALLOWANCE_US (a
 * blocking wait's time includes a halted CPU's wake-up: without the allowance a burst once
 * left would not be found again), so that an idle VM's tracer blocks at once and a sparse
 * workload pays at most one budget per quiet spell. Each poll yields the CPU (sched_yield):
 * under load the thread it waits for may be queued on this very CPU. Included by tracer.c.
 */
#ifndef HVFS_TRACER_SPIN_H
#define HVFS_TRACER_SPIN_H

#include <sched.h>
#include <stdlib.h>
#include <time.h>

#define SPIN_US_DEFAULT 50 /* docs/ptrace.md, "Waiting for a stop": measured 2026-12-07 */
#define WAKE_ALLOWANCE_US 100 /* what a blocking wait's time may hold of its wake-up, besides the gap */

/* HVFS_TRACER_SPIN_US, read once when the module is loaded (the manager's environment): the
 * budget in µs, 0 for none (a plain blocking wait, as before). */
static long spin_us = SPIN_US_DEFAULT;

static void
spin_configure(void)
{
    const char *given = getenv("HVFS_TRACER_SPIN_US");
    if (given != NULL && *given != '\0') {
        char *end;
        long us = strtol(given, &end, 10);
        if (*end == '\0' && us >= 0 && us <= 10000)
            spin_us = us;
    }
}

static long
elapsed_us(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000L + (now.tv_nsec - since->tv_nsec) / 1000;
}

/* waitpid(who, status, options), polled first for up to the budget when ``bursting`` (then set
 * again by how long this wait took). A stop met by the poll, or by a block that ended within
 * the budget and WAKE_ALLOWANCE_US, keeps the burst on. */
static pid_t
spun_wait(pid_t who, int *status, int options, int *bursting)
{
    if (spin_us <= 0)
        return waitpid(who, status, options);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (*bursting) {
        do {
            pid_t got = waitpid(who, status, options | WNOHANG);
            if (got != 0)
                return got; /* a stop, an exit, or a failure (EINTR included): as waitpid's */
            sched_yield();
        } while (elapsed_us(&start) <= spin_us);
    }
    pid_t got = waitpid(who, status, options);
    *bursting = elapsed_us(&start) <= spin_us + WAKE_ALLOWANCE_US;
    return got;
}

#endif /* HVFS_TRACER_SPIN_H */
