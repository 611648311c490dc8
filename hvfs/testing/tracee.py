"""A fake notifying thread, for decoders: ``FakeTracee``."""

from __future__ import annotations

import contextlib
import errno
import os
from types import TracebackType

from hvfs.api import Credentials
from hvfs.intercept.decoders.tracee import CallError, TargetGone
from hvfs.intercept.procfs import parse_credentials
from hvfs.intercept.tracee import Inspector, Tracee
from hvfs.testing.memory import FakeMemory

ALL_IDS = [(0, 0, 4294967295)]  # an id map that maps every id to itself

# A user of a VM: no capabilities, its own group.
USER = Credentials(uid=1000, gid=1000, groups=(1000,), umask=0o022, capabilities=0, real_uid=1000, real_gid=1000)


def own_credentials() -> Credentials:
    """This process's credentials, as the driver would read them for one of its threads:
    requests carrying them make the manager switch nothing (``hvfs.manager.creds``)."""
    with open("/proc/self/status", "rb") as f:
        return parse_credentials(f.read())


def status_text(
    creds: Credentials, *, pid: int, tgid: int, vm_pid: int, vm_tgid: int, pending: int = 0, blocked: int = 0
) -> bytes:
    """A ``/proc/TID/status`` of a thread with these credentials and ids (in the
    manager's pid namespace, then the VM's), pending and blocked signal masks."""
    groups = "".join(f"{g} " for g in creds.groups)
    uid, gid = creds.uid, creds.gid
    lines = [
        "Name:\tfake",
        f"Umask:\t{creds.umask:04o}",
        "State:\tS (sleeping)",
        f"Tgid:\t{tgid}",
        f"Pid:\t{pid}",
        f"Uid:\t{creds.real_uid}\t{uid}\t{uid}\t{uid}",
        f"Gid:\t{creds.real_gid}\t{gid}\t{gid}\t{gid}",
        f"Groups:\t{groups}",
        f"NStgid:\t{tgid}\t{vm_tgid}",
        f"NSpid:\t{pid}\t{vm_pid}",
        f"SigPnd:\t{pending:016x}",
        "ShdPnd:\t0000000000000000",
        f"SigBlk:\t{blocked:016x}",
        f"CapEff:\t{creds.capabilities:016x}",
    ]
    return ("\n".join(lines) + "\n").encode()


class FakeTracee(Tracee):
    """Implements Tracee's primitives with test data, and runs the rest of its code as it is.

    - memory: a ``FakeMemory`` (``tracee.memory.path("/data/x")`` gives an address);
    - the VM's files: the real directory ``root``, a VM path ``/p`` being ``root/p``;
    - fds: numbers backed by real open files (``open``, ``add_fd``), whose /proc link
      reads as the VM path they were opened by (or any text: ``socket:[1]``);
    - credentials and ids: ``creds``, ``vm_pid``; id maps ``uid_map`` and ``gid_map``;
    - ``valid``: False makes ``check_valid`` raise ``TargetGone`` (the thread died);
      ``pending``: a mask of signals pending; ``signals``: those sent to it.

    A context manager: leaving it closes every fd it holds.
    """

    _native_reads = False  # its memory is a FakeMemory, read through _memory

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        creds: Credentials = USER,
        cwd: str = "/",
        pid: int = 4242,
        vm_pid: int = 42,
        notif_id: int = 1,
        memory: FakeMemory | None = None,
    ) -> None:
        super().__init__(-1, notif_id, pid, Inspector())
        self.root = os.fspath(root)
        self.memory = memory if memory is not None else FakeMemory()
        self.creds = creds
        self.cwd = cwd
        self.vm_pid = vm_pid
        self.uid_map = list(ALL_IDS)
        self.gid_map = list(ALL_IDS)
        self.valid = True
        self.pending = 0
        self.signals: list[int] = []
        self._fds: dict[int, tuple[int, str]] = {}  # number -> (a real fd, what its /proc link reads)
        self._taken: dict[int, str] = {}  # fds duplicated for a request -> their link

    def __enter__(self) -> FakeTracee:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
        for real, _ in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(real)
        self._fds.clear()

    # Building the thread's state.

    def host(self, path: str) -> str:
        """Where the VM path ``path`` is on the host."""
        return self.root + "/" + path.lstrip("/")

    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o644, *, number: int | None = None) -> int:
        """Open the VM path ``path`` for real as one of the thread's fds; return its number."""
        return self.add_fd(os.open(self.host(path), flags | os.O_CLOEXEC, mode), path, number=number)

    def add_fd(self, real: int, link: str, *, number: int | None = None) -> int:
        """Make the open file ``real`` (the tracee owns it now) the thread's fd ``number``
        (the lowest free from 3 by default), its /proc link reading ``link``."""
        if number is None:
            number = next(n for n in range(3, 1 << 20) if n not in self._fds)
        if number in self._fds:
            os.close(self._fds[number][0])
        self._fds[number] = (real, link)
        return number

    def close_fd(self, number: int) -> None:
        real, _ = self._fds.pop(number)
        os.close(real)

    # Tracee's primitives.

    def check_valid(self) -> None:
        if not self.valid:
            raise TargetGone()

    def _memory(self, address: int, size: int) -> bytes:
        return self.memory.read(address, size)

    def _readlink(self, name: str) -> str:
        if name == "cwd":
            return self.cwd
        if name.startswith("fd/"):
            return self._fd(name)[1]
        if name.startswith("root/"):
            return os.readlink(self.host(name[4:]))
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)

    def _stat(self, name: str, *, follow: bool = True) -> os.stat_result:
        if name == "cwd":
            return os.stat(self.host(self.cwd))
        if name.startswith("fd/"):
            return os.fstat(self._fd(name)[0])
        if name.startswith("root"):
            return os.stat(self.host(name[4:]), follow_symlinks=follow)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)

    def _fd(self, name: str) -> tuple[int, str]:
        found = self._fds.get(int(name[3:]))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        return found

    def _duplicate(self, fd: int) -> int:
        found = self._fds.get(fd)
        if found is None:
            raise CallError(errno.EBADF)
        local = os.dup(found[0])
        self._taken[local] = found[1]
        return local

    def _path_of(self, local: int) -> str:
        return self._taken[local]

    def status(self) -> bytes:
        return status_text(self.creds, pid=self.pid, tgid=self.pid, vm_pid=self.vm_pid, vm_tgid=self.vm_pid,
                           pending=self.pending)  # fmt: skip

    def id_map(self, kind: str) -> list[tuple[int, int, int]]:
        return list(self.uid_map if kind == "uid" else self.gid_map)

    def send_signal(self, number: int) -> None:
        self.check_valid()
        self.signals.append(number)

    def close(self) -> None:
        super().close()
        self._taken.clear()
