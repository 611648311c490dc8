"""Datagrams of the HVFS API protocol on a unix SOCK_SEQPACKET socket, and its handshake.

One message is one datagram: a header, the message's JSON and its bytes (``wire``), and
its fds as SCM_RIGHTS. Two cases stretch that:

- a body past ``INLINE_LIMIT`` (a send of up to 1 MiB) travels in a memfd passed as the
  message's first fd, since a datagram must fit the socket's buffer;
- the kernel takes at most ``SCM_MAX_FD`` fds per datagram (a send may pass 253 of the
  caller's, besides its socket): the rest follow at once in ``MORE_FDS`` datagrams.

Received fds are close-on-exec (MSG_CMSG_CLOEXEC), so that no process the manager starts
(a VM's launcher) ever inherits one, and every fd received with a message that fails to
arrive whole is closed here.

The handshake: the client checks the server's peer credentials, then sends ``HELLO``
(magic, protocol, schema digest); the server checks the client's credentials and the
versions and answers ``HELLO`` and a verdict byte, with a one-line reason on refusal. Its
layout never changes, so that builds of any two versions can tell each other why not.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from hvfs._sys.abi import SCM_MAX_FD
from hvfs.api.transport import ProtocolMismatch, TransportError
from hvfs.api.wire import PROTOCOL, SCHEMA, WireError

# kind, flags, fds in all (this datagram's and those that follow), JSON length, bytes length
HEADER = struct.Struct("<BBHII")
REQUEST, RESPONSE, RELEASE, MORE_FDS, FAILED = 1, 2, 3, 4, 5
IN_MEMFD = 1  # the body is in the message's first fd
RELEASE_FOLLOWS = 2  # a response giving a writable fd: RELEASE follows once the server closed its copy

INLINE_LIMIT = 60 << 10  # bodies up to this travel in the datagram itself
BODY_LIMIT = 64 << 20  # no message is larger; a bigger memfd is refused
_ANCILLARY = socket.CMSG_SPACE(SCM_MAX_FD * 4)

MAGIC = b"HVFS-API"
_HELLO = struct.Struct(f"<{len(MAGIC)}sI16s")
ACCEPTED, REFUSED = 0, 1
HANDSHAKE_TIMEOUT = 10.0  # seconds each side waits for the other's hello


@dataclass
class Message:
    kind: int
    flags: int
    text: bytes
    blobs: bytes
    fds: list[int] = field(default_factory=list)

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def send(sock: socket.socket, kind: int, text: bytes, blobs: bytes, fds: Sequence[int], flags: int = 0) -> None:
    """Send one message; ``fds`` stay the caller's (the kernel passes copies)."""
    memfd = -1
    try:
        if len(text) + len(blobs) > INLINE_LIMIT:
            memfd = os.memfd_create("hvfs-api", os.MFD_CLOEXEC)
            _write_all(memfd, text + blobs)
            fds = [memfd, *fds]
            flags |= IN_MEMFD
            parts = [HEADER.pack(kind, flags, len(fds), len(text), len(blobs))]
        else:
            parts = [HEADER.pack(kind, flags, len(fds), len(text), len(blobs)), text, blobs]
        first, rest = fds[:SCM_MAX_FD], fds[SCM_MAX_FD:]
        sock.sendmsg(parts, [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", first))] if first else [])
        while rest:
            chunk, rest = rest[:SCM_MAX_FD], rest[SCM_MAX_FD:]
            header = HEADER.pack(MORE_FDS, 0, len(chunk), 0, 0)
            sock.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", chunk))])
    finally:
        if memfd >= 0:
            os.close(memfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Receiver:
    """Receives messages on one socket, into a buffer kept from message to message. Not
    thread-safe: one per connection, used by the one thread that owns it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray(HEADER.size + INLINE_LIMIT)
        self._view = memoryview(self._buffer)

    def receive(self) -> Message | None:
        """The next message; None when the peer has closed the connection. Fds that came
        with a message that fails to arrive whole are closed before ``WireError``."""
        size, fds = self._datagram()
        if size == 0 and not fds:
            return None
        message = Message(0, 0, b"", b"", fds)
        try:
            if size < HEADER.size:
                raise WireError(f"a datagram of {size} bytes")
            kind, flags, count, text_length, blobs_length = HEADER.unpack_from(self._buffer)
            message.kind, message.flags = kind, flags
            body_length = text_length + blobs_length
            if size != HEADER.size + (0 if flags & IN_MEMFD else body_length):
                raise WireError(f"a datagram of {size} bytes for a message of {body_length}")
            body = b"" if flags & IN_MEMFD else bytes(self._view[HEADER.size : size])
            while len(message.fds) < count:
                more, extra = self._datagram()
                message.fds += extra
                if more != HEADER.size or HEADER.unpack_from(self._buffer)[0] != MORE_FDS or not extra:
                    raise WireError("a message's fds did not all follow it")
            if len(message.fds) != count:
                raise WireError(f"{len(message.fds)} fds with a message of {count}")
            if flags & IN_MEMFD:
                body = _read_body(message.fds.pop(0), body_length)
            message.text, message.blobs = body[:text_length], body[text_length:]
        except BaseException:
            message.close_fds()
            raise
        return message

    def _datagram(self) -> tuple[int, list[int]]:
        size, ancillary, flags, _ = self.sock.recvmsg_into([self._view], _ANCILLARY, socket.MSG_CMSG_CLOEXEC)
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            for fd in fds:
                os.close(fd)
            raise WireError("a datagram larger than any message, or with more fds than one may carry")
        return size, list(fds)


def _read_body(memfd: int, length: int) -> bytes:
    try:
        if length > BODY_LIMIT or os.fstat(memfd).st_size != length:
            raise WireError(f"a message body of {length} bytes, in a file of another size")
        body = os.pread(memfd, length, 0)
        if len(body) != length:
            raise WireError("a message body shorter than announced")
        return body
    finally:
        os.close(memfd)


def peer_refusal(sock: socket.socket) -> str | None:
    """Why the process at the other end of ``sock`` may not speak to this one, or None: it
    must run as this process's user, or as root (SO_PEERCRED, as the kernel recorded it
    at connect or socketpair time; ids as this process's user namespace sees them)."""
    pid, uid, _gid = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    me = os.geteuid()
    if uid in (me, 0):
        return None
    return f"peer process {pid} runs as uid {uid}, neither this process's uid {me} nor root"


def hello() -> bytes:
    return _HELLO.pack(MAGIC, PROTOCOL, SCHEMA.encode("ascii"))


def _versions(data: bytes) -> tuple[int, str] | None:
    if len(data) < _HELLO.size or not data.startswith(MAGIC):
        return None
    _, protocol, schema = _HELLO.unpack_from(data)
    return protocol, schema.decode("ascii", "replace")


def client_handshake(sock: socket.socket) -> None:
    """Check the server and introduce this client; ``TransportError`` (one line) if refused."""
    refusal = peer_refusal(sock)
    if refusal is not None:
        raise TransportError(f"not an HVFS manager to trust: {refusal}")
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        sock.sendall(hello())
        answer = sock.recv(4096)
    except TimeoutError:
        raise TransportError(f"the peer gave no HVFS API handshake in {HANDSHAKE_TIMEOUT:.0f} s") from None
    finally:
        sock.settimeout(None)
    if not answer:
        raise TransportError("the HVFS manager closed the connection during the handshake")
    theirs = _versions(answer)
    if theirs is None:
        raise TransportError("the peer is not an HVFS manager (no HVFS API handshake)")
    verdict, reason = answer[_HELLO.size : _HELLO.size + 1], answer[_HELLO.size + 1 :].decode("utf-8", "replace")
    if verdict == bytes([ACCEPTED]):
        return
    if theirs != (PROTOCOL, SCHEMA):
        raise ProtocolMismatch(
            f"the HVFS manager speaks API protocol {theirs[0]} (schema {theirs[1]}), this client "
            f"{PROTOCOL} (schema {SCHEMA}): run both from one version of hvfs (restart the manager)"
        )
    raise TransportError(f"the HVFS manager refused this client: {reason}")


def server_handshake(sock: socket.socket) -> str | None:
    """Check a new client; None if accepted, else the one-line reason it was refused (it
    has been told)."""
    # Its hello is read first whoever it is: a socket closed with a datagram unread makes
    # the peer's next receive fail (ECONNRESET) before it reads the refusal.
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        first = sock.recv(4096)
    finally:
        sock.settimeout(None)
    refusal = peer_refusal(sock)
    if refusal is None:
        theirs = _versions(first)
        if theirs is None:
            refusal = "not an HVFS API client (no handshake)"
        elif theirs != (PROTOCOL, SCHEMA):
            refusal = (
                f"client speaks API protocol {theirs[0]} (schema {theirs[1]}), this manager "
                f"{PROTOCOL} (schema {SCHEMA}): run both from one version of hvfs"
            )
    verdict = bytes([ACCEPTED]) if refusal is None else bytes([REFUSED]) + refusal.encode()
    with contextlib.suppress(OSError):
        sock.sendall(hello() + verdict)
    return refusal
