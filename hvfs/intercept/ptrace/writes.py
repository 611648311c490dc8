"""A quiet VM's plain write-opens, unlinks and fd metadata changes served in the ptrace
driver's C loop (hvfs/_native/tracer_write.h, tracer_unlink.h, tracer_fdmeta.h): what that
loop is handed at each wait, and what it hands back.

The C loop serves what the seccomp driver's serves (served_write.h, through the same
write_open.h), as the caller, under the credentials this driver's ``KnownCredentials``
published for the thread (``served_stat.switch_of``), then installs the file through the
process's kept socket (``kept.py``: only a socket still its process's own, kcmp-checked
before the open and after the receive); an unlink as served_mutate.h's serve_unlink removes
it, and a fchmod, fchown or futimens of a file on the writable view's own mounts as
served_fdmeta.h changes it, each answered at its stop (nothing installed, no socket needed).
``HVFS_SERVED_WRITE=0`` turns them all off, as for the seccomp driver.

Why a thread's published credentials are its own at its open: the tracer thread takes the
VM's stops one at a time, and every call that may change credentials (the filter stops
``Handling.CREDS`` calls; a thread-group leader's exec event while a socket is kept: the C
loop leaves every event to Python then) is handled in Python, which bumps the watch's
generation before the call runs (``Serving._credentials_change``, ``_on_exec``); the C loop
checks each record's generation against the watch as it reads it. A thread stopped at its
open changes nothing meanwhile. A record names its thread by a PIDFD_THREAD pidfd, polled
before use: a thread that died (its number maybe reused) is never taken for another.
"""

from __future__ import annotations

from collections.abc import Callable

from hvfs._native import tracer as native_tracer
from hvfs._sys import tracing
from hvfs.api import Credentials
from hvfs.intercept import served_stat
from hvfs.intercept.credcache import CredWatch, KnownCredentials, Switch
from hvfs.intercept.ptrace.kept import KeptSockets


class WritesHere:
    """One tracer's write-opens served in C: off until ``serve`` (a run's ``ServedStat``
    with writes), and only where the C loop is built and credentials may be published."""

    def __init__(self, watch: CredWatch) -> None:
        self._watch = watch
        wanted = native_tracer is not None and served_stat.writes_wanted()
        # Whom the C loop may act as: given to the tracer's Inspector, which publishes them.
        self.publish: Callable[[Credentials], Switch | None] | None = served_stat.switch_of if wanted else None
        self._served: served_stat.ServedStat | None = None
        self._known: KnownCredentials | None = None
        self._sockets: KeptSockets | None = None

    def bind(self, known: KnownCredentials, sockets: KeptSockets) -> None:
        """The tracer's published credentials and kept sockets, which each wait hands to C."""
        self._known, self._sockets = known, sockets

    def serve(self, served: served_stat.ServedStat) -> bool:
        """Serve the VM's write-opens in C from the next wait on (what ``served.writes``
        says); False where it cannot: not built, not published, no writes, or no kcmp
        (nothing installed could be checked)."""
        if self.publish is None or served.writes is None or not tracing.kcmp_works():
            return False
        self._served = served
        return True

    def argument(self) -> tuple[object, ...] | None:
        """wait_stop's ``writes``: the writable view, the change set's c_note, the bus's quiet
        flag, the watch, the published credentials, the counts, the kept sockets' table and
        the writable view's own mounts; None while nothing is served in C."""
        served, known, sockets = self._served, self._known, self._sockets
        if served is None or served.writes is None or known is None or sockets is None:
            return None
        rw_root, note = served.writes
        watch = self._watch
        table = sockets.table()
        return (
            rw_root,
            note,
            served.quiet,
            watch.shared,
            watch.bumps,
            known.published,
            served.counts,
            table,
            served.own_mounts,
        )

    def done(self, doubted: tuple[int, ...]) -> None:
        """The threads whose socket a failed receive in C doubts: given up (drained), as the
        Python path gives one up."""
        if self._sockets is not None:
            for tid in doubted:
                self._sockets.give_up(tid)
