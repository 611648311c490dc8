"""Request handlers: one function per request type, each stating the errnos it may answer.

Handlers raise ``OSError`` with the kernel's errno and return a response; the manager's
dispatch turns exceptions into ``Errno`` in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hvfs import api
from hvfs.manager.handlers import attrs, names, opening, query, sending, sockets
from hvfs.manager.vm import VmContext

Handler = Callable[[VmContext, Any], api.Response]

HANDLERS: dict[type, Handler] = {
    api.Open: opening.handle_open,
    api.Mkdir: names.handle_mkdir,
    api.Mknod: names.handle_mknod,
    api.Unlink: names.handle_unlink,
    api.Rmdir: names.handle_rmdir,
    api.Rename: names.handle_rename,
    api.Link: names.handle_link,
    api.Symlink: names.handle_symlink,
    api.Chmod: attrs.handle_chmod,
    api.Chown: attrs.handle_chown,
    api.Truncate: attrs.handle_truncate,
    api.Utimens: attrs.handle_utimens,
    api.SetXattr: attrs.handle_setxattr,
    api.RemoveXattr: attrs.handle_removexattr,
    api.Stat: query.handle_stat,
    api.Statx: query.handle_statx,
    api.Statfs: query.handle_statfs,
    api.Access: query.handle_access,
    api.Readlink: query.handle_readlink,
    api.Chdir: query.handle_chdir,
    api.Exec: query.handle_exec,
    api.Executed: query.handle_executed,
    api.Lookup: query.handle_lookup,
    api.Bind: sockets.handle_bind,
    api.Connect: sockets.handle_connect,
    api.Send: sending.handle_send,
}
