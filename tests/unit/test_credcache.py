"""What the driver keeps of a thread's credentials (hvfs/intercept/credcache.py), with real
threads of this host: kept while the thread lives and nothing changed, read again once it
has exited (its number may be another thread's by then) or a change was noted."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from hvfs._sys import process
from hvfs.api import Credentials
from hvfs.intercept import credcache
from hvfs.intercept.credcache import CredWatch, KnownCredentials
from hvfs.intercept.decoders.tracee import TargetGone
from tests.conftest import require

ROOT = Credentials(uid=0, gid=0, groups=(), umask=0o022, capabilities=-1 & 0x1FFFFFFFFFF, real_uid=0, real_gid=0)
NOBODY = Credentials(uid=65534, gid=65534, groups=(), umask=0o022, capabilities=0, real_uid=65534, real_gid=65534)


class Reader:
    def __init__(self, answer: Credentials) -> None:
        self.answer = answer
        self.reads = 0

    def __call__(self) -> Credentials:
        self.reads += 1
        return self.answer


def valid() -> None:
    """The request's ID_VALID check, passed (these threads are not trapped)."""


@pytest.fixture
def thread() -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["sleep", "60"])
    yield process  # type: ignore[misc]
    process.kill()
    process.wait()


def kept(watch: CredWatch, tid: int) -> KnownCredentials:
    known = KnownCredentials(watch)
    reader = Reader(ROOT)
    assert known.get(tid, reader, valid) == ROOT and known.get(tid, reader, valid) == ROOT
    require(known.threads, "pidfd_open(PIDFD_THREAD) needs Linux 6.9")
    assert reader.reads == 1 and len(known) == 1
    return known


def test_kept_while_the_thread_lives_and_nothing_changed(thread: subprocess.Popen[bytes]) -> None:
    known = kept(CredWatch(), thread.pid)
    again = Reader(NOBODY)
    assert known.get(thread.pid, again, valid) == ROOT and again.reads == 0
    known.close()


@pytest.mark.parametrize("path", ["native", "python"])
def test_read_again_once_the_thread_has_exited(
    thread: subprocess.Popen[bytes], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "python":
        monkeypatch.setattr(credcache, "hotpath", None)  # the liveness poll through select
    else:
        require(credcache.hotpath is not None, "the native hot path is not built (scripts/setup)")
    known = kept(CredWatch(), thread.pid)
    thread.kill()
    thread.wait()  # reaped: the number is free for another thread
    again = Reader(NOBODY)
    assert known.get(thread.pid, again, valid) == NOBODY and again.reads == 1
    known.close()


@pytest.mark.parametrize("change", ["changed", "begin", "distrust"])
def test_read_again_after_a_change(thread: subprocess.Popen[bytes], change: str) -> None:
    watch = CredWatch()
    known = kept(watch, thread.pid)
    getattr(watch, change)()
    again = Reader(NOBODY)
    assert known.get(thread.pid, again, valid) == NOBODY and again.reads == 1
    assert known.get(thread.pid, again, valid) == NOBODY
    # kept again only once nothing is changing and the driver still trusts its filter
    assert again.reads == (1 if change == "changed" else 2)
    known.close()


def test_a_read_during_a_change_is_not_kept(thread: subprocess.Popen[bytes]) -> None:
    watch = CredWatch()
    known = KnownCredentials(watch)

    def racing() -> Credentials:
        watch.changed()  # noted while this read was under way: it may be of before
        return ROOT

    assert known.get(thread.pid, racing, valid) == ROOT
    assert len(known) == 0
    known.close()


def test_a_read_not_confirmed_is_not_kept(thread: subprocess.Popen[bytes]) -> None:
    known = KnownCredentials(CredWatch())

    def gone() -> None:
        raise TargetGone()

    with pytest.raises(TargetGone):
        known.get(thread.pid, Reader(ROOT), gone)
    assert len(known) == 0
    known.close()


@pytest.mark.parametrize("sequence", [7, (1 << 64) - 1])  # ids count up from a random u64 and wrap
def test_a_umask_is_settled_by_a_later_call_of_its_thread(thread: subprocess.Popen[bytes], sequence: int) -> None:
    watch = CredWatch()
    known = kept(watch, thread.pid)
    watch.begin(thread.pid, sequence)
    again = Reader(NOBODY)
    assert known.get(thread.pid, again, valid) == NOBODY and again.reads == 1  # pending: read, not kept
    watch.seen(thread.pid, sequence)  # the umask's own notification: not later
    watch.seen(thread.pid + 1, (sequence + 1) % (1 << 64))  # another thread's
    assert watch.changing == 1
    watch.seen(thread.pid, (sequence + 1) % (1 << 64))
    assert watch.changing == 0 and watch.settled_by["later call"] == 1
    assert known.get(thread.pid, again, valid) == NOBODY and known.get(thread.pid, again, valid) == NOBODY
    assert again.reads == 2  # kept again once settled
    known.close()


def test_a_umask_of_a_thread_gone_is_settled(thread: subprocess.Popen[bytes]) -> None:
    watch = CredWatch()
    known = kept(watch, thread.pid)
    watch.begin(thread.pid, 1)
    thread.kill()
    thread.wait()
    again = Reader(NOBODY)
    known.get(12345678, again, valid)  # any read while pending looks for pending threads gone
    assert watch.changing == 0 and watch.settled_by["gone"] == 1
    assert watch.counts()["reads"] >= 2
    known.close()


def test_a_umask_to_the_value_in_force_is_pending_again_once_another_begins(thread: subprocess.Popen[bytes]) -> None:
    """Set to what is there, it may run late, after another thread's umask: harmless until
    another begins, then waited for as any other."""
    watch = CredWatch()
    token = watch.begin(thread.pid, 10)
    assert watch.alone(thread.pid, token)
    watch.settle(thread.pid, "unchanged")
    assert watch.changing == 0 and watch.usable(watch.generation)
    other = watch.begin(thread.pid + 1, 11)
    assert watch.changing == 2 and not watch.alone(thread.pid + 1, other)
    watch.settle(thread.pid + 1, "status")
    assert watch.changing == 1  # the first, maybe not run yet
    watch.seen(thread.pid, 12)
    assert watch.changing == 0 and watch.usable(watch.generation)


def published(known: KnownCredentials) -> list[tuple[int, ...]]:
    """The entries the C loop reads (tid, pidfd, generation, then the Switch: what, uid,
    gid, the number of groups, the capabilities, the groups; then the umask, whether
    access(2)'s real ids switch the same, the real ids, all effective capabilities, whether
    C kept it and a spare), the free ones left out."""
    size = credcache.PUBLISHED.size
    entries = [credcache.PUBLISHED.unpack_from(known.published, at) for at in range(0, known.LIMIT * size, size)]
    return [entry for entry in entries if entry[1] >= 0]


def switch_if_root(creds: Credentials) -> credcache.Switch | None:
    """A Switch for root callers alone, that says which they are: switching all but the groups."""
    return (credcache.SWITCH_IDS | credcache.SWITCH_CAPS, creds.uid, creds.gid, (7, 8), 5) if creds.uid == 0 else None


def test_kept_credentials_are_published_for_the_c_loop_with_their_switch(thread: subprocess.Popen[bytes]) -> None:
    watch = CredWatch()
    known = KnownCredentials(watch, publish=switch_if_root)
    assert known.get(thread.pid, Reader(ROOT), valid) == ROOT
    require(known.threads, "pidfd_open(PIDFD_THREAD) needs Linux 6.9")
    [(tid, pidfd, generation, what, uid, gid, count, effective, *groups_on)] = published(known)
    groups, (umask, alike, *rest) = groups_on[: credcache.PUBLISHED_GROUPS], groups_on[credcache.PUBLISHED_GROUPS :]
    assert tid == thread.pid and pidfd >= 0 and generation == watch.generation
    assert (what, uid, gid, count, effective) == (credcache.SWITCH_IDS | credcache.SWITCH_CAPS, 0, 0, 2, 5)
    assert groups == [7, 8] + [0] * (credcache.PUBLISHED_GROUPS - 2) and umask == ROOT.umask
    assert alike == 1  # real ids 0: access(2) switches as the rest
    assert rest == [ROOT.real_uid, ROOT.real_gid, ROOT.capabilities, 0, 0]  # not fresh: Python's own
    known.drop(thread.pid)  # unpublished before its pidfd is closed
    assert published(known) == []
    assert bytes(known.published) == bytes(KnownCredentials(watch).published)  # all free, as made
    other = KnownCredentials(watch, publish=switch_if_root)
    assert other.get(thread.pid, Reader(NOBODY), valid) == NOBODY and len(other) == 1
    assert published(other) == []  # kept, but no Switch for it: Python's
    other.close()


def test_a_caller_whose_real_ids_differ_is_published_not_alike_for_access(thread: subprocess.Popen[bytes]) -> None:
    """A set-user-id root program run by uid 1000: access(2) checks as 1000 (``for_access``),
    which switches otherwise, so the C loop leaves its access without AT_EACCESS to Python."""
    setuid = dataclasses.replace(ROOT, real_uid=1000, real_gid=1000)
    known = KnownCredentials(CredWatch(), publish=switch_if_root)
    assert known.get(thread.pid, Reader(setuid), valid) == setuid
    require(known.threads, "pidfd_open(PIDFD_THREAD) needs Linux 6.9")
    [entry] = published(known)
    assert entry[3] == credcache.SWITCH_IDS | credcache.SWITCH_CAPS and entry[-1] == 0
    known.close()


@pytest.mark.parametrize("change", ["changed", "begin", "distrust"])
def test_the_shared_watch_changes_before_the_call_continues(change: str) -> None:
    watch = CredWatch()
    assert credcache.WATCH.unpack_from(watch.shared) == (0, 0, 1)
    getattr(watch, change)()
    generation, changing, trusted = credcache.WATCH.unpack_from(watch.shared)
    assert generation == watch.generation == 1  # Python's own: no bumps of C's here
    assert (changing, trusted) == {"changed": (0, 1), "begin": (1, 1), "distrust": (0, 0)}[change]
    if change == "begin":
        watch.end()
        assert credcache.WATCH.unpack_from(watch.shared) == (2, 0, 1)


def _keep_in_c(known: KnownCredentials, slot: int, tid: int, pidfd: int, generation: int, fresh: int) -> None:
    """What hvfs/_native/first_credentials.h writes: NOBODY's record, marked ``fresh``."""
    groups = (0,) * credcache.PUBLISHED_GROUPS
    record = (tid, pidfd, generation, 7, 65534, 65534, 0, 0, *groups, 0o022, 1, 65534, 65534, 0, fresh, 0)
    credcache.PUBLISHED.pack_into(known.published, slot * credcache.PUBLISHED.size, *record)


def test_what_the_c_loop_kept_is_adopted_with_its_pidfd(thread: subprocess.Popen[bytes]) -> None:
    """A fresh record becomes an entry, used without a read while it holds; one under the
    pidfd of the thread's own stale entry (refreshed in place) keeps that pidfd; a thread
    gone is forgotten, its slot free for C."""
    watch = CredWatch()
    known = kept(watch, thread.pid)  # ROOT, unpublished (no publish): C kept a record of its own
    require(known.threads, "pidfd_open(PIDFD_THREAD) needs Linux 6.9")
    pidfd = process.pidfd_open(thread.pid, process.PIDFD_THREAD)
    _keep_in_c(known, 3, thread.pid, pidfd, watch.generation_of(thread.pid), fresh=1)
    known.adopt()
    again = Reader(ROOT)
    assert known.get(thread.pid, again, valid) == NOBODY and again.reads == 0 and len(known) == 1
    assert published(known)[0][-2] == 0  # adopted: Python's now
    _keep_in_c(known, 3, thread.pid, pidfd, watch.generation_of(thread.pid), fresh=2)
    known.adopt()
    os.fstat(pidfd)  # the refreshed record's pidfd is the entry's: still open
    thread.kill()
    thread.wait()
    known.adopt()
    assert len(known) == 0 and published(known) == []
    with pytest.raises(OSError):
        os.fstat(pidfd)  # closed with its entry
    known.close()
