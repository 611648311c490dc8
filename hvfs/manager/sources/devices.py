"""The VM's /dev: a tmpfs with the host's harmless character devices bound in."""

from __future__ import annotations

import os

from hvfs._sys import mount as m
from hvfs.manager.sources.base import Scratch, Source

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


class DevicesSource(Source):
    kind = "devices"

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount: tmpfs, device binds, the usual symlinks, pts/ and shm/."""
        root = m.new_mount("tmpfs", {"mode": "0755", "size": "1m"}, m.MOUNT_ATTR_NOSUID)
        try:
            m.attach_tree(root, target)
            for name in DEVICES:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=root))
                device = m.clone_tree(f"/dev/{name}", recursive=False)
                try:
                    at = os.open(name, os.O_PATH | os.O_CLOEXEC, dir_fd=root)
                    try:
                        m.attach_tree(device, at)
                    finally:
                        os.close(at)
                finally:
                    os.close(device)
            for name, link in LINKS.items():
                os.symlink(link, name, dir_fd=root)
            os.mkdir("pts", 0o755, dir_fd=root)
            os.mkdir("shm", 0o1777, dir_fd=root)
            os.chmod("shm", 0o1777, dir_fd=root)
        finally:
            os.close(root)

    def describe(self) -> str:
        return "devices"


class PlaceholderSource(Source):
    """An empty read-only directory where the VM mounts its own procfs or devpts."""

    kind = "placeholder"

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with an empty read-only tmpfs."""
        attributes = m.MOUNT_ATTR_RDONLY | m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_NOEXEC
        tree = m.new_mount("tmpfs", {"size": "4k", "mode": "0555"}, attributes)
        try:
            m.attach_tree(tree, target)
        finally:
            os.close(tree)

    def describe(self) -> str:
        return "kernel"
