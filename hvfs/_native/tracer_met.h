/* What a served thread's wait (tracer_receive.h's run_to_exit) met of the VM's other tracees,
 * in order, for the main loop. Included by tracer.c before its next_status, which takes these
 * stops first.
 *
 * The wait must take any tracee's status (issue 15): an exec kills the other threads of its
 * process and waits (de_thread) until the tracer has reaped each, and a leader killed so
 * reports nothing while they are not, so a wait for its pid alone waited forever. Stops met are
 * left as they are, for the main loop; exits are reaped. Reaping frees a number for reuse, so
 * every exit reaches Python before any stop of that thread taken before it could be acted on:
 * a stop of that thread met before is dropped here at its exit (it stands no more), whoever
 * reaped it (Python's waits for the calls it injects keep what they meet here too: keep_met);
 * an install Python asked for (tracer.c's receive) hands the exits back with its outcome; an
 * install the C loop served (tracer.c's for_python) moves them to its wait's ``exits`` at once
 * (met_exits_to) and returns as soon as they do not fit; Python then drops its own pending
 * stops of those threads (waits.py _exited) before it takes any. The stops are the next
 * wait's, taken first by next_status (older than anything the kernel has for it), the rest
 * handed back at the end of a wait. This tracer thread's own list (one thread per VM).
 */
#ifndef HVFS_TRACER_MET_H
#define HVFS_TRACER_MET_H

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

struct met {
    int (*at)[2]; /* pid, wait status */
    int n, cap;
};
static __thread struct met met;

static int
ended_status(int status)
{
    return WIFEXITED(status) || WIFSIGNALED(status);
}

/* The stops of pid kept so far dropped: it has exited, and they stand no more. */
static void
met_drop(pid_t pid)
{
    int kept = 0;
    for (int i = 0; i < met.n; i++)
        if (met.at[i][0] != pid || ended_status(met.at[i][1]))
            memcpy(met.at[kept++], met.at[i], sizeof met.at[i]);
    met.n = kept;
}

static void
met_keep(pid_t pid, int status)
{
    int ended = ended_status(status);
    if (ended)
        met_drop(pid);
    if (met.n == met.cap) {
        int cap = met.cap ? met.cap * 2 : 16;
        void *grown = realloc(met.at, sizeof met.at[0] * (size_t)cap);
        if (grown == NULL) {
            /* A stop nobody would resume: the thread is killed instead (its exit comes to the
             * main loop's wait); an exit reaped but not told: its bookkeeping is lost, nothing more. */
            if (!ended)
                kill(pid, SIGKILL);
            return;
        }
        met.at = grown, met.cap = cap;
    }
    met.at[met.n][0] = pid;
    met.at[met.n][1] = status;
    met.n++;
}

/* The first status met, taken off the list (for next_status: only stops are left there). */
static pid_t
met_take(int *status)
{
    pid_t pid = met.at[0][0];
    *status = met.at[0][1];
    memmove(met.at, met.at + 1, sizeof met.at[0] * (size_t)(met.n - 1));
    met.n--;
    return pid;
}

#endif /* HVFS_TRACER_MET_H */
