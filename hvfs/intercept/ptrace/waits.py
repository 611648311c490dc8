"""The ptrace driver's waits through its C loop (hvfs/_native/tracer.c's wait_stop), and the
counts of what that loop did meanwhile: the stops it passed, the calls it served, the exits
it reaped, each handed to the tracer's bookkeeping before the status it returns. Without
the C loop (not built, or HVFS_NATIVE=0), the exec tracer's waits."""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING

from hvfs import deferred
from hvfs._native import tracer as native_tracer
from hvfs.api import Transport
from hvfs.intercept.exec_tracer import ExecTracer
from hvfs.intercept.ptrace.stopped import Stop

if TYPE_CHECKING:
    from hvfs.intercept.credcache import CredWatch
    from hvfs.intercept.ptrace.execs import ExecChecks
    from hvfs.intercept.ptrace.kept import KeptSockets
    from hvfs.intercept.ptrace.writes import WritesHere

log = deferred.logger("hvfs.driver")

HERE_BIRTHS, HERE_EXECS = 1, 2  # tracer.c's: what its wait_stop may answer itself


class LoopWaits(ExecTracer):
    """The exec tracer's waits, through the C loop where it is built; ``served`` counts what
    the loop served and passed (``--stats``). What it reads of the tracer (its kept sockets,
    its execs to verify, its write-opens served in C) is the tracer's (tracer.py)."""

    judging: bool
    _sockets: KeptSockets
    _execs: ExecChecks
    _writes: WritesHere
    _creds: CredWatch

    def __init__(self, init_pid: int, vm: str, transport: Transport) -> None:
        super().__init__(init_pid, vm, transport)
        # Stops the last wait collected after its status (tracer.c's ``queued``), and
        # whether more may be pending than it took.
        self._queued: deque[Stop] = deque()
        self._more = False
        self.served = {"calls": 0, "continued": 0, "answered": 0, "installed": 0, "passed": 0, "execs_passed": 0}
        self.served.update(written_here=0, unlinked_here=0, fdmeta_here=0, dev_continued_here=0)  # C's: tracer_*.h

    def _wait_status(self) -> Stop:
        """The next status Python must handle. The C loop (hvfs/_native/tracer.c) resumes the
        stops that need no decision itself (counted as ``passed``), reads a seccomp stop's
        registers and, in the same call, collects the stops already pending after it
        (``_queued``, for ``_pending_stop``); without it, every status, as the exec tracer waits."""
        if native_tracer is None:
            return super()._wait_status()
        while True:
            pid, status, raw, queued, more, ended = self._waited(False)
            if pid:
                self._queued.extend(queued)
                self._more = more
                return pid, status, raw
            met = self._met(queued) if queued else None
            if met is not None:
                return met
            if ended:  # those exits were the last: no second wait (its GIL on the VM's exit path) to learn it
                raise ChildProcessError("no tracee left")

    def _pending_stop(self) -> Stop | None:
        if native_tracer is None:
            return super()._pending_stop()
        if self._queued:
            return self._queued.popleft()
        if not self._more:  # the last wait took every stop pending then
            return None
        pid, status, raw, queued, _, _ = self._waited(True)  # exits: only a served call's, in ``exits``
        if not pid and queued:
            return self._met(queued)
        self._more = bool(pid)
        return (pid, status, raw) if pid else None

    def _met(self, stops: tuple[Stop, ...]) -> Stop | None:
        """The stops of other tracees that an install served in C met (pid 0 from the wait, the
        exits it met among ``exits``), queued, and more may be pending: the first that still
        stands (a leader's may have been ended by a sibling's exec since), as the wait's status;
        None when none does."""
        self._queued.extend(stops)
        self._more = True
        while self._queued:
            pid, status, raw = self._queued.popleft()
            if self._stands(pid, status):
                return pid, status, raw
        return None

    def _waited(self, pending: bool) -> tuple[int, int, bytes | None, tuple[Stop, ...], bool, bool]:
        """One wait of the C loop (tracer.c's wait_stop), what it did meanwhile taken into account
        first: stops passed, calls served there, exits reaped; last, whether none is left after those."""
        found = native_tracer.wait_stop(pending, self._here(), self._writes.argument())
        pid, status, raw, passed, execs, exits, queued, more, *done, ended = found
        self._passed(passed, execs)
        self._served_here(*done)  # served, doubted, unlinked, changed, continued: tracer.c's order
        self._exited(exits)
        return pid, status, raw, queued, more, ended

    def _exited(self, exits: tuple[tuple[int, int], ...]) -> None:
        """Exits the C loop reaped and waited past, or an install's wait met (stopped.py's
        ``reaped``), handled in their order, before the status it returned (a pid among them
        may be a new tracee's by then). A stop of theirs still pending (the round, the last
        wait's queue) was taken before they were reaped: it stands no more, and is dropped
        before the number can name another thread's."""
        if exits and (self._round or self._queued):
            ended = {pid for pid, status in exits if os.WIFEXITED(status) or os.WIFSIGNALED(status)}
            for pending in (self._round, self._queued):
                standing = [stop for stop in pending if stop[0] not in ended]
                pending.clear()
                pending.extend(standing)
        for pid, status in exits:
            try:
                self._on_status(pid, status)
            except Exception:  # as the loop's: never let the thread die
                log.exception("ptrace driver of VM %s: cannot handle the exit %#x of pid %d", self._vm, status, pid)

    def _here(self) -> int:
        """The events the C loop may answer itself until it returns, because this would do
        nothing at them but resume: births while no process of the VM holds a kept socket
        (none to give up, none copied), and a leader's exec while, besides, no exec waits
        to be verified (``execs``) and none is judged. Read before each wait: only this
        thread plants a socket or notes an exec, between two waits."""
        if not self._sockets.empty():
            return 0
        if self.judging or not self._execs.empty():
            return HERE_BIRTHS
        return HERE_BIRTHS | HERE_EXECS

    def _served_here(self, served: int, doubted: tuple[int, ...], unlinked: int, changed: int, continued: int) -> None:
        """Write-opens, unlinks, fd metadata changes served in C meanwhile, device write-opens let run there; the
        threads whose socket it doubts (a receive that failed) given up, before the exits of the same wait."""
        self._writes.done(doubted)
        if served or unlinked or changed or continued:
            self.served["calls"] += served + unlinked + changed + continued
            self.served["installed"] += served
            self.served["answered"] += unlinked + changed
            self.served["continued"] += continued
            self.served["dev_continued_here"] += continued
            self.served["written_here"] += served
            self.served["unlinked_here"] += unlinked
            self.served["fdmeta_here"] += changed
            with self._lock:
                self._counts["stops"] += served + unlinked + changed + continued

    def _passed(self, passed: int, execs: int) -> None:
        if execs:
            # As at an exec event handled here (``_on_exec``), before any later stop is read.
            self._creds.changed()
            self.served["execs_passed"] += execs
        if passed:
            self.served["passed"] += passed
            with self._lock:
                self._counts["stops"] += passed
                self._counts["execs"] += execs
