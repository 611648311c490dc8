"""The driver's end of the socket transport: ``SocketTransport``.

Each thread that calls ``handle_request`` gets a connection of its own, made on its
first call: the driver's workers then wait for their answers each on its own socket,
with no thread in between to wake (the cost the driver's essay measures), and a request
that blocks in the manager holds up no other. A thread's connection closes when the
thread ends, or at ``close``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from collections.abc import Callable

from hvfs.api import framing, messages, wire
from hvfs.api.transport import TransportError


class _Connection:
    """One connection, used by the one thread that made it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.receiver = framing.Receiver(sock)
        self.broken = False

    def call(self, request: messages.Request) -> messages.Response:
        text, blobs, fds = wire.encode(request)
        try:
            framing.send(self.sock, framing.REQUEST, text, blobs, fds)
            message = self.receiver.receive()
        except OSError as e:
            self.broken = True
            raise TransportError(f"lost the HVFS manager: {e.strerror or e}") from None
        except TransportError:
            self.broken = True
            raise
        if message is None:
            self.broken = True
            raise TransportError("the HVFS manager closed the connection")
        try:
            if message.kind == framing.FAILED:
                raise TransportError(f"the HVFS manager dropped this client: {message.text.decode(errors='replace')}")
            if message.kind != framing.RESPONSE:
                raise wire.WireError(f"a message of kind {message.kind} where a response was expected")
            response = wire.decode_response(message.text, message.blobs, message.fds, fds)
        except TransportError:
            self.broken = True
            message.close_fds()
            raise
        if message.flags & framing.RELEASE_FOLLOWS:
            self._wait_release()
        return response

    def _wait_release(self) -> None:
        """Until the server has closed its copy of the writable file it gave. Should the
        connection fail meanwhile, the server is gone, and its copy with it."""
        try:
            release = self.receiver.receive()
        except (OSError, TransportError):
            release = None
        if release is None or release.kind != framing.RELEASE:
            self.broken = True
            if release is not None:
                release.close_fds()

    def close(self) -> None:
        self.sock.close()

    def __del__(self) -> None:  # its thread ended: close it without a ResourceWarning
        self.sock.close()


class SocketTransport:
    """Implements Transport over SOCK_SEQPACKET connections to a manager, which
    ``connect`` makes (one per calling thread); each is checked by the handshake
    (the server's user, the protocol) before its first request."""

    def __init__(self, connect: Callable[[], socket.socket]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._closed = False

    @classmethod
    def to_path(cls, path: str) -> SocketTransport:
        """Connections to the manager listening at ``path``."""

        def connect() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.connect(path)
            except BaseException:
                sock.close()
                raise
            return sock

        return cls(connect)

    def handle_request(self, request: messages.Request) -> messages.Response:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.broken:
            connection = self._open(connection)
        return connection.call(request)

    def _open(self, broken: _Connection | None) -> _Connection:
        if broken is not None:
            broken.close()
        if self._closed:
            raise TransportError("the transport is closed")
        try:
            sock = self._connect()
        except OSError as e:
            raise TransportError(f"cannot reach the HVFS manager: {e.strerror or e}") from None
        try:
            framing.client_handshake(sock)
        except OSError as e:
            sock.close()
            raise TransportError(f"cannot reach the HVFS manager: {e.strerror or e}") from None
        except BaseException:
            sock.close()
            raise
        connection = _Connection(sock)
        with self._lock:
            self._connections.add(connection)
        self._local.connection = connection
        return connection

    def close(self) -> None:
        """Close every connection; a call still waiting for its answer fails."""
        self._closed = True
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
            connection.close()


def loopback(handler: Callable[[messages.Request], messages.Response]) -> SocketTransport:
    """``handler`` served in this process over socketpairs: the socket transport's whole
    path (encoding, fd passing, a server thread per connection) with no manager
    elsewhere. Each server thread ends when its client's connection closes."""
    from hvfs.api.server import SocketServer

    server = SocketServer(handler)
    return SocketTransport(server.pair)
