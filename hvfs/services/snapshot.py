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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

# Linux's clock id from <linux/time.h>; Python's time module does not name it.
_CLOCK_REALTIME_COARSE = 5
_SETTLE_NS = 10_000_000  # how old the ctime must be to read without a lease
_CHUNK = 1 << 20


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
    """The content is larger than the reader accepts (a sink's limit)."""


class Sink(Protocol):
    """Where one attempt's bytes go. A torn attempt is discarded and a new sink made."""

    def write(self, chunk: bytes) -> None:
        """Take the next chunk; may raise ContentTooLarge to stop reading."""
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


def read_stable(fd: int, make_sink: Callable[[], S], *, attempts: int = 3) -> tuple[S, os.stat_result]:
    """Stream the content of ``fd`` into a sink from ``make_sink`` and return the sink with
    the file's stat, which describes exactly the content the sink received.

    Each attempt takes a read lease if it can (else waits for the file to settle), reads
    the file whole, and compares fingerprints before and after; a changed file discards
    the sink and tries again. Raises UnstableContent after ``attempts`` failures,
    ContentTooLarge from the sink (after discarding it), and OSError from fstat or pread.
    """
    for _ in range(attempts):
        with read_lease(fd) as leased:
            # Under the lease nothing writes, but the tick must still pass: see Fingerprint.
            before = settled_fstat(fd, margin_ns=0) if leased else settled_fstat(fd)
            if before is None:
                continue
            sink = make_sink()
            try:
                received = _copy(fd, sink)
                after = os.fstat(fd)
            except BaseException:
                sink.discard()
                raise
        if Fingerprint.of(before) == Fingerprint.of(after) and received == before.st_size:
            return sink, before
        sink.discard()
    raise UnstableContent(f"the file changed during each of {attempts} reads")


def _copy(fd: int, sink: Sink) -> int:
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        sink.write(chunk)
        offset += len(chunk)
    return offset


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

    def discard(self) -> None:
        self._parts.clear()

    def data(self) -> bytes:
        return b"".join(self._parts)


class FileSink:
    """Implements Sink into a new file at ``path`` (created exclusively, mode 0600), hashing
    with SHA-256 on the way. The caller moves the file into place or calls discard()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self._hash.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Make the bytes durable, close the file, and return the hex SHA-256."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        return self._hash.hexdigest()

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
