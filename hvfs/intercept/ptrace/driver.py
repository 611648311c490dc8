"""The ptrace driver's tracer: one thread that traces every process of a VM and serves
the calls its filter stops (the design: ``hvfs.intercept.ptrace``)."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import threading
import time
from collections import deque
from typing import Any

from hvfs import api, deferred
from hvfs._native import tracer as native_tracer
from hvfs._sys import process, tracing
from hvfs._sys.abi import CLONE_FILES, CLONE_THREAD, MSG_LEN, PRCTL_KEEPS_CREDENTIALS, U32_MASK
from hvfs.api import Transport
from hvfs.intercept import served_stat
from hvfs.intercept.arch import Arch
from hvfs.intercept.compiled import credential_calls, decoders_for
from hvfs.intercept.credcache import CredWatch
from hvfs.intercept.decoders.context import Context, Output, Passthrough
from hvfs.intercept.decoders.tracee import CallError, TargetGone
from hvfs.intercept.driver import _Unbound
from hvfs.intercept.exec_tracer import OPTIONS, ExecTracer
from hvfs.intercept.ptrace.execs import ExecChecks
from hvfs.intercept.ptrace.kept import KeptSockets
from hvfs.intercept.ptrace.stopped import CLONE, Stopped
from hvfs.intercept.ptrace.writes import WritesHere
from hvfs.intercept.tracee import Inspector, Tracee

log = deferred.logger("hvfs.driver")

_NEW_TRACEE = (tracing.PTRACE_EVENT_FORK, tracing.PTRACE_EVENT_VFORK, tracing.PTRACE_EVENT_CLONE)
WAIT_TICK = 0.05  # seconds between checks of a caller whose served call would block
HERE_BIRTHS, HERE_EXECS = 1, 2  # tracer.c's: what its wait_stop may answer itself
_Stop = tuple[int, int, bytes | None]  # a stop as a wait status: pid, status, registers read with it


class StoppedTracee(Tracee):
    """The decoders' view of a thread at its seccomp stop: the seccomp tracee's reads, with
    nothing to prove afterwards. A traced thread that dies stays a zombie until its tracer
    has waited for it, and only this thread waits: its number cannot be reused while its
    call is served."""

    def __init__(self, pid: int, inspector: Inspector) -> None:
        super().__init__(-1, 0, pid, inspector)

    def check_valid(self) -> None:
        return None

    def duplicate(self, fd: int) -> int:
        """The thread's ``fd``, duplicated here (pidfd_getfd), for the caller to close."""
        return self._duplicate(fd)


class _Tracer(ExecTracer):
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
        # Stops the last wait collected after its status (tracer.c's ``queued``), and
        # whether more may be pending than it took.
        self._queued: deque[_Stop] = deque()
        self._more = False
        self.served = {"calls": 0, "continued": 0, "answered": 0, "installed": 0, "passed": 0, "execs_passed": 0}
        self.served.update(written_here=0, unlinked_here=0, fdmeta_here=0, dev_continued_here=0)  # C's: tracer_*.h

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

    def _wait_status(self) -> _Stop:
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
            if ended:  # those exits were the last: no second wait (its GIL on the VM's exit path) to learn it
                raise ChildProcessError("no tracee left")

    def _pending_stop(self) -> _Stop | None:
        if native_tracer is None:
            return super()._pending_stop()
        if self._queued:
            return self._queued.popleft()
        if not self._more:  # the last wait took every stop pending then
            return None
        pid, status, raw, _, _, _ = self._waited(True)  # never an exit (a served call's thread that died: in exits)
        self._more = bool(pid)
        return (pid, status, raw) if pid else None

    def _waited(self, pending: bool) -> tuple[int, int, bytes | None, tuple[_Stop, ...], bool, bool]:
        """One wait of the C loop (tracer.c's wait_stop), what it did meanwhile taken into account
        first: stops passed, calls served there, exits reaped; last, whether none is left after those."""
        found = native_tracer.wait_stop(pending, self._here(), self._writes.argument())
        pid, status, raw, passed, execs, exits, queued, more, *done, ended = found
        self._passed(passed, execs)
        self._served_here(*done)  # served, doubted, unlinked, changed, continued: tracer.c's order
        self._exited(exits)
        return pid, status, raw, queued, more, ended

    def _exited(self, exits: tuple[tuple[int, int], ...]) -> None:
        """Exits the C loop reaped and waited past, handled in their order, before the
        status it returned (a pid among them may be a new tracee's by then)."""
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

    def _on_seccomp(self, pid: int) -> None:
        raw, self._raw = self._raw, None
        try:
            stopped = Stopped(pid, raw)
        except OSError:
            return  # killed meanwhile: its exit comes next
        tracee = StoppedTracee(pid, self._inspector)
        try:
            self._serve(stopped, tracee)
        except TargetGone:
            # Dead (then the resume below fails with ESRCH), or its /proc unreadable for a
            # moment: never left stopped, never run natively.
            with contextlib.suppress(OSError):
                stopped.answer(-errno.EIO)
        except Exception:
            log.exception("ptrace driver of VM %s: internal error serving syscall %d of pid %d", self._vm,
                          stopped.nr, pid)  # fmt: skip
            with contextlib.suppress(OSError, TargetGone):
                stopped.answer(-errno.EIO)
        finally:
            tracee.close()
        if stopped.gone_status is not None:  # its exit, waited for by the install: handled as the loop would
            self._on_status(pid, stopped.gone_status)
            return
        pending = stopped.signals[0] if stopped.signals else 0
        with contextlib.suppress(ProcessLookupError):
            stopped.release(pending)

    def _serve(self, stopped: Stopped, tracee: StoppedTracee) -> None:
        self.served["calls"] += 1
        name = self._credential_calls.get(stopped.nr)
        if name is not None and name not in ("execve", "execveat"):  # execs: at their event
            self._credentials_change(stopped, name)
            self.served["continued"] += 1
            return
        decode = self._decoders.get(stopped.nr)
        if decode is None:
            stopped.answer(-errno.ENOSYS)
            return
        try:
            request, output = decode(Context(tracee, self._vm), stopped.args)
        except CallError as e:
            stopped.answer(-e.errno)
            return
        except Passthrough:
            self.served["continued"] += 1
            return
        response = self._transport.handle_request(request)
        if isinstance(request, api.Exec) and isinstance(response, api.Continue):
            self._execs.note(stopped.pid, request)
        self._apply(stopped, tracee, response, output)

    def _credentials_change(self, stopped: Stopped, name: str) -> None:
        """A call that may change its caller's credentials, let run. This thread serves
        every stop of the VM in turn, so a bump here comes before any later stop is read.
        A thread's ids and capabilities are its own: the bump before is enough (it is
        inside the call meanwhile). The umask is its ``fs_struct``'s, shared with siblings
        whose stops come meanwhile: the call is run to its exit here, then bumped again,
        so that no stop is read while it may be changing."""
        if name == "prctl" and stopped.args[0] & U32_MASK in PRCTL_KEEPS_CREDENTIALS:
            return
        self._creds.changed()
        if name == "umask":
            stopped.run_call()
            self._creds.changed()

    def credentials(self) -> dict[str, int]:
        """For --stats: credential reads and uses of kept ones (``CredWatch.counts``)."""
        return self._creds.counts()

    def _apply(self, stopped: Stopped, tracee: StoppedTracee, response: api.Response, output: Output | None) -> None:
        match response:
            case api.Continue():
                self.served["continued"] += 1
                return  # resumed as it is, the call runs
            case api.Errno(code, signum):
                if signum:
                    tracee.send_signal(signum)
                stopped.answer(-code)
            case api.Value(value) if output is not None and output.kind == "msg_len":
                self._write_back(stopped, output, MSG_LEN.pack(value), 1)
            case api.Value(value):
                stopped.answer(value)
            case api.Fd(fd, cloexec):
                self.served["installed"] += 1
                # The files taken from the thread to decode its call (a dirfd, the file of a
                # /proc/self/fd/N reopened) closed first: the install may resume it.
                tracee.close()
                stopped.install(fd, cloexec, tracee.duplicate, self._sockets)
                return
            case api.StatResult(stat):
                assert output is not None
                self._write_back(stopped, output, self._arch.pack_stat(stat), 0)
            case api.StatxResult(raw) | api.StatfsResult(raw):
                assert output is not None
                self._write_back(stopped, output, raw, 0)
            case api.Data(data):
                assert output is not None
                data = data[: output.size]
                self._write_back(stopped, output, data, len(data))
            case api.WouldBlock():
                self._wait(stopped, tracee, response, output)
                return
        self.served["answered"] += 1

    def _write_back(self, stopped: Stopped, output: Output, data: bytes, result: int) -> None:
        try:
            process.write_memory(stopped.pid, output.address, data)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise TargetGone() from e
            stopped.answer(-errno.EFAULT)
            return
        stopped.answer(result)

    def _wait(self, stopped: Stopped, tracee: StoppedTracee, blocked: api.WouldBlock, output: Output | None) -> None:
        """A served call that would block, waited for here as the kernel would (until the
        manager's socket is ready, or a signal comes for the caller). The tracer waits
        with it: the VM's other stops wait meanwhile (see the package's docstring)."""
        pause = 0.001
        while True:
            if blocked.events:
                poller = select.poll()
                poller.register(blocked.fd, blocked.events)
                poller.poll(int(WAIT_TICK * 1000))
            else:
                time.sleep(pause)
                pause = min(pause * 2, WAIT_TICK)
            if tracee.signal_pending():
                self._apply(stopped, tracee, blocked.interrupted, output)
                return
            response = self._transport.handle_request(blocked.again)
            if not isinstance(response, api.WouldBlock):
                self._apply(stopped, tracee, response, output)
                return
            blocked = response


class PtraceDriver:
    """Serves one VM by tracing it: ``pidfd`` names its pid 1 (what pid 1 handed back).

    A warm spare's (hvfs.hypervisor.spares) is made without a transport and started with
    the spare: its tracer thread seizes pid 1 then (ptrace is per tracer thread: the one
    that serves must be the one that seized), and waits for ``bind`` (the run's VM name
    and transport) before it serves or tells anything (the C loop already waiting: see
    ``_Tracer._next``); pid 1 makes no call the filter stops until START, which follows
    the bind. Dropped unbound, pid 1 is killed and the thread only reaps it."""

    def __init__(self, pidfd: int, vm: str, transport: Transport | None, arch: Arch) -> None:
        self._pidfd = pidfd
        self._tracer = _Tracer(_pid_of(pidfd), vm, transport, arch)

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
