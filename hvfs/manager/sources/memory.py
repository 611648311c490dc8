"""A memory file system (tmpfs) with a size limit.

One source is one file system: every VM that mounts it sees the same one (the manager
keeps it as a detached mount and gives each VM's view a copy of that mount), so writes,
locks and inotify events are shared, as between processes of one machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source
from hvfs.manager.sources.schema import MODE, SIZE, Option, SourceKind


class MemorySource(Source):
    kind = "memory"

    def __init__(self, size: int | None = None, mode: int = 0o1777) -> None:
        self.size = size
        self.mode = mode
        self._tree: int | None = None
        self._lock = threading.Lock()

    def _file_system(self) -> int:
        with self._lock:
            if self._tree is None:
                options: dict[str, str | None] = {"mode": f"{self.mode:o}"}
                if self.size:
                    options["size"] = str(self.size)
                self._tree = m.new_mount("tmpfs", options, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV)
            return self._tree

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with a copy of this source's one tmpfs."""
        m.attach(m.clone_tree(self._file_system()), target)

    def release(self) -> None:
        """Implements Source.release: drops the manager's hold on the tmpfs, which the
        kernel frees with the last view that has a copy of it."""
        with self._lock:
            tree, self._tree = self._tree, None
        if tree is not None:
            os.close(tree)

    def describe(self) -> str:
        return f"memory (size={self.size})" if self.size else "memory"


def _make(options: Mapping[str, Any]) -> MemorySource:
    return MemorySource(options.get("size"), int(options["mode"], 8))


KIND = SourceKind(
    "memory",
    "a memory file system (tmpfs), one for every VM that mounts it, gone when the last one is",
    (
        Option("size", SIZE, "the most it may hold (default: half of this machine's memory)"),
        Option("mode", MODE, "the mode of its root directory, in octal", default="1777"),
    ),
    _make,
)
