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

    def mount(self, target: str, scratch: Scratch) -> None:
        """Implements Source.mount: tmpfs, device binds, the usual symlinks, pts/ and shm/."""
        m.mount("tmpfs", target, "tmpfs", m.MS_NOSUID, "mode=0755,size=1m")
        root = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in DEVICES:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=root))
                m.mount(f"/dev/{name}", f"/proc/self/fd/{root}/{name}", None, m.MS_BIND)
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

    def mount(self, target: str, scratch: Scratch) -> None:
        """Implements Source.mount with an empty read-only tmpfs."""
        m.mount("tmpfs", target, "tmpfs", m.MS_RDONLY | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, "size=4k,mode=0555")

    def describe(self) -> str:
        return "kernel"
