"""Decoders of the socket calls that take an address: bind, connect, sendto, sendmsg and
sendmmsg.

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
import struct

from hvfs import api
from hvfs.intercept.decode import Args, Context, Decoded, Decoder, Output, Passthrough
from hvfs.intercept.tracee import AT_FDCWD, CallError, signed32

AF_UNIX = 1
SOCKADDR_UN_SIZE = 110  # sun_family and a 108-byte sun_path
SOCKADDR_STORAGE_SIZE = 128  # the most the kernel copies of any address
UIO_MAXIOV = 1024
MAX_RW_COUNT = 0x7FFFF000  # what one call transfers at most (INT_MAX, page-aligned)
SEND_LIMIT = 1 << 20  # bytes the manager copies per send: past it a stream's send is partial
CONTROL_LIMIT = 1 << 20  # more control data than this exceeds any optmem_max: ENOBUFS
SCM_MAX_FD = 253
SOL_SOCKET, SCM_RIGHTS, SCM_CREDENTIALS = 1, 1, 2
CAP_SETGID, CAP_SETUID = 6, 7

_MSGHDR = struct.Struct("<QI4xQQQQi4x")  # struct msghdr on 64-bit Linux
_IOVEC = struct.Struct("<QQ")
_CMSGHDR = struct.Struct("<Qii")  # struct cmsghdr: cmsg_len, cmsg_level, cmsg_type
_UCRED = struct.Struct("<iII")
MMSGHDR_LEN_OFFSET = _MSGHDR.size  # struct mmsghdr: a msghdr, then unsigned int msg_len


def _socket(c: Context, fd: int) -> api.OpenFile:
    """The caller's socket: EBADF (an O_PATH fd too), or ENOTSOCK for any other file."""
    file = c.tracee.take_fd(signed32(fd), path_ok=False)
    if not stat.S_ISSOCK(os.fstat(file.fd).st_mode):
        raise CallError(errno.ENOTSOCK)
    return file


def _address(c: Context, at: int, length: int) -> api.SocketAddress:
    """The sockaddr at ``at`` as the kernel copies it (EINVAL for a bad length, EFAULT),
    with the path it names when it is a unix-socket path (the kernel's own test: family
    AF_UNIX, a length that leaves a sun_path, and a first byte that is not the NUL of an
    abstract name)."""
    if length < 0 or length > SOCKADDR_STORAGE_SIZE:
        raise CallError(errno.EINVAL)
    raw = c.tracee.read(at, length) if length else b""
    if 2 < length <= SOCKADDR_UN_SIZE and int.from_bytes(raw[:2], "little") == AF_UNIX and raw[2]:
        name = raw[2:].split(b"\0", 1)[0]
        return api.SocketAddress(raw, c.tracee.vm_path(AT_FDCWD, os.fsdecode(name)))
    return api.SocketAddress(raw)


def _bind(c: Context, a: Args) -> Decoded:
    socket = _socket(c, a[0])
    return api.Bind(caller=c.caller(), socket=socket, address=_address(c, a[1], signed32(a[2]))), None


def _connect(c: Context, a: Args) -> Decoded:
    socket = c.tracee.take_fd(signed32(a[0]), path_ok=False)  # the address is copied before ENOTSOCK
    address = _address(c, a[1], signed32(a[2]))
    if not stat.S_ISSOCK(os.fstat(socket.fd).st_mode):
        raise CallError(errno.ENOTSOCK)
    return api.Connect(caller=c.caller(), socket=socket, address=address), None


def _data(c: Context, at: int, length: int) -> bytes:
    length = min(length, SEND_LIMIT)
    return c.tracee.read(at, length) if length else b""


def _sendto(c: Context, a: Args) -> Decoded:
    socket = _socket(c, a[0])
    address = _address(c, a[4], signed32(a[5]))  # a NULL address runs natively (the filter)
    length = min(a[2], MAX_RW_COUNT)
    data = _data(c, a[1], length)
    return api.Send(
        caller=c.caller(), socket=socket, data=data, length=length, flags=a[3] & 0xFFFFFFFF, address=address
    ), None


def _message(c: Context, socket: api.OpenFile, at: int, flags: int) -> api.Send:
    """One struct msghdr at ``at``, read in the order of the kernel's copy_msghdr_from_user."""
    name_at, name_length, iov_at, iov_count, control_at, control_length, header_flags = _MSGHDR.unpack(
        c.tracee.read(at, _MSGHDR.size)
    )
    name_length = signed32(name_length)
    if name_length < 0:
        raise CallError(errno.EINVAL)
    address = None
    if name_at and name_length:  # a longer msg_namelen is cut to the largest address, not refused
        address = _address(c, name_at, min(name_length, SOCKADDR_STORAGE_SIZE))
    if iov_count > UIO_MAXIOV:
        raise CallError(errno.EMSGSIZE)
    pieces: list[bytes] = []
    length = copied = 0
    raw_iov = c.tracee.read(iov_at, iov_count * _IOVEC.size) if iov_count else b""
    for base, size in _IOVEC.iter_unpack(raw_iov):
        if size >= 1 << 63:  # a negative ssize_t
            raise CallError(errno.EINVAL)
        size = min(size, MAX_RW_COUNT - length)
        wanted = min(size, SEND_LIMIT - copied)
        if wanted:
            pieces.append(c.tracee.read(base, wanted))
            copied += wanted
        length += size
    if control_length > 0x7FFFFFFF or control_length > CONTROL_LIMIT:
        raise CallError(errno.ENOBUFS)
    control = _control(c, c.tracee.read(control_at, control_length)) if control_length else ()
    return api.Send(
        caller=c.caller(),
        socket=socket,
        data=b"".join(pieces),
        length=length,
        flags=flags & 0xFFFFFFFF,
        address=address,
        control=control,
        header_flags=signed32(header_flags),
    )


def _control(c: Context, raw: bytes) -> tuple[api.Control, ...]:
    """Control messages, walked as the kernel walks them (CMSG_FIRSTHDR, CMSG_NXTHDR,
    CMSG_OK): EINVAL for one that does not fit. Fds are taken from the caller; claimed
    credentials are checked as the kernel checks them for this caller."""
    messages: list[api.Control] = []
    offset, passed = 0, 0
    while len(raw) - offset >= _CMSGHDR.size:
        length, level, kind = _CMSGHDR.unpack_from(raw, offset)
        if length < _CMSGHDR.size or length > len(raw) - offset:
            raise CallError(errno.EINVAL)
        data = raw[offset + _CMSGHDR.size : offset + length]
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            numbers = [n for (n,) in struct.iter_unpack("<i", data[: len(data) // 4 * 4])]
            passed += len(numbers)
            if passed > SCM_MAX_FD:
                raise CallError(errno.EINVAL)
            messages.append(api.PassedFiles(tuple(c.tracee.take_fd(n) for n in numbers)))
        elif level == SOL_SOCKET and kind == SCM_CREDENTIALS and len(data) == _UCRED.size:
            messages.append(_claimed(c, *_UCRED.unpack(data)))
        else:
            messages.append(api.Ancillary(level, kind, data))  # the kernel's to judge
        offset += (length + 7) & ~7
    return tuple(messages)


def _claimed(c: Context, pid: int, uid: int, gid: int) -> api.SenderCredentials:
    """SCM_CREDENTIALS as the caller claims them, checked as scm_check_creds checks them
    and translated to the manager's view. Only its own process: a VM's CAP_SYS_ADMIN lets
    it claim another one natively, which the manager cannot name (EPERM)."""
    identity = c.tracee.identity()
    outer_uid, outer_gid = _outside(c, "uid", uid), _outside(c, "gid", gid)
    if outer_uid is None or outer_gid is None:
        raise CallError(errno.EINVAL)
    may_uid = outer_uid in identity.uids or identity.capabilities >> CAP_SETUID & 1
    may_gid = outer_gid in identity.gids or identity.capabilities >> CAP_SETGID & 1
    if pid != identity.own_tgid or not may_uid or not may_gid:
        raise CallError(errno.EPERM)
    return api.SenderCredentials(identity.tgid, outer_uid, outer_gid)


def _outside(c: Context, kind: str, inside: int) -> int | None:
    """An id of the caller's user namespace as the manager sees it; None if unmapped."""
    for first, outside, count in c.tracee.id_map(kind):
        if first <= inside < first + count:
            return outside + inside - first
    return None


def _sendmsg(c: Context, a: Args) -> Decoded:
    socket = _socket(c, a[0])
    return _message(c, socket, a[1], a[2]), None


def _sendmmsg(c: Context, a: Args) -> Decoded:
    """The first message only (sendmmsg may send fewer than asked; callers send the rest
    again), with its msg_len written back and 1 returned."""
    socket = _socket(c, a[0])
    if not a[2] & 0xFFFFFFFF:
        raise Passthrough()  # no message: the kernel returns 0, whatever the fd or memory say
    return _message(c, socket, a[1], a[3]), Output("msg_len", a[1] + MMSGHDR_LEN_OFFSET, 4)


DECODERS: dict[str, Decoder] = {
    "bind": _bind,
    "connect": _connect,
    "sendto": _sendto,
    "sendmsg": _sendmsg,
    "sendmmsg": _sendmmsg,
}
