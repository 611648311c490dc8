"""The mounts below a directory, as this process's mount table lists them: for a client
and its manager to compare (``mounts_below``; hvfs.hypervisor.views; native/client/views.c
lists the same for the front), and for a host directory's source to name (``points_below``)."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterable
from dataclasses import dataclass

# Directories this process mounts file systems of its own in (``own_directory``), as the
# mount table shows them: what is mounted there is no one's view of the host.
_OWN: set[bytes] = set()


def own_directory(path: str) -> None:
    """Note the directory ``path`` as one this process mounts its own file systems in (a
    manager's state directory, where each VM's views are staged; a FUSE client's): what
    lies there is left out of ``mounts_below``, of this process's table and of another's
    list alike (``Below.theirs``)."""
    with contextlib.suppress(NotADirectoryError):
        real = _resolved(path)
        if real is not None:
            _OWN.add(_escaped(real).rstrip(b"/"))


@dataclass(frozen=True)
class Below:
    """The mounts below a directory (``mounts_below``), and this process's own directories
    below it (``own_directory``), each relative to it."""

    mounts: list[str]
    own: tuple[str, ...]

    def theirs(self, listed: Iterable[str]) -> list[str]:
        """``listed`` (another process's ``mounts``) less what lies in this one's own
        directories, so that both are compared alike."""
        return [entry for entry in listed if not _within(entry.split(" ", 1)[0], self.own)]


def mounts_below(path: str) -> Below | None:
    """The mounts strictly below the directory ``path`` in this process's mount table, each
    as "POINT DEVICE ROOT OPTIONS" (POINT relative to ``path``; the fields as
    /proc/self/mountinfo escapes them), in the table's order, but those in this process's
    own directories (none below a file); None when ``path`` cannot be opened or the table
    cannot be read. Mount
    ids are left out: a copy of a mount namespace numbers its mounts anew, and what else
    a line says is the same in both.

    ``path`` is resolved once, by the kernel (an O_PATH open): the directory's own path in
    this namespace, which no symlink changed since, is what is looked for in the table."""
    try:
        real = _resolved(path)
    except NotADirectoryError:
        return Below([], ())  # a file: nothing can be mounted below it
    lines = _TABLE.lines()
    if real is None or lines is None:
        return None
    prefix = _escaped(real).rstrip(b"/") + b"/"
    own = tuple(os.fsdecode(o[len(prefix) :]) for o in _OWN if o.startswith(prefix))
    found = []
    for line in lines:
        fields = line.split(b" ", 6)
        if len(fields) > 5 and fields[4].startswith(prefix) and len(fields[4]) > len(prefix):
            point = os.fsdecode(fields[4][len(prefix) :])
            if not _within(point, own):
                found.append(" ".join((point, *map(os.fsdecode, (fields[2], fields[3], fields[5])))))
    return Below(found, own)


def points_below(path: str) -> tuple[str, ...]:
    """The mount points strictly below the directory ``path`` (its real path) in this
    process's mount table, relative to it and unescaped, each once, sorted: what a recursive
    bind of ``path`` takes along. () when the table cannot be read."""
    lines = _TABLE.lines()
    if lines is None:
        return ()
    # The escapes keep prefixes: a point is below path exactly when its escaped text is
    # below path's escaped text.
    prefix = _escaped(os.fsencode(os.path.realpath(path))).rstrip(b"/") + b"/"
    points = (fields[4] for fields in (line.split(b" ", 5) for line in lines) if len(fields) > 4)
    found = {os.fsdecode(_unescaped(point[len(prefix) :])) for point in points if point.startswith(prefix)}
    return tuple(sorted(found - {""}))  # a point mounted over twice is named once


class _Table:
    """This process's mount table, read again only once the kernel says that it changed
    (poll's POLLPRI on an open /proc/self/mountinfo: a mount or unmount in its namespace
    since it was last polled): a warm manager compares the mounts below a volume on every
    run, and the text of a table takes the kernel some 25 µs to make."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd = -1
        self._poll = select.poll()
        self._lines: list[bytes] | None = None

    def lines(self) -> list[bytes] | None:
        with self._lock:
            try:
                if self._fd < 0:
                    self._fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
                    self._poll.register(self._fd, select.POLLPRI)
                elif self._lines is not None and not self._poll.poll(0):
                    return self._lines
                self._lines = None  # read after the poll: a change meanwhile is polled next time
                os.lseek(self._fd, 0, os.SEEK_SET)
                chunks = []
                while chunk := os.read(self._fd, 65536):
                    chunks.append(chunk)
                self._lines = b"".join(chunks).splitlines()
            except OSError:
                return None
            return self._lines


_TABLE = _Table()


def _resolved(path: str) -> bytes | None:
    """The directory ``path`` as the kernel names it in this namespace (no symlink in it),
    or None; NotADirectoryError for a file."""
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise
    except OSError:
        return None
    try:
        return os.fsencode(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None
    finally:
        os.close(fd)


def _within(point: str, directories: tuple[str, ...]) -> bool:
    return any(point == d or point.startswith(d + "/") for d in directories)


def _escaped(path: bytes) -> bytes:
    """``path`` as /proc/self/mountinfo shows it: the backslash first, so that no escape is
    escaped again."""
    for char, escape in ((b"\\", b"\\134"), (b" ", b"\\040"), (b"\t", b"\\011"), (b"\n", b"\\012")):
        path = path.replace(char, escape)
    return path


def _unescaped(path: bytes) -> bytes:
    """A path as /proc/self/mountinfo shows it, with the kernel's four escapes (a space, tab,
    newline and backslash as \\ooo) undone; the backslash last, so no other is made."""
    for escape, char in ((b"\\040", b" "), (b"\\011", b"\t"), (b"\\012", b"\n"), (b"\\134", b"\\")):
        path = path.replace(escape, char)
    return path
