"""A host directory under a copy-on-write layer of each VM's own (overlayfs): the VM
reads the directory and may change anything in it, and the host directory never
changes. A VM's changes are discarded when it exits, or kept with ``--persist DIR``.

For a build or a test suite that writes into its own tree (objects, caches, fixtures)
on a checkout that must stay clean, or a configuration directory a program insists on
rewriting. Each VM that mounts one such source sees its own copy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source, SourceError
from hvfs.manager.sources.schema import PATH, Option, SourceKind

LAYER = "overlay"  # the key of this mount's layer in its scratch


class OverlaySource(Source):
    kind = "overlay"

    def __init__(self, path: str) -> None:
        self.path = path

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with an overlay whose upper layer is the VM's scratch."""
        if not os.path.isdir(self.path):
            raise SourceError(f"{self.path}: not a directory any more; create it or fix the path")
        m.attach(scratch.overlay(self.path, LAYER), target)

    def capacities(self) -> tuple[tuple[str, str], ...]:
        """Implements Source.capacities: statfs shows the host directory's file system."""
        return (("", self.path),)

    def describe(self) -> str:
        return f"overlay of {self.path}"


def _directory(path: str) -> str | None:
    return None if os.path.isdir(path) else f"{path} is not a directory; give a host directory"


def _make(options: Mapping[str, Any]) -> OverlaySource:
    return OverlaySource(options["path"])


KIND = SourceKind(
    "overlay",
    "a host directory under a copy-on-write layer of each VM's own: the VM may change it, the host never sees it",
    (Option("path", PATH, "the host directory to show, never changed", required=True, check=_directory),),
    _make,
)
