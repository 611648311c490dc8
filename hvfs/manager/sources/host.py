"""A host directory (or file), bound into the VM."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hvfs._sys import mount as m
from hvfs._sys.mountinfo import points_below
from hvfs.manager.sources.base import Scratch, Source, SourceError
from hvfs.manager.sources.schema import PATH, Option, SourceKind


class HostSource(Source):
    kind = "host"

    def __init__(self, path: str) -> None:
        self.path = path
        self._below: tuple[str, ...] = ()

    @property
    def is_directory(self) -> bool:
        return os.path.isdir(self.path)

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with a recursive bind mount."""
        if not os.path.exists(self.path):
            raise SourceError(f"{self.path}: no such file or directory; create it or fix the path")
        # Read before the clone: a mount made between the two is not named, and its files
        # go to Python's own_object, which finds them by path (the other order would name
        # a point the clone may not have, harmless too: the view resolves it in itself).
        self._below = points_below(self.path) if self.is_directory else ()
        m.attach(m.clone_tree(self.path), target)

    def inner_mounts(self) -> tuple[str, ...]:
        """Implements Source.inner_mounts: the host's mounts below the directory when it
        was bound (the bind is recursive), so that the VM's metadata changes on their files
        are served as on the directory's own (in C, with no lookup of a twin)."""
        return self._below

    def local_path(self) -> str | None:
        return self.path if self.is_directory else None

    def describe(self) -> str:
        return self.path


def _exists(path: str) -> str | None:
    return None if os.path.exists(path) else f"{path} does not exist; create it or fix the path"


def _make(options: Mapping[str, Any]) -> HostSource:
    return HostSource(options["path"])


KIND = SourceKind(
    "host",
    "a host directory or file, bound into the VM: the VM's writes change it",
    (Option("path", PATH, "the host directory or file to serve", required=True, check=_exists),),
    _make,
)


class RootfsSource(HostSource):
    """A host root file system directory as a VM's root (an OCI bundle's rootfs)."""

    kind = "rootfs"


def _make_rootfs(options: Mapping[str, Any]) -> RootfsSource:
    return RootfsSource(options["path"])


ROOTFS_KIND = SourceKind(
    "rootfs",
    "a VM's root: a host root file system directory, written in place (an OCI bundle's rootfs)",
    (Option("path", PATH, "the host directory to serve as the VM's root", required=True, check=_exists),),
    _make_rootfs,
    role="root",
)
