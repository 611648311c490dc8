"""The tracer thread's scheduling: a stopped tracee waits for it, not for the CPU.

Every stop of a traced VM (a new process's first stop, an exec event, an exit the real
parent hears of only once the tracer has reaped it, a served call) sleeps until the
tracer thread is woken *and runs*. On a loaded machine the woken tracer queues behind
whatever the CPU runs, and the VM's process it would resume waits behind it (bpftrace,
load 7 on 2 CPUs: 1.3 ms per `hvfs run -- true` on average; benchmarks/startup_breakdown.md,
"The tracer's wake-ups"). The least EEVDF slice the kernel takes (``sched_runtime`` of a
SCHED_OTHER thread, Linux 6.12+, no privilege needed) gives the woken thread an earlier
deadline, so that it is picked before the task running ends its slice; it only ever
runs a few microseconds per stop, so a short slice costs it nothing. Its nice value and
its share of the CPU stay as they were (raising a priority is refused in the manager's
user namespace anyway: CAP_SYS_NICE counts in the initial one).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from hvfs._sys.libc import syscall

SLICE_NS = 100_000  # the kernel's least (a shorter one is raised to it)
SCHED_OTHER = 0


class _SchedAttr(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("policy", ctypes.c_uint32),
        ("flags", ctypes.c_uint64),
        ("nice", ctypes.c_int32),
        ("priority", ctypes.c_uint32),
        ("runtime", ctypes.c_uint64),
        ("deadline", ctypes.c_uint64),
        ("period", ctypes.c_uint64),
    ]


def hasten() -> bool:
    """Give the calling thread (the tracer) the least slice; False where the kernel refuses
    it (a kernel before 6.12 takes it and keeps its own slice)."""
    tid = threading.get_native_id()
    nice = os.getpriority(os.PRIO_PROCESS, tid)  # kept: sched_setattr sets it too
    attr = _SchedAttr(ctypes.sizeof(_SchedAttr), SCHED_OTHER, 0, nice, 0, SLICE_NS, 0, 0)
    try:
        syscall("sched_setattr", tid, ctypes.byref(attr), 0)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.E2BIG):
            return False
        raise
    return True
