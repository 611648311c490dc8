"""sendto(), sendmsg() and sendmmsg() (``hvfs.manager.handlers.sending``): the data, the
destination and the control messages, read once as the kernel reads them (see
``sockets.py``), for the manager to send a copy on the caller's socket."""

from __future__ import annotations

import errno

from hvfs import api
from hvfs._sys.abi import (
    CAP_SETGID,
    CAP_SETUID,
    CMSG_ALIGN,
    CMSGHDR,
    FD_NUMBER,
    INT_MAX,
    IOVEC,
    MAX_RW_COUNT,
    MMSGHDR_LEN_OFFSET,
    MSG_LEN,
    MSGHDR,
    SCM_CREDENTIALS,
    SCM_MAX_FD,
    SCM_RIGHTS,
    SIGN64,
    SOCKADDR_STORAGE_SIZE,
    SOL_SOCKET,
    UCRED,
    UIO_MAXIOV,
)
from hvfs.intercept.decoders.context import Args, Context, Decoded, Output, Passthrough, decodes, signed32, unsigned32
from hvfs.intercept.decoders.sockets import address, socket
from hvfs.intercept.decoders.tracee import CallError

SEND_LIMIT = 1 << 20  # bytes the manager copies per send: past it a stream's send is partial
CONTROL_LIMIT = 1 << 20  # more control data than this exceeds any optmem_max: ENOBUFS


def _data(c: Context, at: int, length: int) -> bytes:
    length = min(length, SEND_LIMIT)
    return c.tracee.read(at, length) if length else b""


@decodes("Send")
def sendto(c: Context, a: Args) -> Decoded:
    sock = socket(c, a[0])
    sockaddr = address(c, a[4], signed32(a[5]))  # a NULL address runs natively (the filter)
    length = min(a[2], MAX_RW_COUNT)
    data = _data(c, a[1], length)
    return api.Send(
        caller=c.caller(), socket=sock, data=data, length=length, flags=unsigned32(a[3]), address=sockaddr
    ), None


def _message(c: Context, sock: api.OpenFile, at: int, flags: int) -> api.Send:
    """One struct msghdr at ``at``, read in the order of the kernel's copy_msghdr_from_user."""
    name_at, name_length, iov_at, iov_count, control_at, control_length, header_flags = MSGHDR.unpack(
        c.tracee.read(at, MSGHDR.size)
    )
    name_length = signed32(name_length)
    if name_length < 0:
        raise CallError(errno.EINVAL)
    sockaddr = None
    if name_at and name_length:  # a longer msg_namelen is cut to the largest address, not refused
        sockaddr = address(c, name_at, min(name_length, SOCKADDR_STORAGE_SIZE))
    if iov_count > UIO_MAXIOV:
        raise CallError(errno.EMSGSIZE)
    pieces: list[bytes] = []
    length = copied = 0
    raw_iov = c.tracee.read(iov_at, iov_count * IOVEC.size) if iov_count else b""
    for base, size in IOVEC.iter_unpack(raw_iov):
        if size & SIGN64:  # a negative ssize_t
            raise CallError(errno.EINVAL)
        size = min(size, MAX_RW_COUNT - length)
        wanted = min(size, SEND_LIMIT - copied)
        if wanted:
            pieces.append(c.tracee.read(base, wanted))
            copied += wanted
        length += size
    if control_length > INT_MAX or control_length > CONTROL_LIMIT:
        raise CallError(errno.ENOBUFS)
    control = _control(c, c.tracee.read(control_at, control_length)) if control_length else ()
    return api.Send(
        caller=c.caller(),
        socket=sock,
        data=b"".join(pieces),
        length=length,
        flags=unsigned32(flags),
        address=sockaddr,
        control=control,
        header_flags=signed32(header_flags),
    )


def _control(c: Context, raw: bytes) -> tuple[api.Control, ...]:
    """Control messages, walked as the kernel walks them (CMSG_FIRSTHDR, CMSG_NXTHDR,
    CMSG_OK): EINVAL for one that does not fit. Fds are taken from the caller; claimed
    credentials are checked as the kernel checks them for this caller."""
    messages: list[api.Control] = []
    offset, passed = 0, 0
    while len(raw) - offset >= CMSGHDR.size:
        length, level, kind = CMSGHDR.unpack_from(raw, offset)
        if length < CMSGHDR.size or length > len(raw) - offset:
            raise CallError(errno.EINVAL)
        data = raw[offset + CMSGHDR.size : offset + length]
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            numbers = [n for (n,) in FD_NUMBER.iter_unpack(data[: len(data) // FD_NUMBER.size * FD_NUMBER.size])]
            passed += len(numbers)
            if passed > SCM_MAX_FD:
                raise CallError(errno.EINVAL)
            messages.append(api.PassedFiles(tuple(c.tracee.take_fd(n) for n in numbers)))
        elif level == SOL_SOCKET and kind == SCM_CREDENTIALS and len(data) == UCRED.size:
            messages.append(_claimed(c, *UCRED.unpack(data)))
        else:
            messages.append(api.Ancillary(level, kind, data))  # the kernel's to judge
        offset += (length + CMSG_ALIGN - 1) & -CMSG_ALIGN
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


@decodes("Send")
def sendmsg(c: Context, a: Args) -> Decoded:
    sock = socket(c, a[0])
    return _message(c, sock, a[1], a[2]), None


@decodes("Send")
def sendmmsg(c: Context, a: Args) -> Decoded:
    """The first message only (sendmmsg may send fewer than asked; callers send the rest
    again), with its msg_len written back and 1 returned."""
    sock = socket(c, a[0])
    if not unsigned32(a[2]):
        raise Passthrough()  # no message: the kernel returns 0, whatever the fd or memory say
    return _message(c, sock, a[1], a[3]), Output("msg_len", a[1] + MMSGHDR_LEN_OFFSET, MSG_LEN.size)
