"""The control protocol between the hvfs CLI and a project's manager (docs/control.md).

A unix SOCK_SEQPACKET socket in the project's state directory, mode 0600, whose peer
credentials are checked as well: only the user who started the manager (root inside its
user namespace) may use it. Each message is one JSON object; file descriptors travel with
it (SCM_RIGHTS). Every request names the protocol version it speaks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

VERSION = 1
MAX_MESSAGE = 1 << 20
MAX_FDS = 3
log = logging.getLogger("hvfs.control")


class ControlError(Exception):
    """The manager refused a request, or is not there."""


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        with self._lock:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)

    def receive(self) -> tuple[dict[str, Any], list[int]]:
        data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_FDS)
        if not data:
            raise EOFError()
        message: dict[str, Any] = json.loads(data)
        return message, list(fds)

    def close(self) -> None:
        self.sock.close()


Handler = Callable[[dict[str, Any], list[int], Connection], None]


class ControlServer:
    """Accepts connections and runs ``handler`` for each request, in a thread per connection."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            self._sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._accept, name="hvfs-control", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(Connection(sock),), daemon=True).start()

    def _serve(self, connection: Connection) -> None:
        try:
            uid = struct.unpack("3i", connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid != os.geteuid():  # in the manager's user namespace, its owner is root
                connection.send({"error": "permission denied: this manager belongs to another user"})
                return
            while True:
                try:
                    message, fds = connection.receive()
                except (EOFError, OSError):
                    return
                if message.get("hvfs") != VERSION:
                    connection.send(
                        {"error": f"protocol {message.get('hvfs')!r} is not spoken here; this manager speaks {VERSION}"}
                    )
                    continue
                try:
                    self._handler(message, fds, connection)
                except Exception as e:
                    log.exception("control request %s failed", message.get("op"))
                    with contextlib.suppress(OSError):
                        connection.send({"error": f"internal error: {e!r}"})
        finally:
            connection.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def connect(path: str) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise ControlError("not up") from None
    return Connection(sock)


def call(path: str, op: str, **fields: Any) -> dict[str, Any]:
    """One request, one reply; raises ControlError for an error reply."""
    connection = connect(path)
    try:
        connection.send({"hvfs": VERSION, "op": op, **fields})
        reply, _ = connection.receive()
    except EOFError:
        raise ControlError("the manager closed the connection") from None
    finally:
        connection.close()
    if "error" in reply:
        raise ControlError(str(reply["error"]))
    return reply


def replies(connection: Connection) -> Iterator[tuple[dict[str, Any], list[int]]]:
    while True:
        try:
            yield connection.receive()
        except (EOFError, OSError):
            return
