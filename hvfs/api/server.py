"""The manager's end of the socket transport: serves a ``handle_request`` to clients.

One thread per connection, and one connection per client thread (``SocketTransport``):
a request that blocks (a lookup on a hung network file system) holds only its own
connection, and the thread that serves a connection takes on each caller's credentials
as the in-process driver's would (``hvfs.manager.creds`` is per thread).

Fds: a request's fds arrive as copies, which the server closes once it has sent the
response; the fd an ``Fd`` response gives is sent and then closed, and for a file open
for writing a RELEASE message tells the client that the server's copy is gone (see
``hvfs.api.transport`` for the rules).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
from collections.abc import Callable

from hvfs import deferred
from hvfs.api import framing, messages, wire
from hvfs.api.framing import Message, Receiver

log = deferred.logger("hvfs.api")

Handler = Callable[[messages.Request], messages.Response]


class SocketServer:
    """Serves ``handler`` on every connection it is given, each in a thread of its own."""

    def __init__(self, handler: Handler, *, name: str = "hvfs-api") -> None:
        self._handler = handler
        self._name = name
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def serve(self, connection: socket.socket) -> None:
        """Serve ``connection`` (a connected SOCK_SEQPACKET socket), which the server owns
        from now on, until the client closes it or the server is closed."""
        with self._lock:
            if self._closed:
                connection.close()
                raise ValueError("the server is closed")
            self._connections.add(connection)
            thread = threading.Thread(target=self._run, args=(connection,), name=self._name, daemon=True)
            self._threads.add(thread)
        thread.start()

    def pair(self) -> socket.socket:
        """A new connection to this server, for a client in this process: one end of a
        socketpair, served here; the caller owns the returned end."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.serve(mine)
        except BaseException:
            theirs.close()
            raise
        return theirs

    def listen(self, listener: socket.socket) -> None:
        """Accept connections on ``listener`` (a listening SOCK_SEQPACKET socket, which the
        server owns from now on) and serve each, until the server is closed."""

        def accept() -> None:
            try:
                while True:
                    try:
                        connection, _ = listener.accept()  # non-inheritable, as every socket Python makes
                    except OSError:
                        return  # shut down by close()
                    try:
                        self.serve(connection)
                    except ValueError:
                        return
            finally:
                with self._lock:
                    self._connections.discard(listener)
                    self._threads.discard(threading.current_thread())
                listener.close()

        thread = threading.Thread(target=accept, name=f"{self._name}-accept", daemon=True)
        with self._lock:
            self._connections.add(listener)
            self._threads.add(thread)
        thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving: every connection is shut down (a request being handled is
        answered first), and its thread joined."""
        with self._lock:
            self._closed = True
            connections, threads = list(self._connections), list(self._threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _run(self, connection: socket.socket) -> None:
        try:
            refusal = framing.server_handshake(connection)
            if refusal is not None:
                log.warning("HVFS API: refused a client: %s", refusal)
                return
            receiver = Receiver(connection)
            while True:
                message = receiver.receive()
                if message is None:
                    return
                self._answer(connection, message)
        except wire.WireError as e:
            log.warning("HVFS API: dropped a client that broke the protocol: %s", e)
            _fail(connection, str(e))
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
                log.warning("HVFS API: connection failed: %s", e)
        except Exception:
            log.exception("HVFS API: internal error serving a connection")
        finally:
            with self._lock:
                self._connections.discard(connection)
                self._threads.discard(threading.current_thread())
            connection.close()

    def _answer(self, connection: socket.socket, message: Message) -> None:
        """Serve one request, closing every fd that came with it; ``WireError`` for a
        message that is not one (the connection then ends)."""
        lent = message.fds
        try:
            if message.kind != framing.REQUEST:
                raise wire.WireError(f"a message of kind {message.kind} where a request was expected")
            request = wire.decode_request(message.text, message.blobs, lent)
            response = self._respond(request)
            try:
                text, blobs, given = wire.encode(response, lent)
            except wire.WireError as e:  # a handler broke the fd rules: a bug, answered EIO
                log.error("HVFS API: cannot send %s for %s: %s", response, request, e)
                if isinstance(response, messages.Fd):
                    os.close(response.fd)
                text, blobs, given = wire.encode(messages.Errno(errno.EIO), lent)
            release = False
            try:
                release = any(_writable(fd) for fd in given)
                framing.send(connection, framing.RESPONSE, text, blobs, given,
                             framing.RELEASE_FOLLOWS if release else 0)  # fmt: skip
            finally:
                for fd in given:  # given away: the client's copy is the one left
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if release:
                framing.send(connection, framing.RELEASE, b"", b"", ())
        finally:
            message.close_fds()

    def _respond(self, request: messages.Request) -> messages.Response:
        try:
            return self._handler(request)
        except Exception:  # the handler's own dispatch turns errors into errnos; this is a bug
            log.exception("HVFS API: internal error serving %s", request)
            return messages.Errno(errno.EIO)


def _writable(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY


def _fail(connection: socket.socket, reason: str) -> None:
    """Tell the client why its connection ends, if it still listens."""
    with contextlib.suppress(OSError):
        framing.send(connection, framing.FAILED, reason.encode("utf-8", "replace")[:1000], b"", ())
