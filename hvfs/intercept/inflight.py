"""The requests a manager has taken from a VM's listener and not yet answered, kept where
the next manager finds them.

A notification a supervisor has received stays pending until someone answers it; if the
manager that received it dies, no one else can receive it again. So each worker writes
the notification (the kernel's 80-byte ``struct seccomp_notif``, which holds all a
decoder needs) into its own slot of a shared memory file before serving it, notes there
what the request did once it is done (``performed``), and clears the slot after
answering. The file is deposited with the VM's shim. A manager that comes next answers a
request whose result is noted with that result, and serves again one that was not done
yet (an open that created a file again without O_EXCL); the shim answers them with EIO
when no manager came back in time (native/init/shim.c). Between a handler's change and
its note lies a window of microseconds in which a kill makes the request run twice.

A request noted RECEIVED may still have been performed (the kill came between the
change and its note): it is served again with the time it was received
(``Caller.replayed_since``), and the manager answers a change that shows it was made
since (a name gone, or made after that time) as done (hvfs.manager.replay).

Slot layout: the notification (80 bytes), the state (1 byte: RECEIVED, ANSWERED with the
errno at 84 and the value at 88, CONTINUED, or OPENED: an fd was made and not
installed), and the time it was received (ns since the epoch, at 96). After the slots,
8 bytes: the id of the last notification recorded. A manager killed between its receive
and its record leaves a notification no slot holds, which the kernel never delivers
again; notification ids of a listener are consecutive, so the next manager finds it by
probing the ids around this one (hvfs.intercept.orphans), and so does the shim when it
answers alone (native/init/shim.c ``answer_orphans``; it reads whole slots before them).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
from dataclasses import dataclass

from hvfs import api

NOTIF = 80  # sizeof(struct seccomp_notif); the shim reads the id at the start of each slot
SLOT = 104  # the shim's SLOT_SIZE
RECEIVED, ANSWERED, CONTINUED, OPENED = 0, 1, 2, 3
_RESULT = struct.Struct("<B3xiq")  # state, errno, value: at NOTIF
_RECEIVED_AT = struct.Struct("<q")  # at NOTIF + _RESULT.size
_ZERO_ID = bytes(8)
_LAST_ID = struct.Struct("<Q")  # after the slots


@dataclass(frozen=True)
class Pending:
    """A notification received and not answered yet, and what is known of its answer."""

    notification: bytes
    state: int
    errno: int
    value: int
    received_ns: int


class InflightTable:
    """Slots of requests in flight, one per worker. A slot is written by one thread only,
    so no lock is needed."""

    def __init__(self, slots: int, fd: int | None = None) -> None:
        """A new table of ``slots`` slots, or the one in the memory file ``fd`` (taken)."""
        if fd is None:
            fd = os.memfd_create("hvfs-inflight", os.MFD_CLOEXEC)
            os.ftruncate(fd, slots * SLOT + _LAST_ID.size)
        self.fd = fd
        size = os.fstat(fd).st_size
        self.slots = size // SLOT
        self._last_at = self.slots * SLOT
        if size < self._last_at + _LAST_ID.size:  # a table of a manager before the last id was kept
            os.ftruncate(fd, self._last_at + _LAST_ID.size)
        self._map = mmap.mmap(fd, self._last_at + _LAST_ID.size)

    def record(self, slot: int, notification: bytes) -> None:
        """Only the receiver records (one thread at a time), right after its receive."""
        self._map[self._last_at : self._last_at + 8] = notification[:8]
        at = slot * SLOT
        self._map[at + NOTIF : at + SLOT] = bytes(_RESULT.size) + _RECEIVED_AT.pack(time.time_ns())
        self._map[at : at + NOTIF] = notification

    def place(self, slot: int) -> tuple[mmap.mmap, int, int]:
        """Where the C loop (hvfs/_native/hotpath.c ``serve``) records what it answers
        itself, as ``record`` and ``performed`` would: the table's memory, the slot's
        offset, the last id's offset."""
        return self._map, slot * SLOT, self._last_at

    def performed(self, slot: int, response: api.Response) -> None:
        """Note what the request did, before it is answered."""
        if isinstance(response, api.Fd):  # the usual one first
            result = (OPENED, 0, 0)
        elif isinstance(response, api.Errno) and not response.signal:
            result = (ANSWERED, response.errno, 0)
        elif isinstance(response, api.Value):
            result = (ANSWERED, 0, response.value)
        elif isinstance(response, api.Continue):
            result = (CONTINUED, 0, 0)
        else:
            return  # reads that write back to memory: serving them again is the same
        at = slot * SLOT + NOTIF
        self._map[at : at + _RESULT.size] = _RESULT.pack(*result)

    def clear(self, slot: int) -> None:
        at = slot * SLOT
        self._map[at : at + 8] = _ZERO_ID

    def pending(self) -> list[Pending]:
        """What a manager before this one left in the table, emptied as it is read."""
        found = []
        for slot in range(self.slots):
            at = slot * SLOT
            if self._map[at : at + 8] != _ZERO_ID:
                state, error, value = _RESULT.unpack_from(self._map, at + NOTIF)
                (received,) = _RECEIVED_AT.unpack_from(self._map, at + NOTIF + _RESULT.size)
                found.append(Pending(bytes(self._map[at : at + NOTIF]), state, error, value, received))
                self.clear(slot)
        return found

    def last_id(self) -> int | None:
        """The id of the last notification recorded, if one was (ids start at random: 0
        is as good as never)."""
        (last,) = _LAST_ID.unpack_from(self._map, self._last_at)
        return last or None

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a worker's C loop still holds it (place): unmapped once it lets go
            self._map.close()
        os.close(self.fd)
