"""Requests a killed manager received and never recorded (hvfs.intercept.inflight): the
kernel holds them as sent, and will never deliver them again, so without this their
threads would wait for ever.

What the next manager relies on, all of it from the kernel (kernel/seccomp.c):

* The ids of one listener's notifications are consecutive (``next_id++``). The table
  keeps the id of the last one recorded; an orphan lies just after it (or just before,
  when another worker received meanwhile): ``PROBE`` ids either side are asked.
* ``NOTIF_ID_VALID`` succeeds only for a notification in the SENT state: received, not
  answered, its thread still waiting.
* A thread waiting in a notification sleeps in the seccomp code (``/proc/TID/wchan``),
  and ``/proc/TID/syscall`` shows the call's number, arguments and instruction pointer,
  which cannot change while it sleeps: all of ``struct seccomp_data`` but the arch, which
  is the VM's.

The orphan's thread is among the VM's threads waiting in seccomp; the others wait in a
notification that was recorded (its pid is known) or not yet received. So the search
looks at the threads first, then receives what is queued (each of those threads was
queued before it was seen asleep): the waiting threads left are the orphans' own. One
orphan and one such thread, the usual case, make a pair; anything else is not told
apart safely, and the orphans are answered EIO: a program sees an error, never a hang,
and never a call run unchecked.
"""

from __future__ import annotations

import errno
import os
import select
from dataclasses import dataclass

from hvfs._sys import notify

PROBE = 256  # ids asked either side of the last one recorded
_ID_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Found:
    """What a check of a VM's notifications found: served, received, and unexplained."""

    served: list[notify.Notif]  # orphans, rebuilt from their threads
    received: list[notify.Notif]  # notifications queued meanwhile, taken to tell the threads apart
    unexplained: list[int]  # orphan ids no thread could be paired with


def probe(listener: int, around: int, recorded: set[int]) -> list[int]:
    """The ids near ``around`` that are pending with no record of them."""
    ids = ((around + delta) & _ID_MASK for delta in range(-PROBE, PROBE + 1))
    return [i for i in ids if i not in recorded and notify.id_valid(listener, i)]


def pid_namespace(pid: int) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/pid")
    return st.st_dev, st.st_ino


def _call(tid: int) -> tuple[int, ...] | None:
    """Number, six arguments and instruction pointer of the call ``tid`` sleeps in within
    seccomp, or None."""
    try:
        with open(f"/proc/{tid}/wchan") as f:
            if "seccomp" not in f.read():
                return None
        with open(f"/proc/{tid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return None
    if len(fields) != 9:  # "running", or -1 and a stack pointer: in no call
        return None
    values = [int(field, 0) for field in fields]
    return (values[0], *values[1:7], values[8])


def waiting_threads(namespace: tuple[int, int] | None) -> dict[int, tuple[int, ...]]:
    """The threads of the pid namespace ``namespace`` waiting in seccomp, with their call."""
    found: dict[int, tuple[int, ...]] = {}
    if namespace is None:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if pid_namespace(int(entry)) != namespace:
                continue
            tids = os.listdir(f"/proc/{entry}/task")
        except OSError:
            continue
        for tid in map(int, tids):
            call = _call(tid)
            if call is not None:
                found[tid] = call
    return found


def _drain(listener: int) -> list[notify.Notif]:
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    received = []
    while any(events & select.POLLIN for _, events in poller.poll(0)):
        try:
            received.append(notify.receive(listener))
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EINTR):
                raise
    return received


def find(listener: int, orphans: list[int], known: set[int], namespace: tuple[int, int] | None, audit: int) -> Found:
    """Pair the ``orphans`` with the threads of ``namespace`` waiting in them; ``known``:
    the pids of the recorded notifications still pending. Call it before any worker
    receives: what it receives is the caller's to serve."""
    waiting = waiting_threads(namespace)
    received = _drain(listener)
    explained = known | {n.pid for n in received}
    threads = [(tid, call) for tid, call in waiting.items() if tid not in explained]
    if len(orphans) == 1 and len(threads) == 1:
        tid, call = threads[0]
        # Read again, then the id: still pending, so the thread still waits in that call.
        if _call(tid) == call and notify.id_valid(listener, orphans[0]):
            return Found([notify.notif(orphans[0], tid, call[0], audit, call[7], call[1:7])], received, [])
    return Found([], received, orphans)
