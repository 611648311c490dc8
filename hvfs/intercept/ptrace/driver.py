"""The ptrace driver: ``PtraceDriver``, the backend the manager starts a VM's tracing with
(its tracer: tracer.py; the design: ``hvfs.intercept.ptrace``)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from typing import Any

from hvfs._native import tracer as native_tracer
from hvfs._sys import process
from hvfs.api import Transport
from hvfs.intercept import served_stat
from hvfs.intercept.arch import Arch
from hvfs.intercept.exec_tracer import ExecTracer
from hvfs.intercept.ptrace.tracer import Tracer


class PtraceDriver:
    """Serves one VM by tracing it: ``pidfd`` names its pid 1 (what pid 1 handed back).

    A warm spare's (hvfs.hypervisor.spares) is made without a transport and started with
    the spare: its tracer thread seizes pid 1 then (ptrace is per tracer thread: the one
    that serves must be the one that seized), and waits for ``bind`` (the run's VM name
    and transport) before it serves or tells anything (the C loop already waiting: see
    ``Tracer._next``); pid 1 makes no call the filter stops until START, which follows
    the bind. Dropped unbound, pid 1 is killed and the thread only reaps it."""

    def __init__(self, pidfd: int, vm: str, transport: Transport | None, arch: Arch) -> None:
        self._pidfd = pidfd
        self._tracer = Tracer(_pid_of(pidfd), vm, transport, arch)

    def serve_stats(self, served: served_stat.ServedStat) -> served_stat.ServedStat | None:
        """Serve the VM's plain write-opens in the tracer's C loop (what ``served.writes``
        says; stats and read-only opens stay Python's here); None where it cannot."""
        return served if self._tracer.serve_writes(served) else None

    def judge_execs(self) -> None:
        """Before ``start``: have the manager judge every exec at PTRACE_EVENT_EXEC, as the
        exec tracer does for the seccomp driver (a scanner is on)."""
        self._tracer.judging = True

    def start(self) -> None:
        """Seize pid 1 (OSError when ptrace is refused here); pid 1 starts the command only
        after this, when the manager sends START."""
        self._tracer.start()

    def bind(self, vm: str, transport: Transport) -> None:
        """A spare's driver is now the VM ``vm``'s, served through ``transport``."""
        assert not self._tracer.bound.is_set(), "a driver is bound once"
        self._tracer.bind(vm, transport)

    def stop(self) -> None:
        """A traced VM cannot outlive its tracer: it ends (SIGKILL to pid 1). A spare's,
        unbound, sees nothing but that end: the thread then reaps it and ends."""
        with contextlib.suppress(OSError):
            process.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        self._tracer.bound.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        self._tracer.join(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._pidfd)

    def kept(self) -> dict[str, int]:
        return {}  # PTRACE_O_EXITKILL: the VM ends with its tracer, nothing is left to resume

    def statistics(self) -> dict[str, Any]:
        stats = self._tracer.statistics()
        served = {**self._tracer.served, "planted": self._tracer.planted, "execs": stats.execs, "killed": stats.killed}
        loop = "native" if native_tracer is not None else "python"  # execs: the exec events seen, C loop's too
        document = {"driver": "ptrace", "loop": loop, "stops": stats.stops, "tracees": stats.tracees, **served}
        return {**document, "credentials": self._tracer.credentials()}

    def exec_tracer(self) -> ExecTracer | None:
        """What judges the VM's execs, when a scanner is on (the tracer itself): for its statistics."""
        return self._tracer if self._tracer.judging else None


def _pid_of(pidfd: int) -> int:
    """The pid (in this pid namespace) of the process ``pidfd`` names, from its fdinfo."""
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                pid = int(line.split()[1])
                if pid > 0:
                    return pid
    raise OSError(errno.ESRCH, "pid 1 of the VM is gone")
