"""A memory file system (tmpfs) with a size limit, private to one VM."""

from __future__ import annotations

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source


class MemorySource(Source):
    kind = "memory"

    def __init__(self, size: int | None = None, mode: int = 0o1777) -> None:
        self.size = size
        self.mode = mode

    def mount(self, target: str, scratch: Scratch) -> None:
        """Implements Source.mount with a new tmpfs."""
        options = f"mode={self.mode:o}" + (f",size={self.size}" if self.size else "")
        m.mount("tmpfs", target, "tmpfs", m.MS_NOSUID | m.MS_NODEV, options)

    def describe(self) -> str:
        return f"memory (size={self.size})" if self.size else "memory"
