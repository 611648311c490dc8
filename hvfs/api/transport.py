"""How requests reach the manager: one small interface, several implementations.

Fd ownership, which every transport follows alike (``InProcessTransport`` by passing the
very objects, ``SocketTransport`` by SCM_RIGHTS; ``hvfs.testing.MockTransport`` checks it):

1. The fds of a request (every ``OpenFile.fd`` in it, those of a ``Send``'s control
   messages included) are lent. The caller of ``handle_request`` owns them and keeps
   them open until the call has returned, and for as long as it waits on a
   ``WouldBlock`` that names them; the manager uses them while it handles the request
   and neither closes nor keeps them (it duplicates what it must keep). Over a socket
   the server gets copies, and closes them once it has sent the response.
2. The fd of an ``Fd`` response is given: it belongs to the caller of
   ``handle_request`` from the moment the call returns, and the caller closes it (the
   driver installs it in the VM first). For a file open for writing, the manager holds
   no other reference by then, so that the VM's last close is the file's last (inotify's
   IN_CLOSE_WRITE, ETXTBSY on an exec right after writing); over a socket the client
   waits for the server's RELEASE. A read-only file's other references may outlive
   the call for a moment.
3. A ``WouldBlock`` response names only fds of its own request (``fd``, and the open
   files of ``again``), lent back: they are still the caller's, with the numbers the
   caller gave them. Over a socket they travel as references to the request's fds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: the messages load with a first request
    from hvfs.api.messages import Request, Response


class Transport(Protocol):
    def handle_request(self, request: Request) -> Response:
        """Deliver ``request`` and return the manager's answer. Never raises for an errno;
        raises ``TransportError`` when the manager cannot be reached or breaks the protocol."""
        ...

    def close(self) -> None: ...


class TransportError(Exception):
    """The manager is gone, refused the connection, or broke the protocol: a failure of
    the driver's link to it, never an errno of the request."""


class ProtocolMismatch(TransportError):
    """Client and manager speak different versions of the HVFS API."""


class InProcessTransport:
    """Implements Transport by calling the manager in the driver's own thread."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self._handler = handler

    def handle_request(self, request: Request) -> Response:
        return self._handler(request)

    def close(self) -> None:
        pass
