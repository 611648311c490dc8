"""The content-addressed blob store: each distinct content once, named by its SHA-256.

Layout under the store's root::

    blobs/ab/abcdef…    one file per content (hex SHA-256), sharded by its first byte
    tmp/                 contents being written; renamed into blobs/ when complete

A blob appears whole or not at all: it is written to tmp/, fsynced, and renamed into
place, so a crash leaves at most a stray temporary file (removed by collect_garbage).
Identical contents from any file of any VM share one blob. Writers never lock: two
writers of the same content rename identical files over each other.

Garbage collection deletes blobs no index row references. A writer commits its blob
before inserting the row that references it; so that a collection running in between
(``hvfs backup prune`` in another process) cannot delete it, a commit refreshes the
blob's mtime and the collection spares blobs younger than its grace period.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from hvfs.services.backup.index import BackupIndex
from hvfs.services.snapshot import FileSink

_HEX = frozenset("0123456789abcdef")


class CorruptBlob(Exception):
    """A blob's content no longer has its name's hash (disk corruption, or a hand edit)."""


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int
    new: bool  # False when the store already had this content


@dataclass(frozen=True, slots=True)
class Collected:
    blobs: int
    bytes: int


class BlobWriter(FileSink):
    """Implements Sink into a temporary file of the store; commit() files it as a blob."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        super().__init__(os.path.join(store.root, "tmp", secrets.token_hex(8)))

    def commit(self) -> Blob:
        """Make the blob durable and visible under its hash; the temp file is gone after."""
        digest = self.finish()
        final = self._store.path(digest)
        os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)
        if os.path.exists(final):
            try:
                os.utime(final)  # young again: spared by a collection's grace period
                os.unlink(self.path)
                return Blob(digest, self.size, new=False)
            except FileNotFoundError:
                pass  # a collection deleted it just now: ours takes its place
        os.rename(self.path, final)
        _fsync_directory(os.path.dirname(final))
        return Blob(digest, self.size, new=True)


class BlobStore:
    """Blobs under ``root`` (created, mode 0700: backups hold the VMs' data)."""

    def __init__(self, root: str) -> None:
        self.root = root
        for sub in ("blobs", "tmp"):
            os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)

    def path(self, digest: str) -> str:
        if len(digest) != 64 or not _HEX.issuperset(digest):
            raise ValueError(f"not a SHA-256 digest: {digest!r}")
        return os.path.join(self.root, "blobs", digest[:2], digest)

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put(self, data: bytes) -> Blob:
        writer = self.writer()
        try:
            writer.write(data)
            return writer.commit()
        except BaseException:
            writer.discard()
            raise

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def read(self, digest: str) -> bytes:
        """The blob's content, checked against its hash. Raises FileNotFoundError, CorruptBlob."""
        with open(self.path(digest), "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptBlob(f"blob {digest} does not match its hash")
        return data

    def copy_to(self, digest: str, fd: int) -> int:
        """Write the blob to ``fd`` from its current offset, checking the hash on the way;
        returns the size. Raises FileNotFoundError, CorruptBlob (after writing), OSError."""
        check = hashlib.sha256()
        size = 0
        with open(self.path(digest), "rb") as f:
            while chunk := f.read(1 << 20):
                check.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                size += len(chunk)
        if check.hexdigest() != digest:
            raise CorruptBlob(f"blob {digest} does not match its hash")
        return size

    def digests(self) -> Iterator[str]:
        for shard in sorted(os.listdir(os.path.join(self.root, "blobs"))):
            yield from sorted(os.listdir(os.path.join(self.root, "blobs", shard)))

    def collect_garbage(self, referenced: set[str], *, grace: float = 600.0) -> Collected:
        """Delete the blobs not in ``referenced``, and temporary files, older than ``grace``
        seconds (see the module's docstring). Returns what was freed."""
        horizon = time.time() - grace
        blobs = freed = 0
        candidates = [self.path(d) for d in self.digests() if d not in referenced]
        tmp = os.path.join(self.root, "tmp")
        candidates += [os.path.join(tmp, name) for name in os.listdir(tmp)]
        for path in candidates:
            try:
                st = os.stat(path)
                if st.st_mtime >= horizon:
                    continue
                os.unlink(path)
            except FileNotFoundError:
                continue
            blobs += path.startswith(os.path.join(self.root, "blobs"))
            freed += st.st_size
        return Collected(blobs, freed)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_store(directory: str) -> tuple[BlobStore, BackupIndex]:
    """The blob store and the index (``index.sqlite``) of the backup store in ``directory``,
    created if new. Raises OSError and sqlite3.Error."""
    return BlobStore(directory), BackupIndex(os.path.join(directory, "index.sqlite"))
