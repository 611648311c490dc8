"""How much a service's store may still take: its own bound, and its file system's margin.

The backup store and the quarantine copy what VMs write, so a VM could fill the host's
disk through them. Every byte they are about to write is first taken from a Space,
which refuses (``NoRoom``, whose message says which bound) when

- the store would pass its own bound (``limit``, as ``--backup-max-store`` sets): what
  it holds (``used()``, the caller's measure) plus what this process is writing into it
  now (taken and not yet given back), or
- the store's file system would have less free space (what an unprivileged user may
  still allocate: ``f_bavail``) than a margin: 5% of its size, at most 1 GiB. The
  margin holds whatever else writes there, other stores and processes included, since
  free space is asked of the kernel each time.

A writer takes bytes as it writes them and gives them back when it has committed them
(they are then in ``used()``) or thrown them away. Writers in other processes are seen
only once committed (``used()``) or allocated (free space): a store shared by several
managers at once may pass its bound by what they write at the same moment.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

from hvfs.services.units import format_size

_MARGIN_SHARE = 20  # keep 1/20 of the file system free
_MARGIN_MAX = 1 << 30


class NoRoom(OSError):
    """A write would pass a store's bound: ENOSPC, whose strerror names the bound (what a
    "skipped: …" event says). An OSError, so that callers that survive a full disk
    survive this too."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.ENOSPC, reason)


def margin_of(st: os.statvfs_result) -> int:
    """The free space to keep on a file system: 5% of its size, at most 1 GiB."""
    return min(st.f_blocks * st.f_frsize // _MARGIN_SHARE, _MARGIN_MAX)


class Space:
    """The room left in the store at ``root`` (see the module's docstring). ``name`` is
    the bound as the user sets it (``backup-max-store``), for messages. Thread-safe."""

    def __init__(
        self,
        root: str,
        *,
        name: str,
        limit: int | None = None,
        used: Callable[[], int] = lambda: 0,
        margin: int | None = None,
    ) -> None:
        self.root, self.name, self.limit = root, name, limit
        self._used = used
        self._margin = margin  # None: margin_of the file system
        self._lock = threading.Lock()
        self._writing = 0  # taken by this process's writers, not yet given back

    def take(self, size: int) -> None:
        """Count ``size`` more bytes as being written, or raise NoRoom (counting nothing)."""
        st = os.statvfs(self.root)
        free, margin = st.f_bavail * st.f_frsize, margin_of(st) if self._margin is None else self._margin
        if free - size < margin:
            raise NoRoom(f"{format_size(free)} free on the store's file system, which keeps {format_size(margin)}")
        used = self._used() if self.limit is not None else 0
        with self._lock:
            if self.limit is not None and used + self._writing + size > self.limit:
                raise self._full(used + self._writing, size)
            self._writing += size

    def give_back(self, size: int) -> None:
        with self._lock:
            self._writing -= size

    def admit(self, committed: int, size: int, *, writing: int = 0) -> None:
        """A commit's last check: raise NoRoom unless a store holding ``committed`` bytes
        may take ``size`` more, ``writing`` of which the caller has taken already."""
        if self.limit is None:
            return
        with self._lock:
            others = self._writing - writing
        if committed + others + size > self.limit:
            raise self._full(committed + others, size)

    def _full(self, held: int, size: int) -> NoRoom:
        assert self.limit is not None
        return NoRoom(f"store at {format_size(held)} + {format_size(size)} > {self.name} {format_size(self.limit)}")
