"""How requests reach the manager: one small interface, several implementations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hvfs.api.messages import Request, Response


class Transport(Protocol):
    def handle_request(self, request: Request) -> Response:
        """Deliver ``request`` and return the manager's answer. Never raises for an errno."""
        ...

    def close(self) -> None: ...


class InProcessTransport:
    """Implements Transport by calling the manager in the driver's own thread."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self._handler = handler

    def handle_request(self, request: Request) -> Response:
        return self._handler(request)

    def close(self) -> None:
        pass
