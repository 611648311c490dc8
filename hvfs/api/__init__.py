"""The HVFS API: what a driver asks of the manager, and what the manager answers.

Requests and responses are frozen dataclasses that know nothing of seccomp: the manager
never sees a notification, and the driver never sees a source. Paths are absolute
virtual paths (as the VM names them), decoded with ``os.fsdecode`` so that any byte
string round-trips.

Beside the messages: ``hooks.py``, the contracts by which services take part in requests
(before and after the handler, events, closes), and ``events.py``, the events the
manager publishes after each answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hvfs.api.messages import Access as Access
    from hvfs.api.messages import Ancillary as Ancillary
    from hvfs.api.messages import Bind as Bind
    from hvfs.api.messages import Caller as Caller
    from hvfs.api.messages import Chdir as Chdir
    from hvfs.api.messages import Chmod as Chmod
    from hvfs.api.messages import Chown as Chown
    from hvfs.api.messages import Connect as Connect
    from hvfs.api.messages import Continue as Continue
    from hvfs.api.messages import Control as Control
    from hvfs.api.messages import Credentials as Credentials
    from hvfs.api.messages import Data as Data
    from hvfs.api.messages import Errno as Errno
    from hvfs.api.messages import Exec as Exec
    from hvfs.api.messages import Executed as Executed
    from hvfs.api.messages import Fd as Fd
    from hvfs.api.messages import Link as Link
    from hvfs.api.messages import Lookup as Lookup
    from hvfs.api.messages import Mkdir as Mkdir
    from hvfs.api.messages import Mknod as Mknod
    from hvfs.api.messages import Open as Open
    from hvfs.api.messages import OpenFile as OpenFile
    from hvfs.api.messages import PassedFiles as PassedFiles
    from hvfs.api.messages import Readlink as Readlink
    from hvfs.api.messages import RemoveXattr as RemoveXattr
    from hvfs.api.messages import Rename as Rename
    from hvfs.api.messages import Request as Request
    from hvfs.api.messages import Response as Response
    from hvfs.api.messages import Rmdir as Rmdir
    from hvfs.api.messages import Send as Send
    from hvfs.api.messages import SenderCredentials as SenderCredentials
    from hvfs.api.messages import SetXattr as SetXattr
    from hvfs.api.messages import SocketAddress as SocketAddress
    from hvfs.api.messages import Stat as Stat
    from hvfs.api.messages import Statfs as Statfs
    from hvfs.api.messages import StatfsResult as StatfsResult
    from hvfs.api.messages import StatResult as StatResult
    from hvfs.api.messages import Statx as Statx
    from hvfs.api.messages import StatxResult as StatxResult
    from hvfs.api.messages import Symlink as Symlink
    from hvfs.api.messages import Target as Target
    from hvfs.api.messages import Truncate as Truncate
    from hvfs.api.messages import Unlink as Unlink
    from hvfs.api.messages import Utimens as Utimens
    from hvfs.api.messages import Value as Value
    from hvfs.api.messages import VmPath as VmPath
    from hvfs.api.messages import WouldBlock as WouldBlock
    from hvfs.api.transport import InProcessTransport as InProcessTransport
    from hvfs.api.transport import Transport as Transport

__all__ = [
    "Access",
    "Ancillary",
    "Bind",
    "Caller",
    "Chdir",
    "Chmod",
    "Chown",
    "Connect",
    "Continue",
    "Control",
    "Credentials",
    "Data",
    "Errno",
    "Exec",
    "Executed",
    "Fd",
    "InProcessTransport",
    "Link",
    "Lookup",
    "Mkdir",
    "Mknod",
    "Open",
    "OpenFile",
    "PassedFiles",
    "Readlink",
    "RemoveXattr",
    "Rename",
    "Request",
    "Response",
    "Rmdir",
    "Send",
    "SenderCredentials",
    "SetXattr",
    "SocketAddress",
    "Stat",
    "StatResult",
    "Statfs",
    "StatfsResult",
    "Statx",
    "StatxResult",
    "Symlink",
    "Target",
    "Transport",
    "Truncate",
    "Unlink",
    "Utimens",
    "Value",
    "VmPath",
    "WouldBlock",
]


_TRANSPORT = ("InProcessTransport", "Transport")


def __getattr__(name: str) -> Any:
    """The messages on first use: their forty dataclasses are a third of a client's
    start-up, and a front end (``hvfs run``, which imports ``hvfs.api.choice``) never
    needs them; the manager's first request loads them all at once (a cold manager's
    drivers name the transport before, and its first VM may ask nothing)."""
    if name not in __all__:
        raise AttributeError(f"module 'hvfs.api' has no attribute {name!r}")
    if name in _TRANSPORT:
        from hvfs.api import transport

        for each in _TRANSPORT:
            globals()[each] = getattr(transport, each)
        return globals()[name]
    from hvfs.api import messages

    for each in __all__:
        if each not in _TRANSPORT:
            globals()[each] = getattr(messages, each)
    return globals()[name]
