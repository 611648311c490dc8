"""Exec verified after the fact: what the kernel loaded at ``PTRACE_EVENT_EXEC`` must be
the file the manager checked at the exec's seccomp stop.

The exec continues (the kernel must load the program itself) and reads the path from the
caller's memory again, where another thread may have put another path since the check.
So at the check the driver notes the file that path named then (device and inode, in the
caller's root); at the exec stop, before one instruction of the new program runs,
``/proc/PID/exe`` must be that file, or, for a script, the interpreter its ``#!`` line
names (up to the kernel's four levels of scripts). Anything else is killed. That holds
whatever a racing thread did to the path: the check and the verification both rest on
files, never on the caller's memory.
"""

from __future__ import annotations

import contextlib
import os
import stat

from hvfs import api
from hvfs._sys import files
from hvfs._sys.abi import RESOLVE_IN_ROOT

_SCRIPT_LEVELS = 4  # the kernel's BINPRM_MAX_RECURSION
_SHEBANG_MAX = 256  # BINPRM_BUF_SIZE: the kernel reads no more of a #! line

Identity = tuple[int, int]  # (device, inode)


class ExecChecks:
    """The file each thread's checked exec named, until its exec stop."""

    def __init__(self) -> None:
        self._checked: dict[int, list[Identity]] = {}

    def note(self, tid: int, request: api.Exec) -> None:
        """After the manager let ``request`` continue: what the kernel may load for it (the
        file, and for a script the interpreters of its #! lines)."""
        try:
            fd = self._open(tid, request)
        except OSError:
            self._checked[tid] = []  # nothing there now: whatever loads later was not checked
            return
        try:
            self._checked[tid] = _chain(tid, fd)
        finally:
            os.close(fd)

    def empty(self) -> bool:
        """No exec checked and waiting for its exec stop."""
        return not self._checked

    def forget(self, tid: int) -> None:
        self._checked.pop(tid, None)

    def verified(self, pid: int, former: int) -> bool:
        """At the exec stop of ``pid`` (``former``: the tid that called exec): whether
        ``/proc/PID/exe`` is a file noted for that call. An exec the filter did not stop
        (only strict mode and scanners trap execs) was checked by no one, and passes."""
        allowed = self._checked.pop(former, None)
        if former != pid:
            self._checked.pop(pid, None)
        if allowed is None:
            return True  # not trapped: this configuration checks no exec (READ handling, not strict)
        try:
            st = os.stat(f"/proc/{pid}/exe")
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in allowed

    @staticmethod
    def _open(tid: int, request: api.Exec) -> int:
        if isinstance(request.path, api.OpenFile):
            return os.dup(request.path.fd)
        root = os.open(f"/proc/{tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return _open_in(root, str(request.path))
        finally:
            os.close(root)


def _open_in(root: int, path: str) -> int:
    """``path`` in the caller's root, as O_PATH: opening a device to read it could act."""
    return files.openat2(root, path, os.O_PATH, 0, RESOLVE_IN_ROOT)


def _chain(tid: int, fd: int) -> list[Identity]:
    """The identity of ``fd``'s file and, while it is a script, of its interpreter."""
    chain: list[Identity] = []
    opened: list[int] = []
    try:
        for _ in range(_SCRIPT_LEVELS + 1):
            st = os.fstat(fd)
            chain.append((st.st_dev, st.st_ino))
            interpreter = _shebang(fd)
            if interpreter is None:
                break
            root = os.open(f"/proc/{tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = _open_in(root, interpreter)
            except OSError:
                break
            finally:
                os.close(root)
            opened.append(fd)
    finally:
        for other in opened:
            with contextlib.suppress(OSError):
                os.close(other)
    return chain


def _shebang(fd: int) -> str | None:
    """The interpreter a script's first line names (relative names as the kernel takes
    them: from the caller's cwd, which this does not follow: such a script is refused)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    try:
        readable = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # execute-only: never a script the kernel could run either
        return None
    try:
        head = os.pread(readable, _SHEBANG_MAX, 0)
    except OSError:
        return None
    finally:
        os.close(readable)
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip()
    name = line.split(None, 1)[0] if line else b""
    return os.fsdecode(name) if name.startswith(b"/") else None
