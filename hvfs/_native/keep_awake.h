/* Keeping the other CPUs awake while VMs make requests in bursts (hotpath.c includes it).
 *
 * Why: a served request is a round trip between a VM's thread and the serving thread. The
 * sync wake-up flag keeps the notification and NOTIF_SEND on one CPU, but the kernel wakes
 * the VM's thread for an ADDFD (with or without ADDFD_FLAG_SEND) by a plain complete(),
 * which places it on an idle CPU when there is one; on a guest whose idle vCPUs halt (this
 * development machine: guest_halt_poll_ns 0; cloud CI runners alike), waking a halted CPU
 * costs tens of µs, several times the request itself (benchmarks/idle_wake.py measures it).
 * The kernel's guest halt-polling does in the kernel what this does here: a thread of
 * SCHED_IDLE policy per other CPU busy-waits while requests keep coming, so that no CPU
 * halts in the middle of a burst. SCHED_IDLE yields to any other task at once (the VM's
 * own work loses nothing but a wake-up's preemption), and the scheduler counts a CPU that
 * runs only SCHED_IDLE tasks as idle when it places a woken thread.
 *
 * A burst ends when no request has come for the window (HVFS_KEEP_AWAKE_US, µs; 0: off):
 * the threads then sleep on a futex until the next request, so an idle VM costs nothing.
 * The serving loops pay one atomic increment per request and, at a burst's first request,
 * one FUTEX_WAKE. */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>

#define AWAKE_MAX_THREADS 8

static uint64_t awake_requests;  /* requests seen by every serving loop of this manager */
static uint32_t awake_word;      /* the futex the threads sleep on between bursts */
static int awake_sleeping;       /* set by a thread going to sleep, cleared by the waker */
static long awake_window_ns = 0; /* 0: never started */

static inline uint64_t
awake_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline void
awake_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A request arrived: on every request once started (cheap: one atomic add, one load). */
static inline void
awake_note(void)
{
    if (!__atomic_load_n(&awake_window_ns, __ATOMIC_RELAXED))
        return;
    __atomic_add_fetch(&awake_requests, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&awake_sleeping, __ATOMIC_SEQ_CST) && __atomic_exchange_n(&awake_sleeping, 0, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&awake_word, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &awake_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
}

static void *
awake_thread(void *unused)
{
    struct sched_param none = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
    for (;;) {
        uint64_t seen = __atomic_load_n(&awake_requests, __ATOMIC_SEQ_CST), began = awake_now();
        while (awake_now() - began < (uint64_t)awake_window_ns) {
            awake_relax();
            uint64_t now_seen = __atomic_load_n(&awake_requests, __ATOMIC_RELAXED);
            if (now_seen != seen)
                seen = now_seen, began = awake_now();
        }
        /* Asleep only if no request came after the flag is up: awake_note adds before it
         * looks at the flag, this looks at the count after raising it (both SEQ_CST), so a
         * request is seen by one of the two; the futex word read first makes a wake-up
         * between here and FUTEX_WAIT fail the wait (EAGAIN) instead of being lost. */
        uint32_t word = __atomic_load_n(&awake_word, __ATOMIC_SEQ_CST);
        __atomic_store_n(&awake_sleeping, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&awake_requests, __ATOMIC_SEQ_CST) != seen)
            continue;
        syscall(SYS_futex, &awake_word, FUTEX_WAIT_PRIVATE, word, NULL, NULL, 0);
    }
    return NULL;
}

/* keep_awake(threads, window_us) -> threads started: once per process; later calls, and a
 * window of 0, start nothing. The threads block every signal (the manager's are Python's). */
static PyObject *
hp_keep_awake(PyObject *self, PyObject *args)
{
    int threads;
    long window_us;
    if (!PyArg_ParseTuple(args, "il", &threads, &window_us))
        return NULL;
    if (awake_window_ns || window_us <= 0 || threads <= 0)
        return PyLong_FromLong(0);
    if (threads > AWAKE_MAX_THREADS)
        threads = AWAKE_MAX_THREADS;
    __atomic_store_n(&awake_window_ns, window_us * 1000, __ATOMIC_SEQ_CST);
    __atomic_store_n(&awake_sleeping, 0, __ATOMIC_SEQ_CST);
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
        int failed = pthread_create(&thread, &attr, awake_thread, NULL);
        pthread_attr_destroy(&attr);
        if (failed)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return PyLong_FromLong(started);
}

#define KEEP_AWAKE_METHODS {"keep_awake", hp_keep_awake, METH_VARARGS, "keep_awake(threads, window_us) -> threads started"}
