"""The manager's own helper processes (a FUSE client, its watcher, a ``juicefs format``),
started like a VM's hvfs-init through ``hvfs._sys.spawner``: a fork of the manager
(``subprocess``) copies its whole fd table, a VM's served file among them, and the copy
lives until the child's exec; a VM's exec of a file it has just written then fails with
ETXTBSY (the spawner's docstring has the trace).

A child is the spawner thread's, which lives as long as the manager: a death signal set
by the child (``setpriv --pdeathsig``) fires when the manager ends, not before. It is
waited for here by its pid, which nothing else in the manager reaps."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from hvfs._sys import spawner

# ignored in the manager (Python's own start-up), and so, across an exec, in a child
# not given their default back: a client writing to a closed pipe would live on
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class Child:
    """A process the manager started; ``returncode`` once it was waited for."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status (negative: the signal) if the child has ended, else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit status once the child ends; TimeoutError after ``timeout`` seconds."""
        if self.returncode is None and timeout is not None:
            # a pidfd becomes readable when the process ends; the pid is valid until reaped here
            pidfd = os.pidfd_open(self.pid)
            try:
                if not select.select([pidfd], [], [], max(timeout, 0))[0]:
                    raise TimeoutError(f"process {self.pid} still runs after {timeout:g} s")
            finally:
                os.close(pidfd)
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def kill(self) -> None:
        """SIGKILL, unless the child was waited for already (its pid may be another's)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def start(command: Sequence[str], fds: Sequence[int], *, setsid: bool = False) -> Child:
    """``command`` (its program looked up on PATH) with ``fds[i]`` as its fd ``i`` and no
    other fd of the manager's, in the manager's environment. Raises OSError."""
    path = command[0] if "/" in command[0] else shutil.which(command[0])
    if path is None:
        raise FileNotFoundError(2, "not found on PATH", command[0])
    pid = spawner.spawn(path, command, dict(os.environ), fds, setsid=setsid, setsigmask=(), setsigdef=RESET_SIGNALS)
    return Child(pid)


def null() -> int:
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


def run(command: Sequence[str], timeout: float) -> Finished:
    """``command`` run to its end, its input empty and its output kept; TimeoutError
    (the command killed) after ``timeout`` seconds. Raises OSError."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin = null()
        try:
            child = start(command, [stdin, out.fileno(), err.fileno()])
        finally:
            os.close(stdin)
        try:
            child.wait(timeout)
        except TimeoutError:
            child.kill()
            child.wait()
            raise
        returncode = child.wait()
        out.seek(0)
        err.seek(0)
        return Finished(returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"))
