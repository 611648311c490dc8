"""sendto(), sendmsg() and sendmmsg(): the manager sends a copy on the caller's socket.

A datagram to a unix-socket path is a message to whatever listens there, a host daemon
included, so its destination is checked as a connect's is (``sockets.reach``). Every
send that names an address, or might (sendmsg keeps it in memory), is performed here,
whatever the socket: continuing one would let the kernel look the fd up again, and a
unix datagram socket ``dup2``'d over it would send to an address never checked.

What a receiver sees: the data, the sender's own address (the caller's socket is the
one that sends), passed fds (taken from the caller), and credentials: an explicit
SCM_CREDENTIALS is checked as the kernel checks it for the caller, and every send on a
unix socket carries the caller's process and real ids, so that SO_PASSCRED receivers
see the caller rather than the manager (where the manager may not name the caller's
process, rootless, they see the manager's process with the caller's ids).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import os
import select
import signal
import socket
import struct

from hvfs import api, deferred
from hvfs._sys import sockets
from hvfs._sys.abi import (
    AF_UNIX,
    CMSG_ALIGN,
    CMSGHDR,
    MSG_DONTWAIT,
    MSG_FASTOPEN,
    MSG_NOSIGNAL,
    SOCK_DGRAM,
    SOCK_STREAM,
    UCRED,
)
from hvfs.manager import creds
from hvfs.manager.handlers.sockets import reach
from hvfs.manager.vm import VmContext

log = deferred.logger("hvfs.manager")


def handle_send(vm: VmContext, request: api.Send) -> api.Response:
    """Errnos: the kernel's for the socket, flags, data and address (EAGAIN, EPIPE with
    SIGPIPE unless MSG_NOSIGNAL, ENOTCONN, EISCONN, EOPNOTSUPP, EINVAL, EMSGSIZE,
    ECONNREFUSED, EBADF for a passed fd…); EMSGSIZE for a message longer than the manager
    copies (a stream's send returns after it instead); for a unix path as a connect."""
    fd = request.socket.fd
    domain, kind = sockets.kind(fd)
    if len(request.data) < request.length and kind != SOCK_STREAM:
        raise OSError(errno.EMSGSIZE, "a datagram longer than hvfs copies")
    blocking = not request.flags & MSG_DONTWAIT and not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    first = request.sent == 0
    target = -1
    try:
        name = None
        if first and request.address is not None:
            name, target = _destination(vm, domain, kind, request.address)
        try:
            sent = _send(request, domain, name, first)
        except OSError as e:
            return _failed(request, e, blocking)
    finally:
        if target >= 0:
            os.close(target)
    total = request.sent + sent
    if blocking and kind == SOCK_STREAM and total < len(request.data):  # a blocking stream sends it all
        return api.WouldBlock(fd, select.POLLOUT, dataclasses.replace(request, sent=total), api.Value(total))
    return api.Value(total)


def _destination(vm: VmContext, domain: int, kind: int, address: api.SocketAddress) -> tuple[bytes, int]:
    """The address to give the kernel, and an fd to close after the call (-1 if none)."""
    if domain != AF_UNIX or address.path is None:
        return address.raw, -1  # no family but unix looks up paths
    if kind == SOCK_DGRAM:
        return reach(vm, address)
    # A stream socket refuses any address (EISCONN, EOPNOTSUPP) and a seqpacket one ignores
    # it, whatever it holds: an abstract name of the same length gets the same answer.
    return address.raw[:2] + bytes(len(address.raw) - 2), -1


def _send(request: api.Send, domain: int, name: bytes | None, first: bool) -> int:
    """One attempt that never blocks: a blocking caller's wait is the driver's."""
    fd = request.socket.fd
    data = request.data[request.sent :]
    flags = request.flags | MSG_DONTWAIT | MSG_NOSIGNAL
    messages, header_flags = request.control, request.header_flags
    if not first:  # the rest of a stream's data, on the connection the first part made
        flags &= ~MSG_FASTOPEN
        messages, header_flags = (), 0
    if domain != AF_UNIX:
        if header_flags is None and name is not None:  # sendto: an empty address is not a NULL one
            return sockets.sendto(fd, data, flags, name)
        control = _control(messages, domain)
        return sockets.sendmsg(fd, data, flags, name=name, control=control, header_flags=header_flags or 0)
    control = _control(messages, domain, _sender(request.caller))
    # Claiming the caller's ids takes the manager's own rights. The caller's own were
    # checked where the kernel would check them: the destination's write permission in
    # ``reach``, claimed credentials when the call was decoded.
    with creds.manager_rights():
        return sockets.sendmsg(fd, data, flags, name=name, control=control, header_flags=header_flags or 0)


def _control(messages: tuple[api.Control, ...], domain: int, sender: api.SenderCredentials | None = None) -> bytes:
    """The control messages as the kernel reads them. Passed fds are the manager's copies
    on a unix socket; on any other, where the kernel refuses SCM_RIGHTS before it looks
    at the numbers, they are -1, so that no number of the manager's is ever looked up."""
    parts = []
    claimed = False
    for message in messages:
        match message:
            case api.PassedFiles(files):
                numbers = [f.fd if domain == AF_UNIX else -1 for f in files]
                parts.append(_message(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"<{len(numbers)}i", *numbers)))
            case api.SenderCredentials():
                claimed = True
                parts.append(_message(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, _ucred(message)))
            case api.Ancillary(level, kind, data):
                parts.append(_message(level, kind, data))
    if sender is not None and not claimed:
        parts.append(_message(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, _ucred(sender)))
    return b"".join(parts)


def _sender(caller: api.Caller) -> api.SenderCredentials:
    """The caller as a receiver asking for credentials would see it natively: its process
    and real ids (the process where the manager may name it)."""
    assert caller.creds is not None
    pid = os.getpid()
    if may_name_processes():
        with open(f"/proc/{caller.pid}/status", "rb") as f:  # the thread waits for this answer: still it
            pid = next(int(line.split()[1]) for line in f if line.startswith(b"Tgid:"))
    return api.SenderCredentials(pid, caller.creds.real_uid, caller.creds.real_gid)


def _message(level: int, kind: int, data: bytes) -> bytes:
    length = CMSGHDR.size + len(data)
    return CMSGHDR.pack(length, level, kind) + data + bytes(-length % CMSG_ALIGN)


def _ucred(credentials: api.SenderCredentials) -> bytes:
    pid = credentials.pid if may_name_processes() else os.getpid()  # a claimed pid, likewise
    return UCRED.pack(pid, credentials.uid, credentials.gid)


@functools.cache
def may_name_processes() -> bool:
    """Whether the manager may send credentials naming another process (CAP_SYS_ADMIN
    over its pid namespace): as root, yes; rootless, where the host's pid namespace is
    not the manager's to speak for, no."""
    with creds.manager_rights():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            try:
                claim = UCRED.pack(1, os.getuid(), os.getgid())
                a.sendmsg([b"?"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, claim)])
            except PermissionError:
                return False
    return True


def _failed(request: api.Send, error: OSError, blocking: bool) -> api.Response:
    if error.errno == errno.EINPROGRESS and blocking and request.flags & MSG_FASTOPEN:
        # TCP Fast Open without a cookie: the connect has begun; a blocking caller's data
        # goes once it is made (an error of the connect then comes with the send).
        rest = dataclasses.replace(request, flags=request.flags & ~MSG_FASTOPEN, address=None)
        return api.WouldBlock(request.socket.fd, select.POLLOUT, rest, api.Errno(errno.EINTR))
    if error.errno == errno.EAGAIN and blocking:
        interrupted: api.Errno | api.Value = api.Value(request.sent) if request.sent else api.Errno(errno.EINTR)
        return api.WouldBlock(request.socket.fd, select.POLLOUT, request, interrupted)
    if request.sent:  # what was sent before the error counts; the error comes on the next call
        return api.Value(request.sent)
    if error.errno == errno.EPIPE and not request.flags & MSG_NOSIGNAL:
        return api.Errno(errno.EPIPE, signal.SIGPIPE)
    raise error
