"""A VM's mount table."""

from __future__ import annotations

from dataclasses import dataclass

from hvfs.manager.sources.base import Source
from hvfs.manager.sources.devices import DevicesSource, PlaceholderSource
from hvfs.manager.sources.memory import MemorySource

SHM_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Mount:
    target: str  # absolute path in the VM
    source: Source
    readonly: bool = False
    sockets: bool = False  # a VM may connect to host sockets found on this mount

    @property
    def depth(self) -> int:
        return len([p for p in self.target.split("/") if p])


def system_mounts() -> list[Mount]:
    """What every VM gets besides its image and the user's mounts."""
    return [
        Mount("/dev", DevicesSource()),
        Mount("/dev/shm", MemorySource(SHM_SIZE)),
        Mount("/dev/pts", PlaceholderSource()),
        Mount("/proc", PlaceholderSource()),
    ]
