/* Keeping the other CPUs awake while VMs make requests in bursts (the extension _awake).
 *
 * Why: a served request is a round trip between a VM's thread and the manager's serving
 * thread. The sync wake-up flag keeps the seccomp notification and its NOTIF_SEND answer on
 * one CPU, but the kernel wakes the VM's thread for an ADDFD (with or without
 * ADDFD_FLAG_SEND) by a plain complete(), which places it on an idle CPU when there is one;
 * ptrace's stops and resumes are plain wake-ups both ways. On a guest whose idle vCPUs halt
 * (this development machine: guest_halt_poll_ns 0; cloud CI runners alike), waking a halted
 * CPU costs tens of µs, several times the request itself (benchmarks/idle_wake.py measures
 * it). The kernel's guest halt-polling does in the kernel what this does here: threads of
 * the SCHED_IDLE policy, one per other CPU, busy-wait while requests keep coming, so that no
 * CPU halts in the middle of a burst. SCHED_IDLE yields to any other task at once, and the
 * scheduler counts a CPU that runs only SCHED_IDLE tasks as idle when it places a woken
 * thread, so the VM's thread lands on a CPU that is awake.
 *
 * When: a burst ends once no request has come for the window (HVFS_KEEP_AWAKE_US, µs, read
 * by awake.py; 0: off); the threads then sleep on a futex until the next request, so an idle
 * VM costs nothing. A thread also stops spinning while the machine has less than half a CPU
 * to spare (spare_cpu): then no CPU halts, and spinning would only get in the way of the
 * tasks that need the CPU (a make -j2 under --strict took 8-12 % longer without this gate). The serving
 * loops pay one atomic add per request and, at a burst's first request, one FUTEX_WAKE. */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define AWAKE_MAX_THREADS 8
#define GATE_EVERY 64            /* spins between two looks at the gate */
#define RELAX_EACH 16            /* pauses between two reads of the request count (~1 µs) */
#define GATE_NS 50000000         /* the machine's idle time sampled at most this often */
#define GATE_BACKOFF_NS 20000000 /* a thread that found no spare CPU looks again this much later */

static uint64_t requests;   /* requests seen by every serving loop and tracer of this manager */
static uint32_t word;       /* the futex the threads sleep on between bursts */
static int sleeping;        /* set by a thread going to sleep, cleared by the waker */
static long window_ns = 0;  /* 0: not started */
static int cpus = 1;

static inline uint64_t
now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline void
relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A request or stop seen: every serving loop's, through the capsule (awake_note.h). */
static void
note(void)
{
    if (!__atomic_load_n(&window_ns, __ATOMIC_RELAXED))
        return;
    __atomic_add_fetch(&requests, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sleeping, __ATOMIC_SEQ_CST) && __atomic_exchange_n(&sleeping, 0, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&word, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
}

/* Whether the machine had at least half a CPU to spare over the last GATE_NS: its idle time
 * (/proc/stat's idle and iowait, all CPUs) plus what these threads spun, which would have been
 * idle without them. Looked at by one thread at a time, at most once per GATE_NS; unsure
 * (unreadable) counts as spare: the window still ends every burst. */
static uint64_t spun_ns;           /* CPU time these threads have spun, all of them */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t gate_at, gate_idle, gate_spun; /* the last sample's time, idle and spun (ns) */
static int gate_spare = 1;

static uint64_t
idle_ns(int stat)
{
    char text[256];
    ssize_t got = stat >= 0 ? pread(stat, text, sizeof text - 1, 0) : -1;
    if (got <= 0)
        return 0;
    text[got] = '\0';
    unsigned long long v[5] = {0};
    if (sscanf(text, "cpu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4]) != 5)
        return 0;
    return (uint64_t)(v[3] + v[4]) * (1000000000u / (uint64_t)sysconf(_SC_CLK_TCK));
}

static int
spare_cpu(int stat)
{
    uint64_t now = now_ns();
    if (now - __atomic_load_n(&gate_at, __ATOMIC_RELAXED) < GATE_NS || pthread_mutex_trylock(&gate_lock) != 0)
        return __atomic_load_n(&gate_spare, __ATOMIC_RELAXED);
    uint64_t idle = idle_ns(stat), spun = __atomic_load_n(&spun_ns, __ATOMIC_RELAXED);
    if (idle && gate_at) {
        uint64_t free_ns = (idle - gate_idle) + (spun - gate_spun);
        __atomic_store_n(&gate_spare, free_ns * 2 >= now - gate_at, __ATOMIC_RELAXED);
    }
    gate_idle = idle, gate_spun = spun;
    __atomic_store_n(&gate_at, now, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&gate_lock);
    return __atomic_load_n(&gate_spare, __ATOMIC_RELAXED);
}

static uint64_t
thread_cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void
nap(uint32_t seen_word, const struct timespec *timeout)
{
    syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, seen_word, timeout, NULL, 0);
}

static void *
spin(void *unused)
{
    struct sched_param none = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
    int stat = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    const struct timespec backoff = {0, GATE_BACKOFF_NS};
    for (;;) {
        uint64_t seen = __atomic_load_n(&requests, __ATOMIC_SEQ_CST), began = now_ns();
        int busy = 0;
        uint64_t cpu_began = thread_cpu_ns();
        for (unsigned spins = 1; now_ns() - began < (uint64_t)window_ns; spins++) {
            for (int i = 0; i < RELAX_EACH; i++)
                relax();
            /* read once a RELAX_EACH: every read pulls the line the serving loops add to */
            uint64_t latest = __atomic_load_n(&requests, __ATOMIC_RELAXED);
            if (latest != seen)
                seen = latest, began = now_ns();
            if (spins % GATE_EVERY == 0) {
                uint64_t cpu = thread_cpu_ns();
                __atomic_add_fetch(&spun_ns, cpu - cpu_began, __ATOMIC_RELAXED);
                cpu_began = cpu;
                if (!spare_cpu(stat)) {
                    busy = 1;
                    break;
                }
            }
        }
        __atomic_add_fetch(&spun_ns, thread_cpu_ns() - cpu_began, __ATOMIC_RELAXED);
        if (busy) { /* no CPU would halt: look again later, unless the burst is over by then */
            nap(__atomic_load_n(&word, __ATOMIC_SEQ_CST), &backoff);
            if (__atomic_load_n(&requests, __ATOMIC_SEQ_CST) != seen)
                continue;
        }
        /* Asleep only if no request came after the flag is up: note() adds before it looks at
         * the flag, this looks at the count after raising it (both SEQ_CST), so a request is
         * seen by one of the two; the futex word read first makes a wake-up between here and
         * FUTEX_WAIT fail the wait (EAGAIN) instead of being lost. */
        uint32_t seen_word = __atomic_load_n(&word, __ATOMIC_SEQ_CST);
        __atomic_store_n(&sleeping, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&requests, __ATOMIC_SEQ_CST) != seen)
            continue;
        nap(seen_word, NULL);
    }
    return NULL;
}

/* start(threads, window_us) -> threads started: once per process; later calls, and a window
 * of 0, start nothing. The threads block every signal (the manager's are Python's). */
static PyObject *
start(PyObject *self, PyObject *args)
{
    int threads;
    long window_us;
    if (!PyArg_ParseTuple(args, "il", &threads, &window_us))
        return NULL;
    if (__atomic_load_n(&window_ns, __ATOMIC_SEQ_CST) || window_us <= 0 || threads <= 0)
        return PyLong_FromLong(0);
    if (threads > AWAKE_MAX_THREADS)
        threads = AWAKE_MAX_THREADS;
    cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    __atomic_store_n(&window_ns, window_us * 1000, __ATOMIC_SEQ_CST);
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int started = 0;
    for (; started < threads; started++) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        int failed = pthread_create(&thread, &attr, spin, NULL);
        pthread_attr_destroy(&attr);
        if (failed)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return PyLong_FromLong(started);
}

static PyMethodDef methods[] = {
    {"start", start, METH_VARARGS, "start(threads, window_us) -> threads started"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_awake", "Keeping the other CPUs awake during bursts (hvfs/_native/keep_awake.c).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__awake(void)
{
    PyObject *made = PyModule_Create(&module);
    PyObject *capsule = made ? PyCapsule_New((void *)note, "hvfs._native._awake.note", NULL) : NULL;
    if (capsule == NULL || PyModule_AddObject(made, "note", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_XDECREF(made);
        return NULL;
    }
    return made;
}
