"""A notifying thread's credentials, from ``/proc/TID/status``, read once per request.

Credentials and the umask can change between any two calls of a thread (setfsuid, a
capability drop, another thread's umask), so nothing read is kept: every request reads
the file again. What is kept is the open file (``KeptFds``), because opening a procfs
file costs more than reading it, and ``pread`` at offset 0 makes procfs generate the
whole file afresh.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from hvfs import api
from hvfs._native import hotpath
from hvfs.intercept.decoders.tracee import Identity
from hvfs.intercept.kept import KeptFds

if TYPE_CHECKING:  # the messages load with a first request (hvfs.api)
    from hvfs.api import Credentials

T = TypeVar("T")

_FIRST_READ = 4096  # status is about 1.4 KiB; a long Groups line may need more


class StatusFiles:
    """``/proc/TID/status`` of the threads one worker served lately, kept open. Not
    thread-safe: one per worker thread."""

    def __init__(self) -> None:
        self._kept = KeptFds()

    def read(self, tid: int) -> bytes:
        """The status file of ``tid`` as it is now. ``ProcessLookupError`` or
        ``FileNotFoundError`` when no thread has that number."""
        return self._through(tid, _read_whole)

    def credentials(self, tid: int) -> Credentials:
        """The credentials of ``tid`` now (``parse_credentials``), errors as ``read``."""
        if hotpath is not None:  # the lines read and cut in C, in one call
            return _credentials(self._through(tid, hotpath.credential_lines))
        return parse_credentials(self.read(tid))

    def _through(self, tid: int, reader: Callable[[int], T]) -> T:
        fd = self._kept.get(tid)
        if fd is not None:
            try:
                return reader(fd)
            except ProcessLookupError:  # that thread is gone; the number may be another's now
                self._kept.drop(tid)
        fd = os.open(f"/proc/{tid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            got = reader(fd)
        except BaseException:
            os.close(fd)
            raise
        self._kept.keep(tid, fd)
        return got

    def close(self) -> None:
        self._kept.close()


def _read_whole(fd: int) -> bytes:
    text = os.pread(fd, _FIRST_READ, 0)
    if len(text) < _FIRST_READ:
        return text
    # Reads after the first continue from the text procfs generated for it (seq_file keeps
    # it while the position follows on), so the parts are one consistent snapshot.
    parts = [text]
    offset = len(text)
    while more := os.pread(fd, 65536, offset):
        parts.append(more)
        offset += len(more)
    return b"".join(parts)


def parse_credentials(text: bytes) -> Credentials:
    """Credentials from the text of ``/proc/TID/status``: fsuid and fsgid (the fourth ids
    of the Uid and Gid lines), real ids, groups, umask (0022 on kernels before 4.7, which
    do not show it) and the effective capabilities."""
    # Only the Name line could hold arbitrary text, and procfs escapes newlines in it, so
    # "\nKey:" always starts a real line.
    find = text.find
    values: list[bytes | None] = []
    for key in _KEYS:
        start = find(key)
        if start < 0:
            values.append(None)
            continue
        start += len(key)
        end = find(b"\n", start)
        values.append(text[start:end] if end >= 0 else text[start:])
    return _credentials(tuple(values))


_KEYS = (b"\nUid:", b"\nGid:", b"\nGroups:", b"\nUmask:", b"\nCapEff:")


@functools.lru_cache(maxsize=256)
def _credentials(fields: tuple[bytes | None, ...]) -> Credentials:
    """Credentials from the raw values of the lines ``_KEYS``. Memoized: a pure function
    of exactly these bytes, and most requests come from a few identities."""
    uid_line, gid_line, groups, umask, capabilities = fields
    if uid_line is None or gid_line is None or capabilities is None:
        raise ValueError("/proc/PID/status lacks a Uid, Gid or CapEff line")
    uids, gids = uid_line.split(), gid_line.split()
    return api.Credentials(
        uid=int(uids[3]),
        gid=int(gids[3]),
        groups=tuple(map(int, groups.split())) if groups else (),
        umask=int(umask, 8) if umask else 0o022,
        capabilities=int(capabilities, 16),
        real_uid=int(uids[0]),
        real_gid=int(gids[0]),
    )


def _line(text: bytes, key: bytes) -> bytes:
    start = text.find(key)
    if start < 0:
        raise ValueError(f"/proc/PID/status lacks a {key.strip().decode()} line")
    start += len(key)
    end = text.find(b"\n", start)
    return text[start:end] if end >= 0 else text[start:]


def parse_identity(text: bytes) -> Identity:
    """Who a thread is, from the text of ``/proc/TID/status``: its thread group in the
    manager's pid namespace and in its own, its real, effective and saved ids as the
    manager sees them, and its effective capabilities."""
    uids, gids = _line(text, b"\nUid:").split(), _line(text, b"\nGid:").split()
    nstgid = _line(text, b"\nNStgid:").split()
    return Identity(
        tgid=int(_line(text, b"\nTgid:")),
        own_tgid=int(nstgid[-1]),
        uids=(int(uids[0]), int(uids[1]), int(uids[2])),
        gids=(int(gids[0]), int(gids[1]), int(gids[2])),
        capabilities=int(_line(text, b"\nCapEff:"), 16),
    )


def signal_pending(text: bytes) -> bool:
    """Whether the thread has a signal pending that it does not block (one that would end
    a blocking call: ignored signals are never queued)."""
    pending = int(_line(text, b"\nSigPnd:"), 16) | int(_line(text, b"\nShdPnd:"), 16)
    return bool(pending & ~int(_line(text, b"\nSigBlk:"), 16))
