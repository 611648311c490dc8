"""The manager's children started from a thread whose fd table is its own, so that no
child ever holds a file of a VM's.

A clone copies the fd table of the thread that makes it, and a VM's served file is in the
manager's table from the manager's open until its close after the install. A child cloned
meanwhile (the next spare's hvfs-init) holds a copy, a writer, until it closes it: a VM
that writes that file, closes it and executes it at once then fails with ETXTBSY. Traced
(bpftrace, ``sched_process_fork``/``exec`` and the manager's ``openat2``/``close``): the
spare's clone, 0.25 ms later the manager's close of ``s2``, the VM's exec refused 0.1 ms
after that, and only 0.4 ms later the child's own exec. Nothing the VM does can wait for
that child (under the ptrace driver an exec stops only where it is checked), and nothing
the manager waits for (the spawn's return) comes after the child's copies are gone.

So every spawn runs on one thread that left the manager's table at its start
(``unshare(CLONE_FILES)``) and closed its copy of it: its table holds the standard fds,
a pidfd of the manager and, during a spawn, copies of the fds the child is given, taken
from the manager's table by ``pidfd_getfd`` (the main thread's table, which every other
thread shares). Nothing else may run on that thread: an fd number there names another
file than in the rest of the manager."""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hvfs._sys import process
from hvfs._sys.abi import CLONE_FILES
from hvfs._sys.libc import syscall
from hvfs._sys.spawn import posix_spawn

_ALL = 0xFFFFFFFF  # close_range's last fd: every one


class _Answer:
    """What the spawner's thread answers: a number, or the exception to raise (the part of
    concurrent.futures.Future used here: its import was 0.4-0.6 ms of a cold manager's, -X importtime)."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value = 0
        self._error: BaseException | None = None

    def give(self, value: int) -> None:
        self._value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def wait(self) -> int:
        """The number given; raises the exception given instead."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(frozen=True)
class _Request:
    """One spawn asked of the spawner's thread, and where its answer goes."""

    path: str
    argv: Sequence[str]
    env: Mapping[str, str]
    fds: Sequence[int]  # the caller's; the child gets fds[i] as its fd i, and nothing else
    setsid: bool
    setsigmask: Iterable[int] | None
    setsigdef: Iterable[int] | None
    answer: _Answer


class _Spawner:
    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._ready: _Answer | None = None
        self.tid = 0  # the thread's, once started

    def start(self) -> None:
        """Start the thread (once); raises what kept it from leaving the manager's table."""
        with self._lock:
            if self._ready is None:
                self._ready = _Answer()
                threading.Thread(target=self._serve, args=(self._ready,), name="hvfs-spawner", daemon=True).start()
            ready = self._ready
        ready.wait()

    def spawn(self, request: _Request) -> int:
        self.start()
        self._requests.put(request)
        return request.answer.wait()

    def _serve(self, ready: _Answer) -> None:
        self.tid = threading.get_native_id()
        try:
            process.unshare(CLONE_FILES)
            # The copy of the manager's table may hold a VM's files already: the standard
            # fds are all this thread keeps of it (a traceback printed here reaches stderr).
            _close_from_3()
            pidfd = process.pidfd_open(os.getpid())
        except OSError as e:
            ready.fail(e)
            return
        ready.give(0)
        while True:
            request = self._requests.get()
            try:
                request.answer.give(_spawn(pidfd, request))
            except BaseException as e:  # the caller's to raise
                request.answer.fail(e)


def _close_from_3() -> None:
    try:
        syscall("close_range", 3, _ALL, 0)
    except OSError as e:
        if e.errno != errno.ENOSYS:  # before Linux 5.9 (the ptrace driver runs from 5.6)
            raise
        for name in os.listdir("/proc/thread-self/fd"):  # this thread's table, not the process's
            if int(name) >= 3:
                with contextlib.suppress(OSError):  # the listing's own fd, closed already
                    os.close(int(name))


def _spawn(pidfd: int, request: _Request) -> int:
    copies: list[int] = []
    try:
        for fd in request.fds:
            # CLOEXEC, each the lowest number free in this thread's table, so copies[i] >= i:
            # no dup2 of the file actions overwrites a copy that a later one still needs (one
            # onto itself clears its CLOEXEC, as POSIX 2017 says and glibc does)
            copies.append(process.pidfd_getfd(pidfd, fd))
        return posix_spawn(
            request.path,
            request.argv,
            request.env,
            file_actions=[(os.POSIX_SPAWN_DUP2, copy, target) for target, copy in enumerate(copies)],
            setsid=request.setsid,
            setsigmask=request.setsigmask,
            setsigdef=request.setsigdef,
            close_from=len(copies),
        )
    finally:
        for copy in copies:
            os.close(copy)


_SPAWNER = _Spawner()


def start() -> int:
    """Leave the manager's fd table now (before a VM runs), not at the first spawn; the
    thread's id."""
    _SPAWNER.start()
    return _SPAWNER.tid


def spawn(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    fds: Sequence[int],
    *,
    setsid: bool = False,
    setsigmask: Iterable[int] | None = None,
    setsigdef: Iterable[int] | None = None,
) -> int:
    """posix_spawn of ``path`` whose child gets ``fds[i]`` (fds of the caller's) as its fd
    ``i`` and no other fd of the manager's; the child's pid."""
    return _SPAWNER.spawn(_Request(path, argv, env, fds, setsid, setsigmask, setsigdef, _Answer()))
