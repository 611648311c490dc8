/* A served request's compact record: what its event says, as plain bytes (a Python bytes
 * object in the ring), made on the serving thread by record.c and read by audit.c and by
 * hvfs.api.compact (the Python reader: the fallback writer and the lazy Events).
 *
 * Why: a record that held the request, the response and a tuple of new objects kept all
 * of them alive until the writer had written them, thousands at a time: each request then
 * allocated fresh memory instead of the blocks the last one freed, and the writer paid
 * their deallocation under the GIL (measured: half to two thirds of what the audit added
 * to a served stat). The compact record keeps nothing of the request's objects.
 *
 * Layout, native byte order (the record never leaves this process):
 *   CompactHead, then ``fields`` uint32 lengths, then the fields' bytes one after another:
 *   the operation, the result and the value as JSON text (written as they are); the VM,
 *   the command name, answered_by (COMPACT_NONE: null) and each path as UTF-8, a lone
 *   surrogate (a name that is not UTF-8, decoded with surrogateescape) as surrogatepass
 *   encodes it, so that the writer can escape it as json and events.py do.
 * hvfs/api/compact.py's HEAD is this struct's format. */
#ifndef HVFS_COMPACT_H
#define HVFS_COMPACT_H

#include <stdint.h>

typedef struct {
    double time;          /* unix time when the request arrived */
    int64_t pid;
    int64_t flags;        /* 0 for a request without flags */
    int64_t duration_us;
    uint32_t fields;      /* COMPACT_PATHS + the number of paths */
    uint32_t magic;       /* COMPACT_MAGIC: a compact record, not any bytes */
} CompactHead;

enum { COMPACT_OPERATION, COMPACT_RESULT, COMPACT_VALUE, COMPACT_VM, COMPACT_COMM, COMPACT_BY, COMPACT_PATHS };

#define COMPACT_MAGIC 0x31465648u /* "HVF1" */
#define COMPACT_NONE 0xffffffffu  /* the length of an absent answered_by */

#endif
