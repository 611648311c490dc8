"""The quarantine: infected files taken out of VMs, with what is needed to put them back.

Layout under the quarantine's root (mode 0700)::

    ID/content       the file's bytes, mode 0600 (never executable here)
    ID/record.json   original VM, path, mode, owner, times, SHA-256, detection

An entry is built in a temporary directory and renamed to its ID, so it appears whole
or not at all; the original is removed only after that (``move_in``).

Integration: on a detection, the scan hook copies the very file it judged in with
``add(vm, path, fd, detection)``, then takes it away with ``remove(dir_fd, name, stat)``
given an fd on the file's parent directory in the VM's writable view and the last
component, acting as the manager itself (not as the caller, who may not be allowed to
delete the file); ``move_in`` does both from a name. To restore into a running VM,
``restore_into(id, dir_fd, name)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from typing import BinaryIO

from hvfs.services.scan.engines import Detection
from hvfs.services.snapshot import FileSink, read_stable

_RECORD, _CONTENT = "record.json", "content"


class QuarantineError(Exception):
    """No such entry, or it cannot be put back where asked; the message says what to do."""


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    id: str
    time: float  # when it was quarantined
    vm: str
    path: str
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    size: int
    sha256: str
    engine: str
    signature: str


class Quarantine:
    """Entries under ``root`` (created). Thread-safe: entries never share files."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, mode=0o700, exist_ok=True)

    def add(self, vm: str, path: str, fd: int, detection: Detection) -> QuarantineRecord:
        """Copy the content of ``fd`` (read consistently) and its metadata into a new entry.
        The original is left alone. Raises OSError, snapshot.UnstableContent."""
        entry_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        staging = os.path.join(self.root, f".tmp-{entry_id}")
        os.mkdir(staging, 0o700)
        try:
            sink, st = read_stable(fd, lambda: FileSink(os.path.join(staging, _CONTENT)))
            digest = sink.finish()
            record = QuarantineRecord(
                id=entry_id,
                time=time.time(),
                vm=vm,
                path=path,
                mode=st.st_mode & 0o7777,
                uid=st.st_uid,
                gid=st.st_gid,
                atime_ns=st.st_atime_ns,
                mtime_ns=st.st_mtime_ns,
                size=st.st_size,
                sha256=digest,
                engine=detection.engine,
                signature=detection.signature,
            )
            with open(os.path.join(staging, _RECORD), "w", encoding="utf-8") as f:
                json.dump(asdict(record), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.rename(staging, os.path.join(self.root, entry_id))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return record

    def move_in(self, vm: str, path: str, dir_fd: int, name: str, detection: Detection) -> QuarantineRecord:
        """Quarantine the file ``name`` in ``dir_fd`` (never following a symlink), then unlink
        it if that name still is the same file. Raises OSError, UnstableContent."""
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        try:
            record = self.add(vm, path, fd, detection)
            quarantined = os.fstat(fd)
        finally:
            os.close(fd)
        self.remove(dir_fd, name, quarantined)
        return record

    @staticmethod
    def remove(dir_fd: int, name: str, quarantined: os.stat_result) -> bool:
        """Unlink ``name`` in ``dir_fd`` if it names the quarantined file (its device and
        inode); False when another file took the name meanwhile, or none has it. Raises
        OSError when it cannot be removed (a read-only mount): the entry stays all the same."""
        try:
            now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if (now.st_dev, now.st_ino) != (quarantined.st_dev, quarantined.st_ino):
            return False  # another file took the name meanwhile: leave that one
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        return True

    def records(self) -> list[QuarantineRecord]:
        """Every entry, oldest first."""
        entries = sorted(e for e in os.listdir(self.root) if not e.startswith("."))
        return [self.record(e) for e in entries]

    def record(self, entry_id: str) -> QuarantineRecord:
        """Raises QuarantineError when there is no such entry."""
        if "/" in entry_id or entry_id.startswith("."):
            raise QuarantineError(f"no quarantine entry {entry_id!r}")
        try:
            with open(os.path.join(self.root, entry_id, _RECORD), encoding="utf-8") as f:
                return QuarantineRecord(**json.load(f))
        except FileNotFoundError:
            raise QuarantineError(f"no quarantine entry {entry_id!r}; 'hvfs quarantine list' shows them") from None

    def restore(self, entry_id: str, *, to: str | None = None) -> str:
        """Put the file back at ``to``, or at its original path read as a host path, and
        remove the entry; returns the path. Refuses to replace an existing file
        (QuarantineError). Raises OSError."""
        target = os.path.abspath(to or self.record(entry_id).path)
        dir_fd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.restore_into(entry_id, dir_fd, os.path.basename(target))
        finally:
            os.close(dir_fd)
        return target

    def restore_into(self, entry_id: str, dir_fd: int, name: str) -> QuarantineRecord:
        """Put the file back as ``name`` in ``dir_fd`` with its mode, owner (when allowed)
        and times, then remove the entry. Raises QuarantineError when ``name`` exists."""
        record = self.record(entry_id)
        temporary = f".{name}.unquarantine-{secrets.token_hex(4)}"
        with open(os.path.join(self.root, entry_id, _CONTENT), "rb") as source:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                _copy_checked(source, fd, record.sha256)
                with contextlib.suppress(PermissionError):  # not root: the file stays ours
                    os.fchown(fd, record.uid, record.gid)
                os.fchmod(fd, record.mode)
                os.utime(fd, ns=(record.atime_ns, record.mtime_ns))
                os.fsync(fd)
                # link, unlike rename, fails rather than replace a file that took the name
                os.link(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except FileExistsError:
                raise QuarantineError(f"{name} exists: restore elsewhere with --to PATH") from None
            finally:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=dir_fd)
        shutil.rmtree(os.path.join(self.root, entry_id))
        return record

    def delete(self, entry_id: str) -> None:
        """Forget an entry and its content for good. Raises QuarantineError."""
        self.record(entry_id)
        shutil.rmtree(os.path.join(self.root, entry_id))


def _copy_checked(source: BinaryIO, fd: int, sha256: str) -> None:
    check = hashlib.sha256()
    while chunk := source.read(1 << 20):
        check.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    if check.hexdigest() != sha256:
        raise QuarantineError(f"the quarantined content no longer has its SHA-256 {sha256}: not restored")
