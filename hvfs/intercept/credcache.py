"""A notifying thread's credentials, read from /proc once and kept until it may change them.

Reading ``/proc/TID/status`` was 13-15 % of a served request (docs/performance.md). A
thread's credentials (ids, groups, capabilities) are its own: only the thread itself can
change them, and only through a call the filter traps (``Handling.CREDS``: the set*id
family, setgroups, capset, prctl, and ``Handling.EXEC``: execve and execveat, where
capabilities are recomputed). The umask is not a thread's own but its ``fs_struct``'s,
which sibling threads (and CLONE_FS children) share. So:

* The driver keeps what it read, per worker, keyed by the thread: a pidfd of that very
  thread (``PIDFD_THREAD``, Linux 6.9+), opened BEFORE the read, names the entry. A
  pidfd names a ``struct pid``, never a number: once its thread has exited, ``poll``
  says so (POLLIN) and the entry is dropped, however the number has been reused. While
  its thread lives, it holds the number, so the thread that notified with that number is
  that thread (proved by the request's ID_VALID check after its reads; and, before an
  entry is kept, by one right after the read: until then the number might be held by
  another thread, one that may be changing its own credentials).
  Without ``PIDFD_THREAD`` nothing is kept: every request reads /proc, as before.
* Every trapped call that may change credentials bumps ``CredWatch.generation`` before
  it is let continue; an entry read under an older generation is never used. The change
  happens after the bump, but only the calling thread's own entry could be stale, and
  that thread is inside the changing call: none of its requests can be read meanwhile.
* umask changes what its siblings see: the bump comes before, and, until the new umask is
  seen in the caller's status (``settled``), nothing is kept or used (``changing``).
* An exec from a thread that is not its process's leader takes over the leader's
  ``struct pid`` (the kernel's de_thread): a pidfd of the leader then names another
  thread, with the credentials of the exec. The driver then stops keeping credentials
  for that VM for good (``distrust``); so does a driver that resumes a VM another
  manager served, whose filter may not trap what this one relies on.

Anything unsure falls back to reading /proc.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from hvfs._native import hotpath
from hvfs._sys import process
from hvfs._sys.abi import PRCTL_KEEPS_CREDENTIALS, U32_MASK
from hvfs.api import Credentials
from hvfs.intercept.decoders.tracee import TargetGone

if TYPE_CHECKING:  # tracee.py keeps a KnownCredentials per worker
    from hvfs.intercept.tracee import Tracee

UMASK_SETTLES = 0.02  # seconds a continued umask may take to show before kept credentials are given up


class CredWatch:
    """One per driver (shared by its workers): whether what was read may still be used."""

    def __init__(self, trusted: bool = True) -> None:
        self.generation = 0
        self.changing = 0  # umask calls let continue and not yet seen done
        self.trusted = trusted
        self._lock = threading.Lock()  # a bump is a read and a write: two workers may bump at once

    def usable(self, generation: int) -> bool:
        return self.trusted and not self.changing and generation == self.generation

    def changed(self) -> None:
        """A call that may change its caller's own credentials is about to continue."""
        with self._lock:
            self.generation += 1

    def begin(self) -> None:
        """A umask is about to continue: nothing kept is used until ``end``."""
        with self._lock:
            self.changing += 1
            self.generation += 1

    def end(self) -> None:
        with self._lock:
            self.changing -= 1
            self.generation += 1

    def distrust(self) -> None:
        """Never keep credentials again in this driver."""
        with self._lock:
            self.trusted = False
            self.generation += 1


def before_change(
    watch: CredWatch,
    name: str,
    args: Sequence[int],
    tracee: Tracee,
    proceed: Callable[[], None],
    *,
    checks_exec: bool,
) -> bool:
    """The driver's part in ``name``, a call that may change its caller's credentials
    (``Handling.CREDS`` or ``EXEC``), before it runs: what workers kept is forgotten,
    then ``proceed()`` lets the call continue. False for an exec the manager is to check
    (``checks_exec``: strict VMs), True when the call was let continue here."""
    if name in ("execve", "execveat"):
        try:
            text = tracee.status()
            tracee.check_valid()
            leader = _status_value(text, b"\nTgid:") == _status_value(text, b"\nPid:")
        except (ValueError, OSError):  # unsure: as a thread that is not the leader
            leader = False
        if leader:
            watch.changed()
        else:  # takes over its leader's struct pid, which kept pidfds name (de_thread)
            watch.distrust()
        if checks_exec:
            return False
    elif name == "umask":
        _umask(watch, args[0] & 0o777, tracee, proceed)
        return True
    elif name != "prctl" or args[0] & U32_MASK not in PRCTL_KEEPS_CREDENTIALS:
        watch.changed()
    proceed()
    return True


def _umask(watch: CredWatch, wanted: int, tracee: Tracee, proceed: Callable[[], None]) -> None:
    """The umask is shared with sibling threads, whose requests may be read while it
    changes: none is kept or reused until the new umask shows in the caller's status."""
    watch.begin()
    try:
        proceed()
        deadline = time.monotonic() + UMASK_SETTLES
        while True:
            try:
                text = tracee.status()
            except TargetGone:
                return  # gone: its umask changes no more
            try:
                settled = _status_value(text, b"\nUmask:", 8) == wanted
            except ValueError:  # no Umask line (before 4.7): it cannot be seen
                settled = False
            if settled:
                return
            if time.monotonic() > deadline:  # stopped, or another thread set another umask
                watch.distrust()
                return
            time.sleep(0)
    except BaseException:
        watch.distrust()
        raise
    finally:
        watch.end()


def _status_value(text: bytes, key: bytes, base: int = 10) -> int:
    """The number on the line ``key`` of a /proc status text; ValueError if none."""
    start = text.index(key) + len(key)
    end = text.find(b"\n", start)
    return int(text[start : end if end >= 0 else None], base)


def _alive(pidfd: int) -> bool:
    """Whether the thread of a PIDFD_THREAD pidfd has not exited (it then still holds its
    number). One poll, which needs no permission over the thread."""
    if hotpath is not None:
        return bool(hotpath.thread_alive(pidfd))
    ready, _, _ = select.select([pidfd], [], [], 0)
    return not ready


class KnownCredentials:
    """The credentials one worker read lately, by thread. Not thread-safe: one per worker
    (one worker closing a pidfd another is polling could make it poll whatever reuses
    the number)."""

    LIMIT = 8

    def __init__(self, watch: CredWatch) -> None:
        self._watch = watch
        self._entries: dict[int, tuple[int, int, Credentials]] = {}  # tid: (pidfd, generation, credentials)
        self.threads = True  # whether PIDFD_THREAD works here (6.9+)

    def get(self, tid: int, read: Callable[[], Credentials], confirm: Callable[[], None]) -> Credentials:
        """The credentials of ``tid``: kept ones if they may still be used, else ``read()``,
        kept for next time when they may be and ``confirm()`` (the request's ID_VALID
        check, which raises if it fails) proves the read was of the notifying thread: a
        thread that took a dead one's number may be changing its credentials meanwhile."""
        entry = self._entries.get(tid)
        if entry is not None:
            pidfd, generation, credentials = entry
            if self._watch.usable(generation) and _alive(pidfd):
                return credentials
            self.drop(tid)
        watch = self._watch
        generation = watch.generation
        if not (self.threads and watch.usable(generation)):
            return read()
        try:  # before the read: the pidfd must name the thread the read is of, or a dead one
            pidfd = process.pidfd_open(tid, process.PIDFD_THREAD)
        except OSError as e:
            if e.errno == errno.EINVAL:  # no PIDFD_THREAD before 6.9: never keep
                self.threads = False
            return read()
        try:
            credentials = read()
        except BaseException:
            os.close(pidfd)
            raise
        try:
            confirm()
        except BaseException:
            os.close(pidfd)
            raise
        if not watch.usable(generation):  # changed meanwhile: this read may be of before
            os.close(pidfd)
            return credentials
        if len(self._entries) >= self.LIMIT:
            self.drop(next(iter(self._entries)))
        self._entries[tid] = (pidfd, generation, credentials)
        return credentials

    def drop(self, tid: int) -> None:
        entry = self._entries.pop(tid, None)
        if entry is not None:
            os.close(entry[0])

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        for pidfd, _, _ in self._entries.values():
            os.close(pidfd)
        self._entries.clear()
