"""What services see of a request: its operation, its paths and its flags.

One table for events, fault rules and the scanner, so that ``--op`` and ``op=`` name the
same things and a path glob sees the same paths everywhere.
"""

from __future__ import annotations

import errno
import os
import typing

from hvfs import api
from hvfs.api.messages import operation

READ = "read"  # not a request type: an Open for reading only (served in --strict mode)
OPERATIONS = frozenset(t.__name__.lower() for t in typing.get_args(api.Request)) | {READ}
# Events the services publish themselves, beside the requests' own: a file the scanner
# quarantined, a latency rule that delayed a request (an errno rule shows in the result),
# a version the backup skipped (its result says which bound: "skipped: …").
QUARANTINE, FAULT, BACKUP = "quarantine", "fault", "backup"
SERVICE_EVENTS = frozenset({QUARANTINE, FAULT, BACKUP})


def target_path(target: api.Target) -> str:
    """The VM path of a path or of an open file (as the VM named it when it opened it)."""
    return target.path if isinstance(target, api.OpenFile) else str(target)


def request_paths(request: api.Request) -> tuple[str, ...]:
    """The absolute VM paths a request names, the one it acts on first: (old, new) for
    rename and link, (link, target as stored) for symlink, the unix-socket path a bind,
    connect or send names (none for other addresses), one path for the others."""
    match request:
        case api.Rename():
            return (str(request.old), str(request.new))
        case api.Link():
            return (target_path(request.old), str(request.new))
        case api.Symlink():
            return (str(request.path), request.target)
        case api.Access() | api.Readlink() | api.Statfs() | api.Exec():
            return (target_path(request.path),)
        case api.Executed():
            return (request.file.path,)
        case api.Chmod() | api.Chown() | api.Utimens() | api.SetXattr() | api.RemoveXattr():
            return (target_path(request.target),)
        case api.Bind() | api.Connect() | api.Send():
            address = request.address
            return (str(address.path),) if address is not None and address.path is not None else ()
        case _:
            return (str(request.path),)


def request_flags(request: api.Request) -> int:
    """The request's flags argument: open's O_* flags, statx's and access's AT_* flags,
    rename's RENAME_* flags, setxattr's XATTR_* flags, a send's MSG_* flags; 0 for
    requests without one."""
    if isinstance(request, api.Open | api.Statx | api.Access | api.Rename | api.SetXattr | api.Send):
        return request.flags
    return 0


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


def errno_name(code: int) -> str:
    """``EIO`` for 5; ``E1234`` for a number Python does not name."""
    return errno.errorcode.get(code, f"E{code}")


def parse_errno(text: str) -> int:
    """An errno from its name (``EIO``, ``eio``) or number (``5``). Raises ValueError."""
    if text.isdigit():
        return int(text)
    code = getattr(errno, text.upper(), None)
    if not isinstance(code, int) or not text.upper().startswith("E"):
        raise ValueError(f"unknown errno {text!r}: use a name such as EIO, ENOSPC, EDQUOT, EACCES or EROFS")
    return code
