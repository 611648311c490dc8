"""The content-addressed blob store: each distinct content once, named by its SHA-256.

Layout under the store's root::

    blobs/ab/abcdef…    one file per content (hex SHA-256), sharded by its first byte
    tmp/                 contents being written; renamed into blobs/ when complete

A blob appears whole or not at all: it is written to tmp/, fsynced, and renamed into
place, so a crash leaves at most a stray temporary file (removed by collect_garbage).
Identical contents from any file of any VM share one blob. Writers never lock: two
writers of the same content rename identical files over each other. This holds for
managers on several hosts sharing the store (on JuiceFS, NFS…) too: the temporary names
are random, and rename is atomic on those file systems; the index is what they lock.

Blobs keep the holes of the files they copy (see hvfs.services.snapshot), and their names
hash the content as it reads, holes as zeros: a sparse file and its dense twin are one
content and share one blob, which keeps the layout of whichever was stored first. A
restore writes the blob's holes as holes.

Bounds: a store opened by the backup service has a Space (hvfs.services.space) from
which every byte written to tmp/ is taken, and the index's accounting of blobs
(index.py), through which a new blob is admitted, in a transaction, only if the store's
bound still holds; otherwise the writer raises space.NoRoom and leaves nothing.

Garbage collection deletes blobs no index row references. A writer commits its blob
before inserting the row that references it; so that a collection running in between
(``hvfs backup prune`` in another process) cannot delete it, a commit refreshes the
blob's mtime and the collection spares blobs younger than its grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from hvfs.services.backup.index import BackupIndex
from hvfs.services.snapshot import FileSink, copy_sparse
from hvfs.services.space import Space

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
        super().__init__(os.path.join(store.root, "tmp", secrets.token_hex(8)), space=store.space)

    def commit(self) -> Blob:
        """Make the blob durable and visible under its hash; the temp file is gone after.
        Raises space.NoRoom when the store may not take a new blob (the caller discards)."""
        digest = self.finish(durable=False)  # content the store has already needs no fsync
        final = self._store.path(digest)
        os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)
        if os.path.exists(final):
            try:
                os.utime(final)  # young again: spared by a collection's grace period
                os.unlink(self.path)
                self.release()
                return Blob(digest, self.size, new=False)
            except FileNotFoundError:
                pass  # a collection deleted it just now: ours takes its place
        self._store.admit(digest, self.allocated, writing=self.taken)
        _fsync(self.path, os.O_RDONLY)
        os.rename(self.path, final)
        self.release()  # now in the store's accounting
        _fsync_directory(os.path.dirname(final))
        return Blob(digest, self.size, new=True)


class BlobStore:
    """Blobs under ``root`` (created, mode 0700: backups hold the VMs' data). Unbounded
    until bound() gives it a Space and the index that accounts for it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.space: Space | None = None
        self._accounts: BackupIndex | None = None
        for sub in ("blobs", "tmp"):
            os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)

    def bound(self, space: Space, accounts: BackupIndex) -> None:
        self.space, self._accounts = space, accounts

    def admit(self, digest: str, allocated: int, *, writing: int) -> None:
        """Account a new blob taking ``allocated`` bytes, of which the writer has taken
        ``writing`` from the space. Raises space.NoRoom past the store's bound."""
        space, accounts = self.space, self._accounts
        if space is None or accounts is None:
            return
        index_bytes = accounts.file_bytes()
        accounts.admit_blob(
            digest, allocated, lambda blobs: space.admit(blobs + index_bytes, allocated, writing=writing)
        )

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
        """Write the blob into the empty file ``fd``, holes as holes, checking the hash on
        the way; returns the size. Raises FileNotFoundError, CorruptBlob (after writing),
        OSError."""
        source = os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC)
        try:
            check, size = copy_sparse(source, fd)
        finally:
            os.close(source)
        if check != digest:
            raise CorruptBlob(f"blob {digest} does not match its hash")
        return size

    def sizes(self) -> Iterator[tuple[str, int]]:
        """Each blob's digest and the bytes it takes on disk."""
        for digest in self.digests():
            with contextlib.suppress(FileNotFoundError):
                yield digest, os.stat(self.path(digest)).st_blocks * 512

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
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# File systems other hosts may mount too, as /proc/self/mountinfo names them ("fuse.*"
# covers JuiceFS, sshfs, s3fs…).
_SHARED_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "ceph", "9p", "afs", "gfs2", "ocfs2", "lustre", "glusterfs"})


def on_shared_filesystem(directory: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether ``directory`` is on a file system that other hosts may mount too (FUSE,
    NFS, CIFS, Ceph…): the type of the mount whose device it is on. Raises OSError."""
    st = os.stat(directory)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    with open(mountinfo) as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            if fields.split()[2] == device:
                kind = rest.split()[0]
                return kind == "fuse" or kind.startswith("fuse.") or kind in _SHARED_TYPES
    return False


def open_store(directory: str, *, shared: bool = False) -> tuple[BlobStore, BackupIndex]:
    """The blob store and the index (``index.sqlite``) of the backup store in ``directory``,
    created if new, its blobs accounted (index.py). ``shared``: managers on several hosts
    use it (index.py), as they are assumed to when it is on a network or FUSE file system.
    Raises OSError and sqlite3.Error."""
    store = BlobStore(directory)
    shared = shared or on_shared_filesystem(directory)
    index = BackupIndex(os.path.join(directory, "index.sqlite"), shared=shared)
    index.account_blobs(store.sizes)
    return store, index
