"""A memory file system (tmpfs) with a size limit.

One source is one file system: every VM that mounts it sees the same one (the manager
keeps it as a detached mount and gives each VM's view a copy of that mount), so writes,
locks and inotify events are shared, as between processes of one machine.
"""

from __future__ import annotations

import os
import threading

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source


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
        tree = m.clone_tree(self._file_system())
        try:
            m.attach_tree(tree, target)
        finally:
            os.close(tree)

    def describe(self) -> str:
        return f"memory (size={self.size})" if self.size else "memory"
