"""The ptrace driver's tracer: one thread that traces every process of a VM and serves
the calls its filter stops (the design: ``hvfs.intercept.ptrace``). The exec tracer's
handling of forks, threads, execs, signals and group-stops, with the kept sockets' and the
checked execs' bookkeeping at each; the waits are waits.py's, the service serving.py's."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from hvfs import deferred
from hvfs._native import tracer as native_tracer
from hvfs._sys import tracing
from hvfs._sys.abi import CLONE_FILES, CLONE_THREAD
from hvfs.api import Transport
from hvfs.intercept import served_stat
from hvfs.intercept.arch import Arch
from hvfs.intercept.compiled import credential_calls, decoders_for
from hvfs.intercept.credcache import CredWatch
from hvfs.intercept.driver import _Unbound
from hvfs.intercept.exec_tracer import OPTIONS
from hvfs.intercept.ptrace.execs import ExecChecks
from hvfs.intercept.ptrace.kept import KeptSockets
from hvfs.intercept.ptrace.serving import Serving
from hvfs.intercept.ptrace.stopped import CLONE
from hvfs.intercept.ptrace.writes import WritesHere
from hvfs.intercept.tracee import Inspector

log = deferred.logger("hvfs.driver")

_NEW_TRACEE = (tracing.PTRACE_EVENT_FORK, tracing.PTRACE_EVENT_VFORK, tracing.PTRACE_EVENT_CLONE)


class Tracer(Serving):
    """The exec tracer's handling of forks, threads, execs, signals and group-stops, and
    the seccomp stops served here; execs are judged only while ``judging``."""

    options = OPTIONS | tracing.PTRACE_O_TRACESECCOMP | tracing.PTRACE_O_TRACESYSGOOD

    def __init__(self, init_pid: int, vm: str, transport: Transport | None, arch: Arch) -> None:
        super().__init__(init_pid, vm, transport if transport is not None else _Unbound())
        self.judging = False
        # A spare's (no transport yet): seized, but no status waited for, so nothing
        # served, until its run binds it (PtraceDriver.bind) or it is dropped.
        self.bound = threading.Event()
        if transport is not None:
            self.bound.set()
        self._decoders = decoders_for(arch)
        self._arch = arch
        # Credentials kept per thread (credcache.py), forgotten at each call that may change
        # them (the filter stops those) and at each exec event.
        self._creds = CredWatch()
        self._credential_calls = credential_calls(arch)
        self._writes = WritesHere(self._creds)  # the write-opens the C loop serves (writes.py)
        self._inspector = Inspector(self._creds, self._writes.publish)
        self._execs = ExecChecks()
        self._sockets = KeptSockets(init_pid)
        self._writes.bind(self._inspector.creds, self._sockets)

    def bind(self, vm: str, transport: Transport) -> None:
        self._vm, self._transport = vm, transport
        self._thread.name = f"hvfs-{vm}-tracer"
        self.bound.set()

    def serve_writes(self, served: served_stat.ServedStat) -> bool:
        return self._writes.serve(served)

    def _next(self) -> tuple[int, int]:
        """A spare's tracer waits at once, in the C loop where it is built, so that pid 1's
        first events after START (its fork, the command's exec) are answered there without
        waiting for this thread to wake in Python; but nothing is handled before its run
        binds it (``bound``, set at once but for a spare's): pid 1 makes no call the filter
        stops before START, which follows the bind. A spare dropped unbound is only reaped
        (its exits are bookkeeping, no transport) until no tracee is left."""
        if native_tracer is None:
            self.bound.wait()
            return super()._next()
        pid, status = super()._next()
        self.bound.wait()
        return pid, status

    def _run(self) -> None:
        try:
            super()._run()
        finally:
            # The driver's duplicates, the status files and pidfds kept: nothing of a VM
            # left in the manager once it has ended.
            self._sockets.close()
            self._inspector.close()

    def _on_status(self, pid: int, status: int) -> None:
        if os.WIFSTOPPED(status):
            self._sockets.first_stop(pid)
            if tracing.event_of(status) in _NEW_TRACEE:
                self._on_new_tracee(pid, tracing.event_of(status))
        if os.WIFSTOPPED(status) and tracing.event_of(status) == tracing.PTRACE_EVENT_SECCOMP:
            with self._lock:
                self._tracees.add(pid)
                self._counts["stops"] += 1
            self._on_seccomp(pid)
        elif os.WIFSTOPPED(status) and os.WSTOPSIG(status) == tracing.SYSCALL_STOP:
            with contextlib.suppress(ProcessLookupError):  # left over from an install the thread died in,
                if self._stands(pid, status):  # unless a sibling's exec took its pid over since (_stands)
                    tracing.resume(pid)
        else:
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._execs.forget(pid)
                self._sockets.exited(pid)
            super()._on_status(pid, status)

    def _on_new_tracee(self, pid: int, event: int) -> None:
        """A fork, vfork or clone by ``pid``: a new process has a copy of its fd table, and
        of its kept socket (``kept``), unless it is a thread or shares the table."""
        flags = 0
        try:
            child = tracing.event_message(pid)
            if event == tracing.PTRACE_EVENT_CLONE:
                regs = tracing.registers(pid)
                # Flags in rdi for clone(2) only; clone3's are in memory the VM can change:
                # any other call is taken as a fork (given up: the safe side).
                flags = regs.rdi if int(regs.orig_rax) == CLONE else 0
        except OSError:
            child = -1
        shared = bool(flags & (CLONE_THREAD | CLONE_FILES))
        if child > 0:
            self._sockets.forked(pid, child, shared)
        elif not shared:
            self._sockets.give_up(pid)

    @property
    def planted(self) -> int:
        """Sockets planted in the VM's processes (one per process and per fork, not per open)."""
        return self._sockets.planted

    def _on_exec(self, pid: int) -> None:
        """While a scanner is on, the manager judges the very files loaded (the exec
        tracer's way, which covers any swap of the path); else what was loaded must be
        what the manager checked (``execs``)."""
        self._creds.changed()  # the exec'd thread's credentials are recomputed; and a
        # thread that is not its leader took the leader's number and pid
        with contextlib.suppress(OSError):
            self._sockets.executed(pid, tracing.event_message(pid))
        if self.judging:
            self._execs.forget(tracing.event_message(pid))
            super()._on_exec(pid)
            return
        former = tracing.event_message(pid)
        if not self._execs.verified(pid, former):
            log.warning("ptrace driver of VM %s: pid %d killed: it executed another file than the one checked",
                        self._vm, pid)  # fmt: skip
            os.kill(pid, signal.SIGKILL)
            with self._lock:
                self._counts["killed"] += 1
                if former != pid:
                    self._tracees.discard(former)
            tracing.resume(pid)
            return
        with self._lock:
            if former != pid:
                self._tracees.discard(former)
            self._counts["execs"] += 1
        tracing.resume(pid)

    def _recover(self, pid: int) -> None:
        """A stop this could not handle: a seccomp stop must never run natively, so the
        thread is killed rather than resumed as the exec tracer would."""
        log.error("ptrace driver of VM %s: pid %d killed after an internal error", self._vm, pid)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            tracing.resume(pid)
