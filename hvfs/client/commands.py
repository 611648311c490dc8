"""Commands in a running VM, their output captured: what ``VM.run`` and ``VM.exec`` (and a
project's VMs') do over the control protocol's ``exec``, and reading and writing a VM's
files through it.

A file read or written this way is read or written by a process in the VM, so it is a
request of the VM's like any other: served by the manager, seen by the audit, subject to
fault rules. (The manager has no operation that reads a VM's files for a client; the VM
is the one way in, and the honest one.)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hvfs.client import session
from hvfs.errors import HvfsError

KILL_GRACE = 5.0  # seconds to wait for a timed-out command's end after killing it
DRAIN = 2.0  # seconds to wait, after a command exited, for its children to close its output


class CommandTimeout(HvfsError, TimeoutError):
    """A command in a VM ran longer than its timeout; it was killed (with its process
    group). ``stdout`` and ``stderr`` hold what it wrote until then."""

    def __init__(self, command: Sequence[str], timeout: float, stdout: bytes, stderr: bytes) -> None:
        super().__init__(f"{shlex.join(command)} ran longer than {timeout:g}s in the VM and was killed")
        self.command, self.timeout, self.stdout, self.stderr = tuple(command), timeout, stdout, stderr


class CommandFailed(HvfsError):
    """``Result.check()`` of a command that exited with a status other than 0."""

    def __init__(self, result: Result) -> None:
        tail = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
        detail = f": {tail[0]}" if tail else ""
        super().__init__(f"{shlex.join(result.command)} exited with {result.code} in the VM{detail}")
        self.result = result


@dataclass(frozen=True)
class Result:
    """What a command in a VM did: its exit status (128+N for signal N; 137 when the VM
    ended under it), and its output, decoded as UTF-8 (``stdout_bytes`` as written)."""

    command: tuple[str, ...]
    code: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode(errors="replace")

    @property
    def ok(self) -> bool:
        return self.code == 0

    def check(self) -> Result:
        """This result, or CommandFailed if the command did not exit with 0."""
        if self.code != 0:
            raise CommandFailed(self)
        return self


class _Reader(threading.Thread):
    """Collects everything written to the read end ``fd`` until its end (or ``stop``)."""

    def __init__(self, fd: int) -> None:
        super().__init__(name="hvfs-output", daemon=True)
        self.fd = fd
        self.chunks: list[bytes] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import select

        try:
            while not self.stop.is_set():
                if not select.select([self.fd], [], [], 0.1)[0]:
                    continue
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.chunks.append(chunk)
        finally:
            os.close(self.fd)

    def output(self) -> bytes:
        return b"".join(self.chunks)


def _feed(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # the command closed its input, or ended: what it did not read is dropped
    finally:
        os.close(fd)


def run_in(
    gid: str,
    vm: str,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    timeout: float | None = None,
) -> Result:
    """Run ``argv`` in the running VM ``vm`` of group ``gid`` and wait for it; its stdin
    is ``input`` (or empty). Raises CommandTimeout after ``timeout`` seconds (having
    killed it), UsageError when it cannot be started."""
    pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
    vm_ends = [pipes[0][0], pipes[1][1], pipes[2][1]]
    readers = [_Reader(pipes[1][0]), _Reader(pipes[2][0])]
    began = time.monotonic()
    try:
        process = session.start_exec(gid, vm, argv, vm_ends, env=env, workdir=workdir, user=user, what=f"VM {vm}")
    except BaseException:
        for fd in (*vm_ends, pipes[0][1], pipes[1][0], pipes[2][0]):
            os.close(fd)
        raise
    for fd in vm_ends:
        os.close(fd)
    feeder = threading.Thread(target=_feed, args=(pipes[0][1], input or b""), daemon=True)
    feeder.start()
    for reader in readers:
        reader.start()
    try:
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - began))
        code = process.wait(left)
        if code is None:
            assert timeout is not None
            _kill(gid, vm, process.pid)
            process.wait(KILL_GRACE)
            for reader in readers:
                reader.join(DRAIN)
                reader.stop.set()
            raise CommandTimeout(argv, timeout, readers[0].output(), readers[1].output())
    finally:
        process.close()
    for reader in readers:
        reader.join(DRAIN)  # a child it left behind may hold the output open: not for ever
        reader.stop.set()
    return Result(tuple(argv), code, readers[0].output(), readers[1].output())


def _kill(gid: str, vm: str, pid: int) -> None:
    """SIGKILL to the process group of ``pid`` in the VM (pid 1 makes each exec'd process
    a session leader), from a process in the VM: the control protocol signals only a
    VM's command."""
    if pid <= 1:
        return
    with contextlib.suppress(HvfsError):
        run_in(gid, vm, ["sh", "-c", f"kill -KILL -{pid} || kill -KILL {pid}"], timeout=KILL_GRACE)


def read_file(gid: str, vm: str, path: str, *, timeout: float | None = 60.0) -> bytes:
    """The content of ``path`` as a process in the VM reads it. Raises FileNotFoundError,
    PermissionError or OSError with the VM's message when it cannot."""
    result = run_in(gid, vm, ["cat", "--", path], timeout=timeout)
    if result.code != 0:
        raise _os_error(result, path)
    return result.stdout_bytes


def write_file(gid: str, vm: str, path: str, data: bytes, *, mode: int | None = None,
               timeout: float | None = 60.0) -> None:  # fmt: skip
    """Write ``data`` to ``path`` (created, or truncated) as a process in the VM does,
    with ``mode`` if given."""
    script = 'cat > "$1"' + (' && chmod "$2" "$1"' if mode is not None else "")
    argv = ["sh", "-c", script, "sh", path, *([f"{mode:o}"] if mode is not None else [])]
    result = run_in(gid, vm, argv, input=data, timeout=timeout)
    if result.code != 0:
        raise _os_error(result, path)


def _os_error(result: Result, path: str) -> OSError:
    import errno

    message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.code}"
    for code in (errno.ENOENT, errno.EACCES, errno.EISDIR, errno.EROFS, errno.EIO, errno.ENOSPC, errno.ENOTDIR):
        if os.strerror(code) in message:
            return OSError(code, message, path)
    return OSError(errno.EIO, message, path)
