"""A file whose content the manager makes (a VM's /etc/hosts): one file, bound into every
VM that mounts it, and rewritten in place when its content changes."""

from __future__ import annotations

import os
import threading

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source

NAME = "content"


class SynthSource(Source):
    kind = "synth"

    def __init__(self, content: bytes = b"") -> None:
        self._tree = m.new_mount("tmpfs", {"size": "1m", "mode": "0755"}, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV)
        self._lock = threading.Lock()
        fd = os.open(NAME, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=self._tree)
        os.close(fd)
        self.update(content)

    @property
    def is_directory(self) -> bool:
        return False

    def update(self, content: bytes) -> None:
        """Replace the content, keeping the inode every VM has bound."""
        with self._lock:
            fd = os.open(NAME, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, dir_fd=self._tree)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with a bind of the one file."""
        tree = m.clone_tree(f"/proc/self/fd/{self._tree}/{NAME}", recursive=False)
        try:
            m.attach_tree(tree, target)
        finally:
            os.close(tree)

    def describe(self) -> str:
        return "synthesized"
