"""hvfs's log handlers (hvfs.logs says where each message goes): imported with ``logging``
itself, which a manager defers until its first record."""

from __future__ import annotations

import logging
import os
import sys
import threading

from hvfs import logs
from hvfs.logs import LogPath

STDERR_ERRORS = 10  # internal errors told on stderr; the rest only in the log
_LINE = 160  # characters of a message on stderr


class _ManagerLog(logging.Handler):
    """Appends to the manager's log, opened on the first record (most runs have none)."""

    def __init__(self, path: LogPath) -> None:
        super().__init__(logging.WARNING)
        self.path = path
        self._fd: int | None = None
        self.setFormatter(logging.Formatter("%(asctime)s pid %(process)d %(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = (self.format(record) + "\n").encode(errors="replace")
            if self._fd is None:  # Handler.handle holds the handler's lock around emit
                path = self.path.get()
                if path is None:
                    return
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                self._fd = os.open(path, flags, 0o600)
            os.write(self._fd, text)
        except OSError:
            self.handleError(record)


class OneLine(logging.Formatter):
    """A record as one line for stderr: no traceback, but where to find it."""

    def __init__(self, path: LogPath | None = None) -> None:
        super().__init__("hvfs: %(message)s")
        path = path or logs.configured() or LogPath()
        self.path = path
        self._errors = 0
        self._lock = threading.Lock()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if record.exc_info is None and record.levelno < logging.ERROR:
            return f"hvfs: {message}"
        with self._lock:
            self._errors += 1
            count = self._errors
        if count > STDERR_ERRORS:
            return ""
        if len(message) > _LINE:
            message = message[: _LINE - 1] + "…"
        path = self.path.get()
        if path is None:
            return f"hvfs: {message}; run again with HVFS_DEBUG=1 for details"
        more = "; further ones only there" if count == STDERR_ERRORS else ""
        return f"hvfs: {message}; details in {path}{more}"


class _Quiet(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that skips the records its formatter made empty."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if line:
            try:
                self.stream.write(line + self.terminator)
                self.flush()
            except OSError:
                self.handleError(record)


def install(path: LogPath, debug: bool) -> None:
    """The root logger's level and handlers: one line each on stderr, the rest in the log."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    console = _Quiet(sys.stderr)
    if debug:
        console.setFormatter(logging.Formatter("hvfs: %(message)s"))
    else:
        console.setFormatter(OneLine(path))
    root.addHandler(console)
    root.addHandler(_ManagerLog(path))
    logging.raiseExceptions = debug  # a full disk under the log must not print a traceback
