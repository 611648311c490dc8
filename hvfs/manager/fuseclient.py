"""FUSE servers the manager starts and owns (a JuiceFS client): started so that they
die with the manager even when it is killed outright, each with a private directory
that a later manager removes when its owner died without doing so."""

from __future__ import annotations

import fcntl
import os
import queue
import shutil
import stat
import subprocess
import tempfile
import threading
import time


def leash() -> list[str]:
    """What a client's command runs under so that it does not outlive a manager killed
    outright (it would hold the mount, and a session of the volume, for ever). The client
    is two processes (a supervisor and the one serving FUSE), and a SIGTERM'd supervisor
    whose mount is busy stays: so it runs as the first process of a pid namespace of its
    own (``unshare --pid``), whose end takes every process in it, under an ``unshare``
    that SIGKILLs it when that ``unshare`` is killed, which happens when the manager dies
    (``setpriv --pdeathsig``). Without the two tools the client is not leashed."""
    setpriv, unshare = shutil.which("setpriv"), shutil.which("unshare")
    if not (setpriv and unshare):
        return []
    return [setpriv, "--pdeathsig", "KILL", "--", unshare, "--pid", "--kill-child=KILL", "--"]


STALE_AFTER = 60.0  # seconds: a work directory is made and locked in far less


def work_directory(prefix: str) -> tuple[str, int]:
    """A private directory for one client (mount point, cache, log), and the fd of the
    lock the manager holds on it while the source lives. The directories of managers
    that died without releasing theirs (killed outright) are removed first."""
    _sweep(prefix)
    work = tempfile.mkdtemp(prefix=prefix)
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


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (none when the kernel does not say)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except (OSError, ValueError):
        return []


class _Spawner:
    """Starts clients from one thread that lives as long as the manager: the kernel
    sends a death signal (``leash``) when the *thread* that forked the process ends, so
    no short-lived thread may start one."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[list[str], int, queue.Queue[object]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, command: list[str], log: int) -> subprocess.Popen[bytes]:
        """``command`` started with ``log`` as its output. Raises OSError."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="juicefs-spawner", daemon=True)
                self._thread.start()
        answer: queue.Queue[object] = queue.Queue(maxsize=1)
        self._requests.put((command, log, answer))
        started = answer.get()
        if isinstance(started, OSError):
            raise started
        assert isinstance(started, subprocess.Popen)
        return started

    def _serve(self) -> None:
        while True:
            command, log, answer = self._requests.get()
            try:
                answer.put(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            except OSError as e:
                answer.put(e)


_SPAWNER = _Spawner()


def start(command: list[str], log: int) -> subprocess.Popen[bytes]:
    """``command`` started from the spawner thread, ``log`` its output. Raises OSError."""
    return _SPAWNER.start(command, log)
