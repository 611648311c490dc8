"""Fds that name threads of a VM (a procfs file, a pidfd), kept open by one worker from
request to request: opening one costs more than using it, and requests come in runs from
the same few threads.

Keeping them is correct across pid reuse because such an fd names the thread's ``struct
pid``, not its number. A number belongs to one live thread at a time, and a ``struct
pid`` never gets a thread again once its own has been reaped: using a kept fd then fails
(ESRCH) however the number has been reused, and the caller opens a new one by number. So
whatever a kept fd yields came from the thread that held the number at that moment, which
is the notifying thread as long as its notification is valid; every request checks
``NOTIF_ID_VALID`` after its reads, so a request never acts on another thread's answer.
(A pidfd of a thread-group leader, which kernels before 6.9 give instead of one of the
thread, names another thread and must not be kept.)
"""

from __future__ import annotations

import os


class KeptFds:
    """Thread ids to fds, at most ``LIMIT``, the oldest closed first. Not thread-safe: one
    per worker thread (one worker closing an fd another is using could make that one use
    whatever file reuses the number)."""

    LIMIT = 8  # a few per VM and worker: a manager may serve many VMs

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}

    def get(self, tid: int) -> int | None:
        return self._fds.get(tid)

    def keep(self, tid: int, fd: int) -> None:
        """Keep ``fd`` (which now belongs to this object) as the fd of ``tid``."""
        self.drop(tid)
        if len(self._fds) >= self.LIMIT:
            os.close(self._fds.pop(next(iter(self._fds))))
        self._fds[tid] = fd

    def drop(self, tid: int) -> None:
        """Close the fd of ``tid``, whose thread is gone."""
        fd = self._fds.pop(tid, None)
        if fd is not None:
            os.close(fd)

    def __len__(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
