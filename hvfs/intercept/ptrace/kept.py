"""One socket kept in each traced process, for its served opens (``stopped.py`` uses it):
with a socket already in the process, a served open costs one injected ``recvmsg``
instead of ``socket``, ``recvmsg`` and ``close``.

Safety rests on three facts checked, never assumed:

* **Only its own fd table holds it.** The socket is made by the process itself, moved to
  a high number (``HIGH`` or above) with ``FD_CLOEXEC``. A fork copies the fd table: at
  the parent's fork, vfork or clone event (a clone that shares neither the thread group
  nor the fd table) its socket is given up, never sent on again, and the next served open
  plants another one over the same number. A child whose first stop comes before its
  parent's event (their order is not fixed) gives up every socket of the VM: the doubt
  costs a re-plant, never a file. An exec closes it (CLOEXEC): given up at the exec event.
* **The number still names it.** Before each use, ``kcmp(KCMP_FILE)`` of the process's
  number against the driver's own duplicate of the socket: a VM that closed the number,
  or put another file there (dup2), gets a new socket planted, never a receive on what it
  put there.
* **What was received is the manager's file.** After the ``recvmsg``, ``kcmp`` of the
  number read back against the manager's file: a VM that sent something of its own on its
  socket, read the file first from another thread, or scribbled on the scratch buffer,
  gets EIO, and its socket is given up (drained: nothing is left in it).

The driver sends on its duplicate with the socket's own address as the destination, so
the file reaches that very socket or nothing (a socket the VM reconnected elsewhere
refuses it). A VM may pass its socket to another process (SCM_RIGHTS): that is the same
as passing the files it is served on it, which it may do anyway.
"""

from __future__ import annotations

import array
import contextlib
import socket
import struct
from dataclasses import dataclass

from hvfs._sys import tracing

HIGH = 1000  # the lowest number a kept socket takes: out of the way of a program's own numbers
# One thread's kept socket for the C loop (tracer_write.h struct kept_entry): tid, number, the
# driver's duplicate, the address's length and the address.
KEPT_ENTRY = struct.Struct("<iiiI108s")


@dataclass
class Kept:
    """A socket of the VM's process at ``number``; ``sock`` is the driver's duplicate of it,
    ``address`` its abstract name (the destination of every send)."""

    number: int
    sock: socket.socket
    address: bytes

    def holds(self, pid: int) -> bool:
        """Whether ``pid``'s ``number`` is still this socket."""
        return tracing.same_file(pid, self.number, self.sock.fileno())

    def send(self, fd: int) -> None:
        self.sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0, self.address)

    def drain(self) -> None:
        """Any file queued in it closed here: a file sent for a receive that failed is not
        left for the VM to take later."""
        with contextlib.suppress(OSError):
            while True:
                _, ancillary, _, _ = self.sock.recvmsg(1, socket.CMSG_SPACE(64 * 4), socket.MSG_DONTWAIT)
                for level, kind, data in ancillary:
                    if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                        fds = array.array("i")
                        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                        for fd in fds:
                            with contextlib.suppress(OSError):
                                socket.close(fd)

    def close(self) -> None:
        self.drain()
        self.sock.close()


class KeptSockets:
    """The kept socket of each process of one VM (by thread group), and the given-up ones
    still to be replaced in place (``stale``): only for their number, never sent on."""

    def __init__(self, init_pid: int) -> None:
        self._kept: dict[int, Kept] = {}
        self._stale: dict[int, Kept] = {}
        self._refused: set[int] = set()  # processes where a socket cannot be moved high (NOFILE)
        self._groups: dict[int, int] = {init_pid: init_pid}  # tid -> tgid, of the threads seen
        self.planted = 0
        self._table: bytes | None = b""  # ``table``'s, None once anything above changed

    def table(self) -> bytes:
        """Every thread seen whose process keeps a socket, as KEPT_ENTRY records: what the C
        loop serves write-opens through (tracer_write.h), checked there by kcmp before use.
        A thread not in it is Python's. Made again only after a change."""
        if self._table is None:
            records = []
            for tid, tgid in self._groups.items():
                kept = self._kept.get(tgid)
                if kept is not None and len(kept.address) <= 108:
                    records.append(
                        KEPT_ENTRY.pack(tid, kept.number, kept.sock.fileno(), len(kept.address), kept.address)
                    )
            self._table = b"".join(records)
        return self._table

    def group(self, tid: int) -> int:
        tgid = self._groups.get(tid)
        if tgid is None:
            tgid = _tgid_of(tid)
            self._groups[tid] = tgid
            self._table = None
        return tgid

    def usable(self, tid: int) -> Kept | None:
        """The process's kept socket, if its number still names it; else given up."""
        tgid = self.group(tid)
        kept = self._kept.get(tgid)
        if kept is None or kept.holds(tid):
            return kept
        self.give_up(tid)
        return None

    def unchecked(self, tid: int) -> Kept | None:
        """The process's kept socket, its number not checked here: for a caller that checks
        it before it sends (the C loop's ``receive``), and gives it up when it fails."""
        return self._kept.get(self.group(tid))

    def empty(self) -> bool:
        """No socket kept or given up in any process, none refused: a birth or an exec
        changes nothing here (bar ``_groups``, which ``group`` reads again from /proc)."""
        return not (self._kept or self._stale or self._refused)

    def may_keep(self, tid: int) -> bool:
        """Not without kcmp (nothing could be checked), nor where it was refused."""
        return tracing.kcmp_works() and self.group(tid) not in self._refused

    def stale_number(self, tid: int) -> int | None:
        """The number of a given-up socket of this process that still holds it there: the
        place for the next one (so that a fork never leaves one more fd behind)."""
        stale = self._stale.get(self.group(tid))
        return stale.number if stale is not None and stale.holds(tid) else None

    def keep(self, tid: int, kept: Kept) -> None:
        self._table = None
        tgid = self.group(tid)
        self._drop(self._stale, tgid)
        self._drop(self._kept, tgid)
        self._kept[tgid] = kept
        self.planted += 1

    def refuse(self, tid: int) -> None:
        self._refused.add(self.group(tid))

    def give_up(self, tid: int) -> None:
        """Never sent on again; kept as stale, for its number."""
        self._table = None
        tgid = self.group(tid)
        kept = self._kept.pop(tgid, None)
        if kept is not None:
            kept.drain()
            self._drop(self._stale, tgid)
            self._stale[tgid] = kept

    def forked(self, parent: int, child: int, thread: bool) -> None:
        """At the parent's fork/vfork/clone event: a child process has a copy of its
        parent's socket, so the parent's is given up (both replace it in place later)."""
        self._table = None
        if thread:
            self._groups[child] = self.group(parent)
            return
        self._groups[child] = child  # announced: its first stop doubts nothing
        self.give_up(parent)
        stale = self._stale.get(self.group(parent))
        if stale is not None:
            self._drop(self._stale, child)
            copy = socket.socket(fileno=socket.dup(stale.sock.fileno()))
            self._stale[child] = Kept(stale.number, copy, stale.address)

    def first_stop(self, tid: int) -> None:
        """A thread's first stop. A new process whose parent's event was not seen yet may hold
        a copy of any socket of the VM: every one is given up."""
        self._table = None
        if tid not in self._groups and self.group(tid) == tid:
            for tgid in list(self._kept):
                self.give_up(tgid)

    def executed(self, pid: int, former: int) -> None:
        """An exec closed the process's socket (CLOEXEC), given up or not."""
        self._table = None
        self._groups.pop(former, None)
        self._groups[pid] = pid
        self._drop(self._kept, pid)
        self._drop(self._stale, pid)
        self._refused.discard(pid)

    def exited(self, tid: int) -> None:
        self._table = None
        tgid = self._groups.pop(tid, None)
        if tgid == tid:
            self._drop(self._kept, tid)
            self._drop(self._stale, tid)
            self._refused.discard(tid)

    def close(self) -> None:
        self._table = None
        for table in (self._kept, self._stale):
            for tgid in list(table):
                self._drop(table, tgid)

    @staticmethod
    def _drop(table: dict[int, Kept], tgid: int) -> None:
        kept = table.pop(tgid, None)
        if kept is not None:
            kept.close()


def _tgid_of(tid: int) -> int:
    """The thread group of ``tid``; ``tid`` itself when unreadable (then nothing is shared
    with another thread's entry: at worst one more socket)."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid
