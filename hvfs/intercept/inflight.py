"""The requests a manager has taken from a VM's listener and not yet answered, kept where
the next manager finds them.

A notification a supervisor has received stays pending until someone answers it; if the
manager that received it dies, no one else can receive it again. So each worker writes
the notification (the kernel's 80-byte ``struct seccomp_notif``, which holds all a
decoder needs) into its own slot of a shared memory file before serving it, and clears
the slot after answering. The file is deposited with the VM's shim: a manager that comes
next re-serves what it finds there (if the notification is still valid), and the shim
answers it with EIO when no manager came back in time (native/init/shim.c).
"""

from __future__ import annotations

import mmap
import os

SLOT = 80  # sizeof(struct seccomp_notif), as the shim reads it
_ZERO_ID = bytes(8)


class InflightTable:
    """Slots of notifications in flight, one per worker. Writes of one slot come from one
    thread only, so no lock is needed."""

    def __init__(self, slots: int, fd: int | None = None) -> None:
        """A new table of ``slots`` slots, or the one in the memory file ``fd`` (taken)."""
        if fd is None:
            fd = os.memfd_create("hvfs-inflight", os.MFD_CLOEXEC)
            os.ftruncate(fd, slots * SLOT)
        self.fd = fd
        self.slots = os.fstat(fd).st_size // SLOT
        self._map = mmap.mmap(fd, self.slots * SLOT)

    def record(self, slot: int, notification: bytes) -> None:
        at = slot * SLOT
        self._map[at : at + SLOT] = notification

    def clear(self, slot: int) -> None:
        at = slot * SLOT
        self._map[at : at + 8] = _ZERO_ID

    def pending(self) -> list[bytes]:
        """The notifications left in the table (by a manager that died serving them)."""
        found = []
        for slot in range(self.slots):
            at = slot * SLOT
            if self._map[at : at + 8] != _ZERO_ID:
                found.append(bytes(self._map[at : at + SLOT]))
                self.clear(slot)
        return found

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
