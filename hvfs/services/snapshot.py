"""Reading a file's content as one version, never a torn mix of two writes.

Backup, scanning and quarantine read files that VMs may be writing at that moment. Two
guards, the first when the kernel grants it:

- **A read lease** (fcntl F_SETLEASE, F_RDLCK). The kernel grants it only when no open
  file anywhere has the file open for writing; a writable shared mapping keeps its file
  open, so it counts too. No write can then be in progress, and while the lease is held
  an open for writing or a truncate blocks until it is released (at most
  /proc/sys/fs/lease-break-time, 45 s by default, after which the kernel revokes it and
  the stat comparison below catches the write). What is read under the lease is one
  version. The lease needs the reader's fsuid to own the file, or CAP_LEASE in the
  initial user namespace: call services with the manager's own credentials, not the
  caller's. A lease break is signalled to its holder, by default with SIGIO, whose
  default action is to terminate: F_SETSIG makes it SIGURG (ignored by default) on the
  fd, which the caller must not use for O_ASYNC.
- **A stat before and after the read**, compared on (device, inode, size, mtime, ctime),
  always, and the only guard when the lease is refused (the file is open for writing
  somewhere: EAGAIN; or not ours: EACCES). Facts it relies on: a write stamps ctime with
  the kernel's coarse clock (one jiffy, 1 to 10 ms), and only when that time differs from
  the stored one, so two writes in one tick leave the same times (kernels since 6.13
  with multigrain timestamps stamp a finer time after a stat, which closes that). Hence
  git's "racy clean" rule: read only once the coarse clock has moved past the file's
  ctime, so that any write after that point stamps a later ctime. And a write stamps the
  times *before* copying its data: a write() that started before our first stat, and is
  still copying when we read, changes nothing we can see. The rule therefore wants the
  ctime older than a margin (10 ms) that such a write is unlikely to outlast; unlikely,
  not impossible (a writer stalled mid-copy), which is why the lease comes first. Writes
  through a shared mmap dirty pages without stamping times; only the lease sees them.

A file written continuously never settles; after a few attempts the read gives up
(UnstableContent) rather than return something torn. The content is read with pread
from offset 0, so the fd's offset is left alone.

Reads are sparse-aware: SEEK_DATA and SEEK_HOLE (on a private reopening of the file, so
that the fd's offset, which a VM may share, never moves) find the holes, which are
never read: a sink gets them as ``skip(length)``, keeps them as holes, and hashes them
as the zeros they read as, so a sparse file and its dense twin have the same SHA-256. A
file system without the two (the kernel's generic answer: all data) is read densely.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from hvfs.services.space import Space

# Linux's clock id from <linux/time.h>; Python's time module does not name it.
_CLOCK_REALTIME_COARSE = 5
_SETTLE_NS = 10_000_000  # how old the ctime must be to read without a lease
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What identifies one version of a file's content: any later write changes one of
    these, provided the stat was taken after the coarse clock passed the file's ctime
    (the racy-clean rule above; on kernels without multigrain timestamps a write in the
    same tick would keep them). read_stable's stats all are. Keys the verdict cache and
    the backup's "unchanged" check."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Fingerprint:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class UnstableContent(Exception):
    """The file kept changing while it was read: no consistent version could be taken."""


class ContentTooLarge(Exception):
    """The content is larger than the reader accepts (a sink's limit, or read_stable's
    ``max_size``: then ``size`` is the file's)."""

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


class OutOfTime(Exception):
    """The read passed its deadline: what it read so far is discarded."""


class Sink(Protocol):
    """Where one attempt's bytes go. A torn attempt is discarded and a new sink made."""

    def write(self, chunk: bytes) -> None:
        """Take the next chunk; may raise ContentTooLarge (or another exception of the
        sink's) to stop reading."""
        ...

    def skip(self, length: int) -> None:
        """Take ``length`` zero bytes that are a hole in the file (at most 1 MiB at once)."""
        ...

    def discard(self) -> None:
        """Throw away what was written (a torn or failed attempt); must not raise."""
        ...


S = TypeVar("S", bound=Sink)


@contextlib.contextmanager
def read_lease(fd: int) -> Iterator[bool]:
    """Hold a read lease on ``fd`` (see the module's docstring) for the ``with`` block,
    yielding True; yield False, holding nothing, when the kernel refuses one."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):  # revoked after lease-break-time: nothing to release
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def settled_fstat(fd: int, *, margin_ns: int = _SETTLE_NS, wait: float = 0.05) -> os.stat_result | None:
    """fstat(fd) once the file's ctime is older than the coarse clock by ``margin_ns``
    (see the module's docstring), waiting up to ``wait`` seconds; None if the file kept
    changing."""
    deadline = time.monotonic() + wait
    while True:
        st = os.fstat(fd)
        if st.st_ctime_ns + margin_ns < time.clock_gettime_ns(_CLOCK_REALTIME_COARSE):
            return st
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def read_stable(
    fd: int,
    make_sink: Callable[[], S],
    *,
    attempts: int = 3,
    deadline: float | None = None,
    max_size: int | None = None,
) -> tuple[S, os.stat_result]:
    """Stream the content of ``fd`` into a sink from ``make_sink`` and return the sink with
    the file's stat, which describes exactly the content the sink received.

    Each attempt takes a read lease if it can (else waits for the file to settle), reads
    the file whole (the size its first stat says, holes skipped), and compares
    fingerprints before and after; a changed file discards the sink and tries again.
    Raises UnstableContent after ``attempts`` failures, OutOfTime once the monotonic
    clock passes ``deadline`` (checked every MiB), ContentTooLarge when the file is
    larger than ``max_size`` as an attempt begins (a size checked before may be stale),
    the sink's own exceptions (after discarding it), and OSError from fstat or pread.
    """
    for _ in range(attempts):
        _check(deadline)
        with read_lease(fd) as leased:
            # Under the lease nothing writes, but the tick must still pass: see Fingerprint.
            before = settled_fstat(fd, margin_ns=0) if leased else settled_fstat(fd)
            if before is None:
                continue
            if max_size is not None and before.st_size > max_size:
                raise ContentTooLarge(f"{before.st_size} bytes, more than {max_size}", before.st_size)
            sink = make_sink()
            try:
                received = _copy(fd, before.st_size, sink, deadline)
                after = os.fstat(fd)
            except BaseException:
                sink.discard()
                raise
        if Fingerprint.of(before) == Fingerprint.of(after) and received == before.st_size:
            return sink, before
        sink.discard()
    raise UnstableContent(f"the file changed during each of {attempts} reads")


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise OutOfTime("the read took longer than its budget")


def _copy(fd: int, size: int, sink: Sink, deadline: float | None) -> int:
    """Give the first ``size`` bytes of ``fd`` to ``sink``; returns how many there were
    (fewer when the file shrank meanwhile)."""
    offset = 0
    for start, length, data in extents(fd, size):
        end = start + length
        while offset < end:
            _check(deadline)
            piece = min(end - offset, _CHUNK)
            if not data:
                sink.skip(piece)
                offset += piece
                continue
            chunk = os.pread(fd, piece, offset)
            if not chunk:
                return offset  # it shrank: the caller's stat comparison sees it
            sink.write(chunk)
            offset += len(chunk)
    return offset


def extents(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """``(offset, length, is_data)`` runs covering the first ``size`` bytes of the regular
    file ``fd``, in order, holes as SEEK_HOLE finds them; all data where the file system
    cannot tell. ``fd``'s offset is left alone (see the module's docstring)."""
    try:
        seekable = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        seekable = -1
    try:
        offset = 0
        while offset < size:
            data = _seek(seekable, offset, os.SEEK_DATA, size) if seekable >= 0 else offset
            if data > offset:
                yield offset, data - offset, False
            if data >= size:
                return
            hole = _seek(seekable, data, os.SEEK_HOLE, size) if seekable >= 0 else size
            yield data, hole - data, True
            offset = hole
    finally:
        if seekable >= 0:
            os.close(seekable)


def _seek(fd: int, offset: int, whence: int, size: int) -> int:
    """lseek SEEK_DATA or SEEK_HOLE, at most ``size``; ENXIO (no data past ``offset``) is ``size``."""
    try:
        return min(os.lseek(fd, offset, whence), size)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return size
        if e.errno == errno.EINVAL:  # the file system knows no holes: the rest is data
            return offset if whence == os.SEEK_DATA else size
        raise


def hash_zeros(check: hashlib._Hash, length: int) -> None:
    """Feed ``length`` zero bytes to ``check``, as a hole reads."""
    while length:
        piece = min(length, _CHUNK)
        check.update(_ZEROS[:piece] if piece < _CHUNK else _ZEROS)
        length -= piece


def copy_sparse(source: int, target: int, *, deadline: float | None = None) -> tuple[str, int]:
    """Copy the regular file ``source`` into the empty file ``target`` with its holes, and
    return the SHA-256 of the content and its size. For restores: nothing guards against
    a writer of ``source`` (see read_stable). Raises OSError, OutOfTime."""
    check = hashlib.sha256()
    size = os.fstat(source).st_size
    for offset, length, data in extents(source, size):
        end = offset + length
        while offset < end:
            _check(deadline)
            piece = min(end - offset, _CHUNK)
            if not data:
                hash_zeros(check, piece)
                offset += piece
                continue
            chunk = os.pread(source, piece, offset)
            if not chunk:
                raise OSError(errno.EIO, "the file shrank while it was copied")
            check.update(chunk)
            _pwrite_all(target, chunk, offset)
            offset += len(chunk)
    os.ftruncate(target, size)  # the holes up to the end
    return check.hexdigest(), size


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class BytesSink:
    """Implements Sink in memory, refusing more than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.limit:
            raise ContentTooLarge(f"larger than {self.limit} bytes")
        self._parts.append(chunk)

    def skip(self, length: int) -> None:
        self.write(bytes(length))

    def discard(self) -> None:
        self._parts.clear()

    def data(self) -> bytes:
        return b"".join(self._parts)


class FileSink:
    """Implements Sink into a new file at ``path`` (created exclusively, mode 0600), with
    the same holes, hashing the content with SHA-256 on the way. Each byte written is
    first taken from ``space`` (which may raise space.NoRoom); the caller gives it back
    with release() once the file is committed where the space counts it, or calls
    discard(), which does."""

    def __init__(self, path: str, *, space: Space | None = None) -> None:
        self.path = path
        self._space = space
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._hash = hashlib.sha256()
        self.size = 0  # of the content, holes included
        self.taken = 0  # bytes taken from space
        self.allocated = 0  # bytes the finished file takes on disk

    def write(self, chunk: bytes) -> None:
        if self._space is not None:
            self._space.take(len(chunk))
            self.taken += len(chunk)
        _pwrite_all(self._fd, chunk, self.size)
        self._hash.update(chunk)
        self.size += len(chunk)

    def skip(self, length: int) -> None:
        hash_zeros(self._hash, length)
        self.size += length

    def finish(self, *, durable: bool = True) -> str:
        """Close the file, made durable unless told not to (a caller that may throw it
        away makes it durable itself when it keeps it), and return the hex SHA-256."""
        os.ftruncate(self._fd, self.size)  # a hole at the end is never written
        if durable:
            os.fsync(self._fd)
        self.allocated = os.fstat(self._fd).st_blocks * 512
        os.close(self._fd)
        self._fd = -1
        return self._hash.hexdigest()

    def release(self) -> None:
        """Give back to the space what was taken from it (idempotent)."""
        if self._space is not None and self.taken:
            self._space.give_back(self.taken)
        self.taken = 0

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.release()
