"""What a client sees at the host paths it names, for its manager to compare.

A manager keeps the copy of the mounts its mount namespace was made with. Where the
host's mounts do not propagate to it (a private ``/``, as on a machine without systemd), a
file system mounted after it started is not there for it: it would serve, and keep a
service's files in, what lies under the mount point. The client sends what it sees; a
manager that sees otherwise gives way to a new one, whose namespace is a fresh copy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def seen(paths: Sequence[str]) -> list[list[object]]:
    """What this process sees at each of ``paths``: the device and inode of it, or of its
    nearest existing parent."""
    found: dict[str, list[object]] = {}
    for path in paths:
        while True:
            try:
                st = os.stat(path)
            except OSError:
                parent = os.path.dirname(path)
                if parent == path:
                    break
                path = parent
                continue
            found[path] = [path, st.st_dev, st.st_ino]
            break
    return list(found.values())


def unseen(views: object) -> list[str]:
    """Of the client's ``views``, the paths this process sees otherwise (the manager's side)."""
    differ = []
    for path, dev, ino in views if isinstance(views, list) else ():
        try:
            st = os.stat(str(path))
        except OSError:
            differ.append(str(path))
            continue
        if (st.st_dev, st.st_ino) != (dev, ino):
            differ.append(str(path))
    return differ
