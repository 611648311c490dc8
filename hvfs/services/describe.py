"""What services name of a request: operations, as ``--op`` and ``op=`` spell them, and
errnos. A request's paths and flags are read by hvfs.api.events, for events and fault
rules alike, so that a path glob sees the same paths everywhere.
"""

from __future__ import annotations

import errno
import os
import typing

from hvfs import api
from hvfs.api.events import LOST
from hvfs.api.messages import operation

READ = "read"  # not a request type: an Open for reading only (served in --strict mode)
OPERATIONS = frozenset(t.__name__.lower() for t in typing.get_args(api.Request)) | {READ}
# Events the services publish themselves, beside the requests' own: a file the scanner
# quarantined, a latency rule that delayed a request (an errno rule shows in the result),
# a version the backup skipped (its result says which bound: "skipped: …"), and a VM a new
# manager took back after the one before died or was replaced: what the VM did between
# that manager's last event and this one went unaudited, except the requests it had taken
# and not answered, which the new one serves again. And the bus's own: events of a VM
# dropped because they could not be recorded in time (``value`` of them; hvfs.api.ring).
QUARANTINE, FAULT, BACKUP, RESUME = "quarantine", "fault", "backup", "resume"
SERVICE_EVENTS = frozenset({QUARANTINE, FAULT, BACKUP, RESUME, LOST})


def is_read(request: api.Request) -> bool:
    """An open for reading only: no write access, no O_CREAT or O_TRUNC, not O_PATH."""
    if not isinstance(request, api.Open):
        return False
    if request.flags & (os.O_CREAT | os.O_TRUNC | os.O_PATH):
        return False
    return request.flags & os.O_ACCMODE == os.O_RDONLY


def operations(request: api.Request) -> tuple[str, ...]:
    """The names a rule's ``op`` may use for this request: its operation() name, and
    "read" too for an open for reading."""
    name = operation(request)
    return (name, READ) if is_read(request) else (name,)


def parse_errno(text: str) -> int:
    """An errno from its name (``EIO``, ``eio``) or number (``5``). Raises ValueError."""
    if text.isdigit():
        return int(text)
    code = getattr(errno, text.upper(), None)
    if not isinstance(code, int) or not text.upper().startswith("E"):
        raise ValueError(f"unknown errno {text!r}: use a name such as EIO, ENOSPC, EDQUOT, EACCES or EROFS")
    return code
