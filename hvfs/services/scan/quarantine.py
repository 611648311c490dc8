"""The quarantine: infected files taken out of VMs, with what is needed to put them back.

Layout under the quarantine's root (mode 0700)::

    ID/content       the file's bytes, mode 0600 (never executable here)
    ID/record.json   original VM, path, mode, owner, times, SHA-256, detection

An entry is built in a temporary directory and renamed to its ID, so it appears whole
or not at all; the original is removed only after that (``move_in``).

One verdict, one entry: a file that cannot be removed after it was copied (a read-only
mount) is refused again on every open, and each refusal quarantines it again; those
find the entry already made, by the file's fingerprint without reading it, or else
(another manager, a touched file) by VM, path and SHA-256 after reading it, and add
nothing. Bounds, as the backup store's (hvfs.services.space): a file larger than
``max_entry`` is not copied, the entries take at most ``max_store`` and never bring
their file system under its margin of free space; past one, ``add`` raises space.NoRoom
(an OSError, ENOSPC) and the file stays where it is, refused all the same. Copies keep
holes as holes.

Integration: on a detection, the scan hook copies the very file it judged in with
``add(vm, path, fd, detection)``, then takes it away with ``remove(dir_fd, name, stat)``
given an fd on the file's parent directory in the VM's writable view and the last
component, acting as the manager itself (not as the caller, who may not be allowed to
delete the file); ``move_in`` does both from a name. To restore into a running VM,
``restore_into(id, dir_fd, name)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass

from hvfs.services.scan.engines import Detection
from hvfs.services.snapshot import ContentTooLarge, FileSink, Fingerprint, copy_sparse, read_stable
from hvfs.services.space import NoRoom, Space
from hvfs.services.units import format_size

_RECORD, _CONTENT = "record.json", "content"
_REMEMBERED = 4096  # fingerprints of entries whose original stayed; bounded memory


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
    """Entries under ``root`` (created), bounded as the module's docstring says
    (``max_store`` None: by the margin of free space only). Thread-safe."""

    def __init__(
        self, root: str, *, max_entry: int = 1 << 30, max_store: int | None = None, margin: int | None = None
    ) -> None:
        self.root = root
        self.max_entry = max_entry
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.space = Space(root, name="quarantine-max-store", limit=max_store, used=self._used, margin=margin)
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, Fingerprint], str] = {}  # (vm, file) -> its entry

    def _used(self) -> int:
        """What the entries take; those being made count as taken from the space instead."""
        total = 0
        for entry in os.listdir(self.root):
            if entry.startswith("."):
                continue
            for directory, _, names in os.walk(os.path.join(self.root, entry)):
                for name in names:
                    with contextlib.suppress(FileNotFoundError):
                        total += os.stat(os.path.join(directory, name)).st_blocks * 512
        return total

    def add(self, vm: str, path: str, fd: int, detection: Detection) -> QuarantineRecord:
        """Copy the content of ``fd`` (read consistently) and its metadata into a new entry,
        or return the entry that holds it already (see the module's docstring). The
        original is left alone. Raises OSError (NoRoom past a bound), UnstableContent."""
        st = os.fstat(fd)
        key = (vm, Fingerprint.of(st))
        with self._lock:
            known = self._entries.get(key)
        if known is not None:
            with contextlib.suppress(QuarantineError):
                return self.record(known)  # not deleted or restored since
        if st.st_size > self.max_entry:
            raise self._too_large(st.st_size)
        entry_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        staging = os.path.join(self.root, f".tmp-{entry_id}")
        os.mkdir(staging, 0o700)
        sink: FileSink | None = None
        try:
            try:
                sink, st = read_stable(
                    fd, lambda: FileSink(os.path.join(staging, _CONTENT), space=self.space), max_size=self.max_entry
                )
            except ContentTooLarge as e:  # it grew since the fstat above
                raise self._too_large(e.size or 0) from None
            digest = sink.finish()
            same = self._find(vm, path, digest)
            if same is not None:
                shutil.rmtree(staging)
                sink.release()
                self._remember(key, same.id)
                return same
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
            sink.release()  # counted by _used from now on
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if sink is not None:
                sink.release()
            raise
        self._remember(key, entry_id)
        return record

    def _too_large(self, size: int) -> NoRoom:
        return NoRoom(f"{format_size(size)} > the quarantine's largest entry {format_size(self.max_entry)}")

    def _find(self, vm: str, path: str, digest: str) -> QuarantineRecord | None:
        """The entry of that content from that VM path, if there is one."""
        for record in self.records():
            if (record.vm, record.path, record.sha256) == (vm, path, digest):
                return record
        return None

    def _remember(self, key: tuple[str, Fingerprint], entry_id: str) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = entry_id
            if len(self._entries) > _REMEMBERED:
                del self._entries[next(iter(self._entries))]

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
        source = os.open(os.path.join(self.root, entry_id, _CONTENT), os.O_RDONLY | os.O_CLOEXEC)
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                if copy_sparse(source, fd)[0] != record.sha256:
                    raise QuarantineError(
                        f"the quarantined content no longer has its SHA-256 {record.sha256}: not restored"
                    )
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
        finally:
            os.close(source)
        shutil.rmtree(os.path.join(self.root, entry_id))
        return record

    def delete(self, entry_id: str) -> None:
        """Forget an entry and its content for good. Raises QuarantineError."""
        self.record(entry_id)
        shutil.rmtree(os.path.join(self.root, entry_id))
