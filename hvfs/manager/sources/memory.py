"""A memory file system (tmpfs) with a size limit, private to one VM."""

from __future__ import annotations

import os

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source


class MemorySource(Source):
    kind = "memory"

    def __init__(self, size: int | None = None, mode: int = 0o1777) -> None:
        self.size = size
        self.mode = mode

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with a new tmpfs."""
        options: dict[str, str | None] = {"mode": f"{self.mode:o}"}
        if self.size:
            options["size"] = str(self.size)
        tree = m.new_mount("tmpfs", options, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV)
        try:
            m.attach_tree(tree, target)
        finally:
            os.close(tree)

    def describe(self) -> str:
        return f"memory (size={self.size})" if self.size else "memory"
