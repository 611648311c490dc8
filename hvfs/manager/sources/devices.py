"""The VM's /dev: a tmpfs with the host's harmless character devices bound in; and the
empty read-only placeholders where the VM mounts its own procfs and devpts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hvfs._sys import mount as m
from hvfs._sys.abi import O_PATH
from hvfs._sys.files import closing, make_file
from hvfs.manager.sources.base import Scratch, Source
from hvfs.manager.sources.schema import SourceKind

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
        tmpfs = m.new_mount("tmpfs", {"mode": "0755", "size": "1m"}, m.MOUNT_ATTR_NOSUID)
        with m.attached(tmpfs, target) as root:
            for name in DEVICES:
                make_file(name, 0o666, root)  # not opened: see make_file
                with closing(os.open(name, O_PATH | os.O_CLOEXEC, dir_fd=root)) as at:
                    m.attach(m.clone_tree(f"/dev/{name}", recursive=False), at)
            for name, link in LINKS.items():
                os.symlink(link, name, dir_fd=root)
            os.mkdir("pts", 0o755, dir_fd=root)
            os.mkdir("shm", 0o1777, dir_fd=root)
            os.chmod("shm", 0o1777, dir_fd=root)

    def describe(self) -> str:
        return "devices"


class PlaceholderSource(Source):
    """An empty read-only directory where the VM mounts its own procfs or devpts."""

    kind = "placeholder"

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with an empty read-only tmpfs."""
        attributes = m.MOUNT_ATTR_RDONLY | m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_NOEXEC
        m.attach(m.new_mount("tmpfs", {"size": "4k", "mode": "0555"}, attributes), target)

    def describe(self) -> str:
        return "kernel"


def _devices(options: Mapping[str, Any]) -> DevicesSource:
    return DevicesSource()


def _placeholder(options: Mapping[str, Any]) -> PlaceholderSource:
    return PlaceholderSource()


DEVICES_KIND = SourceKind("devices", "the VM's /dev: the host's harmless devices", (), _devices, role="system")
PLACEHOLDER_KIND = SourceKind(
    "placeholder", "an empty read-only directory for the VM's own /proc or /dev/pts", (), _placeholder, role="system"
)
