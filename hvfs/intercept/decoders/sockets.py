"""bind() and connect(), and the socket addresses every socket call reads
(``hvfs.manager.handlers.sockets``).

Everything the kernel would read from the caller's memory is read here once, with the
kernel's own checks in the kernel's order (so that a bad length or pointer gets the
native errno), and the manager then performs the call with these bytes on the socket
duplicated from the caller. Nothing is ever let through to be read again: neither the
address (another thread may rewrite it) nor the fd (another thread may ``dup2`` a unix
socket over it between the check and the kernel's own lookup).
"""

from __future__ import annotations

import errno
import os
import stat

from hvfs import api
from hvfs._sys.abi import AF_UNIX, AT_FDCWD, SA_FAMILY, SOCKADDR_STORAGE_SIZE, SOCKADDR_UN_SIZE
from hvfs.intercept.decoders.context import Args, Context, Decoded, decodes, signed32
from hvfs.intercept.decoders.tracee import CallError


def socket(c: Context, fd: int) -> api.OpenFile:
    """The caller's socket: EBADF (an O_PATH fd too), or ENOTSOCK for any other file."""
    file = c.open_file(fd)
    if not stat.S_ISSOCK(os.fstat(file.fd).st_mode):
        raise CallError(errno.ENOTSOCK)
    return file


def address(c: Context, at: int, length: int) -> api.SocketAddress:
    """The sockaddr at ``at`` as the kernel copies it (EINVAL for a bad length, EFAULT),
    with the path it names when it is a unix-socket path (the kernel's own test: family
    AF_UNIX, a length that leaves a sun_path, and a first byte that is not the NUL of an
    abstract name)."""
    if length < 0 or length > SOCKADDR_STORAGE_SIZE:
        raise CallError(errno.EINVAL)
    raw = c.tracee.read(at, length) if length else b""
    if SA_FAMILY.size < length <= SOCKADDR_UN_SIZE and SA_FAMILY.unpack_from(raw)[0] == AF_UNIX and raw[SA_FAMILY.size]:
        name = raw[SA_FAMILY.size :].split(b"\0", 1)[0]
        return api.SocketAddress(raw, c.vm_path(AT_FDCWD, os.fsdecode(name)))
    return api.SocketAddress(raw)


@decodes("Bind")
def bind(c: Context, a: Args) -> Decoded:
    sock = socket(c, a[0])
    return api.Bind(caller=c.caller(), socket=sock, address=address(c, a[1], signed32(a[2]))), None


@decodes("Connect")
def connect(c: Context, a: Args) -> Decoded:
    sock = c.open_file(a[0])  # the address is copied before ENOTSOCK
    sockaddr = address(c, a[1], signed32(a[2]))
    if not stat.S_ISSOCK(os.fstat(sock.fd).st_mode):
        raise CallError(errno.ENOTSOCK)
    return api.Connect(caller=c.caller(), socket=sock, address=sockaddr), None
