"""The ptrace driver's service of a seccomp stop: the call decoded from the thread's
registers and memory (``StoppedTracee``), the manager's answer applied to the stopped thread
(``stopped.py``), a call that would block waited for on the tracer thread."""

from __future__ import annotations

import contextlib
import errno
import select
import time
from typing import TYPE_CHECKING

from hvfs import api, deferred
from hvfs._sys import process
from hvfs._sys.abi import MSG_LEN, PRCTL_KEEPS_CREDENTIALS, U32_MASK
from hvfs.intercept.decoders.context import Context, Output, Passthrough
from hvfs.intercept.decoders.tracee import CallError, TargetGone
from hvfs.intercept.ptrace.stopped import Stopped
from hvfs.intercept.ptrace.waits import LoopWaits
from hvfs.intercept.tracee import Inspector, Tracee

if TYPE_CHECKING:
    from hvfs.intercept.arch import Arch
    from hvfs.intercept.decoders.context import DecodeFunction

log = deferred.logger("hvfs.driver")

WAIT_TICK = 0.05  # seconds between checks of a caller whose served call would block


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


class Serving(LoopWaits):
    """Serves the seccomp stops the waits hand over (the tracer's, tracer.py, which builds
    the decoders, the inspector and the credential watch these read)."""

    _decoders: dict[int, DecodeFunction]
    _arch: Arch
    _inspector: Inspector
    _credential_calls: dict[int, str]

    def _on_seccomp(self, pid: int) -> None:
        raw, self._raw = self._raw, None
        try:
            stopped = Stopped(pid, raw, self._round)
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
        self._exited(tuple(stopped.reaped))  # other threads' exits its install's wait reaped, before its own
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
