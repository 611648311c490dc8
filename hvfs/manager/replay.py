"""Changes served again after a manager restart (hvfs.intercept.inflight): the manager
that died may have made them already, between the change and its note of it.

While no manager serves a VM, no served change of its mounts can happen (each waits for
the next manager), so what its file system shows then is what the dead manager left: a
rename whose old name is gone and whose new name is there was made; a name that is gone
was removed; a name made at or after the time the request was received was made by it.
The answer is then the one the change gave. (A change made on the host meanwhile can
mislead this; the window it closes is microseconds wide.)
"""

from __future__ import annotations

import dataclasses
import os

from hvfs import api
from hvfs.manager.resolve import fd_closing, open_object
from hvfs.manager.vm import VmContext

SLACK_NS = 50_000_000  # file times are taken from a coarser clock than the note's


def _stat(vm: VmContext, path: api.VmPath) -> os.stat_result | None:
    try:
        with fd_closing(open_object(vm.rw_root, path, follow=False)) as fd:
            return os.fstat(fd)
    except OSError:
        return None


def _made_since(vm: VmContext, path: api.VmPath, since_ns: int) -> bool:
    st = _stat(vm, path)
    return st is not None and st.st_ctime_ns >= since_ns - SLACK_NS


def already_done(vm: VmContext, request: api.Request) -> api.Response | None:
    """The answer of a change of ``request`` that was made before, or None to serve it."""
    since = request.caller.replayed_since
    match request:
        case api.Rename(old=old, new=new):
            if _stat(vm, old) is None and _stat(vm, new) is not None:
                return api.Value(0)
        case api.Unlink(path=path) | api.Rmdir(path=path):
            if _stat(vm, path) is None:
                return api.Value(0)
        case api.Mkdir(path=path) | api.Mknod(path=path) | api.Symlink(path=path):
            if _made_since(vm, path, since):
                return api.Value(0)
        case api.Link(new=path):
            if _made_since(vm, path, since):
                return api.Value(0)
    return None


def open_again(vm: VmContext, request: api.Open) -> api.Open:
    """An O_CREAT|O_EXCL open whose file was made since it was received opens that file."""
    exclusive = os.O_CREAT | os.O_EXCL
    if request.flags & exclusive == exclusive and _made_since(vm, request.path, request.caller.replayed_since):
        return dataclasses.replace(request, flags=request.flags & ~os.O_EXCL)
    return request
