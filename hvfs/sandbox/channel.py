"""The control channel between the manager and a VM's launcher and init.

A SOCK_SEQPACKET socket pair: each message is one JSON object, with file descriptors
passed alongside (SCM_RIGHTS). When the manager dies its end closes, and the VM's init
sees end-of-file: that is how a VM learns it has lost its manager.
"""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_MESSAGE = 65536
MAX_FDS = 4


class ChannelClosed(Exception):
    """The other side closed the channel."""


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        raise ChannelClosed()
    return json.loads(data), list(fds)
