/* What the seccomp driver's C loop hands record.c for an audited request it served, without
 * the GIL (served_audit.h -> record.c's detached.h), and the capsule it finds record.c by.
 * Shared by hotpath.c and record.c, two extensions: the loop calls record.c through the
 * function in the capsule, never through Python. Include after Python.h. */
#ifndef HVFS_RAW_EVENT_H
#define HVFS_RAW_EVENT_H

#include <stddef.h>
#include <stdint.h>

/* the prototypes' order; AUDIT_FAILED's response is an Errno, its type made for a failure's errno;
 * AUDIT_READLINK's a Value, made with the link's whole length (the Data's); AUDIT_CONTINUED's
 * request is never read, its response is any continued request's; AUDIT_MKDIR and AUDIT_RMDIR
 * after it (served_dirs.h), so that the indices before stay as they were */
enum { AUDIT_STAT, AUDIT_STATX, AUDIT_OPEN, AUDIT_UNLINK, AUDIT_CHMOD, AUDIT_CHOWN, AUDIT_UTIMENS, AUDIT_FAILED,
       AUDIT_READLINK, AUDIT_ACCESS, AUDIT_CONTINUED, AUDIT_MKDIR, AUDIT_RMDIR, AUDIT_KINDS };

#define RAW_API_CAPSULE "hvfs._native._record._raw_api"

/* A served request as the C loop knows it (served_audit.h's served_note): borrowed for the call. */
struct raw_event {
    int kind;        /* served_audit.h AUDIT_*: the index of its (request, response) prototype */
    int error;       /* the errno answered (a mutation's), or 0 */
    int continued;   /* continued in the VM: any kind's Continue */
    int64_t value;   /* AUDIT_READLINK: the link's length */
    int64_t pid;     /* the caller */
    uint64_t flags;  /* the decoder's flags, for a flagged kind */
    int64_t began;   /* CLOCK_MONOTONIC ns when it arrived */
    const char *vm;  /* the VM's name, UTF-8 */
    size_t vm_length;
    const char *name; /* the path as served: the bytes the Python handler would note */
    size_t name_length;
};

struct raw_api {
    /* Record ``event`` into the ring ``sink`` points to (a record.c Sink), without the GIL:
     * the clocks and the command name read now, the entry in the ring before the request is
     * answered; on a full ring wait up to its FULL_WAIT, then count it lost. Nothing where
     * the sink holds no ring (the audit went). Never fails the request. */
    void (*record)(PyObject *sink, const struct raw_event *event);
};

#endif
