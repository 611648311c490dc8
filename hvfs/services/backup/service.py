"""The backup service: the manager tells it when a file's content is complete or about to
disappear, and it saves that content as a version when a rule selects the path.

Integration (``vm`` is the VM's name; paths are absolute VM paths, made normal with
posixpath.normpath, so pass the path the handler resolved, not one with ".." across a
symlink; each ``fd`` is the manager's own read-only fd on the file in the VM's writable
view, which the service reads with pread and never closes). Call it with the manager's
own credentials, outside ``creds.acting_as``: see hvfs.services.snapshot on leases.

- ``on_closed_after_write(vm, path, fd)``: after a file opened for writing is closed
  (fanotify FAN_CLOSE_WRITE or inotify IN_CLOSE_WRITE on the writable view, since close
  is not trapped). May run on a worker thread, off the hot path.
- ``before_remove(vm, path, fd)``: before the handler of an Unlink of ``path``, or of a
  Rename whose destination ``path`` exists (``replaced=True``), with an fd on the file
  that will disappear. Synchronous, on the hot path: it copies the file unless its
  fingerprint shows it unchanged since its last version.
- ``after_remove(vm, path)``: after such an Unlink succeeded: records the removal, so a
  tree restored as of a later time leaves the file out.
- ``on_renamed(vm, old, new, fd)``: after a Rename of a file succeeded, ``fd`` on the
  file now at ``new``: records ``old`` removed and saves ``new`` (the "write a temporary
  file, rename it over the old one" pattern, whose close happened under the temporary
  name). For RENAME_EXCHANGE nothing disappears: on_closed_after_write both paths.
- ``on_directory_renamed(vm, old, new)``: after a Rename of a directory succeeded: the
  files known under ``old`` are recorded under ``new`` with the same content, without
  reading anything, and removed under ``old``.

Bounds (BackupLimits), so that no VM can make the manager copy without end or fill a
disk (``truncate -s 50G f; rm f``):

- A version larger than ``max_file`` (``--backup-max-file``; its size, holes included,
  which is what a restore writes and what the hash reads) is skipped, unread. Holes are
  never read or stored (see store.py), so a version takes at most its data on disk.
- The store takes nothing past ``max_store`` (``--backup-max-store``) and never brings
  its file system under a margin of free space (hvfs.services.space).
- A save on the request path (before_remove) is skipped when the file is larger than
  ``sync_bytes``, and abandoned once it has taken ``sync_seconds``: the VM waits at most
  that long. A save off the request path (on_closed_after_write, on_renamed) is
  abandoned after ``async_seconds``, which also bounds how long a VM's open for writing
  may wait for the copy's read lease.

Each skip is counted in ``statistics()`` (skipped_size, skipped_space, skipped_time),
logged, and given to ``report`` as a Skipped, whose ``reason`` reads "skipped: 50.0 GiB
> backup-max-file 1.0 GiB" (the manager publishes it as a "backup" event). A file
skipped for its size is skipped once: until it changes, later saves of it return None
without another report.

While the service copies a file under a read lease, a VM's open of it for writing waits
for the copy to end (the manager's handler thread blocks in open); the copy never waits
for the manager, so this cannot deadlock. The methods never raise for a backup failure:
a full disk or a file that never stopped changing must not fail the VM's call. They log
it, count it in ``statistics()`` and return None; a saved version is returned.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import posixpath
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hvfs import deferred
from hvfs.services.backup.index import BackupIndex, Version
from hvfs.services.backup.store import BlobStore, open_store
from hvfs.services.snapshot import ContentTooLarge, Fingerprint, OutOfTime, UnstableContent, read_stable
from hvfs.services.space import NoRoom, Space
from hvfs.services.units import format_size

log = deferred.logger("hvfs.services")

_KNOWN_LIMIT = 1 << 16  # fingerprints remembered to skip unchanged files; bounded memory
DEFAULT_MAX_FILE = 1 << 30


@dataclass(frozen=True, slots=True)
class BackupLimits:
    """What one version and the whole store may take, and how long a save may last (see
    the module's docstring). ``margin`` None: 5% of the store's file system, at most 1 GiB."""

    max_file: int = DEFAULT_MAX_FILE
    max_store: int | None = None
    margin: int | None = None
    sync_bytes: int = 256 << 20
    sync_seconds: float = 2.0
    async_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Skipped:
    """A version not saved because of a bound."""

    vm: str
    path: str
    trigger: str  # as a Version's: "close", "remove", "replace", "rename"
    reason: str  # "skipped: …", naming the bound


@dataclass(frozen=True, slots=True)
class BackupRule:
    """Back up the files whose VM path matches ``glob`` in the VMs whose name matches ``vm``
    (fnmatch: ``*`` crosses ``/``, so ``/data/*`` covers the whole tree)."""

    glob: str
    vm: str = "*"

    @classmethod
    def parse(cls, text: str) -> BackupRule:
        """``GLOB`` (an absolute path glob, every VM) or ``VM-GLOB:GLOB``. Raises ValueError."""
        vm, _, glob = text.rpartition(":") if not text.startswith("/") else ("*", "", text)
        if not glob.startswith("/") or not vm:
            raise ValueError(f"backup rule {text!r}: expected /PATH-GLOB or VM-GLOB:/PATH-GLOB, as db-*:/data/*.db")
        return cls(glob, vm)

    def matches(self, vm: str, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.glob) and fnmatch.fnmatchcase(vm, self.vm)


@dataclass(frozen=True, slots=True)
class BackupStatistics:
    saved: int  # versions recorded
    new_blobs: int  # of which the content was not in the store yet
    unchanged: int  # calls that found the content already saved
    removals: int  # removals recorded
    torn: int  # files that kept changing while read: nothing recorded
    failed: int  # I/O or database errors: nothing recorded (logged)
    skipped_size: int  # larger than max_file, or than sync_bytes on the request path
    skipped_space: int  # the store at max_store, or its file system at its margin
    skipped_time: int  # abandoned at sync_seconds or async_seconds


class BackupService:
    """Saves versions of the files its rules select. Thread-safe."""

    def __init__(
        self,
        store: BlobStore,
        index: BackupIndex,
        rules: Sequence[BackupRule],
        *,
        limits: BackupLimits = BackupLimits(),
        report: Callable[[Skipped], None] | None = None,
        attempts: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.index, self.rules, self.limits = store, index, tuple(rules), limits
        self.space = Space(
            store.root, name="backup-max-store", limit=limits.max_store, used=self._used, margin=limits.margin
        )
        store.bound(self.space, index)
        self._report = report
        self._attempts = attempts
        self._clock = clock
        self._lock = threading.Lock()
        self._recording = threading.Lock()
        # Of the file when its last version was saved (True) or skipped for its size (False).
        self._known: dict[tuple[str, str], tuple[Fingerprint, bool]] = {}
        self._counts = {field.name: 0 for field in dataclasses.fields(BackupStatistics)}

    @classmethod
    def open(
        cls,
        directory: str,
        rules: Sequence[BackupRule],
        *,
        limits: BackupLimits = BackupLimits(),
        report: Callable[[Skipped], None] | None = None,
        shared: bool = False,
    ) -> BackupService:
        """The service on the store and index in ``directory`` (created; see open_store)."""
        return cls(*open_store(directory, shared=shared), rules, limits=limits, report=report)

    def _used(self) -> int:
        return self.index.blob_bytes() + self.index.file_bytes()

    def close(self) -> None:
        self.index.close()

    def matches(self, vm: str, path: str) -> bool:
        return any(rule.matches(vm, path) for rule in self.rules)

    def on_closed_after_write(self, vm: str, path: str, fd: int) -> Version | None:
        return self._save(vm, path, fd, "close", waiting=False)

    def before_remove(
        self, vm: str, path: str, fd: int, *, replaced: bool = False, deadline: float | None = None
    ) -> Version | None:
        """``deadline``: when to give up (monotonic), for a request that destroys several
        files in one budget; default: ``sync_seconds`` from now."""
        return self._save(vm, path, fd, "replace" if replaced else "remove", waiting=True, deadline=deadline)

    def on_renamed(self, vm: str, old: str, new: str, fd: int) -> Version | None:
        self.after_remove(vm, old)
        return self._save(vm, new, fd, "rename", waiting=False)

    def on_directory_renamed(self, vm: str, old: str, new: str) -> list[Version]:
        """Record the files known under directory ``old`` at directory ``new``, as they
        last were; returns the versions recorded at ``new``."""
        old, new = posixpath.normpath(old), posixpath.normpath(new)
        moved = []
        try:
            with self.index.transaction():
                moved = self._move(vm, old, new)
        except sqlite3.Error:
            log.exception("backup: cannot record the rename of %s to %s in VM %s", old, new, vm)
            self._count("failed")
            moved = []
        return moved

    def _move(self, vm: str, old: str, new: str) -> list[Version]:
        moved = []
        for version in self.index.tree_at(vm, old, self._clock()):
            self.after_remove(vm, version.path)
            path = new + version.path[len(old) :]
            if self.matches(vm, path) and version.hash is not None:
                moved.append(self._record(vm, path, version.hash, version.size, version.mode, version.mtime_ns))
        return moved

    def after_remove(self, vm: str, path: str) -> Version | None:
        """Record that ``path`` is gone, if it has versions and was not already gone."""
        path = posixpath.normpath(path)
        if not self.matches(vm, path):
            return None
        with self._lock:
            self._known.pop((vm, path), None)
        try:
            with self.index.transaction():
                latest = self.index.latest(vm, path)
                if latest is None or latest.removed:
                    return None
                version = self.index.add(
                    vm, path, time=self._clock(), size=0, hash=None, trigger="removed", mode=0, mtime_ns=0
                )
        except sqlite3.Error:
            log.exception("backup: cannot record the removal of %s in VM %s", path, vm)
            self._count("failed")
            return None
        self._count("removals")
        return version

    def statistics(self) -> BackupStatistics:
        with self._lock:
            return BackupStatistics(**self._counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _save(
        self, vm: str, path: str, fd: int, trigger: str, *, waiting: bool, deadline: float | None = None
    ) -> Version | None:
        """Save the content of ``fd`` as a version of ``path``; ``waiting``: a VM waits
        for the answer meanwhile (the request path's budget applies)."""
        path = posixpath.normpath(path)
        if not self.matches(vm, path):
            return None
        limits = self.limits
        seconds = limits.sync_seconds if waiting else limits.async_seconds
        if deadline is None:
            deadline = time.monotonic() + seconds
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None  # directories, devices, sockets: nothing to keep
            fingerprint = Fingerprint.of(st)
            with self._lock:
                known = self._known.get((vm, path))
            if known is not None and known[0] == fingerprint:
                if known[1]:
                    self._count("unchanged")
                return None  # saved already, or skipped already for its size
            refused = self._refusal(st.st_size, waiting)
            if refused is not None:
                if st.st_size > limits.max_file:
                    self._remember(vm, path, fingerprint, saved=False)  # it stays too large until it changes
                self._skip(Skipped(vm, path, trigger, f"skipped: {refused}"), "skipped_size")
                return None
            return self._copy(vm, path, fd, trigger, deadline, limits.sync_bytes if waiting else limits.max_file)
        except ContentTooLarge as e:  # it grew since the fstat above
            reason = self._refusal(e.size or 0, waiting) or str(e)
            self._skip(Skipped(vm, path, trigger, f"skipped: {reason}"), "skipped_size")
        except OutOfTime:
            budget = "the budget before an answer" if waiting else "the budget of one version"
            self._skip(Skipped(vm, path, trigger, f"skipped: not copied in {seconds:g} s, {budget}"), "skipped_time")
        except NoRoom as e:
            self._skip(Skipped(vm, path, trigger, f"skipped: {e.strerror}"), "skipped_space")
        except UnstableContent:
            log.warning("backup: %s in VM %s kept changing while read; no version saved", path, vm)
            self._count("torn")
        except (OSError, sqlite3.Error):
            log.exception("backup: cannot save %s of VM %s", path, vm)
            self._count("failed")
        return None

    def _refusal(self, size: int, waiting: bool) -> str | None:
        """Why a file of ``size`` bytes is not saved, if a bound says so."""
        limits = self.limits
        if size > limits.max_file:
            return f"{format_size(size)} > backup-max-file {format_size(limits.max_file)}"
        if waiting and size > limits.sync_bytes:
            return f"{format_size(size)} > {format_size(limits.sync_bytes)}, the most copied before an answer"
        return None

    def _skip(self, skipped: Skipped, counter: str) -> None:
        log.warning("backup: %s of VM %s (%s): %s", skipped.path, skipped.vm, skipped.trigger, skipped.reason)
        self._count(counter)
        if self._report is not None:
            self._report(skipped)

    def _copy(self, vm: str, path: str, fd: int, trigger: str, deadline: float, max_size: int) -> Version | None:
        read = read_stable(fd, self.store.writer, attempts=self._attempts, deadline=deadline, max_size=max_size)
        writer, st = read
        # One index transaction for the version (index.py): the blob's admission, the
        # path's state, the row. A close and a truncating open may save the same content
        # at once: _recording makes them one after the other.
        with self._recording, self.index.transaction():
            try:
                blob = writer.commit()
            except BaseException:
                writer.discard()
                raise
            if blob.new:
                self._count("new_blobs")  # whether or not this copy is the one recorded
            self._remember(vm, path, Fingerprint.of(st), saved=True)
            # The content was there from its last change on: a tree restored as of a time
            # between that change and this copy must have it.
            since = min(self._clock(), st.st_ctime_ns / 1e9)
            then = self.index.state_at(vm, path, since)
            if then is not None and then.hash == blob.digest:
                self._count("unchanged")  # closed without a change, or saved already
                return None
            self.space.take(0)  # a row too takes room: none past the bound
            mode = stat.S_IMODE(st.st_mode)
            return self._record(vm, path, blob.digest, blob.size, mode, st.st_mtime_ns, trigger, at=since)

    def _record(
        self,
        vm: str,
        path: str,
        digest: str,
        size: int,
        mode: int,
        mtime_ns: int,
        trigger: str = "rename",
        *,
        at: float | None = None,
    ) -> Version:
        version = self.index.add(
            vm,
            path,
            time=self._clock() if at is None else at,
            size=size,
            hash=digest,
            trigger=trigger,
            mode=mode,
            mtime_ns=mtime_ns,
        )
        self._count("saved")
        return version

    def _remember(self, vm: str, path: str, fingerprint: Fingerprint, *, saved: bool) -> None:
        with self._lock:
            self._known.pop((vm, path), None)
            self._known[vm, path] = (fingerprint, saved)
            if len(self._known) > _KNOWN_LIMIT:
                del self._known[next(iter(self._known))]  # the least recently saved
