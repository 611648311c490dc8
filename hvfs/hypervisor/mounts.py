"""A VM's mount table, from plain descriptions of its mounts.

Every front end describes a VM's mounts as ``MountSpec``s (``hvfs run`` from its flags,
``hvfs up`` from hvfs.toml, a manager from what a client sent it or what it kept in its
state directory) and gets its table from ``mount_table``, the one place where mounts
become live sources and where hvfs adds its own (/dev, /dev/shm, /dev/pts, /proc).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvfs.manager.sources.base import SourceError
from hvfs.manager.sources.registry import KINDS, SourceSpec, prepare

if TYPE_CHECKING:  # the manager's side: a client (`hvfs run`) describes mounts, never takes them
    from hvfs.hypervisor.pool import SourcePool
    from hvfs.manager.mounts import Mount

SHM_SIZE = 64 * 1024 * 1024
RESERVED_TARGETS = ("/proc", "/dev")  # hvfs's own mounts, below


@dataclass(frozen=True)
class MountSpec:
    """A mount as plain data: ``source`` shown at ``target``; ``readonly`` makes every
    write there fail with EROFS; ``sockets`` lets the VM connect to host sockets on it."""

    target: str
    source: SourceSpec
    readonly: bool = False
    sockets: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "source": self.source.to_json(), "readonly": self.readonly,
                "sockets": self.sockets}  # fmt: skip

    @classmethod
    def from_json(cls, data: object) -> MountSpec:
        """The description ``to_json`` made; checked by ``mount_table``."""
        if not isinstance(data, dict) or set(data) - {"target", "source", "readonly", "sockets"}:
            raise SourceError(f"{data!r} is not a mount description; give target, source, readonly and sockets")
        target, readonly, sockets = data.get("target"), data.get("readonly", False), data.get("sockets", False)
        if not isinstance(target, str) or not isinstance(readonly, bool) or not isinstance(sockets, bool):
            raise SourceError(
                f"{data!r} is not a mount description; target is a path, readonly and sockets true or false"
            )
        return cls(target, SourceSpec.from_json(data.get("source")), readonly, sockets)


SYSTEM_MOUNTS = (
    MountSpec("/dev", SourceSpec("devices")),
    MountSpec("/dev/shm", SourceSpec("memory", {"size": SHM_SIZE, "mode": "1777"})),
    MountSpec("/dev/pts", SourceSpec("placeholder")),
    MountSpec("/proc", SourceSpec("placeholder")),
)


def target_problem(target: str) -> str | None:
    """What keeps ``target`` from being where a user's mount goes, or None."""
    if not target.startswith("/"):
        return f"target {target!r} is relative; use an absolute path such as /data"
    if ".." in target.split("/"):
        return f"target {target!r} contains '..'; give the plain absolute path"
    normal = posixpath.normpath(target)
    if normal == "/":
        return "cannot mount over /; give the VM's root as its image"
    for reserved in RESERVED_TARGETS:
        if normal == reserved or normal.startswith(reserved + "/"):
            return f"{normal} is managed by hvfs; pick another target"
    return None


def check_mounts(mounts: Sequence[MountSpec]) -> None:
    """A VM's mounts as a front end or a client described them: one root, an image, and
    other mounts at distinct places of their own. Raises SourceError."""
    roots = [m for m in mounts if m.target == "/"]
    if len(roots) != 1:
        raise SourceError(f"a VM needs one root image, not {len(roots)}")
    kind = KINDS.get(roots[0].source.kind)
    if kind is None or kind.role != "root":
        raise SourceError(f"a source of type {roots[0].source.kind} cannot be a VM's root; give an image")
    seen = set()
    for mount in mounts:
        if mount.target == "/":
            continue
        problem = target_problem(mount.target)
        if problem is None and posixpath.normpath(mount.target) != mount.target:
            problem = f"target {mount.target!r} is not in normal form; give {posixpath.normpath(mount.target)}"
        if problem:
            raise SourceError(problem)
        if mount.target in seen:
            raise SourceError(f"two mounts at {mount.target}; give each its own target")
        seen.add(mount.target)


def prepare_mounts(mounts: Iterable[MountSpec], cache: Callable[[], str] | None = None) -> tuple[MountSpec, ...]:
    """``mounts`` with each source prepared (an image tarball unpacked into the user's
    cache, ``cache``, by default hvfs's private cache directory): as the user, before
    the manager's namespaces are entered. Raises SourceError, or UsageError when the
    cache directory is not safe."""
    mounts = tuple(mounts)
    check_mounts(mounts)  # before any work is done for a table that cannot be
    if cache is None:
        from hvfs.state import private_cache_directory

        cache = private_cache_directory
    return tuple(MountSpec(m.target, prepare(m.source, cache), m.readonly, m.sockets) for m in mounts)


def mount_table(vm: str, mounts: Sequence[MountSpec], sources: SourcePool) -> list[Mount]:
    """The mount table of the VM ``vm``: ``mounts`` (prepared; one of them the root) and
    hvfs's own, each source taken from ``sources`` for ``vm`` (drop ``vm`` from it when
    the VM is gone). Raises SourceError, and then has taken nothing."""
    from hvfs.manager.mounts import Mount

    check_mounts(mounts)
    try:
        return [Mount(m.target, sources.take(vm, m.source), m.readonly, m.sockets) for m in (*mounts, *SYSTEM_MOUNTS)]
    except BaseException:
        sources.drop(vm)
        raise
