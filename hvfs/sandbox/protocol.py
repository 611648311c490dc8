"""The messages between the manager and a VM's hvfs-init (native/init/init.h is the other
side, and ``test_init_protocol`` checks that the two agree).

One SOCK_SEQPACKET datagram per message, with fds passed alongside (SCM_RIGHTS): records
of ``[u8 tag][u32 length, little-endian][bytes]``, the first the message type. Strings
carry a trailing NUL, integers are 8 bytes little-endian. A binary format rather than
JSON because the other side is a small C program that must parse it safely.
"""

from __future__ import annotations

import enum
import errno
import os
import select
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAX_MESSAGE = 1 << 20
MAX_FDS = 32
_HEADER = struct.Struct("<BI")


class Msg(enum.IntEnum):
    PLAN = 1
    MAPPED = 2
    START = 3
    EXEC = 4
    TAKEN = 5
    DEPOSIT = 6
    WITHDRAW = 7
    UNSHARED = 10
    INIT = 11
    READY = 12
    STARTED = 13
    ERROR = 14
    EXEC_STARTED = 15
    EXEC_EXITED = 16
    DEPOSITED = 17
    VM_EXITED = 18


class Tag(enum.IntEnum):
    TYPE = 1
    HOSTNAME = 2
    BOOT = 3
    WORKDIR = 4
    USER = 5
    TTY = 6
    WINSIZE = 7
    GRACE_MS = 8
    ARG = 9
    ENV = 10
    HOME_SET = 11
    FILTER = 12
    RLIMIT = 13
    MEMFD_NOEXEC = 14
    NET_IFACE = 15
    NET_ADDR = 16
    NET_PREFIX = 17
    ID = 18
    PID = 19
    CODE = 20
    STEP = 21
    ERRNO = 22
    TEXT = 23
    FD = 24
    SHIM = 25
    WAIT_MS = 26
    ROLE = 27
    TRACED = 28  # the filter is a SECCOMP_RET_TRACE one: pid 1 hands back a pidfd of itself
    SPARE = 29  # a warm spare (hvfs.hypervisor.spares): START brings the program, stdio and hostname
    MOUNTS = 30  # pid 1's mount namespace, held by the manager until the exit is told (VmProcess.reap)


class ChannelClosed(Exception):
    """The other side closed the channel."""


class MessageTooLarge(ValueError):
    """A message does not fit one datagram."""


@dataclass
class Message:
    """One message of the launcher protocol: its type and its tagged records."""

    type: Msg
    records: list[tuple[int, bytes]] = field(default_factory=list)

    def add(self, tag: Tag, value: bytes | str | int | bool) -> Message:
        if isinstance(value, str):
            data = os.fsencode(value) + b"\0"
        elif isinstance(value, (bool, int)):
            data = struct.pack("<q", int(value))
        else:
            data = value
        self.records.append((tag, data))
        return self

    def add_all(self, tag: Tag, values: Iterable[str]) -> Message:
        for value in values:
            self.add(tag, value)
        return self

    def add_all_ints(self, tag: Tag, values: Iterable[int]) -> Message:
        for value in values:
            self.add(tag, value)
        return self

    def raw(self, tag: Tag) -> bytes | None:
        return next((data for t, data in self.records if t == tag), None)

    def string(self, tag: Tag) -> str | None:
        data = self.raw(tag)
        return None if data is None else os.fsdecode(data.rstrip(b"\0"))

    def ints(self, tag: Tag) -> list[int]:
        return [int(struct.unpack("<q", data)[0]) for t, data in self.records if t == tag and len(data) == 8]

    def int(self, tag: Tag, missing: int = 0) -> int:
        data = self.raw(tag)
        return missing if data is None or len(data) != 8 else int(struct.unpack("<q", data)[0])

    def encode(self) -> bytes:
        parts = [_HEADER.pack(Tag.TYPE, 1), bytes([self.type])]
        for tag, data in self.records:
            parts += (_HEADER.pack(tag, len(data)), data)
        return b"".join(parts)


def decode(data: bytes) -> Message:
    records: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        if len(data) - at < _HEADER.size:
            raise ValueError("truncated record")
        tag, length = _HEADER.unpack_from(data, at)
        at += _HEADER.size
        if at + length > len(data):
            raise ValueError("truncated record")
        records.append((tag, data[at : at + length]))
        at += length
    if not records or records[0][0] != Tag.TYPE or len(records[0][1]) != 1:
        raise ValueError("a message must start with its type")
    return Message(Msg(records[0][1][0]), records[1:])


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def send(sock: socket.socket, message: Message, fds: Sequence[int] = ()) -> None:
    data = message.encode()
    if len(data) > MAX_MESSAGE:
        raise MessageTooLarge(f"{len(data)} bytes, more than the {MAX_MESSAGE} one message may take")
    try:
        if fds:
            socket.send_fds(sock, [data], list(fds))
        else:
            sock.send(data)
    except OSError as e:
        if e.errno == errno.EMSGSIZE:  # a datagram must fit the socket's send buffer (net.core.wmem_max)
            raise MessageTooLarge(f"{len(data)} bytes do not fit one message of the VM's channel") from None
        raise


def receive(sock: socket.socket) -> tuple[Message, list[int]]:
    """The next message and the fds that came with it (the caller owns them)."""
    if sock.gettimeout() is None:
        # Waits with no buffer: receiving allocates MAX_MESSAGE for the call, held as long
        # as it blocks (a reader per VM, for the VM's life).
        waiting = select.poll()
        waiting.register(sock, select.POLLIN)
        waiting.poll()
    data, fds, _flags, _address = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
    if not data:
        for fd in fds:
            os.close(fd)
        raise ChannelClosed()
    return decode(data), list(fds)
