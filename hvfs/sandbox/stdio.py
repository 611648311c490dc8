"""A VM's stdio: pipes, never a host file.

An fd a VM inherits is a way out of its mounts: a host file given as stdin could be
reopened for writing through /proc/self/fd/0, or chmodded and chowned through the fd
(measured). So, as ``docker run`` does, the VM gets pipes, and threads of hvfs copy
between them and the user's own stdio. An anonymous pipe or a socket is passed as it is:
it names no file, and changing its mode changes nothing outside. A terminal is a device
of the host's, so it is relayed too (``-t`` gives the VM a terminal of its own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading

from hvfs._sys.files import fstatfs

PIPEFS_MAGIC = 0x50495045
SOCKFS_MAGIC = 0x534F434B
CHUNK = 65536


def shareable(fd: int) -> bool:
    """Whether ``fd`` may be handed to a VM as it is: an anonymous pipe or a socket."""
    try:
        kind = struct.unpack_from("=q", fstatfs(fd))[0]
    except OSError:
        return False
    return kind in (PIPEFS_MAGIC, SOCKFS_MAGIC)


def _same_file(a: int, b: int) -> bool:
    try:
        first, second = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def empty_input() -> int:
    """The read end of a pipe whose writer has gone: a stdin that is at its end."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.close(write_end)
    return read_end


def _copy(source: int, sink: int, on_end: int) -> None:
    """Copy until the end of ``source`` or a failed write; then close ``on_end``, so that
    the VM sees the end of its input, or EPIPE on output nobody reads any more."""
    try:
        while data := os.read(source, CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(sink, view) :]
    except OSError as e:
        if e.errno not in (errno.EPIPE, errno.EIO, errno.EBADF, errno.EISDIR, errno.EINVAL):
            raise
    finally:
        with contextlib.suppress(OSError):
            os.close(on_end)


class Stdio:
    """The three fds to give a VM in place of ``fds`` (the user's), relaying where needed."""

    def __init__(self, fds: tuple[int, int, int] = (0, 1, 2), *, input: bool = True) -> None:
        self._vm_ends: list[int] = []
        self._outputs: list[threading.Thread] = []
        given: list[int] = []
        for number, fd in enumerate(fds):
            if number == 2 and _same_file(fds[1], fd) and not shareable(fd):
                given.append(given[1])  # one pipe for both keeps their lines in the order written
            elif number == 0 and not input:
                given.append(self._keep(empty_input()))
            elif shareable(fd):
                given.append(fd)
            elif number == 0:
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                self._start(fd, write_end, write_end, output=False)
                given.append(self._keep(read_end))
            else:
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                self._start(read_end, fd, read_end, output=True)
                given.append(self._keep(write_end))
        self.fds = (given[0], given[1], given[2])

    def _keep(self, fd: int) -> int:
        self._vm_ends.append(fd)
        return fd

    def _start(self, source: int, sink: int, on_end: int, *, output: bool) -> None:
        thread = threading.Thread(target=_copy, args=(source, sink, on_end), name="hvfs-stdio", daemon=True)
        thread.start()
        if output:
            self._outputs.append(thread)

    def handed_over(self) -> None:
        """Close this process's copies of the VM's ends, once the VM holds its own: its
        output then ends when the VM's last process does."""
        for fd in self._vm_ends:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._vm_ends.clear()

    def finish(self, timeout: float = 5.0) -> None:
        """Wait until everything the VM wrote has been passed on."""
        self.handed_over()
        for thread in self._outputs:
            thread.join(timeout)
