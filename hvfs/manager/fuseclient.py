"""FUSE servers the manager starts and owns (a JuiceFS client), which die with the
manager even when it is killed outright, each with a private directory that a later
manager removes when its owner died without doing so."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import stat
import tempfile
import time

from hvfs._sys import mountinfo
from hvfs.manager import children

STALE_AFTER = 60.0  # seconds: a work directory is made and locked in far less


def work_directory(prefix: str) -> tuple[str, int]:
    """A private directory for one client (mount point, cache, log), and the fd of the
    lock the manager holds on it while the source lives. The directories of managers
    that died without releasing theirs (killed outright) are removed first."""
    _sweep(prefix)
    work = tempfile.mkdtemp(prefix=prefix)
    mountinfo.own_directory(work)  # its client's mount is this process's: no client's (hvfs.hypervisor.views)
    lock = os.open(os.path.join(work, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return work, lock


def _sweep(prefix: str) -> None:
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        path = os.path.join(base, name)
        try:
            info = os.lstat(path)
            if not (name.startswith(prefix) and stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()):
                continue
            lock = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # not ours, or being made
        try:
            if time.time() - os.fstat(lock).st_mtime < STALE_AFTER:
                continue
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: its manager is gone
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # its manager holds it
        finally:
            os.close(lock)


# Kills the client's process group when its standard input ends: when the manager, the
# only holder of the pipe's other end, is gone. (No "--" before the group: dash's kill,
# Debian's sh, takes it for a number and kills nothing.)
_WATCH = 'while read -r _; do :; done; kill -KILL "-$1"'


class Client:
    """A FUSE server the manager owns, which must not outlive a manager killed outright
    (it would hold the mount, and a session of the volume, for ever). A JuiceFS client
    is two processes, a supervisor and the server it starts, and a supervisor told to
    stop while its mount is busy stays (measured), so the death signal the supervisor
    gets (``setpriv --pdeathsig KILL``) is not enough: the client is a process group of
    its own, and a watcher (``sh``) kills that group when the manager is gone, which it
    learns from the end of a pipe that only the manager holds. A pid namespace would do
    it too, but JuiceFS then refuses ``flock`` (EBADF, measured)."""

    def __init__(self, command: list[str], log: int) -> None:
        """Starts ``command``, ``log`` its output. Raises OSError."""
        setpriv = shutil.which("setpriv")
        leash = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        null = children.null()
        try:
            self.process = children.start([*leash, *command], [null, log, log], setsid=True)
            read, self._leash = os.pipe()
            try:
                self._watcher: children.Child | None = children.start(
                    ["sh", "-c", _WATCH, "sh", str(self.process.pid)], [read, null, null]
                )
            except OSError:
                self._watcher = None  # no sh: the supervisor's death signal is all there is
            finally:
                os.close(read)
        finally:
            os.close(null)

    def stop(self, timeout: float) -> None:
        """SIGTERM to the client's processes (JuiceFS then closes its session), SIGKILL
        after ``timeout`` seconds; then the watcher."""
        group = self.process.pid
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except TimeoutError:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
            self.process.wait()
        if self._watcher is not None:
            self._watcher.kill()
            self._watcher.wait()
        os.close(self._leash)


def cover(mountpoint: str, names: tuple[str, ...], work: str) -> list[str]:
    """Puts an empty, read-only file (or directory) over each of ``names`` found at the
    root of ``mountpoint``: a client's own files there (a JuiceFS client's log of every
    operation of every VM, its configuration, its control file) are no VM's business,
    and a view's copy of the mount carries the covers with it. Returns what it covered."""
    from hvfs._sys import mount as m

    covered = []
    for name in names:
        path = os.path.join(mountpoint, name)
        try:
            is_directory = stat.S_ISDIR(os.lstat(path).st_mode)
        except FileNotFoundError:
            continue
        empty = os.path.join(work, "empty-directory" if is_directory else "empty-file")
        if not os.path.lexists(empty):
            if is_directory:
                os.mkdir(empty, 0o555)
            else:
                os.close(os.open(empty, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
        target = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            m.attach(m.clone_tree(empty, recursive=False, readonly=True), target)
        finally:
            os.close(target)
        covered.append(name)
    return covered
