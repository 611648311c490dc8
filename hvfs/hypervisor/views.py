"""What a client sees at the host paths it names, for its manager to compare.

A manager keeps the copy of the mounts its mount namespace was made with. Where the
host's mounts do not propagate to it (a private ``/``, as on a machine without systemd), a
file system mounted after it started is not there for it: it would serve, and keep a
service's files in, what lies under the mount point. The client sends what it sees; a
manager that sees otherwise gives way to a new one, whose namespace is a fresh copy.

What is seen at a path is its device and inode. At a path a source binds recursively (a
host directory: ``bound``), it is also the mounts below it (``mounts_below``): a file
system mounted or unmounted below a volume since the manager started changes nothing at
the volume's own path, yet the bind takes the mounts below along, so that a VM would see
what the host no longer shows there. Each side reads only its own mount table: the
client's is its own process's, sent over a connection the manager has checked is its own
user's; the manager never reads another process's (whose pid could be anyone's by then)
nor a file that someone else could write. What the comparison decides is only whether
this manager serves; a new one copies the mounts of the client that started it. What the
manager mounts itself (the views it stages in its state directory, a FUSE client's mount:
``own_directory``) is in no client's table and left out of both lists.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hvfs._sys.mountinfo import Below


def seen(paths: Sequence[str], bound: Collection[str] = ()) -> list[list[object]]:
    """What this process sees at each of ``paths``: the device and inode of it, or of its
    nearest existing parent; for a path of ``bound`` that exists, the mounts below it too."""
    found: dict[str, list[object]] = {}
    for named in paths:
        path = named
        while True:
            try:
                st = os.stat(path)
            except OSError:
                parent = os.path.dirname(path)
                if parent == path:
                    break
                path = parent
                continue
            view: list[object] = [path, st.st_dev, st.st_ino]
            below = _mounts_below(path) if path == named and path in bound else None
            if below is not None:
                view.append(below.mounts)
            if len(view) > len(found.get(path, ())):
                found[path] = view
            break
    return list(found.values())


def unseen(views: object) -> list[str]:
    """Of the client's ``views``, the paths this process sees otherwise (the manager's side)."""
    differ = []
    for view in views if isinstance(views, list) else ():
        if not (isinstance(view, list) and len(view) in (3, 4)):
            continue
        path, dev, ino, *below = view
        try:
            st = os.stat(str(path))
        except OSError:
            differ.append(str(path))
            continue
        if (st.st_dev, st.st_ino) != (dev, ino) or (below and not _same_mounts(str(path), below[0])):
            differ.append(str(path))
    return differ


def _same_mounts(path: str, theirs: object) -> bool:
    """Whether the mounts below ``path`` here are those the client listed (in any order:
    the kernel lists a copied namespace's mounts in an order of its own)."""
    ours = _mounts_below(path)
    listed = [str(entry) for entry in theirs] if isinstance(theirs, list) else None
    return listed is not None and ours is not None and sorted(ours.mounts) == sorted(ours.theirs(listed))


def _mounts_below(path: str) -> Below | None:
    """hvfs._sys.mountinfo's, imported on a bound path's first comparison: ``hvfs run -- true``
    binds nothing and never needs it (tests/test_startup.py counts its modules)."""
    from hvfs._sys.mountinfo import mounts_below

    return mounts_below(path)
