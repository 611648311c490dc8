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
  it is let continue (an exec of a leader, a set*id, setgroups or capset that the seccomp
  driver's C loop continues is bumped there, in ``CredWatch.bumps``); an entry read under
  an older generation is never used. The change happens after the bump, but only the
  calling thread's own entry could be stale, and that thread is inside the changing call:
  none of its requests can be read meanwhile. So the C loop bumps only the caller's
  thread's part (its bucket of ``TID_BUCKETS``; hvfs/_native/cred_bumps.h): an entry
  is kept under ``generation_of(tid)``, the VM's generation plus its bucket's. A leader's
  exec changes no other thread's: it kills its process's other threads (their pidfds
  poll exited) before it commits the new credentials. Issue 14: make's 124 execs each
  turned every kept entry of the VM stale (88 reads, 0 reuses in W4).
* umask changes what its siblings see: the bump comes before, and, until the call is known
  to have run, nothing is kept or used (``changing``). It is known to have run when the
  caller's status shows the new value (one read, right after the call is let continue), or
  when the same thread notifies again (``seen``: a thread makes one call at a time, and a
  notification made after the umask's, by its id, comes after that call returned), or when
  the thread is gone (its pidfd polls ready). No worker waits for it: meanwhile requests
  read /proc, as without a cache, and a umask slow to show (a loaded machine; or another
  thread that set another umask at once, as tar's umask(0) then umask(old)) turns nothing
  off for good.
* An exec from a thread that is not its process's leader takes over the leader's
  ``struct pid`` (the kernel's de_thread): a pidfd of the leader then names another
  thread, with the credentials of the exec. The driver then stops keeping credentials
  for that VM for good (``distrust``); so does a driver that resumes a VM another
  manager served, whose filter may not trap what this one relies on.

The ptrace driver keeps credentials too, with the same ``KnownCredentials`` and watch: its
one tracer thread takes the VM's stops in turn, so a bump at a credential call's stop comes
before any later stop is read. Its filter stops the ``Handling.CREDS`` calls; a umask is
run to its exit right there (``Stopped.run_call``) and bumped again, so it is never
pending; every ``PTRACE_EVENT_EXEC`` (capabilities recomputed; a thread that is not the
leader taking the leader's pid) bumps before the exec'd thread runs again, so an exec
distrusts nothing there.

Anything unsure falls back to reading /proc.
"""

from __future__ import annotations

import errno
import os
import select
import struct
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from hvfs import api
from hvfs._native import hotpath
from hvfs._sys import process
from hvfs._sys.abi import PRCTL_KEEPS_CREDENTIALS, U32_MASK
from hvfs.intercept.decoders.tracee import TargetGone

if TYPE_CHECKING:  # tracee.py keeps a KnownCredentials per worker; the messages load with a first request
    from hvfs.api import Credentials
    from hvfs.intercept.tracee import Tracee

SEQUENCE_HALF = 1 << 63  # notification ids count up from a random u64 and wrap

# A umask let continue: its notification's sequence, a pidfd of its thread or -1, its number.
_Pending = tuple[int, int, int]

# CredWatch.bumps: the VM's part C bumps, then one per bucket of thread numbers (a tid's is
# 1 + tid % TID_BUCKETS; hvfs/_native/cred_bumps.h, whose TID_BUCKETS this must equal).
TID_BUCKETS = 256

# What the C loop reads to serve a stat without Python (hvfs/_native/served_stat.h): the
# watch's state, and each worker's published threads (tid, pidfd, generation; tid 0: free),
# each with what serving it switches (``Switch``; hvfs/_native/served_switch.h).
WATCH = struct.Struct("<QII")  # generation, changing, trusted
PUBLISHED_GROUPS = 32  # a caller with more supplementary groups is Python's
# tid, pidfd, generation, *Switch (groups padded), the umask, and whether access(2)'s real ids
# (``Credentials.for_access``) switch the same (hvfs/_native/served_link.h serves it then);
# then what else a record kept by C holds (hvfs/_native/first_credentials.h): the real ids and
# all effective capabilities, and whether it is fresh (C's, not yet ``adopt``ed), and a spare.
PUBLISHED = struct.Struct(f"<iiQIIIIQ{PUBLISHED_GROUPS}IIIIIQII")
_FRESH_AT = PUBLISHED.size - 8
_C_READS = struct.Struct("<Q")
# What acting_as switches for a caller (hvfs.manager.creds ``_switch``): which of SWITCH_*,
# fsuid, fsgid, the supplementary groups and the effective capabilities it takes.
Switch = tuple[int, int, int, tuple[int, ...], int]
SWITCH_GROUPS, SWITCH_IDS, SWITCH_CAPS = 1, 2, 4
_FREE = PUBLISHED.pack(0, -1, 0, 0, 0, 0, 0, 0, *(0,) * PUBLISHED_GROUPS, 0, 0, 0, 0, 0, 0, 0)


class CredWatch:
    """One per driver (shared by its workers): whether what was read may still be used."""

    def __init__(self, trusted: bool = True) -> None:
        self._generation = 0
        # Bumps made by the seccomp driver's C loop (compiled.EXEC_IF_LEADER: an exec of a
        # leader continued there; BUMP_CONTINUE), uint64s it adds to atomically, of the VM
        # and of its caller's bucket (``TID_BUCKETS``): part of ``generation_of``. Only C
        # writes them (a Python read-modify-write could lose one of C's).
        self.bumps = bytearray(8 * (1 + TID_BUCKETS))
        self._bumped = memoryview(self.bumps).cast("Q")
        self.changing = 0  # umask calls let continue and not yet known to have run
        self.trusted = trusted
        # how umask calls were known to have run
        self.settled_by = {"status": 0, "unchanged": 0, "later call": 0, "in another call": 0, "gone": 0}
        self._begins = 0  # umask calls begun, ever
        self._pending: dict[int, _Pending] = {}  # by tid
        # Umask calls that set the value already in force, maybe not run yet: harmless while
        # no other umask begins (it would set what is there); pending again if one does.
        self._unchanging: dict[int, _Pending] = {}
        self._lock = threading.Lock()  # a bump is a read and a write: two workers may bump at once
        self._known: list[KnownCredentials] = []  # the workers' caches, for their counts
        self.shared = bytearray(WATCH.size)  # generation, changing, trusted, for C (``_share_locked``)
        self._share_locked()

    def _share_locked(self) -> None:
        """After any change of the generation, ``changing`` or ``trusted`` (under the lock,
        or in __init__): the state the C loop checks published credentials against, written
        before the call that may change credentials continues. The generation shared is
        Python's own: C adds the bumps it makes itself (``bumps``) as it reads them, so an
        EXEC_IF_LEADER bump reaches it at once."""
        WATCH.pack_into(self.shared, 0, self._generation, self.changing, int(self.trusted))

    def register(self, known: KnownCredentials) -> None:
        """A worker's cache, counted in ``counts``."""
        self._known.append(known)

    @property
    def generation(self) -> int:
        """Changes of credentials begun so far: an entry read under another is not used."""
        return self._generation + self._bumped[0]

    def generation_of(self, tid: int) -> int:
        """``generation`` and the changes begun by ``tid`` (or a thread of its bucket) alone."""
        return self._generation + self._bumped[0] + self._bumped[1 + tid % TID_BUCKETS]

    def usable(self, generation: int, tid: int | None = None) -> bool:
        """Whether an entry kept under ``generation`` (of ``tid``: ``generation_of``) may be used."""
        now = self.generation if tid is None else self.generation_of(tid)
        return self.trusted and not self.changing and generation == now

    def changed(self) -> None:
        """A call that may change its caller's own credentials is about to continue."""
        with self._lock:
            self._generation += 1
            self._share_locked()

    def begin(self, tid: int = -1, sequence: int = 0, number: int = -1) -> int:
        """A umask (call ``number``) of ``tid`` (notified as ``sequence``) is about to continue: nothing kept
        is used until it is ``settle``d. A thread makes one call at a time, so a second
        begin of the same thread is a later umask (an earlier one interrupted and restarted,
        or already run): it replaces the first. A token for ``alone``."""
        pidfd = -1
        token = -1
        if tid >= 0:
            try:
                pidfd = process.pidfd_open(tid, process.PIDFD_THREAD)
            except OSError:  # gone, or no PIDFD_THREAD: settled by a later call or its status
                pidfd = -1
        with self._lock:
            for other, entry in self._unchanging.items():  # may run after this one: undo it
                if other in self._pending:
                    if entry[1] >= 0:
                        os.close(entry[1])
                else:
                    self._pending[other] = entry
                    self.changing += 1
            self._unchanging.clear()
            old = self._pending.pop(tid, None)
            if old is None:
                self.changing += 1
            elif old[1] >= 0:
                os.close(old[1])
            self._begins += 1
            if not self._pending:
                token = self._begins
            self._pending[tid] = (sequence, pidfd, number)
            self._generation += 1
            self._share_locked()
        return token

    def alone(self, tid: int, token: int) -> bool:
        """Whether the umask of ``tid`` begun with ``token`` is the only one let continue
        since it began, none pending then: a change of the umask seen since can only be its."""
        with self._lock:
            return token >= 0 and token == self._begins and len(self._pending) == 1 and tid in self._pending

    def settle(self, tid: int = -1, how: str = "status") -> None:
        """The umask of ``tid`` has run (or never will): kept credentials may be kept again.
        ``how`` "unchanged": it sets the value in force, run or not (``_unchanging``)."""
        with self._lock:
            entry = self._pending.pop(tid, None)
            if entry is None:
                entry = self._unchanging.pop(tid, None)
                if entry is not None and entry[1] >= 0:
                    os.close(entry[1])
                return
            if how == "unchanged":
                self._unchanging[tid] = entry
            elif entry[1] >= 0:
                os.close(entry[1])
            self.changing -= 1
            self._generation += 1
            self._share_locked()
            self.settled_by[how] += 1

    def end(self) -> None:
        """``settle`` of a umask begun without a thread (tests, callers that wait)."""
        self.settle()

    def seen(self, tid: int, sequence: int) -> None:
        """``tid`` notified ``sequence``: if that is after its pending umask's notification,
        the umask returned before it (a thread makes one call at a time)."""
        if not self._pending and not self._unchanging:  # the usual case, without a lock
            return
        entry = self._pending.get(tid) or self._unchanging.get(tid)
        if entry is not None and 0 < (sequence - entry[0]) % (1 << 64) < SEQUENCE_HALF:
            self.settle(tid, "later call")

    def reap(self) -> None:
        """Settle the pending umasks whose threads are gone (their pidfds poll ready) or
        inside another call: a thread that exits or waits (a shell's wait4 after its
        ``umask 022``) without another trapped call must not keep the cache off."""
        if not self._pending and not self._unchanging:
            return
        with self._lock:  # polled under it: another worker's settle closes these pidfds
            entries = [*self._pending.items(), *self._unchanging.items()]
            found = [(tid, _done(tid, pidfd, number)) for tid, (_, pidfd, number) in entries if pidfd >= 0]
        for tid, how in found:
            if how is not None:
                self.settle(tid, how)

    def distrust(self) -> None:
        """Never keep credentials again in this driver."""
        with self._lock:
            self.trusted = False
            self._generation += 1
            self._share_locked()

    def counts(self) -> dict[str, int]:
        """For --stats: credential reads (of /proc) and uses of kept ones, by all workers."""
        return {
            "reads": sum(k.reads for k in self._known),
            "kept_used": sum(k.hits for k in self._known),
            "read_in_c": sum(k.read_in_c for k in self._known),
            "trusted": int(self.trusted),
            "umask_pending": self.changing,
            **{f"umask_settled_by_{how.replace(' ', '_')}": n for how, n in self.settled_by.items()},
        }


def before_change(
    watch: CredWatch,
    name: str,
    args: Sequence[int],
    tracee: Tracee,
    proceed: Callable[[], None],
    *,
    checks_exec: bool,
    sequence: int = 0,
    number: int = -1,
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
            # The manager's check reads the caller's credentials after the bump, and they
            # would be kept under the new generation, then used after the exec changed
            # them (tests/adversarial/test_exec_cred_race.py, strict: the first exec).
            tracee.keeps_credentials = False
            return False
    elif name == "umask":
        _umask(watch, args[0] & 0o777, tracee, proceed, sequence, number)
        return True
    elif name != "prctl" or args[0] & U32_MASK not in PRCTL_KEEPS_CREDENTIALS:
        watch.changed()
    proceed()
    return True


def _umask(
    watch: CredWatch, wanted: int, tracee: Tracee, proceed: Callable[[], None], sequence: int, number: int
) -> None:
    """The umask is shared with sibling threads, whose requests may be read while it
    changes: none is kept or reused until it is known to have run. Its status, read before
    and right after it continues, proves it ran when the value changed to the one asked and
    no other umask was let continue meanwhile (``alone``); otherwise its thread's next
    notification (``seen``) or its exit (``reap``) settles it. No worker waits for it."""
    tid = tracee.pid
    token = watch.begin(tid, sequence, number)
    try:
        try:
            before: int | None = _status_value(tracee.status(), b"\nUmask:", 8)
        except (TargetGone, ValueError):  # gone (then continued in vain), or no Umask line (before 4.7)
            before = None
        proceed()
        if before == wanted:
            watch.settle(tid, "unchanged")
            return
        if before is None:
            return  # a status cannot tell this call done: a later call or its exit will
        try:
            now = _status_value(tracee.status(), b"\nUmask:", 8)
        except TargetGone:
            watch.settle(tid, "gone")  # gone: its umask changes no more
            return
        if now == wanted and watch.alone(tid, token):
            watch.settle(tid, "status")
    except BaseException:
        watch.settle(tid, "gone")
        watch.distrust()
        raise


def _done(tid: int, pidfd: int, number: int) -> str | None:
    """How the umask (call ``number``) of the thread of ``pidfd`` is known to have run, or
    None. Inside another call (``/proc/TID/syscall``: its number, or -1 out of any), it
    has returned: a thread makes one call at a time. A liveness poll after the read proves
    it was of that very thread (alive, it holds its number)."""
    if not _alive(pidfd):
        return "gone"
    if number < 0:
        return None
    try:
        fd = os.open(f"/proc/{tid}/syscall", os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(fd, 256)
        finally:
            os.close(fd)
        current = int(text.split(maxsplit=1)[0])  # ValueError: "running", it may be in this one
    except (OSError, ValueError, IndexError):
        return None
    return "in another call" if current != number and _alive(pidfd) else None


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

    def __init__(self, watch: CredWatch, publish: Callable[[Credentials], Switch | None] | None = None) -> None:
        self._watch = watch
        # Threads whose kept credentials ``publish`` gives a ``Switch`` for (hvfs.intercept.
        # served_stat ``switch_of``), for the C loop, at the slot of their entry.
        self._publish = publish
        # LIMIT records, then how many credentials C read and kept (first_credentials.h)
        self.published = bytearray(_FREE * self.LIMIT + _C_READS.pack(0))
        self._slots: dict[int, int] = {}  # tid: its slot in ``published``
        self._entries: dict[int, tuple[int, int, Credentials]] = {}  # tid: (pidfd, generation, credentials)
        self.threads = True  # whether PIDFD_THREAD works here (6.9+)
        self.reads = 0  # credentials read from /proc, for --stats
        self.hits = 0  # kept credentials used
        watch.register(self)

    def get(self, tid: int, read: Callable[[], Credentials], confirm: Callable[[], None]) -> Credentials:
        """The credentials of ``tid``: kept ones if they may still be used, else ``read()``,
        kept for next time when they may be and ``confirm()`` (the request's ID_VALID
        check, which raises if it fails) proves the read was of the notifying thread: a
        thread that took a dead one's number may be changing its credentials meanwhile."""
        entry = self._entries.get(tid)
        if entry is not None:
            pidfd, generation, credentials = entry
            if self._watch.usable(generation, tid) and _alive(pidfd):
                self.hits += 1
                return credentials
            self.drop(tid)
        watch = self._watch
        if watch.changing:
            watch.reap()  # a pending umask of a thread gone: settled
        generation = watch.generation_of(tid)
        self.reads += 1
        if not (self.threads and watch.usable(generation, tid)):
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
        if not watch.usable(generation, tid):  # changed meanwhile: this read may be of before
            os.close(pidfd)
            return credentials
        if len(self._entries) >= self.LIMIT:
            self.drop(next(iter(self._entries)))
        self._entries[tid] = (pidfd, generation, credentials)
        publish = self._publish
        switch = None if publish is None else publish(credentials)
        if publish is not None and switch is not None:
            slot = next(i for i in range(self.LIMIT) if i not in self._slots.values())  # LIMIT entries at most
            self._slots[tid] = slot
            what, uid, gid, groups, effective = switch
            padded = (*groups, *(0,) * (PUBLISHED_GROUPS - len(groups)))
            alike = publish(credentials.for_access()) == switch
            record = (tid, pidfd, generation, what, uid, gid, len(groups), effective, *padded, credentials.umask, alike)
            rest = (credentials.real_uid, credentials.real_gid, credentials.capabilities, 0, 0)
            PUBLISHED.pack_into(self.published, slot * PUBLISHED.size, *record, *rest)
        return credentials

    @property
    def read_in_c(self) -> int:
        """Credentials the C loop read and kept (for --stats, with ``reads``)."""
        return int(_C_READS.unpack_from(self.published, self.LIMIT * PUBLISHED.size)[0])

    def adopt(self) -> None:
        """Take over what the C loop kept (fresh records: hvfs/_native/first_credentials.h),
        its pidfds with it, and forget the threads gone, whose slots C may fill next. Called
        by the worker as serve hands it a request, before anything reads ``_entries``."""
        published = self.published
        for at in range(_FRESH_AT, self.LIMIT * PUBLISHED.size, PUBLISHED.size):
            if not published[at]:
                continue
            slot = at // PUBLISHED.size
            tid, pidfd, generation, _, uid, gid, count, _, *rest = PUBLISHED.unpack_from(published, at - _FRESH_AT)
            umask, _, real_uid, real_gid, capabilities = rest[PUBLISHED_GROUPS : PUBLISHED_GROUPS + 5]
            old = self._entries.get(tid)
            if old is not None and old[0] != pidfd:  # one never published: C had no record to keep its pidfd
                self.drop(tid)
            groups = tuple(rest[:count])
            credentials = api.Credentials(uid, gid, groups, umask, capabilities, real_uid, real_gid)
            self._entries.pop(tid, None)  # last in, as a read now
            self._entries[tid] = (pidfd, generation, credentials)
            self._slots[tid] = slot
            published[at] = 0
        for tid, (pidfd, _, _) in list(self._entries.items()):
            if not _alive(pidfd):
                self.drop(tid)
        while len(self._entries) > self.LIMIT:
            self.drop(next(iter(self._entries)))

    def drop(self, tid: int) -> None:
        entry = self._entries.pop(tid, None)
        if entry is not None:
            slot = self._slots.pop(tid, None)
            if slot is not None:  # unpublished before its pidfd is closed
                self.published[slot * PUBLISHED.size : (slot + 1) * PUBLISHED.size] = _FREE
            os.close(entry[0])

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self.adopt()  # the pidfds of records C kept are then ours to close
        for tid in list(self._entries):
            self.drop(tid)
