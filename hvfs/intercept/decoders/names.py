"""Calls that create, remove or move names: mkdir, mknod, unlink, rmdir, rename, link and
symlink, with their *at forms (``hvfs.manager.handlers.names``)."""

from __future__ import annotations

from hvfs import api
from hvfs._sys.abi import AT_EMPTY_PATH, AT_REMOVEDIR, AT_SYMLINK_FOLLOW, S_IALLUGO
from hvfs.intercept.decoders.context import Args, Context, Decoded, check_flags, decodes, signed32, unsigned32


@decodes("Mkdir")
def mkdir(c: Context, a: Args) -> Decoded:
    return api.Mkdir(caller=c.caller(), path=c.path(a[0]), mode=a[1] & S_IALLUGO), None


@decodes("Mkdir")
def mkdirat(c: Context, a: Args) -> Decoded:
    return api.Mkdir(caller=c.caller(), path=c.path(a[1], a[0]), mode=a[2] & S_IALLUGO), None


@decodes("Mknod")
def mknod(c: Context, a: Args) -> Decoded:
    return api.Mknod(caller=c.caller(), path=c.path(a[0]), mode=unsigned32(a[1]), device=a[2]), None


@decodes("Mknod")
def mknodat(c: Context, a: Args) -> Decoded:
    return api.Mknod(caller=c.caller(), path=c.path(a[1], a[0]), mode=unsigned32(a[2]), device=a[3]), None


@decodes("Unlink")
def unlink(c: Context, a: Args) -> Decoded:
    return api.Unlink(caller=c.caller(), path=c.path(a[0])), None


@decodes("Rmdir")
def rmdir(c: Context, a: Args) -> Decoded:
    return api.Rmdir(caller=c.caller(), path=c.path(a[0])), None


@decodes("Unlink", "Rmdir")
def unlinkat(c: Context, a: Args) -> Decoded:
    flags = check_flags(a[2], AT_REMOVEDIR)
    path = c.path(a[1], a[0])
    caller = c.caller()
    if flags & AT_REMOVEDIR:
        return api.Rmdir(caller=caller, path=path), None
    return api.Unlink(caller=caller, path=path), None


@decodes("Rename")
def rename(c: Context, a: Args) -> Decoded:
    return api.Rename(caller=c.caller(), old=c.path(a[0]), new=c.path(a[1])), None


@decodes("Rename")
def renameat(c: Context, a: Args) -> Decoded:
    return api.Rename(caller=c.caller(), old=c.path(a[1], a[0]), new=c.path(a[3], a[2])), None


@decodes("Rename")
def renameat2(c: Context, a: Args) -> Decoded:
    return api.Rename(caller=c.caller(), old=c.path(a[1], a[0]), new=c.path(a[3], a[2]), flags=unsigned32(a[4])), None


@decodes("Link")
def link(c: Context, a: Args) -> Decoded:
    return api.Link(caller=c.caller(), old=c.path(a[0]), new=c.path(a[1])), None


@decodes("Link")
def linkat(c: Context, a: Args) -> Decoded:
    flags = check_flags(a[4], AT_SYMLINK_FOLLOW | AT_EMPTY_PATH)
    follow = bool(flags & AT_SYMLINK_FOLLOW)
    old: api.Target
    if follow and not flags & AT_EMPTY_PATH:
        # An O_TMPFILE file, or another deleted one, is linked in by its fd's magic link.
        given = c.given_path(signed32(a[0]), c.tracee.read_path(a[1]))
        old = c.own_file(given) or c.resolved(given)
    else:
        old = c.target(a[0], a[1], flags)
    new = c.path(a[3], a[2])
    return api.Link(caller=c.caller(), old=old, new=new, follow=follow), None


@decodes("Symlink")
def symlink(c: Context, a: Args) -> Decoded:
    return api.Symlink(caller=c.caller(), target=c.tracee.read_path(a[0]), path=c.path(a[1])), None


@decodes("Symlink")
def symlinkat(c: Context, a: Args) -> Decoded:
    return api.Symlink(caller=c.caller(), target=c.tracee.read_path(a[0]), path=c.path(a[2], a[1])), None
