"""The open family: open, openat, creat and openat2 (``hvfs.manager.handlers.opening``)."""

from __future__ import annotations

from hvfs import api
from hvfs._sys.abi import (
    AT_FDCWD,
    O_CREAT,
    O_TRUNC,
    O_WRONLY,
    OPEN_HOW,
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    U32_MASK,
)
from hvfs.intercept.decoders.context import Args, Context, Decoded, decodes, signed32

CREAT_FLAGS = O_CREAT | O_WRONLY | O_TRUNC


def _open(c: Context, dirfd: int, path_at: int, flags: int, mode: int) -> Decoded:
    caller = c.caller()
    path, via = c.opened(path_at, dirfd)
    return api.Open(caller=caller, path=path, flags=flags & U32_MASK, mode=mode & U32_MASK, via=via), None


@decodes("Open")
def open_(c: Context, a: Args) -> Decoded:
    return _open(c, AT_FDCWD, a[0], a[1], a[2])


@decodes("Open")
def openat(c: Context, a: Args) -> Decoded:
    return _open(c, a[0], a[1], a[2], a[3])


@decodes("Open")
def creat(c: Context, a: Args) -> Decoded:
    return _open(c, AT_FDCWD, a[0], CREAT_FLAGS, a[1])


@decodes("Open")
def openat2(c: Context, a: Args) -> Decoded:
    dirfd, path_at = signed32(a[0]), a[1]
    flags, mode, resolve = c.extensible_struct(a[2], a[3], OPEN_HOW)
    given = c.tracee.read_path(path_at)
    via: api.OpenFile | None
    if resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT):
        path = c.located(dirfd, given)  # even an absolute path is the dirfd's
        via = None
    else:
        magic_links = not resolve & (RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)
        path = c.given_path(dirfd, given)
        via = c.own_file(path) if magic_links else None
        if via is None:
            path = c.resolved(path, magic_links=magic_links)
    return api.Open(caller=c.caller(), path=path, flags=flags, mode=mode, resolve=resolve, legacy=False, via=via), None
