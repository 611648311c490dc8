"""The seccomp tracee: the notifying thread, read as the decoders' protocol asks
(``hvfs.intercept.decoders.tracee``): its memory, its cwd and fds, its credentials.

Every read names a pid that may have died and been reused since the notification was
queued; ``check_valid`` (NOTIF_ID_VALID) after the reads proves they came from the
notifying thread, because an id stays invalid once its thread is gone. That check is
all that is seccomp's here: the reads themselves (process_vm_readv, /proc/TID, pidfds)
would serve a ptrace driver as well.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from hvfs import api
from hvfs._native import hotpath
from hvfs._sys import notify, process
from hvfs._sys.abi import AT_FDCWD, O_PATH, PATH_MAX
from hvfs.intercept.credcache import CredWatch, KnownCredentials, Switch
from hvfs.intercept.decoders.tracee import CallError, Identity, TargetGone
from hvfs.intercept.kept import KeptFds
from hvfs.intercept.procfs import StatusFiles, parse_credentials, parse_identity, signal_pending

if TYPE_CHECKING:  # the messages load with a first request (hvfs.api)
    from hvfs.api import Caller, Credentials, OpenFile

_SHORT_PATH = 256  # what read_path reads first
_DELETED = " (deleted)"


class Inspector:
    """What one worker thread keeps from request to request to read notifying threads: a
    buffer for their memory, their status files and pidfds, open (see ``KeptFds``), and
    their credentials while ``watch`` says they cannot have changed (``credcache``;
    without a watch, credentials are read for every request). Not thread-safe: one per
    worker."""

    def __init__(
        self, watch: CredWatch | None = None, publish: Callable[[Credentials], Switch | None] | None = None
    ) -> None:
        self.memory = process.MemoryReader(PATH_MAX)
        self.status = StatusFiles()
        self.pidfds = KeptFds()
        self.creds = KnownCredentials(watch if watch is not None else CredWatch(trusted=False), publish)
        # The Caller of this worker's last request, made again only when its thread or its
        # credentials object (the one ``creds`` keeps) changes: a Caller per request cost
        # an open's decode a tenth of its time.
        self.caller: Caller | None = None

    def close(self) -> None:
        self.status.close()
        self.pidfds.close()
        self.creds.close()


class Tracee:
    """Implements ``hvfs.intercept.decoders.tracee.Tracee`` for one seccomp notification;
    the driver also signals the thread and checks its notification through it.

    Every access to the thread itself goes through a few primitives — ``_memory``,
    ``_readlink`` and ``_stat`` (of its /proc entries), ``_duplicate`` and ``_path_of``
    (its fds), ``status``, ``id_map``, ``check_valid`` and ``send_signal`` — and
    everything else is built on them, so that a fake thread (``hvfs.testing.FakeTracee``)
    replaces only those and runs the rest of this class as it is."""

    # The C hot path reads paths in one call (hvfs/_native/hotpath.c: the same reads as
    # below); a fake thread, whose memory is not a process's, reads through ``_memory``.
    _native_reads = hotpath is not None
    # False for a call whose credentials must not be kept: an exec the manager checks
    # (``credcache.before_change``), which changes them after they were read.
    keeps_credentials = True

    def __init__(self, listener: int, notif_id: int, pid: int, inspector: Inspector) -> None:
        self.listener = listener
        self.notif_id = notif_id
        self.pid = pid
        self._inspector = inspector
        self._owned: list[int] = []

    def close(self) -> None:
        """Close the fds taken from the thread for this request."""
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()

    def check_valid(self) -> None:
        if not notify.id_valid(self.listener, self.notif_id):
            raise TargetGone()

    def _memory(self, address: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``address`` in the thread's memory: fewer where the range
        runs into unmapped memory; ``OSError`` EFAULT when not even the first byte can be
        read, ESRCH when the thread is gone (``process.read_memory``)."""
        memory = self._inspector.memory
        if 0 < size <= memory.capacity:
            return memory.read(self.pid, address, size)
        return process.read_memory(self.pid, address, size)

    def _readlink(self, name: str) -> str:
        """readlink of the thread's ``/proc/PID/name`` (cwd, fd/N, root/...)."""
        return os.readlink(f"/proc/{self.pid}/{name}")

    def _stat(self, name: str, *, follow: bool = True) -> os.stat_result:
        """stat of the thread's ``/proc/PID/name``: what a magic link names, when followed."""
        return os.stat(f"/proc/{self.pid}/{name}", follow_symlinks=follow)

    def _path_of(self, local: int) -> str:
        """The path of ``local``, an fd duplicated from the thread, as its mounts show it."""
        return os.readlink(f"/proc/self/fd/{local}")

    def read(self, address: int, size: int) -> bytes:
        if address == 0:
            raise CallError(errno.EFAULT)
        try:
            data = self._memory(address, size)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise TargetGone() from e
            raise CallError(errno.EFAULT) from e
        if len(data) < size:
            raise CallError(errno.EFAULT)
        return data

    def read_path(self, address: int, *, empty_ok: bool = False) -> str:
        """The NUL-terminated path at ``address``: EFAULT, ENAMETOOLONG and ENOENT as the kernel."""
        if address == 0:
            raise CallError(errno.EFAULT)
        if self._native_reads:
            try:
                path = hotpath.read_path(self.pid, address)  # bytes, or the errno a malformed path gets
            except ProcessLookupError as e:
                raise TargetGone() from e
            if isinstance(path, int):
                raise CallError(path)
            if not path and not empty_ok:
                raise CallError(errno.ENOENT)
            return os.fsdecode(path)
        data = b""
        try:
            # Most paths are short: read a little first, and the rest only if no NUL is
            # in it. Reads stop at the first unreadable page, as one read of it all would.
            data = self._memory(address, _SHORT_PATH)
            if b"\0" not in data and len(data) == _SHORT_PATH:
                data += self._memory(address + _SHORT_PATH, PATH_MAX - _SHORT_PATH)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise TargetGone() from e
            if not data:
                raise CallError(errno.EFAULT) from e
        end = data.find(b"\0")
        if end < 0:
            raise CallError(errno.ENAMETOOLONG if len(data) == PATH_MAX else errno.EFAULT)
        if end == 0 and not empty_ok:
            raise CallError(errno.ENOENT)
        return os.fsdecode(data[:end])

    def directory(self, dirfd: int) -> tuple[str, tuple[int, int]]:
        link = "cwd" if dirfd == AT_FDCWD else f"fd/{dirfd}"
        try:
            target = self._readlink(link)
            st = self._stat(link)
        except FileNotFoundError:
            raise CallError(errno.EBADF if dirfd != AT_FDCWD else errno.ENOENT) from None
        except PermissionError as e:
            raise TargetGone() from e
        if not target.startswith("/"):
            raise CallError(errno.ENOTDIR)  # pipe:[…], socket:[…], anon_inode:…
        if target.endswith(_DELETED) and st.st_nlink == 0:
            raise CallError(errno.ENOENT)
        return target, (st.st_dev, st.st_ino)

    def fd_path(self, fd: int) -> str | None:
        try:
            target = self._readlink(f"fd/{fd}")
            if not target.startswith("/") or target.endswith(_DELETED):
                return None
            named, reachable = self._stat(f"fd/{fd}"), self._stat(f"root{target}", follow=False)
        except OSError:
            return None
        if (named.st_dev, named.st_ino) != (reachable.st_dev, reachable.st_ino):
            return None
        return target

    def dev_link(self, name: str) -> str | None:
        try:
            return self._readlink(f"root/dev/{name}")
        except OSError:
            return None

    def vm_ids(self) -> tuple[int, int]:
        """The caller's process and thread ids in the VM's pid namespace (the last of the
        NStgid and NSpid fields of its status)."""
        text = self.status()
        ids = []
        for key in (b"\nNStgid:", b"\nNSpid:"):
            start = text.find(key)
            if start < 0:
                raise TargetGone()
            end = text.find(b"\n", start + 1)
            ids.append(int(text[start + len(key) : end if end >= 0 else None].split()[-1]))
        return ids[0], ids[1]

    def status(self) -> bytes:
        """The text of the thread's ``/proc/TID/status``, as it is now."""
        try:
            return self._inspector.status.read(self.pid)
        except (FileNotFoundError, ProcessLookupError) as e:
            raise TargetGone() from e

    def credentials(self) -> Credentials:
        try:
            if not self.keeps_credentials:
                return self._read_credentials()
            return self._inspector.creds.get(self.pid, self._read_credentials, self.check_valid)
        except (FileNotFoundError, ProcessLookupError) as e:
            raise TargetGone() from e

    def caller(self, vm: str) -> Caller:
        creds = self.credentials()
        last = self._inspector.caller
        # Safe because: a Caller is frozen, and ``creds`` is the very object the credential
        # cache handed out for this thread (``is``: a new read is a new object).
        if last is not None and last.creds is creds and last.pid == self.pid and last.vm == vm:
            return last
        caller = self._inspector.caller = api.Caller(vm, self.pid, creds)
        return caller

    def _read_credentials(self) -> Credentials:
        if not self._native_reads:
            return parse_credentials(self.status())
        return self._inspector.status.credentials(self.pid)

    def identity(self) -> Identity:
        return parse_identity(self.status())

    def signal_pending(self) -> bool:
        return signal_pending(self.status())

    def id_map(self, kind: str) -> list[tuple[int, int, int]]:
        """The thread's ``uid_map`` or ``gid_map``: (first id inside, first id as the
        manager sees it, count) ranges."""
        try:
            with open(f"/proc/{self.pid}/{kind}_map", "rb") as f:
                return [(int(a), int(b), int(n)) for a, b, n in (line.split() for line in f)]
        except (FileNotFoundError, ProcessLookupError) as e:
            raise TargetGone() from e

    def send_signal(self, number: int) -> None:
        """Signal the thread, through a pidfd proved to name it (SIGPIPE, as the kernel
        sends with EPIPE): never by number, which another process may have by now."""
        try:
            pidfd = process.pidfd_open(self.pid, process.PIDFD_THREAD)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise TargetGone() from e
            pidfd = self._leader_pidfd()  # kernels before 6.9: the signal goes to the process
        try:
            self.check_valid()
            process.pidfd_send_signal(pidfd, number)
        except ProcessLookupError as e:
            raise TargetGone() from e
        finally:
            os.close(pidfd)

    def take_fd(self, fd: int, *, path_ok: bool = True) -> OpenFile:
        """Duplicate the thread's ``fd`` into this process (pidfd_getfd). Calls that act on
        an open file and nothing else refuse O_PATH fds (``path_ok=False``), as the kernel does."""
        if fd < 0:
            raise CallError(errno.EBADF)
        local = self._duplicate(fd)
        self._owned.append(local)
        if not path_ok and fcntl.fcntl(local, fcntl.F_GETFL) & O_PATH:
            raise CallError(errno.EBADF)
        try:
            path = self._path_of(local)
        except OSError:
            path = "?"
        return api.OpenFile(fd=local, path=path)

    def _duplicate(self, fd: int) -> int:
        """The thread's ``fd``, duplicated through a pidfd of the thread, which the worker
        keeps for the next request (``KeptFds``); the ID_VALID check after ``pidfd_getfd``
        (here, and the driver's after all reads) proves it named this thread."""
        pidfds = self._inspector.pidfds
        kept = pidfds.get(self.pid)
        if kept is not None:
            try:
                return self._getfd(kept, fd)
            except ProcessLookupError:  # that thread is gone; the number may be another's now
                pidfds.drop(self.pid)
        try:
            pidfd = process.pidfd_open(self.pid, process.PIDFD_THREAD)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise TargetGone() from e
            pidfd = self._leader_pidfd()  # kernels before 6.9: only thread-group leaders
            try:
                return self._getfd(pidfd, fd)
            except ProcessLookupError as e:
                raise TargetGone() from e
            finally:
                os.close(pidfd)  # names the leader, not this thread: never kept
        pidfds.keep(self.pid, pidfd)
        try:
            return self._getfd(pidfd, fd)
        except ProcessLookupError as e:
            pidfds.drop(self.pid)
            raise TargetGone() from e

    def _getfd(self, pidfd: int, fd: int) -> int:
        """pidfd_getfd; ``ProcessLookupError`` when the pidfd's thread is gone."""
        try:
            local = process.pidfd_getfd(pidfd, fd)
        except OSError as e:
            if e.errno == errno.EBADF:
                raise CallError(errno.EBADF) from e
            if e.errno == errno.ESRCH:
                raise ProcessLookupError(e.errno, e.strerror) from e
            raise TargetGone() from e
        try:
            self.check_valid()
        except TargetGone:
            os.close(local)
            raise
        return local

    def _leader_pidfd(self) -> int:
        with open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    try:
                        return process.pidfd_open(int(line.split()[1]))
                    except OSError as e:
                        raise TargetGone() from e
        raise TargetGone()
