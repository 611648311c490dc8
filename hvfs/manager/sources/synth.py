"""A file whose content the manager makes (a VM's /etc/hosts): one file, bound into every
VM that mounts it, and rewritten in place when its content changes."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source
from hvfs.manager.sources.schema import TEXT, Option, SourceKind

NAME = "content"


class SynthSource(Source):
    kind = "synth"

    def __init__(self, content: bytes = b"") -> None:
        self._content = content
        self._tree: int | None = None
        self._lock = threading.Lock()

    @property
    def is_directory(self) -> bool:
        return False

    def _write_locked(self) -> None:
        assert self._tree is not None
        fd = os.open(NAME, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=self._tree)
        try:
            os.write(fd, self._content)
        finally:
            os.close(fd)

    def update(self, content: bytes) -> None:
        """Replace the content, keeping the inode every VM has bound."""
        with self._lock:
            self._content = content
            if self._tree is not None:
                self._write_locked()

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with a bind of the one file, in a small tmpfs made on
        the first mount."""
        with self._lock:
            if self._tree is None:
                flags = m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV
                self._tree = m.new_mount("tmpfs", {"size": "1m", "mode": "0755"}, flags)
                self._write_locked()
            m.attach(m.clone_tree(f"/proc/self/fd/{self._tree}/{NAME}", recursive=False), target)

    def release(self) -> None:
        """Implements Source.release: closes the small tmpfs."""
        with self._lock:
            tree, self._tree = self._tree, None
        if tree is not None:
            os.close(tree)

    def describe(self) -> str:
        return "synthesized"


def _make(options: Mapping[str, Any]) -> SynthSource:
    return SynthSource(options.get("content", "").encode())


KIND = SourceKind(
    "synth",
    "a file whose content hvfs makes (a VM's /etc/hosts)",
    (Option("content", TEXT, "the file's content", default=""),),
    _make,
    role="system",
)
