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

While the service copies a file under a read lease, a VM's open of it for writing waits
for the copy to end (the manager's handler thread blocks in open); the copy never waits
for the manager, so this cannot deadlock. The methods never raise for a backup failure:
a full disk or a file that never stopped changing must not fail the VM's call. They log
it, count it in ``statistics()`` and return None; a saved version is returned.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import posixpath
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hvfs.services.backup.index import BackupIndex, Version
from hvfs.services.backup.store import BlobStore, open_store
from hvfs.services.snapshot import Fingerprint, UnstableContent, read_stable

log = logging.getLogger("hvfs.services")

_KNOWN_LIMIT = 1 << 16  # fingerprints remembered to skip unchanged files; bounded memory


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


class BackupService:
    """Saves versions of the files its rules select. Thread-safe."""

    def __init__(
        self,
        store: BlobStore,
        index: BackupIndex,
        rules: Sequence[BackupRule],
        *,
        attempts: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.index, self.rules = store, index, tuple(rules)
        self._attempts = attempts
        self._clock = clock
        self._lock = threading.Lock()
        self._recording = threading.Lock()
        self._known: dict[tuple[str, str], Fingerprint] = {}  # of the file when its last version was saved
        self._counts = {field.name: 0 for field in dataclasses.fields(BackupStatistics)}

    @classmethod
    def open(cls, directory: str, rules: Sequence[BackupRule]) -> BackupService:
        """The service on the store and index in ``directory`` (created; see open_store)."""
        return cls(*open_store(directory), rules)

    def close(self) -> None:
        self.index.close()

    def matches(self, vm: str, path: str) -> bool:
        return any(rule.matches(vm, path) for rule in self.rules)

    def on_closed_after_write(self, vm: str, path: str, fd: int) -> Version | None:
        return self._save(vm, path, fd, "close")

    def before_remove(self, vm: str, path: str, fd: int, *, replaced: bool = False) -> Version | None:
        return self._save(vm, path, fd, "replace" if replaced else "remove")

    def on_renamed(self, vm: str, old: str, new: str, fd: int) -> Version | None:
        self.after_remove(vm, old)
        return self._save(vm, new, fd, "rename")

    def on_directory_renamed(self, vm: str, old: str, new: str) -> list[Version]:
        """Record the files known under directory ``old`` at directory ``new``, as they
        last were; returns the versions recorded at ``new``."""
        old, new = posixpath.normpath(old), posixpath.normpath(new)
        moved = []
        try:
            for version in self.index.tree_at(vm, old, self._clock()):
                self.after_remove(vm, version.path)
                path = new + version.path[len(old) :]
                if self.matches(vm, path) and version.hash is not None:
                    moved.append(self._record(vm, path, version.hash, version.size, version.mode, version.mtime_ns))
        except sqlite3.Error:
            log.exception("backup: cannot record the rename of %s to %s in VM %s", old, new, vm)
            self._count("failed")
        return moved

    def after_remove(self, vm: str, path: str) -> Version | None:
        """Record that ``path`` is gone, if it has versions and was not already gone."""
        path = posixpath.normpath(path)
        if not self.matches(vm, path):
            return None
        with self._lock:
            self._known.pop((vm, path), None)
        try:
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

    def _save(self, vm: str, path: str, fd: int, trigger: str) -> Version | None:
        path = posixpath.normpath(path)
        if not self.matches(vm, path):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None  # directories, devices, sockets: nothing to keep
            with self._lock:
                known = self._known.get((vm, path))
            if known == Fingerprint.of(st):
                self._count("unchanged")
                return None
            return self._copy(vm, path, fd, trigger)
        except UnstableContent:
            log.warning("backup: %s in VM %s kept changing while read; no version saved", path, vm)
            self._count("torn")
        except (OSError, sqlite3.Error):
            log.exception("backup: cannot save %s of VM %s", path, vm)
            self._count("failed")
        return None

    def _copy(self, vm: str, path: str, fd: int, trigger: str) -> Version | None:
        writer, st = read_stable(fd, self.store.writer, attempts=self._attempts)
        try:
            blob = writer.commit()
        except BaseException:
            writer.discard()
            raise
        if blob.new:
            self._count("new_blobs")  # whether or not this copy is the one recorded
        self._remember(vm, path, Fingerprint.of(st))
        # The content was there from its last change on: a tree restored as of a time
        # between that change and this copy must have it.
        since = min(self._clock(), st.st_ctime_ns / 1e9)
        with self._recording:  # a close and a truncating open may save the same content at once
            then = self.index.state_at(vm, path, since)
            if then is not None and then.hash == blob.digest:
                self._count("unchanged")  # closed without a change, or saved already
                return None
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

    def _remember(self, vm: str, path: str, fingerprint: Fingerprint) -> None:
        with self._lock:
            self._known.pop((vm, path), None)
            self._known[vm, path] = fingerprint
            if len(self._known) > _KNOWN_LIMIT:
                del self._known[next(iter(self._known))]  # the least recently saved
