/* The tracer's waits, polled briefly before they block (tracer.c's next_status, tracer_receive.h's
 * run_to_exit). A blocked tracer is woken by the stopping thread's CPU; where the other CPU has
 * halted meanwhile (an idle machine, and in a nested guest a halted vCPU waits for the host),
 * that wake-up costs tens of µs per stop, more than the stop itself. Polling waitpid(WNOHANG)
 * for a few tens of µs catches the next stop of a burst (a served open's recvmsg, a loop of
 * trapped calls) with the tracer's CPU still awake. Only while stops come in bursts: the poll
 * runs when this thread's last wait was met within the budget and WAKE_ALLOWANCE_US (a
 * blocking wait's time includes a halted CPU's wake-up: without the allowance a burst once
 * left would not be found again), so that an idle VM's tracer blocks at once and a sparse
 * workload pays at most one budget per quiet spell. And only while the machine has a spare
 * CPU (machine_has_spare): under load no CPU halts, and the poll cost CPU and wall time
 * (docs/performance.md, "The ptrace tracer's poll before it blocks"). Each poll yields the
 * CPU (sched_yield): the thread it waits for may be queued on this very CPU. Included by
 * tracer.c.
 */
#ifndef HVFS_TRACER_SPIN_H
#define HVFS_TRACER_SPIN_H

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPIN_US_DEFAULT 50 /* the quiet machine's W8c was the same with 20-200 µs (docs/ptrace.md) */
#define WAKE_ALLOWANCE_US 100 /* what a blocking wait's time may hold of its wake-up, besides the gap */

/* HVFS_TRACER_SPIN_US, read once when the module is loaded (the manager's environment): the
 * budget in µs, 0 for none (a plain blocking wait, as before). HVFS_TRACER_SPIN_ALWAYS=1
 * (tests, measurements): the poll whatever the machine's load (machine_has_spare). */
static long spin_us = SPIN_US_DEFAULT;
static int spin_always;

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
    given = getenv("HVFS_TRACER_SPIN_ALWAYS");
    spin_always = given != NULL && strcmp(given, "1") == 0;
}

static long
elapsed_us(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000L + (now.tv_nsec - since->tv_nsec) / 1000;
}

/* The idle time of all CPUs so far (/proc/stat's first line: idle and iowait), in clock ticks;
 * -1 where it cannot be read. */
static long long
idle_ticks(void)
{
    char line[256];
    int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, line, sizeof line - 1);
    close(fd);
    if (got <= 0)
        return -1;
    line[got] = '\0';
    unsigned long long user, nice, system, idle, iowait;
    if (sscanf(line, "cpu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle, &iowait) != 5)
        return -1;
    return (long long)(idle + iowait);
}

/* Whether the machine had SPARE_CPUS of idle time over the last SPARE_SAMPLE_US: only then can
 * a CPU halt and its wake-up cost what the poll saves. Under load no CPU halts, and the poll
 * would only take a CPU from others. Sampled for the whole manager (one tracer thread reads,
 * the others use the last answer); yes until a first sample says otherwise, and where
 * /proc/stat cannot be read. */
#define SPARE_SAMPLE_US 200000
#define SPARE_CPUS 0.25

static struct {
    struct timespec at;
    long long idle;
    int spare;
} machine = {.spare = 1};
static pthread_mutex_t sampling = PTHREAD_MUTEX_INITIALIZER;

static int
machine_has_spare(void)
{
    if (spin_always)
        return 1;
    if (pthread_mutex_trylock(&sampling) != 0)
        return __atomic_load_n(&machine.spare, __ATOMIC_RELAXED);
    long span = machine.at.tv_sec ? elapsed_us(&machine.at) : 0;
    if (machine.at.tv_sec == 0 || span >= SPARE_SAMPLE_US) {
        long long idle = idle_ticks();
        if (idle >= 0) {
            if (machine.at.tv_sec != 0) {
                double cpus = (double)(idle - machine.idle) / (double)sysconf(_SC_CLK_TCK) / ((double)span / 1e6);
                __atomic_store_n(&machine.spare, cpus >= SPARE_CPUS, __ATOMIC_RELAXED);
            }
            machine.idle = idle;
            clock_gettime(CLOCK_MONOTONIC, &machine.at);
        }
    }
    int spare = __atomic_load_n(&machine.spare, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&sampling);
    return spare;
}

/* waitpid(who, status, options), polled first for up to the budget when ``bursting`` (then set
 * again by how long this wait took) and the machine has a spare CPU. A stop met by the poll,
 * or by a block that ended within the budget and WAKE_ALLOWANCE_US, keeps the burst on. */
static pid_t
spun_wait(pid_t who, int *status, int options, int *bursting)
{
    if (spin_us <= 0)
        return waitpid(who, status, options);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (*bursting && machine_has_spare()) {
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
