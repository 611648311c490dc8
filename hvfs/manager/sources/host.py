"""A host directory (or file), bound into the VM."""

from __future__ import annotations

import os

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source, SourceError


class HostSource(Source):
    kind = "host"

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def is_directory(self) -> bool:
        return os.path.isdir(self.path)

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with a recursive bind mount."""
        if not os.path.exists(self.path):
            raise SourceError(f"{self.path}: no such file or directory; create it or fix the path")
        tree = m.clone_tree(self.path)
        try:
            m.attach_tree(tree, target)
        finally:
            os.close(tree)

    def describe(self) -> str:
        return self.path
