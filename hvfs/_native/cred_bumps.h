/* The credential generation's part the C loops bump (hvfs/intercept/credcache.py
 * CredWatch.bumps): one uint64 for the whole VM, then TID_BUCKETS more, one per bucket of
 * thread numbers. A call that changes its own thread's credentials only (a leader's exec,
 * a set*id, setgroups or capset) bumps its thread's bucket, so that what was kept of every
 * other thread stays usable (issue 14: make's 124 execs turned every kept entry stale). A
 * kept entry's generation is the sum of Python's, the whole VM's and its thread's bucket:
 * each only grows, so the sum is unchanged only while all three are.
 */
#ifndef HVFS_CRED_BUMPS_H
#define HVFS_CRED_BUMPS_H

#include <stdint.h>
#include <sys/types.h>

#define TID_BUCKETS 256 /* credcache.TID_BUCKETS */
#define BUMPS_SIZE ((1 + TID_BUCKETS) * sizeof(uint64_t))

/* The bucket of tid in bumps (BUMPS_SIZE bytes): two threads may share one, which only
 * turns more kept entries stale. */
static inline uint64_t *
tid_bumps(uint64_t *bumps, pid_t tid)
{
    return bumps + 1 + (uint32_t)tid % TID_BUCKETS;
}

/* The generation's part C bumped that an entry of tid was kept under. */
static inline uint64_t
bumps_of(const uint64_t *bumps, pid_t tid)
{
    return bumps ? __atomic_load_n(&bumps[0], __ATOMIC_ACQUIRE) +
                       __atomic_load_n(tid_bumps((uint64_t *)bumps, tid), __ATOMIC_ACQUIRE)
                 : 0;
}

#endif
