"""Subordinate ids: what lets a rootless VM have more users than the one running it."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass


def _which(program: str) -> str | None:
    import shutil  # with bz2 and lzma: 2 ms of every manager's start, for rootless id maps only

    return shutil.which(program)


@dataclass(frozen=True)
class SubordinateIds:
    """A user's subordinate uids and gids (/etc/subuid, /etc/subgid)."""

    uid_start: int
    uid_count: int
    gid_start: int
    gid_count: int

    @property
    def count(self) -> int:
        """Ids a VM can use: its root plus as many subordinates as both maps allow."""
        return 1 + min(self.uid_count, self.gid_count)


def _first_range(path: str, names: tuple[str, ...]) -> tuple[int, int] | None:
    try:
        with open(path) as f:
            for line in f:
                owner, _, rest = line.strip().partition(":")
                start, _, count = rest.partition(":")
                if owner in names and start.isdigit() and count.isdigit() and int(count) > 0:
                    return int(start), int(count)
    except OSError:
        return None
    return None


def lookup(uid: int) -> SubordinateIds | None:
    """The subordinate ids of ``uid`` when newuidmap/newgidmap can grant them, else None."""
    if not (_which("newuidmap") and _which("newgidmap")):
        return None
    try:
        names: tuple[str, ...] = (pwd.getpwuid(uid).pw_name, str(uid))
    except KeyError:
        names = (str(uid),)
    uids = _first_range("/etc/subuid", names)
    gids = _first_range("/etc/subgid", names)
    if uids is None or gids is None:
        return None
    return SubordinateIds(uids[0], uids[1], gids[0], gids[1])


def why_single_id(uid: int) -> str:
    """Why a rootless VM gets only its root, and the fix."""
    if not (_which("newuidmap") and _which("newgidmap")):
        return "newuidmap is missing: install the 'uidmap' package"
    name = pwd.getpwuid(uid).pw_name if uid in {p.pw_uid for p in pwd.getpwall()} else str(uid)
    return f"{name} has no subordinate ids in /etc/subuid and /etc/subgid: add them with 'usermod --add-subuids …'"


def map_with_helpers(pid: int, uid: int, gid: int, ids: SubordinateIds) -> None:
    """Map root to the user and 1.. to the subordinate ids, through the setuid helpers."""
    count = ids.count - 1
    _run("newuidmap", [str(pid), "0", str(uid), "1", "1", str(ids.uid_start), str(count)])
    _run("newgidmap", [str(pid), "0", str(gid), "1", "1", str(ids.gid_start), str(count)])


def _run(helper: str, args: list[str]) -> None:
    path = _which(helper)
    assert path is not None
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(path, [helper, *args])
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(1, f"{helper} failed with status {os.waitstatus_to_exitcode(status)}")
