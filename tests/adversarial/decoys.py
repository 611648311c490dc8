"""Host files that an escape would change, and a record of them exact enough to tell.

A decoy has known content, mode, owner, times and an extended attribute; it belongs to
the user hvfs runs as, so that the manager itself could change it, had a path led it
there. The record of a tree holds every entry's kind, content, mode, owner, mtime, ctime
(which any chmod, chown, utimes, xattr or link change moves, even to the same value) and
xattrs, the directories' included: an entry added or removed shows in its directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from tests.adversarial.conftest import Attacker

CONTENT = b"the host's own decoy\n"
TIMES_NS = (1_000_000_000 * 10**9, 1_000_000_000 * 10**9)


def plant(directory: Path, names: Iterable[str], attacker: Attacker) -> None:
    """``directory`` (made if missing) with a decoy file for each of ``names``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_bytes(CONTENT)
        os.chmod(path, 0o644)
        os.setxattr(path, "user.hvfs", b"kept")
        os.utime(path, ns=TIMES_NS)
    attacker.give(directory)


Entry = tuple[object, ...]


def record(root: Path) -> dict[str, Entry]:
    """Every entry under ``root`` and ``root`` itself, as exactly as the host can see it."""
    entries: dict[str, Entry] = {}
    paths = [root, *sorted(root.rglob("*"))]
    for path in paths:
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            what: object = path.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            what = os.readlink(path)
        else:
            what = None
        xattrs = {} if stat.S_ISLNK(st.st_mode) else {n: os.getxattr(path, n) for n in os.listxattr(path)}
        entries[str(path.relative_to(root))] = (
            stat.S_IFMT(st.st_mode),
            what,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            st.st_ctime_ns,
            xattrs,
        )
    return entries


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """What differs between two records: one line per entry added, removed or changed."""
    lines = [f"new: {name}" for name in sorted(after.keys() - before.keys())]
    lines += [f"gone: {name}" for name in sorted(before.keys() - after.keys())]
    lines += [
        f"changed: {name}: {before[name]} -> {after[name]}"
        for name in sorted(before.keys() & after.keys())
        if before[name] != after[name]
    ]
    return lines
