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

The handlers themselves are ``hvfs.log_handlers``, installed when ``logging`` is first
imported: a manager defers it (``hvfs.deferred``) until a first record, which most never
have, and every cold ``hvfs run`` waits for its manager's imports.
"""

from __future__ import annotations

import functools
import os

from hvfs import deferred
from hvfs.state import state_directory

LOG_NAME = "manager.log"


def log_path() -> str | None:
    """The manager's log, or None where the state directory is unsafe (that problem is
    the command's to report, as one line, when it needs the directory)."""
    try:
        return os.path.join(state_directory(), LOG_NAME)
    except Exception:
        return None


class LogPath:
    """The log's path, decided when the command starts: later, in the manager's user
    namespace, the process looks like root and would pick root's state directory."""

    def __init__(self) -> None:
        self._path = log_path()

    def get(self) -> str | None:
        return self._path


_configured: LogPath | None = None


def configured() -> LogPath | None:
    """The log's path that ``configure`` decided, if it ran."""
    return _configured


def configure() -> None:
    """Set up hvfs's logging for a command: see the module's docstring. The log's path
    and HVFS_DEBUG are read now; the handlers go in once ``logging`` is imported."""
    global _configured
    path = _configured = LogPath()
    deferred.when_loaded("logging", functools.partial(_install, path, bool(os.environ.get("HVFS_DEBUG"))))


def _install(path: LogPath, debug: bool) -> None:
    from hvfs import log_handlers

    log_handlers.install(path, debug)
