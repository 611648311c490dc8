"""Where hvfs's own messages go: one line each on stderr, details in the manager's log.

With ``hvfs run`` the manager's stderr is the user's terminal, which is also the VM's
stderr: whatever the manager prints there lands in the VM's output, in the middle of a
program's own. So stderr gets one short line per message (the warnings a user acts on:
a refused host socket, a refused change of a file from outside the VM), and an internal
error gets one line that says where its details are: the manager's log,
``manager.log`` in hvfs's state directory (``hvfs.state.state_directory()``: /run/hvfs as
root, ``$XDG_RUNTIME_DIR/hvfs`` otherwise), which takes every warning and error with its
traceback, made on the first one (mode 0600). ``HVFS_DEBUG=1`` prints everything on
stderr too, tracebacks included.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from hvfs.state import state_directory

LOG_NAME = "manager.log"
STDERR_ERRORS = 10  # internal errors told on stderr; the rest only in the log
_LINE = 160  # characters of a message on stderr


def log_path() -> str | None:
    """The manager's log, or None where the state directory is unsafe (that problem is
    the command's to report, as one line, when it needs the directory)."""
    try:
        return os.path.join(state_directory(), LOG_NAME)
    except Exception:
        return None


class _Path:
    """The log's path, decided when the command starts: later, in the manager's user
    namespace, the process looks like root and would pick root's state directory."""

    def __init__(self) -> None:
        self._path = log_path()

    def get(self) -> str | None:
        return self._path


class _ManagerLog(logging.Handler):
    """Appends to the manager's log, opened on the first record (most runs have none)."""

    def __init__(self, path: _Path) -> None:
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

    def __init__(self, path: _Path | None = None) -> None:
        super().__init__("hvfs: %(message)s")
        path = path or _configured or _Path()
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


_configured: _Path | None = None


def configure() -> None:
    """Set up hvfs's logging for a command: see the module's docstring."""
    global _configured
    root = logging.getLogger()
    debug = bool(os.environ.get("HVFS_DEBUG"))
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    path = _configured = _Path()
    console = _Quiet(sys.stderr)
    if debug:
        console.setFormatter(logging.Formatter("hvfs: %(message)s"))
    else:
        console.setFormatter(OneLine(path))
    root.addHandler(console)
    root.addHandler(_ManagerLog(path))
    logging.raiseExceptions = debug  # a full disk under the log must not print a traceback
