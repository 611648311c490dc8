"""The ClamAV engine: content sent to a running clamd over its unix socket (INSTREAM).

Optional: hvfs does not install ClamAV. ``ClamdEngine()`` finds clamd's socket where
Debian and Fedora put it, or takes one, and raises EngineUnavailable when no clamd
answers there. The protocol (clamd(8)): ``zINSTREAM\\0``, then chunks each preceded by its
length as 4 big-endian bytes, then a zero length; the reply is ``stream: OK`` or
``stream: NAME FOUND``, ending with a NUL. clamd refuses streams over its
StreamMaxLength (ClamAV 1.4's default is 100 MB; Debian's clamd.conf sets 25 MB)
with an error, which becomes a ScanError.
"""

from __future__ import annotations

import os
import socket
import struct

from hvfs.services.scan.engines import Detection, EngineUnavailable, ScanError

SOCKETS = ("/run/clamav/clamd.ctl", "/var/run/clamav/clamd.ctl", "/run/clamd.scan/clamd.sock")
_CHUNK = 1 << 16


class ClamdEngine:
    """Implements Engine through clamd at ``socket_path`` (default: the first of SOCKETS
    that exists). Each scan opens its own connection, so scans from many threads run at
    once, as clamd's threads allow. Raises EngineUnavailable when clamd does not answer."""

    name = "clamav"

    def __init__(self, socket_path: str | None = None, *, timeout: float = 30.0) -> None:
        found = socket_path or next((path for path in SOCKETS if os.path.exists(path)), None)
        if found is None:
            raise EngineUnavailable(
                f"no clamd socket at {', '.join(SOCKETS)}: install and start clamd (apt install clamav-daemon)"
            )
        self.socket_path = found
        self._timeout = timeout
        try:
            reply = self._command(b"zPING\0")
        except OSError as e:
            raise EngineUnavailable(f"clamd does not answer at {found}: {e.strerror or e}") from None
        if reply != "PONG":
            raise EngineUnavailable(f"{found} is not clamd: it answered {reply!r} to PING")

    def scan(self, data: bytes) -> Detection | None:
        view = memoryview(data)
        chunks = (view[i : i + _CHUNK] for i in range(0, len(data), _CHUNK))
        framed = (part for chunk in chunks for part in (struct.pack("!I", len(chunk)), chunk))
        try:
            reply = self._command(b"zINSTREAM\0", *framed, struct.pack("!I", 0))
        except OSError as e:
            raise ScanError(f"clamd at {self.socket_path} failed: {e.strerror or e}") from None
        return parse_reply(reply)

    def _command(self, *message: bytes | memoryview) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(self._timeout)
            connection.connect(self.socket_path)
            try:
                for part in message:
                    connection.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                # clamd answers a stream over its StreamMaxLength with an error and closes
                # while we still send: that answer, already here, says why.
                reply = _read_reply(connection)
                if not reply:
                    raise
                return reply
            return _read_reply(connection)


def _read_reply(connection: socket.socket) -> str:
    reply = b""
    while not reply.endswith(b"\0"):
        part = connection.recv(4096)
        if not part:
            break
        reply += part
    return reply.rstrip(b"\0").decode(errors="replace")


def parse_reply(reply: str) -> Detection | None:
    """The detection in an INSTREAM reply. Raises ScanError for an ERROR or unknown reply."""
    _, _, verdict = reply.partition(": ")
    if verdict == "OK":
        return None
    if verdict.endswith(" FOUND"):
        return Detection("clamav", verdict.removesuffix(" FOUND"))
    raise ScanError(f"clamd: {reply}")
