"""A transport for unit tests: ``MockTransport``."""

from __future__ import annotations

import fcntl
from collections.abc import Callable

from hvfs import api
from hvfs.api import wire
from hvfs.api.transport import TransportError


class MockTransport:
    """Implements Transport by calling ``handler`` in the caller's thread, as httpx's
    MockTransport does, and records every exchange in ``exchanges``.

    It holds the handler to what the socket transport would: every request and response
    must be encodable, a response may lend back only its request's fds and must not give
    one of them away, and the request's fds must still be open once the handler returns
    (``hvfs.api.transport`` states the rules). A breach raises ``TransportError``."""

    def __init__(self, handler: Callable[[api.Request], api.Response]) -> None:
        self._handler = handler
        self.exchanges: list[tuple[api.Request, api.Response]] = []
        self.closed = False

    def handle_request(self, request: api.Request) -> api.Response:
        if self.closed:
            raise TransportError("the transport is closed")
        _, _, lent = wire.encode(request)
        response = self._handler(request)
        wire.encode(response, lent)
        for fd in lent:
            try:
                fcntl.fcntl(fd, fcntl.F_GETFD)
            except OSError:
                raise TransportError(f"the handler closed fd {fd}, which the request only lent") from None
        self.exchanges.append((request, response))
        return response

    def close(self) -> None:
        self.closed = True

    @property
    def requests(self) -> list[api.Request]:
        return [request for request, _ in self.exchanges]
