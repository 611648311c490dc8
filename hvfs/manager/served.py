"""The paths a request reached, named as the kernel resolved them: what its event says.

A VM names a path as it likes (``./x``, ``../data//y``, ``link/../etc/passwd``); an audit
must name what was served, or a VM could hide what it touched behind a symlink and a
``..``. The kernel knows the answer: an open's path is its fd's own name (readlink of
/proc/self/fd/N, checked to name that very file in the VM's view); another request's is
its parent directory's, opened again in the writable view and named the same way, and
its last component. Where that fails (the parent is
gone, the request failed before it), the path as the VM named it with only the parts
that cannot change its meaning removed (``//``, ``/./``): ``..`` stays, as it must.

Only called when the VM's bus has subscribers: it costs a readlink per open (none for an
open of a plain absolute path, which the handler found by its text: trail.answered); a path the
handler resolved is named from its note (hvfs.manager.trail: the readlink was the
handler's, or none for a stat of a plain absolute path), any other costs an openat2 and a
readlink (and an openat2 and two fstat more where the VM's roots are not named from
themselves).
"""

from __future__ import annotations

import functools
import os

from hvfs import api
from hvfs.manager.resolve import absolute, fd_closing, fd_name, open_object, parent
from hvfs.manager.trail import Trail
from hvfs.manager.vm import VmContext

_DELETED = " (deleted)"  # what readlink adds for a file removed since it was opened


def tidy(path: str) -> str:
    """``path`` without empty and ``.`` components; ``..`` is kept (behind a symlink it does
    not mean the lexical parent)."""
    if not path.startswith("/"):
        return path  # not a VM path: a symlink's target, an abstract socket's name
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def _vm_name(vm: VmContext, fd: int) -> str | None:
    """The VM path of the file ``fd`` holds, if the kernel's name for it is one: readlink
    names it from the root of the mount tree the fd came from, which is the VM's own root
    for a VM that pivoted into it, but not always (a root the VM only chrooted into is
    named from the host's). So the name is checked: in the VM's view it must be this file;
    unless the VM's roots themselves read as "/" (``_roots_named_from_themselves``): then
    every file beneath them is named from them, and the check (an openat2 and two fstat
    on every audited request) proves nothing more."""
    try:
        name = fd_name(fd)
    except OSError:
        return None
    if not name.startswith("/") or name.endswith(_DELETED):
        return None
    if _roots_named_from_themselves(vm):
        return name
    try:
        with fd_closing(open_object(vm.rw_root, absolute(name), follow=False)) as found:
            same = _identity(os.fstat(found)) == _identity(os.fstat(fd))
    except OSError:
        return None
    return name if same else None


def _roots_named_from_themselves(vm: VmContext) -> bool:
    """Whether both roots a served fd comes from (the writable view, the VM's own root)
    read as "/": asked once per VM."""
    known = vm.roots_named_from_themselves
    if known is None:
        try:
            known = all(os.readlink(f"/proc/self/fd/{root}") == "/" for root in (vm.rw_root, vm.vm_root))
        except OSError:
            known = False
        vm.roots_named_from_themselves = known
    return known


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _resolved(vm: VmContext, path: api.VmPath, head: str | None = None) -> str:
    """``head``: the name of the parent directory the handler resolved and acted in, read
    back when it did (hvfs.manager.trail), if the VM's roots name their files."""
    last = path.name.rstrip("/").rpartition("/")[2]
    if last in ("", ".", ".."):
        return tidy(str(path))
    if head is None or head.endswith(_DELETED):
        try:
            with parent(vm.rw_root, path) as (directory, _):
                head = _vm_name(vm, directory)
        except OSError:
            head = None
    if head is None:
        return tidy(str(path))
    return f"{head.rstrip('/')}/{last}"


def _objects(request: api.Request) -> tuple[api.VmPath | None, ...]:
    """The VmPath behind each of ``request_paths(request)``, None where there is none."""
    match request:
        case api.Rename():
            return (request.old, request.new)
        case api.Link():
            return (request.old if isinstance(request.old, api.VmPath) else None, request.new)
        case api.Symlink():
            return (request.path, None)  # the target is stored as given, never resolved
    first = getattr(request, "path", None) or getattr(request, "target", None)
    return (first if isinstance(first, api.VmPath) else None,)


@functools.cache
def several() -> frozenset[type]:
    """Requests whose paths are not their ``path`` alone (see request_paths, _objects): by
    name, as the messages load with a first request (hvfs.api)."""
    return frozenset(
        getattr(api, name) for name in ("Rename", "Link", "Symlink", "Executed", "Bind", "Connect", "Send")
    )


def served_paths(
    vm: VmContext, request: api.Request, response: api.Response, noted: Trail | None = None
) -> tuple[str, ...]:
    """``request_paths(request)``, each as the kernel resolved it for the VM (see above);
    with what the handler ``noted``, the directories it resolved are not resolved again."""
    if noted is not None and noted.answer is not None and type(request) not in several():
        return (noted.answer,)  # the handler found the request's one path by its text
    if type(request) is api.Open and type(response) is api.Fd:  # an open names one path
        own = _vm_name(vm, response.fd)
        if own is not None:
            return (own,)
    if noted is not None and len(noted.names) == 1 and type(request) not in several():
        # The usual audited request on a name (a stat, an unlink, a mkdir): what the loop
        # below makes of its one noted name, in a fifth of the time.
        name = noted.names[0]
        path = getattr(request, "path", None)
        if name.key is path and isinstance(path, api.VmPath) and name.last and name.head is not None:
            last = path.name.rstrip("/").rpartition("/")[2]
            if last not in ("", ".", "..") and not name.head.endswith(_DELETED) and _roots_named_from_themselves(vm):
                return (f"{name.head.rstrip('/')}/{last}",)
    from hvfs.api.events import request_paths  # with the audit, which most VMs lack

    named = request_paths(request)
    objects = _objects(request)
    paths = []
    for i, path in enumerate(named):
        known = objects[i] if i < len(objects) else None
        if known is not None:
            head = noted.head_of(known) if noted is not None and _roots_named_from_themselves(vm) else None
            paths.append(_resolved(vm, known, head))
        else:
            paths.append(path if isinstance(request, api.Symlink) else tidy(path))
    return tuple(paths)
