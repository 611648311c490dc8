"""A VM's mount table."""

from __future__ import annotations

from dataclasses import dataclass

from hvfs.manager.sources.base import Source


@dataclass(frozen=True)
class Mount:
    """A source mounted at ``target`` in a VM's view."""

    target: str  # absolute path in the VM
    source: Source
    readonly: bool = False
    sockets: bool = False  # a VM may connect to host sockets found on this mount

    @property
    def depth(self) -> int:
        return len([p for p in self.target.split("/") if p])
